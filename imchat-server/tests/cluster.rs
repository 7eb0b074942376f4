//! Several servers as one chat through Redis (`--redis`): each test starts
//! its own `redis-server` on a free port of 127.0.0.1 and several
//! `imchat-server`s, and stops every one of them by its handle. Without
//! `redis-server` on the PATH the tests say loudly that they did not run;
//! with `IMCHAT_REQUIRE_REDIS=1` (as in CI) that is a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{
    ChatKind, ClientMessage, Decoder, Departure, Encode, ErrorCode, LeaveReason, MessageId,
    NoticeCode, PresenceEvent, Recipient, RefuseCode, ResumeRequest, ResumeToken, ServerMessage,
    Username, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

mod common;
mod redis_harness;
use common::client_bin;
use redis_harness::{free_port, signal, Redis};

const WAIT: Duration = Duration::from_secs(20);
/// The lease the servers run with in these tests.
const LEASE_SECS: &str = "1.5";

/// An `imchat-server` in the cluster, stopped by its handle.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(redis_url: &str) -> Server {
        Server::start_with_grace(redis_url, 0)
    }

    /// With a grace period of `grace` seconds: sessions can be resumed.
    fn start_with_grace(redis_url: &str, grace: u32) -> Server {
        Server::start_with_env(redis_url, grace, &[], &[])
    }

    /// With `env` set, and `args` given, as well.
    fn start_with_env(redis_url: &str, grace: u32, env: &[(&str, &Path)], args: &[&str]) -> Server {
        let s = Server::launch(redis_url, grace, env, args);
        // In the cluster once a name can be claimed. A server that asks a
        // password refuses the probe: its log says it joined.
        let deadline = Instant::now() + WAIT;
        if args.contains(&"--password-file") {
            while !s.log().contains("cluster: joined through") {
                assert!(
                    Instant::now() < deadline,
                    "the server never joined the cluster"
                );
                thread::sleep(Duration::from_millis(50));
            }
            return s;
        }
        loop {
            let mut p = Peer::connect(s.addr);
            let probe = format!("probe{}", free_port());
            if p.hello(&probe).is_ok() {
                p.quit();
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the server never joined the cluster: {}",
                std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Started and listening, maybe not in the cluster yet.
    fn launch(redis_url: &str, grace: u32, env: &[(&str, &Path)], args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
            .arg("127.0.0.1:0")
            .arg("--shared-dir")
            .arg(dir.path())
            .arg("--log-file")
            .arg(dir.path().join("server.log"))
            .args(if args.contains(&"--cluster-lease-secs") {
                &[][..]
            } else {
                &["--cluster-lease-secs", LEASE_SECS][..]
            })
            .args(["--grace-secs", &grace.to_string()])
            // Every peer of these tests comes from 127.0.0.1: no caps
            // per address (they have tests of their own).
            .args(["--max-per-address", "1000", "--max-joins-per-address", "0"])
            .args(["--address-rate-share", "0"])
            .args(args)
            .env("IMCHAT_REDIS_URL", redis_url)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            let lines = lines.clone();
            thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l.clone());
                    let _ = tx.send(l);
                }
            });
        }
        let deadline = Instant::now() + WAIT;
        while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Some(addr) = l.strip_prefix("imchat-server listening on ") {
                return Server {
                    child,
                    addr: addr.parse().unwrap(),
                    dir,
                    lines,
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not start: {:?}", lines.lock().unwrap());
    }

    fn kill9(mut self) {
        signal(self.child.id(), "-KILL");
        let _ = self.child.wait();
    }

    /// Stops the server as an operator does (SIGTERM), and waits until it
    /// has exited.
    fn terminate(mut self) {
        signal(self.child.id(), "-TERM");
        let _ = self.child.wait();
    }

    /// The log file so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Types `line` on the server's console.
    fn console(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (`WAIT` at most) until the server's output or its log has a
    /// line containing `needle`.
    fn wait_line(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = std::fs::read_to_string(self.dir.path().join("server.log"));
            if log.is_ok_and(|l| l.contains(needle))
                || self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no line containing {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol client; a thread reads what the server sends.
struct Peer {
    name: String,
    stream: TcpStream,
    rx: Receiver<ServerMessage>,
    got: Vec<ServerMessage>,
    next_id: u64,
    /// The token and epoch of the last `Welcome`.
    token: ResumeToken,
    epoch: u64,
    /// Whether the last `Welcome` resumed a session.
    resumed: bool,
    /// Its push's credit and end, as its reader thread sees them.
    push: Arc<PushState>,
}

/// What a raw pusher's data thread needs to know of its push (one at a
/// time): how far the server lets it send (`PushCredit`), and whether it
/// ended (a `Cancel` or a `PushDone` came).
#[derive(Default)]
struct PushState {
    credit: AtomicU64,
    ended: AtomicBool,
    /// Bytes sent so far, and how often the sender waited for credit.
    sent: AtomicU64,
    waits: AtomicU64,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let (tx, rx) = channel();
        let push = Arc::new(PushState::default());
        let state = push.clone();
        thread::spawn(move || {
            let mut d = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        state.ended.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(n) => d.feed(&buf[..n]),
                }
                while let Ok(Some(m)) = d.next_message() {
                    match &m {
                        ServerMessage::PushCredit { offset, .. } => {
                            state.credit.fetch_max(*offset, Ordering::SeqCst);
                        }
                        ServerMessage::Cancel(c) if !c.id.is_server_chosen() => {
                            state.ended.store(true, Ordering::SeqCst);
                        }
                        ServerMessage::PushDone { .. } => state.ended.store(true, Ordering::SeqCst),
                        _ => {}
                    }
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
        });
        Peer {
            name: String::new(),
            stream,
            rx,
            got: Vec::new(),
            next_id: 1,
            token: ResumeToken::default(),
            epoch: 0,
            resumed: false,
            push,
        }
    }

    fn send(&mut self, m: &ClientMessage) {
        let _ = self.stream.write_all(&m.to_frame());
    }

    /// Says hello as `name`: `Ok` on a welcome, else the refusal's code and text.
    fn hello(&mut self, name: &str) -> Result<(), (RefuseCode, String)> {
        self.hello_with(name, None)
    }

    fn hello_with(
        &mut self,
        name: &str,
        resume: Option<ResumeRequest>,
    ) -> Result<(), (RefuseCode, String)> {
        self.name = name.to_string();
        self.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: Username::new(name).unwrap(),
            resume,
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("an answer to Hello");
            match m {
                ServerMessage::Welcome {
                    token,
                    epoch,
                    resumed,
                    ..
                } => {
                    self.token = token;
                    self.epoch = epoch;
                    self.resumed = resumed.is_some();
                    return Ok(());
                }
                ServerMessage::Refused { code, reason, .. } => return Err((code, reason)),
                other => self.got.push(other),
            }
        }
    }

    fn join(addr: SocketAddr, name: &str) -> Peer {
        let mut p = Peer::connect(addr);
        p.hello(name)
            .unwrap_or_else(|e| panic!("{name} refused: {e:?}"));
        p
    }

    fn say(&mut self, to: Option<&str>, text: &str) {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&ClientMessage::Chat {
            client_id: id,
            to: to.map_or(Recipient::Everyone, |t| {
                Recipient::User(Username::new(t).unwrap())
            }),
            kind: ChatKind::Text,
            text: text.into(),
        });
    }

    fn quit(&mut self) {
        self.send(&ClientMessage::Quit {
            reason: String::new(),
        });
    }

    fn drain(&mut self) {
        self.got.extend(self.rx.try_iter());
    }

    /// Waits until `f` holds for what was received, within `within`.
    fn wait(&mut self, within: Duration, what: &str, f: impl Fn(&[ServerMessage]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if f(&self.got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {within:?}; got {:?}",
                self.name,
                self.got.iter().rev().take(10).collect::<Vec<_>>()
            );
            if let Ok(m) = self.rx.recv_timeout(Duration::from_millis(20)) {
                self.got.push(m);
            }
        }
    }

    /// Waits (`WAIT` at most) for a chat message whose text is `text`.
    fn wait_chat(&mut self, text: &str) {
        self.wait(WAIT, text, |g| {
            g.iter()
                .any(|m| matches!(m, ServerMessage::Chat(c) if c.text == text))
        });
    }

    /// Chats received: (sender, private, text).
    fn chats(&self) -> Vec<(String, bool, String)> {
        self.got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Chat(c) if !c.history => {
                    Some((c.from.to_string(), c.private, c.text.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn who(&mut self) -> Vec<String> {
        self.who_away().into_iter().map(|(n, _)| n).collect()
    }

    /// `/who`: each user's name and whether it is listed as away.
    fn who_away(&mut self) -> Vec<(String, bool)> {
        self.got.retain(|m| !matches!(m, ServerMessage::Who { .. }));
        self.send(&ClientMessage::Who);
        self.wait(WAIT, "who", |g| {
            g.iter().any(|m| matches!(m, ServerMessage::Who { .. }))
        });
        self.got
            .iter()
            .find_map(|m| match m {
                ServerMessage::Who { users } => Some(
                    users
                        .iter()
                        .map(|u| (u.name.to_string(), u.away_secs.is_some()))
                        .collect(),
                ),
                _ => None,
            })
            .unwrap()
    }

    /// Waits until `/who` lists exactly `names` (sorted).
    fn wait_who(&mut self, names: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        let mut want: Vec<String> = names.iter().map(ToString::to_string).collect();
        want.sort_by(|a, b| imchat_core::name_order(a, b));
        loop {
            let got = self.who();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: who is {got:?}, not {want:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Peer {
    /// Waits until `/who` marks `name` away (`true`) or here (`false`).
    fn wait_away(&mut self, name: &str, away: bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.who_away();
            if got.iter().any(|(n, a)| n == name && *a == away) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: who is {got:?}, not {name} with away {away}",
                self.name
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A user of one server whose connection is lost is listed as away by
/// `/who` on the other servers too, and as here again once she resumes:
/// on her own server, then (lost again) on another one.
#[test]
fn a_user_away_on_her_server_is_listed_away_everywhere_until_she_is_back() {
    let Some(redis) = Redis::start() else { return };
    let (a, b, mut alice, mut bob) = alice_and_bob_resumable(&redis);
    assert_eq!(
        bob.who_away(),
        vec![("alice".to_string(), false), ("bob".to_string(), false)]
    );
    // Her link breaks: a keeps her session, and b hears she is away.
    alice.stream.shutdown(Shutdown::Both).unwrap();
    bob.wait_away("alice", true);
    // Back on her own server: b lists her as here again.
    let mut again = resume_on(&mut alice, a.addr);
    bob.wait_away("alice", false);
    // Lost again, and back on b this time.
    again.stream.shutdown(Shutdown::Both).unwrap();
    bob.wait_away("alice", true);
    let mut moved = resume_on(&mut again, b.addr);
    bob.wait_away("alice", false);
    assert_eq!(
        moved.who_away(),
        vec![("alice".to_string(), false), ("bob".to_string(), false)]
    );
}

/// What `got` told, in order, of `name` going away ("away") and coming
/// back ("back").
fn aways_of(got: &[ServerMessage], name: &str) -> Vec<&'static str> {
    got.iter()
        .filter_map(|m| match m {
            ServerMessage::Presence(events) => Some(events),
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            PresenceEvent::Away { user, .. } if user.as_str() == name => Some("away"),
            PresenceEvent::Back { user, .. } if user.as_str() == name => Some("back"),
            _ => None,
        })
        .collect()
}

/// A member of another server is told live when a user's connection is
/// lost and when she is back: resumed on her own server, then (lost again)
/// on the member's server.
#[test]
fn a_member_of_another_server_is_told_live_when_a_user_is_away_and_back() {
    let Some(redis) = Redis::start() else { return };
    let (a, b, mut alice, mut bob) = alice_and_bob_resumable(&redis);
    alice.stream.shutdown(Shutdown::Both).unwrap();
    bob.wait(WAIT, "alice away", |g| aways_of(g, "alice") == ["away"]);
    let mut again = resume_on(&mut alice, a.addr);
    bob.wait(WAIT, "alice back", |g| {
        aways_of(g, "alice") == ["away", "back"]
    });
    again.stream.shutdown(Shutdown::Both).unwrap();
    bob.wait(WAIT, "alice away again", |g| {
        aways_of(g, "alice") == ["away", "back", "away"]
    });
    let mut moved = resume_on(&mut again, b.addr);
    bob.wait(WAIT, "alice back on b", |g| {
        aways_of(g, "alice") == ["away", "back", "away", "back"]
    });
    // Never told of herself; and bob never saw her leave.
    moved.who();
    assert!(aways_of(&moved.got, "alice").is_empty(), "{:?}", moved.got);
    assert!(!bob.got.iter().any(|m| matches!(m,
        ServerMessage::Presence(es) if es.iter().any(|e| matches!(e, PresenceEvent::Left(_))))));
}

/// A server that joins the cluster after a user of another server lost
/// her connection lists her as away too, from Redis, not only from what
/// the stream tells from then on.
#[test]
fn a_server_that_joins_later_lists_a_user_away_before_as_away() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_grace(&redis.url(), 30);
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(a.addr, "bob");
    alice.stream.shutdown(Shutdown::Both).unwrap();
    bob.wait_away("alice", true);
    let b = Server::start_with_grace(&redis.url(), 30);
    let mut carol = Peer::join(b.addr, "carol");
    carol.wait_who(&["alice", "bob", "carol"], WAIT);
    assert_eq!(
        carol.who_away(),
        vec![
            ("alice".to_string(), true),
            ("bob".to_string(), false),
            ("carol".to_string(), false)
        ]
    );
    // Back: b hears it from the stream.
    let _back = resume_on(&mut alice, a.addr);
    carol.wait_away("alice", false);
}

fn has_join(g: &[ServerMessage], who: &str) -> bool {
    g.iter().any(|m| match m {
        ServerMessage::Joined { user, .. } => user.as_str() == who,
        ServerMessage::Presence(es) => es
            .iter()
            .any(|e| matches!(e, PresenceEvent::Joined { user, .. } if user.as_str() == who)),
        _ => false,
    })
}

fn has_left(g: &[ServerMessage], who: &str) -> bool {
    g.iter().any(|m| match m {
        ServerMessage::Left(d) => d.user.as_str() == who,
        ServerMessage::Presence(es) => es
            .iter()
            .any(|e| matches!(e, PresenceEvent::Left(d) if d.user.as_str() == who)),
        _ => false,
    })
}

#[test]
fn a_user_who_connects_while_the_server_first_joins_the_cluster_is_let_in() {
    let Some(redis) = Redis::start() else { return };
    // Redis answers nothing for half a second: the server's first join
    // of the cluster waits for it, and so does alice's name claim.
    let pid = redis.child.id();
    signal(pid, "-STOP");
    let a = Server::launch(&redis.url(), 0, &[], &[]);
    let mut alice = Peer::connect(a.addr);
    let go_on = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        signal(pid, "-CONT");
    });
    let answer = alice.hello("alice");
    go_on.join().unwrap();
    assert_eq!(answer, Ok(()), "alice was refused");
    // Redis gone when the server starts: refused, in words, and soon.
    drop(redis);
    let b = Server::launch(&format!("redis://127.0.0.1:{}", free_port()), 0, &[], &[]);
    let asked = Instant::now();
    let answer = Peer::connect(b.addr).hello("bob");
    assert!(
        matches!(&answer, Err((_, why)) if why.contains("cannot reach the rest of the chat")),
        "{answer:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn servers_joining_a_quiet_cluster_read_it_to_its_end_at_once() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    // Before, the first read of a quiet stream waited for something new
    // for a second, longer than the join waits for it (a third of the
    // tests' 1.5 s lease): the join went on without it, and said so.
    for s in [&a, &b] {
        let log = s.log();
        assert!(log.contains("cluster: joined through"), "{log}");
        assert!(!log.contains("not read to its end"), "{log}");
    }
}

#[test]
fn two_servers_are_one_room() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    alice.wait(WAIT, "bob's join", |g| has_join(g, "bob"));
    alice.wait_who(&["alice", "bob"], WAIT);
    bob.wait_who(&["alice", "bob"], WAIT);
    // The same name, in another case or in look-alike letters (a
    // Cyrillic а, full-width letters), on the other server: taken.
    for same in [
        "ALICE",
        "\u{430}lice",
        "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
    ] {
        let mut dup = Peer::connect(b.addr);
        let refused = dup.hello(same).unwrap_err();
        assert_eq!(refused.0, RefuseCode::NAME_TAKEN, "{same}: {refused:?}");
    }

    let mut carol = Peer::join(a.addr, "carol");
    bob.wait(WAIT, "carol's join", |g| has_join(g, "carol"));
    alice.say(None, "hello everyone");
    // Once bob has it, server a has queued it for carol too (it routes
    // before it publishes): the two messages reach carol in this order.
    // Sent at once, they race between the two servers.
    bob.wait_chat("hello everyone");
    bob.say(Some("carol"), "psst carol");
    carol.wait(WAIT, "both messages", |g| {
        g.iter()
            .filter(|m| matches!(m, ServerMessage::Chat(_)))
            .count()
            >= 2
    });
    assert_eq!(
        carol.chats(),
        vec![
            ("alice".into(), false, "hello everyone".into()),
            ("bob".into(), true, "psst carol".into())
        ]
    );
    // Bob got an ack for its private message, not an error.
    bob.wait(WAIT, "the ack", |g| {
        g.iter().any(|m| matches!(m, ServerMessage::Ack { .. }))
    });
    assert!(!bob
        .got
        .iter()
        .any(|m| matches!(m, ServerMessage::Error { .. })));
    // The private message went to carol only.
    thread::sleep(Duration::from_millis(300));
    alice.drain();
    assert!(!alice.chats().iter().any(|c| c.2 == "psst carol"));

    carol.quit();
    bob.wait(WAIT, "carol's leave", |g| has_left(g, "carol"));
    bob.wait_who(&["alice", "bob"], WAIT);
    // Carol's name is free again, on either server.
    let _carol = Peer::join(b.addr, "Carol");
    drop((a, b));
}

#[test]
fn fifty_clients_racing_for_one_name_on_three_servers_one_wins() {
    let Some(redis) = Redis::start() else { return };
    let servers: Vec<Server> = (0..3).map(|_| Server::start(&redis.url())).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let go = Arc::new(std::sync::Barrier::new(50));
    let racers: Vec<_> = (0..50)
        .map(|i| {
            let addr = addrs[i % 3];
            let go = go.clone();
            thread::spawn(move || {
                let mut p = Peer::connect(addr);
                go.wait();
                // Mixed case: the same name for the cluster.
                let name = if i % 2 == 0 { "Racer" } else { "racer" };
                let r = p.hello(name);
                (r, p)
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let winners = results.iter().filter(|(r, _)| r.is_ok()).count();
    assert_eq!(
        winners,
        1,
        "{:?}",
        results.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for (r, _) in &results {
        if let Err((code, _)) = r {
            assert_eq!(*code, RefuseCode::NAME_TAKEN);
        }
    }
    drop(servers);
}

/// Two Hellos for one name on one server: the first claims it in Redis
/// and is slow to reach the hub (the tests' fail point), the second finds
/// the name this server's already and joins; the first is then refused
/// as a name taken. Its end must not release the claim: the name is the
/// second's, and another server must still refuse it.
#[test]
fn a_refused_hello_does_not_free_a_name_another_connection_joined_with() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_env(
        &redis.url(),
        0,
        &[(
            "FAILPOINTS",
            Path::new("cluster-name-claimed=return(racer)"),
        )],
        &[],
    );
    let b = Server::start(&redis.url());
    let addr = a.addr;
    let slow = thread::spawn(move || {
        let mut p = Peer::connect(addr);
        p.hello("racer").map(|()| p)
    });
    // The first Hello has claimed the name (Redis has the claim) and waits.
    let mut con = redis_con(&redis);
    let deadline = Instant::now() + WAIT;
    while !redis::cmd("EXISTS")
        .arg("imchat:name:racer")
        .query::<bool>(&mut con)
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the first Hello never came");
        thread::sleep(Duration::from_millis(20));
    }
    let mut fast = Peer::connect(a.addr);
    fast.hello("Racer").expect("the second Hello joins");
    let refused = slow.join().unwrap().map(|_| ()).unwrap_err();
    assert_eq!(refused.0, RefuseCode::NAME_TAKEN, "{refused:?}");
    // At once, before a's lease round could claim it again for its user:
    // the claim is still there (the session record a keeps for its user
    // would refuse b's claim too, once written).
    assert!(
        redis::cmd("EXISTS")
            .arg("imchat:name:racer")
            .query::<bool>(&mut con)
            .unwrap(),
        "the refused Hello released the name of a's user"
    );
    let mut other = Peer::connect(b.addr);
    let answer = other.hello("racer");
    assert_eq!(
        answer.map_err(|e| e.0),
        Err(RefuseCode::NAME_TAKEN),
        "another server took the name of a's user"
    );
}

#[test]
fn a_killed_server_leaves_its_users_everywhere_and_frees_their_names() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut alice = Peer::join(a.addr, "alice");
    let _bob = Peer::join(b.addr, "bob");
    let _bea = Peer::join(b.addr, "bea");
    alice.wait_who(&["alice", "bea", "bob"], WAIT);
    let killed = Instant::now();
    b.kill9();
    // Lease 1.5 s, checked every 0.5 s: well within 5 s.
    let bound = Duration::from_secs(5);
    alice.wait(bound, "bob and bea leaving", |g| {
        has_left(g, "bob") && has_left(g, "bea")
    });
    eprintln!(
        "users of the killed server left after {:?}",
        killed.elapsed()
    );
    alice.wait_who(&["alice"], WAIT);
    let _bob = Peer::join(a.addr, "bob");
}

#[test]
fn redis_stopped_and_restarted_local_service_goes_on_and_the_cluster_heals() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut alice = Peer::join(a.addr, "alice");
    let mut ann = Peer::join(a.addr, "ann");
    let mut bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "ann", "bob"], WAIT);

    // SIGSTOP: Redis hangs. Local chat goes on; users are told; new
    // names are refused with a clear reason.
    signal(redis.child.id(), "-STOP");
    wait_unreachable(&mut alice);
    alice.say(None, "while redis sleeps");
    ann.wait_chat("while redis sleeps");
    let mut late = Peer::connect(a.addr);
    let (code, reason) = late.hello("late").unwrap_err();
    assert_eq!(code, RefuseCode::SERVER_FULL);
    assert!(reason.contains("cannot reach"), "{reason}");
    signal(redis.child.id(), "-CONT");
    // Nothing accepted is lost: bob gets what alice said meanwhile.
    bob.wait_chat("while redis sleeps");
    alice.wait(WAIT, "the all-clear", |g| {
        g.iter().any(
            |m| matches!(m, ServerMessage::Notice { code, text } if *code == imchat_core::NoticeCode::CLUSTER_BACK && text.contains("reachable again")),
        )
    });
    bob.wait_who(&["alice", "ann", "bob"], WAIT);

    // kill -9 and a new, empty Redis: the servers rejoin by themselves.
    redis.restart();
    alice.wait_who(&["alice", "ann", "bob"], WAIT);
    bob.wait_who(&["alice", "ann", "bob"], WAIT);
    // The accounts' own Redis link reconnects on its next use, at most
    // RETRY_AFTER after its last failed try: a client refused with "try
    // again later" meanwhile gets in when it does.
    let deadline = Instant::now() + WAIT;
    let _late = loop {
        let mut p = Peer::connect(a.addr);
        match p.hello("late") {
            Ok(()) => break p,
            Err((_, reason)) if reason.contains("try again") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("late refused: {e:?}"),
        }
    };
    bob.wait_who(&["alice", "ann", "bob", "late"], WAIT);
    bob.got.clear();
    alice.say(None, "after the restart");
    bob.wait_chat("after the restart");
    // Taken names are still taken across the cluster.
    let mut dup = Peer::connect(b.addr);
    assert_eq!(dup.hello("ann").unwrap_err().0, RefuseCode::NAME_TAKEN);
}

/// A capital I passes for l: `aIice` is refused on one server while
/// `alice` is online on another (the server knows her from the cluster;
/// Redis claims names by their key, under which the two differ), and the
/// name it asked for is free again once she left.
#[test]
fn a_capital_i_for_l_is_refused_beside_a_user_of_another_server() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    bob.wait_who(&["alice", "bob"], WAIT);
    let mut fake = Peer::connect(b.addr);
    assert_eq!(
        fake.hello("aIice").unwrap_err(),
        (
            RefuseCode::NAME_TAKEN,
            "the username 'aIice' is already taken (as 'alice')".to_string()
        )
    );
    alice.quit();
    bob.wait_who(&["bob"], WAIT);
    // Its claim in Redis was let go with the refusal.
    Peer::join(b.addr, "aIice");
}

/// A user whose connection broke while Redis could not be reached
/// resumes on its own server: its name is that server's already, and the
/// server serves its own users through an outage.
#[test]
fn a_session_resumes_on_its_own_server_while_redis_cannot_be_reached() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, _b, mut alice, mut bob) = alice_and_bob_resumable(&redis);
    signal(redis.child.id(), "-STOP");
    wait_unreachable(&mut alice);
    let (mut back, answer) = try_resume_on(&mut alice, a.addr);
    // A newcomer is refused all the same.
    let mut late = Peer::connect(a.addr);
    let refused = late.hello("late");
    signal(redis.child.id(), "-CONT");
    answer.unwrap_or_else(|e| panic!("alice could not resume on her own server: {e:?}"));
    assert!(back.resumed, "alice joined afresh instead of resuming");
    assert!(
        matches!(refused, Err((RefuseCode::SERVER_FULL, _))),
        "{refused:?}"
    );
    // Told of the outage she came back into, after her welcome.
    back.wait(
        WAIT,
        "the outage, told to the resumed session",
        told_unreachable,
    );
    back.say(None, "back again");
    bob.wait_chat("back again");
}

/// Waits until `p` is told that the cluster cannot be reached.
fn wait_unreachable(p: &mut Peer) {
    p.wait(WAIT, "the notice", told_unreachable);
}

/// Whether `got` holds the notice that the cluster cannot be reached.
fn told_unreachable(got: &[ServerMessage]) -> bool {
    got.iter().any(is_unreachable_notice)
}

/// Whether `m` is the notice that the cluster cannot be reached.
fn is_unreachable_notice(m: &ServerMessage) -> bool {
    matches!(m, ServerMessage::Notice { code, text } if *code == NoticeCode::CLUSTER_DOWN && text.contains("cannot be reached"))
}

/// [`alice_and_bob`], with sessions that resume (a grace of 30 s).
fn alice_and_bob_resumable(redis: &Redis) -> (Server, Server, Peer, Peer) {
    let a = Server::start_with_grace(&redis.url(), 30);
    let b = Server::start_with_grace(&redis.url(), 30);
    let mut alice = Peer::join(a.addr, "alice");
    let bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    (a, b, alice, bob)
}

/// Two servers, Alice on the first and Bob on the second, seeing each other.
fn alice_and_bob(redis: &Redis) -> (Server, Server, Peer, Peer) {
    alice_and_bob_at(&redis.url(), &redis.url())
}

/// [`alice_and_bob`], the first server through `url_a`, the second `url_b`.
fn alice_and_bob_at(url_a: &str, url_b: &str) -> (Server, Server, Peer, Peer) {
    let a = Server::start(url_a);
    let b = Server::start(url_b);
    let mut alice = Peer::join(a.addr, "alice");
    let bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    (a, b, alice, bob)
}

/// A message published just as Redis hangs (its `XADD` waits in Redis's
/// socket, unanswered) is sent again once Redis is back, after the lease
/// ran out and the server rejoined: it still reaches each user once.
#[test]
fn a_publish_left_unanswered_by_a_hung_redis_is_delivered_once() {
    let Some(redis) = Redis::start() else { return };
    let (_a, _b, mut alice, mut bob) = alice_and_bob(&redis);
    signal(redis.child.id(), "-STOP");
    alice.say(None, "as redis hangs");
    wait_unreachable(&mut alice);
    // Past the lease: a rejoins, and sends again what was not answered.
    thread::sleep(Duration::from_secs(3));
    signal(redis.child.id(), "-CONT");
    bob.wait_chat("as redis hangs");
    alice.say(None, "after");
    bob.wait_chat("after");
    thread::sleep(Duration::from_millis(500));
    bob.drain();
    assert_eq!(count(&bob, "as redis hangs"), 1, "{:?}", texts(&bob));
}

/// A TCP forwarder on 127.0.0.1 that can cut every connection through it
/// and refuse new ones until it is restored, or hang the connections it
/// has (they stay open and carry nothing) while new ones go through.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Connections opened before the last [`Proxy::hang`] carry nothing.
    hung: Arc<AtomicU64>,
    /// Nothing goes through, either way, on any connection, until
    /// [`Proxy::resume`]; then what was held goes on.
    paused: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let hung = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let (c, h, o, s) = (cut.clone(), hung.clone(), open.clone(), stop.clone());
        let p = paused.clone();
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                o.lock().unwrap().push(client.try_clone().unwrap());
                o.lock().unwrap().push(server.try_clone().unwrap());
                let born = h.load(Ordering::SeqCst);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let h = h.clone();
                    let (p, s) = (p.clone(), s.clone());
                    thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while p.load(Ordering::SeqCst) && !s.load(Ordering::SeqCst) {
                                thread::sleep(Duration::from_millis(5));
                            }
                            if h.load(Ordering::SeqCst) != born {
                                // Hung: what comes is dropped, and the
                                // sockets stay open (`open` holds them).
                                return;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            cut,
            hung,
            paused,
            open,
            stop,
        }
    }

    /// Holds everything that comes, on every connection (a network that
    /// stops carrying anything, without dropping it), until
    /// [`Proxy::resume`].
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// The connections open now carry nothing from here on and stay open
    /// (a firewall or NAT that forgot them, say); new ones go through.
    fn hang(&self) {
        self.hung.fetch_add(1, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// Server A reaches `redis` through a proxy of the test's, B directly;
/// Alice on A and Bob on B see each other, then the proxy cuts A off and
/// Alice is told.
struct CutOff {
    proxy: Proxy,
    a: Server,
    _b: Server,
    alice: Peer,
    bob: Peer,
}

impl CutOff {
    fn start(redis: &Redis) -> CutOff {
        let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
        let a = Server::start(&format!("redis://{}", proxy.addr));
        let b = Server::start(&redis.url());
        let mut alice = Peer::join(a.addr, "alice");
        let bob = Peer::join(b.addr, "bob");
        alice.wait_who(&["alice", "bob"], WAIT);
        proxy.cut();
        wait_unreachable(&mut alice);
        CutOff {
            proxy,
            a,
            _b: b,
            alice,
            bob,
        }
    }
}

#[test]
fn a_network_cut_between_a_server_and_redis_heals_without_loss() {
    let Some(redis) = Redis::start() else { return };
    let mut cut = CutOff::start(&redis);
    let (alice, bob, proxy) = (&mut cut.alice, &mut cut.bob, &cut.proxy);
    // What each saw before the cut (bob joined after alice).
    alice.drain();
    bob.drain();
    let marks = (alice.got.len(), bob.got.len());
    for i in 0..5 {
        alice.say(None, &format!("cut {i}"));
    }
    // The cut server's lease runs out: bob sees alice leave.
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    proxy.restore();
    // Back: alice is announced again and what she said meanwhile arrives, once, in order.
    bob.wait(WAIT, "alice's messages", |g| {
        g.iter()
            .filter(|m| matches!(m, ServerMessage::Chat(c) if c.text.starts_with("cut ")))
            .count()
            >= 5
    });
    thread::sleep(Duration::from_millis(300));
    bob.drain();
    let got: Vec<String> = bob.chats().into_iter().map(|c| c.2).collect();
    assert_eq!(got, (0..5).map(|i| format!("cut {i}")).collect::<Vec<_>>());
    bob.wait_who(&["alice", "bob"], WAIT);
    // In the stream, a's announcement of alice on its return comes before
    // what she said while it was cut off.
    assert_joined_before(&redis, "alice", "cut 0");
    // Bob saw alice leave once and come back once; alice never saw bob
    // leave or join (he never left).
    thread::sleep(Duration::from_secs(2));
    bob.drain();
    alice.drain();
    assert_eq!(
        presence_of(&bob.got[marks.1..], "alice"),
        ["left", "joined"]
    );
    assert_eq!(
        presence_of(&alice.got[marks.0..], "bob"),
        Vec::<&str>::new()
    );
}

/// A network that stops carrying anything between a server and Redis, past
/// the lease, then goes on: the publish of alice's first messages goes out
/// and is not answered, so her server sends it again when it is back,
/// ahead of its rejoin's announcements (it may be in the stream already,
/// so it keeps its place). Bob sees alice leave, join again, then what
/// she said meanwhile, once and in order: never a message of hers between
/// her leave and her join (before, those of the first seconds of the cut
/// came before her join).
#[test]
fn a_server_back_from_a_stalled_network_shows_its_users_join_before_their_words() {
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let a = Server::start_with_grace(&format!("redis://{}", proxy.addr), 0);
    let b = Server::start_with_grace(&redis.url(), 0);
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    bob.wait_who(&["alice", "bob"], WAIT);
    thread::sleep(Duration::from_millis(300));
    bob.drain();
    let mark = bob.got.len();
    proxy.pause();
    for i in 0..5 {
        alice.say(None, &format!("stalled {i}"));
        thread::sleep(Duration::from_millis(200));
    }
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    alice.say(None, "stalled 5");
    proxy.resume();
    bob.wait(WAIT, "alice's messages", |g| {
        g.iter()
            .filter(|m| matches!(m, ServerMessage::Chat(c) if c.text.starts_with("stalled ")))
            .count()
            >= 6
    });
    thread::sleep(Duration::from_millis(500));
    bob.drain();
    let mut seen = Vec::new();
    for m in &bob.got[mark..] {
        match m {
            ServerMessage::Chat(c) if c.from.as_str() == "alice" => seen.push(c.text.clone()),
            _ => {
                for p in presence_of(std::slice::from_ref(m), "alice") {
                    seen.push(format!("alice {p}"));
                }
            }
        }
    }
    let mut expected = vec!["alice left".to_string(), "alice joined".to_string()];
    expected.extend((0..6).map(|i| format!("stalled {i}")));
    assert_eq!(seen, expected);
    drop(a);
}

/// Connections to Redis that hang (open, carrying nothing) while new ones
/// go through: the server gives each up after one timeout, also one that
/// was waiting for the several replies of a transaction (a join's), so
/// what its users say reaches the other servers a few seconds later, not
/// after a timeout per reply.
#[test]
fn a_server_gives_up_a_hung_connection_to_redis_after_one_timeout() {
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let (a, _b, _alice, mut bob) =
        alice_and_bob_at(&format!("redis://{}", proxy.addr), &redis.url());
    proxy.hang();
    let hung = Instant::now();
    // Carol's join is a transaction on the publisher's hung connection.
    let mut carol = Peer::join(a.addr, "carol");
    carol.say(None, "carol after the hang");
    bob.wait_chat("carol after the hang");
    let took = hung.elapsed();
    eprintln!("carol's line reached bob {took:?} after the hang");
    // A timeout (2 s) for the name's claim and one for the publish, a
    // lease round, and a new connection: 4.2-4.7 s here, well within 8 s.
    // A timeout per reply of the join's transaction took 23 s.
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn a_private_message_that_arrives_after_its_receiver_left_is_answered() {
    let Some(redis) = Redis::start() else { return };
    let mut cut = CutOff::start(&redis);
    let (alice, bob, proxy) = (&mut cut.alice, &mut cut.bob, &cut.proxy);
    // bob quits while alice's server cannot hear it: she still sees him.
    bob.quit();
    thread::sleep(Duration::from_millis(300));
    alice.drain();
    assert!(!has_left(&alice.got, "bob"));
    alice.say(Some("bob"), "did you get the notes?");
    proxy.restore();
    // The message reached bob's server after he left: alice is told.
    alice.wait(WAIT, "the answer", |g| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Error { code, text, .. } if *code == ErrorCode::UNKNOWN_USER
                && text == "your private message to bob was not delivered: bob left before it arrived (\"did you get the notes?\")")
        })
    });
    alice.wait(WAIT, "bob leaving", |g| has_left(g, "bob"));
}

/// The joins and leaves of `who` among `g`, in order.
fn presence_of(g: &[ServerMessage], who: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for m in g {
        match m {
            ServerMessage::Left(d) if d.user.as_str() == who => out.push("left"),
            ServerMessage::Joined { user, .. } if user.as_str() == who => out.push("joined"),
            ServerMessage::Presence(es) => {
                for e in es {
                    match e {
                        PresenceEvent::Left(d) if d.user.as_str() == who => out.push("left"),
                        PresenceEvent::Joined { user, .. } if user.as_str() == who => {
                            out.push("joined");
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_frozen_server_rejoins_before_it_publishes_what_it_was_sent() {
    let Some(redis) = Redis::start() else { return };
    let (a, _b, mut alice, mut bob) = alice_and_bob(&redis);
    // a stops past its lease (SIGSTOP: it cannot notice); what alice says
    // waits in its socket.
    signal(a.child.id(), "-STOP");
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    alice.say(None, "said while frozen");
    signal(a.child.id(), "-CONT");
    bob.wait_chat("said while frozen");
    bob.wait_who(&["alice", "bob"], WAIT);
    // In the stream, a's announcement of alice comes before her message
    // (receivers batch joins for a moment, so their clients may show the
    // message first; the stream's order is what every server applies).
    assert_joined_before(&redis, "alice", "said while frozen");
}

/// In the stream, the last announcement of `user` comes before the first
/// entry holding `text`.
fn assert_joined_before(redis: &Redis, user: &str, text: &str) {
    let entries = stream_entries(redis);
    let said = entries
        .iter()
        .position(|e| e.contains(text))
        .expect("the message in the stream");
    let last_join = entries
        .iter()
        .rposition(|e| e.contains(" j ") && e.contains(user))
        .expect("the join in the stream");
    assert!(last_join < said, "{entries:#?}");
}

/// The stream's entries, each as the text of its fields.
fn stream_entries(redis: &Redis) -> Vec<String> {
    let mut con = redis_con(redis);
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("imchat:bus")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            fields
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// A kick made on a server cut off from Redis waits in its queue with the
/// rest, and is carried out by the user's server once the cut heals.
#[test]
fn a_kick_made_while_cut_off_from_redis_is_carried_out_once_back() {
    let Some(redis) = Redis::start() else { return };
    let mut cut = CutOff::start(&redis);
    let (a, bob, proxy) = (&mut cut.a, &mut cut.bob, &cut.proxy);
    a.console("kick bob spam");
    // The operator is told that it waits for the cluster.
    a.wait_line(
        "kicked bob (on another server: carried out once the cluster can be reached again)",
    );
    let kicked = |g: &[ServerMessage]| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Error { code, text, .. }
                if *code == ErrorCode::KICKED && text == "kicked by console: spam")
        })
    };
    thread::sleep(Duration::from_millis(500));
    bob.drain();
    assert!(!kicked(&bob.got), "kicked through a cut");
    proxy.restore();
    bob.wait(WAIT, "the kick", kicked);
}

#[test]
fn a_broadcast_storm_on_three_servers_arrives_once_and_in_order_everywhere() {
    let Some(redis) = Redis::start() else { return };
    let servers: Vec<Server> = (0..3).map(|_| Server::start(&redis.url())).collect();
    const PER_SERVER: usize = 100;
    const SENDERS_PER_SERVER: usize = 10;
    const EACH: usize = 10;
    let mut peers: Vec<Peer> = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for i in 0..PER_SERVER {
            peers.push(Peer::join(server.addr, &format!("u{s}x{i}")));
        }
    }
    let total = peers.len();
    // Everyone sees everyone before the storm.
    let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
    let last = names.last().unwrap().clone();
    peers[0].wait(WAIT, "the last join", |g| has_join(g, &last));
    assert_eq!(peers[0].who().len(), total);
    let started = Instant::now();
    for n in 0..EACH {
        for s in 0..3 {
            for i in 0..SENDERS_PER_SERVER {
                let p = &mut peers[s * PER_SERVER + i];
                let text = format!("{} {n}", p.name);
                p.say(None, &text);
            }
        }
    }
    let senders = 3 * SENDERS_PER_SERVER;
    for p in &mut peers {
        let me = p.name.clone();
        let own = usize::from(
            me.split('x').nth(1).unwrap().parse::<usize>().unwrap() < SENDERS_PER_SERVER,
        );
        let want = (senders - own) * EACH;
        p.wait(Duration::from_secs(60), "the whole storm", |g| {
            g.iter()
                .filter(|m| matches!(m, ServerMessage::Chat(c) if !c.history))
                .count()
                >= want
        });
        let mut next: HashMap<String, usize> = HashMap::new();
        for (from, _, text) in p.chats() {
            assert_ne!(from, me);
            let (who, n) = text.rsplit_once(' ').unwrap();
            assert_eq!(who, from);
            let expected = next.entry(from.clone()).or_insert(0);
            assert_eq!(
                n.parse::<usize>().unwrap(),
                *expected,
                "{me}: from {from} out of order or twice"
            );
            *expected += 1;
        }
        assert_eq!(next.len(), senders - own);
        assert!(next.values().all(|&n| n == EACH));
    }
    eprintln!(
        "{} messages to {total} users on 3 servers checked in {:?}",
        senders * EACH,
        started.elapsed()
    );
    drop(servers);
}

#[test]
fn a_password_in_the_url_works_and_is_never_logged() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port);
    let a = Server::start(&url);
    let b = Server::start(&url);
    let mut alice = Peer::join(a.addr, "alice");
    let _bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    // A wrong password: the server starts, says Redis refused the
    // connection, and names neither password.
    let wrong = format!("redis://:wr0ng-pw@127.0.0.1:{}", redis.port);
    let logs_of_wrong = unreachable_log(&wrong, &[]);
    // TLS to a server that speaks none: refused the same way, no panic.
    let tls = format!("rediss://:s3cret-pw@127.0.0.1:{}", redis.port);
    let logs_of_tls = unreachable_log(&tls, &[]);
    assert!(!logs_of_tls.contains("internal error"), "{logs_of_tls}");
    let mut logs = logs_of_wrong + &logs_of_tls;
    for s in [&a, &b] {
        logs += &std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
        logs += &s.lines.lock().unwrap().join("\n");
    }
    assert!(logs.contains("redis://:***@127.0.0.1"), "{logs}");
    assert!(logs.contains("rediss://:***@127.0.0.1"), "{logs}");
    assert!(
        !logs.contains("s3cret-pw") && !logs.contains("wr0ng-pw"),
        "{logs}"
    );
}

/// Servers join a cluster through Redis's unix socket (`unix://PATH`,
/// the password and database in the query), and the password is never
/// logged.
#[test]
fn servers_join_a_cluster_through_a_unix_socket() {
    let Some(bin) = redis_harness::redis_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let child = Command::new(bin)
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--unixsocketperm", "700", "--requirepass", "s3cret-pw"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Stopped by its handle's drop.
    let _redis = Redis { child, port: 0 };
    let deadline = Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "redis-server made no socket");
        thread::sleep(Duration::from_millis(20));
    }
    let url = format!("unix://{}?pass=s3cret-pw&db=2", socket.display());
    let a = Server::start(&url);
    let b = Server::start(&url);
    let mut alice = Peer::join(a.addr, "alice");
    let _bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    let mut logs = String::new();
    for s in [&a, &b] {
        logs += &std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
        logs += &s.lines.lock().unwrap().join("\n");
    }
    assert!(logs.contains("?pass=***&db=2"), "{logs}");
    assert!(!logs.contains("s3cret-pw"), "{logs}");
    // The cluster's keys are in database 2.
    let mut redis = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    redis
        .write_all(b"AUTH s3cret-pw\r\nSELECT 2\r\nEXISTS imchat:servers\r\n")
        .unwrap();
    redis.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b":1\r\n") && !got.ends_with(b":0\r\n") {
        let n = redis.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n+OK\r\n:1\r\n");
}

