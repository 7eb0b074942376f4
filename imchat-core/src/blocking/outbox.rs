//! A connection's outbound queue and the blocking writer loop that drains
//! it: two lanes (control before bulk), a byte cap, and coalesced writes.
//! It moves bytes only; what goes in is decided by the session.
//!
//! Its state is three things that change independently: the queue's
//! [`Phase`] (open, closing, aborted), the writer thread's [`Writer`]
//! state (armed, awake, asleep, done), and who holds the socket (nobody,
//! the writer thread, a producer flushing, or a [`Direct`] write). Bytes
//! reach the socket by three paths, one per purpose: the writer thread's
//! loop ([`Outbox::run_writer`]), a producer writing what is queued from
//! its own thread ([`Outbox::flush`], [`Outbox::push_bulk_through`]), and
//! one frame written past the queue ([`Outbox::write_direct`]).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One encoded frame, shared by every queue it was pushed to. An `Arc`
/// around the `Vec` the encoder wrote, so making a frame copies nothing.
pub type Frame = Arc<Vec<u8>>;

/// Most bytes the writer gathers into one vectored write.
const BATCH_BYTES: usize = 512 * 1024;
/// Most frames gathered into one write: the most buffers one vectored
/// write takes on Linux (`IOV_MAX`). A broadcast frame of chat is under
/// 100 bytes, so a smaller bound cut a busy receiver's backlog into many
/// small writes (64 frames, 5 KB, each), and each write costs a system
/// call here and a wake-up at the receiver.
const BATCH_FRAMES: usize = 1024;

/// How far past its cap a control lane may go for a moment (see
/// [`OVER_CAP_FOR`]): eight times (32 MiB for the default 4 MiB, Redis's
/// hard limit for a pub/sub client).
const OVER_CAP_FACTOR: usize = 8;
/// How long a control lane may stay over its cap: a burst to a peer that
/// reads (many senders at once, a large room) is not a peer that does not
/// read. Redis's pub/sub default is softer still (8 MB for 60 s).
pub const OVER_CAP_FOR: Duration = Duration::from_secs(2);

/// Slots a drained lane may keep (see [`State::take_batch`]).
const KEEP_CAPACITY: usize = 64;

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The queue is over its byte cap: the peer is not reading.
    #[error("outbound queue over its cap of {max} bytes")]
    Full {
        /// The cap.
        max: usize,
    },
    /// The queue was closed.
    #[error("connection closed")]
    Closed,
}

/// Where the queue is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Frames are taken.
    #[default]
    Open,
    /// [`Outbox::close`]: what is queued is written, then the writer stops;
    /// no frame is taken.
    Closing,
    /// [`Outbox::abort`]: what was queued is dropped and the writer stops
    /// now; no frame is taken.
    Aborted,
}

/// The writer thread's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Writer {
    /// No writer thread runs: the starter of [`Outbox::set_starter`]
    /// starts one when frames are left for it.
    Armed,
    /// A writer thread runs and finds new frames without being woken; or,
    /// with no starter, its owner will run [`Outbox::run_writer`].
    #[default]
    Awake,
    /// The writer thread sleeps on `ready`: frames left for it must wake it.
    Asleep,
    /// The writer loop has finished for good (not parked).
    Done,
}

#[derive(Debug, Default)]
struct State {
    /// The unwritten rest of a frame a timed-out write cut: it goes out
    /// before anything else, or the stream would be corrupt.
    partial: Option<Frame>,
    /// A write took every frame but the writer keeps bytes of its own
    /// that its `flush` could not yet push on (a TLS stream's encrypted
    /// records, when the socket was full): the writer thread flushes.
    unflushed: bool,
    control: VecDeque<Frame>,
    /// How many frames at the back of `control` were queued with
    /// [`Outbox::push_lazy`] and nobody has yet undertaken to write.
    lazy: usize,
    bulk: VecDeque<Frame>,
    control_bytes: usize,
    bulk_bytes: usize,
    /// The control lane's cap (see [`Outbox::push`]).
    cap: usize,
    /// Since when the control lane is over its cap.
    over_since: Option<Instant>,
    phase: Phase,
    writer: Writer,
    /// Someone (the writer thread, a producer flushing, or a [`Direct`]
    /// write) holds the socket: nobody else may write to it.
    writing: bool,
    /// Producers asleep on `room`.
    room_waiters: usize,
    /// Starts a writer thread (see [`Outbox::set_starter`]); `None` when
    /// the writer thread runs from the start, or once claimed.
    starter: Option<Starter>,
    /// A lazy writer that finds nothing to write for this long parks: its
    /// thread ends and the writer is armed again.
    park_after: Duration,
}

/// A function that starts a writer thread.
struct Starter(Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Starter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Starter")
    }
}

/// What to do, once the queue's lock is gone, to get the writer thread
/// going (see [`State::rouse`]).
#[must_use]
enum Rouse {
    /// Nothing: it is awake, done, or someone else holds the socket.
    None,
    /// Start a thread with this starter.
    Start(Starter),
    /// Wake the sleeping thread.
    Wake,
}

impl State {
    /// An armed writer is counted as running from now on: the starter to
    /// call, without the lock, to start its thread.
    fn disarm(&mut self) -> Option<Starter> {
        if self.writer != Writer::Armed {
            return None;
        }
        self.writer = Writer::Awake;
        self.starter.as_ref().map(|s| Starter(s.0.clone()))
    }

    /// Frames are left for the writer thread (or the queue is closing and
    /// someone must end the stream): starts it if armed, wakes it if it
    /// sleeps. Not while someone holds the socket: whoever does rouses it
    /// when done. Waking costs a system call, so an awake writer is left
    /// to pick the frames up with its next batch.
    fn rouse(&mut self) -> Rouse {
        if self.writing {
            return Rouse::None;
        }
        match self.writer {
            Writer::Armed => self.disarm().map_or(Rouse::None, Rouse::Start),
            Writer::Asleep => {
                self.writer = Writer::Awake;
                Rouse::Wake
            }
            Writer::Awake | Writer::Done => Rouse::None,
        }
    }

    fn is_closed(&self) -> bool {
        self.phase != Phase::Open
    }

    /// Frames wait that a writer taking the control lane (and the bulk
    /// lane too when `bulk`) would write.
    fn has_frames(&self, bulk: bool) -> bool {
        self.partial.is_some()
            || self.unflushed
            || !self.control.is_empty()
            || (bulk && !self.bulk.is_empty())
    }

