//! Sessions and history shared by the servers of a cluster.
//!
//! - `imchat:sess:<key>`: a hash per resumable session: `u` the user's
//!   name, `h` the SHA-256 of its resume token (hex; empty once taken),
//!   `s` the server it is on, `k` the text of a kick of its user (until
//!   its server carries the kick out, no other server takes it over).
//!   Written when the session gets a token (join, resume), renewed with the lease by its server, kept for the grace
//!   period plus the lease after its server stops renewing it (a server
//!   killed with its users in it), deleted when the user leaves.
//! - `imchat:epoch`: the cluster's epoch, sent in every `Welcome` of every
//!   server: a token of one server resumes on any other of the same epoch.
//!
//! Resuming on another server ([`Cluster::take_session`]) is one Lua
//! script: the token's hash must match, the name must be free or held by
//! the session's own server, and then the name's claim and the session
//! move to this server and the hash is emptied (a token works once).

use std::fmt::Write as _;

use imchat_core::{Hub, LogEvent, MessageId, ResumeToken, Username};
use redis::{Script, Value};

use super::link::Connection;

use super::{lock, name_key, Cluster, BUS};

/// The cluster's epoch key.
pub(super) const EPOCH: &str = "imchat:epoch";

/// Takes the session of `KEYS[1]` (name claim `KEYS[2]`) for server
/// `ARGV[2]` if its token hash is `ARGV[1]` and its user was not kicked:
/// `{1, from, user}`, else `{0}`. `from` is the server whose ids its
/// client saw: the one it was on, or, for a session a restarted server
/// took back and its client has not resumed there yet, the run before
/// (field `o`, see [`ADOPT`]).
/// The name's lease is `ARGV[3]` ms, the session's `ARGV[4]` ms.
/// The name's lease is `ARGV[3]` ms, the session's `ARGV[4]` ms.
const TAKE: &str = r"
local h = redis.call('HGET', KEYS[1], 'h')
if not h or h == '' or h ~= ARGV[1] then
  return {0}
end
if redis.call('HEXISTS', KEYS[1], 'k') == 1 then
  return {0}
end
local on = redis.call('HGET', KEYS[1], 's')
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= on and holder ~= ARGV[2] then
  return {0}
end
local from = redis.call('HGET', KEYS[1], 'o') or on
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 's', ARGV[2], 'h', '')
redis.call('HDEL', KEYS[1], 'o')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, from, redis.call('HGET', KEYS[1], 'u')}
";

/// Moves session `KEYS[1]` and its name `KEYS[2]` from server `ARGV[1]`
/// (the former run of this one, on the same `--history-db`) to server
/// `ARGV[2]` if its token's hash is still `ARGV[3]`, and nobody else
/// claimed the name; the name for `ARGV[4]` ms, the session for `ARGV[5]`
/// ms. Keeps the token's hash: the client can still resume it on any
/// server, from the run before's ids (noted as its origin, `o`, until
/// its client resumes). Returns `{1, ms}` when moved, with the milliseconds the record
/// had left (its grace plus a lease from the dead run's last renewal);
/// `{2}` when the record is gone (the
/// session ended); `{3, text}` when it was kicked; `{4, server}` when
/// it moved to another server; `{0}` otherwise.
pub(super) const ADOPT: &str = r"
local s = redis.call('HGET', KEYS[1], 's')
if not s then
  return {2}
end
local kick = redis.call('HGET', KEYS[1], 'k')
if kick then
  return {3, kick}
end
if s ~= ARGV[1] then
  if s == ARGV[2] then
    return {0}
  end
  return {4, s}
end
if redis.call('HGET', KEYS[1], 'h') ~= ARGV[3] then
  return {0}
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] and holder ~= ARGV[2] then
  return {0}
end
local left = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('HSET', KEYS[1], 's', ARGV[2], 'o', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, left}
";

