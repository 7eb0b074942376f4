//! Pushes (`/sendfile`) between the servers of a cluster.
//!
//! The sending server's hub keeps the push as it does any other
//! ([`Relay`](super::relay::Relay)), with one *leg* per other server that has
//! receivers. The control of a leg (the offer, the answer, a receiving
//! server giving up) travels as [`ClusterEvent::Transfer`] events, beside
//! the chat; the file data, its end and a cancel travel as [`RemotePush`]
//! events, which the server carries on a path of its own with a window (so
//! that the sender is paced to the slowest receiver, as on one server).
//!
//! The receiving server's hub keeps an *inbound* push, also as a `Relay`,
//! whose pusher is the other server: it offers the file to its own
//! receivers, answers once they all answered, checks every chunk again and
//! relays it to them. The hub does no IO here either.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::relay::Relay;
use super::{ClientId, ClusterEvent, Hub, HubEvent};
use crate::message::{
    CancelCode, FileChunk, FileEnd, FileName, FileStart, Origin, ServerMessage, TransferId,
    Username,
};
use crate::transfer::Incoming;

/// What a pusher is told when every receiver of its push dropped out
/// during the transfer (followed by why, where it is known).
const NO_RECEIVER_LEFT: &str = "no receiver is left";

/// What a pusher is told when no receiver is left, for `cause` (which may
/// say so already: a receiving server's reason).
fn no_receiver_left(cause: &str) -> String {
    if cause.starts_with(NO_RECEIVER_LEFT) {
        cause.to_string()
    } else {
        format!("{NO_RECEIVER_LEFT} ({cause})")
    }
}

/// Why a push between servers ended when part of its data never came
/// from the cluster (it went with a Redis that restarted or lost its data).
pub(super) const DATA_LOST: &str =
    "the cluster lost part of the file's data (its Redis restarted or lost its data)";

/// The pusher of an inbound push (its real pusher is on another server):
/// never a connection's id (those count up from 1).
pub(super) const REMOTE_PUSHER: ClientId = ClientId(u64::MAX);

/// The control of a push between servers, published to the other servers
/// beside the chat (in order with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferControl {
    /// A push is offered to `users`, users of server `to`.
    Offer {
        /// The server of the receivers.
        to: u64,
        /// The push, as the sending server knows it.
        relay: TransferId,
        /// Its pusher.
        from: Username,
        /// The receivers.
        users: Vec<Username>,
        /// The file's name.
        name: FileName,
        /// Its size in bytes.
        size: u64,
    },
    /// The receivers of server `to`'s push `relay` on this server all
    /// answered: `accepted` of them take it (at least one).
    Answer {
        /// The sending server.
        to: u64,
        /// The push.
        relay: TransferId,
        /// How many receive it here.
        accepted: u32,
    },
    /// No receiver of server `to`'s push `relay` is left on this server
    /// (they declined, left, or could not keep up): send it no more.
    Gone {
        /// The sending server.
        to: u64,
        /// The push.
        relay: TransferId,
        /// Why, as a receiver would have been told.
        code: CancelCode,
        /// Why, in words.
        reason: String,
    },
    /// This server gave up its push `relay` to the users of server `to`
    /// while `to` was out of the cluster (frozen, or cut off from Redis):
    /// back, `to` ends it for its receivers at once (the data it was
    /// waiting for will not come) instead of after the idle timeout.
    Dropped {
        /// The receiving server.
        to: u64,
        /// The push, as this server knows it.
        relay: TransferId,
        /// Why, as a receiver is told.
        code: CancelCode,
        /// Why, in words.
        reason: String,
    },
    /// Server `to`'s push `relay` ended here (its end relayed): `receivers`
    /// of its receivers on this server got the file whole. The sending
    /// server tells its pusher ([`ServerMessage::PushDone`]) once every
    /// server with receivers said so (or gave up).
    Delivered {
        /// The sending server.
        to: u64,
        /// The push.
        relay: TransferId,
        /// How many got it whole here.
        receivers: u32,
    },
    /// Server `to`'s push `relay` may send up to byte `offset` of its file
    /// to this server's receivers: [`PUSH_CREDIT`](crate::PUSH_CREDIT) past what the slowest of
    /// them acknowledged. Never lowered; the first comes right after the
    /// [`Answer`](Self::Answer).
    Credit {
        /// The sending server.
        to: u64,
        /// The push.
        relay: TransferId,
        /// The end of what may be sent, counted from byte 0.
        offset: u64,
    },
}

