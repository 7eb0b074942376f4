//! The shared folder: listing it and opening one of its files, never
//! anything outside it.
//!
//! A [`FileName`] is already one safe path component (no `/`, `\`, `..`,
//! NUL or control characters). What is left to check here is what the name
//! points at on disk: only regular files are served, and a symbolic link
//! only when its target is a regular file inside the folder.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use imchat_core::{inert, CancelCode, FileEntry, FileName, NameError};
use unicode_normalization::UnicodeNormalization;

/// The shared folder, as given and resolved.
#[derive(Debug, Clone)]
pub struct SharedDir {
    /// The canonical path: every check compares against it.
    root: PathBuf,
    /// The server's own files, never listed nor served (see
    /// [`keep_out`](Self::keep_out)).
    own: Vec<OwnFile>,
}

/// Which of the server's own files an [`OwnFile`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnKind {
    /// The history database: it and its `-wal`, `-shm`, `-journal` and
    /// `.lock` files.
    Database,
    /// The log file: it, its rotated parts (`.1`, `.2`…) and its `.lock`.
    Log,
    /// A secret the server reads: its password file, its TLS key.
    Secret,
}

impl OwnKind {
    /// The suffixes of its companions with a fixed name ("" for itself).
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            OwnKind::Database => &["", "-wal", "-shm", "-journal", ".lock"],
            OwnKind::Log => &["", ".lock"],
            OwnKind::Secret => &[""],
        }
    }

    /// True when `name` is `base` or one of its companions.
    fn names(self, base: &OsStr, name: &OsStr) -> bool {
        let (Some(base), Some(name)) = (base.to_str(), name.to_str()) else {
            return base == name;
        };
        let Some(rest) = name.strip_prefix(base) else {
            return false;
        };
        self.suffixes().contains(&rest) || (self == OwnKind::Log && is_rotation_suffix(rest))
    }
}

/// `.N`: the suffix of a rotated log file.
fn is_rotation_suffix(rest: &str) -> bool {
    rest.strip_prefix('.')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One of the server's own files, by the folder it is in (canonical) and
/// its name there.
#[derive(Debug, Clone)]
struct OwnFile {
    dir: PathBuf,
    name: OsString,
    kind: OwnKind,
}

/// The identities (device and inode) of the server's own files as they
/// are now: another name for one of them (a hard link) is one of them.
type OwnIds = HashSet<(u64, u64)>;

/// Why a file of the folder is not offered, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeftOut {
    /// Its name breaks the file-name rules.
    Unnamable,
    /// Its name starts with a dot.
    Hidden,
    /// The server may not read it (its permissions).
    Unreadable,
}

impl LeftOut {
    /// Why, in the words of the start line.
    pub fn reason(self) -> &'static str {
        match self {
            LeftOut::Unnamable => {
                "their names cannot be sent (control, invisible or reserved characters, or a device name)"
            }
            LeftOut::Hidden => "hidden (name starts with a dot)",
            LeftOut::Unreadable => "the server may not read them (their permissions)",
        }
    }
}

/// The start-up lines that name the files of the shared folder left out
/// (see [`SharedDir::left_out`]), one per reason, each name shown so the
/// operator can tell it apart (see [`shown_in_log`]).
pub fn left_out_lines(left_out: &[(String, LeftOut)]) -> Vec<String> {
    let mut reasons: Vec<LeftOut> = left_out.iter().map(|(_, why)| *why).collect();
    reasons.sort();
    reasons.dedup();
    reasons
        .into_iter()
        .map(|why| {
            let names: Vec<String> = left_out
                .iter()
                .filter(|(_, w)| *w == why)
                .map(|(name, _)| shown_in_log(name))
                .collect();
            format!(
                "shared folder: {} file(s) left out, {}: {}",
                names.len(),
                why.reason(),
                names.join(", ")
            )
        })
        .collect()
}

