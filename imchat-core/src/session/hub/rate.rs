//! The rate limit: a token bucket per connection, in messages and in bytes
//! of chat text. Chat costs one message and its text's bytes; the other
//! requests cost messages in proportion to their work (a list of 5,000
//! files costs more than a `Who` of 3 users). A sender over its rate is
//! slowed (its reader waits until [`Hub::throttle`] says), and only one that
//! keeps going over it for [`Limits::flood_timeout`] is disconnected. The
//! connections of one address also share a rate
//! ([`Limits::address_rate_share`]): over it they are all read later
//! ([`Hub::hold`] says the wait is the address's only), save for the frames
//! that cost nothing ([`Hub::is_free`]), which the reader still hands over
//! at once, so that a transfer of that address does not stall behind the
//! others' chat; the first frame that costs waits out the hold. One whose
//! reader, let go after such a wait, finds its next frame there
//! at once (it sends faster than its address may) is going over the rate
//! too, so that a flood split over a few connections of one address is
//! cut off as one connection's is, while a user of that address who sends
//! now and then is only slowed with the others.
//!
//! The debt of an answer is waited out like any other, and asking again
//! and again for answers that cost more than the rate (lists, counts of
//! the shared files) is going over it; only an answer that leaves a debt
//! of the flood timeout's worth of the rate or more (a list of 50,000 files
//! at the default rate, or the count and the list of 40,000 that `/files`
//! asks for together) starts the flood clock again for the request read
//! after it: that client waited for the server longer than the timeout,
//! and however long the lists it asks for, it is slowed, never cut off.
//!
//! A frame that does no work costs like a request too, so that no kind of
//! frame can be sent back to back for free: a `Pong` that answers no
//! `Ping` of the server, an `Ack` that moves no download of the sender on,
//! a chunk or end of a push that is not the sender's (a chunk by its size),
//! a second `Hello` or `Auth`. The frames of a transfer at full speed (the
//! sender's own pushes, acks that move its downloads on) stay free.

use std::time::{Duration, Instant};

use super::admission::address_key;
use super::{ClientId, Hub};
use crate::limits::Limits;
use crate::message::{ClientMessage, ErrorCode, LeaveReason};
use crate::session::bucket::{Bucket, Rates, ITEMS_PER_MESSAGE};

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

    /// What this costs beyond `paid` (nothing below zero).
    pub(super) fn beyond(self, paid: Cost) -> Cost {
        Cost {
            messages: (self.messages - paid.messages).max(0.0),
            bytes: (self.bytes - paid.bytes).max(0.0),
        }
    }

    /// A `Register`: the server hashes the password (Argon2, tens of
    /// milliseconds of a core), so it costs a second of the message budget
    /// (`limits.rate_per_sec` messages, no more than a burst): once its
    /// burst is spent, a client that registers and unregisters in a loop
    /// is read at one hash a second, and the cores stay its users'.
    pub(super) fn register(limits: &Limits) -> Cost {
        Cost {
            messages: f64::from(limits.rate_per_sec.min(limits.rate_burst).max(1)),
            bytes: 0.0,
        }
    }

    /// A frame of `len` bytes of data read for nothing (a chunk of a
    /// push that is not the sender's): one message per chunk's worth, at
    /// least one.
    pub(super) fn discarded(len: usize, limits: &Limits) -> Cost {
        Cost {
            messages: (1 + len / limits.chunk_size.max(1)) as f64,
            bytes: 0.0,
        }
    }

    /// A request whose answer lists `items` things (at least one message).
    pub(super) fn request(items: usize) -> Cost {
        Cost {
            messages: (1 + items / ITEMS_PER_MESSAGE) as f64,
            bytes: 0.0,
        }
    }
}

/// How soon after the end of a wait on its address's rate a connection's
/// next frame must be read for it to count as waiting there already: the
/// reader reads at once when let go (a few milliseconds under load), while
/// a user who types sends seconds apart. A connection sending more than
/// ten frames a second into an address over its rate counts as going over
/// the rate; one sending fewer is only slowed.
const PRESSING: Duration = Duration::from_millis(100);

/// How long a connection that went over its address's rate must stay
/// within it before its flood clock starts again: a reader that once
/// comes back late (the machine busy for a moment) has not stopped
/// flooding, and the flood it split with others is cut off in its turn,
/// not after theirs and the connections' of its address that only
/// started later.
const CALM: Duration = Duration::from_secs(1);

