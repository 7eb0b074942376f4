//! Users of other servers of a cluster: the hub learns of them, and of
//! what they say, as inputs ([`Hub::remote_join`], [`Hub::remote_leave`],
//! [`Hub::remote_chat`], [`Hub::remote_server_gone`]); what its own users
//! do that the other servers must see comes out as
//! [`HubEvent::Cluster`] events, for the server to publish. The hub does
//! no IO here either: the transport between servers is the server's.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use log::warn;

use super::{ClientId, Hub, HubEvent, RemoteOrigin};
use crate::codes::NoticeCode;
use crate::history::{LogEntry, LogEvent};
use crate::message::{
    ChatKind, ErrorCode, LeaveReason, MessageId, OnlineUser, PresenceEvent, RefuseCode,
    ResumeToken, RoutedChat, ServerMessage, Timestamp, Username,
};

/// What users are told when the cluster cannot be reached.
const CLUSTER_DOWN_TEXT: &str = "the cluster cannot be reached: only users of this server are served, new names are refused, messages wait to be passed on";
/// What users are told when the cluster can be reached again.
const CLUSTER_BACK_TEXT: &str = "the cluster is reachable again: users of other servers are back";

/// Something a local user did that the other servers of a cluster must
/// see: the server publishes it to them, where it becomes a
/// [`Hub::remote_join`], [`Hub::remote_leave`] or [`Hub::remote_chat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A local user joined.
    Joined {
        /// Who.
        user: Username,
        /// Its entry in this server's log.
        id: MessageId,
    },
    /// A local user left (after its grace period, if it lost its connection).
    Left {
        /// Who.
        user: Username,
        /// Why.
        reason: LeaveReason,
        /// Its parting text.
        text: String,
        /// Its entry in this server's log.
        id: MessageId,
    },
    /// A local user sent a chat message to everyone, or to one user
    /// (`to`), of this server or another.
    Chat {
        /// The sender.
        from: Username,
        /// The one receiver of a private message; `None` for everyone.
        to: Option<Username>,
        /// Text or action.
        kind: ChatKind,
        /// The text.
        text: String,
        /// Its entry in this server's log.
        id: MessageId,
        /// When this server noted it.
        time: Timestamp,
        /// The sender's id of the message (0: none), for dropping a copy
        /// resent to another server after a resume there.
        client_id: u64,
    },
    /// A local user's connection was lost: its session waits here for a
    /// resume, and the other servers list it as away.
    Away {
        /// Who.
        user: Username,
        /// When the connection was lost (this server's clock).
        since: Timestamp,
    },
    /// A local user who was away took its session back on this server:
    /// it is no longer away. (One that resumes on another server comes
    /// back with that server's [`ClusterEvent::Moved`].)
    Back {
        /// Who.
        user: Username,
    },
    /// The session of a local user has a new resume token (it joined, or
    /// resumed): kept in the cluster, so that it can resume on any server.
    Session {
        /// Whose.
        user: Username,
        /// The token its client now holds (only a hash of it leaves the server).
        token: ResumeToken,
    },
    /// A user of server `from` resumed its session here: the others now
    /// find it on this server, and `from` forgets it, without a leave or a
    /// join.
    Moved {
        /// Who.
        user: Username,
        /// The server it was on.
        from: u64,
    },
    /// The control of a push between servers.
    Transfer(super::TransferControl),
    /// An operator of this server kicked `user`, a user of another server:
    /// the server it is on removes it ([`Hub::remote_kick`]). If that
    /// server is gone and the user's session waits for a resume on another
    /// one, every server removes it, and the session ends in the cluster.
    Kick {
        /// Who.
        user: Username,
        /// What it is told, and the others see as its parting text
        /// ("kicked by NAME: reason").
        text: String,
    },
    /// A private message from `from` (a user of another server) to `to`
    /// reached this server after `to` left it, and no server has `to`:
    /// the server `from` is on tells it that it was not delivered
    /// ([`Hub::remote_undelivered`]).
    Undelivered {
        /// The sender of the message.
        from: Username,
        /// Its receiver, who left.
        to: Username,
        /// The message's text.
        text: String,
    },
}

/// The users of other servers, by name key, with the server of each.
#[derive(Debug, Default)]
pub(super) struct Remote {
    /// On: local users' joins, leaves and chats come out as events.
    pub(super) enabled: bool,
    pub(super) users: HashMap<String, (Username, u64)>,
    /// Users of other servers whose connection was lost, by name key:
    /// since when (this server's clock), while their sessions wait for a
    /// resume ([`Hub::remote_away`]); listed as away by `Who`.
    pub(super) away: HashMap<String, Instant>,
    /// Kicks of users of other servers (name key → the text) that their
    /// server has not carried out yet: if that server turns out to be dead
    /// (each server notices in its own time), the user leaves, kicked, as
    /// soon as this one notices, instead of waiting for a resume. Once it
    /// left, the kick is one of the hub's recent kicks (for the grace
    /// period): its session is then not taken over here.
    pub(super) kicks: HashMap<String, String>,
    /// Users of servers that died, by name key: until when their sessions
    /// may be resumed on another server (they stay listed, away, and
    /// nobody is told they left, until then).
    pub(super) gone: HashMap<String, Instant>,
    /// Users the log restored at start last saw join and not leave, by
    /// name key, but for this server's own sessions: present as far as
    /// this server's users were told. Until the first join of the cluster
    /// says who is there now, finding one of them on another server is
    /// not news, and those not found left while this server was down.
    pub(super) logged: HashMap<String, Username>,
    /// The server of the run before this one on the same store, and the
    /// newest entry the store kept of it ([`Hub::set_former_run`]).
    pub(super) former: Option<(u64, MessageId)>,
    /// The stream position this server has read to ([`Hub::advance_ids`]).
    pub(super) read_to: u64,
    /// Set while [`Hub::remote_present`] runs: a join it logs is old news.
    pub(super) listing: bool,
    /// The cluster cannot be reached ([`Hub::set_cut_off`]).
    pub(super) cut_off: bool,
    /// The users were told that the cluster cannot be reached, and not
    /// yet that it can again ([`Hub::tell_cluster`]): a user who joins or
    /// resumes meanwhile is told too.
    pub(super) outage_told: bool,
    /// Local users whose session ended lately, by name key, with until
    /// when a private message to them that arrives from another server
    /// is answered as not delivered ([`LEFT_MEMORY`]), with its name.
    pub(super) left: HashMap<String, (Username, Instant)>,
    /// Private messages of local users to users of other servers, oldest
    /// first, kept while their receiver's server might die with them
    /// unread (see [`Hub::set_cluster_lease`]): if it does and the
    /// receiver never comes back, the sender is told.
    pub(super) sent_private: VecDeque<SentPrivate>,
    /// How long a dead server goes unnoticed at most (lease + a third).
    pub(super) unnoticed: Duration,
    /// Users announced as left because their server was found dead
    /// (connection lost), by name key: that server, and when. A chat
    /// message that server publishes as theirs before it announces them
    /// again (it was cut off from the cluster, not dead, and passes on
    /// what they said meanwhile) is held until it does ([`Held`]).
    pub(super) lost: HashMap<String, (u64, Instant)>,
    /// Names of local users that a user of another server joined under
    /// (the join was refused here), by name key: that server, and when.
    /// Its server took the name while this one was cut off from the
    /// cluster, and this server's lease round sorts it out (its local
    /// user is dropped, and the other listed in its place): what the other
    /// says meanwhile is held until it is listed ([`Held`]), not lost;
    /// and if the local user goes first (it quits, or is dropped), the
    /// other is listed then ([`Hub::contested_freed`]), by the name it
    /// joined under.
    pub(super) contested: HashMap<String, (u64, Username, Instant)>,
    /// Chat messages held, by the server that published them.
    pub(super) held: HashMap<u64, Held>,
    /// Joins and moves of other servers' users the hub was told of,
    /// counted (see [`HeardMark`]).
    pub(super) heard: u64,
    /// Per other server, what `heard` was at the latest join or move of
    /// one of its users.
    pub(super) heard_of: HashMap<u64, u64>,
}

