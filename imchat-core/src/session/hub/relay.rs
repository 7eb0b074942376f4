//! Pushes (`/sendfile`): a file a client sends is checked chunk by
//! chunk and relayed to its receivers under a server-chosen id.

use std::sync::Arc;
use std::time::Instant;

use super::{ClientId, Hub, HubEvent};
use crate::message::{
    CancelCode, FileCancel, FileChunk, FileEnd, FileName, Origin, Recipient, ServerMessage,
    TransferId,
};
use crate::transfer::Incoming;

/// A push being relayed: its checks, and who still receives it.
#[derive(Debug)]
pub(super) struct Relay {
    pub(super) incoming: Incoming,
    pub(super) relay_id: TransferId,
    pub(super) receivers: Arc<[ClientId]>,
    pub(super) from: ClientId,
    /// The file's name and when it was offered, for [`HubEvent::PushEnded`].
    pub(super) name: FileName,
    pub(super) started: Instant,
}

impl Hub {
    /// A joined client offers a file to push to `to`.
    pub(super) fn offer(
        &mut self,
        client: ClientId,
        id: TransferId,
        name: FileName,
        size: u64,
        to: Recipient,
        now: Instant,
    ) {
        let Some(from) = self.username(client).cloned() else {
            return;
        };
        let max_size = self.limits.max_push_size;
        let max = self.limits.max_transfers;
        if id.is_server_chosen() || self.relays.contains_key(&(client, id)) {
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
        let busy = self
            .conns
            .get(&client)
            .map_or(0, |c| c.downloads.len() + c.pushes);
        if busy >= max {
            self.cancel(
                client,
                id,
                CancelCode::TOO_MANY,
                format!("at most {max} transfers at once"),
            );
            return;
        }
        let receivers: Arc<[ClientId]> = match &to {
            Recipient::Everyone => self
                .members
                .iter()
                .copied()
                .filter(|m| *m != client)
                .collect(),
            Recipient::User(u) => match self.names.get(&self.key(u)) {
                Some(dest) => Arc::from(vec![*dest]),
                None => {
                    self.cancel(
                        client,
                        id,
                        CancelCode::NO_RECEIVER,
                        format!("no user named '{u}' is online"),
                    );
                    return;
                }
            },
        };
        if receivers.is_empty() {
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
            ServerMessage::FileStart {
                id: relay_id,
                name: name.clone(),
                size,
                offset: 0,
                origin: Origin::Push { from },
            },
        );
        self.events.push_back(HubEvent::PushStarted {
            from: client,
            id,
            name: name.clone(),
            size,
            receivers: receivers.len(),
        });
        self.relays.insert(
            (client, id),
            Relay {
                incoming: Incoming::new(id, size),
                relay_id,
                receivers,
                from: client,
                name,
                started: now,
            },
        );
    }

    pub(super) fn push_chunk(&mut self, client: ClientId, chunk: FileChunk) {
        let Some(relay) = self.relays.get_mut(&(client, chunk.id)) else {
            // A chunk of a push the hub already ended: dropped quietly.
            return;
        };
        if let Err(e) = relay.incoming.accept(&chunk) {
            let id = chunk.id;
            self.end_relay(client, id, Some((CancelCode::BAD_CHUNK, e.to_string())));
            return;
        }
        let relay_id = relay.relay_id;
        let receivers = relay.receivers.clone();
        self.send_many(
            receivers,
            None,
            ServerMessage::Chunk(FileChunk {
                id: relay_id,
                ..chunk
            }),
        );
    }

    pub(super) fn push_end(&mut self, client: ClientId, end: FileEnd) {
        let Some(relay) = self.relays.get(&(client, end.id)) else {
            return;
        };
        match relay.incoming.finish(&end) {
            Ok(()) => {
                let receivers = relay.receivers.clone();
                let relay_id = relay.relay_id;
                self.send_many(
                    receivers.clone(),
                    None,
                    ServerMessage::End(FileEnd {
                        id: relay_id,
                        crc: end.crc,
                    }),
                );
                self.send(
                    client,
                    ServerMessage::PushDone {
                        id: end.id,
                        receivers: receivers.len() as u32,
                    },
                );
                self.remove_relay(client, end.id, receivers.len(), None);
            }
            Err(e) => self.end_relay(
                client,
                end.id,
                Some((CancelCode::CHECKSUM_MISMATCH, e.to_string())),
            ),
        }
    }

    pub(super) fn remove_relay(
        &mut self,
        client: ClientId,
        id: TransferId,
        receivers: usize,
        error: Option<String>,
    ) {
        if let Some(relay) = self.relays.remove(&(client, id)) {
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
        let Some(relay) = self.relays.get(&(client, id)) else {
            return;
        };
        let (code, reason) = error
            .clone()
            .unwrap_or((CancelCode::CANCELLED, "the sender cancelled".into()));
        let receivers = relay.receivers.clone();
        let relay_id = relay.relay_id;
        self.send_many(
            receivers,
            None,
            ServerMessage::Cancel(FileCancel {
                id: relay_id,
                code,
                reason: reason.clone(),
            }),
        );
        if error.is_some() && self.conns.contains_key(&client) {
            self.cancel(client, id, code, reason.clone());
        }
        self.remove_relay(client, id, 0, Some(reason));
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
        self.drop_receiver(from, id, receiver);
    }

    pub(super) fn drop_receiver(&mut self, from: ClientId, id: TransferId, receiver: ClientId) {
        let Some(relay) = self.relays.get_mut(&(from, id)) else {
            return;
        };
        relay.receivers = relay
            .receivers
            .iter()
            .copied()
            .filter(|r| *r != receiver)
            .collect();
        if relay.receivers.is_empty() {
            let from = relay.from;
            self.end_relay(
                from,
                id,
                Some((CancelCode::NO_RECEIVER, "no receiver is left".into())),
            );
        }
    }

    pub(super) fn client_cancel(&mut self, client: ClientId, c: FileCancel) {
        if c.id.is_server_chosen() {
            // A receiver declines a relayed push.
            let key = self
                .relays
                .iter()
                .find(|(_, r)| r.relay_id == c.id && r.receivers.contains(&client))
                .map(|(k, _)| *k);
            if let Some((from, id)) = key {
                self.drop_receiver(from, id, client);
            }
        } else if self.relays.contains_key(&(client, c.id)) {
            self.end_relay(client, c.id, None);
        } else if self
            .conns
            .get(&client)
            .is_some_and(|x| x.downloads.contains(&c.id))
        {
            self.download_finished(client, c.id);
            self.events
                .push_back(HubEvent::DownloadCancelled { client, id: c.id });
        }
    }
}
