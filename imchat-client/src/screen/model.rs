//! Everything the screen shows and how keys change it, without the
//! terminal: the chat entries and where the view is scrolled, transfers,
//! roster, status, the input line. The screen's thread feeds it events and
//! drains what it asks for (lines to send, a bell, history to save).

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use imchat_core::{inert, is_name_char};

use super::complete::{self, Cycle, Sources};
use super::editor::{Editor, UndoSteps};
use super::keys::{self, Action, Paste};
use super::render;
use crate::command::Command;
use crate::view::{
    inert_string, local_day, local_today, Direction, Entry, Link, Roster, Status, TransferView,
    UserInput, STALLED,
};

/// How many entries the chat keeps.
pub const SCROLLBACK: usize = 10_000;
/// How many bytes of text the chat keeps at most: past it, the oldest
/// entries go (ten thousand messages of 64 KiB would be 640 MB).
pub const SCROLLBACK_BYTES: usize = 32 * 1024 * 1024;

/// The bytes of text an entry holds.
fn text_bytes(entry: &Entry) -> usize {
    match entry {
        Entry::Chat(c) => c.from.len() + c.to.as_ref().map_or(0, String::len) + c.text.len(),
        Entry::Notice(t) | Entry::NoticeAt { text: t, .. } | Entry::Error(t) | Entry::Plain(t) => {
            t.len()
        }
    }
}

/// A second Ctrl-C (or Ctrl-D) within this quits.
pub const QUIT_WINDOW: Duration = Duration::from_secs(5);

/// The nick list shows by default at this width and more.
pub const NICKLIST_MIN_WIDTH: u16 = 100;

/// One entry of the chat, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// `HH:MM`.
    pub stamp: String,
    /// What it is.
    pub entry: Entry,
    /// A message from someone else that names us.
    pub mention: bool,
    /// Its rows at a width, as last wrapped (scrolling far back would wrap
    /// the whole chat each frame otherwise).
    pub rows: Cell<Option<(u16, usize)>>,
}

impl Shown {
    /// How many rows it takes at `width` columns for `me`.
    pub fn height(&self, me: &str, width: u16) -> usize {
        self.cached_height(width).unwrap_or_else(|| {
            let rows = render::entry_height(self, me, width);
            self.rows.set(Some((width, rows)));
            rows
        })
    }

    /// Its rows at `width` columns, if counted at that width already.
    pub fn cached_height(&self, width: u16) -> Option<usize> {
        self.rows
            .get()
            .and_then(|(w, rows)| (w == width).then_some(rows))
    }
}

/// Where a name goes in the nick list: the order of `/who` and the join's
/// "online" line ([`name_order`](imchat_core::name_order): ignoring case, `u2` before `u10`). Not
/// the look-alike key that makes names the same user: it reads `1` as `l`
/// and `m` as `rn`, so `q1` would sort after `q9` and `mia` after `q1`.
fn roster_order(a: &str, b: &str) -> std::cmp::Ordering {
    imchat_core::name_order(a, b)
}

/// The screen's state.
#[derive(Debug)]
pub struct Model {
    /// Our name until the first status says it.
    me: String,
    /// The last status, if any yet.
    status: Option<Status>,
    /// The chat, oldest first.
    entries: VecDeque<Shown>,
    /// The bytes of text of `entries` ([`text_bytes`]).
    entry_bytes: usize,
    /// Rows scrolled back from the bottom (0: following new entries).
    scroll: usize,
    /// Entries that arrived while scrolled back.
    unseen: usize,
    /// Entries dropped from the front of the chat so far: an entry's
    /// index plus this is its number, which stays.
    dropped: usize,
    /// The text kept at the bottom of a scrolled-back view across changes
    /// of width: an entry's number and a byte of its text as drawn. Kept
    /// until the user scrolls, so that a narrower and then wider pane
    /// gives the first view back.
    anchor: Option<(usize, usize)>,
    /// The chat pane's size at the last draw (width, height).
    pane: (u16, u16),
    /// The terminal's width at the last draw.
    width: u16,
    /// Running transfers, in the order they started.
    transfers: Vec<TransferView>,
    /// When each transfer last moved a byte (or started), by id: one that
    /// stops says `stalled` rather than the rate it had.
    moved: HashMap<String, Instant>,
    /// Who is online, sorted.
    roster: Vec<String>,
    /// Those of the roster who are away, as the last `/who` said.
    away: HashSet<String>,
    /// Shared file names.
    files: Vec<String>,
    /// Whether Tab asked the client for them (once: `/list` refreshes).
    files_asked: bool,
    /// The input line (text, cursor) of a Tab that waits for them.
    tab_waiting: Option<(String, usize)>,
    /// Command names with their `/`.
    commands: Vec<String>,
    /// The input line.
    pub editor: Editor,
    /// A Tab completion going on.
    cycle: Option<Cycle>,
    /// A paste of many lines waiting for Enter or Esc (the input line is
    /// left as it was until Enter).
    pending_paste: Option<PastedLines>,
    /// A Ctrl-C or Ctrl-D on the empty line that warned, and when.
    armed: Option<(Action, Instant)>,
    /// What that warning said, shown in the status line while it holds:
    /// in the chat alone, a busy room or a view scrolled back hides it, and
    /// the next Ctrl-C quits with no warning seen.
    armed_warning: String,
    /// When a `/quit` entered warned of transfers running (the next line
    /// entered, if another `/quit` soon, confirms; any other disarms).
    quit_line_armed: Option<Instant>,
    /// The nick list shown or hidden by the user (`None`: by width).
    nicklist: Option<bool>,
    /// Makes the `HH:MM` of entries that carry no time.
    clock: fn() -> String,
    /// The local date of entries that carry no time.
    today: fn() -> NaiveDate,
    /// The local date of the last entry shown: an entry of another day
    /// is shown under a line that says which.
    day: Option<NaiveDate>,
    /// Draw without colours (`NO_COLOR`): bold, dim and reverse only.
    pub no_color: bool,
    /// Lines for the client to run.
    pub outbox: Vec<UserInput>,
    /// Lines for the history file.
    pub to_history: Vec<String>,
    /// Lines to take out of the history file again (refused: too long).
    pub forget_history: Vec<String>,
    /// Ring the bell.
    pub bell: bool,
    /// Clear the terminal before the next draw (Ctrl-L).
    pub clear_screen: bool,
    /// Stop as a shell's job, then draw the whole screen again (Ctrl-Z).
    pub suspend: bool,
    /// A secret being typed: its prompt, where the answer goes, and the
    /// line that was being edited before (given back after).
    secret: Option<SecretEntry>,
}

/// A password typed into the input line: masked, and kept out of the
/// history and the kill ring.
/// A paste's lines to send, as they would go out (the draft included).
#[derive(Debug)]
struct PastedLines {
    /// The complete lines.
    lines: Vec<String>,
    /// Whether the first line starts with the draft before the cursor.
    joins_draft: bool,
    /// The unfinished last line.
    rest: String,
    /// The draft after the cursor, to follow the unfinished last line.
    after: String,
    /// Where a draft that names one (`/msg bob `, `@bob `, `/broadcast `)
    /// sends the first line, and so all the others.
    to: Option<PasteTarget>,
}

/// Where a whole paste goes when the draft before it names where.
#[derive(Debug)]
struct PasteTarget {
    /// What goes before each line after the first: `/msg bob `.
    prefix: String,
    /// Who, for the question: `bob`, `everyone`.
    who: String,
}

