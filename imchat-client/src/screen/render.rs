//! Layout and drawing: the chat pane (with the nick list), the transfers
//! area, the status line and the input, drawn from the [`Model`] each frame.

use std::borrow::Cow;
use std::ops::Range;

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::model::{Model, Shown};
use crate::view::{Direction, Entry, TransferView};

/// Most rows the input grows to.
const INPUT_ROWS: u16 = 3;
/// Most rows the status takes: one, or more for the question a long paste
/// asks, which wraps (its end says which keys answer it).
const STATUS_ROWS: u16 = 3;
/// Most rows of the transfers area.
const TRANSFER_ROWS: usize = 5;
/// A tab in a text moves it on to the next multiple of this many columns
/// from the text's start, as a terminal's tab stops do.
const TAB_STOP: usize = 8;
/// The nick list's width, its border included.
const NICKLIST_WIDTH: u16 = 16;
/// Narrower than this, the nick list stays hidden.
const NICKLIST_MIN_TERMINAL: u16 = 2 * NICKLIST_WIDTH;

/// The nick colours: a name always gets the same one.
const PALETTE: [Color; 12] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
];

/// The colour of `name`: FNV-1a of its lowercase form into the palette.
pub fn nick_color(name: &str) -> Color {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.to_lowercase().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    PALETTE[hash as usize % PALETTE.len()]
}

/// The columns a grapheme takes, as the terminal (and ratatui) draws it:
/// graphemes with control characters are not drawn.
#[inline]
pub fn grapheme_width(g: &str) -> usize {
    if let [byte] = g.as_bytes() {
        usize::from(!byte.is_ascii_control())
    } else {
        longer_grapheme_width(g)
    }
}

/// [`grapheme_width`] of a grapheme of more than one byte.
fn longer_grapheme_width(g: &str) -> usize {
    if g.contains(char::is_control) {
        0
    } else {
        g.width()
    }
}

/// The columns a text takes.
pub fn text_width(text: &str) -> usize {
    Graphemes::new(text).map(|(_, g)| grapheme_width(g)).sum()
}

/// A column of an expanded tab: to the wrapping a blank, drawn as one,
/// but where a row ends at a blank, the tab columns that follow it go
/// with it, so that a tab does not carry what is left of it onto the next
/// row. A control character, that `inert` never leaves in a text.
const TAB_BLANK: &str = "\x1f";

/// The columns a grapheme of laid-out text takes ([`grapheme_width`],
/// and one for a [`TAB_BLANK`]), and whether it is a blank.
#[inline]
fn cell_width(g: &str) -> (usize, bool) {
    match g {
        " " => (1, true),
        TAB_BLANK => (1, true),
        _ => (grapheme_width(g), false),
    }
}

/// `text` with each tab expanded to the [`TAB_BLANK`]s that reach the
/// next tab stop (every [`TAB_STOP`] columns from the text's start). A
/// tab is the one control character a chat text keeps (`inert` leaves
/// it), and the screen does not draw control characters: unexpanded,
/// `tab\there` would show as `tabhere`. As blanks, the wrapping counts
/// them and may break there.
fn expand_tabs(text: &str) -> Cow<'_, str> {
    if !text.contains('\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + TAB_STOP);
    let mut col = 0;
    // A tab is a grapheme of its own (Unicode breaks around controls).
    for (_, g) in Graphemes::new(text) {
        if g == "\t" {
            let blanks = TAB_STOP - col % TAB_STOP;
            out.extend(std::iter::repeat_n(TAB_BLANK, blanks));
            col += blanks;
        } else {
            out.push_str(g);
            col += grapheme_width(g);
        }
    }
    Cow::Owned(out)
}

/// `text` with every zero-width joiner that joins nothing shown as
/// `\u{200d}`. `inert` keeps a joiner between two visible characters, for
/// emoji sequences (👩‍💻); but where Unicode's grapheme rules (UAX #29)
/// do not make the two one cluster (`a`, joiner, `b`), terminals differ on
/// the width they give it (tmux draws `a` and `b` in one cell), and the
/// screen and the terminal then disagree on where each cell is. Such a
/// joiner ends the cluster of the character before it.
fn loose_joiners(text: &str) -> Cow<'_, str> {
    const ZWJ: char = '\u{200d}';
    if !text.contains(ZWJ) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for (_, g) in Graphemes::new(text) {
        match g.strip_suffix(ZWJ) {
            Some(base) => {
                out.push_str(base);
                out.push_str("\\u{200d}");
            }
            None => out.push_str(g),
        }
    }
    Cow::Owned(out)
}

/// The parts of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub chat: Rect,
    pub nicklist: Option<Rect>,
    pub transfers: Rect,
    pub status: Rect,
    pub input: Rect,
}

/// Splits `area`: the input takes 1 to 3 rows (`input_rows` wanted), the
/// status 1 to 3 (`status_rows` wanted), the transfers what they need; the
/// chat the rest, and at least one row whenever there are two.
pub fn areas(
    area: Rect,
    input_rows: u16,
    status_rows: u16,
    transfer_rows: u16,
    nicklist: bool,
) -> Areas {
    let mut rest = area.height;
    let mut take = |want: u16| {
        let got = want.min(rest);
        rest -= got;
        got
    };
    let input_first = take(1);
    let chat_first = take(1);
    let status = take(1);
    let status = status + take(status_rows.clamp(1, STATUS_ROWS) - 1);
    let input = input_first + take(input_rows.clamp(1, INPUT_ROWS) - 1);
    let transfers = take(transfer_rows);
    let chat = chat_first + take(u16::MAX);
    let mut y = area.y;
    let mut next = |h: u16| {
        let r = Rect::new(area.x, y, area.width, h);
        y += h;
        r
    };
    let mut chat = next(chat);
    let transfers = next(transfers);
    let status = next(status);
    let input = next(input);
    let nicklist = if nicklist && area.width >= NICKLIST_MIN_TERMINAL && chat.height > 0 {
        chat.width -= NICKLIST_WIDTH;
        Some(Rect::new(
            chat.x + chat.width,
            chat.y,
            NICKLIST_WIDTH,
            chat.height,
        ))
    } else {
        None
    };
    Areas {
        chat,
        nicklist,
        transfers,
        status,
        input,
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, model: &mut Model) {
    let area = frame.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    // The status line fits its text to this width (a resize just seen).
    model.set_width(area.width);
    let prompt = model.prompt();
    let (input, input_cursor) = model.shown_input();
    let (input_lines, cursor) = input_rows(&prompt, &input, input_cursor, area.width);
    // The status is cut at the right; the question of a long paste wraps,
    // whole, since its end says how to answer it. Its height comes before
    // the layout, its text after the fit: the count of new lines below
    // the view needs the scroll kept within the chat (scrolled to the top
    // while old lines are dropped, it counted the rows on the screen).
    let question = model.status_asks().then(|| {
        Wrapped::new(
            vec![(Cow::Owned(model.status_line()), Style::new())],
            usize::from(area.width),
            0,
        )
        .lines()
    });
    let a = areas(
        area,
        u16::try_from(input_lines.len()).unwrap_or(u16::MAX),
        question
            .as_ref()
            .map_or(1, |lines| u16::try_from(lines.len()).unwrap_or(u16::MAX)),
        u16::try_from(transfer_rows_wanted(model)).unwrap_or(u16::MAX),
        model.nicklist_shown(area.width),
    );
    let transfer_lines = transfer_rows(model, area.width, usize::from(a.transfers.height));
    model.fit(area.width, a.chat.width, a.chat.height);
    // Cut with `…`, so that a cut line is not taken for all there is.
    let status_lines = question.unwrap_or_else(|| {
        vec![Line::from(ellipsized(
            &model.status_line(),
            usize::from(area.width),
        ))]
    });

    frame.render_widget(Paragraph::new(chat_rows(model, a.chat)), a.chat);
    if let Some(list) = a.nicklist {
        frame.render_widget(Paragraph::new(nicklist_rows(model, list)), list);
    }
    frame.render_widget(Paragraph::new(transfer_lines), a.transfers);
    let status = Paragraph::new(status_lines).style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_widget(status, a.status);

    // The input's rows, scrolled so that the cursor's row shows.
    let shown = usize::from(a.input.height);
    let top = cursor
        .0
        .saturating_sub(shown.saturating_sub(1))
        .min(input_lines.len().saturating_sub(shown));
    let visible: Vec<Line> = input_lines.into_iter().skip(top).take(shown).collect();
    frame.render_widget(Paragraph::new(visible), a.input);
    if shown > 0 {
        let row = u16::try_from(cursor.0 - top).unwrap_or(0);
        let col = u16::try_from(cursor.1).unwrap_or(0);
        if row < a.input.height && col < a.input.width {
            frame.set_cursor_position((a.input.x + col, a.input.y + row));
        }
    }
    if model.no_color {
        for cell in &mut frame.buffer_mut().content {
            cell.set_fg(Color::Reset).set_bg(Color::Reset);
        }
    }
}

/// The chat rows that show in `pane`, from the model's scroll position.
/// Only the rows drawn are made; an entry below them is only counted.
fn chat_rows(model: &Model, pane: Rect) -> Vec<Line<'static>> {
    let height = usize::from(pane.height);
    let mut skip = model.scroll();
    let mut rows: Vec<Line<'static>> = Vec::with_capacity(height);
    if height == 0 {
        return rows;
    }
    for shown in model.entries().iter().rev() {
        if let Some(rows_of_entry) = shown.cached_height(pane.width) {
            if skip >= rows_of_entry {
                skip -= rows_of_entry;
                continue;
            }
        }
        let wrapped = entry_wrapped(shown, model.me(), pane.width);
        let rows_of_entry = wrapped.height();
        shown.rows.set(Some((pane.width, rows_of_entry)));
        if skip >= rows_of_entry {
            skip -= rows_of_entry;
            continue;
        }
        // Its rows from the bottom, less those scrolled past.
        let bottom = rows_of_entry - skip;
        let top = bottom.saturating_sub(height - rows.len());
        skip = 0;
        rows.extend((top..bottom).rev().map(|i| wrapped.line(i)));
        if rows.len() == height {
            break;
        }
    }
    rows.reverse();
    rows
}

