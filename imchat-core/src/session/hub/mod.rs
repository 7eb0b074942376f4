//! The server side of the protocol: a [`Hub`] that holds every connection's
//! state and makes every routing decision, with no sockets and no clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use log::debug;

use crate::limits::Limits;
use crate::message::{
    CancelCode, ClientMessage, ErrorCode, FileCancel, FileName, LeaveReason, RefuseCode,
    ServerMessage, TransferId, Username,
};

mod chat;
mod files;
mod handshake;
mod keepalive;
mod rate;
mod relay;

use rate::TokenBucket;
use relay::Relay;

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
    bucket: TokenBucket,
    downloads: Vec<TransferId>,
    pushes: usize,
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
                bucket: TokenBucket::new(&self.limits, now),
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

    fn violation(&mut self, client: ClientId, detail: impl Into<String>) {
        self.events.push_back(HubEvent::Violation {
            client,
            detail: detail.into(),
        });
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
