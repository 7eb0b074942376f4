//! The client in a pseudo-terminal, its output rendered by a terminal
//! emulator (`vt100`), for tests that assert on what the screen shows.
//!
//! A [`Term`] owns the client process (spawned on the slave side of a pty
//! of a given size, with its own `HOME` and `XDG_DATA_HOME` so its input
//! history stays in the test's folder) and a reader thread that feeds
//! everything the client writes into a `vt100::Parser`. It answers the
//! cursor-position and device-attribute queries a real terminal answers.
//! Waits poll the rendered screen until a condition holds, with a deadline
//! and a bound on wake-ups; a failed wait panics with a dump of the screen.
//! The process is killed (SIGHUP, then SIGKILL) and reaped by its handle
//! when the `Term` is dropped.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};

use super::{client_bin, MAX_WAKEUPS, POLL, TIMEOUT};

/// A pause in the output this long ends a frame (ratatui writes a frame
/// in one go, but a pty may deliver it in several reads).
const SETTLE: Duration = Duration::from_millis(40);
/// The longest wait for such a pause.
const SETTLE_MAX: Duration = Duration::from_millis(500);
/// Raw output bytes kept for failure reports.
const RAW_TAIL: usize = 4096;

/// A key, written to the terminal as an xterm would send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Enter,
    Tab,
    BackTab,
    Esc,
    Backspace,
    Delete,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    CtrlHome,
    CtrlEnd,
    PageUp,
    PageDown,
    F2,
    /// Ctrl and a letter (`Ctrl('c')` is Ctrl-C).
    Ctrl(char),
    /// Alt (Meta) and a letter.
    Alt(char),
}

impl Key {
    /// The bytes a terminal sends for this key.
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Key::Enter => b"\r".to_vec(),
            Key::Tab => b"\t".to_vec(),
            Key::BackTab => b"\x1b[Z".to_vec(),
            Key::Esc => b"\x1b".to_vec(),
            Key::Backspace => b"\x7f".to_vec(),
            Key::Delete => b"\x1b[3~".to_vec(),
            Key::Up => b"\x1b[A".to_vec(),
            Key::Down => b"\x1b[B".to_vec(),
            Key::Right => b"\x1b[C".to_vec(),
            Key::Left => b"\x1b[D".to_vec(),
            Key::Home => b"\x1b[H".to_vec(),
            Key::End => b"\x1b[F".to_vec(),
            Key::CtrlHome => b"\x1b[1;5H".to_vec(),
            Key::CtrlEnd => b"\x1b[1;5F".to_vec(),
            Key::PageUp => b"\x1b[5~".to_vec(),
            Key::PageDown => b"\x1b[6~".to_vec(),
            Key::F2 => b"\x1bOQ".to_vec(),
            Key::Ctrl(c) => {
                let c = c.to_ascii_lowercase();
                assert!(c.is_ascii_lowercase(), "Ctrl with a letter, not {c:?}");
                vec![c as u8 - b'a' + 1]
            }
            Key::Alt(c) => {
                let mut b = vec![0x1b];
                let mut buf = [0u8; 4];
                b.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                b
            }
        }
    }
}

/// What the terminal showed at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    /// Each row's text, trailing blanks removed (wide characters once).
    pub rows: Vec<String>,
    /// The cursor (row, column), 0-based.
    pub cursor: (u16, u16),
    /// The size (columns, rows).
    pub size: (u16, u16),
    /// Bells rung so far.
    pub bells: usize,
    /// Whether the alternate screen is active.
    pub alternate: bool,
}

impl Shot {
    /// The whole screen, rows joined by `\n`.
    pub fn text(&self) -> String {
        self.rows.join("\n")
    }

    /// Row `n` (0-based); a negative `n` counts from the bottom (-1 is the last row).
    pub fn row(&self, n: isize) -> &str {
        let i = if n < 0 {
            self.rows.len().checked_sub(n.unsigned_abs())
        } else {
            Some(n.unsigned_abs())
        };
        i.and_then(|i| self.rows.get(i)).map_or("", String::as_str)
    }