/// A server whose Redis refuses its password tells a user who joins that
/// it is a configuration error, not to try again in a moment (waiting
/// does not help), and still serves users once the password is right.
#[test]
fn a_user_is_told_when_redis_refuses_the_servers_settings() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let wrong = Server::launch(
        &format!("redis://:wr0ng-pw@127.0.0.1:{}", redis.port),
        0,
        &[],
        &[],
    );
    let answer = Peer::connect(wrong.addr).hello("alice");
    assert!(
        matches!(&answer, Err((RefuseCode::SERVER_FULL, why))
            if why.contains("refuses the server's settings")
                && why.contains("tell the server's operator")
                && !why.contains("try again")),
        "{answer:?}"
    );
    let right = Server::start(&format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port));
    assert_eq!(Peer::connect(right.addr).hello("alice"), Ok(()));
}

/// What `imchat-server --reset-name NAME --redis URL` says on stderr,
/// once it has failed.
fn reset_name_fails(url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(["--reset-name", "alice", "--redis", url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// A Redis that asks a password the URL does not give, and a database
/// Redis does not have: said in words at start, in the log and by
/// `--reset-name`, not as Redis's error codes.
#[test]
fn a_missing_redis_password_and_a_missing_database_are_said_in_words() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let needs = "Redis requires a password: put it in the URL (redis://:PASSWORD@HOST:PORT)";
    let no_db = "Redis has no database 99 ";
    let db_url = format!("redis://:s3cret-pw@127.0.0.1:{}/99", redis.port);
    for (url, wanted) in [(redis.url(), needs), (db_url, no_db)] {
        let log = unreachable_log(&url, &[]);
        let err = reset_name_fails(&url);
        assert_eq!(err.lines().count(), 1, "{err}");
        for text in [&log, &err] {
            assert!(text.contains(wanted), "{text}");
            for raw in [
                "NOAUTH",
                "Authentication required",
                "out of range",
                "ResponseError",
            ] {
                assert!(!text.contains(raw), "{raw} in {text}");
            }
            assert!(!text.contains("s3cret-pw"), "{text}");
        }
    }
}

/// The PEM files [`own_ca`] writes.
struct OwnCa {
    ca: PathBuf,
    /// Redis's certificate, for 127.0.0.1, and its key.
    cert: PathBuf,
    key: PathBuf,
    /// A client's certificate, and its key.
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA of the test's own, a certificate it signed for 127.0.0.1 and one
/// for a client, as PEM files in `dir`.
fn own_ca(dir: &Path) -> OwnCa {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    // Each its own name: OpenSSL (Redis) takes a certificate named as its
    // issuer for a self-signed one.
    let named = |params: &mut CertificateParams, name: &str| {
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    named(&mut ca, "imchat test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let files = OwnCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("redis.pem"),
        key: dir.join("redis.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    for (name, usage, cert, key) in [
        (
            "127.0.0.1",
            ExtendedKeyUsagePurpose::ServerAuth,
            &files.cert,
            &files.key,
        ),
        (
            "imchat-server",
            ExtendedKeyUsagePurpose::ClientAuth,
            &files.client_cert,
            &files.client_key,
        ),
    ] {
        let leaf_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        named(&mut params, name);
        params.extended_key_usages = vec![usage];
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    }
    files
}

/// A `redis-server` with TLS only, with certificates of [`own_ca`] and
/// the password `s3cret-pw`.
struct TlsRedis {
    dir: tempfile::TempDir,
    certs: OwnCa,
    /// Its URL, with the password.
    url: String,
    _redis: Redis,
}

impl TlsRedis {
    /// `clients`: whether it asks its clients for a certificate
    /// (`tls-auth-clients`).
    fn start(clients: bool) -> Option<TlsRedis> {
        let dir = tempfile::tempdir().unwrap();
        let certs = own_ca(dir.path());
        let tls_port = free_port().to_string();
        let redis = Redis::start_with(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            certs.cert.to_str().unwrap(),
            "--tls-key-file",
            certs.key.to_str().unwrap(),
            "--tls-ca-cert-file",
            certs.ca.to_str().unwrap(),
            "--tls-auth-clients",
            if clients { "yes" } else { "no" },
            "--requirepass",
            "s3cret-pw",
        ])?;
        Some(TlsRedis {
            dir,
            certs,
            url: format!("rediss://:s3cret-pw@127.0.0.1:{tls_port}"),
            _redis: redis,
        })
    }
}

/// What a server with `args` after its address says as it stops at start.
fn refused_at_start(args: &[&std::ffi::OsStr]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .arg("127.0.0.1:0")
        .args(args)
        .arg("--shared-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two servers with the Redis `url` and `env` are one room: Alice on one
/// and Bob on the other see each other, and Bob's line reaches Alice.
fn two_servers_chat(url: &str, env: &[(&str, &Path)]) {
    let a = Server::start_with_env(url, 0, env, &[]);
    let b = Server::start_with_env(url, 0, env, &[]);
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    bob.say(None, "over TLS");
    alice.wait_chat("over TLS");
}

#[test]
fn servers_join_through_a_redis_with_tls_and_a_certificate_of_their_own_ca() {
    let Some(tls) = TlsRedis::start(false) else {
        return;
    };
    // The CA given (by the environment, as the password is).
    two_servers_chat(&tls.url, &[("IMCHAT_REDIS_CA", tls.certs.ca.as_path())]);
    // Without it, the certificate is not trusted: Redis is unreachable
    // (the server runs on, and says why), never reached in clear text.
    let log = unreachable_log(&tls.url, &[]);
    assert!(
        log.contains(
            "Redis's certificate is not trusted: no authority this client trusts issued it"
        ),
        "{log}"
    );
    assert!(!log.contains("UnknownIssuer"), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");
    let with_ca = |url: &str, ca: &Path| {
        refused_at_start(&[
            "--redis".as_ref(),
            url.as_ref(),
            "--redis-ca".as_ref(),
            ca.as_os_str(),
        ])
    };
    // A CA for a URL without TLS.
    let err = with_ca("redis://127.0.0.1:1", &tls.certs.ca);
    assert!(err.contains("needs a rediss:// URL"), "{err}");
    // A CA file without a certificate.
    let junk = tls.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = with_ca(&tls.url, &junk);
    assert!(err.contains("holds no PEM certificate"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
}

/// A self-signed certificate for 127.0.0.1 (and its key) in `dir`:
/// marked a CA, as `openssl req -x509` makes one by default, or not
/// (`-addext basicConstraints=critical,CA:FALSE`).
fn self_signed(dir: &Path, ca: bool) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = if ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let name = if ca { "self-ca" } else { "self" };
    let (cert_file, key_file) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// A Redis with a self-signed certificate given to the servers with
/// --redis-ca, as CLUSTER.md says: one made as its command makes it
/// (CA:FALSE) works; one marked a CA (openssl's default) cannot (webpki
/// takes no CA for a server, and the redis crate lets no other verifier be
/// used), and the log says so in words (before: `invalid peer
/// certificate: Other(OtherError(CaUsedAsEndEntity))`).
#[test]
fn a_redis_with_a_self_signed_certificate_is_trusted_through_redis_ca() {
    let dir = tempfile::tempdir().unwrap();
    for ca in [false, true] {
        let (cert, key) = self_signed(dir.path(), ca);
        let tls_port = free_port().to_string();
        let Some(_redis) = Redis::start_with(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret-pw",
        ]) else {
            // Said loudly by the harness: no redis-server.
            return;
        };
        let url = format!("rediss://:s3cret-pw@127.0.0.1:{tls_port}");
        let env = [("IMCHAT_REDIS_CA", cert.as_path())];
        if ca {
            let log = unreachable_log(&url, &env);
            assert!(
                log.contains("Redis's certificate is a CA certificate, not a server's: make a self-signed one with `-addext basicConstraints=critical,CA:FALSE`"),
                "{log}"
            );
            assert!(!log.contains("CaUsedAsEndEntity"), "{log}");
        } else {
            two_servers_chat(&url, &env);
        }
    }
}

/// Redis with TLS asks its clients for a certificate by default
/// (`tls-auth-clients yes`): the servers show theirs.
#[test]
fn servers_show_a_client_certificate_to_a_redis_that_asks_for_one() {
    let Some(tls) = TlsRedis::start(true) else {
        return;
    };
    let ca = ("IMCHAT_REDIS_CA", tls.certs.ca.as_path());
    let identity = [
        ca,
        ("IMCHAT_REDIS_CERT", tls.certs.client_cert.as_path()),
        ("IMCHAT_REDIS_KEY", tls.certs.client_key.as_path()),
    ];
    two_servers_chat(&tls.url, &identity);
    // Trusting Redis is not enough: without a certificate of its own a
    // server is turned away, and runs on alone.
    let log = unreachable_log(&tls.url, &[ca]);
    assert!(log.contains("unreachable"), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");
    // The certificate and the key go together.
    let err = refused_at_start(&[
        "--redis".as_ref(),
        tls.url.as_ref(),
        "--redis-cert".as_ref(),
        tls.certs.client_cert.as_os_str(),
    ]);
    assert!(err.contains("--redis-key"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    // A key file without a key; a certificate for a URL without TLS.
    let with = |url: &str, cert: &Path, key: &Path| {
        refused_at_start(&[
            "--redis".as_ref(),
            url.as_ref(),
            "--redis-cert".as_ref(),
            cert.as_os_str(),
            "--redis-key".as_ref(),
            key.as_os_str(),
        ])
    };
    let err = with(&tls.url, &tls.certs.client_cert, &tls.certs.client_cert);
    assert!(
        err.contains("cannot read the private key for Redis"),
        "{err}"
    );
    let err = with(&tls.url, &tls.certs.client_key, &tls.certs.client_key);
    assert!(
        err.contains("--redis-cert) holds no PEM certificate"),
        "{err}"
    );
    let err = with(
        "redis://127.0.0.1:1",
        &tls.certs.client_cert,
        &tls.certs.client_key,
    );
    assert!(err.contains("needs a rediss:// URL"), "{err}");
    // A key whose line breaks were lost (as through some environments):
    // refused, and nothing of it shown.
    let key = std::fs::read_to_string(&tls.certs.client_key).unwrap();
    let flat = tls.dir.path().join("flat.key");
    std::fs::write(&flat, key.replace('\n', " ")).unwrap();
    let err = with(&tls.url, &tls.certs.client_cert, &flat);
    assert!(err.contains("were its line breaks lost?"), "{err}");
    let secret = key.lines().nth(1).unwrap();
    assert!(!err.contains(&secret[..16]) && !err.contains('['), "{err}");
    // Alone (no --redis), a server runs whatever the environment says of
    // Redis's certificates.
    let mut alone = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(["127.0.0.1:0", "--shared-dir"])
        .arg(tls.dir.path())
        .arg("--log-file")
        .arg(tls.dir.path().join("alone.log"))
        .env("IMCHAT_REDIS_CERT", &tls.certs.client_cert)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(alone.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = alone.kill();
    let _ = alone.wait();
    assert!(first.starts_with("imchat-server listening on"), "{first:?}");
}

/// Runs a server with the Redis `url` (and `env`) until it logs that
/// Redis is unreachable or refused the connection; returns its log.
fn unreachable_log(url: &str, env: &[(&str, &Path)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .envs(env.iter().copied())
        .arg("127.0.0.1:0")
        .arg("--shared-dir")
        .arg(dir.path())
        .arg("--log-file")
        .arg(dir.path().join("server.log"))
        .args(["--redis", url, "--cluster-lease-secs", LEASE_SECS])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.path().join("server.log");
    let deadline = Instant::now() + WAIT;
    let said = |l: &str| l.contains("unreachable") || l.contains("refused the connection");
    while !std::fs::read_to_string(&log).is_ok_and(|l| said(&l)) {
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("no unreachable warning in {log:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let alive = c.try_wait().unwrap().is_none();
    let _ = c.kill();
    let _ = c.wait();
    assert!(alive, "the server ended");
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn a_server_stopped_gracefully_announces_its_users_at_once() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut alice = Peer::join(a.addr, "alice");
    let _bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    let mut b = b;
    signal(b.child.id(), "-TERM");
    let _ = b.child.wait();
    // Left as shutting down (a dead server's users would leave as lost).
    alice.wait(WAIT, "bob leaving as shut down", |g| {
        g.iter().any(|m| match m {
            ServerMessage::Presence(es) => es.iter().any(|e| {
                matches!(e, PresenceEvent::Left(d)
                    if d.user.as_str() == "bob" && d.reason == imchat_core::LeaveReason::SHUTDOWN)
            }),
            ServerMessage::Left(d) => {
                d.user.as_str() == "bob" && d.reason == imchat_core::LeaveReason::SHUTDOWN
            }
            _ => false,
        })
    });
    // And the name is free at once.
    let _bob = Peer::join(a.addr, "bob");
}

/// A second stop signal (Ctrl-C twice, `timeout`, which signals the
/// process and then its group) while the server waits for Redis to take
/// its leave: the wait is not cut short by the signal. Before, it failed
/// with "Interrupted system call" (a read of a socket with a timeout is
/// not restarted after a signal handler ran on its thread), the leave was
/// given up, and the other servers saw the users leave only when the
/// lease ran out, as lost. (Where the signal lands is up to the kernel:
/// two servers are stopped, so that it would fail nearly every run.)
#[test]
fn a_second_stop_signal_does_not_cut_a_servers_leave_short() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let mut alice = Peer::join(a.addr, "alice");
    for round in 0..2 {
        let name = format!("bob{round}");
        let mut b = Server::start(&redis.url());
        let _bob = Peer::join(b.addr, &name);
        alice.wait_who(&["alice", &name], WAIT);
        // Redis is slow to answer b's leave; more stop signals come
        // meanwhile, and on until b has exited.
        signal(redis.child.id(), "-STOP");
        signal(b.child.id(), "-TERM");
        let deadline = Instant::now() + WAIT;
        while !b.log().contains("shutting down") {
            assert!(Instant::now() < deadline, "b did not stop: {}", b.log());
            thread::sleep(Duration::from_millis(20));
        }
        let pid = libc::pid_t::try_from(b.child.id()).unwrap();
        let thaw_at = Instant::now() + Duration::from_millis(300);
        let mut frozen = true;
        // Signalled only while not yet reaped: the pid cannot be another's.
        while b.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "b did not exit: {}", b.log());
            if frozen && Instant::now() >= thaw_at {
                signal(redis.child.id(), "-CONT");
                frozen = false;
            }
            // SAFETY: kill(2) with a pid and a signal number, nothing else.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            thread::sleep(Duration::from_micros(100));
        }
        if frozen {
            signal(redis.child.id(), "-CONT");
        }
        assert!(
            b.log()
                .contains("cluster: left (1 users announced as gone)"),
            "round {round}: {}",
            b.log()
        );
        alice.wait(WAIT, "bob leaving as shut down", |g| {
            g.iter().any(|m| match m {
                ServerMessage::Presence(es) => es.iter().any(|e| {
                    matches!(e, PresenceEvent::Left(d)
                        if d.user.as_str() == name && d.reason == imchat_core::LeaveReason::SHUTDOWN)
                }),
                ServerMessage::Left(d) => {
                    d.user.as_str() == name && d.reason == imchat_core::LeaveReason::SHUTDOWN
                }
                _ => false,
            })
        });
    }
}

/// What [`name_claimed_during_a_cut`] leaves running.
struct ClaimedDuringCut {
    _proxy: Proxy,
    a: Server,
    _b: Server,
    /// b's bob, and b's "Alice", who holds the name.
    bob: Peer,
    other: Peer,
    /// a's other user, who stays: b lists it again once a is back. Kept
    /// connected here: a `Peer` dropped keeps its connection open only
    /// until the next message comes for it (its reader thread holds the
    /// socket), so a's "reachable again" notice, or anything after it,
    /// would make it leave, sooner or later than b's `/who` is asked.
    watcher: Peer,
}

/// Server a (behind a proxy) and b of `redis`, with sessions resumable
/// for `grace` seconds; a's alice and watcher, and b's bob. a is cut off
/// from Redis until its alice's claim ran out and b's "Alice" joined,
/// then healed: a's alice must be told the name went to the claim holder.
fn name_claimed_during_a_cut(redis: &Redis, grace: u32) -> ClaimedDuringCut {
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let a = Server::start_with_grace(&format!("redis://{}", proxy.addr), grace);
    let b = Server::start_with_grace(&redis.url(), grace);
    let mut alice = Peer::join(a.addr, "alice");
    let mut watcher = Peer::join(a.addr, "watcher");
    let mut bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob", "watcher"], WAIT);
    proxy.cut();
    // Accepted by a while cut off: not to be published under the name
    // once it is another user's.
    alice.say(None, "said while cut off");
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    // Server a's claim ran out with its lease: the name is free on b.
    let mut other = Peer::join(b.addr, "Alice");
    // What she says before a is back reaches a's users once a lists her.
    other.say(None, "said by the newcomer");
    bob.wait_chat("said by the newcomer");
    proxy.restore();
    // Back in the cluster, a finds the name taken: its alice is told and
    // disconnected; b's keeps it.
    alice.wait(WAIT, "the reason", |g| {
        g.iter().any(|m| matches!(m, ServerMessage::Error { text, .. } if text.contains("taken on another server")))
    });
    // a's other users are told the same reason for her leaving.
    watcher.wait(WAIT, "alice leaving, and why", |g| {
        g.iter().any(|m| {
            let left = |d: &imchat_core::Departure| {
                d.user.as_str() == "alice" && d.text.contains("taken on another server")
            };
            match m {
                ServerMessage::Left(d) => left(d),
                ServerMessage::Presence(es) => es
                    .iter()
                    .any(|e| matches!(e, PresenceEvent::Left(d) if left(d))),
                _ => false,
            }
        })
    });
    ClaimedDuringCut {
        _proxy: proxy,
        a,
        _b: b,
        bob,
        other,
        watcher,
    }
}

#[test]
fn a_name_claimed_elsewhere_during_a_cut_stays_with_the_claim_holder() {
    let Some(redis) = Redis::start() else { return };
    let mut cut = name_claimed_during_a_cut(&redis, 0);
    cut.bob.wait_who(&["Alice", "bob", "watcher"], WAIT);
    cut.other.say(None, "still here");
    cut.bob.wait_chat("still here");
}

#[test]
fn a_name_claimed_elsewhere_during_a_cut_stays_with_the_claim_holder_with_sessions_on() {
    // With resumable sessions the newcomer's session record is on b too,
    // so it is not a session that moved.
    let Some(redis) = Redis::start() else { return };
    let mut cut = name_claimed_during_a_cut(&redis, 1);
    // Both servers list b's Alice, and a message to the name reaches her.
    let mut carol = Peer::join(cut.a.addr, "carol");
    carol.wait_who(&["Alice", "bob", "carol", "watcher"], WAIT);
    cut.bob
        .wait_who(&["Alice", "bob", "carol", "watcher"], WAIT);
    carol.say(Some("alice"), "for the holder");
    cut.other.wait_chat("for the holder");
    // What a's alice said while cut off never reached anyone under the
    // name (a's entries are in order: carol's comes after any of it).
    carol.say(None, "after the heal");
    cut.bob.wait_chat("after the heal");
    cut.other.wait_chat("after the heal");
    for p in [&cut.bob, &cut.other] {
        assert_eq!(
            count(p, "said while cut off"),
            0,
            "published under the name"
        );
    }
}

/// What the newcomer said before the cut-off server was back is not lost
/// to that server's users (before, it read it while its own alice still
/// held the name, and dropped it), and what that server withdrew of its
/// alice leaves no gap in its numbers (before, b told its users that
/// messages from other servers may be missing).
#[test]
fn a_name_claimed_elsewhere_during_a_cut_loses_nothing_and_says_nothing_is_lost() {
    let Some(redis) = Redis::start() else { return };
    let mut cut = name_claimed_during_a_cut(&redis, 0);
    cut.watcher.wait_chat("said by the newcomer");
    cut.watcher.say(None, "after the heal");
    cut.bob.wait_chat("after the heal");
    cut.other.wait_chat("after the heal");
    for p in [&cut.bob, &cut.other] {
        let told_lost = p.got.iter().any(
            |m| matches!(m, ServerMessage::Error { text, .. } if text.contains("may be missing")),
        );
        assert!(!told_lost, "told that messages were lost: {:?}", p.got);
    }
}

// Sessions that resume on another server of the cluster.

/// The newest log id among `got`: what a client resumes from.
fn last_seen(got: &[ServerMessage]) -> MessageId {
    got.iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) => Some(c.id),
            ServerMessage::Joined { id, .. } => Some(*id),
            ServerMessage::Left(d) => Some(d.id),
            ServerMessage::Presence(es) => es.iter().filter(|e| e.is_entry()).map(|e| e.id()).max(),
            _ => None,
        })
        .max()
        .unwrap_or(MessageId(0))
}

/// `p`'s client connects anew, to `addr`, and asks for its session back
/// there: the new connection and the server's answer.
fn try_resume_on(p: &mut Peer, addr: SocketAddr) -> (Peer, Result<(), (RefuseCode, String)>) {
    p.drain();
    let request = ResumeRequest {
        token: p.token,
        last_seen: last_seen(&p.got),
        epoch: p.epoch,
    };
    let mut q = Peer::connect(addr);
    q.next_id = p.next_id;
    let name = p.name.clone();
    let answer = q.hello_with(&name, Some(request));
    (q, answer)
}

/// `p`'s client connects anew, to `addr`, and resumes its session there.
fn resume_on(p: &mut Peer, addr: SocketAddr) -> Peer {
    let name = p.name.clone();
    let (q, answer) = try_resume_on(p, addr);
    answer.unwrap_or_else(|e| panic!("{name} could not resume: {e:?}"));
    assert!(q.resumed, "{name} joined afresh instead of resuming");
    q
}

fn texts(p: &Peer) -> Vec<String> {
    p.chats().into_iter().map(|(_, _, t)| t).collect()
}

fn count(p: &Peer, text: &str) -> usize {
    texts(p).iter().filter(|t| *t == text).count()
}

/// Three servers whose sessions resume (a grace of 30 s), and Alice, Bob
/// and Carol joined one to each, all seeing one another.
fn three_resumable(redis: &Redis) -> ((Server, Server, Server), (Peer, Peer, Peer)) {
    let servers = (
        Server::start_with_grace(&redis.url(), 30),
        Server::start_with_grace(&redis.url(), 30),
        Server::start_with_grace(&redis.url(), 30),
    );
    let mut alice = Peer::join(servers.0.addr, "alice");
    let mut bob = Peer::join(servers.1.addr, "bob");
    let mut carol = Peer::join(servers.2.addr, "carol");
    for p in [&mut alice, &mut bob, &mut carol] {
        p.wait_who(&["alice", "bob", "carol"], WAIT);
    }
    (servers, (alice, bob, carol))
}

/// Alice on A, with `--history-db`, and Bob on B, both resumable, seeing
/// each other. The folder of A's database (kept while it lives), the
/// database's path, A, B, Alice and Bob.
fn alice_on_a_with_its_database(
    redis: &Redis,
) -> (tempfile::TempDir, String, Server, Server, Peer, Peer) {
    alice_on_a_with_its_database_and_grace(redis, 30)
}

/// [`alice_on_a_with_its_database`], with a grace period of `grace` s.
fn alice_on_a_with_its_database_and_grace(
    redis: &Redis,
    grace: u32,
) -> (tempfile::TempDir, String, Server, Server, Peer, Peer) {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir
        .path()
        .join("history.db")
        .to_str()
        .unwrap()
        .to_string();
    let a = Server::start_with_env(&redis.url(), grace, &[], &["--history-db", &db]);
    let b = Server::start_with_grace(&redis.url(), grace);
    let alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    bob.wait_who(&["alice", "bob"], WAIT);
    (db_dir, db, a, b, alice, bob)
}

/// [`alice_on_a_with_its_database`]; they see a first message, then A is
/// stopped (SIGTERM). The folder of A's database, its path, B, Alice and
/// Bob.
fn a_stopped_with_its_database(redis: &Redis) -> (tempfile::TempDir, String, Server, Peer, Peer) {
    let (db_dir, db, mut a, b, mut alice, mut bob) = alice_on_a_with_its_database(redis);
    alice.wait_who(&["alice", "bob"], WAIT);
    bob.say(None, "before");
    alice.wait_chat("before");
    signal(a.child.id(), "-TERM");
    let _ = a.child.wait();
    (db_dir, db, b, alice, bob)
}

/// A server restarted on its database reads on from where its log
/// stopped: what was said while it was down is in its history.
#[test]
fn a_server_restarted_with_its_database_reads_on_from_where_it_stopped() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, _b, _alice, mut bob) = a_stopped_with_its_database(&redis);
    for i in 0..3 {
        bob.say(None, &format!("while a was down {i}"));
    }
    bob.wait_who(&["bob"], WAIT);
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", &db]);
    let mut carol = Peer::join(a2.addr, "carol");
    for i in 0..3 {
        carol.wait_chat(&format!("while a was down {i}"));
    }
}

/// A server stopped by its operator announces its users as left, and
/// their sessions end in the cluster: restarted on its database, it does
/// not bring them back (announced again, listed until the grace runs out).
#[test]
fn a_server_stopped_and_restarted_on_its_database_does_not_bring_its_users_back() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, _b, mut alice, mut bob) = a_stopped_with_its_database(&redis);
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    bob.drain();
    let mark = bob.got.len();
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", &db]);
    thread::sleep(Duration::from_secs(1));
    bob.wait_who(&["bob"], WAIT);
    bob.drain();
    assert_eq!(presence_of(&bob.got[mark..], "alice"), Vec::<&str>::new());
    // Her client, back, joins afresh: her session ended with the stop.
    let (again, answer) = try_resume_on(&mut alice, a2.addr);
    answer.expect("joined afresh");
    assert!(!again.resumed, "a session ended by the stop was resumed");
    bob.wait_who(&["alice", "bob"], WAIT);
}

/// A Redis restarted empty lost every server's heartbeat: the first
/// server back took the others for dead before they wrote theirs again,
/// and their users were seen leaving (a user kicked meanwhile: leaving,
/// joining again, leaving again).
#[test]
fn a_redis_restarted_empty_does_not_make_the_servers_take_each_other_for_dead() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (_a, b, mut alice, _bob) = alice_and_bob(&redis);
    alice.drain();
    alice.got.clear();
    // b comes back to the new Redis only after a has.
    signal(b.child.id(), "-STOP");
    redis.restart();
    let mut con = redis_con(&redis);
    let members = |con: &mut redis::Connection| -> usize {
        redis::cmd("SCARD")
            .arg("imchat:servers")
            .query(con)
            .unwrap_or(0)
    };
    let deadline = Instant::now() + WAIT;
    while members(&mut con) < 1 {
        assert!(Instant::now() < deadline, "a never rejoined");
        thread::sleep(Duration::from_millis(20));
    }
    // a has looked at the others in the same round.
    thread::sleep(Duration::from_millis(100));
    signal(b.child.id(), "-CONT");
    while members(&mut con) < 2 {
        assert!(Instant::now() < deadline, "b never rejoined");
        thread::sleep(Duration::from_millis(20));
    }
    // Past a's next looks at the others.
    thread::sleep(Duration::from_secs(2));
    alice.drain();
    assert!(!has_left(&alice.got, "bob"), "{:?}", alice.got);
    alice.wait_who(&["alice", "bob"], WAIT);
}

#[test]
fn a_private_message_lost_with_a_killed_server_is_told_to_its_sender() {
    let Some(redis) = Redis::start() else { return };
    let (_a, b, mut alice, _bob) = alice_and_bob(&redis);
    b.kill9();
    alice.say(Some("bob"), "are-you-there");
    alice.wait(WAIT, "the sender told", |g| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Error { text, .. }
            if text.contains("your private message to bob may not have been delivered")
                && text.contains("are-you-there"))
        })
    });
}

