//! The server side of the protocol: a [`Hub`] that holds every connection's
//! state and makes every routing decision, with no sockets and no clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use crate::error::DecodeError;
use crate::limits::Limits;
use crate::message::{
    CancelCode, ClientMessage, ErrorCode, FileCancel, FileChunk, FileEnd, FileEntry, FileName,
    LeaveReason, Origin, Recipient, RefuseCode, ServerMessage, TransferId, Username,
    PROTOCOL_VERSION,
};
use crate::transfer::Incoming;

/// Identifies one connection to the hub. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Who a [`Transmit`] goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One connection.
    One(ClientId),
    /// Every listed connection but `except` (a shared list: a broadcast costs no allocation).
    Many {
        /// The connections.
        members: Arc<[ClientId]>,
        /// One to skip (the sender of a broadcast).
        except: Option<ClientId>,
    },
}

impl Destination {
    /// The connections, in order.
    pub fn iter(&self) -> impl Iterator<Item = ClientId> + '_ {
        let (slice, except): (&[ClientId], Option<ClientId>) = match self {
            Destination::One(id) => (std::slice::from_ref(id), None),
            Destination::Many { members, except } => (members, *except),
        };
        slice.iter().copied().filter(move |id| Some(*id) != except)
    }

    /// True if `id` receives it.
    pub fn contains(&self, id: ClientId) -> bool {
        self.iter().any(|c| c == id)
    }
}

/// A message to send. Encode it once and queue the bytes for every
/// destination; file chunks ([`ServerMessage::is_bulk`]) may wait behind chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Who gets it.
    pub to: Destination,
    /// What.
    pub message: ServerMessage,
}

/// What the shared-folder request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesRequest {
    /// Access: the count.
    Access,
    /// The list of names and sizes.
    List,
}

/// Something that happened, for the server to act on or log. Drain
/// [`Hub::poll_transmit`] before acting on a [`HubEvent::Close`], so that
/// the last messages reach the client before its connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubEvent {
    /// A connection completed the handshake.
    Joined {
        /// The connection.
        client: ClientId,
        /// Its name.
        user: Username,
    },
    /// A joined user left (the others were told).
    Left {
        /// The connection.
        client: ClientId,
        /// Its name.
        user: Username,
        /// Why.
        reason: LeaveReason,
    },
    /// Close this connection once what is queued for it has been written.
    Close {
        /// The connection.
        client: ClientId,
        /// Why, for the log.
        reason: String,
    },
    /// A chat message was routed.
    Routed {
        /// The sender.
        from: ClientId,
        /// The one receiver of a unicast, `None` for a broadcast.
        to: Option<Username>,
        /// How many connections it went to.
        receivers: usize,
    },
    /// The client asked about the shared folder: answer with [`Hub::answer_files`].
    FilesRequested {
        /// The connection.
        client: ClientId,
        /// Count or list.
        request: FilesRequest,
    },
    /// The client asked for a shared file: open it and answer with
    /// [`Hub::accept_download`] or [`Hub::refuse_download`].
    DownloadRequested {
        /// The connection.
        client: ClientId,
        /// The client's transfer id.
        id: TransferId,
        /// The file (a checked single name).
        name: FileName,
        /// First byte wanted.
        offset: u64,
    },
    /// The client has stored download `id` up to `offset`: the streamer
    /// may send file data up to [`DOWNLOAD_WINDOW`](crate::DOWNLOAD_WINDOW)
    /// bytes past it.
    DownloadAcked {
        /// The connection.
        client: ClientId,
        /// The transfer.
        id: TransferId,
        /// Bytes stored so far.
        offset: u64,
    },
    /// Stop streaming this download (the client cancelled or left).
    DownloadCancelled {
        /// The connection.
        client: ClientId,
        /// The transfer.
        id: TransferId,
    },
    /// A push began to be relayed.
    PushStarted {
        /// The pusher.
        from: ClientId,
        /// Its id for the push.
        id: TransferId,
        /// File name.
        name: FileName,
        /// File size.
        size: u64,
        /// Number of receivers.
        receivers: usize,
    },
    /// A push ended, whole (`error` is `None`) or not.
    PushEnded {
        /// The pusher.
        from: ClientId,
        /// Its id for the push.
        id: TransferId,
        /// Receivers that got it whole.
        receivers: usize,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// A client broke a protocol rule (logged; the hub has answered it).
    Violation {
        /// The connection.
        client: ClientId,
        /// What it did.
        detail: String,
    },
}

