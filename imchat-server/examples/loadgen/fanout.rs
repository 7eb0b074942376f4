//! Scenario 1 (fan-out throughput) and scenario 6 (the same with one member
//! that never reads): N members, `senders` of them sending 64-byte
//! broadcasts, closed-loop with a window per sender (for a fixed time) or
//! as one open burst (a fixed count). Every receiver checks per-sender
//! order and, at the end, that it got every message of every sender; the
//! figure is deliveries per second from the first send to the last delivery.
//! The closed loop's senders are driven by the poller thread itself, so
//! that the generator pays no thread wake-up per window, for either server.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::poller::{Handler, Readers};
use crate::room::{now_ns, Room};
use crate::sys;
use crate::wire::{self, Kind};

/// Slots of the per-sender ring of receive counters; above any window.
const RING: usize = 64;

/// How the senders send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Closed loop: at most W messages per sender not yet received by every member.
    Window(u64),
    /// The closed loop, and each sender sends no faster than `per_sec`
    /// messages a second: a fixed load, the same for every server setup.
    Paced { window: u64, per_sec: u64 },
    /// Each sender writes all its messages at once.
    Burst,
}

impl Flow {
    pub fn label(self) -> String {
        match self {
            Flow::Window(w) => format!("W = {w}"),
            Flow::Paced { window, per_sec } => {
                format!("W = {window}, {per_sec} msgs/s per sender")
            }
            Flow::Burst => "burst".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cfg {
    pub n: usize,
    pub senders: usize,
    pub flow: Flow,
    /// Closed loop: how long the senders send.
    pub duration: Duration,
    /// Burst: messages per sender.
    pub burst: u64,
    /// Add one member that never reads.
    pub slow: bool,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rate: f64,
    pub deliveries: u64,
    pub server_cpu: f64,
    /// CPU seconds of each process measured (the `pids` of [`run_on`]), in order.
    pub cpu_each: Vec<f64>,
    /// The same, per process, by thread name ([`sys::cpu_secs_by_thread`]).
    pub threads_each: Vec<Vec<(String, f64)>>,
    pub gen_cpu: f64,
    pub server_hwm_kib: f64,
    pub slow_dropped: Option<bool>,
}

/// What the poller publishes for the run's thread.
struct Shared {
    /// Deliveries so far, all receivers together (published every round).
    total: AtomicU64,
    /// Receivers whose stream ended before the run was stopped.
    broken: AtomicUsize,
    /// Closed loop: set by the run to start sending.
    go: AtomicBool,
    /// Closed loop: set by the run to stop sending at once.
    quit: AtomicBool,
    /// Closed loop: when sending started ([`now_ns`]).
    t0: AtomicU64,
    /// Closed loop: sending finished; `sent` holds the counts.
    done: AtomicBool,
    /// Closed loop: messages each sender sent.
    sent: Vec<AtomicU64>,
}

/// Every member's receiving side, and in the closed loop the senders too,
/// all on the poller's thread: checks order, counts, and writes a sender's
/// next messages as soon as its window opens (once a message has reached
/// every member), without waking any other thread.
struct Fanout {
    kind: Kind,
    /// Senders.
    s: usize,
    /// Receivers that each message must reach (the members but its sender).
    need: u32,
    /// Closed loop: the window; None for a burst.
    window: Option<u64>,
    /// Closed loop: the most messages a second per sender, if paced.
    pace: Option<u64>,
    duration_ns: u64,
    /// Per (member, sender): last sequence number received, at `k * s + j`.
    last: Vec<u64>,
    errors: u64,
    last_ns: u64,
    total: u64,
    /// Per sender: a ring of receive counters by sequence number.
    ring: Vec<[u32; RING]>,
    /// Per sender: highest sequence number received by every member.
    delivered: Vec<u64>,
    /// Closed loop: the publishing connections (non-blocking).
    pubs: Vec<crate::conn::Sock>,
    /// Closed loop: per sender, the next sequence number to send.
    next: Vec<u64>,
    /// Closed loop: per sender, bytes written to the buffer but not yet to the socket.
    pending: Vec<Vec<u8>>,
    until: Option<u64>,
    finished: bool,
    sh: Arc<Shared>,
}

impl Handler for Fanout {
    fn chat(&mut self, k: usize, p: &[u8], now: u64) -> bool {
        let Some((j, seq)) = wire::parse_sender_seq(p) else {
            self.errors += 1;
            return true;
        };
        if j >= self.s || j == k {
            return true; // Redis echoes a sender's own message to its subscription.
        }
        let last = &mut self.last[k * self.s + j];
        if seq != *last + 1 {
            self.errors += 1;
        }
        *last = seq;
        self.last_ns = now;
        self.total += 1;
        if self.window.is_some() {
            let slot = &mut self.ring[j][(seq % RING as u64) as usize];
            *slot += 1;
            if *slot == self.need && seq > self.delivered[j] {
                self.delivered[j] = seq;
            }
        }
        true
    }

    fn closed(&mut self, _k: usize) {
        self.sh.broken.fetch_add(1, Ordering::AcqRel);
    }

    fn round(&mut self, now: u64) {
        self.sh.total.store(self.total, Ordering::Release);
        let Some(win) = self.window else { return };
        if self.finished {
            return;
        }
        let until = match self.until {
            Some(u) => u,
            None if self.sh.go.load(Ordering::Acquire) => {
                self.sh.t0.store(now, Ordering::Release);
                *self.until.insert(now + self.duration_ns)
            }
            None => return,
        };
        let stop = now >= until || self.sh.quit.load(Ordering::Acquire);
        // Paced: what each sender may have sent by now since the start.
        let allowed = self.pace.map(|per_sec| {
            let started = until - self.duration_ns;
            1 + (u128::from(now - started) * u128::from(per_sec) / 1_000_000_000) as u64
        });
        let mut flushed = true;
        for j in 0..self.s {
            let upto = allowed.map_or(self.delivered[j] + win, |a| a.min(self.delivered[j] + win));
            if !stop && self.pending[j].is_empty() && self.next[j] <= upto {
                for seq in self.next[j]..=upto {
                    self.ring[j][(seq % RING as u64) as usize] = 0;
                    wire::push_frame(self.kind, &mut self.pending[j], &wire::payload(j, seq, now));
                }
                self.next[j] = upto + 1;
            }
            if !self.pending[j].is_empty() {
                match self.pubs[j].write(&self.pending[j]) {
                    Ok(n) => drop(self.pending[j].drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A broken connection: the run fails on the missing deliveries.
                    Err(_) => self.pending[j].clear(),
                }
            }
            flushed &= self.pending[j].is_empty();
        }
        if stop && flushed {
            self.finished = true;
            for (j, sent) in self.sh.sent.iter().enumerate() {
                sent.store(self.next[j] - 1, Ordering::Release);
            }
            self.sh.done.store(true, Ordering::Release);
        }
    }

    fn timeout_ms(&self) -> i32 {
        // While sending, look at the clock (the end of the run) at least every millisecond.
        if self.window.is_some() && !self.finished {
            1
        } else {
            50
        }
    }
}

/// One run against a server already started at `addr` (process `pid`).
pub fn run(kind: Kind, addr: SocketAddr, pid: u32, cfg: &Cfg) -> Result<Outcome, String> {
    run_on(kind, &[addr], &[pid], cfg)
}

/// One run with the members spread over the servers at `addrs` (see
/// [`Room::open`]); the CPU of every process in `pids` is measured (their
/// sum is `server_cpu`), the first one's memory high-water mark.
pub fn run_on(
    kind: Kind,
    addrs: &[SocketAddr],
    pids: &[u32],
    cfg: &Cfg,
) -> Result<Outcome, String> {
    let s = cfg.senders;
    let sh = Arc::new(Shared {
        total: AtomicU64::new(0),
        broken: AtomicUsize::new(0),
        go: AtomicBool::new(false),
        quit: AtomicBool::new(false),
        t0: AtomicU64::new(0),
        done: AtomicBool::new(false),
        sent: (0..s).map(|_| AtomicU64::new(0)).collect(),
    });
    let (mut room, members) = Room::open(kind, addrs, cfg.n, s, cfg.slow)
        .map_err(|e| format!("joining the room: {e}"))?;
    let (window, pace) = match cfg.flow {
        Flow::Window(w) => (Some(w), None),
        Flow::Paced { window, per_sec } => (Some(window), Some(per_sec)),
        Flow::Burst => (None, None),
    };
    let pubs = if window.is_some() {
        let mut pubs = Vec::with_capacity(s);
        for p in &room.pubs {
            let p = p.try_clone().map_err(|e| e.to_string())?;
            p.set_nonblocking(true).map_err(|e| e.to_string())?;
            pubs.push(p);
        }
        pubs
    } else {
        Vec::new()
    };
    let fan = Fanout {
        kind,
        s,
        need: (cfg.n - 1) as u32,
        window,
        pace,
        duration_ns: cfg.duration.as_nanos() as u64,
        last: vec![0; cfg.n * s],
        errors: 0,
        last_ns: 0,
        total: 0,
        ring: vec![[0; RING]; s],
        delivered: vec![0; s],
        pubs,
        next: vec![1; s],
        pending: (0..s).map(|_| Vec::with_capacity(4096)).collect(),
        until: None,
        finished: false,
        sh: sh.clone(),
    };
    let sinks = room.sinks(kind).map_err(|e| e.to_string())?;
    let readers = Readers::start(kind, members, sinks, fan)?;

    let cpu_all = || -> Vec<f64> {
        pids.iter()
            .map(|&p| sys::cpu_secs(p).unwrap_or(0.0))
            .collect()
    };
    let threads_all = || -> Vec<Vec<(u32, String, f64)>> {
        pids.iter().map(|&p| sys::cpu_secs_by_thread(p)).collect()
    };
    let threads0 = threads_all();
    let cpu0 = cpu_all();
    let gen0 = sys::self_cpu_secs();
    let wall0 = Instant::now();
    // Sending ends by itself; past this the sockets are shut down.
    let guard = Instant::now() + cfg.duration + Duration::from_secs(30);
    let (t0, sent) = match cfg.flow {
        Flow::Window(_) | Flow::Paced { .. } => {
            sh.go.store(true, Ordering::Release);
            while !sh.done.load(Ordering::Acquire) && Instant::now() < guard {
                thread::sleep(Duration::from_millis(5));
            }
            if !sh.done.load(Ordering::Acquire) {
                sh.quit.store(true, Ordering::Release);
                room.close();
            }
            let sent = sh.sent.iter().map(|n| n.load(Ordering::Acquire)).collect();
            (sh.t0.load(Ordering::Acquire), sent)
        }
        Flow::Burst => burst(&room, kind, cfg.burst, guard)?,
    };
    let expected: u64 = sent.iter().sum::<u64>() * (cfg.n as u64 - 1);
    // Every delivery must arrive; allow 5 s plus 50 µs per delivery (a
    // server slower than 20,000 deliveries/s fails the run).
    let timeout = Duration::from_secs(5) + Duration::from_nanos(expected * 50_000);
    let deadline = Instant::now() + timeout;
    while sh.total.load(Ordering::Acquire) < expected
        && sh.broken.load(Ordering::Acquire) == 0
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(1));
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu_each: Vec<f64> = cpu_all().iter().zip(&cpu0).map(|(b, a)| b - a).collect();
    let threads_each = threads_all()
        .iter()
        .zip(&threads0)
        .zip(&cpu_each)
        .map(|((after, before), &total)| used_since(after, before, total))
        .collect();
    let server_cpu = cpu_each.iter().sum::<f64>() / wall;
    let gen_cpu = (sys::self_cpu_secs() - gen0) / wall;
    let slow_dropped = room.slow_was_dropped();
    let server_hwm_kib = pids.first().and_then(|&p| sys::hwm_kib(p)).unwrap_or(0) as f64;
    let fan = readers.stop();
    room.close();
    let fan = fan.ok_or("the poller thread panicked")?;
    let broken = sh.broken.load(Ordering::Acquire);
    let total = fan.total;
    if broken > 0 {
        return Err(format!(
            "{broken} receiver(s) lost their connection; {total} of {expected} deliveries"
        ));
    }
    let mut missing = 0;
    for k in 0..cfg.n {
        for (j, &n) in sent.iter().enumerate() {
            if j != k && fan.last[k * s + j] != n {
                missing += 1;
            }
        }
    }
    if total < expected {
        return Err(format!(
            "{total} of {expected} deliveries within {:.0} s",
            timeout.as_secs_f64()
        ));
    }
    if fan.errors > 0 || missing > 0 || total != expected {
        return Err(format!(
            "{} out-of-order or malformed messages, {missing} (receiver, sender) pairs incomplete; {total} of {expected} deliveries",
            fan.errors
        ));
    }
    let secs = fan.last_ns.saturating_sub(t0) as f64 / 1e9;
    Ok(Outcome {
        rate: expected as f64 / secs,
        deliveries: expected,
        server_cpu,
        cpu_each,
        threads_each,
        gen_cpu,
        server_hwm_kib,
        slow_dropped,
    })
}

/// The burst: one thread per sender writes all its messages at once (a
/// single write each, so threads cost nothing per delivery). Returns the
/// start time and the messages each sender sent.
fn burst(room: &Room, kind: Kind, burst: u64, guard: Instant) -> Result<(u64, Vec<u64>), String> {
    let senders_n = room.pubs.len();
    let start = Arc::new(Barrier::new(senders_n + 1));
    let senders = room.spawn_senders(|j, mut w| {
        let start = start.clone();
        move || -> u64 {
            let mut buf = Vec::new();
            let ts = now_ns();
            for seq in 1..=burst {
                wire::push_frame(kind, &mut buf, &wire::payload(j, seq, ts));
            }
            start.wait();
            if wire::write_all_polled(&mut w, &buf).is_ok() {
                burst
            } else {
                0
            }
        }
    })?;
    let t0 = now_ns();
    start.wait();
    let mut sent = Vec::new();
    for h in senders {
        while !h.is_finished() && Instant::now() < guard {
            thread::sleep(Duration::from_millis(5));
        }
        if !h.is_finished() {
            room.close();
        }
        sent.push(h.join().unwrap_or(0));
    }
    Ok((t0, sent))
}

/// What a thread used that ended between the two readings (its time is
/// in the process's, and in no thread's still there).
pub const ENDED: &str = "(threads that ended)";

/// CPU seconds by thread name ([`sys::thread_group`]) between two readings
/// of a process's threads (a thread new in `after` counts from zero),
/// and under [`ENDED`] what the process used (`total`) beyond them.
fn used_since(
    after: &[(u32, String, f64)],
    before: &[(u32, String, f64)],
    total: f64,
) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let mut counted = 0.0;
    for (tid, name, t) in after {
        let was = before.iter().find(|b| b.0 == *tid).map_or(0.0, |b| b.2);
        let used = (t - was).max(0.0);
        counted += used;
        let name = sys::thread_group(name);
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, u)) => *u += used,
            None => by_name.push((name, used)),
        }
    }
    by_name.push((ENDED.to_string(), (total - counted).max(0.0)));
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn cpu_by_thread_lists_a_busy_named_thread_with_its_time() {
        let busy = thread::Builder::new()
            .name("lg-busy42".into())
            .spawn(|| {
                // 50 ms of CPU (not of wall time: the machine may be busy).
                let start = sys::thread_cpu_secs();
                let mut x = 0u64;
                while sys::thread_cpu_secs() - start < 0.05 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                thread::sleep(Duration::from_secs(2));
            })
            .unwrap();
        // The thread names itself once running: it is listed by that name,
        // with its time (the kernel's ticks are 10 ms), within the wait.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let threads = sys::cpu_secs_by_thread(std::process::id());
            let busy_secs = threads
                .iter()
                .find(|(_, n, _)| n == "lg-busy42")
                .map(|t| t.2);
            if busy_secs.is_some_and(|s| s >= 0.04) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "counted {busy_secs:?} s; threads {threads:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        busy.join().unwrap();
    }

    #[test]
    fn cpu_used_since_is_per_thread_grouped_by_name_and_ended_threads_apart() {
        let t = |tid: u32, name: &str, secs: f64| (tid, name.to_string(), secs);
        // Reader 11 ended during the run; reader 13 and the cluster reader
        // started in it.
        let before = [
            t(1, "flusher", 1.0),
            t(11, "read-c1", 2.0),
            t(12, "read-c2", 3.0),
        ];
        let after = [
            t(1, "flusher", 1.5),
            t(12, "read-c2", 3.25),
            t(13, "read-c3", 0.5),
            t(14, "cluster-read", 0.25),
        ];
        let got = used_since(&after, &before, 2.0);
        let expect = [
            ("flusher", 0.5),
            ("read-c", 0.75),
            ("cluster-read", 0.25),
            (ENDED, 0.5),
        ];
        assert_eq!(got.len(), expect.len(), "{got:?}");
        for ((name, secs), (want_name, want)) in got.iter().zip(expect) {
            assert_eq!(name, want_name);
            assert!((secs - want).abs() < 1e-9, "{name}: {secs} s, not {want}");
        }
        assert_eq!(sys::thread_group("read-c117"), "read-c");
        assert_eq!(sys::thread_group("flusher"), "flusher");
    }

    /// A closed loop of one sender (member 0) and `n - 1` receivers with
    /// window `w`, whose publishing connection is a loopback socket; returns
    /// the handler and the socket's far end.
    fn closed_loop(n: usize, w: u64) -> (Fanout, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (far, _) = listener.accept().unwrap();
        p.set_nonblocking(true).unwrap();
        far.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sh = Arc::new(Shared {
            total: AtomicU64::new(0),
            broken: AtomicUsize::new(0),
            go: AtomicBool::new(true),
            quit: AtomicBool::new(false),
            t0: AtomicU64::new(0),
            done: AtomicBool::new(false),
            sent: vec![AtomicU64::new(0)],
        });
        let fan = Fanout {
            kind: Kind::Redis,
            s: 1,
            need: (n - 1) as u32,
            window: Some(w),
            pace: None,
            duration_ns: 60_000_000_000,
            last: vec![0; n],
            errors: 0,
            last_ns: 0,
            total: 0,
            ring: vec![[0; RING]],
            delivered: vec![0],
            pubs: vec![crate::conn::Sock::plain(p)],
            next: vec![1],
            pending: vec![Vec::new()],
            until: None,
            finished: false,
            sh,
        };
        (fan, far)
    }

    /// Reads `count` PUBLISH commands from `far`; returns their sequence numbers.
    fn published(far: &mut TcpStream, count: usize) -> Vec<u64> {
        let mut one = Vec::new();
        wire::push_frame(Kind::Redis, &mut one, &wire::payload(0, 1, 0));
        let mut b = vec![0u8; one.len() * count];
        far.read_exact(&mut b).unwrap();
        b.chunks(one.len())
            .map(|c| {
                wire::parse_sender_seq(&c[c.len() - 2 - wire::PAYLOAD_LEN..c.len() - 2])
                    .unwrap()
                    .1
            })
            .collect()
    }

    #[test]
    fn a_window_opens_only_when_every_member_has_the_message() {
        let (mut fan, mut far) = closed_loop(3, 2);
        fan.round(1);
        assert_eq!(published(&mut far, 2), [1, 2]);
        // Seq 1 reaches member 1 only: nothing more is sent.
        assert!(fan.chat(1, &wire::payload(0, 1, 0), 5));
        fan.round(5);
        // The sender's own echo does not count; member 2 completes seq 1.
        assert!(fan.chat(0, &wire::payload(0, 1, 0), 6));
        fan.round(6);
        far.set_nonblocking(true).unwrap();
        assert!(
            far.read(&mut [0u8; 1]).is_err(),
            "sent before the window opened"
        );
        far.set_nonblocking(false).unwrap();
        assert!(fan.chat(2, &wire::payload(0, 1, 0), 7));
        fan.round(7);
        assert_eq!(published(&mut far, 1), [3]);
        assert_eq!((fan.total, fan.errors, fan.last_ns), (2, 0, 7));
        assert_eq!(fan.sh.total.load(Ordering::Acquire), 2);
    }

    #[test]
    fn a_paced_sender_sends_no_faster_than_its_rate_even_with_its_window_open() {
        // 1,000 messages a second: one more each millisecond.
        let (mut fan, mut far) = closed_loop(2, 30);
        fan.pace = Some(1_000);
        fan.round(1);
        assert_eq!(published(&mut far, 1), [1]);
        assert!(fan.chat(1, &wire::payload(0, 1, 0), 2));
        fan.round(500_000);
        far.set_nonblocking(true).unwrap();
        assert!(far.read(&mut [0u8; 1]).is_err(), "sent ahead of its pace");
        far.set_nonblocking(false).unwrap();
        // 3 ms on: messages 2 to 4, though the window allows 30.
        fan.round(3_000_001);
        assert_eq!(published(&mut far, 3), [2, 3, 4]);
    }

    #[test]
    fn out_of_order_deliveries_are_errors_and_the_end_publishes_the_counts() {
        let (mut fan, mut far) = closed_loop(2, 4);
        fan.round(1);
        assert_eq!(published(&mut far, 4), [1, 2, 3, 4]);
        assert!(fan.chat(1, &wire::payload(0, 2, 0), 2));
        assert_eq!(fan.errors, 1);
        fan.sh.quit.store(true, Ordering::Release);
        fan.round(3);
        assert!(fan.sh.done.load(Ordering::Acquire));
        assert_eq!(fan.sh.sent[0].load(Ordering::Acquire), 4);
        assert_eq!(fan.timeout_ms(), 50);
    }
}
