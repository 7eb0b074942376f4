//! The client side of the protocol: a [`ClientSession`] that turns user
//! intents into messages and server messages into events, with no IO.

use crate::message::FileStart;
use crate::message::RoutedChat;
use crate::message::{Departure, FileListPart, PresenceEvent};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::codes::CANNOT_STORE;
use crate::error::{TransferError, UsageError};
use crate::limits::Limits;
use crate::message::{
    CancelCode, ChatKind, ClientMessage, ErrorCode, FileCancel, FileName, MessageId, NoticeCode,
    OnlineUser, OpAction, Origin, Recipient, RefuseCode, ResumeRequest, ResumeToken, Secret,
    ServerLimits, ServerMessage, Timestamp, TransferId, Username, MAX_TARGET_BYTES,
    PROTOCOL_VERSION,
};
use crate::transfer::{Incoming, Outgoing, ResumeState};

use super::bucket::ITEMS_PER_MESSAGE;
use super::pace::Pacer;
use super::FilesRequest;

/// What happened, for the frontend to show or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server accepted the username; show its welcome text.
    Welcome {
        /// The registered name.
        username: Username,
        /// The server's text.
        text: String,
        /// The limits the server announced (the session keeps to them).
        limits: ServerLimits,
    },
    /// The server refused the handshake; the session is closed.
    Refused {
        /// Why.
        code: RefuseCode,
        /// The server's explanation.
        reason: String,
    },
    /// A chat message from another user.
    Chat(RoutedChat),
    /// Someone joined.
    Joined {
        /// Its log id (as [`Departure::id`] for a leave): one at or below
        /// [`ClientEvent::Resumed::through`] was replayed.
        id: MessageId,
        /// When the server noted it (as [`Departure::time`] for a leave):
        /// a join replayed after a resume happened before it is handed on.
        time: Timestamp,
        /// Who.
        user: Username,
    },
    /// Someone left.
    Left(Departure),
    /// A user's connection was lost and its session waits for a resume: it
    /// is away (as [`Who`](ClientEvent::Who) would list it) until a
    /// [`Back`](ClientEvent::Back) for it, or its [`Left`](ClientEvent::Left)
    /// when it does not come back. Never about this session's own user, and
    /// not replayed after a resume (ask [`ClientSession::who`] then). A
    /// connection lost and resumed at once may give an away and a back
    /// together.
    Away {
        /// When the server noticed.
        time: Timestamp,
        /// Who.
        user: Username,
    },
    /// A user that was away resumed its session (in a cluster, perhaps on
    /// another server): it is here again.
    Back {
        /// When the server noticed.
        time: Timestamp,
        /// Who.
        user: Username,
    },
    /// The answer to [`ClientSession::who`].
    Who {
        /// Everyone online, in [`name_order`](crate::name_order); those away (their
        /// connection lost, their session waiting for a resume) marked
        /// with how long they have been ([`OnlineUser::away_secs`]).
        users: Vec<OnlineUser>,
    },
    /// Access to the shared folder, with its file count.
    FilesAccess {
        /// Number of files.
        count: u64,
    },
    /// (Part of) the shared-file list; complete with the part marked `last`.
    FileList(FileListPart),
    /// (Part of) the shared-file list asked for with
    /// [`fetch_file_names`](ClientSession::fetch_file_names): not to be
    /// shown, only kept (for completion, say).
    FileNames(FileListPart),
    /// The answer to [`files_access`](ClientSession::files_access) or
    /// [`list_files`](ClientSession::list_files) when the server cannot
    /// read its shared folder now (PROTOCOL.md §9: a `Notice{FAILED}`,
    /// then the answer of an empty folder): in place of both, so that
    /// the folder is not shown as empty. A quiet list
    /// ([`fetch_file_names`](ClientSession::fetch_file_names)) gets an
    /// empty [`FileNames`](ClientEvent::FileNames) instead.
    FilesUnavailable {
        /// Which request it answers.
        request: FilesRequest,
        /// The server's text.
        text: String,
    },
    /// The server reported an error; the session goes on.
    Error {
        /// What kind.
        code: ErrorCode,
        /// The client id of the chat message it refuses (as
        /// [`send_chat`](ClientSession::send_chat) returned it); 0 when it
        /// is not about one.
        client_id: u64,
        /// The server's text.
        text: String,
    },
    /// A file starts arriving: open a temporary file (keeping its first
    /// `offset` bytes when resuming, else empty).
    TransferStarted {
        /// The transfer.
        id: TransferId,
        /// The file name (a checked single name).
        name: FileName,
        /// Its whole size in bytes, as the server reports it.
        size: u64,
        /// Where the data starts.
        offset: u64,
        /// A download or a push from someone.
        origin: Origin,
    },
    /// Checked data: write it at `offset` of the temporary file.
    TransferData {
        /// The transfer.
        id: TransferId,
        /// Where it goes.
        offset: u64,
        /// The bytes (their CRC matched).
        data: Vec<u8>,
    },
    /// Size and whole-file checksum matched: move the file to its final name.
    TransferDone {
        /// The transfer.
        id: TransferId,
    },
    /// The transfer failed: delete the temporary file.
    TransferFailed {
        /// The transfer.
        id: TransferId,
        /// The file's name: for a download, the one asked for.
        name: FileName,
        /// Why.
        error: TransferError,
    },
    /// Someone offers us a file larger than the session accepts on its
    /// own ([`ClientSession::set_auto_accept`]): ask the user, then call
    /// [`ClientSession::accept`] or [`ClientSession::decline`]. Unanswered,
    /// the server withdraws it after its offer timeout
    /// ([`ClientEvent::OfferWithdrawn`]).
    PushOffered {
        /// The offer: an id of the session's own, as for downloads and
        /// pushes (not the server's), so no two transfers share a `#n`.
        id: TransferId,
        /// The sender.
        from: Username,
        /// The file's name.
        name: FileName,
        /// Its size in bytes.
        size: u64,
    },
    /// An offer still waiting for our answer ended: the sender gave up,
    /// left, or we took too long.
    OfferWithdrawn {
        /// The offer.
        id: TransferId,
        /// The sender.
        from: Username,
        /// The file's name.
        name: FileName,
        /// Why.
        reason: String,
    },
    /// The receivers of a push of ours answered: send its data now
    /// ([`ClientSession::push_chunk`]).
    PushAccepted {
        /// The push.
        id: TransferId,
        /// How many accepted it.
        receivers: u32,
    },
    /// The server lets push `id` of ours send up to byte `offset` of its
    /// file: [`ClientSession::push_room`] grew. The first comes right after
    /// [`PushAccepted`](Self::PushAccepted); the next ones as its slowest
    /// receiver stores what it got.
    PushCredit {
        /// The push.
        id: TransferId,
        /// The end of what may be sent, counted from byte 0.
        offset: u64,
    },
    /// A push of ours reached its receivers.
    PushDone {
        /// The push.
        id: TransferId,
        /// How many got it.
        receivers: u32,
    },
    /// A push of ours was refused or stopped; stop sending its data.
    PushFailed {
        /// The push.
        id: TransferId,
        /// Why.
        code: CancelCode,
        /// The server's words.
        reason: String,
    },
    /// The server is shutting down; the connection will close.
    Shutdown {
        /// Why.
        reason: String,
    },
    /// Someone tried to push a file that this session declined (too large,
    /// too many transfers at once); the server was told.
    PushDeclined {
        /// The sender.
        from: Username,
        /// The file's name.
        name: FileName,
        /// Its announced size.
        size: u64,
        /// Why it was declined.
        reason: String,
    },
    /// The server stopped answering keepalive pings: the connection is dead.
    TimedOut,
    /// After [`ClientSession::reconnect`], the server gave the session
    /// back (right after the [`ClientEvent::Welcome`]): what was missed
    /// follows as ordinary events, then the chat messages not acknowledged
    /// before are sent again (the server drops any it already had).
    Resumed {
        /// Entries missed that the server no longer had (0: nothing lost).
        dropped: u64,
        /// The newest id of the replay that follows (the `Welcome`'s
        /// `last_id`): a chat, join or leave with an id at or below it
        /// is one missed while away, replayed; above it, live.
        through: MessageId,
    },
    /// After [`ClientSession::reconnect`], the server started a new session
    /// instead (right after the [`ClientEvent::Welcome`]): what happened
    /// meanwhile is not replayed. Messages not acknowledged before are sent
    /// again (one may arrive twice, if it had reached the server).
    ContinuityLost {
        /// Why, to show the user.
        reason: String,
    },
    /// The answer to [`ClientSession::register`],
    /// [`ClientSession::unregister`] or [`ClientSession::operate`].
    Notice {
        /// What happened.
        code: NoticeCode,
        /// The server's text.
        text: String,
    },
    /// In a cluster, our server cannot reach the others
    /// (`reachable: false`: only its own users are served, new names are
    /// refused, messages wait to be passed on), or can again. Told when
    /// an outage begins and ends, and right after the `Welcome` (and the
    /// replay of a resume) of a connection made while it lasts; a new
    /// connection starts as reachable.
    ClusterReachable {
        /// Whether the cluster can be reached now.
        reachable: bool,
        /// The server's text.
        text: String,
    },
    /// An operator removed us (kick or ban): the session is closed and
    /// must not reconnect on its own.
    Kicked {
        /// Who and why, as the server said.
        text: String,
    },
    /// Another connection resumed our session (a copy of the saved
    /// session, run elsewhere): the session is closed and must not
    /// reconnect on its own, which would take it back from the other.
    Replaced {
        /// What the server said (from which address).
        text: String,
    },
    /// The server took our chat message `client_id` (as
    /// [`send_chat`](ClientSession::send_chat) returned it): it went to
    /// its recipients. A message the server refuses gets an
    /// [`Error`](ClientEvent::Error) with its client id instead. Only
    /// with [`set_report_acks`](ClientSession::set_report_acks) (for the
    /// blocking client, `ConnectOptions::report_acks`): a program that
    /// waits to show a message whose recipient may not be online shows it
    /// at this event (and none that was refused).
    Acknowledged {
        /// Its client id.
        client_id: u64,
    },
    /// A chat message kept for sending again was given up: more were
    /// waiting for the server's acknowledgement than
    /// [`Limits::max_unacked`] (or `max_unacked_bytes`). It may or may not
    /// have reached the server: one written to a connection that stayed up
    /// most likely did (what is given up is only sending it again should
    /// the connection break before the server acknowledges it), one still
    /// waiting to be sent again after a reconnect did not. A program that
    /// sends faster than the server acknowledges (without the pacing of
    /// [`next_send_at`](ClientSession::next_send_at)) gets these for
    /// messages that arrive: sending them again would show them twice.
    NotSent {
        /// Its client id (as [`send_chat`](ClientSession::send_chat)
        /// returned it).
        client_id: u64,
        /// Who it was for.
        to: Recipient,
        /// Text or action.
        kind: ChatKind,
        /// The text.
        text: String,
    },
}

/// What a program keeps (on disk, say) to take a session back after it
/// restarted: see [`ClientSession::saved`] and [`ClientSession::resuming`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedSession {
    /// The token of the last `Welcome`.
    pub token: ResumeToken,
    /// The epoch of that `Welcome`.
    pub epoch: u64,
    /// The newest log id seen.
    pub last_seen: MessageId,
    /// The client id the next chat message takes. The server takes a
    /// message whose id is not above the highest it had for a duplicate,
    /// so a restarted program must start past every id it may have used:
    /// [`ClientSession::saved`] gives the session's next id plus
    /// [`SAVED_ID_LEASE`], so a program that sends fewer messages than
    /// that between two saves starts past them all.
    pub next_client_id: u64,
}

/// The highest client id a [`ClientSession::resuming`] session numbers
/// its first message with: 2³² ids are left after it, where a saved
/// session at the end of the id space would have none.
const LAST_FIRST_CLIENT_ID: u64 = u64::MAX - (1 << 32);

