//! `--history-db`: the room log and the resumable sessions in an SQLite
//! file, so that a restarted server takes its clients back with nothing
//! they were sent missing.
//!
//! One file, three tables: `batches` (the room log, one row per commit
//! batch of entries, oldest first by id), `sessions` (one row per
//! resumable session, by name key; its column `spent` is added to an
//! older version 2 file when opened) and `meta` (the epoch, the reserved
//! ids, the id of the cluster server that writes it). The schema's version is SQLite's `user_version`: version 2; a
//! version 1 file (one `log` row per entry) is converted to version 2 in
//! one transaction when opened; a file written by another version, or
//! that is not an imchat history at all, is refused with a clear error
//! rather than read or overwritten.
//!
//! **One server a file.** A store holds an exclusive advisory lock on
//! `<file>.lock` beside the file for as long as it is open (see
//! [`lock_file`]): a second server started on a file in use refuses to
//! start ([`OpenError::InUse`]) instead of writing the same ids as the
//! first. `--reset-name` (through [`SqliteAccounts`]) takes no lock: it
//! only touches the accounts table, and may run beside the server.
//!
//! **Batches.** A row of `batches` holds the entries one commit wrote:
//! its first and last ids, how many, the sum of their
//! [`LogEntry::cost`], and the entries themselves in one BLOB, in the
//! byte layout the queue copies them into under the hub's lock (see
//! [`Queue`]), so that a commit is one INSERT of the bytes already
//! queued, whatever the batch's size. The file is for durability and
//! restart: [`HistoryStore::load`] decodes the newest batches into the
//! hub's log at open; nothing reads it per request.
//!
//! **Accepted.** The hub appends each entry as it happens; the append
//! only queues it (the hub's lock is held, so no SQLite work there). A
//! commit thread ([`Committer`]) takes the queue every few milliseconds,
//! writes it in one transaction and commits it (group commit), without the
//! hub's lock, then tells the hub how far it went
//! ([`Hub::history_committed`]): the hub acknowledges a chat message only
//! after the commit that covers its entry. The hub's own commits (on its
//! clock, before a connection closes, at shutdown) go through
//! [`HistoryStore::commit`], which writes what is queued after any batch
//! the committer is writing. Receivers may see an entry before it is
//! committed. The journal
//! is a write-ahead log with `synchronous=NORMAL`: a commit is in the
//! operating system's hands, not yet necessarily on the disk. So a crash or
//! kill of the server process loses nothing acknowledged (it may lose
//! entries routed but not yet acknowledged: their senders resend them); a
//! power failure or a crash of the operating system may lose the last
//! transactions before a checkpoint (the database itself stays intact).
//! `synchronous=FULL` would make every commit wait for the disk (see
//! docs/BENCHMARKS.md for the measured cost); [`Durability::Full`] selects
//! it. Session changes are queued and committed with the entries.
//!
//! **Ids after a crash.** Since an entry's id is seen before its commit, a
//! crash must not let a restarted server give that id again. The store
//! reserves ids in blocks of [`RESERVE_BLOCK`]: the `meta` row
//! `reserved_id` is raised (and committed) before an id reaches it (by the
//! writer's transactions while half a block is left, so that an append
//! seldom waits for it), and
//! `load` continues at or past it. A store closed cleanly gives back what
//! it did not use; after a crash the ids jump ahead (by less than a block).
//!
//! **Cost.** A commit writes one row, whatever its batch: the queue's
//! bytes as they are (see [`Queue`]). What it costs is mostly the pages
//! it writes to the WAL (each page it changed, two writes a page), so the
//! batch layout is compact. None of it is paid under the hub's lock, where
//! an append costs a copy of the entry into the queue's byte buffer (no
//! allocation once it has grown: the writer hands the buffer it wrote
//! back). Pages are 4 KiB: a batch of 2 ms under load fills a few 4 KiB
//! pages where it filled dozens of 1 KiB ones; files made with other page
//! sizes keep theirs. docs/BENCHMARKS.md has the measured costs.
//! Checkpoints (moving the WAL into the
//! database, with its disk syncs: milliseconds) are kept out of the
//! commits: a thread with its own connection runs them twice a second.
//!
//! **Bounds.** The file keeps at least what the hub's log keeps (entries
//! and bytes, as [`LogEntry::cost`] counts them), and at most one batch
//! more than that plus a margin: when it passes the bounds by more than
//! 1/16 it is trimmed by whole batches, oldest first, as long as what is
//! left still holds the bounds' worth (so trimming is one `DELETE` of a
//! range of rows in a while; the batches' counts and costs are kept in
//! memory, so no entry is read to trim). The newest batch is never
//! trimmed, so the next id is always one past its last id.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use imchat_core::{
    varint, ChatKind, HistoryStore, Hub, LeaveReason, Loaded, LogEntry, LogEvent, MessageId,
    ResumeToken, SessionRecord, StoreError, Timestamp, Username,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, MAIN_DB};

/// The schema this server writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;
/// The schema before batches (one `log` row per entry), converted on open.
const SCHEMA_V1: i64 = 1;
/// Entries per `batches` row when a version 1 file is converted.
const MIGRATE_BATCH: usize = 256;
/// Bytes per database page of a new file.
const PAGE_SIZE: u32 = 4096;
/// How often the checkpointer thread moves the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// What the WAL is truncated to after a checkpoint, at most.
const WAL_KEEP_BYTES: i64 = 8 << 20;
/// `PRAGMA application_id` of an imchat history file ("imch").
const APPLICATION_ID: i64 = 0x696d_6368;
/// Ids reserved at a time (see "Ids after a crash" above).
pub const RESERVE_BLOCK: u64 = 4096;

/// The schema's tables but the log's (the same in versions 1 and 2).
const SCHEMA_META_SESSIONS: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    token BLOB NOT NULL,
    last_client_id INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The room log, one row per commit batch (version 2).
const SCHEMA_BATCHES: &str = "
CREATE TABLE batches (
    first_id INTEGER PRIMARY KEY, -- the id of the batch's first entry
    last_id INTEGER NOT NULL,     -- the id of its last entry
    count INTEGER NOT NULL,       -- how many entries it holds
    cost INTEGER NOT NULL,        -- the sum of their LogEntry::cost, for trimming by bytes
    entries BLOB NOT NULL         -- the entries, in the batch layout (see Queue)
);
";

const INSERT_BATCH: &str = "INSERT INTO batches (first_id, last_id, count, cost, entries)
     VALUES (?1, ?2, ?3, ?4, ?5)";

/// How far a commit goes before an append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: survives a crash of the process, not
    /// necessarily of the machine.
    Normal,
    /// `synchronous=FULL`: every commit waits for the disk.
    Full,
}

/// Why a history file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite could not open or read it (missing folder, no permission,
    /// not a database, corrupted).
    #[error("cannot open the history database '{path}': {reason}")]
    Sqlite { path: String, reason: String },
    /// It is an SQLite database, but not an imchat history.
    #[error("'{path}' is not an imchat history database (it has other tables); give another --history-db path")]
    Foreign { path: String },
    /// It was written with a schema this server does not know.
    #[error("the history database '{path}' has schema version {found}; this server reads version {SCHEMA_VERSION} (and converts version {SCHEMA_V1}; written by another imchat-server version?)")]
    Version { path: String, found: i64 },
    /// A version 1 file could not be converted (it is left as it was).
    #[error(
        "cannot convert the history database '{path}' to schema version {SCHEMA_VERSION}: {reason}"
    )]
    Migrate { path: String, reason: String },
    /// The server may read it but not write it (the file or its folder
    /// is read-only for the server's user, or on a read-only file
    /// system): every chat message would be refused, so the server does
    /// not start.
    #[error("the history database '{path}' is read-only for this server (its file, or the folder of its -wal and -shm files, may not be written by the user the server runs as): make it writable, or give another --history-db path")]
    ReadOnly { path: String },
    /// Another server holds its lock: two writers would corrupt it.
    #[error("the history database '{path}' is in use by another imchat-server; stop that one, or give this one another --history-db path")]
    InUse { path: String },
    /// Its lock file (beside it) could not be opened or locked.
    #[error("cannot lock the history database '{path}' (lock file '{lock}'): {reason}")]
    Lock {
        path: String,
        lock: String,
        reason: String,
    },
}

/// The room log and the sessions in an SQLite file: what the hub holds.
/// Its appends and session changes only queue (under the hub's lock, so
/// they must be cheap); the SQLite work is the [`Writer`]'s, done by
/// [`HistoryStore::commit`] or, without the hub's lock, by a
/// [`Committer`].
#[derive(Debug)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// Give back the unused reserved ids when dropped (false: a crash, in tests).
    release_on_drop: bool,
    /// What [`preload`](Self::preload) read, for the hub's `load`.
    preloaded: Option<Loaded>,
}

/// What the store and its committer share.
#[derive(Debug)]
struct Shared {
    /// Appends and session changes not yet handed to the writer.
    queue: Mutex<Queue>,
    /// The connection; whoever holds it writes, one batch at a time.
    writer: Mutex<Writer>,
    /// Ids below this are reserved, committed in `meta`.
    reserved: AtomicU64,
    /// The file's lock (see [`lock_file`]), held for as long as the
    /// store; last, so that it is let go after the connection is closed.
    _lock: File,
    /// The lock on the database file itself (see [`lock_database`]),
    /// after the connection too: closing it lets go of the connection's
    /// own (POSIX) locks on the file.
    _db_lock: File,
}

/// What waits for the writer. Entries are copied into one byte buffer
/// (no allocation per entry once it has grown), and the writer swaps the
/// whole queue for an empty one it keeps: the two buffers take turns, so
/// nothing an append copies is freed on another thread. The writer
/// stores the buffer as it is, as the `entries` BLOB of one `batches` row.
///
/// **The batch layout** (the buffer, and so the BLOB): the entries one
/// after the other, oldest first (ids rising), nothing before, between
/// or after them. Numbers are varints ([`imchat_core::varint`], as the
/// wire format's: LEB128, 7 bits a byte, least significant first, the
/// high bit set on every byte but the last; at most 10 bytes for a u64,
/// shortest form), so that an entry costs about 10 bytes besides
/// its texts (the bytes written to the file are what a commit pays for).
/// Each entry:
///
/// | bytes | field |
/// |---|---|
/// | varint | id: its difference from the previous entry's id (the first entry's: from 0) |
/// | varint | time (the entry's [`Timestamp`]): its difference from the previous entry's time (the first's: from 0), as a wrapping u64 difference read as i64, zigzag-encoded (0, -1, 1, -2… as 0, 1, 2, 3…) |
/// | 1 | event: 0 chat message, 1 joined, 2 left; plus 4 if a recipient follows the user (a private message) |
/// | 1 | chat: 0 text, 1 action; left: the reason code; joined: 0 |
/// | varint | a chat message's client id; 0 for a join or leave |
/// | varint + n | the user (the sender, or who joined or left): its length in bytes, then UTF-8 |
/// | varint + n | the recipient, if flagged: the same |
/// | varint + n | the text (chat; left: the reason's text; joined: empty): the same |
#[derive(Debug, Default)]
struct Queue {
    /// The entries in the batch layout, oldest first.
    entries: Vec<u8>,
    /// The oldest and the newest entry's id, if any.
    first: Option<u64>,
    newest: Option<u64>,
    /// The newest entry's time (0 before the first).
    last_time: u64,
    /// How many entries, and the sum of their costs.
    count: usize,
    cost: usize,
    /// Session changes (rare), oldest first; written after the entries.
    sessions: Vec<Op>,
}