#[test]
fn a_redis_that_restarts_within_a_moment_is_not_reported_unreachable() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b, mut alice, mut bob) = alice_and_bob(&redis);
    // Down for longer than a lease round (0.5 s here), so that a round
    // finds its connection broken and new ones refused.
    redis.stop();
    thread::sleep(Duration::from_millis(700));
    redis.start_again();
    // Past a few rounds on the new Redis.
    thread::sleep(Duration::from_secs(2));
    alice.say(None, "after the restart");
    bob.wait_chat("after the restart");
    for (who, peer) in [("alice", &mut alice), ("bob", &mut bob)] {
        peer.drain();
        assert!(
            !told_unreachable(&peer.got),
            "{who} was told: {:?}",
            peer.got
        );
    }
    for s in [&a, &b] {
        assert!(!s.log().contains("is unreachable"), "{}", s.log());
    }
}

/// A Redis that does not answer for several lease rounds: the users hear
/// of it while it is frozen, and that it is back once it answers, not the
/// two at once as it answers again (the round that told them used to end
/// only then: a new connection's handshake waited twice its timeout).
#[test]
fn users_hear_of_a_frozen_redis_while_it_is_frozen() {
    let Some(redis) = Redis::start() else {
        return;
    };
    told_of_a_frozen_redis_while_it_is_frozen(&redis, &redis.url());
}

