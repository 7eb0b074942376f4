//! The running client: a [`ClientSession`] per connection, shared by a few
//! threads, and the glue between its events and the [`View`] and the disk.
//!
//! ```text
//!  socket ──► reader thread ──► session.handle_message ─┐
//!  clock  ──► timer thread  ──► session.handle_timeout ─┤   (one Mutex)
//!  view   ──► UserInput ────► main: Command::parse ─────┤
//!  file   ──► pusher threads ─► session.push_chunk ─────┘
//!                                        │ after every call:
//!                                        ├─ poll_transmit ─► Outbox ─► writer thread ─► socket
//!                                        └─ poll_event ────► View / write files
//! ```
//!
//! Two lifetimes: the [`App`] lives as long as the process (the view, the
//! mode, the options, the count of failed transfers); a [`Conn`] lives as
//! long as one connection (its session, outbox, socket, threads and
//! transfers). When a connection ends the app may make a new one (see
//! [`Reconnect`]). The protocol (what to send, whether a chunk is good,
//! when the server is gone) is all in the session; this module only moves
//! bytes and tells the view. No view method is called while a lock of
//! this module is held.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imchat_cli::io_reason;
use imchat_core::blocking::tls::{self, Stream, Trust, Verified};
use imchat_core::blocking::{Frame, FrameReader, Outbox, PushError, TransportError};
use imchat_core::{
    inert, ChatKind, ClientEvent, ClientSession, Encode, FileEntry, FileListPart, FileName,
    FilesRequest, Limits, MessageId, OnlineUser, Origin, Recipient, RefuseCode, RoutedChat,
    SavedSession, Secret, ServerMessage, Timestamp, TransferError, TransferId, UsageError,
    Username,
};

use crate::command::{
    classroom_hint, help_lines, typed_file_name, works_offline, Command, CommandError, Mode,
};
use crate::error::{describe_connect_error, ClientError};
use crate::files;
use crate::resume::SessionFile;
use crate::servers::{Server, Servers};
use crate::ui;
use crate::view::{
    byte_count, human_duration, human_size, Away, ChatEntry, Direction, Entry, Link, Roster,
    SharedFile, Status, TransferEnd, TransferView, UserInput, View, STALLED,
};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server has to answer the handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(15);
/// How often the session's clock runs (keepalive pings and timeouts).
const TICK: Duration = Duration::from_secs(1);
/// How often the reader tells the session that a frame is still coming in.
const HEARD_STEP: Duration = Duration::from_secs(1);

/// "1 line", "146 lines".
/// Lines entered while there is no connection, sorted: the commands that
/// run without a server, and the errors of lines that are no valid
/// command, in order; and how many lines need the server (refused).
fn offline_plan(lines: &[String]) -> (Vec<Result<Command, CommandError>>, usize) {
    let mut runs = Vec::new();
    let mut refused = 0;
    for line in lines {
        match Command::parse(line) {
            Ok(cmd) if !works_offline(&cmd) => refused += 1,
            parsed => runs.push(parsed),
        }
    }
    (runs, refused)
}

/// What a client without a connection says of `n` lines it did not send.
fn not_connected(n: usize, retry_in: Duration) -> String {
    let retry = human_duration(retry_in);
    if n == 1 {
        format!("not connected (reconnecting in {retry}); the line is in your history (Up)")
    } else {
        format!("not connected (reconnecting in {retry}): {n} lines not sent; they are in your history (Up)")
    }
}

fn lines(n: usize) -> String {
    if n == 1 {
        "1 line".to_owned()
    } else {
        format!("{n} lines")
    }
}

/// Bulk bytes a push keeps queued ahead of the socket at most.
const PUSH_QUEUE: usize = 1024 * 1024;
/// How long a push waits for queue room before checking whether to stop.
const PUSH_WAIT: Duration = Duration::from_secs(30);
/// How long `/quit` waits for queued messages to be written.
const QUIT_WAIT: Duration = Duration::from_secs(2);
/// A script that ends (end of input or `/quit`) waits for the answers to
/// what it asked for as long as the server keeps sending something, and
/// gives up this long after the server last said anything.
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// The longest single sleep of a wait that must notice the connection
/// ending (pacing, waiting for queue room or for answers, for input).
const WAIT_STEP: Duration = Duration::from_millis(100);
/// How often a chat waiting for acknowledgements looks again.
const ACK_WAIT_STEP: Duration = Duration::from_millis(10);
/// Room a chat frame needs in the outbound queue beyond its text.
const CHAT_FRAME_ROOM: usize = 1024;
/// Least time between two updates of one transfer's live line.
const METER_EVERY: Duration = Duration::from_millis(250);
/// A rate is shown once a transfer has moved for this long.
const METER_SETTLE: Duration = Duration::from_millis(500);
/// Width `/help` fits when there is no screen to measure.
const PLAIN_WIDTH: usize = 80;
/// The longest wait between two reconnect tries.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The most names the join's `online (N): …` notice lists; `/who` lists all.
const JOIN_NAMES_SHOWN: usize = 50;

/// What the client was started with.
pub struct Config {
    /// The server, or several servers of one cluster, to connect to.
    pub servers: Servers,
    /// The username asked for.
    pub username: Username,
    /// Where downloads go; received pushes go to its `received/`.
    pub download_dir: PathBuf,
    /// Pushes up to this size are accepted without asking; `None`: always ask.
    pub auto_accept: Option<u64>,
    /// Ask about bigger pushes even when input is not a terminal.
    pub ask_when_piped: bool,
    /// `--reconnect` (`Some(true)`) or `--no-reconnect` (`Some(false)`);
    /// `None`: reconnect in the full-screen interface, and when piped only
    /// once at once after a drop without a shutdown notice (or, given
    /// several servers, after a shutdown too).
    pub reconnect: Option<bool>,
    /// `--json`: one JSON object per event on stdout.
    pub json: bool,
    /// The input history file (`--history-file`, else the default in the
    /// user's data folder); `None` with `--no-history` or without a data folder.
    pub history_file: Option<PathBuf>,
    /// `--chat-log`: where to append a transcript of the chat.
    pub chat_log: Option<PathBuf>,
    /// Take back the session a killed run saved (not `--no-resume`).
    pub resume: bool,
    /// Where sessions are saved for the next run; `None`: nowhere.
    pub sessions_dir: Option<PathBuf>,
    /// `--tls`: how to trust the server; `None`: plaintext.
    pub tls: Option<Trust>,
    /// The server and account passwords known so far.
    pub passwords: Passwords,
}

/// The passwords the client gives the server: from files or the
/// environment at start, or typed when the server asks for one.
#[derive(Debug, Default)]
pub struct Passwords {
    /// The server password (`--password-file`, `$IMCHAT_PASSWORD`).
    pub server: Mutex<Option<Secret>>,
    /// The account password of the username (`--account-password-file`,
    /// `$IMCHAT_ACCOUNT_PASSWORD`), also the one `/register` uses when
    /// the input is not a terminal.
    pub account: Mutex<Option<Secret>>,
}

impl Passwords {
    fn get(&self) -> (Option<Secret>, Option<Secret>) {
        (lock(&self.server).clone(), lock(&self.account).clone())
    }
}

/// Asks for a password on the terminal, without echo; `None` when there is
/// no terminal to ask on, or nothing was typed.
fn ask_password(prompt: &str) -> Option<Secret> {
    if !io::IsTerminal::is_terminal(&io::stdin()) || crate::screen::is_active() {
        return None;
    }
    match rpassword::prompt_password(prompt) {
        Ok(text) => Secret::new(text),
        Err(e) => {
            log::info!("reading a password: {e}");
            None
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// It broke or closed without notice.
    Lost(ClientError),
    /// The server said it shuts down, with this reason.
    Shutdown(String),
    /// An operator removed us: never reconnect on our own.
    Kicked(String),
    /// Another connection resumed our session (a copy of it run
    /// elsewhere): never reconnect on our own, which would take it back.
    Replaced(String),
}

impl End {
    fn error(self) -> ClientError {
        match self {
            End::Lost(e) => e,
            End::Shutdown(reason) => ClientError::Shutdown(reason),
            End::Kicked(text) => ClientError::Kicked(text),
            End::Replaced(text) => ClientError::Replaced(text),
        }
    }

    /// Why the transfers it cut failed, in their lines.
    fn cut_reason(&self) -> &'static str {
        match self {
            End::Shutdown(_) => "the server shut down",
            End::Kicked(_) => "removed from the server",
            End::Replaced(_) => "the session was resumed from another connection",
            End::Lost(_) => "connection lost",
        }
    }
}

/// A file arriving (a download or someone's push), written to its `.part`.
struct IncomingFile {
    name: FileName,
    size: u64,
    /// Who pushed it; `None` for a download.
    from: Option<Username>,
    final_path: PathBuf,
    part: PathBuf,
    file: File,
    /// Bytes written so far (the resumed prefix included).
    written: u64,
    /// Disk space asked for up to here (see [`files::reserve`]).
    reserved: u64,
    /// A download that took up a `.part` an earlier one left.
    resumed: bool,
    /// The `.part` file as our last write left it (see
    /// [`files::Written`]); `None` if that could not be read.
    stamp: Option<files::Written>,
    meter: Meter,
}

impl IncomingFile {
    /// True when another program truncated or wrote into the `.part`
    /// file since our last write (or put another file under its name,
    /// with `at_path`).
    fn changed(&self, at_path: bool) -> bool {
        self.stamp.is_some_and(|w| {
            if at_path {
                !w.still_at(&self.file, &self.part)
            } else {
                !w.still(&self.file)
            }
        })
    }

    /// Why it failed when [`changed`](Self::changed).
    fn changed_reason(&self) -> String {
        let again = match &self.from {
            None => format!("/download {} fetches it again", inert(self.name.as_str())),
            Some(from) => format!("{from} can send it again"),
        };
        format!(
            "{} changed on disk while it was being written (by another program): removed; {again}",
            inert(&self.part.display().to_string())
        )
    }
}

/// A push of ours; `stop` tells its thread to give up, `go` that its
/// receivers accepted it (dropping it ends a thread still waiting).
struct OutgoingPush {
    name: FileName,
    stop: Arc<AtomicBool>,
    /// Wakes its pusher thread: once when the receivers accepted it, and
    /// each time the server lets it send more (its credit grew).
    go: Option<Sender<()>>,
    meter: Meter,
    /// How many accepted it (0 until the answer).
    accepted: u32,
    /// Whether the user was told it is offered: once the server took it,
    /// never for one it refuses at once.
    told: bool,
}

impl OutgoingPush {
    /// The line that says the push is offered, the first time only (the
    /// server's answer that took it, or the receivers', whichever comes
    /// first).
    fn offered_line(&mut self, app: &App) -> Option<String> {
        if std::mem::replace(&mut self.told, true) {
            return None;
        }
        let size = app.size_shown(self.meter.view.total);
        Some(format!(
            "offering {} ({size}); it is sent once accepted",
            self.name
        ))
    }
}

/// The transfers the binary holds files or threads for, by id.
#[derive(Default)]
struct Transfers {
    incoming: HashMap<TransferId, IncomingFile>,
    pushes: HashMap<TransferId, OutgoingPush>,
    /// Downloads asked for and not started yet: their name and `.part`
    /// file, open and locked from the request on.
    parts: HashMap<TransferId, (FileName, PathBuf, File)>,
}

/// The live numbers of one transfer: rate and time left count only the
/// bytes this session moved (a resumed prefix is not a speed), and its
/// line is updated a few times a second at most.
#[derive(Debug, Clone)]
struct Meter {
    view: TransferView,
    /// Bytes already there when this session started moving it.
    start: u64,
    started: Instant,
    last: Option<Instant>,
    /// When a byte last moved (or it started).
    moved: Instant,
    /// Whether its line was last sent to the view as `stalled`.
    said_stalled: bool,
}

impl Meter {
    fn new(
        id: TransferId,
        direction: Direction,
        name: &FileName,
        total: u64,
        start: u64,
        now: Instant,
    ) -> Meter {
        Meter {
            view: TransferView {
                id: id.to_string(),
                direction,
                name: name.as_str().to_owned(),
                done: start,
                total,
                rate: None,
                eta: None,
                waiting: false,
                stalled: false,
                from: None,
            },
            start,
            started: now,
            last: None,
            moved: now,
            said_stalled: false,
        }
    }

    /// Its line at `now` when it stalled since the view was last told
    /// (once: the view gets no line while nothing moves).
    fn stall(&mut self, now: Instant) -> Option<TransferView> {
        let view = self.view_at(now);
        (view.stalled && !self.said_stalled).then(|| {
            self.said_stalled = true;
            view
        })
    }

    /// Starts measuring now (a push once accepted).
    fn restart(&mut self, now: Instant) {
        self.view.waiting = false;
        self.start = self.view.done;
        self.started = now;
        self.last = None;
        self.moved = now;
    }

    /// The transfer's line at `now`: `stalled` when no byte moved for a
    /// while, rather than the rate it had.
    fn view_at(&self, now: Instant) -> TransferView {
        let mut view = self.view.clone();
        view.stalled = !view.waiting && now.saturating_duration_since(self.moved) >= STALLED;
        view
    }

    /// Records `done` bytes at `now`; the line to show when one is due.
    fn advance(&mut self, done: u64, now: Instant) -> Option<TransferView> {
        let moved_again = done != self.view.done && self.said_stalled;
        if done != self.view.done {
            self.moved = now;
            self.said_stalled = false;
        }
        self.view.done = done;
        let moved = done.saturating_sub(self.start);
        let elapsed = now.saturating_duration_since(self.started);
        if moved > 0 && elapsed >= METER_SETTLE {
            let rate = moved as f64 / elapsed.as_secs_f64();
            self.view.rate = Some(rate);
            let left = self.view.total.saturating_sub(done) as f64;
            self.view.eta = Some(Duration::from_secs_f64(left / rate));
        }
        match self.last {
            // One that stalled says at once that it moves again.
            Some(at) if now.saturating_duration_since(at) < METER_EVERY && !moved_again => None,
            _ => {
                self.last = Some(now);
                Some(self.view.clone())
            }
        }
    }
}

/// What a session call left to do once the lock is released.
#[must_use]
struct Drained {
    events: Vec<ClientEvent>,
    /// The outbound queue refused a control message (the server is not reading).
    queue_full: bool,
}

/// What the answer to a `/who` of ours is for (besides the roster, which
/// every answer updates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhoFor {
    /// The user's `/who`: shown.
    User,
    /// The roster only (completion, `/mode unicast`'s check): not shown.
    Roster,
    /// A join the screen does not continue: shown where the nick list is
    /// not (see [`View::roster_notice`]).
    Join,
}

impl WhoFor {
    /// Asked without the user.
    fn silent(self) -> bool {
        self != WhoFor::User
    }
}

/// One user of a `/who` answer as the list shows it: its name, and for a
/// user away how long ago its connection was lost (`bob (away, connection
/// lost 23s ago)`).
fn who_entry((user, name): (&OnlineUser, &String)) -> String {
    match user.away_secs {
        Some(secs) => format!(
            "{name} (away, connection lost {} ago)",
            human_duration(Duration::from_secs(secs))
        ),
        None => name.clone(),
    }
}

/// `online (3): alice, bob, carol`: the names in the server's order (as
/// `/who` shows them), at most `most` of them (`… and 7 more`).
fn online_line(names: &[String], most: usize) -> String {
    let shown = names.len().min(most);
    let mut line = format!("online ({}): {}", names.len(), names[..shown].join(", "));
    if shown < names.len() {
        line.push_str(&format!(
            " and {} more (/who lists all)",
            names.len() - shown
        ));
    }
    line
}

/// Work for the disk thread, in the order the session produced it.
enum DiskJob {
    Data {
        id: TransferId,
        offset: u64,
        data: Vec<u8>,
    },
    Done(TransferId),
    Failed(TransferId, FileName, TransferError),
}

/// Disk jobs waiting at most: a download never has more than the protocol's
/// window in flight (4 chunks of 256 KiB), so this holds every running
/// download's data and the network thread does not wait on the disk.
const DISK_QUEUE: usize = 64;

/// What lives as long as the process.
struct App {
    view: Arc<dyn View>,
    config: Config,
    /// Where plain text goes (set with `/mode`); kept across reconnects.
    mode: Mutex<Mode>,
    /// Our name as the server registered it.
    me: Mutex<String>,
    /// The state of the connection, for the status line.
    link: Mutex<Link>,
    /// The server cannot reach the rest of its cluster (status line).
    cut_off: AtomicBool,
    /// Who is online, by [`Username::key`], with each name as given:
    /// seeded by a `/who` on each connect, then kept by joins and leaves.
    roster: Mutex<BTreeMap<String, String>>,
    /// Our private messages to a user the roster does not know online,
    /// by client id: recipient, action, text. Shown as ours once the
    /// server acknowledges one, never if it refuses it ("no such user
    /// online"), as irssi shows no line for a message to nobody; kept
    /// across reconnects (the session sends them again).
    held_echoes: Mutex<VecDeque<(u64, Username, bool, String)>>,
    /// Downloads and pushes of ours that failed (a script's exit code says
    /// so).
    failed_transfers: AtomicUsize,
    /// Error lines a script was shown: its requests the client or the
    /// server refused, or that failed (see [`App::quit_result`]).
    failed_requests: AtomicUsize,
    /// A script's lines that were not sent: messages refused here or by
    /// the server, given up, or left when it quit without a connection
    /// (its exit code says so).
    unsent_lines: AtomicUsize,
    /// Input comes from a script (not a terminal): leaving waits for
    /// the answers to what it asked for.
    scripted: bool,
    /// Someone can answer `/accept` or `/decline` (input is a terminal, or
    /// `--ask-when-piped`): bigger pushes wait for an answer, else they are
    /// declined at once.
    ask_offers: bool,
    /// The text given with `/quit`, sent with the `Quit`.
    parting: Mutex<String>,
    /// The session saved for the next run, if it can be.
    store: Mutex<Option<SessionFile>>,
    /// Saving it failed once (said once, in the log and on the screen).
    store_failed: AtomicBool,
    /// The user quit with no connection ([`App::quit_offline`]).
    quit_offline: AtomicBool,
}

/// Everything one connection's threads share.
struct Conn {
    app: Arc<App>,
    session: Mutex<ClientSession>,
    outbox: Arc<Outbox>,
    chunk_size: usize,
    transfers: Mutex<Transfers>,
    /// Set once we are leaving: threads stop quietly.
    closing: AtomicBool,
    /// Why the connection ended (the first reason wins).
    end: Mutex<Option<End>>,
    /// Set once the connection ended: waits on the main thread stop.
    ended: AtomicBool,
    /// A line could not be sent because the connection ended meanwhile.
    cut: AtomicBool,
    /// A shared-file list is being shown (its last part has not arrived).
    listing: AtomicBool,
    /// The names of the list being shown, for the view's completion.
    listed: Mutex<Vec<SharedFile>>,
    /// The names of a quiet list (see [`UserInput::FetchFileNames`]).
    quiet_listed: Mutex<Vec<SharedFile>>,
    /// Our shared-folder access requests in order: whether a list was
    /// asked with each (`/files`).
    accesses: Mutex<VecDeque<bool>>,
    /// Lists whose answer is not to be shown when the server cannot read
    /// its folder: those of `/files` whose access said so already.
    lists_told: AtomicUsize,
    /// Our `/who` requests in order, with what their answers are for.
    whos: Mutex<VecDeque<WhoFor>>,
    /// Silent `/who`s asked, and answered.
    whos_asked: AtomicU64,
    whos_answered: AtomicU64,
    /// File data and transfer ends go to the disk thread, so a write that
    /// stalls never holds up chat on the network thread.
    disk: SyncSender<DiskJob>,
    /// Chunk buffers the disk thread is done with, for the reader's
    /// decoder to receive the next chunks into.
    recycled: Mutex<Vec<Vec<u8>>>,
    /// The socket, for the disk thread to write its acknowledgements
    /// itself (see [`Outbox::flush`]) rather than wake the writer thread,
    /// and to hang up.
    socket: Stream,
    writer_done: Mutex<Option<Receiver<()>>>,
    /// Says when the disk thread has ended (see [`Conn::wait_disk`]).
    disk_done: Mutex<Option<Receiver<()>>>,
    /// Our chat messages sent lately: client id, recipient and the start
    /// of the text, so that an error the server sends about one names it
    /// ([`refused_line`]). The last `max_unacked` (the session gives up
    /// older unacknowledged ones itself, with their own error).
    sent_chats: Mutex<VecDeque<(u64, Recipient, String)>>,
    max_unacked: usize,
    /// Our message being sent and not yet shown as ours (its client id),
    /// with the server's errors about it that came meanwhile: they are
    /// shown after it, so its line always comes before its refusal (see
    /// [`chat`](Self::chat)).
    unechoed: Mutex<Option<(u64, Vec<ClientEvent>)>>,
    /// The newest id of what a resume replays on this connection (0:
    /// none): a chat, join or leave at or below it was missed while the
    /// connection was down.
    replay_through: AtomicU64,
    /// Jobs handed to the disk thread and not yet done: a transfer ends
    /// (its line shown, a failure counted) when its job is done, not when
    /// it leaves the list of running transfers.
    disk_jobs: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread leaves consistent data behind (every update is a
    // few field writes); keep going rather than take the client down.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_err(what: &'static str) -> impl Fn(io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

/// A connection that got the server's welcome.
struct Joined {
    stream: Stream,
    session: ClientSession,
    reader: FrameReader<Stream, ServerMessage>,
    /// A TLS certificate trusted on first use: its fingerprint, to show.
    first_use: Option<String>,
    /// The server it is connected to, as `host:port`, to show.
    server: String,
    username: Username,
    welcome: String,
    limits: Limits,
}

/// The socket's send buffer, in bytes (the kernel keeps about twice). Left
/// to itself it grows to megabytes; then a chat line typed during a push
/// waits behind all of the file data in it whenever the server reads the
/// pusher no faster than its receivers take the file (a receiver on a
/// slow link): seconds. This much keeps a loopback push at full speed.
const SEND_BUFFER: usize = 256 * 1024;

/// Bounds `stream`'s send buffer to [`SEND_BUFFER`].
fn bound_send_buffer(stream: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).set_send_buffer_size(SEND_BUFFER)
}

/// Connects to the first address of `host` that answers within
/// [`CONNECT_TIMEOUT`], trying each in turn.
pub fn connect(host: &str, port: u16) -> Result<TcpStream, ClientError> {
    let shown = inert(host).into_owned();
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            log::info!("resolving {shown}: {e}");
            ClientError::Resolve(shown.clone())
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ClientError::Resolve(shown));
    }
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                if let Err(e) = bound_send_buffer(&stream) {
                    log::info!("send buffer not bounded: {e}");
                }
                return Ok(stream);
            }
            Err(e) => {
                log::info!("connecting to {addr}: {e}");
                last = Some(e);
            }
        }
    }
    Err(ClientError::Connect {
        addr: host_port(&shown, port),
        reason: last.map_or_else(|| "no address".into(), |e| describe_connect_error(&e)),
    })
}

