//! The sending side of a download (a shared file streamed to a client) as a
//! state machine with no IO: [`DownloadSender`], whose docs describe the flow.

use std::collections::VecDeque;

use thiserror::Error;

use crate::error::{TransferError, UsageError};
use crate::limits::{Limits, DOWNLOAD_WINDOW};
use crate::message::{CancelCode, ServerMessage, TransferId};
use crate::transfer::Outgoing;

/// Why a download failed while being sent: the file is not the one
/// announced. The connection lives; tell the client with a `Cancel` of
/// [`cancel_code`](Self::cancel_code) and this error's text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The file ended before its announced size.
    #[error(
        "file changed while being sent: it ends at byte {at}, not at its announced {size} bytes"
    )]
    Shrank {
        /// The transfer.
        id: TransferId,
        /// Where the file ended.
        at: u64,
        /// The size announced.
        size: u64,
    },
    /// The file was written to while being sent, its size unchanged (its
    /// modification time moved): what went out may mix old and new bytes.
    #[error("file changed while being sent: it was written to")]
    Rewritten {
        /// The transfer.
        id: TransferId,
    },
    /// The file has bytes after its announced size.
    #[error("file changed while being sent: it is longer than its announced {size} bytes")]
    Grew {
        /// The transfer.
        id: TransferId,
        /// The size announced.
        size: u64,
    },
}

impl DownloadError {
    /// The code of the `Cancel` that tells the client.
    #[must_use]
    pub fn cancel_code(&self) -> CancelCode {
        CancelCode::IO
    }
}

/// The file a sender streams (the server for a download, a client for its
/// push), as it was when opened: the one rule both sides check before
/// their `End`, so that no `End` vouches for a file that changed while it
/// was being sent. Its length must still be the announced size, and its
/// modification time must not have moved (a write in place, the length
/// unchanged, would mix old and new bytes). Holds values only: the caller
/// reads the file's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentFile {
    id: TransferId,
    size: u64,
    modified: Option<std::time::SystemTime>,
}

impl SentFile {
    /// Transfer `id` of a file of `size` bytes last modified at `modified`
    /// (`None` when the system does not say) when it was opened.
    #[must_use]
    pub fn new(id: TransferId, size: u64, modified: Option<std::time::SystemTime>) -> Self {
        SentFile { id, size, modified }
    }

    /// The announced size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when the file's modification time is now `modified`, not what
    /// it was when opened: it was written to.
    #[must_use]
    pub fn is_rewritten(&self, modified: Option<std::time::SystemTime>) -> bool {
        modified != self.modified
    }

    /// The check before the `End`, on the file's length and modification
    /// time now.
    ///
    /// # Errors
    ///
    /// [`DownloadError::Shrank`] or [`DownloadError::Grew`] when its length
    /// is not the announced size, [`DownloadError::Rewritten`] when its
    /// modification time moved.
    pub fn check_before_end(
        &self,
        len: u64,
        modified: Option<std::time::SystemTime>,
    ) -> Result<(), DownloadError> {
        let id = self.id;
        if len < self.size {
            return Err(DownloadError::Shrank {
                id,
                at: len,
                size: self.size,
            });
        }
        if len > self.size {
            return Err(DownloadError::Grew {
                id,
                size: self.size,
            });
        }
        if self.is_rewritten(modified) {
            return Err(DownloadError::Rewritten { id });
        }
        Ok(())
    }
}

/// An `Ack` that breaks the protocol. The download goes on as if it had
/// not arrived; the caller may log it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AckError {
    /// The client acknowledged bytes it was never sent.
    #[error("download {id}: ack of byte {offset}, but only {sent} bytes were sent")]
    BeyondSent {
        /// The transfer.
        id: TransferId,
        /// The offset acknowledged.
        offset: u64,
        /// The end of what was handed out (the resumed prefix included).
        sent: u64,
    },
}

/// What a read asked for by [`DownloadSender::poll_read`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Bytes the client already holds (a resumed download): they go into
    /// the whole-file checksum but are not sent. Answer with
    /// [`handle_read`](DownloadSender::handle_read).
    Prefix,
    /// The data of the next chunk. Answer with
    /// [`fill_chunk_frame`](DownloadSender::fill_chunk_frame) (the file is
    /// read straight into the frame that goes out) or
    /// [`handle_read`](DownloadSender::handle_read).
    Chunk,
    /// One byte at the announced size, to check the file did not grow.
    /// Answer with [`handle_read`](DownloadSender::handle_read): no bytes
    /// (end of file) is what is expected.
    EndCheck,
}

/// A read the sender needs: `len` bytes of the file at byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// Where in the file.
    pub offset: u64,
    /// How many bytes at most.
    pub len: usize,
    /// What they are for, and so which call answers.
    pub kind: ReadKind,
}

