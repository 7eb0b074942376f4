//! One connection: a reader thread feeding the hub and a writer thread
//! draining the connection's [`Outbox`] onto the socket.

use std::collections::HashMap;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::tls::{peer_failure, TlsStream};
use imchat_core::blocking::{FrameReader, Outbox, TransportError, WriterEnd};
use imchat_core::{ClientId, ClientMessage, LeaveReason};
use log::{debug, warn};

use super::idle::Parked;
use super::{closer, spawn, Conn, Flush, Server, Share, Work};
use crate::socket::{limit_unsent, Sock, SERVER_UNSENT_LIMIT};

/// Stack of a reader thread (it decodes and dispatches; buffers are on the heap).
const READER_STACK: usize = 256 * 1024;
/// A reader that has had nothing to read for this long (and holds no part
/// of a frame) hands its connection to the idle poller and ends.
const READ_IDLE: Duration = Duration::from_millis(500);
/// Stack of a writer thread (it only copies queued frames to the socket).
const WRITER_STACK: usize = 128 * 1024;
/// Receiver queues a reader collects before flushing them, whatever is
/// still buffered (at most a few messages' worth for a full room).
const MAX_DEFERRED: usize = 4096;

/// How often a reader tells the hub that a frame is still coming in
/// ([`Hub::handle_bytes`](imchat_core::Hub::handle_bytes)).
const HEARD_STEP: Duration = Duration::from_secs(1);
/// Most buffered messages of one client handled under one lock (see
/// read_loop): enough for a sender's window of chat, few enough that the
/// lock is not held long.
const MAX_RUN: usize = 64;
/// A writer thread with nothing to write for this long ends; the next
/// frames left for a writer start a new one.
const WRITER_PARK: Duration = Duration::from_millis(250);
/// Longest a single write to a client's socket may block.
const WRITE_TIMEOUT: Duration = Duration::from_millis(2);
/// How long to keep reading (and dropping) what a closed connection still
/// sends, so that closing the socket does not reset what we wrote last.
const LINGER: Duration = Duration::from_secs(1);

/// A connection's receive buffer, in bytes (the kernel keeps about twice).
/// Left to itself it grows to megabytes, and fills with a pusher's file
/// data whenever the server reads the pusher no faster than the push's
/// receivers take it (a receiver on a slow link): the pusher's chat lines
/// wait behind all of it, seconds. This much keeps a push on a LAN at
/// full speed.
const RECEIVE_BUFFER: usize = 256 * 1024;

impl Server {
    /// Registers a new connection with the hub and starts its two threads.
    /// If a thread cannot be started, that one client is dropped.
    pub(super) fn start_connection(self: &Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        // An IPv4 client of a server bound to `::` shows as 1.2.3.4, not ::ffff:1.2.3.4.
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let logged = self.log_connection(addr);
        if logged {
            self.report.say(format!("connection from {addr}"));
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!("cannot set TCP_NODELAY for {addr}: {e}");
        }
        if let Err(e) = bound_receive_buffer(&stream) {
            debug!("cannot bound the receive buffer for {addr}: {e}");
        }
        // Writes time out quickly, so that a thread writing a broadcast
        // straight to this socket (Outbox::flush) never waits on a full
        // one; the writer thread retries, and drops a peer that stops
        // reading for as long as the keepalive would take to notice it.
        let limits = self.limits();
        let stall = limits.keepalive_interval + limits.keepalive_timeout;
        if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
            debug!("cannot set a write timeout for {addr}: {e}");
        }
        // Reads time out when the client is quiet, so that its reader can
        // hand it to the idle poller.
        if let Err(e) = stream.set_read_timeout(Some(READ_IDLE)) {
            debug!("cannot set a read timeout for {addr}: {e}");
        }
        // Little file data waits in the kernel ahead of a chat line.
        if let Err(e) = limit_unsent(&stream, SERVER_UNSENT_LIMIT) {
            debug!("cannot limit unsent data for {addr}: {e}");
        }
        // One descriptor serves the reader, the writer and the table
        // (`&TcpStream` reads and writes): a connection costs one file
        // descriptor, not three. With TLS, the reader's first reads run
        // the handshake, within the hub's handshake deadline like the
        // Hello after it.
        let stream = match &self.config.tls {
            None => Sock::Plain(stream),
            Some(config) => match rustls::ServerConnection::new(config.clone()) {
                Ok(tls) => Sock::Tls(Box::new(TlsStream::new(stream, tls))),
                Err(e) => {
                    warn!("cannot start TLS for {addr}, dropping it: {e}");
                    return;
                }
            },
        };
        let stream = Arc::new(stream);
        let outbox = Outbox::with_stall(limits.max_outbound, stall);
        let (id, work) = {
            let mut work = Work::default();
            let mut core = self.lock();
            let id = core.hub.handle_connect_from(addr.ip(), Instant::now());
            // Its handshake deadline is the TLS handshake's until that ends
            // (see read_loop).
            if matches!(*stream, Sock::Tls(_)) {
                core.hub.set_transport_pending(id, true);
            }
            core.conns.insert(
                id,
                Conn {
                    addr,
                    user: None,
                    outbox: outbox.clone(),
                    socket: stream.clone(),
                    downloads: HashMap::new(),
                    closing_since: None,
                    forced: false,
                    closer_has: false,
                    hidden: !logged,
                },
            );
            self.dispatch(&mut core, &mut work);
            (id, work)
        };
        self.follow_up(work);
        // Refused at once (server full, too many from this address, shutting
        // down): no thread of its own; the closer writes the refusal and
        // closes the socket (it was handed over with the hub's Close).
        if !self.lock().hub.is_connected(id) {
            return;
        }

