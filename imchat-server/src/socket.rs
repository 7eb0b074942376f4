//! Socket settings that keep chat responsive beside file data.
//!
//! Control frames overtake file chunks in the
//! [`Outbox`](imchat_core::blocking::Outbox),
//! but not the bytes already handed to the kernel: a chat line written
//! behind megabytes of file data in the sender's send buffer waits until
//! they are sent. Linux autotunes that buffer to several MiB on a fast
//! link, so the unsent part is bounded here (`TCP_NOTSENT_LOWAT`).

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imchat_core::blocking::tls::rustls::ServerConnection;
use imchat_core::blocking::tls::TlsStream;
use imchat_core::blocking::{Direct, Frame, PushError};

/// Longest [`write_file_frame`] waits for a full socket without a byte
/// going out before it leaves the rest of its frame to the writer thread.
const DIRECT_PATIENCE: Duration = Duration::from_millis(50);

/// Unsent bytes a server keeps in a connection's send buffer
/// ([`limit_unsent`]): enough to keep the link busy between two writes,
/// little enough that a chat line behind it waits well under a millisecond
/// on a LAN.
pub const SERVER_UNSENT_LIMIT: u32 = 128 * 1024;

/// Lets at most `bytes` of unsent data wait in `stream`'s send buffer: a
/// write blocks (or times out) until the kernel has sent the rest. Returns
/// false where the system has no such setting (then nothing changes).
pub fn limit_unsent(stream: &TcpStream, bytes: u32) -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        sys::set_int(stream, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, bytes)?;
        Ok(true)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    {
        let _ = (stream, bytes);
        Ok(false)
    }
}

/// A client's connection: a plain TCP stream, or TLS over one. Reader
/// and writer threads share it (`&Sock` reads and writes) as they share a
/// `&TcpStream`. The plain case is the stream itself: no lock, no copy.
#[derive(Debug)]
pub enum Sock {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS: rustls behind a lock, the socket read outside it. Boxed: a
    /// plaintext connection does not carry its size (about 1 KiB).
    Tls(Box<TlsStream<ServerConnection>>),
}

impl Sock {
    /// The TCP stream (socket options, `shutdown`, the descriptor).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Sock::Plain(s) => s,
            Sock::Tls(t) => t.tcp(),
        }
    }

    /// The stream when it is plaintext: bytes written to it go to the
    /// peer as they are (`sendfile` may write file data straight to it).
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            Sock::Plain(s) => Some(s),
            Sock::Tls(_) => None,
        }
    }

    /// True while its TLS handshake runs (false for plaintext).
    pub fn tls_handshaking(&self) -> bool {
        matches!(self, Sock::Tls(t) if t.lock().is_handshaking())
    }

    /// Ends our side of the stream after what was written: TLS first says
    /// so (`close_notify`), so that the peer sees a clean end.
    pub fn end_writes(&self) {
        if let Sock::Tls(t) = self {
            t.close_notify();
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Write);
    }
}

impl io::Read for &Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => { s }.read(buf),
            Sock::Tls(t) => { &**t }.read(buf),
        }
    }
}

impl io::Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => { s }.write(buf),
            Sock::Tls(t) => { &**t }.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => { s }.write_vectored(bufs),
            Sock::Tls(t) => { &**t }.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Plain(_) => Ok(()),
            Sock::Tls(t) => { &**t }.flush(),
        }
    }
}

/// A socket written without waiting: when its send buffer is full a write
/// fails at once with `WouldBlock`, whatever the socket's write timeout.
/// For a thread that writes one broadcast to many sockets in turn: a full
/// one is left to its writer thread
/// ([`Outbox::flush`](imchat_core::blocking::Outbox::flush) does that on
/// `WouldBlock`) instead of holding up every receiver after it.
#[derive(Debug, Clone, Copy)]
/// Over TLS the records are written so, and what the socket does not
/// take waits in the TLS stream for the next write or flush.
pub struct NoWait<'a>(pub &'a Sock);

impl io::Write for NoWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0 {
            Sock::Plain(s) => nowait::send(s, bufs),
            Sock::Tls(t) => t.write_with(bufs, &mut RawNoWait(t.tcp())),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0 {
            Sock::Plain(_) => Ok(()),
            Sock::Tls(t) => t.flush_with(&mut RawNoWait(t.tcp())),
        }
    }
}

/// The TCP stream under a TLS stream, written without waiting.
struct RawNoWait<'a>(&'a TcpStream);

