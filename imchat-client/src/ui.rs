//! The views for scripts and programs, where input comes from, and the
//! choice between them and the full-screen interface.
//!
//! - [`PlainView`]: plain lines on stdout, flushed one by one, no control
//!   sequence, no progress, our own messages not echoed. What scripts and
//!   the end-to-end tests see.
//! - [`JsonView`] (`--json`): one JSON object per line per event, for
//!   programs.
//!
//! In both, input is standard input read line by line on a thread of its
//! own ([`spawn_stdin`]). Views are given raw text (see [`crate::view`]):
//! the plain view makes it inert before it prints it; the JSON view writes
//! it exactly, escaped as JSON.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imchat_core::inert;
use serde_json::{json, Value};

use crate::chatlog::ChatLog;
use crate::command;
use crate::screen::Screen;
use crate::view::{
    local_day, local_today, ChatEntry, Direction, Entry, Link, Roster, SharedFile, Status,
    TransferEnd, TransferView, UserInput, View,
};

/// Least time between two JSON updates of one transfer.
const JSON_TRANSFER_EVERY: Duration = Duration::from_secs(1);
/// A width no line of `/help` reaches: text laid out not to wrap.
const UNWRAPPED: usize = 1 << 16;

/// Writes one line to stdout and flushes it; a closed stdout is not a
/// reason to stop chatting.
fn write_line(text: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// A chat entry as a plain line: `<bob> hi`, `<bob> (private) hi`,
/// `* bob waves`, `* bob waves (private)`.
pub fn plain_chat(c: &ChatEntry) -> String {
    let tag = if c.private { " (private)" } else { "" };
    if c.action {
        format!("* {} {}{tag}", c.from, c.text)
    } else {
        format!("<{}>{tag} {}", c.from, c.text)
    }
}

/// A chat entry replayed as history (from before we joined), as a plain
/// line: its original local time in front, so that scripts tell it from
/// live traffic: `[history 15:04] <bob> hi`, with its date when it is of
/// another day than today: `[history 2026-12-06 15:04] <bob> hi`.
pub fn plain_history(c: &ChatEntry) -> String {
    format!("[history {}] {}", when(c.time), plain_chat(c))
}

/// A line missed while the connection was down, replayed after a resume,
/// as a plain line: the local time it happened in front, as history has
/// it, so that scripts tell it from live traffic: `[missed 15:04] <bob>
/// hi`, `[missed 15:04] *** carol has joined`; with its date when it
/// is of another day than today, as history.
pub fn plain_missed(time: SystemTime, line: &str) -> String {
    format!("[missed {}] {line}", when(time))
}

/// `15:04`: a local time of day, today's; `2026-12-06 15:04` for one of
/// another day, which the time of day alone would pass off as today's
/// (the full screen says so with a line where the day changes).
fn when(time: SystemTime) -> String {
    when_seen_on(time, local_today())
}

/// [`when`] as seen on the local day `today`.
fn when_seen_on(time: SystemTime, today: chrono::NaiveDate) -> String {
    let local = chrono::DateTime::<chrono::Local>::from(time);
    if local_day(time) == today {
        local.format("%H:%M").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// Plain lines on stdout: today's output for scripts and pipes.
pub struct PlainView;

/// The line the plain view prints for `entry`, its texts made inert;
/// `None` for our own messages, which are not echoed: the script knows
/// what it sent.
pub fn plain_line(entry: Entry) -> Option<String> {
    match entry.inert() {
        Entry::Chat(c) if c.own => None,
        Entry::Chat(c) if c.history => Some(plain_history(&c)),
        Entry::Chat(c) if c.missed => Some(plain_missed(c.time, &plain_chat(&c))),
        Entry::Chat(c) => Some(plain_chat(&c)),
        Entry::NoticeAt {
            time,
            text,
            missed: true,
        } => Some(plain_missed(time, &format!("*** {text}"))),
        // Live lines show no time, a join or a leave neither.
        Entry::Notice(text) | Entry::NoticeAt { text, .. } => Some(format!("*** {text}")),
        Entry::Error(text) => Some(format!("error: {text}")),
        Entry::Plain(text) => Some(text),
    }
}

impl View for PlainView {
    fn show(&self, entry: Entry) {
        if let Some(line) = plain_line(entry) {
            write_line(&line);
        }
    }
    fn transfer(&self, _: &TransferView) {}
    fn transfer_ended(&self, _: &TransferEnd) {}
    fn status(&self, _: &Status) {}
    fn roster(&self, _: Roster) {}
    fn shared_files(&self, _: Vec<SharedFile>) {}

    fn finish(&self, last_words: Option<&str>) {
        if let Some(text) = last_words {
            write_line(&inert(text));
        }
    }
}

/// One JSON object per line on stdout for each event (`--json`), its
/// texts exactly as given: not made inert.
#[derive(Default)]
pub struct JsonView {
    /// When each running transfer was last written, to write each at most
    /// once a second.
    last_update: Mutex<HashMap<String, Instant>>,
    /// The running transfers last written as `stalled`.
    stalled: Mutex<HashSet<String>>,
}

impl JsonView {
    fn emit(value: &Value) {
        write_line(&json_line(value));
    }

    /// True if transfer `id` may be written at `now` (and notes it was).
    fn due(&self, id: &str, now: Instant) -> bool {
        let mut last = self
            .last_update
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match last.get(id) {
            Some(at) if now.saturating_duration_since(*at) < JSON_TRANSFER_EVERY => false,
            _ => {
                last.insert(id.to_string(), now);
                true
            }
        }
    }

    /// True if `t` is to be written at `now`: when it stalled or moves
    /// again since it was last written (at once, each once), else when
    /// [`due`](Self::due).
    fn to_write(&self, t: &TransferView, now: Instant) -> bool {
        let mut stalled = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = if t.stalled {
            stalled.insert(t.id.clone())
        } else {
            stalled.remove(&t.id)
        };
        drop(stalled);
        if changed {
            self.last_update
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(t.id.clone(), now);
            return true;
        }
        // Stalled still: said already.
        !t.stalled && self.due(&t.id, now)
    }
}

/// `2026-11-30T15:04:05Z`: the time in UTC, to the second (RFC 3339).
pub fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn direction_json(direction: Direction) -> &'static str {
    match direction {
        Direction::Download => "download",
        Direction::Receive => "receive",
        Direction::Send => "send",
        Direction::Offer => "offer",
    }
}

fn transfer_json(t: &TransferView) -> Value {
    json!({
        "type": "transfer",
        "id": t.id,
        "direction": direction_json(t.direction),
        "from": t.from,
        "name": t.name,
        "done": t.done,
        "total": t.total,
        "rate": t.rate,
        "eta_secs": t.eta.map(|d| d.as_secs()),
        "waiting": t.waiting,
        "stalled": t.stalled,
    })
}

fn status_json(s: &Status) -> Value {
    let link = match &s.link {
        Link::Connected { server } => json!({"state": "connected", "server": server}),
        Link::Reconnecting {
            reason,
            attempt,
            retry_in,
        } => json!({
            "state": "reconnecting",
            "reason": reason,
            "attempt": attempt,
            "retry_in_secs": retry_in.map(|d| d.as_secs()),
        }),
        Link::Closed { reason } => json!({"state": "closed", "reason": reason}),
    };
    json!({"type": "status", "me": s.me, "target": s.target, "link": link, "cut_off": s.cut_off})
}

/// How a transfer ended: `ok`, and the reason when it is not.
fn transfer_ended_json(end: &TransferEnd) -> Value {
    json!({
        "type": "transfer_ended",
        "id": end.id,
        "direction": direction_json(end.direction),
        "name": end.name,
        "ok": end.error.is_none(),
        "error": end.error,
    })
}

/// The shared folder as listed: `names` as before, and `files` with sizes.
fn shared_files_json(files: &[SharedFile]) -> Value {
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let files: Vec<Value> = files
        .iter()
        .map(|f| json!({"name": f.name, "size": f.size}))
        .collect();
    json!({"type": "shared_files", "names": names, "files": files})
}

/// The JSON object of an entry: its texts exactly as given.
pub fn entry_json(entry: Entry) -> Value {
    match entry {
        Entry::Chat(c) => json!({
            "type": "chat",
            "time": rfc3339_utc(c.time),
            "from": c.from,
            "to": c.to,
            "private": c.private,
            "action": c.action,
            "own": c.own,
            "history": c.history,
            "missed": c.missed,
            "text": c.text,
        }),
        Entry::Notice(text) => json!({"type": "notice", "text": text}),
        Entry::NoticeAt { time, text, missed } => {
            json!({"type": "notice", "time": rfc3339_utc(time), "missed": missed, "text": text})
        }
        Entry::Error(text) => json!({"type": "error", "text": text}),
        Entry::Plain(text) => json!({"type": "plain", "text": text}),
    }
}

/// `value`'s line of JSON, with the characters a terminal acts on or
/// shows as nothing that JSON leaves as they are (DEL, the C1 controls,
/// the bidirectional controls, the line and paragraph separators, and the
/// invisible characters: zero-width spaces and joiners, word joiners, the
/// byte-order mark, tags; the rule of the inert display, see
/// [`imchat_core::escape_hidden`]) written as `\uXXXX` escapes: a program
/// reads the same text, and the output piped to a terminal cannot move
/// its cursor, reorder what it shows or hide text in it. They can only be
/// inside strings (JSON's own syntax is ASCII), where the escape means
/// the character.
fn json_line(value: &Value) -> String {
    terminal_safe(value.to_string())
}

/// See [`json_line`]. A character beyond U+FFFF (a tag) is written as its
/// UTF-16 surrogate pair, as JSON spells it.
fn terminal_safe(json: String) -> String {
    match imchat_core::escape_hidden(&json, |out, c| {
        for unit in c.encode_utf16(&mut [0; 2]) {
            let _ = write!(out, "\\u{unit:04x}");
        }
    }) {
        std::borrow::Cow::Borrowed(_) => json,
        std::borrow::Cow::Owned(safe) => safe,
    }
}

impl View for JsonView {
    fn show(&self, entry: Entry) {
        Self::emit(&entry_json(entry));
    }

    /// A program reads it: `/help` comes one row a line, not wrapped.
    fn text_width(&self) -> Option<usize> {
        Some(UNWRAPPED)
    }

    fn transfer(&self, t: &TransferView) {
        if self.to_write(t, Instant::now()) {
            Self::emit(&transfer_json(t));
        }
    }

    fn transfer_ended(&self, end: &TransferEnd) {
        if let Some(id) = &end.id {
            self.last_update
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
            self.stalled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
        Self::emit(&transfer_ended_json(end));
    }

    fn status(&self, status: &Status) {
        Self::emit(&status_json(status));
    }

    fn roster(&self, change: Roster) {
        Self::emit(&match change {
            Roster::All { names, away } => {
                let away: Vec<Value> = away
                    .iter()
                    .map(|a| json!({"name": a.name, "away_secs": a.secs}))
                    .collect();
                json!({"type": "roster", "all": names, "away": away})
            }
            Roster::Joined(name) => json!({"type": "roster", "joined": name}),
            Roster::Left(name) => json!({"type": "roster", "left": name}),
            Roster::Away(name) => json!({"type": "roster", "went_away": name}),
            Roster::Back(name) => json!({"type": "roster", "back": name}),
        });
    }

    fn shared_files(&self, files: Vec<SharedFile>) {
        Self::emit(&shared_files_json(&files));
    }

    fn finish(&self, last_words: Option<&str>) {
        if let Some(text) = last_words {
            Self::emit(&json!({"type": "notice", "text": text}));
        }
    }
}

/// Reads standard input on a thread of its own: one [`UserInput::Line`]
/// per line (without its line ending), [`UserInput::Quit`] at the end.
/// The channel holds no line ahead: a line is read only once the client
/// took the one before, so a script that writes faster than the server
/// reads is held back rather than buffered here.
pub fn spawn_stdin() -> io::Result<(Receiver<UserInput>, QuitSender)> {
    let (tx, rx) = mpsc::sync_channel(0);
    let quit = QuitSender::new(tx.clone());
    thread::Builder::new()
        .name("input".into())
        .spawn(move || read_lines(io::stdin().lock(), &tx))?;
    Ok((rx, quit))
}

fn read_lines(mut input: impl BufRead, tx: &SyncSender<UserInput>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if tx.send(UserInput::Line(line)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("reading standard input: {e}");
                break;
            }
        }
    }
    let _ = tx.send(UserInput::Quit);
}

/// True for a terminal that cannot move its cursor nor show colours
/// (`TERM=dumb`: Emacs's shell buffer, some editors' and CI's consoles),
/// where the full-screen interface would be escape sequences printed as
/// text: such a terminal gets plain lines, as irssi and weechat refuse to
/// draw there and less and git fall back to plain output.
fn dumb_terminal(term: Option<&std::ffi::OsStr>) -> bool {
    term.is_some_and(|t| t == "dumb")
}

/// Picks what shows the client and where its input comes from: JSON with
/// `--json`; the full-screen interface when stdin and stdout are both
/// terminals that can draw it (not `TERM=dumb`); plain lines otherwise.
pub fn make_view(
    me: &str,
    json: bool,
    history_file: Option<PathBuf>,
    chat_log: Option<&Path>,
) -> io::Result<(Arc<dyn View>, Receiver<UserInput>, QuitSender)> {
    let (view, input, quit): (Arc<dyn View>, _, _) = if json {
        let (rx, quit) = spawn_stdin()?;
        (Arc::new(JsonView::default()), rx, quit)
    } else if io::stdin().is_terminal()
        && io::stdout().is_terminal()
        && !dumb_terminal(std::env::var_os("TERM").as_deref())
    {
        let (tx, rx) = mpsc::channel();
        let quit = QuitSender::new(tx.clone());
        let screen = Screen::start(me, command::names(), tx, history_file)?;
        (screen, rx, quit)
    } else {
        let (rx, quit) = spawn_stdin()?;
        (Arc::new(PlainView), rx, quit)
    };
    match chat_log {
        Some(path) => {
            let logged = ChatLog::open(path, view.clone()).map_err(|e| {
                view.finish(None);
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open the chat log {}: {}",
                        path.display(),
                        imchat_cli::io_reason(&e)
                    ),
                )
            })?;
            Ok((Arc::new(logged), input, quit))
        }
        None => Ok((view, input, quit)),
    }
}