/// The same with a password and a database in the URL: the handshake of
/// a new connection (`AUTH`, `SELECT`) used to wait for each of its two
/// replies with the whole timeout.
#[test]
fn users_hear_of_a_frozen_redis_while_it_is_frozen_with_password_and_database() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/3", redis.port);
    told_of_a_frozen_redis_while_it_is_frozen(&redis, &url);
}

/// Alice on a server of `redis` (reached through `url`) hears that the
/// cluster cannot be reached while Redis is frozen, once, and the
/// all-clear after.
fn told_of_a_frozen_redis_while_it_is_frozen(redis: &Redis, url: &str) {
    let (_a, _b, mut alice, _bob) = alice_and_bob_at(url, url);
    let frozen_for = Duration::from_secs(10);
    signal(redis.child.id(), "-STOP");
    let stopped = Instant::now();
    // Two failed rounds with their 2 s timeouts: about 6.5 s with the
    // tests' 1.5 s lease; the old handshake took until the thaw.
    alice.wait(
        frozen_for - Duration::from_millis(1500),
        "notice while Redis is frozen",
        told_unreachable,
    );
    thread::sleep(frozen_for.saturating_sub(stopped.elapsed()));
    signal(redis.child.id(), "-CONT");
    alice.wait(WAIT, "the all-clear", |g| {
        g.iter().any(
            |m| matches!(m, ServerMessage::Notice { code, .. } if *code == imchat_core::NoticeCode::CLUSTER_BACK),
        )
    });
    let told = alice
        .got
        .iter()
        .filter(|m| is_unreachable_notice(m))
        .count();
    assert_eq!(told, 1, "{:?}", alice.got);
}

#[test]
fn a_name_in_use_is_not_given_to_a_newcomer_when_redis_restarts_empty() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    // Half of it (1.5 s) is how long new names are held.
    let lease = ["--cluster-lease-secs", "3"];
    let a = Server::start_with_env(&redis.url(), 0, &[], &lease);
    let mut alice = Peer::join(a.addr, "alice");
    // a comes back to the new, empty Redis only after a newcomer on a
    // server started meanwhile has asked for alice's name.
    signal(a.child.id(), "-STOP");
    redis.restart();
    let d = Server::launch(&redis.url(), 0, &[], &lease);
    let deadline = Instant::now() + WAIT;
    while !d.log().contains("cluster: joined through") {
        assert!(Instant::now() < deadline, "d never joined: {}", d.log());
        thread::sleep(Duration::from_millis(20));
    }
    let at = d.addr;
    let newcomer = thread::spawn(move || Peer::connect(at).hello("alice"));
    thread::sleep(Duration::from_millis(300));
    signal(a.child.id(), "-CONT");
    let answer = newcomer.join().expect("the newcomer's thread");
    match answer {
        Err((code, reason)) => {
            assert_eq!(code, RefuseCode::NAME_TAKEN, "{reason}");
        }
        Ok(()) => panic!("the newcomer on d took alice's name; a's log:\n{}", a.log()),
    }
    // Alice keeps her name and her connection, and new names are let in
    // once the hold is over.
    let mut carol = Peer::join(d.addr, "carol");
    carol.wait_who(&["alice", "carol"], WAIT);
    alice.say(None, "still here");
    carol.wait_chat("still here");
    assert!(
        !a.log().contains("was claimed on another server"),
        "{}",
        a.log()
    );
}

