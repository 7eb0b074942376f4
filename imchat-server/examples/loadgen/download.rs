//! Scenario 4 (a 1 GiB download with the real imchat-client, beside a raw
//! TCP file-to-file copy over loopback) and scenario 5 (chat latency to
//! clients that are downloading, using imchat-core's `ClientSession`).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::{split_tcp, FrameWriter};
use imchat_core::{
    ClientEvent, ClientMessage, ClientSession, Encode, FileName, Limits, RoutedChat, ServerMessage,
    TransferId, Username, ACK_STEP, DEFAULT_MAX_FRAME,
};

use crate::latency::summarize;
use crate::procs::Bins;
use crate::room::now_ns;
use crate::sys;
use crate::wire::{self, Kind};

/// Buffer of the raw copy's read/write loops.
const RAW_BUF: usize = 256 * 1024;

/// Writes `size` bytes of pseudo-random data (xorshift) in 1 MiB chunks.
pub fn make_file(path: &Path, size: u64) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// One raw copy: its wall time and each side's CPU time, in seconds.
#[derive(Debug, Clone)]
pub struct RawCopy {
    pub secs: f64,
    pub sender_cpu: f64,
    pub receiver_cpu: f64,
}

/// The machine's limit, doing what imchat's two sides must do and nothing
/// else: a sender thread (on CPU 0, like the server) that sends `src` to a
/// loopback socket with `sendfile` in 256 KiB steps, as the server sends
/// chunk data from the page cache, and a receiver thread (on CPU 1, like
/// the client) that reserves the file's space and then reads the socket and
/// writes `dst` with a 256 KiB buffer (the chunk size). Each thread's CPU time is its own
/// (`CLOCK_THREAD_CPUTIME_ID`), from the connection to its last byte.
pub fn raw_copy(src: &Path, dst: &Path, pin: bool) -> io::Result<RawCopy> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let src = src.to_path_buf();
    let src_path = src.clone();
    let sender = thread::spawn(move || -> io::Result<f64> {
        if pin {
            sys::pin_current_thread(0);
        }
        let (sock, _) = listener.accept()?;
        let cpu0 = sys::thread_cpu_secs();
        let f = File::open(&src)?;
        let size = f.metadata()?.len();
        let mut off: libc::off_t = 0;
        while (off as u64) < size {
            let left = (size - off as u64).min(RAW_BUF as u64) as usize;
            // SAFETY: both descriptors are open for the call and `off` is a
            // valid, writable offset the kernel advances.
            let n = unsafe { libc::sendfile(sock.as_raw_fd(), f.as_raw_fd(), &mut off, left) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            } else if n == 0 {
                return Err(io::Error::other("the file ended early"));
            }
        }
        drop(sock);
        Ok(sys::thread_cpu_secs() - cpu0)
    });
    let t0 = Instant::now();
    let mut sock = TcpStream::connect(addr)?;
    let cpu0 = sys::thread_cpu_secs();
    let mut out = File::create(dst)?;
    // Reserve the file's space first, as imchat-client does: writes into
    // reserved blocks cost less.
    if let Ok(m) = fs::metadata(&src_path) {
        // SAFETY: the descriptor is open for the call; fallocate takes no pointers.
        unsafe {
            libc::fallocate(
                out.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                0,
                m.len() as libc::off_t,
            )
        };
    }
    let mut buf = vec![0u8; RAW_BUF];
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    drop(out);
    let receiver_cpu = sys::thread_cpu_secs() - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    let sender_cpu = sender
        .join()
        .map_err(|_| io::Error::other("raw sender panicked"))??;
    Ok(RawCopy {
        secs,
        sender_cpu,
        receiver_cpu,
    })
}

/// [`raw_copy`] of `src` into `dir`, the copy deleted after.
pub fn raw_copy_in(src: &Path, dir: &Path, pin: bool) -> io::Result<RawCopy> {
    let dst = dir.join("raw-copy.bin");
    let r = raw_copy(src, &dst, pin);
    let _ = fs::remove_file(&dst);
    r
}

/// Run `run`'s two turns of an interleaved comparison, `true` for imchat's:
/// which goes first alternates from run to run.
pub fn turns(run: usize) -> [bool; 2] {
    [!run.is_multiple_of(2), run.is_multiple_of(2)]
}