/// How a download ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// Every byte and the `End` were handed out.
    Done {
        /// Bytes of file data sent (the resumed prefix not counted).
        sent: u64,
    },
    /// The file changed; tell the client (see [`DownloadError`]).
    Failed(DownloadError),
    /// [`cancel`](DownloadSender::cancel) was called.
    Cancelled {
        /// Bytes of file data handed out before.
        sent: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the prefix the client holds, into the checksum.
    Hashing,
    /// Handing out chunks, as the window allows.
    Sending,
    /// Every byte went: checking that the file ends there.
    CheckingEnd,
    /// The `End` is queued or was handed out.
    Ended,
    Failed(DownloadError),
    Cancelled,
}

/// The sender of one download: it decides what to read next, what may be
/// sent (the window), and how the download ends. It does no IO.
///
/// # The flow
///
/// ```text
///   client                                    server (DownloadSender)
///   Download{id, name, offset}  ──▶  FileStart{…, offset}  (the Hub sends it)
///                                     prefix reads [0, offset)   hashed, not sent
///                               ◀──  Chunk{offset}, Chunk, …    up to the window
///   Ack{id, stored}             ──▶  the window moves on
///                               ◀──  Chunk, …
///                                     end check: nothing after `size`
///                               ◀──  End{crc of the whole file, from byte 0}
/// ```
///
/// - **Resume.** A download that starts at `offset > 0` still ends with the
///   CRC32 of the whole file, so the sender first reads the bytes
///   `0..offset` (in pieces of at most the chunk size) and folds them into
///   the checksum without sending them. An offset past the end of the file
///   is refused when the sender is made ([`TransferError::BadOffset`]); an
///   offset exactly at the end sends no chunk, only the `End`.
/// - **Window.** A chunk is asked for only if it ends at most
///   [`DOWNLOAD_WINDOW`] bytes past the highest offset the client
///   acknowledged (a resumed download starts with its offset acknowledged).
///   A client that never acknowledges gets one window and then nothing,
///   until it does.
/// - **Acks.** [`Self::handle_ack`] moves the window to the
///   highest offset acknowledged. An ack at or below one already seen
///   (a duplicate, or one overtaken by a later ack) is ignored: it carries
///   nothing new. An ack beyond the bytes handed out so far is refused with
///   [`AckError::BeyondSent`] and ignored (the window does not move; the
///   download goes on): a client cannot open the window by acknowledging
///   data it never got.
/// - **The file changing.** The size announced in `FileStart` is the size
///   when the file was opened. A read that returns no bytes before that
///   size means the file shrank; a byte found after it, by a one-byte read
///   at `size` once every chunk went, means it grew. Either fails the
///   download with a [`DownloadError`]; tell the client with a `Cancel`
///   carrying [`DownloadError::cancel_code`] and the error's text. A read
///   that returns fewer bytes than asked, but some, is progress: the next
///   read asks for the rest.
/// - **End.** Once every byte went and the end check found nothing more,
///   [`Self::poll_transmit`] hands out the `End` with the
///   whole-file CRC32, and [`Self::outcome`] says the download is
///   done.
///
/// # Driving it
///
/// ```text
///   loop:
///     handle_ack(offset)      for each Ack that arrived
///     poll_transmit()         send what it gives (the End; chunks made by handle_read)
///     outcome()               Some: stop
///     poll_read()             None: wait for an Ack (or a cancel)
///       Prefix / EndCheck  →  read that many bytes at that offset, handle_read(bytes)
///       Chunk              →  fill_chunk_frame(frame, read into it), send the frame
///                             (or read the bytes and handle_read(bytes): the chunk
///                             comes out of poll_transmit)
/// ```
///
/// The reads are asked for in file order, each starting where the previous
/// one ended, so a plain sequential reader works. There is no timer: a
/// download waiting for an ack waits as long as the connection lives (the
/// keepalive ends a dead one).
#[derive(Debug, Clone)]
pub struct DownloadSender {
    out: Outgoing,
    /// Where the data sent starts (the resume offset).
    start: u64,
    /// The highest offset the client acknowledged.
    acked: u64,
    chunk: usize,
    state: State,
    transmits: VecDeque<ServerMessage>,
}

impl DownloadSender {
    /// The sender of download `id` of a file of `size` bytes (its size when
    /// opened, as announced in `FileStart`), from byte `offset` on, in
    /// chunks of at most `limits.chunk_size` bytes (and never more than the
    /// window). An `offset` past `size` is refused.
    ///
    /// # Errors
    ///
    /// [`TransferError::BadOffset`] if `offset` is past `size` (the
    /// client's partial copy is longer than the file, or the file shrank
    /// since it was listed): refuse the download, or start it from byte 0.
    pub fn new(
        id: TransferId,
        size: u64,
        offset: u64,
        limits: &Limits,
    ) -> Result<Self, TransferError> {
        if offset > size {
            return Err(TransferError::BadOffset { offset, size });
        }
        let window = usize::try_from(DOWNLOAD_WINDOW).unwrap_or(usize::MAX);
        let mut sender = DownloadSender {
            out: Outgoing::new(id, size),
            start: offset,
            acked: offset,
            chunk: limits.chunk_size.clamp(1, window),
            state: State::Hashing,
            transmits: VecDeque::new(),
        };
        sender.settle();
        Ok(sender)
    }