/// The least first client id of a run that takes a saved session back:
/// the milliseconds since 1970 times 1,024. The file's next id may be
/// behind the ids its session used (a backup put back, the folder copied
/// from another machine while its client went on, a damaged file), and
/// the server answers a message whose id is not above the highest it had
/// as a copy, delivering it to nobody. A run before this one started at
/// its own start's floor and sent fewer than 1,024 messages a millisecond
/// since, so this one starts past them all, whatever the file says.
fn first_client_id_floor() -> u64 {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    millis.saturating_mul(1024)
}

/// A new session for the configured user; with `saved`, one that asks
/// for the session an earlier run saved.
fn new_session_from(
    config: &Config,
    limits: &Limits,
    saved: Option<SavedSession>,
) -> ClientSession {
    let (name, now) = (config.username.clone(), Instant::now());
    let mut session = match saved {
        Some(saved) => {
            let saved = SavedSession {
                next_client_id: saved.next_client_id.max(first_client_id_floor()),
                ..saved
            };
            ClientSession::resuming(name, limits.clone(), now, saved)
        }
        None => ClientSession::new(name, limits.clone(), now),
    };
    // Downloads are acknowledged once written, by the disk thread.
    session.set_manual_acks(true);
    // A message to someone not known online is shown once acknowledged.
    session.set_report_acks(true);
    session.set_auto_accept(config.auto_accept);
    // One sender's share of pushes taken unasked goes by the key the
    // server holds names unique by (look-alike spellings are one sender).
    session.set_name_key(imchat_cli::names::key);
    session
}

/// A new session for the configured user.
fn new_session(config: &Config, limits: &Limits) -> ClientSession {
    new_session_from(config, limits, None)
}

/// How long start-up waits, all told, for host names to resolve when it
/// looks for a session saved under another name of the same server.
const ALIAS_WAIT: Duration = Duration::from_secs(2);
/// The most other names of one server it resolves.
const MAX_ALIASES: usize = 8;

/// Those of `others` (the first [`MAX_ALIASES`]) that name the same
/// server as `host` on `port`: they resolve to an address in common.
/// The names are resolved at once, each on a thread of its own, until
/// `deadline`: a name not resolved by then counts as another server (its
/// thread is left to end on its own).
fn same_server(host: &str, mut others: Vec<String>, port: u16, deadline: Instant) -> Vec<String> {
    if others.is_empty() {
        return others;
    }
    others.truncate(MAX_ALIASES);
    let (tx, rx) = mpsc::channel();
    for (i, name) in std::iter::once(host)
        .chain(others.iter().map(String::as_str))
        .enumerate()
    {
        let (tx, name) = (tx.clone(), name.to_owned());
        let spawned = thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let addrs: Vec<IpAddr> = (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|addrs| addrs.map(|a| a.ip()).collect())
                    .unwrap_or_default();
                let _ = tx.send((i, addrs));
            });
        if let Err(e) = spawned {
            log::info!("cannot resolve host names: {e}");
        }
    }
    drop(tx);
    let mut resolved = vec![Vec::new(); others.len() + 1];
    for _ in 0..resolved.len() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, addrs)) => resolved[i] = addrs,
            Err(_) => break,
        }
    }
    let own = std::mem::take(&mut resolved[0]);
    others
        .into_iter()
        .zip(&resolved[1..])
        .filter(|(_, addrs)| addrs.iter().any(|a| own.contains(a)))
        .map(|(name, _)| name)
        .collect()
}

/// What [`open_store`] found.
#[derive(Debug, Default)]
struct Store {
    file: Option<SessionFile>,
    saved: Option<SavedSession>,
    /// Why no file could be had for the session (not merely locked by
    /// another client): to tell the user, as a crash will not resume it.
    unsaved: Option<String>,
    /// Why no saved session was taken back although there may be one: its
    /// file held none (said in the chat), or another client of this
    /// machine runs with this name and server. Added to a refusal of the
    /// name as taken, which would otherwise leave the user guessing.
    not_taken: Option<NotTaken>,
}

/// Why [`open_store`] took no saved session back (see [`Store`]).
#[derive(Debug)]
enum NotTaken {
    /// The session file is there but gives no session: the line says why.
    Unreadable(String),
    /// Another client holds the file's lock.
    Locked,
}

impl NotTaken {
    /// Said after a refusal of the name as taken.
    fn hint(&self) -> String {
        match self {
            NotTaken::Unreadable(line) => line.clone(),
            NotTaken::Locked => {
                "another client runs on this machine with this name and server, and keeps its saved session to itself".into()
            }
        }
    }
}

/// `e`, a refusal of the name as taken, with why no saved session was
/// presented (which would have taken the name back); any other error as
/// it is.
fn with_not_taken(e: ClientError, not_taken: Option<&NotTaken>) -> ClientError {
    match (e, not_taken) {
        (ClientError::Refused { reason, code }, Some(why)) if code == RefuseCode::NAME_TAKEN => {
            ClientError::Refused {
                reason: format!("{reason}; {}", why.hint()),
                code,
            }
        }
        (e, _) => e,
    }
}

/// The line that says the session is not saved: a crash or `kill -9`
/// will not take it back.
fn unsaved_line(why: &str) -> String {
    format!(
        "cannot save the session ({why}): a restart after a crash or kill -9 will not resume it"
    )
}

/// The file the session is saved in for the next run, locked for this
/// one, and the session an earlier run left in it (when resuming). The
/// file is the first server's; but a session saved under another server
/// of the list (an earlier run listed the servers in another order) is
/// taken, with its file, and so is one saved under another name of a
/// server of the list (`127.0.0.1` then, `localhost` now: see
/// [`same_server`]). `None` without a data folder, or when another
/// client runs with this name and server (it keeps its session to itself).
fn open_store(config: &Config) -> Store {
    let Some(dir) = config.sessions_dir.as_ref() else {
        return Store::default();
    };
    let mut failed = None;
    // A file locked by another client (this one's, or another spelling's).
    let mut held = false;
    let mut open =
        |host: &str, port: u16| match SessionFile::open(dir, host, port, &config.username) {
            Ok(file) => {
                held |= file.is_none();
                file
            }
            Err(e) => {
                log::warn!("cannot save the session: {e}");
                failed.get_or_insert(e.to_string());
                None
            }
        };
    let first = config.servers.first();
    let mut file = open(&first.host, first.port);
    let mut unreadable = None;
    let (file, saved) = 'found: {
        if !config.resume {
            break 'found (file, None);
        }
        if let Some(saved) = file.as_mut().and_then(SessionFile::load) {
            break 'found (file, Some(saved));
        }
        unreadable = file.as_ref().and_then(SessionFile::unreadable);
        for server in config.servers.all().iter().skip(1) {
            let path = dir.join(crate::resume::file_name(
                &server.host,
                server.port,
                &config.username,
            ));
            if !path.exists() {
                continue;
            }
            if let Some(mut other) = open(&server.host, server.port) {
                if let Some(saved) = other.load() {
                    break 'found (Some(other), Some(saved));
                }
            }
        }
        // Saved under another name of a server of the list (`localhost`
        // then, `127.0.0.1` now).
        let deadline = Instant::now() + ALIAS_WAIT;
        for server in config.servers.all() {
            let others =
                crate::resume::other_hosts(dir, &server.host, server.port, &config.username);
            for host in same_server(&server.host, others, server.port, deadline) {
                if let Some(mut other) = open(&host, server.port) {
                    if let Some(saved) = other.load() {
                        log::info!("taking the session saved for {host}");
                        break 'found (Some(other), Some(saved));
                    }
                }
            }
        }
        (file, None)
    };
    let locked = held && failed.is_none();
    if file.is_none() && locked {
        log::info!("another client runs with this name and server: its session is its own");
    }
    let not_taken = if saved.is_some() {
        None
    } else if let Some(line) = unreadable {
        Some(NotTaken::Unreadable(line))
    } else {
        locked.then_some(NotTaken::Locked)
    };
    Store {
        unsaved: failed.filter(|_| file.is_none()),
        file,
        saved,
        not_taken,
    }
}

/// Connects and joins as the configured user. With the session of a lost
/// connection, asks the server for it back (its messages not yet
/// acknowledged are sent again); it is taken only if the handshake works.
fn join(config: &Config, mut previous: Option<&mut ClientSession>) -> Result<Joined, ClientError> {
    // A server that asks for a password it was not given: ask the user (in
    // a terminal), then connect again. A password typed wrong is asked
    // again, [`PASSWORD_TRIES`] times in all for each of the two; one from
    // a file or the environment is not.
    let mut typed = (0u32, 0u32);
    let mut silent = 0;
    // A certificate trusted on first use by a try that a password then
    // stopped: the next try finds it known, so it is said from here (the
    // server and its fingerprint), before the password is typed into
    // that connection, and again in the chat once joined.
    let mut first_seen: Option<(String, String)> = None;
    loop {
        let mut seen_now = None;
        let result = join_once(config, previous.as_deref_mut(), &mut seen_now);
        let result = match (result, &first_seen) {
            (Ok(mut joined), Some((server, fingerprint)))
                if joined.first_use.is_none() && *server == joined.server =>
            {
                joined.first_use = Some(fingerprint.clone());
                Ok(joined)
            }
            (result, _) => result,
        };
        if seen_now.is_some() {
            first_seen.clone_from(&seen_now);
        }
        // A server that took the connection but never answered (frozen,
        // say): with several, the next one is tried.
        if matches!(result, Err(ClientError::NoAnswer)) && silent + 1 < config.servers.len() {
            silent += 1;
            config.servers.move_on();
            continue;
        }
        let account = match &result {
            Err(ClientError::PasswordNeeded { account, .. }) => *account,
            Err(ClientError::Denied { code, reason })
                if (*code == RefuseCode::WRONG_PASSWORD && typed.0 > 0)
                    || (*code == RefuseCode::WRONG_ACCOUNT_PASSWORD && typed.1 > 0) =>
            {
                // Said where the password was typed, before asking again.
                eprintln!("{}", inert(reason));
                *code == RefuseCode::WRONG_ACCOUNT_PASSWORD
            }
            _ => return result,
        };
        let (tries, slot, prompt) = if account {
            (
                &mut typed.1,
                &config.passwords.account,
                format!("password for {}: ", inert(config.username.as_str())),
            )
        } else {
            (
                &mut typed.0,
                &config.passwords.server,
                "server password: ".to_string(),
            )
        };
        if *tries >= PASSWORD_TRIES {
            return result;
        }
        *tries += 1;
        let prompt = match &seen_now {
            Some((server, fingerprint)) => {
                format!("{}\n{prompt}", first_use_line(server, fingerprint))
            }
            None => prompt,
        };
        let Some(password) = ask_password(&prompt) else {
            return result;
        };
        *lock(slot) = Some(password);
    }
}

/// How often a password typed at the prompt is asked for, as `sudo` does.
const PASSWORD_TRIES: u32 = 3;

/// The notice of a certificate trusted now for the first time.
fn first_use_line(server: &str, fingerprint: &str) -> String {
    format!(
        "first TLS connection to {server}: its certificate (SHA-256 {fingerprint}) is now trusted; \
         compare it with the fingerprint the server printed"
    )
}

/// One try of [`join`]. A certificate trusted on first use is put in
/// `first_use` (the server shown, its fingerprint) whether or not the
/// join then works.
fn join_once(
    config: &Config,
    previous: Option<&mut ClientSession>,
    first_seen: &mut Option<(String, String)>,
) -> Result<Joined, ClientError> {
    let (tcp, to) = config.servers.connect(|s| connect(&s.host, s.port))?;
    let (stream, first_use) = secure(config, to, tcp)?;
    if let Some(fingerprint) = &first_use {
        *first_seen = Some((to.shown(), fingerprint.clone()));
    }
    let limits = Limits::default();
    let mut fresh = None;
    let session = match previous {
        Some(old) => {
            old.reconnect(Instant::now());
            if config.servers.is_another(to) {
                old.on_another_server();
            }
            old
        }
        None => fresh.insert(new_session(config, &limits)),
    };
    let (server, account) = config.passwords.get();
    // A password registered during the session (`/register`) is the
    // session's own: kept for its reconnects.
    let account = account.or_else(|| session.account_password().cloned());
    session.set_credentials(server, account);
    let mut reader = FrameReader::<Stream, ServerMessage>::new(stream.clone(), limits.max_frame);
    let mut write_half = stream.clone();
    let (username, welcome) = handshake(session, &mut reader, &mut write_half)?;
    let session = std::mem::replace(session, new_session(config, &limits));
    config.servers.joined_on(to);
    Ok(Joined {
        stream,
        session,
        reader,
        username,
        welcome,
        limits,
        first_use,
        server: to.shown(),
    })
}

/// With `--tls`, the TLS handshake on `tcp`, before anything of imchat is
/// sent; the fingerprint of a certificate trusted now for the first time.
fn secure(
    config: &Config,
    server: &Server,
    tcp: TcpStream,
) -> Result<(Stream, Option<String>), ClientError> {
    let Some(trust) = &config.tls else {
        return Ok((Stream::plain(tcp), None));
    };
    let (stream, verified) = tls::connect(tcp, &server.host, server.port, trust, HANDSHAKE_WAIT)
        .map_err(|e| ClientError::Tls(inert(&e.to_string()).into_owned()))?;
    let first_use = match verified {
        Verified::FirstUse { fingerprint } => Some(fingerprint),
        _ => None,
    };
    Ok((Stream::tls(stream), first_use))
}

/// The wait before reconnect try `attempt` (1, 2, …): 1 s, 2 s, 4 s …
/// at most [`BACKOFF_MAX`], times `1 + jitter / 4` for a `jitter` in
/// −1..=1 (±25 %, so clients cut at once do not come back at once).
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(BACKOFF_MAX);
    base.mul_f64(1.0 + jitter.clamp(-1.0, 1.0) / 4.0)
}

/// Connects, shows what the client does through the view the terminal
/// calls for, and runs until the user quits (`Ok`) or the connection ends
/// for good (`Err`).
pub fn run(config: Config) -> Result<(), ClientError> {
    // A CA file is read before the server is reached: one that cannot
    // be used leaves no half-made connection in the server's log.
    if let Some(trust) = &config.tls {
        trust
            .check()
            .map_err(|e| ClientError::Tls(inert(&e.to_string()).into_owned()))?;
    }
    // A run that was killed left its session: ask for it back.
    let Store {
        file: store,
        saved,
        unsaved,
        not_taken,
    } = open_store(&config);
    // The last run quit while the server was away: the session is taken
    // back only to tell the server, then the user joins afresh.
    let quit_reason = store
        .as_ref()
        .filter(|_| saved.is_some())
        .and_then(SessionFile::quit_reason)
        .map(str::to_owned);
    let mut restored = saved.map(|s| {
        let mut session = new_session_from(&config, &Limits::default(), Some(s));
        if let Some(reason) = &quit_reason {
            session.quit_on_resume(reason);
        }
        session
    });
    // A run that never joins leaves no lock file (and the session an
    // earlier run saved as it was).
    let release = |store: Option<SessionFile>| {
        if let Some(file) = store {
            file.release();
        }
    };
    let mut first = match first_join(&config, restored.as_mut()) {
        Ok(first) => first,
        Err(e) => {
            if matches!(e, ClientError::ResumeRefused(_)) {
                // The saved session is over: presented again, it would
                // only be refused again (and counted against the address).
                if let Some(file) = store {
                    file.close();
                }
            } else {
                release(store);
            }
            return Err(with_not_taken(e, not_taken.as_ref()));
        }
    };
    if first.session.is_closed() {
        // Its quit, queued at the welcome, goes out before the wait.
        first.send_queued();
        first.wait_close(QUIT_CLOSE_WAIT);
        let fresh = match first_join(&config, None) {
            Ok(fresh) => fresh,
            Err(e) => {
                release(store);
                return Err(e);
            }
        };
        first = Joined {
            first_use: first.first_use.take().or(fresh.first_use),
            ..fresh
        };
    }
    let (view, input, quit) = match ui::make_view(
        first.username.as_str(),
        config.json,
        config.history_file.clone(),
        config.chat_log.as_deref(),
    ) {
        Ok(made) => made,
        Err(e) => {
            // Joined already: leave, or the name waits out its grace
            // period as a user no one can reach.
            let mut first = first;
            first.leave();
            if let Some(file) = store {
                file.close();
            }
            return Err(io_err("starting the interface")(e));
        }
    };
    quit_on_signals(quit);
    let ask_offers = config.ask_when_piped || io::IsTerminal::is_terminal(&io::stdin());
    // A run killed in unicast mode starts in it again: its next line stays
    // private, as the user meant it.
    let mode = store
        .as_ref()
        .filter(|_| saved.is_some() && quit_reason.is_none())
        .and_then(SessionFile::unicast)
        .and_then(|u| Username::new(u).ok())
        .map_or(Mode::Broadcast, Mode::Unicast);
    let app = Arc::new(App {
        scripted: !view.is_terminal(),
        view,
        config,
        mode: Mutex::new(mode),
        me: Mutex::new(first.username.as_str().to_string()),
        link: Mutex::new(Link::Closed {
            reason: "not connected yet".into(),
        }),
        cut_off: AtomicBool::new(false),
        roster: Mutex::new(BTreeMap::new()),
        held_echoes: Mutex::new(VecDeque::new()),
        failed_transfers: AtomicUsize::new(0),
        failed_requests: AtomicUsize::new(0),
        unsent_lines: AtomicUsize::new(0),
        ask_offers,
        parting: Mutex::new(String::new()),
        store: Mutex::new(store),
        store_failed: AtomicBool::new(false),
        quit_offline: AtomicBool::new(false),
    });
    if quit_reason.is_some() {
        app.notice(QUIT_TOLD_LINE);
    }
    // A session file that gave nothing: this run did not resume.
    if let Some(NotTaken::Unreadable(line)) = &not_taken {
        app.notice(&format!("{line}; starting a new session"));
    }
    // Said on the screen too: the log is hidden behind it.
    if let Some(why) = unsaved {
        app.notice(&unsaved_line(&why));
    }
    // Pushes cut off by the end of an earlier run (a kill, a crash) left
    // their `.part` files, which no one can resume.
    app.removed_parts_notice(&files::remove_abandoned_parts(&files::received_dir(
        &app.config.download_dir,
    )));
    let result = app.main_loop(first, &input);
    if matches!(result, Err(ClientError::ResumeRefused(_))) {
        // Refused on reconnecting: the session is over, as at the start.
        app.forget();
    }
    let reason = match &result {
        Ok(()) => "quit".to_string(),
        Err(e) => e.to_string(),
    };
    app.set_link(Link::Closed { reason });
    if app.quit_offline.load(Ordering::SeqCst) && app.view.is_terminal() {
        // Under the screen put back, where the user still sees it.
        app.view.finish(Some(&format!("*** {QUIT_OFFLINE_LINE}")));
    } else {
        app.view.finish(None);
    }
    result
}

/// How long the server is given to close the connection of a session
/// taken back only to send the quit of the run before (see [`run`]).
const QUIT_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Said when the user quits with no connection: the server is told by
/// the next start ([`App::quit_offline`]).
const QUIT_OFFLINE_LINE: &str =
    "quit while not connected: the server could not be told; the next start tells it";

/// Said by the start after such a quit.
const QUIT_TOLD_LINE: &str = "your last run quit while the server was away: the server is told now";

/// The first connection. With `--reconnect`, a server that refuses us for
/// now (full, or cut off from the rest of its cluster) is asked again with
/// [`backoff`], as after a lost connection, instead of the client exiting.
fn first_join(
    config: &Config,
    restored: Option<&mut ClientSession>,
) -> Result<Joined, ClientError> {
    let mut restored = restored;
    let mut attempt = 1u32;
    loop {
        match join(config, restored.as_deref_mut()) {
            Err(e) if config.reconnect == Some(true) && e.is_busy() => {
                let wait = backoff(attempt, fastrand::f64() * 2.0 - 1.0);
                eprintln!(
                    "imchat-client: {e}; trying again in {}",
                    human_duration(wait)
                );
                thread::sleep(wait);
                attempt = attempt.saturating_add(1);
            }
            other => return other,
        }
    }
}

