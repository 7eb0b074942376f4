//! The client's side of the rate limit: a token bucket over the rates the
//! server announced in its `Welcome`, charged with what each request costs
//! the sender on the server (PROTOCOL.md section 9), so a client that waits
//! for [`ClientSession::next_send_at`](super::ClientSession::next_send_at)
//! is never slowed for long nor cut off as a flood.

use std::time::{Duration, Instant};

use super::bucket::{Bucket, Rates};
use crate::message::ServerLimits;

/// The share of the announced rates the client spends. The server's clock
/// sees our frames later than we send them, and in clumps (a frame waits
/// behind a long one, the network batches); keeping a little below the
/// rate means the server's bucket only ever fills, so it never finds us
/// over the rate however the frames bunch up on the way.
const PACE_SHARE: f64 = 0.9;

/// The longest wait [`Pacer::ready_at`] names: a year, far past any debt a
/// real server's answers make, and a time every platform's clock can add.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The bucket. Counts may go below zero: a request the session had to
/// send at once (a `Cancel`, a keepalive `Ping`) or an answer that cost
/// more than its request paid is a debt the next sends wait out.
#[derive(Debug, Clone, Default)]
pub(super) struct Pacer {
    /// `None` until welcomed, or when the server announced no rate limit.
    paced: Option<(Rates, Bucket)>,
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
        self.paced = Some((rates, Bucket::full(&rates, now)));
    }

    /// Adds what the time since the last refill earned, up to the bursts.
    pub(super) fn refill(&mut self, now: Instant) {
        if let Some((rates, bucket)) = &mut self.paced {
            bucket.refill(rates, now);
        }
    }

    /// Takes `messages` and `bytes` (possibly into debt).
    pub(super) fn charge(&mut self, messages: f64, bytes: usize) {
        if let Some((_, bucket)) = &mut self.paced {
            bucket.charge(messages, bytes as f64);
        }
    }

    /// When a request of one message and `bytes` bytes fits in the bucket:
    /// `None` if it does now (after a [`refill`](Self::refill) to now).
    pub(super) fn ready_at(&self, bytes: usize) -> Option<Instant> {
        let (rates, bucket) = self.paced.as_ref()?;
        // A request never needs more than a full burst: the server's
        // limits guarantee its longest text fits in one, and a server that
        // announces a burst of nothing (0) still lets a request through
        // each time the debt is paid off, which is when the bucket is back
        // at its (empty) full.
        let messages = rates.burst.min(1.0);
        let bytes = (bytes as f64).min(rates.burst_bytes);
        let secs = bucket.secs_until(rates, messages, bytes);
        // Round up to whole microseconds, so that waiting until the
        // answer always finds the bucket ready. A debt no clock reaches
        // (a server that counted more files than exist) waits as long as
        // the clock can say, never past it.
        (secs > 0.0).then(|| {
            let micros = ((secs * 1e6).ceil() as u64).saturating_add(1);
            let wait = Duration::from_micros(micros).min(MAX_WAIT);
            bucket.at.checked_add(wait).unwrap_or(bucket.at)
        })
    }
}
