//! Pushes (`/sendfile`) between servers: the data path.
//!
//! The control of a push (offer, answer, a receiving server giving up)
//! goes on the bus with the chat (entries of kind `f`, see `entry`). The data of the push to
//! the users of server B goes through a Redis list of its own:
//!
//! - `imchat:push:<A>:<relay>:<B>`: the entries, in order: file data, then
//!   the end (or a cancel). The sending server A appends (`RPUSH`), B's
//!   reader moves them from the front (`BLMOVE`) to `…:taken`, and
//!   removes each from there once it handled it (see `read_push`).
//! - `…:at`: the offset in the file the next data starts at: data that
//!   A sends again (Redis stalled and the answer was lost) is not
//!   appended twice.
//! - `…:n`: the bytes in the list. A appends file data only while it is
//!   under [`WINDOW`] (a Lua script: check and append in one step); B
//!   takes the entry's bytes off once it handed the chunk to its hub, and
//!   rings
//!   - `…:bell`: a list of at most one element, that A waits on
//!     (`BLPOP`) while the window is full.
//!
//! The pusher is paced by its credit, not by this list: B's hub tells A's
//! (`TransferControl::Credit`, on the bus) how far the push may go, which
//! is [`PUSH_CREDIT`](imchat_core::PUSH_CREDIT) past what the slowest of
//! B's receivers acknowledged, and A's hub gives its pusher no more. So B
//! hands each chunk on as soon as it comes (its receivers' windows hold
//! it), the list holds at most one credit of data, under [`WINDOW`], and
//! A never waits for room here while Redis and B run (the wait is what
//! holds a pusher when they stall). Every key has an expiry
//! ([`KEY_TTL`]), renewed at each append, so nothing is left behind by a
//! server that dies; the reader deletes them when the push ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{CancelCode, FileChunk, Hub, RemotePush, TransferControl, TransferId};
use log::warn;
use redis::{Script, Value};

use super::link::Connection;

use super::{lock, Cluster, HubAccess};

/// Bytes one push may have in Redis for one receiving server: twice the
/// credit a pusher gets ([`PUSH_CREDIT`](imchat_core::PUSH_CREDIT)), so
/// that a conforming pusher's data, with the entries' heads, always fits.
pub const WINDOW: u64 = 2 * imchat_core::PUSH_CREDIT;
/// The expiry of a push's keys, renewed at each append.
const KEY_TTL: Duration = Duration::from_secs(60);
/// How long the sending server waits for room in the window before it
/// gives the receiving server up (its own receivers are dropped after
/// 10 s each when too slow, so a live server makes room well before),
/// and how long it tries again while Redis does not answer (a stall, a
/// restart) before it gives the push up there.
const SEND_WAIT: Duration = Duration::from_secs(30);
/// How long one wait on the bell (or for an entry) lasts, between checks
/// that the push still goes on.
const POLL: Duration = Duration::from_millis(250);

/// Appends `ARGV[1]`, the file data from offset `ARGV[4]` on, to list
/// `KEYS[1]` if the bytes counted in `KEYS[2]` leave room for it under
/// `ARGV[2]` (or the list is empty), renewing the expiry (`ARGV[3]` ms):
/// 1 appended, 0 full. `KEYS[3]` holds the offset the next data starts
/// at (`ARGV[5]` once appended): data before it was appended already (a
/// retry after Redis stalled and the answer was lost), and is not
/// appended twice.
const APPEND_DATA: &str = r"
if tonumber(ARGV[4]) < tonumber(redis.call('GET', KEYS[3]) or '0') then
  return 1
