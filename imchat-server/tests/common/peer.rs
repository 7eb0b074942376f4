//! A peer that speaks the protocol by hand, for the tests of how the
//! server treats its peers (hostile ones included): it sends frames, or
//! any bytes, and collects every message the server sends.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use imchat_core::{
    ChatKind, ClientMessage, Decoder, Encode, Recipient, RoutedChat, ServerMessage,
    DEFAULT_MAX_FRAME,
};

use super::WAIT;

/// A connection to the server (TCP, or TLS over it) and what it got.
pub struct Peer<S> {
    pub stream: S,
    decoder: Decoder<ServerMessage>,
    /// Received and not yet waited for, in order.
    pub pending: Vec<ServerMessage>,
    /// Batched joins and leaves are kept one message each.
    split_presence: bool,
    /// How long a wait may take.
    wait: Duration,
}

/// Reads and writes go through `&S`, as TLS streams allow (and TCP too).
impl<S> Peer<S>
where
    for<'a> &'a S: Read + Write,
{
    /// Over `stream`, which should have a short read timeout: reading
    /// returns on it to look at the clock.
    pub fn new(stream: S) -> Self {
        Peer {
            stream,
            decoder: Decoder::new(DEFAULT_MAX_FRAME),
            pending: Vec::new(),
            split_presence: false,
            wait: WAIT,
        }
    }

    /// Waits up to `wait` (instead of [`WAIT`]).
    pub fn waiting(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Keeps each join or leave of a batch as a message of its own
    /// (`ServerMessage::Joined` or `Left`), for tests that look for one.
    pub fn splitting_presence(mut self) -> Self {
        self.split_presence = true;
        self
    }

    pub fn send(&mut self, m: &ClientMessage) {
        let _ = self.write(&m.to_frame());
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        (&self.stream).write_all(bytes)?;
        (&self.stream).flush()
    }

    /// Reads what is available; `false` once the server closed the connection.
    pub fn pump(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match (&self.stream).read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.decoder.feed(&buf[..n]);
                while let Ok(Some(m)) = self.decoder.next_message() {
                    match m {
                        ServerMessage::Presence(events) if self.split_presence => self
                            .pending
                            .extend(events.into_iter().map(|e| e.into_message())),
                        m => self.pending.push(m),
                    }
                }
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// The first message (received or to come) that `pred` takes; panics
    /// after the wait, or if the connection closes without one.
    pub fn wait_for(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(i) = self.pending.iter().position(&pred) {
                return self.pending.remove(i);
            }
            assert!(
                Instant::now() < deadline,
                "timed out; got {:?}",
                self.pending
            );
            if !self.pump() && !self.pending.iter().any(&pred) {
                panic!("connection closed; got {:?}", self.pending);
            }
        }
    }

    /// The check that a server still serves (after an attack, a fault):
    /// `other`, which joined after this peer, says "still alive" to
    /// everyone and this peer gets it; then both quit (which frees their
    /// names at once) and the server closes them.
    pub fn chat_with(mut self, mut other: Self) {
        self.wait_for(|m| matches!(m, ServerMessage::Joined { .. } | ServerMessage::Presence(_)));
        other.send(&ClientMessage::Chat {
            client_id: 0,
            kind: ChatKind::Text,
            to: Recipient::Everyone,
            text: "still alive".into(),
        });
        self.wait_for(
            |m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text == "still alive"),
        );
        for p in [&mut self, &mut other] {
            p.send(&ClientMessage::Quit {
                reason: String::new(),
            });
            p.wait_closed();
        }
    }

    /// Waits until the server closes the connection; returns all it sent.
    pub fn wait_closed(&mut self) -> Vec<ServerMessage> {
        self.wait_closed_timed().0
    }

    /// [`Peer::wait_closed`], and how long the close took.
    pub fn wait_closed_timed(&mut self) -> (Vec<ServerMessage>, Duration) {
        let start = Instant::now();
        while self.pump() {
            assert!(
                start.elapsed() < self.wait,
                "not closed; got {:?}",
                self.pending
            );
        }
        (std::mem::take(&mut self.pending), start.elapsed())
    }
}
