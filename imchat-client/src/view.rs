//! What the running client shows, whatever shows it.
//!
//! The client's logic ([`app`](crate::app)) tells a [`View`] what happened:
//! lines for the chat ([`Entry`]), the live state of each transfer
//! ([`TransferView`]), the status (who we are, where plain text goes, the
//! connection), who is online and which shared files exist. A view decides
//! how to show it: plain lines for scripts, JSON objects for programs, or
//! the full-screen terminal interface. What the user types comes back as
//! [`UserInput`].
//!
//! Every text handed to a view is raw: as the server sent it, or as the
//! client composed it around such text (a notice that quotes a name or a
//! reason). A view that shows text on a terminal or writes it where a
//! terminal may show it (plain lines, the full-screen interface, the chat
//! log) makes it inert itself, with the `inert` methods here; the JSON
//! view writes it as it is (JSON's escaping makes any character safe), so
//! that programs get the exact text.

// Wired in by the views that follow; remove once they use all of it.
#![allow(dead_code)]

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use imchat_core::inert;

/// The local date `time` is of: the day a line of the chat belongs to.
pub fn local_day(time: SystemTime) -> chrono::NaiveDate {
    chrono::DateTime::<chrono::Local>::from(time).date_naive()
}

/// Today's local date.
pub fn local_today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// `text` made inert (see [`imchat_core::inert`]), without a copy when it
/// is inert already.
pub fn inert_string(text: String) -> String {
    match inert(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(shown) => shown,
    }
}

/// One thing to show in the chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message or an action, ours or someone's.
    Chat(ChatEntry),
    /// A `*** …` notice (transfer news, answers), of now.
    Notice(String),
    /// A `*** …` notice of something the server noted at `time` (a join,
    /// a leave), shown with that time as a chat is with its own: one
    /// replayed after a resume happened before it is shown.
    NoticeAt {
        /// When the server noted it.
        time: SystemTime,
        /// The notice.
        text: String,
        /// Missed while the connection was down: replayed after a
        /// resume, not live.
        missed: bool,
    },
    /// An `error: …` line.
    Error(String),
    /// A line as it is (welcome text, help, file lists).
    Plain(String),
}

impl Entry {
    /// The entry as a terminal may show it: each of its texts made inert
    /// on its own (a chat's sender, recipient and text; a whole notice,
    /// error or plain line).
    #[must_use]
    pub fn inert(self) -> Entry {
        match self {
            Entry::Chat(c) => Entry::Chat(ChatEntry {
                from: inert_string(c.from),
                to: c.to.map(inert_string),
                text: inert_string(c.text),
                ..c
            }),
            Entry::Notice(text) => Entry::Notice(inert_string(text)),
            Entry::NoticeAt { time, text, missed } => Entry::NoticeAt {
                time,
                text: inert_string(text),
                missed,
            },
            Entry::Error(text) => Entry::Error(inert_string(text)),
            Entry::Plain(text) => Entry::Plain(inert_string(text)),
        }
    }

    /// When what the entry tells happened, for an entry that carries its
    /// own time (a chat, a join or a leave); `None` for one of now,
    /// which a view stamps with the time it shows it.
    pub fn time(&self) -> Option<SystemTime> {
        match self {
            Entry::Chat(c) => Some(c.time),
            Entry::NoticeAt { time, .. } => Some(*time),
            Entry::Notice(_) | Entry::Error(_) | Entry::Plain(_) => None,
        }
    }
}

/// A chat message or action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEntry {
    /// When the server routed it; for our own messages, when we sent them.
    pub time: SystemTime,
    /// The sender.
    pub from: String,
    /// For our own private messages: to whom.
    pub to: Option<String>,
    /// Sent to one user (to us, or by us to `to`).
    pub private: bool,
    /// We sent it (shown as our echo; the server does not send it back).
    pub own: bool,
    /// An action (`/me`): `* alice waves`.
    pub action: bool,
    /// Replayed history rather than live traffic.
    pub history: bool,
    /// Missed while the connection was down: replayed after a resume,
    /// not live.
    pub missed: bool,
    /// The text.
    pub text: String,
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A shared file we download.
    Download,
    /// A file someone pushes to us.
    Receive,
    /// A file we push to others.
    Send,
    /// A file someone offers us, waiting for `/accept` or `/decline`.
    Offer,
}