end
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
local len = string.len(ARGV[1])
if n > 0 and n + len > tonumber(ARGV[2]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], len)
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// Removes the front of list `KEYS[1]` (the entries the reader took) if
/// it is the entry the reader handled: it starts with `ARGV[1]` and is
/// `ARGV[2]` bytes long. Then frees `ARGV[3]` bytes of the window counted
/// in `KEYS[2]`, and rings `KEYS[3]` (a list of at most one element) for
/// the sending server; the keys expire after `ARGV[4]` ms. A removal sent
/// again (its answer lost) finds another front and removes nothing, and
/// frees nothing.
const ACK_TAKEN: &str = r"
local front = redis.call('LINDEX', KEYS[1], 0)
if front and string.len(front) == tonumber(ARGV[2])
    and string.sub(front, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  if tonumber(ARGV[3]) > 0 then
    redis.call('DECRBY', KEYS[2], ARGV[3])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('RPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], 0, 0)
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
";

/// Connections with a wait on them the tests' fail point keeps open.
const GIVEN_UP_KEPT: usize = 4;

/// The bytes an entry starts with that tell it from every other entry of
/// its push: its kind, and a data entry's offset and checksum.
const ENTRY_HEAD: usize = 13;

/// How many ended legs [`Transfers::ended`] remembers.
const ENDED_KEPT: usize = 1024;

/// The list of server `from`'s push `relay` to server `to`.
#[must_use]
pub fn list_key(from: u64, relay: TransferId, to: u64) -> String {
    format!("imchat:push:{from}:{}:{to}", relay.0)
}

impl Transfers {
    /// Leg `relay` toward server `to` ended: forgets its flag (returned)
    /// and remembers that it ended.
    fn end_leg(&self, relay: TransferId, to: u64) -> Option<Arc<AtomicBool>> {
        let mut sending = lock(&self.sending);
        let mut ended = lock(&self.ended);
        if !ended.contains(&(relay, to)) {
            if ended.len() >= ENDED_KEPT {
                ended.pop_front();
            }
            ended.push_back((relay, to));
        }
        sending.remove(&(relay, to))
    }
}

/// A connection, made when first needed (and again after a failure).
type Slot = Arc<Mutex<Option<Connection>>>;

/// What the data path of this server is doing.
#[derive(Default)]
pub(super) struct Transfers {
    hub: OnceLock<Arc<dyn HubAccess>>,
    /// Legs being sent: set when the receiving server takes no more.
    sending: Mutex<HashMap<(TransferId, u64), Arc<AtomicBool>>>,
    /// The legs ended last (at most [`ENDED_KEPT`]), locked after
    /// `sending`: a chunk carried after its leg's end (the hub's work is
    /// carried by several threads) is dropped instead of making the leg's
    /// keys again, left in Redis until they expire.
    ended: Mutex<VecDeque<(TransferId, u64)>>,
    /// Pushes being received: set to stop their reader.
    receiving: Mutex<HashMap<(u64, TransferId), Arc<AtomicBool>>>,
    /// The connection of the senders' waits, one per leg being sent.
    senders: Mutex<HashMap<(TransferId, u64), Slot>>,
    /// The connection for short commands (end, cancel, clean-up).
    short: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers").finish_non_exhaustive()
    }
}

/// One entry of a push's list.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Data {
        offset: u64,
        crc: u32,
        data: Vec<u8>,
    },
    End {
        crc: u32,
    },
    Cancel {
        code: CancelCode,
        reason: String,
    },
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        match self {
            Entry::Data { offset, crc, data } => {
                let mut v = Vec::with_capacity(13 + data.len());
                v.push(b'D');
                v.extend_from_slice(&offset.to_be_bytes());
                v.extend_from_slice(&crc.to_be_bytes());
                v.extend_from_slice(data);
                v
            }
            Entry::End { crc } => {
                let mut v = vec![b'E'];
                v.extend_from_slice(&crc.to_be_bytes());
                v
            }
            Entry::Cancel { code, reason } => {
                let mut v = vec![b'C'];
                v.extend_from_slice(&code.0.to_be_bytes());
                v.extend_from_slice(reason.as_bytes());
                v
            }
        }
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        let (&tag, rest) = b.split_first()?;
        match tag {
            b'D' if rest.len() > 12 => Some(Entry::Data {
                offset: u64::from_be_bytes(rest[..8].try_into().ok()?),
                crc: u32::from_be_bytes(rest[8..12].try_into().ok()?),
                data: rest[12..].to_vec(),
            }),
            b'E' if rest.len() == 4 => Some(Entry::End {
                crc: u32::from_be_bytes(rest.try_into().ok()?),
            }),
            b'C' if rest.len() >= 2 => Some(Entry::Cancel {
                code: CancelCode(u16::from_be_bytes(rest[..2].try_into().ok()?)),
                reason: String::from_utf8_lossy(&rest[2..]).into_owned(),
            }),
            _ => None,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Hands the hub to the data path (at start).
    pub(super) fn set_transfer_hub(&self, hub: Arc<dyn HubAccess>) {
        let _ = self.transfers.hub.set(hub);
    }

    fn transfer_hub(&self, f: &mut dyn FnMut(&mut Hub)) {
        if let Some(hub) = self.transfers.hub.get() {
            hub.with(f);
        }
    }

    /// Carries one step of a push between servers (called by the thread
    /// that gave the hub its input, outside the hub's lock). File data
    /// waits here until the window toward its server has room: that paces
    /// the pusher.
    pub fn carry(self: &Arc<Self>, push: RemotePush) {
        match push {
            RemotePush::Chunk {
                to,
                relay,
                offset,
                data,
                crc,
            } => self.send_data(to, relay, &Entry::Data { offset, crc, data }),
            RemotePush::End { to, relay, crc } => {
                self.send_last(to, relay, &Entry::End { crc });
            }
            RemotePush::Cancel {
                to,
                relay,
                code,
                reason,
            } => self.send_last(to, relay, &Entry::Cancel { code, reason }),
            RemotePush::Closed { to, relay } => {
                if let Some(flag) = self.transfers.end_leg(relay, to) {
                    flag.store(true, Ordering::SeqCst);
                }
                lock(&self.transfers.senders).remove(&(relay, to));
                // After the flag: an append racing with this is undone by
                // its sender (see send_data).
                self.delete_keys(&list_key(self.id, relay, to));
            }
            RemotePush::Receive { from, relay } => self.start_reader(from, relay),
            RemotePush::Received { from, relay } => {
                if let Some(flag) = lock(&self.transfers.receiving).remove(&(from, relay)) {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// A connection for a push's data that waits out a Redis that stalls
    /// (for up to [`SEND_WAIT`]) instead of giving up on it: a `BLPOP`
    /// whose answer was not waited for may still take an entry off the
    /// list when Redis runs again, and that file data would be lost.
    fn connect_patient(&self) -> redis::RedisResult<Connection> {
        let con = self.connect()?;
        con.set_read_timeout(Some(SEND_WAIT + POLL))?;
        Ok(con)
    }

    /// Runs `f` on the connection for short commands; a failure drops it.
    fn short(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<()>) -> bool {
        let mut slot = lock(&self.transfers.short);
        if slot.is_none() {
            *slot = self.connect().ok();
        }
        let Some(con) = slot.as_mut() else {
            return false;
        };
        if f(con).is_err() {
            *slot = None;
            return false;
        }
        true
    }

    /// Gives up the leg toward `to` of push `relay`, telling the hub why.
    fn give_up(&self, to: u64, relay: TransferId, code: CancelCode, reason: &str) {
        warn!("cluster: a file sent to server {to:x} stopped: {reason}");
        self.transfer_hub(&mut |hub| hub.remote_gone(to, relay, code, reason));
    }

    /// Appends file data to the list toward `to`, waiting for room.
    fn send_data(&self, to: u64, relay: TransferId, entry: &Entry) {
        let closed = {
            let mut sending = lock(&self.transfers.sending);
            if lock(&self.transfers.ended).contains(&(relay, to)) {
                return;
            }
            sending.entry((relay, to)).or_default().clone()
        };
        let slot = lock(&self.transfers.senders)
            .entry((relay, to))
            .or_default()
            .clone();
        let mut con = lock(&slot);
        let key = list_key(self.id, relay, to);
        let bytes = entry.encode();
        let (from, until) = match entry {
            Entry::Data { offset, data, .. } => (*offset, offset + data.len() as u64),
            _ => (0, 0),
        };
        let started = Instant::now();
        let failure = loop {
            if closed.load(Ordering::SeqCst) {
                return;
            }
            if con.is_none() {
                *con = self.connect_patient().ok();
            }
            let appended: redis::RedisResult<i64> = match con.as_mut() {
                Some(c) => Script::new(APPEND_DATA)
                    .key(&key)
                    .key(format!("{key}:n"))
                    .key(format!("{key}:at"))
                    .arg(&bytes[..])
                    .arg(WINDOW)
                    .arg(ms(KEY_TTL))
                    .arg(from)
                    .arg(until)
                    .invoke(c),
                None => Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot connect",
                ))),
            };
            match appended {
                Ok(1) => {
                    if closed.load(Ordering::SeqCst) {
                        // Closed meanwhile: its keys may have been deleted
                        // before this append made them again.
                        drop(con);
                        self.delete_keys(&key);
                    }
                    return;
                }
                Ok(_) => {}
                Err(_) => {
                    // Redis stalled or restarted: tried again (the data is
                    // not appended twice), as long as a full window waits.
                    *con = None;
                    if started.elapsed() >= SEND_WAIT {
                        break "the cluster cannot be reached";
                    }
                    thread::sleep(POLL);
                    continue;
                }
            }
            if started.elapsed() >= SEND_WAIT {
                break "the receiver's server takes no more data";
            }
            let Some(c) = con.as_mut() else { continue };
            // Full: wait for the receiving server to take some.
            let rang: redis::RedisResult<Value> = redis::cmd("BLPOP")
                .arg(format!("{key}:bell"))
                .arg(POLL.as_secs_f64())
                .query(c);
            if rang.is_err() {
                *con = None;
            }
        };
        drop(con);
        let code = if failure.starts_with("the cluster") {
            CancelCode::IO
        } else {
            CancelCode::TOO_SLOW
        };
        self.give_up(to, relay, code, failure);
    }

    /// Appends the end or a cancel (past the window: they never wait), and
    /// forgets the leg.
    fn send_last(&self, to: u64, relay: TransferId, entry: &Entry) {
        self.transfers.end_leg(relay, to);
        lock(&self.transfers.senders).remove(&(relay, to));
        let key = list_key(self.id, relay, to);
        let bytes = entry.encode();
        let sent = self.short(|con| {
            redis::pipe()
                .cmd("RPUSH")
                .arg(&key)
                .arg(&bytes[..])
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ms(KEY_TTL))
                .ignore()
                .query::<()>(con)
        });
        if !sent {
            // The receiving server ends the push itself when it sends
            // nothing more (its hub's idle timeout).
            warn!("cluster: could not tell server {to:x} that a file transfer ended");
        }
    }

    /// Starts the reader of server `from`'s push `relay`.
    fn start_reader(self: &Arc<Self>, from: u64, relay: TransferId) {
        let stop = Arc::new(AtomicBool::new(false));
        lock(&self.transfers.receiving).insert((from, relay), stop.clone());
        let c = self.clone();
        let started = thread::Builder::new()
            .name("cluster-push-in".into())
            .spawn(move || c.read_push(from, relay, &stop));
        if let Err(e) = started {
            warn!("cluster: cannot start a thread to receive a file: {e}");
            lock(&self.transfers.receiving).remove(&(from, relay));
            self.transfer_hub(&mut |hub| {
                hub.remote_cancel(
                    from,
                    relay,
                    CancelCode::IO,
                    "the server cannot receive the file",
                );
            });
        }
    }

    /// Takes server `from`'s push `relay` from its list, entry by entry, to
    /// the hub; frees the window only once the receivers' queues took it.
    ///
    /// An entry is never popped and handed on in one step: `BLMOVE` moves
    /// it to `…:taken`, and the reader handles the front of that list and
    /// then removes it ([`ACK_TAKEN`]). A command left on a connection
    /// given up while Redis stalled runs when Redis wakes, after the
    /// reader went on with another connection: a pop there would lose its
    /// entry, a move only puts it in `…:taken`, in order, where the reader
    /// finds it. An entry handled whose removal was not answered is
    /// handled again: data before the offset already handed on is skipped.
    fn read_push(&self, from: u64, relay: TransferId, stop: &AtomicBool) {
        let key = list_key(from, relay, self.id);
        let taken = format!("{key}:taken");
        let ack = Script::new(ACK_TAKEN);
        let mut handed_on = 0u64;
        let mut ended = false;
        let mut con: Option<Connection> = None;
        // Connections the tests' fail point gave up with a wait on them.
        let mut given_up: Vec<Connection> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if con.is_none() {
                con = self.connect_patient().ok();
                if con.is_none() {
                    thread::sleep(POLL);
                    continue;
                }
            }
            let Some(c) = con.as_mut() else { continue };
            let front: redis::RedisResult<Option<Vec<u8>>> =
                redis::cmd("LINDEX").arg(&taken).arg(0).query(c);
            let bytes = match front {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    // Nothing taken: wait for the next entry and take it.
                    let mut wait = redis::pipe();
                    wait.cmd("BLMOVE")
                        .arg(&key)
                        .arg(&taken)
                        .arg("LEFT")
                        .arg("RIGHT")
                        .arg(POLL.as_secs_f64())
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&taken)
                        .arg(ms(KEY_TTL))
                        .ignore();
                    if fail::eval("cluster-push-lost", |_| ()).is_some() {
                        // The tests' stalled Redis: the wait is sent and
                        // its connection given up unread, but left open,
                        // so that Redis runs the wait whenever it can.
                        let _ = c.send_unread(&wait.get_packed_pipeline());
                        if given_up.len() == GIVEN_UP_KEPT {
                            given_up.remove(0);
                        }
                        given_up.extend(con.take());
                        continue;
                    }
                    let refused = match wait.query::<()>(c) {
                        Ok(()) => continue,
                        // Redis's own error replies, with their codes (a
                        // pipeline's error says the codes it does not know
                        // of, such as OOM, only there).
                        Err(e) => e.into_server_errors().and_then(|errors| {
                            errors
                                .first()
                                .map(|(_, refused)| refused.code().to_string())
                        }),
                    };
                    match refused.as_deref() {
                        // Redis refuses the wait itself: an ACL may not
                        // allow BLMOVE, a look-alike server may lack it.
                        // Asked again, it is refused again, and before,
                        // on a new connection each time, as fast as Redis
                        // answered, until the push's idle timeout.
                        Some(code @ ("ERR" | "NOPERM")) => {
                            let why = if code == "NOPERM" {
                                "Redis's ACL does not let the URL's user run BLMOVE"
                            } else {
                                "Redis refuses BLMOVE (Redis has it from 6.2 on)"
                            };
                            warn!(
                                "cluster: cannot receive a file from server {from:x}: {why}, which files pushed between servers need"
                            );
                            self.transfer_hub(&mut |hub| {
                                hub.remote_give_up(
                                    from,
                                    relay,
                                    CancelCode::IO,
                                    "the cluster's Redis cannot pass files between servers: tell the server's operator",
                                );
                            });
                            break;
                        }
                        // Refused for now (out of memory, loading): asked
                        // again after a pause, on the same connection;
                        // before, on a new one each time, thousands a
                        // second while Redis was full.
                        Some(_) => thread::sleep(POLL),
                        None => con = None,
                    }
                    continue;
                }
                Err(_) => {
                    con = None;
                    continue;
                }
            };
            let now = Instant::now();
            let mut window_bytes = 0;
            match Entry::decode(&bytes) {
                Some(Entry::Data { offset, crc, data }) => {
                    window_bytes = bytes.len();
                    if offset >= handed_on && !ended {
                        handed_on = offset + data.len() as u64;
                        let chunk = FileChunk {
                            id: relay,
                            offset,
                            data,
                            crc,
                        };
                        let mut chunk = Some(chunk);
                        // The hub relays it at once: the pusher's credit
                        // keeps it within the receivers' windows.
                        self.transfer_hub(&mut |hub| {
                            if let Some(chunk) = chunk.take() {
                                hub.remote_chunk(from, relay, chunk, now);
                            }
                        });
                    }
                }
                Some(Entry::End { crc }) if !ended => {
                    ended = true;
                    self.transfer_hub(&mut |hub| hub.remote_end(from, relay, crc, now));
                }
                Some(Entry::Cancel { code, reason }) if !ended => {
                    ended = true;
                    self.transfer_hub(&mut |hub| hub.remote_cancel(from, relay, code, &reason));
                }
                Some(Entry::End { .. } | Entry::Cancel { .. }) => {}
                None => {
                    warn!("cluster: an unreadable piece of a file from server {from:x}: the transfer is ended");
                    ended = true;
                    self.transfer_hub(&mut |hub| {
                        hub.remote_cancel(from, relay, CancelCode::BAD_CHUNK, "damaged in transit");
                    });
                }
            }
            // Removed by what it starts with and its length, so that a
            // removal sent twice (its answer lost) removes it once.
            let mut done = ack.prepare_invoke();
            done.key(&taken)
                .key(format!("{key}:n"))
                .key(format!("{key}:bell"))
                .arg(&bytes[..bytes.len().min(ENTRY_HEAD)])
                .arg(bytes.len())
                .arg(window_bytes)
                .arg(ms(KEY_TTL));
            if fail::eval("cluster-push-ack-twice", |_| ()).is_some() {
                // The tests' stale removal, run right before the real one.
                let _ = done.invoke::<()>(c);
            }
            if done.invoke::<()>(c).is_err() {
                con = None;
            }
        }
        lock(&self.transfers.receiving).remove(&(from, relay));
        self.delete_keys(&key);
    }

    /// Deletes a push's list and its companions.
    fn delete_keys(&self, key: &str) {
        self.short(|con| {
            redis::cmd("DEL")
                .arg(key)
                .arg(format!("{key}:n"))
                .arg(format!("{key}:at"))
                .arg(format!("{key}:bell"))
                .arg(format!("{key}:taken"))
                .query::<()>(con)
        });
    }
}

