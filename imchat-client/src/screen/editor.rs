//! The input line: a text, a cursor on a grapheme boundary, emacs-style
//! editing, a kill ring and the history of entered lines.

use unicode_segmentation::UnicodeSegmentation;

/// How many kills the ring keeps.
const KILL_RING: usize = 16;

/// How many edits Ctrl-_ can undo.
const UNDO_STEPS: usize = 100;

/// A line and its cursor, as they were before an edit.
pub type UndoSteps = Vec<(String, usize)>;

/// What the last command did, for the commands that go on from it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Last {
    #[default]
    Other,
    /// Typed characters: a run of them is one undo step.
    Typing,
    /// A yank (or yank-pop) of the text from this byte to the cursor,
    /// which Alt-Y replaces with the kill before it.
    Yank(usize),
    /// A kill: the next kill in a row adds its text to the same ring
    /// entry, as in readline.
    Kill,
}

/// How many lines the history keeps (the history file keeps the same).
pub const HISTORY_LINES: usize = 1_000;

/// The input line being edited.
#[derive(Debug, Default)]
pub struct Editor {
    /// The text.
    text: String,
    /// Byte offset of the cursor, on a grapheme boundary.
    cursor: usize,
    /// Killed texts, the latest last: a ring, which Alt-Y turns.
    kills: Vec<String>,
    /// What the last command did.
    last: Last,
    /// The line before each edit, the latest last (Ctrl-_).
    undo: UndoSteps,
    /// Entered lines, the oldest first.
    history: Vec<String>,
    /// Which history entry is shown (`None`: the draft being typed).
    recalled: Option<usize>,
    /// The text typed before moving into the history.
    draft: String,
    /// A reverse incremental search of the history going on (Ctrl-R).
    search: Option<Search>,
    /// The text of the last search, which Ctrl-R on an empty one looks
    /// for again, as in readline.
    last_query: String,
}

/// A reverse incremental search (Ctrl-R): the line itself stays as it was
/// until the search is accepted.
#[derive(Debug, Default)]
struct Search {
    /// What is looked for.
    query: String,
    /// The history entry that matches, and the byte where the match starts.
    found: Option<(usize, usize)>,
    /// Nothing older matches the query.
    failed: bool,
}

/// What a search shows in the input line.
#[derive(Debug, PartialEq, Eq)]
pub struct SearchShown<'a> {
    pub query: &'a str,
    pub failed: bool,
    /// The matching entry (the line itself before any match).
    pub text: &'a str,
    /// Where the match starts in it.
    pub cursor: usize,
}