/// `wait` after `at`, or a century after it for a wait too long to add
/// (a keepalive time of `Duration::MAX`, meaning "never").
fn after(at: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(wait)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}

/// The least time between two `Pong`s ([`ClientSession::answer_ping`]).
pub(crate) const PONG_GAP: Duration = Duration::from_millis(100);

/// How far past its next client id [`ClientSession::saved`] puts the
/// first id of a restarted program (65,536): the messages the running one
/// sends after the save do not take the ids of the next run's, which the
/// server would take for copies and answer without delivering them.
pub const SAVED_ID_LEASE: u64 = 1 << 16;

/// A chat message sent and not yet acknowledged.
#[derive(Debug, Clone)]
struct Unacked {
    client_id: u64,
    to: Recipient,
    kind: ChatKind,
    text: String,
}

/// What the `Hello` of a reconnect asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconnect {
    /// A resume, of a session of this epoch.
    Resume { epoch: u64 },
    /// A fresh session (the server offered no resume).
    Fresh,
    /// A fresh session after [`ClientSession::quit`] ended the last one.
    AfterQuit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Joined,
    Closed,
}

#[derive(Debug)]
struct PendingDownload {
    name: FileName,
    resume: Option<ResumeState>,
}

/// A push offered to us, waiting for our answer.
#[derive(Debug, Clone)]
struct Offered {
    from: Username,
    name: FileName,
    size: u64,
}

/// The pushes accepted without asking within the last
/// [`AUTO_ACCEPT_WINDOW`](crate::AUTO_ACCEPT_WINDOW), held against their
/// budgets: a sender who pushes small file after small file is asked
/// about them once it has had its share, and so is everyone once all
/// senders together have.
#[derive(Debug, Default)]
struct Unasked {
    /// When, from whom and for how many bytes, oldest first. At most
    /// [`AUTO_ACCEPT_TOTAL`](crate::AUTO_ACCEPT_TOTAL) times the
    /// auto-accept size over the least charge: 4,096 at the default.
    /// The sender is its name's key ([`ClientSession::set_name_key`]).
    accepted: VecDeque<(Instant, String, u64)>,
}

impl Unasked {
    /// Whether a push of `size` bytes from the sender whose name's key is
    /// `from` may be accepted without asking, the auto-accept size being
    /// `max`; if so, it is counted.
    fn admit(&mut self, now: Instant, max: u64, from: String, size: u64) -> bool {
        use crate::limits::{
            AUTO_ACCEPT_MIN_CHARGE, AUTO_ACCEPT_PER_SENDER, AUTO_ACCEPT_TOTAL, AUTO_ACCEPT_WINDOW,
        };
        if size > max {
            return false;
        }
        while self
            .accepted
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) >= AUTO_ACCEPT_WINDOW)
        {
            self.accepted.pop_front();
        }
        let unit = max.max(AUTO_ACCEPT_MIN_CHARGE);
        let charge = size.max(AUTO_ACCEPT_MIN_CHARGE);
        let (mut theirs, mut all) = (charge, charge);
        for (_, who, bytes) in &self.accepted {
            all = all.saturating_add(*bytes);
            if *who == from {
                theirs = theirs.saturating_add(*bytes);
            }
        }
        if theirs > unit.saturating_mul(AUTO_ACCEPT_PER_SENDER)
            || all > unit.saturating_mul(AUTO_ACCEPT_TOTAL)
        {
            return false;
        }
        self.accepted.push_back((now, from, charge));
        true
    }
}

/// How far a download is stored, and how far that was acknowledged.
#[derive(Debug, Default)]
struct HeldAck {
    acked: u64,
    stored: u64,
}

/// One client's protocol state.
///
/// Inputs: [`handle_message`](Self::handle_message),
/// [`handle_timeout`](Self::handle_timeout), and the user intents
/// (`send_chat`, `who`, `download`, `offer`…). Outputs:
/// [`poll_transmit`](Self::poll_transmit) for what to send (drain it after
/// every input) and [`poll_event`](Self::poll_event) for what to show.
#[derive(Debug)]
pub struct ClientSession {
    username: Username,
    limits: Limits,
    state: State,
    transmits: VecDeque<ClientMessage>,
    events: VecDeque<ClientEvent>,
    requested: HashMap<TransferId, PendingDownload>,
    incoming: HashMap<TransferId, Incoming>,
    /// The file name of each incoming transfer.
    names: HashMap<TransferId, FileName>,
    /// Downloads stored further than acknowledged (manual acknowledgements).
    held_acks: HashMap<TransferId, HeldAck>,
    outgoing: HashMap<TransferId, Outgoing>,
    /// Our pushes whose receivers accepted them: their data may go.
    accepted: std::collections::HashSet<TransferId>,
    /// How far the server lets each push of ours send
    /// ([`ServerMessage::PushCredit`]), counted from byte 0.
    credits: HashMap<TransferId, u64>,
    /// Our pushes whose end was queued: nothing more goes for them, and
    /// they are only waiting for the server's [`ServerMessage::PushDone`].
    pushes_ended: std::collections::HashSet<TransferId>,
    /// Pushes offered to us, waiting for the user's answer.
    offers: HashMap<TransferId, Offered>,
    /// The pushes offered to us, by the id the session gives them: the
    /// server's id of each. The server numbers them on its own, so its ids
    /// can match the numbers of our downloads and pushes once shown as
    /// `#n`; the session's ids come from the counter of our own, so every
    /// transfer of the session has its own number (see [`TransferId`]).
    relayed: HashMap<TransferId, TransferId>,
    /// Offers up to this size are accepted at once; `None`: always ask.
    auto_accept: Option<u64>,
    /// What was accepted at once lately, against its budgets.
    unasked: Unasked,
    /// What makes two senders one ([`set_name_key`](Self::set_name_key)).
    name_key: fn(&Username) -> String,
    /// The users ignored ([`ignore`](Self::ignore)), by their name's key,
    /// with the name as it was given.
    ignored: std::collections::BTreeMap<String, Username>,
    /// What the server announced in its last `Welcome`: the session keeps
    /// to the stricter of these and its own [`Limits`], but for the text
    /// and frame limits, which follow the server's.
    announced: Option<ServerLimits>,
    next_id: u32,
    last_heard: Instant,
    ping: Option<Instant>,
    next_ping: u64,
    /// Downloads are acknowledged by [`stored`](Self::stored), not as
    /// their data is handed out.
    manual_acks: bool,
    /// The server's acknowledgements of our chat messages are handed out
    /// ([`ClientEvent::Acknowledged`]).
    report_acks: bool,
    /// The client's side of the server's rate limit.
    pacer: Pacer,
    /// The latest time the session was given (requests are charged then).
    clock: Instant,
    /// The `Ping` of [`settle`](Self::settle) whose `Pong` is awaited.
    barrier: Option<u64>,
    /// Requests of the user's sent so far (see [`ask`](Self::ask)).
    sent: u64,
    /// How many of [`sent`](Self::sent) the awaited barrier covers.
    barrier_covers: u64,
    /// How many of [`sent`](Self::sent) the server has answered, as far as
    /// a barrier's `Pong` tells.
    answered: u64,
    /// `ListFiles` requests whose last `FileList` has not arrived, oldest
    /// first: whether each is a quiet one ([`ClientEvent::FileNames`]).
    lists: VecDeque<bool>,
    /// Files listed so far in the `FileList` answer arriving.
    listed: usize,
    /// `FilesAccess` requests not answered yet.
    accesses: u64,
    /// A `Notice{FAILED}` that came while a shared-folder request waited
    /// for its answer: held until the next message tells whether it is
    /// that request's (the answer of an empty folder follows at once).
    held_failure: Option<String>,
    /// The client id of the next chat message.
    next_client_id: u64,
    /// Chat messages sent and not acknowledged, oldest first.
    unacked: VecDeque<Unacked>,
    /// Chat messages waiting to go at the pace of the rate limit: the
    /// unacknowledged ones sent again after a resume, and any sent after
    /// them meanwhile (they may not overtake). Released by
    /// [`handle_timeout`](Self::handle_timeout).
    resend: VecDeque<Unacked>,
    /// The bytes of their texts.
    unacked_bytes: usize,
    /// The newest log id seen (of a chat message, a join or a leave).
    last_seen: MessageId,
    /// After a resume refused in this run (the session expired, the
    /// server's history the same): the newest id shown before the break.
    /// The history of the fresh session up to it was shown already.
    shown_through: MessageId,
    /// Set by [`on_another_server`](Self::on_another_server) until the
    /// `Welcome`.
    elsewhere: bool,
    /// The token and epoch of the last `Welcome`, when it offered a resume.
    resume: Option<(ResumeToken, u64)>,
    /// Set by [`reconnect`](Self::reconnect) until the `Welcome`.
    reconnecting: Option<Reconnect>,
    /// Why the session asked for is over, if the server said so before
    /// its `Welcome` (a [`NoticeCode::SESSION_ENDED`] notice).
    ended: Option<String>,
    /// [`quit`](Self::quit) gave up a session that could have resumed:
    /// a reconnect after it says so, not that the server offers none.
    quit_sent: bool,
    /// When the last `Pong` was sent, and the newest `Ping` waiting for
    /// its answer meanwhile ([`PONG_GAP`]).
    last_pong: Option<Instant>,
    pong_due: Option<u64>,
    /// Set by [`quit_on_resume`](Self::quit_on_resume): the parting text of
    /// a quit that could not reach the server, sent as soon as the session
    /// is given back.
    quit_on_resume: Option<String>,
    /// The server password, sent in an `Auth` before every `Hello`.
    server_password: Option<Secret>,
    /// The account password of the username, likewise.
    account_password: Option<Secret>,
    /// A password of a `Register` not answered yet.
    registering: Option<Secret>,
    /// The resume asked for presents a session saved by an earlier run
    /// ([`resuming`](ClientSession::resuming)), not one this run was
    /// welcomed into: until the first `Welcome`.
    from_save: bool,
    /// The server refused a resume as a name taken: see
    /// [`is_resume_refused`](ClientSession::is_resume_refused).
    resume_refused: bool,
    /// How the server ended the session, when it did so on purpose (a
    /// kick, a resume from another connection): a resume after it that
    /// is refused says so, not that the session expired. Until the next
    /// `Welcome`.
    closed_by: Option<ClosedBy>,
}

/// How the server ended a session on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClosedBy {
    /// [`ClientEvent::Kicked`].
    Kicked,
    /// [`ClientEvent::Replaced`].
    Replaced,
}

