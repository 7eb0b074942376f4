//! Helpers for the end-to-end tests: a unique temp folder per test, the real
//! server and client binaries started on 127.0.0.1 with an OS-picked port,
//! their output collected on background threads and waited on with
//! deadlines, and a raw protocol connection; `screen` runs a client in a
//! pseudo-terminal and renders what it draws.
//!
//! Every child process is owned by a guard that kills it (by its handle) and
//! reaps it when dropped, so a failing test leaves nothing running. Nothing
//! here waits with a fixed sleep: waits poll an output buffer or a process
//! until a condition holds or a deadline passes, and every loop is bounded in
//! both time and iterations.

#![allow(dead_code)] // each test binary uses a different subset

pub mod proxy;
pub mod screen;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imchat_core::{
    blocking::{FrameReader, FrameWriter, TransportError},
    ClientMessage, Encode, ServerMessage, Username, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

/// How long any single expectation may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long to give something the chance to (wrongly) happen when asserting
/// that it does not.
pub const QUIET: Duration = Duration::from_millis(300);
/// Upper bound on the wake-ups of any wait loop (each wake-up is a new byte
/// batch or a poll tick), on top of its deadline.
const MAX_WAKEUPS: usize = 1_000_000;
/// Poll period for process exits.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// Binaries

/// The client binary cargo built for this test.
pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imchat-client"))
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the client crate lives inside the workspace")
        .to_path_buf()
}

/// The sample files shipped in the repository.
pub fn sample_shared_dir() -> PathBuf {
    workspace_root().join("SharedFiles")
}

/// The server binary: the sibling of the client binary. `cargo test -p
/// imchat-client` does not build other packages' binaries, so it is built
/// here once per test process, with the client's profile: when it is missing,
/// and also when cargo runs us (a no-op costing a fraction of a second when it
/// is up to date), so a stale server is never tested against a fresh client.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let client = client_bin();
        let path = client.with_file_name(format!("imchat-server{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO");
        if cargo.is_none() && path.exists() {
            return path;
        }
        let mut cmd = Command::new(cargo.unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "-p", "imchat-server"])
            .current_dir(workspace_root());
        if client.to_string_lossy().contains("/release/") {
            cmd.arg("--release");
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("cannot run cargo to build imchat-server");
        assert!(
            out.status.success(),
            "building imchat-server failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            path.exists(),
            "cargo built imchat-server but {} is still missing",
            path.display()
        );
        path
    })
    .clone()
}

// ---------------------------------------------------------------------------
// Temp folders

/// A fresh folder under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/imchat-e2e-<tag>-<pid>-<counter>-<nanos>`. The name has
    /// no whitespace, so paths under it can be typed in commands as they are.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "imchat-e2e-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the folder.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Copies the regular files of `from` into `to` (created).
pub fn copy_dir_files(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create shared dir");
    for entry in fs::read_dir(from).expect("read sample folder") {
        let entry = entry.expect("read sample entry");
        if entry.file_type().expect("file type").is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy sample file");
        }
    }
}

/// The regular files of a folder as (name, size), sorted by name.
pub fn list_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = fs::read_dir(dir)
        .expect("read folder")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let size = e.metadata().expect("metadata").len();
            (e.file_name().to_string_lossy().into_owned(), size)
        })
        .collect();
    files.sort();
    files
}

/// Deterministic pseudo-random bytes (so file contents are not trivially
/// compressible or aligned).
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Output capture

#[derive(Debug, Default)]
struct Buf {
    bytes: Vec<u8>,
    eof: bool,
}

/// The output of one stream of a child, collected by a background thread.
#[derive(Debug, Clone)]
pub struct Output {
    shared: Arc<(Mutex<Buf>, Condvar)>,
}