    /// Moves on from a phase that has nothing left to do.
    fn settle(&mut self) {
        if self.state == State::Hashing && self.out.offset() == self.start {
            self.state = State::Sending;
        }
        if self.state == State::Sending && self.out.remaining() == 0 {
            self.state = State::CheckingEnd;
        }
    }

    /// The transfer id.
    #[must_use]
    pub fn id(&self) -> TransferId {
        self.out.id()
    }

    /// The announced size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.out.size()
    }

    /// Where the data sent starts (the resume offset).
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Bytes of file data handed out so far (the resumed prefix not counted).
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.out.offset().saturating_sub(self.start)
    }

    /// The highest offset the client acknowledged (from byte 0).
    #[must_use]
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes handed out and not acknowledged yet: at most [`DOWNLOAD_WINDOW`].
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.sent_to().saturating_sub(self.acked)
    }

    /// The end of what was handed out, from byte 0 (the prefix counts as held).
    fn sent_to(&self) -> u64 {
        self.out.offset().max(self.start)
    }

    /// True while the next chunk waits for an ack: there are bytes left,
    /// but they do not fit in the window.
    #[must_use]
    pub fn is_window_full(&self) -> bool {
        self.state == State::Sending && self.chunk_request().is_none()
    }

    fn chunk_request(&self) -> Option<ReadRequest> {
        let offset = self.out.offset();
        let len = usize::try_from(self.out.remaining()).map_or(self.chunk, |r| r.min(self.chunk));
        let end = offset + len as u64;
        (end <= self.acked.saturating_add(DOWNLOAD_WINDOW)).then_some(ReadRequest {
            offset,
            len,
            kind: ReadKind::Chunk,
        })
    }

    /// The read to do next, or `None` when there is none now: the window is
    /// full (wait for an ack), or the download is over (see
    /// [`outcome`](Self::outcome)). It asks for the same read until the
    /// read is answered.
    #[must_use]
    pub fn poll_read(&self) -> Option<ReadRequest> {
        match self.state {
            State::Hashing => {
                let offset = self.out.offset();
                let left = self.start - offset;
                let len = usize::try_from(left).map_or(self.chunk, |l| l.min(self.chunk));
                Some(ReadRequest {
                    offset,
                    len,
                    kind: ReadKind::Prefix,
                })
            }
            State::Sending => self.chunk_request(),
            State::CheckingEnd => Some(ReadRequest {
                offset: self.out.size(),
                len: 1,
                kind: ReadKind::EndCheck,
            }),
            State::Ended | State::Failed(_) | State::Cancelled => None,
        }
    }

    /// The bytes read for the request [`poll_read`](Self::poll_read) gave
    /// (fewer than asked is fine, bytes beyond it are not looked at). No
    /// bytes means the file ended there. For a chunk, the chunk message
    /// comes out of [`poll_transmit`](Self::poll_transmit). Ignored when no
    /// read is asked for.
    pub fn handle_read(&mut self, data: &[u8]) {
        let Some(req) = self.poll_read() else {
            return;
        };
        let data = &data[..data.len().min(req.len)];
        match req.kind {
            ReadKind::EndCheck => {
                if data.is_empty() {
                    if let Some(end) = self.out.finish() {
                        self.transmits.push_back(ServerMessage::End(end));
                    }
                    self.state = State::Ended;
                } else {
                    self.fail_grew();
                }
                return;
            }
            _ if data.is_empty() => return self.fail_shrank(),
            ReadKind::Prefix => {
                if self.out.skip(data).is_err() {
                    return self.fail_grew();
                }
            }
            ReadKind::Chunk => match self.out.next_chunk(data.to_vec()) {
                Ok(chunk) => self.transmits.push_back(ServerMessage::Chunk(chunk)),
                Err(_) => return self.fail_grew(),
            },
        }
        self.settle();
    }

    /// Answers a [`ReadKind::Chunk`] request by making `frame` the next
    /// chunk's whole frame (header included), with the data `fill` reads
    /// straight into it: no copy between the file and the socket. `fill`
    /// gets room for the bytes asked for and returns how many it wrote;
    /// the frame is then ready to send, and its data is the file's bytes
    /// from the request's offset on. Returns that count. 0 means the
    /// file ended there: the download failed (see
    /// [`outcome`](Self::outcome)) and `frame` is empty. When no chunk is
    /// asked for, `frame` is emptied and 0 returned; when `fill` fails,
    /// nothing changes.
    ///
    /// `frame` can be the same buffer chunk after chunk: it is grown when
    /// too short and cut to the frame's length, never zeroed again.
    ///
    /// # Errors
    ///
    /// Only what `fill` returns (a read error), passed on; the download is
    /// unchanged. A file that ended early or grew is not an error here but
    /// the download's [`outcome`](Self::outcome).
    pub fn fill_chunk_frame<E>(
        &mut self,
        frame: &mut Vec<u8>,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let Some(ReadRequest {
            len,
            kind: ReadKind::Chunk,
            ..
        }) = self.poll_read()
        else {
            frame.clear();
            return Ok(0);
        };
        let filled = self
            .out
            .fill_chunk_frame(frame, len, |room| fill(room).map_err(Fill::Read));
        match filled {
            Ok(0) => {
                self.fail_shrank();
                Ok(0)
            }
            Ok(n) => {
                self.settle();
                Ok(n)
            }
            Err(Fill::Read(e)) => Err(e),
            // More bytes than announced (cannot happen: the room offered
            // stops at the size).
            Err(Fill::Overrun) => {
                frame.clear();
                self.fail_grew();
                Ok(0)
            }
        }
    }

    /// The glue found the file written to since it was opened (its
    /// modification time moved) though its size is the same: what was sent
    /// may mix its old and new bytes, so the download fails with
    /// [`DownloadError::Rewritten`] instead of ending with the checksum of
    /// a file that never existed. Look before answering the end check (a
    /// read of [`ReadKind::EndCheck`]). Ignored once the download is over.
    pub fn file_rewritten(&mut self) {
        if matches!(
            self.state,
            State::Ended | State::Failed(_) | State::Cancelled
        ) {
            return;
        }
        self.state = State::Failed(DownloadError::Rewritten { id: self.out.id() });
    }

    fn fail_shrank(&mut self) {
        self.state = State::Failed(DownloadError::Shrank {
            id: self.out.id(),
            at: self.out.offset(),
            size: self.out.size(),
        });
    }

    fn fail_grew(&mut self) {
        self.state = State::Failed(DownloadError::Grew {
            id: self.out.id(),
            size: self.out.size(),
        });
    }

    /// The client acknowledged storing the file up to `offset` (from byte
    /// 0). Acks at or below the highest one so far are ignored; an ack
    /// beyond what was handed out is refused and ignored.
    ///
    /// # Errors
    ///
    /// [`AckError::BeyondSent`] for an ack past the bytes handed out so
    /// far. The download goes on unchanged; log it if anything.
    pub fn handle_ack(&mut self, offset: u64) -> Result<(), AckError> {
        let sent = self.sent_to();
        if offset > sent {
            return Err(AckError::BeyondSent {
                id: self.out.id(),
                offset,
                sent,
            });
        }
        self.acked = self.acked.max(offset);
        Ok(())
    }

    /// Stops the download (the client cancelled or left): nothing more is
    /// read or sent, an `End` not yet handed out included. No effect once
    /// the download is over.
    pub fn cancel(&mut self) {
        match self.state {
            State::Failed(_) | State::Cancelled => {}
            State::Ended if self.transmits.is_empty() => {}
            _ => {
                self.state = State::Cancelled;
                self.transmits.clear();
            }
        }
    }

    /// The next message to send: a chunk made by
    /// [`handle_read`](Self::handle_read), or the `End`. Chunk frames
    /// made by [`fill_chunk_frame`](Self::fill_chunk_frame) are not here:
    /// the caller has them already.
    pub fn poll_transmit(&mut self) -> Option<ServerMessage> {
        self.transmits.pop_front()
    }

    /// How the download ended, once it did and everything to send was
    /// taken from [`poll_transmit`](Self::poll_transmit); `None` while it
    /// runs.
    #[must_use]
    pub fn outcome(&self) -> Option<DownloadOutcome> {
        match &self.state {
            State::Ended if self.transmits.is_empty() => {
                Some(DownloadOutcome::Done { sent: self.sent() })
            }
            State::Failed(e) => Some(DownloadOutcome::Failed(e.clone())),
            State::Cancelled => Some(DownloadOutcome::Cancelled { sent: self.sent() }),
            _ => None,
        }
    }
}

