//! Scenario 1 (fan-out throughput) and scenario 6 (the same with one member
//! that never reads): N members, `senders` of them sending 64-byte
//! broadcasts, closed-loop with a window per sender or as one open burst.
//! Every receiver checks per-sender order and counts; the figure is
//! deliveries per second from the first send to the last delivery.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::poller::{self, Handler};
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
    /// Messages per sender.
    pub msgs: u64,
    /// Add one member that never reads.
    pub slow: bool,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rate: f64,
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
    remaining: AtomicUsize,
    last_ns: AtomicU64,
    total: AtomicU64,
    order_errors: AtomicU64,
    /// Receivers whose stream ended before they had everything.
    broken: AtomicUsize,
    stop: AtomicBool,
}

/// One member's receiving side: checks order, counts, and reports when a
/// message has reached every member (which opens its sender's window).
struct Receiver {
    i: usize,
    last: Vec<u64>,
    got: u64,
    expected: u64,
    errors: u64,
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
        self.got += 1;
        if sh.window {
            let slot = &sh.ring[j][(seq % RING as u64) as usize];
            if slot.fetch_add(1, Ordering::AcqRel) + 1 == sh.need {
                sh.delivered[j].fetch_max(seq, Ordering::AcqRel);
                if let Some(t) = sh.threads[j].get() {
                    t.unpark();
                }
            }
        }
        if self.got == self.expected {
            sh.last_ns.fetch_max(now_ns(), Ordering::AcqRel);
            sh.remaining.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    fn closed(&mut self) {
        if self.got < self.expected {
            self.sh.broken.fetch_add(1, Ordering::AcqRel);
        }
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
        remaining: AtomicUsize::new(cfg.n),
        last_ns: AtomicU64::new(0),
        total: AtomicU64::new(0),
        order_errors: AtomicU64::new(0),
        broken: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let msgs = cfg.msgs;
    let (mut room, members) =
        Room::open(kind, addr, cfg.n, s, cfg.slow).map_err(|e| format!("joining the room: {e}"))?;
    let handlers = members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let expected = (s - usize::from(i < s)) as u64 * msgs;
            if expected == 0 {
                sh.remaining.fetch_sub(1, Ordering::AcqRel);
            }
            let h = Receiver {
                i,
                last: vec![0; s],
                got: 0,
                expected,
                errors: 0,
                sh: sh.clone(),
            };
            (m, h)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poller::spawn(kind, handlers, stop.clone()).map_err(|e| format!("poller: {e}"))?;

    let start = Arc::new(Barrier::new(s + 1));
    let mut senders = Vec::new();
    for (j, mut w) in room
        .pubs
        .iter()
        .filter_map(|p| p.try_clone().ok())
        .enumerate()
    {
        let sh = sh.clone();
        let start = start.clone();
        let flow = cfg.flow;
        let h = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || -> std::io::Result<()> {
                let _ = sh.threads[j].set(thread::current());
                let mut buf = Vec::new();
                if flow == Flow::Burst {
                    let ts = now_ns();
                    for seq in 1..=msgs {
                        wire::push_frame(kind, &mut buf, &wire::payload(j, seq, ts));
                    }
                }
                start.wait();
                match flow {
                    Flow::Burst => w.write_all(&buf),
                    Flow::Window(win) => {
                        let mut next = 1u64;
                        while next <= msgs && !sh.stop.load(Ordering::Relaxed) {
                            let upto = (sh.delivered[j].load(Ordering::Acquire) + win).min(msgs);
                            if next > upto {
                                thread::park_timeout(Duration::from_millis(10));
                                continue;
                            }
                            buf.clear();
                            let ts = now_ns();
                            for seq in next..=upto {
                                sh.ring[j][(seq % RING as u64) as usize]
                                    .store(0, Ordering::Release);
                                wire::push_frame(kind, &mut buf, &wire::payload(j, seq, ts));
                            }
                            w.write_all(&buf)?;
                            next = upto + 1;
                        }
                        Ok(())
                    }
                }
            })
            .map_err(|e| format!("sender thread: {e}"))?;
        senders.push(h);
    }

    // Let the join announcements drain before measuring.
    thread::sleep(Duration::from_millis(300));
    let expected = s as u64 * msgs * (cfg.n as u64 - 1);
    let timeout = Duration::from_secs(60) + Duration::from_secs_f64(expected as f64 / 200_000.0);
    let cpu0 = sys::cpu_secs(pid).unwrap_or(0.0);
    let gen0 = sys::self_cpu_secs();
    let wall0 = Instant::now();
    start.wait();
    let t0 = now_ns();
    let deadline = wall0 + timeout;
    while sh.remaining.load(Ordering::Acquire) > 0
        && sh.broken.load(Ordering::Acquire) == 0
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(2));
    }
    let wall = wall0.elapsed().as_secs_f64();
    let server_cpu = (sys::cpu_secs(pid).unwrap_or(0.0) - cpu0) / wall;
    let gen_cpu = (sys::self_cpu_secs() - gen0) / wall;
    let finished = sh.remaining.load(Ordering::Acquire) == 0;
    sh.stop.store(true, Ordering::Release);
    let slow_dropped = room.slow_was_dropped();
    let server_hwm_kib = sys::hwm_kib(pid).unwrap_or(0) as f64;
    stop.store(true, Ordering::Release);
    room.close();
    for h in senders {
        let _ = h.join();
    }
    for r in poller.join().unwrap_or_default() {
        sh.total.fetch_add(r.got, Ordering::AcqRel);
        sh.order_errors.fetch_add(r.errors, Ordering::AcqRel);
    }
    let total = sh.total.load(Ordering::Acquire);
    let errors = sh.order_errors.load(Ordering::Acquire);
    let broken = sh.broken.load(Ordering::Acquire);
    if broken > 0 {
        return Err(format!(
            "{broken} receiver(s) lost their connection; {total} of {expected} deliveries"
        ));
    }
    if !finished {
        return Err(format!(
            "timed out after {:.0} s: {total} of {expected} deliveries",
            timeout.as_secs_f64()
        ));
    }
    if errors > 0 || total != expected {
        return Err(format!(
            "{errors} out-of-order or malformed messages; {total} of {expected} deliveries"
        ));
    }
    let secs = (sh.last_ns.load(Ordering::Acquire) - t0) as f64 / 1e9;
    Ok(Outcome {
        rate: expected as f64 / secs,
        server_cpu,
        gen_cpu,
        server_hwm_kib,
        slow_dropped,
    })
}
