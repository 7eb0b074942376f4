//! File transfers without file IO: the sending half cuts bytes the caller
//! read into checksummed chunk frames; the receiving half checks each chunk
//! (id, offset, size, CRC32) and the whole file at the end.

use crate::codec::{encode_chunk_with_crc, write_chunk_head, CHUNK_HEAD};
use crate::error::{TransferError, UsageError};
use crate::message::{FileChunk, FileEnd, TransferId};

/// What a receiver already holds of a file it resumes: the length of the
/// partial copy and the checksum state of those bytes. The whole-file CRC
/// in the `End` covers the file from byte 0, so the held bytes must be
/// counted in; build this from the partial copy's bytes, in order, with
/// [`update`](Self::update), or from a length and a CRC32 computed before
/// with [`from_crc`](Self::from_crc).
#[derive(Debug, Clone, Default)]
pub struct ResumeState {
    len: u64,
    hasher: crc32fast::Hasher,
}

impl ResumeState {
    /// Nothing held yet.
    #[must_use]
    pub fn new() -> Self {
        ResumeState::default()
    }

    /// The state of a partial copy holding exactly `bytes`.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut state = ResumeState::new();
        state.update(bytes);
        state
    }

    /// The state of a partial copy of `len` bytes whose CRC32 (IEEE, as
    /// [`crc`](Self::crc) gives it) is `crc`.
    #[must_use]
    pub fn from_crc(len: u64, crc: u32) -> Self {
        ResumeState {
            len,
            hasher: crc32fast::Hasher::new_with_initial_len(crc, len),
        }
    }

    /// Counts the next bytes of the partial copy.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes held: where the download resumes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing is held (a download from byte 0).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CRC32 of the bytes held.
    #[must_use]
    pub fn crc(&self) -> u32 {
        self.hasher.clone().finalize()
    }
}

/// The sending half of one transfer. The caller reads the file, in chunks of
/// at most [`Limits::chunk_size`](crate::Limits::chunk_size), and hands each
/// to [`encode_chunk`](Outgoing::encode_chunk); then [`finish`](Outgoing::finish).
#[derive(Debug, Clone)]
pub struct Outgoing {
    id: TransferId,
    size: u64,
    offset: u64,
    hasher: crc32fast::Hasher,
}

