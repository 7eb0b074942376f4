//! Fault and hostile-input tests against the real `imchat-server` binary,
//! on 127.0.0.1 with a port the OS picks. Each test bounds its waits, kills
//! what it started by its handle, and ends by checking that the server still
//! serves a normal client.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{
    CancelCode, ChatKind, ClientMessage, Decoder, Departure, Encode, ErrorCode, FileChunk, FileEnd,
    FileListPart, FileName, FileStart, LeaveReason, Recipient, RefuseCode, RoutedChat,
    ServerMessage, TransferId, Username, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

mod common;

use common::peer::Peer;

use common::{client_bin, server_bin, Proc, Server, TempDir, WAIT};

impl Server {
    /// A normal client still gets in and can chat: the server survived.
    fn assert_serving(&self) {
        Raw::join(self.addr, "probe_a").chat_with(Raw::join(self.addr, "probe_b"));
    }
}

/// A protocol-level client made with imchat-core, for hostile tests.
type Raw = Peer<TcpStream>;

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Peer::new(stream).splitting_presence()
    }

    fn join(addr: SocketAddr, name: &str) -> Raw {
        let mut r = Raw::connect(addr);
        r.send(&ClientMessage::Hello {
            resume: None,
            version: PROTOCOL_VERSION,
            username: Username::new(name).unwrap(),
        });
        r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
        r
    }
}

/// The stock client, run in `dir` with its data folder there too (its
/// saved sessions and input history are not the user's).
fn client_command(dir: &Path) -> Command {
    let mut cmd = Command::new(client_bin());
    cmd.current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("HOME", dir);
    cmd
}

fn refused_with(msgs: &[ServerMessage], code: RefuseCode) -> bool {
    msgs.iter()
        .any(|m| matches!(m, ServerMessage::Refused { code: c, .. } if *c == code))
}

#[test]
fn garbage_and_http_requests_are_closed() {
    let srv = Server::start(&[]);
    let mut http = Raw::connect(srv.addr);
    http.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    http.wait_closed();
    let mut garbage = Raw::connect(srv.addr);
    let _ = garbage.write(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02]);
    garbage.wait_closed();
    srv.assert_serving();
}

#[test]
fn a_huge_length_header_is_refused_from_the_header() {
    let srv = Server::start(&[]);
    for header in [
        [0xff, 0xff, 0xff, 0xff],
        [0x7f, 0xff, 0xff, 0xff],
        [0, 0x10, 0, 1],
    ] {
        let mut r = Raw::connect(srv.addr);
        r.write(&header).unwrap();
        let msgs = r.wait_closed();
        assert!(
            refused_with(&msgs, RefuseCode::HANDSHAKE_REQUIRED),
            "{msgs:?}"
        );
    }
    // After joining, the limit is the full frame limit: one byte more is refused.
    let mut joined = Raw::join(srv.addr, "big_header");
    joined
        .write(&(DEFAULT_MAX_FRAME + 1).to_be_bytes())
        .unwrap();
    let msgs = joined.wait_closed();
    assert!(
        msgs.iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "{msgs:?}"
    );
    srv.assert_serving();
}

#[test]
fn a_megabyte_of_random_bytes_is_survived() {
    let srv = Server::start(&[]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for joined in [false, true] {
        let mut r = if joined {
            Raw::join(srv.addr, "junk")
        } else {
            Raw::connect(srv.addr)
        };
        let _ = r.write(&junk); // the server may close before all is written
        r.wait_closed();
    }
    srv.assert_serving();
}

#[test]
fn a_frame_sent_one_byte_at_a_time_works() {
    let srv = Server::start(&[]);
    let mut r = Raw::connect(srv.addr);
    r.stream.set_nodelay(true).unwrap();
    let hello = ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: Username::new("dribble").unwrap(),
    }
    .to_frame();
    for b in hello {
        r.write(&[b]).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
    srv.assert_serving();
}

#[test]
fn messages_before_the_handshake_are_refused() {
    let srv = Server::start(&[]);
    for m in [
        ClientMessage::Who,
        ClientMessage::Chat {
            client_id: 0,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: "sneaky".into(),
        },
        ClientMessage::ListFiles,
    ] {
        let mut r = Raw::connect(srv.addr);
        r.send(&m);
        let msgs = r.wait_closed();
        assert!(
            refused_with(&msgs, RefuseCode::HANDSHAKE_REQUIRED),
            "{msgs:?}"
        );
    }
    srv.assert_serving();
}

#[test]
fn fifty_connections_claiming_one_name_exactly_one_wins() {
    let srv = Server::start(&[]);
    let addr = srv.addr;
    let handles: Vec<_> = (0..50)
        .map(|_| {
            thread::spawn(move || {
                let mut r = Raw::connect(addr);
                r.send(&ClientMessage::Hello {
                    resume: None,
                    version: PROTOCOL_VERSION,
                    username: Username::new("Highlander").unwrap(),
                });
                let deadline = Instant::now() + WAIT;
                loop {
                    assert!(Instant::now() < deadline);
                    if r.pending
                        .iter()
                        .any(|m| matches!(m, ServerMessage::Welcome { .. }))
                    {
                        return (true, r);
                    }
                    if refused_with(&r.pending, RefuseCode::NAME_TAKEN) {
                        return (false, r);
                    }
                    if !r.pump() && r.pending.is_empty() {
                        panic!("closed without an answer");
                    }
                }
            })
        })
        .collect();
    let results: Vec<(bool, Raw)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|(won, _)| *won).count(), 1);
    drop(results);
    srv.assert_serving();
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_get_everything() {
    let srv = Server::start(&["--max-queue-bytes", "1048576", "--rate-per-sec", "0"]);
    let mut stuck = Raw::join(srv.addr, "stuck");
    let mut watcher = Raw::join(srv.addr, "watcher");
    stuck.wait_for(|m| matches!(m, ServerMessage::Joined { .. }));
    let mut flooder = Raw::join(srv.addr, "flooder");
    // `stuck` reads nothing more. The flooder sends 40 MB in 4 KiB messages,
    // in batches it sends only once the watcher has read the previous one:
    // the watcher is never behind by more than a batch, while everything
    // piles up for `stuck` until the server drops it.
    const BATCH: usize = 100;
    const TOTAL: usize = 10_000;
    let got = std::sync::Arc::new(AtomicUsize::new(0));
    let got2 = got.clone();
    let reader = thread::spawn(move || {
        let mut left = false;
        let deadline = Instant::now() + Duration::from_secs(90);
        while (got2.load(Ordering::SeqCst) < TOTAL || !left) && Instant::now() < deadline {
            if !watcher.pump() {
                break;
            }
            for m in std::mem::take(&mut watcher.pending) {
                match m {
                    ServerMessage::Chat(RoutedChat { .. }) => {
                        got2.fetch_add(1, Ordering::SeqCst);
                    }
                    ServerMessage::Left(Departure { user, reason, .. })
                        if user.as_str() == "stuck" =>
                    {
                        assert_eq!(reason, LeaveReason::EVICTED);
                        left = true;
                    }
                    ServerMessage::Ping(v) => watcher.send(&ClientMessage::Pong(v)),
                    _ => {}
                }
            }
        }
        left
    });
    let text = "x".repeat(4096);
    let deadline = Instant::now() + Duration::from_secs(90);
    for batch in 1..=TOTAL / BATCH {
        for _ in 0..BATCH {
            flooder.send(&ClientMessage::Chat {
                client_id: 0,
                kind: ChatKind::Text,
                to: Recipient::Everyone,
                text: text.clone(),
            });
        }
        while got.load(Ordering::SeqCst) < batch * BATCH {
            assert!(Instant::now() < deadline, "the watcher fell behind");
            flooder.pump(); // keep the flooder's own socket drained
            thread::sleep(Duration::from_millis(1));
        }
    }
    let left = reader.join().unwrap();
    assert_eq!(
        got.load(Ordering::SeqCst),
        TOTAL,
        "the reading client got every message"
    );
    assert!(left, "the client that never read was dropped and announced");
    drop(stuck);
    srv.assert_serving();
}

#[test]
fn a_stopped_client_is_dropped_after_the_keepalive_timeout_and_its_name_freed() {
    let srv = Server::start(&[
        "--keepalive-secs",
        "1",
        "--keepalive-timeout-secs",
        "1",
        "--grace-secs",
        "0",
    ]);
    let mut watcher = Raw::join(srv.addr, "watcher");
    // A real client process, stopped with SIGSTOP so it answers nothing.
    let dir = TempDir::new("stop");
    let mut cmd = client_command(&dir.0);
    cmd.args(["sleeper", "127.0.0.1", &srv.addr.port().to_string()]);
    let mut sleeper = Proc::spawn(cmd);
    sleeper.expect("connected");
    watcher.wait_for(
        |m| matches!(m, ServerMessage::Joined { user, .. } if user.as_str() == "sleeper"),
    );
    let pid = sleeper.pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    // Keep the watcher answering pings while waiting.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "sleeper never dropped");
        watcher.pump();
        for m in std::mem::take(&mut watcher.pending) {
            match m {
                ServerMessage::Ping(v) => watcher.send(&ClientMessage::Pong(v)),
                ServerMessage::Left(Departure { user, reason, .. })
                    if user.as_str() == "sleeper" =>
                {
                    assert_eq!(reason, LeaveReason::TIMEOUT);
                    let again = Raw::join(srv.addr, "sleeper");
                    drop(again);
                    let _ = Command::new("kill").args(["-CONT", &pid]).status();
                    return;
                }
                _ => {}
            }
        }
    }
}

