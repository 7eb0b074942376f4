//! Scenario 1 (fan-out throughput) and scenario 6 (the same with one member
//! that never reads): N members, `senders` of them sending 64-byte
//! broadcasts, closed-loop with a window per sender (for a fixed time) or
//! as one open burst (a fixed count). Every receiver checks per-sender
//! order and, at the end, that it got every message of every sender; the
//! figure is deliveries per second from the first send to the last delivery.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::{self, Thread};
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
    /// Each sender writes all its messages at once.
    Burst,
}

impl Flow {
    pub fn label(self) -> String {
        match self {
            Flow::Window(w) => format!("W = {w}"),
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
    pub gen_cpu: f64,
    pub server_hwm_kib: f64,
    pub slow_dropped: Option<bool>,
}

struct Shared {
    /// Receivers that each message must reach (the members but its sender).
    need: u32,
    window: bool,
    ring: Vec<[AtomicU32; RING]>,
    /// Per sender: highest sequence number received by every member.
    delivered: Vec<AtomicU64>,
    threads: Vec<OnceLock<Thread>>,
    /// Deliveries so far, all receivers together.
    total: AtomicU64,
    /// Receivers whose stream ended before the run was stopped.
    broken: AtomicUsize,
}

/// One member's receiving side: checks order, counts, and reports when a
/// message has reached every member (which opens its sender's window).
struct Receiver {
    i: usize,
    /// Per sender: last sequence number received.
    last: Vec<u64>,
    errors: u64,
    last_ns: u64,
    sh: Arc<Shared>,
}

impl Handler for Receiver {
    fn chat(&mut self, p: &[u8]) -> bool {
        let sh = &*self.sh;
        let Some((j, seq, _)) = wire::parse_payload(p) else {
            self.errors += 1;
            return true;
        };
        if j >= self.last.len() || j == self.i {
            return true; // Redis echoes a sender's own message to its subscription.
        }
        if seq != self.last[j] + 1 {
            self.errors += 1;
        }
        self.last[j] = seq;
        self.last_ns = now_ns();
        sh.total.fetch_add(1, Ordering::Relaxed);
        if sh.window {
            let slot = &sh.ring[j][(seq % RING as u64) as usize];
            if slot.fetch_add(1, Ordering::AcqRel) + 1 == sh.need {
                sh.delivered[j].fetch_max(seq, Ordering::AcqRel);
                if let Some(t) = sh.threads[j].get() {
                    t.unpark();
                }
            }
        }
        true
    }

    fn closed(&mut self) {
        self.sh.broken.fetch_add(1, Ordering::AcqRel);
    }
}

/// One run against a server already started at `addr` (process `pid`).
pub fn run(kind: Kind, addr: SocketAddr, pid: u32, cfg: &Cfg) -> Result<Outcome, String> {
    let s = cfg.senders;
    let sh = Arc::new(Shared {
        need: (cfg.n - 1) as u32,
        window: matches!(cfg.flow, Flow::Window(_)),
        ring: (0..s)
            .map(|_| std::array::from_fn(|_| AtomicU32::new(0)))
            .collect(),
        delivered: (0..s).map(|_| AtomicU64::new(0)).collect(),
        threads: (0..s).map(|_| OnceLock::new()).collect(),
        total: AtomicU64::new(0),
        broken: AtomicUsize::new(0),
    });
    let (mut room, members) =
        Room::open(kind, addr, cfg.n, s, cfg.slow).map_err(|e| format!("joining the room: {e}"))?;
    let readers = Readers::start(kind, members, |i| Receiver {
        i,
        last: vec![0; s],
        errors: 0,
        last_ns: 0,
        sh: sh.clone(),
    })?;

    // The senders start together; closed-loop senders send until `until`.
    let start = Arc::new(Barrier::new(s + 1));
    let until = Arc::new(AtomicU64::new(u64::MAX));
    let quit = Arc::new(AtomicBool::new(false));
    let senders = room.spawn_senders(|j, mut w| {
        let (sh, start, until, quit) = (sh.clone(), start.clone(), until.clone(), quit.clone());
        let (flow, burst) = (cfg.flow, cfg.burst);
        move || -> u64 {
            let _ = sh.threads[j].set(thread::current());
            let mut buf = Vec::new();
            if flow == Flow::Burst {
                let ts = now_ns();
                for seq in 1..=burst {
                    wire::push_frame(kind, &mut buf, &wire::payload(j, seq, ts));
                }
            }
            start.wait();
            match flow {
                Flow::Burst => {
                    if w.write_all(&buf).is_ok() {
                        burst
                    } else {
                        0
                    }
                }
                Flow::Window(win) => {
                    let mut next = 1u64;
                    while now_ns() < until.load(Ordering::Relaxed) && !quit.load(Ordering::Relaxed)
                    {
                        let upto = sh.delivered[j].load(Ordering::Acquire) + win;
                        if next > upto {
                            thread::park_timeout(Duration::from_millis(10));
                            continue;
                        }
                        buf.clear();
                        let ts = now_ns();
                        for seq in next..=upto {
                            sh.ring[j][(seq % RING as u64) as usize].store(0, Ordering::Release);
                            wire::push_frame(kind, &mut buf, &wire::payload(j, seq, ts));
                        }
                        if w.write_all(&buf).is_err() {
                            break;
                        }
                        next = upto + 1;
                    }
                    next - 1
                }
            }
        }
    })?;

    let cpu0 = sys::cpu_secs(pid).unwrap_or(0.0);
    let gen0 = sys::self_cpu_secs();
    let wall0 = Instant::now();
    let t0 = now_ns();
    until.store(t0 + cfg.duration.as_nanos() as u64, Ordering::Relaxed);
    start.wait();
    // Closed loop: the senders stop by themselves; a burst is written at once.
    let guard = Instant::now() + cfg.duration + Duration::from_secs(30);
    let mut sent = Vec::new();
    for h in senders {
        while !h.is_finished() && Instant::now() < guard {
            thread::sleep(Duration::from_millis(5));
        }
        if !h.is_finished() {
            quit.store(true, Ordering::Relaxed);
            room.close();
        }
        sent.push(h.join().unwrap_or(0));
    }
    let expected: u64 = sent.iter().sum::<u64>() * (cfg.n as u64 - 1);
    // Every delivery must arrive; allow 5 s plus 50 µs per delivery (a
    // server slower than 20,000 deliveries/s fails the run).
    let timeout = Duration::from_secs(5) + Duration::from_nanos(expected * 50_000);
    let deadline = Instant::now() + timeout;
    while sh.total.load(Ordering::Relaxed) < expected
        && sh.broken.load(Ordering::Acquire) == 0
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(1));
    }
    let wall = wall0.elapsed().as_secs_f64();
    let server_cpu = (sys::cpu_secs(pid).unwrap_or(0.0) - cpu0) / wall;
    let gen_cpu = (sys::self_cpu_secs() - gen0) / wall;
    let slow_dropped = room.slow_was_dropped();
    let server_hwm_kib = sys::hwm_kib(pid).unwrap_or(0) as f64;
    let receivers = readers.stop();
    room.close();
    let total = sh.total.load(Ordering::Acquire);
    let broken = sh.broken.load(Ordering::Acquire);
    if broken > 0 {
        return Err(format!(
            "{broken} receiver(s) lost their connection; {total} of {expected} deliveries"
        ));
    }
    let mut errors = 0;
    let mut missing = 0;
    let mut last_ns = 0;
    for r in &receivers {
        errors += r.errors;
        last_ns = last_ns.max(r.last_ns);
        for (j, &n) in sent.iter().enumerate() {
            if j != r.i && r.last[j] != n {
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
    if errors > 0 || missing > 0 || total != expected {
        return Err(format!(
            "{errors} out-of-order or malformed messages, {missing} (receiver, sender) pairs incomplete; {total} of {expected} deliveries"
        ));
    }
    let secs = (last_ns - t0) as f64 / 1e9;
    Ok(Outcome {
        rate: expected as f64 / secs,
        deliveries: expected,
        server_cpu,
        gen_cpu,
        server_hwm_kib,
        slow_dropped,
    })
}