/// A session change waiting for the writer.
#[derive(Debug)]
enum Op {
    SaveSession(SessionRecord),
    DropSession(Username),
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Bytes of queue buffer kept between batches at most (more is given back).
const QUEUE_KEEP: usize = 1 << 20;

/// Appends `text`'s length (a varint) and bytes.
fn put_str(b: &mut Vec<u8>, text: &str) {
    varint::put(b, len(text.len()));
    b.extend_from_slice(text.as_bytes());
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.sessions.is_empty()
    }

    /// Empties the queue, keeping its buffers (up to [`QUEUE_KEEP`]).
    fn clear(&mut self) {
        self.entries.clear();
        self.entries.shrink_to(QUEUE_KEEP);
        self.sessions.clear();
        (self.first, self.newest, self.last_time) = (None, None, 0);
        (self.count, self.cost) = (0, 0);
    }

    /// Copies `entry` in, in the batch layout (see [`Queue`]).
    fn push_entry(&mut self, entry: &LogEntry) {
        let col = Columns::of(&entry.event);
        let b = &mut self.entries;
        varint::put(b, entry.id.0.wrapping_sub(self.newest.unwrap_or(0)));
        varint::put(b, varint::zigzag(entry.time.0.wrapping_sub(self.last_time)));
        b.extend_from_slice(&[
            col.event | if col.recipient.is_some() { 4 } else { 0 },
            col.kind,
        ]);
        varint::put(b, col.client_id);
        put_str(b, col.user.as_str());
        if let Some(to) = col.recipient {
            put_str(b, to.as_str());
        }
        put_str(b, col.text);
        self.first.get_or_insert(entry.id.0);
        self.newest = Some(entry.id.0);
        self.last_time = entry.time.0;
        self.count += 1;
        self.cost = self.cost.saturating_add(entry.cost());
    }
}

/// A log event's columns, as the batch layout (and the version 1 table)
/// store them: the event (0 chat, 1 joined, 2 left), who, a private
/// message's receiver, the kind (chat: 0 text, 1 action; left: the
/// reason), the text and the sender's id of a chat.
struct Columns<'a> {
    event: u8,
    user: &'a Username,
    recipient: Option<&'a Username>,
    kind: u8,
    text: &'a str,
    client_id: u64,
}

impl<'a> Columns<'a> {
    fn of(event: &'a LogEvent) -> Self {
        let (event, user, recipient, kind, text, client_id) = match event {
            LogEvent::Chat {
                from,
                to,
                kind,
                text,
                client_id,
            } => (
                0,
                from,
                to.as_ref(),
                match kind {
                    ChatKind::Text => 0,
                    ChatKind::Action => 1,
                },
                text.as_str(),
                *client_id,
            ),
            LogEvent::Joined { user } => (1, user, None, 0, "", 0),
            LogEvent::Left { user, reason, text } => (2, user, None, reason.0, text.as_str(), 0),
        };
        Columns {
            event,
            user,
            recipient,
            kind,
            text,
            client_id,
        }
    }
}

/// Reads entries in the batch layout (see [`Queue`]) back. The bytes come
/// from a file: anything cut short or invalid is an error, never a panic.
struct Decoder<'a> {
    bytes: &'a [u8],
    /// The previous entry's id and time (0 before the first).
    id: u64,
    time: u64,
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder {
            bytes,
            id: 0,
            time: 0,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if n > self.bytes.len() {
            return Err(corrupt("history batch (an entry is cut short)"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        varint::read(&mut self.bytes).map_err(|e| match e {
            varint::VarintError::CutShort => corrupt("history batch (an entry is cut short)"),
            varint::VarintError::Malformed => corrupt("history batch (a number is too long)"),
        })
    }

    fn str(&mut self) -> Result<&'a str, StoreError> {
        let n = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| corrupt("history batch (a text is not UTF-8)"))
    }

    fn entry(&mut self) -> Result<LogEntry, StoreError> {
        let id = self.id.wrapping_add(self.varint()?);
        let time = self.time.wrapping_add(varint::unzigzag(self.varint()?));
        (self.id, self.time) = (id, time);
        let (event, kind) = (self.u8()?, self.u8()?);
        let client_id = self.varint()?;
        let user = name(self.str()?)?;
        let to = match event & 4 {
            0 => None,
            _ => Some(name(self.str()?)?),
        };
        let text = self.str()?.to_string();
        let event = match (event & !4, to) {
            (0, to) => LogEvent::Chat {
                from: user,
                to,
                kind: match kind {
                    0 => ChatKind::Text,
                    1 => ChatKind::Action,
                    _ => return Err(corrupt("chat kind")),
                },
                text,
                client_id,
            },
            (1, None) => LogEvent::Joined { user },
            (2, None) => LogEvent::Left {
                user,
                reason: LeaveReason(kind),
                text,
            },
            _ => return Err(corrupt("log entry")),
        };
        Ok(LogEntry {
            id: MessageId(id),
            time: Timestamp(time),
            event,
        })
    }
}

/// Decodes the `entries` of a `batches` row onto `out`, checking them
/// against the row's first and last ids and count.
fn decode_batch(
    (first_id, last_id, count): (u64, u64, u64),
    blob: &[u8],
    out: &mut Vec<LogEntry>,
) -> Result<(), StoreError> {
    let start = out.len();
    let mut d = Decoder::new(blob);
    while !d.bytes.is_empty() {
        out.push(d.entry()?);
    }
    let got = &out[start..];
    let matches = len(got.len()) == count
        && got.first().map(|e| e.id.0) == Some(first_id)
        && got.last().map(|e| e.id.0) == Some(last_id)
        && got.windows(2).all(|w| w[0].id.0 < w[1].id.0);
    if matches {
        Ok(())
    } else {
        Err(corrupt(
            "history batch (its entries do not match its ids and count)",
        ))
    }
}

/// Inserts `batch`'s entries (if any) as one `batches` row.
fn insert_batch(conn: &Connection, batch: &Queue) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (batch.first, batch.newest) else {
        return Ok(());
    };
    conn.prepare_cached(INSERT_BATCH)
        .and_then(|mut s| {
            s.execute(params![
                to_sql(first),
                to_sql(last),
                to_sql(len(batch.count)),
                to_sql(len(batch.cost)),
                &batch.entries[..],
            ])
        })
        .map_err(|e| backend(&e))?;
    Ok(())
}

/// Converts a version 1 file (one `log` row per entry) to version 2 in one
/// transaction: its entries become `batches` rows of [`MIGRATE_BATCH`],
/// the `log` table goes. Nothing changes if it fails.
fn migrate_v1(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| backend(&e))?;
    let converted = (|| {
        conn.execute_batch(SCHEMA_BATCHES)
            .map_err(|e| backend(&e))?;
        let mut batch = Queue::default();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT id, time, event, user, recipient, kind, text, client_id
                     FROM log ORDER BY id",
                )
                .map_err(|e| backend(&e))?;
            let mut rows = stmt.query([]).map_err(|e| backend(&e))?;
            while let Some(row) = rows.next().map_err(|e| backend(&e))? {
                batch.push_entry(&read_entry(row).map_err(|e| backend(&e))??);
                if batch.count == MIGRATE_BATCH {
                    insert_batch(conn, &batch)?;
                    batch.clear();
                }
            }
        }
        insert_batch(conn, &batch)?;
        conn.execute_batch(&format!(
            "DROP TABLE log; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|e| backend(&e))
    })();
    if converted.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            log::warn!("history database rollback failed: {e}");
        }
    }
    converted
}

/// The connection and what it knows of the file.
#[derive(Debug)]
struct Writer {
    conn: Connection,
    _checkpointer: Checkpointer,
    /// The bounds of the hub's log, which the file follows.
    max_entries: usize,
    max_bytes: usize,
    /// The batches the file holds, oldest first, as trimming needs them.
    batches: VecDeque<Batch>,
    /// The entries and bytes they hold.
    entries: usize,
    bytes: usize,
    /// The newest entry id a batch held (committed or lost).
    done: u64,
    /// A committer's batch was lost and the hub has not heard of it yet:
    /// the next [`HistoryStore::commit`] must fail.
    unreported: Option<String>,
    /// The empty queue swapped in for the one taken (see [`Queue`]).
    spare: Queue,
}

/// A `batches` row as trimming needs it: no entry is read to trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    first_id: u64,
    count: usize,
    cost: usize,
}

/// What one [`Committer::commit`] did.
#[derive(Debug)]
pub struct Committed {
    /// Every entry appended up to this id is committed, or lost with `result`.
    pub upto: MessageId,
    /// `Err`: the batch was lost.
    pub result: Result<(), StoreError>,
}

/// Commits what the store queued, from a thread of its own, without the
/// hub's lock: only the hand-over of the queue and
/// [`report`](Committer::report)'s release of the acks need the hub.
/// One committer per store.
#[derive(Debug, Clone)]
pub struct Committer {
    shared: Arc<Shared>,
}

impl Committer {
    /// Writes and commits everything queued so far (nothing to write
    /// still reports how far the commits went). Call without the hub's lock.
    pub fn commit(&self) -> Committed {
        let mut w = self.shared.writer();
        let result = self.shared.write_queue(&mut w);
        if let Err(e) = &result {
            w.unreported = Some(match e {
                StoreError::Backend { detail } => detail.clone(),
                other => other.to_string(),
            });
        }
        Committed {
            upto: MessageId(w.done),
            result,
        }
    }

    /// Commits what is still queued, gives back the reserved ids not used,
    /// and moves the whole WAL into the
    /// database file, emptying it (a TRUNCATE checkpoint): after a clean
    /// stop the file alone holds everything, so a copy of just that file
    /// is a complete backup. The periodic checkpoints are passive and may
    /// not have caught the last writes (the leaves and sessions of the
    /// shutdown). Call once the hub has shut down.
    pub fn close(&self) -> Result<(), StoreError> {
        let mut w = self.shared.writer();
        self.shared.write_queue(&mut w)?;
        // A clean stop: the restart goes on from the last id, no jump.
        if w.unreported.is_none() {
            w.give_back_reserved(&self.shared.reserved);
        }
        let busy: i64 = w
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| backend(&e))?;
        if busy != 0 {
            return Err(StoreError::Backend {
                detail: "the last checkpoint could not finish: the database was in use".into(),
            });
        }
        Ok(())
    }

    /// Tells the hub (locked by the caller) what [`commit`](Committer::commit)
    /// did: the acks it covers go out, or errors for a lost batch.
    pub fn report(&self, hub: &mut Hub, committed: Committed, now: Instant) {
        hub.history_committed(committed.upto, committed.result, now);
        // Told now (or by a commit of the hub's in between, which failed for it).
        self.shared.writer().unreported = None;
    }
}