/// A client whose frame takes longer to arrive than the keepalive
/// interval and timeout together (a long text on a slow link) is alive:
/// bytes keep coming. It is not pinged out, and its message is routed.
#[test]
fn a_frame_that_trickles_in_for_longer_than_the_keepalive_is_not_cut_off() {
    // Pinged after 1 s of silence, dropped 2 s after an unanswered ping.
    let srv = Server::start(&["--keepalive-secs", "1", "--keepalive-timeout-secs", "2"]);
    let mut ear = Raw::join(srv.addr, "ear");
    let mut slow = Raw::join(srv.addr, "slow");
    let text = "x".repeat(30_000);
    let frame = ClientMessage::Chat {
        client_id: 1,
        kind: ChatKind::Text,
        to: Recipient::Everyone,
        text: text.clone(),
    }
    .to_frame();
    // Over 3.6 s for the frame: 1,000 bytes every 120 ms or more.
    let started = Instant::now();
    for piece in frame.chunks(1000) {
        slow.write(piece).unwrap();
        thread::sleep(Duration::from_millis(120));
        // The ear answers its pings meanwhile.
        ear.pump();
        let pings: Vec<u64> = ear
            .pending
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Ping(v) => Some(*v),
                _ => None,
            })
            .collect();
        ear.pending.retain(|m| !matches!(m, ServerMessage::Ping(_)));
        for v in pings {
            ear.send(&ClientMessage::Pong(v));
        }
    }
    assert!(started.elapsed() > Duration::from_secs(3));
    let got = ear.wait_for(|m| matches!(m, ServerMessage::Chat(_)));
    let ServerMessage::Chat(chat) = got else {
        unreachable!()
    };
    assert_eq!((chat.from.as_str(), chat.text.len()), ("slow", text.len()));
    slow.pump();
    assert!(
        !slow
            .pending
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "{:?}",
        slow.pending
    );
    srv.assert_serving();
}

#[test]
fn connections_that_never_speak_are_dropped_and_do_not_block_others() {
    let srv = Server::start(&["--handshake-timeout-secs", "2"]);
    let mute: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect_timeout(&srv.addr, WAIT).unwrap())
        .collect();
    // Others are served meanwhile.
    srv.assert_serving();
    // Every silent connection is closed by the handshake deadline.
    let deadline = Instant::now() + WAIT;
    for mut s in mute {
        s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(
            Instant::now() < deadline,
            "a mute connection was not closed"
        );
        let mut d = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
        d.feed(&buf);
        assert!(matches!(
            d.next_message(),
            Ok(Some(ServerMessage::Refused {
                code: RefuseCode::HANDSHAKE_TIMEOUT,
                ..
            }))
        ));
    }
    srv.assert_serving();
}

#[test]
fn one_client_over_the_limit_gets_server_full() {
    // No grace period: a client that goes frees its place at once.
    let srv = Server::start(&["--max-clients", "3", "--grace-secs", "0"]);
    let a = Raw::join(srv.addr, "c1");
    let b = Raw::join(srv.addr, "c2");
    let c = Raw::join(srv.addr, "c3");
    let mut d = Raw::connect(srv.addr);
    d.send(&ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: Username::new("c4").unwrap(),
    });
    assert!(refused_with(&d.wait_closed(), RefuseCode::SERVER_FULL));
    drop((a, b, c));
    // Slots free up when clients leave.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut e = Raw::connect(srv.addr);
        e.send(&ClientMessage::Hello {
            resume: None,
            version: PROTOCOL_VERSION,
            username: Username::new("c5").unwrap(),
        });
        let msgs = e.wait_closed_or_welcome();
        if msgs {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed");
        thread::sleep(Duration::from_millis(50));
    }
}

impl Raw {
    /// True on a Welcome, false when refused and closed.
    fn wait_closed_or_welcome(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            if self
                .pending
                .iter()
                .any(|m| matches!(m, ServerMessage::Welcome { .. }))
            {
                return true;
            }
            if !self.pump() {
                return self
                    .pending
                    .iter()
                    .any(|m| matches!(m, ServerMessage::Welcome { .. }));
            }
            assert!(Instant::now() < deadline);
        }
    }
}

#[test]
fn a_low_file_descriptor_limit_is_survived() {
    let dir = TempDir::new("ulimit");
    let shared = dir.0.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let script = format!(
        "ulimit -n 40 && exec '{}' 0 --bind 127.0.0.1 --shared-dir '{}' --log-file '{}'",
        server_bin().display(),
        shared.display(),
        dir.0.join("server.log").display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(&dir.0);
    let srv = Server::from_proc(Proc::spawn(cmd), dir);
    // More connections than the server has descriptors for.
    let flood: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect_timeout(&srv.addr, WAIT).ok())
        .collect();
    thread::sleep(Duration::from_millis(300));
    drop(flood);
    // Once they are gone, the server accepts and serves again.
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = std::panic::catch_unwind(|| srv.assert_serving()).is_ok();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server stopped serving after EMFILE"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn big_file(dir: &Path, name: &str, mib: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join(name), &data).unwrap();
    data
}

#[test]
fn a_client_killed_during_a_download_leaves_the_server_serving() {
    // No grace period: the lost client is announced at once.
    let srv = Server::start_with(&["--grace-secs", "0"], |shared| {
        big_file(shared, "big.bin", 64);
    });
    let dir = TempDir::new("kill9");
    let mut cmd = client_command(&dir.0);
    cmd.args(["victim", "127.0.0.1", &srv.addr.port().to_string()]);
    let mut victim = Proc::spawn(cmd);
    victim.expect("connected");
    victim.send("/download big.bin");
    victim.expect("downloading big.bin");
    // Joined only now: a watcher that waited unread while the client
    // started (slow on a loaded machine) could miss the server's
    // keepalive and be dropped itself.
    let mut watcher = Raw::join(srv.addr, "watcher");
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    watcher.wait_for(
        |m| matches!(m, ServerMessage::Left(Departure { user, .. }) if user.as_str() == "victim"),
    );
    srv.assert_serving();
}

#[test]
fn the_server_killed_during_a_download_is_reported_and_leaves_no_file() {
    let mut srv = Server::start_with(&[], |shared| {
        big_file(shared, "big.bin", 256);
    });
    let dir = TempDir::new("srvkill");
    let mut cmd = client_command(&dir.0);
    cmd.args(["orphan", "127.0.0.1", &srv.addr.port().to_string()]);
    let mut client = Proc::spawn(cmd);
    client.expect("connected");
    client.send("/download big.bin");
    client.expect("downloading big.bin");
    srv.proc.child.kill().unwrap();
    let _ = srv.proc.child.wait();
    client.expect("stderr: imchat-client:");
    assert_eq!(client.wait_exit(), Some(1));
    assert!(
        !dir.0.join("orphan").join("big.bin").exists(),
        "no file under the final name"
    );
}

/// `pusher` offers push `id` of `name` (`size` bytes) to `to`, `receiver`
/// accepts it, and `pusher` hears it was accepted: the receiver's id for
/// the push.
fn offered_and_accepted(
    pusher: &mut Raw,
    receiver: &mut Raw,
    id: TransferId,
    (name, size, to): (&str, usize, Recipient),
) -> TransferId {
    pusher.send(&ClientMessage::Offer {
        id,
        name: FileName::new(name).unwrap(),
        size: size as u64,
        to,
    });
    let ServerMessage::FileStart(FileStart { id: rid, .. }) =
        receiver.wait_for(|m| matches!(m, ServerMessage::FileStart(_)))
    else {
        unreachable!()
    };
    receiver.send(&ClientMessage::Accept { id: rid });
    pusher.wait_for(|m| matches!(m, ServerMessage::PushAccepted { id: i, .. } if *i == id));
    rid
}

#[test]
fn a_pushed_chunk_with_a_bad_crc_aborts_only_that_transfer() {
    let srv = Server::start(&[]);
    let mut pusher = Raw::join(srv.addr, "pusher");
    let mut receiver = Raw::join(srv.addr, "receiver");
    let id = TransferId(1);
    pusher.send(&ClientMessage::Offer {
        id,
        name: FileName::new("f.bin").unwrap(),
        size: 8,
        to: Recipient::Everyone,
    });
    let offer = receiver.wait_for(|m| matches!(m, ServerMessage::FileStart(FileStart { .. })));
    let ServerMessage::FileStart(FileStart { id: rid, .. }) = offer else {
        unreachable!()
    };
    receiver.send(&ClientMessage::Accept { id: rid });
    pusher.wait_for(|m| matches!(m, ServerMessage::PushAccepted { id: i, .. } if *i == id));
    let mut bad = FileChunk::new(id, 0, vec![7; 8]);
    bad.data[3] ^= 0x20;
    pusher.send(&ClientMessage::Chunk(bad));
    pusher.wait_for(|m| matches!(m, ServerMessage::Cancel(c) if c.id == id));
    receiver.wait_for(|m| matches!(m, ServerMessage::Cancel(_)));
    // Both connections live on.
    pusher.send(&ClientMessage::Chat {
        client_id: 0,
        kind: ChatKind::Text,
        to: Recipient::Everyone,
        text: "after".into(),
    });
    receiver
        .wait_for(|m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text == "after"));
    srv.assert_serving();
}

/// A shared folder removed while the server runs is not shown to users as
/// an empty one: a `ListFiles` is answered with a notice that says the
/// server cannot read it, then the empty list (the client is not left
/// waiting); the server goes on serving.
#[test]
fn a_shared_folder_removed_while_running_is_said_to_be_unreadable() {
    let srv = Server::start_with(&[], |shared| {
        std::fs::write(shared.join("a.txt"), "a").unwrap();
    });
    std::fs::remove_dir_all(srv.shared()).unwrap();
    let mut r = Raw::join(srv.addr, "lister");
    r.send(&ClientMessage::ListFiles);
    let list = r.wait_for(|m| matches!(m, ServerMessage::FileList(_)));
    assert!(
        matches!(&list, ServerMessage::FileList(FileListPart { files, last: true }) if files.is_empty()),
        "{list:?}"
    );
    let said = r.pending.iter().any(|m| {
        matches!(m, ServerMessage::Notice { text, .. } if text.contains("cannot read its shared folder"))
    });
    assert!(said, "not told: {:?}", r.pending);
    srv.assert_serving();
}

