//! Codec benchmark: `cargo bench -p imchat-core --bench codec`.
//!
//! Plain `std::time::Instant`, no framework. Each figure is measured 7 times
//! after a warm-up; the median is printed with the min–max range. Figures
//! are written down in `docs/BENCHMARKS.md` ("Codec").
//!
//! - chat: `ServerMessage::Chat` with a 64-byte text, encoded into a reused
//!   buffer, fed to a `Decoder` and taken out again (messages per second),
//!   and decoding alone from a pre-encoded stream (ns per message).
//! - chunk: 256 KiB file chunks through `encode_chunk` (which computes the
//!   CRC32), the `Decoder`, and `FileChunk::verify` (which computes it
//!   again), in GB/s of file data on one core. Reference lines show what a
//!   bare CRC32 and a bare copy of the same data cost, the two things a chunk
//!   round trip is made of.

use std::hint::black_box;
use std::time::{Duration, Instant};

use imchat_core::{
    encode_chunk, Decoder, Encode, RoutedChat, ServerMessage, TransferId, Username,
    DEFAULT_CHUNK_SIZE, DEFAULT_MAX_FRAME,
};

const RUNS: usize = 7;
/// Chat messages per measured run.
const CHAT_MESSAGES: usize = 200_000;
/// File data per measured chunk run: 1 GiB.
const CHUNK_BYTES: usize = 1 << 30;

/// Runs `f` once to warm up, then `RUNS` times; returns the durations sorted.
fn measure(mut f: impl FnMut()) -> Vec<Duration> {
    f();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// Prints `label: median [min – max] unit`, each time turned into a figure by `per`.
fn report(label: &str, times: &[Duration], unit: &str, per: impl Fn(Duration) -> f64) {
    let mut values: Vec<f64> = times.iter().map(|&t| per(t)).collect();
    values.sort_by(f64::total_cmp);
    println!(
        "  {label:<34} {:>9.2} {unit}  [{:.2} – {:.2}]",
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    );
}

fn chat_message() -> ServerMessage {
    ServerMessage::Chat(RoutedChat {
        history: false,
        id: imchat_core::MessageId(1),
        time: imchat_core::Timestamp(1_700_000_000_000),
        from: Username::new("alice").unwrap(),
        private: false,
        kind: imchat_core::ChatKind::Text,
        text: "x".repeat(64),
    })
}

fn bench_chat() {
    let msg = chat_message();
    let frame_len = msg.to_frame().len();
    println!("chat: ServerMessage::Chat, 64-byte text, {frame_len}-byte frame, {CHAT_MESSAGES} messages per run");

    // Encode into a reused buffer, feed, decode: one message at a time, as a
    // peer that sends a message and a peer that reads it would.
    let mut out = Vec::with_capacity(256);
    let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
    let times = measure(|| {
        for _ in 0..CHAT_MESSAGES {
            out.clear();
            black_box(&msg).encode(&mut out);
            dec.feed(black_box(&out));
            let m = dec.next_message().unwrap().unwrap();
            black_box(m);
        }
    });
    report("encode + feed + decode", &times, "M msg/s", |t| {
        CHAT_MESSAGES as f64 / t.as_secs_f64() / 1e6
    });
    report("  per message", &times, "ns", |t| {
        t.as_nanos() as f64 / CHAT_MESSAGES as f64
    });

    // Decoding alone: the whole stream is fed once (untimed), then every
    // message taken out.
    let mut stream = Vec::with_capacity(frame_len * CHAT_MESSAGES);
    for _ in 0..CHAT_MESSAGES {
        msg.encode(&mut stream);
    }
    let mut decoders: Vec<Decoder<ServerMessage>> = (0..=RUNS)
        .map(|_| {
            let mut d = Decoder::new(DEFAULT_MAX_FRAME);
            d.feed(&stream);
            d
        })
        .collect();
    let times = measure(|| {
        let mut d = decoders.pop().unwrap();
        for _ in 0..CHAT_MESSAGES {
            black_box(d.next_message().unwrap().unwrap());
        }
        assert_eq!(d.next_message(), Ok(None));
    });
    report("decode only (next_message)", &times, "ns/msg", |t| {
        t.as_nanos() as f64 / CHAT_MESSAGES as f64
    });
}

fn bench_chunk() {
    let size = DEFAULT_CHUNK_SIZE;
    let chunks = CHUNK_BYTES / size;
    // Data that is not all zeros, so nothing can shortcut it.
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + i / 251) as u8).collect();
    println!(
        "chunk: {} KiB chunks, {} MiB of file data per run",
        size / 1024,
        CHUNK_BYTES >> 20
    );
    let gbps = move |t: Duration| (chunks * size) as f64 / t.as_secs_f64() / 1e9;

    let mut out = Vec::with_capacity(size + 64);
    let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
    let times = measure(|| {
        for i in 0..chunks {
            out.clear();
            encode_chunk(&mut out, TransferId(1), (i * size) as u64, black_box(&data));
            dec.feed(&out);
            match dec.next_message() {
                Ok(Some(ServerMessage::Chunk(c))) => assert!(c.verify()),
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    report("encode_chunk + decode + verify", &times, "GB/s", gbps);

    // What the round trip is made of, for comparison.
    let times = measure(|| {
        for _ in 0..chunks {
            black_box(crc32fast::hash(black_box(&data)));
        }
    });
    report("reference: crc32fast::hash alone", &times, "GB/s", gbps);
    let mut copy = vec![0u8; size];
    let times = measure(|| {
        for _ in 0..chunks {
            copy.copy_from_slice(black_box(&data));
            black_box(&mut copy);
        }
    });
    report("reference: one memcpy alone", &times, "GB/s", gbps);
    let times = measure(|| {
        for _ in 0..chunks {
            black_box(black_box(&data).to_vec());
        }
    });
    report("reference: to_vec (alloc + copy)", &times, "GB/s", gbps);
}

fn main() {
    // `cargo bench -p imchat-core --bench codec -- chat` runs only the chat
    // group (likewise `chunk`); options such as `--bench` are ignored.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |group: &str| filters.is_empty() || filters.iter().any(|f| group.contains(f.as_str()));
    println!("imchat-core codec benchmark: median [min – max] of {RUNS} runs, one thread");
    if wanted("chat") {
        bench_chat();
    }
    if wanted("chunk") {
        bench_chunk();
    }
}