impl Outgoing {
    /// A transfer of `size` bytes starting at byte 0.
    #[must_use]
    pub fn new(id: TransferId, size: u64) -> Self {
        Outgoing {
            id,
            size,
            offset: 0,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// Counts bytes the receiver already holds (a resumed download): they go
    /// into the whole-file checksum but are not sent. Call before any chunk.
    ///
    /// # Errors
    ///
    /// [`UsageError::PushOverrun`] if `data` goes past the transfer's size;
    /// nothing is counted. The local copy is longer than the file offered:
    /// download it from byte 0 instead.
    pub fn skip(&mut self, data: &[u8]) -> Result<(), UsageError> {
        self.advance(data)
    }

    fn advance(&mut self, data: &[u8]) -> Result<(), UsageError> {
        self.check_room(data)?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(())
    }

    fn check_room(&self, data: &[u8]) -> Result<(), UsageError> {
        if data.len() as u64 > self.remaining() {
            return Err(UsageError::PushOverrun { id: self.id });
        }
        Ok(())
    }

    /// Takes the next bytes and returns their CRC32, which also goes into
    /// the whole-file checksum by combining (one pass over the data, not two).
    /// No bytes are no chunk: the protocol has none, and a receiver ends
    /// the transfer on one.
    fn take(&mut self, data: &[u8]) -> Result<u32, UsageError> {
        if data.is_empty() {
            return Err(UsageError::EmptyChunk);
        }
        self.check_room(data)?;
        let crc = crc32fast::hash(data);
        self.hasher
            .combine(&crc32fast::Hasher::new_with_initial_len(
                crc,
                data.len() as u64,
            ));
        self.offset += data.len() as u64;
        Ok(crc)
    }

    /// Appends a chunk frame holding `data` (the next bytes of the file) to `out`.
    ///
    /// # Errors
    ///
    /// [`UsageError::PushOverrun`] if `data` goes past the announced size
    /// (the file grew since it was offered), [`UsageError::EmptyChunk`] if
    /// it is empty; nothing is appended or counted.
    pub fn encode_chunk(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), UsageError> {
        let offset = self.offset;
        let crc = self.take(data)?;
        encode_chunk_with_crc(out, self.id, offset, data, crc);
        Ok(())
    }

    /// Makes `frame` the chunk frame of the next bytes of the file, which
    /// `fill` writes straight into it: a sender reads the file into the
    /// frame it sends, with no copy. `fill` gets room for at most `most`
    /// bytes (and no more than remain) and returns how many it wrote.
    /// Returns that count; at 0, `frame` is left empty and the transfer
    /// unchanged.
    ///
    /// `frame` can be the same buffer chunk after chunk: it is grown when
    /// too short and cut to the frame's length, but its old bytes are only
    /// overwritten, never zeroed again.
    ///
    /// # Errors
    ///
    /// Only what `fill` returns (a read error), passed on; the transfer is
    /// left as it was. `fill` is never given room past the announced size,
    /// so the [`UsageError`] that `E` must convert from does not occur.
    pub fn fill_chunk_frame<E: From<UsageError>>(
        &mut self,
        frame: &mut Vec<u8>,
        most: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let most = usize::try_from(self.remaining()).map_or(most, |r| r.min(most));
        let end = CHUNK_HEAD + most;
        if frame.len() < end {
            frame.resize(end, 0);
        }
        let n = fill(&mut frame[CHUNK_HEAD..end])?.min(most);
        frame.truncate(CHUNK_HEAD + n);
        if n == 0 {
            frame.clear();
            return Ok(0);
        }
        let offset = self.offset;
        let crc = self.take(&frame[CHUNK_HEAD..])?;
        write_chunk_head(&mut frame[..CHUNK_HEAD], self.id, offset, crc, n);
        Ok(n)
    }

    /// The next chunk as a message (for a session's transmit queue).
    ///
    /// # Errors
    ///
    /// [`UsageError::PushOverrun`] if `data` goes past the announced size,
    /// [`UsageError::EmptyChunk`] if it is empty; nothing is counted.
    pub fn next_chunk(&mut self, data: Vec<u8>) -> Result<FileChunk, UsageError> {
        let offset = self.offset;
        let crc = self.take(&data)?;
        Ok(FileChunk {
            id: self.id,
            offset,
            data,
            crc,
        })
    }

    /// The end marker, once every byte has gone; `None` while bytes remain.
    #[must_use]
    pub fn finish(&self) -> Option<FileEnd> {
        (self.remaining() == 0).then(|| FileEnd {
            id: self.id,
            crc: self.hasher.clone().finalize(),
        })
    }

    /// The transfer id.
    #[must_use]
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// The next byte to send.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The whole size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes still to send.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.size - self.offset
    }
}

/// The receiving half of one transfer: it accepts chunks only in order,
/// non-empty, within the announced size and matching their CRC, and accepts
/// the end only when the size and the whole-file CRC match.
#[derive(Debug, Clone)]
pub struct Incoming {
    id: TransferId,
    size: u64,
    expected: u64,
    hasher: crc32fast::Hasher,
}

impl Incoming {
    /// A transfer of `size` bytes starting at byte 0.
    #[must_use]
    pub fn new(id: TransferId, size: u64) -> Self {
        Incoming {
            id,
            size,
            expected: 0,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// A transfer resumed after the bytes `held` describes (`0..held.len()`,
    /// already on disk; they are checked by the whole-file CRC at the end).
    ///
    /// # Errors
    ///
    /// [`TransferError::BadOffset`] if `held` is longer than `size`: the
    /// partial copy is not of this file; start again from byte 0.
    pub fn resume(id: TransferId, size: u64, held: &ResumeState) -> Result<Self, TransferError> {
        let offset = held.len();
        if offset > size {
            return Err(TransferError::BadOffset { offset, size });
        }
        Ok(Incoming {
            id,
            size,
            expected: offset,
            hasher: held.hasher.clone(),
        })
    }

    /// Checks one chunk; on success its data belongs at `chunk.offset`.
    ///
    /// # Errors
    ///
    /// The chunk is refused, and the transfer should be dropped:
    /// [`TransferError::EmptyChunk`] for no data,
    /// [`TransferError::OutOfOrder`] if it does not start where the last one
    /// ended, [`TransferError::TooMuchData`] if it goes past the announced
    /// size, [`TransferError::BadChunkCrc`] if its data does not match its
    /// CRC. Nothing is counted.
    pub fn accept(&mut self, chunk: &FileChunk) -> Result<(), TransferError> {
        let id = self.id;
        if chunk.data.is_empty() {
            return Err(TransferError::EmptyChunk { id });
        }
        if chunk.offset != self.expected {
            return Err(TransferError::OutOfOrder {
                id,
                offset: chunk.offset,
                expected: self.expected,
            });
        }
        if chunk.data.len() as u64 > self.size - self.expected {
            return Err(TransferError::TooMuchData {
                id,
                size: self.size,
            });
        }
        // One CRC pass checks the chunk and feeds the whole-file checksum.
        let crc = crc32fast::hash(&chunk.data);
        if crc != chunk.crc {
            return Err(TransferError::BadChunkCrc {
                id,
                offset: chunk.offset,
            });
        }
        self.hasher
            .combine(&crc32fast::Hasher::new_with_initial_len(
                crc,
                chunk.data.len() as u64,
            ));
        self.expected += chunk.data.len() as u64;
        Ok(())
    }

    /// Checks the end: all bytes arrived and the whole-file CRC matches.
    ///
    /// # Errors
    ///
    /// [`TransferError::ShortFile`] if bytes are missing,
    /// [`TransferError::FileCrcMismatch`] if the file's checksum differs
    /// (a resumed prefix that was not this file's, or corruption). Either
    /// way the received file is not the one sent: delete it.
    pub fn finish(&self, end: &FileEnd) -> Result<(), TransferError> {
        if self.expected != self.size {
            return Err(TransferError::ShortFile {
                id: self.id,
                received: self.expected,
                size: self.size,
            });
        }
        let got = self.hasher.clone().finalize();
        if got != end.crc {
            return Err(TransferError::FileCrcMismatch {
                id: self.id,
                got,
                expected: end.crc,
            });
        }
        Ok(())
    }

    /// The transfer id.
    #[must_use]
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// Bytes held so far (resumed prefix included).
    #[must_use]
    pub fn received(&self) -> u64 {
        self.expected
    }

    /// The whole size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Decoder;
    use crate::message::ServerMessage;

    const ID: TransferId = TransferId(7);

    fn send_all(data: &[u8], chunk: usize) -> (Vec<FileChunk>, FileEnd) {
        let mut out = Outgoing::new(ID, data.len() as u64);
        let chunks: Vec<_> = data
            .chunks(chunk)
            .map(|c| out.next_chunk(c.to_vec()).unwrap())
            .collect();
        (chunks, out.finish().unwrap())
    }

    #[test]
    fn a_whole_transfer_checks_out() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (chunks, end) = send_all(&data, 1000);
        assert_eq!(chunks.len(), 10);
        let mut inc = Incoming::new(ID, data.len() as u64);
        let mut got = Vec::new();
        for c in &chunks {
            inc.accept(c).unwrap();
            got.extend_from_slice(&c.data);
        }
        inc.finish(&end).unwrap();
        assert_eq!(got, data);
        assert_eq!(end.crc, crc32fast::hash(&data));
    }

    #[test]
    fn frames_filled_in_place_are_the_frames_encode_chunk_makes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let mut by_copy = Outgoing::new(ID, data.len() as u64);
        let mut in_place = Outgoing::new(ID, data.len() as u64);
        // One buffer for every frame, holding the previous frame's bytes:
        // a stale byte anywhere would show.
        let mut frame = vec![0xAA; 5000];
        let mut at = 0;
        while at < data.len() {
            let n = in_place
                .fill_chunk_frame(&mut frame, 3000, |room| {
                    let n = room.len().min(data.len() - at);
                    room[..n].copy_from_slice(&data[at..at + n]);
                    Ok::<_, UsageError>(n)
                })
                .unwrap();
            assert_eq!(n, 3000.min(data.len() - at));
            let mut expected = Vec::new();
            by_copy
                .encode_chunk(&data[at..at + n], &mut expected)
                .unwrap();
            assert_eq!(frame, expected, "chunk at {at}");
            at += n;
        }
        assert_eq!(in_place.finish(), by_copy.finish());
        assert_eq!(in_place.finish().unwrap().crc, crc32fast::hash(&data));
    }