/// A server whose shared folder holds its own files (`--shared-dir .`
/// beside its database and log) neither lists nor serves them: the
/// database holds resume tokens and private messages. It says so at
/// start. (Before: all listed, and downloaded by anyone.)
#[test]
fn a_server_never_lists_nor_serves_its_own_files() {
    let dir = TempDir::new("own");
    std::fs::write(dir.0.join("hello.txt"), b"hello").unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args(["0", "--bind", "127.0.0.1", "--shared-dir", "."])
        .args(["--log-file", "server.log", "--history-db", "hist.db"])
        .current_dir(&dir.0);
    let mut srv = Server::from_proc(Proc::spawn(cmd), dir);
    srv.proc.expect(
        "the server's own files in it are left out, never listed nor served: the history database",
    );
    let here = srv.dir.0.clone();
    // A rotated part, and another name for the database.
    std::fs::write(here.join("server.log.1"), b"old log").unwrap();
    std::fs::hard_link(here.join("hist.db"), here.join("copy.db")).unwrap();
    let mut r = Raw::join(srv.addr, "lister");
    assert_eq!(shared_names(&mut r), ["hello.txt"]);
    let own = [
        "hist.db",
        "hist.db-wal",
        "hist.db-shm",
        "hist.db.lock",
        "server.log",
        "server.log.lock",
        "server.log.1",
        "copy.db",
    ];
    for (n, name) in (1u32..).zip(own) {
        assert!(
            here.join(name).exists(),
            "{name} is not there to be refused"
        );
        let answer = download_answer(&mut r, TransferId(n), name);
        assert!(
            matches!(&answer, ServerMessage::Cancel(c) if c.code == CancelCode::NO_SUCH_FILE),
            "{name}: {answer:?}"
        );
    }
    srv.assert_serving();
}

/// The names in the shared folder's list, as `r` is sent it.
fn shared_names(r: &mut Raw) -> Vec<String> {
    r.send(&ClientMessage::ListFiles);
    let list =
        r.wait_for(|m| matches!(m, ServerMessage::FileList(FileListPart { last: true, .. })));
    let ServerMessage::FileList(FileListPart { files, .. }) = list else {
        unreachable!()
    };
    files.iter().map(|f| f.name.to_string()).collect()
}

/// `r` asks to download `name` as `id`: the server's first answer, its
/// `FileStart` or its `Cancel`.
fn download_answer(r: &mut Raw, id: TransferId, name: &str) -> ServerMessage {
    r.send(&ClientMessage::Download {
        id,
        name: FileName::new(name).unwrap(),
        offset: 0,
    });
    r.wait_for(|m| {
        matches!(m, ServerMessage::FileStart(s) if s.id == id)
            || matches!(m, ServerMessage::Cancel(c) if c.id == id)
    })
}

/// The server's password file in the folder it shares is its own too:
/// never listed nor served (it would give the password to anyone who got
/// in once).
#[test]
fn a_server_never_lists_nor_serves_its_password_file() {
    let dir = TempDir::new("own-secret");
    std::fs::write(dir.0.join("hello.txt"), b"hello").unwrap();
    let pw = dir.0.join("pw.txt");
    std::fs::write(&pw, b"letmein\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args(["0", "--bind", "127.0.0.1", "--shared-dir", "."])
        .args(["--log-file", "server.log", "--password-file", "pw.txt"])
        .current_dir(&dir.0);
    let mut srv = Server::from_proc(Proc::spawn(cmd), dir);
    srv.proc.expect("its password file or TLS key");
    let mut r = Raw::connect(srv.addr);
    r.send(&ClientMessage::Auth {
        server: imchat_core::Secret::new("letmein"),
        account: None,
    });
    r.send(&ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: Username::new("lister").unwrap(),
    });
    r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
    assert_eq!(shared_names(&mut r), ["hello.txt"]);
    let answer = download_answer(&mut r, TransferId(1), "pw.txt");
    assert!(
        matches!(&answer, ServerMessage::Cancel(c) if c.code == CancelCode::NO_SUCH_FILE),
        "{answer:?}"
    );
    // (`assert_serving` joins without the password.)
    drop(srv);
}

#[test]
fn a_shared_file_truncated_during_a_download_fails_that_download() {
    let srv = Server::start_with(&[], |shared| {
        big_file(shared, "shrinking.bin", 64);
    });
    let mut r = Raw::join(srv.addr, "reader");
    r.send(&ClientMessage::Download {
        id: TransferId(1),
        name: FileName::new("shrinking.bin").unwrap(),
        offset: 0,
    });
    r.wait_for(|m| matches!(m, ServerMessage::FileStart(FileStart { .. })));
    // The server is blocked by our not reading; cut the file short meanwhile.
    std::fs::OpenOptions::new()
        .write(true)
        .open(srv.shared().join("shrinking.bin"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut incoming = imchat_core::Incoming::new(TransferId(1), 64 << 20);
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        assert!(
            Instant::now() < deadline,
            "the download neither failed nor ended"
        );
        if !r.pump() {
            break "closed";
        }
        let mut done = None;
        let mut acks = Vec::new();
        for m in r.pending.drain(..) {
            match m {
                ServerMessage::Chunk(c) => match incoming.accept(&c) {
                    // Acknowledged as stored, as a client must (flow control).
                    Ok(()) => acks.push(ClientMessage::Ack {
                        id: c.id,
                        offset: c.offset + c.data.len() as u64,
                    }),
                    Err(_) => done = Some("bad chunk"),
                },
                ServerMessage::End(e) => {
                    assert!(
                        incoming.finish(&e).is_err(),
                        "a truncated file must not verify"
                    );
                    done = Some("end failed check");
                }
                ServerMessage::Cancel(_) => done = Some("cancelled"),
                _ => {}
            }
        }
        for ack in &acks {
            r.send(ack);
        }
        if let Some(d) = done {
            break d;
        }
    };
    assert_ne!(
        outcome, "closed",
        "the connection must survive a failed download"
    );
    srv.assert_serving();
}

/// A shared file written to in place while it downloads (its size the
/// same) fails that download with `IO`: the bytes sent may mix the two
/// versions, and an end with their checksum would vouch for a file that
/// never existed.
#[test]
fn a_shared_file_rewritten_during_a_download_fails_that_download() {
    let srv = Server::start_with(&[], |shared| {
        big_file(shared, "edited.bin", 64);
    });
    let mut r = Raw::join(srv.addr, "reader");
    r.send(&ClientMessage::Download {
        id: TransferId(1),
        name: FileName::new("edited.bin").unwrap(),
        offset: 0,
    });
    r.wait_for(|m| matches!(m, ServerMessage::FileStart(FileStart { .. })));
    // The server waits for our acks; edit the middle of the file meanwhile
    // (later than the clock's tick after the open, so the time moves).
    thread::sleep(Duration::from_millis(50));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(srv.shared().join("edited.bin"))
        .unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(32 << 20)).unwrap();
    f.write_all(&[b'C'; 100]).unwrap();
    drop(f);
    let mut incoming = imchat_core::Incoming::new(TransferId(1), 64 << 20);
    let deadline = Instant::now() + WAIT;
    let cancel = loop {
        assert!(
            Instant::now() < deadline,
            "the download neither failed nor ended"
        );
        assert!(r.pump(), "the connection must survive a failed download");
        let mut cancel = None;
        let mut acks = Vec::new();
        for m in r.pending.drain(..) {
            match m {
                ServerMessage::Chunk(c) => {
                    incoming.accept(&c).unwrap();
                    acks.push(ClientMessage::Ack {
                        id: c.id,
                        offset: c.offset + c.data.len() as u64,
                    });
                }
                ServerMessage::End(_) => panic!("a rewritten file was vouched for"),
                ServerMessage::Cancel(c) => cancel = Some(c),
                _ => {}
            }
        }
        for ack in &acks {
            r.send(ack);
        }
        if let Some(c) = cancel {
            break c;
        }
    };
    assert_eq!(cancel.code, CancelCode::IO, "{cancel:?}");
    assert!(cancel.reason.contains("written to"), "{cancel:?}");
    srv.assert_serving();
}

#[test]
fn a_pushed_file_named_to_escape_is_refused_and_the_pusher_dropped() {
    let srv = Server::start(&[]);
    let mut pusher = Raw::join(srv.addr, "sly");
    let mut victim = Raw::join(srv.addr, "victim");
    // An Offer frame built by hand, since FileName cannot hold this name.
    let name = b"../../.bashrc";
    let mut body = vec![imchat_core::types::OFFER];
    body.extend_from_slice(&1u32.to_be_bytes());
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.extend_from_slice(&5u64.to_be_bytes());
    body.push(0);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    pusher.write(&frame).unwrap();
    let msgs = pusher.wait_closed();
    assert!(msgs
        .iter()
        .all(|m| !matches!(m, ServerMessage::PushDone { .. })));
    victim.wait_for(
        |m| matches!(m, ServerMessage::Left(Departure { user, .. }) if user.as_str() == "sly"),
    );
    assert!(victim
        .pending
        .iter()
        .all(|m| !matches!(m, ServerMessage::FileStart(FileStart { .. }))));
    srv.assert_serving();
}

/// A server with a small rate (a burst of 5, 20 a second, cut off after
/// 1 s of flooding), a watcher and a flooder joined; the watcher has seen
/// the flooder join.
fn flood_setup() -> (Server, Raw, Raw) {
    let srv = Server::start(&[
        "--rate-burst",
        "5",
        "--rate-per-sec",
        "20",
        "--flood-timeout-secs",
        "1",
    ]);
    let mut watcher = Raw::join(srv.addr, "watcher");
    let flooder = Raw::join(srv.addr, "flooder");
    watcher.wait_for(|m| matches!(m, ServerMessage::Joined { .. }));
    (srv, watcher, flooder)
}

#[test]
fn a_flood_is_slowed_then_cut_off() {
    let (srv, mut watcher, mut flooder) = flood_setup();
    let start = Instant::now();
    for i in 0..200 {
        flooder.send(&ClientMessage::Chat {
            client_id: 0,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: format!("m{i}"),
        });
    }
    // 20 messages/s after a burst of 5: the first 20 take 0.75 s.
    for i in 0..20 {
        let want = format!("m{i}");
        watcher.wait_for(
            |m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if *text == want),
        );
    }
    assert!(start.elapsed() >= Duration::from_millis(700), "not slowed");
    let msgs = flooder.wait_closed();
    assert!(
        msgs.iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "{msgs:?}"
    );
    watcher.wait_for(|m| matches!(m, ServerMessage::Left(Departure { user, reason, .. }) if user.as_str() == "flooder" && *reason == LeaveReason::KICKED));
    srv.assert_serving();
}

