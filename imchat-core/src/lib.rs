//! imchat-core: the imchat wire protocol as a library.
#![warn(missing_docs)]

mod codec;
mod error;
mod limits;
mod message;

pub use codec::{encode_chunk, types, Decode, Decoder, Encode, HEADER_LEN};
pub use error::{DecodeError, NameError, TransferError, TransportError, UsageError};
pub use limits::*;
pub use message::*;