/// How much later than a flood that is cut off the flood clock of another
/// connection of its address must have started for that clock to start
/// again then: the connections of one flood start together; one that
/// started later was held back behind it (a client of the same machine,
/// paced to its own rate but read only as fast as the flood let it), and
/// the flood that held it is gone.
const BEHIND: Duration = Duration::from_millis(250);

/// One connection's bucket: the counts may go below zero (the debt is what
/// the reader waits out).
#[derive(Debug)]
pub(super) struct TokenBucket {
    bucket: Bucket,
    flooding_since: Option<Instant>,
    /// The debt is a long answer's, the flood timeout's worth of the rate
    /// or more (a list of 60,000 files costs 600 messages, 12 s), not the
    /// sender's pace: the request read once it is paid off waited for the
    /// server longer than the timeout, and starts the flood clock again.
    long_answer: bool,
    /// The last wait [`Hub::throttle`] gave the reader: until when, and
    /// whether it was for the address's shared rate (the connection's own
    /// bucket was not in debt as long).
    held: Option<(Instant, bool)>,
    /// When a frame of it was last read at once after a wait on the
    /// address's rate (see [`CALM`]).
    pressed_at: Option<Instant>,
}

/// How long [`Hub::hold`] holds a reader back, and for which rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// When the reader may read the client's next costly frame.
    pub until: Instant,
    /// The wait is for the rate the connections of the client's address
    /// share only: frames that cost nothing ([`Hub::is_free`]) may be
    /// read and handled before `until`.
    pub address_only: bool,
}

/// What taking a token found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// Within the rate, or slowed but not for long.
    Allowed,
    /// Over the rate for longer than the flood timeout.
    Flooding,
}

/// The rates the connections of one address share: the client's, times
/// [`Limits::address_rate_share`].
pub(super) fn address_rates(limits: &Limits) -> Rates {
    let share = f64::from(limits.address_rate_share);
    let one = rates(limits);
    Rates {
        burst: one.burst * share,
        per_sec: one.per_sec * share,
        burst_bytes: one.burst_bytes * share,
        bytes_per_sec: one.bytes_per_sec * share,
    }
}

/// Whether the connections of an address share a rate.
fn address_capped(limits: &Limits) -> bool {
    limits.rate_per_sec > 0 && limits.address_rate_share > 0
}

/// The rates a hub's limits set.
fn rates(limits: &Limits) -> Rates {
    Rates {
        burst: f64::from(limits.rate_burst),
        per_sec: f64::from(limits.rate_per_sec),
        burst_bytes: f64::from(limits.rate_burst_bytes),
        bytes_per_sec: f64::from(limits.rate_bytes_per_sec),
    }
}

impl TokenBucket {
    /// A full bucket.
    pub(super) fn new(limits: &Limits, now: Instant) -> Self {
        TokenBucket {
            bucket: Bucket::full(&rates(limits), now),
            flooding_since: None,
            long_answer: false,
            held: None,
            pressed_at: None,
        }
    }

    /// Refills for the time since the last take, then takes `cost`. Over
    /// the rate: when the bucket does not hold `cost`, or when the reader
    /// was held back by the address's shared rate and this was read at
    /// once when it was let go (see [`PRESSING`]).
    pub(super) fn take(&mut self, limits: &Limits, cost: Cost, now: Instant) -> Take {
        if limits.rate_per_sec == 0 {
            return Take::Allowed;
        }
        self.bucket.refill(&rates(limits), now);
        let long_answer = std::mem::take(&mut self.long_answer);
        let pressing = self
            .held
            .take()
            .is_some_and(|(until, shared)| shared && now <= until + PRESSING);
        if pressing {
            self.pressed_at = Some(now);
        }
        let calm = self
            .pressed_at
            .is_none_or(|t| now.saturating_duration_since(t) >= CALM);
        if self.bucket.holds(cost.messages, cost.bytes) && !pressing {
            if calm {
                self.flooding_since = None;
            }
        } else if long_answer {
            self.flooding_since = Some(now);
        } else {
            let since = *self.flooding_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= limits.flood_timeout {
                return Take::Flooding;
            }
        }
        self.bucket.charge(cost.messages, cost.bytes);
        Take::Allowed
    }