impl Editor {
    /// An empty line with `history` (oldest first) to recall.
    pub fn new(history: Vec<String>) -> Self {
        let mut editor = Self {
            history,
            ..Self::default()
        };
        editor.trim_history();
        editor
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor's byte offset in [`text`](Self::text).
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// True when nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the text, the cursor at `cursor` (clamped to a boundary):
    /// an edit that Ctrl-_ undoes.
    pub fn set(&mut self, text: String, cursor: usize) {
        let before = self.snapshot();
        self.cursor = cursor.min(text.len());
        while !text.is_char_boundary(self.cursor) {
            self.cursor -= 1;
        }
        self.text = text;
        self.edited(before, Last::Other);
    }

    /// Inserts `s` at the cursor, control characters left out (a tab
    /// becomes a space): one undo step.
    pub fn insert(&mut self, s: &str) {
        let before = self.snapshot();
        self.insert_clean(s);
        self.edited(before, Last::Other);
    }

    /// Types `c` at the cursor: the characters typed in a row are one
    /// undo step, as in readline.
    pub fn type_char(&mut self, c: char) {
        let before = self.snapshot();
        self.insert_clean(c.encode_utf8(&mut [0; 4]));
        self.edited(before, Last::Typing);
    }

    fn insert_clean(&mut self, s: &str) {
        let clean: String = s
            .chars()
            .filter_map(|c| match c {
                '\t' => Some(' '),
                c if c.is_control() => None,
                c => Some(c),
            })
            .collect();
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    /// The line and cursor now, to undo to.
    fn snapshot(&self) -> (String, usize) {
        (self.text.clone(), self.cursor)
    }

    /// After an edit from `before`: keeps `before` to undo to, if the
    /// text changed and the edit does not continue a run of typing.
    fn edited(&mut self, before: (String, usize), last: Last) {
        let continues = last == Last::Typing && self.last == Last::Typing;
        if before.0 != self.text && !continues {
            self.undo.push(before);
            if self.undo.len() > UNDO_STEPS {
                self.undo.remove(0);
            }
        }
        self.last = last;
    }

    /// Ctrl-_: the line as it was before the last edit.
    pub fn undo(&mut self) {
        if let Some((text, cursor)) = self.undo.pop() {
            self.text = text;
            self.cursor = cursor;
        }
        self.last = Last::Other;
    }

    /// Takes the undo steps away (a secret typed in the line must leave
    /// none), to [`restore_undo`](Self::restore_undo) after.
    pub fn take_undo(&mut self) -> UndoSteps {
        std::mem::take(&mut self.undo)
    }

    /// Puts back the undo steps [`take_undo`](Self::take_undo) took,
    /// dropping any made since.
    pub fn restore_undo(&mut self, steps: UndoSteps) {
        self.undo = steps;
        self.last = Last::Other;
    }

    /// Byte offset of the grapheme boundary before the cursor.
    fn prev_boundary(&self) -> usize {
        self.boundary_before(self.cursor)
    }

    /// Byte offset of the grapheme boundary before `at`.
    fn boundary_before(&self, at: usize) -> usize {
        self.text[..at]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    /// Byte offset of the grapheme boundary after the cursor.
    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .graphemes(true)
            .next()
            .map_or(self.cursor, |g| self.cursor + g.len())
    }

    /// Start of the word before the cursor (words: letters and digits).
    fn word_start(&self) -> usize {
        let mut at = self.cursor;
        let mut seen_word = false;
        for (i, g) in self.text[..self.cursor].grapheme_indices(true).rev() {
            let word = is_word(g);
            if seen_word && !word {
                break;
            }
            seen_word |= word;
            at = i;
        }
        at
    }

    /// End of the word after the cursor.
    fn word_end(&self) -> usize {
        let mut at = self.cursor;
        let mut seen_word = false;
        for (i, g) in self.text[self.cursor..].grapheme_indices(true) {
            let word = is_word(g);
            if seen_word && !word {
                break;
            }
            seen_word |= word;
            at = self.cursor + i + g.len();
        }
        at
    }

    /// Start of the whitespace-separated word before the cursor (Ctrl-W).
    fn blank_word_start(&self) -> usize {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        trimmed.rfind(char::is_whitespace).map_or(0, |i| {
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        })
    }

    /// One grapheme left.
    pub fn left(&mut self) {
        self.last = Last::Other;
        self.cursor = self.prev_boundary();
    }

    /// One grapheme right.
    pub fn right(&mut self) {
        self.last = Last::Other;
        self.cursor = self.next_boundary();
    }

    /// To the start of the word before the cursor.
    pub fn word_left(&mut self) {
        self.last = Last::Other;
        self.cursor = self.word_start();
    }

    /// To the end of the word after the cursor.
    pub fn word_right(&mut self) {
        self.last = Last::Other;
        self.cursor = self.word_end();
    }

    /// To the start of the line.
    pub fn home(&mut self) {
        self.last = Last::Other;
        self.cursor = 0;
    }

    /// To the end of the line.
    pub fn end(&mut self) {
        self.last = Last::Other;
        self.cursor = self.text.len();
    }

    /// Deletes the grapheme before the cursor.
    pub fn backspace(&mut self) {
        let before = self.snapshot();
        let from = self.prev_boundary();
        self.text.replace_range(from..self.cursor, "");
        self.cursor = from;
        self.edited(before, Last::Other);
    }

    /// Deletes the grapheme at the cursor.
    pub fn delete(&mut self) {
        let before = self.snapshot();
        let to = self.next_boundary();
        self.text.replace_range(self.cursor..to, "");
        self.edited(before, Last::Other);
    }

    /// Ctrl-T: swaps the grapheme before the cursor with the one at it,
    /// the cursor going past both; at the end of the line, the two before
    /// it, as readline does.
    pub fn transpose(&mut self) {
        let before = self.snapshot();
        let (mid, end) = if self.cursor == self.text.len() {
            (self.prev_boundary(), self.cursor)
        } else {
            (self.cursor, self.next_boundary())
        };
        let start = self.boundary_before(mid);
        if start < mid && mid < end {
            let swapped = format!("{}{}", &self.text[mid..end], &self.text[start..mid]);
            self.text.replace_range(start..end, &swapped);
            self.cursor = end;
        }
        self.edited(before, Last::Other);
    }

    /// Removes `from..to` into the kill ring; the cursor goes to `from`.
    /// Right after another kill the text joins that kill's entry (after it
    /// for a kill forward, before it for a kill backward), so Ctrl-Y gives
    /// back all that a run of kills took, as in readline.
    fn kill(&mut self, from: usize, to: usize) {
        self.kill_joining(from, to, true);
    }

    /// [`kill`](Self::kill), joining the previous kill only if `join`.
    fn kill_joining(&mut self, from: usize, to: usize, join: bool) {
        let before = self.snapshot();
        let mut last = self.last;
        if from < to {
            let backward = to == self.cursor && from < self.cursor;
            let killed: String = self.text.drain(from..to).collect();
            self.cursor = from;
            match self.kills.last_mut() {
                Some(entry) if join && self.last == Last::Kill => {
                    if backward {
                        entry.insert_str(0, &killed);
                    } else {
                        entry.push_str(&killed);
                    }
                }
                _ => {
                    self.kills.push(killed);
                    if self.kills.len() > KILL_RING {
                        self.kills.remove(0);
                    }
                }
            }
            last = Last::Kill;
        }
        self.edited(before, last);
    }

    /// Ctrl-K: kills to the end of the line.
    pub fn kill_to_end(&mut self) {
        self.kill(self.cursor, self.text.len());
    }

    /// Ctrl-U: kills to the start of the line.
    pub fn kill_to_start(&mut self) {
        self.kill(0, self.cursor);
    }

    /// Ctrl-W: kills back to the previous blank, as readline does.
    pub fn kill_blank_word_before(&mut self) {
        self.kill(self.blank_word_start(), self.cursor);
    }

    /// Alt-Backspace: kills the word before the cursor.
    pub fn kill_word_before(&mut self) {
        self.kill(self.word_start(), self.cursor);
    }

    /// Alt-D: kills the word after the cursor.
    pub fn kill_word_after(&mut self) {
        self.kill(self.cursor, self.word_end());
    }

    /// Ctrl-C on a typed line: the whole line into the kill ring.
    pub fn kill_line(&mut self) {
        self.kill_joining(0, self.text.len(), false);
        self.recalled = None;
    }

    /// Ctrl-Y: inserts the latest kill.
    pub fn yank(&mut self) {
        let before = self.snapshot();
        let start = self.cursor;
        let mut last = Last::Other;
        if let Some(text) = self.kills.last().cloned() {
            self.insert_clean(&text);
            last = Last::Yank(start);
        }
        self.edited(before, last);
    }

    /// Alt-Y, right after Ctrl-Y or Alt-Y: turns the kill ring and puts
    /// its new latest kill in place of the text just yanked (so the kills
    /// come back from the latest to the oldest, then round again).
    /// Otherwise it does nothing, as in readline.
    pub fn yank_pop(&mut self) {
        let Last::Yank(start) = self.last else {
            return;
        };
        let before = self.snapshot();
        self.kills.rotate_right(1);
        let text = self.kills.last().cloned().unwrap_or_default();
        self.text.replace_range(start..self.cursor, &text);
        self.cursor = start + text.len();
        self.edited(before, Last::Yank(start));
    }

    /// Up: the previous history entry; the draft is kept.
    pub fn history_prev(&mut self) {
        let at = match self.recalled {
            None if self.history.is_empty() => return,
            None => {
                self.draft = std::mem::take(&mut self.text);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.recalled = Some(at);
        self.text = self.history[at].clone();
        self.cursor = self.text.len();
        self.other_line();
    }

    /// Another line shows (recalled, or after Enter): the undo steps were
    /// those of the line before, and no command goes on.
    fn other_line(&mut self) {
        self.undo.clear();
        self.last = Last::Other;
    }

    /// Down: the next history entry, then the draft back.
    pub fn history_next(&mut self) {
        let Some(i) = self.recalled else { return };
        if i + 1 < self.history.len() {
            self.recalled = Some(i + 1);
            self.text = self.history[i + 1].clone();
        } else {
            self.recalled = None;
            self.text = std::mem::take(&mut self.draft);
        }
        self.cursor = self.text.len();
        self.other_line();
    }

    /// Ctrl-R: starts a reverse search of the history or, searching,
    /// finds the next older entry that matches (an empty search looks for
    /// the last one's text again).
    pub fn search_older(&mut self) {
        let Some(search) = &self.search else {
            self.search = Some(Search::default());
            self.last = Last::Other;
            return;
        };
        let query = if search.query.is_empty() {
            self.last_query.clone()
        } else {
            search.query.clone()
        };
        if query.is_empty() {
            return;
        }
        let (from, shown) = match search.found {
            Some((i, _)) => (i, Some(self.history[i].as_str())),
            None => (self.history.len(), None),
        };
        let found = self.find(&query, from, shown);
        if let Some(search) = &mut self.search {
            search.query = query;
            search.failed = found.is_none();
            search.found = found.or(search.found);
        }
    }

    /// The newest match of `query` in the entries before `before`, other
    /// than those that read `skip` (one shown already); the byte where its
    /// last occurrence starts.
    fn find(&self, query: &str, before: usize, skip: Option<&str>) -> Option<(usize, usize)> {
        self.history[..before]
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, entry)| Some(entry.as_str()) != skip)
            .find_map(|(i, entry)| entry.rfind(query).map(|at| (i, at)))
    }

    /// Whether a search is going on.
    pub fn searching(&self) -> bool {
        self.search.is_some()
    }

    /// What a search going on shows.
    pub fn search_shown(&self) -> Option<SearchShown<'_>> {
        let search = self.search.as_ref()?;
        let (text, cursor) = match search.found {
            Some((i, at)) => (self.history[i].as_str(), at),
            None => (self.text.as_str(), self.cursor),
        };
        Some(SearchShown {
            query: &search.query,
            failed: search.failed,
            text,
            cursor,
        })
    }

    /// Typing during a search: the search narrows, from the entry that
    /// matches now to older ones.
    pub fn search_type(&mut self, s: &str) {
        let Some(search) = &self.search else { return };
        let mut query = search.query.clone();
        query.extend(s.chars().filter(|c| !c.is_control()));
        let from = search.found.map_or(self.history.len(), |(i, _)| i + 1);
        let found = self.find(&query, from, None);
        if let Some(search) = &mut self.search {
            search.query = query;
            search.failed = found.is_none();
            search.found = found.or(search.found);
        }
    }

    /// Backspace during a search: its last grapheme goes, and the search
    /// starts again from the newest entry.
    pub fn search_backspace(&mut self) {
        let Some(search) = &self.search else { return };
        let mut query = search.query.clone();
        let end = query
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i);
        query.truncate(end);
        let found = if query.is_empty() {
            None
        } else {
            self.find(&query, self.history.len(), None)
        };
        if let Some(search) = &mut self.search {
            search.failed = found.is_none() && !query.is_empty();
            search.query = query;
            search.found = found;
        }
    }

