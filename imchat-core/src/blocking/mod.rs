//! Blocking IO around the protocol: everything in this crate that touches
//! a socket or a thread, behind the `blocking` cargo feature (on by
//! default). The rest of the crate reads no socket, no file and no clock;
//! build it with `default-features = false` to get the protocol alone.
//!
//! - [`Client`]: a connected client (socket plus [`ClientSession`](crate::ClientSession))
//!   with [`next_event`](Client::next_event) and a method per intent;
//!   pings, keepalive and timers are handled inside. A bot is a loop of a
//!   few lines around it.
//! - [`FrameReader`] and [`FrameWriter`]: the codec over any `Read` and any
//!   `Write`, and [`split_tcp`] to use a `TcpStream` from two threads, for
//!   writing your own loop;
//! - [`Outbox`]: a connection's capped two-lane outbound queue (control
//!   frames before file data) and the writer loop that drains it in
//!   coalesced writes, from a writer thread or from the producer's own;
//! - `tls` (feature `tls`): TLS under the same frames, a stream the
//!   reader and writer threads share, and the client's connect.

mod client;
mod outbox;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

pub use crate::error::TransportError;
pub use client::*;
pub use outbox::{Direct, Frame, Outbox, PushError, WriterEnd, OVER_CAP_FOR};
pub use transport::{split_tcp, FrameReader, FrameWriter, ReadStep};
