//! What the hub hands back: messages to send ([`Transmit`], tagged with
//! the [`Lane`] they travel in) and events to act on or log ([`HubEvent`]).

use std::sync::Arc;
use std::time::Instant;

use crate::message::{
    FileName, LeaveReason, MessageId, OpAction, Secret, ServerMessage, TransferId, Username,
};

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
    #[must_use]
    pub fn contains(&self, id: ClientId) -> bool {
        self.iter().any(|c| c == id)
    }
}

/// How a [`Transmit`] travels: the IO layer queues by lane and never needs
/// to look at the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Chat, answers, errors, keepalive, transfer starts and cancels: ahead
    /// of any file data, written as soon as possible.
    Control,
    /// Join and leave notices (`Presence` frames the hub already batched,
    /// so that N clients joining cost each member a few frames rather than
    /// N): a server may hold them a moment more to write them together, but
    /// they stay in order with the control lane's messages sent after them.
    Presence,
    /// File data of the push that this receiver knows by the given
    /// (server-chosen) id, and its end: queued behind the control lane, and
    /// paced to the receiver (a receiver that cannot keep up is dropped from
    /// the push with [`Hub::cancel_delivery`](crate::Hub::cancel_delivery)).
    Bulk(TransferId),
}

/// A message to send. Encode it once and queue the bytes for every
/// destination, in the queue its [`Lane`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Who gets it.
    pub to: Destination,
    /// How it travels.
    pub lane: Lane,
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
/// [`Hub::poll_transmit`](crate::Hub::poll_transmit) before acting on a [`HubEvent::Close`], so that
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
        /// For a removal ([`LeaveReason::KICKED`]), what the others were
        /// shown: "kicked by NAME: reason", or the server's own words
        /// ("malformed frame: …"); empty for any other leave (a quit's
        /// parting text is the user's, not the server's to log).
        removal: String,
        /// For the server's log, why the hub itself ended the session when
        /// it did: a waiting session given up because too many were
        /// waiting ("its session was given up, as 257 sessions were
        /// waiting for a resume, past the cap of 256; …"); empty otherwise. The
        /// others are told only the leave's reason.
        note: String,
    },
    /// A joined user's connection was lost: its session waits
    /// [`Limits::grace`](crate::Limits::grace) for a resume, and the
    /// others were told it is away, not that it left (a
    /// [`HubEvent::Left`] follows if the grace runs out).
    Away {
        /// The connection that was lost.
        client: ClientId,
        /// Its name.
        user: Username,
    },
    /// A client took its session back on a new connection: it has its
    /// name again, and was sent what it missed.
    Resumed {
        /// The new connection.
        client: ClientId,
        /// Its name.
        user: Username,
        /// The old connection, when it was still open and was closed for
        /// this one.
        replaced: Option<ClientId>,
        /// Entries sent again.
        replayed: usize,
        /// Entries missed that the log no longer held.
        dropped: u64,
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
        /// Its id (the one every receiver got with it).
        id: MessageId,
        /// Its text, when the hub was asked to report texts
        /// ([`Hub::set_report_text`](crate::Hub::set_report_text)); else `None`.
        text: Option<String>,
        /// The one receiver of a unicast, `None` for a broadcast.
        to: Option<Username>,
        /// How many connections it went to.
        receivers: usize,
        /// A unicast whose receiver is not connected but its session
        /// waits here for a resume: it gets the message then.
        waiting: bool,
    },
    /// The client asked about the shared folder: answer with [`Hub::answer_files`](crate::Hub::answer_files).
    FilesRequested {
        /// The connection.
        client: ClientId,
        /// Count or list.
        request: FilesRequest,
    },
    /// The client asked for a shared file: open it and answer with
    /// [`Hub::accept_download`](crate::Hub::accept_download) or [`Hub::refuse_download`](crate::Hub::refuse_download).
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
    /// The hub refused a download the client asked for, before the server
    /// opened anything (too many downloads running, or a bad id); the
    /// client got a `Cancel` saying `reason`. For the server's log.
    DownloadRefused {
        /// The connection.
        client: ClientId,
        /// The client's transfer id.
        id: TransferId,
        /// The file asked for.
        name: FileName,
        /// What the client was told.
        reason: String,
    },
    /// A download of `client`'s was cancelled to give its slot to a
    /// client of an address holding fewer downloads (the server was
    /// streaming as many as it does at once, and this one had stalled);
    /// a [`HubEvent::DownloadCancelled`] of it follows. For the server's log.
    DownloadPreempted {
        /// The connection whose download was cancelled.
        client: ClientId,
        /// Its transfer.
        id: TransferId,
        /// The connection that got the slot.
        for_client: ClientId,
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
    /// The receiver `client` acknowledged more of push `id` (its id for
    /// it). The hub gives the pusher its credit itself
    /// ([`ServerMessage::PushCredit`](crate::ServerMessage::PushCredit)),
    /// so that the pusher sends no more than
    /// [`PUSH_WINDOW`](crate::PUSH_WINDOW) past what its slowest receiver
    /// acknowledged ([`Hub::push_in_flight`](crate::Hub::push_in_flight)):
    /// nothing needs to wait for this.
    PushAcked {
        /// The receiver.
        client: ClientId,
        /// The push, by the receiver's id for it.
        id: TransferId,
    },
    /// The receiver `receiver` held push `relay` (its id for it) for
    /// [`PUSH_RECEIVER_WAIT`](crate::PUSH_RECEIVER_WAIT) and was dropped
    /// from it with `Cancel{TOO_SLOW}` (for the log).
    ReceiverTooSlow {
        /// The receiver.
        receiver: ClientId,
        /// The push, by the receiver's id for it.
        relay: TransferId,
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
        /// File name.
        name: FileName,
        /// File size.
        size: u64,
        /// When it was offered (the `now` of that message).
        started: Instant,
        /// Receivers that got it whole.
        receivers: usize,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// Something a local user did, for the other servers of the cluster
    /// (only in cluster mode: [`Hub::enable_cluster`](crate::Hub::enable_cluster)).
    Cluster(super::ClusterEvent),
    /// The data path of a push between the servers of a cluster (see
    /// [`RemotePush`](crate::RemotePush)): carry it, in order, with a window.
    RemotePush(super::RemotePush),
    /// A client broke a protocol rule (logged; the hub has answered it).
    Violation {
        /// The connection.
        client: ClientId,
        /// What it did.
        detail: String,
    },
    /// A login was refused for a wrong password (the server's or the
    /// name's) or for too many of them: not a broken rule, but worth a
    /// warning (logged; the hub has refused it). `reason` never holds the
    /// password.
    LoginRefused {
        /// The connection.
        client: ClientId,
        /// The name it asked for.
        user: Username,
        /// Why, in words ("wrong server password").
        reason: String,
    },
    /// A `Hello` for `user` waits: check the account. Answer with
    /// [`Hub::account_checked`](crate::Hub::account_checked): `Open` when the
    /// name is not registered, else the verdict on `password`. Do the
    /// (slow) hash check without the hub's lock held.
    CheckAccount {
        /// The connection.
        client: ClientId,
        /// The name it asks for.
        user: Username,
        /// The account password it sent, if any.
        password: Option<Secret>,
    },
    /// A joined user asks to protect its name with `password`: hash it,
    /// store it unless the name is registered already, and answer with
    /// [`Hub::account_changed`](crate::Hub::account_changed).
    Register {
        /// The connection.
        client: ClientId,
        /// Its name.
        user: Username,
        /// The password.
        password: Secret,
    },
    /// A joined user asks to remove the protection of its name; answer
    /// with [`Hub::account_changed`](crate::Hub::account_changed).
    Unregister {
        /// The connection.
        client: ClientId,
        /// Its name.
        user: Username,
    },
    /// The bans changed (a ban or an unban): all of them now, for a server
    /// that keeps them (see [`Hub::set_bans`](crate::Hub::set_bans)).
    BansChanged {
        /// Every ban in force, oldest first.
        bans: Vec<crate::Ban>,
    },
    /// An operator (a name, or `console`) kicked, banned, unbanned or
    /// listed bans: to log.
    Operated {
        /// Who.
        by: String,
        /// What.
        action: OpAction,
        /// Whom (a username or an address).
        target: String,
        /// Why.
        reason: String,
        /// What came of it.
        outcome: String,
    },
    /// A user without operator rights asked to kick, ban, unban or list
    /// bans: refused (the user was told), to log. Not a broken rule: the
    /// client cannot know whether its user is an operator.
    NotPermitted {
        /// The connection.
        client: ClientId,
        /// What it asked.
        action: OpAction,
        /// Whom (a username or an address, as the user typed it).
        target: String,
    },
}
