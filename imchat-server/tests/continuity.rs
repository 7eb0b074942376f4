//! A server stopped and started again, with and without `--history-db`,
//! against raw protocol clients: the real binary on 127.0.0.1, its port
//! first picked by the OS and then reused, every wait bounded, every
//! process stopped by its pid or handle.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{
    ChatKind, ClientMessage, Decoder, Departure, Encode, MessageId, PresenceEvent, Recipient,
    RefuseCode, ResumeRequest, ResumeToken, RoutedChat, ServerMessage, Username, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};

const WAIT: Duration = Duration::from_secs(15);

/// The server binary, killed by its handle if a test ends early.
struct Server {
    child: Child,
    lines: Receiver<String>,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server on `port` of 127.0.0.1 (0: the system picks),
    /// retrying for a while if the port is still held by the last one.
    fn start(dir: &Path, port: u16, args: &[&str]) -> Server {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
                .arg(format!("127.0.0.1:{port}"))
                .arg("--shared-dir")
                .arg(dir)
                .arg("--log-file")
                .arg(dir.join("server.log"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the server");
            let lines = common::output_lines(&mut child, "");
            let mut seen = Vec::new();
            while let Ok(l) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if let Some(addr) = l.strip_prefix("imchat-server listening on ") {
                    let addr = addr.parse().expect("an address");
                    return Server { child, lines, addr };
                }
                seen.push(l);
            }
            let _ = child.kill();
            let _ = child.wait();
            let busy = seen.iter().any(|l| l.contains("in use"));
            assert!(
                busy && Instant::now() < deadline,
                "the server did not start: {seen:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL by its handle: a crash, with nothing written on the way out.
    fn crash(mut self) {
        self.child.kill().expect("kill -9 the server");
        let _ = self.child.wait();
    }

    /// SIGTERM by pid, and the exit status it ends with.
    fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the server did not stop: {:?}",
            self.lines.try_iter().collect::<Vec<_>>()
        );
    }
}

/// A protocol-level client that keeps its side of the transcript.
struct Peer {
    name: Username,
    stream: TcpStream,
    decoder: Decoder<ServerMessage>,
    pending: Vec<ServerMessage>,
    token: ResumeToken,
    epoch: u64,
    /// The highest id received (chat, joins, leaves; not history).
    last_seen: MessageId,
    /// Chat received: id → (sender, text); a second copy of an id is a failure.
    got: BTreeMap<u64, (String, String)>,
    /// Chat received marked as history.
    history: Vec<RoutedChat>,
    /// Presence received (joins and leaves of others).
    presence: Vec<ServerMessage>,
    /// Sent and not yet acknowledged: client id → text.
    unacked: BTreeMap<u64, (Recipient, String)>,
    /// Acknowledged: client id → (server id, text).
    acked: BTreeMap<u64, (u64, String)>,
    next_client_id: u64,
}

impl Peer {
    fn socket(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        stream
    }

    /// Connected, before its `Hello`.
    fn raw(addr: SocketAddr, name: &str) -> Peer {
        Peer {
            name: Username::new(name).unwrap(),
            stream: Peer::socket(addr),
            decoder: Decoder::new(DEFAULT_MAX_FRAME),
            pending: Vec::new(),
            token: ResumeToken::default(),
            epoch: 0,
            last_seen: MessageId(0),
            got: BTreeMap::new(),
            history: Vec::new(),
            presence: Vec::new(),
            unacked: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_client_id: 1,
        }
    }

    fn connect(addr: SocketAddr, name: &str) -> (Peer, ServerMessage) {
        let mut p = Peer::raw(addr, name);
        let welcome = p.hello(None);
        (p, welcome)
    }