/// One imchat download figure.
#[derive(Debug, Clone)]
pub struct Download {
    pub secs: f64,
    /// CPU seconds of the server and of the client during the transfer
    /// (`/proc/<pid>/stat`, from before `/download` to the done line).
    pub server_cpu: f64,
    pub client_cpu: f64,
    pub rss_before_kib: f64,
    pub rss_peak_kib: f64,
}

/// Downloads `name` with the real imchat-client in plain mode into `dir`,
/// sampling the server's RSS every 100 ms.
pub fn client_download(
    bins: &Bins,
    addr: SocketAddr,
    pid: u32,
    name: &str,
    size: u64,
    dir: &Path,
) -> Result<Download, String> {
    client_download_with(bins, addr, pid, name, size, dir, &[])
}

/// [`client_download`] with more client flags (`--tls --tls-ca FILE`).
pub fn client_download_with(
    bins: &Bins,
    addr: SocketAddr,
    pid: u32,
    name: &str,
    size: u64,
    dir: &Path,
    client_args: &[&str],
) -> Result<Download, String> {
    let mut args: Vec<&std::ffi::OsStr> = client_args.iter().map(std::ffi::OsStr::new).collect();
    args.push("--download-dir".as_ref());
    args.push(dir.as_os_str());
    let mut client = PipedClient::start(bins, "bench", addr, &args, dir)?;
    let result = (|| {
        client.wait_for("*** connected", &[], 10)?;
        thread::sleep(Duration::from_millis(200));
        let rss = RssSampler::start(pid);
        let client_pid = client.pid;
        let cpu = || {
            (
                sys::cpu_secs(pid).unwrap_or(f64::NAN),
                sys::cpu_secs(client_pid).unwrap_or(f64::NAN),
            )
        };
        let (server0, client0) = cpu();
        let t0 = Instant::now();
        client.line(&format!("/download {name}"))?;
        let done = client.wait_for(&format!("*** downloaded {name}"), &["*** transfer of"], 300);
        let secs = t0.elapsed().as_secs_f64();
        let (server1, client1) = cpu();
        let (before, peak) = rss.stop();
        done?;
        let got = fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        if got != size {
            return Err(format!("downloaded file has {got} bytes, not {size}"));
        }
        Ok(Download {
            secs,
            server_cpu: server1 - server0,
            client_cpu: client1 - client0,
            rss_before_kib: before,
            rss_peak_kib: peak,
        })
    })();
    client.quit();
    let _ = fs::remove_file(dir.join(name));
    result
}