    /// Moves the next frames into `batch` (empty): the rest of a cut frame,
    /// then control frames, then (when `bulk`) file data, up to
    /// [`BATCH_BYTES`] and [`BATCH_FRAMES`]. Says which lanes they came from.
    fn take_batch(&mut self, batch: &mut Vec<Frame>, bulk: bool) -> Taken {
        debug_assert!(batch.is_empty());
        // The batch's write ends with a flush, which pushes those on.
        self.unflushed = false;
        // Whoever takes a batch sees the rest through (or wakes the writer).
        self.lazy = 0;
        let mut bytes = 0;
        let partial = if let Some(p) = self.partial.take() {
            bytes += p.len();
            batch.push(p);
            true
        } else {
            false
        };
        while bytes < BATCH_BYTES && batch.len() < BATCH_FRAMES {
            let Some(f) = self.control.pop_front() else {
                break;
            };
            self.control_bytes -= f.len();
            bytes += f.len();
            batch.push(f);
        }
        if self.control_bytes <= self.cap {
            self.over_since = None;
        }
        let ahead = batch.len();
        while bulk && bytes < BATCH_BYTES && batch.len() < BATCH_FRAMES {
            let Some(f) = self.bulk.pop_front() else {
                break;
            };
            self.bulk_bytes -= f.len();
            bytes += f.len();
            batch.push(f);
        }
        // A lane that held a burst (a join storm's notices, say) keeps its
        // capacity: give it back once drained, or every idle connection
        // holds the memory of its busiest moment.
        if self.control.is_empty() && self.control.capacity() > KEEP_CAPACITY {
            self.control = VecDeque::new();
        }
        if self.bulk.is_empty() && self.bulk.capacity() > KEEP_CAPACITY {
            self.bulk = VecDeque::new();
        }
        Taken { partial, ahead }
    }

    /// Puts back what a timed-out write of `batch` left, from frame `first`
    /// on with `skip` bytes of it written: a cut frame's rest as the
    /// partial frame, every other frame at the front of the lane it came
    /// from, in order.
    fn put_back(&mut self, batch: &mut Vec<Frame>, (first, skip): (usize, usize), taken: Taken) {
        for (i, f) in batch.drain(first..).enumerate().rev() {
            let at = first + i;
            if at == first && skip > 0 {
                self.partial = Some(Arc::new(f[skip..].to_vec()));
            } else if at == 0 && taken.partial {
                self.partial = Some(f);
            } else if at < taken.ahead {
                self.control_bytes += f.len();
                self.control.push_front(f);
            } else {
                self.bulk_bytes += f.len();
                self.bulk.push_front(f);
            }
        }
    }
}

/// What the writer does next.
enum Next {
    /// Write the batch taken.
    Write,
    /// Stop for good: the queue is closed and empty, or aborted.
    Stop,
    /// End this thread: nothing to write for a while (lazy writers only).
    Park,
}

/// How [`Outbox::run_writer`] ended, when no write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriterEnd {
    /// The queue was closed and everything written, or it was aborted:
    /// no writer will run again.
    Finished,
    /// A lazy writer found nothing to write for a while and stopped; the
    /// starter of [`Outbox::set_starter`] starts a new one when frames
    /// come. The stream goes on.
    Parked,
}

/// Where the frames of a batch came from: the first was the partial frame
/// (`partial`), and the first `ahead` were not bulk frames.
#[derive(Debug, Clone, Copy)]
struct Taken {
    partial: bool,
    ahead: usize,
}

/// A bounded two-lane queue of frames for one connection, shared between
/// the threads that produce frames and the one writer thread.
///
/// Control frames (chat, notices) always go out before bulk frames (file
/// data), so chat keeps flowing during a download. Control bytes are capped:
/// a burst may take the lane past its cap for a moment ([`OVER_CAP_FOR`],
/// up to eight times the cap), but a push past that fails with
/// [`PushError::Full`], and the caller drops the peer. Bulk producers pace themselves with [`wait_bulk_room`](Outbox::wait_bulk_room).
///
/// Waking the writer thread for every message costs a context switch per
/// message and receiver, which dominates a broadcast to many members. So a
/// producer may instead queue with [`push_deferred`](Outbox::push_deferred)
/// and then [`flush`](Outbox::flush) from its own thread: when no one else
/// is writing, the queued control frames go straight to the socket, and
/// the writer thread is woken only for what does not fit at once.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Condvar,
    room: Condvar,
    max_control: usize,
    stall: Option<Duration>,
    over_cap_for: Duration,
}

impl Outbox {
    /// A queue whose control lane holds at most `max_control` bytes.
    #[must_use]
    pub fn new(max_control: usize) -> Arc<Self> {
        Self::build(max_control, None)
    }

    /// Like [`new`](Outbox::new), for a socket with a short write timeout:
    /// the writer retries a write that timed out, and gives up (failing
    /// with `TimedOut`) only when no byte went out for `stall`.
    #[must_use]
    pub fn with_stall(max_control: usize, stall: Duration) -> Arc<Self> {
        Self::build(max_control, Some(stall))
    }

    fn build(max_control: usize, stall: Option<Duration>) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                cap: max_control,
                ..State::default()
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            max_control,
            stall,
            over_cap_for: OVER_CAP_FOR,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the queue half-updated: every
        // update is a few field writes. Keep going with the data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame on the control lane, or on the bulk lane when `bulk`,
    /// and wakes the writer thread if it sleeps.
    ///
    /// # Errors
    ///
    /// The frame is not queued: [`PushError::Closed`] once the queue is
    /// closed or aborted (the connection is going away: drop the frame);
    /// [`PushError::Full`] when a control frame would take the control lane
    /// over eight times its cap, or the lane has been over its cap for
    /// [`OVER_CAP_FOR`] (the bulk lane has none): the peer is not reading,
    /// so disconnect it.
    pub fn push(&self, frame: Frame, bulk: bool) -> Result<(), PushError> {
        let mut s = self.lock();
        self.enqueue(&mut s, frame, bulk)?;
        self.rouse(s);
        Ok(())
    }

    /// Does what [`State::rouse`] says, without the lock.
    fn rouse(&self, mut s: MutexGuard<'_, State>) {
        let rouse = s.rouse();
        drop(s);
        match rouse {
            Rouse::None => {}
            Rouse::Start(start) => (start.0)(),
            Rouse::Wake => self.ready.notify_one(),
        }
    }

