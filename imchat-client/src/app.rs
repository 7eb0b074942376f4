//! The running client: a [`ClientSession`] shared by a few threads, and the
//! glue between its events and the terminal and the disk.
//!
//! ```text
//!  socket ──► reader thread ──► session.handle_message ─┐
//!  clock  ──► timer thread  ──► session.handle_timeout ─┤   (one Mutex)
//!  stdin  ──► input thread  ──► main: Command::parse ───┤
//!  file   ──► pusher threads ─► session.push_chunk ─────┘
//!                                        │ after every call:
//!                                        ├─ poll_transmit ─► Outbox ─► writer thread ─► socket
//!                                        └─ poll_event ────► print / write files
//! ```
//!
//! The protocol (what to send, whether a chunk is good, when the server is
//! gone) is all in the session; this module only moves bytes and shows
//! things. Nothing is printed while a lock is held: printing through the
//! line editor may wait for it to redraw.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::{Frame, FrameReader, Outbox, PushError, TransportError};
use imchat_core::{
    inert, ChatKind, ClientEvent, ClientSession, Departure, Encode, FileEntry, FileListPart,
    FileName, LeaveReason, Limits, Origin, Recipient, RoutedChat, ServerMessage, TransferError,
    TransferId, UsageError, Username,
};

use crate::command::{Command, Mode, HELP};
use crate::error::ClientError;
use crate::files;
use crate::ui::{self, Lines, Progress, Style, Ui};

/// How long the server has to answer the handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(15);
/// How often the session's clock runs (keepalive pings and timeouts).
const TICK: Duration = Duration::from_secs(1);
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
/// ending (pacing, waiting for queue room or for answers).
const WAIT_STEP: Duration = Duration::from_millis(100);
/// Room a chat frame needs in the outbound queue beyond its text.
const CHAT_FRAME_ROOM: usize = 1024;

/// What the client was started with.
pub struct Config {
    /// Host name as given (for messages).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The username asked for.
    pub username: Username,
    /// Where downloads go; received pushes go to its `received/`.
    pub download_dir: PathBuf,
    /// Pushes up to this size are accepted without asking; `None`: always ask.
    pub auto_accept: Option<u64>,
    /// Ask about bigger pushes even when input is not a terminal.
    pub ask_when_piped: bool,
    /// `--json`: one JSON object per event on stdout.
    #[allow(dead_code)] // read once the JSON view lands
    pub json: bool,
    /// `--reconnect` (`Some(true)`) / `--no-reconnect` (`Some(false)`);
    /// `None`: the default of the mode (screen or piped).
    #[allow(dead_code)] // read once reconnecting lands
    pub reconnect: Option<bool>,
    /// The input history file (`--history-file`, else the default in the
    /// user's data folder); `None` with `--no-history` or without a data folder.
    #[allow(dead_code)] // read once the full-screen interface lands
    pub history_file: Option<PathBuf>,
    /// `--no-history`: keep no history file.
    #[allow(dead_code)] // read once the full-screen interface lands
    pub no_history: bool,
}

/// What the main thread waits for.
enum Input {
    /// A line typed.
    Line(String),
    /// End of input: quit.
    Eof,
    /// The end: print `notice` (if any) on stdout, then fail with `error`.
    Fatal {
        notice: Option<String>,
        error: ClientError,
    },
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
    progress: Option<Progress>,
}

/// A push of ours; `stop` tells its thread to give up, `go` that its
/// receivers accepted it (dropping it ends a thread still waiting).
struct OutgoingPush {
    name: FileName,
    stop: Arc<AtomicBool>,
    go: Option<Sender<()>>,
}

/// The transfers the binary holds files or threads for, by id.
#[derive(Default)]
struct Transfers {
    incoming: HashMap<TransferId, IncomingFile>,
    pushes: HashMap<TransferId, OutgoingPush>,
    /// Downloads asked for and not started yet: their `.part` file, open
    /// and locked from the request on.
    parts: HashMap<TransferId, (PathBuf, File)>,
}