/// What the hub had been told of the other servers' users when a check of
/// their leases began ([`Hub::heard_mark`]). A server whose lease is found
/// run out may be back, and announce its users again, between the check
/// and its verdict reaching the hub: the verdict is not applied to news
/// it has not seen ([`Hub::remote_server_gone_since`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeardMark(u64);

/// The chat messages of one server's users who were announced as left
/// with it (`Remote::lost`) and that it published before announcing them
/// again: they are delivered right after their sender's join, so that
/// nobody sees a user who left speak before it is back.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Oldest first (the stream's order).
    chats: VecDeque<HeldChat>,
    /// What they weigh ([`held_weight`]).
    bytes: usize,
}

/// A chat message held ([`Held`]), with what it was read with.
#[derive(Debug)]
struct HeldChat {
    /// When it was held.
    at: Instant,
    /// Its sender's name key.
    key: String,
    from: Username,
    to: Option<Username>,
    kind: ChatKind,
    text: String,
    /// Its origin in the stream.
    origin: RemoteOrigin,
}

/// Chat messages held per server at most: more than a publish's batch
/// (512 events), the most a server sends ahead of its rejoin. Past it
/// (or past [`HELD_BYTES`]) what is held is delivered at once, as it came:
/// nothing is lost, and each sender's order is kept. Below 1024, so that
/// the ids they are given after their sender's join stay within its
/// stream position's low bits (see `Hub::release_held`).
const HELD_MAX: usize = 1000;
/// Bytes of the chat messages held per server at most (a publish's
/// batch is at most 1 MiB, or one message).
const HELD_BYTES: usize = 4 * 1024 * 1024;
/// How long a chat message is held at most: its server published it,
/// so it was back, and its rejoin follows within a lease round. One whose
/// sender is not announced again by then is dropped.
pub(crate) const HELD_TIME: Duration = Duration::from_secs(60);
/// Users remembered as left with a dead server at most
/// (`Remote::lost`); more are not remembered, and their messages are not
/// held.
const LOST_MAX: usize = 10_000;
/// How long a user that left with a dead server is remembered: a server
/// cut off from the cluster for longer that comes back has its users'
/// messages delivered as they come.
const LOST_MEMORY: Duration = Duration::from_secs(3600);

/// What a held chat message counts against [`HELD_BYTES`].
fn held_weight(from: &Username, to: Option<&Username>, text: &str) -> usize {
    128 + from.as_str().len() + to.map_or(0, |t| t.as_str().len()) + text.len()
}

/// A private message sent to a user of another server.
#[derive(Debug)]
pub(super) struct SentPrivate {
    pub(super) at: Instant,
    /// The receiver's name key.
    pub(super) to: String,
    pub(super) from: Username,
    /// The start of its text, as errors show it.
    pub(super) start: String,
}

/// Private messages to users of other servers remembered at most.
const SENT_PRIVATE_MAX: usize = 10_000;
/// How much of a message's text an error about it shows.
const SHOWN: usize = 40;

/// The first [`SHOWN`] characters of `text`, with `…` if there is more.
pub(super) fn text_start(text: &str) -> String {
    let start: String = text.chars().take(SHOWN).collect();
    let more = if start.len() < text.len() { "…" } else { "" };
    format!("{start}{more}")
}

/// How long after a local user left a private message to it from another
/// server is answered as not delivered, rather than dropped: the sender's
/// server sent it before it learnt of the leave, and the message may have
/// waited for a stalled Redis as long as a publisher waits.
pub(crate) const LEFT_MEMORY: Duration = Duration::from_secs(60);

impl Hub {
    /// Puts the hub in a cluster: from now on what local users do that
    /// other servers must see comes out as [`HubEvent::Cluster`] events.
    pub fn enable_cluster(&mut self) {
        self.remote.enabled = true;
    }

    /// The lease of the cluster's servers: a dead server goes unnoticed
    /// for up to a lease and a third, and private messages sent to its
    /// users meanwhile may be lost with it. Those are remembered that long
    /// (and, for a dead server's users, until they come back or leave):
    /// a user who leaves with a dead server has their senders told that
    /// what they sent may not have been delivered.
    pub fn set_cluster_lease(&mut self, lease: Duration) {
        self.remote.unnoticed = lease + lease / 3 + Duration::from_secs(1);
    }

    /// Remembers a private message of `from` to `to`, a user of another
    /// server (see [`set_cluster_lease`](Self::set_cluster_lease)).
    pub(super) fn note_sent_private(
        &mut self,
        from: &Username,
        to: &str,
        text: &str,
        now: Instant,
    ) {
        if self.remote.unnoticed.is_zero() {
            return;
        }
        self.forget_sent_private(now);
        if self.remote.sent_private.len() >= SENT_PRIVATE_MAX {
            self.remote.sent_private.pop_front();
        }
        self.remote.sent_private.push_back(SentPrivate {
            at: now,
            to: to.to_string(),
            from: from.clone(),
            start: text_start(text),
        });
    }

    /// Forgets the private messages whose receiver's server would have
    /// been noticed dead by now, unless it was (its user may not come back).
    fn forget_sent_private(&mut self, now: Instant) {
        let (unnoticed, gone) = (self.remote.unnoticed, &self.remote.gone);
        self.remote.sent_private.retain(|p| {
            now.saturating_duration_since(p.at) <= unnoticed || gone.contains_key(&p.to)
        });
    }

