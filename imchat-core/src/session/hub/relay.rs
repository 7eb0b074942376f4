//! Pushes (`/sendfile`): a file a client offers is announced to its
//! receivers, who accept or decline it; once they all answered (or the
//! offer timed out, or the others did not answer within
//! [`OFFER_AFTER_ACCEPT`] of a first acceptance), the pusher sends it, and it is checked chunk by chunk
//! and relayed to the receivers that accepted, under a server-chosen id.
//!
//! Flow control: the pusher sends no further than its credit
//! ([`ServerMessage::PushCredit`]), [`PUSH_CREDIT`] past what its slowest
//! receiver (here, or on another server) acknowledged; each chunk is
//! relayed at once, and a chunk past the credit ends the push. So nothing
//! waits to read a pusher; a receiver that holds a push too long
//! ([`PUSH_RECEIVER_WAIT`]) is dropped from it by the hub's clock.

use crate::limits::{OFFER_AFTER_ACCEPT, PUSH_CREDIT, PUSH_RECEIVER_WAIT, PUSH_WINDOW};
use crate::message::FileStart;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::remote_push::{Inbound, Leg, RemotePush, TransferControl, REMOTE_PUSHER};
use super::{ClientId, ClusterEvent, Hub, HubEvent};
use crate::message::{
    CancelCode, FileCancel, FileChunk, FileEnd, FileName, Origin, Recipient, ServerMessage,
    TransferId,
};
use crate::transfer::Incoming;
use crate::TransferError;

/// Why a push to `user`, whose session here waits for a resume, cannot go.
pub(super) fn away_text(user: &crate::message::Username) -> String {
    format!("{user} is away (connection lost, may come back): a file can only be sent to a connected user")
}

impl Hub {
    /// Whether `user` has a session here waiting for a resume (listed,
    /// with no connection).
    pub(super) fn is_away(&self, user: &crate::message::Username) -> bool {
        self.sessions
            .get(&self.key(user))
            .is_some_and(|s| s.grace.is_some())
    }
}

/// A push being relayed: its checks, and who still receives it.
#[derive(Debug)]
pub(super) struct Relay {
    pub(super) incoming: Incoming,
    pub(super) relay_id: TransferId,
    pub(super) receivers: Arc<[ClientId]>,
    /// The file's name and when it was offered, for [`HubEvent::PushEnded`].
    pub(super) name: FileName,
    pub(super) started: Instant,
    /// Receivers that have not accepted yet (none once it is sending).
    pub(super) waiting: Vec<ClientId>,
    /// True once the pusher was told to send ([`ServerMessage::PushAccepted`]).
    pub(super) sending: bool,
    /// When it last made progress: offered, accepted, or a chunk came.
    pub(super) last: Instant,
    /// When a receiver (here, or on another server) first accepted it:
    /// the others have [`OFFER_AFTER_ACCEPT`] from then to answer.
    pub(super) first_accept: Option<Instant>,
    /// How many receivers it was offered to.
    pub(super) offered_to: usize,
    /// Its receivers on other servers of a cluster, one leg per server.
    pub(super) legs: Vec<Leg>,
    /// Set for a push from a user of another server, relayed here.
    pub(super) inbound: Option<Inbound>,
    /// How far its receivers here acknowledged its data, each (from byte
    /// 0): what was relayed to one past that is in flight towards it, in
    /// queues, socket buffers and the network, however large they are.
    pub(super) acked: HashMap<ClientId, u64>,
    /// How far its pusher may send (the last
    /// [`ServerMessage::PushCredit`], or the last credit given to the other
    /// server for an inbound push): never lowered.
    pub(super) credit: u64,
    /// How long each receiver here has held the push (see [`Stall`]).
    pub(super) stalls: HashMap<ClientId, Stall>,
}

/// How a receiver of a push holds it back: its whole window unacknowledged
/// (the pusher can send nothing more), since when; and how long in all it
/// did so while another receiver had room. Either reaching
/// [`PUSH_RECEIVER_WAIT`] drops it from the push (`TOO_SLOW`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stall {
    full_since: Option<Instant>,
    held: Duration,
    held_since: Option<Instant>,
}

impl Stall {
    /// When it is dropped if nothing changes.
    fn due(&self) -> Option<Instant> {
        let full = self.full_since.map(|t| t + PUSH_RECEIVER_WAIT);
        let held = self
            .held_since
            .map(|t| t + PUSH_RECEIVER_WAIT.saturating_sub(self.held));
        full.into_iter().chain(held).min()
    }
}

