//! The `push` scenario: a file pushed with `/sendfile` by the real
//! imchat-client to a real imchat-client that accepts it at once, beside
//! the download scenario's raw copy (interleaved); and the pusher's chat
//! while it pushes to a slow receiver, beside the same chat with no push.

use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::{split_tcp, FrameReader, FrameWriter};
use imchat_core::{
    ClientEvent, ClientSession, Encode, FileName, Limits, Recipient, RoutedChat, ServerMessage,
    Username, DEFAULT_MAX_FRAME,
};

use crate::download::{PipedClient, RssSampler};
use crate::latency::summarize;
use crate::procs::Bins;
use crate::report::{mbps, mib, ms, ratio, Series, Table};
use crate::room::now_ns;
use crate::wire;
use crate::{sys, Ctx, FILE_NAME};

/// The slow receiver of part 2 takes at most this many bytes per second.
pub const SLOW_BPS: f64 = 8.0 * 1024.0 * 1024.0;
/// Chat lines per second the pusher sends to the third client in part 2.
pub const CHAT_RATE: u32 = 20;
/// How long any client of part 2 waits for the server before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One push through imchat: wall time, CPU seconds of each process, and
/// the server's RSS.
#[derive(Debug, Clone)]
pub struct Push {
    pub secs: f64,
    pub server_cpu: f64,
    pub pusher_cpu: f64,
    pub receiver_cpu: f64,
    pub rss_before_kib: f64,
    pub rss_peak_kib: f64,
}

/// Whether two files hold the same bytes.
fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// imchat-client's line when its push of `name` reached its one receiver.
fn sent_line(name: &str) -> String {
    format!("*** sent {name} to 1 user(s)")
}

/// The start of imchat-client's line when its push of `name` failed (not
/// its progress line, `*** sending NAME: accepted by …`).
fn send_failed_line(name: &str) -> String {
    format!("*** sending {name} failed")
}

/// Pushes `src` (`size` bytes) with the real imchat-client `alice` in
/// piped mode (`/sendfile SRC bob`) to the real imchat-client `bob`, which
/// accepts it at once (`--auto-accept-bytes` = the size); timed from the
/// `/sendfile` line to bob's `*** received` line. The file bob saved must
/// be `src`'s bytes; it is deleted after.
pub fn client_push(
    bins: &Bins,
    addr: SocketAddr,
    pid: u32,
    src: &Path,
    size: u64,
    dir: &Path,
) -> Result<Push, String> {
    let bob_dir = dir.join("bob");
    let alice_dir = dir.join("alice");
    let accept = size.to_string();
    let bob_args: [&std::ffi::OsStr; 4] = [
        "--download-dir".as_ref(),
        bob_dir.as_os_str(),
        "--auto-accept-bytes".as_ref(),
        accept.as_ref(),
    ];
    let alice_args: [&std::ffi::OsStr; 2] = ["--download-dir".as_ref(), alice_dir.as_os_str()];
    let bob = PipedClient::start(bins, "bob", addr, &bob_args, &bob_dir)?;
    let mut alice = None;
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = (|| {
        bob.wait_for("*** connected", &[], 10)?;
        let a = alice.insert(PipedClient::start(
            bins,
            "alice",
            addr,
            &alice_args,
            &alice_dir,
        )?);
        a.wait_for("*** connected", &[], 10)?;
        thread::sleep(Duration::from_millis(200));
        let rss = RssSampler::start(pid);
        let (alice_pid, bob_pid) = (a.pid, bob.pid);
        let cpu = || [pid, alice_pid, bob_pid].map(|p| sys::cpu_secs(p).unwrap_or(f64::NAN));
        let cpu0 = cpu();
        let t0 = Instant::now();
        a.line(&format!("/sendfile {} bob", src.display()))?;
        let done = bob.wait_for(
            &format!("*** received {name} "),
            &["*** transfer of", "*** alice tried to send you"],
            300,
        );
        let secs = t0.elapsed().as_secs_f64();
        let cpu1 = cpu();
        let (before, peak) = rss.stop();
        done?;
        a.wait_for(&sent_line(&name), &[&send_failed_line(&name)], 30)?;
        let got = bob_dir.join("received").join(&name);
        match same_contents(src, &got) {
            Ok(true) => {}
            Ok(false) => return Err(format!("the file bob received differs from {name}")),
            Err(e) => return Err(format!("comparing the file bob received: {e}")),
        }
        Ok(Push {
            secs,
            server_cpu: cpu1[0] - cpu0[0],
            pusher_cpu: cpu1[1] - cpu0[1],
            receiver_cpu: cpu1[2] - cpu0[2],
            rss_before_kib: before,
            rss_peak_kib: peak,
        })
    })();
    if let Some(a) = alice {
        a.quit();
    }
    bob.quit();
    let _ = fs::remove_dir_all(&bob_dir);
    let _ = fs::remove_dir_all(&alice_dir);
    result
}