/// The data path of a push between servers: for the server to carry, in
/// order per push and server, with a window (see the module's notes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemotePush {
    /// Sending: file data of push `relay` for server `to`. The server should
    /// hold the caller until the window toward `to` has room.
    Chunk {
        /// The receiving server.
        to: u64,
        /// The push.
        relay: TransferId,
        /// Where the data starts in the file.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
        /// CRC32 of `data`.
        crc: u32,
    },
    /// Sending: the whole file was sent and checked (`crc` of it all).
    End {
        /// The receiving server.
        to: u64,
        /// The push.
        relay: TransferId,
        /// CRC32 of the whole file.
        crc: u32,
    },
    /// Sending: the push stopped before its end (past the window: it must
    /// not wait for room).
    Cancel {
        /// The receiving server.
        to: u64,
        /// The push.
        relay: TransferId,
        /// Why.
        code: CancelCode,
        /// Why, in words.
        reason: String,
    },
    /// Sending: server `to` takes no more of push `relay` (its receivers
    /// are gone, or the server is): stop waiting for room, drop what waits.
    Closed {
        /// The receiving server.
        to: u64,
        /// The push.
        relay: TransferId,
    },
    /// Receiving: start reading server `from`'s push `relay`; give what
    /// comes to [`Hub::remote_chunk`], [`Hub::remote_end`] and
    /// [`Hub::remote_cancel`].
    Receive {
        /// The sending server.
        from: u64,
        /// The push.
        relay: TransferId,
    },
    /// Receiving: server `from`'s push `relay` is over here: stop reading it
    /// and drop what is left of it.
    Received {
        /// The sending server.
        from: u64,
        /// The push.
        relay: TransferId,
    },
}

/// The receivers a push has on one other server.
#[derive(Debug, Clone)]
pub(super) struct Leg {
    pub(super) server: u64,
    pub(super) users: usize,
    /// How many took it, once that server answered.
    pub(super) accepted: Option<u32>,
    /// How far that server lets the pusher send
    /// ([`TransferControl::Credit`]; [`PUSH_CREDIT`](crate::PUSH_CREDIT) until it says more).
    pub(super) credit: u64,
}

/// A push its pusher sent whole (checked), whose legs are not all over:
/// the pusher is told how many got it ([`ServerMessage::PushDone`]) once
/// each server of a leg said how many of its receivers got it whole
/// ([`TransferControl::Delivered`]), gave up, or left the cluster.
#[derive(Debug)]
pub(super) struct Finishing {
    pub(super) relay_id: TransferId,
    /// Receivers that got it whole: here, and on the servers that said.
    pub(super) received: usize,
    /// The legs yet to say.
    pub(super) legs: Vec<Leg>,
    pub(super) name: FileName,
    pub(super) size: u64,
    pub(super) started: Instant,
    /// When the pusher's end came.
    pub(super) ended: Instant,
}

/// Where an inbound push comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Inbound {
    pub(super) server: u64,
    pub(super) relay: TransferId,
}

impl Hub {
    /// The users of other servers a push to them goes to, by server, in a
    /// stable order: all of them (`None`), or the one named.
    pub(super) fn remote_receivers(&self, only: Option<&str>) -> Vec<(u64, Vec<Username>)> {
        let mut by_server: Vec<(u64, Vec<Username>)> = Vec::new();
        let mut users: Vec<(&String, &(Username, u64))> = self
            .remote
            .users
            .iter()
            .filter(|(k, _)| only.is_none_or(|o| o == k.as_str()))
            .collect();
        users.sort_by(|a, b| a.0.cmp(b.0));
        for (_, (user, server)) in users {
            match by_server.iter_mut().find(|(s, _)| s == server) {
                Some((_, list)) => list.push(user.clone()),
                None => by_server.push((*server, vec![user.clone()])),
            }
        }
        by_server.sort_by_key(|(s, _)| *s);
        by_server
    }

    /// Offers push `relay` to each server's receivers (in cluster mode).
    pub(super) fn offer_remote(
        &mut self,
        relay: TransferId,
        from: &Username,
        remote: Vec<(u64, Vec<Username>)>,
        name: &FileName,
        size: u64,
    ) {
        for (to, users) in remote {
            self.publish(ClusterEvent::Transfer(TransferControl::Offer {
                to,
                relay,
                from: from.clone(),
                users,
                name: name.clone(),
                size,
            }));
        }
    }