impl Relay {
    /// How far its pusher may send now: [`PUSH_CREDIT`] past what its
    /// slowest receiver here acknowledged, and no further than its
    /// receivers' servers allow, nor than the file's size.
    fn limit(&self) -> u64 {
        let here = self
            .receivers
            .iter()
            .map(|c| self.acked.get(c).copied().unwrap_or(0))
            .min()
            .map(|a| a.saturating_add(PUSH_CREDIT));
        let there = self.legs.iter().map(|l| l.credit).min();
        here.into_iter()
            .chain(there)
            .min()
            .unwrap_or(u64::MAX)
            .min(self.incoming.size())
    }

    /// Brings each receiver's [`Stall`] up to date at `now`.
    fn restall(&mut self, now: Instant) {
        let received = self.incoming.received();
        let full: Vec<(ClientId, bool)> = self
            .receivers
            .iter()
            .map(|c| {
                let acked = self.acked.get(c).copied().unwrap_or(0);
                (*c, received.saturating_sub(acked) >= PUSH_WINDOW)
            })
            .collect();
        let room = full.iter().any(|(_, f)| !f) || self.legs.iter().any(|l| l.credit > received);
        self.stalls.retain(|c, _| full.iter().any(|(r, _)| r == c));
        for (c, f) in full {
            let s = self.stalls.entry(c).or_default();
            if f {
                s.full_since.get_or_insert(now);
            } else {
                s.full_since = None;
            }
            match (f && room, s.held_since) {
                (true, None) => s.held_since = Some(now),
                (false, Some(t)) => {
                    s.held += now.saturating_duration_since(t);
                    s.held_since = None;
                }
                _ => {}
            }
        }
    }
    /// Whether its pusher sent any file data yet.
    fn had_data(&self) -> bool {
        self.incoming.received() > 0
    }

    /// Receivers, here and on other servers (those that answered: the
    /// ones that accepted; the others: every user offered it).
    fn receiver_count(&self) -> usize {
        self.receivers.len()
            + self
                .legs
                .iter()
                .map(|l| l.accepted.map_or(l.users, |a| a as usize))
                .sum::<usize>()
    }
}

impl Hub {
    /// A joined client offers a file to push to `to`.
    pub(super) fn offer(
        &mut self,
        client: ClientId,
        id: TransferId,
        name: FileName,
        size: u64,
        to: &Recipient,
        now: Instant,
    ) {
        let Some(from) = self.username(client).cloned() else {
            return;
        };
        let max_size = self.limits.max_push_size;
        if id.is_server_chosen()
            || self.relays.contains_key(&(client, id))
            || self.finishing.contains_key(&(client, id))
        {
            self.bad_transfer_id(client, id, "push");
            return;
        }
        if size > max_size {
            self.cancel(
                client,
                id,
                CancelCode::TOO_LARGE,
                format!("file of {size} bytes is larger than the limit of {max_size} bytes"),
            );
            return;
        }
        if !self.has_transfer_slot(client, id) {
            return;
        }
        let (receivers, remote): (Arc<[ClientId]>, _) = match to {
            Recipient::Everyone => (
                self.member_list()
                    .iter()
                    .copied()
                    .filter(|m| *m != client)
                    .collect(),
                self.remote_receivers(None),
            ),
            Recipient::User(u) => {
                let key = self.key(u);
                if let Some(&dest) = self.names.get(&key) {
                    if dest == client {
                        // Offered back to its own sender, it would be its
                        // own receiver (the reference client never asks).
                        self.cancel(
                            client,
                            id,
                            CancelCode::NO_RECEIVER,
                            "you cannot send a file to yourself",
                        );
                        return;
                    }
                    (Arc::from(vec![dest]), Vec::new())
                } else if self.remote_user(&key).is_some() {
                    (Arc::from(Vec::new()), self.remote_receivers(Some(&key)))
                } else {
                    // Listed by /who while its session waits for a resume,
                    // but with no connection to send a file to.
                    let why = if self.is_away(u) {
                        away_text(u)
                    } else {
                        format!("no user named '{u}' is online")
                    };
                    self.cancel(client, id, CancelCode::NO_RECEIVER, why);
                    return;
                }
            }
        };
        let legs: Vec<Leg> = remote
            .iter()
            .map(|(server, users)| Leg {
                server: *server,
                users: users.len(),
                accepted: None,
                credit: PUSH_CREDIT,
            })
            .collect();
        if receivers.is_empty() && legs.is_empty() {
            self.cancel(client, id, CancelCode::NO_RECEIVER, "no one else is online");
            return;
        }
        let relay_id = TransferId(TransferId::SERVER_BIT | self.next_relay);
        self.next_relay = (self.next_relay + 1) & !TransferId::SERVER_BIT;
        if let Some(c) = self.conns.get_mut(&client) {
            c.pushes += 1;
        }
        self.send_many(
            receivers.clone(),
            None,
            ServerMessage::FileStart(FileStart {
                id: relay_id,
                name: name.clone(),
                size,
                offset: 0,
                origin: Origin::Push { from: from.clone() },
            }),
        );
        self.offer_remote(relay_id, &from, remote, &name, size);
        let relay = Relay {
            incoming: Incoming::new(id, size),
            relay_id,
            waiting: receivers.to_vec(),
            offered_to: 0,
            receivers,
            name: name.clone(),
            started: now,
            sending: false,
            last: now,
            first_accept: None,
            legs,
            inbound: None,
            acked: HashMap::new(),
            credit: 0,
            stalls: HashMap::new(),
        };
        let offered_to = relay.receiver_count();
        self.events.push_back(HubEvent::PushStarted {
            from: client,
            id,
            name,
            size,
            receivers: offered_to,
        });
        self.relays.insert(
            (client, id),
            Relay {
                offered_to,
                ..relay
            },
        );
    }

