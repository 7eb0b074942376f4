//! The session kept on disk, so that a client that is killed (or crashes)
//! and is started again takes its session back from the server: its name,
//! and what was said meanwhile.
//!
//! One small text file per server and name in `imchat/sessions/` under the
//! user's data folder, private (mode 0600), holding the resume token and
//! epoch of the last `Welcome`, the newest message id seen and the next
//! client id to use. It is replaced whole (written beside, then renamed)
//! on every `Welcome`, when the newest id seen changes (at most once a
//! second) and when the client ids it covers run out; `/quit` removes it.
//!
//! A quit with no connection (the client was reconnecting) cannot tell
//! the server, and removing the file would leave the name held by a
//! session nobody can take back until its grace period ends. So the file
//! stays, marked as quit with the parting text (`quit=…`, the text with
//! `%`, controls and DEL as `%XX`); the next start takes the session back
//! only to send that quit, then joins afresh (see `app::run`). A file
//! without the line, as earlier versions wrote, is a session to resume.
//!
//! A client holds a lock beside it (`….lock`, an advisory `flock` the
//! system drops when the process ends) for as long as it runs: a second
//! client started with the same name and server does not take the
//! running one's session away; it starts a session of its own.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use imchat_core::{MessageId, ResumeToken, SavedSession, Username};

use crate::files::try_lock;

/// Client ids a written file covers ahead: the file is written again only
/// once the client has used them all. A restarted client starts past them.
pub const ID_LEASE: u64 = 1024;
/// The first line of the file: its format.
const MAGIC: &str = "imchat-session 1";

/// The folder of the saved sessions: `imchat/sessions` in the user's data
/// folder, if the system has one.
pub fn default_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("imchat").join("sessions"))
}

/// The saved session of one server and name, locked for this process.
#[derive(Debug)]
pub struct SessionFile {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held open for its lock.
    _lock: File,
    /// `host:port` as given.
    server: String,
    /// The name as given.
    name: String,
    /// What is on disk (its `next_client_id` is the bound of the ids used).
    written: Option<SavedSession>,
    /// The user private messages went to by default (`/mode unicast`), on
    /// disk with the session, so that a run killed in that mode starts in
    /// it again instead of sending the next private line to everyone.
    unicast: Option<String>,
    /// The target on disk.
    unicast_written: Option<String>,
    /// The parting text of a quit the server could not be told of, on
    /// disk with the session (see the module's documentation).
    quit: Option<String>,
    /// Why [`load`](Self::load) found a file it could not take a session
    /// from (unreadable, or not a session of this server and name).
    unreadable: Option<String>,
}

/// The most bytes of a parting text kept in the file: a file stays far
/// below [`MAX_FILE_LEN`], which [`other_hosts`] reads.
const QUIT_KEPT: usize = 1024;