/// Puts a [`UserInput::Quit`] into the input, as if the user quit: for a
/// signal asking the client to end.
pub struct QuitSender(Box<dyn Fn() + Send + Sync>);

impl QuitSender {
    fn new<S: Into<AnySender>>(tx: S) -> Self {
        let tx = tx.into();
        Self(Box::new(move || match &tx {
            AnySender::Async(tx) => drop(tx.send(UserInput::Quit)),
            AnySender::Sync(tx) => drop(tx.send(UserInput::Quit)),
        }))
    }

    /// Sends the quit; waits until the client takes it if its input is
    /// a rendezvous channel (a script's).
    pub fn quit(&self) {
        (self.0)();
    }
}

/// The sending side of either kind of input channel.
enum AnySender {
    Async(mpsc::Sender<UserInput>),
    Sync(SyncSender<UserInput>),
}

impl From<mpsc::Sender<UserInput>> for AnySender {
    fn from(tx: mpsc::Sender<UserInput>) -> Self {
        AnySender::Async(tx)
    }
}

impl From<SyncSender<UserInput>> for AnySender {
    fn from(tx: SyncSender<UserInput>) -> Self {
        AnySender::Sync(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(private: bool, action: bool) -> ChatEntry {
        ChatEntry {
            time: UNIX_EPOCH,
            from: "bob".into(),
            to: None,
            private,
            own: false,
            action,
            history: false,
            missed: false,
            text: "waves".into(),
        }
    }

    #[test]
    fn only_a_dumb_terminal_is_refused_the_screen() {
        use std::ffi::OsStr;
        assert!(dumb_terminal(Some(OsStr::new("dumb"))));
        for term in ["xterm-256color", "vt100", "linux", "tmux-256color", ""] {
            assert!(!dumb_terminal(Some(OsStr::new(term))), "{term}");
        }
        assert!(!dumb_terminal(None));
    }

    #[test]
    fn plain_chat_lines_match_the_contract() {
        assert_eq!(plain_chat(&chat(false, false)), "<bob> waves");
        assert_eq!(plain_chat(&chat(true, false)), "<bob> (private) waves");
        assert_eq!(plain_chat(&chat(false, true)), "* bob waves");
        assert_eq!(plain_chat(&chat(true, true)), "* bob waves (private)");
    }

    /// A text with a line break and a right-to-left override, as a peer
    /// may send it.
    const TRICKY: &str = "a\nb\u{202e}c";

    /// What a resume replays is marked in JSON too, as `[missed HH:MM]`
    /// marks it in plain lines: a bridge tells it from live traffic.
    #[test]
    fn json_marks_what_a_resume_replays() {
        let mut c = chat(false, false);
        assert_eq!(entry_json(Entry::Chat(c.clone()))["missed"], false);
        c.missed = true;
        assert_eq!(entry_json(Entry::Chat(c))["missed"], true);
        let (time, text) = (std::time::SystemTime::now(), "bob has joined".to_string());
        for missed in [false, true] {
            let v = entry_json(Entry::NoticeAt {
                time,
                text: text.clone(),
                missed,
            });
            assert_eq!(v["missed"], missed);
        }
    }

    #[test]
    fn json_gives_the_exact_text_of_a_chat() {
        let mut c = chat(false, false);
        c.text = TRICKY.into();
        c.from = "bob\u{200b}".into();
        let v = entry_json(Entry::Chat(c));
        assert_eq!(v["text"], TRICKY);
        assert_eq!(v["from"], "bob\u{200b}");
        let line = json_line(&v);
        assert!(
            line.contains(r#""text":"a\nb"#) && line.contains(r#"b\u202ec""#),
            "the text escaped, by JSON's own escapes: {line}"
        );
        assert!(
            !line.contains('\u{202e}'),
            "nothing a terminal acts on: {line}"
        );
        assert!(!line.contains('\n'), "one object per line: {line}");
        assert!(
            !line.contains("^J") && !line.contains("\\u{202e}"),
            "{line}"
        );
        let back: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(back["text"].as_str(), Some(TRICKY));
    }

    #[test]
    fn json_lines_hold_nothing_a_terminal_acts_on_and_read_back_exact() {
        let text = "del\u{7f} csi\u{9b}2J rlo\u{202e} lri\u{2066} ls\u{2028} é🎉 👨\u{200d}👩";
        let line = json_line(&json!({ "text": text }));
        for c in ['\u{7f}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{2028}'] {
            assert!(!line.contains(c), "{c:?} in {line}");
        }
        assert!(
            line.contains(r"\u009b") && line.contains(r"\u202e"),
            "{line}"
        );
        // Ordinary text, emoji and joiners included, as it is.
        assert!(line.contains("é🎉 👨\u{200d}👩"), "{line}");
        let back: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(back["text"].as_str(), Some(text));
        let plain = json!({ "text": "hello" });
        assert_eq!(json_line(&plain), plain.to_string());
    }

    #[test]
    fn json_lines_escape_invisible_characters_and_read_back_exact() {
        let text = "zw\u{200b}nj\u{200c}wj\u{2060}bom\u{feff}tag\u{e0001}\u{e0041}\u{e007f}";
        let line = json_line(&json!({ "text": text }));
        for c in [
            '\u{200b}',
            '\u{200c}',
            '\u{2060}',
            '\u{feff}',
            '\u{e0001}',
            '\u{e0041}',
            '\u{e007f}',
        ] {
            assert!(!line.contains(c), "{c:?} in {line}");
        }
        assert!(
            line.contains(r"zw\u200bnj\u200cwj\u2060bom\ufefftag\udb40\udc01"),
            "{line}"
        );
        let back: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(back["text"].as_str(), Some(text));
    }

    #[test]
    fn json_gives_the_exact_text_of_notices_errors_and_plain_lines() {
        let text = format!("bob has left ({TRICKY})");
        for (entry, kind) in [
            (Entry::Notice(text.clone()), "notice"),
            (Entry::Error(text.clone()), "error"),
            (Entry::Plain(text.clone()), "plain"),
        ] {
            let v = entry_json(entry);
            assert_eq!(v["type"], kind);
            assert_eq!(v["text"].as_str(), Some(text.as_str()));
        }
    }

    /// A join's or a leave's notice has the time the server noted in
    /// JSON, as a chat has; piped, as live chat, no time. Other notices
    /// have none.
    #[test]
    fn a_join_or_leave_has_its_own_time_in_json_and_none_piped() {
        let time = UNIX_EPOCH + Duration::from_secs(1_796_051_045);
        let text = format!("bob has left ({TRICKY})");
        let entry = Entry::NoticeAt {
            time,
            text: text.clone(),
            missed: false,
        };
        let v = entry_json(entry.clone());
        assert_eq!(v["type"], "notice");
        assert_eq!(v["time"], "2026-11-30T15:04:05Z");
        assert_eq!(v["text"].as_str(), Some(text.as_str()), "exact");
        assert_eq!(
            plain_line(entry).as_deref(),
            Some("*** bob has left (a^Jb\\u{202e}c)")
        );
        assert_eq!(
            entry_json(Entry::Notice("resumed".into())).get("time"),
            None
        );
    }

    #[test]
    fn plain_lines_show_every_text_inert() {
        let mut c = chat(false, false);
        c.text = TRICKY.into();
        c.from = "bob\u{200b}".into();
        assert_eq!(
            plain_line(Entry::Chat(c.clone())).as_deref(),
            Some("<bob\\u{200b}> a^Jb\\u{202e}c")
        );
        c.history = true;
        let line = plain_line(Entry::Chat(c.clone())).expect("a line");
        assert!(line.ends_with("<bob\\u{200b}> a^Jb\\u{202e}c"), "{line}");
        c.own = true;
        assert_eq!(plain_line(Entry::Chat(c)), None, "our own, not echoed");
        let text = format!("bob has left ({TRICKY})");
        let shown = "bob has left (a^Jb\\u{202e}c)";
        assert_eq!(
            plain_line(Entry::Notice(text.clone())),
            Some(format!("*** {shown}"))
        );
        assert_eq!(
            plain_line(Entry::Error(text.clone())),
            Some(format!("error: {shown}"))
        );
        assert_eq!(plain_line(Entry::Plain(text)), Some(shown.to_string()));
    }

    /// A local time on `date` at `h:m`.
    fn local_at(date: chrono::NaiveDate, h: u32, m: u32) -> SystemTime {
        let local = date.and_hms_opt(h, m, 0).expect("a time of day");
        let local = local.and_local_timezone(chrono::Local).earliest();
        local.expect("a local time").into()
    }

    #[test]
    fn history_lines_carry_their_original_time_and_live_ones_do_not_change() {
        let mut c = chat(false, false);
        c.text = "hi".into();
        c.time = local_at(local_today(), 15, 4);
        assert_eq!(plain_chat(&c), "<bob> hi", "live lines as ever");
        c.history = true;
        assert_eq!(plain_history(&c), "[history 15:04] <bob> hi");
        c.action = true;
        c.private = true;
        assert_eq!(plain_history(&c), "[history 15:04] * bob hi (private)");
    }

    /// A time of day alone reads as today's: history (or what a resume
    /// replays) of an earlier day says its date too, as the full screen
    /// says the day with a line.
    #[test]
    fn history_of_another_day_says_its_date_piped() {
        let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 12, d).expect("a date");
        let time = local_at(day(6), 15, 4);
        assert_eq!(when_seen_on(time, day(8)), "2026-12-06 15:04");
        assert_eq!(when_seen_on(time, day(6)), "15:04");
        assert_eq!(
            when_seen_on(local_at(day(9), 0, 1), day(8)),
            "2026-12-09 00:01"
        );
        let earlier = local_today() - chrono::Duration::days(2);
        let date = earlier.format("%Y-%m-%d");
        let mut c = chat(false, false);
        c.text = "hi".into();
        c.time = local_at(earlier, 15, 4);
        c.history = true;
        assert_eq!(
            plain_line(Entry::Chat(c.clone())).as_deref(),
            Some(format!("[history {date} 15:04] <bob> hi").as_str())
        );
        c.history = false;
        c.missed = true;
        assert_eq!(
            plain_line(Entry::Chat(c)).as_deref(),
            Some(format!("[missed {date} 15:04] <bob> hi").as_str())
        );
    }

    /// What a resume replays was missed while the connection was down:
    /// piped, it carries the time it happened, as history does, so that
    /// it does not read as live.
    #[test]
    fn missed_lines_carry_their_time_piped() {
        let time = local_at(local_today(), 15, 4);
        let stamp = "15:04";
        let mut c = chat(false, false);
        c.text = "A3 after kill".into();
        c.time = time;
        c.missed = true;
        assert_eq!(
            plain_line(Entry::Chat(c)).as_deref(),
            Some(format!("[missed {stamp}] <bob> A3 after kill").as_str())
        );
        let joined = |missed| Entry::NoticeAt {
            time,
            text: "carol has joined".into(),
            missed,
        };
        assert_eq!(
            plain_line(joined(true)).as_deref(),
            Some(format!("[missed {stamp}] *** carol has joined").as_str())
        );
        assert_eq!(
            plain_line(joined(false)).as_deref(),
            Some("*** carol has joined"),
            "a live join as ever"
        );
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_051_045);
        assert_eq!(rfc3339_utc(t), "2026-11-30T15:04:05Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_utc(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn stdin_lines_become_inputs_and_the_end_quits() {
        let (tx, rx) = mpsc::sync_channel(8);
        read_lines(&b"hello\r\n/who\nlast"[..], &tx);
        let got: Vec<UserInput> = rx.try_iter().collect();
        assert_eq!(
            got,
            vec![
                UserInput::Line("hello".into()),
                UserInput::Line("/who".into()),
                UserInput::Line("last".into()),
                UserInput::Quit,
            ]
        );
    }

    #[test]
    fn json_transfer_updates_come_once_a_second_per_transfer() {
        let view = JsonView::default();
        let t0 = Instant::now();
        assert!(view.due("#1", t0));
        assert!(view.due("#2", t0), "each transfer has its own clock");
        assert!(!view.due("#1", t0 + Duration::from_millis(999)));
        assert!(view.due("#1", t0 + Duration::from_secs(1)));
        view.last_update.lock().unwrap().remove("#2");
        assert!(
            view.due("#2", t0 + Duration::from_millis(10)),
            "after its end"
        );
    }

    /// A transfer that stalls is written once as `stalled` (not held
    /// back by the once-a-second pace), and once as moving again.
    #[test]
    fn json_says_once_when_a_transfer_stalls_and_moves_again() {
        let view = JsonView::default();
        let t0 = Instant::now();
        let mut t = TransferView {
            id: "#4".into(),
            direction: Direction::Download,
            name: "big.bin".into(),
            done: 10,
            total: 20,
            rate: None,
            eta: None,
            waiting: false,
            stalled: false,
            from: None,
        };
        assert!(view.to_write(&t, t0));
        t.stalled = true;
        assert!(
            view.to_write(&t, t0 + Duration::from_millis(100)),
            "stalled"
        );
        assert_eq!(transfer_json(&t)["stalled"], true);
        assert!(
            !view.to_write(&t, t0 + Duration::from_secs(5)),
            "stalled still: said once"
        );
        t.stalled = false;
        t.done = 11;
        assert!(
            view.to_write(&t, t0 + Duration::from_millis(5100)),
            "moving again"
        );
        assert!(
            !view.to_write(&t, t0 + Duration::from_millis(5200)),
            "paced"
        );
    }

    #[test]
    fn transfer_json_names_every_field() {
        let t = TransferView {
            id: "#3".into(),
            direction: Direction::Download,
            name: "big.bin".into(),
            done: 10,
            total: 20,
            rate: Some(5.0),
            eta: Some(Duration::from_secs(2)),
            waiting: false,
            stalled: false,
            from: None,
        };
        let v = transfer_json(&t);
        assert_eq!(v["type"], "transfer");
        assert_eq!(v["id"], "#3");
        assert_eq!(v["direction"], "download");
        assert_eq!(v["done"], 10);
        assert_eq!(v["eta_secs"], 2);
    }
}