    /// Whether `client`'s `Ack` of `offset` names a push it receives and
    /// moves its acknowledgement on, within what was relayed to it: free
    /// of the rate budget. The pusher chooses the chunks' size, so a
    /// receiver acknowledging each chunk, however small, is no flood: it
    /// cannot acknowledge more often than it was sent chunks.
    pub(super) fn push_ack_moves_on(&self, client: ClientId, id: TransferId, offset: u64) -> bool {
        self.relay_of_receiver(client, id).is_some_and(|r| {
            let acked = r.acked.get(&client).copied().unwrap_or(0);
            offset <= r.incoming.received() && offset > acked
        })
    }

    /// The push `client` receives as `id`, if any.
    fn relay_of_receiver(&self, client: ClientId, id: TransferId) -> Option<&Relay> {
        if !id.is_server_chosen() {
            return None;
        }
        self.relays
            .values()
            .find(|r| r.relay_id == id && r.receivers.contains(&client))
    }

    /// `client` acknowledged push `id` (its id for it) up to `offset`: the
    /// server may relay its data up to [`PUSH_WINDOW`](crate::PUSH_WINDOW)
    /// past that ([`HubEvent::PushAcked`]). An acknowledgement beyond what
    /// was relayed, or below the last, changes nothing.
    pub(super) fn push_acked(&mut self, client: ClientId, id: TransferId, offset: u64) -> bool {
        let Some((key, relay)) = self
            .relays
            .iter_mut()
            .find(|(_, r)| r.relay_id == id && r.receivers.contains(&client))
        else {
            return false;
        };
        let key = *key;
        if offset <= relay.incoming.received() {
            let acked = relay.acked.entry(client).or_insert(0);
            if offset > *acked {
                *acked = offset;
                self.events.push_back(HubEvent::PushAcked { client, id });
                self.repace(key);
            }
        }
        true
    }

    /// After a change to push `key` (data came, a receiver acknowledged,
    /// or dropped out, or another server gave more room): its receivers'
    /// stalls are brought up to date, and its pusher is given more credit
    /// if it may now send further ([`ServerMessage::PushCredit`]; for a
    /// push from another server's user, that server is).
    pub(super) fn repace(&mut self, key: (ClientId, TransferId)) {
        let now = self.clock;
        let Some(relay) = self.relays.get_mut(&key) else {
            return;
        };
        if !relay.sending {
            return;
        }
        relay.restall(now);
        let limit = relay.limit();
        if limit <= relay.credit {
            return;
        }
        relay.credit = limit;
        match relay.inbound {
            Some(Inbound { server, relay: r }) => {
                self.publish(ClusterEvent::Transfer(TransferControl::Credit {
                    to: server,
                    relay: r,
                    offset: limit,
                }));
            }
            None => self.send(
                key.0,
                ServerMessage::PushCredit {
                    id: key.1,
                    offset: limit,
                },
            ),
        }
    }