        // The writer thread starts only when frames are left for it (file
        // data, or a peer that reads slowly), and ends once it has had
        // nothing to write for a while: an idle or chatting client costs
        // one thread, its reader.
        let (weak_box, writer_socket) = (Arc::downgrade(&outbox), Arc::downgrade(&stream));
        outbox.set_starter(
            move || {
                let (Some(outbox), Some(socket)) = (weak_box.upgrade(), writer_socket.upgrade())
                else {
                    return;
                };
                let (writer_box, writer_socket) = (outbox.clone(), socket.clone());
                let started = spawn(format!("write-{id}"), WRITER_STACK, Share::Any, move || {
                    write_loop(&writer_box, &writer_socket);
                });
                if let Err(e) = started {
                    // The reader sees the socket close and reports the client as left.
                    warn!("cannot start a writer thread for {addr}, dropping it: {e}");
                    outbox.abort();
                    let _ = socket.tcp().shutdown(Shutdown::Both);
                }
            },
            WRITER_PARK,
        );
        self.start_reader(Parked { id, stream, outbox });
    }

    /// Starts the reader thread of a connection: a new one, or one the idle
    /// poller hands back. If the thread cannot be started, that one client
    /// is dropped.
    pub(super) fn start_reader(self: &Arc<Self>, conn: Parked) {
        let id = conn.id;
        let share = if self.lock().conns.get(&id).is_some_and(|c| c.user.is_some()) {
            Share::Any
        } else {
            Share::NewConnection
        };
        let server = self.clone();
        let reader = spawn(format!("read-{id}"), READER_STACK, share, move || {
            server.reader_thread(conn);
        });
        if let Err(e) = reader {
            warn!("cannot start a thread for connection {id}, dropping it: {e}");
            self.drop_connection(id);
        }
    }

    /// A reader thread: reads until the connection ends, or until it is
    /// idle and parked (then the thread ends and the connection goes on).
    fn reader_thread(self: &Arc<Self>, conn: Parked) {
        let Parked { id, stream, outbox } = match self.serve(conn.id, &conn.stream, true) {
            Served::Parked => match self.idle.park(conn) {
                Ok(()) => return,
                Err(conn) => {
                    // Not watched: this thread keeps reading it.
                    let _ = self.serve(conn.id, &conn.stream, false);
                    conn
                }
            },
            Served::Ended => conn,
        };
        // No writer thread yet: this thread writes what is left and
        // ends the stream. Either way this is bounded: the writer
        // ends once its queue is closed, and a closed queue that
        // cannot be flushed is aborted by the timer.
        let mine = outbox.claim_writer();
        outbox.close();
        if mine {
            write_loop(&outbox, &stream);
        } else {
            while !outbox.wait_writer(Duration::from_secs(1)) {}
        }
        self.finish(id, &stream);
    }

    /// Refuses a connection whose reader thread could not be started: it
    /// gets the reason, written by the closer thread.
    fn drop_connection(self: &Arc<Self>, id: ClientId) {
        self.with_hub(|hub| hub.kick(id, "the server cannot take another connection now"));
        let conn = self.lock().conns.get_mut(&id).and_then(|c| {
            let handed = std::mem::replace(&mut c.closer_has, true);
            (!handed).then(|| (c.socket.clone(), c.outbox.clone()))
        });
        if let Some((stream, outbox)) = conn {
            self.close_refused(closer::Refused::new(id, stream, outbox));
        }
    }

    /// Hands a refused connection to the closer thread.
    pub(super) fn close_refused(&self, refused: closer::Refused) {
        let sent = self
            .closer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(refused);
        // The closer thread is gone (the server is failing): just hang up;
        // the timer forgets the connection. (No lock here: this may run
        // with the core's lock held.)
        if let Err(std::sync::mpsc::SendError(r)) = sent {
            let _ = r.stream.tcp().shutdown(Shutdown::Both);
        }
    }

    /// The reader thread's work: messages from the socket into the hub,
    /// until the connection ends, or (when `may_park`) it is idle.
    /// A panic here drops this client only.
    fn serve(self: &Arc<Self>, id: ClientId, stream: &Sock, may_park: bool) -> Served {
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| self.read_loop(id, stream, may_park)));
        match outcome {
            Ok(Served::Parked) => return Served::Parked,
            Ok(Served::Ended) => {}
            Err(_) => {
                warn!("dropping connection {id} after an internal error");
                self.with_hub(|hub| hub.kick(id, "internal server error, disconnected"));
            }
        }
        // Whatever ended the loop, the hub forgets the connection (a no-op
        // if it already has) and its queue closes once flushed.
        self.with_hub(|hub| hub.handle_disconnect(id, LeaveReason::LOST));
        if let Some(conn) = self.lock().conns.get_mut(&id) {
            conn.closing_since.get_or_insert_with(Instant::now);
        }
        Served::Ended
    }

    fn read_loop(self: &Arc<Self>, id: ClientId, stream: &Sock, may_park: bool) -> Served {
        // A parked connection comes back with the limit it had.
        let max_frame = self.lock().hub.max_frame(id);
        let mut reader = FrameReader::<_, ClientMessage>::new(stream, max_frame);
        // Receivers of the messages handled since the last read from the
        // socket: flushed once before the next read that could block.
        let mut flush = Vec::new();
        // What a run of buffered messages ended on (see below).
        let mut next = None;
        let mut told = Instant::now();
        // Reads drive the TLS handshake: once it is over, the hub is told
        // (its deadline then waits for a username).
        let mut tls_pending = stream.tls_handshaking();
        loop {
            if next.is_none() && !reader.has_message_ready() {
                self.flush_all(&mut flush);
            }
            let read = next.take().unwrap_or_else(|| {
                reader.read_message_hearing(HEARD_STEP, &mut told, |now| {
                    self.lock().hub.handle_bytes(id, now);
                })
            });
            let handshaking = tls_pending && stream.tls_handshaking();
            if tls_pending && !handshaking {
                tls_pending = false;
                self.with_hub(|hub| hub.set_transport_pending(id, false));
            }
            let msg = match read {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    self.flush_all(&mut flush);
                    self.with_hub(|hub| hub.handle_disconnect(id, LeaveReason::LOST));
                    return Served::Ended;
                }
                Err(TransportError::Decode(e)) => {
                    self.flush_all(&mut flush);
                    self.with_hub(|hub| hub.handle_decode_error(id, &e));
                    return Served::Ended;
                }
                // Quiet for a while: park it if nothing of a frame waits,
                // else keep waiting for the rest.
                Err(TransportError::Io(e)) if is_timeout(&e) => {
                    if may_park && reader.decoder_mut().buffered() == 0 {
                        return Served::Parked;
                    }
                    continue;
                }
                Err(e) => {
                    self.flush_all(&mut flush);
                    debug!("reading from {id} failed: {e}");
                    // A TLS failure is said as rustls reported it.
                    let failure = match (&e, stream) {
                        (TransportError::Io(e), Sock::Tls(_)) => peer_failure(e, handshaking),
                        _ => None,
                    };
                    match failure {
                        Some(why) => {
                            let why = why.to_string();
                            self.with_hub(|hub| hub.handle_transport_failure(id, &why));
                        }
                        None => self.with_hub(|hub| hub.handle_disconnect(id, LeaveReason::LOST)),
                    }
                    return Served::Ended;
                }
            };
            // In a cluster, a name is claimed in Redis before the hub
            // takes it (the hub still checks it against its own users).
            let mut claimed = None;
            if let (
                Some(cluster),
                ClientMessage::Hello {
                    username, resume, ..
                },
            ) = (&self.config.cluster, &msg)
            {
                let (joined, password_ok) = {
                    let core = self.lock();
                    (core.hub.is_joined(id), core.hub.passes_server_password(id))
                };
                // Without the server's password the hub refuses the Hello
                // for it: nothing of the cluster is asked, or told.
                if !joined && password_ok {
                    // A session of another server: taken over (its name
                    // with it) if the token is its own; the hub then
                    // resumes it as one of its own. One not taken is a
                    // failed resume, counted against the address as the
                    // hub counts its own (see `claim_for_hello`).
                    let mut not_taken = None;
                    let own_session = resume.is_some() && self.lock().hub.has_session(username);
                    if let Some(request) = resume {
                        let ours = own_session || !self.lock().hub.sessions_may_move(id);
                        let taken = if ours {
                            crate::cluster::settle_for_resume(cluster);
                            None
                        } else {
                            crate::cluster::take_for_hello(cluster, username, request)
                        };
                        if taken.is_none() && !ours {
                            not_taken = Some(request);
                        }
                        if let Some(taken) = taken {
                            self.with_hub(|hub| {
                                hub.adopt_session(
                                    taken.user.clone(),
                                    request.token,
                                    taken.from,
                                    0,
                                    taken.kicked.as_deref(),
                                    Instant::now(),
                                );
                            });
                        }
                    }
                    let handle = super::HubHandle(self.clone());
                    let (go_on, key) = crate::cluster::claim_for_hello(
                        cluster,
                        &handle,
                        id,
                        username,
                        not_taken,
                        own_session,
                    );
                    if !go_on {
                        self.flush_all(&mut flush);
                        return Served::Ended;
                    }
                    claimed = key.map(|key| (key, username.clone()));
                }
            }
            // The history store's appends are committed by the server's
            // commit thread, for all readers at once (group commit).
            // A joined client's messages already buffered are handled under
            // the same lock, and their broadcasts queued together (one copy
            // per receiver for the run, see dispatch). Not before the join:
            // the frame limit rises with it, and a Hello may need the
            // cluster first.
            let full_limit = reader.decoder_mut().max_frame() >= self.limits().max_frame;
            let (max_frame, hold, connected) = self.with_hub_deferred(
                |hub| {
                    hub.handle_message(id, msg, Instant::now());
                    let mut run = 1;
                    while run < MAX_RUN
                        && full_limit
                        && reader.has_message_ready()
                        && hub.is_joined(id)
                        && hub.throttle(id).is_none()
                        && !hub.has_pending_work()
                    {
                        match reader.read_message() {
                            Ok(Some(msg)) => hub.handle_message(id, msg, Instant::now()),
                            // An end or an error: the loop's to act on.
                            other => {
                                next = Some(other);
                                break;
                            }
                        }
                        run += 1;
                    }
                    (hub.max_frame(id), hub.hold(id), hub.is_connected(id))
                },
                Some(&mut flush),
            );
            if let (Some((key, user)), Some(cluster)) = (claimed, &self.config.cluster) {
                cluster.handshake_over(&key, || self.lock().hub.has_session(&user));
            }
            // Refused, kicked or gone: read no more; the stream ends once
            // what is queued for it is written.
            if !connected {
                self.flush_all(&mut flush);
                return Served::Ended;
            }
            // Raised once the client has joined; never lowered again. A
            // join can also come after the call above (an account checked
            // by its follow-up work): while the limit is still the
            // handshake's, look again.
            let max_frame = if max_frame <= reader.decoder_mut().max_frame()
                && reader.decoder_mut().max_frame() < self.limits().max_frame
            {
                self.lock().hub.max_frame(id)
            } else {
                max_frame
            };
            if max_frame > reader.decoder_mut().max_frame() {
                reader.decoder_mut().set_max_frame(max_frame);
            }
            // Over its chat rate: read this client later. Held for its
            // address's rate only, it is read on meanwhile, and what costs
            // nothing (its transfers' frames) is handled at once.
            if let Some(hold) = hold {
                self.flush_all(&mut flush);
                if hold.address_only && next.is_none() && !tls_pending {
                    let held =
                        self.read_while_held(id, &mut reader, hold.until, &mut told, &mut flush);
                    match held {
                        Held::Over => {}
                        Held::Next(read) => next = Some(read),
                        Held::Ended => {
                            self.flush_all(&mut flush);
                            return Served::Ended;
                        }
                    }
                } else {
                    thread::sleep(hold.until.saturating_duration_since(Instant::now()));
                }
            }
            // Bound the batch: a fast sender's messages still go out often.
            if flush.len() >= MAX_DEFERRED {
                self.flush_all(&mut flush);
            }
        }
    }

    /// Reads `id` while only its address's shared rate holds it back
    /// (until `until`, see [`Hub::hold`](imchat_core::Hub::hold)): the
    /// frames the hub says cost nothing (acks that move its downloads on,
    /// its pushes' data, the answer to a ping or to an offer, a quit) are handled
    /// at once, so that its transfers do not stall while other connections
    /// of its address send too fast. The first frame that costs is kept until `until` and
    /// returned then, to be handled as any frame read after a wait; an end
    /// of the stream or an error is returned at once. The connection is
    /// not parked meanwhile: back from the idle poller, it would be read
    /// at once.
    fn read_while_held(
        self: &Arc<Self>,
        id: ClientId,
        reader: &mut FrameReader<&Sock, ClientMessage>,
        until: Instant,
        told: &mut Instant,
        flush: &mut Vec<Flush>,
    ) -> Held {
        while Instant::now() < until {
            if !reader.has_message_ready() {
                self.flush_all(flush);
            }
            let read = reader.read_message_hearing(HEARD_STEP, told, |now| {
                self.lock().hub.handle_bytes(id, now);
            });
            let msg = match read {
                Ok(Some(msg)) => msg,
                Err(TransportError::Io(e)) if is_timeout(&e) => continue,
                other => return Held::Next(other),
            };
            // Free frames already buffered are handled under the same lock.
            let (kept, connected) = self.with_hub_deferred(
                |hub| {
                    let mut msg = msg;
                    let mut run = 0;
                    loop {
                        if !hub.is_free(id, &msg) {
                            return (Some(Ok(Some(msg))), true);
                        }
                        hub.handle_message(id, msg, Instant::now());
                        run += 1;
                        let connected = hub.is_connected(id);
                        if run >= MAX_RUN
                            || !connected
                            || !reader.has_message_ready()
                            || hub.has_pending_work()
                        {
                            return (None, connected);
                        }
                        msg = match reader.read_message() {
                            Ok(Some(msg)) => msg,
                            other => return (Some(other), true),
                        };
                    }
                },
                Some(flush),
            );
            if !connected {
                return Held::Ended;
            }
            if let Some(read) = kept {
                if matches!(read, Ok(Some(_))) {
                    self.flush_all(flush);
                    thread::sleep(until.saturating_duration_since(Instant::now()));
                }
                return Held::Next(read);
            }
        }
        Held::Over
    }

    /// After both threads of a connection are done: drain what the peer
    /// still sends for a moment, close the socket, forget the connection.
    fn finish(self: &Arc<Self>, id: ClientId, stream: &Sock) {
        linger(stream.tcp());
        let _ = stream.tcp().shutdown(Shutdown::Both);
        if let Some(conn) = self.lock().conns.remove(&id) {
            for control in conn.downloads.values() {
                control.cancel();
            }
        }
    }
}

