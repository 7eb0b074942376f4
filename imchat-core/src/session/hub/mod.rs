//! The server side of the protocol: a [`Hub`] that holds every connection's
//! state and makes every routing decision, with no sockets and no clock.

use crate::message::Departure;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use log::debug;

use crate::history::{HistoryStore, LogEntry};
use crate::limits::Limits;
use crate::message::{
    CancelCode, ClientMessage, ErrorCode, FileCancel, LeaveReason, RefuseCode, ServerLimits,
    ServerMessage, Timestamp, TransferId, Username,
};

mod admission;
mod auth;
mod chat;
mod cluster;
mod continuity;
mod files;
mod handshake;
mod keepalive;
mod lookalike;
mod rate;
mod relay;
mod remote_push;
mod roaming;

mod output;
mod presence;

/// How many names' keys a hub keeps (see `Hub::key`): names of at most
/// 32 characters, so some hundreds of kilobytes, a few megabytes if every
/// name were made of the characters NFKC expands the most.
const KEY_MEMO_NAMES: usize = 4096;

/// Why a push ends when its server shuts down, for its pusher and receivers.
const SHUTDOWN_PUSH: &str = "the server shut down";

use crate::session::bucket::Bucket;
pub use admission::address_key;
pub use auth::{parse_operator_line, AccountCheck, Ban, BanTarget};
#[cfg(test)]
pub(super) use cluster::LEFT_MEMORY;
pub use cluster::{ClusterEvent, HeardMark};
use continuity::{HeldAck, Session, TokenSource};
pub use output::{ClientId, Destination, FilesRequest, HubEvent, Lane, Transmit};
pub use rate::Hold;
use rate::TokenBucket;
use relay::Relay;
pub use remote_push::{RemotePush, TransferControl};
pub use roaming::RemoteOrigin;

#[derive(Debug)]
enum Phase {
    Handshaking,
    Joined(Username),
}

#[derive(Debug)]
struct Conn {
    phase: Phase,
    /// Where it comes from, when the server said ([`Hub::handle_connect_from`]).
    peer: Option<IpAddr>,
    connected_at: Instant,
    last_heard: Instant,
    ping: Option<(Instant, u64)>,
    /// The nonce of the server's last `Ping` to it, until its `Pong` came:
    /// that `Pong` is free, any other costs rate budget.
    awaited_pong: Option<u64>,
    bucket: TokenBucket,
    /// Its running downloads, each with its progress (for the idle
    /// timeout).
    downloads: Vec<(TransferId, files::Progress)>,
    /// Its latest downloads that ended, newest last (at most
    /// [`files::ENDED_KEPT`]): their acks still in flight are free while
    /// they move them on.
    ended_downloads: VecDeque<(TransferId, files::Progress)>,
    pushes: usize,
    /// The passwords its `Auth` carried, until its handshake ends.
    credentials: Option<auth::Credentials>,
    /// Its `Hello`, while the server checks the account.
    verifying: Option<auth::PendingHello>,
    /// True once it proved the account password of its name.
    authenticated: bool,
    /// Resumed, and has sent nothing since: whether its client got the
    /// `Welcome` (and its new token) is not known yet.
    welcome_unconfirmed: bool,
    /// The server's transport (TLS) still runs its own handshake
    /// ([`Hub::set_transport_pending`]).
    transport_pending: bool,
    /// It asked to resume a session with a token that did not match
    /// ([`Hub::note_failed_resume`]): the log of its refusal says so.
    resume_failed: bool,
    /// Why the session it asked to resume was ended instead (the server's
    /// history was rolled back behind what its client saw): told to it
    /// before the `Welcome` of its fresh join.
    session_ended: Option<String>,
}