/// A thread with its own connection that checkpoints the WAL now and
/// then (PASSIVE: it never blocks the appends); stopped and joined on drop.
#[derive(Debug)]
struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, String> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.busy_timeout(Duration::from_secs(1)).map(|()| c))
        .map_err(|e| e.to_string())?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path = path.to_path_buf();
        let opened = file_id(&path);
        let thread = thread::Builder::new()
            .name("checkpoint".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                // Failed in a row (a full disk fails every round): said
                // at the first, and when it works again.
                let mut failed = 0u64;
                let mut moved_told = false;
                loop {
                    match stopped.recv_timeout(CHECKPOINT_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {
                            let result =
                                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                            let said;
                            (failed, said) = checkpoint_said(failed, result.err().as_ref());
                            if let Some(said) = said {
                                log::warn!("{said}");
                            }
                            if !moved_told {
                                if let Some(said) = moved_said(&path, opened) {
                                    log::error!("{said}");
                                    moved_told = true;
                                }
                            }
                        }
                        _ => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The device and inode of the file at `path`, where the system has them.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// What to log when the history database at `path`, opened as the file
/// `opened` ([`file_id`]), is no longer there under its name (deleted, or
/// another file put in its place): the server goes on writing the file it
/// opened, which the next start will not find, so what it acknowledges
/// from now on is lost then.
fn moved_said(path: &Path, opened: Option<(u64, u64)>) -> Option<String> {
    let opened = opened?;
    let why = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "deleted",
        Err(_) => return None,
        Ok(_) if file_id(path) != Some(opened) => "replaced by another file",
        Ok(_) => return None,
    };
    Some(format!(
        "the history database file '{}' was {why} while the server runs: the server still writes to the file it opened, which the next start will not find; its history, sessions, accounts and bans are lost when the server stops, unless that file is restored from a copy first",
        path.display()
    ))
}

/// What to log of a checkpoint's outcome after `failed` failures in a
/// row, and the failures in a row now: the first failure of a run, and
/// the success that ends one (a full disk fails every round, twice a
/// second), nothing else.
fn checkpoint_said(failed: u64, error: Option<&rusqlite::Error>) -> (u64, Option<String>) {
    match error {
        Some(e) => (
            failed + 1,
            (failed == 0).then(|| {
                format!(
                    "history database checkpoint failed: {e} (said once; tried again every {} ms)",
                    CHECKPOINT_EVERY.as_millis()
                )
            }),
        ),
        None => (
            0,
            (failed > 0)
                .then(|| format!("history database checkpoint works again, after {failed} failed")),
        ),
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn backend(e: &rusqlite::Error) -> StoreError {
    StoreError::Backend {
        detail: e.to_string(),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend {
        detail: format!("the history database holds an invalid {what}"),
    }
}

/// u64 values (ids, client ids, times, the epoch) are stored as SQLite's
/// signed 64-bit integers, bit for bit.
fn to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn name(text: &str) -> Result<Username, StoreError> {
    Username::new(text).map_err(|_| corrupt("username"))
}

/// The lock of the history file at `path`: an exclusive advisory lock
/// (`flock`, on unix) on `<path>.lock` beside it (beside the file a link
/// points to), taken without waiting. A lock file rather than the database
/// itself, whose own locks are SQLite's (POSIX locks, which closing any
/// other descriptor of the file would let go). The system lets go of it
/// when its holder exits, so a crashed server leaves no stale lock; the
/// empty file stays.
fn lock_file(path: &Path) -> Result<File, OpenError> {
    let shown = path.display().to_string();
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut name = real.clone().into_os_string();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let failed = |e: std::io::Error| OpenError::Lock {
        path: shown.clone(),
        lock: lock_path.display().to_string(),
        reason: crate::files::io_reason(&e),
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    // Empty, but beside a private file: as private (a lock file that
    // exists keeps its mode).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&lock_path).map_err(failed)?;
    if !imchat_cli::try_lock(&file).map_err(failed)? {
        return Err(OpenError::InUse { path: shown });
    }
    Ok(file)
}

/// An exclusive advisory lock (`flock`) on the database file at `path`
/// itself, besides its lock file's: another name for the same file (a
/// hard link) has a lock file of its own, and a lock file can be deleted
/// while its server runs; two servers writing one file lose messages.
/// The descriptor must stay open while SQLite uses the file (closing any
/// descriptor of it lets go of the process's POSIX locks, SQLite's own):
/// the store keeps it until after its connection is closed.
fn lock_database(path: &Path, shown: &str) -> Result<File, OpenError> {
    let failed = |e: std::io::Error| OpenError::Sqlite {
        path: shown.to_string(),
        reason: crate::files::io_reason(&e),
    };
    let file = File::open(path).map_err(failed)?;
    if !imchat_cli::try_lock(&file).map_err(failed)? {
        return Err(OpenError::InUse {
            path: shown.to_string(),
        });
    }
    Ok(file)
}

/// Adds to `sessions` its column `spent` (the token a session's last
/// resume presented, while its client has not shown it got the new one;
/// `NULL` for none), if the file has none: added to version 2 without a
/// new version, as servers that do not know it read and write the table
/// by its other columns, named.
fn add_spent_column(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('sessions') WHERE name = 'spent'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE sessions ADD COLUMN spent BLOB")?;
    }
    Ok(())
}

/// Creates the history file `path`, if there is none, readable and
/// writable by its owner only: it holds private messages, the sessions'
/// resume tokens and the accounts' password hashes. SQLite gives its WAL
/// and shared-memory files the database file's permissions. A file that
/// exists keeps its own (see [`warn_if_shared`]).
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Logs each file of a history database (`path`, its `-wal` and `-shm`)
/// that other users of the machine may read, with the command that makes
/// it private (the operator may share it on purpose: modes are left alone).
fn warn_if_shared(path: &Path) {
    for (file, mode) in shared_files(path) {
        log::warn!(
            "the history database file '{}' can be read by other users of this machine (mode {mode:o}), and it holds private messages, resume tokens and password hashes: chmod 600 it (and the database's other files: '{}', its -wal and -shm)",
            file.display(),
            path.display()
        );
    }
}

/// The files of the history database `path` that others than their owner
/// may read or write, with their modes.
fn shared_files(path: &Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut shared = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        if let Some(mode) = shared_mode(&file) {
            shared.push((file, mode));
        }
    }
    shared
}

/// The mode of `file` when others than its owner may read or write it
/// (group or others bits); `None` when it is private, missing, or the
/// system has no such modes. For the operator's warnings about private
/// files: the history database here, the TLS key and the password file at
/// start.
pub fn shared_mode(file: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

/// The key a session is stored under: one per user, whatever its case.
fn session_key(user: &Username) -> String {
    user.as_str().to_lowercase()
}

impl SqliteStore {
    /// Opens (or creates) the history file at `path`, for a hub whose log
    /// keeps at most `max_entries` entries and `max_bytes` bytes.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created, is not an SQLite database,
    /// is another program's database, or has another schema version; or
    /// another server has it open ([`OpenError::InUse`]).
    pub fn open(
        path: &Path,
        max_entries: usize,
        max_bytes: usize,
        durability: Durability,
    ) -> Result<SqliteStore, OpenError> {
        let shown = path.display().to_string();
        // Taken before the file is read or created: a second server on
        // the same file stops here, having changed nothing.
        let lock = lock_file(path)?;
        let sqlite = |e: rusqlite::Error| OpenError::Sqlite {
            path: shown.clone(),
            reason: e.to_string(),
        };
        private_file(path).map_err(|e| OpenError::Sqlite {
            path: shown.clone(),
            reason: crate::files::io_reason(&e),
        })?;
        let db_lock = lock_database(path, &shown)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        // SQLite opens a file it may not write read-only, without an
        // error: the server would start, then refuse every chat message.
        if conn.is_readonly(MAIN_DB).map_err(sqlite)? {
            return Err(OpenError::ReadOnly { path: shown });
        }
        // Reading the header is what finds a file that is not a database.
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite)?;
        let app: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(sqlite)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(sqlite)?;
        warn_if_shared(path);
        if version == 0 && app == 0 && tables == 0 {
            // Pages of 4 KiB: each commit writes its changed pages to the
            // WAL (see "Cost" above).
            conn.execute_batch(&format!(
                "PRAGMA page_size = {PAGE_SIZE}; BEGIN; {SCHEMA_META_SESSIONS} {SCHEMA_BATCHES}
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sqlite)?;
        } else if app != APPLICATION_ID {
            return Err(OpenError::Foreign { path: shown });
        } else if version == SCHEMA_V1 {
            migrate_v1(&conn).map_err(|e| OpenError::Migrate {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        } else if version != SCHEMA_VERSION {
            return Err(OpenError::Version {
                path: shown,
                found: version,
            });
        }
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::Sqlite {
                path: shown,
                reason: format!("cannot use a write-ahead log (journal mode {mode})"),
            });
        }
        conn.pragma_update(None, "synchronous", sync)
            .map_err(sqlite)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)
            .map_err(sqlite)?;
        // Another process holding the file (a second server on the same
        // path) gets a moment, then an error, never a silent wait.
        conn.busy_timeout(Duration::from_secs(2)).map_err(sqlite)?;
        // Checkpoints (copying the WAL into the database, with its disk
        // syncs) are done by a thread of their own, so that no append waits
        // for one; SQLite's own would run inside an append.
        let checkpointer = Checkpointer::start(path).map_err(|reason| OpenError::Sqlite {
            path: shown.clone(),
            reason,
        })?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sqlite)?;
        add_spent_column(&conn).map_err(sqlite)?;
        let batches = {
            let mut stmt = conn
                .prepare("SELECT first_id, count, cost FROM batches ORDER BY first_id")
                .map_err(sqlite)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Batch {
                        first_id: from_sql(r.get(0)?),
                        count: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        cost: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    })
                })
                .map_err(sqlite)?;
            rows.collect::<Result<VecDeque<Batch>, _>>()
                .map_err(sqlite)?
        };
        let entries = batches.iter().map(|b| b.count).sum();
        let bytes = batches.iter().map(|b| b.cost).sum();
        let reserved: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'reserved_id'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite)?;
        let reserved = reserved.map_or(0, from_sql);
        let writer = Writer {
            conn,
            _checkpointer: checkpointer,
            max_entries,
            max_bytes,
            batches,
            entries,
            bytes,
            done: 0,
            unreported: None,
            spare: Queue::default(),
        };
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                writer: Mutex::new(writer),
                reserved: AtomicU64::new(reserved),
                _lock: lock,
                _db_lock: db_lock,
            }),
            release_on_drop: true,
            preloaded: None,
        })
    }

    /// Notes that cluster server `id` writes this file from now on;
    /// returns the server of the run before, if one wrote it in a
    /// cluster. What that run published to the cluster's stream and this
    /// file kept is this server's own (see `Cluster::set_former`).
    ///
    /// # Errors
    ///
    /// The file cannot be read or written.
    pub fn swap_cluster_server(&self, id: u64) -> Result<Option<u64>, StoreError> {
        let w = self.shared.writer();
        let former: Option<i64> = w
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'cluster_server'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| backend(&e))?;
        w.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('cluster_server', ?1)",
                [to_sql(id)],
            )
            .map_err(|e| backend(&e))?;
        Ok(former.map(from_sql).filter(|f| *f != id))
    }

    /// The handle a commit thread commits with, without the hub's lock.
    #[must_use]
    pub fn committer(&self) -> Committer {
        Committer {
            shared: self.shared.clone(),
        }
    }

    /// Reserves ids up to `id` + [`RESERVE_BLOCK`], committed at once (the
    /// queue waits: its ids are below `id`).
    fn reserve(&self, id: u64) -> Result<(), StoreError> {
        let reserved = id.saturating_add(RESERVE_BLOCK);
        let w = self.shared.writer();
        w.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('reserved_id', ?1)")
            .and_then(|mut s| s.execute([to_sql(reserved)]))
            .map_err(|e| backend(&e))?;
        self.shared.reserved.fetch_max(reserved, Ordering::SeqCst);
        Ok(())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A crash, for tests: dropped without committing or giving ids back.
    #[cfg(test)]
    fn crash(mut self) {
        self.release_on_drop = false;
    }

    /// Entries and bytes the log table holds now.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let w = self.shared.writer();
        (w.entries, w.bytes)
    }

    /// Runs `f` on the connection (tests poke at the file through it).
    #[cfg(test)]
    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.shared.writer().conn)
    }
}