    /// `user` (name key `key`) leaves with its dead server: the senders of
    /// the private messages it may not have read are told.
    fn tell_senders_of_lost(&mut self, key: &str, user: &Username) {
        let (lost, kept): (VecDeque<SentPrivate>, VecDeque<SentPrivate>) =
            std::mem::take(&mut self.remote.sent_private)
                .into_iter()
                .partition(|p| p.to == key);
        self.remote.sent_private = kept;
        for p in lost {
            self.tell_sender(
                &p.from,
                format!(
                    "your private message to {user} may not have been delivered: {user}'s server stopped and {user} did not come back (\"{}\")",
                    p.start
                ),
            );
        }
    }

    /// Tells `from`, if it is connected here, that a private message of
    /// its did not reach its receiver (`text` says which and why).
    /// Returns whether it was told.
    pub(super) fn tell_sender(&mut self, from: &Username, text: String) -> bool {
        let Some(&client) = self.names.get(&self.key(from)) else {
            return false;
        };
        self.send(
            client,
            ServerMessage::Error {
                code: ErrorCode::UNKNOWN_USER,
                client_id: 0,
                text,
            },
        );
        true
    }

    /// Queues `event` for the other servers, in cluster mode. A join or
    /// a leave published is tagged once the stream gives it back (see
    /// [`Hub::note_published`]), not as one of this server's own making
    /// (one that follows from a stream entry keeps that entry's tag).
    pub(super) fn publish(&mut self, event: ClusterEvent) {
        if self.remote.enabled {
            if let ClusterEvent::Joined { id, .. } | ClusterEvent::Left { id, .. } = &event {
                if self.origin.is_none() {
                    self.tags.remove(id.0);
                }
            }
            self.events.push_back(HubEvent::Cluster(event));
        }
    }

    /// Whether the server can reach the rest of the cluster now: while it
    /// cannot, what an operator asks of another server's user (a kick, a
    /// ban) is answered as waiting for it.
    pub fn set_cut_off(&mut self, cut_off: bool) {
        self.remote.cut_off = cut_off;
    }

    /// `user` of server `server` is on the cluster's list of who is
    /// online (at the server's first join of the cluster, or a rejoin):
    /// as [`Hub::remote_join`], but a join it logs is old news to a
    /// session resuming here from another server, which has seen the
    /// user online (a resume's `Welcome` lists everyone, whatever it is
    /// told).
    pub fn remote_present(&mut self, server: u64, user: Username, now: Instant) -> bool {
        self.remote.listing = true;
        let known = self.remote_join(server, user, now);
        self.remote.listing = false;
        known
    }

    /// The registered name of a user of another server, by name key.
    pub(super) fn remote_user(&self, key: &str) -> Option<&Username> {
        self.remote.users.get(key).map(|(u, _)| u)
    }

    /// Remote users, for an operator's list.
    pub(super) fn remote_names(&self) -> impl Iterator<Item = &Username> {
        self.remote.users.values().map(|(u, _)| u)
    }

