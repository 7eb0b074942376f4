//! Streaming a shared file to a client: one thread per download does what
//! the core's [`DownloadSender`] asks (read these bytes of the file, wait
//! for an ack) and moves the chunk frames to the client's queue or socket,
//! never more than a bounded amount ahead of the socket. Every decision
//! (window, acks, resume, a changed file, the end) is the sender's.

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use imchat_core::blocking::{Frame, Outbox, PushError};
use imchat_core::{
    inert, CancelCode, ClientId, DownloadError, DownloadOutcome, DownloadSender, Encode, ReadKind,
    ReadRequest, TransferId,
};
use log::Level;

use super::{spawn, DownloadJob, Server, Share, Work};
use crate::files::io_reason;
use crate::socket::write_file_frame;

/// Stack of a download thread (its read buffer is on the heap).
const DOWNLOAD_STACK: usize = 256 * 1024;
/// File data queued for one client before the download waits for the socket.
const READ_AHEAD: usize = 1024 * 1024;
/// How often a waiting download looks at its cancel flag and its queue.
const WAIT_STEP: Duration = Duration::from_millis(500);

/// What other threads tell a running download: stop, or the client's
/// acknowledgements, which the download hands to its sender.
#[derive(Debug, Default)]
pub(super) struct Control {
    stop: AtomicBool,
    /// The highest ack not handed to the sender yet. Keeping only the
    /// highest loses nothing: the sender ignores lower ones.
    ack: Mutex<Option<u64>>,
    moved: Condvar,
}

impl Control {
    /// Stops the download (it notices within one [`WAIT_STEP`] at most).
    pub(super) fn cancel(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.moved.notify_all();
    }