    /// A flood of its address whose clock started at `since` was cut off
    /// at `now`: if its own clock started well after (see [`BEHIND`]), it
    /// starts again.
    fn flood_cut_before(&mut self, since: Instant, now: Instant) {
        if self.flooding_since.is_some_and(|s| s > since + BEHIND) {
            self.flooding_since = Some(now);
        }
    }

    /// Charges `extra`, what a request turned out to cost beyond what it
    /// paid at `now`, without refilling (the debt is waited out before the
    /// next read). The wait that makes it a long answer is the whole debt
    /// left, not this answer's alone: requests sent together (`/files`
    /// asks for the count and the list at once) are read before the first
    /// is answered, and the reader then waits for all their answers.
    pub(super) fn charge(&mut self, limits: &Limits, extra: Cost, now: Instant) {
        self.bucket.charge(extra.messages, extra.bytes);
        if extra.messages <= 0.0 && extra.bytes <= 0.0 {
            return;
        }
        let wait = out_of_debt_at(&self.bucket, &rates(limits))
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        if !wait.is_zero() && wait >= limits.flood_timeout {
            self.long_answer = true;
        }
    }

    /// When the bucket is out of debt, if it is in debt.
    pub(super) fn ready_at(&self, limits: &Limits) -> Option<Instant> {
        if limits.rate_per_sec == 0 {
            return None;
        }
        out_of_debt_at(&self.bucket, &rates(limits))
    }
}

/// When `bucket`, filling at `rates`, is out of debt, if it is in debt.
fn out_of_debt_at(bucket: &Bucket, rates: &Rates) -> Option<Instant> {
    let secs = bucket.secs_until(rates, 0.0, 0.0);
    (secs > 0.0).then(|| bucket.at + Duration::from_secs_f64(secs))
}

impl Hub {
    /// What a message of joined `client` costs before it is handled, if
    /// anything (a chat is charged once its length is checked, see
    /// [`Hub::chat`]; a `Quit` ends the connection).
    pub(super) fn cost_of(&mut self, client: ClientId, msg: &ClientMessage) -> Option<Cost> {
        match msg {
            ClientMessage::Chat { .. } | ClientMessage::Quit { .. } => return None,
            ClientMessage::Register { .. } => return Some(Cost::register(&self.limits)),
            // A chunk of a push the hub ended, or never had, does no work.
            ClientMessage::Chunk(chunk) if !self.relays.contains_key(&(client, chunk.id)) => {
                return Some(Cost::discarded(chunk.data.len(), &self.limits));
            }
            _ => {}
        }
        if !self.costs_nothing(client, msg) {
            return Some(Cost::request(0));
        }
        // The awaited pong is free once.
        if let ClientMessage::Pong(_) = msg {
            if let Some(c) = self.conns.get_mut(&client) {
                c.awaited_pong = None;
            }
        }
        None
    }

    /// Whether `msg` is one of the frames of `client` that cost nothing:
    /// a chunk or end of its own push, an ack that moves one of its
    /// transfers on, the pong that answers the server's ping, the answer
    /// (`Accept`, or a `Cancel` that declines) to a push offered to it
    /// that waits for that answer. (Requests (`Who`, `Ping`, `Download`,
    /// ...), and `Hello` and `Auth`, which a joined client has no use for,
    /// cost.) An answer the server asked for is not the client's doing:
    /// others may offer it more pushes than its own rate, and declining
    /// them must not make it a flood. And the `Quit`.
    fn costs_nothing(&self, client: ClientId, msg: &ClientMessage) -> bool {
        match msg {
            // It ends the connection: no flood, and a reader holding the
            // client for its address's rate hands it over at once, so the
            // name is free when the client's `quit` has seen the close.
            ClientMessage::Quit { .. } => true,
            ClientMessage::Accept { id } => self.awaits_answer(client, *id),
            ClientMessage::Cancel(c) => self.awaits_answer(client, c.id),
            ClientMessage::Chunk(chunk) => self.relays.contains_key(&(client, chunk.id)),
            ClientMessage::End(end) => self.relays.contains_key(&(client, end.id)),
            ClientMessage::Ack { id, offset } => {
                self.ack_moves_on(client, *id, *offset)
                    || self.push_ack_moves_on(client, *id, *offset)
            }
            ClientMessage::Pong(nonce) => self
                .conns
                .get(&client)
                .is_some_and(|c| c.awaited_pong == Some(*nonce)),
            _ => false,
        }
    }

