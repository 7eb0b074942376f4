//! TLS under the framing (feature `tls`): the same frames, inside a
//! rustls session over the TCP stream.
//!
//! [`TlsStream`] is one TCP stream and one rustls connection (client or
//! server) that a reader thread and a writer thread share, as they share a
//! `&TcpStream`: the reader reads the socket without any lock, then feeds
//! the bytes to rustls under the lock; a writer encrypts under the lock and
//! writes the records to the socket. `&TlsStream` is `Read` and `Write`,
//! so [`FrameReader`](super::FrameReader), [`FrameWriter`](super::FrameWriter)
//! and [`Outbox`](super::Outbox) take it as they take a `&TcpStream`.
//!
//! [`connect`] makes the client side: it verifies the server against the
//! system's roots or a CA file, or trusts a self-signed server on first use
//! with a known-servers file (SSH's `known_hosts`), and refuses a known
//! server whose certificate changed.

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, ConnectionCommon, DigitallySignedStruct,
    RootCertStore, SignatureScheme,
};
use thiserror::Error;

pub use rustls;

/// Most encrypted bytes a stream keeps waiting for the socket; past it a
/// write takes no more until the socket has taken some (the outbound queue
/// holds the rest, as it does for a plain socket).
const SEND_BUFFER: usize = 256 * 1024;
/// Bytes read from the socket at once (a TLS record is at most ~16.7 KB).
const READ_CHUNK: usize = 32 * 1024;

/// A TCP stream with TLS, shared by a reader and a writer thread (see the
/// module's text). `C` is a `rustls::ServerConnection` or
/// `ClientConnection`.
#[derive(Debug)]
pub struct TlsStream<C> {
    tcp: TcpStream,
    conn: Mutex<C>,
    /// Bytes read from the socket that rustls has not taken yet: it takes
    /// more only once the plaintext it holds is read (only the reader
    /// touches it; locked after `conn`).
    incoming: Mutex<Vec<u8>>,
}

impl<C, D> TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
{
    /// Wraps a connected socket and a new rustls connection.
    pub fn new(tcp: TcpStream, mut conn: C) -> Self {
        conn.set_buffer_limit(Some(SEND_BUFFER));
        TlsStream {
            tcp,
            conn: Mutex::new(conn),
            incoming: Mutex::new(Vec::new()),
        }
    }