    fn hello(&mut self, resume: Option<ResumeRequest>) -> ServerMessage {
        self.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: self.name.clone(),
            resume,
        });
        let welcome = self.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
        if let ServerMessage::Welcome {
            token,
            epoch,
            last_id,
            resumed,
            ..
        } = &welcome
        {
            self.token = *token;
            self.epoch = *epoch;
            if resumed.is_none() {
                self.last_seen = *last_id;
            }
        }
        welcome
    }

    /// Connects again on a new socket, presenting its token, keeping its
    /// transcript, and resends what was not acknowledged, in order, with
    /// the same client ids.
    fn resume(&mut self, addr: SocketAddr) -> ServerMessage {
        self.stream = Peer::socket(addr);
        self.decoder = Decoder::new(DEFAULT_MAX_FRAME);
        self.pending.clear();
        let request = ResumeRequest {
            token: self.token,
            last_seen: self.last_seen,
            epoch: self.epoch,
        };
        let welcome = self.hello(Some(request));
        let resend: Vec<(u64, Recipient, String)> = self
            .unacked
            .iter()
            .map(|(id, (to, text))| (*id, to.clone(), text.clone()))
            .collect();
        for (client_id, to, text) in resend {
            self.send(&ClientMessage::Chat {
                client_id,
                kind: ChatKind::Text,
                to,
                text,
            });
        }
        welcome
    }

    fn send(&mut self, m: &ClientMessage) {
        let _ = self.stream.write_all(&m.to_frame());
    }

    fn chat(&mut self, to: Recipient, text: &str) {
        let client_id = self.next_client_id;
        self.next_client_id += 1;
        self.unacked
            .insert(client_id, (to.clone(), text.to_string()));
        self.send(&ClientMessage::Chat {
            client_id,
            kind: ChatKind::Text,
            to,
            text: text.into(),
        });
    }

    /// Takes in what arrived; false once the server closed the connection.
    fn pump(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        let open = match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.decoder.feed(&buf[..n]);
                true
            }
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        while let Ok(Some(m)) = self.decoder.next_message() {
            self.note(m);
        }
        open
    }

    /// Records chat, presence and acks in the transcript; keeps the rest.
    fn note(&mut self, m: ServerMessage) {
        match m {
            ServerMessage::Chat(c) if c.history => self.history.push(c),
            ServerMessage::Chat(c) => {
                self.last_seen = self.last_seen.max(c.id);
                let first = self
                    .got
                    .insert(c.id.0, (c.from.to_string(), c.text.clone()));
                assert!(
                    first.is_none(),
                    "{} got id {} twice: {c:?}",
                    self.name,
                    c.id
                );
            }
            ServerMessage::Joined { id, .. } | ServerMessage::Left(Departure { id, .. }) => {
                self.last_seen = self.last_seen.max(id);
                self.presence.push(m);
            }
            // Batched joins and leaves: each as if it came alone. A user
            // away or back is no entry of the log: kept as it came.
            ServerMessage::Presence(events) => {
                for e in events {
                    if e.is_entry() {
                        self.note(e.into_message());
                    } else {
                        self.pending.push(ServerMessage::Presence(vec![e]));
                    }
                }
            }
            ServerMessage::Ack { client_id, id, .. } => {
                let (_, text) = self
                    .unacked
                    .remove(&client_id)
                    .unwrap_or_else(|| panic!("{}: ack of unknown {client_id}", self.name));
                self.acked.insert(client_id, (id.0, text));
            }
            other => self.pending.push(other),
        }
    }

    fn wait_for(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.pending.iter().position(&pred) {
                return self.pending.remove(i);
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out; got {:?}",
                self.name,
                self.pending
            );
            assert!(
                self.pump() || self.pending.iter().any(&pred),
                "{}: closed; got {:?}",
                self.name,
                self.pending
            );
        }
    }

    /// Reads until `done` holds.
    fn until(&mut self, what: &str, done: impl Fn(&Peer) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{}: no {what}; pending {:?}",
                self.name,
                self.pending
            );
            assert!(self.pump(), "{}: closed waiting for {what}", self.name);
        }
    }

    /// Reads until the server closes the connection.
    fn until_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        while self.pump() {
            assert!(Instant::now() < deadline, "{}: not closed", self.name);
        }
    }

    /// The texts received from `from`, in id order.
    fn texts_from(&self, from: &str) -> Vec<String> {
        self.got
            .values()
            .filter(|(f, _)| f == from)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

fn shutdown_reason(p: &Peer) -> Option<String> {
    p.pending.iter().find_map(|m| match m {
        ServerMessage::Shutdown { reason } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn with_a_history_database_a_restarted_server_takes_every_client_back_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let db_arg = db.to_str().unwrap();
    let args = ["--history-db", db_arg, "--grace-secs", "60"];
    let srv = Server::start(dir.path(), 0, &args);
    let (addr, port) = (srv.addr, srv.addr.port());

    let (mut ann, _) = Peer::connect(addr, "ann");
    let (mut bob, _) = Peer::connect(addr, "bob");
    ann.until("bob's join", |p| !p.presence.is_empty());
    let bob_name = Recipient::User(bob.name.clone());
    let ann_name = Recipient::User(ann.name.clone());
    for i in 0..20 {
        ann.chat(Recipient::Everyone, &format!("ann {i}"));
        bob.chat(ann_name.clone(), &format!("bob to ann {i}"));
    }
    ann.until("acks", |p| p.unacked.is_empty());
    bob.until("acks", |p| p.unacked.is_empty());
    // More, some still in flight when the server is told to stop.
    for i in 20..30 {
        ann.chat(Recipient::Everyone, &format!("ann {i}"));
        bob.chat(ann_name.clone(), &format!("bob to ann {i}"));
    }
    let status = srv.stop();
    for p in [&mut ann, &mut bob] {
        p.until_closed();
        let reason = shutdown_reason(p);
        assert_eq!(
            reason.as_deref(),
            Some("server stopped by operator"),
            "{}",
            p.name
        );
    }
    assert_eq!(status, Some(0));
    let acked_before = (ann.acked.clone(), bob.acked.clone());
    let old_epoch = ann.epoch;

    let srv = Server::start(dir.path(), port, &args);
    assert_eq!(srv.addr, addr);
    let welcome = ann.resume(addr);
    let ServerMessage::Welcome {
        username,
        resumed,
        epoch,
        ..
    } = &welcome
    else {
        unreachable!()
    };
    assert_eq!((username.as_str(), *epoch), ("ann", old_epoch));
    assert_eq!(resumed.map(|r| r.dropped), Some(0), "{welcome:?}");
    // While bob is still away, ann writes to him and to everyone.
    for i in 30..35 {
        ann.chat(Recipient::Everyone, &format!("ann {i}"));
        ann.chat(bob_name.clone(), &format!("ann to bob {i}"));
    }
    ann.until("acks after the restart", |p| p.unacked.is_empty());
    let welcome = bob.resume(addr);
    assert!(
        matches!(&welcome, ServerMessage::Welcome { resumed: Some(r), epoch, .. } if r.dropped == 0 && *epoch == old_epoch),
        "{welcome:?}"
    );
    bob.until("acks after the restart", |p| p.unacked.is_empty());
    let every_ann: Vec<String> = ann.acked.values().map(|(_, t)| t.clone()).collect();
    bob.until("everything ann sent", |p| p.got.len() == every_ann.len());
    ann.until("everything bob sent", |p| p.got.len() == 30);

    // Nothing acknowledged before the stop is missing or changed after it.
    for (before, after) in [(&acked_before.0, &ann.acked), (&acked_before.1, &bob.acked)] {
        for (cid, entry) in before {
            assert_eq!(after.get(cid), Some(entry), "client id {cid}");
        }
    }
    // Both transcripts agree: what one side had acknowledged is what the
    // other received, under the same ids, once, in the order sent.
    let sent: Vec<(u64, String)> = ann.acked.values().cloned().collect();
    let received: Vec<(u64, String)> = bob
        .got
        .iter()
        .filter(|(_, (f, _))| f == "ann")
        .map(|(id, (_, t))| (*id, t.clone()))
        .collect();
    assert_eq!(sent, received);
    assert_eq!(sent.len(), 40);
    let sent: Vec<(u64, String)> = bob.acked.values().cloned().collect();
    let received: Vec<(u64, String)> = ann
        .got
        .iter()
        .map(|(id, (_, t))| (*id, t.clone()))
        .collect();
    assert_eq!(sent, received);
    assert_eq!(
        ann.texts_from("bob"),
        (0..30)
            .map(|i| format!("bob to ann {i}"))
            .collect::<Vec<_>>()
    );
    // Nobody saw the other leave or come back.
    assert_eq!(ann.presence.len(), 1, "{:?}", ann.presence);
    assert!(bob.presence.is_empty(), "{:?}", bob.presence);

    // A late joiner gets the room's latest messages from before the restart, as history.
    let (mut carol, _) = Peer::connect(addr, "carol");
    carol.until("history", |p| p.history.len() >= 35);
    let history: Vec<String> = carol.history.iter().map(|c| c.text.clone()).collect();
    let want: Vec<String> = (0..35).map(|i| format!("ann {i}")).collect();
    assert_eq!(history, want, "broadcasts only, oldest first");
    let _ = srv.stop();
}

/// The history file's entries as (id, event, user, text), oldest first,
/// read from its `batches` rows in the batch layout the store documents:
/// per entry its id's difference from the previous one's and its time's
/// (varints), event (plus 4 if a recipient follows) and kind (a byte
/// each), its client id (a varint), then the user, the recipient if
/// flagged and the text, each as a varint length and UTF-8.
fn entries_in_file(file: &rusqlite::Connection) -> Vec<(u64, u8, String, String)> {
    let mut stmt = file
        .prepare("SELECT entries FROM batches ORDER BY first_id")
        .unwrap();
    let blobs = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
    let mut entries = Vec::new();
    for blob in blobs {
        let blob = blob.unwrap();
        let mut b = Blob(&blob);
        let mut id = 0;
        while !b.0.is_empty() {
            id += b.varint();
            b.varint();
            let fixed = b.bytes(2);
            b.varint();
            let user = b.string();
            if fixed[0] & 4 != 0 {
                b.string();
            }
            entries.push((id, fixed[0] & !4, user, b.string()));
        }
    }
    entries
}

/// A batch's bytes, read from the front.
struct Blob<'a>(&'a [u8]);

impl<'a> Blob<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn varint(&mut self) -> u64 {
        let mut v = 0;
        for shift in (0..).step_by(7) {
            let b = self.bytes(1)[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }

    fn string(&mut self) -> String {
        let n = usize::try_from(self.varint()).unwrap();
        String::from_utf8(self.bytes(n).to_vec()).unwrap()
    }
}

/// The texts of `user`'s chat entries in the history file, by id.
fn texts_in_file(db: &Path, user: &str) -> Vec<(u64, String)> {
    let file = rusqlite::Connection::open(db).unwrap();
    entries_in_file(&file)
        .into_iter()
        .filter(|(_, event, from, _)| *event == 0 && from == user)
        .map(|(id, _, _, text)| (id, text))
        .collect()
}

/// Every row of every table of the database file `db`, table by table.
fn every_row(db: &Path) -> Vec<String> {
    let file =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut tables = file
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let names: Vec<String> = tables
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut rows = Vec::new();
    for table in names {
        let mut stmt = file.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut it = stmt.query([]).unwrap();
        while let Some(row) = it.next().unwrap() {
            let values: Vec<rusqlite::types::Value> =
                (0..columns).map(|i| row.get(i).unwrap()).collect();
            rows.push(format!("{table}: {values:?}"));
        }
    }
    rows
}

#[test]
fn after_a_clean_stop_the_database_file_alone_holds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let args = ["--history-db", db.to_str().unwrap(), "--grace-secs", "60"];
    let srv = Server::start(dir.path(), 0, &args);
    let (mut ann, _) = Peer::connect(srv.addr, "ann");
    let (mut bob, _) = Peer::connect(srv.addr, "bob");
    for i in 0..5 {
        ann.chat(Recipient::Everyone, &format!("ann {i}"));
    }
    ann.until("acks", |p| p.unacked.is_empty());
    // Both leave just before the stop: the last writes are their leaves.
    for p in [&mut ann, &mut bob] {
        p.send(&ClientMessage::Quit {
            reason: "bye".into(),
        });
        p.until_closed();
    }
    assert_eq!(srv.stop(), Some(0));
    let wal = dir.path().join("history.db-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len, 0, "the WAL was moved into the database");
    // A backup of the database file alone, as an operator copies it.
    let backup = tempfile::tempdir().unwrap();
    let alone = backup.path().join("history.db");
    std::fs::copy(&db, &alone).unwrap();
    let all = every_row(&db);
    let texts = texts_in_file(&db, "ann");
    assert_eq!(texts.len(), 5, "{texts:?}");
    assert_eq!(every_row(&alone), all);
    // And the ids reserved ahead were given back: a restart goes on from
    // the last one stored, with no jump (PROTOCOL.md section 14).
    let file = rusqlite::Connection::open(&db).unwrap();
    let (reserved, last): (i64, i64) = file
        .query_row(
            "SELECT (SELECT value FROM meta WHERE key = 'reserved_id'),
                    (SELECT max(last_id) FROM batches)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(reserved, last + 1, "reserved ids kept after a clean stop");
}

#[test]
fn with_a_history_database_no_ack_arrives_before_its_entry_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let args = ["--history-db", db.to_str().unwrap(), "--rate-per-sec", "0"];
    let srv = Server::start(dir.path(), 0, &args);
    let (mut ann, _) = Peer::connect(srv.addr, "ann");
    // Another connection to the file sees only what was committed.
    let file = rusqlite::Connection::open(&db).unwrap();
    let mut checked = 0;
    for round in 0..20 {
        for i in 0..25 {
            ann.chat(Recipient::Everyone, &format!("{round}.{i}"));
        }
        let deadline = Instant::now() + WAIT;
        while !ann.unacked.is_empty() {
            assert!(Instant::now() < deadline, "acks of round {round}");
            assert!(ann.pump(), "closed");
            // Each ack just read: its entry was committed before it was sent.
            for (id, text) in ann.acked.values().skip(checked) {
                let in_file = entries_in_file(&file)
                    .into_iter()
                    .find(|e| e.0 == *id)
                    .map(|e| e.3);
                assert_eq!(in_file.as_ref(), Some(text), "ack of id {id}");
            }
            checked = ann.acked.len();
        }
    }
    assert_eq!(checked, 500);
    let _ = srv.stop();
}

#[test]
fn a_server_killed_mid_burst_loses_only_unacknowledged_messages_and_the_resend_fills_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let args = [
        "--history-db",
        db.to_str().unwrap(),
        "--grace-secs",
        "60",
        "--rate-per-sec",
        "0",
    ];
    let srv = Server::start(dir.path(), 0, &args);
    let (addr, port) = (srv.addr, srv.addr.port());
    let (mut ann, _) = Peer::connect(addr, "ann");
    let texts: Vec<String> = (0..3000).map(|i| format!("burst {i}")).collect();
    for t in &texts {
        ann.chat(Recipient::Everyone, t);
    }
    ann.until("the first acks", |p| p.acked.len() >= 50);
    srv.crash();
    ann.until_closed();
    // Everything acknowledged is in the file, under its id.
    let acked: Vec<(u64, String)> = ann.acked.values().cloned().collect();
    let in_file = texts_in_file(&db, "ann");
    for a in &acked {
        assert!(in_file.contains(a), "acknowledged {a:?} is not in the file");
    }
    assert!(
        !ann.unacked.is_empty(),
        "the kill came after the burst: nothing to check"
    );

    // Restarted on the file: ann resumes and resends what was not acknowledged.
    let srv = Server::start(dir.path(), port, &args);
    let welcome = ann.resume(addr);
    assert!(
        matches!(
            &welcome,
            ServerMessage::Welcome {
                resumed: Some(_),
                ..
            }
        ),
        "{welcome:?}"
    );
    ann.until("every ack", |p| p.unacked.is_empty());
    assert_eq!(srv.stop(), Some(0));
    // Each message once (a resent copy of one committed before the kill
    // is answered as a duplicate), in the order sent, as acknowledged.
    let in_file = texts_in_file(&db, "ann");
    let got: Vec<&String> = in_file.iter().map(|(_, t)| t).collect();
    assert_eq!(got, texts.iter().collect::<Vec<_>>());
    let acked: Vec<(u64, String)> = ann.acked.values().cloned().collect();
    assert_eq!(acked, in_file);
}

#[test]
fn without_a_database_a_resuming_client_learns_the_history_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), 0, &[]);
    let (addr, port) = (srv.addr, srv.addr.port());
    let (mut ann, _) = Peer::connect(addr, "ann");
    ann.chat(Recipient::Everyone, "before");
    ann.until("the ack", |p| p.unacked.is_empty());
    let old_epoch = ann.epoch;
    assert_eq!(srv.stop(), Some(0));
    ann.until_closed();
    assert!(shutdown_reason(&ann).is_some());
    // One more, into the closed connection: never acknowledged.
    ann.chat(Recipient::Everyone, "while down");

    let srv = Server::start(dir.path(), port, &[]);
    let welcome = ann.resume(addr);
    let ServerMessage::Welcome {
        username,
        resumed,
        epoch,
        ..
    } = &welcome
    else {
        unreachable!()
    };
    assert_eq!(username.as_str(), "ann");
    assert_eq!(*resumed, None, "a fresh session, not a resume");
    assert_ne!(*epoch, old_epoch, "a new history has a new epoch");
    // The history of the old server is gone with it; the message it never
    // had is sent again and taken by the new one.
    ann.until("the ack of the resent message", |p| p.unacked.is_empty());
    assert!(ann.history.is_empty(), "{:?}", ann.history);
    let _ = srv.stop();
}

