//! Sessions that outlive a connection: the room log (history on join, the
//! replay of a resume, and what a store keeps), resume tokens, the grace
//! period of a lost connection, and dropping resent duplicates.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::admission::address_key;
use super::{ClientId, Hub, HubEvent, Phase};
use crate::history::{HistoryStore, LogEntry, LogEvent, SessionRecord, StoreError};
use crate::limits::SESSION_RESUMES;
use crate::message::{
    Departure, ErrorCode, LeaveReason, MessageId, PresenceEvent, RefuseCode, ResumeRequest,
    ResumeToken, Resumed, RoutedChat, ServerMessage, Timestamp, Username, PROTOCOL_VERSION,
};

/// Answers remembered per session for resent duplicates.
pub(super) const RECENT_OUTCOMES: usize = 256;
/// Addresses whose failed resume attempts are remembered at most.
const MAX_FAILURE_ENTRIES: usize = 4096;
/// Acks held for a commit at most: past it, the hub commits on its own.
const MAX_HELD_ACKS: usize = 4096;

/// Where resume tokens (and the epoch of a log without a store) come from.
pub(super) struct TokenSource(Box<dyn FnMut() -> [u8; 16] + Send>);

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSource")
    }
}

/// What the hub answered to one chat message of a client.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Accepted(MessageId, Timestamp),
    Refused(ErrorCode, String),
}

/// The answer to a chat message waiting for the store's commit: its ack,
/// or a refusal that must not overtake an earlier ack.
#[derive(Debug)]
pub(super) struct HeldAck {
    client: ClientId,
    client_id: u64,
    /// The newest entry appended to the store when it was held: the
    /// answer goes out once a commit covers that entry.
    after: u64,
    answer: Held,
}

#[derive(Debug)]
enum Held {
    Ack {
        id: MessageId,
        time: Timestamp,
        /// False for the answer to a resent duplicate.
        fresh: bool,
    },
    Refused(ErrorCode, String),
}

/// A joined user's session: live on a connection, or waiting for a resume.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) user: Username,
    pub(super) token: ResumeToken,
    /// The token its last resume was made with, still good until the
    /// resumed connection sends a frame (which shows its client got the
    /// `Welcome` with the new token): a resume whose answer was lost, or
    /// came too late, is tried again with it, and must not find the
    /// session locked away from its own client for the grace period.
    pub(super) spent: Option<ResumeToken>,
    /// The live connection; `None` while waiting for a resume.
    pub(super) conn: Option<ClientId>,
    /// The last connection it had.
    pub(super) last_conn: ClientId,
    /// While waiting: until when, and why the connection ended.
    pub(super) grace: Option<(Instant, LeaveReason)>,
    /// The highest client id of a chat message handled.
    pub(super) last_client_id: u64,
    /// The answers to its latest chat messages, by client id.
    pub(super) recent: VecDeque<(u64, Outcome)>,
    /// The server of the cluster it was taken over from, until it resumes
    /// here (its client's last seen id is in that server's log).
    pub(super) moved_from: Option<u64>,
    /// While waiting: the address its last connection came from, if known
    /// (a flood of lost connections gives up its own sessions first).
    pub(super) peer: Option<IpAddr>,
    /// While waiting: the newest log id when its connection was lost (or,
    /// for a session kept from the server's run before, when it was
    /// loaded), from which what its user missed is replayed when the user
    /// takes the session back with the name's password.
    pub(super) away_seen: Option<MessageId>,
    /// The newest log id when the session began on this server, if known:
    /// nothing older is replayed to it (entries for its name before that
    /// were another session's, perhaps another person's).
    pub(super) started: Option<MessageId>,
    /// Kept by a store from the server's run before, and not taken by a
    /// connection of this run yet: when its connection was lost (before
    /// the restart) is not known here, nor what it missed before.
    pub(super) kept: bool,
    /// When its current window of resumes began, and how many it had in
    /// it ([`SESSION_RESUMES`]).
    pub(super) resumes: Option<(Instant, u32)>,
    /// While waiting: the name keys of the senders already told (by a
    /// `Notice{AWAY}`) that it is away, so that a sender writing to it
    /// again is not told once per message; at most
    /// [`AWAY_TOLD_SENDERS`](crate::limits::AWAY_TOLD_SENDERS) of them.
    pub(super) told_away: HashSet<String>,
}

/// Why a session ended by [`Hub::evict`] was not resumed, as its client
/// is told when it comes back within the grace period.
const EVICTED_TEXT: &str =
    "the server dropped it: your client did not read fast enough (its queue overflowed)";

impl Hub {
    /// Gives the hub its source of resume tokens: 16 bytes from a
    /// cryptographically secure generator per call (the server uses the
    /// operating system's). Without one, no session can be resumed: a lost
    /// connection leaves at once, as with a zero [`Limits::grace`](crate::Limits::grace).
    /// Unless a history store decided it, the epoch is drawn from it too.
    pub fn set_token_source(&mut self, source: Box<dyn FnMut() -> [u8; 16] + Send>) {
        self.tokens = Some(TokenSource(source));
        if !self.epoch_fixed {
            self.epoch = self.draw_epoch().unwrap_or(0);
        }
    }

    /// The lifetime of the hub's history, sent in every `Welcome`: a
    /// client that resumes with another epoch learns that the history it
    /// knew is gone.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The newest log id (0 before any entry).
    #[must_use]
    pub fn last_id(&self) -> MessageId {
        MessageId(self.next_message - 1)
    }

    /// The id of the newest entry of the log (0 when it is empty): after
    /// [`open_history`](Hub::open_history), the newest entry the store
    /// kept, where [`last_id`](Hub::last_id) may be past it (ids given
    /// before a crash and never committed are not given again).
    #[must_use]
    pub fn newest_logged(&self) -> MessageId {
        self.log.back().map_or(MessageId(0), |e| e.id)
    }