    /// The TCP stream under the TLS (for socket options, `shutdown`, its
    /// descriptor). Reading or writing it directly corrupts the session.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The rustls connection, locked (its state, the peer's certificates).
    pub fn lock(&self) -> MutexGuard<'_, C> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the TLS handshake to its end, within `timeout`, from one thread
    /// (a client does this before anything else; a server's reader thread
    /// needs not: reading drives it).
    ///
    /// # Errors
    ///
    /// The socket's error, `TimedOut`, or `InvalidData` carrying the TLS
    /// error (see [`tls_error`]).
    pub fn handshake(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            {
                let mut conn = self.lock();
                self.push_records(&mut conn, &mut &self.tcp, Some(deadline))?;
                if !conn.is_handshaking() {
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.tcp.set_read_timeout(Some(left))?;
            let n = match (&self.tcp).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) => return Err(e),
            };
            let mut conn = self.lock();
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            self.incoming().extend_from_slice(&buf[..n]);
            self.take_in(&mut conn)?;
        }
    }

    fn incoming(&self) -> MutexGuard<'_, Vec<u8>> {
        self.incoming.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds the bytes read from the socket to rustls until it has
    /// plaintext to hand out (it takes no more then) or all are taken. On
    /// a TLS error, sends the alert rustls queued (without waiting) and
    /// fails.
    fn take_in(&self, conn: &mut C) -> io::Result<()> {
        let mut incoming = self.incoming();
        while !incoming.is_empty() {
            let taken = conn.read_tls(&mut &incoming[..])?;
            incoming.drain(..taken);
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    let _ = conn.write_tls(&mut &self.tcp);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            if taken == 0 && state.plaintext_bytes_to_read() == 0 {
                return Err(io::Error::other("TLS input not taken"));
            }
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                break;
            }
        }
        // An idle connection keeps no read buffer.
        if incoming.is_empty() && incoming.capacity() > 0 {
            *incoming = Vec::new();
        }
        Ok(())
    }

    /// Writes the records rustls has queued to `raw`. With a deadline,
    /// retries timed-out writes until it; without one, a write that times
    /// out or would block ends it with that error (the records stay queued).
    fn push_records(
        &self,
        conn: &mut C,
        raw: &mut impl Write,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        while conn.wants_write() {
            match conn.write_tls(raw) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) && deadline.is_some_and(|d| Instant::now() < d) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads decrypted bytes: what rustls holds, else what the socket
    /// brings (read without the lock). `Ok(0)` is the peer's clean end
    /// (TLS `close_notify`); a TCP end without it is `UnexpectedEof`. A
    /// read timeout of the socket is returned as is, losing nothing.
    fn read_plain(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut raw = [0u8; READ_CHUNK];
        loop {
            {
                let mut conn = self.lock();
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                // No plaintext: rustls takes what was read and not yet taken.
                if !self.incoming().is_empty() {
                    self.take_in(&mut conn)?;
                    self.push_handshake(&mut conn)?;
                    continue;
                }
            }
            let n = match (&self.tcp).read(&mut raw) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut conn = self.lock();
            if n == 0 {
                // rustls tells a clean close from a cut one.
                conn.read_tls(&mut &[][..])?;
                return match conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    other => other,
                };
            }
            self.incoming().extend_from_slice(&raw[..n]);
            self.take_in(&mut conn)?;
            self.push_handshake(&mut conn)?;
        }
    }

    /// Writes what reading made rustls queue: handshake messages (a
    /// server's answer to the client's hello), session tickets, alerts;
    /// small, and sent at once.
    fn push_handshake(&self, conn: &mut C) -> io::Result<()> {
        if conn.wants_write() {
            let deadline = Instant::now() + Duration::from_secs(1);
            self.push_records(conn, &mut &self.tcp, Some(deadline))?;
        }
        Ok(())
    }

    /// Encrypts what fits of `bufs` and writes records to `raw` (the
    /// socket, or a way of writing to it that never waits). Records left
    /// from an earlier write go first; while they cannot, nothing more is
    /// taken (`WouldBlock`/`TimedOut`, as from a full socket). Records of
    /// this write that the socket does not take at once stay queued for
    /// the next write or [`flush_with`](Self::flush_with).
    ///
    /// # Errors
    ///
    /// The socket's error; the stream is then broken.
    pub fn write_with(&self, bufs: &[IoSlice<'_>], raw: &mut impl Write) -> io::Result<usize> {
        let mut conn = self.lock();
        self.push_records(&mut conn, raw, None)?;
        let n = conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.push_records(&mut conn, raw, None) {
            Err(e) if is_timeout(&e) => {}
            other => other?,
        }
        Ok(n)
    }

    /// Writes the records still queued to `raw`; `WouldBlock`/`TimedOut`
    /// when the socket did not take them all (call again).
    ///
    /// # Errors
    ///
    /// As for [`write_with`](Self::write_with).
    pub fn flush_with(&self, raw: &mut impl Write) -> io::Result<()> {
        let mut conn = self.lock();
        self.push_records(&mut conn, raw, None)
    }

    /// Sends TLS `close_notify` (best effort, without waiting): the peer
    /// then sees a clean end of stream.
    pub fn close_notify(&self) {
        let mut conn = self.lock();
        conn.send_close_notify();
        let _ = self.push_records(&mut conn, &mut &self.tcp, None);
    }
}

impl<C, D> Read for &TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain(buf)
    }
}

impl<C, D> Write for &TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with(bufs, &mut &self.tcp)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_with(&mut &self.tcp)
    }
}

/// A client's connection, plaintext or TLS, for a reader and a writer
/// thread: clones share one socket (and one TLS session), and each clone
/// reads and writes as a `TcpStream` does.
#[derive(Debug, Clone)]
pub struct Stream(Arc<Either>);