/// A `ClientSession` client connected and joined: its session, the
/// socket's two halves, and a handle to shut the socket down.
struct Conn {
    s: ClientSession,
    r: FrameReader<TcpStream, ServerMessage>,
    w: FrameWriter<TcpStream>,
    sock: TcpStream,
}

/// Sends what the session has queued.
fn flush(s: &mut ClientSession, w: &mut FrameWriter<TcpStream>) -> Result<(), String> {
    let mut buf = Vec::new();
    while let Some(m) = s.poll_transmit() {
        m.encode(&mut buf);
    }
    if buf.is_empty() {
        return Ok(());
    }
    w.send_frames(&buf)
        .map_err(|e| format!("{}: {e}", s.username()))
}

/// An event that ends a part-2 client.
fn fatal(user: &str, ev: &ClientEvent) -> Option<String> {
    match ev {
        ClientEvent::Refused { reason, .. } => Some(format!("{user}: refused: {reason}")),
        ClientEvent::Shutdown { reason } => Some(format!("{user}: shut down: {reason}")),
        ClientEvent::TimedOut => Some(format!("{user}: the server stopped answering")),
        _ => None,
    }
}

/// Connects `user` and reads until it has joined (its `Welcome`).
fn connect(addr: SocketAddr, user: &str) -> Result<Conn, String> {
    let e = |e: io::Error| format!("{user}: {e}");
    let sock = TcpStream::connect(addr).map_err(e)?;
    sock.set_nodelay(true).map_err(e)?;
    sock.set_read_timeout(Some(READ_TIMEOUT)).map_err(e)?;
    let (r, w) =
        split_tcp::<ServerMessage>(sock.try_clone().map_err(e)?, DEFAULT_MAX_FRAME).map_err(e)?;
    let name = Username::new(user).map_err(|e| e.to_string())?;
    let mut c = Conn {
        s: ClientSession::new(name, Limits::default(), Instant::now()),
        r,
        w,
        sock,
    };
    flush(&mut c.s, &mut c.w)?;
    // The handshake is a few messages: bounded all the same.
    for _ in 0..10_000 {
        if c.s.is_joined() {
            return Ok(c);
        }
        let msg = match c.r.read_message() {
            Ok(Some(m)) => m,
            Ok(None) => return Err(format!("{user}: the server closed the connection")),
            Err(e) => return Err(format!("{user}: {e}")),
        };
        c.s.handle_message(msg, Instant::now());
        while let Some(ev) = c.s.poll_event() {
            if let Some(e) = fatal(user, &ev) {
                return Err(e);
            }
        }
        flush(&mut c.s, &mut c.w)?;
    }
    Err(format!("{user}: no Welcome"))
}

/// The third client: records the latency of each chat line from the
/// pusher stamped in `[from, end)`, until a line stamped at `end` or later.
fn watch(mut c: Conn, from: u64, end: u64) -> Result<Vec<u64>, String> {
    let mut samples = Vec::new();
    // A read blocks at most READ_TIMEOUT, and the pusher's last line
    // ends the loop (or, if it never comes, the check below).
    let give_up = end + 30_000_000_000;
    loop {
        if now_ns() > give_up {
            return Err("watcher: no last chat line within 30 s of the window".into());
        }
        let msg = match c.r.read_message() {
            Ok(Some(m)) => m,
            Ok(None) => return Err("watcher: the server closed the connection".into()),
            Err(e) => return Err(format!("watcher: {e}")),
        };
        c.s.handle_message(msg, Instant::now());
        let mut last = false;
        while let Some(ev) = c.s.poll_event() {
            if let ClientEvent::Chat(RoutedChat { text, .. }) = &ev {
                let now = now_ns();
                if let Some((_, _, ts)) = wire::parse_payload(text.as_bytes()) {
                    if ts >= from && ts < end {
                        samples.push(now.saturating_sub(ts));
                    }
                    last |= ts >= end;
                }
            } else if let Some(e) = fatal("watcher", &ev) {
                return Err(e);
            }
        }
        flush(&mut c.s, &mut c.w)?;
        if last {
            c.s.quit("");
            let _ = flush(&mut c.s, &mut c.w);
            return Ok(samples);
        }
    }
}