/// Set once a signal asked the client to quit: it leaves without waiting
/// for its transfers, as a script's end of input would.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// How long a quit asked for by a signal may take (the server told, the
/// terminal restored) before the client ends without it.
const SIGNAL_QUIT_WAIT: Duration = Duration::from_secs(3);

/// SIGTERM, SIGHUP (the terminal was closed) and SIGINT quit as `/quit`
/// does: the server is told, and the others see the user leave at once
/// instead of after the wait for a resume that a lost connection gets. A
/// second signal, or a quit that takes longer than [`SIGNAL_QUIT_WAIT`],
/// ends the client at once. (`kill -9` cannot be caught: that is a lost
/// connection, which the next run resumes.)
fn quit_on_signals(quit: ui::QuitSender) {
    let quit = Arc::new(quit);
    let installed = ctrlc::set_handler(move || {
        if SIGNALLED.swap(true, Ordering::AcqRel) {
            crate::screen::restore_terminal();
            std::process::exit(1);
        }
        let quit = Arc::clone(&quit);
        let _ = thread::Builder::new()
            .name("signal-quit".into())
            .spawn(move || {
                // The send waits for the client to take it (a script's
                // input): on a thread of its own, so the deadline holds.
                let _ = thread::Builder::new().spawn(move || quit.quit());
                thread::sleep(SIGNAL_QUIT_WAIT);
                log::warn!(
                    "quitting took more than {}s: ending without it",
                    SIGNAL_QUIT_WAIT.as_secs()
                );
                crate::screen::restore_terminal();
                std::process::exit(1);
            });
    });
    if let Err(e) = installed {
        log::warn!("signals will end the client without telling the server: {e}");
    }
}

/// What ended serving one connection.
enum Served {
    /// The user quit (and a script's answers arrived).
    Quit,
    /// The connection ended; `pending` are lines that could not be sent
    /// (the one cut, and the rest of its paste).
    Ended { end: End, pending: Vec<String> },
}

/// Whether to make a new connection after one ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconnect {
    /// Exit with the reason.
    No,
    /// One try at once; exit if it fails.
    Once,
    /// Keep trying with backoff until it works or the user quits.
    Keep,
}

/// The policy for `end`: `--reconnect` / `--no-reconnect` decide when
/// given; otherwise the full-screen interface keeps trying, and a script
/// tries once at once after a drop without a shutdown notice (a network
/// blip), so that a server going away still ends it with an error. A
/// script given `several` servers (a cluster's) tries once at once after
/// a shutdown too: the next server of its list is another one, which may
/// serve it (a server of a cluster stopped for an upgrade, one at a time).
fn reconnect_policy(
    option: Option<bool>,
    terminal: bool,
    shutdown: bool,
    several: bool,
) -> Reconnect {
    match (option, terminal, shutdown, several) {
        (Some(true), ..) | (None, true, ..) => Reconnect::Keep,
        (Some(false), ..) | (None, false, true, false) => Reconnect::No,
        (None, false, false, _) | (None, false, true, true) => Reconnect::Once,
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ClientError> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(drop)
        .map_err(|source| ClientError::Io {
            what: "starting a thread",
            source,
        })
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Joined {
    /// Reads (and drops) what the server sends until it closes the
    /// connection, for at most `wait`: a session that sent its quit, so
    /// that the server has ended it before the user joins again.
    fn wait_close(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.tcp().set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.reader.read_message() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
    }

    /// Quits the session just joined (the client cannot go on): the
    /// server ends it at once and the others see the user leave.
    fn leave(&mut self) {
        self.session.quit("");
        self.send_queued();
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
    }

    /// Writes what the session has queued since the welcome (the
    /// handshake leaves it queued, for [`Conn::start`] to send once the
    /// new token is saved), for a session that gets no [`Conn`]: one
    /// closed at its welcome (a quit on resume), or one left at once.
    fn send_queued(&mut self) {
        while let Some(m) = self.session.poll_transmit() {
            if self.stream.write_all(&m.to_frame()).is_err() {
                break;
            }
        }
        let _ = self.stream.flush();
    }
}

/// Sends the `Hello` and waits for the answer, on this thread, before
/// anything else runs. Returns the registered name and the welcome text.
fn handshake(
    session: &mut ClientSession,
    reader: &mut FrameReader<Stream, ServerMessage>,
    w: &mut Stream,
) -> Result<(Username, String), ClientError> {
    let lost = |e: io::Error| {
        log::info!("handshake: {e}");
        ClientError::ConnectionLost
    };
    reader
        .get_ref()
        .tcp()
        .set_read_timeout(Some(HANDSHAKE_WAIT))
        .map_err(lost)?;
    loop {
        while let Some(m) = session.poll_transmit() {
            w.write_all(&m.to_frame()).map_err(lost)?;
        }
        let msg = match reader.read_message() {
            Ok(Some(m)) => m,
            Ok(None) => return Err(ClientError::ConnectionLost),
            Err(TransportError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::NoAnswer);
            }
            Err(TransportError::Io(e)) => return Err(lost(e)),
            // A TLS server answers a plaintext hello with a TLS alert.
            Err(TransportError::Decode(_)) if !w.is_tls() => return Err(ClientError::NotImchat),
            Err(e) => return Err(ClientError::ConnectionBroken(e.to_string())),
        };
        session.handle_message(msg, Instant::now());
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::Welcome { username, text, .. } => {
                    reader
                        .get_ref()
                        .tcp()
                        .set_read_timeout(None)
                        .map_err(lost)?;
                    // A server that takes larger frames sends them too.
                    reader.decoder_mut().set_max_frame(session.frame_limit());
                    // What the session sends after the welcome (its first
                    // frame, which makes the server forget the token just
                    // presented) stays queued until the new token is saved:
                    // see `Conn::start`.
                    return Ok((username, text));
                }
                ClientEvent::Refused { code, reason } => {
                    let reason = if reason.is_empty() {
                        code.describe().to_string()
                    } else {
                        inert(&reason).into_owned()
                    };
                    return Err(match code {
                        RefuseCode::PASSWORD_REQUIRED => ClientError::PasswordNeeded {
                            reason,
                            how: "--password-file or IMCHAT_PASSWORD",
                            account: false,
                        },
                        RefuseCode::NAME_PROTECTED => ClientError::PasswordNeeded {
                            reason,
                            how: "--account-password-file or IMCHAT_ACCOUNT_PASSWORD",
                            account: true,
                        },
                        RefuseCode::WRONG_PASSWORD
                        | RefuseCode::WRONG_ACCOUNT_PASSWORD
                        | RefuseCode::TOO_MANY_ATTEMPTS
                        | RefuseCode::BANNED => ClientError::Denied { reason, code },
                        _ if session.is_resume_refused() => ClientError::ResumeRefused(reason),
                        _ => ClientError::Refused { reason, code },
                    });
                }
                ClientEvent::Shutdown { reason } => {
                    return Err(ClientError::Shutdown(inert(&reason).into_owned()));
                }
                other => log::debug!("before the welcome: {other:?}"),
            }
        }
    }
}

/// The notice of a resumed session: what was lost, if anything.
fn resumed_line(dropped: u64) -> String {
    match dropped {
        0 => "resumed".to_string(),
        1 => "resumed; 1 message was lost while you were away".to_string(),
        n => format!("resumed; {n} messages were lost while you were away"),
    }
}

/// The latest time a view shows: 9999-12-31 23:59:59 UTC.
const LATEST_SHOWN: Duration = Duration::from_secs(253_402_300_799);

/// A time from the wire as the views get it. A time past the year 9999
/// (a hostile or broken server's: any u64 is on the wire) is the last
/// second of 9999: local time cannot be computed far beyond.
fn shown_time(time: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(time.unix_millis()).min(LATEST_SHOWN)
}

/// A notice of what the server noted at `time` (a join, a leave) as the
/// views get it: with that time, as a chat has its own.
fn timed_notice(time: Timestamp, text: String, missed: bool) -> Entry {
    Entry::NoticeAt {
        time: shown_time(time),
        text,
        missed,
    }
}

/// A chat routed to us as the views get it: its texts raw, as the server
/// sent them (a view that shows them on a terminal makes them inert).
fn chat_entry(chat: RoutedChat) -> ChatEntry {
    let RoutedChat {
        time,
        from,
        private,
        kind,
        text,
        history,
        ..
    } = chat;
    ChatEntry {
        time: shown_time(time),
        from: from.as_str().to_owned(),
        to: None,
        private,
        own: false,
        action: kind == ChatKind::Action,
        history,
        missed: false,
        text,
    }
}

/// Longest part of a message's text an error quotes.
const QUOTE_MAX: usize = 60;

/// True for the commands whose answer this client gives itself, at once
/// or after a check (`/help`, `/mode`, `/accept` with nothing offered,
/// `/register` without a password, `/sendfile`'s `offering …`): a
/// script's line of these waits until the answers to the lines before it
/// are shown ([`Conn::catch_up`]). The requests the server answers wait
/// only when they are refused here (see [`Conn::command`]), so that a
/// script's chat is not slowed by a round trip per line.
fn answered_here(cmd: &Command) -> bool {
    match cmd {
        Command::Nothing | Command::Quit(_) => false,
        Command::SetMode(_)
        | Command::SendFile { .. }
        | Command::Accept(_)
        | Command::Decline(_)
        | Command::Cancel(_)
        | Command::Ignore(_)
        | Command::Unignore(_)
        | Command::Register => true,
        other => works_offline(other),
    }
}

/// What the user is told of a request this client refused (nothing was
/// sent). A text over the limit says its unit, as the server's own
/// refusal does (`… longer than the limit of 65536 bytes`).
fn usage_line(e: &UsageError) -> String {
    match e {
        UsageError::TextTooLong { len, max } => {
            format!("message of {len} bytes is longer than the limit of {max} bytes")
        }
        other => other.to_string(),
    }
}

/// The start of a message's text, as an error quotes it.
fn quote(text: &str) -> String {
    let mut quoted: String = text.chars().take(QUOTE_MAX).collect();
    if text.chars().count() > QUOTE_MAX {
        quoted.push('…');
    }
    quoted
}

/// ` to bob`, or nothing for everyone.
fn to_whom(to: &Recipient) -> String {
    match to {
        Recipient::Everyone => String::new(),
        Recipient::User(u) => format!(" to {u}"),
    }
}

/// The error for a message given up before the server acknowledged it.
fn not_sent_line(to: &Recipient, text: &str) -> String {
    format!(
        "message{} not sent: \"{}\" (too many were waiting for the server; it may not have arrived)",
        to_whom(to),
        quote(text)
    )
}

