//! The full-screen terminal interface: a [`View`] that draws the chat, the
//! running transfers, a status line and an input line with ratatui, and
//! turns keys and pastes into [`UserInput`].
//!
//! ```text
//!  View calls (any thread) ──► Model (behind a mutex) ◄── keys, pastes
//!                                 │                        ▲
//!                                 ▼ drawn ≤ 30 times/s     │
//!                         the screen's thread ─────────────┘
//!                                 │
//!                                 ▼ UserInput (lines, quit)
//! ```
//!
//! The screen owns one thread. It reads terminal events with a short
//! timeout, applies them to the [`Model`], and redraws when the model
//! changed. View calls only update the model and mark it changed, so they
//! never wait on the terminal. The model knows nothing of the terminal;
//! [`render`] draws it on any ratatui backend. The client gives the view
//! raw text; the model makes it inert as it takes it in, so that what it
//! holds and draws is always inert.

#[cfg(test)]
mod bench;
mod complete;
mod editor;
mod history;
mod keys;
mod model;
mod render;
#[cfg(test)]
pub(crate) mod testing;

use std::io::{self, Stdout, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::layout::Rect;
use ratatui::Terminal;

use self::history::HistoryFile;
use self::model::Model;
use crate::view::{Entry, Roster, SharedFile, Status, TransferEnd, TransferView, UserInput, View};

/// Shortest time between two draws (about 30 a second).
const FRAME: Duration = Duration::from_millis(33);

/// Longest wait for a terminal event: how soon the thread sees changes
/// and a request to stop.
const POLL: Duration = Duration::from_millis(50);

/// The terminal is in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// True while the screen is drawn (the terminal is in raw mode on the
/// alternate screen): nothing else may write to the terminal then.
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Where the input history lives by default: `imchat/history` in the
/// user's data folder.
pub fn default_history_file() -> Option<PathBuf> {
    history::default_history_file()
}

/// The full-screen interface.
pub struct Screen {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the screen's thread and the view calls share.
struct Shared {
    model: Mutex<Model>,
    /// The model changed since the last draw.
    dirty: AtomicBool,
    /// The thread should put the terminal back and end.
    stop: AtomicBool,
}

impl Shared {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update<T>(&self, change: impl FnOnce(&mut Model) -> T) -> T {
        let out = change(&mut self.model());
        self.dirty.store(true, Ordering::Release);
        out
    }
}

/// The one line that says the input history is not kept, as `what`
/// (`read`, `write`) of `path` failed with `e`: "input history not kept:
/// cannot read /x/y: not a directory".
fn history_not_kept(what: &str, path: &std::path::Path, e: &io::Error) -> String {
    format!(
        "input history not kept: cannot {what} {}: {}",
        path.display(),
        imchat_cli::io_reason(e)
    )
}

impl Screen {
    /// Takes over the terminal (alternate screen, raw mode, bracketed
    /// paste) for `me` and starts the screen's thread. `commands` are the
    /// command names to complete; what the user enters goes to `input`;
    /// the input history is read from and saved to `history_file`.
    pub fn start(
        me: &str,
        commands: Vec<String>,
        input: Sender<UserInput>,
        history_file: Option<PathBuf>,
    ) -> io::Result<Arc<Screen>> {
        let mut unread = None;
        let (history, recent) = match history_file.map(|p| (p.clone(), HistoryFile::open(p))) {
            Some((_, Ok((file, recent)))) => (Some(file), recent),
            Some((path, Err(e))) => {
                // Said on the screen, where the user sees it at once.
                unread = Some(history_not_kept("read", &path, &e));
                (None, Vec::new())
            }
            None => (None, Vec::new()),
        };
        let shared = Arc::new(Shared {
            model: Mutex::new({
                let mut model = Model::new(me, commands, recent);
                model.no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                if let Some(line) = unread {
                    model.show(Entry::Notice(line));
                }
                model
            }),
            dirty: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        });
        install_panic_hook();
        let terminal = enter()?;
        // The width the first draw will have, known before it: whether the
        // nick list shows decides what the join shows (see `roster_notice`),
        // and the join's answers may come before that draw.
        if let Ok(size) = terminal.size() {
            shared.model().set_width(size.width);
        }
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("screen".into())
            .spawn(move || run(&thread_shared, terminal, &input, history))
            .inspect_err(|_| restore())?;
        Ok(Arc::new(Screen {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Stops the thread and puts the terminal back.
    fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // A panic there was reported by the hook, which restored the terminal.
            let _ = thread.join();
        }
        restore();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop();
    }
}

impl View for Screen {
    fn show(&self, entry: Entry) {
        self.shared.update(|m| m.show(entry));
    }

    fn transfer(&self, transfer: &TransferView) {
        self.shared.update(|m| m.transfer(transfer));
    }

    fn transfer_ended(&self, end: &TransferEnd) {
        if let Some(id) = &end.id {
            self.shared.update(|m| m.transfer_ended(id));
        }
    }

    fn status(&self, status: &Status) {
        self.shared.update(|m| m.set_status(status));
    }

    fn roster(&self, change: Roster) {
        self.shared.update(|m| m.change_roster(change));
    }

    fn shared_files(&self, files: Vec<SharedFile>) {
        let names = files.into_iter().map(|f| f.name).collect();
        self.shared.update(|m| m.shared_files(names));
    }

    fn give_back(&self, line: &str) {
        self.shared.update(|m| m.give_back(line));
    }

    fn roster_notice(&self, text: &str) -> bool {
        self.shared.update(|m| m.roster_notice(text))
    }

    fn clear(&self) {
        self.shared.update(Model::clear);
    }

    fn toggle_nicklist(&self) -> bool {
        self.shared.update(Model::toggle_nicklist);
        true
    }

    fn text_width(&self) -> Option<usize> {
        self.shared.model().text_width()
    }

    fn is_terminal(&self) -> bool {
        true
    }

    fn ask_secret(&self, prompt: &str) -> Option<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.shared.update(|m| m.ask_secret(prompt, tx));
        // The screen gone (the user quit) drops the sender: no answer.
        rx.recv().ok().filter(|s| !s.is_empty())
    }

    fn finish(&self, last_words: Option<&str>) {
        self.stop();
        if let Some(words) = last_words {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{}", imchat_core::inert(words));
            let _ = out.flush();
        }
    }
}

/// Raw mode, the alternate screen, bracketed paste; a ratatui terminal on
/// a cleared screen.
fn enter() -> io::Result<Terminal<CrosstermBackend<Stdout>>> {
    // The tests' way to a terminal that cannot be taken over.
    fail::fail_point!("client-screen-start", |_| Err(io::Error::other(
        "the terminal refused (fail point)"
    )));
    let entered = take_over()
        .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())))
        .and_then(|mut terminal| {
            // A terminal already in its alternate screen (tmux, after a
            // full-screen program was killed) keeps what is on it; ratatui
            // draws only the cells that differ from a blank screen.
            clear_all(&mut terminal)?;
            Ok(terminal)
        });
    entered.inspect_err(|_| restore())
}