#[derive(Debug)]
enum Either {
    Plain(TcpStream),
    Tls(Box<ClientStream>),
}

impl Stream {
    /// A plaintext connection.
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream(Arc::new(Either::Plain(tcp)))
    }

    /// A TLS connection (from [`connect`]).
    pub fn tls(tls: ClientStream) -> Stream {
        Stream(Arc::new(Either::Tls(Box::new(tls))))
    }

    /// True when it is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(*self.0, Either::Tls(_))
    }

    /// The TCP stream (timeouts, `shutdown`). Reading or writing it
    /// directly corrupts a TLS session.
    pub fn tcp(&self) -> &TcpStream {
        match &*self.0 {
            Either::Plain(s) => s,
            Either::Tls(t) => t.tcp(),
        }
    }

    /// Ends the writing side: a TLS `close_notify` (best effort), then
    /// the TCP shutdown of writing. The peer sees a clean end of stream.
    pub fn shutdown_write(&self) {
        if let Either::Tls(t) = &*self.0 {
            t.close_notify();
        }
        // The peer may be gone already; there is nothing left to tell it.
        let _ = self.tcp().shutdown(std::net::Shutdown::Write);
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &*self.0 {
            Either::Plain(s) => { s }.read(buf),
            Either::Tls(t) => { &**t }.read(buf),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &*self.0 {
            Either::Plain(s) => { s }.write(buf),
            Either::Tls(t) => { &**t }.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &*self.0 {
            Either::Plain(s) => { s }.write_vectored(bufs),
            Either::Tls(t) => { &**t }.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &*self.0 {
            Either::Plain(_) => Ok(()),
            Either::Tls(t) => { &**t }.flush(),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

/// A socket write that timed out or would block.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The rustls error inside an `io::Error` from a [`TlsStream`], if any.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Why a peer's TLS failed, as the other side tells it in its log: from
/// what rustls reported (an alert the peer sent, bytes that are not TLS)
/// or how the connection ended during the handshake. Each reads as one
/// line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeerFailure {
    /// The peer refused our certificate: its alert, in words.
    #[error("TLS handshake failed: the client refused our certificate (alert: {0})")]
    RefusedCertificate(String),
    /// The peer sent another alert: in words.
    #[error("TLS handshake failed: the client sent the alert '{0}'")]
    Alert(String),
    /// The first bytes are no TLS record (a plaintext imchat client).
    #[error("not TLS: the client spoke plaintext to a TLS port")]
    NotTls,
    /// The TCP connection ended before the handshake did.
    #[error("TLS handshake failed: the client closed the connection before it ended")]
    Closed,
    /// Another TLS error (rustls's words).
    #[error("TLS error: {0}")]
    Other(String),
}

/// What ended a server's TLS connection, from the error its reads
/// returned (`e`) and whether the handshake was still running: `None`
/// when it is no TLS matter (the socket failed or closed after the
/// handshake, as for a plaintext connection).
pub fn peer_failure(e: &io::Error, handshaking: bool) -> Option<PeerFailure> {
    use rustls::{AlertDescription as A, InvalidMessage};
    let Some(tls) = tls_error(e) else {
        let ended = matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        );
        return (handshaking && ended).then_some(PeerFailure::Closed);
    };
    Some(match tls {
        rustls::Error::AlertReceived(alert) => {
            let words = alert_words(*alert);
            match alert {
                A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::DecryptError => PeerFailure::RefusedCertificate(words),
                _ => PeerFailure::Alert(words),
            }
        }
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) if handshaking => {
            PeerFailure::NotTls
        }
        other => PeerFailure::Other(other.to_string()),
    })
}

/// A TLS alert in words (RFC 8446's names, spaced).
fn alert_words(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::BadCertificate => "bad certificate".into(),
        A::UnsupportedCertificate => "unsupported certificate".into(),
        A::CertificateRevoked => "certificate revoked".into(),
        A::CertificateExpired => "certificate expired or not yet valid".into(),
        A::CertificateUnknown => "certificate unknown".into(),
        A::UnknownCA => "unknown CA".into(),
        A::AccessDenied => "access denied: it knows another certificate for this server".into(),
        A::DecryptError => "decrypt error: a signature did not verify".into(),
        A::HandshakeFailure => "handshake failure".into(),
        A::ProtocolVersion => "protocol version".into(),
        A::InsufficientSecurity => "insufficient security".into(),
        A::DecodeError => "decode error".into(),
        A::InternalError => "internal error".into(),
        A::UserCanceled => "user canceled".into(),
        other => format!("{other:?}"),
    }
}

/// The SHA-256 fingerprint of a certificate (its DER bytes), as
/// uppercase hex pairs joined by colons (`AB:CD:…`), as OpenSSL prints it.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// The crypto provider every TLS config here uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a client decides to trust a server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// The system's trusted roots; a certificate they do not vouch for
    /// (self-signed, unknown issuer) is trusted on first use, remembered in
    /// the known-servers file and refused if it changes later.
    SystemOrKnown {
        /// The known-servers file (created on first use).
        known_servers: PathBuf,
    },
    /// Only certificates issued by the CAs in this PEM file.
    CaFile(PathBuf),
}

