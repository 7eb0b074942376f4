//! Sessions that move between the servers of a cluster: a client whose
//! server died, or whose connection to it broke, resumes on another one.
//!
//! Its last seen id is in the log of the server it left, so this log
//! tells, for each entry, where it came from ([`RemoteOrigin`], given by
//! the server with each remote input): the cluster stream's position of
//! the entry, and for an entry of another server its id there. Log ids in
//! a cluster are built from stream positions (see [`RemoteOrigin::position`]):
//! an entry of another server gets its position as id (or the next id, if
//! that is past it), a local entry the next id after the last. So an id `X`
//! of server A says what A had read of the stream when it gave `X`: every
//! entry at a position up to `X`. A client that saw `X` on A has seen:
//! A's own entries with ids up to `X`, and the others' entries at
//! positions up to `X`; it has not seen anything else. The replay sends
//! it the rest in stream order under ids above `X` (`moved_replay`).

use std::collections::VecDeque;
use std::time::Instant;

use super::continuity::Session;
use super::{ClientId, Hub, HubEvent};
use crate::history::{LogEntry, LogEvent};
use crate::message::{
    ErrorCode, LeaveReason, MessageId, PresenceEvent, ResumeToken, ServerMessage, Timestamp,
    Username,
};

/// Where a remote input comes from: set with [`Hub::set_origin`] around
/// the `remote_*` calls of one entry of the cluster's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOrigin {
    /// The server that published it.
    pub server: u64,
    /// Its id in that server's log.
    pub id: MessageId,
    /// Its position in the cluster's stream, as a log id: the stream
    /// entry's milliseconds times 2^22 plus its sequence number times
    /// 2^10 (the low 10 bits number local entries between two positions).
    pub position: MessageId,
    /// When its server noted it (0: now).
    pub time: Timestamp,
    /// The sender's id of a chat message (0: none).
    pub client_id: u64,
}

impl RemoteOrigin {
    /// The log id of the stream position `millis`-`seq` (a sequence past
    /// 4095 within one millisecond counts as 4095).
    #[must_use]
    pub fn position_id(millis: u64, seq: u64) -> MessageId {
        MessageId((millis << 22) | (seq.min(4095) << 10))
    }
}

/// The origins of log entries ([`Hub`]'s tags), in id order. Entries are
/// tagged about in the order they are logged (an entry of another server
/// when it is logged, one of this server's when the stream gives it back),
/// so a tag goes in at or near the back, and the tags of entries trimmed
/// from the log come off the front: no hashing and no table to probe for
/// every entry of a busy cluster.
#[derive(Debug, Default)]
pub(super) struct Tags(VecDeque<(u64, Tag)>);