/// Gives server `server`'s control event to the hub.
pub(super) fn apply(hub: &mut Hub, server: u64, event: &TransferControl, now: Instant) {
    match event {
        TransferControl::Offer {
            relay,
            from,
            users,
            name,
            size,
            ..
        } => hub.remote_offer(
            server,
            *relay,
            from.clone(),
            users,
            name.clone(),
            *size,
            now,
        ),
        TransferControl::Answer {
            relay, accepted, ..
        } => hub.remote_answer(server, *relay, *accepted, now),
        TransferControl::Gone {
            relay,
            code,
            reason,
            ..
        } => hub.remote_gone(server, *relay, *code, reason),
        TransferControl::Delivered {
            relay, receivers, ..
        } => hub.remote_delivered(server, *relay, *receivers, now),
        TransferControl::Dropped {
            relay,
            code,
            reason,
            ..
        } => hub.remote_cancel(server, *relay, *code, reason),
        TransferControl::Credit { relay, offset, .. } => {
            hub.remote_credit(server, *relay, *offset, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_entries_read_back_as_written() {
        for e in [
            Entry::Data {
                offset: 1 << 40,
                crc: 7,
                data: b"abc".to_vec(),
            },
            Entry::End { crc: 0xdead_beef },
            Entry::Cancel {
                code: CancelCode::PEER_LEFT,
                reason: "the sender left".into(),
            },
        ] {
            assert_eq!(Entry::decode(&e.encode()), Some(e));
        }
        assert_eq!(Entry::decode(b"D\0\0"), None);
        assert_eq!(Entry::decode(b""), None);
    }

    #[test]
    fn a_chunk_carried_after_its_leg_ended_is_dropped() {
        let cluster = Arc::new(
            Cluster::new(&super::super::Settings {
                tls: super::super::RedisTls::default(),
                stream_bytes: 1 << 20,
                // Nothing listens there: an append would fail, not hang.
                url: "redis://127.0.0.1:1".into(),
                lease: Duration::from_secs(10),
                grace: Duration::from_secs(60),
            })
            .unwrap(),
        );
        let relay = TransferId(TransferId::SERVER_BIT | 5);
        cluster.carry(RemotePush::Closed { to: 9, relay });
        cluster.carry(RemotePush::Chunk {
            to: 9,
            relay,
            offset: 0,
            data: vec![1, 2, 3],
            crc: 0,
        });
        // Not taken as a new leg (whose keys it would have made again).
        assert!(lock(&cluster.transfers.sending).is_empty());
        assert!(lock(&cluster.transfers.senders).is_empty());
    }
}
