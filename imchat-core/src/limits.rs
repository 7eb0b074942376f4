//! Every limit the protocol and the reference server enforce, in one place.

use std::time::Duration;

/// Largest frame (type byte plus body) either side accepts: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;
/// Largest frame accepted from a connection that has not completed the handshake: 1 KiB.
pub const DEFAULT_MAX_HANDSHAKE_FRAME: u32 = 1024;
/// Longest chat message text, in bytes of UTF-8: 64 KiB.
pub const DEFAULT_MAX_TEXT: usize = 64 * 1024;
/// Size of the data in one file chunk: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;
/// Largest file a client may push to others with `/sendfile`: 4 GiB.
pub const DEFAULT_MAX_PUSH_SIZE: u64 = 4 * 1024 * 1024 * 1024;
/// Most clients connected at once (handshaking or joined): 1,000.
pub const DEFAULT_MAX_CLIENTS: usize = 1000;
/// Total time a new connection has to complete the handshake: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which the server pings a client: 30 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Time after a ping with nothing heard back before a peer counts as gone: 30 s.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes queued towards one client before it counts as not reading and is dropped: 4 MiB.
pub const DEFAULT_MAX_OUTBOUND: usize = 4 * 1024 * 1024;
/// Chat messages a client may send in one burst: 100.
pub const DEFAULT_RATE_BURST: u32 = 100;
/// Sustained chat messages per second a client may send: 50.
pub const DEFAULT_RATE_PER_SEC: u32 = 50;
/// How long a client may keep flooding above the rate before it is disconnected: 10 s.
pub const DEFAULT_FLOOD_TIMEOUT: Duration = Duration::from_secs(10);
/// Transfers (downloads plus pushes, each direction) one client may have running at once: 8.
pub const DEFAULT_MAX_TRANSFERS: usize = 8;
/// Longest username, in characters: 32.
pub const MAX_USERNAME_CHARS: usize = 32;
/// Longest file name, in bytes of UTF-8: 255.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// The limits a [`Hub`](crate::Hub), a [`ClientSession`](crate::ClientSession)
/// and a [`Decoder`](crate::Decoder) enforce. `Limits::default()` gives the
/// documented defaults; every field can be changed before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted after the handshake ([`DEFAULT_MAX_FRAME`]).
    pub max_frame: u32,
    /// Largest frame accepted before the handshake ([`DEFAULT_MAX_HANDSHAKE_FRAME`]).
    pub max_handshake_frame: u32,
    /// Longest chat text in bytes ([`DEFAULT_MAX_TEXT`]).
    pub max_text: usize,
    /// Data bytes per file chunk a sender produces ([`DEFAULT_CHUNK_SIZE`]).
    pub chunk_size: usize,
    /// Largest pushed file ([`DEFAULT_MAX_PUSH_SIZE`]).
    pub max_push_size: u64,
    /// Most simultaneous connections ([`DEFAULT_MAX_CLIENTS`]).
    pub max_clients: usize,
    /// Total time allowed for the handshake ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// Silence before a keepalive ping ([`DEFAULT_KEEPALIVE_INTERVAL`]).
    pub keepalive_interval: Duration,
    /// Time to answer a ping ([`DEFAULT_KEEPALIVE_TIMEOUT`]).
    pub keepalive_timeout: Duration,
    /// Outbound queue cap per client in bytes ([`DEFAULT_MAX_OUTBOUND`]).
    pub max_outbound: usize,
    /// Chat burst size ([`DEFAULT_RATE_BURST`]).
    pub rate_burst: u32,
    /// Sustained chat rate per second ([`DEFAULT_RATE_PER_SEC`]); 0 turns the rate limit off.
    pub rate_per_sec: u32,
    /// Continuous flooding tolerated before disconnecting ([`DEFAULT_FLOOD_TIMEOUT`]).
    pub flood_timeout: Duration,
    /// Concurrent transfers per client ([`DEFAULT_MAX_TRANSFERS`]).
    pub max_transfers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_handshake_frame: DEFAULT_MAX_HANDSHAKE_FRAME,
            max_text: DEFAULT_MAX_TEXT,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_push_size: DEFAULT_MAX_PUSH_SIZE,
            max_clients: DEFAULT_MAX_CLIENTS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            rate_burst: DEFAULT_RATE_BURST,
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            flood_timeout: DEFAULT_FLOOD_TIMEOUT,
            max_transfers: DEFAULT_MAX_TRANSFERS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_chunk_fits_in_default_frame_with_header_room() {
        let l = Limits::default();
        // A chunk frame carries 1 type byte + 4 id + 8 offset + 4 len + 4 crc of overhead.
        assert!(l.chunk_size + 21 <= l.max_frame as usize);
        assert!(l.max_text + 200 <= l.max_frame as usize);
    }
}
