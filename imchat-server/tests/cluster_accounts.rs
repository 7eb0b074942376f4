//! Accounts and bans of a cluster (`--redis`), end to end: each test starts
//! its own `redis-server` on a free port of 127.0.0.1 and two
//! `imchat-server`s, and stops every one of them by its handle. Without
//! `redis-server` on the PATH the tests say loudly that they did not run;
//! with `IMCHAT_REQUIRE_REDIS=1` (as in CI) that is a failure.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{
    ClientMessage, ErrorCode, LeaveReason, NoticeCode, PresenceEvent, RefuseCode, Secret,
    ServerMessage, Username, PROTOCOL_VERSION,
};

mod common;
mod redis_harness;

use common::peer::Peer;
use redis_harness::{free_port, Redis};

const WAIT: Duration = Duration::from_secs(20);

/// An `imchat-server` in the cluster, its console on a pipe, stopped by
/// its handle.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(redis_url: &str, extra: &[&str]) -> Server {
        Server::start_with_env(redis_url, extra, &[])
    }

    /// [`start`](Self::start) with `env` set for the server (fail points).
    fn start_with_env(redis_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
            .arg("127.0.0.1:0")
            .arg("--shared-dir")
            .arg(dir.path())
            .arg("--log-file")
            .arg(dir.path().join("server.log"))
            .args(["--cluster-lease-secs", "1.5", "--grace-secs", "0"])
            .args(["--redis", redis_url])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let rx = common::output_lines(&mut child, "");
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Some(addr) = l.strip_prefix("imchat-server listening on ") {
                let s = Server {
                    child,
                    addr: addr.parse().unwrap(),
                    dir,
                    lines: rx,
                    seen,
                };
                // In the cluster once a name can be claimed.
                let deadline = Instant::now() + WAIT;
                loop {
                    let mut r = Raw::hello(s.addr, &format!("probe{}", free_port()), None);
                    if r.welcomed() {
                        quit(r);
                        return s;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the server never joined the cluster"
                    );
                    thread::sleep(Duration::from_millis(100));
                }
            }
            seen.push(l);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not start: {seen:?}");
    }

    /// Types `line` on the server's console.
    fn console(&mut self, line: &str) {
        let stdin: &mut ChildStdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for an output line containing `needle`: the line.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.seen.iter().position(|l| l.contains(needle)) {
                return self.seen.remove(i);
            }
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line containing {needle:?}; saw {:?}", self.seen),
            }
        }
    }

    /// The log file so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol peer.
type Raw = Peer<TcpStream>;