/// Starts a server on the history file `db` (in `dir`) that is to exit
/// at once: its exit status, standard output and standard error.
fn start_refused(dir: &Path, db: &Path) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(["127.0.0.1:0", "--history-db"])
        .arg(db)
        .arg("--shared-dir")
        .arg(dir)
        .arg("--log-file")
        .arg(dir.join("server.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

#[test]
fn a_history_file_the_server_cannot_use_stops_it_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let garbage = b"these are not the bytes of an SQLite database, not at all";
    std::fs::write(&db, garbage).unwrap();
    let (status, out, err) = start_refused(dir.path(), &db);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!out.contains("listening"), "{out}");
    let want = format!(
        "imchat-server: cannot open the history database '{}': file is not a database",
        db.display()
    );
    assert_eq!(err.trim_end(), want);
    // Left as it was.
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
}

/// The history file deleted while the server runs: the server says so on
/// its standard error (and in its log), once, within a checkpoint round.
#[cfg(unix)]
#[test]
fn a_history_file_deleted_while_the_server_runs_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let srv = Server::start(dir.path(), 0, &["--history-db", db.to_str().unwrap()]);
    std::fs::remove_file(&db).unwrap();
    let want = format!(
        "the history database file '{}' was deleted while the server runs",
        db.display()
    );
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Ok(l) = srv
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if l.contains(&want) {
            break;
        }
        seen.push(l);
        assert!(Instant::now() < deadline, "not said: {seen:?}");
    }
    assert!(Instant::now() < deadline, "not said: {seen:?}");
    // Once.
    thread::sleep(Duration::from_millis(1200));
    let again: Vec<String> = srv.lines.try_iter().filter(|l| l.contains(&want)).collect();
    assert!(again.is_empty(), "said again: {again:?}");
    assert_eq!(srv.stop(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert_eq!(log.matches(&want).count(), 1, "{log}");
}

/// A database whose history cannot be read (a batch cut short) stops the
/// server before it says it listens, with the file and what to do.
#[test]
fn a_damaged_history_stops_the_server_before_it_says_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let srv = Server::start(dir.path(), 0, &["--history-db", db.to_str().unwrap()]);
    let (mut ann, _) = Peer::connect(srv.addr, "ann");
    for i in 0..5 {
        ann.chat(Recipient::Everyone, &format!("ann {i}"));
    }
    ann.until("acks", |p| p.unacked.is_empty());
    assert_eq!(srv.stop(), Some(0));
    let file = rusqlite::Connection::open(&db).unwrap();
    let cut = file
        .execute("UPDATE batches SET entries = substr(entries, 1, 3)", [])
        .unwrap();
    assert!(cut > 0, "no batch to damage");
    drop(file);
    let (status, out, err) = start_refused(dir.path(), &db);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(!out.contains("listening"), "{out}");
    let err = err.trim_end();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.starts_with(&format!(
            "imchat-server: cannot read the history database '{}': ",
            db.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("restore a copy of it, or move it aside"),
        "{err}"
    );
}

#[test]
fn guessing_a_resume_token_is_cut_off_after_five_tries_and_leaves_the_session_alone_and_resumable()
{
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), 0, &[]);
    let (mut ann, _) = Peer::connect(srv.addr, "ann");
    let mut answers = Vec::new();
    for guess in 0..6u8 {
        let mut p = Peer::raw(srv.addr, "ann");
        p.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: ann.name.clone(),
            resume: Some(ResumeRequest {
                token: ResumeToken([guess; 16]),
                last_seen: MessageId(0),
                epoch: ann.epoch,
            }),
        });
        let refused = p.wait_for(|m| matches!(m, ServerMessage::Refused { .. }));
        if let ServerMessage::Refused { code, .. } = refused {
            answers.push(code);
        }
    }
    let mut want = vec![RefuseCode::NAME_TAKEN; 5];
    want.push(RefuseCode::TOO_MANY_ATTEMPTS);
    assert_eq!(answers, want);
    // Ann was never disturbed: her connection works, her token too.
    ann.chat(Recipient::Everyone, "still here");
    ann.until("the ack", |p| p.unacked.is_empty());
    assert!(ann.pending.is_empty(), "{:?}", ann.pending);
    // The guesses came from her address (all of this is 127.0.0.1): her
    // real token still resumes her, within the window that refuses them.
    let welcome = ann.resume(srv.addr);
    let ServerMessage::Welcome { resumed, .. } = welcome else {
        unreachable!("hello waits for a welcome");
    };
    assert!(resumed.is_some(), "ann was not resumed: {welcome:?}");
    ann.chat(Recipient::Everyone, "resumed");
    ann.until("the ack after resuming", |p| p.unacked.is_empty());
    let _ = srv.stop();
}