#[derive(Debug)]
enum Phase {
    Handshaking,
    Joined(Username),
}

#[derive(Debug)]
struct Conn {
    phase: Phase,
    connected_at: Instant,
    last_heard: Instant,
    ping: Option<(Instant, u64)>,
    tokens: f64,
    tokens_at: Instant,
    flooding_since: Option<Instant>,
    downloads: Vec<TransferId>,
    pushes: usize,
}

#[derive(Debug)]
struct Relay {
    incoming: Incoming,
    relay_id: TransferId,
    receivers: Arc<[ClientId]>,
    from: ClientId,
}

/// The server's protocol state: connections, names, routing, transfers
/// relayed between clients, timeouts and the chat rate limit.
///
/// Inputs: [`handle_connect`](Hub::handle_connect),
/// [`handle_message`](Hub::handle_message),
/// [`handle_decode_error`](Hub::handle_decode_error),
/// [`handle_disconnect`](Hub::handle_disconnect),
/// [`handle_timeout`](Hub::handle_timeout), the answers to events, and
/// [`shutdown`](Hub::shutdown). Outputs: drain
/// [`poll_transmit`](Hub::poll_transmit) then [`poll_event`](Hub::poll_event)
/// after every input; call `handle_timeout` at
/// [`poll_timeout`](Hub::poll_timeout) (or every second).
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    welcome: String,
    conns: HashMap<ClientId, Conn>,
    names: HashMap<String, ClientId>,
    members: Arc<[ClientId]>,
    relays: HashMap<(ClientId, TransferId), Relay>,
    next_client: u64,
    next_relay: u32,
    next_ping: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<HubEvent>,
    shutting_down: bool,
}

