//! A small blocking transport: the codec over any `Read` and any `Write`.
//! Give the reader and the writer each their own handle (for a `TcpStream`,
//! `try_clone`) and use them from two threads.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::codec::{Decode, Decoder, Encode, CHUNK_HEAD};
use crate::error::TransportError;

/// Bytes read per `read` call at first: small, so that an idle connection
/// costs one page. The buffer doubles (up to [`MAX_READ_BUF`]) each time a
/// read fills it, so a busy connection reads in large slices.
const MIN_READ_BUF: usize = 4 * 1024;
/// Largest read buffer.
const MAX_READ_BUF: usize = 128 * 1024;

/// The read half: bytes from a `Read`, messages out.
#[derive(Debug)]
pub struct FrameReader<R, M> {
    inner: R,
    decoder: Decoder<M>,
    buf: Vec<u8>,
}

impl<R: Read, M: Decode> FrameReader<R, M> {
    /// Reads from `inner`, refusing frames above `max_frame`.
    pub fn new(inner: R, max_frame: u32) -> Self {
        FrameReader {
            inner,
            decoder: Decoder::new(max_frame),
            buf: vec![0; MIN_READ_BUF],
        }
    }

    /// The decoder (to change its frame limit after the handshake).
    pub fn decoder_mut(&mut self) -> &mut Decoder<M> {
        &mut self.decoder
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader, mutably (to write to a stream that reads and
    /// writes, as [`Client`](super::Client) does). Reading it directly
    /// loses the frames it carries.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// True when [`read_message`](Self::read_message) would return without
    /// reading from the stream (a whole message, or an error, is buffered).
    pub fn has_message_ready(&self) -> bool {
        self.decoder.has_message_ready()
    }

    /// Blocks until the next message. `Ok(None)` is a clean end of stream
    /// between frames; an end in the middle of a frame is
    /// [`TransportError::UnexpectedEof`]. A read timeout (an `Io` error of
    /// kind `WouldBlock` or `TimedOut`) loses nothing: a partial frame
    /// stays buffered and the next call goes on with it. After any other
    /// error, stop reading.
    ///
    /// # Errors
    ///
    /// [`TransportError::Io`] when reading fails (after a timeout, call
    /// again); [`TransportError::Decode`] when the bytes do not decode (send
    /// [`ErrorCode::MALFORMED`](crate::ErrorCode::MALFORMED) and close);
    /// [`TransportError::UnexpectedEof`] when the stream ends inside a frame.
    pub fn read_message(&mut self) -> Result<Option<M>, TransportError> {
        loop {
            match self.step()? {
                ReadStep::Message(m) => return Ok(Some(m)),
                ReadStep::End => return Ok(None),
                ReadStep::More => {}
            }
        }
    }

    /// As [`read_message`](Self::read_message), calling `heard` with the
    /// time while a frame is still coming in, at most once every `every`
    /// (`told`: when it last did), for a keepalive that counts bytes and
    /// not only whole frames (`Hub::handle_bytes`,
    /// `ClientSession::handle_bytes`): a long frame on a slow link is no
    /// sign of a dead peer.
    ///
    /// # Errors
    ///
    /// As for [`read_message`](Self::read_message).
    pub fn read_message_hearing(
        &mut self,
        every: Duration,
        told: &mut Instant,
        mut heard: impl FnMut(Instant),
    ) -> Result<Option<M>, TransportError> {
        loop {
            match self.read_once()? {
                ReadStep::Message(m) => return Ok(Some(m)),
                ReadStep::End => return Ok(None),
                ReadStep::More => {
                    let now = Instant::now();
                    if now.saturating_duration_since(*told) >= every {
                        *told = now;
                        heard(now);
                    }
                }
            }
        }
    }

    /// As [`read_message`](Self::read_message), but reads the stream at
    /// most once: [`ReadStep::More`] when that read did not complete a
    /// message (a deadline over several reads is the caller's to keep).
    ///
    /// # Errors
    ///
    /// As for [`read_message`](Self::read_message).
    pub fn read_once(&mut self) -> Result<ReadStep<M>, TransportError> {
        match self.step()? {
            ReadStep::More => Ok(self
                .decoder
                .next_message()?
                .map_or(ReadStep::More, ReadStep::Message)),
            done => Ok(done),
        }
    }

    /// A buffered message, or one read from the stream.
    fn step(&mut self) -> Result<ReadStep<M>, TransportError> {
        if let Some(m) = self.decoder.next_message()? {
            return Ok(ReadStep::Message(m));
        }
        // A large chunk arriving: straight into its own buffer.
        if let Some(body) = self.decoder.body_buf() {
            match self.inner.read(body) {
                Ok(0) => return Err(TransportError::UnexpectedEof),
                Ok(n) => self.decoder.body_filled(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(ReadStep::More);
        }
        // After a large chunk, read just the next frame's head: if it
        // is another chunk, its data then goes straight to its buffer.
        let want = if self.decoder.expects_chunk() && self.decoder.buffered() == 0 {
            CHUNK_HEAD
        } else {
            self.buf.len()
        };
        let n = match self.inner.read(&mut self.buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(ReadStep::More),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if self.decoder.buffered() == 0 {
                Ok(ReadStep::End)
            } else {
                Err(TransportError::UnexpectedEof)
            };
        }
        self.decoder.feed(&self.buf[..n]);
        if n == self.buf.len() && n < MAX_READ_BUF {
            self.buf.resize(n * 2, 0);
        }
        Ok(ReadStep::More)
    }
}

/// What one read of [`FrameReader::read_once`] gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStep<M> {
    /// A whole message.
    Message(M),
    /// The stream ended cleanly, between frames.
    End,
    /// Bytes of a message not yet whole (or none, after an interrupted
    /// read): read again.
    More,
}

/// The write half: messages in, frames written to a `Write`.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    /// Writes to `inner`.
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::new(),
        }
    }

