//! The typed errors of the library, kept apart by what the caller does next.

use thiserror::Error;

use crate::codes::CancelCode;
use crate::message::TransferId;

/// A username or file name broke the naming rules. Show it to the user; the
/// name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is too long.
    #[error("name is too long: {}", too_long(*len, *max, *unit))]
    TooLong {
        /// Its length, in `unit`s.
        len: usize,
        /// The maximum.
        max: usize,
        /// What `len` and `max` count: characters for usernames (a
        /// combining accent is one of its own), bytes of UTF-8 for file
        /// names.
        unit: LengthUnit,
    },
    /// The name holds a character that is not allowed.
    #[error("name contains a character that is not allowed: {}", shown_char(*ch))]
    BadChar {
        /// The character.
        ch: char,
    },
    /// The name starts with `.` (for a file, this also rules out `.` and
    /// `..`).
    #[error("name starts with '.'")]
    LeadingDot,
    /// The name ends with `.` or a blank: a space of any kind, or the
    /// blank Braille pattern (Windows drops trailing dots and spaces, so
    /// the name would not be the one shown; a name of blanks shows as
    /// nothing).
    #[error("name ends with '.' or a blank (a space of any kind)")]
    TrailingDotOrSpace,
    /// A username ends with `.`.
    #[error("name ends with '.'")]
    TrailingDot,
    /// The username is a reserved word.
    #[error("'{name}' is reserved")]
    Reserved {
        /// The name asked for.
        name: String,
    },
}

/// A character as an error shows it: quoted, or as `U+XXXX` when it would
/// not show (a space, a control, an invisible letter such as a Hangul
/// filler).
fn shown_char(ch: char) -> String {
    if ch.is_whitespace() || ch.is_control() || crate::display::is_hidden_char(ch) {
        format!("U+{:04X}", u32::from(ch))
    } else {
        format!("'{ch}'")
    }
}

/// What the length of a [`NameError::TooLong`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LengthUnit {
    /// Unicode scalar values (usernames): an accent written as a combining
    /// mark counts as one of its own.
    Chars,
    /// Bytes of UTF-8 (file names).
    Bytes,
}

/// The length of a name too long, in words: `34 characters, at most 32
/// (each combining accent counts as one)`, `256 bytes, at most 255`.
fn too_long(len: usize, max: usize, unit: LengthUnit) -> String {
    match unit {
        LengthUnit::Chars => format!(
            "{len} characters, at most {max} (an accent written as a combining mark counts as one)"
        ),
        LengthUnit::Bytes => format!("{len} bytes of UTF-8, at most {max}"),
    }
}

/// The byte stream is broken: no further message can be trusted. The caller
/// sends an error (the server sends [`ErrorCode::MALFORMED`](crate::ErrorCode::MALFORMED))
/// and closes the connection. A [`Decoder`](crate::Decoder) that returned one
/// returns the same error from then on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length header announces a frame above the limit.
    #[error("frame of {size} bytes is larger than the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        size: u32,
        /// The limit in force.
        max: u32,
    },
    /// The length header is zero (every frame has at least a type byte).
    #[error("empty frame")]
    EmptyFrame,
    /// The type byte is not a message of this direction.
    #[error("unknown message type 0x{ty:02x}")]
    UnknownType {
        /// The type byte.
        ty: u8,
    },
    /// The frame ends before a field does.
    #[error("frame of type 0x{ty:02x} ends in the middle of its fields")]
    Truncated {
        /// The type byte.
        ty: u8,
    },
    /// Bytes remain after the last field.
    #[error("frame of type 0x{ty:02x} has {extra} bytes after its last field")]
    TrailingBytes {
        /// The type byte.
        ty: u8,
        /// How many.
        extra: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Field name.
        field: &'static str,
    },
    /// A field that must hold something (a password) is empty.
    #[error("field {field} is empty")]
    Empty {
        /// Field name.
        field: &'static str,
    },
    /// A username or file name field breaks the naming rules.
    #[error("field {field} is not a valid name: {error}")]
    InvalidName {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        error: NameError,
    },
    /// A variable-length number is not in its shortest form or does not
    /// fit 64 bits.
    #[error("frame of type 0x{ty:02x} has a malformed variable-length number")]
    BadVarint {
        /// The type byte.
        ty: u8,
    },
    /// A tag byte has a value with no meaning.
    #[error("field '{field}' has invalid value {value}")]
    InvalidTag {
        /// Field name.
        field: &'static str,
        /// The value.
        value: u8,
    },
}