/// A file name as a log line shows it: as it is when plain, else quoted
/// and escaped as Rust writes strings (`"tab\tname.txt"`,
/// `"trail.txt "`), so that a tab, a control, a blank at either end, an
/// invisible character, a comma-space (the list's separator) or a name
/// that was not UTF-8 (U+FFFD) is seen, never mistaken.
pub fn shown_in_log(name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with(char::is_whitespace)
        && !name.ends_with(char::is_whitespace)
        && !name.starts_with('"')
        && !name.contains(", ")
        && !name.chars().any(|c| c.is_control() || c == '\u{fffd}')
        && inert(name) == name;
    if plain {
        name.to_owned()
    } else {
        // `{:?}` escapes controls and most invisible characters; `inert`
        // what it may leave.
        inert(&format!("{name:?}")).into_owned()
    }
}

/// True unless the server is refused the right to read the file at
/// `path` (a regular file: the open does not block nor follow a link).
fn readable(path: &Path) -> bool {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    !matches!(options.open(path), Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
}

/// Why a download was refused: the code and the text for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: CancelCode,
    pub reason: String,
    /// Entries of the folder read to look for the name under another
    /// encoding (0: none): the work the request cost, as a list's.
    pub searched: usize,
}

impl Refusal {
    fn new(code: CancelCode, reason: String) -> Self {
        Refusal {
            code,
            reason,
            searched: 0,
        }
    }
}

pub use imchat_cli::io_reason;