/// A parting text as its line holds it: `%`, controls and DEL as `%XX`.
fn escape_quit(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c == '%' || c.is_ascii_control() {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The text [`escape_quit`] wrote; `None` if it is not one.
fn unescape_quit(text: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let pair = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&pair).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The longest start of `text`, in whole characters, of at most `max` bytes.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A part of a file name: ASCII letters, digits, `.` and `-` (and `_` in
/// names, where `keep_underscore`) as they are, any other byte as `%XX`.
fn escape(text: &str, keep_underscore: bool) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || (keep_underscore && b == b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The longest file name most file systems take (ext4, APFS, NTFS), in
/// bytes; the escaped names are ASCII.
const NAME_MAX: usize = 255;
/// The bytes kept of the escaped name and of the escaped host in the
/// name of a file whose full name would be too long: with the port and
/// the hash, at most 128 bytes, 133 with `.lock` (below eCryptfs' 143).
const PART_KEPT: usize = 48;
/// The bytes of SHA-256 kept in such a name (as hex).
const HASH_KEPT: usize = 12;

/// The file name for `name` on `host`:`port`: `alice@127.0.0.1_4000`.
///
/// A name that would not fit with its `.lock` (escaping takes 9 bytes for
/// a CJK character, 12 for some) keeps the start of the name and of the
/// host, and the port, then `~` and a SHA-256 of the full name (a hash
/// that never changes, unlike std's `DefaultHasher`):
/// `%E5%AD%97…@localhost_4000~1f2e…`. `~` is escaped in the readable form,
/// so the two never meet, and a name that fits keeps its file.
pub fn file_name(host: &str, port: u16, name: &Username) -> String {
    let (name, host) = (name.key(), host.to_lowercase());
    let full = format!("{}@{}_{port}", escape(&name, true), escape(&host, false));
    if full.len() + ".lock".len() <= NAME_MAX {
        return full;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, full.as_bytes());
    format!(
        "{}@{}_{port}~{}",
        escape_start(&name, true, PART_KEPT),
        escape_start(&host, false, PART_KEPT),
        hex(&digest.as_ref()[..HASH_KEPT])
    )
}

/// [`escape`] of the longest start of `text`, in whole characters, that
/// takes at most `max` bytes escaped.
fn escape_start(text: &str, keep_underscore: bool, max: usize) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let part = escape(c.encode_utf8(&mut buf), keep_underscore);
        if out.len() + part.len() > max {
            break;
        }
        out.push_str(&part);
    }
    out
}

/// The most entries of the sessions' folder read by [`other_hosts`].
const MAX_SCANNED: usize = 1024;
/// A larger file is not a saved session.
const MAX_FILE_LEN: u64 = 4096;

/// The host names other than `host` (in any case) that a session of
/// `name` on `port` is saved under in `dir`, read from the files (the
/// first [`MAX_SCANNED`] entries), for the caller to tell which name the
/// same server: [`SessionFile::open`] with one of them opens its file.
pub fn other_hosts(dir: &Path, host: &str, port: u16, name: &Username) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let (key, own) = (name.key(), host.to_lowercase());
    let mut hosts = Vec::new();
    for entry in entries.take(MAX_SCANNED).flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file.ends_with(".lock") || file.ends_with(".tmp") {
            continue;
        }
        let small = entry
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_FILE_LEN);
        let Some(text) = small
            .then(|| fs::read_to_string(entry.path()).ok())
            .flatten()
        else {
            continue;
        };
        let Some(lines) = session_lines(&text) else {
            continue;
        };
        let field = |k: &str| lines.iter().find(|(key, _)| *key == k).map(|e| e.1);
        let Some((other, other_port)) = field("server").and_then(|s| s.rsplit_once(':')) else {
            continue;
        };
        if field("name") == Some(key.as_str())
            && other_port.parse() == Ok(port)
            && other != own
            && file == file_name(other, port, name)
        {
            hosts.push(other.to_owned());
        }
    }
    hosts.sort();
    hosts
}

/// The `key=value` lines of a saved session's `text`; `None` if it is
/// not one (another first line, or a line without `=`).
fn session_lines(text: &str) -> Option<Vec<(&str, &str)>> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    lines.map(|l| l.split_once('=')).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in text.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Creates `path` (and its parents) private to the user.
fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// `e`, met making the folder `dir`, as one line naming what is in the
/// way (a file where a folder goes) or the folder, instead of the
/// system's "File exists (os error 17)".
fn folder_error(dir: &Path, e: io::Error) -> io::Error {
    let why = match dir.ancestors().find(|p| p.exists() && !p.is_dir()) {
        Some(file) => format!("{} is a file, not a folder", file.display()),
        None => format!("{}: {}", dir.display(), imchat_cli::io_reason(&e)),
    };
    io::Error::new(e.kind(), why)
}

/// `e`, met writing the file `path`, as one line naming it (a folder
/// where it goes said so).
fn file_error(path: &Path, e: io::Error) -> io::Error {
    let why = if path.is_dir() {
        format!("{} is a folder, not a file", path.display())
    } else {
        format!("{}: {}", path.display(), imchat_cli::io_reason(&e))
    };
    io::Error::new(e.kind(), why)
}