    /// Makes the writer thread lazy: `start` is called (from a thread that
    /// queued or flushed frames, without the queue's lock) whenever frames
    /// are left for a writer and no writer thread runs. It must start a
    /// thread that calls [`run_writer`](Outbox::run_writer), or
    /// [`abort`](Outbox::abort) the queue if it cannot. A connection whose
    /// frames all go out through [`flush`](Outbox::flush) costs no thread;
    /// and a writer that has had nothing to write for `park_after` parks
    /// (`run_writer` returns [`WriterEnd::Parked`] and its thread should
    /// end), so a peer that was slow for a moment does not hold a thread
    /// for the rest of its connection. Call before the queue is shared.
    pub fn set_starter(&self, start: impl Fn() + Send + Sync + 'static, park_after: Duration) {
        let mut s = self.lock();
        s.starter = Some(Starter(Arc::new(start)));
        s.writer = Writer::Armed;
        s.park_after = park_after;
    }

    /// Takes back the starter of [`set_starter`](Outbox::set_starter) if
    /// no writer thread runs: then none will be started again, and the
    /// caller must drain the queue itself (with `run_writer`, after
    /// [`close`](Outbox::close)). False when a writer thread runs.
    pub fn claim_writer(&self) -> bool {
        let mut s = self.lock();
        let free = s.disarm().is_some();
        if free {
            s.starter = None;
        }
        free
    }

    /// Waits until the writer loop has returned or the queue is aborted,
    /// for at most `timeout`. True if it did.
    pub fn wait_writer(&self, timeout: Duration) -> bool {
        self.wait_on_room(timeout, |s| {
            (s.writer == Writer::Done || s.phase == Phase::Aborted).then_some(true)
        })
    }