#[test]
fn a_session_resumes_elsewhere_after_redis_lost_its_data() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b, mut alice, mut bob) = alice_and_bob_resumable(&redis);
    // A new, empty Redis: the servers rejoin, and a gives its sessions back.
    redis.restart();
    let mut con = redis_con(&redis);
    let deadline = Instant::now() + WAIT;
    loop {
        let records: Vec<String> = redis::cmd("KEYS")
            .arg("imchat:sess:*")
            .query(&mut con)
            .unwrap();
        if records.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sessions' records are not back: {records:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    bob.wait_who(&["alice", "bob"], WAIT);
    a.kill9();
    bob.say(Some("alice"), "after the crash");
    // Past a's lease and b's check: b knows it is dead.
    thread::sleep(Duration::from_secs(3));
    let mut back = resume_on(&mut alice, b.addr);
    back.wait_chat("after the crash");
}

#[test]
fn a_push_to_a_user_whose_server_died_ends_when_she_resumes_elsewhere() {
    let Some(redis) = Redis::start() else { return };
    let ((a, _b, c), (mut alice, mut bob, _carol)) = three_resumable(&redis);
    a.kill9();
    // Offered to alice on a before b knows a is dead: a will never answer.
    bob.send(&ClientMessage::Offer {
        id: imchat_core::TransferId(7),
        name: imchat_core::FileName::new("late.bin").unwrap(),
        size: 1000,
        to: Recipient::User(Username::new("alice").unwrap()),
    });
    // She resumes on c at once: a holds none of its users any more.
    let _back = resume_on(&mut alice, c.addr);
    // Bob is told once b sees a's lease run out, not after the offer's
    // two-minute timeout.
    let started = Instant::now();
    bob.wait(Duration::from_secs(10), "the push's end", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Cancel(f) if f.id == imchat_core::TransferId(7)))
    });
    eprintln!("bob was told after {:?}", started.elapsed());
}

#[test]
fn a_session_resumes_on_another_server_after_its_server_is_killed() {
    let Some(redis) = Redis::start() else { return };
    let ((a, b, _c), (mut alice, mut bob, mut carol)) = three_resumable(&redis);
    for i in 0..5 {
        bob.say(None, &format!("before {i}"));
    }
    alice.wait_chat("before 4");
    // What the others got from here on must show no leave or join of hers.
    let marks: Vec<usize> = [&mut bob, &mut carol]
        .into_iter()
        .map(|p| {
            p.drain();
            p.got.len()
        })
        .collect();
    a.kill9();
    for i in 0..5 {
        bob.say(None, &format!("bob after {i}"));
        carol.say(None, &format!("carol after {i}"));
    }
    bob.say(Some("alice"), "psst");
    bob.wait_chat("carol after 4");
    // Past a's lease and the others' check: they know it is dead.
    thread::sleep(Duration::from_secs(3));
    alice.drain();
    let seen = last_seen(&alice.got);
    let mut back = resume_on(&mut alice, b.addr);
    back.wait(WAIT, "what she missed", |g| {
        ["psst", "bob after 4", "carol after 4"].iter().all(|t| {
            g.iter()
                .any(|m| matches!(m, ServerMessage::Chat(c) if c.text == *t))
        })
    });
    // Time for a late leave or join to show.
    thread::sleep(Duration::from_secs(1));
    back.drain();
    let got = texts(&back);
    let mut want: Vec<String> = Vec::new();
    for i in 0..5 {
        want.push(format!("bob after {i}"));
        want.push(format!("carol after {i}"));
    }
    want.push("psst".into());
    for t in &want {
        assert_eq!(count(&back, t), 1, "{t} not exactly once in {got:?}");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "something seen before came again: {got:?}"
    );
    // In each sender's order.
    for who in ["bob", "carol"] {
        let mine: Vec<&String> = got.iter().filter(|t| t.starts_with(who)).collect();
        let sorted: Vec<String> = (0..5).map(|i| format!("{who} after {i}")).collect();
        assert_eq!(mine, sorted.iter().collect::<Vec<_>>());
    }
    // Under ids above what she saw, growing: a client drops any other as
    // one it had.
    let ids: Vec<MessageId> = back
        .got
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) => Some(c.id),
            _ => None,
        })
        .collect();
    assert!(
        ids[0] > seen && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?} after {seen:?}"
    );
    let psst = got.iter().position(|t| t == "psst").unwrap();
    let last_of_bob = got.iter().position(|t| t == "bob after 4").unwrap();
    assert!(psst > last_of_bob, "{got:?}");
    // Nobody saw her leave or come back.
    for (p, mark) in [&mut bob, &mut carol].into_iter().zip(marks) {
        p.drain();
        let since = &p.got[mark..];
        assert!(
            !has_left(since, "alice") && !has_join(since, "alice"),
            "{} saw alice leave or join: {:?}",
            p.name,
            p.got
        );
        p.wait_who(&["alice", "bob", "carol"], WAIT);
    }
    back.say(None, "I am back");
    carol.wait_chat("I am back");
}

/// Two servers with a stream of `stream_mib` MiB and no rate limit, and
/// Alice joined to the first.
fn servers_for_long_messages(redis: &Redis, stream_mib: &str) -> (Server, Server, Peer) {
    let args = ["--cluster-stream-mib", stream_mib, "--rate-per-sec", "0"];
    let a = Server::start_with_env(&redis.url(), 0, &[], &args);
    let b = Server::start_with_env(&redis.url(), 0, &[], &args);
    let alice = Peer::join(a.addr, "alice");
    (a, b, alice)
}

/// `p` sends `n` messages of 60,000 bytes and more, numbered from 0
/// (`"<i> xxx…"`).
fn say_long(p: &mut Peer, n: usize) {
    let long = "x".repeat(60_000);
    for i in 0..n {
        p.say(None, &format!("{i} {long}"));
    }
}

/// A burst of long messages cannot grow the stream in Redis past its
/// memory budget (`--cluster-stream-mib`): the oldest entries go.
#[test]
fn a_burst_of_long_messages_keeps_the_stream_within_its_memory_budget() {
    let Some(redis) = Redis::start() else { return };
    let (a, b, mut alice) = servers_for_long_messages(&redis, "1");
    let mut bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    // 200 messages of 60,000 bytes: 12 MB, twelve times the budget.
    say_long(&mut alice, 200);
    bob.wait(WAIT, "the last one", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Chat(c) if c.text.starts_with("199 ")))
    });
    let mut con = redis_con(&redis);
    // Every node counted (no sampling).
    let used: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("imchat:bus")
        .arg("SAMPLES")
        .arg(0)
        .query(&mut con)
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("imchat:bus")
        .query(&mut con)
        .unwrap();
    // The budget, plus what a server publishes between two looks (a
    // sixteenth of it) and one round trip (1 MiB at most).
    assert!(
        used <= 3 << 20,
        "the stream uses {used} bytes in {len} entries"
    );
    // Untrimmed, the messages take about 20 entries (a round trip's
    // worth, 1 MiB, each); a few stay.
    assert!(len <= 5, "{len} entries: nothing was trimmed");
    assert!(
        a.log().contains("over its 1 MiB"),
        "the trim is not logged: {}",
        a.log()
    );
}

/// The most memory `pid` has held (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Waits (`WAIT` at most) until the stream's newest entry holds `text`.
fn wait_in_stream(redis: &Redis, text: &[u8]) {
    let mut con = redis_con(redis);
    let deadline = Instant::now() + WAIT;
    loop {
        let newest: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XREVRANGE")
            .arg("imchat:bus")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut con)
            .unwrap();
        let found = newest.iter().any(|(_, fields)| {
            fields
                .values()
                .any(|v| v.windows(text.len()).any(|w| w == text))
        });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "never in the stream");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A server far behind the stream (stopped while 72 MB went by) catches
/// up in replies of bounded size (16 entries of at most about 1 MiB), not
/// in one reply of everything.
#[test]
fn a_server_far_behind_the_stream_catches_up_in_bounded_reads() {
    let Some(redis) = Redis::start() else { return };
    let (_a, b, mut alice) = servers_for_long_messages(&redis, "1024");
    let before = peak_memory(b.child.id());
    signal(b.child.id(), "-STOP");
    say_long(&mut alice, 1200);
    alice.wait(WAIT, "her last taken", |g| {
        g.iter().any(|m| {
            matches!(
                m,
                ServerMessage::Ack {
                    client_id: 1200,
                    ..
                }
            )
        })
    });
    wait_in_stream(&redis, b"1199 ");
    signal(b.child.id(), "-CONT");
    // Time to read it all (well under a second, in a debug build too).
    thread::sleep(Duration::from_secs(3));
    // At most about 16 MiB read at a time, and the log's 8 MiB; one reply
    // of everything would be 72 MB.
    let grew = peak_memory(b.child.id()) - before;
    assert!(
        grew < 48 << 20,
        "its peak memory grew by {} KiB",
        grew >> 10
    );
    // And it did read it all by then: a user joining now gets the last
    // message as history.
    let mut probe = Peer::join(b.addr, "probe");
    probe.wait(WAIT, "the last as history", |g| {
        g.iter().any(
            |m| matches!(m, ServerMessage::Chat(c) if c.history && c.text.starts_with("1199 ")),
        )
    });
}

/// A user of a server that falls far behind the stream (stopped while
/// 72 MB went by) gets all of it once the server catches up, in order,
/// and is not disconnected for the backlog reaching it faster than its
/// queue (4 MiB) takes.
#[test]
fn a_user_of_a_server_far_behind_gets_the_whole_backlog_once_it_catches_up() {
    let Some(redis) = Redis::start() else { return };
    let (_a, b, mut alice) = servers_for_long_messages(&redis, "1024");
    let mut bob = Peer::join(b.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    signal(b.child.id(), "-STOP");
    say_long(&mut alice, 1200);
    wait_in_stream(&redis, b"1199 ");
    signal(b.child.id(), "-CONT");
    bob.wait(WAIT, "the last one", |g| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Chat(c) if c.text.starts_with("1199 "))
                || matches!(m, ServerMessage::Error { .. })
        })
    });
    let got: Vec<usize> = bob
        .chats()
        .iter()
        .filter_map(|(_, _, t)| t.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(got, (0..1200).collect::<Vec<_>>(), "{:?}", bob.got.last());
}

/// A server started after 72 MB went by reads the stream's newest
/// entries for its history, a page at a time, only as far as its log
/// keeps (8 MiB), not all of the 10,000 entries its log could take.
#[test]
fn a_server_started_later_reads_no_more_history_than_its_log_keeps() {
    let Some(redis) = Redis::start() else { return };
    let (_a, _b, mut alice) = servers_for_long_messages(&redis, "1024");
    say_long(&mut alice, 1200);
    // All of it in the stream before the new server starts (else it gets
    // the newest live, not as history).
    wait_in_stream(&redis, b"1199 ");
    let args = ["--cluster-stream-mib", "1024"];
    let c = Server::start_with_env(&redis.url(), 0, &[], &args);
    let mut dave = Peer::join(c.addr, "dave");
    dave.wait(WAIT, "the newest as history", |g| {
        g.iter().any(
            |m| matches!(m, ServerMessage::Chat(c) if c.history && c.text.starts_with("1199 ")),
        )
    });
    // About 40 MB here, against about 90 MB when it read them all.
    let peak = peak_memory(c.child.id());
    assert!(peak < 64 << 20, "its peak memory is {} KiB", peak >> 10);
}

/// The leave of `who`, kicked, among the messages `g`, if there is one.
fn left_kicked<'a>(g: &'a [ServerMessage], who: &str) -> Option<&'a Departure> {
    g.iter().find_map(|m| match m {
        ServerMessage::Presence(es) => es.iter().find_map(|e| match e {
            PresenceEvent::Left(d) if d.user.as_str() == who && d.reason == LeaveReason::KICKED => {
                Some(d)
            }
            _ => None,
        }),
        _ => None,
    })
}

/// When, in [`kick_of_a_user_whose_server_died`], Alice's console kicks Bob.
#[derive(Clone, Copy, PartialEq)]
enum KickWhen {
    /// Once her server noticed that his died.
    Noticed,
    /// At once, before any server noticed.
    Unnoticed,
    /// At once, and his client resumes on C at once, before any server
    /// noticed: the kicked session must not move there.
    ThenResumed,
}

/// Alice, Bob and Carol on three servers; Bob's is killed, and Alice's
/// console kicks him (`when`). Every server removes him, kicked, long
/// before the 30 s grace runs out, and his session is over.
fn kick_of_a_user_whose_server_died(when: KickWhen) {
    let Some(redis) = Redis::start() else { return };
    let ((mut a, b, c), (mut alice, mut bob, mut carol)) = three_resumable(&redis);
    b.kill9();
    let killed = Instant::now();
    if when == KickWhen::Noticed {
        // A knows b is dead; bob is still listed, waiting for a resume.
        a.wait_line("is gone (its lease ran out)");
        alice.wait_who(&["alice", "bob", "carol"], WAIT);
        a.console("kick Bob spam");
        a.wait_line("kicked bob (it was away)");
    } else {
        a.console("kick Bob spam");
        a.wait_line("kicked bob (on another server)");
    }
    let resume = |bob: &mut Peer| try_resume_on(bob, c.addr);
    if when == KickWhen::ThenResumed {
        // The kick is in Redis while b's lease still runs: his session is
        // marked, not deleted (a 1.5 s lease: the kick came at once).
        let mut con = redis_con(&redis);
        let deadline = Instant::now() + WAIT;
        while !redis::cmd("HEXISTS")
            .arg("imchat:sess:bob")
            .arg("k")
            .query::<bool>(&mut con)
            .unwrap()
        {
            assert!(Instant::now() < deadline, "the kick never reached Redis");
            thread::sleep(Duration::from_millis(5));
        }
        let (again, answer) = resume(&mut bob);
        // b renewed its claims every 0.5 s: for 1 s after its death its
        // claim on the name holds, and with the session not moved, C
        // refuses the name (a server that moved it and then ended it,
        // kicked, would have let him join afresh).
        if killed.elapsed() < Duration::from_secs(1) {
            let refused = answer.expect_err("the kicked session is refused");
            assert_eq!(refused.0, RefuseCode::NAME_TAKEN, "{refused:?}");
        } else {
            eprintln!(
                "slow machine: b's claims may have run out, only checking that bob was not resumed"
            );
            assert!(
                answer.is_err() || !again.resumed,
                "a kicked session moved to another server and was resumed there"
            );
        }
    }
    let kicked = |g: &[ServerMessage]| {
        left_kicked(g, "bob").is_some_and(|d| d.text == "kicked by console: spam")
    };
    // On A and on C (WAIT is shorter than the grace).
    for p in [&mut alice, &mut carol] {
        p.wait(WAIT, "bob leaving, kicked", kicked);
        p.wait_who(&["alice", "carol"], WAIT);
    }
    // His session is over: his client's resume on C joins him afresh.
    let (again, answer) = resume(&mut bob);
    answer.expect("the name is free again");
    assert!(!again.resumed, "a kicked session was resumed");
    assert_told_of_kick(&again, "kicked by console: spam");
    alice.wait_who(&["alice", "bob", "carol"], WAIT);
}

/// A ban of a user whose server died, made once the others noticed: every
/// server removes him at once, banned, as a kick would (his session waits
/// for a resume, so no server would disconnect him), not "connection lost"
/// once the 30 s grace runs out.
#[test]
fn a_ban_of_a_user_whose_server_died_removes_him_at_once() {
    let Some(redis) = Redis::start() else { return };
    let ((mut a, b, _c), (mut alice, _bob, mut carol)) = three_resumable(&redis);
    b.kill9();
    a.wait_line("is gone (its lease ran out)");
    a.console("ban Bob spam");
    a.wait_line("banned Bob (it was away)");
    let banned = |g: &[ServerMessage]| {
        left_kicked(g, "bob").is_some_and(|d| d.text == "banned by console: spam")
    };
    for p in [&mut alice, &mut carol] {
        p.wait(WAIT, "bob leaving, banned", banned);
        p.wait_who(&["alice", "carol"], WAIT);
    }
}

/// `p`, come back after its session was kicked, was told why before its
/// welcome, with the kick's text.
fn assert_told_of_kick(p: &Peer, text: &str) {
    assert!(
        p.got
            .iter()
            .any(|m| matches!(m, ServerMessage::Notice { code, text: t }
            if *code == NoticeCode::SESSION_ENDED && t == text)),
        "{} was not told of the kick: {:?}",
        p.name,
        p.got
    );
}

#[test]
fn a_kick_of_a_user_whose_server_died_ends_the_session_everywhere() {
    kick_of_a_user_whose_server_died(KickWhen::Noticed);
}

/// Each server notices a death in its own time: a kick that comes before
/// is carried out when it does.
#[test]
fn a_kick_before_anyone_noticed_that_the_users_server_died_is_carried_out_when_they_do() {
    kick_of_a_user_whose_server_died(KickWhen::Unnoticed);
}

/// Redis refuses to move a kicked session that its dead server has not
/// ended: the kick is not escaped by resuming elsewhere at once.
#[test]
fn a_user_kicked_while_his_dead_server_is_unnoticed_cannot_resume_elsewhere() {
    kick_of_a_user_whose_server_died(KickWhen::ThenResumed);
}

/// A kick that reaches Redis just after Bob's session moved to C, while C
/// waits to have read the stream as far as the session had (2 s at most
/// here, as his client says it saw far more): C does not take the kicked
/// session over, and his client joins afresh.
#[test]
fn a_kick_that_crosses_a_moving_session_is_not_escaped() {
    let Some(redis) = Redis::start() else { return };
    let ((mut a, _b, c), (mut alice, mut bob, _carol)) = three_resumable(&redis);
    bob.drain();
    let request = ResumeRequest {
        token: bob.token,
        last_seen: MessageId(u64::MAX >> 1),
        epoch: bob.epoch,
    };
    let (tx, rx) = channel();
    let addr = c.addr;
    thread::spawn(move || {
        let mut again = Peer::connect(addr);
        let answer = again.hello_with("bob", Some(request));
        let _ = tx.send((answer, again));
    });
    // The session has moved (its token is spent) before the kick.
    let mut con = redis_con(&redis);
    let deadline = Instant::now() + WAIT;
    while redis::cmd("HGET")
        .arg("imchat:sess:bob")
        .arg("h")
        .query::<Option<String>>(&mut con)
        .unwrap()
        .is_some_and(|h| !h.is_empty())
    {
        assert!(Instant::now() < deadline, "the session never moved");
        thread::sleep(Duration::from_millis(2));
    }
    a.console("kick Bob spam");
    a.wait_line("kicked bob (on another server)");
    let (answer, again) = rx.recv_timeout(WAIT).expect("an answer to the resume");
    answer.expect("joined afresh");
    assert!(
        !again.resumed,
        "the kicked session was taken over and resumed"
    );
    assert_told_of_kick(&again, "kicked by console: spam");
    alice.wait(WAIT, "bob leaving, kicked", |g| {
        left_kicked(g, "bob").is_some()
    });
    alice.wait_who(&["alice", "bob", "carol"], WAIT);
}

