//! Hostile length fields never make the decoder allocate more than the frame
//! limit.
//!
//! This file is its own test binary because it installs a counting global
//! allocator. Everything runs inside one test function, one case after
//! another, because the counters are global: a second test running at the
//! same time would add its own allocations to them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::SeqCst};

use imchat_core::{
    encode_chunk, ClientMessage, Decode, DecodeError, Decoder, Encode, Recipient, ServerMessage,
    TransferId, DEFAULT_MAX_FRAME, HEADER_LEN,
};

/// Counts allocations while [`TRACKING`] is on; always forwards to `System`.
struct Counting;

/// On only inside a measured section.
static TRACKING: AtomicBool = AtomicBool::new(false);
/// The largest single request (alloc, `alloc_zeroed`, or the new size of a realloc).
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated minus bytes freed since the section began (frees of
/// older blocks can take it below zero).
static CURRENT: AtomicIsize = AtomicIsize::new(0);
/// The highest `CURRENT` reached in the section.
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn record_grow(request: usize, grow: isize) {
    if TRACKING.load(SeqCst) {
        LARGEST.fetch_max(request, SeqCst);
        let now = CURRENT.fetch_add(grow, SeqCst) + grow;
        PEAK.fetch_max(now, SeqCst);
    }
}

fn record_free(size: usize) {
    if TRACKING.load(SeqCst) {
        CURRENT.fetch_sub(size as isize, SeqCst);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping
// only touches atomics, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Recorded before forwarding, so even a request that fails is seen.
        record_grow(layout.size(), layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record_grow(layout.size(), layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record_free(layout.size());
        // SAFETY: `ptr` came from `System` through us, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record_grow(new_size, new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` came from `System` through us, with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What a measured section allocated.
#[derive(Debug, Clone, Copy)]
struct Usage {
    largest: usize,
    peak: isize,
}

/// Runs `f` with the counters reset and on.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    LARGEST.store(0, SeqCst);
    CURRENT.store(0, SeqCst);
    PEAK.store(0, SeqCst);
    TRACKING.store(true, SeqCst);
    let out = f();
    TRACKING.store(false, SeqCst);
    let usage = Usage {
        largest: LARGEST.load(SeqCst),
        peak: PEAK.load(SeqCst),
    };
    (out, usage)
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// A frame: its length header, then `body` (type byte first) followed by
/// `pad` zero bytes, so the frame is well within the limit while an inner
/// length field can point far beyond it.
fn frame_with(body: &[u8], pad: usize) -> Vec<u8> {
    let len = u32::try_from(body.len() + pad).unwrap();
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out.resize(out.len() + pad, 0);
    out
}

/// Feeds `bytes` in pieces of `piece` and pulls messages after each, until
/// an error; all of it measured. Returns the first error.
fn feed_and_decode<M: Decode>(
    max: u32,
    bytes: &[u8],
    piece: usize,
) -> (Option<DecodeError>, Usage) {
    let mut dec = Decoder::<M>::new(max);
    measure(|| {
        for part in bytes.chunks(piece) {
            dec.feed(part);
            loop {
                match dec.next_message() {
                    Ok(Some(m)) => drop(m),
                    Ok(None) => break,
                    Err(e) => return Some(e),
                }
            }
        }
        None
    })
}

/// Feeds a whole frame first (not measured: that copy is the caller's read,
/// as large as the caller makes it), then measures decoding it.
fn decode_only<M: Decode>(max: u32, bytes: &[u8]) -> (Result<Option<M>, DecodeError>, Usage) {
    let mut dec = Decoder::<M>::new(max);
    dec.feed(bytes);
    measure(|| dec.next_message())
}

fn assert_within(what: &str, max: u32, usage: Usage) {
    assert!(
        usage.largest <= max as usize,
        "{what}: one allocation of {} bytes, limit {max}",
        usage.largest
    );
    assert!(
        usage.peak <= max as isize,
        "{what}: {} bytes held at once, limit {max}",
        usage.peak
    );
}

/// Headers announcing more than the limit: refused, nothing reserved.
fn hostile_headers(max: u32) {
    for size in [max + 1, 0x7fff_ffff, u32::MAX] {
        let header = size.to_be_bytes();
        let (err, usage) = feed_and_decode::<ClientMessage>(max, &header, HEADER_LEN);
        assert_eq!(err, Some(DecodeError::FrameTooLarge { size, max }));
        assert_within(&format!("client header {size:#x}"), max, usage);
        let (err, usage) = feed_and_decode::<ServerMessage>(max, &header, 1);
        assert_eq!(err, Some(DecodeError::FrameTooLarge { size, max }));
        assert_within(&format!("server header {size:#x}, bytewise"), max, usage);

        // Whatever the peer sends after it is dropped, not buffered.
        let mut stream = header.to_vec();
        stream.resize(64 * 1024, 0x41);
        let (err, usage) = feed_and_decode::<ServerMessage>(max, &stream, 512);
        assert_eq!(err, Some(DecodeError::FrameTooLarge { size, max }));
        assert_within(&format!("server header {size:#x} + 64 KiB"), max, usage);
    }
}

/// Frames within the limit whose inner length or count fields claim 0xffffffff:
/// (what, body in hex, type byte first).
fn hostile_inner_lengths(max: u32) {
    let client: &[(&str, &str)] = &[
        ("Chat text", "02 0000000000000001 00 00 ffffffff"),
        ("Quit reason", "08 ffffffff"),
        (
            "Chunk data",
            "80 00000001 0000000000000000 00000000 ffffffff",
        ),
        ("Cancel reason", "82 00000001 0001 ffffffff"),
    ];
    let server: &[(&str, &str)] = &[
        (
            "Welcome text",
            "41 0002 01 61 00100000 00010000 00000064 00000032 00100000 00100000 00000008 0000000100000000 ffffffff",
        ),
        ("Refused reason", "42 0001 0001 ffffffff"),
        (
            "Chat text",
            "43 0000000000000001 0000000000000000 01 61 00 00 00 ffffffff",
        ),
        (
            "Left text",
            "45 0000000000000001 0000000000000000 01 61 00 ffffffff",
        ),
        ("Error text", "4b 0001 0000000000000000 ffffffff"),
        ("Shutdown reason", "4c ffffffff"),
        ("Chunk data", "80 00000001 0000000000000000 00000000 ffffffff"),
        ("Cancel reason", "82 00000001 0001 ffffffff"),
        ("Who count", "46 ffffffff"),
        ("FileList count", "48 01 ffffffff"),
    ];
    refused_as_truncated::<ClientMessage>("client", max, client);
    refused_as_truncated::<ServerMessage>("server", max, server);
}

/// Each body, padded into a frame within `max`, is refused as truncated
/// without allocating above `max`: decoded whole, and fed in pieces.
fn refused_as_truncated<M: Decode + PartialEq + Debug>(
    dir: &str,
    max: u32,
    cases: &[(&str, &str)],
) {
    let pad = 100;
    for &(what, body) in cases {
        let body = hex(body);
        let ty = body[0];
        let frame = frame_with(&body, pad);
        let (res, usage) = decode_only::<M>(max, &frame);
        assert_eq!(res, Err(DecodeError::Truncated { ty }), "{dir} {what}");
        assert_within(&format!("{dir} {what}"), max, usage);
        let (err, usage) = feed_and_decode::<M>(max, &frame, 7);
        assert_eq!(err, Some(DecodeError::Truncated { ty }), "{dir} {what}");
        assert_within(&format!("{dir} {what}, fed in pieces"), max, usage);
    }
}

/// A list whose count is as large as the frame could hold, followed by
/// garbage: the count passes the "fits in the frame" check, but reserving
/// room for that many decoded items (each larger in memory than on the
/// wire) must still stay within the limit.
fn largest_plausible_counts(max: u32) {
    let body_len = max as usize;
    // FileList has its `last` flag before the count.
    for (head, min_item, what) in [(&[0x46u8][..], 2usize, "Who"), (&[0x48, 1], 10, "FileList")] {
        let count = u32::try_from((body_len - head.len() - 4) / min_item).unwrap();
        let mut body = head.to_vec();
        body.extend_from_slice(&count.to_be_bytes());
        // A first entry named "/": invalid, so decoding stops there.
        body.extend_from_slice(&[1, b'/']);
        let frame = frame_with(&body, body_len - body.len());
        let (res, usage) = decode_only::<ServerMessage>(max, &frame);
        assert!(
            matches!(res, Err(DecodeError::InvalidName { .. })),
            "{what}: {res:?}"
        );
        assert_within(&format!("{what} with count {count}"), max, usage);
    }
}

/// Legitimate traffic: frames of exactly the limit, read a quarter of the
/// limit at a time. The decoder holds at most one frame with its header plus
/// one read, so no single allocation is above `max + HEADER_LEN + read` (the
/// limit counts the type byte and body, not the 4 header bytes in front),
/// and at most that plus one decoded message is held at once.
fn full_frames_stream(max: u32) {
    let data_len = max as usize - 21;
    let read = max as usize / 4;
    let mut stream = Vec::new();
    for i in 0..6u64 {
        encode_chunk(&mut stream, TransferId(1), i, &vec![i as u8; data_len]);
    }
    ServerMessage::Ping(1).encode(&mut stream);
    let bound = max as usize + HEADER_LEN + read;
    // Small frames in front shift the big ones against the read boundaries.
    for lead in [0u64, 7] {
        let mut shifted = Vec::new();
        for i in 0..lead {
            ServerMessage::Pong(i).encode(&mut shifted);
        }
        shifted.extend_from_slice(&stream);
        // Chunks are a shared type: check both directions.
        let (err, usage) = feed_and_decode::<ServerMessage>(max, &shifted, read);
        assert_eq!(err, None);
        check_stream_usage("server", max, bound, usage);
        let (err, usage) = feed_and_decode::<ClientMessage>(max, &shifted, read);
        assert_eq!(err, None);
        check_stream_usage("client", max, bound, usage);
    }
}

fn check_stream_usage(what: &str, max: u32, bound: usize, usage: Usage) {
    assert!(
        usage.largest <= bound,
        "{what} frames of {max} bytes: one allocation of {} bytes, bound {bound}",
        usage.largest
    );
    let peak_bound = (bound + max as usize) as isize;
    assert!(
        usage.peak <= peak_bound,
        "{what} frames of {max} bytes: {} bytes held, bound {peak_bound}",
        usage.peak
    );
}

#[test]
fn hostile_lengths_never_allocate_above_the_frame_limit() {
    // The counter itself works: a measured allocation is seen, and a decoder
    // that reserved what a hostile header claims would be caught.
    let (v, usage) = measure(|| Vec::<u8>::with_capacity(5000));
    assert!(usage.largest >= 5000 && usage.peak >= 5000, "{usage:?}");
    drop(v);
    let (v, usage) = measure(|| Vec::<u8>::with_capacity(DEFAULT_MAX_FRAME as usize + 1));
    assert!(usage.largest > DEFAULT_MAX_FRAME as usize);
    drop(v);

    // A small valid frame decodes under the smaller limit, so the cases
    // below are refused for their lengths, not for the limit.
    let ok = ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: imchat_core::ChatKind::Text,
        text: "hello".into(),
    }
    .to_frame();
    let (err, _) = feed_and_decode::<ClientMessage>(1024, &ok, 3);
    assert_eq!(err, None);

    for max in [DEFAULT_MAX_FRAME, 1024] {
        hostile_headers(max);
        hostile_inner_lengths(max);
        largest_plausible_counts(max);
        full_frames_stream(max);
    }
}