/// The error for a message of ours the server refused (`reason`): it was
/// shown as ours when sent, so the error says which one did not arrive,
/// by its recipient and the start of its text (`quoted`, see [`quote`]).
/// This one line is all a user, a script or a program (`--json`) needs to
/// tell it was not delivered.
fn refused_line(to: &Recipient, quoted: &str, reason: &str) -> String {
    format!(
        "message{} not delivered: \"{quoted}\" ({reason})",
        to_whom(to)
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// The end of a push of ours: to how many it went, and how many of those
/// who had accepted it did not get it whole (they left, or their server
/// dropped out of the cluster).
fn sent_line(name: &FileName, receivers: u32, accepted: u32) -> String {
    let missed = accepted.saturating_sub(receivers);
    if missed == 0 {
        format!("sent {name} to {receivers} user(s)")
    } else {
        format!(
            "sent {name} to {receivers} user(s); {missed} of the {accepted} who accepted it did not get it whole"
        )
    }
}

fn mode_line(mode: &Mode) -> String {
    match mode {
        Mode::Broadcast => "mode: broadcast".to_string(),
        Mode::Unicast(u) => format!("mode: unicast to {u}"),
    }
}

impl App {
    /// Says which `.part` files of received/ were deleted as left by a
    /// push that was cut off (see [`files::remove_abandoned_parts`]).
    fn removed_parts_notice(&self, removed: &[PathBuf]) {
        for part in removed {
            let name = part
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            self.notice(&format!(
                "removed {}, left by a push that was cut off",
                inert(&name)
            ));
        }
    }

    fn notice(&self, text: &str) {
        self.view.show(Entry::Notice(text.to_string()));
    }

    /// What the client does when its connection ends ([`reconnect_policy`]
    /// for this client): `shutdown`, at the server's shutdown notice.
    fn reconnect_policy(&self, shutdown: bool) -> Reconnect {
        reconnect_policy(
            self.config.reconnect,
            self.view.is_terminal(),
            shutdown,
            self.config.servers.len() > 1,
        )
    }

    /// A file's size in a notice: for people (the full-screen client) as
    /// its offer and its transfer row show it (`6.0 GiB`); for scripts
    /// (plain lines, `--json` notices) the exact count in bytes their lines
    /// have always carried (`6442450944 bytes`).
    fn size_shown(&self, bytes: u64) -> String {
        if self.scripted {
            byte_count(bytes)
        } else {
            human_size(bytes)
        }
    }

    /// A notice of what the server noted at `time` (a join, a leave):
    /// shown with that time, as a chat is, not the time it arrived.
    fn notice_at(&self, time: Timestamp, text: &str, missed: bool) {
        self.view.show(timed_notice(time, text.to_owned(), missed));
    }

    /// Shows the error line `text`: something asked for failed (a
    /// command refused here or by the server, a transfer, a message),
    /// which a script's exit code counts.
    fn error(&self, text: &str) {
        if self.scripted {
            self.failed_requests.fetch_add(1, Ordering::SeqCst);
        }
        self.view.show(Entry::Error(text.to_string()));
    }

    /// A transfer that failed: an error line when it is `ours` (a download
    /// or a push of ours, a failure a script's exit code counts, as a
    /// refused command is), a notice for a push to us that another user's
    /// side or the connection ended.
    fn transfer_failure(&self, ours: bool, text: &str) {
        if ours {
            self.error(text);
        } else {
            self.notice(text);
        }
    }

    /// `n` lines given were not sent, as `text` says: shown as an error;
    /// a script also gets it on stderr, and its exit code says so (see
    /// [`quit_result`](Self::quit_result)). The full-screen client shows
    /// it only: the user saw it.
    fn unsent(&self, n: usize, text: &str) {
        self.error(text);
        if self.scripted {
            self.unsent_lines.fetch_add(n, Ordering::SeqCst);
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "imchat-client: {}", inert(text));
        }
    }

    fn plain(&self, text: &str) {
        self.view.show(Entry::Plain(text.to_string()));
    }

    /// Tells the view who we are, where plain text goes and the link.
    fn status(&self) {
        let status = Status {
            me: lock(&self.me).clone(),
            target: match &*lock(&self.mode) {
                Mode::Broadcast => None,
                Mode::Unicast(u) => Some(u.as_str().to_owned()),
            },
            link: lock(&self.link).clone(),
            cut_off: self.cut_off.load(Ordering::SeqCst),
        };
        self.view.status(&status);
    }

    fn set_link(&self, link: Link) {
        *lock(&self.link) = link;
        self.status();
    }

    /// Saves what the next run needs to take `session` back: at once with
    /// `force` (a new `Welcome`), else when due (see [`SessionFile::save`]).
    /// A session the server offers no resume for is not kept.
    fn remember(&self, session: &Mutex<ClientSession>, force: bool) {
        let mut store = lock(&self.store);
        let Some(file) = store.as_mut() else {
            return;
        };
        let saved = lock(session).saved();
        let result = match saved {
            Some(saved) => file.save(&saved, force),
            None => {
                file.remove();
                Ok(())
            }
        };
        if let Err(e) = result {
            if !self.store_failed.swap(true, Ordering::SeqCst) {
                log::warn!("cannot save the session: {e}");
                self.notice(&unsaved_line(&e.to_string()));
            }
        }
    }

    /// The user quit with no connection: the server cannot be told, so
    /// the session stays on disk, marked as quit with the parting text,
    /// for the next start to tell it (see [`run`]); said, for a script.
    fn quit_offline(&self) {
        let parting = std::mem::take(&mut *lock(&self.parting));
        if let Some(file) = lock(&self.store).as_mut() {
            if let Err(e) = file.mark_quit(&parting) {
                log::warn!("cannot save the session: {e}");
            }
        }
        self.quit_offline.store(true, Ordering::SeqCst);
        if !self.view.is_terminal() {
            self.notice(QUIT_OFFLINE_LINE);
        }
    }

    /// The session ends for good (`/quit`): the next run starts afresh.
    fn forget(&self) {
        if let Some(file) = lock(&self.store).take() {
            file.close();
        }
    }

    /// Counts a download or push of ours that failed.
    fn transfer_lost(&self) {
        self.failed_transfers.fetch_add(1, Ordering::SeqCst);
    }

    /// The end of a normal quit: 0, unless a script's lines were not
    /// sent, its transfers failed (1), or any other of its requests
    /// failed (3: [`ClientError::RequestsFailed`]).
    ///
    /// A script learns of a failed download or push, of a line not
    /// sent, or of a refused command (a `/kick` by a non-operator, an
    /// unknown command) from the exit code. A user in the terminal saw
    /// each failure when it happened, and quitting is not a failure:
    /// `/quit` there exits 0 (SPEC §2).
    fn quit_result(&self) -> Result<(), ClientError> {
        if !self.scripted {
            return Ok(());
        }
        let lines = self.unsent_lines.load(Ordering::SeqCst);
        let transfers = self.failed_transfers.load(Ordering::SeqCst);
        if lines > 0 || transfers > 0 {
            return Err(ClientError::ScriptFailed { lines, transfers });
        }
        match self.failed_requests.load(Ordering::SeqCst) {
            0 => Ok(()),
            n => Err(ClientError::RequestsFailed(n)),
        }
    }

    /// Connections one after the other, until the user quits or one ends
    /// in a way the reconnect policy does not retry.
    fn main_loop(
        self: &Arc<Self>,
        mut joined: Joined,
        input: &Receiver<UserInput>,
    ) -> Result<(), ClientError> {
        let mut again = false;
        // Lines entered before a connection was cut that had not gone
        // yet (a paste paced under the rate): they go first on the next.
        let mut held: VecDeque<String> = VecDeque::new();
        loop {
            let conn = Conn::start(self, joined, again)?;
            let served = match conn.send_held(&mut held) {
                Some(quit) => quit,
                None => conn.serve(input),
            };
            let (end, cut_lines) = match served {
                Served::Quit => return conn.leave(),
                Served::Ended { end, pending } => (end, pending),
            };
            conn.abort();
            let shutdown = matches!(end, End::Shutdown(_));
            let mut policy = self.reconnect_policy(shutdown);
            if matches!(end, End::Kicked(_) | End::Replaced(_)) {
                policy = Reconnect::No;
            }
            if policy == Reconnect::No {
                // Told, not dropped in silence: the client stops here.
                conn.report_cut(end.cut_reason());
                conn.stop_transfers();
                if matches!(end, End::Kicked(_)) {
                    // A kick ends the session for good, as `/quit` does:
                    // the next start joins afresh, not told the kick again.
                    self.forget();
                }
                return Err(end.error());
            }
            // Why, as when the client stops: a download cut by a
            // shutdown says so, as the offers and pushes it cut do.
            conn.report_cut(end.cut_reason());
            // The line cut while it waited to go, and those entered after
            // it, wait for the next connection (not refused one by one).
            held.extend(cut_lines);
            let quit = self.hold_entered(input, &mut held);
            if quit {
                self.not_sent(held.len());
                conn.stop_transfers();
                self.quit_offline();
                return self.quit_result();
            }
            if !held.is_empty() && !self.scripted {
                self.notice(&format!(
                    "{} not sent yet: {} once reconnected",
                    lines(held.len()),
                    if held.len() == 1 {
                        "it goes"
                    } else {
                        "they go"
                    }
                ));
            }
            // The server lost is tried last (see `servers`).
            self.config.servers.move_on();
            let mut previous = conn.take_session();
            drop(conn);
            let reason = end.error().to_string();
            // In the chat too, not only on the status line; a shutdown's
            // notice said it already ("server shutting down: …;
            // reconnecting").
            if !shutdown {
                self.notice(&format!("disconnected ({reason}); reconnecting"));
            }
            joined = match policy {
                Reconnect::Once => {
                    self.set_link(Link::Reconnecting {
                        reason: reason.clone(),
                        attempt: 1,
                        retry_in: None,
                    });
                    match join(&self.config, Some(&mut previous)) {
                        Ok(j) => j,
                        Err(retry) => {
                            self.not_sent(held.len());
                            return Err(ClientError::ReconnectFailed {
                                lost: reason,
                                retry: retry.to_string(),
                            });
                        }
                    }
                }
                _ => match self.keep_reconnecting(reason, input, &mut previous)? {
                    Some(j) => j,
                    None => {
                        self.not_sent(held.len());
                        self.quit_offline();
                        return self.quit_result();
                    }
                },
            };
            again = true;
        }
    }

    /// Moves the lines already entered (read by nobody yet) into `held`;
    /// true if the user asked to quit after them. A script's lines are
    /// left where they are: it does not read them while it reconnects,
    /// and the end of its input (a quit) comes after them.
    fn hold_entered(&self, input: &Receiver<UserInput>, held: &mut VecDeque<String>) -> bool {
        if self.scripted {
            return false;
        }
        while let Ok(entered) = input.try_recv() {
            match entered {
                UserInput::Line(line) => held.push_back(line),
                UserInput::Lines(lines) => held.extend(lines),
                UserInput::Quit => return true,
                // Asked again by the next Tab once connected.
                UserInput::FetchFileNames => {}
            }
        }
        false
    }

    /// Says that `n` lines entered were never sent (the client quits
    /// without a connection).
    fn not_sent(&self, n: usize) {
        if n > 0 {
            self.unsent(n, &format!("{} not sent: no connection", lines(n)));
        }
    }

    /// Tries to connect again with [`backoff`] until it works (`Some`),
    /// the user quits (`None`) or the server refuses us in a way retrying
    /// does not change ([`ClientError::is_final`]: banned, a wrong
    /// password), which ends the client as at its first connection.
    /// Meanwhile a user's lines get an answer (commands that need no
    /// server run); a script's wait.
    fn keep_reconnecting(
        &self,
        mut reason: String,
        input: &Receiver<UserInput>,
        previous: &mut ClientSession,
    ) -> Result<Option<Joined>, ClientError> {
        let mut attempt = 1u32;
        let mut said = String::new();
        loop {
            let deadline = Instant::now() + backoff(attempt, fastrand::f64() * 2.0 - 1.0);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Whole seconds, rounded up: `reconnecting in 4s`.
                let shown =
                    Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
                self.set_link(Link::Reconnecting {
                    reason: reason.clone(),
                    attempt,
                    retry_in: Some(shown),
                });
                // Until the shown second changes.
                let step = left.saturating_sub(shown.saturating_sub(Duration::from_secs(1)));
                if self.scripted {
                    // A script's lines wait for the connection, unread;
                    // a signal quits at once, as a quit while not
                    // connected (its quit waits in the input, unread too).
                    let until = Instant::now() + step;
                    while !SIGNALLED.load(Ordering::Acquire) && Instant::now() < until {
                        thread::sleep(
                            WAIT_STEP.min(until.saturating_duration_since(Instant::now())),
                        );
                    }
                    if SIGNALLED.load(Ordering::Acquire) {
                        return Ok(None);
                    }
                    continue;
                }
                match input.recv_timeout(step) {
                    Ok(UserInput::Line(line)) => {
                        if self.offline_lines(&[line], shown) == Flow::Quit {
                            return Ok(None);
                        }
                    }
                    Ok(UserInput::Lines(lines)) => {
                        if self.offline_lines(&lines, shown) == Flow::Quit {
                            return Ok(None);
                        }
                    }
                    Ok(UserInput::Quit) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Ok(None);
                    }
                    // Asked again by the next Tab once connected.
                    Ok(UserInput::FetchFileNames) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            self.set_link(Link::Reconnecting {
                reason: reason.clone(),
                attempt,
                retry_in: None,
            });
            match join(&self.config, Some(previous)) {
                Ok(j) => return Ok(Some(j)),
                // Banned meanwhile, say: retrying would only be refused again.
                Err(e) if e.is_final() => return Err(e),
                Err(e) => {
                    log::info!("reconnect try {attempt}: {e}");
                    let why = e.to_string();
                    // In the chat once per new reason (a piped client has
                    // no status line), not at every try; a reason that
                    // differs only in its numbers ("try again in 46 s") is
                    // the same.
                    let gist: String = why.chars().filter(|c| !c.is_ascii_digit()).collect();
                    if gist != said {
                        self.notice(&format!("could not reconnect ({why}); trying again"));
                    }
                    said = gist;
                    reason = why;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Lines entered while there is no connection (one typed, or a
    /// paste's): commands that need no server run, in order; the others
    /// are refused in one error line, however many they are.
    fn offline_lines(&self, lines: &[String], retry_in: Duration) -> Flow {
        let (runs, refused) = offline_plan(lines);
        let mut flow = Flow::Continue;
        for cmd in runs {
            let cmd = match cmd {
                Ok(c) => c,
                Err(e) => {
                    self.error(&e.to_string());
                    continue;
                }
            };
            match cmd {
                Command::Quit(reason) => {
                    *lock(&self.parting) = reason;
                    flow = Flow::Quit;
                    break;
                }
                Command::Transfers => self.notice("no transfers running"),
                other => {
                    self.local_command(other);
                }
            }
        }
        if refused > 0 {
            self.error(&not_connected(refused, retry_in));
        }
        flow
    }

    /// Runs a command that only touches this client; gives it back if it
    /// is not one.
    fn local_command(&self, cmd: Command) -> Option<Command> {
        match cmd {
            Command::Nothing => {}
            Command::Help(topic) => {
                for line in help_lines(self.view.text_width().unwrap_or(PLAIN_WIDTH), topic) {
                    self.plain(&line);
                }
            }
            Command::Clear => self.view.clear(),
            Command::NickList => {
                if !self.view.toggle_nicklist() {
                    self.notice("the nick list exists only in the full-screen interface");
                }
            }
            Command::ShowMode => {
                let line = mode_line(&lock(&self.mode));
                self.notice(&line);
            }
            Command::SetMode(Mode::Broadcast) => self.set_mode(Mode::Broadcast),
            other => return Some(other),
        }
        None
    }

    /// Sets the mode, kept on disk with the session before it is shown.
    fn set_mode(&self, mode: Mode) {
        if let Some(file) = lock(&self.store).as_mut() {
            file.set_unicast(match &mode {
                Mode::Broadcast => None,
                Mode::Unicast(u) => Some(u.as_str()),
            });
            if let Err(e) = file.save_mode() {
                if !self.store_failed.swap(true, Ordering::SeqCst) {
                    log::warn!("cannot save the session: {e}");
                    self.notice(&unsaved_line(&e.to_string()));
                }
            }
        }
        self.notice(&mode_line(&mode));
        *lock(&self.mode) = mode;
        self.status();
    }

    /// Shows our own message, as sent.
    fn echo(&self, to: Option<&Username>, action: bool, text: &str) {
        let me = lock(&self.me).clone();
        self.view.show(Entry::Chat(ChatEntry {
            time: SystemTime::now(),
            from: me,
            to: to.map(|u| self.registered(u).as_str().to_owned()),
            private: to.is_some(),
            own: true,
            action,
            history: false,
            missed: false,
            text: text.to_owned(),
        }));
    }

    /// `name` is us, compared as the server compares names (ignoring case
    /// and look-alike letters, see [`imchat_cli::names::key`]).
    fn is_me(&self, name: &Username) -> bool {
        Username::new(lock(&self.me).as_str())
            .is_ok_and(|me| imchat_cli::names::key(&me) == imchat_cli::names::key(name))
    }

    /// The user `name` is online, as far as the roster knows.
    fn is_online(&self, name: &Username) -> bool {
        lock(&self.roster).contains_key(&name.key())
    }

    /// Takes our held message `client_id` out of
    /// [`held_echoes`](Self::held_echoes): shown when `delivered`, dropped
    /// when refused or given up.
    fn release_echo(&self, client_id: u64, delivered: bool) {
        let held = {
            let mut held = lock(&self.held_echoes);
            let at = held.iter().position(|(id, ..)| *id == client_id);
            at.and_then(|at| held.remove(at))
        };
        if let Some((_, to, action, text)) = held.filter(|_| delivered) {
            self.echo(Some(&to), action, &text);
        }
    }

    /// `name` as its user registered it (`bob` for `BOB`), if the roster
    /// knows it; else as given.
    fn registered(&self, name: &Username) -> Username {
        lock(&self.roster)
            .get(&name.key())
            .and_then(|n| Username::new(n.as_str()).ok())
            .unwrap_or_else(|| name.clone())
    }
}

impl Conn {
    /// Starts the threads of a joined connection and tells the view.
    fn start(app: &Arc<App>, joined: Joined, again: bool) -> Result<Arc<Conn>, ClientError> {
        let Joined {
            stream,
            mut session,
            reader,
            username,
            welcome,
            limits,
            first_use,
            server,
        } = joined;
        *lock(&app.me) = username.as_str().to_owned();
        // What came with the welcome (whether the session was given back),
        // read before any thread can take it.
        let early: Vec<ClientEvent> = std::iter::from_fn(|| session.poll_event()).collect();
        // Who is online is shown on joining, unless the screen already
        // shows this session (a reconnect that got it back, whose joins
        // and leaves meanwhile follow). A first run that resumes a saved
        // session starts with an empty screen: it is shown then too.
        let resumed = early
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { .. }));
        let join_who = if again && resumed {
            WhoFor::Roster
        } else {
            WhoFor::Join
        };
        if let Some(fingerprint) = first_use {
            app.notice(&first_use_line(&server, &fingerprint));
        }
        if again {
            app.notice(&format!("reconnected to {server}"));
        } else {
            app.notice(&format!("connected to {server} as {username}"));
            for line in welcome.lines() {
                app.plain(line);
            }
            // Only a mode restored from the saved session is set this early.
            let mode = lock(&app.mode).clone();
            if let Mode::Unicast(_) = mode {
                app.notice(&mode_line(&mode));
            }
        }
        let write_half = stream.clone();
        let (disk, disk_jobs) = mpsc::sync_channel(DISK_QUEUE);
        let (writer_done_tx, writer_done) = mpsc::channel::<()>();
        let (disk_done_tx, disk_done) = mpsc::channel::<()>();
        let conn = Arc::new(Conn {
            app: app.clone(),
            session: Mutex::new(session),
            outbox: Outbox::new(limits.max_outbound),
            chunk_size: limits.chunk_size,
            transfers: Mutex::new(Transfers::default()),
            closing: AtomicBool::new(false),
            end: Mutex::new(None),
            ended: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            listing: AtomicBool::new(false),
            listed: Mutex::new(Vec::new()),
            quiet_listed: Mutex::new(Vec::new()),
            accesses: Mutex::new(VecDeque::new()),
            lists_told: AtomicUsize::new(0),
            whos: Mutex::new(VecDeque::new()),
            whos_asked: AtomicU64::new(0),
            whos_answered: AtomicU64::new(0),
            disk,
            recycled: Mutex::new(Vec::new()),
            socket: stream,
            writer_done: Mutex::new(Some(writer_done)),
            disk_done: Mutex::new(Some(disk_done)),
            disk_jobs: AtomicUsize::new(0),
            sent_chats: Mutex::new(VecDeque::new()),
            max_unacked: limits.max_unacked.max(1),
            unechoed: Mutex::new(None),
            replay_through: AtomicU64::new(0),
        });
        fail::fail_point!("client-welcomed");
        // A new token came with the welcome: the next run needs it, saved
        // before the first frame after the welcome goes out (queued in the
        // session until the writer runs). That frame makes the server
        // forget the token presented; a run killed between the two would
        // leave only that dead token on disk, and the next start would be
        // refused its own name until the grace period ends.
        app.remember(&conn.session, true);
        // A new connection: its server says if it is cut off (after the
        // welcome, so perhaps among the early events).
        app.cut_off.store(false, Ordering::SeqCst);
        conn.handle(Drained {
            events: early,
            queue_full: false,
        });
        let c = conn.clone();
        spawn("writer", move || {
            if let Err(e) = c.outbox.run_writer(write_half) {
                log::info!("writing to the server failed: {e}");
                c.end(End::Lost(ClientError::ConnectionLost));
            }
            let _ = writer_done_tx.send(());
        })?;
        let c = conn.clone();
        spawn("disk", move || {
            c.disk_loop(&disk_jobs);
            let _ = disk_done_tx.send(());
        })?;
        let c = conn.clone();
        spawn("reader", move || c.read_loop(reader))?;
        let c = conn.clone();
        spawn("timer", move || c.timer_loop())?;
        app.set_link(Link::Connected { server });
        // The frames the welcome left queued (unacknowledged messages sent
        // again, else a ping) go out now, at once.
        conn.with_session(|_| ());
        // Who is online, for the roster (and `/mode unicast`'s check).
        let _ = conn.ask_who(join_who);
        Ok(conn)
    }

    /// Runs the lines held from the last connection, in order; stops at
    /// a cut (the rest stay held) or at a quit (returned).
    fn send_held(self: &Arc<Self>, held: &mut VecDeque<String>) -> Option<Served> {
        while let Some(line) = held.pop_front() {
            self.cut.store(false, Ordering::SeqCst);
            if self.command(&line) == Flow::Quit {
                return Some(Served::Quit);
            }
            if self.cut.load(Ordering::SeqCst) {
                held.push_front(line);
                break;
            }
        }
        None
    }

    /// Reads the user's lines and runs them until the user quits or the
    /// connection ends.
    fn serve(self: &Arc<Self>, input: &Receiver<UserInput>) -> Served {
        // The rest of a paste: its lines go one by one, as if typed.
        let mut queued: VecDeque<String> = VecDeque::new();
        loop {
            // A signal's quit may wait in the input behind lines not read
            // yet (a script's): it goes first.
            if SIGNALLED.load(Ordering::Acquire) {
                return Served::Quit;
            }
            if let Some(end) = self.take_end() {
                return Served::Ended {
                    end,
                    pending: queued.into(),
                };
            }
            if let Some(line) = queued.pop_front() {
                if let Some(served) = self.serve_line(line, &mut queued) {
                    return served;
                }
                continue;
            }
            let line = match input.recv_timeout(WAIT_STEP) {
                Ok(UserInput::Line(line)) => line,
                Ok(UserInput::Lines(lines)) => {
                    queued.extend(lines);
                    continue;
                }
                Ok(UserInput::FetchFileNames) => {
                    if let Err(e) = self.paced(0, ClientSession::fetch_file_names) {
                        log::info!("file names not asked for: {e}");
                    }
                    continue;
                }
                Ok(UserInput::Quit) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Served::Quit;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
            };
            if let Some(served) = self.serve_line(line, &mut queued) {
                return served;
            }
        }
    }

    /// Runs one line of [`serve`](Self::serve); how it ends, if it does
    /// (the line cut, and the rest of its paste, are pending).
    fn serve_line(self: &Arc<Self>, line: String, queued: &mut VecDeque<String>) -> Option<Served> {
        self.cut.store(false, Ordering::SeqCst);
        if self.command(&line) == Flow::Quit {
            return Some(Served::Quit);
        }
        if self.cut.load(Ordering::SeqCst) {
            if let Some(end) = self.take_end() {
                let mut pending = vec![line];
                pending.extend(queued.drain(..));
                return Some(Served::Ended { end, pending });
            }
        }
        None
    }

    /// Why the connection ended, once it did.
    fn take_end(&self) -> Option<End> {
        if !self.ended.load(Ordering::SeqCst) {
            return None;
        }
        lock(&self.end).take()
    }

    /// The user quits: a script waits for its answers (see
    /// [`settle`](Self::settle)), then `Quit` goes out and the connection
    /// closes.
    fn leave(&self) -> Result<(), ClientError> {
        match self.settle() {
            Ok(()) => {}
            Err(Some(end)) => {
                self.abort();
                // The downloads it waited for are cut: said, as when the
                // connection ends before the end of input.
                self.report_cut(end.cut_reason());
                self.stop_transfers();
                return Err(end.error());
            }
            Err(None) => {
                // Stopped by a signal: at once, not after the transfers
                // (a script's end of input waits for them); downloads
                // resume from what was written.
                self.report_cut_now("the client was stopped");
                self.stop_transfers();
            }
        }
        self.quit();
        let _ = self.socket.tcp().shutdown(Shutdown::Both);
        self.app.forget();
        self.app.quit_result()
    }

    /// Stops everything of this connection at once, but keeps the list of
    /// files pushed to us: the caller reports them cut ([`report_cut`](Self::report_cut))
    /// or drops them ([`stop_transfers`](Self::stop_transfers)).
    fn abort(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.outbox.abort();
        self.stop_pushes();
        let _ = self.socket.tcp().shutdown(Shutdown::Both);
    }

    /// `/ignore [user]`: ignores `user` (see [`ClientSession::ignore`]),
    /// or lists who is ignored.
    fn ignore(&self, who: Option<Username>) -> Result<(), UsageError> {
        let mut session = lock(&self.session);
        let line = match who {
            None => match session.ignored().as_slice() {
                [] => "you ignore no one".to_string(),
                names => {
                    let names: Vec<&str> = names.iter().map(Username::as_str).collect();
                    format!("you ignore {}", names.join(", "))
                }
            },
            Some(who) if session.ignore(&who)? => format!(
                "ignoring {who}: its messages and file offers are dropped until /unignore {who} or the client ends"
            ),
            Some(who) => format!("{who} is ignored already"),
        };
        drop(session);
        self.app.notice(&line);
        Ok(())
    }

    /// The session of this connection, to resume on the next one.
    fn take_session(&self) -> ClientSession {
        let limits = Limits::default();
        std::mem::replace(
            &mut *lock(&self.session),
            new_session(&self.app.config, &limits),
        )
    }

    /// After the connection was cut (`why`), before a new one or before
    /// the client stops: says which transfers were lost (downloads resume
    /// with `/download`; a file pushed to us cannot be resumed, its
    /// temporary file is deleted).
    fn report_cut(&self, why: &str) {
        self.wait_disk();
        self.report_cut_now(why);
    }

    /// [`report_cut`](Self::report_cut) without waiting for the disk to
    /// catch up: for a client stopped by a signal, which has seconds to
    /// quit. A download's part keeps what was written (its resume starts
    /// there); a file pushed to us is deleted all the same.
    fn report_cut_now(&self, why: &str) {
        let (downloads, received, pushes) = {
            let mut t = lock(&self.transfers);
            let mut downloads: Vec<(String, String)> = Vec::new();
            let mut received: Vec<(String, String)> = Vec::new();
            for (id, f) in t.incoming.drain() {
                let name = f.name.as_str().to_owned();
                match &f.from {
                    None => downloads.push((id.to_string(), name)),
                    // Pushed to us: it cannot be resumed, its part goes.
                    Some(_) => {
                        drop(f.file);
                        let _ = fs::remove_file(&f.part);
                        received.push((id.to_string(), name));
                    }
                }
            }
            downloads.extend(
                t.parts
                    .drain()
                    .map(|(id, (name, ..))| (id.to_string(), name.as_str().to_owned())),
            );
            let pushes: Vec<(String, String)> = t
                .pushes
                .drain()
                .map(|(id, p)| (id.to_string(), p.name.as_str().to_owned()))
                .collect();
            (downloads, received, pushes)
        };
        for (id, name) in downloads {
            self.app.transfer_lost();
            self.app.view.transfer_ended(&TransferEnd::new(
                id,
                Direction::Download,
                &name,
                Some(why),
            ));
            self.app.error(&format!(
                "transfer of {name} failed: {why}; /download {name} resumes it"
            ));
        }
        // Not ours: not counted in a script's exit code, as when the
        // pusher gives up (see `transfer_failed`).
        for (id, name) in received {
            self.app.view.transfer_ended(&TransferEnd::new(
                id,
                Direction::Receive,
                &name,
                Some(why),
            ));
            self.app
                .notice(&format!("transfer of {name} failed: {why}"));
        }
        for (id, name) in pushes {
            self.app.transfer_lost();
            self.app
                .view
                .transfer_ended(&TransferEnd::new(id, Direction::Send, &name, Some(why)));
            self.app.error(&format!("sending {name} failed: {why}"));
        }
        // The offers waiting for an answer die with the connection (the
        // session's reconnect withdraws them before the next welcome,
        // where no one hears it): their rows go now, or they stayed on
        // the screen for good, answered with "no offer #N is waiting".
        let offers = lock(&self.session).pending_offers();
        for (id, from, name, _) in offers {
            self.app.view.transfer_ended(&TransferEnd::new(
                id,
                Direction::Offer,
                name.as_str(),
                Some(why),
            ));
            self.app
                .notice(&format!("the offer of {name} from {from} ended: {why}"));
        }
    }

    /// Asks who is online, `why` saying what the answer is for.
    fn ask_who(&self, why: WhoFor) -> Result<bool, UsageError> {
        if !self.wait_to_send(0) {
            return Ok(false);
        }
        let mut whos = lock(&self.whos);
        let (result, drained) = self.session_call(ClientSession::who);
        if result.is_ok() {
            whos.push_back(why);
            if why.silent() {
                self.whos_asked.fetch_add(1, Ordering::SeqCst);
            }
        }
        drop(whos);
        self.handle(drained);
        result.map(|()| true)
    }

    /// Asks who is online now and waits for the answer: true once the
    /// roster is fresh.
    fn refresh_roster(&self) -> bool {
        if !matches!(self.ask_who(WhoFor::Roster), Ok(true)) {
            return false;
        }
        let ticket = self.whos_asked.load(Ordering::SeqCst);
        let deadline = Instant::now() + HANDSHAKE_WAIT;
        while self.whos_answered.load(Ordering::SeqCst) < ticket {
            if self.ended.load(Ordering::SeqCst) || Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// `/mode unicast <user>`: only to someone online.
    fn set_unicast(&self, to: Username) {
        if self.app.is_me(&to) {
            return self.app.error(&format!(
                "cannot send your lines to yourself ({to}); the mode stays as it was"
            ));
        }
        if !self.app.is_online(&to) {
            self.refresh_roster();
        }
        if self.app.is_online(&to) {
            return self.app.set_mode(Mode::Unicast(self.app.registered(&to)));
        }
        self.app.error(&format!(
            "{to} is not online (see /who); the mode stays as it was"
        ));
    }

    /// `/transfers`: one line per running transfer.
    fn list_transfers(&self) {
        let lines: Vec<String> = {
            let t = lock(&self.transfers);
            let now = Instant::now();
            let mut views: Vec<TransferView> = t
                .incoming
                .values()
                .map(|f| f.meter.view_at(now))
                .chain(t.pushes.values().map(|p| p.meter.view_at(now)))
                .collect();
            views.sort_by(|a, b| a.id.cmp(&b.id));
            // A script reads exact counts of bytes, as in its other
            // transfer lines; a person the rounded sizes of the rows.
            let scripted = self.app.scripted;
            let mut lines: Vec<String> = views
                .iter()
                .map(|v| {
                    if scripted {
                        v.line_in_bytes()
                    } else {
                        v.line()
                    }
                })
                .collect();
            lines.extend(
                t.parts
                    .iter()
                    .map(|(id, (name, ..))| format!("{id} ↓ {name}  asked for")),
            );
            lines
        };
        // Then the offers waiting for an answer.
        let offers = lock(&self.session).pending_offers();
        let lines = lines
            .into_iter()
            .chain(offers.into_iter().map(|(id, from, name, size)| {
                TransferView::offer(
                    id.to_string(),
                    from.as_str().to_owned(),
                    name.as_str().to_owned(),
                    size,
                )
                .line()
            }));
        let lines: Vec<String> = lines.collect();
        if lines.is_empty() {
            return self.app.notice("no transfers running");
        }
        for line in lines {
            self.app.notice(&line);
        }
    }

    /// `/cancel <id|name>`: a download (its `.part` stays, to resume), a
    /// push of ours, or a push to us.
    fn cancel(&self, what: &str) {
        let wanted_id = what.trim_start_matches('#');
        let is_id = !wanted_id.is_empty() && wanted_id.chars().all(|c| c.is_ascii_digit());
        let matches = |id: &TransferId, name: &FileName| {
            if is_id {
                id.to_string().trim_start_matches('#') == wanted_id
            } else {
                name.as_str() == what
            }
        };
        let mut t = lock(&self.transfers);
        let mut found: Vec<TransferId> = t
            .incoming
            .iter()
            .filter(|(id, f)| matches(id, &f.name))
            .map(|(id, _)| *id)
            .chain(
                t.pushes
                    .iter()
                    .filter(|(id, p)| matches(id, &p.name))
                    .map(|(id, _)| *id),
            )
            .chain(
                t.parts
                    .iter()
                    .filter(|(id, (n, ..))| matches(id, n))
                    .map(|(id, _)| *id),
            )
            .collect();
        found.sort_by_key(|id| id.0);
        found.dedup();
        let id = match found[..] {
            [id] => id,
            [] => {
                drop(t);
                // An offer waiting for an answer: cancelling it declines it.
                let offers = lock(&self.session).pending_offers();
                let offered: Vec<TransferId> = offers
                    .iter()
                    .filter(|(id, _, name, _)| matches(id, name))
                    .map(|(id, ..)| *id)
                    .collect();
                if let [id] = offered[..] {
                    if let Err(e) = self.answer_offer(Some(id.0), false) {
                        self.app.error(&usage_line(&e));
                    }
                    return;
                }
                return self
                    .app
                    .error(&format!("no running transfer is {what} (see /transfers)"));
            }
            _ => {
                drop(t);
                let ids: Vec<String> = found.iter().map(ToString::to_string).collect();
                return self.app.error(&format!(
                    "{what} names several transfers ({}): say which by name",
                    ids.join(", ")
                ));
            }
        };
        let (direction, name, message) = if let Some(f) = t.incoming.remove(&id) {
            let name = f.name.as_str().to_owned();
            drop(f.file);
            match f.from {
                None => (
                    Direction::Download,
                    name.clone(),
                    format!("cancelled the download of {name}; /download {name} resumes it"),
                ),
                Some(from) => {
                    let _ = fs::remove_file(&f.part);
                    let message = format!("cancelled receiving {name} from {from}");
                    (Direction::Receive, name, message)
                }
            }
        } else if let Some((name, part, file)) = t.parts.remove(&id) {
            drop(file);
            remove_if_empty(&part);
            let message = format!("cancelled the download of {name}; /download {name} resumes it");
            (Direction::Download, name.as_str().to_owned(), message)
        } else if let Some(p) = t.pushes.remove(&id) {
            p.stop.store(true, Ordering::SeqCst);
            let message = format!("cancelled sending {}", p.name);
            (Direction::Send, p.name.as_str().to_owned(), message)
        } else {
            return;
        };
        drop(t);
        let _ = self.with_session(|s| s.cancel(id, "cancelled"));
        self.app
            .view
            .transfer_ended(&TransferEnd::new(id, direction, &name, Some("cancelled")));
        self.app.notice(&message);
    }
    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The connection ended (the first reason is kept; the main thread
    /// stops at it).
    fn end(&self, end: End) {
        if self.closing() {
            return;
        }
        lock(&self.end).get_or_insert(end);
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Runs `f` on the session, queues what it wants sent, and returns the
    /// events to handle once the lock is gone.
    fn session_call<T>(&self, f: impl FnOnce(&mut ClientSession) -> T) -> (T, Drained) {
        let mut s = lock(&self.session);
        let out = f(&mut s);
        let mut queue_full = false;
        while let Some(m) = s.poll_transmit() {
            let frame: Frame = Arc::from(m.to_frame());
            match self.outbox.push(frame, m.is_bulk()) {
                Ok(()) => {}
                Err(PushError::Full { .. }) => queue_full = true,
                // Closed: we are leaving, nothing more goes out.
                Err(_) => {}
            }
        }
        let events = std::iter::from_fn(|| s.poll_event()).collect();
        (out, Drained { events, queue_full })
    }

    /// [`session_call`](Self::session_call), then handles the events.
    fn with_session<T>(&self, f: impl FnOnce(&mut ClientSession) -> T) -> T {
        let (out, drained) = self.session_call(f);
        self.handle(drained);
        out
    }

    fn handle(&self, drained: Drained) {
        if drained.queue_full {
            // The server let the queue's cap (megabytes) pile up unread:
            // it is stuck or hostile (a flood of pings it does not read
            // the answers to). Said once, as the reason the connection
            // ends, not once per frame dropped.
            self.end(End::Lost(ClientError::ConnectionBroken(
                "the server stopped reading what this client sends".into(),
            )));
        }
        for ev in drained.events {
            self.event(ev);
        }
    }

    /// A script's `/download` or `/sendfile` while as many transfers of
    /// ours are running as the server allows waits for one to end, as its
    /// lines wait for the rate: a list of downloads longer than the cap
    /// is not refused. A person at the terminal is told at once instead.
    /// False when the connection ended meanwhile (as
    /// [`wait_to_send`](Self::wait_to_send)), or when a signal asked the
    /// client to quit: the transfers running may take minutes, and the
    /// signal's quit waits in the input, unread, meanwhile (the loop of
    /// [`serve`](Self::serve) then quits).
    fn wait_for_transfer_room(&self) -> bool {
        if !self.app.scripted {
            return true;
        }
        while !lock(&self.session).has_transfer_room() {
            if self.ended.load(Ordering::SeqCst) {
                self.cut.store(true, Ordering::SeqCst);
                return false;
            }
            if SIGNALLED.load(Ordering::Acquire) {
                return false;
            }
            thread::sleep(WAIT_STEP);
        }
        true
    }

    /// Waits until a request (with `text_len` bytes of chat text, 0 for
    /// others) may go: within the rate the server announced, and with room
    /// in the outbound queue, so that nothing the user gives is dropped.
    /// Meanwhile the input is not read (back-pressure). False if the
    /// connection ended while waiting.
    fn wait_to_send(&self, text_len: usize) -> bool {
        loop {
            if self.ended.load(Ordering::SeqCst) {
                self.cut.store(true, Ordering::SeqCst);
                return false;
            }
            let now = Instant::now();
            let (at, full) = {
                let mut s = lock(&self.session);
                (
                    s.next_send_at(now, text_len),
                    text_len > 0 && s.window_full(text_len),
                )
            };
            // A chat that would give up the oldest one not acknowledged
            // waits for acknowledgements (the reader thread takes them in):
            // a server reading this address more slowly than its announced
            // rate slows us, rather than lines being said not sent.
            let wait = match (at, full) {
                (None, false) => break,
                (Some(at), _) => at.saturating_duration_since(now).min(WAIT_STEP),
                (None, true) => ACK_WAIT_STEP,
            };
            thread::sleep(wait);
        }
        let room = text_len + CHAT_FRAME_ROOM;
        while !self.outbox.wait_control_room(room, WAIT_STEP) {
            if self.ended.load(Ordering::SeqCst) || self.outbox.is_closed() {
                self.cut.store(true, Ordering::SeqCst);
                return false;
            }
        }
        true
    }

    /// Before leaving: a script waits (bounded by [`ANSWER_WAIT`] after the
    /// server last said anything) until what it sent is written, the
    /// answers to its requests have arrived and the downloads and pushes
    /// it started have ended. A terminal user who leaves leaves at once.
    /// `Err(None)`: a signal asked the client to quit meanwhile (or
    /// before), which it does without waiting.
    fn settle(&self) -> Result<(), Option<End>> {
        let signalled = || SIGNALLED.load(Ordering::Acquire);
        if !self.app.scripted {
            return Ok(());
        }
        if signalled() {
            return Err(None);
        }
        if self.wait_to_send(0) {
            let _ = self.with_session(imchat_core::ClientSession::settle);
        }
        loop {
            if let Some(end) = self.take_end() {
                return Err(Some(end));
            }
            if signalled() {
                return Err(None);
            }
            let (settled, heard, offered) = {
                let s = lock(&self.session);
                (s.is_settled(), s.last_heard(), s.awaits_push_answer())
            };
            if settled && self.transfers_done() {
                return Ok(());
            }
            // A push's receivers take their time to answer (a person
            // decides; the server answers by its offer timeout at the
            // latest): no silence to give up on then.
            if heard.elapsed() >= ANSWER_WAIT && !offered {
                return Err(Some(End::Lost(ClientError::NoAnswers(
                    ANSWER_WAIT.as_secs(),
                ))));
            }
            thread::sleep(WAIT_STEP);
        }
    }

    /// Before a script's line that the client answers itself (`/help`,
    /// `/mode`, a typo): waits until the answers to what it asked before
    /// have been shown, so that its output keeps the order of its input.
    /// Gives up (and shows the line anyway) when the connection ends or
    /// the server says nothing for [`ANSWER_WAIT`]. A terminal user sees
    /// their line answered at once.
    fn catch_up(&self) {
        if self.app.scripted {
            self.await_answers();
        }
    }

    /// Waits until the answers to what was asked so far have been shown
    /// (the events of each message are shown before the next is read),
    /// or the connection ends, or the server says nothing for
    /// [`ANSWER_WAIT`].
    fn await_answers(&self) {
        if lock(&self.session).is_answered() {
            return;
        }
        if !self.wait_to_send(0) || self.with_session(ClientSession::settle).is_err() {
            return;
        }
        let step = Duration::from_millis(5);
        let most = ANSWER_WAIT.as_millis() / step.as_millis() * 2;
        for _ in 0..most {
            if self.ended.load(Ordering::SeqCst) {
                return;
            }
            let (answered, heard) = {
                let s = lock(&self.session);
                (s.is_answered(), s.last_heard())
            };
            // The reader shows the events of a message before it reads the
            // next: once the barrier's answer is in, the answers before it
            // are on the screen.
            if answered || heard.elapsed() >= ANSWER_WAIT {
                return;
            }
            thread::sleep(step);
        }
    }

    /// True when no download of ours is still being written and no push
    /// of ours is still being sent, and the disk thread has done what it
    /// was given (the end of a download is told, and a failure counted,
    /// by its last job).
    fn transfers_done(&self) -> bool {
        let t = lock(&self.transfers);
        t.pushes.is_empty()
            && t.incoming.values().all(|f| f.from.is_some())
            && self.disk_jobs.load(Ordering::SeqCst) == 0
    }

    fn read_loop(&self, mut reader: FrameReader<Stream, ServerMessage>) {
        // When the session last heard of bytes of a frame still coming.
        let mut told = Instant::now();
        loop {
            for buf in std::mem::take(&mut *lock(&self.recycled)) {
                reader.decoder_mut().recycle(buf);
            }
            // A long frame on a slow link: the server is alive.
            let msg = reader.read_message_hearing(HEARD_STEP, &mut told, |now| {
                self.with_session(|s| s.handle_bytes(now));
            });
            if self.closing() {
                return;
            }
            match msg {
                Ok(Some(msg)) => {
                    self.with_session(|s| s.handle_message(msg, Instant::now()));
                    // Shown: the newest id seen goes to disk before the
                    // reader waits, so that a run killed now and started
                    // again is not sent what it showed (see `remember`).
                    if !reader.has_message_ready() {
                        self.app.remember(&self.session, false);
                    }
                }
                Ok(None) => return self.end(End::Lost(ClientError::ConnectionLost)),
                Err(TransportError::Io(e)) => {
                    log::info!("reading from the server failed: {e}");
                    return self.end(End::Lost(ClientError::ConnectionLost));
                }
                Err(e) => return self.end(End::Lost(ClientError::ConnectionBroken(e.to_string()))),
            }
        }
    }

    /// The disk thread: writes file data, finishes and fails transfers,
    /// and acknowledges what is written to the server: every
    /// [`ACK_STEP`](imchat_core::ACK_STEP), and whenever it has written
    /// everything it was given.
    fn disk_loop(&self, jobs: &Receiver<DiskJob>) {
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {
                    self.send_acks(ClientSession::caught_up);
                    // Woken now and then to end with the connection.
                    loop {
                        match jobs.recv_timeout(WAIT_STEP) {
                            Ok(job) => break job,
                            Err(RecvTimeoutError::Timeout) if !self.closing() => {}
                            Err(_) => return,
                        }
                    }
                }
            };
            // A test's pause here leaves the disk behind the network.
            fail::fail_point!("client-disk-job");
            match job {
                DiskJob::Data { id, offset, data } => {
                    let end = offset + data.len() as u64;
                    if self.transfer_data(id, offset, &data) {
                        self.send_acks(|s| s.stored(id, end));
                    }
                    let mut recycled = lock(&self.recycled);
                    if recycled.len() < 4 {
                        recycled.push(data);
                    }
                }
                DiskJob::Done(id) => self.transfer_done(id),
                DiskJob::Failed(id, name, error) => self.transfer_failed(id, &name, &error),
            }
            self.disk_jobs.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Tells the session what is stored (`f`) and writes the `Ack`s it
    /// sends from this thread when no one else is writing (one thread
    /// wake-up less); otherwise the writer thread sends them with what it has.
    fn send_acks(&self, f: impl FnOnce(&mut ClientSession)) {
        let frames: Vec<Frame> = {
            let mut s = lock(&self.session);
            f(&mut s);
            std::iter::from_fn(|| s.poll_transmit())
                .map(|m| Arc::from(m.to_frame()))
                .collect()
        };
        if frames.is_empty() {
            return;
        }
        for frame in frames {
            // Full or closed: the server is not reading, or we are leaving.
            let _ = self.outbox.push_deferred(frame);
        }
        self.outbox.flush(&self.socket);
    }

    /// Hands a job to the disk thread (gone only when the connection is ending).
    fn to_disk(&self, job: DiskJob) {
        self.disk_jobs.fetch_add(1, Ordering::SeqCst);
        if self.disk.send(job).is_err() {
            self.disk_jobs.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn timer_loop(&self) {
        while !self.closing() {
            thread::sleep(TICK);
            if self.closing() {
                // The session may have been taken for the next connection
                // already, a fresh one left in its place: saving that would
                // remove the saved session while the client reconnects.
                return;
            }
            self.with_session(|s| s.handle_timeout(Instant::now()));
            self.app.remember(&self.session, false);
            self.tell_stalls(Instant::now());
        }
    }

    /// Tells the view of the transfers that stalled (no byte moved for
    /// [`STALLED`]) since the last tick: `--json` writes them, as the
    /// full screen marks them (`advance` says when they move again).
    fn tell_stalls(&self, now: Instant) {
        let stalled: Vec<TransferView> = {
            let mut t = lock(&self.transfers);
            let Transfers {
                incoming, pushes, ..
            } = &mut *t;
            incoming
                .values_mut()
                .map(|f| &mut f.meter)
                .chain(pushes.values_mut().map(|p| &mut p.meter))
                .filter_map(|m| m.stall(now))
                .collect()
        };
        for view in &stalled {
            self.app.view.transfer(view);
        }
    }

    /// Sends `Quit`, lets the writer flush it (bounded), and stops.
    fn quit(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let parting = std::mem::take(&mut *lock(&self.app.parting));
        self.with_session(|s| s.quit(&parting));
        self.outbox.close();
        if let Some(done) = lock(&self.writer_done).take() {
            let _ = done.recv_timeout(QUIT_WAIT);
        }
        self.stop_transfers();
    }

    /// Waits (at most [`QUIT_WAIT`]) until the disk thread has handled
    /// what it was given, once the connection is closing: a transfer it
    /// is failing (the server cancelled it) is told once, by it, before
    /// the transfers left are reported, and before the client may exit.
    fn wait_disk(&self) {
        if let Some(done) = lock(&self.disk_done).take() {
            let _ = done.recv_timeout(QUIT_WAIT);
        }
    }

    /// `/alice hello`, the classroom programs' way to write to one user:
    /// a private message, when `alice` is no command and is online (a
    /// command of the same name wins); `/alice` alone, the usage of that
    /// form. `None` for any other error.
    fn slash_user(&self, line: &str, e: &CommandError) -> Option<Command> {
        if !matches!(
            e,
            CommandError::Unknown { .. } | CommandError::Elsewhere { .. }
        ) {
            return None;
        }
        let rest = line.strip_prefix('/')?;
        let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let to = Username::new(word).ok()?;
        if !self.app.is_online(&to) {
            self.refresh_roster();
        }
        if !self.app.is_online(&to) {
            return None;
        }
        // A mistyped command (`/mgs bob …`) does not go privately to a user
        // who happens to have that name: said, with how to write to them.
        // Another chat program's command (`/nick`) is no typo of ours.
        let typo = match e {
            CommandError::Elsewhere { .. } => None,
            _ => crate::command::one_typo_from_command(word),
        };
        if let Some(meant) = typo {
            self.catch_up();
            self.app.error(&format!(
                "unknown command /{word}; did you mean /{meant}? (to write to the user {to}: /msg {to} <text>)"
            ));
            return Some(Command::Nothing);
        }
        if text.trim().is_empty() {
            self.catch_up();
            let to = self.app.registered(&to);
            self.app.error(&format!(
                "usage: /{word} <message> writes to {to} privately"
            ));
            return Some(Command::Nothing);
        }
        Some(Command::Unicast {
            to,
            text: text.to_string(),
        })
    }

    /// Stops the threads sending our pushes.
    fn stop_pushes(&self) {
        for push in lock(&self.transfers).pushes.values() {
            push.stop.store(true, Ordering::SeqCst);
        }
    }

    /// On the way out: stops our pushes and deletes the temporary files of
    /// files pushed to us (they cannot be resumed). A download's `.part`
    /// stays, so the next `/download` of that name resumes it.
    fn stop_transfers(&self) {
        self.stop_pushes();
        let mut t = lock(&self.transfers);
        let received: Vec<TransferId> = t
            .incoming
            .iter()
            .filter(|(_, f)| f.from.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in received {
            if let Some(f) = t.incoming.remove(&id) {
                drop(f.file);
                let _ = fs::remove_file(&f.part);
            }
        }
    }

    fn command(self: &Arc<Self>, line: &str) -> Flow {
        let cmd = match Command::parse(line) {
            Ok(c) => c,
            Err(e) => match self.slash_user(line, &e) {
                Some(c) => c,
                None => {
                    self.catch_up();
                    self.app.error(&e.to_string());
                    return Flow::Continue;
                }
            },
        };
        if answered_here(&cmd) {
            self.catch_up();
        }
        let Some(cmd) = self.app.local_command(cmd) else {
            return Flow::Continue;
        };
        let mode = || lock(&self.app.mode).clone();
        let message = matches!(
            cmd,
            Command::Text(_) | Command::Broadcast(_) | Command::Unicast { .. } | Command::Me(_)
        );
        let result: Result<(), UsageError> = match cmd {
            Command::Text(text) => self.chat(mode(), false, &text).map(|()| {
                if let Some(note) = classroom_hint(&text) {
                    self.app.notice(&note);
                }
            }),
            Command::Broadcast(text) => self.chat(Mode::Broadcast, false, &text),
            Command::Unicast { to, text } => self.chat(Mode::Unicast(to), false, &text),
            Command::Me(text) => self.chat(mode(), true, &text),
            Command::SetMode(Mode::Unicast(to)) => {
                self.set_unicast(to);
                Ok(())
            }
            Command::Who => self.ask_who(WhoFor::User).map(drop),
            Command::Files => self
                .ask_access(true)
                .and_then(|_| self.paced(0, ClientSession::list_files))
                .map(drop),
            Command::FilesAccess => self.ask_access(false).map(drop),
            Command::ListFiles => self.paced(0, ClientSession::list_files).map(drop),
            Command::Download(name) => {
                self.download(name);
                Ok(())
            }
            Command::SendFile { path, to, whole } => {
                let (path, to) = crate::command::sendfile_choice(
                    path,
                    to,
                    whole,
                    |u| self.app.is_online(u) || (self.refresh_roster() && self.app.is_online(u)),
                    |p| {
                        fs::metadata(files::expand_home(p, std::env::var_os("HOME").as_deref()))
                            .is_ok()
                    },
                );
                self.send_file(&path, to);
                Ok(())
            }
            Command::Accept(n) => self.answer_offer(n, true),
            Command::Decline(n) => self.answer_offer(n, false),
            Command::Transfers => {
                self.list_transfers();
                Ok(())
            }
            Command::Cancel(what) => {
                self.cancel(&what);
                Ok(())
            }
            Command::Quit(reason) => {
                *lock(&self.app.parting) = reason;
                return Flow::Quit;
            }
            Command::Ignore(who) => self.ignore(who),
            Command::Unignore(who) => {
                let line = if lock(&self.session).unignore(&who) {
                    format!("no longer ignoring {who}")
                } else {
                    format!("{who} is not ignored")
                };
                self.app.notice(&line);
                Ok(())
            }
            Command::Register => self.register(),
            Command::Unregister => self.paced(0, ClientSession::unregister).map(drop),
            Command::Operate {
                action,
                target,
                reason,
            } => self
                .paced(0, |s| s.operate(action, &target, &reason))
                .map(drop),
            // Handled by `local_command`.
            other => {
                log::debug!("not a connection command: {other:?}");
                Ok(())
            }
        };
        if let Err(e) = result {
            // Refused here, nothing sent: after the earlier answers too.
            self.catch_up();
            if message {
                self.app.unsent(1, &usage_line(&e));
            } else {
                self.app.error(&usage_line(&e));
            }
            if matches!(e, UsageError::TextTooLong { .. }) {
                // Not lost: back in the input, to be shortened.
                self.app.view.give_back(line);
            }
        }
        Flow::Continue
    }

    /// Sends a message or an action where `mode` says, and shows it as ours.
    fn chat(&self, mode: Mode, action: bool, text: &str) -> Result<(), UsageError> {
        let to = mode.recipient();
        // The client id this message takes must be on disk before it goes.
        self.app.remember(&self.session, false);
        // A script's own lines are shown after the answers to what it
        // asked before them (`--json` shows them; plain output does not),
        // so that its output keeps the order of its input. Waited for
        // before it is sent: its own answer (a refusal) comes after it.
        if self.app.config.json {
            self.catch_up();
        }
        // To someone not known online: shown once the server took it, so
        // that one to nobody shows only its error. Anyone else's is shown
        // at once, with no wait for the server.
        let hold = match &mode {
            Mode::Unicast(u) => (!self.app.is_online(u)).then(|| u.clone()),
            Mode::Broadcast => None,
        };
        let sent = self.paced(text.len(), |s| {
            let id = if action {
                s.send_action(to.clone(), text)
            } else {
                s.send_chat(to.clone(), text)
            }?;
            // Before it can go out (the session is locked until then).
            self.sending(id, &to, text);
            if let Some(user) = &hold {
                let mut held = lock(&self.app.held_echoes);
                while held.len() >= self.max_unacked.max(1) {
                    held.pop_front();
                }
                held.push_back((id, user.clone(), action, text.to_owned()));
            }
            Ok(())
        })?;
        if sent && hold.is_none() {
            let to = match &mode {
                Mode::Broadcast => None,
                Mode::Unicast(u) => Some(u),
            };
            self.app.echo(to, action, text);
        }
        // What the server said about it before it was shown.
        let early = lock(&self.unechoed).take();
        for ev in early.map(|(_, evs)| evs).unwrap_or_default() {
            self.event(ev);
        }
        Ok(())
    }

    /// Notes our message `id`, being sent: see [`sent_chats`](Self::sent_chats)
    /// and [`unechoed`](Self::unechoed).
    fn sending(&self, id: u64, to: &Recipient, text: &str) {
        let mut sent = lock(&self.sent_chats);
        while sent.len() >= self.max_unacked {
            sent.pop_front();
        }
        sent.push_back((id, to.clone(), quote(text)));
        drop(sent);
        *lock(&self.unechoed) = Some((id, Vec::new()));
    }

    /// The server's error `text` about our message `client_id` (0: about
    /// none): kept until the message is shown as ours, then shown naming it.
    fn refused(&self, code: imchat_core::ErrorCode, client_id: u64, text: String) {
        if client_id != 0 {
            let mut waiting = lock(&self.unechoed);
            if let Some((_, early)) = waiting.as_mut().filter(|(id, _)| *id == client_id) {
                early.push(ClientEvent::Error {
                    code,
                    client_id,
                    text,
                });
                return;
            }
        }
        let reason = if text.is_empty() {
            code.describe().to_string()
        } else {
            text
        };
        if client_id != 0 {
            self.app.release_echo(client_id, false);
        }
        let message = (client_id != 0)
            .then(|| {
                let mut sent = lock(&self.sent_chats);
                let at = sent.iter().position(|(id, ..)| *id == client_id)?;
                sent.remove(at)
            })
            .flatten();
        match message {
            Some((_, to, quoted)) => self.app.unsent(1, &refused_line(&to, &quoted, &reason)),
            // About a message of ours, one no longer remembered.
            None if client_id != 0 => self.app.unsent(1, &reason),
            None => self.app.error(&reason),
        }
    }

    /// `/accept [n]` (`accept`) or `/decline [n]`: answers the offer `#n`,
    /// or the only one waiting.
    fn answer_offer(&self, n: Option<u32>, accept: bool) -> Result<(), UsageError> {
        let offers = lock(&self.session).pending_offers();
        let id = match (n, &offers[..]) {
            // The session numbers the offers as it does our own
            // transfers: `#n` is its id.
            (Some(n), _) => TransferId(n),
            (None, [(id, ..)]) => *id,
            (None, []) => {
                self.app.error("no file is offered to you");
                return Ok(());
            }
            (None, several) => {
                let ids: Vec<String> = several.iter().map(|(id, ..)| id.to_string()).collect();
                self.app.error(&format!(
                    "several files are offered to you ({}): say which, as in /accept {}",
                    ids.join(", "),
                    ids[0].trim_start_matches('#')
                ));
                return Ok(());
            }
        };
        let offer = offers.iter().find(|(o, ..)| *o == id).cloned();
        if accept {
            // The pushed data may reach the reader thread as soon as the
            // Accept is out, and the disk thread writes it only into a
            // file it finds listed: the file is opened and listed under the
            // transfers' lock, taken before the Accept goes and held until
            // then, so the disk thread waits for it.
            let t = lock(&self.transfers);
            let (result, drained) = self.session_call(|s| s.accept(id));
            // A test's pause here shows the data coming first.
            fail::fail_point!("client-accept-sent");
            if result.is_ok() {
                // The offer's row gives way to the transfer's.
                let name = offer.as_ref().map_or("", |(_, _, name, _)| name.as_str());
                self.app
                    .view
                    .transfer_ended(&TransferEnd::new(id, Direction::Offer, name, None));
            }
            let mut held = Some(t);
            let mut rest = Vec::with_capacity(drained.events.len());
            for ev in drained.events {
                match ev {
                    ClientEvent::TransferStarted { .. } if held.is_some() => {
                        self.transfer_started(held.take(), ev);
                    }
                    other => rest.push(other),
                }
            }
            drop(held);
            self.handle(Drained {
                events: rest,
                queue_full: drained.queue_full,
            });
            result
        } else {
            self.with_session(|s| s.decline(id, "declined"))?;
            let name = offer.as_ref().map_or("", |(_, _, name, _)| name.as_str());
            self.app.view.transfer_ended(&TransferEnd::new(
                id,
                Direction::Offer,
                name,
                Some("declined"),
            ));
            if let Some((_, from, name, _)) = offer {
                self.app.notice(&format!("declined {name} from {from}"));
            }
            Ok(())
        }
    }

    /// Someone offers us a file we do not accept without asking (bigger
    /// than that, or past the hour's share of such files): ask, or decline
    /// it when no one can answer.
    fn push_offered(&self, id: TransferId, from: &Username, name: &FileName, size: u64) {
        let n = id.to_string();
        let n = n.trim_start_matches('#');
        let shown = human_size(size);
        // Small enough to be taken unasked: asked because the hour's share
        // of such files is spent.
        let past_share = self.app.config.auto_accept.is_some_and(|max| size <= max);
        if self.app.ask_offers {
            let why = if past_share {
                " (more files within the hour than this client takes without asking)"
            } else {
                ""
            };
            self.app.notice(&format!(
                "{from} wants to send you '{name}' ({shown}): /accept {n} or /decline {n}{why}"
            ));
            // Listed with the transfers until it is answered or withdrawn.
            let view = TransferView::offer(
                id.to_string(),
                from.as_str().to_owned(),
                name.as_str().to_owned(),
                size,
            );
            return self.app.view.transfer(&view);
        }
        let reason = if past_share {
            "more files within the hour than this client accepts without asking, and no one at a terminal to /accept it"
        } else {
            "larger than this client accepts without asking, and no one at a terminal to /accept it"
        };
        let _ = self.with_session(|s| s.decline(id, reason));
        // Its end, as for a `/decline`: a program reading `--json` sees
        // the offer and what became of it.
        self.app.view.transfer_ended(&TransferEnd::new(
            id,
            Direction::Offer,
            name.as_str(),
            Some(reason),
        ));
        self.app.notice(&format!(
            "declined '{name}' ({shown}) from {from}: {reason} (see --auto-accept-bytes, --ask-when-piped)"
        ));
    }

    /// [`with_session`](Self::with_session) once the request may go (see
    /// [`wait_to_send`](Self::wait_to_send)): true if it went; false if the
    /// connection ended meanwhile (the main loop then stops).
    fn paced(
        &self,
        text_len: usize,
        f: impl FnOnce(&mut ClientSession) -> Result<(), UsageError>,
    ) -> Result<bool, UsageError> {
        if !self.wait_to_send(text_len) {
            return Ok(false);
        }
        self.with_session(f).map(|()| true)
    }

    /// Asks for access to the shared folder; `with_list`: a list is asked
    /// right after it (`/files`).
    fn ask_access(&self, with_list: bool) -> Result<bool, UsageError> {
        lock(&self.accesses).push_back(with_list);
        let asked = self.paced(0, ClientSession::files_access);
        if !matches!(asked, Ok(true)) {
            lock(&self.accesses).pop_back();
        }
        asked
    }

    /// The server cannot read its shared folder: one line per command,
    /// the server's, not an empty folder. `/files` asks twice and is told
    /// once.
    fn files_unavailable(&self, request: FilesRequest, text: &str) {
        match request {
            FilesRequest::Access => {
                if lock(&self.accesses).pop_front() == Some(true) {
                    self.lists_told.fetch_add(1, Ordering::SeqCst);
                }
            }
            FilesRequest::List => {
                if self.take_list_told() {
                    return;
                }
            }
        }
        self.app.error(text);
    }

    /// True (and counted off) if the list arriving belongs to a `/files`
    /// whose access already said the folder cannot be read.
    fn take_list_told(&self) -> bool {
        self.lists_told
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// `/register`: the password is typed twice without echo in a
    /// terminal, else taken from `--account-password-file` or
    /// `$IMCHAT_ACCOUNT_PASSWORD`.
    fn register(&self) -> Result<(), UsageError> {
        let password = if self.app.scripted {
            let known = lock(&self.app.config.passwords.account).clone();
            let Some(p) = known else {
                self.app.error(
                    "/register needs a password: give --account-password-file or IMCHAT_ACCOUNT_PASSWORD",
                );
                return Ok(());
            };
            p
        } else {
            let first = self.app.view.ask_secret("new password (not shown): ");
            let Some(first) = first.and_then(Secret::new) else {
                self.app.error("registration cancelled: no password typed");
                return Ok(());
            };
            let again = self.app.view.ask_secret("the same password again: ");
            let same = again.is_some_and(|a| Secret::new(a).is_some_and(|a| a.matches(&first)));
            if !same {
                self.app
                    .error("registration cancelled: the two passwords differ");
                return Ok(());
            }
            first
        };
        self.paced(0, |s| s.register(password)).map(drop)
    }

    /// `/download <name>`: resumes from `<name>.part` when one is there.
    fn download(&self, name: FileName) {
        // A script's line is judged once what it asked before is shown:
        // a download of this name that ended meanwhile (its "downloaded"
        // line printed) does not refuse this one, and a refusal never
        // follows the line that says the first one ended.
        self.catch_up();
        // Only this thread asks for downloads: no other can start one of
        // this name between the check and the request.
        if lock(&self.session).is_downloading(&name) {
            self.app.error(&format!(
                "{name}: a download of it is already under way; /download it again once it has ended"
            ));
            return;
        }
        let part = files::download_part(&self.app.config.download_dir, &name);
        // Held (locked) from now until the download ends.
        let mut file = match files::open_part(&part, false) {
            Ok(f) => f,
            Err(e) => {
                self.app.transfer_lost();
                // After the answers to what the script asked before.
                self.catch_up();
                let text = format!("cannot download {name}: {e}");
                self.app.view.transfer_ended(&TransferEnd::unasked(
                    Direction::Download,
                    name.as_str(),
                    &e.to_string(),
                ));
                return self.app.error(&text);
            }
        };
        let resume = files::resume_state(&mut file).unwrap_or_else(|e| {
            log::warn!(
                "cannot read {}: {e}; downloading from the start",
                part.display()
            );
            None
        });
        if !self.wait_for_transfer_room() || !self.wait_to_send(0) {
            // Not asked for (a signal, or the connection ended: the line
            // is tried again after a reconnect, which opens it again).
            drop(file);
            remove_if_empty(&part);
            return;
        }
        let name_again = name.clone();
        let shown = name.as_str().to_owned();
        let mut t = lock(&self.transfers);
        let (result, drained) = self.session_call(|s| s.download(name, resume));
        match result {
            Ok(id) => {
                t.parts.insert(id, (name_again, part, file));
            }
            Err(_) => {
                drop(file);
                remove_if_empty(&part);
            }
        }
        drop(t);
        self.handle(drained);
        if let Err(e) = result {
            // Refused before it went (too many at once): failed, as one
            // the server refuses.
            self.app.transfer_lost();
            self.catch_up();
            let text = usage_line(&e);
            self.app
                .view
                .transfer_ended(&TransferEnd::unasked(Direction::Download, &shown, &text));
            self.app.error(&text);
        }
    }

    /// `/sendfile <path> [user]`: announces the file, then a thread streams it.
    fn send_file(self: &Arc<Self>, path: &str, to: Option<Username>) {
        // The server would deliver it, a second copy in our own received/.
        // (A usage error, as a message to ourselves: not a transfer.)
        if to.as_ref().is_some_and(|to| self.app.is_me(to)) {
            return self.app.error("cannot send a file to yourself");
        }
        // A push whose file cannot be read is a failed transfer, as one
        // the server refuses: a script's exit code says so.
        // `~/notes.txt` as in the shell; messages say what was typed.
        let real = files::expand_home(path, std::env::var_os("HOME").as_deref());
        // Its `transfer_ended` (it has no id: never asked of the server)
        // names the file as a push of it would.
        let shown = real
            .file_name()
            .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned());
        let cannot = |text: String| {
            self.catch_up();
            self.app.transfer_lost();
            self.app
                .view
                .transfer_ended(&TransferEnd::unasked(Direction::Send, &shown, &text));
            self.app.error(&text);
        };
        // Before opening it: opening a named pipe waits for a writer, and
        // would hold the client until one comes.
        if std::fs::metadata(&real).is_ok_and(|m| !m.is_file()) {
            return cannot(format!("{path} is not a file"));
        }
        let file = match File::open(&real) {
            Ok(f) => f,
            Err(e) => return cannot(format!("cannot open {path}: {}", io_reason(&e))),
        };
        let (size, modified) = match file.metadata() {
            Ok(m) if m.is_file() => (m.len(), m.modified().ok()),
            Ok(_) => return cannot(format!("{path} is not a file")),
            Err(e) => return cannot(format!("cannot read {path}: {}", io_reason(&e))),
        };
        let Some(base) = real.file_name() else {
            return cannot(format!("{path} has no file name"));
        };
        let Some(base) = base.to_str() else {
            return cannot(format!("the name of {path} is not valid UTF-8"));
        };
        // A name the receivers could not save (`.vimrc`, `a"b.txt`) is
        // sent under one they can, as DCC clients do, and the user told.
        let name = match FileName::new(base) {
            Ok(n) => n,
            Err(e) => match FileName::sendable(base) {
                Ok(n) => {
                    self.app
                        .notice(&format!("sending {} as '{n}' ({e})", inert(base)));
                    n
                }
                Err(_) => return cannot(format!("cannot send {base}: invalid file name: {e}")),
            },
        };
        let recipient = to.map_or(Recipient::Everyone, Recipient::User);
        let stop = Arc::new(AtomicBool::new(false));
        let (go, accepted) = mpsc::channel();
        if !self.wait_for_transfer_room() || !self.wait_to_send(0) {
            return;
        }
        let mut t = lock(&self.transfers);
        let (result, drained) = self.session_call(|s| s.offer(name.clone(), size, recipient));
        if let Ok(id) = result {
            let mut meter = Meter::new(id, Direction::Send, &name, size, 0, Instant::now());
            meter.view.waiting = true;
            // Shown while the push is held: the server's answer (refused
            // at once: no one else online) needs it to end the push, so
            // its line comes after this one, never before.
            self.app.view.transfer(&meter.view);
            t.pushes.insert(
                id,
                OutgoingPush {
                    accepted: 0,
                    told: false,
                    name: name.clone(),
                    stop: stop.clone(),
                    go: Some(go),
                    meter,
                },
            );
        }
        drop(t);
        self.handle(drained);
        let id = match result {
            Ok(id) => id,
            // Refused before it went (larger than the server takes): a
            // failed push, as one whose file cannot be read; named, as
            // a script may send several.
            Err(e) => return cannot(format!("cannot send {name}: {}", usage_line(&e))),
        };
        // Said once the server took the offer, as a message is shown once
        // it took that: one it refuses at once (no such user online, no
        // one else at all) is told by its error alone.
        self.await_answers();
        let mut t = lock(&self.transfers);
        if let Some(line) = t
            .pushes
            .get_mut(&id)
            .and_then(|p| p.offered_line(&self.app))
        {
            self.app.notice(&line);
        }
        drop(t);
        let s = self.clone();
        let spawned = spawn("pusher", move || {
            let sent = imchat_core::SentFile::new(id, size, modified);
            s.push_loop(id, name, file, sent, stop, &accepted);
        });
        if let Err(e) = spawned {
            self.abandon_push(id, &e.to_string());
        }
    }

    /// Streams a file for a push, paced by the outbound queue and by the
    /// server's credit (the session's `push_room`: this thread waits for
    /// more on `accepted`, woken by each credit, while the reader thread
    /// and the user's typing go on), then ends it.
    fn push_loop(
        &self,
        id: TransferId,
        name: FileName,
        mut file: File,
        offered: imchat_core::SentFile,
        stop: Arc<AtomicBool>,
        accepted: &Receiver<()>,
    ) {
        let size = offered.size();
        let stopped = || stop.load(Ordering::SeqCst) || self.closing();
        // Nothing is sent before the receivers accepted the push; a refusal
        // drops the sender (the server bounds the wait).
        loop {
            if stopped() {
                return;
            }
            match accepted.recv_timeout(PUSH_WAIT) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let _ = name;
        let mut sent = 0u64;
        while sent < size {
            if stopped() {
                return;
            }
            let room = lock(&self.session).push_room(id);
            if room == 0 {
                // Its receivers have all they may hold: the next credit
                // wakes this (the server bounds the wait: a receiver that
                // holds it too long is dropped).
                match accepted.recv_timeout(PUSH_WAIT) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            if !self.outbox.wait_bulk_room(PUSH_QUEUE, PUSH_WAIT) {
                if self.outbox.is_closed() {
                    return;
                }
                continue;
            }
            // A test's pause here: a push that takes its time.
            fail::fail_point!("client-push-chunk");
            let limit = usize::try_from(room).map_or(self.chunk_size, |r| r.min(self.chunk_size));
            let want = usize::try_from(size - sent).map_or(limit, |r| r.min(limit));
            let mut buf = vec![0u8; want];
            if let Err(e) = file.read_exact(&mut buf) {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    // Changed, as one that grew: the receivers hear why.
                    let at = file.metadata().map_or(sent, |m| m.len().min(size));
                    let shrank = imchat_core::DownloadError::Shrank { id, at, size };
                    return self.abandon_changed_push(id, &shrank);
                }
                return self
                    .abandon_push(id, &format!("reading the file failed: {}", io_reason(&e)));
            }
            if let Err(e) = self.with_session(|s| s.push_chunk(id, buf)) {
                // Unknown transfer: it was refused or cancelled meanwhile.
                if !stopped() {
                    self.abandon_push(id, &e.to_string());
                }
                return;
            }
            sent += want as u64;
            let update = lock(&self.transfers)
                .pushes
                .get_mut(&id)
                .and_then(|p| p.meter.advance(sent, Instant::now()));
            if let Some(view) = update {
                self.app.view.transfer(&view);
            }
        }
        if stopped() {
            return;
        }
        // The file as offered, or no `End`: what went out may be cut short
        // (it grew) or mix two versions (it was written to).
        let now = file.metadata();
        let checked = now.as_ref().map_or(Ok(()), |m| {
            offered.check_before_end(m.len(), m.modified().ok())
        });
        if let Err(e) = checked {
            return self.abandon_changed_push(id, &e);
        }
        if let Err(e) = self.with_session(|s| s.push_end(id)) {
            if !stopped() {
                self.abandon_push(id, &e.to_string());
            }
        }
    }

    /// Gives up a push of ours from this side, telling the server and the user.
    fn abandon_push(&self, id: TransferId, reason: &str) {
        self.abandon_push_with(id, reason, |s| s.cancel(id, reason));
    }

    /// Gives up a push of ours whose file changed while it was sent: the
    /// receivers are told why too.
    fn abandon_changed_push(&self, id: TransferId, error: &imchat_core::DownloadError) {
        let reason = error.to_string();
        self.abandon_push_with(id, &reason, |s| s.push_changed(id, error));
    }

    fn abandon_push_with(
        &self,
        id: TransferId,
        reason: &str,
        cancel: impl FnOnce(&mut ClientSession) -> Result<(), UsageError>,
    ) {
        let push = lock(&self.transfers).pushes.remove(&id);
        let Some(push) = push else { return };
        self.app.transfer_lost();
        push.stop.store(true, Ordering::SeqCst);
        // Already gone from the session if the server ended it first.
        let _ = self.with_session(cancel);
        self.app.view.transfer_ended(&TransferEnd::new(
            id,
            Direction::Send,
            push.name.as_str(),
            Some(reason),
        ));
        self.app
            .error(&format!("sending {} failed: {reason}", push.name));
    }

    /// Whether the entry `id` came in the replay of a resume: missed
    /// while the connection was down.
    fn missed(&self, id: MessageId) -> bool {
        id.0 <= self.replay_through.load(Ordering::SeqCst)
    }

    /// Shows an event, or does the file work it asks for.
    fn event(&self, ev: ClientEvent) {
        let app = &self.app;
        match ev {
            // A live message of ours the server sends us is one we sent
            // to ourselves (`/msg <me> …`): the screen and `--json` showed
            // it as ours when sent; plain piped output, which does not show
            // our own lines, gets this copy, once.
            ClientEvent::Chat(chat)
                if chat.private
                    && !chat.history
                    && (app.view.is_terminal() || app.config.json)
                    && app.is_me(&chat.from) => {}
            ClientEvent::Chat(chat) => {
                let missed = !chat.history && self.missed(chat.id);
                app.view.show(Entry::Chat(ChatEntry {
                    missed,
                    ..chat_entry(chat)
                }));
            }
            ClientEvent::Joined { id, time, user } => {
                let shown = user.as_str().to_owned();
                lock(&app.roster).insert(user.key(), shown.clone());
                app.view.roster(Roster::Joined(shown.clone()));
                app.notice_at(time, &format!("{shown} has joined"), self.missed(id));
            }
            ClientEvent::Left(departure) => {
                lock(&app.roster).remove(&departure.user.key());
                let user = departure.user.as_str().to_owned();
                app.view.roster(Roster::Left(user.clone()));
                let why = departure
                    .shown_reason()
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default();
                let missed = self.missed(departure.id);
                app.notice_at(departure.time, &format!("{user} has left{why}"), missed);
                // Lines still go to them: say so once, not as an error per line.
                if matches!(&*lock(&app.mode), Mode::Unicast(to) if to.key() == departure.user.key())
                {
                    app.notice(&format!(
                        "your lines still go to {user}, who is not online: /mode broadcast to talk to everyone"
                    ));
                }
            }
            // Only the list of who is online shows these: a line for each
            // blip of a connection would be noise.
            ClientEvent::Away { user, .. } => {
                app.view.roster(Roster::Away(user.as_str().to_owned()));
            }
            ClientEvent::Back { user, .. } => {
                app.view.roster(Roster::Back(user.as_str().to_owned()));
            }
            ClientEvent::Who { users } => {
                let names: Vec<String> = users.iter().map(|u| u.name.as_str().to_owned()).collect();
                *lock(&app.roster) = users
                    .iter()
                    .zip(&names)
                    .map(|(u, n)| (u.name.key(), n.clone()))
                    .collect();
                let away: Vec<Away> = users
                    .iter()
                    .zip(&names)
                    .filter_map(|(u, n)| {
                        u.away_secs.map(|secs| Away {
                            name: n.clone(),
                            secs,
                        })
                    })
                    .collect();
                let shown: Vec<String> = users.iter().zip(&names).map(who_entry).collect();
                let why = lock(&self.whos).pop_front().unwrap_or(WhoFor::User);
                if why.silent() {
                    self.whos_answered.fetch_add(1, Ordering::SeqCst);
                }
                match why {
                    WhoFor::User => app.notice(&online_line(&shown, usize::MAX)),
                    WhoFor::Join => {
                        app.view
                            .roster_notice(&online_line(&shown, JOIN_NAMES_SHOWN));
                    }
                    WhoFor::Roster => {}
                }
                app.view.roster(Roster::All { names, away });
            }
            ClientEvent::FilesAccess { count } => {
                lock(&self.accesses).pop_front();
                let files = if count == 1 { "file" } else { "files" };
                app.notice(&format!("shared folder access granted: {count} {files}"));
            }
            ClientEvent::FileList(FileListPart { files, last }) => self.file_list(&files, last),
            ClientEvent::FileNames(FileListPart { files, last }) => self.file_names(&files, last),
            ClientEvent::FilesUnavailable { request, text } => {
                self.files_unavailable(request, &text);
            }
            ClientEvent::Error {
                code,
                client_id,
                text,
            } => self.refused(code, client_id, text),
            ev @ ClientEvent::TransferStarted { .. } => self.transfer_started(None, ev),
            ClientEvent::TransferData { id, offset, data } => {
                self.to_disk(DiskJob::Data { id, offset, data });
            }
            ClientEvent::TransferDone { id } => self.to_disk(DiskJob::Done(id)),
            ClientEvent::TransferFailed { id, name, error } => {
                self.to_disk(DiskJob::Failed(id, name, error));
            }
            ClientEvent::PushOffered {
                id,
                from,
                name,
                size,
            } => self.push_offered(id, &from, &name, size),
            ClientEvent::OfferWithdrawn {
                id,
                from,
                name,
                reason,
            } => {
                app.view.transfer_ended(&TransferEnd::new(
                    id,
                    Direction::Offer,
                    name.as_str(),
                    Some(&reason),
                ));
                app.notice(&format!("the offer of {name} from {from} ended: {reason}"));
            }
            ClientEvent::PushAccepted { id, receivers } => {
                let mut t = lock(&self.transfers);
                if let Some(push) = t.pushes.get_mut(&id) {
                    // Accepted before the server's answer to the offer
                    // was read: offered, then accepted, in that order.
                    if let Some(line) = push.offered_line(app) {
                        app.notice(&line);
                    }
                    let name = push.name.as_str().to_owned();
                    push.accepted = receivers;
                    push.meter.restart(Instant::now());
                    let view = push.meter.view.clone();
                    if let Some(go) = &push.go {
                        let _ = go.send(());
                    }
                    drop(t);
                    app.view.transfer(&view);
                    app.notice(&format!("sending {name}: accepted by {receivers} user(s)"));
                }
            }
            ClientEvent::PushCredit { id, .. } => {
                // Its sender may go on (it asks the session how far).
                if let Some(go) = lock(&self.transfers)
                    .pushes
                    .get(&id)
                    .and_then(|p| p.go.as_ref())
                {
                    let _ = go.send(());
                }
            }
            ClientEvent::PushDone { id, receivers } => {
                let push = lock(&self.transfers).pushes.remove(&id);
                if let Some(push) = push {
                    app.view.transfer_ended(&TransferEnd::new(
                        id,
                        Direction::Send,
                        push.name.as_str(),
                        None,
                    ));
                    app.notice(&sent_line(&push.name, receivers, push.accepted));
                }
            }
            ClientEvent::PushFailed { id, code, reason } => {
                let push = lock(&self.transfers).pushes.remove(&id);
                if let Some(push) = push {
                    app.transfer_lost();
                    push.stop.store(true, Ordering::SeqCst);
                    let reason = if reason.is_empty() {
                        code.describe()
                    } else {
                        &reason
                    };
                    app.view.transfer_ended(&TransferEnd::new(
                        id,
                        Direction::Send,
                        push.name.as_str(),
                        Some(reason),
                    ));
                    app.error(&format!("sending {} failed: {reason}", push.name));
                }
            }
            ClientEvent::Shutdown { reason } => {
                // One line, with what the client does next: the reconnect
                // that follows says no more of it.
                let next = match app.reconnect_policy(true) {
                    Reconnect::No => "",
                    Reconnect::Once | Reconnect::Keep => "; reconnecting",
                };
                app.notice(&format!("server shutting down: {reason}{next}"));
                // The error `main` prints on stderr: inert there too.
                self.end(End::Shutdown(inert(&reason).into_owned()));
            }
            ClientEvent::PushDeclined {
                from,
                name,
                size,
                reason,
            } => app.notice(&format!(
                "{from} tried to send you {name} ({}), declined: {reason}",
                app.size_shown(size)
            )),
            ClientEvent::TimedOut => self.end(End::Lost(ClientError::ConnectionBroken(
                "the server stopped answering".into(),
            ))),
            ClientEvent::Resumed { dropped, through } => {
                self.replay_through.store(through.0, Ordering::SeqCst);
                app.notice(&resumed_line(dropped));
            }
            ClientEvent::ContinuityLost { reason } => {
                app.notice(&format!("session not resumed: {reason}"));
            }
            ClientEvent::NotSent {
                client_id,
                to,
                text,
                ..
            } => {
                app.release_echo(client_id, false);
                app.unsent(1, &not_sent_line(&to, &text));
            }
            ClientEvent::Acknowledged { client_id } => app.release_echo(client_id, true),
            ClientEvent::Notice { code, text } => {
                let text = if text.is_empty() {
                    code.describe().to_string()
                } else {
                    text
                };
                if code.is_failure() {
                    app.error(&text);
                } else {
                    app.notice(&text);
                }
            }
            ClientEvent::ClusterReachable { reachable, text } => {
                if reachable {
                    app.notice(&text);
                } else {
                    app.error(&text);
                }
                app.cut_off.store(!reachable, Ordering::SeqCst);
                app.status();
            }
            ClientEvent::Kicked { text } => {
                app.error(&text);
                // The error `main` prints on stderr: inert there too.
                self.end(End::Kicked(inert(&text).into_owned()));
            }
            ClientEvent::Replaced { text } => {
                app.error(&text);
                self.end(End::Replaced(inert(&text).into_owned()));
            }
            other => log::debug!("event not shown: {other:?}"),
        }
    }

    /// Shows a part of the shared-file list: the heading before the first
    /// part, and a note at the end when the folder is empty.
    fn file_list(&self, files: &[FileEntry], last: bool) {
        if last {
            // Readable again since the access of its `/files`: shown.
            self.take_list_told();
        }
        let first = !self.listing.swap(!last, Ordering::SeqCst);
        if first && last && files.is_empty() {
            self.app.notice("shared folder is empty");
            return self.app.view.shared_files(Vec::new());
        }
        if first {
            self.app.notice("shared files:");
        }
        let mut listed = lock(&self.listed);
        if first {
            listed.clear();
        }
        listed.extend(files.iter().map(|f| SharedFile {
            name: f.name.as_str().to_owned(),
            size: f.size,
        }));
        let names = last.then(|| std::mem::take(&mut *listed));
        drop(listed);
        for f in files {
            // As `/download` takes it: a name that starts with a blank
            // in quotes.
            self.app.plain(&format!(
                "    {}  ({})",
                typed_file_name(f.name.as_str()),
                byte_count(f.size)
            ));
        }
        if let Some(names) = names {
            self.app.view.shared_files(names);
        }
    }

    /// Keeps the names of a quiet file list (for completion), unshown.
    fn file_names(&self, files: &[FileEntry], last: bool) {
        let mut listed = lock(&self.quiet_listed);
        listed.extend(files.iter().map(|f| SharedFile {
            name: f.name.as_str().to_owned(),
            size: f.size,
        }));
        let names = last.then(|| std::mem::take(&mut *listed));
        drop(listed);
        if let Some(names) = names {
            self.app.view.shared_files(names);
        }
    }

    /// Opens the `.part` file of a transfer that starts. `started` is a
    /// [`ClientEvent::TransferStarted`] (anything else is ignored); `held`:
    /// the transfers' lock, when the caller holds it already.
    fn transfer_started(&self, held: Option<MutexGuard<'_, Transfers>>, started: ClientEvent) {
        let ClientEvent::TransferStarted {
            id,
            name,
            size,
            offset,
            origin,
        } = started
        else {
            return;
        };
        let mut t = held.unwrap_or_else(|| lock(&self.transfers));
        let shown = name.as_str().to_owned();
        let mut removed = Vec::new();
        let (from, opened) = match origin {
            Origin::Download => {
                // The session gives the name we asked for, whatever the
                // server calls it; its `.part` was opened when asked for.
                let final_path = self
                    .app
                    .config
                    .download_dir
                    .join(files::stored_name(&name).as_str());
                let opened = match t.parts.remove(&id) {
                    Some((_, part, mut file)) => match files::start_at(&mut file, offset) {
                        Ok(()) => Ok((final_path, part, file)),
                        Err(source) => Err(files::WriteError {
                            path: part.clone(),
                            source,
                        }
                        .to_string()),
                    },
                    None => Err("its partial file is not open".to_string()),
                };
                (None, opened)
            }
            Origin::Push { from } => {
                let opened = self.open_received(&t, &name, &mut removed);
                (Some(from), opened)
            }
        };
        let (final_path, part, file) = match opened {
            Ok(x) => x,
            Err(reason) => {
                drop(t);
                self.app.removed_parts_notice(&removed);
                if from.is_none() {
                    self.app.transfer_lost();
                }
                // The other side hears that it could not be stored, not
                // `reason`, which names our paths.
                let _ = self.with_session(|s| s.cannot_store(id));
                let direction = Direction::incoming(from.is_none());
                self.app.view.transfer_ended(&TransferEnd::new(
                    id,
                    direction,
                    &shown,
                    Some(&reason),
                ));
                return self.app.transfer_failure(
                    from.is_none(),
                    &format!("transfer of {shown} failed: {reason}"),
                );
            }
        };
        let direction = Direction::incoming(from.is_none());
        let mut meter = Meter::new(id, direction, &name, size, offset, Instant::now());
        meter.view.from = from.as_ref().map(|f| f.as_str().to_owned());
        // A push starts once every receiver has answered: until its first
        // data, it waits (and that wait is not counted in its rate).
        meter.view.waiting = from.is_some();
        let view = meter.view.clone();
        let announce = match &from {
            None => format!("downloading {shown} ({})", self.app.size_shown(size)),
            Some(from) => format!(
                "{from} is sending you {shown} ({})",
                self.app.size_shown(size)
            ),
        };
        let stamp = files::Written::of(&file).ok();
        t.incoming.insert(
            id,
            IncomingFile {
                name,
                size,
                from,
                final_path,
                part,
                file,
                written: offset,
                reserved: offset,
                resumed: offset > 0,
                stamp,
                meter,
            },
        );
        drop(t);
        // Said once the file is listed (the caller may hold the lock until
        // then, see `answer_offer`).
        self.app.removed_parts_notice(&removed);
        self.app.view.transfer(&view);
        self.app.notice(&announce);
        if offset > 0 {
            self.app.notice(&format!(
                "resuming {shown} after the {} already here",
                self.app.size_shown(offset)
            ));
        }
    }

    /// Picks a free name in `received/` for a file pushed to us and creates
    /// its `.part` file (new, never an existing one: another client may
    /// share the folder). The `.part` files there that no running client
    /// holds (left by one that died) are deleted first, and put in `removed`.
    fn open_received(
        &self,
        t: &Transfers,
        name: &FileName,
        removed: &mut Vec<PathBuf>,
    ) -> Result<(PathBuf, PathBuf, File), String> {
        let dir = files::received_dir(&self.app.config.download_dir);
        // A file named `received` (left by an older client, say): no name
        // in it can be free, and trying them all held the client for long.
        if fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            return Err(format!(
                "{} is not a folder",
                inert(&dir.display().to_string())
            ));
        }
        removed.extend(files::remove_abandoned_parts(&dir));
        let held: HashSet<&Path> = t
            .incoming
            .values()
            .map(|f| f.final_path.as_path())
            .collect();
        let mut raced: HashSet<PathBuf> = HashSet::new();
        loop {
            let Some(final_path) = files::free_name(&dir, &files::stored_name(name), |p| {
                held.contains(p) || raced.contains(p) || files::exists_on_disk(p)
            }) else {
                return Err("no free file name in the received folder".to_string());
            };
            let part = files::part_path(&final_path);
            match files::open_part(&part, true) {
                Ok(file) => return Ok((final_path, part, file)),
                // Someone took the name between the check and the open.
                Err(e) if e.already_exists() => {
                    raced.insert(final_path);
                }
                Err(e) => return Err(inert(&e.to_string()).into_owned()),
            }
        }
    }

    /// Writes checked data into the transfer's `.part` file. True if written.
    fn transfer_data(&self, id: TransferId, offset: u64, data: &[u8]) -> bool {
        let mut t = lock(&self.transfers);
        let Some(f) = t.incoming.get_mut(&id) else {
            return false;
        };
        // Truncated or written into by another program since our last
        // write: what is in it is no longer what came.
        let written = if f.changed(false) {
            Err(None)
        } else {
            (|| {
                if f.written != offset {
                    f.file.seek(SeekFrom::Start(offset))?;
                }
                f.file.write_all(data)
            })()
            .map_err(Some)
        };
        match written {
            Ok(()) => {
                f.written = offset + data.len() as u64;
                // Space is asked for as data arrives, a bounded step ahead:
                // an announced size alone never allocates anything.
                if f.written + files::RESERVE_AHEAD / 2 > f.reserved && f.reserved < f.size {
                    let len = files::RESERVE_AHEAD.min(f.size - f.written);
                    files::reserve(&f.file, f.written, len);
                    f.reserved = f.written + len;
                }
                f.stamp = files::Written::of(&f.file).ok();
                let pos = f.written;
                let now = Instant::now();
                if f.meter.view.waiting {
                    f.meter.restart(now);
                }
                let update = f.meter.advance(pos, now);
                drop(t);
                if let Some(view) = update {
                    self.app.view.transfer(&view);
                }
                true
            }
            Err(e) => {
                let reason = match e {
                    Some(source) => files::WriteError {
                        path: f.part.clone(),
                        source,
                    }
                    .to_string(),
                    None => f.changed_reason(),
                };
                let ours = f.from.is_none();
                let f = t.incoming.remove(&id);
                drop(t);
                if ours {
                    self.app.transfer_lost();
                }
                let name = f.map(|f| {
                    drop(f.file);
                    let _ = fs::remove_file(&f.part);
                    f.name
                });
                let _ = self.with_session(|s| s.cannot_store(id));
                let shown = name.as_ref().map_or("a file", FileName::as_str);
                let direction = Direction::incoming(ours);
                self.app.view.transfer_ended(&TransferEnd::new(
                    id,
                    direction,
                    shown,
                    Some(&reason),
                ));
                self.app
                    .transfer_failure(ours, &format!("transfer of {shown} failed: {reason}"));
                false
            }
        }
    }

    /// Size and checksum matched: move the `.part` file to its final name.
    fn transfer_done(&self, id: TransferId) {
        let mut t = lock(&self.transfers);
        let Some(f) = t.incoming.remove(&id) else {
            return;
        };
        if f.changed(true) {
            // Size and checksums matched what came, not what the file
            // holds now: it never gets the final name.
            drop(t);
            let reason = f.changed_reason();
            let ours = f.from.is_none();
            files::remove_if_ours(&f.file, &f.part);
            drop(f.file);
            if ours {
                self.app.transfer_lost();
            }
            let direction = Direction::incoming(ours);
            self.app.view.transfer_ended(&TransferEnd::new(
                id,
                direction,
                f.name.as_str(),
                Some(&reason),
            ));
            self.app
                .transfer_failure(ours, &format!("transfer of {} failed: {reason}", f.name));
            return;
        }
        let (name, size, from, final_path, part) = (f.name, f.size, f.from, f.final_path, f.part);
        // Never replace a file: take the next free name beside it.
        let held: HashSet<&Path> = t
            .incoming
            .values()
            .map(|f| f.final_path.as_path())
            .collect();
        // A download named `received` would take the name of the folder
        // pushed files go to, and every push after it would fail.
        let received = files::received_dir(&self.app.config.download_dir);
        let download = from.is_none();
        let kept_for_pushes = |p: &Path| download && p == received;
        let stored = files::stored_name(&name);
        let moved = files::finish(f.file, &part, &final_path, &stored, |p| {
            held.contains(p) || kept_for_pushes(p)
        });
        drop(t);
        let shown = name.as_str();
        let direction = Direction::incoming(from.is_none());
        let error = moved.as_ref().err().map(ToString::to_string);
        self.app
            .view
            .transfer_ended(&TransferEnd::new(id, direction, shown, error.as_deref()));
        let wanted = final_path.display().to_string();
        match (moved, from) {
            (Ok(to), from) => {
                let path = to.display().to_string();
                match from {
                    None => self.app.notice(&format!(
                        "downloaded {shown} ({}) to {path}",
                        self.app.size_shown(size)
                    )),
                    Some(from) => self.app.notice(&format!(
                        "received {shown} ({}) from {from}, saved to {path}",
                        self.app.size_shown(size)
                    )),
                }
                let saved = to
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                if stored != name {
                    self.app.notice(&format!(
                        "saved as '{saved}': names ending in .part are kept for unfinished transfers"
                    ));
                } else if to != final_path {
                    if kept_for_pushes(&final_path) {
                        self.app.notice(&format!(
                            "saved as '{saved}': {wanted} is kept for the files others send you"
                        ));
                    } else {
                        self.app
                            .notice(&format!("saved as '{saved}': {wanted} already exists"));
                    }
                }
            }
            (Err(e), from) => {
                let _ = fs::remove_file(&part);
                if from.is_none() {
                    self.app.transfer_lost();
                }
                // `e` names the path tried: `wanted`, or the free name
                // beside it.
                self.app
                    .transfer_failure(from.is_none(), &format!("transfer of {shown} failed: {e}"));
            }
        }
    }

    /// The session gave up a transfer: delete its `.part` file and say why.
    fn transfer_failed(&self, id: TransferId, name: &FileName, error: &TransferError) {
        let (file, part) = {
            let mut t = lock(&self.transfers);
            (t.incoming.remove(&id), t.parts.remove(&id))
        };
        // A push to us is not ours: not counted in a script's exit code.
        let ours = file.as_ref().is_none_or(|f| f.from.is_none());
        let direction = Direction::incoming(ours);
        let mut resumed = false;
        // A download the server stopped for want of acks (a stalled
        // network, a stopped client) lost nothing it wrote: its part
        // stays, as after a cut connection, and `/download` resumes it.
        let mut kept = false;
        if let Some(f) = file {
            resumed = f.resumed && f.from.is_none();
            kept = f.from.is_none()
                && matches!(error, TransferError::Cancelled { code, .. } if *code == imchat_core::CancelCode::TIMED_OUT);
            drop(f.file);
            if !kept {
                let _ = fs::remove_file(&f.part);
            }
        }
        if let Some((_, part, file)) = part {
            // Refused before it started: keep what an earlier try left.
            drop(file);
            remove_if_empty(&part);
        }
        // A test's pause here: the transfer is off the list, not yet told.
        fail::fail_point!("client-transfer-failed");
        if ours {
            self.app.transfer_lost();
        }
        let reason = failure_reason(name, ours, resumed, error);
        let hint = if kept {
            format!("; /download {name} resumes it")
        } else {
            String::new()
        };
        self.app.view.transfer_ended(&TransferEnd::new(
            id,
            direction,
            name.as_str(),
            Some(&reason),
        ));
        self.app
            .transfer_failure(ours, &format!("transfer of {name} failed: {reason}{hint}"));
    }
}

/// Why a transfer the session gave up failed, for the user: `download`
/// when it is one of ours (not a push to us), `resumed` when it went on
/// from a `.part` file.
fn failure_reason(name: &FileName, download: bool, resumed: bool, error: &TransferError) -> String {
    match error {
        TransferError::Cancelled { reason, .. } => reason.clone(),
        e @ TransferError::FileCrcMismatch { .. } => checksum_failed(name, resumed, e),
        // The server computes a chunk's CRC, then sends the file's bytes
        // as they are then: a file written to while it is sent fails here.
        e @ TransferError::BadChunkCrc { .. } if download => format!(
            "the file may have changed on the server while it was sent ({e}); \
             the partial file was removed: /download {name} starts over"
        ),
        e @ TransferError::BadChunkCrc { .. } => {
            format!("the data was damaged on the way ({e}); the partial file was removed")
        }
        e => e.to_string(),
    }
}

/// Why a download failed its whole-file checksum (`e`; its `.part` file is
/// deleted by then). A resumed one most likely joined a first part to the
/// rest of a file that changed on the server meanwhile (same size, other
/// bytes): said so, with how to start over. A fresh one got damaged data.
fn checksum_failed(name: &FileName, resumed: bool, e: &TransferError) -> String {
    if resumed {
        format!(
            "the file may have changed on the server since the first part was downloaded ({e}); \
             the partial file was removed: /download {name} starts over"
        )
    } else {
        format!("the data was damaged on the way ({e}); the partial file was removed")
    }
}

/// Removes a `.part` file opened for a download that never started, unless
/// it holds data to resume from.
fn remove_if_empty(part: &Path) {
    if part
        .symlink_metadata()
        .is_ok_and(|m| m.is_file() && m.len() == 0)
    {
        let _ = fs::remove_file(part);
    }
}

#[cfg(test)]
mod tests {
    /// A connection's send buffer stays bounded: left to the kernel it
    /// grows to megabytes of a push's data ahead of the user's chat.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_connection_s_send_buffer_is_bounded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = super::connect("127.0.0.1", port).unwrap();
        // Linux keeps twice what is asked, for its own bookkeeping.
        let size = socket2::SockRef::from(&stream).send_buffer_size().unwrap();
        assert_eq!(size, 2 * super::SEND_BUFFER);
    }

    use super::*;

    #[test]
    fn who_marks_a_user_away_with_how_long_ago() {
        let alice = OnlineUser::here(Username::new("alice").unwrap());
        let bob = OnlineUser::away(Username::new("bob").unwrap(), 83);
        let shown: Vec<String> = [&alice, &bob]
            .into_iter()
            .map(|u| who_entry((u, &u.name.to_string())))
            .collect();
        assert_eq!(
            online_line(&shown, usize::MAX),
            "online (2): alice, bob (away, connection lost 1m23s ago)"
        );
    }

    #[test]
    fn the_join_lists_at_most_so_many_names_and_who_lists_all() {
        let names = |n: usize| -> Vec<String> { (1..=n).map(|i| format!("u{i}")).collect() };
        let three = vec!["alice".to_string(), "bob".into(), "carol".into()];
        assert_eq!(
            online_line(&three, JOIN_NAMES_SHOWN),
            "online (3): alice, bob, carol"
        );
        assert_eq!(online_line(&three, 3), "online (3): alice, bob, carol");
        assert_eq!(
            online_line(&three, 2),
            "online (3): alice, bob and 1 more (/who lists all)"
        );
        let many = online_line(&names(JOIN_NAMES_SHOWN + 70), JOIN_NAMES_SHOWN);
        assert!(many.starts_with("online (120): u1, u2, "), "{many}");
        assert!(
            many.ends_with(", u50 and 70 more (/who lists all)"),
            "{many}"
        );
        let all = online_line(&names(120), usize::MAX);
        assert!(all.ends_with(", u119, u120"), "{all}");
    }

    /// A paste of eight lines while reconnecting is refused in one
    /// error line, not eight; commands that need no server still run.
    #[test]
    fn lines_entered_offline_are_refused_together() {
        let pasted: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
        let (runs, refused) = offline_plan(&pasted);
        assert!(runs.is_empty());
        assert_eq!(refused, 8);
        assert_eq!(
            not_connected(refused, Duration::from_secs(2)),
            "not connected (reconnecting in 2s): 8 lines not sent; they are in your history (Up)"
        );
        assert_eq!(
            not_connected(1, Duration::from_secs(2)),
            "not connected (reconnecting in 2s); the line is in your history (Up)"
        );
        let mixed = ["hi", "/clear", "/msg bob x", "/nosuchcommand", "/quit bye"]
            .map(String::from)
            .to_vec();
        let (runs, refused) = offline_plan(&mixed);
        assert_eq!(refused, 2);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0], Ok(Command::Clear));
        assert!(runs[1].is_err(), "{:?}", runs[1]);
        assert_eq!(runs[2], Ok(Command::Quit("bye".into())));
    }

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(host_port("127.0.0.1", 80), "127.0.0.1:80");
        assert_eq!(host_port("::1", 80), "[::1]:80");
    }

    #[test]
    fn a_refused_connection_names_the_address() {
        // Bind then drop a listener: its port is (almost surely) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let err = connect("127.0.0.1", port).expect_err("nothing listens");
        assert_eq!(
            err.to_string(),
            format!("cannot connect to 127.0.0.1:{port}: connection refused")
        );
    }

    #[test]
    fn a_resume_says_what_was_lost_only_when_something_was() {
        assert_eq!(resumed_line(0), "resumed");
        assert_eq!(
            resumed_line(1),
            "resumed; 1 message was lost while you were away"
        );
        assert_eq!(
            resumed_line(7),
            "resumed; 7 messages were lost while you were away"
        );
    }

    #[test]
    fn a_message_given_up_is_named_short_and_shown_inert() {
        let bob = Recipient::User(Username::new("bob").unwrap());
        let line = not_sent_line(&bob, "hi\x1b[2J");
        assert_eq!(
            line,
            "message to bob not sent: \"hi\x1b[2J\" (too many were waiting for the server; it may not have arrived)",
            "raw, for JSON"
        );
        assert_eq!(
            ui::plain_line(Entry::Error(line)).as_deref(),
            Some(
                "error: message to bob not sent: \"hi^[[2J\" (too many were waiting for the server; it may not have arrived)"
            )
        );
        let long = "x".repeat(100);
        let line = not_sent_line(&Recipient::Everyone, &long);
        assert!(
            line.starts_with(&format!("message not sent: \"{}…\"", "x".repeat(60))),
            "{line}"
        );
    }

    #[test]
    fn a_chat_reaches_the_views_as_the_server_sent_it() {
        let text = "a\nb\u{202e}c";
        let entry = Entry::Chat(chat_entry(RoutedChat {
            id: imchat_core::MessageId(7),
            time: imchat_core::Timestamp(1_796_051_045_000),
            from: Username::new("bob").unwrap(),
            private: true,
            kind: ChatKind::Action,
            text: text.into(),
            history: false,
        }));
        let v = ui::entry_json(entry.clone());
        assert_eq!(v["text"].as_str(), Some(text), "JSON: the exact text");
        assert_eq!(v["from"], "bob");
        assert_eq!(v["time"], "2026-11-30T15:04:05Z");
        assert_eq!(
            ui::plain_line(entry).as_deref(),
            Some("* bob a^Jb\\u{202e}c (private)"),
            "plain: inert"
        );
    }

    /// A join or a leave reaches the views with the time the server
    /// noted, as a chat does, through the same conversion.
    #[test]
    fn a_join_or_leave_reaches_the_views_with_the_servers_time() {
        let entry = timed_notice(
            imchat_core::Timestamp(1_796_051_045_000),
            "bob has joined".into(),
            false,
        );
        assert_eq!(
            entry.time(),
            Some(UNIX_EPOCH + Duration::from_secs(1_796_051_045))
        );
        let v = ui::entry_json(entry);
        assert_eq!(v["type"], "notice");
        assert_eq!(v["time"], "2026-11-30T15:04:05Z");
        assert_eq!(v["text"], "bob has joined");
    }

    #[test]
    fn a_push_sent_to_fewer_than_accepted_it_says_how_many_missed_it() {
        let name = FileName::new("big.bin").expect("valid");
        assert_eq!(sent_line(&name, 2, 2), "sent big.bin to 2 user(s)");
        assert_eq!(
            sent_line(&name, 1, 2),
            "sent big.bin to 1 user(s); 1 of the 2 who accepted it did not get it whole"
        );
        // No answer seen (a push to one user, auto-accepted): as before.
        assert_eq!(sent_line(&name, 1, 0), "sent big.bin to 1 user(s)");
    }

    #[test]
    fn a_refused_message_is_named_in_its_error() {
        let nobody = Recipient::User(Username::new("nobody").unwrap());
        assert_eq!(
            refused_line(
                &nobody,
                &quote("hello there"),
                "no user named 'nobody' is online"
            ),
            "message to nobody not delivered: \"hello there\" (no user named 'nobody' is online)"
        );
        let long = "y".repeat(100);
        assert!(
            refused_line(&Recipient::Everyone, &quote(&long), "slow down").starts_with(&format!(
                "message not delivered: \"{}…\" (slow down)",
                "y".repeat(60)
            ))
        );
    }

    /// A chunk that fails its CRC in a download is, on a real network
    /// (TCP has its own checksums), a file changed on the server while it
    /// was sent: the server sends the file's bytes as they are when they
    /// go, after it computed the chunk's CRC. Said so, with how to start
    /// over, not as a bare "failed its CRC check".
    #[test]
    fn a_chunk_failing_its_crc_in_a_download_says_the_file_may_have_changed() {
        let name = FileName::new("mod.bin").expect("valid");
        let e = TransferError::BadChunkCrc {
            id: TransferId(1),
            offset: 700_710_912,
        };
        let said = failure_reason(&name, true, false, &e);
        assert!(
            said.starts_with("the file may have changed on the server while it was sent"),
            "{said}"
        );
        assert!(said.contains("offset 700710912"), "{said}");
        assert!(
            said.ends_with("the partial file was removed: /download mod.bin starts over"),
            "{said}"
        );
        // A push to us: its sender computed the CRC of the bytes it sent.
        let pushed = failure_reason(&name, false, false, &e);
        assert!(pushed.starts_with("the data was damaged"), "{pushed}");
        assert!(!pushed.contains("/download"), "{pushed}");
    }

    #[test]
    fn a_checksum_failure_says_damaged_data_or_a_changed_file_when_resumed() {
        let name = FileName::new("mod.bin").expect("valid");
        let e = TransferError::FileCrcMismatch {
            id: TransferId(1),
            got: 0x6a6c_8c69,
            expected: 0xd3f0_d939,
        };
        let fresh = checksum_failed(&name, false, &e);
        assert!(fresh.starts_with("the data was damaged"), "{fresh}");
        assert!(fresh.contains("does not match"), "{fresh}");
        let resumed = checksum_failed(&name, true, &e);
        assert!(
            resumed.starts_with(
                "the file may have changed on the server since the first part was downloaded"
            ),
            "{resumed}"
        );
        assert!(
            resumed.ends_with("the partial file was removed: /download mod.bin starts over"),
            "{resumed}"
        );
    }

    #[test]
    fn a_text_over_the_limit_says_the_unit_of_the_limit() {
        let e = UsageError::TextTooLong {
            len: 65537,
            max: 65536,
        };
        assert_eq!(
            usage_line(&e),
            "message of 65537 bytes is longer than the limit of 65536 bytes"
        );
        assert_eq!(usage_line(&UsageError::NotConnected), "not connected");
    }

    #[test]
    fn mode_lines_match_the_contract() {
        assert_eq!(mode_line(&Mode::Broadcast), "mode: broadcast");
        let bob = Username::new("bob").expect("valid");
        assert_eq!(mode_line(&Mode::Unicast(bob)), "mode: unicast to bob");
    }

    /// `localhost` is the server of `127.0.0.1` (and of `::1` where it
    /// resolves to both); `127.0.0.2` is another; a deadline gone by
    /// ends the wait at once.
    #[test]
    fn names_of_the_same_server_resolve_to_an_address_in_common() {
        let soon = || Instant::now() + Duration::from_secs(5);
        let others = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect();
        assert_eq!(
            same_server("127.0.0.1", others(&["localhost", "127.0.0.2"]), 1, soon()),
            ["localhost"]
        );
        assert_eq!(
            same_server("localhost", others(&["127.0.0.2", "127.0.0.1"]), 1, soon()),
            ["127.0.0.1"]
        );
        assert!(same_server("127.0.0.1", Vec::new(), 1, soon()).is_empty());
        let start = Instant::now();
        let _ = same_server("127.0.0.1", others(&["localhost"]), 1, start);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty() {
        let schedule: Vec<u64> = (1..=8).map(|n| backoff(n, 0.0).as_secs()).collect();
        assert_eq!(schedule, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX, 0.0), BACKOFF_MAX);
    }

    #[test]
    fn backoff_jitter_stays_within_a_quarter() {
        assert_eq!(backoff(3, -1.0), Duration::from_secs(3));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(3, 7.0), Duration::from_secs(5), "clamped");
        for attempt in 1..=10 {
            let base = backoff(attempt, 0.0);
            for _ in 0..200 {
                let d = backoff(attempt, fastrand::f64() * 2.0 - 1.0);
                assert!(d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25), "{d:?}");
            }
        }
    }

    #[test]
    fn reconnect_policy_follows_the_mode_and_the_flags() {
        use Reconnect::{Keep, No, Once};
        // (option, terminal, shutdown, several servers) -> policy
        let cases = [
            (None, true, false, false, Keep),
            (None, true, true, false, Keep),
            (None, false, false, false, Once),
            (None, false, true, false, No),
            (Some(true), false, true, false, Keep),
            (Some(true), false, false, false, Keep),
            (Some(false), true, false, false, No),
            (Some(false), false, false, false, No),
            // A script given a cluster's servers goes on to the next one
            // after a shutdown too (before: it exited).
            (None, false, true, true, Once),
            (None, false, false, true, Once),
            (None, true, true, true, Keep),
            (Some(false), false, true, true, No),
        ];
        for (option, terminal, shutdown, several, want) in cases {
            assert_eq!(
                reconnect_policy(option, terminal, shutdown, several),
                want,
                "{option:?} {terminal} {shutdown} {several}"
            );
        }
    }

    fn meter(total: u64, start: u64, now: Instant) -> Meter {
        let name = FileName::new("big.bin").expect("valid");
        Meter::new(TransferId(3), Direction::Download, &name, total, start, now)
    }

    #[test]
    fn a_resumed_prefix_does_not_count_toward_the_rate() {
        let t0 = Instant::now();
        // 900 MiB already on disk; 10 MiB more in one second.
        let mut m = meter(1000 << 20, 900 << 20, t0);
        let v = m
            .advance(910 << 20, t0 + Duration::from_secs(1))
            .expect("first update");
        let rate = v.rate.expect("a rate after a second");
        assert!((rate - f64::from(10 << 20)).abs() < 1.0, "{rate}");
        assert_eq!(v.eta, Some(Duration::from_secs(9)));
        assert_eq!(v.id, "#3");
        assert_eq!(v.done, 910 << 20);
    }

    #[test]
    fn transfer_updates_come_a_few_times_a_second_at_most() {
        let t0 = Instant::now();
        let mut m = meter(100, 0, t0);
        let first = m.advance(1, t0).expect("the first one shows");
        assert_eq!(first.rate, None, "no rate before there is a measure");
        assert!(m.advance(2, t0 + Duration::from_millis(100)).is_none());
        assert!(m.advance(3, t0 + Duration::from_millis(200)).is_none());
        let later = m.advance(4, t0 + Duration::from_millis(600)).expect("due");
        assert_eq!(later.done, 4);
        let updates = (0..100u64)
            .filter_map(|i| m.advance(4 + i / 10, t0 + Duration::from_millis(600 + 10 * i)))
            .count();
        assert!(updates <= 4, "{updates} updates in one second");
    }

    /// `/transfers` of one that moves no more says `stalled`, not the
    /// rate and time left it had when it moved.
    #[test]
    fn a_transfer_that_stops_moving_is_listed_stalled() {
        let t0 = Instant::now();
        let mut m = meter(100 << 20, 0, t0);
        m.advance(50 << 20, t0 + Duration::from_secs(1));
        let moving = m.view_at(t0 + Duration::from_secs(2));
        assert!(!moving.stalled);
        assert!(moving.line().contains("MiB/s"), "{}", moving.line());
        let stopped = m.view_at(t0 + Duration::from_secs(1) + STALLED);
        assert!(
            stopped.line().ends_with("50%  stalled"),
            "{}",
            stopped.line()
        );
        // A byte more: moving again.
        m.advance((50 << 20) + 1, t0 + Duration::from_secs(7));
        assert!(!m.view_at(t0 + Duration::from_secs(8)).stalled);
        // A push waiting for its acceptance waits; it does not stall.
        let mut w = meter(100, 0, t0);
        w.view.waiting = true;
        assert!(!w.view_at(t0 + STALLED * 10).stalled);
    }

    /// The view is told once that a transfer stalled (by the timer:
    /// nothing moves to tell it), and at once when it moves again, not
    /// held back by the pace of its updates.
    #[test]
    fn a_stall_is_told_once_and_its_end_at_once() {
        let t0 = Instant::now();
        let mut m = meter(100, 0, t0);
        assert!(m.advance(50, t0 + Duration::from_secs(1)).is_some());
        assert!(m.stall(t0 + Duration::from_secs(2)).is_none(), "moving");
        let stalled = m.stall(t0 + Duration::from_secs(1) + STALLED);
        assert!(stalled.is_some_and(|v| v.stalled), "stalled");
        assert!(m.stall(t0 + STALLED * 3).is_none(), "told once");
        let again = m.advance(51, t0 + STALLED * 3 + Duration::from_millis(10));
        assert!(again.is_some_and(|v| !v.stalled), "moving again, at once");
        // The next pace of updates as before.
        assert!(m
            .advance(52, t0 + STALLED * 3 + Duration::from_millis(20))
            .is_none());
        // A push waiting for its acceptance is never told stalled.
        let mut w = meter(100, 0, t0);
        w.view.waiting = true;
        assert!(w.stall(t0 + STALLED * 10).is_none());
    }

    #[test]
    fn a_push_measures_from_its_acceptance() {
        let t0 = Instant::now();
        let mut m = meter(100, 0, t0);
        m.view.waiting = true;
        m.restart(t0 + Duration::from_secs(60));
        assert!(!m.view.waiting);
        let v = m.advance(50, t0 + Duration::from_secs(61)).expect("update");
        let rate = v.rate.expect("rate");
        assert!(
            (rate - 50.0).abs() < 0.01,
            "the minute waiting is not counted: {rate}"
        );
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use imchat_core::{MessageId, Timestamp};

    /// Any `u64` is a time on the wire: one far past what local time can
    /// be computed for (a hostile server's) is shown as the last second
    /// of 9999 by every view, not a panic of the reader thread.
    #[test]
    fn a_time_past_the_year_9999_is_shown_not_a_panic() {
        for millis in [u64::MAX, (1 << 63) - 1, 9_000_000_000_000_000] {
            for history in [false, true] {
                let entry = chat_entry(RoutedChat {
                    id: MessageId(1),
                    time: Timestamp(millis),
                    from: Username::new("eve").unwrap(),
                    private: false,
                    kind: ChatKind::Text,
                    text: "hi".into(),
                    history,
                });
                assert_eq!(entry.time, UNIX_EPOCH + LATEST_SHOWN);
                assert!(crate::ui::plain_history(&entry).contains("<eve> hi"));
                let json = crate::ui::entry_json(Entry::Chat(entry.clone()));
                assert_eq!(json["time"], "9999-12-31T23:59:59Z");
                assert!(!crate::chatlog::stamp(entry.time).is_empty());
                let mut m = crate::screen::testing::model();
                m.show(Entry::Chat(entry));
                // Under the line that says its day.
                assert_eq!(m.entries().len(), 2);
                assert!(matches!(m.entries()[1].entry, Entry::Chat(_)));
            }
            // A join's or a leave's time the same way.
            let joined = timed_notice(Timestamp(millis), "eve has joined".into(), false);
            assert_eq!(joined.time(), Some(UNIX_EPOCH + LATEST_SHOWN));
            let json = crate::ui::entry_json(joined.clone());
            assert_eq!(json["time"], "9999-12-31T23:59:59Z");
            let mut m = crate::screen::testing::model();
            m.show(joined);
            assert_eq!(m.entries().len(), 2);
            assert!(matches!(m.entries()[1].entry, Entry::NoticeAt { .. }));
        }
    }
}
