//! Showing text from the network safely.

use std::borrow::Cow;
use std::fmt::Write;

use crate::message::is_unsafe_char;

/// `text` with every character that could act on a terminal made inert:
/// C0 controls (except tab) and DEL in caret notation (`^[`, `^?`), C1
/// controls and bidirectional controls as `\u{…}`. Printable text is
/// returned unchanged without copying.
///
/// ```
/// assert_eq!(imchat_core::inert("hi\x1b[2Jthere"), "hi^[[2Jthere");
/// assert_eq!(imchat_core::inert("a\u{202e}b"), "a\\u{202e}b");
/// assert_eq!(imchat_core::inert("tab\tok"), "tab\tok");
/// ```
pub fn inert(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\t' && is_unsafe_char(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push('\t'),
            '\0'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\x7f' => out.push_str("^?"),
            c if is_unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn control_and_bidi_characters_are_neutralised() {
        let cases = [
            ("plain", "plain"),
            ("bell\x07", "bell^G"),
            ("\x1b]0;title\x07", "^[]0;title^G"),
            ("cr\rlf\n", "cr^Mlf^J"),
            ("del\x7f", "del^?"),
            ("c1\u{9b}31m", "c1\\u{009b}31m"),
            ("rlo\u{202e}txt", "rlo\\u{202e}txt"),
            ("iso\u{2066}x", "iso\\u{2066}x"),
            ("zoë 山田\t!", "zoë 山田\t!"),
        ];
        for (input, want) in cases {
            assert_eq!(inert(input), want, "{input:?}");
        }
    }
}