impl Output {
    /// Starts a thread that copies `r` into the buffer until end of stream.
    pub fn capture(mut r: impl Read + Send + 'static) -> Output {
        let shared = Arc::new((Mutex::new(Buf::default()), Condvar::new()));
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                let n = match r.read(&mut chunk) {
                    Ok(0) => 0,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let (lock, cond) = &*s;
                let mut buf = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if n == 0 {
                    buf.eof = true;
                    cond.notify_all();
                    return;
                }
                buf.bytes.extend_from_slice(&chunk[..n]);
                cond.notify_all();
            }
        });
        Output { shared }
    }

    /// Everything so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let buf = self
            .shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&buf.bytes).into_owned()
    }

    /// The complete lines so far (without `\n` or a trailing `\r`).
    pub fn lines(&self) -> Vec<String> {
        let buf = self
            .shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        complete_lines(&buf.bytes, buf.eof)
    }

    /// The last `n` bytes so far, as text: a cheap look at a long output
    /// (the waits above scan it all at every wake-up).
    pub fn tail(&self, n: usize) -> String {
        let buf = self
            .shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let from = buf.bytes.len().saturating_sub(n);
        String::from_utf8_lossy(&buf.bytes[from..]).into_owned()
    }

    /// True once the stream has ended.
    pub fn is_eof(&self) -> bool {
        self.shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .eof
    }

    /// Calls `f` on the bytes so far (and whether the stream ended) each time
    /// new bytes arrive, until it returns `Some` or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&[u8], bool) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.shared;
        let mut buf = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..MAX_WAKEUPS {
            if let Some(v) = f(&buf.bytes, buf.eof) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline || buf.eof {
                return None;
            }
            buf = cond
                .wait_timeout(buf, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        None
    }

    /// Waits for a complete line at index `from` or later that satisfies
    /// `pred`; returns its index and text.
    pub fn wait_line_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        self.wait_for(timeout, |bytes, eof| {
            complete_lines(bytes, eof)
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| pred(l))
        })
    }

    /// Waits until the stream ends.
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |_, eof| eof.then_some(())).is_some()
    }
}

fn complete_lines(bytes: &[u8], eof: bool) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut parts: Vec<&str> = text.split('\n').collect();
    // The last part is an unfinished line (or "" after a final newline).
    let last = parts.pop().unwrap_or("");
    let mut lines: Vec<String> = parts
        .iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if eof && !last.is_empty() {
        lines.push(last.to_string());
    }
    lines
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    for _ in 0..MAX_WAKEUPS {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
    None
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)\n".to_string();
    }
    text.lines().map(|l| format!("    | {l}\n")).collect()
}

// ---------------------------------------------------------------------------
// The server

/// A running `imchat-server`, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its stdout.
    pub out: Output,
    /// Its stderr.
    pub err: Output,
    /// Where it listens (127.0.0.1 and the port it printed).
    pub addr: SocketAddr,
    log_file: PathBuf,
    /// Its console (standard input), when started with one.
    console: Option<ChildStdin>,
}

impl Server {
    /// Starts the server on 127.0.0.1, port 0, serving `shared`, logging to
    /// `<dir>/server.log`, with `dir` as its working folder; waits for its
    /// `listening on` line.
    pub fn start(dir: &Path, shared: &Path) -> Server {
        Server::start_with(dir, shared, &[])
    }

    /// [`start`](Self::start) with more arguments (limits, say).
    pub fn start_with(dir: &Path, shared: &Path, extra: &[&str]) -> Server {
        Server::start_on(dir, shared, extra, 0)
    }

    /// [`start_with`](Self::start_with) on a given port (a restart on the
    /// port an earlier server was given). Binding may fail for a moment
    /// while the old socket is released: it retries, within a deadline.
    #[track_caller]
    pub fn start_on(dir: &Path, shared: &Path, extra: &[&str], port: u16) -> Server {
        Server::start_full(dir, shared, extra, port, false)
    }