/// Frames that do no work (a second Hello, a Pong nobody asked for, an
/// Ack, End or Chunk for a transfer that is not the sender's) cost rate
/// budget like requests: a flood of them is slowed, then cut off.
#[test]
fn a_flood_of_frames_that_do_no_work_is_slowed_then_cut_off() {
    let (srv, mut watcher, mut flooder) = flood_setup();
    let stray = TransferId(9);
    let start = Instant::now();
    for _ in 0..100 {
        flooder.send(&ClientMessage::Hello {
            resume: None,
            version: PROTOCOL_VERSION,
            username: Username::new("again").unwrap(),
        });
        flooder.send(&ClientMessage::Pong(5));
        flooder.send(&ClientMessage::Ack {
            id: stray,
            offset: 5,
        });
        flooder.send(&ClientMessage::End(FileEnd { id: stray, crc: 0 }));
        flooder.send(&ClientMessage::Chunk(FileChunk::new(
            stray,
            0,
            vec![7; 100],
        )));
    }
    let msgs = flooder.wait_closed();
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "not slowed: closed after {:?}",
        start.elapsed()
    );
    assert!(
        msgs.iter().any(|m| matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::FLOODING,
                ..
            }
        )),
        "{msgs:?}"
    );
    watcher.wait_for(|m| matches!(m, ServerMessage::Left(Departure { user, reason, .. }) if user.as_str() == "flooder" && *reason == LeaveReason::KICKED));
    srv.assert_serving();
}

/// A flood split over three connections of one address, each read within
/// its own rate (their address's share, twice one client's rate, is what
/// slows them), is cut off as one connection's flood is; a user of the
/// same address who sends now and then is slowed with them and stays.
#[test]
fn a_flood_from_several_connections_of_one_address_is_cut_off() {
    let (srv, mut honest, flooder) = flood_setup();
    let mut flooders = vec![flooder];
    for i in 1..3 {
        flooders.push(Raw::join(srv.addr, &format!("flooder{i}")));
    }
    let start = Instant::now();
    let cut: Vec<_> = flooders
        .into_iter()
        .map(|f| {
            thread::spawn(move || {
                // Chat as fast as the socket takes it, from a thread of its
                // own, while the connection's messages are read here.
                let writer = f.stream.try_clone().unwrap();
                let frame = ClientMessage::Chat {
                    client_id: 0,
                    kind: ChatKind::Text,
                    to: Recipient::Everyone,
                    text: "s".repeat(100),
                }
                .to_frame();
                let write = thread::spawn(move || {
                    for _ in 0..100_000 {
                        if (&writer).write_all(&frame).is_err() {
                            break;
                        }
                    }
                });
                let (msgs, took) = f.waiting(Duration::from_secs(15)).wait_closed_timed();
                write.join().unwrap();
                (msgs, took)
            })
        })
        .collect();
    // The honest user sends a line every 300 ms meanwhile, each answered.
    for id in 1..=15 {
        honest.send(&ClientMessage::Chat {
            client_id: id,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: format!("line {id}"),
        });
        honest.wait_for(|m| matches!(m, ServerMessage::Ack { client_id, .. } if *client_id == id));
        honest.pending.clear();
        thread::sleep(Duration::from_millis(300));
    }
    for handle in cut {
        let (msgs, took) = handle.join().unwrap();
        assert!(
            msgs.iter().any(|m| matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::FLOODING,
                    ..
                }
            )),
            "closed after {took:?} without FLOODING"
        );
    }
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "cut off before the flood timeout"
    );
    // Still there: its next line is answered.
    honest.send(&ClientMessage::Chat {
        client_id: 99,
        kind: ChatKind::Text,
        to: Recipient::Everyone,
        text: "still here".into(),
    });
    honest.wait_for(|m| matches!(m, ServerMessage::Ack { client_id: 99, .. }));
    srv.assert_serving();
}

/// A small tmpfs mounted on a folder, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts `size` (e.g. `1m`) of tmpfs on `dir`; `None` where that is
    /// not allowed (not root, no mount namespace rights).
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_client_fails_the_download_cleanly() {
    // A 1 MiB file system for a 4 MiB download. (A `.part` file that is a
    // link to /dev/full would do without mounting, but the client rightly
    // refuses to write through a link.)
    let srv = Server::start_with(&[], |shared| {
        big_file(shared, "big.bin", 4);
    });
    let dir = TempDir::new("full");
    let dl = dir.0.join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let Some(_disk) = SmallDisk::mount(&dl, "1m") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let mut cmd = client_command(&dir.0);
    cmd.args([
        "filler",
        "127.0.0.1",
        &srv.addr.port().to_string(),
        "--download-dir",
    ])
    .arg(&dl);
    let mut client = Proc::spawn(cmd);
    client.expect("connected");
    client.send("/download big.bin");
    client.expect("transfer of big.bin failed");
    assert!(!dl.join("big.bin").exists());
    assert!(
        !dl.join("big.bin.part").exists(),
        "the partial file is removed"
    );
    // The client and the server carry on.
    client.send("/who");
    client.expect("online");
    client.send("/quit");
    // The download it started failed: exit code 1.
    assert_eq!(client.wait_exit(), Some(1));
    srv.assert_serving();
}

#[test]
fn the_server_shuts_down_cleanly_on_sigterm() {
    let mut srv = Server::start(&[]);
    let mut a = Raw::join(srv.addr, "ann");
    let pid = srv.proc.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let msgs = a.wait_closed();
    assert!(
        msgs.iter()
            .any(|m| matches!(m, ServerMessage::Shutdown { .. })),
        "{msgs:?}"
    );
    assert_eq!(srv.proc.wait_exit(), Some(0));
    let _ = a.stream.shutdown(Shutdown::Both);
}

/// The names of a process's threads, from /proc (Linux).
#[cfg(target_os = "linux")]
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[cfg(target_os = "linux")]
#[test]
fn a_quiet_room_costs_no_thread_per_client_and_sees_every_join_and_message() {
    const N: usize = 40;
    let srv = Server::start(&[]);
    let pid = srv.proc.child.id();
    let mut clients: Vec<Raw> = (0..N)
        .map(|k| Raw::join(srv.addr, &format!("m{k}")))
        .collect();
    // Everyone hears of everyone who joined after them (in order), and
    // of a message from the last one.
    let last = clients.len() - 1;
    clients[last].send(&ClientMessage::Chat {
        client_id: 0,
        kind: ChatKind::Text,
        to: Recipient::Everyone,
        text: "hi all".into(),
    });
    for (k, c) in clients.iter_mut().enumerate().take(last) {
        for j in k + 1..N {
            let want = format!("m{j}");
            let m = c.wait_for(|m| matches!(m, ServerMessage::Joined { .. }));
            assert!(
                matches!(&m, ServerMessage::Joined { user, .. } if user.as_str() == want),
                "m{k} expected {want} to join next, got {m:?}"
            );
        }
        c.wait_for(
            |m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text == "hi all"),
        );
    }
    // Once quiet, the clients hold no thread: their readers hand them to
    // the idle poller and end.
    let deadline = Instant::now() + WAIT;
    loop {
        let names = thread_names(pid);
        let per_client = names.iter().filter(|n| n.starts_with("read-")).count();
        if per_client == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{N} quiet clients still hold {per_client} reader threads: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Parked clients are read again as soon as they speak, and written to.
    for k in [0, N / 2, last] {
        let text = format!("back from m{k}");
        clients[k].send(&ClientMessage::Chat {
            client_id: 0,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: text.clone(),
        });
        for (j, c) in clients.iter_mut().enumerate() {
            if j != k {
                c.wait_for(
                    |m| matches!(m, ServerMessage::Chat(RoutedChat { text: t, .. }) if *t == text),
                );
            }
        }
    }
    drop(clients);
    srv.assert_serving();
}

#[test]
fn a_download_stops_at_the_window_until_acknowledged_and_chat_passes_it() {
    let srv = Server::start_with(&[], |shared| {
        big_file(shared, "big.bin", 8);
    });
    let mut r = Raw::join(srv.addr, "slowdisk");
    let mut talker = Raw::join(srv.addr, "talker");
    r.send(&ClientMessage::Download {
        id: TransferId(1),
        name: FileName::new("big.bin").unwrap(),
        offset: 0,
    });
    let received = |r: &mut Raw| -> u64 {
        r.pending
            .iter()
            .map(|m| match m {
                ServerMessage::Chunk(c) => c.data.len() as u64,
                _ => 0,
            })
            .sum()
    };
    // Without acknowledgements, one window and not a byte more.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        r.pump();
    }
    assert_eq!(received(&mut r), imchat_core::DOWNLOAD_WINDOW);
    // Chat is not stuck behind the file.
    talker.send(&ClientMessage::Chat {
        client_id: 0,
        kind: ChatKind::Text,
        to: Recipient::Everyone,
        text: "still here".into(),
    });
    r.wait_for(
        |m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text == "still here"),
    );
    // Acknowledging everything lets the rest through, to a verified end.
    let mut incoming = imchat_core::Incoming::new(TransferId(1), 8 << 20);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the download did not finish");
        let mut end = None;
        for m in std::mem::take(&mut r.pending) {
            match m {
                ServerMessage::Chunk(c) => {
                    incoming.accept(&c).unwrap();
                    let offset = c.offset + c.data.len() as u64;
                    r.send(&ClientMessage::Ack { id: c.id, offset });
                }
                ServerMessage::End(e) => end = Some(e),
                _ => {}
            }
        }
        if let Some(e) = end {
            incoming.finish(&e).unwrap();
            break;
        }
        assert!(r.pump(), "connection closed");
    }
    srv.assert_serving();
}