/// Eight users behind one address (here 127.0.0.1) lose their connections
/// for longer than the grace: all eight come back with their stale tokens
/// and join afresh. Before, the expired sessions counted as failed resume
/// attempts of the address, and the sixth and later were refused with
/// "too many failed resume attempts".
/// `m` says that `name` is away (`Some(true)`) or back (`Some(false)`).
fn away_or_back(m: &ServerMessage, name: &str) -> Option<bool> {
    match m {
        ServerMessage::Presence(events) => match &events[..] {
            [PresenceEvent::Away { user, .. }] if user.as_str() == name => Some(true),
            [PresenceEvent::Back { user, .. }] if user.as_str() == name => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A member is told when another user's connection is lost (away) and
/// when that user resumes its session (back): no leave, no join, and the
/// user itself is told neither.
#[test]
fn members_are_told_when_a_user_is_away_and_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), 0, &[]);
    let (mut alice, _) = Peer::connect(srv.addr, "alice");
    let (mut bob, _) = Peer::connect(srv.addr, "bob");
    alice.until("bob's join", |p| p.presence.len() == 1);
    bob.stream.shutdown(std::net::Shutdown::Both).unwrap();
    alice.wait_for(|m| away_or_back(m, "bob") == Some(true));
    let welcome = bob.resume(srv.addr);
    assert!(resumed(&welcome), "{welcome:?}");
    alice.wait_for(|m| away_or_back(m, "bob") == Some(false));
    // Once bob has alice's line, anything sent him before it came first.
    alice.chat(Recipient::Everyone, "hello");
    bob.until("alice's line", |p| p.texts_from("alice") == ["hello"]);
    assert!(
        !bob.pending.iter().any(|m| away_or_back(m, "bob").is_some()),
        "{:?}",
        bob.pending
    );
    assert_eq!(
        alice.presence.len(),
        1,
        "only bob's join: {:?}",
        alice.presence
    );
    let _ = srv.stop();
}