    #[test]
    fn a_frame_filled_with_nothing_is_empty_and_changes_nothing() {
        let mut out = Outgoing::new(ID, 10);
        let mut frame = vec![1, 2, 3];
        let n = out
            .fill_chunk_frame(&mut frame, 8, |_| Ok::<_, UsageError>(0))
            .unwrap();
        assert_eq!(n, 0);
        assert!(frame.is_empty());
        assert_eq!(out.offset(), 0);
        // The room offered never goes past the announced size.
        let offered = out
            .fill_chunk_frame(&mut frame, 64, |room| Ok::<_, UsageError>(room.len()))
            .unwrap();
        assert_eq!(offered, 10);
        assert_eq!(out.remaining(), 0);
    }

    #[test]
    fn encode_chunk_frames_decode_to_the_same_chunks() {
        let data = b"abcdefghij";
        let mut out = Outgoing::new(ID, 10);
        let mut buf = Vec::new();
        out.encode_chunk(&data[..4], &mut buf).unwrap();
        out.encode_chunk(&data[4..], &mut buf).unwrap();
        assert!(out.encode_chunk(b"x", &mut buf).is_err());
        // No bytes make no chunk, whichever way it is built.
        let mut empty = Outgoing::new(ID, 10);
        let before = buf.len();
        assert_eq!(
            empty.encode_chunk(&[], &mut buf),
            Err(UsageError::EmptyChunk)
        );
        assert_eq!(empty.next_chunk(Vec::new()), Err(UsageError::EmptyChunk));
        assert_eq!((buf.len(), empty.offset()), (before, 0));
        let mut d = Decoder::<ServerMessage>::new(1 << 20);
        d.feed(&buf);
        let mut inc = Incoming::new(ID, 10);
        while let Some(ServerMessage::Chunk(c)) = d.next_message().unwrap() {
            inc.accept(&c).unwrap();
        }
        inc.finish(&out.finish().unwrap()).unwrap();
    }

