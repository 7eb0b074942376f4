//! Idle connections without a thread: a reader that has had nothing to
//! read for a while hands its socket to one poller thread and ends; when
//! the socket is readable again (a message, the peer hanging up, our own
//! shutdown), the poller starts a new reader thread for it.
//!
//! A reader thread's stack and read buffer were most of what an idle
//! joined connection cost (about 8 KiB of touched stack and 4 KiB or more
//! of buffers, against a few hundred bytes of connection state), so a
//! server holding 10,000 quiet clients held 10,000 threads. Everything else
//! about a connection stays as it was: the blocking reader is still the
//! model (it decodes, throttles and paces as before), writes still go
//! through the connection's [`Outbox`], and a parked connection is written
//! to like any other.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use imchat_core::blocking::Outbox;
use imchat_core::ClientId;
use log::warn;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::Server;
use crate::socket::Sock;

/// A connection whose reader thread ended while it was idle.
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) id: ClientId,
    pub(super) stream: Arc<Sock>,
    pub(super) outbox: Arc<Outbox>,
}

/// The connections parked, and the registry that watches their sockets.
#[derive(Debug)]
pub(super) struct Idle {
    registry: Registry,
    parked: Mutex<HashMap<u64, Parked>>,
}

impl Idle {
    /// Creates the poll instance; [`Idle::run`] then waits on it.
    pub(super) fn new() -> std::io::Result<(Idle, Poll)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok((
            Idle {
                registry,
                parked: Mutex::new(HashMap::new()),
            },
            poll,
        ))
    }

    /// Watches `conn`'s socket; its reader thread ends after this. A
    /// socket that is readable already (data came just now) is reported
    /// at once. Gives the connection back if it could not be watched (the
    /// caller keeps reading it instead).
    pub(super) fn park(&self, conn: Parked) -> Result<(), Parked> {
        let fd = conn.stream.tcp().as_raw_fd();
        let key = conn.id.0;
        let mut parked = self.lock();
        parked.insert(key, conn);
        // Under the lock: the poller cannot look the token up before the
        // connection is in the table.
        let watched = self.registry.register(
            &mut SourceFd(&fd),
            Token(usize::try_from(key).unwrap_or(usize::MAX)),
            Interest::READABLE,
        );
        if let Err(e) = watched {
            warn!("cannot watch an idle connection, its thread stays: {e}");
            return Err(parked.remove(&key).expect("inserted above"));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Parked>> {
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The poller thread: each parked socket that becomes readable (or
    /// hangs up) is unwatched and gets a reader thread again.
    pub(super) fn run(server: &Arc<Server>, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                server.fatal(format!("waiting on idle connections failed: {e}"));
                return;
            }
            for event in &events {
                let key = event.token().0 as u64;
                let Some(conn) = server.idle.lock().remove(&key) else {
                    continue;
                };
                let fd = conn.stream.tcp().as_raw_fd();
                // Unwatched before its new reader runs, so it is never
                // reported to two owners; an error here leaves only a
                // registration the closed socket drops.
                let _ = server.idle.registry.deregister(&mut SourceFd(&fd));
                server.start_reader(conn);
            }
        }
    }
}
