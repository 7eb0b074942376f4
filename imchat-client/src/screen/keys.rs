//! What a key or a paste means, before the model acts on it.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// A paste of more non-empty lines than this asks before sending.
pub const PASTE_ASK_ABOVE: usize = 5;

/// What the user asked for with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Type a character.
    Insert(char),
    /// One grapheme left / right.
    Left,
    Right,
    /// One word left / right.
    WordLeft,
    WordRight,
    /// Ctrl-A / Ctrl-E: start / end of the input.
    LineStart,
    LineEnd,
    /// Home / End: the input's start / end, or the chat's top / bottom
    /// while the input is empty.
    Home,
    End,
    /// Delete before / at the cursor.
    Backspace,
    Delete,
    /// Ctrl-K, Ctrl-U, Ctrl-W, Alt-Backspace, Alt-D.
    KillToEnd,
    KillToStart,
    KillBlankWordBefore,
    KillWordBefore,
    KillWordAfter,
    /// Ctrl-Y.
    Yank,
    /// Alt-Y, after Ctrl-Y: the kill before instead.
    YankPop,
    /// Ctrl-T: swap the graphemes around the cursor.
    Transpose,
    /// Ctrl-_ (Ctrl-/ in most terminals: the same byte): undo an edit.
    Undo,
    /// Ctrl-R: search the history backwards.
    ReverseSearch,
    /// Ctrl-G: cancel a search.
    Cancel,
    /// Ctrl-L.
    Redraw,
    /// Ctrl-Z: stop as a shell's job, the terminal put back meanwhile.
    Suspend,
    /// Up / Down: history.
    HistoryPrev,
    HistoryNext,
    /// Send the line.
    Enter,
    /// Complete forwards / backwards.
    Tab,
    BackTab,
    /// Ctrl-C, Ctrl-D.
    Interrupt,
    EndOfInput,
    /// Scroll the chat.
    PageUp,
    PageDown,
    ScrollTop,
    ScrollBottom,
    /// F2: show or hide the nick list.
    ToggleNicklist,
    /// Esc.
    Escape,
}

/// The action of a key press; `None` for keys that do nothing (releases,
/// F-keys other than F2, unknown combinations).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let mods = key.modifiers - KeyModifiers::SHIFT;
    let ctrl = mods == KeyModifiers::CONTROL;
    let alt = mods == KeyModifiers::ALT;
    let plain = mods.is_empty();
    use Action::*;
    Some(match key.code {
        KeyCode::Char(c) if plain => Insert(c),
        KeyCode::Char(c) if ctrl => match c.to_ascii_lowercase() {
            'a' => LineStart,
            'e' => LineEnd,
            'b' => Left,
            'f' => Right,
            'h' => Backspace,
            'k' => KillToEnd,
            'u' => KillToStart,
            'w' => KillBlankWordBefore,
            'y' => Yank,
            't' => Transpose,
            'r' => ReverseSearch,
            'g' => Cancel,
            // Ctrl-_ and Ctrl-/ send 0x1F, which crossterm reads as
            // Ctrl-7; `_` and `/` come with a keyboard protocol that tells
            // keys apart.
            '_' | '/' | '7' => Undo,
            'l' => Redraw,
            'z' => Suspend,
            'p' => HistoryPrev,
            'n' => HistoryNext,
            'c' => Interrupt,
            'd' => EndOfInput,
            'j' | 'm' => Enter,
            'i' => Tab,
            _ => return None,
        },
        KeyCode::Char(c) if alt => match c.to_ascii_lowercase() {
            'b' => WordLeft,
            'f' => WordRight,
            'd' => KillWordAfter,
            'y' => YankPop,
            _ => return None,
        },
        KeyCode::Left if ctrl || alt => WordLeft,
        KeyCode::Right if ctrl || alt => WordRight,
        KeyCode::Left if plain => Left,
        KeyCode::Right if plain => Right,
        KeyCode::Home if ctrl || alt => ScrollTop,
        KeyCode::End if ctrl || alt => ScrollBottom,
        KeyCode::Home if plain => Home,
        KeyCode::End if plain => End,
        KeyCode::Backspace if alt || ctrl => KillWordBefore,
        KeyCode::Backspace if plain => Backspace,
        KeyCode::Delete if plain => Delete,
        KeyCode::Up if plain => HistoryPrev,
        KeyCode::Down if plain => HistoryNext,
        KeyCode::PageUp => PageUp,
        KeyCode::PageDown => PageDown,
        KeyCode::Enter if plain => Enter,
        KeyCode::BackTab => BackTab,
        KeyCode::Tab if key.modifiers.contains(KeyModifiers::SHIFT) => BackTab,
        KeyCode::Tab if plain => Tab,
        KeyCode::F(2) => ToggleNicklist,
        KeyCode::Esc => Escape,
        _ => return None,
    })
}

/// What a paste becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paste {
    /// No newline: text to insert at the cursor.
    Insert(String),
    /// A few complete lines, each sent as its own line; then the unfinished
    /// last line (after the last line end, maybe empty) to insert at the
    /// cursor, sent only when the user presses Enter.
    Send(Vec<String>, String),
    /// Many complete lines: ask before sending them (and inserting the
    /// unfinished last line).
    Ask(Vec<String>, String),
}