impl Direction {
    /// A file coming to us: a download of ours, or one pushed to us.
    pub fn incoming(ours: bool) -> Direction {
        if ours {
            Direction::Download
        } else {
            Direction::Receive
        }
    }
}

/// The live state of one running transfer, for its line in the transfers area.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferView {
    /// The transfer's id as the user types it in `/cancel` (`#3`).
    pub id: String,
    /// Which way.
    pub direction: Direction,
    /// The file name.
    pub name: String,
    /// Bytes done, a resumed prefix included.
    pub done: u64,
    /// The file's size.
    pub total: u64,
    /// Bytes per second moved by this session (a resumed prefix is not
    /// counted); `None` before there is a measure.
    pub rate: Option<f64>,
    /// Time left at that rate.
    pub eta: Option<Duration>,
    /// Waiting rather than moving (an offer not yet accepted).
    pub waiting: bool,
    /// No byte moved for [`STALLED`] or more: the rate and time left
    /// measured before are no longer true, and are not shown.
    pub stalled: bool,
    /// Who sends it, for a file pushed or offered to us.
    pub from: Option<String>,
}

/// How a transfer ended, for [`View::transfer_ended`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEnd {
    /// The transfer's id (`#3`); `None` for one that failed before it
    /// was asked of the server (its file or folder unusable), and so
    /// never had one.
    pub id: Option<String>,
    /// Which way it went (an offer: one we were asked to accept).
    pub direction: Direction,
    /// The file name.
    pub name: String,
    /// `None` when it completed (an offer: when we accepted it, and the
    /// transfer goes on under the same id); else why it did not: failed,
    /// cancelled or declined.
    pub error: Option<String>,
}

impl TransferEnd {
    /// `id` (a [`TransferId`](imchat_core::TransferId), say) ended: `error`
    /// is `None` when it completed.
    pub fn new(
        id: impl ToString,
        direction: Direction,
        name: &str,
        error: Option<&str>,
    ) -> TransferEnd {
        TransferEnd {
            id: Some(id.to_string()),
            direction,
            name: name.to_owned(),
            error: error.map(str::to_owned),
        }
    }

    /// A transfer of `name` that failed, as `error` says, before it was
    /// asked of the server: it has no id.
    pub fn unasked(direction: Direction, name: &str, error: &str) -> TransferEnd {
        TransferEnd {
            id: None,
            direction,
            name: name.to_owned(),
            error: Some(error.to_owned()),
        }
    }
}

/// A file in the shared folder, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The state of the connection, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected and joined to `server` (`host:port`).
    Connected {
        /// `host:port`.
        server: String,
    },
    /// Connection lost; the next try is at `retry_in` (`None`: trying now).
    Reconnecting {
        /// Why the last connection ended or the last try failed.
        reason: String,
        /// Tries so far.
        attempt: u32,
        /// Time until the next try.
        retry_in: Option<Duration>,
    },
    /// Gone for good (the client is about to exit).
    Closed {
        /// Why.
        reason: String,
    },
}

/// Who we are, where plain text goes, and the connection: the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Our name.
    pub me: String,
    /// Where plain text goes: `None` is everyone, `Some(user)` one user.
    pub target: Option<String>,
    /// The connection.
    pub link: Link,
    /// In a cluster, our server cannot reach the others now: only its
    /// own users are served (told by the server; false on a new
    /// connection until it says so).
    pub cut_off: bool,
}

