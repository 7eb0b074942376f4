//! The sans-IO codec: messages to bytes appended to a caller's buffer, and a
//! streaming [`Decoder`] from bytes in any split to messages.
//!
//! A frame is a 4-byte big-endian length `L` followed by `L` bytes: one type
//! byte and the message's fields. `docs/PROTOCOL.md` has every layout.

use crate::message::FileStart;
use crate::message::RoutedChat;
use crate::message::{Departure, FileListPart, PresenceEvent};
use std::marker::PhantomData;

use byteorder::{BigEndian, ByteOrder};

use crate::error::DecodeError;
use crate::message::{
    CancelCode, ChatKind, ClientMessage, ErrorCode, FileCancel, FileChunk, FileEnd, FileEntry,
    FileName, LeaveReason, MessageId, NoticeCode, OnlineUser, OpAction, Origin, Recipient,
    RefuseCode, ResumeRequest, ResumeToken, Resumed, Secret, ServerLimits, ServerMessage,
    Timestamp, TransferId, Username,
};

/// Bytes of the length header in front of every frame.
pub const HEADER_LEN: usize = 4;

/// Message type bytes. Client-to-server types are `0x01..=0x3f`,
/// server-to-client `0x41..=0x7f`, and the ones both send `0x80..`.
pub mod types {
    /// `ClientMessage::Hello`
    pub const HELLO: u8 = 0x01;
    /// `ClientMessage::Chat`
    pub const CHAT: u8 = 0x02;
    /// `ClientMessage::Who`
    pub const WHO: u8 = 0x03;
    /// `ClientMessage::FilesAccess`
    pub const FILES_ACCESS: u8 = 0x04;
    /// `ClientMessage::ListFiles`
    pub const LIST_FILES: u8 = 0x05;
    /// `ClientMessage::Download`
    pub const DOWNLOAD: u8 = 0x06;
    /// `ClientMessage::Offer`
    pub const OFFER: u8 = 0x07;
    /// `ClientMessage::Quit`
    pub const QUIT: u8 = 0x08;
    /// `ClientMessage::Ack`
    pub const ACK: u8 = 0x09;
    /// `ClientMessage::Accept`
    pub const ACCEPT: u8 = 0x0a;
    /// `ClientMessage::Auth`
    pub const AUTH: u8 = 0x0b;
    /// `ClientMessage::Register`
    pub const REGISTER: u8 = 0x0c;
    /// `ClientMessage::Unregister`
    pub const UNREGISTER: u8 = 0x0d;
    /// `ClientMessage::Operate`
    pub const OPERATE: u8 = 0x0e;
    /// `ServerMessage::Welcome`
    pub const WELCOME: u8 = 0x41;
    /// `ServerMessage::Refused`
    pub const REFUSED: u8 = 0x42;
    /// `ServerMessage::Chat`
    pub const CHAT_FROM: u8 = 0x43;
    /// `ServerMessage::Joined`
    pub const JOINED: u8 = 0x44;
    /// `ServerMessage::Left`
    pub const LEFT: u8 = 0x45;
    /// `ServerMessage::Who`
    pub const WHO_LIST: u8 = 0x46;
    /// `ServerMessage::FilesAccess`
    pub const FILES_GRANTED: u8 = 0x47;
    /// `ServerMessage::FileList`
    pub const FILE_LIST: u8 = 0x48;
    /// `ServerMessage::FileStart`
    pub const FILE_START: u8 = 0x49;
    /// `ServerMessage::PushDone`
    pub const PUSH_DONE: u8 = 0x4a;
    /// `ServerMessage::Error`
    pub const ERROR: u8 = 0x4b;
    /// `ServerMessage::Shutdown`
    pub const SHUTDOWN: u8 = 0x4c;
    /// `ServerMessage::PushAccepted`
    pub const PUSH_ACCEPTED: u8 = 0x4d;
    /// `ServerMessage::Ack`
    pub const CHAT_ACK: u8 = 0x4e;
    /// `ServerMessage::Presence`
    pub const PRESENCE: u8 = 0x4f;
    /// `ServerMessage::Notice`
    pub const NOTICE: u8 = 0x50;
    /// `ServerMessage::PushCredit`
    pub const PUSH_CREDIT: u8 = 0x51;
    /// `Chunk` (both directions)
    pub const CHUNK: u8 = 0x80;
    /// `End` (both directions)
    pub const END: u8 = 0x81;
    /// `Cancel` (both directions)
    pub const CANCEL: u8 = 0x82;
    /// `Ping` (both directions)
    pub const PING: u8 = 0x83;
    /// `Pong` (both directions)
    pub const PONG: u8 = 0x84;
}

/// A message that can be written as a frame.
///
/// Encoding never fails: the newtypes ([`Username`](crate::Username),
/// [`FileName`](crate::FileName), [`Secret`](crate::Secret)) are checked
/// when made, and the one plain string the wire holds in a byte-counted
/// field, the target of a [`ClientMessage::Operate`], is cut at the last
/// character boundary within [`MAX_TARGET_BYTES`](crate::MAX_TARGET_BYTES)
/// (so a longer one does not come back whole from [`Decoder`]). Nothing
/// here checks a frame against the peer's frame limit: a chat text longer
/// than the server's `max_text`, or a frame over its `max_frame`, encodes,
/// and the peer refuses it. [`ClientSession`](crate::ClientSession) checks
/// both before anything is queued (`TextTooLong`, `TargetTooLong`); a
/// program that encodes messages itself checks them as it does.
pub trait Encode {
    /// Appends this message's frame (header included) to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// This message's frame in a new buffer (room for a small frame from
    /// the start: an `Ack` or a short chat line costs one allocation, not
    /// one per doubling).
    fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }
}