#[test]
fn a_session_resumes_on_another_server_while_its_own_is_alive() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_grace(&redis.url(), 30);
    let b = Server::start_with_grace(&redis.url(), 30);
    let mut alice = Peer::join(a.addr, "alice");
    let mut dave = Peer::join(a.addr, "dave");
    let mut bob = Peer::join(b.addr, "bob");
    for p in [&mut alice, &mut bob, &mut dave] {
        p.wait_who(&["alice", "bob", "dave"], WAIT);
    }
    bob.say(None, "one");
    alice.wait_chat("one");
    let marks: Vec<usize> = [&mut bob, &mut dave]
        .into_iter()
        .map(|p| {
            p.drain();
            p.got.len()
        })
        .collect();
    // Her old connection to a is still open: a closes it, saying why.
    let mut back = resume_on(&mut alice, b.addr);
    alice.wait(WAIT, "being told", |g| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Error { text, .. } if text.contains("resumed on another server"))
        })
    });
    back.say(None, "from b");
    dave.wait_chat("from b");
    bob.say(Some("alice"), "to you");
    back.wait(WAIT, "bob's private message", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Chat(c) if c.text == "to you" && c.private))
    });
    // Two of a's lease rounds: it does not take her moved name for a lost one.
    thread::sleep(Duration::from_secs(2));
    for (p, mark) in [&mut bob, &mut dave].into_iter().zip(marks) {
        p.drain();
        let since = &p.got[mark..];
        assert!(
            !has_left(since, "alice") && !has_join(since, "alice"),
            "{} saw alice leave or join: {:?}",
            p.name,
            p.got
        );
        p.wait_who(&["alice", "bob", "dave"], WAIT);
    }
    back.drain();
    assert_eq!(count(&back, "one"), 0, "seen before, sent again");
    assert_eq!(count(&back, "to you"), 1);
}

#[test]
fn private_messages_follow_a_session_that_moves_while_its_server_lives() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_grace(&redis.url(), 30);
    let b = Server::start_with_grace(&redis.url(), 30);
    let mut alice = Peer::join(a.addr, "alice");
    let mut carol = Peer::join(a.addr, "carol");
    let mut bob = Peer::join(b.addr, "bob");
    for p in [&mut alice, &mut bob, &mut carol] {
        p.wait_who(&["alice", "bob", "carol"], WAIT);
    }
    // alice writes to carol, on her own server; then her link breaks
    // (a keeps her session for the grace period).
    alice.say(Some("carol"), "once to carol");
    carol.wait_chat("once to carol");
    alice.stream.shutdown(std::net::Shutdown::Both).unwrap();
    thread::sleep(Duration::from_millis(300));
    carol.say(Some("alice"), "while away");
    bob.say(None, "marker");
    carol.wait_chat("marker");
    // Her client comes back on b: what carol sent meanwhile is there.
    let mut back = resume_on(&mut alice, b.addr);
    back.wait(WAIT, "carol's message from while she was away", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Chat(c) if c.text == "while away" && c.private))
    });
    // What carol sends now reaches her on b.
    carol.say(Some("alice"), "after the move");
    back.wait_chat("after the move");
    // Her message to carol, sent again on b (its ack never came): once.
    back.send(&ClientMessage::Chat {
        client_id: 1,
        to: Recipient::User(Username::new("carol").unwrap()),
        kind: ChatKind::Text,
        text: "once to carol".into(),
    });
    back.wait(WAIT, "its ack", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Ack { client_id: 1, .. }))
    });
    back.say(Some("carol"), "second");
    carol.wait_chat("second");
    back.drain();
    assert_eq!(count(&carol, "once to carol"), 1, "{:?}", texts(&carol));
    assert_eq!(count(&back, "while away"), 1);
}

#[test]
fn a_message_resent_after_a_resume_elsewhere_is_delivered_once() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_grace(&redis.url(), 30);
    let b = Server::start_with_grace(&redis.url(), 30);
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    for p in [&mut alice, &mut bob] {
        p.wait_who(&["alice", "bob"], WAIT);
    }
    alice.say(None, "only once");
    bob.wait_chat("only once");
    a.kill9();
    // As if its ack had been lost with the server: sent again, same id.
    let mut back = resume_on(&mut alice, b.addr);
    back.send(&ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: "only once".into(),
    });
    back.wait(WAIT, "its ack", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Ack { client_id: 1, .. }))
    });
    back.say(None, "marker");
    bob.wait_chat("marker");
    assert_eq!(count(&bob, "only once"), 1, "{:?}", texts(&bob));
}

#[test]
fn a_server_started_later_gives_the_room_history_from_the_cluster() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(a.addr, "bob");
    alice.wait_who(&["alice", "bob"], WAIT);
    // Each its own entry (sent once the one before arrived), more than a
    // page of what a server reads of the stream at a time.
    for i in 0..40 {
        let text = format!("history {i}");
        alice.say(None, &text);
        bob.wait_chat(&text);
    }
    alice.say(Some("bob"), "secret");
    bob.wait_chat("secret");
    // Published: a server started now finds them in Redis.
    let b = Server::start(&redis.url());
    let mut dave = Peer::join(b.addr, "dave");
    dave.wait(WAIT, "the history", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Chat(c) if c.history && c.text == "history 39"))
    });
    let history: Vec<(String, String)> = dave
        .got
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) if c.history => Some((c.from.to_string(), c.text.clone())),
            _ => None,
        })
        .collect();
    let want: Vec<(String, String)> = (0..40)
        .map(|i| ("alice".to_string(), format!("history {i}")))
        .collect();
    assert_eq!(history, want, "private messages are never history");
    assert!(texts(&dave).is_empty(), "history came as live messages");
}

#[test]
fn a_reused_or_guessed_token_is_refused_on_any_server() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_grace(&redis.url(), 30);
    let b = Server::start_with_grace(&redis.url(), 30);
    let c = Server::start_with_grace(&redis.url(), 30);
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    for p in [&mut alice, &mut bob] {
        p.wait_who(&["alice", "bob"], WAIT);
    }
    let used = ResumeRequest {
        token: alice.token,
        last_seen: MessageId(0),
        epoch: alice.epoch,
    };
    let mut back = resume_on(&mut alice, b.addr);
    let tries = [
        ("alice", used),
        (
            "alice",
            ResumeRequest {
                token: ResumeToken([7; 16]),
                ..used
            },
        ),
    ];
    for (name, request) in tries {
        let mut thief = Peer::connect(c.addr);
        let refused = thief.hello_with(name, Some(request));
        assert_eq!(
            refused.map_err(|e| e.0),
            Err(RefuseCode::NAME_TAKEN),
            "a spent or guessed token took alice's session"
        );
    }
    // Her new token is bound to her name: under another it is a new user.
    let mut mallory = Peer::connect(c.addr);
    mallory
        .hello_with(
            "mallory",
            Some(ResumeRequest {
                token: back.token,
                last_seen: MessageId(0),
                epoch: back.epoch,
            }),
        )
        .unwrap();
    assert!(!mallory.resumed);
    back.say(None, "still me");
    bob.wait(WAIT, "her line", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Chat(c) if c.text == "still me" && c.from.as_str() == "alice"))
    });
}

// ---------------------------------------------------------------------------
// Pushes (`/sendfile`) between servers
// ---------------------------------------------------------------------------

/// The window of file data one push may have in Redis (as the server's).
const PUSH_WINDOW: usize = 1024 * 1024;
/// The chunks the raw pushers of these tests send.
const CHUNK: usize = 64 * 1024;

/// Bytes that differ from file to file.
fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// FNV-1a: a checksum to compare what arrived with what was sent.
fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The real `imchat-client`, piped, stopped by its handle.
struct Client {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    dir: std::path::PathBuf,
}

impl Client {
    fn start(server: &Server, name: &str, flags: &[&str]) -> Client {
        let mut c = Client::start_at(server, &server.addr.to_string(), name, flags);
        c.expect(&format!("as {name}"));
        c
    }

    /// A client of `servers` (one address, or several separated by
    /// commas), its folder in `home`'s; not waited for.
    fn start_at(home: &Server, servers: &str, name: &str, flags: &[&str]) -> Client {
        let dir = home.dir.path().join(format!("client-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(client_bin())
            .args(flags)
            .arg("--download-dir")
            .arg(dir.join("dl"))
            .args([name, servers])
            .env("XDG_DATA_HOME", &dir)
            .env("HOME", &dir)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the client");
        let rx = common::output_lines(&mut child, "");
        Client {
            child,
            lines: rx,
            seen: Vec::new(),
            dir,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a line containing `needle` (and takes it).
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.seen.iter().position(|l| l.contains(needle)) {
                return self.seen.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with {needle:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Asks `/who` until it lists `name`.
    fn wait_online(&mut self, name: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.send("/who");
            let l = self.expect("online (");
            if l.split([':', ',', ' ']).any(|w| w == name) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} not online: {l}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn received(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join("dl").join("received").join(file))
            .unwrap_or_else(|e| panic!("no received/{file}: {e}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two servers (started with `args`) and the stock client of alice given
/// both, bob's on the second; the first is killed: alice's session must
/// resume on the second, with nothing lost and no leave or join seen.
fn the_stock_client_moves_to_the_live_server(args: &[&str], client_flags: &[&str]) {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_env(&redis.url(), 30, &[], args);
    let b = Server::start_with_env(&redis.url(), 30, &[], args);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let mut alice = Client::start_at(&b, &format!("{a_addr},{b_addr}"), "alice", client_flags);
    alice.expect(&format!("connected to {a_addr} as alice"));
    let mut bob = Client::start(&b, "bob", client_flags);
    bob.wait_online("alice");
    // Her join may have reached b after bob's: from here on, no more.
    bob.seen.clear();

    a.kill9();
    bob.send("while she was away");
    // The next server first: b takes her session over from the dead a.
    alice.expect(&format!("reconnected to {b_addr}"));
    alice.expect("*** resumed");
    alice.expect("<bob> while she was away");
    alice.send("back on b");
    bob.expect("<alice> back on b");
    // Nobody saw her leave or join.
    bob.send("/who");
    bob.expect("online (2): alice, bob");
    for l in &bob.seen {
        assert!(!l.contains("alice has"), "bob saw {l:?}");
    }
}

#[test]
fn the_stock_client_given_the_cluster_s_servers_resumes_on_a_live_one() {
    the_stock_client_moves_to_the_live_server(&[], &[]);
}

#[test]
fn a_session_moves_to_a_server_with_a_password_for_a_client_that_gives_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "open sesame\n").unwrap();
    let file = file.to_str().unwrap();
    the_stock_client_moves_to_the_live_server(
        &["--password-file", file],
        &["--password-file", file],
    );
}

#[test]
fn cut_off_a_server_with_a_password_checks_it_before_anything_of_the_cluster() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "open sesame\n").unwrap();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let a = Server::start_with_env(
        &format!("redis://{}", proxy.addr),
        0,
        &[],
        &["--password-file", file.to_str().unwrap()],
    );
    proxy.cut();
    let deadline = Instant::now() + WAIT;
    while !a.log().contains("is unreachable") {
        assert!(Instant::now() < deadline, "the cut was never noticed");
        thread::sleep(Duration::from_millis(50));
    }
    // No password, then a wrong one: refused for it, not told of the cluster.
    let mut p = Peer::connect(a.addr);
    let (code, reason) = p.hello("stranger").unwrap_err();
    assert_eq!(code, RefuseCode::PASSWORD_REQUIRED, "{reason}");
    let mut p = Peer::connect(a.addr);
    p.send(&ClientMessage::Auth {
        server: imchat_core::Secret::new("guess"),
        account: None,
    });
    let (code, reason) = p.hello("stranger").unwrap_err();
    assert_eq!(code, RefuseCode::WRONG_PASSWORD, "{reason}");
}

/// Alice on one server pushes `len` bytes to bob on another, whose server
/// runs with `env`: the file arrives whole, and nothing of it is left in
/// Redis.
fn push_to_a_user_of_another_server(env: &[(&str, &Path)], file: &str, len: usize, seed: u64) {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start_with_env(&redis.url(), 0, env, &[]);
    let mut bob = Client::start(&b, "bob", &[]);
    let mut alice = Client::start(&a, "alice", &[]);
    alice.wait_online("bob");
    let data = file_bytes(len, seed);
    let path = alice.dir.join(file);
    std::fs::write(&path, &data).unwrap();
    alice.send(&format!("/sendfile {} bob", path.display()));
    alice.expect("accepted by 1 user(s)");
    bob.expect(&format!(
        "received {file} ({} bytes) from alice",
        data.len()
    ));
    alice.expect(&format!("sent {file} to 1 user(s)"));
    let got = bob.received(file);
    assert_eq!(got.len(), data.len());
    assert_eq!(checksum(&got), checksum(&data));
    wait_no_push_keys(&redis);
}

#[test]
fn a_file_pushed_to_a_user_of_another_server_arrives_intact() {
    // Several windows' worth, and not a whole number of chunks.
    push_to_a_user_of_another_server(&[], "big.bin", 3 * PUSH_WINDOW + 12_345, 1);
}

/// Redis stalled past the receiving server's read timeout: the server gave
/// its connection up with a wait for the next piece of the file on it,
/// which Redis ran when it woke, for nobody; and a removal of a piece it
/// had handled, sent again, ran twice. Here the tests' fail points do it:
/// the first wait (before any data: it and the next wait both get a piece)
/// and the first removal, then a quarter of them at random. Nothing of the
/// file is lost, nothing taken twice.
#[test]
fn a_push_whose_receiving_server_lost_redis_answers_arrives_intact() {
    let points = "cluster-push-lost=1*return->25%return;cluster-push-ack-twice=1*return->25%return";
    push_to_a_user_of_another_server(
        &[("FAILPOINTS", Path::new(points))],
        "stalled.bin",
        3 * PUSH_WINDOW + 4321,
        7,
    );
}

#[test]
fn a_file_pushed_to_everyone_reaches_the_users_of_every_server() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let c = Server::start(&redis.url());
    let mut carol = Client::start(&a, "carol", &[]);
    let mut bob = Client::start(&b, "bob", &[]);
    let mut dave = Client::start(&c, "dave", &[]);
    let mut alice = Client::start(&a, "alice", &[]);
    alice.wait_online("bob");
    alice.wait_online("dave");
    let data = file_bytes(PUSH_WINDOW + 777, 2);
    let path = alice.dir.join("all.bin");
    std::fs::write(&path, &data).unwrap();
    alice.send(&format!("/sendfile {}", path.display()));
    alice.expect("accepted by 3 user(s)");
    for rx in [&mut carol, &mut bob, &mut dave] {
        rx.expect(&format!(
            "received all.bin ({} bytes) from alice",
            data.len()
        ));
        assert_eq!(checksum(&rx.received("all.bin")), checksum(&data));
    }
    alice.expect("sent all.bin to 3 user(s)");
    wait_no_push_keys(&redis);
}

#[test]
fn a_file_declined_on_another_server_is_reported_to_the_sender() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    // Bob's client takes nothing without asking, and nobody is at its terminal.
    let mut bob = Client::start(&b, "bob", &["--auto-accept-bytes", "1"]);
    let mut alice = Client::start(&a, "alice", &[]);
    alice.wait_online("bob");
    let path = alice.dir.join("no.txt");
    std::fs::write(&path, b"not wanted\n").unwrap();
    alice.send(&format!("/sendfile {} bob", path.display()));
    bob.expect("declined 'no.txt'");
    alice.expect("bob did not accept the file");
    wait_no_push_keys(&redis);
}

/// A Redis that refuses `BLMOVE` (an ACL forbids it; a server that speaks
/// Redis's protocol may lack it): a push to a user of another server fails at once, its
/// pusher and receiver told, the receiving server's log says why, and
/// Redis is not flooded. Before, the receiving server asked again on a
/// new connection each time, as fast as Redis refused (thousands of
/// connections a second), logging nothing, until the push's idle timeout
/// (60 s) ended it as "no file data".
#[test]
fn a_redis_that_refuses_blmove_fails_a_push_between_servers_at_once() {
    let Some(redis) = Redis::start() else { return };
    let mut con = redis_con(&redis);
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-blmove")
        .query::<()>(&mut con)
        .unwrap();
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut bob = Client::start(&b, "bob", &[]);
    let mut alice = Client::start(&a, "alice", &[]);
    alice.wait_online("bob");
    let before = connections(&mut con);
    let path = alice.dir.join("f.bin");
    std::fs::write(&path, vec![7u8; 200_000]).unwrap();
    alice.send(&format!("/sendfile {} bob", path.display()));
    alice.expect("cannot pass files between servers");
    bob.expect("cannot pass files between servers");
    assert!(
        b.log()
            .contains("Redis's ACL does not let the URL's user run BLMOVE"),
        "{}",
        b.log()
    );
    let opened = connections(&mut con) - before;
    assert!(opened < 100, "{opened} connections to Redis for one push");
    wait_no_push_keys(&redis);
}

/// The connections Redis took since it started (`INFO stats`).
fn connections(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received in INFO stats")
}

/// Redis full (`maxmemory`, `noeviction`) during a push between servers:
/// the receiving server waits for it on the connection it has, and the
/// file arrives whole once Redis takes writes again. Before, each refused
/// wait was taken for a broken connection: a new one, at once, thousands
/// a second for as long as Redis was full.
#[test]
fn a_full_redis_during_a_push_between_servers_is_not_flooded_with_connections() {
    let Some(redis) = Redis::start() else { return };
    let mut con = redis_con(&redis);
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut bob = Client::start(&b, "bob", &["--auto-accept-bytes", "100M"]);
    let mut alice = Client::start(&a, "alice", &[]);
    alice.wait_online("bob");
    let path = alice.dir.join("full.bin");
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    alice.send(&format!("/sendfile {} bob", path.display()));
    bob.expect("is sending you full.bin");
    let before = connections(&mut con);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query::<()>(&mut con)
        .unwrap();
    thread::sleep(Duration::from_secs(3));
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query::<()>(&mut con)
        .unwrap();
    let opened = connections(&mut con) - before;
    bob.expect("received full.bin");
    assert!(bob.received("full.bin") == data, "full.bin differs");
    assert!(opened < 500, "{opened} connections to Redis in 3 s");
}

/// A raw client that reads only while `pause` is off, one small read every
/// `delay_ms` (0: as fast as it can), with a small receive buffer: a slow
/// receiver. It acknowledges each chunk of a push once read.
struct SlowPeer {
    stream: TcpStream,
    rx: Receiver<ServerMessage>,
    got: Vec<ServerMessage>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl SlowPeer {
    fn join(addr: SocketAddr, name: &str) -> SlowPeer {
        let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        small_receive_buffer(&stream);
        let mut reader = stream.try_clone().unwrap();
        let mut acker = stream.try_clone().unwrap();
        let (tx, rx) = channel();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (d, r) = (delay_ms.clone(), received.clone());
        thread::spawn(move || {
            let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let since = Instant::now();
                while since.elapsed() < Duration::from_millis(d.load(Ordering::SeqCst)) {
                    thread::sleep(Duration::from_millis(5));
                }
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => dec.feed(&buf[..n]),
                }
                while let Ok(Some(m)) = dec.next_message() {
                    if let ServerMessage::Chunk(c) = &m {
                        r.lock().unwrap().extend_from_slice(&c.data);
                        let ack = ClientMessage::Ack {
                            id: c.id,
                            offset: c.offset + c.data.len() as u64,
                        };
                        let _ = acker.write_all(&ack.to_frame());
                        continue;
                    }
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
        });
        let mut p = SlowPeer {
            stream,
            rx,
            got: Vec::new(),
            delay_ms,
            received,
        };
        p.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: Username::new(name).unwrap(),
            resume: None,
        });
        p.wait("welcome", |m| matches!(m, ServerMessage::Welcome { .. }));
        p
    }

    fn send(&mut self, m: &ClientMessage) {
        let _ = self.stream.write_all(&m.to_frame());
    }

    fn wait(&mut self, what: &str, f: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.got.iter().position(&f) {
                return self.got.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => self.got.push(m),
                Err(_) => panic!("no {what}; got {:?}", self.got),
            }
        }
    }

    /// Waits for a push offer and accepts it.
    fn accept_offer(&mut self) {
        let start = self.wait("an offer", |m| matches!(m, ServerMessage::FileStart(_)));
        let ServerMessage::FileStart(start) = start else {
            unreachable!()
        };
        self.send(&ClientMessage::Accept { id: start.id });
    }
}

#[cfg(unix)]
fn small_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 * 1024;
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

#[cfg(not(unix))]
fn small_receive_buffer(_: &TcpStream) {}

/// A raw pusher: offers `data` to `to`, and once accepted sends it from a
/// thread of its own ([`send_within_credit`]).
fn push_raw(p: &mut Peer, to: &str, data: Arc<Vec<u8>>) -> thread::JoinHandle<()> {
    p.send(&ClientMessage::Offer {
        id: imchat_core::TransferId(1),
        name: imchat_core::FileName::new("data.bin").unwrap(),
        size: data.len() as u64,
        to: Recipient::User(Username::new(to).unwrap()),
    });
    p.wait(WAIT, "the acceptance", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::PushAccepted { .. }))
    });
    send_within_credit(p, data)
}

