//! The server's [`Hub`] and several [`ClientSession`]s driven against each
//! other with no socket, every frame encoded and decoded, in random
//! interleavings of joins, quits, public and private chat, lost
//! connections, resumes, kicks, time passing and crash restarts over a
//! [`MemoryStore`]. The properties: within one session a member sees each
//! message once, each sender's messages in the order it sent them, and a
//! member whose session lives to the end gets every message routed to it
//! while it was a member; the hub keeps its invariants throughout.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use imchat_core::{
    ClientEvent, ClientId, ClientMessage, ClientSession, Decoder, Encode, Hub, HubEvent,
    LeaveReason, Limits, MemoryStore, Recipient, ServerMessage, Username, DEFAULT_MAX_FRAME,
    MAX_CLIENT_FRAME,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Users `u0` to `u3`.
const USERS: u8 = 4;

/// The most items one drain of a state machine's queue may yield: far
/// above what the few users and messages of a case can queue, so a queue
/// that never runs dry fails the case instead of hanging the test.
const DRAIN_BOUND: u32 = 100_000;

/// Counts the items of one drain against [`DRAIN_BOUND`].
struct Drain(&'static str, u32);

impl Drain {
    fn step(&mut self) {
        self.1 += 1;
        assert!(self.1 <= DRAIN_BOUND, "{} never ran dry", self.0);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A new session for the user, unless it has one.
    Join(u8),
    Quit(u8),
    Chat(u8),
    Private(u8, u8),
    /// The user's connection breaks: what was in flight on it is lost.
    Drop(u8),
    /// The user's client takes its session back on a new connection.
    Resume(u8),
    /// An operator kicks the user.
    Kick(u8),
    /// Time passes by this many fifths of a second.
    Tick(u8),
    /// A long wait (past keepalives and the grace), the network running.
    Wait(u8),
    /// The server process dies and starts again on the same store.
    Restart,
    /// One frame crosses the network, on the pipe this picks.
    Deliver(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    prop_oneof![
        2 => user.clone().prop_map(Op::Join),
        1 => user.clone().prop_map(Op::Quit),
        5 => user.clone().prop_map(Op::Chat),
        3 => (user.clone(), user.clone()).prop_map(|(a, b)| Op::Private(a, b)),
        1 => user.clone().prop_map(Op::Drop),
        2 => user.clone().prop_map(Op::Resume),
        1 => user.prop_map(Op::Kick),
        1 => (0u8..5).prop_map(Op::Tick),
        1 => (0u8..3).prop_map(Op::Wait),
        1 => Just(Op::Restart),
        6 => any::<u16>().prop_map(Op::Deliver),
    ]
}

fn name(u: u8) -> Username {
    Username::new(format!("u{u}")).unwrap()
}

/// A user's client: its session, and what it saw in it.
struct User {
    session: ClientSession,
    conn: Option<ClientId>,
    /// Which session of this user's it is (a new join, or a resume that
    /// lost continuity, starts another).
    number: u32,
    /// The user's next message number, over all its sessions.
    sent: u32,
    /// Message ids seen in this session, with how often.
    seen: HashMap<u64, u32>,
    /// The newest message number seen from each sender, live.
    newest_from: HashMap<String, u32>,
}

/// One message the hub routed: its id, its sender, and who was to get it
/// (user and session number).
struct Routed {
    id: u64,
    from: u8,
    to: Vec<(u8, u32)>,
}

struct World {
    hub: Hub,
    store: MemoryStore,
    restarts: u8,
    now: Instant,
    users: HashMap<u8, User>,
    /// Frames from each connection to the hub, and back.
    up: HashMap<ClientId, VecDeque<Vec<u8>>>,
    down: HashMap<ClientId, VecDeque<Vec<u8>>>,
    owner: HashMap<ClientId, u8>,
    /// The session number each connection carries.
    session_of: HashMap<ClientId, u32>,
    /// Connections the hub closes once their last frames are delivered.
    closing: HashSet<ClientId>,
    /// Senders whose messages may come twice: a resume that lost
    /// continuity sends the unacknowledged ones again.
    resent: HashSet<String>,
    routed: Vec<Routed>,
    errors: Vec<String>,
}

fn hub(store: &MemoryStore, now: Instant, seed: u8) -> Hub {
    // The property is about delivery, not the rate limit.
    let limits = Limits {
        rate_burst: 10_000,
        rate_per_sec: 10_000,
        rate_burst_bytes: 10_000_000,
        rate_bytes_per_sec: 10_000_000,
        ..Limits::default()
    };
    let mut hub = Hub::new(limits, "hi {user}");
    let mut counter = seed;
    hub.set_token_source(Box::new(move || {
        counter = counter.wrapping_add(1);
        [counter; 16]
    }));
    hub.open_history(Box::new(store.clone()), now).unwrap();
    hub
}

impl World {
    fn new() -> Self {
        let store = MemoryStore::new(1000);
        let now = Instant::now();
        World {
            hub: hub(&store, now, 0),
            store,
            restarts: 0,
            now,
            users: HashMap::new(),
            up: HashMap::new(),
            down: HashMap::new(),
            owner: HashMap::new(),
            session_of: HashMap::new(),
            closing: HashSet::new(),
            resent: HashSet::new(),
            routed: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn connect(&mut self, u: u8, number: u32) -> ClientId {
        let id = self.hub.handle_connect(self.now);
        self.up.insert(id, VecDeque::new());
        self.down.insert(id, VecDeque::new());
        self.owner.insert(id, u);
        self.session_of.insert(id, number);
        id
    }

    fn flush_client(&mut self, u: u8) {
        let user = self.users.get_mut(&u).unwrap();
        let Some(id) = user.conn else { return };
        let mut drain = Drain("a client's transmits", 0);
        while let Some(m) = user.session.poll_transmit() {
            drain.step();
            self.up.get_mut(&id).unwrap().push_back(m.to_frame());
        }
    }

    fn flush_hub(&mut self) {
        let mut drain = Drain("the hub's transmits", 0);
        while let Some(t) = self.hub.poll_transmit() {
            drain.step();
            let bytes = t.message.to_frame();
            for to in t.to.iter() {
                if let Some(q) = self.down.get_mut(&to) {
                    q.push_back(bytes.clone());
                }
            }
        }
        let mut drain = Drain("the hub's events", 0);
        while let Some(e) = self.hub.poll_event() {
            drain.step();
            match e {
                HubEvent::Close { client, .. } => {
                    self.closing.insert(client);
                    if let Some(q) = self.up.get_mut(&client) {
                        q.clear();
                    }
                    self.reap();
                }
                HubEvent::Routed { from, id, to, .. } => self.note_routed(from, id.0, to),
                _ => {}
            }
        }
    }

    /// Who is to get message `id`: the members (connected or away) other
    /// than its sender, or its one receiver.
    fn note_routed(&mut self, from: ClientId, id: u64, to: Option<Username>) {
        let sender = self.owner[&from];
        let mut members: HashMap<String, u32> = HashMap::new();
        for c in self.hub.members().iter() {
            if let Some(n) = self.hub.username(*c) {
                members.insert(n.to_string(), self.session_of[c]);
            }
        }
        for (n, _) in self.hub.local_away() {
            let u: u8 = n.as_str()[1..].parse().unwrap();
            members.insert(n.to_string(), self.users[&u].number);
        }
        let to = (0..USERS)
            .filter(|u| *u != sender && to.as_ref().is_none_or(|n| *n == name(*u)))
            .filter_map(|u| members.get(name(u).as_str()).map(|number| (u, *number)))
            .collect();
        self.routed.push(Routed {
            id,
            from: sender,
            to,
        });
    }

    fn reap(&mut self) {
        let done: Vec<ClientId> = self
            .closing
            .iter()
            .copied()
            .filter(|c| self.down.get(c).is_none_or(VecDeque::is_empty))
            .collect();
        for c in done {
            self.closing.remove(&c);
            self.drop_connection(c);
        }
    }

    fn drop_connection(&mut self, id: ClientId) {
        self.up.remove(&id);
        self.down.remove(&id);
        self.hub.handle_disconnect(id, LeaveReason::LOST);
        let u = self.owner[&id];
        if let Some(user) = self.users.get_mut(&u) {
            if user.conn == Some(id) {
                user.conn = None;
            }
        }
    }

    /// Delivers one frame, from the non-empty pipe `pick` chooses.
    fn deliver(&mut self, pick: u16) {
        let mut pipes: Vec<(bool, ClientId)> = self
            .up
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(c, _)| (true, *c))
            .chain(
                self.down
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(c, _)| (false, *c)),
            )
            .collect();
        if pipes.is_empty() {
            return;
        }
        pipes.sort_unstable();
        let (up, id) = pipes[usize::from(pick) % pipes.len()];
        if up {
            let frame = self.up.get_mut(&id).unwrap().pop_front().unwrap();
            let mut d = Decoder::<ClientMessage>::new(DEFAULT_MAX_FRAME);
            d.feed(&frame);
            let m = d.next_message().unwrap().unwrap();
            self.hub.handle_message(id, m, self.now);
            // As the server does before it waits for more input.
            self.hub.commit_history(self.now);
            self.flush_hub();
        } else {
            let frame = self.down.get_mut(&id).unwrap().pop_front().unwrap();
            let mut d = Decoder::<ServerMessage>::new(MAX_CLIENT_FRAME);
            d.feed(&frame);
            let m = d.next_message().unwrap().unwrap();
            let u = self.owner[&id];
            let user = self.users.get_mut(&u).unwrap();
            if user.conn == Some(id) {
                user.session.handle_message(m, self.now);
                self.take_events(u);
                if self.closing.contains(&id) {
                    let user = self.users.get_mut(&u).unwrap();
                    let mut drain = Drain("a closing client's transmits", 0);
                    while user.session.poll_transmit().is_some() {
                        drain.step();
                    }
                } else {
                    self.flush_client(u);
                }
            }
            self.reap();
        }
    }

    fn take_events(&mut self, u: u8) {
        let user = self.users.get_mut(&u).unwrap();
        let mut drain = Drain("a client's events", 0);
        while let Some(e) = user.session.poll_event() {
            drain.step();
            match e {
                ClientEvent::Chat(chat) => {
                    let n = user.seen.entry(chat.id.0).or_default();
                    *n += 1;
                    if *n > 1 {
                        self.errors.push(format!(
                            "u{u} (session {}) got id {} twice: {chat:?}",
                            user.number, chat.id.0
                        ));
                    }
                    let sent: u32 = chat.text.split_once('#').unwrap().1.parse().unwrap();
                    let newest = user.newest_from.entry(chat.from.to_string()).or_default();
                    if sent <= *newest && !chat.history && !self.resent.contains(chat.from.as_str())
                    {
                        self.errors.push(format!(
                            "u{u} got {}'s message #{sent} after its #{newest}",
                            chat.from
                        ));
                    }
                    *newest = (*newest).max(sent);
                }
                // A new session: history is shown again, and the messages
                // not acknowledged are sent again (one may come twice).
                ClientEvent::ContinuityLost { .. } => {
                    self.resent.insert(format!("u{u}"));
                    user.seen.clear();
                    user.newest_from.clear();
                    user.number += 1000;
                    if let Some(c) = user.conn {
                        self.session_of.insert(c, user.number);
                    }
                }
                _ => {}
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Join(u) => {
                if self.users.get(&u).is_some_and(|x| !x.session.is_closed()) {
                    return;
                }
                let number = self.users.get(&u).map_or(0, |x| x.number + 1);
                let sent = self.users.get(&u).map_or(0, |x| x.sent);
                let id = self.connect(u, number);
                let session = ClientSession::new(name(u), Limits::default(), self.now);
                self.users.insert(
                    u,
                    User {
                        session,
                        conn: Some(id),
                        number,
                        sent,
                        seen: HashMap::new(),
                        newest_from: HashMap::new(),
                    },
                );
                self.flush_client(u);
            }
            Op::Quit(u) => {
                let Some(user) = self.users.get_mut(&u) else {
                    return;
                };
                if user.conn.is_some() && user.session.is_joined() {
                    user.session.quit("bye");
                    self.flush_client(u);
                }
            }
            Op::Chat(u) | Op::Private(u, _) => {
                let to = match op {
                    Op::Private(_, v) if v == u => return,
                    Op::Private(_, v) => Recipient::User(name(v)),
                    _ => Recipient::Everyone,
                };
                let Some(user) = self.users.get_mut(&u) else {
                    return;
                };
                if !user.session.is_joined() {
                    return;
                }
                user.sent += 1;
                let text = format!("u{u}#{}", user.sent);
                if let Err(e) = user.session.send_chat(to, &text) {
                    self.errors.push(format!("u{u} cannot send: {e}"));
                }
                self.flush_client(u);
            }
            Op::Drop(u) => {
                if let Some(id) = self.users.get(&u).and_then(|x| x.conn) {
                    self.drop_connection(id);
                    self.flush_hub();
                }
            }
            Op::Resume(u) => {
                let Some(user) = self.users.get(&u) else {
                    return;
                };
                if user.conn.is_some() || user.session.is_closed() {
                    return;
                }
                let id = self.connect(u, user.number);
                let user = self.users.get_mut(&u).unwrap();
                user.conn = Some(id);
                user.session.reconnect(self.now);
                self.take_events(u);
                self.flush_client(u);
            }
            Op::Kick(u) => {
                self.hub.console(&format!("kick u{u} go away"), self.now);
                self.flush_hub();
            }
            Op::Tick(fifths) => {
                self.now += Duration::from_millis(200 * u64::from(fifths));
                self.hub.handle_timeout(self.now);
                self.flush_hub();
                for u in 0..USERS {
                    if let Some(user) = self.users.get_mut(&u) {
                        user.session.handle_timeout(self.now);
                        self.take_events(u);
                        self.flush_client(u);
                    }
                }
            }
            Op::Wait(k) => {
                for _ in 0..u32::from(k) * 40 {
                    self.step(Op::Tick(4));
                    for pick in 0..50 {
                        self.deliver(pick);
                    }
                }
            }
            Op::Restart => {
                self.up.clear();
                self.down.clear();
                self.closing.clear();
                for user in self.users.values_mut() {
                    user.conn = None;
                }
                self.restarts += 1;
                self.hub = hub(&self.store, self.now, self.restarts.wrapping_mul(37));
            }
            Op::Deliver(pick) => self.deliver(pick),
        }
        if let Err(e) = self.hub.check_invariants() {
            self.errors.push(format!("hub invariant: {e}"));
        }
    }

    /// Every client whose session is open takes it back, and the network
    /// runs until nothing is in flight (at most 100,000 frames).
    fn settle(&mut self) {
        for u in 0..USERS {
            self.step(Op::Resume(u));
        }
        for _ in 0..100_000 {
            if self
                .up
                .values()
                .chain(self.down.values())
                .all(VecDeque::is_empty)
            {
                return;
            }
            self.deliver(0);
        }
        self.errors.push("the network never settled".into());
    }

    /// Each message routed to a session that lives to the end reached it.
    fn check_delivery(&mut self) {
        for r in &self.routed {
            for (u, number) in &r.to {
                let user = &self.users[u];
                if user.number == *number
                    && !user.session.is_closed()
                    && !user.seen.contains_key(&r.id)
                {
                    self.errors.push(format!(
                        "u{u} (session {number}) never got id {} from u{}",
                        r.id, r.from
                    ));
                }
            }
        }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/proptest_sessions.txt",
        ))),
        ..ProptestConfig::with_cases(256)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_member_sees_each_message_once_in_per_sender_order(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let mut w = World::new();
        for op in ops {
            w.step(op);
        }
        w.settle();
        w.check_delivery();
        prop_assert!(w.errors.is_empty(), "{:#?}", w.errors);
    }
}
