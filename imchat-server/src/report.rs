//! What the server prints and logs about its connections, written by one
//! thread so that nothing holding the hub's lock ever waits on stdout or on
//! the log, and the lines keep the order in which things happened.
//!
//! The thread writes in batches: everything that arrived since its last
//! batch goes out with one write to stdout and one to the log file, and it
//! then waits [`DOZE`] for the next notes to gather. A busy server logs a
//! line per routed message; written one by one, each cost a system call
//! and a wake-up of this thread.

use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use log::Level;

/// How long the thread waits after a batch, so that the next one gathers.
const DOZE: Duration = Duration::from_millis(2);
/// Most notes written in one batch.
const MAX_BATCH: usize = 4096;

enum Note {
    /// A line for stdout (also logged at info level).
    Say(String),
    /// A line for the log only.
    Log(Level, String),
    /// Answer on the channel once everything before it is written.
    Flush(Sender<()>),
}

/// The sending side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Reporter(Sender<Note>);

impl Reporter {
    /// Prints `line` on stdout and logs it.
    pub fn say(&self, line: String) {
        let _ = self.0.send(Note::Say(line));
    }

    /// Logs `line` at `level`.
    pub fn log(&self, level: Level, line: String) {
        let _ = self.0.send(Note::Log(level, line));
    }

    /// Waits (at most `timeout`) until everything sent so far is written.
    pub fn flush(&self, timeout: Duration) {
        let (tx, rx) = mpsc::channel();
        if self.0.send(Note::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
        log::logger().flush();
    }
}

/// Starts the writing thread. `on_panic` is called if it dies.
pub fn start(on_panic: impl FnOnce() + Send + 'static) -> io::Result<Reporter> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("report".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            if panic::catch_unwind(AssertUnwindSafe(|| write_notes(rx))).is_err() {
                on_panic();
            }
        })?;
    Ok(Reporter(tx))
}

fn write_notes(rx: Receiver<Note>) {
    let mut stdout = Vec::new();
    let mut flushed = Vec::new();
    while let Ok(first) = rx.recv() {
        crate::logging::batch(|| {
            let mut next = Some(first);
            let mut count = 0;
            while let Some(note) = next {
                match note {
                    Note::Say(line) => {
                        stdout.extend_from_slice(line.as_bytes());
                        stdout.push(b'\n');
                        log::info!("{line}");
                    }
                    Note::Log(level, line) => log::log!(level, "{line}"),
                    Note::Flush(done) => flushed.push(done),
                }
                count += 1;
                next = if count < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
        });
        if !stdout.is_empty() {
            print_bytes(&stdout);
            stdout.clear();
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        thread::sleep(DOZE);
    }
}

/// Lines on stdout, flushed; a closed stdout is ignored (the log still
/// has everything).
fn print_bytes(lines: &[u8]) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(lines);
    let _ = out.flush();
}

/// One line on stdout, flushed; a closed stdout is ignored (the log still
/// has everything).
pub fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