/// A client that repeats an ack beyond what was sent is warned of once
/// in the log, not once per ack: it cannot flood the console and rotate
/// the log (and the record of its own connection) away.
#[test]
fn acks_beyond_what_was_sent_are_logged_once_per_download() {
    let srv = Server::start_with(&[], |shared| {
        big_file(shared, "big.bin", 3);
    });
    let mut r = Raw::join(srv.addr, "mallet");
    r.send(&ClientMessage::Download {
        id: TransferId(1),
        name: FileName::new("big.bin").unwrap(),
        offset: 0,
    });
    r.wait_for(|m| matches!(m, ServerMessage::Chunk(_)));
    let over = ClientMessage::Ack {
        id: TransferId(1),
        offset: (3 << 20) - 1,
    };
    for _ in 0..2000 {
        r.send(&over);
    }
    let log = srv.dir.0.join("server.log");
    let warned = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("ack of byte")
            .count()
    };
    let deadline = Instant::now() + WAIT;
    while warned() == 0 {
        assert!(Instant::now() < deadline, "no warning logged");
        thread::sleep(Duration::from_millis(20));
    }
    // The log is written in batches: give the rest time to show.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(warned(), 1);
    // The one line says whose download it is: "download #1" alone names
    // nobody, every client's first download being #1.
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("ack of byte")).unwrap();
    assert!(
        line.contains("'big.bin' by mallet [127.0.0.1:"),
        "the warning does not name the client and the file: {line}"
    );
    srv.assert_serving();
}

/// A client connecting and hanging up in a loop (or resuming its session
/// in a loop) cannot flood the server's output and log: the connections
/// of one address are printed one by one up to a share a minute, and the
/// rest are counted, said in one line. Joins are still all said.
#[test]
fn connections_in_a_loop_from_one_address_are_counted_not_printed_one_by_one() {
    let mut srv = Server::start(&[]);
    for _ in 0..300 {
        let s = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
        drop(s);
    }
    let said = srv
        .proc
        .expect("connections from 127.0.0.1: more than 64 within 60 s");
    assert!(said.contains("counted, not logged one by one"), "{said}");
    let _probe = Raw::join(srv.addr, "probe");
    // Every line about the connections before it is out by then.
    srv.proc.expect("probe joined from 127.0.0.1:");
    let printed = srv
        .proc
        .seen
        .iter()
        .filter(|l| l.starts_with("connection from "))
        .count();
    assert_eq!(printed, 64, "{:?}", srv.proc.seen);
    srv.assert_serving();
}

/// Writer threads of a process (named `write-<id>`), from /proc (Linux).
#[cfg(target_os = "linux")]
fn writer_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("write-"))
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn a_writer_thread_ends_once_its_slow_reader_caught_up_and_comes_back_when_needed() {
    let srv = Server::start(&["--rate-per-sec", "0", "--max-queue-bytes", "67108864"]);
    let pid = srv.proc.child.id();
    let mut slow = Raw::join(srv.addr, "slow");
    let mut talker = Raw::join(srv.addr, "talker");
    slow.wait_for(|m| matches!(m, ServerMessage::Joined { .. }));
    let text = "y".repeat(4096);
    for round in 0..2 {
        // `slow` does not read while chat piles up for it, until its socket
        // is full and a writer thread takes over what is left. (How much
        // that takes depends on how far the kernel has grown its buffers:
        // after round 0, several MB.)
        const BATCH: usize = 100;
        const MOST: usize = 8000; // 32 MB
        let mut sent = 0;
        let deadline = Instant::now() + WAIT;
        while writer_threads(pid) == 0 {
            assert!(
                Instant::now() < deadline && sent < MOST,
                "round {round}: no writer thread after {sent} messages"
            );
            for _ in 0..BATCH {
                talker.send(&ClientMessage::Chat {
                    client_id: 0,
                    kind: ChatKind::Text,
                    to: Recipient::Everyone,
                    text: text.clone(),
                });
            }
            sent += BATCH;
            talker.pump();
            thread::sleep(Duration::from_millis(5));
        }
        // It reads everything, in order; then the writer has nothing left
        // to do, and its thread ends while the connection goes on.
        for _ in 0..sent {
            slow.wait_for(|m| matches!(m, ServerMessage::Chat(RoutedChat { .. })));
        }
        let deadline = Instant::now() + WAIT;
        while writer_threads(pid) > 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the writer stayed"
            );
            thread::sleep(Duration::from_millis(20));
        }
        talker.send(&ClientMessage::Chat {
            client_id: 0,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: format!("after {round}"),
        });
        let want = format!("after {round}");
        slow.wait_for(
            |m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if *text == want),
        );
    }
    srv.assert_serving();
}

#[test]
fn look_alike_names_are_refused_while_the_real_one_is_online() {
    let srv = Server::start(&[]);
    let _alice = Raw::join(srv.addr, "alice");
    let _bob = Raw::join(srv.addr, "bob");
    let _opx = Raw::join(srv.addr, "opx");
    // Cyrillic а, fullwidth, mathematical bold, circled, a Greek ο, a
    // Turkish dotted capital I (lowercased: i and a dot above), and the
    // digit 0 for the letter o.
    hellos_refused(
        &srv,
        &[
            "аlice",
            "ａｌｉｃｅ",
            "𝐚𝐥𝐢𝐜𝐞",
            "ⓐlice",
            "bοb",
            "ALİCE",
            "0px",
            "b0b",
        ],
        RefuseCode::NAME_TAKEN,
    );
    // A name that only looks different stays free for its own user.
    let _alicia = Raw::join(srv.addr, "alicia");
    srv.assert_serving();
}

/// A name decorated with marks drawn around or across its letters (a
/// keycap or circle, a stroke through each letter, a Cyrillic numeral
/// sign) reads as the plain name: refused while it is online, and free
/// once it left.
#[test]
fn names_under_enclosing_or_overlay_marks_are_refused_beside_the_plain_name() {
    let srv = Server::start(&[]);
    let mut bob = Raw::join(srv.addr, "bob");
    let decorated = [
        "bob\u{20dd}",
        "bob\u{0336}",
        "b\u{0336}o\u{0336}b\u{0336}",
        "bob\u{0489}",
    ];
    hellos_refused(&srv, &decorated, RefuseCode::NAME_TAKEN);
    // A mark that is part of a letter is another name.
    let _umlaut = Raw::join(srv.addr, "bo\u{308}b");
    bob.send(&ClientMessage::Quit {
        reason: String::new(),
    });
    bob.wait_closed();
    let _struck = Raw::join(srv.addr, "b\u{0336}o\u{0336}b\u{0336}");
    srv.assert_serving();
}

/// Each name's `Hello` is refused with `code` (and the connection closed).
#[track_caller]
fn hellos_refused(srv: &Server, names: &[&str], code: RefuseCode) {
    for name in names {
        let mut r = Raw::connect(srv.addr);
        r.send(&ClientMessage::Hello {
            resume: None,
            version: PROTOCOL_VERSION,
            username: Username::new(*name).unwrap(),
        });
        let got = r.wait_closed();
        assert!(refused_with(&got, code), "{name:?}: {got:?}");
    }
}

#[test]
fn names_of_combining_marks_alone_or_stacked_are_refused() {
    let srv = Server::start(&[]);
    let stacked = format!("a{}", "\u{345}".repeat(6));
    hellos_refused(
        &srv,
        &["\u{345}", "\u{345}\u{345}", "\u{93f}", stacked.as_str()],
        RefuseCode::INVALID_NAME,
    );
    // A mark after its letter is fine.
    let _ki = Raw::join(srv.addr, "क\u{93f}");
    srv.assert_serving();
}

#[test]
fn look_alikes_of_reserved_names_are_refused() {
    let srv = Server::start(&[]);
    // Full-width, Cyrillic `а`, long s, dotless i, Greek capitals.
    hellos_refused(
        &srv,
        &[
            "ＡＤＭＩＮ",
            "аdmin",
            "ſerver",
            "admın",
            "ΑLL",
            "ѕystem",
            "aII",
            "admi\u{307}n",
        ],
        RefuseCode::INVALID_NAME,
    );
    // Names that merely contain a reserved word are anyone's.
    let _admins = Raw::join(srv.addr, "admins");
    let _sysadmin = Raw::join(srv.addr, "sysadmin");
    srv.assert_serving();
}

/// Sends `n` chats of `len` bytes from `from`, and waits until `to` has them all.
fn chat_burst(from: &mut Raw, to: &mut Raw, n: usize, len: usize) {
    for i in 0..n {
        from.send(&ClientMessage::Chat {
            client_id: 0,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: format!("{i:05}{}", "x".repeat(len - 5)),
        });
    }
    let last = format!("{:05}", n - 1);
    to.wait_for(
        |m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text.starts_with(&last)),
    );
}