impl Hub {
    /// A hub with these limits and welcome text (`{user}` in it is replaced
    /// by the joining user's name).
    pub fn new(limits: Limits, welcome: impl Into<String>) -> Self {
        Hub {
            limits,
            welcome: welcome.into(),
            conns: HashMap::new(),
            names: HashMap::new(),
            members: Arc::from(Vec::new()),
            relays: HashMap::new(),
            next_client: 1,
            next_relay: 1,
            next_ping: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            shutting_down: false,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A new connection. If the hub is full or shutting down, the client is
    /// refused and a [`HubEvent::Close`] follows.
    pub fn handle_connect(&mut self, now: Instant) -> ClientId {
        let id = ClientId(self.next_client);
        self.next_client += 1;
        if self.shutting_down {
            self.refuse(id, RefuseCode::SHUTTING_DOWN, "the server is shutting down");
            return id;
        }
        if self.conns.len() >= self.limits.max_clients {
            let reason = format!("server full ({} clients)", self.limits.max_clients);
            self.refuse(id, RefuseCode::SERVER_FULL, &reason);
            return id;
        }
        self.conns.insert(
            id,
            Conn {
                phase: Phase::Handshaking,
                connected_at: now,
                last_heard: now,
                ping: None,
                tokens: f64::from(self.limits.rate_burst),
                tokens_at: now,
                flooding_since: None,
                downloads: Vec::new(),
                pushes: 0,
            },
        );
        id
    }

    /// Number of connections (handshaking or joined).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The joined users' connections.
    pub fn members(&self) -> Arc<[ClientId]> {
        self.members.clone()
    }

    /// The username of a joined connection.
    pub fn username(&self, client: ClientId) -> Option<&Username> {
        match &self.conns.get(&client)?.phase {
            Phase::Joined(u) => Some(u),
            Phase::Handshaking => None,
        }
    }

    /// True once `client` has completed the handshake (its reader may raise
    /// the decoder's frame limit from `max_handshake_frame` to `max_frame`).
    pub fn is_joined(&self, client: ClientId) -> bool {
        self.username(client).is_some()
    }

    /// The frame limit to decode this client's input with.
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

    /// The earliest time at which [`handle_timeout`](Hub::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .map(|c| match (&c.phase, c.ping) {
                (Phase::Handshaking, _) => c.connected_at + self.limits.handshake_timeout,
                (Phase::Joined(_), Some((sent, _))) => sent + self.limits.keepalive_timeout,
                (Phase::Joined(_), None) => c.last_heard + self.limits.keepalive_interval,
            })
            .min()
    }

    /// When the reader of `client` may read again: `Some(t)` while the client
    /// is over its chat rate (it is slowed by being read later, not cut off).
    pub fn throttle(&self, client: ClientId) -> Option<Instant> {
        let c = self.conns.get(&client)?;
        if c.tokens >= 0.0 || self.limits.rate_per_sec == 0 {
            return None;
        }
        let secs = -c.tokens / f64::from(self.limits.rate_per_sec);
        Some(c.tokens_at + Duration::from_secs_f64(secs))
    }

    fn send(&mut self, to: ClientId, message: ServerMessage) {
        self.transmits.push_back(Transmit {
            to: Destination::One(to),
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
        self.transmits.push_back(Transmit {
            to: Destination::Many { members, except },
            message,
        });
    }

    fn error(&mut self, to: ClientId, code: ErrorCode, text: impl Into<String>) {
        self.send(
            to,
            ServerMessage::Error {
                code,
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

    fn refuse(&mut self, id: ClientId, code: RefuseCode, reason: &str) {
        self.send(
            id,
            ServerMessage::Refused {
                code,
                reason: reason.to_string(),
                version: PROTOCOL_VERSION,
            },
        );
        self.events.push_back(HubEvent::Close {
            client: id,
            reason: format!("refused: {reason}"),
        });
        self.conns.remove(&id);
    }

    fn rebuild_members(&mut self) {
        let mut m: Vec<ClientId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Joined(_)))
            .map(|(id, _)| *id)
            .collect();
        m.sort_unstable();
        self.members = Arc::from(m);
    }

    /// A decoded message from `client`, received at `now`.
    pub fn handle_message(&mut self, client: ClientId, msg: ClientMessage, now: Instant) {
        let Some(conn) = self.conns.get_mut(&client) else {
            return;
        };
        conn.last_heard = now;
        conn.ping = None;
        let user = match &conn.phase {
            Phase::Joined(u) => u.clone(),
            Phase::Handshaking => {
                self.handshake(client, msg);
                return;
            }
        };
        match msg {
            ClientMessage::Hello { .. } => {
                self.error(client, ErrorCode::UNEXPECTED, "already joined");
            }
            ClientMessage::Chat { to, text } => self.chat(client, user, to, text, now),
            ClientMessage::Who => {
                let mut users: Vec<Username> = self
                    .conns
                    .values()
                    .filter_map(|c| match &c.phase {
                        Phase::Joined(u) => Some(u.clone()),
                        Phase::Handshaking => None,
                    })
                    .collect();
                users.sort_by_key(|u| u.key());
                self.send(client, ServerMessage::Who { users });
            }
            ClientMessage::FilesAccess => self.events.push_back(HubEvent::FilesRequested {
                client,
                request: FilesRequest::Access,
            }),
            ClientMessage::ListFiles => self.events.push_back(HubEvent::FilesRequested {
                client,
                request: FilesRequest::List,
            }),
            ClientMessage::Download { id, name, offset } => self.download(client, id, name, offset),
            ClientMessage::Ack { id, offset } => {
                // An ack for a download that just ended is not an error.
                if self
                    .conns
                    .get(&client)
                    .is_some_and(|c| c.downloads.contains(&id))
                {
                    self.events
                        .push_back(HubEvent::DownloadAcked { client, id, offset });
                }
            }
            ClientMessage::Offer { id, name, size, to } => {
                self.offer(client, user, id, name, size, to)
            }
            ClientMessage::Chunk(chunk) => self.push_chunk(client, chunk),
            ClientMessage::End(end) => self.push_end(client, end),
            ClientMessage::Cancel(c) => self.client_cancel(client, c),
            ClientMessage::Ping(v) => self.send(client, ServerMessage::Pong(v)),
            ClientMessage::Pong(_) => {}
            ClientMessage::Quit => self.leave(client, LeaveReason::QUIT, "quit".into()),
        }
    }

    fn handshake(&mut self, client: ClientId, msg: ClientMessage) {
        let ClientMessage::Hello { version, username } = msg else {
            self.violation(client, "message before the handshake");
            self.refuse(
                client,
                RefuseCode::HANDSHAKE_REQUIRED,
                "send a username (Hello) before anything else",
            );
            return;
        };
        if version != PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"
            );
            self.refuse(client, RefuseCode::VERSION_MISMATCH, &reason);
            return;
        }
        // Checking and inserting the name happen in one step under the
        // caller's lock: two clients can never both get the same name.
        let key = username.key();
        if self.names.contains_key(&key) {
            let reason = format!("the username '{username}' is already taken");
            self.refuse(client, RefuseCode::NAME_TAKEN, &reason);
            return;
        }
        self.names.insert(key, client);
        if let Some(c) = self.conns.get_mut(&client) {
            c.phase = Phase::Joined(username.clone());
        }
        self.rebuild_members();
        self.send(
            client,
            ServerMessage::Welcome {
                version: PROTOCOL_VERSION,
                username: username.clone(),
                text: self.welcome.replace("{user}", username.as_str()),
            },
        );
        let members = self.members.clone();
        self.send_many(
            members,
            Some(client),
            ServerMessage::Joined {
                user: username.clone(),
            },
        );
        self.events.push_back(HubEvent::Joined {
            client,
            user: username,
        });
    }

    fn violation(&mut self, client: ClientId, detail: impl Into<String>) {
        self.events.push_back(HubEvent::Violation {
            client,
            detail: detail.into(),
        });
    }

    fn chat(
        &mut self,
        client: ClientId,
        from: Username,
        to: Recipient,
        text: String,
        now: Instant,
    ) {
        if text.len() > self.limits.max_text {
            let msg = format!(
                "message of {} bytes is longer than the limit of {} bytes",
                text.len(),
                self.limits.max_text
            );
            self.error(client, ErrorCode::TEXT_TOO_LONG, msg);
            return;
        }
        if self.rate(client, now) {
            return;
        }
        match to {
            Recipient::Everyone => {
                let members = self.members.clone();
                let receivers = members.len().saturating_sub(1);
                self.send_many(
                    members,
                    Some(client),
                    ServerMessage::Chat {
                        from,
                        private: false,
                        text,
                    },
                );
                self.events.push_back(HubEvent::Routed {
                    from: client,
                    to: None,
                    receivers,
                });
            }
            Recipient::User(target) => match self.names.get(&target.key()).copied() {
                Some(dest) => {
                    self.send(
                        dest,
                        ServerMessage::Chat {
                            from,
                            private: true,
                            text,
                        },
                    );
                    self.events.push_back(HubEvent::Routed {
                        from: client,
                        to: Some(target),
                        receivers: 1,
                    });
                }
                None => self.error(
                    client,
                    ErrorCode::UNKNOWN_USER,
                    format!("no user named '{target}' is online"),
                ),
            },
        }
    }

    /// Takes one token for a chat message. Returns true when the client has
    /// flooded for longer than allowed and was disconnected.
    fn rate(&mut self, client: ClientId, now: Instant) -> bool {
        let limits = &self.limits;
        if limits.rate_per_sec == 0 {
            return false;
        }
        let Some(c) = self.conns.get_mut(&client) else {
            return false;
        };
        let elapsed = now.saturating_duration_since(c.tokens_at).as_secs_f64();
        let burst = f64::from(limits.rate_burst);
        c.tokens = (c.tokens + elapsed * f64::from(limits.rate_per_sec)).min(burst);
        c.tokens_at = now;
        if c.tokens >= 1.0 {
            c.flooding_since = None;
        } else {
            let since = *c.flooding_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= limits.flood_timeout {
                let secs = limits.flood_timeout.as_secs();
                self.error(
                    client,
                    ErrorCode::FLOODING,
                    format!("disconnected: sending faster than allowed for {secs} s"),
                );
                self.violation(client, "flooding");
                self.leave(client, LeaveReason::KICKED, "flooding".into());
                return true;
            }
        }
        c_take(self.conns.get_mut(&client));
        false
    }

    fn download(&mut self, client: ClientId, id: TransferId, name: FileName, offset: u64) {
        let max = self.limits.max_transfers;
        let Some(c) = self.conns.get_mut(&client) else {
            return;
        };
        if id.is_server_chosen() || c.downloads.contains(&id) {
            self.bad_transfer_id(client, id, "download");
            return;
        }
        if c.downloads.len() + c.pushes >= max {
            self.cancel(
                client,
                id,
                CancelCode::TOO_MANY,
                format!("at most {max} transfers at once"),
            );
            return;
        }
        c.downloads.push(id);
        self.events.push_back(HubEvent::DownloadRequested {
            client,
            id,
            name,
            offset,
        });
    }

    /// A client picked a transfer id with the server's bit set, or one in use.
    fn bad_transfer_id(&mut self, client: ClientId, id: TransferId, kind: &str) {
        self.violation(client, format!("{kind} id {} reused or invalid", id.0));
        self.cancel(
            client,
            id,
            CancelCode::CANCELLED,
            "transfer id already in use or invalid",
        );
    }

    /// Answers a [`HubEvent::FilesRequested`] with the shared folder's files.
    /// A long list is split over several frames that each fit the frame limit.
    pub fn answer_files(&mut self, client: ClientId, request: FilesRequest, files: Vec<FileEntry>) {
        if !self.conns.contains_key(&client) {
            return;
        }
        match request {
            FilesRequest::Access => self.send(
                client,
                ServerMessage::FilesAccess {
                    count: files.len() as u64,
                },
            ),
            FilesRequest::List => {
                // Each entry takes at most 1 + 255 + 8 bytes.
                let per_frame = ((self.limits.max_frame as usize).saturating_sub(16) / 264).max(1);
                if files.is_empty() {
                    self.send(client, ServerMessage::FileList { files });
                    return;
                }
                let mut files = files.into_iter().peekable();
                while files.peek().is_some() {
                    let part: Vec<FileEntry> = files.by_ref().take(per_frame).collect();
                    self.send(client, ServerMessage::FileList { files: part });
                }
            }
        }
    }

    /// Starts a download the server could open: sends the `FileStart`. The
    /// server then streams the chunks itself (with [`Outgoing`](crate::Outgoing))
    /// and calls [`download_finished`](Hub::download_finished).
    /// Returns the offset to stream from: the one asked for, or 0 when it
    /// was past the end of the file.
    pub fn accept_download(
        &mut self,
        client: ClientId,
        id: TransferId,
        name: FileName,
        size: u64,
        offset: u64,
    ) -> Option<u64> {
        let c = self.conns.get(&client)?;
        if !c.downloads.contains(&id) {
            return None;
        }
        let offset = if offset > size { 0 } else { offset };
        self.send(
            client,
            ServerMessage::FileStart {
                id,
                name,
                size,
                offset,
                origin: Origin::Download,
            },
        );
        Some(offset)
    }

    /// Refuses a requested download (missing, forbidden, unreadable).
    pub fn refuse_download(
        &mut self,
        client: ClientId,
        id: TransferId,
        code: CancelCode,
        reason: impl Into<String>,
    ) {
        self.download_finished(client, id);
        if self.conns.contains_key(&client) {
            self.cancel(client, id, code, reason);
        }
    }

    /// The server finished (or gave up) streaming a download: frees its slot.
    pub fn download_finished(&mut self, client: ClientId, id: TransferId) {
        if let Some(c) = self.conns.get_mut(&client) {
            c.downloads.retain(|d| *d != id);
        }
    }

    fn offer(
        &mut self,
        client: ClientId,
        from: Username,
        id: TransferId,
        name: FileName,
        size: u64,
        to: Recipient,
    ) {
        let max_size = self.limits.max_push_size;
        let max = self.limits.max_transfers;
        if id.is_server_chosen() || self.relays.contains_key(&(client, id)) {
            self.bad_transfer_id(client, id, "push");
            return;
        }
        if size > max_size {
            self.cancel(
                client,
                id,
                CancelCode::TOO_LARGE,
                format!("file of {size} bytes is larger than the limit of {max_size} bytes"),
            );
            return;
        }
        let busy = self
            .conns
            .get(&client)
            .map_or(0, |c| c.downloads.len() + c.pushes);
        if busy >= max {
            self.cancel(
                client,
                id,
                CancelCode::TOO_MANY,
                format!("at most {max} transfers at once"),
            );
            return;
        }
        let receivers: Arc<[ClientId]> = match &to {
            Recipient::Everyone => self
                .members
                .iter()
                .copied()
                .filter(|m| *m != client)
                .collect(),
            Recipient::User(u) => match self.names.get(&u.key()) {
                Some(dest) => Arc::from(vec![*dest]),
                None => {
                    self.cancel(
                        client,
                        id,
                        CancelCode::NO_RECEIVER,
                        format!("no user named '{u}' is online"),
                    );
                    return;
                }
            },
        };
        if receivers.is_empty() {
            self.cancel(client, id, CancelCode::NO_RECEIVER, "no one else is online");
            return;
        }
        let relay_id = TransferId(TransferId::SERVER_BIT | self.next_relay);
        self.next_relay = (self.next_relay + 1) & !TransferId::SERVER_BIT;
        if let Some(c) = self.conns.get_mut(&client) {
            c.pushes += 1;
        }
        self.send_many(
            receivers.clone(),
            None,
            ServerMessage::FileStart {
                id: relay_id,
                name: name.clone(),
                size,
                offset: 0,
                origin: Origin::Push { from },
            },
        );
        self.events.push_back(HubEvent::PushStarted {
            from: client,
            id,
            name,
            size,
            receivers: receivers.len(),
        });
        self.relays.insert(
            (client, id),
            Relay {
                incoming: Incoming::new(id, size),
                relay_id,
                receivers,
                from: client,
            },
        );
    }

    fn push_chunk(&mut self, client: ClientId, chunk: FileChunk) {
        let Some(relay) = self.relays.get_mut(&(client, chunk.id)) else {
            // A chunk of a push the hub already ended: dropped quietly.
            return;
        };
        if let Err(e) = relay.incoming.accept(&chunk) {
            let id = chunk.id;
            self.end_relay(client, id, Some((CancelCode::BAD_CHUNK, e.to_string())));
            return;
        }
        let relay_id = relay.relay_id;
        let receivers = relay.receivers.clone();
        self.send_many(
            receivers,
            None,
            ServerMessage::Chunk(FileChunk {
                id: relay_id,
                ..chunk
            }),
        );
    }

    fn push_end(&mut self, client: ClientId, end: FileEnd) {
        let Some(relay) = self.relays.get(&(client, end.id)) else {
            return;
        };
        match relay.incoming.finish(&end) {
            Ok(()) => {
                let receivers = relay.receivers.clone();
                let relay_id = relay.relay_id;
                self.send_many(
                    receivers.clone(),
                    None,
                    ServerMessage::End(FileEnd {
                        id: relay_id,
                        crc: end.crc,
                    }),
                );
                self.send(
                    client,
                    ServerMessage::PushDone {
                        id: end.id,
                        receivers: receivers.len() as u32,
                    },
                );
                self.remove_relay(client, end.id, receivers.len(), None);
            }
            Err(e) => self.end_relay(
                client,
                end.id,
                Some((CancelCode::CHECKSUM_MISMATCH, e.to_string())),
            ),
        }
    }

    fn remove_relay(
        &mut self,
        client: ClientId,
        id: TransferId,
        receivers: usize,
        error: Option<String>,
    ) {
        if self.relays.remove(&(client, id)).is_some() {
            if let Some(c) = self.conns.get_mut(&client) {
                c.pushes = c.pushes.saturating_sub(1);
            }
            self.events.push_back(HubEvent::PushEnded {
                from: client,
                id,
                receivers,
                error,
            });
        }
    }

    /// Ends a push before its end: receivers are told, and the pusher too
    /// when `error` is set (it is `None` when the pusher cancelled itself).
    fn end_relay(&mut self, client: ClientId, id: TransferId, error: Option<(CancelCode, String)>) {
        let Some(relay) = self.relays.get(&(client, id)) else {
            return;
        };
        let (code, reason) = error
            .clone()
            .unwrap_or((CancelCode::CANCELLED, "the sender cancelled".into()));
        let receivers = relay.receivers.clone();
        let relay_id = relay.relay_id;
        self.send_many(
            receivers,
            None,
            ServerMessage::Cancel(FileCancel {
                id: relay_id,
                code,
                reason: reason.clone(),
            }),
        );
        if error.is_some() && self.conns.contains_key(&client) {
            self.cancel(client, id, code, reason.clone());
        }
        self.remove_relay(client, id, 0, Some(reason));
    }

    /// Stops delivering the push `relay_id` to `receiver` (for instance
    /// because it cannot keep up). The pusher is told if no receiver is left.
    pub fn cancel_delivery(
        &mut self,
        receiver: ClientId,
        relay_id: TransferId,
        code: CancelCode,
        reason: &str,
    ) {
        let key = self
            .relays
            .iter()
            .find(|(_, r)| r.relay_id == relay_id && r.receivers.contains(&receiver))
            .map(|(k, _)| *k);
        let Some((from, id)) = key else {
            return;
        };
        if self.conns.contains_key(&receiver) {
            self.cancel(receiver, relay_id, code, reason);
        }
        self.drop_receiver(from, id, receiver);
    }

    fn drop_receiver(&mut self, from: ClientId, id: TransferId, receiver: ClientId) {
        let Some(relay) = self.relays.get_mut(&(from, id)) else {
            return;
        };
        relay.receivers = relay
            .receivers
            .iter()
            .copied()
            .filter(|r| *r != receiver)
            .collect();
        if relay.receivers.is_empty() {
            let from = relay.from;
            self.end_relay(
                from,
                id,
                Some((CancelCode::NO_RECEIVER, "no receiver is left".into())),
            );
        }
    }

    fn client_cancel(&mut self, client: ClientId, c: FileCancel) {
        if c.id.is_server_chosen() {
            // A receiver declines a relayed push.
            let key = self
                .relays
                .iter()
                .find(|(_, r)| r.relay_id == c.id && r.receivers.contains(&client))
                .map(|(k, _)| *k);
            if let Some((from, id)) = key {
                self.drop_receiver(from, id, client);
            }
        } else if self.relays.contains_key(&(client, c.id)) {
            self.end_relay(client, c.id, None);
        } else if self
            .conns
            .get(&client)
            .is_some_and(|x| x.downloads.contains(&c.id))
        {
            self.download_finished(client, c.id);
            self.events
                .push_back(HubEvent::DownloadCancelled { client, id: c.id });
        }
    }

    /// The connection's stream broke: tells it why (best effort) and closes it.
    pub fn handle_decode_error(&mut self, client: ClientId, error: &DecodeError) {
        if !self.conns.contains_key(&client) {
            return;
        }
        self.violation(client, error.to_string());
        if self.is_joined(client) {
            self.error(
                client,
                ErrorCode::MALFORMED,
                format!("malformed frame: {error}"),
            );
            self.leave(
                client,
                LeaveReason::KICKED,
                format!("malformed frame: {error}"),
            );
        } else if let DecodeError::InvalidName {
            field: "username",
            error: name_error,
        } = error
        {
            // The username breaks a rule: say which, so the client can show why.
            self.refuse(
                client,
                RefuseCode::INVALID_NAME,
                &format!("invalid username: {name_error}"),
            );
        } else {
            self.refuse(
                client,
                RefuseCode::HANDSHAKE_REQUIRED,
                &format!("malformed handshake: {error}"),
            );
        }
    }

    /// The connection closed or failed (`reason` says how, usually
    /// [`LeaveReason::LOST`]). Safe to call for a connection already closed.
    pub fn handle_disconnect(&mut self, client: ClientId, reason: LeaveReason) {
        if self.conns.contains_key(&client) {
            self.leave(client, reason, format!("disconnected: {reason}"));
        }
    }

    /// Removes a connection: the others are told if it had joined; its
    /// transfers end; a [`HubEvent::Close`] follows.
    fn leave(&mut self, client: ClientId, reason: LeaveReason, why: String) {
        let Some(conn) = self.conns.remove(&client) else {
            return;
        };
        for id in &conn.downloads {
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
            self.end_relay(
                client,
                id,
                Some((CancelCode::PEER_LEFT, "the sender left".into())),
            );
        }
        let receiving: Vec<(ClientId, TransferId)> = self
            .relays
            .iter()
            .filter(|(_, r)| r.receivers.contains(&client))
            .map(|(k, _)| *k)
            .collect();
        for (from, id) in receiving {
            self.drop_receiver(from, id, client);
        }
        if let Phase::Joined(user) = conn.phase {
            self.names.remove(&user.key());
            self.rebuild_members();
            let members = self.members.clone();
            self.send_many(
                members,
                None,
                ServerMessage::Left {
                    user: user.clone(),
                    reason,
                },
            );
            self.events.push_back(HubEvent::Left {
                client,
                user,
                reason,
            });
        }
        debug!("closing {client}: {why}");
        self.events.push_back(HubEvent::Close {
            client,
            reason: why,
        });
    }

    /// Runs the clock: handshake deadlines, keepalive pings, dead peers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let limits = self.limits.clone();
        let mut late_handshakes = Vec::new();
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        for (id, c) in &self.conns {
            match (&c.phase, c.ping) {
                (Phase::Handshaking, _) => {
                    if now.saturating_duration_since(c.connected_at) >= limits.handshake_timeout {
                        late_handshakes.push(*id);
                    }
                }
                (Phase::Joined(_), Some((sent, _))) => {
                    if now.saturating_duration_since(sent) >= limits.keepalive_timeout {
                        dead.push(*id);
                    }
                }
                (Phase::Joined(_), None) => {
                    if now.saturating_duration_since(c.last_heard) >= limits.keepalive_interval {
                        ping.push(*id);
                    }
                }
            }
        }
        late_handshakes.sort_unstable();
        dead.sort_unstable();
        ping.sort_unstable();
        for id in late_handshakes {
            let secs = limits.handshake_timeout.as_secs_f64();
            self.refuse(
                id,
                RefuseCode::HANDSHAKE_TIMEOUT,
                &format!("no valid username within {secs} s"),
            );
        }
        for id in dead {
            self.error(id, ErrorCode::TIMEOUT, "no answer to keepalive");
            self.leave(id, LeaveReason::TIMEOUT, "keepalive timeout".into());
        }
        for id in ping {
            let nonce = self.next_ping;
            self.next_ping += 1;
            if let Some(c) = self.conns.get_mut(&id) {
                c.ping = Some((now, nonce));
            }
            self.send(id, ServerMessage::Ping(nonce));
        }
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
    }

    /// Tells everyone the server is shutting down, with `reason`, and closes
    /// every connection. Later connections are refused.
    pub fn shutdown(&mut self, reason: &str) {
        self.shutting_down = true;
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
        self.names.clear();
        self.relays.clear();
        self.rebuild_members();
    }

    /// Checks the hub's internal invariants (for tests and fuzzing): the
    /// name table and the member list agree with the connections.
    pub fn check_invariants(&self) -> Result<(), String> {
        let joined: Vec<(&ClientId, &Username)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match &c.phase {
                Phase::Joined(u) => Some((id, u)),
                Phase::Handshaking => None,
            })
            .collect();
        if joined.len() != self.names.len() || joined.len() != self.members.len() {
            return Err(format!(
                "{} joined, {} names, {} members",
                joined.len(),
                self.names.len(),
                self.members.len()
            ));
        }
        for (id, u) in joined {
            if self.names.get(&u.key()) != Some(id) {
                return Err(format!("name {u} does not map to {id}"));
            }
            if !self.members.contains(id) {
                return Err(format!("{id} missing from members"));
            }
        }
        if self.conns.len() > self.limits.max_clients {
            return Err("more connections than max_clients".into());
        }
        for ((from, _), r) in &self.relays {
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

fn c_take(conn: Option<&mut Conn>) {
    if let Some(c) = conn {
        c.tokens -= 1.0;
    }
}
