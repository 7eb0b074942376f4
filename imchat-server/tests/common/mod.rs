//! What the server's end-to-end suites share: a unique temporary folder
//! per test; a child process (the real binaries) whose output lines are
//! collected on background threads and waited on with a deadline, and
//! which is killed by its handle when dropped; and a server started on
//! 127.0.0.1 with a port the OS picks, in a folder of its own.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::thread;
use std::time::{Duration, Instant};

pub mod peer;

pub const WAIT: Duration = Duration::from_secs(15);

/// The server binary under test.
pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imchat-server"))
}

/// The client binary, next to the server's; built on demand.
pub fn client_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let path = server_bin().with_file_name("imchat-client");
    BUILD.call_once(|| {
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "imchat-client"]);
            if path.to_string_lossy().contains("/release/") {
                cmd.arg("--release");
            }
            assert!(cmd.status().expect("cargo build").success());
        }
    });
    path
}

/// An `imchat-server` on 127.0.0.1 with a port the OS picks, its folder
/// (shared files in `shared/`, its log in `server.log`) removed after it.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: TempDir,
    /// The server password its clients must give, if any.
    pub password: Option<String>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(args, |_| {})
    }

    /// Starts it with `args` once `setup` has filled its shared folder
    /// (which already holds `hello.txt`).
    pub fn start_with(args: &[&str], setup: impl FnOnce(&Path)) -> Server {
        let dir = TempDir::new("srv");
        let shared = dir.0.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join("hello.txt"), b"hello, world\n").unwrap();
        setup(&shared);
        let mut cmd = Command::new(server_bin());
        cmd.arg("0")
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--shared-dir")
            .arg(&shared)
            .arg("--log-file")
            .arg(dir.0.join("server.log"))
            .args(args)
            .current_dir(&dir.0);
        Self::from_proc(Proc::spawn(cmd), dir)
    }

    /// The server `proc` started in `dir`, once it says where it listens.
    pub fn from_proc(mut proc: Proc, dir: TempDir) -> Server {
        let line = proc.expect("listening on");
        let addr: SocketAddr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad listening line {line:?}"));
        Server {
            proc,
            addr,
            dir,
            password: None,
        }
    }

    pub fn shared(&self) -> PathBuf {
        self.dir.0.join("shared")
    }
}

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "imchat-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines `child` writes to its piped stdout and stderr, as they come,
/// each read on a thread of its own; those of stderr after `err_prefix`.
pub fn output_lines(child: &mut Child, err_prefix: &str) -> Receiver<String> {
    let (tx, rx) = channel();
    let out = child.stdout.take().expect("a piped stdout");
    let err = child.stderr.take().expect("a piped stderr");
    for (stream, prefix) in [
        (Box::new(out) as Box<dyn Read + Send>, String::new()),
        (Box::new(err), err_prefix.to_string()),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(format!("{prefix}{line}")).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// A child process killed (by its handle) when dropped.
pub struct Proc {
    pub child: Child,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start process");
        let rx = output_lines(&mut child, "stderr: ");
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; panics with what was seen.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                let l = l.clone();
                self.seen.retain(|x| *x != l);
                return l;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line containing {needle:?}; saw {:?}", self.seen),
            }
        }
    }

    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().unwrap()
    }

    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin(), "{line}").unwrap();
        self.stdin().flush().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("process did not exit");
    }
}