/// Deletes the session `KEYS[1]` if server `ARGV[1]` holds it.
pub(super) const FORGET: &str = r"
if redis.call('HGET', KEYS[1], 's') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Deletes the session `KEYS[1]` if the server that holds it is gone
/// (its heartbeat ran out): a session of a live server ends with it.
const FORGET_ORPHAN: &str = r"
local s = redis.call('HGET', KEYS[1], 's')
if s and redis.call('EXISTS', 'imchat:srv:' .. s) == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The session `KEYS[1]` of a user an operator kicked (`ARGV[1]`, the
/// text): deleted if the server that holds it is gone, else marked (`k`,
/// the text) so that no other server takes it over before its own server
/// carries the kick out (a server that died unnoticed never does; its
/// sessions end with it).
const KICK: &str = r"
local s = redis.call('HGET', KEYS[1], 's')
if not s then
  return 0
end
if redis.call('EXISTS', 'imchat:srv:' .. s) == 0 then
  return redis.call('DEL', KEYS[1])
end
return redis.call('HSET', KEYS[1], 'k', ARGV[1])
";

/// Writes the session `KEYS[1]` (user `ARGV[1]`, token hash `ARGV[2]`, on
/// server `ARGV[3]`, kept `ARGV[4]` ms) unless Redis has a record of it:
/// a server rejoining a Redis that lost its data gives its sessions back,
/// and leaves alone any that moved or that another server wrote since.
const RESTORE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'h', ARGV[2], 's', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// The command that runs [`RESTORE`] for `user`'s session with `token`,
/// on server `server`, kept `ms` milliseconds.
pub(super) fn restore(user: &Username, token: &ResumeToken, server: u64, ms: u64) -> redis::Cmd {
    let mut cmd = on_session(RESTORE, user);
    cmd.arg(user.as_str())
        .arg(token_hash(token))
        .arg(server)
        .arg(ms);
    cmd
}

/// The command that runs [`KICK`] for `user`'s session, kicked `text`.
pub(super) fn kick(user: &Username, text: &str) -> redis::Cmd {
    let mut cmd = on_session(KICK, user);
    cmd.arg(text);
    cmd
}

/// The command that runs [`FORGET_ORPHAN`] for `user`'s session.
pub(super) fn forget_orphan(user: &Username) -> redis::Cmd {
    on_session(FORGET_ORPHAN, user)
}

/// `EVAL` of `script` with `user`'s session record as its one key.
fn on_session(script: &str, user: &Username) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script)
        .arg(1)
        .arg(sess_key(&crate::names::key(user)));
    cmd
}

/// The session key of name key `key`.
pub(super) fn sess_key(key: &str) -> String {
    format!("imchat:sess:{key}")
}

/// What Redis keeps of a token: its SHA-256, in hex.
pub(super) fn token_hash(token: &ResumeToken) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, &token.0);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// How a session kept from this server's run before ended meanwhile.
enum Ended {
    /// Its grace ran out.
    Over,
    /// Kicked, with this text.
    Kicked(String),
    /// Resumed on this server.
    Moved(u64),
}

/// A session taken over from another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The server it was on.
    pub from: u64,
    /// The user's registered name.
    pub user: Username,
    /// The text of a kick of its user that reached Redis after the session
    /// moved (its old server had not carried it out): it is not taken over.
    pub kicked: Option<String>,
}

