//! A room of N members on either server, each with a reader thread, plus
//! the senders' publishing connections: the set-up shared by the fan-out,
//! latency and slow-consumer scenarios.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crate::conn::Sock;
use crate::wire::{self, Kind, Member};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator's epoch: the clock of every timestamp
/// put in a message (senders and receivers are threads of one process).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Receive buffer per member.
pub const RECV_BUF: usize = 64 * 1024;

/// The connections of one room.
pub struct Room {
    /// One handle per member, to shut its socket down at the end.
    pub members: Vec<Sock>,
    /// The senders' publishing connections (index = sender = member index).
    pub pubs: Vec<Sock>,
    /// A member that never reads (slow-consumer scenario).
    pub slow: Option<Sock>,
}

impl Room {
    /// Connects `n` members (`m0`…) and the publishing connections of the
    /// first `senders` of them; returns the members for the poller. Member
    /// `i` (and so sender `i`) connects to `addrs[i % addrs.len()]`: over
    /// several servers, members and senders are spread evenly.
    pub fn open(
        kind: Kind,
        addrs: &[SocketAddr],
        n: usize,
        senders: usize,
        slow: bool,
    ) -> io::Result<(Room, Vec<Member>)> {
        let addr = |i: usize| addrs[i % addrs.len()];
        let mut room = Room {
            members: Vec::with_capacity(n),
            pubs: Vec::with_capacity(senders),
            slow: None,
        };
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let m = wire::join(kind, addr(i), &format!("m{i}"), RECV_BUF)?;
            room.members.push(m.stream.try_clone()?);
            members.push(m);
        }
        if slow {
            let m = wire::join(kind, addr(n), "slow", 4096)?;
            room.slow = Some(m.stream);
        }
        for j in 0..senders {
            room.pubs
                .push(wire::publisher(kind, addr(j), &room.members[j])?);
        }
        Ok((room, members))
    }

    /// The sockets the poller must drain besides the members': Redis's
    /// publishing connections, which get an integer reply per PUBLISH
    /// (imchat's senders publish on their member socket).
    pub fn sinks(&self, kind: Kind) -> io::Result<Vec<Sock>> {
        match kind {
            Kind::Imchat => Ok(Vec::new()),
            Kind::Redis => self.pubs.iter().map(Sock::try_clone).collect(),
        }
    }

    /// Starts one thread per publishing connection (index `j` = sender):
    /// `sender(j, connection)` gives what the thread runs, which returns
    /// how many messages it sent.
    pub fn spawn_senders<F>(
        &self,
        mut sender: impl FnMut(usize, Sock) -> F,
    ) -> Result<Vec<JoinHandle<u64>>, String>
    where
        F: FnOnce() -> u64 + Send + 'static,
    {
        let mut senders = Vec::new();
        for (j, conn) in self
            .pubs
            .iter()
            .filter_map(|p| p.try_clone().ok())
            .enumerate()
        {
            let h = thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(sender(j, conn))
                .map_err(|e| format!("sender thread: {e}"))?;
            senders.push(h);
        }
        Ok(senders)
    }

    /// Shuts every socket down, which ends the reader threads.
    pub fn close(&self) {
        for s in self.members.iter().chain(&self.pubs).chain(&self.slow) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// True when the server closed the never-reading member's connection
    /// (read what it queued until the end of the stream, for up to 3 s).
    pub fn slow_was_dropped(&mut self) -> Option<bool> {
        let s = self.slow.as_mut()?;
        use std::io::Read;
        let deadline = Instant::now() + std::time::Duration::from_secs(3);
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        let mut b = vec![0u8; 256 * 1024];
        while Instant::now() < deadline {
            match s.read(&mut b) {
                Ok(0) => return Some(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(false),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Some(false),
                Err(_) => return Some(true),
            }
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// A stand-in for a Redis that answers each connection's SUBSCRIBE at
    /// once; returns its address and a thread that accepts connections
    /// until `expect` came or 10 s passed, and hands them back open (a
    /// closed one would make the test's `peer_addr` fail).
    fn fake_redis(expect: usize) -> (SocketAddr, thread::JoinHandle<Vec<TcpStream>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let h = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut conns = Vec::new();
            while conns.len() < expect && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n");
                        conns.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            conns
        });
        (addr, h)
    }

    #[test]
    fn members_and_senders_are_spread_evenly_over_the_servers() {
        // 5 members, 3 of them senders, over 2 servers: server 0 has
        // members 0, 2, 4 and the publishers of senders 0 and 2.
        let (a, ha) = fake_redis(5);
        let (b, hb) = fake_redis(3);
        let (room, members) = Room::open(Kind::Redis, &[a, b], 5, 3, false).unwrap();
        assert_eq!((members.len(), room.pubs.len()), (5, 3));
        let peer = |s: &Sock| s.peer_addr().unwrap();
        let on_a: Vec<bool> = room.members.iter().map(|m| peer(m) == a).collect();
        assert_eq!(on_a, [true, false, true, false, true]);
        assert_eq!(room.pubs.iter().filter(|p| peer(p) == a).count(), 2);
        room.close();
        let (ca, cb) = (ha.join().unwrap(), hb.join().unwrap());
        assert_eq!((ca.len(), cb.len()), (5, 3));
    }
}