impl Tags {
    /// Where entry `id`'s tag is (`Ok`) or would go (`Err`), as a binary
    /// search says. The tags asked for are those of entries just logged or
    /// just read back from the stream, a few from the back: a search that
    /// gallops from the back (1, 2, 4, ... tags back) and then halves
    /// costs a few compares near the back instead of a search through the
    /// whole log's tags (about 14 cache misses for 10,000).
    fn find(&self, id: u64) -> Result<usize, usize> {
        let len = self.0.len();
        let key = |i: usize| self.0[i].0;
        // Tags [lo, hi) hold `id`'s place: every tag from hi on is newer.
        let mut hi = len;
        let mut step = 1;
        let lo = loop {
            if hi == 0 {
                break 0;
            }
            let probe = hi.saturating_sub(step);
            if key(probe) <= id {
                break probe;
            }
            hi = probe;
            step *= 2;
        };
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match key(mid).cmp(&id) {
                std::cmp::Ordering::Equal => return Ok(mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Err(lo)
    }

    /// Tags entry `id` (again, if it was).
    pub(super) fn insert(&mut self, id: u64, tag: Tag) {
        match self.find(id) {
            Ok(i) => self.0[i].1 = tag,
            Err(i) if i == self.0.len() => self.0.push_back((id, tag)),
            Err(i) => self.0.insert(i, (id, tag)),
        }
    }

    /// The tag of entry `id`.
    pub(super) fn get(&self, id: u64) -> Option<&Tag> {
        let i = self.find(id).ok()?;
        Some(&self.0[i].1)
    }

    /// Forgets the tag of entry `id`, if it has one.
    pub(super) fn remove(&mut self, id: u64) {
        if let Ok(i) = self.find(id) {
            self.0.remove(i);
        }
    }

    /// Forgets the tags of entries up to `id` (trimmed from the log).
    pub(super) fn forget_to(&mut self, id: u64) {
        while self.0.front().is_some_and(|(k, _)| *k <= id) {
            self.0.pop_front();
        }
    }
}

/// The entries trimmed from the log in a cluster, newest last, for
/// telling a resumed session how many it missed that the log no longer
/// holds: a cluster's log ids are stream positions, not consecutive, so
/// their difference is no count. As many as the log holds are kept (an
/// id and a tag each); of older ones only their number.
#[derive(Debug, Default)]
pub(super) struct Trimmed {
    recent: VecDeque<(u64, Option<Tag>)>,
    /// How many were trimmed before the first in `recent`.
    older: u64,
}

impl Trimmed {
    /// Notes entry `id`, with its tag, trimmed; keeps at most `keep` (at
    /// least one, so `older` counts only entries before a kept one).
    pub(super) fn push(&mut self, id: u64, tag: Option<Tag>, keep: usize) {
        self.recent.push_back((id, tag));
        while self.recent.len() > keep.max(1) {
            self.recent.pop_front();
            self.older += 1;
        }
    }

    /// How many of the trimmed entries `missed` says were not seen: exact
    /// when the oldest one kept was seen (every older one was, as ids only
    /// grow); else an upper bound that counts every older one as missed.
    fn count(&self, missed: impl Fn(u64, Option<&Tag>) -> bool) -> u64 {
        let mut first = true;
        let mut n = 0;
        for (id, tag) in &self.recent {
            if missed(*id, tag.as_ref()) {
                if first {
                    n += self.older;
                }
                n += 1;
            }
            first = false;
        }
        n
    }
}

/// What is known of a log entry's origin in a cluster.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tag {
    /// The server and its id of an entry of another server; `None` for a
    /// local entry.
    origin: Option<(u64, u64)>,
    /// Its stream position (as a log id).
    position: u64,
}

impl Hub {
    /// Sets (or clears) where the entries the next `remote_*` inputs log
    /// come from: their ids follow the stream position, and their origin
    /// is kept for resumes from other servers.
    pub fn set_origin(&mut self, origin: Option<RemoteOrigin>) {
        self.origin = origin;
    }

    /// The id of the next log entry.
    pub(super) fn entry_id(&self) -> MessageId {
        let next = self.next_message;
        MessageId(self.origin.map_or(next, |o| next.max(o.position.0)))
    }

    /// The time of the next log entry.
    pub(super) fn entry_time(&self, now: Instant) -> Timestamp {
        match self.origin {
            Some(o) if o.time.0 > 0 => o.time,
            _ => self.timestamp(now),
        }
    }

    /// Notes the origin of an entry logged now.
    pub(super) fn tag_entry(&mut self, id: MessageId) {
        if let Some(o) = self.origin {
            self.tags.insert(
                id.0,
                Tag {
                    origin: Some((o.server, o.id.0)),
                    position: o.position.0,
                },
            );
        }
    }

    /// Tags a join or a leave this server logged of its own making, in a
    /// cluster: not from the stream, and not to be published (one that is
    /// loses the tag at once, see [`Hub::publish`]). Every server makes
    /// its own of these (a dead server's user leaving, who is online
    /// after a start), so a session that moves here has seen another
    /// server's if it saw as far as the stream position this one had
    /// read then; a join from the list of who is online is older than
    /// that (position 0). Without the tag such an entry counts as one
    /// not yet in the stream, which no client of another server can have
    /// seen: it was told again at every move here, however old.
    pub(super) fn tag_own_making(&mut self, id: MessageId) {
        if !self.remote.enabled || self.origin.is_some() {
            return;
        }
        let position = if self.remote.listing {
            0
        } else {
            self.remote.read_to
        };
        self.tags.insert(
            id.0,
            Tag {
                origin: None,
                position,
            },
        );
    }

    /// The local entry `id` is at stream position `position` (it was
    /// published).
    pub fn note_published(&mut self, id: MessageId, position: MessageId) {
        if self.log.front().is_some_and(|e| e.id <= id) && self.tags.get(id.0).is_none() {
            self.tags.insert(
                id.0,
                Tag {
                    origin: None,
                    position: position.0,
                },
            );
        }
    }

    /// Local ids go on from past stream position `position` (called when
    /// the server joins the cluster: ids given on any server compare by
    /// the stream position they were given at).
    pub fn advance_ids(&mut self, position: MessageId) {
        self.remote.read_to = self.remote.read_to.max(position.0);
        self.next_message = self.next_message.max(position.0 + 1);
    }

