//! imchat-core: the imchat wire protocol as a library.
//!
//! imchat is an instant messenger over TCP. This crate holds the whole
//! protocol, so that the `imchat-server` and `imchat-client` binaries, and
//! any bot, bridge or test harness, are thin shells around it.
//!
//! At the root, the protocol, with no IO:
//!
//! - typed messages, one enum per direction: [`ClientMessage`] and
//!   [`ServerMessage`], carrying validated newtypes ([`Username`],
//!   [`FileName`], [`TransferId`]) so an unchecked network string can never
//!   reach a path;
//! - a sans-IO codec: [`Encode::encode`] appends a frame to your buffer,
//!   and the streaming [`Decoder`] takes bytes in any split and yields
//!   messages, refusing a frame above its limit from the 4-byte header
//!   before reserving anything;
//! - file transfers in checksummed chunks: [`Outgoing`] and [`Incoming`]
//!   check every chunk's CRC32, offset and size, and the whole file's CRC32;
//!   the [`DownloadSender`] streams a download (window, acks, resume);
//! - session state machines: the server's [`Hub`] (handshake, names,
//!   routing, keepalive, rate limit, relayed pushes) and the
//!   [`ClientSession`];
//! - the [`Limits`], the errors, and [`inert`] for showing peer text safely.
//!
//! Under its own name, the module `blocking` (the default cargo feature `blocking`):
//! the IO around the protocol for threads and blocking sockets, the only
//! part of the crate that touches a socket or a thread.
//!
//! **What the root does not do:** the codec and the state machines read
//! no socket, no file and no clock, and the crate holds no `unsafe` code.
//! Time is a parameter (`now: Instant`), and the IO the protocol needs
//! leaves as an event ("open this shared file", "write these checked
//! bytes") and comes back as a call. With `default-features = false` the
//! crate depends on thiserror, byteorder, crc32fast, log and
//! unicode-normalization (for the combining marks of the name rule) only.
//!
//! ```text
//!   bytes ──▶ Decoder ──▶ handle_message(msg, now) ──▶ poll_event()    ──▶ show / act
//!                               Hub | ClientSession
//!   intents ─▶ send_chat(), download(), … ──────────▶ poll_transmit() ──▶ Encode ──▶ bytes
//!   clock ───▶ handle_timeout(now)         ◀── poll_timeout()
//! ```
//!
//! The wire format is specified in `docs/PROTOCOL.md`.
//!
//! # Where to start
//!
//! The root is large because it holds the server's side too. What you
//! need depends on what you write:
//!
//! - **A bot on blocking IO**: `blocking::Client` and
//!   `blocking::ConnectOptions` (behind the `blocking` feature), the
//!   [`ClientEvent`]s it hands out, and [`Recipient`], [`Username`],
//!   [`FileName`] for what you send; errors are
//!   `blocking::ConnectError`, `blocking::ClientError` and
//!   [`UsageError`]. See `examples/echobot.rs`.
//! - **A client or bridge on IO of your own**: [`ClientSession`] with the
//!   [`Decoder`] and [`Encode`], [`ClientEvent`], and [`SavedSession`] to
//!   resume across runs. See `examples/pingbot.rs`.
//! - **A harness or fuzzer of the wire format**: [`ClientMessage`],
//!   [`ServerMessage`], [`Encode`], [`Decoder`] and [`DecodeError`].
//! - **A server**: [`Hub`] with [`Limits`], a [`HistoryStore`] (or the
//!   [`MemoryStore`]), and the [`HubEvent`]s and [`Transmit`]s it gives
//!   back; the cluster items ([`ClusterEvent`] and those named after it)
//!   only for several servers as one.
//!
//! # Example: two clients and a hub, in memory
//!
//! ```
//! use std::time::Instant;
//! use imchat_core::*;
//!
//! let now = Instant::now();
//! let mut hub = Hub::new(Limits::default(), "Welcome, {user}!");
//! let mut alice = ClientSession::new(Username::new("alice").unwrap(), Limits::default(), now);
//! let mut bob = ClientSession::new(Username::new("bob").unwrap(), Limits::default(), now);
//! let ids = [hub.handle_connect(now), hub.handle_connect(now)];
//!
//! // One step of the network: every message is encoded to bytes and decoded back.
//! fn pump(hub: &mut Hub, clients: &mut [&mut ClientSession], ids: &[ClientId], now: Instant) {
//!     for _ in 0..10 {
//!         for (c, id) in clients.iter_mut().zip(ids) {
//!             while let Some(m) = c.poll_transmit() {
//!                 let mut d = Decoder::<ClientMessage>::new(DEFAULT_MAX_FRAME);
//!                 d.feed(&m.to_frame());
//!                 hub.handle_message(*id, d.next_message().unwrap().unwrap(), now);
//!             }
//!         }
//!         while let Some(t) = hub.poll_transmit() {
//!             let bytes = t.message.to_frame(); // encoded once for every receiver
//!             for to in t.to.iter() {
//!                 let i = ids.iter().position(|id| *id == to).unwrap();
//!                 let mut d = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
//!                 d.feed(&bytes);
//!                 clients[i].handle_message(d.next_message().unwrap().unwrap(), now);
//!             }
//!         }
//!     }
//! }
//!
//! pump(&mut hub, &mut [&mut alice, &mut bob], &ids, now);
//! assert_eq!(
//!     alice.poll_event(),
//!     Some(ClientEvent::Welcome {
//!         username: Username::new("alice").unwrap(),
//!         text: "Welcome, alice!".into(),
//!         limits: hub.server_limits(),
//!     })
//! );
//!
//! alice.send_chat(Recipient::Everyone, "hello bob").unwrap();
//! pump(&mut hub, &mut [&mut alice, &mut bob], &ids, now);
//! let mut got = None;
//! while let Some(e) = bob.poll_event() {
//!     if let ClientEvent::Chat(RoutedChat { from, private, text, .. }) = e {
//!         got = Some((from.to_string(), private, text));
//!     }
//! }
//! assert_eq!(got, Some(("alice".to_string(), false, "hello bob".to_string())));
//! ```
//!
//! To drive a [`ClientSession`] over IO of your own (an event loop, a
//! bridge), see `examples/pingbot.rs`: one loop that feeds it what the
//! socket read and the time, writes what it queued, and acts on its
//! events.
//!
//! # A bot
//!
//! With the default `blocking` feature, `blocking::Client` owns the
//! connection and the session: `Client::connect` does the handshake over
//! TCP (`Client::over` over a connection of yours, TLS say; a refusal is a
//! typed error with the server's reason), `next_event` waits for the next
//! event while it answers pings and runs the keepalive timer, and each
//! intent (`send_chat`, `who`, `download`, `offer`…) writes its message
//! before it returns, waiting first if the server's rate limit asks for
//! it. After a lost connection `Client::reconnect` takes the session back.
//! No thread of your own. The whole of `examples/echobot.rs`, which
//! reverses private messages and answers `!who`:
//!
#![cfg_attr(feature = "blocking", doc = "```no_run")]
#![cfg_attr(not(feature = "blocking"), doc = "```ignore")]
#![doc = include_str!("../examples/echobot.rs")]
//! ```
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "blocking")]
pub mod blocking;
mod codec;
mod codes;
mod display;
mod download;
mod error;
mod history;
mod limits;
mod message;
mod session;
mod transfer;