#[test]
fn the_log_is_capped_and_rotated_and_holds_texts_only_when_asked() {
    let srv = Server::start(&["--log-max-bytes", "64K", "--log-keep", "2", "--log-text"]);
    let mut a = Raw::join(srv.addr, "talker");
    let mut b = Raw::join(srv.addr, "reader");
    // 100 messages of 60 kB: 6 MB of text the log would otherwise hold.
    chat_burst(&mut a, &mut b, 100, 60_000);
    let mut total = 0;
    for name in ["server.log", "server.log.1", "server.log.2"] {
        let len = std::fs::metadata(srv.dir.0.join(name)).map_or(0, |m| m.len());
        assert!(len <= 64 * 1024 + 70_000, "{name} is {len} bytes");
        total += len;
    }
    assert!(!srv.dir.0.join("server.log.3").exists());
    assert!(total > 64 * 1024, "the texts were logged: {total} bytes");

    // Without --log-text, the log says who wrote, never what.
    let quiet = Server::start(&[]);
    let mut a = Raw::join(quiet.addr, "talker");
    let mut b = Raw::join(quiet.addr, "reader");
    chat_burst(&mut a, &mut b, 3, 100);
    // The log is written by its own thread: wait for the third message's line.
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log = std::fs::read_to_string(quiet.dir.0.join("server.log")).unwrap();
        if log.matches("routed message").count() >= 3 || Instant::now() > deadline {
            break log;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(log.matches("routed message").count(), 3, "{log}");
    assert!(!log.contains("xxxxxxxxxx"), "a text was logged: {log}");
}

/// Starts a second `imchat-server` in `dir` with `args`, which must fail:
/// its error line (from stderr) and its exit code.
fn failed_start(dir: &Path, args: &[&OsStr]) -> (String, Option<i32>) {
    let mut cmd = Command::new(server_bin());
    cmd.args(args).current_dir(dir);
    let mut p = Proc::spawn(cmd);
    let line = p.expect("imchat-server: ");
    (line, p.wait_exit())
}

#[test]
fn a_start_that_fails_leaves_the_log_of_a_running_server_alone() {
    let srv = Server::start(&[]);
    let log = srv.dir.0.join("server.log");
    let deadline = Instant::now() + WAIT;
    let before = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("listening on") {
            break text;
        }
        assert!(Instant::now() < deadline, "nothing logged: {text:?}");
        thread::sleep(Duration::from_millis(20));
    };
    // An older part, as a rotation of the running server leaves it.
    let older = srv.dir.0.join("server.log.1");
    std::fs::write(&older, "older part\n").unwrap();
    let port = srv.addr.to_string();
    let missing = srv.dir.0.join("nothing-here");
    for (args, why) in [
        // Its port, in use.
        (
            [port.as_ref(), "--shared-dir".as_ref(), "shared".as_ref()],
            "address already in use",
        ),
        // A shared folder that does not exist.
        (
            [
                "127.0.0.1:0".as_ref(),
                "--shared-dir".as_ref(),
                missing.as_os_str(),
            ],
            "does not exist",
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--log-file".as_ref(), log.as_os_str()]);
        let (line, code) = failed_start(&srv.dir.0, &args);
        assert!(line.contains(why), "{line}");
        assert_eq!(code, Some(1), "{line}");
        let after = std::fs::read_to_string(&log).unwrap();
        assert!(
            after.starts_with(&before),
            "{args:?} emptied the running server's log: {} bytes left of {}: {after:?}",
            after.len(),
            before.len()
        );
        assert!(
            !after.contains(why),
            "the failed start logged there: {after}"
        );
        assert_eq!(std::fs::read_to_string(&older).unwrap(), "older part\n");
    }
    srv.assert_serving();
}

#[test]
fn a_second_server_on_a_history_file_in_use_refuses_to_start() {
    let srv = Server::start(&["--history-db", "history.db"]);
    let db = srv.dir.0.join("history.db");
    // The same file, named as the first server named it and by its full path.
    for name in [OsStr::new("history.db"), db.as_os_str()] {
        let args = [
            "127.0.0.1:0".as_ref(),
            "--shared-dir".as_ref(),
            "shared".as_ref(),
            "--log-file".as_ref(),
            "second.log".as_ref(),
            "--history-db".as_ref(),
            name,
        ];
        let (line, code) = failed_start(&srv.dir.0, &args);
        assert_eq!(
            line,
            format!(
                "stderr: imchat-server: the history database '{}' is in use by another imchat-server; stop that one, or give this one another --history-db path",
                Path::new(name).display()
            )
        );
        assert_eq!(code, Some(1));
    }
    // The first one goes on, its history with it.
    srv.assert_serving();
}

#[test]
fn a_legal_burst_of_long_messages_drops_no_reader() {
    let srv = Server::start(&[]);
    let mut talker = Raw::join(srv.addr, "talker");
    // Ten readers, each on its own thread, reading as fast as they can.
    let readers: Vec<_> = (0..10)
        .map(|i| {
            let mut r = Raw::join(srv.addr, &format!("reader{i}"));
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut got = 0;
                while got < 100 && Instant::now() < deadline {
                    if !r.pump() {
                        break;
                    }
                    for m in r.pending.drain(..) {
                        match m {
                            ServerMessage::Chat(RoutedChat { .. }) => got += 1,
                            ServerMessage::Left(Departure { user, .. })
                                if user.as_str().starts_with("reader") =>
                            {
                                panic!("{user} was dropped")
                            }
                            _ => {}
                        }
                    }
                }
                (got, r)
            })
        })
        .collect();
    // 100 messages of 65,000 bytes: within the burst of 100 and the text
    // limit, 6.2 MB in all, more than a reader's 4 MiB queue.
    for i in 0..100 {
        talker.send(&ClientMessage::Chat {
            client_id: 0,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: format!("{i:03}{}", "k".repeat(64_997)),
        });
    }
    let mut kept = Vec::new();
    for h in readers {
        let (got, r) = h.join().unwrap();
        assert_eq!(got, 100, "a reader missed messages");
        kept.push(r);
    }
    // The talker was slowed, not cut off.
    talker.send(&ClientMessage::Who);
    talker.wait_for(|m| matches!(m, ServerMessage::Who { users } if users.len() == 11));
}

#[test]
fn a_flood_of_file_list_requests_is_slowed() {
    let srv = Server::start_with(&[], |shared| {
        for i in 0..5000 {
            std::fs::write(shared.join(format!("f{i:04}.txt")), b"x").unwrap();
        }
    });
    let mut flooder = Raw::join(srv.addr, "flooder");
    for _ in 0..300 {
        flooder.send(&ClientMessage::ListFiles);
    }
    let start = Instant::now();
    let mut lists = 0;
    while start.elapsed() < Duration::from_secs(2) {
        flooder.pump();
        lists += flooder
            .pending
            .drain(..)
            .filter(|m| matches!(m, ServerMessage::FileList(FileListPart { last: true, .. })))
            .count();
    }
    // Each list of 5,000 files costs 51 of the 100-message burst, then the
    // budget refills at 50 a second: a handful of lists in 2 s, not 300.
    assert!((2..=6).contains(&lists), "{lists} lists in 2 s");
    srv.assert_serving();
}

/// Connects, says Hello as `name`, and returns what the server sent before
/// it closed the connection and how long that took.
fn refused_in(addr: SocketAddr, name: &str) -> (Vec<ServerMessage>, Duration) {
    let start = Instant::now();
    let mut r = Raw::connect(addr);
    r.send(&ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: Username::new(name).unwrap(),
    });
    let got = r.wait_closed();
    (got, start.elapsed())
}

#[test]
fn refused_connections_are_closed_at_once() {
    let srv = Server::start(&["--max-clients", "1"]);
    let _only = Raw::join(srv.addr, "only");
    // Full of users: refused at connect.
    let (got, took) = refused_in(srv.addr, "late");
    assert!(refused_with(&got, RefuseCode::SERVER_FULL), "{got:?}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    // A name taken: refused at the handshake.
    let (got, took) = refused_in(srv.addr, "ONLY");
    assert!(
        refused_with(&got, RefuseCode::SERVER_FULL) || refused_with(&got, RefuseCode::NAME_TAKEN),
        "{got:?}"
    );
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

#[test]
fn quick_connects_to_a_full_server_do_not_pile_up_threads() {
    let srv = Server::start(&["--max-clients", "1"]);
    let _only = Raw::join(srv.addr, "only");
    let pid = srv.proc.pid();
    let before = thread_count(pid);
    let mut most = 0;
    for round in 0..10 {
        // 200 connections that say Hello and hang up at once.
        for i in 0..200 {
            if let Ok(mut s) = TcpStream::connect_timeout(&srv.addr, WAIT) {
                let hello = ClientMessage::Hello {
                    resume: None,
                    version: PROTOCOL_VERSION,
                    username: Username::new(format!("q{round}x{i}")).unwrap(),
                };
                let _ = s.write_all(&hello.to_frame());
            }
        }
        most = most.max(thread_count(pid));
    }
    // A reader thread each for seconds would be hundreds.
    assert!(
        most < before + 20,
        "the server ran {most} threads ({before} before the flood)"
    );
    // The one user is still served.
    let mut only = _only;
    only.send(&ClientMessage::Who);
    only.wait_for(|m| matches!(m, ServerMessage::Who { .. }));
}

#[test]
fn silent_sockets_never_lock_out_a_real_user() {
    // Five silent sockets used to fill a --max-clients 5 server for good.
    let srv = Server::start(&["--max-clients", "5", "--max-pending", "50"]);
    let mut silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect_timeout(&srv.addr, WAIT).unwrap())
        .collect();
    let _real = Raw::join(srv.addr, "real");
    // Past the handshake cap, the oldest silent one makes room.
    silent.extend((0..200).filter_map(|_| TcpStream::connect_timeout(&srv.addr, WAIT).ok()));
    let _second = Raw::join(srv.addr, "second");
    drop(silent);
    srv.assert_serving();
}

/// Threads of a process, from /proc (Linux; 0 elsewhere).
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// Download threads of a process (named `send-<client>-<id>`), from /proc (Linux).
#[cfg(target_os = "linux")]
fn download_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("send-"))
        .count()
}

fn download(r: &mut Raw, id: u32, name: &str) {
    r.send(&ClientMessage::Download {
        id: TransferId(id),
        name: FileName::new(name).unwrap(),
        offset: 0,
    });
}

#[cfg(target_os = "linux")]
#[test]
fn downloads_never_acknowledged_end_at_the_idle_timeout_and_their_threads_with_them() {
    const CLIENTS: usize = 5;
    const EACH: u32 = 4;
    let srv = Server::start_with(&["--transfer-idle-secs", "3"], |shared| {
        big_file(shared, "big.bin", 4);
    });
    let pid = srv.proc.child.id();
    let mut clients: Vec<Raw> = (0..CLIENTS)
        .map(|k| Raw::join(srv.addr, &format!("stall{k}")))
        .collect();
    let asked = Instant::now();
    for c in &mut clients {
        for id in 1..=EACH {
            download(c, id, "big.bin");
        }
    }
    // Every download starts, sends its window, and waits for an ack that
    // never comes: one thread each.
    for c in &mut clients {
        for id in 1..=EACH {
            c.wait_for(
                |m| matches!(m, ServerMessage::FileStart(FileStart { id: i, .. }) if i.0 == id),
            );
        }
    }
    let running = download_threads(pid);
    assert!(
        running >= CLIENTS * EACH as usize - 2,
        "{running} download threads"
    );
    // At the idle timeout each is cancelled, with a reason.
    for c in &mut clients {
        for id in 1..=EACH {
            let m = c.wait_for(|m| matches!(m, ServerMessage::Cancel(x) if x.id.0 == id));
            let ServerMessage::Cancel(cancel) = m else {
                unreachable!()
            };
            assert_eq!(cancel.code, CancelCode::TIMED_OUT);
            assert!(
                cancel.reason.contains("nothing acknowledged for 3 s"),
                "{cancel:?}"
            );
        }
    }
    assert!(
        asked.elapsed() >= Duration::from_millis(2900),
        "cancelled before the timeout, after {:?}",
        asked.elapsed()
    );
    // And the threads end.
    let deadline = Instant::now() + WAIT;
    while download_threads(pid) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} download threads left",
            download_threads(pid)
        );
        thread::sleep(Duration::from_millis(50));
    }
    srv.assert_serving();
}