/// The whole length (header included) of the frame at the start of `buf`,
/// read from its length header alone: `Ok(None)` while fewer than
/// [`HEADER_LEN`] bytes are there, and the error a [`Decoder`] with this
/// limit fails with for an empty or oversize frame. For a reader that
/// parses frames in place (for instance one that only counts deliveries)
/// instead of feeding a [`Decoder`]: it then hands each whole frame, after
/// the header, to [`Decode::decode_frame`].
///
/// # Errors
///
/// [`DecodeError::EmptyFrame`] for a length of 0 and
/// [`DecodeError::FrameTooLarge`] above `max_frame`: the stream is broken
/// (send [`ErrorCode::MALFORMED`](crate::ErrorCode::MALFORMED) and close).
#[inline]
pub fn frame_len(buf: &[u8], max_frame: u32) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    match BigEndian::read_u32(header) {
        0 => Err(DecodeError::EmptyFrame),
        len if len > max_frame => Err(DecodeError::FrameTooLarge {
            size: len,
            max: max_frame,
        }),
        len => Ok(Some(HEADER_LEN + len as usize)),
    }
}

/// A message that can be read from a frame (what the [`Decoder`] yields).
pub trait Decode: Sized {
    /// Decodes one frame's contents (type byte and body, without the length header).
    ///
    /// # Errors
    ///
    /// The frame is not a valid message of this direction:
    /// [`DecodeError::EmptyFrame`] with no type byte,
    /// [`DecodeError::UnknownType`], [`DecodeError::Truncated`],
    /// [`DecodeError::TrailingBytes`], [`DecodeError::InvalidUtf8`],
    /// [`DecodeError::Empty`], [`DecodeError::InvalidName`],
    /// [`DecodeError::InvalidTag`] or [`DecodeError::BadVarint`]. The
    /// stream is broken: send [`ErrorCode::MALFORMED`](crate::ErrorCode::MALFORMED)
    /// and close.
    fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError>;

    /// The message for a file chunk, for a decoder that reads a large
    /// chunk's data straight into its own buffer (as the blocking
    /// reader does). `None` (the default) keeps chunks on the ordinary
    /// path.
    #[must_use]
    fn from_chunk(chunk: FileChunk) -> Option<Self> {
        let _ = chunk;
        None
    }
}

/// Bytes before a chunk's data in its frame, after the length header:
/// type, id, offset, crc, data length.
const CHUNK_PREFIX: usize = 1 + 4 + 8 + 4 + 4;
/// The length header and the chunk prefix: what a reader expecting another
/// large chunk reads first, so that the data goes straight to its buffer,
/// and the room a sender filling a frame in place leaves before the data.
pub(crate) const CHUNK_HEAD: usize = HEADER_LEN + CHUNK_PREFIX;
/// Chunks with at least this much data that have not fully arrived are
/// received straight into their own buffer (no copy out of the stream
/// buffer, no second copy into the message).
const DIRECT_BODY_MIN: usize = 16 * 1024;

/// A large chunk being received straight into its data buffer.
#[derive(Debug)]
struct Body {
    id: TransferId,
    offset: u64,
    crc: u32,
    data: Vec<u8>,
    have: usize,
}