    /// Opens a history store: its entries become the room log (the newest
    /// that fit the limits), the ids continue after its newest, its epoch
    /// is the hub's (a new store gets one from the token source), and each
    /// session it holds waits [`Limits::grace`](crate::Limits::grace) from
    /// `now` for its client to resume it. Every later entry is appended to
    /// it before anyone hears of it. Call it once, before any connection,
    /// after [`set_token_source`](Hub::set_token_source).
    ///
    /// # Errors
    ///
    /// What the store's `load` or `set_epoch` returned, or
    /// [`StoreError::NoTokenSource`] for a new store with no token source;
    /// the hub is unchanged.
    pub fn open_history(
        &mut self,
        mut store: Box<dyn HistoryStore>,
        now: Instant,
    ) -> Result<(), StoreError> {
        let loaded = store.load()?;
        let epoch = match loaded.epoch {
            Some(e) => e,
            None => {
                let e = self.draw_epoch().ok_or(StoreError::NoTokenSource)?;
                store.set_epoch(e)?;
                e
            }
        };
        self.epoch = epoch;
        self.epoch_fixed = true;
        self.log.clear();
        self.log_bytes = 0;
        let newest = loaded.entries.last().map_or(0, |e| e.id.0);
        for entry in loaded.entries {
            self.push_log(entry);
        }
        self.next_message = loaded.next_id.0.max(newest + 1).max(1);
        // Who the log last saw join and not leave (see `Remote::logged`).
        let mut present: HashMap<String, Username> = HashMap::new();
        for entry in &self.log {
            match &entry.event {
                LogEvent::Joined { user } => {
                    present.insert(self.key(user), user.clone());
                }
                LogEvent::Left { user, .. } => {
                    present.remove(&self.key(user));
                }
                LogEvent::Chat { .. } => {}
            }
        }
        let resumable = self.resume_enabled();
        for record in loaded.sessions {
            if !resumable || self.ghosts() >= self.limits.max_ghosts {
                let _ = store.drop_session(&record.user);
                continue;
            }
            let key = self.key(&record.user);
            let mut session = Session {
                user: record.user,
                token: record.token,
                spent: record.spent,
                conn: None,
                last_conn: ClientId(0),
                grace: Some((now + self.limits.grace, LeaveReason::LOST)),
                last_client_id: record.last_client_id,
                recent: VecDeque::new(),
                moved_from: None,
                peer: None,
                away_seen: Some(self.last_id()),
                started: None,
                kept: true,
                resumes: None,
                told_away: HashSet::new(),
            };
            // Messages accepted after the record was saved are in the log.
            self.recall_accepted(&key, &mut session);
            self.sessions.insert(key.clone(), session);
            self.note_taken(&key);
        }
        present.retain(|key, _| !self.sessions.contains_key(key));
        self.remote.logged = present;
        self.store = Some(store);
        Ok(())
    }

    /// Notes in `session` (name key `key`) the chat messages of its user
    /// that the log holds since the user's last join (this session's:
    /// an earlier session of the name numbered its messages from 1 too),
    /// with the ids its client gave them: a copy the client sends again
    /// (it did not see them accepted) is then answered with its first
    /// outcome instead of being delivered twice.
    pub(super) fn recall_accepted(&self, key: &str, session: &mut Session) {
        let mut since_join = Vec::new();
        for e in self.log.iter().rev() {
            match &e.event {
                LogEvent::Joined { user } if (self.name_key)(user) == key => break,
                LogEvent::Chat {
                    from, client_id, ..
                } if *client_id > 0 && (self.name_key)(from) == key => {
                    since_join.push((*client_id, e.id, e.time));
                    if since_join.len() == RECENT_OUTCOMES {
                        break;
                    }
                }
                _ => {}
            }
        }
        for (client_id, id, time) in since_join.into_iter().rev() {
            session.last_client_id = session.last_client_id.max(client_id);
            session
                .recent
                .push_back((client_id, Outcome::Accepted(id, time)));
            if session.recent.len() > RECENT_OUTCOMES {
                session.recent.pop_front();
            }
        }
    }

    fn draw_epoch(&mut self) -> Option<u64> {
        let bytes = (self.tokens.as_mut()?.0)();
        let mut head = [0u8; 8];
        head.copy_from_slice(&bytes[..8]);
        Some(u64::from_be_bytes(head))
    }

    /// True when a lost connection waits for a resume.
    pub(super) fn resume_enabled(&self) -> bool {
        self.tokens.is_some() && !self.limits.grace.is_zero()
    }

    /// Sessions waiting for a resume.
    pub(super) fn ghosts(&self) -> usize {
        self.sessions.values().filter(|s| s.conn.is_none()).count()
    }

    /// A fresh token (all zero without a token source: never resumable).
    pub(super) fn new_token(&mut self) -> ResumeToken {
        match self.tokens.as_mut() {
            Some(source) => ResumeToken((source.0)()),
            None => ResumeToken::default(),
        }
    }

    /// Starts the session of a user that joined afresh.
    pub(super) fn open_session(
        &mut self,
        key: String,
        user: Username,
        client: ClientId,
        token: ResumeToken,
    ) {
        self.sessions.insert(
            key.clone(),
            Session {
                user,
                token,
                spent: None,
                conn: Some(client),
                last_conn: client,
                grace: None,
                last_client_id: 0,
                recent: VecDeque::new(),
                moved_from: None,
                peer: None,
                away_seen: None,
                started: Some(self.last_id()),
                kept: false,
                resumes: None,
                told_away: HashSet::new(),
            },
        );
        self.note_taken(&key);
        self.save_stored_session(client);
        self.publish_session(client);
    }

    /// Removes the record of every session from the store, and keeps the
    /// sessions themselves: for a server of a cluster that stops (call it
    /// before [`Hub::shutdown`]). Its users are announced as left and
    /// their sessions end in the cluster; a restart on the same store must
    /// not bring them back. Returns how many.
    pub fn drop_stored_sessions(&mut self) -> usize {
        let users: Vec<Username> = self.sessions.values().map(|s| s.user.clone()).collect();
        for user in &users {
            self.drop_stored_session(user);
        }
        users.len()
    }