    /// Ends a search, the match into the line (the cursor where it
    /// starts), as if recalled with Up: Down goes on to newer entries and
    /// back to the line typed before. Nothing found, the line stays.
    pub fn search_accept(&mut self) {
        let Some(search) = self.search.take() else {
            return;
        };
        self.remember_query(&search);
        if let Some((i, at)) = search.found {
            if self.recalled.is_none() {
                self.draft = std::mem::take(&mut self.text);
            }
            self.recalled = Some(i);
            self.text = self.history[i].clone();
            self.cursor = at;
            self.other_line();
        }
    }

    /// Esc or Ctrl-G during a search: it ends, the line as it was.
    pub fn search_cancel(&mut self) {
        if let Some(search) = self.search.take() {
            self.remember_query(&search);
        }
    }

    fn remember_query(&mut self, search: &Search) {
        if !search.query.is_empty() {
            self.last_query.clone_from(&search.query);
        }
    }

    /// Enter: takes the line (`None` for a blank one, which stays unsent),
    /// clears the input. The line enters the history unless it repeats the
    /// last entry; the return's second part says whether it did.
    pub fn take_line(&mut self) -> Option<(String, bool)> {
        self.other_line();
        if self.text.trim().is_empty() {
            self.text.clear();
            self.cursor = 0;
            return None;
        }
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.recalled = None;
        self.draft.clear();
        let added = self.remember(&line);
        Some((line, added))
    }