    /// Waits on the `room` condition until `answer` has one (which is
    /// returned) or `timeout` passes (false).
    fn wait_on_room(&self, timeout: Duration, answer: impl Fn(&State) -> Option<bool>) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(a) = answer(&s) {
                return a;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s.room_waiters += 1;
            s = self
                .room
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            s.room_waiters -= 1;
        }
    }

    /// Queues a control frame without waking the writer thread: the caller
    /// [`flush`](Outbox::flush)es later (typically once, after queueing
    /// everything it had, and outside its own locks). Returns `true` when
    /// the control lane was empty, so no one else will write this frame: a
    /// caller that flushes in bulk (presence notices to a large room, say)
    /// must then flush this queue itself. With `false`, the frame goes out
    /// with the ones ahead of it (whoever queued those flushes them, or the
    /// writer thread writes them).
    ///
    /// # Errors
    ///
    /// As for [`push`](Outbox::push): [`PushError::Closed`] or
    /// [`PushError::Full`], and the frame is not queued.
    pub fn push_deferred(&self, frame: Frame) -> Result<bool, PushError> {
        let mut s = self.lock();
        // Lazy frames ahead are nobody's to write yet: this one's flush
        // takes them along.
        let first = s.control.len() == s.lazy;
        self.enqueue(&mut s, frame, false)?;
        s.lazy = 0;
        Ok(first)
    }

    /// Queues a control frame that may wait a little for company: like
    /// [`push_deferred`](Outbox::push_deferred), but a later
    /// `push_deferred` still answers `true` (so its caller's flush carries
    /// this frame along with its own). Returns `true` when nothing but lazy
    /// frames was queued ahead: the caller must then flush this queue
    /// itself, but may wait before it does (acknowledgements released
    /// by a commit wait for the next broadcast to the same connection this way,
    /// instead of costing a write of their own).
    ///
    /// # Errors
    ///
    /// As for [`push`](Outbox::push).
    pub fn push_lazy(&self, frame: Frame) -> Result<bool, PushError> {
        let mut s = self.lock();
        let first = s.control.len() == s.lazy;
        self.enqueue(&mut s, frame, false)?;
        if first {
            s.lazy += 1;
        }
        Ok(first)
    }

    fn enqueue(&self, s: &mut State, frame: Frame, bulk: bool) -> Result<(), PushError> {
        if s.is_closed() {
            return Err(PushError::Closed);
        }
        if bulk {
            s.bulk_bytes += frame.len();
            s.bulk.push_back(frame);
        } else {
            let after = s.control_bytes + frame.len();
            if after > self.max_control {
                // Over the cap: allowed for a moment, and not too far.
                let now = Instant::now();
                let since = *s.over_since.get_or_insert(now);
                if after > self.max_control.saturating_mul(OVER_CAP_FACTOR)
                    || now.saturating_duration_since(since) >= self.over_cap_for
                {
                    return Err(PushError::Full {
                        max: self.max_control,
                    });
                }
            }
            s.control_bytes += frame.len();
            s.control.push_back(frame);
        }
        Ok(())
    }

    /// Writes the queued control frames to `w` from the calling thread if
    /// no one else is writing; whatever cannot be written at once (the
    /// socket's buffer is full: `w` should have a short write timeout), and
    /// any bulk frames, are left to the writer thread, which is woken.
    pub fn flush<W: Write>(&self, w: W) {
        self.flush_lanes(w, false);
    }

    /// Queues a bulk frame, then writes what is queued (control frames
    /// first, then file data) to `w` from the calling thread if no one else
    /// is writing, as [`flush`](Outbox::flush) does for control frames.
    /// A producer of file data saves the writer thread's wake-up per frame
    /// this way, and writes data it has just read while the CPU still has
    /// it cached. What cannot be written at once is left to the writer
    /// thread, which is woken.
    ///
    /// # Errors
    ///
    /// [`PushError::Closed`] once the queue is closed or aborted; the frame
    /// is not queued and nothing is written. The bulk lane has no cap, so
    /// never [`PushError::Full`].
    pub fn push_bulk_through<W: Write>(&self, frame: Frame, w: W) -> Result<(), PushError> {
        self.enqueue(&mut self.lock(), frame, true)?;
        self.flush_lanes(w, true);
        Ok(())
    }

    /// The producer's write path: writes queued control frames (and bulk
    /// frames when `bulk`) to `w` from this thread if no one else is
    /// writing, without waiting on a full socket; the rest is the writer
    /// thread's.
    fn flush_lanes<W: Write>(&self, mut w: W, bulk: bool) {
        let mut batch: Vec<Frame> = Vec::new();
        let mut s = self.lock();
        // Bounded: each round writes what was queued when it started.
        for _ in 0..4 {
            if s.writing || s.phase == Phase::Aborted || !s.has_frames(bulk) {
                break;
            }
            s.writing = true;
            let taken = s.take_batch(&mut batch, bulk);
            drop(s);
            let result = write_frames_from(&mut w, &batch, (0, 0));
            // A plain socket's flush does nothing; a TLS stream's pushes
            // its encrypted records on, without waiting on a full socket.
            let flushed = result.is_ok().then(|| w.flush());
            s = self.lock();
            s.writing = false;
            match result {
                Ok(()) => {
                    batch.clear();
                    match flushed {
                        Some(Err(e)) if is_timeout(&e) => {
                            s.unflushed = true;
                            break;
                        }
                        Some(Err(_)) => {
                            drop(s);
                            self.abort();
                            return;
                        }
                        _ => {}
                    }
                }
                Err((done, e)) if is_timeout(&e) => {
                    // Put back what did not go out, for the writer thread.
                    s.put_back(&mut batch, done, taken);
                    break;
                }
                Err(_) => {
                    // The socket is broken: nothing more goes out.
                    drop(s);
                    self.abort();
                    return;
                }
            }
        }
        self.release(s);
    }

    /// The socket was given back (or never taken): the writer thread gets
    /// what is left, or ends the stream if the queue is closing.
    fn release(&self, s: MutexGuard<'_, State>) {
        if s.has_frames(true) || s.phase == Phase::Closing {
            self.rouse(s);
        }
    }

    /// The right to write one frame straight to the socket, past the
    /// queue, if no one else is writing and nothing is queued (so the frame
    /// goes out in its turn). The caller writes the whole frame, or hands
    /// back what it could not write with [`Direct::leave_rest`]; control
    /// frames queued meanwhile wait, and go out (by the writer thread) once
    /// the [`Direct`] is dropped. This lets a file sender hand the kernel
    /// file data by reference (`sendfile`) instead of copying it through a
    /// queued frame.
    pub fn write_direct(&self) -> Option<Direct<'_>> {
        let mut s = self.lock();
        if s.writing || s.is_closed() || s.has_frames(true) {
            return None;
        }
        s.writing = true;
        Some(Direct {
            outbox: self,
            rest: None,
        })
    }

    /// Waits until fewer than `limit` bulk bytes are queued. Returns false
    /// on timeout or when the queue is closed (stop producing then).
    pub fn wait_bulk_room(&self, limit: usize, timeout: Duration) -> bool {
        self.wait_on_room(timeout, |s| {
            if s.is_closed() {
                Some(false)
            } else {
                (s.bulk_bytes < limit).then_some(true)
            }
        })
    }

    /// Waits until a control frame of `len` bytes fits in the control lane.
    /// Returns false on timeout or when the queue is closed. A producer
    /// that must not lose what it sends (a user's own messages) waits here
    /// before [`push`](Outbox::push)ing, and so slows to the peer's pace
    /// rather than meet [`PushError::Full`].
    pub fn wait_control_room(&self, len: usize, timeout: Duration) -> bool {
        let len = len.min(self.max_control);
        self.wait_on_room(timeout, |s| {
            if s.is_closed() {
                Some(false)
            } else {
                (s.control_bytes + len <= self.max_control).then_some(true)
            }
        })
    }

    /// True when nothing is queued and nobody is writing: every frame
    /// pushed so far has been handed to the socket. ([`queued`](Outbox::queued)
    /// can be 0 while another thread still writes the frames it took.)
    #[must_use]
    pub fn is_drained(&self) -> bool {
        let s = self.lock();
        !s.writing
            && s.partial.is_none()
            && !s.unflushed
            && s.control_bytes == 0
            && s.bulk_bytes == 0
    }

    /// Bytes queued (both lanes).
    pub fn queued(&self) -> usize {
        let s = self.lock();
        s.partial.as_ref().map_or(0, |p| p.len()) + s.control_bytes + s.bulk_bytes
    }

    /// Lets the writer finish what is queued, then stop. Later pushes fail.
    /// A lazy writer (see [`set_starter`](Outbox::set_starter)) is started
    /// now, since someone must write out the rest and end the stream.
    pub fn close(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Open {
            s.phase = Phase::Closing;
        }
        let start = s.disarm();
        drop(s);
        self.ready.notify_all();
        self.room.notify_all();
        if let Some(start) = start {
            (start.0)();
        }
    }

    /// Stops the writer now, dropping what is queued.
    pub fn abort(&self) {
        let mut s = self.lock();
        s.phase = Phase::Aborted;
        s.partial = None;
        s.unflushed = false;
        s.control.clear();
        s.lazy = 0;
        s.bulk.clear();
        s.control_bytes = 0;
        s.bulk_bytes = 0;
        drop(s);
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// True once closed or aborted.
    pub fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// Takes the next batch to write: control frames first, then bulk, up
    /// to a size bound. Says what to do with it.
    fn next_batch(&self, batch: &mut Vec<Frame>) -> Next {
        let mut s = self.lock();
        let mut idle_since = Instant::now();
        loop {
            if s.phase == Phase::Aborted {
                return Next::Stop;
            }
            let queued = s.has_frames(true);
            if queued && !s.writing {
                break;
            }
            if !queued && s.phase == Phase::Closing && !s.writing {
                return Next::Stop;
            }
            if s.starter.is_some() {
                // A lazy writer: park once idle for long enough. Not while
                // a flush writes: what it leaves is this thread's to write.
                let idle = idle_since.elapsed();
                if !queued && !s.writing && idle >= s.park_after {
                    s.writer = Writer::Armed;
                    return Next::Park;
                }
                let wait = s.park_after.saturating_sub(idle);
                s.writer = Writer::Asleep;
                s = self
                    .ready
                    .wait_timeout(s, wait)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            } else {
                s.writer = Writer::Asleep;
                s = self
                    .ready
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            s.writer = Writer::Awake;
            if s.writing {
                idle_since = Instant::now();
            }
        }
        s.take_batch(batch, true);
        s.writing = true;
        let wake = s.room_waiters > 0;
        drop(s);
        if wake {
            self.room.notify_all();
        }
        Next::Write
    }

    /// The writer thread's write path: writes queued frames to `w`,
    /// coalescing them into few vectored writes, until the queue is closed
    /// and empty or aborted ([`WriterEnd::Finished`]), or a lazy writer
    /// parks ([`WriterEnd::Parked`], see [`set_starter`](Outbox::set_starter)),
    /// or a write fails (`Err`; the queue is aborted).
    ///
    /// # Errors
    ///
    /// The [`io::Error`] of a write or flush that failed (or stalled past
    /// [`with_stall`](Outbox::with_stall)'s limit). The queue is then aborted
    /// and later pushes fail: the connection is over.
    pub fn run_writer<W: Write>(&self, w: W) -> io::Result<WriterEnd> {
        let result = self.writer_loop(w);
        if result.as_ref().is_ok_and(|end| *end == WriterEnd::Parked) {
            return result;
        }
        self.lock().writer = Writer::Done;
        self.room.notify_all();
        result
    }

    fn writer_loop<W: Write>(&self, mut w: W) -> io::Result<WriterEnd> {
        let mut batch: Vec<Frame> = Vec::with_capacity(BATCH_FRAMES);
        loop {
            match self.next_batch(&mut batch) {
                Next::Write => {}
                Next::Stop => return Ok(WriterEnd::Finished),
                Next::Park => return Ok(WriterEnd::Parked),
            }
            let result = self
                .write_batch(&mut w, &batch)
                .and_then(|()| self.flush_writer(&mut w));
            batch.clear();
            self.lock().writing = false;
            if let Err(e) = result {
                self.abort();
                return Err(e);
            }
        }
    }

    /// Flushes `w`, retrying a flush that times out (a TLS stream's
    /// records waiting on a full socket) as [`write_batch`](Self::write_batch)
    /// retries writes: within the stall limit, while the queue is not aborted.
    fn flush_writer<W: Write>(&self, w: &mut W) -> io::Result<()> {
        let started = Instant::now();
        loop {
            match w.flush() {
                Err(e) if is_timeout(&e) => {
                    if self.lock().phase == Phase::Aborted {
                        return Ok(());
                    }
                    if self.stall.is_some_and(|stall| started.elapsed() >= stall) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the peer stopped reading",
                        ));
                    }
                }
                other => return other,
            }
        }
    }

    /// Writes a whole batch, retrying writes that time out while bytes
    /// still move (within [`with_stall`](Outbox::with_stall)'s limit) and
    /// the queue is not aborted.
    fn write_batch<W: Write>(&self, w: &mut W, batch: &[Frame]) -> io::Result<()> {
        let mut from = (0, 0);
        let mut progress = Instant::now();
        loop {
            match write_frames_from(w, batch, from) {
                Ok(()) => return Ok(()),
                Err((done, e)) if is_timeout(&e) => {
                    if done != from {
                        progress = Instant::now();
                        from = done;
                    }
                    if self.lock().phase == Phase::Aborted {
                        return Ok(());
                    }
                    if self.stall.is_some_and(|stall| progress.elapsed() >= stall) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the peer stopped reading",
                        ));
                    }
                }
                Err((_, e)) => return Err(e),
            }
        }
    }
}

