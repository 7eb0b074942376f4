//! One thread that reads every member's socket through epoll. A thread per
//! receiver costs a context switch per wake-up, which on one core caps the
//! generator far below what the servers deliver; one epoll loop reads many
//! messages per system call instead.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::room::now_ns;
use crate::wire::{self, Kind, Member, Pumped};

/// What a receiver does with what its socket brings.
pub trait Handler: Send + 'static {
    /// One chat payload; false to stop reading this socket.
    fn chat(&mut self, payload: &[u8]) -> bool;
    /// The socket ended (end of stream or error) before the run was stopped.
    fn closed(&mut self) {}
}

/// A room's members read by one poller thread.
pub struct Readers<H> {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<H>>,
}

impl<H: Handler> Readers<H> {
    /// Starts reading `members`, member `i` with `handler(i)`, and returns
    /// once the join announcements have been read (waiting a minute at most).
    pub fn start(
        kind: Kind,
        members: Vec<Member>,
        mut handler: impl FnMut(usize) -> H,
    ) -> Result<Self, String> {
        let members = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, handler(i)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(AtomicU64::new(now_ns()));
        let thread = spawn(kind, members, stop.clone(), activity.clone())
            .map_err(|e| format!("poller: {e}"))?;
        wait_quiet(
            &activity,
            Duration::from_millis(300),
            Duration::from_secs(60),
        );
        Ok(Readers { stop, thread })
    }

    /// Stops reading and returns the handlers.
    pub fn stop(self) -> Vec<H> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or_default()
    }
}

/// Reads `members` on one thread until `stop`; returns the handlers.
/// `activity` holds the time ([`now_ns`]) of the last read that brought bytes.
fn spawn<H: Handler>(
    kind: Kind,
    members: Vec<(Member, H)>,
    stop: Arc<AtomicBool>,
    activity: Arc<AtomicU64>,
) -> io::Result<JoinHandle<Vec<H>>> {
    // SAFETY: epoll_create1 takes no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ep` is a new descriptor that nothing else owns; the OwnedFd closes it once.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut items: Vec<(TcpStream, wire::RecvBuf, H, bool)> = Vec::with_capacity(members.len());
    for (k, (m, h)) in members.into_iter().enumerate() {
        m.stream.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: k as u64,
        };
        let fd = m.stream.as_raw_fd();
        // SAFETY: both descriptors are open for the call and `ev` is a valid event.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        items.push((m.stream, m.rb, h, true));
    }
    thread::Builder::new()
        .name("poller".into())
        .stack_size(1 << 20)
        .spawn(move || {
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
            let epfd = ep.as_raw_fd();
            // Messages buffered before the poller started.
            for (s, rb, h, open) in &mut items {
                pump_one(kind, s, rb, h, open, &stop, epfd);
            }
            while !stop.load(Ordering::Acquire) {
                let max = events.len() as i32;
                // SAFETY: `events` has room for `max` entries, which the kernel fills.
                let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), max, 50) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    break;
                }
                if n > 0 {
                    activity.store(now_ns(), Ordering::Relaxed);
                }
                for ev in &events[..n as usize] {
                    let k = ev.u64 as usize;
                    let (s, rb, h, open) = &mut items[k];
                    pump_one(kind, s, rb, h, open, &stop, epfd);
                }
            }
            drop(ep);
            items.into_iter().map(|(_, _, h, _)| h).collect()
        })
}

fn pump_one<H: Handler>(
    kind: Kind,
    s: &mut TcpStream,
    rb: &mut wire::RecvBuf,
    h: &mut H,
    open: &mut bool,
    stop: &AtomicBool,
    ep: RawFd,
) {
    if !*open {
        return;
    }
    let r = wire::pump(kind, s, rb, |p| h.chat(p));
    if !matches!(r, Ok(Pumped::Open)) {
        *open = false;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: both descriptors are open (the poller thread owns the epoll
        // one until it returns) and `ev` is a valid event (ignored for DEL).
        unsafe {
            libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, s.as_raw_fd(), &mut ev);
        }
        if !stop.load(Ordering::Acquire) {
            h.closed();
        }
    }
}

/// Waits until `activity` is `quiet` old (the join announcements have been
/// read), for at most `cap`.
fn wait_quiet(activity: &AtomicU64, quiet: Duration, cap: Duration) {
    let deadline = Instant::now() + cap;
    while now_ns().saturating_sub(activity.load(Ordering::Relaxed)) < quiet.as_nanos() as u64
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
}