/// Opens `path` for writing, created private to the user (mode 0600).
fn open_private(path: &Path, truncate: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

impl SessionFile {
    /// The saved session of `name` on `host`:`port` in `dir` (created):
    /// `Ok(None)` when another running client holds it.
    pub fn open(dir: &Path, host: &str, port: u16, name: &Username) -> io::Result<Option<Self>> {
        create_private_dir(dir).map_err(|e| folder_error(dir, e))?;
        let base = file_name(host, port, name);
        let path = dir.join(&base);
        let lock_path = dir.join(format!("{base}.lock"));
        let lock = open_private(&lock_path, false).map_err(|e| file_error(&lock_path, e))?;
        if !try_lock(&lock)? {
            return Ok(None);
        }
        Ok(Some(SessionFile {
            path,
            lock_path,
            _lock: lock,
            server: format!("{}:{port}", host.to_lowercase()),
            name: name.key(),
            written: None,
            unicast: None,
            unicast_written: None,
            quit: None,
            unreadable: None,
        }))
    }

    /// The session saved by an earlier run, if the file holds one for
    /// this server and name. A file that is there but holds no session
    /// for them is left as it is, and [`unreadable`](Self::unreadable)
    /// says why.
    pub fn load(&mut self) -> Option<SavedSession> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.unreadable = Some(imchat_cli::io_reason(&e));
                return None;
            }
        };
        let saved = self.parse(&text);
        if saved.is_none() {
            log::info!("ignoring {}: not a saved session", self.path.display());
            self.unreadable = Some(format!(
                "not a saved session of {} on {}",
                self.name, self.server
            ));
        }
        self.written = saved;
        saved
    }

    /// Why the session file that [`load`](Self::load) found gave no
    /// session, in one line naming the file; `None` when there was no
    /// file, or it gave one.
    pub fn unreadable(&self) -> Option<String> {
        self.unreadable.as_ref().map(|why| {
            format!(
                "the session saved in {} was not taken back: {why}",
                self.path.display()
            )
        })
    }

    fn parse(&mut self, text: &str) -> Option<SavedSession> {
        let (mut server, mut name, mut token, mut epoch, mut seen, mut next) =
            (None, None, None, None, None, None);
        let (mut unicast, mut quit) = (None, None);
        for (key, value) in session_lines(text)? {
            match key {
                "server" => server = Some(value),
                "name" => name = Some(value),
                "token" => token = Some(ResumeToken(unhex(value)?)),
                "epoch" => epoch = Some(value.parse().ok()?),
                "last_seen" => seen = Some(MessageId(value.parse().ok()?)),
                "next_client_id" => next = Some(value.parse().ok()?),
                "unicast" => unicast = Some(value.to_owned()),
                "quit" => quit = Some(unescape_quit(value)?),
                _ => {}
            }
        }
        if server? != self.server || name? != self.name {
            return None;
        }
        self.unicast.clone_from(&unicast);
        self.unicast_written = unicast;
        self.quit = quit;
        Some(SavedSession {
            token: token?,
            epoch: epoch?,
            last_seen: seen?,
            next_client_id: next?,
        })
    }

    /// The parting text of the quit the session loaded is marked with:
    /// the user quit it while the server could not be told.
    pub fn quit_reason(&self) -> Option<&str> {
        self.quit.as_deref()
    }

    /// Marks the session on disk as quit with `reason` (see the module's
    /// documentation), synced: the client leaves without a connection.
    /// Nothing is done if no session was saved.
    pub fn mark_quit(&mut self, reason: &str) -> io::Result<()> {
        let Some(w) = self.written else {
            return Ok(());
        };
        self.quit = Some(truncate(reason, QUIT_KEPT).to_owned());
        self.write(w, true)
    }

    /// The `/mode unicast` target saved with the session loaded.
    pub fn unicast(&self) -> Option<&str> {
        self.unicast.as_deref()
    }

    /// Sets the `/mode unicast` target kept with the session (`None`:
    /// broadcast); written with the next [`save`](Self::save).
    pub fn set_unicast(&mut self, to: Option<&str>) {
        self.unicast = to.map(str::to_owned);
    }

    /// Saves `s` if it changed. When the token or epoch changed, its
    /// client ids run past what the file covers, or with `force`, the file
    /// is synced to the disk; a newer id seen alone is only written (a run
    /// killed, even with `kill -9`, leaves it to the next; a machine that
    /// loses power may leave an older id, and the next run is sent again
    /// what it had shown). The caller writes it after each batch it shows.
    /// The `/mode unicast` target goes with it.
    pub fn save(&mut self, s: &SavedSession, force: bool) -> io::Result<()> {
        let lease = match self.written {
            Some(w) if s.next_client_id < w.next_client_id => w.next_client_id,
            _ => s.next_client_id.saturating_add(ID_LEASE),
        };
        let new = SavedSession {
            next_client_id: lease,
            ..*s
        };
        // Another session: the quit was of the one before.
        if self.written.is_none_or(|w| !w.token.matches(&new.token)) {
            self.quit = None;
        }
        let urgent = force
            || self.written.is_none_or(|w| {
                !w.token.matches(&new.token)
                    || w.epoch != new.epoch
                    || w.next_client_id != new.next_client_id
            });
        let changed = self.written != Some(new) || self.unicast != self.unicast_written;
        if !(urgent || changed) {
            return Ok(());
        }
        self.write(new, urgent)
    }

    /// Writes the `/mode unicast` target now, with the session last saved,
    /// if it changed: a run killed right after `/mode` comes back in it.
    pub fn save_mode(&mut self) -> io::Result<()> {
        match self.written {
            Some(w) if self.unicast != self.unicast_written => self.write(w, false),
            _ => Ok(()),
        }
    }

    /// Replaces the file with `new` and the mode, synced with `sync`.
    fn write(&mut self, new: SavedSession, sync: bool) -> io::Result<()> {
        let text = format!(
            "{MAGIC}\nserver={}\nname={}\ntoken={}\nepoch={}\nlast_seen={}\nnext_client_id={}\n",
            self.server,
            self.name,
            hex(&new.token.0),
            new.epoch,
            new.last_seen.0,
            new.next_client_id
        ) + &self
            .unicast
            .as_ref()
            .map_or(String::new(), |u| format!("unicast={u}\n"))
            + &self
                .quit
                .as_ref()
                .map_or(String::new(), |q| format!("quit={}\n", escape_quit(q)));
        // `.tmp` added, not put in place of what follows the last dot
        // (`with_extension`), which `127.0.0.1` and `127.0.0.2` share.
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = open_private(&tmp, true).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            if sync {
                file.sync_data()?;
            }
            Ok(())
        });
        if let Err(e) = written
            .map_err(|e| file_error(&tmp, e))
            .and_then(|()| fs::rename(&tmp, &self.path).map_err(|e| file_error(&self.path, e)))
        {
            // Not left behind for every failed save to find again.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.written = Some(new);
        self.unicast_written.clone_from(&self.unicast);
        Ok(())
    }

    /// The session ended for good (`/quit`, or the server offers no
    /// resume): nothing is left to take back.
    pub fn remove(&mut self) {
        if self.written.take().is_some() || self.path.exists() {
            let _ = fs::remove_file(&self.path);
        }
    }

    /// Gives the lock back and removes its file, leaving the session file
    /// as it is: a run that failed to join (refused, or no server) leaves
    /// what an earlier run saved, and no lock file of its own.
    pub fn release(self) {
        let _ = fs::remove_file(&self.lock_path);
    }

    /// [`remove`](Self::remove), and the lock file too: the client is leaving.
    pub fn close(mut self) {
        self.remove();
        let _ = fs::remove_file(&self.lock_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::new(s).unwrap()
    }

    fn saved(last_seen: u64, next: u64) -> SavedSession {
        SavedSession {
            token: ResumeToken([7; 16]),
            epoch: 42,
            last_seen: MessageId(last_seen),
            next_client_id: next,
        }
    }

    #[test]
    fn file_names_keep_servers_and_names_apart() {
        assert_eq!(
            file_name("127.0.0.1", 4000, &name("Alice")),
            "alice@127.0.0.1_4000"
        );
        assert_eq!(file_name("::1", 4000, &name("a_b")), "a_b@%3A%3A1_4000");
        assert_ne!(
            file_name("a_b", 1, &name("x")),
            file_name("a", 1, &name("x")),
        );
    }

    /// The longest names, in scripts whose characters take 9 or 12 bytes
    /// once escaped, on the longest host names: their files fit (255
    /// bytes is the limit of most file systems), `.lock` included.
    #[test]
    fn every_name_on_any_host_gives_a_file_name_that_fits() {
        let long_host = format!("{}.example", "a".repeat(245));
        let unicode_host = "例".repeat(84);
        for who in ["a", &"字".repeat(32), &"𠀀".repeat(32), &"İ".repeat(32)] {
            for host in ["localhost", "::1", long_host.as_str(), &unicode_host] {
                let base = file_name(host, 65535, &name(who));
                assert!(
                    base.len() + ".lock".len() <= 255,
                    "{who} on {host}: {} bytes",
                    base.len()
                );
            }
        }
        // And a session saved under one comes back.
        let dir = tempfile::tempdir().unwrap();
        let who = name(&"字".repeat(32));
        let mut f = SessionFile::open(dir.path(), &long_host, 4000, &who)
            .unwrap()
            .unwrap();
        f.save(&saved(5, 1), false).unwrap();
        drop(f);
        let mut again = SessionFile::open(dir.path(), &long_host, 4000, &who)
            .unwrap()
            .unwrap();
        assert_eq!(again.load(), Some(saved(5, 1 + ID_LEASE)));
    }

    /// The name of a long one's file is the same from one build (and Rust
    /// release) to the next: its session survives an upgrade.
    #[test]
    fn a_long_name_s_file_name_never_changes() {
        assert_eq!(
            file_name("LocalHost", 4000, &name(&"字".repeat(32))),
            "%E5%AD%97%E5%AD%97%E5%AD%97%E5%AD%97%E5%AD%97@localhost_4000~5b483f2f9dca0a83874a1fac"
        );
        // Whole characters: 5 of 9 bytes in the 48 kept.
        assert_eq!(escape_start("a字", true, 9), "a");
        assert_eq!(escape_start("a字", true, 10), "a%E5%AD%97");
    }

    #[test]
    fn long_names_that_start_alike_keep_files_of_their_own() {
        let stem = "字".repeat(31);
        let (a, b) = (name(&format!("{stem}a")), name(&format!("{stem}b")));
        let host = "h".repeat(200);
        assert_ne!(file_name("h", 1, &a), file_name("h", 1, &b));
        assert_ne!(
            file_name(&host, 1, &a),
            file_name(&format!("{host}x"), 1, &a)
        );
        assert_ne!(file_name(&host, 1, &a), file_name(&host, 2, &a));
    }

    /// A session file that cannot be read is named with the reason in
    /// the client's words, not the system's `(os error 21)`.
    #[test]
    fn a_session_file_that_cannot_be_read_says_why_in_one_short_reason() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("alice@localhost_4000")).unwrap();
        let mut f = SessionFile::open(dir.path(), "localhost", 4000, &name("alice"))
            .unwrap()
            .unwrap();
        assert_eq!(f.load(), None);
        let why = f.unreadable().unwrap();
        assert!(!why.contains("os error"), "{why}");
        assert!(why.ends_with("was not taken back: is a directory"), "{why}");
    }

    #[test]
    fn a_saved_session_comes_back_private_and_only_for_its_server_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SessionFile::open(dir.path(), "localhost", 4000, &name("alice"))
            .unwrap()
            .unwrap();
        f.save(&saved(5, 1), false).unwrap();
        drop(f);
        let path = dir.path().join("alice@localhost_4000");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let mut f = SessionFile::open(dir.path(), "localhost", 4000, &name("alice"))
            .unwrap()
            .unwrap();
        assert_eq!(f.load(), Some(saved(5, 1 + ID_LEASE)));
        // A file copied under another server's name is not that server's.
        fs::copy(&path, dir.path().join("alice@localhost_4001")).unwrap();
        let mut other = SessionFile::open(dir.path(), "localhost", 4001, &name("alice"))
            .unwrap()
            .unwrap();
        assert_eq!(other.load(), None);
        f.close();
        assert!(!path.exists());
    }

    #[test]
    fn sessions_of_a_name_and_port_under_other_hosts_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let alice = name("Alice");
        for (host, port, who) in [
            ("127.0.0.1", 4000, &alice),
            ("::1", 4000, &alice),
            ("LocalHost", 4000, &alice),
            ("127.0.0.1", 4001, &alice),
            ("127.0.0.1", 4000, &name("bob")),
        ] {
            let mut f = SessionFile::open(dir.path(), host, port, who)
                .unwrap()
                .unwrap();
            f.save(&saved(1, 1), false).unwrap();
        }
        // Not a session: another file, a copy under another file's name.
        fs::write(dir.path().join("notes"), "name=alice\nserver=x:4000\n").unwrap();
        fs::copy(
            dir.path().join("alice@127.0.0.1_4000"),
            dir.path().join("alice@example_4000"),
        )
        .unwrap();
        assert_eq!(
            other_hosts(dir.path(), "localhost", 4000, &alice),
            ["127.0.0.1", "::1"]
        );
        assert_eq!(
            other_hosts(dir.path(), "nowhere", 4000, &alice),
            ["127.0.0.1", "::1", "localhost"]
        );
        assert!(other_hosts(dir.path(), "localhost", 4002, &alice).is_empty());
        assert!(other_hosts(&dir.path().join("none"), "h", 1, &alice).is_empty());
    }

    /// The file written beside is the session's own: `….1_4000.tmp`, not
    /// `alice@127.0.0.tmp`, which another host's session would share.
    #[test]
    fn each_session_writes_beside_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("alice@127.0.0.tmp")).unwrap();
        let mut f = SessionFile::open(dir.path(), "127.0.0.1", 4000, &name("alice"))
            .unwrap()
            .unwrap();
        f.save(&saved(1, 1), false).unwrap();
    }

    #[test]
    fn a_running_client_keeps_its_session_from_a_second_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = SessionFile::open(dir.path(), "h", 1, &name("alice")).unwrap();
        assert!(first.is_some());
        let second = SessionFile::open(dir.path(), "h", 1, &name("alice")).unwrap();
        assert!(second.is_none(), "locked by the first");
        drop(first);
        let third = SessionFile::open(dir.path(), "h", 1, &name("alice")).unwrap();
        assert!(third.is_some(), "the lock goes with its holder");
    }

    #[test]
    fn the_unicast_target_is_kept_with_the_session_until_broadcast_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SessionFile::open(dir.path(), "h", 1, &name("alice"))
            .unwrap()
            .unwrap();
        f.save(&saved(1, 1), false).unwrap();
        f.set_unicast(Some("bob"));
        // Written at once, without a session to save.
        f.save_mode().unwrap();
        drop(f);
        let mut again = SessionFile::open(dir.path(), "h", 1, &name("alice"))
            .unwrap()
            .unwrap();
        assert!(again.load().is_some());
        assert_eq!(again.unicast(), Some("bob"));
        again.set_unicast(None);
        again.save(&saved(1, 1), false).unwrap();
        drop(again);
        let mut third = SessionFile::open(dir.path(), "h", 1, &name("alice"))
            .unwrap()
            .unwrap();
        assert!(third.load().is_some());
        assert_eq!(third.unicast(), None);
    }

    #[test]
    fn the_newest_id_is_written_at_once_and_ids_before_they_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SessionFile::open(dir.path(), "h", 1, &name("alice"))
            .unwrap()
            .unwrap();
        let path = dir.path().join("alice@h_1");
        f.save(&saved(1, 1), false).unwrap();
        let on_disk = || fs::read_to_string(&path).unwrap();
        // A newer id seen: on disk at once, however soon after.
        f.save(&saved(2, 3), false).unwrap();
        assert!(on_disk().contains("last_seen=2\n"), "{}", on_disk());
        assert!(on_disk().contains(&format!("next_client_id={}\n", 1 + ID_LEASE)));
        // The ids run out: written at once, covering the next ones.
        f.save(&saved(2, 1 + ID_LEASE), false).unwrap();
        assert!(on_disk().contains(&format!("next_client_id={}\n", 1 + 2 * ID_LEASE)));
        // A new token: at once.
        let mut fresh = saved(3, 1 + ID_LEASE);
        fresh.token = ResumeToken([9; 16]);
        f.save(&fresh, false).unwrap();
        assert!(on_disk().contains(&format!("token={}\n", "09".repeat(16))));
    }

    /// A quit without a connection marks the file with its parting text
    /// (any text comes back as it was); a file of an earlier version,
    /// without the mark, still loads, unmarked; the next session saved
    /// (a new token) is not marked.
    #[test]
    fn a_session_quit_offline_is_kept_marked_with_its_parting_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice@h_1");
        let open = || {
            SessionFile::open(dir.path(), "h", 1, &name("alice"))
                .unwrap()
                .unwrap()
        };
        // As an earlier version wrote it.
        fs::write(
            &path,
            format!(
                "{MAGIC}\nserver=h:1\nname=alice\ntoken={}\nepoch=42\nlast_seen=5\nnext_client_id=9\n",
                "07".repeat(16)
            ),
        )
        .unwrap();
        let mut f = open();
        assert_eq!(f.load(), Some(saved(5, 9)));
        assert_eq!(f.quit_reason(), None);
        let reason = "bye 100% =all\r\u{7f} ok é";
        f.mark_quit(reason).unwrap();
        drop(f);
        let mut f = open();
        assert_eq!(f.load(), Some(saved(5, 9)), "the session stays");
        assert_eq!(f.quit_reason(), Some(reason));
        let mut fresh = saved(1, 1);
        fresh.token = ResumeToken([9; 16]);
        f.save(&fresh, true).unwrap();
        drop(f);
        let mut f = open();
        assert!(f.load().is_some());
        assert_eq!(f.quit_reason(), None);
        // Nothing saved: nothing to mark.
        f.remove();
        f.mark_quit("x").unwrap();
        assert!(!path.exists());
    }
}