impl Trust {
    /// Reads what this trust needs from disk, before any connection: a
    /// CA file must be readable and hold certificates (a file that is
    /// missing, or a key given as a CA, is said here rather than after the
    /// server was reached). [`connect`] reads it again.
    ///
    /// # Errors
    ///
    /// [`TlsError::CaFile`], as [`connect`] would say it.
    pub fn check(&self) -> Result<(), TlsError> {
        match self {
            Trust::CaFile(path) => ca_roots(path).map(drop),
            Trust::SystemOrKnown { .. } => Ok(()),
        }
    }
}

/// What [`connect`] learned about the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verified {
    /// A CA (the system's or the file's) vouches for it.
    Ca,
    /// Self-signed, and the known-servers file has this fingerprint for
    /// the server.
    Known {
        /// Its SHA-256 fingerprint.
        fingerprint: String,
    },
    /// Self-signed, never seen before: now stored in the known-servers
    /// file. Show the fingerprint so that the user can compare it with the
    /// one the server printed.
    FirstUse {
        /// Its SHA-256 fingerprint.
        fingerprint: String,
    },
}

/// Why a TLS connect failed. Each reads as one line for the user.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The host is no name TLS can check (not a DNS name nor an IP address).
    #[error("'{0}' is not a host name TLS can verify")]
    BadName(String),
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use the CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The known-servers file could not be read or written.
    #[error("cannot use the known-servers file {path}: {source}")]
    KnownServers {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A known server showed another certificate than the one stored.
    #[error(
        "the TLS certificate of {server} has changed (known: {known}, now: {now}); refusing to connect: \
         someone may be intercepting the connection. If the server's key was replaced on purpose, \
         delete the line for {server} in {path}"
    )]
    Changed {
        /// `host:port`.
        server: String,
        /// The fingerprint stored.
        known: String,
        /// The fingerprint shown now.
        now: String,
        /// The known-servers file.
        path: PathBuf,
    },
    /// The certificate could not be verified (with a CA file, or another
    /// fault than an unknown issuer).
    #[error("the server's TLS certificate is not trusted: {}", certificate_fault(.0))]
    Untrusted(rustls::Error),
    /// The peer did not speak TLS (a plaintext imchat server, say).
    #[error("the server did not answer in TLS (is it a plaintext server? connect without TLS)")]
    NotTls,
    /// The TLS handshake failed otherwise.
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    /// The socket failed, closed or timed out during the handshake.
    #[error("TLS handshake failed: {0}")]
    Io(io::Error),
}

/// A TLS client stream, as [`connect`] returns it.
pub type ClientStream = TlsStream<ClientConnection>;

