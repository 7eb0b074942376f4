//! Accounts and bans of a cluster (`--redis`), kept in Redis so that every
//! server of the cluster sees the same ones.
//!
//! - `imchat:accounts`: a hash, name key → the Argon2id PHC string of its
//!   password (see [`crate::accounts`]). A registration is an `HSETNX`, so
//!   of two servers registering one name at once exactly one succeeds.
//! - `imchat:bans`: a hash, ban target (a name or an address) →
//!   `seq\tby\treason`, where `seq` comes from `INCR imchat:bans:seq` and
//!   orders the bans oldest first. A server writes only the difference
//!   between the bans it knew and its hub's new list, so two servers
//!   banning different targets at once keep both.
//! - `imchat:mark`: a random value, set by the first server that finds
//!   none (no expiry). Each server remembers the one it last read with the
//!   bans; another one, or none, means that Redis lost its data since
//!   (restarted without persistence, or flushed).
//!
//! Every account check reads Redis: when it cannot be reached, the check
//! fails (the hub then refuses the login as "cannot check accounts now")
//! and so does a registration; a protected name is never let in unchecked.
//! Bans are read again every [`BAN_POLL`] by a thread of their own and
//! handed to the hub at its next tick, so a ban made on one server refuses
//! new connections and joins on every other within about a second and a
//! quarter. While Redis is unreachable a server keeps the bans it has,
//! and one made meanwhile is written once Redis is back. A server that
//! finds that Redis lost its data writes back every ban it holds (those
//! Redis has not got again from another server meanwhile: `HSETNX`), so
//! the bans outlive a Redis without persistence as long as one server
//! that knew them does; the accounts cannot be given back that way (no
//! server holds them), so it says in its log that they are gone: once
//! per episode ([`Losses`]), as a Redis that evicts keys loses the mark
//! again at every poll while evictions go on.
//! No password, hash or URL password is ever logged.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::link::Connection;
use imchat_core::{Ban, BanTarget};

/// The hash of the accounts.
pub const ACCOUNTS_KEY: &str = "imchat:accounts";
/// The hash of the bans.
pub const BANS_KEY: &str = "imchat:bans";
/// The counter that orders the bans.
const BAN_SEQ_KEY: &str = "imchat:bans:seq";
/// The mark of Redis's data: gone, or another, once Redis lost its data.
pub const MARK_KEY: &str = "imchat:mark";
/// Sets the mark if there is none (to `ARGV[1]`), and returns it.
const MARK: &str = "redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])";
/// How often the bans are read again.
pub const BAN_POLL: Duration = Duration::from_secs(1);
/// Polls of the bans that fail in a row before the outage is logged.
const POLLS_TO_AN_OUTAGE: u32 = 2;
/// The longest a Redis connect, read or write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the mark must hold for an episode of lost data to be over
/// (see [`Losses`]).
pub const LOSSES_QUIET: Duration = Duration::from_secs(60);
/// After a failed connect, calls fail at once for this long (a login does
/// not wait a whole connect timeout behind every other one).
const RETRY_AFTER: Duration = Duration::from_millis(500);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection and when it last failed.
struct Link {
    con: Option<Connection>,
    failed_at: Option<Instant>,
}

/// Accounts and bans in Redis.
pub struct RedisAccounts {
    client: crate::cluster::link::Redis,
    /// The URL, as it may be logged.
    shown_url: String,
    link: Mutex<Link>,
    /// The bans as this server last knew them (read or written), which its
    /// writes are the difference from.
    known: Mutex<Vec<Ban>>,
    /// Bans read from Redis that differ from what the hub has, waiting for
    /// its next tick.
    fresh: Mutex<Option<Vec<Ban>>>,
    /// A list of bans that could not be written; written again at the next
    /// poll.
    unsaved: Mutex<Option<Vec<Ban>>>,
    /// Polls failed in a row: an outage is logged once, at the second (a
    /// Redis restarting refuses connections for a moment, which is no
    /// outage), not every second.
    poll_failing: Mutex<u32>,
    /// The mark of Redis's data read with `known` (see [`MARK_KEY`]);
    /// `None` until Redis was first read.
    mark: Mutex<Option<String>>,
    /// The losses of Redis's data, said once per episode.
    losses: Mutex<Losses>,
}

