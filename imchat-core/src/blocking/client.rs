//! A blocking client: one type that owns the socket and the
//! [`ClientSession`], so that a bot is a loop around
//! [`Client::next_event`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::transport::{FrameReader, ReadStep};
use crate::codec::Encode;
use crate::error::{DecodeError, NameError, TransportError, UsageError};
use crate::limits::{Limits, LimitsError, DEFAULT_AUTO_ACCEPT_BYTES, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::message::{
    FileName, Recipient, RefuseCode, Secret, ServerLimits, ServerMessage, TransferId, Username,
    PROTOCOL_VERSION,
};
use crate::session::{ClientEvent, ClientSession, SavedSession};

/// How [`Client::connect`] connects, and the limits the session keeps.
///
/// `ConnectOptions::default()` gives the documented defaults; change a
/// field before passing them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The session's limits ([`Limits::default()`]). A client uses
    /// `max_frame` as the largest frame it reads (see [`Client`]),
    /// `max_text`, `chunk_size`, `max_push_size` and `max_transfers` for
    /// what it sends and accepts, and `keepalive_interval` /
    /// `keepalive_timeout` for its pings to a silent server.
    pub limits: Limits,
    /// Longest wait for the TCP connection, per address tried: 10 s.
    pub connect_timeout: Duration,
    /// Longest wait for the server's answer to the handshake:
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s).
    pub handshake_timeout: Duration,
    /// Longest a write may block (a server that stops reading) before the
    /// connection counts as broken: 60 s. `None` waits forever. Set on the
    /// socket by [`Client::connect`]; [`Client::over`] leaves its stream's
    /// options to the caller.
    pub write_timeout: Option<Duration>,
    /// Acknowledge download data only when [`Client::stored`] says it is
    /// stored, instead of as it is handed out in
    /// [`ClientEvent::TransferData`] (`false`). See
    /// [`ClientSession::set_manual_acks`].
    pub manual_acks: bool,
    /// Hand out the server's acknowledgement of each chat message sent as
    /// [`ClientEvent::Acknowledged`] with its client id (the one
    /// [`Client::send_chat`] returned), for a program that waits to know a
    /// message arrived (`false`: not handed out). Kept across
    /// [`Client::reconnect`]. See [`ClientSession::set_report_acks`].
    pub report_acks: bool,
    /// Pushes offered to us up to this many bytes are accepted without
    /// asking; `None`: every one is a [`ClientEvent::PushOffered`]
    /// (`Some(`[`DEFAULT_AUTO_ACCEPT_BYTES`]`)`). See
    /// [`ClientSession::set_auto_accept`].
    pub auto_accept: Option<u64>,
    /// The server's password (a server run with `--password-file`), sent
    /// before every `Hello` (`None`).
    pub server_password: Option<Secret>,
    /// The account password of a registered username, likewise (`None`).
    pub account_password: Option<Secret>,
    /// A session to take back, as [`ClientSession::saved`] gave it before
    /// (kept by an earlier run of the program): the `Hello` asks for it,
    /// and the first events after the connect are
    /// [`ClientEvent::Resumed`] and what was missed, or
    /// [`ClientEvent::ContinuityLost`] (`None`: a new session).
    pub resume: Option<SavedSession>,
    /// Keep to the server's rate limit: an intent that would go over it
    /// (a burst of `send_chat`, say) first waits until the server will
    /// take it (`true`). The wait reads (answering the server's pings,
    /// taking its acknowledgements), and what it reads waits for
    /// [`Client::next_event`]; while a file comes in, it reads only until
    /// something arrives for `next_event`, and no further: download data
    /// is not acknowledged before it is handed out. Chat
    /// messages sent again after a [`Client::reconnect`] go at the same
    /// pace. The server slows a client that
    /// sends faster, and disconnects one that goes on doing so; its
    /// unacknowledged messages past the session's limit come back as
    /// [`ClientEvent::NotSent`]. With `false`, see
    /// [`Client::next_send_at`] to pace by hand.
    pub pace: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            write_timeout: Some(Duration::from_secs(60)),
            manual_acks: false,
            report_acks: false,
            auto_accept: Some(DEFAULT_AUTO_ACCEPT_BYTES),
            server_password: None,
            account_password: None,
            resume: None,
            pace: true,
        }
    }
}

impl ConnectOptions {
    /// Checks that the options can work: no time limit of zero (a socket
    /// refuses it, and no answer comes in no time), a `limits.chunk_size`
    /// of at least 1 byte (a push sends nothing in chunks of none), and a
    /// frame limit (`limits.max_frame`) that holds a chunk and a longest
    /// text, as [`Limits::validate`] checks them (its other rules are a
    /// server's: a client keeps to the rates its server announces).
    /// [`Client::connect`] and [`Client::over`] check them before anything
    /// is sent, so that a bad setting is not reported as the server's or
    /// the network's fault.
    ///
    /// # Errors
    ///
    /// The first [`OptionsError`] found.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let limits = &self.limits;
        for (field, time) in [
            ("connect_timeout", Some(self.connect_timeout)),
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("write_timeout", self.write_timeout),
            ("limits.keepalive_interval", Some(limits.keepalive_interval)),
            ("limits.keepalive_timeout", Some(limits.keepalive_timeout)),
        ] {
            if time == Some(Duration::ZERO) {
                return Err(OptionsError::ZeroTime { field });
            }
        }
        // Chunks of no bytes: a push could never send any.
        if limits.chunk_size == 0 {
            return Err(LimitsError::Zero {
                field: "chunk_size",
            }
            .into());
        }
        limits.check_frames()?;
        Ok(())
    }
}

/// Why [`ConnectOptions`] cannot work ([`ConnectOptions::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// A time limit is zero (`write_timeout: None` waits forever).
    #[error("{field} is zero")]
    ZeroTime {
        /// The option's name.
        field: &'static str,
    },
    /// The limits do not hold together.
    #[error(transparent)]
    Limits(#[from] LimitsError),
}