    /// Encodes and writes one message (and flushes).
    ///
    /// # Errors
    ///
    /// The writer's [`io::Error`]: the frame may be partly written, so the
    /// stream can no longer be trusted; close the connection.
    pub fn send<E: Encode>(&mut self, msg: &E) -> io::Result<()> {
        self.buf.clear();
        msg.encode(&mut self.buf);
        self.inner.write_all(&self.buf)?;
        self.inner.flush()
    }

    /// Writes frames already encoded (several may be coalesced into one write).
    ///
    /// # Errors
    ///
    /// As for [`send`](Self::send): the writer's [`io::Error`], after which
    /// the connection is to be closed.
    pub fn send_frames(&mut self, frames: &[u8]) -> io::Result<()> {
        self.inner.write_all(frames)?;
        self.inner.flush()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// Splits a TCP stream into a reader and a writer for two threads.
///
/// # Errors
///
/// The [`io::Error`] of [`TcpStream::try_clone`] (the process is out of
/// file handles); `stream` is dropped.
pub fn split_tcp<M: Decode>(
    stream: TcpStream,
    max_frame: u32,
) -> io::Result<(FrameReader<TcpStream, M>, FrameWriter<TcpStream>)> {
    let write = stream.try_clone()?;
    Ok((FrameReader::new(stream, max_frame), FrameWriter::new(write)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientMessage, ServerMessage, Username};
    use std::net::TcpListener;

    /// A reader that hands out its bytes a few at a time.
    struct Dribble(Vec<u8>, usize);
    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn messages_survive_any_read_sizes() {
        let mut bytes = Vec::new();
        let msgs = vec![
            ClientMessage::Who,
            ClientMessage::Chat {
                client_id: 1,
                to: crate::Recipient::Everyone,
                kind: crate::ChatKind::Text,
                text: "hello".into(),
            },
            ClientMessage::Quit {
                reason: String::new(),
            },
        ];
        for m in &msgs {
            m.encode(&mut bytes);
        }
        let mut r = FrameReader::<_, ClientMessage>::new(Dribble(bytes, 0), 1024);
        for m in &msgs {
            assert_eq!(r.read_message().unwrap().as_ref(), Some(m));
        }
        assert!(r.read_message().unwrap().is_none());
        assert!(!r.has_message_ready());
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Steps(Vec<u8>, usize, usize);
    impl Read for Steps {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.2).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn large_chunks_survive_any_read_sizes_and_a_cut_is_an_error() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let msgs = vec![
            ServerMessage::Chunk(crate::FileChunk::new(crate::TransferId(1), 0, data.clone())),
            ServerMessage::Ping(1),
            ServerMessage::Chunk(crate::FileChunk::new(crate::TransferId(1), 300_000, data)),
        ];
        let bytes: Vec<u8> = msgs
            .iter()
            .flat_map(crate::codec::Encode::to_frame)
            .collect();
        for step in [5, 1000, 70_000, 1 << 20] {
            let mut r =
                FrameReader::<_, ServerMessage>::new(Steps(bytes.clone(), 0, step), 1 << 20);
            for m in &msgs {
                assert_eq!(r.read_message().unwrap().as_ref(), Some(m), "step {step}");
            }
            assert!(r.read_message().unwrap().is_none());
        }
        let cut = bytes[..bytes.len() - 10].to_vec();
        let mut r = FrameReader::<_, ServerMessage>::new(Steps(cut, 0, 4096), 1 << 20);
        assert!(r.read_message().unwrap().is_some());
        assert!(r.read_message().unwrap().is_some());
        assert!(matches!(
            r.read_message(),
            Err(TransportError::UnexpectedEof)
        ));
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut bytes = ClientMessage::Who.to_frame();
        bytes.extend_from_slice(&[0, 0, 0, 9, 1]);
        let mut r = FrameReader::<_, ClientMessage>::new(Dribble(bytes, 0), 1024);
        assert!(r.read_message().unwrap().is_some());
        assert!(matches!(
            r.read_message(),
            Err(TransportError::UnexpectedEof)
        ));
    }

    #[test]
    fn a_tcp_stream_splits_into_two_halves() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let (mut r, mut w) = split_tcp::<ClientMessage>(s, 1024).unwrap();
            let got = r.read_message().unwrap().unwrap();
            w.send(&ServerMessage::Pong(7)).unwrap();
            got
        });
        let s = TcpStream::connect(addr).unwrap();
        let (mut r, mut w) = split_tcp::<ServerMessage>(s, 1024).unwrap();
        let hello = ClientMessage::Hello {
            resume: None,
            version: 1,
            username: Username::new("ann").unwrap(),
        };
        w.send(&hello).unwrap();
        assert_eq!(r.read_message().unwrap(), Some(ServerMessage::Pong(7)));
        assert_eq!(t.join().unwrap(), hello);
    }
}
