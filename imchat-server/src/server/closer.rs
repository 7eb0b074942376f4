//! Connections refused before they got a reader thread (server full, too
//! many from one address, shutting down, no thread to be had): one thread
//! for all of them writes the refusal, ends the stream at once, and drains
//! what the peer still sends for a moment, so that closing does not reset
//! the refusal away. Before, each kept a reader thread for seconds: 5,000
//! quick connects to a full server meant 1,842 threads.

use std::io::{self, Read};
use std::net::Shutdown;

use crate::socket::Sock;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::Outbox;
use imchat_core::ClientId;

use super::Server;

/// How long a refused socket is drained before it is closed anyway.
const DRAIN: Duration = Duration::from_secs(1);
/// Pause between rounds over the sockets being closed.
const ROUND: Duration = Duration::from_millis(10);
/// Refused sockets drained at once; past it the next ones are closed
/// straight after their refusal is written.
const MAX_DRAINING: usize = 4096;

/// One refused connection on its way out.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) id: ClientId,
    pub(super) stream: Arc<Sock>,
    pub(super) outbox: Arc<Outbox>,
    deadline: Instant,
    ended: bool,
}

impl Refused {
    pub(super) fn new(id: ClientId, stream: Arc<Sock>, outbox: Arc<Outbox>) -> Self {
        Refused {
            id,
            stream,
            outbox,
            deadline: Instant::now() + DRAIN,
            ended: false,
        }
    }

    /// Writes what is queued, ends the stream once it is written, then
    /// drains. True when the socket can be closed.
    fn step(&mut self, now: Instant) -> bool {
        let late = now >= self.deadline;
        if !self.ended {
            self.outbox.flush(&*self.stream);
            // Not before the refusal is in the socket: another thread (the
            // flusher, a writer) may still be writing it.
            if !self.outbox.is_drained() && !late {
                return false;
            }
            self.stream.end_writes();
            if self.stream.tcp().set_nonblocking(true).is_err() {
                return true;
            }
            self.ended = true;
        }
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match { self.stream.tcp() }.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return late,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        late
    }
}

impl Server {
    /// The closer thread: drains and closes refused connections until the
    /// server ends.
    pub(super) fn closer_loop(&self, rx: &Receiver<Refused>) {
        let mut live: Vec<Refused> = Vec::new();
        loop {
            if live.is_empty() {
                match rx.recv() {
                    Ok(r) => live.push(r),
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(mut r) if live.len() >= MAX_DRAINING => {
                        r.deadline = Instant::now();
                        self.close_now(r);
                    }
                    Ok(r) => live.push(r),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            let mut i = 0;
            while i < live.len() {
                if live[i].step(now) {
                    let done = live.swap_remove(i);
                    self.forget_refused(&done);
                } else {
                    i += 1;
                }
            }
            thread::sleep(ROUND);
        }
    }

    /// Writes the refusal and closes, without draining.
    fn close_now(&self, mut r: Refused) {
        r.step(r.deadline);
        self.forget_refused(&r);
    }

    fn forget_refused(&self, r: &Refused) {
        let _ = r.stream.tcp().shutdown(Shutdown::Both);
        self.lock().conns.remove(&r.id);
    }
}