    /// Fixes the epoch sent in every `Welcome` from now on (in a cluster,
    /// the cluster's: a session can resume on any server of the same epoch).
    /// Sessions begun under the epoch it replaces still resume here.
    pub fn set_epoch(&mut self, epoch: u64) {
        if epoch != self.epoch {
            self.prior_epoch = Some(self.epoch);
        }
        self.epoch = epoch;
        self.epoch_fixed = true;
    }

    /// Logs an entry of the cluster's history (from before this server
    /// joined) without telling anyone: history on join, and the replay of
    /// sessions resumed here, come from it. Set its origin first.
    pub fn remote_history(&mut self, event: LogEvent, now: Instant) {
        let entry = LogEntry {
            id: self.entry_id(),
            time: self.entry_time(now),
            event,
        };
        self.next_message = entry.id.0 + 1;
        self.push_log(entry);
    }

    /// True when a session of another server may be taken over here for
    /// `client`'s `Hello`: the server asks no password, or the client gave
    /// the right one in its `Auth`. The take-over happens before the hub
    /// sees the `Hello`, so the password is checked here first; the
    /// `Hello` checks it again (and counts a wrong one). Accounts do not
    /// stop it: the adopted session is resumed by the `Hello` like one of
    /// this server's, after its account check, so a protected name still
    /// needs its password.
    #[must_use]
    pub fn sessions_may_move(&self, client: ClientId) -> bool {
        self.passes_server_password(client)
    }

    /// True when `client` passes the server password check of its `Hello`
    /// (none is asked, or it gave the right one in its `Auth`): a frontend
    /// claims a name elsewhere (in a cluster) only for such a `Hello`; the
    /// hub refuses any other for its password.
    #[must_use]
    pub fn passes_server_password(&self, client: ClientId) -> bool {
        !self.auth.asks_password() || self.gave_server_password(client)
    }

    /// True when `user` has a session on this server (joined, or waiting
    /// for a resume).
    #[must_use]
    pub fn has_session(&self, user: &Username) -> bool {
        self.sessions.contains_key(&self.key(user))
    }

    /// Takes over the session of `user` from server `from` of the cluster,
    /// whose claim on it the server has just moved here (checking
    /// `token`): it waits for its client's resume as a session in its grace
    /// period would. The chat messages of its that the log holds count as
    /// handled (a copy resent here is acknowledged, not routed again).
    ///
    /// A session whose user an operator kicked before its old server
    /// carried the kick out (`kicked`: the kick's text that Redis holds for
    /// it, or one this hub heard of), or whose name is banned, is not taken
    /// over: its user leaves here, kicked, if still listed, and the resume
    /// that follows finds nothing to resume (its client joins afresh).
    /// False then, and if the user has a session here already.
    pub fn adopt_session(
        &mut self,
        user: Username,
        token: ResumeToken,
        from: u64,
        last_client_id: u64,
        kicked: Option<&str>,
        now: Instant,
    ) -> bool {
        self.clock = self.clock.max(now);
        let key = self.key(&user);
        if self.sessions.contains_key(&key) || self.names.contains_key(&key) {
            return false;
        }
        let heard = self
            .remote
            .kicks
            .remove(&key)
            .or_else(|| self.recent_kick(&key, now));
        let kicked = heard
            .or_else(|| kicked.map(str::to_string))
            .or_else(|| self.name_ban_text(&user));
        if let Some(text) = kicked {
            if let Some((listed, server)) = self.remote.users.get(&key).cloned() {
                self.announce_remote_leave(server, &listed, LeaveReason::KICKED, text, now);
            }
            return false;
        }
        let gone = self.remote.gone.remove(&key).is_some();
        let away = self.remote.away.remove(&key).is_some();
        if self.remote.users.remove(&key).is_some() {
            if gone || away {
                // Away on its old server (or that server died): back here.
                self.queue_away(user.clone(), true, now);
            }
        } else {
            // Announced as left here already (its server died, and its
            // grace ran out here first): it is back.
            let joined = self.log_presence(LogEvent::Joined { user: user.clone() }, now);
            self.queue_presence(
                PresenceEvent::Joined {
                    id: joined.id,
                    time: joined.time,
                    user: user.clone(),
                },
                None,
                now,
            );
        }
        let mut session = Session {
            user,
            token,
            spent: None,
            conn: None,
            last_conn: ClientId(0),
            grace: Some((now + self.limits.grace, LeaveReason::LOST)),
            last_client_id,
            recent: VecDeque::new(),
            moved_from: Some(from),
            peer: None,
            away_seen: None,
            started: None,
            kept: false,
            resumes: None,
            told_away: std::collections::HashSet::new(),
        };
        self.recall_accepted(&key, &mut session);
        self.sessions.insert(key.clone(), session);
        self.note_taken(&key);
        true
    }

