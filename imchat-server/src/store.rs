//! `--history-db`: the room log and the resumable sessions in an SQLite
//! file, so that a restarted server takes its clients back with nothing
//! they were sent missing.
//!
//! One file, three tables: `log` (the room log, oldest first by id),
//! `sessions` (one row per resumable session, by name key) and `meta`
//! (the epoch). The schema's version is SQLite's `user_version`; a file
//! written by another version, or that is not an imchat history at all,
//! is refused with a clear error rather than read or overwritten.
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
//! **Cost.** A commit of a small transaction costs about 10 µs on a busy
//! 2-core machine, whatever the batch; an insert, a few µs; neither is
//! paid under the hub's lock, where an append costs a copy of the entry
//! into the queue's byte buffer (no allocation once it has grown: the
//! writer hands the buffer it wrote back, see [`Queue`]). Pages are 4 KiB:
//! a commit writes each page it changed to the WAL (two writes a page),
//! and a batch of 2 ms under load fills a few 4 KiB pages where it filled
//! dozens of 1 KiB ones; files made with other page sizes keep theirs.
//! Checkpoints (moving the WAL into the
//! database, with its disk syncs: milliseconds) are kept out of the
//! commits: a thread with its own connection runs them twice a second.
//!
//! **Bounds.** The file keeps what the hub's log keeps (entries and bytes,
//! as [`LogEntry::cost`] counts them), plus at most 1/16 more: it is
//! trimmed when it passes that margin, so that trimming is one `DELETE` in
//! a while rather than one per append. The newest entry is never trimmed,
//! so the next id is always one past the newest row.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use imchat_core::{
    ChatKind, HistoryStore, Hub, LeaveReason, Loaded, LogEntry, LogEvent, MessageId, ResumeToken,
    SessionRecord, StoreError, Timestamp, Username,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// The schema this server writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;
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

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE log (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    event INTEGER NOT NULL,      -- 0 chat, 1 joined, 2 left
    user TEXT NOT NULL,          -- the sender, or who joined or left
    recipient TEXT,              -- a private message's receiver
    kind INTEGER NOT NULL,       -- chat: 0 text, 1 action; left: the reason code
    text TEXT NOT NULL,
    client_id INTEGER NOT NULL,  -- the sender's id of a chat message
    cost INTEGER NOT NULL        -- LogEntry::cost, for trimming by bytes
);
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    token BLOB NOT NULL,
    last_client_id INTEGER NOT NULL
) WITHOUT ROWID;
";

const INSERT_LOG: &str =
    "INSERT INTO log (id, time, event, user, recipient, kind, text, client_id, cost)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

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
    #[error("the history database '{path}' has schema version {found}; this server reads version {SCHEMA_VERSION} (written by another imchat-server version?)")]
    Version { path: String, found: i64 },
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
}

/// What waits for the writer. Entries are copied into one byte buffer
/// (no allocation per entry once it has grown), and the writer swaps the
/// whole queue for an empty one it keeps: the two buffers take turns, so
/// nothing an append copies is freed on another thread.
#[derive(Debug, Default)]
struct Queue {
    /// The entries, encoded by [`Queue::push_entry`], oldest first.
    entries: Vec<u8>,
    /// The newest entry's id, if any.
    newest: Option<u64>,
    /// Session changes (rare), oldest first; written after the entries.
    sessions: Vec<Op>,
}

/// A session change waiting for the writer.
#[derive(Debug)]
enum Op {
    SaveSession(SessionRecord),
    DropSession(Username),
}

/// A queued entry as the `log` table's row, borrowed from the queue.
#[derive(Debug)]
struct Row<'a> {
    id: u64,
    time: u64,
    event: i64,
    user: &'a str,
    recipient: Option<&'a str>,
    kind: i64,
    text: &'a str,
    client_id: u64,
    cost: u64,
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Bytes of queue buffer kept between batches at most (more is given back).
const QUEUE_KEEP: usize = 1 << 20;

