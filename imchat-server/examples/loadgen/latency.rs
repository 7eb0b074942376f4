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
    /// CPU seconds of each process measured (the `pids` of [`run_on`]), in order.
    pub cpu_each: Vec<f64>,
    /// Deliveries in the run (warm-up included).
    pub deliveries: u64,
    /// Over several servers: p50 and p99 of the deliveries whose sender is
    /// connected to another server than their receiver.
    pub cross: Option<(f64, f64)>,
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
/// inside the measured window, and checks each sender's order.
struct Receivers {
    samples: Vec<u64>,
    /// The samples of deliveries between two servers (member `i` is on
    /// server `i % servers`).
    cross: Vec<u64>,
    servers: usize,
    /// Senders.
    s: usize,
    /// Per (member, sender): last sequence number received, at `k * s + j`.
    last: Vec<u64>,
    /// Messages out of order, repeated or malformed.
    errors: u64,
    total: Arc<AtomicU64>,
    window: Arc<(AtomicU64, AtomicU64)>,
}

impl Handler for Receivers {
    fn chat(&mut self, k: usize, p: &[u8], _woke: u64) -> bool {
        // The arrival time of each message, not of the wake-up: the rates
        // are low, and a message late in a long batch waited for the ones
        // before it.
        let now = now_ns();
        match wire::parse_payload(p) {
            Some((j, seq, ts)) if j < self.s && j != k => {
                let last = &mut self.last[k * self.s + j];
                if seq != *last + 1 {
                    self.errors += 1;
                }
                *last = seq;
                let from = self.window.0.load(Ordering::Relaxed);
                let to = self.window.1.load(Ordering::Relaxed);
                if ts >= from && ts < to {
                    let lat = now.saturating_sub(ts);
                    self.samples.push(lat);
                    if j % self.servers != k % self.servers {
                        self.cross.push(lat);
                    }
                }
                self.total.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {} // Redis echoes a sender's own message to its subscription.
            None => self.errors += 1,
        }
        true
    }
}

pub fn run(kind: Kind, addr: SocketAddr, pid: u32, cfg: &Cfg) -> Result<Outcome, String> {
    run_on(kind, &[addr], &[pid], cfg)
}

/// One run with the members spread over the servers at `addrs` (see
/// [`Room::open`]); the CPU of every process in `pids` is measured (their
/// sum is `server_cpu`). Fails when a receiver missed a message, got one
/// twice or out of its sender's order.
pub fn run_on(
    kind: Kind,
    addrs: &[SocketAddr],
    pids: &[u32],
    cfg: &Cfg,
) -> Result<Outcome, String> {
    let s = cfg.senders;
    let total = Arc::new(AtomicU64::new(0));
    // Samples count for messages sent in [from, to), set once the room is open.
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(0)));
    let (room, members) =
        Room::open(kind, addrs, cfg.n, s, false).map_err(|e| format!("joining the room: {e}"))?;
    let sinks = room.sinks(kind).map_err(|e| e.to_string())?;
    let readers = Readers::start(
        kind,
        members,
        sinks,
        Receivers {
            samples: Vec::new(),
            cross: Vec::new(),
            servers: addrs.len().max(1),
            s,
            last: vec![0; cfg.n * s],
            errors: 0,
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
    let cpu_all = || -> Vec<f64> {
        pids.iter()
            .map(|&p| sys::cpu_secs(p).unwrap_or(0.0))
            .collect()
    };
    let cpu0 = cpu_all();
    let wall0 = Instant::now();
    let sent: Vec<u64> = senders.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    let expected = sent.iter().sum::<u64>() * (cfg.n as u64 - 1);
    // An overloaded server drains its backlog late: allow 10 s plus 20 µs
    // per delivery, and report the latencies it reached.
    let drain = Duration::from_secs(10) + Duration::from_nanos(expected * 20_000);
    let deadline = Instant::now() + drain;
    while total.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let cpu_each: Vec<f64> = cpu_all().iter().zip(&cpu0).map(|(b, a)| b - a).collect();
    let server_cpu = cpu_each.iter().sum::<f64>() / wall0.elapsed().as_secs_f64();
    let got = total.load(Ordering::Relaxed);
    let receivers = readers.stop();
    room.close();
    let r = receivers.ok_or("the poller thread panicked")?;
    if got < expected {
        return Err(format!(
            "{got} of {expected} deliveries arrived within {:.0} s",
            drain.as_secs_f64()
        ));
    }
    let incomplete = incomplete(&r.last, &sent, cfg.n);
    if r.errors > 0 || incomplete > 0 || got != expected {
        return Err(format!(
            "{} out-of-order, repeated or malformed messages, {incomplete} (receiver, sender) pairs incomplete; {got} of {expected} deliveries",
            r.errors
        ));
    }
    let cross = (addrs.len() > 1).then(|| {
        let (p50, p99, _, _) = summarize(r.cross);
        (p50, p99)
    });
    let (p50, p99, p999, max) = summarize(r.samples);
    Ok(Outcome {
        p50,
        p99,
        p999,
        max,
        server_cpu,
        cpu_each,
        deliveries: expected,
        cross,
    })
}

/// (Receiver, sender) pairs whose last message is not the sender's last:
/// `last[k * s + j]` against `sent[j]`, for the `n` receivers.
fn incomplete(last: &[u64], sent: &[u64], n: usize) -> usize {
    let s = sent.len();
    (0..n)
        .flat_map(|k| (0..s).map(move |j| (k, j)))
        .filter(|&(k, j)| j != k && last[k * s + j] != sent[j])
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receivers of `n` members and `s` senders over `servers` servers,
    /// counting every message sent from time 0 on.
    fn receivers(n: usize, s: usize, servers: usize) -> Receivers {
        Receivers {
            samples: Vec::new(),
            cross: Vec::new(),
            servers,
            s,
            last: vec![0; n * s],
            errors: 0,
            total: Arc::new(AtomicU64::new(0)),
            window: Arc::new((AtomicU64::new(0), AtomicU64::new(u64::MAX))),
        }
    }

    #[test]
    fn repeated_and_reordered_messages_are_errors() {
        let mut r = receivers(2, 1, 1);
        let ts = now_ns();
        assert!(r.chat(1, &wire::payload(0, 1, ts), 0));
        assert_eq!(r.errors, 0);
        // The same message again, then one skipped.
        assert!(r.chat(1, &wire::payload(0, 1, ts), 0));
        assert!(r.chat(1, &wire::payload(0, 3, ts), 0));
        assert_eq!(r.errors, 2);
        // A sender's own message is not a delivery.
        assert!(r.chat(0, &wire::payload(0, 4, ts), 0));
        assert_eq!((r.errors, r.total.load(Ordering::Relaxed)), (2, 3));
    }

    #[test]
    fn only_deliveries_between_two_servers_are_cross_server() {
        // Members 0 and 2 on server 0, member 1 on server 1.
        let mut r = receivers(3, 1, 2);
        let ts = now_ns();
        assert!(r.chat(2, &wire::payload(0, 1, ts), 0));
        assert_eq!((r.samples.len(), r.cross.len()), (1, 0));
        assert!(r.chat(1, &wire::payload(0, 1, ts), 0));
        assert_eq!((r.samples.len(), r.cross.len()), (2, 1));
    }

    #[test]
    fn a_receiver_that_missed_a_senders_last_message_is_incomplete() {
        // Two receivers of senders 0 and 1, which sent 5 and 3 messages.
        let sent = [5, 3];
        // Member 0: nothing from itself, 3 from sender 1; member 1: 5 from sender 0.
        assert_eq!(incomplete(&[0, 3, 5, 0], &sent, 2), 0);
        assert_eq!(incomplete(&[0, 2, 5, 0], &sent, 2), 1);
        assert_eq!(incomplete(&[0, 2, 4, 0], &sent, 2), 2);
    }
}