impl SharedDir {
    /// Checks that `path` is a readable folder. The error is one line for the user.
    pub fn open(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let meta = fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("shared folder '{shown}' does not exist"),
            _ => format!("cannot open the shared folder '{shown}': {}", io_reason(&e)),
        })?;
        if !meta.is_dir() {
            return Err(format!("shared folder '{shown}' is not a folder"));
        }
        let root = fs::canonicalize(path)
            .map_err(|e| format!("cannot open the shared folder '{shown}': {}", io_reason(&e)))?;
        fs::read_dir(&root)
            .map_err(|e| format!("cannot read the shared folder '{shown}': {}", io_reason(&e)))?;
        Ok(SharedDir {
            root,
            own: Vec::new(),
        })
    }

    /// Never lists nor serves the server's own file at `path` (its history
    /// database, its log file, its password file or TLS key), nor its
    /// companions: the database's
    /// `-wal`, `-shm`, `-journal` and `.lock`, the log's rotated parts and
    /// `.lock`. They are told apart by their folder's canonical path and
    /// their name (both as given and with every link resolved), and by
    /// their inode, so that another name for one of them is left out too;
    /// a file of the same name in another folder is not one of them.
    pub fn keep_out(&mut self, kind: OwnKind, path: &Path) {
        let Some(name) = path.file_name() else {
            return;
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut add = |dir: PathBuf, name: OsString| {
            if !self.own.iter().any(|o| o.dir == dir && o.name == name) {
                self.own.push(OwnFile { dir, name, kind });
            }
        };
        if let Ok(dir) = fs::canonicalize(dir) {
            add(dir, name.to_owned());
        }
        if let Ok(real) = fs::canonicalize(path) {
            if let (Some(dir), Some(name)) = (real.parent(), real.file_name()) {
                add(dir.to_path_buf(), name.to_owned());
            }
        }
    }

    /// The kinds of the server's own files that are in the folder now, or
    /// would be once created: for the line that says they are left out.
    pub fn own_files_here(&self) -> Vec<OwnKind> {
        let ids = self.own_ids();
        let linked_here = |kind: OwnKind| {
            fs::read_dir(&self.root)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let path = e.path();
                    fs::symlink_metadata(&path)
                        .is_ok_and(|m| self.own_kind(&path, &m, &ids) == Some(kind))
                })
        };
        let mut kinds = Vec::new();
        for kind in [OwnKind::Database, OwnKind::Log, OwnKind::Secret] {
            let named = self
                .own
                .iter()
                .any(|o| o.kind == kind && o.dir == self.root);
            if named || linked_here(kind) {
                kinds.push(kind);
            }
        }
        kinds
    }

    /// The identities of the server's own files that exist now.
    fn own_ids(&self) -> OwnIds {
        let mut ids = OwnIds::new();
        for own in &self.own {
            let mut paths: Vec<PathBuf> = own
                .kind
                .suffixes()
                .iter()
                .map(|suffix| {
                    let mut name = own.name.clone();
                    name.push(suffix);
                    own.dir.join(name)
                })
                .collect();
            if own.kind == OwnKind::Log {
                paths.extend(
                    fs::read_dir(&own.dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| {
                            let name = e.file_name();
                            name != own.name && own.kind.names(&own.name, &name)
                        })
                        .map(|e| e.path()),
                );
            }
            ids.extend(
                paths
                    .iter()
                    .filter_map(|p| identity(&fs::metadata(p).ok()?)),
            );
        }
        ids
    }

    /// Which of the server's own files the file at canonical `path`, with
    /// `meta`, is, if it is one.
    fn own_kind(&self, path: &Path, meta: &Metadata, ids: &OwnIds) -> Option<OwnKind> {
        let (dir, name) = (path.parent()?, path.file_name()?);
        if let Some(own) = self
            .own
            .iter()
            .find(|o| o.dir == dir && o.kind.names(&o.name, name))
        {
            return Some(own.kind);
        }
        let id = identity(meta)?;
        if !ids.contains(&id) {
            return None;
        }
        // Another name for one of them: which one, for the start line.
        self.own
            .iter()
            .map(|o| o.kind)
            .find(|&kind| {
                self.own.iter().filter(|o| o.kind == kind).any(|o| {
                    kind.suffixes().iter().any(|suffix| {
                        let mut n = o.name.clone();
                        n.push(suffix);
                        fs::metadata(o.dir.join(n)).ok().and_then(|m| identity(&m)) == Some(id)
                    })
                })
            })
            // Not a database's file nor the log itself: a rotated part.
            .or(Some(OwnKind::Log))
    }

    /// The canonical path of the folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files that can be downloaded, sorted as people read names
    /// ([`imchat_core::name_order`]): regular files, and
    /// links to regular files inside the folder, whose names are valid
    /// [`FileName`]s, that the server can read and that are not its own
    /// (see [`keep_out`](Self::keep_out)). Anything else is left out.
    pub fn list(&self) -> io::Result<Vec<FileEntry>> {
        let ids = self.own_ids();
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(name) = FileName::new(name) else {
                continue;
            };
            if let Ok((path, meta)) = self.resolve(&name, &ids) {
                if readable(&path) {
                    files.push(FileEntry {
                        name,
                        size: meta.len(),
                    });
                }
            }
        }
        // As people read names, as `ls -v` and file managers list them:
        // `part2` before `part10`, `b.txt` before `C.txt`.
        files.sort_by(|a, b| imchat_core::name_order(a.name.as_str(), b.name.as_str()));
        Ok(files)
    }

    /// The folder's files that are not offered and the operator should
    /// know about, as named on disk (a name that is not UTF-8 with
    /// U+FFFD for what is not), sorted by name: those whose name breaks
    /// the file-name rules (a control character, a bidirectional
    /// override, a reserved name…), hidden ones, and those the server
    /// cannot read. [`list`](Self::list) leaves them out. The server's
    /// own files are not among them: they are said apart.
    pub fn left_out(&self) -> io::Result<Vec<(String, LeftOut)>> {
        let ids = self.own_ids();
        let mut names: Vec<(String, LeftOut)> = fs::read_dir(&self.root)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .filter_map(|e| match e.file_name().into_string() {
                Ok(name) => match FileName::new(name.as_str()) {
                    Err(NameError::LeadingDot) => Some((name, LeftOut::Hidden)),
                    Err(_) => Some((name, LeftOut::Unnamable)),
                    Ok(file) => {
                        let (path, _) = self.resolve(&file, &ids).ok()?;
                        (!readable(&path)).then_some((name, LeftOut::Unreadable))
                    }
                },
                Err(raw) => Some((raw.to_string_lossy().into_owned(), LeftOut::Unnamable)),
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The path to open for `name` and the metadata of what was checked
    /// there (not following links), or why it may not be served.
    /// The server's own files are as missing (`ids`: see
    /// [`own_ids`](Self::own_ids)).
    fn resolve(&self, name: &FileName, ids: &OwnIds) -> Result<(PathBuf, Metadata), Refusal> {
        let shown = inert(name.as_str());
        let mut path = self.root.join(name.as_str());
        let meta = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Typed composed (é), stored decomposed (e + ◌́), or the
                // other way round: the same name to whoever reads it.
                let (found, searched) = self.same_name_otherwise_encoded(name);
                path = found.ok_or_else(|| {
                    let refusal = self
                        .folder_unreadable()
                        .unwrap_or_else(|| missing_or_io(&shown, &e));
                    Refusal {
                        searched,
                        ..refusal
                    }
                })?;
                fs::symlink_metadata(&path).map_err(|e| missing_or_io(&shown, &e))?
            }
            other => other.map_err(|e| missing_or_io(&shown, &e))?,
        };
        let (target, meta) = if meta.file_type().is_symlink() {
            let target = fs::canonicalize(&path).map_err(|e| missing_or_io(&shown, &e))?;
            if !target.starts_with(&self.root) {
                return Err(Refusal::new(
                    CancelCode::FORBIDDEN,
                    format!("'{shown}' points outside the shared folder"),
                ));
            }
            // A canonical path has no link left in it.
            let meta = fs::symlink_metadata(&target).map_err(|e| missing_or_io(&shown, &e))?;
            (target, meta)
        } else {
            (path, meta)
        };
        if !meta.is_file() {
            return Err(Refusal::new(
                CancelCode::FORBIDDEN,
                format!("'{shown}' is not a regular file"),
            ));
        }
        if self.own_kind(&target, &meta, ids).is_some() {
            // Not shared, whatever folder it is in: as if it were not there.
            return Err(Refusal::new(
                CancelCode::NO_SUCH_FILE,
                format!("no shared file named '{shown}'"),
            ));
        }
        Ok((target, meta))
    }

    /// Why no file at all can be served, when the shared folder itself is
    /// gone or cannot be read (removed, renamed or unmounted while the
    /// server runs): a name not found there is no sign that the file is
    /// not shared.
    fn folder_unreadable(&self) -> Option<Refusal> {
        let e = fs::read_dir(&self.root).err()?;
        Some(Refusal::new(
            CancelCode::IO,
            format!(
                "the server cannot read its shared folder now ({}): no file can be downloaded until its operator fixes it",
                io_reason(&e)
            ),
        ))
    }

    /// The entry of the folder whose name is `name` in Unicode's canonical
    /// composition (NFC) but encoded otherwise; the first in byte order if
    /// several are. Also how many entries were read to look for it.
    fn same_name_otherwise_encoded(&self, name: &FileName) -> (Option<PathBuf>, usize) {
        let wanted: String = name.as_str().nfc().collect();
        let Ok(entries) = fs::read_dir(&self.root) else {
            return (None, 0);
        };
        let mut searched = 0;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .inspect(|_| searched += 1)
            .filter(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    // An ASCII name is its own NFC: no need to compose it.
                    if n.is_ascii() {
                        n == wanted
                    } else {
                        n.nfc().eq(wanted.chars())
                    }
                })
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        (found.into_iter().next(), searched)
    }

    /// Opens the shared file `name` for reading; returns it with its size.
    pub fn open_file(&self, name: &FileName) -> Result<(File, u64), Refusal> {
        let shown = inert(name.as_str());
        let (path, checked) = self.resolve(name, &self.own_ids())?;
        open_checked(&path, &checked, &shown)
    }
}