#[test]
fn downloads_past_the_server_wide_cap_are_refused_naming_the_cap() {
    let srv = Server::start_with(&["--max-downloads", "2"], |shared| {
        big_file(shared, "big.bin", 4);
    });
    let mut a = Raw::join(srv.addr, "first");
    let mut b = Raw::join(srv.addr, "second");
    download(&mut a, 1, "big.bin");
    download(&mut a, 2, "big.bin");
    a.wait_for(|m| matches!(m, ServerMessage::FileStart(FileStart { id, .. }) if id.0 == 1));
    a.wait_for(|m| matches!(m, ServerMessage::FileStart(FileStart { id, .. }) if id.0 == 2));
    download(&mut b, 1, "hello.txt");
    let m = b.wait_for(|m| {
        matches!(
            m,
            ServerMessage::Cancel(_) | ServerMessage::FileStart(FileStart { .. })
        )
    });
    let ServerMessage::Cancel(cancel) = m else {
        panic!("a third download started: {m:?}")
    };
    assert_eq!(cancel.code, CancelCode::TOO_MANY);
    assert!(
        cancel.reason.contains("sending 2 files already"),
        "{cancel:?}"
    );
    // The server logs the refusal in one line: who, which file, why.
    let log = srv.dir.0.join("server.log");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let logged = text.lines().any(|l| {
            l.contains("refused download #1 of 'hello.txt' to")
                && l.contains("second")
                && l.contains("sending 2 files already")
        });
        if logged {
            break;
        }
        assert!(Instant::now() < deadline, "refusal not logged:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
    // Once one is cancelled, there is room again.
    a.send(&ClientMessage::Cancel(imchat_core::FileCancel {
        id: TransferId(1),
        code: CancelCode::CANCELLED,
        reason: String::new(),
    }));
    // (The cancel and the next request travel on different connections:
    // retry until the cancel has been handled.)
    let deadline = Instant::now() + WAIT;
    for id in 2.. {
        assert!(Instant::now() < deadline, "no room after a cancel");
        download(&mut b, id, "hello.txt");
        let m = b.wait_for(|m| {
            matches!(m, ServerMessage::Cancel(x) if x.id.0 == id)
                || matches!(m, ServerMessage::End(e) if e.id.0 == id)
        });
        if matches!(m, ServerMessage::End(_)) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    srv.assert_serving();
}

#[test]
fn silent_connections_dropped_to_make_room_do_not_keep_their_threads() {
    let srv = Server::start(&["--max-pending", "20"]);
    let pid = srv.proc.pid();
    // Once a user is in, the server's own threads are all running.
    let _user = Raw::join(srv.addr, "user");
    let before = thread_count(pid);
    // 300 silent sockets: all but the last 20 are dropped to make room.
    let silent: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&srv.addr, WAIT).ok())
        .collect();
    assert_eq!(silent.len(), 300);
    // Each dropped one is closed within about a second, and its reader
    // thread with it (it used to wait out a 5 s grace).
    thread::sleep(Duration::from_millis(2500));
    let after = thread_count(pid);
    assert!(
        after < before + 60,
        "{after} threads 2.5 s after the flood ({before} before)"
    );
    drop(silent);
    srv.assert_serving();
}

/// A push to two receivers, one of which reads at 100 KB/s: the pusher is
/// paced to it only for a while (10 s in all), then it is dropped as too
/// slow and the other, acknowledging what it gets, gets the file at full
/// speed. Before, every wait for
/// it was short enough (a chunk at a time) that it was never dropped, and
/// the push went at its pace to the end (here well over a minute).
#[test]
fn a_slow_receiver_holds_a_push_to_several_back_only_for_a_while() {
    const SIZE: usize = 12 << 20;
    let srv = Server::start(&[]);
    let mut pusher = Raw::join(srv.addr, "pusher");
    let mut fast = Raw::join(srv.addr, "fast");
    let mut slow = Raw::join(srv.addr, "slow");
    let id = TransferId(1);
    pusher.send(&ClientMessage::Offer {
        id,
        name: FileName::new("big.bin").unwrap(),
        size: SIZE as u64,
        to: Recipient::Everyone,
    });
    for r in [&mut fast, &mut slow] {
        let ServerMessage::FileStart(FileStart { id: rid, .. }) =
            r.wait_for(|m| matches!(m, ServerMessage::FileStart(_)))
        else {
            unreachable!()
        };
        r.send(&ClientMessage::Accept { id: rid });
    }
    pusher.wait_for(|m| matches!(m, ServerMessage::PushAccepted { id: i, .. } if *i == id));
    let started = Instant::now();
    // The slow one reads 10 KB every 100 ms, until it is dropped (a Cancel).
    let slow_reader = thread::spawn(move || {
        let mut d = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
        let mut buf = vec![0u8; 10_000];
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            match (&slow.stream).read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => d.feed(&buf[..n]),
                Err(_) => {}
            }
            while let Ok(Some(m)) = d.next_message() {
                if let ServerMessage::Cancel(c) = m {
                    return Some(c.code);
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        None
    });
    let data = pseudo_random(SIZE);
    let writer = push_within_credit(pusher, id, data, 256 << 10);
    // The fast one reads all it gets, and counts it.
    let deadline = started + Duration::from_secs(60);
    let mut got = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "the fast receiver got {got} of {SIZE} bytes in 60 s"
        );
        assert!(fast.pump(), "the fast receiver's connection closed");
        let mut ended = false;
        let mut acks = Vec::new();
        for m in fast.pending.drain(..) {
            match m {
                ServerMessage::Chunk(c) => {
                    got += c.data.len();
                    acks.push(ClientMessage::Ack {
                        id: c.id,
                        offset: c.offset + c.data.len() as u64,
                    });
                }
                ServerMessage::End(_) => ended = true,
                _ => {}
            }
        }
        for ack in &acks {
            fast.send(ack);
        }
        if ended {
            break;
        }
    }
    assert_eq!(got, SIZE);
    let took = started.elapsed();
    assert_eq!(slow_reader.join().unwrap(), Some(CancelCode::TOO_SLOW));
    let (_pusher, cancelled) = writer.join().unwrap();
    assert_eq!(cancelled, None, "the push went on to the fast receiver");
    assert!(
        took < Duration::from_secs(40),
        "the fast receiver waited for the slow one: {took:?}"
    );
    srv.assert_serving();
}

/// A receiver of a push that reads all it is sent but acknowledges none of
/// it gets a window's worth (`PUSH_WINDOW`), however fast it reads, and
/// after the relay's wait (10 s) is dropped as too slow: what is relayed
/// to a receiver and not stored by it is bounded by its acknowledgements,
/// not by the socket buffers and network between (where a chat line to it
/// would wait behind it all), as a download's is.
#[test]
fn a_push_goes_to_a_receiver_no_further_than_it_acknowledged_and_a_window() {
    const SIZE: usize = 8 << 20;
    const CHUNK: usize = 256 << 10;
    let srv = Server::start(&[]);
    let mut pusher = Raw::join(srv.addr, "pusher");
    let mut reader = Raw::join(srv.addr, "reader");
    let id = TransferId(1);
    offered_and_accepted(
        &mut pusher,
        &mut reader,
        id,
        ("big.bin", SIZE, Recipient::Everyone),
    );
    let data = pseudo_random(SIZE);
    // The pusher sends as far as its credit goes, and asks for no more.
    let ServerMessage::PushCredit { offset: credit, .. } =
        pusher.wait_for(|m| matches!(m, ServerMessage::PushCredit { id: i, .. } if *i == id))
    else {
        unreachable!()
    };
    assert_eq!(credit, imchat_core::PUSH_CREDIT);
    let credit = usize::try_from(credit).unwrap();
    for (k, part) in data[..credit].chunks(CHUNK).enumerate() {
        pusher.send(&ClientMessage::Chunk(FileChunk::new(
            id,
            (k * CHUNK) as u64,
            part.to_vec(),
        )));
    }
    // It reads everything it is sent, for 20 s at most, until it is
    // dropped; it never acknowledges.
    let started = Instant::now();
    let (mut got, mut got_at_3s, mut cancel) = (0, None, None);
    while cancel.is_none() && started.elapsed() < Duration::from_secs(20) {
        assert!(reader.pump(), "the reader's connection closed");
        for m in reader.pending.drain(..) {
            match m {
                ServerMessage::Chunk(c) => got += c.data.len(),
                ServerMessage::Cancel(c) => cancel = Some(c.code),
                _ => {}
            }
        }
        if got_at_3s.is_none() && started.elapsed() >= Duration::from_secs(3) {
            got_at_3s = Some(got);
        }
    }
    let window = usize::try_from(imchat_core::PUSH_WINDOW).unwrap();
    assert!(
        got_at_3s.is_some_and(|g| g <= window) && got <= window,
        "it got {got_at_3s:?} bytes in 3 s and {got} in all, of {SIZE}, with nothing acknowledged"
    );
    assert_eq!(cancel, Some(CancelCode::TOO_SLOW));
    // Its credit never grew; the push ends for the pusher too.
    pusher.wait_for(|m| matches!(m, ServerMessage::Cancel(c) if c.id == id));
    assert!(!pusher
        .pending
        .iter()
        .any(|m| matches!(m, ServerMessage::PushCredit { .. })));
    drop(pusher);
    srv.assert_serving();
}