/// What a session call left to do once the lock is released.
#[must_use]
struct Drained {
    events: Vec<ClientEvent>,
    /// The outbound queue refused a control message (the server is not reading).
    queue_full: bool,
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

/// Everything the threads share.
struct Shared {
    session: Mutex<ClientSession>,
    /// Where plain text goes (set with `/mode`).
    mode: Mutex<Mode>,
    outbox: Arc<Outbox>,
    ui: Arc<Ui>,
    chunk_size: usize,
    download_dir: PathBuf,
    transfers: Mutex<Transfers>,
    /// Set once we are leaving: threads stop quietly.
    closing: AtomicBool,
    /// Set once the connection ended: waits on the main thread stop.
    ended: AtomicBool,
    /// Input comes from a script (not a terminal): leaving waits for
    /// the answers to what it asked for.
    scripted: bool,
    /// Downloads and pushes of ours that failed (the exit code says so).
    failed_transfers: AtomicUsize,
    /// A shared-file list is being shown (its last part has not arrived).
    listing: AtomicBool,
    /// The text given with `/quit`, sent with the `Quit`.
    parting: Mutex<String>,
    /// Someone can answer `/accept` or `/decline` (input is a terminal, or
    /// `--ask-when-piped`): bigger pushes wait for an answer, else they are
    /// declined at once.
    ask_offers: bool,
    tx: Sender<Input>,
    /// File data and transfer ends go to the disk thread, so a write that
    /// stalls never holds up chat on the network thread.
    disk: SyncSender<DiskJob>,
    /// Chunk buffers the disk thread is done with, for the reader's
    /// decoder to receive the next chunks into.
    recycled: Mutex<Vec<Vec<u8>>>,
    /// The socket, for the disk thread to write its acknowledgements
    /// itself (see [`Outbox::flush`]) rather than wake the writer thread.
    socket: TcpStream,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread leaves consistent data behind (every update is a
    // few field writes); keep going rather than take the client down.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connects the session over `stream` and runs until the user quits (`Ok`)
/// or the connection ends (`Err`).
pub fn run(stream: TcpStream, config: Config) -> Result<(), ClientError> {
    let io_err = |what| move |source| ClientError::Io { what, source };
    let limits = Limits::default();
    let mut session = ClientSession::new(config.username.clone(), limits.clone(), Instant::now());
    // Downloads are acknowledged once written, by the disk thread.
    session.set_manual_acks(true);
    session.set_auto_accept(config.auto_accept);
    let ask_offers = config.ask_when_piped || io::IsTerminal::is_terminal(&io::stdin());
    let mut reader = FrameReader::<TcpStream, ServerMessage>::new(
        stream.try_clone().map_err(io_err("cloning the socket"))?,
        limits.max_frame,
    );
    let mut write_half = stream.try_clone().map_err(io_err("cloning the socket"))?;
    let (username, welcome) = handshake(&mut session, &mut reader, &mut write_half)?;

    let (ui, lines) = ui::setup(username.as_str());
    let ui = Arc::new(ui);
    ui.notice(&format!(
        "connected to {} as {}",
        host_port(&inert(&config.host), config.port),
        inert(username.as_str())
    ));
    for line in welcome.lines() {
        ui.print(Style::Plain, &inert(line));
    }

    let outbox = Outbox::new(limits.max_outbound);
    let (tx, rx) = mpsc::channel();
    let (disk, disk_jobs) = mpsc::sync_channel(DISK_QUEUE);
    let shared = Arc::new(Shared {
        session: Mutex::new(session),
        mode: Mutex::new(Mode::default()),
        outbox: outbox.clone(),
        ui: ui.clone(),
        chunk_size: limits.chunk_size,
        download_dir: config.download_dir,
        transfers: Mutex::new(Transfers::default()),
        closing: AtomicBool::new(false),
        ended: AtomicBool::new(false),
        scripted: !ui.is_terminal(),
        failed_transfers: AtomicUsize::new(0),
        listing: AtomicBool::new(false),
        parting: Mutex::new(String::new()),
        ask_offers,
        tx: tx.clone(),
        disk,
        recycled: Mutex::new(Vec::new()),
        socket: stream.try_clone().map_err(io_err("cloning the socket"))?,
    });

    let (writer_done_tx, writer_done) = mpsc::channel::<()>();
    let s = shared.clone();
    spawn("writer", move || {
        if let Err(e) = s.outbox.run_writer(write_half) {
            log::info!("writing to the server failed: {e}");
            s.fatal(None, ClientError::ConnectionLost);
        }
        let _ = writer_done_tx.send(());
    })?;
    let s = shared.clone();
    spawn("disk", move || s.disk_loop(&disk_jobs))?;
    let s = shared.clone();
    spawn("reader", move || s.read_loop(reader))?;
    let s = shared.clone();
    spawn("timer", move || s.timer_loop())?;
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    spawn("input", move || input_loop(lines, tx, ack_rx))?;

    let end = loop {
        match rx.recv() {
            Ok(Input::Line(line)) => {
                if shared.command(&line) == Flow::Quit {
                    break shared.settle(&rx);
                }
                let _ = ack_tx.send(());
            }
            Ok(Input::Eof) | Err(_) => break shared.settle(&rx),
            Ok(Input::Fatal { notice, error }) => break Err((notice, error)),
        }
    };
    match end {
        Ok(()) => {
            shared.quit(&writer_done);
            let _ = stream.shutdown(Shutdown::Both);
            match shared.failed_transfers.load(Ordering::SeqCst) {
                0 => Ok(()),
                n => Err(ClientError::TransfersFailed(n)),
            }
        }
        Err((notice, error)) => {
            shared.closing.store(true, Ordering::SeqCst);
            shared.outbox.abort();
            shared.stop_transfers();
            let _ = stream.shutdown(Shutdown::Both);
            ui.last_words(notice.as_deref());
            Err(error)
        }
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

/// Sends the `Hello` and waits for the answer, on this thread, before
/// anything else runs. Returns the registered name and the welcome text.
fn handshake(
    session: &mut ClientSession,
    reader: &mut FrameReader<TcpStream, ServerMessage>,
    w: &mut TcpStream,
) -> Result<(Username, String), ClientError> {
    let lost = |e: io::Error| {
        log::info!("handshake: {e}");
        ClientError::ConnectionLost
    };
    reader
        .get_ref()
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
                return Err(ClientError::NoAnswer)
            }
            Err(TransportError::Io(e)) => return Err(lost(e)),
            Err(e) => return Err(ClientError::ConnectionBroken(e.to_string())),
        };
        session.handle_message(msg, Instant::now());
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::Welcome { username, text, .. } => {
                    reader.get_ref().set_read_timeout(None).map_err(lost)?;
                    while let Some(m) = session.poll_transmit() {
                        w.write_all(&m.to_frame()).map_err(lost)?;
                    }
                    return Ok((username, text));
                }
                ClientEvent::Refused { code, reason } => {
                    let reason = if reason.is_empty() {
                        code.describe().to_string()
                    } else {
                        inert(&reason).into_owned()
                    };
                    return Err(ClientError::Refused(reason));
                }
                ClientEvent::Shutdown { reason } => {
                    return Err(ClientError::Shutdown(inert(&reason).into_owned()))
                }
                other => log::debug!("before the welcome: {other:?}"),
            }
        }
    }
}

