//! The generator's connection: a plaintext socket, or TLS (imchat-core's
//! client stream) to a server started with a certificate. Clones share one
//! socket and one TLS session, as `TcpStream::try_clone` shares a socket,
//! so the poller reads a member while its sender writes.
//!
//! Which addresses speak TLS is registered by whoever started the server
//! ([`TlsServer`]), so that the fan-out and latency code connects as before.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use imchat_core::blocking::tls::{self, Stream, Trust};

/// Servers that speak TLS, with the CA file that vouches for them.
static TLS_SERVERS: Mutex<Vec<(SocketAddr, PathBuf)>> = Mutex::new(Vec::new());

/// While alive, connections to `addr` use TLS, trusting only `ca`.
pub struct TlsServer(SocketAddr);

impl TlsServer {
    pub fn register(addr: SocketAddr, ca: PathBuf) -> TlsServer {
        servers().push((addr, ca));
        TlsServer(addr)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        servers().retain(|(a, _)| *a != self.0);
    }
}

fn servers() -> std::sync::MutexGuard<'static, Vec<(SocketAddr, PathBuf)>> {
    TLS_SERVERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection, plaintext or TLS.
#[derive(Debug, Clone)]
pub struct Sock {
    s: Stream,
    /// The socket's non-blocking flag (shared by clones, as the flag is).
    nonblocking: Arc<AtomicBool>,
}

impl Sock {
    pub fn plain(tcp: TcpStream) -> Sock {
        Sock {
            s: Stream::plain(tcp),
            nonblocking: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Connects to `addr`; with TLS when a [`TlsServer`] registered it,
    /// the handshake done before this returns (blocking).
    pub fn connect(addr: SocketAddr) -> io::Result<Sock> {
        let tcp = TcpStream::connect(addr)?;
        let ca = servers()
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, ca)| ca.clone());
        let Some(ca) = ca else {
            return Ok(Sock::plain(tcp));
        };
        let host = addr.ip().to_string();
        let (tls, _) = tls::connect(
            tcp,
            &host,
            addr.port(),
            &Trust::CaFile(ca),
            Duration::from_secs(10),
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Sock {
            s: Stream::tls(tls),
            nonblocking: Arc::new(AtomicBool::new(false)),
        })
    }

    #[cfg(test)]
    /// The address of the peer.
    #[cfg(test)]
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.tcp().peer_addr()
    }

    #[cfg(test)]
    pub fn is_tls(&self) -> bool {
        self.s.is_tls()
    }

    pub fn try_clone(&self) -> io::Result<Sock> {
        Ok(self.clone())
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.s.tcp().set_nonblocking(on)?;
        self.nonblocking.store(on, Ordering::Relaxed);
        Ok(())
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.s.tcp().set_nodelay(on)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.s.tcp().set_read_timeout(t)
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.s.tcp().shutdown(how)
    }

    /// Waits (up to 100 ms) until the socket takes more bytes.
    fn wait_writable(&self) {
        let mut fd = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `fd` is one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut fd, 1, 100) };
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        self.s.tcp().as_raw_fd()
    }
}

impl Read for Sock {
    /// Plaintext: one read of the socket. TLS on a non-blocking socket:
    /// reads until `buf` is full or the socket has nothing more, because
    /// the TLS stream keeps bytes it read from the socket but has not
    /// decrypted yet, which a level-triggered epoll would never report;
    /// a short read thus means the socket is drained, as it does for a
    /// plain socket.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.s.is_tls() || !self.nonblocking.load(Ordering::Relaxed) {
            return self.s.read(buf);
        }
        let mut n = 0;
        while n < buf.len() {
            match self.s.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

impl Write for Sock {
    /// TLS: the records of what was taken are all written before this
    /// returns (waiting for room in the socket if need be): the TLS stream
    /// would otherwise keep some until the next write, which in a closed
    /// loop may never come.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.s.write(buf)?;
        if self.s.is_tls() {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.s.flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.wait_writable();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imchat_core::blocking::tls::{provider, rustls};
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::net::TcpListener;

    /// A TLS server on loopback sends 400 kB at once; the client reads it
    /// only when its socket is readable.
    #[test]
    fn a_non_blocking_tls_read_drains_what_the_stream_buffered() {
        let dir = std::env::temp_dir().join(format!("loadgen-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ca = dir.join("cert.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let s = tls::TlsStream::new(tcp, conn);
            s.handshake(Duration::from_secs(10)).unwrap();
            // 40 records of 10 kB in one go: more than one socket read of
            // the client's TLS stream holds.
            (&s).write_all(&vec![7u8; 400_000]).unwrap();
            (&s).flush().unwrap();
            let mut b = [0u8; 1];
            let _ = (&s).read(&mut b);
        });
        let _reg = TlsServer::register(addr, ca);
        let mut c = Sock::connect(addr).unwrap();
        assert!(c.is_tls());
        c.set_nonblocking(true).unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 20];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got < 400_000 && std::time::Instant::now() < deadline {
            // Read only when the socket says so, as the poller does: bytes
            // left in the TLS stream after a short read would never be.
            let mut fd = libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the call.
            let ready = unsafe { libc::poll(&mut fd, 1, 2000) };
            assert!(ready > 0, "socket idle with {got} of 400000 bytes read");
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, 400_000);
        c.shutdown(Shutdown::Both).unwrap();
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