    /// `user` resumed its session on server `server`: if it was ours, its
    /// connection (if still open) is closed and the session forgotten,
    /// without a leave; everywhere it is now a user of `server`.
    pub fn remote_moved(&mut self, server: u64, user: Username, now: Instant) {
        self.clock = self.clock.max(now);
        self.heard_of(server);
        let key = self.key(&user);
        if let Some(s) = self.sessions.remove(&key) {
            if let Some(client) = s.conn {
                self.error(
                    client,
                    ErrorCode::REPLACED,
                    "your session was resumed on another server",
                );
                self.close_conn(
                    client,
                    "the sender moved to another server",
                    "moved to another server",
                );
                self.events.push_back(HubEvent::Close {
                    client,
                    reason: "its session was resumed on another server".into(),
                });
            }
            self.drop_stored_session(&s.user);
            if s.conn.is_none() && s.moved_from.is_none() {
                // It was away here: resumed there, it is back.
                self.queue_away(s.user.clone(), true, now);
            }
            self.remote.users.insert(key.clone(), (s.user, server));
            self.note_taken(&key);
            return;
        }
        match self.remote.users.get_mut(&key) {
            Some(known) => {
                known.1 = server;
                let user = known.0.clone();
                let gone = self.remote.gone.remove(&key).is_some();
                // Resumed on `server`: back.
                let away = self.remote.away.remove(&key).is_some();
                if gone || away {
                    self.queue_away(user, true, now);
                }
                // It moved before a kick reached its old server: the kick
                // was published after the move (Redis refuses to move a
                // kicked session, and a server does not take over one it
                // knows was kicked), and its new server carries it out.
                self.remote.kicks.remove(&key);
            }
            None => {
                self.remote_join(server, user, now);
            }
        }
    }

    /// Publishes the session of `client`'s user (its token), in a cluster.
    pub(super) fn publish_session(&mut self, client: ClientId) {
        if !self.remote.enabled || !self.resume_enabled() {
            return;
        }
        let Some(s) = self.sessions.values().find(|s| s.conn == Some(client)) else {
            return;
        };
        let event = super::ClusterEvent::Session {
            user: s.user.clone(),
            token: s.token,
        };
        self.publish(event);
    }

    /// What a client that saw `last`, an id of server `from`'s log, missed
    /// of this log, in the stream's order (which keeps each sender's), with
    /// ids above `last` that only grow: this log's ids are not that
    /// server's, and a client ignores an id at or below the last it saw.
    /// An entry is sent under its stream position (the same on every
    /// server), or the next id if that is not above the one before; the
    /// ids given after it go on from there.
    pub(super) fn moved_replay(
        &mut self,
        key: &str,
        from: u64,
        last: MessageId,
    ) -> Vec<ServerMessage> {
        let mut picked: Vec<(u64, u64, ServerMessage)> = self
            .log
            .iter()
            .filter(|e| self.unseen(e, from, last))
            .filter_map(|e| {
                let m = self.entry_message(e, key, false)?;
                // Not yet in the stream: after all that is. Kept by the
                // store from the run before, untagged: by its id, at or
                // past its position.
                let kept = self.remote.former.is_some_and(|(_, k)| e.id <= k);
                let order = match self.tags.get(e.id.0) {
                    Some(t) => t.position,
                    None if kept => e.id.0,
                    None => u64::MAX,
                };
                Some((order, e.id.0, m))
            })
            .collect();
        picked.sort_by_key(|(order, id, _)| (*order, *id));
        let mut sent = last.0;
        let replay: Vec<ServerMessage> = picked
            .into_iter()
            .map(|(order, id, mut m)| {
                let base = if order == u64::MAX { id } else { order };
                sent = base.max(sent + 1);
                set_id(&mut m, MessageId(sent));
                m
            })
            .collect();
        self.next_message = self.next_message.max(sent + 1);
        replay
    }

    /// In a cluster, how many entries after the client's `last` seen id
    /// (of server `from`'s log when the session moved here) were trimmed
    /// from this log, so cannot be sent again: exact unless more were
    /// trimmed than the log holds, then an upper bound.
    pub(super) fn trimmed_unseen(&self, from: Option<u64>, last: MessageId) -> u64 {
        match from {
            Some(from) => self
                .trimmed
                .count(|id, tag| self.unseen_tagged(MessageId(id), tag, from, last)),
            None => self.trimmed.count(|id, _| id > last.0),
        }
    }