#[test]
fn users_behind_one_address_all_join_again_after_their_sessions_expired() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), 0, &["--grace-secs", "1"]);
    let mut requests = Vec::new();
    for n in 0..8 {
        let (p, _) = Peer::connect(srv.addr, &format!("u{n}"));
        requests.push(request_of(&p));
        p.stream.shutdown(std::net::Shutdown::Both).unwrap();
    }
    // Past the grace (1 s) and the server's check of it.
    thread::sleep(Duration::from_millis(2500));
    for (n, request) in requests.into_iter().enumerate() {
        let answer = resume_raw(srv.addr, &format!("u{n}"), request);
        assert!(
            matches!(answer, ServerMessage::Welcome { resumed: None, .. }),
            "u{n}: {answer:?}"
        );
    }
    let _ = srv.stop();
}

/// Asks to resume `request`'s session of `name` on a connection of its
/// own, and reads the answer (a `Welcome` or a refusal), which the caller
/// may treat as lost.
fn resume_raw(addr: SocketAddr, name: &str, request: ResumeRequest) -> ServerMessage {
    let mut p = Peer::raw(addr, name);
    p.send(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        username: p.name.clone(),
        resume: Some(request),
    });
    p.wait_for(|m| {
        matches!(
            m,
            ServerMessage::Welcome { .. } | ServerMessage::Refused { .. }
        )
    })
}