/// One transfer failed; the connection is fine. The caller drops the
/// transfer (a receiver deletes its temporary file).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A chunk's data does not match its CRC.
    #[error("chunk at offset {offset} of transfer {id} failed its CRC check")]
    BadChunkCrc {
        /// The transfer.
        id: TransferId,
        /// The chunk's offset.
        offset: u64,
    },
    /// A chunk did not start where the previous one ended.
    #[error("chunk of transfer {id} at offset {offset}, expected offset {expected}")]
    OutOfOrder {
        /// The transfer.
        id: TransferId,
        /// Offset received.
        offset: u64,
        /// Offset expected.
        expected: u64,
    },
    /// A chunk was empty.
    #[error("empty chunk in transfer {id}")]
    EmptyChunk {
        /// The transfer.
        id: TransferId,
    },
    /// The chunks go past the announced size.
    #[error("transfer {id} sent more than its announced {size} bytes")]
    TooMuchData {
        /// The transfer.
        id: TransferId,
        /// Announced size.
        size: u64,
    },
    /// The end came before all the bytes.
    #[error("transfer {id} ended after {received} of {size} bytes")]
    ShortFile {
        /// The transfer.
        id: TransferId,
        /// Bytes received.
        received: u64,
        /// Announced size.
        size: u64,
    },
    /// The whole-file CRC did not match.
    #[error("transfer {id}: whole-file checksum {got:08x} does not match {expected:08x}")]
    FileCrcMismatch {
        /// The transfer.
        id: TransferId,
        /// CRC computed over what was received.
        got: u32,
        /// CRC the sender announced.
        expected: u32,
    },
    /// The announced size is above the limit.
    #[error("file of {size} bytes is larger than the limit of {max}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The resume offset is past the end of the file.
    #[error("resume offset {offset} is past the file size {size}")]
    BadOffset {
        /// Offset asked for.
        offset: u64,
        /// File size.
        size: u64,
    },
    /// The other side cancelled the transfer. Shown with its words made
    /// [`inert`](crate::inert), on one line: they are a peer's.
    #[error("transfer {id} cancelled: {}", crate::inert(reason))]
    Cancelled {
        /// The transfer.
        id: TransferId,
        /// Why, as a code a program can act on ([`CancelCode::NO_SUCH_FILE`],
        /// say); [`CancelCode::PEER_LEFT`] when the connection was lost.
        code: CancelCode,
        /// Why, as the other side said (as sent: make it
        /// [`inert`](crate::inert) to show it).
        reason: String,
    },
}

impl TransferError {
    /// The same error about the transfer known as `to`: a relayed push's
    /// receivers know it by another id than its pusher.
    pub(crate) fn with_id(mut self, to: TransferId) -> TransferError {
        match &mut self {
            TransferError::BadChunkCrc { id, .. }
            | TransferError::OutOfOrder { id, .. }
            | TransferError::EmptyChunk { id }
            | TransferError::TooMuchData { id, .. }
            | TransferError::ShortFile { id, .. }
            | TransferError::FileCrcMismatch { id, .. }
            | TransferError::Cancelled { id, .. } => *id = to,
            TransferError::TooLarge { .. } | TransferError::BadOffset { .. } => {}
        }
        self
    }
}

/// The caller asked for something that cannot be done; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The session is not joined yet, or already closed.
    #[error("not connected")]
    NotConnected,
    /// A chat text over the limit.
    #[error("message of {len} bytes is longer than the limit of {max}")]
    TextTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A download of this file is already asked for or running: a second
    /// would write the same file twice ([`ClientSession::is_downloading`](crate::ClientSession::is_downloading)).
    #[error("'{name}' is already being downloaded")]
    AlreadyDownloading {
        /// The shared file's name.
        name: crate::FileName,
    },
    /// No transfer with this id is running.
    #[error("no transfer {id} is running")]
    UnknownTransfer {
        /// The id.
        id: TransferId,
    },
    /// A chunk would go past the size announced for the push.
    #[error("push {id} would exceed its announced size")]
    PushOverrun {
        /// The id.
        id: TransferId,
    },
    /// The end of a push while bytes of the size offered are still unsent
    /// (the file shrank since it was offered: cancel the push).
    #[error("push {id} is short: {sent} of its {size} bytes sent")]
    PushShort {
        /// The id.
        id: TransferId,
        /// Bytes sent so far.
        sent: u64,
        /// The size offered.
        size: u64,
    },
    /// A push chunk with no data: every chunk carries at least one byte
    /// (PROTOCOL.md section 7), and the server ends a push that sends an
    /// empty one.
    #[error("a chunk must carry at least one byte")]
    EmptyChunk,
    /// Push data before the receivers accepted the push
    /// ([`ClientEvent::PushAccepted`](crate::ClientEvent::PushAccepted)).
    #[error("push {id} is not accepted yet")]
    NotAccepted {
        /// The id.
        id: TransferId,
    },
    /// The chunk would end past what the server lets the push send
    /// ([`ClientSession::push_room`](crate::ClientSession::push_room)).
    #[error(
        "push {id} may send up to byte {credit} for now, not to byte {end}: wait for its receivers"
    )]
    PastCredit {
        /// The id.
        id: TransferId,
        /// Where the chunk would end.
        end: u64,
        /// How far the push may send.
        credit: u64,
    },
    /// [`ClientSession::ignore`](crate::ClientSession::ignore) of this
    /// session's own name.
    #[error("you cannot ignore yourself")]
    IgnoreSelf,
    /// No offer with this id is waiting for an answer.
    #[error("no offer {id} is waiting for an answer")]
    UnknownOffer {
        /// The id.
        id: TransferId,
    },
    /// Too many transfers already running.
    #[error("too many transfers at once (at most {max})")]
    TooManyTransfers {
        /// The limit.
        max: usize,
    },
    /// A push chunk is larger than the session (or the server's frame
    /// limit) takes: split it.
    #[error("chunk of {len} bytes is larger than the limit of {max}")]
    ChunkTooLarge {
        /// The chunk's length.
        len: usize,
        /// The largest chunk.
        max: usize,
    },
    /// An operator's target (a username or an address) is longer than
    /// any can be.
    #[error("target of {len} bytes is longer than the limit of {max}")]
    TargetTooLong {
        /// The target's length in bytes.
        len: usize,
        /// The longest target.
        max: usize,
    },
    /// A file too large to push.
    #[error("file of {size} bytes is larger than the server's push limit of {max} bytes")]
    FileTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// The blocking transport failed: the connection is over.
#[cfg(feature = "blocking")]
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Reading or writing the socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that do not decode.
    #[error("protocol error: {0}")]
    Decode(#[from] DecodeError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,
}