/// The server's protocol state: connections, names, routing, transfers
/// relayed between clients, timeouts and the chat rate limit.
///
/// Inputs: [`handle_connect`](Hub::handle_connect),
/// [`handle_message`](Hub::handle_message),
/// [`handle_decode_error`](Hub::handle_decode_error),
/// [`handle_disconnect`](Hub::handle_disconnect),
/// [`handle_timeout`](Hub::handle_timeout), the answers to events, and
/// [`shutdown`](Hub::shutdown); with a history store, also
/// [`commit_history`](Hub::commit_history) after each batch of messages
/// (while [`has_uncommitted`](Hub::has_uncommitted)). Outputs: drain
/// [`poll_transmit`](Hub::poll_transmit) then [`poll_event`](Hub::poll_event)
/// after every input; call `handle_timeout` at
/// [`poll_timeout`](Hub::poll_timeout) (or every second): batched joins and
/// leaves go out from it (or from [`flush_presence`](Hub::flush_presence)).
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    welcome: String,
    conns: HashMap<ClientId, Conn>,
    /// Connections still handshaking, oldest first (ids only grow).
    pending: BTreeSet<ClientId>,
    /// Connections (handshaking or joined) from each address.
    per_address: HashMap<IpAddr, usize>,
    /// The chat rate each address's connections share
    /// ([`Limits::address_rate_share`]), while it has any.
    address_buckets: HashMap<IpAddr, Bucket>,
    names: HashMap<String, ClientId>,
    /// The joined connections, sorted: shared by every broadcast until the
    /// room changes. Rebuilt when next needed after a join or leave
    /// (`members_stale`), so that a storm of joins costs one rebuild per
    /// broadcast or presence round, not one per join (each a sort of the
    /// whole room).
    members: Arc<[ClientId]>,
    members_stale: bool,
    relays: HashMap<(ClientId, TransferId), Relay>,
    /// Pushes sent whole that still wait for other servers to say how many
    /// of their receivers got the file whole (see `remote_push`).
    finishing: HashMap<(ClientId, TransferId), remote_push::Finishing>,
    next_client: u64,
    next_relay: u32,
    next_ping: u64,
    /// The id the next log entry (chat message, join, leave) gets.
    next_message: u64,
    /// The newest entries of the room log, oldest first.
    log: VecDeque<LogEntry>,
    /// What the entries of `log` count against [`Limits::log_bytes`].
    log_bytes: usize,
    /// Where the log and the sessions are kept beyond memory, if anywhere.
    store: Option<Box<dyn HistoryStore>>,
    /// True when the store has appends not yet committed.
    uncommitted: bool,
    /// The id of the newest entry appended to the store.
    last_stored: u64,
    /// Acks of chat messages appended to the store, waiting for its commit
    /// ([`Hub::commit_history`]), in the order they were accepted.
    held_acks: Vec<HeldAck>,
    /// Commits of the store that failed in a row (see [`commit_said`]).
    ///
    /// [`commit_said`]: continuity::commit_said
    commit_failures: u64,
    /// Appends to the store that failed in a row (see [`commit_said`]).
    append_failures: u64,
    /// Where resume tokens come from; without one, nothing can be resumed.
    tokens: Option<TokenSource>,
    /// The lifetime of the log (see [`Hub::epoch`]).
    epoch: u64,
    /// True once a store decided the epoch.
    epoch_fixed: bool,
    /// The epoch before [`Hub::set_epoch`] changed it: the sessions begun
    /// under it still resume here.
    prior_epoch: Option<u64>,
    /// Every joined user's session, live or in its grace period, by name key.
    sessions: HashMap<String, Session>,
    /// Users kicked lately (here or on another server), by name key: the
    /// kick's text, and until when a `Hello` that asks to resume that
    /// name is told it (the grace period from the kick).
    kicked: HashMap<String, (String, Instant)>,
    /// Name keys whose session was ended for a queue that overflowed
    /// ([`Hub::evict`]), until their grace period would have run out: a
    /// resume is told why it was not.
    evicted: HashMap<String, Instant>,
    /// Failed resume attempts per address: when the window started, how many.
    resume_failures: HashMap<Option<IpAddr>, (Instant, u32)>,
    /// New users per address: when the window started, how many.
    joins: HashMap<IpAddr, (Instant, u32)>,
    /// A reading of the wall clock: the Unix time in milliseconds at an instant.
    wall_clock: (Instant, u64),
    /// The latest `now` the hub was given: the time of inputs that carry none.
    clock: Instant,
    /// Whether [`HubEvent::Routed`] carries the message's text.
    report_text: bool,
    /// What makes two names the same user.
    name_key: fn(&Username) -> String,
    /// The keys `name_key` gave lately, by name (see [`Hub::key`]).
    key_memo: std::sync::Mutex<HashMap<String, String>>,
    /// The loose key of names, if any (see [`Hub::set_loose_name_key`]).
    loose_name_key: Option<fn(&Username) -> String>,
    /// The keys `loose_name_key` gave lately, by name.
    loose_memo: std::sync::Mutex<HashMap<String, String>>,
    /// The readings of the names taken, for the names that look alike.
    lookalikes: lookalike::Lookalikes,
    /// The keys of the reserved words under `name_key`: a name with one
    /// of them looks like that word and is refused.
    reserved_keys: Vec<(String, &'static str)>,
    /// An extra rule for the names of `Hello`s (see [`Hub::set_name_check`]).
    name_check: fn(&Username) -> Result<(), String>,
    transmits: VecDeque<Transmit>,
    /// Joins and leaves waiting to be sent together.
    presence: presence::PresenceBatch,
    events: VecDeque<HubEvent>,
    shutting_down: bool,
    /// Users of the other servers of a cluster.
    remote: cluster::Remote,
    /// The server password, accounts, operators and bans.
    auth: auth::AuthState,
    /// Where the entries a `remote_*` input logs come from, while it runs.
    origin: Option<RemoteOrigin>,
    /// In a cluster, the origin and stream position of log entries, by id.
    tags: roaming::Tags,
    /// In a cluster, the entries trimmed from the log.
    trimmed: roaming::Trimmed,
}