/// Writes the header, the type byte, then whatever `body` appends, and
/// patches the length in.
fn frame(out: &mut Vec<u8>, ty: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(ty);
    body(out);
    let len = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    BigEndian::write_u32(&mut out[start..start + HEADER_LEN], len);
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// A name: its validated newtype keeps it at most 255 bytes. A longer
/// string (an operator's target built by hand) is cut at the last
/// character boundary within 255 bytes, so the frame stays valid UTF-8.
fn put_str8(out: &mut Vec<u8>, s: &str) {
    let mut len = s.len().min(255);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    out.push(len as u8);
    out.extend_from_slice(&s.as_bytes()[..len]);
}
fn put_str32(out: &mut Vec<u8>, s: &str) {
    put_u32(out, u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(s.as_bytes());
}

/// The events of a `Presence` frame, each one's id and time written as
/// the difference from the previous one's (from 0 for the first): the id
/// as an unsigned number (ids grow), the time zigzag-coded (a wall clock
/// may step back), both wrapping, so that every pair of `u64`s has one form.
fn put_presence(out: &mut Vec<u8>, events: &[PresenceEvent]) {
    put_u32(out, u32::try_from(events.len()).unwrap_or(u32::MAX));
    let (mut id, mut time) = (0u64, 0u64);
    for e in events {
        let (kind, eid, etime, user) = match e {
            PresenceEvent::Joined { id, time, user } => (0, id.0, time.0, user),
            PresenceEvent::Left(d) => (1, d.id.0, d.time.0, &d.user),
            PresenceEvent::Away { id, time, user } => (2, id.0, time.0, user),
            PresenceEvent::Back { id, time, user } => (3, id.0, time.0, user),
        };
        out.push(kind);
        varint::put(out, eid.wrapping_sub(id));
        varint::put(out, varint::zigzag(etime.wrapping_sub(time)));
        (id, time) = (eid, etime);
        put_str8(out, user.as_str());
        if let PresenceEvent::Left(d) = e {
            out.push(d.reason.0);
            put_str32(out, &d.text);
        }
    }
}

fn put_kind(out: &mut Vec<u8>, kind: ChatKind) {
    out.push(match kind {
        ChatKind::Text => 0,
        ChatKind::Action => 1,
    });
}
fn put_limits(out: &mut Vec<u8>, l: &ServerLimits) {
    put_u32(out, l.max_frame);
    put_u32(out, l.max_text);
    put_u32(out, l.rate_burst);
    put_u32(out, l.rate_per_sec);
    put_u32(out, l.rate_burst_bytes);
    put_u32(out, l.rate_bytes_per_sec);
    put_u32(out, l.max_transfers);
    put_u64(out, l.max_push_size);
}
fn put_recipient(out: &mut Vec<u8>, to: &Recipient) {
    match to {
        Recipient::Everyone => out.push(0),
        Recipient::User(u) => {
            out.push(1);
            put_str8(out, u.as_str());
        }
    }
}

/// Appends a chunk frame for `data` straight from a slice, computing its
/// CRC32: the fast path for a sender streaming a file (no `FileChunk` built).
pub fn encode_chunk(out: &mut Vec<u8>, id: TransferId, offset: u64, data: &[u8]) {
    let crc = crc32fast::hash(data);
    encode_chunk_with_crc(out, id, offset, data, crc);
}

/// Writes the first [`CHUNK_HEAD`] bytes of a chunk frame whose `len`
/// data bytes follow them: the same bytes [`encode_chunk_with_crc`] writes.
pub(crate) fn write_chunk_head(head: &mut [u8], id: TransferId, offset: u64, crc: u32, len: usize) {
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    BigEndian::write_u32(
        &mut head[..HEADER_LEN],
        len32.saturating_add(CHUNK_PREFIX as u32),
    );
    head[HEADER_LEN] = types::CHUNK;
    let p = &mut head[HEADER_LEN + 1..CHUNK_HEAD];
    BigEndian::write_u32(&mut p[0..4], id.0);
    BigEndian::write_u64(&mut p[4..12], offset);
    BigEndian::write_u32(&mut p[12..16], crc);
    BigEndian::write_u32(&mut p[16..20], len32);
}

pub(crate) fn encode_chunk_with_crc(
    out: &mut Vec<u8>,
    id: TransferId,
    offset: u64,
    data: &[u8],
    crc: u32,
) {
    out.reserve(HEADER_LEN + 21 + data.len());
    frame(out, types::CHUNK, |out| {
        put_u32(out, id.0);
        put_u64(out, offset);
        put_u32(out, crc);
        put_u32(out, u32::try_from(data.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(data);
    });
}

fn encode_end(out: &mut Vec<u8>, end: &FileEnd) {
    frame(out, types::END, |out| {
        put_u32(out, end.id.0);
        put_u32(out, end.crc);
    });
}

fn encode_cancel(out: &mut Vec<u8>, c: &FileCancel) {
    frame(out, types::CANCEL, |out| {
        put_u32(out, c.id.0);
        put_u16(out, c.code.0);
        put_str32(out, &c.reason);
    });
}

fn encode_u64(out: &mut Vec<u8>, ty: u8, v: u64) {
    frame(out, ty, |out| put_u64(out, v));
}

impl Encode for ClientMessage {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientMessage::Hello {
                version,
                username,
                resume,
            } => frame(out, types::HELLO, |out| {
                put_u16(out, *version);
                put_str8(out, username.as_str());
                // Optional and last: present exactly when bytes follow the name.
                if let Some(r) = resume {
                    out.extend_from_slice(&r.token.0);
                    put_u64(out, r.last_seen.0);
                    put_u64(out, r.epoch);
                }
            }),
            ClientMessage::Chat {
                client_id,
                to,
                kind,
                text,
            } => frame(out, types::CHAT, |out| {
                put_u64(out, *client_id);
                put_recipient(out, to);
                put_kind(out, *kind);
                put_str32(out, text);
            }),
            ClientMessage::Who => frame(out, types::WHO, |_| {}),
            ClientMessage::FilesAccess => frame(out, types::FILES_ACCESS, |_| {}),
            ClientMessage::ListFiles => frame(out, types::LIST_FILES, |_| {}),
            ClientMessage::Download { id, name, offset } => frame(out, types::DOWNLOAD, |out| {
                put_u32(out, id.0);
                put_str8(out, name.as_str());
                put_u64(out, *offset);
            }),
            ClientMessage::Ack { id, offset } => frame(out, types::ACK, |out| {
                put_u32(out, id.0);
                put_u64(out, *offset);
            }),
            ClientMessage::Accept { id } => frame(out, types::ACCEPT, |out| put_u32(out, id.0)),
            ClientMessage::Offer { id, name, size, to } => frame(out, types::OFFER, |out| {
                put_u32(out, id.0);
                put_str8(out, name.as_str());
                put_u64(out, *size);
                put_recipient(out, to);
            }),
            ClientMessage::Chunk(c) => encode_chunk_with_crc(out, c.id, c.offset, &c.data, c.crc),
            ClientMessage::End(e) => encode_end(out, e),
            ClientMessage::Cancel(c) => encode_cancel(out, c),
            ClientMessage::Ping(v) => encode_u64(out, types::PING, *v),
            ClientMessage::Pong(v) => encode_u64(out, types::PONG, *v),
            ClientMessage::Quit { reason } => frame(out, types::QUIT, |out| put_str32(out, reason)),
            ClientMessage::Auth { server, account } => frame(out, types::AUTH, |out| {
                // An absent secret is the empty string.
                put_str8(out, server.as_ref().map_or("", Secret::expose));
                put_str8(out, account.as_ref().map_or("", Secret::expose));
            }),
            ClientMessage::Register { password } => frame(out, types::REGISTER, |out| {
                put_str8(out, password.expose());
            }),
            ClientMessage::Unregister => frame(out, types::UNREGISTER, |_| {}),
            ClientMessage::Operate {
                action,
                target,
                reason,
            } => frame(out, types::OPERATE, |out| {
                out.push(action.to_byte());
                put_str8(out, target);
                put_str32(out, reason);
            }),
        }
    }
}

impl Encode for ServerMessage {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ServerMessage::Welcome {
                version,
                username,
                text,
                limits,
                token,
                epoch,
                grace_secs,
                last_id,
                resumed,
            } => frame(out, types::WELCOME, |out| {
                put_u16(out, *version);
                put_str8(out, username.as_str());
                put_limits(out, limits);
                put_str32(out, text);
                out.extend_from_slice(&token.0);
                put_u64(out, *epoch);
                put_u32(out, *grace_secs);
                put_u64(out, last_id.0);
                match resumed {
                    None => out.push(0),
                    Some(r) => {
                        out.push(1);
                        put_u64(out, r.dropped);
                    }
                }
            }),
            ServerMessage::Refused {
                code,
                reason,
                version,
            } => frame(out, types::REFUSED, |out| {
                put_u16(out, code.0);
                put_u16(out, *version);
                put_str32(out, reason);
            }),
            ServerMessage::Chat(RoutedChat {
                id,
                time,
                from,
                private,
                kind,
                text,
                history,
            }) => frame(out, types::CHAT_FROM, |out| {
                put_u64(out, id.0);
                put_u64(out, time.0);
                put_str8(out, from.as_str());
                out.push(u8::from(*private));
                put_kind(out, *kind);
                out.push(u8::from(*history));
                put_str32(out, text);
            }),
            ServerMessage::Joined { id, time, user } => frame(out, types::JOINED, |out| {
                put_u64(out, id.0);
                put_u64(out, time.0);
                put_str8(out, user.as_str());
            }),
            ServerMessage::Presence(events) => {
                frame(out, types::PRESENCE, |out| put_presence(out, events));
            }
            ServerMessage::Ack {
                client_id,
                id,
                time,
            } => frame(out, types::CHAT_ACK, |out| {
                put_u64(out, *client_id);
                put_u64(out, id.0);
                put_u64(out, time.0);
            }),
            ServerMessage::Left(Departure {
                id,
                time,
                user,
                reason,
                text,
            }) => frame(out, types::LEFT, |out| {
                put_u64(out, id.0);
                put_u64(out, time.0);
                put_str8(out, user.as_str());
                out.push(reason.0);
                put_str32(out, text);
            }),
            ServerMessage::Who { users } => frame(out, types::WHO_LIST, |out| {
                put_u32(out, u32::try_from(users.len()).unwrap_or(u32::MAX));
                for u in users {
                    put_str8(out, u.name.as_str());
                }
                // Optional and last: the presence of each user, present
                // exactly when one of them is away.
                if users.iter().any(|u| u.away_secs.is_some()) {
                    for u in users {
                        match u.away_secs {
                            None => out.push(0),
                            Some(secs) => {
                                out.push(1);
                                varint::put(out, secs);
                            }
                        }
                    }
                }
            }),
            ServerMessage::FilesAccess { count } => {
                frame(out, types::FILES_GRANTED, |out| put_u64(out, *count));
            }
            ServerMessage::FileList(FileListPart { files, last }) => {
                frame(out, types::FILE_LIST, |out| {
                    out.push(u8::from(*last));
                    put_u32(out, u32::try_from(files.len()).unwrap_or(u32::MAX));
                    for f in files {
                        put_str8(out, f.name.as_str());
                        put_u64(out, f.size);
                    }
                })
            }
            ServerMessage::FileStart(FileStart {
                id,
                name,
                size,
                offset,
                origin,
            }) => frame(out, types::FILE_START, |out| {
                put_u32(out, id.0);
                put_str8(out, name.as_str());
                put_u64(out, *size);
                put_u64(out, *offset);
                match origin {
                    Origin::Download => out.push(0),
                    Origin::Push { from } => {
                        out.push(1);
                        put_str8(out, from.as_str());
                    }
                }
            }),
            ServerMessage::Chunk(c) => encode_chunk_with_crc(out, c.id, c.offset, &c.data, c.crc),
            ServerMessage::End(e) => encode_end(out, e),
            ServerMessage::Cancel(c) => encode_cancel(out, c),
            ServerMessage::PushDone { id, receivers } => frame(out, types::PUSH_DONE, |out| {
                put_u32(out, id.0);
                put_u32(out, *receivers);
            }),
            ServerMessage::PushAccepted { id, receivers } => {
                frame(out, types::PUSH_ACCEPTED, |out| {
                    put_u32(out, id.0);
                    put_u32(out, *receivers);
                });
            }
            ServerMessage::PushCredit { id, offset } => frame(out, types::PUSH_CREDIT, |out| {
                put_u32(out, id.0);
                put_u64(out, *offset);
            }),
            ServerMessage::Error {
                code,
                client_id,
                text,
            } => frame(out, types::ERROR, |out| {
                put_u16(out, code.0);
                put_u64(out, *client_id);
                put_str32(out, text);
            }),
            ServerMessage::Ping(v) => encode_u64(out, types::PING, *v),
            ServerMessage::Pong(v) => encode_u64(out, types::PONG, *v),
            ServerMessage::Shutdown { reason } => {
                frame(out, types::SHUTDOWN, |out| put_str32(out, reason));
            }
            ServerMessage::Notice { code, text } => frame(out, types::NOTICE, |out| {
                put_u16(out, code.0);
                put_str32(out, text);
            }),
        }
    }
}