impl std::fmt::Debug for RedisAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisAccounts(..)")
    }
}

impl RedisAccounts {
    /// Accounts and bans in the Redis at `url` (with `tls`, as for
    /// [`crate::cluster::client`]). Nothing is connected yet.
    ///
    /// # Errors
    ///
    /// As [`crate::cluster::client`].
    pub fn open(url: &str, tls: &crate::cluster::RedisTls) -> Result<Arc<RedisAccounts>, String> {
        let client = crate::cluster::client(url, tls)?;
        Ok(Arc::new(RedisAccounts {
            client,
            shown_url: crate::cluster::redacted(url),
            link: Mutex::new(Link {
                con: None,
                failed_at: None,
            }),
            known: Mutex::new(Vec::new()),
            fresh: Mutex::new(None),
            unsaved: Mutex::new(None),
            poll_failing: Mutex::new(0),
            mark: Mutex::new(None),
            losses: Mutex::new(Losses::default()),
        }))
    }

    /// Whether a server of the cluster holds the name of key `key` (the
    /// server's name key) now: its user is connected, or its session
    /// waits for a resume.
    ///
    /// # Errors
    ///
    /// Redis cannot be asked; the text says why.
    pub fn name_held(&self, key: &str) -> Result<bool, String> {
        self.with(|con| {
            redis::cmd("EXISTS")
                .arg(crate::cluster::name_key(key))
                .query::<bool>(con)
        })
    }