impl Queue {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.sessions.is_empty()
    }

    /// Empties the queue, keeping its buffers (up to [`QUEUE_KEEP`]).
    fn clear(&mut self) {
        self.entries.clear();
        self.entries.shrink_to(QUEUE_KEEP);
        self.sessions.clear();
        self.newest = None;
    }

    /// Copies `entry` in as its row: fixed fields, then the strings, each
    /// after its length.
    fn push_entry(&mut self, entry: &LogEntry) {
        let (event, user, recipient, kind, text, client_id) = match &entry.event {
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
            LogEvent::Left { user, reason, text } => {
                (2, user, None, i64::from(reason.0), text.as_str(), 0)
            }
        };
        let b = &mut self.entries;
        b.extend_from_slice(&entry.id.0.to_le_bytes());
        b.extend_from_slice(&entry.time.0.to_le_bytes());
        b.extend_from_slice(&i64::to_le_bytes(event));
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&client_id.to_le_bytes());
        b.extend_from_slice(&len(entry.cost()).to_le_bytes());
        b.push(u8::from(recipient.is_some()));
        for field in [Some(user), recipient].into_iter().flatten() {
            b.extend_from_slice(&len(field.as_str().len()).to_le_bytes());
            b.extend_from_slice(field.as_str().as_bytes());
        }
        b.extend_from_slice(&len(text.len()).to_le_bytes());
        b.extend_from_slice(text.as_bytes());
        self.newest = Some(entry.id.0);
    }

    /// The rows [`push_entry`](Queue::push_entry) copied in, oldest first.
    fn rows(&self) -> Rows<'_> {
        Rows(&self.entries)
    }
}

/// Reads the rows of a [`Queue`]'s buffer back (it holds only what
/// [`Queue::push_entry`] wrote, so a short or invalid field is a bug).
struct Rows<'a>(&'a [u8]);

impl<'a> Rows<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8));
        u64::from_le_bytes(b)
    }

    fn str(&mut self) -> &'a str {
        let n = usize::try_from(self.u64()).unwrap_or(usize::MAX);
        std::str::from_utf8(self.take(n)).unwrap_or_default()
    }
}

impl<'a> Iterator for Rows<'a> {
    type Item = Row<'a>;

    fn next(&mut self) -> Option<Row<'a>> {
        if self.0.is_empty() {
            return None;
        }
        let (id, time) = (self.u64(), self.u64());
        let (event, kind) = (to_sql(self.u64()), to_sql(self.u64()));
        let (client_id, cost) = (self.u64(), self.u64());
        let to = self.take(1)[0] == 1;
        let user = self.str();
        let recipient = to.then(|| self.str());
        let text = self.str();
        Some(Row {
            id,
            time,
            event,
            user,
            recipient,
            kind,
            text,
            client_id,
            cost,
        })
    }
}