/// The nick list: a border, then who is online (ourselves in bold). While
/// the connection is lost it is all dimmed: who was online, not who is.
fn nicklist_rows(model: &Model, area: Rect) -> Vec<Line<'static>> {
    let offline = !model.connected();
    let border = Span::styled("│", Style::new().fg(Color::DarkGray));
    let height = usize::from(area.height);
    let names = model.roster();
    let fits = if names.len() > height {
        height.saturating_sub(1)
    } else {
        names.len()
    };
    // A name longer than the list is wide ends in `…`, so that it is not
    // taken for a shorter one.
    let room = usize::from(area.width).saturating_sub(1);
    let mut rows: Vec<Line<'static>> = names[..fits]
        .iter()
        .map(|name| {
            let mut style = Style::new().fg(nick_color(name));
            if name.eq_ignore_ascii_case(model.me()) {
                style = style.add_modifier(Modifier::BOLD);
            }
            if offline {
                style = style.add_modifier(Modifier::DIM);
            }
            // Away (connection lost, session waiting): dimmed and marked,
            // the mark kept when the name is cut.
            let shown = if model.is_away(name) {
                style = style.add_modifier(Modifier::DIM);
                let mark = " (away)";
                let name = ellipsized(name, room.saturating_sub(mark.len()).max(1));
                ellipsized(&format!("{name}{mark}"), room)
            } else {
                ellipsized(name, room)
            };
            Line::from(vec![border.clone(), Span::styled(shown, style)])
        })
        .collect();
    if fits < names.len() {
        rows.push(Line::from(vec![
            border.clone(),
            Span::raw(format!("+{} more", names.len() - fits)),
        ]));
    }
    while rows.len() < height {
        rows.push(Line::from(border.clone()));
    }
    rows
}

/// The rows the transfers ask for: one each, at most five.
fn transfer_rows_wanted(model: &Model) -> usize {
    model.transfers().len().min(TRANSFER_ROWS)
}

/// One row per running transfer, in the `rows` the screen gives them (at
/// most five): when they do not all fit, the last row says how many more.
fn transfer_rows(model: &Model, width: u16, rows: usize) -> Vec<Line<'static>> {
    let transfers = model.transfers();
    let rows = rows.min(TRANSFER_ROWS);
    let line = |t: &TransferView| transfer_line(t, usize::from(width));
    let lines: Vec<String> = if transfers.len() > rows && rows > 0 {
        let mut lines: Vec<String> = transfers[..rows - 1].iter().map(line).collect();
        lines.push(if rows == 1 {
            format!("{} transfers (/transfers)", transfers.len())
        } else {
            format!("… and {} more (/transfers)", transfers.len() - (rows - 1))
        });
        lines
    } else {
        transfers.iter().take(rows).map(line).collect()
    };
    lines
        .into_iter()
        .map(|line| Line::from(truncate(&line, usize::from(width))))
        .collect()
}

/// The fewest columns a shortened file name keeps in a transfer's row.
const NAME_MIN: usize = 8;

/// A transfer's row in `width` columns. An offer too wide for it keeps
/// how to answer it, cut at the right it lost its `/accept 3`: `or
/// /decline 3` goes first, then the file name is shortened, and with no
/// room for a name, only the answers are left. A running transfer keeps
/// what has moved in sight: its rate and time left go first, then its
/// name is shortened (to no fewer than [`NAME_MIN`] columns).
fn transfer_line(t: &TransferView, width: usize) -> String {
    let line = t.line();
    if text_width(&line) <= width {
        return line;
    }
    if t.direction != Direction::Offer {
        let [head, progress, mut pace] = t.progress_parts(false);
        let fixed = text_width(&head) + text_width(&progress);
        let name_min = text_width(&t.name).min(NAME_MIN);
        if fixed + name_min + text_width(&pace) > width {
            pace.clear();
        }
        let room = width
            .saturating_sub(fixed + text_width(&pace))
            .max(name_min);
        return format!("{head}{}{progress}{pace}", ellipsized(&t.name, room));
    }
    let [head, about, accept, decline] = t.offer_parts();
    let room = width.saturating_sub(text_width(&head) + text_width(&about) + text_width(&accept));
    if room >= 4 {
        format!("{head}{}{about}{accept}", ellipsized(&t.name, room))
    } else {
        format!("{head}{accept}{decline}")
    }
}

/// `text` cut to `width` columns.
/// `text` if it fits in `width` columns, else cut to end in `…` there.
pub fn ellipsized(text: &str, width: usize) -> String {
    if text_width(text) > width {
        format!("{}…", truncate(text, width.saturating_sub(1)))
    } else {
        text.to_owned()
    }
}

fn truncate(text: &str, width: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for g in text.graphemes(true) {
        used += grapheme_width(g);
        if used > width {
            break;
        }
        out.push_str(g);
    }
    out
}

/// The input's rows (prompt, then text, wrapped at `width`) and the
/// cursor's (row, column).
///
/// What the terminal would draw as nothing shows, as in the chat pane and
/// as irssi and weechat show it in their input: a tab as blanks to the
/// next tab stop, a control or hidden character (a pasted zero-width
/// space, a bidirectional control, a lone joiner) inert and reversed
/// (`^A`, `\u{200b}`), a combining mark that starts the text on a dotted
/// circle, so that what is sent is what was seen, and the cursor moves
/// over it visibly.
pub fn input_rows(
    prompt: &str,
    text: &str,
    cursor: usize,
    width: u16,
) -> (Vec<Line<'static>>, (usize, usize)) {
    let width = usize::from(width.max(1));
    let mut rows: Vec<Vec<Span<'static>>> = vec![Vec::new()];
    let (mut row, mut col) = (0, 0);
    let mut at_cursor = None;
    let prompt_style = Style::new().add_modifier(Modifier::BOLD);
    let cells = prompt
        .graphemes(true)
        .map(|g| (g, prompt_style, None))
        .chain(
            text.grapheme_indices(true)
                .map(|(i, g)| (g, Style::new(), Some(i))),
        );
    for (g, style, offset) in cells {
        // An escape is ASCII, a column a character: it may wrap. A tab
        // goes to the next tab stop, or to the end of its row.
        let (pieces, style): (Vec<(Cow<str>, usize)>, Style) = match input_cell(g) {
            InputCell::Text(g) => {
                let w = grapheme_width(&g);
                (vec![(g, w)], style)
            }
            InputCell::Tab => {
                if col >= width {
                    rows.push(Vec::new());
                    (row, col) = (row + 1, 0);
                }
                let w = (TAB_STOP - col % TAB_STOP).min(width - col);
                (vec![(Cow::Owned(" ".repeat(w)), w)], style)
            }
            InputCell::Escaped(escape) => (
                escape
                    .chars()
                    .map(|c| (Cow::Owned(c.to_string()), 1))
                    .collect(),
                style.add_modifier(Modifier::REVERSED),
            ),
        };
        for (n, (piece, w)) in pieces.into_iter().enumerate() {
            if col + w > width && col > 0 {
                rows.push(Vec::new());
                (row, col) = (row + 1, 0);
            }
            if n == 0 && at_cursor.is_none() && offset.is_some_and(|i| i >= cursor) {
                at_cursor = Some((row, col));
            }
            if w > 0 {
                rows[row].push(Span::styled(piece.into_owned(), style));
                col += w;
            }
        }
    }
    let cursor = at_cursor.unwrap_or_else(|| {
        if col >= width {
            rows.push(Vec::new());
            (row + 1, 0)
        } else {
            (row, col)
        }
    });
    (rows.into_iter().map(Line::from).collect(), cursor)
}

/// How the input line draws one grapheme.
enum InputCell<'a> {
    /// As it is, or a mark that starts the text on a dotted circle.
    Text(Cow<'a, str>),
    /// A tab: blanks to the next tab stop.
    Tab,
    /// Made inert (`^A`, `\u{200b}`): the terminal would not draw it.
    Escaped(String),
}