    /// Whether `msg`, read from joined `client` while [`Hub::hold`] holds
    /// it for its address's rate only, may be handled at once: it costs
    /// nothing (a chunk or end of the client's own push, an ack that moves
    /// one of its transfers on, the pong that answers the server's ping,
    /// the answer to a push offered to it, a `Quit`),
    /// so a transfer goes on at full speed while other connections of its
    /// address send too fast. Anything else waits out the hold. Changes
    /// nothing: the message is still to be handed to
    /// [`Hub::handle_message`].
    #[must_use]
    pub fn is_free(&self, client: ClientId, msg: &ClientMessage) -> bool {
        self.is_joined(client) && self.costs_nothing(client, msg)
    }

    /// When the reader of `client` may read again: `Some(t)` while the client
    /// is over its rate, or its address over the rate its connections
    /// share (it is slowed by being read later). [`Hub::hold`] also tells
    /// which.
    ///
    /// The reader is expected to wait until then before it reads the
    /// client's next frame: the hub remembers the wait, and a frame read at
    /// once after a wait on the address's rate counts as going over the
    /// rate (see [`Limits::flood_timeout`]).
    #[must_use]
    pub fn throttle(&mut self, client: ClientId) -> Option<Instant> {
        self.hold(client).map(|h| h.until)
    }

    /// [`Hub::throttle`], and whether the wait is for the rate the
    /// connections of the client's address share only (the client's own
    /// rate would let it go sooner). While it is, the reader may read on
    /// and hand the hub at once the frames that cost nothing
    /// ([`Hub::is_free`]); the first that costs waits until the hold's end.
    #[must_use]
    pub fn hold(&mut self, client: ClientId) -> Option<Hold> {
        let own = self.conns.get(&client)?.bucket.ready_at(&self.limits);
        let shared = self.address_ready_at(client);
        let held = match (own, shared) {
            (_, None) => own.map(|t| (t, false)),
            (None, Some(s)) => Some((s, true)),
            (Some(o), Some(s)) => Some((o.max(s), s > o)),
        };
        if let Some(c) = self.conns.get_mut(&client) {
            c.bucket.held = held;
        }
        held.map(|(until, address_only)| Hold {
            until,
            address_only,
        })
    }

    /// When the address of `client` is out of debt, if it is in debt.
    fn address_ready_at(&self, client: ClientId) -> Option<Instant> {
        if !address_capped(&self.limits) {
            return None;
        }
        let bucket = self.address_buckets.get(&self.address_of(client)?)?;
        out_of_debt_at(bucket, &address_rates(&self.limits))
    }

    /// Charges what a request of `client` turned out to cost beyond what
    /// it `paid`, to it and to its address (see [`TokenBucket::charge`]).
    pub(super) fn charge_extra(&mut self, client: ClientId, cost: Cost, paid: Cost) {
        let Some(c) = self.conns.get_mut(&client) else {
            return;
        };
        let extra = cost.beyond(paid);
        let now = self.clock;
        c.bucket.charge(&self.limits, extra, now);
        self.charge_address(client, extra, now);
    }

    /// Charges `cost` to the rate `client`'s address shares.
    pub(super) fn charge_address(&mut self, client: ClientId, cost: Cost, now: Instant) {
        if !address_capped(&self.limits) {
            return;
        }
        let Some(ip) = self.address_of(client) else {
            return;
        };
        let rates = address_rates(&self.limits);
        if let Some(bucket) = self.address_buckets.get_mut(&ip) {
            bucket.refill(&rates, now);
            bucket.charge(cost.messages, cost.bytes);
        }
    }

    /// Charges `cost` to the client. Returns true when the client has been
    /// over its rate for longer than allowed and was disconnected.
    pub(super) fn rate(&mut self, client: ClientId, cost: Cost, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&client) else {
            return false;
        };
        if c.bucket.take(&self.limits, cost, now) == Take::Allowed {
            self.charge_address(client, cost, now);
            return false;
        }
        if let (Some(since), Some(ip)) = (c.bucket.flooding_since, self.address_of(client)) {
            for (id, other) in &mut self.conns {
                if *id != client && other.peer.map(address_key) == Some(ip) {
                    other.bucket.flood_cut_before(since, now);
                }
            }
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