    fn find_inbound(&self, server: u64, relay: TransferId) -> Option<(ClientId, TransferId)> {
        self.relays
            .iter()
            .find(|(_, r)| r.inbound == Some(Inbound { server, relay }))
            .map(|(k, _)| *k)
    }

    fn find_leg(&self, server: u64, relay: TransferId) -> Option<(ClientId, TransferId)> {
        self.relays
            .iter()
            .find(|(_, r)| r.relay_id == relay && r.legs.iter().any(|l| l.server == server))
            .map(|(k, _)| *k)
    }

    /// Server `server` offers its push `relay` of `name` (`size` bytes)
    /// from `from` to `users`: those of them connected here are offered it
    /// as a push from `from`. Users not here (left meanwhile) are left out;
    /// if none is here the other server is told at once.
    #[allow(clippy::too_many_arguments)]
    pub fn remote_offer(
        &mut self,
        server: u64,
        relay: TransferId,
        from: Username,
        users: &[Username],
        name: FileName,
        size: u64,
        now: Instant,
    ) {
        self.clock = self.clock.max(now);
        if self.find_inbound(server, relay).is_some() {
            return;
        }
        let mut receivers: Vec<ClientId> = users
            .iter()
            .filter_map(|u| self.names.get(&self.key(u)).copied())
            .filter(|c| self.is_joined(*c))
            .collect();
        receivers.sort_unstable();
        receivers.dedup();
        if receivers.is_empty() || size > self.limits.max_push_size {
            let reason = if receivers.is_empty() {
                match users {
                    [one] if self.is_away(one) => super::relay::away_text(one),
                    _ => "the receiver is no longer online".to_string(),
                }
            } else {
                format!(
                    "file of {size} bytes is larger than the limit of {} bytes of the receiver's server",
                    self.limits.max_push_size
                )
            };
            let code = if receivers.is_empty() {
                CancelCode::NO_RECEIVER
            } else {
                CancelCode::TOO_LARGE
            };
            self.publish(ClusterEvent::Transfer(TransferControl::Gone {
                to: server,
                relay,
                code,
                reason,
            }));
            return;
        }
        let local = TransferId(TransferId::SERVER_BIT | self.next_relay);
        self.next_relay = (self.next_relay + 1) & !TransferId::SERVER_BIT;
        let receivers: Arc<[ClientId]> = Arc::from(receivers);
        self.events
            .push_back(HubEvent::RemotePush(RemotePush::Receive {
                from: server,
                relay,
            }));
        self.send_many(
            receivers.clone(),
            None,
            ServerMessage::FileStart(FileStart {
                id: local,
                name: name.clone(),
                size,
                offset: 0,
                origin: Origin::Push { from },
            }),
        );
        self.relays.insert(
            (REMOTE_PUSHER, local),
            Relay {
                incoming: Incoming::new(local, size),
                relay_id: local,
                waiting: receivers.to_vec(),
                offered_to: receivers.len(),
                receivers,
                name,
                started: now,
                sending: false,
                last: now,
                first_accept: None,
                legs: Vec::new(),
                inbound: Some(Inbound { server, relay }),
                acked: HashMap::new(),
                credit: 0,
                stalls: HashMap::new(),
            },
        );
    }

    /// Server `server` answered the offer of push `relay`: `accepted` of
    /// its users take it.
    pub fn remote_answer(&mut self, server: u64, relay: TransferId, accepted: u32, now: Instant) {
        self.clock = self.clock.max(now);
        let Some(key) = self.find_leg(server, relay) else {
            return;
        };
        if let Some(r) = self.relays.get_mut(&key) {
            for leg in r.legs.iter_mut().filter(|l| l.server == server) {
                leg.accepted = Some(accepted);
            }
            r.last = now;
            if accepted > 0 {
                r.first_accept.get_or_insert(now);
            }
        }
        self.start_if_answered(key, now);
    }

