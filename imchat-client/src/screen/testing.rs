//! Helpers for the screen's tests: entries, a model, frames drawn on a
//! test backend and read back as text.

use std::time::{Duration, SystemTime};

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::Terminal;
use unicode_width::UnicodeWidthStr;

use super::model::Model;
use super::render;
use crate::view::{ChatEntry, Direction, Entry, Link, Status, TransferView};

/// A fixed time for entries, and its `HH:MM` in local time.
pub fn when() -> (SystemTime, String) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let local: chrono::DateTime<chrono::Local> = time.into();
    (time, local.format("%H:%M").to_string())
}

/// A message from `from`.
pub fn chat(from: &str, text: &str) -> ChatEntry {
    ChatEntry {
        time: when().0,
        from: from.into(),
        to: None,
        private: false,
        own: false,
        action: false,
        history: false,
        missed: false,
        text: text.into(),
    }
}

/// The time shown for entries without one.
pub fn noon() -> String {
    "12:00".into()
}

/// The date of entries without a time: that of [`when`].
pub fn today() -> chrono::NaiveDate {
    chrono::DateTime::<chrono::Local>::from(when().0).date_naive()
}

/// A model for alice, connected, with some commands.
pub fn model() -> Model {
    let commands = ["/help", "/who", "/msg", "/download", "/quit"]
        .map(String::from)
        .to_vec();
    let mut m = Model::new("alice", commands, Vec::new())
        .with_clock(noon)
        .with_today(today);
    m.set_status(&Status {
        me: "alice".into(),
        target: None,
        link: Link::Connected {
            server: "127.0.0.1:4000".into(),
        },
        cut_off: false,
    });
    m
}

/// A running download.
pub fn download(id: u32, name: &str) -> TransferView {
    TransferView {
        id: format!("#{id}"),
        direction: Direction::Download,
        name: name.into(),
        done: 1 << 20,
        total: 4 << 20,
        rate: Some(1024.0 * 1024.0),
        eta: Some(Duration::from_secs(3)),
        waiting: false,
        stalled: false,
        from: None,
    }
}

/// Adds `n` notices `line 0`…
pub fn notices(m: &mut Model, n: usize) {
    for i in 0..n {
        m.show(Entry::Notice(format!("line {i}")));
    }
}

/// A terminal of `width`×`height` to draw on.
pub fn terminal(width: u16, height: u16) -> Terminal<TestBackend> {
    Terminal::new(TestBackend::new(width, height)).unwrap()
}

/// Draws `m` on `t`; the screen's rows as text (wide cells counted once).
pub fn draw_rows(t: &mut Terminal<TestBackend>, m: &mut Model) -> Vec<String> {
    t.draw(|frame| render::draw(frame, m)).unwrap();
    rows(t.backend().buffer())
}

/// The rows of `buffer` as text, trailing blanks cut.
pub fn rows(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            let mut row = String::new();
            let mut skip = 0;
            for x in 0..area.width {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let symbol = buffer[(x, y)].symbol();
                skip = symbol.width().saturating_sub(1);
                row.push_str(symbol);
            }
            row.trim_end().to_owned()
        })
        .collect()
}
