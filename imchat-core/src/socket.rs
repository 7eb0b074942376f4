//! Socket settings that keep chat responsive beside file data.
//!
//! Control frames overtake file chunks in the [`Outbox`](crate::Outbox),
//! but not the bytes already handed to the kernel: a chat line written
//! behind megabytes of file data in the sender's send buffer waits until
//! they are sent. Linux autotunes that buffer to several MiB on a fast
//! link, so the unsent part is bounded here (`TCP_NOTSENT_LOWAT`).

use std::io;
use std::net::TcpStream;

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
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn the_unsent_limit_is_set_on_the_socket() {
        let (a, _b) = pair();
        assert!(limit_unsent(&a, 96 * 1024).unwrap());
        let got = sys::get_int(&a, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT).unwrap();
        assert_eq!(got, 96 * 1024);
    }
}