    /// Server `server` lets push `relay` send up to byte `offset` to its
    /// receivers ([`TransferControl::Credit`]): the pusher may get more.
    pub fn remote_credit(&mut self, server: u64, relay: TransferId, offset: u64, now: Instant) {
        self.clock = self.clock.max(now);
        let Some(key) = self.find_leg(server, relay) else {
            return;
        };
        if let Some(r) = self.relays.get_mut(&key) {
            for leg in r.legs.iter_mut().filter(|l| l.server == server) {
                leg.credit = leg.credit.max(offset);
            }
        }
        self.repace(key);
    }

    /// Server `server` takes no more of push `relay` (for `reason`): its
    /// leg is dropped; the pusher is told if no receiver is left. After
    /// the push's end, none of that server's receivers got it whole.
    pub fn remote_gone(&mut self, server: u64, relay: TransferId, code: CancelCode, reason: &str) {
        if let Some(key) = self.find_finishing(server, relay) {
            self.leg_over(key, server, 0);
            return;
        }
        let Some((from, id)) = self.find_leg(server, relay) else {
            return;
        };
        self.drop_leg(from, id, server, (code, reason.to_string()));
    }

    /// Server `server` relayed the end of push `relay`: `receivers` of its
    /// receivers got the file whole.
    pub fn remote_delivered(
        &mut self,
        server: u64,
        relay: TransferId,
        receivers: u32,
        now: Instant,
    ) {
        self.clock = self.clock.max(now);
        if let Some(key) = self.find_finishing(server, relay) {
            self.leg_over(key, server, receivers as usize);
        }
    }

    fn find_finishing(&self, server: u64, relay: TransferId) -> Option<(ClientId, TransferId)> {
        self.finishing
            .iter()
            .find(|(_, f)| f.relay_id == relay && f.legs.iter().any(|l| l.server == server))
            .map(|(k, _)| *k)
    }

    /// Push `relay` was sent whole by its pusher `from`: once each leg said
    /// how many got it, the pusher is told ([`Self::finish_push`]).
    pub(super) fn await_legs(&mut self, from: ClientId, id: TransferId, relay: Relay) {
        self.finishing.insert(
            (from, id),
            Finishing {
                relay_id: relay.relay_id,
                received: relay.receivers.len(),
                legs: relay.legs,
                name: relay.name,
                size: relay.incoming.size(),
                started: relay.started,
                ended: self.clock,
            },
        );
    }

    /// The leg toward `server` of the finishing push `key` is over:
    /// `received` of its receivers got the file whole (at most as many as
    /// accepted it there).
    fn leg_over(&mut self, key: (ClientId, TransferId), server: u64, received: usize) {
        let Some(f) = self.finishing.get_mut(&key) else {
            return;
        };
        let Some(at) = f.legs.iter().position(|l| l.server == server) else {
            return;
        };
        let leg = f.legs.remove(at);
        f.received += received.min(leg.accepted.map_or(leg.users, |a| a as usize));
        let relay = f.relay_id;
        let done = f.legs.is_empty();
        self.events
            .push_back(HubEvent::RemotePush(RemotePush::Closed {
                to: server,
                relay,
            }));
        if done {
            self.finish_push(key);
        }
    }