/// Sends push 1's `data` from a thread, as a client must: never past the
/// credit the server gave, waiting (5 ms at a time, 90 s at most) for
/// more when at it; stops when the push ended.
fn send_within_credit(p: &Peer, data: Arc<Vec<u8>>) -> thread::JoinHandle<()> {
    let mut w = p.stream.try_clone().unwrap();
    let state = p.push.clone();
    thread::spawn(move || {
        let id = imchat_core::TransferId(1);
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut sent = 0usize;
        while sent < data.len() {
            if state.ended.load(Ordering::SeqCst) || Instant::now() >= deadline {
                return;
            }
            let credit = usize::try_from(state.credit.load(Ordering::SeqCst)).unwrap();
            let n = CHUNK
                .min(data.len() - sent)
                .min(credit.saturating_sub(sent));
            if n == 0 {
                state.waits.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            let c = imchat_core::FileChunk::new(id, sent as u64, data[sent..sent + n].to_vec());
            if w.write_all(&ClientMessage::Chunk(c).to_frame()).is_err() {
                return;
            }
            sent += n;
            state.sent.store(sent as u64, Ordering::SeqCst);
        }
        let end = ClientMessage::End(imchat_core::FileEnd {
            id,
            crc: crc_of(&data),
        });
        let _ = w.write_all(&end.to_frame());
    })
}

/// CRC32 (IEEE), as the protocol's whole-file check.
fn crc_of(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

fn redis_con(redis: &Redis) -> redis::Connection {
    let c = redis::Client::open(redis.url()).unwrap();
    c.get_connection_with_timeout(WAIT).unwrap()
}

/// The push lists in Redis and the bytes each holds.
fn push_lists(con: &mut redis::Connection) -> Vec<(String, usize)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("imchat:push:*").query(con).unwrap();
    keys.into_iter()
        .filter(|k| !k.ends_with(":n") && !k.ends_with(":bell") && !k.ends_with(":at"))
        .map(|k| {
            let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .query(con)
                .unwrap_or_default();
            (k, items.iter().map(Vec::len).sum())
        })
        .collect()
}

/// Waits until Redis holds no key of any push.
fn wait_no_push_keys(redis: &Redis) {
    let mut con = redis_con(redis);
    let deadline = Instant::now() + WAIT;
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("imchat:push:*")
            .query(&mut con)
            .unwrap();
        if keys.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "push keys left in Redis: {keys:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_slow_receiver_on_another_server_bounds_what_redis_holds() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut rx = SlowPeer::join(b.addr, "slow");
    let mut p = Peer::join(a.addr, "pusher");
    p.wait_who(&["pusher", "slow"], WAIT);
    let data = Arc::new(file_bytes(6 * PUSH_WINDOW, 3));
    // 16 KiB every 8 ms: about 2 MB/s, far below what the servers carry.
    rx.delay_ms.store(8, Ordering::SeqCst);
    let accepting = thread::spawn(move || {
        rx.accept_offer();
        rx
    });
    let sender = push_raw(&mut p, "slow", data.clone());
    let mut rx = accepting.join().unwrap();
    let mut con = redis_con(&redis);
    let (mut most, mut samples) = (0usize, 0u32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.received.lock().unwrap().len() < data.len() {
        for (_, bytes) in push_lists(&mut con) {
            most = most.max(bytes);
        }
        samples += 1;
        assert!(Instant::now() < deadline, "the file did not arrive in time");
        thread::sleep(Duration::from_millis(5));
    }
    arrived_whole(&mut rx, &mut p, sender, &data);
    eprintln!("most file data in Redis for the push: {most} bytes ({samples} samples)");
    // The receiver was slow enough for the pusher to use up its credit
    // (which follows the receiver on the other server), and Redis never
    // held more than that credit.
    assert!(
        p.push.waits.load(Ordering::SeqCst) > 0,
        "the pusher never waited for credit"
    );
    assert!(most <= PUSH_WINDOW + CHUNK + 64, "{most} bytes in Redis");
    wait_no_push_keys(&redis);
}

/// Waits for the end of a push of `data` at its receiver, its sender's
/// data thread, and the sender's `PushDone`; checks what arrived.
fn arrived_whole(rx: &mut SlowPeer, p: &mut Peer, sender: thread::JoinHandle<()>, data: &[u8]) {
    rx.wait("the end", |m| matches!(m, ServerMessage::End(_)));
    sender.join().unwrap();
    p.wait(WAIT, "push done", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::PushDone { receivers: 1, .. }))
    });
    assert_eq!(checksum(&rx.received.lock().unwrap()), checksum(data));
}

/// A push of `data` from `sender` on server `a` to `receiver` on server
/// `b`, read at about 2 MB/s, once `at_least` bytes have arrived: the
/// receiver, the sender and the sender's data thread.
fn slow_push_under_way(
    (a, b): (&Server, &Server),
    (sender, receiver): (&str, &str),
    data: &Arc<Vec<u8>>,
    at_least: usize,
) -> (SlowPeer, Peer, thread::JoinHandle<()>) {
    let mut rx = SlowPeer::join(b.addr, receiver);
    let mut p = Peer::join(a.addr, sender);
    p.wait_who(&[sender, receiver], WAIT);
    // 16 KiB every 8 ms.
    rx.delay_ms.store(8, Ordering::SeqCst);
    let accepting = thread::spawn(move || {
        rx.accept_offer();
        rx
    });
    let thread = push_raw(&mut p, receiver, data.clone());
    let rx = accepting.join().unwrap();
    let deadline = Instant::now() + WAIT;
    while rx.received.lock().unwrap().len() < at_least {
        assert!(Instant::now() < deadline, "no data arrived");
        thread::sleep(Duration::from_millis(5));
    }
    (rx, p, thread)
}

#[test]
fn a_push_between_servers_goes_on_through_a_redis_that_stalls() {
    let Some(redis) = Redis::start() else { return };
    // A lease longer than the stall: the servers do not take each other
    // for dead.
    let lease = ["--cluster-lease-secs", "10"];
    let a = Server::start_with_env(&redis.url(), 0, &[], &lease);
    let b = Server::start_with_env(&redis.url(), 0, &[], &lease);
    // About 2 s at the receiver's pace.
    let data = Arc::new(file_bytes(4 * PUSH_WINDOW, 5));
    let (mut rx, mut p, sender) =
        slow_push_under_way((&a, &b), ("pusher", "slow"), &data, PUSH_WINDOW / 2);
    // Mid-transfer, Redis answers nothing for 3 s: longer than a command
    // may take (2 s). Before, the sending server gave the push up then.
    signal(redis.child.id(), "-STOP");
    thread::sleep(Duration::from_secs(3));
    signal(redis.child.id(), "-CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.received.lock().unwrap().len() < data.len() {
        assert!(
            Instant::now() < deadline,
            "the file did not arrive: {} of {} bytes; the pusher got {:?}",
            rx.received.lock().unwrap().len(),
            data.len(),
            p.got
        );
        thread::sleep(Duration::from_millis(20));
    }
    arrived_whole(&mut rx, &mut p, sender, &data);
    wait_no_push_keys(&redis);
}

/// A push from a user of A to one of B whose receiver stopped reading,
/// once the window toward B is full.
fn stuck_push(redis: &Redis) -> (Server, Server, Peer, SlowPeer, thread::JoinHandle<()>) {
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut rx = SlowPeer::join(b.addr, "stuck");
    let mut p = Peer::join(a.addr, "pusher");
    p.wait_who(&["pusher", "stuck"], WAIT);
    let data = Arc::new(file_bytes(32 * PUSH_WINDOW, 4));
    let accepting = thread::spawn(move || {
        rx.accept_offer();
        // Then it reads no more.
        rx.delay_ms.store(u64::MAX / 2, Ordering::SeqCst);
        rx
    });
    let sender = push_raw(&mut p, "stuck", data);
    let rx = accepting.join().unwrap();
    // The pusher sends all its credit (B's receiver reads nothing, so it
    // gets no more), and B takes it all from Redis.
    let mut con = redis_con(redis);
    let deadline = Instant::now() + WAIT;
    loop {
        let sent = p.push.sent.load(Ordering::SeqCst);
        let most = push_lists(&mut con).iter().map(|(_, n)| *n).max();
        if sent == PUSH_WINDOW as u64 && most.unwrap_or(0) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the credit was never used up: {sent} bytes sent, {most:?} in Redis"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(p.push.credit.load(Ordering::SeqCst), PUSH_WINDOW as u64);
    (a, b, p, rx, sender)
}

#[test]
fn a_receiving_server_stopped_mid_transfer_ends_it_for_the_sender() {
    let Some(redis) = Redis::start() else { return };
    let (_a, b, mut p, _rx, sender) = stuck_push(&redis);
    let stopped = Instant::now();
    b.terminate();
    let exited = stopped.elapsed();
    // The pusher is told that its file did not arrive, not that it was sent.
    let ended =
        |m: &ServerMessage| matches!(m, ServerMessage::Cancel(_) | ServerMessage::PushDone { .. });
    p.wait(WAIT, "the push's end", |g| g.iter().any(ended));
    let end = p.got.iter().find(|m| ended(m)).unwrap();
    assert!(matches!(end, ServerMessage::Cancel(_)), "{end:?}");
    eprintln!(
        "the pusher was told {:?} after SIGTERM (B exited after {exited:?})",
        stopped.elapsed()
    );
    wait_no_push_keys(&redis);
    sender.join().unwrap();
}

#[test]
fn a_receiving_server_killed_mid_transfer_ends_it_for_the_sender() {
    let Some(redis) = Redis::start() else { return };
    let (a, b, mut p, _rx, sender) = stuck_push(&redis);
    // B dies.
    let killed = Instant::now();
    b.kill9();
    p.wait(WAIT, "the push's end", |g| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Cancel(c) if c.code == imchat_core::CancelCode::NO_RECEIVER)
        })
    });
    eprintln!("the pusher was told {:?} after the kill", killed.elapsed());
    // Nothing of the push is left in Redis: it does not grow.
    wait_no_push_keys(&redis);
    eprintln!("no push key left {:?} after the kill", killed.elapsed());
    // The pusher's connection was released, and A goes on serving it.
    sender.join().unwrap();
    p.say(None, "still here");
    let mut q = Peer::join(a.addr, "witness");
    p.say(None, "still here 2");
    q.wait_chat("still here 2");
}

#[test]
fn a_sender_that_leaves_mid_transfer_ends_it_on_the_other_server() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let data = Arc::new(file_bytes(16 * PUSH_WINDOW, 5));
    let (mut rx, p, sender) =
        slow_push_under_way((&a, &b), ("leaver", "reader"), &data, PUSH_WINDOW);
    // The sender's connection drops in the middle of the file.
    let _ = p.stream.shutdown(Shutdown::Both);
    sender.join().unwrap();
    let m = rx.wait("the cancel", |m| matches!(m, ServerMessage::Cancel(_)));
    assert!(
        matches!(&m, ServerMessage::Cancel(c) if c.code == imchat_core::CancelCode::PEER_LEFT),
        "{m:?}"
    );
    assert!(rx.received.lock().unwrap().len() < data.len());
    wait_no_push_keys(&redis);
    drop((a, b));
}

#[test]
fn a_receiver_that_leaves_mid_transfer_on_another_server_ends_it_for_the_sender() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let mut rx = SlowPeer::join(b.addr, "goer");
    let mut p = Peer::join(a.addr, "sender");
    p.wait_who(&["goer", "sender"], WAIT);
    let data = Arc::new(file_bytes(16 * PUSH_WINDOW, 6));
    rx.delay_ms.store(8, Ordering::SeqCst);
    let accepting = thread::spawn(move || {
        rx.accept_offer();
        rx
    });
    let sender = push_raw(&mut p, "goer", data);
    let rx = accepting.join().unwrap();
    let deadline = Instant::now() + WAIT;
    while rx.received.lock().unwrap().len() < PUSH_WINDOW {
        assert!(Instant::now() < deadline, "no data arrived");
        thread::sleep(Duration::from_millis(10));
    }
    // The receiver's connection drops in the middle of the file.
    let _ = rx.stream.shutdown(Shutdown::Both);
    p.wait(WAIT, "the push's end", |g| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Cancel(c) if c.code == imchat_core::CancelCode::NO_RECEIVER)
        })
    });
    wait_no_push_keys(&redis);
    sender.join().unwrap();
    drop((a, b));
}

/// A server killed (kill -9) and started again on its `--history-db`
/// lets its users resume there: what they missed comes once, and nobody
/// saw them leave or join.
#[test]
fn a_session_resumes_on_its_own_server_restarted_after_a_kill() {
    restarted_after_a_kill(false);
}

/// As [`a_session_resumes_on_its_own_server_restarted_after_a_kill`],
/// killed before its file kept its user's last message: the restarted
/// server reads it again from the stream, as its own user's, and its
/// history has it once.
#[test]
fn a_message_the_killed_server_s_file_lost_comes_back_from_the_stream() {
    restarted_after_a_kill(true);
}

/// Whether a batch of the `--history-db` at `db` holds `text`.
fn file_holds(db: &str, text: &str) -> bool {
    let file =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let n: i64 = file
        .query_row(
            "SELECT count(*) FROM batches WHERE instr(entries, CAST(?1 AS BLOB)) > 0",
            [text],
            |r| r.get(0),
        )
        .unwrap();
    n > 0
}

/// Takes from the `--history-db` at `db` (its server dead) the batch that
/// holds `text` and those after it, as a kill before their commit would.
fn lose_from(db: &str, text: &str) {
    let file = rusqlite::Connection::open(db).unwrap();
    let gone = file
        .execute(
            "DELETE FROM batches WHERE first_id >= (SELECT min(first_id) FROM batches \
             WHERE instr(entries, CAST(?1 AS BLOB)) > 0)",
            [text],
        )
        .unwrap();
    assert!(gone > 0, "no batch holds {text:?}");
}

/// Alice on A (with its database) and bob on B talk; A is killed, bob
/// talks on, A restarts and alice resumes there. With `lose`, A's file
/// loses alice's last message before the restart.
fn restarted_after_a_kill(lose: bool) {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, a, _b, mut alice, mut bob) = alice_on_a_with_its_database(&redis);
    let db = db.as_str();
    alice.wait_who(&["alice", "bob"], WAIT);
    for i in 0..3 {
        bob.say(None, &format!("before {i}"));
    }
    alice.wait_chat("before 2");
    alice.say(None, "alice before");
    bob.wait_chat("alice before");
    bob.drain();
    let mark = bob.got.len();
    let deadline = Instant::now() + WAIT;
    while !file_holds(db, "alice before") {
        assert!(Instant::now() < deadline, "the file never kept it");
        thread::sleep(Duration::from_millis(20));
    }
    a.kill9();
    if lose {
        lose_from(db, "alice before");
    }
    for i in 0..3 {
        bob.say(None, &format!("while down {i}"));
    }
    // Past a's lease: b knows it is dead.
    thread::sleep(Duration::from_secs(3));
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", db]);
    bob.say(None, "after restart");
    let mut back = resume_on(&mut alice, a2.addr);
    back.wait_chat("after restart");
    thread::sleep(Duration::from_secs(1));
    back.drain();
    let got = texts(&back);
    assert_eq!(
        got,
        [
            "while down 0",
            "while down 1",
            "while down 2",
            "after restart"
        ],
        "what alice got on her resume"
    );
    for who in ["alice", "bob"] {
        assert_eq!(
            presence_of(&back.got, who),
            Vec::<&str>::new(),
            "alice was told {who} came or went: {:?}",
            back.got
        );
    }
    bob.drain();
    assert_eq!(presence_of(&bob.got[mark..], "alice"), Vec::<&str>::new());
    back.say(None, "I am back");
    bob.wait_chat("I am back");
    bob.wait_who(&["alice", "bob"], WAIT);
    // The restarted server's history has what it had before once: its
    // own entries it reads back from the stream are not logged again.
    let mut carol = Peer::join(a2.addr, "carol");
    carol.wait(WAIT, "the history", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Chat(c) if c.text == "I am back"))
    });
    carol.drain();
    let history: Vec<&str> = carol
        .got
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) => Some(c.text.as_str()),
            _ => None,
        })
        .collect();
    for t in ["before 2", "alice before", "while down 2", "I am back"] {
        let n = history.iter().filter(|h| **h == t).count();
        assert_eq!(n, 1, "{t} in the history: {history:?}");
    }
}