/// Opens `path` without blocking and without following a link, and serves
/// it only if it is the very regular file that was `checked`: the name can
/// be swapped between the check and the open (for a FIFO, whose open would
/// block the thread until a writer came; or for a link).
fn open_checked(path: &Path, checked: &Metadata, shown: &str) -> Result<(File, u64), Refusal> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK changes nothing for a regular file's reads.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => {
            Refusal::new(CancelCode::FORBIDDEN, format!("'{shown}' may not be read"))
        }
        // ELOOP: the name became a link after it was checked.
        _ if e.raw_os_error() == Some(ELOOP) => Refusal::new(
            CancelCode::FORBIDDEN,
            format!("'{shown}' changed while being opened"),
        ),
        _ => missing_or_io(shown, &e),
    })?;
    {
        let meta = file.metadata().map_err(|e| missing_or_io(shown, &e))?;
        // The name could have been swapped for something else between the
        // check and the open: serve only the very file that was checked.
        if !meta.is_file() || !same_file(checked, &meta) {
            return Err(Refusal::new(
                CancelCode::FORBIDDEN,
                format!("'{shown}' changed while being opened"),
            ));
        }
        Ok((file, meta.len()))
    }
}

/// The error number of opening a link with `O_NOFOLLOW`.
#[cfg(unix)]
const ELOOP: i32 = libc::ELOOP;
#[cfg(not(unix))]
const ELOOP: i32 = -1;