    /// [`start_with`](Self::start_with), with its console on a pipe the
    /// test writes operator lines to ([`console`](Self::console)).
    pub fn start_with_console(dir: &Path, shared: &Path, extra: &[&str]) -> Server {
        Server::start_full(dir, shared, extra, 0, true)
    }

    #[track_caller]
    fn start_full(dir: &Path, shared: &Path, extra: &[&str], port: u16, console: bool) -> Server {
        let deadline = Instant::now() + TIMEOUT;
        let mut failures = String::new();
        for _ in 0..100 {
            match Server::spawn(dir, shared, extra, port, console) {
                Ok(server) => return server,
                Err(report) if port != 0 && Instant::now() < deadline => {
                    failures.push_str(&report);
                    thread::sleep(POLL * 5);
                }
                Err(report) => {
                    failures.push_str(&report);
                    break;
                }
            }
        }
        panic!("the server could not listen on port {port}:\n{failures}");
    }

    /// One try at starting the server; its report when it did not listen.
    fn spawn(
        dir: &Path,
        shared: &Path,
        extra: &[&str],
        port: u16,
        console: bool,
    ) -> Result<Server, String> {
        let log_file = dir.join("server.log");
        let mut child = Command::new(server_bin())
            .args(extra)
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--shared-dir")
            .arg(shared)
            .arg("--log-file")
            .arg(&log_file)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("SERVERSHAREDFILES")
            .env_remove("SERVER_SHARED_FILES")
            .stdin(if console {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start imchat-server");
        let console = child.stdin.take();
        let out = Output::capture(child.stdout.take().expect("server stdout"));
        let err = Output::capture(child.stderr.take().expect("server stderr"));
        let mut server = Server {
            child,
            out,
            err,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_file,
            console,
        };
        let first = server.out.wait_line_from(0, TIMEOUT, |_| true);
        let addr = first.as_ref().and_then(|(_, line)| {
            line.strip_prefix("imchat-server listening on ")
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        });
        let Some(addr) = addr else {
            let _ = server.wait_exit(TIMEOUT);
            return Err(format!(
                "server's first line: expected `imchat-server listening on <addr>`, got {first:?}\n{}",
                server.report()
            ));
        };
        assert_ne!(addr.port(), 0, "the server printed port 0: {first:?}");
        server.addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types an operator line on its console (`ban bob spam`) and waits
    /// for the answer that starts with `answer`.
    pub fn console(&mut self, line: &str, answer: &str) -> String {
        let from = self.out.lines().len();
        let console = self
            .console
            .as_mut()
            .expect("the server was started without a console");
        if let Err(e) = console
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| console.flush())
        {
            panic!("writing to the server's console: {e}\n{}", self.report());
        }
        match self
            .out
            .wait_line_from(from, TIMEOUT, |l| l.starts_with(answer))
        {
            Some((_, l)) => l,
            None => panic!(
                "server: no answer `{answer}…` to `{line}` within {TIMEOUT:?}\n{}",
                self.report()
            ),
        }
    }

    /// Waits for a stdout line satisfying `pred`; panics with the output otherwise.
    pub fn expect(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.out.wait_line_from(0, TIMEOUT, pred) {
            Some((_, l)) => l,
            None => panic!(
                "server: no stdout line {what} within {TIMEOUT:?}\n{}",
                self.report()
            ),
        }
    }

    /// Kills it with SIGKILL (std's `Child::kill`) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends it a signal by its pid, with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed: {status}");
    }

    /// Stops it with SIGTERM, as an operator does, and waits for it to
    /// exit, for [`TIMEOUT`] at most.
    #[allow(dead_code)] // not every test file uses it
    pub fn stop_by_sigterm(&mut self) {
        self.signal("TERM");
        assert!(
            self.wait_exit(TIMEOUT).is_some(),
            "the server did not stop on SIGTERM\n{}",
            self.report()
        );
    }

    /// Waits for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout)
    }

