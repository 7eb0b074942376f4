//! Session state machines: the server's [`Hub`] and the [`ClientSession`].
//! Time comes in as a parameter; nothing here reads a clock or a socket.

mod bucket;
mod client;
mod hub;
mod pace;

pub use client::{ClientEvent, ClientSession, SavedSession, SAVED_ID_LEASE};
pub use hub::{
    address_key, parse_operator_line, AccountCheck, Ban, BanTarget, ClientId, ClusterEvent,
    Destination, FilesRequest, HeardMark, Hold, Hub, HubEvent, Lane, RemoteOrigin, RemotePush,
    TransferControl, Transmit,
};

use crate::message::ClientMessage;

impl ClientMessage {
    /// True for file data and file ends, which a writer may send after
    /// queued chat (an end must stay behind its chunks).
    #[must_use]
    pub fn is_bulk(&self) -> bool {
        matches!(self, ClientMessage::Chunk(_) | ClientMessage::End(_))
    }
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod tests;