/// Does the TLS handshake as a client on `tcp` (connected) for `host`
/// and `port`, trusting the server as `trust` says, within `timeout`.
/// Nothing of the imchat protocol has been sent when it returns.
///
/// # Errors
///
/// [`TlsError`]: each refusal and failure in one line for the user.
pub fn connect(
    tcp: TcpStream,
    host: &str,
    port: u16,
    trust: &Trust,
    timeout: Duration,
) -> Result<(ClientStream, Verified), TlsError> {
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|_| TlsError::BadName(host.to_owned()))?
        .to_owned();
    let server = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let provider = provider();
    let (config, tofu) = match trust {
        Trust::CaFile(path) => {
            let roots = ca_roots(path)?;
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(TlsError::Handshake)?
                .with_root_certificates(roots)
                .with_no_client_auth();
            (config, None)
        }
        Trust::SystemOrKnown { known_servers } => {
            let known = (known_servers.clone(), server.clone());
            let verifier = Arc::new(SystemOrSelfSigned::new(provider.clone(), known));
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(TlsError::Handshake)?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            (config, Some(verifier))
        }
    };
    let conn = ClientConnection::new(Arc::new(config), name).map_err(TlsError::Handshake)?;
    let stream = TlsStream::new(tcp, conn);
    if let Err(e) = stream.handshake(timeout) {
        // A known server's changed certificate, refused with an alert the
        // server can log (access denied).
        if let Some(changed) = tofu.as_ref().and_then(|v| v.take_changed()) {
            return Err(changed);
        }
        return Err(match tls_error(&e) {
            Some(rustls::Error::InvalidCertificate(_)) => {
                TlsError::Untrusted(tls_error(&e).cloned().expect("matched"))
            }
            Some(rustls::Error::InvalidMessage(_)) => TlsError::NotTls,
            Some(other) => TlsError::Handshake(other.clone()),
            None => TlsError::Io(e),
        });
    }
    let verified = match (trust, tofu) {
        (Trust::SystemOrKnown { known_servers }, Some(verifier)) if verifier.self_signed() => {
            let der = stream
                .lock()
                .peer_certificates()
                .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
                .ok_or(TlsError::Handshake(rustls::Error::NoCertificatesPresented))?;
            check_known(known_servers, &server, &fingerprint(&der))?
        }
        _ => Verified::Ca,
    };
    Ok((stream, verified))
}

/// Why a PEM file could not be read, in words: a file error as the
/// clients' other messages say one ([`io_reason`](crate::io_reason): `no
/// such file or directory`, not `I/O error: No such file or directory (os
/// error 2)`). For a program's own PEM files too (a server's certificate
/// and key).
#[must_use]
pub fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => crate::io_reason(io),
        e => e.to_string(),
    }
}

/// The roots in a PEM file.
fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bad = |reason: String| TlsError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(pem_reason(&e)))?;
    for cert in certs {
        roots
            .add(cert.map_err(|e| bad(pem_reason(&e)))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(roots)
}

/// Looks `server` up in the known-servers file: the same fingerprint is
/// [`Verified::Known`], none is stored now ([`Verified::FirstUse`]), another
/// is [`TlsError::Changed`].
///
/// The file has a line per server: `host:port fingerprint` (the host in
/// any case); `#` starts a comment.
///
/// # Errors
///
/// [`TlsError::Changed`], or [`TlsError::KnownServers`] when the file cannot
/// be read or written.
pub fn check_known(path: &Path, server: &str, now: &str) -> Result<Verified, TlsError> {
    let io_err = |source| TlsError::KnownServers {
        path: path.to_owned(),
        source,
    };
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(e)),
    };
    if let Some(known) = known_entry(&text, server) {
        if known.eq_ignore_ascii_case(now) {
            return Ok(Verified::Known {
                fingerprint: now.to_owned(),
            });
        }
        return Err(TlsError::Changed {
            server: server.to_owned(),
            known: known.to_owned(),
            now: now.to_owned(),
            path: path.to_owned(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err)?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    file.write_all(format!("{sep}{server} {now}\n").as_bytes())
        .map_err(io_err)?;
    Ok(Verified::FirstUse {
        fingerprint: now.to_owned(),
    })
}

/// The fingerprint the known-servers file `text` holds for `server`.
fn known_entry<'a>(text: &'a str, server: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let (Some(key), Some(known)) = (words.next(), words.next()) else {
            return None;
        };
        // Host names (and IPv6 hex digits) are the same in any case:
        // `LOCALHOST:4000` is the server stored as `localhost:4000`.
        (!key.starts_with('#') && key.eq_ignore_ascii_case(server)).then_some(known)
    })
}

