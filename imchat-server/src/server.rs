//! The server's threads around one shared [`Hub`].
//!
//! ```text
//!  accept thread ──► per connection: reader thread ──► Hub (one Mutex) ──► dispatch
//!  idle poller: quiet connections without a reader thread, handed back when readable
//!  timer thread  ──────────────────────────────────────►      │             │
//!  download threads (file → chunks) ──► Outbox ◄──────────────┘ frames      │ events
//!  writer thread per connection ◄── Outbox                          report thread (stdout, log)
//! ```
//!
//! A connection's writer thread exists only while frames wait that nobody
//! else could write (a slow reader, file data): broadcasts are written by
//! the flusher thread, a download thread writes its own chunks while the
//! socket is free (the data by `sendfile`, see [`crate::socket::write_file_frame`]),
//! and a writer with nothing to write for 250 ms ends.
//!
//! Every decision is the hub's. After each call into it, [`Server::dispatch`]
//! moves what it produced: each message is encoded once and queued on the
//! [`Outbox`] of every receiver, and each event is acted on (closing a
//! connection, reading the shared folder, starting a download) or reported.
//! Nothing blocking happens under the lock: file-system work, pacing waits
//! and printing all happen after it is released.

mod closer;
mod conn;
mod download;
mod idle;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::{Frame, Outbox, PushError};
use imchat_core::{
    inert, ClientId, Destination, Encode, FileName, FilesRequest, Hub, HubEvent, Lane, Limits,
    TransferId, Username,
};
use log::Level;

use crate::files::SharedDir;
use crate::report::{self, Reporter};
use crate::socket::{NoWait, Sock};
use crate::Error;

/// How long a join or leave notice may wait to be written with the ones
/// after it. Writing each at once costs one write per member: N²/2 writes
/// when N clients join a room, which kept a server from taking 10,000
/// clients in a minute; batched, a member gets at most one write of
/// notices per period.
const PRESENCE_DELAY: Duration = Duration::from_millis(100);
/// Most queues a thread writes itself after routing (see
/// [`Server::flush_all`]); more go to the flusher thread. Writing from the
/// routing thread saves a hand-off (a wake-up and a context switch) per
/// reply; for a broadcast, the flusher's rounds save more: they gather the
/// messages of all senders into one write per receiver, where each sender
/// writing its own would cost a write per receiver and message.
const DIRECT_FLUSH: usize = 4;
/// How often the timer thread runs the hub's clock.
const TICK: Duration = Duration::from_millis(250);
/// How often the history database commits what the readers appended (and
/// the senders get their acks): one transaction for everything appended
/// meanwhile, whichever connection it came from. An ack goes out with the
/// next frame to its sender, or one period after its commit at the latest.
const COMMIT_EVERY: Duration = Duration::from_millis(2);
/// How long a closing connection may take to flush and hang up before its
/// socket is shut down from our side.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long the writers get to flush at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (out of file descriptors, for instance).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often the same accept error is logged again.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Everything the server needs besides its socket.
#[derive(Debug)]
pub struct Config {
    pub limits: Limits,
    pub welcome: String,
    /// Log the text of routed messages (off with `--no-log-text`).
    pub log_text: bool,
    pub shared: SharedDir,
    /// The cluster this server is part of (`--redis`), if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// TLS on every connection (`--tls-cert`/`--tls-key`, `--tls-self-signed`);
    /// `None`: plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The server password (`--password-file`), if any.
    pub password: Option<imchat_core::Secret>,
    /// The protected usernames, when the server keeps accounts.
    pub accounts: Option<Arc<crate::accounts::Accounts>>,
    /// Where bans are kept across restarts, when the server has a database.
    pub ban_store: Option<Arc<dyn crate::accounts::BanStore>>,
    /// The usernames allowed to kick and ban (`--operator`).
    pub operators: Vec<Username>,
}

/// Why the main thread should stop the server.
#[derive(Debug)]
enum Stop {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// An internal error the server cannot go on after.
    Fatal(String),
}

/// One connection as the binary sees it (the hub holds its protocol state).
#[derive(Debug)]
struct Conn {
    addr: SocketAddr,
    user: Option<Username>,
    outbox: Arc<Outbox>,
    /// The socket (shared with the connection's reader and writer threads:
    /// one descriptor per connection), to shut it down from any thread.
    socket: Arc<Sock>,
    /// The control of each running download.
    downloads: HashMap<TransferId, Arc<download::Control>>,
    /// When the hub asked for the connection to close.
    closing_since: Option<Instant>,
    /// The socket was shut down because closing took too long.
    forced: bool,
    /// The closer thread has it (it never joined and was refused).
    closer_has: bool,
    /// Its address opened too many connections lately: the lines about
    /// this connection itself (its close, resume, loss, protocol errors)
    /// are not logged, only counted (see [`crate::churn`]).
    hidden: bool,
}

impl Conn {
    fn who(&self, id: ClientId) -> String {
        match &self.user {
            Some(u) => format!("{} [{}]", inert(u.as_str()), self.addr),
            None => format!("{id} [{}]", self.addr),
        }
    }

    fn force_close(&mut self) {
        self.forced = true;
        self.outbox.abort();
        let _ = self.socket.tcp().shutdown(std::net::Shutdown::Both);
    }
}

/// What the lock holds: the hub and the connection table, kept in step.
#[derive(Debug)]
struct Core {
    hub: Hub,
    conns: HashMap<ClientId, Conn>,
    /// Queues holding presence notices (joins, leaves) that nobody else
    /// will flush: the presence thread flushes them every [`PRESENCE_DELAY`].
    presence: Vec<Flush>,
}

impl Core {
    fn who(&self, id: ClientId) -> String {
        match self.conns.get(&id) {
            Some(c) => c.who(id),
            None => id.to_string(),
        }
    }
}

/// A download the hub asked for, to be opened and streamed by its own thread.
#[derive(Debug)]
struct DownloadJob {
    client: ClientId,
    id: TransferId,
    name: FileName,
    offset: u64,
    who: String,
    cancel: Arc<download::Control>,
    outbox: Arc<Outbox>,
    /// The client's socket, which the download writes its chunks to when
    /// no one else is writing.
    socket: Arc<Sock>,
}