impl ClientSession {
    /// A session that asks to join as `username`; its first transmit is the `Hello`.
    #[must_use]
    pub fn new(username: Username, limits: Limits, now: Instant) -> Self {
        let mut s = ClientSession {
            username: username.clone(),
            limits,
            state: State::Handshaking,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            requested: HashMap::new(),
            incoming: HashMap::new(),
            names: HashMap::new(),
            held_acks: HashMap::new(),
            outgoing: HashMap::new(),
            accepted: std::collections::HashSet::new(),
            credits: HashMap::new(),
            pushes_ended: std::collections::HashSet::new(),
            offers: HashMap::new(),
            relayed: HashMap::new(),
            auto_accept: Some(crate::limits::DEFAULT_AUTO_ACCEPT_BYTES),
            unasked: Unasked::default(),
            name_key: Username::key,
            ignored: std::collections::BTreeMap::new(),
            announced: None,
            next_id: 1,
            last_heard: now,
            ping: None,
            next_ping: 1,
            manual_acks: false,
            report_acks: false,
            pacer: Pacer::default(),
            clock: now,
            barrier: None,
            sent: 0,
            barrier_covers: 0,
            answered: 0,
            lists: VecDeque::new(),
            listed: 0,
            accesses: 0,
            held_failure: None,
            next_client_id: 1,
            unacked: VecDeque::new(),
            resend: VecDeque::new(),
            unacked_bytes: 0,
            last_seen: MessageId(0),
            shown_through: MessageId(0),
            elsewhere: false,
            resume: None,
            reconnecting: None,
            ended: None,
            quit_sent: false,
            quit_on_resume: None,
            last_pong: None,
            pong_due: None,
            server_password: None,
            account_password: None,
            registering: None,
            from_save: false,
            resume_refused: false,
            closed_by: None,
        };
        s.transmits.push_back(ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username,
            resume: None,
        });
        s
    }

    /// A session that asks for one saved by an earlier run of the program
    /// (see [`saved`](Self::saved)): its first transmit is a `Hello` with
    /// that resume request, answered as after [`reconnect`](Self::reconnect)
    /// ([`ClientEvent::Resumed`], or [`ClientEvent::ContinuityLost`] and a
    /// fresh session). Its chat messages are numbered from
    /// `saved.next_client_id` on (from 1 for 0, and from 2⁶⁴ − 2³² for an
    /// id above that, which no program gets to: a damaged save; the ids
    /// left would run out).
    #[must_use]
    pub fn resuming(username: Username, limits: Limits, now: Instant, saved: SavedSession) -> Self {
        let mut s = Self::new(username, limits, now);
        s.resume = Some((saved.token, saved.epoch));
        s.last_seen = saved.last_seen;
        s.next_client_id = saved.next_client_id.clamp(1, LAST_FIRST_CLIENT_ID);
        s.reconnect(now);
        s.from_save = true;
        s
    }

    /// Makes a [`resuming`](Self::resuming) session end the session it
    /// asks for: the user quit it (with `reason`) while the server could
    /// not be told. If the `Welcome` gives it back, the session at once
    /// sends the `Quit` and is closed ([`is_closed`](Self::is_closed)):
    /// no [`ClientEvent::Resumed`] and nothing of the replay is handed
    /// out, only the `Welcome`; the caller reads until the server closes
    /// the connection, then joins afresh. If it does not (expired, a new
    /// epoch), the session simply goes on as a fresh one, without the
    /// [`ClientEvent::ContinuityLost`] that would say it was not resumed.
    pub fn quit_on_resume(&mut self, reason: &str) {
        self.quit_on_resume = Some(reason.to_string());
    }

    /// The passwords to give the server: `server`, the server's password,
    /// and `account`, the account password of the username (when it is
    /// registered). They go in an `Auth` right before every `Hello`: the
    /// one queued now, if it has not been sent, and those of reconnects.
    /// With neither, no `Auth` is sent (as to a server of before accounts).
    pub fn set_credentials(&mut self, server: Option<Secret>, account: Option<Secret>) {
        self.server_password = server;
        self.account_password = account;
        self.queue_auth();
    }

    /// The account password this session gives when it reconnects: the
    /// one [`set_credentials`](Self::set_credentials) gave, or the one a
    /// [`register`](Self::register) the server confirmed set (none after
    /// an unregister).
    #[must_use]
    pub fn account_password(&self) -> Option<&Secret> {
        self.account_password.as_ref()
    }

    /// Puts the `Auth` for the credentials before a `Hello` not yet sent.
    fn queue_auth(&mut self) {
        if self.state != State::Handshaking {
            return;
        }
        if matches!(self.transmits.front(), Some(ClientMessage::Auth { .. })) {
            self.transmits.pop_front();
        }
        if matches!(self.transmits.front(), Some(ClientMessage::Hello { .. })) {
            if let Some(auth) = self.auth_message() {
                self.transmits.push_front(auth);
            }
        }
    }

    /// The `Auth` to send before a `Hello`, if there is a password to give.
    fn auth_message(&self) -> Option<ClientMessage> {
        (self.server_password.is_some() || self.account_password.is_some()).then(|| {
            ClientMessage::Auth {
                server: self.server_password.clone(),
                account: self.account_password.clone(),
            }
        })
    }

    /// Asks the server to protect the username with `password` (answered
    /// with a [`ClientEvent::Notice`]). Once registered, the session sends
    /// that password when it reconnects.
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; nothing is sent.
    pub fn register(&mut self, password: Secret) -> Result<(), UsageError> {
        self.joined()?;
        self.ask(1, 0);
        self.registering = Some(password.clone());
        self.transmits
            .push_back(ClientMessage::Register { password });
        Ok(())
    }

    /// Asks the server to remove the protection of the username (answered
    /// with a [`ClientEvent::Notice`]).
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; nothing is sent.
    pub fn unregister(&mut self) -> Result<(), UsageError> {
        self.joined()?;
        self.ask(1, 0);
        self.transmits.push_back(ClientMessage::Unregister);
        Ok(())
    }

    /// An operator's request (kick, ban, unban, list bans), answered with
    /// a [`ClientEvent::Notice`].
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; [`UsageError::TargetTooLong`] for a
    /// target over [`MAX_TARGET_BYTES`] (no username or address is that
    /// long); [`UsageError::TextTooLong`] for a reason over
    /// [`Limits::max_text`]. Nothing is sent.
    pub fn operate(
        &mut self,
        action: OpAction,
        target: &str,
        reason: &str,
    ) -> Result<(), UsageError> {
        self.check_operate(target, reason)?;
        self.ask(1, 0);
        self.transmits.push_back(ClientMessage::Operate {
            action,
            target: target.to_string(),
            reason: reason.to_string(),
        });
        Ok(())
    }

    /// What [`operate`](Self::operate) would refuse, checked without
    /// sending (a driver that waits for the rate limit checks first).
    pub(crate) fn check_operate(&self, target: &str, reason: &str) -> Result<(), UsageError> {
        self.joined()?;
        if target.len() > MAX_TARGET_BYTES {
            return Err(UsageError::TargetTooLong {
                len: target.len(),
                max: MAX_TARGET_BYTES,
            });
        }
        self.check_text(reason)
    }

    /// What another run of the program needs to take this session back:
    /// `None` until a `Welcome` offered a resume (or when the last one
    /// offered none). Its first client id is [`SAVED_ID_LEASE`] past this
    /// session's next one: save again before this session sends that many
    /// more (a message sent after the save whose id the next run takes
    /// again would be acknowledged to it and delivered to nobody).
    #[must_use]
    pub fn saved(&self) -> Option<SavedSession> {
        self.resume.map(|(token, epoch)| SavedSession {
            token,
            epoch,
            last_seen: self.last_seen,
            next_client_id: self.next_client_id.saturating_add(SAVED_ID_LEASE),
        })
    }

    /// Says that the connection made after [`reconnect`](Self::reconnect)
    /// is to another server than the one the session was on (the next of
    /// a list): a resume it refuses as of another history is then said as
    /// such, not as that server's restart without its database.
    pub fn on_another_server(&mut self) {
        self.elsewhere = true;
    }

    /// Starts over on a new connection after the old one broke (or the
    /// server shut down): whatever was queued for the old one is dropped,
    /// its transfers fail with events (a download can be asked for again
    /// and continue from what was kept), and the first transmit is a
    /// `Hello` asking for the session back, with the token and epoch of
    /// the last `Welcome` and the newest id seen. The answer comes as a
    /// [`ClientEvent::Welcome`] followed by [`ClientEvent::Resumed`] or
    /// [`ClientEvent::ContinuityLost`]; then the chat messages the server
    /// had not acknowledged are sent again, in order.
    pub fn reconnect(&mut self, now: Instant) {
        self.elsewhere = false;
        self.tick(now);
        self.transmits.clear();
        let lost = "the connection was lost".to_string();
        let mut ids: Vec<TransferId> = self
            .incoming
            .keys()
            .chain(self.requested.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let error = TransferError::Cancelled {
                id,
                code: CancelCode::PEER_LEFT,
                reason: lost.clone(),
            };
            self.fail_incoming(id, error, false);
        }
        let mut pushes: Vec<TransferId> = self.outgoing.keys().copied().collect();
        pushes.sort_unstable();
        for id in pushes {
            self.outgoing.remove(&id);
            self.events.push_back(ClientEvent::PushFailed {
                id,
                code: CancelCode::PEER_LEFT,
                reason: lost.clone(),
            });
        }
        let mut offers: Vec<(TransferId, Offered)> = self.offers.drain().collect();
        offers.sort_unstable_by_key(|(id, _)| *id);
        for (id, offer) in offers {
            self.events.push_back(ClientEvent::OfferWithdrawn {
                id,
                from: offer.from,
                name: offer.name,
                reason: lost.clone(),
            });
        }
        self.incoming.clear();
        self.requested.clear();
        self.relayed.clear();
        self.resend.clear();
        self.names.clear();
        self.held_acks.clear();
        self.accepted.clear();
        self.credits.clear();
        self.pushes_ended.clear();
        self.last_heard = self.clock;
        self.ping = None;
        self.barrier = None;
        // Nothing more comes for what the old connection asked.
        self.answered = self.sent;
        self.lists.clear();
        self.listed = 0;
        self.accesses = 0;
        if let Some(text) = self.held_failure.take() {
            self.events.push_back(ClientEvent::Notice {
                code: NoticeCode::FAILED,
                text,
            });
        }
        self.state = State::Handshaking;
        let resume = self.resume.map(|(token, epoch)| ResumeRequest {
            token,
            last_seen: self.last_seen,
            epoch,
        });
        self.ended = None;
        self.reconnecting = Some(match self.resume {
            Some((_, epoch)) => Reconnect::Resume { epoch },
            None if self.quit_sent => Reconnect::AfterQuit,
            None => Reconnect::Fresh,
        });
        self.quit_sent = false;
        self.resume_refused = false;
        if let Some(auth) = self.auth_message() {
            self.transmits.push_back(auth);
        }
        self.transmits.push_back(ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: self.username.clone(),
            resume,
        });
    }

    /// True when the server refused the handshake of a resume with
    /// [`RefuseCode::NAME_TAKEN`]: the username is held by a session the
    /// token presented does not match, so this session is over (it
    /// expired while its client was away and someone took the name, the
    /// server ended it (a kick, a resume of it from another connection),
    /// or the token saved is not the session's). Asking again with the same
    /// token is refused the same way, and counts as a failed resume
    /// against the address; the [`ClientEvent::Refused`] says so in the
    /// client's words rather than the server's (which speak of the
    /// holder's session as someone else's).
    #[must_use]
    pub fn is_resume_refused(&self) -> bool {
        self.resume_refused
    }

    /// The newest log id seen: of a chat message, a join or a leave (not
    /// counting history).
    #[must_use]
    pub fn last_seen(&self) -> MessageId {
        self.last_seen
    }

    /// Chat messages sent that the server has not acknowledged yet.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// True for a live (not history) entry already seen: a replay that
    /// overlaps what was shown. Otherwise notes it as seen.
    fn seen_before(&mut self, id: MessageId) -> bool {
        if id <= self.last_seen {
            return true;
        }
        self.last_seen = id;
        false
    }

    fn acknowledged(&mut self, client_id: u64) {
        if let Some(i) = self.unacked.iter().position(|u| u.client_id == client_id) {
            if let Some(u) = self.unacked.remove(i) {
                self.unacked_bytes -= u.text.len();
            }
        }
    }

    fn send_unacked(&mut self) {
        self.resend = self.unacked.iter().cloned().collect();
        self.release_resends();
    }

    /// Sends what waits in [`resend`](Self::resend) as far as the rate
    /// limit allows now: a backlog sent again after a resume goes at the
    /// server's pace, not as a flood.
    fn release_resends(&mut self) {
        self.pacer.refill(self.clock);
        while let Some(u) = self.resend.front() {
            if self.pacer.ready_at(u.text.len()).is_some() {
                break;
            }
            let Some(u) = self.resend.pop_front() else {
                break;
            };
            self.ask(1, u.text.len());
            self.transmits.push_back(ClientMessage::Chat {
                client_id: u.client_id,
                to: u.to,
                kind: u.kind,
                text: u.text,
            });
        }
    }

    /// Chooses when download data is acknowledged to the server, which
    /// sends at most [`DOWNLOAD_WINDOW`](crate::DOWNLOAD_WINDOW) bytes
    /// beyond the last acknowledgement. By default (`false`) the session
    /// acknowledges data as it hands it out in
    /// [`ClientEvent::TransferData`]. With `true` the application calls
    /// [`stored`](Self::stored) once the data is on disk: a client that
    /// writes files on another thread then never holds more than the window
    /// in memory, and a slow disk slows the download, not the chat.
    pub fn set_manual_acks(&mut self, manual: bool) {
        self.manual_acks = manual;
    }

    /// Chooses whether the server's acknowledgement of each of our chat
    /// messages is handed out as [`ClientEvent::Acknowledged`] (by
    /// default, `false`, it is not: a program that shows its messages as
    /// sent at once has no use for it).
    pub fn set_report_acks(&mut self, report: bool) {
        self.report_acks = report;
    }

    /// Sets which pushes offered to us are accepted without asking: those
    /// of at most `max` bytes (by default
    /// [`DEFAULT_AUTO_ACCEPT_BYTES`](crate::DEFAULT_AUTO_ACCEPT_BYTES)),
    /// as long as the pushes accepted so within the last
    /// [`AUTO_ACCEPT_WINDOW`](crate::AUTO_ACCEPT_WINDOW) stay within
    /// [`AUTO_ACCEPT_PER_SENDER`](crate::AUTO_ACCEPT_PER_SENDER) times
    /// `max` from their sender and
    /// [`AUTO_ACCEPT_TOTAL`](crate::AUTO_ACCEPT_TOTAL) times from
    /// everyone; `None` asks for every one. Any other offer becomes a
    /// [`ClientEvent::PushOffered`], waiting for [`accept`](Self::accept)
    /// or [`decline`](Self::decline).
    pub fn set_auto_accept(&mut self, max: Option<u64>) {
        self.auto_accept = max;
    }

    /// Sets what makes two sender names one sender for the share of
    /// pushes accepted without asking ([`set_auto_accept`](Self::set_auto_accept)):
    /// names with the same key. The default, [`Username::key`], ignores
    /// case only; give the key the server holds names unique by (which
    /// also maps look-alike letters together), so that a sender cannot
    /// get a fresh share under a look-alike spelling of its name. The
    /// users ignored already ([`ignore`](Self::ignore)) are kept under
    /// the new key (one that names this session itself is dropped).
    pub fn set_name_key(&mut self, key: fn(&Username) -> String) {
        self.name_key = key;
        let own = key(&self.username);
        let ignored = std::mem::take(&mut self.ignored);
        self.ignored = ignored
            .into_values()
            .map(|user| (key(&user), user))
            .filter(|(k, _)| *k != own)
            .collect();
    }

    /// Ignores `user` from now on, as IRC clients' `/ignore` does: its
    /// chat (to everyone and private, live and replayed) is dropped
    /// without an event, and its file offers are declined without one
    /// (the sender is told only that the file was not accepted). Its
    /// joins and leaves are still events, and it still shows in `Who`
    /// answers. Names are compared by their key
    /// ([`set_name_key`](Self::set_name_key)), so that a look-alike
    /// spelling is the same user. Kept across
    /// [`reconnect`](Self::reconnect), not in [`SavedSession`].
    ///
    /// Returns false when `user` was ignored already.
    ///
    /// # Errors
    ///
    /// [`UsageError::IgnoreSelf`] for this session's own name.
    pub fn ignore(&mut self, user: &Username) -> Result<bool, UsageError> {
        let key = (self.name_key)(user);
        if key == (self.name_key)(&self.username) {
            return Err(UsageError::IgnoreSelf);
        }
        match self.ignored.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => Ok(false),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(user.clone());
                Ok(true)
            }
        }
    }

    /// Stops ignoring `user` (by its name's key); false when it was not
    /// ignored. What it said meanwhile is not shown again.
    pub fn unignore(&mut self, user: &Username) -> bool {
        self.ignored.remove(&(self.name_key)(user)).is_some()
    }

    /// The users ignored, as their names were given to
    /// [`ignore`](Self::ignore), by key.
    #[must_use]
    pub fn ignored(&self) -> Vec<Username> {
        self.ignored.values().cloned().collect()
    }

    /// Whether `user` is ignored ([`ignore`](Self::ignore)).
    #[must_use]
    pub fn is_ignored(&self, user: &Username) -> bool {
        !self.ignored.is_empty() && self.ignored.contains_key(&(self.name_key)(user))
    }

    /// The offers waiting for an answer, as (id, sender, file name, size),
    /// by id.
    #[must_use]
    pub fn pending_offers(&self) -> Vec<(TransferId, Username, FileName, u64)> {
        let mut offers: Vec<_> = self
            .offers
            .iter()
            .map(|(id, o)| (*id, o.from.clone(), o.name.clone(), o.size))
            .collect();
        offers.sort_by_key(|(id, ..)| *id);
        offers
    }

    /// Accepts the push offered as `id`: the server is told, and a
    /// [`ClientEvent::TransferStarted`] follows at once (open the file).
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; [`UsageError::UnknownOffer`] if no offer
    /// `id` is waiting (already answered, or withdrawn:
    /// [`ClientEvent::OfferWithdrawn`]). Nothing is sent.
    pub fn accept(&mut self, id: TransferId) -> Result<(), UsageError> {
        self.joined()?;
        let offer = self
            .offers
            .remove(&id)
            .ok_or(UsageError::UnknownOffer { id })?;
        self.start_push(id, offer);
        Ok(())
    }

    /// Declines the push offered as `id`. `reason` goes to the server in
    /// the `Cancel`, and no further: the sender learns only that the push
    /// was not accepted ([`ClientEvent::PushFailed`] with
    /// [`CancelCode::DECLINED`], naming the receiver of a push to one
    /// user), never a receiver's own words.
    ///
    /// # Errors
    ///
    /// As for [`accept`](Self::accept): [`UsageError::NotConnected`] or
    /// [`UsageError::UnknownOffer`], and nothing is sent.
    pub fn decline(&mut self, id: TransferId, reason: &str) -> Result<(), UsageError> {
        self.joined()?;
        self.offers
            .remove(&id)
            .ok_or(UsageError::UnknownOffer { id })?;
        // The answer to an offer costs no rate budget on the server.
        self.ask(0, 0);
        self.transmits.push_back(ClientMessage::Cancel(FileCancel {
            id: self.wire_id(id),
            code: CancelCode::DECLINED,
            reason: reason.to_string(),
        }));
        self.relayed.remove(&id);
        Ok(())
    }

    fn start_push(&mut self, id: TransferId, offer: Offered) {
        // The answer to an offer costs no rate budget on the server.
        self.ask(0, 0);
        self.transmits.push_back(ClientMessage::Accept {
            id: self.wire_id(id),
        });
        self.incoming.insert(id, Incoming::new(id, offer.size));
        self.names.insert(id, offer.name.clone());
        self.events.push_back(ClientEvent::TransferStarted {
            id,
            name: offer.name,
            size: offer.size,
            offset: 0,
            origin: Origin::Push { from: offer.from },
        });
    }

    /// With [`set_manual_acks`](Self::set_manual_acks): download or push
    /// `id` is stored up to byte `offset` (from byte 0). Ignored for
    /// finished or unknown transfers.
    ///
    /// The `Ack` goes out once [`ACK_STEP`](crate::ACK_STEP) more is
    /// stored than was last acknowledged; until then it is held back, and
    /// [`caught_up`](Self::caught_up) sends it. The server can always send
    /// the rest of its window meanwhile, so a download never stalls on a
    /// held-back acknowledgement.
    pub fn stored(&mut self, id: TransferId, offset: u64) {
        if !self.incoming.contains_key(&id) {
            self.held_acks.remove(&id);
            return;
        }
        let held = self.held_acks.entry(id).or_default();
        held.stored = held.stored.max(offset);
        if held.stored >= held.acked.saturating_add(crate::ACK_STEP) {
            held.acked = held.stored;
            let id = self.wire_id(id);
            self.transmits.push_back(ClientMessage::Ack { id, offset });
        }
    }

    /// Sends the acknowledgements [`stored`](Self::stored) holds back. An
    /// application calls it when it has nothing more to write for now, so
    /// the server need not wait for the next step.
    pub fn caught_up(&mut self) {
        let incoming = &self.incoming;
        self.held_acks.retain(|id, _| incoming.contains_key(id));
        let relayed = &self.relayed;
        for (&id, held) in &mut self.held_acks {
            if held.stored > held.acked {
                held.acked = held.stored;
                self.transmits.push_back(ClientMessage::Ack {
                    id: relayed.get(&id).copied().unwrap_or(id),
                    offset: held.stored,
                });
            }
        }
    }

    /// When the server was last heard from (the `now` of the latest
    /// [`handle_message`](Self::handle_message)).
    #[must_use]
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// The username asked for.
    #[must_use]
    pub fn username(&self) -> &Username {
        &self.username
    }

    /// True once welcomed and until closed.
    #[must_use]
    pub fn is_joined(&self) -> bool {
        self.state == State::Joined
    }

    /// True once refused, timed out, shut down or quit.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmits.pop_front()
    }

    /// The next event to show.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = match (self.state, self.ping) {
            (State::Closed, _) => return None,
            (_, Some(sent)) => after(sent, self.limits.keepalive_timeout),
            (_, None) => after(self.last_heard, self.limits.keepalive_interval),
        };
        // Messages waiting to be sent again go when the rate allows.
        let resend = self
            .resend
            .front()
            .filter(|_| self.state == State::Joined)
            .map(|u| self.pacer.ready_at(u.text.len()).unwrap_or(self.clock));
        let pong = self.pong_due.and(self.last_pong).map(|at| at + PONG_GAP);
        Some(
            [resend, pong]
                .into_iter()
                .flatten()
                .fold(keepalive, Instant::min),
        )
    }

    /// Answers the server's `Ping` `nonce`: at once, unless a `Pong` went
    /// less than [`PONG_GAP`] ago; then the newest `Ping` of the gap is
    /// answered at its end (a server awaits the answer to its last one).
    /// A server pings after its keepalive interval of silence: one that
    /// sends pings back to back (and perhaps reads none of the answers)
    /// gets ten answers a second, not one per ping.
    fn answer_ping(&mut self, nonce: u64) {
        match self.last_pong {
            Some(at) if self.clock.saturating_duration_since(at) < PONG_GAP => {
                self.pong_due = Some(nonce);
            }
            _ => {
                self.last_pong = Some(self.clock);
                self.transmits.push_back(ClientMessage::Pong(nonce));
            }
        }
    }

    /// Sends the `Pong` held back by [`answer_ping`](Self::answer_ping)
    /// once its gap has passed.
    fn send_due_pong(&mut self) {
        let due = self.last_pong.map(|at| at + PONG_GAP);
        if self.pong_due.is_some() && due.is_none_or(|due| self.clock >= due) {
            let nonce = self.pong_due.take().unwrap_or_default();
            self.last_pong = Some(self.clock);
            self.transmits.push_back(ClientMessage::Pong(nonce));
        }
    }

    /// Moves the session's clock to `now` (never back) and refills the
    /// rate bucket to it.
    fn tick(&mut self, now: Instant) {
        if now > self.clock {
            self.clock = now;
        }
        self.pacer.refill(self.clock);
    }

    /// Sends a `Ping` of the next number, charged as a request; its number.
    fn send_ping(&mut self) -> u64 {
        let n = self.next_ping;
        self.next_ping += 1;
        self.charge(1, 0);
        self.transmits.push_back(ClientMessage::Ping(n));
        n
    }

    /// [`charge`](Self::charge) for a request of the user's, whose answer
    /// [`is_answered`](Self::is_answered) waits for.
    fn ask(&mut self, messages: usize, bytes: usize) {
        self.sent += 1;
        self.charge(messages, bytes);
    }

    /// Charges the rate bucket with a request of `messages` messages and
    /// `bytes` bytes of text, at the session's latest time.
    fn charge(&mut self, messages: usize, bytes: usize) {
        self.pacer.refill(self.clock);
        self.pacer.charge(messages as f64, bytes);
    }

    /// When a request may be sent without going over the rate the server
    /// announced: `None` if now, else the time to wait for. `text_len` is
    /// the length of a chat text (a chat or an action), 0 for any other
    /// request (`who`, `list_files`, `download`, `offer`…).
    ///
    /// The session keeps a token bucket over the announced limits (at 90 %
    /// of the rates, so the server, which sees the frames later and in
    /// clumps, never finds the client over them), and charges it with what
    /// each request costs on the server: a chat one message and its text's
    /// bytes, a `Who` or `ListFiles` one more message per 100 names in its
    /// answer, the other requests one message. A frontend that waits until
    /// this time before each request it sends is never slowed for long
    /// nor disconnected as a flood, whatever it is given to send. Before
    /// the welcome, and when the server announced no rate limit, always `None`.
    pub fn next_send_at(&mut self, now: Instant, text_len: usize) -> Option<Instant> {
        self.tick(now);
        self.pacer.ready_at(text_len)
    }

    /// Whether a chat of `text_len` bytes sent now would push the oldest
    /// message not yet acknowledged out of the window kept for resends
    /// ([`Limits::max_unacked`], `max_unacked_bytes`), to be given up as
    /// [`ClientEvent::NotSent`]. A frontend whose acknowledgements are read
    /// while it waits (another thread reads the connection) waits until
    /// this is false: a server that reads more slowly than its announced
    /// rate (the connections of an address share one) then slows the
    /// frontend instead of having messages given up that arrive after all.
    #[must_use]
    pub fn window_full(&self, text_len: usize) -> bool {
        !self.unacked.is_empty()
            && (self.unacked.len() >= self.limits.max_unacked
                || self.unacked_bytes + text_len > self.limits.max_unacked_bytes)
    }

    /// Asks the server to confirm that it has handled every request sent
    /// so far (a `Ping`: the server handles a client's frames in order and
    /// answers each before the next). [`is_settled`](Self::is_settled)
    /// turns true once the answers have all arrived. For a frontend that is
    /// leaving and wants what it asked for first (a script's `/who`).
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; nothing is sent and there is nothing to wait
    /// for.
    pub fn settle(&mut self) -> Result<(), UsageError> {
        self.joined()?;
        let n = self.send_ping();
        self.barrier = Some(n);
        self.barrier_covers = self.sent;
        Ok(())
    }

    /// True when the server has answered every request sent so far, as
    /// far as the session can tell: the answer to a [`settle`](Self::settle)
    /// made after the last request arrived, and every file list asked for
    /// is complete. Downloads and pushes still running do not count. For
    /// a frontend that shows something of its own only after the answers
    /// to what was asked before it (a script's `/help` after its `/who`):
    /// when false, [`settle`](Self::settle) and wait for it to turn true.
    #[must_use]
    pub fn is_answered(&self) -> bool {
        self.answered >= self.sent && self.lists.is_empty()
    }

    /// True while a push of ours is offered and its receivers have not all
    /// answered: the server's answer ([`ClientEvent::PushAccepted`], or a
    /// cancel) may take as long as its offer timeout (120 s by default),
    /// since a person decides. A program waiting for answers does not take
    /// that silence for a dead server (the keepalive finds one).
    #[must_use]
    pub fn awaits_push_answer(&self) -> bool {
        self.outgoing
            .keys()
            .any(|id| !self.accepted.contains(id) && !self.pushes_ended.contains(id))
    }

    /// True when nothing asked for is outstanding: the answer to
    /// [`settle`](Self::settle) arrived (if it was called), every file list
    /// asked for is complete, and no download or push of ours is running.
    /// Pushes from others do not count.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.barrier.is_none()
            && self.lists.is_empty()
            && self.requested.is_empty()
            && self.outgoing.is_empty()
            && self.incoming.keys().all(|id| self.relayed.contains_key(id))
    }

    /// Runs the clock: pings a silent server, and gives up on one that does not answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Joined {
            self.release_resends();
        }
        self.send_due_pong();
        match self.ping {
            Some(sent) if now.saturating_duration_since(sent) >= self.limits.keepalive_timeout => {
                self.state = State::Closed;
                self.events.push_back(ClientEvent::TimedOut);
            }
            None if now.saturating_duration_since(self.last_heard)
                >= self.limits.keepalive_interval =>
            {
                self.ping = Some(now);
                self.send_ping();
            }
            _ => {}
        }
    }

    pub(crate) fn joined(&self) -> Result<(), UsageError> {
        if self.state == State::Joined {
            Ok(())
        } else {
            Err(UsageError::NotConnected)
        }
    }

    /// Sends a chat message to everyone else or to one user. Any text up
    /// to [`Limits::max_text`] bytes goes, the empty text included (the
    /// server routes it); a frontend that wants to skip blank lines does so
    /// itself.
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; [`UsageError::TextTooLong`] above
    /// [`Limits::max_text`] (split the text, or tell the user). Nothing is
    /// sent.
    ///
    /// Returns the message's client id: a [`ClientEvent::Error`] or
    /// [`ClientEvent::NotSent`] about it carries the same.
    pub fn send_chat(&mut self, to: Recipient, text: &str) -> Result<u64, UsageError> {
        self.send_kind(to, ChatKind::Text, text)
    }

    /// Sends an action (`/me waves`: shown as `* alice waves`) to everyone
    /// else or to one user.
    ///
    /// # Errors
    ///
    /// As for [`send_chat`](Self::send_chat): [`UsageError::NotConnected`]
    /// or [`UsageError::TextTooLong`], and nothing is sent. Returns the
    /// message's client id.
    pub fn send_action(&mut self, to: Recipient, text: &str) -> Result<u64, UsageError> {
        self.send_kind(to, ChatKind::Action, text)
    }

    /// The largest frame to read from the server: [`Limits::max_frame`],
    /// raised to the `max_frame` the server announced in its last
    /// `Welcome` (a server that takes larger messages sends them too), up
    /// to [`MAX_CLIENT_FRAME`](crate::MAX_CLIENT_FRAME). Give it to the
    /// decoder once welcomed ([`Decoder::set_max_frame`](crate::Decoder::set_max_frame)).
    pub fn frame_limit(&self) -> u32 {
        let announced = self.announced.map_or(0, |a| a.max_frame);
        self.limits
            .max_frame
            .max(announced.min(crate::MAX_CLIENT_FRAME))
    }

    /// A text the server takes: at most what it announced in its last
    /// `Welcome` (more or less than [`Limits::max_text`]: the server is
    /// the one that knows, and its other clients read what it relays up
    /// to its frame limit), within [`MAX_CLIENT_FRAME`](crate::MAX_CLIENT_FRAME);
    /// before any `Welcome`, [`Limits::max_text`].
    fn check_text(&self, text: &str) -> Result<(), UsageError> {
        let most = crate::MAX_CLIENT_FRAME as usize - crate::CHAT_FRAME_OVERHEAD;
        let max = self.announced.map_or(self.limits.max_text, |a| {
            usize::try_from(a.max_text).map_or(most, |m| m.min(most))
        });
        if text.len() > max {
            return Err(UsageError::TextTooLong {
                len: text.len(),
                max,
            });
        }
        Ok(())
    }

    /// What [`send_chat`](Self::send_chat) and
    /// [`send_action`](Self::send_action) would refuse, checked without
    /// sending.
    pub(crate) fn check_chat(&self, text: &str) -> Result<(), UsageError> {
        self.joined()?;
        self.check_text(text)
    }

    fn send_kind(&mut self, to: Recipient, kind: ChatKind, text: &str) -> Result<u64, UsageError> {
        self.check_chat(text)?;
        let client_id = self.next_client_id;
        self.next_client_id += 1;
        let message = Unacked {
            client_id,
            to: to.clone(),
            kind,
            text: text.to_string(),
        };
        // Behind messages still waiting to be sent again: in order, at the
        // rate's pace.
        let behind = !self.resend.is_empty();
        if behind {
            self.resend.push_back(message.clone());
        } else {
            self.ask(1, text.len());
        }
        self.unacked.push_back(message);
        self.unacked_bytes += text.len();
        while self.unacked.len() > self.limits.max_unacked
            || (self.unacked_bytes > self.limits.max_unacked_bytes && self.unacked.len() > 1)
        {
            let Some(old) = self.unacked.pop_front() else {
                break;
            };
            self.unacked_bytes -= old.text.len();
            // Given up: not sent again either.
            self.resend.retain(|r| r.client_id != old.client_id);
            self.events.push_back(ClientEvent::NotSent {
                client_id: old.client_id,
                to: old.to,
                kind: old.kind,
                text: old.text,
            });
        }
        if !behind {
            self.transmits.push_back(ClientMessage::Chat {
                client_id,
                to,
                kind,
                text: text.to_string(),
            });
        }
        Ok(client_id)
    }

    /// Asks who is online.
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; nothing is sent.
    pub fn who(&mut self) -> Result<(), UsageError> {
        self.joined()?;
        self.ask(1, 0);
        self.transmits.push_back(ClientMessage::Who);
        Ok(())
    }

    /// Asks for access to the shared folder (its file count).
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; nothing is sent.
    pub fn files_access(&mut self) -> Result<(), UsageError> {
        self.joined()?;
        self.ask(1, 0);
        self.accesses += 1;
        self.transmits.push_back(ClientMessage::FilesAccess);
        Ok(())
    }

    /// Asks for the shared-file list.
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; nothing is sent.
    pub fn list_files(&mut self) -> Result<(), UsageError> {
        self.ask_list(false)
    }

    /// Asks for the shared-file list quietly: it comes as
    /// [`ClientEvent::FileNames`], for a frontend to keep without showing
    /// it (the names a completion offers before the user listed them).
    ///
    /// # Errors
    ///
    /// As [`list_files`](Self::list_files).
    pub fn fetch_file_names(&mut self) -> Result<(), UsageError> {
        self.ask_list(true)
    }

    /// The message after a held `Notice{FAILED}` (its `text`): when it is
    /// the answer of an empty folder to a shared-folder request, the event
    /// that stands for both; otherwise the notice goes out as it came, and
    /// `msg` is handled as usual.
    fn files_unavailable(&mut self, msg: &ServerMessage, text: String) -> Option<ClientEvent> {
        match msg {
            ServerMessage::FilesAccess { count: 0 } if self.accesses > 0 => {
                self.accesses -= 1;
                return Some(ClientEvent::FilesUnavailable {
                    request: FilesRequest::Access,
                    text,
                });
            }
            ServerMessage::FileList(part)
                if part.last && part.files.is_empty() && self.listed == 0 =>
            {
                match self.lists.pop_front() {
                    Some(true) => return Some(ClientEvent::FileNames(part.clone())),
                    Some(false) => {
                        return Some(ClientEvent::FilesUnavailable {
                            request: FilesRequest::List,
                            text,
                        })
                    }
                    None => {}
                }
            }
            _ => {}
        }
        self.events.push_back(ClientEvent::Notice {
            code: NoticeCode::FAILED,
            text,
        });
        None
    }

    fn ask_list(&mut self, quiet: bool) -> Result<(), UsageError> {
        self.joined()?;
        self.ask(1, 0);
        self.lists.push_back(quiet);
        self.transmits.push_back(ClientMessage::ListFiles);
        Ok(())
    }

    /// True while a download of `name` is asked for or running: asking
    /// for it again would write the same file twice.
    #[must_use]
    pub fn is_downloading(&self, name: &FileName) -> bool {
        self.requested.values().any(|r| &r.name == name)
            || self
                .names
                .iter()
                .any(|(id, n)| n == name && !self.relayed.contains_key(id))
    }

    /// Pushes from others: offered to us and not answered yet, or being
    /// received. They have a bound of their own ([`Limits::max_transfers`]
    /// again), apart from our own transfers, so that offers others make
    /// (and may never feed) cannot keep our own downloads and pushes out.
    fn pushes_to_us(&self) -> usize {
        self.offers.len()
            + self
                .incoming
                .keys()
                .filter(|id| self.relayed.contains_key(id))
                .count()
    }

    /// Our own downloads and pushes: what the server counts against its
    /// `max_transfers` (pushes from others do not count there).
    fn own_transfers(&self) -> usize {
        self.requested.len()
            + self
                .incoming
                .keys()
                .filter(|id| !self.relayed.contains_key(id))
                .count()
            + self.outgoing.len()
    }

    fn new_id(&mut self) -> Result<TransferId, UsageError> {
        self.check_transfer_room()?;
        Ok(self.next_number())
    }

    /// The next id of the session's counter (top bit clear).
    fn next_number(&mut self) -> TransferId {
        let id = TransferId(self.next_id & !TransferId::SERVER_BIT);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// The server's id of transfer `id` of ours: the same but for pushes
    /// to us ([`relayed`](Self::relayed)).
    fn wire_id(&self, id: TransferId) -> TransferId {
        self.relayed.get(&id).copied().unwrap_or(id)
    }

    /// The session's id of the transfer the server calls `wire`; `None`
    /// when that names none of ours (a server-chosen id that is not, or
    /// no longer, a push to us; or a session's id of one, which the
    /// server never uses).
    fn local_id(&self, wire: TransferId) -> Option<TransferId> {
        if wire.is_server_chosen() {
            self.relayed
                .iter()
                .find(|(_, w)| **w == wire)
                .map(|(local, _)| *local)
        } else {
            (!self.relayed.contains_key(&wire)).then_some(wire)
        }
    }

    /// True when a download or push of ours may start now: fewer of ours
    /// than [`Limits::max_transfers`] (and than the server announced) are
    /// asked for, running or waiting for their receivers. When it is
    /// false, [`download`](Self::download) and [`offer`](Self::offer)
    /// refuse with [`UsageError::TooManyTransfers`]; a program with more to
    /// start (a script's list of downloads) waits for one to end instead.
    /// Pushes from others to us are not counted.
    #[must_use]
    pub fn has_transfer_room(&self) -> bool {
        self.check_transfer_room().is_ok()
    }

    /// [`UsageError::TooManyTransfers`] when no transfer may start now.
    fn check_transfer_room(&self) -> Result<(), UsageError> {
        if self.own_transfers() >= self.limits.max_transfers {
            return Err(UsageError::TooManyTransfers {
                max: self.limits.max_transfers,
            });
        }
        if let Some(max) = self.announced.map(|a| a.max_transfers as usize) {
            if self.own_transfers() >= max {
                return Err(UsageError::TooManyTransfers { max });
            }
        }
        Ok(())
    }

    /// What [`download`](Self::download) would refuse, checked without
    /// sending.
    pub(crate) fn check_download(&self) -> Result<(), UsageError> {
        self.joined()?;
        self.check_transfer_room()
    }

    /// What [`offer`](Self::offer) would refuse, checked without sending.
    pub(crate) fn check_offer(&self, size: u64) -> Result<(), UsageError> {
        self.joined()?;
        let max = self
            .limits
            .max_push_size
            .min(self.announced.map_or(u64::MAX, |a| a.max_push_size));
        if size > max {
            return Err(UsageError::FileTooLarge { size, max });
        }
        self.check_transfer_room()
    }

    /// Asks for a shared file. `resume` describes a partial copy already on
    /// disk, to continue from ([`ResumeState::from_bytes`] of its bytes);
    /// `None` or an empty state downloads from byte 0.
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; [`UsageError::TooManyTransfers`] while
    /// [`Limits::max_transfers`] downloads and pushes of ours are running or waiting
    /// (ask again when one ends); [`UsageError::AlreadyDownloading`] while
    /// a download of `name` is asked for or running
    /// ([`is_downloading`](Self::is_downloading)). Nothing is sent.
    pub fn download(
        &mut self,
        name: FileName,
        resume: Option<ResumeState>,
    ) -> Result<TransferId, UsageError> {
        self.check_download()?;
        if self.is_downloading(&name) {
            return Err(UsageError::AlreadyDownloading { name });
        }
        let id = self.new_id()?;
        let resume = resume.filter(|r| !r.is_empty());
        let offset = resume.as_ref().map_or(0, ResumeState::len);
        self.ask(1, 0);
        self.transmits.push_back(ClientMessage::Download {
            id,
            name: name.clone(),
            offset,
        });
        self.requested.insert(id, PendingDownload { name, resume });
        Ok(id)
    }

    /// Announces a push of `size` bytes to everyone else or one user. Once
    /// the receivers accepted it ([`ClientEvent::PushAccepted`]), hand the
    /// bytes to [`push_chunk`](Self::push_chunk) and finish with
    /// [`push_end`](Self::push_end).
    ///
    /// # Errors
    ///
    /// [`UsageError::NotConnected`] before the [`ClientEvent::Welcome`] or
    /// once the session is closed; [`UsageError::FileTooLarge`] above
    /// [`Limits::max_push_size`] (tell the user);
    /// [`UsageError::TooManyTransfers`] while
    /// [`Limits::max_transfers`] downloads and pushes of ours are running or waiting
    /// (pushes from others to us have a bound of their own).
    /// Nothing is sent.
    pub fn offer(
        &mut self,
        name: FileName,
        size: u64,
        to: Recipient,
    ) -> Result<TransferId, UsageError> {
        self.check_offer(size)?;
        let id = self.new_id()?;
        self.ask(1, 0);
        self.transmits
            .push_back(ClientMessage::Offer { id, name, size, to });
        self.outgoing.insert(id, Outgoing::new(id, size));
        Ok(id)
    }

    /// Queues the next bytes of a push (at most
    /// [`chunk_limit`](Self::chunk_limit) each).
    ///
    /// # Errors
    ///
    /// Nothing is queued, on [`UsageError::UnknownTransfer`] if `id` is not a
    /// push of ours that is running (it ended, failed or was cancelled: stop
    /// reading its file), [`UsageError::NotAccepted`] before its
    /// [`ClientEvent::PushAccepted`] (keep the data and send it then),
    /// [`UsageError::ChunkTooLarge`] above [`chunk_limit`](Self::chunk_limit)
    /// (split it), [`UsageError::PastCredit`] if it would end past what the
    /// server lets the push send ([`push_room`](Self::push_room): keep the
    /// data and send it after the next [`ClientEvent::PushCredit`]),
    /// [`UsageError::EmptyChunk`] if `data` is empty (the
    /// protocol has no empty chunk), or [`UsageError::PushOverrun`] if
    /// `data` goes past the size offered (the file changed since: cancel
    /// the push).
    pub fn push_chunk(&mut self, id: TransferId, data: Vec<u8>) -> Result<(), UsageError> {
        let max = self.chunk_limit();
        let out = self
            .outgoing
            .get_mut(&id)
            .filter(|_| !self.pushes_ended.contains(&id))
            .ok_or(UsageError::UnknownTransfer { id })?;
        if !self.accepted.contains(&id) {
            return Err(UsageError::NotAccepted { id });
        }
        if data.len() > max {
            return Err(UsageError::ChunkTooLarge {
                len: data.len(),
                max,
            });
        }
        let credit = self.credits.get(&id).copied().unwrap_or(0);
        let end = out.offset().saturating_add(data.len() as u64);
        if end > credit && end <= out.size() {
            return Err(UsageError::PastCredit { id, end, credit });
        }
        let chunk = out.next_chunk(data)?;
        self.transmits.push_back(ClientMessage::Chunk(chunk));
        Ok(())
    }

    /// How many more bytes of push `id` of ours may be sent now: up to
    /// the server's last credit ([`ClientEvent::PushCredit`]), and no
    /// more than is left of the file. 0 for a push not accepted yet, ended,
    /// or unknown: wait for the next [`ClientEvent::PushCredit`] (reading
    /// the server's messages meanwhile), then send at most this much.
    #[must_use]
    pub fn push_room(&self, id: TransferId) -> u64 {
        let Some(out) = self
            .outgoing
            .get(&id)
            .filter(|_| self.accepted.contains(&id) && !self.pushes_ended.contains(&id))
        else {
            return 0;
        };
        let credit = self.credits.get(&id).copied().unwrap_or(0);
        credit.min(out.size()).saturating_sub(out.offset())
    }

    /// The largest chunk of a push: [`Limits::chunk_size`], or less if
    /// the server's frame limit leaves less room.
    #[must_use]
    pub fn chunk_limit(&self) -> usize {
        let room = self.announced.map_or(usize::MAX, |a| {
            (a.max_frame as usize).saturating_sub(crate::limits::CHUNK_FRAME_OVERHEAD)
        });
        self.limits.chunk_size.min(room)
    }

    /// Queues the end of a push once all its bytes went.
    ///
    /// # Errors
    ///
    /// Nothing is queued, on [`UsageError::UnknownTransfer`] or
    /// [`UsageError::NotAccepted`] as for [`push_chunk`](Self::push_chunk), or
    /// [`UsageError::PushShort`] while bytes of the size offered are still
    /// unsent (the file shrank since: cancel the push).
    pub fn push_end(&mut self, id: TransferId) -> Result<(), UsageError> {
        let out = self
            .outgoing
            .get(&id)
            .filter(|_| !self.pushes_ended.contains(&id))
            .ok_or(UsageError::UnknownTransfer { id })?;
        if !self.accepted.contains(&id) {
            return Err(UsageError::NotAccepted { id });
        }
        let end = out.finish().ok_or(UsageError::PushShort {
            id,
            sent: out.offset(),
            size: out.size(),
        })?;
        self.transmits.push_back(ClientMessage::End(end));
        self.pushes_ended.insert(id);
        Ok(())
    }

    /// Gives up a push of ours whose file changed while it was being sent
    /// (see [`SentFile::check_before_end`](crate::SentFile::check_before_end)),
    /// instead of its `End`: `Cancel{IO}` with the error's words, which the
    /// server passes on to the receivers.
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownTransfer`] if `id` is not a push of ours that
    /// is running. Nothing is sent.
    pub fn push_changed(
        &mut self,
        id: TransferId,
        error: &crate::DownloadError,
    ) -> Result<(), UsageError> {
        if !self.outgoing.contains_key(&id) || self.pushes_ended.contains(&id) {
            return Err(UsageError::UnknownTransfer { id });
        }
        self.cancel_with(id, CancelCode::IO, &error.to_string())
    }

    /// Gives up a transfer (a download, an incoming push, or our push).
    /// An offer waiting for an answer is declined.
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownTransfer`] if no transfer or offer `id` is known
    /// (it already ended: nothing to do); for an offer, what
    /// [`decline`](Self::decline) returns. Nothing is sent.
    pub fn cancel(&mut self, id: TransferId, reason: &str) -> Result<(), UsageError> {
        if self.offers.contains_key(&id) {
            return self.decline(id, reason);
        }
        self.cancel_with(id, CancelCode::CANCELLED, reason)
    }

    /// Gives up a file coming in (a download, or a push to us) that this
    /// side could not store (its disk is full, its folder cannot be
    /// written, the file was changed on disk by another program): the
    /// other side is told `IO` and that the receiver could not store the
    /// file, never the local error, which may name this machine's paths.
    /// A pusher is told so rather than that the receiver cancelled.
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownTransfer`] if no such transfer is known (it
    /// already ended: nothing to do). Nothing is sent.
    pub fn cannot_store(&mut self, id: TransferId) -> Result<(), UsageError> {
        if self.offers.contains_key(&id) {
            return self.decline(id, CANNOT_STORE);
        }
        self.cancel_with(id, CancelCode::IO, CANNOT_STORE)
    }

    fn cancel_with(
        &mut self,
        id: TransferId,
        code: CancelCode,
        reason: &str,
    ) -> Result<(), UsageError> {
        self.names.remove(&id);
        self.accepted.remove(&id);
        self.credits.remove(&id);
        self.pushes_ended.remove(&id);
        let wire = self.wire_id(id);
        self.relayed.remove(&id);
        let known = self.requested.remove(&id).is_some()
            | self.incoming.remove(&id).is_some()
            | self.outgoing.remove(&id).is_some();
        if !known {
            return Err(UsageError::UnknownTransfer { id });
        }
        self.ask(1, 0);
        self.transmits.push_back(ClientMessage::Cancel(FileCancel {
            id: wire,
            code,
            reason: reason.to_string(),
        }));
        Ok(())
    }

    /// Says goodbye, with a parting text the others see (may be empty); the
    /// session is closed (the caller closes the connection after sending
    /// what is queued), on the server too: [`saved`](Self::saved) is `None`
    /// from then on. The server lets go of the name when it reads the
    /// goodbye, and then closes its end: a program that connects again
    /// under the name at once waits for that close first (as
    /// `blocking::Client::quit` does), or its new `Hello` may be read first
    /// and refused as taken.
    pub fn quit(&mut self, reason: &str) {
        if self.state == State::Joined {
            self.transmits.push_back(ClientMessage::Quit {
                reason: reason.to_string(),
            });
        }
        self.state = State::Closed;
        // A quit ends the session on the server: nothing is left to resume.
        self.quit_sent = self.quit_sent || self.resume.is_some();
        self.resume = None;
    }

    /// True when events wait to be taken with [`poll_event`](Self::poll_event).
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// True while a file comes in (a download, or a push accepted): a
    /// frontend that reads on without handing out its events lets the
    /// server send on past what was handed out.
    #[must_use]
    pub fn is_receiving(&self) -> bool {
        !self.incoming.is_empty()
    }

    fn fail_incoming(&mut self, id: TransferId, error: TransferError, tell_server: bool) {
        self.incoming.remove(&id);
        let wire = self.wire_id(id);
        self.relayed.remove(&id);
        let requested = self.requested.remove(&id).map(|r| r.name);
        let Some(name) = self.names.remove(&id).or(requested) else {
            return;
        };
        if tell_server {
            let code = match error {
                TransferError::FileCrcMismatch { .. } | TransferError::ShortFile { .. } => {
                    CancelCode::CHECKSUM_MISMATCH
                }
                TransferError::TooLarge { .. } => CancelCode::TOO_LARGE,
                _ => CancelCode::BAD_CHUNK,
            };
            self.charge(1, 0);
            self.transmits.push_back(ClientMessage::Cancel(FileCancel {
                id: wire,
                code,
                reason: error.to_string(),
            }));
        }
        self.events
            .push_back(ClientEvent::TransferFailed { id, name, error });
    }

    /// Bytes of a frame not yet whole arrived from the server at `now`: it
    /// is alive, so it is not pinged or timed out while a long frame comes
    /// in on a slow link (its answer to a ping would wait behind it). Call
    /// now and then while such a frame arrives (once a second is enough).
    pub fn handle_bytes(&mut self, now: Instant) {
        self.tick(now);
        self.last_heard = now;
        self.ping = None;
    }

    /// A decoded message from the server, received at `now`.
    pub fn handle_message(&mut self, msg: ServerMessage, now: Instant) {
        self.tick(now);
        self.last_heard = now;
        self.ping = None;
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Handshaking {
            match msg {
                ServerMessage::Welcome {
                    username,
                    text,
                    limits,
                    token,
                    epoch,
                    grace_secs,
                    last_id,
                    resumed,
                    ..
                } => {
                    self.state = State::Joined;
                    self.closed_by = None;
                    let from_save = std::mem::take(&mut self.from_save);
                    self.username = username.clone();
                    self.pacer.start(&limits, self.clock);
                    self.announced = Some(limits);
                    self.resume = (!token.is_none() && grace_secs > 0).then_some((token, epoch));
                    self.events.push_back(ClientEvent::Welcome {
                        username,
                        text,
                        limits,
                    });
                    let asked = self.reconnecting.take();
                    let elsewhere = std::mem::take(&mut self.elsewhere);
                    let was_resumed = resumed.is_some();
                    // Ids go on within one epoch: a fresh session of the
                    // epoch this run saw is sent history it showed already.
                    self.shown_through = match asked {
                        Some(Reconnect::Resume { epoch: old })
                            if old == epoch && !from_save && !was_resumed =>
                        {
                            self.last_seen.min(last_id)
                        }
                        _ => MessageId(0),
                    };
                    if let Some(reason) = self.quit_on_resume.take() {
                        if was_resumed {
                            // Its first frame spends the token presented.
                            self.quit(&reason);
                            return;
                        }
                        // Already a fresh session: nothing to say of it.
                        self.ended = None;
                        self.last_seen = last_id;
                        self.send_unacked();
                        return;
                    }
                    match (resumed, asked) {
                        (Some(r), _) => {
                            // What was missed follows, after `last_seen`.
                            // One past the server's newest id (a saved
                            // session damaged or edited) was never seen:
                            // kept, it would have every entry after it
                            // taken for one shown already, and dropped.
                            // Nothing at or below `last_id` comes live.
                            self.last_seen = self.last_seen.min(last_id);
                            self.events.push_back(ClientEvent::Resumed {
                                dropped: r.dropped,
                                through: last_id,
                            });
                        }
                        (None, Some(asked)) => {
                            self.last_seen = last_id;
                            let reason = match (asked, self.ended.take()) {
                                // Kicked while away, as the others were shown.
                                (Reconnect::Resume { .. }, Some(why)) => why,
                                (Reconnect::Resume { epoch: old }, None)
                                    if old != epoch && from_save =>
                                {
                                    "the saved session was not accepted: the server's history is not the one it was saved against (the server restarted without its database, or the session file is not this server's)"
                                        .to_string()
                                }
                                (Reconnect::Resume { epoch: old }, None)
                                    if old != epoch && elsewhere =>
                                {
                                    "history lost (this server does not share the history of the one before)"
                                        .to_string()
                                }
                                (Reconnect::Resume { epoch: old }, None) if old != epoch => {
                                    "history lost (the server restarted without its database)"
                                        .to_string()
                                }
                                (Reconnect::Resume { .. }, None) => "session expired".to_string(),
                                (Reconnect::Fresh, _) => "the server offers no resume".to_string(),
                                (Reconnect::AfterQuit, _) => {
                                    "the session before was ended with quit".to_string()
                                }
                            };
                            self.events
                                .push_back(ClientEvent::ContinuityLost { reason });
                        }
                        (None, None) => self.last_seen = last_id,
                    }
                    self.send_unacked();
                    if was_resumed && self.transmits.is_empty() {
                        // The first frame after a resume spends the token
                        // just presented (PROTOCOL.md §15): at once, not
                        // at the next keepalive, up to 30 s later.
                        self.send_ping();
                    }
                }
                ServerMessage::Refused { code, reason, .. } => {
                    self.state = State::Closed;
                    let resume = matches!(self.reconnecting, Some(Reconnect::Resume { .. }));
                    let reason = if resume && code == RefuseCode::NAME_TAKEN {
                        self.resume_refused = true;
                        let name = &self.username;
                        if self.closed_by == Some(ClosedBy::Replaced) {
                            format!("your session was taken over by another connection, which holds the username '{name}' now")
                        } else if self.closed_by == Some(ClosedBy::Kicked) {
                            format!("your session was ended by an operator (kicked), and the username '{name}' is someone else's now")
                        } else if self.from_save {
                            format!("the saved session was not accepted: its token does not match the session the server holds for '{name}' (or it expired, and the name is someone else's now)")
                        } else {
                            format!("your session expired while the server could not be reached, and the username '{name}' is someone else's now")
                        }
                    } else {
                        reason
                    };
                    self.events.push_back(ClientEvent::Refused { code, reason });
                }
                ServerMessage::Shutdown { reason } => {
                    self.state = State::Closed;
                    self.events.push_back(ClientEvent::Shutdown { reason });
                }
                ServerMessage::Ping(v) => self.answer_ping(v),
                ServerMessage::Notice { code, text } if code == NoticeCode::SESSION_ENDED => {
                    self.ended = Some(text);
                }
                _ => {}
            }
            return;
        }
        if let Some(text) = self.held_failure.take() {
            if let Some(ev) = self.files_unavailable(&msg, text) {
                self.events.push_back(ev);
                return;
            }
        }
        let ev = match msg {
            ServerMessage::Welcome { .. } | ServerMessage::Refused { .. } => return,
            ServerMessage::Chat(chat) => {
                if !chat.history && self.seen_before(chat.id) {
                    return;
                }
                if chat.history && chat.id <= self.shown_through {
                    return;
                }
                if self.is_ignored(&chat.from) {
                    return;
                }
                ClientEvent::Chat(chat)
            }
            ServerMessage::Joined { id, time, user } => {
                if self.seen_before(id) {
                    return;
                }
                ClientEvent::Joined { id, time, user }
            }
            ServerMessage::Left(left) => {
                if self.seen_before(left.id) {
                    return;
                }
                ClientEvent::Left(left)
            }
            ServerMessage::Presence(events) => {
                // One event per join or leave, as if each came alone; an
                // away or back is no entry of the log (never replayed, not
                // counted as seen).
                for e in events {
                    if e.is_entry() && self.seen_before(e.id()) {
                        continue;
                    }
                    self.events.push_back(match e {
                        PresenceEvent::Joined { id, time, user } => {
                            ClientEvent::Joined { id, time, user }
                        }
                        PresenceEvent::Left(left) => ClientEvent::Left(left),
                        PresenceEvent::Away { time, user, .. } => ClientEvent::Away { time, user },
                        PresenceEvent::Back { time, user, .. } => ClientEvent::Back { time, user },
                    });
                }
                return;
            }
            ServerMessage::Ack { client_id, .. } => {
                self.acknowledged(client_id);
                if !self.report_acks {
                    return;
                }
                ClientEvent::Acknowledged { client_id }
            }
            ServerMessage::Who { mut users } => {
                // The server charged one more message per 100 names.
                self.charge(users.len() / ITEMS_PER_MESSAGE, 0);
                // In the order people see names in, whatever the server's
                // (an older one sorted `u10` before `u2`).
                users.sort_by(|a, b| crate::name_order(a.name.as_str(), b.name.as_str()));
                ClientEvent::Who { users }
            }
            ServerMessage::FilesAccess { count } => {
                self.accesses = self.accesses.saturating_sub(1);
                // The server charged one more message per 100 files counted.
                let more = usize::try_from(count).unwrap_or(usize::MAX) / ITEMS_PER_MESSAGE;
                self.charge(more, 0);
                ClientEvent::FilesAccess { count }
            }
            ServerMessage::FileList(part) => {
                // The server charged one more message per 100 files listed.
                let before = self.listed / ITEMS_PER_MESSAGE;
                self.listed += part.files.len();
                self.charge(self.listed / ITEMS_PER_MESSAGE - before, 0);
                let quiet = if part.last {
                    self.listed = 0;
                    self.lists.pop_front()
                } else {
                    self.lists.front().copied()
                };
                if quiet == Some(true) {
                    ClientEvent::FileNames(part)
                } else {
                    ClientEvent::FileList(part)
                }
            }
            ServerMessage::Error {
                code,
                client_id,
                text,
            } => {
                if client_id != 0 {
                    self.acknowledged(client_id);
                }
                if code == ErrorCode::KICKED {
                    self.state = State::Closed;
                    self.closed_by = Some(ClosedBy::Kicked);
                    ClientEvent::Kicked { text }
                } else if code == ErrorCode::REPLACED {
                    self.state = State::Closed;
                    self.closed_by = Some(ClosedBy::Replaced);
                    ClientEvent::Replaced { text }
                } else {
                    ClientEvent::Error {
                        code,
                        client_id,
                        text,
                    }
                }
            }
            ServerMessage::Ping(v) => {
                self.answer_ping(v);
                return;
            }
            ServerMessage::Pong(v) => {
                if self.barrier.is_some_and(|b| v >= b) {
                    self.barrier = None;
                    self.answered = self.answered.max(self.barrier_covers);
                }
                return;
            }
            ServerMessage::Shutdown { reason } => {
                self.state = State::Closed;
                ClientEvent::Shutdown { reason }
            }
            ServerMessage::Notice { code, text }
                if code == NoticeCode::CLUSTER_DOWN || code == NoticeCode::CLUSTER_BACK =>
            {
                ClientEvent::ClusterReachable {
                    reachable: code == NoticeCode::CLUSTER_BACK,
                    text,
                }
            }
            ServerMessage::Notice { code, text } => {
                if code == NoticeCode::REGISTERED {
                    // Reconnects must now give the password.
                    self.account_password = self.registering.take();
                } else if code == NoticeCode::UNREGISTERED {
                    self.account_password = None;
                } else if code == NoticeCode::FAILED
                    && self.registering.is_none()
                    && (self.accesses > 0 || !self.lists.is_empty())
                {
                    // Perhaps the shared folder's: the next message says.
                    self.held_failure = Some(text);
                    return;
                } else if code == NoticeCode::ALREADY_REGISTERED
                    || code == NoticeCode::NO_ACCOUNTS
                    || code == NoticeCode::FAILED
                    || code == NoticeCode::NOT_PERMITTED
                {
                    self.registering = None;
                }
                ClientEvent::Notice { code, text }
            }
            ServerMessage::PushAccepted { id, receivers } => {
                if !self.outgoing.contains_key(&id) || !self.accepted.insert(id) {
                    return;
                }
                ClientEvent::PushAccepted { id, receivers }
            }
            ServerMessage::PushCredit { id, offset } => {
                if !self.accepted.contains(&id) || self.pushes_ended.contains(&id) {
                    return;
                }
                let credit = self.credits.entry(id).or_insert(0);
                if offset <= *credit {
                    return;
                }
                *credit = offset;
                ClientEvent::PushCredit { id, offset }
            }
            ServerMessage::PushDone { id, receivers } => {
                self.accepted.remove(&id);
                self.credits.remove(&id);
                self.pushes_ended.remove(&id);
                if self.outgoing.remove(&id).is_none() {
                    return;
                }
                ClientEvent::PushDone { id, receivers }
            }
            ServerMessage::FileStart(start) => {
                self.file_start(start);
                return;
            }
            ServerMessage::Chunk(mut chunk) => {
                let Some(id) = self.local_id(chunk.id) else {
                    return;
                };
                chunk.id = id;
                let Some(inc) = self.incoming.get_mut(&id) else {
                    return;
                };
                match inc.accept(&chunk) {
                    Ok(()) => {
                        let end = chunk.offset + chunk.data.len() as u64;
                        if self.manual_acks {
                        } else if self.relayed.contains_key(&id) {
                            // A push's chunks are the pusher's size, a
                            // few bytes perhaps: acknowledged by steps.
                            self.stored(id, end);
                        } else {
                            self.transmits
                                .push_back(ClientMessage::Ack { id, offset: end });
                        }
                        ClientEvent::TransferData {
                            id,
                            offset: chunk.offset,
                            data: chunk.data,
                        }
                    }
                    Err(e) => {
                        self.fail_incoming(id, e, true);
                        return;
                    }
                }
            }
            ServerMessage::End(mut end) => {
                let Some(id) = self.local_id(end.id) else {
                    return;
                };
                end.id = id;
                let Some(inc) = self.incoming.get(&end.id) else {
                    return;
                };
                match inc.finish(&end) {
                    Ok(()) => {
                        self.incoming.remove(&end.id);
                        self.names.remove(&end.id);
                        self.relayed.remove(&end.id);
                        ClientEvent::TransferDone { id: end.id }
                    }
                    Err(e) => {
                        self.fail_incoming(end.id, e, false);
                        return;
                    }
                }
            }
            ServerMessage::Cancel(mut c) => {
                let Some(id) = self.local_id(c.id) else {
                    return;
                };
                c.id = id;
                if let Some(offer) = self.offers.remove(&c.id) {
                    self.relayed.remove(&c.id);
                    let reason = if c.reason.is_empty() {
                        c.code.to_string()
                    } else {
                        c.reason
                    };
                    ClientEvent::OfferWithdrawn {
                        id: c.id,
                        from: offer.from,
                        name: offer.name,
                        reason,
                    }
                } else if self.outgoing.remove(&c.id).is_some() {
                    self.accepted.remove(&c.id);
                    self.credits.remove(&c.id);
                    self.pushes_ended.remove(&c.id);
                    ClientEvent::PushFailed {
                        id: c.id,
                        code: c.code,
                        reason: c.reason,
                    }
                } else if self.incoming.contains_key(&c.id) || self.requested.contains_key(&c.id) {
                    let reason = if c.reason.is_empty() {
                        c.code.to_string()
                    } else {
                        c.reason
                    };
                    let error = TransferError::Cancelled {
                        id: c.id,
                        code: c.code,
                        reason,
                    };
                    self.fail_incoming(c.id, error, false);
                    return;
                } else {
                    return;
                }
            }
        };
        self.events.push_back(ev);
    }

    fn file_start(&mut self, start: FileStart) {
        let FileStart {
            id,
            name,
            size,
            offset,
            origin,
        } = start;
        if self.incoming.contains_key(&id)
            || self.offers.contains_key(&id)
            || self.relayed.values().any(|wire| *wire == id)
        {
            return;
        }
        match origin {
            Origin::Download => {
                let Some(req) = self.requested.remove(&id) else {
                    return;
                };
                let incoming = match req.resume {
                    Some(held) if offset == held.len() && offset > 0 => {
                        Incoming::resume(id, size, &held)
                    }
                    _ if offset == 0 => Ok(Incoming::new(id, size)),
                    _ => Err(TransferError::BadOffset { offset, size }),
                };
                self.names.insert(id, req.name.clone());
                match incoming {
                    Ok(inc) => {
                        self.incoming.insert(id, inc);
                        // The name is the one we asked for: a server cannot
                        // make us write under another name.
                        self.events.push_back(ClientEvent::TransferStarted {
                            id,
                            name: req.name,
                            size,
                            offset,
                            origin: Origin::Download,
                        });
                    }
                    Err(e) => self.fail_incoming(id, e, true),
                }
            }
            Origin::Push { from } => {
                if self.is_ignored(&from) && id.is_server_chosen() && offset == 0 {
                    // Declined as a user would, without asking or saying
                    // (an answer to an offer: no rate budget).
                    self.transmits.push_back(ClientMessage::Cancel(FileCancel {
                        id,
                        code: CancelCode::DECLINED,
                        reason: CancelCode::DECLINED.to_string(),
                    }));
                    return;
                }
                let refusal = if !id.is_server_chosen() || offset != 0 {
                    Some((
                        CancelCode::BAD_CHUNK,
                        "invalid transfer id or offset".to_string(),
                    ))
                } else if size > self.limits.max_push_size {
                    Some((
                        CancelCode::TOO_LARGE,
                        format!(
                            "file of {size} bytes is larger than the limit of {} bytes",
                            self.limits.max_push_size
                        ),
                    ))
                } else if self.pushes_to_us() >= self.limits.max_transfers {
                    Some((
                        CancelCode::TOO_MANY,
                        format!(
                            "already {} files being sent to this user or waiting for an answer",
                            self.pushes_to_us()
                        ),
                    ))
                } else {
                    None
                };
                // Refusing an offer (a push's start from the server, at
                // byte 0) answers it: that costs no rate budget on the
                // server; any other refusal is a request like the rest.
                if refusal.is_some() && !(id.is_server_chosen() && offset == 0) {
                    self.charge(1, 0);
                }
                match refusal {
                    None => {
                        // From here on the push goes by the session's id.
                        let id = {
                            let local = self.next_number();
                            self.relayed.insert(local, id);
                            local
                        };
                        let offer = Offered {
                            from: from.clone(),
                            name: name.clone(),
                            size,
                        };
                        let now = self.clock;
                        let sender = (self.name_key)(&offer.from);
                        if self
                            .auto_accept
                            .is_some_and(|max| self.unasked.admit(now, max, sender, size))
                        {
                            self.start_push(id, offer);
                        } else {
                            self.offers.insert(id, offer);
                            self.events.push_back(ClientEvent::PushOffered {
                                id,
                                from,
                                name,
                                size,
                            });
                        }
                    }
                    Some((code, reason)) => {
                        self.transmits.push_back(ClientMessage::Cancel(FileCancel {
                            id,
                            code,
                            reason: reason.clone(),
                        }));
                        self.events.push_back(ClientEvent::PushDeclined {
                            from,
                            name,
                            size,
                            reason,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod unasked_tests {
    use super::*;
    use crate::limits::{AUTO_ACCEPT_MIN_CHARGE, AUTO_ACCEPT_WINDOW};
    use std::time::Duration;

    fn key(name: &str) -> String {
        Username::new(name).unwrap().key()
    }

    #[test]
    fn every_sender_together_are_held_to_the_total_and_an_hour_frees_it() {
        let mut unasked = Unasked::default();
        let start = Instant::now();
        // Four senders, each up to their own budget: four pushes of the
        // least charge each (the size, 100, is below it).
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            for _ in 0..4 {
                assert!(unasked.admit(at, 100, key(name), 0));
            }
            assert!(!unasked.admit(at, 100, key(name), 0), "{name}'s fifth");
        }
        // Sixteen of the least charge: the total is spent for a newcomer.
        let later = start + Duration::from_secs(10);
        assert!(!unasked.admit(later, 100, key("e"), 1));
        // An hour after the first sender's, theirs are forgotten, and
        // four more from anyone fit again; not yet b's.
        let hour = start + AUTO_ACCEPT_WINDOW;
        assert!(!unasked.admit(hour, 100, key("b"), 1));
        for _ in 0..4 {
            assert!(unasked.admit(hour, 100, key("e"), 1));
        }
        assert!(!unasked.admit(hour, 100, key("a"), 1), "the total again");
    }

    #[test]
    fn a_push_counts_its_size_or_the_least_charge_and_never_past_the_size() {
        let mut unasked = Unasked::default();
        let now = Instant::now();
        let max = 10 * AUTO_ACCEPT_MIN_CHARGE;
        assert!(!unasked.admit(now, max, key("a"), max + 1));
        // Three whole sizes and ten of the least charge make four sizes.
        for _ in 0..3 {
            assert!(unasked.admit(now, max, key("a"), max));
        }
        for _ in 0..10 {
            assert!(unasked.admit(now, max, key("a"), 0));
        }
        assert!(!unasked.admit(now, max, key("a"), 0));
        assert!(!unasked.admit(now, max, key("A"), 0), "A is a");
        assert!(unasked.admit(now, max, key("b"), max));
    }
}