impl Shared {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the queue and writes it in one transaction; with the writer
    /// held, so that batches are committed in the order they were queued.
    fn write_queue(&self, w: &mut Writer) -> Result<(), StoreError> {
        let mut batch = std::mem::take(&mut w.spare);
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner),
            &mut batch,
        );
        let result = self.write_batch(w, &batch);
        batch.clear();
        w.spare = batch;
        result
    }

    fn write_batch(&self, w: &mut Writer, batch: &Queue) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let newest = batch.newest;
        let reserved = self.reserved.load(Ordering::SeqCst);
        // Reserve the next block while half of this one is left, in the
        // same transaction: an append then never waits for a reservation.
        let ahead = newest
            .filter(|n| n.saturating_add(RESERVE_BLOCK / 2) >= reserved)
            .map(|n| n.saturating_add(RESERVE_BLOCK));
        let result = w.write(batch, ahead);
        if let Some(n) = newest {
            w.done = w.done.max(n);
        }
        if let (Ok(()), Some(r)) = (&result, ahead) {
            self.reserved.fetch_max(r, Ordering::SeqCst);
        }
        result
    }
}

impl Writer {
    /// Gives back the reserved ids not used (call once everything queued
    /// is committed, on a clean stop): a restart then goes on from the
    /// last id stored, with no gap. `reserved`, the reservation in memory,
    /// comes down with it, so that an entry appended after all reserves
    /// its id again before it is written.
    fn give_back_reserved(&self, reserved: &AtomicU64) {
        let released = self.conn.query_row(
            "UPDATE meta SET value = coalesce(
                 (SELECT last_id FROM batches ORDER BY first_id DESC LIMIT 1), 0) + 1
             WHERE key = 'reserved_id' RETURNING value",
            [],
            |r| r.get::<_, i64>(0),
        );
        match released {
            Ok(value) => reserved.store(from_sql(value), Ordering::SeqCst),
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(e) => log::warn!("history database: reserved ids not given back: {e}"),
        }
    }

    /// Writes `batch` as one row (and a reservation up to `reserve`) in one
    /// transaction, trimming when past the margin; rolled back on failure.
    fn write(&mut self, batch: &Queue, reserve: Option<u64>) -> Result<(), StoreError> {
        let added = batch.first.map(|first_id| Batch {
            first_id,
            count: batch.count,
            cost: batch.cost,
        });
        let written = self.begin().and_then(|()| {
            insert_batch(&self.conn, batch)?;
            for op in &batch.sessions {
                self.apply(op)?;
            }
            if let Some(r) = reserve {
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('reserved_id', ?1)",
                    )
                    .and_then(|mut s| s.execute([to_sql(r)]))
                    .map_err(|e| backend(&e))?;
            }
            let cut = self.to_trim(added);
            // A failed trim only leaves the file larger.
            let cut = match cut.checked_sub(1).map(|last| self.trim(last)) {
                Some(Err(e)) => {
                    log::warn!("history database not trimmed: {e}");
                    0
                }
                _ => cut,
            };
            self.conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .map_err(|e| backend(&e))?;
            Ok(cut)
        });
        match written {
            Ok(cut) => {
                if let Some(b) = added {
                    self.batches.push_back(b);
                    self.entries += b.count;
                    self.bytes += b.cost;
                }
                for b in self.batches.drain(..cut) {
                    self.entries -= b.count;
                    self.bytes -= b.cost;
                }
                Ok(())
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                        log::warn!("history database rollback failed: {e}");
                    }
                }
                Err(e)
            }
        }
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]))
            .map_err(|e| backend(&e))?;
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::SaveSession(session) => {
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO sessions (key, user, token, last_client_id, spent)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            session_key(&session.user),
                            session.user.as_str(),
                            &session.token.0[..],
                            to_sql(session.last_client_id),
                            session.spent.as_ref().map(|t| &t.0[..]),
                        ])
                    })
                    .map_err(|e| backend(&e))?;
                Ok(())
            }
            Op::DropSession(user) => {
                self.conn
                    .prepare_cached("DELETE FROM sessions WHERE key = ?1")
                    .and_then(|mut s| s.execute([session_key(user)]))
                    .map_err(|e| backend(&e))?;
                Ok(())
            }
        }
    }

    /// How many of the oldest batches to delete, with `added` written after
    /// them: none unless past the bounds by more than the margin (1/16),
    /// which lets trims be rare; then the oldest, one after the other, as
    /// long as what is left still holds the bounds' worth of entries or of
    /// bytes (so all the hub's log keeps), never the newest.
    fn to_trim(&self, added: Option<Batch>) -> usize {
        let (mut entries, mut bytes) = added.map_or((self.entries, self.bytes), |b| {
            (self.entries + b.count, self.bytes + b.cost)
        });
        let over = entries > self.max_entries.saturating_add(self.max_entries / 16 + 1)
            || bytes > self.max_bytes.saturating_add(self.max_bytes / 16 + 1);
        if !over {
            return 0;
        }
        let total = self.batches.len() + usize::from(added.is_some());
        let mut cut = 0;
        for b in &self.batches {
            let (left, left_bytes) = (entries - b.count, bytes - b.cost);
            if cut + 1 >= total || (left < self.max_entries && left_bytes < self.max_bytes) {
                break;
            }
            (entries, bytes) = (left, left_bytes);
            cut += 1;
        }
        cut
    }

    /// Deletes the batches up to and including the one at `last` (by
    /// position, oldest first): one range of the primary key.
    fn trim(&mut self, last: usize) -> Result<(), StoreError> {
        let upto = self.batches[last].first_id;
        self.conn
            .prepare_cached("DELETE FROM batches WHERE first_id <= ?1")
            .and_then(|mut s| s.execute([to_sql(upto)]))
            .map_err(|e| backend(&e))?;
        Ok(())
    }
}

impl Drop for SqliteStore {
    /// A clean close: commits what is queued and gives back the reserved
    /// ids not used, so that a restart after a clean stop leaves no gap.
    fn drop(&mut self) {
        if !self.release_on_drop {
            return;
        }
        let mut w = self.shared.writer();
        if self.shared.write_queue(&mut w).is_err() || w.unreported.is_some() {
            return;
        }
        w.give_back_reserved(&self.shared.reserved);
    }
}

fn read_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<LogEntry, StoreError>> {
    let id: i64 = row.get(0)?;
    let time: i64 = row.get(1)?;
    let event: i64 = row.get(2)?;
    let user: String = row.get(3)?;
    let recipient: Option<String> = row.get(4)?;
    let kind: i64 = row.get(5)?;
    let text: String = row.get(6)?;
    let client_id: i64 = row.get(7)?;
    Ok((|| {
        let user = name(&user)?;
        let event = match event {
            0 => LogEvent::Chat {
                from: user,
                to: recipient.as_deref().map(name).transpose()?,
                kind: match kind {
                    0 => ChatKind::Text,
                    1 => ChatKind::Action,
                    _ => return Err(corrupt("chat kind")),
                },
                text,
                client_id: from_sql(client_id),
            },
            1 => LogEvent::Joined { user },
            2 => LogEvent::Left {
                user,
                reason: LeaveReason(u8::try_from(kind).map_err(|_| corrupt("leave reason"))?),
                text,
            },
            _ => return Err(corrupt("log entry")),
        };
        Ok(LogEntry {
            id: MessageId(from_sql(id)),
            time: Timestamp(from_sql(time)),
            event,
        })
    })())
}

impl SqliteStore {
    /// Reads now what the hub's [`load`](HistoryStore::load) will get,
    /// so that a file whose history cannot be read stops the server
    /// before it says it listens.
    ///
    /// # Errors
    ///
    /// The history cannot be read (a batch, a session that is not valid).
    pub fn preload(&mut self) -> Result<(), StoreError> {
        let loaded = self.read_all()?;
        self.preloaded = Some(loaded);
        Ok(())
    }

    /// The newest entries the hub keeps, the sessions and the ids.
    fn read_all(&mut self) -> Result<Loaded, StoreError> {
        let w = self.shared.writer();
        let epoch: Option<i64> = w
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| backend(&e))?;
        // Only what the hub can keep: the newest `max_entries`, from the
        // newest batches that hold them.
        let mut rows: Vec<((u64, u64, u64), Vec<u8>)> = Vec::new();
        {
            let mut stmt = w
                .conn
                .prepare(
                    "SELECT first_id, last_id, count, entries FROM batches ORDER BY first_id DESC",
                )
                .map_err(|e| backend(&e))?;
            let mut batches = stmt.query([]).map_err(|e| backend(&e))?;
            let mut held = 0u64;
            while held < len(w.max_entries) {
                let Some(r) = batches.next().map_err(|e| backend(&e))? else {
                    break;
                };
                let get = |i| r.get::<_, i64>(i).map(from_sql).map_err(|e| backend(&e));
                let ids = (get(0)?, get(1)?, get(2)?);
                held = held.saturating_add(ids.2);
                rows.push((ids, r.get(3).map_err(|e| backend(&e))?));
            }
        }
        let mut entries = Vec::new();
        for (ids, blob) in rows.iter().rev() {
            decode_batch(*ids, blob, &mut entries)?;
        }
        let older = entries.len().saturating_sub(w.max_entries);
        entries.drain(..older);
        let newest: Option<i64> = w
            .conn
            .query_row(
                "SELECT last_id FROM batches ORDER BY first_id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| backend(&e))?;
        let mut stmt = w
            .conn
            .prepare("SELECT user, token, last_client_id, spent FROM sessions ORDER BY key")
            .map_err(|e| backend(&e))?;
        let sessions = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .map_err(|e| backend(&e))?
            .map(|r| {
                let (user, token, last, spent) = r.map_err(|e| backend(&e))?;
                let token_of = |bytes: Vec<u8>| {
                    bytes
                        .try_into()
                        .map(ResumeToken)
                        .map_err(|_| corrupt("session token"))
                };
                Ok(SessionRecord {
                    user: name(&user)?,
                    token: token_of(token)?,
                    spent: spent.map(token_of).transpose()?,
                    last_client_id: from_sql(last),
                })
            })
            .collect::<Result<Vec<SessionRecord>, StoreError>>()?;
        let reserved: Option<i64> = w
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'reserved_id'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| backend(&e))?;
        let reserved = reserved.map_or(0, from_sql);
        self.shared.reserved.fetch_max(reserved, Ordering::SeqCst);
        let after_newest = newest.map_or(1, |n| from_sql(n) + 1);
        Ok(Loaded {
            entries,
            // Ids up to the reservation may have been seen before a crash.
            next_id: MessageId(after_newest.max(reserved)),
            epoch: epoch.map(from_sql),
            sessions,
        })
    }
}

