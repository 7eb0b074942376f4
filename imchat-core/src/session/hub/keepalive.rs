//! The clock: handshake deadlines, keepalive pings, dead peers, and
//! transfers that stopped moving.

use std::time::Instant;

use super::{Hub, Phase};
use crate::message::{ErrorCode, LeaveReason, RefuseCode, ServerMessage};

impl Hub {
    /// The earliest time at which [`handle_timeout`](Hub::handle_timeout) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let transfers = [self.download_deadline(), self.relay_deadline()];
        self.conns
            .values()
            .filter_map(|c| match (&c.phase, c.ping) {
                // A Hello whose account the server checks came in time.
                (Phase::Handshaking, _) if c.verifying.is_some() => None,
                (Phase::Handshaking, _) => Some(c.connected_at + self.limits.handshake_timeout),
                (Phase::Joined(_), Some((sent, _))) => Some(sent + self.limits.keepalive_timeout),
                (Phase::Joined(_), None) => Some(c.last_heard + self.limits.keepalive_interval),
            })
            .chain(transfers.into_iter().flatten())
            .chain(self.ghost_deadline())
            .chain(self.remote_gone_deadline())
            .chain(self.held_deadline())
            .chain(self.presence_deadline())
            .min()
    }

    /// Runs the clock: grace periods that ran out, handshake deadlines, keepalive pings, dead peers,
    /// downloads not acknowledged and pushes not fed for the idle timeout,
    /// offers not answered in time, joins and leaves waiting long enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        self.expire_ghosts(now);
        self.expire_remote_gone(now);
        self.expire_held(now);
        self.expire_kicks(now);
        self.expire_left_here(now);
        self.expire_downloads(now);
        self.expire_relays(now);
        let limits = self.limits.clone();
        let mut late_handshakes = Vec::new();
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        for (id, c) in &self.conns {
            match (&c.phase, c.ping) {
                (Phase::Handshaking, _) => {
                    // Not a Hello that came in time and waits for the
                    // server's account check (a slow hash on a busy
                    // machine is not the client's delay).
                    if c.verifying.is_none()
                        && now.saturating_duration_since(c.connected_at) >= limits.handshake_timeout
                    {
                        late_handshakes.push((*id, c.transport_pending));
                    }
                }
                (Phase::Joined(_), Some((sent, _))) => {
                    if now.saturating_duration_since(sent) >= limits.keepalive_timeout {
                        dead.push(*id);
                    }
                }
                (Phase::Joined(_), None) => {
                    if now.saturating_duration_since(c.last_heard) >= limits.keepalive_interval {
                        ping.push(*id);
                    }
                }
            }
        }
        late_handshakes.sort_unstable();
        dead.sort_unstable();
        ping.sort_unstable();
        for (id, transport) in late_handshakes {
            let secs = limits.handshake_timeout.as_secs_f64();
            let reason = if transport {
                format!("TLS handshake not finished within {secs} s")
            } else {
                format!("no valid username within {secs} s")
            };
            self.refuse(id, RefuseCode::HANDSHAKE_TIMEOUT, &reason);
        }
        let unanswered = format!(
            "your client did not answer the server's keepalive within {} s: the server closed the connection",
            limits.keepalive_timeout.as_secs_f64()
        );
        for id in dead {
            // Said to the client, which may have been stopped or frozen
            // (Ctrl-Z, a laptop's sleep) and reads it only when it runs
            // again: whose silence it was, not only that there was one.
            self.error(id, ErrorCode::TIMEOUT, &unanswered);
            self.lose(id, LeaveReason::TIMEOUT, "keepalive timeout".into());
        }
        for id in ping {
            let nonce = self.next_ping;
            self.next_ping += 1;
            if let Some(c) = self.conns.get_mut(&id) {
                c.ping = Some((now, nonce));
                c.awaited_pong = Some(nonce);
            }
            self.send(id, ServerMessage::Ping(nonce));
        }
        if self.presence_deadline().is_some_and(|due| due <= now) {
            self.flush_presence();
        }
        // Whatever the clock appended (leaves), and anything the server
        // left uncommitted, is committed at least once per tick.
        self.commit_history(now);
    }
}