    /// How far the pusher of push `relay` (the receivers' id for it) may
    /// send: the last credit it was given (0 before it was accepted, or
    /// when there is no such push).
    #[must_use]
    pub fn push_credit(&self, relay: TransferId) -> u64 {
        self.relays
            .values()
            .find(|r| r.relay_id == relay)
            .map_or(0, |r| r.credit)
    }

    /// How many bytes of push `relay` (the receivers' id for it) were
    /// relayed to each of `receivers` and not acknowledged yet: 0 for all
    /// once the push ended. Each is asked as a receiver of the push.
    #[must_use]
    pub fn push_in_flight(&self, relay: TransferId, receivers: &[ClientId]) -> Vec<u64> {
        let push = relay
            .is_server_chosen()
            .then(|| self.relays.values().find(|r| r.relay_id == relay))
            .flatten();
        receivers
            .iter()
            .map(|c| {
                push.map_or(0, |r| {
                    let acked = r.acked.get(c).copied().unwrap_or(0);
                    r.incoming.received().saturating_sub(acked)
                })
            })
            .collect()
    }

    /// Whether the push `client` knows as `relay_id` was offered to it
    /// and waits for its answer (an `Accept` or a declining `Cancel`).
    pub(super) fn awaits_answer(&self, client: ClientId, relay_id: TransferId) -> bool {
        relay_id.is_server_chosen()
            && self
                .relays
                .values()
                .any(|r| r.relay_id == relay_id && r.waiting.contains(&client))
    }

    /// A receiver accepts the push it knows as `relay_id`.
    pub(super) fn accept_push(&mut self, client: ClientId, relay_id: TransferId, now: Instant) {
        let key = self
            .relays
            .iter()
            .find(|(_, r)| r.relay_id == relay_id && r.waiting.contains(&client))
            .map(|(k, _)| *k);
        let Some(key) = key else {
            // Not offered to it, already answered, or expired (it was told).
            return;
        };
        if let Some(relay) = self.relays.get_mut(&key) {
            relay.waiting.retain(|c| *c != client);
            relay.first_accept.get_or_insert(now);
        }
        self.start_if_answered(key, now);
    }

    /// Tells the pusher to send once every receiver has answered.
    pub(super) fn start_if_answered(&mut self, (from, id): (ClientId, TransferId), now: Instant) {
        let Some(relay) = self.relays.get_mut(&(from, id)) else {
            return;
        };
        if relay.sending
            || !relay.waiting.is_empty()
            || relay.legs.iter().any(|l| l.accepted.is_none())
            || (relay.receivers.is_empty() && relay.legs.is_empty())
        {
            return;
        }
        relay.sending = true;
        relay.last = now;
        let receivers = u32::try_from(relay.receiver_count()).unwrap_or(u32::MAX);
        match relay.inbound {
            // The other server's pusher may send now (once every server answered).
            Some(Inbound { server, relay }) => {
                self.publish(ClusterEvent::Transfer(TransferControl::Answer {
                    to: server,
                    relay,
                    accepted: receivers,
                }));
            }
            None => self.send(from, ServerMessage::PushAccepted { id, receivers }),
        }
        // Its first credit, right after.
        self.repace((from, id));
    }

