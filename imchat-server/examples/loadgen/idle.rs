//! Scenario 3: many connected, idle clients. Server RSS per connection
//! (RSS after minus RSS of the fresh server, over N) and the time to
//! connect them all. The clients read what the server sends them (the join
//! announcements) from one polling thread, as idle but live clients would.

use std::io;
use std::net::SocketAddr;

use crate::conn::Sock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::room::now_ns;
use crate::sys;
use crate::wire::{self, Kind, Member};

/// Threads that connect clients in parallel, each with one handshake in
/// flight. With 4, the time to connect measured the round trip of one
/// handshake on a loaded machine (the server sat at a third of its core),
/// not what the server can take; a join storm (every client of a
/// restarted server coming back) has many handshakes in flight at once.
pub const CONNECTORS: usize = 32;
/// How long the clients sit idle after the join notices stopped flowing
/// before the server's RSS is read.
pub const HOLD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Outcome {
    pub fresh_kib: f64,
    pub after_kib: f64,
    pub per_conn_kib: f64,
    pub connect_secs: f64,
    pub threads: f64,
    /// Clients that completed the handshake (all of them unless connecting
    /// failed or ran past its time cap).
    pub connected: usize,
    /// Why connecting stopped early.
    pub connect_error: Option<String>,
    /// Connections the server closed while they sat idle.
    pub closed: usize,
    /// Seconds from the last Welcome until the join announcements stopped
    /// flowing (None: still flowing when RSS was read, at the cap).
    pub settle_secs: Option<f64>,
}

/// Connects `n` idle clients to a fresh server; returns the figures and the
/// sockets (to be dropped after the server is stopped, so that it does not
/// announce 10,000 departures).
pub fn run(
    kind: Kind,
    addr: SocketAddr,
    pid: u32,
    n: usize,
    connect_cap: Duration,
    settle_cap: Duration,
) -> Result<(Outcome, Vec<Sock>), String> {
    thread::sleep(Duration::from_millis(300));
    let fresh = sys::rss_kib(pid).ok_or("cannot read the server's RSS")? as f64;

    let (tx, rx) = mpsc::channel::<Member>();
    let stop = Arc::new(AtomicBool::new(false));
    let last_data = Arc::new(AtomicU64::new(now_ns()));
    let closed = Arc::new(AtomicUsize::new(0));
    let drainer = {
        let (stop, last_data, closed) = (stop.clone(), last_data.clone(), closed.clone());
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut socks: Vec<(Member, bool)> = Vec::new();
                loop {
                    while let Ok(m) = rx.try_recv() {
                        socks.push((m, true));
                    }
                    let mut any = false;
                    for (m, open) in socks.iter_mut().filter(|(_, o)| *o) {
                        match wire::idle_pump(kind, &mut m.stream, &mut m.rb) {
                            Ok((true, got)) => any |= got,
                            Ok((false, _)) | Err(_) => {
                                *open = false;
                                closed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    if any {
                        last_data.store(now_ns(), Ordering::Relaxed);
                    } else if stop.load(Ordering::Acquire) {
                        return socks.into_iter().map(|(m, _)| m.stream).collect::<Vec<_>>();
                    } else {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            })
            .map_err(|e| format!("drainer thread: {e}"))?
    };

    let t0 = Instant::now();
    let give_up = t0 + connect_cap;
    let failed = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let mut connectors = Vec::new();
    for c in 0..CONNECTORS {
        let (tx, failed, connected) = (tx.clone(), failed.clone(), connected.clone());
        connectors.push(
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> Result<(), String> {
                    for k in (c..n).step_by(CONNECTORS) {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        if Instant::now() >= give_up {
                            failed.store(true, Ordering::Relaxed);
                            return Err(format!("not all connected within {connect_cap:?}"));
                        }
                        let joined = wire::join(kind, addr, &format!("i{k}"), 4096)
                            .and_then(|m| m.stream.set_nonblocking(true).map(|_| m));
                        let m = match joined {
                            Ok(m) => m,
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                let e = if e.kind() == io::ErrorKind::WouldBlock {
                                    "no Welcome within 30 s".to_string()
                                } else {
                                    e.to_string()
                                };
                                return Err(e);
                            }
                        };
                        connected.fetch_add(1, Ordering::Relaxed);
                        if tx.send(m).is_err() {
                            break;
                        }
                    }
                    Ok(())
                })
                .map_err(|e| format!("connector thread: {e}"))?,
        );
    }
    drop(tx);
    let mut connect_error = None;
    for h in connectors {
        if let Ok(Err(e)) = h.join() {
            connect_error.get_or_insert(e);
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connect_end = now_ns();
    let connected = connected.load(Ordering::Relaxed);

    // Wait until the announcements are delivered: 1 s without data (at most `settle_cap`).
    let deadline = Instant::now() + settle_cap;
    let quiet = || now_ns().saturating_sub(last_data.load(Ordering::Relaxed)) >= 1_000_000_000;
    while !quiet() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let settle_secs = quiet().then(|| {
        last_data
            .load(Ordering::Relaxed)
            .saturating_sub(connect_end) as f64
            / 1e9
    });
    // Then hold: the clients sit idle (answering pings) for HOLD, as the
    // issue's bar says, so that what the storm left behind has had time to
    // go (readers parked, queues drained).
    thread::sleep(HOLD);
    let after = sys::rss_kib(pid).unwrap_or(0) as f64;
    let threads = sys::threads(pid).unwrap_or(0) as f64;
    stop.store(true, Ordering::Release);
    let socks = drainer.join().unwrap_or_default();
    if connected == 0 {
        return Err(connect_error.unwrap_or_else(|| "no client connected".into()));
    }
    let closed = closed.load(Ordering::Relaxed);
    Ok((
        Outcome {
            fresh_kib: fresh,
            after_kib: after,
            per_conn_kib: (after - fresh) / connected as f64,
            connect_secs,
            threads,
            connected,
            connect_error,
            closed,
            settle_secs,
        },
        socks,
    ))
}