/// Work found while dispatching, done after the lock is released.
#[derive(Debug, Default)]
struct Work {
    files: Vec<(ClientId, FilesRequest, String)>,
    downloads: Vec<DownloadJob>,
    /// Queues given control frames without waking their writer thread:
    /// handed to the flusher thread once the lock is released.
    flush: Vec<Flush>,
    /// Account checks and changes the hub asked for (hashing: no lock held).
    accounts: Vec<HubEvent>,
    /// The bans to keep, when they changed.
    bans: Option<Vec<imchat_core::Ban>>,
    /// Steps of pushes between servers, for the cluster to carry (file
    /// data may make this thread wait for room in the cluster's queue).
    remote: Vec<imchat_core::RemotePush>,
    /// Events for the other servers, queued for the cluster together at
    /// the end of a dispatch (still under the lock: in the hub's order).
    cluster: Vec<imchat_core::ClusterEvent>,
    /// Queue control frames lazily ([`Outbox::push_lazy`]): they wait for
    /// the next frame to the same connection, or for the caller's flush of
    /// `later`.
    lazy: bool,
    /// With `lazy`: queues that hold only lazy frames, for the caller to
    /// flush after a while (unless a later frame's flush took them along).
    later: Vec<Flush>,
}

/// A queue to flush, and the socket to flush it to.
type Flush = (Arc<Outbox>, Arc<Sock>);

/// Queues the presence thread flushes, over a run of rounds without a
/// quiet one, that make a storm of joins or leaves (10,000 clients
/// reconnecting after a restart, say).
const STORM_QUEUES: usize = 10_000;

/// Quiet presence rounds (of [`PRESENCE_DELAY`]) after a storm before the
/// heap is trimmed: by then the members' queues have been written out.
const STORM_QUIET_ROUNDS: u32 = 10;

/// Tells the presence thread when a storm of joins or leaves has passed.
#[derive(Debug, Default)]
struct Storm {
    /// Queues flushed since the storm began (since the last trim).
    flushed: usize,
    /// Quiet rounds in a row since.
    quiet: u32,
}

impl Storm {
    /// After a round that flushed `n` queues: true once, when a storm has
    /// been followed by [`STORM_QUIET_ROUNDS`] quiet rounds in a row.
    fn after_round(&mut self, n: usize) -> bool {
        if n > 0 {
            self.flushed = self.flushed.saturating_add(n);
            self.quiet = 0;
            return false;
        }
        self.quiet += 1;
        if self.quiet < STORM_QUIET_ROUNDS {
            return false;
        }
        // Quiet for long enough: a storm has passed, or joins now and
        // then did (no storm): start counting again either way.
        std::mem::take(self).flushed >= STORM_QUEUES
    }
}

/// Hands the pages freed after a storm back to the system. In a storm each
/// member's queue holds notices at once; once they are written, glibc's
/// malloc keeps the freed pages (free chunks between live ones), and the
/// server's memory would stay at the storm's peak for as long as it runs.
/// `malloc_trim` releases every whole free page; it runs once per storm.
fn give_back_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
    log::debug!("a storm of joins or leaves has passed: freed memory given back");
}

/// Queues a presence notice (a `Presence`, `Joined` or `Left` frame) for
/// the presence thread to flush; true when the caller must hand the queue
/// to that thread (nothing else will write it).
///
/// The notice is queued lazily: a frame queued after it (a chat message,
/// an answer, an ack) is flushed by its own caller at once and carries the
/// notice along. Queued as an ordinary deferred frame, it would make that
/// later frame wait for the presence thread's next round: the hub sends a
/// member its waiting joins and leaves ahead of any other message, so
/// every message to every member within a batch's time of a join, leave,
/// away or back came up to [`PRESENCE_DELAY`] late, and anyone joining
/// and leaving again and again slowed everyone's chat.
fn queue_presence(outbox: &Outbox, frame: Frame) -> Result<bool, PushError> {
    outbox.push_lazy(frame)
}

/// Control frames, encoded back to back, for one audience.
struct Group {
    to: Destination,
    bytes: Vec<u8>,
}

impl Group {
    /// True when `to` is the group's audience: the same member list (the
    /// hub shares one list until the room changes) and the same sender
    /// left out.
    fn takes(&self, to: &Destination) -> bool {
        match (&self.to, to) {
            (
                Destination::Many { members, except },
                Destination::Many {
                    members: m,
                    except: e,
                },
            ) => Arc::ptr_eq(members, m) && except == e,
            _ => false,
        }
    }

    /// True when `to` is the one connection the group leaves out: what
    /// goes to it cannot overtake anything of the group's.
    fn excludes(&self, to: &Destination) -> bool {
        match (&self.to, to) {
            (Destination::Many { except, .. }, Destination::One(id)) => *except == Some(*id),
            _ => false,
        }
    }
}

impl Work {
    fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.downloads.is_empty()
            && self.flush.is_empty()
            && self.accounts.is_empty()
            && self.bans.is_none()
            && self.remote.is_empty()
    }
}

/// The state shared by every thread.
#[derive(Debug)]
pub struct Server {
    core: Mutex<Core>,
    /// Queues waiting for the flusher thread.
    flusher: Mutex<Vec<Flush>>,
    flusher_ready: std::sync::Condvar,
    config: Config,
    report: Reporter,
    stop: Mutex<Sender<Stop>>,
    /// Refused connections, for the closer thread.
    closer: Mutex<Sender<closer::Refused>>,
    /// Idle connections, without a reader thread.
    idle: idle::Idle,
    /// The connections counted per address, for the log.
    churn: Mutex<crate::churn::Churn>,
}