impl HistoryStore for SqliteStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        match self.preloaded.take() {
            Some(loaded) => Ok(loaded),
            None => self.read_all(),
        }
    }

    fn set_epoch(&mut self, epoch: u64) -> Result<(), StoreError> {
        self.shared
            .writer()
            .conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?1)",
                [to_sql(epoch)],
            )
            .map_err(|e| backend(&e))?;
        Ok(())
    }

    /// Queues the entry for the writer (reserving ids first when it
    /// reaches the reservation, which the writer keeps ahead).
    fn append(&mut self, entry: &LogEntry) -> Result<(), StoreError> {
        if entry.id.0 >= self.shared.reserved.load(Ordering::SeqCst) {
            self.reserve(entry.id.0)?;
        }
        self.queue().push_entry(entry);
        Ok(())
    }

    /// Writes and commits what is queued, after any batch a [`Committer`]
    /// is writing; fails also for a committer's lost batch the hub has not
    /// heard of.
    fn commit(&mut self) -> Result<(), StoreError> {
        let mut w = self.shared.writer();
        let written = self.shared.write_queue(&mut w);
        match w.unreported.take() {
            Some(detail) if written.is_ok() => Err(StoreError::Backend { detail }),
            _ => written,
        }
    }

    fn save_session(&mut self, session: &SessionRecord) -> Result<(), StoreError> {
        self.queue().sessions.push(Op::SaveSession(session.clone()));
        Ok(())
    }

    fn drop_session(&mut self, user: &Username) -> Result<(), StoreError> {
        self.queue().sessions.push(Op::DropSession(user.clone()));
        Ok(())
    }
}

/// The `accounts` table of the history file: one row per protected
/// username, by name key, with its Argon2id hash (a PHC string, see
/// [`crate::accounts`]). Created when missing, beside the tables of the
/// schema (an added table: older servers read the file as before). It has
/// its own connection, used from the connections' reader threads, never
/// under the hub's lock; the hub's appends and these writes take turns at
/// SQLite's write lock (a write waits at most the busy timeout).
#[derive(Debug)]
pub struct SqliteAccounts {
    conn: std::sync::Mutex<Connection>,
}

/// The accounts table (`name`: the name as registered, to show), and the
/// operators' bans (`target`: a username or an address, as text; `pos`:
/// their order).
const ACCOUNTS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bans (
    pos INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL
);";

impl SqliteAccounts {
    /// Opens the accounts of the history file at `path`, which
    /// [`SqliteStore::open`] created: it must exist and be an imchat
    /// history (so that `--reset-name` never creates or changes another
    /// file, and can run beside a running server).
    ///
    /// # Errors
    ///
    /// The file cannot be opened, is not an imchat history, or the table
    /// cannot be created.
    pub fn open(path: &Path) -> Result<SqliteAccounts, OpenError> {
        let shown = path.display().to_string();
        let sqlite = |e: rusqlite::Error| OpenError::Sqlite {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        let app: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(sqlite)?;
        if app != APPLICATION_ID {
            return Err(OpenError::Foreign { path: shown });
        }
        conn.execute_batch(ACCOUNTS_SCHEMA).map_err(sqlite)?;
        // Every row read once: a damaged table stops the start with its
        // reason, rather than refusing every protected name later ("the
        // server cannot check accounts now") while the server runs.
        conn.query_row(
            "SELECT count(*), sum(length(key) + length(name) + length(hash)) FROM accounts",
            [],
            |_| Ok(()),
        )
        .map_err(sqlite)?;
        Ok(SqliteAccounts {
            conn: std::sync::Mutex::new(conn),
        })
    }

    /// Whether the file holds a session of a name whose key (by `key_of`,
    /// the server's name key) is `key`: its user is connected to a server
    /// on this file, or may resume its session (within the grace period,
    /// also after the server is started again).
    ///
    /// # Errors
    ///
    /// The file cannot be read; the text says why.
    pub fn has_session(&self, key: &str, key_of: fn(&Username) -> String) -> Result<bool, String> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT user FROM sessions")
            .map_err(|e| e.to_string())?;
        let users = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())?;
        for user in users {
            let user = user.map_err(|e| e.to_string())?;
            if Username::new(&user).is_ok_and(|u| key_of(&u) == key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::accounts::BanStore for SqliteAccounts {
    fn load_bans(&self) -> Result<Vec<imchat_core::Ban>, String> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT target, by, reason FROM bans ORDER BY pos")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        let mut bans = Vec::new();
        for row in rows {
            let (target, by, reason) = row.map_err(|e| e.to_string())?;
            let target = imchat_core::BanTarget::parse(&target)
                .map_err(|e| format!("a stored ban is not valid: {e}"))?;
            bans.push(imchat_core::Ban { target, by, reason });
        }
        Ok(bans)
    }

    fn save_bans(&self, bans: &[imchat_core::Ban]) -> Result<(), String> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute("DELETE FROM bans", [])
            .map_err(|e| e.to_string())?;
        for (pos, b) in bans.iter().enumerate() {
            tx.execute(
                "INSERT INTO bans (pos, target, by, reason) VALUES (?1, ?2, ?3, ?4)",
                params![to_sql(pos as u64), b.target.to_string(), b.by, b.reason],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl crate::accounts::AccountStore for SqliteAccounts {
    fn hash_of(&self, key: &str) -> Result<Option<String>, String> {
        self.conn()
            .query_row("SELECT hash FROM accounts WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| e.to_string())
    }

    fn insert(&self, key: &str, name: &str, hash: &str) -> Result<bool, String> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO accounts (key, name, hash) VALUES (?1, ?2, ?3)",
                params![key, name, hash],
            )
            .map(|n| n == 1)
            .map_err(|e| e.to_string())
    }

    fn remove(&self, key: &str) -> Result<bool, String> {
        self.conn()
            .execute("DELETE FROM accounts WHERE key = ?1", [key])
            .map(|n| n == 1)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint failing every round (a full disk) is logged once, and
    /// once more when it works again, not twice a second.
    #[test]
    fn a_checkpoint_failing_in_a_row_is_said_once_and_when_it_works_again() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let (mut failed, mut said) = (0, Vec::new());
        for error in [
            None,
            Some(&full),
            Some(&full),
            Some(&full),
            None,
            None,
            Some(&full),
        ] {
            let line;
            (failed, line) = checkpoint_said(failed, error);
            said.extend(line);
        }
        assert_eq!(failed, 1);
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(
            said[0].starts_with("history database checkpoint failed: "),
            "{said:?}"
        );
        assert_eq!(
            said[1],
            "history database checkpoint works again, after 3 failed"
        );
        assert!(
            said[2].starts_with("history database checkpoint failed: "),
            "{said:?}"
        );
    }
    use std::time::Instant;

    fn user(n: &str) -> Username {
        Username::new(n).unwrap()
    }

    fn chat(id: u64, from: &str, to: Option<&str>, text: &str, client_id: u64) -> LogEntry {
        LogEntry {
            id: MessageId(id),
            time: Timestamp(1_700_000_000_000 + id),
            event: LogEvent::Chat {
                from: user(from),
                to: to.map(user),
                kind: if id.is_multiple_of(2) {
                    ChatKind::Action
                } else {
                    ChatKind::Text
                },
                text: text.into(),
                client_id,
            },
        }
    }

    fn open(path: &Path, entries: usize, bytes: usize) -> SqliteStore {
        SqliteStore::open(path, entries, bytes, Durability::Normal).unwrap()
    }

    fn db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        (dir, path)
    }

    #[test]
    fn each_run_in_a_cluster_learns_the_server_of_the_run_before() {
        let (_dir, path) = db();
        let first = open(&path, 100, 1 << 20);
        assert_eq!(first.swap_cluster_server(5).unwrap(), None);
        drop(first);
        let second = open(&path, 100, 1 << 20);
        assert_eq!(second.swap_cluster_server(7).unwrap(), Some(5));
        // The same id again is no former run.
        assert_eq!(second.swap_cluster_server(7).unwrap(), None);
        drop(second);
        let third = open(&path, 100, 1 << 20);
        assert_eq!(third.swap_cluster_server(9).unwrap(), Some(7));
    }

    fn open_err(path: &Path) -> String {
        SqliteStore::open(path, 100, 1 << 20, Durability::Normal)
            .unwrap_err()
            .to_string()
    }

    /// A history file the server's user may read but not write is
    /// refused at start, saying what to do (before: the server started,
    /// then refused every chat message with "attempt to write a readonly
    /// database").
    #[cfg(unix)]
    #[test]
    fn a_history_database_the_server_may_not_write_is_refused_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, path) = db();
        drop(open(&path, 100, 1 << 20));
        let mut name = path.clone().into_os_string();
        name.push(".lock");
        let lock = std::path::PathBuf::from(name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        // The lock file and the folder (for the -wal and -shm files) stay
        // writable: only the database itself is read-only.
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        // Opened in a thread of its own whose file-system user is not
        // root's (root may write a read-only file): as a server run by
        // another user.
        let err = std::thread::spawn(move || {
            // SAFETY: geteuid reads this process's user; setfsuid only
            // changes this thread's file-system user.
            if unsafe { libc::geteuid() } == 0 {
                // SAFETY: as above.
                unsafe { libc::setfsuid(65534) };
            }
            open_err(&path)
        })
        .join()
        .unwrap();
        assert!(err.contains("is read-only for this server"), "{err}");
        assert!(err.contains("make it writable"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_new_history_database_and_its_wal_are_private_to_the_server_s_user() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, path) = db();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let mut store = open(&path, 100, 1 << 20);
        store
            .append(&chat(1, "alice", Some("bob"), "private", 1))
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("history.db.lock")), 0o600);
        let wal = dir.path().join("history.db-wal");
        assert!(wal.exists(), "the WAL is there while the store is open");
        assert_eq!(mode(&wal), 0o600);
        drop(store);
        assert!(shared_files(&path).is_empty());
        // A file that exists keeps the mode its operator gave it, and is
        // told of, as a WAL file others may read.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let store = open(&path, 100, 1 << 20);
        assert_eq!(mode(&path), 0o640);
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SQLite gave the shared-memory file, made anew, the database's mode.
        let shm = dir.path().join("history.db-shm");
        assert_eq!(
            shared_files(&path),
            [(path.clone(), 0o640), (wal, 0o644), (shm, 0o640)]
        );
        drop(store);
    }

    #[cfg(unix)]
    #[test]
    fn a_history_file_deleted_or_replaced_under_the_server_is_said() {
        let (dir, path) = db();
        std::fs::write(&path, b"x").unwrap();
        let opened = file_id(&path);
        assert_eq!(moved_said(&path, opened), None);
        // Another file put in its place.
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"y").unwrap();
        let kept = dir.path().join("kept.db");
        std::fs::rename(&path, &kept).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let said = moved_said(&path, opened).expect("a replaced file is said");
        assert!(said.contains("was replaced by another file"), "{said}");
        assert!(said.contains(&path.display().to_string()), "{said}");
        // Deleted.
        std::fs::remove_file(&path).unwrap();
        let said = moved_said(&path, opened).expect("a deleted file is said");
        assert!(said.contains("was deleted while the server runs"), "{said}");
    }