/// Reads the fields of one frame body, refusing to run past its end.
struct Fields<'a> {
    buf: &'a [u8],
    ty: u8,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { ty: self.ty });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(BigEndian::read_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(BigEndian::read_u64(self.take(8)?))
    }
    /// An unsigned LEB128 number in its shortest form, at most 64 bits.
    fn uvar(&mut self) -> Result<u64, DecodeError> {
        varint::read(&mut self.buf).map_err(|e| match e {
            varint::VarintError::CutShort => DecodeError::Truncated { ty: self.ty },
            varint::VarintError::Malformed => DecodeError::BadVarint { ty: self.ty },
        })
    }
    fn presence(&mut self) -> Result<Vec<PresenceEvent>, DecodeError> {
        // Kind, id, time, name length and at least one character.
        let n = self.count(5)?;
        let mut events = self.list(n);
        let (mut id, mut time) = (0u64, 0u64);
        for _ in 0..n {
            let kind = self.u8()?;
            if kind > 3 {
                return Err(DecodeError::InvalidTag {
                    field: "presence",
                    value: kind,
                });
            }
            id = id.wrapping_add(self.uvar()?);
            time = time.wrapping_add(varint::unzigzag(self.uvar()?));
            let user = self.username("user")?;
            let (id, time) = (MessageId(id), Timestamp(time));
            events.push(match kind {
                0 => PresenceEvent::Joined { id, time, user },
                1 => PresenceEvent::Left(Departure {
                    id,
                    time,
                    user,
                    reason: LeaveReason(self.u8()?),
                    text: self.str32("text")?,
                }),
                2 => PresenceEvent::Away { id, time, user },
                _ => PresenceEvent::Back { id, time, user },
            });
        }
        Ok(events)
    }
    /// The presence trailer of a `Who`: one tag per user, and for a user
    /// away how long it has been. Sent only when someone is away, so a
    /// trailer that marks nobody is not the canonical form of its list.
    fn away(&mut self, users: &mut [OnlineUser]) -> Result<(), DecodeError> {
        for u in users.iter_mut() {
            match self.u8()? {
                0 => {}
                1 => u.away_secs = Some(self.uvar()?),
                value => {
                    return Err(DecodeError::InvalidTag {
                        field: "away",
                        value,
                    })
                }
            }
        }
        if users.iter().all(|u| u.away_secs.is_none()) {
            return Err(DecodeError::InvalidTag {
                field: "away",
                value: 0,
            });
        }
        Ok(())
    }
    fn token(&mut self) -> Result<ResumeToken, DecodeError> {
        let mut t = [0u8; 16];
        t.copy_from_slice(self.take(16)?);
        Ok(ResumeToken(t))
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidTag { field, value }),
        }
    }
    fn utf8(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { field })
    }
    fn str8(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        Self::utf8(bytes, field)
    }
    fn str32(&mut self, field: &'static str) -> Result<String, DecodeError> {
        // The length is checked against what the frame holds before anything is copied.
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        Self::utf8(bytes, field)
    }
    /// A `str8` secret; empty means none.
    fn secret(&mut self, field: &'static str) -> Result<Option<Secret>, DecodeError> {
        Ok(Secret::new(self.str8(field)?))
    }
    fn username(&mut self, field: &'static str) -> Result<Username, DecodeError> {
        Username::new(self.str8(field)?).map_err(|error| DecodeError::InvalidName { field, error })
    }
    fn file_name(&mut self, field: &'static str) -> Result<FileName, DecodeError> {
        FileName::new(self.str8(field)?).map_err(|error| DecodeError::InvalidName { field, error })
    }
    fn kind(&mut self) -> Result<ChatKind, DecodeError> {
        match self.u8()? {
            0 => Ok(ChatKind::Text),
            1 => Ok(ChatKind::Action),
            value => Err(DecodeError::InvalidTag {
                field: "kind",
                value,
            }),
        }
    }
    fn limits(&mut self) -> Result<ServerLimits, DecodeError> {
        Ok(ServerLimits {
            max_frame: self.u32()?,
            max_text: self.u32()?,
            rate_burst: self.u32()?,
            rate_per_sec: self.u32()?,
            rate_burst_bytes: self.u32()?,
            rate_bytes_per_sec: self.u32()?,
            max_transfers: self.u32()?,
            max_push_size: self.u64()?,
        })
    }
    fn recipient(&mut self) -> Result<Recipient, DecodeError> {
        match self.u8()? {
            0 => Ok(Recipient::Everyone),
            1 => Ok(Recipient::User(self.username("to")?)),
            value => Err(DecodeError::InvalidTag { field: "to", value }),
        }
    }
    /// A list count, bounded by what the frame can hold so that a hostile
    /// count never reserves more than the frame's own size.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.buf.len() / min_item {
            return Err(DecodeError::Truncated { ty: self.ty });
        }
        Ok(n)
    }
    /// An empty list with room for `n` items, but never for more bytes than
    /// the frame has left: `count` only proves each item has its minimum
    /// wire size, and a decoded item is larger in memory than on the wire
    /// (a 2-byte name becomes a 24-byte `String`), so trusting `n` would let
    /// a frame of garbage reserve many times the frame limit.
    fn list<T>(&self, n: usize) -> Vec<T> {
        let room = self.buf.len() / std::mem::size_of::<T>().max(1);
        Vec::with_capacity(n.min(room))
    }
    fn chunk(&mut self) -> Result<FileChunk, DecodeError> {
        let id = TransferId(self.u32()?);
        let offset = self.u64()?;
        let crc = self.u32()?;
        let len = self.u32()? as usize;
        let data = self.take(len)?.to_vec();
        Ok(FileChunk {
            id,
            offset,
            data,
            crc,
        })
    }
    fn end(&mut self) -> Result<FileEnd, DecodeError> {
        Ok(FileEnd {
            id: TransferId(self.u32()?),
            crc: self.u32()?,
        })
    }
    fn cancel(&mut self) -> Result<FileCancel, DecodeError> {
        Ok(FileCancel {
            id: TransferId(self.u32()?),
            code: CancelCode(self.u16()?),
            reason: self.str32("reason")?,
        })
    }
    fn finish<T>(self, value: T) -> Result<T, DecodeError> {
        if self.buf.is_empty() {
            Ok(value)
        } else {
            Err(DecodeError::TrailingBytes {
                ty: self.ty,
                extra: self.buf.len(),
            })
        }
    }
}