/// Splits a paste at its line ends (CRLF, CR or LF); empty lines are left
/// out. The text after the last line end is not a line yet: it is kept
/// apart (left out if blank), for the input line.
pub fn paste(text: &str) -> Paste {
    let Some(end) = text.rfind(['\n', '\r']) else {
        return Paste::Insert(text.to_owned());
    };
    let (complete, rest) = (&text[..end], &text[end + 1..]);
    let lines: Vec<String> = complete
        .split("\r\n")
        .flat_map(|part| part.split(['\r', '\n']))
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let rest = if rest.trim().is_empty() {
        String::new()
    } else {
        rest.to_owned()
    };
    if lines.len() > PASTE_ASK_ABOVE {
        Paste::Ask(lines, rest)
    } else {
        Paste::Send(lines, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Action> {
        action(KeyEvent::new(code, modifiers))
    }

    #[test]
    fn emacs_keys_map_to_their_actions() {
        let ctrl = KeyModifiers::CONTROL;
        let alt = KeyModifiers::ALT;
        let none = KeyModifiers::NONE;
        let shift = KeyModifiers::SHIFT;
        assert_eq!(key(KeyCode::Char('A'), shift), Some(Action::Insert('A')));
        assert_eq!(key(KeyCode::Char('a'), ctrl), Some(Action::LineStart));
        assert_eq!(key(KeyCode::Char('k'), ctrl), Some(Action::KillToEnd));
        assert_eq!(
            key(KeyCode::Char('w'), ctrl),
            Some(Action::KillBlankWordBefore)
        );
        assert_eq!(key(KeyCode::Char('y'), ctrl), Some(Action::Yank));
        assert_eq!(key(KeyCode::Char('y'), alt), Some(Action::YankPop));
        assert_eq!(key(KeyCode::Char('r'), ctrl), Some(Action::ReverseSearch));
        assert_eq!(key(KeyCode::Char('g'), ctrl), Some(Action::Cancel));
        assert_eq!(key(KeyCode::Char('t'), ctrl), Some(Action::Transpose));
        assert_eq!(key(KeyCode::Char('7'), ctrl), Some(Action::Undo));
        assert_eq!(key(KeyCode::Char('_'), ctrl), Some(Action::Undo));
        assert_eq!(key(KeyCode::Char('/'), ctrl), Some(Action::Undo));
        assert_eq!(key(KeyCode::Char('d'), alt), Some(Action::KillWordAfter));
        assert_eq!(key(KeyCode::Char('b'), alt), Some(Action::WordLeft));
        assert_eq!(key(KeyCode::Right, ctrl), Some(Action::WordRight));
        assert_eq!(key(KeyCode::Char('p'), ctrl), Some(Action::HistoryPrev));
        assert_eq!(key(KeyCode::Char('c'), ctrl), Some(Action::Interrupt));
        assert_eq!(key(KeyCode::Char('d'), ctrl), Some(Action::EndOfInput));
        assert_eq!(key(KeyCode::Home, none), Some(Action::Home));
        assert_eq!(key(KeyCode::Home, ctrl), Some(Action::ScrollTop));
        assert_eq!(key(KeyCode::End, alt), Some(Action::ScrollBottom));
        assert_eq!(key(KeyCode::Tab, shift), Some(Action::BackTab));
        assert_eq!(key(KeyCode::BackTab, shift), Some(Action::BackTab));
        assert_eq!(key(KeyCode::F(2), none), Some(Action::ToggleNicklist));
        assert_eq!(key(KeyCode::F(5), none), None);
        assert_eq!(key(KeyCode::Char('q'), ctrl), None);
        let mut release = KeyEvent::new(KeyCode::Char('x'), none);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release), None);
    }

    #[test]
    fn a_paste_splits_into_lines_and_asks_above_five() {
        assert_eq!(paste("just text"), Paste::Insert("just text".into()));
        assert_eq!(
            paste("one\r\ntwo\rthree\n\nfour\n"),
            Paste::Send(
                vec!["one".into(), "two".into(), "three".into(), "four".into()],
                String::new()
            )
        );
        let five = "1\n2\n3\n4\n5\n";
        assert!(matches!(paste(five), Paste::Send(lines, _) if lines.len() == 5));
        let six = "1\n2\n3\n4\n5\n6\n";
        assert!(matches!(paste(six), Paste::Ask(lines, _) if lines.len() == 6));
    }

    #[test]
    fn the_unfinished_last_line_of_a_paste_is_not_a_line_to_send() {
        assert_eq!(
            paste("x1\nx2 no newline at end"),
            Paste::Send(vec!["x1".into()], "x2 no newline at end".into())
        );
        assert_eq!(
            paste("a\r\nb\r\n  c "),
            Paste::Send(vec!["a".into(), "b".into()], "  c ".into())
        );
        assert_eq!(paste("\nonly"), Paste::Send(vec![], "only".into()));
        assert_eq!(paste("a\n  "), Paste::Send(vec!["a".into()], String::new()));
        assert_eq!(paste("a\r"), Paste::Send(vec!["a".into()], String::new()));
        // Six complete lines ask; the seventh, unfinished, does not count.
        let seven = "1\n2\n3\n4\n5\n6\n7";
        assert_eq!(
            paste(seven),
            Paste::Ask(
                ["1", "2", "3", "4", "5", "6"].map(String::from).to_vec(),
                "7".into()
            )
        );
        let six = "1\n2\n3\n4\n5\n6";
        assert!(matches!(paste(six), Paste::Send(lines, rest) if lines.len() == 5 && rest == "6"));
    }
}
