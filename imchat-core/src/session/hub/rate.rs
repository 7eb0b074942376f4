//! The chat rate limit: a token bucket per connection. A sender over its
//! rate is slowed (its reader waits until [`Hub::throttle`] says), and only
//! one that keeps flooding for [`Limits::flood_timeout`] is disconnected.

use std::time::{Duration, Instant};

use super::{ClientId, Hub};
use crate::limits::Limits;
use crate::message::{ErrorCode, LeaveReason};

/// One connection's bucket: `tokens` may go below zero (the debt is what
/// the reader waits out).
#[derive(Debug)]
pub(super) struct TokenBucket {
    tokens: f64,
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
            tokens: f64::from(limits.rate_burst),
            at: now,
            flooding_since: None,
        }
    }

    /// Refills for the time since the last take, then takes one token.
    pub(super) fn take(&mut self, limits: &Limits, now: Instant) -> Take {
        if limits.rate_per_sec == 0 {
            return Take::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let burst = f64::from(limits.rate_burst);
        self.tokens = (self.tokens + elapsed * f64::from(limits.rate_per_sec)).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.flooding_since = None;
        } else {
            let since = *self.flooding_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= limits.flood_timeout {
                return Take::Flooding;
            }
        }
        self.tokens -= 1.0;
        Take::Allowed
    }

    /// When the bucket is out of debt, if it is in debt.
    pub(super) fn ready_at(&self, limits: &Limits) -> Option<Instant> {
        if self.tokens >= 0.0 || limits.rate_per_sec == 0 {
            return None;
        }
        let secs = -self.tokens / f64::from(limits.rate_per_sec);
        Some(self.at + Duration::from_secs_f64(secs))
    }
}

impl Hub {
    /// When the reader of `client` may read again: `Some(t)` while the client
    /// is over its chat rate (it is slowed by being read later, not cut off).
    pub fn throttle(&self, client: ClientId) -> Option<Instant> {
        self.conns.get(&client)?.bucket.ready_at(&self.limits)
    }

    /// Takes one token for a chat message. Returns true when the client has
    /// flooded for longer than allowed and was disconnected.
    pub(super) fn rate(&mut self, client: ClientId, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&client) else {
            return false;
        };
        if c.bucket.take(&self.limits, now) == Take::Allowed {
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
