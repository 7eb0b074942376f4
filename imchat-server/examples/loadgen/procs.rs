//! Starting and stopping the servers under test: imchat-server and
//! redis-server, each on 127.0.0.1 with a port from the OS, optionally
//! pinned to CPU 0. Every process is stopped by its own handle.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys;

/// Where the binaries under test are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub server: PathBuf,
    pub client: PathBuf,
}

/// Finds imchat-server and imchat-client next to this example
/// (`target/release/examples/loadgen` → `target/release/`), building them
/// with cargo first: always when run by cargo (so that a benchmark never
/// measures stale binaries; a no-op when they are current), else when
/// they are missing.
pub fn find_bins() -> Result<Bins, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate target/release")?
        .to_path_buf();
    let bins = Bins {
        server: dir.join("imchat-server"),
        client: dir.join("imchat-client"),
    };
    let cargo = std::env::var("CARGO").ok();
    if cargo.is_some() || !bins.server.is_file() || !bins.client.is_file() {
        eprintln!("building imchat-server and imchat-client (release)...");
        let status = Command::new(cargo.unwrap_or_else(|| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "imchat-server",
                "-p",
                "imchat-client",
            ])
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() || !bins.server.is_file() || !bins.client.is_file() {
            return Err(format!(
                "cargo build --release -p imchat-server -p imchat-client failed ({status})"
            ));
        }
    }
    Ok(bins)
}

/// Options for one imchat-server run.
#[derive(Debug, Clone)]
pub struct ImchatOpts {
    /// `--rate-per-sec 0`: the chat rate limit off.
    pub rate_off: bool,
    pub max_clients: usize,
    /// `--max-queue-bytes`, when not the default.
    pub max_queue: Option<usize>,
    pub shared_dir: PathBuf,
    pub log_file: PathBuf,
    /// More server flags, last (the `history` scenario's).
    pub extra_args: Vec<String>,
}

/// A server process under test.
pub struct Proc {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// Keeps the last lines of a child's output (for error messages) and
/// drains the pipe so the child never blocks on it.
fn drain_lines(
    r: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    first: Option<mpsc::Sender<String>>,
) {
    let _ = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
        let mut first = first;
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = first.take() {
                let _ = tx.send(line.clone());
            }
            let mut t = tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if t.len() >= 20 {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
}

fn pinned(pin: bool, prog: &Path) -> Command {
    if pin && sys::on_path("taskset") {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

impl Proc {
    /// Starts imchat-server on 127.0.0.1, port 0, and reads the port from
    /// its first stdout line.
    pub fn imchat(bins: &Bins, o: &ImchatOpts, pin: bool) -> Result<Proc, String> {
        let mut cmd = pinned(pin, &bins.server);
        cmd.arg("0")
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--shared-dir")
            .arg(&o.shared_dir)
            .arg("--log-file")
            .arg(&o.log_file)
            .arg("--max-clients")
            .arg(o.max_clients.to_string())
            // Every client of the generator comes from 127.0.0.1, and a join
            // storm has thousands of handshakes in flight: no caps on either.
            .arg("--max-per-address")
            .arg("0")
            .arg("--max-joins-per-address")
            .arg("0")
            .arg("--address-rate-share")
            .arg("0")
            .arg("--max-pending")
            .arg("0");
        if o.rate_off {
            cmd.arg("--rate-per-sec").arg("0");
        }
        if let Some(q) = o.max_queue {
            cmd.arg("--max-queue-bytes").arg(q.to_string());
        }
        cmd.args(&o.extra_args);
        cmd.env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", bins.server.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            drain_lines(out, tail.clone(), Some(tx));
        }
        if let Some(err) = child.stderr.take() {
            drain_lines(err, tail.clone(), None);
        }
        let pid = child.id();
        let mut p = Proc {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tail,
        };
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => return Err(format!("imchat-server did not start: {}", p.tail_text())),
        };
        let addr = line
            .strip_prefix("imchat-server listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| format!("unexpected first line from imchat-server: {line:?}"))?;
        p.addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        Ok(p)
    }

    /// Starts redis-server on 127.0.0.1 with a free port, persistence off,
    /// and waits until it answers PING.
    pub fn redis(pin: bool, max_clients: usize) -> Result<Proc, String> {
        let port = sys::free_port().map_err(|e| format!("free port: {e}"))?;
        let mut cmd = pinned(pin, Path::new("redis-server"));
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxclients",
            &max_clients.to_string(),
            "--logfile",
            "",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start redis-server: {e}"))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(out) = child.stdout.take() {
            drain_lines(out, tail.clone(), None);
        }
        if let Some(err) = child.stderr.take() {
            drain_lines(err, tail.clone(), None);
        }
        let pid = child.id();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let p = Proc {
            child: Some(child),
            pid,
            addr,
            tail,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut b = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut b).is_ok()
                    && &b == b"+PONG\r\n"
                {
                    return Ok(p);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server did not start: {}", p.tail_text()))
    }

    /// The last lines the process printed.
    pub fn tail_text(&self) -> String {
        let t = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; always reaps the child.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        sys::terminate(child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