impl Status {
    /// The status as a terminal may show it: names and reasons made inert.
    #[must_use]
    pub fn inert(&self) -> Status {
        let shown = |text: &String| inert(text).into_owned();
        Status {
            me: shown(&self.me),
            target: self.target.as_ref().map(shown),
            link: match &self.link {
                Link::Connected { server } => Link::Connected {
                    server: shown(server),
                },
                Link::Reconnecting {
                    reason,
                    attempt,
                    retry_in,
                } => Link::Reconnecting {
                    reason: shown(reason),
                    attempt: *attempt,
                    retry_in: *retry_in,
                },
                Link::Closed { reason } => Link::Closed {
                    reason: shown(reason),
                },
            },
            cut_off: self.cut_off,
        }
    }
}

/// A change to the list of who is online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roster {
    /// The whole list (after `/who`, or on connect).
    All {
        /// Everyone online.
        names: Vec<String>,
        /// Those of `names` who are away (their connection lost, their
        /// session waiting for them to come back), with for how long.
        away: Vec<Away>,
    },
    /// One more.
    Joined(String),
    /// One less.
    Left(String),
    /// One of them is away now (its connection lost, its session waiting
    /// for it to come back).
    Away(String),
    /// One of them that was away is back.
    Back(String),
}

/// A user of the roster who is away: its connection was lost, and its
/// session waits for it to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Away {
    /// Its name.
    pub name: String,
    /// For how long, in whole seconds, when the server answered.
    pub secs: u64,
}

impl Roster {
    /// The whole list, nobody away.
    #[must_use]
    pub fn all(names: Vec<String>) -> Roster {
        Roster::All {
            names,
            away: Vec::new(),
        }
    }

    /// The change as a terminal may show it: each name made inert.
    #[must_use]
    pub fn inert(self) -> Roster {
        match self {
            Roster::All { names, away } => Roster::All {
                names: names.into_iter().map(inert_string).collect(),
                away: away
                    .into_iter()
                    .map(|a| Away {
                        name: inert_string(a.name),
                        secs: a.secs,
                    })
                    .collect(),
            },
            Roster::Joined(name) => Roster::Joined(inert_string(name)),
            Roster::Left(name) => Roster::Left(inert_string(name)),
            Roster::Away(name) => Roster::Away(inert_string(name)),
            Roster::Back(name) => Roster::Back(inert_string(name)),
        }
    }
}

/// What the user did, from a view that reads input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserInput {
    /// A line to run (a command or text).
    Line(String),
    /// The lines of a paste, to run in order as so many [`Line`]s; while
    /// there is no connection, those refused are refused together.
    ///
    /// [`Line`]: UserInput::Line
    Lines(Vec<String>),
    /// The user asked to leave (Ctrl-D, or Ctrl-C twice, confirmed when
    /// transfers run); the same as `/quit`.
    Quit,
    /// Tab after `/download` found no file names yet: they are asked for
    /// quietly, and come to [`View::shared_files`].
    FetchFileNames,
}

/// Something that shows what the client does. Calls come from several
/// threads; none is made while the client holds a lock of its own.
pub trait View: Send + Sync {
    /// Adds a line to the chat.
    fn show(&self, entry: Entry);
    /// A transfer started or moved on: shows or updates its live line.
    fn transfer(&self, transfer: &TransferView);
    /// A transfer ended (its outcome is also shown as an [`Entry`]):
    /// removes its live line.
    fn transfer_ended(&self, end: &TransferEnd);
    /// The status changed.
    fn status(&self, status: &Status);
    /// Who is online changed.
    fn roster(&self, change: Roster);
    /// The files in the shared folder, as last listed (for completion).
    fn shared_files(&self, files: Vec<SharedFile>);
    /// On joining, who is online as the notice `text` (`online (3): …`),
    /// for a view that has a list of who is online but does not show it
    /// now (a narrow terminal, or the list turned off): it shows the
    /// notice and answers true. A view that shows the list, or has none
    /// (plain lines and JSON, whose output programs parse: they ask
    /// `/who`), shows nothing and answers false.
    fn roster_notice(&self, _text: &str) -> bool {
        false
    }
    /// `/clear`: empties the chat pane (a no-op where lines are gone once shown).
    fn clear(&self) {}
    /// A line the user entered that the client refused as it is (a
    /// message over the length limit): an interface with an input line
    /// puts it back there, if that is still empty, for the user to
    /// shorten (a no-op where lines are gone once entered).
    fn give_back(&self, _line: &str) {}
    /// `/nicklist`: shows or hides the list of who is online. False where
    /// there is no such list (plain lines, JSON).
    fn toggle_nicklist(&self) -> bool {
        false
    }
    /// Columns a line of text gets in the chat (after the time stamp),
    /// for text laid out to fit (`/help`); `None` where lines are not
    /// laid out (plain lines: 80 columns are assumed).
    fn text_width(&self) -> Option<usize> {
        None
    }
    /// True for an interactive terminal interface.
    fn is_terminal(&self) -> bool {
        false
    }
    /// Asks the user for a secret (a password) after `prompt`, shown
    /// masked and kept out of the input history; waits for the answer.
    /// `None` where there is no one to ask, or the user cancelled (Esc).
    fn ask_secret(&self, _prompt: &str) -> Option<String> {
        None
    }
    /// The end: puts the terminal back and prints `last_words` where the
    /// user will still see them after the exit.
    fn finish(&self, last_words: Option<&str>);
}

