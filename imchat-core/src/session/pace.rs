//! The client's side of the rate limit: a token bucket over the rates the
//! server announced in its `Welcome`, charged with what each request costs
//! the sender on the server (PROTOCOL.md section 9), so a client that waits
//! for [`ClientSession::next_send_at`](super::ClientSession::next_send_at)
//! is never slowed for long nor cut off as a flood.

use std::time::{Duration, Instant};

use crate::message::ServerLimits;

/// The share of the announced rates the client spends. The server's clock
/// sees our frames later than we send them, and in clumps (a frame waits
/// behind a long one, the network batches); keeping a little below the
/// rate means the server's bucket only ever fills, so it never finds us
/// over the rate however the frames bunch up on the way.
const PACE_SHARE: f64 = 0.9;

/// Items of an answer (users or files listed) that cost one more message,
/// as on the server.
pub(super) const ITEMS_PER_MESSAGE: usize = 100;

#[derive(Debug, Clone, Copy)]
struct Rates {
    burst: f64,
    per_sec: f64,
    burst_bytes: f64,
    bytes_per_sec: f64,
}

/// The bucket. Counts may go below zero: a request the session had to
/// send at once (a `Cancel`, a keepalive `Ping`) or an answer that cost
/// more than its request paid is a debt the next sends wait out.
#[derive(Debug, Clone, Default)]
pub(super) struct Pacer {
    /// `None` until welcomed, or when the server announced no rate limit.
    rates: Option<Rates>,
    messages: f64,
    bytes: f64,
    at: Option<Instant>,
}

impl Pacer {
    /// Starts full, as the server's bucket does, with the announced rates.
    pub(super) fn start(&mut self, limits: &ServerLimits, now: Instant) {
        if limits.rate_per_sec == 0 {
            *self = Pacer::default();
            return;
        }
        let rates = Rates {
            burst: f64::from(limits.rate_burst),
            per_sec: f64::from(limits.rate_per_sec) * PACE_SHARE,
            burst_bytes: f64::from(limits.rate_burst_bytes),
            bytes_per_sec: f64::from(limits.rate_bytes_per_sec) * PACE_SHARE,
        };
        *self = Pacer {
            rates: Some(rates),
            messages: rates.burst,
            bytes: rates.burst_bytes,
            at: Some(now),
        };
    }

    /// Adds what the time since the last refill earned, up to the bursts.
    pub(super) fn refill(&mut self, now: Instant) {
        let (Some(r), Some(at)) = (self.rates, self.at) else {
            return;
        };
        if now <= at {
            return;
        }
        let secs = now.duration_since(at).as_secs_f64();
        self.messages = (self.messages + secs * r.per_sec).min(r.burst);
        self.bytes = (self.bytes + secs * r.bytes_per_sec).min(r.burst_bytes);
        self.at = Some(now);
    }

    /// Takes `messages` and `bytes` (possibly into debt).
    pub(super) fn charge(&mut self, messages: f64, bytes: usize) {
        if self.rates.is_some() {
            self.messages -= messages;
            self.bytes -= bytes as f64;
        }
    }

    /// When a request of one message and `bytes` bytes fits in the bucket:
    /// `None` if it does now (after a [`refill`](Self::refill) to now).
    pub(super) fn ready_at(&self, bytes: usize) -> Option<Instant> {
        let (Some(r), Some(at)) = (self.rates, self.at) else {
            return None;
        };
        // A text never needs more than a full burst (the server's limits
        // guarantee its longest text fits in one).
        let bytes = (bytes as f64).min(r.burst_bytes);
        let wait = |have: f64, need: f64, rate: f64| {
            if have >= need || rate <= 0.0 {
                0.0
            } else {
                (need - have) / rate
            }
        };
        let secs =
            wait(self.messages, 1.0, r.per_sec).max(wait(self.bytes, bytes, r.bytes_per_sec));
        // Round up to whole microseconds, so that waiting until the
        // answer always finds the bucket ready.
        (secs > 0.0).then(|| at + Duration::from_micros((secs * 1e6).ceil() as u64 + 1))
    }
}