    fn is_cancelled(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The client acknowledged storing the file up to `offset`.
    pub(super) fn ack(&self, offset: u64) {
        let mut ack = self
            .ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ack.is_none_or(|a| offset > a) {
            *ack = Some(offset);
            drop(ack);
            self.moved.notify_all();
        }
    }

    /// The ack that arrived since the last call, if any.
    fn take_ack(&self) -> Option<u64> {
        self.ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Waits (at most `timeout`) for an ack or a cancel.
    fn wait_ack(&self, timeout: Duration) {
        let ack = self
            .ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _waited = self
            .moved
            .wait_timeout_while(ack, timeout, |a| a.is_none() && !self.is_cancelled())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

/// How streaming a file ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Streamed {
    /// Every byte and the end marker are queued.
    Done { sent: u64 },
    /// Cancelled, or the connection closed.
    Stopped { sent: u64 },
}

/// Why streaming a file failed.
#[derive(Debug)]
pub(super) enum StreamError {
    /// The file is not the one announced.
    Changed(DownloadError),
    /// Reading it failed.
    Io(io::Error),
}

impl Server {
    /// Starts the thread for a download; if it cannot start, the download is refused.
    pub(super) fn start_download(self: &Arc<Self>, job: DownloadJob, work: &mut Work) {
        let (client, id) = (job.client, job.id);
        let cancel = job.cancel.clone();
        let server = self.clone();
        let started = spawn(
            format!("send-{client}-{}", id.0),
            DOWNLOAD_STACK,
            Share::Any,
            move || server.send_file(job),
        );
        if let Err(e) = started {
            self.report.log(
                Level::Warn,
                format!("cannot start a thread for a download of {client}: {e}"),
            );
            let mut core = self.lock();
            core.hub.refuse_download(
                client,
                id,
                CancelCode::IO,
                "the server is too busy to send files right now",
            );
            self.dispatch(&mut core, work);
            forget(&mut core, client, id, &cancel);
        }
    }

    /// A download thread: open, announce, stream, end.
    fn send_file(self: &Arc<Self>, job: DownloadJob) {
        let (client, id, offset) = (job.client, job.id, job.offset);
        let name = job.name;
        let (who, cancel, outbox, socket) = (job.who, job.cancel, job.outbox, job.socket);
        let shown = inert(name.as_str()).into_owned();
        // Through the reporter, as the hub's lines about this client are:
        // logged directly, a refusal made at once came out before the
        // request it answers, and even before the client's join.
        let note = |level: Level, line: String| self.report.log(level, line);
        let refuse = |code: CancelCode, reason: String| {
            note(
                Level::Info,
                format!("not sending '{shown}' to {who}: {}", inert(&reason)),
            );
            self.with_hub(|hub| hub.refuse_download(client, id, code, reason));
        };
        let (mut file, size) = match self.config.shared.open_file(&name) {
            Ok(opened) => opened,
            Err(refusal) => {
                if refusal.searched > 0 {
                    self.with_hub(|hub| hub.charge_folder_search(client, refusal.searched));
                }
                refuse(refusal.code, refusal.reason);
                self.forget_download(client, id, &cancel);
                return;
            }
        };
        // Written to in place while it goes out (same size): the end
        // check fails it rather than vouch for a mix of two versions.
        // Noted as soon as it is open, with its size.
        let opened = imchat_core::SentFile::new(id, size, modified(&file));
        let accepted = self.with_hub(|hub| hub.accept_download(client, id, name, size, offset));
        let Some(offset) = accepted else {
            // Cancelled, or the client left, before the file was open.
            note(
                Level::Info,
                format!("download of '{shown}' by {who} cancelled before it started"),
            );
            self.forget_download(client, id, &cancel);
            return;
        };
        let mut sender = match DownloadSender::new(id, size, offset, self.limits()) {
            Ok(sender) => sender,
            // The hub already starts a download past the end at 0.
            Err(e) => {
                refuse(CancelCode::IO, e.to_string());
                self.forget_download(client, id, &cancel);
                return;
            }
        };
        let start = Instant::now();
        // Chunks go to the socket from this thread while it is free: no
        // writer thread wake-up per chunk. And when nothing else waits to
        // go out, a chunk's data goes from the file by reference
        // (`sendfile`), not copied through its frame.
        let sendfile = file.try_clone().ok();
        let rewritten = || {
            sendfile
                .as_ref()
                .is_some_and(|f| opened.is_rewritten(modified(f)))
        };
        let send = |frame: Frame, data: Option<FileData>| {
            // Over TLS every byte is encrypted: the chunks go through the
            // queue (bounded by the read-ahead), never by `sendfile`.
            if let (Some(data), Some(file), Some(tcp)) = (data, &sendfile, socket.plain()) {
                if let Some(direct) = outbox.write_direct() {
                    return write_file_frame(direct, tcp, file, &frame, data.head, data.at);
                }
            }
            outbox.push_bulk_through(frame, &*socket)
        };
        // Who sent a bad ack, when the log says so: "download #1" alone
        // names nobody, every client's first download being #1.
        let whose = format!("download of '{shown}' by {who}");
        match stream_file(
            &mut file,
            &mut sender,
            &|line| note(Level::Warn, format!("{whose}: {line}")),
            &cancel,
            &outbox,
            send,
            rewritten,
        ) {
            Ok(Streamed::Done { sent }) => {
                self.with_hub(|hub| hub.download_finished(client, id));
                let resumed = if offset > 0 {
                    format!(", resumed at byte {offset}")
                } else {
                    String::new()
                };
                note(
                    Level::Info,
                    format!(
                        "sent '{shown}' to {who}: {sent} bytes in {:.2} s{resumed}",
                        start.elapsed().as_secs_f64()
                    ),
                );
            }
            Ok(Streamed::Stopped { sent }) => {
                self.with_hub(|hub| hub.download_finished(client, id));
                note(
                    Level::Info,
                    format!("download of '{shown}' by {who} stopped after {sent} bytes"),
                );
            }
            Err(StreamError::Changed(e)) => refuse(e.cancel_code(), e.to_string()),
            Err(StreamError::Io(e)) => {
                note(
                    Level::Warn,
                    format!("reading '{shown}' for {who} failed: {e}"),
                );
                refuse(
                    CancelCode::IO,
                    format!("cannot read '{shown}': {}", io_reason(&e)),
                );
            }
        }
        self.forget_download(client, id, &cancel);
    }

    fn forget_download(&self, client: ClientId, id: TransferId, cancel: &Arc<Control>) {
        forget(&mut self.lock(), client, id, cancel);
    }
}

/// Drops the control of a download that is over, unless the id was
/// already reused by a newer download.
fn forget(core: &mut super::Core, client: ClientId, id: TransferId, cancel: &Arc<Control>) {
    if let Some(conn) = core.conns.get_mut(&client) {
        if conn
            .downloads
            .get(&id)
            .is_some_and(|flag| Arc::ptr_eq(flag, cancel))
        {
            conn.downloads.remove(&id);
        }
    }
}

/// When `file` was last written to, if the system says.
fn modified(file: &File) -> Option<SystemTime> {
    file.metadata().and_then(|m| m.modified()).ok()
}

/// `read`, retried when interrupted.
fn read_some(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Where a chunk frame's data is in the file: it starts `head` bytes into
/// the frame and at byte `at` of the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileData {
    pub(super) at: u64,
    pub(super) head: usize,
}

/// Does what `sender` asks of `file` (read from byte 0, in order), and
/// queues the frames on `outbox`'s bulk lane with `send` (which may also
/// write them out; it is told where a chunk's data is in the file), until
/// the download ends. Acks and a cancel come through `control`. At most
/// [`READ_AHEAD`] bytes wait in the queue at a time. `warn` logs a line
/// about the download (a bad ack), naming it.
pub(super) fn stream_file(
    file: &mut impl Read,
    sender: &mut DownloadSender,
    warn: &dyn Fn(String),
    control: &Control,
    outbox: &Outbox,
    mut send: impl FnMut(Frame, Option<FileData>) -> Result<(), PushError>,
    rewritten: impl Fn() -> bool,
) -> Result<Streamed, StreamError> {
    let mut frames = FramePool::default();
    let mut scratch = Vec::new();
    let mut warned = false;
    loop {
        if control.is_cancelled() || outbox.is_closed() {
            sender.cancel();
        }
        if let Some(offset) = control.take_ack() {
            // Said once per download: a client repeating it must not fill
            // the console and rotate the log away.
            if let Err(e) = sender.handle_ack(offset) {
                if !warned {
                    warned = true;
                    warn(format!(
                        "{e} (further such acks of this download are not logged)"
                    ));
                }
            }
        }
        while let Some(msg) = sender.poll_transmit() {
            if send(Frame::from(msg.to_frame()), None).is_err() {
                return Ok(Streamed::Stopped {
                    sent: sender.sent(),
                });
            }
        }
        match sender.outcome() {
            Some(DownloadOutcome::Done { sent }) => return Ok(Streamed::Done { sent }),
            Some(DownloadOutcome::Cancelled { sent }) => return Ok(Streamed::Stopped { sent }),
            Some(DownloadOutcome::Failed(e)) => return Err(StreamError::Changed(e)),
            None => {}
        }
        match sender.poll_read() {
            None => control.wait_ack(WAIT_STEP),
            Some(ReadRequest {
                offset,
                kind: ReadKind::Chunk,
                ..
            }) => {
                if !outbox.wait_bulk_room(READ_AHEAD, WAIT_STEP) {
                    continue;
                }
                // The file is read straight into the frame that goes out.
                let mut buf = frames.take();
                let n = sender
                    .fill_chunk_frame(&mut buf, |room| read_some(file, room))
                    .map_err(StreamError::Io)?;
                if n == 0 {
                    continue;
                }
                let frame = Frame::new(buf);
                let data = FileData {
                    at: offset,
                    head: frame.len() - n,
                };
                if send(frame.clone(), Some(data)).is_err() {
                    sender.cancel();
                    continue;
                }
                frames.keep(frame);
            }
            Some(read) if read.kind == ReadKind::EndCheck && rewritten() => {
                sender.file_rewritten();
            }
            Some(read) => {
                scratch.resize(read.len, 0);
                let n = read_some(file, &mut scratch).map_err(StreamError::Io)?;
                sender.handle_read(&scratch[..n]);
            }
        }
    }
}

/// Frames a download has queued, reused once the writer has sent them and
/// let go: no allocation, and no page faults on fresh memory, per chunk.
#[derive(Default)]
struct FramePool {
    frames: Vec<Frame>,
}

/// Frames kept for reuse: what the read-ahead and the window can hold at
/// once, and one more being written.
const POOL_FRAMES: usize = 8;

impl FramePool {
    /// The buffer of a frame that was sent if there is one, else a new one.
    fn take(&mut self) -> Vec<u8> {
        let sent = self.frames.iter().position(|f| Arc::strong_count(f) == 1);
        sent.and_then(|i| Arc::try_unwrap(self.frames.swap_remove(i)).ok())
            .unwrap_or_default()
    }

    /// Keeps a frame that was just queued, for reuse once it is sent.
    fn keep(&mut self, frame: Frame) {
        if self.frames.len() < POOL_FRAMES {
            self.frames.push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imchat_core::{Decoder, FileEnd, Incoming, Limits, ResumeState, ServerMessage};
    use std::io::Cursor;

    const ID: TransferId = TransferId(3);

    /// Everything the writer would send, decoded.
    fn drain(outbox: &Outbox) -> Vec<ServerMessage> {
        outbox.close();
        let mut bytes = Vec::new();
        outbox.run_writer(&mut bytes).unwrap();
        let mut d = Decoder::<ServerMessage>::new(1 << 20);
        d.feed(&bytes);
        let mut msgs = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            msgs.push(m);
        }
        msgs
    }

    /// Streams `bytes` as a file announced at `size` bytes, queueing every
    /// frame on `outbox` for its writer.
    fn queue(
        bytes: Vec<u8>,
        size: u64,
        offset: u64,
        chunk: usize,
        control: &Control,
        outbox: &Outbox,
    ) -> Result<Streamed, StreamError> {
        let push = |f, _| outbox.push(f, true);
        let limits = Limits {
            chunk_size: chunk,
            ..Limits::default()
        };
        let mut sender = DownloadSender::new(ID, size, offset, &limits).unwrap();
        stream_file(
            &mut Cursor::new(bytes),
            &mut sender,
            &|_| {},
            control,
            outbox,
            push,
            || false,
        )
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_frame_buffer_is_reused_once_the_writer_let_go_of_it() {
        let mut pool = FramePool::default();
        let first = Frame::new(pool.take());
        assert_eq!(first.capacity(), 0, "an empty pool gives a new buffer");
        let mut buf = vec![0u8; 1000];
        buf[0] = 9;
        let queued = Frame::new(buf);
        let at = queued.as_ptr();
        let writer_copy = queued.clone();
        pool.keep(queued);
        // Still held by the writer: not handed out again.
        assert_eq!(pool.take().capacity(), 0);
        drop(writer_copy);
        let again = pool.take();
        assert_eq!(again.as_ptr(), at, "the sent frame's buffer comes back");
        assert_eq!(
            again.len(),
            1000,
            "with its length, so it is not zeroed again"
        );
    }

    #[test]
    fn a_whole_file_goes_out_in_checked_chunks_and_an_end() {
        let bytes = data(10_000);
        let outbox = Outbox::new(1 << 20);
        let cancel = Control::default();
        let got = queue(bytes.clone(), 10_000, 0, 4096, &cancel, &outbox).unwrap();
        assert_eq!(got, Streamed::Done { sent: 10_000 });
        let msgs = drain(&outbox);
        assert_eq!(msgs.len(), 4, "3 chunks and an end");
        let mut incoming = Incoming::new(ID, 10_000);
        for m in &msgs[..3] {
            let ServerMessage::Chunk(c) = m else {
                panic!("not a chunk: {m:?}")
            };
            assert!(c.data.len() <= 4096);
            incoming.accept(c).unwrap();
        }
        let ServerMessage::End(end) = &msgs[3] else {
            panic!("not an end")
        };
        incoming.finish(end).unwrap();
    }

    #[test]
    fn a_resumed_download_sends_the_rest_with_the_whole_file_checksum() {
        let bytes = data(1000);
        let outbox = Outbox::new(1 << 20);
        let cancel = Control::default();
        let got = queue(bytes.clone(), 1000, 600, 256, &cancel, &outbox);
        assert_eq!(got.unwrap(), Streamed::Done { sent: 400 });
        let msgs = drain(&outbox);
        let ServerMessage::Chunk(first) = &msgs[0] else {
            panic!("not a chunk")
        };
        assert_eq!(first.offset, 600);
        let last = msgs.last().unwrap();
        assert_eq!(
            *last,
            ServerMessage::End(FileEnd {
                id: ID,
                crc: ResumeState::from_bytes(&bytes).crc()
            })
        );
    }

    #[test]
    fn a_file_shorter_or_longer_than_announced_fails() {
        let cancel = Control::default();
        let outbox = Outbox::new(1 << 20);
        let short = queue(data(50), 100, 0, 30, &cancel, &outbox);
        assert!(matches!(
            short,
            Err(StreamError::Changed(DownloadError::Shrank { at: 50, .. }))
        ));
        let outbox = Outbox::new(1 << 20);
        let long = queue(data(150), 100, 0, 30, &cancel, &outbox);
        assert!(matches!(
            long,
            Err(StreamError::Changed(DownloadError::Grew { .. }))
        ));
        assert!(
            !drain(&outbox)
                .iter()
                .any(|m| matches!(m, ServerMessage::End(_))),
            "no end marker for a changed file"
        );
    }

    #[test]
    fn a_file_written_to_while_sent_fails_at_its_end() {
        let cancel = Control::default();
        let outbox = Outbox::new(1 << 20);
        let limits = Limits {
            chunk_size: 30,
            ..Limits::default()
        };
        let mut sender = DownloadSender::new(ID, 100, 0, &limits).unwrap();
        let push = |f, _| outbox.push(f, true);
        let got = stream_file(
            &mut Cursor::new(data(100)),
            &mut sender,
            &|_| {},
            &cancel,
            &outbox,
            push,
            || true,
        );
        assert!(
            matches!(
                got,
                Err(StreamError::Changed(DownloadError::Rewritten { .. }))
            ),
            "{got:?}"
        );
        assert!(
            !drain(&outbox)
                .iter()
                .any(|m| matches!(m, ServerMessage::End(_))),
            "no end marker for a rewritten file"
        );
    }

    #[test]
    fn a_cancelled_download_or_a_closed_queue_stops_quietly() {
        let cancel = Control::default();
        cancel.cancel();
        let outbox = Outbox::new(1 << 20);
        let got = queue(data(100), 100, 0, 30, &cancel, &outbox);
        assert_eq!(got.unwrap(), Streamed::Stopped { sent: 0 });
        let cancel = Control::default();
        outbox.close();
        let got = queue(data(100), 100, 0, 30, &cancel, &outbox);
        assert_eq!(got.unwrap(), Streamed::Stopped { sent: 0 });
    }

    #[test]
    fn an_empty_file_is_just_an_end() {
        let cancel = Control::default();
        let outbox = Outbox::new(1 << 20);
        let got = queue(Vec::new(), 0, 0, 30, &cancel, &outbox);
        assert_eq!(got.unwrap(), Streamed::Done { sent: 0 });
        assert_eq!(drain(&outbox).len(), 1);
    }

    #[test]
    fn acks_reach_the_sender_and_only_the_highest_is_kept() {
        let control = Control::default();
        assert_eq!(control.take_ack(), None);
        control.ack(300);
        control.ack(100);
        assert_eq!(control.take_ack(), Some(300));
        assert_eq!(control.take_ack(), None, "each ack is handed over once");
        // A download stopped at its window goes on once the ack arrives:
        // the window itself is tested in the core; here, that acks get
        // from the connection's thread to the download's.
        let window = imchat_core::DOWNLOAD_WINDOW;
        let outbox = Outbox::new(8 << 20);
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let (outbox, sink) = (outbox.clone(), Counting(written.clone()));
            std::thread::spawn(move || outbox.run_writer(sink))
        };
        let control = Arc::new(Control::default());
        let (c2, o2) = (control.clone(), outbox.clone());
        let size = window + 1000;
        let t = std::thread::spawn(move || queue(data(size as usize), size, 0, 1024, &c2, &o2));
        // The window's 1024 chunks, each with its frame's header.
        let overhead = (imchat_core::CHUNK_FRAME_OVERHEAD + imchat_core::HEADER_LEN) as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while written.load(Ordering::Relaxed) < window + window / 1024 * overhead {
            assert!(Instant::now() < deadline, "stuck at {written:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        control.ack(window);
        assert_eq!(t.join().unwrap().unwrap(), Streamed::Done { sent: size });
        outbox.close();
        writer.join().unwrap().unwrap();
    }

    /// A socket that takes everything and counts the bytes.
    struct Counting(Arc<std::sync::atomic::AtomicU64>);
    impl std::io::Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_queue_never_holds_much_more_than_the_read_ahead() {
        // A 4 MiB file into a queue nobody drains: the window stops the
        // stream at 1 MiB; once that is acknowledged, the read-ahead bound
        // stops it, until it is cancelled from another thread.
        let bytes = vec![7u8; 4 << 20];
        let outbox = Outbox::new(8 << 20);
        let cancel = Arc::new(Control::default());
        let (c2, o2) = (cancel.clone(), outbox.clone());
        let t = std::thread::spawn(move || queue(bytes, 4 << 20, 0, 256 * 1024, &c2, &o2));
        let deadline = Instant::now() + Duration::from_secs(10);
        while outbox.queued() < READ_AHEAD {
            assert!(Instant::now() < deadline, "stuck at {}", outbox.queued());
            std::thread::sleep(Duration::from_millis(5));
        }
        cancel.ack(imchat_core::DOWNLOAD_WINDOW);
        std::thread::sleep(Duration::from_millis(300));
        let queued = outbox.queued();
        cancel.cancel();
        let got = t.join().unwrap().unwrap();
        assert!(matches!(got, Streamed::Stopped { .. }));
        assert!(queued < READ_AHEAD + 256 * 1024 + 64, "{queued}");
    }
}