    /// Tells the pusher of the finishing push `(from, id)` how many got
    /// the file whole, and ends it.
    pub(super) fn finish_push(&mut self, (from, id): (ClientId, TransferId)) {
        let Some(f) = self.finishing.remove(&(from, id)) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&from) {
            c.pushes = c.pushes.saturating_sub(1);
            self.send(
                from,
                ServerMessage::PushDone {
                    id,
                    receivers: u32::try_from(f.received).unwrap_or(u32::MAX),
                },
            );
        }
        self.events.push_back(HubEvent::PushEnded {
            from,
            id,
            name: f.name,
            size: f.size,
            started: f.started,
            receivers: f.received,
            error: None,
        });
    }

    /// Finishing pushes whose servers did not all say within the idle
    /// timeout (a server of an older version never does) are told to
    /// their pushers, the silent legs counted as they accepted it.
    pub(super) fn expire_finishing(&mut self, now: Instant) {
        let idle = self.limits.transfer_idle_timeout;
        let mut late: Vec<(ClientId, TransferId)> = self
            .finishing
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.ended) >= idle)
            .map(|(k, _)| *k)
            .collect();
        late.sort_unstable();
        for key in late {
            let legs: Vec<(u64, usize)> = self.finishing[&key]
                .legs
                .iter()
                .map(|l| (l.server, l.accepted.map_or(l.users, |a| a as usize)))
                .collect();
            for (server, accepted) in legs {
                self.leg_over(key, server, accepted);
            }
        }
    }

    /// When the next finishing push stops waiting for its servers.
    pub(super) fn finishing_deadline(&self) -> Option<Instant> {
        let idle = self.limits.transfer_idle_timeout;
        self.finishing.values().map(|f| f.ended + idle).min()
    }

    /// Drops the leg toward `server` of push `(from, id)`; `last` is what
    /// the pusher is told if it was the only receiver.
    pub(super) fn drop_leg(
        &mut self,
        from: ClientId,
        id: TransferId,
        server: u64,
        last: (CancelCode, String),
    ) {
        let Some(relay) = self.relays.get_mut(&(from, id)) else {
            return;
        };
        relay.legs.retain(|l| l.server != server);
        let relay_id = relay.relay_id;
        // The last receivers went with it, during the transfer: the pusher
        // is told why, not only that nobody is left.
        let why = (relay.sending && relay.receivers.is_empty() && relay.legs.is_empty())
            .then(|| no_receiver_left(&last.1));
        self.events
            .push_back(HubEvent::RemotePush(RemotePush::Closed {
                to: server,
                relay: relay_id,
            }));
        match why {
            Some(why) => self.end_relay(from, id, Some((CancelCode::NO_RECEIVER, why))),
            None => {
                self.settle(from, id, last);
                // That server may have been the one holding the push.
                self.repace((from, id));
            }
        }
    }

    /// A push lost receivers: it ends if none is left (the pusher told why:
    /// `last` when it had offered the file to one receiver only, or when
    /// the last one had accepted it and went, or the server stopped
    /// delivering to it during the transfer; "no one accepted the file"
    /// only when no one did), or starts if every receiver left has
    /// answered.
    pub(super) fn settle(&mut self, from: ClientId, id: TransferId, last: (CancelCode, String)) {
        let Some(relay) = self.relays.get(&(from, id)) else {
            return;
        };
        if relay.receivers.is_empty() && relay.legs.is_empty() {
            let error = if relay.sending {
                let why = if last.0 == CancelCode::NO_RECEIVER {
                    no_receiver_left(&last.1)
                } else {
                    NO_RECEIVER_LEFT.to_string()
                };
                (CancelCode::NO_RECEIVER, why)
            } else if last.0 == CancelCode::NO_RECEIVER {
                // The last one had accepted, and went before the start.
                (CancelCode::NO_RECEIVER, no_receiver_left(&last.1))
            } else if relay.offered_to == 1 {
                last
            } else if relay.first_accept.is_some() {
                // Some accepted, and went (or cancelled) before the start.
                (CancelCode::NO_RECEIVER, NO_RECEIVER_LEFT.to_string())
            } else {
                (CancelCode::DECLINED, "no one accepted the file".to_string())
            };
            self.end_relay(from, id, Some(error));
        } else {
            let clock = self.clock;
            self.start_if_answered((from, id), clock);
        }
    }

    /// File data of server `server`'s push `relay` (`chunk.id` is ignored):
    /// checked and relayed to the receivers here. Data that starts past
    /// the end of what came before it means the cluster lost the data
    /// between (Redis restarted empty, say): the push ends, its receivers
    /// and its pusher told so in words (`DATA_LOST`), not as a chunk that
    /// broke the rules.
    pub fn remote_chunk(&mut self, server: u64, relay: TransferId, chunk: FileChunk, now: Instant) {
        self.clock = self.clock.max(now);
        let Some((from, id)) = self.find_inbound(server, relay) else {
            return;
        };
        let skipped = self
            .relays
            .get(&(from, id))
            .is_some_and(|r| r.sending && chunk.offset > r.incoming.received());
        if skipped {
            self.end_relay(from, id, Some((CancelCode::IO, DATA_LOST.to_string())));
            return;
        }
        self.push_chunk(from, FileChunk { id, ..chunk });
    }

    /// The end of server `server`'s push `relay`.
    pub fn remote_end(&mut self, server: u64, relay: TransferId, crc: u32, now: Instant) {
        self.clock = self.clock.max(now);
        let Some((from, id)) = self.find_inbound(server, relay) else {
            return;
        };
        self.push_end(from, FileEnd { id, crc });
    }

    /// Server `server`'s push `relay` stopped there: its receivers here are
    /// told why.
    pub fn remote_cancel(
        &mut self,
        server: u64,
        relay: TransferId,
        code: CancelCode,
        reason: &str,
    ) {
        let Some((from, id)) = self.find_inbound(server, relay) else {
            return;
        };
        if let Some(r) = self.relays.get_mut(&(from, id)) {
            // Not answered back: the other server ended it.
            r.inbound = None;
        }
        self.events
            .push_back(HubEvent::RemotePush(RemotePush::Received {
                from: server,
                relay,
            }));
        self.end_relay(from, id, Some((code, reason.to_string())));
    }

    /// This server cannot take in server `server`'s push `relay` (its
    /// Redis refuses what moving the data takes): the push ends for the
    /// receivers here with `reason`, and the sending server is told
    /// (`Gone`), so that its pusher hears why at once instead of waiting
    /// for credit until the idle timeout.
    pub fn remote_give_up(
        &mut self,
        server: u64,
        relay: TransferId,
        code: CancelCode,
        reason: &str,
    ) {
        if self.find_inbound(server, relay).is_none() {
            return;
        }
        self.publish(ClusterEvent::Transfer(TransferControl::Gone {
            to: server,
            relay,
            code,
            reason: reason.to_string(),
        }));
        self.remote_cancel(server, relay, code, reason);
    }

    /// The servers the pushes in progress go to or come from.
    pub(super) fn push_servers(&self) -> impl Iterator<Item = u64> + '_ {
        self.relays
            .values()
            .flat_map(|r| {
                r.legs
                    .iter()
                    .map(|l| l.server)
                    .chain(r.inbound.map(|i| i.server))
            })
            .chain(
                self.finishing
                    .values()
                    .flat_map(|f| f.legs.iter().map(|l| l.server)),
            )
    }

    /// Server `server` is gone: pushes to its users lose them, pushes from
    /// its users end. Its users may be back on another server already:
    /// the texts say what happened to the push, not to them.
    pub(super) fn transfers_of_gone_server(&mut self, server: u64) {
        let mut legs: Vec<(ClientId, TransferId)> = self
            .relays
            .iter()
            .filter(|(_, r)| r.legs.iter().any(|l| l.server == server))
            .map(|(k, _)| *k)
            .collect();
        legs.sort_unstable();
        let mut finishing: Vec<(ClientId, TransferId)> = self
            .finishing
            .iter()
            .filter(|(_, f)| f.legs.iter().any(|l| l.server == server))
            .map(|(k, _)| *k)
            .collect();
        finishing.sort_unstable();
        // Told too, in case it was only frozen or cut off: back, it ends
        // the push for its receivers at once (its data was deleted).
        let given_up = legs
            .iter()
            .filter_map(|k| self.relays.get(k).map(|r| r.relay_id))
            .chain(
                finishing
                    .iter()
                    .filter_map(|k| self.finishing.get(k).map(|f| f.relay_id)),
            )
            .collect::<Vec<_>>();
        for relay in given_up {
            self.publish(ClusterEvent::Transfer(TransferControl::Dropped {
                to: server,
                relay,
                code: CancelCode::PEER_LEFT,
                reason: "the sender's server gave it up while the receivers' server was out of the cluster".into(),
            }));
        }
        for key in finishing {
            // Not known to have got it whole.
            self.leg_over(key, server, 0);
        }
        for (from, id) in legs {
            self.drop_leg(
                from,
                id,
                server,
                (
                    CancelCode::PEER_LEFT,
                    "the receiver's server dropped out of the cluster during the transfer"
                        .to_string(),
                ),
            );
        }
        let mut inbound: Vec<TransferId> = self
            .relays
            .values()
            .filter_map(|r| r.inbound.filter(|i| i.server == server).map(|i| i.relay))
            .collect();
        inbound.sort_unstable();
        for relay in inbound {
            // Told too, in case it was only frozen or cut off: back, it
            // reads this and ends its pusher's wait at once, not after
            // the idle timeout.
            self.publish(ClusterEvent::Transfer(TransferControl::Gone {
                to: server,
                relay,
                code: CancelCode::PEER_LEFT,
                reason: "the receivers' server gave it up while the sender's server was out of the cluster".into(),
            }));
            self.remote_cancel(
                server,
                relay,
                CancelCode::PEER_LEFT,
                "the sender's server dropped out of the cluster during the transfer",
            );
        }
    }
}