/// Verifies with the system's roots; a certificate whose issuer they do
/// not know is accepted here (its handshake signatures are still checked)
/// and marked self-signed, for [`connect`] to check against the
/// known-servers file before anything is sent.
#[derive(Debug)]
struct SystemOrSelfSigned {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    self_signed: Mutex<bool>,
    /// The known-servers file and the server's `host:port` in it: a
    /// self-signed certificate other than the one stored is refused during
    /// the handshake, so that the server hears why (an alert).
    known: (PathBuf, String),
    /// That refusal, for [`connect`] to say.
    changed: Mutex<Option<TlsError>>,
}

impl SystemOrSelfSigned {
    fn new(provider: Arc<CryptoProvider>, known: (PathBuf, String)) -> Self {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::debug!("system root certificates: {e}");
        }
        let (added, _) = roots.add_parsable_certificates(found.certs);
        log::debug!("{added} system root certificates");
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok();
        SystemOrSelfSigned {
            webpki,
            provider,
            self_signed: Mutex::new(false),
            known,
            changed: Mutex::new(None),
        }
    }

    fn take_changed(&self) -> Option<TlsError> {
        self.changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// [`TlsError::Changed`] when the known-servers file holds another
    /// fingerprint for the server than `now` (a file that cannot be read
    /// is said by [`check_known`] after the handshake).
    fn changed(&self, now: &str) -> Option<TlsError> {
        let (path, server) = &self.known;
        let text = fs::read_to_string(path).ok()?;
        let known = known_entry(&text, server)?;
        (!known.eq_ignore_ascii_case(now)).then(|| TlsError::Changed {
            server: server.clone(),
            known: known.to_owned(),
            now: now.to_owned(),
            path: path.clone(),
        })
    }

    fn self_signed(&self) -> bool {
        *self
            .self_signed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the system's roots failing a certificate with `e` means only
/// that they do not vouch for it (no chain to them), as for a self-signed
/// certificate, which trust on first use then takes: an unknown issuer; a
/// certificate that says it is a CA (what `openssl req -x509` makes by
/// default), which webpki refuses before looking for a chain (its error is
/// one of webpki's own, `Other`); or a signature that does not verify
/// against a root whose name it happens to carry (`CN=localhost`). Expiry
/// or a wrong name are of a certificate a root did vouch for: refused.
fn not_vouched_for(e: &CertificateError) -> bool {
    matches!(
        e,
        CertificateError::UnknownIssuer
            | CertificateError::Other(_)
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
    )
}

/// A certificate's fault in words (rustls shows some as debug dumps): for
/// `e` a [`rustls::Error::InvalidCertificate`], else `e` as rustls says it.
pub fn certificate_fault(e: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(c) = e else {
        return e.to_string();
    };
    match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not for this host name".into()
        }
        CertificateError::UnknownIssuer => "no authority this client trusts issued it".into(),
        CertificateError::Revoked => "it was revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not meant for a server".into()
        }
        CertificateError::BadSignature
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "its signature does not verify against the authority it names".into()
        }
        CertificateError::BadEncoding => "it is not a valid certificate".into(),
        CertificateError::Other(_) => {
            "it cannot be used as a server's certificate (is it a CA certificate?)".into()
        }
        _ => "it is not valid".into(),
    }
}