    #[test]
    fn a_file_open_in_one_store_is_refused_to_another_until_it_is_closed() {
        let (dir, path) = db();
        let first = open(&path, 100, 1 << 20);
        let err = open_err(&path);
        assert_eq!(
            err,
            format!(
                "the history database '{}' is in use by another imchat-server; stop that one, or give this one another --history-db path",
                path.display()
            )
        );
        // Under another name (a link) too.
        #[cfg(unix)]
        {
            let link = dir.path().join("link.db");
            std::os::unix::fs::symlink(&path, &link).unwrap();
            assert!(open_err(&link).contains("is in use by another imchat-server"));
        }
        // Under another name for the same file (a hard link, with a lock
        // file of its own), and with its lock file deleted.
        #[cfg(unix)]
        {
            let hard = dir.path().join("hard.db");
            std::fs::hard_link(&path, &hard).unwrap();
            assert!(open_err(&hard).contains("is in use by another imchat-server"));
        }
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        std::fs::remove_file(&lock).unwrap();
        assert!(open_err(&path).contains("is in use by another imchat-server"));
        // The accounts (--reset-name) take no lock.
        assert!(SqliteAccounts::open(&path).is_ok());
        drop(first);
        drop(open(&path, 100, 1 << 20));
    }

    #[test]
    fn entries_come_back_after_a_reopen_with_their_ids_times_and_kinds() {
        let (_dir, path) = db();
        let entries = vec![
            LogEntry {
                id: MessageId(1),
                time: Timestamp(5),
                event: LogEvent::Joined { user: user("ann") },
            },
            chat(2, "ann", None, "hello, émoji 🎉", 1),
            chat(3, "ann", Some("Bob"), "psst", u64::MAX),
            LogEntry {
                id: MessageId(4),
                time: Timestamp(u64::MAX),
                event: LogEvent::Left {
                    user: user("ann"),
                    reason: LeaveReason::QUIT,
                    text: "bye".into(),
                },
            },
        ];
        {
            let mut s = open(&path, 100, 1 << 20);
            let fresh = s.load().unwrap();
            assert_eq!(
                fresh,
                Loaded {
                    next_id: MessageId(1),
                    ..Loaded::default()
                }
            );
            for e in &entries {
                s.append(e).unwrap();
            }
        }
        let mut s = open(&path, 100, 1 << 20);
        let loaded = s.load().unwrap();
        assert_eq!(loaded.entries, entries);
        assert_eq!(loaded.next_id, MessageId(5));
        assert_eq!(loaded.epoch, None);
        assert!(loaded.sessions.is_empty());
        assert_eq!(s.held(), (4, entries.iter().map(LogEntry::cost).sum()));
    }

    #[test]
    fn the_epoch_is_kept_once_set() {
        let (_dir, path) = db();
        open(&path, 10, 1000).set_epoch(u64::MAX - 7).unwrap();
        assert_eq!(
            open(&path, 10, 1000).load().unwrap().epoch,
            Some(u64::MAX - 7)
        );
    }

    #[test]
    fn sessions_are_saved_replaced_by_name_whatever_its_case_and_dropped() {
        let (_dir, path) = db();
        {
            let mut s = open(&path, 10, 1000);
            for (name, byte, last) in [("ann", 1, 0), ("Bob", 2, 3), ("ANN", 9, 4)] {
                s.save_session(&SessionRecord {
                    user: user(name),
                    token: ResumeToken([byte; 16]),
                    // The token a resume spent is kept too (Bob's).
                    spent: (byte == 2).then_some(ResumeToken([7; 16])),
                    last_client_id: last,
                })
                .unwrap();
            }
        }
        let mut s = open(&path, 10, 1000);
        let got = s.load().unwrap().sessions;
        assert_eq!(
            got,
            vec![
                SessionRecord {
                    user: user("ANN"),
                    token: ResumeToken([9; 16]),
                    spent: None,
                    last_client_id: 4
                },
                SessionRecord {
                    user: user("Bob"),
                    token: ResumeToken([2; 16]),
                    spent: Some(ResumeToken([7; 16])),
                    last_client_id: 3
                },
            ]
        );
        s.drop_session(&user("bob")).unwrap();
        drop(s);
        let names: Vec<String> = open(&path, 10, 1000)
            .load()
            .unwrap()
            .sessions
            .iter()
            .map(|r| r.user.to_string())
            .collect();
        assert_eq!(names, ["ANN"]);
    }

    /// The entries the file holds (committed), by the batches' counts.
    fn rows(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT coalesce(sum(count), 0) FROM batches", [], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// The `batches` rows' (first id, last id, count), oldest first.
    fn batch_rows(path: &Path) -> Vec<(i64, i64, i64)> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c
            .prepare("SELECT first_id, last_id, count FROM batches ORDER BY first_id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn the_file_is_trimmed_to_the_hubs_entry_bound() {
        let (_dir, path) = db();
        let mut s = open(&path, 32, 1 << 20);
        for id in 1..=1000 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
            s.commit().unwrap();
            // Never more than the bound and its margin of 1/16.
            assert!(s.held().0 <= 32 + 3, "{:?} after {id}", s.held());
        }
        drop(s);
        let n = rows(&path);
        assert!((32..=35).contains(&n), "{n} rows");
        let loaded = open(&path, 32, 1 << 20).load().unwrap();
        let ids: Vec<u64> = loaded.entries.iter().map(|e| e.id.0).collect();
        assert_eq!(ids, (969..=1000).collect::<Vec<_>>());
        assert_eq!(loaded.next_id, MessageId(1001));
    }

    #[test]
    fn the_file_is_trimmed_to_the_hubs_byte_bound_keeping_the_newest_entry() {
        let (_dir, path) = db();
        let text = "y".repeat(1000);
        let cost = chat(1, "ann", None, &text, 1).cost();
        let mut s = open(&path, 10_000, 10 * cost);
        for id in 1..=200 {
            s.append(&chat(id, "ann", None, &text, id)).unwrap();
            s.commit().unwrap();
            assert!(
                s.held().1 <= 10 * cost + 10 * cost / 16 + 1,
                "{:?}",
                s.held()
            );
        }
        // One entry larger than the whole bound: it stays, alone.
        let huge = chat(201, "ann", None, &"z".repeat(20 * cost), 201);
        s.append(&huge).unwrap();
        s.commit().unwrap();
        assert_eq!(s.held(), (1, huge.cost()));
        drop(s);
        let loaded = open(&path, 10_000, 10 * cost).load().unwrap();
        assert_eq!(loaded.entries, vec![huge]);
        assert_eq!(loaded.next_id, MessageId(202));
    }