    /// Runs the clock of pushes: receivers that did not answer an offer in
    /// time count as declining; a push whose pusher sends nothing for the
    /// idle timeout (or no data at all within [`OFFER_AFTER_ACCEPT`] of
    /// being accepted) is ended for everyone.
    pub(super) fn expire_relays(&mut self, now: Instant) {
        let offer = self.limits.offer_timeout;
        let idle = self.limits.transfer_idle_timeout;
        let mut late_offers = Vec::new();
        let mut idle_pushes = Vec::new();
        for (key, r) in &self.relays {
            let since = now.saturating_duration_since(r.last);
            if !r.sending && now >= self.answers_due(r) {
                late_offers.push(*key);
            } else if r.sending && since >= self.sending_idle(r) {
                idle_pushes.push(*key);
            }
        }
        late_offers.sort_unstable();
        idle_pushes.sort_unstable();
        for (from, id) in late_offers {
            let Some(relay) = self.relays.get(&(from, id)) else {
                continue;
            };
            let (relay_id, waiting) = (relay.relay_id, relay.waiting.clone());
            let late: Vec<u64> = relay
                .legs
                .iter()
                .filter(|l| l.accepted.is_none())
                .map(|l| l.server)
                .collect();
            // Which deadline passed: the one after a first acceptance, or
            // the offer's own.
            let after_accept = self.answers_due(relay) < relay.last + offer;
            let reason = if after_accept {
                format!(
                    "not accepted within {} s of another receiver's acceptance: sent to those who accepted",
                    OFFER_AFTER_ACCEPT.min(offer).as_secs_f64()
                )
            } else {
                format!("not accepted within {} s", offer.as_secs_f64())
            };
            for receiver in waiting {
                self.cancel(receiver, relay_id, CancelCode::TIMED_OUT, reason.clone());
                if let Some(relay) = self.relays.get_mut(&(from, id)) {
                    relay.waiting.retain(|c| *c != receiver);
                }
                self.drop_receiver(from, id, receiver);
            }
            for server in late {
                self.events
                    .push_back(HubEvent::RemotePush(RemotePush::Cancel {
                        to: server,
                        relay: relay_id,
                        code: CancelCode::TIMED_OUT,
                        reason: reason.clone(),
                    }));
                self.drop_leg(
                    from,
                    id,
                    server,
                    (
                        CancelCode::DECLINED,
                        "the receiver did not accept the file".into(),
                    ),
                );
            }
            self.start_if_answered((from, id), now);
        }
        for (from, id) in idle_pushes {
            let silent = self.relays.get(&(from, id)).is_some_and(|r| !r.had_data());
            let reason = if silent {
                format!(
                    "no file data within {} s of the push being accepted",
                    OFFER_AFTER_ACCEPT.min(idle).as_secs_f64()
                )
            } else {
                format!("no file data for {} s", idle.as_secs_f64())
            };
            self.end_relay(from, id, Some((CancelCode::TIMED_OUT, reason)));
        }
        self.drop_slow_receivers(now);
        self.expire_finishing(now);
    }

    /// Drops from their pushes the receivers that held them for
    /// [`PUSH_RECEIVER_WAIT`] ([`Stall`]), each with `Cancel{TOO_SLOW}`.
    fn drop_slow_receivers(&mut self, now: Instant) {
        let mut slow: Vec<(TransferId, ClientId)> = self
            .relays
            .values()
            .filter(|r| r.sending)
            .flat_map(|r| {
                r.stalls
                    .iter()
                    .filter(|(_, s)| s.due().is_some_and(|t| t <= now))
                    .map(|(c, _)| (r.relay_id, *c))
            })
            .collect();
        slow.sort_unstable();
        for (relay, receiver) in slow {
            self.events
                .push_back(HubEvent::ReceiverTooSlow { receiver, relay });
            self.cancel_delivery(receiver, relay, CancelCode::TOO_SLOW, "receiver too slow");
        }
    }

    /// When the receivers of `r`, a push not sending yet, must have
    /// answered: the offer timeout from its last progress, or
    /// [`OFFER_AFTER_ACCEPT`] after its first acceptance, whichever is
    /// sooner.
    fn answers_due(&self, r: &Relay) -> Instant {
        let offer = self.limits.offer_timeout;
        let due = r.last + offer;
        r.first_accept
            .map_or(due, |t| due.min(t + OFFER_AFTER_ACCEPT.min(offer)))
    }

    /// How long `r`, a push that is sending, may go without data: the
    /// idle timeout, but only [`OFFER_AFTER_ACCEPT`] for its first data
    /// once accepted, so that a pusher that never sends cannot hold its
    /// receivers' slots for the whole idle timeout.
    fn sending_idle(&self, r: &Relay) -> std::time::Duration {
        let idle = self.limits.transfer_idle_timeout;
        if r.had_data() {
            idle
        } else {
            OFFER_AFTER_ACCEPT.min(idle)
        }
    }

    /// When the next offer or push runs out of time.
    pub(super) fn relay_deadline(&self) -> Option<Instant> {
        self.relays
            .values()
            .map(|r| {
                if r.sending {
                    let idle = r.last + self.sending_idle(r);
                    r.stalls
                        .values()
                        .filter_map(Stall::due)
                        .fold(idle, Instant::min)
                } else {
                    self.answers_due(r)
                }
            })
            .chain(self.finishing_deadline())
            .min()
    }