impl Server {
    fn lock(&self) -> MutexGuard<'_, Core> {
        match self.core.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // A thread panicked while holding the lock. Its connection
                // is dropped by its own thread; the rest goes on if the
                // hub's state still holds together.
                self.core.clear_poison();
                let guard = poisoned.into_inner();
                if let Err(e) = guard.hub.check_invariants() {
                    self.fatal(format!("server state damaged after a panic: {e}"));
                }
                guard
            }
        }
    }

    fn fatal(&self, reason: String) {
        if let Ok(stop) = self.stop.lock() {
            let _ = stop.send(Stop::Fatal(reason));
        }
    }

    fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Calls `f` on the hub under the lock, dispatches what it produced,
    /// then does the follow-up work outside the lock.
    fn with_hub<R>(self: &Arc<Self>, f: impl FnOnce(&mut Hub) -> R) -> R {
        self.with_hub_deferred(f, None)
    }

    /// [`with_hub`](Self::with_hub), except that the queues to flush are
    /// added to `deferred` (when given) instead of being handed on now: a
    /// reader handling several buffered messages hands them on once, after
    /// the last.
    fn with_hub_deferred<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Hub) -> R,
        deferred: Option<&mut Vec<Flush>>,
    ) -> R {
        let mut work = Work::default();
        let result = {
            let mut core = self.lock();
            let result = f(&mut core.hub);
            self.dispatch(&mut core, &mut work);
            result
        };
        if let Some(deferred) = deferred {
            deferred.append(&mut work.flush);
            // File data for other servers may make this thread wait for
            // room there: what it queued must not wait with it.
            if !work.remote.is_empty() {
                self.flush_all(deferred);
            }
        }
        self.follow_up(work);
        result
    }

    /// [`with_hub`](Self::with_hub), except that the control frames `f`
    /// produced are queued lazily: the queues that nothing else will flush
    /// are added to `later`, for the caller to flush after a while. The
    /// commit thread releases acks this way, so that under load an ack rides
    /// with the next broadcast to its sender instead of costing a write (and
    /// a flusher round) of its own.
    fn with_hub_lazy<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Hub) -> R,
        later: &mut Vec<Flush>,
    ) -> R {
        let mut work = Work {
            lazy: true,
            ..Work::default()
        };
        let result = {
            let mut core = self.lock();
            let result = f(&mut core.hub);
            self.dispatch(&mut core, &mut work);
            result
        };
        later.append(&mut work.later);
        self.follow_up(work);
        result
    }

    /// Writes queues with frames to their sockets: a few (a reply, a
    /// private message, a welcome) from this thread at once, without
    /// waiting on a full socket (what does not fit is left to the
    /// connection's writer thread); a broadcast's many are handed to the
    /// flusher thread, whose rounds gather the messages of every sender
    /// into one write per receiver.
    fn flush_all(&self, queues: &mut Vec<Flush>) {
        if queues.is_empty() {
            return;
        }
        if queues.len() <= DIRECT_FLUSH {
            for (outbox, socket) in queues.drain(..) {
                outbox.flush(NoWait(&socket));
            }
            return;
        }
        let mut pending = self
            .flusher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wake = pending.is_empty();
        pending.append(queues);
        drop(pending);
        if wake {
            self.flusher_ready.notify_one();
        }
    }

    /// The flusher thread: writes every queue handed to it, once per round
    /// however many messages it got meanwhile. Under load a round takes
    /// longer and carries more messages per write, so a member gets one
    /// write per round rather than one per message and sender.
    fn flush_loop(&self) {
        let mut queues = Vec::new();
        loop {
            {
                let mut pending = self
                    .flusher
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while pending.is_empty() {
                    pending = self
                        .flusher_ready
                        .wait(pending)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                std::mem::swap(&mut *pending, &mut queues);
            }
            // Without waiting on a full socket: a receiver that reads
            // slowly is left to its writer thread, instead of holding up
            // every receiver after it by the write timeout (2 ms each).
            Self::flush_now(&mut queues, |outbox, socket| outbox.flush(NoWait(socket)));
        }
    }

    /// Flushes each queue once (they may repeat in `queues`) with `flush`.
    fn flush_now(queues: &mut Vec<Flush>, flush: impl Fn(&Outbox, &Sock)) {
        queues.sort_by_key(|(outbox, _)| Arc::as_ptr(outbox));
        queues.dedup_by_key(|(outbox, _)| Arc::as_ptr(outbox));
        for (outbox, socket) in queues.drain(..) {
            flush(&outbox, &socket);
        }
    }

    /// Moves everything the hub produced: messages to the outboxes, events
    /// to their handlers. Call with the lock held, after every hub input.
    fn dispatch(&self, core: &mut Core, work: &mut Work) {
        loop {
            // Consecutive control messages to one audience (a sender's
            // burst of chat to the room) are encoded into one frame buffer,
            // shared by every receiver's queue: one entry per receiver for
            // the burst, not one per message.
            let mut group: Option<Group> = None;
            while let Some(t) = core.hub.poll_transmit() {
                if t.lane == Lane::Control {
                    if let Some(g) = &mut group {
                        if g.takes(&t.to) {
                            t.message.encode(&mut g.bytes);
                            continue;
                        }
                    }
                    if matches!(t.to, Destination::Many { .. }) {
                        self.push_group(core, work, group.take());
                        let mut bytes = Vec::new();
                        t.message.encode(&mut bytes);
                        group = Some(Group { to: t.to, bytes });
                        continue;
                    }
                    // A reply to the group's sender (its Ack): not one of
                    // the group's receivers, so it may go first.
                    if !group.as_ref().is_some_and(|g| g.excludes(&t.to)) {
                        self.push_group(core, work, group.take());
                    }
                    let frame = Frame::from(t.message.to_frame());
                    for id in t.to.iter() {
                        self.push_control(core, work, id, &frame);
                    }
                    continue;
                }
                self.push_group(core, work, group.take());
                // Relayed file data needs no pacing here: its pusher sends
                // no more than its receivers' windows hold (its credit).
                let presence = match t.lane {
                    Lane::Control | Lane::Presence => true,
                    Lane::Bulk(_) => false,
                };
                let frame: Frame = Frame::from(t.message.to_frame());
                for id in t.to.iter() {
                    let Some(conn) = core.conns.get(&id) else {
                        continue;
                    };
                    // Presence notices wait for the presence thread,
                    // unless something written sooner carries them.
                    if presence {
                        match queue_presence(&conn.outbox, frame.clone()) {
                            Ok(true) => core
                                .presence
                                .push((conn.outbox.clone(), conn.socket.clone())),
                            Err(PushError::Full { max }) => {
                                self.log_full(conn, id, max);
                                core.hub.evict(id);
                            }
                            // Closed: the connection is going away.
                            Ok(false) | Err(_) => {}
                        }
                        continue;
                    }
                    match conn.outbox.push(frame.clone(), true) {
                        Ok(()) => {}
                        Err(PushError::Full { max }) => {
                            self.log_full(conn, id, max);
                            core.hub.evict(id);
                        }
                        Err(_) => {}
                    }
                }
            }
            self.push_group(core, work, group.take());
            let Some(event) = core.hub.poll_event() else {
                break;
            };
            self.on_event(core, event, work);
        }
        if let Some(cluster) = &self.config.cluster {
            if !work.cluster.is_empty() {
                cluster.enqueue_all(work.cluster.drain(..));
            }
        }
    }

    /// Queues a group's bytes for each of its receivers.
    fn push_group(&self, core: &mut Core, work: &mut Work, group: Option<Group>) {
        let Some(g) = group else {
            return;
        };
        let frame = Frame::from(g.bytes);
        for id in g.to.iter() {
            self.push_control(core, work, id, &frame);
        }
    }

    /// Queues control frames for `id`. Control frames are written by the
    /// flusher thread (see flush_loop), not by each receiver's writer
    /// thread: a broadcast costs at most one write per receiver and no
    /// thread wake-up per receiver. A queue goes on the flush list only
    /// when it was empty: otherwise whoever holds its earlier frames
    /// writes these too. With `work.lazy`, see [`Outbox::push_lazy`].
    fn push_control(&self, core: &mut Core, work: &mut Work, id: ClientId, frame: &Frame) {
        let Some(conn) = core.conns.get(&id) else {
            return;
        };
        let pushed = if work.lazy {
            conn.outbox.push_lazy(frame.clone())
        } else {
            conn.outbox.push_deferred(frame.clone())
        };
        match pushed {
            // A lazy frame's queue is the caller's to flush, later.
            Ok(true) if work.lazy => work.later.push((conn.outbox.clone(), conn.socket.clone())),
            Ok(true) => work.flush.push((conn.outbox.clone(), conn.socket.clone())),
            Ok(false) => {}
            Err(PushError::Full { max }) => {
                self.log_full(conn, id, max);
                core.hub.evict(id);
            }
            Err(_) => {}
        }
    }

    fn log_full(&self, conn: &Conn, id: ClientId, max: usize) {
        self.report.log(
            Level::Warn,
            format!(
                "{} is not reading: over {max} bytes queued, dropping it",
                conn.who(id)
            ),
        );
    }

    /// Acts on one hub event (lock held: only table updates and notes here).
    fn on_event(&self, core: &mut Core, event: HubEvent, work: &mut Work) {
        let now = Instant::now();
        match event {
            HubEvent::Joined { client, user } => {
                let Some(conn) = core.conns.get_mut(&client) else {
                    return;
                };
                self.report.say(format!(
                    "{} joined from {}",
                    inert(user.as_str()),
                    conn.addr
                ));
                conn.user = Some(user);
            }
            HubEvent::Left {
                client: _,
                user,
                reason,
                removal,
                note,
            } => {
                let why = if removal.is_empty() {
                    reason.to_string()
                } else {
                    inert(&removal).into_owned()
                };
                let note = if note.is_empty() {
                    String::new()
                } else {
                    format!(": {note}")
                };
                self.report
                    .say(format!("{} left ({why}){note}", inert(user.as_str())));
            }
            HubEvent::Close { client, reason } => {
                let Some(conn) = core.conns.get_mut(&client) else {
                    return;
                };
                conn.outbox.close();
                conn.closing_since.get_or_insert(now);
                if !conn.hidden {
                    self.report.log(
                        Level::Info,
                        format!("closing {}: {}", conn.who(client), inert(&reason)),
                    );
                }
                // Never joined (refused, or dropped to make room): nothing
                // more is read from it; the closer writes the refusal and
                // closes the socket, which also ends its reader thread.
                if conn.user.is_none() && !conn.closer_has {
                    conn.closer_has = true;
                    let refused =
                        closer::Refused::new(client, conn.socket.clone(), conn.outbox.clone());
                    self.close_refused(refused);
                }
            }
            HubEvent::Routed {
                from,
                id,
                text,
                to,
                receivers,
                waiting,
            } => {
                let to = match &to {
                    Some(user) => inert(user.as_str()).into_owned(),
                    None => "everyone".to_string(),
                };
                let plural = if receivers == 1 { "" } else { "s" };
                // In a cluster the others' receivers are counted by theirs.
                let here = if self.config.cluster.is_some() {
                    " on this server"
                } else {
                    ""
                };
                let held = if waiting {
                    format!("; held for {to}'s resume")
                } else {
                    String::new()
                };
                let mut line = format!(
                    "routed message {id} from {} to {to} ({receivers} receiver{plural}{here}{held})",
                    core.who(from)
                );
                if let Some(text) = text {
                    line.push_str(&format!(": \"{}\"", inert(&text)));
                }
                self.report.log(Level::Info, line);
            }
            HubEvent::FilesRequested { client, request } => {
                let who = core.who(client);
                let what = match request {
                    FilesRequest::Access => "access to",
                    FilesRequest::List => "the list of",
                };
                self.report.log(
                    Level::Info,
                    format!("{who} asked for {what} the shared files"),
                );
                work.files.push((client, request, who));
            }
            HubEvent::DownloadRequested {
                client,
                id,
                name,
                offset,
            } => {
                let who = core.who(client);
                let Some(conn) = core.conns.get_mut(&client) else {
                    return;
                };
                let from = if offset > 0 {
                    format!(" from byte {offset}")
                } else {
                    String::new()
                };
                self.report.log(
                    Level::Info,
                    format!("{who} asked to download '{}'{from}", inert(name.as_str())),
                );
                let cancel = Arc::new(download::Control::default());
                conn.downloads.insert(id, cancel.clone());
                work.downloads.push(DownloadJob {
                    client,
                    id,
                    name,
                    offset,
                    who,
                    cancel,
                    outbox: conn.outbox.clone(),
                    socket: conn.socket.clone(),
                });
            }
            HubEvent::DownloadRefused {
                client,
                id,
                name,
                reason,
            } => {
                self.report.log(
                    Level::Info,
                    format!(
                        "refused download {id} of '{}' to {}: {}",
                        inert(name.as_str()),
                        core.who(client),
                        inert(&reason)
                    ),
                );
            }
            HubEvent::DownloadPreempted {
                client,
                id,
                for_client,
            } => {
                self.report.log(
                    Level::Info,
                    format!(
                        "stopped stalled download {id} of {} to give its slot to {} (the server was sending as many files as it sends at once)",
                        core.who(client),
                        core.who(for_client)
                    ),
                );
            }
            HubEvent::DownloadAcked { client, id, offset } => {
                if let Some(control) = core
                    .conns
                    .get(&client)
                    .and_then(|conn| conn.downloads.get(&id))
                {
                    control.ack(offset);
                }
            }
            HubEvent::PushAcked { .. } => {}
            HubEvent::ReceiverTooSlow { receiver, .. } => {
                self.report.log(
                    Level::Warn,
                    format!(
                        "{} is too slow to receive a file, dropping it from the transfer",
                        core.who(receiver)
                    ),
                );
            }
            HubEvent::DownloadCancelled { client, id } => {
                if let Some(conn) = core.conns.get_mut(&client) {
                    if let Some(control) = conn.downloads.remove(&id) {
                        control.cancel();
                        self.report.log(
                            Level::Info,
                            format!("download {id} of {} cancelled", conn.who(client)),
                        );
                    }
                }
            }
            HubEvent::PushStarted {
                from,
                id: _,
                name,
                size,
                receivers,
            } => {
                self.report.log(
                    Level::Info,
                    format!(
                        "{} is sending '{}' ({size} bytes) to {receivers} user(s)",
                        core.who(from),
                        inert(name.as_str())
                    ),
                );
            }
            HubEvent::PushEnded {
                from,
                id: _,
                name,
                size,
                started,
                receivers,
                error,
            } => {
                let who = core.who(from);
                let name = inert(name.as_str());
                let secs = now.saturating_duration_since(started).as_secs_f64();
                let line = match error {
                    None => format!(
                        "{who} sent '{name}' ({size} bytes) to {receivers} user(s) in {secs:.2} s"
                    ),
                    Some(e) => format!(
                        "{who} failed to send '{name}' after {secs:.2} s: {}",
                        inert(&e)
                    ),
                };
                self.report.log(Level::Info, line);
            }
            HubEvent::Away { client, user } => {
                if core.conns.get(&client).is_some_and(|c| c.hidden) {
                    return;
                }
                self.report.log(
                    Level::Info,
                    format!(
                        "{} lost its connection ({client}); its session waits for a resume",
                        inert(user.as_str())
                    ),
                );
            }
            HubEvent::Resumed {
                client,
                user,
                replaced,
                replayed,
                dropped,
            } => {
                let Some(conn) = core.conns.get_mut(&client) else {
                    return;
                };
                let old = replaced
                    .map(|c| format!(", replacing {c}"))
                    .unwrap_or_default();
                if !conn.hidden {
                    self.report.say(format!(
                        "{} resumed from {}{old} ({replayed} sent again, {dropped} lost)",
                        inert(user.as_str()),
                        conn.addr
                    ));
                }
                conn.user = Some(user);
            }
            HubEvent::BansChanged { bans } => work.bans = Some(bans),
            HubEvent::CheckAccount { .. }
            | HubEvent::Register { .. }
            | HubEvent::Unregister { .. } => {
                work.accounts.push(event);
            }
            HubEvent::Operated {
                by,
                action,
                target,
                reason,
                outcome,
            } => {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", inert(&reason))
                };
                let line = format!(
                    "operator {}: {}{why}: {}",
                    inert(&by),
                    format!("{} {}", action.word(), inert(&target)).trim_end(),
                    inert(&outcome)
                );
                // The console prints its own answer: only the log gets it.
                if by == "console" {
                    self.report.log(Level::Info, line);
                } else {
                    self.report.say(line);
                }
            }
            HubEvent::Violation { client, detail } => {
                if core.conns.get(&client).is_some_and(|c| c.hidden) {
                    return;
                }
                self.report.log(
                    Level::Warn,
                    format!(
                        "{} broke the protocol: {}",
                        core.who(client),
                        inert(&detail)
                    ),
                );
            }
            HubEvent::NotPermitted {
                client,
                action,
                target,
            } => {
                self.report.log(
                    Level::Warn,
                    format!(
                        "{} is not an operator: refused its request '{}'",
                        core.who(client),
                        format!("{} {}", action.word(), inert(&target)).trim_end()
                    ),
                );
            }
            HubEvent::LoginRefused {
                client,
                user,
                reason,
            } => {
                self.report.log(
                    Level::Warn,
                    format!(
                        "refused the login of '{}' from {}: {}",
                        inert(user.as_str()),
                        core.who(client),
                        inert(&reason)
                    ),
                );
            }
            HubEvent::Cluster(event) => {
                if self.config.cluster.is_some() {
                    work.cluster.push(event);
                }
            }
            HubEvent::RemotePush(push) => work.remote.push(push),
            other => {
                self.report
                    .log(Level::Debug, format!("unhandled hub event: {other:?}"));
            }
        }
    }

    /// Does what dispatching found to do outside the lock, and what that
    /// leads to, until nothing is left.
    fn follow_up(self: &Arc<Self>, mut work: Work) {
        while !work.is_empty() {
            self.flush_all(&mut work.flush);
            let files = std::mem::take(&mut work.files);
            for (client, request, who) in files {
                let listed = self.config.shared.list();
                let mut core = self.lock();
                match listed {
                    Ok(files) => {
                        self.report.log(
                            Level::Info,
                            format!("told {who} about {} shared file(s)", files.len()),
                        );
                        core.hub.answer_files(client, request, files);
                    }
                    Err(e) => {
                        self.report.log(
                            Level::Error,
                            format!(
                                "cannot read the shared folder for {who}: {} (told it so)",
                                crate::files::io_reason(&e)
                            ),
                        );
                        core.hub.answer_files_unavailable(client, request);
                    }
                }
                self.dispatch(&mut core, &mut work);
            }
            let downloads = std::mem::take(&mut work.downloads);
            for job in downloads {
                self.start_download(job, &mut work);
            }
            let accounts = std::mem::take(&mut work.accounts);
            for job in accounts {
                self.account_job(job, &mut work);
            }
            if let Some(bans) = work.bans.take() {
                if let Some(store) = &self.config.ban_store {
                    if let Err(e) = store.save_bans(&bans) {
                        self.report
                            .log(Level::Error, format!("cannot keep the bans: {}", inert(&e)));
                    }
                }
            }
            let remote = std::mem::take(&mut work.remote);
            if let Some(cluster) = &self.config.cluster {
                for push in remote {
                    cluster.carry(push);
                }
            }
        }
    }

    /// Checks or changes an account for the hub, with no lock held while
    /// it hashes, then gives the hub the answer.
    fn account_job(&self, job: HubEvent, work: &mut Work) {
        let Some(accounts) = self.config.accounts.as_deref() else {
            return;
        };
        match job {
            HubEvent::CheckAccount {
                client,
                user,
                password,
            } => {
                // The tests' fail point: a check as slow as a busy machine's.
                fail::eval("account-check", |_| ());
                let check = accounts.check(&user, password.as_ref());
                if let imchat_core::AccountCheck::Unavailable(why) = &check {
                    self.report.log(
                        Level::Error,
                        format!("cannot check accounts: {}", inert(why)),
                    );
                }
                let mut core = self.lock();
                core.hub.account_checked(client, check, Instant::now());
                self.dispatch(&mut core, work);
            }
            HubEvent::Register {
                client,
                user,
                password,
            } => {
                let (code, text) = accounts.register(&user, &password);
                self.report.say(format!(
                    "{} asked to register: {code}",
                    inert(user.as_str())
                ));
                let mut core = self.lock();
                core.hub.account_changed(client, code, &text);
                self.dispatch(&mut core, work);
            }
            HubEvent::Unregister { client, user } => {
                let (code, text) = accounts.unregister(&user);
                self.report.say(format!(
                    "{} asked to unregister: {code}",
                    inert(user.as_str())
                ));
                let mut core = self.lock();
                core.hub.account_changed(client, code, &text);
                self.dispatch(&mut core, work);
            }
            _ => {}
        }
    }

    /// The console: operator lines from standard input (`kick NAME
    /// [reason]`, `ban NAME|ADDRESS [reason]`, `unban …`, `bans`), each
    /// answered on standard output. Ends when standard input does (closed,
    /// or `/dev/null`). A line that is not UTF-8 (a Latin-1 terminal, a
    /// paste) is read with its bad bytes replaced: it must not end the
    /// console.
    fn console_loop(self: &Arc<Self>) {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        for line in stdin.lock().split(b'\n') {
            let Ok(line) = line else {
                return;
            };
            let line = String::from_utf8_lossy(&line);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.trim().is_empty() {
                continue;
            }
            let answer = self.with_hub(|hub| hub.console(line, Instant::now()));
            // It may quote what was typed (an escape sequence pasted in) or
            // a reason a remote operator gave: each line made inert.
            let shown: Vec<_> = answer.lines().map(inert).collect();
            report::print_line(&shown.join("\n"));
        }
    }

    /// The timer: runs the hub's clock, and shuts down connections that
    /// take too long to close.
    fn tick(self: &Arc<Self>) {
        self.with_hub(|hub| {
            // The wall clock may have been stepped since the last tick.
            set_wall_clock(hub);
            // Bans made by other servers of a cluster.
            if let Some(bans) = self.config.ban_store.as_ref().and_then(|s| s.fresh_bans()) {
                hub.set_bans(bans);
            }
            hub.handle_timeout(Instant::now());
        });
        let mut core = self.lock();
        let now = Instant::now();
        for (id, conn) in &mut core.conns {
            let stuck = conn
                .closing_since
                .is_some_and(|since| now.duration_since(since) >= CLOSE_GRACE);
            if stuck && !conn.forced {
                if !conn.hidden {
                    self.report.log(
                        Level::Info,
                        format!(
                            "{} did not hang up in time, closing its socket",
                            conn.who(*id)
                        ),
                    );
                }
                conn.force_close();
            }
        }
        drop(core);
        let ended = match self.churn.lock() {
            Ok(mut churn) => churn.expire(now),
            Err(_) => Vec::new(),
        };
        for line in ended {
            self.report.say(line);
        }
    }

    /// Whether the lines about a new connection from `addr` are logged
    /// (see [`crate::churn`]); says so when they stop being.
    fn log_connection(&self, addr: SocketAddr) -> bool {
        let admit = match self.churn.lock() {
            Ok(mut churn) => churn.connect(addr.ip(), Instant::now()),
            Err(_) => crate::churn::Admit::Logged,
        };
        match admit {
            crate::churn::Admit::Logged => true,
            crate::churn::Admit::Hidden { first } => {
                if let Some(line) = first {
                    self.report.say(line);
                }
                false
            }
        }
    }

    /// The accept loop: never ends. A failed accept (out of descriptors,
    /// for instance) is followed by a pause; repeats of the same error are
    /// logged once every few seconds with a count.
    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        let mut last: Option<(String, Instant)> = None;
        let mut repeats = 0u64;
        loop {
            match listener.accept() {
                Ok((stream, addr)) => self.start_connection(stream, addr),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let reason = crate::files::io_reason(&e);
                    let now = Instant::now();
                    let quiet = last.as_ref().is_some_and(|(r, at)| {
                        *r == reason && now.duration_since(*at) < ACCEPT_LOG_EVERY
                    });
                    if quiet {
                        repeats += 1;
                    } else {
                        let again = if repeats > 0 {
                            format!(" ({repeats} more since the last report)")
                        } else {
                            String::new()
                        };
                        log::warn!("cannot accept a connection: {reason}{again}");
                        last = Some((reason, now));
                        repeats = 0;
                    }
                    thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Tells every client the server is going away, gives the writers a
    /// moment to flush, and closes whatever is left.
    fn shutdown(self: &Arc<Self>, reason: &str) {
        self.report.say(format!("shutting down: {}", inert(reason)));
        let cluster = self.config.cluster.is_some();
        let users = self.with_hub(|hub| {
            let users: Vec<Username> = hub.local_users().into_iter().map(|(_, u)| u).collect();
            // In a cluster they leave, and their sessions end there: a
            // restart on the same database does not bring them back.
            if cluster {
                hub.drop_stored_sessions();
            }
            hub.shutdown(reason);
            users
        });
        if let Some(cluster) = &self.config.cluster {
            cluster.leave(users);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline && !self.lock().conns.is_empty() {
            thread::sleep(Duration::from_millis(20));
        }
        for conn in self.lock().conns.values_mut() {
            conn.force_close();
        }
        self.report.flush(Duration::from_secs(1));
    }
}

/// The hub, for the cluster's threads: each call is dispatched as any other.
struct HubHandle(Arc<Server>);

impl crate::cluster::HubAccess for HubHandle {
    fn with(&self, f: &mut dyn FnMut(&mut Hub)) {
        self.0.with_hub(f);
    }
}

/// Tells the hub what the wall clock says now, for the times it stamps on
/// routed messages.
/// A resume token (and the epoch of the history) from the operating
/// system's secure generator. Should it ever fail, the token is all zero:
/// no session can be resumed with it, which is safe.
fn random_token() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        log::error!("no random resume token: {e}");
        bytes = [0; 16];
    }
    bytes
}