/// Why filling a chunk frame failed: the caller's read, or (impossible)
/// more bytes than the file has.
enum Fill<E> {
    Read(E),
    Overrun,
}

impl<E> From<UsageError> for Fill<E> {
    fn from(_: UsageError) -> Self {
        Fill::Overrun
    }
}

#[cfg(test)]
mod tests {

    /// The rule before an `End`: the announced size, and the modification
    /// time the file had when opened.
    #[test]
    fn a_sent_file_changed_since_it_was_opened_fails_its_end_check() {
        use std::time::{Duration, SystemTime};
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = then + Duration::from_millis(4);
        let file = SentFile::new(TransferId(3), 100, Some(then));
        assert_eq!(file.check_before_end(100, Some(then)), Ok(()));
        assert_eq!(
            file.check_before_end(100, Some(later)),
            Err(DownloadError::Rewritten { id: TransferId(3) })
        );
        assert!(matches!(
            file.check_before_end(101, Some(then)),
            Err(DownloadError::Grew { size: 100, .. })
        ));
        assert!(matches!(
            file.check_before_end(40, Some(then)),
            Err(DownloadError::Shrank {
                at: 40,
                size: 100,
                ..
            })
        ));
        assert!(!file.is_rewritten(Some(then)));
        assert!(file.is_rewritten(None));
    }
    use super::*;
    use crate::codec::Decoder;
    use crate::message::{FileChunk, FileEnd, FileName, Origin, Username};
    use crate::session::{ClientEvent, ClientSession};
    use crate::transfer::{Incoming, ResumeState};
    use crate::{ClientMessage, Encode};
    use std::time::Instant;