/// The slow receiver: accepts the push, stores nothing but counts it,
/// takes at most [`SLOW_BPS`] (it sleeps between reads) and acknowledges
/// what it took (manual acknowledgements, as a client that writes to a
/// slow disk). Returns the bytes taken in `[from, end)`; ends when the push
/// ends (done, failed or cancelled).
fn slow_receive(mut c: Conn, from: u64, end: u64) -> Result<u64, String> {
    c.s.set_manual_acks(true);
    let mut first: Option<Instant> = None;
    let mut taken = 0u64;
    let mut in_window = 0u64;
    let give_up = end + 60_000_000_000;
    loop {
        if now_ns() > give_up {
            return Err("slow receiver: the push did not end within 60 s of the window".into());
        }
        let msg = match c.r.read_message() {
            Ok(Some(m)) => m,
            Ok(None) => return Err("slow receiver: the server closed the connection".into()),
            Err(e) => return Err(format!("slow receiver: {e}")),
        };
        c.s.handle_message(msg, Instant::now());
        let mut over = false;
        while let Some(ev) = c.s.poll_event() {
            match ev {
                ClientEvent::PushOffered { id, .. } => {
                    c.s.accept(id).map_err(|e| format!("slow receiver: {e}"))?;
                }
                ClientEvent::TransferData { id, offset, data } => {
                    let n = data.len() as u64;
                    c.s.stored(id, offset + n);
                    taken += n;
                    let now = now_ns();
                    if now >= from && now < end {
                        in_window += n;
                    }
                    let t0 = *first.get_or_insert_with(Instant::now);
                    let due = Duration::from_secs_f64(taken as f64 / SLOW_BPS);
                    let at = t0 + due;
                    let wait = at.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        // Acknowledge what is taken before pausing, so the
                        // server's credit follows this receiver's pace.
                        c.s.caught_up();
                        flush(&mut c.s, &mut c.w)?;
                        thread::sleep(wait);
                    }
                }
                ClientEvent::TransferDone { .. } | ClientEvent::TransferFailed { .. } => {
                    over = true;
                }
                ev => {
                    if let Some(e) = fatal("slow receiver", &ev) {
                        return Err(e);
                    }
                }
            }
        }
        c.s.caught_up();
        flush(&mut c.s, &mut c.w)?;
        if over {
            c.s.quit("");
            let _ = flush(&mut c.s, &mut c.w);
            return Ok(in_window);
        }
    }
}

/// Part 2's figures for one run.
#[derive(Debug, Clone)]
pub struct ChatOutcome {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
    /// Bytes per second the slow receiver took during the window.
    pub push_bps: f64,
}

