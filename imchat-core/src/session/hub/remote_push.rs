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

use std::sync::Arc;
use std::time::Instant;

use super::relay::Relay;
use super::{ClientId, ClusterEvent, Hub, HubEvent};
use crate::message::{
    CancelCode, FileChunk, FileEnd, FileName, FileStart, Origin, ServerMessage, TransferId,
    Username,
};
use crate::transfer::Incoming;

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
                "the receiver is no longer online".to_string()
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
                legs: Vec::new(),
                inbound: Some(Inbound { server, relay }),
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
        }
        self.start_if_answered(key, now);
    }

    /// Server `server` takes no more of push `relay` (for `reason`): its
    /// leg is dropped; the pusher is told if no receiver is left.
    pub fn remote_gone(&mut self, server: u64, relay: TransferId, code: CancelCode, reason: &str) {
        let Some((from, id)) = self.find_leg(server, relay) else {
            return;
        };
        self.drop_leg(from, id, server, (code, reason.to_string()));
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
            .then(|| format!("no receiver is left ({})", last.1));
        self.events
            .push_back(HubEvent::RemotePush(RemotePush::Closed {
                to: server,
                relay: relay_id,
            }));
        match why {
            Some(why) => self.end_relay(from, id, Some((CancelCode::NO_RECEIVER, why))),
            None => self.settle(from, id, last),
        }
    }

    /// A push lost receivers: it ends if none is left (the pusher told why:
    /// `last` when it had offered the file to one receiver only), or starts
    /// if every receiver left has answered.
    pub(super) fn settle(&mut self, from: ClientId, id: TransferId, last: (CancelCode, String)) {
        let Some(relay) = self.relays.get(&(from, id)) else {
            return;
        };
        if relay.receivers.is_empty() && relay.legs.is_empty() {
            let error = if relay.sending {
                (CancelCode::NO_RECEIVER, "no receiver is left".to_string())
            } else if relay.offered_to == 1 {
                last
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
    /// checked and relayed to the receivers here.
    pub fn remote_chunk(&mut self, server: u64, relay: TransferId, chunk: FileChunk, now: Instant) {
        self.clock = self.clock.max(now);
        let Some((from, id)) = self.find_inbound(server, relay) else {
            return;
        };
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

    /// The servers the pushes in progress go to or come from.
    pub(super) fn push_servers(&self) -> impl Iterator<Item = u64> + '_ {
        self.relays.values().flat_map(|r| {
            r.legs
                .iter()
                .map(|l| l.server)
                .chain(r.inbound.map(|i| i.server))
        })
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
            self.remote_cancel(
                server,
                relay,
                CancelCode::PEER_LEFT,
                "the sender's server dropped out of the cluster during the transfer",
            );
        }
    }
}