fn split_type(frame: &[u8]) -> Result<Fields<'_>, DecodeError> {
    match frame.split_first() {
        Some((&ty, buf)) => Ok(Fields { buf, ty }),
        None => Err(DecodeError::EmptyFrame),
    }
}

impl Decode for ClientMessage {
    fn from_chunk(chunk: FileChunk) -> Option<Self> {
        Some(ClientMessage::Chunk(chunk))
    }

    fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError> {
        let mut f = split_type(frame)?;
        let msg = match f.ty {
            types::HELLO => ClientMessage::Hello {
                version: f.u16()?,
                username: f.username("username")?,
                // A version-1 Hello ends here: it still decodes, and is
                // refused for its version.
                resume: if f.buf.is_empty() {
                    None
                } else {
                    Some(ResumeRequest {
                        token: f.token()?,
                        last_seen: MessageId(f.u64()?),
                        epoch: f.u64()?,
                    })
                },
            },
            types::CHAT => ClientMessage::Chat {
                client_id: f.u64()?,
                to: f.recipient()?,
                kind: f.kind()?,
                text: f.str32("text")?,
            },
            types::WHO => ClientMessage::Who,
            types::FILES_ACCESS => ClientMessage::FilesAccess,
            types::LIST_FILES => ClientMessage::ListFiles,
            types::DOWNLOAD => ClientMessage::Download {
                id: TransferId(f.u32()?),
                name: f.file_name("name")?,
                offset: f.u64()?,
            },
            types::ACK => ClientMessage::Ack {
                id: TransferId(f.u32()?),
                offset: f.u64()?,
            },
            types::ACCEPT => ClientMessage::Accept {
                id: TransferId(f.u32()?),
            },
            types::OFFER => ClientMessage::Offer {
                id: TransferId(f.u32()?),
                name: f.file_name("name")?,
                size: f.u64()?,
                to: f.recipient()?,
            },
            types::QUIT => ClientMessage::Quit {
                reason: f.str32("reason")?,
            },
            types::AUTH => ClientMessage::Auth {
                server: f.secret("server")?,
                account: f.secret("account")?,
            },
            types::REGISTER => ClientMessage::Register {
                password: f
                    .secret("password")?
                    .ok_or(DecodeError::Empty { field: "password" })?,
            },
            types::UNREGISTER => ClientMessage::Unregister,
            types::OPERATE => ClientMessage::Operate {
                action: {
                    let value = f.u8()?;
                    OpAction::from_byte(value).ok_or(DecodeError::InvalidTag {
                        field: "action",
                        value,
                    })?
                },
                target: f.str8("target")?,
                reason: f.str32("reason")?,
            },
            types::CHUNK => ClientMessage::Chunk(f.chunk()?),
            types::END => ClientMessage::End(f.end()?),
            types::CANCEL => ClientMessage::Cancel(f.cancel()?),
            types::PING => ClientMessage::Ping(f.u64()?),
            types::PONG => ClientMessage::Pong(f.u64()?),
            ty => return Err(DecodeError::UnknownType { ty }),
        };
        f.finish(msg)
    }
}