/// A count of bytes: `1 byte`, `0 bytes`, `20 bytes`.
pub fn byte_count(bytes: u64) -> String {
    if bytes == 1 {
        "1 byte".to_owned()
    } else {
        format!("{bytes} bytes")
    }
}

/// A size for people: bytes, or KiB, MiB, GiB with one decimal.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, n) in UNITS {
        if bytes >= n {
            return format!("{:.1} {unit}", bytes as f64 / n as f64);
        }
    }
    byte_count(bytes)
}

/// How long a transfer moves no byte before its line says `stalled`
/// instead of the rate and time left it had.
pub const STALLED: Duration = Duration::from_secs(5);

/// A duration for people, to the second: `45s`, `2m05s`, `1h02m03s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000);
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

impl TransferView {
    /// The transfer as a terminal may show it: its file name made inert.
    #[must_use]
    pub fn inert(&self) -> TransferView {
        TransferView {
            name: inert(&self.name).into_owned(),
            from: self.from.as_ref().map(|f| inert(f).into_owned()),
            ..self.clone()
        }
    }

    /// An offer waiting for an answer: `id` as the user types it (`#3`).
    #[must_use]
    pub fn offer(id: String, from: String, name: String, size: u64) -> TransferView {
        TransferView {
            id,
            direction: Direction::Offer,
            name,
            done: 0,
            total: size,
            rate: None,
            eta: None,
            waiting: true,
            stalled: false,
            from: Some(from),
        }
    }

    /// An offer's line in the parts around its file name: `#3 offer: `,
    /// then ` (20.0 MiB) from bob: `, `/accept 3` and ` or /decline 3`
    /// (what a narrow screen drops first).
    pub fn offer_parts(&self) -> [String; 4] {
        let n = self.id.trim_start_matches('#');
        [
            format!("{} offer: ", self.id),
            format!(
                " ({}) from {}: ",
                human_size(self.total),
                self.from.as_deref().unwrap_or("someone")
            ),
            format!("/accept {n}"),
            format!(" or /decline {n}"),
        ]
    }

    /// The transfer's line: `#3 ↓ big.bin  512.0 MiB / 2.0 GiB  25%  15.0 MiB/s  eta 1m40s`.
    /// An offer's: `#3 offer: push20.bin (20.0 MiB) from bob: /accept 3 or /decline 3`.
    pub fn line(&self) -> String {
        self.line_with(false)
    }

    /// The transfer's line for a script (plain lines, `--json`): what has
    /// moved and the size as exact counts of bytes, as its other transfer
    /// lines give them: `#3 ↓ big.bin  536870912 / 2147483648 bytes  25%  …`.
    /// An offer's line is [`line`](Self::line)'s, rounded in both.
    pub fn line_in_bytes(&self) -> String {
        self.line_with(true)
    }

