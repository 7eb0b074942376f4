//! Session tests: a Hub and N client sessions pumped in memory, through the
//! real encoder and decoder, with a virtual clock and a bounded step count.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::codec::{Decoder, Encode};
use crate::error::UsageError;
use crate::limits::{Limits, MAX_PRESENCE_BYTES, MAX_PRESENCE_EVENTS, PRESENCE_DELAY};
use crate::message::*;

/// An in-memory network: every message goes through encode and decode.
struct Net {
    hub: Hub,
    clients: Vec<(ClientId, ClientSession)>,
    hub_events: Vec<HubEvent>,
    events: Vec<Vec<ClientEvent>>,
    closed: Vec<ClientId>,
    now: Instant,
    /// Files the "server glue" answers with.
    files: Vec<FileEntry>,
    /// Nothing moved in the last step of [`Net::pump`].
    quiet: bool,
}

/// A connected user of a `Who` answer.
fn here(s: &str) -> crate::OnlineUser {
    crate::OnlineUser::here(user(s))
}

fn user(s: &str) -> Username {
    Username::new(s).unwrap()
}

fn through_wire<M: Encode, N: crate::codec::Decode>(m: &M) -> N {
    let mut d = Decoder::<N>::new(crate::limits::DEFAULT_MAX_FRAME);
    d.feed(&m.to_frame());
    d.next_message().unwrap().unwrap()
}

impl Net {
    fn new(limits: Limits) -> Self {
        Net {
            hub: Hub::new(limits, "Welcome, {user}!"),
            clients: Vec::new(),
            hub_events: Vec::new(),
            events: Vec::new(),
            closed: Vec::new(),
            now: Instant::now(),
            files: Vec::new(),
            quiet: false,
        }
    }

    fn connect(&mut self, name: &str) -> usize {
        self.connect_with(name, Limits::default())
    }

    fn connect_with(&mut self, name: &str, limits: Limits) -> usize {
        let id = self.hub.handle_connect(self.now);
        let s = ClientSession::new(user(name), limits, self.now);
        self.clients.push((id, s));
        self.events.push(Vec::new());
        self.pump();
        self.clients.len() - 1
    }

    /// As [`Net::connect`], for a connection from address `peer`.
    fn connect_from(&mut self, name: &str, peer: std::net::IpAddr) -> usize {
        let id = self.hub.handle_connect_from(peer, self.now);
        let s = ClientSession::new(user(name), Limits::default(), self.now);
        self.clients.push((id, s));
        self.events.push(Vec::new());
        self.pump();
        self.clients.len() - 1
    }

    fn idx(&self, id: ClientId) -> Option<usize> {
        self.clients.iter().position(|(c, _)| *c == id)
    }

    /// Moves messages until nothing is left to move (at most 10,000
    /// steps). Batched joins and leaves are sent once all else has settled,
    /// as a server's timer would.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            if self.hub.pending_presence() > 0 && self.quiet {
                self.hub.flush_presence();
            }
            for i in 0..self.clients.len() {
                let (id, s) = &mut self.clients[i];
                let id = *id;
                while let Some(m) = s.poll_transmit() {
                    moved = true;
                    if !self.closed.contains(&id) {
                        self.hub.handle_message(id, through_wire(&m), self.now);
                    }
                }
                while let Some(e) = self.clients[i].1.poll_event() {
                    self.events[i].push(e);
                }
            }
            // As a server does after each batch it read.
            self.hub.commit_history(self.now);
            while let Some(t) = self.hub.poll_transmit() {
                moved = true;
                for to in t.to.iter() {
                    if let Some(i) = self.idx(to) {
                        if !self.closed.contains(&to) {
                            let m: ServerMessage = through_wire(&t.message);
                            self.clients[i].1.handle_message(m, self.now);
                        }
                    }
                }
            }
            while let Some(e) = self.hub.poll_event() {
                moved = true;
                match &e {
                    HubEvent::Close { client, .. } => self.closed.push(*client),
                    HubEvent::FilesRequested { client, request } => {
                        self.hub.answer_files(*client, *request, self.files.clone());
                    }
                    _ => {}
                }
                self.hub_events.push(e);
            }
            self.hub.check_invariants().unwrap();
            self.quiet = !moved;
            if !moved && self.hub.pending_presence() == 0 {
                return;
            }
        }
        panic!("the network did not settle in 10,000 steps");
    }

    /// Hands a message straight to client `i`, as if the server sent it.
    fn deliver(&mut self, i: usize, m: ServerMessage) {
        let now = self.now;
        self.clients[i].1.handle_message(m, now);
    }

    fn s(&mut self, i: usize) -> &mut ClientSession {
        &mut self.clients[i].1
    }

    fn take(&mut self, i: usize) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events[i])
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.hub.handle_timeout(self.now);
        for (_, s) in &mut self.clients {
            s.handle_timeout(self.now);
        }
        self.pump();
    }
}

/// The events with the log ids and times of leaves zeroed, for tests that
/// are about who left and why.
fn unstamped(events: Vec<ClientEvent>) -> Vec<ClientEvent> {
    events
        .into_iter()
        .map(|e| match e {
            ClientEvent::Left(d) => ClientEvent::Left(crate::Departure {
                id: MessageId(0),
                time: Timestamp(0),
                ..d
            }),
            other => other,
        })
        .collect()
}

fn chats(events: &[ClientEvent]) -> Vec<(String, bool, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(crate::RoutedChat {
                from,
                private,
                text,
                ..
            }) => Some((from.to_string(), *private, text.clone())),
            _ => None,
        })
        .collect()
}

fn three() -> Net {
    let mut net = Net::new(Limits::default());
    for n in ["alice", "bob", "carol"] {
        net.connect(n);
    }
    for i in 0..3 {
        net.take(i);
    }
    net
}

/// Connection `id` says Hello with a protocol `version` and a name.
fn hello_version(hub: &mut Hub, id: ClientId, version: u16, name: &str, now: Instant) {
    hub.handle_message(
        id,
        ClientMessage::Hello {
            resume: None,
            version,
            username: user(name),
        },
        now,
    );
}

/// Connection `id` says Hello with our protocol version.
fn hello(hub: &mut Hub, id: ClientId, name: &str, now: Instant) {
    hello_version(hub, id, PROTOCOL_VERSION, name, now);
}

/// A new connection to `hub` that has said Hello as `name`.
fn joined(hub: &mut Hub, name: &str, now: Instant) -> ClientId {
    let id = hub.handle_connect(now);
    hello(hub, id, name, now);
    id
}

/// A plain chat message to everyone, as a client sends it.
fn chat_to_all(text: &str) -> ClientMessage {
    ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: text.into(),
    }
}

/// `n` shared files, named by `name(i)`, of `i` bytes each.
fn entries(n: u64, name: impl Fn(u64) -> String) -> Vec<FileEntry> {
    (0..n)
        .map(|i| FileEntry {
            name: FileName::new(name(i)).unwrap(),
            size: i,
        })
        .collect()
}

/// Alice (client 0) asks for `name` (resuming from `held`, if any), and the
/// glue accepts it as `size` bytes long; the offset the hub starts at is checked.
fn start_download(
    net: &mut Net,
    name: &str,
    size: u64,
    held: Option<crate::ResumeState>,
) -> TransferId {
    let name = FileName::new(name).unwrap();
    let id = net.s(0).download(name.clone(), held).unwrap();
    net.pump();
    let alice = net.clients[0].0;
    let offset = net
        .hub_events
        .iter()
        .find_map(|e| match e {
            HubEvent::DownloadRequested { id: i, offset, .. } if *i == id => Some(*offset),
            _ => None,
        })
        .expect("the hub reports the request");
    assert_eq!(
        net.hub.accept_download(alice, id, name, size, offset),
        Some(offset)
    );
    net.pump();
    id
}

/// The glue sends `data` (a file of `size` bytes) to client 0 from `offset`,
/// then the end of the file, the way it streams with `Outgoing`.
fn serve(net: &mut Net, id: TransferId, size: u64, file: &[u8], offset: usize) {
    let mut out = crate::Outgoing::new(id, size);
    out.skip(&file[..offset]).unwrap();
    let chunk = out.next_chunk(file[offset..].to_vec()).unwrap();
    net.deliver(0, ServerMessage::Chunk(chunk));
    net.deliver(0, ServerMessage::End(out.finish().unwrap()));
    net.pump();
}

#[test]
fn joining_welcomes_with_the_name_and_tells_the_others() {
    let mut net = Net::new(Limits::default());
    let a = net.connect("alice");
    assert_eq!(
        net.take(a),
        vec![ClientEvent::Welcome {
            username: user("alice"),
            text: "Welcome, alice!".into(),
            limits: net.hub.server_limits(),
        }]
    );
    // The join is stamped with the server's clock, as a chat is.
    net.hub.set_wall_clock(net.now, 1_796_051_045_000);
    net.advance(Duration::from_secs(5));
    let b = net.connect("bob");
    assert_eq!(
        net.take(a),
        vec![ClientEvent::Joined {
            id: MessageId(2),
            time: Timestamp(1_796_051_050_000),
            user: user("bob")
        }]
    );
    assert!(matches!(net.take(b)[..], [ClientEvent::Welcome { .. }]));
    assert!(net.s(a).is_joined());
}

#[test]
fn broadcast_reaches_every_other_member_but_not_the_sender() {
    let mut net = three();
    net.s(0).send_chat(Recipient::Everyone, "hi all").unwrap();
    net.pump();
    assert!(chats(&net.take(0)).is_empty());
    for i in [1, 2] {
        assert_eq!(
            chats(&net.take(i)),
            vec![("alice".into(), false, "hi all".into())]
        );
    }
}

/// Asked for, the server's acknowledgement of each chat message is
/// handed out; a refused one gets its error, no acknowledgement.
#[test]
fn acknowledgements_are_reported_when_asked_for() {
    let mut net = three();
    net.s(0).set_report_acks(true);
    let to_bob = net
        .s(0)
        .send_chat(Recipient::User(user("bob")), "psst")
        .unwrap();
    net.pump();
    assert!(matches!(
        &net.take(0)[..],
        [ClientEvent::Acknowledged { client_id }] if *client_id == to_bob
    ));
    let to_zed = net
        .s(0)
        .send_chat(Recipient::User(user("zed")), "hello?")
        .unwrap();
    net.pump();
    assert!(matches!(
        &net.take(0)[..],
        [ClientEvent::Error { code: ErrorCode::UNKNOWN_USER, client_id, .. }] if *client_id == to_zed
    ));
    // Not asked for: none (as in the test below).
    net.s(0).set_report_acks(false);
    net.s(0).send_chat(Recipient::Everyone, "hi").unwrap();
    net.pump();
    assert!(net.take(0).is_empty());
}

#[test]
fn unicast_reaches_only_its_target_and_unknown_users_get_an_error() {
    let mut net = three();
    net.s(0)
        .send_chat(Recipient::User(user("BOB")), "psst")
        .unwrap();
    net.pump();
    assert_eq!(
        chats(&net.take(1)),
        vec![("alice".into(), true, "psst".into())]
    );
    assert!(chats(&net.take(2)).is_empty());
    let first = net.s(0).send_chat(Recipient::Everyone, "hi").unwrap();
    let id = net
        .s(0)
        .send_chat(Recipient::User(user("zed")), "hello?")
        .unwrap();
    assert_eq!(id, first + 1);
    net.pump();
    // The error names the message it refuses by the id send_chat gave.
    assert!(matches!(
        &net.take(0)[..],
        [ClientEvent::Error {
            code: ErrorCode::UNKNOWN_USER,
            client_id,
            ..
        }] if *client_id == id
    ));
}

#[test]
fn an_empty_text_is_sent_and_routed_like_any_other() {
    let mut net = three();
    net.s(0).send_chat(Recipient::Everyone, "").unwrap();
    net.s(0)
        .send_chat(Recipient::User(user("carol")), "")
        .unwrap();
    net.pump();
    assert_eq!(
        chats(&net.take(1)),
        vec![("alice".into(), false, "".into())]
    );
    assert_eq!(
        chats(&net.take(2)),
        vec![
            ("alice".into(), false, "".into()),
            ("alice".into(), true, "".into())
        ]
    );
}

#[test]
fn who_lists_everyone_sorted() {
    let mut net = three();
    net.s(2).who().unwrap();
    net.pump();
    assert_eq!(
        net.take(2),
        vec![ClientEvent::Who {
            users: vec![here("alice"), here("bob"), here("carol")]
        }]
    );
}

/// `Who` lists names as people read them: numbers in order (`u2` before
/// `u10`), case ignored; and a client lists them so whatever order its
/// server sent (an older one sorted `u10` before `u2`).
#[test]
fn who_lists_numbered_names_in_natural_order() {
    let mut net = Net::new(Limits::default());
    for n in ["u10", "u2", "U11", "u1", "bob"] {
        net.connect(n);
    }
    for i in 0..5 {
        net.take(i);
    }
    let order = ["bob", "u1", "u2", "u10", "U11"];
    // The server's answer itself, as any client reads it.
    let now = net.now;
    let bob = net.clients[4].0;
    net.hub.handle_message(bob, ClientMessage::Who, now);
    let answer = std::iter::from_fn(|| net.hub.poll_transmit())
        .take(100)
        .find_map(|t| match t.message {
            ServerMessage::Who { users } => Some(users),
            _ => None,
        });
    assert_eq!(answer, Some(order.into_iter().map(here).collect()));
    // The operator's console lists them in the same order.
    assert_eq!(
        net.hub.console("who", now),
        "5 online: bob (?), u1 (?), u2 (?), u10 (?), U11 (?)"
    );
    let mut s = ClientSession::new(user("bob"), Limits::default(), now);
    s.handle_message(paced_welcome("bob", false), now);
    while s.poll_event().is_some() {}
    s.who().unwrap();
    let sent = ["u10", "U11", "bob", "u2", "u1"];
    s.handle_message(
        ServerMessage::Who {
            users: sent.into_iter().map(here).collect(),
        },
        now,
    );
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Who {
            users: order.into_iter().map(here).collect()
        })
    );
}

#[test]
fn names_are_unique_ignoring_case_and_freed_on_leave() {
    let mut net = Net::new(Limits::default());
    net.connect("alice");
    let dup = net.connect("ALICE");
    assert!(matches!(
        &net.take(dup)[..],
        [ClientEvent::Refused {
            code: RefuseCode::NAME_TAKEN,
            ..
        }]
    ));
    assert!(net.s(dup).is_closed());
    net.s(0).quit("");
    net.pump();
    let again = net.connect("Alice");
    assert!(matches!(
        &net.take(again)[..],
        [ClientEvent::Welcome { .. }]
    ));
}

#[test]
fn nothing_but_the_handshake_is_accepted_first() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let c = hub.handle_connect(now);
    hub.handle_message(c, ClientMessage::Who, now);
    let t = hub.poll_transmit().unwrap();
    assert!(matches!(
        t.message,
        ServerMessage::Refused {
            code: RefuseCode::HANDSHAKE_REQUIRED,
            ..
        }
    ));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Violation { .. })));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Close { client, .. }) if client == c));
    assert_eq!(hub.connections(), 0);
}

/// A wrong server password is a refused login, not a broken rule.
#[test]
fn a_wrong_server_password_is_a_refused_login_not_a_violation() {
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_server_password(Secret::new("sesame".to_string()));
    let now = Instant::now();
    let c = hub.handle_connect(now);
    hub.handle_message(
        c,
        ClientMessage::Auth {
            server: Secret::new("sesam".to_string()),
            account: None,
        },
        now,
    );
    hub.handle_message(
        c,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: Username::new("alice").unwrap(),
            resume: None,
        },
        now,
    );
    let mut events = Vec::new();
    while let Some(e) = hub.poll_event() {
        events.push(e);
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, HubEvent::Violation { .. })),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e,
            HubEvent::LoginRefused { client, user, reason }
                if *client == c && user.as_str() == "alice" && reason == "wrong server password")),
        "{events:?}"
    );
}

#[test]
fn a_wrong_protocol_version_is_refused_naming_ours() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let c = hub.handle_connect(now);
    hello_version(&mut hub, c, 99, "x", now);
    match hub.poll_transmit().unwrap().message {
        ServerMessage::Refused { code, version, .. } => {
            assert_eq!(code, RefuseCode::VERSION_MISMATCH);
            assert_eq!(version, PROTOCOL_VERSION);
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn the_handshake_frame_limit_is_lower_until_joined() {
    let mut net = Net::new(Limits::default());
    let c = net.hub.handle_connect(net.now);
    assert_eq!(net.hub.max_frame(c), Limits::default().max_handshake_frame);
    let a = net.connect("alice");
    let id = net.clients[a].0;
    assert_eq!(net.hub.max_frame(id), Limits::default().max_frame);
}

#[test]
fn leaving_is_announced_with_the_reason() {
    let mut net = three();
    net.s(1).quit("");
    net.pump();
    let bob = user("bob");
    assert_eq!(
        unstamped(net.take(0)),
        vec![ClientEvent::Left(crate::Departure {
            id: crate::MessageId(0),
            time: crate::Timestamp(0),
            user: bob.clone(),
            reason: LeaveReason::QUIT,
            text: String::new(),
        })]
    );
    let carol = net.clients[2].0;
    net.hub.handle_disconnect(carol, LeaveReason::LOST);
    net.hub.handle_disconnect(carol, LeaveReason::LOST); // idempotent
    net.pump();
    assert_eq!(
        unstamped(net.take(0)),
        vec![ClientEvent::Left(crate::Departure {
            id: crate::MessageId(0),
            time: crate::Timestamp(0),
            user: user("carol"),
            reason: LeaveReason::LOST,
            text: String::new(),
        })]
    );
}

#[test]
fn a_slow_handshake_is_refused_after_the_deadline() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let c = hub.handle_connect(t0);
    assert_eq!(hub.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    hub.handle_timeout(t0 + Duration::from_secs(9));
    assert!(hub.poll_transmit().is_none());
    hub.handle_timeout(t0 + Duration::from_secs(10));
    assert!(matches!(
        hub.poll_transmit().unwrap().message,
        ServerMessage::Refused {
            code: RefuseCode::HANDSHAKE_TIMEOUT,
            ..
        }
    ));
    assert!(matches!(hub.poll_event(), Some(HubEvent::Close { client, .. }) if client == c));
}

/// The Close reason of `c`, the next event about it.
fn close_reason(hub: &mut Hub, c: ClientId) -> String {
    while let Some(e) = hub.poll_event() {
        if let HubEvent::Close { client, reason } = e {
            if client == c {
                return reason;
            }
        }
    }
    panic!("no Close for {c:?}");
}

#[test]
fn a_late_handshake_is_said_to_be_the_transports_while_it_runs() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let (tls, done, plain) = (
        hub.handle_connect(t0),
        hub.handle_connect(t0),
        hub.handle_connect(t0),
    );
    hub.set_transport_pending(tls, true);
    hub.set_transport_pending(done, true);
    hub.set_transport_pending(done, false);
    hub.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        close_reason(&mut hub, tls),
        "refused: TLS handshake not finished within 10 s"
    );
    // Its TLS done (or none), a client that sent no Hello is told so.
    for c in [done, plain] {
        assert_eq!(
            close_reason(&mut hub, c),
            "refused: no valid username within 10 s"
        );
    }
}

#[test]
fn a_transport_failure_is_the_close_reason() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let c = hub.handle_connect(t0);
    hub.handle_transport_failure(c, "not TLS: the client spoke plaintext to a TLS port");
    assert_eq!(
        close_reason(&mut hub, c),
        "not TLS: the client spoke plaintext to a TLS port"
    );
    assert!(!hub.is_connected(c));
    // Once gone, nothing more.
    hub.handle_transport_failure(c, "again");
    assert!(hub.poll_event().is_none());
}

#[test]
fn a_silent_peer_is_pinged_then_dropped() {
    let mut net = three();
    // Carol stops answering: mark her closed so nothing reaches her.
    let carol = net.clients[2].0;
    net.closed.push(carol);
    net.advance(Duration::from_secs(30));
    // alice and bob answered the pings; carol did not.
    net.advance(Duration::from_secs(30));
    let left: Vec<_> = unstamped(net.take(0))
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Left(crate::Departure { .. })))
        .collect();
    assert_eq!(
        left,
        vec![ClientEvent::Left(crate::Departure {
            id: crate::MessageId(0),
            time: crate::Timestamp(0),
            user: user("carol"),
            reason: LeaveReason::TIMEOUT,
            text: String::new(),
        })]
    );
    assert!(net.hub.username(net.clients[0].0).is_some());
}

/// Bytes of a frame still coming in keep a joined peer alive (no ping
/// goes unanswered into a timeout while they do), but not a handshake:
/// its deadline is the whole handshake's. Once the bytes stop, the peer
/// is pinged and dropped as any silent one.
#[test]
fn bytes_still_coming_keep_a_peer_alive_but_not_a_handshake() {
    let limits = Limits {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut hub = Hub::new(limits, "hi");
    let t0 = Instant::now();
    let slow = joined(&mut hub, "slow", t0);
    let hello = hub.handle_connect(t0);
    let mut now = t0;
    for _ in 0..20 {
        now += Duration::from_millis(500);
        hub.handle_bytes(slow, now);
        hub.handle_bytes(hello, now);
        hub.handle_timeout(now);
    }
    assert!(hub.is_joined(slow), "dropped while its bytes came in");
    assert!(
        !hub.is_connected(hello),
        "a trickled handshake outlived its deadline"
    );
    // Silence: a ping after 1 s, dropped 1 s later.
    hub.handle_timeout(now + Duration::from_millis(1100));
    assert!(hub.is_joined(slow));
    hub.handle_timeout(now + Duration::from_millis(2200));
    assert!(!hub.is_connected(slow), "a silent peer is still dropped");
    // Told whose silence it was, for when it reads it at last.
    let told: Vec<String> = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.iter().any(|to| to == slow))
        .filter_map(|t| match t.message {
            ServerMessage::Error {
                code: ErrorCode::TIMEOUT,
                text,
                ..
            } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        ["your client did not answer the server's keepalive within 1 s: the server closed the connection"]
    );
}

/// The same on the client's side: bytes of a long frame still coming
/// from the server keep it from being taken for dead; silence does not.
#[test]
fn a_client_hearing_bytes_of_a_frame_does_not_time_the_server_out() {
    let limits = Limits {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let mut now = Instant::now();
    let mut s = ClientSession::new(user("bot"), limits, now);
    s.handle_message(paced_welcome("bot", false), now);
    for _ in 0..20 {
        now += Duration::from_millis(500);
        s.handle_bytes(now);
        s.handle_timeout(now);
    }
    assert!(s.is_joined(), "timed out while bytes came");
    now += Duration::from_millis(1100);
    s.handle_timeout(now);
    now += Duration::from_millis(1100);
    s.handle_timeout(now);
    let events: Vec<ClientEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.contains(&ClientEvent::TimedOut), "{events:?}");
}

#[test]
fn a_client_notices_a_dead_server() {
    let t0 = Instant::now();
    let mut s = ClientSession::new(user("ann"), Limits::default(), t0);
    s.poll_transmit();
    s.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(s.poll_transmit(), Some(ClientMessage::Ping(1)));
    s.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(s.poll_event(), Some(ClientEvent::TimedOut));
    assert!(s.is_closed());
}

#[test]
fn the_server_full_refuses_one_over_the_limit() {
    let limits = Limits {
        max_clients: 2,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    net.connect("a1");
    net.connect("a2");
    let third = net.connect("a3");
    assert!(matches!(
        &net.take(third)[..],
        [ClientEvent::Refused {
            code: RefuseCode::SERVER_FULL,
            ..
        }]
    ));
    assert_eq!(net.hub.connections(), 2);
}

#[test]
fn over_long_text_is_refused_and_the_connection_kept() {
    let mut net = three();
    let long = "x".repeat(Limits::default().max_text + 1);
    // The session refuses it locally...
    assert!(matches!(
        net.s(0).send_chat(Recipient::Everyone, &long),
        Err(crate::UsageError::TextTooLong { .. })
    ));
    // ...and the hub refuses it from a peer that sends it anyway.
    let alice = net.clients[0].0;
    net.hub.handle_message(alice, chat_to_all(&long), net.now);
    net.pump();
    assert!(matches!(
        &net.take(0)[..],
        [ClientEvent::Error {
            code: ErrorCode::TEXT_TOO_LONG,
            ..
        }]
    ));
    assert!(chats(&net.take(1)).is_empty());
    assert!(net.hub.is_joined(alice));
}

#[test]
fn senders_over_the_rate_are_slowed_then_cut_off_after_a_long_flood() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let c = joined(&mut hub, "flood", t0);
    let chat = || chat_to_all("x");
    for _ in 0..100 {
        hub.handle_message(c, chat(), t0);
    }
    assert_eq!(hub.throttle(c), None, "a burst of 100 is free");
    hub.handle_message(c, chat(), t0);
    let wait = hub.throttle(c).expect("the 101st message slows the reader");
    assert!(wait > t0 && wait <= t0 + Duration::from_millis(40));
    // The reader obeys the throttle: one message every 20 ms, for 11 s.
    let mut now = t0;
    let mut kicked = false;
    for _ in 0..600 {
        now = hub.throttle(c).unwrap_or(now);
        hub.handle_message(c, chat(), now);
        while let Some(e) = hub.poll_event() {
            if let HubEvent::Close { client, .. } = e {
                assert_eq!(client, c);
                kicked = true;
            }
        }
        if kicked {
            break;
        }
    }
    assert!(kicked, "a flood that keeps going is cut off");
    let secs = now.duration_since(t0).as_secs_f64();
    assert!((10.0..11.0).contains(&secs), "cut off after {secs} s");
}

/// Answers that cost more than the flood timeout's worth of the rate (a
/// list of thousands of files) slow the client that asks for them again
/// and again, and never cut it off: it waits for each answer, it is not
/// flooding. A flood of chat after them still is cut off.
#[test]
fn long_answers_asked_for_again_slow_the_client_but_never_cut_it_off() {
    let limits = Limits {
        rate_burst: 5,
        rate_per_sec: 10,
        flood_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut hub = Hub::new(limits.clone(), "hi");
    let t0 = Instant::now();
    let c = joined(&mut hub, "ann", t0);
    // 3,000 files: 31 messages, 3 s of debt, more than the flood timeout.
    let files = entries(3000, |i| format!("f{i}"));
    let mut now = t0;
    for _ in 0..6 {
        now = hub.throttle(c).unwrap_or(now);
        hub.handle_message(c, ClientMessage::ListFiles, now);
        while let Some(e) = hub.poll_event() {
            assert!(!matches!(e, HubEvent::Close { .. }), "cut off: {e:?}");
        }
        hub.answer_files(c, FilesRequest::List, files.clone());
    }
    assert!(hub.is_joined(c));
    assert!(now >= t0 + Duration::from_secs(8), "not slowed: {now:?}");
    // A flood is a flood, lists before it or not.
    let mut kicked = false;
    for _ in 0..200 {
        now = hub.throttle(c).unwrap_or(now);
        hub.handle_message(c, chat_to_all("x"), now);
        while let Some(e) = hub.poll_event() {
            kicked |= matches!(e, HubEvent::Close { .. });
        }
        if kicked {
            break;
        }
    }
    assert!(kicked, "a chat flood after the lists is cut off");

    // The same for the list of users: 3,000 online.
    let mut hub = Hub::new(
        Limits {
            max_clients: 4000,
            ..limits
        },
        "hi",
    );
    let c = joined(&mut hub, "ann", t0);
    for i in 0..3000 {
        joined(&mut hub, &format!("u{i}"), t0);
    }
    let mut now = t0;
    for _ in 0..6 {
        now = hub.throttle(c).unwrap_or(now);
        hub.handle_message(c, ClientMessage::Who, now);
        while let Some(e) = hub.poll_event() {
            assert!(
                !matches!(e, HubEvent::Close { client, .. } if client == c),
                "cut off: {e:?}"
            );
        }
    }
    assert!(hub.is_joined(c));
    assert!(now >= t0 + Duration::from_secs(8), "not slowed: {now:?}");
}

/// One `/files` of a folder so big that each of its two answers (the
/// access's count, then the list, which the client asks once the count
/// came) costs a little less than the flood timeout's worth of the rate,
/// and the two together more, then one line of chat and the client's
/// last ping before it quits, each read when the reader is let go: slowed
/// while the debt is paid, never cut off as a flood. (40,000 files: 401
/// messages each, 8 s of the default rate.)
#[test]
fn one_files_command_of_a_big_folder_then_chat_is_not_a_flood() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let c = joined(&mut hub, "ann", t0);
    let files = entries(40_000, |i| format!("file-{i:06}.txt"));
    let mut now = t0;
    let mut until = None;
    let steps = [
        (ClientMessage::FilesAccess, Some(FilesRequest::Access)),
        (ClientMessage::ListFiles, Some(FilesRequest::List)),
        (chat_to_all("thanks"), None),
        (ClientMessage::Ping(7), None),
    ];
    for (msg, request) in steps {
        // As the server's reader: the client sent them all at once; each
        // is read when the wait the hub gave after the last one is over.
        now = until.take().unwrap_or(now).max(now);
        hub.handle_message(c, msg, now);
        while let Some(e) = hub.poll_event() {
            assert!(
                !matches!(e, HubEvent::Close { client, .. } if client == c),
                "cut off after {:?}: {e:?}",
                now.duration_since(t0)
            );
        }
        // Asked before the work of the request is done.
        until = hub.throttle(c);
        if let Some(request) = request {
            // The server lists the folder (2 s), then reads on.
            now += Duration::from_secs(2);
            hub.handle_timeout(now);
            hub.answer_files(c, request, files.clone());
        }
        while hub.poll_transmit().is_some() {}
    }
    assert!(hub.is_joined(c));
}

/// Asking again and again, as fast as the reader is let go, for answers
/// that cost more than the rate but less than the flood timeout's worth
/// of it (the list, or the count, of 5,000 files: a second of the rate)
/// is going over the rate: it is cut off after the flood timeout, as a
/// flood of any other request is.
#[test]
fn asking_for_the_shared_files_again_and_again_is_a_flood() {
    let files = entries(5000, |i| format!("f{i}"));
    for (msg, request) in [
        (ClientMessage::ListFiles, FilesRequest::List),
        (ClientMessage::FilesAccess, FilesRequest::Access),
    ] {
        let mut hub = Hub::new(Limits::default(), "hi");
        let t0 = Instant::now();
        let c = joined(&mut hub, "ann", t0);
        let mut now = t0;
        let mut cut = None;
        for _ in 0..100 {
            now = hub.throttle(c).unwrap_or(now);
            hub.handle_message(c, msg.clone(), now);
            let mut asked = false;
            while let Some(e) = hub.poll_event() {
                match e {
                    HubEvent::Close { client, .. } if client == c => cut = Some(now),
                    HubEvent::FilesRequested { .. } => asked = true,
                    _ => {}
                }
            }
            if cut.is_some() {
                break;
            }
            if asked {
                hub.answer_files(c, request, files.clone());
            }
            while hub.poll_transmit().is_some() {}
        }
        let secs = cut
            .unwrap_or_else(|| panic!("{msg:?}: never cut off"))
            .duration_since(t0)
            .as_secs_f64();
        assert!(
            (10.0..12.0).contains(&secs),
            "{msg:?}: cut off after {secs} s"
        );
    }
}

#[test]
fn files_access_and_list_are_answered_by_the_glue() {
    let mut net = three();
    net.files = vec![
        FileEntry {
            name: FileName::new("a.txt").unwrap(),
            size: 3,
        },
        FileEntry {
            name: FileName::new("b.png").unwrap(),
            size: 5_000_000_000,
        },
    ];
    net.s(0).files_access().unwrap();
    net.s(0).list_files().unwrap();
    net.pump();
    assert_eq!(
        net.take(0),
        vec![
            ClientEvent::FilesAccess { count: 2 },
            ClientEvent::FileList(crate::FileListPart {
                files: net.files.clone(),
                last: true,
            })
        ]
    );
}

#[test]
fn a_quiet_file_list_comes_as_names_and_the_lists_keep_their_order() {
    let mut net = Net::new(Limits {
        max_frame: 4096,
        ..Limits::default()
    });
    let a = net.connect("alice");
    net.take(a);
    // Long enough to come in several parts: each part is told as what
    // its own request asked for.
    net.files = entries(60, |i| format!("{i:0>200}"));
    net.s(a).list_files().unwrap();
    net.s(a).fetch_file_names().unwrap();
    net.s(a).list_files().unwrap();
    assert!(!net.s(a).is_settled(), "three lists asked for");
    net.pump();
    let got = net.take(a);
    let kinds: Vec<(&str, bool)> = got
        .iter()
        .map(|e| match e {
            ClientEvent::FileList(p) => ("shown", p.last),
            ClientEvent::FileNames(p) => ("quiet", p.last),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let parts = kinds.len() / 3;
    assert!(parts > 1, "{kinds:?}");
    let expected: Vec<(&str, bool)> = ["shown", "quiet", "shown"]
        .into_iter()
        .flat_map(|k| (1..=parts).map(move |i| (k, i == parts)))
        .collect();
    assert_eq!(kinds, expected);
    assert!(net.s(a).is_settled(), "every list is complete");
}

#[test]
fn a_long_file_list_is_split_into_frames_that_fit() {
    let limits = Limits {
        max_frame: 4096,
        ..Limits::default()
    };
    let mut hub = Hub::new(limits, "hi");
    let now = Instant::now();
    let c = joined(&mut hub, "ann", now);
    while hub.poll_transmit().is_some() {}
    let files = entries(100, |i| format!("{i:0>200}"));
    hub.answer_files(c, FilesRequest::List, files.clone());
    let mut got = Vec::new();
    let mut frames = 0;
    let mut done = false;
    while let Some(t) = hub.poll_transmit() {
        assert!(t.message.to_frame().len() <= 4096 + 4);
        frames += 1;
        if let ServerMessage::FileList(crate::FileListPart { files, last }) = t.message {
            assert!(!done, "a part after the last one");
            done = last;
            got.extend(files);
        }
    }
    assert!(frames > 1);
    assert!(done, "the last part is marked");
    assert_eq!(got, files);
}

#[test]
fn downloads_are_requested_as_events_and_started_by_the_glue() {
    let mut net = three();
    let id = start_download(&mut net, "a.txt", 5, None);
    let alice = net.clients[0].0;
    assert!(net.hub_events.contains(&HubEvent::DownloadRequested {
        client: alice,
        id,
        name: FileName::new("a.txt").unwrap(),
        offset: 0
    }));
    // The glue streams with Outgoing; here the frames go straight to the session.
    serve(&mut net, id, 5, b"hello", 0);
    let ev = net.take(0);
    assert!(matches!(
        ev[0],
        ClientEvent::TransferStarted {
            size: 5,
            offset: 0,
            ..
        }
    ));
    assert_eq!(
        ev[1],
        ClientEvent::TransferData {
            id,
            offset: 0,
            data: b"hello".to_vec()
        }
    );
    assert_eq!(ev[2], ClientEvent::TransferDone { id });
}

#[test]
fn download_data_is_acknowledged_as_handed_out_or_once_stored() {
    for manual in [false, true] {
        let mut net = three();
        net.s(0).set_manual_acks(manual);
        let id = start_download(&mut net, "a.txt", 8, None);
        let alice = net.clients[0].0;
        let mut out = crate::Outgoing::new(id, 8);
        let chunk = out.next_chunk(b"hell".to_vec()).unwrap();
        net.deliver(0, ServerMessage::Chunk(chunk));
        net.pump();
        let acked = |net: &Net| -> Vec<u64> {
            net.hub_events
                .iter()
                .filter_map(|e| match e {
                    HubEvent::DownloadAcked {
                        client,
                        id: i,
                        offset,
                    } if *client == alice && *i == id => Some(*offset),
                    _ => None,
                })
                .collect()
        };
        if manual {
            assert_eq!(acked(&net), Vec::<u64>::new(), "nothing before stored()");
            net.s(0).stored(id, 4);
            net.pump();
            assert_eq!(acked(&net), Vec::<u64>::new(), "4 bytes are held back");
            net.s(0).caught_up();
            net.pump();
        }
        assert_eq!(acked(&net), vec![4], "manual acks: {manual}");
        // Acks for a download the hub no longer runs are dropped quietly.
        net.hub.download_finished(alice, id);
        net.s(0).stored(id, 8);
        net.s(0).caught_up();
        net.pump();
        assert_eq!(acked(&net).len(), 1);
    }
}

#[test]
fn stored_data_is_acknowledged_every_ack_step_and_when_caught_up() {
    let mut net = three();
    net.s(0).set_manual_acks(true);
    let id = start_download(&mut net, "big.bin", 4 * crate::ACK_STEP, None);
    let acks = |net: &mut Net| -> Vec<u64> {
        std::iter::from_fn(|| net.s(0).poll_transmit())
            .filter_map(|m| match m {
                ClientMessage::Ack { id: i, offset } if i == id => Some(offset),
                _ => None,
            })
            .collect()
    };
    let chunk = crate::ACK_STEP / 4;
    net.s(0).stored(id, chunk);
    net.s(0).stored(id, 3 * chunk);
    assert_eq!(acks(&mut net), Vec::<u64>::new(), "under a step: held");
    net.s(0).stored(id, crate::ACK_STEP);
    assert_eq!(acks(&mut net), vec![crate::ACK_STEP], "a whole step: sent");
    net.s(0).stored(id, crate::ACK_STEP + chunk);
    net.s(0).caught_up();
    assert_eq!(acks(&mut net), vec![crate::ACK_STEP + chunk]);
    net.s(0).caught_up();
    assert_eq!(
        acks(&mut net),
        Vec::<u64>::new(),
        "nothing new: nothing sent"
    );
    // An offset going backwards never lowers what was acknowledged.
    net.s(0).stored(id, chunk);
    net.s(0).caught_up();
    assert_eq!(acks(&mut net), Vec::<u64>::new());
    // A cancelled download has nothing to acknowledge any more.
    net.s(0).stored(id, 2 * crate::ACK_STEP - 1);
    net.s(0).cancel(id, "enough").unwrap();
    net.s(0).caught_up();
    assert_eq!(acks(&mut net), Vec::<u64>::new());
}

#[test]
fn a_refused_download_fails_on_the_client() {
    let mut net = three();
    let id = net
        .s(0)
        .download(FileName::new("nope").unwrap(), None)
        .unwrap();
    net.pump();
    let alice = net.clients[0].0;
    net.hub
        .refuse_download(alice, id, CancelCode::NO_SUCH_FILE, "no file named 'nope'");
    net.pump();
    assert_eq!(
        net.take(0),
        vec![ClientEvent::TransferFailed {
            id,
            name: FileName::new("nope").unwrap(),
            error: crate::TransferError::Cancelled {
                id,
                code: CancelCode::NO_SUCH_FILE,
                reason: "no file named 'nope'".into()
            }
        }]
    );
}

#[test]
fn a_corrupted_chunk_fails_only_that_transfer() {
    let mut net = three();
    let id = start_download(&mut net, "a.txt", 5, None);
    let alice = net.clients[0].0;
    net.take(0);
    let mut chunk = FileChunk::new(id, 0, b"hello".to_vec());
    chunk.data[0] ^= 0x40;
    net.deliver(0, ServerMessage::Chunk(chunk));
    net.pump();
    assert!(matches!(
        &net.take(0)[..],
        [ClientEvent::TransferFailed {
            name,
            error: crate::TransferError::BadChunkCrc { .. },
            ..
        }] if name.as_str() == "a.txt"
    ));
    // The client told the server, which freed the slot; chat still works.
    assert!(net
        .hub_events
        .contains(&HubEvent::DownloadCancelled { client: alice, id }));
    net.s(1)
        .send_chat(Recipient::Everyone, "still here")
        .unwrap();
    net.pump();
    assert_eq!(chats(&net.take(0)).len(), 1);
}

fn push(net: &mut Net, from: usize, data: &[u8], to: Recipient) -> TransferId {
    let id = net
        .s(from)
        .offer(FileName::new("f.bin").unwrap(), data.len() as u64, to)
        .unwrap();
    // The receivers accept (small files are accepted without asking).
    net.pump();
    for c in data.chunks(7) {
        net.s(from).push_chunk(id, c.to_vec()).unwrap();
    }
    net.s(from).push_end(id).unwrap();
    net.pump();
    id
}

fn received(events: &[ClientEvent]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut done = false;
    for e in events {
        match e {
            ClientEvent::TransferData { data: d, .. } => data.extend_from_slice(d),
            ClientEvent::TransferDone { .. } => done = true,
            _ => {}
        }
    }
    (data, done)
}

#[test]
fn a_push_is_relayed_to_every_other_member() {
    let mut net = three();
    let data: Vec<u8> = (0..100u8).collect();
    let id = push(&mut net, 0, &data, Recipient::Everyone);
    for i in [1, 2] {
        let ev = net.take(i);
        assert!(matches!(
            &ev[0],
            ClientEvent::TransferStarted { origin: Origin::Push { from }, size: 100, .. } if from.as_str() == "alice"
        ));
        assert_eq!(received(&ev), (data.clone(), true));
    }
    assert_eq!(
        net.take(0),
        vec![
            ClientEvent::PushAccepted { id, receivers: 2 },
            ClientEvent::PushCredit { id, offset: 100 },
            ClientEvent::PushDone { id, receivers: 2 }
        ]
    );
}

/// A receiver acknowledges a push's data under the server's id for it, as
/// it does a download's (on its own, or once it says it stored it), by
/// steps of `ACK_STEP` whatever size the pusher's chunks are: the
/// hub counts what each receiver holds unacknowledged, which paces the
/// pusher to the receiver's acknowledgements and not to socket buffers.
#[test]
fn a_push_is_acknowledged_by_its_receivers_under_the_server_s_id() {
    const STEP: usize = crate::ACK_STEP as usize;
    let mut net = three();
    let bob = net.clients[1].0;
    let carol = net.clients[2].0;
    net.clients[2].1.set_manual_acks(true);
    let id = net
        .s(0)
        .offer(
            FileName::new("f.bin").unwrap(),
            64 << 20,
            Recipient::Everyone,
        )
        .unwrap();
    net.pump();
    for i in [1, 2] {
        let local = offered(&net.take(i)).expect("asked");
        net.s(i).accept(local).unwrap();
    }
    net.pump();
    for _ in 0..2 {
        net.s(0).push_chunk(id, vec![1; STEP / 2]).unwrap();
    }
    net.pump();
    let rid = net
        .hub_events
        .iter()
        .find_map(|e| match e {
            HubEvent::PushAcked { client, id } if *client == bob => Some(*id),
            _ => None,
        })
        .expect("bob acknowledged on its own");
    assert!(rid.is_server_chosen(), "{rid:?}");
    assert_eq!(net.hub.push_in_flight(rid, &[bob, carol]), [0, STEP as u64]);
    // Carol acknowledges once she says she stored it, under the server's id.
    let local = net.take(2).iter().find_map(|e| match e {
        ClientEvent::TransferData { id, .. } => Some(*id),
        _ => None,
    });
    let local = local.expect("carol got the data");
    assert_ne!(local, rid);
    net.s(2).stored(local, STEP as u64);
    net.s(2).caught_up();
    net.pump();
    assert_eq!(net.hub.push_in_flight(rid, &[bob, carol]), [0, 0]);
    // Less than a step is acknowledged once the receiver caught up (bob,
    // acknowledging on his own, holds it back); an acknowledgement of
    // more than was relayed opens nothing.
    net.s(0).push_chunk(id, vec![2; 500]).unwrap();
    net.pump();
    net.s(2).stored(local, 64 << 20);
    net.s(2).caught_up();
    net.pump();
    assert_eq!(net.hub.push_in_flight(rid, &[bob, carol]), [500, 500]);
    net.hub.check_invariants().unwrap();
}

/// A push of ours waits for its receivers' answer (a person decides, for
/// as long as the server's offer timeout) until the server says it was
/// accepted or declined: a program waiting for answers is told so, and
/// does not take that silence for a dead server.
#[test]
fn a_push_awaits_its_answer_until_accepted_or_declined() {
    let mut net = three();
    assert!(!net.s(0).awaits_push_answer());
    let big = FileName::new("f.bin").unwrap();
    let id = net
        .s(0)
        .offer(big.clone(), 64 << 20, Recipient::User(user("bob")))
        .unwrap();
    net.pump();
    assert!(net.s(0).awaits_push_answer(), "offered, not answered");
    let local = offered(&net.take(1)).expect("bob is asked");
    net.s(1).accept(local).unwrap();
    net.pump();
    assert!(!net.s(0).awaits_push_answer(), "accepted");
    net.s(0).cancel(id, "changed my mind").unwrap();
    net.pump();
    let other = net
        .s(0)
        .offer(big, 64 << 20, Recipient::User(user("carol")))
        .unwrap();
    net.pump();
    assert!(net.s(0).awaits_push_answer());
    let local = offered(&net.take(2)).expect("carol is asked");
    net.s(2).decline(local, "no").unwrap();
    net.pump();
    assert!(!net.s(0).awaits_push_answer(), "declined: {other:?} ended");
}

/// The server numbers the pushes it relays on its own: shown as `#n`,
/// its ids could be those of the receiver's downloads. The session gives
/// each push its own id, so alice's download and the two pushes to her
/// are three transfers with three numbers, each going to its end.
#[test]
fn pushes_to_a_client_take_ids_none_of_its_downloads_has() {
    let mut net = three();
    net.s(0).set_auto_accept(Some(100));
    let download = start_download(&mut net, "big.bin", 5, None);
    net.take(0);
    // A push alice is asked about, and a small one she takes unasked.
    let big = net
        .s(1)
        .offer(
            FileName::new("push20.bin").unwrap(),
            1000,
            Recipient::User(user("alice")),
        )
        .unwrap();
    net.pump();
    let offer = offered(&net.take(0)).expect("alice is asked");
    assert_eq!(net.s(0).pending_offers().first().map(|o| o.0), Some(offer));
    push(&mut net, 2, b"small", Recipient::User(user("alice")));
    let small = net.take(0);
    let pushed = small
        .iter()
        .find_map(|e| match e {
            ClientEvent::TransferStarted { id, .. } => Some(*id),
            _ => None,
        })
        .expect("the small push starts");
    assert_eq!(received(&small), (b"small".to_vec(), true));
    assert!(small.iter().all(|e| match e {
        ClientEvent::TransferStarted { id, .. }
        | ClientEvent::TransferData { id, .. }
        | ClientEvent::TransferDone { id } => *id == pushed,
        _ => true,
    }));
    let shown = [download, offer, pushed].map(|id| id.to_string());
    assert!(
        shown[0] != shown[1] && shown[0] != shown[2] && shown[1] != shown[2],
        "{shown:?}"
    );
    // Accepted, the offer's data comes under the id it was offered as.
    net.s(0).accept(offer).unwrap();
    net.pump();
    net.take(1);
    let data = vec![7; 1000];
    for c in data.chunks(500) {
        net.s(1).push_chunk(big, c.to_vec()).unwrap();
    }
    net.s(1).push_end(big).unwrap();
    net.pump();
    let got = net.take(0);
    assert!(
        got.contains(&ClientEvent::TransferDone { id: offer }),
        "{got:?}"
    );
    assert_eq!(received(&got), (data, true));
    // The download, still running, ends under its own id.
    serve(&mut net, download, 5, b"hello", 0);
    let ev = net.take(0);
    assert_eq!(ev.last(), Some(&ClientEvent::TransferDone { id: download }));
    net.hub.check_invariants().unwrap();
}

/// Cancelling or declining a push to us by the session's id reaches the
/// server under the server's id: the pusher is told.
#[test]
fn a_push_to_a_client_is_cancelled_and_declined_by_the_session_s_id() {
    let mut net = three_asking();
    let _ = start_download(&mut net, "big.bin", 5, None);
    for answer in ["decline", "cancel"] {
        let push = net
            .s(0)
            .offer(
                FileName::new("f.bin").unwrap(),
                10,
                Recipient::User(user("bob")),
            )
            .unwrap();
        net.pump();
        let offer = offered(&net.take(1)).expect("bob is asked");
        if answer == "decline" {
            net.s(1).decline(offer, "no").unwrap();
        } else {
            net.s(1).accept(offer).unwrap();
            net.pump();
            net.s(1).cancel(offer, "stop").unwrap();
        }
        net.pump();
        let alice = net.take(0);
        assert!(
            alice
                .iter()
                .any(|e| matches!(e, ClientEvent::PushFailed { id, .. } if *id == push)),
            "{answer}: {alice:?}"
        );
        net.take(1);
        net.hub.check_invariants().unwrap();
    }
}

/// A receiver that cannot store a push (its disk is full) says so with
/// `IO`, without its own error text (it names its paths), and the
/// pusher is told that it could not store the file, not that it
/// cancelled (before: "no receiver is left (bob: cancelled)").
#[test]
fn a_receiver_that_cannot_store_a_push_says_so_to_the_pusher() {
    let mut net = three_asking();
    let push = net
        .s(0)
        .offer(
            FileName::new("f.bin").unwrap(),
            10,
            Recipient::User(user("bob")),
        )
        .unwrap();
    net.pump();
    let offer = offered(&net.take(1)).expect("bob is asked");
    net.s(1).accept(offer).unwrap();
    net.pump();
    net.take(0);
    net.s(1).cannot_store(offer).unwrap();
    net.pump();
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::PushFailed { id, reason, .. }
            if *id == push && reason.contains("(bob: could not store the file)"))),
        "{alice:?}"
    );
    assert_eq!(
        net.s(1).cannot_store(offer),
        Err(UsageError::UnknownTransfer { id: offer })
    );
    net.hub.check_invariants().unwrap();
}

#[test]
fn a_push_to_one_user_reaches_only_that_user() {
    let mut net = three();
    push(&mut net, 0, b"secret file", Recipient::User(user("carol")));
    assert_eq!(received(&net.take(2)), (b"secret file".to_vec(), true));
    assert!(net.take(1).is_empty());
}

#[test]
fn a_push_with_nobody_to_receive_or_too_large_is_refused() {
    let mut net = Net::new(Limits::default());
    let a = net.connect("alice");
    net.take(a);
    let id = net
        .s(a)
        .offer(FileName::new("x").unwrap(), 3, Recipient::Everyone)
        .unwrap();
    net.pump();
    assert!(matches!(
        &net.take(a)[..],
        [ClientEvent::PushFailed {
            code: CancelCode::NO_RECEIVER,
            ..
        }]
    ));
    assert!(
        net.s(a).push_chunk(id, vec![1]).is_err(),
        "the failed push is forgotten"
    );
    // A hostile client announcing more than the cap is refused before any byte.
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let c = joined(&mut hub, "p", now);
    joined(&mut hub, "q", now);
    hub.flush_presence();
    while hub.poll_transmit().is_some() {}
    hub.handle_message(
        c,
        ClientMessage::Offer {
            id: TransferId(1),
            name: FileName::new("big").unwrap(),
            size: Limits::default().max_push_size + 1,
            to: Recipient::Everyone,
        },
        now,
    );
    let t = hub.poll_transmit().unwrap();
    assert!(matches!(
        t.message,
        ServerMessage::Cancel(FileCancel {
            code: CancelCode::TOO_LARGE,
            ..
        })
    ));
    assert!(
        hub.poll_transmit().is_none(),
        "nothing reached the receiver"
    );
}

/// A push offered to its own sender (a hostile or foreign client: the
/// reference client refuses it first) is refused, not offered back to it.
#[test]
fn a_push_to_oneself_is_refused_and_not_offered_back() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let c = joined(&mut hub, "p", now);
    joined(&mut hub, "q", now);
    hub.flush_presence();
    while hub.poll_transmit().is_some() {}
    hub.handle_message(
        c,
        ClientMessage::Offer {
            id: TransferId(1),
            name: FileName::new("f").unwrap(),
            size: 3,
            to: Recipient::User(user("P")),
        },
        now,
    );
    let t = hub.poll_transmit().unwrap();
    assert!(
        matches!(
            &t.message,
            ServerMessage::Cancel(FileCancel {
                id: TransferId(1),
                code: CancelCode::NO_RECEIVER,
                ..
            })
        ),
        "{:?}",
        t.message
    );
    assert!(hub.poll_transmit().is_none(), "nothing offered to anyone");
    hub.check_invariants().unwrap();
}

#[test]
fn a_bad_chunk_in_a_push_aborts_it_for_everyone() {
    let mut net = three();
    let id = net
        .s(0)
        .offer(FileName::new("f").unwrap(), 10, Recipient::Everyone)
        .unwrap();
    net.pump();
    let alice = net.clients[0].0;
    let mut bad = FileChunk::new(id, 0, vec![1; 10]);
    bad.crc ^= 1;
    net.hub
        .handle_message(alice, ClientMessage::Chunk(bad), net.now);
    net.pump();
    assert!(net.take(0).iter().any(|e| matches!(
        e,
        ClientEvent::PushFailed {
            code: CancelCode::BAD_CHUNK,
            ..
        }
    )));
    for i in [1, 2] {
        assert!(net
            .take(i)
            .iter()
            .any(|e| matches!(e, ClientEvent::TransferFailed { .. })));
    }
    net.hub.check_invariants().unwrap();
}

#[test]
fn a_pusher_leaving_cancels_its_push_and_a_receiver_leaving_is_dropped() {
    let mut net = three();
    net.s(0)
        .offer(FileName::new("f").unwrap(), 10, Recipient::Everyone)
        .unwrap();
    net.pump();
    net.take(1);
    net.s(2).quit("");
    net.pump();
    net.hub.check_invariants().unwrap();
    net.s(0).quit("");
    net.pump();
    assert!(net
        .take(1)
        .iter()
        .any(|e| matches!(e, ClientEvent::TransferFailed { .. })));
    net.hub.check_invariants().unwrap();
}

/// The receivers of a push whose sender's connection is lost (its session
/// waits for a resume) are told that, not that the sender left: the
/// sender is still in the room.
#[test]
fn a_push_cut_by_its_sender_s_lost_connection_says_so() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.s(0)
        .offer(FileName::new("f").unwrap(), 10, Recipient::Everyone)
        .unwrap();
    net.pump();
    net.take(1);
    net.cut(0);
    net.pump();
    let failed: Vec<String> = net
        .take(1)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::TransferFailed { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains("the sender's connection was lost"),
        "{failed:?}"
    );
    net.hub.check_invariants().unwrap();
}

/// A shared folder the server cannot read now is not shown as an empty
/// one: the client is told, then answered as for an empty folder (it is
/// not left waiting).
#[test]
fn a_shared_folder_the_server_cannot_read_is_said_to_be_unreadable() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let c = joined(&mut hub, "ann", t0);
    while hub.poll_transmit().is_some() {}
    hub.handle_message(c, ClientMessage::ListFiles, t0);
    while hub.poll_event().is_some() {}
    hub.answer_files_unavailable(c, FilesRequest::List);
    let got: Vec<ServerMessage> = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(c))
        .map(|t| t.message)
        .collect();
    assert!(
        matches!(&got[..], [
            ServerMessage::Notice { code, text },
            ServerMessage::FileList(FileListPart { files, last: true }),
        ] if *code == NoticeCode::FAILED
            && text.contains("cannot read its shared folder")
            && files.is_empty()),
        "{got:?}"
    );
}

/// On the client's side, the `Notice{FAILED}` and the empty answer of a
/// shared folder the server cannot read are one event per request, not a
/// failure followed by an empty folder; a quiet list stays quiet. A
/// `FAILED` notice followed by anything else comes through as it was.
#[test]
fn an_unreadable_shared_folder_is_one_event_per_request() {
    let mut net = three();
    let text = "the server cannot read its shared folder now";
    let failed = || ServerMessage::Notice {
        code: NoticeCode::FAILED,
        text: text.into(),
    };
    let empty = || {
        ServerMessage::FileList(FileListPart {
            files: vec![],
            last: true,
        })
    };
    net.s(0).files_access().unwrap();
    net.s(0).list_files().unwrap();
    net.s(0).fetch_file_names().unwrap();
    net.deliver(0, failed());
    net.deliver(0, ServerMessage::FilesAccess { count: 0 });
    net.deliver(0, failed());
    net.deliver(0, empty());
    net.deliver(0, failed());
    net.deliver(0, empty());
    let got: Vec<ClientEvent> = std::iter::from_fn(|| net.s(0).poll_event()).collect();
    assert_eq!(
        got,
        vec![
            ClientEvent::FilesUnavailable {
                request: FilesRequest::Access,
                text: text.into()
            },
            ClientEvent::FilesUnavailable {
                request: FilesRequest::List,
                text: text.into()
            },
            ClientEvent::FileNames(FileListPart {
                files: vec![],
                last: true
            }),
        ]
    );
    // A failure that is not the folder's: the notice, then the answer.
    net.s(0).files_access().unwrap();
    net.deliver(0, failed());
    net.deliver(0, ServerMessage::FilesAccess { count: 3 });
    let got: Vec<ClientEvent> = std::iter::from_fn(|| net.s(0).poll_event()).collect();
    assert_eq!(
        got,
        vec![
            ClientEvent::Notice {
                code: NoticeCode::FAILED,
                text: text.into()
            },
            ClientEvent::FilesAccess { count: 3 },
        ]
    );
    // No shared-folder request waiting: nothing is held.
    net.deliver(0, failed());
    assert_eq!(
        net.s(0).poll_event(),
        Some(ClientEvent::Notice {
            code: NoticeCode::FAILED,
            text: text.into()
        })
    );
}

#[test]
fn shutdown_tells_everyone_and_closes_every_connection() {
    let mut net = three();
    net.hub.shutdown("maintenance");
    net.pump();
    for i in 0..3 {
        assert_eq!(
            net.take(i),
            vec![ClientEvent::Shutdown {
                reason: "maintenance".into()
            }]
        );
        assert!(net.s(i).is_closed());
    }
    assert_eq!(net.closed.len(), 3);
    let late = net.connect("late");
    assert!(matches!(
        &net.take(late)[..],
        [ClientEvent::Refused {
            code: RefuseCode::SHUTTING_DOWN,
            ..
        }]
    ));
}

#[test]
fn a_decode_error_closes_only_that_connection() {
    let mut net = three();
    let bob = net.clients[1].0;
    net.hub
        .handle_decode_error(bob, &crate::DecodeError::UnknownType { ty: 0x77 });
    net.pump();
    assert!(net.closed.contains(&bob));
    assert!(net.take(0).iter().any(|e| matches!(
        e,
        ClientEvent::Left(crate::Departure {
            reason: LeaveReason::KICKED,
            ..
        })
    )));
    net.s(0)
        .send_chat(Recipient::Everyone, "still fine")
        .unwrap();
    net.pump();
    assert_eq!(chats(&net.take(2)).len(), 1);
}

#[test]
fn a_resumed_download_verifies_the_part_held() {
    let mut net = three();
    let data = b"0123456789";
    let held = crate::ResumeState::from_bytes(&data[..4]);
    let id = start_download(&mut net, "r.bin", 10, Some(held));
    let alice = net.clients[0].0;
    assert!(net.hub_events.contains(&HubEvent::DownloadRequested {
        client: alice,
        id,
        name: FileName::new("r.bin").unwrap(),
        offset: 4
    }));
    serve(&mut net, id, 10, data, 4);
    let ev = net.take(0);
    assert!(matches!(
        ev[0],
        ClientEvent::TransferStarted { offset: 4, .. }
    ));
    assert_eq!(ev.last(), Some(&ClientEvent::TransferDone { id }));
}

#[test]
fn a_hello_with_an_invalid_username_is_refused_with_the_rule() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let c = hub.handle_connect(now);
    // The decoder refuses the name; the hub turns that into a refusal with a reason.
    let mut frame = vec![0, 0, 0, 0, crate::codec::types::HELLO, 0, 1, 3];
    frame.extend_from_slice(b"a/b");
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    let mut d = Decoder::<ClientMessage>::new(1024);
    d.feed(&frame);
    let err = d.next_message().unwrap_err();
    hub.handle_decode_error(c, &err);
    match hub.poll_transmit().unwrap().message {
        ServerMessage::Refused { code, reason, .. } => {
            assert_eq!(code, RefuseCode::INVALID_NAME);
            assert!(reason.contains("'/'"), "{reason}");
        }
        m => panic!("{m:?}"),
    }
}

/// A TLS client on a plaintext server: its first bytes (a TLS handshake
/// record, `16 03 01 ..`) read as a frame header far too long. Refused as
/// that, in words the operator and the client can act on, not as a
/// broken frame of some size.
#[test]
fn a_tls_handshake_on_a_plaintext_server_is_refused_as_such() {
    let now = Instant::now();
    let mut hub = Hub::new(Limits::default(), "hi");
    let mut d = Decoder::<ClientMessage>::new(1024);
    // The start of a ClientHello: record type 22, version 3.1, length.
    d.feed(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    let err = d.next_message().unwrap_err();
    let c = hub.handle_connect(now);
    hub.handle_decode_error(c, &err);
    assert_eq!(
        answered(&mut hub, c),
        format!(
            "{}: this server does not use TLS: connect without it",
            RefuseCode::HANDSHAKE_REQUIRED
        )
    );
    let violation = std::iter::from_fn(|| hub.poll_event()).find_map(|e| match e {
        HubEvent::Violation { detail, .. } => Some(detail),
        _ => None,
    });
    assert_eq!(
        violation.as_deref(),
        Some("a TLS handshake on this plaintext server (the client uses TLS; this server was started without it)")
    );
    // Any other frame too long is what it is.
    let other = hub.handle_connect(now);
    hub.handle_decode_error(
        other,
        &crate::DecodeError::FrameTooLarge {
            size: 0x0100_0000,
            max: 1024,
        },
    );
    let said = answered(&mut hub, other);
    assert!(
        said.starts_with(&format!(
            "{}: malformed handshake: ",
            RefuseCode::HANDSHAKE_REQUIRED
        )),
        "{said}"
    );
}

#[test]
fn a_download_keeps_the_name_asked_for() {
    let mut net = three();
    let asked = FileName::new("asked.txt").unwrap();
    let id = net.s(0).download(asked.clone(), None).unwrap();
    net.pump();
    net.take(0);
    net.deliver(
        0,
        ServerMessage::FileStart(crate::FileStart {
            id,
            name: FileName::new("other.txt").unwrap(),
            size: 1,
            offset: 0,
            origin: Origin::Download,
        }),
    );
    net.pump();
    assert!(matches!(
        &net.take(0)[..],
        [ClientEvent::TransferStarted { name, .. }] if *name == asked
    ));
}

#[test]
fn an_oversize_push_is_declined_with_who_and_what() {
    let mut net = Net::new(Limits::default());
    let a = net.connect("alice");
    let limits = Limits {
        max_push_size: 10,
        ..Limits::default()
    };
    let b = net.connect_with("bob", limits);
    net.take(a);
    net.take(b);
    net.s(0)
        .offer(
            FileName::new("big.iso").unwrap(),
            11,
            Recipient::User(user("bob")),
        )
        .unwrap();
    net.pump();
    assert_eq!(
        net.take(b),
        vec![ClientEvent::PushDeclined {
            from: user("alice"),
            name: FileName::new("big.iso").unwrap(),
            size: 11,
            reason: "file of 11 bytes is larger than the limit of 10 bytes".into()
        }]
    );
    // The hub heard the refusal and told the pusher, naming the receiver.
    assert!(net.take(0).iter().any(|e| matches!(
        e,
        ClientEvent::PushFailed {
            code: CancelCode::DECLINED,
            reason,
            ..
        } if reason == "bob did not accept the file"
    )));
}

#[test]
fn a_kicked_client_is_told_and_announced() {
    let mut net = three();
    let bob = net.clients[1].0;
    net.hub.kick(bob, "internal error");
    net.pump();
    assert!(net.take(1).iter().any(|e| matches!(
        e,
        ClientEvent::Error { code: ErrorCode::INTERNAL, text, .. } if text == "internal error"
    )));
    assert!(net.take(0).iter().any(|e| matches!(
        e,
        ClientEvent::Left(crate::Departure {
            reason: LeaveReason::KICKED,
            ..
        })
    )));
    assert!(net.closed.contains(&bob));
    // One still handshaking is refused as server full.
    let c = net.hub.handle_connect(net.now);
    net.hub.kick(c, "no thread");
    assert!(matches!(
        net.hub.poll_transmit().map(|t| t.message),
        Some(ServerMessage::Refused {
            code: RefuseCode::SERVER_FULL,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// Protocol version 2: ids, times, actions, quit texts, list ends, lanes.

/// The chat events client `i` received: (id, time, from, kind, text).
fn stamped(events: &[ClientEvent]) -> Vec<(u64, u64, String, ChatKind, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(crate::RoutedChat {
                id,
                time,
                from,
                kind,
                text,
                ..
            }) => Some((id.0, time.0, from.to_string(), *kind, text.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_version_1_client_is_refused_with_a_reason_naming_version_2() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let c = hub.handle_connect(now);
    hello_version(&mut hub, c, 1, "old", now);
    let t = hub.poll_transmit().unwrap();
    let ServerMessage::Refused {
        code,
        reason,
        version,
    } = t.message
    else {
        panic!("expected a refusal, got {t:?}");
    };
    assert_eq!(code, RefuseCode::VERSION_MISMATCH);
    assert_eq!(version, 2);
    assert!(
        reason.contains("version 1") && reason.contains("version 2"),
        "{reason}"
    );
}

#[test]
fn routed_messages_carry_increasing_ids_and_the_wall_clock_time() {
    let mut net = three();
    let t0 = net.now;
    net.hub.set_wall_clock(t0, 1_700_000_000_000);
    net.s(0).send_chat(Recipient::Everyone, "one").unwrap();
    net.pump();
    net.now += Duration::from_millis(1500);
    net.s(1)
        .send_chat(Recipient::User(user("carol")), "two")
        .unwrap();
    net.pump();
    net.s(0).send_action(Recipient::Everyone, "waves").unwrap();
    net.pump();
    let carol = stamped(&net.take(2));
    assert_eq!(
        carol,
        vec![
            (
                4,
                1_700_000_000_000,
                "alice".into(),
                ChatKind::Text,
                "one".into()
            ),
            (
                5,
                1_700_000_001_500,
                "bob".into(),
                ChatKind::Text,
                "two".into()
            ),
            (
                6,
                1_700_000_001_500,
                "alice".into(),
                ChatKind::Action,
                "waves".into()
            ),
        ]
    );
    // Bob got the broadcasts with the same ids; the unicast's id is not his.
    let bob: Vec<u64> = stamped(&net.take(1)).iter().map(|c| c.0).collect();
    assert_eq!(bob, vec![4, 6]);
}

#[test]
fn a_refused_chat_takes_no_id() {
    let mut net = three();
    net.s(0)
        .send_chat(Recipient::User(user("nobody")), "lost")
        .unwrap();
    net.s(0).send_chat(Recipient::Everyone, "seen").unwrap();
    net.pump();
    let ids: Vec<u64> = stamped(&net.take(1)).iter().map(|c| c.0).collect();
    // Ids 1 to 3 are the three joins.
    assert_eq!(ids, vec![4]);
}

#[test]
fn a_quit_text_reaches_the_others_with_the_leave() {
    let mut net = three();
    net.s(1).quit("off to lunch");
    net.pump();
    assert_eq!(
        unstamped(net.take(0)),
        vec![ClientEvent::Left(crate::Departure {
            id: crate::MessageId(0),
            time: crate::Timestamp(0),
            user: user("bob"),
            reason: LeaveReason::QUIT,
            text: "off to lunch".into(),
        })]
    );
}

#[test]
fn a_long_quit_text_is_cut_at_a_character_before_it_reaches_anyone() {
    let mut net = three();
    // 'é' is two bytes: byte 512 falls inside one, so the cut is at 511.
    let long = format!("x{}", "é".repeat(100_000));
    net.s(1).quit(&long);
    net.pump();
    let got = unstamped(net.take(0));
    let [ClientEvent::Left(d)] = &got[..] else {
        panic!("{got:?}");
    };
    assert_eq!(d.text.len(), 511);
    assert!(long.starts_with(&d.text));
}

#[test]
fn routed_events_carry_the_text_only_when_asked() {
    let mut net = three();
    net.s(0).send_chat(Recipient::Everyone, "quiet").unwrap();
    net.pump();
    net.hub.set_report_text(true);
    net.s(0).send_chat(Recipient::Everyone, "logged").unwrap();
    net.pump();
    let routed: Vec<(u64, Option<String>, usize)> = net
        .hub_events
        .iter()
        .filter_map(|e| match e {
            HubEvent::Routed {
                id,
                text,
                receivers,
                ..
            } => Some((id.0, text.clone(), *receivers)),
            _ => None,
        })
        .collect();
    // Ids 1 to 3 are the three joins.
    assert_eq!(routed, vec![(4, None, 2), (5, Some("logged".into()), 2)]);
}

#[test]
fn an_empty_shared_folder_is_one_list_marked_last() {
    let mut net = three();
    net.s(0).list_files().unwrap();
    net.pump();
    assert_eq!(
        net.take(0),
        vec![ClientEvent::FileList(crate::FileListPart {
            files: Vec::new(),
            last: true,
        })]
    );
}

#[test]
fn the_welcome_announces_the_limits_and_the_session_keeps_to_the_text_limit() {
    let limits = Limits {
        max_text: 10,
        rate_burst: 7,
        rate_per_sec: 3,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    let a = net.connect("alice");
    let welcome = net.take(a);
    let [ClientEvent::Welcome { limits, .. }] = &welcome[..] else {
        panic!("{welcome:?}");
    };
    assert_eq!(
        (limits.max_text, limits.rate_burst, limits.rate_per_sec),
        (10, 7, 3)
    );
    assert_eq!(limits.max_frame, crate::limits::DEFAULT_MAX_FRAME);
    assert_eq!(
        net.s(a).send_chat(Recipient::Everyone, "eleven byte"),
        Err(crate::error::UsageError::TextTooLong { len: 11, max: 10 })
    );
}

#[test]
fn a_client_sends_texts_as_long_as_its_server_announced_even_past_its_own_default() {
    // The server takes 200,000 bytes; the clients' own default is 64 KiB.
    let limits = Limits {
        max_text: 200_000,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    let a = net.connect("alice");
    let b = net.connect("bob");
    net.take(a);
    net.take(b);
    assert!(Limits::default().max_text < 100_000);
    let long = "x".repeat(100_000);
    net.s(a).send_chat(Recipient::Everyone, &long).unwrap();
    net.pump();
    assert_eq!(
        chats(&net.take(b)),
        vec![("alice".to_string(), false, long)]
    );
    assert_eq!(
        net.s(a)
            .send_chat(Recipient::Everyone, &"x".repeat(200_001)),
        Err(crate::error::UsageError::TextTooLong {
            len: 200_001,
            max: 200_000
        })
    );
}

#[test]
fn transmits_say_which_lane_they_travel_in() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let ids: Vec<ClientId> = (0..2).map(|_| hub.handle_connect(now)).collect();
    let mut lanes = Vec::new();
    for (id, name) in ids.iter().zip(["ann", "ben"]) {
        hello(&mut hub, *id, name, now);
    }
    let push = TransferId(3);
    let data = b"file".to_vec();
    for m in [
        chat_to_all("hi"),
        ClientMessage::Offer {
            id: push,
            name: FileName::new("f.txt").unwrap(),
            size: 4,
            to: Recipient::Everyone,
        },
    ] {
        hub.handle_message(ids[0], m, now);
    }
    let relay = TransferId(TransferId::SERVER_BIT | 1);
    hub.handle_message(ids[1], ClientMessage::Accept { id: relay }, now);
    for m in [
        ClientMessage::Chunk(FileChunk::new(push, 0, data.clone())),
        ClientMessage::End(FileEnd {
            id: push,
            crc: crc32fast::hash(&data),
        }),
        ClientMessage::Quit {
            reason: String::new(),
        },
    ] {
        hub.handle_message(ids[0], m, now);
    }
    // The leave waits for the timer.
    hub.flush_presence();
    while let Some(t) = hub.poll_transmit() {
        let kind = match &t.message {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Presence(_) => "presence",
            ServerMessage::Chat(crate::RoutedChat { .. }) => "chat",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::FileStart(crate::FileStart { .. }) => "start",
            ServerMessage::Chunk(_) => "chunk",
            ServerMessage::End(_) => "end",
            ServerMessage::PushAccepted { .. } => "accepted",
            ServerMessage::PushCredit { .. } => "credit",
            ServerMessage::PushDone { .. } => "done",
            other => panic!("unexpected {other:?}"),
        };
        lanes.push((kind, t.lane));
    }
    assert_eq!(
        lanes,
        vec![
            ("welcome", Lane::Control),
            ("welcome", Lane::Control),
            // ben's join, sent to ann ahead of her chat's Ack.
            ("presence", Lane::Presence),
            ("ack", Lane::Control),
            ("chat", Lane::Control),
            ("start", Lane::Control),
            ("accepted", Lane::Control),
            ("credit", Lane::Control),
            ("chunk", Lane::Bulk(relay)),
            ("end", Lane::Bulk(relay)),
            ("done", Lane::Control),
            ("presence", Lane::Presence),
        ]
    );
}

#[test]
fn push_events_carry_the_name_size_and_start_for_the_log() {
    let mut net = three();
    let t0 = net.now;
    let id = net
        .s(0)
        .offer(FileName::new("notes.txt").unwrap(), 3, Recipient::Everyone)
        .unwrap();
    net.pump();
    net.now += Duration::from_secs(2);
    net.s(0).push_chunk(id, b"abc".to_vec()).unwrap();
    net.s(0).push_end(id).unwrap();
    net.pump();
    let ended: Vec<_> = net
        .hub_events
        .iter()
        .filter_map(|e| match e {
            HubEvent::PushEnded {
                name,
                size,
                started,
                receivers,
                error,
                ..
            } => Some((name.to_string(), *size, *started, *receivers, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![("notes.txt".into(), 3, t0, 2, None)]);
}

/// A name rule that also ignores digits: "bob2" is then "bob".
fn no_digits(u: &Username) -> String {
    u.as_str()
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect::<String>()
        .to_lowercase()
}

#[test]
fn the_name_key_decides_which_names_are_the_same_user() {
    let mut net = Net::new(Limits::default());
    net.hub.set_name_key(no_digits);
    net.connect("bob");
    let twin = net.connect("Bob2");
    assert!(matches!(
        &net.take(twin)[..],
        [ClientEvent::Refused {
            code: RefuseCode::NAME_TAKEN,
            ..
        }]
    ));
    // A unicast to a name with the same key reaches the one online.
    let carol = net.connect("carol");
    net.s(carol)
        .send_chat(Recipient::User(user("bob7")), "hi")
        .unwrap();
    net.pump();
    assert_eq!(
        chats(&net.take(0)),
        vec![("carol".into(), true, "hi".into())]
    );
    // Leaving frees the key.
    net.s(0).quit("");
    net.pump();
    let again = net.connect("bob3");
    assert!(matches!(
        &net.take(again)[..],
        [ClientEvent::Welcome { .. }]
    ));
}

#[test]
fn a_sender_s_name_key_is_worked_out_once_not_per_message() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A costly rule (a server's is NFKC and confusable skeletons), counted.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn counted(u: &Username) -> String {
        CALLS.fetch_add(1, Ordering::Relaxed);
        u.as_str().to_lowercase()
    }
    let mut net = Net::new(Limits::default());
    net.hub.set_name_key(counted);
    let bob = net.connect("bob");
    net.connect("carol");
    net.pump();
    let before = CALLS.load(Ordering::Relaxed);
    for i in 0..50 {
        net.s(bob)
            .send_chat(Recipient::Everyone, &format!("m{i}"))
            .unwrap();
        net.pump();
    }
    assert_eq!(chats(&net.take(1)).len(), 50);
    let calls = CALLS.load(Ordering::Relaxed) - before;
    assert!(calls <= 1, "the key of bob was worked out {calls} times");
}

#[test]
fn a_new_name_key_forgets_the_keys_of_the_old_one() {
    let mut net = Net::new(Limits::default());
    net.connect("bob");
    let carol = net.connect("carol");
    // Under the default rule "bob7" is nobody.
    net.s(carol)
        .send_chat(Recipient::User(user("bob7")), "lost")
        .unwrap();
    net.pump();
    assert!(chats(&net.take(0)).is_empty());
    // Under one that ignores digits it is bob, though its key was kept.
    net.hub.set_name_key(no_digits);
    net.s(carol)
        .send_chat(Recipient::User(user("bob7")), "found")
        .unwrap();
    net.pump();
    assert_eq!(
        chats(&net.take(0)),
        vec![("carol".into(), true, "found".into())]
    );
}

// ---------------------------------------------------------------------------
// Names that look alike under the loose key without being the same user.

/// A loose rule that reads a capital I as l, as a server's does
/// (imchat-cli's `names::loose_key`, with Unicode's tables besides).
fn capital_i_as_l(u: &Username) -> String {
    u.as_str().replace('I', "l").to_lowercase()
}

/// A hub with resume on and the loose rule [`capital_i_as_l`].
fn lookalike_hub() -> Hub {
    let mut hub = token_hub(Limits::default());
    hub.set_loose_name_key(capital_i_as_l);
    hub
}

/// What the hub answered connection `c`: `welcome`, `resumed`, or the
/// refusal's code and text.
fn answered(hub: &mut Hub, c: ClientId) -> String {
    std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(c))
        .find_map(|t| match t.message {
            ServerMessage::Welcome {
                resumed: Some(_), ..
            } => Some("resumed".to_string()),
            ServerMessage::Welcome { .. } => Some("welcome".to_string()),
            ServerMessage::Refused { code, reason, .. } => Some(format!("{code}: {reason}")),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn a_name_that_looks_like_one_online_is_refused_as_taken() {
    let mut hub = lookalike_hub();
    hub.enable_cluster();
    let t0 = Instant::now();
    let alice = joined(&mut hub, "alice", t0);
    assert_eq!(answered(&mut hub, alice), "welcome");
    let fake = joined(&mut hub, "aIice", t0);
    assert_eq!(
        answered(&mut hub, fake),
        "username already taken: the username 'aIice' is already taken (as 'alice')"
    );
    assert!(!hub.is_connected(fake));
    // Either way round: the one with the capital I came first.
    let t = joined(&mut hub, "TI20", t0);
    assert_eq!(answered(&mut hub, t), "welcome");
    let fake = joined(&mut hub, "tl20", t0);
    assert_eq!(
        answered(&mut hub, fake),
        "username already taken: the username 'tl20' is already taken (as 'TI20')"
    );
    // A capital I meant as i: `OLIVIA` is `olivia`, which `oIivia` reads as.
    let olivia = joined(&mut hub, "OLIVIA", t0);
    assert_eq!(answered(&mut hub, olivia), "welcome");
    let fake = joined(&mut hub, "oIivia", t0);
    assert_eq!(
        answered(&mut hub, fake),
        "username already taken: the username 'oIivia' is already taken (as 'OLIVIA')"
    );
    // A user of another server is as taken.
    assert!(hub.remote_join(7, user("lily"), t0));
    let fake = joined(&mut hub, "IiIy", t0);
    assert_eq!(
        answered(&mut hub, fake),
        "username already taken: the username 'IiIy' is already taken (as 'lily')"
    );
    // Once it left, its look-alike is anyone's.
    hub.remote_leave(7, &user("lily"), LeaveReason::QUIT, String::new(), t0);
    let now_free = joined(&mut hub, "IiIy", t0);
    assert_eq!(answered(&mut hub, now_free), "welcome");
    // A small i is not l: `mail` and `mall` are two users, online at once.
    let mail = joined(&mut hub, "mail", t0);
    assert_eq!(answered(&mut hub, mail), "welcome");
    let mall = joined(&mut hub, "mall", t0);
    assert_eq!(answered(&mut hub, mall), "welcome");
    hub.check_invariants().unwrap();
}

#[test]
fn a_look_alike_of_a_session_waiting_for_its_client_is_refused_and_the_owner_resumes() {
    let mut hub = lookalike_hub();
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let a = joined(&mut hub, "aIice", t0);
    let token = welcome_token(&mut hub, a);
    hub.handle_disconnect(a, LeaveReason::LOST);
    let fake = joined(&mut hub, "alice", t0);
    let said = answered(&mut hub, fake);
    assert!(
        said.starts_with(
            "username already taken: the username 'alice' is already taken (as 'aIice'): its session waits up to"
        ),
        "{said}"
    );
    // Its owner takes it back: the look-alike it is of itself is no other.
    let back = hub.handle_connect(t0);
    hub.handle_message(back, resume_hello("aIice", token, epoch), t0);
    assert_eq!(answered(&mut hub, back), "resumed");
    hub.check_invariants().unwrap();
    // And joins again under its name once it quit.
    hub.handle_message(
        back,
        ClientMessage::Quit {
            reason: String::new(),
        },
        t0,
    );
    assert!(!hub.is_connected(back));
    let again = joined(&mut hub, "aIice", t0);
    assert_eq!(answered(&mut hub, again), "welcome");
    hub.check_invariants().unwrap();
}

#[test]
fn without_a_loose_rule_a_capital_i_is_only_the_name_key_s() {
    // The default loose key is the name key: a library's hub that sets
    // none sees no change.
    let mut hub = token_hub(Limits::default());
    let t0 = Instant::now();
    for name in ["alice", "aIice", "mail", "maIl_", "mall"] {
        let c = joined(&mut hub, name, t0);
        assert_eq!(answered(&mut hub, c), "welcome", "{name}");
    }
    hub.console("ban mallory", t0);
    let c = joined(&mut hub, "MaIlory", t0);
    assert_eq!(answered(&mut hub, c), "welcome");
}

#[test]
fn a_name_that_looks_like_a_banned_one_is_refused_as_banned() {
    let mut hub = lookalike_hub();
    let t0 = Instant::now();
    assert_eq!(
        hub.console("ban mallory", t0),
        "banned mallory (0 disconnected)"
    );
    assert_eq!(
        hub.console("ban OLIVIA", t0),
        "banned OLIVIA (0 disconnected)"
    );
    for (name, banned) in [
        ("Mallory", "Mallory"),
        ("MaIlory", "MaIlory"),
        ("MAILORY", "MAILORY"),
        ("oIivia", "oIivia"),
    ] {
        let c = joined(&mut hub, name, t0);
        assert_eq!(
            answered(&mut hub, c),
            format!("banned: the username '{banned}' is banned from this server"),
            "{name}"
        );
    }
    // Names a small i keeps apart stay apart from a ban too.
    assert_eq!(hub.console("ban mall", t0), "banned mall (0 disconnected)");
    let mail = joined(&mut hub, "mail", t0);
    assert_eq!(answered(&mut hub, mail), "welcome");
    let malice = joined(&mut hub, "malice", t0);
    assert_eq!(answered(&mut hub, malice), "welcome");
    hub.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------
// Admission: joined users, handshakes and addresses each have their cap.

/// A hub for the admission tests, which connect from addresses of their own.
fn admission_hub(limits: Limits) -> Hub {
    Hub::new(limits, "hi")
}

/// What the hub sent each connection since the last call: (id, refusal code or "welcome").
fn answers(hub: &mut Hub) -> Vec<(ClientId, String)> {
    let mut out = Vec::new();
    while let Some(t) = hub.poll_transmit() {
        for to in t.to.iter() {
            match &t.message {
                ServerMessage::Refused { code, .. } => out.push((to, code.to_string())),
                ServerMessage::Welcome { .. } => out.push((to, "welcome".into())),
                _ => {}
            }
        }
    }
    while hub.poll_event().is_some() {}
    hub.check_invariants().unwrap();
    out
}

#[test]
fn silent_connections_do_not_count_against_the_user_cap() {
    let mut hub = admission_hub(Limits {
        max_clients: 5,
        ..Limits::default()
    });
    let now = Instant::now();
    let silent: Vec<ClientId> = (0..5).map(|_| hub.handle_connect(now)).collect();
    let real = hub.handle_connect(now);
    hello(&mut hub, real, "real", now);
    assert_eq!(answers(&mut hub), vec![(real, "welcome".into())]);
    // The silent ones are still waiting, and time out in due course.
    assert_eq!(hub.connections(), 6);
    hub.handle_timeout(now + Limits::default().handshake_timeout);
    let timed_out: Vec<ClientId> = answers(&mut hub).into_iter().map(|(id, _)| id).collect();
    assert_eq!(timed_out, silent);
}

#[test]
fn the_user_cap_is_checked_when_the_name_is_taken() {
    let mut hub = admission_hub(Limits {
        max_clients: 1,
        ..Limits::default()
    });
    let now = Instant::now();
    let (a, b) = (hub.handle_connect(now), hub.handle_connect(now));
    hello(&mut hub, a, "ann", now);
    hello(&mut hub, b, "ben", now);
    assert_eq!(
        answers(&mut hub),
        vec![(a, "welcome".into()), (b, "server full".into())]
    );
    // Full of users: a new connection is refused at once.
    let c = hub.handle_connect(now);
    assert_eq!(answers(&mut hub), vec![(c, "server full".into())]);
}

#[test]
fn past_the_handshake_cap_the_oldest_silent_connection_makes_room() {
    let mut hub = admission_hub(Limits {
        max_pending: 3,
        ..Limits::default()
    });
    let now = Instant::now();
    let silent: Vec<ClientId> = (0..3).map(|_| hub.handle_connect(now)).collect();
    let real = hub.handle_connect(now);
    assert_eq!(
        answers(&mut hub),
        vec![(silent[0], "handshake took too long".into())]
    );
    hello(&mut hub, real, "real", now);
    assert_eq!(answers(&mut hub), vec![(real, "welcome".into())]);
    // However many silent sockets keep coming, a real user still gets in.
    for _ in 0..100 {
        hub.handle_connect(now);
    }
    answers(&mut hub);
    let late = hub.handle_connect(now);
    hello(&mut hub, late, "late", now);
    assert!(answers(&mut hub).contains(&(late, "welcome".into())));
}

#[test]
fn one_address_has_a_cap_of_its_own() {
    let mut hub = admission_hub(Limits {
        max_per_address: 2,
        ..Limits::default()
    });
    let now = Instant::now();
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    let (a1, a2) = (
        hub.handle_connect_from(a, now),
        hub.handle_connect_from(a, now),
    );
    hello(&mut hub, a1, "a1", now);
    answers(&mut hub);
    // a2 is still silent: a third connection from `a` drops it instead.
    let a3 = hub.handle_connect_from(a, now);
    assert_eq!(
        answers(&mut hub),
        vec![(a2, "handshake took too long".into())]
    );
    hello(&mut hub, a3, "a3", now);
    answers(&mut hub);
    // Both joined: the next one from `a` is refused; `b` is not affected.
    let a4 = hub.handle_connect_from(a, now);
    let b1 = hub.handle_connect_from(b, now);
    hello(&mut hub, b1, "b1", now);
    assert_eq!(
        answers(&mut hub),
        vec![(a4, "server full".into()), (b1, "welcome".into())]
    );
    // A user leaving frees its place.
    hub.handle_disconnect(a1, LeaveReason::LOST);
    let a5 = hub.handle_connect_from(a, now);
    hello(&mut hub, a5, "a5", now);
    assert!(answers(&mut hub).contains(&(a5, "welcome".into())));
}

#[test]
fn an_ipv6_network_counts_as_one_address_and_ipv4_addresses_each_as_their_own() {
    let key = |s: &str| crate::address_key(s.parse().unwrap());
    // One /64, whatever the host part: one address for the caps.
    assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    // IPv4, whether it came mapped into IPv6 (a dual-stack socket) or not.
    assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    assert_ne!(key("::ffff:192.0.2.1"), key("::ffff:192.0.2.2"));

    let mut hub = admission_hub(Limits {
        max_per_address: 2,
        ..Limits::default()
    });
    let now = Instant::now();
    let mut joined = Vec::new();
    for (n, host) in ["2001:db8:1:2::1", "2001:db8:1:2::2"].iter().enumerate() {
        let c = hub.handle_connect_from(host.parse().unwrap(), now);
        hello(&mut hub, c, &format!("v{n}"), now);
        joined.push(c);
    }
    answers(&mut hub);
    // A third host of the same /64 is refused; one of another /64, and
    // two IPv4 users who came mapped, are not.
    let third = hub.handle_connect_from("2001:db8:1:2::3".parse().unwrap(), now);
    let other = hub.handle_connect_from("2001:db8:1:3::1".parse().unwrap(), now);
    hello(&mut hub, other, "other", now);
    let mapped: Vec<ClientId> = ["::ffff:192.0.2.1", "::ffff:192.0.2.2", "::ffff:192.0.2.3"]
        .iter()
        .enumerate()
        .map(|(n, ip)| {
            let c = hub.handle_connect_from(ip.parse().unwrap(), now);
            hello(&mut hub, c, &format!("m{n}"), now);
            c
        })
        .collect();
    let got = answers(&mut hub);
    assert_eq!(got[0], (third, "server full".into()), "{got:?}");
    for c in [other, mapped[0], mapped[1], mapped[2]] {
        assert!(got.contains(&(c, "welcome".into())), "{c:?}: {got:?}");
    }
    // One of the network leaving frees its place for another of its hosts.
    hub.handle_disconnect(joined[0], LeaveReason::LOST);
    let next = hub.handle_connect_from("2001:db8:1:2::4".parse().unwrap(), now);
    hello(&mut hub, next, "v2", now);
    assert!(answers(&mut hub).contains(&(next, "welcome".into())));
}

// ---------------------------------------------------------------------------
// The rate limit in bytes, and requests that cost in proportion to their work.

#[test]
fn a_burst_of_long_messages_is_slowed_by_its_bytes() {
    let limits = Limits::default();
    let mut hub = admission_hub(limits.clone());
    let now = Instant::now();
    let c = joined(&mut hub, "big", now);
    let text = "k".repeat(65_000);
    let chat = || chat_to_all(&text);
    // 1 MiB of burst holds 16 such messages; the 17th puts the sender in debt.
    for _ in 0..16 {
        hub.handle_message(c, chat(), now);
        assert_eq!(hub.throttle(c), None);
    }
    hub.handle_message(c, chat(), now);
    let until = hub.throttle(c).expect("slowed by its bytes");
    let wait = until - now;
    let debt = 17.0 * 65_000.0 - f64::from(limits.rate_burst_bytes);
    let expected = debt / f64::from(limits.rate_bytes_per_sec);
    assert!((wait.as_secs_f64() - expected).abs() < 0.01, "{wait:?}");
    // Read when told, a long script is slowed, not cut off.
    let mut t = until;
    for _ in 0..20 {
        hub.handle_message(c, chat(), t);
        t = hub.throttle(c).unwrap_or(t);
    }
    assert!(hub.is_joined(c));
}

/// Connections from `ip`, each joined as `name0`, `name1`, ….
fn joined_from(hub: &mut Hub, ip: &str, name: &str, n: usize, now: Instant) -> Vec<ClientId> {
    (0..n)
        .map(|i| {
            let c = hub.handle_connect_from(ip.parse().unwrap(), now);
            hello(hub, c, &format!("{name}{i}"), now);
            c
        })
        .collect()
}

#[test]
fn the_connections_of_one_address_share_twice_one_client_s_rate() {
    let mut hub = admission_hub(Limits::default());
    let t0 = Instant::now();
    let a = joined_from(&mut hub, "192.0.2.1", "a", 3, t0);
    let b = joined_from(&mut hub, "192.0.2.9", "b", 1, t0)[0];
    answers(&mut hub);
    let chat = || chat_to_all("x");
    // Two bursts of 100, from two connections, are the address's 200.
    for &c in &a[..2] {
        for _ in 0..100 {
            hub.handle_message(c, chat(), t0);
        }
        assert_eq!(hub.throttle(c), None);
    }
    // One more, from a third connection well within its own rate, puts
    // the address in debt: all its connections wait, another address not.
    hub.handle_message(a[2], chat(), t0);
    for &c in &a {
        let until = hub.throttle(c).expect("the address is over its rate");
        assert!(
            until > t0 && until <= t0 + Duration::from_millis(15),
            "{until:?}"
        );
    }
    hub.handle_message(b, chat(), t0);
    assert_eq!(hub.throttle(b), None);
    // Read when told, round after round: slowed to the address's 100 a
    // second, each well within its own rate of 50 (33 a second).
    let mut now = t0;
    let mut sent = 0u32;
    for _ in 0..1000 {
        if now >= t0 + Duration::from_secs(5) {
            break;
        }
        for &c in &a {
            now = now.max(hub.throttle(c).unwrap_or(now));
            hub.handle_message(c, chat(), now);
            sent += 1;
        }
    }
    answers(&mut hub);
    assert!((450..=550).contains(&sent), "{sent} messages in 5 s");
}

/// A flood split over connections of one address, each within its own
/// rate but all of them over the address's, is a flood: each connection
/// that keeps sending as fast as it is read is cut off after the flood
/// timeout, as one connection would be, even if the server once reads
/// them late (busy for 300 ms). A user of the same address who sends now
/// and then (once a second) is slowed with them, never cut off, and so is
/// a connection of another address.
#[test]
fn a_flood_split_over_the_connections_of_one_address_is_cut_off() {
    for flooders in [2, 3, 5] {
        let mut hub = admission_hub(Limits::default());
        let t0 = Instant::now();
        let a = joined_from(&mut hub, "192.0.2.1", "a", flooders, t0);
        let honest = joined_from(&mut hub, "192.0.2.1", "honest", 1, t0)[0];
        let b = joined_from(&mut hub, "192.0.2.9", "b", 1, t0)[0];
        answers(&mut hub);
        let chat = || chat_to_all(&"s".repeat(1000));
        // Each flooder is read as soon as its throttle lets it, the honest
        // user and `b` once a second (after their own wait, if any).
        let mut now = t0;
        let mut cut: Vec<(ClientId, f64)> = Vec::new();
        let mut next_honest = t0;
        // Until when the reader of each of them was told to wait after its
        // last message (the server asks once a message is handled).
        let mut ready = [t0, t0];
        let mut busy = false;
        for _ in 0..5000 {
            if now >= t0 + Duration::from_secs(15) {
                break;
            }
            for &c in a.iter().filter(|c| !cut.iter().any(|(k, _)| k == *c)) {
                now = now.max(hub.throttle(c).unwrap_or(now));
                if !busy && now >= t0 + Duration::from_secs(5) {
                    busy = true;
                    now += Duration::from_millis(300);
                }
                hub.handle_message(c, chat(), now);
            }
            if now >= next_honest {
                for (i, c) in [honest, b].into_iter().enumerate() {
                    let at = ready[i].max(now);
                    hub.handle_message(c, chat_to_all("hello"), at);
                    ready[i] = hub.throttle(c).unwrap_or(at);
                }
                next_honest = now + Duration::from_secs(1);
            }
            while let Some(e) = hub.poll_event() {
                if let HubEvent::Close { client, .. } = e {
                    assert!(a.contains(&client), "{client} was cut off");
                    cut.push((client, now.duration_since(t0).as_secs_f64()));
                }
            }
            while hub.poll_transmit().is_some() {}
            if cut.len() == a.len() {
                break;
            }
        }
        assert_eq!(cut.len(), flooders, "{flooders} flooders: cut {cut:?}");
        for (c, secs) in cut {
            assert!((10.0..11.0).contains(&secs), "{c} cut off after {secs} s");
        }
        assert!(hub.is_joined(honest) && hub.is_joined(b));
    }
}

/// A client of the same machine that starts sending after a split flood,
/// paced to its own rate (45 lines a second, as the reference client), is
/// read only as fast as the flood lets it and falls behind: it is held
/// back, not flooding. It is not cut off with the flood, and once the
/// flood is gone its lines all get through.
#[test]
fn a_paced_client_held_back_behind_a_split_flood_is_not_cut_off_with_it() {
    let mut hub = admission_hub(Limits::default());
    let t0 = Instant::now();
    let a = joined_from(&mut hub, "192.0.2.1", "a", 3, t0);
    let script = joined_from(&mut hub, "192.0.2.1", "script", 1, t0)[0];
    answers(&mut hub);
    let chat = || chat_to_all(&"s".repeat(1000));
    // Line i of the script is sent at 0.5 s + i / 45 s, and read when it
    // is there and the script's reader is let go.
    let sent_at =
        |i: u32| t0 + Duration::from_millis(500) + Duration::from_secs_f64(f64::from(i) / 45.0);
    let (mut read, mut script_ready) = (0u32, t0);
    let mut now = t0;
    let mut cut: Vec<ClientId> = Vec::new();
    for _ in 0..20_000 {
        if read == 600 || now >= t0 + Duration::from_secs(40) {
            break;
        }
        let flooding: Vec<ClientId> = a.iter().copied().filter(|c| !cut.contains(c)).collect();
        for &c in &flooding {
            now = now.max(hub.throttle(c).unwrap_or(now));
            hub.handle_message(c, chat(), now);
        }
        if flooding.is_empty() {
            now = now.max(sent_at(read).max(script_ready));
        }
        while read < 600 && sent_at(read).max(script_ready) <= now {
            let at = sent_at(read).max(script_ready);
            hub.handle_message(script, chat_to_all(&format!("line {read}")), at);
            script_ready = hub.throttle(script).unwrap_or(at);
            read += 1;
        }
        while let Some(e) = hub.poll_event() {
            if let HubEvent::Close { client, .. } = e {
                assert!(
                    a.contains(&client),
                    "{client} was cut off after {read} lines"
                );
                cut.push(client);
            }
        }
        while hub.poll_transmit().is_some() {}
    }
    assert_eq!(cut.len(), 3, "the flood was not cut off");
    assert_eq!(read, 600);
    assert!(hub.is_joined(script));
}

#[test]
fn without_a_share_per_address_each_connection_keeps_its_own_rate() {
    let mut hub = admission_hub(Limits {
        address_rate_share: 0,
        ..Limits::default()
    });
    let t0 = Instant::now();
    let a = joined_from(&mut hub, "192.0.2.1", "a", 3, t0);
    answers(&mut hub);
    for &c in &a {
        for _ in 0..100 {
            hub.handle_message(c, chat_to_all("x"), t0);
        }
        assert_eq!(hub.throttle(c), None);
    }
}

#[test]
fn a_long_file_list_costs_its_asker_rate_budget() {
    let mut net = three();
    net.files = entries(5_000, |i| format!("f{i}"));
    let alice = net.clients[0].0;
    net.s(0).list_files().unwrap();
    net.pump();
    // 5,000 files cost 1 + 50 messages, past the burst of 100 after two asks.
    assert_eq!(net.hub.throttle(alice), None);
    net.s(0).list_files().unwrap();
    net.pump();
    assert!(
        net.hub.throttle(alice).is_some(),
        "two lists of 5,000 files"
    );
    // Bob, who asked for nothing, is not slowed.
    assert_eq!(net.hub.throttle(net.clients[1].0), None);
}

#[test]
fn a_download_looked_for_through_a_big_folder_costs_like_its_count() {
    let mut net = three();
    let alice = net.clients[0].0;
    // A name not in a folder of 5,000 files, looked for through all of
    // them: 50 messages beyond the one its `Download` paid; the burst of
    // 100 is spent after two.
    for _ in 0..2 {
        net.hub.charge_folder_search(alice, 5_000);
    }
    assert_eq!(net.hub.throttle(alice), None);
    net.hub.charge_folder_search(alice, 5_000);
    assert!(
        net.hub.throttle(alice).is_some(),
        "three searches of 5,000 files"
    );
    // Bob, who asked for nothing, is not slowed.
    assert_eq!(net.hub.throttle(net.clients[1].0), None);
    // However big the folder, a search costs at most half the flood
    // timeout's worth (the default 10 s: 5 s of the rate).
    let bob = net.clients[1].0;
    net.hub.charge_folder_search(bob, 10_000_000);
    let until = net
        .hub
        .throttle(bob)
        .expect("a search of ten million files");
    let wait = until.saturating_duration_since(net.now);
    assert!(
        wait > Duration::from_secs(2) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
}

#[test]
fn who_and_pings_cost_rate_budget_too() {
    let mut net = three();
    let alice = net.clients[0].0;
    for _ in 0..100 {
        net.s(0).who().unwrap();
    }
    net.pump();
    assert_eq!(
        net.hub.throttle(alice),
        None,
        "a burst of 100 requests is allowed"
    );
    net.s(0).who().unwrap();
    net.pump();
    assert!(net.hub.throttle(alice).is_some());
    let bob = net.clients[1].0;
    for _ in 0..101 {
        net.hub.handle_message(bob, ClientMessage::Ping(1), net.now);
    }
    assert!(net.hub.throttle(bob).is_some());
}

/// `client` sends `msg()` again and again, read when the throttle says,
/// for at most 15 s of the hub's clock: when it was cut off for flooding
/// (told `FLOODING` and closed), in seconds from `t0`.
fn flood_cut_off_after(
    hub: &mut Hub,
    client: ClientId,
    msg: impl Fn() -> ClientMessage,
    t0: Instant,
) -> Option<f64> {
    let mut now = t0;
    let (mut told, mut closed) = (false, false);
    for _ in 0..2000 {
        now = hub.throttle(client).unwrap_or(now);
        if now > t0 + Duration::from_secs(15) {
            break;
        }
        hub.handle_message(client, msg(), now);
        while let Some(t) = hub.poll_transmit() {
            told |= t.to.iter().any(|to| to == client)
                && matches!(
                    t.message,
                    ServerMessage::Error {
                        code: ErrorCode::FLOODING,
                        ..
                    }
                );
        }
        while let Some(e) = hub.poll_event() {
            closed |= matches!(e, HubEvent::Close { client: c, .. } if c == client);
        }
        if closed {
            assert!(told, "closed without FLOODING");
            return Some(now.duration_since(t0).as_secs_f64());
        }
    }
    None
}

/// A joined client's `Hello` and `Auth` are answered `UNEXPECTED` and do
/// nothing else: sent back to back, they are slowed and cut off as a
/// flood of requests is.
#[test]
fn hellos_and_auths_of_a_joined_client_cost_rate_budget() {
    let again = || ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: user("x"),
    };
    let auth = || ClientMessage::Auth {
        server: Secret::new("x".to_string()),
        account: None,
    };
    for msg in [&again as &dyn Fn() -> ClientMessage, &auth] {
        let mut hub = Hub::new(Limits::default(), "hi");
        let t0 = Instant::now();
        let c = joined(&mut hub, "flood", t0);
        for _ in 0..100 {
            hub.handle_message(c, msg(), t0);
        }
        assert_eq!(hub.throttle(c), None, "a burst of 100 is allowed");
        hub.handle_message(c, msg(), t0);
        assert!(hub.throttle(c).is_some(), "{:?} is free", msg());
        let secs = flood_cut_off_after(&mut hub, c, msg, t0).expect("never cut off");
        assert!((10.0..11.0).contains(&secs), "cut off after {secs} s");
    }
}

/// A hub with `ann` joined and pinged by its keepalive: the hub, ann, the
/// time of the ping and its nonce.
fn ann_pinged() -> (Hub, ClientId, Instant, u64) {
    let limits = Limits::default();
    let mut hub = Hub::new(limits.clone(), "hi");
    let t0 = Instant::now();
    let c = joined(&mut hub, "ann", t0);
    while hub.poll_transmit().is_some() {}
    let t1 = t0 + limits.keepalive_interval;
    hub.handle_timeout(t1);
    let nonce = std::iter::from_fn(|| hub.poll_transmit())
        .find_map(|t| match t.message {
            ServerMessage::Ping(n) => Some(n),
            _ => None,
        })
        .expect("pinged after the keepalive interval");
    (hub, c, t1, nonce)
}

/// The `Pong` that answers the server's keepalive `Ping` is free; any
/// other is a frame for nothing, and a flood of them is cut off.
#[test]
fn only_the_pong_the_server_awaits_is_free() {
    let (mut hub, c, t1, nonce) = ann_pinged();
    for _ in 0..100 {
        hub.handle_message(c, ClientMessage::Who, t1);
    }
    assert_eq!(hub.throttle(c), None, "the burst is spent, not overspent");
    hub.handle_message(c, ClientMessage::Pong(nonce), t1);
    assert_eq!(hub.throttle(c), None, "the awaited pong is free");
    hub.handle_message(c, ClientMessage::Pong(nonce), t1);
    assert!(hub.throttle(c).is_some(), "a second pong is not");
    let secs =
        flood_cut_off_after(&mut hub, c, || ClientMessage::Pong(5), t1).expect("never cut off");
    assert!((10.0..11.0).contains(&secs), "cut off after {secs} s");
}

/// A user's answers to the pushes offered to it cost no rate budget:
/// pushers on other addresses, each well within its own rate, may offer
/// it more pushes a second than its rate, and a client that declines
/// each one at once is neither slowed nor cut off as a flood (an accept
/// is as free). Only an answer the offer waits for is free: a second
/// answer, or one to an offer made to someone else, costs as any request.
#[test]
fn answering_the_pushes_offered_to_a_user_costs_nothing() {
    let mut hub = admission_hub(Limits::default());
    let t0 = Instant::now();
    let vic = joined_from(&mut hub, "192.0.2.1", "vic", 1, t0)[0];
    let other = joined_from(&mut hub, "192.0.2.2", "other", 1, t0)[0];
    let pushers: Vec<ClientId> = (0..4)
        .map(|i| {
            joined_from(
                &mut hub,
                &format!("192.0.2.{}", 10 + i),
                &format!("p{i}_"),
                1,
                t0,
            )[0]
        })
        .collect();
    answers(&mut hub);
    let (mut now, mut id, mut answered) = (t0, 0u32, 0usize);
    // 15 s of four pushers offering 40 a second each (their rate is 50):
    // 160 offers a second for vic, three times its own rate.
    for _ in 0..600 {
        for &p in &pushers {
            id += 1;
            hub.handle_message(
                p,
                ClientMessage::Offer {
                    id: TransferId(id),
                    name: FileName::new("spam.bin").unwrap(),
                    size: 10,
                    to: Recipient::User(user("vic0")),
                },
                now,
            );
        }
        let mut offers = Vec::new();
        while let Some(t) = hub.poll_transmit() {
            if !t.to.iter().any(|to| to == vic) {
                continue;
            }
            match t.message {
                ServerMessage::FileStart(FileStart { id, .. }) => offers.push(id),
                ServerMessage::Error { code, .. } => panic!("vic was told {code}"),
                _ => {}
            }
        }
        for rid in offers {
            let accept = ClientMessage::Accept { id: rid };
            let decline = ClientMessage::Cancel(FileCancel {
                id: rid,
                code: CancelCode::DECLINED,
                reason: "no".into(),
            });
            assert!(!hub.is_free(other, &accept), "an offer to someone else");
            assert!(!hub.is_free(other, &decline), "an offer to someone else");
            assert!(hub.is_free(vic, &accept), "the awaited answer");
            assert!(hub.is_free(vic, &decline), "the awaited answer");
            hub.handle_message(vic, decline, now);
            assert!(!hub.is_free(vic, &accept), "answered already");
            answered += 1;
        }
        while let Some(e) = hub.poll_event() {
            assert!(
                !matches!(e, HubEvent::Close { client, .. } if client == vic),
                "vic was cut off after {:?}",
                now - t0
            );
        }
        assert_eq!(hub.throttle(vic), None, "vic slowed after {:?}", now - t0);
        now += Duration::from_millis(25);
    }
    assert_eq!(answered, 600 * 4, "every offer reached vic");
}

/// A receiver whose client takes no more pushes now (`Cancel{TOO_MANY}`:
/// 8 offers waiting, say, from someone flooding it) is not reported to
/// the pusher of a push to it alone as not accepting the file, which it
/// never saw: the pusher is told it has too many coming in, with that code.
#[test]
fn a_receiver_with_too_many_pushes_is_not_said_to_have_declined() {
    let mut hub = admission_hub(Limits::default());
    let t0 = Instant::now();
    let vic = joined_from(&mut hub, "192.0.2.1", "vic", 1, t0)[0];
    let carl = joined_from(&mut hub, "192.0.2.2", "carl", 1, t0)[0];
    answers(&mut hub);
    hub.handle_message(
        carl,
        ClientMessage::Offer {
            id: TransferId(3),
            name: FileName::new("note.txt").unwrap(),
            size: 11,
            to: Recipient::User(user("vic0")),
        },
        t0,
    );
    let rid = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(vic))
        .find_map(|t| match t.message {
            ServerMessage::FileStart(FileStart { id, .. }) => Some(id),
            _ => None,
        })
        .expect("the offer");
    hub.handle_message(
        vic,
        ClientMessage::Cancel(FileCancel {
            id: rid,
            code: CancelCode::TOO_MANY,
            reason: "already 8 files being sent to this user".into(),
        }),
        t0,
    );
    let told = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(carl))
        .find_map(|t| match t.message {
            ServerMessage::Cancel(c) if c.id == TransferId(3) => Some((c.code, c.reason)),
            _ => None,
        });
    assert_eq!(
        told,
        Some((
            CancelCode::TOO_MANY,
            "vic0 has too many files coming in or waiting for an answer; try again later"
                .to_string()
        ))
    );
}

/// Nor does a client count its answers to offers against its own pace
/// (the session's bucket mirrors the server's): a user offered hundreds of
/// files at once, by others each within their rates, declining them all
/// (by hand, or unasked past its 8 waiting), may still send its next line
/// at once, not seconds later behind its declines.
#[test]
fn declining_many_offers_does_not_hold_back_the_receiver_s_own_lines() {
    let mut net = three();
    // Above the auto-accept size: asked about, or refused past 8 waiting.
    let big = 64 * 1024 * 1024;
    let mut declined = 0;
    for _ in 0..20 {
        for from in [0, 2] {
            for _ in 0..8 {
                net.s(from)
                    .offer(
                        FileName::new("f.bin").unwrap(),
                        big,
                        Recipient::User(user("bob")),
                    )
                    .unwrap();
            }
        }
        net.pump();
        let offers: Vec<TransferId> = net
            .take(1)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::PushOffered { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        for id in offers {
            net.s(1).decline(id, "no").unwrap();
            declined += 1;
        }
        net.pump();
        net.take(0);
        net.take(2);
    }
    assert!(declined >= 20 * 8, "{declined} declined by hand");
    let now = net.now;
    assert_eq!(net.s(1).next_send_at(now, 5), None, "bob's next line waits");
}

/// Chunks and ends of the sender's own push go at full speed; for a
/// transfer that is not its push they do nothing and cost rate budget (a
/// chunk by its size), so a flood of them is slowed and cut off.
#[test]
fn chunks_and_ends_of_no_push_of_the_sender_cost_rate_budget() {
    let mut net = three();
    let alice = net.clients[0].0;
    // 3,000 chunks of alice's own push: free.
    let data = vec![7u8; 7 * 3000];
    push(&mut net, 0, &data, Recipient::Everyone);
    assert_eq!(net.hub.throttle(alice), None, "a push is not slowed");
    assert!(received(&net.take(1)).1);
    let junk = TransferId(7);
    let chunk = |len: usize| ClientMessage::Chunk(FileChunk::new(junk, 0, vec![b'y'; len]));
    let end = || ClientMessage::End(FileEnd { id: junk, crc: 0 });
    let bob = net.clients[1].0;
    // 100 ends: a burst of 100 (its `Accept` of the push was free).
    for _ in 0..100 {
        net.hub.handle_message(bob, end(), net.now);
    }
    assert_eq!(net.hub.throttle(bob), None, "a burst of 100 is allowed");
    net.hub.handle_message(bob, end(), net.now);
    assert!(net.hub.throttle(bob).is_some(), "an end of no push is free");
    // A chunk of no push costs one message per chunk's worth of data.
    let carol = net.clients[2].0;
    let size = Limits::default().chunk_size;
    for _ in 0..20 {
        net.hub.handle_message(carol, chunk(4 * size), net.now);
    }
    assert_eq!(net.hub.throttle(carol), None, "20 chunks of 5");
    net.hub.handle_message(carol, chunk(4 * size), net.now);
    assert!(
        net.hub.throttle(carol).is_some(),
        "a chunk of no push is free"
    );
    for msg in [&end as &dyn Fn() -> ClientMessage, &|| chunk(1000)] {
        let mut hub = Hub::new(Limits::default(), "hi");
        let t0 = Instant::now();
        let c = joined(&mut hub, "flood", t0);
        let secs = flood_cut_off_after(&mut hub, c, msg, t0).expect("never cut off");
        assert!((10.0..11.0).contains(&secs), "cut off after {secs} s");
    }
}

/// A hold that is its address's only says so, one of the connection's
/// own debt not: only while the former lasts may a reader hand the hub
/// the frames that cost nothing.
#[test]
fn a_hold_tells_whether_it_is_the_address_s_only() {
    let mut hub = admission_hub(Limits::default());
    let t0 = Instant::now();
    let a = joined_from(&mut hub, "192.0.2.1", "a", 3, t0);
    let b = joined_from(&mut hub, "192.0.2.9", "b", 1, t0)[0];
    answers(&mut hub);
    // Two bursts of 100 spend the address's 200; one more line, from a
    // third connection well within its own rate, puts it in debt.
    for &c in &a[..2] {
        for _ in 0..100 {
            hub.handle_message(c, chat_to_all("x"), t0);
        }
    }
    hub.handle_message(a[2], chat_to_all("x"), t0);
    for &c in &a {
        let hold = hub.hold(c).expect("the address is over its rate");
        assert!(hold.address_only, "{c:?} owes nothing itself");
        assert_eq!(hub.throttle(c), Some(hold.until));
    }
    // A connection alone on its address over its own rate.
    for _ in 0..101 {
        hub.handle_message(b, chat_to_all("x"), t0);
    }
    let hold = hub.hold(b).expect("over its own rate");
    assert!(!hold.address_only);
}

/// A `Quit` costs nothing, and a reader holding its client for the rate
/// its address shares hands it over at once: a bot of a busy address
/// (others of it sending too fast) that quits was read only when the hold
/// ended, its name still taken after its `quit` gave up waiting for the
/// close, and connecting again under it was refused as taken.
#[test]
fn a_quit_held_for_its_address_s_rate_is_handled_at_once() {
    let mut hub = admission_hub(Limits::default());
    let t0 = Instant::now();
    let a = joined_from(&mut hub, "192.0.2.1", "a", 3, t0);
    answers(&mut hub);
    for &c in &a[..2] {
        for _ in 0..100 {
            hub.handle_message(c, chat_to_all("x"), t0);
        }
    }
    hub.handle_message(a[2], chat_to_all("x"), t0);
    let bot = a[2];
    assert!(hub.hold(bot).expect("held").address_only);
    let quit = ClientMessage::Quit {
        reason: "restart".into(),
    };
    assert!(hub.is_connected_here(&user("a2")));
    assert!(
        hub.is_free(bot, &quit),
        "read at once, not at the hold's end"
    );
    hub.handle_message(bot, quit, t0);
    assert!(!hub.is_connected_here(&user("a2")), "the name is free");
}

/// `Hub::is_free` tells the frames that cost nothing (the awaited pong,
/// an ack that moves a download of the sender on) from those that cost,
/// and changes nothing: the awaited pong is free until it is handled.
#[test]
fn is_free_tells_the_frames_that_cost_nothing_and_changes_nothing() {
    let mut net = three();
    let alice = net.clients[0].0;
    let size = Limits::default().chunk_size as u64;
    let id = start_download(&mut net, "big.bin", 10 * size, None);
    let ack = |id, offset: u64| ClientMessage::Ack { id, offset };
    assert!(net.hub.is_free(alice, &ack(id, size)));
    assert!(
        !net.hub.is_free(alice, &ack(TransferId(99), size)),
        "no such download"
    );
    assert!(!net.hub.is_free(alice, &ack(id, 0)), "acknowledged already");
    assert!(!net.hub.is_free(alice, &chat_to_all("x")));
    assert!(!net.hub.is_free(alice, &ClientMessage::Who));

    let (mut hub, c, t1, nonce) = ann_pinged();
    assert!(!hub.is_free(c, &ClientMessage::Pong(nonce.wrapping_add(1))));
    assert!(hub.is_free(c, &ClientMessage::Pong(nonce)));
    assert!(hub.is_free(c, &ClientMessage::Pong(nonce)), "asked twice");
    hub.handle_message(c, ClientMessage::Pong(nonce), t1);
    assert!(!hub.is_free(c, &ClientMessage::Pong(nonce)), "answered");
}

/// Acks that move a download of the sender on are free, those of its
/// last window that come after it ended too; an ack that moves nothing
/// on (no such download, an offset acknowledged already) costs rate
/// budget, and a flood of them is cut off.
#[test]
fn only_acks_that_move_a_download_on_are_free() {
    let mut net = three();
    let alice = net.clients[0].0;
    let size = Limits::default().chunk_size as u64;
    let id = start_download(&mut net, "big.bin", 1000 * size, None);
    let ack = |offset: u64| ClientMessage::Ack { id, offset };
    for i in 1..=996 {
        net.hub.handle_message(alice, ack(i * size), net.now);
    }
    assert_eq!(net.hub.throttle(alice), None, "a download is not slowed");
    net.hub.download_finished(alice, id);
    for i in 997..=1000 {
        net.hub.handle_message(alice, ack(i * size), net.now);
    }
    assert_eq!(net.hub.throttle(alice), None, "nor its last acks");
    // Its `Download` and 99 acks again: a burst of 100.
    for _ in 0..99 {
        net.hub.handle_message(alice, ack(1000 * size), net.now);
    }
    assert_eq!(net.hub.throttle(alice), None, "a burst of 100 is allowed");
    net.hub.handle_message(alice, ack(1000 * size), net.now);
    assert!(net.hub.throttle(alice).is_some(), "an ack again is free");
    // Also for a download that runs: an offset acknowledged already.
    let bob = net.clients[1].0;
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let c = joined(&mut hub, "flood", t0);
    let secs = flood_cut_off_after(
        &mut hub,
        c,
        || ClientMessage::Ack {
            id: TransferId(1),
            offset: 5,
        },
        t0,
    )
    .expect("never cut off");
    assert!((10.0..11.0).contains(&secs), "cut off after {secs} s");
    let id = {
        net.now += Duration::from_secs(10);
        let name = FileName::new("b.bin").unwrap();
        let id = net.s(1).download(name.clone(), None).unwrap();
        net.pump();
        net.hub.accept_download(bob, id, name, 10 * size, 0);
        net.pump();
        id
    };
    net.hub
        .handle_message(bob, ClientMessage::Ack { id, offset: size }, net.now);
    for _ in 0..101 {
        net.hub
            .handle_message(bob, ClientMessage::Ack { id, offset: size }, net.now);
    }
    assert!(
        net.hub.throttle(bob).is_some(),
        "the same ack again is free"
    );
}

/// A chat refused as too long was read all the same: it costs its length.
#[test]
fn a_chat_refused_as_too_long_costs_its_length() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let c = joined(&mut hub, "ann", t0);
    let long = || chat_to_all(&"x".repeat(Limits::default().max_text + 1));
    for _ in 0..17 {
        hub.handle_message(c, long(), t0);
    }
    assert!(
        hub.throttle(c).is_some(),
        "17 refused texts of 64 KiB are free"
    );
    let secs = flood_cut_off_after(&mut hub, c, long, t0).expect("never cut off");
    assert!((10.0..11.0).contains(&secs), "cut off after {secs} s");
}

#[test]
fn a_download_counts_as_running_from_the_request_to_its_end() {
    let mut net = three();
    let name = FileName::new("a.txt").unwrap();
    assert!(!net.s(0).is_downloading(&name));
    let id = net.s(0).download(name.clone(), None).unwrap();
    assert!(net.s(0).is_downloading(&name), "asked for");
    assert_eq!(
        net.s(0).download(name.clone(), None),
        Err(UsageError::AlreadyDownloading { name: name.clone() }),
        "a second download of the same file"
    );
    net.pump();
    let alice = net.clients[0].0;
    net.hub.accept_download(alice, id, name.clone(), 5, 0);
    net.pump();
    assert!(net.s(0).is_downloading(&name), "started");
    assert_eq!(
        net.s(0)
            .download(name.clone(), None)
            .unwrap_err()
            .to_string(),
        "'a.txt' is already being downloaded"
    );
    assert!(!net.s(0).is_downloading(&FileName::new("b.txt").unwrap()));
    serve(&mut net, id, 5, b"hello", 0);
    assert!(!net.s(0).is_downloading(&name), "done");
    // A failed or cancelled one is over too.
    let id = net.s(0).download(name.clone(), None).unwrap();
    net.s(0).cancel(id, "changed my mind").unwrap();
    assert!(!net.s(0).is_downloading(&name), "cancelled");
}

// ---- Transfers that stop moving end, and pushes ask first ----

const IDLE: Duration = crate::limits::DEFAULT_TRANSFER_IDLE_TIMEOUT;
const OFFER: Duration = crate::limits::DEFAULT_OFFER_TIMEOUT;

/// Alice asks for `a.txt`, and the "server glue" opens it (10 MB): the
/// download runs with no data sent yet. Returns its id.
fn running_download(net: &mut Net, i: usize) -> TransferId {
    let id = net
        .s(i)
        .download(FileName::new("a.txt").unwrap(), None)
        .unwrap();
    net.pump();
    let client = net.clients[i].0;
    let name = FileName::new("a.txt").unwrap();
    if net.hub.accept_download(client, id, name, 10_000_000, 0) == Some(0) {
        net.pump();
    }
    id
}

fn cancelled_downloads(net: &Net) -> Vec<(ClientId, TransferId)> {
    net.hub_events
        .iter()
        .filter_map(|e| match e {
            HubEvent::DownloadCancelled { client, id } => Some((*client, *id)),
            _ => None,
        })
        .collect()
}

fn failed_reason(events: &[ClientEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        ClientEvent::TransferFailed {
            error: crate::TransferError::Cancelled { reason, .. },
            ..
        } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn a_download_not_acknowledged_is_cancelled_at_the_idle_timeout_not_before() {
    let mut net = three();
    let id = running_download(&mut net, 0);
    let alice = net.clients[0].0;
    net.take(0);
    net.advance(IDLE - Duration::from_secs(1));
    assert!(
        cancelled_downloads(&net).is_empty(),
        "not before the timeout"
    );
    assert_eq!(failed_reason(&net.take(0)), None);
    net.advance(Duration::from_secs(1));
    assert_eq!(cancelled_downloads(&net), vec![(alice, id)]);
    let reason = failed_reason(&net.take(0)).expect("the client is told");
    assert_eq!(reason, "download stopped: nothing acknowledged for 60 s");
    // Its slot is free again.
    running_download(&mut net, 0);
    assert!(failed_reason(&net.take(0)).is_none());
}

/// A client that acknowledges a byte more now and then makes no progress:
/// its download ends at the idle timeout, as one that acknowledges
/// nothing (else a few connections could hold every download slot for
/// ever). A chunk's worth more, or the end of the file, is progress.
#[test]
fn acknowledgements_of_a_few_bytes_do_not_keep_a_download_alive() {
    let mut net = three();
    let id = running_download(&mut net, 0);
    let alice = net.clients[0].0;
    let ack = |id, offset| ClientMessage::Ack { id, offset };
    for offset in 1..=5u64 {
        net.advance(IDLE / 5);
        let now = net.now;
        net.hub.handle_message(alice, ack(id, offset), now);
    }
    net.pump();
    assert_eq!(cancelled_downloads(&net), vec![(alice, id)]);
    // A chunk's worth keeps the next one going.
    net.hub_events.clear();
    let id = running_download(&mut net, 0);
    let chunk = crate::limits::DEFAULT_CHUNK_SIZE as u64;
    for n in 1..=5u64 {
        net.advance(IDLE - Duration::from_secs(1));
        let now = net.now;
        net.hub.handle_message(alice, ack(id, n * chunk), now);
    }
    net.pump();
    assert!(cancelled_downloads(&net).is_empty());
}

#[test]
fn acknowledgements_keep_a_download_alive() {
    let mut net = three();
    let id = running_download(&mut net, 0);
    let mut offset = 0u64;
    for _ in 0..6 {
        net.advance(IDLE - Duration::from_secs(5));
        // The server streams a chunk; the session acknowledges it.
        let size = crate::limits::DEFAULT_CHUNK_SIZE;
        let chunk = FileChunk::new(id, offset, vec![1; size]);
        offset += size as u64;
        net.deliver(0, ServerMessage::Chunk(chunk));
        net.pump();
    }
    assert!(cancelled_downloads(&net).is_empty(), "acks keep it going");
    assert!(failed_reason(&net.take(0)).is_none());
    net.advance(IDLE);
    assert_eq!(cancelled_downloads(&net).len(), 1);
}

#[test]
fn a_server_wide_cap_of_one_download_is_named_in_the_singular() {
    // It said "the server is sending 1 files already".
    let limits = Limits {
        max_downloads: 1,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    for n in ["alice", "bob"] {
        net.connect(n);
    }
    running_download(&mut net, 0);
    net.take(1);
    running_download(&mut net, 1);
    let refusal = failed_reason(&net.take(1)).expect("refused");
    assert!(
        refusal.starts_with("the server is sending 1 file already,"),
        "{refusal}"
    );
}

#[test]
fn downloads_past_the_server_wide_cap_are_refused_naming_it() {
    let limits = Limits {
        max_downloads: 2,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    for n in ["alice", "bob", "carol"] {
        net.connect(n);
    }
    let first = running_download(&mut net, 0);
    running_download(&mut net, 1);
    net.take(2);
    running_download(&mut net, 2);
    let events = net.take(2);
    let refusal = failed_reason(&events).expect("refused");
    assert!(refusal.contains("sending 2 files already"), "{refusal}");
    // One ends: there is room again.
    let alice = net.clients[0].0;
    net.hub.download_finished(alice, first);
    running_download(&mut net, 2);
    assert!(failed_reason(&net.take(2)).is_none());
}

fn refused_downloads(net: &Net) -> Vec<(ClientId, String, String)> {
    net.hub_events
        .iter()
        .filter_map(|e| match e {
            HubEvent::DownloadRefused {
                client,
                name,
                reason,
                ..
            } => Some((*client, name.as_str().to_string(), reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn at_the_cap_an_address_under_its_share_takes_a_stalled_slot_of_the_one_holding_most() {
    let limits = Limits {
        max_downloads: 4,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    let hog: std::net::IpAddr = [10, 0, 0, 1].into();
    let other: std::net::IpAddr = [10, 0, 0, 2].into();
    let honest: std::net::IpAddr = [10, 0, 0, 3].into();
    for n in ["h1", "h2", "h3"] {
        net.connect_from(n, hog);
    }
    net.connect_from("bob", other);
    net.connect_from("carol", honest);
    // The hog's address holds three slots, bob the fourth: the cap.
    let mut hogs = Vec::new();
    for i in 0..4 {
        hogs.push((net.clients[i].0, running_download(&mut net, i)));
        assert!(failed_reason(&net.take(i)).is_none(), "download {i}");
    }
    // Nothing stalled yet: carol is refused, and the server hears of it.
    let stall = crate::limits::DOWNLOAD_STALLED;
    net.advance(stall - Duration::from_secs(1));
    running_download(&mut net, 4);
    let refusal = failed_reason(&net.take(4)).expect("refused");
    assert!(refusal.contains("sending 4 files already"), "{refusal}");
    let carol = net.clients[4].0;
    assert_eq!(
        refused_downloads(&net),
        vec![(carol, "a.txt".to_string(), refusal.clone())]
    );
    assert!(cancelled_downloads(&net).is_empty());
    // Once the hog's downloads have acknowledged nothing for the stall
    // time, carol's takes the slot of one of them, which is told why.
    net.advance(Duration::from_secs(1));
    running_download(&mut net, 4);
    assert!(failed_reason(&net.take(4)).is_none(), "carol's runs");
    let cancelled = cancelled_downloads(&net);
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    let (who, id) = cancelled[0];
    assert!(
        hogs[..3].contains(&(who, id)),
        "a download of the hog's address"
    );
    let victim = net.idx(who).unwrap();
    let reason = failed_reason(&net.take(victim)).expect("the hog is told");
    assert!(reason.contains("slot went to another address"), "{reason}");
    assert!(net.hub_events.iter().any(|e| matches!(e,
        HubEvent::DownloadPreempted { client, id: i, for_client }
            if *client == who && *i == id && *for_client == carol)));
    // The hog cannot take it back: its address holds more than its share.
    net.advance(stall);
    running_download(&mut net, victim);
    let again = failed_reason(&net.take(victim)).expect("refused");
    assert!(again.contains("sending 4 files already"), "{again}");
    assert_eq!(cancelled_downloads(&net).len(), 1);
    assert_eq!(refused_downloads(&net).len(), 2);
}

#[test]
fn a_download_refused_for_the_transfers_of_a_client_is_told_to_the_server() {
    let limits = Limits {
        max_transfers: 1,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    net.connect("alice");
    running_download(&mut net, 0);
    net.take(0);
    // The session keeps to the server's limit: bypass it on the wire.
    let alice = net.clients[0].0;
    net.hub.handle_message(
        alice,
        crate::message::ClientMessage::Download {
            id: TransferId(77),
            name: FileName::new("b.txt").unwrap(),
            offset: 0,
        },
        net.now,
    );
    net.pump();
    assert_eq!(
        refused_downloads(&net),
        vec![(
            alice,
            "b.txt".to_string(),
            "at most 1 transfers at once".to_string()
        )]
    );
}

#[test]
fn one_address_cannot_hold_every_download_slot() {
    let limits = Limits {
        max_downloads: 4,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    let one: std::net::IpAddr = [10, 0, 0, 1].into();
    let other: std::net::IpAddr = [10, 0, 0, 2].into();
    for n in ["m1", "m2", "m3", "m4"] {
        net.connect_from(n, one);
    }
    net.connect_from("carol", other);
    // Three of the four slots go to the one address, over three connections.
    for i in 0..3 {
        running_download(&mut net, i);
        assert!(failed_reason(&net.take(i)).is_none(), "download {i}");
    }
    // Its fourth connection is refused, naming the share...
    running_download(&mut net, 3);
    let refusal = failed_reason(&net.take(3)).expect("the fourth is refused");
    assert!(
        refusal.contains("your address has 3 downloads running")
            && refusal.contains("3 of the server's 4"),
        "{refusal}"
    );
    // ...and another address still gets the slot left.
    running_download(&mut net, 4);
    assert!(failed_reason(&net.take(4)).is_none());
}

#[test]
fn an_accepted_push_with_no_data_ends_within_the_offer_answer_time() {
    let mut net = three();
    let id = net
        .s(0)
        .offer(FileName::new("f.bin").unwrap(), 100, Recipient::Everyone)
        .unwrap();
    net.pump();
    assert!(net
        .take(0)
        .iter()
        .any(|e| matches!(e, ClientEvent::PushAccepted { id: i, .. } if *i == id)));
    for i in [1, 2] {
        net.take(i);
    }
    let first = crate::limits::OFFER_AFTER_ACCEPT;
    net.advance(first - Duration::from_secs(1));
    for i in 0..3 {
        assert!(net.take(i).is_empty(), "nothing before the time is up");
    }
    net.advance(Duration::from_secs(1));
    let reason = "no file data within 15 s of the push being accepted";
    for i in [1, 2] {
        assert_eq!(failed_reason(&net.take(i)).as_deref(), Some(reason));
    }
    assert_eq!(
        net.take(0),
        vec![ClientEvent::PushFailed {
            id,
            code: CancelCode::TIMED_OUT,
            reason: reason.into()
        }]
    );
}

#[test]
fn a_push_not_fed_ends_for_its_receivers_and_its_pusher() {
    let mut net = three();
    let id = net
        .s(0)
        .offer(FileName::new("f.bin").unwrap(), 100, Recipient::Everyone)
        .unwrap();
    net.pump();
    net.s(0).push_chunk(id, vec![1; 10]).unwrap();
    net.pump();
    for i in 0..3 {
        net.take(i);
    }
    net.advance(IDLE - Duration::from_secs(1));
    for i in 0..3 {
        assert!(net.take(i).is_empty(), "nothing before the timeout");
    }
    net.advance(Duration::from_secs(1));
    for i in [1, 2] {
        let reason = failed_reason(&net.take(i)).expect("receiver told");
        assert_eq!(reason, "no file data for 60 s");
    }
    assert_eq!(
        net.take(0),
        vec![ClientEvent::PushFailed {
            id,
            code: CancelCode::TIMED_OUT,
            reason: "no file data for 60 s".into()
        }]
    );
}

/// Alice, and bob and carol who are asked about every push.
fn three_asking() -> Net {
    let mut net = three();
    net.s(1).set_auto_accept(None);
    net.s(2).set_auto_accept(None);
    net
}

fn offered(events: &[ClientEvent]) -> Option<TransferId> {
    events.iter().find_map(|e| match e {
        ClientEvent::PushOffered { id, .. } => Some(*id),
        _ => None,
    })
}

/// `from` pushes a small file to bob, who answers an offer with a
/// decline, and the pusher sends the data of an accepted one: whether bob
/// was asked.
fn small_push_to_bob(net: &mut Net, from: usize) -> bool {
    let id = net
        .s(from)
        .offer(
            FileName::new("x.txt").unwrap(),
            3,
            Recipient::User(user("bob")),
        )
        .unwrap();
    net.pump();
    let bob = net.take(1);
    if let Some(offer) = offered(&bob) {
        net.s(1).decline(offer, "not now").unwrap();
        net.pump();
        net.take(from);
        return true;
    }
    assert!(
        bob.iter()
            .any(|e| matches!(e, ClientEvent::TransferStarted { .. })),
        "{bob:?}"
    );
    net.take(from);
    net.s(from).push_chunk(id, b"abc".to_vec()).unwrap();
    net.s(from).push_end(id).unwrap();
    net.pump();
    assert_eq!(received(&net.take(1)), (b"abc".to_vec(), true));
    net.take(from);
    false
}

#[test]
fn a_sender_s_small_pushes_are_asked_about_once_past_its_budget_for_the_hour() {
    let mut net = three();
    // Up to 100 bytes unasked: each push counts for the least charge, 64
    // KiB, and one sender may have four of those in an hour.
    net.s(1).set_auto_accept(Some(100));
    for n in 0..4 {
        assert!(!small_push_to_bob(&mut net, 0), "alice's push {n}");
    }
    assert!(small_push_to_bob(&mut net, 0), "alice's fifth is asked");
    assert!(!small_push_to_bob(&mut net, 2), "carol has her own budget");
    for _ in 0..120 {
        net.advance(Duration::from_secs(30));
    }
    for i in 0..3 {
        net.take(i);
    }
    assert!(
        !small_push_to_bob(&mut net, 0),
        "an hour later, unasked again"
    );
}

#[test]
fn a_sender_under_a_look_alike_name_shares_its_budget_by_the_key_given() {
    let mut net = three();
    // carol stands for a look-alike of alice ("c" and "a" one user here).
    net.s(1).set_auto_accept(Some(100));
    net.s(1)
        .set_name_key(|u| u.as_str().replace("carol", "alice").to_lowercase());
    for n in 0..4 {
        assert!(!small_push_to_bob(&mut net, 0), "alice's push {n}");
    }
    assert!(
        small_push_to_bob(&mut net, 2),
        "the same sender to bob's key"
    );
}

#[test]
fn a_push_goes_only_to_the_receivers_that_accept_it() {
    let mut net = three_asking();
    let data = vec![5u8; 50];
    let id = net
        .s(0)
        .offer(FileName::new("x.iso").unwrap(), 50, Recipient::Everyone)
        .unwrap();
    net.pump();
    let bob_offer = offered(&net.take(1)).expect("bob is asked");
    let carol_offer = offered(&net.take(2)).expect("carol is asked");
    assert!(net.take(0).is_empty(), "the pusher waits for the answers");
    assert_eq!(
        net.s(0).push_chunk(id, data.clone()),
        Err(crate::error::UsageError::NotAccepted { id })
    );
    net.s(1).accept(bob_offer).unwrap();
    net.pump();
    assert!(net.take(0).is_empty(), "carol has not answered yet");
    net.s(2).decline(carol_offer, "not now").unwrap();
    net.pump();
    assert_eq!(
        net.take(0),
        vec![
            ClientEvent::PushAccepted { id, receivers: 1 },
            ClientEvent::PushCredit { id, offset: 50 }
        ]
    );
    net.s(0).push_chunk(id, data.clone()).unwrap();
    net.s(0).push_end(id).unwrap();
    net.pump();
    assert_eq!(received(&net.take(1)), (data, true));
    assert!(net.take(2).is_empty(), "nothing for the one who declined");
    assert_eq!(
        net.take(0),
        vec![ClientEvent::PushDone { id, receivers: 1 }]
    );
}

#[test]
fn a_declined_push_tells_the_pusher_who_declined() {
    let mut net = three_asking();
    let id = net
        .s(0)
        .offer(
            FileName::new("x.iso").unwrap(),
            50,
            Recipient::User(user("bob")),
        )
        .unwrap();
    net.pump();
    let offer = offered(&net.take(1)).unwrap();
    assert_eq!(net.s(1).pending_offers().len(), 1);
    net.s(1).decline(offer, "no thanks").unwrap();
    net.pump();
    assert!(net.s(1).pending_offers().is_empty());
    assert_eq!(
        net.take(0),
        vec![ClientEvent::PushFailed {
            id,
            code: CancelCode::DECLINED,
            reason: "bob did not accept the file".into()
        }]
    );
}

#[test]
fn an_unanswered_offer_counts_as_declined_after_the_offer_timeout() {
    let mut net = three();
    net.s(2).set_auto_accept(None);
    let (id, offer) = x_iso_offered_to_all(&mut net);
    let carol_offer = offered(&net.take(2)).unwrap();
    // Nobody answers: the offer waits its whole timeout.
    net.advance(OFFER - Duration::from_secs(1));
    assert!(net.take(0).is_empty(), "still waiting for bob and carol");
    // Carol accepts late in it: bob keeps what is left of the offer's
    // time (less than the wait after an acceptance).
    net.s(2).accept(carol_offer).unwrap();
    net.pump();
    assert!(net.take(0).is_empty(), "still waiting for bob");
    net.advance(Duration::from_secs(1));
    withdrawn_from_bob_sent_to_one(&mut net, (id, offer), "not accepted within 120 s");
}

/// Once one receiver has accepted a push, the others have 15 s more to
/// answer, not the rest of the offer timeout: one user away from the
/// keyboard does not hold a push to everyone for two minutes.
#[test]
fn after_a_first_acceptance_the_others_have_a_short_while_to_answer() {
    let mut net = three();
    let (id, offer) = x_iso_offered_to_all(&mut net);
    // Carol accepted at once (a small file); bob does not answer.
    assert!(matches!(
        &net.take(2)[..],
        [ClientEvent::TransferStarted { .. }]
    ));
    net.advance(crate::limits::OFFER_AFTER_ACCEPT - Duration::from_secs(1));
    assert!(net.take(0).is_empty(), "still waiting for bob");
    net.advance(Duration::from_secs(1));
    withdrawn_from_bob_sent_to_one(
        &mut net,
        (id, offer),
        "not accepted within 15 s of another receiver's acceptance: sent to those who accepted",
    );
}

/// Alice offers x.iso (50 bytes) to everyone; bob (client 1) accepts
/// nothing by himself. Her id, and bob's of the offer.
fn x_iso_offered_to_all(net: &mut Net) -> (TransferId, TransferId) {
    net.s(1).set_auto_accept(None);
    let id = net
        .s(0)
        .offer(FileName::new("x.iso").unwrap(), 50, Recipient::Everyone)
        .unwrap();
    net.pump();
    (id, offered(&net.take(1)).unwrap())
}

/// Bob's offer of x.iso was withdrawn for `reason`, alice was told to
/// send to one receiver, and a late accept of bob's changes nothing.
fn withdrawn_from_bob_sent_to_one(
    net: &mut Net,
    (id, offer): (TransferId, TransferId),
    reason: &str,
) {
    assert_eq!(
        net.take(1),
        vec![ClientEvent::OfferWithdrawn {
            id: offer,
            from: user("alice"),
            name: FileName::new("x.iso").unwrap(),
            reason: reason.into()
        }]
    );
    let size = net.s(0).push_room(id);
    assert_eq!(
        net.take(0),
        vec![
            ClientEvent::PushAccepted { id, receivers: 1 },
            ClientEvent::PushCredit { id, offset: size }
        ]
    );
    assert!(size > 0);
    assert!(net.s(1).accept(offer).is_err());
}

#[test]
fn push_data_before_the_receivers_accept_cancels_the_push() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let ids: Vec<ClientId> = (0..2).map(|_| hub.handle_connect(now)).collect();
    for (id, name) in ids.iter().zip(["ann", "ben"]) {
        hub.handle_message(
            *id,
            ClientMessage::Hello {
                resume: None,
                version: PROTOCOL_VERSION,
                username: user(name),
            },
            now,
        );
    }
    while hub.poll_transmit().is_some() {}
    let push = TransferId(3);
    hub.handle_message(
        ids[0],
        ClientMessage::Offer {
            id: push,
            name: FileName::new("f.txt").unwrap(),
            size: 4,
            to: Recipient::Everyone,
        },
        now,
    );
    hub.handle_message(
        ids[0],
        ClientMessage::Chunk(FileChunk::new(push, 0, b"file".to_vec())),
        now,
    );
    let sent: Vec<_> = std::iter::from_fn(|| hub.poll_transmit())
        .map(|t| t.message)
        .collect();
    assert!(
        !sent.iter().any(|m| matches!(m, ServerMessage::Chunk(_))),
        "nothing relayed"
    );
    assert!(sent.iter().any(|m| matches!(
        m,
        ServerMessage::Cancel(FileCancel { id, code: CancelCode::BAD_CHUNK, .. }) if *id == push
    )));
}

#[test]
fn a_push_that_fails_its_checks_names_each_side_its_own_transfer_id() {
    for bad_chunk in [true, false] {
        let mut hub = Hub::new(Limits::default(), "hi");
        let now = Instant::now();
        let ids: Vec<ClientId> = (0..2).map(|_| hub.handle_connect(now)).collect();
        for (id, name) in ids.iter().zip(["ann", "ben"]) {
            hello(&mut hub, *id, name, now);
        }
        let push = TransferId(3);
        hub.handle_message(
            ids[0],
            ClientMessage::Offer {
                id: push,
                name: FileName::new("f.txt").unwrap(),
                size: 8,
                to: Recipient::Everyone,
            },
            now,
        );
        // Ben's id for the push, as its offer showed it.
        let relay = TransferId(TransferId::SERVER_BIT | 1);
        hub.handle_message(ids[1], ClientMessage::Accept { id: relay }, now);
        while hub.poll_transmit().is_some() {}
        let mut chunk = FileChunk::new(push, 0, b"file".to_vec());
        if bad_chunk {
            chunk.crc ^= 1;
        }
        hub.handle_message(ids[0], ClientMessage::Chunk(chunk), now);
        if !bad_chunk {
            // Half the file, then its end.
            let crc = crc32fast::hash(b"file");
            hub.handle_message(ids[0], ClientMessage::End(FileEnd { id: push, crc }), now);
        }
        let mut reasons = Vec::new();
        while let Some(t) = hub.poll_transmit() {
            if let ServerMessage::Cancel(c) = &t.message {
                for to in t.to.iter() {
                    reasons.push((to, c.id, c.reason.clone()));
                }
            }
        }
        let told = |who: ClientId| -> (TransferId, String) {
            let found = reasons.iter().find(|(to, ..)| *to == who);
            let (_, id, reason) = found.unwrap_or_else(|| panic!("{who:?} not told: {reasons:?}"));
            (*id, reason.clone())
        };
        let (ann_id, ann) = told(ids[0]);
        let (ben_id, ben) = told(ids[1]);
        assert_eq!((ann_id, ben_id), (push, relay));
        assert!(ann.contains("transfer #3"), "the pusher's: {ann}");
        assert!(
            ben.contains("transfer #1") && !ben.contains("#3"),
            "the receiver's: {ben}"
        );
    }
}

/// Client `from` sends `count` chats of `text_len` bytes, each when
/// `next_send_at` allows, on the virtual clock; the hub reads each one no
/// earlier than its throttle allows. Returns how long it took and how many
/// times the hub had to slow the sender.
fn paced_chats(net: &mut Net, from: usize, count: usize, text_len: usize) -> (Duration, usize) {
    let start = net.now;
    let id = net.clients[from].0;
    let mut slowed = 0;
    for i in 0..count {
        if let Some(t) = {
            let now = net.now;
            net.s(from).next_send_at(now, text_len)
        } {
            assert!(t > net.now, "a wait ends in the future");
            net.now = t;
        }
        let text = format!("{i:05}{}", "k".repeat(text_len - 5));
        net.s(from).send_chat(Recipient::Everyone, &text).unwrap();
        if let Some(t) = net.hub.throttle(id) {
            if t > net.now {
                slowed += 1;
                net.now = t;
            }
        }
        net.pump();
    }
    (net.now - start, slowed)
}

#[test]
fn a_full_window_of_unacknowledged_chats_is_said_until_acknowledgements_come() {
    let limits = Limits {
        max_unacked: 3,
        rate_per_sec: 0,
        ..Limits::default()
    };
    let mut net = Net::new(limits.clone());
    net.connect_with("alice", limits.clone());
    net.connect_with("bob", limits);
    let now = net.now;
    for i in 0..3 {
        assert!(!net.s(0).window_full(2), "chat {i}");
        net.s(0).send_chat(Recipient::Everyone, "hi").unwrap();
    }
    // Three wait for the server's acknowledgement: a fourth would give
    // the first up. The rate alone does not wait.
    assert!(net.s(0).window_full(2), "the window is full");
    assert_eq!(net.s(0).next_send_at(now, 2), None);
    net.pump();
    assert!(!net.s(0).window_full(2), "acknowledged: room again");
    assert!(!net
        .take(0)
        .iter()
        .any(|e| matches!(e, ClientEvent::NotSent { .. })));
}

#[test]
fn a_client_that_waits_for_next_send_at_is_never_slowed_nor_cut_off() {
    let mut net = three();
    // 2,000 lines at the default 50 a second after a burst of 100: about
    // 40 s (the client spends 90 % of the rate: 42 s).
    let (took, slowed) = paced_chats(&mut net, 0, 2000, 1024);
    assert_eq!(slowed, 0, "the server never had to slow the client");
    let got = chats(&net.take(1));
    assert_eq!(got.len(), 2000, "every line arrived");
    for (i, (from, _, text)) in got.iter().enumerate() {
        assert_eq!(from, "alice");
        assert!(text.starts_with(&format!("{i:05}")), "in order");
    }
    let secs = took.as_secs_f64();
    assert!((40.0..44.0).contains(&secs), "took {secs} s");
    assert!(!net
        .hub_events
        .iter()
        .any(|e| matches!(e, HubEvent::Close { .. })));
}

#[test]
fn long_texts_are_paced_by_the_byte_rate() {
    let mut net = three();
    // 100 texts of 60 kB (6 MB) at 1 MiB a second after a burst of 1 MiB:
    // the message rate alone would let them all go at once.
    let (took, slowed) = paced_chats(&mut net, 0, 100, 60_000);
    assert_eq!(slowed, 0);
    assert_eq!(chats(&net.take(1)).len(), 100);
    let want = (6_000_000.0 - 1_048_576.0) / (1_048_576.0 * 0.9);
    let secs = took.as_secs_f64();
    assert!(
        (want - 0.5..want + 0.5).contains(&secs),
        "took {secs} s, want {want}"
    );
}

#[test]
fn requests_and_their_answers_are_charged_as_the_server_charges_them() {
    let mut net = three();
    for i in 0..250 {
        net.files.push(FileEntry {
            name: FileName::new(format!("f{i}.txt")).unwrap(),
            size: 1,
        });
    }
    // 97 chats and a list of 250 files (1 + 2 messages) spend the burst of 100.
    for _ in 0..97 {
        assert_eq!(
            {
                let now = net.now;
                net.s(0).next_send_at(now, 1)
            },
            None
        );
        net.s(0).send_chat(Recipient::Everyone, "x").unwrap();
    }
    assert_eq!(
        {
            let now = net.now;
            net.s(0).next_send_at(now, 0)
        },
        None
    );
    net.s(0).list_files().unwrap();
    net.pump();
    assert_the_burst_spent_as_the_server_counts(&mut net);
}

/// The count of the shared files costs the server a scan of the folder,
/// as the list does: one message per 100 files counted, which the client
/// charges too, so that asking again and again when it may never goes
/// over the rate.
#[test]
fn an_access_to_the_shared_files_is_charged_as_the_server_charges_it() {
    let mut net = three();
    net.files = entries(250, |i| format!("f{i}.txt"));
    // 97 chats and an access to 250 files (1 + 2 messages) spend the burst.
    for _ in 0..97 {
        net.s(0).send_chat(Recipient::Everyone, "x").unwrap();
    }
    net.s(0).files_access().unwrap();
    net.pump();
    assert_the_burst_spent_as_the_server_counts(&mut net);
}

/// Alice's client has spent its burst, and waits one message's time at
/// 45 a second for the next; the server agrees (it would not hold her back).
fn assert_the_burst_spent_as_the_server_counts(net: &mut Net) {
    let now = net.now;
    let t = net.s(0).next_send_at(now, 0).expect("the burst is spent");
    let wait = (t - net.now).as_secs_f64();
    assert!((0.02..0.03).contains(&wait), "{wait}");
    assert_eq!(
        net.hub.throttle(net.clients[0].0),
        None,
        "the server agrees"
    );
}

#[test]
fn without_a_rate_limit_nothing_waits() {
    let limits = Limits {
        rate_per_sec: 0,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    net.connect("alice");
    for _ in 0..1000 {
        assert_eq!(
            {
                let now = net.now;
                net.s(0).next_send_at(now, 60_000)
            },
            None
        );
        net.s(0).send_chat(Recipient::Everyone, "x").unwrap();
    }
}

#[test]
fn settle_is_answered_once_every_answer_asked_for_has_arrived() {
    let mut net = three();
    assert!(net.s(0).is_settled());
    net.s(0).who().unwrap();
    net.s(0).list_files().unwrap();
    net.s(0).settle().unwrap();
    assert!(!net.s(0).is_settled(), "nothing answered yet");
    net.pump();
    assert!(net.s(0).is_settled());
    let events = net.take(0);
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Who { .. })));
    assert!(events.iter().any(|e| matches!(
        e,
        ClientEvent::FileList(crate::FileListPart { last: true, .. })
    )));
    // A download of ours keeps it unsettled until it ends.
    let name = FileName::new("a.txt").unwrap();
    let id = net.s(0).download(name.clone(), None).unwrap();
    net.s(0).settle().unwrap();
    net.pump();
    assert!(!net.s(0).is_settled(), "the download runs");
    let alice = net.clients[0].0;
    net.hub.accept_download(alice, id, name, 5, 0);
    net.pump();
    assert!(!net.s(0).is_settled(), "the download runs");
    let mut out = crate::Outgoing::new(id, 5);
    let c = out.next_chunk(b"hello".to_vec()).unwrap();
    net.deliver(0, ServerMessage::Chunk(c));
    net.deliver(0, ServerMessage::End(out.finish().unwrap()));
    assert!(net.s(0).is_settled(), "done");
}

#[test]
fn answered_once_a_settle_after_the_last_request_is_answered() {
    let mut net = three();
    net.pump();
    let _ = net.take(0);
    // A fresh session has asked nothing.
    assert!(net.s(0).is_answered());
    net.s(0).who().unwrap();
    assert!(!net.s(0).is_answered(), "the who is not answered");
    net.s(0).list_files().unwrap();
    net.s(0).settle().unwrap();
    net.pump();
    assert!(
        net.s(0).is_answered(),
        "the list is complete, the who answered"
    );
    // A request after the settle is not covered by its answer.
    net.s(0).who().unwrap();
    net.s(0).settle().unwrap();
    net.s(0).send_chat(Recipient::Everyone, "later").unwrap();
    net.pump();
    assert!(!net.s(0).is_answered(), "the chat came after the settle");
    net.s(0).settle().unwrap();
    net.pump();
    assert!(net.s(0).is_answered());
    // A running download does not keep it unanswered.
    let id = net
        .s(0)
        .download(FileName::new("a.txt").unwrap(), None)
        .unwrap();
    net.s(0).settle().unwrap();
    let alice = net.clients[0].0;
    net.hub
        .accept_download(alice, id, FileName::new("a.txt").unwrap(), 5, 0);
    net.pump();
    assert!(net.s(0).is_answered());
    assert!(!net.s(0).is_settled(), "the download runs");
}

// ---------------------------------------------------------------------------
// Sessions that outlive a connection: acks, resume, history.

/// A network whose hub offers resume (a deterministic token source) with
/// these limits, and users joined under `names`.
fn resumable(limits: Limits, names: &[&str]) -> Net {
    let mut net = Net::new(limits);
    let mut n = 0u8;
    net.hub.set_token_source(Box::new(move || {
        n = n.wrapping_add(1);
        [n; 16]
    }));
    for name in names {
        net.connect(name);
    }
    for i in 0..names.len() {
        net.take(i);
    }
    net
}

/// A private message to a user whose session waits for a resume reaches
/// no connection now, and the hub says it is held (the server's log read
/// "0 receivers", as if it were lost) and tells its sender that the user
/// is away; the user gets it on its resume.
#[test]
fn a_private_message_to_a_user_away_is_reported_held_and_arrives_on_the_resume() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.cut(1);
    net.hub_events.clear();
    let bob = Username::new("bob").unwrap();
    net.s(0)
        .send_chat(Recipient::User(bob.clone()), "are you there")
        .unwrap();
    net.s(0).send_chat(Recipient::Everyone, "anyone?").unwrap();
    net.pump();
    let routed: Vec<(Option<Username>, usize, bool)> = net
        .hub_events
        .iter()
        .filter_map(|e| match e {
            HubEvent::Routed {
                to,
                receivers,
                waiting,
                ..
            } => Some((to.clone(), *receivers, *waiting)),
            _ => None,
        })
        .collect();
    assert_eq!(routed, vec![(Some(bob), 0, true), (None, 0, false)]);
    // Its sender is told, once, and only for the private one.
    let notices: Vec<(NoticeCode, String)> = net
        .take(0)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Notice { code, text } => Some((code, text)),
            _ => None,
        })
        .collect();
    let grace = Limits::default().grace.as_secs();
    assert_eq!(
        notices,
        [(
            NoticeCode::AWAY,
            format!(
                "bob is away (connection lost): they get your message if they come back within {grace} s"
            )
        )]
    );
    assert!(!NoticeCode::AWAY.is_failure() && NoticeCode::FAILED.is_failure());
    net.reconnect(1);
    let texts: Vec<String> = net
        .take(1)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) => Some(c.text),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["are you there", "anyone?"]);
}

/// The notices of [`ClientEvent::Notice`] with code `AWAY` among `events`.
fn away_notices(events: Vec<ClientEvent>) -> usize {
    events
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Notice { code, .. } if *code == NoticeCode::AWAY))
        .count()
}

/// A sender writing several lines to a user away is told once that the
/// user is away, not once per line (a burst would bury its chat in the
/// same notice); another sender is told too, and once the user is back
/// and away again, the next message tells again.
#[test]
fn a_sender_is_told_once_per_absence_that_its_receiver_is_away() {
    let mut net = resumable(Limits::default(), &["alice", "bob", "carol"]);
    net.cut(1);
    let bob = Username::new("bob").unwrap();
    for i in 0..5 {
        net.s(0)
            .send_chat(Recipient::User(bob.clone()), &format!("line {i}"))
            .unwrap();
    }
    net.s(2)
        .send_chat(Recipient::User(bob.clone()), "me too")
        .unwrap();
    net.pump();
    assert_eq!(away_notices(net.take(0)), 1);
    assert_eq!(away_notices(net.take(2)), 1);
    net.reconnect(1);
    net.take(1);
    net.s(0)
        .send_chat(Recipient::User(bob.clone()), "back?")
        .unwrap();
    net.pump();
    assert_eq!(away_notices(net.take(0)), 0);
    net.cut(1);
    net.s(0)
        .send_chat(Recipient::User(bob.clone()), "gone again")
        .unwrap();
    net.s(0).send_chat(Recipient::User(bob), "still?").unwrap();
    net.pump();
    assert_eq!(away_notices(net.take(0)), 1);
}

/// A session away remembers at most `AWAY_TOLD_SENDERS` senders told
/// that its user is away, however many names write to it (each new name
/// was one more, for as long as the grace period); a sender past them is
/// told at each message, as before there was a once.
#[test]
fn the_senders_told_a_user_is_away_are_remembered_within_a_bound() {
    use crate::limits::AWAY_TOLD_SENDERS;
    let mut hub = token_hub(Limits::default());
    let t0 = Instant::now();
    let ann = joined(&mut hub, "ann", t0);
    hub.handle_disconnect(ann, LeaveReason::LOST);
    let to_ann = |client_id: u64| ClientMessage::Chat {
        client_id,
        to: Recipient::User(user("ann")),
        kind: ChatKind::Text,
        text: "are you there".into(),
    };
    let away_notices = |hub: &mut Hub, to: ClientId| {
        std::iter::from_fn(|| hub.poll_transmit())
            .filter(|t| t.to.contains(to))
            .filter(|t| {
                matches!(&t.message, ServerMessage::Notice { code, .. } if *code == NoticeCode::AWAY)
            })
            .count()
    };
    let mut last = ann;
    for i in 0..=AWAY_TOLD_SENDERS {
        last = joined(&mut hub, &format!("s{i}"), t0);
        hub.handle_message(last, to_ann(1), t0);
        assert_eq!(away_notices(&mut hub, last), 1, "sender {i}");
    }
    hub.check_invariants().unwrap();
    hub.handle_message(last, to_ann(2), t0);
    assert_eq!(
        away_notices(&mut hub, last),
        1,
        "past the bound: told again"
    );
}

/// The `Resumed` event says up to which id the replay goes: what was
/// missed (a chat, a join, a leave) is at or below it, what comes live
/// after it above it.
#[test]
fn a_resume_says_which_ids_are_the_replay() {
    let mut net = resumable(Limits::default(), &["alice", "bob", "carol"]);
    net.cut(0);
    net.s(1)
        .send_chat(Recipient::Everyone, "while away")
        .unwrap();
    net.pump();
    net.connect("dave");
    net.take(3);
    net.reconnect(0);
    let events = net.take(0);
    let through = events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Resumed { through, .. } => Some(*through),
            _ => None,
        })
        .expect("resumed");
    let missed: Vec<(MessageId, String)> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) => Some((c.id, c.text.clone())),
            ClientEvent::Joined { id, user, .. } => Some((*id, format!("{user} joined"))),
            _ => None,
        })
        .collect();
    let texts: Vec<&str> = missed.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["while away", "dave joined"]);
    assert!(
        missed.iter().all(|(id, _)| *id <= through),
        "{missed:?} {through:?}"
    );
    net.s(2).send_chat(Recipient::Everyone, "live").unwrap();
    net.pump();
    let live: Vec<MessageId> = net
        .take(0)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) => Some(c.id),
            _ => None,
        })
        .collect();
    assert!(
        matches!(live[..], [id] if id > through),
        "{live:?} {through:?}"
    );
}

impl Net {
    /// Client `i`'s connection breaks: the hub learns it, and nothing more
    /// reaches either side on it.
    fn cut(&mut self, i: usize) {
        let id = self.clients[i].0;
        self.closed.push(id);
        self.hub.handle_disconnect(id, LeaveReason::LOST);
        self.pump();
    }

    /// Client `i` connects again and asks for its session back.
    fn reconnect(&mut self, i: usize) {
        let id = self.hub.handle_connect(self.now);
        self.clients[i].0 = id;
        let now = self.now;
        self.clients[i].1.reconnect(now);
        self.pump();
    }

    /// Hands the hub's queued transmits to their clients, skipping client `skip`.
    fn deliver_hub_except(&mut self, skip: Option<usize>) {
        while let Some(t) = self.hub.poll_transmit() {
            for to in t.to.iter() {
                let Some(i) = self.idx(to) else { continue };
                if Some(i) == skip || self.closed.contains(&to) {
                    continue;
                }
                let m: ServerMessage = through_wire(&t.message);
                let now = self.now;
                self.clients[i].1.handle_message(m, now);
            }
        }
    }
}

fn texts_from(events: &[ClientEvent], from: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) if c.from.as_str() == from && !c.history => Some(c.text.clone()),
            _ => None,
        })
        .collect()
}

/// The texts of the chat messages among `events`, in order.
fn chat_texts(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) => Some(c.text.clone()),
            _ => None,
        })
        .collect()
}

fn burst(n: usize) -> Vec<String> {
    (0..n).map(|j| format!("m{j}")).collect()
}

#[test]
fn a_send_cut_at_any_point_is_delivered_exactly_once_in_order_after_a_resume() {
    // The client's connection breaks after k of its 6 messages reached the
    // hub, with the hub's acks for them delivered or lost.
    for k in 0..=6 {
        for acks_arrive in [false, true] {
            let mut net = resumable(Limits::default(), &["alice", "bob"]);
            for t in burst(6) {
                net.s(0).send_chat(Recipient::Everyone, &t).unwrap();
            }
            let alice = net.clients[0].0;
            let mut sent = Vec::new();
            while let Some(m) = net.s(0).poll_transmit() {
                sent.push(m);
            }
            for m in sent.into_iter().take(k) {
                let now = net.now;
                net.hub.handle_message(alice, through_wire(&m), now);
            }
            net.deliver_hub_except((!acks_arrive).then_some(0));
            assert_eq!(net.s(0).unacked(), if acks_arrive { 6 - k } else { 6 });
            net.cut(0);
            net.reconnect(0);
            let bob = net.take(1);
            assert_eq!(
                texts_from(&bob, "alice"),
                burst(6),
                "k={k} acks={acks_arrive}"
            );
            assert!(!bob.iter().any(|e| matches!(e, ClientEvent::Left(_))));
            assert_eq!(net.s(0).unacked(), 0);
            assert!(net
                .take(0)
                .iter()
                .any(|e| matches!(e, ClientEvent::Resumed { dropped: 0, .. })));
        }
    }
}

#[test]
fn a_receive_cut_mid_burst_is_made_whole_by_the_replay() {
    for k in 0..=6 {
        let mut net = resumable(Limits::default(), &["alice", "bob"]);
        for t in burst(6) {
            net.s(1).send_chat(Recipient::Everyone, &t).unwrap();
        }
        // Bob's burst reaches the hub whole; alice gets only k of it.
        let bob = net.clients[1].0;
        while let Some(m) = net.s(1).poll_transmit() {
            let now = net.now;
            net.hub.handle_message(bob, through_wire(&m), now);
        }
        let alice = net.clients[0].0;
        let mut given = 0;
        while let Some(t) = net.hub.poll_transmit() {
            if t.to.contains(alice) && given < k {
                given += 1;
                let now = net.now;
                net.clients[0]
                    .1
                    .handle_message(through_wire(&t.message), now);
            }
        }
        net.cut(0);
        net.reconnect(0);
        assert_eq!(texts_from(&net.take(0), "bob"), burst(6), "k={k}");
        assert!(!net
            .take(1)
            .iter()
            .any(|e| matches!(e, ClientEvent::Left(_))));
    }
}

#[test]
fn a_restarted_program_takes_its_saved_session_back() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    // Saved at the start, then a message sent and acknowledged: the next
    // run starts past its id all the same.
    let saved = net.s(0).saved().expect("the welcome offered a resume");
    assert_eq!(saved.next_client_id, 1 + crate::SAVED_ID_LEASE);
    assert_eq!(saved.last_seen, net.s(0).last_seen());
    net.s(0).send_chat(Recipient::Everyone, "before").unwrap();
    net.pump();
    assert_eq!(net.s(0).unacked(), 0);
    net.take(1);
    // The program dies: its connection breaks, its session is gone.
    net.cut(0);
    net.s(1).send_chat(Recipient::Everyone, "missed").unwrap();
    net.pump();
    // It starts again, from what it saved.
    let id = net.hub.handle_connect(net.now);
    let now = net.now;
    net.clients[0] = (
        id,
        ClientSession::resuming(user("alice"), Limits::default(), now, saved),
    );
    net.pump();
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { dropped: 0, .. })),
        "{alice:?}"
    );
    assert_eq!(texts_from(&alice, "bob"), ["missed"]);
    let again = net.s(0).saved().expect("a new token");
    assert!(!again.token.matches(&saved.token), "a token works once");
    // Its next message is new to the server, not a duplicate of "before".
    net.s(0).send_chat(Recipient::Everyone, "after").unwrap();
    net.pump();
    let bob = net.take(1);
    assert_eq!(texts_from(&bob, "alice"), ["after"]);
    assert!(!bob
        .iter()
        .any(|e| matches!(e, ClientEvent::Left(_) | ClientEvent::Joined { .. })));
    assert_eq!(net.s(0).unacked(), 0);
}

/// A saved session whose newest id seen is past every id the server gave
/// (its file damaged, or edited) still resumes with its right token; the
/// session must not go on taking every message after it for one it has
/// already shown. It used to: nothing anyone said reached the user, and
/// the file kept the id for the next run.
#[test]
fn a_resume_claiming_ids_the_server_never_gave_still_shows_what_follows() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    let mut saved = net.s(0).saved().expect("the welcome offered a resume");
    saved.last_seen = MessageId(saved.last_seen.0 + 1_000_000);
    net.cut(0);
    net.pump();
    let id = net.hub.handle_connect(net.now);
    let now = net.now;
    net.clients[0] = (
        id,
        ClientSession::resuming(user("alice"), Limits::default(), now, saved),
    );
    net.pump();
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { .. })),
        "{alice:?}"
    );
    assert!(net.s(0).last_seen() <= net.hub.last_id(), "{alice:?}");
    net.s(1).send_chat(Recipient::Everyone, "after").unwrap();
    net.pump();
    assert_eq!(texts_from(&net.take(0), "bob"), ["after"]);
    let again = net.s(0).saved().expect("a new token");
    assert!(again.last_seen <= net.hub.last_id(), "{again:?}");
}

#[test]
fn a_saved_session_that_expired_starts_afresh_and_says_so() {
    let mut net = resumable(Limits::default(), &["alice"]);
    let saved = net.s(0).saved().unwrap();
    net.s(0).quit("");
    net.pump();
    let id = net.hub.handle_connect(net.now);
    let now = net.now;
    net.clients[0] = (
        id,
        ClientSession::resuming(user("alice"), Limits::default(), now, saved),
    );
    net.pump();
    let alice = net.take(0);
    assert!(net.s(0).is_joined());
    assert!(
        alice.contains(&ClientEvent::ContinuityLost {
            reason: "session expired".into()
        }),
        "{alice:?}"
    );
}

#[test]
fn a_resent_duplicate_is_acknowledged_again_and_routed_once() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let now = Instant::now();
    let a = joined(&mut hub, "alice", now);
    let b = joined(&mut hub, "bob", now);
    while hub.poll_transmit().is_some() {}
    let chat = ClientMessage::Chat {
        client_id: 7,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: "once".into(),
    };
    hub.handle_message(a, chat.clone(), now);
    hub.handle_message(a, chat, now);
    let out: Vec<Transmit> = std::iter::from_fn(|| hub.poll_transmit()).collect();
    let acks: Vec<_> = out
        .iter()
        .filter(|t| matches!(t.message, ServerMessage::Ack { client_id: 7, .. }))
        .map(|t| t.message.clone())
        .collect();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0], acks[1], "the same id and time both times");
    let routed = out
        .iter()
        .filter(|t| t.to.contains(b) && matches!(t.message, ServerMessage::Chat(_)))
        .count();
    assert_eq!(routed, 1);
    // A refused one is refused again, naming it.
    let to_nobody = ClientMessage::Chat {
        client_id: 8,
        to: Recipient::User(user("nobody")),
        kind: ChatKind::Text,
        text: "x".into(),
    };
    hub.handle_message(a, to_nobody.clone(), now);
    hub.handle_message(a, to_nobody, now);
    let errors = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| {
            matches!(
                t.message,
                ServerMessage::Error {
                    code: ErrorCode::UNKNOWN_USER,
                    client_id: 8,
                    ..
                }
            )
        })
        .count();
    assert_eq!(errors, 2);
}

/// A push to a user whose session waits for a resume (listed by /who) is
/// refused for what it is, not as "no user … is online".
#[test]
fn a_push_to_a_user_who_is_away_says_so() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.cut(0);
    net.s(1)
        .offer(
            FileName::new("f.bin").unwrap(),
            3,
            Recipient::User(user("alice")),
        )
        .unwrap();
    net.pump();
    let events = net.take(1);
    let failed = events.iter().find_map(|e| match e {
        ClientEvent::PushFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        failed.as_deref(),
        Some("alice is away (connection lost, may come back): a file can only be sent to a connected user"),
        "{events:?}"
    );
}

/// What a member was told of users going away and coming back, and of
/// leaves and joins among them: "away alice", "back alice", "left alice",
/// "joined alice".
fn comings_and_goings(events: Vec<ClientEvent>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Away { user, .. } => Some(format!("away {user}")),
            ClientEvent::Back { user, .. } => Some(format!("back {user}")),
            ClientEvent::Left(d) => Some(format!("left {}", d.user)),
            ClientEvent::Joined { user, .. } => Some(format!("joined {user}")),
            _ => None,
        })
        .collect()
}

#[test]
fn members_are_told_live_when_a_user_goes_away_and_when_it_is_back() {
    let mut net = resumable(Limits::default(), &["alice", "bob", "carol"]);
    net.cut(0);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(1)), ["away alice"]);
    assert_eq!(comings_and_goings(net.take(2)), ["away alice"]);
    net.advance(Duration::from_secs(5));
    net.reconnect(0);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(1)), ["back alice"]);
    assert_eq!(comings_and_goings(net.take(2)), ["back alice"]);
    // Never about itself.
    assert!(comings_and_goings(net.take(0)).is_empty());
    // Still away by `Who` until then, here after.
    net.s(1).who().unwrap();
    net.pump();
    assert!(net.take(1).contains(&ClientEvent::Who {
        users: vec![here("alice"), here("bob"), here("carol")]
    }));
}

#[test]
fn a_user_away_that_never_comes_back_is_told_away_then_left_and_never_back() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.cut(0);
    net.advance(Duration::from_secs(61));
    assert_eq!(
        comings_and_goings(net.take(1)),
        ["away alice", "left alice"]
    );
}

/// A resume whose back fills the waiting joins and leaves to their bound
/// (the batch then goes out at once) does not send that batch to the
/// resumed connection ahead of its `Welcome`: the first frame a connection
/// gets is its `Welcome`, and a user is never told of its own away and
/// back. (A client that lost and resumed its connection in a loop got a
/// `Presence` of 1,024 of its own aways and backs before its `Welcome`.)
#[test]
fn a_resume_that_fills_the_presence_batch_gets_its_welcome_first() {
    // Resumes at one instant, as many as it takes: no window to count
    // them in (see `SESSION_RESUMES`).
    let limits = Limits {
        resume_window: Duration::ZERO,
        ..Limits::default()
    };
    let mut hub = many_tokens_hub(limits);
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let _bob = joined(&mut hub, "bob", t0);
    let mut ann = joined(&mut hub, "ann", t0);
    let mut token = welcome_token(&mut hub, ann);
    hub.flush_presence();
    while hub.poll_transmit().is_some() {}
    // Each loss and resume queues an away and a back: within
    // MAX_PRESENCE_EVENTS of them, a back reaches the bound.
    let mut filled = false;
    for cycle in 0..MAX_PRESENCE_EVENTS {
        hub.handle_disconnect(ann, LeaveReason::LOST);
        filled |= hub.pending_presence() + 1 == MAX_PRESENCE_EVENTS;
        let back = hub.handle_connect(t0);
        hub.handle_message(back, resume_hello("ann", token, epoch), t0);
        let all: Vec<_> = std::iter::from_fn(|| hub.poll_transmit()).collect();
        let to_it: Vec<ServerMessage> = all
            .into_iter()
            .filter(|t| t.to.contains(back))
            .map(|t| t.message)
            .collect();
        match to_it.first() {
            Some(ServerMessage::Welcome {
                token: next,
                resumed: Some(_),
                ..
            }) => token = *next,
            other => {
                let what: String = format!("{other:?}").chars().take(60).collect();
                panic!("resume {cycle}: {what}… before the welcome")
            }
        }
        assert!(
            !to_it
                .iter()
                .any(|m| matches!(m, ServerMessage::Presence(_))),
            "resume {cycle}: told of its own away and back"
        );
        while hub.poll_event().is_some() {}
        ann = back;
        if filled {
            break;
        }
    }
    assert!(filled, "the batch never reached its bound on a back");
    hub.check_invariants().unwrap();
}

/// A session resumed `SESSION_RESUMES` times within the resume window
/// is not resumed again until the window is over: the next resume is
/// refused with `TOO_MANY_ATTEMPTS` saying how long to wait, and the
/// session waits as before (no leave), its token still good. (A client
/// losing and resuming its connection in a loop cost its server a stored
/// session and every member an away and a back each time, more than a
/// thousand times a second, bounded by no rate.)
#[test]
fn a_session_resumed_in_a_loop_is_refused_until_the_window_is_over() {
    use crate::limits::{DEFAULT_RESUME_WINDOW, SESSION_RESUMES};
    let mut hub = many_tokens_hub(Limits::default());
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let _bob = joined(&mut hub, "bob", t0);
    let mut ann = joined(&mut hub, "ann", t0);
    let mut token = welcome_token(&mut hub, ann);
    let mut now = t0;
    for i in 0..=SESSION_RESUMES {
        hub.handle_disconnect(ann, LeaveReason::LOST);
        let back = hub.handle_connect(now);
        hub.handle_message(back, resume_hello("ann", token, epoch), now);
        let said = std::iter::from_fn(|| hub.poll_transmit())
            .filter(|t| t.to.contains(back))
            .find_map(|t| match t.message {
                ServerMessage::Welcome {
                    token: next,
                    resumed: Some(_),
                    ..
                } => {
                    token = next;
                    Some("resumed".to_string())
                }
                ServerMessage::Refused { code, reason, .. } => Some(format!("{code}: {reason}")),
                _ => None,
            })
            .unwrap_or_default();
        while hub.poll_transmit().is_some() {}
        while hub.poll_event().is_some() {}
        if i < SESSION_RESUMES {
            assert_eq!(said, "resumed", "resume {i}");
            ann = back;
        } else {
            assert_eq!(
                said,
                "too many failed attempts: this session was resumed 10 times within 10 s; try again in 9 s"
            );
            assert!(!hub.is_connected(back));
        }
        now += Duration::from_millis(100);
    }
    // Still waiting, not ended; its token resumes it once the window is over.
    let again = hub.handle_connect(now);
    let later = t0 + DEFAULT_RESUME_WINDOW;
    hub.handle_message(again, resume_hello("ann", token, epoch), later);
    assert_eq!(answered(&mut hub, again), "resumed");
    hub.check_invariants().unwrap();
}

#[test]
fn a_connection_replaced_by_a_resume_is_no_away_and_no_back() {
    // Its old connection still open (the server has not noticed the loss):
    // the user never was away.
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.reconnect(0);
    net.advance(PRESENCE_DELAY);
    assert!(comings_and_goings(net.take(1)).is_empty());
}

#[test]
fn remote_users_going_away_and_coming_back_are_told_live() {
    let mut net = resumable(Limits::default(), &["bob"]);
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("dave"), now);
    net.hub.remote_join(7, user("erin"), now);
    net.advance(PRESENCE_DELAY);
    net.take(0);
    let since = Timestamp(0);
    // Away, once however often its server says so; only its server's word
    // counts.
    let now = net.now;
    net.hub.remote_away(7, &user("dave"), since, now);
    net.hub.remote_away(7, &user("dave"), since, now);
    net.hub.remote_away(8, &user("erin"), since, now);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(0)), ["away dave"]);
    let now = net.now;
    net.hub.remote_back(7, &user("dave"), now);
    net.hub.remote_back(7, &user("dave"), now);
    net.hub.remote_back(7, &user("erin"), now);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(0)), ["back dave"]);
    // Away, then resumed on another server: back.
    let now = net.now;
    net.hub.remote_away(7, &user("dave"), since, now);
    net.hub.remote_moved(8, user("dave"), now);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(0)), ["away dave", "back dave"]);
    // Away, then gone for good: its leave only.
    let now = net.now;
    net.hub.remote_away(7, &user("erin"), since, now);
    net.hub
        .remote_leave(7, &user("erin"), LeaveReason::LOST, String::new(), now);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(0)), ["away erin", "left erin"]);
}

#[test]
fn a_user_away_here_that_resumes_on_another_server_is_back() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.hub.enable_cluster();
    net.cut(0);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(1)), ["away alice"]);
    let now = net.now;
    net.hub.remote_moved(8, user("alice"), now);
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(1)), ["back alice"]);
}

#[test]
fn a_user_of_another_server_away_that_resumes_here_is_back() {
    let mut net = resumable(Limits::default(), &["bob"]);
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("dave"), now);
    net.hub.remote_away(7, &user("dave"), Timestamp(0), now);
    net.advance(PRESENCE_DELAY);
    assert_eq!(
        comings_and_goings(net.take(0)),
        ["joined dave", "away dave"]
    );
    // Its session comes here with it (as a resume on this server does).
    let now = net.now;
    assert!(net
        .hub
        .adopt_session(user("dave"), ResumeToken([9; 16]), 7, 0, None, now));
    net.advance(PRESENCE_DELAY);
    assert_eq!(comings_and_goings(net.take(0)), ["back dave"]);
}

#[test]
fn who_marks_a_user_away_until_it_resumes() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.cut(0);
    net.advance(Duration::from_secs(23));
    net.s(1).who().unwrap();
    net.pump();
    assert!(net.take(1).contains(&ClientEvent::Who {
        users: vec![crate::OnlineUser::away(user("alice"), 23), here("bob")]
    }));
    // Back: listed as connected again.
    net.reconnect(0);
    net.s(1).who().unwrap();
    net.pump();
    assert!(net.take(1).contains(&ClientEvent::Who {
        users: vec![here("alice"), here("bob")]
    }));
}

#[test]
fn a_blip_is_no_leave_and_a_lost_session_leaves_after_the_grace() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.cut(0);
    net.advance(Duration::from_secs(59));
    assert!(!net
        .take(1)
        .iter()
        .any(|e| matches!(e, ClientEvent::Left(_))));
    // Still listed, as away since its connection was lost, its name
    // still taken.
    net.s(1).who().unwrap();
    net.pump();
    assert!(net.take(1).contains(&ClientEvent::Who {
        users: vec![crate::OnlineUser::away(user("alice"), 59), here("bob")]
    }));
    net.connect("alice");
    assert!(matches!(
        net.take(2).as_slice(),
        [ClientEvent::Refused {
            code: RefuseCode::NAME_TAKEN,
            ..
        }]
    ));
    net.advance(Duration::from_secs(1));
    let left = unstamped(net.take(1));
    assert!(left.contains(&ClientEvent::Left(crate::Departure {
        id: MessageId(0),
        time: Timestamp(0),
        user: user("alice"),
        reason: LeaveReason::LOST,
        text: String::new(),
    })));
    // Too late: a fresh session, and the client is told why.
    net.reconnect(0);
    let events = net.take(0);
    assert!(events.contains(&ClientEvent::ContinuityLost {
        reason: "session expired".into()
    }));
    assert!(net
        .take(1)
        .iter()
        .any(|e| matches!(e, ClientEvent::Joined { user, .. } if user.as_str() == "alice")));
}

/// A client whose session expired while it was away joins afresh and is
/// sent the room's history: what it showed before the break is not shown
/// again, only what it missed (as far as the history holds).
#[test]
fn a_session_expired_while_away_shows_no_history_it_showed_already() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.s(1).send_chat(Recipient::Everyone, "seen").unwrap();
    net.pump();
    assert_eq!(texts_from(&net.take(0), "bob"), ["seen"]);
    net.cut(0);
    net.advance(Duration::from_secs(61));
    net.s(1).send_chat(Recipient::Everyone, "missed").unwrap();
    net.pump();
    net.take(1);
    net.reconnect(0);
    let alice = net.take(0);
    assert!(
        alice.contains(&ClientEvent::ContinuityLost {
            reason: "session expired".into()
        }),
        "{alice:?}"
    );
    assert_eq!(chat_texts(&alice), ["missed"], "{alice:?}");
}

/// A user kicked while away is told so when its client comes back, not
/// that its session expired: the others saw why it left, and so does it.
/// Only within the grace period from the kick, and only for the session
/// the kick ended.
#[test]
fn a_client_kicked_while_away_is_told_why_its_session_was_not_resumed() {
    let grace = Limits::default().grace;
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.cut(0);
    let now = net.now;
    assert_eq!(
        net.hub.console("kick alice spam", now),
        "kicked alice (it was away)"
    );
    net.pump();
    net.take(1);
    net.reconnect(0);
    let alice = net.take(0);
    assert!(
        alice.contains(&ClientEvent::ContinuityLost {
            reason: "kicked by console: spam".into()
        }),
        "{alice:?}"
    );
    // Joined afresh: the kick is behind her. Lost again, her session
    // expires, and that is what she is told, not the old kick.
    net.cut(0);
    net.advance(grace + Duration::from_secs(1));
    net.reconnect(0);
    assert!(net.take(0).contains(&ClientEvent::ContinuityLost {
        reason: "session expired".into()
    }));
    // Bob, kicked while away, comes back after the kick's grace ran out.
    net.cut(1);
    let now = net.now;
    net.hub.console("kick bob flood", now);
    net.pump();
    net.advance(grace + Duration::from_secs(1));
    net.reconnect(1);
    assert!(net.take(1).contains(&ClientEvent::ContinuityLost {
        reason: "session expired".into()
    }));
}

#[test]
fn a_reconnect_after_quit_says_the_session_was_quit_not_that_none_is_offered() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.s(0).quit("");
    net.pump();
    net.take(0);
    net.reconnect(0);
    let alice = net.take(0);
    assert!(
        alice.contains(&ClientEvent::ContinuityLost {
            reason: "the session before was ended with quit".into()
        }),
        "{alice:?}"
    );
    // The next loss is the server's to explain again.
    net.cut(0);
    net.advance(Limits::default().grace + Duration::from_secs(1));
    net.reconnect(0);
    let again = net.take(0);
    assert!(
        again.contains(&ClientEvent::ContinuityLost {
            reason: "session expired".into()
        }),
        "{again:?}"
    );
}

#[test]
fn a_client_dropped_for_reading_too_slowly_is_told_so_when_it_comes_back() {
    let grace = Limits::default().grace;
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    let alice = net.clients[0].0;
    net.hub.evict(alice);
    net.pump();
    net.cut(0);
    net.reconnect(0);
    let events = net.take(0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::ContinuityLost { reason }
            if reason.contains("did not read fast enough"))),
        "{events:?}"
    );
    // Past the grace period it is an expired session like any other.
    let bob = net.clients[1].0;
    net.hub.evict(bob);
    net.pump();
    net.cut(1);
    net.advance(grace + Duration::from_secs(1));
    net.reconnect(1);
    assert!(net.take(1).contains(&ClientEvent::ContinuityLost {
        reason: "session expired".into()
    }));
}

#[test]
fn a_quit_leaves_at_once_whatever_the_grace() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.s(0).quit("bye");
    net.pump();
    assert!(net
        .take(1)
        .iter()
        .any(|e| matches!(e, ClientEvent::Left(_))));
}

/// The token of the last `Welcome` sent to `client`.
fn welcome_token(hub: &mut Hub, client: ClientId) -> crate::ResumeToken {
    std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(client))
        .find_map(|t| match t.message {
            ServerMessage::Welcome { token, .. } => Some(token),
            _ => None,
        })
        .expect("a welcome")
}

fn resume_hello(name: &str, token: crate::ResumeToken, epoch: u64) -> ClientMessage {
    ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        username: user(name),
        resume: Some(crate::ResumeRequest {
            token,
            last_seen: MessageId(0),
            epoch,
        }),
    }
}

/// What the hub answered connection `c`: resumed, a fresh welcome, or
/// the refusal's code ([`answered`] with its text too).
fn answer(hub: &mut Hub, c: ClientId) -> String {
    let said = answered(hub, c);
    match said.split_once(": ") {
        _ if said == "welcome" => "fresh".to_string(),
        Some((code, _)) => code.to_string(),
        None => said,
    }
}

fn token_hub(limits: Limits) -> Hub {
    let mut hub = Hub::new(limits, "hi");
    let mut n = 0u8;
    hub.set_token_source(Box::new(move || {
        n = n.wrapping_add(1);
        [n; 16]
    }));
    hub
}

/// As [`token_hub`], with tokens that do not repeat within 2^32 (those
/// of `token_hub` come round again after 256): for a session resumed
/// more than 256 times.
fn many_tokens_hub(limits: Limits) -> Hub {
    let mut hub = Hub::new(limits, "hi");
    let mut n = 0u32;
    hub.set_token_source(Box::new(move || {
        n += 1;
        let mut t = [0u8; 16];
        t[..4].copy_from_slice(&n.to_be_bytes());
        t
    }));
    hub
}

/// A hub with resume on where alice joined and lost her connection: the
/// hub, the time, its epoch and alice's token.
fn alice_away() -> (Hub, Instant, u64, crate::ResumeToken) {
    let mut hub = token_hub(Limits::default());
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let a = joined(&mut hub, "alice", t0);
    let token = welcome_token(&mut hub, a);
    hub.handle_disconnect(a, LeaveReason::LOST);
    (hub, t0, epoch, token)
}

#[test]
fn a_token_works_once_for_its_name_within_the_grace_and_cannot_be_guessed() {
    let (mut hub, t0, epoch, token) = alice_away();
    // Wrong name: not alice's session (carol joins afresh).
    let c = hub.handle_connect(t0);
    hub.handle_message(c, resume_hello("carol", token, epoch), t0);
    assert_eq!(answer(&mut hub, c), "fresh");
    // A guess: refused, the name is waiting for its owner.
    let g = hub.handle_connect(t0);
    hub.handle_message(
        g,
        resume_hello("alice", crate::ResumeToken([0xaa; 16]), epoch),
        t0,
    );
    assert_eq!(answer(&mut hub, g), "username already taken");
    // The owner: resumed.
    let r = hub.handle_connect(t0);
    hub.handle_message(r, resume_hello("alice", token, epoch), t0);
    assert_eq!(answer(&mut hub, r), "resumed");
    // The same token again, once r has shown it got its welcome (any
    // frame): used up.
    hub.handle_message(r, ClientMessage::Who, t0);
    let again = hub.handle_connect(t0);
    hub.handle_message(again, resume_hello("alice", token, epoch), t0);
    assert_eq!(answer(&mut hub, again), "username already taken");
    assert!(hub.is_connected(r));
    hub.check_invariants().unwrap();
}

/// The log of a name refused as taken says when the connection had asked
/// to resume that name's session with a token that does not match (a
/// client whose session was taken over, or a guess): the operator tells
/// it from a plain name clash.
#[test]
fn a_refusal_after_a_resume_with_a_wrong_token_is_logged_as_such() {
    let (mut hub, t0, epoch, _) = alice_away();
    let guess = hub.handle_connect(t0);
    hub.handle_message(
        guess,
        resume_hello("alice", crate::ResumeToken([0xaa; 16]), epoch),
        t0,
    );
    let clash = hub.handle_connect(t0);
    hello(&mut hub, clash, "alice", t0);
    let mut closes = Vec::new();
    while let Some(e) = hub.poll_event() {
        match e {
            HubEvent::Close { client, reason } if client == guess || client == clash => {
                closes.push((client, reason));
            }
            _ => {}
        }
    }
    let taken = "refused: the username 'alice' is already taken";
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert_eq!(closes[0].0, guess);
    assert!(closes[0].1.starts_with(taken), "{closes:?}");
    assert!(
        closes[0]
            .1
            .ends_with("(it asked to resume that session with a token that does not match)"),
        "{closes:?}"
    );
    assert_eq!(closes[1].0, clash);
    assert!(closes[1].1.starts_with(taken), "{closes:?}");
    assert!(!closes[1].1.contains("token"), "{closes:?}");
}

/// A resume whose `Welcome` (with the new token) never reached its client
/// (the connection was cut right after the server answered, or the answer
/// stalled past the client's wait): the client tries again with the token
/// it has, and takes its session back, as often as it takes, until a
/// resumed connection sends a frame. From then on the old token is spent.
#[test]
fn a_resume_whose_welcome_was_lost_is_tried_again_with_the_same_token() {
    let (mut hub, t0, epoch, token) = alice_away();
    // Resumed, and cut before the welcome arrived.
    let r1 = hub.handle_connect(t0);
    hub.handle_message(r1, resume_hello("alice", token, epoch), t0);
    assert_eq!(answer(&mut hub, r1), "resumed");
    hub.handle_disconnect(r1, LeaveReason::LOST);
    let r2 = hub.handle_connect(t0);
    hub.handle_message(r2, resume_hello("alice", token, epoch), t0);
    assert_eq!(answer(&mut hub, r2), "resumed");
    // r2's welcome stalls: the client gives up on it and tries again
    // while r2 still looks alive, and replaces it.
    let r3 = hub.handle_connect(t0);
    hub.handle_message(r3, resume_hello("alice", token, epoch), t0);
    let fresh = welcome_token(&mut hub, r3);
    assert!(!hub.is_connected(r2));
    assert!(hub.is_joined(r3));
    // r3's client got its welcome and says something: the old token is
    // spent, on a live session and on a waiting one alike.
    hub.handle_message(r3, ClientMessage::Who, t0);
    let replay = hub.handle_connect(t0);
    hub.handle_message(replay, resume_hello("alice", token, epoch), t0);
    assert_eq!(answer(&mut hub, replay), "username already taken");
    assert!(hub.is_joined(r3));
    hub.handle_disconnect(r3, LeaveReason::LOST);
    let replay = hub.handle_connect(t0);
    hub.handle_message(replay, resume_hello("alice", token, epoch), t0);
    assert_eq!(answer(&mut hub, replay), "username already taken");
    // The new one works.
    let r4 = hub.handle_connect(t0);
    hub.handle_message(r4, resume_hello("alice", fresh, epoch), t0);
    assert_eq!(answer(&mut hub, r4), "resumed");
    hub.check_invariants().unwrap();
}

/// A server that stalls (stopped, swapping) while a client retries its
/// resume: each attempt's `Hello`, with the same token, waits in the
/// listen queue, and the client gives up on all but the last. When the
/// server runs again it may read them in any order. An attempt accepted
/// before the connection now holding the session, with the token that
/// connection spent, is an attempt its client abandoned: it does not
/// take the session from the newer one (whose client would be told it
/// was replaced, and must not come back).
#[test]
fn an_abandoned_resume_read_late_does_not_replace_the_newer_one() {
    let (mut hub, t0, epoch, token) = alice_away();
    let old: Vec<ClientId> = (0..3).map(|_| hub.handle_connect(t0)).collect();
    let last = hub.handle_connect(t0);
    // The last attempt is read first, and resumed.
    hub.handle_message(last, resume_hello("alice", token, epoch), t0);
    assert_eq!(answer(&mut hub, last), "resumed");
    // Then the abandoned ones, before the last one's first frame.
    for c in old {
        hub.handle_message(c, resume_hello("alice", token, epoch), t0);
        assert_eq!(answer(&mut hub, c), "username already taken");
        hub.handle_disconnect(c, LeaveReason::LOST);
    }
    assert!(hub.is_joined(last), "the newest attempt keeps the session");
    let mut replaced = Vec::new();
    while let Some(e) = hub.poll_event() {
        if let HubEvent::Close { client, reason } = e {
            if client == last {
                replaced.push(reason);
            }
        }
    }
    assert_eq!(replaced, Vec::<String>::new());
    hub.check_invariants().unwrap();
}

#[test]
fn an_expired_token_is_useless() {
    let (mut hub, t0, epoch, token) = alice_away();
    let t1 = t0 + Duration::from_secs(60);
    hub.handle_timeout(t1);
    let r = hub.handle_connect(t1);
    hub.handle_message(r, resume_hello("alice", token, epoch), t1);
    assert_eq!(answer(&mut hub, r), "fresh");
}

#[test]
fn failed_resumes_are_rate_limited_per_address() {
    let (mut hub, t0, epoch, token) = alice_away();
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    for guess in 0..5u8 {
        let c = hub.handle_connect_from(ip, t0);
        hub.handle_message(
            c,
            resume_hello("alice", crate::ResumeToken([guess + 100; 16]), epoch),
            t0,
        );
        assert_eq!(answer(&mut hub, c), "username already taken");
    }
    // A sixth guess is refused for the address until the window passed.
    let c = hub.handle_connect_from(ip, t0);
    hub.handle_message(
        c,
        resume_hello("alice", crate::ResumeToken([99; 16]), epoch),
        t0,
    );
    assert_eq!(answer(&mut hub, c), "too many failed attempts");
    let t1 = t0 + Duration::from_secs(10);
    let c = hub.handle_connect_from(ip, t1);
    hub.handle_message(
        c,
        resume_hello("alice", crate::ResumeToken([99; 16]), epoch),
        t1,
    );
    assert_eq!(answer(&mut hub, c), "username already taken");
    // The right token is never held back by the guesses (a shared NAT).
    let c = hub.handle_connect_from(ip, t1);
    hub.handle_message(c, resume_hello("alice", token, epoch), t1);
    assert_eq!(answer(&mut hub, c), "resumed");
}

/// Users behind one address (a NAT, an office) whose sessions ended while
/// they were away all join again: a resume of a name with no session is no
/// guess, neither counted nor held back by the guesses of others.
#[test]
fn resumes_of_sessions_that_ended_are_no_failed_attempts() {
    let mut hub = token_hub(Limits {
        grace: Duration::from_secs(2),
        ..Limits::default()
    });
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let ip: IpAddr = "192.0.2.11".parse().unwrap();
    let mut tokens = Vec::new();
    for n in 0..8 {
        let c = hub.handle_connect_from(ip, t0);
        hello(&mut hub, c, &format!("u{n}"), t0);
        tokens.push(welcome_token(&mut hub, c));
        hub.handle_disconnect(c, LeaveReason::LOST);
    }
    let t1 = t0 + Duration::from_secs(4);
    hub.handle_timeout(t1);
    while hub.poll_event().is_some() {}
    for (n, token) in tokens.iter().enumerate() {
        let c = hub.handle_connect_from(ip, t1);
        hub.handle_message(c, resume_hello(&format!("u{n}"), *token, epoch), t1);
        assert_eq!(answer(&mut hub, c), "fresh", "u{n}");
    }
    // Past the limit of guesses from the address, a name whose session
    // ended still joins afresh.
    let bob = joined(&mut hub, "bob", t1);
    welcome_token(&mut hub, bob);
    for guess in 0..6u8 {
        let g = hub.handle_connect_from(ip, t1);
        hub.handle_message(
            g,
            resume_hello("bob", crate::ResumeToken([guess; 16]), epoch),
            t1,
        );
        answer(&mut hub, g);
    }
    let c = hub.handle_connect_from(ip, t1);
    hub.handle_message(
        c,
        resume_hello("carol", crate::ResumeToken([1; 16]), epoch),
        t1,
    );
    assert_eq!(answer(&mut hub, c), "fresh");
}

/// A frontend that checks a token outside the hub (a cluster's take-over
/// of another server's session) counts its failures with the hub's own.
#[test]
fn resume_failures_counted_by_the_frontend_share_the_address_limit() {
    let mut hub = token_hub(Limits::default());
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let ip: IpAddr = "192.0.2.9".parse().unwrap();
    let guess = |n: u8| crate::ResumeRequest {
        token: crate::ResumeToken([n; 16]),
        last_seen: MessageId(0),
        epoch,
    };
    for n in 0..5u8 {
        let c = hub.handle_connect_from(ip, t0);
        assert!(!hub.refuse_spent_resume(c, t0));
        hub.note_failed_resume(c, &guess(n), t0);
        // Another epoch (a history lost) is no guess: not counted.
        let other = crate::ResumeRequest {
            epoch: epoch.wrapping_add(1),
            ..guess(n)
        };
        hub.note_failed_resume(c, &other, t0);
    }
    let c = hub.handle_connect_from(ip, t0);
    assert!(hub.refuse_spent_resume(c, t0));
    assert_eq!(answer(&mut hub, c), "too many failed attempts");
    // The hub's own check shares the count (for a session it has).
    let a = joined(&mut hub, "alice", t0);
    welcome_token(&mut hub, a);
    hub.handle_disconnect(a, LeaveReason::LOST);
    let c = hub.handle_connect_from(ip, t0);
    hub.handle_message(
        c,
        resume_hello("alice", crate::ResumeToken([7; 16]), epoch),
        t0,
    );
    assert_eq!(answer(&mut hub, c), "too many failed attempts");
    // Another address, or the window passed: free.
    let other: IpAddr = "192.0.2.10".parse().unwrap();
    let c = hub.handle_connect_from(other, t0);
    assert!(!hub.refuse_spent_resume(c, t0));
    let t1 = t0 + Duration::from_secs(10);
    let c = hub.handle_connect_from(ip, t1);
    assert!(!hub.refuse_spent_resume(c, t1));
}

#[test]
fn a_resume_replaces_a_connection_not_yet_known_dead() {
    let mut hub = token_hub(Limits::default());
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let a = joined(&mut hub, "alice", t0);
    let token = welcome_token(&mut hub, a);
    let b = joined(&mut hub, "bob", t0);
    while hub.poll_event().is_some() {}
    while hub.poll_transmit().is_some() {}
    let r = hub.handle_connect_from("192.0.2.7".parse().unwrap(), t0);
    hub.handle_message(r, resume_hello("alice", token, epoch), t0);
    let out: Vec<Transmit> = std::iter::from_fn(|| hub.poll_transmit()).collect();
    assert!(!out.iter().any(|t| t.to.contains(b)), "bob sees nothing");
    // The replaced connection is told why before it closes, with a code
    // that tells its client not to take the session back on its own.
    let told: Vec<&ServerMessage> = out
        .iter()
        .filter(|t| t.to.contains(a))
        .map(|t| &t.message)
        .collect();
    assert_eq!(
        told.last().copied(),
        Some(&ServerMessage::Error {
            code: ErrorCode::REPLACED,
            client_id: 0,
            text: "your session was resumed from another connection (address 192.0.2.7)".into(),
        }),
        "its last message: {told:?}"
    );
    assert!(!hub.is_connected(a));
    assert!(hub.is_joined(r));
    let events: Vec<HubEvent> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert!(events.contains(&HubEvent::Close {
        client: a,
        reason: "replaced by a resumed connection".into()
    }));
    hub.check_invariants().unwrap();
}

#[test]
fn a_client_whose_session_another_connection_resumed_closes_and_says_why() {
    let now = Instant::now();
    let mut hub = token_hub(Limits::default());
    let mut s = ClientSession::new(user("alice"), Limits::default(), now);
    let c = hub.handle_connect(now);
    while let Some(m) = s.poll_transmit() {
        hub.handle_message(c, m, now);
    }
    while let Some(t) = hub.poll_transmit() {
        s.handle_message(t.message, now);
    }
    assert!(s.is_joined());
    let saved = s.saved().expect("a resumable session");
    // A copy of the saved session resumes it from elsewhere.
    let copy = hub.handle_connect_from("192.0.2.8".parse().unwrap(), now);
    hub.handle_message(
        copy,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("alice"),
            resume: Some(crate::ResumeRequest {
                token: saved.token,
                last_seen: saved.last_seen,
                epoch: saved.epoch,
            }),
        },
        now,
    );
    assert!(hub.is_joined(copy));
    while let Some(t) = hub.poll_transmit() {
        if t.to.contains(c) {
            s.handle_message(t.message, now);
        }
    }
    let evs: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(
        evs.contains(&ClientEvent::Replaced {
            text: "your session was resumed from another connection (address 192.0.2.8)".into()
        }),
        "{evs:?}"
    );
    assert!(s.is_closed(), "not to reconnect on its own");
}

#[test]
fn private_messages_are_replayed_to_their_parties_only() {
    let mut net = resumable(Limits::default(), &["alice", "bob", "carol"]);
    net.cut(0);
    net.cut(2);
    net.s(1)
        .send_chat(Recipient::User(user("alice")), "for alice")
        .unwrap();
    net.s(1).send_chat(Recipient::Everyone, "for all").unwrap();
    net.pump();
    net.reconnect(0);
    net.reconnect(2);
    assert_eq!(texts_from(&net.take(0), "bob"), ["for alice", "for all"]);
    assert_eq!(texts_from(&net.take(2), "bob"), ["for all"]);
}

/// The texts of the errors among `events`.
fn error_texts(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Error { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Private messages sent to a user who is away were acknowledged; when
/// the user does not come back (the grace runs out, or an operator
/// removes the session) their senders are told they were not delivered,
/// a line per sender. A user who comes back gets them, and nobody is told.
#[test]
fn senders_are_told_of_private_messages_an_away_user_never_came_back_for() {
    let limits = Limits {
        grace: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut net = resumable(limits, &["alice", "bob", "carol"]);
    net.s(1)
        .send_chat(Recipient::User(user("alice")), "read before")
        .unwrap();
    net.pump();
    net.cut(0);
    for text in ["are you there?", "hello?"] {
        net.s(1)
            .send_chat(Recipient::User(user("alice")), text)
            .unwrap();
    }
    net.s(2)
        .send_chat(Recipient::User(user("alice")), "ping")
        .unwrap();
    net.s(2).send_chat(Recipient::Everyone, "for all").unwrap();
    net.pump();
    net.advance(Duration::from_secs(4));
    assert!(error_texts(&net.take(1)).is_empty(), "told too soon");
    net.advance(Duration::from_secs(2));
    assert_eq!(
        error_texts(&net.take(1)),
        ["your 2 private messages to alice were not delivered: alice lost the connection and did not come back (the first: \"are you there?\")"]
    );
    assert_eq!(
        error_texts(&net.take(2)),
        ["your private message to alice was not delivered: alice lost the connection and did not come back (\"ping\")"]
    );
    // Back in time: delivered, nobody told.
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.cut(0);
    net.s(1)
        .send_chat(Recipient::User(user("alice")), "are you there?")
        .unwrap();
    net.pump();
    net.reconnect(0);
    assert_eq!(texts_from(&net.take(0), "bob"), ["are you there?"]);
    net.advance(Duration::from_secs(120));
    assert!(error_texts(&net.take(1)).is_empty());
    // Removed by an operator while away: said so.
    net.cut(0);
    net.s(1)
        .send_chat(Recipient::User(user("alice")), "still there?")
        .unwrap();
    net.pump();
    let now = net.now;
    net.hub.console("kick alice spam", now);
    net.pump();
    assert_eq!(
        error_texts(&net.take(1)),
        ["your private message to alice was not delivered: alice was removed by an operator while away (\"still there?\")"]
    );
}

#[test]
fn a_late_joiner_gets_recent_broadcasts_as_history_within_count_and_age() {
    let limits = Limits {
        history_count: 2,
        history_age: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut net = resumable(limits, &["alice", "bob"]);
    net.s(0).send_chat(Recipient::Everyone, "too old").unwrap();
    net.pump();
    net.now += Duration::from_secs(61);
    for t in ["one", "two", "three"] {
        net.s(0).send_chat(Recipient::Everyone, t).unwrap();
    }
    net.s(0)
        .send_chat(Recipient::User(user("bob")), "private")
        .unwrap();
    net.pump();
    let i = net.connect("carol");
    let history: Vec<(String, bool)> = net
        .take(i)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) => Some((c.text.clone(), c.history)),
            _ => None,
        })
        .collect();
    assert_eq!(
        history,
        [("two".to_string(), true), ("three".to_string(), true)]
    );
    // Off with a count of 0.
    let limits = Limits {
        history_count: 0,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["alice"]);
    net.s(0).send_chat(Recipient::Everyone, "x").unwrap();
    net.pump();
    let i = net.connect("bob");
    assert!(!net
        .take(i)
        .iter()
        .any(|e| matches!(e, ClientEvent::Chat(_))));
}

#[test]
fn history_holds_the_newest_messages_that_fit_its_bytes() {
    let mut net = resumable(Limits::default(), &["alice"]);
    // 60,000 bytes each: four fit in 256 KiB, five do not.
    let texts: Vec<String> = (0..6u8)
        .map(|i| char::from(b'a' + i).to_string().repeat(60_000))
        .collect();
    for t in &texts {
        net.s(0).send_chat(Recipient::Everyone, t).unwrap();
    }
    net.pump();
    let i = net.connect("bob");
    let history: Vec<String> = net
        .take(i)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) if c.history => Some(c.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(history, texts[2..]);
}

#[test]
fn entries_gone_from_the_log_are_counted_as_dropped() {
    let limits = Limits {
        log_entries: 3,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["alice", "bob"]);
    net.cut(0);
    for t in burst(5) {
        net.s(1).send_chat(Recipient::Everyone, &t).unwrap();
    }
    net.pump();
    net.reconnect(0);
    let events = net.take(0);
    // Ids 1-2 joins, 3-7 bob's messages: alice saw 2; 3 and 4 are gone.
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::Resumed { dropped: 2, .. })));
    assert_eq!(texts_from(&events, "bob"), ["m2", "m3", "m4"]);
}

/// In a cluster, log ids are stream positions, far apart: a resumed
/// session is told how many entries were trimmed, not the distance
/// between ids (which had it told of billions lost).
#[test]
fn in_a_cluster_entries_gone_from_the_log_are_counted_not_their_ids() {
    let limits = Limits {
        log_entries: 3,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["alice"]);
    net.hub.enable_cluster();
    let now = net.now;
    assert!(net.hub.remote_join(7, user("carol"), now));
    net.pump();
    net.take(0);
    net.cut(0);
    for (n, t) in burst(5).iter().enumerate() {
        let at = position(10 * (n as u64 + 1));
        stream_chat(
            &mut net.hub,
            from_stream(7, n as u64 + 1, at, 0),
            "carol",
            t,
            now,
        );
    }
    net.pump();
    net.reconnect(0);
    let events = net.take(0);
    // Alice saw carol join; of carol's m0-m4 the log holds m2-m4.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { dropped: 2, .. })),
        "{events:?}"
    );
    assert_eq!(texts_from(&events, "carol"), ["m2", "m3", "m4"]);
}

/// A session that moves here is told of the entries this log trimmed
/// that it had not seen on its old server (it was told nothing was lost).
#[test]
fn a_session_moving_here_is_told_what_this_log_no_longer_holds() {
    let mut hub = token_hub(Limits {
        log_entries: 3,
        ..Limits::default()
    });
    hub.enable_cluster();
    let now = Instant::now();
    let pos = |ms: u64| crate::RemoteOrigin::position_id(ms, 0);
    hub.set_origin(Some(from_stream(3, 1, pos(90), 0)));
    assert!(hub.remote_join(3, user("carol"), now));
    hub.set_origin(None);
    // Alice saw c0 on server 1 (her last id there is past position 100).
    for (n, at) in [100, 110, 120, 130, 140].into_iter().enumerate() {
        let text = format!("c{n}");
        stream_chat(
            &mut hub,
            from_stream(3, n as u64 + 2, pos(at), 0),
            "carol",
            &text,
            now,
        );
    }
    while hub.poll_transmit().is_some() {}
    while hub.poll_event().is_some() {}
    let (c, _) = alice_moves_here(&mut hub, MessageId(pos(100).0 + 5), now);
    let got: Vec<String> = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(c))
        .filter_map(|t| match t.message {
            ServerMessage::Chat(m) => Some(m.text),
            _ => None,
        })
        .collect();
    // Her session's coming here took a place in the log too.
    assert_eq!(got, ["c3", "c4"]);
    let dropped: Vec<u64> = std::iter::from_fn(|| hub.poll_event())
        .filter_map(|e| match e {
            HubEvent::Resumed { dropped, .. } => Some(dropped),
            _ => None,
        })
        .collect();
    // c1 and c2 are gone; the join and c0 she had seen.
    assert_eq!(dropped, [2]);
}

#[test]
fn waiting_sessions_are_bounded() {
    let limits = Limits {
        max_ghosts: 1,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["alice", "bob", "carol"]);
    net.cut(0);
    net.cut(1);
    // Alice waited longer: she is let go to make room for bob.
    let events = net.take(2);
    let (_, left) = presence_names(&events);
    assert_eq!(left, ["alice"]);
}

#[test]
fn a_burst_from_one_address_gives_up_its_own_waiting_sessions_first() {
    let limits = Limits {
        max_ghosts: 3,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["watcher"]);
    let home: std::net::IpAddr = [10, 0, 0, 1].into();
    let flood: std::net::IpAddr = [10, 0, 0, 2].into();
    let alice = net.connect_from("alice", home);
    net.cut(alice);
    // Later, one address joins and drops name after name.
    for n in 0..6 {
        net.advance(Duration::from_secs(1));
        let i = net.connect_from(&format!("x{n}"), flood);
        net.cut(i);
    }
    let events = net.take(0);
    let (_, left) = presence_names(&events);
    assert!(!left.contains(&"alice"), "alice was let go: {left:?}");
    assert_eq!(left.len(), 4, "{left:?}");
    // Alice, who waited longest, still gets her session back.
    net.reconnect(alice);
    assert!(
        net.take(alice)
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { .. })),
        "alice did not resume"
    );
}

/// A waiting session given up to the cap says why, for the server's log:
/// how many were waiting, the cap, and that its address had the most. The
/// others are told a lost connection, as for a grace that ran out.
#[test]
fn a_waiting_session_given_up_to_the_cap_says_why() {
    let limits = Limits {
        max_ghosts: 3,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["watcher"]);
    let class: std::net::IpAddr = [10, 0, 0, 5].into();
    for n in 0..3 {
        let i = net.connect_from(&format!("student{n}"), class);
        net.cut(i);
    }
    net.advance(Duration::from_secs(1));
    let ghost = net.connect_from("ghost", [10, 0, 1, 1].into());
    net.cut(ghost);
    let left: Vec<(String, LeaveReason, String)> = net
        .hub_events
        .iter()
        .filter_map(|e| match e {
            HubEvent::Left {
                user, reason, note, ..
            } => Some((user.to_string(), *reason, note.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let (user, reason, note) = &left[0];
    assert_eq!((user.as_str(), *reason), ("student0", LeaveReason::LOST));
    assert_eq!(
        note,
        "its session was given up, as 4 sessions were waiting for a resume, past the cap of 3; \
         its address had the most of them (3), and it was its oldest"
    );
    // A user who quits leaves with no such note.
    net.s(0).quit("bye");
    net.pump();
    assert!(net.hub_events.iter().any(|e| matches!(
        e,
        HubEvent::Left { user, note, .. } if user.as_str() == "watcher" && note.is_empty()
    )));
}

#[test]
fn one_address_brings_in_only_so_many_new_users_a_minute() {
    let limits = Limits {
        joins_per_address: 3,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["watcher"]);
    let storm: std::net::IpAddr = [10, 0, 0, 2].into();
    let other: std::net::IpAddr = [10, 0, 0, 3].into();
    // Three join and quit; the fourth is refused, and its join and leave
    // never reach the room (nor its log).
    for n in 0..3 {
        let i = net.connect_from(&format!("x{n}"), storm);
        net.s(i).quit("bye");
        net.pump();
    }
    let late = net.connect_from("x3", storm);
    match &net.take(late)[..] {
        [ClientEvent::Refused { code, reason }] => {
            assert_eq!(*code, RefuseCode::SERVER_FULL);
            assert!(
                reason.starts_with("too many new users from your address; try again in "),
                "{reason}"
            );
        }
        other => panic!("x3: {other:?}"),
    }
    let watcher = net.take(0);
    let (joined, _) = presence_names(&watcher);
    assert_eq!(joined, ["x0", "x1", "x2"]);
    // Another address is not held back, nor is a resume from this one.
    let bob = net.connect_from("bob", other);
    assert!(net.s(bob).is_joined());
    net.cut(bob);
    net.reconnect(bob);
    assert!(net
        .take(bob)
        .iter()
        .any(|e| matches!(e, ClientEvent::Resumed { .. })));
    // A minute later the address may bring in users again.
    net.advance(Duration::from_secs(60));
    let again = net.connect_from("x4", storm);
    assert!(net.s(again).is_joined());
}

#[test]
fn new_users_from_one_ipv6_network_share_its_count() {
    let limits = Limits {
        joins_per_address: 2,
        ..Limits::default()
    };
    let mut net = resumable(limits, &["watcher"]);
    let host = |n: u16| std::net::IpAddr::from([0x2001, 0xdb8, 7, 7, 0, 0, 0, n]);
    for n in 0..2 {
        let i = net.connect_from(&format!("y{n}"), host(n + 1));
        assert!(net.s(i).is_joined(), "y{n}");
    }
    // A third host of the same /64 counts with the first two.
    let late = net.connect_from("y2", host(99));
    assert!(
        matches!(&net.take(late)[..], [ClientEvent::Refused { code, .. }] if *code == RefuseCode::SERVER_FULL),
        "a new address in the same /64 was let in"
    );
    let elsewhere = net.connect_from(
        "z",
        std::net::IpAddr::from([0x2001, 0xdb8, 7, 8, 0, 0, 0, 1]),
    );
    assert!(net.s(elsewhere).is_joined());
}

/// The names in the joins and in the leaves among `events`, in order.
fn presence_names(events: &[ClientEvent]) -> (Vec<&str>, Vec<&str>) {
    let (mut joined, mut left) = (Vec::new(), Vec::new());
    for e in events {
        match e {
            ClientEvent::Joined { user, .. } => joined.push(user.as_str()),
            ClientEvent::Left(d) => left.push(d.user.as_str()),
            _ => {}
        }
    }
    (joined, left)
}

#[test]
fn a_restarted_hub_with_its_store_resumes_its_clients_and_one_without_says_history_is_lost() {
    let store = crate::MemoryStore::new(100);
    let mut net = stored(&store);
    net.s(1).send_chat(Recipient::Everyone, "before").unwrap();
    net.pump();
    net.take(0);
    net.hub.shutdown("restart");
    net.pump();
    // A new hub on the same store: alice resumes, nothing lost.
    restart_on(&mut net, &store, 9);
    net.reconnect(1);
    let bob = net.take(1);
    assert!(
        bob.iter()
            .any(|e| matches!(e, ClientEvent::Resumed { dropped: 0, .. })),
        "{bob:?}"
    );
    net.s(1).send_chat(Recipient::Everyone, "after").unwrap();
    net.pump();
    net.reconnect(0);
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { dropped: 0, .. })),
        "{alice:?}"
    );
    assert_eq!(texts_from(&alice, "bob"), ["after"]);
    assert_eq!(store.entries().len(), 4, "two joins and two messages");
    // Without the store: another epoch, and the client is told.
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_token_source(Box::new(|| [7; 16]));
    net.hub = hub;
    net.reconnect(0);
    assert!(net.take(0).contains(&ClientEvent::ContinuityLost {
        reason: "history lost (the server restarted without its database)".into()
    }));
}

/// A client that lost its server and reconnected to another of its list
/// whose history is another (not one cluster with the first) is not told
/// that the server restarted: it was not the same server.
#[test]
fn a_resume_refused_by_another_server_of_the_list_says_so() {
    let mut net = resumable(Limits::default(), &["alice"]);
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_token_source(Box::new(|| [7; 16]));
    net.hub = hub;
    let id = net.hub.handle_connect(net.now);
    net.clients[0].0 = id;
    let now = net.now;
    net.clients[0].1.reconnect(now);
    net.clients[0].1.on_another_server();
    net.pump();
    let alice = net.take(0);
    assert!(
        alice.contains(&ClientEvent::ContinuityLost {
            reason: "history lost (this server does not share the history of the one before)"
                .into()
        }),
        "{alice:?}"
    );
}

/// A copy of `store` as it is now: a backup, put back later.
fn copy_of(store: &crate::MemoryStore) -> crate::MemoryStore {
    use crate::HistoryStore;
    let loaded = store.clone().load().unwrap();
    let mut copy = crate::MemoryStore::new(100);
    if let Some(epoch) = loaded.epoch {
        copy.set_epoch(epoch).unwrap();
    }
    for e in &loaded.entries {
        copy.append(e).unwrap();
    }
    for s in &loaded.sessions {
        copy.save_session(s).unwrap();
    }
    copy
}

/// Users `names` joined a hub with `store` open; the hub stops, the
/// store is copied aside, a new hub on it resumes them all and they
/// chat, then it stops and the copy is put back: the returned hub runs
/// on the copy, its sessions' tokens older than their clients', its
/// last id below what they saw.
fn restarted_on_a_backup(names: &[&str]) -> Net {
    let store = crate::MemoryStore::new(100);
    let mut net = resumable(Limits::default(), &[]);
    net.hub
        .open_history(Box::new(store.clone()), net.now)
        .unwrap();
    for (i, n) in names.iter().enumerate() {
        net.connect(n);
        net.take(i);
    }
    net.hub.shutdown("restart");
    net.pump();
    let backup = copy_of(&store);
    restart_on(&mut net, &store, 9);
    for i in 0..names.len() {
        net.reconnect(i);
        assert!(net.s(i).is_joined());
        net.take(i);
    }
    // Each sends some and sees the others': every client has seen ids
    // the copy never gave.
    for n in 0..20 {
        net.s(n % names.len())
            .send_chat(Recipient::Everyone, &format!("m{n}"))
            .unwrap();
        net.pump();
    }
    net.pump();
    for i in 0..names.len() {
        net.take(i);
    }
    net.hub.shutdown("restart");
    net.pump();
    restart_on(&mut net, &backup, 7);
    net
}

#[test]
fn a_hub_restarted_on_an_older_copy_of_its_store_lets_its_clients_join_at_once() {
    // Six users from one address: more than the failed resumes it may
    // have (5), none of which these are.
    let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut net = restarted_on_a_backup(&names);
    for (i, name) in names.iter().enumerate() {
        net.reconnect(i);
        let evs = net.take(i);
        assert!(net.s(i).is_joined(), "{name}: {evs:?}");
        assert!(
            evs.iter()
                .any(|e| matches!(e, ClientEvent::ContinuityLost { reason }
                if reason.starts_with("history lost (the server's history ends at id ")
                    && reason.ends_with("your client saw: it was restored from an older copy)"))),
            "{name}: {evs:?}"
        );
    }
    // Their clients start over from the restored log's ids: nothing live
    // is taken for an entry seen before.
    net.s(1).send_chat(Recipient::Everyone, "after").unwrap();
    net.pump();
    assert_eq!(texts_from(&net.take(0), "bob"), ["after"]);
    net.hub.check_invariants().unwrap();
}

/// A copy taken while the hub ran (a snapshot of its store) holds the
/// tokens its clients have, but not what they saw since: resuming would
/// leave a client ignoring every new entry whose id it saw before. It
/// joins afresh, told its history was lost.
#[test]
fn a_right_token_past_the_last_id_joins_afresh_and_sees_what_comes() {
    let store = crate::MemoryStore::new(100);
    let mut net = stored(&store);
    let snapshot = copy_of(&store);
    for n in 0..3 {
        net.s(1)
            .send_chat(Recipient::Everyone, &format!("lost {n}"))
            .unwrap();
    }
    net.pump();
    assert_eq!(texts_from(&net.take(0), "bob").len(), 3);
    net.hub.shutdown("restart");
    net.pump();
    restart_on(&mut net, &snapshot, 9);
    net.reconnect(0);
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::ContinuityLost { reason }
            if reason.starts_with("history lost (the server's history ends at id "))),
        "{alice:?}"
    );
    net.reconnect(1);
    net.take(1);
    net.s(1).send_chat(Recipient::Everyone, "new").unwrap();
    net.pump();
    assert_eq!(texts_from(&net.take(0), "bob"), ["new"]);
    net.hub.check_invariants().unwrap();
}

/// A stranger claiming a high last seen id takes no session but one kept
/// from before the restart, waiting, that its user has not come back to.
#[test]
fn a_high_last_seen_takes_no_session_with_a_connection_or_of_this_run() {
    let mut net = restarted_on_a_backup(&["alice", "bob", "carol"]);
    let epoch = net.hub.epoch();
    let last_id = net.hub.last_id();
    let stranger = |net: &mut Net, name: &str, last_seen: u64| {
        let c = net.hub.handle_connect(net.now);
        let now = net.now;
        net.hub.handle_message(
            c,
            ClientMessage::Hello {
                version: PROTOCOL_VERSION,
                username: user(name),
                resume: Some(crate::ResumeRequest {
                    token: crate::ResumeToken([0xee; 16]),
                    last_seen: MessageId(last_seen),
                    epoch,
                }),
            },
            now,
        );
        answer(&mut net.hub, c)
    };
    // alice came back (joined afresh) and is online, bob came back and
    // lost his connection again: their sessions and tokens are this run's.
    net.reconnect(0);
    net.reconnect(1);
    net.hub
        .handle_disconnect(net.clients[1].0, LeaveReason::LOST);
    net.pump();
    assert_eq!(
        stranger(&mut net, "alice", last_id.0 + 50),
        "username already taken"
    );
    assert!(
        net.hub.is_joined(net.clients[0].0),
        "alice keeps her session"
    );
    net.hub.check_invariants().unwrap();
    assert_eq!(
        stranger(&mut net, "bob", last_id.0 + 50),
        "username already taken"
    );
    // carol has not come back: a guess at or below the last id is one.
    assert_eq!(
        stranger(&mut net, "carol", last_id.0),
        "username already taken"
    );
    // Another epoch is another history, not this one rolled back.
    let c = net.hub.handle_connect(net.now);
    let now = net.now;
    net.hub.handle_message(
        c,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("carol"),
            resume: Some(crate::ResumeRequest {
                token: crate::ResumeToken([0xee; 16]),
                last_seen: MessageId(last_id.0 + 50),
                epoch: epoch.wrapping_add(1),
            }),
        },
        now,
    );
    assert_eq!(answer(&mut net.hub, c), "username already taken");
    net.hub.check_invariants().unwrap();
}

#[test]
fn a_client_ignores_ids_it_has_seen_but_shows_history() {
    let mut net = resumable(Limits::default(), &["alice"]);
    let chat = |id, history| {
        ServerMessage::Chat(crate::RoutedChat {
            id: MessageId(id),
            time: Timestamp(0),
            from: user("bob"),
            private: false,
            kind: ChatKind::Text,
            text: format!("{id}"),
            history,
        })
    };
    for (id, history) in [(5, false), (5, false), (4, false), (1, true), (6, false)] {
        net.deliver(0, chat(id, history));
    }
    while let Some(e) = net.s(0).poll_event() {
        net.events[0].push(e);
    }
    let shown: Vec<String> = chats(&net.take(0)).into_iter().map(|c| c.2).collect();
    assert_eq!(shown, ["5", "1", "6"]);
    assert_eq!(net.s(0).last_seen(), MessageId(6));
}

#[test]
fn a_client_gives_up_the_oldest_unacknowledged_message_past_its_bound() {
    let mut net = resumable(Limits::default(), &["alice"]);
    let limits = Limits {
        max_unacked: 2,
        ..Limits::default()
    };
    let i = net.connect_with("bob", limits);
    net.take(i);
    net.cut(i);
    // The session does not know yet: it keeps sending.
    let ids: Vec<u64> = burst(3)
        .iter()
        .map(|t| net.s(i).send_chat(Recipient::Everyone, t).unwrap())
        .collect();
    assert_eq!(net.s(i).unacked(), 2);
    assert!(matches!(
        net.s(i).poll_event(),
        Some(ClientEvent::NotSent { client_id, text, .. }) if text == "m0" && client_id == ids[0]
    ));
}

// ---------------------------------------------------------------------------
// Presence batching.

/// What each connection was sent, through the wire, in order.
#[derive(Default)]
struct Inbox {
    got: std::collections::HashMap<ClientId, Vec<std::sync::Arc<ServerMessage>>>,
    /// Frames of joins and leaves delivered, counting each receiver.
    presence_frames: usize,
    /// Their bytes, counting each receiver.
    presence_bytes: usize,
}

impl Inbox {
    fn drain(&mut self, hub: &mut Hub) {
        while let Some(t) = hub.poll_transmit() {
            let frame = t.message.to_frame();
            let m: std::sync::Arc<ServerMessage> = std::sync::Arc::new(through_wire(&t.message));
            for to in t.to.iter() {
                if t.lane == Lane::Presence {
                    self.presence_frames += 1;
                    self.presence_bytes += frame.len();
                }
                self.got.entry(to).or_default().push(m.clone());
            }
        }
    }

    /// The log ids `c` saw, of live chat and presence, in order of arrival.
    fn ids(&self, c: ClientId) -> Vec<u64> {
        let mut ids = Vec::new();
        for m in self.got.get(&c).into_iter().flatten() {
            match &**m {
                ServerMessage::Chat(chat) if !chat.history => ids.push(chat.id.0),
                ServerMessage::Joined { id, .. } => ids.push(id.0),
                ServerMessage::Left(d) => ids.push(d.id.0),
                ServerMessage::Presence(events) => {
                    ids.extend(events.iter().filter(|e| e.is_entry()).map(|e| e.id().0))
                }
                _ => {}
            }
        }
        ids
    }

    /// The joins and leaves `c` saw: (id, joined?, user).
    fn presence(&self, c: ClientId) -> Vec<(u64, bool, String)> {
        let mut seen = Vec::new();
        for m in self.got.get(&c).into_iter().flatten() {
            let events = match &**m {
                ServerMessage::Presence(events) => events.clone(),
                ServerMessage::Joined { id, time, user } => vec![PresenceEvent::Joined {
                    id: *id,
                    time: *time,
                    user: user.clone(),
                }],
                ServerMessage::Left(d) => vec![PresenceEvent::Left(d.clone())],
                _ => continue,
            };
            for e in events {
                seen.push(match e {
                    PresenceEvent::Joined { id, user, .. } => (id.0, true, user.to_string()),
                    PresenceEvent::Left(d) => (d.id.0, false, d.user.to_string()),
                    // See `comings_and_goings`.
                    PresenceEvent::Away { .. } | PresenceEvent::Back { .. } => continue,
                });
            }
        }
        seen
    }

    /// The id of the join of `c`, from its `Welcome`.
    fn join_id(&self, c: ClientId) -> u64 {
        self.got[&c]
            .iter()
            .find_map(|m| match &**m {
                ServerMessage::Welcome { last_id, .. } => Some(last_id.0),
                _ => None,
            })
            .expect("a welcome")
    }
}

#[test]
fn joins_wait_for_the_delay_then_reach_every_member_in_one_frame() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let mut inbox = Inbox::default();
    let n = 300;
    let ids: Vec<ClientId> = (0..n)
        .map(|k| {
            let c = joined(&mut hub, &format!("u{k}"), t0);
            inbox.drain(&mut hub);
            c
        })
        .collect();
    assert_eq!(inbox.presence_frames, 0, "nothing before the delay");
    assert_eq!(hub.poll_timeout(), Some(t0 + PRESENCE_DELAY));
    hub.handle_timeout(t0 + PRESENCE_DELAY - Duration::from_millis(1));
    inbox.drain(&mut hub);
    assert_eq!(inbox.presence_frames, 0, "still waiting");
    hub.handle_timeout(t0 + PRESENCE_DELAY);
    inbox.drain(&mut hub);
    // One frame per member (the last one joined after everyone's join but
    // its own): n - 1 frames instead of n(n - 1)/2.
    assert_eq!(inbox.presence_frames, n - 1);
    for (k, c) in ids.iter().enumerate() {
        let expected: Vec<(u64, bool, String)> = (k + 1..n)
            .map(|j| (j as u64 + 1, true, format!("u{j}")))
            .collect();
        assert_eq!(inbox.presence(*c), expected, "u{k}");
    }
    assert_eq!(hub.pending_presence(), 0);
    assert_eq!(
        hub.poll_timeout().map(|t| t > t0 + PRESENCE_DELAY),
        Some(true)
    );
}

#[test]
fn presence_is_sent_ahead_of_any_later_message_to_its_receiver() {
    let mut hub = Hub::new(Limits::default(), "hi");
    let t0 = Instant::now();
    let mut inbox = Inbox::default();
    let ann = joined(&mut hub, "ann", t0);
    let ben = joined(&mut hub, "ben", t0);
    hub.flush_presence();
    let cid = joined(&mut hub, "cid", t0);
    inbox.drain(&mut hub);
    assert!(inbox.presence(ben).is_empty(), "cid's join waits");
    // cid speaks at once: ben gets cid's join, then the chat.
    hub.handle_message(cid, chat_to_all("hello"), t0);
    inbox.drain(&mut hub);
    assert_eq!(inbox.ids(ben), vec![3, 4]);
    assert_eq!(inbox.ids(ann), vec![2, 3, 4]);
    // A unicast sends only its receiver's waiting joins.
    let dan = joined(&mut hub, "dan", t0);
    hub.handle_message(
        ann,
        ClientMessage::Chat {
            client_id: 1,
            to: Recipient::User(user("ben")),
            kind: ChatKind::Text,
            text: "psst".into(),
        },
        t0,
    );
    inbox.drain(&mut hub);
    assert_eq!(inbox.ids(ben), vec![3, 4, 5, 6]);
    assert_eq!(
        inbox.presence(cid),
        vec![],
        "dan's join still waits for cid"
    );
    // An answer is a message like any other.
    hub.handle_message(cid, ClientMessage::Who, t0);
    inbox.drain(&mut hub);
    assert_eq!(inbox.presence(cid), vec![(5, true, "dan".into())]);
    let last = inbox.got[&cid].last().unwrap();
    assert!(matches!(&**last, ServerMessage::Who { .. }), "{last:?}");
    // The timer sends the rest, and nobody gets anything twice.
    hub.handle_timeout(t0 + PRESENCE_DELAY);
    inbox.drain(&mut hub);
    assert_eq!(inbox.ids(ann), vec![2, 3, 4, 5]);
    assert_eq!(inbox.ids(ben), vec![3, 4, 5, 6]);
    assert_eq!(inbox.ids(cid), vec![5]);
    assert_eq!(inbox.ids(dan), vec![]);
}

#[test]
fn every_member_sees_every_join_and_leave_once_in_order_with_chat() {
    let mut hub = Hub::new(
        Limits {
            rate_per_sec: 0,
            ..Limits::default()
        },
        "hi",
    );
    let mut now = Instant::now();
    let mut inbox = Inbox::default();
    let watcher = joined(&mut hub, "watcher", now);
    let mut live: Vec<ClientId> = Vec::new();
    let mut all: Vec<ClientId> = Vec::new();
    let (mut joins, mut leaves, mut chats) = (0, 0, 0);
    let mut seed = 0x2545_f491_u64;
    for step in 0..600 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let roll = (seed >> 33) % 100;
        let pick = (seed >> 13) as usize;
        match roll {
            0..=54 => {
                let c = joined(&mut hub, &format!("u{step}"), now);
                live.push(c);
                all.push(c);
                joins += 1;
            }
            55..=74 if !live.is_empty() => {
                let c = live.remove(pick % live.len());
                if pick.is_multiple_of(2) {
                    hub.handle_message(
                        c,
                        ClientMessage::Quit {
                            reason: "bye".into(),
                        },
                        now,
                    );
                } else {
                    hub.handle_disconnect(c, LeaveReason::LOST);
                }
                leaves += 1;
            }
            75..=94 if !live.is_empty() => {
                let c = live[pick % live.len()];
                hub.handle_message(c, chat_to_all("x"), now);
                chats += 1;
            }
            _ => {
                now += PRESENCE_DELAY;
                hub.handle_timeout(now);
            }
        }
        inbox.drain(&mut hub);
    }
    hub.flush_presence();
    inbox.drain(&mut hub);
    let seen = inbox.presence(watcher);
    assert_eq!(seen.iter().filter(|e| e.1).count(), joins);
    assert_eq!(seen.iter().filter(|e| !e.1).count(), leaves);
    assert!(chats > 50 && leaves > 50, "a mixed run");
    for c in std::iter::once(watcher).chain(all.iter().copied()) {
        let ids = inbox.ids(c);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{c}: out of order or twice: {ids:?}"
        );
        // Everything the watcher saw between this member's join and its
        // leave, but its own leave.
        let from = inbox.join_id(c);
        let name = hub_name(&inbox, c);
        let until = seen
            .iter()
            .find(|e| !e.1 && e.2 == name)
            .map_or(u64::MAX, |e| e.0);
        let expected: Vec<_> = seen
            .iter()
            .filter(|e| e.0 > from && e.0 < until)
            .cloned()
            .collect();
        // One that left is not sent what was still waiting when it went.
        let got = inbox.presence(c);
        if until == u64::MAX {
            assert_eq!(got, expected, "{c} ({name})");
        } else {
            assert_eq!(got, expected[..got.len()], "{c} ({name}) left");
        }
    }
    // Far fewer frames than one per event and member.
    let unbatched: usize = all.iter().map(|c| inbox.presence(*c).len()).sum();
    assert!(
        inbox.presence_frames * 3 < unbatched,
        "{} frames for {unbatched} events",
        inbox.presence_frames
    );
}

/// The name `c` was welcomed under.
fn hub_name(inbox: &Inbox, c: ClientId) -> String {
    inbox.got[&c]
        .iter()
        .find_map(|m| match &**m {
            ServerMessage::Welcome { username, .. } => Some(username.to_string()),
            _ => None,
        })
        .expect("a welcome")
}

#[test]
fn a_batch_goes_out_at_its_bounds_in_frames_within_them() {
    let mut hub = Hub::new(
        Limits {
            max_clients: 5000,
            ..Limits::default()
        },
        "hi",
    );
    let t0 = Instant::now();
    let mut inbox = Inbox::default();
    let first = joined(&mut hub, "first", t0);
    let mut max_pending = 0;
    for k in 0..2 * MAX_PRESENCE_EVENTS + 10 {
        joined(&mut hub, &format!("u{k}"), t0);
        max_pending = max_pending.max(hub.pending_presence());
        inbox.drain(&mut hub);
    }
    assert_eq!(max_pending, MAX_PRESENCE_EVENTS - 1);
    // Two full batches went out without the timer (the first one began
    // with first's own join).
    assert_eq!(inbox.presence(first).len(), 2 * MAX_PRESENCE_EVENTS - 1);
    // A leave text longer than a frame's budget (a local one is cut to
    // 512 bytes, but another server of a cluster may say more) makes a
    // frame of its own.
    hub.remote_join(9, user("long"), t0);
    hub.remote_leave(
        9,
        &user("long"),
        LeaveReason::QUIT,
        "z".repeat(MAX_PRESENCE_BYTES),
        t0,
    );
    joined(&mut hub, "after", t0);
    hub.flush_presence();
    inbox.drain(&mut hub);
    assert_eq!(
        inbox.presence(first).len(),
        2 * MAX_PRESENCE_EVENTS + 10 + 3
    );
    for m in inbox.got.values().flatten() {
        if let ServerMessage::Presence(events) = &**m {
            // Type byte, count, and the events within the budget.
            let body = m.to_frame().len() - crate::codec::HEADER_LEN - 1 - 4;
            assert!(!events.is_empty() && events.len() <= MAX_PRESENCE_EVENTS);
            assert!(body <= MAX_PRESENCE_BYTES || events.len() == 1, "{body}");
        }
    }
    let alone = inbox.got[&first].iter().any(|m| {
        matches!(&**m, ServerMessage::Presence(e) if e.len() == 1 && matches!(&e[0], PresenceEvent::Left(_)))
    });
    assert!(alone, "the long leave went alone");
}

#[test]
fn a_resumed_member_gets_each_waiting_join_once() {
    let mut hub = token_hub(Limits::default());
    let t0 = Instant::now();
    let epoch = hub.epoch();
    let mut inbox = Inbox::default();
    let ann = joined(&mut hub, "ann", t0);
    let ben = joined(&mut hub, "ben", t0);
    hub.flush_presence();
    inbox.drain(&mut hub);
    let token = inbox.got[&ben]
        .iter()
        .find_map(|m| match &**m {
            ServerMessage::Welcome { token, .. } => Some(*token),
            _ => None,
        })
        .unwrap();
    hub.handle_disconnect(ben, LeaveReason::LOST);
    joined(&mut hub, "cid", t0);
    let ben2 = hub.handle_connect(t0);
    let mut hello = resume_hello("ben", token, epoch);
    if let ClientMessage::Hello {
        resume: Some(r), ..
    } = &mut hello
    {
        r.last_seen = MessageId(2);
    }
    hub.handle_message(ben2, hello, t0);
    joined(&mut hub, "dan", t0);
    hub.handle_timeout(t0 + PRESENCE_DELAY);
    inbox.drain(&mut hub);
    // cid's join came in the replay, dan's in the batch: each once.
    assert_eq!(inbox.ids(ben2), vec![3, 4]);
    assert_eq!(inbox.ids(ann), vec![2, 3, 4]);
}

#[test]
fn a_session_hands_on_one_event_per_batched_join_or_leave_once() {
    let mut net = three();
    assert_eq!(net.s(0).last_seen(), MessageId(3));
    // Each event its own time, as the server noted it.
    let at = |id| Timestamp(1_796_051_045_000 + id * 1000);
    let joined = |id, name: &str| PresenceEvent::Joined {
        id: MessageId(id),
        time: at(id),
        user: user(name),
    };
    let bye = Departure {
        id: MessageId(5),
        time: at(5),
        user: user("bob"),
        reason: LeaveReason::QUIT,
        text: "bye".into(),
    };
    // carol's join (3) was seen already; dave's and bob's leave are new.
    net.deliver(
        0,
        ServerMessage::Presence(vec![
            joined(3, "carol"),
            joined(4, "dave"),
            PresenceEvent::Left(bye.clone()),
        ]),
    );
    net.pump();
    assert_eq!(
        net.take(0),
        vec![
            ClientEvent::Joined {
                id: MessageId(4),
                time: at(4),
                user: user("dave")
            },
            ClientEvent::Left(bye),
        ]
    );
    assert_eq!(net.s(0).last_seen(), MessageId(5));
    // The same again (a replay after a resume): nothing new.
    net.deliver(0, ServerMessage::Presence(vec![joined(4, "dave")]));
    net.pump();
    assert_eq!(net.take(0), vec![]);
}

/// A join replayed after a resume happened before it is handed on: the
/// event carries the time the server noted, alone or in a batch, not
/// the time it arrives.
#[test]
fn a_join_carries_the_time_the_server_noted_not_its_arrival() {
    let mut net = three();
    let (first, second) = (Timestamp(1_796_051_045_000), Timestamp(1_796_051_046_500));
    net.advance(Duration::from_secs(60));
    net.deliver(
        0,
        ServerMessage::Joined {
            id: MessageId(4),
            time: first,
            user: user("dave"),
        },
    );
    net.deliver(
        0,
        ServerMessage::Presence(vec![PresenceEvent::Joined {
            id: MessageId(5),
            time: second,
            user: user("erin"),
        }]),
    );
    net.pump();
    assert_eq!(
        net.take(0),
        vec![
            ClientEvent::Joined {
                id: MessageId(4),
                time: first,
                user: user("dave")
            },
            ClientEvent::Joined {
                id: MessageId(5),
                time: second,
                user: user("erin")
            },
        ]
    );
}

/// A store in memory that counts its commits and fails them on demand.
#[derive(Debug, Clone)]
struct CountingStore {
    inner: crate::MemoryStore,
    commits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fail_appends: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CountingStore {
    fn new() -> Self {
        CountingStore {
            inner: crate::MemoryStore::new(100),
            commits: std::sync::Arc::default(),
            fail: std::sync::Arc::default(),
            fail_appends: std::sync::Arc::default(),
        }
    }

    fn commits(&self) -> usize {
        self.commits.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_failing(&self, on: bool) {
        self.fail.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Appends fail too (a full disk once no id can be reserved).
    fn set_failing_appends(&self, on: bool) {
        self.fail_appends
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl crate::HistoryStore for CountingStore {
    fn load(&mut self) -> Result<crate::Loaded, crate::StoreError> {
        self.inner.load()
    }
    fn set_epoch(&mut self, epoch: u64) -> Result<(), crate::StoreError> {
        self.inner.set_epoch(epoch)
    }
    fn append(&mut self, entry: &crate::LogEntry) -> Result<(), crate::StoreError> {
        if self.fail_appends.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::StoreError::Backend {
                detail: "disk full".into(),
            });
        }
        self.inner.append(entry)
    }
    fn commit(&mut self) -> Result<(), crate::StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::StoreError::Backend {
                detail: "disk full".into(),
            });
        }
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    fn save_session(&mut self, session: &crate::SessionRecord) -> Result<(), crate::StoreError> {
        self.inner.save_session(session)
    }
    fn drop_session(&mut self, user: &Username) -> Result<(), crate::StoreError> {
        self.inner.drop_session(user)
    }
}

/// Alice (0) and bob (1) joined a hub with `store` open.
fn stored<S: crate::HistoryStore + Clone + 'static>(store: &S) -> Net {
    let mut net = resumable(Limits::default(), &[]);
    net.hub
        .open_history(Box::new(store.clone()), net.now)
        .unwrap();
    for n in ["alice", "bob"] {
        net.connect(n);
    }
    net.take(0);
    net.take(1);
    net
}

/// The server restarts: a new hub on `store` (tokens drawn as `token`)
/// takes over, and the connections of the old one are gone.
fn restart_on<S: crate::HistoryStore + Clone + 'static>(net: &mut Net, store: &S, token: u8) {
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_token_source(Box::new(move || [token; 16]));
    hub.open_history(Box::new(store.clone()), net.now).unwrap();
    net.hub = hub;
    net.closed.clear();
    // The new hub numbers connections from 1 again: forget the old ones.
    for (i, c) in net.clients.iter_mut().enumerate() {
        c.0 = ClientId(u64::MAX - i as u64);
    }
}

/// Hands chat message `client_id` of client `i` to the hub (no commit).
fn chat_in(net: &mut Net, i: usize, client_id: u64, text: &str) {
    let id = net.clients[i].0;
    let now = net.now;
    net.hub.handle_message(
        id,
        ClientMessage::Chat {
            client_id,
            to: Recipient::Everyone,
            kind: ChatKind::Text,
            text: text.into(),
        },
        now,
    );
}

/// The hub's queued messages, with their receivers.
fn queued(net: &mut Net) -> Vec<(Vec<ClientId>, ServerMessage)> {
    let mut out = Vec::new();
    while let Some(t) = net.hub.poll_transmit() {
        out.push((t.to.iter().collect(), t.message));
    }
    out
}

fn acks(q: &[(Vec<ClientId>, ServerMessage)]) -> Vec<(u64, u64)> {
    q.iter()
        .filter_map(|(_, m)| match m {
            ServerMessage::Ack { client_id, id, .. } => Some((*client_id, id.0)),
            _ => None,
        })
        .collect()
}

fn routed(q: &[(Vec<ClientId>, ServerMessage)], to: ClientId) -> Vec<(u64, String)> {
    q.iter()
        .filter(|(r, _)| r.contains(&to))
        .filter_map(|(_, m)| match m {
            ServerMessage::Chat(c) => Some((c.id.0, c.text.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn with_a_store_acks_wait_for_one_commit_and_go_out_in_order_while_routing_does_not() {
    let store = CountingStore::new();
    let mut net = stored(&store);
    let bob = net.clients[1].0;
    let before = store.commits();
    for (c, t) in [(1, "a"), (2, "b"), (3, "c")] {
        chat_in(&mut net, 0, c, t);
    }
    // A refusal does not overtake the acks before it.
    let long = "x".repeat(net.hub.limits().max_text + 1);
    chat_in(&mut net, 0, 4, &long);
    let q = queued(&mut net);
    // Bob has them at once, alice no ack yet.
    assert_eq!(routed(&q, bob).len(), 3);
    assert!(acks(&q).is_empty(), "{q:?}");
    assert!(net.hub.has_uncommitted());
    assert_eq!(store.commits(), before);
    net.hub.commit_history(net.now);
    assert_eq!(store.commits(), before + 1, "one commit for the batch");
    let q = queued(&mut net);
    let got = acks(&q);
    assert_eq!(got.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        matches!(
            q.last(),
            Some((_, ServerMessage::Error { client_id: 4, code, .. })) if *code == ErrorCode::TEXT_TOO_LONG
        ),
        "{q:?}"
    );
    assert!(got.windows(2).all(|w| w[1].1 == w[0].1 + 1), "{got:?}");
    assert!(q.iter().all(|(to, _)| to == &[net.clients[0].0]));
    assert!(!net.hub.has_uncommitted());
    // Nothing to commit: the store is not asked.
    net.hub.commit_history(net.now);
    assert_eq!(store.commits(), before + 1);
}

/// The errors among `q`: client id, code and text.
fn errors_in(q: &[(Vec<ClientId>, ServerMessage)]) -> Vec<(u64, ErrorCode, String)> {
    q.iter()
        .filter_map(|(_, m)| match m {
            ServerMessage::Error {
                code,
                client_id,
                text,
            } => Some((*client_id, *code, text.clone())),
            _ => None,
        })
        .collect()
}

/// A commit that fails does not undo the routing: its messages reached
/// their receivers already. They are acknowledged, their sender is told
/// once that they were not saved, and a copy sent again (under the same
/// client id) is a duplicate, not a second delivery.
#[test]
fn a_failed_commit_acknowledges_what_was_delivered_and_says_it_was_not_saved() {
    let store = CountingStore::new();
    let mut net = stored(&store);
    let bob = net.clients[1].0;
    chat_in(&mut net, 0, 1, "kept");
    net.hub.commit_history(net.now);
    queued(&mut net);
    store.set_failing(true);
    chat_in(&mut net, 0, 2, "unsaved");
    chat_in(&mut net, 0, 3, "unsaved too");
    // A resent copy of a committed message waits for the commit too, and
    // is acknowledged (it is not one of those not saved).
    chat_in(&mut net, 0, 1, "kept");
    net.hub.commit_history(net.now);
    let q = queued(&mut net);
    let first = routed(&q, bob);
    assert_eq!(first.len(), 2);
    assert_eq!(acks(&q).iter().map(|a| a.0).collect::<Vec<_>>(), [2, 3, 1]);
    assert_eq!(
        errors_in(&q),
        [(
            0,
            ErrorCode::INTERNAL,
            "your last 2 messages were delivered but are not saved (a restart of the server loses them): history store failed: disk full".to_string()
        )]
    );
    assert!(!net.hub.has_uncommitted());
    // The client sends one again: answered as the duplicate it is.
    store.set_failing(false);
    chat_in(&mut net, 0, 2, "unsaved");
    net.hub.commit_history(net.now);
    let q = queued(&mut net);
    assert!(routed(&q, bob).is_empty(), "bob got it twice");
    assert_eq!(acks(&q), [(2, first[0].0)]);
}

thread_local! {
    /// The warnings logged on this thread while [`warnings_of`] runs.
    static WARNINGS: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// A logger for the tests of this binary (set once): it keeps the warnings
/// of a thread that asked for them ([`warnings_of`]), nothing else.
struct ThreadWarnings;

impl log::Log for ThreadWarnings {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            WARNINGS.with(|w| {
                if let Some(w) = w.borrow_mut().as_mut() {
                    w.push(record.args().to_string());
                }
            });
        }
    }

    fn flush(&self) {}
}

/// The warnings `f` logs (on this thread).
fn warnings_of(f: impl FnOnce()) -> Vec<String> {
    static LOGGER: ThreadWarnings = ThreadWarnings;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
    WARNINGS.with(|w| *w.borrow_mut() = Some(Vec::new()));
    f();
    WARNINGS.with(|w| w.borrow_mut().take().unwrap_or_default())
}

/// A store that fails every commit (a full disk) is warned of once, not
/// once per commit (one every few milliseconds under load), and once more
/// when a commit works again; each sender is still told of each batch of
/// its messages not saved.
#[test]
fn a_store_failing_every_commit_is_logged_once_and_its_recovery_once() {
    let store = CountingStore::new();
    let mut net = stored(&store);
    queued(&mut net);
    let mut told = 0;
    let warned = warnings_of(|| {
        store.set_failing(true);
        for id in 1..=3 {
            chat_in(&mut net, 0, id, "unsaved");
            net.hub.commit_history(net.now);
            told += errors_in(&queued(&mut net)).len();
            // A server's committer reports its rounds with nothing to
            // write too: they succeed on a full disk, and say nothing.
            let last = net.hub.last_id();
            net.hub.history_committed(last, Ok(()), net.now);
        }
        store.set_failing(false);
        chat_in(&mut net, 0, 4, "saved");
        net.hub.commit_history(net.now);
        told += errors_in(&queued(&mut net)).len();
        store.set_failing(true);
        chat_in(&mut net, 0, 5, "unsaved again");
        net.hub.commit_history(net.now);
        told += errors_in(&queued(&mut net)).len();
    });
    let failed = "history not committed: history store failed: disk full (said once, until a commit works again)";
    assert_eq!(
        warned,
        [failed, "history commits work again, after 3 failed", failed],
        "once per run of failures"
    );
    assert_eq!(told, 4, "each failed commit is told to its sender");
}

/// A store that takes no new entry (a full disk once no id can be
/// reserved) refuses every chat message: each sender is told, and the
/// server's log says so once, and once more when it takes entries again
/// (before, the log said nothing at all while chat was refused).
#[test]
fn a_store_refusing_every_append_is_logged_once_and_its_recovery_once() {
    let store = CountingStore::new();
    let mut net = stored(&store);
    let bob = net.clients[1].0;
    queued(&mut net);
    let mut refused = Vec::new();
    let warned = warnings_of(|| {
        store.set_failing_appends(true);
        for id in 1..=3 {
            chat_in(&mut net, 0, id, "refused");
            net.hub.commit_history(net.now);
            let q = queued(&mut net);
            assert!(routed(&q, bob).is_empty(), "delivered: {q:?}");
            refused.extend(errors_in(&q).into_iter().map(|(id, code, _)| (id, code)));
        }
        store.set_failing_appends(false);
        chat_in(&mut net, 0, 4, "taken");
        net.hub.commit_history(net.now);
        assert_eq!(routed(&queued(&mut net), bob).len(), 1);
    });
    assert_eq!(
        warned,
        [
            "history store refuses new entries: history store failed: disk full; chat messages sent here are refused (said once, until it takes one again)",
            "history store takes new entries again, after 3 refused",
        ]
    );
    assert_eq!(
        refused,
        [1, 2, 3].map(|id| (id, ErrorCode::INTERNAL)),
        "each refused message is told to its sender"
    );
}

#[test]
fn without_a_store_acks_go_out_at_once_and_nothing_is_held() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    chat_in(&mut net, 0, 1, "hi");
    assert!(!net.hub.has_uncommitted());
    let q = queued(&mut net);
    assert_eq!(acks(&q).len(), 1);
}

#[test]
fn the_hub_commits_on_its_own_before_a_connection_closes_and_on_the_clock() {
    let store = CountingStore::new();
    let mut net = stored(&store);
    let alice = net.clients[0].0;
    chat_in(&mut net, 0, 1, "bye all");
    let now = net.now;
    net.hub.handle_message(
        alice,
        ClientMessage::Quit {
            reason: "done".into(),
        },
        now,
    );
    // Its ack went out before its connection closed.
    let q = queued(&mut net);
    let ack_at = q
        .iter()
        .position(|(_, m)| matches!(m, ServerMessage::Ack { client_id: 1, .. }));
    assert!(ack_at.is_some(), "{q:?}");
    assert!(q[..ack_at.unwrap()]
        .iter()
        .all(|(_, m)| !matches!(m, ServerMessage::Left(_))));
    // Its leave is in the store, uncommitted until the clock's tick.
    assert!(net.hub.has_uncommitted());
    let commits = store.commits();
    net.hub.handle_timeout(net.now);
    assert_eq!(store.commits(), commits + 1);
    assert!(!net.hub.has_uncommitted());
    // A lost connection: committed by the disconnect itself.
    chat_in(&mut net, 1, 1, "anyone?");
    let bob = net.clients[1].0;
    net.hub.handle_disconnect(bob, LeaveReason::LOST);
    assert!(!net.hub.has_uncommitted());
    assert_eq!(store.commits(), commits + 2);
}

// Users of other servers of a cluster (see hub/cluster.rs).

fn cluster_events(net: &mut Net) -> Vec<ClusterEvent> {
    std::mem::take(&mut net.hub_events)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Cluster(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn remote_users_are_announced_listed_and_heard() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    assert!(net.hub.remote_join(7, user("dave"), now));
    // Seen twice (a server that rejoins announces again): announced once.
    assert!(net.hub.remote_join(7, user("dave"), now));
    net.pump();
    for i in 0..3 {
        let joined: Vec<_> = net
            .take(i)
            .into_iter()
            .filter(|e| matches!(e, ClientEvent::Joined { user, .. } if user.as_str() == "dave"))
            .collect();
        assert_eq!(joined.len(), 1, "client {i}");
    }
    net.s(0).who().unwrap();
    net.pump();
    let who = net.take(0);
    assert!(
        who.iter().any(
            |e| matches!(e, ClientEvent::Who { users } if users.len() == 4
            && users.iter().any(|u| u.name.as_str() == "dave"))
        ),
        "{who:?}"
    );
    let n = net
        .hub
        .remote_chat(user("dave"), None, ChatKind::Text, "hi all".into(), now);
    net.pump();
    assert_eq!(n, 3);
    for i in 0..3 {
        let c = chats(&net.take(i));
        assert_eq!(c, vec![("dave".to_string(), false, "hi all".to_string())]);
    }
    // Nothing a remote user did is published again.
    assert!(cluster_events(&mut net).is_empty());
}

#[test]
fn a_message_from_a_server_that_no_longer_has_its_user_is_not_its_users() {
    let mut net = Net::new(Limits::default());
    net.connect("alice");
    net.hub.enable_cluster();
    let now = net.now;
    assert!(net.hub.remote_join(7, user("dave"), now));
    // Its server may speak for dave; another may not, nor may any speak
    // for alice, whose session is this server's. A user not known here
    // is taken at its server's word.
    assert!(net.hub.remote_sender_is_of(7, &user("dave")));
    assert!(net.hub.remote_sender_is_of(7, &user("DAVE")));
    assert!(!net.hub.remote_sender_is_of(8, &user("dave")));
    assert!(!net.hub.remote_sender_is_of(7, &user("alice")));
    assert!(net.hub.remote_sender_is_of(7, &user("erin")));
    // dave resumed on server 8: from then on (in the stream's order) what
    // server 7 still publishes as dave's is not.
    net.hub.remote_moved(8, user("dave"), now);
    assert!(!net.hub.remote_sender_is_of(7, &user("dave")));
    assert!(net.hub.remote_sender_is_of(8, &user("dave")));
}

#[test]
fn a_remote_message_longer_than_this_server_allows_is_not_passed_on() {
    // Another server of the cluster took texts of any length; this one's
    // clients were told 100 bytes at most.
    let limits = Limits {
        max_text: 100,
        ..Limits::default()
    };
    let mut net = Net::new(limits.clone());
    net.connect_with("alice", limits);
    net.hub.enable_cluster();
    let now = net.now;
    assert!(net.hub.remote_join(7, user("dave"), now));
    net.pump();
    net.take(0);
    let long = "x".repeat(101);
    assert!(!net.hub.remote_chat_fits(&long));
    let n = net
        .hub
        .remote_chat(user("dave"), None, ChatKind::Text, long, now);
    assert_eq!(n, 0);
    let fits = "y".repeat(100);
    assert!(net.hub.remote_chat_fits(&fits));
    net.hub
        .remote_chat(user("dave"), None, ChatKind::Text, fits.clone(), now);
    net.pump();
    assert_eq!(chats(&net.take(0)), vec![("dave".to_string(), false, fits)]);
    assert!(!net.s(0).is_closed());
}

#[test]
fn the_users_a_remote_message_too_long_was_for_are_told_it_was_not_shown() {
    let limits = Limits {
        max_text: 100,
        ..Limits::default()
    };
    let mut net = Net::new(limits.clone());
    net.connect_with("alice", limits.clone());
    net.connect_with("bob", limits);
    net.hub.enable_cluster();
    let now = net.now;
    assert!(net.hub.remote_join(7, user("dave"), now));
    net.pump();
    net.take(0);
    net.take(1);
    let notices = |events: Vec<ClientEvent>| -> Vec<(NoticeCode, String)> {
        events
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Notice { code, text } => Some((code, text)),
                _ => None,
            })
            .collect()
    };
    let long = "x".repeat(101);
    // To everyone: every local user is told, nobody gets the text.
    net.hub
        .remote_chat(user("dave"), None, ChatKind::Text, long.clone(), now);
    net.pump();
    let told =
        "a message from dave (101 bytes) is longer than this server allows (100 bytes): not shown";
    for i in 0..2 {
        let events = net.take(i);
        assert!(chats(&events).is_empty());
        assert_eq!(notices(events), [(NoticeCode::NOT_SHOWN, told.to_string())]);
    }
    // To bob: bob only.
    net.hub.remote_chat(
        user("dave"),
        Some(user("bob")),
        ChatKind::Text,
        long.clone(),
        now,
    );
    // To a user of another server: nobody here.
    net.hub
        .remote_chat(user("dave"), Some(user("erin")), ChatKind::Text, long, now);
    net.pump();
    assert!(notices(net.take(0)).is_empty());
    assert_eq!(
        notices(net.take(1)),
        [(
            NoticeCode::NOT_SHOWN,
            "a private message from dave (101 bytes) is longer than this server allows (100 bytes): not shown"
                .to_string()
        )]
    );
    assert!(NoticeCode::NOT_SHOWN.is_failure());
}

#[test]
fn local_users_are_published_in_cluster_mode_only() {
    let mut net = Net::new(Limits::default());
    net.connect("alice");
    net.s(0).send_chat(Recipient::Everyone, "solo").unwrap();
    net.pump();
    assert!(cluster_events(&mut net).is_empty());

    let mut net = Net::new(Limits::default());
    net.hub.enable_cluster();
    net.connect("alice");
    net.connect("bob");
    net.s(0).send_chat(Recipient::Everyone, "to all").unwrap();
    net.pump();
    net.s(1).quit("bye");
    net.pump();
    // Sessions (their tokens) are checked in their own tests.
    let events: Vec<ClusterEvent> = cluster_events(&mut net)
        .into_iter()
        .filter(|e| !matches!(e, ClusterEvent::Session { .. }))
        .collect();
    assert!(
        matches!(
            &events[..],
            [
                ClusterEvent::Joined { user: a, .. },
                ClusterEvent::Joined { user: b, .. },
                ClusterEvent::Chat { from: c, to: None, kind: ChatKind::Text, text: t, client_id: 1, .. },
                ClusterEvent::Left { user: l, reason: LeaveReason::QUIT, text: bye, .. },
            ] if *a == user("alice") && *b == user("bob") && *c == user("alice")
                && t == "to all" && *l == user("bob") && bye == "bye"
        ),
        "{events:?}"
    );
}

#[test]
fn private_messages_cross_servers_both_ways() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("dave"), now);
    net.pump();
    cluster_events(&mut net);
    // Local to remote: published with its target, acknowledged, not refused.
    net.s(0)
        .send_chat(Recipient::User(user("DAVE")), "psst")
        .unwrap();
    net.pump();
    let events = cluster_events(&mut net);
    assert!(
        matches!(
            &events[..],
            [ClusterEvent::Chat { from, to: Some(to), kind: ChatKind::Text, text, .. }]
                if *from == user("alice") && *to == user("dave") && text == "psst"
        ),
        "{events:?}"
    );
    assert!(!net
        .take(0)
        .iter()
        .any(|e| matches!(e, ClientEvent::Error { .. })));
    // Remote to local: only the target; to a user of neither: nobody.
    let n = net.hub.remote_chat(
        user("dave"),
        Some(user("bob")),
        ChatKind::Text,
        "back".into(),
        now,
    );
    assert_eq!(n, 1);
    let n = net.hub.remote_chat(
        user("dave"),
        Some(user("zed")),
        ChatKind::Text,
        "lost".into(),
        now,
    );
    assert_eq!(n, 0);
    net.pump();
    assert_eq!(
        chats(&net.take(1)),
        vec![("dave".to_string(), true, "back".to_string())]
    );
    assert!(chats(&net.take(0)).is_empty());
    assert!(chats(&net.take(2)).is_empty());
}

#[test]
fn a_private_message_from_another_server_to_a_user_who_left_is_answered() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("dave"), now);
    net.hub.remote_join(7, user("erin"), now);
    net.pump();
    // bob quits here; dave's server had not heard yet when dave wrote.
    net.s(1).quit("");
    net.pump();
    cluster_events(&mut net);
    let n = net.hub.remote_chat(
        user("dave"),
        Some(user("BOB")),
        ChatKind::Text,
        "are you still there? this is a long question, cut in the answer".into(),
        now,
    );
    assert_eq!(n, 0);
    net.pump();
    assert_eq!(
        cluster_events(&mut net),
        vec![ClusterEvent::Undelivered {
            from: user("dave"),
            to: user("bob"),
            text: "are you still there? this is a long question, cut in the answer".into(),
        }]
    );
    // To a user who never was here, or who is on another server now:
    // that server answers, not this one.
    net.hub.remote_chat(
        user("dave"),
        Some(user("zed")),
        ChatKind::Text,
        "x".into(),
        now,
    );
    net.hub.remote_join(8, user("bob"), now);
    net.hub.remote_chat(
        user("dave"),
        Some(user("bob")),
        ChatKind::Text,
        "y".into(),
        now,
    );
    net.pump();
    assert_eq!(cluster_events(&mut net), vec![]);
    // Long after the leave: no answer either.
    net.hub
        .remote_leave(8, &user("bob"), LeaveReason::QUIT, String::new(), now);
    let later = now + crate::session::hub::LEFT_MEMORY + Duration::from_secs(1);
    net.hub.handle_timeout(later);
    net.hub.remote_chat(
        user("dave"),
        Some(user("bob")),
        ChatKind::Text,
        "z".into(),
        later,
    );
    net.pump();
    assert_eq!(cluster_events(&mut net), vec![]);

    // The other way: a message of alice's to erin came too late; alice
    // is told, with the start of her text, and nobody else is.
    net.pump();
    for i in [0, 2] {
        net.take(i);
    }
    assert!(!net
        .hub
        .remote_undelivered(&user("zed"), &user("erin"), "hi"));
    assert!(net.hub.remote_undelivered(
        &user("ALICE"),
        &user("erin"),
        "are you still there? this is a long question, cut in the answer"
    ));
    net.pump();
    let errors: Vec<String> = net
        .take(0)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Error { code, text, .. } if code == ErrorCode::UNKNOWN_USER => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            "your private message to erin was not delivered: erin left before it arrived \
             (\"are you still there? this is a long ques…\")"
                .to_string()
        ]
    );
    assert!(net.take(2).is_empty());
}

#[test]
fn a_gone_server_leaves_its_users_and_frees_their_names() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("dave"), now);
    net.hub.remote_join(7, user("erin"), now);
    net.hub.remote_join(8, user("fay"), now);
    // A local name held elsewhere: refused.
    let id = net.hub.handle_connect(now);
    hello_version(&mut net.hub, id, PROTOCOL_VERSION, "Dave", now);
    let refused = std::iter::from_fn(|| net.hub.poll_transmit())
        .any(|t| matches!(t.message, ServerMessage::Refused { code, .. } if code == RefuseCode::NAME_TAKEN));
    assert!(refused);
    net.pump();
    for i in 0..3 {
        net.take(i);
    }
    assert_eq!(net.hub.remote_servers(), vec![7, 8]);
    assert_eq!(net.hub.remote_server_gone(7, now), 2);
    net.pump();
    let left: Vec<String> = unstamped(net.take(0))
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Left(d) => Some(format!("{} {}", d.user, d.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(left, vec!["dave connection lost", "erin connection lost"]);
    assert_eq!(net.hub.remote_servers(), vec![8]);
    net.connect("dave");
    assert!(net.hub.username(net.clients[3].0).is_some());
}

/// The names of those `events` say left, in order.
fn who_left(events: Vec<ClientEvent>) -> Vec<String> {
    unstamped(events)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Left(d) => Some(d.user.to_string()),
            _ => None,
        })
        .collect()
}

/// A check of the leases finds server 7's run out, and server 7 (cut off
/// from the cluster past its lease, not dead) rejoins before the verdict
/// reaches the hub: its rejoin's join of dave, still listed, changes
/// nothing, and the verdict, older than it, must not remove dave for good
/// (server 7 has no reason to announce him again). The next check judges
/// on what it finds.
#[test]
fn a_server_found_dead_that_announced_its_users_since_the_check_stays() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("dave"), now);
    net.hub.remote_join(8, user("fay"), now);
    net.pump();
    net.take(0);
    // The lease loop: who to check, and what the hub knew then.
    assert_eq!(net.hub.remote_servers(), vec![7, 8]);
    let mark = net.hub.heard_mark();
    // Redis says server 7's heartbeat is gone; meanwhile the reader gives
    // the hub server 7's rejoin.
    assert!(net.hub.remote_join(7, user("dave"), now));
    let verdict = net.hub.remote_server_gone_since(7, mark, now);
    // Server 8's verdict is not affected by news of server 7.
    assert_eq!(net.hub.remote_server_gone_since(8, mark, now), Some(1));
    net.pump();
    let left = who_left(net.take(0));
    assert_eq!(left, ["fay"]);
    assert_eq!(net.hub.remote_servers(), vec![7]);
    assert_eq!(verdict, None, "not applied");
    // Dead for real this time: the next check's verdict stands.
    let mark = net.hub.heard_mark();
    assert_eq!(net.hub.remote_server_gone_since(7, mark, now), Some(1));
    net.pump();
    let left = who_left(net.take(0));
    assert_eq!(left, ["dave"]);
    assert!(net.hub.remote_servers().is_empty());
}

/// The same race for a server whose session moved to it: the move, told
/// after the check began, keeps the verdict from removing the user.
#[test]
fn a_server_found_dead_that_took_a_session_since_the_check_keeps_it() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(8, user("dave"), now);
    net.hub.remote_join(7, user("erin"), now);
    net.pump();
    net.take(0);
    let mark = net.hub.heard_mark();
    net.hub.remote_moved(7, user("dave"), now);
    let verdict = net.hub.remote_server_gone_since(7, mark, now);
    net.pump();
    let mut users: Vec<(String, u64)> = net
        .hub
        .remote_users()
        .into_iter()
        .map(|(u, s)| (u.to_string(), s))
        .collect();
    users.sort();
    assert_eq!(users, [("dave".to_string(), 7), ("erin".to_string(), 7)]);
    assert!(unstamped(net.take(0))
        .iter()
        .all(|e| !matches!(e, ClientEvent::Left(_))));
    assert_eq!(verdict, None, "not applied");
}

/// What a member saw of the room: joins, leaves and chat messages, in order.
fn room_lines(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Joined { user, .. } => Some(format!("{user} joined")),
            ClientEvent::Left(d) => Some(format!("{} left", d.user)),
            ClientEvent::Chat(c) if c.private => Some(format!("*{}* {}", c.from, c.text)),
            ClientEvent::Chat(c) => Some(format!("<{}> {}", c.from, c.text)),
            _ => None,
        })
        .collect()
}

/// Server 7, with dave, is found dead (no resume: dave leaves at once);
/// it was only cut off from the cluster, and comes back. Returns the net
/// (alice, bob and carol here) with dave announced as left.
fn dave_left_with_server_7() -> Net {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.set_origin(Some(from_stream(7, 1, position(1), 0)));
    assert!(net.hub.remote_join(7, user("dave"), now));
    net.hub.set_origin(None);
    stream_said(&mut net, (7, 2, 2, 1), "dave", "d1");
    assert_eq!(net.hub.remote_server_gone(7, now), 1);
    net.pump();
    assert_eq!(
        room_lines(&net.take(0)),
        ["dave joined", "<dave> d1", "dave left"]
    );
    net.take(1);
    net.take(2);
    net
}

/// A server cut off from the cluster past its lease comes back: it
/// publishes first a batch it had sent before the cut (it may be in the
/// stream already, so it keeps its place), then its rejoin's joins. What
/// its users said in that batch is held, and seen after each one's join:
/// never from a user who, as far as the members were shown, left.
#[test]
fn what_a_user_of_a_server_back_from_a_cut_said_comes_after_its_join() {
    let mut net = dave_left_with_server_7();
    let now = net.now;
    stream_said(&mut net, (7, 3, 3, 2), "dave", "d2");
    net.hub.set_origin(Some(from_stream(7, 4, position(4), 3)));
    net.hub.remote_chat(
        user("dave"),
        Some(user("bob")),
        ChatKind::Text,
        "psst".into(),
        now,
    );
    net.hub.set_origin(None);
    stream_said(&mut net, (7, 5, 5, 4), "dave", "d3");
    net.pump();
    assert!(room_lines(&net.take(0)).is_empty());
    assert!(room_lines(&net.take(1)).is_empty());
    // Its rejoin: dave joins again, then what it said, then what it says.
    net.hub.set_origin(Some(from_stream(7, 6, position(6), 0)));
    assert!(net.hub.remote_join(7, user("dave"), now));
    net.hub.set_origin(None);
    stream_said(&mut net, (7, 7, 7, 5), "dave", "d4");
    net.pump();
    assert_eq!(
        room_lines(&net.take(0)),
        ["dave joined", "<dave> d2", "<dave> d3", "<dave> d4"]
    );
    assert_eq!(
        room_lines(&net.take(1)),
        [
            "dave joined",
            "<dave> d2",
            "*dave* psst",
            "<dave> d3",
            "<dave> d4"
        ]
    );
    net.hub.check_invariants().unwrap();
    // Nothing held is left to be dropped later.
    net.advance(Duration::from_secs(61));
    assert!(room_lines(&net.take(0)).is_empty());
}

/// Server 7 came back, but dave's name was taken on server 8 meanwhile:
/// what server 7 published as dave's is not shown under the new dave's
/// name (server 7 tells its dave the name is gone).
#[test]
fn what_a_user_said_before_its_name_went_to_another_server_is_dropped() {
    let mut net = dave_left_with_server_7();
    let now = net.now;
    stream_said(&mut net, (7, 3, 3, 2), "dave", "d2");
    net.hub.set_origin(Some(from_stream(8, 1, position(4), 0)));
    assert!(net.hub.remote_join(8, user("Dave"), now));
    net.hub.set_origin(None);
    stream_said(&mut net, (8, 2, 5, 1), "Dave", "new");
    // Server 7's join of its dave is refused by the cluster: none comes.
    net.pump();
    assert_eq!(room_lines(&net.take(0)), ["Dave joined", "<Dave> new"]);
    net.hub.check_invariants().unwrap();
}

/// This server was cut off from the cluster past its lease, and server 7
/// let a newcomer join under the name of alice, a user of this one. Back,
/// this server reads that join (refused: alice is its own) and what the
/// newcomer said before its lease round drops its alice and lists server
/// 7's in her place: what the newcomer said is seen then, after its join
/// (before, it was lost to this server's users).
#[test]
fn what_a_newcomer_said_under_a_local_user_s_name_comes_after_its_join() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.set_origin(Some(from_stream(7, 1, position(1), 0)));
    assert!(!net.hub.remote_join(7, user("alice"), now));
    net.hub.set_origin(None);
    stream_said(&mut net, (7, 2, 2, 1), "alice", "the new alice");
    net.pump();
    assert!(room_lines(&net.take(1)).is_empty());
    net.hub.check_invariants().unwrap();
    // The lease round: the local alice goes, server 7's is listed.
    net.hub
        .drop_user(&user("alice"), "the name was taken on another server");
    assert!(net.hub.remote_join(7, user("alice"), now));
    net.pump();
    assert_eq!(
        room_lines(&net.take(1)),
        ["alice left", "alice joined", "<alice> the new alice"]
    );
    net.hub.check_invariants().unwrap();
    // Nothing held is left to be dropped later.
    net.advance(Duration::from_secs(61));
    assert!(room_lines(&net.take(1)).is_empty());
}

/// As above, but the local alice quits before this server's lease round
/// sorts the name out (that round then has no user of it to drop, and
/// lists no one): server 7's alice is listed as the local one leaves, and
/// what she said is seen after her join, not dropped a minute later.
#[test]
fn a_newcomer_under_a_local_user_s_name_is_listed_when_the_local_one_quits() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.set_origin(Some(from_stream(7, 1, position(1), 0)));
    assert!(!net.hub.remote_join(7, user("Alice"), now));
    net.hub.set_origin(None);
    stream_said(&mut net, (7, 2, 2, 1), "Alice", "the new alice");
    net.pump();
    assert!(room_lines(&net.take(1)).is_empty());
    net.s(0).quit("");
    net.pump();
    assert_eq!(
        room_lines(&net.take(1)),
        ["alice left", "Alice joined", "<Alice> the new alice"]
    );
    net.hub.check_invariants().unwrap();
    net.s(1).who().unwrap();
    net.pump();
    assert!(
        net.take(1)
            .iter()
            .any(|e| matches!(e, ClientEvent::Who { users } if users.len() == 3)),
        "server 7's Alice is listed"
    );
    net.advance(Duration::from_secs(61));
    assert!(room_lines(&net.take(1)).is_empty());
}

/// Server 7's newcomer under alice's name left before this server sorted
/// the name out: when the local alice quits later, the newcomer is not
/// listed (she is gone), and nothing held of her is left behind.
#[test]
fn a_newcomer_under_a_local_user_s_name_who_left_is_not_listed_later() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.set_origin(Some(from_stream(7, 1, position(1), 0)));
    assert!(!net.hub.remote_join(7, user("alice"), now));
    net.hub.set_origin(None);
    stream_said(&mut net, (7, 2, 2, 1), "alice", "the new alice");
    net.hub.set_origin(Some(from_stream(7, 3, position(3), 0)));
    net.hub
        .remote_leave(7, &user("alice"), LeaveReason::QUIT, String::new(), now);
    net.hub.set_origin(None);
    net.pump();
    net.hub.check_invariants().unwrap();
    net.s(0).quit("");
    net.pump();
    assert_eq!(room_lines(&net.take(1)), ["alice left"]);
    net.hub.check_invariants().unwrap();
}

/// Server 7 published dave's messages, then never announced dave again
/// (it died for good before its rejoin): they are dropped after a while,
/// and nothing of them is shown.
#[test]
fn messages_held_for_a_user_never_announced_again_are_dropped() {
    let mut net = dave_left_with_server_7();
    let now = net.now;
    stream_said(&mut net, (7, 3, 3, 2), "dave", "d2");
    net.pump();
    assert!(net
        .hub
        .poll_timeout()
        .is_some_and(|t| t <= now + Duration::from_secs(60)));
    net.advance(Duration::from_secs(61));
    assert!(room_lines(&net.take(0)).is_empty());
    net.hub.check_invariants().unwrap();
    // Announced much later: joins, without what was dropped.
    net.hub.set_origin(Some(from_stream(7, 4, position(4), 0)));
    assert!(net.hub.remote_join(7, user("dave"), net.now));
    net.hub.set_origin(None);
    net.pump();
    assert_eq!(room_lines(&net.take(0)), ["dave joined"]);
}

/// Dave left server 7 while it was cut off: it comes back without
/// announcing him, and then publishes his leave. He was there when he
/// spoke: seen joining, what he said, and leaving.
#[test]
fn a_user_that_left_during_its_servers_cut_is_seen_back_before_its_words() {
    let mut net = dave_left_with_server_7();
    let now = net.now;
    stream_said(&mut net, (7, 3, 3, 2), "dave", "d2");
    net.hub.set_origin(Some(from_stream(7, 4, position(4), 0)));
    net.hub
        .remote_leave(7, &user("dave"), LeaveReason::QUIT, "bye".into(), now);
    net.hub.set_origin(None);
    net.pump();
    assert_eq!(
        room_lines(&net.take(0)),
        ["dave joined", "<dave> d2", "dave left"]
    );
    net.hub.check_invariants().unwrap();
    // A leave of someone nobody holds anything of is ignored, as before.
    net.hub
        .remote_leave(7, &user("dave"), LeaveReason::QUIT, "bye".into(), now);
    net.pump();
    assert!(room_lines(&net.take(0)).is_empty());
}

/// A session that moves here from another server gets a held message
/// where this server showed it (after its sender's join), not where the
/// stream has it: one that saw the stream past it, but not the join,
/// had not seen it (its server held it too).
#[test]
fn a_session_moving_here_gets_a_held_message_after_its_senders_join() {
    let t0 = Instant::now();
    for (seen, expected) in [
        (position(3), vec!["dave joined", "d2"]),
        (position(4), vec!["d2"]),
        (MessageId(position(4).0 + 1), vec![]),
    ] {
        let mut hub = token_hub(Limits::default());
        hub.enable_cluster();
        hub.set_origin(Some(from_stream(7, 1, position(1), 0)));
        assert!(hub.remote_join(7, user("dave"), t0));
        hub.set_origin(None);
        hub.advance_ids(position(1));
        assert_eq!(hub.remote_server_gone(7, t0), 1);
        let later = t0 + Limits::default().grace + Duration::from_secs(1);
        hub.handle_timeout(later);
        // Server 7 back: d2 (at 2) before dave's join (at 4).
        hub.set_origin(Some(from_stream(7, 2, position(2), 1)));
        hub.remote_chat(user("dave"), None, ChatKind::Text, "d2".into(), later);
        hub.set_origin(None);
        hub.advance_ids(position(2));
        hub.set_origin(Some(from_stream(7, 3, position(4), 0)));
        assert!(hub.remote_join(7, user("dave"), later));
        hub.set_origin(None);
        hub.advance_ids(position(4));
        hub.flush_presence();
        while hub.poll_transmit().is_some() {}
        let (c, _) = alice_moves_here(&mut hub, seen, later);
        let mut got = Vec::new();
        let mut last = seen.0;
        while let Some(t) = hub.poll_transmit() {
            if !t.to.contains(c) {
                continue;
            }
            match t.message {
                ServerMessage::Chat(m) => {
                    assert!(m.id.0 > last);
                    last = m.id.0;
                    got.push(m.text);
                }
                ServerMessage::Joined { id, user, .. } => {
                    assert!(id.0 > last);
                    last = id.0;
                    got.push(format!("{user} joined"));
                }
                ServerMessage::Presence(events) => {
                    for e in events {
                        if let PresenceEvent::Joined { user, id, .. } = e {
                            assert!(id.0 > last);
                            last = id.0;
                            got.push(format!("{user} joined"));
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(got, expected, "seen {seen:?}");
    }
}

#[test]
fn a_remote_leave_counts_only_from_the_users_own_server() {
    let mut net = three();
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("dave"), now);
    // Server 8 lost a user of the same name (it was cut off): not dave.
    net.hub
        .remote_leave(8, &user("dave"), LeaveReason::KICKED, String::new(), now);
    assert_eq!(net.hub.remote_users(), vec![(user("dave"), 7)]);
    net.hub
        .remote_leave(7, &user("Dave"), LeaveReason::QUIT, "bye".into(), now);
    net.pump();
    assert!(net.hub.remote_users().is_empty());
    assert!(unstamped(net.take(0)).iter().any(
        |e| matches!(e, ClientEvent::Left(d) if d.user.as_str() == "dave" && d.text == "bye")
    ));
}

/// Two hubs of a cluster, as servers 1 and 2: `p` on the first, `dave`
/// on the second, each known to the other as a remote user.
fn two_servers(now: Instant) -> (Hub, ClientId, Hub, ClientId) {
    let mut a = Hub::new(Limits::default(), "hi");
    let mut b = Hub::new(Limits::default(), "hi");
    a.enable_cluster();
    b.enable_cluster();
    let p = joined(&mut a, "p", now);
    let dave = joined(&mut b, "dave", now);
    a.remote_join(2, user("dave"), now);
    b.remote_join(1, user("p"), now);
    for hub in [&mut a, &mut b] {
        hub.flush_presence();
        while hub.poll_transmit().is_some() {}
        while hub.poll_event().is_some() {}
    }
    (a, p, b, dave)
}

/// What a hub said to `to`, and its transfer events (control, data).
fn drain_hub(
    hub: &mut Hub,
    to: ClientId,
) -> (Vec<ServerMessage>, Vec<TransferControl>, Vec<RemotePush>) {
    let mut said = Vec::new();
    while let Some(t) = hub.poll_transmit() {
        if t.to.contains(to) {
            said.push(t.message);
        }
    }
    let (mut control, mut data) = (Vec::new(), Vec::new());
    while let Some(e) = hub.poll_event() {
        match e {
            HubEvent::Cluster(ClusterEvent::Transfer(c)) => control.push(c),
            HubEvent::RemotePush(d) => data.push(d),
            _ => {}
        }
    }
    (said, control, data)
}

/// Hands the control events of one hub to the other (as the bus does).
fn deliver_control(hub: &mut Hub, from: u64, control: Vec<TransferControl>, now: Instant) {
    for c in control {
        match c {
            TransferControl::Offer {
                relay,
                from: pusher,
                users,
                name,
                size,
                ..
            } => hub.remote_offer(from, relay, pusher, &users, name, size, now),
            TransferControl::Answer {
                relay, accepted, ..
            } => hub.remote_answer(from, relay, accepted, now),
            TransferControl::Gone {
                relay,
                code,
                reason,
                ..
            } => hub.remote_gone(from, relay, code, &reason),
            TransferControl::Delivered {
                relay, receivers, ..
            } => hub.remote_delivered(from, relay, receivers, now),
            TransferControl::Dropped {
                relay,
                code,
                reason,
                ..
            } => hub.remote_cancel(from, relay, code, &reason),
            TransferControl::Credit { relay, offset, .. } => {
                hub.remote_credit(from, relay, offset, now);
            }
        }
    }
}

fn offer_to(hub: &mut Hub, c: ClientId, to: Recipient, size: u64, now: Instant) {
    hub.handle_message(
        c,
        ClientMessage::Offer {
            id: TransferId(1),
            name: FileName::new("notes.txt").unwrap(),
            size,
            to,
        },
        now,
    );
}

/// [`two_servers`], with p's push of 6 bytes to dave (on the other
/// server) offered there and accepted, its answer back at p's server.
fn push_accepted_on_another_server(now: Instant) -> (Hub, ClientId, Hub, ClientId) {
    let (mut a, p, mut b, dave) = two_servers(now);
    offer_to(&mut a, p, Recipient::User(user("dave")), 6, now);
    let (_, control, _) = drain_hub(&mut a, p);
    deliver_control(&mut b, 1, control, now);
    let (said, _, _) = drain_hub(&mut b, dave);
    let Some(ServerMessage::FileStart(FileStart { id: here, .. })) = said.first() else {
        panic!("{said:?}");
    };
    b.handle_message(dave, ClientMessage::Accept { id: *here }, now);
    let (_, control, _) = drain_hub(&mut b, dave);
    deliver_control(&mut a, 2, control, now);
    drain_hub(&mut a, p);
    (a, p, b, dave)
}

/// As [`push_accepted_on_another_server`], with the push's first chunk
/// relayed to dave; also returns the push's id on dave's server.
fn push_under_way_to_another_server(now: Instant) -> (Hub, ClientId, Hub, ClientId, TransferId) {
    let (mut a, p, mut b, dave) = push_accepted_on_another_server(now);
    a.handle_message(
        p,
        ClientMessage::Chunk(FileChunk::new(TransferId(1), 0, b"abc".to_vec())),
        now,
    );
    let (_, _, data) = drain_hub(&mut a, p);
    assert!(carry_data(&mut b, data, now).is_empty());
    let (said, _, _) = drain_hub(&mut b, dave);
    let relay = said
        .iter()
        .find_map(|m| match m {
            ServerMessage::Chunk(c) => Some(c.id),
            _ => None,
        })
        .expect("the chunk reached dave");
    (a, p, b, dave, relay)
}

/// `said` is one cancel of the push: no receiver is left, for `reason`.
fn assert_no_receiver_left(said: &[ServerMessage], reason: &str) {
    match said {
        [ServerMessage::Cancel(c)] => {
            assert_eq!(c.code, CancelCode::NO_RECEIVER);
            assert_eq!(c.reason, reason);
        }
        other => panic!("{other:?}"),
    }
}

/// Whether `said` holds a cancel of a transfer with `reason`.
fn cancelled_for(said: &[ServerMessage], reason: &str) -> bool {
    said.iter()
        .any(|m| matches!(m, ServerMessage::Cancel(FileCancel { reason: r, .. }) if r == reason))
}

/// The pusher is told why a push to users of another server alone ended
/// when that server's leg is given up: before, "no receiver is left",
/// whatever happened (the cluster could not be reached, say).
#[test]
fn a_push_whose_only_leg_is_given_up_tells_the_pusher_why() {
    let now = Instant::now();
    let (mut a, p, _, _) = push_accepted_on_another_server(now);
    a.handle_message(
        p,
        ClientMessage::Chunk(FileChunk::new(TransferId(1), 0, b"abc".to_vec())),
        now,
    );
    let (_, _, data) = drain_hub(&mut a, p);
    let relay = data
        .iter()
        .find_map(|d| match d {
            RemotePush::Chunk { relay, .. } => Some(*relay),
            _ => None,
        })
        .expect("a chunk toward server 2");
    a.remote_gone(2, relay, CancelCode::IO, "the cluster cannot be reached");
    let (said, _, _) = drain_hub(&mut a, p);
    assert_no_receiver_left(&said, "no receiver is left (the cluster cannot be reached)");
}

/// The last receiver of a push on another server is dropped there during
/// the transfer (it reads too slowly): the pusher is told who and why,
/// once (before: "no receiver is left (no receiver is left)").
#[test]
fn a_push_whose_last_receiver_elsewhere_is_dropped_tells_the_pusher_why_once() {
    let now = Instant::now();
    let (mut a, p, mut b, dave, relay) = push_under_way_to_another_server(now);
    b.cancel_delivery(dave, relay, CancelCode::TOO_SLOW, "receiver too slow");
    let (_, control, _) = drain_hub(&mut b, dave);
    deliver_control(&mut a, 2, control, now);
    let (said, _, _) = drain_hub(&mut a, p);
    assert_no_receiver_left(&said, "no receiver is left (dave: receiver too slow)");
}

/// Part of a push's data between servers never comes (Redis restarted
/// empty during the transfer): the receiver and the pusher are told that
/// the cluster lost it (before: "chunk of transfer #1 at offset 4,
/// expected offset 2", a broken rule of the protocol).
#[test]
fn a_push_whose_data_the_cluster_lost_says_so_to_receiver_and_pusher() {
    let now = Instant::now();
    let (mut a, p, mut b, dave) = push_accepted_on_another_server(now);
    for (offset, data) in [(0, b"ab"), (2, b"cd"), (4, b"ef")] {
        a.handle_message(
            p,
            ClientMessage::Chunk(FileChunk::new(TransferId(1), offset, data.to_vec())),
            now,
        );
    }
    let (_, _, data) = drain_hub(&mut a, p);
    // The middle chunk went with Redis's data.
    let data: Vec<RemotePush> = data
        .into_iter()
        .filter(|d| !matches!(d, RemotePush::Chunk { offset: 2, .. }))
        .collect();
    carry_data(&mut b, data, now);
    let lost = "the cluster lost part of the file's data (its Redis restarted or lost its data)";
    let (said, control, _) = drain_hub(&mut b, dave);
    assert!(
        said.iter().any(|m| matches!(m,
            ServerMessage::Cancel(FileCancel { code: CancelCode::IO, reason, .. }) if reason == lost)),
        "{said:?}"
    );
    deliver_control(&mut a, 2, control, now);
    let (said, _, _) = drain_hub(&mut a, p);
    assert_no_receiver_left(&said, &format!("no receiver is left ({lost})"));
}

/// A hub where `p` pushes 6 bytes to `bob`, who accepted: the first 3
/// sent, and everything said so far drained. The hub, `p`, `bob` and the
/// push's id on bob's side.
fn push_under_way_to_bob(now: Instant) -> (Hub, ClientId, ClientId, TransferId) {
    let mut hub = Hub::new(Limits::default(), "hi");
    let p = joined(&mut hub, "p", now);
    let bob = joined(&mut hub, "bob", now);
    hub.flush_presence();
    while hub.poll_transmit().is_some() {}
    offer_to(&mut hub, p, Recipient::User(user("bob")), 6, now);
    let (said, _, _) = drain_hub(&mut hub, bob);
    let Some(ServerMessage::FileStart(FileStart { id: relay, .. })) = said.first() else {
        panic!("{said:?}");
    };
    let relay = *relay;
    hub.handle_message(bob, ClientMessage::Accept { id: relay }, now);
    hub.handle_message(
        p,
        ClientMessage::Chunk(FileChunk::new(TransferId(1), 0, b"abc".to_vec())),
        now,
    );
    drain_hub(&mut hub, p);
    (hub, p, bob, relay)
}

/// On one server too, a pusher whose last receiver the server stopped
/// delivering to is told who and why (before: "no receiver is left").
#[test]
fn a_push_whose_last_receiver_is_dropped_tells_the_pusher_who_and_why() {
    let now = Instant::now();
    let (mut hub, p, bob, relay) = push_under_way_to_bob(now);
    hub.cancel_delivery(bob, relay, CancelCode::TOO_SLOW, "receiver too slow");
    let (said, _, _) = drain_hub(&mut hub, p);
    assert_no_receiver_left(&said, "no receiver is left (bob: receiver too slow)");
}

/// A receiver that gives up a push during the transfer (its disk is
/// full) is named to the pusher with the code's words, not its text,
/// which may name its own paths (before: "no receiver is left").
#[test]
fn a_receiver_giving_up_during_a_push_is_named_to_the_pusher() {
    let now = Instant::now();
    let (mut hub, p, bob, relay) = push_under_way_to_bob(now);
    hub.handle_message(
        bob,
        ClientMessage::Cancel(FileCancel {
            id: relay,
            code: CancelCode::IO,
            reason: "cannot write /home/bob/received/f.part: no space left on device".into(),
        }),
        now,
    );
    let (said, _, _) = drain_hub(&mut hub, p);
    assert_no_receiver_left(&said, "no receiver is left (bob: could not store the file)");
}

/// A push between two servers cut by one of them shutting down: the
/// other side is told whose server it was (before: "the server shut
/// down", which a receiver took for its own).
#[test]
fn a_push_cut_by_a_server_shutting_down_says_whose_it_was() {
    for stops in ["sender's", "receivers'"] {
        let now = Instant::now();
        let (mut a, p, mut b, dave) = push_accepted_on_another_server(now);
        let told = if stops == "sender's" {
            a.shutdown("bye");
            let (_, _, data) = drain_hub(&mut a, p);
            data.into_iter()
                .find_map(|d| match d {
                    RemotePush::Cancel { to: 2, reason, .. } => Some(reason),
                    _ => None,
                })
                .expect("a cancel toward server 2")
        } else {
            b.shutdown("bye");
            let (_, control, _) = drain_hub(&mut b, dave);
            control
                .into_iter()
                .find_map(|c| match c {
                    TransferControl::Gone { to: 1, reason, .. } => Some(reason),
                    _ => None,
                })
                .expect("the push given up toward server 1")
        };
        assert_eq!(told, format!("the {stops} server shut down"));
    }
}

/// A push to a user of another server whose connection was lost (its
/// session waits there for a resume) says so, as on one server.
#[test]
fn a_push_to_an_away_user_of_another_server_says_it_is_away() {
    let now = Instant::now();
    let mut a = Hub::new(Limits::default(), "hi");
    let mut b = Hub::new(Limits::default(), "hi");
    // Sessions on b wait for a resume.
    b.set_token_source(Box::new(|| [7; 16]));
    a.enable_cluster();
    b.enable_cluster();
    let p = joined(&mut a, "p", now);
    let dave = joined(&mut b, "dave", now);
    a.remote_join(2, user("dave"), now);
    b.remote_join(1, user("p"), now);
    b.handle_disconnect(dave, LeaveReason::LOST);
    drain_hub(&mut b, dave);
    offer_to(&mut a, p, Recipient::User(user("dave")), 6, now);
    let (_, control, _) = drain_hub(&mut a, p);
    deliver_control(&mut b, 1, control, now);
    let (_, control, _) = drain_hub(&mut b, dave);
    let reason = control
        .into_iter()
        .find_map(|c| match c {
            TransferControl::Gone { to: 1, reason, .. } => Some(reason),
            _ => None,
        })
        .expect("the push given up toward server 1");
    assert_eq!(
        reason,
        "dave is away (connection lost, may come back): a file can only be sent to a connected user"
    );
}

#[test]
fn a_push_to_a_user_of_another_server_is_offered_there_and_relayed_with_its_checks() {
    let now = Instant::now();
    let (mut a, p, mut b, dave) = two_servers(now);
    offer_to(&mut a, p, Recipient::User(user("dave")), 6, now);
    let (said, control, _) = drain_hub(&mut a, p);
    assert!(said.is_empty(), "{said:?}");
    assert!(
        matches!(&control[..], [TransferControl::Offer { to: 2, users, size: 6, .. }] if users == &[user("dave")]),
        "{control:?}"
    );
    deliver_control(&mut b, 1, control, now);
    let (said, _, data) = drain_hub(&mut b, dave);
    let relay_here = match &said[..] {
        [ServerMessage::FileStart(FileStart {
            id,
            origin: Origin::Push { from },
            ..
        })] if from.as_str() == "p" => *id,
        other => panic!("{other:?}"),
    };
    assert!(matches!(&data[..], [RemotePush::Receive { from: 1, .. }]));
    b.handle_message(dave, ClientMessage::Accept { id: relay_here }, now);
    let (_, control, _) = drain_hub(&mut b, dave);
    assert!(matches!(
        &control[..],
        [
            TransferControl::Answer {
                to: 1,
                accepted: 1,
                ..
            },
            TransferControl::Credit {
                to: 1,
                offset: 6,
                ..
            }
        ]
    ));
    deliver_control(&mut a, 2, control, now);
    let (said, _, _) = drain_hub(&mut a, p);
    assert!(matches!(
        &said[..],
        [
            ServerMessage::PushAccepted { receivers: 1, .. },
            ServerMessage::PushCredit { .. }
        ]
    ));
    // The data goes out on the data path, and is checked again there.
    a.handle_message(
        p,
        ClientMessage::Chunk(FileChunk::new(TransferId(1), 0, b"abcdef".to_vec())),
        now,
    );
    a.handle_message(
        p,
        ClientMessage::End(FileEnd {
            id: TransferId(1),
            crc: crc32fast::hash(b"abcdef"),
        }),
        now,
    );
    let (said, _, data) = drain_hub(&mut a, p);
    // Told once the other server said how many got it whole.
    assert!(said.is_empty(), "{said:?}");
    let others = carry_data(&mut b, data, now);
    assert!(others.is_empty(), "{others:?}");
    let (said, control, data) = drain_hub(&mut b, dave);
    assert!(
        matches!(&said[..], [ServerMessage::Chunk(c), ServerMessage::End(e)]
            if c.id == relay_here && c.data == b"abcdef" && e.id == relay_here),
        "{said:?}"
    );
    assert!(matches!(&data[..], [RemotePush::Received { from: 1, .. }]));
    assert!(
        matches!(
            &control[..],
            [TransferControl::Delivered {
                to: 1,
                receivers: 1,
                ..
            }]
        ),
        "{control:?}"
    );
    deliver_control(&mut a, 2, control, now);
    let (said, _, _) = drain_hub(&mut a, p);
    assert!(matches!(
        &said[..],
        [ServerMessage::PushDone { receivers: 1, .. }]
    ));
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
}

#[test]
fn a_push_declined_on_another_server_is_refused_to_the_pusher_with_the_name() {
    let now = Instant::now();
    let (mut a, p, mut b, dave) = two_servers(now);
    offer_to(&mut a, p, Recipient::User(user("dave")), 6, now);
    let (_, control, _) = drain_hub(&mut a, p);
    deliver_control(&mut b, 1, control, now);
    let (said, _, _) = drain_hub(&mut b, dave);
    let ServerMessage::FileStart(start) = &said[0] else {
        panic!("{said:?}")
    };
    b.handle_message(
        dave,
        ClientMessage::Cancel(FileCancel {
            id: start.id,
            code: CancelCode::DECLINED,
            reason: String::new(),
        }),
        now,
    );
    let (_, control, data) = drain_hub(&mut b, dave);
    assert!(matches!(&data[..], [RemotePush::Received { from: 1, .. }]));
    deliver_control(&mut a, 2, control, now);
    let (said, _, data) = drain_hub(&mut a, p);
    assert!(
        matches!(&said[..], [ServerMessage::Cancel(FileCancel { code: CancelCode::DECLINED, reason, .. })]
            if reason == "dave did not accept the file"),
        "{said:?}"
    );
    assert!(matches!(&data[..], [RemotePush::Closed { to: 2, .. }]));
}

#[test]
fn a_push_to_everyone_waits_for_every_server_and_ends_when_a_receiving_server_dies() {
    let now = Instant::now();
    let (mut a, p, mut b, dave) = two_servers(now);
    let q = joined(&mut a, "q", now);
    offer_to(&mut a, p, Recipient::Everyone, 6, now);
    let (said, control, _) = drain_hub(&mut a, q);
    assert_eq!(control.len(), 1, "one offer per other server");
    let Some(ServerMessage::FileStart(start)) = said.last() else {
        panic!("{said:?}")
    };
    a.handle_message(q, ClientMessage::Accept { id: start.id }, now);
    // Server 2 has not answered: the pusher waits.
    let (said, _, _) = drain_hub(&mut a, p);
    assert!(said.is_empty(), "{said:?}");
    deliver_control(&mut b, 1, control, now);
    let _ = drain_hub(&mut b, dave);
    // Server 2 dies before it answers: the push goes on to q alone.
    a.remote_server_gone(2, now);
    let (said, _, data) = drain_hub(&mut a, p);
    assert!(
        matches!(
            &said[..],
            [
                ServerMessage::PushAccepted { receivers: 1, .. },
                ServerMessage::PushCredit { .. }
            ]
        ),
        "{said:?}"
    );
    assert!(matches!(&data[..], [RemotePush::Closed { to: 2, .. }]));
    // And on a server whose sender's server died, its receivers are told,
    // and so is that server, should it come back (frozen, or cut off).
    b.remote_server_gone(1, now);
    let (said, control, data) = drain_hub(&mut b, dave);
    assert!(
        control.iter().any(|e| matches!(
            e,
            TransferControl::Gone {
                to: 1,
                code: CancelCode::PEER_LEFT,
                ..
            }
        )),
        "{control:?}"
    );
    assert!(
        matches!(
            &said[..],
            [ServerMessage::Cancel(FileCancel {
                code: CancelCode::PEER_LEFT,
                reason,
                ..
            })] if reason == "the sender's server dropped out of the cluster during the transfer"
        ),
        "{said:?}"
    );
    assert!(matches!(&data[..], [RemotePush::Received { from: 1, .. }]));
    b.check_invariants().unwrap();
}

#[test]
fn a_private_message_to_a_user_lost_with_its_server_is_told_to_its_sender() {
    let t0 = Instant::now();
    let (mut a, p, _b, _dave) = two_servers(t0);
    // A dead server goes unnoticed for up to 3 s + 1 s here.
    a.set_cluster_lease(Duration::from_secs(3));
    let to_dave = |client_id, text: &str| ClientMessage::Chat {
        client_id,
        to: Recipient::User(user("dave")),
        kind: ChatKind::Text,
        text: text.into(),
    };
    a.handle_message(p, to_dave(1, "long ago"), t0);
    let sent = t0 + Duration::from_secs(10);
    a.handle_message(p, to_dave(2, "are you there?"), sent);
    let _ = drain_hub(&mut a, p);
    // No resume here: dave leaves with his server, unread.
    a.remote_server_gone(2, sent + Duration::from_secs(4));
    let (said, _, _) = drain_hub(&mut a, p);
    let errors: Vec<&str> = said
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Error { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        ["your private message to dave may not have been delivered: dave's server stopped and dave did not come back (\"are you there?\")"],
        "only what his server could have died with"
    );
}

/// The tester's cases: a private message read long before its
/// receiver's server died was told to its sender as "may not have been
/// delivered" (the record lived until the sender's next one), and so was
/// one read by an earlier user of the name, who had quit.
#[test]
fn private_messages_delivered_while_the_server_lived_are_not_told_as_lost() {
    let t0 = Instant::now();
    for quit_and_rejoin in [false, true] {
        let (mut a, p, _b, _dave) = two_servers(t0);
        a.set_cluster_lease(Duration::from_secs(3));
        a.handle_message(
            p,
            ClientMessage::Chat {
                client_id: 1,
                to: Recipient::User(user("dave")),
                kind: ChatKind::Text,
                text: "old message".into(),
            },
            t0,
        );
        let _ = drain_hub(&mut a, p);
        let mut died = t0 + Duration::from_secs(30);
        if quit_and_rejoin {
            // Dave reads it and quits; another dave joins there at once,
            // and the server dies within a lease of the message.
            a.remote_leave(2, &user("dave"), LeaveReason::QUIT, String::new(), t0);
            a.remote_join(2, user("dave"), t0);
            died = t0 + Duration::from_secs(2);
        }
        a.remote_server_gone(2, died);
        let (said, _, _) = drain_hub(&mut a, p);
        assert!(
            !said
                .iter()
                .any(|m| matches!(m, ServerMessage::Error { .. })),
            "quit and rejoin: {quit_and_rejoin}; {said:?}"
        );
    }
}

#[test]
fn a_lost_private_message_is_not_told_to_a_new_user_of_its_sender_s_name() {
    let t0 = Instant::now();
    let (mut a, p, _b, _dave) = two_servers(t0);
    a.set_cluster_lease(Duration::from_secs(3));
    a.handle_message(
        p,
        ClientMessage::Chat {
            client_id: 1,
            to: Recipient::User(user("dave")),
            kind: ChatKind::Text,
            text: "private words of p".into(),
        },
        t0,
    );
    // p quits; someone else joins as p before dave's server is found dead.
    a.handle_message(
        p,
        ClientMessage::Quit {
            reason: String::new(),
        },
        t0,
    );
    let _ = drain_hub(&mut a, p);
    let new_p = joined(&mut a, "p", t0);
    let _ = drain_hub(&mut a, new_p);
    a.remote_server_gone(2, t0 + Duration::from_secs(1));
    let (said, _, _) = drain_hub(&mut a, new_p);
    assert!(
        !said
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "{said:?}"
    );
}

#[test]
fn with_resume_a_lost_private_message_is_told_only_if_its_receiver_never_comes_back() {
    let t0 = Instant::now();
    for comes_back in [true, false] {
        let mut a = token_hub(Limits {
            grace: Duration::from_secs(5),
            ..Limits::default()
        });
        a.enable_cluster();
        a.set_cluster_lease(Duration::from_secs(3));
        let p = joined(&mut a, "p", t0);
        a.remote_join(2, user("dave"), t0);
        a.handle_message(
            p,
            ClientMessage::Chat {
                client_id: 1,
                to: Recipient::User(user("dave")),
                kind: ChatKind::Text,
                text: "are you there?".into(),
            },
            t0,
        );
        a.remote_server_gone(2, t0 + Duration::from_secs(4));
        if comes_back {
            // Resumed on server 3: the stream gives him what he missed.
            a.remote_join(3, user("dave"), t0 + Duration::from_secs(6));
        }
        a.handle_timeout(t0 + Duration::from_secs(60));
        let (said, _, _) = drain_hub(&mut a, p);
        let told = said.iter().any(|m| {
            matches!(m, ServerMessage::Error { text, .. } if text.contains("may not have been delivered"))
        });
        assert_eq!(told, !comes_back, "comes back: {comes_back}; {said:?}");
    }
}

#[test]
fn a_push_whose_receiver_s_server_dies_tells_the_pusher_what_became_of_the_push() {
    let now = Instant::now();
    let (mut a, p, _b, _dave) = two_servers(now);
    offer_to(&mut a, p, Recipient::User(user("dave")), 6, now);
    let _ = drain_hub(&mut a, p);
    a.remote_server_gone(2, now);
    let (said, _, _) = drain_hub(&mut a, p);
    // Dave may be back on another server by now: the text is about the push.
    assert!(
        cancelled_for(
            &said,
            "the receiver's server dropped out of the cluster during the transfer"
        ),
        "{said:?}"
    );
}

/// The receivers' server was frozen, not dead: the sending server gave
/// the push up when its lease ran out, and says so on the bus; the frozen
/// server, back, ends the push for its receivers at once (before, they
/// waited for data that would not come, for the 60 s idle timeout).
#[test]
fn a_push_given_up_toward_a_frozen_server_ends_there_when_it_is_back() {
    let now = Instant::now();
    let (mut a, p, mut b, dave, _) = push_under_way_to_another_server(now);
    a.remote_server_gone(2, now);
    let (_, control, _) = drain_hub(&mut a, p);
    assert!(
        control
            .iter()
            .any(|c| matches!(c, TransferControl::Dropped { to: 2, .. })),
        "{control:?}"
    );
    // B, back, reads it from the stream.
    deliver_control(&mut b, 1, control, now);
    let (said, _, _) = drain_hub(&mut b, dave);
    assert!(
        cancelled_for(
            &said,
            "the sender's server gave it up while the receivers' server was out of the cluster"
        ),
        "{said:?}"
    );
}

/// A server that fell behind the cluster's stream (frozen, say) and found
/// entries of other servers trimmed before it read them tells its users
/// that messages may be missing (before, only its log said so).
#[test]
fn users_are_told_when_their_server_lost_entries_of_the_stream() {
    let now = Instant::now();
    let (mut a, p, _b, _dave) = two_servers(now);
    a.remote_lost(0);
    let (said, _, _) = drain_hub(&mut a, p);
    assert!(said.is_empty(), "{said:?}");
    a.remote_lost(199);
    let (said, _, _) = drain_hub(&mut a, p);
    match &said[..] {
        [ServerMessage::Error { client_id: 0, text, .. }] => assert_eq!(
            text,
            "messages from users of other servers may be missing: this server fell behind the cluster and 199 of its updates were gone before it read them"
        ),
        other => panic!("{other:?}"),
    }
    // One is said in words that fit it (before: "1 of its update were gone").
    a.remote_lost(1);
    let (said, _, _) = drain_hub(&mut a, p);
    match &said[..] {
        [ServerMessage::Error { client_id: 0, text, .. }] => assert_eq!(
            text,
            "messages from users of other servers may be missing: this server fell behind the cluster and one of its updates was gone before it read it"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_commit_made_outside_the_hub_releases_only_the_answers_it_covers_in_order() {
    let store = CountingStore::new();
    let mut net = stored(&store);
    let bob = net.clients[1].0;
    let commits = store.commits();
    chat_in(&mut net, 0, 1, "first");
    chat_in(&mut net, 0, 2, "second");
    let ids: Vec<u64> = routed(&queued(&mut net), bob).iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), 2);
    // Committed up to the first: its ack only.
    let now = net.now;
    net.hub.history_committed(MessageId(ids[0]), Ok(()), now);
    assert_eq!(acks(&queued(&mut net)), [(1, ids[0])]);
    assert!(net.hub.has_uncommitted());
    // A refusal held behind the second waits with it.
    let long = "x".repeat(net.hub.limits().max_text + 1);
    chat_in(&mut net, 0, 3, &long);
    assert!(queued(&mut net).is_empty());
    // The same report again releases nothing more.
    net.hub.history_committed(MessageId(ids[0]), Ok(()), now);
    assert!(queued(&mut net).is_empty());
    // The second was not saved: its ack, the refusal, in order, and the
    // line saying it was not saved.
    net.hub.history_committed(
        MessageId(ids[1]),
        Err(crate::StoreError::Backend {
            detail: "disk full".into(),
        }),
        now,
    );
    let q = queued(&mut net);
    let errors: Vec<(u64, ErrorCode)> = errors_in(&q)
        .into_iter()
        .map(|(id, code, _)| (id, code))
        .collect();
    assert_eq!(
        errors,
        [(3, ErrorCode::TEXT_TOO_LONG), (0, ErrorCode::INTERNAL)]
    );
    assert_eq!(acks(&q), [(2, ids[1])]);
    assert!(!net.hub.has_uncommitted());
    // The hub never asked the store to commit: the report was the commit.
    assert_eq!(store.commits(), commits);
    // Sent again: a duplicate, not routed a second time.
    chat_in(&mut net, 0, 2, "second");
    assert!(routed(&queued(&mut net), bob).is_empty());
}

// ---------------------------------------------------------------------------
// Sessions that move between the servers of a cluster (see hub/roaming.rs).

/// Alice's session moves here from server 1 (she saw its id `last_seen`):
/// her new connection, and the token she resumed with.
fn alice_moves_here(
    hub: &mut Hub,
    last_seen: MessageId,
    now: Instant,
) -> (ClientId, crate::ResumeToken) {
    let token = crate::ResumeToken([42; 16]);
    assert!(hub.adopt_session(user("alice"), token, 1, 0, None, now));
    let c = hub.handle_connect(now);
    let epoch = hub.epoch();
    hub.handle_message(
        c,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("alice"),
            resume: Some(crate::ResumeRequest {
                token,
                last_seen,
                epoch,
            }),
        },
        now,
    );
    (c, token)
}

/// Server B of a cluster takes over alice's session from server A (id 1):
/// she saw A's id `X`, given after A read stream position 130. She gets
/// what she had not seen, in the stream's order, under ids above `X`, and
/// nothing she had.
#[test]
fn a_session_taken_over_from_another_server_gets_exactly_what_it_missed() {
    let mut hub = token_hub(Limits::default());
    hub.enable_cluster();
    let now = Instant::now();
    let pos = |ms: u64| crate::RemoteOrigin::position_id(ms, 0);
    let from = |server: u64, id: MessageId, at: u64| crate::RemoteOrigin {
        server,
        id,
        position: pos(at),
        time: Timestamp(0),
        client_id: 0,
    };
    let remote_chat = |hub: &mut Hub, o: crate::RemoteOrigin, who: &str, text: &str| {
        hub.set_origin(Some(o));
        hub.remote_chat(user(who), None, ChatKind::Text, text.into(), now);
        hub.set_origin(None);
    };
    let x = MessageId(pos(130).0 + 3);
    hub.set_origin(Some(from(3, MessageId(1), 100)));
    hub.remote_join(3, user("carol"), now);
    hub.set_origin(None);
    let bob = hub.handle_connect(now);
    hub.handle_message(
        bob,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("bob"),
            resume: None,
        },
        now,
    );
    hub.set_origin(Some(from(1, MessageId(9), 105)));
    hub.remote_join(1, user("alice"), now);
    hub.set_origin(None);
    remote_chat(&mut hub, from(3, MessageId(2), 110), "carol", "c1");
    hub.advance_ids(pos(110));
    let mut said = 0;
    let mut bob_says = |hub: &mut Hub, text: &str| {
        said += 1;
        hub.handle_message(
            bob,
            ClientMessage::Chat {
                client_id: said,
                to: Recipient::Everyone,
                kind: ChatKind::Text,
                text: text.into(),
            },
            now,
        );
        hub.last_id()
    };
    // Seen on A: b1 (read back there at 125), a1 (A's id below X), c0 (130).
    let b1 = bob_says(&mut hub, "b1");
    hub.note_published(b1, pos(125));
    remote_chat(
        &mut hub,
        from(1, MessageId(pos(110).0 + 1), 128),
        "dave",
        "a1",
    );
    remote_chat(&mut hub, from(3, MessageId(3), 130), "carol", "c0");
    // Not seen: b2 (said here after reading 130, under an id below X, but
    // in the stream only at 150), c2 (135), a2 (A's id above X), b3 (not
    // yet in the stream).
    hub.advance_ids(pos(130));
    let b2 = bob_says(&mut hub, "b2");
    assert!(b2 < x);
    remote_chat(&mut hub, from(3, MessageId(4), 135), "carol", "c2");
    remote_chat(&mut hub, from(1, MessageId(x.0 + 2), 140), "dave", "a2");
    hub.advance_ids(pos(140));
    hub.note_published(b2, pos(150));
    hub.advance_ids(pos(150));
    let _b3 = bob_says(&mut hub, "b3");
    while hub.poll_transmit().is_some() {}

    let (c, token) = alice_moves_here(&mut hub, x, now);
    let epoch = hub.epoch();
    let sent: Vec<ServerMessage> = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(c))
        .map(|t| t.message)
        .collect();
    let got: Vec<(u64, String)> = sent
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(m) => Some((m.id.0, m.text.clone())),
            _ => None,
        })
        .collect();
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["c2", "a2", "b2", "b3"]);
    let mut last = x.0;
    for (id, text) in &got {
        assert!(*id > last, "{text} under {id}, not above {last}");
        last = *id;
    }
    // The `Welcome`'s newest id covers the replay: what is at or below it
    // was missed, what comes above it is live.
    let welcomed = sent.iter().find_map(|m| match m {
        ServerMessage::Welcome { last_id, .. } => Some(last_id.0),
        _ => None,
    });
    assert_eq!(welcomed, Some(last), "{sent:?}");
    // What comes next is above it all too.
    let next = bob_says(&mut hub, "b4");
    assert!(next.0 > last);
    // The same token does not work twice, once its client has shown it
    // got the new one.
    hub.handle_message(c, ClientMessage::Who, now);
    let again = hub.handle_connect(now);
    hub.handle_message(again, resume_hello("alice", token, epoch), now);
    assert_eq!(answer(&mut hub, again), RefuseCode::NAME_TAKEN.to_string());
}

/// A session that moves here is answered from the log for the messages
/// it sent before the move, but only its own: pia's earlier session of
/// the same name (quit) numbered its messages from 1 too, and her new
/// session's first messages were taken for copies of those, acknowledged
/// and delivered to nobody.
#[test]
fn a_session_moving_here_is_not_taken_for_an_earlier_one_of_its_name() {
    let mut hub = token_hub(Limits::default());
    hub.enable_cluster();
    let now = Instant::now();
    let bob = joined(&mut hub, "bob", now);
    let pos = |ms: u64| crate::RemoteOrigin::position_id(ms, 0);
    let from = |id: u64, at: u64, client_id: u64| crate::RemoteOrigin {
        server: 1,
        id: MessageId(pos(at).0 + id),
        position: pos(at),
        time: Timestamp(0),
        client_id,
    };
    let on_stream = |hub: &mut Hub, o: crate::RemoteOrigin, f: &mut dyn FnMut(&mut Hub)| {
        hub.set_origin(Some(o));
        f(hub);
        hub.set_origin(None);
    };
    let chat = |text: &'static str| {
        move |hub: &mut Hub| {
            hub.remote_chat(user("pia"), None, ChatKind::Text, text.into(), now);
        }
    };
    // Her first session: joins, says three things, quits.
    on_stream(&mut hub, from(1, 100, 0), &mut |h| {
        h.remote_join(1, user("pia"), now);
    });
    on_stream(&mut hub, from(2, 101, 1), &mut chat("old 1"));
    on_stream(&mut hub, from(3, 102, 2), &mut chat("old 2"));
    on_stream(&mut hub, from(4, 103, 3), &mut chat("old 3"));
    on_stream(&mut hub, from(5, 104, 0), &mut |h| {
        h.remote_leave(1, &user("pia"), LeaveReason::QUIT, String::new(), now);
    });
    // Her new one: joins, says one thing, and her server dies.
    on_stream(&mut hub, from(1, 200, 0), &mut |h| {
        h.remote_join(1, user("pia"), now);
    });
    on_stream(&mut hub, from(2, 201, 1), &mut chat("new 1"));
    hub.advance_ids(pos(201));
    while hub.poll_transmit().is_some() {}

    let token = crate::ResumeToken([42; 16]);
    assert!(hub.adopt_session(user("pia"), token, 1, 0, None, now));
    let c = hub.handle_connect(now);
    let epoch = hub.epoch();
    let last_seen = MessageId(pos(201).0 + 2);
    hub.handle_message(
        c,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("pia"),
            resume: Some(crate::ResumeRequest {
                token,
                last_seen,
                epoch,
            }),
        },
        now,
    );
    while hub.poll_transmit().is_some() {}
    // "new 1" sent again (its answer was lost with her server): answered,
    // not delivered twice; "new 2" and "new 3": delivered.
    for (client_id, text) in [(1, "new 1"), (2, "new 2"), (3, "new 3")] {
        hub.handle_message(
            c,
            ClientMessage::Chat {
                client_id,
                to: Recipient::Everyone,
                kind: ChatKind::Text,
                text: text.into(),
            },
            now,
        );
    }
    let to_bob: Vec<String> = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(bob))
        .filter_map(|t| match t.message {
            ServerMessage::Chat(m) => Some(m.text),
            _ => None,
        })
        .collect();
    assert_eq!(to_bob, ["new 2", "new 3"]);
}

/// The joins and leaves a server logs of its own making (a dead server's
/// user whose grace ran out, who is online at its start) are told to a
/// session moving here only if they are news to it: carol, who came to
/// server A after them, was told them at every move here; amy, who was
/// on A before this server started, was told that zoe, listed online at
/// the start, had joined. A join of this server's own not yet in the
/// stream is news to any session moving here.
#[test]
fn a_session_moving_here_is_told_only_presence_it_has_not_seen() {
    let limits = Limits {
        grace: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut hub = token_hub(limits);
    hub.enable_cluster();
    let t0 = Instant::now();
    let pos = |ms: u64| crate::RemoteOrigin::position_id(ms, 0);
    let from = |server: u64, id: u64, at: u64| crate::RemoteOrigin {
        server,
        id: MessageId(id),
        position: pos(at),
        time: Timestamp(0),
        client_id: 0,
    };
    let stream_join = |hub: &mut Hub, o: crate::RemoteOrigin, who: &str| {
        hub.set_origin(Some(o));
        hub.remote_join(o.server, user(who), t0);
        hub.set_origin(None);
    };
    stream_join(&mut hub, from(3, 1, 100), "victim");
    stream_join(&mut hub, from(1, pos(102).0 + 1, 102), "amy");
    let amy_saw = MessageId(pos(105).0 + 1);
    // This server reads the stream to 110, then joins the cluster: zoe,
    // on server 2, is on its list of who is online.
    hub.advance_ids(pos(110));
    hub.remote_present(2, user("zoe"), t0);
    // victim's server dies; her grace runs out.
    hub.remote_server_gone(3, t0);
    hub.handle_timeout(t0 + Duration::from_secs(11));
    // Later, carol joins server A (1), and sees its id X there.
    stream_join(&mut hub, from(1, pos(200).0 + 1, 200), "carol");
    stream_join(&mut hub, from(2, 7, 210), "dave");
    hub.advance_ids(pos(210));
    let carol_saw = MessageId(pos(210).0 + 2);
    // After that: news to both.
    stream_join(&mut hub, from(4, 1, 300), "erin");
    stream_join(&mut hub, from(4, 2, 305), "frank");
    hub.advance_ids(pos(305));
    hub.remote_server_gone(4, t0 + Duration::from_secs(11));
    hub.handle_timeout(t0 + Duration::from_secs(22));
    while hub.poll_transmit().is_some() {}

    let now = t0 + Duration::from_secs(23);
    let moves_here = |hub: &mut Hub, name: &str, token: u8, last_seen: MessageId| {
        let token = crate::ResumeToken([token; 16]);
        assert!(hub.adopt_session(user(name), token, 1, 0, None, now));
        let c = hub.handle_connect(now);
        let epoch = hub.epoch();
        hub.handle_message(
            c,
            ClientMessage::Hello {
                version: PROTOCOL_VERSION,
                username: user(name),
                resume: Some(crate::ResumeRequest {
                    token,
                    last_seen,
                    epoch,
                }),
            },
            now,
        );
        let mut told = Vec::new();
        for t in std::iter::from_fn(|| hub.poll_transmit()).filter(|t| t.to.contains(c)) {
            let events = match t.message {
                ServerMessage::Presence(es) => es,
                ServerMessage::Joined { id, time, user } => {
                    vec![PresenceEvent::Joined { id, time, user }]
                }
                ServerMessage::Left(d) => vec![PresenceEvent::Left(d)],
                _ => Vec::new(),
            };
            for e in events {
                told.push(match e {
                    PresenceEvent::Joined { user, .. } => format!("+{user}"),
                    PresenceEvent::Left(d) => format!("-{}", d.user),
                    PresenceEvent::Away { .. } | PresenceEvent::Back { .. } => continue,
                });
            }
        }
        told
    };
    assert_eq!(
        moves_here(&mut hub, "carol", 42, carol_saw),
        ["+erin", "+frank", "-erin", "-frank"]
    );
    assert_eq!(
        moves_here(&mut hub, "amy", 43, amy_saw),
        ["-victim", "+carol", "+dave", "+erin", "+frank", "-erin", "-frank"]
    );
    // bob joins here, not yet in the stream: news to gus, though server
    // A had read further than this one when he saw it.
    stream_join(&mut hub, from(1, pos(306).0 + 1, 306), "gus");
    joined(&mut hub, "bob", now);
    while hub.poll_transmit().is_some() {}
    let gus_saw = MessageId(pos(400).0 + 1);
    assert_eq!(moves_here(&mut hub, "gus", 44, gus_saw), ["+bob"]);
}

/// The users of a server that died wait for the grace period before they
/// are announced as left: one that resumes on another server meanwhile is
/// never seen leaving.
#[test]
fn users_of_a_dead_server_leave_only_after_the_grace_period() {
    let limits = Limits {
        grace: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut net = resumable(limits, &["bob"]);
    net.hub.enable_cluster();
    let now = net.now;
    net.hub.remote_join(7, user("alice"), now);
    net.hub.remote_join(7, user("dave"), now);
    net.advance(Duration::from_secs(1));
    net.take(0);
    assert_eq!(net.hub.remote_server_gone(7, net.now), 2);
    // Asked again (each lease round): nothing new.
    assert_eq!(net.hub.remote_server_gone(7, net.now), 0);
    net.advance(Duration::from_secs(5));
    // Nobody leaves within the grace: they are away, their sessions
    // waiting.
    let told = |events: Vec<ClientEvent>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Left(d) => Some(d.user.to_string()),
                ClientEvent::Joined { user, .. } => Some(format!("joined {user}")),
                ClientEvent::Away { user, .. } => Some(format!("away {user}")),
                ClientEvent::Back { user, .. } => Some(format!("back {user}")),
                _ => None,
            })
            .collect()
    };
    assert_eq!(told(net.take(0)), ["away alice", "away dave"]);
    let now = net.now;
    net.hub.remote_moved(8, user("alice"), now);
    net.advance(Duration::from_secs(6));
    assert_eq!(told(net.take(0)), ["back alice", "dave"]);
    assert!(net.hub.remote_users().contains(&(user("alice"), 8)));
}

/// A hub that joins a cluster takes the cluster's epoch; a session begun
/// before, under its own, still resumes.
#[test]
fn a_session_begun_before_the_cluster_epoch_still_resumes() {
    let mut hub = token_hub(Limits::default());
    let now = Instant::now();
    let c = hub.handle_connect(now);
    hub.handle_message(
        c,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("alice"),
            resume: None,
        },
        now,
    );
    let token = welcome_token(&mut hub, c);
    let own = hub.epoch();
    hub.set_epoch(own ^ 0xff);
    assert_ne!(hub.epoch(), own);
    hub.handle_disconnect(c, LeaveReason::LOST);
    let again = hub.handle_connect(now);
    hub.handle_message(again, resume_hello("alice", token, own), now);
    assert_eq!(answer(&mut hub, again), "resumed");
}

/// A server that asks a password takes a session over from another
/// server only for a client that gave the right one (the take-over comes
/// before the `Hello`'s own check); one that keeps accounts does for
/// anyone (the account check still comes before the resume).
#[test]
fn sessions_move_to_a_server_with_a_password_only_for_who_gave_it() {
    let mut hub = token_hub(Limits::default());
    let now = Instant::now();
    let (none, wrong, right) = (
        hub.handle_connect(now),
        hub.handle_connect(now),
        hub.handle_connect(now),
    );
    assert!(hub.sessions_may_move(none));
    hub.set_accounts(true);
    assert!(hub.sessions_may_move(none));
    hub.set_server_password(Secret::new("sesame".to_string()));
    for (client, given) in [(wrong, "sesam"), (right, "sesame")] {
        hub.handle_message(
            client,
            ClientMessage::Auth {
                server: Secret::new(given.to_string()),
                account: None,
            },
            now,
        );
    }
    assert!(!hub.sessions_may_move(none));
    assert!(!hub.sessions_may_move(wrong));
    assert!(hub.sessions_may_move(right));
    // Nobody's: no connection, no password.
    hub.handle_disconnect(right, LeaveReason::LOST);
    assert!(!hub.sessions_may_move(right));
}

/// A chat message to everyone with its client id (a client numbers its
/// messages; the hub drops a repeated number as a resent duplicate).
fn numbered_chat(client_id: u64, text: &str) -> ClientMessage {
    ClientMessage::Chat {
        client_id,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: text.into(),
    }
}

#[test]
fn routed_chat_is_no_work_for_the_server_a_files_request_is() {
    let now = Instant::now();
    let mut hub = Hub::new(Limits::default(), "hi");
    let a = joined(&mut hub, "alice", now);
    let _b = joined(&mut hub, "bob", now);
    while hub.poll_event().is_some() {}
    assert!(!hub.has_pending_work());
    hub.handle_message(a, numbered_chat(1, "one"), now);
    hub.handle_message(a, numbered_chat(2, "two"), now);
    // Two records of routed messages wait, and nothing else.
    assert!(!hub.has_pending_work());
    hub.handle_message(a, ClientMessage::ListFiles, now);
    assert!(hub.has_pending_work());
    let mut routed = 0;
    while let Some(e) = hub.poll_event() {
        routed += usize::from(matches!(e, HubEvent::Routed { .. }));
    }
    assert_eq!(routed, 2);
    assert!(!hub.has_pending_work());
}

#[test]
fn in_a_cluster_a_chat_for_the_other_servers_is_no_work_for_the_server_either() {
    let now = Instant::now();
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.enable_cluster();
    let a = joined(&mut hub, "alice", now);
    let _b = joined(&mut hub, "bob", now);
    while hub.poll_event().is_some() {}
    hub.handle_message(a, numbered_chat(1, "one"), now);
    hub.handle_message(a, numbered_chat(2, "two"), now);
    // Each message's record and its event for the other servers wait:
    // the server only queues them, so a run of messages goes on.
    assert!(!hub.has_pending_work());
    let mut published = 0;
    while let Some(e) = hub.poll_event() {
        published += usize::from(matches!(e, HubEvent::Cluster(ClusterEvent::Chat { .. })));
    }
    assert_eq!(published, 2);
    hub.handle_message(a, ClientMessage::ListFiles, now);
    assert!(hub.has_pending_work());
}

#[test]
fn the_member_list_follows_joins_and_leaves_and_is_shared_between_them() {
    let now = Instant::now();
    let mut hub = Hub::new(Limits::default(), "hi");
    let a = joined(&mut hub, "alice", now);
    let b = joined(&mut hub, "bob", now);
    assert_eq!(&hub.members()[..], &[a, b]);
    let room = |hub: &mut Hub| {
        while let Some(t) = hub.poll_transmit() {
            if let Destination::Many { members, .. } = t.to {
                return members;
            }
        }
        panic!("no broadcast");
    };
    hub.handle_message(a, numbered_chat(1, "one"), now);
    let first = room(&mut hub);
    hub.handle_message(a, numbered_chat(2, "two"), now);
    // No join or leave in between: the same list, not a copy.
    assert!(std::sync::Arc::ptr_eq(&first, &room(&mut hub)));
    hub.handle_disconnect(b, LeaveReason::QUIT);
    assert_eq!(&hub.members()[..], &[a]);
    hub.check_invariants().unwrap();
}

#[test]
fn relayed_file_data_is_work_for_the_server_to_pace() {
    let mut net = three();
    let id = net
        .s(0)
        .offer(FileName::new("f.bin").unwrap(), 14, Recipient::Everyone)
        .unwrap();
    net.pump();
    assert!(!net.hub.has_pending_work());
    net.s(0).push_chunk(id, b"1234567".to_vec()).unwrap();
    let alice = net.clients[0].0;
    while let Some(m) = net.s(0).poll_transmit() {
        net.hub.handle_message(alice, through_wire(&m), net.now);
    }
    // The chunk waits for the receivers: the server paces it before it
    // reads more from the pusher.
    assert!(net.hub.has_pending_work());
    net.pump();
    assert!(!net.hub.has_pending_work());
}

#[test]
fn a_message_committed_before_a_restart_whose_ack_was_lost_is_acked_with_its_id() {
    let store = crate::MemoryStore::new(1000);
    let mut net = stored(&store);
    // Bob's message is committed, but its ack never reaches him.
    net.s(1).send_chat(Recipient::Everyone, "lost ack").unwrap();
    let (bob, now) = (net.clients[1].0, net.now);
    while let Some(m) = net.s(1).poll_transmit() {
        net.hub.handle_message(bob, through_wire(&m), now);
    }
    net.hub.commit_history(now);
    net.deliver_hub_except(Some(1));
    // Enough later messages that the hub's memory of answers per session
    // (and the one rebuilt from the store at a restart) no longer holds it.
    for t in burst(300) {
        net.s(1).send_chat(Recipient::Everyone, &t).unwrap();
        net.pump();
    }
    let entry = store
        .entries()
        .into_iter()
        .find(|e| matches!(&e.event, crate::LogEvent::Chat { text, .. } if text == "lost ack"))
        .expect("committed");
    // The server crashes; a new hub on the same store remembers the
    // entry but not the answer.
    restart_on(&mut net, &store, 9);
    // Bob resumes and resends it: the duplicate's ack carries its id.
    let id = net.hub.handle_connect(now);
    net.clients[1].0 = id;
    net.clients[1].1.reconnect(now);
    let mut acks = Vec::new();
    for _ in 0..20 {
        while let Some(m) = net.s(1).poll_transmit() {
            net.hub.handle_message(id, through_wire(&m), now);
        }
        net.hub.commit_history(now);
        while let Some(t) = net.hub.poll_transmit() {
            if t.to.iter().any(|to| to == id) {
                let m: ServerMessage = through_wire(&t.message);
                if let ServerMessage::Ack { id, time, .. } = &m {
                    acks.push((*id, *time));
                }
                net.clients[1].1.handle_message(m, now);
            }
        }
    }
    assert_eq!(acks, [(entry.id, entry.time)]);
    assert_eq!(
        store
            .entries()
            .iter()
            .filter(|e| matches!(&e.event, crate::LogEvent::Chat { .. }))
            .count(),
        301,
        "taken once"
    );
}

/// A server with small limits of its own, and alice (default limits)
/// welcomed by it, with bob beside her.
fn strict_server() -> Net {
    let limits = Limits {
        max_push_size: 1000,
        max_transfers: 2,
        max_frame: 64 * 1024,
        chunk_size: 32 * 1024,
        ..Limits::default()
    };
    let mut net = Net::new(limits);
    net.connect("alice");
    net.connect("bob");
    net.take(0);
    net.take(1);
    net
}

#[test]
fn the_session_refuses_a_push_over_the_size_the_server_announced() {
    let mut net = strict_server();
    let name = FileName::new("big.bin").unwrap();
    assert_eq!(
        net.s(0).offer(name.clone(), 1001, Recipient::Everyone),
        Err(UsageError::FileTooLarge {
            size: 1001,
            max: 1000
        })
    );
    assert!(net.s(0).poll_transmit().is_none(), "nothing was sent");
    assert!(net.s(0).offer(name, 1000, Recipient::Everyone).is_ok());
}

#[test]
fn the_session_keeps_to_the_servers_transfers_at_once_not_counting_pushes_to_it() {
    let mut net = strict_server();
    // bob pushes to alice: hers to receive, which the server does not
    // count against her own transfers.
    let id = net
        .s(1)
        .offer(
            FileName::new("p.bin").unwrap(),
            10,
            Recipient::User(user("alice")),
        )
        .unwrap();
    net.pump();
    assert!(net
        .take(1)
        .iter()
        .any(|e| matches!(e, ClientEvent::PushAccepted { id: i, .. } if *i == id)));
    let file = |n: &str| FileName::new(n).unwrap();
    net.s(0).download(file("a.txt"), None).unwrap();
    assert!(net.s(0).has_transfer_room(), "one of two in use");
    net.s(0).download(file("b.txt"), None).unwrap();
    assert!(!net.s(0).has_transfer_room(), "both in use");
    assert_eq!(
        net.s(0).download(file("c.txt"), None),
        Err(UsageError::TooManyTransfers { max: 2 })
    );
    assert_eq!(
        net.s(0).offer(file("d.txt"), 1, Recipient::Everyone),
        Err(UsageError::TooManyTransfers { max: 2 })
    );
}

#[test]
fn pushes_offered_to_a_user_do_not_keep_its_own_downloads_out() {
    let mut net = Net::new(Limits::default());
    net.connect("alice");
    net.connect("hog");
    net.connect("bob");
    for i in 0..3 {
        net.take(i);
    }
    net.s(0).set_auto_accept(None);
    let max = crate::limits::DEFAULT_MAX_TRANSFERS;
    // hog offers alice as many pushes as she takes at once, she accepts
    // them all, and hog never sends a byte.
    for n in 0..max {
        net.s(1)
            .offer(
                FileName::new(format!("hog{n}.bin")).unwrap(),
                1000,
                Recipient::User(user("alice")),
            )
            .unwrap();
        net.pump();
        let offer = offered(&net.take(0)).expect("offered");
        net.s(0).accept(offer).unwrap();
        net.pump();
    }
    // Her own downloads are counted apart: she may still start hers.
    for n in 0..max {
        let name = FileName::new(format!("f{n}.txt")).unwrap();
        assert!(net.s(0).download(name, None).is_ok(), "download {n}");
    }
    // Pushes to her keep a bound of their own: a further one is refused,
    // its pusher told she has too many coming in (not that she declined).
    let id = net
        .s(2)
        .offer(
            FileName::new("ok.txt").unwrap(),
            5,
            Recipient::User(user("alice")),
        )
        .unwrap();
    net.pump();
    let bob = net.take(2);
    assert!(
        bob.iter().any(|e| matches!(e,
            ClientEvent::PushFailed { id: i, code, .. }
                if *i == id && *code == CancelCode::TOO_MANY)),
        "{bob:?}"
    );
}

#[test]
fn a_push_chunk_must_fit_the_servers_frame() {
    let mut net = strict_server();
    let id = net
        .s(0)
        .offer(
            FileName::new("p.bin").unwrap(),
            1000,
            Recipient::User(user("bob")),
        )
        .unwrap();
    net.pump();
    net.take(0);
    // The client's own chunk size (256 KiB) is more than the server's
    // frame (64 KiB) takes.
    let max = 64 * 1024 - crate::limits::CHUNK_FRAME_OVERHEAD;
    assert_eq!(net.s(0).chunk_limit(), max);
    assert_eq!(
        net.s(0).push_chunk(id, vec![0; max + 1]),
        Err(UsageError::ChunkTooLarge { len: max + 1, max })
    );
    assert!(net.s(0).poll_transmit().is_none(), "nothing was sent");
    net.s(0).push_chunk(id, vec![7; 1000]).unwrap();
    net.s(0).push_end(id).unwrap();
    net.pump();
    assert!(net
        .take(0)
        .iter()
        .any(|e| matches!(e, ClientEvent::PushDone { .. })));
}

#[test]
fn an_operators_target_and_reason_are_checked_before_sending() {
    let mut net = strict_server();
    let long = "é".repeat(128);
    assert_eq!(
        net.s(0).operate(OpAction::Ban, &long, ""),
        Err(UsageError::TargetTooLong {
            len: 256,
            max: MAX_TARGET_BYTES
        })
    );
    let reason = "x".repeat(Limits::default().max_text + 1);
    assert!(matches!(
        net.s(0).operate(OpAction::Kick, "bob", &reason),
        Err(UsageError::TextTooLong { .. })
    ));
    assert!(net.s(0).poll_transmit().is_none(), "nothing was sent");
}

#[test]
fn a_target_built_by_hand_past_255_bytes_is_cut_at_a_character() {
    let m = ClientMessage::Operate {
        action: OpAction::Ban,
        target: "é".repeat(200),
        reason: "why".into(),
    };
    let back: ClientMessage = through_wire(&m);
    assert_eq!(
        back,
        ClientMessage::Operate {
            action: OpAction::Ban,
            target: "é".repeat(127),
            reason: "why".into(),
        }
    );
}

#[test]
fn a_name_check_of_the_server_refuses_a_hello_with_its_reason() {
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_name_check(|u| {
        if u.as_str().starts_with('x') {
            Err("no x first".into())
        } else {
            Ok(())
        }
    });
    let now = Instant::now();
    let c = hub.handle_connect(now);
    hello(&mut hub, c, "xavier", now);
    match hub.poll_transmit().unwrap().message {
        ServerMessage::Refused { code, reason, .. } => {
            assert_eq!(code, RefuseCode::INVALID_NAME);
            assert_eq!(reason, "invalid username: no x first");
        }
        m => panic!("{m:?}"),
    }
    assert!(!hub.is_connected(c));
    let d = hub.handle_connect(now);
    hello(&mut hub, d, "yves", now);
    assert!(hub.is_joined(d));
}

/// A `Welcome` for `name` with a small rate limit (bursts of 5, 10 a
/// second), a resume token, and `resumed` when it takes a session back.
fn paced_welcome(name: &str, resumed: bool) -> ServerMessage {
    let limits = Limits {
        rate_burst: 5,
        rate_per_sec: 10,
        ..Limits::default()
    };
    ServerMessage::Welcome {
        version: PROTOCOL_VERSION,
        username: user(name),
        text: "hi".into(),
        limits: Hub::new(limits, "hi").server_limits(),
        token: ResumeToken([7; 16]),
        epoch: 1,
        grace_secs: 60,
        last_id: MessageId(0),
        resumed: resumed.then_some(Resumed { dropped: 0 }),
    }
}

fn sent_chats(s: &mut ClientSession) -> Vec<String> {
    std::iter::from_fn(|| s.poll_transmit())
        .filter_map(|m| match m {
            ClientMessage::Chat { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

#[test]
fn messages_sent_again_after_a_resume_go_at_the_rate_in_order() {
    let mut now = Instant::now();
    let mut s = ClientSession::new(user("bot"), Limits::default(), now);
    s.handle_message(paced_welcome("bot", false), now);
    // Twenty sent, at the pace, none acknowledged: the connection was dead.
    for i in 0..20 {
        while let Some(at) = s.next_send_at(now, 3) {
            now = at;
        }
        s.send_chat(Recipient::Everyone, &format!("m{i}")).unwrap();
    }
    assert_eq!(sent_chats(&mut s).len(), 20);
    now += Duration::from_secs(1);
    let resumed_at = now;
    s.reconnect(now);
    s.handle_message(paced_welcome("bot", true), now);
    // A full bucket's worth goes at once, not all twenty.
    let first = sent_chats(&mut s);
    assert_eq!(first, (0..5).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // A new message waits behind the rest.
    s.send_chat(Recipient::Everyone, "new").unwrap();
    assert!(sent_chats(&mut s).is_empty());
    let mut all = first;
    for _ in 0..100 {
        let Some(at) = s.poll_timeout() else { break };
        now = now.max(at);
        s.handle_timeout(now);
        all.extend(sent_chats(&mut s));
        if all.len() == 21 {
            break;
        }
    }
    let want: Vec<String> = (0..20)
        .map(|i| format!("m{i}"))
        .chain(["new".to_string()])
        .collect();
    assert_eq!(all, want);
    // The 16 past the burst (15 resent and the new one) at 9 a second
    // (90 % of 10): about 1.7 s.
    let took = now - resumed_at;
    assert!(took >= Duration::from_millis(1_600), "{took:?}: not paced");
}

#[test]
fn a_quit_session_leaves_nothing_to_resume() {
    let now = Instant::now();
    let mut s = ClientSession::new(user("bot"), Limits::default(), now);
    s.handle_message(paced_welcome("bot", false), now);
    assert!(s.saved().is_some());
    s.quit("bye");
    assert_eq!(s.saved(), None);
}

#[test]
fn a_restarted_cluster_server_tells_a_resumer_only_who_came_and_went_meanwhile() {
    let store = crate::MemoryStore::new(100);
    let mut net = stored(&store);
    net.hub.enable_cluster();
    let now = net.now;
    for u in ["dave", "erin"] {
        assert!(net.hub.remote_join(7, user(u), now));
    }
    net.pump();
    net.take(0);
    net.hub.shutdown("restart");
    net.pump();
    restart_on(&mut net, &store, 9);
    net.hub.enable_cluster();
    // The cluster now: dave still there, erin gone, frank new.
    let now = net.now;
    assert!(net.hub.remote_join(7, user("dave"), now));
    assert!(net.hub.remote_join(8, user("frank"), now));
    net.hub.remote_synced(now);
    net.reconnect(0);
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { dropped: 0, .. })),
        "{alice:?}"
    );
    let (joined, left) = presence_names(&alice);
    assert_eq!(joined, ["frank"]);
    assert_eq!(left, ["erin"]);
    let mut listed: Vec<String> = net
        .hub
        .remote_users()
        .into_iter()
        .map(|(u, _)| u.as_str().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, ["dave", "frank"]);
}

/// A store that stops keeping anything once `frozen` is set, as a server
/// killed before its last commits.
#[derive(Debug, Clone)]
struct Freezable {
    store: crate::MemoryStore,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Freezable {
    fn frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl crate::HistoryStore for Freezable {
    fn load(&mut self) -> Result<crate::history::Loaded, crate::StoreError> {
        self.store.load()
    }
    fn set_epoch(&mut self, epoch: u64) -> Result<(), crate::StoreError> {
        self.store.set_epoch(epoch)
    }
    fn append(&mut self, entry: &crate::LogEntry) -> Result<(), crate::StoreError> {
        if self.frozen() {
            return Ok(());
        }
        self.store.append(entry)
    }
    fn save_session(&mut self, session: &crate::SessionRecord) -> Result<(), crate::StoreError> {
        if self.frozen() {
            return Ok(());
        }
        self.store.save_session(session)
    }
    fn drop_session(&mut self, user: &Username) -> Result<(), crate::StoreError> {
        if self.frozen() {
            return Ok(());
        }
        self.store.drop_session(user)
    }
}

/// The cluster server restarts on `store`, which its run before, server
/// 3, wrote.
fn restart_as_the_run_after(net: &mut Net, store: &crate::MemoryStore) {
    restart_on(net, store, 9);
    net.hub.enable_cluster();
    net.hub.set_former_run(3);
}

/// The cluster's stream position `n` (as a log id).
fn position(n: u64) -> MessageId {
    RemoteOrigin::position_id(1_000 + n, 0)
}

/// Where an entry of server `server` (its id there `id`, its sender's id
/// `client_id`) read from the stream at `at` comes from.
fn from_stream(server: u64, id: u64, at: MessageId, client_id: u64) -> RemoteOrigin {
    RemoteOrigin {
        server,
        id: MessageId(id),
        position: at,
        time: Timestamp(0),
        client_id,
    }
}

/// [`stream_chat`] now of entry `id` of server `server`, read from the
/// stream at [`position`] `at`, its sender's id `client_id`.
fn stream_said(
    net: &mut Net,
    (server, id, at, client_id): (u64, u64, u64, u64),
    from: &str,
    text: &str,
) {
    let now = net.now;
    stream_chat(
        &mut net.hub,
        from_stream(server, id, position(at), client_id),
        from,
        text,
        now,
    );
}

/// A chat of `from`, from `origin`, to everyone, passed on as a server
/// does: only if its server can speak for `from`.
fn stream_chat(hub: &mut Hub, origin: RemoteOrigin, from: &str, text: &str, now: Instant) {
    if !hub.remote_sender_is_of(origin.server, &user(from))
        && !hub.remote_contested_by(origin.server, &user(from))
    {
        return;
    }
    hub.set_origin(Some(origin));
    hub.remote_chat(user(from), None, ChatKind::Text, text.into(), now);
    hub.set_origin(None);
}

/// Server 3 (this one's run before) with alice and bob; carol is on 7.
/// The store stops keeping at a kill: carol's second message and alice's
/// last ("mine, not kept") reached the users, not the file; alice's
/// answer was lost. Returns the net, the store, and alice's message id.
fn killed_with_alice_unanswered() -> (Net, Freezable, MessageId) {
    let fz = Freezable {
        store: crate::MemoryStore::new(100),
        frozen: std::sync::Arc::default(),
    };
    let mut net = stored(&fz);
    net.hub.enable_cluster();
    let now = net.now;
    assert!(net.hub.remote_join(7, user("carol"), now));
    stream_chat(
        &mut net.hub,
        from_stream(7, 40, position(1), 0),
        "carol",
        "kept",
        now,
    );
    net.pump();
    // The kill: what follows reached the users, not the file.
    fz.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    stream_chat(
        &mut net.hub,
        from_stream(7, 41, position(2), 0),
        "carol",
        "seen, not kept",
        now,
    );
    net.pump();
    // Alice's next message is published; its answer is lost with the server.
    net.clients[0]
        .1
        .send_chat(Recipient::Everyone, "mine, not kept")
        .unwrap();
    while let Some(m) = net.clients[0].1.poll_transmit() {
        let id = net.clients[0].0;
        net.hub.handle_message(id, through_wire(&m), now);
    }
    let mine = net.hub.last_id();
    // Bob gets it; alice's answer is lost.
    net.deliver_hub_except(Some(0));
    while let Some(e) = net.clients[1].1.poll_event() {
        net.events[1].push(e);
    }
    assert!(texts_from(&net.take(1), "alice") == ["mine, not kept"]);
    let alice_saw = net.take(0);
    assert!(
        alice_saw
            .iter()
            .any(|e| matches!(e, ClientEvent::Chat(c) if c.text == "seen, not kept")),
        "{alice_saw:?}"
    );
    (net, fz, mine)
}

#[test]
fn a_session_kept_from_a_killed_run_resumes_with_nothing_twice() {
    let (mut net, fz, mine) = killed_with_alice_unanswered();
    restart_as_the_run_after(&mut net, &fz.store);
    // A crashed run's ids are not given again: this one's go on past them.
    net.hub.advance_ids(MessageId(position(3).0 + 5_000));
    let now = net.now;
    assert!(net.hub.remote_join(7, user("carol"), now));
    // Read again from the stream: what the file did not keep.
    stream_chat(
        &mut net.hub,
        from_stream(7, 41, position(2), 0),
        "carol",
        "seen, not kept",
        now,
    );
    read_back_alices_lost_message(&mut net, mine);
    // Both clients come back; alice sends her unanswered message again.
    net.reconnect(1);
    net.reconnect(0);
    let alice = net.take(0);
    let bob = net.take(1);
    assert_eq!(
        chat_texts(&alice),
        Vec::<String>::new(),
        "alice saw it all: {alice:?}"
    );
    // Had alice's copy been taken as new, bob would have got it again.
    assert_eq!(
        chat_texts(&bob),
        Vec::<String>::new(),
        "bob saw it all: {bob:?}"
    );
    assert!(
        !alice
            .iter()
            .any(|e| matches!(e, ClientEvent::NotSent { .. })),
        "{alice:?}"
    );
    // The killed run's own message its file lost is in the room's
    // history again, once, as alice's; no other server speaks for her.
    assert!(!net.hub.remote_sender_is_of(7, &user("alice")));
    assert_eq!(copies_in_history(&mut net, "mine, not kept"), 1);
}

/// The stream gives back alice's message the killed run (server 3)
/// published under `mine` and did not keep; the reader is then caught up.
fn read_back_alices_lost_message(net: &mut Net, mine: MessageId) {
    let now = net.now;
    stream_chat(
        &mut net.hub,
        from_stream(3, mine.0, position(3), 1),
        "alice",
        "mine, not kept",
        now,
    );
    net.hub.remote_synced(now);
}

/// How many times a user who joins now finds `text` in the history.
fn copies_in_history(net: &mut Net, text: &str) -> usize {
    let newcomer = net.connect("dave");
    let history = net.take(newcomer);
    history
        .iter()
        .filter(|e| matches!(e, ClientEvent::Chat(c) if c.text == text))
        .count()
}

#[test]
fn a_message_resent_before_the_stream_gives_back_its_lost_copy_is_logged_once() {
    let (mut net, fz, mine) = killed_with_alice_unanswered();
    restart_as_the_run_after(&mut net, &fz.store);
    net.hub.advance_ids(MessageId(position(3).0 + 5_000));
    // Alice resumes before the reader came to her message: she sends it
    // again and it is taken (nothing here says it was sent before).
    net.reconnect(0);
    net.take(0);
    // Then the stream gives back the copy the file lost: not again.
    read_back_alices_lost_message(&mut net, mine);
    net.pump();
    assert_eq!(chat_texts(&net.take(0)), Vec::<String>::new());
    assert_eq!(copies_in_history(&mut net, "mine, not kept"), 1);
}

#[test]
fn a_session_kept_from_the_run_before_gets_what_it_missed_in_order_and_what_was_dropped() {
    // The store keeps 3 entries: the restarted log holds bob's last 3.
    let store = crate::MemoryStore::new(3);
    let mut net = stored(&store);
    net.hub.enable_cluster();
    net.cut(0);
    for t in burst(5) {
        net.s(1).send_chat(Recipient::Everyone, &t).unwrap();
    }
    net.pump();
    restart_as_the_run_after(&mut net, &store);
    // Read from the stream since the restart: after what the store kept.
    let now = net.now;
    assert!(net.hub.remote_join(7, user("carol"), now));
    stream_chat(
        &mut net.hub,
        from_stream(7, 40, position(1), 0),
        "carol",
        "new",
        now,
    );
    net.reconnect(0);
    let events = net.take(0);
    // Alice saw the joins (1-2); bob's m0 and m1 (3-4) are gone.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { dropped: 2, .. })),
        "{events:?}"
    );
    assert_eq!(
        chat_texts(&events),
        ["m2", "m3", "m4", "new"],
        "in the order they came"
    );
}

/// Hands server 1's data toward server 2 to `b` (as the lists do);
/// returns what was not such data.
fn carry_data(b: &mut Hub, data: Vec<RemotePush>, now: Instant) -> Vec<RemotePush> {
    let mut others = Vec::new();
    for d in data {
        match d {
            RemotePush::Chunk {
                to: 2,
                relay,
                offset,
                data,
                crc,
            } => b.remote_chunk(
                1,
                relay,
                FileChunk {
                    id: TransferId(0),
                    offset,
                    data,
                    crc,
                },
                now,
            ),
            RemotePush::End { to: 2, relay, crc } => b.remote_end(1, relay, crc, now),
            other => others.push(other),
        }
    }
    others
}

/// A push to everyone accepted by q (on the pusher's server) and by dave
/// and erin (on another one); erin quits during the transfer. The pusher
/// is told that 2 got it whole: before, it was told 3 (the other server's
/// receivers were counted as they accepted it, at the pusher's end, before
/// that server had relayed it), while one who quits on the pusher's own
/// server is not counted.
#[test]
fn a_pusher_is_told_when_a_receiver_on_another_server_did_not_get_the_file_whole() {
    let now = Instant::now();
    let (mut a, p, mut b, dave) = two_servers(now);
    let q = joined(&mut a, "q", now);
    let erin = joined(&mut b, "erin", now);
    a.remote_join(2, user("erin"), now);
    b.remote_join(1, user("q"), now);
    for hub in [&mut a, &mut b] {
        hub.flush_presence();
        while hub.poll_transmit().is_some() {}
        while hub.poll_event().is_some() {}
    }
    offer_to(&mut a, p, Recipient::Everyone, 6, now);
    let (said, control, _) = drain_hub(&mut a, q);
    let Some(ServerMessage::FileStart(FileStart { id: at_a, .. })) = said.first() else {
        panic!("{said:?}");
    };
    a.handle_message(q, ClientMessage::Accept { id: *at_a }, now);
    deliver_control(&mut b, 1, control, now);
    let (said, _, _) = drain_hub(&mut b, dave);
    let Some(ServerMessage::FileStart(FileStart { id: at_b, .. })) = said.first() else {
        panic!("{said:?}");
    };
    for c in [dave, erin] {
        b.handle_message(c, ClientMessage::Accept { id: *at_b }, now);
    }
    let (_, control, _) = drain_hub(&mut b, dave);
    deliver_control(&mut a, 2, control, now);
    let (said, _, _) = drain_hub(&mut a, p);
    assert!(
        matches!(
            &said[..],
            [
                ServerMessage::PushAccepted { receivers: 3, .. },
                ServerMessage::PushCredit { .. }
            ]
        ),
        "{said:?}"
    );
    a.handle_message(
        p,
        ClientMessage::Chunk(FileChunk::new(TransferId(1), 0, b"abc".to_vec())),
        now,
    );
    let (_, _, data) = drain_hub(&mut a, p);
    let _ = carry_data(&mut b, data, now);
    // Erin quits with half of it; the rest and the end are sent meanwhile.
    b.handle_message(
        erin,
        ClientMessage::Quit {
            reason: String::new(),
        },
        now,
    );
    a.handle_message(
        p,
        ClientMessage::Chunk(FileChunk::new(TransferId(1), 3, b"def".to_vec())),
        now,
    );
    a.handle_message(
        p,
        ClientMessage::End(FileEnd {
            id: TransferId(1),
            crc: crc32fast::hash(b"abcdef"),
        }),
        now,
    );
    let (mut said, _, data) = drain_hub(&mut a, p);
    let _ = carry_data(&mut b, data, now);
    let (to_dave, control, _) = drain_hub(&mut b, dave);
    assert!(
        matches!(to_dave.last(), Some(ServerMessage::End(_))),
        "{to_dave:?}"
    );
    deliver_control(&mut a, 2, control, now);
    said.extend(drain_hub(&mut a, p).0);
    let done: Vec<u32> = said
        .iter()
        .filter_map(|m| match m {
            ServerMessage::PushDone { receivers, .. } => Some(*receivers),
            _ => None,
        })
        .collect();
    assert_eq!(done, [2], "the pusher's PushDone: {said:?}");
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
}

/// A push whose other server never says how many got it (one of an older
/// version): its pusher is still told, at the idle timeout, counting that
/// server's receivers as they accepted it.
#[test]
fn a_push_whose_other_server_never_says_how_many_got_it_ends_at_the_idle_timeout() {
    let now = Instant::now();
    let (mut a, p, _, _) = push_accepted_on_another_server(now);
    a.handle_message(
        p,
        ClientMessage::Chunk(FileChunk::new(TransferId(1), 0, b"abcdef".to_vec())),
        now,
    );
    a.handle_message(
        p,
        ClientMessage::End(FileEnd {
            id: TransferId(1),
            crc: crc32fast::hash(b"abcdef"),
        }),
        now,
    );
    let (said, _, _) = drain_hub(&mut a, p);
    assert!(said.is_empty(), "{said:?}");
    let idle = Limits::default().transfer_idle_timeout;
    a.handle_timeout(now + idle - Duration::from_secs(1));
    let is_done = |m: &ServerMessage| matches!(m, ServerMessage::PushDone { .. });
    assert!(!drain_hub(&mut a, p).0.iter().any(is_done));
    let next = a.poll_timeout().expect("a deadline");
    assert!(
        next <= now + idle + Duration::from_secs(1),
        "{:?}",
        next - now
    );
    a.handle_timeout(next);
    let (said, _, data) = drain_hub(&mut a, p);
    let said: Vec<_> = said.into_iter().filter(is_done).collect();
    assert!(
        matches!(&said[..], [ServerMessage::PushDone { receivers: 1, .. }]),
        "{said:?}"
    );
    assert!(
        matches!(&data[..], [RemotePush::Closed { to: 2, .. }]),
        "{data:?}"
    );
    a.check_invariants().unwrap();
}

/// A server may announce a rate with no burst at all (another
/// implementation, or a hostile one): the client still gets its messages
/// out, one per rate interval, instead of waiting for a message's worth
/// the bucket can never hold.
#[test]
fn a_welcome_with_no_burst_still_lets_paced_messages_through() {
    let mut now = Instant::now();
    let mut s = ClientSession::new(user("bot"), Limits::default(), now);
    let mut welcome = paced_welcome("bot", false);
    let ServerMessage::Welcome { limits, .. } = &mut welcome else {
        unreachable!()
    };
    limits.rate_burst = 0;
    limits.rate_burst_bytes = 0;
    s.handle_message(welcome, now);
    let start = now;
    for i in 0..5 {
        let mut waits = 0;
        while let Some(at) = s.next_send_at(now, 3) {
            assert!(at > now, "a wait that never moves on");
            now = at;
            waits += 1;
            assert!(waits < 10, "message {i} never ready");
        }
        s.send_chat(Recipient::Everyone, &format!("m{i}")).unwrap();
    }
    assert_eq!(sent_chats(&mut s).len(), 5);
    // Five at 9 a second (the pacer spends 90% of the announced 10).
    let took = now.duration_since(start);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

/// An empty chunk is a caller's mistake the session catches (the server
/// would end the whole push for it), and ending a push with bytes still
/// unsent says it is short, with the counts; neither sends anything, and
/// the push goes on to complete.
#[test]
fn an_empty_chunk_and_a_short_end_are_refused_before_the_wire() {
    let mut net = three();
    let id = net
        .s(0)
        .offer(FileName::new("f.bin").unwrap(), 5, Recipient::Everyone)
        .unwrap();
    net.pump();
    assert_eq!(
        net.s(0).push_chunk(id, Vec::new()),
        Err(UsageError::EmptyChunk)
    );
    net.s(0).push_chunk(id, b"abc".to_vec()).unwrap();
    let err = net.s(0).push_end(id).unwrap_err();
    assert_eq!(
        err,
        UsageError::PushShort {
            id,
            sent: 3,
            size: 5
        }
    );
    assert_eq!(
        err.to_string(),
        format!("push {id} is short: 3 of its 5 bytes sent")
    );
    net.pump();
    net.s(0).push_chunk(id, b"de".to_vec()).unwrap();
    net.s(0).push_end(id).unwrap();
    net.pump();
    for i in [1, 2] {
        assert_eq!(received(&net.take(i)), (b"abcde".to_vec(), true));
    }
}

/// A push ends once: a second `push_end`, or a chunk after the end, is
/// a push that is no longer running, and puts nothing on the wire (the
/// server would take a second `End` for a stray frame).
#[test]
fn a_push_ends_once() {
    let mut net = three();
    let id = net
        .s(0)
        .offer(FileName::new("f.bin").unwrap(), 5, Recipient::Everyone)
        .unwrap();
    net.pump();
    net.s(0).push_chunk(id, b"abcde".to_vec()).unwrap();
    net.s(0).push_end(id).unwrap();
    assert_eq!(
        net.s(0).push_end(id),
        Err(UsageError::UnknownTransfer { id })
    );
    assert_eq!(
        net.s(0).push_chunk(id, b"f".to_vec()),
        Err(UsageError::UnknownTransfer { id })
    );
    let mut ends = 0;
    let mut queued = Vec::new();
    while let Some(m) = net.s(0).poll_transmit() {
        ends += usize::from(matches!(m, ClientMessage::End(_)));
        queued.push(m);
    }
    assert_eq!(ends, 1, "{queued:?}");
    let alice = net.clients[0].0;
    for m in queued {
        net.hub.handle_message(alice, through_wire(&m), net.now);
    }
    net.pump();
    for i in [1, 2] {
        assert_eq!(received(&net.take(i)), (b"abcde".to_vec(), true));
    }
    assert!(net
        .take(0)
        .iter()
        .any(|e| matches!(e, ClientEvent::PushDone { id: done, .. } if *done == id)));
}

/// Under a name key that folds look-alikes, a name with a reserved word's
/// key is refused as that word would be: `аdmin` with a Cyrillic `а`
/// would otherwise pass for `admin`.
#[test]
fn a_look_alike_of_a_reserved_name_is_refused_under_the_name_key() {
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_name_key(|n| n.as_str().to_lowercase().replace('а', "a"));
    let now = Instant::now();
    let c = hub.handle_connect(now);
    hello(&mut hub, c, "аdmin", now);
    match hub.poll_transmit().unwrap().message {
        ServerMessage::Refused { code, reason, .. } => {
            assert_eq!(code, RefuseCode::INVALID_NAME);
            assert_eq!(
                reason,
                "invalid username: 'аdmin' looks like the reserved name 'admin'"
            );
        }
        m => panic!("{m:?}"),
    }
    assert!(!hub.is_connected(c));
    // Folded the same way, other names are not reserved.
    let d = hub.handle_connect(now);
    hello(&mut hub, d, "аlice", now);
    assert!(hub.is_joined(d));
}

/// Whether each of `events` says the cluster can be reached (true) or
/// not (false), in order.
fn cluster_news(events: &[ClientEvent]) -> Vec<bool> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ClusterReachable { reachable, text } => {
                assert!(!text.is_empty());
                Some(*reachable)
            }
            _ => None,
        })
        .collect()
}

/// An outage of the cluster is told to every user once, and to each who
/// joins or resumes while it lasts, after the `Welcome` and the replay;
/// its end only to those told, once.
#[test]
fn a_cluster_outage_is_told_to_everyone_and_to_whoever_comes_while_it_lasts() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    net.hub.enable_cluster();
    // Its end, never told: nothing to say.
    net.hub.tell_cluster(true);
    net.pump();
    assert_eq!(cluster_news(&net.take(0)), Vec::<bool>::new());
    net.cut(1);
    net.hub.tell_cluster(false);
    net.hub.tell_cluster(false);
    net.pump();
    assert_eq!(cluster_news(&net.take(0)), [false], "told once");
    // bob resumes, carol joins: each told after its welcome (and replay).
    net.reconnect(1);
    let bob = net.take(1);
    assert!(
        matches!(
            bob.last(),
            Some(ClientEvent::ClusterReachable {
                reachable: false,
                ..
            })
        ),
        "{bob:?}"
    );
    assert!(bob.iter().any(|e| matches!(e, ClientEvent::Resumed { .. })));
    let carol = net.connect("carol");
    let carol_events = net.take(carol);
    let welcome = carol_events
        .iter()
        .position(|e| matches!(e, ClientEvent::Welcome { .. }));
    let told = carol_events
        .iter()
        .position(|e| matches!(e, ClientEvent::ClusterReachable { .. }));
    assert!(welcome.is_some() && told > welcome, "{carol_events:?}");
    assert_eq!(cluster_news(&carol_events), [false]);
    net.hub.tell_cluster(true);
    net.hub.tell_cluster(true);
    net.pump();
    for i in 0..3 {
        assert_eq!(cluster_news(&net.take(i)), [true], "user {i}");
    }
    // Over: a newcomer is told nothing.
    let dave = net.connect("dave");
    assert_eq!(cluster_news(&net.take(dave)), Vec::<bool>::new());
}

/// A resumed client with nothing to send again sends a frame at once, so
/// the token it presented is spent now, not at the next keepalive ping
/// (until then another `Hello` with it would take the session over).
#[test]
fn a_resumed_client_spends_the_token_it_presented_at_once() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    let presented = net.s(0).saved().expect("a session to save");
    net.cut(0);
    net.reconnect(0);
    assert!(net
        .take(0)
        .iter()
        .any(|e| matches!(e, ClientEvent::Resumed { .. })));
    let thief = net.hub.handle_connect(net.now);
    let now = net.now;
    net.hub.handle_message(
        thief,
        resume_hello("alice", presented.token, presented.epoch),
        now,
    );
    assert_eq!(answer(&mut net.hub, thief), "username already taken");
    assert!(
        net.hub.is_joined(net.clients[0].0),
        "alice keeps her session"
    );
}

/// A run that quit while the server was away asks for its session back
/// only to end it: given back, the session sends the `Quit` with the
/// parting text at once and is closed, handing out nothing of the replay;
/// the others see the user leave with that text.
#[test]
fn a_session_resumed_to_quit_quits_at_once_and_shows_nothing() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    let saved = net.s(0).saved().expect("the welcome offered a resume");
    net.cut(0);
    net.s(1).send_chat(Recipient::Everyone, "missed").unwrap();
    net.pump();
    net.take(1);
    let id = net.hub.handle_connect(net.now);
    let now = net.now;
    let mut s = ClientSession::resuming(user("alice"), Limits::default(), now, saved);
    s.quit_on_resume("bye all");
    net.clients[0] = (id, s);
    net.pump();
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .all(|e| matches!(e, ClientEvent::Welcome { .. })),
        "only the welcome: {alice:?}"
    );
    assert!(net.s(0).is_closed());
    assert_eq!(net.s(0).saved(), None);
    let left: Vec<_> = unstamped(net.take(1))
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Left(_)))
        .collect();
    assert_eq!(
        left,
        vec![ClientEvent::Left(crate::Departure {
            id: MessageId(0),
            time: Timestamp(0),
            user: user("alice"),
            reason: LeaveReason::QUIT,
            text: "bye all".into(),
        })]
    );
}

/// Not given back (here: its grace is over): the session is a fresh one
/// already, and goes on without saying it was not resumed.
#[test]
fn a_session_to_quit_that_is_not_given_back_goes_on_fresh_in_silence() {
    let now = Instant::now();
    let saved = SavedSession {
        token: ResumeToken([3; 16]),
        epoch: 1,
        last_seen: MessageId(0),
        next_client_id: 1,
    };
    let mut s = ClientSession::resuming(user("bot"), Limits::default(), now, saved);
    s.quit_on_resume("bye");
    s.handle_message(paced_welcome("bot", false), now);
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, ClientEvent::Welcome { .. })),
        "{events:?}"
    );
    assert!(s.is_joined());
    assert!(
        !std::iter::from_fn(|| s.poll_transmit()).any(|m| matches!(m, ClientMessage::Quit { .. }))
    );
    assert!(s.saved().is_some(), "a session of its own to keep");
}

/// A saved session is the program's to keep, in a file it may find
/// damaged: one whose next client id is at the end of the id space still
/// numbers its messages, each with an id of its own, instead of
/// overflowing (a panic, or ids starting over at 0, "none", which a
/// server would take for copies of messages it had).
#[test]
fn a_saved_session_at_the_end_of_the_client_ids_still_numbers_its_messages() {
    let now = Instant::now();
    let saved = SavedSession {
        token: ResumeToken([3; 16]),
        epoch: 1,
        last_seen: MessageId(0),
        next_client_id: u64::MAX,
    };
    let mut s = ClientSession::resuming(user("bot"), Limits::default(), now, saved);
    s.handle_message(paced_welcome("bot", false), now);
    while s.poll_event().is_some() {}
    let ids: Vec<u64> = (0..3)
        .map(|i| s.send_chat(Recipient::Everyone, &format!("m{i}")).unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids[0] > 0);
    let saved = s.saved().expect("a session to keep");
    assert!(saved.next_client_id > ids[2], "{saved:?}");
}

/// `Duration::MAX` as a keepalive time is how a program says "never":
/// the session's timer is then far away, not an overflow (a panic in
/// `poll_timeout`, inside `blocking::Client::next_event`).
#[test]
fn a_keepalive_time_of_duration_max_means_never() {
    let t0 = Instant::now();
    let year = Duration::from_secs(365 * 24 * 3600);
    // No ping ever.
    let limits = Limits {
        keepalive_interval: Duration::MAX,
        keepalive_timeout: Duration::MAX,
        ..Limits::default()
    };
    let mut s = ClientSession::new(user("ann"), limits, t0);
    s.handle_message(paced_welcome("ann", false), t0);
    while s.poll_transmit().is_some() {}
    assert!(s.poll_timeout().expect("open") > t0 + year);
    s.handle_timeout(t0 + year);
    assert!(s.poll_transmit().is_none(), "no ping");
    // A ping after a second, and no answer ever too late.
    let limits = Limits {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::MAX,
        ..Limits::default()
    };
    let mut s = ClientSession::new(user("ann"), limits, t0);
    s.handle_message(paced_welcome("ann", false), t0);
    while s.poll_transmit().is_some() {}
    let t1 = t0 + Duration::from_secs(1);
    s.handle_timeout(t1);
    assert!(matches!(s.poll_transmit(), Some(ClientMessage::Ping(_))));
    assert!(s.poll_timeout().expect("open") > t1 + year);
    s.handle_timeout(t1 + year);
    assert!(!s.is_closed());
    assert!(std::iter::from_fn(|| s.poll_event()).all(|e| e != ClientEvent::TimedOut));
}

/// A server that pings back to back gets ten answers a second, not one
/// per ping: the newest ping of each tenth of a second is answered at its
/// end (the one a server awaits), the others not at all.
#[test]
fn pings_back_to_back_get_ten_answers_a_second() {
    let t0 = Instant::now();
    let mut s = ClientSession::new(user("ann"), Limits::default(), t0);
    s.handle_message(paced_welcome("ann", false), t0);
    while s.poll_transmit().is_some() {}
    let pongs = |s: &mut ClientSession| -> Vec<u64> {
        std::iter::from_fn(|| s.poll_transmit())
            .filter_map(|m| match m {
                ClientMessage::Pong(v) => Some(v),
                _ => None,
            })
            .collect()
    };
    let mut now = t0;
    let mut answered = Vec::new();
    // 1,000 pings a millisecond apart: one second.
    for n in 1..=1000u64 {
        now += Duration::from_millis(1);
        s.handle_message(ServerMessage::Ping(n), now);
        if s.poll_timeout().is_some_and(|at| at <= now) {
            s.handle_timeout(now);
        }
        answered.extend(pongs(&mut s));
    }
    assert!((9..=11).contains(&answered.len()), "{answered:?}");
    assert_eq!(answered[0], 1, "the first at once");
    // The last ping is answered when its gap ends, with a timer asked for.
    let due = s.poll_timeout().expect("a timer");
    assert!(due <= now + crate::session::client::PONG_GAP, "{due:?}");
    s.handle_timeout(due);
    assert_eq!(pongs(&mut s), [1000]);
    // A ping after a quiet while is answered at once.
    now = due + Duration::from_secs(20);
    s.handle_message(ServerMessage::Ping(1001), now);
    assert_eq!(pongs(&mut s), [1001]);
}

/// A push from `ann` of `size` bytes to `ben` and `cat`, both accepted:
/// the hub, its clients (ann, ben, cat), the push's id for ann and for
/// the receivers, and what ann was told.
fn push_to_two_accepted(size: u64, now: Instant) -> (Hub, [ClientId; 3], TransferId, TransferId) {
    let mut hub = Hub::new(Limits::default(), "hi");
    let ids = ["ann", "ben", "cat"].map(|n| joined(&mut hub, n, now));
    while hub.poll_transmit().is_some() {}
    let push = TransferId(3);
    hub.handle_message(
        ids[0],
        ClientMessage::Offer {
            id: push,
            name: FileName::new("f.bin").unwrap(),
            size,
            to: Recipient::Everyone,
        },
        now,
    );
    let relay = std::iter::from_fn(|| hub.poll_transmit())
        .find_map(|t| match t.message {
            ServerMessage::FileStart(s) => Some(s.id),
            _ => None,
        })
        .expect("offered");
    for c in &ids[1..] {
        hub.handle_message(*c, ClientMessage::Accept { id: relay }, now);
    }
    (hub, ids, push, relay)
}

/// The credits `to` was given, in order, with anything else it was told.
fn credits_to(hub: &mut Hub, to: ClientId) -> (Vec<u64>, Vec<ServerMessage>) {
    let (mut credits, mut other) = (Vec::new(), Vec::new());
    while let Some(t) = hub.poll_transmit() {
        if !t.to.contains(to) {
            continue;
        }
        match t.message {
            ServerMessage::PushCredit { offset, .. } => credits.push(offset),
            m => other.push(m),
        }
    }
    (credits, other)
}

/// The pusher is told how far it may send: one `PUSH_CREDIT` with its
/// `PushAccepted`, then more as the slowest receiver acknowledges (a
/// faster one moves nothing), and as a slow receiver drops out.
#[test]
fn a_pusher_gets_credit_as_its_slowest_receiver_acknowledges() {
    const MIB: u64 = 1 << 20;
    assert_eq!(crate::PUSH_CREDIT, MIB);
    let now = Instant::now();
    let (mut hub, [ann, ben, cat], push, relay) = push_to_two_accepted(8 * MIB, now);
    let (credits, told) = credits_to(&mut hub, ann);
    assert!(
        matches!(
            &told[..],
            [ServerMessage::PushAccepted { receivers: 2, .. }]
        ),
        "{told:?}"
    );
    assert_eq!(credits, [MIB], "the first credit comes with the acceptance");
    assert_eq!(hub.push_credit(relay), MIB);
    for k in 0..4 {
        let chunk = FileChunk::new(push, k * (MIB / 4), vec![k as u8; (MIB / 4) as usize]);
        hub.handle_message(ann, ClientMessage::Chunk(chunk), now);
    }
    let ack = |hub: &mut Hub, c: ClientId, offset: u64| {
        hub.handle_message(c, ClientMessage::Ack { id: relay, offset }, now);
        credits_to(hub, ann).0
    };
    assert!(ack(&mut hub, ben, MIB).is_empty(), "cat holds it back");
    assert_eq!(ack(&mut hub, cat, MIB / 2), [MIB + MIB / 2]);
    assert_eq!(ack(&mut hub, cat, MIB), [2 * MIB]);
    // Stale or repeated acknowledgements move nothing.
    assert!(ack(&mut hub, cat, MIB / 2).is_empty());
    assert!(ack(&mut hub, ben, MIB).is_empty());
    // cat goes: ben alone paces the push.
    for k in 4..8 {
        let chunk = FileChunk::new(push, k * (MIB / 4), vec![k as u8; (MIB / 4) as usize]);
        hub.handle_message(ann, ClientMessage::Chunk(chunk), now);
    }
    assert!(
        ack(&mut hub, ben, 2 * MIB).is_empty(),
        "cat still holds it back"
    );
    hub.cancel_delivery(cat, relay, CancelCode::TOO_SLOW, "receiver too slow");
    assert_eq!(credits_to(&mut hub, ann).0, [3 * MIB]);
    assert_eq!(hub.push_credit(relay), 3 * MIB);
}

/// A chunk that would end past the pusher's credit cancels that push alone
/// (`BAD_CHUNK`, the reason naming both ends), relays nothing, and the
/// pusher's connection goes on.
#[test]
fn a_chunk_past_the_credit_cancels_the_push_alone() {
    const MIB: u64 = 1 << 20;
    let now = Instant::now();
    let (mut hub, [ann, ben, _], push, relay) = push_to_two_accepted(4 * MIB, now);
    let _ = credits_to(&mut hub, ann);
    // Up to the credit exactly is fine.
    let first = FileChunk::new(push, 0, vec![1; (MIB - 10) as usize]);
    hub.handle_message(ann, ClientMessage::Chunk(first), now);
    let to_ben: Vec<_> = std::iter::from_fn(|| hub.poll_transmit())
        .filter(|t| t.to.contains(ben))
        .map(|t| t.message)
        .collect();
    assert!(
        matches!(&to_ben[..], [ServerMessage::Chunk(_)]),
        "{to_ben:?}"
    );
    let past = FileChunk::new(push, MIB - 10, vec![2; 20]);
    hub.handle_message(ann, ClientMessage::Chunk(past), now);
    let sent: Vec<_> = std::iter::from_fn(|| hub.poll_transmit()).collect();
    assert!(
        !sent
            .iter()
            .any(|t| matches!(t.message, ServerMessage::Chunk(_))),
        "nothing past the credit is relayed"
    );
    let to_ann: Vec<_> = sent.iter().filter(|t| t.to.contains(ann)).collect();
    assert!(
        matches!(
            &to_ann[..],
            [t] if matches!(&t.message, ServerMessage::Cancel(FileCancel { id, code: CancelCode::BAD_CHUNK, reason })
                if *id == push && reason.contains(&(MIB + 10).to_string()) && reason.contains(&MIB.to_string()))
        ),
        "{to_ann:?}"
    );
    assert!(sent.iter().any(|t| t.to.contains(ben)
        && matches!(&t.message, ServerMessage::Cancel(FileCancel { id, code: CancelCode::BAD_CHUNK, .. }) if *id == relay)));
    assert!(hub.is_joined(ann), "only the push ended");
}

/// A receiver with its whole window unacknowledged (the pusher can send
/// nothing more) is dropped from the push after `PUSH_RECEIVER_WAIT`, by
/// the hub's clock: the server never waits on the pusher's socket for it.
#[test]
fn a_receiver_that_holds_a_push_too_long_is_dropped_by_the_clock() {
    const MIB: u64 = 1 << 20;
    // Ahead of the hub's own clock, which starts when it is made.
    let now = Instant::now() + Duration::from_secs(1);
    let (mut hub, [ann, ben, cat], push, relay) = push_to_two_accepted(4 * MIB, now);
    let _ = credits_to(&mut hub, ann);
    hub.handle_message(
        ann,
        ClientMessage::Chunk(FileChunk::new(push, 0, vec![1; MIB as usize])),
        now,
    );
    // ben keeps up, cat stores nothing.
    hub.handle_message(
        ben,
        ClientMessage::Ack {
            id: relay,
            offset: MIB,
        },
        now,
    );
    while hub.poll_transmit().is_some() {}
    let due = hub.poll_timeout().expect("a deadline");
    assert!(due <= now + crate::PUSH_RECEIVER_WAIT, "{:?}", due - now);
    hub.handle_timeout(now + crate::PUSH_RECEIVER_WAIT - Duration::from_millis(1));
    assert!(std::iter::from_fn(|| hub.poll_transmit()).next().is_none());
    hub.handle_timeout(now + crate::PUSH_RECEIVER_WAIT);
    let sent: Vec<_> = std::iter::from_fn(|| hub.poll_transmit()).collect();
    assert!(sent.iter().any(|t| t.to.contains(cat)
        && matches!(&t.message, ServerMessage::Cancel(FileCancel { id, code: CancelCode::TOO_SLOW, .. }) if *id == relay)));
    assert!(
        sent.iter().any(|t| t.to.contains(ann)
            && matches!(t.message, ServerMessage::PushCredit { offset, .. } if offset == 2 * MIB)),
        "ben alone paces it now: {sent:?}"
    );
    assert!(std::iter::from_fn(|| hub.poll_event())
        .any(|e| matches!(e, HubEvent::ReceiverTooSlow { receiver, .. } if receiver == cat)));
}

/// The client side of the credit: `push_room` says how much may go, a
/// chunk past it is refused (nothing sent), and the room grows with the
/// server's next `PushCredit`, once the slowest receiver stored its data.
#[test]
fn a_pusher_s_session_sends_only_within_its_credit() {
    const MIB: usize = 1 << 20;
    let mut net = three();
    net.clients[2].1.set_manual_acks(true);
    let id = net
        .s(0)
        .offer(
            FileName::new("f.bin").unwrap(),
            64 * MIB as u64,
            Recipient::Everyone,
        )
        .unwrap();
    net.pump();
    assert_eq!(net.s(0).push_room(id), 0, "not accepted yet");
    let mut carol_id = None;
    for i in [1, 2] {
        let local = offered(&net.take(i)).expect("asked");
        net.s(i).accept(local).unwrap();
        if i == 2 {
            carol_id = Some(local);
        }
    }
    net.pump();
    assert_eq!(
        net.take(0),
        vec![
            ClientEvent::PushAccepted { id, receivers: 2 },
            ClientEvent::PushCredit {
                id,
                offset: MIB as u64
            }
        ]
    );
    assert_eq!(net.s(0).push_room(id), MIB as u64);
    assert!(matches!(
        net.s(0).push_chunk(id, vec![0; MIB + 1]),
        Err(UsageError::ChunkTooLarge { .. } | UsageError::PastCredit { .. })
    ));
    let quarter = MIB / 4;
    for _ in 0..4 {
        net.s(0).push_chunk(id, vec![1; quarter]).unwrap();
    }
    assert_eq!(net.s(0).push_room(id), 0);
    assert_eq!(
        net.s(0).push_chunk(id, vec![2]),
        Err(UsageError::PastCredit {
            id,
            end: MIB as u64 + 1,
            credit: MIB as u64
        })
    );
    net.pump();
    // bob stored it all, carol nothing yet: no more room.
    assert!(!net
        .take(0)
        .iter()
        .any(|e| matches!(e, ClientEvent::PushCredit { .. })));
    assert_eq!(net.s(0).push_room(id), 0);
    let carol = carol_id.unwrap();
    net.s(2).stored(carol, MIB as u64);
    net.pump();
    assert_eq!(
        net.take(0),
        vec![ClientEvent::PushCredit {
            id,
            offset: 2 * MIB as u64
        }]
    );
    assert_eq!(net.s(0).push_room(id), MIB as u64);
    net.s(0).push_chunk(id, vec![3; quarter]).unwrap();
    assert_eq!(net.s(0).push_room(id), (MIB - quarter) as u64);
}

/// A name key set after users were ignored (a program that calls
/// `ignore` before `set_name_key`) still finds them: they are kept under
/// the new key, not the one they were ignored under.
#[test]
fn users_ignored_before_a_new_name_key_stay_ignored() {
    fn prefixed(u: &Username) -> String {
        format!("k:{}", u.key())
    }
    let mut s = ClientSession::new(user("bob"), Limits::default(), Instant::now());
    assert_eq!(s.ignore(&user("Alice")), Ok(true));
    s.set_name_key(prefixed);
    assert!(s.is_ignored(&user("alice")), "still ignored");
    assert_eq!(s.ignore(&user("ALICE")), Ok(false), "one user");
    assert_eq!(s.ignored(), vec![user("Alice")]);
    assert!(s.unignore(&user("alice")));
    assert!(s.ignored().is_empty());
}

/// Bob ignores alice (spelled in capitals): her chat to everyone and to
/// him is dropped, replayed or live, carol's still comes; her file offer
/// is declined without bob hearing of it; once unignored she is heard
/// again.
#[test]
fn an_ignored_users_chat_and_offers_are_dropped() {
    let mut net = three_asking();
    assert_eq!(net.s(1).ignore(&user("ALICE")), Ok(true));
    assert_eq!(net.s(1).ignore(&user("alice")), Ok(false), "one user");
    assert_eq!(net.s(1).ignore(&user("Bob")), Err(UsageError::IgnoreSelf));
    assert_eq!(net.s(1).ignored(), vec![user("ALICE")]);
    assert!(net.s(1).is_ignored(&user("alice")));
    net.s(0).send_chat(Recipient::Everyone, "hi all").unwrap();
    net.s(0)
        .send_chat(Recipient::User(user("bob")), "psst")
        .unwrap();
    net.s(2)
        .send_chat(Recipient::Everyone, "carol here")
        .unwrap();
    net.pump();
    assert_eq!(chat_texts(&net.take(1)), ["carol here"]);
    assert_eq!(
        chat_texts(&net.take(2)),
        ["hi all"],
        "carol still hears her"
    );

    let id = net
        .s(0)
        .offer(
            FileName::new("x.txt").unwrap(),
            3,
            Recipient::User(user("bob")),
        )
        .unwrap();
    net.pump();
    let bob = net.take(1);
    assert!(bob.is_empty(), "bob is not asked or told: {bob:?}");
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::PushFailed { id: i, .. } if *i == id)),
        "the push ends for alice: {alice:?}"
    );

    assert!(net.s(1).unignore(&user("Alice")));
    assert!(!net.s(1).unignore(&user("alice")), "not ignored any more");
    net.s(0).send_chat(Recipient::Everyone, "back").unwrap();
    net.pump();
    assert_eq!(chat_texts(&net.take(1)), ["back"]);
}

/// A harness's way of saying "never": every time limit `Duration::MAX`.
/// The hub joins, chats, loses and resumes users, and runs its timers
/// without overflowing an `Instant` (it reads such a time as a century).
#[test]
fn a_hub_whose_time_limits_are_duration_max_never_times_out_and_never_panics() {
    let never = Duration::MAX;
    let limits = Limits {
        handshake_timeout: never,
        keepalive_interval: never,
        keepalive_timeout: never,
        flood_timeout: never,
        transfer_idle_timeout: never,
        offer_timeout: never,
        grace: never,
        history_age: never,
        resume_window: never,
        join_window: never,
        auth_window: never,
        ..Limits::default()
    };
    let mut hub = Hub::new(limits, "hi");
    let mut n = 0u8;
    hub.set_token_source(Box::new(move || {
        n = n.wrapping_add(1);
        [n; 16]
    }));
    let t0 = Instant::now();
    let pending = hub.handle_connect(t0);
    let alice = joined(&mut hub, "alice", t0);
    let bob = joined(&mut hub, "bob", t0);
    hub.handle_message(alice, chat_to_all("hello"), t0);
    let at = hub.poll_timeout().expect("a timer, however far");
    assert!(
        at > t0 + Duration::from_secs(50 * 365 * 24 * 3600),
        "{at:?}"
    );
    let later = t0 + Duration::from_secs(3600);
    hub.handle_timeout(later);
    hub.handle_disconnect(bob, LeaveReason::LOST);
    hub.handle_timeout(later + Duration::from_secs(3600));
    assert!(hub.is_connected(pending), "the handshake never times out");
    assert!(hub.is_joined(alice), "no keepalive ends alice");
    assert!(
        hub.has_session(&Username::new("bob").unwrap()),
        "bob's session waits"
    );
}

/// The pusher's cancel of push `(p, TransferId(1))`, if `said` holds one.
fn pusher_told(said: &[ServerMessage]) -> Option<(CancelCode, String)> {
    said.iter().find_map(|m| match m {
        ServerMessage::Cancel(c) if c.id == TransferId(1) => Some((c.code, c.reason.clone())),
        _ => None,
    })
}

/// The last receiver of a push under way quits, or its connection is
/// lost: the pusher is told who and why (before: "no receiver is left",
/// as if it had been nobody's doing).
#[test]
fn a_push_whose_last_receiver_goes_during_the_transfer_tells_the_pusher_who() {
    let now = Instant::now();
    for (resume, reason, gone) in [
        (false, LeaveReason::QUIT, "left"),
        (true, LeaveReason::LOST, "connection lost"),
    ] {
        let (mut hub, p, bob, _) = push_under_way_to_bob(now);
        if resume {
            hub.set_token_source(Box::new(|| [9; 16]));
        }
        hub.handle_disconnect(bob, reason);
        let (said, _, _) = drain_hub(&mut hub, p);
        assert_no_receiver_left(&said, &format!("no receiver is left (bob: {gone})"));
    }
}

/// A receiver that accepted a push and then went before it started (the
/// others had yet to answer) did not decline it: the pusher is not told
/// "bob did not accept the file", nor, when every receiver that accepted
/// went, "no one accepted the file".
#[test]
fn a_push_whose_accepting_receivers_go_before_it_starts_does_not_say_they_declined() {
    let now = Instant::now();
    // To bob alone, accepted; the pusher sends nothing before bob goes.
    let mut hub = Hub::new(Limits::default(), "hi");
    let p = joined(&mut hub, "p", now);
    let bob = joined(&mut hub, "bob", now);
    let carol = joined(&mut hub, "carol", now);
    hub.flush_presence();
    while hub.poll_transmit().is_some() {}
    offer_to(&mut hub, p, Recipient::User(user("bob")), 6, now);
    let (said, _, _) = drain_hub(&mut hub, bob);
    let Some(ServerMessage::FileStart(FileStart { id: relay, .. })) = said.first() else {
        panic!("{said:?}");
    };
    hub.handle_message(bob, ClientMessage::Accept { id: *relay }, now);
    drain_hub(&mut hub, p);
    hub.handle_disconnect(bob, LeaveReason::QUIT);
    let (said, _, _) = drain_hub(&mut hub, p);
    assert_eq!(
        pusher_told(&said),
        Some((
            CancelCode::NO_RECEIVER,
            "no receiver is left (bob: left)".to_string()
        )),
        "{said:?}"
    );

    // To everyone: carol accepts and goes, then dave declines.
    let dave = joined(&mut hub, "dave", now);
    hub.flush_presence();
    while hub.poll_transmit().is_some() {}
    drain_hub(&mut hub, p);
    offer_to(&mut hub, p, Recipient::Everyone, 6, now);
    // One relay id for all its receivers.
    let (said, _, _) = drain_hub(&mut hub, carol);
    let Some(ServerMessage::FileStart(FileStart { id: relay, .. })) = said.first() else {
        panic!("{said:?}");
    };
    let relay = *relay;
    hub.handle_message(carol, ClientMessage::Accept { id: relay }, now);
    hub.handle_disconnect(carol, LeaveReason::QUIT);
    drain_hub(&mut hub, p);
    hub.handle_message(
        dave,
        ClientMessage::Cancel(FileCancel {
            id: relay,
            code: CancelCode::DECLINED,
            reason: "no".into(),
        }),
        now,
    );
    let (said, _, _) = drain_hub(&mut hub, p);
    assert_eq!(
        pusher_told(&said),
        Some((CancelCode::NO_RECEIVER, "no receiver is left".to_string())),
        "{said:?}"
    );
}

/// A saved session taken up under another name (a program that kept
/// alice's session and starts as carol) is not that name's: the client
/// is told whose it is, not that its session expired; alice's session,
/// away or online, is left alone.
#[test]
fn a_saved_session_of_another_name_says_so_rather_than_expired() {
    let mut net = resumable(Limits::default(), &["alice", "bob"]);
    let alice_saved = net.s(0).saved().unwrap();
    for away in [false, true] {
        if away {
            net.cut(0);
        }
        let id = net.hub.handle_connect(net.now);
        let now = net.now;
        let s = ClientSession::resuming(user("carol"), Limits::default(), now, alice_saved);
        net.clients.push((id, s));
        net.events.push(Vec::new());
        net.pump();
        let carol = net.take(net.clients.len() - 1);
        assert!(
            carol.contains(&ClientEvent::ContinuityLost {
                reason: "the saved session is that of 'alice', not of 'carol'".into()
            }),
            "{carol:?}"
        );
        net.s(net.clients.len() - 1).quit("");
        net.pump();
    }
    // Alice's session still waits for her, with her token.
    net.reconnect(0);
    let alice = net.take(0);
    assert!(
        alice
            .iter()
            .any(|e| matches!(e, ClientEvent::Resumed { .. })),
        "{alice:?}"
    );
}

/// A resume refused as its name taken ends the session for good (the
/// name is held by a session its token does not match): said in the
/// client's words, and marked so that a reconnecting client stops. A
/// fresh join refused the same way keeps the server's words.
#[test]
fn a_resume_refused_as_the_name_taken_is_marked_and_said_from_the_clients_side() {
    let now = Instant::now();
    let refused = || {
        ServerMessage::Refused {
        code: RefuseCode::NAME_TAKEN,
        reason: "the username 'bot' is already taken: its session waits up to 9 s for its client to come back".into(),
        version: PROTOCOL_VERSION,
    }
    };
    let saved = SavedSession {
        token: ResumeToken([3; 16]),
        epoch: 1,
        last_seen: MessageId(0),
        next_client_id: 1,
    };
    let mut s = ClientSession::resuming(user("bot"), Limits::default(), now, saved);
    // As the client does before each connection.
    s.reconnect(now);
    s.handle_message(refused(), now);
    assert!(s.is_resume_refused());
    match s.poll_event() {
        Some(ClientEvent::Refused { code, reason }) => {
            assert_eq!(code, RefuseCode::NAME_TAKEN);
            assert!(
                reason.starts_with("the saved session was not accepted: its token does not match"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }

    let mut fresh = ClientSession::new(user("bot"), Limits::default(), now);
    fresh.handle_message(refused(), now);
    assert!(!fresh.is_resume_refused());
    assert!(matches!(
        fresh.poll_event(),
        Some(ClientEvent::Refused { reason, .. }) if reason.contains("its session waits")
    ));
}