    /// True if some row contains `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.rows.iter().any(|r| r.contains(s))
    }

    /// The index of the first row satisfying `pred`.
    pub fn find_row(&self, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.rows.iter().position(|r| pred(r))
    }

    /// The indexes of every row satisfying `pred`.
    pub fn rows_where(&self, pred: impl Fn(&str) -> bool) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| pred(&self.rows[i]))
            .collect()
    }

    /// How many rows contain `s`.
    pub fn count(&self, s: &str) -> usize {
        self.rows.iter().filter(|r| r.contains(s)).count()
    }

    /// A numbered dump of the screen, for failure messages.
    pub fn dump(&self) -> String {
        let (cols, rows) = self.size;
        let mut out = format!(
            "screen {cols}x{rows}, cursor at row {} col {}, {} bell(s){}\n",
            self.cursor.0,
            self.cursor.1,
            self.bells,
            if self.alternate {
                ", alternate screen"
            } else {
                ""
            }
        );
        let rule: String = "-".repeat(usize::from(cols));
        let _ = writeln!(out, "    +{rule}+");
        for (i, r) in self.rows.iter().enumerate() {
            let _ = writeln!(out, "{i:>3} |{r}");
        }
        let _ = writeln!(out, "    +{rule}+");
        out
    }
}

/// How one cell is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellStyle {
    /// Bold.
    pub bold: bool,
    /// Foreground colour.
    pub fg: vt100::Color,
    /// Background colour.
    pub bg: vt100::Color,
    /// Reversed colours.
    pub inverse: bool,
}

/// The terminal's side effects that the screen does not hold.
#[derive(Debug, Default)]
struct Hooks {
    bells: usize,
    /// Answers to queries, written back to the client by the reader thread.
    replies: Vec<Vec<u8>>,
    /// Queries go unanswered (a terminal that does not know them).
    mute: bool,
}

impl vt100::Callbacks for Hooks {
    fn audible_bell(&mut self, _: &mut vt100::Screen) {
        self.bells += 1;
    }

    fn unhandled_csi(
        &mut self,
        screen: &mut vt100::Screen,
        i1: Option<u8>,
        _i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        if self.mute {
            return;
        }
        let first = params.first().and_then(|p| p.first()).copied();
        match (i1, c, first) {
            // Device status report: where is the cursor? (1-based)
            (None, 'n', Some(6)) => {
                let (row, col) = screen.cursor_position();
                self.replies
                    .push(format!("\x1b[{};{}R", row + 1, col + 1).into_bytes());
            }
            // Primary device attributes: a VT220-ish terminal.
            (None, 'c', None | Some(0)) => self.replies.push(b"\x1b[?62;22c".to_vec()),
            _ => {}
        }
    }
}

/// xterm's request for the alternate screen (saving the cursor, cleared).
const ENTER_ALTERNATE: &[u8] = b"\x1b[?1049h";

struct State {
    parser: vt100::Parser<Hooks>,
    raw_tail: Vec<u8>,
    bytes: usize,
    eof: bool,
    /// While the client's first request for the alternate screen is to be
    /// dropped: its output so far, held back until the request is seen.
    ignore_enter: Option<Vec<u8>>,
}

