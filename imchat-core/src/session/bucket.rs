//! The token bucket both sides of the rate limit keep, in messages and in
//! bytes of chat text: the hub's per-connection limit ([`hub`'s
//! `rate`](super::hub)) and the client's pacer ([`pace`](super::pace)).
//! Counts may go below zero: that debt is what a sender waits out.

use std::time::Instant;

/// Items of an answer (users or files listed) that cost one more message.
pub(super) const ITEMS_PER_MESSAGE: usize = 100;

/// How fast a bucket fills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rates {
    /// Messages it holds.
    pub(super) burst: f64,
    /// Messages it gains a second.
    pub(super) per_sec: f64,
    /// Bytes it holds.
    pub(super) burst_bytes: f64,
    /// Bytes it gains a second.
    pub(super) bytes_per_sec: f64,
}

/// A bucket's counts and when they were last brought up to date.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    pub(super) messages: f64,
    pub(super) bytes: f64,
    pub(super) at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(super) fn full(rates: &Rates, now: Instant) -> Self {
        Bucket {
            messages: rates.burst,
            bytes: rates.burst_bytes,
            at: now,
        }
    }

    /// Adds what the time since the last refill earned, up to the bursts.
    pub(super) fn refill(&mut self, rates: &Rates, now: Instant) {
        if now <= self.at {
            return;
        }
        let secs = now.duration_since(self.at).as_secs_f64();
        self.messages = (self.messages + secs * rates.per_sec).min(rates.burst);
        self.bytes = (self.bytes + secs * rates.bytes_per_sec).min(rates.burst_bytes);
        self.at = now;
    }

    /// True when it holds at least `messages` and `bytes`.
    pub(super) fn holds(&self, messages: f64, bytes: f64) -> bool {
        self.messages >= messages && self.bytes >= bytes
    }

    /// Takes `messages` and `bytes`, into debt if need be.
    pub(super) fn charge(&mut self, messages: f64, bytes: f64) {
        self.messages -= messages;
        self.bytes -= bytes;
    }

    /// Seconds after [`at`](Bucket::at) until it holds `messages` and
    /// `bytes` again (0 when it does now).
    pub(super) fn secs_until(&self, rates: &Rates, messages: f64, bytes: f64) -> f64 {
        let wait = |have: f64, need: f64, rate: f64| {
            if have >= need || rate <= 0.0 {
                0.0
            } else {
                (need - have) / rate
            }
        };
        wait(self.messages, messages, rates.per_sec).max(wait(
            self.bytes,
            bytes,
            rates.bytes_per_sec,
        ))
    }
}
