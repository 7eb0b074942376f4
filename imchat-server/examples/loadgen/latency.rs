//! Scenario 2: fan-out latency. N members, `senders` of them each sending
//! at a fixed rate; every receiver takes the send timestamp out of each
//! message and records how long delivery took.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::poller::{Handler, Readers};
use crate::report::percentile;
use crate::room::{now_ns, Room};
use crate::sys;
use crate::wire::{self, Kind};

#[derive(Debug, Clone)]
pub struct Cfg {
    pub n: usize,
    pub senders: usize,
    /// Messages per second per sender.
    pub rate: u32,
    /// Sent but not counted, first.
    pub warmup: Duration,
    /// Counted.
    pub measure: Duration,
}

/// Latency percentiles of one run, in milliseconds.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub server_cpu: f64,
}

/// Percentiles of latency samples in nanoseconds, as milliseconds.
pub fn summarize(mut v: Vec<u64>) -> (f64, f64, f64, f64) {
    v.sort_unstable();
    let ms = |x: u64| x as f64 / 1e6;
    (
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.99)),
        ms(percentile(&v, 0.999)),
        ms(v.last().copied().unwrap_or(0)),
    )
}

/// The members' receiving side: records the latency of each message sent
/// inside the measured window.
struct Receivers {
    samples: Vec<u64>,
    total: Arc<AtomicU64>,
    window: Arc<(AtomicU64, AtomicU64)>,
}

impl Handler for Receivers {
    fn chat(&mut self, k: usize, p: &[u8], _woke: u64) -> bool {
        // The arrival time of each message, not of the wake-up: the rates
        // are low, and a message late in a long batch waited for the ones
        // before it.
        let now = now_ns();
        if let Some((j, _, ts)) = wire::parse_payload(p) {
            if j != k {
                let from = self.window.0.load(Ordering::Relaxed);
                let to = self.window.1.load(Ordering::Relaxed);
                if ts >= from && ts < to {
                    self.samples.push(now.saturating_sub(ts));
                }
                self.total.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }
}

pub fn run(kind: Kind, addr: SocketAddr, pid: u32, cfg: &Cfg) -> Result<Outcome, String> {
    let s = cfg.senders;
    let total = Arc::new(AtomicU64::new(0));
    // Samples count for messages sent in [from, to), set once the room is open.
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(0)));
    let (room, members) =
        Room::open(kind, addr, cfg.n, s, false).map_err(|e| format!("joining the room: {e}"))?;
    let sinks = room.sinks(kind).map_err(|e| e.to_string())?;
    let readers = Readers::start(
        kind,
        members,
        sinks,
        Receivers {
            samples: Vec::new(),
            total: total.clone(),
            window: window.clone(),
        },
    )?;

    let base = now_ns() + 300_000_000;
    let from = base + cfg.warmup.as_nanos() as u64;
    let to = from + cfg.measure.as_nanos() as u64;
    window.1.store(to, Ordering::Relaxed);
    window.0.store(from, Ordering::Relaxed);
    let period = 1e9 / f64::from(cfg.rate);
    let senders = room.spawn_senders(|j, mut w| {
        move || -> u64 {
            let mut buf = Vec::with_capacity(128);
            // Senders are spread evenly over one period.
            let first = base as f64 + period * j as f64 / s as f64;
            let mut sent = 0u64;
            loop {
                let at = (first + period * sent as f64) as u64;
                if at >= to {
                    return sent;
                }
                let now = now_ns();
                if at > now {
                    thread::sleep(Duration::from_nanos(at - now));
                }
                buf.clear();
                wire::push_frame(kind, &mut buf, &wire::payload(j, sent + 1, now_ns()));
                if wire::write_all_polled(&mut w, &buf).is_err() {
                    return sent;
                }
                sent += 1;
            }
        }
    })?;
    let cpu0 = sys::cpu_secs(pid).unwrap_or(0.0);
    let wall0 = Instant::now();
    let sent: u64 = senders.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let expected = sent * (cfg.n as u64 - 1);
    // An overloaded server drains its backlog late: allow 10 s plus 20 µs
    // per delivery, and report the latencies it reached.
    let drain = Duration::from_secs(10) + Duration::from_nanos(expected * 20_000);
    let deadline = Instant::now() + drain;
    while total.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let server_cpu = (sys::cpu_secs(pid).unwrap_or(0.0) - cpu0) / wall0.elapsed().as_secs_f64();
    let got = total.load(Ordering::Relaxed);
    let receivers = readers.stop();
    room.close();
    let all = receivers.map(|r| r.samples).unwrap_or_default();
    if got < expected {
        return Err(format!(
            "{got} of {expected} deliveries arrived within 10 s"
        ));
    }
    let (p50, p99, p999, max) = summarize(all);
    Ok(Outcome {
        p50,
        p99,
        p999,
        max,
        server_cpu,
    })
}