/// Whether `m` is the `Welcome` of a resumed session.
fn resumed(m: &ServerMessage) -> bool {
    matches!(
        m,
        ServerMessage::Welcome {
            resumed: Some(_),
            ..
        }
    )
}

/// The resume request `p`'s client would make now.
fn request_of(p: &Peer) -> ResumeRequest {
    ResumeRequest {
        token: p.token,
        last_seen: p.last_seen,
        epoch: p.epoch,
    }
}

/// The same with `--history-db` and the server restarted between the
/// lost answer and the retry (stopped, or killed): the store keeps the
/// token the resume presented as well as the new one, so the retry
/// resumes the session the restarted server took back.
#[test]
fn a_resume_whose_answer_was_lost_is_tried_again_after_a_restart() {
    for crash in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        let db_arg = db.to_str().unwrap();
        let args = ["--history-db", db_arg, "--grace-secs", "60"];
        let srv = Server::start(dir.path(), 0, &args);
        let (mut ann, _) = Peer::connect(srv.addr, "ann");
        ann.chat(Recipient::Everyone, "before");
        ann.until("the ack", |p| p.unacked.is_empty());
        let lost = resume_raw(srv.addr, "ann", request_of(&ann));
        assert!(resumed(&lost), "{lost:?}");
        if crash {
            srv.crash();
        } else {
            srv.stop();
        }
        let srv = Server::start(dir.path(), 0, &args);
        let welcome = ann.resume(srv.addr);
        assert!(
            resumed(&welcome),
            "ann was not resumed after a {}: {welcome:?}",
            if crash { "crash" } else { "stop" }
        );
        ann.chat(Recipient::Everyone, "after");
        ann.until("the ack after resuming", |p| p.unacked.is_empty());
        let _ = srv.stop();
    }
}

