//! Several servers as one chat, through Redis (`--redis URL`).
//!
//! What is in Redis (every key under `imchat:`):
//!
//! - `imchat:bus`: one stream that every server appends its users' joins,
//!   leaves and chat messages to (`XADD ... MAXLEN ~ BUS_MAXLEN`) and reads
//!   the others' from (`XREAD BLOCK`). Each entry carries its server's id
//!   and that server's sequence number: a receiver drops what it has seen
//!   (a publish retried after a lost reply), so each entry is applied once,
//!   in each sender's order.
//! - `imchat:srv:<id>`: a server's heartbeat, set with a lease
//!   (`--cluster-lease-secs`) and renewed every third of it. When it is
//!   gone the server is taken for dead and its users are announced as left.
//! - `imchat:users:<id>`: a hash of a server's users (name key → name),
//!   read by a server that (re)joins the cluster to learn who is online;
//!   `imchat:away:<id>`, those of them away (name key → since, Unix ms);
//!   `imchat:servers`, the set of server ids that may have users.
//! - `imchat:name:<key>`: the claim on a name (its canonical key, the same
//!   the hub compares names by), with the id of the server that holds it,
//!   set only if absent (a Lua script: atomic) and with the same lease.
//! - `imchat:sess:<key>` and `imchat:epoch`: resumable sessions and the
//!   cluster's epoch, so that a session resumes on any server (see
//!   [`sessions`]); the stream is also the room's history.
//! - `imchat:open`: the time (Redis's clock, in ms) from which new names
//!   may be claimed, set by the first server to find none ([`OPEN`]): a
//!   Redis that is new, or lost its data, holds new names for half a lease,
//!   so that the servers still running claim their users' names back
//!   first (each does at its next lease round, a third of a lease at most).
//!
//! The hub decides everything: what a local user does that others must
//! see comes out of it as [`ClusterEvent`]s, which go into a bounded local
//! queue ([`QUEUE_MAX`]) and from there to the stream; what other servers
//! published goes into it as `remote_*` inputs.

mod entry;
pub mod link;
mod sessions;

pub use sessions::{settle_for_resume, take_for_hello};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{
    ClientId, ClusterEvent, Hub, LeaveReason, MessageId, RefuseCode, RemoteOrigin, TransferControl,
    TransferId, Username,
};
use link::Connection;
use log::{info, warn};
use redis::{Script, Value};
use rustls::pki_types::pem::PemObject;

pub mod transfer;

/// The stream every server publishes to.
const BUS: &str = "imchat:bus";
/// Entries the stream keeps (about: `MAXLEN ~`). A server that falls
/// further behind than this loses entries, and says so in its log.
pub const BUS_MAXLEN: usize = 100_000;
/// Events waiting for Redis on one server. Past it (Redis unreachable for
/// long, with a busy room), newer events are dropped and counted in the log.
pub const QUEUE_MAX: usize = 100_000;
/// Bytes of the events waiting for Redis on one server (what
/// [`weight`] says of each): past it, as past [`QUEUE_MAX`], newer events
/// are dropped and counted in the log.
pub const QUEUE_BYTES: usize = 256 * 1024 * 1024;
/// Events published in one round trip.
const BATCH: usize = 512;
/// Entries read in one round trip: each holds at most a round trip's
/// events ([`BATCH_BYTES`], or one message past it), so with the default
/// limits a reply holds at most about 16 MiB, however far behind the
/// reader is.
const READ_COUNT: usize = 16;
/// Bytes of the events published in one round trip (at least one event):
/// one entry, and one command Redis runs, stay small.
const BATCH_BYTES: usize = 1024 * 1024;
/// What a server publishes between two looks at the stream's memory in
/// Redis: a sixteenth of the budget.
const STREAM_CHECKS: u64 = 16;
/// How long a Redis command may take before Redis counts as unreachable.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a name claim waits for the server's first join of the cluster
/// (it reads what it missed first, a third of the lease at most): a user
/// who connects to a server that just started is let in, not told to try
/// again. A Redis that cannot be reached ends the wait at once (refused
/// connection) or after [`IO_TIMEOUT`] per command (no answer).
const FIRST_JOIN_WAIT: Duration = Duration::from_secs(5);
/// How long a server whose connection to Redis broke keeps trying a new
/// one before it says Redis is unreachable: a Redis that restarts in that
/// time (and refuses connections meanwhile) is not reported.
const RESTART_WAIT: Duration = Duration::from_millis(1500);
/// How long a claim waits while new names are held (see [`OPEN`]): past
/// it (a lease over 12 s) the join is refused as "try again", before the
/// handshake's own timeout (10 s by default) would end it.
const HOLD_WAIT: Duration = Duration::from_secs(6);

/// Claims `KEYS[1]` for server `ARGV[1]` with a lease of `ARGV[2]` ms:
/// 1 claimed now, 2 already this server's (lease renewed), 0 another's
/// (or the name of a session of another server, `KEYS[2]`, that may still
/// be resumed: its server died with it, and its grace period runs). With
/// `ARGV[3]` (not empty), a held name's session (if this server's) is
/// renewed for that many ms.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  local s = redis.call('HGET', KEYS[2], 's')
  if s and s ~= ARGV[1] then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if ARGV[3] and ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 's') == ARGV[1] then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  return 2
end
return 0
";

/// The key of the time from which new names may be claimed.
const OPEN_KEY: &str = "imchat:open";

/// Lua: `open`, the time (ms, Redis's clock) from which new names may be
/// claimed (the last key, [`OPEN_KEY`]), set to the last argument's ms
/// from `now` if there is none.
const OPEN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open = tonumber(redis.call('GET', KEYS[#KEYS]))
if not open then
  open = now + tonumber(ARGV[#ARGV])
  redis.call('SET', KEYS[#KEYS], string.format('%d', open))
end
";

/// After [`OPEN`]: [`CLAIM`] for a new user, which waits (`-ms` left)
/// while new names are held, if the name is free.
const CLAIM_NEW: &str = r"
if now < open and not redis.call('GET', KEYS[1]) then
  return now - open
end
";

/// Frees `KEYS[1]` if server `ARGV[1]` holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Takes server `ARGV[1]` out of `imchat:servers` if its heartbeat is
/// still gone: a server back from a cut writes its heartbeat before it
/// adds itself to the set again (`keep`, then `rejoin`), so a check that
/// found it dead a moment before cannot take it out after its return
/// (servers that join later learn who is on the cluster from the set).
const FORGET_SERVER: &str = r"
if redis.call('EXISTS', 'imchat:srv:' .. ARGV[1]) == 0 then
  return redis.call('SREM', 'imchat:servers', ARGV[1])
end
return 0
";

/// Takes server `s`, found dead, out of the cluster's list of servers
/// ([`FORGET_SERVER`]).
fn forget_server(con: &mut Connection, s: u64) -> redis::RedisResult<()> {
    Script::new(FORGET_SERVER).arg(s).invoke::<i64>(con)?;
    Ok(())
}

/// The answer to a name claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The name was free and is now this server's.
    New,
    /// This server held it already (a user of ours, or one resuming).
    Ours,
    /// Another server holds it.
    Taken,
    /// Redis could not be asked: no name can be claimed safely.
    Unreachable,
    /// New names are held longer than a claim waits (see [`OPEN`]).
    Held,
}

/// Calls into the hub, under the server's lock, dispatching what it
/// produced (the server's `with_hub`).
pub trait HubAccess: Send + Sync + 'static {
    /// Runs `f` on the hub.
    fn with(&self, f: &mut dyn FnMut(&mut Hub));
}

/// The cluster settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    /// What a `rediss://` connection trusts and shows.
    pub tls: RedisTls,
    /// The most of Redis's memory the stream may use, in bytes.
    pub stream_bytes: u64,
    pub lease: Duration,
    /// The grace period of a lost connection (how long its session is kept).
    pub grace: Duration,
}

/// Events waiting to be published, in the hub's order.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(u64, ClusterEvent)>,
    /// What the items weigh ([`weight`]).
    bytes: usize,
    /// The most they may weigh ([`QUEUE_BYTES`]).
    max_bytes: usize,
    next_seq: u64,
    dropped: u64,
    /// The publisher waits for events: an enqueue must wake it (a wake-up
    /// is a system call, not made while the publisher is busy anyway).
    waiting: bool,
    /// A batch is out of the queue, being published (by the publisher
    /// thread, or by `leave`): the next one waits for it, so that batches
    /// reach the stream in order.
    busy: bool,
    /// The highest number of a batch that went to Redis and came back
    /// unanswered: it may be in the stream, so its events keep their
    /// numbers (a receiver drops the copy of what it has).
    tried: u64,
}

impl Queue {
    /// Adds `event`, numbered, unless the queue is full (then it is
    /// dropped and counted).
    fn push(&mut self, event: ClusterEvent) {
        let w = weight(&event);
        if self.items.len() >= QUEUE_MAX || self.bytes + w > self.max_bytes {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(
                    "cluster queue full ({} events, {} MiB waiting for Redis): {} dropped so far",
                    self.items.len(),
                    self.bytes >> 20,
                    self.dropped
                );
            }
            return;
        }
        self.bytes += w;
        // A session's record does not go on the stream: it takes no number
        // of its own, or receivers would count it as an event lost.
        let seq = if matches!(event, ClusterEvent::Session { .. }) {
            self.next_seq - 1
        } else {
            self.next_seq += 1;
            self.next_seq - 1
        };
        self.items.push_back((seq, event));
    }

    /// Puts `first` (a rejoin's announcements) before what waits, drops
    /// the chat messages of the users whose name keys are in `silenced`
    /// (their names are another server's now: what they said while cut
    /// off must not appear under them), and numbers everything anew from
    /// where the waiting items began. None of that was published (a
    /// batch being published is not in the queue; its numbers are
    /// lower), but for a batch sent whose answer never came: it may be in
    /// the stream, so it stays first with its numbers (numbered anew, a
    /// copy in the stream would take the announcements' numbers, and
    /// receivers would drop the announcements as seen). The receivers
    /// that announced this server's users as left hold those users'
    /// messages in that batch until their joins (`Hub::remote_chat`).
    fn rejoin_first(&mut self, me: u64, first: Vec<ClusterEvent>, silenced: &[String]) {
        let tried = self
            .items
            .iter()
            .take_while(|(seq, _)| *seq <= self.tried)
            .count();
        let numbered = self
            .items
            .iter()
            .skip(tried)
            .filter(|(_, e)| !matches!(e, ClusterEvent::Session { .. }))
            .count() as u64;
        let waiting: Vec<ClusterEvent> = self.items.drain(tried..).map(|(_, e)| e).collect();
        self.next_seq -= numbered;
        let speaks_for_silenced = |e: &ClusterEvent| {
            matches!(e, ClusterEvent::Chat { from, .. }
                if silenced.contains(&crate::names::key(from)))
        };
        // Not sent again either, if the stream does not have them: their
        // numbers go out with an entry that says nothing ([`placeholder`]),
        // so that the receivers see no gap in the numbers (which they
        // would log and tell their users as messages lost) rather than a
        // message under a name that is someone else's now.
        for (_, e) in &mut self.items {
            if speaks_for_silenced(e) {
                *e = placeholder(me);
            }
        }
        self.bytes = self.items.iter().map(|(_, e)| weight(e)).sum();
        for e in first
            .into_iter()
            .chain(waiting.into_iter().filter(|e| !speaks_for_silenced(e)))
        {
            self.push(e);
        }
    }

    /// Puts back first a batch whose publishing failed, to be sent again
    /// with the same numbers: Redis may have taken it all the same.
    fn put_back(&mut self, batch: Vec<(u64, ClusterEvent)>) {
        if let Some((last, _)) = batch.last() {
            self.tried = self.tried.max(*last);
        }
        for item in batch.into_iter().rev() {
            self.bytes += weight(&item.1);
            self.items.push_front(item);
        }
    }

    /// Takes the next batch out of the queue (moved, not copied), for one
    /// publisher; [`Cluster::published`] ends it.
    fn take(&mut self) -> Vec<(u64, ClusterEvent)> {
        self.busy = true;
        let mut n = 0;
        let mut bytes = 0;
        for (_, event) in self.items.iter().take(BATCH) {
            let w = weight(event);
            if n > 0 && bytes + w > BATCH_BYTES {
                break;
            }
            bytes += w;
            n += 1;
        }
        self.bytes -= bytes;
        self.items.drain(..n).collect()
    }
}

/// An event that keeps the number of one withdrawn from the queue
/// (server `me`'s) and does nothing: a push's credit addressed to `me`
/// itself, which every other server passes over as another server's
/// control (counting its number) and `me` skips as its own. Any version
/// reads it so.
fn placeholder(me: u64) -> ClusterEvent {
    ClusterEvent::Transfer(TransferControl::Credit {
        to: me,
        relay: TransferId(0),
        offset: 0,
    })
}

/// What `event` weighs in the queue toward Redis and on the stream: its
/// texts and names, and a head's worth.
fn weight(event: &ClusterEvent) -> usize {
    const HEAD: usize = 128;
    HEAD + match event {
        ClusterEvent::Chat { text, .. }
        | ClusterEvent::Left { text, .. }
        | ClusterEvent::Kick { text, .. }
        | ClusterEvent::Undelivered { text, .. } => text.len(),
        ClusterEvent::Transfer(imchat_core::TransferControl::Offer { name, users, .. }) => {
            name.as_ref().len() + users.iter().map(|u| u.as_str().len() + 1).sum::<usize>()
        }
        ClusterEvent::Transfer(
            imchat_core::TransferControl::Gone { reason, .. }
            | imchat_core::TransferControl::Dropped { reason, .. },
        ) => reason.len(),
        _ => 0,
    }
}

/// One server's membership of the cluster.
pub struct Cluster {
    id: u64,
    client: link::Redis,
    lease: Duration,
    grace: Duration,
    /// The most of Redis's memory the stream may use ([`Settings::stream_bytes`]).
    stream_bytes: u64,
    /// The cluster's epoch (0 until joined).
    epoch: AtomicU64,
    /// The stream position (as a log id) the hub has been given everything up to.
    read_pos: AtomicU64,
    shown_url: String,
    /// The connection name claims are made on (from the connections' threads).
    claims: Mutex<Option<Connection>>,
    queue: Mutex<Queue>,
    queued: Condvar,
    up: AtomicBool,
    /// Set by [`leave`](Self::leave): the lease is no longer renewed.
    leaving: AtomicBool,
    /// Where the reader starts (set by the first join of the cluster).
    read_from: Mutex<Option<String>>,
    /// The stream position (as a log id) up to which the history this
    /// server was started on holds the stream already (0: none). The
    /// reader starts at the stream entry that holds it, whose events may
    /// not all have been kept.
    kept_to: AtomicU64,
    /// Name keys of users connected here whose name another server held
    /// at the last lease round: lost if it still does at the next. Their
    /// chat messages are not queued meanwhile.
    contested: Mutex<Vec<String>>,
    /// The names claimed for a `Hello` whose handshake goes on (an
    /// account's password being checked), with how many such handshakes
    /// each: not yet the hub's users, so the lease loop renews them here,
    /// lest a check slower than the lease let the claim run out.
    handshakes: Mutex<HashMap<String, usize>>,
    /// When the lease loop last completed a round: the publisher waits
    /// while that is a lease ago or more (a server that was frozen, or
    /// cut off, first rejoins and sorts its users out).
    kept: Mutex<Option<Instant>>,
    /// Pushes between servers (see [`transfer`]).
    transfers: transfer::Transfers,
    /// The server of the run before this one on the same `--history-db`,
    /// and the newest entry of its log that the file kept (see
    /// [`set_former`](Self::set_former)).
    former: Mutex<Option<(u64, MessageId)>>,
    /// Set once the reader has read the stream to its end (a read that
    /// came back short): what happened while this server was away has been
    /// applied, in the stream's order.
    caught_up: AtomicBool,
    /// Whether this server's first join found Redis without a cluster
    /// (its epoch unset): the first server, or a Redis that lost its data.
    joined_empty: AtomicBool,
    /// Set once the lease loop's first round ended, joined or not: until
    /// then a name claim waits for it (see [`Cluster::claim`]).
    tried: AtomicBool,
    /// Set while Redis answers but refuses this server's settings (its
    /// password, ACL user or database): waiting does not help, the
    /// operator must fix the URL or Redis (see [`refuses_settings`]).
    refused: AtomicBool,
    /// Until when no other server is taken for dead (see [`Cluster::keep`]).
    judge_after: Mutex<Option<Instant>>,
    /// The eviction policy of Redis last warned of (see [`eviction_said`]).
    eviction_warned: Mutex<Option<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

/// `url` with its password (if any) replaced by `***`, for logs.
#[must_use]
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL (`redis:/:pw@host`, `redis//:pw@host`): what comes
        // before the last `@` may still hold a password. Hidden from its
        // first `:` on, or all of it.
        return match url.rsplit_once('@') {
            Some((before, host)) => match before.split_once(':') {
                Some((lead, _)) => format!("{lead}:***@{host}"),
                None => format!("***@{host}"),
            },
            None => url.to_string(),
        };
    };
    // A password that is not percent-encoded may hold any character, `/`
    // and `@` included: what comes before the last `@` is hidden from the
    // first `:` on (which may hide more than the password, never less).
    let shown = match rest.rsplit_once('@') {
        // A user name alone is hidden too: most often it is a password
        // written without its `:` (`redis://s3cret@host`).
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        // No `@`: `redis://:pw` names no host, but its "port" may be a
        // password all the same. A port of digits is shown.
        None => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            // An IPv6 host is in brackets: its port comes after them. One
            // whose `]` is missing (`redis://[::1`) holds nothing that
            // could be a secret if it is all an address's characters.
            let host_port = match authority.find(']') {
                Some(i) if authority.starts_with('[') => {
                    let (host, after) = authority.split_at(i + 1);
                    after.strip_prefix(':').map(|port| (host, port))
                }
                None if authority.strip_prefix('[').is_some_and(|a| {
                    a.bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                }) =>
                {
                    None
                }
                _ => authority.split_once(':'),
            };
            match host_port {
                Some((host, port)) if !port.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{scheme}://{host}:***{tail}")
                }
                _ => url.to_string(),
            }
        }
    };
    hide_query_passwords(&shown)
}

/// `url` with the values of its `password=` (or `pass=`, `pwd=`) query
/// parameters replaced by `***`.
fn hide_query_passwords(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let (query, fragment) = query
        .split_once('#')
        .map_or((query, None), |(q, f)| (q, Some(f)));
    let parts: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, _))
                if ["password", "pass", "pwd"]
                    .iter()
                    .any(|p| name.eq_ignore_ascii_case(p)) =>
            {
                format!("{name}=***")
            }
            _ => part.to_string(),
        })
        .collect();
    let mut shown = format!("{base}?{}", parts.join("&"));
    if let Some(f) = fragment {
        shown.push('#');
        shown.push_str(f);
    }
    shown
}