    #[test]
    fn bad_chunks_are_refused() {
        let (chunks, _) = send_all(b"hello world", 4);
        let mut inc = Incoming::new(ID, 11);
        assert_eq!(
            inc.accept(&chunks[1]),
            Err(TransferError::OutOfOrder {
                id: ID,
                offset: 4,
                expected: 0
            })
        );
        let mut flipped = chunks[0].clone();
        flipped.data[0] ^= 1;
        assert_eq!(
            inc.accept(&flipped),
            Err(TransferError::BadChunkCrc { id: ID, offset: 0 })
        );
        assert_eq!(
            inc.accept(&FileChunk::new(ID, 0, vec![])),
            Err(TransferError::EmptyChunk { id: ID })
        );
        assert_eq!(
            inc.accept(&FileChunk::new(ID, 0, vec![0; 12])),
            Err(TransferError::TooMuchData { id: ID, size: 11 })
        );
        inc.accept(&chunks[0]).unwrap();
        // A duplicate of an accepted chunk is out of order.
        assert!(matches!(
            inc.accept(&chunks[0]),
            Err(TransferError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn the_end_checks_size_and_whole_crc() {
        let (chunks, end) = send_all(b"hello world", 4);
        let mut inc = Incoming::new(ID, 11);
        inc.accept(&chunks[0]).unwrap();
        assert_eq!(
            inc.finish(&end),
            Err(TransferError::ShortFile {
                id: ID,
                received: 4,
                size: 11
            })
        );
        inc.accept(&chunks[1]).unwrap();
        inc.accept(&chunks[2]).unwrap();
        let wrong = FileEnd {
            id: ID,
            crc: end.crc ^ 1,
        };
        assert!(matches!(
            inc.finish(&wrong),
            Err(TransferError::FileCrcMismatch { .. })
        ));
        inc.finish(&end).unwrap();
    }

    #[test]
    fn a_resumed_transfer_checks_the_part_already_held() {
        let data = b"0123456789abcdef";
        let mut sender = Outgoing::new(ID, 16);
        sender.skip(&data[..6]).unwrap();
        let rest = sender.next_chunk(data[6..].to_vec()).unwrap();
        let end = sender.finish().unwrap();
        assert_eq!(end.crc, crc32fast::hash(data));

        let held = ResumeState::from_bytes(&data[..6]);
        let mut inc = Incoming::resume(ID, 16, &held).unwrap();
        assert_eq!(inc.received(), 6);
        inc.accept(&rest).unwrap();
        inc.finish(&end).unwrap();

        // A corrupted part on disk is caught by the whole-file CRC.
        let bad = ResumeState::from_bytes(b"012X45");
        let mut inc = Incoming::resume(ID, 16, &bad).unwrap();
        inc.accept(&rest).unwrap();
        assert!(matches!(
            inc.finish(&end),
            Err(TransferError::FileCrcMismatch { .. })
        ));
        assert_eq!(
            Incoming::resume(ID, 16, &ResumeState::from_bytes(&[0; 17])).unwrap_err(),
            TransferError::BadOffset {
                offset: 17,
                size: 16
            }
        );
    }

    #[test]
    fn a_resume_state_is_the_same_from_bytes_in_pieces_or_from_a_crc() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 11) as u8).collect();
        let whole = ResumeState::from_bytes(&data);
        let mut pieces = ResumeState::new();
        assert!(pieces.is_empty());
        for part in data.chunks(777) {
            pieces.update(part);
        }
        let from_crc = ResumeState::from_crc(5000, crc32fast::hash(&data));
        for state in [&whole, &pieces, &from_crc] {
            assert_eq!(state.len(), 5000);
            assert_eq!(state.crc(), crc32fast::hash(&data));
        }
        // Each resumes to the same whole-file check.
        let mut sender = Outgoing::new(ID, 6000);
        sender.skip(&data).unwrap();
        let rest = sender.next_chunk(vec![9; 1000]).unwrap();
        let end = sender.finish().unwrap();
        for state in [&whole, &pieces, &from_crc] {
            let mut inc = Incoming::resume(ID, 6000, state).unwrap();
            inc.accept(&rest).unwrap();
            inc.finish(&end).unwrap();
        }
    }

    #[test]
    fn files_over_4_gib_use_u64_offsets() {
        let size = 5u64 << 30;
        let mut out = Outgoing::new(ID, size);
        let mut inc = Incoming::resume(ID, size, &ResumeState::from_crc(size - 3, 0)).unwrap();
        out.offset = size - 3;
        let c = out.next_chunk(vec![1, 2, 3]).unwrap();
        assert_eq!(c.offset, size - 3);
        inc.accept(&c).unwrap();
        assert_eq!(inc.received(), size);
    }
}