    pub(super) fn push_chunk(&mut self, client: ClientId, chunk: FileChunk) {
        let clock = self.clock;
        let Some(relay) = self.relays.get_mut(&(client, chunk.id)) else {
            // A chunk of a push the hub already ended: dropped quietly.
            return;
        };
        if !relay.sending {
            let id = chunk.id;
            let reason = "file data sent before the receivers accepted the push".to_string();
            if client != REMOTE_PUSHER {
                self.violation(client, reason.clone());
            }
            self.end_relay(client, id, Some((CancelCode::BAD_CHUNK, reason)));
            return;
        }
        relay.last = clock;
        let relay_id = relay.relay_id;
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        if end > relay.credit && end <= relay.incoming.size() {
            // Past the credit: holding it would cost memory, not reading
            // the pusher would hold its chat; the push alone ends.
            let id = chunk.id;
            let reason = format!(
                "file data up to byte {end} sent past the credit the server gave (up to byte {})",
                relay.credit
            );
            if client != REMOTE_PUSHER {
                self.violation(client, reason.clone());
            }
            self.end_relay(client, id, Some((CancelCode::BAD_CHUNK, reason)));
            return;
        }
        if let Err(e) = relay.incoming.accept(&chunk) {
            let id = chunk.id;
            self.end_relay_failed(client, id, CancelCode::BAD_CHUNK, &e, relay_id);
            return;
        }
        let receivers = relay.receivers.clone();
        let chunk_id = chunk.id;
        for leg in &relay.legs {
            self.events
                .push_back(HubEvent::RemotePush(RemotePush::Chunk {
                    to: leg.server,
                    relay: relay_id,
                    offset: chunk.offset,
                    data: chunk.data.clone(),
                    crc: chunk.crc,
                }));
        }
        self.send_many(
            receivers,
            None,
            ServerMessage::Chunk(FileChunk {
                id: relay_id,
                ..chunk
            }),
        );
        self.repace((client, chunk_id));
    }

    pub(super) fn push_end(&mut self, client: ClientId, end: FileEnd) {
        let Some(relay) = self.relays.get(&(client, end.id)) else {
            return;
        };
        if !relay.sending {
            let reason = "end of a push sent before the receivers accepted it".to_string();
            if client != REMOTE_PUSHER {
                self.violation(client, reason.clone());
            }
            self.end_relay(client, end.id, Some((CancelCode::BAD_CHUNK, reason)));
            return;
        }
        match relay.incoming.finish(&end) {
            Ok(()) => {
                let receivers = relay.receivers.clone();
                let relay_id = relay.relay_id;
                let count = relay.receiver_count();
                let (legs, inbound) = (relay.legs.clone(), relay.inbound);
                self.send_many(
                    receivers,
                    None,
                    ServerMessage::End(FileEnd {
                        id: relay_id,
                        crc: end.crc,
                    }),
                );
                for leg in &legs {
                    self.events.push_back(HubEvent::RemotePush(RemotePush::End {
                        to: leg.server,
                        relay: relay_id,
                        crc: end.crc,
                    }));
                }
                match inbound {
                    Some(i) => {
                        // The sending server tells its pusher how many got
                        // it whole, these among them.
                        self.publish(ClusterEvent::Transfer(TransferControl::Delivered {
                            to: i.server,
                            relay: i.relay,
                            receivers: u32::try_from(count).unwrap_or(u32::MAX),
                        }));
                        self.events
                            .push_back(HubEvent::RemotePush(RemotePush::Received {
                                from: i.server,
                                relay: i.relay,
                            }));
                    }
                    // Receivers on other servers: the pusher is told once
                    // their servers said how many of them got it whole.
                    None if !legs.is_empty() => {
                        if let Some(relay) = self.relays.remove(&(client, end.id)) {
                            self.await_legs(client, end.id, relay);
                        }
                        return;
                    }
                    None => self.send(
                        client,
                        ServerMessage::PushDone {
                            id: end.id,
                            receivers: u32::try_from(count).unwrap_or(u32::MAX),
                        },
                    ),
                }
                self.remove_relay(client, end.id, count, None);
            }
            Err(e) => {
                let relay_id = relay.relay_id;
                self.end_relay_failed(client, end.id, CancelCode::CHECKSUM_MISMATCH, &e, relay_id);
            }
        }
    }

