//! What a [`ClientSession`] says when it takes a session back after the
//! server ended it on purpose (an operator's kick, a resume of it from
//! another connection): what happened, not that it expired while the
//! server could not be reached.

use std::collections::HashMap;
use std::time::Instant;

use imchat_core::{
    ClientEvent, ClientId, ClientMessage, ClientSession, Hub, Limits, MemoryStore, Username,
};

/// A hub and the sessions on its connections, in memory.
struct Net {
    hub: Hub,
    now: Instant,
    /// Which session (by index) each connection carries.
    conns: HashMap<ClientId, usize>,
    sessions: Vec<ClientSession>,
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        let mut hub = Hub::new(Limits::default(), "hi");
        let mut counter = 0u8;
        hub.set_token_source(Box::new(move || {
            counter = counter.wrapping_add(1);
            [counter; 16]
        }));
        hub.open_history(Box::new(MemoryStore::new(1000)), now)
            .unwrap();
        Net {
            hub,
            now,
            conns: HashMap::new(),
            sessions: Vec::new(),
        }
    }

    /// A new session for `name` (a resume of `saved` if given) on a new connection.
    fn join(&mut self, name: &str, saved: Option<imchat_core::SavedSession>) -> (usize, ClientId) {
        let name = Username::new(name).unwrap();
        let s = match saved {
            Some(saved) => ClientSession::resuming(name, Limits::default(), self.now, saved),
            None => ClientSession::new(name, Limits::default(), self.now),
        };
        self.sessions.push(s);
        let i = self.sessions.len() - 1;
        (i, self.connect(i))
    }

    /// Session `i` on a new connection.
    fn connect(&mut self, i: usize) -> ClientId {
        let c = self.hub.handle_connect(self.now);
        self.conns.insert(c, i);
        c
    }

    fn pump(&mut self) {
        for _ in 0..20 {
            let mut conns: Vec<(ClientId, usize)> =
                self.conns.iter().map(|(c, i)| (*c, *i)).collect();
            conns.sort();
            for (c, i) in conns {
                let out: Vec<ClientMessage> =
                    std::iter::from_fn(|| self.sessions[i].poll_transmit()).collect();
                for m in out {
                    self.hub.handle_message(c, m, self.now);
                }
            }
            while let Some(t) = self.hub.poll_transmit() {
                for to in t.to.iter() {
                    if let Some(&i) = self.conns.get(&to) {
                        self.sessions[i].handle_message(t.message.clone(), self.now);
                    }
                }
            }
            while self.hub.poll_event().is_some() {}
        }
    }

    /// The events of session `i` so far.
    fn events(&mut self, i: usize) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.sessions[i].poll_event()).collect()
    }

    /// Drops connection `c` (its session's end came to it).
    fn drop_conn(&mut self, c: ClientId) {
        self.conns.remove(&c);
        self.hub
            .handle_disconnect(c, imchat_core::LeaveReason::LOST);
    }
}

/// The words of the `Refused` among `events`.
fn refusal(events: &[ClientEvent]) -> &str {
    events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Refused { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no refusal in {events:?}"))
}

#[test]
fn a_session_resumed_elsewhere_is_not_said_to_have_expired() {
    let mut net = Net::new();
    let (a, a_conn) = net.join("alice", None);
    net.pump();
    let saved = net.sessions[a].saved().expect("a resumable session");
    // The same session taken up from another connection (another run of
    // the bot with the saved session).
    let (_b, _) = net.join("alice", Some(saved));
    net.pump();
    let events = net.events(a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Replaced { .. })),
        "{events:?}"
    );
    net.drop_conn(a_conn);
    // The first connection's bot reconnects, as bots do after an end.
    net.sessions[a].reconnect(net.now);
    net.connect(a);
    net.pump();
    let events = net.events(a);
    let said = refusal(&events);
    assert!(!said.contains("could not be reached"), "{said}");
    assert!(said.contains("another connection"), "{said}");
}

#[test]
fn a_kicked_session_whose_name_is_taken_is_not_said_to_have_expired() {
    let mut net = Net::new();
    let (a, a_conn) = net.join("alice", None);
    net.pump();
    net.hub.console("kick alice spam", net.now);
    net.pump();
    let events = net.events(a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Kicked { .. })),
        "{events:?}"
    );
    net.drop_conn(a_conn);
    // Someone else takes the name meanwhile.
    net.join("alice", None);
    net.pump();
    net.sessions[a].reconnect(net.now);
    net.connect(a);
    net.pump();
    let events = net.events(a);
    let said = refusal(&events);
    assert!(!said.contains("could not be reached"), "{said}");
}