impl Cluster {
    /// The cluster's epoch, once this server has joined (0 before).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The session's lease in Redis: the grace period plus the lease.
    pub(super) fn session_ms(&self) -> u64 {
        u64::try_from((self.grace + self.lease).as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Moves the session of name key `key` to this server if `token` is
    /// its token and `epoch` the cluster's; `None` if not (the client then
    /// joins afresh, if the name is free) or if Redis cannot be asked.
    pub fn take_session(&self, key: &str, token: &ResumeToken, epoch: u64) -> Option<Taken> {
        if epoch == 0 || epoch != self.epoch() || token.is_none() {
            return None;
        }
        let reply = self.on_claims(|con| {
            Script::new(TAKE)
                .key(sess_key(key))
                .key(name_key(key))
                .arg(token_hash(token))
                .arg(self.id)
                .arg(self.lease_ms())
                .arg(self.session_ms())
                .invoke::<Vec<Value>>(con)
        })?;
        let text = |v: &Value| redis::from_redis_value_ref::<String>(v).ok();
        match reply.as_slice() {
            [ok, from, user] if redis::from_redis_value_ref::<i64>(ok).ok() == Some(1) => {
                Some(Taken {
                    from: text(from)?.parse().ok()?,
                    user: Username::new(text(user)?).ok()?,
                    kicked: None,
                })
            }
            _ => None,
        }
    }

    /// Takes back from the former run of this server (see
    /// [`Cluster::set_former`]) the sessions its file kept, with their
    /// names, where the cluster still has them as that run left them:
    /// their clients resume here as on a single server. At the first join
    /// after the start (`first`), a kept session the cluster has no more
    /// ended while this server was down: its grace ran out (unless Redis
    /// itself lost its data), it was kicked, or it moved to another
    /// server; it ends here too. Returns how many were taken back.
    pub(super) fn adopt_former(
        &self,
        con: &mut Connection,
        hub: &dyn super::HubAccess,
        first: bool,
    ) -> redis::RedisResult<usize> {
        let Some((former, _)) = *super::lock(&self.former) else {
            return Ok(0);
        };
        let mut tokens = Vec::new();
        hub.with(&mut |hub| tokens = hub.local_session_tokens());
        let lost_data = self.joined_empty.load(std::sync::atomic::Ordering::SeqCst);
        let mut adopted = 0;
        let mut ended: Vec<(Username, Ended)> = Vec::new();
        let mut graces: Vec<(Username, std::time::Duration)> = Vec::new();
        for (user, token) in &tokens {
            let key = crate::names::key(user);
            let reply: Vec<Value> = Script::new(ADOPT)
                .key(sess_key(&key))
                .key(super::name_key(&key))
                .arg(former)
                .arg(self.id)
                .arg(token_hash(token))
                .arg(self.lease_ms())
                .arg(self.session_ms())
                .invoke(con)?;
            let code = reply
                .first()
                .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok());
            let text = || {
                reply
                    .get(1)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            };
            match code {
                Some(1) => {
                    adopted += 1;
                    // Its grace runs from when the dead run last renewed
                    // it, as on the other servers, not from this start.
                    let left = reply
                        .get(1)
                        .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
                        .and_then(|ms| u64::try_from(ms).ok())
                        .map(|ms| std::time::Duration::from_millis(ms).saturating_sub(self.lease));
                    if let Some(left) = left {
                        graces.push((user.clone(), left));
                    }
                }
                Some(2) if first && !lost_data => ended.push((user.clone(), Ended::Over)),
                Some(3) if first => {
                    ended.push((user.clone(), Ended::Kicked(text().unwrap_or_default())))
                }
                Some(4) if first => {
                    if let Some(s) = text().and_then(|s| s.parse().ok()) {
                        ended.push((user.clone(), Ended::Moved(s)));
                    }
                }
                _ => {}
            }
        }
        if !graces.is_empty() {
            let now = std::time::Instant::now();
            hub.with(&mut |hub| {
                for (user, left) in &graces {
                    hub.shorten_grace(user, *left, now);
                }
            });
        }
        if !ended.is_empty() {
            // What the stream tells of them since (a move, a kick, a
            // leave elsewhere) comes first, in its order: only a session
            // still here after it ends here.
            self.wait_caught_up(self.lease / 3);
            let now = std::time::Instant::now();
            let mut here = 0;
            hub.with(&mut |hub| {
                for (user, how) in &ended {
                    if !hub.has_session(user) {
                        continue;
                    }
                    here += 1;
                    match how {
                        Ended::Over => hub.end_kept_session(user, None),
                        Ended::Kicked(text) => hub.end_kept_session(user, Some(text)),
                        Ended::Moved(server) => hub.remote_moved(*server, user.clone(), now),
                    }
                }
            });
            if here > 0 {
                log::info!(
                    "cluster: {here} session(s) kept in the history database ended while this server was down"
                );
            }
        }
        Ok(adopted)
    }

    /// The text of a kick marked on the session record of name key `key`
    /// ([`KICK`]), if any (none when Redis does not answer).
    pub fn kick_mark(&self, key: &str) -> Option<String> {
        let mut slot = lock(&self.claims);
        let con = slot.as_mut()?;
        let mark: redis::RedisResult<Option<String>> =
            redis::cmd("HGET").arg(sess_key(key)).arg("k").query(con);
        mark.unwrap_or_else(|_| {
            *slot = None;
            None
        })
    }

    /// Joins the cluster's epoch (set by the first server), and gives a
    /// hub that has no history yet the newest entries of the stream as its
    /// room history; returns where the reader starts.
    pub(super) fn join_history(
        &self,
        con: &mut Connection,
        hub: &dyn super::HubAccess,
    ) -> redis::RedisResult<String> {
        let mut fresh = [0u8; 8];
        // Below 2^53, as the server ids.
        let drawn = getrandom::fill(&mut fresh)
            .map(|()| (u64::from_le_bytes(fresh) >> 11).max(1))
            .unwrap_or(1);
        let set: Value = redis::cmd("SET")
            .arg(EPOCH)
            .arg(drawn)
            .arg("NX")
            .query(con)?;
        // Set here: Redis held no cluster (the first server, or a Redis
        // that lost its data).
        self.joined_empty
            .store(set != Value::Nil, std::sync::atomic::Ordering::SeqCst);
        let epoch: u64 = redis::cmd("GET").arg(EPOCH).query(con)?;
        self.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        let mut count = 0;
        let mut log_bytes = 0;
        let mut own_last = MessageId(0);
        hub.with(&mut |hub| {
            hub.set_epoch(epoch);
            count = hub.limits().log_entries.min(super::BUS_MAXLEN);
            log_bytes = hub.limits().log_bytes;
            // Where its log stopped: the newest entry it kept, not the
            // next id, which jumps ahead after a crash.
            own_last = hub.newest_logged();
        });
        let empty = own_last == MessageId(0);
        // A history of its own (its database, from an earlier run in this
        // cluster) reads on from where it stopped, if the stream still
        // holds that position: what the others said meanwhile reaches its
        // log and its users that resume here.
        if let Some(from) = reading_on(con, own_last)? {
            // Given everything before the entry read again, not all of it.
            self.read_pos.fetch_max(
                (own_last.0 & !1023).saturating_sub(1),
                std::sync::atomic::Ordering::SeqCst,
            );
            self.kept_to
                .store(own_last.0, std::sync::atomic::Ordering::SeqCst);
            return Ok(from);
        }
        // A hub with a history of its own needs only the newest position.
        let (count, log_bytes) = if empty { (count, log_bytes) } else { (1, 0) };
        let mut tail = newest_entries(con, count.max(1), log_bytes)?;
        tail.reverse();
        let last = tail.last().map_or_else(
            || "0-0".to_string(),
            |(id, _)| String::from_utf8_lossy(id).into_owned(),
        );
        // The position of the last event (an entry may hold several).
        let last_position = tail
            .last()
            .and_then(|(id, fields)| super::entry::last_position(id, fields));
        let now = std::time::Instant::now();
        hub.with(&mut |hub| {
            if empty {
                let mut events = Vec::new();
                for (id, fields) in tail.drain(..) {
                    super::Remote::parse(&id, fields, &mut events);
                }
                for e in events {
                    if let Some(event) = e.history_event() {
                        hub.set_origin(Some(e.origin));
                        hub.remote_history(event, now);
                        hub.set_origin(None);
                    }
                }
            }
            if let Some(p) = last_position {
                hub.advance_ids(p);
            }
        });
        if let Some(p) = last_position {
            self.read_pos
                .fetch_max(p.0, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(last)
    }
}

/// Where a server whose own log ends at `last` reads the stream on from:
/// just before the stream entry (`millis-seq`) of that id's position,
/// when it is one (its log was kept in this cluster) and the stream still
/// holds it (nothing between was trimmed); else `None`. That entry is
/// read again: its events after `last` may not have been kept (a file
/// commits by batches of events, not by stream entries), and those up to
/// `last` are passed over (see [`Cluster::kept_to`](super::Cluster)).
fn reading_on(con: &mut Connection, last: MessageId) -> redis::RedisResult<Option<String>> {
    let (ms, seq) = (last.0 >> 22, (last.0 >> 10) & 4095);
    if ms == 0 {
        return Ok(None);
    }
    let reply: Value = redis::cmd("XRANGE")
        .arg(BUS)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(con)?;
    let oldest = super::entry::range_reply(reply)
        .first()
        .and_then(|(id, _)| super::entry::position(id));
    Ok(oldest
        .filter(|first| first.0 <= last.0)
        .and_then(|_| before(format!("{ms}-{seq}").as_bytes())))
}

/// The newest `count` entries of the stream, newest first, read a page
/// of [`super::READ_COUNT`] at a time and no further once they hold
/// `bytes` (what the log keeps): a stream of long messages is not read
/// whole for a log that keeps a few megabytes of it.
fn newest_entries(
    con: &mut Connection,
    count: usize,
    bytes: usize,
) -> redis::RedisResult<Vec<(Vec<u8>, Vec<Value>)>> {
    let mut out: Vec<(Vec<u8>, Vec<Value>)> = Vec::new();
    let mut end = "+".to_string();
    let mut read = 0;
    while out.len() < count {
        let want = (count - out.len()).min(super::READ_COUNT);
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(BUS)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(want)
            .query(con)?;
        let page = super::entry::range_reply(reply);
        let got = page.len();
        read += page
            .iter()
            .map(|(id, fields)| id.len() + fields.iter().map(value_len).sum::<usize>())
            .sum::<usize>();
        let before = page.last().and_then(|(id, _)| before(id));
        out.extend(page);
        match before {
            Some(b) if got == want && read < bytes => end = b,
            _ => break,
        }
    }
    Ok(out)
}

/// The bytes of a field's value.
fn value_len(v: &Value) -> usize {
    match v {
        Value::BulkString(b) => b.len(),
        Value::SimpleString(s) => s.len(),
        _ => 0,
    }
}

/// The highest stream id below `id` (`millis-seq`); `None` below `0-1`.
fn before(id: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(id).ok()?;
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_sub(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-{}", ms.checked_sub(1)?, u64::MAX),
    })
}

impl super::Remote {
    /// The log entry a stream entry makes in the room's history.
    fn history_event(&self) -> Option<LogEvent> {
        use imchat_core::ClusterEvent as E;
        Some(match &self.event {
            E::Joined { user, .. } => LogEvent::Joined { user: user.clone() },
            E::Left {
                user, reason, text, ..
            } => LogEvent::Left {
                user: user.clone(),
                reason: *reason,
                text: text.clone(),
            },
            E::Chat {
                from,
                to,
                kind,
                text,
                ..
            } => LogEvent::Chat {
                from: from.clone(),
                to: to.clone(),
                kind: *kind,
                text: text.clone(),
                client_id: self.origin.client_id,
            },
            _ => return None,
        })
    }
}

/// Applies a stream entry of another server to the hub, with its origin.
pub(super) fn apply(remote: super::Remote, hub: &mut Hub, now: std::time::Instant) {
    hub.set_origin(Some(remote.origin));
    remote.apply(hub, now);
    hub.set_origin(None);
}

/// How long a session taken over waits for this server to have read the
/// stream as far as the client's old server had.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Before a session of this server's is resumed: waits (at most
/// [`CATCH_UP`]) until this server has read the stream to its end once,
/// so that a session kept from its run before (a restart) resumes with
/// what that run published and did not keep already in the log: neither
/// sent to the client again as new, nor accepted again when the client
/// sends it again.
pub fn settle_for_resume(cluster: &Cluster) {
    if !cluster.wait_caught_up(CATCH_UP) {
        log::warn!("cluster: a session resumes before this server read the stream to its end");
    }
}

/// Takes over the session a `Hello` asks to resume, one of another
/// server's (the hub has none of that name), if its token matches; then
/// waits (at most [`CATCH_UP`]) until this server has read the stream as
/// far as the old one had when it gave `last_seen`, so that what the
/// client saw there is not sent to it again as new.
pub fn take_for_hello(
    cluster: &Cluster,
    username: &Username,
    request: &imchat_core::ResumeRequest,
) -> Option<Taken> {
    let key = crate::names::key(username);
    let mut taken = cluster.take_session(&key, &request.token, request.epoch)?;
    let wanted = request.last_seen.0 & !1023;
    let deadline = std::time::Instant::now() + CATCH_UP;
    while cluster.read_pos.load(std::sync::atomic::Ordering::SeqCst) < wanted {
        if std::time::Instant::now() >= deadline {
            log::warn!("cluster: a session resumes before this server read as far as its old one");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A kick published after the move: its mark is on the record now.
    taken.kicked = cluster.kick_mark(&key);
    log::info!(
        "cluster: the session of '{}' moves here from server {:x}",
        imchat_core::inert(taken.user.as_str()),
        taken.from
    );
    Some(taken)
}

#[cfg(test)]
mod tests {
    use super::before;

    #[test]
    fn the_id_before_a_stream_id_is_one_lower_in_its_sequence_or_its_millisecond() {
        assert_eq!(before(b"1700-5").as_deref(), Some("1700-4"));
        assert_eq!(
            before(b"1700-0").as_deref(),
            Some("1699-18446744073709551615")
        );
        assert_eq!(before(b"0-1").as_deref(), Some("0-0"));
        // Nothing is below the first id, and an id that is not one has none.
        assert_eq!(before(b"0-0"), None);
        assert_eq!(before(b"1700"), None);
        assert_eq!(before(b"x-1"), None);
    }
}
