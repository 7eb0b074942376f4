//! The rate limit: a token bucket per connection, in messages and in bytes
//! of chat text. Chat costs one message and its text's bytes; the other
//! requests cost messages in proportion to their work (a list of 5,000
//! files costs more than a `Who` of 3 users). A sender over its rate is
//! slowed (its reader waits until [`Hub::throttle`] says), and only one that
//! keeps going over it for [`Limits::flood_timeout`] is disconnected.

use std::time::{Duration, Instant};

use super::{ClientId, Hub};
use crate::limits::Limits;
use crate::message::{ErrorCode, LeaveReason};

/// Items of an answer (users listed, files listed) that cost one message.
pub(super) const ITEMS_PER_TOKEN: usize = 100;

/// What one request costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Cost {
    /// Messages.
    pub(super) messages: f64,
    /// Bytes of chat text.
    pub(super) bytes: f64,
}

impl Cost {
    /// A chat message of `len` bytes of text.
    pub(super) fn chat(len: usize) -> Cost {
        Cost {
            messages: 1.0,
            bytes: len as f64,
        }
    }

    /// A request whose answer lists `items` things (at least one message).
    pub(super) fn request(items: usize) -> Cost {
        Cost {
            messages: (1 + items / ITEMS_PER_TOKEN) as f64,
            bytes: 0.0,
        }
    }
}

/// One connection's bucket: the counts may go below zero (the debt is what
/// the reader waits out).
#[derive(Debug)]
pub(super) struct TokenBucket {
    messages: f64,
    bytes: f64,
    at: Instant,
    flooding_since: Option<Instant>,
}

/// What taking a token found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// Within the rate, or slowed but not for long.
    Allowed,
    /// Over the rate for longer than the flood timeout.
    Flooding,
}

impl TokenBucket {
    /// A full bucket.
    pub(super) fn new(limits: &Limits, now: Instant) -> Self {
        TokenBucket {
            messages: f64::from(limits.rate_burst),
            bytes: f64::from(limits.rate_burst_bytes),
            at: now,
            flooding_since: None,
        }
    }

    /// Refills for the time since the last take, then takes `cost`.
    pub(super) fn take(&mut self, limits: &Limits, cost: Cost, now: Instant) -> Take {
        if limits.rate_per_sec == 0 {
            return Take::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.messages = (self.messages + elapsed * f64::from(limits.rate_per_sec))
            .min(f64::from(limits.rate_burst));
        self.bytes = (self.bytes + elapsed * f64::from(limits.rate_bytes_per_sec))
            .min(f64::from(limits.rate_burst_bytes));
        self.at = now;
        if self.messages >= cost.messages && self.bytes >= cost.bytes {
            self.flooding_since = None;
        } else {
            let since = *self.flooding_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= limits.flood_timeout {
                return Take::Flooding;
            }
        }
        self.messages -= cost.messages;
        self.bytes -= cost.bytes;
        Take::Allowed
    }

    /// Charges what a request turned out to cost beyond what it paid,
    /// without refilling (the debt is waited out before the next read).
    pub(super) fn charge(&mut self, cost: Cost, paid: Cost) {
        self.messages -= (cost.messages - paid.messages).max(0.0);
        self.bytes -= (cost.bytes - paid.bytes).max(0.0);
    }

    /// When the bucket is out of debt, if it is in debt.
    pub(super) fn ready_at(&self, limits: &Limits) -> Option<Instant> {
        if limits.rate_per_sec == 0 {
            return None;
        }
        let wait = |count: f64, rate: u32| {
            if count >= 0.0 || rate == 0 {
                0.0
            } else {
                -count / f64::from(rate)
            }
        };
        let secs = wait(self.messages, limits.rate_per_sec)
            .max(wait(self.bytes, limits.rate_bytes_per_sec));
        (secs > 0.0).then(|| self.at + Duration::from_secs_f64(secs))
    }
}

impl Hub {
    /// When the reader of `client` may read again: `Some(t)` while the client
    /// is over its rate (it is slowed by being read later, not cut off).
    #[must_use]
    pub fn throttle(&self, client: ClientId) -> Option<Instant> {
        self.conns.get(&client)?.bucket.ready_at(&self.limits)
    }

    /// Charges `cost` to the client. Returns true when the client has been
    /// over its rate for longer than allowed and was disconnected.
    pub(super) fn rate(&mut self, client: ClientId, cost: Cost, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&client) else {
            return false;
        };
        if c.bucket.take(&self.limits, cost, now) == Take::Allowed {
            return false;
        }
        let secs = self.limits.flood_timeout.as_secs();
        self.error(
            client,
            ErrorCode::FLOODING,
            format!("disconnected: sending faster than allowed for {secs} s"),
        );
        self.violation(client, "flooding");
        self.leave(client, LeaveReason::KICKED, "flooding".into());
        true
    }
}