fn missing_or_io(shown: &str, e: &io::Error) -> Refusal {
    if e.kind() == io::ErrorKind::NotFound {
        Refusal::new(
            CancelCode::NO_SUCH_FILE,
            format!("no shared file named '{shown}'"),
        )
    } else {
        Refusal::new(
            CancelCode::IO,
            format!("cannot read '{shown}': {}", io_reason(e)),
        )
    }
}

/// The device and inode of a file.
#[cfg(unix)]
fn identity(meta: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_: &Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn name(s: &str) -> FileName {
        FileName::new(s).unwrap()
    }

    /// A temporary folder holding `shared/` (with a.txt, b.bin, sub/c.txt)
    /// and `secret.txt` beside it.
    fn setup() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("b.bin"), [0u8; 10]).unwrap();
        fs::write(shared.join("a.txt"), "hello").unwrap();
        fs::create_dir(shared.join("sub")).unwrap();
        fs::write(shared.join("sub").join("c.txt"), "inner").unwrap();
        fs::write(tmp.path().join("secret.txt"), "top secret").unwrap();
        (tmp, shared)
    }

    fn read_all(mut f: File) -> String {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    /// A name typed composed finds the file stored decomposed, and the
    /// other way round (a file copied from a Mac keeps its decomposed name).
    #[test]
    fn a_name_finds_its_file_whichever_way_its_accents_are_encoded() {
        let (_tmp, shared) = setup();
        fs::write(shared.join("cafe\u{301}.txt"), "decomposed").unwrap();
        fs::write(shared.join("na\u{ef}ve.txt"), "composed").unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        let (f, len) = dir.open_file(&name("caf\u{e9}.txt")).unwrap();
        assert_eq!((read_all(f), len), ("decomposed".to_string(), 10));
        let (f, _) = dir.open_file(&name("nai\u{308}ve.txt")).unwrap();
        assert_eq!(read_all(f), "composed");
        let missing = dir.open_file(&name("cafe.txt")).unwrap_err();
        assert_eq!(missing.code, CancelCode::NO_SUCH_FILE);
        // Looked for through the whole folder: the refusal says how much.
        assert_eq!(missing.searched, fs::read_dir(&shared).unwrap().count());
    }

    /// A shared folder removed while the server runs: a download is told
    /// that the folder cannot be read, not that the file is not shared.
    #[test]
    fn a_download_from_a_removed_folder_says_the_folder_cannot_be_read() {
        let (_tmp, shared) = setup();
        let dir = SharedDir::open(&shared).unwrap();
        let missing = dir.open_file(&name("nothing.txt")).unwrap_err();
        assert_eq!(missing.code, CancelCode::NO_SUCH_FILE);
        fs::remove_dir_all(&shared).unwrap();
        for wanted in ["a.txt", "nothing.txt"] {
            let refused = dir.open_file(&name(wanted)).unwrap_err();
            assert_eq!(refused.code, CancelCode::IO, "{wanted}");
            assert!(
                refused.reason.contains("cannot read its shared folder now"),
                "{wanted}: {}",
                refused.reason
            );
        }
    }

    #[test]
    fn names_that_cannot_be_offered_are_named_for_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ok.txt", "new\nline.txt", "rtl\u{202e}gnp.txt", "con.txt"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub\ndir")).unwrap();
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        let shared = SharedDir::open(dir.path()).unwrap();
        let unnamable = |s: &str| (s.to_string(), LeftOut::Unnamable);
        assert_eq!(
            shared.left_out().unwrap(),
            [
                (".hidden".to_string(), LeftOut::Hidden),
                unnamable("con.txt"),
                unnamable("new\nline.txt"),
                unnamable("rtl\u{202e}gnp.txt")
            ]
        );
        assert_eq!(shared.list().unwrap().len(), 1);
    }

    /// The start-up line shows each left-out name so the operator can
    /// tell it: a tab, a newline, a blank at an end, a bidirectional
    /// override or a comma-space quoted and escaped; a plain name (inner
    /// spaces included) as it is.
    #[test]
    fn left_out_names_show_whitespace_and_controls() {
        let unnamable = |s: &str| (s.to_string(), LeftOut::Unnamable);
        let lines = left_out_lines(&[
            (".hidden".to_string(), LeftOut::Hidden),
            (" lead.txt".to_string(), LeftOut::Hidden),
            unnamable("a, b.txt"),
            unnamable("con.txt"),
            unnamable("new\nline.txt"),
            unnamable("rtl\u{202e}gnp.txt"),
            unnamable("tab\tname.txt"),
            unnamable("trail.txt "),
            unnamable("two words.txt"),
        ]);
        let unnamable_reason = LeftOut::Unnamable.reason();
        let hidden_reason = LeftOut::Hidden.reason();
        assert_eq!(
            lines,
            [
                format!(
                    "shared folder: 7 file(s) left out, {unnamable_reason}: \"a, b.txt\", con.txt, \"new\\nline.txt\", \"rtl\\u{{202e}}gnp.txt\", \"tab\\tname.txt\", \"trail.txt \", two words.txt"
                ),
                format!(
                    "shared folder: 2 file(s) left out, {hidden_reason}: .hidden, \" lead.txt\""
                ),
            ]
        );
    }

    /// A file the server may not read is not offered, and the operator
    /// is told why (before: listed, and its download failed).
    #[cfg(unix)]
    #[test]
    fn a_file_the_server_may_not_read_is_left_out_and_named() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, shared) = setup();
        let locked = shared.join("locked.txt");
        fs::write(&locked, "no").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        for folder in [_tmp.path(), shared.as_path()] {
            fs::set_permissions(folder, fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Checked in a thread of its own that root's file rights are taken
        // from (the file-system user id is the thread's): as a server run
        // by another user.
        let checked = std::thread::spawn(move || {
            // SAFETY: geteuid reads this process's user; setfsuid only
            // changes this thread's file-system user.
            if unsafe { libc::geteuid() } == 0 {
                // SAFETY: as above.
                unsafe { libc::setfsuid(65534) };
            }
            assert!(fs::File::open(&locked).is_err(), "locked.txt can be read");
            let dir = SharedDir::open(&shared).unwrap();
            let names: Vec<String> = dir
                .list()
                .unwrap()
                .into_iter()
                .map(|e| e.name.to_string())
                .collect();
            (names, dir.left_out().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(
            checked,
            (
                vec!["a.txt".to_string(), "b.bin".to_string()],
                vec![("locked.txt".to_string(), LeftOut::Unreadable)]
            )
        );
    }

    /// The server's own files, in its shared folder, are neither listed
    /// nor served, nor another name for one of them; a file of the same
    /// name in another folder is shared.
    #[cfg(unix)]
    #[test]
    fn the_servers_own_files_are_never_listed_nor_served() {
        let (tmp, shared) = setup();
        let own = [
            "hist.db",
            "hist.db-wal",
            "hist.db-shm",
            "hist.db-journal",
            "hist.db.lock",
            "server.log",
            "server.log.lock",
            "server.log.1",
            "server.log.12",
            "pw.txt",
            "key.pem",
        ];
        for name in own {
            fs::write(shared.join(name), name).unwrap();
        }
        fs::write(shared.join("server.log.old"), "not a rotated part").unwrap();
        fs::hard_link(shared.join("hist.db"), shared.join("copy.db")).unwrap();
        // Elsewhere, another server's files of the same names.
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("hist.db"), "x").unwrap();
        let mut dir = SharedDir::open(&shared).unwrap();
        dir.keep_out(OwnKind::Database, &shared.join("hist.db"));
        // Reached through a link to the folder: the same folder.
        std::os::unix::fs::symlink(&shared, tmp.path().join("via")).unwrap();
        dir.keep_out(OwnKind::Log, &tmp.path().join("via").join("server.log"));
        dir.keep_out(OwnKind::Secret, &shared.join("pw.txt"));
        dir.keep_out(OwnKind::Secret, &shared.join("key.pem"));
        let names: Vec<String> = dir
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string())
            .collect();
        assert_eq!(names, ["a.txt", "b.bin", "server.log.old"]);
        for name in own.into_iter().chain(["copy.db"]) {
            let refused = dir.open_file(&FileName::new(name).unwrap()).unwrap_err();
            assert_eq!(refused.code, CancelCode::NO_SUCH_FILE, "{name}");
        }
        assert_eq!(
            dir.own_files_here(),
            [OwnKind::Database, OwnKind::Log, OwnKind::Secret]
        );
        assert!(dir.left_out().unwrap().is_empty());
        let elsewhere = SharedDir::open(&other).unwrap();
        let mut elsewhere_keeping = elsewhere.clone();
        elsewhere_keeping.keep_out(OwnKind::Database, &shared.join("hist.db"));
        assert_eq!(elsewhere_keeping.list().unwrap().len(), 1);
        assert!(elsewhere_keeping.own_files_here().is_empty());
    }

    #[test]
    fn a_missing_or_non_folder_shared_dir_is_refused_with_one_line() {
        let (tmp, shared) = setup();
        let err = SharedDir::open(&tmp.path().join("nope")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = SharedDir::open(&shared.join("a.txt")).unwrap_err();
        assert!(err.contains("is not a folder"), "{err}");
        assert!(!err.contains('\n'));
        assert!(SharedDir::open(&shared).is_ok());
    }

    #[test]
    fn regular_files_are_served_with_their_size() {
        let (_tmp, shared) = setup();
        let dir = SharedDir::open(&shared).unwrap();
        let (f, size) = dir.open_file(&name("a.txt")).unwrap();
        assert_eq!(size, 5);
        assert_eq!(read_all(f), "hello");
    }

    #[test]
    fn missing_files_and_folders_are_refused() {
        let (_tmp, shared) = setup();
        let dir = SharedDir::open(&shared).unwrap();
        let err = dir.open_file(&name("nothing.txt")).unwrap_err();
        assert_eq!(err.code, CancelCode::NO_SUCH_FILE);
        let err = dir.open_file(&name("sub")).unwrap_err();
        assert_eq!(err.code, CancelCode::FORBIDDEN);
        assert!(err.reason.contains("not a regular file"), "{}", err.reason);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_pointing_outside_the_folder_is_refused() {
        let (tmp, shared) = setup();
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), shared.join("escape.txt"))
            .unwrap();
        std::os::unix::fs::symlink("../secret.txt", shared.join("relative.txt")).unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        for n in ["escape.txt", "relative.txt"] {
            let err = dir.open_file(&name(n)).unwrap_err();
            assert_eq!(err.code, CancelCode::FORBIDDEN, "{n}");
            assert!(err.reason.contains("outside"), "{}", err.reason);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_file_inside_the_folder_is_served() {
        let (_tmp, shared) = setup();
        std::os::unix::fs::symlink("sub/c.txt", shared.join("link.txt")).unwrap();
        std::os::unix::fs::symlink("a.txt", shared.join("alias.txt")).unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        let (f, size) = dir.open_file(&name("link.txt")).unwrap();
        assert_eq!((read_all(f), size), ("inner".to_string(), 5));
        let (f, _) = dir.open_file(&name("alias.txt")).unwrap();
        assert_eq!(read_all(f), "hello");
    }

    #[cfg(unix)]
    #[test]
    fn links_to_folders_and_broken_links_are_refused() {
        let (_tmp, shared) = setup();
        std::os::unix::fs::symlink("sub", shared.join("dirlink")).unwrap();
        std::os::unix::fs::symlink("gone.txt", shared.join("broken.txt")).unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        assert_eq!(
            dir.open_file(&name("dirlink")).unwrap_err().code,
            CancelCode::FORBIDDEN
        );
        assert_eq!(
            dir.open_file(&name("broken.txt")).unwrap_err().code,
            CancelCode::NO_SUCH_FILE
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_shared_folder_reached_through_a_link_still_serves_its_files() {
        let (tmp, shared) = setup();
        let via = tmp.path().join("via");
        std::os::unix::fs::symlink(&shared, &via).unwrap();
        std::os::unix::fs::symlink(shared.join("a.txt"), shared.join("abs.txt")).unwrap();
        let dir = SharedDir::open(&via).unwrap();
        assert!(dir.open_file(&name("abs.txt")).is_ok());
        assert!(dir.open_file(&name("a.txt")).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn the_list_holds_only_servable_files_sorted() {
        let (tmp, shared) = setup();
        let unix = |target: &Path, link: &str| {
            std::os::unix::fs::symlink(target, shared.join(link)).unwrap();
        };
        unix(&tmp.path().join("secret.txt"), "escape.txt");
        unix(Path::new("sub/c.txt"), "inner-link.txt");
        unix(Path::new("sub"), "dirlink");
        unix(Path::new("gone"), "broken");
        fs::write(shared.join(".hidden"), "x").unwrap();
        fs::write(shared.join("bad\u{1b}name"), "x").unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        let got: Vec<(String, u64)> = dir
            .list()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.to_string(), e.size))
            .collect();
        assert_eq!(
            got,
            [
                ("a.txt".to_string(), 5),
                ("b.bin".to_string(), 10),
                ("inner-link.txt".to_string(), 5),
            ]
        );
    }

    /// `/files` lists numbered names by their numbers and ignores case,
    /// as `ls -v` and file managers do, not in byte order (`s10` before
    /// `s2`, `Z` before `a`).
    #[test]
    fn the_list_is_in_the_order_people_read_names() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "s10.img",
            "s2.img",
            "s1.img",
            "Zebra.txt",
            "apple.txt",
            "Apple.txt",
        ] {
            fs::write(tmp.path().join(name), "x").unwrap();
        }
        let dir = SharedDir::open(tmp.path()).unwrap();
        let got: Vec<String> = dir
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "Apple.txt",
                "apple.txt",
                "s1.img",
                "s2.img",
                "s10.img",
                "Zebra.txt"
            ]
        );
    }
}

#[cfg(all(test, unix))]
mod swap_tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A file swapped for a FIFO after its check is refused at once: the
    /// open does not wait for a writer.
    #[test]
    fn a_file_swapped_for_a_fifo_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("song.mp3");
        fs::write(&path, b"music").unwrap();
        let checked = fs::symlink_metadata(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_checked(&p, &checked, "song.mp3").map(|_| ()));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the open blocked on the FIFO");
        assert_eq!(got.unwrap_err().code, CancelCode::FORBIDDEN);
    }

    /// A file swapped for a link (even to a file inside the folder) is not
    /// followed.
    #[test]
    fn a_file_swapped_for_a_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.txt");
        let other = tmp.path().join("b.txt");
        fs::write(&path, b"a").unwrap();
        fs::write(&other, b"b").unwrap();
        let checked = fs::symlink_metadata(&path).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&other, &path).unwrap();
        let err = open_checked(&path, &checked, "a.txt").unwrap_err();
        assert_eq!(err.code, CancelCode::FORBIDDEN);
        assert!(err.reason.contains("changed"), "{}", err.reason);
        // The real thing opens.
        let checked = fs::symlink_metadata(&other).unwrap();
        let (_, size) = open_checked(&other, &checked, "b.txt").unwrap();
        assert_eq!(size, 1);
    }
}