/// Clears the whole screen and has the next frame draw every cell,
/// without asking the terminal where its cursor is: `Terminal::clear`
/// does (to put it back), and a terminal that never answers that query
/// would keep the interface from starting (or coming back after Ctrl-Z).
/// The screen's every frame places the cursor itself.
fn clear_all(terminal: &mut Terminal<CrosstermBackend<Stdout>>) -> io::Result<()> {
    let size = terminal.size()?;
    terminal.resize(Rect::new(0, 0, size.width, size.height))
}

/// Raw mode, the alternate screen, bracketed paste.
fn take_over() -> io::Result<()> {
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::Release);
    execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste)
}

/// Puts the terminal back as it was if the screen took it over (for a
/// client ending without the screen's own way out).
pub fn restore_terminal() {
    restore();
}

/// Puts the terminal back as it was, once.
fn restore() {
    if ACTIVE.swap(false, Ordering::AcqRel) {
        let _ = execute!(
            io::stdout(),
            DisableBracketedPaste,
            LeaveAlternateScreen,
            Show
        );
        let _ = disable_raw_mode();
    }
}

/// Ctrl-Z: puts the terminal back and stops the client as the shell's job
/// it is (SIGTSTP, as a terminal sends it outside raw mode); once the
/// shell brings it back to the foreground (`fg`), takes the terminal over
/// again, to be drawn whole. Resumed in the background (`bg`, or `kill
/// %1`, which sends SIGCONT after SIGTERM), it leaves the terminal alone
/// (touching it there would stop it again, SIGTTOU, before it could quit)
/// until it is in the foreground or `stop` is set. Where nothing can
/// resume a stopped job (no job control), the signal is ignored and the
/// screen comes back at once.
fn suspend(terminal: &mut Terminal<CrosstermBackend<Stdout>>, stop: &AtomicBool) -> io::Result<()> {
    restore();
    #[cfg(unix)]
    {
        use nix::sys::signal::{raise, Signal};
        if let Err(e) = raise(Signal::SIGTSTP) {
            log::warn!("cannot stop as a job: {e}");
        }
        while !in_foreground() {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            thread::sleep(POLL);
        }
    }
    #[cfg(not(unix))]
    let _ = stop;
    take_over()?;
    clear_all(terminal)
}