    /// [`end_relay`](Self::end_relay) for file data that failed its checks:
    /// the pusher is told `error` about its transfer `id`, the receivers
    /// the same about the transfer as they know it, `relay_id` (the id of
    /// its offer to them), never the pusher's id.
    fn end_relay_failed(
        &mut self,
        client: ClientId,
        id: TransferId,
        code: CancelCode,
        error: &TransferError,
        relay_id: TransferId,
    ) {
        let theirs = error.clone().with_id(relay_id).to_string();
        self.end_relay_with(client, id, Some((code, error.to_string())), Some(theirs));
    }

    pub(super) fn remove_relay(
        &mut self,
        client: ClientId,
        id: TransferId,
        receivers: usize,
        error: Option<String>,
    ) {
        if let Some(relay) = self.relays.remove(&(client, id)) {
            if client == REMOTE_PUSHER {
                return;
            }
            if let Some(c) = self.conns.get_mut(&client) {
                c.pushes = c.pushes.saturating_sub(1);
            }
            self.events.push_back(HubEvent::PushEnded {
                from: client,
                id,
                name: relay.name,
                size: relay.incoming.size(),
                started: relay.started,
                receivers,
                error,
            });
        }
    }

    /// Ends a push before its end: receivers are told, and the pusher too
    /// when `error` is set (it is `None` when the pusher cancelled itself).
    pub(super) fn end_relay(
        &mut self,
        client: ClientId,
        id: TransferId,
        error: Option<(CancelCode, String)>,
    ) {
        self.end_relay_with(client, id, error, None);
    }

    /// [`end_relay`](Self::end_relay), the receivers (here and on other
    /// servers) told `theirs` instead of the pusher's reason when given.
    fn end_relay_with(
        &mut self,
        client: ClientId,
        id: TransferId,
        error: Option<(CancelCode, String)>,
        theirs: Option<String>,
    ) {
        let Some(relay) = self.relays.get(&(client, id)) else {
            return;
        };
        let tell_pusher = error.is_some();
        let (code, pushers) =
            error.unwrap_or((CancelCode::CANCELLED, "the sender cancelled".into()));
        let reason = theirs.unwrap_or_else(|| pushers.clone());
        let receivers = relay.receivers.clone();
        let relay_id = relay.relay_id;
        let (legs, inbound) = (relay.legs.clone(), relay.inbound);
        // Told on other servers, a shutdown is this one's, not theirs.
        let (legs_reason, pushers_reason) = if self.shutting_down {
            (
                "the sender's server shut down".to_string(),
                "the receivers' server shut down".to_string(),
            )
        } else {
            (reason.clone(), reason.clone())
        };
        self.send_many(
            receivers,
            None,
            ServerMessage::Cancel(FileCancel {
                id: relay_id,
                code,
                reason: reason.clone(),
            }),
        );
        for leg in legs {
            self.events
                .push_back(HubEvent::RemotePush(RemotePush::Cancel {
                    to: leg.server,
                    relay: relay_id,
                    code,
                    reason: legs_reason.clone(),
                }));
        }
        if let Some(i) = inbound {
            // The other server's pusher is told why its receivers here are gone.
            if tell_pusher {
                self.publish(ClusterEvent::Transfer(TransferControl::Gone {
                    to: i.server,
                    relay: i.relay,
                    code,
                    reason: pushers_reason,
                }));
            }
            self.events
                .push_back(HubEvent::RemotePush(RemotePush::Received {
                    from: i.server,
                    relay: i.relay,
                }));
        }
        if tell_pusher && self.conns.contains_key(&client) {
            self.cancel(client, id, code, pushers.clone());
        }
        self.remove_relay(client, id, 0, Some(pushers));
    }

    /// Stops delivering the push `relay_id` to `receiver` (for instance
    /// because it cannot keep up). The pusher is told if no receiver is left.
    pub fn cancel_delivery(
        &mut self,
        receiver: ClientId,
        relay_id: TransferId,
        code: CancelCode,
        reason: &str,
    ) {
        let key = self
            .relays
            .iter()
            .find(|(_, r)| r.relay_id == relay_id && r.receivers.contains(&receiver))
            .map(|(k, _)| *k);
        let Some((from, id)) = key else {
            return;
        };
        if self.conns.contains_key(&receiver) {
            self.cancel(receiver, relay_id, code, reason);
        }
        self.drop_receiver_for(from, id, receiver, Some(reason));
    }