/// Why [`Client::connect`] failed. The refusals (`NameTaken` to
/// `Refused`) carry the server's reason; show it and try another name or
/// server. Their `reason` fields are the server's words as sent; the
/// error's `Display` shows them [`inert`](crate::inert), on one line.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The username breaks the naming rules; nothing was sent.
    #[error("invalid username: {0}")]
    InvalidName(#[from] NameError),
    /// The [`ConnectOptions`] cannot work; nothing was sent.
    #[error("invalid connect options: {0}")]
    InvalidOptions(#[from] OptionsError),
    /// The address resolved to nothing.
    #[error("no address to connect to")]
    NoAddress,
    /// The address is not one to connect to: most often a host without a
    /// port (`127.0.0.1` for `127.0.0.1:12300`; the library adds no
    /// default port, [`DEFAULT_PORT`](crate::DEFAULT_PORT) is there to
    /// add).
    #[error("not an address to connect to ({0}): give host:port (the usual port is {port})", port = crate::DEFAULT_PORT)]
    BadAddress(io::Error),
    /// The host name could not be resolved (no such host, or no name
    /// service): check the name, not the server.
    #[error("cannot resolve the host name: {0}")]
    Resolve(io::Error),
    /// No TCP connection could be made (the last address's error).
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The server did not answer the handshake in time.
    #[error("no answer to the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The server closed (or reset) the connection without answering the
    /// handshake.
    #[error("connection closed during the handshake")]
    Closed,
    /// The connection broke.
    #[error(transparent)]
    Transport(TransportError),
    /// The server's answer does not decode: it is not an imchat server, or
    /// it speaks TLS (connect over a TLS stream: see [`Client::over`]), or
    /// its frames are larger than [`ConnectOptions::limits`]' `max_frame`
    /// allows; what did not decode is said too.
    #[error("the server's answer is not imchat ({0}; a TLS server needs a TLS connection)")]
    NotImchat(#[source] DecodeError),
    /// Someone online already has this name. It may be this program's
    /// own earlier session, kept for a resume for the server's grace
    /// period after its connection was lost: take it back with
    /// [`ConnectOptions::resume`] or [`Client::reconnect`].
    #[error("{}", said("username already taken", "already taken", reason))]
    NameTaken {
        /// The server's words.
        reason: String,
    },
    /// The server does not accept this name.
    #[error("{}", said("username refused", "username refused", reason))]
    NameRefused {
        /// The server's words.
        reason: String,
    },
    /// The server has as many clients as it accepts.
    #[error("{}", said("server full", "server full", reason))]
    ServerFull {
        /// The server's words.
        reason: String,
    },
    /// The server speaks another protocol version.
    #[error(
        "protocol version {ours} not supported by the server (it speaks {server}): {}",
        crate::inert(reason)
    )]
    VersionMismatch {
        /// Our [`PROTOCOL_VERSION`].
        ours: u16,
        /// The version the server named.
        server: u16,
        /// The server's words.
        reason: String,
    },
    /// The server is shutting down.
    #[error("{}", said("server shutting down", "shutting down", reason))]
    ShuttingDown {
        /// The server's words.
        reason: String,
    },
    /// Another refusal (a password needed or wrong, a ban, too many
    /// attempts, a code this version does not name, a handshake the
    /// server found too slow): match on `code` to tell them apart. Shown
    /// as the server's words, which say what the code says.
    #[error("{}", said("refused", "refused", reason))]
    Refused {
        /// The server's code.
        code: RefuseCode,
        /// The server's words.
        reason: String,
    },
}

impl From<TransportError> for ConnectError {
    /// A connection the server reset or shut before it answered the
    /// handshake is `Closed`, as one it closed: a server that hangs up
    /// without reading the `Hello` makes the system reset the connection.
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Decode(d) => ConnectError::NotImchat(d),
            TransportError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                ConnectError::Closed
            }
            e => ConnectError::Transport(e),
        }
    }
}

impl ConnectError {
    fn refusal(code: RefuseCode, reason: String, server: u16) -> ConnectError {
        let reason = if reason.is_empty() {
            code.to_string()
        } else {
            reason
        };
        match code {
            RefuseCode::NAME_TAKEN => ConnectError::NameTaken { reason },
            RefuseCode::INVALID_NAME => ConnectError::NameRefused { reason },
            RefuseCode::SERVER_FULL => ConnectError::ServerFull { reason },
            RefuseCode::SHUTTING_DOWN => ConnectError::ShuttingDown { reason },
            RefuseCode::VERSION_MISMATCH => ConnectError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                server,
                reason,
            },
            code => ConnectError::Refused { code, reason },
        }
    }
}

/// A refusal as shown: `what`, then the server's words, unless they say
/// it already, that is contain `key` ("server full (2 users)" is not
/// "server full: server full (2 users)", nor "the username 'ann' is
/// already taken" "username already taken: the username 'ann' is already
/// taken"). The words are the server's, made [`inert`](crate::inert): a
/// program that prints the error prints no escape sequence and no line
/// break of the server's.
fn said(what: &str, key: &str, reason: &str) -> String {
    let reason = crate::inert(reason);
    if reason.to_lowercase().contains(key) {
        reason.into_owned()
    } else {
        format!("{what}: {reason}")
    }
}

/// Why a [`Client`] call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request cannot be made; nothing was sent and the connection is fine.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Reading or writing failed, or the server sent bytes that do not
    /// decode: the connection is over (later calls return [`Closed`](Self::Closed)).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The connection is over: the server closed it, the session ended
    /// (after [`ClientEvent::Shutdown`] or [`ClientEvent::TimedOut`]), an
    /// earlier error broke it, or [`Client::quit`] was called.
    #[error("connection closed")]
    Closed,
}

/// What a [`Client`] runs over: a connected byte stream whose reads can
/// wait a limited time. [`TcpStream`] is one, and with the `tls` feature
/// `tls::Stream` is another; for anything else
/// (a Unix socket, a test double), implement the two methods.
pub trait Link: Read + Write {
    /// Makes each read wait at most `timeout` (`None`: as long as it
    /// takes); a read that waited that long fails with an error of kind
    /// `WouldBlock` or `TimedOut`, and consumes nothing.
    ///
    /// # Errors
    ///
    /// The stream's, when the timeout cannot be set.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// Makes reads return at once when nothing has arrived (an error of
    /// kind `WouldBlock`), or wait again (`false`). Used for a look that
    /// waits for nothing ([`Client::next_event`] with `Duration::ZERO`).
    /// The default cannot, and such a look waits the shortest read
    /// timeout instead (a millisecond, which the OS may round up to a few).
    ///
    /// # Errors
    ///
    /// The stream's, when the mode cannot be set.
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        let _ = nonblocking;
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Stops writing: the server reads the end of the stream after what
    /// was sent. Called once, when the client closes; it may do nothing.
    fn shutdown_write(&self);
}