fn input_loop(mut lines: Lines, tx: Sender<Input>, ack: Receiver<()>) {
    loop {
        match lines.next_line() {
            Ok(Some(line)) => {
                // Wait until the line is handled before reading (and
                // prompting) again: after /quit there is no next prompt.
                if tx.send(Input::Line(line)).is_err() || ack.recv().is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = tx.send(Input::Eof);
                return;
            }
            Err(error) => {
                let _ = tx.send(Input::Fatal {
                    notice: None,
                    error,
                });
                return;
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

fn mode_line(mode: &Mode) -> String {
    match mode {
        Mode::Broadcast => "mode: broadcast".to_string(),
        Mode::Unicast(u) => format!("mode: unicast to {}", inert(u.as_str())),
    }
}

impl Shared {
    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Ends the client (first call wins; the main thread stops at the first).
    fn fatal(&self, notice: Option<String>, error: ClientError) {
        self.ended.store(true, Ordering::SeqCst);
        if !self.closing() {
            let _ = self.tx.send(Input::Fatal { notice, error });
        }
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
            self.ui
                .error("the server is not reading; a message was dropped");
        }
        for ev in drained.events {
            self.event(ev);
        }
    }

    /// Waits until a request (with `text_len` bytes of chat text, 0 for
    /// others) may go: within the rate the server announced, and with room
    /// in the outbound queue, so that nothing the user gives is dropped.
    /// Meanwhile the input is not read (back-pressure). False if the
    /// connection ended while waiting.
    fn wait_to_send(&self, text_len: usize) -> bool {
        loop {
            if self.ended.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            let Some(at) = lock(&self.session).next_send_at(now, text_len) else {
                break;
            };
            thread::sleep(at.saturating_duration_since(now).min(WAIT_STEP));
        }
        let room = text_len + CHAT_FRAME_ROOM;
        while !self.outbox.wait_control_room(room, WAIT_STEP) {
            if self.ended.load(Ordering::SeqCst) || self.outbox.is_closed() {
                return false;
            }
        }
        true
    }

    /// Before leaving: a script waits (bounded by [`ANSWER_WAIT`] after the
    /// server last said anything) until what it sent is written, the
    /// answers to its requests have arrived and the downloads and pushes
    /// it started have ended. A terminal user who leaves leaves at once.
    fn settle(&self, rx: &Receiver<Input>) -> Result<(), (Option<String>, ClientError)> {
        if !self.scripted {
            return Ok(());
        }
        if self.wait_to_send(0) {
            let _ = self.with_session(imchat_core::ClientSession::settle);
        }
        loop {
            let (settled, heard) = {
                let s = lock(&self.session);
                (s.is_settled(), s.last_heard())
            };
            if settled && self.transfers_done() {
                return Ok(());
            }
            if heard.elapsed() >= ANSWER_WAIT {
                return Err((None, ClientError::NoAnswers(ANSWER_WAIT.as_secs())));
            }
            match rx.recv_timeout(WAIT_STEP) {
                Ok(Input::Fatal { notice, error }) => return Err((notice, error)),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }

    /// True when no download of ours is still being written and no push
    /// of ours is still being sent.
    fn transfers_done(&self) -> bool {
        let t = lock(&self.transfers);
        t.pushes.is_empty() && t.incoming.values().all(|f| f.from.is_some())
    }

    /// Counts a download or push of ours that failed.
    fn transfer_lost(&self) {
        self.failed_transfers.fetch_add(1, Ordering::SeqCst);
    }

    fn read_loop(&self, mut reader: FrameReader<TcpStream, ServerMessage>) {
        loop {
            for buf in std::mem::take(&mut *lock(&self.recycled)) {
                reader.decoder_mut().recycle(buf);
            }
            let msg = reader.read_message();
            if self.closing() {
                return;
            }
            match msg {
                Ok(Some(msg)) => self.with_session(|s| s.handle_message(msg, Instant::now())),
                Ok(None) => return self.fatal(None, ClientError::ConnectionLost),
                Err(TransportError::Io(e)) => {
                    log::info!("reading from the server failed: {e}");
                    return self.fatal(None, ClientError::ConnectionLost);
                }
                Err(e) => return self.fatal(None, ClientError::ConnectionBroken(e.to_string())),
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
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
            };
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

    /// Hands a job to the disk thread (gone only when the client is ending).
    fn to_disk(&self, job: DiskJob) {
        let _ = self.disk.send(job);
    }

    fn timer_loop(&self) {
        while !self.closing() {
            thread::sleep(TICK);
            self.with_session(|s| s.handle_timeout(Instant::now()));
        }
    }

    /// Sends `Quit`, lets the writer flush it (bounded), and stops.
    fn quit(&self, writer_done: &Receiver<()>) {
        self.closing.store(true, Ordering::SeqCst);
        let parting = std::mem::take(&mut *lock(&self.parting));
        self.with_session(|s| s.quit(&parting));
        self.outbox.close();
        let _ = writer_done.recv_timeout(QUIT_WAIT);
        self.stop_transfers();
    }

    /// On the way out: stops our pushes and deletes the temporary files of
    /// files pushed to us (they cannot be resumed). A download's `.part`
    /// stays, so the next `/download` of that name resumes it.
    fn stop_transfers(&self) {
        let mut t = lock(&self.transfers);
        for push in t.pushes.values() {
            push.stop.store(true, Ordering::SeqCst);
        }
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
            Err(e) => {
                self.ui.error(&inert(&e.to_string()));
                return Flow::Continue;
            }
        };
        let result: Result<(), UsageError> = match cmd {
            Command::Nothing => Ok(()),
            Command::Text(text) => {
                let to = lock(&self.mode).recipient();
                self.paced(text.len(), |s| s.send_chat(to, &text))
            }
            Command::Broadcast(text) => {
                self.paced(text.len(), |s| s.send_chat(Recipient::Everyone, &text))
            }
            Command::Unicast { to, text } => {
                self.paced(text.len(), |s| s.send_chat(Recipient::User(to), &text))
            }
            Command::SetMode(mode) => {
                self.ui.notice(&mode_line(&mode));
                *lock(&self.mode) = mode;
                Ok(())
            }
            Command::ShowMode => {
                let line = mode_line(&lock(&self.mode));
                self.ui.notice(&line);
                Ok(())
            }
            Command::Who => self.paced(0, imchat_core::ClientSession::who),
            Command::Files => self
                .paced(0, imchat_core::ClientSession::files_access)
                .and_then(|()| self.paced(0, imchat_core::ClientSession::list_files)),
            Command::FilesAccess => self.paced(0, imchat_core::ClientSession::files_access),
            Command::ListFiles => self.paced(0, imchat_core::ClientSession::list_files),
            Command::Download(name) => {
                self.download(name);
                Ok(())
            }
            Command::SendFile { path, to } => {
                self.send_file(&path, to);
                Ok(())
            }
            Command::Accept(n) => self.answer_offer(n, true),
            Command::Decline(n) => self.answer_offer(n, false),
            Command::Help => {
                for l in HELP.lines() {
                    self.ui.print(Style::Plain, l);
                }
                Ok(())
            }
            Command::Me(text) => {
                let to = lock(&self.mode).recipient();
                self.paced(text.len(), |s| s.send_action(to, &text))
            }
            Command::Quit(reason) => {
                *lock(&self.parting) = reason;
                return Flow::Quit;
            }
        };
        if let Err(e) = result {
            self.ui.error(&inert(&e.to_string()));
        }
        Flow::Continue
    }

    /// `/accept [n]` (`accept`) or `/decline [n]`: answers the offer `#n`,
    /// or the only one waiting.
    fn answer_offer(&self, n: Option<u32>, accept: bool) -> Result<(), UsageError> {
        let offers = lock(&self.session).pending_offers();
        let id = match (n, &offers[..]) {
            (Some(n), _) => TransferId(TransferId::SERVER_BIT | n),
            (None, [(id, ..)]) => *id,
            (None, []) => {
                self.ui.error("no file is offered to you");
                return Ok(());
            }
            (None, several) => {
                let ids: Vec<String> = several.iter().map(|(id, ..)| id.to_string()).collect();
                self.ui.error(&format!(
                    "several files are offered to you ({}): say which, as in /accept {}",
                    ids.join(", "),
                    ids[0].trim_start_matches('#')
                ));
                return Ok(());
            }
        };
        let offer = offers.iter().find(|(o, ..)| *o == id).cloned();
        if accept {
            self.with_session(|s| s.accept(id))
        } else {
            self.with_session(|s| s.decline(id, "declined"))?;
            if let Some((_, from, name, _)) = offer {
                self.ui.notice(&format!(
                    "declined {} from {}",
                    inert(name.as_str()),
                    inert(from.as_str())
                ));
            }
            Ok(())
        }
    }

    /// Someone offers us a file bigger than we accept without asking: ask,
    /// or decline it when no one can answer.
    fn push_offered(&self, id: TransferId, from: &Username, name: &FileName, size: u64) {
        let (from, name, n) = (inert(from.as_str()), inert(name.as_str()), id.to_string());
        let n = n.trim_start_matches('#');
        let shown = files_size(size);
        if self.ask_offers {
            return self.ui.notice(&format!(
                "{from} wants to send you '{name}' ({shown}): /accept {n} or /decline {n}"
            ));
        }
        let reason = "larger than this client accepts without asking, and no one at a terminal to /accept it";
        let _ = self.with_session(|s| s.decline(id, reason));
        self.ui.notice(&format!(
            "declined '{name}' ({shown}) from {from}: {reason} (see --auto-accept-bytes, --ask-when-piped)"
        ));
    }

    /// [`with_session`](Self::with_session) once the request may go (see
    /// [`wait_to_send`](Self::wait_to_send)); nothing if the connection
    /// ended meanwhile (the main loop then stops).
    fn paced(
        &self,
        text_len: usize,
        f: impl FnOnce(&mut ClientSession) -> Result<(), UsageError>,
    ) -> Result<(), UsageError> {
        if !self.wait_to_send(text_len) {
            return Ok(());
        }
        self.with_session(f)
    }

    /// `/download <name>`: resumes from `<name>.part` when one is there.
    fn download(&self, name: FileName) {
        // Only this thread asks for downloads: no other can start one of
        // this name between the check and the request.
        if lock(&self.session).is_downloading(&name) {
            self.ui.error(&format!(
                "{} is already being downloaded",
                inert(name.as_str())
            ));
            return;
        }
        let part = files::part_path(&self.download_dir.join(name.as_str()));
        // Held (locked) from now until the download ends.
        let mut file = match files::open_part(&part, false) {
            Ok(f) => f,
            Err(e) => {
                self.transfer_lost();
                return self.ui.error(&format!(
                    "cannot download {}: {}",
                    inert(name.as_str()),
                    inert(&e.to_string())
                ));
            }
        };
        let resume = files::resume_state(&mut file).unwrap_or_else(|e| {
            log::warn!(
                "cannot read {}: {e}; downloading from the start",
                part.display()
            );
            None
        });
        if !self.wait_to_send(0) {
            return;
        }
        let mut t = lock(&self.transfers);
        let (result, drained) = self.session_call(|s| s.download(name, resume));
        match result {
            Ok(id) => {
                t.parts.insert(id, (part, file));
            }
            Err(_) => {
                drop(file);
                remove_if_empty(&part);
            }
        }
        drop(t);
        self.handle(drained);
        if let Err(e) = result {
            self.ui.error(&inert(&e.to_string()));
        }
    }

    /// `/sendfile <path> [user]`: announces the file, then a thread streams it.
    fn send_file(self: &Arc<Self>, path: &str, to: Option<Username>) {
        let shown = inert(path).into_owned();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return self.ui.error(&format!("cannot open {shown}: {e}")),
        };
        let size = match file.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return self.ui.error(&format!("{shown} is not a file")),
            Err(e) => return self.ui.error(&format!("cannot read {shown}: {e}")),
        };
        let Some(base) = Path::new(path).file_name() else {
            return self.ui.error(&format!("{shown} has no file name"));
        };
        let Some(base) = base.to_str() else {
            return self
                .ui
                .error(&format!("the name of {shown} is not valid UTF-8"));
        };
        let name = match FileName::new(base) {
            Ok(n) => n,
            Err(e) => {
                return self.ui.error(&format!(
                    "cannot send {}: invalid file name: {e}",
                    inert(base)
                ))
            }
        };
        let recipient = to.map_or(Recipient::Everyone, Recipient::User);
        let stop = Arc::new(AtomicBool::new(false));
        let (go, accepted) = mpsc::channel();
        if !self.wait_to_send(0) {
            return;
        }
        let mut t = lock(&self.transfers);
        let (result, drained) = self.session_call(|s| s.offer(name.clone(), size, recipient));
        if let Ok(id) = result {
            t.pushes.insert(
                id,
                OutgoingPush {
                    name: name.clone(),
                    stop: stop.clone(),
                    go: Some(go),
                },
            );
        }
        drop(t);
        self.handle(drained);
        let id = match result {
            Ok(id) => id,
            Err(e) => return self.ui.error(&inert(&e.to_string())),
        };
        self.ui.notice(&format!(
            "offering {} ({size} bytes); it is sent once accepted",
            inert(name.as_str())
        ));
        let s = self.clone();
        let spawned = spawn("pusher", move || {
            s.push_loop(id, name, file, size, stop, &accepted);
        });
        if let Err(e) = spawned {
            self.abandon_push(id, &e.to_string());
        }
    }

    /// Streams a file for a push, paced by the outbound queue, then ends it.
    fn push_loop(
        &self,
        id: TransferId,
        name: FileName,
        mut file: File,
        size: u64,
        stop: Arc<AtomicBool>,
        accepted: &Receiver<()>,
    ) {
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
        let mut progress = self
            .ui
            .progress(&format!("sending {}", inert(name.as_str())), size);
        let mut sent = 0u64;
        while sent < size {
            if stopped() {
                return;
            }
            if !self.outbox.wait_bulk_room(PUSH_QUEUE, PUSH_WAIT) {
                if self.outbox.is_closed() {
                    return;
                }
                continue;
            }
            let want =
                usize::try_from(size - sent).map_or(self.chunk_size, |r| r.min(self.chunk_size));
            let mut buf = vec![0u8; want];
            if let Err(e) = file.read_exact(&mut buf) {
                let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
                    "the file got shorter while it was being sent".to_string()
                } else {
                    format!("reading the file failed: {e}")
                };
                return self.abandon_push(id, &reason);
            }
            if let Err(e) = self.with_session(|s| s.push_chunk(id, buf)) {
                // Unknown transfer: it was refused or cancelled meanwhile.
                if !stopped() {
                    self.abandon_push(id, &e.to_string());
                }
                return;
            }
            sent += want as u64;
            if let Some(line) = progress.as_mut().and_then(|p| p.update(sent)) {
                self.ui.print(Style::Progress, &line);
            }
        }
        if stopped() {
            return;
        }
        if let Err(e) = self.with_session(|s| s.push_end(id)) {
            if !stopped() {
                self.abandon_push(id, &e.to_string());
            }
        }
    }

    /// Gives up a push of ours from this side, telling the server and the user.
    fn abandon_push(&self, id: TransferId, reason: &str) {
        let push = lock(&self.transfers).pushes.remove(&id);
        let Some(push) = push else { return };
        self.transfer_lost();
        push.stop.store(true, Ordering::SeqCst);
        // Already gone from the session if the server ended it first.
        let _ = self.with_session(|s| s.cancel(id, reason));
        self.ui.notice(&format!(
            "sending {} failed: {reason}",
            inert(push.name.as_str())
        ));
    }

    /// Shows an event, or does the file work it asks for.
    fn event(&self, ev: ClientEvent) {
        let ui = &self.ui;
        match ev {
            ClientEvent::Chat(RoutedChat {
                from,
                private,
                kind: ChatKind::Action,
                text,
                ..
            }) => ui.action(&inert(from.as_str()), private, &inert(&text)),
            ClientEvent::Chat(RoutedChat {
                from,
                private,
                text,
                ..
            }) => ui.chat(&inert(from.as_str()), private, &inert(&text)),
            ClientEvent::Joined { user } => {
                ui.notice(&format!("{} has joined", inert(user.as_str())));
            }
            ClientEvent::Left(Departure { user, reason, text }) => {
                let user = inert(user.as_str());
                let why = match (reason == LeaveReason::QUIT, text.is_empty()) {
                    (true, true) => String::new(),
                    (true, false) => format!(" ({})", inert(&text)),
                    (false, _) => format!(" ({})", reason.describe()),
                };
                ui.notice(&format!("{user} has left{why}"));
            }
            ClientEvent::Who { users } => {
                let names: Vec<_> = users.iter().map(|u| inert(u.as_str())).collect();
                ui.notice(&format!("online ({}): {}", names.len(), names.join(", ")));
            }
            ClientEvent::FilesAccess { count } => {
                ui.notice(&format!("shared folder access granted: {count} files"));
            }
            ClientEvent::FileList(FileListPart { files, last }) => self.file_list(&files, last),
            ClientEvent::Error { code, text } => {
                if text.is_empty() {
                    ui.error(code.describe());
                } else {
                    ui.error(&inert(&text));
                }
            }
            ClientEvent::TransferStarted {
                id,
                name,
                size,
                offset,
                origin,
            } => self.transfer_started(id, name, size, offset, origin),
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
                from, name, reason, ..
            } => ui.notice(&format!(
                "the offer of {} from {} ended: {}",
                inert(name.as_str()),
                inert(from.as_str()),
                inert(&reason)
            )),
            ClientEvent::PushAccepted { id, receivers } => {
                let mut t = lock(&self.transfers);
                if let Some(push) = t.pushes.get_mut(&id) {
                    let name = inert(push.name.as_str()).into_owned();
                    if let Some(go) = push.go.take() {
                        let _ = go.send(());
                    }
                    drop(t);
                    ui.notice(&format!("sending {name}: accepted by {receivers} user(s)"));
                }
            }
            ClientEvent::PushDone { id, receivers } => {
                let push = lock(&self.transfers).pushes.remove(&id);
                if let Some(push) = push {
                    ui.notice(&format!(
                        "sent {} to {receivers} user(s)",
                        inert(push.name.as_str())
                    ));
                }
            }
            ClientEvent::PushFailed { id, code, reason } => {
                let push = lock(&self.transfers).pushes.remove(&id);
                if let Some(push) = push {
                    self.transfer_lost();
                    push.stop.store(true, Ordering::SeqCst);
                    let reason = if reason.is_empty() {
                        code.describe().into()
                    } else {
                        inert(&reason)
                    };
                    ui.notice(&format!(
                        "sending {} failed: {reason}",
                        inert(push.name.as_str())
                    ));
                }
            }
            ClientEvent::Shutdown { reason } => {
                let reason = inert(&reason).into_owned();
                self.fatal(
                    Some(format!("*** server shutting down: {reason}")),
                    ClientError::Shutdown(reason),
                );
            }
            ClientEvent::PushDeclined {
                from,
                name,
                size,
                reason,
            } => ui.notice(&format!(
                "{} tried to send you {} ({size} bytes), declined: {}",
                inert(from.as_str()),
                inert(name.as_str()),
                inert(&reason)
            )),
            ClientEvent::TimedOut => self.fatal(
                None,
                ClientError::ConnectionBroken("the server stopped answering".into()),
            ),
            other => log::debug!("event not shown: {other:?}"),
        }
    }

    /// Shows a part of the shared-file list: the heading before the first
    /// part, and a note at the end when the folder is empty.
    fn file_list(&self, files: &[FileEntry], last: bool) {
        let first = !self.listing.swap(!last, Ordering::SeqCst);
        if first && last && files.is_empty() {
            return self.ui.notice("shared folder is empty");
        }
        if first {
            self.ui.notice("shared files:");
        }
        for f in files {
            self.ui.print(
                Style::Plain,
                &format!("    {}  ({} bytes)", inert(f.name.as_str()), f.size),
            );
        }
    }

    /// Opens the `.part` file of a transfer that starts.
    fn transfer_started(
        &self,
        id: TransferId,
        name: FileName,
        size: u64,
        offset: u64,
        origin: Origin,
    ) {
        let mut t = lock(&self.transfers);
        let shown = inert(name.as_str()).into_owned();
        let (from, opened) = match origin {
            Origin::Download => {
                // The session gives the name we asked for, whatever the
                // server calls it; its `.part` was opened when asked for.
                let final_path = self.download_dir.join(name.as_str());
                let opened = match t.parts.remove(&id) {
                    Some((part, mut file)) => match files::start_at(&mut file, offset) {
                        Ok(()) => Ok((final_path, part, file)),
                        Err(e) => Err(format!(
                            "cannot write {}: {e}",
                            inert(&part.display().to_string())
                        )),
                    },
                    None => Err("its partial file is not open".to_string()),
                };
                (None, opened)
            }
            Origin::Push { from } => {
                let opened = self.open_received(&t, &name);
                (Some(from), opened)
            }
        };
        let (final_path, part, file) = match opened {
            Ok(x) => x,
            Err(reason) => {
                drop(t);
                if from.is_none() {
                    self.transfer_lost();
                }
                let _ = self.with_session(|s| s.cancel(id, &reason));
                return self
                    .ui
                    .notice(&format!("transfer of {shown} failed: {reason}"));
            }
        };
        let label = match &from {
            None => format!("downloading {shown}"),
            Some(_) => format!("receiving {shown}"),
        };
        let mut progress = self.ui.progress(&label, size);
        if let Some(p) = progress.as_mut() {
            let _ = p.update(offset);
        }
        let announce = match &from {
            None => format!("downloading {shown} ({size} bytes)"),
            Some(from) => format!(
                "{} is sending you {shown} ({size} bytes)",
                inert(from.as_str())
            ),
        };
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
                progress,
            },
        );
        drop(t);
        self.ui.notice(&announce);
        if offset > 0 {
            self.ui.notice(&format!(
                "resuming {shown} after the {offset} bytes already here"
            ));
        }
    }

    /// Picks a free name in `received/` for a file pushed to us and creates
    /// its `.part` file (new, never an existing one: another client may
    /// share the folder).
    fn open_received(
        &self,
        t: &Transfers,
        name: &FileName,
    ) -> Result<(PathBuf, PathBuf, File), String> {
        let dir = self.download_dir.join("received");
        let held: HashSet<&Path> = t
            .incoming
            .values()
            .map(|f| f.final_path.as_path())
            .collect();
        let mut raced: HashSet<PathBuf> = HashSet::new();
        loop {
            let Some(final_path) = files::free_name(&dir, name, |p| {
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
        let written = (|| {
            if f.written != offset {
                f.file.seek(SeekFrom::Start(offset))?;
            }
            f.file.write_all(data)
        })();
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
                let pos = f.written;
                let line = f.progress.as_mut().and_then(|p| p.update(pos));
                drop(t);
                if let Some(line) = line {
                    self.ui.print(Style::Progress, &line);
                }
                true
            }
            Err(e) => {
                let reason = format!("cannot write {}: {e}", inert(&f.part.display().to_string()));
                let ours = f.from.is_none();
                let f = t.incoming.remove(&id);
                drop(t);
                if ours {
                    self.transfer_lost();
                }
                let name = f.map(|f| {
                    drop(f.file);
                    let _ = fs::remove_file(&f.part);
                    f.name
                });
                let _ = self.with_session(|s| s.cancel(id, &reason));
                self.ui.notice(&format!(
                    "transfer of {} failed: {reason}",
                    name.as_ref().map_or("a file".into(), |n| inert(n.as_str()))
                ));
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
        let (name, size, from, final_path, part) = (f.name, f.size, f.from, f.final_path, f.part);
        // Never replace a file: take the next free name beside it.
        let held: HashSet<&Path> = t
            .incoming
            .values()
            .map(|f| f.final_path.as_path())
            .collect();
        let moved = files::finish(f.file, &part, &final_path, &name, |p| held.contains(p));
        drop(t);
        let shown = inert(name.as_str());
        let wanted = inert(&final_path.display().to_string()).into_owned();
        match (moved, from) {
            (Ok(to), from) => {
                let path = inert(&to.display().to_string()).into_owned();
                match from {
                    None => self
                        .ui
                        .notice(&format!("downloaded {shown} ({size} bytes) to {path}")),
                    Some(from) => self.ui.notice(&format!(
                        "received {shown} ({size} bytes) from {}, saved to {path}",
                        inert(from.as_str())
                    )),
                }
                if to != final_path {
                    let saved = to
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default();
                    self.ui.notice(&format!(
                        "saved as '{}': {wanted} already exists",
                        inert(&saved)
                    ));
                }
            }
            (Err(e), from) => {
                let _ = fs::remove_file(&part);
                if from.is_none() {
                    self.transfer_lost();
                }
                self.ui.notice(&format!(
                    "transfer of {shown} failed: cannot move it to {wanted}: {e}"
                ));
            }
        }
    }

    /// The session gave up a transfer: delete its `.part` file and say why.
    fn transfer_failed(&self, id: TransferId, name: &FileName, error: &TransferError) {
        let (file, part) = {
            let mut t = lock(&self.transfers);
            (t.incoming.remove(&id), t.parts.remove(&id))
        };
        if let Some(f) = file {
            drop(f.file);
            let _ = fs::remove_file(&f.part);
        }
        if let Some((part, file)) = part {
            // Refused before it started: keep what an earlier try left.
            drop(file);
            remove_if_empty(&part);
        }
        if !id.is_server_chosen() {
            self.transfer_lost();
        }
        let name = inert(name.as_str());
        let reason = match error {
            TransferError::Cancelled { reason, .. } => inert(reason).into_owned(),
            e => e.to_string(),
        };
        self.ui
            .notice(&format!("transfer of {name} failed: {reason}"));
    }
}

/// A size for people: bytes, or KiB, MiB, GiB with one decimal.
fn files_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, n) in UNITS {
        if bytes >= n {
            return format!("{:.1} {unit}", bytes as f64 / n as f64);
        }
    }
    format!("{bytes} bytes")
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
    use super::*;

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(host_port("127.0.0.1", 80), "127.0.0.1:80");
        assert_eq!(host_port("::1", 80), "[::1]:80");
    }

    #[test]
    fn mode_lines_match_the_contract() {
        assert_eq!(mode_line(&Mode::Broadcast), "mode: broadcast");
        let bob = Username::new("bob").expect("valid");
        assert_eq!(mode_line(&Mode::Unicast(bob)), "mode: unicast to bob");
    }
}
