//! Scenario 3: many connected, idle clients. Server RSS per connection
//! (RSS after minus RSS of the fresh server, over N) and the time to
//! connect them all. The clients read what the server sends them (the join
//! announcements) from one polling thread, as idle but live clients would.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::room::now_ns;
use crate::sys;
use crate::wire::{self, Kind};

/// Threads that connect clients in parallel.
const CONNECTORS: usize = 4;

#[derive(Debug, Clone)]
pub struct Outcome {
    pub fresh_kib: f64,
    pub after_kib: f64,
    pub per_conn_kib: f64,
    pub connect_secs: f64,
    pub threads: f64,
}

/// Connects `n` idle clients to a fresh server; returns the figures and the
/// sockets (to be dropped after the server is stopped, so that it does not
/// announce 10,000 departures).
pub fn run(
    kind: Kind,
    addr: SocketAddr,
    pid: u32,
    n: usize,
) -> Result<(Outcome, Vec<TcpStream>), String> {
    thread::sleep(Duration::from_millis(300));
    let fresh = sys::rss_kib(pid).ok_or("cannot read the server's RSS")? as f64;

    let (tx, rx) = mpsc::channel::<TcpStream>();
    let stop = Arc::new(AtomicBool::new(false));
    let last_data = Arc::new(AtomicU64::new(now_ns()));
    let closed = Arc::new(AtomicUsize::new(0));
    let drainer = {
        let (stop, last_data, closed) = (stop.clone(), last_data.clone(), closed.clone());
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut socks: Vec<(TcpStream, bool)> = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    while let Ok(s) = rx.try_recv() {
                        socks.push((s, true));
                    }
                    let mut any = false;
                    for (s, open) in socks.iter_mut().filter(|(_, o)| *o) {
                        loop {
                            match s.read(&mut buf) {
                                Ok(0) => {
                                    *open = false;
                                    closed.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                Ok(_) => any = true,
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(_) => {
                                    *open = false;
                                    closed.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                    }
                    if any {
                        last_data.store(now_ns(), Ordering::Relaxed);
                    } else if stop.load(Ordering::Acquire) {
                        return socks.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
                    } else {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            })
            .map_err(|e| format!("drainer thread: {e}"))?
    };

    let t0 = Instant::now();
    let mut connectors = Vec::new();
    for c in 0..CONNECTORS {
        let tx = tx.clone();
        connectors.push(
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> io::Result<()> {
                    for k in (c..n).step_by(CONNECTORS) {
                        let m = wire::join(kind, addr, &format!("i{k}"), 4096)?;
                        m.stream.set_nonblocking(true)?;
                        if tx.send(m.stream).is_err() {
                            break;
                        }
                    }
                    Ok(())
                })
                .map_err(|e| format!("connector thread: {e}"))?,
        );
    }
    drop(tx);
    let mut err = None;
    for h in connectors {
        if let Ok(Err(e)) = h.join() {
            err.get_or_insert(e);
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();

    // Wait until the announcements are delivered: 1 s without data (at most 120 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    while now_ns().saturating_sub(last_data.load(Ordering::Relaxed)) < 1_000_000_000
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    let after = sys::rss_kib(pid).unwrap_or(0) as f64;
    let threads = sys::threads(pid).unwrap_or(0) as f64;
    stop.store(true, Ordering::Release);
    let socks = drainer.join().unwrap_or_default();
    if let Some(e) = err {
        return Err(format!("connecting client {} of {n}: {e}", socks.len() + 1));
    }
    let closed = closed.load(Ordering::Relaxed);
    if closed > 0 {
        return Err(format!(
            "the server closed {closed} of {n} idle connections"
        ));
    }
    Ok((
        Outcome {
            fresh_kib: fresh,
            after_kib: after,
            per_conn_kib: (after - fresh) / n as f64,
            connect_secs,
            threads,
        },
        socks,
    ))
}