    /// Runs `f` on the connection, connecting first if needed. A call that
    /// fails on a connection opened earlier is tried once more on a fresh
    /// one (Redis may have restarted since: the old socket is dead, Redis
    /// is not); only a failed connect makes the next calls fail at once for
    /// [`RETRY_AFTER`].
    fn with<R>(
        &self,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<R>,
    ) -> Result<R, String> {
        let mut link = lock(&self.link);
        for fresh in [false, true] {
            if fresh || link.con.is_none() {
                link.con = None;
                if !fresh && link.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                    return Err("Redis is unreachable".into());
                }
                match self.client.connect(IO_TIMEOUT) {
                    Ok(c) => link.con = Some(c),
                    Err(e) => {
                        link.failed_at = Some(Instant::now());
                        return Err(format!(
                            "Redis {}",
                            crate::cluster::failure_said(&self.client, &e)
                        ));
                    }
                }
            }
            let Some(con) = link.con.as_mut() else {
                return Err("Redis is unreachable".into());
            };
            match f(con) {
                Ok(r) => {
                    link.failed_at = None;
                    return Ok(r);
                }
                Err(e) if fresh => {
                    link.con = None;
                    link.failed_at = Some(Instant::now());
                    // Redis refusing the URL's settings (no password given,
                    // say: the connect succeeds, the first request fails)
                    // is told as the cluster's own line tells it.
                    return Err(if crate::cluster::refuses_settings(&e) {
                        format!("Redis {}", crate::cluster::failure_said(&self.client, &e))
                    } else {
                        format!(
                            "Redis failed: {}",
                            crate::cluster::said_to(&self.client, &e)
                        )
                    });
                }
                Err(_) => {}
            }
        }
        Err("Redis is unreachable".into())
    }

    /// The mark of Redis's data (set first if Redis has none) and the
    /// bans in Redis, oldest first: read on one connection, so from one
    /// run of Redis.
    fn read_state(&self) -> Result<(String, Vec<Ban>), String> {
        let candidate = new_mark();
        let script = redis::Script::new(MARK);
        let (mark, raw): (String, Vec<(String, String)>) = self.with(|c| {
            let mark: String = script.key(MARK_KEY).arg(&candidate).invoke(c)?;
            let raw = redis::cmd("HGETALL").arg(BANS_KEY).query(c)?;
            Ok((mark, raw))
        })?;
        Ok((mark, parse_bans(raw)?))
    }

    /// Writes every ban of `bans` that Redis has none for (of its target),
    /// in their order: into a Redis that lost its data.
    fn write_back(&self, bans: &[Ban]) -> Result<(), String> {
        self.with(|c| {
            for ban in bans {
                put_ban(c, "HSETNX", ban)?;
            }
            Ok(())
        })
    }

    /// Writes the difference between `known` and `bans`.
    fn write_bans(&self, known: &[Ban], bans: &[Ban]) -> Result<(), String> {
        let removed: Vec<String> = known
            .iter()
            .filter(|k| !bans.iter().any(|b| b.target == k.target))
            .map(|k| k.target.to_string())
            .collect();
        let added: Vec<&Ban> = bans.iter().filter(|b| !known.contains(b)).collect();
        self.with(|c| {
            for target in &removed {
                redis::cmd("HDEL")
                    .arg(BANS_KEY)
                    .arg(target)
                    .query::<()>(c)?;
            }
            for ban in &added {
                put_ban(c, "HSET", ban)?;
            }
            Ok(())
        })
    }

    /// Reads the bans again (writing first any that could not be written,
    /// or, into a Redis that lost its data, every ban this server holds):
    /// a changed list waits in `fresh` for the hub.
    fn poll(&self) {
        // Held throughout, so that a save cannot slip between the read and
        // the comparison (and be undone until the next poll).
        let mut known = lock(&self.known);
        // Taken out, not borrowed: a failed write puts it back.
        let unsaved = lock(&self.unsaved).take();
        match self.sync(&mut known, unsaved.as_deref()) {
            Ok(()) => {
                if std::mem::take(&mut *lock(&self.poll_failing)) >= POLLS_TO_AN_OUTAGE {
                    log::info!("bans: Redis is reachable again");
                }
            }
            Err(e) => {
                if unsaved.is_some() {
                    *lock(&self.unsaved) = unsaved;
                }
                let mut failing = lock(&self.poll_failing);
                *failing = failing.saturating_add(1);
                if *failing == POLLS_TO_AN_OUTAGE {
                    log::warn!("bans: cannot read them from Redis ({e}); keeping those in force");
                }
            }
        }
    }

    /// One [`poll`](Self::poll), `known` held: `unsaved`, the hub's list
    /// that could not be written, if any.
    fn sync(&self, known: &mut Vec<Ban>, unsaved: Option<&[Ban]>) -> Result<(), String> {
        let (mark, bans) = self.read_state()?;
        let lost = lock(&self.mark).as_ref().is_some_and(|m| *m != mark);
        let (mark, bans) = if lost || unsaved.is_some() {
            // What the hub has (its own newer list, if it could not be
            // written) is what this server holds.
            let held = unsaved.map_or_else(|| known.clone(), <[Ban]>::to_vec);
            if lost {
                self.write_back(&held)?;
                if lock(&self.losses).lost(Instant::now()) {
                    log::warn!(
                        "Redis at {} lost its data (restarted without persistence, or flushed): the registrations (/register) and their password hashes kept there are gone, so those names are unprotected until registered again; run Redis with persistence (appendonly yes, or RDB snapshots) to keep accounts. This server wrote back the {} ban(s) it holds (said once: losses again before its data has held for {} s, as a maxmemory-policy that evicts keys causes, are counted)",
                        self.shown_url,
                        held.len(),
                        LOSSES_QUIET.as_secs()
                    );
                }
            } else {
                self.write_bans(known, &held)?;
            }
            *known = held;
            // The hub has these already: a list read before must not
            // undo them.
            *lock(&self.fresh) = None;
            *lock(&self.mark) = Some(mark);
            self.read_state()?
        } else {
            (mark, bans)
        };
        if lock(&self.mark).as_ref().is_some_and(|m| *m != mark) {
            // Lost again since: the next poll writes them back.
            return Ok(());
        }
        *lock(&self.mark) = Some(mark);
        if let Some(again) = lock(&self.losses).held(Instant::now()) {
            log::warn!(
                "Redis at {} lost its data {again} more time(s) after the warning (its data has held for {} s now)",
                self.shown_url,
                LOSSES_QUIET.as_secs()
            );
        }
        if *known != bans {
            log::info!("bans: {} in force across the cluster", bans.len());
            known.clone_from(&bans);
            *lock(&self.fresh) = Some(bans);
        }
        Ok(())
    }

    /// Starts the thread that reads the bans every [`BAN_POLL`].
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn watch_bans(self: &Arc<Self>) -> Result<(), String> {
        let me = Arc::downgrade(self);
        thread::Builder::new()
            .name("bans".into())
            .stack_size(256 * 1024)
            .spawn(move || loop {
                thread::sleep(BAN_POLL);
                let Some(me) = me.upgrade() else { return };
                me.poll();
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start a thread: {e}"))
    }
}

impl crate::accounts::AccountStore for RedisAccounts {
    fn hash_of(&self, key: &str) -> Result<Option<String>, String> {
        self.with(|c| redis::cmd("HGET").arg(ACCOUNTS_KEY).arg(key).query(c))
    }

    fn insert(&self, key: &str, _name: &str, hash: &str) -> Result<bool, String> {
        self.with(|c| {
            redis::cmd("HSETNX")
                .arg(ACCOUNTS_KEY)
                .arg(key)
                .arg(hash)
                .query(c)
        })
    }

    fn remove(&self, key: &str) -> Result<bool, String> {
        self.with(|c| {
            redis::cmd("HDEL")
                .arg(ACCOUNTS_KEY)
                .arg(key)
                .query::<u64>(c)
                .map(|n| n > 0)
        })
    }
}

impl crate::accounts::BanStore for RedisAccounts {
    /// The bans in Redis; none (with a warning) when it cannot be reached,
    /// so that a server starts during an outage: they come at the first
    /// poll that reaches Redis.
    fn load_bans(&self) -> Result<Vec<Ban>, String> {
        match self.read_state() {
            Ok((mark, bans)) => {
                lock(&self.known).clone_from(&bans);
                *lock(&self.mark) = Some(mark);
                Ok(bans)
            }
            Err(e) => {
                log::warn!(
                    "bans: cannot read them from Redis ({e}); they apply once it is reachable"
                );
                *lock(&self.poll_failing) = POLLS_TO_AN_OUTAGE;
                Ok(Vec::new())
            }
        }
    }

    fn save_bans(&self, bans: &[Ban]) -> Result<(), String> {
        let mut known = lock(&self.known);
        match self.write_bans(&known, bans) {
            Ok(()) => {
                *known = bans.to_vec();
                // The hub has these already; a poll that read Redis before
                // this write must not undo them.
                *lock(&self.fresh) = None;
                Ok(())
            }
            Err(e) => {
                *lock(&self.unsaved) = Some(bans.to_vec());
                Err(format!("{e} (written again once Redis is reachable)"))
            }
        }
    }

    fn fresh_bans(&self) -> Option<Vec<Ban>> {
        lock(&self.fresh).take()
    }
}

/// The losses of Redis's data, told once per episode: a Redis that evicts
/// keys (a `maxmemory-policy` other than `noeviction`) loses the mark at
/// every poll while evictions go on, and the warning (some 400
/// characters) was logged every second. An episode starts at a loss (the
/// warning is logged), goes on while the next one comes within
/// [`LOSSES_QUIET`] of the last (counted, not logged), and ends once the
/// mark has held that long (its count logged, if any), as the server's
/// other repeated warnings (a failing history checkpoint, the connections
/// of one address) are told.
#[derive(Debug, Default)]
struct Losses {
    /// The last loss of the episode going on, and the losses after its
    /// first.
    episode: Option<(Instant, u64)>,
}

impl Losses {
    /// A loss at `now`: whether to log the warning (the first of an
    /// episode).
    fn lost(&mut self, now: Instant) -> bool {
        match &mut self.episode {
            Some((last, again)) if now.saturating_duration_since(*last) < LOSSES_QUIET => {
                *last = now;
                *again += 1;
                false
            }
            _ => {
                self.episode = Some((now, 0));
                true
            }
        }
    }

    /// The mark held at `now`: the losses counted after the warning, once
    /// the episode is over and had any.
    fn held(&mut self, now: Instant) -> Option<u64> {
        let (last, again) = self.episode?;
        if now.saturating_duration_since(last) < LOSSES_QUIET {
            return None;
        }
        self.episode = None;
        (again > 0).then_some(again)
    }
}

/// A new mark of Redis's data: 16 random bytes, in hex.
fn new_mark() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Any value another server is unlikely to draw will do.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (now ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bans of `HGETALL imchat:bans`, oldest first.
fn parse_bans(raw: Vec<(String, String)>) -> Result<Vec<Ban>, String> {
    let mut bans = Vec::with_capacity(raw.len());
    for (target, value) in raw {
        let mut parts = value.splitn(3, '\t');
        let (Some(seq), Some(by), Some(reason)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("a ban in {BANS_KEY} is not seq\\tby\\treason"));
        };
        let seq: u64 = seq
            .parse()
            .map_err(|_| format!("a ban in {BANS_KEY} has no sequence number"))?;
        let target = BanTarget::parse(&target)
            .map_err(|e| format!("a ban in {BANS_KEY} is not valid: {e}"))?;
        bans.push((
            seq,
            Ban {
                target,
                by: by.to_string(),
                reason: reason.to_string(),
            },
        ));
    }
    bans.sort_by_key(|(seq, _)| *seq);
    Ok(bans.into_iter().map(|(_, b)| b).collect())
}

/// Writes `ban` into the bans hash with `command` (`HSET`, or `HSETNX` to
/// keep one already there), numbered after every ban written before.
fn put_ban(c: &mut Connection, command: &str, ban: &Ban) -> redis::RedisResult<()> {
    let seq: u64 = redis::cmd("INCR").arg(BAN_SEQ_KEY).query(c)?;
    redis::cmd(command)
        .arg(BANS_KEY)
        .arg(ban.target.to_string())
        .arg(format!("{seq}\t{}\t{}", ban.by, ban.reason))
        .query::<()>(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_of_redis_data_are_said_once_per_episode_then_counted() {
        let mut losses = Losses::default();
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        assert!(losses.lost(t0), "the first loss is said");
        assert_eq!(losses.held(t0), None);
        // Evictions: a loss at every poll, for longer than the quiet time.
        let mut said = 0;
        for i in 1..=90 {
            if losses.lost(t0 + sec * i) {
                said += 1;
            }
            assert_eq!(losses.held(t0 + sec * i), None, "{i}");
        }
        assert_eq!(said, 0);
        let last = t0 + sec * 90;
        assert_eq!(losses.held(last + LOSSES_QUIET - sec), None);
        assert_eq!(losses.held(last + LOSSES_QUIET), Some(90));
        assert_eq!(losses.held(last + LOSSES_QUIET * 2), None, "said once");
        // A loss long after is another episode: said again, and alone it
        // ends with nothing more to say.
        let later = last + LOSSES_QUIET * 3;
        assert!(losses.lost(later));
        assert_eq!(losses.held(later + LOSSES_QUIET), None);
        assert!(losses.lost(later + LOSSES_QUIET * 2));
    }
}
