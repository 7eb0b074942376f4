//! The room log's entries and the interface a server stores them behind.
//!
//! The [`Hub`](crate::Hub) keeps the newest entries of its room log in
//! memory (bounded by [`Limits::log_entries`](crate::Limits::log_entries)
//! and [`Limits::log_bytes`](crate::Limits::log_bytes)): that is where
//! history on join and the replay of a resume come from, and without a
//! store it is all there is (history lives as long as the process). A
//! [`HistoryStore`] makes the log and the open sessions outlive the
//! process: the hub appends every entry to it as it happens, and makes the
//! appends durable in groups with [`HistoryStore::commit`], which the
//! server calls once per batch of messages
//! ([`Hub::commit_history`](crate::Hub::commit_history)). A store whose
//! appends only queue the entries can have them committed without the
//! hub (by a thread of the server's, not holding the hub), and the server
//! reports each such commit with
//! [`Hub::history_committed`](crate::Hub::history_committed). A chat message is
//! *accepted* once a commit that covers its append returned `Ok`, and only then
//! acknowledged; its receivers may see it before (they do not wait for the
//! commit). The hub loads from the store when it opens
//! ([`Hub::open_history`](crate::Hub::open_history)). This crate does no IO:
//! a store that writes files or talks to a database lives in the server.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::message::{ChatKind, LeaveReason, MessageId, ResumeToken, Timestamp, Username};

/// One entry of the room log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogEntry {
    /// Its id (what receivers got it under).
    pub id: MessageId,
    /// When the server noted it.
    pub time: Timestamp,
    /// What happened.
    pub event: LogEvent,
}

/// What a [`LogEntry`] records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogEvent {
    /// A chat message routed.
    Chat {
        /// The sender.
        from: Username,
        /// The one receiver of a private message; `None` for everyone.
        to: Option<Username>,
        /// Text or action.
        kind: ChatKind,
        /// The text.
        text: String,
        /// The sender's id of the message (for dropping a resent duplicate).
        client_id: u64,
    },
    /// A user joined.
    Joined {
        /// Who.
        user: Username,
    },
    /// A user left.
    Left {
        /// Who.
        user: Username,
        /// Why.
        reason: LeaveReason,
        /// The parting text.
        text: String,
    },
}

impl LogEntry {
    /// What the entry counts for against [`Limits::log_bytes`](crate::Limits::log_bytes):
    /// its texts and names, plus 64 bytes.
    #[must_use]
    pub fn cost(&self) -> usize {
        64 + match &self.event {
            LogEvent::Chat { from, to, text, .. } => {
                from.as_str().len() + to.as_ref().map_or(0, |t| t.as_str().len()) + text.len()
            }
            LogEvent::Joined { user } => user.as_str().len(),
            LogEvent::Left { user, text, .. } => user.as_str().len() + text.len(),
        }
    }
}

/// A session that can be resumed: what a store keeps of it, so that a
/// server restarted with its store takes its clients back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The user, as registered.
    pub user: Username,
    /// The token its client holds.
    pub token: ResumeToken,
    /// The token its last resume was made with, while its client has not
    /// shown that it got the new one (see PROTOCOL.md section 15): it
    /// still resumes the session, after a restart too.
    pub spent: Option<ResumeToken>,
    /// The highest client id of its chat messages the server had handled
    /// when the record was saved (the hub also reads the log for later ones).
    pub last_client_id: u64,
}

/// What a store holds when the hub opens it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loaded {
    /// The newest entries, oldest first (the hub keeps as many as its limits allow).
    pub entries: Vec<LogEntry>,
    /// The id the next entry gets: at least one past the newest entry, and
    /// past any id that may have been seen but not committed before a
    /// crash (a store may reserve ids ahead, so ids can jump after a restart).
    pub next_id: MessageId,
    /// The epoch the store's history belongs to; `None` for a new store
    /// (the hub picks one and calls [`HistoryStore::set_epoch`]).
    pub epoch: Option<u64>,
    /// The sessions open when the server stopped: the hub gives each a
    /// grace period from the time it opens the store.
    pub sessions: Vec<SessionRecord>,
}

/// A store could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's backend failed; `detail` says how. For an append, the
    /// chat message is refused ([`ErrorCode::INTERNAL`](crate::ErrorCode::INTERNAL))
    /// and its client may send it again.
    #[error("history store failed: {detail}")]
    Backend {
        /// What went wrong.
        detail: String,
    },
    /// A new store needs an epoch, and there is no token source to draw
    /// one from: call [`Hub::set_token_source`](crate::Hub::set_token_source) first.
    #[error("a new history store needs an epoch: set a token source first")]
    NoTokenSource,
}