/// The real imchat-client in piped mode (stdin and stdout are pipes), its
/// stdout lines read by a thread of their own.
pub struct PipedClient {
    child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl PipedClient {
    /// Starts imchat-client as `user` on `addr` with `args` before the
    /// user name, its data folder (saved sessions) in `home`, not in the
    /// home of whoever runs the benchmark.
    pub fn start(
        bins: &Bins,
        user: &str,
        addr: SocketAddr,
        args: &[&std::ffi::OsStr],
        home: &Path,
    ) -> Result<PipedClient, String> {
        let mut child = Command::new(&bins.client)
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .args(args)
            .arg(user)
            .arg("127.0.0.1")
            .arg(addr.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start imchat-client: {e}"))?;
        let (tx, lines) = mpsc::channel::<String>();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(PipedClient {
            pid: child.id(),
            stdin: child.stdin.take(),
            lines,
            child,
        })
    }

    /// Writes one line to the client's input.
    pub fn line(&mut self, text: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{text}").map_err(|e| format!("client stdin: {e}"))
    }

    /// Waits at most `secs` for an output line starting with `prefix`;
    /// a line starting with one of `fail` is the error.
    pub fn wait_for(&self, prefix: &str, fail: &[&str], secs: u64) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(l) if fail.iter().any(|f| l.starts_with(f)) => return Err(l),
                Ok(_) => {}
                Err(_) => return Err(format!("no '{prefix}' line within {secs} s")),
            }
        }
    }

    /// `/quit`, then up to 5 s for the client to end, then kills it (by
    /// its own handle).
    pub fn quit(mut self) {
        let _ = self.line("/quit");
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples a process's RSS every 100 ms from a thread.
pub struct RssSampler {
    before: f64,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let before = sys::rss_kib(pid).unwrap_or(0) as f64;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(sys::rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        RssSampler {
            before,
            stop,
            peak,
            thread,
        }
    }

    /// (RSS at the start, peak RSS) in KiB.
    pub fn stop(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        (self.before, self.peak.load(Ordering::Relaxed) as f64)
    }
}

/// Disk jobs queued at most: more than a download window's worth of chunks.
const DISK_QUEUE: usize = 64;

/// Scenario 5's figures for one run.
#[derive(Debug, Clone)]
pub struct ChatOutcome {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Downloaded bytes per second, all downloaders together.
    pub download_bps: f64,
    pub downloads_done: u64,
}

/// The socket's write half, shared by the network and disk threads.
type Writer = Arc<Mutex<FrameWriter<TcpStream>>>;

fn flush(s: &mut ClientSession, w: &Writer) -> io::Result<()> {
    let mut buf = Vec::new();
    while let Some(m) = s.poll_transmit() {
        m.encode(&mut buf);
    }
    if buf.is_empty() {
        Ok(())
    } else {
        w.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send_frames(&buf)
    }
}

/// What the network thread hands the disk thread.
enum DiskJob {
    Data(TransferId, u64, Vec<u8>),
    Done,
}

/// The disk thread of a downloader: writes the file and, as imchat-client
/// does, acknowledges what it has written every `ACK_STEP` and whenever it
/// has written everything it was given; deletes a finished file.
fn disk_loop(path: &Path, jobs: &mpsc::Receiver<DiskJob>, w: &Writer) -> io::Result<()> {
    let mut out: Option<File> = None;
    // Stored but not acknowledged yet, and the last acknowledged offset.
    let mut held: Option<(TransferId, u64)> = None;
    let mut acked = 0u64;
    let ack = |id, offset| {
        w.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(&ClientMessage::Ack { id, offset })
    };
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
            Err(mpsc::TryRecvError::Empty) => {
                if let Some((id, offset)) = held.take() {
                    ack(id, offset)?;
                    acked = offset;
                }
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return Ok(()),
                }
            }
        };
        match job {
            DiskJob::Data(id, offset, data) => {
                if out.is_none() {
                    out = Some(File::create(path)?);
                }
                if let Some(f) = out.as_mut() {
                    f.write_all(&data)?;
                }
                let end = offset + data.len() as u64;
                held = Some((id, end));
                if end >= acked + ACK_STEP {
                    ack(id, end)?;
                    acked = end;
                    held = None;
                }
            }
            DiskJob::Done => {
                out = None;
                held = None;
                acked = 0;
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// A client on imchat-core's `ClientSession` that downloads `name` over and
/// over until `end` (when `download`), and records the latency of every chat
/// message sent in `[from, end)`. Like imchat-client, it writes files from a
/// second thread that acknowledges what it has written (manual acks).
#[allow(clippy::too_many_arguments)]
fn downloader(
    addr: SocketAddr,
    user: &str,
    name: &str,
    dir: &Path,
    download: bool,
    from: u64,
    end: u64,
    bytes: &AtomicU64,
) -> Result<(Vec<u64>, u64), String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let (mut r, w) =
        split_tcp::<ServerMessage>(stream, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    let w: Writer = Arc::new(Mutex::new(w));
    let username = Username::new(user).map_err(|e| e.to_string())?;
    let file = FileName::new(name).map_err(|e| e.to_string())?;
    let mut s = ClientSession::new(username, Limits::default(), Instant::now());
    s.set_manual_acks(true);
    let path = dir.join(format!("{user}.part"));
    let (disk, jobs) = mpsc::sync_channel::<DiskJob>(DISK_QUEUE);
    let disk_thread = {
        let (path, w) = (path.clone(), w.clone());
        thread::spawn(move || disk_loop(&path, &jobs, &w))
    };
    let disk_gone = |_| format!("{user}: the disk thread stopped");
    let mut samples = Vec::new();
    let mut done = 0u64;
    let mut busy = false;
    flush(&mut s, &w).map_err(|e| e.to_string())?;
    loop {
        if !busy && now_ns() >= end && s.is_joined() {
            break;
        }
        let msg = match r.read_message() {
            Ok(Some(m)) => m,
            Ok(None) => return Err("server closed the connection".into()),
            Err(e) => return Err(format!("{user}: {e}")),
        };
        s.handle_message(msg, Instant::now());
        while let Some(ev) = s.poll_event() {
            match ev {
                ClientEvent::Welcome { .. } if download => {
                    s.download(file.clone(), None).map_err(|e| e.to_string())?;
                    busy = true;
                }
                ClientEvent::TransferData { id, offset, data } => {
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    disk.send(DiskJob::Data(id, offset, data))
                        .map_err(disk_gone)?;
                }
                ClientEvent::TransferDone { .. } => {
                    disk.send(DiskJob::Done).map_err(disk_gone)?;
                    done += 1;
                    busy = now_ns() < end;
                    if busy {
                        s.download(file.clone(), None).map_err(|e| e.to_string())?;
                    }
                }
                ClientEvent::TransferFailed { error, .. } => {
                    return Err(format!("{user}: download failed: {error}"));
                }
                ClientEvent::Chat(RoutedChat { text, .. }) => {
                    let now = now_ns();
                    if let Some((_, _, ts)) = wire::parse_payload(text.as_bytes()) {
                        if ts >= from && ts < end {
                            samples.push(now.saturating_sub(ts));
                        }
                    }
                }
                ClientEvent::Refused { reason, .. } => return Err(format!("refused: {reason}")),
                ClientEvent::Shutdown { reason } => return Err(format!("shut down: {reason}")),
                _ => {}
            }
        }
        flush(&mut s, &w).map_err(|e| e.to_string())?;
    }
    s.quit("");
    let _ = flush(&mut s, &w);
    drop(disk);
    let written = disk_thread.join();
    let _ = fs::remove_file(&path);
    match written {
        Ok(Ok(())) => Ok((samples, done)),
        Ok(Err(e)) => Err(format!("{user}: writing the file: {e}")),
        Err(_) => Err(format!("{user}: the disk thread panicked")),
    }
}

/// `clients` library clients (each downloading `name` over and over when
/// `download`), and one more member sending `rate` chat messages per second
/// to all of them for `window`.
#[allow(clippy::too_many_arguments)]
pub fn chat_during(
    addr: SocketAddr,
    name: &str,
    dir: &Path,
    clients: usize,
    download: bool,
    rate: u32,
    warmup: Duration,
    window: Duration,
) -> Result<ChatOutcome, String> {
    let mut chat = wire::join(Kind::Imchat, addr, "chatter", 64 * 1024)
        .map_err(|e| format!("chat client: {e}"))?;
    let mut sink = chat.stream.try_clone().map_err(|e| e.to_string())?;
    let drain = thread::spawn(move || {
        let mut b = vec![0u8; 64 * 1024];
        while matches!(sink.read(&mut b), Ok(n) if n > 0) {}
    });
    let start = now_ns();
    let from = start + warmup.as_nanos() as u64;
    let end = from + window.as_nanos() as u64;
    let bytes = Arc::new(AtomicU64::new(0));
    let dir: PathBuf = dir.to_path_buf();
    let mut hs = Vec::new();
    for k in 0..clients {
        let (name, dir, bytes) = (name.to_string(), dir.clone(), bytes.clone());
        hs.push(thread::spawn(move || {
            downloader(
                addr,
                &format!("dl{k}"),
                &name,
                &dir,
                download,
                from,
                end,
                &bytes,
            )
        }));
    }
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let mut w = chat.stream.try_clone().map_err(|e| e.to_string())?;
        thread::spawn(move || {
            let period = 1e9 / f64::from(rate);
            let mut buf = Vec::new();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = start + (period * k as f64) as u64;
                let now = now_ns();
                if at > now {
                    thread::sleep(Duration::from_nanos(at - now));
                }
                buf.clear();
                wire::push_frame(Kind::Imchat, &mut buf, &wire::payload(0, k + 1, now_ns()));
                if w.write_all(&buf).is_err() {
                    break;
                }
                k += 1;
            }
        })
    };
    let mut all = Vec::new();
    let mut done = 0;
    let mut err = None;
    for h in hs {
        match h.join() {
            Ok(Ok((s, d))) => {
                all.extend(s);
                done += d;
            }
            Ok(Err(e)) => {
                err.get_or_insert(e);
            }
            Err(_) => {
                err.get_or_insert("downloader panicked".into());
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let _ = chat.stream.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    let _ = &mut chat;
    if let Some(e) = err {
        return Err(e);
    }
    let (p50, p99, p999, max) = summarize(all);
    Ok(ChatOutcome {
        p50,
        p99,
        p999,
        max,
        download_bps: bytes.load(Ordering::Relaxed) as f64 / secs,
        downloads_done: done,
    })
}