impl Link for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, nonblocking)
    }

    fn shutdown_write(&self) {
        // The peer may be gone already; there is nothing left to tell it.
        let _ = self.shutdown(Shutdown::Write);
    }
}

#[cfg(feature = "tls")]
impl Link for super::tls::Stream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.tcp().set_nonblocking(nonblocking)
    }

    fn shutdown_write(&self) {
        super::tls::Stream::shutdown_write(self);
    }
}

/// A client connected to an imchat server: the connection and the
/// [`ClientSession`] in one value, driven from the calling thread.
///
/// [`connect`](Client::connect) makes a TCP connection and does the
/// handshake; [`over`](Self::over) does the handshake over a connection
/// of yours (TLS, say). Then call [`next_event`](Self::next_event) in a
/// loop: it reads, answers the server's pings, acknowledges downloads,
/// runs the session's timers ([`ClientSession::handle_timeout`] when
/// [`ClientSession::poll_timeout`] is due) and returns the next
/// [`ClientEvent`]. The intents (`send_chat`, `who`, `download`, `offer`…)
/// write their message before they return; with
/// [`ConnectOptions::pace`] (the default) one that would go over the
/// server's rate limit first waits until the server will take it. No
/// thread of its own, no channel.
///
/// The session's timer is its keepalive: after `keepalive_interval` of
/// silence it pings the server, and after `keepalive_timeout` without an
/// answer it gives up ([`ClientEvent::TimedOut`]); the bytes of a long
/// frame still arriving count as the server heard. While the session is
/// open [`ClientSession::poll_timeout`] is always `Some`; `None` means the
/// session has ended (refused, shut down, timed out or quit) and no timer
/// will run again. The timers only run inside `next_event` (and inside an
/// intent that waits for the rate), so call it at least every few seconds,
/// also while pushing a file.
///
/// A lost connection ([`ClientError::Transport`], [`ClientError::Closed`]
/// without a [`ClientEvent::Shutdown`] first, or one after it: the server
/// restarts) can be taken up again with [`reconnect`](Client::reconnect)
/// (or [`reconnect_over`](Self::reconnect_over)): the session asks for
/// itself back, and the server answers with [`ClientEvent::Resumed`] and
/// what was missed, or [`ClientEvent::ContinuityLost`]. A program that
/// exits keeps [`ClientSession::saved`] and gives it to the next run in
/// [`ConnectOptions::resume`].
///
/// Dropping a client says no goodbye: to the server that is a lost
/// connection, so the others see the user away, and the name stays taken
/// by its waiting session for the server's grace period (60 s by
/// default). A run started meanwhile with the same name is refused
/// ([`ConnectError::NameTaken`]) unless it resumes with the saved session.
/// Call [`quit`](Self::quit) to leave at once.
///
/// Frame limit: a client reads frames of up to `limits.max_frame`
/// ([`DEFAULT_MAX_FRAME`](crate::DEFAULT_MAX_FRAME), 1 MiB, unless changed
/// in [`ConnectOptions::limits`]), from the first byte on: the handshake
/// limit is the server's, for connections not yet joined. Once welcomed,
/// up to the `max_frame` the server announced if that is larger (up to
/// [`MAX_CLIENT_FRAME`](crate::MAX_CLIENT_FRAME)): a server that takes
/// larger messages and chunks sends them too. Write your own loop with
/// [`split_tcp`](super::split_tcp) and
/// [`ClientSession::frame_limit`] after the welcome.
///
/// A send that fails ([`ClientError::Transport`]) leaves its chat
/// message in the session, unacknowledged: after a
/// [`reconnect`](Client::reconnect) it is sent again, once (the server
/// recognises a copy of one it had taken, while it keeps the session).
/// Do not send it again yourself. So does one whose wait for the server's
/// rate ([`ConnectOptions::pace`]) breaks on the connection. A send that
/// returns [`ClientError::Closed`] was not taken (the connection or the
/// session was over before it could go): send it again after the
/// reconnect if it should still go.
/// What the server had sent before the failure (its acknowledgements,
/// its `Shutdown`) is read first and handed out by `next_event`.
///
/// File data arrives as events: [`ClientEvent::TransferStarted`], then
/// [`ClientEvent::TransferData`] with checked bytes for the caller to put
/// where it wants, then [`ClientEvent::TransferDone`] (the whole-file
/// checksum matched) or [`ClientEvent::TransferFailed`]. Data is
/// acknowledged as it is handed out, unless
/// [`ConnectOptions::manual_acks`] is set (then see [`stored`](Self::stored)).
/// A push someone offers arrives the same way when it is small enough to
/// be accepted without asking ([`ConnectOptions::auto_accept`]); a
/// bigger one is a [`ClientEvent::PushOffered`], to [`accept`](Self::accept)
/// or [`decline`](Self::decline).
#[derive(Debug)]
pub struct Client<S: Link = TcpStream> {
    session: ClientSession,
    /// Reads the connection; its stream is also written to.
    reader: FrameReader<S, ServerMessage>,
    /// Encoded frames waiting to be written together.
    out: Vec<u8>,
    welcome: String,
    /// What the server announced in its welcome.
    server_limits: ServerLimits,
    /// False once the connection is over; every later call is `Closed`.
    open: bool,
    /// Events of the session that came before the `Welcome` of a
    /// reconnect (the transfers the lost connection ended): handed out
    /// first.
    early: VecDeque<ClientEvent>,
    /// The error that ended the connection, held by `next_event` until
    /// the events read before it (and while draining) are handed out.
    failed: Option<ClientError>,
    options: ConnectOptions,
}