fn set_wall_clock(hub: &mut Hub) {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    hub.set_wall_clock(Instant::now(), unix);
}

/// Threads started through [`spawn`] and still running.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Which part of the thread budget a new thread may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    /// A new connection's reader: all but the last eighth, so that
    /// connections already taken can still start writers and downloads.
    NewConnection,
    /// Anything else.
    Any,
}

/// How many threads the system lets this process run. Beyond what
/// `pthread_create` refuses (which [`spawn`] reports), Linux caps the
/// memory mappings of a process (`vm.max_map_count`): a thread takes four
/// (stack, its guard, the signal stack and its guard), and one whose
/// signal stack cannot be mapped aborts the whole process. So stay well
/// below that cap.
fn thread_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(usize::MAX, |maps| maps.saturating_sub(4096) / 4)
    })
}

/// Counts a thread out when it ends, however it ends.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        THREADS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Spawns a named thread with a small stack, within the thread budget.
fn spawn(
    name: String,
    stack: usize,
    share: Share,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    let budget = match share {
        Share::NewConnection => thread_budget() - thread_budget() / 8,
        Share::Any => thread_budget(),
    };
    if THREADS.fetch_add(1, Ordering::Relaxed) >= budget {
        THREADS.fetch_sub(1, Ordering::Relaxed);
        return Err(std::io::Error::other("too many threads for this system"));
    }
    let counted = Counted;
    thread::Builder::new()
        .name(name)
        .stack_size(stack)
        .spawn(move || {
            let _counted = counted;
            f();
        })
}