impl Decode for ServerMessage {
    fn from_chunk(chunk: FileChunk) -> Option<Self> {
        Some(ServerMessage::Chunk(chunk))
    }

    fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError> {
        let mut f = split_type(frame)?;
        let msg = match f.ty {
            types::WELCOME => ServerMessage::Welcome {
                version: f.u16()?,
                username: f.username("username")?,
                limits: f.limits()?,
                text: f.str32("text")?,
                token: f.token()?,
                epoch: f.u64()?,
                grace_secs: f.u32()?,
                last_id: MessageId(f.u64()?),
                resumed: match f.u8()? {
                    0 => None,
                    1 => Some(Resumed { dropped: f.u64()? }),
                    value => {
                        return Err(DecodeError::InvalidTag {
                            field: "resumed",
                            value,
                        })
                    }
                },
            },
            types::REFUSED => ServerMessage::Refused {
                code: RefuseCode(f.u16()?),
                version: f.u16()?,
                reason: f.str32("reason")?,
            },
            types::CHAT_FROM => ServerMessage::Chat(RoutedChat {
                id: MessageId(f.u64()?),
                time: Timestamp(f.u64()?),
                from: f.username("from")?,
                private: f.bool("private")?,
                kind: f.kind()?,
                history: f.bool("history")?,
                text: f.str32("text")?,
            }),
            types::JOINED => ServerMessage::Joined {
                id: MessageId(f.u64()?),
                time: Timestamp(f.u64()?),
                user: f.username("user")?,
            },
            types::PRESENCE => ServerMessage::Presence(f.presence()?),
            types::CHAT_ACK => ServerMessage::Ack {
                client_id: f.u64()?,
                id: MessageId(f.u64()?),
                time: Timestamp(f.u64()?),
            },
            types::LEFT => ServerMessage::Left(Departure {
                id: MessageId(f.u64()?),
                time: Timestamp(f.u64()?),
                user: f.username("user")?,
                reason: LeaveReason(f.u8()?),
                text: f.str32("text")?,
            }),
            types::WHO_LIST => {
                let n = f.count(2)?;
                let mut users = f.list(n);
                for _ in 0..n {
                    users.push(OnlineUser::here(f.username("users")?));
                }
                if !f.buf.is_empty() {
                    f.away(&mut users)?;
                }
                ServerMessage::Who { users }
            }
            types::FILES_GRANTED => ServerMessage::FilesAccess { count: f.u64()? },
            types::FILE_LIST => {
                let last = f.bool("last")?;
                let n = f.count(10)?;
                let mut files = f.list(n);
                for _ in 0..n {
                    files.push(FileEntry {
                        name: f.file_name("files")?,
                        size: f.u64()?,
                    });
                }
                ServerMessage::FileList(FileListPart { files, last })
            }
            types::FILE_START => ServerMessage::FileStart(FileStart {
                id: TransferId(f.u32()?),
                name: f.file_name("name")?,
                size: f.u64()?,
                offset: f.u64()?,
                origin: match f.u8()? {
                    0 => Origin::Download,
                    1 => Origin::Push {
                        from: f.username("from")?,
                    },
                    value => {
                        return Err(DecodeError::InvalidTag {
                            field: "origin",
                            value,
                        })
                    }
                },
            }),
            types::PUSH_DONE => ServerMessage::PushDone {
                id: TransferId(f.u32()?),
                receivers: f.u32()?,
            },
            types::PUSH_ACCEPTED => ServerMessage::PushAccepted {
                id: TransferId(f.u32()?),
                receivers: f.u32()?,
            },
            types::PUSH_CREDIT => ServerMessage::PushCredit {
                id: TransferId(f.u32()?),
                offset: f.u64()?,
            },
            types::ERROR => ServerMessage::Error {
                code: ErrorCode(f.u16()?),
                client_id: f.u64()?,
                text: f.str32("text")?,
            },
            types::SHUTDOWN => ServerMessage::Shutdown {
                reason: f.str32("reason")?,
            },
            types::NOTICE => ServerMessage::Notice {
                code: NoticeCode(f.u16()?),
                text: f.str32("text")?,
            },
            types::CHUNK => ServerMessage::Chunk(f.chunk()?),
            types::END => ServerMessage::End(f.end()?),
            types::CANCEL => ServerMessage::Cancel(f.cancel()?),
            types::PING => ServerMessage::Ping(f.u64()?),
            types::PONG => ServerMessage::Pong(f.u64()?),
            ty => return Err(DecodeError::UnknownType { ty }),
        };
        f.finish(msg)
    }
}