/// The pusher: sends [`CHAT_RATE`] chat lines per second to `watcher`
/// from `start` until one stamped at `end` or later went, and meanwhile
/// (when `push`) pushes `size` bytes to `slow` within the server's
/// credit ([`ClientSession::push_room`]); a push still running at the
/// end is cancelled. Messages are read by a thread of their own.
fn pusher(c: Conn, push: bool, size: u64, start: u64, end: u64) -> Result<(), String> {
    let user = "pusher";
    let (tx, rx) = mpsc::channel();
    let reader = {
        let mut r = c.r;
        thread::spawn(move || {
            // Ends on an error: the socket shut down below, or the read
            // timeout.
            while let Ok(Some(m)) = r.read_message() {
                if tx.send(m).is_err() {
                    break;
                }
            }
        })
    };
    let mut s = c.s;
    let mut w = c.w;
    let watcher = Recipient::User(Username::new("watcher").map_err(|e| e.to_string())?);
    let chunk: Vec<u8> = (0..s.chunk_limit())
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let id = if push {
        let name = FileName::new("push.bin").map_err(|e| e.to_string())?;
        let slow = Recipient::User(Username::new("slow").map_err(|e| e.to_string())?);
        Some(
            s.offer(name, size, slow)
                .map_err(|e| format!("{user}: {e}"))?,
        )
    } else {
        None
    };
    let period = 1e9 / f64::from(CHAT_RATE);
    let mut sent = 0u64;
    let mut ended = false;
    let result = (|| -> Result<(), String> {
        let mut k = 0u64;
        let give_up = end + 30_000_000_000;
        loop {
            let now = now_ns();
            if now > give_up {
                return Err(format!("{user}: still running 30 s after the window"));
            }
            let at = start + (period * k as f64) as u64;
            let mut last = false;
            if now >= at {
                let ts = now_ns();
                let line = wire::payload(0, k + 1, ts);
                let text = std::str::from_utf8(&line).map_err(|e| e.to_string())?;
                s.send_chat(watcher.clone(), text)
                    .map_err(|e| format!("{user}: {e}"))?;
                k += 1;
                last = ts >= end;
            }
            if let Some(id) = id.filter(|_| !ended) {
                let mut room = s.push_room(id);
                while room > 0 {
                    let n = room.min(chunk.len() as u64) as usize;
                    s.push_chunk(id, chunk[..n].to_vec())
                        .map_err(|e| format!("{user}: {e}"))?;
                    flush(&mut s, &mut w)?;
                    room -= n as u64;
                    sent += n as u64;
                }
                if sent >= size {
                    s.push_end(id).map_err(|e| format!("{user}: {e}"))?;
                    ended = true;
                }
            }
            flush(&mut s, &mut w)?;
            if last {
                return Ok(());
            }
            let next = start + (period * k as f64) as u64;
            let wait = Duration::from_nanos(next.saturating_sub(now_ns()));
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{user}: the connection ended"))
                }
            };
            for m in first.into_iter().chain(rx.try_iter()) {
                s.handle_message(m, Instant::now());
            }
            while let Some(ev) = s.poll_event() {
                match ev {
                    ClientEvent::PushDone { .. } => ended = true,
                    ClientEvent::PushFailed { reason, .. } => {
                        return Err(format!("{user}: the push failed: {reason}"))
                    }
                    ClientEvent::PushDeclined { reason, .. } => {
                        return Err(format!("{user}: the push was declined: {reason}"))
                    }
                    ev => {
                        if let Some(e) = fatal(user, &ev) {
                            return Err(e);
                        }
                    }
                }
            }
        }
    })();
    if let Some(id) = id.filter(|_| !ended) {
        let _ = s.cancel(id, "the benchmark is over");
    }
    s.quit("");
    let _ = flush(&mut s, &mut w);
    let _ = c.sock.shutdown(Shutdown::Both);
    let _ = reader.join();
    result
}