    /// Waits until its log file holds `wanted` (the log is written in
    /// batches), for [`TIMEOUT`] at most.
    #[allow(dead_code)] // not every test file uses it
    pub fn wait_logged(&self, wanted: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !fs::read_to_string(&self.log_file)
            .unwrap_or_default()
            .contains(wanted)
        {
            assert!(
                Instant::now() < deadline,
                "{wanted:?} not logged within {TIMEOUT:?}:\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its output and log, for failure messages.
    pub fn report(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        format!(
            "server stdout:\n{}server stderr:\n{}server log:\n{}",
            indent(&self.out.text()),
            indent(&self.err.text()),
            indent(&log)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The world of one test: a temp folder, a shared folder, a server

/// One test's temp folder (with a copy of the sample shared files in
/// `shared/`) and its server. Fields drop in order: the server is killed
/// before the folder is removed.
#[derive(Debug)]
pub struct World {
    /// The server.
    pub server: Server,
    /// The temp folder.
    pub dir: TempDir,
}

impl World {
    /// A temp folder, a copy of `SharedFiles/` in it, and a server on it.
    pub fn new(tag: &str) -> World {
        World::with_args(tag, &[])
    }

    /// [`new`](Self::new), the server started with more arguments.
    pub fn with_args(tag: &str, extra: &[&str]) -> World {
        let dir = TempDir::new(tag);
        copy_dir_files(&sample_shared_dir(), &dir.join("shared"));
        let server = Server::start_with(dir.path(), &dir.join("shared"), extra);
        World { server, dir }
    }

    /// [`new`](Self::new), the server's console on a pipe
    /// ([`Server::console`]).
    pub fn with_console(tag: &str) -> World {
        let dir = TempDir::new(tag);
        copy_dir_files(&sample_shared_dir(), &dir.join("shared"));
        let server = Server::start_with_console(dir.path(), &dir.join("shared"), &[]);
        World { server, dir }
    }

    /// Starts a client whose input is `script`, written by a thread of
    /// its own (the client may read it slowly) and then closed.
    pub fn script(&self, args: &[&str], script: Vec<u8>) -> Client {
        let mut c = self.spawn_client(args);
        let mut stdin = c.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            // The client may have exited (a test of that): ignore errors.
            let _ = stdin.write_all(&script);
        });
        c
    }

    /// The server's shared folder.
    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// Starts `imchat-client <name> 127.0.0.1 <port>` and waits until it
    /// has printed the server's welcome.
    pub fn client(&self, name: &str) -> Client {
        let c = self.spawn_client(&[name, "127.0.0.1", &self.server.port().to_string()]);
        c.expect_line(&format!(
            "*** connected to 127.0.0.1:{} as {name}",
            self.server.port()
        ));
        c.expect(&format!("the welcome text for {name}"), |l| {
            l.starts_with(&format!("Welcome to imchat, {name}!"))
        });
        c
    }

    /// Starts `name`'s piped client with `flags` before its arguments, on
    /// `port` (a proxy's, say), and waits for its connection line.
    pub fn client_on(&self, name: &str, port: u16, flags: &[&str]) -> Client {
        let port = port.to_string();
        let mut args: Vec<&str> = flags.to_vec();
        args.extend([name, "127.0.0.1", port.as_str()]);
        let c = self.spawn_client(&args);
        c.expect_prefix(&format!("*** connected to 127.0.0.1:{port} as {name}"));
        c
    }

    /// Starts the client with these arguments, in the temp folder, without waiting.
    pub fn spawn_client(&self, args: &[&str]) -> Client {
        Client::spawn(self.dir.path(), args)
    }
}

// ---------------------------------------------------------------------------
// Clients

/// A running `imchat-client` in plain (piped) mode, killed when dropped.
#[derive(Debug)]
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout.
    pub out: Output,
    /// Its stderr.
    pub err: Output,
    label: String,
}

impl Client {
    /// Starts the client with `args` and `dir` as working folder.
    pub fn spawn(dir: &Path, args: &[&str]) -> Client {
        Client::spawn_with_env(dir, args, &[])
    }

    /// [`spawn`](Self::spawn) with more environment variables (a test's
    /// `FAILPOINTS`, say).
    pub fn spawn_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Client {
        let mut child = Command::new(client_bin())
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            // Its saved sessions stay in the test's folder.
            .env("XDG_DATA_HOME", dir.join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start imchat-client");
        let out = Output::capture(child.stdout.take().expect("client stdout"));
        let err = Output::capture(child.stderr.take().expect("client stderr"));
        let stdin = child.stdin.take();
        Client {
            child,
            stdin,
            out,
            err,
            label: format!("client {}", args.first().copied().unwrap_or("")),
        }
    }

    /// Types one line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        if let Err(e) = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
        {
            panic!(
                "{}: cannot type {line:?}: {e}\n{}",
                self.label,
                self.report()
            );
        }
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line satisfying `pred` (searching from the first
    /// line); panics with the client's output otherwise.
    pub fn expect(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.expect_from(0, what, pred).1
    }

    /// Like [`expect`](Self::expect), from line index `from` on; returns the index too.
    pub fn expect_from(
        &self,
        from: usize,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        match self.out.wait_line_from(from, TIMEOUT, pred) {
            Some(found) => found,
            None => panic!(
                "{}: no stdout line {what} within {TIMEOUT:?}\n{}",
                self.label,
                self.report()
            ),
        }
    }

    /// Waits for exactly this stdout line.
    pub fn expect_line(&self, line: &str) -> usize {
        self.expect_from(0, &format!("== {line:?}"), |l| l == line)
            .0
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn expect_prefix(&self, prefix: &str) -> String {
        self.expect(&format!("starting with {prefix:?}"), |l| {
            l.starts_with(prefix)
        })
    }

    /// Panics if any stdout line so far satisfies `pred`.
    pub fn assert_no_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        if let Some(l) = self.out.lines().iter().find(|l| pred(l)) {
            panic!(
                "{}: unexpected stdout line {l:?} ({what})\n{}",
                self.label,
                self.report()
            );
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit; panics with its output if it does not.
    pub fn expect_exit(&mut self) -> ExitStatus {
        self.expect_exit_within(TIMEOUT)
    }

    /// [`expect_exit`](Self::expect_exit) with a longer wait, for scripts
    /// that take time.
    pub fn expect_exit_within(&mut self, timeout: Duration) -> ExitStatus {
        match wait_exit(&mut self.child, timeout) {
            Some(s) => {
                // Let the reader threads take in the last bytes.
                self.out.wait_eof(TIMEOUT);
                self.err.wait_eof(TIMEOUT);
                s
            }
            None => panic!(
                "{}: still running after {TIMEOUT:?}\n{}",
                self.label,
                self.report()
            ),
        }
    }

    /// Waits for it to exit with `code`; returns its stderr lines.
    pub fn expect_exit_code(&mut self, code: i32) -> Vec<String> {
        let status = self.expect_exit();
        assert_eq!(
            status.code(),
            Some(code),
            "{}: exit status {status}, expected code {code}\n{}",
            self.label,
            self.report()
        );
        self.err.lines()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its output, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "{} stdout:\n{}{} stderr:\n{}",
            self.label,
            indent(&self.out.text()),
            self.label,
            indent(&self.err.text())
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
    }
}

/// The non-empty lines of a stderr capture.
pub fn non_empty(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

// ---------------------------------------------------------------------------
// Raw protocol connections

/// What a raw connection saw next.
#[derive(Debug)]
pub enum RawEvent {
    /// A message.
    Msg(ServerMessage),
    /// The server closed the connection.
    Closed,
    /// Nothing arrived before the deadline.
    TimedOut,
    /// The stream broke otherwise.
    Failed(String),
}

/// A TCP connection speaking the protocol by hand, through imchat-core.
#[derive(Debug)]
pub struct Raw {
    reader: FrameReader<TcpStream, ServerMessage>,
    writer: FrameWriter<TcpStream>,
}

impl Raw {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("raw connect");
        let (reader, writer) =
            imchat_core::blocking::split_tcp::<ServerMessage>(stream, DEFAULT_MAX_FRAME)
                .expect("split");
        Raw { reader, writer }
    }

    /// Connects and completes the handshake as `name` (waits for the Welcome).
    pub fn join(addr: SocketAddr, name: &str) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(&ClientMessage::Hello {
            resume: None,
            version: PROTOCOL_VERSION,
            username: Username::new(name).expect("valid name"),
        });
        match raw.recv_until(TIMEOUT, |m| matches!(m, ServerMessage::Welcome { .. })) {
            (Some(_), _) => raw,
            (None, seen) => panic!("raw {name}: no Welcome; saw {seen:?}"),
        }
    }

    /// Sends a message.
    pub fn send(&mut self, m: &ClientMessage) {
        self.writer.send(m).expect("raw send");
    }

    /// Sends bytes as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.send_frames(bytes).expect("raw send bytes");
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> RawEvent {
        let timeout = timeout.max(Duration::from_millis(1));
        if let Err(e) = self.reader.get_ref().set_read_timeout(Some(timeout)) {
            return RawEvent::Failed(e.to_string());
        }
        match self.reader.read_message() {
            Ok(Some(m)) => RawEvent::Msg(m),
            Ok(None) => RawEvent::Closed,
            Err(TransportError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                RawEvent::TimedOut
            }
            Err(TransportError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                RawEvent::Closed
            }
            Err(e) => RawEvent::Failed(e.to_string()),
        }
    }

    /// Reads until a message satisfies `pred`, the connection ends, or
    /// `timeout` passes. Returns the matching message (if any) and all
    /// events seen (the match included).
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&ServerMessage) -> bool,
    ) -> (Option<ServerMessage>, Vec<RawEvent>) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.recv(deadline - now) {
                RawEvent::Msg(m) => {
                    if pred(&m) {
                        seen.push(RawEvent::Msg(m.clone()));
                        return (Some(m), seen);
                    }
                    seen.push(RawEvent::Msg(m));
                }
                RawEvent::TimedOut => break,
                end => {
                    seen.push(end);
                    break;
                }
            }
        }
        (None, seen)
    }

    /// Reads everything until the connection ends or `timeout` passes.
    pub fn drain(&mut self, timeout: Duration) -> Vec<RawEvent> {
        self.recv_until(timeout, |_| false).1
    }
}

/// Encodes one message to its frame bytes (re-exported for tests building
/// frames by hand next to real ones).
pub fn frame_of(m: &ClientMessage) -> Vec<u8> {
    m.to_frame()
}

/// A fake server's side of a client's handshake on `listener`: accepts
/// one connection (reads time out after [`TIMEOUT`]), reads its `Hello`
/// and welcomes it with the default limits and no resume. Its reader, its
/// writer and the name it asked for.
pub fn fake_welcome(
    listener: &std::net::TcpListener,
) -> (
    FrameReader<TcpStream, ClientMessage>,
    FrameWriter<TcpStream>,
    Username,
) {
    use imchat_core::{MessageId, ResumeToken, ServerLimits};
    let (stream, _) = listener.accept().expect("accept");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    let mut reader = FrameReader::new(stream.try_clone().expect("clone"), 1 << 20);
    let mut writer = FrameWriter::new(stream);
    let Ok(Some(ClientMessage::Hello { username, .. })) = reader.read_message() else {
        panic!("no hello");
    };
    writer
        .send(&ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            username: username.clone(),
            text: "hi".into(),
            limits: ServerLimits::default(),
            token: ResumeToken::default(),
            epoch: 1,
            grace_secs: 0,
            last_id: MessageId(0),
            resumed: None,
        })
        .expect("welcome");
    (reader, writer, username)
}