/// A resume whose answer never reaches its client (the connection is cut
/// just after the server sent its `Welcome`, with the new token) is tried
/// again with the token the client has, and takes the session back: the
/// session is not locked away from its own client for its grace period.
/// Once the resumed client has said something, the old token is spent.
#[test]
fn a_resume_whose_answer_was_lost_is_tried_again_and_takes_the_session_back() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), 0, &[]);
    let (mut ann, _) = Peer::connect(srv.addr, "ann");
    let old = request_of(&ann);
    // Answered, and cut before the client read it.
    let lost = resume_raw(srv.addr, "ann", old);
    assert!(resumed(&lost), "{lost:?}");
    // The client, still holding the old token, tries again.
    let welcome = ann.resume(srv.addr);
    assert!(resumed(&welcome), "ann was not resumed: {welcome:?}");
    ann.chat(Recipient::Everyone, "back");
    ann.until("the ack after resuming", |p| p.unacked.is_empty());
    // Her client has the new token now: a replay of the old one is refused.
    let replayed = resume_raw(srv.addr, "ann", old);
    assert!(
        matches!(replayed, ServerMessage::Refused { code, .. } if code == RefuseCode::NAME_TAKEN),
        "{replayed:?}"
    );
    ann.chat(Recipient::Everyone, "still mine");
    ann.until("the ack after the replay", |p| p.unacked.is_empty());
    let _ = srv.stop();
}