/// One run of part 2: a watcher, a slow receiver (when `push`) and the
/// pusher, each on its own connection and thread.
pub fn chat_during_push(
    addr: SocketAddr,
    push: bool,
    size: u64,
    warmup: Duration,
    window: Duration,
) -> Result<ChatOutcome, String> {
    let watcher = connect(addr, "watcher")?;
    let watcher_sock = watcher.sock.try_clone().map_err(|e| e.to_string())?;
    let slow = if push {
        Some(connect(addr, "slow")?)
    } else {
        None
    };
    let slow_sock = match &slow {
        Some(c) => Some(c.sock.try_clone().map_err(|e| e.to_string())?),
        None => None,
    };
    let p = connect(addr, "pusher")?;
    let start = now_ns();
    let from = start + warmup.as_nanos() as u64;
    let end = from + window.as_nanos() as u64;
    let watching = thread::spawn(move || watch(watcher, from, end));
    let receiving = slow.map(|c| thread::spawn(move || slow_receive(c, from, end)));
    let pushed = pusher(p, push, size, start, end);
    if pushed.is_err() {
        // No last line is coming and the push may never end: wake the
        // other two from their reads.
        let _ = watcher_sock.shutdown(Shutdown::Both);
        if let Some(s) = &slow_sock {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
    let samples = watching
        .join()
        .unwrap_or_else(|_| Err("watcher panicked".into()));
    let _ = watcher_sock.shutdown(Shutdown::Both);
    let taken = match receiving {
        Some(h) => {
            let r = h
                .join()
                .unwrap_or_else(|_| Err("slow receiver panicked".into()));
            if let Some(s) = &slow_sock {
                let _ = s.shutdown(Shutdown::Both);
            }
            r.map(Some)
        }
        None => Ok(None),
    };
    pushed?;
    let samples = samples?;
    let taken = taken?;
    let n = samples.len();
    let (p50, p99, _, max) = summarize(samples);
    Ok(ChatOutcome {
        p50,
        p99,
        max,
        samples: n,
        push_bps: taken.map_or(f64::NAN, |b| b as f64 / window.as_secs_f64()),
    })
}

/// The scenario: part 1 (throughput) and part 2 (chat while pushing).
pub fn scenario(ctx: &mut Ctx) {
    throughput(ctx);
    chat(ctx);
}

fn throughput(ctx: &mut Ctx) {
    let size = ctx.sizes.file_size;
    let gib = size as f64 / f64::from(1u32 << 30);
    let src = ctx.tmp.join("shared").join(FILE_NAME);
    let dir = ctx.tmp.join("push");
    let _ = fs::create_dir_all(&dir);
    // Wall MB/s (raw, imchat), paired wall ratio, CPU s/GiB (raw sender,
    // raw receiver, server, pusher, receiver), server RSS before and peak.
    let mut f: [Series; 10] = Default::default();
    let runs = ctx.opts.download_runs.unwrap_or(ctx.sizes.download_runs);
    for run in 0..runs {
        eprintln!(
            "push {} MiB, run {} (load average {})",
            size >> 20,
            run + 1,
            sys::loadavg()
        );
        let (raw, ours) = ctx.beside_raw_copy(run, "imchat push", &src, |bins, p| {
            client_push(bins, p.addr, p.pid, &src, size, &dir)
        });
        if let Some(c) = &raw {
            f[0].push(size as f64 / c.secs / 1e6);
            f[3].push(c.sender_cpu / gib);
            f[4].push(c.receiver_cpu / gib);
        }
        if let Some(d) = &ours {
            f[1].push(size as f64 / d.secs / 1e6);
            f[5].push(d.server_cpu / gib);
            f[6].push(d.pusher_cpu / gib);
            f[7].push(d.receiver_cpu / gib);
            f[8].push(d.rss_before_kib / 1024.0);
            f[9].push(d.rss_peak_kib / 1024.0);
            eprintln!(
                "  imchat push {:.0} MB/s, server {:.3} s, pusher {:.3} s, receiver {:.3} s CPU",
                size as f64 / d.secs / 1e6,
                d.server_cpu,
                d.pusher_cpu,
                d.receiver_cpu
            );
        }
        if let (Some(c), Some(d)) = (&raw, &ours) {
            f[2].push(c.secs / d.secs);
        }
    }
    let mut t = Table::new(
        &format!(
            "Push: a {} MiB file with /sendfile, {runs} interleaved runs",
            size >> 20
        ),
        &[
            "transfer",
            "throughput (wall)",
            "vs raw copy (paired, wall)",
            "server (raw: sender) CPU per GiB",
            "pusher CPU per GiB",
            "receiver CPU per GiB",
            "server RSS before",
            "server RSS peak during",
        ],
    );
    let cpu = |v: f64| format!("{v:.3} s");
    t.row(vec![
        "raw TCP copy (sendfile → read/write)".into(),
        f[0].show(mbps),
        "1".into(),
        f[3].show(cpu),
        "".into(),
        f[4].show(cpu),
        "".into(),
        "".into(),
    ]);
    t.row(vec![
        "imchat-client → imchat-server → imchat-client /sendfile".into(),
        f[1].show(mbps),
        f[2].show(ratio),
        f[5].show(cpu),
        f[6].show(cpu),
        f[7].show(cpu),
        f[8].show(mib),
        f[9].show(mib),
    ]);
    t.note("imchat: the real imchat-client `alice` in piped mode sends `/sendfile FILE bob`; the real imchat-client `bob` (piped, `--auto-accept-bytes` the file's size) accepts it at once. Timed from the `/sendfile` line to bob's `*** received` line (CRC checks and rename included; nobody fsyncs); bob's file is then compared byte for byte with the original (a mismatch fails the run). Server on CPU 0 unless `--no-pin`, both clients unpinned. Raw copy: the download scenario's (one hop, where a push makes two: pusher → server → receiver). The two alternate (which goes first alternates from run to run), each after a `sync`. MB = 10^6 bytes.");
    t.note("CPU per GiB from `/proc/<pid>/stat` (user + system, all threads, 10 ms ticks) of imchat-server, the pusher and the receiver, from just before `/sendfile` to the done line; the raw copy's from its threads' `CLOCK_THREAD_CPUTIME_ID`. Server RSS sampled every 100 ms.");
    ctx.table(t);
}

fn chat(ctx: &mut Ctx) {
    let cases = [false, true];
    let size = ctx.sizes.file_size;
    // p50, p99, max, samples, slow receiver's MB/s.
    let mut s: [[Series; 5]; 2] = Default::default();
    for run in 0..ctx.opts.runs {
        eprintln!(
            "chat during a push to a slow receiver, run {} (load average {})",
            run + 1,
            sys::loadavg()
        );
        // Alternate which case goes first.
        let order = if run.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for i in order {
            let push = cases[i];
            let r = ctx.imchat(true, 1000).and_then(|p| {
                let r = chat_during_push(
                    p.addr,
                    push,
                    size,
                    ctx.sizes.chat_warmup,
                    ctx.sizes.chat_window,
                );
                p.stop();
                r
            });
            match r {
                Ok(o) => {
                    s[i][0].push(o.p50);
                    s[i][1].push(o.p99);
                    s[i][2].push(o.max);
                    s[i][3].push(o.samples as f64);
                    if push {
                        s[i][4].push(o.push_bps / 1e6);
                    }
                }
                Err(e) => {
                    let hint = ctx.log_hint(crate::wire::Kind::Imchat);
                    ctx.fail(format!(
                        "chat {} a push, run {}: {e}{hint}",
                        if push { "during" } else { "without" },
                        run + 1
                    ));
                }
            }
        }
    }
    let mut t = Table::new(
        "Push: the pusher's chat while it pushes to a slow receiver",
        &[
            "pusher",
            "chat p50",
            "chat p99",
            "chat max",
            "chat lines measured",
            "push taken by the receiver",
        ],
    );
    for (i, &push) in cases.iter().enumerate() {
        t.row(vec![
            if push {
                format!("pushing {} MiB to a slow receiver", size >> 20)
            } else {
                "no push (baseline)".into()
            },
            s[i][0].show(ms),
            s[i][1].show(ms),
            s[i][2].show(ms),
            s[i][3].show(|v| format!("{v:.0}")),
            if push { s[i][4].show(mbps) } else { "".into() },
        ]);
    }
    t.note(format!(
        "Three imchat-core ClientSession clients per run, on a fresh server (chat rate limit off): the pusher sends {CHAT_RATE} chat lines/s to the watcher and, in the push case, pushes the {} MiB file to the slow receiver within the server's credit (`push_room`, chunks of `chunk_limit`), cancelled when the window ends; the slow receiver takes at most {:.0} MiB/s (it sleeps between reads) and acknowledges what it took. Latency from the timestamp in each line to the watcher's ClientEvent::Chat, over a {:.0} s window after {:.1} s of warm-up; the two cases alternate.",
        size >> 20,
        SLOW_BPS / 1024.0 / 1024.0,
        ctx.sizes.chat_window.as_secs_f64(),
        ctx.sizes.chat_warmup.as_secs_f64()
    ));
    ctx.table(t);
}

#[cfg(test)]
mod tests {
    use super::*;
    use imchat_core::{ClientMessage, Hub, MessageId, ResumeToken, PROTOCOL_VERSION};
    use std::net::TcpListener;
    use std::path::PathBuf;

    /// A stand-in for imchat-client: `sh -c SCRIPT` (the user name and
    /// the address become its `$0`, `$1`, `$2`).
    fn shell(script: &str) -> PipedClient {
        let bins = Bins {
            server: PathBuf::from("/bin/false"),
            client: PathBuf::from("/bin/sh"),
        };
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let args: [&std::ffi::OsStr; 2] = ["-c".as_ref(), script.as_ref()];
        PipedClient::start(&bins, "alice", addr, &args, &std::env::temp_dir()).unwrap()
    }

    #[test]
    fn the_pushers_progress_line_is_not_its_failure() {
        let name = "big.bin";
        let c = shell(
            "echo '*** sending big.bin: accepted by 1 user(s)'; echo '*** sent big.bin to 1 user(s)'; cat >/dev/null",
        );
        let got = c.wait_for(&sent_line(name), &[&send_failed_line(name)], 10);
        c.quit();
        assert_eq!(got, Ok("*** sent big.bin to 1 user(s)".to_string()));
        let c = shell("echo '*** sending big.bin failed: bob left'; cat >/dev/null");
        let got = c.wait_for(&sent_line(name), &[&send_failed_line(name)], 10);
        c.quit();
        assert_eq!(got, Err("*** sending big.bin failed: bob left".to_string()));
    }

    #[test]
    fn a_received_file_that_differs_by_one_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(&a, &data).unwrap();
        fs::write(&b, &data).unwrap();
        assert!(same_contents(&a, &b).unwrap());
        data[2_500_000] ^= 1;
        fs::write(&b, &data).unwrap();
        assert!(!same_contents(&a, &b).unwrap());
        fs::write(&b, &data[..1000]).unwrap();
        assert!(!same_contents(&a, &b).unwrap());
    }

    /// A scripted server: welcomes the pusher, accepts its push with a
    /// credit of `credit` bytes and never more, and reads until the pusher
    /// hangs up. Returns (bytes pushed, chat lines in all, chat lines once
    /// the credit was used up, whether the push was cancelled).
    fn credit_server(listener: TcpListener, credit: u64) -> (u64, u64, u64, bool) {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let (mut r, mut w) = split_tcp::<ClientMessage>(stream, DEFAULT_MAX_FRAME).unwrap();
        let Ok(Some(ClientMessage::Hello { username, .. })) = r.read_message() else {
            panic!("no Hello first");
        };
        w.send(&ServerMessage::Welcome {
            token: ResumeToken::default(),
            epoch: 0,
            grace_secs: 0,
            last_id: MessageId(0),
            resumed: None,
            version: PROTOCOL_VERSION,
            username,
            text: "hi".into(),
            limits: Hub::new(Limits::default(), "hi").server_limits(),
        })
        .unwrap();
        let (mut pushed, mut chats, mut chats_stalled, mut cancelled) = (0, 0, 0, false);
        for _ in 0..100_000 {
            match r.read_message() {
                Ok(Some(ClientMessage::Offer { id, .. })) => {
                    w.send(&ServerMessage::PushAccepted { id, receivers: 1 })
                        .unwrap();
                    w.send(&ServerMessage::PushCredit { id, offset: credit })
                        .unwrap();
                }
                Ok(Some(ClientMessage::Chunk(c))) => pushed += c.data.len() as u64,
                Ok(Some(ClientMessage::Chat { .. })) => {
                    chats += 1;
                    if pushed == credit {
                        chats_stalled += 1;
                    }
                }
                Ok(Some(ClientMessage::Cancel(_))) => cancelled = true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        (pushed, chats, chats_stalled, cancelled)
    }

    #[test]
    fn the_pusher_sends_within_its_credit_and_chats_while_it_waits_for_more() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let credit = 300_000;
        let server = thread::spawn(move || credit_server(listener, credit));
        let c = connect(addr, "pusher").unwrap();
        let start = now_ns();
        // 0.6 s at 20 lines/s: 12 lines and the one that ends the window
        // (fewer if the machine is slow to wake the pusher).
        let end = start + 600_000_000;
        pusher(c, true, 1 << 20, start, end).unwrap();
        let (pushed, chats, chats_stalled, cancelled) = server.join().unwrap();
        assert_eq!(pushed, credit, "the pusher sent past its credit, or less");
        assert!(chats >= 10, "{chats} chat lines in 0.6 s");
        assert!(
            chats_stalled >= 8,
            "{chats_stalled} of {chats} chat lines went while the push waited"
        );
        assert!(cancelled, "the unfinished push was not cancelled");
    }
}
