//! A benchmark of the screen under a chat flood, run by hand (ignored by
//! `cargo test`):
//!
//! ```text
//! cargo test --release -p imchat-client --bin imchat-client render_flood -- --ignored --nocapture
//! ```
//!
//! Long chat entries (60,000 bytes, as a flood of big broadcasts sends)
//! and short ones go into the [`Model`] as the client's reader thread puts
//! them there, and frames are drawn on a test backend as the screen's
//! thread draws them: one frame for every few entries, as at 30 frames a
//! second under 10 MiB/s of chat. It prints the median and the range of
//! several runs, and a hash of what was drawn (the same before and after a
//! change that must not change what is shown).
//!
//! `RENDER_FLOOD_ENTRIES` (long entries, default 200), `RENDER_FLOOD_RUNS`
//! (default 7) and `RENDER_FLOOD_PER_FRAME` (entries shown between two
//! frames, default 6) change the load.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::testing::{chat, model, terminal};
use super::{render, Entry};

/// The bytes of a long entry.
const LONG: usize = 60_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A text of about `bytes` bytes: words of 1 to 12 letters, ASCII, or
/// with accented letters, CJK and emoji when `mixed`.
fn text(seed: u64, bytes: usize, mixed: bool) -> String {
    const MIXED: [&str; 6] = ["é", "日本", "👍", "ñ", "👨\u{200d}👩\u{200d}👧", "\t"];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        for _ in 0..rng.usize(1..=12) {
            if mixed && rng.u8(..) < 16 {
                out.push_str(MIXED[rng.usize(..MIXED.len())]);
            } else {
                out.push(rng.alphanumeric());
            }
        }
        out.push(' ');
    }
    while out.len() > bytes {
        out.pop();
    }
    out
}

/// The entries of one run: each long one followed by three short ones;
/// one long entry in ten has non-ASCII text.
fn entries(long: usize) -> Vec<Entry> {
    let mut out = Vec::with_capacity(long * 4);
    for i in 0..long {
        let seed = i as u64;
        let from = format!("user{}", i % 10);
        out.push(Entry::Chat(chat(&from, &text(seed, LONG, i % 10 == 9))));
        for j in 0..3 {
            out.push(Entry::Chat(chat(&from, &text(seed * 4 + j, 40, false))));
        }
    }
    out
}

/// One run: the time to show the entries, the time to draw, and a hash
/// of every frame drawn.
fn run(entries: &[Entry], per_frame: usize) -> (Duration, Duration, u64, usize) {
    let mut m = model();
    let mut t = terminal(120, 40);
    let (mut showing, mut drawing) = (Duration::ZERO, Duration::ZERO);
    let mut hash = DefaultHasher::new();
    let mut frames = 0;
    for batch in entries.chunks(per_frame.max(1)) {
        let batch = batch.to_vec();
        let start = Instant::now();
        for entry in batch {
            m.show(entry);
        }
        let drawn = Instant::now();
        t.draw(|frame| render::draw(frame, &mut m)).unwrap();
        let end = Instant::now();
        showing += drawn - start;
        drawing += end - drawn;
        frames += 1;
        for cell in &t.backend().buffer().content {
            cell.symbol().hash(&mut hash);
            cell.fg.hash(&mut hash);
            cell.modifier.hash(&mut hash);
        }
    }
    (showing, drawing, hash.finish(), frames)
}

fn summary(label: &str, mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{label} median {:.1} ms (min {:.1}, max {:.1})",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    )
}

#[test]
#[ignore = "a benchmark: run it by hand, in release mode"]
fn render_flood() {
    let long = env_or("RENDER_FLOOD_ENTRIES", 200);
    let runs = env_or("RENDER_FLOOD_RUNS", 7).max(1);
    let per_frame = env_or("RENDER_FLOOD_PER_FRAME", 6);
    let entries = entries(long);
    let (mut totals, mut shows, mut draws) = (Vec::new(), Vec::new(), Vec::new());
    let mut hashes = Vec::new();
    let mut frames = 0;
    for _ in 0..runs {
        let (show, draw, hash, n) = run(&entries, per_frame);
        totals.push(show + draw);
        shows.push(show);
        draws.push(draw);
        hashes.push(hash);
        frames = n;
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    println!(
        "render_flood: {long} entries of {LONG} bytes and {} short ones, {per_frame} per frame, \
         {frames} frames at 120x40, {runs} runs",
        long * 3
    );
    println!("  {}", summary("total", totals));
    println!("  {}", summary("show ", shows));
    println!("  {}", summary("draw ", draws));
    println!("  frames hash {:016x}", hashes[0]);
}