/// A Redis error in words for the log (the crate's text ends in its
/// error kind's debug name, and a timeout is an OS error number).
pub(crate) fn said(e: &redis::RedisError) -> String {
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        && e.detail() == Some(link::NO_PASSWORD_SET)
    {
        "Redis has no password set, but the URL gives one: leave it out of the URL (redis://HOST:PORT), or set Redis's requirepass".into()
    } else if let Some(found) = too_old(e) {
        let (major, minor) = link::NEEDED;
        format!("Redis {found} is too old: the cluster needs Redis {major}.{minor} or newer")
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed
        && e.detail() == Some(link::NO_SUCH_USER_OR_PASSWORD)
    {
        "Redis refused the user name and password in the URL: wrong user name or password (or the user is disabled)".into()
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
        "Redis refused the password in the URL".into()
    } else if e.code() == Some("NOAUTH") {
        "Redis requires a password: put it in the URL (redis://:PASSWORD@HOST:PORT)".into()
    } else if no_such_database(e) {
        format!("Redis has no database of the number the URL ends in: {DATABASES}")
    } else if e.kind() == redis::ErrorKind::Client && e.to_string().starts_with(link::NO_TLS) {
        "the TLS handshake with Redis failed or timed out: is TLS enabled on that Redis? use redis:// for a plaintext one".into()
    } else if e.is_timeout() {
        "Redis did not answer in time".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if let Some(said) = certificate_said(e) {
        said
    } else if let Some(said) = refusal_said(e) {
        said
    } else {
        // The crate's own errors read "what - Kind: detail", the kind by
        // its Debug name: the words are kept, the name is not.
        e.to_string().replacen(&format!(" - {:?}", e.kind()), "", 1)
    }
}

/// Redis's eviction policy and a warning of it, from its `INFO memory`,
/// when Redis has a `maxmemory` and, once there, deletes keys of its
/// choice (any policy but `noeviction`, Redis's default; managed Redis
/// services often default to `volatile-lru`) instead of refusing writes:
/// the cluster's keys with it (name claims, heartbeats and sessions have
/// a lease, so `volatile-*` picks among them first; accounts, bans, the
/// stream). A tested Redis with `allkeys-lru` deleted the accounts and the
/// key that tells whether it lost its data.
fn eviction_said(info: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let policy = field("maxmemory_policy")?;
    let max: u64 = field("maxmemory")?.parse().ok()?;
    if policy == "noeviction" || max == 0 {
        return None;
    }
    Some((
        policy.to_string(),
        format!(
            "its maxmemory-policy is {policy}: once full (maxmemory {max} bytes) it deletes keys of its choice, the cluster's too (name claims, heartbeats, sessions, registrations, bans, the stream), instead of refusing writes; set maxmemory-policy noeviction"
        ),
    ))
}

/// A command Redis refused by an error code of its own, in words: a full
/// Redis, a replica, a snapshot it cannot save, an ACL; any other code as
/// Redis gave it. `None` for an error of another kind. (The crate shows
/// them as `"OOM": command not allowed…` or `NoPerm: …`.)
fn refusal_said(e: &redis::RedisError) -> Option<String> {
    let detail = e.detail().unwrap_or_default().trim_end_matches('.');
    let said = match e.code()? {
        "OOM" => "Redis is out of memory (over its maxmemory): it refuses the servers' writes until memory is freed or its maxmemory raised".into(),
        "READONLY" => "Redis is a read-only replica: give the URL of its primary".into(),
        "MISCONF" => "Redis refuses writes: it cannot save its snapshot to disk (see Redis's log)".into(),
        "NOPERM" => format!("Redis's ACL refuses the URL's user: {detail}"),
        code if e.kind() == redis::ErrorKind::Extension => format!("Redis answered {code}: {detail}"),
        _ => return None,
    };
    Some(said)
}

/// Redis's TLS certificate refused, in words (rustls says some faults as
/// debug dumps: `invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`);
/// `None` for an error of another kind.
fn certificate_said(e: &redis::RedisError) -> Option<String> {
    let tls = tls_error(e)?;
    let rustls::Error::InvalidCertificate(fault) = tls else {
        return None;
    };
    // webpki's errors show as their names. A self-signed certificate
    // made by `openssl req -x509` says it is a CA unless told otherwise,
    // and webpki takes no CA for a server's certificate, even one given
    // as trusted: the redis crate lets no other verifier be used.
    if matches!(fault, rustls::CertificateError::Other(o) if o.to_string() == "CaUsedAsEndEntity") {
        return Some(
            "Redis's certificate is a CA certificate, not a server's: make a self-signed one with `-addext basicConstraints=critical,CA:FALSE` (see CLUSTER.md), or give --redis-ca the CA that signed it".into(),
        );
    }
    Some(format!(
        "Redis's certificate is not trusted: {}",
        imchat_core::blocking::tls::certificate_fault(tls)
    ))
}

/// Whether `e` is a TLS handshake that broke off for another reason than
/// Redis's certificate (a reply that is no TLS, say).
pub(crate) fn handshake_broke(e: &redis::RedisError) -> bool {
    tls_error(e).is_some_and(|tls| !matches!(tls, rustls::Error::InvalidCertificate(_)))
}

/// The TLS error under `e` (the crate keeps the IO error it came in, as a
/// shared `dyn Error`), if any.
pub(crate) fn tls_error(e: &redis::RedisError) -> Option<&rustls::Error> {
    fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(shared) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            return find(&**shared);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            return find(inner);
        }
        e.source().and_then(find)
    }
    find(std::error::Error::source(e)?)
}

/// Whether `e` is Redis refusing this server's settings (a wrong or
/// missing password, an ACL user without the rights it needs, a database
/// it does not have) rather than Redis being down or slow.
pub(crate) fn refuses_settings(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || no_such_database(e)
        || too_old(e).is_some()
}

/// The version of a Redis [`link::Redis::connect`] found too old.
fn too_old(e: &redis::RedisError) -> Option<&str> {
    if e.kind() == redis::ErrorKind::Client && e.to_string().starts_with(link::TOO_OLD) {
        e.detail()
    } else {
        None
    }
}

/// What a URL's database number must be, for the errors.
const DATABASES: &str = "it must be below Redis's `databases` setting (16 by default: 0 to 15)";

/// [`said`], for an error of (connecting to and) using `redis`: a database
/// Redis does not have is named by its number.
pub(crate) fn said_to(redis: &link::Redis, e: &redis::RedisError) -> String {
    if no_such_database(e) {
        let db = redis.db();
        format!("Redis has no database {db} (the number the URL ends in): {DATABASES}")
    } else {
        said(e)
    }
}

/// Why Redis could not be used, after "Redis" (or "Redis at URL"): it
/// "refused the connection" when it refused this server's settings (it was
/// reached: see [`refuses_settings`]), else it "is unreachable".
pub(crate) fn failure_said(redis: &link::Redis, e: &redis::RedisError) -> String {
    let what = if refuses_settings(e) {
        "refused the connection"
    } else {
        "is unreachable"
    };
    format!("{what}: {}", said_to(redis, e))
}

/// Whether Redis refused the `SELECT` of the URL's database number.
fn no_such_database(e: &redis::RedisError) -> bool {
    e.detail()
        .is_some_and(|d| d.contains("DB index is out of range"))
        || e.to_string().contains("refused to switch database")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection to a `rediss://` Redis trusts and shows of itself,
/// beside the web PKI roots and nothing (the defaults).
#[derive(Clone, Default)]
pub struct RedisTls {
    /// CA certificates (PEM) Redis's certificate must chain to, instead of
    /// the web PKI roots: for a Redis with a certificate of the operators'
    /// own CA, or a self-signed one.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key (PEM), for a Redis
    /// that asks its clients for one (`tls-auth-clients`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never shown.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// What is wrong with a PEM file, in words that show nothing of it: the
/// PEM parser's own messages quote the file (a key whose line breaks were
/// lost comes back whole in "missing section end marker").
fn pem_problem(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no END line (were its line breaks lost?)",
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        Error::Base64Decode(_) => "a section is not valid base64",
        Error::NoItemsFound => "it holds nothing of the kind wanted",
        Error::SectionTooLarge => "a section is too large",
        _ => "it cannot be read as PEM",
    }
}

/// The PEM certificates of `pem` (from the file of option `option`, for
/// the errors): at least one.
fn pem_certificates(pem: &[u8], option: &str) -> Result<(), String> {
    // The redis crate takes a file without a certificate as an empty list:
    // every connection would fail, and say less about why.
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {option}: {}", pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(format!("{option} holds no PEM certificate"));
    }
    Ok(())
}

/// Checks the arguments of a cluster as written, before any file is read
/// or anything connected: `url` is a Redis URL, and a CA (`ca`) or a
/// client certificate (`cert`) is given only with a `rediss://` one.
///
/// # Errors
///
/// What is wrong, in one line (the URL shown without its password).
pub fn check_url(url: &str, ca: bool, cert: bool) -> Result<(), String> {
    url_info(url, ca, cert).map(|_| ())
}

fn invalid_url(url: &str) -> String {
    format!(
        "invalid Redis URL '{}': expected redis://[USER][:PASSWORD@]HOST[:PORT][/DB], rediss://… or unix:///PATH[?pass=PASSWORD&db=DB] (percent-encode special characters in the password)",
        redacted(url)
    )
}

/// What is wrong with the port of `url`, if it is out of range (the URL
/// parser says only that the URL is invalid) or 0 (nothing listens
/// there). A port that is not a number is left to [`invalid_url`]: it may
/// be a password without its `@`, and is not shown.
fn bad_port(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.rfind(']') {
        Some(i) => host_port[i + 1..].strip_prefix(':')?,
        None => host_port.rsplit_once(':')?.1,
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let shown = port.trim_start_matches('0');
    match port.parse::<u16>() {
        Ok(0) => Some(format!(
            "invalid Redis URL '{}': port 0 is no port to connect to (Redis listens on 6379 unless told otherwise)",
            redacted(url)
        )),
        Ok(_) => None,
        Err(_) => Some(format!(
            "invalid Redis URL '{}': port {shown} is out of range (1 to 65535)",
            redacted(url)
        )),
    }
}

/// `url` read as a Redis URL, checked as [`check_url`] says.
fn url_info(url: &str, ca: bool, cert: bool) -> Result<redis::ConnectionInfo, String> {
    use redis::IntoConnectionInfo as _;
    let info = url
        .into_connection_info()
        .map_err(|_| bad_port(url).unwrap_or_else(|| invalid_url(url)))?;
    if let Some(bad) = bad_port(url) {
        return Err(bad);
    }
    let info = query_database(url, info)?;
    // The crate reads `/-1` as database -1: no Redis has it, and the
    // server would start, to run alone for ever.
    if info.redis_settings().db() < 0 {
        return Err(format!(
            "invalid Redis URL '{}': its database cannot be negative (Redis has 16 unless its `databases` setting says more: 0 to 15)",
            redacted(url)
        ));
    }
    if (ca || cert) && !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        let option = if ca {
            "a CA for Redis (--redis-ca)"
        } else {
            "a client certificate for Redis (--redis-cert)"
        };
        return Err(format!(
            "{option} needs a rediss:// URL, not '{}'",
            redacted(url)
        ));
    }
    Ok(info)
}

/// `info` with the database of `url`'s `db=` query parameter, if it has
/// one: the crate reads it in a `unix://` URL only, and took
/// `redis://HOST/?db=3` as database 0, so that servers given it and
/// `redis://HOST/3` were in two clusters of one Redis, neither told.
/// A URL that names two different databases is refused.
fn query_database(url: &str, info: redis::ConnectionInfo) -> Result<redis::ConnectionInfo, String> {
    if matches!(info.addr(), redis::ConnectionAddr::Unix(_)) {
        return Ok(info);
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(info);
    };
    let mut asked = parsed
        .query_pairs()
        .filter(|(name, _)| name == "db")
        .map(|(_, value)| value.parse::<i64>());
    let Some(db) = asked.next() else {
        return Ok(info);
    };
    let bad = |why: &str| format!("invalid Redis URL '{}': {why}", redacted(url));
    let Ok(db) = db else {
        return Err(bad("its db= is not a database number"));
    };
    if asked.any(|other| other != Ok(db)) {
        return Err(bad("it names two databases"));
    }
    let path = info.redis_settings().db();
    if !parsed.path().trim_matches('/').is_empty() && path != db {
        return Err(bad(&format!(
            "it names two databases ({path} in its path, {db} in its db=)"
        )));
    }
    let settings = info.redis_settings().clone().set_db(db);
    Ok(info.set_redis_settings(settings))
}

/// A client of the Redis at `url` (nothing is connected yet), with `tls`
/// for a `rediss://` one.
///
/// # Errors
///
/// The URL is not a Redis URL, `tls` has something for one without TLS,
/// or its certificates or key cannot be read (the text shows the URL
/// without its password, and nothing of the key).
pub fn client(url: &str, tls: &RedisTls) -> Result<link::Redis, String> {
    let info = url_info(url, tls.ca.is_some(), tls.identity.is_some())?;
    let db = info.redis_settings().db();
    let user = info.redis_settings().username().is_some();
    let (info, auth) = quiet_handshake(info);
    let client = redis::Client::open(info.clone()).map_err(|_| invalid_url(url))?;
    if tls.ca.is_none() && tls.identity.is_none() {
        return Ok(link::Redis::new(client, db, auth, user));
    }
    if let Some(ca) = &tls.ca {
        pem_certificates(ca, "the CA for Redis (--redis-ca)")?;
    }
    let client_tls = match &tls.identity {
        Some((cert, key)) => {
            pem_certificates(cert, "the client certificate for Redis (--redis-cert)")?;
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                format!(
                    "cannot read the private key for Redis (--redis-key): {}",
                    pem_problem(&e)
                )
            })?;
            Some(redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            })
        }
        None => None,
    };
    let client = redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert: tls.ca.clone(),
        },
    )
    .map_err(|e| format!("cannot use the TLS settings for Redis: {e}"))?;
    Ok(link::Redis::new(client, db, auth, user))
}

/// `info` without the library's name sent on each new connection
/// (`CLIENT SETINFO`) and without the database (selected afterwards, by
/// [`link::Redis::connect`]): the client crate reads each reply of its
/// handshake with the whole connect timeout, so a connection to a Redis
/// that does not answer (frozen, a network that drops) took a timeout per
/// reply to fail, and the failure of the lease round that tells users of
/// an outage came only once Redis answered again, with "reachable again"
/// just after it. Without them the handshake is at most one `AUTH`.
///
/// In RESP2 (the default), that `AUTH` is taken out too, and given back
/// to be sent as a request of its own: the crate's handshake keeps only
/// that authentication failed, not Redis's answer, which tells a wrong
/// password from a Redis that has none set (that took a second
/// connection, at every failed connect). RESP3's handshake (`HELLO`)
/// keeps Redis's answer, and authenticates as it opens.
fn quiet_handshake(info: redis::ConnectionInfo) -> (redis::ConnectionInfo, Option<link::Auth>) {
    let given = info.redis_settings();
    let protocol = given.protocol();
    if protocol.supports_resp3() {
        let settings = given.clone().set_skip_set_lib_name().set_db(0);
        return (info.set_redis_settings(settings), None);
    }
    let auth = given.password().map(|password| link::Auth {
        user: given.username().map(str::to_string),
        password: password.to_string(),
    });
    let settings = redis::RedisConnectionInfo::default()
        .set_skip_set_lib_name()
        .set_protocol(protocol)
        .set_db(0);
    (info.set_redis_settings(settings), auth)
}

pub(crate) fn name_key(key: &str) -> String {
    format!("imchat:name:{key}")
}