    /// The store this hub opened was written by server `server` of the
    /// cluster, an earlier run of this one (a restart, maybe after a
    /// crash). The ids of the entries it kept are that run's, but what
    /// it gave its users after them may not have been kept: the entries
    /// this run logs instead (read again from the stream) have new ids.
    /// So the sessions it kept resume as sessions from `server`: what
    /// their clients missed is told from the entries' origins, as for a
    /// session of another server (see `unseen`). Call it after
    /// [`open_history`](Hub::open_history), before any connection.
    pub fn set_former_run(&mut self, server: u64) {
        self.remote.former = Some((server, self.newest_logged()));
        for s in self.sessions.values_mut() {
            s.moved_from = Some(server);
        }
    }

    /// True when a client that saw `from`'s id `last` has not seen `e`.
    fn unseen(&self, e: &LogEntry, from: u64, last: MessageId) -> bool {
        self.unseen_tagged(e.id, self.tags.get(e.id.0), from, last)
    }

    /// True when a client that saw `from`'s id `last` has not seen entry
    /// `id`, tagged `tag`.
    fn unseen_tagged(&self, id: MessageId, tag: Option<&Tag>, from: u64, last: MessageId) -> bool {
        if let Some((former, kept)) = self.remote.former {
            // Kept by the store from the run before: its ids are that
            // run's. Exact for that run's clients; for another server's,
            // an id is at or past the entry's position.
            if id <= kept && (from == former || tag.is_none()) {
                return id > last;
            }
        }
        match tag {
            // From the server it saw: by that server's id.
            Some(Tag {
                origin: Some((server, id)),
                ..
            }) if *server == from => *id > last.0,
            // From elsewhere, or ours: by the position that server had read.
            Some(t) => t.position > last.0,
            // Ours, not yet in the stream: that server cannot have had it.
            None => true,
        }
    }
}

/// Gives a replayed entry the id it is sent under.
fn set_id(m: &mut ServerMessage, to: MessageId) {
    match m {
        ServerMessage::Chat(c) => c.id = to,
        ServerMessage::Joined { id, .. } => *id = to,
        ServerMessage::Left(d) => d.id = to,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(position: u64) -> Tag {
        Tag {
            origin: None,
            position,
        }
    }

    #[test]
    fn trimmed_entries_are_counted_exactly_or_bounded_past_what_is_kept() {
        let mut t = Trimmed::default();
        for id in [10, 20, 30, 40] {
            t.push(id, None, 2);
        }
        // 30 and 40 are kept, 10 and 20 only counted.
        assert_eq!(t.count(|id, _| id > 35), 1);
        assert_eq!(t.count(|id, _| id > 45), 0);
        // The oldest kept was missed: the older two may have been too.
        assert_eq!(t.count(|id, _| id > 25), 4);
        assert_eq!(t.count(|id, _| id > 5), 4);
    }

    #[test]
    fn tags_are_found_by_id_in_any_order_and_trimmed_from_the_oldest() {
        let mut tags = Tags::default();
        for id in [10, 20, 30] {
            tags.insert(id, tag(id * 100));
        }
        // An own entry, tagged once the stream gave it back: behind newer ones.
        tags.insert(25, tag(2_500));
        tags.insert(5, tag(500));
        // Tagged again: replaced, not added.
        tags.insert(20, tag(2_001));
        let ids: Vec<u64> = tags.0.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [5, 10, 20, 25, 30]);
        assert_eq!(tags.get(25).map(|t| t.position), Some(2_500));
        assert_eq!(tags.get(20).map(|t| t.position), Some(2_001));
        assert!(tags.get(26).is_none());
        // The log dropped its entries up to 20.
        tags.forget_to(20);
        assert!(tags.get(10).is_none() && tags.get(20).is_none());
        assert_eq!(tags.get(30).map(|t| t.position), Some(3_000));
        tags.forget_to(100);
        assert!(tags.0.is_empty());
    }

    #[test]
    fn a_tag_is_found_where_a_binary_search_finds_it_however_far_back() {
        // Even ids, so that every odd one is missing.
        for len in [0u64, 1, 2, 3, 64, 65, 700] {
            let mut t = Tags::default();
            for id in 0..len {
                t.insert(id * 2, tag(id));
            }
            assert!(t.0.iter().map(|(k, _)| *k).eq((0..len).map(|id| id * 2)));
            for id in 0..1_500u64 {
                assert_eq!(
                    t.find(id),
                    t.0.binary_search_by_key(&id, |(k, _)| *k),
                    "id {id} in {len} tags"
                );
            }
        }
    }
}