/// Whether this process's group is the terminal's foreground one (true
/// when that cannot be known: no terminal to ask).
#[cfg(unix)]
fn in_foreground() -> bool {
    nix::unistd::tcgetpgrp(io::stdin()).map_or(true, |group| group == nix::unistd::getpgrp())
}

/// Makes a panic anywhere put the terminal back before its message prints.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Tells the client to quit if the screen's thread ends by a panic: no
/// more input can come.
struct QuitIfPanicking<'a>(&'a Sender<UserInput>);

impl Drop for QuitIfPanicking<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = self.0.send(UserInput::Quit);
        }
    }
}

/// The screen's thread: events in, effects out, frames drawn.
fn run(
    shared: &Shared,
    mut terminal: Terminal<CrosstermBackend<Stdout>>,
    input: &Sender<UserInput>,
    mut history: Option<HistoryFile>,
) {
    let _quit = QuitIfPanicking(input);
    let mut last_draw: Option<Instant> = None;
    let mut draw_now = true;
    while !shared.stop.load(Ordering::Acquire) {
        let wait = match last_draw {
            Some(at) if shared.dirty.load(Ordering::Acquire) => FRAME.saturating_sub(at.elapsed()),
            _ => POLL,
        };
        let event = match event::poll(wait) {
            Ok(true) => event::read().map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        match event {
            Ok(Some(Event::Key(key))) => {
                if let Some(action) = keys::action(key) {
                    shared.update(|m| m.handle(action, Instant::now()));
                }
            }
            Ok(Some(Event::Paste(text))) => shared.update(|m| m.paste(&text)),
            Ok(Some(Event::Resize(..))) => {
                shared.dirty.store(true, Ordering::Release);
                draw_now = true;
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("terminal input failed: {e}");
                let _ = input.send(UserInput::Quit);
                break;
            }
        }

        // A first Ctrl-C's warning in the status line goes when the
        // second press would no longer quit.
        if shared.model().expire_quit_warning(Instant::now()) {
            shared.dirty.store(true, Ordering::Release);
        }
        // A transfer that moves no more says so, not the rate it had.
        if shared.model().expire_stalled(Instant::now()) {
            shared.dirty.store(true, Ordering::Release);
        }
        let (outbox, to_history, forget, bell, clear, stop) = {
            let mut m = shared.model();
            (
                std::mem::take(&mut m.outbox),
                std::mem::take(&mut m.to_history),
                std::mem::take(&mut m.forget_history),
                std::mem::take(&mut m.bell),
                std::mem::take(&mut m.clear_screen),
                std::mem::take(&mut m.suspend),
            )
        };
        if let Some(file) = &mut history {
            let written = file
                .append_all(&to_history)
                .and_then(|()| forget.iter().try_for_each(|l| file.forget(l)));
            if let Err(e) = written {
                let line = history_not_kept("write", file.path(), &e);
                shared.update(|m| m.show(Entry::Notice(line)));
                history = None;
            }
        }
        for line in outbox {
            let _ = input.send(line);
        }
        if bell {
            let backend = terminal.backend_mut();
            let _ = backend.write_all(b"\x07").and_then(|()| backend.flush());
        }
        if stop {
            if let Err(e) = suspend(&mut terminal, &shared.stop) {
                log::warn!("terminal lost after a suspend: {e}");
                let _ = input.send(UserInput::Quit);
                break;
            }
            shared.dirty.store(true, Ordering::Release);
            draw_now = true;
        }
        if clear {
            let _ = clear_all(&mut terminal);
            draw_now = true;
        }

        let due = last_draw.is_none_or(|at| at.elapsed() >= FRAME);
        if shared.dirty.load(Ordering::Acquire) && (due || draw_now) {
            shared.dirty.store(false, Ordering::Release);
            draw_now = false;
            last_draw = Some(Instant::now());
            let drawn = terminal.draw(|frame| render::draw(frame, &mut shared.model()));
            if let Err(e) = drawn {
                log::warn!("terminal output failed: {e}");
                let _ = input.send(UserInput::Quit);
                break;
            }
        }
    }
    drop(terminal);
    restore();
}

#[cfg(test)]
mod history_tests {
    use super::history_not_kept;
    use std::io;
    use std::path::Path;

    #[test]
    fn a_history_not_kept_is_one_line_of_words() {
        let e = io::Error::from_raw_os_error(20);
        assert_eq!(
            history_not_kept("write", Path::new("/x/y"), &e),
            "input history not kept: cannot write /x/y: not a directory"
        );
    }
}