    /// Remote users, for `Who`: away when their server said their
    /// connection was lost, or when their server is gone and their
    /// sessions wait for a resume on another one.
    pub(super) fn remote_online(&self, now: Instant) -> impl Iterator<Item = OnlineUser> + '_ {
        let grace = self.limits.grace;
        self.remote.users.iter().map(move |(key, (u, _))| {
            let gone = self
                .remote
                .gone
                .get(key)
                .map(|until| until.checked_sub(grace).unwrap_or(now));
            let since = match (self.remote.away.get(key).copied(), gone) {
                (Some(a), Some(g)) => Some(a.min(g)),
                (a, g) => a.or(g),
            };
            OnlineUser {
                name: u.clone(),
                away_secs: since.map(|t| now.saturating_duration_since(t).as_secs()),
            }
        })
    }

    /// The local users who are away (their connection lost, their sessions
    /// waiting here for a resume), with when their connections were lost
    /// (for a session kept across a restart: since that restart): what a
    /// server tells the cluster again when it rejoins it.
    #[must_use]
    pub fn local_away(&self) -> Vec<(Username, Timestamp)> {
        let grace = self.limits.grace;
        let mut away: Vec<(Username, Timestamp)> = self
            .sessions
            .values()
            .filter(|s| s.conn.is_none() && s.moved_from.is_none())
            .filter_map(|s| {
                let (until, _) = s.grace?;
                let since = until.checked_sub(grace).unwrap_or(until);
                Some((s.user.clone(), self.timestamp(since)))
            })
            .collect();
        away.sort_by_key(|(u, _)| u.key());
        away
    }

    /// `user`, a user of server `server`, lost its connection at `since`
    /// (that server's clock): its session waits for a resume, and `Who`
    /// lists it as away until it comes back ([`Hub::remote_back`], or a
    /// move to another server) or leaves. Ignored for a user `server` does
    /// not have.
    pub fn remote_away(&mut self, server: u64, user: &Username, since: Timestamp, now: Instant) {
        self.clock = self.clock.max(now);
        let key = self.key(user);
        if self.remote_user_of(&key) != Some(server) {
            return;
        }
        // The servers' clocks may differ: never in the future here.
        let ago = self.timestamp(now).0.saturating_sub(since.0);
        let at = now.checked_sub(Duration::from_millis(ago)).unwrap_or(now);
        let listed_away = self.remote.gone.contains_key(&key);
        if self.remote.away.insert(key, at).is_none() && !listed_away {
            self.queue_away(user.clone(), false, now);
        }
    }

    /// `user`, a user of server `server` who was away, took its session
    /// back there: it is no longer away.
    pub fn remote_back(&mut self, server: u64, user: &Username, now: Instant) {
        self.clock = self.clock.max(now);
        let key = self.key(user);
        if self.remote_user_of(&key) == Some(server)
            && self.remote.away.remove(&key).is_some()
            && !self.remote.gone.contains_key(&key)
        {
            self.queue_away(user.clone(), true, now);
        }
    }

    /// `user` joined on server `server`: every local member is told, as
    /// for a local join. A user already known is not announced again (a
    /// server that rejoins the cluster announces its users anew). Returns
    /// false, and changes nothing, when the name is held by a local user:
    /// the cluster's name claims should make that impossible.
    pub fn remote_join(&mut self, server: u64, user: Username, now: Instant) -> bool {
        self.clock = self.clock.max(now);
        self.heard_of(server);
        let key = self.key(&user);
        if self.names.contains_key(&key) || self.sessions.contains_key(&key) {
            if self.remote.contested.len() < LOST_MAX || self.remote.contested.contains_key(&key) {
                self.remote.contested.insert(key, (server, user, now));
            }
            return false;
        }
        if !self.remote.users.contains_key(&key) {
            if let Some(logged) = self.remote.logged.remove(&key) {
                // Its join is in the log already: not announced again.
                self.remote.users.insert(key.clone(), (logged, server));
                self.note_taken(&key);
                return true;
            }
        }
        match self.remote.users.get(&key).cloned() {
            // Known, and kicked on another server: joined afresh there,
            // its kicked session over. The kick is seen, then the join
            // (the leave forgets the kick).
            Some((listed, was)) if was != server && self.remote.kicks.contains_key(&key) => {
                let text = self.remote.kicks[&key].clone();
                self.announce_remote_leave(was, &listed, LeaveReason::KICKED, text, now);
            }
            Some((listed, _)) => {
                if !self.remote.kicks.contains_key(&key) {
                    // Waiting since its server died: here again (unless
                    // its server still says it is away).
                    if self.remote.gone.remove(&key).is_some()
                        && !self.remote.away.contains_key(&key)
                    {
                        self.queue_away(listed, true, now);
                    }
                    if let Some(known) = self.remote.users.get_mut(&key) {
                        known.1 = server;
                    }
                }
                return true;
            }
            // A kick of an earlier session of this name is behind it.
            None => {
                self.remote.kicks.remove(&key);
            }
        }
        self.forget_kick(&key, now);
        // A new session of the name: whatever an earlier one was.
        self.remote.away.remove(&key);
        self.remote
            .users
            .insert(key.clone(), (user.clone(), server));
        self.note_taken(&key);
        let joined = self.log_presence(LogEvent::Joined { user: user.clone() }, now);
        self.queue_presence(
            PresenceEvent::Joined {
                id: joined.id,
                time: joined.time,
                user,
            },
            None,
            now,
        );
        self.release_held(&key, server, now);
        true
    }

    /// The server has learned, from the cluster, every user of the other
    /// servers (its first join of the cluster, after a start on a
    /// restored log): those the log last saw join whom no server has now
    /// left while this server was down, and are announced as left.
    pub fn remote_synced(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        let mut left: Vec<Username> = std::mem::take(&mut self.remote.logged)
            .into_values()
            .collect();
        left.sort_by_key(Username::key);
        for user in left {
            self.announce_left(user, LeaveReason::LOST, String::new());
        }
        self.commit_history(now);
    }

    /// A user of server `server` left: every local member is told. Unknown
    /// users, and users of that name on another server, are ignored (a
    /// leave seen twice is announced once). A user the restored log last
    /// saw online (see `Remote::logged`) left while this server was down:
    /// its leave, read on from the stream, is told in its place and with
    /// its reason.
    ///
    /// Its server was alive to tell: the private messages sent to the user
    /// were delivered, or that server said they were not
    /// ([`Hub::remote_undelivered`]); none is told as lost with a dead
    /// server later (a new user of the name may be the one that dies).
    pub fn remote_leave(
        &mut self,
        server: u64,
        user: &Username,
        reason: LeaveReason,
        text: String,
        now: Instant,
    ) {
        self.join_before_held_leave(server, user, now);
        let key = self.key(user);
        self.contested_left(&key, server);
        if self.remote_user_of(&key) == Some(server) {
            self.remote.sent_private.retain(|p| p.to != key);
        }
        self.announce_remote_leave(server, user, reason, text, now);
    }

    /// The server the other servers' user of name key `key` is on.
    fn remote_user_of(&self, key: &str) -> Option<u64> {
        self.remote.users.get(key).map(|(_, server)| *server)
    }

    /// [`Hub::remote_leave`], for a leave this hub decided (a dead
    /// server's user, a kick): what was sent to the user is kept.
    pub(super) fn announce_remote_leave(
        &mut self,
        server: u64,
        user: &Username,
        reason: LeaveReason,
        text: String,
        now: Instant,
    ) {
        self.clock = self.clock.max(now);
        let key = self.key(user);
        if !self.remote.users.contains_key(&key) {
            if let Some(logged) = self.remote.logged.remove(&key) {
                self.announce_left(logged, reason, text);
                return;
            }
        }
        if self.remote_user_of(&key) == Some(server) {
            self.remote.gone.remove(&key);
            self.remote.kicks.remove(&key);
            self.remote.away.remove(&key);
            if let Some((registered, _)) = self.remote.users.remove(&key) {
                self.note_taken(&key);
                self.announce_left(registered, reason, text);
            }
        }
    }

    /// Disconnects the local user `user` for a reason of the cluster's (its
    /// name now belongs to a user of another server): it is told why, and
    /// the others that it left.
    pub fn drop_user(&mut self, user: &Username, reason: &str) {
        let key = self.key(user);
        if let Some(client) = self.names.get(&key).copied() {
            self.error(client, ErrorCode::INTERNAL, reason);
            // The others see why it left, not "disconnected for misbehaving".
            self.depart(
                client,
                LeaveReason::KICKED,
                reason.to_string(),
                reason.to_string(),
            );
            let now = self.clock;
            self.commit_history(now);
        }
    }

    /// An operator of another server kicked `user`: if it is a user of
    /// this server it is removed as by a local kick (told `text`, and the
    /// others that it left), and an away session of that name ends.
    /// Returns whether there was anyone to remove.
    pub fn remote_kick(&mut self, user: &Username, text: &str, now: Instant) -> bool {
        self.clock = self.clock.max(now);
        let key = self.key(user);
        let removed = if let Some(&client) = self.names.get(&key) {
            self.remove_by_operator(client, text);
            true
        } else if self.sessions.contains_key(&key) {
            self.kick_ghost(&key, text);
            true
        } else {
            self.kick_remote(&key, text, now)
        };
        self.commit_history(now);
        removed
    }

    /// A kick (`text`) of name key `key`, a user of another server. If its
    /// server is gone and its session waits for a resume, it leaves now,
    /// kicked (true). Else its own server removes it; the kick is
    /// remembered until it does, or turns out to be dead too (unnoticed
    /// yet), and then the user leaves as soon as this server notices.
    pub(super) fn kick_remote(&mut self, key: &str, text: &str, now: Instant) -> bool {
        if self.kick_gone(key, text, now) {
            return true;
        }
        if self.remote.users.contains_key(key) {
            self.remote.kicks.insert(key.to_string(), text.to_string());
        }
        false
    }

    /// The users of server `server` kicked while it still looked alive:
    /// if it is dead, their sessions must end in the cluster too.
    #[must_use]
    pub fn kicked_users_of(&self, server: u64) -> Vec<Username> {
        self.remote
            .kicks
            .keys()
            .filter_map(|k| self.remote.users.get(k))
            .filter(|(_, s)| *s == server)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// If name key `key` is a user of a dead server whose session waits
    /// for a resume on another server, it leaves now, kicked (`text`):
    /// the local members are told. Returns whether it was such a user.
    fn kick_gone(&mut self, key: &str, text: &str, now: Instant) -> bool {
        if !self.remote.gone.contains_key(key) {
            return false;
        }
        let Some((user, server)) = self.remote.users.get(key).cloned() else {
            return false;
        };
        self.leave_kicked(server, &user, text.to_string(), now);
        true
    }

    /// A user of dead server `server` leaves, kicked (`text`). The kick is
    /// remembered for the grace period, as every kicked leave: its session
    /// may still move to this server (taken over before the kick reached
    /// Redis), and is then not taken over ([`Hub::adopt_session`]).
    fn leave_kicked(&mut self, server: u64, user: &Username, text: String, now: Instant) {
        self.announce_remote_leave(server, user, LeaveReason::KICKED, text, now);
    }

    /// Server `server` is gone (its lease ran out): each of its users is
    /// announced as left, connection lost; with resume on, only once the
    /// grace period from now has passed without the user resuming on
    /// another server ([`Hub::remote_moved`]). A user kicked while its
    /// server still looked alive leaves at once, kicked. Returns how many
    /// users it had (not counting those already waiting).
    pub fn remote_server_gone(&mut self, server: u64, now: Instant) -> usize {
        self.clock = self.clock.max(now);
        // Sent before the server could have died: it was alive to take them.
        self.forget_sent_private(now);
        let mut gone: Vec<Username> = self
            .remote
            .users
            .iter()
            .filter(|(k, (_, s))| *s == server && !self.remote.gone.contains_key(*k))
            .map(|(_, (u, _))| u.clone())
            .collect();
        gone.sort_by_key(Username::key);
        self.clock = self.clock.max(now);
        self.transfers_of_gone_server(server);
        let n = gone.len();
        // Those kicked before this server noticed leave now, kicked.
        gone.retain(|u| {
            let key = self.key(u);
            match self.remote.kicks.get(&key).cloned() {
                Some(text) => {
                    self.leave_kicked(server, u, text, now);
                    false
                }
                None => true,
            }
        });
        if self.resume_enabled() {
            let until = now + self.limits.grace;
            for u in gone {
                let key = self.key(&u);
                // Its session waits: away (told once, if not already).
                if !self.remote.away.contains_key(&key) {
                    self.queue_away(u, false, now);
                }
                self.remote.gone.insert(key, until);
            }
            return n;
        }
        for u in &gone {
            self.announce_remote_leave(server, u, LeaveReason::LOST, String::new(), now);
            let key = self.key(u);
            self.tell_senders_of_lost(&key, u);
            self.note_lost(key, server, now);
        }
        n
    }

    /// Notes a join or a move of a user of `server` (see [`HeardMark`]).
    pub(super) fn heard_of(&mut self, server: u64) {
        self.remote.heard += 1;
        self.remote.heard_of.insert(server, self.remote.heard);
    }

    /// Marks what the hub has been told of the other servers' users, as a
    /// check of their leases begins: take it with
    /// [`remote_servers`](Self::remote_servers), and give it back with
    /// each server the check found dead to
    /// [`remote_server_gone_since`](Self::remote_server_gone_since).
    pub fn heard_mark(&mut self) -> HeardMark {
        // Only the servers a check may find dead need remembering.
        let servers = self.remote_servers();
        self.remote.heard_of.retain(|s, _| servers.contains(s));
        HeardMark(self.remote.heard)
    }

    /// [`remote_server_gone`](Self::remote_server_gone), for a server found
    /// dead by a check of the leases that began at `mark`, unless the hub
    /// was told of a join (or a move) of one of its users since: the
    /// server may have come back meanwhile and announced its users again
    /// (a rejoin's joins of users still listed change nothing), and the
    /// verdict, older than that, would remove them for good. Nothing is
    /// done then (`None`): the next check judges again, on what it finds.
    pub fn remote_server_gone_since(
        &mut self,
        server: u64,
        mark: HeardMark,
        now: Instant,
    ) -> Option<usize> {
        if self
            .remote
            .heard_of
            .get(&server)
            .is_some_and(|heard| *heard > mark.0)
        {
            return None;
        }
        self.remote.heard_of.remove(&server);
        Some(self.remote_server_gone(server, now))
    }

    /// Remembers that the user of name key `key` was announced as left
    /// with dead server `server` (see `Remote::lost`).
    fn note_lost(&mut self, key: String, server: u64, now: Instant) {
        if self.remote.lost.len() < LOST_MAX || self.remote.lost.contains_key(&key) {
            self.remote.lost.insert(key, (server, now));
        }
    }

    /// When the next user of a dead server is due to leave.
    pub(super) fn remote_gone_deadline(&self) -> Option<Instant> {
        self.remote.gone.values().min().copied()
    }

    /// The users of dead servers whose grace ran out leave.
    pub(super) fn expire_remote_gone(&mut self, now: Instant) {
        let mut due: Vec<(Instant, String)> = self
            .remote
            .gone
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(k, until)| (*until, k.clone()))
            .collect();
        due.sort();
        for (_, key) in due {
            self.remote.gone.remove(&key);
            if let Some((user, server)) = self.remote.users.get(&key).cloned() {
                self.announce_remote_leave(server, &user, LeaveReason::LOST, String::new(), now);
                self.tell_senders_of_lost(&key, &user);
                self.note_lost(key, server, now);
            }
        }
    }

    /// The other servers this one depends on: those it knows users of,
    /// and those that pushes in progress go to or come from (a push may
    /// wait for a server whose users all moved: it must end when that
    /// server dies, see [`Hub::remote_server_gone`]).
    #[must_use]
    pub fn remote_servers(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self.remote.users.values().map(|(_, s)| *s).collect();
        s.extend(self.push_servers());
        s.sort_unstable();
        s.dedup();
        s
    }

    /// The users of other servers, with their server.
    #[must_use]
    pub fn remote_users(&self) -> Vec<(Username, u64)> {
        self.remote.users.values().cloned().collect()
    }

    /// True when `user` is a user of this server with a live connection
    /// (not one in its grace period).
    #[must_use]
    pub fn is_connected_here(&self, user: &Username) -> bool {
        self.names.contains_key(&self.key(user))
    }

    /// The resumable sessions of local users (joined, or in their grace
    /// period) with their current tokens: what a server writes to the
    /// cluster again when the cluster's store lost them. Empty when
    /// sessions are not resumable.
    #[must_use]
    pub fn local_session_tokens(&self) -> Vec<(Username, ResumeToken)> {
        if !self.resume_enabled() {
            return Vec::new();
        }
        self.sessions
            .values()
            .map(|s| (s.user.clone(), s.token))
            .collect()
    }

    /// Name keys of local users: joined, or in their grace period (their
    /// names stay theirs).
    #[must_use]
    pub fn local_users(&self) -> Vec<(String, Username)> {
        self.sessions
            .iter()
            .map(|(k, s)| (k.clone(), s.user.clone()))
            .collect()
    }

    /// Whether a chat message of another server with this `text` fits
    /// this server's limits: one longer than this server's
    /// [`max_text`](crate::Limits::max_text) (a server given a larger
    /// `max_text` accepted it) would not fit the frames its clients were
    /// told to expect, and [`remote_chat`](Self::remote_chat) drops it.
    #[must_use]
    pub fn remote_chat_fits(&self, text: &str) -> bool {
        text.len() <= self.limits.max_text
    }

    /// Whether a message `server` published as `from`'s can be theirs:
    /// not when `from`'s session is this server's, nor when this server
    /// knows `from` as a user of another server. Each server reads the
    /// stream in one order, so a server that took a session over (its
    /// `Moved` came first) is where its user is, for every reader alike; a
    /// server that was frozen meanwhile and then passed on what the lost
    /// connection had left in its socket speaks for a user it no longer
    /// has. A user not known here at all is given the benefit of the doubt.
    ///
    /// The run before this one on the same store
    /// ([`set_former_run`](Self::set_former_run)) was this server: what it
    /// published that its store did not keep (it was killed before the
    /// commit) is read again from the stream as that server's, and its
    /// senders are this server's users, the sessions the store kept.
    #[must_use]
    pub fn remote_sender_is_of(&self, server: u64, from: &Username) -> bool {
        let key = self.key(from);
        if self.names.contains_key(&key) || self.sessions.contains_key(&key) {
            return self.remote.former.is_some_and(|(s, _)| s == server);
        }
        self.remote
            .users
            .get(&key)
            .is_none_or(|(_, s)| *s == server)
    }

    /// Whether `from`, a local user's name, is one a user of server
    /// `server` joined under (see `Remote::contested`): what it says is
    /// held until this server sorts the name out.
    pub fn remote_contested_by(&self, server: u64, from: &Username) -> bool {
        let key = self.key(from);
        (self.names.contains_key(&key) || self.sessions.contains_key(&key))
            && self.remote.contested.get(&key).map(|(s, ..)| *s) == Some(server)
    }

    /// Whether the chat of `from` being read from the stream is one the
    /// run before this one published, that its store did not keep, and
    /// that its sender (whose answer was lost too) has sent again here
    /// before the stream gave it back: the log holds it already.
    fn resent_before_its_lost_copy(&self, from: &Username) -> bool {
        let Some(o) = self.origin else {
            return false;
        };
        if o.client_id == 0 || self.remote.former.is_none_or(|(s, _)| s != o.server) {
            return false;
        }
        let key = self.key(from);
        self.sessions.contains_key(&key) && self.logged_chat(&key, o.client_id).is_some()
    }

    /// A chat message from `from`, a user of another server, to everyone
    /// or to `to`: logged and delivered to the local members as any other
    /// (a private message only to `to`, if it is a local user; one in its
    /// grace period gets it when it resumes). Returns the receivers. One
    /// that does not [fit](Self::remote_chat_fits) this server's limits
    /// is dropped (0 receivers): its clients would take the frame for a
    /// broken stream, and drop the connection for it, again on each resume;
    /// the local users it was for are told instead (`NOT_SHOWN`).
    pub fn remote_chat(
        &mut self,
        from: Username,
        to: Option<Username>,
        kind: ChatKind,
        text: String,
        now: Instant,
    ) -> usize {
        self.clock = self.clock.max(now);
        if !self.remote_chat_fits(&text) {
            self.tell_not_shown(&from, to.as_ref(), text.len());
            return 0;
        }
        if self.resent_before_its_lost_copy(&from) {
            return 0;
        }
        if let Some(origin) = self.origin {
            if self.hold_if_gone(origin, &from, to.as_ref(), kind, &text, now) {
                return 0;
            }
        }
        self.deliver_remote_chat(from, to, kind, text, now)
    }

    /// Tells the local users a chat message from `from` (to everyone, or
    /// to `to`) was for that it was not shown: its `len` bytes are more
    /// than this server's limit. Without it they would miss it unaware.
    fn tell_not_shown(&mut self, from: &Username, to: Option<&Username>, len: usize) {
        let text = format!(
            "a {}message from {} ({len} bytes) is longer than this server allows ({} bytes): not shown",
            if to.is_some() { "private " } else { "" },
            from.as_str(),
            self.limits.max_text
        );
        let message = ServerMessage::Notice {
            code: NoticeCode::NOT_SHOWN,
            text,
        };
        match to {
            Some(t) => {
                let key = self.key(t);
                if let Some(dest) = self.names.get(&key).copied() {
                    self.send(dest, message);
                }
            }
            None => {
                let members = self.member_list();
                self.send_many(members, None, message);
            }
        }
    }

    /// Holds a chat message of another server (`origin`) whose sender is
    /// not here as far as the local members were shown: it was announced
    /// as left with that server, found dead, and the server has not
    /// announced it again. A server cut off from the cluster that comes
    /// back may publish a batch it had sent before the cut (it may be in
    /// the stream already, so it keeps its place) ahead of its rejoin's
    /// joins: what its users said then is delivered right after each
    /// one's join ([`Hub::release_held`]). Returns whether it was held.
    fn hold_if_gone(
        &mut self,
        origin: RemoteOrigin,
        from: &Username,
        to: Option<&Username>,
        kind: ChatKind,
        text: &str,
        now: Instant,
    ) -> bool {
        let key = self.key(from);
        let contested = self.remote_contested_by(origin.server, from);
        if !contested
            && (self.remote.users.contains_key(&key)
                || self.names.contains_key(&key)
                || self.sessions.contains_key(&key)
                || self.remote.lost.get(&key).map(|(s, _)| *s) != Some(origin.server))
        {
            return false;
        }
        let weight = held_weight(from, to, text);
        let full = self
            .remote
            .held
            .get(&origin.server)
            .is_some_and(|h| h.chats.len() >= HELD_MAX || h.bytes + weight > HELD_BYTES);
        if full {
            // More than a server sends ahead of its rejoin: delivered as
            // they came, this one after them, rather than dropped.
            warn!(
                "cluster: more than {HELD_MAX} messages, or {} MiB, from users of server {:x} that it had not announced again: delivered before their joins",
                HELD_BYTES >> 20,
                origin.server
            );
            self.flush_held(origin.server, now);
            return false;
        }
        let held = self.remote.held.entry(origin.server).or_default();
        held.bytes += weight;
        held.chats.push_back(HeldChat {
            at: now,
            key,
            from: from.clone(),
            to: to.cloned(),
            kind,
            text: text.to_string(),
            origin,
        });
        true
    }

    /// Delivers what is held of `server`'s users, in the order it came,
    /// each under its own origin (but a message whose sender is now
    /// another server's, or this one's: it would appear under a name that
    /// is someone else's).
    fn flush_held(&mut self, server: u64, now: Instant) {
        let Some(held) = self.remote.held.remove(&server) else {
            return;
        };
        let saved = self.origin;
        for c in held.chats {
            if self.remote_sender_is_of(server, &c.from) {
                self.origin = Some(c.origin);
                self.deliver_remote_chat(c.from, c.to, c.kind, c.text, now);
            }
        }
        self.origin = saved;
    }

    /// The user of name key `key` joined on server `server` (its join is
    /// logged and queued): the chat messages held of it (see
    /// [`Hub::hold_if_gone`]) are delivered now, after the join, in the
    /// order they came. Those held of another server under that name are
    /// dropped: the name is someone else's now.
    ///
    /// Each is logged with the next id, and that id is its position too
    /// (for a session that moves to another server, see `moved_replay`):
    /// as if its server had published it right after the join, which is
    /// where the local members saw it. Every server of the cluster that
    /// announced the user as left holds the message the same way and
    /// gives it the same place, so a session that moves between them
    /// neither misses it nor gets it twice.
    fn release_held(&mut self, key: &str, server: u64, now: Instant) {
        let lost = self.remote.lost.remove(key).is_some();
        if !lost && self.remote.contested.remove(key).is_none() {
            return;
        }
        let mut mine = Vec::new();
        let mut dropped = 0usize;
        for (s, held) in &mut self.remote.held {
            if !held.chats.iter().any(|c| c.key == key) {
                continue;
            }
            let (taken, kept): (VecDeque<HeldChat>, VecDeque<HeldChat>) =
                std::mem::take(&mut held.chats)
                    .into_iter()
                    .partition(|c| c.key == key);
            held.chats = kept;
            held.bytes = held
                .chats
                .iter()
                .map(|c| held_weight(&c.from, c.to.as_ref(), &c.text))
                .sum();
            if *s == server {
                mine.extend(taken);
            } else {
                dropped += taken.len();
            }
        }
        self.remote.held.retain(|_, h| !h.chats.is_empty());
        if dropped > 0 {
            warn!("cluster: {dropped} messages held from a user of a server that was found dead dropped: its name is now a user's of another server");
        }
        let saved = self.origin;
        for c in mine {
            if !self.remote_sender_is_of(server, &c.from) {
                continue;
            }
            let mut origin = c.origin;
            origin.position = MessageId(self.next_message);
            self.origin = Some(origin);
            self.deliver_remote_chat(c.from, c.to, c.kind, c.text, now);
        }
        self.origin = saved;
    }

    /// A user of server `server` leaves whose messages are held (see
    /// [`Hub::hold_if_gone`]): its server came back without announcing it
    /// again (it left while the server was cut off). It was there when it
    /// spoke: it is seen joining, then what it said, then leaving.
    fn join_before_held_leave(&mut self, server: u64, user: &Username, now: Instant) {
        let key = self.key(user);
        let held_here = self
            .remote
            .held
            .get(&server)
            .is_some_and(|h| h.chats.iter().any(|c| c.key == key));
        if held_here
            && !self.remote.users.contains_key(&key)
            && self.remote.lost.get(&key).map(|(s, _)| *s) == Some(server)
        {
            self.remote_join(server, user.clone(), now);
        }
    }

    /// The local user of name key `key` is gone (it quit, was dropped, or
    /// its session ended): a user of another server that joined under its
    /// name while this server was cut off (see `Remote::contested`) is
    /// listed now, and what it said meanwhile is shown after its join,
    /// instead of waiting for a lease round that no longer has a local
    /// user to sort out.
    pub(super) fn contested_freed(&mut self, key: &str) {
        if self.names.contains_key(key) || self.sessions.contains_key(key) {
            return;
        }
        let Some((server, user, _)) = self.remote.contested.get(key).cloned() else {
            return;
        };
        let now = self.clock;
        self.remote_join(server, user, now);
    }

    /// The user of server `server` that joined under the name (key `key`)
    /// of a local user left before that name was sorted out: it is not
    /// listed later, and what it said (held) is dropped, as it would be
    /// had it never been listed.
    fn contested_left(&mut self, key: &str, server: u64) {
        if self.remote.contested.get(key).map(|(s, ..)| *s) != Some(server) {
            return;
        }
        self.remote.contested.remove(key);
        if let Some(held) = self.remote.held.get_mut(&server) {
            held.chats.retain(|c| c.key != key);
            held.bytes = held
                .chats
                .iter()
                .map(|c| held_weight(&c.from, c.to.as_ref(), &c.text))
                .sum();
        }
        self.remote.held.retain(|_, h| !h.chats.is_empty());
    }

    /// When the oldest held chat message is due to be dropped.
    pub(super) fn held_deadline(&self) -> Option<Instant> {
        self.remote
            .held
            .values()
            .filter_map(|h| h.chats.front())
            .map(|c| c.at + HELD_TIME)
            .min()
    }

    /// Drops the chat messages held longer than [`HELD_TIME`] (their
    /// server never announced their senders again), and forgets the users
    /// that left with a dead server longer ago than [`LOST_MEMORY`].
    pub(super) fn expire_held(&mut self, now: Instant) {
        let mut dropped = 0usize;
        for (server, held) in &mut self.remote.held {
            let before = held.chats.len();
            while held
                .chats
                .front()
                .is_some_and(|c| now.saturating_duration_since(c.at) >= HELD_TIME)
            {
                if let Some(c) = held.chats.pop_front() {
                    held.bytes -= held_weight(&c.from, c.to.as_ref(), &c.text);
                }
            }
            if held.chats.len() < before {
                dropped += before - held.chats.len();
                warn!(
                    "cluster: {} messages of users of server {server:x} dropped: it never announced them again after they left with it",
                    before - held.chats.len()
                );
            }
        }
        if dropped > 0 {
            self.remote.held.retain(|_, h| !h.chats.is_empty());
        }
        if !self.remote.lost.is_empty() {
            self.remote
                .lost
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < LOST_MEMORY);
        }
        if !self.remote.contested.is_empty() {
            self.remote
                .contested
                .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < LOST_MEMORY);
        }
    }

    /// The held chat messages agree with their bounds and their books:
    /// each is of a user remembered as left with its server, not present.
    pub(super) fn check_held(&self) -> Result<(), String> {
        for (server, h) in &self.remote.held {
            let bytes: usize = h
                .chats
                .iter()
                .map(|c| held_weight(&c.from, c.to.as_ref(), &c.text))
                .sum();
            if h.chats.is_empty() || bytes != h.bytes || h.chats.len() > HELD_MAX {
                return Err(format!(
                    "server {server:x}: {} held, {} bytes counted, {bytes} weighed",
                    h.chats.len(),
                    h.bytes
                ));
            }
            if let Some(c) = h.chats.iter().find(|c| {
                (self.remote.lost.get(&c.key).map(|(s, _)| *s) != Some(*server)
                    && self.remote.contested.get(&c.key).map(|(s, ..)| *s) != Some(*server))
                    || self.remote.users.contains_key(&c.key)
            }) {
                return Err(format!("a message of {} held, not of a lost user", c.from));
            }
        }
        Ok(())
    }

    /// [`Hub::remote_chat`], once it is to be delivered now.
    fn deliver_remote_chat(
        &mut self,
        from: Username,
        to: Option<Username>,
        kind: ChatKind,
        text: String,
        now: Instant,
    ) -> usize {
        // A private message between users of other servers is logged all
        // the same (delivered to nobody here): its receiver may resume its
        // session on this server and must get it then.
        let target = to.as_ref().map(|t| {
            let k = self.key(t);
            match self.sessions.get(&k) {
                Some(s) => (s.user.clone(), self.names.get(&k).copied(), true),
                None => (t.clone(), None, false),
            }
        });
        let id = self.entry_id();
        let time = self.entry_time(now);
        let entry = LogEntry {
            id,
            time,
            event: LogEvent::Chat {
                from: from.clone(),
                to: target.as_ref().map(|(u, _, _)| u.clone()),
                kind,
                text: text.clone(),
                client_id: self.origin.map_or(0, |o| o.client_id),
            },
        };
        if self.append(entry).is_err() {
            // Not stored: delivered live all the same, as presence is.
            self.next_message = id.0 + 1;
        }
        let message = ServerMessage::Chat(RoutedChat {
            id,
            time,
            from,
            private: target.is_some(),
            kind,
            text,
            history: false,
        });
        match target {
            Some((_, Some(dest), _)) => {
                self.send(dest, message);
                1
            }
            Some((to, None, false)) => {
                if let ServerMessage::Chat(RoutedChat { from, text, .. }) = message {
                    self.bounce_if_left(from, to, text, now);
                }
                0
            }
            Some((_, None, true)) => 0,
            None => {
                let members = self.member_list();
                let n = members.len();
                self.send_many(members, None, message);
                n
            }
        }
    }

    /// A private message from `from` to `to`, who is not on this server:
    /// if `to` left this server lately and is on no other one, the
    /// sender's server is told that it was not delivered. Only the server
    /// `to` left answers, so the sender is told once.
    fn bounce_if_left(&mut self, from: Username, to: Username, text: String, now: Instant) {
        let key = self.key(&to);
        let left_here = self.remote.left.get(&key).filter(|(_, until)| *until > now);
        if let Some((to, _)) = left_here {
            if self.remote_user(&key).is_none() {
                let to = to.clone();
                self.publish(ClusterEvent::Undelivered { from, to, text });
            }
        }
    }

    /// A private message of `from` to `to` reached no one: `to` left
    /// before it arrived ([`ClusterEvent::Undelivered`]). `from`, if it
    /// is connected here, is told with an error naming the receiver and
    /// the start of the text. Returns whether it was told.
    pub fn remote_undelivered(&mut self, from: &Username, to: &Username, text: &str) -> bool {
        let start = text_start(text);
        self.tell_sender(
            from,
            format!(
                "your private message to {to} was not delivered: {to} left before it arrived (\"{start}\")"
            ),
        )
    }

    /// Remembers that local user `user` left, for [`LEFT_MEMORY`]. Its
    /// private messages that may be lost are no longer its to hear about:
    /// whoever takes its name next is someone else.
    pub(super) fn note_left_here(&mut self, user: &Username) {
        if self.remote.enabled {
            let key = self.key(user);
            let until = self.clock + LEFT_MEMORY;
            self.remote.left.insert(key, (user.clone(), until));
            self.remote.sent_private.retain(|p| p.from != *user);
        }
    }

    /// Forgets the local users that left longer ago than [`LEFT_MEMORY`].
    pub(super) fn expire_left_here(&mut self, now: Instant) {
        self.remote.left.retain(|_, (_, until)| *until > now);
    }

    /// Refuses a connection still handshaking, for a reason found outside
    /// the hub (its name is claimed on another server of the cluster, or
    /// the cluster cannot be reached to claim it).
    pub fn refuse_handshake(&mut self, client: ClientId, code: RefuseCode, reason: &str) {
        if self.conns.contains_key(&client) && !self.is_joined(client) {
            self.refuse(client, code, reason);
        }
    }

    /// Tells every joined user `text` (as an error that is about no
    /// message: the connection stays), for instance that the cluster
    /// cannot be reached.
    pub fn notice_all(&mut self, text: &str) {
        let members = self.member_list();
        self.send_many(
            members,
            None,
            ServerMessage::Error {
                code: ErrorCode::INTERNAL,
                client_id: 0,
                text: text.to_string(),
            },
        );
    }

    /// `entries` of the other servers' entries in the cluster's stream
    /// were gone before this server read them (trimmed while it was
    /// behind, frozen or cut off, or lost by Redis): its users are told
    /// that messages said elsewhere may be missing (the server knows how
    /// many entries, not whose or what they were).
    pub fn remote_lost(&mut self, entries: u64) {
        if entries == 0 {
            return;
        }
        let gone = if entries == 1 {
            "one of its updates was gone before it read it".to_string()
        } else {
            format!("{entries} of its updates were gone before it read them")
        };
        self.notice_all(&format!(
            "messages from users of other servers may be missing: this server fell behind the cluster and {gone}"
        ));
    }

    /// Tells every local member whether the cluster can be reached
    /// ([`NoticeCode::CLUSTER_DOWN`] or [`NoticeCode::CLUSTER_BACK`]); while
    /// it cannot, each user who joins or resumes is told too, after its
    /// `Welcome`. A server tells once an outage is sure (not at a single
    /// failed round), and that it is over only to users it told.
    pub fn tell_cluster(&mut self, reachable: bool) {
        if reachable {
            if std::mem::take(&mut self.remote.outage_told) {
                self.tell_all(NoticeCode::CLUSTER_BACK, CLUSTER_BACK_TEXT);
            }
        } else if !self.remote.outage_told {
            self.remote.outage_told = true;
            self.tell_all(NoticeCode::CLUSTER_DOWN, CLUSTER_DOWN_TEXT);
        }
    }

    /// After `client`'s `Welcome`: tells it that the cluster cannot be
    /// reached, if the others were told so.
    pub(super) fn tell_joiner_of_outage(&mut self, client: ClientId) {
        if self.remote.outage_told {
            self.send(
                client,
                ServerMessage::Notice {
                    code: NoticeCode::CLUSTER_DOWN,
                    text: CLUSTER_DOWN_TEXT.to_string(),
                },
            );
        }
    }

    /// Sends every local member a [`ServerMessage::Notice`] with `code`
    /// and `text` (news that is not an error, such as the cluster being
    /// reachable again).
    pub fn tell_all(&mut self, code: NoticeCode, text: &str) {
        let members = self.member_list();
        self.send_many(
            members,
            None,
            ServerMessage::Notice {
                code,
                text: text.to_string(),
            },
        );
    }
}
