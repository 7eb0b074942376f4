//! Presence batching: joins and leaves (and users going away and coming
//! back) wait a moment and go out together,
//! one `Presence` frame per member per flush, instead of one frame per
//! join and member (N²/2 frames when N users join a room).
//!
//! Every member still gets every join and leave that happened while it
//! was a member, once and in order, and never behind a later message: any
//! other message to a member sends its waiting ones first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::{ClientId, Destination, Hub, Lane, Transmit};
use crate::limits::{MAX_PRESENCE_BYTES, MAX_PRESENCE_EVENTS, PRESENCE_DELAY};
use crate::message::{PresenceEvent, ServerMessage};
use crate::Username;

/// The joins and leaves not sent yet.
#[derive(Debug, Default)]
pub(super) struct PresenceBatch {
    /// In log order.
    events: Vec<PresenceEvent>,
    /// What they count against [`MAX_PRESENCE_BYTES`].
    bytes: usize,
    /// When the first of them was queued.
    since: Option<Instant>,
    /// Members that need only the events from an index on: those that
    /// joined during the batch (the events after their own join), resumed
    /// during it (their replay had the rest), or were sent the batch ahead
    /// of another message. Every other member needs them all.
    from: HashMap<ClientId, usize>,
}

impl Hub {
    /// Queues a join or leave for every member; `joiner`, the member that
    /// joined, gets only what comes after it. A batch that reaches a
    /// bound is sent at once.
    pub(super) fn queue_presence(
        &mut self,
        event: PresenceEvent,
        joiner: Option<ClientId>,
        now: Instant,
    ) {
        let b = &mut self.presence;
        b.since.get_or_insert(now);
        b.bytes += presence_event_max_len(&event);
        b.events.push(event);
        if let Some(j) = joiner {
            b.from.insert(j, b.events.len());
        }
        if b.events.len() >= MAX_PRESENCE_EVENTS || b.bytes >= MAX_PRESENCE_BYTES {
            self.flush_presence();
        }
    }

    /// Tells every member that `user` is away (its connection lost, its
    /// session waiting for a resume) or, `back`, that it is here again.
    /// Not an entry of the log: it carries the newest entry's id.
    pub(super) fn queue_away(&mut self, user: Username, back: bool, now: Instant) {
        let (id, time) = (self.last_id(), self.timestamp(now));
        let event = if back {
            PresenceEvent::Back { id, time, user }
        } else {
            PresenceEvent::Away { id, time, user }
        };
        self.queue_presence(event, None, now);
    }

    /// `client` became a member without a join of its own (it resumed):
    /// it needs none of the batch so far.
    pub(super) fn presence_starts_now(&mut self, client: ClientId) {
        let len = self.presence.events.len();
        if len > 0 {
            self.presence.from.insert(client, len);
        }
    }

    /// Sends `client` the waiting joins and leaves it has not had: called
    /// before any other message to it, so that presence stays in order
    /// with everything else.
    pub(super) fn flush_presence_to(&mut self, client: ClientId) {
        let len = self.presence.events.len();
        if len == 0 || !self.is_joined(client) {
            return;
        }
        let start = self.presence.from.get(&client).copied().unwrap_or(0);
        if start >= len {
            return;
        }
        self.presence.from.insert(client, len);
        let events = self.presence.events[start..].to_vec();
        self.push_presence(&Destination::One(client), events);
    }

    /// Sends every member the waiting joins and leaves it has not had: one
    /// frame (more only past [`MAX_PRESENCE_EVENTS`] or
    /// [`MAX_PRESENCE_BYTES`]) shared by every member that needs the same
    /// ones. The hub does this by itself at
    /// [`poll_timeout`](Hub::poll_timeout), [`PRESENCE_DELAY`] after the
    /// first of them, and when a batch reaches a bound; a server may call
    /// it sooner (for instance once it has read everything that was ready).
    pub fn flush_presence(&mut self) {
        if self.presence.events.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.presence);
        let len = batch.events.len();
        let mut groups: BTreeMap<usize, Vec<ClientId>> = BTreeMap::new();
        for m in self.member_list().iter() {
            let start = batch.from.get(m).copied().unwrap_or(0);
            if start < len {
                groups.entry(start).or_default().push(*m);
            }
        }
        for (start, ids) in groups {
            let to = match ids[..] {
                [one] => Destination::One(one),
                _ => Destination::Many {
                    members: Arc::from(ids),
                    except: None,
                },
            };
            self.push_presence(&to, batch.events[start..].to_vec());
        }
    }

    /// Queues `events` for `to` in frames within the bounds.
    fn push_presence(&mut self, to: &Destination, events: Vec<PresenceEvent>) {
        let mut frame = Vec::new();
        let mut bytes = 0;
        for e in events {
            let n = presence_event_max_len(&e);
            if !frame.is_empty()
                && (frame.len() >= MAX_PRESENCE_EVENTS || bytes + n > MAX_PRESENCE_BYTES)
            {
                self.transmits.push_back(Transmit {
                    to: to.clone(),
                    lane: Lane::Presence,
                    message: ServerMessage::Presence(std::mem::take(&mut frame)),
                });
                bytes = 0;
            }
            bytes += n;
            frame.push(e);
        }
        if !frame.is_empty() {
            self.transmits.push_back(Transmit {
                to: to.clone(),
                lane: Lane::Presence,
                message: ServerMessage::Presence(frame),
            });
        }
    }

    /// When the waiting joins and leaves are due.
    pub(super) fn presence_deadline(&self) -> Option<Instant> {
        self.presence.since.map(|t| t + PRESENCE_DELAY)
    }

    /// Joins and leaves waiting to be sent.
    #[must_use]
    pub fn pending_presence(&self) -> usize {
        self.presence.events.len()
    }

    /// The batch agrees with its bounds.
    pub(super) fn check_presence(&self) -> Result<(), String> {
        let b = &self.presence;
        let len = b.events.len();
        if len >= MAX_PRESENCE_EVENTS || b.bytes >= MAX_PRESENCE_BYTES {
            return Err(format!("{len} presence events waiting, {} bytes", b.bytes));
        }
        if b.since.is_some() != (len > 0) || b.from.values().any(|&i| i > len) {
            return Err("presence batch out of step".into());
        }
        Ok(())
    }
}

/// The most bytes one event takes in a `Presence` frame: what a sender
/// counts against a frame's byte budget (the real size is usually far
/// smaller, the id and time being small differences).
fn presence_event_max_len(event: &PresenceEvent) -> usize {
    match event {
        PresenceEvent::Joined { user, .. }
        | PresenceEvent::Away { user, .. }
        | PresenceEvent::Back { user, .. } => 1 + 10 + 10 + 1 + user.as_str().len(),
        PresenceEvent::Left(d) => 1 + 10 + 10 + 1 + d.user.as_str().len() + 1 + 4 + d.text.len(),
    }
}