/// How the input line draws `g`, a grapheme: as the chat pane would
/// show it once sent ([`imchat_core::inert`]).
fn input_cell(g: &str) -> InputCell<'_> {
    if g == "\t" {
        return InputCell::Tab;
    }
    // Kept as it is, an emoji sequence may come back as a copy.
    match imchat_core::inert(g) {
        Cow::Owned(escaped) if escaped != g => InputCell::Escaped(escaped),
        // A combining mark with nothing before it to sit on (typed or
        // pasted first) is drawn on a dotted circle, as Unicode shows
        // marks alone: else it takes no column, and the cursor stands
        // still as it moves over it.
        _ if grapheme_width(g) == 0 => InputCell::Text(Cow::Owned(format!("\u{25cc}{g}"))),
        _ => InputCell::Text(Cow::Borrowed(g)),
    }
}

/// An entry's rows at `width` columns: the first with the time and the
/// sender, the others indented under the text.
/// How many rows an entry takes at `width` columns.
pub fn entry_height(shown: &Shown, me: &str, width: u16) -> usize {
    entry_wrapped(shown, me, width).height()
}

/// Where each of an entry's rows at `width` columns ends, as a byte
/// offset into its parts put end to end (the same at every width): what
/// finds a row's text again at another width.
pub fn entry_row_ends(shown: &Shown, me: &str, width: u16) -> Vec<usize> {
    entry_wrapped(shown, me, width)
        .rows
        .iter()
        .map(|row| row.end)
        .collect()
}

/// An entry laid out at `width` columns.
fn entry_wrapped<'a>(shown: &'a Shown, me: &str, width: u16) -> Wrapped<'a> {
    let (parts, indent) = entry_parts(shown, me);
    Wrapped::new(parts, usize::from(width.max(1)), indent)
}

/// A text of an entry as drawn: loose joiners shown, tabs expanded;
/// borrowed when neither is there.
fn shown_text(text: &str) -> Cow<'_, str> {
    match loose_joiners(text) {
        Cow::Borrowed(text) => expand_tabs(text),
        Cow::Owned(text) => Cow::Owned(expand_tabs(&text).into_owned()),
    }
}