/// The wire type codes, for tests and tools that build malformed frames
/// by hand; a well-formed frame comes from [`Encode`].
#[doc(hidden)]
pub use codec::types;
pub use codec::varint;
pub use codec::{encode_chunk, frame_len, Decode, Decoder, Encode, HEADER_LEN};
pub use codes::{CancelCode, ErrorCode, LeaveReason, NoticeCode, RefuseCode};
pub use display::{escape_hidden, inert, io_reason};
pub use download::{
    AckError, DownloadError, DownloadOutcome, DownloadSender, ReadKind, ReadRequest, SentFile,
};
pub use error::{DecodeError, LengthUnit, NameError, TransferError, UsageError};
pub use history::{
    HistoryStore, Loaded, LogEntry, LogEvent, MemoryStore, SessionRecord, StoreError,
};
pub use limits::*;
pub use message::*;
pub use session::{
    address_key, parse_operator_line, AccountCheck, Ban, BanTarget, ClientEvent, ClientId,
    ClientSession, ClusterEvent, Destination, FilesRequest, HeardMark, Hold, Hub, HubEvent, Lane,
    RemoteOrigin, RemotePush, SavedSession, TransferControl, Transmit, SAVED_ID_LEASE,
};
pub use transfer::{Incoming, Outgoing, ResumeState};
