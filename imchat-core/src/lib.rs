//! imchat-core: the imchat wire protocol as a library.
#![warn(missing_docs)]

mod codec;
mod command;
mod display;
mod error;
mod limits;
mod message;
mod outbox;
mod session;
mod transfer;
mod transport;

pub use codec::{encode_chunk, types, Decode, Decoder, Encode, HEADER_LEN};
pub use command::{Command, CommandError, Mode, HELP};
pub use display::inert;
pub use error::{DecodeError, NameError, TransferError, TransportError, UsageError};
pub use limits::*;
pub use message::*;
pub use outbox::{Frame, Outbox, PushError};
pub use session::{
    ClientEvent, ClientId, ClientSession, Destination, FilesRequest, Hub, HubEvent, Transmit,
};
pub use transfer::{Incoming, Outgoing};
pub use transport::{split_tcp, FrameReader, FrameWriter};