impl ServerCertVerifier for SystemOrSelfSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked = match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        match checked {
            Err(rustls::Error::InvalidCertificate(e)) if not_vouched_for(&e) => {
                if let Some(changed) = self.changed(&fingerprint(end_entity.as_ref())) {
                    *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = Some(changed);
                    return Err(rustls::Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    ));
                }
                *self
                    .self_signed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = true;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_server_is_stored_once_then_matched_and_a_change_refused() {
        let dir = std::env::temp_dir().join(format!("imchat-known-{}", std::process::id()));
        let path = dir.join("sub").join("known_servers");
        let _ = fs::remove_dir_all(&dir);
        let first = check_known(&path, "example:4000", "AA:BB").unwrap();
        assert_eq!(
            first,
            Verified::FirstUse {
                fingerprint: "AA:BB".into()
            }
        );
        assert!(matches!(
            check_known(&path, "example:4000", "aa:bb").unwrap(),
            Verified::Known { .. }
        ));
        // The host in another case is the same server: no second entry.
        assert!(matches!(
            check_known(&path, "EXAMPLE:4000", "AA:BB").unwrap(),
            Verified::Known { .. }
        ));
        let err = check_known(&path, "Example:4000", "CC:DD").unwrap_err();
        assert!(matches!(err, TlsError::Changed { .. }));
        // Another port is another server.
        assert!(matches!(
            check_known(&path, "example:4001", "CC:DD").unwrap(),
            Verified::FirstUse { .. }
        ));
        let err = check_known(&path, "example:4000", "CC:DD").unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, TlsError::Changed { .. }));
        assert!(line.contains("example:4000") && line.contains(&path.display().to_string()));
        assert!(!line.contains('\n'));
        let _ = fs::remove_dir_all(&dir);
    }

    /// A TLS server on loopback with a new self-signed certificate,
    /// running `serve` on its one connection; and a client connected to
    /// it (trusted on first use in a file under `dir`).
    fn pair(
        dir: &Path,
        serve: impl FnOnce(&TlsStream<rustls::ServerConnection>) + Send + 'static,
    ) -> (ClientStream, std::thread::JoinHandle<()>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        pair_with(
            dir,
            made.cert.der().clone(),
            made.signing_key.serialize_der(),
            serve,
        )
    }

    /// As [`pair`], with the server's certificate and key given.
    fn pair_with(
        dir: &Path,
        cert: CertificateDer<'static>,
        key_der: Vec<u8>,
        serve: impl FnOnce(&TlsStream<rustls::ServerConnection>) + Send + 'static,
    ) -> (ClientStream, std::thread::JoinHandle<()>) {
        let key = rustls::pki_types::PrivateKeyDer::try_from(key_der).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            serve(&TlsStream::new(tcp, conn));
        });
        let tcp = TcpStream::connect(addr).unwrap();
        let trust = Trust::SystemOrKnown {
            known_servers: dir.join("known"),
        };
        let (client, verified) = connect(
            tcp,
            "127.0.0.1",
            addr.port(),
            &trust,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(
            matches!(verified, Verified::FirstUse { .. }),
            "{verified:?}"
        );
        (client, server)
    }

    #[test]
    fn megabytes_read_a_few_bytes_at_a_time_arrive_whole() {
        let dir = std::env::temp_dir().join(format!("imchat-tls-pair-{}", std::process::id()));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let (client, server) = pair(&dir, move |s| {
            // The server reads the client's line first (the handshake ends
            // as it reads), then writes megabytes in one go.
            let mut line = [0u8; 5];
            { s }.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"hello");
            { s }.write_all(&sent).unwrap();
            { s }.flush().unwrap();
            s.close_notify();
        });
        { &client }.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match { &client }.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("after {} bytes: {e}", got.len()),
            }
        }
        server.join().unwrap();
        assert!(got == data, "{} bytes of {}", got.len(), data.len());
        let _ = fs::remove_dir_all(&dir);
    }

    /// What `openssl req -x509` makes by default: a self-signed
    /// certificate with `basicConstraints=CA:TRUE`, which webpki refuses
    /// as a server's before it looks for an issuer.
    #[test]
    fn a_self_signed_certificate_that_says_it_is_a_ca_is_trusted_on_first_use() {
        let dir = std::env::temp_dir().join(format!("imchat-tls-ca-{}", std::process::id()));
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (client, server) = pair_with(&dir, cert.der().clone(), key.serialize_der(), |s| {
            let mut line = [0u8; 5];
            { s }.read_exact(&mut line).unwrap();
            s.close_notify();
        });
        { &client }.write_all(b"hello").unwrap();
        server.join().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificate_faults_are_said_in_words() {
        let other = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(io::Error::other("CaUsedAsEndEntity")),
        )));
        for (e, words) in [
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "the server's TLS certificate is not trusted: it has expired",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "the server's TLS certificate is not trusted: no authority this client trusts issued it",
            ),
            (
                other,
                "the server's TLS certificate is not trusted: it cannot be used as a server's certificate (is it a CA certificate?)",
            ),
        ] {
            assert_eq!(TlsError::Untrusted(e).to_string(), words);
        }
    }

    #[test]
    fn a_peers_tls_failure_is_said_in_words() {
        let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let alert = |a| tls(rustls::Error::AlertReceived(a));
        use rustls::AlertDescription as A;
        for (a, words) in [
            (
                A::CertificateExpired,
                "certificate expired or not yet valid",
            ),
            (A::BadCertificate, "bad certificate"),
            (A::UnknownCA, "unknown CA"),
        ] {
            assert_eq!(
                peer_failure(&alert(a), true).unwrap().to_string(),
                format!(
                    "TLS handshake failed: the client refused our certificate (alert: {words})"
                )
            );
        }
        let plain = tls(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(
            peer_failure(&plain, true).unwrap().to_string(),
            "not TLS: the client spoke plaintext to a TLS port"
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(peer_failure(&eof, true), Some(PeerFailure::Closed));
        // After the handshake a cut connection is no TLS matter.
        assert_eq!(peer_failure(&eof, false), None);
        assert_eq!(
            peer_failure(&io::Error::other("boom"), true),
            None,
            "not a TLS error"
        );
    }

    /// A known server whose certificate changed is refused during the
    /// handshake, with an alert: the server hears why.
    #[test]
    fn a_changed_certificate_is_refused_with_an_alert_the_server_hears() {
        let dir = std::env::temp_dir().join(format!("imchat-tls-changed-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let known = dir.join("known");
        fs::write(&known, format!("127.0.0.1:{} AA:BB\n", addr.port())).unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let stream = TlsStream::new(tcp, conn);
            let e = stream.handshake(Duration::from_secs(10)).unwrap_err();
            peer_failure(&e, true)
        });
        let tcp = TcpStream::connect(addr).unwrap();
        let trust = Trust::SystemOrKnown {
            known_servers: known.clone(),
        };
        let err = connect(
            tcp,
            "127.0.0.1",
            addr.port(),
            &trust,
            Duration::from_secs(10),
        )
        .map(|_| ())
        .unwrap_err();
        assert!(matches!(err, TlsError::Changed { .. }), "{err}");
        let heard = server.join().unwrap().expect("a TLS failure");
        assert_eq!(
            heard.to_string(),
            "TLS handshake failed: the client refused our certificate (alert: access denied: it knows another certificate for this server)"
        );
        // The file is left as it was.
        assert_eq!(
            fs::read_to_string(&known).unwrap(),
            format!("127.0.0.1:{} AA:BB\n", addr.port())
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_ca_file_is_checked_without_connecting() {
        let dir = std::env::temp_dir().join(format!("imchat-tls-cacheck-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let missing = Trust::CaFile(dir.join("none.pem")).check().unwrap_err();
        assert!(matches!(missing, TlsError::CaFile { .. }), "{missing}");
        assert!(
            missing
                .to_string()
                .ends_with("none.pem: no such file or directory"),
            "{missing}"
        );
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = dir.join("key.pem");
        fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let err = Trust::CaFile(key).check().unwrap_err().to_string();
        assert!(err.ends_with("no certificate in it"), "{err}");
        let ca = dir.join("ca.pem");
        fs::write(&ca, made.cert.pem()).unwrap();
        Trust::CaFile(ca).check().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fingerprint_is_sha256_in_colon_hex() {
        let f = fingerprint(b"abc");
        assert_eq!(
            f,
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}