    /// Adds `line` to the history unless it repeats the last entry, or
    /// may hold a password ([`may_hold_a_password`]).
    pub fn remember(&mut self, line: &str) -> bool {
        if may_hold_a_password(line) || self.history.last().is_some_and(|last| last == line) {
            return false;
        }
        self.history.push(line.to_owned());
        self.trim_history();
        true
    }

    /// Takes `line` (its last copy) out of the history: a line the client
    /// refused to send is not one to recall (it is back in the input).
    pub fn forget(&mut self, line: &str) {
        if let Some(at) = self.history.iter().rposition(|l| l == line) {
            self.history.remove(at);
            self.recalled = None;
        }
    }

    fn trim_history(&mut self) {
        let extra = self.history.len().saturating_sub(HISTORY_LINES);
        self.history.drain(..extra);
    }
}

/// A `/register` or `/unregister` line with more on it: what follows may be
/// a password typed on the line (the command refuses it), which the input
/// history, in memory or in its file, does not keep.
pub fn may_hold_a_password(line: &str) -> bool {
    let line = line.trim_start();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    ["/register", "/unregister"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
        && !rest.trim().is_empty()
}

/// True for a grapheme that belongs to a word (letters, digits, `_`).
fn is_word(g: &str) -> bool {
    g.chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut e = Editor::new(Vec::new());
        e.insert(text);
        e
    }

    #[test]
    fn cursor_moves_and_deletes_whole_graphemes() {
        let family = "👨\u{200d}👩\u{200d}👧";
        let mut e = typed(&format!("a{family}é"));
        e.left();
        e.left();
        assert_eq!(
            e.cursor(),
            1,
            "one Left steps over the é, one over the family"
        );
        e.delete();
        assert_eq!(e.text(), "aé");
        e.end();
        e.backspace();
        assert_eq!(e.text(), "a");
        e.insert(family);
        e.backspace();
        assert_eq!(e.text(), "a", "Backspace removes the whole emoji sequence");
    }

    #[test]
    fn words_move_and_kill_like_emacs() {
        let mut e = typed("send foo.txt  now");
        e.word_left();
        assert_eq!(&e.text()[e.cursor()..], "now");
        e.word_left();
        assert_eq!(&e.text()[e.cursor()..], "txt  now");
        e.home();
        e.word_right();
        assert_eq!(e.cursor(), 4);
        e.kill_word_after();
        assert_eq!(e.text(), "send.txt  now");
        e.yank();
        assert_eq!(e.text(), "send foo.txt  now");
        e.end();
        e.kill_blank_word_before();
        assert_eq!(e.text(), "send foo.txt  ");
        e.kill_blank_word_before();
        assert_eq!(e.text(), "send ", "Ctrl-W goes back to the previous blank");
        e.kill_word_before();
        assert_eq!(e.text(), "");
    }

    #[test]
    fn kills_to_end_and_start_come_back_with_yank() {
        let mut e = typed("hello brave world");
        e.home();
        e.word_right();
        e.word_right();
        e.kill_to_end();
        assert_eq!(e.text(), "hello brave");
        e.left();
        e.kill_to_start();
        assert_eq!(e.text(), "e");
        e.yank();
        assert_eq!(e.text(), "hello brave");
        e.yank();
        assert_eq!(e.text(), "hello bravhello brave");
        let mut e = typed("draft");
        e.kill_line();
        assert!(e.is_empty());
        e.yank();
        assert_eq!(e.text(), "draft");
    }

    /// As in readline: kills in a row are one ring entry, a kill forward
    /// adding its text after it and a kill backward before it; anything
    /// else in between starts a new entry.
    #[test]
    fn kills_in_a_row_come_back_as_one_yank() {
        let mut e = typed("one two three four");
        e.home();
        e.word_right();
        e.kill_word_after();
        e.kill_word_after();
        assert_eq!(e.text(), "one four");
        e.yank();
        assert_eq!(e.text(), "one two three four", "both words in one yank");
        e.end();
        e.kill_blank_word_before();
        e.kill_blank_word_before();
        e.kill_to_start();
        assert_eq!(e.text(), "");
        e.yank();
        assert_eq!(e.text(), "one two three four", "backward kills go before");
        e.home();
        e.kill_word_after();
        e.right();
        e.kill_word_after();
        e.yank();
        assert_eq!(e.text(), " two three four", "a move between: a new entry");
        e.yank_pop();
        assert_eq!(e.text(), " one three four", "the kill before it is apart");
        let mut e = typed("ab cd");
        e.kill_blank_word_before();
        e.kill_line();
        e.yank();
        assert_eq!(e.text(), "ab ", "Ctrl-C on a line joins no kill");
    }

    #[test]
    fn history_keeps_the_draft_and_skips_repeats() {
        let mut e = Editor::new(vec!["one".into()]);
        e.insert("two");
        assert_eq!(e.take_line(), Some(("two".into(), true)));
        e.insert("two");
        assert_eq!(e.take_line(), Some(("two".into(), false)));
        e.insert("   ");
        assert_eq!(e.take_line(), None);
        e.insert("half-typed");
        e.history_prev();
        assert_eq!(e.text(), "two");
        e.history_prev();
        assert_eq!(e.text(), "one");
        e.history_prev();
        assert_eq!(e.text(), "one", "the oldest stays");
        e.history_next();
        assert_eq!(e.text(), "two");
        e.history_next();
        assert_eq!(e.text(), "half-typed", "the draft comes back at the bottom");
        assert_eq!(e.cursor(), "half-typed".len());
        e.history_next();
        assert_eq!(e.text(), "half-typed");
    }

    #[test]
    fn history_holds_at_most_a_thousand_lines() {
        let mut e = Editor::new((0..1_200).map(|i| i.to_string()).collect());
        for _ in 0..HISTORY_LINES {
            e.history_prev();
        }
        assert_eq!(e.text(), "200");
        e.history_prev();
        assert_eq!(e.text(), "200");
    }

    #[test]
    fn insert_leaves_control_characters_out() {
        let e = typed("a\tb\u{1b}[2Jc\u{7}");
        assert_eq!(e.text(), "a b[2Jc");
    }

    /// The tester's case: two kills, Ctrl-Y gives the latest, Alt-Y
    /// replaces it with the one before, and the ring goes round.
    #[test]
    fn yank_pop_replaces_the_yank_with_older_kills_round_the_ring() {
        let mut e = typed("one");
        e.kill_to_start();
        e.insert("two");
        e.kill_to_start();
        e.insert("three");
        e.kill_to_start();
        e.insert("> ");
        e.yank();
        assert_eq!(e.text(), "> three");
        e.yank_pop();
        assert_eq!(e.text(), "> two");
        e.yank_pop();
        assert_eq!(e.text(), "> one");
        assert_eq!(e.cursor(), "> one".len());
        e.yank_pop();
        assert_eq!(e.text(), "> three", "round the ring again");
        e.yank_pop();
        assert_eq!(e.text(), "> two");
        // The ring turned: the next Ctrl-Y yanks the kill popped last.
        e.insert(" ");
        e.yank();
        assert_eq!(e.text(), "> two two");
    }

    #[test]
    fn yank_pop_does_nothing_but_right_after_a_yank() {
        let mut e = typed("one");
        e.kill_to_start();
        e.insert("two");
        e.kill_to_start();
        e.yank_pop();
        assert_eq!(e.text(), "", "no yank before");
        e.yank();
        e.left();
        e.yank_pop();
        assert_eq!(e.text(), "two", "a move in between ends the yank");
        e.end();
        e.yank();
        e.insert("x");
        e.yank_pop();
        assert_eq!(e.text(), "twotwox", "typing in between ends it too");
        let mut e = typed("nothing killed");
        e.yank();
        e.yank_pop();
        assert_eq!(e.text(), "nothing killed");
    }

    #[test]
    fn the_kill_ring_keeps_the_last_sixteen_kills() {
        let mut e = Editor::new(Vec::new());
        for i in 0..20 {
            e.insert(&i.to_string());
            e.kill_to_start();
        }
        e.yank();
        for _ in 0..15 {
            e.yank_pop();
        }
        assert_eq!(e.text(), "4", "the oldest kept");
        e.yank_pop();
        assert_eq!(e.text(), "19");
    }

    #[test]
    fn transpose_swaps_graphemes_around_or_before_the_cursor() {
        let family = "👨\u{200d}👩\u{200d}👧";
        let mut e = typed(&format!("a{family}é"));
        e.transpose();
        assert_eq!(
            e.text(),
            format!("aé{family}"),
            "at the end: the two before"
        );
        assert_eq!(e.cursor(), e.text().len());
        e.home();
        e.right();
        e.transpose();
        assert_eq!(e.text(), format!("éa{family}"), "inside: before and at");
        assert_eq!(e.cursor(), "éa".len(), "the cursor goes past both");
        e.transpose();
        assert_eq!(e.text(), format!("é{family}a"), "so that Ctrl-T drags");
        e.home();
        e.transpose();
        assert_eq!(e.text(), format!("é{family}a"), "nothing before the start");
        assert_eq!(e.cursor(), 0);
        let mut e = typed("x");
        e.transpose();
        assert_eq!(e.text(), "x");
    }

    #[test]
    fn undo_takes_back_edits_one_at_a_time_a_typed_run_as_one() {
        let mut e = Editor::new(Vec::new());
        for c in "hello".chars() {
            e.type_char(c);
        }
        e.type_char(' ');
        e.left();
        e.right();
        for c in "world".chars() {
            e.type_char(c);
        }
        e.backspace();
        e.kill_word_before();
        assert_eq!(e.text(), "hello ");
        e.yank();
        e.transpose();
        assert_eq!(e.text(), "hello wolr");
        e.undo();
        assert_eq!(e.text(), "hello worl");
        e.undo();
        assert_eq!(e.text(), "hello ");
        e.undo();
        assert_eq!(e.text(), "hello worl");
        e.undo();
        assert_eq!(e.text(), "hello world");
        e.undo();
        assert_eq!(e.text(), "hello ", "the run typed after a move is one step");
        assert_eq!(e.cursor(), "hello ".len());
        e.undo();
        assert_eq!(e.text(), "");
        e.undo();
        assert_eq!(e.text(), "", "nothing more to undo");
    }

    #[test]
    fn undo_keeps_the_last_hundred_edits_of_the_line_shown() {
        let mut e = Editor::new(vec!["old".into()]);
        for i in 0..150 {
            e.insert(&format!("{} ", i % 10));
        }
        for _ in 0..UNDO_STEPS {
            e.undo();
        }
        assert_eq!(e.text().len(), 100, "{}", e.text());
        e.undo();
        assert_eq!(e.text().len(), 100);
        e.history_prev();
        e.undo();
        assert_eq!(e.text(), "old", "a recalled line starts with no steps");
        e.insert("!");
        assert_eq!(e.take_line(), Some(("old!".into(), true)));
        e.undo();
        assert_eq!(e.text(), "", "a sent line is not brought back");
    }

    fn searched() -> Editor {
        Editor::new(
            ["first try", "second", "/msg bob fir tree", "other", "fir"]
                .map(String::from)
                .to_vec(),
        )
    }

    fn shown(e: &Editor) -> (String, String, bool, usize) {
        let s = e.search_shown().expect("a search");
        (s.query.into(), s.text.into(), s.failed, s.cursor)
    }

    #[test]
    fn reverse_search_narrows_and_goes_to_older_matches() {
        let mut e = searched();
        e.insert("draft");
        e.search_older();
        assert!(e.searching());
        assert_eq!(shown(&e), ("".into(), "draft".into(), false, 5));
        e.search_type("f");
        e.search_type("i");
        assert_eq!(shown(&e), ("fi".into(), "fir".into(), false, 0));
        e.search_type("r ");
        assert_eq!(
            shown(&e),
            ("fir ".into(), "/msg bob fir tree".into(), false, 9),
            "typing narrows to older entries"
        );
        e.search_older();
        assert_eq!(
            shown(&e),
            ("fir ".into(), "/msg bob fir tree".into(), true, 9)
        );
        e.search_backspace();
        assert_eq!(shown(&e), ("fir".into(), "fir".into(), false, 0));
        e.search_older();
        assert_eq!(shown(&e).1, "/msg bob fir tree");
        e.search_older();
        assert_eq!(shown(&e), ("fir".into(), "first try".into(), false, 0));
        e.search_older();
        assert_eq!(
            shown(&e),
            ("fir".into(), "first try".into(), true, 0),
            "no older match: the last one stays, failed"
        );
        assert_eq!(e.text(), "draft", "the line is untouched while searching");
        e.search_accept();
        assert!(!e.searching());
        assert_eq!((e.text(), e.cursor()), ("first try", 0));
        e.history_next();
        assert_eq!(e.text(), "second", "Down goes on from the match");
        for _ in 0..4 {
            e.history_next();
        }
        assert_eq!(e.text(), "draft", "and back to the line typed before");
    }

    #[test]
    fn a_cancelled_search_leaves_the_line_and_ctrl_r_again_repeats_it() {
        let mut e = searched();
        e.insert("draft");
        e.left();
        e.search_older();
        e.search_type("sec");
        assert_eq!(shown(&e).1, "second");
        e.search_cancel();
        assert!(!e.searching());
        assert_eq!((e.text(), e.cursor()), ("draft", 4));
        e.search_older();
        e.search_older();
        assert_eq!(shown(&e), ("sec".into(), "second".into(), false, 0));
        e.search_backspace();
        e.search_backspace();
        e.search_backspace();
        assert_eq!(shown(&e), ("".into(), "draft".into(), false, 4));
        e.search_type("nowhere");
        assert_eq!(shown(&e), ("nowhere".into(), "draft".into(), true, 4));
        e.search_accept();
        assert_eq!(e.text(), "draft", "nothing found: the line stays");
        e.history_prev();
        assert_eq!(e.text(), "fir");
    }

    /// Typing narrows from the match shown, not from the newest entry
    /// again (readline's way); Ctrl-R skips entries that read the same as
    /// the match shown, which would look as if it had not moved.
    #[test]
    fn a_search_narrows_from_its_match_and_skips_the_same_line_again() {
        let mut e = Editor::new(["abc old", "ab", "abc new"].map(String::from).to_vec());
        e.search_older();
        e.search_type("a");
        assert_eq!(shown(&e).1, "abc new");
        e.search_older();
        e.search_older();
        assert_eq!(shown(&e).1, "abc old");
        e.search_type("b");
        assert_eq!(shown(&e).1, "abc old", "narrowed from the match shown");
        assert!(!shown(&e).2);

        let mut e = Editor::new(["fir", "other", "fir"].map(String::from).to_vec());
        e.search_older();
        e.search_type("fir");
        e.search_older();
        assert_eq!(
            shown(&e),
            ("fir".into(), "fir".into(), true, 0),
            "the same line again is no other match"
        );
    }
}
