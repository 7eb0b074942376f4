//! Showing text from the network safely: [`inert`](crate::inert); an
//! I/O error as a user's reason: [`io_reason`](crate::io_reason).

use std::borrow::Cow;
use std::fmt::Write;

use crate::message::is_unsafe_char;

const ZWJ: char = '\u{200d}';
const BLACK_FLAG: char = '\u{1f3f4}';
const CANCEL_TAG: char = '\u{e007f}';

/// True for the default-ignorable code points (Unicode's
/// `Default_Ignorable_Code_Point`) and the line and paragraph separators:
/// characters a terminal shows as nothing, or as a line break.
pub(crate) fn is_hidden_char(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}'..='\u{1160}' | '\u{17b4}'..='\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}')
}

fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}')
}

fn is_tag(c: char) -> bool {
    matches!(c, '\u{e0020}'..='\u{e007f}')
}

/// A visible character: one that other characters may attach to.
fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !is_unsafe_char(c) && !is_hidden_char(c)
}

/// Which characters of `chars` are hidden ones that real text does not need.
fn neutralised(chars: &[char]) -> Vec<bool> {
    let mut out = vec![false; chars.len()];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = i.checked_sub(1).map(|p| chars[p]);
        // An emoji tag sequence: the flag, tags, the cancel tag.
        if c == BLACK_FLAG {
            let mut j = i + 1;
            while j < chars.len() && is_tag(chars[j]) && chars[j] != CANCEL_TAG {
                j += 1;
            }
            if j > i + 1 && chars.get(j) == Some(&CANCEL_TAG) {
                i = j + 1;
                continue;
            }
        }
        out[i] = if c == ZWJ {
            // After a visible character, or a selector kept after one.
            let after =
                prev.is_some_and(|p| is_visible(p) || (is_variation_selector(p) && !out[i - 1]));
            let next = chars.get(i + 1).copied();
            !(after && next.is_some_and(is_visible))
        } else if is_variation_selector(c) {
            !prev.is_some_and(is_visible)
        } else if matches!(c, '\u{180b}'..='\u{180d}' | '\u{180f}') {
            // After a letter that shows (not a Hangul filler).
            !prev.is_some_and(|p| p.is_alphabetic() && is_visible(p))
        } else {
            is_hidden_char(c) || is_tag(c)
        };
        i += 1;
    }
    out
}

/// True when every byte of `text` is printable ASCII or a tab: looked at
/// in blocks without stopping early inside one, which the compiler can do
/// many bytes at a time.
fn is_printable_ascii(text: &str) -> bool {
    let printable = |b: u8| matches!(b, b' '..=b'~' | b'\t');
    let mut blocks = text.as_bytes().chunks_exact(64);
    blocks
        .by_ref()
        .all(|block| block.iter().fold(true, |all, &b| all & printable(b)))
        && blocks.remainder().iter().all(|&b| printable(b))
}

