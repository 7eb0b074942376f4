//! Letting connections in: the user cap counts joined users only; the
//! connections still handshaking have a cap of their own, and so do the
//! connections from one address. When either is reached, the oldest
//! handshake in the way that has not sent its `Hello` is dropped to make
//! room: a real client sends its `Hello` as soon as it connects, so only
//! connections that never speak are ever dropped, and sockets that stay
//! silent cannot lock anyone out. A login whose account is being checked
//! sent its `Hello` and is never the one dropped; when all the handshakes
//! in the way are such logins, the new connection is refused instead.
//!
//! An "address" here, for every cap counted per address, is a whole IPv4
//! address or an IPv6 /64 network (see [`address_key`]): one IPv6 host is
//! commonly given a /64, and counting its addresses one by one would let it
//! past every such cap.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use super::{Bucket, ClientId, Conn, Hub, Phase, TokenBucket};
use crate::message::RefuseCode;

/// Addresses whose new users are counted at once: past it, those whose
/// window has ended are forgotten.
const MAX_JOIN_ENTRIES: usize = 4096;

/// What the caps per address count `ip` under: an IPv4 address as it is
/// (an IPv4-mapped IPv6 address as the IPv4 address it maps), an IPv6
/// address as its /64 network (the prefix a single subscriber or host is
/// usually given), so that one machine cannot pass a cap by taking address
/// after address from its own network.
#[must_use]
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

impl Hub {
    /// Why a join is refused when the server is full: "server full (2
    /// users)".
    pub(super) fn full_text(&self) -> String {
        let n = self.limits.max_clients;
        format!(
            "server full ({n} {})",
            if n == 1 { "user" } else { "users" }
        )
    }

    /// `client`'s address as the caps per address count it
    /// ([`address_key`]), if it has one.
    pub(super) fn address_of(&self, client: ClientId) -> Option<IpAddr> {
        self.conns.get(&client)?.peer.map(address_key)
    }

    /// A new connection whose address is not known (or does not matter).
    /// If the server is full of users or shutting down, it is refused and a
    /// [`HubEvent::Close`](crate::HubEvent::Close) follows.
    pub fn handle_connect(&mut self, now: Instant) -> ClientId {
        self.admit(None, now)
    }

    /// A new connection from `peer`: like [`handle_connect`](Hub::handle_connect),
    /// and it counts against the cap of connections per address
    /// ([`Limits::max_per_address`](crate::Limits::max_per_address)).
    pub fn handle_connect_from(&mut self, peer: IpAddr, now: Instant) -> ClientId {
        self.clock = self.clock.max(now);
        self.admit(Some(peer), now)
    }

    fn admit(&mut self, peer: Option<IpAddr>, now: Instant) -> ClientId {
        let id = ClientId(self.next_client);
        self.next_client += 1;
        if self.shutting_down {
            self.refuse(id, RefuseCode::SHUTTING_DOWN, "the server is shutting down");
            return id;
        }
        if self.address_banned(peer) {
            self.refuse(
                id,
                RefuseCode::BANNED,
                "your address is banned from this server",
            );
            return id;
        }
        if self.joined_count() >= self.limits.max_clients {
            let reason = self.full_text();
            self.refuse(id, RefuseCode::SERVER_FULL, &reason);
            return id;
        }
        let per_address = self.limits.max_per_address;
        if let Some(ip) = peer.map(address_key).filter(|_| per_address > 0) {
            if self.per_address.get(&ip).copied().unwrap_or(0) >= per_address {
                // The oldest that has not sent its `Hello`: one waiting
                // for its password check did, in time.
                let waiting = self.pending.iter().copied().find(|p| {
                    self.conns.get(p).is_some_and(|c| {
                        c.peer.map(address_key) == Some(ip) && c.verifying.is_none()
                    })
                });
                let Some(old) = waiting else {
                    let reason = format!("too many connections from your address ({per_address})");
                    self.refuse(id, RefuseCode::SERVER_FULL, &reason);
                    return id;
                };
                self.refuse(
                    old,
                    RefuseCode::HANDSHAKE_TIMEOUT,
                    "too many connections from your address; this one sent no username",
                );
            }
        }
        let max_pending = self.limits.max_pending;
        if max_pending > 0 && self.pending.len() >= max_pending {
            // The oldest that has not sent its `Hello`: one whose account
            // is being checked sent it, and is not the one to drop.
            let silent = self
                .pending
                .iter()
                .copied()
                .find(|p| self.conns.get(p).is_some_and(|c| c.verifying.is_none()));
            let Some(old) = silent else {
                let reason = format!(
                    "too many logins are being checked ({max_pending}); try again in a moment"
                );
                self.refuse(id, RefuseCode::SERVER_FULL, &reason);
                return id;
            };
            self.refuse(
                old,
                RefuseCode::HANDSHAKE_TIMEOUT,
                "too many connections are waiting to send a username; this one was the oldest",
            );
        }
        self.conns.insert(
            id,
            Conn {
                phase: Phase::Handshaking,
                peer,
                connected_at: now,
                last_heard: now,
                ping: None,
                awaited_pong: None,
                bucket: TokenBucket::new(&self.limits, now),
                downloads: Vec::new(),
                ended_downloads: VecDeque::new(),
                pushes: 0,
                credentials: None,
                verifying: None,
                authenticated: false,
                welcome_unconfirmed: false,
                transport_pending: false,
                resume_failed: false,
                session_ended: None,
            },
        );
        self.pending.insert(id);
        if let Some(ip) = peer.map(address_key) {
            *self.per_address.entry(ip).or_default() += 1;
            let rates = super::rate::address_rates(&self.limits);
            self.address_buckets
                .entry(ip)
                .or_insert_with(|| Bucket::full(&rates, now));
        }
        id
    }

    /// A new user (a join, not a resume) about to enter from `client`'s
    /// address: past [`Limits::joins_per_address`](crate::Limits::joins_per_address)
    /// within the window, its `Hello` is refused with
    /// [`RefuseCode::SERVER_FULL`] (for now: a client may try again) and
    /// true returned; else it is
    /// counted. A connection without an address is not counted.
    pub(super) fn refuse_join_storm(&mut self, client: ClientId, now: Instant) -> bool {
        let limit = self.limits.joins_per_address;
        let Some(peer) = self.address_of(client) else {
            return false;
        };
        if limit == 0 {
            return false;
        }
        let window = self.limits.join_window;
        if self.joins.len() >= MAX_JOIN_ENTRIES {
            self.joins
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let entry = self.joins.entry(peer).or_insert((now, 0));
        let since = now.saturating_duration_since(entry.0);
        if since >= window {
            *entry = (now, 0);
        }
        if entry.1 < limit {
            entry.1 += 1;
            return false;
        }
        let wait = window.saturating_sub(since).as_secs().max(1);
        // Refused for now (a client may try again later), not a broken rule.
        self.refuse(
            client,
            RefuseCode::SERVER_FULL,
            &format!("too many new users from your address; try again in {wait} s"),
        );
        true
    }
}
