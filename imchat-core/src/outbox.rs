//! A connection's outbound queue and the blocking writer loop that drains
//! it: two lanes (control before bulk), a byte cap, and coalesced writes.
//! It moves bytes only; what goes in is decided by the session.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One encoded frame, shared by every queue it was pushed to. An `Arc`
/// around the `Vec` the encoder wrote, so making a frame copies nothing.
pub type Frame = Arc<Vec<u8>>;

/// Most bytes the writer gathers into one vectored write.
const BATCH_BYTES: usize = 512 * 1024;
/// Most frames gathered into one write.
const BATCH_FRAMES: usize = 64;

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

#[derive(Debug, Default)]
struct State {
    control: VecDeque<Frame>,
    bulk: VecDeque<Frame>,
    control_bytes: usize,
    bulk_bytes: usize,
    /// Stop after writing what is queued.
    closing: bool,
    /// Stop now.
    aborted: bool,
    /// The writer is asleep on `ready` (a push must wake it).
    writer_waiting: bool,
    /// Producers asleep on `room`.
    room_waiters: usize,
}

/// A bounded two-lane queue of frames for one connection, shared between
/// the threads that produce frames and the one writer thread.
///
/// Control frames (chat, notices) always go out before bulk frames (file
/// data), so chat keeps flowing during a download. Control bytes are capped:
/// a push past the cap fails with [`PushError::Full`], and the caller drops
/// the peer. Bulk producers pace themselves with [`wait_bulk_room`](Outbox::wait_bulk_room).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Condvar,
    room: Condvar,
    max_control: usize,
}

impl Outbox {
    /// A queue whose control lane holds at most `max_control` bytes.
    pub fn new(max_control: usize) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            room: Condvar::new(),
            max_control,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the queue half-updated: every
        // update is a few field writes. Keep going with the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame on the control lane, or on the bulk lane when `bulk`.
    pub fn push(&self, frame: Frame, bulk: bool) -> Result<(), PushError> {
        let mut s = self.lock();
        if s.closing || s.aborted {
            return Err(PushError::Closed);
        }
        if bulk {
            s.bulk_bytes += frame.len();
            s.bulk.push_back(frame);
        } else {
            if s.control_bytes + frame.len() > self.max_control {
                return Err(PushError::Full {
                    max: self.max_control,
                });
            }
            s.control_bytes += frame.len();
            s.control.push_back(frame);
        }
        // Waking the writer costs a system call: only do it when it sleeps.
        // A busy writer picks the frame up with its next batch.
        let wake = std::mem::take(&mut s.writer_waiting);
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Waits until fewer than `limit` bulk bytes are queued. Returns false
    /// on timeout or when the queue is closed (stop producing then).
    pub fn wait_bulk_room(&self, limit: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if s.closing || s.aborted {
                return false;
            }
            if s.bulk_bytes < limit {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s.room_waiters += 1;
            s = self
                .room
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            s.room_waiters -= 1;
        }
    }

    /// Bytes queued (both lanes).
    pub fn queued(&self) -> usize {
        let s = self.lock();
        s.control_bytes + s.bulk_bytes
    }

    /// Lets the writer finish what is queued, then stop. Later pushes fail.
    pub fn close(&self) {
        self.lock().closing = true;
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// Stops the writer now, dropping what is queued.
    pub fn abort(&self) {
        let mut s = self.lock();
        s.aborted = true;
        s.control.clear();
        s.bulk.clear();
        s.control_bytes = 0;
        s.bulk_bytes = 0;
        drop(s);
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// True once closed or aborted.
    pub fn is_closed(&self) -> bool {
        let s = self.lock();
        s.closing || s.aborted
    }

    /// Takes the next batch to write: control frames first, then bulk, up
    /// to a size bound. `None` when the writer should stop.
    fn next_batch(&self, batch: &mut Vec<Frame>) -> bool {
        let mut s = self.lock();
        loop {
            if s.aborted {
                return false;
            }
            if !s.control.is_empty() || !s.bulk.is_empty() {
                break;
            }
            if s.closing {
                return false;
            }
            s.writer_waiting = true;
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
            s.writer_waiting = false;
        }
        let mut bytes = 0;
        while bytes < BATCH_BYTES && batch.len() < BATCH_FRAMES {
            let Some(f) = s.control.pop_front() else {
                break;
            };
            s.control_bytes -= f.len();
            bytes += f.len();
            batch.push(f);
        }
        while bytes < BATCH_BYTES && batch.len() < BATCH_FRAMES {
            let Some(f) = s.bulk.pop_front() else { break };
            s.bulk_bytes -= f.len();
            bytes += f.len();
            batch.push(f);
        }
        let wake = s.room_waiters > 0;
        drop(s);
        if wake {
            self.room.notify_all();
        }
        true
    }

    /// The writer loop: writes queued frames to `w`, coalescing them into
    /// few vectored writes, until the queue is closed and empty (`Ok`) or
    /// aborted (`Ok`) or a write fails (`Err`; the queue is aborted).
    pub fn run_writer<W: Write>(&self, mut w: W) -> io::Result<()> {
        let mut batch: Vec<Frame> = Vec::with_capacity(BATCH_FRAMES);
        while self.next_batch(&mut batch) {
            let result = write_all_frames(&mut w, &batch).and_then(|()| w.flush());
            batch.clear();
            if let Err(e) = result {
                self.abort();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Writes every frame whole, with vectored writes.
fn write_all_frames<W: Write>(w: &mut W, frames: &[Frame]) -> io::Result<()> {
    let mut first = 0; // first frame not fully written
    let mut skip = 0; // bytes of it already written
    while first < frames.len() {
        let slices: Vec<IoSlice<'_>> = frames[first..]
            .iter()
            .enumerate()
            .map(|(i, f)| IoSlice::new(if i == 0 { &f[skip..] } else { &f[..] }))
            .collect();
        let mut n = match w.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
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

    #[test]
    fn control_frames_overtake_bulk_frames() {
        let q = Outbox::new(1024);
        q.push(f(b"bulk1"), true).unwrap();
        q.push(f(b"ctl1"), false).unwrap();
        q.push(f(b"bulk2"), true).unwrap();
        q.push(f(b"ctl2"), false).unwrap();
        q.close();
        let mut out = Vec::new();
        q.run_writer(&mut out).unwrap();
        assert_eq!(out, b"ctl1ctl2bulk1bulk2");
    }

    #[test]
    fn the_control_cap_refuses_and_close_refuses() {
        let q = Outbox::new(10);
        q.push(f(b"123456"), false).unwrap();
        assert_eq!(q.push(f(b"12345"), false), Err(PushError::Full { max: 10 }));
        // Bulk is paced by its producer, not capped here.
        q.push(f(&[0; 100]), true).unwrap();
        assert_eq!(q.queued(), 106);
        q.close();
        assert_eq!(q.push(f(b"x"), false), Err(PushError::Closed));
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
}