impl State {
    /// Gives the emulator what the client wrote, less the first request
    /// for the alternate screen where that is to be dropped.
    fn feed(&mut self, bytes: &[u8]) {
        let Some(held) = self.ignore_enter.as_mut() else {
            self.parser.process(bytes);
            return;
        };
        held.extend_from_slice(bytes);
        let found = held
            .windows(ENTER_ALTERNATE.len())
            .position(|w| w == ENTER_ALTERNATE);
        let held = match found {
            Some(at) => {
                let mut held = self.ignore_enter.take().unwrap_or_default();
                held.drain(at..at + ENTER_ALTERNATE.len());
                held
            }
            // Never coming: let the output through as it is.
            None if held.len() > 4096 => self.ignore_enter.take().unwrap_or_default(),
            None => return,
        };
        self.parser.process(&held);
    }
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nz(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("a terminal size is at least 1x1")
}

/// The client under a pseudo-terminal, rendered by a terminal emulator.
pub struct Term {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    master: Box<dyn MasterPty + Send>,
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    shared: Shared,
    label: String,
    exit: Option<portable_pty::ExitStatus>,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term").field("label", &self.label).finish()
    }
}

impl Term {
    /// Starts the client with `args` in `dir`, in a `cols`x`rows` xterm,
    /// with `home` as its `HOME` (and `home/data` as `XDG_DATA_HOME`).
    pub fn spawn(dir: &Path, home: &Path, args: &[&str], cols: u16, rows: u16) -> Term {
        Term::spawn_with(dir, home, args, cols, rows, &[], None)
    }

    /// [`Term::spawn`] with `env` set on top of the test environment, and,
    /// with `leftovers`, in a terminal still in its alternate screen with
    /// them on it, as tmux keeps a pane whose full-screen program was
    /// killed with `kill -9`: such a terminal does not clear the screen
    /// when the next program asks for the alternate screen it is already
    /// on, so the emulator here drops that request, once.
    pub fn spawn_with(
        dir: &Path,
        home: &Path,
        args: &[&str],
        cols: u16,
        rows: u16,
        env: &[(&str, &str)],
        leftovers: Option<&[u8]>,
    ) -> Term {
        let mut cmd = CommandBuilder::new(client_bin());
        cmd.args(args);
        Term::spawn_command(cmd, dir, home, args, (cols, rows), env, leftovers, false)
    }

    /// [`Term::spawn`] in a terminal that answers no query (where is the
    /// cursor, what terminal is this), as some do not.
    pub fn spawn_unanswering(dir: &Path, home: &Path, args: &[&str], cols: u16, rows: u16) -> Term {
        let mut cmd = CommandBuilder::new(client_bin());
        cmd.args(args);
        Term::spawn_command(cmd, dir, home, args, (cols, rows), &[], None, true)
    }

