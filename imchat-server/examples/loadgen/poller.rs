//! One thread that reads every member's socket through epoll and, in the
//! closed-loop fan-out, also writes the senders' next windows. A thread
//! per receiver (or per sender) costs a context switch per wake-up, which
//! on one core caps the generator far below what the servers deliver; one
//! epoll loop reads many messages per system call and opens a window
//! without waking anyone.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::conn::Sock;
use crate::room::now_ns;
use crate::wire::{self, Kind, Member, Pumped};

/// What the poller does with what the members' sockets bring. One handler
/// serves every member, so that per-delivery bookkeeping needs no atomics.
pub trait Handler: Send + 'static {
    /// One chat payload read by member `k`. `now` is the time ([`now_ns`])
    /// the poller woke up with this data. False to stop reading this socket.
    fn chat(&mut self, k: usize, payload: &[u8], now: u64) -> bool;
    /// Member `k`'s socket ended (end of stream or error) before the run was stopped.
    fn closed(&mut self, _k: usize) {}
    /// Called after every wake-up of the poller, and at the latest after
    /// [`Handler::timeout_ms`]: where a closed loop sends.
    fn round(&mut self, _now: u64) {}
    /// The longest the poller may sleep before the next [`Handler::round`].
    fn timeout_ms(&self) -> i32 {
        50
    }
}

/// A room's members read by one poller thread.
pub struct Readers<H> {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Option<H>>,
}

impl<H: Handler> Readers<H> {
    /// Starts reading `members` with `handler`, and `sinks` (sockets whose
    /// replies are read and dropped: Redis's answers to PUBLISH), and
    /// returns once the join announcements have been read (waiting a minute
    /// at most).
    pub fn start(
        kind: Kind,
        members: Vec<Member>,
        sinks: Vec<Sock>,
        handler: H,
    ) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(AtomicU64::new(now_ns()));
        let thread = spawn(
            kind,
            members,
            sinks,
            handler,
            stop.clone(),
            activity.clone(),
        )
        .map_err(|e| format!("poller: {e}"))?;
        wait_quiet(
            &activity,
            Duration::from_millis(300),
            Duration::from_secs(60),
        );
        Ok(Readers { stop, thread })
    }

    /// Stops reading and returns the handler (None if the poller panicked).
    pub fn stop(self) -> Option<H> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().ok().flatten()
    }
}

/// One socket of the poller: a member (parsed) or a sink (drained).
struct Item {
    stream: Sock,
    rb: wire::RecvBuf,
    member: Option<usize>,
    open: bool,
}

fn add(ep: RawFd, fd: RawFd, key: usize) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: key as u64,
    };
    // SAFETY: both descriptors are open for the call and `ev` is a valid event.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads `members` and `sinks` on one thread until `stop`; returns the handler.
/// `activity` holds the time ([`now_ns`]) of the last wake-up that brought bytes.
fn spawn<H: Handler>(
    kind: Kind,
    members: Vec<Member>,
    sinks: Vec<Sock>,
    mut h: H,
    stop: Arc<AtomicBool>,
    activity: Arc<AtomicU64>,
) -> io::Result<JoinHandle<Option<H>>> {
    // SAFETY: epoll_create1 takes no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ep` is a new descriptor that nothing else owns; the OwnedFd closes it once.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut items: Vec<Item> = Vec::with_capacity(members.len() + sinks.len());
    for (k, m) in members.into_iter().enumerate() {
        m.stream.set_nonblocking(true)?;
        add(ep.as_raw_fd(), m.stream.as_raw_fd(), items.len())?;
        items.push(Item {
            stream: m.stream,
            rb: m.rb,
            member: Some(k),
            open: true,
        });
    }
    for s in sinks {
        s.set_nonblocking(true)?;
        add(ep.as_raw_fd(), s.as_raw_fd(), items.len())?;
        items.push(Item {
            stream: s,
            rb: wire::RecvBuf::new(16 * 1024),
            member: None,
            open: true,
        });
    }
    thread::Builder::new()
        .name("poller".into())
        .stack_size(1 << 20)
        .spawn(move || {
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
            let epfd = ep.as_raw_fd();
            // Messages buffered before the poller started.
            let now = now_ns();
            for it in &mut items {
                pump_one(kind, it, &mut h, now, &stop, epfd);
            }
            while !stop.load(Ordering::Acquire) {
                let max = events.len() as i32;
                let timeout = h.timeout_ms();
                // SAFETY: `events` has room for `max` entries, which the kernel fills.
                let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), max, timeout) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    break;
                }
                // One clock read per wake-up, not one per delivery.
                let now = now_ns();
                if n > 0 {
                    activity.store(now, Ordering::Relaxed);
                }
                for ev in &events[..n as usize] {
                    let it = &mut items[ev.u64 as usize];
                    pump_one(kind, it, &mut h, now, &stop, epfd);
                }
                h.round(now);
            }
            drop(ep);
            Some(h)
        })
}

fn pump_one<H: Handler>(
    kind: Kind,
    it: &mut Item,
    h: &mut H,
    now: u64,
    stop: &AtomicBool,
    ep: RawFd,
) {
    if !it.open {
        return;
    }
    let r = match it.member {
        Some(k) => wire::pump(kind, &mut it.stream, &mut it.rb, |p| h.chat(k, p, now)),
        // A sink: one read per readiness (epoll is level-triggered), dropped.
        None => match it.stream.read(it.rb.spare()) {
            Ok(0) => Ok(Pumped::Closed),
            Ok(_) => Ok(Pumped::Open),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Pumped::Open),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Pumped::Open),
            Err(e) => Err(e),
        },
    };
    if !matches!(r, Ok(Pumped::Open)) {
        it.open = false;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: both descriptors are open (the poller thread owns the epoll
        // one until it returns) and `ev` is a valid event (ignored for DEL).
        unsafe {
            libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, it.stream.as_raw_fd(), &mut ev);
        }
        if let (Some(k), false) = (it.member, stop.load(Ordering::Acquire)) {
            h.closed(k);
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
