//! `--chat-log PATH`: a transcript of the chat on disk, as irssi's and
//! weechat's loggers keep: every line the chat shows, with its date and
//! time, appended to one file, whatever view shows it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use imchat_core::inert;

use crate::ui::plain_chat;
use crate::view::{Entry, Roster, SharedFile, Status, TransferEnd, TransferView, View};

/// A [`View`] that also appends every chat line to a file.
pub struct ChatLog {
    inner: Arc<dyn View>,
    file: Mutex<Option<File>>,
}

impl ChatLog {
    /// Opens `path` for appending (created with mode 0600: a transcript is
    /// private) and logs what `inner` is shown.
    pub fn open(path: &Path, inner: Arc<dyn View>) -> io::Result<ChatLog> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        writeln!(file, "{} --- log opened", stamp(SystemTime::now()))?;
        Ok(ChatLog {
            inner,
            file: Mutex::new(Some(file)),
        })
    }

    fn append(&self, time: SystemTime, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(f) = file.as_mut() else { return };
        if let Err(e) = writeln!(f, "{} {line}", stamp(time)) {
            // Said once; the chat goes on without its transcript.
            log::warn!("writing the chat log failed: {e}; logging stops");
            *file = None;
        }
    }
}

/// `2026-11-30 16:01:02`, local time.
pub(crate) fn stamp(time: SystemTime) -> String {
    let local: chrono::DateTime<chrono::Local> = time.into();
    local.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The line an entry is logged as: the plain line, its texts made inert
/// (a log is read on a terminal), with our own messages (which plain
/// output does not echo) marked as such, and replayed history marked (its
/// time is the original one; the log may hold it already).
fn line(entry: &Entry) -> String {
    match entry.clone().inert() {
        Entry::Chat(c) if c.own && c.action => match &c.to {
            Some(to) => format!("* {} {} (to {to})", c.from, c.text),
            None => format!("* {} {}", c.from, c.text),
        },
        Entry::Chat(c) if c.own => match &c.to {
            Some(to) => format!("<{}> (to {to}) {}", c.from, c.text),
            None => format!("<{}> {}", c.from, c.text),
        },
        Entry::Chat(c) if c.history => format!("[history] {}", plain_chat(&c)),
        Entry::Chat(c) => plain_chat(&c),
        Entry::Notice(text) | Entry::NoticeAt { text, .. } => format!("*** {text}"),
        Entry::Error(text) => format!("error: {text}"),
        Entry::Plain(text) => text,
    }
}

impl View for ChatLog {
    fn show(&self, entry: Entry) {
        let time = entry.time().unwrap_or_else(SystemTime::now);
        self.append(time, &line(&entry));
        self.inner.show(entry);
    }
    fn transfer(&self, transfer: &TransferView) {
        self.inner.transfer(transfer);
    }
    fn transfer_ended(&self, end: &TransferEnd) {
        self.inner.transfer_ended(end);
    }
    fn status(&self, status: &Status) {
        self.inner.status(status);
    }
    fn roster(&self, change: Roster) {
        self.inner.roster(change);
    }
    fn shared_files(&self, files: Vec<SharedFile>) {
        self.inner.shared_files(files);
    }
    fn roster_notice(&self, text: &str) -> bool {
        let shown = self.inner.roster_notice(text);
        if shown {
            self.append(SystemTime::now(), &line(&Entry::Notice(text.to_owned())));
        }
        shown
    }
    fn clear(&self) {
        self.inner.clear();
    }
    fn give_back(&self, line: &str) {
        self.inner.give_back(line);
    }
    fn toggle_nicklist(&self) -> bool {
        self.inner.toggle_nicklist()
    }
    fn text_width(&self) -> Option<usize> {
        self.inner.text_width()
    }
    fn is_terminal(&self) -> bool {
        self.inner.is_terminal()
    }
    fn finish(&self, last_words: Option<&str>) {
        if let Some(words) = last_words {
            self.append(SystemTime::now(), &inert(words));
        }
        self.append(SystemTime::now(), "--- log closed");
        self.inner.finish(last_words);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::testing::chat;

    /// Records what reaches it.
    #[derive(Default)]
    struct Seen(Mutex<Vec<Entry>>);

    impl View for Seen {
        fn show(&self, entry: Entry) {
            self.0.lock().unwrap().push(entry);
        }
        /// Shown (as a screen without its nick list) unless it names bob.
        fn roster_notice(&self, text: &str) -> bool {
            let shown = !text.contains("bob");
            if shown {
                self.show(Entry::Notice(text.into()));
            }
            shown
        }
        fn transfer(&self, _: &TransferView) {}
        fn transfer_ended(&self, _: &TransferEnd) {}
        fn status(&self, _: &Status) {}
        fn roster(&self, _: Roster) {}
        fn shared_files(&self, _: Vec<SharedFile>) {}
        fn finish(&self, _: Option<&str>) {}
    }

    #[test]
    fn every_chat_line_is_logged_with_its_time_and_still_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.log");
        let seen = Arc::new(Seen::default());
        let log = ChatLog::open(&path, seen.clone()).unwrap();
        let bob = chat("bob", "hi");
        log.show(Entry::Chat(bob.clone()));
        let mut own = chat("alice", "psst");
        (own.own, own.private, own.to) = (true, true, Some("bob".into()));
        log.show(Entry::Chat(own));
        log.show(Entry::Notice("carol has joined".into()));
        let mut old = chat("dave", "earlier");
        old.history = true;
        log.show(Entry::Chat(old));
        log.finish(Some("*** server shutting down: bye"));
        assert_eq!(seen.0.lock().unwrap()[0], Entry::Chat(bob.clone()));
        assert_eq!(seen.0.lock().unwrap().len(), 4);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(lines[0].ends_with(" --- log opened"));
        assert_eq!(lines[1], format!("{} <bob> hi", stamp(bob.time)));
        assert!(lines[2].ends_with(" <alice> (to bob) psst"), "{}", lines[2]);
        assert!(lines[3].ends_with(" *** carol has joined"));
        assert!(
            lines[4].ends_with(" [history] <dave> earlier"),
            "{}",
            lines[4]
        );
        assert!(lines[5].ends_with(" *** server shutting down: bye"));
        assert!(lines[6].ends_with(" --- log closed"));
        let date = &lines[3][..19];
        assert!(
            chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%S").is_ok(),
            "{date}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second run appends.
        drop(ChatLog::open(&path, seen).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 8);
    }

    /// A join or a leave is logged with the time the server noted (one
    /// replayed after a resume happened before it arrived), as a chat is.
    #[test]
    fn a_join_or_leave_is_logged_with_its_own_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.log");
        let seen = Arc::new(Seen::default());
        let log = ChatLog::open(&path, seen.clone()).unwrap();
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let left = Entry::NoticeAt {
            time,
            text: "bob has left (a\nb)".into(),
            missed: false,
        };
        log.show(left.clone());
        assert_eq!(*seen.0.lock().unwrap(), [left], "shown, raw");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            format!("{} *** bob has left (a^Jb)", stamp(time)),
            "{text}"
        );
    }

    #[test]
    fn the_log_is_inert_and_the_view_behind_it_gets_the_raw_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.log");
        let seen = Arc::new(Seen::default());
        let log = ChatLog::open(&path, seen.clone()).unwrap();
        let raw = chat("bob\u{200b}", "a\nb\u{202e}c");
        log.show(Entry::Chat(raw.clone()));
        log.show(Entry::Notice("bob has left (a\nb\x1b[2J)".into()));
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                Entry::Chat(raw),
                Entry::Notice("bob has left (a\nb\x1b[2J)".into())
            ],
            "as given, for a JSON view behind"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert!(
            lines[1].ends_with(" <bob\\u{200b}> a^Jb\\u{202e}c"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with(" *** bob has left (a^Jb^[[2J)"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn who_is_online_on_joining_is_logged_only_where_the_view_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.log");
        let seen = Arc::new(Seen::default());
        let log = ChatLog::open(&path, seen.clone()).unwrap();
        assert!(log.roster_notice("online (2): alice, carol"));
        assert!(!log.roster_notice("online (2): alice, bob"));
        assert_eq!(
            *seen.0.lock().unwrap(),
            [Entry::Notice("online (2): alice, carol".into())]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[1].ends_with(" *** online (2): alice, carol"),
            "{}",
            lines[1]
        );
    }
}