impl Raw {
    /// Connects and sends `Auth` (when there is an account password) and `Hello`.
    fn hello(addr: SocketAddr, name: &str, account: Option<&str>) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut r = Peer::new(stream).waiting(WAIT);
        if account.is_some() {
            r.send(&ClientMessage::Auth {
                server: None,
                account: account.and_then(Secret::new),
            });
        }
        r.send(&ClientMessage::Hello {
            resume: None,
            version: PROTOCOL_VERSION,
            username: Username::new(name).unwrap(),
        });
        r
    }

    fn join(addr: SocketAddr, name: &str, account: Option<&str>) -> Raw {
        let mut r = Raw::hello(addr, name, account);
        r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
        r
    }

    /// Joins as `name`, again while the name is still claimed by the
    /// server it just left (its release reaches Redis a moment later).
    fn join_moved(addr: SocketAddr, name: &str, account: Option<&str>) -> Raw {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut r = Raw::hello(addr, name, account);
            match r.wait_for(|m| {
                matches!(
                    m,
                    ServerMessage::Welcome { .. } | ServerMessage::Refused { .. }
                )
            }) {
                ServerMessage::Welcome { .. } => return r,
                ServerMessage::Refused { code, reason, .. } => assert!(
                    code == RefuseCode::NAME_TAKEN && Instant::now() < deadline,
                    "{name} refused: {code:?} {reason}"
                ),
                _ => unreachable!(),
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the answer to `Hello`: true on a welcome.
    fn welcomed(&mut self) -> bool {
        matches!(
            self.wait_for(|m| matches!(
                m,
                ServerMessage::Welcome { .. } | ServerMessage::Refused { .. }
            )),
            ServerMessage::Welcome { .. }
        )
    }

    /// The refusal's code and reason.
    fn refusal(mut self) -> (RefuseCode, String) {
        match self.wait_for(|m| matches!(m, ServerMessage::Refused { .. })) {
            ServerMessage::Refused { code, reason, .. } => (code, reason),
            _ => unreachable!(),
        }
    }

    fn notice(&mut self) -> (NoticeCode, String) {
        match self.wait_for(|m| matches!(m, ServerMessage::Notice { .. })) {
            ServerMessage::Notice { code, text } => (code, text),
            _ => unreachable!(),
        }
    }
}

fn quit(mut r: Raw) {
    r.send(&ClientMessage::Quit {
        reason: String::new(),
    });
    let deadline = Instant::now() + WAIT;
    while r.pump() {
        assert!(Instant::now() < deadline, "not closed after Quit");
    }
}

/// Registers `name` with `password` on the server at `addr`.
fn register(addr: SocketAddr, name: &str, password: &str) {
    let mut r = Raw::join(addr, name, None);
    r.send(&ClientMessage::Register {
        password: Secret::new(password).unwrap(),
    });
    let (code, text) = r.notice();
    assert_eq!(code, NoticeCode::REGISTERED, "{text}");
    quit(r);
}

/// Waits until a `Hello` as `name` on `addr` is refused as banned (`true`)
/// or welcomed (`false`), whichever `banned` asks for.
fn wait_ban(addr: SocketAddr, name: &str, banned: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut r = Raw::hello(addr, name, None);
        let now_banned = match r.wait_for(|m| {
            matches!(
                m,
                ServerMessage::Welcome { .. } | ServerMessage::Refused { .. }
            )
        }) {
            ServerMessage::Welcome { .. } => {
                quit(r);
                false
            }
            ServerMessage::Refused { code, .. } => code == RefuseCode::BANNED,
            _ => unreachable!(),
        };
        if now_banned == banned {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} on {addr}: never {}",
            if banned { "banned" } else { "let in" }
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The refusal of a `Hello` for `name`, once the server it just left has
/// released its claim (that reaches Redis a moment after the quit).
fn refusal_once_released(
    addr: SocketAddr,
    name: &str,
    account: Option<&str>,
) -> (RefuseCode, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, reason) = Raw::hello(addr, name, account).refusal();
        if code != RefuseCode::NAME_TAKEN || Instant::now() >= deadline {
            return (code, reason);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_name_registered_on_one_server_is_protected_on_the_other() {
    let Some(redis) = Redis::start() else { return };
    // A also has a database: with --redis, the accounts are still Redis's.
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("history.db");
    let a = Server::start(&redis.url(), &["--history-db", db_path.to_str().unwrap()]);
    let b = Server::start(&redis.url(), &[]);
    register(a.addr, "alice", "wonderland");
    let (code, _) = refusal_once_released(b.addr, "alice", None);
    assert_eq!(code, RefuseCode::NAME_PROTECTED);
    let (code, _) = Raw::hello(b.addr, "ALICE", Some("looking glass")).refusal();
    assert_eq!(code, RefuseCode::WRONG_ACCOUNT_PASSWORD);
    // With its password on B: in, and registering again is refused there too.
    let mut r = Raw::join_moved(b.addr, "alice", Some("wonderland"));
    r.send(&ClientMessage::Register {
        password: Secret::new("other").unwrap(),
    });
    assert_eq!(r.notice().0, NoticeCode::ALREADY_REGISTERED);
    // /unregister on B frees it on A.
    r.send(&ClientMessage::Unregister);
    assert_eq!(r.notice().0, NoticeCode::UNREGISTERED);
    quit(r);
    quit(Raw::join_moved(a.addr, "alice", None));
    // Neither the password nor its hash is in either log.
    for s in [&a, &b] {
        let log = s.log();
        assert!(log.contains("accounts and bans: kept in Redis"), "{log}");
        for secret in ["wonderland", "looking glass", "$argon2id"] {
            assert!(!log.contains(secret), "{secret} logged: {log}");
        }
    }
}

#[test]
fn a_ban_made_on_one_server_refuses_on_the_other() {
    let Some(redis) = Redis::start() else { return };
    let mut a = Server::start(&redis.url(), &[]);
    let mut b = Server::start(&redis.url(), &[]);
    // Mallory is on B when A bans her.
    let mut mallory = Raw::join_moved(b.addr, "mallory", None);
    // Two bans at once on two servers: both are kept.
    a.console("ban mallory spam");
    b.console("ban eve");
    // A has none of them to disconnect, and says who does: B, where
    // mallory is, once A has heard of her.
    let said = a.expect("banned mallory (");
    assert!(
        said.ends_with("banned mallory (on another server)")
            || said.ends_with(
                "banned mallory (0 disconnected here; the other servers disconnect theirs)"
            ),
        "{said}"
    );
    b.expect("banned eve");
    for s in [&a, &b] {
        wait_ban(s.addr, "mallory", true);
        wait_ban(s.addr, "eve", true);
    }
    // B removed her as if the ban were its own, and let her know why.
    match mallory.wait_for(|m| matches!(m, ServerMessage::Error { .. })) {
        ServerMessage::Error { code, text, .. } => {
            assert_eq!(code, ErrorCode::KICKED);
            assert!(text.contains("banned") && text.contains("spam"), "{text}");
        }
        _ => unreachable!(),
    }
    let deadline = Instant::now() + WAIT;
    while mallory.pump() {
        assert!(Instant::now() < deadline, "B kept her connection open");
    }
    // A server started later has them from the start.
    let c = Server::start(&redis.url(), &[]);
    let (code, _) = Raw::hello(c.addr, "mallory", None).refusal();
    assert_eq!(code, RefuseCode::BANNED);
    a.console("bans");
    let bans = a.expect("(by console");
    assert!(
        bans.contains("mallory (by console: spam)") && bans.contains("eve (by console)"),
        "{bans}"
    );
    // Lifted on B: lifted on A.
    b.console("unban mallory");
    b.expect("unbanned mallory");
    wait_ban(a.addr, "mallory", false);
    wait_ban(a.addr, "eve", true);
}

#[test]
fn a_kick_made_on_one_server_removes_a_user_of_the_other() {
    let Some(redis) = Redis::start() else { return };
    let mut a = Server::start(&redis.url(), &[]);
    let b = Server::start(&redis.url(), &[]);
    let mut alice = Raw::join(a.addr, "alice", None);
    let mut mallory = Raw::join_moved(b.addr, "mallory", None);
    let seen = |m: &ServerMessage, name: &str, joined: bool| match m {
        ServerMessage::Presence(events) => events.iter().any(|e| match e {
            PresenceEvent::Joined { user, .. } => joined && user.as_str() == name,
            PresenceEvent::Left(d) => !joined && d.user.as_str() == name,
            PresenceEvent::Away { .. } | PresenceEvent::Back { .. } => false,
        }),
        _ => false,
    };
    alice.wait_for(|m| seen(m, "mallory", true));
    // A's console kicks her; B, her server, removes her.
    a.console("kick Mallory spam");
    a.expect("kicked mallory (on another server)");
    match mallory.wait_for(|m| matches!(m, ServerMessage::Error { .. })) {
        ServerMessage::Error { code, text, .. } => {
            assert_eq!(code, ErrorCode::KICKED);
            assert_eq!(text, "kicked by console: spam");
        }
        _ => unreachable!(),
    }
    let deadline = Instant::now() + WAIT;
    while mallory.pump() {
        assert!(Instant::now() < deadline, "B kept her connection open");
    }
    // Alice, on A, sees her leave, and why.
    match alice.wait_for(|m| seen(m, "mallory", false)) {
        ServerMessage::Presence(events) => {
            let d = events
                .iter()
                .find_map(|e| match e {
                    PresenceEvent::Left(d) if d.user.as_str() == "mallory" => Some(d),
                    _ => None,
                })
                .unwrap();
            assert_eq!(d.reason, LeaveReason::KICKED);
            assert_eq!(d.text, "kicked by console: spam");
        }
        _ => unreachable!(),
    }
    // A kick is not a ban: she may come back.
    quit(Raw::join_moved(b.addr, "mallory", None));
}

/// What `imchat-server --reset-name NAME --redis URL` prints, once it
/// has succeeded.
fn reset_name(url: &str, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(["--reset-name", name, "--redis", url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether a server holds the claim on the name of key `key` in Redis.
fn name_claimed(url: &str, key: &str) -> bool {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(WAIT)
        .unwrap();
    redis::cmd("EXISTS")
        .arg(format!("imchat:name:{key}"))
        .query(&mut con)
        .unwrap()
}

/// Waits until no server holds the name of key `key` (a quit releases it
/// a moment later).
fn wait_released(url: &str, key: &str) {
    let deadline = Instant::now() + WAIT;
    while name_claimed(url, key) {
        assert!(Instant::now() < deadline, "{key} still claimed");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reset_name_through_redis_frees_a_name_on_every_server() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url(), &[]);
    let b = Server::start(&redis.url(), &[]);
    register(a.addr, "alice", "wonderland");
    let reset = || reset_name(&redis.url(), "Alice");
    wait_released(&redis.url(), "alice");
    let said = reset();
    assert!(said.contains("is removed: the name is free"), "{said}");
    quit(Raw::join_moved(b.addr, "alice", None));
    quit(Raw::join_moved(a.addr, "alice", None));
    let said = reset();
    assert!(
        said.contains("was not registered; nothing changed"),
        "{said}"
    );
}

#[test]
fn with_redis_unreachable_registration_and_protected_names_are_refused() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = Server::start(&redis.url(), &[]);
    register(a.addr, "alice", "wonderland");
    let mut bob = Raw::join(a.addr, "bob", None);
    redis.stop();
    // A user already in stays, but cannot register.
    bob.send(&ClientMessage::Register {
        password: Secret::new("builder").unwrap(),
    });
    let (code, text) = bob.notice();
    assert_eq!(code, NoticeCode::FAILED);
    assert!(text.contains("cannot store accounts now"), "{text}");
    // alice, even with her password, is not let in unchecked.
    let mut r = Raw::hello(a.addr, "alice", Some("wonderland"));
    assert!(!r.welcomed(), "a protected name let in without its check");
    // And the offline reset says why it could not.
    let out = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(["--reset-name", "alice", "--redis", &redis.url()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("Redis is unreachable"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    quit(bob);
}

/// `--register-name NAME --redis URL` says, in one line, why Redis could
/// not store the account, as `--reset-name` does (before: "the server
/// cannot store accounts now", whatever the cause); a URL without the
/// password is "refused the connection", as in the cluster's own line
/// (before: "Redis failed", then "unreachable", though Redis was reached).
#[test]
fn register_name_through_redis_says_why_redis_cannot_store_it() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let register = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_imchat-server"))
            .args(["--register-name", "zed", "--redis", url])
            .env("IMCHAT_ACCOUNT_PASSWORD", "abcdefgh12")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let port = redis.port;
    for (url, cause) in [
        (
            format!("redis://:wrong@127.0.0.1:{port}"),
            "Redis refused the connection: Redis refused the password in the URL",
        ),
        (
            format!("redis://127.0.0.1:{port}"),
            "Redis refused the connection: Redis requires a password",
        ),
        (
            format!("redis://:s3cret-pw@127.0.0.1:{port}/99"),
            "Redis refused the connection: Redis has no database 99",
        ),
    ] {
        let out = register(&url);
        assert!(!out.status.success(), "{url}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(cause), "{url}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let out = register(&format!("redis://:s3cret-pw@127.0.0.1:{port}"));
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("'zed' is registered"), "{said}");
}

/// A URL with a password for a Redis that has none set is said to be
/// that, not a wrong password (Redis refuses such an `AUTH` all the same:
/// before, the line read "Redis refused the password in the URL", and an
/// operator checked a password Redis does not have).
#[test]
fn a_password_given_to_a_redis_without_one_is_said_to_be_that() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args([
            "--register-name",
            "zed",
            "--redis",
            &format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port),
        ])
        .env("IMCHAT_ACCOUNT_PASSWORD", "abcdefgh12")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("Redis has no password set, but the URL gives one"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `--reset-name` of a user connected to a server of the cluster removes
/// the registration but says that the user keeps the name until it leaves.
#[test]
fn reset_name_through_redis_of_a_connected_user_says_it_keeps_the_name() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url(), &[]);
    let b = Server::start(&redis.url(), &[]);
    register(a.addr, "alice", "wonderland");
    // The quit after registering releases the name a moment later: her
    // new claim comes after that.
    wait_released(&redis.url(), "alice");
    let alice = Raw::join_moved(a.addr, "alice", Some("wonderland"));
    let said = reset_name(&redis.url(), "ALICE");
    assert!(
        said.contains("the registration of 'ALICE' is removed, but 'ALICE' is connected"),
        "{said}"
    );
    assert!(said.contains("until it leaves"), "{said}");
    assert!(!said.contains("the name is free"), "{said}");
    // True: the name is still hers on every server.
    let (code, _) = Raw::hello(b.addr, "alice", None).refusal();
    assert_eq!(code, RefuseCode::NAME_TAKEN);
    quit(alice);
    // Gone, and no longer protected: anyone may take the name.
    quit(Raw::join_moved(b.addr, "alice", None));
}

/// A name claimed for a `Hello` whose password check outlasts the lease
/// (here 1.5 s, the check made 2.5 s by a fail point: a busy machine) stays
/// claimed all along, and after the welcome: the claim is renewed while the
/// check goes on, so no other server can take the name meanwhile.
#[test]
fn a_name_stays_claimed_while_its_password_check_outlasts_the_lease() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_env(
        &redis.url(),
        &[],
        &[("FAILPOINTS", "account-check=sleep(2500)")],
    );
    let b = Server::start(&redis.url(), &[]);
    register(a.addr, "alice", "wonderland");
    wait_released(&redis.url(), "alice");
    let addr = a.addr;
    let joining = thread::spawn(move || Raw::join_moved(addr, "alice", Some("wonderland")));
    // Claimed once the Hello is in; never free from then on, through the
    // check and a lease past the welcome.
    let deadline = Instant::now() + WAIT;
    while !name_claimed(&redis.url(), "alice") {
        assert!(Instant::now() < deadline, "the name was never claimed");
        thread::sleep(Duration::from_millis(20));
    }
    let mut welcomed_at = None;
    while welcomed_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(2000)) {
        assert!(
            name_claimed(&redis.url(), "alice"),
            "the claim ran out while alice's password was checked (welcomed: {})",
            welcomed_at.is_some()
        );
        if welcomed_at.is_none() && joining.is_finished() {
            welcomed_at = Some(Instant::now());
        }
        assert!(Instant::now() < deadline, "alice was never welcomed");
        thread::sleep(Duration::from_millis(20));
    }
    let alice = joining.join().unwrap();
    let (code, _) = Raw::hello(b.addr, "alice", None).refusal();
    assert_eq!(code, RefuseCode::NAME_TAKEN);
    quit(alice);
}

/// The targets of the bans in Redis (`imchat:bans`).
fn bans_in_redis(url: &str) -> Vec<String> {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(WAIT)
        .unwrap();
    redis::cmd("HKEYS")
        .arg("imchat:bans")
        .query(&mut con)
        .unwrap()
}

/// Waits until Redis holds a ban of each of `targets`.
fn wait_bans_in_redis(url: &str, targets: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let bans = bans_in_redis(url);
        if targets.iter().all(|t| bans.iter().any(|b| b == t)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis never got the bans {targets:?} back; it has {bans:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the log of `s` has a line containing `needle`: the line.
fn wait_logged(s: &Server, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = s.log().lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "never logged {needle:?}: {}",
            s.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Redis restarted without persistence (killed, then started empty): the
/// bans the live servers hold are written back, so they refuse on every
/// server and on one started afterwards; the registrations, which only
/// Redis held, are gone, and every server says so in its log.
#[test]
fn bans_outlive_a_redis_restarted_empty() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let url = redis.url();
    let mut a = Server::start(&url, &[]);
    let mut b = Server::start(&url, &[]);
    register(a.addr, "alice", "wonderland");
    a.console("ban carol rude");
    a.expect("banned carol");
    b.console("ban eve");
    b.expect("banned eve");
    for s in [&a, &b] {
        wait_ban(s.addr, "carol", true);
        wait_ban(s.addr, "eve", true);
    }
    redis.restart();
    wait_bans_in_redis(&url, &["carol", "eve"]);
    for s in [&a, &b] {
        wait_ban(s.addr, "carol", true);
        wait_ban(s.addr, "eve", true);
    }
    for s in [&mut a, &mut b] {
        s.console("bans");
        let bans = s.expect("(by console");
        assert!(
            bans.contains("carol (by console: rude)") && bans.contains("eve (by console)"),
            "{bans}"
        );
    }
    // A server started now reads them from Redis.
    let c = Server::start(&url, &[]);
    for name in ["carol", "eve"] {
        let (code, _) = Raw::hello(c.addr, name, None).refusal();
        assert_eq!(code, RefuseCode::BANNED, "{name}");
    }
    // What no server can give back is said, once, by each that lived
    // through it.
    for s in [&a, &b] {
        let line = wait_logged(s, "lost its data");
        assert!(
            line.contains("WARN") && line.contains("registrations") && line.contains("persistence"),
            "{line}"
        );
        assert!(!s.log().contains("wonderland"));
    }
    assert!(!c.log().contains("lost its data"), "{}", c.log());
}

/// Bans made while Redis is down (killed, not paused) are written once it
/// is back, even empty, and so reach the other server.
#[test]
fn a_ban_made_while_redis_is_down_reaches_the_others_once_it_is_back_empty() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let url = redis.url();
    let mut a = Server::start(&url, &[]);
    let mut b = Server::start(&url, &[]);
    redis.stop();
    a.console("ban carol rude");
    a.expect("banned carol");
    // Both servers find Redis gone (the ban poll, every second, and the
    // lease loop, every 0.5 s) before it is back.
    // A's poll has tried to write the ban again meanwhile, and failed:
    // another ban is still taken, and kept to be written too.
    thread::sleep(Duration::from_secs(2));
    a.console("ban dave");
    a.expect("banned dave");
    thread::sleep(Duration::from_secs(1));
    redis.start_again();
    wait_bans_in_redis(&url, &["carol", "dave"]);
    for s in [&b, &a] {
        wait_ban(s.addr, "carol", true);
        wait_ban(s.addr, "dave", true);
    }
    b.console("bans");
    let bans = b.expect("(by console");
    assert!(
        bans.contains("carol (by console: rude)") && bans.contains("dave (by console)"),
        "{bans}"
    );
}

/// Redis paused (SIGSTOP) past the lease, not restarted, kept its data:
/// nothing is written back into it, so an unban made while it was paused
/// stays, and no server says that Redis lost its data.
#[test]
fn an_unban_made_while_redis_is_paused_stays() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let url = redis.url();
    let mut a = Server::start(&url, &[]);
    let mut b = Server::start(&url, &[]);
    a.console("ban carol rude");
    a.expect("banned carol");
    wait_ban(b.addr, "carol", true);
    let paused = Instant::now();
    redis_harness::signal(redis.child.id(), "-STOP");
    b.console("unban carol");
    b.expect("unbanned carol");
    // Past the lease: every heartbeat has run out when Redis goes on.
    thread::sleep(Duration::from_secs(3).saturating_sub(paused.elapsed()));
    redis_harness::signal(redis.child.id(), "-CONT");
    for s in [&a, &b] {
        wait_ban(s.addr, "carol", false);
    }
    // Some polls and lease rounds later, still lifted everywhere.
    thread::sleep(Duration::from_secs(3));
    assert!(bans_in_redis(&url).is_empty(), "{:?}", bans_in_redis(&url));
    for s in [&a, &b] {
        wait_ban(s.addr, "carol", false);
        assert!(!s.log().contains("lost its data"), "{}", s.log());
    }
}

/// The mark of Redis's data, if any.
fn mark_in_redis(url: &str) -> Option<String> {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(WAIT)
        .unwrap();
    redis::cmd("GET")
        .arg("imchat:mark")
        .query(&mut con)
        .unwrap()
}

/// A Redis that evicts keys loses the mark of its data again and again
/// (here deleted three times, each once the server has set it anew): the
/// server says it lost its data once, not at every poll that finds it.
#[test]
fn data_lost_again_and_again_is_said_once() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let url = redis.url();
    let s = Server::start(&url, &[]);
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection_with_timeout(WAIT)
        .unwrap();
    for round in 0..3 {
        let Some(before) = mark_in_redis(&url) else {
            panic!("round {round}: no mark");
        };
        redis::cmd("DEL")
            .arg("imchat:mark")
            .query::<()>(&mut con)
            .unwrap();
        // Set anew by the server's next poll, which found it gone.
        let deadline = Instant::now() + WAIT;
        loop {
            match mark_in_redis(&url) {
                Some(m) if m != before => break,
                _ => {}
            }
            assert!(Instant::now() < deadline, "round {round}: mark never set");
            thread::sleep(Duration::from_millis(50));
        }
    }
    // The polls that found the first two losses are over (the poll
    // thread is one): their warnings would be in the log by now.
    wait_logged(&s, "lost its data");
    let log = s.log();
    assert_eq!(log.matches("lost its data").count(), 1, "{log}");
}