    /// [`Term::spawn`] with the client's stderr redirected to the file
    /// `stderr` (by a shell, as `imchat-client … 2>FILE` typed at a
    /// terminal): stdin and stdout stay on the terminal.
    pub fn spawn_stderr_to(
        dir: &Path,
        home: &Path,
        args: &[&str],
        cols: u16,
        rows: u16,
        stderr: &Path,
    ) -> Term {
        let mut cmd = CommandBuilder::new("sh");
        cmd.arg("-c");
        cmd.arg(r#"exec "$0" "$@" 2>"$IMCHAT_TEST_STDERR""#);
        cmd.arg(client_bin());
        cmd.args(args);
        let stderr = stderr.to_string_lossy();
        let env = [("IMCHAT_TEST_STDERR", stderr.as_ref())];
        Term::spawn_command(cmd, dir, home, args, (cols, rows), &env, None, false)
    }

    /// [`Term::spawn`] as a job of a shell with job control (bash,
    /// `set -m`), as it runs at a prompt: when the client stops, the
    /// shell says `stopped: CODE` (148 for Ctrl-Z's SIGTSTP), waits for a
    /// line (Enter), then runs `then` (`fg >/dev/null` resumes it in the
    /// foreground).
    pub fn spawn_as_job(
        dir: &Path,
        home: &Path,
        args: &[&str],
        (cols, rows): (u16, u16),
        then: &str,
    ) -> Term {
        let mut cmd = CommandBuilder::new("bash");
        cmd.arg("-c");
        cmd.arg(format!(
            r#"set -m; "$0" "$@"; echo "stopped: $?"; read -r _; {then}"#
        ));
        cmd.arg(client_bin());
        cmd.args(args);
        Term::spawn_command(cmd, dir, home, args, (cols, rows), &[], None, false)
    }

    /// Runs `cmd` (the client, or a shell that starts it) in the
    /// terminal, with the environment [`Term::spawn_with`] describes;
    /// with `mute`, the terminal answers no query.
    #[allow(clippy::too_many_arguments)]
    fn spawn_command(
        mut cmd: CommandBuilder,
        dir: &Path,
        home: &Path,
        args: &[&str],
        (cols, rows): (u16, u16),
        env: &[(&str, &str)],
        leftovers: Option<&[u8]>,
        mute: bool,
    ) -> Term {
        std::fs::create_dir_all(home.join("data")).expect("create the client's home");
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        cmd.cwd(dir);
        cmd.env("HOME", home);
        cmd.env("XDG_DATA_HOME", home.join("data"));
        cmd.env("XDG_CONFIG_HOME", home.join("config"));
        cmd.env("TERM", "xterm-256color");
        cmd.env("LANG", "C.UTF-8");
        cmd.env_remove("RUST_LOG");
        cmd.env_remove("NO_COLOR");
        cmd.env_remove("COLUMNS");
        cmd.env_remove("LINES");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = pair
            .slave
            .spawn_command(cmd)
            .expect("start imchat-client in a pty");
        // Only the child holds the slave now: its exit ends our reads.
        drop(pair.slave);
        let reader = pair.master.try_clone_reader().expect("pty reader");
        let writer: Arc<Mutex<Box<dyn Write + Send>>> =
            Arc::new(Mutex::new(pair.master.take_writer().expect("pty writer")));
        let hooks = Hooks {
            mute,
            ..Hooks::default()
        };
        let mut parser = vt100::Parser::new_with_callbacks(nz(rows), nz(cols), 0, hooks);
        if let Some(leftovers) = leftovers {
            parser.process(ENTER_ALTERNATE);
            parser.process(leftovers);
        }
        let shared: Shared = Arc::new((
            Mutex::new(State {
                parser,
                raw_tail: Vec::new(),
                bytes: 0,
                eof: false,
                ignore_enter: leftovers.map(|_| Vec::new()),
            }),
            Condvar::new(),
        ));
        spawn_reader(reader, Arc::clone(&shared), Arc::clone(&writer));
        Term {
            child,
            master: pair.master,
            writer,
            shared,
            label: format!("terminal client {}", args.first().copied().unwrap_or("")),
            exit: None,
        }
    }

    /// Writes raw bytes to the terminal, as typed.
    #[track_caller]
    pub fn write(&mut self, bytes: &[u8]) {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = w.write_all(bytes).and_then(|()| w.flush()) {
            drop(w);
            panic!(
                "{}: cannot type {:?}: {e}\n{}",
                self.label,
                String::from_utf8_lossy(bytes),
                self.report()
            );
        }
    }

    /// Types text.
    pub fn type_str(&mut self, text: &str) {
        self.write(text.as_bytes());
    }

    /// Presses a key.
    pub fn key(&mut self, key: Key) {
        self.write(&key.bytes());
    }

    /// Pastes text as a terminal with bracketed paste does.
    pub fn paste(&mut self, text: &str) {
        let mut b = b"\x1b[200~".to_vec();
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(b"\x1b[201~");
        self.write(&b);
    }

    /// Resizes the terminal (the emulator first, then the pty, which
    /// signals the client).
    #[track_caller]
    pub fn resize(&mut self, cols: u16, rows: u16) {
        lock(&self.shared).parser.set_size(nz(rows), nz(cols));
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("resize the pty");
    }

    /// The screen now.
    pub fn shot(&self) -> Shot {
        shot_of(&lock(&self.shared))
    }

    /// The screen's text now.
    pub fn screen_text(&self) -> String {
        self.shot().text()
    }

    /// Row `n` now (negative: from the bottom).
    pub fn row(&self, n: isize) -> String {
        self.shot().row(n).to_string()
    }

    /// How the cell at `row`, `col` (0-based) is drawn now.
    pub fn style_at(&self, row: u16, col: u16) -> Option<CellStyle> {
        let st = lock(&self.shared);
        let cell = st.parser.screen().cell(row, col)?;
        Some(CellStyle {
            bold: cell.bold(),
            fg: cell.fgcolor(),
            bg: cell.bgcolor(),
            inverse: cell.inverse(),
        })
    }

    /// Whether the cell at `row`, `col` (0-based) is drawn dimmed now.
    pub fn dim_at(&self, row: u16, col: u16) -> Option<bool> {
        let st = lock(&self.shared);
        st.parser.screen().cell(row, col).map(vt100::Cell::dim)
    }

    /// The cursor (row, column) now.
    pub fn cursor(&self) -> (u16, u16) {
        self.shot().cursor
    }

    /// Waits until the screen satisfies `cond`; returns that screen.
    /// Panics with the screen (and the client's recent output) otherwise.
    #[track_caller]
    pub fn wait_screen(&self, desc: &str, cond: impl FnMut(&Shot) -> bool) -> Shot {
        match self.try_wait_screen(TIMEOUT, cond) {
            Ok(s) => s,
            Err(last) => panic!(
                "{}: the screen never showed {desc} within {TIMEOUT:?}; last screen:\n{}{}",
                self.label,
                last.dump(),
                self.report_tail()
            ),
        }
    }

    /// Waits up to `timeout` until the screen satisfies `cond`: `Ok` with
    /// that screen, or `Err` with the last one.
    pub fn try_wait_screen(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&Shot) -> bool,
    ) -> Result<Shot, Shot> {
        let deadline = Instant::now() + timeout;
        let (_, cvar) = &*self.shared;
        let mut st = lock(&self.shared);
        let mut seen = usize::MAX;
        let mut last = shot_of(&st);
        for _ in 0..MAX_WAKEUPS {
            if st.bytes != seen {
                seen = st.bytes;
                last = shot_of(&st);
                if cond(&last) {
                    // A frame may arrive in several reads: take the screen
                    // again once the output has paused, and check it again.
                    st = settle(&self.shared, st);
                    seen = st.bytes;
                    last = shot_of(&st);
                    if cond(&last) {
                        return Ok(last);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline || st.eof {
                return Err(last);
            }
            // Wake at least every POLL: a resize changes the screen
            // without new bytes.
            st = cvar
                .wait_timeout(st, (deadline - now).min(POLL * 5))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if st.bytes == seen {
                // Re-check on a timeout too (the size may have changed).
                seen = usize::MAX;
            }
        }
        Err(last)
    }

    /// Waits for the client to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<u32> {
        if let Some(s) = &self.exit {
            return Some(s.exit_code());
        }
        let deadline = Instant::now() + timeout;
        for _ in 0..MAX_WAKEUPS {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    let code = s.exit_code();
                    self.exit = Some(s);
                    return Some(code);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
        None
    }

    /// Waits for the client to exit with `code`; panics with the screen otherwise.
    #[track_caller]
    pub fn expect_exit_code(&mut self, code: u32) {
        match self.wait_exit(TIMEOUT) {
            Some(c) if c == code => {}
            Some(c) => panic!(
                "{}: exit code {c} ({:?}), expected {code}\n{}",
                self.label,
                self.exit,
                self.report()
            ),
            None => panic!(
                "{}: still running after {TIMEOUT:?}, expected exit code {code}\n{}",
                self.label,
                self.report()
            ),
        }
    }

    /// True while the client runs.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// The screen and the recent raw output, for failure messages.
    pub fn report(&self) -> String {
        format!("{}{}", self.shot().dump(), self.report_tail())
    }

    /// Everything the client wrote so far, raw; `None` once that is more
    /// than the tail kept for reports (4 KiB).
    pub fn raw_output(&self) -> Option<Vec<u8>> {
        let st = lock(&self.shared);
        (st.bytes == st.raw_tail.len()).then(|| st.raw_tail.clone())
    }

    fn report_tail(&self) -> String {
        let st = lock(&self.shared);
        format!(
            "last {} of {} bytes the client wrote (escaped):\n    {:?}\n",
            st.raw_tail.len(),
            st.bytes,
            String::from_utf8_lossy(&st.raw_tail)
        )
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // SIGHUP, then SIGKILL after a grace period; then reap.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until no output has come for [`SETTLE`] (at most
/// [`SETTLE_MAX`], for a client that draws all the time).
fn settle<'a>(shared: &'a Shared, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    let start = Instant::now();
    let mut quiet_since = start;
    let mut bytes = st.bytes;
    for _ in 0..MAX_WAKEUPS {
        let now = Instant::now();
        let quiet = now - quiet_since;
        if quiet >= SETTLE || now - start >= SETTLE_MAX || st.eof {
            break;
        }
        st = shared
            .1
            .wait_timeout(st, SETTLE - quiet)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if st.bytes != bytes {
            bytes = st.bytes;
            quiet_since = Instant::now();
        }
    }
    st
}

fn shot_of(st: &State) -> Shot {
    let screen = st.parser.screen();
    let (rows, cols) = screen.size();
    let (rows, cols) = (rows.get(), cols.get());
    Shot {
        rows: screen
            .rows(0, cols)
            .map(|r| r.trim_end().to_string())
            .collect(),
        cursor: screen.cursor_position(),
        size: (cols, rows),
        bells: st.parser.callbacks().bells,
        alternate: screen.alternate_screen(),
    }
}

fn spawn_reader(
    mut reader: Box<dyn Read + Send>,
    shared: Shared,
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
) {
    thread::spawn(move || {
        let mut chunk = [0u8; 16384];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO once the child (the last holder of the slave) is gone.
                Err(_) => 0,
            };
            let replies = {
                let mut st = lock(&shared);
                if n == 0 {
                    st.eof = true;
                    shared.1.notify_all();
                    return;
                }
                st.feed(&chunk[..n]);
                st.bytes += n;
                st.raw_tail.extend_from_slice(&chunk[..n]);
                let excess = st.raw_tail.len().saturating_sub(RAW_TAIL);
                st.raw_tail.drain(..excess);
                std::mem::take(&mut st.parser.callbacks_mut().replies)
            };
            shared.1.notify_all();
            if !replies.is_empty() {
                let mut w = writer.lock().unwrap_or_else(PoisonError::into_inner);
                for r in replies {
                    let _ = w.write_all(&r);
                }
                let _ = w.flush();
            }
        }
    });
}

// ---------------------------------------------------------------------------
// A server restarted on the port it had

/// A chat pane row without its `HH:MM ` timestamp; `None` for rows that do
/// not start with one.
pub fn untimed(row: &str) -> Option<&str> {
    let b = row.as_bytes();
    let ok = b.len() > 6
        && b[0].is_ascii_digit()
        && b[1].is_ascii_digit()
        && b[2] == b':'
        && b[3].is_ascii_digit()
        && b[4].is_ascii_digit()
        && b[5] == b' '
        && row[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && row[3..5].parse::<u8>().is_ok_and(|m| m < 60);
    ok.then(|| &row[6..])
}

/// The row of the chat entry that reads `text` after its timestamp (the
/// nick list, when shown, may follow it on the row).
pub fn entry_row(s: &Shot, text: &str) -> Option<usize> {
    s.find_row(|r| untimed(r).is_some_and(|rest| rest.starts_with(text)))
}

/// True when the screen shows the chat entry `text` after a timestamp.
pub fn has_entry(s: &Shot, text: &str) -> bool {
    entry_row(s, text).is_some()
}