/// Runs the server until Ctrl-C, SIGTERM or a fatal error; with `history`
/// (`--history-db`), the hub's log and sessions outlive the process.
pub fn run(
    listener: TcpListener,
    config: Config,
    history: Option<crate::store::SqliteStore>,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = mpsc::channel();
    let signal_tx = stop_tx.clone();
    ctrlc::set_handler(move || {
        let _ = signal_tx.send(Stop::Signal);
    })
    .map_err(|e| Error::Start(format!("cannot handle Ctrl-C: {e}")))?;

    let report_tx = stop_tx.clone();
    let report = report::start(move || {
        let _ = report_tx.send(Stop::Fatal("the report thread failed".into()));
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    panic::set_hook(Box::new(|info| {
        let thread = thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(std::string::ToString::to_string)
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error!("internal error in thread '{name}'{at}: {}", inert(&what));
    }));

    let (closer_tx, closer_rx) = mpsc::channel();
    let (idle, idle_poll) =
        idle::Idle::new().map_err(|e| Error::Start(format!("cannot watch sockets: {e}")))?;
    let mut hub = Hub::new(config.limits.clone(), config.welcome.clone());
    hub.set_report_text(config.log_text);
    hub.set_name_key(crate::names::key);
    // A capital I for l: `aIice` is refused beside `alice`, as a look-alike.
    hub.set_loose_name_key(crate::names::loose_key);
    hub.set_name_check(crate::names::check);
    hub.set_token_source(Box::new(random_token));
    hub.set_server_password(config.password.clone());
    hub.set_accounts(config.accounts.is_some());
    hub.set_operators(&config.operators);
    if let Some(store) = &config.ban_store {
        let bans = store.load_bans().map_err(Error::History)?;
        if !bans.is_empty() {
            log::info!("{} ban(s) kept from the last run", bans.len());
        }
        hub.set_bans(bans);
    }
    set_wall_clock(&mut hub);
    if let Some(cluster) = &config.cluster {
        hub.enable_cluster();
        hub.set_cluster_lease(cluster.lease());
    }
    let committer = history.as_ref().map(crate::store::SqliteStore::committer);
    let closer = history.as_ref().map(crate::store::SqliteStore::committer);
    if let Some(store) = history {
        // In a cluster, the run before this one on the same file was a
        // server of the cluster too: what of it the file kept is ours.
        let former = match &config.cluster {
            Some(cluster) => store
                .swap_cluster_server(cluster.id())
                .map_err(|e| Error::History(e.to_string()))?,
            None => None,
        };
        hub.open_history(Box::new(store), Instant::now())
            .map_err(|e| Error::History(e.to_string()))?;
        if let (Some(cluster), Some(former)) = (&config.cluster, former) {
            cluster.set_former(former, hub.newest_logged());
            hub.set_former_run(former);
        }
    }
    let server = Arc::new(Server {
        core: Mutex::new(Core {
            hub,
            conns: HashMap::new(),
            presence: Vec::new(),
        }),
        flusher: Mutex::new(Vec::new()),
        flusher_ready: std::sync::Condvar::new(),
        config,
        report,
        stop: Mutex::new(stop_tx),
        closer: Mutex::new(closer_tx),
        idle,
        churn: Mutex::new(crate::churn::Churn::default()),
    });

    let s = server.clone();
    spawn("idle".into(), 256 * 1024, Share::Any, move || {
        if panic::catch_unwind(AssertUnwindSafe(|| idle::Idle::run(&s, idle_poll))).is_err() {
            s.fatal("the idle poller thread failed".into());
        }
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    let s = server.clone();
    spawn("closer".into(), 256 * 1024, Share::Any, move || {
        if panic::catch_unwind(AssertUnwindSafe(|| s.closer_loop(&closer_rx))).is_err() {
            s.fatal("the closer thread failed".into());
        }
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    let s = server.clone();
    spawn("timer".into(), 256 * 1024, Share::Any, move || loop {
        thread::sleep(TICK);
        if panic::catch_unwind(AssertUnwindSafe(|| s.tick())).is_err() {
            s.fatal("the timer thread failed".into());
            return;
        }
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    let s = server.clone();
    spawn("flusher".into(), 256 * 1024, Share::Any, move || {
        if panic::catch_unwind(AssertUnwindSafe(|| s.flush_loop())).is_err() {
            s.fatal("the flusher thread failed".into());
        }
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    // Group commit: what every reader appended to the history database is
    // written and committed together every COMMIT_EVERY, without the hub's
    // lock (the readers only queue the entries); then, with the lock, the
    // acks it covers are released, lazily: each waits for the next frame
    // to its connection, or for this thread's next round at the latest.
    if let Some(committer) = committer {
        let s = server.clone();
        spawn("commit".into(), 256 * 1024, Share::Any, move || {
            let mut later = Vec::new();
            loop {
                thread::sleep(COMMIT_EVERY);
                let committed = panic::catch_unwind(AssertUnwindSafe(|| {
                    // The last round's acks that nothing carried since.
                    Server::flush_now(&mut later, |outbox, socket| {
                        outbox.flush(NoWait(socket));
                    });
                    let done = committer.commit();
                    s.with_hub_lazy(
                        |hub| committer.report(hub, done, Instant::now()),
                        &mut later,
                    );
                }));
                if committed.is_err() {
                    s.fatal("the history commit thread failed".into());
                    return;
                }
            }
        })
        .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;
    }

    let s = server.clone();
    let mut storm = Storm::default();
    spawn("presence".into(), 256 * 1024, Share::Any, move || loop {
        thread::sleep(PRESENCE_DELAY);
        let mut queues = std::mem::take(&mut s.lock().presence);
        let flushed = queues.len();
        if panic::catch_unwind(AssertUnwindSafe(|| {
            Server::flush_now(&mut queues, |outbox, socket| outbox.flush(socket))
        }))
        .is_err()
        {
            s.fatal("the presence thread failed".into());
            return;
        }
        if storm.after_round(flushed) {
            give_back_heap();
        }
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    if let Some(cluster) = &server.config.cluster {
        cluster
            .start(Arc::new(HubHandle(server.clone())))
            .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;
    }

    let s = server.clone();
    spawn("console".into(), 256 * 1024, Share::Any, move || {
        // A console that fails is logged; the server goes on without it.
        if panic::catch_unwind(AssertUnwindSafe(|| s.console_loop())).is_err() {
            log::error!("the console thread failed; operator lines are no longer read");
        }
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    let s = server.clone();
    spawn("accept".into(), 256 * 1024, Share::Any, move || {
        if panic::catch_unwind(AssertUnwindSafe(|| s.accept_loop(&listener))).is_err() {
            s.fatal("the accept thread failed".into());
        }
    })
    .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;

    let stop = stop_rx
        .recv()
        .unwrap_or_else(|_| Stop::Fatal("the control channel closed".into()));
    let result = match stop {
        Stop::Signal => {
            server.shutdown("server stopped by operator");
            Ok(())
        }
        Stop::Fatal(reason) => {
            server.shutdown(&format!("internal error: {reason}"));
            Err(Error::Fatal(reason))
        }
    };
    if let Some(closer) = closer {
        if let Err(e) = closer.close() {
            log::warn!("history database: {e}; its -wal file holds the last writes, keep it with the database");
            server.report.flush(Duration::from_secs(1));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn many(members: &Arc<[ClientId]>, except: Option<u64>) -> Destination {
        Destination::Many {
            members: members.clone(),
            except: except.map(ClientId),
        }
    }

    #[test]
    fn the_heap_is_given_back_once_after_a_storm_not_after_a_trickle() {
        let mut storm = Storm::default();
        let quiet = |storm: &mut Storm, rounds: u32| (0..rounds).any(|_| storm.after_round(0));
        // Joins now and then, each round with quiet ones after it.
        for _ in 0..100 {
            assert!(!storm.after_round(STORM_QUEUES / 2));
            assert!(!quiet(&mut storm, STORM_QUIET_ROUNDS * 2));
        }
        // A storm: busy rounds back to back, with short lulls...
        for _ in 0..4 {
            assert!(!storm.after_round(STORM_QUEUES / 3));
            assert!(!quiet(&mut storm, STORM_QUIET_ROUNDS - 1));
        }
        // ...then quiet for long enough: once.
        assert!(storm.after_round(0));
        assert!(!quiet(&mut storm, STORM_QUIET_ROUNDS * 3));
    }

    #[test]
    fn a_frame_queued_after_a_presence_notice_is_flushed_by_its_own_caller() {
        let outbox = Outbox::new(1 << 20);
        let notice = || Frame::from(vec![0, 0, 0, 1, 0x4f]);
        // The first notice: the presence thread is to flush the queue.
        assert_eq!(queue_presence(&outbox, notice()), Ok(true));
        assert_eq!(queue_presence(&outbox, notice()), Ok(true));
        // A chat message, an ack, an answer after it: its caller flushes
        // at once, the notices with it, rather than leaving the message
        // to wait for the presence thread.
        let chat = Frame::from(vec![0, 0, 0, 1, 0x43]);
        assert_eq!(outbox.push_deferred(chat), Ok(true));
        // Anything after that goes with the message's flush.
        assert_eq!(queue_presence(&outbox, notice()), Ok(false));
    }

    #[test]
    fn a_group_takes_only_its_own_audience() {
        let room: Arc<[ClientId]> = Arc::from(vec![ClientId(1), ClientId(2), ClientId(3)]);
        let g = Group {
            to: many(&room, Some(1)),
            bytes: Vec::new(),
        };
        assert!(g.takes(&many(&room, Some(1))));
        // Another sender, or the same members in a new list (the room
        // changed in between): not the same audience.
        assert!(!g.takes(&many(&room, Some(2))));
        let same_names: Arc<[ClientId]> = Arc::from(room.to_vec());
        assert!(!g.takes(&many(&same_names, Some(1))));
        assert!(!g.takes(&Destination::One(ClientId(2))));
        // Only a message to the one left out may go ahead of the group.
        assert!(g.excludes(&Destination::One(ClientId(1))));
        assert!(!g.excludes(&Destination::One(ClientId(2))));
        assert!(!g.excludes(&many(&room, Some(1))));
    }
}
