//! What the cluster suites share: a `redis-server` of each test's own on
//! a free port of 127.0.0.1, stopped by its handle; without one on the
//! PATH the tests say loudly that they did not run, and with
//! `IMCHAT_REQUIRE_REDIS=1` (as in CI) that is a failure.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::WAIT;

pub fn redis_binary() -> Option<String> {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("redis-server".into());
    }
    let required = std::env::var("IMCHAT_REQUIRE_REDIS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "redis-server is not installed and IMCHAT_REQUIRE_REDIS=1: the cluster tests cannot run"
    );
    eprintln!("\n*** CLUSTER TEST NOT RUN: redis-server is not installed (set IMCHAT_REQUIRE_REDIS=1 to make this a failure) ***\n");
    None
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// A `redis-server` of the test's own, stopped by its handle.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Option<Redis> {
        Redis::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Option<Redis> {
        let bin = redis_binary()?;
        for _ in 0..20 {
            if let Some(r) = Redis::start_on(&bin, free_port(), extra) {
                return Some(r);
            }
        }
        panic!("redis-server did not start on any port tried");
    }

    /// Starts on `port`; `None` if it could not listen there (taken).
    pub fn start_on(bin: &str, port: u16, extra: &[&str]) -> Option<Redis> {
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if r.child.try_wait().unwrap().is_some() {
                return None;
            }
            if r.ping() {
                return Some(r);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        // Up, with or without a password.
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// kill -9, then a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// A new, empty one on the port of this one, stopped before (by
    /// [`Redis::stop`]).
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(r) = Redis::start_on("redis-server", self.port, &[]) {
                let old = std::mem::replace(self, r);
                std::mem::forget(old);
                return;
            }
            assert!(Instant::now() < deadline, "redis did not restart");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Redis {
    /// Kills it now (the handle's drop does the same).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