/// The streaming decoder: [`feed`](Decoder::feed) it bytes as they arrive, in
/// any split, and take messages with [`next_message`](Decoder::next_message).
///
/// A frame's length is checked against the limit as soon as its 4 header
/// bytes are in, before any memory is reserved for it, so a hostile header
/// costs nothing. After an error the decoder is failed for good: every later
/// call returns the same error, and the caller closes the connection.
#[derive(Debug)]
pub struct Decoder<M> {
    buf: Vec<u8>,
    pos: usize,
    max_frame: u32,
    error: Option<DecodeError>,
    /// A large chunk in progress: its bytes come before anything in `buf`.
    body: Option<Body>,
    /// Buffers handed back with [`recycle`](Decoder::recycle), reused for
    /// the data of the next large chunks.
    spare: Vec<Vec<u8>>,
    /// The last message was a large chunk received directly.
    expect_chunk: bool,
    _message: PhantomData<fn() -> M>,
}

/// Consumed bytes are dropped from the front of the buffer once at least
/// this many have piled up (and they are at least half of it), instead of
/// shifting the buffer after every message.
const COMPACT_AT: usize = 64 * 1024;

impl<M: Decode> Decoder<M> {
    /// A decoder that refuses frames longer than `max_frame` bytes (type byte included).
    #[must_use]
    pub fn new(max_frame: u32) -> Self {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            max_frame,
            error: None,
            body: None,
            spare: Vec::new(),
            expect_chunk: false,
            _message: PhantomData,
        }
    }

    /// Changes the frame limit (a server raises it once the handshake is done).
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// The frame limit in force.
    #[must_use]
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Appends received bytes. Nothing is decoded until [`next_message`](Self::next_message).
    /// Bytes fed after a failure are dropped.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(body) = self.body.as_mut() {
            let n = bytes.len().min(body.data.len() - body.have);
            body.data[body.have..body.have + n].copy_from_slice(&bytes[..n]);
            body.have += n;
            bytes = &bytes[n..];
            if bytes.is_empty() {
                return;
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= COMPACT_AT && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.make_room(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Ensures room for `extra` more bytes. `Vec`'s own growth doubles the
    /// capacity, which would let a buffer holding one maximal frame grow to
    /// twice the frame limit when the next read runs past its end. Instead:
    /// drop consumed bytes if that frees enough room, else double only up to
    /// one whole frame plus this read, and past that grow to exactly what is
    /// needed.
    fn make_room(&mut self, extra: usize) {
        let needed = self.buf.len().saturating_add(extra);
        let capacity = self.buf.capacity();
        if needed <= capacity {
            return;
        }
        if self.pos > 0 && needed - self.pos <= capacity {
            self.buf.drain(..self.pos);
            self.pos = 0;
            return;
        }
        let frame_room = (self.max_frame as usize)
            .saturating_add(HEADER_LEN)
            .saturating_add(extra);
        let target = needed.max(capacity.saturating_mul(2).min(frame_room));
        self.buf.reserve_exact(target - self.buf.len());
    }

    /// The next complete message: `Ok(Some(m))`, `Ok(None)` when more bytes
    /// are needed (nothing is consumed), or the error that broke the stream.
    ///
    /// # Errors
    ///
    /// [`DecodeError::EmptyFrame`] or [`DecodeError::FrameTooLarge`] as
    /// soon as a length header says so (before anything is reserved), else
    /// what [`Decode::decode_frame`] returns for the frame. The decoder
    /// stays failed: every later call returns the same error. Send
    /// [`ErrorCode::MALFORMED`](crate::ErrorCode::MALFORMED) and close the
    /// connection.
    pub fn next_message(&mut self) -> Result<Option<M>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if let Some(body) = &self.body {
            if body.have < body.data.len() {
                return Ok(None);
            }
            let Some(Body {
                id,
                offset,
                crc,
                data,
                ..
            }) = self.body.take()
            else {
                return Ok(None);
            };
            let chunk = FileChunk {
                id,
                offset,
                data,
                crc,
            };
            self.expect_chunk = true;
            return Ok(M::from_chunk(chunk));
        }
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = BigEndian::read_u32(&avail[..HEADER_LEN]);
        if len == 0 {
            return Err(self.fail(DecodeError::EmptyFrame));
        }
        if len > self.max_frame {
            return Err(self.fail(DecodeError::FrameTooLarge {
                size: len,
                max: self.max_frame,
            }));
        }
        let total = HEADER_LEN + len as usize;
        if avail.len() < total && self.start_body(len as usize) {
            return Ok(None);
        }
        let avail = &self.buf[self.pos..];
        if avail.len() < total {
            // Reserve the rest of this frame now (it is within the limit) so
            // that it arrives without repeated reallocation: exactly, and
            // after dropping consumed bytes, so that the buffer holds one
            // frame rather than up to twice the limit.
            if self.pos + total > self.buf.capacity() {
                self.buf.drain(..self.pos);
                self.pos = 0;
                let missing = total - self.buf.len();
                self.buf.reserve_exact(missing);
            }
            return Ok(None);
        }
        let result = M::decode_frame(&avail[HEADER_LEN..total]);
        self.pos += total;
        self.expect_chunk = false;
        match result {
            Ok(m) => Ok(Some(m)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Starts receiving a partly buffered large chunk frame (of `len`
    /// bytes after the header) straight into its data buffer, moving the
    /// data already buffered there. False (nothing changed) for any other
    /// frame, or when the message type takes no direct chunks.
    fn start_body(&mut self, len: usize) -> bool {
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER_LEN + CHUNK_PREFIX || avail[HEADER_LEN] != types::CHUNK {
            return false;
        }
        let p = &avail[HEADER_LEN + 1..HEADER_LEN + CHUNK_PREFIX];
        let data_len = BigEndian::read_u32(&p[16..20]) as usize;
        // Anything inconsistent is left to the ordinary path and its errors.
        if data_len < DIRECT_BODY_MIN || data_len != len - CHUNK_PREFIX {
            return false;
        }
        let probe = FileChunk {
            id: TransferId(0),
            offset: 0,
            data: Vec::new(),
            crc: 0,
        };
        if M::from_chunk(probe).is_none() {
            return false;
        }
        let mut data = match self.spare.pop() {
            // Old contents are overwritten; only growth is zeroed.
            Some(mut v) => {
                v.resize(data_len, 0);
                v
            }
            None => vec![0u8; data_len],
        };
        let got = &avail[HEADER_LEN + CHUNK_PREFIX..];
        data[..got.len()].copy_from_slice(got);
        self.body = Some(Body {
            id: TransferId(BigEndian::read_u32(&p[0..4])),
            offset: BigEndian::read_u64(&p[4..12]),
            crc: BigEndian::read_u32(&p[12..16]),
            have: got.len(),
            data,
        });
        // Everything buffered belonged to this frame.
        self.buf.clear();
        self.pos = 0;
        true
    }

    /// Where the next received bytes should go when a large chunk is
    /// being received: the rest of its data buffer. A reader that reads
    /// into it and calls [`body_filled`](Self::body_filled) saves the copy
    /// [`feed`](Self::feed) makes. `None` otherwise (use `feed`).
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub(crate) fn body_buf(&mut self) -> Option<&mut [u8]> {
        if self.error.is_some() {
            return None;
        }
        self.body
            .as_mut()
            .filter(|b| b.have < b.data.len())
            .map(|b| &mut b.data[b.have..])
    }

    /// Hands back the data buffer of a chunk this decoder produced, once
    /// the application is done with it: the next large chunk is received
    /// into it, which saves allocating and zeroing a fresh one. At most a
    /// few are kept.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        // The length stays: those bytes are initialized already.
        if self.spare.len() < 4 && buf.len() >= DIRECT_BODY_MIN {
            self.spare.push(buf);
        }
    }

    /// True if the last message was a large chunk received directly: the
    /// next frame is likely another.
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub(crate) fn expects_chunk(&self) -> bool {
        self.expect_chunk
    }

    /// `n` bytes were written at the start of [`body_buf`](Self::body_buf).
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub(crate) fn body_filled(&mut self, n: usize) {
        if let Some(b) = self.body.as_mut() {
            b.have = (b.have + n).min(b.data.len());
        }
    }

    /// True when [`next_message`](Self::next_message) would answer
    /// without more bytes: a whole frame is buffered, or the buffered
    /// header is already an error. A reader uses it to know whether its
    /// next read may block.
    #[must_use]
    pub fn has_message_ready(&self) -> bool {
        if self.error.is_some() {
            return true;
        }
        if let Some(b) = &self.body {
            return b.have == b.data.len();
        }
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER_LEN {
            return false;
        }
        let len = BigEndian::read_u32(&avail[..HEADER_LEN]);
        len == 0 || len > self.max_frame || avail.len() >= HEADER_LEN + len as usize
    }

    /// Bytes fed but not yet consumed by a returned message.
    #[must_use]
    pub fn buffered(&self) -> usize {
        let body = self
            .body
            .as_ref()
            .map_or(0, |b| HEADER_LEN + CHUNK_PREFIX + b.have);
        self.buf.len() - self.pos + body
    }

    /// True once an error has been returned.
    #[must_use]
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.error = Some(e.clone());
        self.buf = Vec::new();
        self.pos = 0;
        self.body = None;
        e
    }
}

pub mod varint;

#[cfg(test)]
mod tests;