impl io::Write for RawNoWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        nowait::send(self.0, &[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        nowait::send(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

mod nowait {
    use std::io::{self, IoSlice};
    use std::net::TcpStream;

    /// `sendmsg` with `MSG_DONTWAIT`.
    #[cfg(unix)]
    pub(super) fn send(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // The kernel takes at most IOV_MAX (1024 on Linux) buffers at once.
        let bufs = &bufs[..bufs.len().min(1024)];
        // SAFETY: a zeroed msghdr is valid (no address, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec on Unix; the kernel only
        // reads the buffers, which live while `bufs` is borrowed.
        msg.msg_iov = bufs.as_ptr().cast_mut().cast();
        msg.msg_iovlen = bufs.len() as _;
        loop {
            // SAFETY: the descriptor is open while `stream` is borrowed and
            // `msg` points to live buffers.
            let rc = unsafe {
                libc::sendmsg(
                    stream.as_raw_fd(),
                    &msg,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match usize::try_from(rc) {
                Ok(n) => return Ok(n),
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Elsewhere: the socket's own write (it waits up to its timeout).
    #[cfg(not(unix))]
    pub(super) fn send(mut stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        use std::io::Write;
        stream.write_vectored(bufs)
    }
}

/// Writes a file chunk `frame` (its first `head` bytes the header, the
/// rest the data read from `file` at `data_at`) to `stream`, with the
/// right to write that
/// [`Outbox::write_direct`](imchat_core::blocking::Outbox::write_direct)
/// gave. On Linux the header goes with `MSG_MORE` and the data with
/// `sendfile`: the kernel takes it from the page cache by reference, which
/// saves copying it through the frame (the frame's copy is only read for
/// its checksum). What cannot be written within 50 ms, or
/// what `sendfile` no longer finds (the file was cut short), is left from
/// the frame's own bytes to the writer thread, so the stream stays whole.
///
/// If the file changed after `frame` was read, the bytes sent are the
/// file's new ones, and the receiver's checksum fails that transfer.
///
/// `Err(PushError::Closed)` when the socket broke (the queue is aborted).
pub fn write_file_frame(
    direct: Direct<'_>,
    stream: &TcpStream,
    file: &File,
    frame: &Frame,
    head: usize,
    data_at: u64,
) -> Result<(), PushError> {
    let total = frame.len();
    let head = head.min(total);
    let mut sent = 0;
    let mut progress = Instant::now();
    while sent < total {
        let written = if sent < head {
            data::send_head(stream, &frame[sent..head])
        } else {
            data::send_data(stream, file, data_at + (sent - head) as u64, &frame[sent..])
        };
        match written {
            // The file ends early: the rest comes from the frame.
            Ok(0) => break,
            Ok(n) => {
                sent += n;
                progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if progress.elapsed() >= DIRECT_PATIENCE {
                    break;
                }
            }
            Err(_) => {
                direct.broken();
                return Err(PushError::Closed);
            }
        }
    }
    match sent {
        _ if sent == total => {}
        0 => direct.leave_rest(frame.clone()),
        _ => direct.leave_rest(Arc::new(frame[sent..].to_vec())),
    }
    Ok(())
}

/// The two writes of [`write_file_frame`].
mod data {
    use std::fs::File;
    use std::io;
    #[cfg(not(target_os = "linux"))]
    use std::io::Write;
    use std::net::TcpStream;

    /// Writes the start of `head`, telling the kernel more follows.
    #[cfg(target_os = "linux")]
    pub(super) fn send_head(stream: &TcpStream, head: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open while `stream` is borrowed, and
        // the kernel reads at most `head.len()` bytes of the live slice.
        let rc = unsafe {
            libc::send(
                stream.as_raw_fd(),
                head.as_ptr().cast(),
                head.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(rc).map_err(|_| io::Error::last_os_error())
    }

    /// Writes the start of `bytes`, the file's data from `offset`: from
    /// the file by reference. 0 if the file ends before `offset`.
    #[cfg(target_os = "linux")]
    pub(super) fn send_data(
        stream: &TcpStream,
        file: &File,
        offset: u64,
        bytes: &[u8],
    ) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both descriptors are open while borrowed, and `off` is a
        // live local the kernel updates.
        let rc =
            unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, bytes.len()) };
        usize::try_from(rc).map_err(|_| io::Error::last_os_error())
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn send_head(mut stream: &TcpStream, head: &[u8]) -> io::Result<usize> {
        stream.write(head)
    }

    /// Elsewhere the data goes from the frame's copy.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn send_data(
        mut stream: &TcpStream,
        _file: &File,
        _offset: u64,
        bytes: &[u8],
    ) -> io::Result<usize> {
        stream.write(bytes)
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
mod sys {
    use std::io;
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;

    /// `setsockopt` with an `int` value.
    pub(super) fn set_int(
        stream: &TcpStream,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: the descriptor is open for as long as `stream` is
        // borrowed, and the option value is a live `c_int` whose exact size
        // is passed along.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `getsockopt` of an `int` value.
    #[cfg(test)]
    pub(super) fn get_int(
        stream: &TcpStream,
        level: libc::c_int,
        name: libc::c_int,
    ) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as above; `value` and `len` are live locals of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(all(
    test,
    any(target_os = "linux", target_os = "android", target_vendor = "apple")
))]
mod tests {
    use super::*;
    use imchat_core::blocking::Outbox;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// A file holding `bytes` after a 4-byte prefix, removed on drop.
    struct TempFile(std::path::PathBuf, File);

    impl TempFile {
        fn new(tag: &str, bytes: &[u8]) -> TempFile {
            use std::io::Write;
            let path = std::env::temp_dir().join(format!(
                "imchat-sendfile-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let mut f = File::create(&path).unwrap();
            f.write_all(b"skip").unwrap();
            f.write_all(bytes).unwrap();
            TempFile(path.clone(), File::open(&path).unwrap())
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A chunk-like frame: a 5-byte head, then `bytes`.
    fn frame_of(bytes: &[u8]) -> Frame {
        let mut frame = b"HEAD:".to_vec();
        frame.extend_from_slice(bytes);
        Arc::new(frame)
    }

    /// Ends the stream: the writer writes what is queued, then the write
    /// side is shut; returns everything `reader` got.
    fn finish(q: &Outbox, a: &TcpStream, reader: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
        q.close();
        q.run_writer(a).unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        reader.join().unwrap()
    }

    fn read_all(mut b: TcpStream) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        })
    }

    #[test]
    fn a_file_frame_arrives_whole_and_in_order() {
        let (a, b) = pair();
        let bytes = data(300_000);
        let file = TempFile::new("whole", &bytes);
        let frame = frame_of(&bytes);
        let q = Outbox::new(1 << 20);
        let reader = read_all(b);
        write_file_frame(q.write_direct().unwrap(), &a, &file.1, &frame, 5, 4).unwrap();
        assert_eq!(q.queued(), 0);
        // The queue is free again for what follows.
        q.push(Arc::new(b"after".to_vec()), true).unwrap();
        let mut want = frame.to_vec();
        want.extend_from_slice(b"after");
        assert!(finish(&q, &a, reader) == want);
    }

    #[test]
    fn what_the_file_no_longer_holds_comes_from_the_frame() {
        let (a, b) = pair();
        let bytes = data(200_000);
        let file = TempFile::new("cut", &bytes);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.0)
            .unwrap()
            .set_len(50_000)
            .unwrap();
        let frame = frame_of(&bytes);
        let q = Outbox::new(1 << 20);
        let reader = read_all(b);
        write_file_frame(q.write_direct().unwrap(), &a, &file.1, &frame, 5, 4).unwrap();
        assert!(finish(&q, &a, reader) == *frame);
    }

    #[test]
    fn a_frame_the_peer_does_not_take_in_time_is_finished_by_the_writer() {
        let (a, b) = pair();
        a.set_write_timeout(Some(Duration::from_millis(2))).unwrap();
        let bytes = data(16 << 20);
        let file = TempFile::new("slow", &bytes);
        let frame = frame_of(&bytes);
        let q = Outbox::new(1 << 20);
        // Nobody reads yet: the socket fills, and the rest is left queued.
        write_file_frame(q.write_direct().unwrap(), &a, &file.1, &frame, 5, 4).unwrap();
        let left = q.queued();
        assert!(left > 0 && left < frame.len(), "{left} bytes left");
        let reader = read_all(b);
        assert!(finish(&q, &a, reader) == *frame);
    }

    #[test]
    fn a_broken_socket_aborts_the_queue() {
        let (a, b) = pair();
        drop(b);
        let bytes = data(1 << 20);
        let file = TempFile::new("broken", &bytes);
        let frame = frame_of(&bytes);
        let q = Outbox::new(1 << 20);
        let deadline = Instant::now() + Duration::from_secs(5);
        // The first writes may still be taken before the reset arrives.
        loop {
            assert!(
                Instant::now() < deadline,
                "the broken socket was never noticed"
            );
            let Some(direct) = q.write_direct() else {
                break;
            };
            if write_file_frame(direct, &a, &file.1, &frame, 5, 4).is_err() {
                break;
            }
        }
        assert!(q.is_closed());
    }

    #[test]
    fn the_unsent_limit_is_set_on_the_socket() {
        let (a, _b) = pair();
        assert!(limit_unsent(&a, 96 * 1024).unwrap());
        let got = sys::get_int(&a, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT).unwrap();
        assert_eq!(got, 96 * 1024);
    }
}