/// The right to write one frame to the socket, from
/// [`Outbox::write_direct`]. Dropping it gives the socket back to the queue.
#[derive(Debug)]
#[must_use = "dropping it at once gives the socket back unwritten"]
pub struct Direct<'a> {
    outbox: &'a Outbox,
    rest: Option<Frame>,
}

impl Direct<'_> {
    /// The frame could not all be written now: `rest`, its unwritten
    /// bytes, goes out before anything else, by the writer thread.
    pub fn leave_rest(mut self, rest: Frame) {
        if !rest.is_empty() {
            self.rest = Some(rest);
        }
    }

    /// Writing failed: the socket is broken, so nothing more goes out
    /// (the queue is aborted).
    pub fn broken(self) {
        let outbox = self.outbox;
        drop(self);
        outbox.abort();
    }
}

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        let mut s = self.outbox.lock();
        s.writing = false;
        if let Some(rest) = self.rest.take() {
            if s.phase != Phase::Aborted {
                s.partial = Some(rest);
            }
        }
        // What was queued meanwhile (or a close) is the writer's now.
        self.outbox.release(s);
    }
}

/// A write that timed out or would block (the socket is full for now).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes every frame whole from position `(first, skip)` (frame index,
/// bytes of it already written) on, with vectored writes; on failure says
/// how far it got.
fn write_frames_from<W: Write>(
    w: &mut W,
    frames: &[Frame],
    (mut first, mut skip): (usize, usize),
) -> Result<(), ((usize, usize), io::Error)> {
    while first < frames.len() {
        let slices: Vec<IoSlice<'_>> = frames[first..]
            .iter()
            .enumerate()
            .map(|(i, f)| IoSlice::new(if i == 0 { &f[skip..] } else { &f[..] }))
            .collect();
        let mut n = match w.write_vectored(&slices) {
            Ok(0) => return Err(((first, skip), io::ErrorKind::WriteZero.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(((first, skip), e)),
        };
        while first < frames.len() && n > 0 {
            let left = frames[first].len() - skip;
            if n >= left {
                n -= left;
                first += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn f(b: &[u8]) -> Frame {
        Arc::new(b.to_vec())
    }

    /// Closes `q` and returns everything its writer writes.
    fn written(q: &Outbox) -> Vec<u8> {
        q.close();
        let mut out = Vec::new();
        q.run_writer(&mut out).unwrap();
        out
    }

    /// A writer that lets the test see the queue while a write is under way.
    struct Probe<'a> {
        q: &'a Outbox,
        seen: Vec<(usize, bool)>,
    }

    impl std::io::Write for Probe<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.seen.push((self.q.queued(), self.q.is_drained()));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drained_only_once_the_frames_taken_are_written() {
        let q = Outbox::new(1024);
        assert!(q.is_drained());
        q.push_deferred(f(b"refused")).unwrap();
        assert!(!q.is_drained());
        let mut probe = Probe {
            q: &q,
            seen: Vec::new(),
        };
        q.flush(&mut probe);
        // While the frame was being written nothing was queued, yet the
        // queue was not drained.
        assert_eq!(probe.seen, vec![(0, false)]);
        assert!(q.is_drained());
    }

    #[test]
    fn control_frames_overtake_bulk_frames() {
        let q = Outbox::new(1024);
        q.push(f(b"bulk1"), true).unwrap();
        q.push(f(b"ctl1"), false).unwrap();
        q.push(f(b"bulk2"), true).unwrap();
        q.push(f(b"ctl2"), false).unwrap();
        assert_eq!(written(&q), b"ctl1ctl2bulk1bulk2");
    }

    #[test]
    fn the_control_cap_refuses_and_close_refuses() {
        let q = Outbox::new(10);
        q.push(f(b"123456"), false).unwrap();
        assert_eq!(q.push(f(&[0; 75]), false), Err(PushError::Full { max: 10 }));
        // Bulk is paced by its producer, not capped here.
        q.push(f(&[0; 100]), true).unwrap();
        assert_eq!(q.queued(), 106);
        q.close();
        assert_eq!(q.push(f(b"x"), false), Err(PushError::Closed));
    }

    #[test]
    fn a_burst_may_go_over_the_cap_for_a_moment_but_not_far_or_for_long() {
        let q = Outbox::new(10);
        q.push(f(b"12345678"), false).unwrap();
        // Over the cap: accepted, up to eight times it.
        q.push(f(&[0; 50]), false).unwrap();
        assert_eq!(q.push(f(&[0; 30]), false), Err(PushError::Full { max: 10 }));
        // Written out: under the cap again, and the clock starts over.
        let mut out = Vec::new();
        q.flush(&mut out);
        assert_eq!(out.len(), 58);
        q.push(f(&[0; 20]), false).unwrap();
        // Over the cap for longer than allowed: refused.
        thread::sleep(OVER_CAP_FOR + Duration::from_millis(50));
        assert_eq!(q.push(f(b"x"), false), Err(PushError::Full { max: 10 }));
    }

    /// A writer that accepts at most 3 bytes per call.
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_still_write_every_byte_in_order() {
        let q = Outbox::new(1 << 20);
        let mut want = Vec::new();
        for i in 0..50u8 {
            let frame: Vec<u8> = (0..i).collect();
            want.extend_from_slice(&frame);
            q.push(Arc::new(frame), i % 2 == 0).unwrap();
        }
        q.close();
        let mut w = Trickle(Vec::new());
        q.run_writer(&mut w).unwrap();
        assert_eq!(w.0.len(), want.len());
    }

    /// A writer that takes every byte but keeps them until its flush,
    /// which times out `stuck` times first (a TLS stream's records on a
    /// full socket).
    struct Buffered {
        held: Vec<u8>,
        out: Vec<u8>,
        stuck: usize,
    }
    impl Write for &mut Buffered {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.held.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            if self.stuck > 0 {
                self.stuck -= 1;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.out.append(&mut self.held);
            Ok(())
        }
    }

    #[test]
    fn a_flush_that_cannot_finish_is_left_to_the_writer_thread() {
        let q = Outbox::new(1 << 20);
        let mut w = Buffered {
            held: Vec::new(),
            out: Vec::new(),
            stuck: 1,
        };
        q.push(f(b"hello"), false).unwrap();
        q.flush(&mut w);
        // Every frame was taken, but the bytes are still the writer's own.
        assert_eq!(q.queued(), 0);
        assert!(!q.is_drained(), "an unfinished flush counts as queued");
        assert!(w.out.is_empty());
        // The writer thread's turn: it flushes (retrying the timeout).
        w.stuck = 2;
        q.close();
        q.run_writer(&mut w).unwrap();
        assert_eq!(w.out, b"hello");
        assert!(q.is_drained());
    }

    #[test]
    fn bulk_producers_wait_for_room() {
        let q = Outbox::new(1024);
        q.push(f(&[1; 100]), true).unwrap();
        assert!(!q.wait_bulk_room(50, Duration::from_millis(20)));
        let q2 = q.clone();
        let writer = thread::spawn(move || {
            let mut sink = Vec::new();
            q2.run_writer(&mut sink).unwrap();
            sink.len()
        });
        assert!(q.wait_bulk_room(50, Duration::from_secs(10)));
        q.close();
        assert_eq!(writer.join().unwrap(), 100);
        assert!(!q.wait_bulk_room(50, Duration::from_secs(1)), "closed");
    }

    #[test]
    fn abort_stops_the_writer_and_drops_frames() {
        let q = Outbox::new(1024);
        q.push(f(b"dropped"), false).unwrap();
        q.abort();
        let mut out = Vec::new();
        q.run_writer(&mut out).unwrap();
        assert!(out.is_empty());
        assert!(q.is_closed());
    }

    /// A socket whose buffer takes `room` bytes, then times out.
    struct Full {
        out: Vec<u8>,
        room: usize,
    }
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flush_writes_from_the_calling_thread() {
        let q = Outbox::new(1024);
        q.push_deferred(f(b"one")).unwrap();
        q.push_deferred(f(b"two")).unwrap();
        let mut out = Vec::new();
        q.flush(&mut out);
        assert_eq!(out, b"onetwo");
        assert_eq!(q.queued(), 0);
    }

    /// Counts vectored writes; takes everything.
    #[derive(Default)]
    struct Counted {
        out: Vec<u8>,
        writes: usize,
    }
    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.writes += 1;
            let mut n = 0;
            for b in bufs {
                self.out.extend_from_slice(b);
                n += b.len();
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_backlog_of_small_frames_goes_out_in_one_write_in_order() {
        // A busy receiver's backlog of chat frames: one system call, not one
        // per 64 frames, whether a producer flushes it or the writer does.
        let frames: Vec<Frame> = (0..1000u32).map(|i| f(&i.to_be_bytes())).collect();
        let expected: Vec<u8> = frames.iter().flat_map(|fr| fr.to_vec()).collect();
        let q = Outbox::new(1 << 20);
        for fr in &frames {
            q.push_deferred(fr.clone()).unwrap();
        }
        let mut out = Counted::default();
        q.flush(&mut out);
        assert_eq!((out.writes, &out.out), (1, &expected));
        let q = Outbox::new(1 << 20);
        for fr in &frames {
            q.push(fr.clone(), false).unwrap();
        }
        q.close();
        let mut out = Counted::default();
        q.run_writer(&mut out).unwrap();
        assert_eq!((out.writes, &out.out), (1, &expected));
    }

    #[test]
    fn a_drained_lane_gives_back_the_memory_of_a_burst() {
        let q = Outbox::new(1 << 20);
        for i in 0..5000u32 {
            q.push_deferred(f(&i.to_be_bytes())).unwrap();
        }
        assert!(q.lock().control.capacity() >= 5000);
        let mut out = Vec::new();
        // A flush writes a bounded number of batches; a few drain it all.
        for _ in 0..5 {
            q.flush(&mut out);
        }
        assert_eq!(out.len(), 5000 * 4);
        assert!(q.lock().control.capacity() <= KEEP_CAPACITY);
        // Small queues keep theirs: no allocation per write.
        q.push_deferred(f(b"x")).unwrap();
        let cap = q.lock().control.capacity();
        q.flush(&mut out);
        assert_eq!(q.lock().control.capacity(), cap);
    }

    #[test]
    fn a_lazy_frame_does_not_keep_a_later_push_from_flushing_it_along() {
        let q = Outbox::new(1 << 20);
        assert_eq!(q.push_lazy(f(b"ack1")), Ok(true));
        assert_eq!(q.push_lazy(f(b"ack2")), Ok(true));
        // The broadcast's caller flushes: the lazy frames go with it.
        assert_eq!(q.push_deferred(f(b"chat")), Ok(true));
        // Now someone will flush: nothing more is anyone else's.
        assert_eq!(q.push_lazy(f(b"ack3")), Ok(false));
        assert_eq!(q.push_deferred(f(b"more")), Ok(false));
        let mut out = Vec::new();
        q.flush(&mut out);
        assert_eq!(out, b"ack1ack2chatack3more");
        // A flush that wrote everything leaves no lazy frame counted.
        assert_eq!(q.push_lazy(f(b"ack4")), Ok(true));
        q.flush(&mut out);
        assert_eq!(q.push_deferred(f(b"x")), Ok(true));
    }

    #[test]
    fn a_deferred_push_says_whether_anything_is_ahead_of_it() {
        let q = Outbox::new(1 << 20);
        assert_eq!(q.push_deferred(f(b"one")), Ok(true));
        assert_eq!(q.push_deferred(f(b"two")), Ok(false));
        q.push_deferred(f(b"three")).unwrap();
        let mut out = Vec::new();
        q.flush(&mut out);
        assert_eq!(out, b"onetwothree");
        assert_eq!(q.push_deferred(f(b"four")), Ok(true));
        q.close();
        assert_eq!(q.push_deferred(f(b"five")), Err(PushError::Closed));
    }

    #[test]
    fn a_lazy_writer_starts_once_and_only_when_frames_are_left_for_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let q = Outbox::new(1 << 20);
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = starts.clone();
        q.set_starter(
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            Duration::from_secs(60),
        );
        // Everything flushed at once: no writer needed.
        q.push_deferred(f(b"hi")).unwrap();
        let mut out = Vec::new();
        q.flush(&mut out);
        assert_eq!(starts.load(Ordering::SeqCst), 0);
        // What a flush cannot write, and file data, needs the writer: once.
        q.push_deferred(f(b"abcdef")).unwrap();
        q.flush(Full {
            out: Vec::new(),
            room: 2,
        });
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        q.push(f(b"bulk"), true).unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(!q.claim_writer());
    }

    /// A socket whose bytes land in a buffer shared with the test.
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flush_wakes_a_writer_that_slept_while_it_wrote() {
        // The writer finds file data queued while a flush is writing, and
        // sleeps (only one may write); the flush must wake it when done.
        let q = Outbox::new(1 << 20);
        let out = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (q, out) = (q.clone(), out.clone());
            std::thread::spawn(move || q.run_writer(Shared(out)))
        };
        /// A socket that lets the file data be queued mid-write.
        struct Slow<'a>(&'a Outbox, Arc<Mutex<Vec<u8>>>, bool);
        impl Write for Slow<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if !self.2 {
                    self.2 = true;
                    self.0.push(f(b"data"), true).unwrap();
                    // Give the writer time to see it and go to sleep.
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.1.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        q.push_deferred(f(b"note")).unwrap();
        q.flush(Slow(&q, out.clone(), false));
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.lock().unwrap().len() < 8 {
            assert!(Instant::now() < deadline, "the file data was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*out.lock().unwrap(), b"notedata");
        q.close();
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn an_idle_lazy_writer_parks_and_the_next_frames_start_another() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::mpsc;
        let q = Outbox::new(1 << 20);
        let out = Arc::new(Mutex::new(Vec::new()));
        let starts = Arc::new(AtomicUsize::new(0));
        let (ends_tx, ends) = mpsc::channel();
        {
            let (weak, out, starts) = (Arc::downgrade(&q), out.clone(), starts.clone());
            q.set_starter(
                move || {
                    starts.fetch_add(1, Ordering::SeqCst);
                    let (q, out, tx) = (weak.upgrade().unwrap(), out.clone(), ends_tx.clone());
                    std::thread::spawn(move || tx.send(q.run_writer(Shared(out)).unwrap()));
                },
                Duration::from_millis(20),
            );
        }
        let wait = Duration::from_secs(5);
        q.push(f(b"one"), true).unwrap();
        assert_eq!(ends.recv_timeout(wait), Ok(WriterEnd::Parked));
        // It parked only after writing everything, and is not done for good.
        assert_eq!(*out.lock().unwrap(), b"one");
        assert!(!q.wait_writer(Duration::from_millis(1)));
        q.push(f(b"two"), true).unwrap();
        assert_eq!(ends.recv_timeout(wait), Ok(WriterEnd::Parked));
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        // A parked writer is restarted to end the stream.
        q.push_deferred(f(b"three")).unwrap();
        q.close();
        assert_eq!(ends.recv_timeout(wait), Ok(WriterEnd::Finished));
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(q.wait_writer(Duration::from_millis(1)));
        assert!(!q.claim_writer());
        assert_eq!(*out.lock().unwrap(), b"onetwothree");
    }

    #[test]
    fn a_parked_writer_can_be_claimed_and_then_is_never_started() {
        let q = Outbox::new(1 << 20);
        let weak = Arc::downgrade(&q);
        q.set_starter(
            move || {
                let q = weak.upgrade().unwrap();
                std::thread::spawn(move || q.run_writer(io::sink()));
            },
            Duration::from_millis(1),
        );
        q.push(f(b"one"), true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // Once parked, the starter is armed again and can be claimed.
        while !q.claim_writer() {
            assert!(Instant::now() < deadline, "the writer never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        q.push(f(b"two"), true).unwrap();
        q.close();
        assert!(!q.wait_writer(Duration::from_millis(20)));
        let mut out = Vec::new();
        assert_eq!(q.run_writer(&mut out).unwrap(), WriterEnd::Finished);
        assert_eq!(out, b"two");
    }

    #[test]
    fn a_direct_write_is_only_granted_with_nothing_queued_and_nobody_writing() {
        let q = Outbox::new(1 << 20);
        q.push(f(b"queued"), true).unwrap();
        assert!(q.write_direct().is_none(), "bulk frames wait");
        let mut out = Vec::new();
        q.flush_lanes(&mut out, true);
        assert_eq!(out, b"queued");
        let direct = q.write_direct().expect("an empty queue");
        assert!(q.write_direct().is_none(), "one writer at a time");
        // A flush while the direct write goes on leaves its frame queued.
        q.push_deferred(f(b"chat")).unwrap();
        q.flush(&mut out);
        assert_eq!(out, b"queued");
        drop(direct);
        q.flush(&mut out);
        assert_eq!(out, b"queuedchat");
        q.close();
        assert!(q.write_direct().is_none(), "closed");
    }

    #[test]
    fn the_rest_a_direct_write_leaves_goes_first_and_starts_the_writer() {
        let q = Outbox::new(1 << 20);
        let (tx, rx) = std::sync::mpsc::channel();
        q.set_starter(move || tx.send(()).unwrap(), Duration::from_secs(60));
        let direct = q.write_direct().unwrap();
        q.push_deferred(f(b"chat")).unwrap();
        q.push(f(b"next"), true).unwrap();
        assert!(
            rx.try_recv().is_err(),
            "no writer while the direct write goes on"
        );
        direct.leave_rest(f(b"rest"));
        assert!(rx.try_recv().is_ok(), "the writer was started for the rest");
        assert_eq!(written(&q), b"restchatnext");
    }

    #[test]
    fn a_broken_direct_write_aborts_the_queue() {
        let q = Outbox::new(1 << 20);
        let direct = q.write_direct().unwrap();
        q.push_deferred(f(b"chat")).unwrap();
        direct.broken();
        assert!(q.is_closed());
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn closing_starts_a_lazy_writer_to_end_the_stream() {
        let q = Outbox::new(1 << 20);
        let (tx, rx) = std::sync::mpsc::channel();
        q.set_starter(move || tx.send(()).unwrap(), Duration::from_secs(60));
        q.close();
        assert!(rx.try_recv().is_ok());
        assert!(!q.claim_writer());
    }

    #[test]
    fn a_claimed_writer_is_never_started_and_the_claimer_drains_the_queue() {
        let q = Outbox::new(1 << 20);
        q.set_starter(|| panic!("must not start"), Duration::from_secs(60));
        assert!(q.claim_writer());
        q.push(f(b"one"), true).unwrap();
        q.close();
        assert!(!q.claim_writer());
        assert!(!q.wait_writer(Duration::from_millis(1)));
        let mut out = Vec::new();
        q.run_writer(&mut out).unwrap();
        assert_eq!(out, b"one");
        assert!(q.wait_writer(Duration::from_millis(1)));
    }

    #[test]
    fn what_flush_cannot_write_is_left_whole_and_in_order_for_the_writer() {
        let q = Outbox::new(1024);
        q.push_deferred(f(b"abcdef")).unwrap();
        q.push_deferred(f(b"ghij")).unwrap();
        let mut sock = Full {
            out: Vec::new(),
            room: 4,
        };
        q.flush(&mut sock);
        assert_eq!(sock.out, b"abcd");
        assert_eq!(
            q.queued(),
            6,
            "the cut frame's tail and the next frame wait"
        );
        q.push(f(b"kl"), false).unwrap();
        q.close();
        sock.room = usize::MAX;
        q.run_writer(&mut sock).unwrap();
        assert_eq!(sock.out, b"abcdefghijkl");
    }

    #[test]
    fn bulk_pushed_through_goes_out_from_the_caller_after_the_control_frames() {
        let q = Outbox::new(1024);
        q.set_starter(
            || panic!("no writer thread is needed"),
            Duration::from_secs(60),
        );
        q.push_deferred(f(b"chat")).unwrap();
        let mut sock = Full {
            out: Vec::new(),
            room: usize::MAX,
        };
        q.push_bulk_through(f(b"DATA"), &mut sock).unwrap();
        assert_eq!(sock.out, b"chatDATA");
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn a_cut_bulk_frame_finishes_before_any_later_chat() {
        let q = Outbox::new(1024);
        let mut sock = Full {
            out: Vec::new(),
            room: 3,
        };
        q.push_bulk_through(f(b"ABCDEF"), &mut sock).unwrap();
        q.push_bulk_through(f(b"GH"), &mut sock).unwrap();
        assert_eq!(sock.out, b"ABC");
        // Chat queued now must not land inside the cut chunk frame; it
        // still overtakes the whole bulk frames behind it.
        q.push(f(b"chat"), false).unwrap();
        q.close();
        sock.room = usize::MAX;
        q.run_writer(&mut sock).unwrap();
        assert_eq!(sock.out, b"ABCDEFchatGH");
    }

    #[test]
    fn what_a_timed_out_write_left_goes_back_to_its_lane() {
        let q = Outbox::new(1024);
        q.push(f(b"c1"), false).unwrap();
        q.push(f(b"c2"), false).unwrap();
        q.push(f(b"b1"), true).unwrap();
        let mut sock = Full {
            out: Vec::new(),
            room: 3,
        };
        // Writes "c1" and one byte of "c2": "2" is the partial frame.
        q.push_bulk_through(f(b"b2"), &mut sock).unwrap();
        assert_eq!(sock.out, b"c1c");
        q.push(f(b"c3"), false).unwrap();
        q.close();
        sock.room = usize::MAX;
        q.run_writer(&mut sock).unwrap();
        assert_eq!(sock.out, b"c1c2c3b1b2");
    }

    #[test]
    fn the_writer_retries_timeouts_until_the_stall_limit() {
        // Room for one byte per write call, as a slow reader would make.
        struct Slow(Vec<u8>, bool);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.0.push(buf[0]);
                Ok(1)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let q = Outbox::with_stall(1024, Duration::from_secs(5));
        q.push(f(b"slow but moving"), false).unwrap();
        q.close();
        let mut w = Slow(Vec::new(), false);
        q.run_writer(&mut w).unwrap();
        assert_eq!(w.0, b"slow but moving");

        let stuck = Outbox::with_stall(1024, Duration::from_millis(30));
        stuck.push(f(b"never"), false).unwrap();
        stuck.close();
        let mut none = Full {
            out: Vec::new(),
            room: 0,
        };
        let err = stuck.run_writer(&mut none).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_flush_never_races_the_writer_thread() {
        // Many producers flushing while the writer thread also writes: every
        // frame arrives whole and each producer's frames stay in order.
        let q = Outbox::new(1 << 24);
        let sink = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let q = q.clone();
            let sink = sink.clone();
            thread::spawn(move || q.run_writer(Shared(sink)).unwrap())
        };
        let producers: Vec<_> = (0..4u8)
            .map(|p| {
                let q = q.clone();
                let sink = sink.clone();
                thread::spawn(move || {
                    for i in 0..500u16 {
                        let frame = [p, (i >> 8) as u8, i as u8];
                        if i % 3 == 0 {
                            q.push(Arc::new(frame.to_vec()), false).unwrap();
                        } else {
                            q.push_deferred(Arc::new(frame.to_vec())).unwrap();
                            q.flush(Shared(sink.clone()));
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        q.close();
        writer.join().unwrap();
        let bytes = sink.lock().unwrap().clone();
        assert_eq!(bytes.len(), 4 * 500 * 3);
        let mut next = [0u16; 4];
        for frame in bytes.chunks(3) {
            let p = frame[0] as usize;
            let i = (u16::from(frame[1]) << 8) | u16::from(frame[2]);
            assert_eq!(i, next[p], "producer {p} out of order");
            next[p] += 1;
        }
    }
}