impl Cluster {
    /// Checks the URL (nothing is connected yet: a server starts even when
    /// Redis is down, and joins the cluster once it is up).
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let shown_url = redacted(&settings.url);
        let client = client(&settings.url, &settings.tls)?;
        let mut id_bytes = [0u8; 8];
        getrandom::fill(&mut id_bytes).map_err(|e| format!("no random server id: {e}"))?;
        // Ids stay below 2^53 so that any tool reading the stream sees them exactly.
        let id = (u64::from_le_bytes(id_bytes) >> 11).max(1);
        Ok(Cluster {
            id,
            client,
            lease: settings.lease,
            grace: settings.grace,
            stream_bytes: settings.stream_bytes.max(1),
            epoch: AtomicU64::new(0),
            read_pos: AtomicU64::new(0),
            shown_url,
            claims: Mutex::new(None),
            queue: Mutex::new(Queue {
                max_bytes: QUEUE_BYTES,
                next_seq: 1,
                ..Queue::default()
            }),
            queued: Condvar::new(),
            up: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            read_from: Mutex::new(None),
            kept_to: AtomicU64::new(0),
            contested: Mutex::new(Vec::new()),
            handshakes: Mutex::new(HashMap::new()),
            kept: Mutex::new(None),
            transfers: transfer::Transfers::default(),
            former: Mutex::new(None),
            caught_up: AtomicBool::new(false),
            joined_empty: AtomicBool::new(false),
            tried: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            judge_after: Mutex::new(None),
            eviction_warned: Mutex::new(None),
        })
    }

    /// This server's id in the cluster.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The lease of this server's heartbeat and names.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// This server was started on the `--history-db` of server `server`,
    /// an earlier run that may have been killed: the stream's entries of
    /// `server` up to `kept`, the newest entry the file kept, are in this
    /// server's log already and are read as its own; the sessions the file
    /// kept are taken back from `server` at the first join, token checked
    /// (see [`ADOPT`]). Call it before [`start`](Self::start).
    pub fn set_former(&self, server: u64, kept: MessageId) {
        *lock(&self.former) = Some((server, kept));
    }

    /// The Redis URL without its password.
    #[must_use]
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    fn connect(&self) -> redis::RedisResult<Connection> {
        self.client.connect(IO_TIMEOUT)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Claims the name of key `key` for this server (atomically: of
    /// servers racing for a name, one wins). Refused while Redis is
    /// unreachable; a claim made while the server first joins the cluster
    /// (just started, or restarted on its `--history-db`) waits for that
    /// join (at most [`FIRST_JOIN_WAIT`]) instead of being refused.
    ///
    /// A name that is free is not claimed while new names are held (see
    /// [`OPEN`]): the claim waits for the hold to end, [`HOLD_WAIT`] at
    /// most.
    ///
    /// A claim granted ([`Claim::New`], or [`Claim::Ours`]) is for a
    /// handshake, counted under the claims connection's lock until
    /// [`handshake_over`](Self::handshake_over): no other handshake's end
    /// releases the name in between.
    pub fn claim(&self, key: &str) -> Claim {
        if !self.up.load(Ordering::SeqCst) && !self.wait_first_join() {
            return Claim::Unreachable;
        }
        let script = Script::new(&format!("{OPEN}{CLAIM_NEW}{CLAIM}"));
        let deadline = Instant::now() + HOLD_WAIT.min(self.lease);
        loop {
            let answer = self.on_claims(|con| {
                let answer = script
                    .key(name_key(key))
                    .key(sessions::sess_key(key))
                    .key(OPEN_KEY)
                    .arg(self.id)
                    .arg(self.lease_ms())
                    .arg("")
                    .arg(self.hold_ms())
                    .invoke::<i64>(con)?;
                if answer == 1 || answer == 2 {
                    self.handshake_begun(key);
                }
                Ok(answer)
            });
            return match answer {
                Some(1) => Claim::New,
                Some(2) => Claim::Ours,
                Some(held) if held < 0 => {
                    let wait = Duration::from_millis(held.unsigned_abs());
                    if Instant::now() + wait > deadline {
                        return Claim::Held;
                    }
                    thread::sleep(wait.min(Duration::from_millis(100)));
                    continue;
                }
                Some(_) => Claim::Taken,
                None => Claim::Unreachable,
            };
        }
    }

    /// How long a Redis that is new, or lost its data, holds new names.
    fn hold_ms(&self) -> u64 {
        self.lease_ms() / 2
    }

    /// Waits while the lease loop's first round runs (at most
    /// [`FIRST_JOIN_WAIT`]); whether the server is in the cluster then.
    fn wait_first_join(&self) -> bool {
        let deadline = Instant::now() + FIRST_JOIN_WAIT;
        while !self.tried.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.up.load(Ordering::SeqCst)
    }

    /// Runs `f` on the connection kept for claims and take-overs, twice at
    /// most: the kept one may be to a Redis that restarted, so a failure
    /// is tried again on a fresh connection. `None` if Redis cannot be
    /// asked.
    fn on_claims<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let mut slot = lock(&self.claims);
        for _ in 0..2 {
            if slot.is_none() {
                *slot = self.connect().ok();
            }
            match f(slot.as_mut()?) {
                Ok(answer) => return Some(answer),
                Err(_) => *slot = None,
            }
        }
        None
    }

    /// Counts a handshake the name `key` was claimed for (newly, or this
    /// server's already), so that the lease loop renews the claim until
    /// [`handshake_over`](Self::handshake_over) ends it.
    fn handshake_begun(&self, key: &str) {
        *lock(&self.handshakes).entry(key.to_owned()).or_insert(0) += 1;
    }

    /// Ends a handshake the name `key` was claimed for (see
    /// [`claim_for_hello`]). The claim is released when this was the last
    /// handshake for the name and no user here holds it (`held`, asked
    /// then): else the lease loop renews it, as its user's. A user who
    /// joined with the name holds it, and so may another connection than
    /// this one, whose `Hello` found the name this server's already (it
    /// was claimed for this one) and joined first: releasing the claim
    /// then would free the name of a user here for another server.
    pub fn handshake_over(&self, key: &str, held: impl FnOnce() -> bool) {
        // Under the claims connection's lock, which a claim holds as it
        // counts its handshake: none comes between the count and the
        // release. (The hub's lock, taken by `held`, is never held while
        // this one is taken.)
        let mut slot = lock(&self.claims);
        let last = {
            let mut going = lock(&self.handshakes);
            match going.get_mut(key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    going.remove(key);
                    true
                }
            }
        };
        if last && !held() {
            self.release(&mut slot, key);
        }
    }

    /// Frees a name claimed for a user that did not join after all (best
    /// effort: else its lease runs out), on the claims connection `slot`.
    fn release(&self, slot: &mut Option<Connection>, key: &str) {
        if let Some(con) = slot.as_mut() {
            let done: redis::RedisResult<i64> = Script::new(RELEASE)
                .key(name_key(key))
                .arg(self.id)
                .invoke(con);
            if done.is_err() {
                *slot = None;
            }
        }
    }

    /// Queues an event from the hub for the other servers (called under
    /// the hub's lock: only a queue push).
    pub fn enqueue(&self, event: ClusterEvent) {
        self.enqueue_all(std::iter::once(event));
    }

    /// Queues events from the hub for the other servers, in order, under
    /// one lock of the queue (called under the hub's lock).
    pub fn enqueue_all(&self, events: impl Iterator<Item = ClusterEvent>) {
        let contested = lock(&self.contested).clone();
        let mut q = lock(&self.queue);
        for event in events {
            // A user whose name another server holds speaks for nobody.
            if !contested.is_empty() {
                if let ClusterEvent::Chat { from, .. } = &event {
                    if contested.contains(&crate::names::key(from)) {
                        continue;
                    }
                }
            }
            q.push(event);
        }
        if q.waiting && !q.items.is_empty() {
            self.queued.notify_one();
        }
    }

    /// [`Queue::rejoin_first`], and wakes the publisher.
    fn requeue(&self, first: Vec<ClusterEvent>, silenced: &[String]) {
        let mut q = lock(&self.queue);
        q.rejoin_first(self.id, first, silenced);
        if q.waiting && !q.items.is_empty() {
            self.queued.notify_one();
        }
    }

    /// Leaves the cluster at a graceful shutdown: `users` (this server's)
    /// are announced as left at once, after what was still queued, and this
    /// server's heartbeat, users and name claims are removed, so that the
    /// names are free at once (and a restarted server can take its resuming
    /// users back). Bounded in time: if Redis does not answer, the leases
    /// run out instead.
    pub fn leave(&self, users: Vec<Username>) {
        self.leaving.store(true, Ordering::SeqCst);
        if !self.up.load(Ordering::SeqCst) {
            return;
        }
        for user in &users {
            self.enqueue(ClusterEvent::Left {
                user: user.clone(),
                reason: LeaveReason::SHUTDOWN,
                text: String::new(),
                id: MessageId(0),
            });
        }
        let Ok(mut con) = self.connect() else {
            return;
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        // What is queued goes out in order, behind the batch the publisher
        // thread may hold (one publisher at a time: see `Queue::busy`).
        while Instant::now() < deadline {
            let batch = {
                let mut q = lock(&self.queue);
                if q.items.is_empty() && !q.busy {
                    break;
                }
                if q.busy {
                    drop(q);
                    thread::sleep(Duration::from_millis(2));
                    continue;
                }
                q.take()
            };
            let sent = self.publish(&mut con, &batch).is_ok();
            self.published(batch, sent);
            if !sent {
                break;
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(format!("imchat:srv:{}", self.id))
            .arg(format!("imchat:users:{}", self.id))
            .arg(away_key(self.id))
            .ignore()
            .cmd("SREM")
            .arg("imchat:servers")
            .arg(self.id)
            .ignore();
        for user in &users {
            self.let_go(&mut pipe, &crate::names::key(user));
        }
        if let Err(e) = pipe.query::<()>(&mut con) {
            warn!(
                "cluster: could not leave cleanly (the leases will run out): {}",
                said(&e)
            );
        } else {
            info!("cluster: left ({} users announced as gone)", users.len());
        }
    }

    /// Starts the publisher, reader and lease threads.
    pub fn start(self: &Arc<Self>, hub: Arc<dyn HubAccess>) -> std::io::Result<()> {
        self.set_transfer_hub(hub.clone());
        let c = self.clone();
        thread::Builder::new()
            .name("cluster-publish".into())
            .spawn(move || c.publish_loop())?;
        let c = self.clone();
        let h = hub.clone();
        thread::Builder::new()
            .name("cluster-read".into())
            .spawn(move || c.read_loop(&*h))?;
        let c = self.clone();
        thread::Builder::new()
            .name("cluster-lease".into())
            .spawn(move || c.lease_loop(&*hub))?;
        Ok(())
    }

    /// Publishes the queue in order, a batch per round trip, each batch in
    /// one transaction; a batch that fails stays queued and is sent again
    /// (receivers drop what they already had).
    fn publish_loop(&self) {
        let mut con: Option<Connection> = None;
        // Published since the stream's memory was last looked at.
        let mut unchecked: u64 = 0;
        let mut trim_logged: Option<Instant> = None;
        loop {
            if !self.may_publish() {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            if con.is_none() {
                con = self.connect().ok();
            }
            let Some(c) = con.as_mut() else {
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let batch = {
                let mut q = lock(&self.queue);
                // Checked again on waking: the server may have been frozen
                // while this thread waited (it rejoins first).
                while q.items.is_empty() || q.busy || !self.may_publish() {
                    q.waiting = true;
                    let wait = if self.may_publish() {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_millis(20)
                    };
                    q = self
                        .queued
                        .wait_timeout(q, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    q.waiting = false;
                }
                q.take()
            };
            let result = self.publish(c, &batch);
            if result.is_ok() {
                unchecked += batch.iter().map(|(_, e)| weight(e) as u64).sum::<u64>();
            }
            self.published(batch, result.is_ok());
            if unchecked >= self.stream_bytes / STREAM_CHECKS {
                unchecked = 0;
                self.keep_stream_in_budget(c, &mut trim_logged);
                if !redis::ConnectionLike::is_open(c) {
                    // Given up after a failed reply: a new one next time.
                    con = None;
                }
            }
            if let Err(e) = result {
                warn!("cannot publish to the cluster: {}", said(&e));
                con = None;
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// True while this server may publish: Redis answers, and the lease
    /// loop completed a round within the lease (a server that was frozen
    /// or cut off first rejoins: its users are announced before what they
    /// said meanwhile, and a name lost meanwhile is sorted out).
    fn may_publish(&self) -> bool {
        self.up.load(Ordering::SeqCst) && lock(&self.kept).is_some_and(|t| t.elapsed() < self.lease)
    }

    /// Trims the stream if it uses more of Redis's memory than its budget
    /// (`MEMORY USAGE`, sampled): a burst of long messages cannot grow
    /// Redis past it by more than what each server publishes between two
    /// looks (a sixteenth of it, and one batch). Logged at most once a
    /// minute (`logged`).
    fn keep_stream_in_budget(&self, con: &mut Connection, logged: &mut Option<Instant>) {
        let looked: redis::RedisResult<(Option<u64>, u64)> = redis::pipe()
            .cmd("MEMORY")
            .arg("USAGE")
            .arg(BUS)
            .arg("SAMPLES")
            .arg(16)
            .cmd("XLEN")
            .arg(BUS)
            .query(con);
        let (used, len) = match looked {
            Ok((Some(used), len)) => (used, len),
            Ok((None, _)) => return,
            Err(e) => {
                if once_a_minute(logged) {
                    warn!(
                        "cluster: cannot see the stream's memory in Redis: {}",
                        said(&e)
                    );
                }
                return;
            }
        };
        let Some(keep) = stream_keep(used, len, self.stream_bytes) else {
            return;
        };
        let trimmed = redis::cmd("XTRIM")
            .arg(BUS)
            .arg("MAXLEN")
            .arg("~")
            .arg(keep)
            .query::<u64>(con);
        if once_a_minute(logged) {
            match trimmed {
                Ok(n) => info!("cluster: {}", trim_said(used, self.stream_bytes, len, n)),
                Err(e) => warn!("cluster: cannot trim the stream: {}", said(&e)),
            }
        }
    }

    /// Ends the publishing of `batch` (taken with [`Queue::take`]): what
    /// was not `sent` goes back to the front of the queue, to be sent again.
    fn published(&self, batch: Vec<(u64, ClusterEvent)>, sent: bool) {
        let mut q = lock(&self.queue);
        if !sent {
            q.put_back(batch);
        }
        q.busy = false;
        if q.waiting {
            self.queued.notify_one();
        }
    }

    fn publish(
        &self,
        con: &mut Connection,
        batch: &[(u64, ClusterEvent)],
    ) -> redis::RedisResult<()> {
        match self.commands(batch) {
            Commands::One(xadd) => xadd.query::<()>(con),
            Commands::Transaction(pipe) => pipe.query::<()>(con),
        }
    }

    /// Adds to `pipe` what gives up the name key `key` of a user that
    /// left: this server's claim on the name, and its session record
    /// (each only if still this server's).
    fn let_go(&self, pipe: &mut redis::Pipeline, key: &str) {
        pipe.cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(name_key(key))
            .arg(self.id)
            .ignore();
        pipe.cmd("EVAL")
            .arg(sessions::FORGET)
            .arg(1)
            .arg(sessions::sess_key(key))
            .arg(self.id)
            .ignore();
    }

    /// What publishes `batch`: chat messages alone (a run of them under
    /// load, one at a time when the room is quiet) are one `XADD`, atomic
    /// by itself, and leave nothing else for Redis to keep (the users'
    /// hash is untouched and the lease loop renews its expiry); anything
    /// else is a transaction of every entry and what Redis keeps of the
    /// events beside it.
    fn commands(&self, batch: &[(u64, ClusterEvent)]) -> Commands {
        let mut head = String::new();
        let mut body = Vec::new();
        let run = chat_run(batch);
        if run == batch.len() && run > 1 {
            let mut xadd = bus_xadd();
            let chats = batch.iter().map(|(_, e)| e);
            entry::encode_chats(&mut xadd, self.id, batch[0].0, chats, &mut head, &mut body);
            return Commands::One(xadd);
        }
        if let [(seq, event @ ClusterEvent::Chat { .. })] = batch {
            let mut xadd = bus_xadd();
            if entry::encode(&mut xadd, self.id, *seq, event, &mut head) {
                return Commands::One(xadd);
            }
        }
        let users = format!("imchat:users:{}", self.id);
        let away = away_key(self.id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut i = 0;
        while i < batch.len() {
            // A run of chat messages goes in one entry.
            let run = chat_run(&batch[i..]);
            if run > 1 {
                let mut xadd = bus_xadd();
                let chats = batch[i..i + run].iter().map(|(_, e)| e);
                entry::encode_chats(&mut xadd, self.id, batch[i].0, chats, &mut head, &mut body);
                pipe.add_command(xadd).ignore();
                i += run;
                continue;
            }
            let (seq, event) = &batch[i];
            i += 1;
            // What else Redis keeps of the event, beside its entry.
            match event {
                ClusterEvent::Joined { user, .. } => {
                    pipe.cmd("HSET")
                        .arg(&users)
                        .arg(crate::names::key(user))
                        .arg(user.as_str())
                        .ignore();
                }
                ClusterEvent::Left { user, .. } => {
                    let key = crate::names::key(user);
                    pipe.cmd("HDEL").arg(&users).arg(&key).ignore();
                    pipe.cmd("HDEL").arg(&away).arg(&key).ignore();
                    self.let_go(&mut pipe, &key);
                }
                ClusterEvent::Session { user, token } => {
                    // Not for the stream: the session's record.
                    let key = sessions::sess_key(&crate::names::key(user));
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg("u")
                        .arg(user.as_str())
                        .arg("h")
                        .arg(sessions::token_hash(token))
                        .arg("s")
                        .arg(self.id)
                        .ignore()
                        // A new token: a kick of an earlier one is behind,
                        // and its client sees this server's ids now.
                        .cmd("HDEL")
                        .arg(&key)
                        .arg("k")
                        .arg("o")
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&key)
                        .arg(self.session_ms())
                        .ignore();
                }
                ClusterEvent::Moved { user, from } => {
                    let key = crate::names::key(user);
                    pipe.cmd("HDEL")
                        .arg(format!("imchat:users:{from}"))
                        .arg(&key)
                        .ignore();
                    pipe.cmd("HDEL").arg(away_key(*from)).arg(&key).ignore();
                    pipe.cmd("HSET")
                        .arg(&users)
                        .arg(&key)
                        .arg(user.as_str())
                        .ignore();
                }
                ClusterEvent::Kick { user, text } => {
                    // A session left by a dead server ends: no resume; a
                    // live server's may not move before it is carried out.
                    pipe.add_command(sessions::kick(user, text)).ignore();
                }
                ClusterEvent::Away { user, since } => {
                    // For a server that joins later: who is away, since when.
                    pipe.cmd("HSET")
                        .arg(&away)
                        .arg(crate::names::key(user))
                        .arg(since.0)
                        .ignore();
                }
                ClusterEvent::Back { user } => {
                    pipe.cmd("HDEL")
                        .arg(&away)
                        .arg(crate::names::key(user))
                        .ignore();
                }
                ClusterEvent::Chat { .. }
                | ClusterEvent::Transfer(_)
                | ClusterEvent::Undelivered { .. } => {}
            }
            let mut xadd = bus_xadd();
            if entry::encode(&mut xadd, self.id, *seq, event, &mut head) {
                pipe.add_command(xadd).ignore();
            }
        }
        pipe.cmd("PEXPIRE")
            .arg(&users)
            .arg(self.lease_ms())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&away)
            .arg(self.lease_ms())
            .ignore();
        Commands::Transaction(pipe)
    }

    /// Reads the other servers' events from the stream and gives them to
    /// the hub, each once and in its sender's order.
    fn read_loop(&self, hub: &dyn HubAccess) {
        let mut con: Option<Connection> = None;
        let mut seen = Seen::default();
        // Kept from one read to the next, so that a busy stream does not
        // grow them from nothing (and copy them as they grow) every time.
        let mut reads = Vec::new();
        let mut events = Vec::new();
        let mut ours = Vec::new();
        let mut from = loop {
            if let Some(id) = lock(&self.read_from).clone() {
                break id;
            }
            thread::sleep(Duration::from_millis(50));
        };
        loop {
            if con.is_none() {
                con = self.connect().ok();
                if let Some(c) = &con {
                    // XREAD BLOCK waits up to a second: allow for it.
                    let _ = c.set_read_timeout(Some(IO_TIMEOUT + Duration::from_secs(1)));
                }
            }
            let Some(c) = con.as_mut() else {
                thread::sleep(Duration::from_millis(200));
                continue;
            };
            let me = Me {
                id: self.id,
                former: *lock(&self.former),
                kept_to: MessageId(self.kept_to.load(Ordering::SeqCst)),
            };
            let mut xread = redis::cmd("XREAD");
            xread.arg("COUNT").arg(READ_COUNT);
            // Until it has read to the end once, a read that finds nothing
            // new says so at once: a quiet stream does not hold up the
            // server's first join (which waits for it) by a second.
            if self.caught_up.load(Ordering::SeqCst) {
                xread.arg("BLOCK").arg(1000);
            }
            let reply: redis::RedisResult<Value> =
                xread.arg("STREAMS").arg(BUS).arg(&from).query(c);
            let entries = match reply {
                Ok(r) => entry::read_reply(r),
                Err(_) => {
                    con = None;
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let short = entries.len() < READ_COUNT;
            let Some(last) = entries.last() else {
                self.caught_up.store(true, Ordering::SeqCst);
                continue;
            };
            let Ok(last) = String::from_utf8(last.0.clone()) else {
                continue;
            };
            let mut read = None;
            let mut lost = 0;
            for (id, fields) in entries {
                read = Remote::read(me, &id, fields, &mut reads).max(read);
                lost += seen.sort(&mut reads, &mut ours, &mut events);
            }
            from = last;
            let now = Instant::now();
            hub.with(&mut |hub| {
                for (id, position) in ours.drain(..) {
                    hub.note_published(id, position);
                }
                hub.remote_lost(lost);
                for e in events.drain(..) {
                    sessions::apply(e, hub, now);
                }
                // Local ids given from now on say what was read.
                if let Some(p) = read {
                    hub.advance_ids(p);
                }
            });
            // Applied, or dropped with the read: never carried to the next.
            ours.clear();
            events.clear();
            if let Some(p) = read {
                self.read_pos.store(p.0, Ordering::SeqCst);
            }
            if short {
                self.caught_up.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Waits (at most `bound`) until the reader has read the stream to its
    /// end once (see [`Cluster::caught_up`]); whether it has.
    pub(crate) fn wait_caught_up(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while !self.caught_up.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Keeps this server in the cluster: the heartbeat, the names'
    /// leases, the dead servers' users, and the join (or rejoin, after
    /// Redis was unreachable) of the cluster.
    fn lease_loop(&self, hub: &dyn HubAccess) {
        let period = (self.lease / 3).max(Duration::from_millis(100));
        let mut con: Option<Connection> = None;
        let mut outage = Outage::default();
        while !self.leaving.load(Ordering::SeqCst) {
            let started = Instant::now();
            let mut failed = None;
            let reused = con.is_some();
            if con.is_none() {
                match self.connect() {
                    Ok(c) => con = Some(c),
                    Err(e) => failed = Some(e),
                }
            }
            let mut result = match (con.as_mut(), failed) {
                (Some(c), _) => self.keep(c, hub),
                (None, Some(e)) => Err(e),
                (None, None) => Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot connect",
                ))),
            };
            if result.is_err() && reused {
                // A connection Redis dropped (it restarted): Redis is
                // unreachable only if new ones fail too, for a moment
                // (a restart refuses connections until it listens again).
                let until = Instant::now() + RESTART_WAIT;
                loop {
                    con = self.connect().ok();
                    if let Some(c) = con.as_mut() {
                        result = self.keep(c, hub);
                        break;
                    }
                    if Instant::now() >= until || self.leaving.load(Ordering::SeqCst) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
            match result {
                Ok(()) => {
                    *lock(&self.kept) = Some(Instant::now());
                    self.refused.store(false, Ordering::SeqCst);
                    let was_up = self.up.swap(true, Ordering::SeqCst);
                    let (back, tell) = outage.kept(was_up);
                    if back {
                        info!(
                            "cluster: joined through {} as server {:x}",
                            self.shown_url, self.id
                        );
                        hub.with(&mut |hub| hub.set_cut_off(false));
                    }
                    if tell {
                        hub.with(&mut |hub| hub.tell_cluster(true));
                    }
                }
                Err(e) => {
                    con = None;
                    self.refused.store(refuses_settings(&e), Ordering::SeqCst);
                    let was_up = self.up.swap(false, Ordering::SeqCst);
                    let (log, tell) = outage.failed(was_up);
                    if log {
                        warn!(
                            "cluster: Redis at {} {}",
                            self.shown_url,
                            failure_said(&self.client, &e)
                        );
                        hub.with(&mut |hub| hub.set_cut_off(true));
                    }
                    if tell {
                        hub.with(&mut |hub| hub.tell_cluster(false));
                    }
                }
            }
            self.tried.store(true, Ordering::SeqCst);
            thread::sleep(period.saturating_sub(started.elapsed()));
        }
    }

    /// Warns, once per policy, when Redis deletes keys of its choice when
    /// full ([`eviction_said`]). An `INFO` that Redis refuses (an ACL) says
    /// nothing.
    fn warn_of_eviction(&self, con: &mut Connection) {
        let Ok(info) = redis::cmd("INFO").arg("memory").query::<String>(con) else {
            return;
        };
        let Some((policy, said)) = eviction_said(&info) else {
            return;
        };
        let mut warned = lock(&self.eviction_warned);
        if warned.as_deref() != Some(policy.as_str()) {
            warn!("cluster: Redis at {}: {said}", self.shown_url);
            *warned = Some(policy);
        }
    }

    /// One round of [`lease_loop`](Self::lease_loop).
    fn keep(&self, con: &mut Connection, hub: &dyn HubAccess) -> redis::RedisResult<()> {
        let lease = self.lease_ms();
        let beat = format!("imchat:srv:{}", self.id);
        // The old value tells whether Redis still has this server's state.
        let old: Option<String> = redis::cmd("SET")
            .arg(&beat)
            .arg(1)
            .arg("PX")
            .arg(lease)
            .arg("GET")
            .query(con)?;
        let fresh = old.is_none() || !self.up.load(Ordering::SeqCst);
        let first = lock(&self.read_from).is_none();
        if first {
            let id = self.join_history(con, hub)?;
            *lock(&self.read_from) = Some(id);
        }
        if fresh {
            let adopted = self.adopt_former(con, hub, first)?;
            if adopted > 0 {
                info!(
                    "cluster: {adopted} session(s) kept in the history database taken back from server {:x} (this server's run before)",
                    lock(&self.former).map_or(0, |(s, _)| s)
                );
            }
        }
        if fresh {
            self.warn_of_eviction(con);
        }
        if fresh {
            // A Redis that is new, or lost its data, holds new names while
            // the servers still running claim theirs back.
            Script::new(OPEN)
                .key(OPEN_KEY)
                .arg(self.hold_ms())
                .invoke::<()>(con)?;
        }
        // The names claimed for handshakes that go on: read before the
        // users, so that one that ends now (and joins) is in either list.
        let going: Vec<String> = lock(&self.handshakes).keys().cloned().collect();
        for key in &going {
            Script::new(CLAIM)
                .key(name_key(key))
                .key(sessions::sess_key(key))
                .arg(self.id)
                .arg(lease)
                .arg("")
                .invoke::<i64>(con)?;
        }
        // The names of our users (joined or in their grace period).
        let mut local = Vec::new();
        let mut connected = Vec::new();
        hub.with(&mut |hub| {
            local = hub.local_users();
            connected = local
                .iter()
                .map(|(_, u)| hub.is_connected_here(u))
                .collect();
        });
        let mut lost = Vec::new();
        let was_contested = lock(&self.contested).clone();
        let mut contested = Vec::new();
        for ((key, user), connected) in local.iter().zip(connected) {
            let sess = sessions::sess_key(key);
            let held: i64 = Script::new(CLAIM)
                .key(name_key(key))
                .key(&sess)
                .arg(self.id)
                .arg(lease)
                .arg(self.session_ms())
                .invoke(con)?;
            if held == 0 {
                // A session resumed on another server is not lost: the
                // stream tells this one to let it go, without a leave.
                // But a user still connected here whose name another
                // server holds two rounds in a row (a move's stream entry
                // would have let it go by then) joined there afresh while
                // this one was away, and its session record is the
                // newcomer's now: the claim holder keeps the name.
                let on: Option<u64> = redis::cmd("HGET").arg(&sess).arg("s").query(con)?;
                if on.is_none_or(|s| s == self.id) || (connected && was_contested.contains(key)) {
                    lost.push(user.clone());
                } else if connected {
                    contested.push(key.clone());
                }
            }
        }
        // What the users who lost their name, or may have, said while this
        // server was away is not published under a name now another's.
        let mut silenced = contested.clone();
        silenced.extend(lost.iter().map(crate::names::key));
        *lock(&self.contested) = contested;
        if !silenced.is_empty() && !fresh {
            self.requeue(Vec::new(), &silenced);
        }
        if !lost.is_empty() {
            for u in &lost {
                warn!(
                    "cluster: the name '{}' was claimed on another server while this one was away: its user here is disconnected",
                    imchat_core::inert(u.as_str())
                );
            }
            hub.with(&mut |hub| {
                for u in &lost {
                    hub.drop_user(
                        u,
                        "the name was taken on another server while this one was cut off from the cluster",
                    );
                }
            });
            // Whoever holds each name now is listed here in its place.
            let mut holders = Vec::new();
            for u in &lost {
                let key = crate::names::key(u);
                let holder: Option<u64> = redis::cmd("GET").arg(name_key(&key)).query(con)?;
                let Some(holder) = holder.filter(|h| *h != self.id) else {
                    continue;
                };
                let name: Option<String> = redis::cmd("HGET")
                    .arg(format!("imchat:users:{holder}"))
                    .arg(&key)
                    .query(con)?;
                if let Some(name) = name.and_then(|n| Username::new(n).ok()) {
                    holders.push((holder, name));
                }
            }
            let now = Instant::now();
            hub.with(&mut |hub| {
                for (holder, name) in &holders {
                    hub.remote_join(*holder, name.clone(), now);
                }
            });
        }
        if fresh {
            // A Redis that lost its data gets the cluster's epoch back.
            let epoch = self.epoch();
            if epoch != 0 {
                redis::cmd("SET")
                    .arg(sessions::EPOCH)
                    .arg(epoch)
                    .arg("NX")
                    .query::<Value>(con)?;
            }
            // Not announced again: the users who lost their name, and
            // those whose name another server holds for now.
            self.rejoin(con, hub, &local, &silenced)?;
        } else {
            redis::pipe()
                .cmd("PEXPIRE")
                .arg(format!("imchat:users:{}", self.id))
                .arg(lease)
                .ignore()
                .cmd("PEXPIRE")
                .arg(away_key(self.id))
                .arg(lease)
                .ignore()
                .query::<()>(con)?;
        }
        // Servers whose heartbeat ran out: their users left. Not for a
        // lease after a round that found this server's own heartbeat gone:
        // Redis may have lost everyone's (restarted empty), and the others
        // write theirs again at their next round.
        if fresh && !first {
            *lock(&self.judge_after) = Some(Instant::now() + self.lease);
        }
        if lock(&self.judge_after).is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        // What the hub knew as the check began: a server found dead may be
        // back, its users announced again, before the verdict is given.
        let mut servers = Vec::new();
        let mut mark = None;
        hub.with(&mut |hub| {
            servers = hub.remote_servers();
            mark = Some(hub.heard_mark());
        });
        let Some(mark) = mark else {
            return Ok(());
        };
        let mut gone = Vec::new();
        for s in servers {
            let alive: bool = redis::cmd("EXISTS")
                .arg(format!("imchat:srv:{s}"))
                .query(con)?;
            if !alive {
                gone.push(s);
            }
        }
        if !gone.is_empty() {
            // Kicked while their server still looked alive: their sessions
            // end (the kick's own attempt may have come before the server's
            // heartbeat ran out) before anyone is told they left.
            let mut kicked = Vec::new();
            hub.with(&mut |hub| {
                for s in &gone {
                    kicked.extend(hub.kicked_users_of(*s));
                }
            });
            for user in kicked {
                sessions::forget_orphan(&user).query::<()>(con)?;
            }
            let now = Instant::now();
            let mut judged = Vec::new();
            hub.with(&mut |hub| {
                for s in &gone {
                    // Announced its users again since the check began: it
                    // is back (the next check sees its heartbeat), or the
                    // next check judges it again.
                    let Some(n) = hub.remote_server_gone_since(*s, mark, now) else {
                        info!(
                            "cluster: server {s:x} announced its users again as its lease was found run out: judged again at the next check"
                        );
                        continue;
                    };
                    judged.push(*s);
                    if n > 0 {
                        info!("{}", gone_server_line(*s, n));
                    }
                }
            });
            for s in &judged {
                forget_server(con, *s)?;
            }
        }
        Ok(())
    }

    /// (Re)joins the cluster: writes our users anew, announces them to the
    /// others (who ignore those they know), and learns the others' users.
    fn rejoin(
        &self,
        con: &mut Connection,
        hub: &dyn HubAccess,
        local: &[(String, Username)],
        silenced: &[String],
    ) -> redis::RedisResult<()> {
        let lost = |key: &String| silenced.contains(key);
        let users = format!("imchat:users:{}", self.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SADD")
            .arg("imchat:servers")
            .arg(self.id)
            .ignore()
            .cmd("DEL")
            .arg(&users)
            .arg(away_key(self.id))
            .ignore();
        for (key, user) in local {
            if !lost(key) {
                pipe.cmd("HSET")
                    .arg(&users)
                    .arg(key)
                    .arg(user.as_str())
                    .ignore();
            }
        }
        pipe.cmd("PEXPIRE")
            .arg(&users)
            .arg(self.lease_ms())
            .ignore();
        pipe.query::<()>(con)?;
        // A Redis that lost its data lost the sessions' records too: without
        // them no session of ours could resume on another server.
        let mut tokens = Vec::new();
        hub.with(&mut |hub| tokens = hub.local_session_tokens());
        for (user, token) in tokens.iter().filter(|(u, _)| !lost(&crate::names::key(u))) {
            sessions::restore(user, token, self.id, self.session_ms()).query::<()>(con)?;
        }
        // Announced before what was queued while away: the others see the
        // users join before they see them speak. Only those still here,
        // looked at under the hub's lock as its events are queued: a user
        // who left since `local` was read has its leave queued (or
        // published) already, and a join announced after it would list
        // it on the other servers for good.
        hub.with(&mut |hub| {
            let here: HashSet<String> = hub.local_users().into_iter().map(|(k, _)| k).collect();
            let mut joined: Vec<ClusterEvent> = local
                .iter()
                .filter(|(key, _)| !lost(key) && here.contains(key))
                .map(|(_, user)| ClusterEvent::Joined {
                    user: user.clone(),
                    id: MessageId(0),
                })
                .collect();
            // And who of them is away, since when.
            joined.extend(
                hub.local_away()
                    .into_iter()
                    .filter(|(u, _)| {
                        let key = crate::names::key(u);
                        !lost(&key) && here.contains(&key)
                    })
                    .map(|(user, since)| ClusterEvent::Away { user, since }),
            );
            self.requeue(joined, silenced);
        });
        // Who is on the other servers.
        let servers: Vec<u64> = redis::cmd("SMEMBERS").arg("imchat:servers").query(con)?;
        let mut found = Vec::new();
        let mut away_found = Vec::new();
        for s in servers.into_iter().filter(|s| *s != self.id) {
            let alive: bool = redis::cmd("EXISTS")
                .arg(format!("imchat:srv:{s}"))
                .query(con)?;
            if !alive {
                forget_server(con, s)?;
                continue;
            }
            let names: Vec<String> = redis::cmd("HVALS")
                .arg(format!("imchat:users:{s}"))
                .query(con)?;
            for n in names {
                if let Ok(u) = Username::new(n) {
                    found.push((s, u));
                }
            }
            let away: HashMap<String, String> =
                redis::cmd("HGETALL").arg(away_key(s)).query(con)?;
            for (key, ms) in away {
                if let Ok(ms) = ms.parse() {
                    away_found.push((s, key, imchat_core::Timestamp(ms)));
                }
            }
        }
        // After a start on a restored log the reader reads on from where
        // it stopped: who came and went meanwhile, and what they said, is
        // told from the stream in its order. What is left to say after it
        // is what the stream cannot tell: who left with a server that died
        // meanwhile.
        if !self.wait_caught_up(self.lease / 3) {
            warn!("cluster: the stream is not read to its end yet; who is online is taken from the servers' lists");
        }
        let now = Instant::now();
        hub.with(&mut |hub| {
            for (s, u) in &found {
                hub.remote_present(*s, u.clone(), now);
            }
            for (s, key, since) in &away_found {
                if let Some((_, u)) = found
                    .iter()
                    .find(|(f, u)| f == s && crate::names::key(u) == *key)
                {
                    hub.remote_away(*s, u, *since, now);
                }
            }
            // After a start on a restored log: who left meanwhile.
            hub.remote_synced(now);
        });
        Ok(())
    }
}

/// The hash of server `server`'s users who are away (name key → when
/// their connection was lost, Unix ms), with the lease: for a server that
/// joins the cluster later.
fn away_key(server: u64) -> String {
    format!("imchat:away:{server}")
}

/// What publishes a batch (see [`Cluster::commands`]).
enum Commands {
    One(redis::Cmd),
    Transaction(redis::Pipeline),
}

/// Whether a minute has passed since `last` (or there was none); if so,
/// `last` becomes now.
/// What the lease loop says of Redis's outages: the log from the first
/// failed round on, the users from the second on. A Redis frozen for a few
/// seconds is often noticed only as it answers again (a round that timed
/// out just before it did): telling users then would be followed at once
/// by "reachable again".
#[derive(Debug, Default)]
struct Outage {
    /// The outage is in the log (or, before the first join, was).
    logged: bool,
    /// Rounds failed in a row.
    failed: u32,
    /// The users were told.
    told: bool,
}

impl Outage {
    /// A round failed, the server having been `was_up`: whether to log it
    /// (and count the server cut off), and whether to tell the users.
    fn failed(&mut self, was_up: bool) -> (bool, bool) {
        self.failed = self.failed.saturating_add(1);
        let log = was_up || !self.logged;
        self.logged = true;
        let tell = self.failed >= 2 && !self.told;
        self.told |= tell;
        (log, tell)
    }

    /// A round kept the lease, the server having been `was_up`: whether it
    /// is back (log it, and no longer cut off), and whether to tell the
    /// users who were told it was not.
    fn kept(&mut self, was_up: bool) -> (bool, bool) {
        self.failed = 0;
        if was_up {
            return (false, false);
        }
        let tell = std::mem::take(&mut self.told);
        self.logged = false;
        (true, tell)
    }
}

fn once_a_minute(last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// How many entries a stream of `len` entries that uses `used` bytes
/// keeps to use no more than `budget`: nine tenths of it (a stream at its
/// budget is not trimmed at every look), and at least one entry; `None`
/// within the budget.
fn stream_keep(used: u64, len: u64, budget: u64) -> Option<u64> {
    if used <= budget || len == 0 {
        return None;
    }
    // At most `len`: `budget` < `used`.
    let keep = u128::from(len) * u128::from(budget) / u128::from(used) * 9 / 10;
    Some(u64::try_from(keep).unwrap_or(len).max(1))
}

/// What a trim of the stream did, for the log: `n` of its `len` entries
/// trimmed, the stream using `used` bytes of a budget of `budget`. Redis
/// trims whole blocks of entries (`XTRIM MAXLEN ~`), so it may trim none.
fn trim_said(used: u64, budget: u64, len: u64, n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // One decimal is shown.
    let used = used as f64 / f64::from(1u32 << 20);
    // The budget is whole MiB (--cluster-stream-mib).
    let over = format!(
        "the stream uses {used:.1} MiB of Redis's memory, over its {} MiB",
        budget >> 20
    );
    if n == 0 {
        format!("{over}: none of its {len} entries trimmed yet (Redis trims only whole blocks of entries, and its oldest block holds some to keep)")
    } else {
        format!("{over}: its {n} oldest entries of {len} trimmed (older history is gone)")
    }
}

/// An `XADD` of a new entry to the bus, trimming it to about
/// [`BUS_MAXLEN`]; the entry's fields follow.
fn bus_xadd() -> redis::Cmd {
    let mut xadd = redis::cmd("XADD");
    xadd.arg(BUS)
        .arg("MAXLEN")
        .arg("~")
        .arg(BUS_MAXLEN)
        .arg("*");
    xadd
}

/// How many events at the front of `batch` are chat messages numbered
/// without a gap (at most [`entry::MAX_PER_ENTRY`]): one entry's worth.
fn chat_run(batch: &[(u64, ClusterEvent)]) -> usize {
    let Some((first, _)) = batch.first() else {
        return 0;
    };
    batch
        .iter()
        .zip(*first..)
        .take(entry::MAX_PER_ENTRY)
        .take_while(|((seq, e), want)| seq == want && matches!(e, ClusterEvent::Chat { .. }))
        .count()
}

/// The newest sequence number applied from each server: what makes each
/// entry count once, in its sender's order.
#[derive(Debug, Default)]
struct Seen {
    /// Per server, the sequence number of its last event read.
    seq: HashMap<u64, u64>,
    /// Per server, the log id of its last chat message read. A publish
    /// that Redis left unanswered (it hung) may have landed all the same,
    /// and is sent again after a rejoin under new sequence numbers (its
    /// server's joins go first); its messages keep their log ids, which
    /// only grow, so a copy is known by them.
    chat: HashMap<u64, u64>,
}

/// What to do with an entry.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Seen before (a publish that was retried): dropped.
    Duplicate,
    /// The next of its sender (or the first seen from it).
    Next,
    /// Newer, with this many of its sender's entries missing before it.
    After(u64),
}

impl Seen {
    /// Whether the chat message of log id `id` of server `server` is one
    /// not read before (see [`Seen::chat`]); notes it if so.
    fn new_chat(&mut self, server: u64, id: MessageId) -> bool {
        let last = self.chat.entry(server).or_insert(0);
        if id.0 <= *last {
            return false;
        }
        *last = id.0;
        true
    }

    /// Sorts what was read of an entry (`reads`, drained): this server's
    /// own onto `ours`, the others' to apply onto `events`, each once and
    /// in its sender's order. Warns of events lost, and returns how many.
    fn sort(
        &mut self,
        reads: &mut Vec<Read>,
        ours: &mut Vec<(MessageId, MessageId)>,
        events: &mut Vec<Remote>,
    ) -> u64 {
        let mut lost = 0;
        for r in reads.drain(..) {
            let (server, seq) = match &r {
                Read::Ours(published) => {
                    ours.push(*published);
                    continue;
                }
                Read::Skipped => continue,
                Read::Unreadable => {
                    warn!("cluster: an unreadable entry in {BUS} was skipped");
                    continue;
                }
                Read::Passed { server, seq, chat } => {
                    if let Some(id) = chat {
                        self.new_chat(*server, *id);
                    }
                    (*server, *seq)
                }
                Read::Theirs(e) => (e.server, e.seq),
            };
            match self.admit(server, seq) {
                Admit::Duplicate => continue,
                Admit::Next => {}
                Admit::After(n) => {
                    lost += n;
                    warn!(
                        "cluster: {n} events of server {server:x} were lost (trimmed from the stream or lost by Redis)"
                    );
                }
            }
            if let Read::Theirs(e) = r {
                if matches!(e.event, ClusterEvent::Chat { .. })
                    && !self.new_chat(e.server, e.origin.id)
                {
                    continue;
                }
                events.push(e);
            }
        }
        lost
    }

    fn admit(&mut self, server: u64, seq: u64) -> Admit {
        let last = self.seq.entry(server).or_insert(0);
        if seq <= *last {
            return Admit::Duplicate;
        }
        let missing = if *last > 0 { seq - *last - 1 } else { 0 };
        *last = seq;
        if missing > 0 {
            Admit::After(missing)
        } else {
            Admit::Next
        }
    }
}

/// Whose entries of the stream a server reads as its own: those it
/// published, and those the run before it on the same `--history-db`
/// published that the file kept (they are in its log already: applied
/// again, they would reach its users twice under new ids).
#[derive(Debug, Clone, Copy, Default)]
struct Me {
    id: u64,
    /// The former run's server, and the newest entry the file kept.
    former: Option<(u64, MessageId)>,
    /// The stream position up to which this server's log holds the
    /// stream already (see [`Cluster::kept_to`]): other servers' events
    /// at or before it are not applied again.
    kept_to: MessageId,
}

impl Me {
    /// Whether the entry `id` of server `server`'s log is this one's.
    fn owns(self, server: u64, id: MessageId) -> bool {
        server == self.id
            || self
                .former
                .is_some_and(|(s, kept)| s == server && id <= kept)
    }

    /// Whether `server` is this one (or its former run): a push's control
    /// of it is over.
    fn is(self, server: u64) -> bool {
        server == self.id || self.former.is_some_and(|(s, _)| s == server)
    }

    /// Whether the event at stream position `at` is in this server's log
    /// already (it was kept by the history it started on).
    fn kept(self, at: MessageId) -> bool {
        at <= self.kept_to
    }
}

impl From<u64> for Me {
    fn from(id: u64) -> Me {
        Me {
            id,
            former: None,
            kept_to: MessageId(0),
        }
    }
}

/// An entry of the stream, from another server.
#[derive(Debug)]
struct Remote {
    server: u64,
    seq: u64,
    event: ClusterEvent,
    /// Where it comes from: its server's log id, its stream position.
    origin: RemoteOrigin,
}

/// What an entry of the stream is to this server.
#[derive(Debug)]
enum Read {
    /// Another server's, to apply.
    Theirs(Remote),
    /// This server's own (not a push's control): its log id, and its
    /// position in the stream, for resumes from here on other servers.
    Ours((MessageId, MessageId)),
    /// Nothing for this server: a push's control of its own.
    Skipped,
    /// Another server's push control for a third one, or an event the
    /// history this server started on holds already: nothing to apply,
    /// but it counts in its sender's numbering (else the next entry of
    /// that server looks like one after a loss); a chat's log id too (a
    /// copy published again later is known by it, see [`Seen::chat`]).
    Passed {
        server: u64,
        seq: u64,
        chat: Option<MessageId>,
    },
    /// Not an entry this version can read.
    Unreadable,
}

impl Remote {
    /// Reads the stream entry `entry_id` (its position) for server `me`
    /// onto `out`, one [`Read`] per event it holds: its own entries and
    /// those addressed to other servers are recognised from their head
    /// alone, without decoding the rest. Returns the position of its last
    /// event (`None`: the entry has none).
    fn read(
        me: Me,
        entry_id: &[u8],
        mut fields: Vec<Value>,
        out: &mut Vec<Read>,
    ) -> Option<MessageId> {
        let Some((head, position)) = entry::Head::peek(&fields).zip(entry::position(entry_id))
        else {
            out.push(Read::Unreadable);
            return None;
        };
        if head.kind == b'b' {
            let Some(records) = entry::records(&head, &fields) else {
                out.push(Read::Unreadable);
                return Some(position);
            };
            let mut at = position;
            let mut sender = None;
            for (i, r) in (0..).zip(&records) {
                at = MessageId(position.0 + i);
                if me.owns(head.server, r.id) {
                    out.push(Read::Ours((r.id, at)));
                    continue;
                }
                if me.kept(at) {
                    out.push(Read::Passed {
                        server: head.server,
                        seq: head.seq + i,
                        chat: Some(r.id),
                    });
                    continue;
                }
                out.push(match entry::decode_record(r, &mut sender) {
                    Some((event, id, time, client_id)) => Read::Theirs(Remote {
                        server: head.server,
                        seq: head.seq + i,
                        event,
                        origin: RemoteOrigin {
                            server: head.server,
                            id,
                            position: at,
                            time,
                            client_id,
                        },
                    }),
                    None => Read::Unreadable,
                });
            }
            return Some(at);
        }
        out.push(Remote::read_one(me, &head, position, &mut fields));
        Some(position)
    }

    /// Reads an entry of one event.
    fn read_one(me: Me, head: &entry::Head, position: MessageId, fields: &mut [Value]) -> Read {
        if head.kind == b'f' && me.is(head.server) {
            return Read::Skipped;
        }
        if me.owns(head.server, head.id) {
            return Read::Ours((head.id, position));
        }
        if head.addressee.is_some_and(|to| to != me.id) || me.kept(position) {
            return Read::Passed {
                server: head.server,
                seq: head.seq,
                chat: (head.kind == b'c').then_some(head.id),
            };
        }
        match Remote::decode(head, position, fields) {
            Some(e) => Read::Theirs(e),
            None => Read::Unreadable,
        }
    }

    /// The events of the stream entry `entry_id` whatever their server
    /// (but the controls of pushes, which are for one server), onto `out`.
    fn parse(entry_id: &[u8], fields: Vec<Value>, out: &mut Vec<Remote>) {
        let mut read = Vec::new();
        // No server has id 0.
        Remote::read(0.into(), entry_id, fields, &mut read);
        out.extend(read.into_iter().filter_map(|r| match r {
            Read::Theirs(e) => Some(e),
            _ => None,
        }));
    }

    fn decode(head: &entry::Head, position: MessageId, fields: &mut [Value]) -> Option<Remote> {
        let (event, id, time, client_id) = entry::decode(head, fields)?;
        Some(Remote {
            server: head.server,
            seq: head.seq,
            event,
            origin: RemoteOrigin {
                server: head.server,
                id,
                position,
                time,
                client_id,
            },
        })
    }

    fn apply(self, hub: &mut Hub, now: Instant) {
        match self.event {
            ClusterEvent::Transfer(t) => transfer::apply(hub, self.server, &t, now),
            ClusterEvent::Joined { user, .. } => {
                if !hub.remote_join(self.server, user.clone(), now) {
                    warn!(
                        "cluster: '{}' joined on server {:x} but is a user of this one",
                        imchat_core::inert(user.as_str()),
                        self.server
                    );
                }
            }
            ClusterEvent::Left {
                user, reason, text, ..
            } => {
                hub.remote_leave(self.server, &user, reason, text, now);
            }
            ClusterEvent::Chat {
                from,
                to,
                kind,
                text,
                ..
            } => {
                if !hub.remote_sender_is_of(self.server, &from)
                    && !hub.remote_contested_by(self.server, &from)
                {
                    warn!(
                        "cluster: a message from '{}' published by server {:x}, which no longer has that user: not passed on",
                        imchat_core::inert(from.as_str()),
                        self.server
                    );
                    return;
                }
                if !hub.remote_chat_fits(&text) {
                    warn!(
                        "cluster: a message of {} bytes from '{}' on server {:x} is longer than this server's --max-message-bytes ({}): not passed on to its users (they are told it was not shown); give every server of the cluster the same limits",
                        text.len(),
                        imchat_core::inert(from.as_str()),
                        self.server,
                        hub.limits().max_text
                    );
                }
                hub.remote_chat(from, to, kind, text, now);
            }
            ClusterEvent::Moved { user, .. } => {
                hub.remote_moved(self.server, user, now);
            }
            ClusterEvent::Away { user, since } => {
                hub.remote_away(self.server, &user, since, now);
            }
            ClusterEvent::Back { user } => hub.remote_back(self.server, &user, now),
            ClusterEvent::Kick { user, text } => {
                if hub.remote_kick(&user, &text, now) {
                    info!(
                        "cluster: '{}' removed at the request of server {:x}: {}",
                        imchat_core::inert(user.as_str()),
                        self.server,
                        imchat_core::inert(&text)
                    );
                }
            }
            ClusterEvent::Undelivered { from, to, text } => {
                hub.remote_undelivered(&from, &to, &text);
            }
            ClusterEvent::Session { .. } => {}
        }
    }
}

/// Claims the name of a `Hello` before the hub sees it; returns whether
/// the hub may go on with it (else the connection was refused), and the
/// key of the name claimed (newly, or this server's already), to give to
/// [`Cluster::handshake_over`] once the hub has joined the connection or
/// not (until then the lease loop renews the claim).
///
/// `not_taken` is the `Hello`'s resume request when it asked for a
/// session this server does not hold and the take-over failed (a wrong
/// token, or no such session). When the name is taken elsewhere it is a
/// failed resume, as on a single server: past the limit of failures from
/// its address it is refused as `TOO_MANY_ATTEMPTS`, else counted and
/// refused as a name taken (answered here, the hub never sees it). When
/// the name is free (its session ended) it is no guess, and the user
/// joins afresh; when it is this server's, the hub judges the resume.
///
/// `own_session`: the `Hello` asks to resume a session this server holds.
/// When Redis cannot be reached (or holds new names after a restart), the
/// hub may still try that resume: its name is this server's already, and
/// a user of this server is served through an outage, as one whose
/// connection stayed is. Any other `Hello` is refused then.
pub fn claim_for_hello(
    cluster: &Cluster,
    hub: &dyn HubAccess,
    client: ClientId,
    username: &Username,
    not_taken: Option<&imchat_core::ResumeRequest>,
    own_session: bool,
) -> (bool, Option<String>) {
    let key = crate::names::key(username);
    let refuse = |code: RefuseCode, reason: String| {
        hub.with(&mut |hub| hub.refuse_handshake(client, code, &reason));
    };
    match cluster.claim(&key) {
        Claim::New => {
            // The tests' pause of a Hello whose name it newly claimed (the
            // fail point's value: a name key): another Hello for the name
            // may come and go meanwhile.
            if fail::eval("cluster-name-claimed", |name| name)
                .flatten()
                .is_some_and(|name| name == key)
            {
                thread::sleep(Duration::from_secs(1));
            }
            (true, Some(key))
        }
        Claim::Ours => (true, Some(key)),
        Claim::Taken => {
            // A resume whose token did not take the session that holds the
            // name is a failed attempt; one of a name that is free (its
            // session ended) is none, and joins afresh.
            if let Some(request) = not_taken {
                let mut refused = false;
                hub.with(&mut |hub| {
                    refused = hub.refuse_spent_resume(client, Instant::now());
                    if !refused {
                        hub.note_failed_resume(client, request, Instant::now());
                    }
                });
                if refused {
                    return (false, None);
                }
            }
            refuse(
                RefuseCode::NAME_TAKEN,
                format!(
                    "the username '{username}' is already taken (on another server of this chat)"
                ),
            );
            (false, None)
        }
        Claim::Unreachable | Claim::Held if own_session => (true, None),
        Claim::Unreachable if cluster.refused.load(Ordering::SeqCst) => {
            refuse(
                RefuseCode::SERVER_FULL,
                "this server cannot join the rest of the chat: its Redis refuses the server's settings (a configuration error: tell the server's operator)".into(),
            );
            (false, None)
        }
        Claim::Unreachable => {
            refuse(
                RefuseCode::SERVER_FULL,
                "this server cannot reach the rest of the chat to claim your name; try again in a moment".into(),
            );
            (false, None)
        }
        Claim::Held => {
            refuse(
                RefuseCode::SERVER_FULL,
                "new names are held while the chat recovers from a restart of its Redis; try again in a moment".into(),
            );
            (false, None)
        }
    }
}

/// The log's line for a server found dead with `n` (at least one) users:
/// they leave, or wait for a resume elsewhere, as the grace period says.
fn gone_server_line(server: u64, n: usize) -> String {
    let (users, verbs) = if n == 1 {
        ("user", "leaves, or waits")
    } else {
        ("users", "leave, or wait")
    };
    format!(
        "cluster: server {server:x} is gone (its lease ran out): its {n} {users} {verbs} for a resume elsewhere"
    )
}

/// How long the Redis harness of the tests waits for what it waits for.
#[cfg(test)]
const WAIT: Duration = Duration::from_secs(20);
/// The cluster suites' `redis-server` of each test's own.
#[cfg(test)]
#[path = "../tests/redis_harness/mod.rs"]
mod redis_harness;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_servers_line_counts_one_user_in_the_singular() {
        assert_eq!(
            gone_server_line(0xab, 1),
            "cluster: server ab is gone (its lease ran out): its 1 user leaves, or waits for a resume elsewhere"
        );
        assert_eq!(
            gone_server_line(0xab, 3),
            "cluster: server ab is gone (its lease ran out): its 3 users leave, or wait for a resume elsewhere"
        );
    }

    #[test]
    fn a_server_found_dead_stays_listed_when_its_heartbeat_is_back() {
        let Some(redis) = redis_harness::Redis::start() else {
            return;
        };
        let mut con = client(&redis.url(), &RedisTls::default())
            .unwrap()
            .connect(WAIT)
            .unwrap();
        let members = |con: &mut Connection| -> Vec<u64> {
            redis::cmd("SMEMBERS")
                .arg("imchat:servers")
                .query(con)
                .unwrap()
        };
        redis::cmd("SADD")
            .arg("imchat:servers")
            .arg(7)
            .query::<()>(&mut con)
            .unwrap();
        // Found dead by a check, then back (its heartbeat written, itself
        // added again) before the check takes it out: it stays.
        redis::cmd("SET")
            .arg("imchat:srv:7")
            .arg(1)
            .query::<()>(&mut con)
            .unwrap();
        forget_server(&mut con, 7).unwrap();
        assert_eq!(members(&mut con), [7]);
        // Gone for real.
        redis::cmd("DEL")
            .arg("imchat:srv:7")
            .query::<()>(&mut con)
            .unwrap();
        forget_server(&mut con, 7).unwrap();
        assert!(members(&mut con).is_empty());
    }

    #[test]
    fn users_hear_of_an_outage_only_when_it_lasts_a_second_round() {
        let mut o = Outage::default();
        // Up, then one round fails and the next works: logged, not told.
        assert_eq!(o.kept(false), (true, false));
        assert_eq!(o.failed(true), (true, false));
        assert_eq!(o.kept(false), (true, false));
        // Two rounds in a row fail: told at the second, once; and told
        // when it is back.
        assert_eq!(o.failed(true), (true, false));
        assert_eq!(o.failed(false), (false, true));
        assert_eq!(o.failed(false), (false, false));
        assert_eq!(o.kept(false), (true, true));
        assert_eq!(o.kept(true), (false, false));
        // Unreachable from the start: logged once, told from the second.
        let mut o = Outage::default();
        assert_eq!(o.failed(false), (true, false));
        assert_eq!(o.failed(false), (false, true));
    }

    #[test]
    fn passwords_never_show_in_a_url_for_the_log() {
        assert_eq!(
            redacted("redis://:s3cret@db.example:6379/2"),
            "redis://:***@db.example:6379/2"
        );
        assert_eq!(
            redacted("rediss://app:s3cret@db.example"),
            "rediss://app:***@db.example"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        // An IPv6 host: its colons are no password.
        assert_eq!(redacted("redis://[::1]:6379"), "redis://[::1]:6379");
        assert_eq!(redacted("redis://[::1]:6379/2"), "redis://[::1]:6379/2");
        assert_eq!(redacted("redis://[::1]"), "redis://[::1]");
        assert_eq!(redacted("redis://[::1]:secret"), "redis://[::1]:***");
        // No `]`, no `@`: an address cut short, nothing to hide.
        assert_eq!(redacted("redis://[::1"), "redis://[::1");
        assert_eq!(redacted("redis://[::1/2"), "redis://[::1/2");
        assert_eq!(redacted("redis://[fe80::1:6379"), "redis://[fe80::1:6379");
        assert_eq!(redacted("redis://[:SECRETPW"), "redis://[:***");
        assert_eq!(redacted("redis://:pw@[::1"), "redis://:***@[::1");
        assert_eq!(
            redacted("redis://:pw@[::1]:6379"),
            "redis://:***@[::1]:6379"
        );
        // A user name alone may be a password without its `:`.
        assert_eq!(redacted("redis://s3cret@host/0"), "redis://***@host/0");
        // Not percent-encoded: `@`, `:`, `/` and `#` in the password.
        let raw = "redis://:p@ss:w/rd#1@127.0.0.1:6379";
        assert_eq!(redacted(raw), "redis://:***@127.0.0.1:6379");
        let e = client(raw, &RedisTls::default()).map(|_| ()).unwrap_err();
        assert!(!e.contains("ss:w") && !e.contains("rd#1"), "{e}");
        assert!(!e.contains("InvalidClientConfig"), "{e}");
        // No host, or the password in the query.
        assert_eq!(redacted("redis://:PW6SECRET"), "redis://:***");
        assert_eq!(
            redacted("redis://localhost:6379?password=PW7SECRET&x=1"),
            "redis://localhost:6379?password=***&x=1"
        );
        assert_eq!(
            redacted("redis://localhost:6379/0"),
            "redis://localhost:6379/0"
        );
        for bad in [
            "redis://:PW6SECRET",
            "redis://localhost:6379?password=PW7SECRET",
        ] {
            let shown = client(bad, &RedisTls::default()).map_or_else(|e| e, |_| redacted(bad));
            assert!(!shown.contains("SECRET"), "{shown}");
        }
        // Not URLs at all, with a password all the same.
        for (bad, shown) in [
            (
                "redis:/:TopSecret77@127.0.0.1:6379",
                "redis:***@127.0.0.1:6379",
            ),
            ("redis//:TopSecret77@host", "redis//:***@host"),
            ("rediss:/:TopSecret77@host", "rediss:***@host"),
            ("TopSecret77@host", "***@host"),
        ] {
            assert_eq!(redacted(bad), shown);
            let e = client(bad, &RedisTls::default()).map(|_| ()).unwrap_err();
            assert!(!e.contains("TopSecret77"), "{e}");
        }
    }

    #[test]
    fn a_port_out_of_range_is_said_so() {
        let e = |url: &str| client(url, &RedisTls::default()).map(|_| ()).unwrap_err();
        assert_eq!(
            e("redis://127.0.0.1:99999"),
            "invalid Redis URL 'redis://127.0.0.1:99999': port 99999 is out of range (1 to 65535)"
        );
        assert_eq!(
            e("rediss://:SECRETPW@[::1]:70000/2"),
            "invalid Redis URL 'rediss://:***@[::1]:70000/2': port 70000 is out of range (1 to 65535)"
        );
        assert!(e("redis://localhost:0").contains("port 0 is no port"));
        // A port that is not a number may be a password: never shown.
        let odd = e("redis://localhost:SECRETPW");
        assert!(
            odd.starts_with("invalid Redis URL 'redis://localhost:***'"),
            "{odd}"
        );
        assert!(client("redis://127.0.0.1:65535", &RedisTls::default()).is_ok());
        assert!(client("redis://:6@host:6379", &RedisTls::default()).is_ok());
    }

    #[test]
    fn the_database_of_a_urls_db_parameter_is_used() {
        let db = |url: &str| client(url, &RedisTls::default()).map(|r| r.db());
        assert_eq!(db("redis://127.0.0.1:6379/3"), Ok(3));
        assert_eq!(db("redis://127.0.0.1:6379/?db=3"), Ok(3));
        assert_eq!(db("redis://127.0.0.1:6379?db=3"), Ok(3));
        assert_eq!(db("redis://:pw@127.0.0.1:6379/3?db=3"), Ok(3));
        assert_eq!(db("redis://127.0.0.1:6379"), Ok(0));
        let two = db("redis://:SECRETPW@127.0.0.1:6379/2?db=3").unwrap_err();
        assert_eq!(
            two,
            "invalid Redis URL 'redis://:***@127.0.0.1:6379/2?db=3': it names two databases (2 in its path, 3 in its db=)"
        );
        let bad = db("redis://:SECRETPW@127.0.0.1:6379/?db=three").unwrap_err();
        assert!(bad.ends_with("its db= is not a database number"), "{bad}");
        assert!(!bad.contains("SECRETPW"), "{bad}");
        let neg = db("redis://127.0.0.1:6379/?db=-1").unwrap_err();
        assert!(neg.contains("cannot be negative"), "{neg}");
        // A unix socket's URL has its database in the query only.
        assert_eq!(db("unix:///tmp/redis.sock?db=4"), Ok(4));
    }

    #[test]
    fn every_connection_uses_the_database_of_the_db_parameter() {
        let Some(redis) = redis_harness::Redis::start() else {
            return;
        };
        let con = |url: &str| {
            client(url, &RedisTls::default())
                .unwrap()
                .connect(WAIT)
                .unwrap()
        };
        let mut three = con(&format!("{}/?db=3", redis.url()));
        redis::cmd("SET")
            .arg("k")
            .arg("in 3")
            .query::<()>(&mut three)
            .unwrap();
        let get = |con: &mut Connection| {
            redis::cmd("GET")
                .arg("k")
                .query::<Option<String>>(con)
                .unwrap()
        };
        assert_eq!(
            get(&mut con(&format!("{}/3", redis.url()))),
            Some("in 3".into())
        );
        assert_eq!(get(&mut con(&redis.url())), None);
    }

    #[test]
    fn a_real_redis_refusing_a_user_or_password_is_said_truly() {
        let Some(redis) = redis_harness::Redis::start_with(&["--requirepass", "right"]) else {
            return;
        };
        let port = redis.port;
        let said = |url: String| {
            let Err(e) = client(&url, &RedisTls::default()).unwrap().connect(WAIT) else {
                panic!("{url} connected");
            };
            let said = said_to(&client(&url, &RedisTls::default()).unwrap(), &e);
            assert!(!said.contains("SECRETPW"), "{said}");
            said
        };
        assert!(said(format!("redis://nobody:SECRETPW@127.0.0.1:{port}"))
            .ends_with("wrong user name or password (or the user is disabled)"));
        assert_eq!(
            said(format!("redis://:SECRETPW@127.0.0.1:{port}")),
            "Redis refused the password in the URL"
        );
        for url in [
            format!("redis://:right@127.0.0.1:{port}/2"),
            format!("redis://default:right@127.0.0.1:{port}"),
        ] {
            let mut con = client(&url, &RedisTls::default())
                .unwrap()
                .connect(WAIT)
                .unwrap();
            assert_eq!(
                redis::cmd("PING").query::<String>(&mut con).unwrap(),
                "PONG"
            );
        }
        let Some(open) = redis_harness::Redis::start() else {
            return;
        };
        assert!(said(format!("redis://:SECRETPW@127.0.0.1:{}", open.port))
            .starts_with("Redis has no password set, but the URL gives one"));
    }

    #[test]
    fn redis_errors_are_said_in_words() {
        let auth = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(said(&auth), "Redis refused the password in the URL");
        let slow = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::WouldBlock));
        assert_eq!(said(&slow), "Redis did not answer in time");
        let wrong = redis::make_extension_error(
            "WRONGPASS".into(),
            Some("invalid username-password pair or user is disabled.".into()),
        );
        assert_eq!(said(&wrong), "Redis refused the password in the URL");
        let none =
            redis::make_extension_error("NOAUTH".into(), Some("Authentication required.".into()));
        assert_eq!(
            said(&none),
            "Redis requires a password: put it in the URL (redis://:PASSWORD@HOST:PORT)"
        );
        let db = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "Redis server refused to switch database",
            "DB index is out of range".to_string(),
        ));
        let to = client("redis://127.0.0.1:1/99", &RedisTls::default()).unwrap();
        let words = said_to(&to, &db);
        assert!(words.starts_with("Redis has no database 99 "), "{words}");
        assert!(!words.contains("ResponseError"), "{words}");
        assert!(!said(&db).contains("ResponseError"), "{}", said(&db));
        let other = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "Redis server refused to authenticate, returns Ok() != Value::Okay",
        ));
        assert_eq!(
            said(&other),
            "Redis server refused to authenticate, returns Ok() != Value::Okay"
        );
        let detailed = redis::RedisError::from((
            redis::ErrorKind::Io,
            "cannot connect",
            "no route".to_string(),
        ));
        assert_eq!(said(&detailed), "cannot connect: no route");
    }

    /// A `rediss://` URL given a Redis without TLS: the handshake gets no
    /// TLS answer, and that is said with a hint, not "did not answer in
    /// time"; the password is not shown.
    #[test]
    fn a_rediss_url_to_a_plaintext_redis_says_tls_is_the_trouble() {
        let Some(redis) = redis_harness::Redis::start_with(&["--requirepass", "SECRETPW"]) else {
            return;
        };
        let url = format!("rediss://:SECRETPW@127.0.0.1:{}", redis.port);
        let to = client(&url, &RedisTls::default()).unwrap();
        let Err(e) = to.connect(Duration::from_secs(1)) else {
            panic!("{url} connected");
        };
        let said = said_to(&to, &e);
        assert_eq!(
            said,
            "the TLS handshake with Redis failed or timed out: is TLS enabled on that Redis? use redis:// for a plaintext one"
        );
        // The same Redis through redis:// is reached.
        let plain = format!("redis://:SECRETPW@127.0.0.1:{}", redis.port);
        assert!(client(&plain, &RedisTls::default())
            .unwrap()
            .connect(WAIT)
            .is_ok());
    }

    #[test]
    fn a_redis_that_evicts_keys_when_full_is_warned_of() {
        let info = |policy: &str, max: u64| {
            format!("# Memory\r\nused_memory:1000\r\nmaxmemory:{max}\r\nmaxmemory_human:4.00M\r\nmaxmemory_policy:{policy}\r\n")
        };
        let (policy, said) = eviction_said(&info("allkeys-lru", 4 << 20)).unwrap();
        assert_eq!(policy, "allkeys-lru");
        assert!(
            said.starts_with(
                "its maxmemory-policy is allkeys-lru: once full (maxmemory 4194304 bytes)"
            ),
            "{said}"
        );
        assert!(said.ends_with("set maxmemory-policy noeviction"), "{said}");
        assert!(eviction_said(&info("volatile-lru", 1 << 30)).is_some());
        // Redis's default, or no maxmemory at all: nothing to say.
        assert_eq!(eviction_said(&info("noeviction", 4 << 20)), None);
        assert_eq!(eviction_said(&info("allkeys-lru", 0)), None);
        assert_eq!(eviction_said("# Memory\r\nused_memory:1000\r\n"), None);
    }

    /// Redis's own refusals are said in words (before, in the crate's
    /// text: `"OOM": command not allowed when used memory > 'maxmemory'.`,
    /// `NoPerm: …`).
    #[test]
    fn redis_refusals_by_code_are_said_in_words() {
        // As they come from Redis: an error reply, read by the crate.
        let reply = |line: &str| -> redis::RedisError {
            redis::parse_redis_value(format!("-{line}\r\n").as_bytes())
                .and_then(Value::extract_error)
                .unwrap_err()
        };
        let full = reply("OOM command not allowed when used memory > 'maxmemory'.");
        assert!(
            said(&full).starts_with("Redis is out of memory (over its maxmemory)"),
            "{}",
            said(&full)
        );
        let replica = reply("READONLY You can't write against a read only replica.");
        assert_eq!(
            said(&replica),
            "Redis is a read-only replica: give the URL of its primary"
        );
        let acl = reply("NOPERM this user has no permissions to run the 'set' command");
        assert_eq!(
            said(&acl),
            "Redis's ACL refuses the URL's user: this user has no permissions to run the 'set' command"
        );
        let other = reply("WEIRD something else.");
        assert_eq!(said(&other), "Redis answered WEIRD: something else");
        for e in [&full, &replica, &acl, &other] {
            assert!(!said(e).contains('"'), "{}", said(e));
        }
    }

    #[test]
    fn a_redis_that_refuses_the_settings_is_told_from_one_that_is_down() {
        let refusals = [
            redis::RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "Password authentication failed",
            )),
            redis::make_extension_error("WRONGPASS".into(), None),
            redis::make_extension_error("NOAUTH".into(), None),
            redis::make_extension_error(
                "NOPERM".into(),
                Some("this user has no permissions to run the 'set' command".into()),
            ),
            redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                "Redis server refused to switch database",
                "DB index is out of range".to_string(),
            )),
        ];
        for e in &refusals {
            assert!(refuses_settings(e), "{e:?}");
        }
        let outages = [
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::WouldBlock)),
            redis::make_extension_error("LOADING".into(), None),
            redis::RedisError::from((redis::ErrorKind::Io, "cannot connect")),
        ];
        for e in &outages {
            assert!(!refuses_settings(e), "{e:?}");
        }
    }

    #[test]
    fn a_refusal_of_the_settings_is_said_refused_and_an_outage_unreachable() {
        let redis = client("redis://:SECRETPW@127.0.0.1:6379/3", &RedisTls::default()).unwrap();
        let said = |e: redis::RedisError| failure_said(&redis, &e);
        let refused = [
            (
                redis::RedisError::from((
                    redis::ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                )),
                "refused the connection: Redis refused the password in the URL",
            ),
            (
                redis::RedisError::from((
                    redis::ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                    link::NO_SUCH_USER_OR_PASSWORD.to_string(),
                )),
                "refused the connection: Redis refused the user name and password in the URL",
            ),
            (
                redis::RedisError::from((
                    redis::ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                    link::NO_PASSWORD_SET.to_string(),
                )),
                "refused the connection: Redis has no password set",
            ),
            (
                redis::RedisError::from((
                    redis::ErrorKind::Client,
                    link::TOO_OLD,
                    "6.0.16".to_string(),
                )),
                "refused the connection: Redis 6.0.16 is too old",
            ),
            (
                redis::RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                    "Redis server refused to switch database",
                    "DB index is out of range".to_string(),
                )),
                "refused the connection: Redis has no database 3 ",
            ),
            (
                redis::make_extension_error("NOAUTH".into(), None),
                "refused the connection: Redis requires a password",
            ),
        ];
        for (e, wanted) in refused {
            let line = said(e);
            assert!(line.starts_with(wanted), "{line}");
            assert!(!line.contains("SECRETPW"), "{line}");
        }
        let down = said(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(down, "is unreachable: connection refused");
    }

    /// Settings for the Redis at `url`, without a CA.
    fn settings(url: &str) -> Settings {
        Settings {
            tls: RedisTls::default(),
            stream_bytes: 256 << 20,
            url: url.into(),
            lease: Duration::from_secs(10),
            grace: Duration::from_secs(60),
        }
    }

    /// A cluster whose Redis is never reached (nothing listens on port 1):
    /// what it queues and how it would publish it.
    fn unconnected() -> Cluster {
        Cluster::new(&settings("redis://127.0.0.1:1")).unwrap()
    }

    #[test]
    fn the_queue_toward_redis_is_bounded() {
        let c = unconnected();
        let user = Username::new("alice").unwrap();
        for _ in 0..QUEUE_MAX + 5 {
            c.enqueue(ClusterEvent::Joined {
                user: user.clone(),
                id: MessageId(0),
            });
        }
        let q = lock(&c.queue);
        assert_eq!(q.items.len(), QUEUE_MAX);
        assert_eq!(q.dropped, 5);
        // In order, numbered from 1 without gaps.
        assert!(q.items.iter().zip(1..).all(|((s, _), n)| *s == n));
    }

    fn chat(text: String) -> ClusterEvent {
        chat_from("alice", &text)
    }

    fn chat_from(name: &str, text: &str) -> ClusterEvent {
        let text = text.to_string();
        ClusterEvent::Chat {
            from: Username::new(name).unwrap(),
            to: None,
            kind: imchat_core::ChatKind::Text,
            text,
            id: MessageId(0),
            time: imchat_core::Timestamp(0),
            client_id: 0,
        }
    }

    /// What waits in `q`, in order: each number and a word on its event;
    /// and its byte count checked.
    fn queued(q: &Queue) -> Vec<(u64, String)> {
        assert_eq!(
            q.bytes,
            q.items.iter().map(|(_, e)| weight(e)).sum::<usize>()
        );
        q.items
            .iter()
            .map(|(seq, e)| {
                let what = match e {
                    ClusterEvent::Joined { user, .. } => format!("join {user}"),
                    ClusterEvent::Chat { text, .. } => text.clone(),
                    ClusterEvent::Session { .. } => "session".into(),
                    _ => "other".into(),
                };
                (*seq, what)
            })
            .collect()
    }

    #[test]
    fn a_rejoin_announces_first_silences_the_losers_and_numbers_on() {
        let mut q = Queue {
            max_bytes: QUEUE_BYTES,
            next_seq: 1,
            ..Queue::default()
        };
        q.push(chat("a0".into()));
        // Published already: number 1 went.
        let published = q.take();
        assert_eq!(published[0].0, 1);
        q.busy = false;
        q.push(chat_from("alice", "while away"));
        q.push(chat_from("bob", "bob while away"));
        q.push(ClusterEvent::Session {
            user: Username::new("bob").unwrap(),
            token: imchat_core::ResumeToken([1; 16]),
        });
        q.push(chat_from("ALİCE", "again"));
        let joined = ClusterEvent::Joined {
            user: Username::new("bob").unwrap(),
            id: MessageId(0),
        };
        q.rejoin_first(
            7,
            vec![joined],
            &[crate::names::key(&Username::new("alice").unwrap())],
        );
        assert_eq!(
            queued(&q),
            [
                (2, "join bob".to_string()),
                (3, "bob while away".to_string()),
                (3, "session".to_string()),
            ]
        );
        assert_eq!(q.next_seq, 4);
    }

    #[test]
    fn a_rejoin_keeps_the_numbers_of_a_batch_that_may_be_in_the_stream() {
        let mut q = Queue {
            max_bytes: QUEUE_BYTES,
            next_seq: 1,
            ..Queue::default()
        };
        q.push(chat_from("alice", "sent, answer lost"));
        q.push(chat_from("alice", "in the same batch"));
        let batch = q.take();
        q.put_back(batch);
        q.busy = false;
        q.push(chat_from("alice", "queued later"));
        let joined = ClusterEvent::Joined {
            user: Username::new("bob").unwrap(),
            id: MessageId(0),
        };
        q.rejoin_first(7, vec![joined], &[]);
        // Numbers 1 and 2 may be in the stream already: a receiver that
        // has them must drop their copies, not the announcement.
        assert_eq!(
            queued(&q),
            [
                (1, "sent, answer lost".to_string()),
                (2, "in the same batch".to_string()),
                (3, "join bob".to_string()),
                (4, "queued later".to_string()),
            ]
        );
        assert_eq!(q.next_seq, 5);
    }

    /// A message of a user silenced at a rejoin (its name went to another
    /// server's user while this one was cut off) that went to Redis with
    /// no answer keeps its number with an entry that says nothing: the
    /// other servers see no gap, so they do not tell their users that
    /// messages were lost (they did, for each message so withdrawn).
    #[test]
    fn a_silenced_message_that_may_be_in_the_stream_leaves_no_gap_in_the_numbers() {
        let mut q = Queue {
            max_bytes: QUEUE_BYTES,
            next_seq: 1,
            ..Queue::default()
        };
        q.push(chat_from("bob", "bob, sent, answer lost"));
        q.push(chat_from("alice", "alice, sent, answer lost"));
        let batch = q.take();
        q.put_back(batch);
        q.busy = false;
        q.push(chat_from("bob", "queued later"));
        let joined = ClusterEvent::Joined {
            user: Username::new("bob").unwrap(),
            id: MessageId(0),
        };
        q.rejoin_first(
            7,
            vec![joined],
            &[crate::names::key(&Username::new("alice").unwrap())],
        );
        assert_eq!(
            queued(&q),
            [
                (1, "bob, sent, answer lost".to_string()),
                (2, "other".to_string()),
                (3, "join bob".to_string()),
                (4, "queued later".to_string()),
            ]
        );
        // As another server (8) reads them: nothing lost, and the
        // placeholder is not applied.
        let mut seen = Seen::default();
        let (mut ours, mut applied) = (Vec::new(), Vec::new());
        let mut lost = 0;
        for (i, (seq, event)) in q.items.iter().enumerate() {
            let mut reads = Vec::new();
            let at = format!("5-{i}");
            Remote::read(
                8.into(),
                at.as_bytes(),
                published(7, *seq, event),
                &mut reads,
            );
            lost += seen.sort(&mut reads, &mut ours, &mut applied);
        }
        assert_eq!(lost, 0);
        assert!(
            applied
                .iter()
                .any(|e| matches!(e.event, ClusterEvent::Joined { .. })),
            "{applied:?}"
        );
        assert!(
            !applied
                .iter()
                .any(|e| matches!(e.event, ClusterEvent::Transfer(_))),
            "{applied:?}"
        );
        // Its own server skips it.
        let (seq, event) = &q.items[1];
        assert!(matches!(
            read1(7, b"5-1", published(7, *seq, event)),
            Read::Skipped
        ));
    }

    /// Long messages fill the queue by their bytes long before their
    /// number: what waits for Redis stays within a bound in memory too.
    #[test]
    fn the_queue_toward_redis_is_bounded_in_bytes_and_a_batch_too() {
        let mut q = Queue {
            max_bytes: 4 << 20,
            next_seq: 1,
            ..Queue::default()
        };
        let long = "x".repeat(60_000);
        for _ in 0..100 {
            q.push(chat(long.clone()));
        }
        // 60,128 bytes each: 69 fit in 4 MiB.
        assert_eq!(q.items.len(), 69);
        assert_eq!(q.dropped, 31);
        assert_eq!(q.bytes, 69 * weight(&chat(long.clone())));
        assert!(q.bytes <= 4 << 20);
        // A round trip carries at most 1 MiB of them (17), in order.
        let batch = q.take();
        assert_eq!(batch.len(), 17);
        assert!(batch.iter().zip(1..).all(|((s, _), n)| *s == n));
        assert_eq!(q.bytes, 52 * weight(&chat(long.clone())));
        drop(batch);
        // A batch that failed comes back with its bytes.
        let c = unconnected();
        for _ in 0..20 {
            c.enqueue(chat(long.clone()));
        }
        let batch = lock(&c.queue).take();
        assert_eq!(batch.len(), 17);
        assert_eq!(lock(&c.queue).bytes, 3 * weight(&chat(long.clone())));
        c.published(batch, false);
        assert_eq!(lock(&c.queue).bytes, 20 * weight(&chat(long.clone())));
        // And one that was sent leaves with them.
        let batch = lock(&c.queue).take();
        c.published(batch, true);
        assert_eq!(lock(&c.queue).bytes, 3 * weight(&chat(long.clone())));
        // One event past the batch's bytes still goes, alone.
        let mut q = Queue {
            max_bytes: 4 << 20,
            ..Queue::default()
        };
        q.push(chat("y".repeat(BATCH_BYTES + 1)));
        q.push(chat(String::new()));
        assert_eq!(q.take().len(), 1);
        assert_eq!(q.take().len(), 1);
        assert_eq!(q.bytes, 0);
        // Short messages: a batch is 512 of them, as before.
        for _ in 0..600 {
            q.push(chat("hello".into()));
        }
        assert_eq!(q.take().len(), BATCH);
    }

    #[test]
    fn the_stream_is_trimmed_to_nine_tenths_of_its_budget_once_past_it() {
        assert_eq!(stream_keep(100, 1_000, 100), None);
        assert_eq!(stream_keep(10, 0, 5), None);
        // Twice the budget: 45 % of the entries stay.
        assert_eq!(stream_keep(200, 1_000, 100), Some(450));
        // Never none at all, and no overflow with large numbers.
        assert_eq!(stream_keep(u64::MAX, 3, 1), Some(1));
        let nine_tenths = (u128::from(u64::MAX - 1) * 9 / 10) as u64;
        assert_eq!(
            stream_keep(u64::MAX, u64::MAX, u64::MAX - 1),
            Some(nine_tenths)
        );
    }

    /// A trim that trimmed nothing (Redis trims whole blocks) does not say
    /// that older history is gone (before: "0 of its 21 oldest entries
    /// trimmed (older history is gone)").
    #[test]
    fn a_trim_of_the_stream_says_what_it_did() {
        let none = trim_said(3 << 19, 1 << 20, 21, 0);
        assert_eq!(
            none,
            "the stream uses 1.5 MiB of Redis's memory, over its 1 MiB: none of its 21 entries trimmed yet (Redis trims only whole blocks of entries, and its oldest block holds some to keep)"
        );
        let some = trim_said(3 << 20, 1 << 20, 900, 600);
        assert!(
            some.ends_with(": its 600 oldest entries of 900 trimmed (older history is gone)"),
            "{some}"
        );
    }

    #[test]
    fn a_session_record_leaves_no_gap_in_the_numbers_receivers_see() {
        let c = unconnected();
        for name in ["alice", "bob"] {
            c.enqueue(ClusterEvent::Joined {
                user: Username::new(name).unwrap(),
                id: MessageId(0),
            });
            c.enqueue(ClusterEvent::Session {
                user: Username::new(name).unwrap(),
                token: imchat_core::ResumeToken([7; 16]),
            });
        }
        let q = lock(&c.queue);
        let seqs: Vec<u64> = q.items.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 1, 2, 2]);
        // What goes on the stream is numbered without a gap.
        let mut seen = Seen::default();
        for (seq, event) in q.items.iter() {
            if !matches!(event, ClusterEvent::Session { .. }) {
                assert_eq!(seen.admit(c.id(), *seq), Admit::Next);
            }
        }
    }

    #[test]
    fn a_chat_read_again_under_a_new_sequence_number_is_known_by_its_log_id() {
        let mut seen = Seen::default();
        assert!(seen.new_chat(7, MessageId(10)));
        assert!(seen.new_chat(7, MessageId(11)));
        // Published again after a rejoin: the same ids.
        assert!(!seen.new_chat(7, MessageId(10)));
        assert!(!seen.new_chat(7, MessageId(11)));
        // Another server's ids are its own.
        assert!(seen.new_chat(8, MessageId(10)));
        assert!(seen.new_chat(7, MessageId(12)));
    }

    #[test]
    fn a_batch_is_moved_out_to_publish_and_put_back_in_order_if_it_failed() {
        let c = unconnected();
        let join = |n: &str| ClusterEvent::Joined {
            user: Username::new(n).unwrap(),
            id: MessageId(0),
        };
        for n in ["a", "b", "c"] {
            c.enqueue(join(n));
        }
        let batch = lock(&c.queue).take();
        assert_eq!(batch.len(), 3);
        {
            let q = lock(&c.queue);
            assert!(q.busy && q.items.is_empty());
        }
        // Queued meanwhile: after the batch.
        c.enqueue(join("d"));
        c.published(batch, false);
        let q = lock(&c.queue);
        assert!(!q.busy);
        let order: Vec<u64> = q.items.iter().map(|(s, _)| *s).collect();
        assert_eq!(order, [1, 2, 3, 4]);
        drop(q);
        let batch = lock(&c.queue).take();
        c.published(batch, true);
        assert!(lock(&c.queue).items.is_empty());
    }

    #[test]
    fn chats_alone_are_one_xadd_and_anything_else_a_transaction() {
        let c = unconnected();
        let numbered =
            |events: Vec<ClusterEvent>| -> Vec<(u64, ClusterEvent)> { (1..).zip(events).collect() };
        let run = numbered(chats(3));
        let Commands::One(xadd) = c.commands(&run) else {
            panic!("a run alone is not one command");
        };
        let fields = fields_of(&xadd);
        assert!(fields.ends_with(&published_chats(c.id(), 1, &chats(3))));
        assert_eq!(fields[0], Value::BulkString(BUS.into()));
        // A join beside the run: the users' hash changes with the entries.
        let mut mixed = chats(2);
        mixed.push(ClusterEvent::Joined {
            user: name("dora"),
            id: MessageId(0),
        });
        let Commands::Transaction(pipe) = c.commands(&numbered(mixed)) else {
            panic!("a join went without its transaction");
        };
        let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
        for word in ["MULTI", "XADD", "HSET", "PEXPIRE", "EXEC"] {
            assert!(packed.contains(word), "{word} missing: {packed}");
        }
        // One chat alone: an entry of its own kind, one XADD too.
        let one = numbered(chats(1));
        let Commands::One(xadd) = c.commands(&one) else {
            panic!("a chat alone is not one command");
        };
        let mut alone = bus_xadd();
        assert!(entry::encode(
            &mut alone,
            c.id(),
            1,
            &one[0].1,
            &mut String::new()
        ));
        assert_eq!(fields_of(&xadd), fields_of(&alone));
        // A join alone: with its transaction.
        let join = numbered(vec![ClusterEvent::Joined {
            user: name("erin"),
            id: MessageId(0),
        }]);
        assert!(matches!(c.commands(&join), Commands::Transaction(_)));
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused_in_one_line() {
        let e = Cluster::new(&settings("http://:pw@host")).unwrap_err();
        assert!(e.starts_with("invalid Redis URL 'http://:***@host'"), "{e}");
        assert!(!e.contains('\n'));
    }

    /// A negative database is no database: refused at start (before, the
    /// server started and ran alone, saying Redis had no database -1).
    #[test]
    fn a_url_with_a_negative_database_is_refused_at_start() {
        let e = Cluster::new(&settings("redis://:pw@127.0.0.1:6379/-1")).unwrap_err();
        assert!(
            e.starts_with("invalid Redis URL 'redis://:***@127.0.0.1:6379/-1'"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(Cluster::new(&settings("redis://127.0.0.1:6379/0")).is_ok());
    }

    #[test]
    fn entries_count_once_per_sender_and_gaps_are_noticed() {
        let mut seen = Seen::default();
        assert_eq!(seen.admit(1, 5), Admit::Next);
        assert_eq!(seen.admit(2, 1), Admit::Next);
        assert_eq!(seen.admit(1, 6), Admit::Next);
        // A batch published again after a lost reply.
        assert_eq!(seen.admit(1, 5), Admit::Duplicate);
        assert_eq!(seen.admit(1, 6), Admit::Duplicate);
        assert_eq!(seen.admit(1, 9), Admit::After(2));
        assert_eq!(seen.admit(2, 1), Admit::Duplicate);
    }

    /// The fields `event` is published with, as `XREAD` gives them back.
    fn published(server: u64, seq: u64, event: &ClusterEvent) -> Vec<Value> {
        let mut xadd = redis::cmd("XADD");
        assert!(entry::encode(
            &mut xadd,
            server,
            seq,
            event,
            &mut String::new()
        ));
        fields_of(&xadd)
    }

    /// The fields written onto `xadd` (after the command's name), as
    /// `XREAD` gives them back.
    fn fields_of(xadd: &redis::Cmd) -> Vec<Value> {
        xadd.args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => Value::BulkString(b.to_vec()),
                _ => panic!("no cursor in an entry"),
            })
            .collect()
    }

    /// What server `me` reads of an entry of one event.
    fn read1(me: u64, entry_id: &[u8], fields: Vec<Value>) -> Read {
        let mut out = Vec::new();
        Remote::read(me.into(), entry_id, fields, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    fn theirs(read: Read) -> Remote {
        match read {
            Read::Theirs(e) => e,
            other => panic!("not applied: {other:?}"),
        }
    }

    fn name(s: &str) -> Username {
        Username::new(s).unwrap()
    }

    fn every_kind() -> Vec<ClusterEvent> {
        use imchat_core::{CancelCode, ChatKind, FileName, Timestamp, TransferControl, TransferId};
        vec![
            ClusterEvent::Joined {
                user: name("alice"),
                id: MessageId(17),
            },
            ClusterEvent::Left {
                user: name("Zoë.k"),
                reason: LeaveReason::SHUTDOWN,
                text: "bye, all: see you".into(),
                id: MessageId(18),
            },
            ClusterEvent::Chat {
                from: name("alice"),
                to: Some(name("bob")),
                kind: ChatKind::Action,
                text: "waves  twice\nthen leaves ".into(),
                id: MessageId(41),
                time: Timestamp(1_699_999_999_999),
                client_id: 7,
            },
            ClusterEvent::Chat {
                from: name("alice"),
                to: None,
                kind: ChatKind::Text,
                text: String::new(),
                id: MessageId(42),
                time: Timestamp(1),
                client_id: 0,
            },
            ClusterEvent::Moved {
                user: name("carol"),
                from: 0,
            },
            ClusterEvent::Transfer(TransferControl::Offer {
                to: 9,
                relay: TransferId(0x8000_0003),
                from: name("alice"),
                users: vec![name("bob"), name("carol")],
                name: FileName::new("my notes.txt").unwrap(),
                size: 12345,
            }),
            ClusterEvent::Transfer(TransferControl::Answer {
                to: 9,
                relay: TransferId(3),
                accepted: 2,
            }),
            ClusterEvent::Transfer(TransferControl::Gone {
                to: 9,
                relay: TransferId(3),
                code: CancelCode::PEER_LEFT,
                reason: "bob did not accept the file".into(),
            }),
            ClusterEvent::Transfer(TransferControl::Delivered {
                to: 9,
                relay: TransferId(3),
                receivers: 2,
            }),
            ClusterEvent::Transfer(TransferControl::Dropped {
                to: 9,
                relay: TransferId(3),
                code: CancelCode::PEER_LEFT,
                reason: "the sender's server gave it up".into(),
            }),
            ClusterEvent::Transfer(TransferControl::Credit {
                to: 9,
                relay: TransferId(3),
                offset: 3 << 20,
            }),
            ClusterEvent::Kick {
                user: name("mallory"),
                text: "kicked by alice: spam,  spam\nand spam".into(),
            },
            ClusterEvent::Undelivered {
                from: name("alice"),
                to: name("bob"),
                text: "are you  there?\n".into(),
            },
            ClusterEvent::Away {
                user: name("dave"),
                since: Timestamp(1_699_999_999_999),
            },
            ClusterEvent::Back { user: name("dave") },
        ]
    }

    #[test]
    fn an_entry_of_each_kind_reads_back_as_published() {
        for event in every_kind() {
            let e = theirs(read1(9, b"1700000000000-2", published(12, 3, &event)));
            assert_eq!(e.event, event);
            assert_eq!((e.server, e.seq), (12, 3));
            assert_eq!(e.origin.server, 12);
            // Its stream position, as a log id.
            assert_eq!(
                e.origin.position,
                RemoteOrigin::position_id(1_700_000_000_000, 2)
            );
            if let ClusterEvent::Chat {
                id,
                time,
                client_id,
                ..
            } = event
            {
                assert_eq!(
                    (e.origin.id, e.origin.time, e.origin.client_id),
                    (id, time, client_id)
                );
            }
        }
        // A session's record is not a stream entry.
        let session = ClusterEvent::Session {
            user: name("alice"),
            token: imchat_core::ResumeToken([1; 16]),
        };
        let mut xadd = redis::cmd("XADD");
        assert!(!entry::encode(
            &mut xadd,
            1,
            1,
            &session,
            &mut String::new()
        ));
        assert_eq!(xadd.args_iter().count(), 1);
    }

    #[test]
    fn own_entries_and_others_controls_are_skipped_from_their_head() {
        let events = every_kind();
        // Our chat: its id and position are noted, nothing is applied.
        let mut fields = published(12, 3, &events[2]);
        // The rest of the entry is not even read.
        fields[3] = Value::Int(0);
        match read1(12, b"5-1", fields) {
            Read::Ours((id, position)) => {
                assert_eq!(id, MessageId(41));
                assert_eq!(position, RemoteOrigin::position_id(5, 1));
            }
            other => panic!("{other:?}"),
        }
        // Our own push control: nothing to note.
        assert!(matches!(
            read1(12, b"5-2", published(12, 4, &events[5])),
            Read::Skipped
        ));
        // Another server's push control for a third server.
        let mut fields = published(12, 5, &events[6]);
        fields.truncate(2);
        assert!(matches!(
            read1(8, b"5-3", fields),
            Read::Passed {
                server: 12,
                seq: 5,
                chat: None
            }
        ));
    }

    #[test]
    fn a_push_control_for_a_third_server_counts_in_its_sender_s_numbering() {
        let events = every_kind();
        let mut seen = Seen::default();
        let (mut ours, mut applied) = (Vec::new(), Vec::new());
        // Server 12's entries 4 (a chat), 5 (a push's control for server
        // 9) and 6 (a chat), as server 8 reads them: no loss.
        let mut lost = 0;
        for (seq, event, at) in [
            (4, &events[2], b"5-1"),
            (5, &events[6], b"5-2"),
            (6, &events[2], b"5-3"),
        ] {
            let mut reads = Vec::new();
            Remote::read(8.into(), at, published(12, seq, event), &mut reads);
            lost += seen.sort(&mut reads, &mut ours, &mut applied);
        }
        assert_eq!(lost, 0);
        // One missing after it is a loss.
        let mut reads = Vec::new();
        Remote::read(8.into(), b"5-5", published(12, 8, &events[0]), &mut reads);
        assert_eq!(seen.sort(&mut reads, &mut ours, &mut applied), 1);
    }

    #[test]
    fn a_malformed_entry_is_unreadable_and_skipped() {
        let v = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let chat = published(12, 3, &every_kind()[2]);
        let mut bad: Vec<Vec<Value>> = vec![
            Vec::new(),
            vec![v("e")],
            vec![v("s"), v("12"), v("q"), v("3")],
            vec![v("e"), v("12 x3 c 41 1 7 1 alice")],
            vec![v("e"), v("12 3 z 41")],
            // A chat without its sender, with a bad name, with an extra item.
            vec![v("e"), v("12 3 c 41 1 7 1"), v("x"), v("hi")],
            vec![v("e"), v("12 3 c 41 1 7 1 al!ce"), v("x"), v("hi")],
            vec![v("e"), v("12 3 c 41 1 7 2 alice"), v("x"), v("hi")],
            vec![
                v("e"),
                v("12 3 c 41 1 7 1 alice bob carol"),
                v("x"),
                v("hi"),
            ],
            // An offer to nobody; a text that is not UTF-8.
            vec![v("e"), v("12 3 f 9 o 3 10 alice"), v("n"), v("f.txt")],
            vec![
                v("e"),
                v("12 3 l 18 1 alice"),
                v("x"),
                Value::BulkString(vec![0xff, 0xfe]),
            ],
        ];
        for fields in bad.drain(..) {
            assert!(
                matches!(read1(9, b"1-0", fields.clone()), Read::Unreadable),
                "{fields:?}"
            );
        }
        // A good entry at a position that is not one.
        assert!(matches!(read1(9, b"17000", chat.clone()), Read::Unreadable));
        let mut parsed = Vec::new();
        Remote::parse(b"1-0", chat, &mut parsed);
        assert_eq!(parsed.len(), 1);
    }

    /// How a published entry is damaged: a field replaced by other
    /// bytes, one of a field's words (between spaces and newlines)
    /// replaced, a byte of a field changed, a field cut short, or fields
    /// dropped from the end.
    #[derive(Debug, Clone)]
    enum Damage {
        Replace(usize, Vec<u8>),
        Word(usize, usize, Vec<u8>),
        Flip(usize, usize, u8),
        Cut(usize, usize),
        Drop(usize),
    }

    fn damage() -> impl proptest::strategy::Strategy<Value = Damage> {
        use proptest::prelude::*;
        prop_oneof![
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(i, b)| Damage::Replace(i, b)),
            // Digits, spaces, newlines and the kinds' letters are what
            // the layout hangs on: they are tried most.
            (
                any::<usize>(),
                any::<usize>(),
                prop_oneof![
                    Just(b' '),
                    Just(b'\n'),
                    Just(b'0'),
                    Just(b'9'),
                    Just(b'b'),
                    Just(b'k'),
                    any::<u8>()
                ]
            )
                .prop_map(|(i, at, b)| Damage::Flip(i, at, b)),
            // The words the layout is made of: counts, lengths, ids and
            // kinds, at and past their limits.
            (
                any::<usize>(),
                any::<usize>(),
                prop_oneof![
                    Just(b"0".to_vec()),
                    Just(b"1".to_vec()),
                    Just(b"256".to_vec()),
                    Just(b"257".to_vec()),
                    Just(b"1024".to_vec()),
                    Just(b"4294967296".to_vec()),
                    Just(b"18446744073709551615".to_vec()),
                    Just(b"99999999999999999999".to_vec()),
                    Just(b"-1".to_vec()),
                    Just(Vec::new()),
                    Just(b"b".to_vec()),
                    Just(b"c".to_vec()),
                    Just(b"k".to_vec()),
                    Just(b"f".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..6),
                ]
            )
                .prop_map(|(i, k, w)| Damage::Word(i, k, w)),
            (any::<usize>(), any::<usize>()).prop_map(|(i, at)| Damage::Cut(i, at)),
            any::<usize>().prop_map(Damage::Drop),
        ]
    }

    fn damaged(mut fields: Vec<Value>, damages: &[Damage]) -> Vec<Value> {
        for d in damages {
            let n = fields.len().max(1);
            match d {
                Damage::Replace(i, b) => {
                    if let Some(f) = fields.get_mut(i % n) {
                        *f = Value::BulkString(b.clone());
                    }
                }
                Damage::Word(i, k, w) => {
                    if let Some(Value::BulkString(f)) = fields.get_mut(i % n) {
                        let words: Vec<(usize, usize)> = f
                            .split(|&c| c == b' ' || c == b'\n')
                            .scan(0, |at, word| {
                                let start = *at;
                                *at += word.len() + 1;
                                Some((start, word.len()))
                            })
                            .collect();
                        let (start, len) = words[k % words.len()];
                        f.splice(start..start + len, w.iter().copied());
                    }
                }
                Damage::Flip(i, at, b) => {
                    if let Some(Value::BulkString(f)) = fields.get_mut(i % n) {
                        if !f.is_empty() {
                            let at = at % f.len();
                            f[at] = *b;
                        }
                    }
                }
                Damage::Cut(i, at) => {
                    if let Some(Value::BulkString(f)) = fields.get_mut(i % n) {
                        f.truncate(at % (f.len() + 1));
                    }
                }
                Damage::Drop(k) => fields.truncate(fields.len() - k % n),
            }
        }
        fields
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// A damaged entry (by a faulty or hostile writer to Redis) is
        /// skipped or read as something a hub can take: it never panics
        /// the reader, which every server of the cluster runs on it.
        #[test]
        fn a_damaged_entry_never_panics_its_readers(
            which in 0usize..64,
            damages in proptest::collection::vec(damage(), 1..4),
            entry_id in proptest::prop_oneof![
                proptest::strategy::Just(b"1700000000000-2".to_vec()),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            ],
        ) {
            // A run of chat messages, the richest layout, half the time.
            let kinds = every_kind();
            let entry = if which < 32 {
                published_chats(12, 3, &chats(5))
            } else {
                published(12, 3, &kinds[which % kinds.len()])
            };
            let fields = damaged(entry, &damages);
            let now = Instant::now();
            let mut hub = Hub::new(imchat_core::Limits::default(), "");
            hub.enable_cluster();
            for me in [9, 12] {
                let mut out = Vec::new();
                Remote::read(me.into(), &entry_id, fields.clone(), &mut out);
                for r in out {
                    if let Read::Theirs(e) = r {
                        sessions::apply(e, &mut hub, now);
                    }
                }
            }
            while hub.poll_transmit().is_some() {}
            while hub.poll_event().is_some() {}
        }
    }

    /// The fields a run of chat messages is published with.
    fn published_chats(server: u64, seq: u64, chats: &[ClusterEvent]) -> Vec<Value> {
        let mut xadd = redis::cmd("XADD");
        entry::encode_chats(
            &mut xadd,
            server,
            seq,
            chats.iter(),
            &mut String::new(),
            &mut Vec::new(),
        );
        fields_of(&xadd)
    }

    #[test]
    fn a_former_run_s_entries_that_its_file_kept_read_as_our_own() {
        // Server 9 started on the file of server 12, which kept up to 101.
        let me = Me {
            id: 9,
            former: Some((12, MessageId(101))),
            kept_to: MessageId(0),
        };
        let mut out = Vec::new();
        Remote::read(
            me,
            b"1700000000000-2",
            published_chats(12, 3, &chats(4)),
            &mut out,
        );
        let kinds: Vec<String> = out
            .iter()
            .map(|r| match r {
                Read::Ours((id, _)) => format!("ours {}", id.0),
                Read::Theirs(e) => format!("theirs {}", e.origin.id.0),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["ours 100", "ours 101", "theirs 102", "theirs 103"]);
        // Of one event: by its id too.
        let join = |id| ClusterEvent::Joined {
            user: name("dave"),
            id: MessageId(id),
        };
        for (id, ours) in [(101, true), (102, false)] {
            out.clear();
            Remote::read(
                me,
                b"1700000000000-3",
                published(12, 9, &join(id)),
                &mut out,
            );
            assert_eq!(matches!(out[..], [Read::Ours(_)]), ours, "{id}: {out:?}");
        }
        // Another server's entries stay theirs; the former run's pushes
        // are over.
        out.clear();
        Remote::read(
            me,
            b"1700000000000-4",
            published(13, 9, &join(50)),
            &mut out,
        );
        assert!(matches!(out[..], [Read::Theirs(_)]), "{out:?}");
        for event in every_kind() {
            if let ClusterEvent::Transfer(_) = event {
                out.clear();
                Remote::read(me, b"1700000000000-5", published(12, 9, &event), &mut out);
                assert!(matches!(out[..], [Read::Skipped]), "{event:?}: {out:?}");
            }
        }
    }

    #[test]
    fn events_of_other_servers_the_history_kept_are_passed_over() {
        // The file kept the stream up to the second event of the entry at
        // 1700000000000-2: the two after it are read, none before.
        let at = |i| MessageId(RemoteOrigin::position_id(1_700_000_000_000, 2).0 + i);
        let me = Me {
            id: 9,
            former: None,
            kept_to: at(1),
        };
        let mut out = Vec::new();
        Remote::read(
            me,
            b"1700000000000-2",
            published_chats(13, 3, &chats(4)),
            &mut out,
        );
        let kinds: Vec<String> = out
            .iter()
            .map(|r| match r {
                Read::Passed { server, seq, chat } => {
                    format!("passed {server} {seq} {}", chat.map_or(0, |c| c.0))
                }
                Read::Theirs(e) => format!("theirs {}", e.origin.position.0 - at(0).0),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["passed 13 3 100", "passed 13 4 101", "theirs 2", "theirs 3"]
        );
        // The chats passed over are known by their log ids: published
        // again later (after a rejoin, under new numbers), not applied.
        let whole = Me {
            kept_to: at(3),
            ..me
        };
        out.clear();
        Remote::read(
            whole,
            b"1700000000000-2",
            published_chats(13, 3, &chats(4)),
            &mut out,
        );
        let mut seen = Seen::default();
        let (mut ours, mut events) = (Vec::new(), Vec::new());
        seen.sort(&mut out, &mut ours, &mut events);
        assert!(events.is_empty(), "{events:?}");
        Remote::read(
            whole,
            b"1700000000001-0",
            published_chats(13, 20, &chats(2)),
            &mut out,
        );
        events.clear();
        seen.sort(&mut out, &mut ours, &mut events);
        assert!(events.is_empty(), "{events:?}");
        // An entry of one event: by its position.
        let join = ClusterEvent::Joined {
            user: name("dave"),
            id: MessageId(50),
        };
        for (entry, kept) in [(&b"1700000000000-2"[..], true), (b"1700000000000-3", false)] {
            out.clear();
            Remote::read(me, entry, published(13, 9, &join), &mut out);
            assert_eq!(
                matches!(
                    out[..],
                    [Read::Passed {
                        server: 13,
                        seq: 9,
                        chat: None
                    }]
                ),
                kept,
                "{out:?}"
            );
        }
    }

    fn chats(n: u64) -> Vec<ClusterEvent> {
        use imchat_core::{ChatKind, Timestamp};
        (0..n)
            .map(|i| ClusterEvent::Chat {
                from: name(if i % 2 == 0 { "alice" } else { "Zoë.k" }),
                to: (i == 1).then(|| name("bob")),
                kind: if i == 2 {
                    ChatKind::Action
                } else {
                    ChatKind::Text
                },
                // Texts with spaces, newlines and digits, and an empty one.
                text: match i {
                    0 => "hello\n12\nthere ".into(),
                    3 => String::new(),
                    _ => format!("message {i}"),
                },
                id: MessageId(100 + i),
                time: Timestamp(1_700_000_000_000 + i),
                client_id: 7 + i,
            })
            .collect()
    }

    #[test]
    fn a_run_of_chats_is_one_entry_with_a_position_and_a_number_per_message() {
        let sent = chats(5);
        let fields = published_chats(12, 40, &sent);
        // Two fields: the head and the messages.
        assert_eq!(fields.len(), 4);
        let mut out = Vec::new();
        let last = Remote::read(9.into(), b"1700000000000-2", fields.clone(), &mut out);
        let at = |i: u64| MessageId(RemoteOrigin::position_id(1_700_000_000_000, 2).0 + i);
        assert_eq!(last, Some(at(4)));
        assert_eq!(out.len(), 5);
        for ((i, read), event) in (0..).zip(out).zip(&sent) {
            let e = theirs(read);
            assert_eq!(&e.event, event);
            assert_eq!((e.server, e.seq), (12, 40 + i));
            assert_eq!(e.origin.position, at(i));
            assert_eq!(
                (e.origin.id, e.origin.time.0, e.origin.client_id),
                (MessageId(100 + i), 1_700_000_000_000 + i, 7 + i)
            );
        }
        // Its own server notes each message's id and position.
        let mut out = Vec::new();
        Remote::read(12.into(), b"1700000000000-2", fields.clone(), &mut out);
        let ours: Vec<(MessageId, MessageId)> = out
            .into_iter()
            .map(|r| match r {
                Read::Ours(p) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ours,
            (0..5)
                .map(|i| (MessageId(100 + i), at(i)))
                .collect::<Vec<_>>()
        );
        // A server joining later counts the entry's last message as read.
        assert_eq!(
            entry::last_position(b"1700000000000-2", &fields),
            Some(at(4))
        );
        let mut history = Vec::new();
        Remote::parse(b"1700000000000-2", fields, &mut history);
        assert_eq!(history.len(), 5);
    }

    #[test]
    fn a_malformed_run_of_chats_is_unreadable() {
        let good = published_chats(12, 40, &chats(3));
        let Value::BulkString(body) = &good[3] else {
            panic!("not bytes");
        };
        let with = |head: &str, body: &[u8]| {
            vec![
                Value::BulkString(b"e".to_vec()),
                Value::BulkString(head.as_bytes().to_vec()),
                Value::BulkString(b"m".to_vec()),
                Value::BulkString(body.to_vec()),
            ]
        };
        let mut long = body.clone();
        long.push(b'x');
        let mut bad_utf8 = body.clone();
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xff;
        let bad = [
            // More messages than it holds, fewer, none, too many.
            with("12 40 b 4", body),
            with("12 40 b 2", body),
            with("12 40 b 0", b""),
            with(&format!("12 40 b {}", entry::MAX_PER_ENTRY + 1), body),
            // Cut short, a byte too many.
            with("12 40 b 3", &body[..body.len() - 1]),
            with("12 40 b 3", &long),
            // Another kind inside.
            with("12 40 b 1", b"j 5 alice\n0\n"),
            // Numbers that would run past the largest.
            with(&format!("12 {} b 3", u64::MAX - 1), body),
        ];
        let read = |fields: Vec<Value>| {
            let mut out = Vec::new();
            Remote::read(9.into(), b"1-0", fields, &mut out);
            out
        };
        for fields in bad {
            let out = read(fields.clone());
            assert!(matches!(out[..], [Read::Unreadable]), "{fields:?}: {out:?}");
        }
        for fields in [
            // A sender's name is checked in each message, not only the first.
            with(
                "12 40 b 3",
                b"c 5 1 7 0 alice\n2\nhic 6 1 8 0 alice\n2\nhoc 7 1 9 0 al!ce\n2\nha",
            ),
            // A text that is not UTF-8: that message alone is unreadable.
            with("12 40 b 3", &bad_utf8),
        ] {
            let out = read(fields);
            assert!(
                matches!(
                    out[..],
                    [Read::Theirs(_), Read::Theirs(_), Read::Unreadable]
                ),
                "{out:?}"
            );
        }
        assert_eq!(read(good).len(), 3);
    }

    #[test]
    fn a_run_is_the_chats_numbered_without_a_gap_and_no_more_than_an_entry_holds() {
        let session = ClusterEvent::Session {
            user: name("alice"),
            token: imchat_core::ResumeToken([1; 16]),
        };
        let join = every_kind()[0].clone();
        let chat = chats(1).remove(0);
        let numbered = |events: &[ClusterEvent]| -> Vec<(u64, ClusterEvent)> {
            (5..).zip(events.iter().cloned()).collect()
        };
        let batch = numbered(&[
            chat.clone(),
            chat.clone(),
            chat.clone(),
            join.clone(),
            chat.clone(),
        ]);
        assert_eq!(chat_run(&batch), 3);
        assert_eq!(chat_run(&batch[3..]), 0);
        assert_eq!(chat_run(&batch[4..]), 1);
        assert_eq!(chat_run(&[]), 0);
        // A session record (not on the stream) ends a run.
        let batch = numbered(&[chat.clone(), session, chat.clone()]);
        assert_eq!(chat_run(&batch), 1);
        // A gap in the numbers ends a run.
        let batch = vec![(5, chat.clone()), (6, chat.clone()), (8, chat.clone())];
        assert_eq!(chat_run(&batch), 2);
        let long = numbered(&vec![chat; entry::MAX_PER_ENTRY + 3]);
        assert_eq!(chat_run(&long), entry::MAX_PER_ENTRY);
    }

    #[test]
    fn an_xread_reply_gives_its_entries_in_order() {
        let v = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str| Value::Array(vec![v(id), Value::Array(vec![v("e"), v(id)])]);
        let list = Value::Array(vec![entry("1-0"), entry("1-1"), entry("2-0")]);
        let ids = |r: Vec<(Vec<u8>, Vec<Value>)>| -> Vec<String> {
            r.into_iter()
                .map(|(id, f)| {
                    assert_eq!(f[1], Value::BulkString(id.clone()));
                    String::from_utf8(id).unwrap()
                })
                .collect()
        };
        let want = ["1-0", "1-1", "2-0"];
        let resp2 = Value::Array(vec![Value::Array(vec![v(BUS), list.clone()])]);
        assert_eq!(ids(entry::read_reply(resp2)), want);
        let resp3 = Value::Map(vec![(v(BUS), list.clone())]);
        assert_eq!(ids(entry::read_reply(resp3)), want);
        assert_eq!(ids(entry::range_reply(list)), want);
        // XREAD BLOCK that timed out.
        assert!(entry::read_reply(Value::Nil).is_empty());
    }
}