/// The connection and what it knows of the file.
#[derive(Debug)]
struct Writer {
    conn: Connection,
    _checkpointer: Checkpointer,
    /// The bounds of the hub's log, which the file follows.
    max_entries: usize,
    max_bytes: usize,
    /// What the log table holds now.
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
        let thread = thread::Builder::new()
            .name("checkpoint".into())
            .stack_size(256 * 1024)
            .spawn(move || loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) =
                            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            log::warn!("history database checkpoint failed: {e}");
                        }
                    }
                    _ => return,
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
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
    /// is another program's database, or has another schema version.
    pub fn open(
        path: &Path,
        max_entries: usize,
        max_bytes: usize,
        durability: Durability,
    ) -> Result<SqliteStore, OpenError> {
        let shown = path.display().to_string();
        let sqlite = |e: rusqlite::Error| OpenError::Sqlite {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
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
        if version == 0 && app == 0 && tables == 0 {
            // Pages of 4 KiB: each commit writes its changed pages to the
            // WAL (see "Cost" above).
            conn.execute_batch(&format!(
                "PRAGMA page_size = {PAGE_SIZE}; BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sqlite)?;
        } else if app != APPLICATION_ID {
            return Err(OpenError::Foreign { path: shown });
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
        let (entries, bytes): (i64, i64) = conn
            .query_row(
                "SELECT count(*), coalesce(sum(cost), 0) FROM log",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sqlite)?;
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
            entries: usize::try_from(entries).unwrap_or(usize::MAX),
            bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
            done: 0,
            unreported: None,
            spare: Queue::default(),
        };
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                writer: Mutex::new(writer),
                reserved: AtomicU64::new(reserved),
            }),
            release_on_drop: true,
        })
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
    /// Writes `batch` (and a reservation up to `reserve`) in one
    /// transaction, trimming when past the margin; rolled back on failure.
    fn write(&mut self, batch: &Queue, reserve: Option<u64>) -> Result<(), StoreError> {
        let start = (self.entries, self.bytes);
        let written = self.begin().and_then(|()| {
            for row in batch.rows() {
                self.insert(&row)?;
            }
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
            if self.over_margin() {
                // A failed trim only leaves the file larger.
                if let Err(e) = self.trim() {
                    log::warn!("history database not trimmed: {e}");
                }
            }
            self.conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .map_err(|e| backend(&e))?;
            Ok(())
        });
        if written.is_err() {
            if !self.conn.is_autocommit() {
                if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                    log::warn!("history database rollback failed: {e}");
                }
            }
            (self.entries, self.bytes) = start;
        }
        written
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
                        "INSERT OR REPLACE INTO sessions (key, user, token, last_client_id)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            session_key(&session.user),
                            session.user.as_str(),
                            &session.token.0[..],
                            to_sql(session.last_client_id),
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

    fn insert(&mut self, row: &Row<'_>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(INSERT_LOG)
            .and_then(|mut s| {
                s.execute(params![
                    to_sql(row.id),
                    to_sql(row.time),
                    row.event,
                    row.user,
                    row.recipient,
                    row.kind,
                    row.text,
                    to_sql(row.client_id),
                    to_sql(row.cost),
                ])
            })
            .map_err(|e| backend(&e))?;
        self.entries += 1;
        self.bytes += usize::try_from(row.cost).unwrap_or(usize::MAX);
        Ok(())
    }

    /// Past the bounds by more than the margin (1/16) that lets trims be rare.
    fn over_margin(&self) -> bool {
        self.entries > self.max_entries.saturating_add(self.max_entries / 16 + 1)
            || self.bytes > self.max_bytes.saturating_add(self.max_bytes / 16 + 1)
    }

    /// Deletes the oldest entries until the table is within the hub's
    /// bounds, keeping the newest entry whatever its size.
    fn trim(&mut self) -> Result<(), StoreError> {
        let (mut entries, mut bytes) = (self.entries, self.bytes);
        let mut cut: Option<i64> = None;
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, cost FROM log ORDER BY id")
                .map_err(|e| backend(&e))?;
            let mut rows = stmt.query([]).map_err(|e| backend(&e))?;
            while entries > 1 && (entries > self.max_entries || bytes > self.max_bytes) {
                let Some(row) = rows.next().map_err(|e| backend(&e))? else {
                    break;
                };
                let id: i64 = row.get(0).map_err(|e| backend(&e))?;
                let cost: i64 = row.get(1).map_err(|e| backend(&e))?;
                cut = Some(id);
                entries -= 1;
                bytes = bytes.saturating_sub(usize::try_from(cost).unwrap_or(0));
            }
        }
        if let Some(id) = cut {
            self.conn
                .prepare_cached("DELETE FROM log WHERE id <= ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(|e| backend(&e))?;
            self.entries = entries;
            self.bytes = bytes;
        }
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
        let released = w.conn.execute(
            "UPDATE meta SET value = (SELECT coalesce(max(id), 0) + 1 FROM log)
             WHERE key = 'reserved_id'",
            [],
        );
        if let Err(e) = released {
            log::warn!("history database: reserved ids not given back: {e}");
        }
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

impl HistoryStore for SqliteStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        let w = self.shared.writer();
        let epoch: Option<i64> = w
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| backend(&e))?;
        // Only what the hub can keep: the newest `max_entries`.
        let limit = i64::try_from(w.max_entries).unwrap_or(i64::MAX);
        let mut stmt = w
            .conn
            .prepare(
                "SELECT id, time, event, user, recipient, kind, text, client_id
                 FROM (SELECT * FROM log ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )
            .map_err(|e| backend(&e))?;
        let entries = stmt
            .query_map([limit], read_entry)
            .map_err(|e| backend(&e))?
            .map(|r| r.map_err(|e| backend(&e)).and_then(|e| e))
            .collect::<Result<Vec<LogEntry>, StoreError>>()?;
        let newest: Option<i64> = w
            .conn
            .query_row("SELECT max(id) FROM log", [], |r| r.get(0))
            .map_err(|e| backend(&e))?;
        let mut stmt = w
            .conn
            .prepare("SELECT user, token, last_client_id FROM sessions ORDER BY key")
            .map_err(|e| backend(&e))?;
        let sessions = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| backend(&e))?
            .map(|r| {
                let (user, token, last) = r.map_err(|e| backend(&e))?;
                Ok(SessionRecord {
                    user: name(&user)?,
                    token: ResumeToken(token.try_into().map_err(|_| corrupt("session token"))?),
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
        Ok(SqliteAccounts {
            conn: std::sync::Mutex::new(conn),
        })
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
                kind: if id % 2 == 0 {
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

    fn open_err(path: &Path) -> String {
        SqliteStore::open(path, 100, 1 << 20, Durability::Normal)
            .unwrap_err()
            .to_string()
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
                    last_client_id: 4
                },
                SessionRecord {
                    user: user("Bob"),
                    token: ResumeToken([2; 16]),
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

    fn rows(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM log", [], |r| r.get(0))
            .unwrap()
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
        s.append(&chat(101, "ann", None, "x", 101)).unwrap();
        s.commit().unwrap();
        // Within the new bound and its margin.
        assert!(s.held().0 <= 11, "{:?}", s.held());
        drop(s);
        assert!((10..=11).contains(&rows(&path)));
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
            e.contains("has schema version 7; this server reads version 1"),
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
                "PRAGMA page_size = 1024; BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID};
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
    fn a_row_that_is_not_a_valid_entry_is_a_load_error_not_a_panic() {
        let (_dir, path) = db();
        let mut s = open(&path, 10, 1000);
        s.append(&chat(1, "ann", None, "hi", 1)).unwrap();
        s.commit().unwrap();
        s.with_conn(|c| c.execute("UPDATE log SET user = '' WHERE id = 1", []))
            .unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("invalid username"), "{e}");
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
        break_table(&s, "log");
        let done = committer.commit();
        assert_eq!(done.upto, MessageId(2));
        let e = done.result.unwrap_err().to_string();
        assert!(e.contains("injected failure"), "{e}");
        mend_table(&s, "log");
        // Before the committer told the hub, a commit of the hub's covers
        // the lost batch too: it fails, once.
        s.append(&chat(3, "ann", None, "after", 3)).unwrap();
        let e = s.commit().unwrap_err().to_string();
        assert!(e.contains("injected failure"), "{e}");
        s.commit().unwrap();
        // Once reported, a committer's lost batch no longer fails a commit.
        break_table(&s, "log");
        s.append(&chat(4, "ann", None, "lost too", 4)).unwrap();
        let done = committer.commit();
        assert!(done.result.is_err());
        mend_table(&s, "log");
        let mut hub = imchat_core::Hub::new(imchat_core::Limits::default(), "");
        committer.report(&mut hub, done, Instant::now());
        s.append(&chat(5, "ann", None, "fine", 5)).unwrap();
        s.commit().unwrap();
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
        let loaded = open(&path, 100, 1 << 20).load().unwrap();
        assert_eq!(loaded.next_id, MessageId(half + 1 + RESERVE_BLOCK));
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