/// A user of another server that resumes on a server restarted on its
/// `--history-db` gets what it missed, not the restarted server's whole
/// history again: the entries its file kept came before what it saw.
#[test]
fn a_session_moving_to_a_restarted_server_gets_only_what_it_missed() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, a, b, mut alice, mut bob) = alice_on_a_with_its_database(&redis);
    let db = db.as_str();
    alice.wait_who(&["alice", "bob"], WAIT);
    alice.say(None, "alice before");
    bob.wait_chat("alice before");
    a.kill9();
    bob.say(None, "while a was down");
    thread::sleep(Duration::from_secs(3));
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", db]);
    let mut carol = Peer::join(a2.addr, "carol");
    carol.wait_chat("while a was down");
    bob.say(None, "seen by bob");
    carol.wait_chat("seen by bob");
    b.kill9();
    carol.say(None, "after b died");
    // Past b's lease: a2 knows it is dead.
    thread::sleep(Duration::from_secs(3));
    let mut back = resume_on(&mut bob, a2.addr);
    back.wait_chat("after b died");
    thread::sleep(Duration::from_millis(500));
    back.drain();
    assert_eq!(texts(&back), ["after b died"], "what bob got on his resume");
}

/// What `g` tells of chats and comings and goings, in order:
/// `<from> text`, `+name`, `-name (reason code)`.
fn story(g: &[ServerMessage]) -> Vec<String> {
    let mut out = Vec::new();
    let left = |d: &Departure| format!("-{} ({})", d.user.as_str(), d.reason.0);
    for m in g {
        match m {
            ServerMessage::Chat(c) => out.push(format!("<{}> {}", c.from.as_str(), c.text)),
            ServerMessage::Joined { user, .. } => out.push(format!("+{}", user.as_str())),
            ServerMessage::Left(d) => out.push(left(d)),
            ServerMessage::Presence(es) => {
                for e in es {
                    out.push(match e {
                        PresenceEvent::Joined { user, .. } => format!("+{}", user.as_str()),
                        PresenceEvent::Left(d) => left(d),
                        // Not entries of the log: the story is of entries.
                        PresenceEvent::Away { .. } | PresenceEvent::Back { .. } => continue,
                    });
                }
            }
            _ => {}
        }
    }
    out.retain(|s| !s.contains("probe"));
    out
}

/// A user that resumes on a server restarted on its `--history-db` is
/// told what happened while it was down in the order it happened, each
/// leave with its own reason.
#[test]
fn a_resume_on_a_restarted_server_tells_what_happened_meanwhile_in_order() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, a, b, mut alice, mut bob) = alice_on_a_with_its_database(&redis);
    let mut carol = Peer::join(b.addr, "carol");
    alice.wait_who(&["alice", "bob", "carol"], WAIT);
    a.kill9();
    bob.say(None, "while a was down");
    carol.wait_chat("while a was down");
    bob.quit();
    carol.wait(WAIT, "bob leaving", |g| has_left(g, "bob"));
    let mut zoe = Peer::join(b.addr, "zoe");
    zoe.say(None, "zoe here");
    carol.wait_chat("zoe here");
    thread::sleep(Duration::from_secs(2));
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", &db]);
    let mut back = resume_on(&mut alice, a2.addr);
    back.wait_chat("zoe here");
    thread::sleep(Duration::from_millis(500));
    back.drain();
    carol.drain();
    let want = [
        "<bob> while a was down".to_string(),
        format!("-bob ({})", LeaveReason::QUIT.0),
        "+zoe".to_string(),
        "<zoe> zoe here".to_string(),
    ];
    assert_eq!(story(&back.got), want, "what alice was told on her resume");
}

/// A server restarted on its `--history-db` after the grace period of its
/// users ran out does not bring them back: their sessions ended in the
/// cluster meanwhile, and their names are free.
#[test]
fn a_server_restarted_after_its_users_grace_ran_out_does_not_bring_them_back() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, a, b, _alice, mut bob) = alice_on_a_with_its_database_and_grace(&redis, 2);
    let db = db.as_str();
    a.kill9();
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    bob.drain();
    let mark = bob.got.len();
    let a2 = Server::start_with_env(&redis.url(), 2, &[], &["--history-db", db]);
    let carol = Peer::join(a2.addr, "carol");
    bob.wait_who(&["bob", "carol"], WAIT);
    thread::sleep(Duration::from_millis(500));
    bob.drain();
    assert_eq!(presence_of(&bob.got[mark..], "alice"), Vec::<&str>::new());
    // Her name is free, on any server.
    let again = Peer::join(b.addr, "alice");
    drop((again, carol));
}

/// A user of a killed server that never comes back is announced as left
/// when its grace runs out after the kill, even if the server is
/// restarted on its `--history-db` meanwhile: the restart does not give
/// it another grace period.
#[test]
fn a_restart_on_the_database_does_not_lengthen_a_lost_user_s_grace() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, a, _b, _alice, mut bob) = alice_on_a_with_its_database_and_grace(&redis, 8);
    let db = db.as_str();
    let killed = Instant::now();
    a.kill9();
    thread::sleep(Duration::from_millis(2_500));
    let _a2 = Server::start_with_env(&redis.url(), 8, &[], &["--history-db", db]);
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    // The lease (1.5 s), then 8 s of grace: not 8 s from the restart.
    let after = killed.elapsed();
    assert!(
        after < Duration::from_millis(9_700),
        "alice left {after:?} after the kill"
    );
}

/// Alice and Amy on A (with `--history-db`), Bob on B, all resumable and
/// seeing one another; then A is killed. The folder of A's database, its
/// path, B, Alice, Amy and Bob.
fn a_killed_with_alice_and_amy(
    redis: &Redis,
) -> (tempfile::TempDir, String, Server, Peer, Peer, Peer) {
    let (dir, db, a, b, alice, mut bob) = alice_on_a_with_its_database(redis);
    let mut amy = Peer::join(a.addr, "amy");
    amy.wait_who(&["alice", "amy", "bob"], WAIT);
    bob.wait_who(&["alice", "amy", "bob"], WAIT);
    // What amy's client saw last is after everyone's join.
    bob.say(None, "hello amy");
    amy.wait_chat("hello amy");
    a.kill9();
    (dir, db, b, alice, amy, bob)
}

/// A kick of a user of a killed server, made while it was down, is told
/// to those who resume on it restarted, in its place and as a kick; and
/// the kicked user's resume there is told it was kicked.
#[test]
fn a_kick_made_while_a_server_was_down_is_told_in_order_on_its_restart() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, mut b, mut alice, mut amy, mut bob) = a_killed_with_alice_and_amy(&redis);
    b.console("kick alice testing");
    b.wait_line("kicked alice");
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    bob.say(None, "m2");
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", &db]);
    let mut back = resume_on(&mut amy, a2.addr);
    back.wait_chat("m2");
    thread::sleep(Duration::from_millis(500));
    back.drain();
    assert_eq!(
        story(&back.got),
        [
            format!("-alice ({})", LeaveReason::KICKED.0),
            "<bob> m2".to_string()
        ],
        "what amy was told on her resume"
    );
    let (again, answer) = try_resume_on(&mut alice, a2.addr);
    assert!(answer.is_ok() && !again.resumed, "{answer:?}");
    assert!(
        again
            .got
            .iter()
            .any(|m| matches!(m, ServerMessage::Notice { text, .. } if text.contains("testing"))),
        "alice is told why her session is over: {:?}",
        again.got
    );
}

/// A user of a killed server that resumed on another one and left there
/// before the killed server was restarted is told once, as it happened,
/// to those who resume on the restarted server.
#[test]
fn a_user_who_moved_and_left_while_a_server_was_down_leaves_once_on_its_restart() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, b, mut alice, amy, mut bob) = a_killed_with_alice_and_amy(&redis);
    thread::sleep(Duration::from_secs(3));
    let mut moved = resume_on(&mut alice, b.addr);
    moved.say(None, "on b");
    bob.wait_chat("on b");
    moved.quit();
    bob.wait(WAIT, "alice leaving", |g| has_left(g, "alice"));
    bob.say(None, "m2");
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", &db]);
    let mut amy = amy;
    let mut back = resume_on(&mut amy, a2.addr);
    back.wait_chat("m2");
    thread::sleep(Duration::from_millis(500));
    back.drain();
    assert_eq!(
        story(&back.got),
        [
            "<alice> on b".to_string(),
            format!("-alice ({})", LeaveReason::QUIT.0),
            "<bob> m2".to_string()
        ],
        "what amy was told on her resume"
    );
}

/// A session that a restarted server took back, resumed on another
/// server instead, is told only what its client missed: its client saw
/// the ids of the killed run, not of the restarted one.
#[test]
fn a_session_taken_back_by_a_restarted_server_resumes_elsewhere_with_nothing_twice() {
    let Some(redis) = Redis::start() else { return };
    let (_dir, db, a, b, mut alice, mut bob) = alice_on_a_with_its_database(&redis);
    let mut erin = Peer::join(a.addr, "erin");
    erin.wait_who(&["alice", "bob", "erin"], WAIT);
    alice.say(None, "alice last");
    erin.wait_chat("alice last");
    bob.wait_chat("alice last");
    a.kill9();
    let a2 = Server::start_with_env(&redis.url(), 30, &[], &["--history-db", &db]);
    a2.wait_line("taken back");
    bob.say(None, "after");
    let mut back = resume_on(&mut erin, b.addr);
    back.wait_chat("after");
    thread::sleep(Duration::from_millis(500));
    back.drain();
    assert_eq!(texts(&back), ["after"], "what erin got on her resume");
}

/// Wrong tokens sent to a server that does not hold the session (its
/// take-over fails, the name is taken elsewhere) count against their
/// address as on the session's own server: past 5, `TOO_MANY_ATTEMPTS`.
/// The right token, from the same address, still takes the session over.
#[test]
fn wrong_tokens_for_a_session_of_another_server_are_limited_and_the_right_one_still_resumes() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start_with_grace(&redis.url(), 30);
    let b = Server::start_with_grace(&redis.url(), 30);
    let mut alice = Peer::join(a.addr, "alice");
    let mut bob = Peer::join(b.addr, "bob");
    for p in [&mut alice, &mut bob] {
        p.wait_who(&["alice", "bob"], WAIT);
    }
    // Her client dies: a keeps her session waiting for a resume.
    alice.stream.shutdown(Shutdown::Both).unwrap();
    thread::sleep(Duration::from_millis(300));
    let mut codes = Vec::new();
    for i in 0..6u8 {
        let mut q = Peer::connect(b.addr);
        let answer = q.hello_with(
            "alice",
            Some(ResumeRequest {
                token: ResumeToken([i.wrapping_mul(37).wrapping_add(1); 16]),
                last_seen: MessageId(0),
                epoch: alice.epoch,
            }),
        );
        codes.push(answer.map_err(|(code, _)| code));
    }
    let taken = Err(RefuseCode::NAME_TAKEN);
    let mut expected = vec![taken; 5];
    expected.push(Err(RefuseCode::TOO_MANY_ATTEMPTS));
    assert_eq!(codes, expected, "b's answers to six wrong tokens");
    // A user of the same address whose session ended (no server holds
    // it) is no guesser: carol's stale token joins her afresh.
    let mut carol = Peer::connect(b.addr);
    let answer = carol.hello_with(
        "carol",
        Some(ResumeRequest {
            token: ResumeToken([200; 16]),
            last_seen: MessageId(0),
            epoch: alice.epoch,
        }),
    );
    assert_eq!(answer, Ok(()), "carol's resume of an ended session");
    assert!(!carol.resumed);
    // Past the limit, her own token still moves her session to b.
    let mut back = resume_on(&mut alice, b.addr);
    bob.say(None, "after the guesses");
    back.wait_chat("after the guesses");
}

/// Alice on a pushes to everyone: bob on a, carol and dave on b accept it;
/// carol is killed with part of it. Alice is told that 2 got it whole: b
/// says how many of its receivers did once it relayed the end (before, a
/// counted b's receivers as they accepted it and told her 3, while one
/// killed on a was not counted).
#[test]
fn a_pusher_is_told_when_a_receiver_on_another_server_did_not_get_the_file_whole() {
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis.url());
    let b = Server::start(&redis.url());
    let bob = SlowPeer::join(a.addr, "bob");
    let carol = SlowPeer::join(b.addr, "carol");
    let dave = SlowPeer::join(b.addr, "dave");
    let mut alice = Peer::join(a.addr, "alice");
    alice.wait_who(&["alice", "bob", "carol", "dave"], WAIT);
    // Carol reads 16 KiB every 8 ms: she is cut with part of it.
    carol.delay_ms.store(8, Ordering::SeqCst);
    let data = Arc::new(file_bytes(4 * PUSH_WINDOW, 21));
    let accepting: Vec<_> = [bob, carol, dave]
        .into_iter()
        .map(|mut rx| {
            thread::spawn(move || {
                rx.accept_offer();
                rx
            })
        })
        .collect();
    let id = imchat_core::TransferId(1);
    alice.send(&ClientMessage::Offer {
        id,
        name: imchat_core::FileName::new("big.bin").unwrap(),
        size: data.len() as u64,
        to: Recipient::Everyone,
    });
    let mut rxs: Vec<SlowPeer> = accepting.into_iter().map(|t| t.join().unwrap()).collect();
    alice.wait(WAIT, "the acceptance by 3", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::PushAccepted { receivers: 3, .. }))
    });
    let sender = send_within_credit(&alice, data.clone());
    let deadline = Instant::now() + WAIT;
    while rxs[1].received.lock().unwrap().len() < PUSH_WINDOW / 4 {
        assert!(Instant::now() < deadline, "no data arrived at carol");
        thread::sleep(Duration::from_millis(5));
    }
    let carol = rxs.remove(1);
    let _ = carol.stream.shutdown(Shutdown::Both);
    drop(carol);
    for rx in &mut rxs {
        rx.wait("the end", |m| matches!(m, ServerMessage::End(_)));
        assert_eq!(checksum(&rx.received.lock().unwrap()), checksum(&data));
    }
    sender.join().unwrap();
    alice.wait(WAIT, "push done", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::PushDone { .. }))
    });
    let done: Vec<u32> = alice
        .got
        .iter()
        .filter_map(|m| match m {
            ServerMessage::PushDone { receivers, .. } => Some(*receivers),
            _ => None,
        })
        .collect();
    assert_eq!(done, [2], "what alice was told got big.bin whole");
    wait_no_push_keys(&redis);
}

/// A pusher whose push waits for a receiver on another server that reads
/// nothing (its credit used up) is read on: its chat line reaches a user
/// of its own server at once, and its `/who` is answered.
#[test]
fn a_pusher_s_chat_goes_on_while_its_push_to_another_server_waits() {
    let Some(redis) = Redis::start() else { return };
    let (a, _b, mut p, _rx, sender) = stuck_push(&redis);
    let mut q = Peer::join(a.addr, "witness");
    p.wait(WAIT, "the witness's join", |g| {
        g.iter()
            .any(|m| matches!(m, ServerMessage::Joined { .. } | ServerMessage::Presence(_)))
    });
    let asked = Instant::now();
    p.say(Some("witness"), "still here");
    p.send(&ClientMessage::Who);
    q.wait_chat("still here");
    let chat = asked.elapsed();
    p.wait(WAIT, "the answer to /who", |g| {
        g.iter().any(|m| matches!(m, ServerMessage::Who { .. }))
    });
    let who = asked.elapsed();
    assert!(
        chat < Duration::from_millis(500) && who < Duration::from_millis(500),
        "the chat line took {chat:?} and the /who {who:?} while the push waited"
    );
    assert!(!p.push.ended.load(Ordering::SeqCst), "the push still waits");
    // The receiver that reads nothing is dropped after a while, which ends
    // the push for the pusher.
    p.wait(Duration::from_secs(30), "the push's end", |g| {
        g.iter().any(|m| {
            matches!(m, ServerMessage::Cancel(c) if c.code == imchat_core::CancelCode::NO_RECEIVER)
        })
    });
    sender.join().unwrap();
}

/// A Redis that deletes keys of its choice when full (a `maxmemory` with
/// an eviction policy) is warned of in the log as the server joins: it may
/// delete the cluster's keys, the registrations among them. Redis's
/// default (`noeviction`) is not.
#[test]
fn a_redis_that_evicts_keys_when_full_is_warned_of_in_the_log() {
    let Some(evicting) =
        Redis::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
    else {
        return;
    };
    let a = Server::start(&evicting.url());
    a.wait_line("its maxmemory-policy is allkeys-lru: once full");
    assert!(
        a.log().contains("set maxmemory-policy noeviction"),
        "{}",
        a.log()
    );
    let Some(refusing) = Redis::start_with(&["--maxmemory", "64mb"]) else {
        return;
    };
    let b = Server::start(&refusing.url());
    b.wait_line("cluster: joined through");
    assert!(!b.log().contains("maxmemory-policy"), "{}", b.log());
}

/// The connections a Redis with the password `password` received so far
/// (`total_connections_received` of its `INFO stats`).
fn connections_received(redis: &Redis, password: &str) -> u64 {
    let url = format!("redis://:{password}@127.0.0.1:{}", redis.port);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received in INFO stats")
}

/// A server given a wrong password logs that Redis refused the connection
/// (Redis was reached: before, it said "unreachable", as for a Redis that
/// is down), and backs off instead of opening a new connection to Redis
/// about twice a second forever (40 in 10 s before).
#[test]
fn a_redis_refusing_the_password_is_said_so_and_backed_off() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let wrong = format!("redis://:wr0ng-pw@127.0.0.1:{}", redis.port);
    let dir = tempfile::tempdir().unwrap();
    let before = connections_received(&redis, "s3cret-pw");
    let mut c = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .arg("127.0.0.1:0")
        .arg("--shared-dir")
        .arg(dir.path())
        .arg("--log-file")
        .arg(dir.path().join("server.log"))
        // A round of the lease loop every half second.
        .args(["--redis", &wrong, "--cluster-lease-secs", LEASE_SECS])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(10));
    let alive = c.try_wait().unwrap().is_none();
    let _ = c.kill();
    let _ = c.wait();
    assert!(alive, "the server ended");
    // Less the one this count itself opens.
    let opened = connections_received(&redis, "s3cret-pw") - before - 1;
    eprintln!("{opened} connections to Redis in 10 s");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        log.contains("refused the connection: Redis refused the password in the URL"),
        "{log}"
    );
    assert!(!log.contains("unreachable"), "{log}");
    assert!(!log.contains("wr0ng-pw"), "{log}");
    // Two users of Redis (the cluster, the accounts and bans), each at
    // 0, 1, 3 and 7 s: 8; a few more for the start.
    assert!(opened <= 12, "{opened} connections in 10 s");
}