/// The pusher's own chat never waits behind its file: a push to a receiver
/// that neither reads nor acknowledges is stuck at its first credit, and
/// meanwhile the pusher's chat line reaches a third user and its `/who`
/// is answered at once (the server goes on reading the pusher).
#[test]
fn a_pusher_s_chat_goes_on_while_its_push_waits_for_a_receiver_that_reads_nothing() {
    const SIZE: usize = 80 << 20;
    const CHUNK: usize = 256 << 10;
    let srv = Server::start(&[]);
    let mut pusher = Raw::join(srv.addr, "pusher");
    let mut stuck = Raw::join(srv.addr, "stuck");
    let watcher = Raw::join(srv.addr, "watcher");
    let id = TransferId(1);
    // From now on `stuck` reads nothing more (nor acknowledges).
    offered_and_accepted(
        &mut pusher,
        &mut stuck,
        id,
        (
            "big.bin",
            SIZE,
            Recipient::User(Username::new("stuck").unwrap()),
        ),
    );
    // The first credit is one window (a protocol fact): everything it
    // allows goes out, in chunks written back to back.
    let credit = usize::try_from(imchat_core::PUSH_CREDIT).unwrap();
    let data = pseudo_random(credit);
    let mut frames = Vec::new();
    for (k, part) in data.chunks(CHUNK).enumerate() {
        ClientMessage::Chunk(FileChunk::new(id, (k * CHUNK) as u64, part.to_vec()))
            .encode(&mut frames);
    }
    // Then, on the same socket (so read after all of the data), a chat
    // line and a `/who`.
    pusher.write(&frames).unwrap();
    let sent = Instant::now();
    pusher.send(&ClientMessage::Chat {
        client_id: 1,
        to: Recipient::User(Username::new("watcher").unwrap()),
        kind: ChatKind::Text,
        text: "still here".into(),
    });
    pusher.send(&ClientMessage::Who);
    let mut watcher = watcher.waiting(Duration::from_secs(5));
    watcher.wait_for(
        |m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text == "still here"),
    );
    let chat = sent.elapsed();
    let mut pusher = pusher.waiting(Duration::from_secs(5));
    pusher.wait_for(|m| matches!(m, ServerMessage::Who { .. }));
    let who = sent.elapsed();
    assert!(
        chat < Duration::from_millis(500) && who < Duration::from_millis(500),
        "the chat line took {chat:?} and the /who {who:?} while the push waited"
    );
    // It was told how far it may send, and no further.
    assert!(matches!(
        pusher.pending.iter().find(|m| matches!(m, ServerMessage::PushCredit { .. })),
        Some(ServerMessage::PushCredit { offset, .. }) if *offset == imchat_core::PUSH_CREDIT
    ));
    drop(stuck);
    drop(watcher);
    srv.assert_serving();
}

/// A pusher that sends past its credit (written before credits, say) has
/// that push cancelled (`BAD_CHUNK`, the reason saying so): nothing past
/// the credit is relayed, and its connection and chat go on.
#[test]
fn a_chunk_past_the_pusher_s_credit_cancels_its_push_only() {
    const CHUNK: usize = 256 << 10;
    let srv = Server::start(&[]);
    let mut pusher = Raw::join(srv.addr, "pusher");
    let mut reader = Raw::join(srv.addr, "reader");
    let id = TransferId(1);
    let size = 2 * usize::try_from(imchat_core::PUSH_CREDIT).unwrap();
    let rid = offered_and_accepted(
        &mut pusher,
        &mut reader,
        id,
        ("big.bin", size, Recipient::Everyone),
    );
    // All of it at once, as if the credit were not there.
    let data = pseudo_random(size);
    for (k, part) in data.chunks(CHUNK).enumerate() {
        pusher.send(&ClientMessage::Chunk(FileChunk::new(
            id,
            (k * CHUNK) as u64,
            part.to_vec(),
        )));
    }
    let ServerMessage::Cancel(c) =
        pusher.wait_for(|m| matches!(m, ServerMessage::Cancel(c) if c.id == id))
    else {
        unreachable!()
    };
    assert_eq!(c.code, CancelCode::BAD_CHUNK);
    assert!(c.reason.contains("past the credit"), "{}", c.reason);
    let ServerMessage::Cancel(theirs) =
        reader.wait_for(|m| matches!(m, ServerMessage::Cancel(c) if c.id == rid))
    else {
        unreachable!()
    };
    assert_eq!(theirs.code, CancelCode::BAD_CHUNK);
    // The pusher's connection goes on.
    pusher.send(&ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: "sorry".into(),
    });
    reader
        .wait_for(|m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text == "sorry"));
    // The cancel and the chat may overtake the data (control frames go
    // first): what was relayed is all in within a few seconds, and none
    // of it goes past the credit.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0u64;
    while got < imchat_core::PUSH_CREDIT && Instant::now() < deadline {
        for m in reader.pending.drain(..) {
            if let ServerMessage::Chunk(c) = m {
                assert!(c.offset + c.data.len() as u64 <= imchat_core::PUSH_CREDIT);
                got += c.data.len() as u64;
            }
        }
        assert!(reader.pump(), "the reader's connection closed");
    }
    assert_eq!(
        got,
        imchat_core::PUSH_CREDIT,
        "what the credit allowed, no more"
    );
    srv.assert_serving();
}

/// Sends `data` as push `id` as a client must: chunks of at most `chunk`
/// bytes, none past the last credit the server gave (`PushCredit`),
/// waiting for more when at it, then its `End`. Stops at a `Cancel` of the
/// push (returned), or after 90 s.
fn push_within_credit(
    mut pusher: Raw,
    id: TransferId,
    data: Vec<u8>,
    chunk: usize,
) -> thread::JoinHandle<(Raw, Option<CancelCode>)> {
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        let (mut credit, mut sent) = (0u64, 0usize);
        while Instant::now() < deadline {
            if !pusher.pump() {
                return (pusher, None);
            }
            let mut cancelled = None;
            pusher.pending.retain(|m| match m {
                ServerMessage::PushCredit { id: i, offset } if *i == id => {
                    credit = credit.max(*offset);
                    false
                }
                ServerMessage::Cancel(c) if c.id == id => {
                    cancelled = Some(c.code);
                    true
                }
                _ => true,
            });
            if cancelled.is_some() {
                return (pusher, cancelled);
            }
            let room = usize::try_from(credit).unwrap().min(data.len()) - sent;
            let mut frames = Vec::new();
            let mut left = room;
            while left > 0 {
                let n = left.min(chunk);
                ClientMessage::Chunk(FileChunk::new(
                    id,
                    sent as u64,
                    data[sent..sent + n].to_vec(),
                ))
                .encode(&mut frames);
                sent += n;
                left -= n;
            }
            if pusher.write(&frames).is_err() {
                return (pusher, None);
            }
            if sent == data.len() {
                pusher.send(&ClientMessage::End(FileEnd {
                    id,
                    crc: crc32fast::hash(&data),
                }));
                return (pusher, None);
            }
        }
        (pusher, None)
    })
}

/// `n` bytes that do not repeat in any short period.
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The log keeps the order in which things happened: a download refused
/// at once (no such file) is logged after the request it answers, and
/// after the join of the client that asked, never before them.
#[test]
fn a_refused_download_is_logged_after_the_request_it_answers() {
    let srv = Server::start(&[]);
    let mut r = Raw::join(srv.addr, "orderly");
    // One at a time: the refusals, not the cap on transfers at once.
    for i in 1..=10u32 {
        r.send(&ClientMessage::Download {
            id: TransferId(i),
            name: FileName::new(format!("missing{i}.txt")).unwrap(),
            offset: 0,
        });
        r.wait_for(|m| matches!(m, ServerMessage::Cancel(c) if c.id == TransferId(i)));
    }
    let log = srv.dir.0.join("server.log");
    let refused = |text: &str| text.matches("not sending 'missing").count();
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if refused(&text) == 10 {
            break text;
        }
        assert!(Instant::now() < deadline, "refusals not logged:\n{text}");
        thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{text}"))
    };
    let joined = at("orderly joined");
    for i in 1..=10u32 {
        let asked = at(&format!("asked to download 'missing{i}.txt'"));
        let answered = at(&format!("not sending 'missing{i}.txt'"));
        assert!(
            joined < asked && asked < answered,
            "out of order (join at line {joined}, request at {asked}, refusal at {answered}):\n{text}"
        );
    }
    srv.assert_serving();
}

/// A download of a name that is not in the shared folder makes the server
/// read the whole folder (looking for the name under another Unicode
/// encoding): it costs its asker what a count of that folder costs, so
/// that names that are not there, a message each, cannot keep the server
/// reading a big folder.
#[test]
fn downloads_of_missing_names_from_a_big_folder_are_slowed() {
    let args = [
        "--rate-burst",
        "5",
        "--rate-per-sec",
        "1",
        "--flood-timeout-secs",
        "60",
    ];
    let srv = Server::start_with(&args, |shared| {
        for i in 0..3_000 {
            std::fs::write(shared.join(format!("f{i}.txt")), b"").unwrap();
        }
    });
    let mut r = Raw::join(srv.addr, "seeker");
    r.send(&ClientMessage::Download {
        id: TransferId(1),
        name: FileName::new("missing.txt").unwrap(),
        offset: 0,
    });
    r.wait_for(|m| matches!(m, ServerMessage::Cancel(c) if c.code == CancelCode::NO_SUCH_FILE));
    // 1 + 30 messages against a burst of 5 at 1 a second. The charge may
    // come once the reader waits for the next frame: the one after it
    // waits more than 20 s.
    r.send(&ClientMessage::Ping(7));
    r.send(&ClientMessage::Ping(8));
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        r.pump();
        assert!(
            !r.pending
                .iter()
                .any(|m| matches!(m, ServerMessage::Pong(8))),
            "answered at once after a search through 3,000 files"
        );
    }
    srv.assert_serving();
}