    fn line_with(&self, exact: bool) -> String {
        if self.direction == Direction::Offer {
            let [head, about, accept, decline] = self.offer_parts();
            return format!("{head}{}{about}{accept}{decline}", self.name);
        }
        let [head, progress, pace] = self.progress_parts(exact);
        format!("{head}{}{progress}{pace}", self.name)
    }

    /// A running transfer's line in the parts around its file name:
    /// `#3 ↓ `, then `  512.0 MiB / 2.0 GiB  25%` and `  15.0 MiB/s  eta
    /// 1m40s` (or `  waiting`, `  stalled`: what a narrow screen drops
    /// first). Sizes in bytes when `exact`.
    pub fn progress_parts(&self, exact: bool) -> [String; 3] {
        let arrow = match self.direction {
            Direction::Download | Direction::Receive => '↓',
            Direction::Send => '↑',
            Direction::Offer => '?',
        };
        let percent = (self.done as f64 * 100.0 / self.total.max(1) as f64).floor() as u64;
        let (done, total) = if exact {
            (self.done.to_string(), byte_count(self.total))
        } else {
            (human_size(self.done), human_size(self.total))
        };
        let progress = format!("  {done} / {total}  {}%", percent.min(100));
        let mut pace = String::new();
        if self.waiting {
            pace.push_str("  waiting");
        } else if self.stalled {
            pace.push_str("  stalled");
        } else if let Some(rate) = self.rate {
            pace.push_str(&format!("  {}/s", human_size(rate as u64)));
            if let Some(eta) = self.eta {
                pace.push_str(&format!("  eta {}", human_duration(eta)));
            }
        }
        [format!("{} {arrow} ", self.id), progress, pace]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(human_size(999), "999 bytes");
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(byte_count(1), "1 byte");
        assert_eq!(byte_count(2), "2 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(2 << 30), "2.0 GiB");
        assert_eq!(human_duration(Duration::from_millis(44_600)), "45s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn a_scripts_transfer_line_gives_exact_counts_of_bytes() {
        let t = TransferView {
            id: "#1".into(),
            direction: Direction::Download,
            name: "big.bin".into(),
            done: 2_621_440,
            total: 30_000_000,
            rate: None,
            eta: None,
            waiting: false,
            stalled: false,
            from: None,
        };
        assert_eq!(
            t.line_in_bytes(),
            "#1 ↓ big.bin  2621440 / 30000000 bytes  8%"
        );
        assert_eq!(t.line(), "#1 ↓ big.bin  2.5 MiB / 28.6 MiB  8%");
        // An offer's line is the same for both: its size rounded.
        let offer = TransferView::offer("#3".into(), "bob".into(), "x.bin".into(), 20480);
        assert_eq!(offer.line_in_bytes(), offer.line());
    }

    #[test]
    fn a_transfer_line_shows_bytes_percent_rate_and_eta() {
        let mut t = TransferView {
            id: "#3".into(),
            direction: Direction::Download,
            name: "big.bin".into(),
            done: 512 << 20,
            total: 2 << 30,
            rate: Some(15.0 * 1024.0 * 1024.0),
            eta: Some(Duration::from_secs(100)),
            waiting: false,
            stalled: false,
            from: None,
        };
        assert_eq!(
            t.line(),
            "#3 ↓ big.bin  512.0 MiB / 2.0 GiB  25%  15.0 MiB/s  eta 1m40s"
        );
        // Stalled, the rate and time left it had are not shown.
        t.stalled = true;
        assert_eq!(t.line(), "#3 ↓ big.bin  512.0 MiB / 2.0 GiB  25%  stalled");
        t.stalled = false;
        t.waiting = true;
        t.direction = Direction::Send;
        assert_eq!(t.line(), "#3 ↑ big.bin  512.0 MiB / 2.0 GiB  25%  waiting");
    }

    #[test]
    fn an_offer_line_says_how_to_answer_it() {
        let t = TransferView::offer("#3".into(), "bob".into(), "push20.bin".into(), 20 << 20);
        assert_eq!(
            t.line(),
            "#3 offer: push20.bin (20.0 MiB) from bob: /accept 3 or /decline 3"
        );
    }
}