impl PasteTarget {
    /// The destination that `first` (the draft and the paste's first
    /// line) names: a private message's user, or everyone for
    /// `/broadcast`.
    fn of(first: &str) -> Option<Self> {
        match Command::parse(first) {
            Ok(Command::Unicast { to, .. }) => Some(Self {
                prefix: format!("/msg {} ", to.as_str()),
                who: to.as_str().to_owned(),
            }),
            Ok(Command::Broadcast(_)) => Some(Self {
                prefix: "/broadcast ".to_owned(),
                who: "everyone".to_owned(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct SecretEntry {
    prompt: String,
    answer: std::sync::mpsc::Sender<String>,
    saved: (String, usize),
    /// The line's undo steps, which the secret's edits must not join.
    undo: UndoSteps,
}

/// The local time as `HH:MM`.
pub fn local_stamp() -> String {
    chrono::Local::now().format("%H:%M").to_string()
}

/// The line shown above the first entry of a day other than the last
/// entry's, as irssi's: `day changed to Tuesday 8 December 2026`.
fn day_line(day: NaiveDate) -> String {
    format!("day changed to {}", day.format("%A %-d %B %Y"))
}

impl Model {
    /// A model for `me`, with the command names and the history (oldest first).
    pub fn new(me: &str, commands: Vec<String>, history: Vec<String>) -> Self {
        let commands = commands
            .into_iter()
            .map(|c| {
                if c.starts_with('/') {
                    c
                } else {
                    format!("/{c}")
                }
            })
            .collect();
        Self {
            me: inert(me).into_owned(),
            status: None,
            entries: VecDeque::new(),
            entry_bytes: 0,
            scroll: 0,
            unseen: 0,
            dropped: 0,
            anchor: None,
            pane: (80, 20),
            width: 80,
            transfers: Vec::new(),
            moved: HashMap::new(),
            roster: Vec::new(),
            away: HashSet::new(),
            files: Vec::new(),
            files_asked: false,
            tab_waiting: None,
            commands,
            editor: Editor::new(history),
            cycle: None,
            pending_paste: None,
            armed: None,
            armed_warning: String::new(),
            quit_line_armed: None,
            nicklist: None,
            clock: local_stamp,
            today: local_today,
            day: None,
            no_color: false,
            outbox: Vec::new(),
            to_history: Vec::new(),
            forget_history: Vec::new(),
            bell: false,
            clear_screen: false,
            suspend: false,
            secret: None,
        }
    }

    /// Starts asking for a secret after `prompt`; Enter sends what was
    /// typed to `answer` (Esc or Ctrl-C an empty answer).
    pub fn ask_secret(&mut self, prompt: &str, answer: std::sync::mpsc::Sender<String>) {
        self.editor.search_cancel();
        if let Some(old) = self.secret.take() {
            let _ = old.answer.send(String::new());
            self.editor.set(old.saved.0, old.saved.1);
            self.editor.restore_undo(old.undo);
        }
        let saved = (self.editor.text().to_string(), self.editor.cursor());
        let undo = self.editor.take_undo();
        self.editor.set(String::new(), 0);
        self.secret = Some(SecretEntry {
            prompt: inert(prompt).into_owned(),
            answer,
            saved,
            undo,
        });
    }

    /// The input line as drawn: the text, or as many `*` as a secret has
    /// characters; and the cursor's byte offset in it.
    pub fn shown_input(&self) -> (String, usize) {
        if let Some(search) = self.editor.search_shown() {
            return (search.text.to_string(), search.cursor);
        }
        let (text, cursor) = (self.editor.text(), self.editor.cursor());
        if self.secret.is_none() {
            return (text.to_string(), cursor);
        }
        let before = text.get(..cursor).map_or(0, |t| t.chars().count());
        ("*".repeat(text.chars().count()), before)
    }

    /// Keys while a secret is typed: editing within the line, Enter to
    /// give it, Esc or Ctrl-C to cancel; nothing reaches the history.
    fn handle_secret(&mut self, action: Action) {
        let e = &mut self.editor;
        let done = match action {
            Action::Insert(c) => {
                e.insert(c.encode_utf8(&mut [0; 4]));
                None
            }
            Action::Left => {
                e.left();
                None
            }
            Action::Right => {
                e.right();
                None
            }
            Action::Home | Action::LineStart => {
                e.home();
                None
            }
            Action::End | Action::LineEnd => {
                e.end();
                None
            }
            Action::Backspace => {
                e.backspace();
                None
            }
            Action::Delete => {
                e.delete();
                None
            }
            Action::Enter => Some(e.text().to_string()),
            Action::Escape | Action::Interrupt | Action::EndOfInput => Some(String::new()),
            _ => None,
        };
        if let Some(text) = done {
            if let Some(entry) = self.secret.take() {
                let (saved, cursor) = entry.saved;
                self.editor.set(saved, cursor);
                self.editor.restore_undo(entry.undo);
                let _ = entry.answer.send(text);
            }
        }
    }

    /// Uses `clock` for the time of entries that carry none (tests).
    #[cfg(test)]
    pub fn with_clock(mut self, clock: fn() -> String) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `today` for the date of entries that carry no time (tests).
    #[cfg(test)]
    pub fn with_today(mut self, today: fn() -> NaiveDate) -> Self {
        self.today = today;
        self
    }

    /// Our name.
    pub fn me(&self) -> &str {
        self.status.as_ref().map_or(&self.me, |s| &s.me)
    }

    /// The chat entries, oldest first.
    pub fn entries(&self) -> &VecDeque<Shown> {
        &self.entries
    }

    /// Rows scrolled back from the bottom.
    pub fn scroll(&self) -> usize {
        self.scroll
    }

    /// Running transfers.
    pub fn transfers(&self) -> &[TransferView] {
        &self.transfers
    }

    /// How many of the [`transfers`](Self::transfers) are offers waiting
    /// for an answer (not running).
    fn offers_waiting(&self) -> usize {
        self.transfers
            .iter()
            .filter(|t| t.direction == Direction::Offer)
            .count()
    }

    /// Who is online.
    pub fn roster(&self) -> &[String] {
        &self.roster
    }

    /// Whether `name`, of the roster, is away (its connection lost, its
    /// session waiting for it), as the last `/who` said.
    pub fn is_away(&self, name: &str) -> bool {
        self.away.contains(name)
    }

    // ---- what the client tells the view ----
    // Its texts come raw, and are made inert here, as they come in.

    /// Adds an entry; a message naming us, or a private one, rings. A
    /// line we just sent brings a scrolled-back view to the bottom, as
    /// irssi and weechat do; our own lines are never counted as new.
    pub fn show(&mut self, entry: Entry) {
        let entry = entry.inert();
        let own = matches!(&entry, Entry::Chat(c) if c.own);
        let sent_now = matches!(&entry, Entry::Chat(c) if c.own && !c.history);
        // An entry that carries its time (a chat, a join, a leave) is
        // shown with it; others with the time they are shown.
        let local = entry.time().map(chrono::DateTime::<chrono::Local>::from);
        let stamp = local.map_or_else(self.clock, |time| time.format("%H:%M").to_string());
        // The chat shows times of day only: the day they are of is said
        // whenever it changes, at midnight or between the history of an
        // earlier day and what follows it.
        let day = entry.time().map_or_else(self.today, local_day);
        let last = self.day.replace(day).unwrap_or_else(self.today);
        if day != last {
            let line = Shown {
                stamp: "00:00".to_owned(),
                entry: Entry::Notice(day_line(day)),
                mention: false,
                rows: Cell::new(None),
            };
            self.append(line, true);
        }
        let mention = match &entry {
            Entry::Chat(chat) => {
                // Our own lines are never mentions: those we send, and
                // those the server replays as history (not marked own).
                let ours = chat.own || chat.from.to_lowercase() == self.me().to_lowercase();
                let mention = !ours && mentions(&chat.text, self.me());
                if !chat.own && !chat.history && (mention || chat.private) {
                    self.bell = true;
                }
                mention
            }
            _ => false,
        };
        let shown = Shown {
            stamp,
            entry,
            mention,
            rows: Cell::new(None),
        };
        if self.scroll > 0 && sent_now {
            self.scroll = 0;
            self.unseen = 0;
        }
        self.append(shown, !own);
    }

    /// Adds a shown entry below the others; while the view is scrolled
    /// back it stays where it is, and the entry is counted among the new
    /// lines below it when `counted`.
    fn append(&mut self, shown: Shown, counted: bool) {
        if self.scroll > 0 {
            // Keep the view where it is: the new rows are below it.
            self.scroll += shown.height(self.me(), self.pane.0);
            if counted {
                self.unseen += 1;
            }
        }
        self.entry_bytes += text_bytes(&shown.entry);
        self.entries.push_back(shown);
        while self.entries.len() > SCROLLBACK
            || (self.entry_bytes > SCROLLBACK_BYTES && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.dropped += 1;
                self.entry_bytes -= text_bytes(&old.entry);
            }
        }
    }

    /// A transfer started or moved on.
    pub fn transfer(&mut self, transfer: &TransferView) {
        let mut transfer = transfer.inert();
        match self.transfers.iter_mut().find(|t| t.id == transfer.id) {
            Some(t) => {
                if t.done == transfer.done && t.waiting == transfer.waiting {
                    // No byte moved since: stalled as before.
                    transfer.stalled = t.stalled;
                } else {
                    self.moved.insert(transfer.id.clone(), Instant::now());
                }
                *t = transfer;
            }
            None => {
                self.moved.insert(transfer.id.clone(), Instant::now());
                self.transfers.push(transfer);
            }
        }
    }

    /// A transfer ended.
    pub fn transfer_ended(&mut self, id: &str) {
        self.transfers.retain(|t| t.id != id);
        self.moved.remove(id);
    }

    /// Marks `stalled` the transfers that moved no byte for [`STALLED`]
    /// at `now`, as their rate and time left no longer hold (an offer
    /// waits, it does not stall); true when one changed (to redraw).
    pub fn expire_stalled(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for t in &mut self.transfers {
            let since = self.moved.get(&t.id).copied().unwrap_or(now);
            let stalled = !t.waiting && now.saturating_duration_since(since) >= STALLED;
            if stalled && !t.stalled {
                t.stalled = true;
                changed = true;
            }
        }
        changed
    }

    /// The status changed.
    pub fn set_status(&mut self, status: &Status) {
        self.status = Some(status.inert());
    }

    /// Who is online changed.
    pub fn change_roster(&mut self, change: Roster) {
        match change.inert() {
            Roster::All {
                names: mut all,
                away,
            } => {
                all.sort_by(|a, b| roster_order(a, b));
                all.dedup();
                self.roster = all;
                self.away = away.into_iter().map(|a| a.name).collect();
            }
            Roster::Joined(name) => {
                self.away.remove(&name);
                if !self.roster.contains(&name) {
                    let at = self
                        .roster
                        .partition_point(|n| roster_order(n, &name).is_lt());
                    self.roster.insert(at, name);
                }
            }
            Roster::Left(name) => {
                self.away.remove(&name);
                self.roster.retain(|n| *n != name);
            }
            // Only a user listed is marked: one not listed yet is listed
            // (with its mark) by the next whole list.
            Roster::Away(name) => {
                if self.roster.contains(&name) {
                    self.away.insert(name);
                }
            }
            Roster::Back(name) => {
                self.away.remove(&name);
            }
        }
    }

    /// On joining, who is online (`online (3): alice, bob, carol`): shown
    /// as a notice, true, unless the nick list shows them already.
    pub fn roster_notice(&mut self, text: &str) -> bool {
        let shown = !self.nicklist_shown(self.width);
        if shown {
            self.show(Entry::Notice(text.to_owned()));
        }
        shown
    }

    /// The shared file names.
    ///
    /// A Tab that waited for them completes now, if the input line is
    /// still the one it was pressed on.
    pub fn shared_files(&mut self, names: Vec<String>) {
        self.files = names.into_iter().map(inert_string).collect();
        if let Some((text, cursor)) = self.tab_waiting.take() {
            if self.cycle.is_none() && self.editor.text() == text && self.editor.cursor() == cursor
            {
                self.complete(false);
            }
        }
    }

    /// `/clear`.
    pub fn clear(&mut self) {
        self.dropped += self.entries.len();
        self.entries.clear();
        self.entry_bytes = 0;
        self.scroll = 0;
        self.anchor = None;
        self.unseen = 0;
        // Repainted whole, as Ctrl-L does: a terminal that drew a grapheme
        // wider or narrower than its cells (some scripts, flags) may have
        // left pieces of it that a redraw of the changed cells keeps.
        self.clear_screen = true;
    }

    /// Shows or hides the nick list.
    pub fn toggle_nicklist(&mut self) {
        self.nicklist = Some(!self.nicklist_shown(self.width));
    }

    /// Whether the nick list shows at `width` columns.
    /// Columns a line of text gets in the chat pane after its time stamp
    /// (`HH:MM `), as last drawn; `None` when too narrow for any.
    pub fn text_width(&self) -> Option<usize> {
        let pane = usize::from(self.pane.0);
        let stamp = (self.clock)().chars().count() + 1;
        (pane > stamp).then(|| pane - stamp)
    }

    /// Whether the client is connected (not reconnecting, nor closed).
    pub fn connected(&self) -> bool {
        matches!(
            self.status.as_ref().map(|s| &s.link),
            Some(Link::Connected { .. })
        )
    }

    pub fn nicklist_shown(&self, width: u16) -> bool {
        self.nicklist.unwrap_or(width >= NICKLIST_MIN_WIDTH)
    }

    // ---- what the screen shows ----

    /// The prompt: `alice> `, or `alice→bob> ` when plain text goes to bob.
    pub fn prompt(&self) -> String {
        if let Some(secret) = &self.secret {
            return secret.prompt.clone();
        }
        if let Some(search) = self.editor.search_shown() {
            let failed = if search.failed { "failed " } else { "" };
            return format!("({failed}reverse-i-search)'{}': ", search.query);
        }
        match self.status.as_ref().and_then(|s| s.target.as_deref()) {
            Some(target) => format!("{}→{target}> ", self.me()),
            None => format!("{}> ", self.me()),
        }
    }

    /// How many of the entries that came while scrolled back are still
    /// wholly below the view: paging down through them counts down, as
    /// weechat's `-MORE(n)-` does, instead of saying all are still new.
    /// Of them, the second number is of those for us (naming us, or
    /// private), as irssi's activity list shows a highlight apart: the bell
    /// rang for them, but they are out of sight.
    fn unseen_below(&self) -> (usize, usize) {
        let (me, width) = (self.me(), self.pane.0);
        let mut rows = 0;
        let below = self.entries.iter().rev().take_while(|shown| {
            rows += shown.height(me, width);
            rows <= self.scroll
        });
        let (mut new, mut for_us) = (0, 0);
        for shown in below.take(self.unseen) {
            new += 1;
            let private =
                matches!(&shown.entry, Entry::Chat(c) if c.private && !c.own && !c.history);
            for_us += usize::from(shown.mention || private);
        }
        (new, for_us)
    }

    /// Whether a long paste waits for Enter or Esc, or a Ctrl-C or Ctrl-D
    /// waits for its second press (the status line asks).
    pub fn status_asks(&self) -> bool {
        self.pending_paste.is_some() || self.quit_warning().is_some()
    }

    /// The warning of a Ctrl-C or Ctrl-D that waits for its second press.
    fn quit_warning(&self) -> Option<&str> {
        self.armed.map(|_| self.armed_warning.as_str())
    }

    /// Ends the wait for a second Ctrl-C or Ctrl-D once its window has
    /// passed at `now`; true when it ended (the status line changes back).
    pub fn expire_quit_warning(&mut self, now: Instant) -> bool {
        let passed = self
            .armed
            .is_some_and(|(_, at)| now.duration_since(at) >= QUIT_WINDOW);
        if passed {
            self.armed = None;
        }
        passed
    }

    /// The status line's text (or the question a long paste asks, or the
    /// warning of a first Ctrl-C).
    pub fn status_line(&self) -> String {
        if let Some(pasted) = &self.pending_paste {
            let to = pasted
                .to
                .as_ref()
                .map_or_else(String::new, |to| format!(" to {}", to.who));
            return format!(
                "paste {} lines{to}? Enter sends them, Esc cancels",
                pasted.lines.len()
            );
        }
        if let Some(warning) = self.quit_warning() {
            return warning.to_owned();
        }
        let target = match self.status.as_ref().and_then(|s| s.target.as_deref()) {
            Some(target) => target.to_owned(),
            None => "everyone".to_owned(),
        };
        let link = match self.status.as_ref().map(|s| &s.link) {
            None => "connecting".to_owned(),
            Some(Link::Connected { server }) => format!("connected to {server}"),
            Some(Link::Reconnecting {
                reason,
                attempt,
                retry_in: Some(wait),
            }) => format!(
                "reconnecting in {} (try {attempt}): {reason}",
                crate::view::human_duration(*wait)
            ),
            Some(Link::Reconnecting {
                reason,
                attempt,
                retry_in: None,
            }) => format!("reconnecting now (try {attempt}): {reason}"),
            Some(Link::Closed { reason }) => format!("disconnected: {reason}"),
        };
        let head = format!("[{}] → {target} │ ", self.me());
        let cut_off_text = if self.status.as_ref().is_some_and(|s| s.cut_off) {
            " │ cluster unreachable: only this server's users"
        } else {
            ""
        };
        let mut line = cut_off_text.to_owned();
        let offers = self.offers_waiting();
        match self.transfers.len() - offers {
            0 => {}
            1 => line.push_str(" │ 1 transfer"),
            n => line.push_str(&format!(" │ {n} transfers")),
        }
        match offers {
            0 => {}
            1 => line.push_str(" │ 1 offer waiting"),
            n => line.push_str(&format!(" │ {n} offers waiting")),
        }
        let (below, for_us) = self.unseen_below();
        if self.scroll > 0 && below > 0 {
            line.push_str(&format!(" │ {below} new ↓"));
            if for_us > 0 {
                line.push_str(&format!(" ({for_us} for you)"));
            }
        } else if self.scroll > 0 {
            // Scrolled back with nothing new below: still not the bottom
            // of the chat, as weechat's `-MORE-` and irssi's `-- more --`
            // say, or the view reads as the latest.
            line.push_str(" │ more ↓");
        }
        // Too wide, the connection's text (the longest, and the one that
        // changes least) is cut, not the counts after it: cut at the end,
        // a narrow terminal lost the new lines' count and the transfers.
        // (Without counts, the end is cut as it draws.)
        let counts = line.len() - cut_off_text.len();
        let room = usize::from(self.width)
            .saturating_sub(render::text_width(&head) + render::text_width(&line));
        let link = if counts > 0 && render::text_width(&link) > room && room >= 4 {
            render::ellipsized(&link, room)
        } else {
            link
        };
        format!("{head}{link}{line}")
    }

    // ---- scrolling ----

    /// The terminal's width, before a draw records it.
    pub fn set_width(&mut self, width: u16) {
        self.width = width;
    }

    /// Records the chat pane's size and keeps the scroll within the chat.
    ///
    /// Scrolled back, a new width (a resize, the nick list shown or
    /// hidden) wraps the entries anew: the scroll is then set so that the
    /// text at the bottom of the view stays there, as irssi and weechat
    /// keep it, rather than the count of rows, which would show other
    /// lines.
    pub fn fit(&mut self, width: u16, pane_width: u16, pane_height: u16) {
        let old_width = self.pane.0;
        self.width = width;
        self.pane = (pane_width, pane_height);
        if self.scroll == 0 {
            self.anchor = None;
            return;
        }
        if pane_width != old_width {
            self.rescroll(old_width, pane_width);
        }
        let height = usize::from(pane_height);
        let wanted = self.scroll.saturating_add(height);
        let mut total = 0;
        for shown in self.entries.iter().rev() {
            total += shown.height(self.me(), pane_width);
            if total >= wanted {
                return;
            }
        }
        self.scroll = self.scroll.min(total.saturating_sub(height));
        if self.scroll == 0 {
            self.unseen = 0;
        }
    }

    /// Sets the scroll for `new` columns so that the anchor's text is on
    /// the view's bottom row; without an anchor, it is the end of the row
    /// at the bottom of the view at `old` columns.
    fn rescroll(&mut self, old: u16, new: u16) {
        let me = self.me();
        let anchor = self
            .anchor
            .filter(|&(number, _)| number >= self.dropped)
            .or_else(|| {
                let mut below = self.scroll;
                for (i, shown) in self.entries.iter().enumerate().rev() {
                    let height = shown.height(me, old);
                    if below < height {
                        let ends = render::entry_row_ends(shown, me, old);
                        let end = ends.get(height - 1 - below)?;
                        return Some((self.dropped + i, end.saturating_sub(1)));
                    }
                    below -= height;
                }
                None
            });
        // Scrolled past the top: the clamp that follows brings it back.
        let Some((number, byte)) = anchor else {
            return;
        };
        let index = number - self.dropped;
        let mut below = 0;
        for (i, shown) in self.entries.iter().enumerate().rev() {
            if i > index {
                below += shown.height(me, new);
                continue;
            }
            let ends = render::entry_row_ends(shown, me, new);
            shown.rows.set(Some((new, ends.len())));
            let last = ends.len().saturating_sub(1);
            let row = ends.partition_point(|&end| end <= byte).min(last);
            self.scroll = below + last - row;
            self.anchor = Some((number, byte));
            return;
        }
    }

    fn page(&self) -> usize {
        usize::from(self.pane.1.saturating_sub(1).max(1))
    }

    fn scroll_to(&mut self, scroll: usize) {
        self.scroll = scroll;
        self.anchor = None;
        let (width, pane_width, pane_height) = (self.width, self.pane.0, self.pane.1);
        self.fit(width, pane_width, pane_height);
        if self.scroll == 0 {
            self.unseen = 0;
        }
    }

    // ---- what the user does ----

    /// Acts on a key's action at `now`.
    pub fn handle(&mut self, action: Action, now: Instant) {
        if self.secret.is_some() {
            self.handle_secret(action);
            return;
        }
        if let Some(pasted) = self.pending_paste.take() {
            match action {
                Action::Enter => self.send_pasted(pasted),
                // The draft was not touched: it stays as before the paste.
                Action::Escape | Action::Cancel | Action::Interrupt => {}
                _ => self.pending_paste = Some(pasted),
            }
            return;
        }
        if self.editor.searching() && self.handle_search(action) {
            return;
        }
        if !matches!(action, Action::Interrupt | Action::EndOfInput) {
            self.armed = None;
        }
        if !matches!(action, Action::Tab | Action::BackTab) {
            self.cycle = None;
        }
        let e = &mut self.editor;
        match action {
            Action::Insert(c) => e.type_char(c),
            Action::Left => e.left(),
            Action::Right => e.right(),
            Action::WordLeft => e.word_left(),
            Action::WordRight => e.word_right(),
            Action::LineStart => e.home(),
            Action::LineEnd => e.end(),
            Action::Home if e.is_empty() => self.scroll_to(usize::MAX),
            Action::End if e.is_empty() => self.scroll_to(0),
            Action::Home => e.home(),
            Action::End => e.end(),
            Action::Backspace => e.backspace(),
            Action::Delete => e.delete(),
            Action::KillToEnd => e.kill_to_end(),
            Action::KillToStart => e.kill_to_start(),
            Action::KillBlankWordBefore => e.kill_blank_word_before(),
            Action::KillWordBefore => e.kill_word_before(),
            Action::KillWordAfter => e.kill_word_after(),
            Action::Yank => e.yank(),
            Action::YankPop => e.yank_pop(),
            Action::Transpose => e.transpose(),
            Action::Undo => e.undo(),
            Action::ReverseSearch => e.search_older(),
            Action::Redraw => self.clear_screen = true,
            Action::Suspend => self.suspend = true,
            Action::HistoryPrev => e.history_prev(),
            Action::HistoryNext => e.history_next(),
            Action::Enter => self.enter(now),
            Action::Tab => self.complete(false),
            Action::BackTab => self.complete(true),
            Action::Interrupt => self.interrupt(now),
            Action::EndOfInput => self.end_of_input(now),
            Action::PageUp => self.scroll_to(self.scroll.saturating_add(self.page())),
            Action::PageDown => self.scroll_to(self.scroll.saturating_sub(self.page())),
            Action::ScrollTop => self.scroll_to(usize::MAX),
            Action::ScrollBottom => self.scroll_to(0),
            Action::ToggleNicklist => self.toggle_nicklist(),
            Action::Escape | Action::Cancel => {}
        }
    }

    /// Keys during a reverse search of the history (Ctrl-R): typing and
    /// Backspace change what it looks for, Ctrl-R finds an older match,
    /// Enter takes the match into the line (not sent), Esc, Ctrl-G or
    /// Ctrl-C give the line back as it was; a key that scrolls or redraws
    /// keeps the search. Any other key takes the match and then acts:
    /// false for those.
    fn handle_search(&mut self, action: Action) -> bool {
        let e = &mut self.editor;
        match action {
            Action::Insert(c) => e.search_type(c.encode_utf8(&mut [0; 4])),
            Action::Backspace => e.search_backspace(),
            Action::ReverseSearch => e.search_older(),
            Action::Enter => e.search_accept(),
            Action::Escape | Action::Cancel | Action::Interrupt => e.search_cancel(),
            Action::PageUp
            | Action::PageDown
            | Action::ScrollTop
            | Action::ScrollBottom
            | Action::ToggleNicklist
            | Action::Redraw
            | Action::Suspend => return false,
            _ => {
                e.search_accept();
                return false;
            }
        }
        true
    }

    /// A bracketed paste.
    pub fn paste(&mut self, text: &str) {
        if self.pending_paste.is_some() {
            return;
        }
        if self.secret.is_some() {
            // A pasted password: its first line, into the masked input.
            let first = text.lines().next().unwrap_or_default();
            self.editor.insert(first);
            return;
        }
        self.cycle = None;
        self.armed = None;
        self.editor.search_accept();
        if let Paste::Insert(text) = keys::paste(text) {
            self.editor.insert(&text);
            return;
        }
        // The paste continues the draft, as if typed at the cursor: the
        // draft before the cursor starts the first pasted line (so a typed
        // `/msg bob ` sends the first line to bob), and the draft after the
        // cursor ends the unfinished last line, which waits for Enter.
        let (draft, cursor) = (self.editor.text(), self.editor.cursor());
        let (before, after) = (&draft[..cursor], draft[cursor..].to_owned());
        let joins_draft = !before.trim().is_empty();
        let (mut lines, rest, ask) = match keys::paste(&format!("{before}{text}")) {
            Paste::Send(lines, rest) => (lines, rest, false),
            Paste::Ask(lines, rest) => (lines, rest, true),
            Paste::Insert(_) => unreachable!("the paste has a line end"),
        };
        // `/msg bob ` then a paste: all its lines are for bob, not the
        // first alone with the others in the current mode (to everyone).
        let to = lines
            .first()
            .filter(|_| joins_draft)
            .and_then(|first| PasteTarget::of(first));
        // A paste that starts with a line end (a terminal selection that
        // took the end of the line above) adds nothing to the draft: its
        // first line is the draft alone, `/msg bob `, no message. The
        // draft still says where the lines go; it is not sent by itself.
        let bare_draft = joins_draft
            && to.is_none()
            && lines
                .first()
                .is_some_and(|first| first.trim() == before.trim())
            && (lines.len() > 1 || !rest.is_empty());
        let (to, draft_taken) = match bare_draft
            .then(|| PasteTarget::of(&format!("{} x", before.trim_end())))
            .flatten()
        {
            Some(target) => (Some(target), true),
            None => (to, false),
        };
        if draft_taken {
            lines.remove(0);
        }
        let pasted = PastedLines {
            lines,
            joins_draft: joins_draft && !draft_taken,
            rest,
            after,
            to,
        };
        if ask {
            self.pending_paste = Some(pasted);
        } else {
            self.send_pasted(pasted);
        }
    }

    /// Enter: the input line goes out (a command or a message). A
    /// `/quit` while transfers run warns first, as Ctrl-C and Ctrl-D do,
    /// and goes out when entered again soon after.
    fn enter(&mut self, now: Instant) {
        if let Some((line, added)) = self.editor.take_line() {
            if added {
                self.to_history.push(line.clone());
            }
            let armed = self.quit_line_armed.take();
            if matches!(Command::parse(&line), Ok(Command::Quit(_))) {
                let confirmed = armed.is_some_and(|at| now.duration_since(at) < QUIT_WINDOW);
                let running = self.transfers.len() - self.offers_waiting();
                if running > 0 && !confirmed {
                    let (count, them) = match running {
                        1 => ("1 transfer".to_owned(), "it"),
                        n => (format!("{n} transfers"), "them"),
                    };
                    self.show(Entry::Notice(format!(
                        "{count} running: enter /quit again (Up, Enter) to stop {them} and quit"
                    )));
                    self.quit_line_armed = Some(now);
                    return;
                }
            }
            self.send(line);
        }
    }

    /// A line entered and refused as it is (too long to send) comes back
    /// into the input, cursor at its end, for the user to shorten; not
    /// over something typed since.
    pub fn give_back(&mut self, line: &str) {
        // Something typed since (or a paste's unfinished line, or a line
        // refused before it): the line stays in the history, the only
        // place it can be had back from (Up).
        if !self.editor.is_empty() {
            return;
        }
        // Back in the input, not sent: not kept in the history (nor its
        // file).
        self.editor.forget(line);
        match self.to_history.iter().rposition(|l| l == line) {
            Some(at) => {
                self.to_history.remove(at);
            }
            None => self.forget_history.push(line.to_owned()),
        }
        self.editor.set(line.to_owned(), line.len());
    }

    /// A line goes out. A scrolled-back view goes to the bottom, as for
    /// a message we send: what a command answers (`/help`, `/who`) shows
    /// there, and is not counted as new, as it would be below the view.
    fn send(&mut self, line: String) {
        if self.scroll > 0 {
            self.scroll_to(0);
        }
        self.outbox.push(UserInput::Line(line));
    }

    /// Sends a paste's complete lines, the first as the draft it finished
    /// (through Enter), and leaves its unfinished last line in the input.
    /// The other lines are chat text, even one that starts with `/` (a
    /// pasted script's `/usr/bin/env`, or `/quit`, is not run as a
    /// command): it goes with the `//` escape, as if so typed. A draft
    /// that sent the first line to one user (`/msg bob `, `@bob `) or to
    /// everyone (`/broadcast `) sends the others there too, and starts the
    /// unfinished one so: a private paste does not go out in public.
    fn send_pasted(&mut self, pasted: PastedLines) {
        let mut lines = pasted.lines.into_iter();
        if pasted.joins_draft {
            if let Some(first) = lines.next() {
                let end = first.len();
                self.editor.set(first, end);
                self.enter(Instant::now());
            }
        }
        let prefix = pasted.to.map(|to| to.prefix);
        let as_text = |line: String| match &prefix {
            // The text after `/msg bob ` is text, whatever it starts with.
            Some(prefix) => format!("{prefix}{line}"),
            None if line.starts_with('/') => format!("/{line}"),
            None => line,
        };
        self.send_all(lines.map(as_text).collect());
        // The unfinished line: the paste's last bit, then the draft that
        // was after the cursor, for the same receiver.
        let unfinished = !pasted.rest.trim().is_empty() || !pasted.after.trim().is_empty();
        self.editor.set(pasted.after, 0);
        match &prefix {
            Some(prefix) if unfinished => {
                self.editor.insert(&format!("{prefix}{}", pasted.rest));
            }
            _ => self.editor.insert(&pasted.rest),
        }
    }

    /// Sends a paste's lines: together, so that a client without a
    /// connection refuses them in one line, not one per line.
    fn send_all(&mut self, mut lines: Vec<String>) {
        for line in &lines {
            if self.editor.remember(line) {
                self.to_history.push(line.clone());
            }
        }
        match lines.len() {
            0 => {}
            1 => self.send(lines.remove(0)),
            _ => {
                if self.scroll > 0 {
                    self.scroll_to(0);
                }
                self.outbox.push(UserInput::Lines(lines));
            }
        }
    }

    fn complete(&mut self, backwards: bool) {
        // The one folder a path completed to: Tab goes on into it.
        if self.cycle.as_ref().is_some_and(Cycle::is_one_folder) {
            self.cycle = None;
        }
        if let Some(cycle) = &mut self.cycle {
            cycle.step(backwards);
        } else {
            let me = self.me().to_lowercase();
            let nicks: Vec<String> = self
                .roster
                .iter()
                .filter(|n| n.to_lowercase() != me)
                .cloned()
                .collect();
            let transfers: Vec<String> = self
                .transfers
                .iter()
                .flat_map(|t| [t.id.clone(), t.name.clone()])
                .collect();
            let offers: Vec<String> = self
                .transfers
                .iter()
                .filter(|t| t.direction == Direction::Offer)
                .map(|t| t.id.trim_start_matches('#').to_owned())
                .collect();
            let (text, cursor) = (self.editor.text(), self.editor.cursor());
            let paths = complete::sendfile_argument(&text[..cursor])
                .map_or_else(Vec::new, |typed| {
                    complete::local_paths(typed, std::env::var_os("HOME").as_deref())
                });
            let sources = Sources {
                commands: &self.commands,
                nicks: &nicks,
                files: &self.files,
                transfers: &transfers,
                offers: &offers,
                paths: &paths,
            };
            if self.files.is_empty()
                && !self.files_asked
                && complete::completes_files(&text[..cursor])
            {
                // Never listed: asked for quietly, completed on arrival.
                self.files_asked = true;
                self.tab_waiting = Some((text.to_owned(), cursor));
                self.outbox.push(UserInput::FetchFileNames);
                return;
            }
            self.cycle = Cycle::start(text, cursor, &sources, backwards);
        }
        if let Some(cycle) = &self.cycle {
            let (line, cursor) = cycle.line();
            self.editor.set(line, cursor);
        }
    }

    fn interrupt(&mut self, now: Instant) {
        if !self.editor.is_empty() {
            self.editor.kill_line();
            self.armed = None;
            return;
        }
        self.quit_or_warn(Action::Interrupt, "Ctrl-C", now, true);
    }

    fn end_of_input(&mut self, now: Instant) {
        if !self.editor.is_empty() {
            self.editor.delete();
            self.armed = None;
            return;
        }
        self.quit_or_warn(Action::EndOfInput, "Ctrl-D", now, false);
    }

    /// Quits on a second `key` within the window; else warns and waits
    /// for it (without transfers, only when `always_confirm`).
    fn quit_or_warn(&mut self, key: Action, name: &str, now: Instant, always_confirm: bool) {
        let confirmed =
            matches!(self.armed, Some((k, at)) if k == key && now.duration_since(at) < QUIT_WINDOW);
        let running = self.transfers.len() - self.offers_waiting();
        if confirmed || (running == 0 && !always_confirm) {
            self.armed = None;
            self.outbox.push(UserInput::Quit);
            return;
        }
        let warning = match running {
            0 => format!("press {name} again to quit"),
            1 => format!("1 transfer running: press {name} again to stop it and quit"),
            n => format!("{n} transfers running: press {name} again to stop them and quit"),
        };
        self.show(Entry::Notice(warning.clone()));
        self.armed = Some((key, now));
        self.armed_warning = warning;
    }
}

/// True when `text` names `me` as a word, in any case: not as a part of
/// a longer name (`alice-bot`, `alice.b`, `alice_`, a decomposed `alicé`
/// for `alice`). A `.` ends a sentence (`hi alice.`) unless a name goes
/// on after it.
pub fn mentions(text: &str, me: &str) -> bool {
    let text = text.to_lowercase();
    let me = me.to_lowercase();
    if me.is_empty() {
        return false;
    }
    // Each place looks at two characters either side, no more: a text
    // that holds the name at every place is read in linear time.
    text.match_indices(&me).any(|(at, _)| {
        !name_goes_on(text[..at].chars().rev()) && !name_goes_on(text[at + me.len()..].chars())
    })
}

/// Whether the characters `next` (away from a name found in a text, either
/// way) go on with that name: a name character, or a `.` between two.
fn name_goes_on(mut next: impl Iterator<Item = char>) -> bool {
    match next.next() {
        Some('.') => next.next().is_some_and(|c| c != '.' && is_name_char(c)),
        Some(c) => is_name_char(c),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::testing::*;

    fn typed(m: &mut Model, text: &str) {
        for c in text.chars() {
            m.handle(Action::Insert(c), Instant::now());
        }
    }

    fn last_notice(m: &Model) -> Option<&str> {
        match m.entries().back().map(|s| &s.entry) {
            Some(Entry::Notice(text)) => Some(text),
            _ => None,
        }
    }

    /// What went out, a paste's lines one by one.
    fn sent(m: &Model) -> Vec<UserInput> {
        m.outbox
            .iter()
            .flat_map(|input| match input {
                UserInput::Lines(lines) => lines.iter().cloned().map(UserInput::Line).collect(),
                other => vec![other.clone()],
            })
            .collect()
    }

    fn lines(v: &[&str]) -> Vec<UserInput> {
        v.iter().map(|l| UserInput::Line((*l).into())).collect()
    }

    /// A line refused as too long comes back into the input to be
    /// shortened, but never over what was typed since.
    #[test]
    fn a_line_given_back_returns_to_an_empty_input_only() {
        let mut m = model();
        let now = Instant::now();
        let long = "x".repeat(70_000);
        m.paste(&long);
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m), lines(&[long.as_str()]));
        assert!(m.editor.is_empty());
        m.give_back(&long);
        assert_eq!(m.editor.text(), long);
        assert_eq!(m.editor.cursor(), long.len());
        m.handle(Action::Enter, now);
        typed(&mut m, "new");
        m.give_back(&long);
        assert_eq!(m.editor.text(), "new");
    }

    /// A refused line that cannot come back into the input (something is
    /// typed there, or another refused line of the same paste came back)
    /// stays in the history: else it would be lost, in neither place.
    #[test]
    fn a_line_not_given_back_stays_in_the_history() {
        let mut m = model();
        let now = Instant::now();
        // Their length aside (the app refuses them), any two lines.
        let (one, two) = ("first refused".to_owned(), "second refused".to_owned());
        m.paste(&format!("{one}\n{two}\n"));
        if m.pending_paste.is_some() {
            m.handle(Action::Enter, now);
        }
        assert_eq!(m.to_history, [one.as_str(), two.as_str()]);
        m.give_back(&one);
        m.give_back(&two);
        assert_eq!(m.editor.text(), one, "the first is back in the input");
        assert_eq!(m.to_history, [two.as_str()], "the second is kept");
        assert!(m.forget_history.is_empty());
        m.editor.set(String::new(), 0);
        m.handle(Action::HistoryPrev, now);
        assert_eq!(m.editor.text(), two, "and recalled with Up");
    }

    /// A line refused as too long is not kept in the history, in memory
    /// nor in its file: taken out of what waits for the file, or, once
    /// written, taken out of the file again.
    #[test]
    fn a_line_given_back_is_not_kept_in_the_history() {
        let mut m = model();
        let now = Instant::now();
        let long = "x".repeat(70_000);
        typed(&mut m, "short");
        m.handle(Action::Enter, now);
        m.paste(&long);
        m.handle(Action::Enter, now);
        m.give_back(&long);
        assert_eq!(m.to_history, ["short"]);
        assert!(m.forget_history.is_empty());
        // Written already (the screen's loop took it), then refused.
        m.editor.set(String::new(), 0);
        m.paste(&long);
        m.handle(Action::Enter, now);
        let written = std::mem::take(&mut m.to_history);
        assert_eq!(written, ["short", long.as_str()]);
        m.give_back(&long);
        assert_eq!(m.forget_history, [long.as_str()]);
        // Not recalled: the line before it is.
        m.editor.set(String::new(), 0);
        m.handle(Action::HistoryPrev, now);
        assert_eq!(m.editor.text(), "short");
    }

    /// A time on the local day `days` after [`today`], at `h:m`.
    fn local_time(days: i64, h: u32, m: u32) -> std::time::SystemTime {
        let date = today() + chrono::Duration::days(days);
        let local = date.and_hms_opt(h, m, 0).expect("a time of day");
        let local = local.and_local_timezone(chrono::Local).earliest();
        local.expect("a local time").into()
    }

    fn chat_at(time: std::time::SystemTime, text: &str, history: bool) -> Entry {
        Entry::Chat(crate::view::ChatEntry {
            time,
            history,
            ..chat("bob", text)
        })
    }

    fn texts(m: &Model) -> Vec<(String, String)> {
        let text = |e: &Entry| match e {
            Entry::Chat(c) => c.text.clone(),
            Entry::Notice(t)
            | Entry::NoticeAt { text: t, .. }
            | Entry::Error(t)
            | Entry::Plain(t) => t.clone(),
        };
        let entries = m.entries().iter();
        entries.map(|s| (s.stamp.clone(), text(&s.entry))).collect()
    }

    /// The chat shows times of day only: past midnight, a line says the
    /// day changed, as irssi's does, below a view scrolled back as well.
    #[test]
    fn a_line_says_the_day_changed_at_midnight() {
        let mut m = model();
        m.fit(80, 80, 3);
        for i in 0..5 {
            m.show(chat_at(local_time(0, 23, 58), &format!("late {i}"), false));
        }
        m.handle(Action::PageUp, Instant::now());
        m.show(chat_at(local_time(1, 0, 1), "early", false));
        let tomorrow = today() + chrono::Duration::days(1);
        let line = format!("day changed to {}", tomorrow.format("%A %-d %B %Y"));
        let shown = texts(&m);
        assert_eq!(shown[4], ("23:58".to_owned(), "late 4".to_owned()));
        assert_eq!(shown[5], ("00:00".to_owned(), line));
        assert_eq!(shown[6], ("00:01".to_owned(), "early".to_owned()));
        assert_eq!(shown.len(), 7, "{shown:?}");
        assert!(
            m.status_line().ends_with("│ 2 new ↓"),
            "{}",
            m.status_line()
        );
        // The next of the same day has none.
        m.show(chat_at(local_time(1, 0, 2), "then", false));
        assert_eq!(texts(&m).len(), 8);
    }

    /// History from an earlier day says which day it is of, and what
    /// follows it today says so too: `15:04` alone would read as today.
    #[test]
    fn history_of_an_earlier_day_says_its_day() {
        let mut m = model();
        m.show(Entry::Notice("connected".into()));
        m.show(chat_at(local_time(-3, 15, 4), "old", true));
        m.show(chat_at(local_time(-3, 15, 5), "older still", true));
        m.show(Entry::Notice("bob has joined".into()));
        let day = |days| {
            let date = today() + chrono::Duration::days(days);
            format!("day changed to {}", date.format("%A %-d %B %Y"))
        };
        let shown: Vec<String> = texts(&m).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            shown,
            [
                "connected",
                &day(-3),
                "old",
                "older still",
                &day(0),
                "bob has joined"
            ]
        );
        // A first entry of another day says it too.
        let mut m = model();
        m.show(chat_at(local_time(-1, 9, 0), "first", true));
        assert_eq!(texts(&m)[0].1, day(-1));
    }

    /// A join or a leave has the time the server noted, as a chat has
    /// its own: one replayed after a resume is not stamped with the time
    /// it arrived. Other notices have the time they are shown.
    #[test]
    fn a_join_or_leave_is_stamped_with_its_own_time_not_the_clock() {
        let (time, stamp) = when();
        let mut m = model().with_clock(|| "now".into());
        m.show(Entry::NoticeAt {
            time,
            text: "bob has left (a\nb)".into(),
            missed: false,
        });
        m.show(Entry::Notice("resumed".into()));
        assert_eq!(m.entries()[0].stamp, stamp);
        assert_eq!(
            m.entries()[0].entry,
            Entry::NoticeAt {
                time,
                text: "bob has left (a^Jb)".into(),
                missed: false,
            },
            "held inert"
        );
        assert_eq!(m.entries()[1].stamp, "now");
    }

    #[test]
    fn raw_text_from_the_client_is_held_inert() {
        let mut m = model();
        m.show(Entry::Chat(chat("bob\u{202e}", "a\nb\u{202e}c")));
        m.show(Entry::Notice("bob has left (a\nb)".into()));
        match &m.entries()[0].entry {
            Entry::Chat(c) => {
                assert_eq!(c.from, "bob\\u{202e}");
                assert_eq!(c.text, "a^Jb\\u{202e}c");
            }
            other => panic!("not a chat: {other:?}"),
        }
        assert_eq!(last_notice(&m), Some("bob has left (a^Jb)"));
        m.transfer(&download(1, "x\x1b.bin"));
        assert_eq!(m.transfers()[0].name, "x^[.bin");
        m.change_roster(Roster::all(vec!["carol\u{200b}".into()]));
        m.change_roster(Roster::Joined("dave\x07".into()));
        assert_eq!(m.roster(), ["carol\\u{200b}", "dave^G"]);
        m.shared_files(vec!["f\n.txt".into()]);
        assert_eq!(m.files, ["f^J.txt"]);
        m.set_status(&Status {
            me: "alice\u{202e}".into(),
            target: Some("bob\u{202e}".into()),
            link: Link::Closed {
                reason: "bye\x1b[2J".into(),
            },
            cut_off: false,
        });
        assert_eq!(m.me(), "alice\\u{202e}");
        let status = m.status.as_ref().expect("a status");
        assert_eq!(status.target.as_deref(), Some("bob\\u{202e}"));
        assert_eq!(
            status.link,
            Link::Closed {
                reason: "bye^[[2J".into()
            }
        );
    }

    #[test]
    fn a_secret_is_masked_kept_out_of_the_history_and_the_draft_comes_back() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "half a line");
        let (tx, rx) = std::sync::mpsc::channel();
        m.ask_secret("new password (not shown): ", tx);
        assert_eq!(m.prompt(), "new password (not shown): ");
        assert_eq!(m.shown_input(), (String::new(), 0));
        typed(&mut m, "sé cret");
        assert_eq!(m.shown_input(), ("*******".to_string(), 7));
        // No yank, no history recall while typing it.
        m.handle(Action::KillToStart, now);
        m.handle(Action::HistoryPrev, now);
        assert_eq!(m.shown_input().0, "*******");
        m.handle(Action::Enter, now);
        assert_eq!(rx.try_recv(), Ok("sé cret".to_string()));
        assert!(sent(&m).is_empty(), "a secret is not a line to run");
        assert!(m.to_history.is_empty(), "nor kept in the history");
        assert_eq!(m.editor.text(), "half a line");
        assert!(!m.prompt().contains("password"));
        // Esc cancels with an empty answer.
        let (tx, rx) = std::sync::mpsc::channel();
        m.ask_secret("again: ", tx);
        typed(&mut m, "x");
        m.handle(Action::Escape, now);
        assert_eq!(rx.try_recv(), Ok(String::new()));
    }

    #[test]
    fn a_register_line_with_a_password_on_it_is_not_remembered() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "/register hunter2");
        m.handle(Action::Enter, now);
        // It goes (to be refused), but no history keeps it.
        assert_eq!(sent(&m), lines(&["/register hunter2"]));
        assert!(m.to_history.is_empty(), "{:?}", m.to_history);
        m.handle(Action::HistoryPrev, now);
        assert_eq!(m.editor.text(), "");
    }

    #[test]
    fn enter_sends_the_line_and_remembers_it() {
        let mut m = model();
        let now = Instant::now();
        m.handle(Action::Enter, now);
        assert!(sent(&m).is_empty(), "an empty line is not sent");
        typed(&mut m, "hello");
        m.handle(Action::Enter, now);
        typed(&mut m, "hello");
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m), lines(&["hello", "hello"]));
        assert_eq!(m.to_history, ["hello"], "no repeats in the history");
        assert!(m.editor.is_empty());
        m.handle(Action::HistoryPrev, now);
        assert_eq!(m.editor.text(), "hello");
    }

    #[test]
    fn ctrl_c_clears_then_warns_then_quits() {
        let mut m = model();
        let t0 = Instant::now();
        typed(&mut m, "draft");
        m.handle(Action::Interrupt, t0);
        assert!(m.editor.is_empty() && sent(&m).is_empty());
        m.handle(Action::Yank, t0);
        assert_eq!(
            m.editor.text(),
            "draft",
            "the cleared line is in the kill ring"
        );
        m.handle(Action::Interrupt, t0);
        m.handle(Action::Interrupt, t0);
        assert_eq!(last_notice(&m), Some("press Ctrl-C again to quit"));
        assert!(sent(&m).is_empty());
        m.handle(Action::Interrupt, t0 + Duration::from_secs(6));
        assert!(sent(&m).is_empty(), "too late: warns again");
        m.handle(Action::Interrupt, t0 + Duration::from_secs(8));
        assert_eq!(sent(&m), [UserInput::Quit]);
    }

    /// A transfer row whose transfer stopped moving says `stalled`, not
    /// the rate and time left it had; a byte more and it moves again. An
    /// offer waiting for an answer does not stall.
    #[test]
    fn a_transfer_that_stops_moving_shows_stalled() {
        let mut m = model();
        let t0 = Instant::now();
        m.transfer(&download(1, "a"));
        m.transfer(&TransferView::offer(
            "#2".into(),
            "bob".into(),
            "o".into(),
            9,
        ));
        assert!(!m.expire_stalled(t0 + Duration::from_secs(1)));
        assert!(m.transfers()[0].line().contains("/s"));
        assert!(m.expire_stalled(t0 + STALLED + Duration::from_secs(1)));
        assert!(
            m.transfers()[0].line().ends_with("25%  stalled"),
            "{}",
            m.transfers()[0].line()
        );
        assert!(!m.transfers()[1].stalled, "an offer waits");
        assert!(!m.expire_stalled(t0 + STALLED * 2), "said once");
        // The same bytes again (no move): still stalled.
        m.transfer(&download(1, "a"));
        assert!(m.transfers()[0].stalled);
        let mut moved = download(1, "a");
        moved.done += 1;
        m.transfer(&moved);
        assert!(!m.transfers()[0].stalled);
        assert!(m.transfers()[0].line().contains("/s"));
    }

    /// The warning of a first Ctrl-C (or Ctrl-D) is in the status line
    /// too, for as long as the second press would quit: in the chat alone,
    /// a busy room or a view scrolled back hid it.
    #[test]
    fn the_quit_warning_shows_in_the_status_line_while_it_holds() {
        let mut m = model();
        let t0 = Instant::now();
        m.handle(Action::Interrupt, t0);
        assert_eq!(m.status_line(), "press Ctrl-C again to quit");
        assert!(m.status_asks(), "wrapped whole, as a question");
        typed(&mut m, "x");
        assert!(
            !m.status_line().contains("Ctrl-C"),
            "another key: {}",
            m.status_line()
        );
        m.handle(Action::Backspace, t0);
        m.transfer(&download(1, "a"));
        m.handle(Action::EndOfInput, t0);
        assert_eq!(
            m.status_line(),
            "1 transfer running: press Ctrl-D again to stop it and quit"
        );
        m.handle(Action::Backspace, t0);
        m.handle(Action::Interrupt, t0);
        assert!(!m.expire_quit_warning(t0 + Duration::from_secs(4)));
        assert_eq!(
            m.status_line(),
            "1 transfer running: press Ctrl-C again to stop it and quit"
        );
        assert!(m.expire_quit_warning(t0 + QUIT_WINDOW));
        assert!(
            !m.status_line().contains("Ctrl-C"),
            "the window passed: {}",
            m.status_line()
        );
        m.handle(Action::Interrupt, t0 + QUIT_WINDOW);
        assert!(sent(&m).is_empty(), "too late: warns again");
    }

    #[test]
    fn ctrl_c_warns_about_running_transfers() {
        let mut m = model();
        let t0 = Instant::now();
        m.transfer(&download(1, "a"));
        m.transfer(&download(2, "b"));
        m.handle(Action::Interrupt, t0);
        assert_eq!(
            last_notice(&m),
            Some("2 transfers running: press Ctrl-C again to stop them and quit")
        );
        typed(&mut m, "x");
        m.handle(Action::Backspace, t0);
        m.handle(Action::Interrupt, t0);
        assert!(sent(&m).is_empty(), "another key in between starts over");
        m.handle(Action::Interrupt, t0 + Duration::from_secs(4));
        assert_eq!(sent(&m), [UserInput::Quit]);
    }

    /// An offer waiting for an answer is listed with the transfers but is
    /// no transfer running: quitting does not warn of it.
    #[test]
    fn an_offer_waiting_is_no_transfer_to_warn_of_on_quit() {
        let mut m = model();
        let t0 = Instant::now();
        m.transfer(&download(1, "a"));
        m.transfer(&TransferView::offer(
            "#2".into(),
            "bob".into(),
            "b".into(),
            9,
        ));
        m.handle(Action::Interrupt, t0);
        assert_eq!(
            last_notice(&m),
            Some("1 transfer running: press Ctrl-C again to stop it and quit")
        );
        m.transfer_ended("#1");
        m.handle(Action::EndOfInput, t0 + Duration::from_secs(10));
        assert_eq!(sent(&m), [UserInput::Quit], "Ctrl-D quits at once");
    }

    #[test]
    fn ctrl_d_deletes_or_quits_warning_when_transfers_run() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "ab");
        m.handle(Action::LineStart, now);
        m.handle(Action::EndOfInput, now);
        assert_eq!(m.editor.text(), "b");
        assert!(sent(&m).is_empty());
        m.handle(Action::EndOfInput, now);
        m.handle(Action::EndOfInput, now);
        assert_eq!(sent(&m), [UserInput::Quit], "no transfers: quits at once");

        let mut m = model();
        m.transfer(&download(3, "c"));
        m.handle(Action::EndOfInput, now);
        assert_eq!(
            last_notice(&m),
            Some("1 transfer running: press Ctrl-D again to stop it and quit")
        );
        assert!(sent(&m).is_empty());
        m.handle(Action::EndOfInput, now);
        assert_eq!(sent(&m), [UserInput::Quit]);
    }

    /// The tester's keys: `one`, Ctrl-U, `two`, Ctrl-U, Ctrl-Y, Alt-Y.
    #[test]
    fn alt_y_after_ctrl_y_yanks_the_kill_before() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "one");
        m.handle(Action::KillToStart, now);
        typed(&mut m, "two");
        m.handle(Action::KillToStart, now);
        m.handle(Action::Yank, now);
        assert_eq!(m.editor.text(), "two");
        m.handle(Action::YankPop, now);
        assert_eq!(m.editor.text(), "one");
    }

    #[test]
    fn ctrl_t_transposes_and_ctrl_underscore_undoes_a_typed_run() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "hello ");
        m.handle(Action::Left, now);
        m.handle(Action::Right, now);
        typed(&mut m, "wrold");
        m.handle(Action::Left, now);
        m.handle(Action::Left, now);
        m.handle(Action::Left, now);
        m.handle(Action::Transpose, now);
        assert_eq!(m.editor.text(), "hello world");
        m.handle(Action::Undo, now);
        assert_eq!(m.editor.text(), "hello wrold");
        m.handle(Action::Undo, now);
        assert_eq!(m.editor.text(), "hello ", "the typed run goes as one");
        m.handle(Action::Undo, now);
        assert_eq!(m.editor.text(), "");
    }

    /// A password typed in the line leaves no undo step: Ctrl-_ after it
    /// gives back the line's own edits, never the secret.
    #[test]
    fn undo_never_brings_back_a_secret() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "draft");
        let (tx, _rx) = std::sync::mpsc::channel();
        m.ask_secret("password: ", tx);
        typed(&mut m, "hunter2");
        m.handle(Action::Backspace, now);
        m.handle(Action::Enter, now);
        assert_eq!(m.editor.text(), "draft");
        m.handle(Action::Undo, now);
        assert_eq!(m.editor.text(), "", "the draft's own typing undone");
        m.handle(Action::Undo, now);
        assert_eq!(m.editor.text(), "");
    }

    /// A second secret asked while one is typed cancels the first (an
    /// empty answer) and, answered, gives back the line from before both,
    /// never the first secret's text.
    #[test]
    fn a_secret_asked_over_another_gives_back_the_line_from_before() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "draft");
        let (tx1, rx1) = std::sync::mpsc::channel();
        m.ask_secret("first: ", tx1);
        typed(&mut m, "pw1");
        let (tx2, rx2) = std::sync::mpsc::channel();
        m.ask_secret("second: ", tx2);
        assert_eq!(rx1.try_recv(), Ok(String::new()));
        assert_eq!(m.shown_input(), (String::new(), 0));
        typed(&mut m, "pw2");
        m.handle(Action::Enter, now);
        assert_eq!(rx2.try_recv(), Ok("pw2".to_string()));
        assert_eq!(m.editor.text(), "draft");
        m.handle(Action::Undo, now);
        assert_eq!(m.editor.text(), "");
    }

    fn with_history() -> Model {
        let commands = vec!["/quit".to_string()];
        let history = ["first line", "/msg bob fir tree", "other"]
            .map(String::from)
            .to_vec();
        Model::new("alice", commands, history)
            .with_clock(noon)
            .with_today(today)
    }

    #[test]
    fn ctrl_r_searches_the_history_and_enter_takes_the_match_unsent() {
        let mut m = with_history();
        let now = Instant::now();
        typed(&mut m, "draft");
        m.handle(Action::ReverseSearch, now);
        assert_eq!(m.prompt(), "(reverse-i-search)'': ");
        assert_eq!(m.shown_input(), ("draft".into(), 5));
        typed(&mut m, "fir");
        assert_eq!(m.prompt(), "(reverse-i-search)'fir': ");
        assert_eq!(m.shown_input(), ("/msg bob fir tree".into(), 9));
        m.handle(Action::ReverseSearch, now);
        assert_eq!(m.shown_input(), ("first line".into(), 0));
        m.handle(Action::ReverseSearch, now);
        assert_eq!(m.prompt(), "(failed reverse-i-search)'fir': ");
        m.handle(Action::Backspace, now);
        assert_eq!(m.prompt(), "(reverse-i-search)'fi': ");
        m.handle(Action::Enter, now);
        assert!(
            sent(&m).is_empty(),
            "Enter takes the match, does not send it"
        );
        assert_eq!(m.prompt(), "alice> ");
        assert_eq!(m.shown_input(), ("/msg bob fir tree".into(), 9));
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m), lines(&["/msg bob fir tree"]));
    }

    #[test]
    fn esc_ctrl_g_or_ctrl_c_cancel_a_search_and_other_keys_take_it_and_act() {
        let now = Instant::now();
        for cancel in [Action::Escape, Action::Cancel, Action::Interrupt] {
            let mut m = with_history();
            typed(&mut m, "draft");
            m.handle(Action::ReverseSearch, now);
            typed(&mut m, "oth");
            m.handle(cancel, now);
            assert_eq!(m.prompt(), "alice> ", "{cancel:?}");
            assert_eq!(m.shown_input(), ("draft".into(), 5), "{cancel:?}");
            assert!(m.entries().is_empty(), "{cancel:?}: no quit warning");
        }
        let mut m = with_history();
        m.handle(Action::ReverseSearch, now);
        typed(&mut m, "bob");
        m.handle(Action::PageUp, now);
        assert!(
            m.prompt().starts_with("(reverse-i-search)"),
            "scrolling keeps it"
        );
        m.handle(Action::LineEnd, now);
        assert_eq!(m.prompt(), "alice> ");
        assert_eq!(m.shown_input(), ("/msg bob fir tree".into(), 17));
        m.handle(Action::ReverseSearch, now);
        typed(&mut m, "line");
        m.handle(Action::KillToEnd, now);
        assert_eq!(
            m.shown_input(),
            ("first ".into(), 6),
            "accepted, then killed"
        );
        m.handle(Action::ReverseSearch, now);
        typed(&mut m, "oth");
        m.paste("pasted");
        assert_eq!(m.shown_input(), ("pastedother".into(), 6));
    }

    /// `/quit` while a download runs warns as Ctrl-C and Ctrl-D do; the
    /// same line again soon confirms, with its reason.
    #[test]
    fn quit_entered_warns_about_running_transfers_and_again_confirms() {
        let mut m = model();
        let t0 = Instant::now();
        m.transfer(&download(1, "big.bin"));
        typed(&mut m, "/quit bye");
        m.handle(Action::Enter, t0);
        assert!(sent(&m).is_empty(), "not at once");
        assert_eq!(
            last_notice(&m),
            Some("1 transfer running: enter /quit again (Up, Enter) to stop it and quit")
        );
        m.handle(Action::HistoryPrev, t0);
        assert_eq!(m.editor.text(), "/quit bye", "Up gives it back");
        m.handle(Action::Enter, t0 + Duration::from_secs(2));
        assert_eq!(sent(&m), lines(&["/quit bye"]));

        // Another line in between, or too late: it warns again.
        let mut m = model();
        m.transfer(&download(1, "a"));
        m.transfer(&download(2, "b"));
        typed(&mut m, "/exit");
        m.handle(Action::Enter, t0);
        assert_eq!(
            last_notice(&m),
            Some("2 transfers running: enter /quit again (Up, Enter) to stop them and quit")
        );
        typed(&mut m, "hello");
        m.handle(Action::Enter, t0);
        typed(&mut m, "/QUIT");
        m.handle(Action::Enter, t0);
        assert_eq!(sent(&m), lines(&["hello"]), "a line in between starts over");
        typed(&mut m, "/quit");
        m.handle(Action::Enter, t0 + Duration::from_secs(6));
        assert_eq!(sent(&m), lines(&["hello"]), "too late: warns again");
        typed(&mut m, "/quit");
        m.handle(Action::Enter, t0 + Duration::from_secs(7));
        assert_eq!(sent(&m), lines(&["hello", "/quit"]));

        // No transfer running (an offer waiting is none): at once.
        let mut m = model();
        m.transfer(&TransferView::offer(
            "#2".into(),
            "bob".into(),
            "b".into(),
            9,
        ));
        typed(&mut m, "/quit");
        m.handle(Action::Enter, t0);
        assert_eq!(sent(&m), lines(&["/quit"]));
    }

    /// A paste's lines go out together (a client without a connection
    /// then refuses them in one line), whether asked for or not; one line
    /// alone goes as a line.
    #[test]
    fn a_paste_goes_out_as_one_batch_of_lines() {
        let mut m = model();
        let pasted: String = (1..=8).map(|i| format!("line {i}\n")).collect();
        m.paste(&pasted);
        assert!(m.outbox.is_empty(), "asks first");
        m.handle(Action::Enter, Instant::now());
        let all: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
        assert_eq!(m.outbox, [UserInput::Lines(all)]);
        let mut m = model();
        m.paste("a\nb\n");
        assert_eq!(m.outbox, [UserInput::Lines(vec!["a".into(), "b".into()])]);
        let mut m = model();
        m.paste("a\n");
        assert_eq!(m.outbox, lines(&["a"]));
    }

    #[test]
    fn a_paste_of_a_few_lines_sends_each() {
        let mut m = model();
        m.paste("one\ntwo\r\n\nthree\rfour\n");
        assert_eq!(sent(&m), lines(&["one", "two", "three", "four"]));
        assert_eq!(m.to_history, ["one", "two", "three", "four"]);
        assert!(m.editor.is_empty(), "it ended with a newline");
        m.outbox.clear();
        typed(&mut m, "draft");
        m.paste(" and more");
        assert_eq!(m.editor.text(), "draft and more");
        assert!(sent(&m).is_empty());
    }

    #[test]
    fn the_unfinished_last_line_of_a_paste_waits_in_the_input() {
        let mut m = model();
        let now = Instant::now();
        m.paste("x1\nx2 no newline at end");
        assert_eq!(sent(&m), lines(&["x1"]), "only the complete line goes");
        assert_eq!(m.editor.text(), "x2 no newline at end");
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m), lines(&["x1", "x2 no newline at end"]));
        assert!(m.editor.is_empty());

        // Into a draft, at the cursor: the draft before the cursor starts
        // the first line, the draft after it ends the unfinished one.
        let mut m = model();
        typed(&mut m, "ab");
        m.handle(Action::Left, now);
        m.paste("one\r\ntwo\rX");
        assert_eq!(sent(&m), lines(&["aone", "two"]));
        assert_eq!(m.editor.text(), "Xb");
        assert_eq!(m.editor.cursor(), 1, "the cursor follows the paste");

        // A blank unfinished line adds nothing.
        let mut m = model();
        m.paste("one\n   ");
        assert_eq!(sent(&m), lines(&["one"]));
        assert!(m.editor.is_empty());
    }

    /// A paste that starts with a line end after `/msg lis ` (a
    /// terminal selection that took the end of the line above) adds no
    /// text to the draft: its lines still go to lis, none in public, and
    /// the bare draft is not sent as a command missing its text.
    #[test]
    fn a_paste_that_starts_with_a_line_end_after_msg_stays_private() {
        let mut m = model();
        typed(&mut m, "/msg lis ");
        m.paste("\nsecret1\nsecret2\n");
        assert_eq!(sent(&m), lines(&["/msg lis secret1", "/msg lis secret2"]));
        assert!(m.editor.is_empty());
        let mut m = model();
        typed(&mut m, "@lis");
        m.paste("\r\nsecret1\ntail");
        assert_eq!(sent(&m), lines(&["/msg lis secret1"]));
        assert_eq!(m.editor.text(), "/msg lis tail", "for lis too");
        let mut m = model();
        typed(&mut m, "/broadcast ");
        m.paste("  \none\n");
        assert_eq!(sent(&m), lines(&["/broadcast one"]));
        // A line end alone adds nothing to send: the draft is as Enter
        // leaves it, its usage error said.
        let mut m = model();
        typed(&mut m, "/msg lis ");
        m.paste("\n");
        assert_eq!(sent(&m), lines(&["/msg lis "]));
        // A draft that names nobody sends its lines as before.
        let mut m = model();
        typed(&mut m, "/who ");
        m.paste("\none\n");
        assert_eq!(sent(&m), lines(&["/who ", "one"]));
    }

    /// The draft after the cursor ends the paste's unfinished last line:
    /// pasted into `/msg lis |hello`, that line goes to lis too, not
    /// left bare in the input for Enter to send in public.
    #[test]
    fn the_draft_after_a_pasted_private_paste_stays_for_lis() {
        let now = Instant::now();
        let mut m = model();
        typed(&mut m, "/msg lis hello");
        for _ in 0.."hello".len() {
            m.handle(Action::Left, now);
        }
        m.paste("one\ntwo\n");
        assert_eq!(sent(&m), lines(&["/msg lis one", "/msg lis two"]));
        assert_eq!(m.editor.text(), "/msg lis hello");
        m.handle(Action::Enter, now);
        assert_eq!(
            sent(&m),
            lines(&["/msg lis one", "/msg lis two", "/msg lis hello"])
        );
    }

    #[test]
    fn a_paste_continues_the_command_being_typed() {
        let now = Instant::now();
        let mut m = model();
        typed(&mut m, "/msg lis ");
        m.paste("secret1\nsecret2");
        assert_eq!(
            sent(&m),
            lines(&["/msg lis secret1"]),
            "the first line finishes the draft, nothing goes out in public"
        );
        assert_eq!(m.to_history, ["/msg lis secret1"], "as Enter would");
        assert_eq!(m.editor.text(), "/msg lis secret2", "for lis too");
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m), lines(&["/msg lis secret1", "/msg lis secret2"]));

        // Ending with a newline: every line goes to lis, the input ends
        // empty. Not the first alone, the others to everyone.
        let mut m = model();
        typed(&mut m, "/msg lis ");
        m.paste("secret1\nsecret2\n/etc/passwd\n");
        assert_eq!(
            sent(&m),
            lines(&[
                "/msg lis secret1",
                "/msg lis secret2",
                "/msg lis /etc/passwd"
            ])
        );
        assert!(m.editor.is_empty());
        let mut m = model();
        typed(&mut m, "@lis ");
        m.paste("one\ntwo\n");
        assert_eq!(sent(&m), lines(&["@lis one", "/msg lis two"]));
        // `/broadcast ` sends them all to everyone, whatever the mode.
        let mut m = model();
        typed(&mut m, "/broadcast ");
        m.paste("one\ntwo\n");
        assert_eq!(sent(&m), lines(&["/broadcast one", "/broadcast two"]));

        // A blank draft before the cursor adds nothing to the first line.
        let mut m = model();
        typed(&mut m, "  ");
        m.handle(Action::LineStart, now);
        m.paste("one\ntwo");
        assert_eq!(sent(&m), lines(&["one"]));
        assert_eq!(m.editor.text(), "two  ");
    }

    #[test]
    fn a_long_paste_into_a_draft_asks_and_esc_keeps_the_draft() {
        let now = Instant::now();
        let text = format!(
            "{}tail",
            (1..=6).map(|i| format!("secret{i}\n")).collect::<String>()
        );
        let mut m = model();
        typed(&mut m, "/msg lis ");
        m.paste(&text);
        assert_eq!(
            m.status_line(),
            "paste 6 lines to lis? Enter sends them, Esc cancels",
            "the question says where they go"
        );
        assert!(sent(&m).is_empty());
        assert_eq!(m.editor.text(), "/msg lis ", "the draft waits as it was");
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m).len(), 6);
        assert_eq!(sent(&m)[0], UserInput::Line("/msg lis secret1".into()));
        assert_eq!(sent(&m)[5], UserInput::Line("/msg lis secret6".into()));
        assert_eq!(m.editor.text(), "/msg lis tail");

        for cancel in [Action::Escape, Action::Interrupt] {
            let mut m = model();
            typed(&mut m, "/msg lis x");
            m.handle(Action::Left, now);
            m.paste(&text);
            m.handle(cancel, now);
            assert!(sent(&m).is_empty());
            assert_eq!(m.editor.text(), "/msg lis x", "the draft as it was");
            assert_eq!(m.editor.cursor(), "/msg lis ".len());
        }
    }

    #[test]
    fn pasted_lines_that_start_with_a_slash_go_as_text_not_as_commands() {
        let mut m = model();
        m.paste("#!/bin/sh\n/usr/bin/env python3\n/quit\nlast");
        assert_eq!(
            sent(&m),
            lines(&["#!/bin/sh", "//usr/bin/env python3", "//quit"])
        );
        assert_eq!(m.editor.text(), "last", "the unfinished line waits");
        // A command typed before the paste is still one, with its first
        // line; the lines after it are text, to whom it sends.
        let mut m = model();
        typed(&mut m, "/msg lis ");
        m.paste("/etc/hosts\n/etc/passwd\n");
        assert_eq!(
            sent(&m),
            lines(&["/msg lis /etc/hosts", "/msg lis /etc/passwd"])
        );
        let mut m = model();
        typed(&mut m, "/who ");
        m.paste("/etc/hosts\n/etc/passwd\n");
        assert_eq!(sent(&m), lines(&["/who /etc/hosts", "//etc/passwd"]));
    }

    #[test]
    fn the_status_line_says_while_the_cluster_cannot_be_reached() {
        let mut m = model();
        assert!(!m.status_line().contains("cluster"), "{}", m.status_line());
        let mut status = m.status.clone().expect("a status");
        status.cut_off = true;
        m.set_status(&status);
        assert_eq!(
            m.status_line(),
            "[alice] → everyone │ connected to 127.0.0.1:4000 │ cluster unreachable: only this server's users"
        );
    }

    #[test]
    fn a_paste_of_many_lines_asks_first() {
        let mut m = model();
        let now = Instant::now();
        let text: String = (1..=12).map(|i| format!("line {i}\n")).collect();
        m.paste(&text);
        assert!(sent(&m).is_empty());
        assert_eq!(
            m.status_line(),
            "paste 12 lines? Enter sends them, Esc cancels"
        );
        typed(&mut m, "x");
        assert!(m.editor.is_empty(), "keys wait for the answer");
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m).len(), 12);
        assert_eq!(sent(&m)[11], UserInput::Line("line 12".into()));
        assert!(m.status_line().starts_with("[alice]"));

        for cancel in [Action::Escape, Action::Interrupt] {
            let mut m = model();
            m.paste(&text);
            m.handle(cancel, now);
            assert!(sent(&m).is_empty());
            assert!(m.status_line().starts_with("[alice]"));
            m.handle(Action::Enter, now);
            assert!(sent(&m).is_empty(), "nothing left to send");
            assert!(m.entries().is_empty(), "Ctrl-C cancelled, it did not warn");
        }
    }

    #[test]
    fn a_long_paste_asks_for_its_complete_lines_and_keeps_the_last_for_enter() {
        let now = Instant::now();
        let text = format!(
            "{}tail",
            (1..=6).map(|i| format!("line {i}\n")).collect::<String>()
        );
        let mut m = model();
        m.paste(&text);
        assert_eq!(
            m.status_line(),
            "paste 6 lines? Enter sends them, Esc cancels"
        );
        assert!(
            m.editor.is_empty(),
            "nothing in the input before the answer"
        );
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m).len(), 6);
        assert_eq!(sent(&m)[5], UserInput::Line("line 6".into()));
        assert_eq!(m.editor.text(), "tail", "the unfinished line waits");
        m.handle(Action::Enter, now);
        assert_eq!(sent(&m)[6], UserInput::Line("tail".into()));

        let mut m = model();
        m.paste(&text);
        m.handle(Action::Escape, now);
        assert!(sent(&m).is_empty());
        assert!(m.editor.is_empty(), "Esc cancels the unfinished line too");
    }

    #[test]
    fn clear_empties_the_chat_and_repaints_the_whole_terminal() {
        let mut m = model();
        m.show(Entry::Notice("hello".into()));
        m.clear();
        assert!(m.entries.is_empty());
        assert!(
            m.clear_screen,
            "the terminal is repainted, not only the changed cells"
        );
    }

    /// The offer's id its row shows (`/accept 2 or /decline 2`) completes
    /// after `/accept`; a download's is no offer.
    #[test]
    fn tab_after_accept_completes_the_offer_waiting() {
        let mut m = model();
        let now = Instant::now();
        m.transfer(&crate::view::TransferView::offer(
            "#2".into(),
            "bob".into(),
            "push20.bin".into(),
            20 << 20,
        ));
        m.transfer(&crate::view::TransferView::offer(
            "#4".into(),
            "carol".into(),
            "notes.txt".into(),
            20 << 20,
        ));
        m.transfer_ended("#4");
        typed(&mut m, "/accept ");
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), "/accept 2");
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), "/accept 2", "the only one waiting");
    }

    /// A path completed to its one folder goes on into it at the next
    /// Tab, as a shell's does.
    #[test]
    fn tab_after_a_completed_folder_completes_in_it() {
        let dir = tempfile::tempdir().expect("a folder");
        std::fs::create_dir(dir.path().join("my dir")).unwrap();
        std::fs::write(dir.path().join("my dir").join("a file.txt"), "x").unwrap();
        let base = format!("{}/", dir.path().display());
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, &format!("/sendfile {base}my"));
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), format!("/sendfile {base}my dir/"));
        m.handle(Action::Tab, now);
        assert_eq!(
            m.editor.text(),
            format!("/sendfile {base}my dir/a file.txt")
        );
        m.handle(Action::Tab, now);
        assert_eq!(
            m.editor.text(),
            format!("/sendfile {base}my dir/a file.txt"),
            "a file alone: cycling stays"
        );
    }

    #[test]
    fn tab_completes_online_nicks_but_not_ours() {
        let mut m = model();
        let now = Instant::now();
        m.change_roster(Roster::all(vec!["alice".into(), "bob".into(), "al".into()]));
        typed(&mut m, "a");
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), "al: ");
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), "al: ", "alone: cycling stays");
        typed(&mut m, "hi /");
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), "al: hi /", "a slash later is no command");
        m.handle(Action::KillToStart, now);
        typed(&mut m, "/");
        m.handle(Action::Tab, now);
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), "/help ");
        m.handle(Action::BackTab, now);
        assert_eq!(m.editor.text(), "/download ");
        // Another key takes the command; the next Tab completes after it.
        m.handle(Action::LineEnd, now);
        m.handle(Action::Tab, now);
        assert_eq!(
            m.editor.text(),
            "/download ",
            "a key accepts; no files known"
        );
        assert_eq!(
            sent(&m),
            [UserInput::FetchFileNames],
            "so they are asked for"
        );
        m.shared_files(vec!["big file.iso".into()]);
        assert_eq!(
            m.editor.text(),
            "/download big file.iso",
            "the Tab that asked completes when they come"
        );
        m.change_roster(Roster::Left("al".into()));
        m.change_roster(Roster::Joined("carol".into()));
        assert_eq!(m.roster(), ["alice", "bob", "carol"]);
    }

    #[test]
    fn the_nick_list_marks_a_user_away_and_back_as_the_server_tells_without_who() {
        let mut m = model();
        m.change_roster(Roster::all(vec!["alice".into(), "bob".into()]));
        m.change_roster(Roster::Away("bob".into()));
        assert!(m.is_away("bob") && !m.is_away("alice"));
        m.change_roster(Roster::Back("bob".into()));
        assert!(!m.is_away("bob"));
        // Away, then gone for good: off the list, not marked.
        m.change_roster(Roster::Away("bob".into()));
        m.change_roster(Roster::Left("bob".into()));
        assert_eq!(m.roster(), ["alice"]);
        assert!(!m.is_away("bob"));
        // A name not listed is not added by its away.
        m.change_roster(Roster::Away("zed".into()));
        assert_eq!(m.roster(), ["alice"]);
    }

    #[test]
    fn who_says_who_is_away_until_a_join_or_leave_of_the_name() {
        let mut m = model();
        m.change_roster(Roster::All {
            names: vec!["alice".into(), "bob".into(), "carol".into()],
            away: vec![
                crate::view::Away {
                    name: "bob".into(),
                    secs: 23,
                },
                crate::view::Away {
                    name: "carol".into(),
                    secs: 5,
                },
            ],
        });
        assert!(m.is_away("bob") && m.is_away("carol") && !m.is_away("alice"));
        // bob's session ended and a new bob joined; carol left.
        m.change_roster(Roster::Left("bob".into()));
        m.change_roster(Roster::Joined("bob".into()));
        m.change_roster(Roster::Left("carol".into()));
        assert!(!m.is_away("bob") && !m.is_away("carol"));
        // The next /who is the whole truth again.
        m.change_roster(Roster::all(vec!["alice".into(), "bob".into()]));
        assert!(!m.is_away("bob"));
    }

    #[test]
    fn the_nick_list_is_in_the_order_of_who_case_ignored() {
        let mut m = model();
        m.change_roster(Roster::all(vec![
            "alpha".into(),
            "Bravo".into(),
            "charlie".into(),
            "Zoë".into(),
        ]));
        assert_eq!(m.roster(), ["alpha", "Bravo", "charlie", "Zoë"]);
        m.change_roster(Roster::Joined("Delta".into()));
        m.change_roster(Roster::Joined("able".into()));
        assert_eq!(
            m.roster(),
            ["able", "alpha", "Bravo", "charlie", "Delta", "Zoë"]
        );
        m.change_roster(Roster::Joined("Delta".into()));
        assert_eq!(m.roster().len(), 6, "no name twice");
        // Joins one by one land where /who puts them: digits as digits,
        // not as the letters they look like.
        let mut m = model();
        m.change_roster(Roster::all(vec!["alice".into(), "bob".into()]));
        for name in ["q5", "q1", "mia", "q9", "p10", "p2"] {
            m.change_roster(Roster::Joined(name.into()));
        }
        assert_eq!(
            m.roster(),
            ["alice", "bob", "mia", "p2", "p10", "q1", "q5", "q9"]
        );
        // Numbers in order, as a nick list in an IRC client: the whole
        // list and joins alike, case ignored.
        let mut m = model();
        m.change_roster(Roster::all(vec![
            "u10".into(),
            "u1".into(),
            "U11".into(),
            "u2".into(),
        ]));
        assert_eq!(m.roster(), ["u1", "u2", "u10", "U11"]);
        m.change_roster(Roster::Joined("U3".into()));
        m.change_roster(Roster::Joined("u100".into()));
        assert_eq!(m.roster(), ["u1", "u2", "U3", "u10", "U11", "u100"]);
    }

    #[test]
    fn file_names_are_asked_for_once_and_a_changed_line_is_left_alone() {
        let mut m = model();
        let now = Instant::now();
        typed(&mut m, "/download me");
        m.handle(Action::Tab, now);
        m.handle(Action::Tab, now);
        assert_eq!(sent(&m), [UserInput::FetchFileNames], "asked once");
        typed(&mut m, "x");
        m.shared_files(vec!["meeting notes.txt".into(), "Music.mp3".into()]);
        assert_eq!(m.editor.text(), "/download mex", "typed on: not completed");
        m.handle(Action::Backspace, now);
        m.handle(Action::Tab, now);
        assert_eq!(m.editor.text(), "/download meeting notes.txt");
        m.handle(Action::KillToStart, now);
        m.shared_files(Vec::new());
        typed(&mut m, "/download a");
        m.handle(Action::Tab, now);
        assert_eq!(
            sent(&m),
            [UserInput::FetchFileNames],
            "an empty folder is not asked for at every Tab"
        );
        typed(&mut m, " hi");
        m.handle(Action::KillToStart, now);
        typed(&mut m, "al");
        m.handle(Action::Tab, now);
        assert_eq!(sent(&m).len(), 1, "only after /download");
    }

    #[test]
    fn home_and_end_move_the_cursor_when_there_is_text() {
        let mut m = model();
        notices(&mut m, 100);
        m.fit(80, 80, 10);
        let now = Instant::now();
        typed(&mut m, "abc");
        m.handle(Action::Home, now);
        assert_eq!((m.editor.cursor(), m.scroll()), (0, 0));
        m.handle(Action::End, now);
        assert_eq!(m.editor.cursor(), 3);
        m.handle(Action::Interrupt, now);
        m.handle(Action::Home, now);
        assert_eq!(m.scroll(), 90, "empty input: to the top");
    }

    /// The count of new lines is of those still below the view: paging
    /// down through them counts down.
    #[test]
    fn the_new_lines_count_down_as_they_come_into_view() {
        let mut m = model();
        notices(&mut m, 100);
        m.fit(80, 80, 10);
        let now = Instant::now();
        m.handle(Action::PageUp, now);
        m.handle(Action::PageUp, now);
        for i in 0..30 {
            m.show(Entry::Chat(chat("bob", &format!("new {i}"))));
        }
        assert!(
            m.status_line().ends_with("│ 30 new ↓"),
            "{}",
            m.status_line()
        );
        // Back where the new lines start: those in view are not counted.
        m.handle(Action::PageDown, now);
        m.handle(Action::PageDown, now);
        assert!(
            m.status_line().ends_with("│ 30 new ↓"),
            "{}",
            m.status_line()
        );
        m.handle(Action::PageDown, now);
        assert!(
            m.status_line().ends_with("│ 21 new ↓"),
            "{}",
            m.status_line()
        );
        m.handle(Action::PageDown, now);
        assert!(
            m.status_line().ends_with("│ 12 new ↓"),
            "{}",
            m.status_line()
        );
        m.handle(Action::ScrollBottom, now);
        assert!(!m.status_line().contains("new ↓"), "{}", m.status_line());
    }

    /// Scrolled back with nothing new, the status line still says the
    /// view is not the bottom of the chat; at the bottom it says nothing.
    #[test]
    fn a_view_scrolled_back_says_there_is_more_below() {
        let mut m = model();
        notices(&mut m, 100);
        m.fit(80, 80, 10);
        let now = Instant::now();
        assert!(!m.status_line().contains('↓'), "{}", m.status_line());
        m.handle(Action::PageUp, now);
        assert!(m.status_line().ends_with("│ more ↓"), "{}", m.status_line());
        m.handle(Action::ScrollBottom, now);
        assert!(!m.status_line().contains('↓'), "{}", m.status_line());
    }

    /// On a narrow terminal the connection's text is cut, not the counts
    /// after it: cut at the end, the new lines' count was lost first.
    #[test]
    fn a_narrow_status_line_cuts_the_connection_not_the_counts() {
        let mut m = model();
        m.set_status(&Status {
            me: "alice".into(),
            target: None,
            link: Link::Connected {
                server: "127.0.0.1:35221".into(),
            },
            cut_off: false,
        });
        notices(&mut m, 100);
        m.fit(50, 50, 10);
        m.handle(Action::PageUp, Instant::now());
        m.show(Entry::Chat(chat("bob", "alice: look")));
        let line = m.status_line();
        assert_eq!(line, "[alice] → everyone │ connec… │ 1 new ↓ (1 for you)");
        assert!(render::text_width(&line) <= 50, "{line}");
        m.fit(80, 80, 10);
        assert_eq!(
            m.status_line(),
            "[alice] → everyone │ connected to 127.0.0.1:35221 │ 1 new ↓ (1 for you)",
            "whole where it fits"
        );
    }

    /// Scrolled back, a message naming us or a private one is said apart
    /// on the status line: the bell rang, but it is out of sight.
    #[test]
    fn the_new_lines_for_us_are_counted_apart() {
        let mut m = model();
        notices(&mut m, 100);
        m.fit(80, 80, 10);
        let now = Instant::now();
        m.handle(Action::PageUp, now);
        m.show(Entry::Chat(chat("bob", "hi all")));
        assert!(
            m.status_line().ends_with("│ 1 new ↓"),
            "{}",
            m.status_line()
        );
        m.show(Entry::Chat(chat("bob", "alice: look")));
        let mut private = chat("carol", "psst");
        private.private = true;
        m.show(Entry::Chat(private));
        assert!(
            m.status_line().ends_with("│ 3 new ↓ (2 for you)"),
            "{}",
            m.status_line()
        );
    }

    #[test]
    fn a_line_we_send_while_scrolled_back_brings_the_view_down_uncounted() {
        let mut m = model();
        notices(&mut m, 100);
        m.fit(80, 80, 10);
        let now = Instant::now();
        m.handle(Action::PageUp, now);
        assert!(m.scroll() > 0);
        m.show(Entry::Chat(chat("bob", "while you read")));
        assert!(m.status_line().contains("1 new ↓"), "{}", m.status_line());
        // Our replayed history keeps the view, and is not new.
        let mut replayed = chat("alice", "said before");
        (replayed.own, replayed.history) = (true, true);
        m.show(Entry::Chat(replayed));
        assert!(m.scroll() > 0);
        assert!(m.status_line().contains("1 new ↓"), "{}", m.status_line());
        // What we send now: to the bottom, nothing left to count.
        let mut mine = chat("alice", "my answer");
        mine.own = true;
        m.show(Entry::Chat(mine));
        assert_eq!(m.scroll(), 0);
        assert!(!m.status_line().contains("new ↓"), "{}", m.status_line());
    }

    /// Our own lines replayed as history on joining (they come from the
    /// server, not marked as ours) are no mentions, however they name us.
    #[test]
    fn our_own_lines_in_history_are_no_mentions() {
        let mut m = model();
        let mut old = chat("alice", "alice line 59");
        old.history = true;
        m.show(Entry::Chat(old));
        assert!(!m.entries().back().unwrap().mention);
        let mut spelt = chat("ALICE", "hi alice");
        spelt.history = true;
        m.show(Entry::Chat(spelt));
        assert!(!m.entries().back().unwrap().mention);
        // Another's line naming us, in history too, still is one.
        let mut bob = chat("bob", "alice: look");
        bob.history = true;
        m.show(Entry::Chat(bob));
        assert!(m.entries().back().unwrap().mention);
    }

    #[test]
    fn mentions_and_private_messages_ring_the_bell() {
        let mut m = model();
        m.show(Entry::Chat(chat("bob", "hello everyone")));
        assert!(!m.bell);
        m.show(Entry::Chat(chat("bob", "malice aforethought")));
        assert!(!m.bell, "a name inside a word is no mention");
        m.show(Entry::Chat(chat("bob", "ALICE: look")));
        assert!(m.bell);
        assert!(m.entries().back().unwrap().mention);
        m.bell = false;
        let mut own = chat("alice", "I am alice");
        own.own = true;
        m.show(Entry::Chat(own));
        assert!(!m.bell, "our own lines do not ring");
        let mut private = chat("bob", "psst");
        private.private = true;
        m.show(Entry::Chat(private));
        assert!(m.bell);
        assert!(mentions("hi alice.", "Alice"));
        assert!(!mentions("alice_bot", "alice"));
    }

    /// A message of the longest text that holds our name at every place
    /// and nowhere as a word is read in time linear in its length: each
    /// place looked at two characters either side, not the whole text
    /// before it (64 KiB of `a` for `a` took seconds, the screen frozen,
    /// and anyone can send such lines).
    #[test]
    fn a_long_text_full_of_our_name_is_read_at_once() {
        let text = "a".repeat(imchat_core::DEFAULT_MAX_TEXT);
        let started = Instant::now();
        assert!(!mentions(&text, "a"));
        assert!(!mentions(&"alice".repeat(13_000), "alice"));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }

    /// Another user's name that starts or ends with ours (`alice-bot`,
    /// `alice.b`, `bob-alice`, `alicé` decomposed) is no mention of us;
    /// punctuation after ours is.
    #[test]
    fn a_longer_name_that_holds_ours_is_no_mention() {
        for text in [
            "alice-bot: status?",
            "ask alice.b",
            "bob-alice said so",
            "x.alice",
            "alice\u{301} is here",
        ] {
            assert!(!mentions(text, "alice"), "{text}");
        }
        for text in [
            "hi alice.",
            "alice... are you there",
            "alice, look",
            "(alice)",
            "alice: look",
            "...alice",
            "alice. next",
            "@alice hi",
        ] {
            assert!(mentions(text, "alice"), "{text}");
        }
        assert!(mentions("ask alice.b now", "alice.b"));
    }

    #[test]
    fn the_chat_keeps_at_most_its_bytes_of_text_the_newest_first() {
        let mut m = model();
        let big = "x".repeat(65_000);
        // Scrolled back meanwhile, as a reader may be.
        for i in 0..560 {
            m.show(Entry::Chat(chat("bob", &format!("{i} {big}"))));
            if i == 540 {
                m.handle(Action::PageUp, Instant::now());
            }
        }
        let kept: usize = m.entries().iter().map(|s| text_bytes(&s.entry)).sum();
        assert!(kept <= SCROLLBACK_BYTES, "{kept}");
        assert!(
            kept > SCROLLBACK_BYTES - 70_000,
            "only what must go went: {kept}"
        );
        assert_eq!(m.entry_bytes, kept);
        let Entry::Chat(last) = &m.entries().back().unwrap().entry else {
            panic!()
        };
        assert!(last.text.starts_with("559 "));
    }

    #[test]
    fn the_chat_keeps_the_last_ten_thousand_entries_and_clears() {
        let mut m = model();
        notices(&mut m, SCROLLBACK + 5);
        assert_eq!(m.entries().len(), SCROLLBACK);
        assert_eq!(m.entries()[0].entry, Entry::Notice("line 5".into()));
        m.clear();
        assert!(m.entries().is_empty());
    }

    #[test]
    fn the_join_shows_who_is_online_only_where_the_nick_list_does_not() {
        let online = "online (3): alice, bob, carol";
        // 80 columns: no nick list, so the notice shows.
        let mut m = model();
        m.set_width(80);
        assert!(m.roster_notice(online));
        assert_eq!(last_notice(&m), Some(online));
        // Wide enough for the nick list, known before any draw: nothing.
        let mut m = model();
        m.set_width(NICKLIST_MIN_WIDTH);
        assert!(!m.roster_notice(online));
        assert!(m.entries().is_empty());
        // The nick list turned off (F2, /nicklist) on a wide terminal: shown.
        m.toggle_nicklist();
        assert!(m.roster_notice(online));
        assert_eq!(last_notice(&m), Some(online));
        // And turned on in a narrow one: not.
        let mut m = model();
        m.set_width(60);
        m.toggle_nicklist();
        assert!(!m.roster_notice(online));
        assert!(m.entries().is_empty());
        // The names are held inert, as every text from the client.
        let mut m = model();
        assert!(m.roster_notice("online (1): bob\u{202e}\x1b[2J"));
        assert_eq!(last_notice(&m), Some("online (1): bob\\u{202e}^[[2J"));
    }
}