/// Where the room log and the open sessions are kept beyond the hub's
/// memory. Every call is made with the hub's state at hand: a store that
/// is slow slows every chat message, so keep appends cheap.
pub trait HistoryStore: Send + fmt::Debug {
    /// Reads what the store holds; called once, by
    /// [`Hub::open_history`](crate::Hub::open_history).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`]: the hub does not open the store.
    fn load(&mut self) -> Result<Loaded, StoreError>;

    /// Records the epoch of a new store's history.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`]: the hub does not open the store.
    fn set_epoch(&mut self, epoch: u64) -> Result<(), StoreError>;

    /// Appends one entry (ids only grow). The entry may be buffered until
    /// the next [`commit`](HistoryStore::commit): only then must it survive
    /// what the store is meant to survive. Its id, though, is seen by
    /// receivers at once, so a store that can lose buffered entries (a
    /// crash before the commit) must never give their ids again: its
    /// [`Loaded::next_id`] must lie past every id appended before the crash.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`]: a chat message is refused; a join or a
    /// leave goes on unrecorded.
    fn append(&mut self, entry: &LogEntry) -> Result<(), StoreError>;

    /// Makes every entry (and session change) appended since the last
    /// commit durable, including what a commit made without the hub has
    /// not yet reported to it ([`Hub::history_committed`](crate::Hub::history_committed)).
    /// The hub acknowledges a chat message only after a
    /// commit that follows its append returned `Ok`. The default does
    /// nothing: for a store whose appends are durable when they return.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`]: the entries since the last commit may be
    /// lost; their chat messages are refused
    /// ([`ErrorCode::INTERNAL`](crate::ErrorCode::INTERNAL)) and their
    /// clients may send them again (their receivers may have seen them).
    fn commit(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Records (or replaces, by the user's name) a session that can be resumed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`]: the session works, but would not be
    /// resumed after a restart.
    fn save_session(&mut self, session: &SessionRecord) -> Result<(), StoreError>;

    /// Forgets the session of `user` (it left, or its grace ran out).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`]: a restarted server would offer the session
    /// a grace period it does not need.
    fn drop_session(&mut self, user: &Username) -> Result<(), StoreError>;
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: VecDeque<LogEntry>,
    next_id: u64,
    epoch: Option<u64>,
    sessions: BTreeMap<String, SessionRecord>,
}

/// A [`HistoryStore`] in memory: it outlives the hubs that use it (clones
/// share the same data), not the process. For tests and for programs that
/// restart a hub without restarting themselves. Keeps at most `max_entries`
/// entries.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
    max_entries: usize,
}

impl MemoryStore {
    /// An empty store keeping at most `max_entries` entries.
    #[must_use]
    pub fn new(max_entries: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Mutex::new(MemoryInner::default())),
            max_entries,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The entries held, oldest first.
    #[must_use]
    pub fn entries(&self) -> Vec<LogEntry> {
        self.with(|m| m.entries.iter().cloned().collect())
    }

    /// The sessions held, by name.
    #[must_use]
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.with(|m| m.sessions.values().cloned().collect())
    }
}

impl HistoryStore for MemoryStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        Ok(self.with(|m| Loaded {
            entries: m.entries.iter().cloned().collect(),
            next_id: MessageId(m.next_id.max(1)),
            epoch: m.epoch,
            sessions: m.sessions.values().cloned().collect(),
        }))
    }

    fn set_epoch(&mut self, epoch: u64) -> Result<(), StoreError> {
        self.with(|m| m.epoch = Some(epoch));
        Ok(())
    }

    fn append(&mut self, entry: &LogEntry) -> Result<(), StoreError> {
        let max = self.max_entries;
        self.with(|m| {
            m.next_id = m.next_id.max(entry.id.0 + 1);
            m.entries.push_back(entry.clone());
            while m.entries.len() > max {
                m.entries.pop_front();
            }
        });
        Ok(())
    }

    fn save_session(&mut self, session: &SessionRecord) -> Result<(), StoreError> {
        self.with(|m| {
            m.sessions
                .insert(session.user.as_str().to_lowercase(), session.clone())
        });
        Ok(())
    }

    fn drop_session(&mut self, user: &Username) -> Result<(), StoreError> {
        self.with(|m| m.sessions.remove(&user.as_str().to_lowercase()));
        Ok(())
    }
}