/// The styled parts of an entry, and the width of its prefix (what the
/// continuation rows are indented by).
fn entry_parts<'a>(shown: &'a Shown, me: &str) -> (Vec<(Cow<'a, str>, Style)>, usize) {
    let dim = Style::new().add_modifier(Modifier::DIM);
    let magenta = Style::new().fg(Color::Magenta);
    let mut parts = vec![(
        Cow::Owned(format!("{} ", shown.stamp)),
        Style::new().fg(Color::DarkGray),
    )];
    let text_part = |text: &'a str, style: Style| (shown_text(text), style);
    match &shown.entry {
        Entry::Chat(chat) => {
            let history = chat.history;
            let mut nick = Style::new().fg(nick_color(&chat.from));
            if chat.own || chat.from.eq_ignore_ascii_case(me) {
                nick = nick.add_modifier(Modifier::BOLD);
            }
            let text_style = if shown.mention {
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            let marker = match (&chat.to, chat.private, chat.own) {
                (Some(to), _, true) => Some(format!("(to {to})")),
                (_, true, _) => Some("(private)".to_owned()),
                _ => None,
            };
            if chat.action {
                parts.push(("* ".into(), Style::new()));
                parts.push((Cow::Borrowed(chat.from.as_str()), nick));
                parts.push((" ".into(), Style::new()));
                let indent = prefix_width(&parts);
                parts.push(text_part(&chat.text, text_style));
                if let Some(marker) = marker {
                    parts.push((" ".into(), Style::new()));
                    parts.push((Cow::Owned(marker), magenta));
                }
                return (dimmed(parts, history, dim), indent);
            }
            parts.push(("<".into(), Style::new()));
            parts.push((Cow::Borrowed(chat.from.as_str()), nick));
            parts.push(("> ".into(), Style::new()));
            if let Some(marker) = marker {
                parts.push((Cow::Owned(marker), magenta));
                parts.push((" ".into(), Style::new()));
            }
            let indent = prefix_width(&parts);
            parts.push(text_part(&chat.text, text_style));
            (dimmed(parts, history, dim), indent)
        }
        Entry::Notice(text) | Entry::NoticeAt { text, .. } => {
            parts.push(("*** ".into(), dim));
            let indent = prefix_width(&parts);
            parts.push(text_part(text, dim));
            (parts, indent)
        }
        Entry::Error(text) => {
            let red = Style::new().fg(Color::Red);
            parts.push(("error: ".into(), red));
            let indent = prefix_width(&parts);
            parts.push(text_part(text, red));
            (parts, indent)
        }
        Entry::Plain(text) => {
            let indent = prefix_width(&parts);
            parts.push(text_part(text, Style::new()));
            (parts, indent)
        }
    }
}

fn prefix_width(parts: &[(Cow<'_, str>, Style)]) -> usize {
    parts.iter().map(|(text, _)| text_width(text)).sum()
}

fn dimmed(
    parts: Vec<(Cow<'_, str>, Style)>,
    history: bool,
    dim: Style,
) -> Vec<(Cow<'_, str>, Style)> {
    if !history {
        return parts;
    }
    parts.into_iter().map(|(t, s)| (t, s.patch(dim))).collect()
}

/// The graphemes of a text with their byte offsets, as
/// `text.grapheme_indices(true)` gives them, but a printable ASCII byte
/// that another ASCII byte follows is taken alone without asking the
/// segmenter (nothing joins it to its neighbours then): a long chat
/// text is mostly such bytes.
struct Graphemes<'a> {
    text: &'a str,
    at: usize,
    /// The longest inert escape (`\u{00ad}`) taken as one cell: one that
    /// fits a row is kept whole on it when the text wraps; 0 for none.
    escapes: usize,
}

impl<'a> Graphemes<'a> {
    fn new(text: &'a str) -> Self {
        Graphemes {
            text,
            at: 0,
            escapes: 0,
        }
    }

    /// The graphemes of `text`, an inert escape of at most `longest`
    /// bytes (one column each) taken as one, as the wrapping breaks it
    /// only where it cannot fit on a row.
    fn keeping_escapes(text: &'a str, longest: usize) -> Self {
        Graphemes {
            escapes: longest,
            ..Graphemes::new(text)
        }
    }
}

/// The length of the inert escape `text` starts with (`\u{00ad}`, as
/// `inert` writes a character it does not show), if it does.
fn escape_len(text: &str) -> Option<usize> {
    let hex = text.strip_prefix("\\u{")?;
    let digits = hex.bytes().take_while(u8::is_ascii_hexdigit).count();
    if !(1..=6).contains(&digits) {
        return None;
    }
    hex[digits..].starts_with('}').then_some(4 + digits)
}

impl<'a> Iterator for Graphemes<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        let bytes = self.text.as_bytes();
        let at = self.at;
        let &b = bytes.get(at)?;
        if b == b'\\' && self.escapes > 0 {
            let rest = &self.text[at..];
            // Not when what follows joins its `}` (a combining mark
            // the segmenter draws with it).
            let whole = |&len: &usize| {
                len <= self.escapes && rest[len - 1..].graphemes(true).next() == Some("}")
            };
            if let Some(len) = escape_len(rest).filter(whole) {
                self.at = at + len;
                return Some((at, &rest[..len]));
            }
        }
        let alone = b.is_ascii() && b != b'\r' && bytes.get(at + 1).is_none_or(u8::is_ascii);
        let len = if alone {
            1
        } else {
            // From a grapheme boundary, the segmenter finds the same
            // next boundary in the rest of the text as in the whole.
            self.text[at..].graphemes(true).next().map_or(1, str::len)
        };
        self.at = at + len;
        Some((at, &self.text[at..at + len]))
    }
}

/// Styled text laid out in rows: each row a range of byte offsets into
/// the parts' texts put end to end.
struct Wrapped<'a> {
    parts: Vec<(Cow<'a, str>, Style)>,
    indent: usize,
    rows: Vec<Range<usize>>,
}

impl<'a> Wrapped<'a> {
    /// Wraps styled text at `width` columns, breaking after a blank of
    /// the text where one is on the row (the prefix of `indent` columns is
    /// never broken there), else between graphemes. Continuation rows
    /// start with `indent` blanks, or none when that would leave less than
    /// half the row. Only where the rows start and end is worked out here
    /// ([`Wrapped::line`] makes a row's spans), in one pass.
    fn new(parts: Vec<(Cow<'a, str>, Style)>, width: usize, indent: usize) -> Self {
        let width = width.max(1);
        let indent = if indent * 2 <= width { indent } else { 0 };
        let mut rows = Vec::new();
        // The current row: where it starts, the columns its cells take
        // (every cell takes one or more, so none means an empty row), and
        // where it may break: just after its last blank, with the columns
        // up to there.
        let mut start = 0;
        let mut used = 0;
        let mut last_break: Option<(usize, usize)> = None;
        // The columns of all the cells before (where blanks start to break).
        let mut col = 0;
        let mut base = 0;
        // Just after a row ended at a blank: the tab blanks that follow
        // it are swallowed with it.
        let mut swallowing = false;
        for (text, _) in &parts {
            for (i, g) in Graphemes::keeping_escapes(text, width - indent) {
                let (w, blank) = cell_width(g);
                if w == 0 {
                    continue;
                }
                let at = base + i;
                if swallowing && g == TAB_BLANK {
                    col += w;
                    start = at + g.len();
                    continue;
                }
                swallowing = false;
                let breaks = blank && col >= indent;
                col += w;
                let room = if rows.is_empty() {
                    width
                } else {
                    width - indent
                };
                if used + w > room && used > 0 {
                    if breaks {
                        // A blank at the break is swallowed.
                        rows.push(start..at);
                        start = at + g.len();
                        used = 0;
                        last_break = None;
                        swallowing = true;
                        continue;
                    }
                    if let Some((after, before)) = last_break.take() {
                        rows.push(start..after);
                        start = after;
                        used -= before;
                    }
                    if used + w > width - indent && used > 0 {
                        rows.push(start..at);
                        start = at;
                        used = 0;
                    }
                }
                used += w;
                if breaks {
                    last_break = Some((at + g.len(), used));
                }
            }
            base += text.len();
        }
        if used > 0 || rows.is_empty() {
            rows.push(start..base);
        }
        Wrapped {
            parts,
            indent,
            rows,
        }
    }

    /// How many rows.
    fn height(&self) -> usize {
        self.rows.len()
    }

    /// Row `i` (< [`Wrapped::height`]): its indent, then its cells, in
    /// one span per run of a style.
    fn line(&self, i: usize) -> Line<'static> {
        let range = &self.rows[i];
        let mut spans: Vec<Span<'static>> = Vec::new();
        if i > 0 && self.indent > 0 {
            spans.push(Span::raw(" ".repeat(self.indent)));
        }
        let mut base = 0;
        for (text, style) in &self.parts {
            let end = base + text.len();
            if end > range.start && base < range.end {
                let from = range.start.max(base) - base;
                let to = range.end.min(end) - base;
                for (_, g) in Graphemes::new(&text[from..to]) {
                    let g = match cell_width(g) {
                        (0, _) => continue,
                        (_, true) => " ",
                        _ => g,
                    };
                    match spans.last_mut() {
                        Some(last) if last.style == *style => {
                            last.content.to_mut().push_str(g);
                        }
                        _ => spans.push(Span::styled(g.to_owned(), *style)),
                    }
                }
            }
            base = end;
            if base >= range.end {
                break;
            }
        }
        Line::from(spans)
    }

    /// All the rows.
    fn lines(&self) -> Vec<Line<'static>> {
        (0..self.height()).map(|i| self.line(i)).collect()
    }
}

/// The wrapping as it was, one cell per grapheme, that [`Wrapped`] must
/// give the same rows as.
///
/// Wraps styled text at `width` columns, breaking after a blank of the
/// text where one is on the row (the prefix of `indent` columns is never
/// broken there), else between graphemes. Continuation rows start with
/// `indent` blanks, or none when that would leave less than half the row.
/// The blanks of a tab that follow a blank where a row ends go with it.
#[cfg(test)]
fn wrap_reference(
    parts: &[(Cow<'_, str>, Style)],
    width: usize,
    indent: usize,
) -> Vec<Line<'static>> {
    struct Cell<'a> {
        g: &'a str,
        style: Style,
        width: usize,
        breaks: bool,
        blank: bool,
    }
    let indent = if indent * 2 <= width { indent } else { 0 };
    let mut col = 0;
    let mut cells = Vec::new();
    for (text, style) in parts {
        for (_, g) in Graphemes::keeping_escapes(text, width - indent) {
            let (w, blank) = cell_width(g);
            if w == 0 {
                continue;
            }
            cells.push(Cell {
                g,
                style: *style,
                width: w,
                breaks: blank && col >= indent,
                blank,
            });
            col += w;
        }
    }

    let mut rows: Vec<Vec<Cell>> = Vec::new();
    let mut row: Vec<Cell> = Vec::new();
    let mut used = 0;
    let mut swallowing = false;
    for cell in cells {
        if swallowing && cell.g == TAB_BLANK {
            continue;
        }
        swallowing = false;
        let room = if rows.is_empty() {
            width
        } else {
            width - indent
        };
        if used + cell.width > room && !row.is_empty() {
            if cell.breaks {
                // A blank at the break is swallowed.
                rows.push(std::mem::take(&mut row));
                used = 0;
                swallowing = true;
                continue;
            }
            if let Some(at) = row.iter().rposition(|c| c.breaks) {
                let tail = row.split_off(at + 1);
                rows.push(std::mem::replace(&mut row, tail));
                used = row.iter().map(|c| c.width).sum();
            }
            let room = width - indent;
            if used + cell.width > room && !row.is_empty() {
                rows.push(std::mem::take(&mut row));
                used = 0;
            }
        }
        used += cell.width;
        row.push(cell);
    }
    if !row.is_empty() || rows.is_empty() {
        rows.push(row);
    }

    rows.into_iter()
        .enumerate()
        .map(|(i, cells)| {
            let mut spans: Vec<Span<'static>> = Vec::new();
            if i > 0 && indent > 0 {
                spans.push(Span::raw(" ".repeat(indent)));
            }
            for cell in cells {
                let g = if cell.blank { " " } else { cell.g };
                match spans.last_mut() {
                    Some(last) if last.style == cell.style => {
                        last.content.to_mut().push_str(g);
                    }
                    _ => spans.push(Span::styled(g.to_owned(), cell.style)),
                }
            }
            Line::from(spans)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::keys::Action;
    use crate::screen::testing::*;
    use crate::view::{Link, Status};
    use std::time::Instant;

    const FAMILY: &str = "👨\u{200d}👩\u{200d}👧";

    /// Pieces of text that Unicode's grapheme rules or the widths make
    /// tricky, for texts made up of them.
    const TRICKY: [&str; 27] = [
        " ",
        "\x1f\x1f\x1f",
        " ",
        "  ",
        "a",
        "bc",
        "word",
        "日",
        "本語",
        "👍",
        FAMILY,
        "e\u{301}",
        "\u{301}",
        "\r\n",
        "\r",
        "\n",
        "\t",
        "\u{200b}",
        "\u{1f1fa}\u{1f1f8}",
        "\u{1f1eb}",
        "\u{1100}",
        "\u{1161}",
        "\u{915}\u{94d}",
        "\u{937}",
        "\u{fe0f}",
        "x\u{200d}",
        "\u{200d}",
    ];

    fn tricky_text(rng: &mut fastrand::Rng, pieces: usize) -> String {
        (0..pieces)
            .map(|_| TRICKY[rng.usize(..TRICKY.len())])
            .collect()
    }

    /// Ctrl-R shows its search in the input area, readline's way, the
    /// cursor on the match; the prompt comes back when it ends.
    #[test]
    fn a_history_search_shows_in_the_input_area() {
        let history = ["/msg bob fir tree", "other"].map(String::from).to_vec();
        let mut m = Model::new("alice", Vec::new(), history)
            .with_clock(noon)
            .with_today(today);
        let now = Instant::now();
        m.handle(Action::ReverseSearch, now);
        for c in "fir".chars() {
            m.handle(Action::Insert(c), now);
        }
        let mut t = terminal(60, 6);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[5], "(reverse-i-search)'fir': /msg bob fir tree");
        let column = "(reverse-i-search)'fir': /msg bob ".len() as u16;
        t.backend_mut().assert_cursor_position((column, 5));
        m.handle(Action::Escape, now);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[5], "alice>");
    }

    #[test]
    fn graphemes_are_those_of_the_segmenter() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut texts: Vec<String> = TRICKY.iter().map(|t| (*t).to_owned()).collect();
        texts.push(TRICKY.concat());
        texts.push("\u{1f1fa}\u{1f1f8}\u{1f1eb}\u{1f1f7}\u{1f1e9}a".into());
        texts.extend((0..2000).map(|_| tricky_text(&mut rng, 12)));
        for text in &texts {
            let ours: Vec<(usize, &str)> = Graphemes::new(text).collect();
            let theirs: Vec<(usize, &str)> = text.grapheme_indices(true).collect();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    /// The chat rows as they were made: every row of every entry drawn,
    /// the reference wrapping.
    fn chat_rows_reference(model: &Model, pane: Rect) -> Vec<Line<'static>> {
        let height = usize::from(pane.height);
        let mut skip = model.scroll();
        let mut rows: Vec<Line<'static>> = Vec::with_capacity(height);
        'entries: for shown in model.entries().iter().rev() {
            let (parts, indent) = entry_parts(shown, model.me());
            let all = wrap_reference(&parts, usize::from(pane.width.max(1)), indent);
            for row in all.into_iter().rev() {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                rows.push(row);
                if rows.len() == height {
                    break 'entries;
                }
            }
        }
        rows.reverse();
        rows
    }

    #[test]
    fn chat_rows_at_any_scroll_are_those_of_the_reference() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut m = model();
        for i in 0..40 {
            let pieces = [0, 1, 5, 40, 200][i % 5];
            let text = tricky_text(&mut rng, pieces);
            m.show(Entry::Chat(chat("bob", &text)));
            m.show(Entry::Notice(format!("line {i}")));
        }
        for (width, height) in [(30, 10), (12, 7), (80, 3), (5, 9), (1, 4)] {
            let mut t = terminal(width, height + 2);
            for _ in 0..25 {
                draw_rows(&mut t, &mut m);
                let pane = Rect::new(0, 0, width, height);
                assert_eq!(
                    chat_rows(&m, pane),
                    chat_rows_reference(&m, pane),
                    "{width}x{height} at {}",
                    m.scroll()
                );
                m.handle(Action::PageUp, Instant::now());
            }
            m.handle(Action::ScrollBottom, Instant::now());
        }
    }

    /// A long word of inert escapes (`\u{00ad}` for each soft hyphen)
    /// breaks between escapes, not inside one, where one fits a row.
    #[test]
    fn a_wrapped_escape_stays_whole_on_its_row() {
        let text = format!("x{}y", imchat_core::inert(&"\u{00ad}".repeat(12)));
        let escape = "\\u{00ad}";
        // Where its 8 columns fit the rows past the first's indent.
        for (indent, narrowest) in [(0, 8), (3, 11)] {
            for width in narrowest..=30 {
                let parts = vec![(Cow::Owned(text.clone()), Style::new())];
                let rows = Wrapped::new(parts, width, indent).lines();
                let rows: Vec<String> = rows.iter().map(ToString::to_string).collect();
                assert_eq!(rows.concat().replace(' ', ""), text, "at {width}");
                for row in &rows {
                    let rest = row.replace(escape, "");
                    assert!(
                        rest.trim().chars().all(|c| c == 'x' || c == 'y'),
                        "at {width}, {indent}: {rows:?}"
                    );
                    assert!(text_width(row) <= width, "at {width}: {rows:?}");
                }
            }
        }
        // Narrower than an escape, it is broken as any word is.
        let parts = vec![(Cow::Owned(text.clone()), Style::new())];
        let rows = Wrapped::new(parts, 5, 0).lines();
        assert!(rows.iter().all(|r| text_width(&r.to_string()) <= 5));
        assert_eq!(
            rows.iter().map(ToString::to_string).collect::<String>(),
            text
        );
    }

    #[test]
    fn rows_are_those_of_the_reference_wrapping() {
        let styles = [
            Style::new(),
            Style::new().fg(Color::Red),
            Style::new().add_modifier(Modifier::BOLD),
        ];
        let check = |parts: &[(Cow<'_, str>, Style)], width: usize, indent: usize| {
            let want = wrap_reference(parts, width.max(1), indent);
            let wrapped = Wrapped::new(parts.to_vec(), width, indent);
            assert_eq!(
                wrapped.height(),
                want.len(),
                "{parts:?} at {width}, {indent}"
            );
            assert_eq!(wrapped.lines(), want, "{parts:?} at {width}, {indent}");
        };
        let fixed = [
            "the quick brown fox jumps over the lazy dog",
            "x x x x x x x x x x x x x x x x x x x x",
            "a  b   c    d     e      f",
            "     leading and trailing blanks     ",
            "日本語のテキストと English words mixed 👍 here",
            "wide 日日日日日日日日日日日日 at the edge",
            "family 👨\u{200d}👩\u{200d}👧 and flags \u{1f1fa}\u{1f1f8}\u{1f1eb}\u{1f1f7}",
            "zero\u{200b}width e\u{301}\u{301} marks",
            "soft\\u{ad}hy\\u{00ad}\\u{00ad}phen \\u{202e}\\u{} \\u{1234567} \\u{10ffff}",
            "ab\\u{fe0f}\u{301}\u{301}cd\\u{00ad}e\u{301}",
            "",
            " ",
        ];
        for text in fixed {
            for width in 1..=24 {
                for indent in [0, 1, 3, 6, 12, 30] {
                    let parts = [
                        (Cow::Borrowed("12:00 "), styles[1]),
                        (Cow::Borrowed("<bob> "), styles[2]),
                        (Cow::Borrowed(text), styles[0]),
                    ];
                    check(&parts, width, indent);
                    check(&parts[2..], width, indent);
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..3000 {
            let parts: Vec<(Cow<'_, str>, Style)> = (0..rng.usize(1..=4))
                .map(|_| {
                    let pieces = rng.usize(0..=20);
                    let text = tricky_text(&mut rng, pieces);
                    (Cow::Owned(text), styles[rng.usize(..styles.len())])
                })
                .collect();
            check(&parts, rng.usize(0..=20), rng.usize(0..=12));
        }
    }

    #[test]
    fn long_lines_wrap_at_blanks_under_the_text() {
        let (_, stamp) = when();
        let mut m = model();
        m.show(Entry::Chat(chat(
            "bob",
            "the quick brown fox jumps over the lazy dog",
        )));
        let mut t = terminal(30, 8);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], format!("{stamp} <bob> the quick brown"));
        assert_eq!(rows[1], "            fox jumps over the");
        assert_eq!(rows[2], "            lazy dog");
        assert!(rows.iter().all(|r| text_width(r) <= 30));
    }

    #[test]
    fn a_joiner_that_joins_nothing_is_shown_and_an_emoji_sequence_kept() {
        assert_eq!(loose_joiners("a\u{200d}b"), "a\\u{200d}b");
        assert_eq!(loose_joiners("日\u{200d}本"), "日\\u{200d}本");
        assert_eq!(loose_joiners("a\u{200d}💻"), "a\\u{200d}💻");
        for kept in [
            "coder 👩\u{200d}💻",
            "family 👨\u{200d}👩\u{200d}👧",
            "plain",
        ] {
            assert_eq!(loose_joiners(kept), kept);
        }
        let (_, stamp) = when();
        let mut m = model();
        m.show(Entry::Chat(chat("bob", "a\u{200d}b 日本語")));
        let mut t = terminal(40, 4);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(
            rows[0],
            format!("{stamp} <bob> a\\u{{200d}}b 日本語"),
            "{rows:#?}"
        );
    }

    #[test]
    fn tabs_show_as_blanks_to_the_next_tab_stop() {
        let expanded = |text| expand_tabs(text).replace(TAB_BLANK, " ");
        assert_eq!(expanded("tab\there"), "tab     here");
        assert_eq!(expanded("日本\tx"), "日本    x");
        assert_eq!(expanded("a\t\tb"), format!("a{}b", " ".repeat(15)));
        assert_eq!(expand_tabs("no tab"), "no tab");

        let (_, stamp) = when();
        let mut m = model();
        m.show(Entry::Chat(chat("bob", "tab\there")));
        m.show(Entry::Chat(chat("bob", "one\ttwo\tthree\tfour")));
        let mut t = terminal(30, 8);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], format!("{stamp} <bob> tab     here"), "{rows:#?}");
        // Blanks from a tab count in the wrapping, which may break there.
        assert_eq!(rows[1], format!("{stamp} <bob> one     two"), "{rows:#?}");
        assert_eq!(rows[2], "            three   four", "{rows:#?}");
        assert!(rows.iter().all(|r| text_width(r) <= 30));
        let heights: Vec<usize> = m.entries().iter().map(|e| e.height("alice", 30)).collect();
        assert_eq!(heights, [1, 2], "the rows counted are the rows drawn");
    }

    #[test]
    fn a_tab_at_the_end_of_a_row_does_not_indent_the_next() {
        let (_, stamp) = when();
        let mut m = model();
        // At 30 columns the text has 18 on the first row: the tab starts
        // at its 18th and would take 7 (to the 24th).
        m.show(Entry::Chat(chat(
            "bob",
            &format!("{}\tnext", "x".repeat(17)),
        )));
        // Two tabs, the row ending in the first.
        m.show(Entry::Chat(chat(
            "bob",
            &format!("{}\t\tnext", "y".repeat(15)),
        )));
        // A blank, then a tab, at the end of the row.
        m.show(Entry::Chat(chat(
            "bob",
            &format!("{} \tnext", "z".repeat(17)),
        )));
        // A tab that fits keeps its width, one after a break is drawn.
        m.show(Entry::Chat(chat("bob", "a\tb c d e f g h i j k l\tm")));
        let mut t = terminal(30, 12);
        let rows = draw_rows(&mut t, &mut m);
        let cont = " ".repeat(12);
        assert_eq!(
            rows[..8],
            [
                format!("{stamp} <bob> {}", "x".repeat(17)),
                format!("{cont}next"),
                format!("{stamp} <bob> {}", "y".repeat(15)),
                format!("{cont}next"),
                format!("{stamp} <bob> {}", "z".repeat(17)),
                format!("{cont}next"),
                format!("{stamp} <bob> a       b c d e f"),
                format!("{cont}g h i j k l   m"),
            ],
            "{rows:#?}"
        );
        let heights: Vec<usize> = m.entries().iter().map(|e| e.height("alice", 30)).collect();
        assert_eq!(heights, [2, 2, 2, 2], "the rows counted are the rows drawn");
    }

    #[test]
    fn a_word_longer_than_the_row_breaks_between_graphemes() {
        let mut m = model();
        m.show(Entry::Plain("x".repeat(25)));
        let mut t = terminal(16, 6);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], format!("12:00 {}", "x".repeat(10)));
        assert_eq!(rows[1], format!("      {}", "x".repeat(10)));
        assert_eq!(rows[2], format!("      {}", "x".repeat(5)));
    }

    #[test]
    fn wide_characters_and_emoji_sequences_take_their_width() {
        assert_eq!(text_width(FAMILY), 2);
        assert_eq!(text_width("日本"), 4);
        let mut m = model();
        // 6 + 2·10 columns at 25: nine fit, a wide one is never split.
        m.show(Entry::Plain("日".repeat(10)));
        m.show(Entry::Plain(format!("{FAMILY}x")));
        let mut t = terminal(25, 8);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], format!("12:00 {}", "日".repeat(9)));
        assert_eq!(rows[1], "      日");
        assert_eq!(
            rows[2],
            format!("12:00 {FAMILY}x"),
            "no extra blank after the family"
        );

        // Typed: the cursor stands right after the two columns.
        for c in format!("a{FAMILY}").chars() {
            m.handle(Action::Insert(c), Instant::now());
        }
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[7], format!("alice> a{FAMILY}"));
        t.backend_mut()
            .assert_cursor_position(((text_width("alice> a") + 2) as u16, 7));
        let (_, cursor) = input_rows("> ", &format!("{FAMILY}{FAMILY}"), 0, 4);
        assert_eq!(cursor, (0, 2));
        let (rows, cursor) = input_rows("> ", FAMILY, 0, 3);
        assert_eq!(
            rows.len(),
            2,
            "a sequence that does not fit goes to the next row"
        );
        assert_eq!(cursor, (1, 0));
        let (rows, cursor) = input_rows("> ", FAMILY, FAMILY.len(), 4);
        assert_eq!(
            (rows.len(), cursor),
            (2, (1, 0)),
            "a full row puts the cursor below"
        );
    }

    #[test]
    fn the_status_line_says_who_where_and_how() {
        let mut m = model();
        let mut t = terminal(100, 6);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[4], "[alice] → everyone │ connected to 127.0.0.1:4000");
        assert_eq!(rows[5], "alice>");
        m.set_status(&Status {
            me: "alice".into(),
            target: Some("bob".into()),
            link: Link::Reconnecting {
                reason: "connection lost".into(),
                attempt: 3,
                retry_in: Some(std::time::Duration::from_secs(4)),
            },
            cut_off: false,
        });
        m.transfer(&download(1, "a.bin"));
        m.transfer(&download(2, "b.bin"));
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(
            rows[4],
            "[alice] → bob │ reconnecting in 4s (try 3): connection lost │ 2 transfers"
        );
        assert_eq!(rows[5], "alice→bob>");
        t.backend_mut().assert_cursor_position((11, 5));
        let status = t.backend().buffer()[(0, 4)].modifier;
        assert!(status.contains(Modifier::REVERSED));

        m.set_status(&Status {
            me: "alice".into(),
            target: None,
            link: Link::Reconnecting {
                reason: "refused".into(),
                attempt: 4,
                retry_in: None,
            },
            cut_off: false,
        });
        m.transfer_ended("#2");
        assert_eq!(
            m.status_line(),
            "[alice] → everyone │ reconnecting now (try 4): refused │ 1 transfer"
        );
        m.set_status(&Status {
            me: "alice".into(),
            target: None,
            link: Link::Closed {
                reason: "server shut down".into(),
            },
            cut_off: false,
        });
        m.transfer_ended("#1");
        assert_eq!(
            m.status_line(),
            "[alice] → everyone │ disconnected: server shut down"
        );
        let mut narrow = terminal(20, 4);
        let rows = draw_rows(&mut narrow, &mut m);
        assert_eq!(rows[2], "[alice] → everyone …", "cut at the right, said");
    }

    /// An offer waiting for `/accept` has its row, saying how to answer
    /// it, and the status line counts it apart from the transfers.
    #[test]
    fn an_offer_waiting_has_a_row_and_is_counted_apart() {
        let mut m = model();
        let mut t = terminal(100, 8);
        m.transfer(&download(1, "big.bin"));
        m.transfer(&crate::view::TransferView::offer(
            "#2".into(),
            "bob".into(),
            "push20.bin".into(),
            20 << 20,
        ));
        let rows = draw_rows(&mut t, &mut m);
        assert!(rows[4].starts_with("#1 ↓ big.bin"), "{rows:?}");
        assert_eq!(
            rows[5],
            "#2 offer: push20.bin (20.0 MiB) from bob: /accept 2 or /decline 2"
        );
        assert_eq!(
            rows[6],
            "[alice] → everyone │ connected to 127.0.0.1:4000 │ 1 transfer │ 1 offer waiting"
        );
        m.transfer_ended("#1");
        assert_eq!(
            m.status_line(),
            "[alice] → everyone │ connected to 127.0.0.1:4000 │ 1 offer waiting"
        );
    }

    /// On a narrow screen an offer's row keeps how to answer it: cut at
    /// the right, `/accept 2` was lost.
    #[test]
    fn a_narrow_offer_row_keeps_how_to_answer_it() {
        let offer = |from: &str| {
            crate::view::TransferView::offer(
                "#2".into(),
                from.into(),
                "quarterly report.pdf".into(),
                20 << 20,
            )
        };
        let mut m = model();
        m.transfer(&offer("bob"));
        let rows = draw_rows(&mut terminal(50, 6), &mut m);
        assert_eq!(
            rows[3],
            "#2 offer: quarterl… (20.0 MiB) from bob: /accept 2"
        );
        let rows = draw_rows(&mut terminal(45, 6), &mut m);
        assert_eq!(rows[3], "#2 offer: qua… (20.0 MiB) from bob: /accept 2");
        let mut m = model();
        m.transfer(&offer("abcdefghijklmnopqrstuvwxyz012345"));
        let rows = draw_rows(&mut terminal(50, 6), &mut m);
        assert_eq!(rows[3], "#2 offer: /accept 2 or /decline 2");
    }

    /// A running transfer's row too wide for the screen keeps what has
    /// moved in sight: its rate and time left go first, then its name is
    /// shortened (before, a long name pushed the progress off the row).
    #[test]
    fn a_narrow_transfer_row_keeps_its_progress() {
        let mut m = model();
        m.transfer(&download(
            1,
            "the minutes of the annual general meeting.pdf",
        ));
        let rows = draw_rows(&mut terminal(80, 6), &mut m);
        assert_eq!(
            rows[3],
            "#1 ↓ the minutes of the annual gener…  1.0 MiB / 4.0 MiB  25%  1.0 MiB/s  eta 3s"
        );
        let rows = draw_rows(&mut terminal(50, 6), &mut m);
        assert_eq!(
            rows[3],
            "#1 ↓ the minutes of the a…  1.0 MiB / 4.0 MiB  25%"
        );
        // A short name: only the rate and time left go.
        let mut m = model();
        m.transfer(&download(1, "big.bin"));
        let rows = draw_rows(&mut terminal(40, 6), &mut m);
        assert_eq!(rows[3], "#1 ↓ big.bin  1.0 MiB / 4.0 MiB  25%");
        // Wide names (two columns a character) are cut as wide as fits.
        let mut m = model();
        m.transfer(&download(1, &"日本語".repeat(10)));
        let rows = draw_rows(&mut terminal(40, 6), &mut m);
        assert_eq!(rows[3], "#1 ↓ 日本語日本…  1.0 MiB / 4.0 MiB  25%");
    }

    #[test]
    fn the_question_of_a_long_paste_shows_whole_however_narrow() {
        let question = "paste 8 lines? Enter sends them, Esc cancels";
        let eight: String = (1..=8).map(|i| format!("p{i}\n")).collect();
        // Wide enough: one row, as the status line.
        let mut m = model();
        m.paste(&eight);
        let rows = draw_rows(&mut terminal(80, 6), &mut m);
        assert_eq!(rows[4], question);
        assert_eq!(rows[5], "alice>");
        // Narrow: wrapped over the rows it needs, the input still below.
        for width in [20, 30] {
            let mut t = terminal(width, 8);
            let rows = draw_rows(&mut t, &mut m);
            let shown: Vec<&str> = rows[..7]
                .iter()
                .map(String::as_str)
                .filter(|r| !r.is_empty())
                .collect();
            assert_eq!(shown.join(" "), question, "at {width}: {rows:?}");
            assert_eq!(rows[7], "alice>");
            let top = rows.len() - 1 - shown.len();
            let status = t.backend().buffer()[(0, u16::try_from(top).unwrap())].modifier;
            assert!(status.contains(Modifier::REVERSED), "{rows:?}");
        }
        // Answered: one row again.
        m.handle(
            super::super::keys::Action::Escape,
            std::time::Instant::now(),
        );
        let rows = draw_rows(&mut terminal(20, 8), &mut m);
        assert_eq!(rows[6], "[alice] → everyone …");
        assert_eq!(rows[7], "alice>");
    }

    #[test]
    fn transfers_take_a_row_each_up_to_five() {
        let mut m = model();
        notices(&mut m, 30);
        let mut t = terminal(60, 12);
        for id in 1..=3 {
            m.transfer(&download(id, &format!("f{id}.bin")));
        }
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[7], download(1, "f1.bin").line());
        assert_eq!(rows[9], download(3, "f3.bin").line());
        assert!(rows[10].starts_with("[alice]"));
        assert_eq!(
            rows[6], "12:00 *** line 29",
            "the chat keeps the rows above"
        );
        let mut moved = download(2, "f2.bin");
        moved.done = 3 << 20;
        m.transfer(&moved);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[8], moved.line(), "updated in place");

        for id in 4..=8 {
            m.transfer(&download(id, &format!("f{id}.bin")));
        }
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[5], download(1, "f1.bin").line());
        assert_eq!(rows[8], download(4, "f4.bin").line());
        assert_eq!(rows[9], "… and 4 more (/transfers)");
        assert_eq!(rows[4], "12:00 *** line 29");

        for id in 1..=8 {
            m.transfer_ended(&format!("#{id}"));
        }
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[9], "12:00 *** line 29", "no rows when none run");
        let long = download(9, &"n".repeat(80));
        m.transfer(&long);
        let rows = draw_rows(&mut t, &mut m);
        // Its name shortened, its progress in sight.
        assert_eq!(
            rows[9],
            format!(
                "#9 ↓ {}…  1.0 MiB / 4.0 MiB  25%  1.0 MiB/s  eta 3s",
                "n".repeat(11)
            )
        );
    }

    /// A screen too short for every transfer row still says that some
    /// are not shown: the last row it has for them is the hint.
    #[test]
    fn transfers_cut_by_a_short_screen_end_with_how_many_more() {
        let mut m = model();
        notices(&mut m, 30);
        for id in 1..=6 {
            m.transfer(&download(id, &format!("f{id}.bin")));
        }
        // 80x5: one row of chat, two of transfers, the status, the input.
        let rows = draw_rows(&mut terminal(80, 5), &mut m);
        assert_eq!(rows[1], download(1, "f1.bin").line(), "{rows:?}");
        assert_eq!(rows[2], "… and 5 more (/transfers)", "{rows:?}");
        assert!(rows[3].starts_with("[alice]"), "{rows:?}");
        // Room for them all (10 rows): the five of before.
        let rows = draw_rows(&mut terminal(80, 10), &mut m);
        assert_eq!(rows[7], "… and 2 more (/transfers)", "{rows:?}");
        // Two transfers in one row: the row says so.
        let mut two = model();
        for id in 1..=2 {
            two.transfer(&download(id, &format!("f{id}.bin")));
        }
        let rows = draw_rows(&mut terminal(80, 4), &mut two);
        assert_eq!(rows[1], "2 transfers (/transfers)", "{rows:?}");
    }

    #[test]
    fn reading_back_is_not_yanked_and_counts_what_arrives() {
        let mut m = model();
        notices(&mut m, 40);
        let mut t = terminal(60, 10);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[7], "12:00 *** line 39");
        m.handle(Action::PageUp, Instant::now());
        let before = draw_rows(&mut t, &mut m);
        assert_eq!(
            before[7], "12:00 *** line 32",
            "up by the pane's height less one"
        );
        m.show(Entry::Notice("new one".into()));
        m.show(Entry::Chat(chat("bob", "and another")));
        m.show(Entry::Notice("x ".repeat(30)));
        let after = draw_rows(&mut t, &mut m);
        assert_eq!(after[..8], before[..8], "the view stays where it was");
        assert!(after[8].ends_with("│ 3 new ↓"), "{}", after[8]);
        m.handle(Action::PageDown, Instant::now());
        let rows = draw_rows(&mut t, &mut m);
        assert!(rows[8].ends_with("│ 3 new ↓"), "still reading back");
        m.handle(Action::PageDown, Instant::now());
        let rows = draw_rows(&mut t, &mut m);
        assert!(rows[6].starts_with("12:00 *** x x"), "{rows:?}");
        assert!(!rows[8].contains("new"));

        m.handle(Action::Home, Instant::now());
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(
            rows[0], "12:00 *** line 0",
            "Home on an empty input: the top"
        );
        m.handle(Action::PageUp, Instant::now());
        assert_eq!(draw_rows(&mut t, &mut m)[0], "12:00 *** line 0");
        m.handle(Action::End, Instant::now());
        let rows = draw_rows(&mut t, &mut m);
        assert!(rows[6].starts_with("12:00 *** x x"));
        m.handle(Action::ScrollTop, Instant::now());
        assert_eq!(draw_rows(&mut t, &mut m)[0], "12:00 *** line 0");
        m.handle(Action::ScrollBottom, Instant::now());
        assert!(draw_rows(&mut t, &mut m)[6].starts_with("12:00 *** x x"));
    }

    /// Read back to the top while old lines are dropped (the scrollback
    /// is full): the lines on the screen are not counted as below it. The
    /// status was made before the scroll was brought back within the
    /// chat, and said `10000 new ↓` with only 9992 below.
    #[test]
    fn new_lines_below_a_view_at_the_top_leave_out_those_shown() {
        use crate::screen::model::SCROLLBACK;
        let mut m = model();
        notices(&mut m, 20);
        let mut t = terminal(40, 10);
        draw_rows(&mut t, &mut m);
        m.handle(Action::Home, Instant::now());
        assert_eq!(draw_rows(&mut t, &mut m)[0], "12:00 *** line 0");
        // Every line there was dropped: the view shows the oldest kept.
        notices(&mut m, SCROLLBACK);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], "12:00 *** line 0", "the oldest kept");
        let below = SCROLLBACK - 8;
        assert!(
            rows[8].ends_with(&format!("│ {below} new ↓")),
            "{}",
            rows[8]
        );
    }

    #[test]
    fn an_input_taller_than_the_window_keeps_the_cursor_in_view() {
        let mut m = model();
        notices(&mut m, 3);
        let long = "0123456789".repeat(20);
        m.editor.insert(&long);
        let mut t = terminal(20, 8);
        let rows = draw_rows(&mut t, &mut m);
        // 7 + 200 columns: 11 rows of 20, the last three shown.
        assert_eq!(
            rows[5], "34567890123456789012",
            "the last three rows of the input"
        );
        assert_eq!(rows[7], "3456789");
        assert_eq!(rows[2], "12:00 *** line 2", "the chat keeps its rows");
        t.backend_mut().assert_cursor_position((7, 7));
        m.handle(Action::LineStart, Instant::now());
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[5], "alice> 0123456789012");
        t.backend_mut().assert_cursor_position((7, 5));

        for (w, h) in [(10, 3), (1, 1), (3, 2), (1, 10), (200, 1), (0, 0), (5, 0)] {
            let mut t = terminal(w, h);
            let rows = draw_rows(&mut t, &mut m);
            assert_eq!(rows.len(), usize::from(h));
            if h > 0 && w > 0 {
                let pos = t.get_cursor_position().unwrap();
                assert!(pos.x < w && pos.y < h, "{w}×{h}: cursor at {pos:?}");
            }
        }
        let mut t = terminal(10, 3);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], "line 2", "at 10×3 the chat keeps a row");
        assert!(rows[1].starts_with("[alice]"));
    }

    #[test]
    fn tabs_and_hidden_characters_show_in_the_input() {
        let mut m = model();
        // A line recalled from the history (a pasted line, sent as it
        // was): a tab, a zero-width space, a bidirectional control, a C0
        // control.
        let line = "a\tb\u{200b}c\u{202e}d\x01";
        m.editor.set(line.into(), line.len());
        let mut t = terminal(60, 4);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[3], "alice> a        b\\u{200b}c\\u{202e}d^A");
        let end = u16::try_from(rows[3].len()).unwrap();
        t.backend_mut().assert_cursor_position((end, 3));
        let buffer = t.backend().buffer().clone();
        assert!(
            buffer[(17, 3)].modifier.contains(Modifier::REVERSED),
            "an escape is reversed"
        );
        assert!(!buffer[(16, 3)].modifier.contains(Modifier::REVERSED));
        // The cursor steps over each as one character, visibly.
        m.handle(Action::Left, Instant::now());
        draw_rows(&mut t, &mut m);
        t.backend_mut().assert_cursor_position((end - 2, 3));
        for _ in 0..6 {
            m.handle(Action::Left, Instant::now());
        }
        draw_rows(&mut t, &mut m);
        t.backend_mut().assert_cursor_position((8, 3));
        // A mark that starts the text sits on a dotted circle, a column.
        let (rows, cursor) = input_rows("> ", "\u{301}abc", 2, 20);
        assert_eq!(rows[0].to_string(), "> \u{25cc}\u{301}abc");
        assert_eq!(cursor, (0, 3));
        // An escape wraps as text does; the cursor stays on the screen.
        for width in 1..30 {
            let (rows, cursor) = input_rows("> ", "x\u{200b}", 3, width);
            assert!(rows.iter().all(|r| r.width() <= usize::from(width)));
            assert!(cursor.1 < usize::from(width), "at {width}: {cursor:?}");
        }
    }

    /// The words of entries that wrap differently at each width, each
    /// word found in one place only.
    fn words_of(i: usize) -> String {
        (0..=i % 9 * 3)
            .map(|j| format!("w{i}x{j}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn resizing_while_scrolled_back_keeps_the_text_in_view() {
        let mut m = model();
        for i in 0..60 {
            m.show(Entry::Plain(words_of(i)));
        }
        let mut t = terminal(60, 12);
        draw_rows(&mut t, &mut m);
        m.handle(Action::PageUp, Instant::now());
        m.handle(Action::PageUp, Instant::now());
        // The chat pane is rows 0 to 9; its last row is read here.
        let before = draw_rows(&mut t, &mut m);
        let last_word = |row: &str| row.split_whitespace().last().unwrap_or("").to_owned();
        let word = last_word(&before[9]);
        assert!(word.starts_with('w'), "{before:#?}");
        for (width, height) in [(35, 12), (60, 12), (90, 12), (25, 16), (60, 12)] {
            t.backend_mut().resize(width, height);
            let rows = draw_rows(&mut t, &mut m);
            let bottom = usize::from(height) - 3;
            assert!(
                rows[bottom].split_whitespace().any(|w| w == word),
                "at {width}x{height}, the end of the row that was at the bottom of the view \
                 ({word}) still is: {rows:#?}, before {before:#?}"
            );
            assert!(rows[bottom + 1].starts_with("[alice]"), "{rows:#?}");
        }
        let after = draw_rows(&mut t, &mut m);
        assert_eq!(after, before, "back at the first size, the same view");
    }

    #[test]
    fn resizing_redraws_everything_at_the_new_size() {
        let mut m = model();
        m.show(Entry::Plain("a".repeat(50)));
        m.editor.insert("draft");
        let mut t = terminal(80, 6);
        draw_rows(&mut t, &mut m);
        t.backend_mut().resize(20, 6);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], format!("12:00 {}", "a".repeat(14)));
        assert_eq!(rows[1], format!("      {}", "a".repeat(14)));
        assert_eq!(rows[5], "alice> draft");
        assert!(rows.iter().all(|r| text_width(r) <= 20));
    }

    #[test]
    fn the_nick_list_shows_from_a_hundred_columns_and_toggles() {
        let mut m = model();
        m.change_roster(crate::view::Roster::all(vec![
            "carol".into(),
            "alice".into(),
            "bob".into(),
        ]));
        let mut wide = terminal(100, 6);
        let rows = draw_rows(&mut wide, &mut m);
        assert!(rows[0].ends_with("│alice"), "{}", rows[0]);
        assert!(rows[2].ends_with("│carol"));
        let name = wide.backend().buffer()[(85, 0)].modifier;
        assert!(name.contains(Modifier::BOLD), "our own name in bold");
        let mut narrow = terminal(99, 6);
        let rows = draw_rows(&mut narrow, &mut m);
        assert!(!rows[0].contains('│'));
        m.handle(Action::ToggleNicklist, Instant::now());
        let rows = draw_rows(&mut narrow, &mut m);
        assert!(rows[1].ends_with("│bob"));
        m.toggle_nicklist();
        assert!(!draw_rows(&mut narrow, &mut m)[0].contains('│'));
    }

    #[test]
    fn a_user_away_is_dimmed_and_marked_in_the_nick_list() {
        let mut m = model();
        let long = "b_very_long_nickname_of_32_chars";
        m.change_roster(crate::view::Roster::All {
            names: vec!["alice".into(), "bob".into(), long.into()],
            away: vec![
                crate::view::Away {
                    name: "bob".into(),
                    secs: 23,
                },
                crate::view::Away {
                    name: long.into(),
                    secs: 1,
                },
            ],
        });
        let mut t = terminal(100, 6);
        let rows = draw_rows(&mut t, &mut m);
        assert!(rows[0].ends_with("│alice"), "{}", rows[0]);
        // A name cut to fit keeps its mark.
        assert!(rows[1].ends_with("│b_very_… (away)"), "{}", rows[1]);
        assert!(rows[2].ends_with("│bob (away)"), "{}", rows[2]);
        let cell = |row: u16| t.backend().buffer()[(85, row)].modifier;
        assert!(cell(2).contains(Modifier::DIM), "away: dimmed");
        assert!(!cell(0).contains(Modifier::DIM), "here: not dimmed");
    }

    /// The connection lost, the nick list is of who was online, not who
    /// is: all dimmed until the client is connected again.
    #[test]
    fn the_nick_list_is_dimmed_while_the_connection_is_lost() {
        let mut m = model();
        m.change_roster(crate::view::Roster::all(vec!["alice".into(), "bob".into()]));
        let mut t = terminal(100, 6);
        let status = |link| crate::view::Status {
            me: "alice".into(),
            target: None,
            link,
            cut_off: false,
        };
        draw_rows(&mut t, &mut m);
        let dim = |t: &ratatui::Terminal<ratatui::backend::TestBackend>, row: u16| {
            t.backend().buffer()[(85, row)]
                .modifier
                .contains(Modifier::DIM)
        };
        assert!(!dim(&t, 0) && !dim(&t, 1), "connected: not dimmed");
        m.set_status(&status(crate::view::Link::Reconnecting {
            reason: "connection lost".into(),
            attempt: 1,
            retry_in: None,
        }));
        let rows = draw_rows(&mut t, &mut m);
        assert!(rows[1].ends_with("│bob"), "{rows:?}");
        assert!(dim(&t, 0) && dim(&t, 1), "reconnecting: dimmed");
        m.set_status(&status(crate::view::Link::Connected {
            server: "127.0.0.1:4000".into(),
        }));
        draw_rows(&mut t, &mut m);
        assert!(!dim(&t, 1), "back: not dimmed");
    }

    #[test]
    fn a_name_too_long_for_the_nick_list_ends_in_an_ellipsis() {
        let mut m = model();
        let long = "b_very_long_nickname_of_32_chars";
        m.change_roster(crate::view::Roster::all(vec![long.into(), "bob".into()]));
        let rows = draw_rows(&mut terminal(100, 6), &mut m);
        let cut = rows.iter().find(|r| r.contains("│b_very")).unwrap();
        assert!(cut.ends_with("│b_very_long_ni…"), "{cut}");
        assert!(rows.iter().any(|r| r.ends_with("│bob")));
    }

    #[test]
    fn no_color_keeps_the_modifiers_and_drops_the_colours() {
        let mut m = model();
        let mut private = chat("bob", "psst");
        private.private = true;
        m.show(Entry::Chat(private));
        let mut term = terminal(40, 4);
        draw_rows(&mut term, &mut m);
        let coloured = |term: &ratatui::Terminal<ratatui::backend::TestBackend>| {
            term.backend()
                .buffer()
                .content
                .iter()
                .any(|c| c.fg != Color::Reset)
        };
        assert!(coloured(&term), "colours by default");
        m.no_color = true;
        draw_rows(&mut term, &mut m);
        assert!(!coloured(&term), "no colour left with NO_COLOR");
        let status = term.backend().buffer()[(0, 2)].modifier;
        assert!(
            status.contains(Modifier::REVERSED),
            "the status line stays reversed"
        );
    }

    #[test]
    fn text_laid_out_to_fit_gets_the_pane_width_less_the_time_stamp() {
        let mut m = model();
        draw_rows(&mut terminal(80, 6), &mut m);
        assert_eq!(m.text_width(), Some(80 - 6));
        draw_rows(&mut terminal(100, 6), &mut m);
        assert_eq!(
            m.text_width(),
            Some(100 - 16 - 6),
            "the nick list takes its columns"
        );
    }

    #[test]
    fn entries_show_their_kind() {
        let (_, stamp) = when();
        let mut m = model();
        let mut private = chat("bob", "psst");
        private.private = true;
        m.show(Entry::Chat(private.clone()));
        let mut own = chat("alice", "hi bob");
        own.own = true;
        own.private = true;
        own.to = Some("bob".into());
        m.show(Entry::Chat(own.clone()));
        let mut action = chat("bob", "waves");
        action.action = true;
        m.show(Entry::Chat(action.clone()));
        action.private = true;
        m.show(Entry::Chat(action));
        own.action = true;
        own.text = "bows".into();
        m.show(Entry::Chat(own));
        m.show(Entry::NoticeAt {
            time: when().0,
            text: "bob has joined".into(),
            missed: false,
        });
        m.show(Entry::Error("no such user".into()));
        m.show(Entry::Chat(chat("carol", "hey Alice, look")));
        let mut t = terminal(60, 12);
        let rows = draw_rows(&mut t, &mut m);
        assert_eq!(rows[0], format!("{stamp} <bob> (private) psst"));
        assert_eq!(rows[1], format!("{stamp} <alice> (to bob) hi bob"));
        assert_eq!(rows[2], format!("{stamp} * bob waves"));
        assert_eq!(rows[3], format!("{stamp} * bob waves (private)"));
        assert_eq!(rows[4], format!("{stamp} * alice bows (to bob)"));
        assert_eq!(rows[5], format!("{stamp} *** bob has joined"));
        assert_eq!(rows[6], "12:00 error: no such user");
        let buf = t.backend().buffer();
        assert_eq!(buf[(12, 0)].fg, Color::Magenta, "(private) in magenta");
        assert!(
            buf[(7, 1)].modifier.contains(Modifier::BOLD),
            "own name bold"
        );
        assert_eq!(buf[(10, 5)].modifier & Modifier::DIM, Modifier::DIM);
        assert_eq!(buf[(10, 6)].fg, Color::Red);
        let mention = &buf[(15, 7)];
        assert_eq!(
            (mention.fg, mention.modifier & Modifier::BOLD),
            (Color::Yellow, Modifier::BOLD)
        );
        assert_eq!(buf[(7, 0)].fg, nick_color("bob"));
    }

    #[test]
    fn nick_colours_are_stable_and_spread() {
        assert_eq!(nick_color("Bob"), nick_color("bob"));
        let names = [
            "alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi",
        ];
        let colours: std::collections::HashSet<_> = names
            .iter()
            .map(|n| format!("{:?}", nick_color(n)))
            .collect();
        assert!(colours.len() >= 4, "{colours:?}");
    }
}