/// A read that stopped at its timeout, with nothing lost: the reader keeps
/// any partial frame and the next read continues it.
fn is_timeout(e: &TransportError) -> bool {
    matches!(e, TransportError::Io(e)
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// A client's server limits until the welcome replaces them (never seen:
/// `connect` returns the client only once welcomed).
const NOT_WELCOMED: ServerLimits = ServerLimits {
    max_frame: 0,
    max_text: 0,
    rate_burst: 0,
    rate_per_sec: 0,
    rate_burst_bytes: 0,
    rate_bytes_per_sec: 0,
    max_transfers: 0,
    max_push_size: 0,
};

/// The shortest socket read timeout: zero means "no timeout" to the OS.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// How long a paced chat reads for answers at a time while the window
/// kept for resends is full (it goes on at the first one).
const ANSWER_WAIT: Duration = Duration::from_millis(50);

/// Most reads of what a connection that broke had left to read.
const DRAIN_READS: usize = 4096;

/// Longest [`Client::quit`] waits for the server to close the connection
/// after the goodbye (a server that has read it closes at once).
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// `wait` from now, or a century from now for a wait too long to add
/// (`Duration::MAX` meaning "as long as it takes").
fn later(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Client<TcpStream> {
    /// Connects to `addr` (each address it resolves to in turn, within
    /// `connect_timeout` each), sets `TCP_NODELAY` (chat frames are small
    /// and must not wait for each other) and the write timeout, sends the
    /// `Hello` and waits for the server's `Welcome`. A refusal is a typed
    /// [`ConnectError`] carrying the server's reason; so is a `Welcome` in
    /// another protocol version.
    ///
    /// # Errors
    ///
    /// Nothing is connected. [`ConnectError::InvalidName`] before anything
    /// is sent (pick another name), [`ConnectError::InvalidOptions`] for
    /// options that cannot work ([`ConnectOptions::validate`]);
    /// [`ConnectError::BadAddress`] for an
    /// address without a port (or otherwise not one);
    /// [`ConnectError::Resolve`] when the host name does not resolve,
    /// [`ConnectError::NoAddress`] when it resolves to nothing and
    /// [`ConnectError::Connect`] when no address accepts (or a socket
    /// option cannot be set);
    /// [`ConnectError::HandshakeTimeout`], [`ConnectError::Closed`],
    /// [`ConnectError::Transport`] and [`ConnectError::NotImchat`] when the
    /// server does not answer, hangs up or does not speak imchat (a TLS
    /// server: see [`over`](Self::over)); the refusals
    /// [`ConnectError::NameTaken`], [`ConnectError::NameRefused`],
    /// [`ConnectError::ServerFull`], [`ConnectError::VersionMismatch`],
    /// [`ConnectError::ShuttingDown`] and [`ConnectError::Refused`] carry
    /// the server's reason to show.
    pub fn connect(
        addr: impl ToSocketAddrs,
        username: &str,
        options: ConnectOptions,
    ) -> Result<Client, ConnectError> {
        let username = Username::new(username)?;
        options.validate()?;
        let stream = tcp(addr, &options)?;
        Client::start(stream, username, options)
    }

    /// Takes the session up again on a new TCP connection to `addr` (the
    /// same server, or another of its cluster), after the last one was
    /// lost or the server restarted: see [`reconnect_over`](Self::reconnect_over).
    ///
    /// # Errors
    ///
    /// As for [`reconnect_over`](Self::reconnect_over), and the connection
    /// errors of [`connect`](Self::connect).
    pub fn reconnect(&mut self, addr: impl ToSocketAddrs) -> Result<(), ConnectError> {
        let stream = tcp(addr, &self.options)?;
        self.reconnect_over(stream)
    }

    /// The server's address.
    ///
    /// # Errors
    ///
    /// The socket's [`io::Error`] (for instance when it is no longer
    /// connected).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().peer_addr()
    }
}

impl<S: Link> Client<S> {
    /// Does the handshake over `stream`, a connection already made (a TLS
    /// stream from `tls::connect` (feature `tls`), say, wrapped in
    /// `tls::Stream::tls`), as
    /// [`connect`](Client::connect) does over TCP. Socket options
    /// (`TCP_NODELAY`, the write timeout) are the caller's to set.
    ///
    /// # Errors
    ///
    /// As for [`connect`](Client::connect), without the connection errors.
    pub fn over(stream: S, username: &str, options: ConnectOptions) -> Result<Self, ConnectError> {
        let username = Username::new(username)?;
        options.validate()?;
        Client::start(stream, username, options)
    }

    fn start(stream: S, username: Username, options: ConnectOptions) -> Result<Self, ConnectError> {
        let now = Instant::now();
        let mut session = match options.resume {
            Some(saved) => ClientSession::resuming(username, options.limits.clone(), now, saved),
            None => ClientSession::new(username, options.limits.clone(), now),
        };
        session.set_manual_acks(options.manual_acks);
        session.set_report_acks(options.report_acks);
        session.set_auto_accept(options.auto_accept);
        session.set_credentials(
            options.server_password.clone(),
            options.account_password.clone(),
        );
        let mut client = Client {
            session,
            reader: FrameReader::new(stream, options.limits.max_frame),
            out: Vec::new(),
            welcome: String::new(),
            server_limits: NOT_WELCOMED,
            open: true,
            early: VecDeque::new(),
            failed: None,
            options,
        };
        client.handshake()?;
        Ok(client)
    }

    /// Takes the session up again over `stream`, a new connection, after
    /// the last one was lost (or the server restarted): the transfers of
    /// the lost connection end (as events, handed out first), the `Hello`
    /// asks for the session back, and once the server welcomed it the
    /// next events say how that went ([`ClientEvent::Resumed`] and what
    /// was missed, or [`ClientEvent::ContinuityLost`] and a new session);
    /// chat messages the server had not acknowledged are sent again.
    /// Calling it on an open client drops its connection first.
    ///
    /// # Errors
    ///
    /// As for [`over`](Self::over); the client stays closed (call again to
    /// retry). [`ConnectError::NameTaken`] while the server has not yet
    /// noticed the old connection's loss and the session cannot be
    /// resumed (it gave no resume), and [`ConnectError::ShuttingDown`]
    /// from a server still finishing its stop while its next run starts:
    /// retry after a moment.
    pub fn reconnect_over(&mut self, stream: S) -> Result<(), ConnectError> {
        if self.open {
            self.drain();
        }
        self.close();
        self.failed = None;
        self.session.reconnect(Instant::now());
        self.reader = FrameReader::new(stream, self.options.limits.max_frame);
        self.out.clear();
        self.open = true;
        let done = self.handshake();
        if done.is_err() {
            self.close();
        }
        done
    }

    fn handshake(&mut self) -> Result<(), ConnectError> {
        let timeout = self.options.handshake_timeout;
        let deadline = later(timeout);
        // Before anything is sent: a connection whose reads cannot wait a
        // limited time is refused before the server sees a Hello.
        Link::set_read_timeout(self.reader.get_ref(), Some(timeout.max(MIN_WAIT)))
            .map_err(ConnectError::Connect)?;
        let mut server_version = PROTOCOL_VERSION;
        loop {
            self.flush()?;
            match self.session.poll_event() {
                Some(ClientEvent::Welcome { text, limits, .. })
                    if server_version == PROTOCOL_VERSION =>
                {
                    self.welcome = text;
                    self.server_limits = limits;
                    // A server that takes larger frames sends them too.
                    let limit = self.session.frame_limit();
                    self.reader.decoder_mut().set_max_frame(limit);
                    return Ok(());
                }
                Some(ClientEvent::Welcome { .. }) => {
                    return Err(ConnectError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        server: server_version,
                        reason: format!("the server answered in version {server_version}"),
                    })
                }
                Some(ClientEvent::Refused { code, reason }) => {
                    return Err(ConnectError::refusal(code, reason, server_version))
                }
                Some(ClientEvent::Shutdown { reason }) => {
                    return Err(ConnectError::ShuttingDown { reason })
                }
                // What the lost connection ended, for the caller.
                Some(other) => {
                    self.early.push_back(other);
                    continue;
                }
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnectError::HandshakeTimeout(timeout));
            }
            self.set_read_timeout(left)?;
            // One read at a time: a server that trickles bytes does not
            // hold the handshake past its deadline.
            match self.reader.read_once() {
                Ok(ReadStep::Message(msg)) => {
                    // The session keeps no version; the driver checks it.
                    if let ServerMessage::Welcome { version, .. }
                    | ServerMessage::Refused { version, .. } = &msg
                    {
                        server_version = *version;
                    }
                    self.session.handle_message(msg, Instant::now());
                }
                Ok(ReadStep::End) => return Err(ConnectError::Closed),
                Ok(ReadStep::More) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next event, waiting at most `timeout` for one; `Ok(None)` when
    /// the time passed with nothing to show. `Duration::ZERO` only looks
    /// at what has arrived, without waiting (on a [`Link`] that can read
    /// without blocking, as TCP and TLS streams can). A short timeout is
    /// rounded up by the OS's read timeout, to a few milliseconds.
    ///
    /// Meanwhile it answers pings, sends acknowledgements, runs the
    /// keepalive timer and writes what the session queued. A read timeout
    /// loses nothing: a frame that arrives in parts across calls is
    /// decoded whole.
    ///
    /// The session's end is an event ([`ClientEvent::Shutdown`],
    /// [`ClientEvent::TimedOut`]); after it, and after a connection closed
    /// or broken without one, calls return [`ClientError::Closed`].
    ///
    /// To stop a thread waiting here from another (a bot's shutdown), keep
    /// a clone of the socket from before the client moved
    /// (`client.get_ref().try_clone()` for TCP) and shut it down
    /// (`shutdown(Shutdown::Both)`): the wait ends at once with
    /// [`ClientError::Closed`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Transport`], once, when reading or writing fails or the
    /// server sends bytes that do not decode; [`ClientError::Closed`] once the
    /// connection is over (that error, the server's close, or the session's
    /// last event). The events read before the failure are handed out
    /// before it, so none is left behind: either way stop calling, or
    /// [`reconnect`](Client::reconnect).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<ClientEvent>, ClientError> {
        if let Some(ev) = self.early.pop_front() {
            return Ok(Some(ev));
        }
        let deadline = later(timeout);
        let mut looked = false;
        loop {
            if let Err(e) = self.flush() {
                self.failed = Some(self.fail(e));
            }
            if let Some(ev) = self.session.poll_event() {
                if self.session.is_closed() {
                    self.close();
                }
                return Ok(Some(ev));
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            if !self.open || self.session.is_closed() {
                self.close();
                return Err(ClientError::Closed);
            }
            let now = Instant::now();
            if now >= deadline && looked && !self.reader.has_message_ready() {
                return Ok(None);
            }
            looked = true;
            if let Err(e) = self.read_until(deadline) {
                // What was read before the error comes first.
                self.failed = Some(e);
            }
        }
    }

    /// Runs the session's timer if it is due, then reads one message (or
    /// waits until `until`, or the timer, whichever comes first) and gives
    /// it to the session.
    fn read_until(&mut self, until: Instant) -> Result<(), ClientError> {
        let now = Instant::now();
        let timer = self.session.poll_timeout();
        if timer.is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
            return Ok(());
        }
        let until = timer.map_or(until, |t| t.min(until));
        let wait = until.saturating_duration_since(now);
        // A look that waits for nothing reads without blocking, where the
        // link can (a read timeout is never shorter than the OS's timer
        // tick, several milliseconds).
        let look = wait.is_zero() && Link::set_nonblocking(self.reader.get_ref(), true).is_ok();
        if !look {
            if let Err(e) = self.set_read_timeout(wait) {
                return Err(self.fail(e));
            }
        }
        // One read at a time: bytes that trickle in do not hold the
        // caller past `until`.
        let read = self.reader.read_once();
        if look {
            if let Err(e) = Link::set_nonblocking(self.reader.get_ref(), false) {
                return Err(self.fail(TransportError::Io(e)));
            }
        }
        match read {
            Ok(ReadStep::Message(msg)) => self.session.handle_message(msg, Instant::now()),
            Ok(ReadStep::End) => {
                self.close();
                return Err(ClientError::Closed);
            }
            // Bytes of a frame still coming in: the server is alive, and
            // its answer to a ping would wait behind that frame.
            Ok(ReadStep::More) if self.reader.decoder_mut().buffered() > 0 => {
                self.session.handle_bytes(Instant::now());
            }
            Ok(ReadStep::More) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(self.fail(e)),
        }
        Ok(())
    }

    /// When a request may go without going over the server's rate limit:
    /// `None` if now, else the time to wait for (see
    /// [`ClientSession::next_send_at`]). `text_len` is the length of a
    /// chat text, 0 for any other request. With
    /// [`ConnectOptions::pace`] the intents wait for it themselves.
    pub fn next_send_at(&mut self, text_len: usize) -> Option<Instant> {
        self.session.next_send_at(Instant::now(), text_len)
    }

    /// True until the connection is over: the session's last event
    /// ([`ClientEvent::Shutdown`], [`ClientEvent::TimedOut`]) was handed
    /// out, the connection closed or broke, or [`quit`](Self::quit) was
    /// called. Then every call returns [`ClientError::Closed`] (until a
    /// [`reconnect`](Client::reconnect)).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The welcome text the server sent.
    #[must_use]
    pub fn welcome_text(&self) -> &str {
        &self.welcome
    }

    /// The limits the server announced in its welcome (the session keeps
    /// to its text limit, and to the others where they are stricter than
    /// its own: push size, transfers at once and rate; its chunks fit in
    /// the server's `max_frame`).
    #[must_use]
    pub fn server_limits(&self) -> &ServerLimits {
        &self.server_limits
    }

    /// The registered username.
    #[must_use]
    pub fn username(&self) -> &Username {
        self.session.username()
    }

    /// The session, to read its state and limits (and
    /// [`saved`](ClientSession::saved), to keep for a later run).
    #[must_use]
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The connection.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        self.reader.get_ref()
    }

    /// Sends a chat message to everyone else or to one user.
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`] with [`UsageError::TextTooLong`] (nothing was
    /// sent); [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    ///
    /// Returns the message's client id, which a [`ClientEvent::Error`] or
    /// [`ClientEvent::NotSent`] about it carries.
    pub fn send_chat(&mut self, to: Recipient, text: &str) -> Result<u64, ClientError> {
        self.chat_paced(text, |s| s.send_chat(to, text))
    }

    /// Sends an action (`/me waves`, shown as `* ann waves`) to everyone
    /// else or to one user.
    ///
    /// # Errors
    ///
    /// As for [`send_chat`](Self::send_chat).
    pub fn send_action(&mut self, to: Recipient, text: &str) -> Result<u64, ClientError> {
        self.chat_paced(text, |s| s.send_action(to, text))
    }

    /// Sends a private message to one user.
    ///
    /// # Errors
    ///
    /// As for [`send_chat`](Self::send_chat).
    pub fn send_private(&mut self, to: &Username, text: &str) -> Result<u64, ClientError> {
        self.send_chat(Recipient::User(to.clone()), text)
    }

    /// Asks who is online; the answer is [`ClientEvent::Who`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn who(&mut self) -> Result<(), ClientError> {
        self.act_paced(ClientSession::joined, ClientSession::who)
    }

    /// Asks for access to the shared folder; the answer is
    /// [`ClientEvent::FilesAccess`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn files_access(&mut self) -> Result<(), ClientError> {
        self.act_paced(ClientSession::joined, ClientSession::files_access)
    }

    /// Asks for the shared-file list; it comes as [`ClientEvent::FileList`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn list_files(&mut self) -> Result<(), ClientError> {
        self.act_paced(ClientSession::joined, ClientSession::list_files)
    }

    /// Asks for a shared file (see [`ClientSession::download`]); its bytes
    /// come as transfer events with the returned id.
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`] with [`UsageError::TooManyTransfers`] (nothing
    /// was sent; ask again when a transfer ends) or
    /// [`UsageError::AlreadyDownloading`] (one of `name` is running);
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn download(
        &mut self,
        name: FileName,
        resume: Option<crate::ResumeState>,
    ) -> Result<TransferId, ClientError> {
        self.act_paced(ClientSession::check_download, |s| s.download(name, resume))
    }

    /// With [`ConnectOptions::manual_acks`]: download `id` is stored up to
    /// byte `offset`. See [`ClientSession::stored`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn stored(&mut self, id: TransferId, offset: u64) -> Result<(), ClientError> {
        self.act(|s| {
            s.stored(id, offset);
            Ok(())
        })
    }

    /// With [`ConnectOptions::manual_acks`]: sends the acknowledgements
    /// held back, when there is nothing more to store for now. See
    /// [`ClientSession::caught_up`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn caught_up(&mut self) -> Result<(), ClientError> {
        self.act(|s| {
            s.caught_up();
            Ok(())
        })
    }

    /// Announces a push of `size` bytes (`/sendfile`). Wait for
    /// [`ClientEvent::PushAccepted`] (the receivers took it), then send its
    /// bytes with [`push_chunk`](Self::push_chunk), at most
    /// [`ClientSession::chunk_limit`] at a time (`client.session().chunk_limit()`:
    /// `limits.chunk_size`, or less under a small frame limit) and at most
    /// [`ClientSession::push_room`] (`client.session().push_room(id)`:
    /// what the server's credit allows), and finish with [`push_end`](Self::push_end); the outcome
    /// is [`ClientEvent::PushDone`] or [`ClientEvent::PushFailed`]. Call
    /// [`next_event`](Self::next_event) between chunks (`Duration::ZERO`
    /// will do) to notice a refusal and keep the keepalive running; when
    /// `push_room` is 0, wait in `next_event` for the next
    /// [`ClientEvent::PushCredit`] (the server's other messages keep
    /// coming meanwhile, and the client may send anything else).
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`] with [`UsageError::FileTooLarge`] or
    /// [`UsageError::TooManyTransfers`] (nothing was sent); [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn offer(
        &mut self,
        name: FileName,
        size: u64,
        to: Recipient,
    ) -> Result<TransferId, ClientError> {
        self.act_paced(|s| s.check_offer(size), |s| s.offer(name, size, to))
    }

    /// Accepts the push offered as `id` ([`ClientEvent::PushOffered`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`] with [`UsageError::UnknownOffer`] if no offer `id`
    /// is waiting (answered, or withdrawn: [`ClientEvent::OfferWithdrawn`]);
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn accept(&mut self, id: TransferId) -> Result<(), ClientError> {
        self.act(|s| s.accept(id))
    }

    /// Declines the push offered as `id`. The sender is told that the push
    /// was not accepted, not `reason`: see [`ClientSession::decline`].
    ///
    /// # Errors
    ///
    /// As for [`accept`](Self::accept).
    pub fn decline(&mut self, id: TransferId, reason: &str) -> Result<(), ClientError> {
        self.act(|s| s.decline(id, reason))
    }

    /// Sends the next bytes of push `id`, once it was accepted
    /// ([`ClientEvent::PushAccepted`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`], nothing sent, with
    /// [`UsageError::UnknownTransfer`] if `id` is not a running push of ours
    /// (it failed or was cancelled: stop reading its file),
    /// [`UsageError::NotAccepted`] before [`ClientEvent::PushAccepted`],
    /// [`UsageError::EmptyChunk`] for no data,
    /// [`UsageError::ChunkTooLarge`] over [`ClientSession::chunk_limit`],
    /// [`UsageError::PastCredit`] past [`ClientSession::push_room`] (wait
    /// for [`ClientEvent::PushCredit`]), or
    /// [`UsageError::PushOverrun`] past the size offered (cancel the push);
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn push_chunk(&mut self, id: TransferId, data: Vec<u8>) -> Result<(), ClientError> {
        self.act(|s| s.push_chunk(id, data))
    }

    /// Ends push `id` once all its bytes went.
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`], nothing sent, with
    /// [`UsageError::UnknownTransfer`] or [`UsageError::NotAccepted`] as for
    /// [`push_chunk`](Self::push_chunk), or [`UsageError::PushShort`] while
    /// bytes of the size offered are unsent (cancel the push);
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn push_end(&mut self, id: TransferId) -> Result<(), ClientError> {
        self.act(|s| s.push_end(id))
    }

    /// Gives up a transfer: a download, an incoming push or our push.
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`] with [`UsageError::UnknownTransfer`] if no
    /// transfer or offer `id` is known (it already ended: nothing to do);
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn cancel(&mut self, id: TransferId, reason: &str) -> Result<(), ClientError> {
        self.act(|s| s.cancel(id, reason))
    }

    /// Protects the username with `password` (on a server that keeps
    /// accounts): answered with a [`ClientEvent::Notice`]
    /// ([`NoticeCode::REGISTERED`](crate::NoticeCode::REGISTERED), or why
    /// not). Later runs join with it in
    /// [`ConnectOptions::account_password`]; this session's reconnects
    /// send it by themselves.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn register(&mut self, password: Secret) -> Result<(), ClientError> {
        self.act_paced(ClientSession::joined, |s| s.register(password))
    }

    /// Removes the protection of the username: answered with a
    /// [`ClientEvent::Notice`].
    ///
    /// # Errors
    ///
    /// As for [`register`](Self::register).
    pub fn unregister(&mut self) -> Result<(), ClientError> {
        self.act_paced(ClientSession::joined, ClientSession::unregister)
    }

    /// Says goodbye, with a parting text the others see (may be empty),
    /// and closes the connection; later calls return
    /// [`ClientError::Closed`]. Quitting a closed client does nothing.
    ///
    /// Once the goodbye is written it waits for the server to close its
    /// end (at most 2 s, or the handshake timeout if that is shorter),
    /// dropping what still arrives: the server has then taken the goodbye
    /// and let go of the name, so a program that quits and connects again
    /// under the same name (a bot restarting) is not refused as
    /// [`ConnectError::NameTaken`] by its own session.
    ///
    /// # Errors
    ///
    /// [`ClientError::Transport`] if the goodbye could not be written; the
    /// connection is closed all the same.
    pub fn quit(&mut self, reason: &str) -> Result<(), ClientError> {
        if !self.open {
            return Ok(());
        }
        self.session.quit(reason);
        let sent = self.flush();
        self.close();
        if sent.is_ok() {
            self.await_close();
        }
        sent.map_err(ClientError::from)
    }

    /// An operator's request (kick, ban, unban, list bans; the server
    /// must count this user as an operator), answered with a
    /// [`ClientEvent::Notice`]. See [`ClientSession::operate`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Usage`] with [`UsageError::TargetTooLong`] or
    /// [`UsageError::TextTooLong`] (nothing was sent);
    /// [`ClientError::Closed`] once the connection is over, and
    /// [`ClientError::Transport`] if writing fails (the connection is then over).
    pub fn operate(
        &mut self,
        action: crate::OpAction,
        target: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.act_paced(
            |s| s.check_operate(target, reason),
            |s| s.operate(action, target, reason),
        )
    }

    /// [`act`](Self::act), after waiting for the server's rate limit to
    /// allow a request (with [`ConnectOptions::pace`]); the wait reads, so
    /// pings are answered, acknowledgements go and the socket's buffer
    /// does not fill. What `check` refuses (a file too large, say) is
    /// returned at once, without waiting for a turn it would not use.
    fn act_paced<T>(
        &mut self,
        check: impl FnOnce(&ClientSession) -> Result<(), UsageError>,
        intent: impl FnOnce(&mut ClientSession) -> Result<T, UsageError>,
    ) -> Result<T, ClientError> {
        self.paced(0, false, check, intent)
    }

    /// [`act_paced`](Self::act_paced) for a chat of `text` (a text too long
    /// is refused at once). It also waits, reading, for the server's
    /// answers while the window kept for resends is full
    /// ([`ClientSession::window_full`]): sent then, it would give up the
    /// oldest message as [`ClientEvent::NotSent`], answered or not. One
    /// whose wait breaks on the connection (a [`ClientError::Transport`])
    /// is handed to the session all the same, which keeps it
    /// unacknowledged to send again after a reconnect, as it keeps one
    /// whose write fails.
    fn chat_paced(
        &mut self,
        text: &str,
        intent: impl FnOnce(&mut ClientSession) -> Result<u64, UsageError>,
    ) -> Result<u64, ClientError> {
        self.paced(text.len(), true, |s| s.check_chat(text), intent)
    }

    /// The wait of [`act_paced`](Self::act_paced) and
    /// [`chat_paced`](Self::chat_paced) (`chat`, with `text_len` bytes of
    /// text), then the intent.
    fn paced<T>(
        &mut self,
        text_len: usize,
        chat: bool,
        check: impl FnOnce(&ClientSession) -> Result<(), UsageError>,
        intent: impl FnOnce(&mut ClientSession) -> Result<T, UsageError>,
    ) -> Result<T, ClientError> {
        if self.open && !self.session.is_closed() {
            check(&self.session)?;
        }
        while self.options.pace && self.open && !self.session.is_closed() {
            // What was read waits for next_event: while a file comes in,
            // reading on would acknowledge its data not handed out yet,
            // and let the server send on past its window.
            let may_read = !self.session.is_receiving()
                || (!self.session.has_events() && self.early.is_empty());
            let full = chat && may_read && self.session.window_full(text_len);
            let at = match self.next_send_at(text_len) {
                Some(at) => at,
                None if full => Instant::now() + ANSWER_WAIT,
                None => break,
            };
            let waited = match self.flush() {
                Err(e) => Err(self.fail(e)),
                Ok(()) if may_read => self.read_until(at),
                Ok(()) => {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    Ok(())
                }
            };
            if let Err(e) = waited {
                if chat && matches!(e, ClientError::Transport(_)) && !self.session.is_closed() {
                    // The connection is closed: nothing is written, and
                    // the session's reconnect drops what it queued.
                    let _ = intent(&mut self.session);
                }
                return Err(e);
            }
        }
        self.act(intent)
    }

    /// Runs one intent on the session and writes what it queued.
    fn act<T>(
        &mut self,
        intent: impl FnOnce(&mut ClientSession) -> Result<T, UsageError>,
    ) -> Result<T, ClientError> {
        // A session that ended (its last event waits for next_event) is
        // over as much as a closed connection.
        if !self.open || self.session.is_closed() {
            return Err(ClientError::Closed);
        }
        let out = intent(&mut self.session)?;
        match self.flush() {
            Ok(()) => Ok(out),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Writes everything the session queued, coalesced into one write.
    fn flush(&mut self) -> Result<(), TransportError> {
        self.out.clear();
        while let Some(m) = self.session.poll_transmit() {
            m.encode(&mut self.out);
        }
        if self.open && !self.out.is_empty() {
            let timeout = self.options.write_timeout;
            let stream = self.reader.get_mut();
            let written = stream.write_all(&self.out).and_then(|()| stream.flush());
            written.map_err(|e| stalled(e, timeout))?;
        }
        Ok(())
    }

    fn set_read_timeout(&self, wait: Duration) -> Result<(), TransportError> {
        let wait = wait.max(MIN_WAIT);
        Ok(Link::set_read_timeout(self.reader.get_ref(), Some(wait))?)
    }

    /// The connection broke: close it and hand the error out once. What
    /// the server had sent before is read first (a write fails while the
    /// answers to what went before wait to be read).
    fn fail(&mut self, e: TransportError) -> ClientError {
        if matches!(e, TransportError::Io(_)) {
            self.drain();
        }
        self.close();
        ClientError::Transport(e)
    }

    /// Reads what the server sent and is there to read now, without
    /// waiting: its acknowledgements (a message acknowledged is not sent
    /// again after a reconnect, where the server may not know it any
    /// more) and its `Shutdown` (handed out as the session's last event).
    /// At most [`DRAIN_READS`] reads.
    fn drain(&mut self) {
        if Link::set_read_timeout(self.reader.get_ref(), Some(MIN_WAIT)).is_err() {
            return;
        }
        for _ in 0..DRAIN_READS {
            match self.reader.read_once() {
                Ok(ReadStep::Message(msg)) => self.session.handle_message(msg, Instant::now()),
                Ok(ReadStep::More) => {}
                Ok(ReadStep::End) | Err(_) => return,
            }
        }
    }

    /// After the goodbye: reads, and drops, what the server still sends
    /// until it closes its end, the read fails, [`QUIT_WAIT`] (or the
    /// handshake timeout, if shorter) passes, or [`DRAIN_READS`] reads.
    fn await_close(&mut self) {
        let deadline = later(QUIT_WAIT.min(self.options.handshake_timeout));
        let mut buf = [0; 4096];
        for _ in 0..DRAIN_READS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.set_read_timeout(left).is_err() {
                return;
            }
            match self.reader.get_mut().read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Stops writing (the server sees the end after what was sent).
    fn close(&mut self) {
        if self.open {
            self.open = false;
            self.reader.get_ref().shutdown_write();
        }
    }
}

/// A write that timed out says so, in words: the socket's own error is
/// "Resource temporarily unavailable".
fn stalled(e: io::Error, timeout: Option<Duration>) -> io::Error {
    match (e.kind(), timeout) {
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(t)) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the server took nothing for {t:?} (write timeout): it is not reading"),
        ),
        _ => e,
    }
}

/// A TCP connection to `addr` with the socket options of `options`.
fn tcp(addr: impl ToSocketAddrs, options: &ConnectOptions) -> Result<TcpStream, ConnectError> {
    let stream = connect_any(addr, options.connect_timeout)?;
    stream.set_nodelay(true).map_err(ConnectError::Connect)?;
    stream
        .set_write_timeout(options.write_timeout)
        .map_err(ConnectError::Connect)?;
    Ok(stream)
}

/// The first address of `addr` that accepts a connection in time.
fn connect_any(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    let addrs = addr.to_socket_addrs().map_err(|e| {
        // The standard library gives a failed lookup no kind of its own
        // (`Uncategorized`): anything but a malformed address is one.
        if e.kind() == io::ErrorKind::InvalidInput {
            ConnectError::BadAddress(e)
        } else {
            ConnectError::Resolve(e)
        }
    })?;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(ConnectError::NoAddress, ConnectError::Connect))
}

#[cfg(test)]
mod tests;