/// `text` with every character that could act on a terminal, or hide or
/// fake text, made inert. Printable text is returned unchanged without
/// copying.
///
/// The rule, for every text a peer controls (messages, names, reasons):
///
/// - C0 controls (except tab) and DEL are shown in caret notation (`^[`, `^?`);
/// - C1 controls, bidirectional controls, the line and paragraph separators
///   (U+2028, U+2029) and the invisible characters that can hide or fake
///   text are shown as `\u{…}`: the default-ignorable code points of
///   Unicode (soft hyphen, zero-width space and joiners, word joiner and
///   invisible operators, byte-order mark, Hangul fillers, the tag block…);
/// - kept as they are, because real text needs them: a zero-width joiner
///   between two visible characters (emoji sequences such as 👨‍👩‍👧), variation
///   selectors after a visible character (❤️), Mongolian free variation
///   selectors after a letter, and the tag characters of an emoji tag
///   sequence (a black flag U+1F3F4, tags, and the cancel tag U+E007F:
///   the flags of England, Scotland, Wales).
///
/// ```
/// assert_eq!(imchat_core::inert("hi\x1b[2Jthere"), "hi^[[2Jthere");
/// assert_eq!(imchat_core::inert("a\u{202e}b"), "a\\u{202e}b");
/// assert_eq!(imchat_core::inert("line1\u{2028}<bob> hi"), "line1\\u{2028}<bob> hi");
/// assert_eq!(imchat_core::inert("tab\tok"), "tab\tok");
/// ```
#[must_use]
pub fn inert(text: &str) -> Cow<'_, str> {
    // The common case, printable ASCII (and tabs), without decoding.
    if is_printable_ascii(text) {
        return Cow::Borrowed(text);
    }
    let suspect = |c: char| {
        if c.is_ascii() {
            c != '\t' && c.is_ascii_control()
        } else {
            is_unsafe_char(c) || is_hidden_char(c) || is_tag(c)
        }
    };
    if !text.chars().any(suspect) {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let hidden = neutralised(&chars);
    let mut out = String::with_capacity(text.len() + 8);
    for (&c, hide) in chars.iter().zip(hidden) {
        match c {
            '\t' => out.push('\t'),
            '\0'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\x7f' => out.push_str("^?"),
            c if is_unsafe_char(c) || hide => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` with each character that [`inert`] shows as `\u{…}` (C1 and
/// other controls, bidirectional controls, the line and paragraph
/// separators, and the hidden characters by the same rule: the
/// default-ignorable code points, but for the joiners, selectors and tags
/// real text needs) replaced by what `escape` writes for it; everything
/// else as it is. For an output with escapes of its own: the client's JSON
/// lines write them as `\uXXXX`, which a program reads as the character.
pub fn escape_hidden(text: &str, mut escape: impl FnMut(&mut String, char)) -> Cow<'_, str> {
    let suspect = |c: char| !c.is_ascii() || c.is_ascii_control();
    if !text.chars().any(suspect) {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let hidden = neutralised(&chars);
    if !chars
        .iter()
        .zip(&hidden)
        .any(|(&c, &hide)| hide || is_unsafe_char(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (&c, hide) in chars.iter().zip(hidden) {
        if hide || is_unsafe_char(c) {
            escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// An `io::Error` as a short lowercase reason for a user's one line,
/// without the "(os error N)" tail: "no such file or directory".
#[must_use]
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text
        .find(" (os error ")
        .map_or(text.as_str(), |i| &text[..i]);
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::{escape_hidden, inert};

    #[test]
    fn escape_hidden_takes_what_inert_shows_as_escapes() {
        let mark = |out: &mut String, c: char| out.push_str(&format!("<{:x}>", u32::from(c)));
        let cases = [
            ("plain", "plain"),
            (
                "zw\u{200b}nj\u{200c}wj\u{2060}bom\u{feff}",
                "zw<200b>nj<200c>wj<2060>bom<feff>",
            ),
            ("tag\u{e0001}\u{e0041}\u{e007f}", "tag<e0001><e0041><e007f>"),
            ("c1\u{9b} rlo\u{202e}", "c1<9b> rlo<202e>"),
            // What real text needs stays: an emoji sequence, a flag.
            ("👨\u{200d}👩", "👨\u{200d}👩"),
            (
                "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}",
                "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(escape_hidden(input, mark), want, "{input:?}");
        }
    }

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

    #[test]
    fn invisible_and_line_breaking_characters_are_shown() {
        let cases = [
            ("line1\u{2028}<alice> fake", "line1\\u{2028}<alice> fake"),
            ("para\u{2029}x", "para\\u{2029}x"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("\u{feff}bom", "\\u{feff}bom"),
            ("soft\u{00ad}hyphen", "soft\\u{00ad}hyphen"),
            ("word\u{2060}joiner", "word\\u{2060}joiner"),
            ("hangul\u{3164}filler", "hangul\\u{3164}filler"),
            // ASCII smuggled in tag characters: "hi" as tags.
            ("a\u{e0068}\u{e0069}", "a\\u{e0068}\\u{e0069}"),
            // A joiner with nothing visible on one side.
            ("\u{200d}x", "\\u{200d}x"),
            ("x\u{200d}", "x\\u{200d}"),
            ("x \u{200d} y", "x \\u{200d} y"),
            // A variation selector alone.
            ("\u{fe0f}", "\\u{fe0f}"),
            // A flag's tags without the flag, or without the cancel tag.
            (
                "\u{e0067}\u{e0062}\u{e007f}",
                "\\u{e0067}\\u{e0062}\\u{e007f}",
            ),
            (
                "\u{1f3f4}\u{e0067}\u{e0062}",
                "\u{1f3f4}\\u{e0067}\\u{e0062}",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(inert(input), want, "{input:?}");
        }
    }

    #[test]
    fn real_text_keeps_its_joiners_and_selectors() {
        for text in [
            "family 👨\u{200d}👩\u{200d}👧 here",
            "heart ❤\u{fe0f}",
            "rainbow 🏳\u{fe0f}\u{200d}🌈",
            // England: black flag, tags g b e n g, cancel tag.
            "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f} flag",
            "ᠠ\u{180b}ᠢ",
        ] {
            assert_eq!(inert(text), text, "{text:?}");
        }
    }

    #[test]
    fn printable_ascii_is_borrowed_and_its_edges_are_escaped() {
        use std::borrow::Cow;
        let printable: String = (' '..='~').chain(['\t']).collect();
        assert!(matches!(inert(&printable), Cow::Borrowed(_)));
        // In a block of 64 bytes, or in what is left after the blocks.
        let long = printable.repeat(3);
        assert!(matches!(inert(&long), Cow::Borrowed(_)));
        for at in [0, 63, 64, 150, long.len() - 1] {
            let mut bytes = long.clone().into_bytes();
            bytes[at] = 0x7f;
            let text = String::from_utf8(bytes).unwrap();
            assert_eq!(inert(&text), text.replace('\x7f', "^?"), "at {at}");
        }
        assert!(matches!(inert(""), Cow::Borrowed(_)));
        assert!(matches!(inert("zoë\tok"), Cow::Borrowed(_)));
        let cases = [
            ("ascii\x7f", "ascii^?"),
            ("\x1bx", "^[x"),
            ("\x1f~", "^_~"),
            ("\0 ", "^@ "),
            ("x\u{80}", "x\\u{0080}"),
            ("x\u{200b}", "x\\u{200b}"),
            ("plain words then\u{e0041}", "plain words then\\u{e0041}"),
        ];
        for (input, want) in cases {
            assert_eq!(inert(input), want, "{input:?}");
        }
    }

    #[test]
    fn a_selector_after_an_invisible_letter_is_shown_too() {
        // A Hangul filler is a letter that shows as nothing: what follows
        // it has nothing to attach to.
        assert_eq!(inert("\u{3164}\u{180b}"), "\\u{3164}\\u{180b}");
        assert_eq!(inert("\u{3164}\u{fe0f}"), "\\u{3164}\\u{fe0f}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn io_reasons_are_short_and_lowercase() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(super::io_reason(&e), "no such file or directory");
        let e = std::io::Error::from_raw_os_error(17);
        assert_eq!(super::io_reason(&e), "file exists");
    }
}
