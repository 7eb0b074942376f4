//! Blocking IO around the sans-IO protocol: everything here touches a
//! socket. Behind the default cargo feature `blocking`.
//!
//! - [`Client`]: a connected client (socket plus [`ClientSession`](crate::ClientSession))
//!   with [`next_event`](Client::next_event) and a method per intent;
//!   pings, keepalive and timers are handled inside.
//! - [`FrameReader`], [`FrameWriter`] and [`split_tcp`]: the codec over any
//!   `Read` and `Write`, for writing your own loop.

mod client;

pub use client::*;

pub use crate::transport::{split_tcp, FrameReader, FrameWriter};