    #[test]
    fn a_reopened_store_counts_what_it_holds_and_keeps_trimming() {
        let (_dir, path) = db();
        let mut s = open(&path, 1000, 1 << 20);
        for id in 1..=100 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
        }
        drop(s);
        // Reopened with a smaller bound (the operator lowered it).
        let mut s = open(&path, 10, 1 << 20);
        assert_eq!(s.held().0, 100);
        let loaded = s.load().unwrap();
        assert_eq!(loaded.entries.len(), 10);
        assert_eq!(loaded.entries[0].id, MessageId(91));
        // The 100 went in one batch, which holds 9 of the newest 10 after
        // the next: it stays until newer batches hold the bound.
        for id in 101..=109 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
            s.commit().unwrap();
            assert_eq!(s.held().0, usize::try_from(id).unwrap());
        }
        s.append(&chat(110, "ann", None, "x", 110)).unwrap();
        s.commit().unwrap();
        // Within the new bound (and its margin), by whole batches.
        assert_eq!(s.held().0, 10, "{:?}", s.held());
        drop(s);
        assert_eq!(rows(&path), 10);
    }

    #[test]
    fn the_write_ahead_log_is_moved_into_the_database_by_its_own_thread() {
        let (_dir, path) = db();
        let mut s = open(&path, 100_000, 1 << 30);
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let empty = size();
        for id in 1..=2000 {
            s.append(&chat(id, "ann", None, "some text to fill pages", id))
                .unwrap();
            s.commit().unwrap();
        }
        // Appends never checkpoint (the main file only grows by a
        // checkpoint): the thread does, within a few periods.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while size() <= empty + 20 * u64::from(PAGE_SIZE) {
            assert!(Instant::now() < deadline, "no checkpoint: {} bytes", size());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(s);
        assert_eq!(rows(&path), 2000);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_clearly() {
        let (_dir, path) = db();
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = open_err(&path);
        assert!(e.starts_with("cannot open the history database '"), "{e}");
        assert!(e.contains("not a database"), "{e}");
    }

    #[test]
    fn a_database_of_another_schema_version_or_program_is_refused_clearly() {
        let (_dir, path) = db();
        drop(open(&path, 10, 1000));
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let e = open_err(&path);
        assert!(
            e.contains("has schema version 7; this server reads version 2"),
            "{e}"
        );

        let other = path.with_file_name("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE photos (id INTEGER)")
            .unwrap();
        let e = open_err(&other);
        assert!(e.contains("is not an imchat history database"), "{e}");
        // Left as it was.
        let n: i64 = Connection::open(&other)
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    fn page_size(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_file_has_large_pages_and_a_file_with_small_pages_is_still_read_and_written() {
        let (_dir, path) = db();
        drop(open(&path, 10, 1000));
        // 4 KiB: a commit of a 2 ms batch writes a few pages, not dozens.
        assert_eq!(page_size(&path), 4096);

        // A file made with 1 KiB pages (as servers before this one did).
        let old = path.with_file_name("old.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch(&format!(
                "PRAGMA page_size = 1024; BEGIN; {SCHEMA_META_SESSIONS} {SCHEMA_BATCHES}
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .unwrap();
        let mut s = open(&old, 100, 1 << 20);
        s.load().unwrap();
        for id in 1..=3 {
            s.append(&chat(id, "ann", Some("bob"), "kept", id)).unwrap();
        }
        s.commit().unwrap();
        drop(s);
        assert_eq!(page_size(&old), 1024);
        let loaded = open(&old, 100, 1 << 20).load().unwrap();
        assert_eq!(
            loaded.entries,
            (1..=3)
                .map(|id| chat(id, "ann", Some("bob"), "kept", id))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_queue_keeps_its_buffer_between_batches_but_not_a_huge_one() {
        let (_dir, path) = db();
        let mut s = open(&path, 10_000, 64 << 20);
        s.load().unwrap();
        let kept = |s: &SqliteStore| {
            let queued = s.queue().entries.capacity();
            let spare = s.shared.writer().spare.entries.capacity();
            (queued, spare)
        };
        s.append(&chat(1, "ann", None, "one", 1)).unwrap();
        s.commit().unwrap();
        // The buffer written went back to the writer, emptied, for the
        // next swap: appends after it do not allocate again.
        let (_, spare) = kept(&s);
        assert!(spare > 0, "the written buffer was kept");
        s.append(&chat(2, "ann", None, "two", 2)).unwrap();
        s.commit().unwrap();
        let (queued, _) = kept(&s);
        assert!(queued > 0, "the kept buffer was swapped in");
        // A burst's buffer is given back down to QUEUE_KEEP.
        let text = "x".repeat(4096);
        for id in 3..=600 {
            s.append(&chat(id, "ann", None, &text, id)).unwrap();
        }
        assert!(kept(&s).0 > QUEUE_KEEP);
        s.commit().unwrap();
        assert!(kept(&s).1 <= QUEUE_KEEP);
        assert_eq!(rows(&path), 600);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_path() {
        let (dir, _) = db();
        let path = dir.path().join("no/such/folder/history.db");
        let e = open_err(&path);
        assert!(e.contains("no/such/folder/history.db"), "{e}");
    }

    #[test]
    fn a_batch_that_is_not_valid_is_a_load_error_not_a_panic() {
        let (_dir, path) = db();
        let mut s = open(&path, 10, 1000);
        for id in 1..=2 {
            s.append(&chat(id, "ann", Some("bob"), "hi", id)).unwrap();
        }
        s.commit().unwrap();
        let blob: Vec<u8> = s.with_conn(|c| {
            c.query_row("SELECT entries FROM batches", [], |r| r.get(0))
                .unwrap()
        });
        let set = |s: &SqliteStore, blob: &[u8], count: i64| {
            s.with_conn(|c| {
                c.execute(
                    "UPDATE batches SET entries = ?1, count = ?2",
                    params![blob, count],
                )
            })
            .unwrap();
        };
        let load_err = |s: &mut SqliteStore| s.load().unwrap_err().to_string();
        // The first entry: id 1 (1 byte), its time (6), event and kind (2),
        // client id 1 (1), then the user's length (1) and "ann".
        assert_eq!(&blob[10..14], b"\x03ann");
        let mut no_user = blob[..10].to_vec();
        no_user.push(0);
        no_user.extend_from_slice(&blob[14..]);
        let bad: [(&[u8], i64, &str); 7] = [
            (&no_user, 2, "invalid username"),
            (&blob[..blob.len() - 1], 2, "cut short"),
            (&blob[..5], 2, "cut short"),
            (&blob, 3, "do not match its ids and count"),
            (&[blob.clone(), blob.clone()].concat(), 4, "do not match"),
            (&[], 0, "do not match"),
            (&[0xff; 12], 1, "a number is too long"),
        ];
        for (blob, count, want) in bad {
            set(&s, blob, count);
            let e = load_err(&mut s);
            assert!(e.contains(want), "{e}");
            assert!(e.contains("the history database holds an invalid"), "{e}");
        }
        // A text that is not UTF-8 (the last byte of "hi").
        let mut latin = blob.clone();
        *latin.last_mut().unwrap() = 0xe9;
        set(&s, &latin, 2);
        assert!(load_err(&mut s).contains("not UTF-8"));
        // An event that is none of the three.
        let mut event = blob.clone();
        event[7] = 3 | 4;
        set(&s, &event, 2);
        assert!(load_err(&mut s).contains("invalid log entry"));
        set(&s, &blob, 2);
        assert_eq!(s.load().unwrap().entries.len(), 2);
    }

    /// What an append costs, with each durability and commits of batches
    /// of 1, 8 and 64 appends (run by hand:
    /// `cargo test -p imchat-server --release append_cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn append_cost() {
        for durability in [Durability::Normal, Durability::Full] {
            for batch in [1, 8, 64] {
                let (_dir, path) = db();
                let mut s = SqliteStore::open(&path, 10_000, 8 << 20, durability).unwrap();
                let n = if durability == Durability::Full {
                    512
                } else {
                    20_480
                };
                let text = "a typical chat line of some sixty bytes, give or take a few";
                let start = Instant::now();
                for id in 1..=n {
                    s.append(&chat(id, "ann", None, text, id)).unwrap();
                    if id % batch == 0 {
                        s.commit().unwrap();
                    }
                }
                let each = start.elapsed() / u32::try_from(n).unwrap();
                println!("{durability:?}, commit every {batch}: {n} appends, {each:?} each");
            }
        }
    }

    #[test]
    fn appends_are_committed_together_and_readable_by_another_connection_only_after() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        s.load().unwrap();
        for id in 1..=3 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
        }
        assert_eq!(rows(&path), 0, "not committed yet");
        s.commit().unwrap();
        assert_eq!(rows(&path), 3);
        // Nothing open: a commit is a no-op.
        s.commit().unwrap();
        assert_eq!(rows(&path), 3);
    }

    #[test]
    fn after_a_crash_the_next_id_lies_past_every_id_handed_out() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        assert_eq!(s.load().unwrap().next_id, MessageId(1));
        for id in 1..=3 {
            s.append(&chat(id, "ann", None, "kept", id)).unwrap();
        }
        s.commit().unwrap();
        // Seen by receivers, never committed.
        for id in 4..=5 {
            s.append(&chat(id, "ann", None, "lost", id)).unwrap();
        }
        s.crash();
        let mut s = open(&path, 100, 1 << 20);
        let loaded = s.load().unwrap();
        let ids: Vec<u64> = loaded.entries.iter().map(|e| e.id.0).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(loaded.next_id, MessageId(1 + RESERVE_BLOCK));
        // The next block is reserved before its first id is used.
        let next = loaded.next_id.0;
        s.append(&chat(next, "ann", None, "after", 6)).unwrap();
        s.crash();
        let loaded = open(&path, 100, 1 << 20).load().unwrap();
        assert_eq!(loaded.next_id, MessageId(next + RESERVE_BLOCK));
        assert_eq!(loaded.entries.len(), 3);
    }

    #[test]
    fn a_clean_close_gives_back_the_reserved_ids() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        for id in 1..=5 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
        }
        drop(s);
        let loaded = open(&path, 100, 1 << 20).load().unwrap();
        assert_eq!(loaded.next_id, MessageId(6));
        assert_eq!(loaded.entries.len(), 5, "committed on close");
    }

    /// The clean close of a running server (its committer's) gives the
    /// reserved ids back too; an entry appended after it still reserves
    /// its id before it is written, so a crash then cannot give it again.
    #[test]
    fn the_committers_close_gives_back_the_reserved_ids_and_a_later_append_reserves_again() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        for id in 1..=5 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
        }
        let reserved = |s: &SqliteStore| {
            s.with_conn(|c| {
                c.query_row(
                    "SELECT value FROM meta WHERE key = 'reserved_id'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap()
        };
        s.committer().close().unwrap();
        assert_eq!(reserved(&s), 6, "given back");
        s.append(&chat(6, "ann", None, "late", 6)).unwrap();
        assert!(reserved(&s) > 6, "id 6 was not reserved before its write");
        s.crash();
        let loaded = open(&path, 100, 1 << 20).load().unwrap();
        assert!(
            loaded.next_id.0 > 6,
            "id 6 may come again: {:?}",
            loaded.next_id
        );
    }

    /// Makes every write to `table` fail (a trigger of this connection).
    fn break_table(s: &SqliteStore, table: &str) {
        s.with_conn(|c| {
            c.execute_batch(&format!(
                "CREATE TEMP TRIGGER no_{table} BEFORE INSERT ON main.{table}
                 BEGIN SELECT RAISE(FAIL, 'injected failure'); END"
            ))
        })
        .unwrap();
    }

    fn mend_table(s: &SqliteStore, table: &str) {
        s.with_conn(|c| c.execute_batch(&format!("DROP TRIGGER no_{table}")))
            .unwrap();
    }

    fn ids(path: &Path) -> Vec<u64> {
        open(path, 100, 1 << 20)
            .load()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.id.0)
            .collect()
    }

    #[test]
    fn a_failed_reservation_refuses_its_entry_and_keeps_the_queued_ones() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        s.append(&chat(1, "ann", None, "x", 1)).unwrap();
        s.commit().unwrap();
        s.append(&chat(2, "ann", None, "x", 2)).unwrap();
        // Writing the next reservation fails: that append is refused.
        break_table(&s, "meta");
        let e = s.append(&chat(RESERVE_BLOCK + 1, "ann", None, "x", 3));
        assert!(e.unwrap_err().to_string().contains("injected failure"));
        // Entry 2, queued before, is not lost with it.
        s.commit().unwrap();
        mend_table(&s, "meta");
        s.append(&chat(3, "ann", None, "x", 4)).unwrap();
        s.commit().unwrap();
        drop(s);
        assert_eq!(ids(&path), [1, 2, 3]);
    }

    #[test]
    fn a_committer_writes_only_what_was_queued_and_reports_how_far_it_went() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        let committer = s.committer();
        s.load().unwrap();
        for id in 1..=3 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
        }
        // Appending wrote nothing: the queue is the committer's.
        assert_eq!(rows(&path), 0);
        let done = committer.commit();
        assert_eq!(done.upto, MessageId(3));
        assert!(done.result.is_ok());
        assert_eq!(rows(&path), 3);
        // Nothing queued: nothing written, the same mark.
        let done = committer.commit();
        assert_eq!((done.upto, done.result.is_ok()), (MessageId(3), true));
        // The store's own commit after it has nothing left to do.
        s.commit().unwrap();
        assert_eq!(rows(&path), 3);
    }

    #[test]
    fn a_batch_a_committer_lost_fails_the_next_commit_until_reported() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        let committer = s.committer();
        s.append(&chat(1, "ann", None, "kept", 1)).unwrap();
        assert!(committer.commit().result.is_ok());
        s.append(&chat(2, "ann", None, "lost", 2)).unwrap();
        break_table(&s, "batches");
        let done = committer.commit();
        assert_eq!(done.upto, MessageId(2));
        let e = done.result.unwrap_err().to_string();
        assert!(e.contains("injected failure"), "{e}");
        mend_table(&s, "batches");
        // Before the committer told the hub, a commit of the hub's covers
        // the lost batch too: it fails, once.
        s.append(&chat(3, "ann", None, "after", 3)).unwrap();
        let e = s.commit().unwrap_err().to_string();
        assert!(e.contains("injected failure"), "{e}");
        s.commit().unwrap();
        // Once reported, a committer's lost batch no longer fails a commit.
        break_table(&s, "batches");
        s.append(&chat(4, "ann", None, "lost too", 4)).unwrap();
        let done = committer.commit();
        assert!(done.result.is_err());
        mend_table(&s, "batches");
        let mut hub = imchat_core::Hub::new(imchat_core::Limits::default(), "");
        committer.report(&mut hub, done, Instant::now());
        s.append(&chat(5, "ann", None, "fine", 5)).unwrap();
        s.commit().unwrap();
        // The committer shares the connection, and so the file's lock.
        drop(committer);
        drop(s);
        assert_eq!(ids(&path), [1, 3, 5]);
    }

    #[test]
    fn the_writer_reserves_the_next_block_ahead_so_that_appends_do_not_wait_for_it() {
        let (_dir, path) = db();
        let mut s = open(&path, 100, 1 << 20);
        let committer = s.committer();
        let half = RESERVE_BLOCK / 2;
        for id in 1..=half + 1 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
            if id % 64 == 0 {
                assert!(committer.commit().result.is_ok());
            }
        }
        // Half a block left: this commit reserves the next one.
        assert!(committer.commit().result.is_ok());
        // From now on a reservation of an append's own would fail; none is needed.
        break_table(&s, "meta");
        for id in half + 2..=RESERVE_BLOCK + 1 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
        }
        s.crash();
        drop(committer);
        let loaded = open(&path, 100, 1 << 20).load().unwrap();
        assert_eq!(loaded.next_id, MessageId(half + 1 + RESERVE_BLOCK));
    }

    /// Entries of every kind, with ids from `ids`.
    fn mixed(ids: std::ops::RangeInclusive<u64>) -> Vec<LogEntry> {
        ids.map(|id| match id % 5 {
            0 => LogEntry {
                id: MessageId(id),
                time: Timestamp(id * 7),
                event: LogEvent::Joined {
                    user: user(&format!("u{id}")),
                },
            },
            1 => LogEntry {
                id: MessageId(id),
                time: Timestamp(id * 7),
                event: LogEvent::Left {
                    user: user("ann"),
                    reason: LeaveReason(u8::try_from(id % 250).unwrap()),
                    text: format!("gone {id} ✈"),
                },
            },
            2 => chat(id, "ann", Some("Bob"), "", u64::MAX - id),
            _ => chat(
                id,
                "Bob",
                None,
                &"é".repeat(usize::try_from(id).unwrap()),
                id,
            ),
        })
        .collect()
    }

    #[test]
    fn a_commit_writes_its_batch_as_one_row_and_a_reopen_reads_every_entry_back() {
        let (_dir, path) = db();
        let all = mixed(1..=120);
        let mut s = open(&path, 1000, 1 << 20);
        let committer = s.committer();
        for e in &all[..50] {
            s.append(e).unwrap();
        }
        assert!(committer.commit().result.is_ok());
        for e in &all[50..] {
            s.append(e).unwrap();
        }
        s.commit().unwrap();
        // Two commits, two rows, whatever the entries.
        assert_eq!(batch_rows(&path), [(1, 50, 50), (51, 120, 70)]);
        let cost: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT sum(cost) FROM batches", [], |r| r.get(0))
            .unwrap();
        let want: usize = all.iter().map(LogEntry::cost).sum();
        assert_eq!(usize::try_from(cost).unwrap(), want);
        drop(committer);
        drop(s);
        let mut s = open(&path, 1000, 1 << 20);
        assert_eq!(s.held(), (120, want));
        let loaded = s.load().unwrap();
        assert_eq!(loaded.entries, all);
        assert_eq!(loaded.next_id, MessageId(121));
        drop(s);
        // The newest `max_entries` only, across batches.
        let loaded = open(&path, 75, 1 << 20).load().unwrap();
        assert_eq!(loaded.entries, all[45..]);
        let loaded = open(&path, 70, 1 << 20).load().unwrap();
        assert_eq!(loaded.entries, all[50..]);
    }

    #[test]
    fn the_file_is_trimmed_by_whole_batches_and_always_holds_the_hubs_bounds() {
        let (_dir, path) = db();
        let bound = 32;
        let all = mixed(1..=1000);
        let mut s = open(&path, bound, 1 << 20);
        for (n, batch) in all.chunks(10).enumerate() {
            for e in batch {
                s.append(e).unwrap();
            }
            s.commit().unwrap();
            let rows = batch_rows(&path);
            let held: i64 = rows.iter().map(|r| r.2).sum();
            // At least the newest `bound` (what the hub keeps), at most the
            // margin and one batch more.
            let appended = (n + 1) * 10;
            assert!(
                held >= i64::try_from(appended.min(bound)).unwrap(),
                "{rows:?}"
            );
            assert!(held <= i64::try_from(bound + bound / 16 + 1 + 10).unwrap());
            assert_eq!(rows.last().unwrap().1, i64::try_from(appended).unwrap());
            // Whole batches: every row as it was written.
            assert!(rows.iter().all(|r| r.2 == 10 && r.1 - r.0 == 9), "{rows:?}");
            assert_eq!(s.held().0, usize::try_from(held).unwrap());
        }
        drop(s);
        let loaded = open(&path, bound, 1 << 20).load().unwrap();
        assert_eq!(loaded.entries, all[1000 - bound..]);

        // By bytes: at least the bound's worth of the newest entries.
        let (_dir, path) = db();
        let text = "y".repeat(1000);
        let cost = chat(1, "ann", None, &text, 1).cost();
        let mut s = open(&path, 10_000, 10 * cost);
        for id in (1..=300).step_by(3) {
            for id in id..id + 3 {
                s.append(&chat(id, "ann", None, &text, id)).unwrap();
            }
            s.commit().unwrap();
            let (entries, bytes) = s.held();
            assert!(
                bytes >= (10 * cost).min(entries * cost),
                "{entries} {bytes}"
            );
            assert!(bytes <= 10 * cost + 10 * cost / 16 + 1 + 3 * cost);
        }
    }

    #[test]
    fn the_newest_batch_is_never_trimmed_so_ids_go_on_after_a_reopen() {
        let (_dir, path) = db();
        let mut s = open(&path, 0, 0);
        for id in 1..=3 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
            s.commit().unwrap();
        }
        assert_eq!(batch_rows(&path), [(3, 3, 1)]);
        drop(s);
        assert_eq!(open(&path, 0, 0).load().unwrap().next_id, MessageId(4));
        // Nor by a commit of session changes only, after a reopen with
        // lower bounds.
        let mut s = open(&path, 100, 1 << 20);
        for id in 4..=6 {
            s.append(&chat(id, "ann", None, "x", id)).unwrap();
            s.commit().unwrap();
        }
        drop(s);
        let mut s = open(&path, 0, 0);
        s.drop_session(&user("ann")).unwrap();
        s.commit().unwrap();
        assert_eq!(batch_rows(&path), [(6, 6, 1)]);
        drop(s);
        assert_eq!(open(&path, 0, 0).load().unwrap().next_id, MessageId(7));
    }

    /// The version 1 schema: one `log` row per entry.
    const SCHEMA_V1_LOG: &str = "
        CREATE TABLE log (
            id INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            event INTEGER NOT NULL,
            user TEXT NOT NULL,
            recipient TEXT,
            kind INTEGER NOT NULL,
            text TEXT NOT NULL,
            client_id INTEGER NOT NULL,
            cost INTEGER NOT NULL
        );";

    /// A version 1 file holding `entries`, the epoch, a session and a reservation.
    fn v1_file(path: &Path, entries: &[LogEntry]) {
        let c = Connection::open(path).unwrap();
        c.execute_batch(&format!(
            "PRAGMA page_size = 1024; BEGIN; {SCHEMA_META_SESSIONS} {SCHEMA_V1_LOG}
             PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;
             INSERT INTO meta VALUES ('epoch', 77), ('reserved_id', 5000);
             INSERT INTO sessions VALUES ('ann', 'Ann', x'0101010101010101010101010101010a', 9);
             COMMIT;"
        ))
        .unwrap();
        for e in entries {
            let col = Columns::of(&e.event);
            c.execute(
                "INSERT INTO log VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    to_sql(e.id.0),
                    to_sql(e.time.0),
                    col.event,
                    col.user.as_str(),
                    col.recipient.map(Username::as_str),
                    col.kind,
                    col.text,
                    to_sql(col.client_id),
                    to_sql(len(e.cost())),
                ],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_version_1_file_is_converted_on_open_and_keeps_every_entry_and_session() {
        let (_dir, path) = db();
        let old = mixed(3..=600);
        v1_file(&path, &old);
        let mut s = open(&path, 10_000, 1 << 30);
        let loaded = s.load().unwrap();
        assert_eq!(loaded.entries, old);
        assert_eq!(loaded.epoch, Some(77));
        assert_eq!(loaded.next_id, MessageId(5000));
        let mut token = [1; 16];
        token[15] = 10;
        assert_eq!(
            loaded.sessions,
            [SessionRecord {
                user: user("Ann"),
                token: ResumeToken(token),
                spent: None,
                last_client_id: 9,
            }]
        );
        assert_eq!(s.held(), (598, old.iter().map(LogEntry::cost).sum()));
        // Version 2 now, the log's rows gone into batches.
        let version: i64 = s.with_conn(|c| {
            c.pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap()
        });
        assert_eq!(version, SCHEMA_VERSION);
        let tables: Vec<String> = s.with_conn(|c| {
            let mut stmt = c
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
                .unwrap();
            let names = stmt.query_map([], |r| r.get(0)).unwrap();
            names.map(Result::unwrap).collect()
        });
        assert_eq!(tables, ["batches", "meta", "sessions"]);
        assert_eq!(
            batch_rows(&path),
            [(3, 258, 256), (259, 514, 256), (515, 600, 86)]
        );
        // Appends go on after them, and all of it comes back after a reopen.
        let new = mixed(5000..=5009);
        for e in &new {
            s.append(e).unwrap();
        }
        drop(s);
        let loaded = open(&path, 10_000, 1 << 30).load().unwrap();
        assert_eq!(loaded.entries, [old, new].concat());
        assert_eq!(loaded.next_id, MessageId(5010));
        assert_eq!(loaded.epoch, Some(77));
        assert_eq!(loaded.sessions.len(), 1);
    }

    #[test]
    fn a_version_1_file_that_cannot_be_converted_is_refused_and_left_as_it_was() {
        let (_dir, path) = db();
        v1_file(&path, &mixed(1..=3));
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE log SET user = '' WHERE id = 2", [])
            .unwrap();
        let e = open_err(&path);
        assert!(
            e.contains("cannot convert the history database") && e.contains("invalid username"),
            "{e}"
        );
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM log", [], |r| r.get(0))
            .unwrap();
        assert_eq!((version, n), (1, 3));
    }

    /// A history file whose accounts table is damaged (the other tables
    /// whole) is refused when the accounts are opened, at start, with
    /// SQLite's reason.
    #[test]
    fn a_damaged_accounts_table_is_refused_at_open() {
        use crate::accounts::AccountStore;
        let (_dir, path) = db();
        let store = open(&path, 100, 1 << 20);
        let accounts = SqliteAccounts::open(&path).unwrap();
        let hash = format!("$argon2id${}", "h".repeat(90));
        for i in 0..200 {
            let name = format!("user{i}");
            assert!(accounts.insert(&name, &name, &hash).unwrap());
        }
        drop(accounts);
        drop(store);
        let (root, page_size) = {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            let root: i64 = c
                .query_row(
                    "SELECT rootpage FROM sqlite_master WHERE name = 'accounts'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            let size: i64 = c
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .unwrap();
            (root.unsigned_abs(), size.unsigned_abs())
        };
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = OpenOptions::new().write(true).open(&path).unwrap();
            f.seek(SeekFrom::Start((root - 1) * page_size)).unwrap();
            f.write_all(&vec![0xa5; usize::try_from(page_size).unwrap()])
                .unwrap();
        }
        let err = SqliteAccounts::open(&path).unwrap_err().to_string();
        assert!(err.contains("malformed"), "{err}");
    }

    #[test]
    fn accounts_live_in_the_history_file_and_survive_a_reopen() {
        use crate::accounts::AccountStore;
        let (_dir, path) = db();
        let store = open(&path, 100, 1 << 20);
        let accounts = SqliteAccounts::open(&path).unwrap();
        assert_eq!(accounts.hash_of("alice").unwrap(), None);
        assert!(accounts.insert("alice", "Alice", "$argon2id$x").unwrap());
        assert!(!accounts.insert("alice", "Alice", "$argon2id$y").unwrap());
        drop(accounts);
        drop(store);
        // The history store still takes the file with the added table.
        let _store = open(&path, 100, 1 << 20);
        let accounts = SqliteAccounts::open(&path).unwrap();
        assert_eq!(
            accounts.hash_of("alice").unwrap().as_deref(),
            Some("$argon2id$x")
        );
        assert!(accounts.remove("alice").unwrap());
        assert!(!accounts.remove("alice").unwrap());
    }
}
