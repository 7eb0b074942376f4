//! The terminal side: where lines come from and how they are shown.
//!
//! Two modes, picked once at start:
//! - **terminal** (stdin and stdout are both terminals): a rustyline editor
//!   with a prompt and history; every line shown goes through rustyline's
//!   `ExternalPrinter`, which clears the prompt, prints, and redraws the line
//!   being typed, so incoming messages never garble it. Colours unless
//!   `NO_COLOR` is set; a progress line now and then for large transfers.
//! - **plain** (anything else): lines read from stdin, plain lines written to
//!   stdout and flushed one by one; no prompt, colour, escape sequence or
//!   progress. This is what scripts and the end-to-end tests see.
//!
//! Every text given to [`Ui`] has already been made inert by the caller.

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Editor, ExternalPrinter};

use crate::error::ClientError;

/// Transfers larger than this get progress lines (terminal mode only).
pub const PROGRESS_MIN_BYTES: u64 = 1024 * 1024;
/// Least time between two progress lines of one transfer.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const MAGENTA: &str = "\x1b[35m";
const RESET: &str = "\x1b[0m";

/// What a line is, for styling in terminal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// As is (welcome text, help, file lists).
    Plain,
    /// A `*** …` notice.
    Notice,
    /// An `error: …` line.
    Error,
    /// A progress line.
    Progress,
}

type Printer = Box<dyn ExternalPrinter + Send>;

struct Terminal {
    printer: Mutex<Printer>,
    color: bool,
    #[cfg(unix)]
    saved: Mutex<Option<nix::sys::termios::Termios>>,
}

/// Where every line the user sees goes.
pub struct Ui {
    term: Option<Terminal>,
}

impl Ui {
    /// Plain mode: lines to stdout.
    pub fn plain() -> Self {
        Ui { term: None }
    }

    /// True in terminal mode.
    pub fn is_terminal(&self) -> bool {
        self.term.is_some()
    }

    /// Shows one line.
    pub fn print(&self, style: Style, text: &str) {
        match &self.term {
            None => {
                if style == Style::Progress {
                    return;
                }
                let mut out = io::stdout().lock();
                // A closed stdout is not a reason to stop chatting.
                let _ = writeln!(out, "{text}").and_then(|()| out.flush());
            }
            Some(t) => {
                let line = if t.color {
                    match style {
                        Style::Plain => format!("{text}\n"),
                        Style::Notice | Style::Progress => format!("{DIM}{text}{RESET}\n"),
                        Style::Error => format!("{RED}{text}{RESET}\n"),
                    }
                } else {
                    format!("{text}\n")
                };
                t.print(line);
            }
        }
    }

    /// `*** <text>`
    pub fn notice(&self, text: &str) {
        self.print(Style::Notice, &format!("*** {text}"));
    }

    /// `error: <text>`
    pub fn error(&self, text: &str) {
        self.print(Style::Error, &format!("error: {text}"));
    }

    /// `<from> text` or `<from> (private) text`; a private message rings
    /// the bell in terminal mode.
    pub fn chat(&self, from: &str, private: bool, text: &str) {
        let tag = if private { " (private)" } else { "" };
        match &self.term {
            Some(t) if t.color => {
                let tag = if private {
                    format!(" {MAGENTA}(private){RESET}")
                } else {
                    String::new()
                };
                let bell = if private { "\x07" } else { "" };
                t.print(format!("<{BOLD}{from}{RESET}>{tag} {text}{bell}\n"));
            }
            Some(t) => {
                let bell = if private { "\x07" } else { "" };
                t.print(format!("<{from}>{tag} {text}{bell}\n"));
            }
            None => self.print(Style::Plain, &format!("<{from}>{tag} {text}")),
        }
    }

    /// An action (`/me`): `* alice waves`.
    pub fn action(&self, from: &str, private: bool, text: &str) {
        let tag = if private { " (private)" } else { "" };
        match &self.term {
            Some(t) if t.color => {
                let bell = if private { "\x07" } else { "" };
                t.print(format!("* {BOLD}{from}{RESET} {text}{tag}{bell}\n"));
            }
            Some(t) => {
                let bell = if private { "\x07" } else { "" };
                t.print(format!("* {from} {text}{tag}{bell}\n"));
            }
            None => self.print(Style::Plain, &format!("* {from} {text}{tag}")),
        }
    }

    /// A progress tracker for a transfer of `total` bytes, or `None` when
    /// none is shown (plain mode, or a small file).
    pub fn progress(&self, label: &str, total: u64) -> Option<Progress> {
        (self.is_terminal() && total > PROGRESS_MIN_BYTES).then(|| Progress::new(label, total))
    }

    /// The last line before a fatal exit: the terminal is put back first
    /// and the line written straight to stdout (the line editor may never
    /// get to draw it).
    pub fn last_words(&self, notice: Option<&str>) {
        self.restore_terminal();
        let Some(text) = notice else { return };
        let mut out = io::stdout().lock();
        let _ = match &self.term {
            Some(t) if t.color => writeln!(out, "{DIM}{text}{RESET}"),
            _ => writeln!(out, "{text}"),
        }
        .and_then(|()| out.flush());
    }

    /// Puts the terminal back as it was before the editor took it, for an
    /// exit while a prompt may be active (a fatal error from another
    /// thread). Harmless when no prompt is active.
    fn restore_terminal(&self) {
        let Some(t) = &self.term else { return };
        #[cfg(unix)]
        if let Some(saved) = &*t.saved.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
        // Bracketed paste off, and the half-typed prompt line cleared.
        let mut out = io::stdout().lock();
        let _ = out
            .write_all(b"\x1b[?2004l\r\x1b[K")
            .and_then(|()| out.flush());
    }
}