    fn save_stored_session(&mut self, client: ClientId) {
        if !self.resume_enabled() {
            return;
        }
        let Some(s) = self.sessions.values().find(|s| s.conn == Some(client)) else {
            return;
        };
        let record = SessionRecord {
            user: s.user.clone(),
            token: s.token,
            spent: s.spent,
            last_client_id: s.last_client_id,
        };
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.save_session(&record) {
                debug!("session of {} not stored: {e}", record.user);
            }
        }
    }

    pub(super) fn drop_stored_session(&mut self, user: &Username) {
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.drop_session(user) {
                debug!("session of {user} not dropped from the store: {e}");
            }
        }
    }

    /// The `Welcome` for `user`, as things stand.
    pub(super) fn welcome_message(
        &self,
        user: &Username,
        token: ResumeToken,
        resumed: Option<Resumed>,
    ) -> ServerMessage {
        let grace_secs = if self.resume_enabled() {
            u32::try_from(self.limits.grace.as_secs()).unwrap_or(u32::MAX)
        } else {
            0
        };
        ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            username: user.clone(),
            text: self.welcome.replace("{user}", user.as_str()),
            limits: self.server_limits(),
            token,
            epoch: self.epoch,
            grace_secs,
            last_id: self.last_id(),
            resumed,
        }
    }

    /// Appends an entry to the store (if any) and the log, taking its id.
    /// On a store error nothing changes. The store's append is buffered
    /// until [`commit_history`](Hub::commit_history).
    pub(super) fn append(&mut self, entry: LogEntry) -> Result<(), StoreError> {
        if let Some(store) = self.store.as_mut() {
            let appended = store.append(&entry);
            let (failures, said) =
                commit_said(Stage::Append, self.append_failures, appended.as_ref().err());
            self.append_failures = failures;
            if let Some(said) = said {
                warn!("{said}");
            }
            appended?;
            self.uncommitted = true;
            self.last_stored = entry.id.0;
        }
        self.next_message = entry.id.0 + 1;
        self.push_log(entry);
        Ok(())
    }

    /// True while the store has appends not committed or acks wait for a
    /// commit: the server then calls [`commit_history`](Hub::commit_history)
    /// before it waits for input. Always false without a store.
    #[must_use]
    pub fn has_uncommitted(&self) -> bool {
        self.uncommitted || !self.held_acks.is_empty()
    }

    /// Commits the history store's appends since the last commit, then
    /// acknowledges the chat messages they accepted, in the order they were
    /// accepted. A server calls it once per batch of messages it handled
    /// (before it waits for more): one commit for the batch instead of one
    /// per message. The hub also commits on its own in
    /// [`handle_timeout`](Hub::handle_timeout), before a connection
    /// closes, in [`shutdown`](Hub::shutdown), and when
    /// 4096 acks are waiting. Without a store there is nothing to do: acks
    /// go out at once.
    ///
    /// If the commit fails, its chat messages were routed all the same
    /// (routing does not wait for the commit) and the log in memory keeps
    /// them: each gets its `Ack` (a copy sent again is a duplicate), and
    /// each sender one `Error{INTERNAL}` with client id 0 saying how many
    /// were not saved.
    pub fn commit_history(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if !self.has_uncommitted() {
            return;
        }
        let result = match self.store.as_mut() {
            Some(store) if self.uncommitted => store.commit(),
            _ => Ok(()),
        };
        self.uncommitted = false;
        let held = std::mem::take(&mut self.held_acks);
        self.release_acks(held, result.as_ref().err());
    }

    /// Takes the result of a commit the server made outside the hub: a
    /// store whose appends only queue the entries, and whose writer
    /// commits them on a thread of its own without the hub at hand,
    /// reports here that every entry appended up to `upto` (by id) is
    /// committed (`Ok`) or lost (`Err`). The answers held for those entries
    /// go out as [`commit_history`](Hub::commit_history) sends them (acks,
    /// and after a failed commit a line to each sender), in order; later ones keep
    /// waiting. Reporting the same `upto` again, or an older one, releases
    /// nothing more. The hub's own commits (on the clock, before a
    /// connection closes, at shutdown) still call
    /// [`HistoryStore::commit`], which must cover whatever such a commit
    /// has not reported yet (its failure included).
    pub fn history_committed(
        &mut self,
        upto: MessageId,
        result: Result<(), StoreError>,
        now: Instant,
    ) {
        self.clock = self.clock.max(now);
        if upto.0 >= self.last_stored {
            self.uncommitted = false;
        }
        let covered = self
            .held_acks
            .iter()
            .take_while(|a| a.after <= upto.0)
            .count();
        let held: Vec<HeldAck> = self.held_acks.drain(..covered).collect();
        self.release_acks(held, result.as_ref().err());
    }

    /// Sends the answers of `held`, once a commit that covers them
    /// returned: their acks. A failed commit (`error`) did not undo what
    /// it covered: its messages were routed when they were appended, and
    /// the log in memory keeps them. They are acknowledged all the same
    /// (a copy sent again is a duplicate, not a second delivery), and
    /// each sender is told once that they were not saved.
    fn release_acks(&mut self, held: Vec<HeldAck>, error: Option<&StoreError>) {
        let (failures, said) = match error {
            // A commit that released no answer may have written nothing (a
            // server's committer reports its empty rounds too, and on a full
            // disk those succeed): no sign that commits work again.
            None if held.is_empty() => (self.commit_failures, None),
            _ => commit_said(Stage::Commit, self.commit_failures, error),
        };
        self.commit_failures = failures;
        if let Some(said) = said {
            warn!("{said}");
        }
        // Per sender, how many fresh messages the failed commit did not save.
        let mut unsaved: Vec<(ClientId, usize)> = Vec::new();
        for a in held {
            if !self.conns.contains_key(&a.client) {
                continue;
            }
            let message = match a.answer {
                Held::Ack { id, time, fresh } => {
                    if fresh && error.is_some() {
                        match unsaved.iter_mut().find(|(c, _)| *c == a.client) {
                            Some((_, n)) => *n += 1,
                            None => unsaved.push((a.client, 1)),
                        }
                    }
                    ServerMessage::Ack {
                        client_id: a.client_id,
                        id,
                        time,
                    }
                }
                Held::Refused(code, text) => ServerMessage::Error {
                    code,
                    client_id: a.client_id,
                    text,
                },
            };
            self.send(a.client, message);
        }
        let detail = error.map(ToString::to_string).unwrap_or_default();
        for (client, n) in unsaved {
            let what = if n == 1 {
                "your last message was delivered but is not saved".to_string()
            } else {
                format!("your last {n} messages were delivered but are not saved")
            };
            self.send(
                client,
                ServerMessage::Error {
                    code: ErrorCode::INTERNAL,
                    client_id: 0,
                    text: format!("{what} (a restart of the server loses them): {detail}"),
                },
            );
        }
    }

    /// Tells `client` that its message `client_id` is the log's entry
    /// `id` of `time` (0s: handled, but no longer in the log).
    fn send_ack(&mut self, client: ClientId, client_id: u64, (id, time): (MessageId, Timestamp)) {
        self.send(
            client,
            ServerMessage::Ack {
                client_id,
                id,
                time,
            },
        );
    }

    /// Acknowledges an accepted chat message: at once without a store, else
    /// once the store committed it.
    pub(super) fn acknowledge(
        &mut self,
        client: ClientId,
        client_id: u64,
        (id, time): (MessageId, Timestamp),
        fresh: bool,
    ) {
        if self.store.is_none() {
            self.send_ack(client, client_id, (id, time));
            return;
        }
        self.held_acks.push(HeldAck {
            client,
            client_id,
            after: self.last_stored,
            answer: Held::Ack { id, time, fresh },
        });
        if self.held_acks.len() >= MAX_HELD_ACKS {
            let now = self.clock;
            self.commit_history(now);
        }
    }

    /// Refuses a chat message: at once, unless an ack to the same client
    /// waits for a commit (answers keep the order of the messages).
    pub(super) fn refuse_answer(
        &mut self,
        client: ClientId,
        code: ErrorCode,
        client_id: u64,
        text: String,
    ) {
        if self.held_acks.iter().any(|a| a.client == client) {
            self.held_acks.push(HeldAck {
                client,
                client_id,
                after: self.last_stored,
                answer: Held::Refused(code, text),
            });
        } else {
            self.error_for(client, code, client_id, text);
        }
    }

    pub(super) fn push_log(&mut self, entry: LogEntry) {
        self.log_bytes += entry.cost();
        self.tag_entry(entry.id);
        self.log.push_back(entry);
        while self.log.len() > self.limits.log_entries || self.log_bytes > self.limits.log_bytes {
            let Some(old) = self.log.pop_front() else {
                break;
            };
            self.log_bytes -= old.cost();
            if self.remote.enabled {
                let tag = self.tags.get(old.id.0).copied();
                self.trimmed.push(old.id.0, tag, self.limits.log_entries);
            }
            self.tags.forget_to(old.id.0);
        }
    }

    /// Logs a join or a leave (a store that fails is noted, and the entry
    /// lives in memory only).
    pub(super) fn log_presence(&mut self, event: LogEvent, now: Instant) -> LogEntry {
        let entry = LogEntry {
            id: self.entry_id(),
            time: self.entry_time(now),
            event,
        };
        if let Err(e) = self.append(entry.clone()) {
            debug!("presence not stored: {e}");
            self.next_message = entry.id.0 + 1;
            self.push_log(entry.clone());
        }
        self.tag_own_making(entry.id);
        entry
    }

    /// Tells every live user that `user` left, as a log entry.
    pub(super) fn announce_left(
        &mut self,
        user: Username,
        reason: LeaveReason,
        text: String,
    ) -> MessageId {
        let now = self.clock;
        if reason == LeaveReason::KICKED && self.resume_enabled() {
            let key = self.key(&user);
            self.kicked
                .insert(key, (text.clone(), now + self.limits.grace));
        } else if reason == LeaveReason::EVICTED && self.resume_enabled() {
            // Its client comes back asking for a session that was just
            // ended: why, rather than "session expired".
            let key = self.key(&user);
            self.evicted.insert(key, now + self.limits.grace);
        }
        let entry = self.log_presence(
            LogEvent::Left {
                user: user.clone(),
                reason,
                text: text.clone(),
            },
            now,
        );
        self.queue_presence(
            PresenceEvent::Left(Departure {
                id: entry.id,
                time: entry.time,
                user,
                reason,
                text,
            }),
            None,
            now,
        );
        entry.id
    }

    /// The message a log entry is for the user of name key `key`, or
    /// `None` if that user may not see it (its own messages and presence,
    /// private messages between others).
    pub(super) fn entry_message(
        &self,
        e: &LogEntry,
        key: &str,
        history: bool,
    ) -> Option<ServerMessage> {
        let (id, time) = (e.id, e.time);
        match &e.event {
            LogEvent::Chat {
                from,
                to,
                kind,
                text,
                ..
            } => {
                let theirs = to.as_ref().is_none_or(|t| self.key(t) == key);
                (self.key(from) != key && theirs).then(|| {
                    ServerMessage::Chat(RoutedChat {
                        id,
                        time,
                        from: from.clone(),
                        private: to.is_some(),
                        kind: *kind,
                        text: text.clone(),
                        history,
                    })
                })
            }
            LogEvent::Joined { user } => (self.key(user) != key).then(|| ServerMessage::Joined {
                id,
                time,
                user: user.clone(),
            }),
            LogEvent::Left { user, reason, text } => (self.key(user) != key).then(|| {
                ServerMessage::Left(Departure {
                    id,
                    time,
                    user: user.clone(),
                    reason: *reason,
                    text: text.clone(),
                })
            }),
        }
    }

    /// Sends a user joining afresh the room's latest chat messages to
    /// everyone, marked as history: at most [`Limits::history_count`](crate::Limits::history_count),
    /// none older than [`Limits::history_age`](crate::Limits::history_age),
    /// and no more text than [`MAX_HISTORY_BYTES`](crate::MAX_HISTORY_BYTES)
    /// (the newest that fit). Private messages and presence are never history.
    pub(super) fn send_history(&mut self, client: ClientId, now: Instant) {
        let (count, age) = (self.limits.history_count, self.limits.history_age);
        if count == 0 || age.is_zero() {
            return;
        }
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let oldest = self.timestamp(now).0.saturating_sub(age_ms);
        let mut bytes = 0;
        let mut picked: Vec<ServerMessage> = self
            .log
            .iter()
            .rev()
            .filter(|e| e.time.0 >= oldest)
            .filter_map(|e| match &e.event {
                LogEvent::Chat {
                    from,
                    to: None,
                    kind,
                    text,
                    ..
                } => Some(ServerMessage::Chat(RoutedChat {
                    id: e.id,
                    time: e.time,
                    from: from.clone(),
                    private: false,
                    kind: *kind,
                    text: text.clone(),
                    history: true,
                })),
                _ => None,
            })
            .take(count)
            .take_while(|m| {
                let ServerMessage::Chat(c) = m else {
                    return true;
                };
                bytes += c.text.len();
                bytes <= crate::MAX_HISTORY_BYTES
            })
            .collect();
        picked.reverse();
        for m in picked {
            self.send(client, m);
        }
    }

    /// Whether `request` would resume the session of `username` here:
    /// resume is on, the epoch is this hub's (or its predecessor's), and
    /// the token is the session's, or the one its last resume spent while
    /// the resumed connection has not shown that it got the new one.
    pub(super) fn resumable_with(&self, username: &Username, request: &ResumeRequest) -> bool {
        self.resume_enabled()
            && (request.epoch == self.epoch || Some(request.epoch) == self.prior_epoch)
            && self.sessions.get(&self.key(username)).is_some_and(|s| {
                !s.token.is_none()
                    && (s.token.matches(&request.token)
                        || s.spent.is_some_and(|t| t.matches(&request.token)))
            })
    }

    /// A resume of the waiting session of `key` for its user, who gave the
    /// name's password (checked) but no token: a password stands in for
    /// the token of a session whose connection was lost (its client was
    /// killed, or runs on another machine), as IRC's services let a user
    /// regain a registered nick. Replayed, as to a resume: what came
    /// since the connection was lost (for a session kept from the
    /// server's run before, since it was loaded). What the lost connection
    /// was sent before the server noticed the loss is not known to be
    /// unseen, and is not replayed. `None` for a session that still has a
    /// connection (the user is online elsewhere: not taken from it), one
    /// taken over from another server (its client's last seen id is that
    /// server's), and none at all. With it: whether the session is one
    /// kept from the server's run before that no connection took since
    /// the restart (what came for it before the restart is not replayed,
    /// and its user is told so); one that was connected in this run and
    /// lost its connection since has what it missed replayed whole.
    pub(super) fn regain_request(&self, key: &str) -> Option<(ResumeRequest, bool)> {
        if self.names.contains_key(key) {
            return None;
        }
        let s = self.sessions.get(key)?;
        if s.conn.is_some() || s.moved_from.is_some() {
            return None;
        }
        // What the log no longer holds counts as lost, as for a token.
        let request = ResumeRequest {
            token: s.token,
            last_seen: s.away_seen?,
            epoch: self.epoch,
        };
        Some((request, s.kept))
    }

    /// Why a name is taken, for the refusal: by which spelling, when the
    /// holder's differs (case, a look-alike under the name key, or under
    /// the loose key when `key` is that of the name it looks like), and
    /// how long a waiting session waits for its client.
    pub(super) fn taken_text(&self, username: &Username, key: &str) -> String {
        let session = self.sessions.get(key);
        let holder = session.map(|s| &s.user).or_else(|| self.remote_user(key));
        let taken = match holder {
            Some(holder) if holder != username => {
                format!("the username '{username}' is already taken (as '{holder}')")
            }
            _ => format!("the username '{username}' is already taken"),
        };
        let waiting = session
            .filter(|s| s.conn.is_none())
            .and_then(|s| s.grace)
            .map(|(until, _)| until.saturating_duration_since(self.clock).as_secs() + 1);
        match waiting {
            Some(secs) => {
                format!("{taken}: its session waits up to {secs} s for its client to come back")
            }
            None => taken,
        }
    }

    /// The connection `client`, resumed, sent its first frame: its client
    /// has the `Welcome`'s token, and the one the resume spent is no
    /// longer good (a replay of it cannot take the session).
    /// A store keeps the session without it from now on.
    pub(super) fn confirm_welcome(&mut self, client: ClientId, user: &Username) {
        let key = self.key(user);
        if let Some(s) = self.sessions.get_mut(&key) {
            if s.conn == Some(client) && s.spent.take().is_some() {
                self.save_stored_session(client);
            }
        }
    }

    /// Tries to resume the session `request` names for the connection
    /// `client`. True when the handshake is answered (resumed, or refused
    /// for too many failed attempts); false to go on as a fresh join.
    pub(super) fn try_resume(
        &mut self,
        client: ClientId,
        username: &Username,
        request: ResumeRequest,
        now: Instant,
    ) -> bool {
        let key = self.key(username);
        let valid = self.resumable_with(username, &request);
        if !valid {
            self.note_other_names_token(client, &key, username, &request);
        }
        // Only a wrong token is held back by its address's failures: a
        // token is 128 random bits, which no number of tries guesses, and
        // a real client must not be locked out of its session by someone
        // else guessing from the same address (a shared NAT). A name with
        // no session here has nothing to guess: its session ended (the
        // grace ran out, a restart without history) or was never here,
        // and its client joins afresh, neither counted nor held back
        // (users behind one address coming back after a long outage).
        if !valid && !self.sessions.contains_key(&key) {
            return false;
        }
        // The token the session's connection spent, from a connection
        // accepted before that one: an attempt its client gave up on for
        // a later one, read late (a server that stalled reads its queue
        // of handshakes in any order). It does not take the session from
        // the newer attempt, whose client would be told it was replaced
        // and must not come back; it is answered as a name taken, and not
        // counted as a failed attempt.
        let abandoned = valid
            && self.sessions.get(&key).is_some_and(|s| {
                !s.token.matches(&request.token) && s.conn.is_some_and(|holder| holder > client)
            });
        if abandoned {
            return false;
        }
        if !valid && self.refuse_spent_resume(client, now) {
            return true;
        }
        if self.end_rolled_back(client, &key, &request) {
            // Its name is free now: a fresh join, told why first.
            return false;
        }
        if !valid {
            self.note_failed_resume(client, &request, now);
            return false;
        }
        if let Some(wait) = self.resumed_too_often(&key, now) {
            // No violation: the refusal's own line in the server's log
            // (counted, not logged one by one, past a flood) says it all.
            self.refuse(
                client,
                RefuseCode::TOO_MANY_ATTEMPTS,
                &format!(
                    "this session was resumed {SESSION_RESUMES} times within {} s; try again in {wait} s",
                    self.limits.resume_window.as_secs()
                ),
            );
            return true;
        }
        let replaced = self.sessions.get(&key).and_then(|s| s.conn);
        if let Some(old) = replaced {
            // Its connection is not known to be dead yet: this one replaces
            // it. Told why, should its client still be there (a copy of
            // its saved session resumed it): it must not take it back.
            let from = self
                .address_of(client)
                .map(|a| format!(" (address {a})"))
                .unwrap_or_default();
            self.error(
                old,
                ErrorCode::REPLACED,
                format!("your session was resumed from another connection{from}"),
            );
            self.close_conn(
                old,
                "the sender reconnected (a file is not resumed: it must be sent again)",
                "reconnected",
            );
            self.events.push_back(HubEvent::Close {
                client: old,
                reason: "replaced by a resumed connection".into(),
            });
        }
        let token = self.new_token();
        let Some(session) = self.sessions.get_mut(&key) else {
            return false;
        };
        session.conn = Some(client);
        session.last_conn = client;
        session.grace = None;
        session.told_away.clear();
        session.token = token;
        session.spent = Some(request.token);
        session.kept = false;
        let window = self.limits.resume_window;
        let count = match session.resumes {
            Some((start, n)) if now.saturating_duration_since(start) < window => (start, n + 1),
            _ => (now, 1),
        };
        session.resumes = Some(count);
        let moved_from = session.moved_from.take();
        let started = session.started;
        let user = session.user.clone();
        if moved_from.is_some() {
            // Its user's last messages on its old server may have reached
            // this log from the stream since the session came here: a copy
            // its client sends again is answered with their outcome.
            if let Some(mut s) = self.sessions.remove(&key) {
                s.recent.clear();
                self.recall_accepted(&key, &mut s);
                self.sessions.insert(key.clone(), s);
            }
        }
        self.names.insert(key.clone(), client);
        self.pending.remove(&client);
        // A session kept from this server's run before did not move.
        let moved = moved_from.filter(|f| self.remote.former.is_none_or(|(r, _)| r != *f));
        if moved.is_none() && replaced.is_none() {
            // It was away: the others are told it is back (not itself:
            // its batch starts after this). One that came from another
            // server was told as its session came ([`Hub::adopt_session`]).
            // Queued before the connection is a member: a batch this back
            // fills to its bound goes out at once, and must not go to it
            // ahead of its `Welcome`.
            self.queue_away(user.clone(), true, self.clock);
        }
        if let Some(c) = self.conns.get_mut(&client) {
            c.phase = Phase::Joined(user.clone());
            c.welcome_unconfirmed = true;
        }
        self.rebuild_members();
        // The replay below holds every entry after `last_seen`, the
        // waiting joins and leaves included.
        self.presence_starts_now(client);
        self.save_stored_session(client);
        self.publish_session(client);
        if let Some(from) = moved {
            self.publish(super::ClusterEvent::Moved {
                user: user.clone(),
                from,
            });
        } else if replaced.is_none() {
            // It was away (the other servers list it so): it is back.
            self.publish(super::ClusterEvent::Back { user: user.clone() });
        }
        // From another server, the ids are not this log's: what was
        // missed is told from the entries' origins (see `unseen`). A
        // session kept from this server's run before has this log's ids.
        // Entries for its name from before the session began were another
        // session's: a client cannot ask for them by a low last seen id.
        let request = ResumeRequest {
            last_seen: request.last_seen.max(started.unwrap_or(MessageId(0))),
            ..request
        };
        // Outside a cluster ids are consecutive: those missing between
        // the last seen and the oldest logged were trimmed. A cluster's
        // are stream positions: the trimmed entries are counted. (A
        // session kept from this server's run before compares by the ids
        // its store kept; what that run trimmed is not known otherwise.)
        let oldest = self.log.front().map_or(self.next_message, |e| e.id.0);
        let dropped = if self.remote.enabled && (moved.is_some() || moved_from.is_none()) {
            self.trimmed_unseen(moved, request.last_seen)
        } else {
            oldest.saturating_sub(request.last_seen.0.saturating_add(1))
        };
        // The replay first: the ids it gives (from another server, new
        // ones) are then at or below the `Welcome`'s `last_id`, and a
        // client tells what it missed from live traffic by that id.
        let replay: Vec<ServerMessage> = match moved_from {
            Some(from) => self.moved_replay(&key, from, request.last_seen),
            None => self
                .log
                .iter()
                .filter(|e| e.id > request.last_seen)
                .filter_map(|e| self.entry_message(e, &key, false))
                .collect(),
        };
        let welcome = self.welcome_message(&user, token, Some(Resumed { dropped }));
        self.send(client, welcome);
        let replayed = replay.len();
        for m in replay {
            self.send(client, m);
        }
        self.tell_joiner_of_outage(client);
        self.events.push_back(HubEvent::Resumed {
            client,
            user,
            replaced,
            replayed,
            dropped,
        });
        true
    }

    /// Whether the session of name key `key` had its [`SESSION_RESUMES`]
    /// resumes within the resume window already: the seconds until that
    /// window is over, rounded up, if so.
    fn resumed_too_often(&self, key: &str, now: Instant) -> Option<u64> {
        let (start, n) = self.sessions.get(key)?.resumes?;
        let left = self
            .limits
            .resume_window
            .checked_sub(now.saturating_duration_since(start))?;
        if n < SESSION_RESUMES || left.is_zero() {
            return None;
        }
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// A resume `request` of `client` for the session of name key `key`
    /// from a client that saw ids this server never gave: its `last_seen`
    /// is above [`last_id`](Hub::last_id), which lies past every id the
    /// store ever handed out (crash included). The server runs on an older
    /// copy of its history database (restored from a backup): the session
    /// it kept holds a token older than the one the client has, and the
    /// client's history is ahead of the log. That is the history-lost case
    /// of a restart without a database: the session is ended (the others
    /// see it leave), its client is told why before the `Welcome` of the
    /// fresh join that follows under its name, and the attempt is not
    /// counted as a failed one. True when it was so ended.
    ///
    /// Only a session kept from the server's run before, waiting, that no
    /// connection took since the restart, in a hub outside a cluster
    /// (whose ids are stream positions), and with this hub's epoch (a
    /// restored copy keeps it). The claim of a high `last_seen` is not
    /// proof: anyone may make it. What it gains a stranger is bounded by
    /// that: a session with a connection is never ended by it, nor one
    /// resumed or begun in this run (its token is this run's, which no
    /// rollback explains); a kept session whose user has not come back
    /// since the restart is ended, and its name taken, as it could have
    /// been once the grace period ran out (a name protected by a password
    /// still needs it to get this far).
    fn end_rolled_back(&mut self, client: ClientId, key: &str, request: &ResumeRequest) -> bool {
        let last_id = self.last_id();
        let applies = !self.remote.enabled
            && request.epoch == self.epoch
            && request.last_seen > last_id
            && self
                .sessions
                .get(key)
                .is_some_and(|s| s.kept && s.conn.is_none() && s.moved_from.is_none());
        if !applies {
            return false;
        }
        let seen = request.last_seen;
        self.end_session(
            key,
            None,
            format!(
                "its client saw up to id {seen}, past this server's last id {last_id}: the history database was restored from an older copy"
            ),
        );
        if let Some(c) = self.conns.get_mut(&client) {
            c.session_ended = Some(format!(
                "history lost (the server's history ends at id {last_id}, before the id {seen} your client saw: it was restored from an older copy)"
            ));
        }
        true
    }

    /// A resume request, for `username` (name key `key`), with the token
    /// of another name's session: a saved session taken up under another
    /// name. Its fresh join is told whose the session is, rather than
    /// that its session expired; that session is left alone.
    fn note_other_names_token(
        &mut self,
        client: ClientId,
        key: &str,
        username: &Username,
        request: &ResumeRequest,
    ) {
        if !self.resume_enabled()
            || request.token.is_none()
            || !(request.epoch == self.epoch || Some(request.epoch) == self.prior_epoch)
        {
            return;
        }
        let owner = self
            .sessions
            .iter()
            .find(|(k, s)| {
                k.as_str() != key
                    && !s.token.is_none()
                    && (s.token.matches(&request.token)
                        || s.spent.is_some_and(|t| t.matches(&request.token)))
            })
            .map(|(_, s)| s.user.clone());
        if let (Some(owner), Some(c)) = (owner, self.conns.get_mut(&client)) {
            c.session_ended = Some(format!(
                "the saved session is that of '{owner}', not of '{username}'"
            ));
        }
    }

    /// For a resume request that failed (a wrong token for a session
    /// that exists): when its address (that of `client`) has had too many
    /// failures within the window, refuses the handshake with
    /// [`RefuseCode::TOO_MANY_ATTEMPTS`] and returns true. A frontend
    /// that checks a token outside the hub (in a cluster, the take-over
    /// of another server's session) calls it when the check failed,
    /// never before: a right token is not held back (see
    /// [`Hub::note_failed_resume`]).
    pub fn refuse_spent_resume(&mut self, client: ClientId, now: Instant) -> bool {
        let peer = self.address_of(client);
        let window = self.limits.resume_window;
        let Some((start, n)) = self.resume_failures.get(&peer) else {
            return false;
        };
        if now.saturating_duration_since(*start) >= window || *n < self.limits.resume_attempts {
            return false;
        }
        let secs = window.as_secs();
        self.violation(client, "too many failed resume attempts");
        self.refuse(
            client,
            RefuseCode::TOO_MANY_ATTEMPTS,
            &format!("too many failed resume attempts; try again in {secs} s"),
        );
        true
    }

    /// Counts a failed resume `request` of `client` against its address
    /// (see [`Hub::refuse_spent_resume`]), when it named this hub's
    /// epoch: a client whose server restarted without its history
    /// (another epoch) did nothing wrong, only token failures count. The
    /// hub counts those it checks itself; a frontend counts those it
    /// answers without the hub (in a cluster, a take-over whose token
    /// did not match, answered as a name taken elsewhere).
    pub fn note_failed_resume(&mut self, client: ClientId, request: &ResumeRequest, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&client) {
            conn.resume_failed = true;
        }
        if request.epoch == self.epoch {
            let peer = self.address_of(client);
            self.note_resume_failure(peer, now);
        }
    }

    fn note_resume_failure(&mut self, peer: Option<IpAddr>, now: Instant) {
        let window = self.limits.resume_window;
        if self.resume_failures.len() >= MAX_FAILURE_ENTRIES {
            self.resume_failures
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let e = self.resume_failures.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// A joined connection was lost: with resume on, its session waits for
    /// a resume and the others are told it is away; else it leaves.
    pub(super) fn lose(&mut self, client: ClientId, reason: LeaveReason, why: String) {
        if !self.resume_enabled() || !self.is_joined(client) {
            self.leave(client, reason, why);
            return;
        }
        let Some(conn) = self.close_conn(
            client,
            "the sender's connection was lost (a file is not resumed: it must be sent again)",
            "connection lost",
        ) else {
            return;
        };
        if let Phase::Joined(user) = conn.phase {
            let key = self.key(&user);
            let until = self.clock + self.limits.grace;
            let newest = self.last_id();
            if let Some(s) = self.sessions.get_mut(&key) {
                s.conn = None;
                s.grace = Some((until, reason));
                s.peer = conn.peer;
                s.away_seen = Some(newest);
                s.told_away.clear();
            }
            let since = self.timestamp(self.clock);
            self.publish(super::ClusterEvent::Away {
                user: user.clone(),
                since,
            });
            self.queue_away(user.clone(), false, self.clock);
            self.events.push_back(HubEvent::Away { client, user });
        }
        debug!("closing {client}: {why}");
        self.events.push_back(HubEvent::Close {
            client,
            reason: why,
        });
        // A flood of lost connections cannot hold more than the bound.
        loop {
            let waiting = self.ghosts();
            let max = self.limits.max_ghosts;
            if waiting <= max {
                break;
            }
            let Some((key, had, tied)) = self.oldest_ghost() else {
                break;
            };
            let most = if tied {
                format!(
                    "its address had {had} of them, as many as any, and it was the oldest of those"
                )
            } else {
                format!("its address had the most of them ({had}), and it was its oldest")
            };
            let note = format!(
                "its session was given up, as {waiting} sessions were waiting for a resume, past the cap of {max}; {most}"
            );
            self.end_session(&key, None, note);
        }
    }

    /// The waiting session to let go first: the oldest of the address with
    /// the most waiting sessions, so that one machine dropping connection
    /// after connection ends its own sessions, not those of everyone else.
    /// With how many its address has waiting, and whether another address
    /// has as many.
    fn oldest_ghost(&self) -> Option<(String, usize, bool)> {
        let mut per_peer: HashMap<Option<IpAddr>, usize> = HashMap::new();
        for s in self.sessions.values().filter(|s| s.grace.is_some()) {
            *per_peer.entry(s.peer.map(address_key)).or_default() += 1;
        }
        let (Reverse(had), _, key) = self
            .sessions
            .iter()
            .filter_map(|(k, s)| {
                let (until, _) = s.grace?;
                Some((Reverse(per_peer[&s.peer.map(address_key)]), until, k))
            })
            .min()?;
        let tied = per_peer.values().filter(|&&n| n == had).count() > 1;
        Some((key.clone(), had, tied))
    }

    /// Ends the sessions whose grace period ran out: the others are told
    /// they left.
    pub(super) fn expire_ghosts(&mut self, now: Instant) {
        let mut due: Vec<(Instant, String)> = self
            .sessions
            .iter()
            .filter_map(|(k, s)| s.grace.map(|(until, _)| (until, k.clone())))
            .filter(|(until, _)| *until <= now)
            .collect();
        due.sort();
        for (_, key) in due {
            self.end_ghost(&key);
        }
    }

    /// The session of `user` that the store kept ended in the cluster
    /// while this server was down: its grace ran out (`kicked` `None`),
    /// or it was kicked with that text. It ends here too, as it would
    /// have then (a session with a connection is left alone).
    pub fn end_kept_session(&mut self, user: &Username, kicked: Option<&str>) {
        let key = self.key(user);
        if self.sessions.get(&key).is_some_and(|s| s.conn.is_none()) {
            self.end_session(&key, kicked, String::new());
        }
    }

    /// The session of `user`, waiting for a resume, has at most `left`
    /// of its grace period left (a session kept from the run before, whose
    /// grace began before this start); one with a connection is left alone.
    pub fn shorten_grace(&mut self, user: &Username, left: Duration, now: Instant) {
        let key = self.key(user);
        if let Some(s) = self.sessions.get_mut(&key).filter(|s| s.conn.is_none()) {
            if let Some((until, _)) = s.grace.as_mut() {
                *until = (*until).min(now + left);
            }
        }
    }

    pub(super) fn end_ghost(&mut self, key: &str) {
        self.end_session(key, None, String::new());
    }

    /// An operator (of this server or another one) removes the away
    /// session of name key `key`: the others are told it left, kicked,
    /// with the operator's `text`, as for a connected user.
    pub(super) fn kick_ghost(&mut self, key: &str, text: &str) {
        self.end_session(key, Some(text), String::new());
    }

    /// The name key `key` joins (here, or on another server): a kick of an
    /// earlier session of that name is no longer what a resume is told.
    /// Returns the kick's text if it is recent (its grace has not run out).
    pub(super) fn forget_kick(&mut self, key: &str, now: Instant) -> Option<String> {
        let evicted = self
            .evicted
            .remove(key)
            .filter(|until| *until > now)
            .map(|_| EVICTED_TEXT.to_string());
        let recent = self.recent_kick(key, now);
        self.kicked.remove(key);
        recent.or(evicted)
    }

    /// The text of a kick of name key `key` within the grace period before
    /// `now`, if the name has not joined since.
    pub(super) fn recent_kick(&self, key: &str, now: Instant) -> Option<String> {
        self.kicked
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(text, _)| text.clone())
    }

    /// Forgets kicks whose grace ran out.
    pub(super) fn expire_kicks(&mut self, now: Instant) {
        self.kicked.retain(|_, (_, until)| *until > now);
        self.evicted.retain(|_, until| *until > now);
    }

    /// Ends the session of `key`: it left, kicked (with that text) or for
    /// the reason it went away; `note` says why the hub ended it, if it
    /// did (see [`HubEvent::Left`]).
    fn end_session(&mut self, key: &str, kicked: Option<&str>, note: String) {
        let Some(s) = self.sessions.remove(key) else {
            return;
        };
        self.note_taken(key);
        if s.conn.is_none() {
            self.tell_senders_of_unread(key, &s, kicked.is_some());
        }
        let (reason, text) = match kicked {
            Some(text) => (LeaveReason::KICKED, text.to_string()),
            None => (s.grace.map_or(LeaveReason::LOST, |(_, r)| r), String::new()),
        };
        self.local_left(s.last_conn, s.user, reason, text, note);
    }

    /// The away session `s` of name key `key` ends without its user
    /// back: the private messages sent to it since its connection was lost
    /// were acknowledged to their senders but never delivered. Each sender
    /// connected here is told, in one line (a sender on another server of
    /// a cluster is not: its server does not know of the end in time).
    fn tell_senders_of_unread(&mut self, key: &str, s: &Session, kicked: bool) {
        let Some(away) = s.away_seen else {
            return;
        };
        // (sender, how many, the first one's start), in the order sent.
        let mut unread: Vec<(Username, usize, String)> = Vec::new();
        for e in self.log.iter().filter(|e| e.id > away) {
            let LogEvent::Chat {
                from,
                to: Some(to),
                text,
                ..
            } = &e.event
            else {
                continue;
            };
            if self.key(to) != key {
                continue;
            }
            match unread.iter_mut().find(|(f, ..)| f == from) {
                Some((_, n, _)) => *n += 1,
                None => unread.push((from.clone(), 1, super::cluster::text_start(text))),
            }
        }
        let user = &s.user;
        let why = if kicked {
            format!("{user} was removed by an operator while away")
        } else {
            format!("{user} lost the connection and did not come back")
        };
        for (from, n, first) in unread {
            let text = if n == 1 {
                format!("your private message to {user} was not delivered: {why} (\"{first}\")")
            } else {
                format!(
                    "your {n} private messages to {user} were not delivered: {why} (the first: \"{first}\")"
                )
            };
            self.tell_sender(&from, text);
        }
    }

    /// A local user (last on connection `client`) left, its session over:
    /// its stored session is dropped, the members and the other servers
    /// are told, and a [`HubEvent::Left`] carries a removal's text and
    /// `note`, why the hub ended the session if it did.
    pub(super) fn local_left(
        &mut self,
        client: ClientId,
        user: Username,
        reason: LeaveReason,
        text: String,
        note: String,
    ) {
        self.drop_stored_session(&user);
        self.note_left_here(&user);
        let id = self.announce_left(user.clone(), reason, text.clone());
        let removal = if reason == LeaveReason::KICKED {
            text.clone()
        } else {
            String::new()
        };
        self.publish(super::ClusterEvent::Left {
            user: user.clone(),
            reason,
            text,
            id,
        });
        let key = self.key(&user);
        self.events.push_back(HubEvent::Left {
            client,
            user,
            reason,
            removal,
            note,
        });
        self.contested_freed(&key);
    }

    /// When the next grace period runs out.
    pub(super) fn ghost_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.grace.map(|(until, _)| until))
            .min()
    }

    /// Remembers what the hub answered to a chat message.
    pub(super) fn note_outcome(&mut self, key: &str, client_id: u64, outcome: Outcome) {
        if client_id == 0 {
            return;
        }
        if let Some(s) = self.sessions.get_mut(key) {
            s.last_client_id = s.last_client_id.max(client_id);
            s.recent.push_back((client_id, outcome));
            if s.recent.len() > RECENT_OUTCOMES {
                s.recent.pop_front();
            }
        }
    }

    /// Answers a chat message sent before (as acknowledged, or refused, the
    /// first time). True if it was one.
    pub(super) fn answer_duplicate(&mut self, client: ClientId, key: &str, client_id: u64) -> bool {
        let Some(s) = self.sessions.get(key) else {
            return false;
        };
        if client_id == 0 || client_id > s.last_client_id {
            return false;
        }
        let outcome = s
            .recent
            .iter()
            .rev()
            .find(|(c, _)| *c == client_id)
            .map(|(_, o)| o.clone());
        match outcome {
            Some(Outcome::Refused(code, text)) => self.refuse_answer(client, code, client_id, text),
            // Not before its first copy is committed.
            Some(Outcome::Accepted(id, time)) => {
                self.acknowledge(client, client_id, (id, time), false);
            }
            // Not remembered (handled long ago, or before a restart whose
            // store kept the entry but not the answer): the log may still
            // hold its entry, whose id the answer gives; else it was
            // handled, once, and the answer says only that.
            None => {
                let logged = self
                    .logged_chat(key, client_id)
                    .unwrap_or((MessageId(0), Timestamp(0)));
                self.send_ack(client, client_id, logged);
            }
        }
        true
    }

    /// The id and time of the chat message `client_id` of the user with
    /// name key `key`, if the log still holds it (newest first: resends
    /// are of recent messages).
    pub(super) fn logged_chat(&self, key: &str, client_id: u64) -> Option<(MessageId, Timestamp)> {
        self.log.iter().rev().find_map(|e| match &e.event {
            LogEvent::Chat {
                from, client_id: c, ..
            } if *c == client_id && self.key(from) == key => Some((e.id, e.time)),
            _ => None,
        })
    }

    /// The sessions agree with the connections, the log with its bounds.
    pub(super) fn check_sessions(&self) -> Result<(), String> {
        for (key, s) in &self.sessions {
            match s.conn {
                Some(c) => {
                    if self.names.get(key) != Some(&c) || !self.conns.contains_key(&c) {
                        return Err(format!("session {key} on {c} is not joined there"));
                    }
                    if s.grace.is_some() {
                        return Err(format!("live session {key} has a grace period"));
                    }
                }
                None => {
                    if self.names.contains_key(key) || s.grace.is_none() {
                        return Err(format!("waiting session {key} is live or has no deadline"));
                    }
                }
            }
        }
        if self.names.keys().any(|k| !self.sessions.contains_key(k)) {
            return Err("a joined user has no session".into());
        }
        if self.ghosts() > self.limits.max_ghosts {
            return Err("more waiting sessions than max_ghosts".into());
        }
        if let Some((key, s)) = self
            .sessions
            .iter()
            .find(|(_, s)| s.told_away.len() > crate::limits::AWAY_TOLD_SENDERS)
        {
            return Err(format!(
                "session {key} remembers {} senders told it is away",
                s.told_away.len()
            ));
        }
        let bytes: usize = self.log.iter().map(LogEntry::cost).sum();
        if bytes != self.log_bytes
            || self.log.len() > self.limits.log_entries
            || bytes > self.limits.log_bytes
        {
            return Err(format!("log of {} entries, {bytes} bytes", self.log.len()));
        }
        Ok(())
    }
}

