//! One thread that reads every member's socket through epoll. A thread per
//! receiver costs a context switch per wake-up, which on one core caps the
//! generator far below what the servers deliver; one epoll loop reads many
//! messages per system call instead.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::room::now_ns;
use crate::wire::{self, Kind, Member, Pumped};

#[cfg(target_arch = "x86_64")]
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

#[cfg(not(target_arch = "x86_64"))]
#[repr(C)]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

extern "C" {
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epfd: i32, events: *mut EpollEvent, maxevents: i32, timeout: i32) -> i32;
    fn close(fd: i32) -> i32;
}

const EPOLL_CLOEXEC: i32 = 0o2000000;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_DEL: i32 = 2;
const EPOLLIN: u32 = 1;
const EPOLLRDHUP: u32 = 0x2000;

/// What a receiver does with what its socket brings.
pub trait Handler: Send + 'static {
    /// One chat payload; false to stop reading this socket.
    fn chat(&mut self, payload: &[u8]) -> bool;
    /// The socket ended (end of stream or error) before the run was stopped.
    fn closed(&mut self) {}
}

struct Epoll(i32);

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe {
            close(self.0);
        }
    }
}

/// Reads `members` on one thread until `stop`; returns the handlers.
/// `activity` holds the time ([`now_ns`]) of the last read that brought bytes.
pub fn spawn<H: Handler>(
    kind: Kind,
    members: Vec<(Member, H)>,
    stop: Arc<AtomicBool>,
    activity: Arc<AtomicU64>,
) -> io::Result<JoinHandle<Vec<H>>> {
    // SAFETY: plain syscall.
    let ep = unsafe { epoll_create1(EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let ep = Epoll(ep);
    let mut items: Vec<(TcpStream, wire::RecvBuf, H, bool)> = Vec::with_capacity(members.len());
    for (k, (m, h)) in members.into_iter().enumerate() {
        m.stream.set_nonblocking(true)?;
        let mut ev = EpollEvent {
            events: EPOLLIN | EPOLLRDHUP,
            data: k as u64,
        };
        // SAFETY: valid epoll fd, socket fd and event for the call.
        if unsafe { epoll_ctl(ep.0, EPOLL_CTL_ADD, m.stream.as_raw_fd(), &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        items.push((m.stream, m.rb, h, true));
    }
    thread::Builder::new()
        .name("poller".into())
        .stack_size(1 << 20)
        .spawn(move || {
            let mut events = vec![EpollEvent { events: 0, data: 0 }; 256];
            // Messages buffered before the poller started.
            for (s, rb, h, open) in items.iter_mut() {
                pump_one(kind, s, rb, h, open, &stop, ep.0);
            }
            while !stop.load(Ordering::Acquire) {
                // SAFETY: the buffer holds `events.len()` entries.
                let n = unsafe { epoll_wait(ep.0, events.as_mut_ptr(), events.len() as i32, 50) };
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
                    let k = ev.data as usize;
                    let (s, rb, h, open) = &mut items[k];
                    pump_one(kind, s, rb, h, open, &stop, ep.0);
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
    ep: i32,
) {
    if !*open {
        return;
    }
    let r = wire::pump(kind, s, rb, |p| h.chat(p));
    if !matches!(r, Ok(Pumped::Open)) {
        *open = false;
        let mut ev = EpollEvent { events: 0, data: 0 };
        // SAFETY: valid fds; removing a registered socket.
        unsafe {
            epoll_ctl(ep, EPOLL_CTL_DEL, s.as_raw_fd(), &mut ev);
        }
        if !stop.load(Ordering::Acquire) {
            h.closed();
        }
    }
}

/// Waits until `activity` is `quiet` old (the join announcements have been
/// read), for at most `cap`.
pub fn wait_quiet(activity: &AtomicU64, quiet: std::time::Duration, cap: std::time::Duration) {
    let deadline = std::time::Instant::now() + cap;
    while now_ns().saturating_sub(activity.load(Ordering::Relaxed)) < quiet.as_nanos() as u64
        && std::time::Instant::now() < deadline
    {
        thread::sleep(std::time::Duration::from_millis(10));
    }
}