    const ID: TransferId = TransferId(5);
    const CHUNK: usize = 256 * 1024;
    const WINDOW: u64 = DOWNLOAD_WINDOW;

    fn limits(chunk_size: usize) -> Limits {
        Limits {
            chunk_size,
            ..Limits::default()
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Answers every read the sender asks for from `file`, and collects
    /// what it transmits, until it has nothing to read; at most `steps` reads.
    fn serve(sender: &mut DownloadSender, file: &[u8], steps: usize) -> Vec<ServerMessage> {
        let mut sent = Vec::new();
        for _ in 0..steps {
            let Some(req) = sender.poll_read() else {
                break;
            };
            let from = usize::try_from(req.offset).unwrap().min(file.len());
            let to = (from + req.len).min(file.len());
            sender.handle_read(&file[from..to]);
            while let Some(m) = sender.poll_transmit() {
                sent.push(m);
            }
        }
        sent
    }

    fn chunks(msgs: &[ServerMessage]) -> Vec<&FileChunk> {
        msgs.iter()
            .filter_map(|m| match m {
                ServerMessage::Chunk(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn end_of(msgs: &[ServerMessage]) -> Option<&FileEnd> {
        msgs.iter().find_map(|m| match m {
            ServerMessage::End(e) => Some(e),
            _ => None,
        })
    }

    #[test]
    fn reads_stop_at_the_window_until_an_ack_moves_it() {
        let file = data(3 * WINDOW as usize);
        let mut s = DownloadSender::new(ID, file.len() as u64, 0, &limits(CHUNK)).unwrap();
        let sent = serve(&mut s, &file, 100);
        assert_eq!(chunks(&sent).len(), WINDOW as usize / CHUNK);
        assert_eq!(s.in_flight(), WINDOW);
        assert!(s.is_window_full());
        assert_eq!(s.poll_read(), None, "nothing more without an ack");
        assert_eq!(s.outcome(), None);
        // Less than a chunk of room is not room for a chunk.
        s.handle_ack(CHUNK as u64 - 1).unwrap();
        assert_eq!(s.poll_read(), None);
        s.handle_ack(CHUNK as u64).unwrap();
        assert_eq!(
            s.poll_read(),
            Some(ReadRequest {
                offset: WINDOW,
                len: CHUNK,
                kind: ReadKind::Chunk
            })
        );
        let more = serve(&mut s, &file, 100);
        assert_eq!(chunks(&more).len(), 1, "one ack of a chunk, one chunk more");
        assert_eq!(s.in_flight(), WINDOW);
    }

    #[test]
    fn stale_duplicate_and_too_far_acks_do_not_move_the_window() {
        let file = data(2 * WINDOW as usize);
        let mut s = DownloadSender::new(ID, file.len() as u64, 0, &limits(CHUNK)).unwrap();
        serve(&mut s, &file, 100);
        s.handle_ack(2 * CHUNK as u64).unwrap();
        // Out of order (overtaken by the higher one) and duplicate: ignored.
        s.handle_ack(CHUNK as u64).unwrap();
        assert_eq!(s.acked(), 2 * CHUNK as u64);
        s.handle_ack(2 * CHUNK as u64).unwrap();
        assert_eq!(s.acked(), 2 * CHUNK as u64);
        let sent = serve(&mut s, &file, 100);
        assert_eq!(
            chunks(&sent).len(),
            2,
            "the window moved once, by two chunks"
        );
        // Beyond what was handed out: refused, the window stays.
        let handed = WINDOW + 2 * CHUNK as u64;
        assert_eq!(
            s.handle_ack(handed + 1),
            Err(AckError::BeyondSent {
                id: ID,
                offset: handed + 1,
                sent: handed
            })
        );
        assert_eq!(s.acked(), 2 * CHUNK as u64);
        assert_eq!(s.poll_read(), None);
        // Acknowledging exactly what was handed out is fine.
        s.handle_ack(handed).unwrap();
        assert!(s.poll_read().is_some());
    }

    #[test]
    fn a_resumed_download_hashes_the_prefix_and_ends_with_the_whole_file_crc() {
        let file = data(1000);
        for start in [0u64, 1, 600, 999, 1000] {
            let mut s = DownloadSender::new(ID, 1000, start, &limits(256)).unwrap();
            // The prefix is asked for from byte 0, in chunk-size pieces.
            if start > 0 {
                let first = s.poll_read().unwrap();
                assert_eq!(first.kind, ReadKind::Prefix);
                assert_eq!((first.offset, first.len), (0, (start as usize).min(256)));
            }
            let sent = serve(&mut s, &file, 100);
            let held = ResumeState::from_bytes(&file[..start as usize]);
            let mut inc = Incoming::resume(ID, 1000, &held).unwrap();
            let got = chunks(&sent);
            if start < 1000 {
                assert_eq!(got[0].offset, start, "data starts at {start}");
            } else {
                assert!(got.is_empty(), "resumed at the end: no chunk");
            }
            for c in got {
                inc.accept(c).unwrap();
            }
            let end = end_of(&sent).expect("an end");
            assert_eq!(
                end.crc,
                crc32fast::hash(&file),
                "whole-file crc from {start}"
            );
            inc.finish(end).unwrap();
            assert_eq!(
                s.outcome(),
                Some(DownloadOutcome::Done { sent: 1000 - start })
            );
        }
    }

    #[test]
    fn a_resume_offset_past_the_end_is_refused() {
        assert_eq!(
            DownloadSender::new(ID, 1000, 1001, &Limits::default()).unwrap_err(),
            TransferError::BadOffset {
                offset: 1001,
                size: 1000
            }
        );
    }

    #[test]
    fn a_resume_ack_at_the_offset_counts_and_the_window_starts_there() {
        let file = data(3 * WINDOW as usize);
        let start = WINDOW + 5;
        let mut s = DownloadSender::new(ID, file.len() as u64, start, &limits(CHUNK)).unwrap();
        let sent = serve(&mut s, &file, 100);
        assert_eq!(s.acked(), start);
        assert_eq!(
            chunks(&sent)
                .iter()
                .map(|c| c.data.len() as u64)
                .sum::<u64>(),
            WINDOW,
            "a whole window past the resume offset"
        );
        // An ack below the offset carries nothing new.
        s.handle_ack(3).unwrap();
        assert_eq!(s.acked(), start);
    }

    #[test]
    fn a_file_that_shrinks_fails_the_download_without_an_end() {
        // While the prefix is hashed, while chunks are read, and while a
        // chunk frame is filled in place.
        let file = data(1000);
        let mut hashing = DownloadSender::new(ID, 1000, 600, &limits(256)).unwrap();
        let mut sending = DownloadSender::new(ID, 1000, 0, &limits(256)).unwrap();
        for s in [&mut hashing, &mut sending] {
            let sent = serve(s, &file[..300], 100);
            assert!(end_of(&sent).is_none());
            assert_eq!(
                s.outcome(),
                Some(DownloadOutcome::Failed(DownloadError::Shrank {
                    id: ID,
                    at: 300,
                    size: 1000
                }))
            );
            assert_eq!(s.poll_read(), None);
        }
        let mut s = DownloadSender::new(ID, 1000, 0, &limits(256)).unwrap();
        let mut frame = vec![7; 10];
        let n = s.fill_chunk_frame(&mut frame, |_| Ok::<_, ()>(0)).unwrap();
        assert_eq!((n, frame.len()), (0, 0));
        let Some(DownloadOutcome::Failed(e)) = s.outcome() else {
            panic!("not failed: {:?}", s.outcome())
        };
        assert_eq!(e.cancel_code(), CancelCode::IO);
        assert!(e.to_string().starts_with("file changed while being sent"));
    }

    #[test]
    fn a_file_that_grows_fails_the_download_at_the_end_check() {
        let mut file = data(1000);
        let mut s = DownloadSender::new(ID, 1000, 0, &limits(256)).unwrap();
        file.extend_from_slice(b"more");
        let sent = serve(&mut s, &file, 100);
        assert_eq!(chunks(&sent).len(), 4, "every announced byte went");
        assert!(end_of(&sent).is_none(), "but no end");
        assert_eq!(
            s.outcome(),
            Some(DownloadOutcome::Failed(DownloadError::Grew {
                id: ID,
                size: 1000
            }))
        );
    }

    #[test]
    fn a_short_read_is_progress_and_the_next_read_asks_for_the_rest() {
        let file = data(100);
        let mut s = DownloadSender::new(ID, 100, 40, &limits(64)).unwrap();
        s.handle_read(&file[..10]);
        assert_eq!(
            s.poll_read(),
            Some(ReadRequest {
                offset: 10,
                len: 30,
                kind: ReadKind::Prefix
            })
        );
        s.handle_read(&file[10..40]);
        s.handle_read(&file[40..50]);
        assert_eq!(
            s.poll_read(),
            Some(ReadRequest {
                offset: 50,
                len: 50,
                kind: ReadKind::Chunk
            })
        );
        // Bytes beyond what was asked are not taken.
        s.handle_read(&[&file[50..], b"extra"].concat());
        assert_eq!(s.poll_read().map(|r| r.kind), Some(ReadKind::EndCheck));
        s.handle_read(&[]);
        let sent: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
        let mut inc = Incoming::resume(ID, 100, &ResumeState::from_bytes(&file[..40])).unwrap();
        for c in chunks(&sent) {
            inc.accept(c).unwrap();
        }
        inc.finish(end_of(&sent).unwrap()).unwrap();
    }

    #[test]
    fn a_cancelled_download_reads_and_sends_nothing_more() {
        let file = data(10_000);
        let mut s = DownloadSender::new(ID, 10_000, 0, &limits(1000)).unwrap();
        serve(&mut s, &file, 3);
        assert_eq!(s.sent(), 3000);
        s.cancel();
        assert_eq!(s.poll_read(), None);
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.outcome(), Some(DownloadOutcome::Cancelled { sent: 3000 }));
        // An end not handed out yet is not sent either.
        let mut s = DownloadSender::new(ID, 10, 0, &limits(1000)).unwrap();
        s.handle_read(&file[..10]);
        s.handle_read(&[]);
        s.cancel();
        assert!(
            std::iter::from_fn(|| s.poll_transmit()).all(|m| !matches!(m, ServerMessage::End(_)))
        );
        assert_eq!(s.outcome(), Some(DownloadOutcome::Cancelled { sent: 10 }));
        // Once done, a cancel changes nothing.
        let mut s = DownloadSender::new(ID, 0, 0, &limits(1000)).unwrap();
        serve(&mut s, &[], 10);
        s.cancel();
        assert_eq!(s.outcome(), Some(DownloadOutcome::Done { sent: 0 }));
    }

    #[test]
    fn an_empty_file_is_an_end_check_and_an_end_with_crc_0() {
        let mut s = DownloadSender::new(ID, 0, 0, &Limits::default()).unwrap();
        assert_eq!(
            s.poll_read(),
            Some(ReadRequest {
                offset: 0,
                len: 1,
                kind: ReadKind::EndCheck
            })
        );
        let sent = serve(&mut s, &[], 10);
        assert_eq!(sent, vec![ServerMessage::End(FileEnd { id: ID, crc: 0 })]);
        assert_eq!(s.outcome(), Some(DownloadOutcome::Done { sent: 0 }));
    }

    #[test]
    fn frames_filled_in_place_are_the_chunks_handle_read_makes() {
        let file = data(3 * WINDOW as usize / 2);
        let size = file.len() as u64;
        let mut in_place = DownloadSender::new(ID, size, 100, &limits(CHUNK)).unwrap();
        let mut copied = DownloadSender::new(ID, size, 100, &limits(CHUNK)).unwrap();
        serve(&mut in_place, &file, 1);
        serve(&mut copied, &file, 1);
        // One buffer for every frame, holding the previous frame's bytes.
        let mut frame = vec![0xAA; 10];
        let mut frames = 0;
        while let Some(req) = in_place.poll_read() {
            assert_eq!(req.kind, ReadKind::Chunk);
            let at = req.offset as usize;
            let n = in_place
                .fill_chunk_frame(&mut frame, |room| {
                    room.copy_from_slice(&file[at..at + room.len()]);
                    Ok::<_, ()>(room.len())
                })
                .unwrap();
            assert_eq!(n, req.len);
            let msg = serve(&mut copied, &file, 1);
            assert_eq!(frame, msg[0].to_frame(), "chunk at {at}");
            frames += 1;
        }
        assert_eq!(frames, WINDOW as usize / CHUNK, "stopped at the window");
        // With nothing asked, nothing is filled.
        let n = in_place
            .fill_chunk_frame(&mut frame, |_| -> Result<usize, ()> { panic!("not asked") })
            .unwrap();
        assert_eq!((n, frame.len()), (0, 0));
        assert_eq!(in_place.outcome(), None, "still running");
        // A failed read changes nothing.
        in_place.handle_ack(WINDOW).unwrap();
        let before = in_place.poll_read();
        assert_eq!(
            in_place.fill_chunk_frame(&mut frame, |_| Err("disk")),
            Err("disk")
        );
        assert_eq!(in_place.poll_read(), before);
    }

    /// The sender against a real client session, every message encoded
    /// and decoded, acks flowing back: a resumed download arrives whole.
    #[test]
    fn a_resumed_download_pumped_to_a_client_session_is_done() {
        let file = data(5 * WINDOW as usize / 2 + 17);
        let size = file.len() as u64;
        let start = WINDOW / 2 + 3;
        let now = Instant::now();
        let mut client = joined_client(now);
        let name = FileName::new("f.bin").unwrap();
        let resume = ResumeState::from_bytes(&file[..start as usize]);
        let id = client.download(name.clone(), Some(resume)).unwrap();
        assert!(matches!(
            client.poll_transmit(),
            Some(ClientMessage::Download { offset, .. }) if offset == start
        ));
        let mut s = DownloadSender::new(id, size, start, &limits(CHUNK)).unwrap();
        client.handle_message(
            ServerMessage::FileStart(crate::FileStart {
                id,
                name,
                size,
                offset: start,
                origin: Origin::Download,
            }),
            now,
        );
        let mut received = file[..start as usize].to_vec();
        let mut done = false;
        for _ in 0..1000 {
            for m in serve(&mut s, &file, 100) {
                client.handle_message(over_the_wire(&m), now);
            }
            while let Some(m) = client.poll_transmit() {
                if let ClientMessage::Ack { id: a, offset } = m {
                    assert_eq!(a, id);
                    s.handle_ack(offset).unwrap();
                }
            }
            while let Some(e) = client.poll_event() {
                match e {
                    ClientEvent::TransferData { offset, data, .. } => {
                        assert_eq!(offset, received.len() as u64);
                        received.extend_from_slice(&data);
                    }
                    ClientEvent::TransferDone { id: d } if d == id => done = true,
                    ClientEvent::TransferStarted { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            if done {
                break;
            }
        }
        assert!(done, "the download did not finish");
        assert_eq!(received, file);
        assert_eq!(
            s.outcome(),
            Some(DownloadOutcome::Done { sent: size - start })
        );
    }

    /// A client that acknowledges only what it stored, and stores nothing,
    /// gets one window and no more.
    #[test]
    fn a_client_session_that_does_not_ack_gets_one_window() {
        let file = data(4 * WINDOW as usize);
        let now = Instant::now();
        let mut client = joined_client(now);
        client.set_manual_acks(true);
        let name = FileName::new("f.bin").unwrap();
        let id = client.download(name.clone(), None).unwrap();
        let mut s = DownloadSender::new(id, file.len() as u64, 0, &limits(CHUNK)).unwrap();
        client.handle_message(
            ServerMessage::FileStart(crate::FileStart {
                id,
                name,
                size: file.len() as u64,
                offset: 0,
                origin: Origin::Download,
            }),
            now,
        );
        let mut bytes = 0;
        for _ in 0..100 {
            for m in serve(&mut s, &file, 100) {
                client.handle_message(over_the_wire(&m), now);
            }
            while let Some(m) = client.poll_transmit() {
                if let ClientMessage::Ack { offset, .. } = m {
                    s.handle_ack(offset).unwrap();
                }
            }
            while let Some(e) = client.poll_event() {
                if let ClientEvent::TransferData { data, .. } = e {
                    bytes += data.len() as u64;
                }
            }
        }
        assert_eq!(bytes, WINDOW);
        assert!(s.is_window_full());
        // Storing half a window acknowledges it: half a window more comes.
        client.stored(id, WINDOW / 2);
        while let Some(ClientMessage::Ack { offset, .. }) = client.poll_transmit() {
            s.handle_ack(offset).unwrap();
        }
        let more = serve(&mut s, &file, 100);
        assert_eq!(chunks(&more).len() as u64, WINDOW / 2 / CHUNK as u64);
    }

    fn joined_client(now: Instant) -> ClientSession {
        let me = Username::new("alice").unwrap();
        let mut client = ClientSession::new(me.clone(), Limits::default(), now);
        client.handle_message(
            ServerMessage::Welcome {
                token: crate::ResumeToken::default(),
                epoch: 0,
                grace_secs: 0,
                last_id: crate::MessageId(0),
                resumed: None,
                version: crate::PROTOCOL_VERSION,
                username: me,
                text: String::new(),
                limits: crate::Hub::new(Limits::default(), "").server_limits(),
            },
            now,
        );
        while client.poll_transmit().is_some() {}
        while client.poll_event().is_some() {}
        client
    }

    /// `m` encoded and decoded again.
    fn over_the_wire(m: &ServerMessage) -> ServerMessage {
        let mut d = Decoder::<ServerMessage>::new(crate::DEFAULT_MAX_FRAME);
        d.feed(&m.to_frame());
        d.next_message().unwrap().unwrap()
    }
}