/// The keys of the reserved words under `key`, with the words.
fn reserved_keys(key: fn(&Username) -> String) -> Vec<(String, &'static str)> {
    Username::reserved()
        .map(|(word, name)| (key(&name), word))
        .collect()
}

/// `rule`'s key of `name`, from `memo` if it holds it (at most
/// [`KEY_MEMO_NAMES`] names, all forgotten when it is full).
fn memoized(
    memo: &std::sync::Mutex<HashMap<String, String>>,
    name: &Username,
    rule: fn(&Username) -> String,
) -> String {
    let mut memo = memo
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(key) = memo.get(name.as_str()) {
        return key.clone();
    }
    let key = rule(name);
    if memo.len() >= KEY_MEMO_NAMES {
        memo.clear();
    }
    memo.insert(name.as_str().to_owned(), key.clone());
    key
}

/// `text` cut to [`MAX_PARTING_TEXT`](crate::MAX_PARTING_TEXT) bytes at
/// a character boundary: a quit's or an operator's words, shown to
/// everyone.
pub(super) fn parting_text(text: &str) -> &str {
    let mut end = text.len().min(crate::MAX_PARTING_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Hub {
    /// A hub with these limits and welcome text (`{user}` in it is replaced
    /// by the joining user's name). A time limit longer than a century
    /// (`Duration::MAX` for "never") is read as a century.
    pub fn new(limits: Limits, welcome: impl Into<String>) -> Self {
        Hub {
            limits: limits.with_times_capped(),
            welcome: welcome.into(),
            conns: HashMap::new(),
            pending: BTreeSet::new(),
            per_address: HashMap::new(),
            address_buckets: HashMap::new(),
            names: HashMap::new(),
            members: Arc::from(Vec::new()),
            members_stale: false,
            relays: HashMap::new(),
            finishing: HashMap::new(),
            next_client: 1,
            next_relay: 1,
            next_ping: 1,
            next_message: 1,
            log: VecDeque::new(),
            log_bytes: 0,
            store: None,
            uncommitted: false,
            last_stored: 0,
            held_acks: Vec::new(),
            commit_failures: 0,
            append_failures: 0,
            tokens: None,
            epoch: 0,
            epoch_fixed: false,
            prior_epoch: None,
            sessions: HashMap::new(),
            kicked: HashMap::new(),
            evicted: HashMap::new(),
            resume_failures: HashMap::new(),
            joins: HashMap::new(),
            wall_clock: (Instant::now(), 0),
            clock: Instant::now(),
            report_text: false,
            name_key: Username::key,
            key_memo: std::sync::Mutex::default(),
            loose_name_key: None,
            loose_memo: std::sync::Mutex::default(),
            lookalikes: lookalike::Lookalikes::default(),
            reserved_keys: reserved_keys(Username::key),
            name_check: |_| Ok(()),
            transmits: VecDeque::new(),
            presence: presence::PresenceBatch::default(),
            events: VecDeque::new(),
            shutting_down: false,
            remote: cluster::Remote::default(),
            auth: auth::AuthState::default(),
            origin: None,
            tags: roaming::Tags::default(),
            trimmed: roaming::Trimmed::default(),
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The limits announced to every client in its `Welcome`.
    #[must_use]
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits::from(&self.limits)
    }

    /// Tells the hub the wall-clock time: at `at` it was `unix_millis`
    /// milliseconds after the Unix epoch. Routed chat messages are stamped
    /// with this reading plus the time since `at` (the hub reads no clock
    /// itself). Call it once at start, and again now and then if the wall
    /// clock may be stepped. Until it is called, stamps count from 0.
    pub fn set_wall_clock(&mut self, at: Instant, unix_millis: u64) {
        self.wall_clock = (at, unix_millis);
    }

    /// The wall-clock time at `now`, from the last [`set_wall_clock`](Hub::set_wall_clock).
    fn timestamp(&self, now: Instant) -> Timestamp {
        let (at, base) = self.wall_clock;
        let since = now.saturating_duration_since(at).as_millis();
        Timestamp(base.saturating_add(u64::try_from(since).unwrap_or(u64::MAX)))
    }

    /// Sets what makes two usernames the same user: names with the same
    /// key cannot be online at once, and a unicast to any of them reaches
    /// the one online. The default, [`Username::key`], ignores case only; a
    /// server facing the public should also map look-alike characters
    /// together (Unicode's confusable skeletons, after NFKC), which needs
    /// Unicode tables this crate does not carry. A name whose key is that
    /// of a reserved word (`admin`, `server`, ...) is refused with
    /// [`RefuseCode::INVALID_NAME`](crate::RefuseCode::INVALID_NAME): under
    /// such a key, `ａｄｍｉｎ` or `аdmin` with a Cyrillic `а` would pass
    /// for the word. Names a key keeps apart that still look alike (a
    /// capital `I` for `l`) are for [`Hub::set_loose_name_key`].
    pub fn set_name_key(&mut self, key: fn(&Username) -> String) {
        self.name_key = key;
        self.key_memo_mut().clear();
        self.reserved_keys = reserved_keys(key);
        self.renote_taken();
    }

    /// The reserved word `name` passes for under the name rule in force,
    /// if any.
    fn looks_reserved(&self, name: &Username) -> Option<&'static str> {
        let key = self.key(name);
        self.reserved_keys
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, word)| *word)
    }

    /// Sets an extra rule for the name of a `Hello`, beyond those of
    /// [`Username::new`]: a name it refuses (with its reason) is refused
    /// with [`RefuseCode::INVALID_NAME`](crate::RefuseCode::INVALID_NAME)
    /// and "invalid username: reason". For rules that need Unicode's
    /// tables, which this crate does not carry (a name that starts with a
    /// combining mark shows as nothing, or joins the text before it). The
    /// default accepts every name.
    pub fn set_name_check(&mut self, check: fn(&Username) -> Result<(), String>) {
        self.name_check = check;
    }

    /// The key of `name` under the name rule in force. A server's rule
    /// (NFKC, then Unicode's confusable skeleton) costs far more than a
    /// message's routing, and the same few names send most messages, so
    /// the keys are kept: at most [`KEY_MEMO_NAMES`] names, all forgotten
    /// when it is full, so that it never grows past that.
    fn key(&self, name: &Username) -> String {
        memoized(&self.key_memo, name, self.name_key)
    }

    /// The kept keys, for a caller that holds the hub mutably.
    fn key_memo_mut(&mut self) -> &mut HashMap<String, String> {
        self.key_memo
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether [`HubEvent::Routed`] carries the text of each routed message
    /// (off by default: a server logs texts only when asked, and copying
    /// them costs time).
    pub fn set_report_text(&mut self, on: bool) {
        self.report_text = on;
    }

    /// True while the hub knows `client` (handshaking or joined): false once
    /// it was refused, left or was dropped.
    #[must_use]
    pub fn is_connected(&self, client: ClientId) -> bool {
        self.conns.contains_key(&client)
    }

    /// Number of connections (handshaking or joined).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Removes a connection from every table that counts it.
    fn remove_conn(&mut self, id: ClientId) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        self.pending.remove(&id);
        if let Some(ip) = conn.peer.map(admission::address_key) {
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&ip);
                    self.address_buckets.remove(&ip);
                }
            }
        }
        Some(conn)
    }

    /// The joined users' connections.
    #[must_use]
    pub fn members(&self) -> Arc<[ClientId]> {
        if self.members_stale {
            Arc::from(self.sorted_members())
        } else {
            self.members.clone()
        }
    }

    /// The joined connections, as [`members`](Hub::members), keeping the
    /// list for the broadcasts after this one.
    pub(super) fn member_list(&mut self) -> Arc<[ClientId]> {
        if self.members_stale {
            self.members = Arc::from(self.sorted_members());
            self.members_stale = false;
        }
        self.members.clone()
    }

    /// How many connections have joined.
    pub(super) fn joined_count(&self) -> usize {
        self.names.len()
    }

    /// The username of a joined connection.
    #[must_use]
    pub fn username(&self, client: ClientId) -> Option<&Username> {
        match &self.conns.get(&client)?.phase {
            Phase::Joined(u) => Some(u),
            Phase::Handshaking => None,
        }
    }

    /// True once `client` has completed the handshake (its reader may raise
    /// the decoder's frame limit from `max_handshake_frame` to `max_frame`).
    #[must_use]
    pub fn is_joined(&self, client: ClientId) -> bool {
        self.username(client).is_some()
    }

    /// The frame limit to decode this client's input with.
    #[must_use]
    pub fn max_frame(&self, client: ClientId) -> u32 {
        if self.is_joined(client) {
            self.limits.max_frame
        } else {
            self.limits.max_handshake_frame
        }
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    /// True when an event waits that asks the server to act (a close, a
    /// files or download request, an account check: anything but a routed
    /// message's record or an event for the other servers of a cluster,
    /// which the server only queues, in order), or file data waits to be
    /// sent (which the server
    /// paces to its receivers). A server handling a run of one client's
    /// buffered messages under one lock stops the run there, so that the
    /// work is done (and charged, or paced) before more is read.
    #[must_use]
    pub fn has_pending_work(&self) -> bool {
        self.events
            .iter()
            .any(|e| !matches!(e, HubEvent::Routed { .. } | HubEvent::Cluster(_)))
            || self
                .transmits
                .iter()
                .any(|t| matches!(t.lane, Lane::Bulk(_)))
    }

    fn send(&mut self, to: ClientId, message: ServerMessage) {
        let lane = lane_of(&message);
        if lane == Lane::Control {
            self.flush_presence_to(to);
        }
        self.transmits.push_back(Transmit {
            to: Destination::One(to),
            lane,
            message,
        });
    }

    fn send_many(
        &mut self,
        members: Arc<[ClientId]>,
        except: Option<ClientId>,
        message: ServerMessage,
    ) {
        if members.iter().all(|m| Some(*m) == except) {
            return;
        }
        let lane = lane_of(&message);
        if lane == Lane::Control {
            self.flush_presence();
        }
        self.transmits.push_back(Transmit {
            to: Destination::Many { members, except },
            lane,
            message,
        });
    }

    fn error(&mut self, to: ClientId, code: ErrorCode, text: impl Into<String>) {
        self.error_for(to, code, 0, text);
    }

    /// An error about the chat message the client sent as `client_id`.
    fn error_for(
        &mut self,
        to: ClientId,
        code: ErrorCode,
        client_id: u64,
        text: impl Into<String>,
    ) {
        self.send(
            to,
            ServerMessage::Error {
                code,
                client_id,
                text: text.into(),
            },
        );
    }

    fn cancel(
        &mut self,
        to: ClientId,
        id: TransferId,
        code: CancelCode,
        reason: impl Into<String>,
    ) {
        self.send(
            to,
            ServerMessage::Cancel(FileCancel {
                id,
                code,
                reason: reason.into(),
            }),
        );
    }

    /// A connection joined or left: the member list is rebuilt when next
    /// needed.
    fn rebuild_members(&mut self) {
        self.members_stale = true;
    }

    fn sorted_members(&self) -> Vec<ClientId> {
        let mut m: Vec<ClientId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Joined(_)))
            .map(|(id, _)| *id)
            .collect();
        m.sort_unstable();
        m
    }

    /// Bytes of a frame not yet whole arrived from `client` at `now`: the
    /// peer is alive, so it is not pinged or timed out meanwhile, and its
    /// pushes are not idle. A frame that takes longer than the keepalive
    /// timeout to arrive (a large chunk on a slow link) is not cut off.
    /// The glue calls this now and then while such a frame comes in (once
    /// a second is enough); the handshake's deadline does not move.
    pub fn handle_bytes(&mut self, client: ClientId, now: Instant) {
        self.clock = self.clock.max(now);
        let Some(conn) = self.conns.get_mut(&client) else {
            return;
        };
        if !matches!(conn.phase, Phase::Joined(_)) {
            return;
        }
        conn.last_heard = now;
        conn.ping = None;
        for ((from, _), relay) in &mut self.relays {
            if *from == client && relay.sending {
                relay.last = relay.last.max(now);
            }
        }
    }

    /// A decoded message from `client`, received at `now`.
    pub fn handle_message(&mut self, client: ClientId, msg: ClientMessage, now: Instant) {
        self.clock = self.clock.max(now);
        let Some(conn) = self.conns.get_mut(&client) else {
            return;
        };
        conn.last_heard = now;
        conn.ping = None;
        let confirmed = std::mem::take(&mut conn.welcome_unconfirmed);
        let user = match &conn.phase {
            Phase::Joined(u) => u.clone(),
            Phase::Handshaking => {
                self.handshake(client, msg, now);
                return;
            }
        };
        if confirmed {
            self.confirm_welcome(client, &user);
        }
        // Requests cost rate budget in proportion to their work, and so
        // does every frame that does none (chat is charged by its length
        // once it is checked).
        if let Some(cost) = self.cost_of(client, &msg) {
            if self.rate(client, cost, now) {
                return;
            }
        }
        match msg {
            ClientMessage::Hello { .. } => {
                self.error(client, ErrorCode::UNEXPECTED, "already joined");
            }
            ClientMessage::Chat {
                client_id,
                to,
                kind,
                text,
            } => self.chat(client, user, client_id, to, kind, text, now),
            ClientMessage::Who => self.who(client, now),
            ClientMessage::FilesAccess => self.events.push_back(HubEvent::FilesRequested {
                client,
                request: FilesRequest::Access,
            }),
            ClientMessage::ListFiles => self.events.push_back(HubEvent::FilesRequested {
                client,
                request: FilesRequest::List,
            }),
            ClientMessage::Download { id, name, offset } => {
                self.download(client, id, name, offset, now);
            }
            ClientMessage::Ack { id, offset } => {
                if !self.push_acked(client, id, offset) {
                    self.download_acked(client, id, offset, now);
                }
            }
            ClientMessage::Accept { id } => self.accept_push(client, id, now),
            ClientMessage::Offer { id, name, size, to } => {
                self.offer(client, id, name, size, &to, now);
            }
            ClientMessage::Chunk(chunk) => self.push_chunk(client, chunk),
            ClientMessage::End(end) => self.push_end(client, end),
            ClientMessage::Cancel(c) => self.client_cancel(client, &c),
            ClientMessage::Ping(v) => self.send(client, ServerMessage::Pong(v)),
            ClientMessage::Pong(_) => {}
            ClientMessage::Quit { reason } => {
                let reason = parting_text(&reason).to_owned();
                self.depart(client, LeaveReason::QUIT, reason, "quit".into());
            }
            msg @ (ClientMessage::Auth { .. }
            | ClientMessage::Register { .. }
            | ClientMessage::Unregister
            | ClientMessage::Operate { .. }) => self.account_message(client, user, msg),
        }
    }

    fn violation(&mut self, client: ClientId, detail: impl Into<String>) {
        self.events.push_back(HubEvent::Violation {
            client,
            detail: detail.into(),
        });
    }

    /// The connection closed or failed (`reason` says how, usually
    /// [`LeaveReason::LOST`]). Safe to call for a connection already closed.
    ///
    /// A joined user whose connection was lost ([`LeaveReason::LOST`] or
    /// [`LeaveReason::TIMEOUT`]) is not announced as left while resume is
    /// on (a token source and a grace period): its session waits
    /// [`Limits::grace`] for its client to resume it
    /// ([`HubEvent::Away`]), and only then do the others hear that it left.
    pub fn handle_disconnect(&mut self, client: ClientId, reason: LeaveReason) {
        if !self.conns.contains_key(&client) {
            return;
        }
        let why = format!("disconnected: {reason}");
        if reason == LeaveReason::LOST || reason == LeaveReason::TIMEOUT {
            self.lose(client, reason, why);
        } else {
            self.leave(client, reason, why);
        }
        let now = self.clock;
        self.commit_history(now);
    }

    /// The connection failed with what its transport said of it (`detail`,
    /// one line: a TLS handshake that failed, say): as
    /// [`handle_disconnect`](Hub::handle_disconnect) with
    /// [`LeaveReason::LOST`], with `detail` as the reason of its
    /// [`HubEvent::Close`], for the server's log.
    pub fn handle_transport_failure(&mut self, client: ClientId, detail: &str) {
        if !self.conns.contains_key(&client) {
            return;
        }
        self.lose(client, LeaveReason::LOST, detail.to_string());
        let now = self.clock;
        self.commit_history(now);
    }

    /// Whether the server's transport under `client` (TLS) still runs its
    /// own handshake. While it does, the handshake deadline that runs out
    /// is said to be the transport's (`TLS handshake not finished within
    /// N s`), not a missing username. The server sets it when the
    /// connection comes and clears it once the transport's handshake is
    /// done.
    pub fn set_transport_pending(&mut self, client: ClientId, pending: bool) {
        if let Some(c) = self.conns.get_mut(&client) {
            c.transport_pending = pending;
        }
    }

    /// Removes a connection: the others are told if it had joined; its
    /// transfers end; a [`HubEvent::Close`] follows.
    fn leave(&mut self, client: ClientId, reason: LeaveReason, why: String) {
        self.depart(client, reason, String::new(), why);
    }

    /// [`leave`](Hub::leave), with the parting `text` the others are shown.
    fn depart(&mut self, client: ClientId, reason: LeaveReason, text: String, why: String) {
        let Some(conn) = self.close_conn(client, "the sender left", "left") else {
            return;
        };
        if let Phase::Joined(user) = conn.phase {
            let key = self.key(&user);
            self.sessions.remove(&key);
            self.note_taken(&key);
            self.local_left(client, user, reason, text, String::new());
        }
        debug!("closing {client}: {why}");
        self.events.push_back(HubEvent::Close {
            client,
            reason: why,
        });
    }

    /// Removes a connection and ends its transfers (the receivers of its
    /// pushes are told `pushes_end`: why the sender is gone; the pushers
    /// of the pushes it had accepted, `receiving_end`: why it is, if it
    /// was the last receiver); a joined one's name is freed from the live
    /// table (its session is the caller's business).
    fn close_conn(
        &mut self,
        client: ClientId,
        pushes_end: &str,
        receiving_end: &str,
    ) -> Option<Conn> {
        if !self.conns.contains_key(&client) {
            return None;
        }
        // Its acks (and everyone's) go out before it closes.
        let now = self.clock;
        self.commit_history(now);
        let conn = self.remove_conn(client)?;
        for (id, _) in &conn.downloads {
            self.events
                .push_back(HubEvent::DownloadCancelled { client, id: *id });
        }
        let pushes: Vec<TransferId> = self
            .relays
            .keys()
            .filter(|(c, _)| *c == client)
            .map(|(_, id)| *id)
            .collect();
        for id in pushes {
            self.end_relay(client, id, Some((CancelCode::PEER_LEFT, pushes_end.into())));
        }
        let receiving: Vec<(ClientId, TransferId)> = self
            .relays
            .iter()
            .filter(|(_, r)| r.receivers.contains(&client))
            .map(|(k, _)| *k)
            .collect();
        for (from, id) in receiving {
            // One that had accepted did not decline: it went.
            let accepted = self
                .relays
                .get(&(from, id))
                .is_some_and(|r| r.sending || !r.waiting.contains(&client));
            if accepted {
                let who = match &conn.phase {
                    Phase::Joined(user) => user.to_string(),
                    _ => "the receiver".to_string(),
                };
                self.drop_receiver_gone(from, id, client, &format!("{who}: {receiving_end}"));
            } else {
                self.drop_receiver(from, id, client);
            }
        }
        if let Phase::Joined(user) = &conn.phase {
            let key = self.key(user);
            self.names.remove(&key);
            self.rebuild_members();
        }
        Some(conn)
    }

    /// Drops a connection for a reason of the server's own (it cannot start
    /// a thread for it, its handling failed): a joined client gets an
    /// [`ErrorCode::INTERNAL`] error and is announced as left; one still
    /// handshaking is refused as [`RefuseCode::SERVER_FULL`]. A
    /// [`HubEvent::Close`] follows.
    pub fn kick(&mut self, client: ClientId, reason: &str) {
        if self.is_joined(client) {
            self.error(client, ErrorCode::INTERNAL, reason);
            self.leave(client, LeaveReason::KICKED, reason.to_string());
        } else if self.conns.contains_key(&client) {
            self.refuse(client, RefuseCode::SERVER_FULL, reason);
        }
        let now = self.clock;
        self.commit_history(now);
    }

    /// The server could not keep up with writing to `client` (its queue
    /// overflowed): it is dropped and announced as left.
    pub fn evict(&mut self, client: ClientId) {
        if self.conns.contains_key(&client) {
            self.leave(
                client,
                LeaveReason::EVICTED,
                "outbound queue overflow".into(),
            );
        }
        let now = self.clock;
        self.commit_history(now);
    }

    /// Tells everyone the server is shutting down, with `reason`, and closes
    /// every connection. Later connections are refused.
    pub fn shutdown(&mut self, reason: &str) {
        // What was accepted is committed and acknowledged first.
        let now = self.clock;
        self.commit_history(now);
        self.shutting_down = true;
        self.flush_presence();
        // Pushes end here, as failed: a pusher is not told that a file
        // was sent when its receivers' server stopped under it, and the
        // other servers of a cluster stop sending and reading theirs.
        let mut pushes: Vec<(ClientId, TransferId)> = self.relays.keys().copied().collect();
        pushes.sort_unstable();
        for (client, id) in pushes {
            self.end_relay(
                client,
                id,
                Some((CancelCode::PEER_LEFT, SHUTDOWN_PUSH.to_string())),
            );
        }
        let mut ids: Vec<ClientId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.send(
                id,
                ServerMessage::Shutdown {
                    reason: reason.to_string(),
                },
            );
            self.events.push_back(HubEvent::Close {
                client: id,
                reason: format!("shutdown: {reason}"),
            });
        }
        self.conns.clear();
        self.pending.clear();
        self.per_address.clear();
        self.address_buckets.clear();
        self.names.clear();
        // A store keeps the sessions: a restarted server offers them a resume.
        self.sessions.clear();
        self.renote_taken();
        self.relays.clear();
        self.finishing.clear();
        self.rebuild_members();
    }

    /// Checks the hub's internal invariants (for tests and fuzzing): the
    /// name table and the member list agree with the connections.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let joined: Vec<(&ClientId, &Username)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match &c.phase {
                Phase::Joined(u) => Some((id, u)),
                Phase::Handshaking => None,
            })
            .collect();
        let members = self.members();
        if joined.len() != self.names.len() || joined.len() != members.len() {
            return Err(format!(
                "{} joined, {} names, {} members",
                joined.len(),
                self.names.len(),
                members.len()
            ));
        }
        for (id, u) in joined {
            if self.names.get(&self.key(u)) != Some(id) {
                return Err(format!("name {u} does not map to {id}"));
            }
            if !members.contains(id) {
                return Err(format!("{id} missing from members"));
            }
        }
        if members.len() > self.limits.max_clients {
            return Err("more users than max_clients".into());
        }
        self.check_sessions()?;
        self.check_lookalikes()?;
        self.check_presence()?;
        self.check_held()?;
        let handshaking = self.conns.len() - members.len();
        if handshaking != self.pending.len()
            || (self.limits.max_pending > 0 && handshaking > self.limits.max_pending)
        {
            return Err(format!(
                "{handshaking} handshaking, {} pending, at most {}",
                self.pending.len(),
                self.limits.max_pending
            ));
        }
        let counted: usize = self.per_address.values().sum();
        let with_peer = self.conns.values().filter(|c| c.peer.is_some()).count();
        if counted != with_peer {
            return Err(format!(
                "{counted} counted per address, {with_peer} with one"
            ));
        }
        if self.address_buckets.len() != self.per_address.len()
            || self
                .per_address
                .keys()
                .any(|ip| !self.address_buckets.contains_key(ip))
        {
            return Err("an address's shared rate does not match its connections".into());
        }
        for ((from, _), r) in &self.relays {
            if r.inbound.is_some() || *from == remote_push::REMOTE_PUSHER {
                if r.receivers.iter().any(|c| !self.conns.contains_key(c)) {
                    return Err("inbound relay to a gone client".into());
                }
                continue;
            }
            if !self.conns.contains_key(from) {
                return Err(format!("relay from gone client {from}"));
            }
            if r.receivers.iter().any(|c| !self.conns.contains_key(c)) {
                return Err("relay to a gone client".into());
            }
        }
        Ok(())
    }
}

/// The lane a message travels in: the hub's one place that looks at a
/// message to decide how it is sent.
fn lane_of(message: &ServerMessage) -> Lane {
    match message {
        ServerMessage::Joined { .. }
        | ServerMessage::Left(Departure { .. })
        | ServerMessage::Presence(_) => Lane::Presence,
        ServerMessage::Chunk(c) => Lane::Bulk(c.id),
        ServerMessage::End(e) => Lane::Bulk(e.id),
        _ => Lane::Control,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_name_keys_never_outgrow_their_bound() {
        let hub = Hub::new(Limits::default(), "hi");
        for i in 0..KEY_MEMO_NAMES + 100 {
            let name = Username::new(format!("User{i}")).unwrap();
            assert_eq!(hub.key(&name), format!("user{i}"));
            assert!(hub.key_memo.lock().unwrap().len() <= KEY_MEMO_NAMES);
        }
        // Full, it was emptied: the newest names only are kept.
        assert_eq!(hub.key_memo.lock().unwrap().len(), 100);
    }
}