/// Which step of storing an entry [`commit_said`] speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Taking a new entry (and its id): a failure refuses chat messages.
    Append,
    /// Committing what was taken: a failure loses it on a restart.
    Commit,
}

/// What the server's log says of an append's or a commit's outcome
/// (`stage`) after `failed` failures in a row, and the failures in a row
/// now: the first failure of a run and the success that ends one, nothing
/// else. A full disk fails every commit (one every few milliseconds under
/// load), or every append once no id can be reserved: each sender is told
/// of its messages, the log once.
pub(super) fn commit_said(
    stage: Stage,
    failed: u64,
    error: Option<&StoreError>,
) -> (u64, Option<String>) {
    match error {
        Some(e) => (
            failed + 1,
            (failed == 0).then(|| match stage {
                Stage::Commit => {
                    format!("history not committed: {e} (said once, until a commit works again)")
                }
                Stage::Append => format!(
                    "history store refuses new entries: {e}; chat messages sent here are refused \
                     (said once, until it takes one again)"
                ),
            }),
        ),
        None => (
            0,
            (failed > 0).then(|| match stage {
                Stage::Commit => format!("history commits work again, after {failed} failed"),
                Stage::Append => {
                    format!("history store takes new entries again, after {failed} refused")
                }
            }),
        ),
    }
}