/// How a reader thread's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// The connection is over (or going): finish it.
    Ended,
    /// It was idle: hand it to the idle poller.
    Parked,
}

/// What reading a connection held for its address's rate ended on.
enum Held {
    /// The hold is over; nothing was kept.
    Over,
    /// A read to act on: a frame that costs (the hold is over), or an end
    /// of the stream or an error.
    Next(Result<Option<ClientMessage>, TransportError>),
    /// The connection is no longer the hub's (kicked, gone).
    Ended,
}

/// A read that timed out (the socket's read timeout).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The writer thread: queued frames to the socket. When the queue closes
/// after being flushed, the write side is shut (the peer sees the end of
/// the stream after our last message); on a write error both sides are,
/// which also wakes the reader.
fn write_loop(outbox: &Outbox, stream: &Sock) {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| outbox.run_writer(stream)));
    match outcome {
        // Idle for a while: this thread ends, the connection goes on.
        Ok(Ok(WriterEnd::Parked)) => {}
        Ok(Ok(_)) => stream.end_writes(),
        Ok(Err(e)) => {
            debug!("writing to {:?} failed: {e}", stream.tcp().peer_addr());
            let _ = stream.tcp().shutdown(Shutdown::Both);
        }
        Err(_) => {
            outbox.abort();
            let _ = stream.tcp().shutdown(Shutdown::Both);
        }
    }
}

/// Reads and drops what the peer still sends, until it hangs up or [`LINGER`] passes.
fn linger(mut stream: &TcpStream) {
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Bounds `stream`'s receive buffer to [`RECEIVE_BUFFER`].
fn bound_receive_buffer(stream: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(stream).set_recv_buffer_size(RECEIVE_BUFFER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's receive buffer stays bounded: left to the kernel it
    /// grows to megabytes of a pusher's file data ahead of its chat.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_connection_s_receive_buffer_is_bounded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        bound_receive_buffer(&stream).unwrap();
        // Linux keeps twice what is asked, for its own bookkeeping.
        let size = socket2::SockRef::from(&stream).recv_buffer_size().unwrap();
        assert_eq!(size, 2 * RECEIVE_BUFFER);
    }
}