impl Terminal {
    fn print(&self, line: String) {
        let mut p = self.printer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = p.print(line) {
            log::debug!("printing through the line editor failed: {e}");
        }
    }
}

/// Where input lines come from.
pub enum Lines {
    /// Standard input, line by line.
    Plain(io::Stdin),
    /// The line editor.
    Editor {
        /// The editor.
        editor: Box<Editor<(), DefaultHistory>>,
        /// `alice> `
        prompt: String,
    },
}

impl Lines {
    /// The next line, `None` at the end of input (EOF, Ctrl-D, Ctrl-C).
    pub fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        match self {
            Lines::Plain(stdin) => {
                let mut buf = Vec::new();
                let n =
                    stdin
                        .lock()
                        .read_until(b'\n', &mut buf)
                        .map_err(|source| ClientError::Io {
                            what: "reading standard input",
                            source,
                        })?;
                if n == 0 {
                    return Ok(None);
                }
                let line = String::from_utf8_lossy(&buf);
                Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
            }
            Lines::Editor { editor, prompt } => loop {
                match editor.readline(prompt) {
                    Ok(line) => return Ok(Some(line)),
                    Err(ReadlineError::Eof | ReadlineError::Interrupted) => return Ok(None),
                    Err(ReadlineError::Signal(_)) => continue,
                    Err(ReadlineError::Io(source)) => {
                        return Err(ClientError::Io {
                            what: "reading the terminal",
                            source,
                        })
                    }
                    Err(e) => {
                        return Err(ClientError::Io {
                            what: "reading the terminal",
                            source: io::Error::other(e.to_string()),
                        })
                    }
                }
            },
        }
    }
}

/// Terminal mode when stdin and stdout are both terminals and the line
/// editor works there; plain mode otherwise.
pub fn setup(username: &str) -> (Ui, Lines) {
    let plain = || (Ui::plain(), Lines::Plain(io::stdin()));
    if !(io::stdin().is_terminal() && io::stdout().is_terminal()) {
        return plain();
    }
    let config = Config::builder()
        .auto_add_history(true)
        .max_history_size(1000)
        .map(rustyline::config::Builder::build)
        .unwrap_or_default();
    #[cfg(unix)]
    let saved = nix::sys::termios::tcgetattr(io::stdin()).ok();
    let mut editor = match Editor::<(), DefaultHistory>::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            log::warn!("no line editor ({e}); reading plain lines");
            return plain();
        }
    };
    let printer: Printer = match editor.create_external_printer() {
        Ok(p) => Box::new(p),
        Err(e) => {
            log::warn!("no line editor printer ({e}); reading plain lines");
            return plain();
        }
    };
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let ui = Ui {
        term: Some(Terminal {
            printer: Mutex::new(printer),
            color,
            #[cfg(unix)]
            saved: Mutex::new(saved),
        }),
    };
    let lines = Lines::Editor {
        editor: Box::new(editor),
        prompt: format!("{username}> "),
    };
    (ui, lines)
}

/// Progress of one large transfer, rendered by indicatif into a line that
/// is printed through the [`Ui`] at most once a second (an in-place bar
/// would fight the line editor for the cursor).
pub struct Progress {
    bar: ProgressBar,
    rendered: Arc<Mutex<String>>,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn new(label: &str, total: u64) -> Self {
        let rendered = Arc::new(Mutex::new(String::new()));
        let target = ProgressDrawTarget::term_like_with_hz(
            Box::new(Capture {
                line: rendered.clone(),
                pending: Mutex::new(String::new()),
            }),
            1,
        );
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ).map_or_else(|_| ProgressStyle::default_bar(), |s| s.progress_chars("=> "));
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Progress {
            bar,
            rendered,
            started: Instant::now(),
            last: None,
        }
    }

    /// Records that `pos` bytes are done; returns a line to show when one is due.
    pub fn update(&mut self, pos: u64) -> Option<String> {
        self.bar.set_position(pos);
        let now = Instant::now();
        let due = match self.last {
            None => now.duration_since(self.started) >= PROGRESS_EVERY,
            Some(t) => now.duration_since(t) >= PROGRESS_EVERY,
        };
        if !due {
            return None;
        }
        self.bar.force_draw();
        self.last = Some(now);
        let line =
            std::mem::take(&mut *self.rendered.lock().unwrap_or_else(PoisonError::into_inner));
        (!line.is_empty()).then_some(line)
    }
}

/// A pretend terminal that keeps the last line indicatif drew.
#[derive(Debug)]
struct Capture {
    line: Arc<Mutex<String>>,
    pending: Mutex<String>,
}

impl TermLike for Capture {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let text = pending.trim().to_string();
        pending.clear();
        if !text.is_empty() {
            *self.line.lock().unwrap_or_else(PoisonError::into_inner) = text;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_come_at_most_once_a_second_and_show_the_numbers() {
        let mut p = Progress::new("downloading big.bin", 4 * 1024 * 1024);
        assert_eq!(p.update(1024), None, "nothing in the first second");
        p.started -= PROGRESS_EVERY;
        let line = p.update(2 * 1024 * 1024).expect("due after a second");
        assert!(line.starts_with("downloading big.bin ["), "{line}");
        assert!(line.contains(" 50%"), "{line}");
        assert!(!line.contains('\x1b'), "no escapes: {line:?}");
        assert_eq!(p.update(3 * 1024 * 1024), None, "not again so soon");
    }

    #[test]
    fn plain_mode_shows_no_progress() {
        assert!(Ui::plain().progress("x", 100 * 1024 * 1024).is_none());
    }
}