    /// Drops `receiver` (who declined, or left) from push `(from, id)`.
    pub(super) fn drop_receiver(&mut self, from: ClientId, id: TransferId, receiver: ClientId) {
        self.drop_receiver_for(from, id, receiver, None);
    }

    /// Drops `receiver`, which had accepted push `(from, id)`, as its
    /// connection closed (`why`, with its name: `bob: left`, `bob:
    /// connection lost`…; it is no longer known by its id): the pusher is
    /// told so if no receiver is left, not that it declined.
    pub(super) fn drop_receiver_gone(
        &mut self,
        from: ClientId,
        id: TransferId,
        receiver: ClientId,
        why: &str,
    ) {
        self.drop_receiver_with(from, id, receiver, |_| {
            (CancelCode::NO_RECEIVER, why.to_string())
        });
    }

    /// Drops `receiver` from push `(from, id)`; `cut` is why the server
    /// stopped delivering to it, if it did, for the pusher when no
    /// receiver is left.
    fn drop_receiver_for(
        &mut self,
        from: ClientId,
        id: TransferId,
        receiver: ClientId,
        cut: Option<&str>,
    ) {
        self.drop_receiver_with(from, id, receiver, |who| match cut {
            Some(reason) => (CancelCode::NO_RECEIVER, format!("{who}: {reason}")),
            None => (
                CancelCode::DECLINED,
                format!("{who} did not accept the file"),
            ),
        });
    }

    /// Drops `receiver` from push `(from, id)`; `last`, given the
    /// receiver's name, is what the pusher is told when no receiver is
    /// left (see [`Hub::settle`]).
    fn drop_receiver_with(
        &mut self,
        from: ClientId,
        id: TransferId,
        receiver: ClientId,
        last: impl FnOnce(&str) -> (CancelCode, String),
    ) {
        let Some(relay) = self.relays.get_mut(&(from, id)) else {
            return;
        };
        relay.receivers = relay
            .receivers
            .iter()
            .copied()
            .filter(|r| *r != receiver)
            .collect();
        relay.waiting.retain(|r| *r != receiver);
        let who = self.username(receiver).map_or_else(
            || "the receiver".to_string(),
            std::string::ToString::to_string,
        );
        let last = last(&who);
        self.settle(from, id, last);
        // The slowest may be gone: the others may take more.
        self.repace((from, id));
    }

    pub(super) fn client_cancel(&mut self, client: ClientId, c: &FileCancel) {
        if c.id.is_server_chosen() {
            // A receiver declines a relayed push.
            let key = self
                .relays
                .iter()
                .find(|(_, r)| r.relay_id == c.id && r.receivers.contains(&client))
                .map(|(k, _)| *k);
            if let Some((from, id)) = key {
                let sending = self.relays.get(&(from, id)).is_some_and(|r| r.sending);
                if sending {
                    // It gave up during the transfer (its disk is full,
                    // say): the pusher is told why if no one is left, by
                    // the code alone (the text may name the receiver's
                    // own paths). A receiver's `IO` is a file it could
                    // not store.
                    let why = if c.code == CancelCode::IO {
                        crate::codes::CANNOT_STORE
                    } else {
                        c.code.describe()
                    };
                    self.drop_receiver_for(from, id, client, Some(why));
                } else if c.code == CancelCode::TOO_MANY {
                    // Its client takes no more pushes now (8 waiting or
                    // coming in): the pusher is told so, not that the user
                    // did not want this file, which it never saw.
                    self.drop_receiver_with(from, id, client, |who| {
                        (
                            CancelCode::TOO_MANY,
                            format!(
                                "{who} has too many files coming in or waiting for an answer; try again later"
                            ),
                        )
                    });
                } else {
                    self.drop_receiver(from, id, client);
                }
            }
        } else if self.relays.contains_key(&(client, c.id)) {
            if c.code == CancelCode::IO {
                // The pusher could not send its file as offered (it
                // changed while being sent): the receivers hear why.
                let theirs = format!("the sender stopped: {}", c.reason);
                self.end_relay_with(client, c.id, None, Some(theirs));
            } else {
                self.end_relay(client, c.id, None);
            }
        } else if self
            .conns
            .get(&client)
            .is_some_and(|x| x.downloads.iter().any(|(d, _)| *d == c.id))
        {
            self.download_finished(client, c.id);
            self.events
                .push_back(HubEvent::DownloadCancelled { client, id: c.id });
        }
    }
}
