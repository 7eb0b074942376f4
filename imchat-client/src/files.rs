//! File-system glue for transfers: temporary `.part` files, resuming from
//! one, moving a finished file to its final name, and picking a free name
//! for a received file. No protocol here: the session has already checked
//! every chunk and the whole-file checksum before these run.
//!
//! A `.part` file is opened without following links and must be a regular
//! file (a link planted under its name is refused, its target untouched),
//! and is locked for as long as its transfer runs: a second client writing
//! to the same folder is told the file is busy instead of resuming from a
//! file that is still growing. The lock is an advisory `flock` (on unix),
//! not a lock file: the system drops it when its holder exits, so a client
//! that crashes never leaves a stale lock behind.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use thiserror::Error;

use imchat_cli::io_reason;
use imchat_core::{inert, FileName, ResumeState};

/// How far [`free_name`] counts (`name (1).ext` … ) before giving up.
const MAX_SUFFIX: u32 = 10_000;

/// The longest file name most file systems take, in bytes.
const NAME_MAX: usize = 255;

/// The folder, in the download folder, of the files others send you.
pub fn received_dir(download_dir: &Path) -> PathBuf {
    download_dir.join("received")
}

/// The temporary name a file is written under until it is complete:
/// `<final>.part` in the same folder. A name too long for that (a valid
/// file name may have 255 bytes) keeps its start and gets a checksum of
/// the whole name: `<start>~<8 hex digits>.part`, within 255 bytes, the
/// same for the same name (a download resumes from it).
pub fn part_path(final_path: &Path) -> PathBuf {
    let mut name = final_path
        .file_name()
        .map(OsString::from)
        .unwrap_or_default();
    if name.len() + ".part".len() > NAME_MAX {
        let full = name.to_string_lossy().into_owned();
        let sum = full.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let tail = format!("~{sum:08x}.part");
        let mut keep = NAME_MAX - tail.len();
        while !full.is_char_boundary(keep) {
            keep -= 1;
        }
        return final_path.with_file_name(format!("{}{tail}", &full[..keep]));
    }
    name.push(".part");
    final_path.with_file_name(name)
}

/// The temporary file a download of `name` into `download_dir` is
/// written to (and resumed from): the [`part_path`] of the name itself,
/// not of its [`stored_name`]. The two differ only for a name ending in
/// `.part`: `a.txt.part` is written to `a.txt.part.part`, not to the
/// `a.txt_part.part` of a download of `a.txt_part` (saved under the
/// same name), so the two can run at once. No stored name ends in
/// `.part`, so no other download has that temporary file.
pub fn download_part(download_dir: &Path, name: &FileName) -> PathBuf {
    part_path(&download_dir.join(name.as_str()))
}

/// The name a file is saved under: its own, unless it ends in `.part`
/// (in any case), the suffix of the files still being written, which the
/// client resumes a download from and deletes from `received/` when no
/// transfer holds them: `a.txt.part` is saved as `a.txt_part`. Under its
/// own name a finished `a.txt.part` would be taken for the unfinished
/// download of `a.txt`.
pub fn stored_name(name: &FileName) -> FileName {
    let s = name.as_str();
    let bytes = s.as_bytes();
    let suffix = b".part";
    // A valid name never starts with a dot: `.part` alone cannot be one.
    if bytes.len() <= suffix.len()
        || !bytes[bytes.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    {
        return name.clone();
    }
    // The dot is ASCII: a character boundary.
    let dot = s.len() - suffix.len();
    FileName::new(format!("{}_{}", &s[..dot], &s[dot + 1..])).unwrap_or_else(|_| name.clone())
}

/// A path as the user typed it, with a leading `~` (alone, or before a
/// `/`) read as the shell reads it: the home folder `home` (`$HOME`).
pub fn expand_home(typed: &str, home: Option<&std::ffi::OsStr>) -> PathBuf {
    match (typed.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            let rest = rest.trim_start_matches('/');
            let home = PathBuf::from(home);
            if rest.is_empty() {
                home
            } else {
                home.join(rest)
            }
        }
        _ => PathBuf::from(typed),
    }
}

/// Why a folder could not be made, in a user's words.
fn folder_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
            "a file has its name (or its parent's), not a folder".to_string()
        }
        _ => io_reason(e),
    }
}

/// Why a `.part` file cannot be used.
#[derive(Debug, Error)]
pub enum PartError {
    /// Another transfer (in this client or another) holds it.
    #[error("{} is being written by another transfer (another client using the same folder?)", .0.display())]
    Busy(PathBuf),
    /// The folder it goes in cannot be made (a file has its name?).
    #[error("cannot create the folder {}: {}", .path.display(), folder_reason(.source))]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A link, a folder, a device…: never written through.
    #[error("refusing {}: it is not a regular file (a link?)", .0.display())]
    NotRegular(PathBuf),
    /// The file system said no.
    #[error("cannot open {}: {}", .path.display(), io_reason(.source))]
    Io {
        /// The `.part` file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl PartError {
    /// True when the name was taken (only with `create_new`).
    pub fn already_exists(&self) -> bool {
        matches!(self, PartError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
    }
}

/// Opens (creating it, and missing folders) the `.part` file of one
/// transfer for reading and writing: never through a link, only a regular
/// file, and locked for this transfer alone (the lock goes with the
/// `File`). With `create_new` the file must not exist yet.
pub fn open_part(part: &Path, create_new: bool) -> Result<File, PartError> {
    let io_err = |source| PartError::Io {
        path: part.to_path_buf(),
        source,
    };
    if let Some(dir) = part.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Not an `Io` error: a file named as the folder is no name taken
        // (`already_exists`), which a caller would answer with the next name.
        fs::create_dir_all(dir).map_err(|source| PartError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No link followed; no wait on a FIFO planted under the name.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = match options.open(part) {
        Ok(f) => f,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PartError::NotRegular(part.to_path_buf()))
        }
        Err(e) => return Err(io_err(e)),
    };
    // The type of what was opened, not of what the name was a moment ago.
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(PartError::NotRegular(part.to_path_buf()));
    }
    match try_lock(&file) {
        Ok(true) => {}
        Ok(false) => return Err(PartError::Busy(part.to_path_buf())),
        Err(e) => return Err(io_err(e)),
    }
    // A client starting up deletes the unlocked `.part` files of received/
    // (see [`remove_abandoned_parts`]): one created here a moment before
    // it was locked may have gone that way. Its name is then free again.
    if create_new && !names_this(part, &file) {
        return Err(io_err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "deleted by another client as it was created",
        )));
    }
    Ok(file)
}

/// What a `.part` file looked like after this client's own last write to
/// it: its length and modification time. Another program that truncates
/// it, or writes into it, changes one of them (a write in place within
/// the same tick of the system's clock as ours is the exception): the
/// cheap check before a file gets its final name, instead of reading
/// back gigabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Written {
    /// The length and modification time of `file` now (after our write).
    pub fn of(file: &File) -> io::Result<Written> {
        let meta = file.metadata()?;
        Ok(Written {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// True when `file` still is as we left it. A file whose metadata
    /// cannot be read counts as unchanged (a write that fails says why).
    pub fn still(&self, file: &File) -> bool {
        Written::of(file).map_or(true, |now| now == *self)
    }

    /// True when `file` still is as we left it and `path` still names it
    /// (not another file put in its place).
    pub fn still_at(&self, file: &File, path: &Path) -> bool {
        self.still(file) && names_this(path, file)
    }
}

/// Deletes `path` if it still names the file `file` has open, not another
/// one put in its place.
pub fn remove_if_ours(file: &File, path: &Path) {
    if names_this(path, file) {
        let _ = fs::remove_file(path);
    }
}

/// True when `path` (not followed if a link) is the file `file` has open.
fn names_this(path: &Path, file: &File) -> bool {
    let (Ok(on_disk), Ok(open)) = (path.symlink_metadata(), file.metadata()) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        on_disk.dev() == open.dev() && on_disk.ino() == open.ino()
    }
    #[cfg(not(unix))]
    {
        on_disk.is_file() && on_disk.len() == open.len()
    }
}

/// Deletes the `.part` files in `dir` (a `received/` folder) that no
/// transfer holds: a push whose receiving client died (`kill -9`, a
/// crash, a power cut) leaves its `.part` behind, and a push cannot be
/// resumed, so it would only take the file's name from the next push of
/// it. A `.part` still locked (by this client or another one using the
/// same folder) is left alone; so are links and anything not a regular
/// file. Never to be called on a download folder: a download resumes from
/// its `.part`. Returns the files deleted.
pub fn remove_abandoned_parts(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_part = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().ends_with(b".part"));
        if !is_part || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let mut options = OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        }
        let Ok(file) = options.open(&path) else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) || !matches!(try_lock(&file), Ok(true)) {
            continue;
        }
        // Still the file locked (not one created since under its name),
        // and deleted while the lock is held.
        if names_this(&path, &file) && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
        drop(file);
    }
    removed.sort();
    removed
}

pub use imchat_cli::try_lock;

/// What a partial file left by an earlier download holds, to resume from
/// (read from its start). `None` when it is empty.
pub fn resume_state(file: &mut File) -> io::Result<Option<ResumeState>> {
    file.seek(SeekFrom::Start(0))?;
    let mut held = ResumeState::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        held.update(&buf[..n]);
    }
    Ok((!held.is_empty()).then_some(held))
}

/// Readies an open `.part` file for a transfer starting at `offset`: the
/// first `offset` bytes already there are kept and writing continues after
/// them; at offset 0 the file starts empty.
pub fn start_at(file: &mut File, offset: u64) -> io::Result<()> {
    let held = file.metadata()?.len();
    if held < offset {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("partial file holds {held} bytes, the server resumes at {offset}"),
        ));
    }
    // Only when something must go: on Linux, truncating a file to 0 (even
    // an empty one) marks it on ext4 for write-back when it is closed
    // (`auto_da_alloc`), so the close at the end of a download would start
    // writing the whole file out before the download is reported done.
    if held != offset {
        file.set_len(offset)?;
    }
    file.seek(SeekFrom::Start(offset))?;
    Ok(())
}

/// How far ahead of the data written [`reserve`] is asked to allocate: a
/// transfer never holds more disk than it received plus this, so a
/// file announced huge and never sent (or a transfer that crashed) costs
/// the receiver no more.
pub const RESERVE_AHEAD: u64 = 8 * 1024 * 1024;

/// Asks the file system to allocate the `len` bytes after `from` of a file
/// being received, without changing its length (so a `.part` file still
/// says how much arrived). Called as data arrives, [`RESERVE_AHEAD`] at a
/// time: the file is less fragmented, and writing into allocated blocks
/// costs the writer less than allocating them one by one. Best effort:
/// where the file system cannot, or the disk is too full, writing finds
/// out as before. True if the space was reserved.
pub fn reserve(file: &File, from: u64, len: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(from), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(len)) else {
            return false;
        };
        if len == 0 {
            return false;
        }
        // SAFETY: fallocate only reads its integer arguments; the
        // descriptor is open for as long as `file` is borrowed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, from, len) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, from, len);
        false
    }
}

/// Gives the finished `.part` file its final name: `wanted`, or the first
/// free `stem (1).ext`… beside it for which `taken` is false, never
/// replacing a file (a hard link fails rather than replace; where the file
/// system has none, a rename after a check). Returns the name used. The
/// file stays open (and locked) until it has its name. No fsync, as curl,
/// wget and rsync by default: the name appears only once every check
/// passed, but a power cut soon after may lose data the kernel had not
/// written yet. Waiting for the disk here cost about half a second per GiB
/// before "downloaded" could be shown.
pub fn finish(
    file: File,
    part: &Path,
    wanted: &Path,
    name: &FileName,
    mut taken: impl FnMut(&Path) -> bool,
) -> Result<PathBuf, FinishError> {
    let dir = wanted.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut tried: HashSet<PathBuf> = HashSet::new();
    loop {
        let mut free = |p: &Path| !(tried.contains(p) || p.symlink_metadata().is_ok() || taken(p));
        // The name picked when the transfer began, first: it may be one
        // past `name` already (a `.part` of that name was there).
        let to = if free(wanted) {
            Some(wanted.to_path_buf())
        } else {
            free_name(&dir, name, |p| !free(p))
        };
        let Some(to) = to else {
            return Err(FinishError {
                to: dir,
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "no free file name in the folder",
                ),
            });
        };
        let failed = |source| FinishError {
            to: to.clone(),
            source,
        };
        match fs::hard_link(part, &to) {
            Ok(()) => {
                fs::remove_file(part).map_err(failed)?;
                drop(file);
                return Ok(to);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                tried.insert(to);
            }
            Err(_) => {
                // No hard links here (FAT, some network file systems).
                drop(file);
                fs::rename(part, &to).map_err(failed)?;
                return Ok(to);
            }
        }
    }
}

/// Why a transfer's `.part` file could not be written (a full disk, a
/// file size limit): one line for the user.
#[derive(Debug, Error)]
#[error("cannot write {}: {}", inert(&.path.display().to_string()), io_reason(.source))]
pub struct WriteError {
    /// The `.part` file.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

/// Why [`finish`] could not give a file its name.
#[derive(Debug, Error)]
#[error("cannot move it to {}: {}", .to.display(), io_reason(.source))]
pub struct FinishError {
    /// The name tried (the folder, when no name was free).
    pub to: PathBuf,
    /// Why.
    pub source: io::Error,
}

/// `name`, or `stem (1).ext`, `stem (2).ext`… : the first candidate in `dir`
/// for which `taken` is false. `None` if every candidate is taken. Every
/// candidate fits in [`NAME_MAX`] bytes: the stem of a long name is cut
/// short (at a character's boundary) to leave room for ` (n)` and the
/// extension.
pub fn free_name(
    dir: &Path,
    name: &FileName,
    mut taken: impl FnMut(&Path) -> bool,
) -> Option<PathBuf> {
    let first = dir.join(name.as_str());
    if !taken(&first) {
        return Some(first);
    }
    (1..=MAX_SUFFIX)
        .map(|i| dir.join(numbered(name.as_str(), i)))
        .find(|p| !taken(p))
}

/// `stem (i).ext` for `name`, within [`NAME_MAX`] bytes.
fn numbered(name: &str, i: u32) -> String {
    let suffix = format!(" ({i})");
    let (stem, ext) = split_extension(name);
    // An extension too long to leave a few bytes of stem is cut as stem.
    let (stem, ext) = if ext.len() + suffix.len() + 4 > NAME_MAX {
        (name, "")
    } else {
        (stem, ext)
    };
    let mut keep = stem.len().min(NAME_MAX - suffix.len() - ext.len());
    while !stem.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}{ext}", &stem[..keep])
}

/// `"a.tar.gz"` → `("a.tar", ".gz")`; `"README"` → `("README", "")`.
/// (File names never start with a dot, so a dot at 0 cannot happen.)
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// True when `path` or its temporary `.part` already exists on disk.
pub fn exists_on_disk(path: &Path) -> bool {
    path.symlink_metadata().is_ok() || part_path(path).symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn name(s: &str) -> FileName {
        FileName::new(s).expect("valid name")
    }

    /// A full disk or a file size limit is said in the user's words, as
    /// the other file errors are: no "(os error 28)" tail, no capital.
    #[test]
    fn write_and_move_errors_say_the_reason_in_one_short_line() {
        let write = WriteError {
            path: PathBuf::from("dl/big.bin.part"),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(
            write.to_string(),
            "cannot write dl/big.bin.part: no space left on device"
        );
        let too_big = WriteError {
            path: PathBuf::from("dl/big.bin.part"),
            source: io::Error::from_raw_os_error(libc::EFBIG),
        };
        assert_eq!(
            too_big.to_string(),
            "cannot write dl/big.bin.part: file too large"
        );
        let moved = FinishError {
            to: PathBuf::from("dl/big.bin"),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(
            moved.to_string(),
            "cannot move it to dl/big.bin: no space left on device"
        );
    }

    #[test]
    fn the_part_of_a_name_too_long_for_its_suffix_fits_and_is_its_own() {
        let long = format!("{}.txt", "é".repeat(124)); // 252 bytes
        assert_eq!(long.len(), 252);
        let part = part_path(&Path::new("dl").join(&long));
        let file = part.file_name().unwrap().to_str().unwrap();
        assert!(file.len() <= 255, "{} bytes", file.len());
        assert!(file.ends_with(".part") && file.starts_with("éé"), "{file}");
        assert_eq!(
            part,
            part_path(&Path::new("dl").join(&long)),
            "the same each time"
        );
        let other = format!("{}.txu", "é".repeat(124));
        assert_ne!(part, part_path(&Path::new("dl").join(other)));
        // On disk: it can be created.
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(part_path(&dir.path().join(&long)), b"x").expect("a .part of a 252-byte name");
    }

    /// No file is saved under a name the client reads as a `.part` file.
    #[test]
    fn a_name_ending_in_part_is_stored_under_another() {
        assert_eq!(stored_name(&name("a.txt.part")), name("a.txt_part"));
        assert_eq!(stored_name(&name("notes.PART")), name("notes_PART"));
        assert_eq!(
            stored_name(&name("x~1234abcd.part")),
            name("x~1234abcd_part")
        );
        for kept in ["a.txt", "part", "a.partial", "apart", "été.txt"] {
            assert_eq!(stored_name(&name(kept)), name(kept));
        }
    }

    /// `a.txt.part` is saved as `a.txt_part`, but its download is not
    /// written to the same temporary file as one of `a.txt_part`: the two
    /// run at once. Other names keep theirs (a download resumes from it).
    #[test]
    fn downloads_of_names_stored_alike_have_their_own_part() {
        let dl = Path::new("dl");
        let dotted = download_part(dl, &name("a.txt.part"));
        let under = download_part(dl, &name("a.txt_part"));
        assert_ne!(dotted, under);
        assert_eq!(under, PathBuf::from("dl/a.txt_part.part"));
        assert_eq!(
            download_part(dl, &name("a.txt")),
            PathBuf::from("dl/a.txt.part")
        );
        let long = format!("{}.part", "é".repeat(124));
        let other = format!("{}_part", "é".repeat(124));
        assert_ne!(
            download_part(dl, &name(&long)),
            download_part(dl, &name(&other))
        );
    }

    #[test]
    fn the_part_file_sits_beside_the_final_name() {
        assert_eq!(
            part_path(Path::new("alice/meeting notes.txt")),
            PathBuf::from("alice/meeting notes.txt.part")
        );
    }

    #[test]
    fn free_names_count_up_before_the_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = name("photo.png");
        let first = free_name(dir.path(), &n, exists_on_disk).expect("free");
        assert_eq!(first, dir.path().join("photo.png"));

        fs::write(dir.path().join("photo.png"), b"x").expect("write");
        // A transfer in progress also holds its name.
        fs::write(dir.path().join("photo (1).png.part"), b"x").expect("write");
        let next = free_name(dir.path(), &n, exists_on_disk).expect("free");
        assert_eq!(next, dir.path().join("photo (2).png"));

        let plain = free_name(dir.path(), &name("README"), |p| p.ends_with("README"));
        assert_eq!(plain, Some(dir.path().join("README (1)")));
        let double = free_name(dir.path(), &name("a.tar.gz"), |p| p.ends_with("a.tar.gz"));
        assert_eq!(double, Some(dir.path().join("a.tar (1).gz")));
        assert_eq!(free_name(dir.path(), &n, |_| true), None);
    }

    /// A name of up to 255 bytes is valid, but ` (1)` does not fit after
    /// it: the stem is cut short (at a character's boundary), the
    /// extension and the number kept, and the name can be created.
    #[test]
    fn free_names_of_long_names_fit_in_255_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (long, stem_kept) in [
            (format!("{}.txt", "L".repeat(250)), "L".repeat(247)),
            // 2-byte characters: 123 of them (246 bytes) fit before " (1).txt".
            (format!("{}.txt", "é".repeat(125)), "é".repeat(123)),
        ] {
            fs::write(dir.path().join(&long), b"first").expect("the name itself fits");
            let next = free_name(dir.path(), &name(&long), exists_on_disk).expect("free");
            let file = next.file_name().unwrap().to_str().unwrap();
            assert_eq!(file, format!("{stem_kept} (1).txt"));
            assert!(file.len() <= NAME_MAX, "{} bytes", file.len());
            fs::write(&next, b"second").expect("the numbered name fits");
            let third = free_name(dir.path(), &name(&long), exists_on_disk).expect("free");
            assert!(third.to_str().unwrap().ends_with(" (2).txt"), "{third:?}");
            fs::write(&third, b"third").expect("fits");
        }
        // With five digits.
        let n = numbered(&format!("{}.txt", "L".repeat(250)), 10_000);
        assert!(n.len() == NAME_MAX && n.ends_with(" (10000).txt"), "{n}");
        // An extension that leaves no room is cut as part of the name.
        let odd = format!("a.{}", "x".repeat(252));
        let n = numbered(&odd, 1);
        assert!(
            n.len() <= NAME_MAX && n.starts_with("a.xxx") && n.ends_with(" (1)"),
            "{n}"
        );
        fs::write(dir.path().join(n), b"x").expect("fits");
    }

    /// The second copy of a 254-byte name is finished under a name that
    /// fits (before, `finish` tried `name (1).ext`, 258 bytes, and failed
    /// naming the file that was there).
    #[test]
    fn finish_gives_a_long_name_a_free_name_that_fits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = format!("{}.txt", "L".repeat(250));
        let fin = dir.path().join(&long);
        fs::write(&fin, b"old").expect("write");
        let part = part_path(&fin);
        let f = open_part(&part, false).expect("open");
        let to = finish(f, &part, &fin, &name(&long), |_| false).expect("finish");
        assert_eq!(to, dir.path().join(format!("{} (1).txt", "L".repeat(247))));
        assert!(!part.exists());
    }

    /// A failure names the path tried, not the one wanted.
    #[test]
    fn a_failed_finish_names_the_path_it_tried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fin = dir.path().join("f.txt");
        fs::write(&fin, b"old").expect("write");
        let part = part_path(&fin);
        let f = open_part(&part, false).expect("open");
        fs::remove_file(&part).expect("gone before the move");
        let err = finish(f, &part, &fin, &name("f.txt"), |_| false).expect_err("no .part");
        assert_eq!(err.to, dir.path().join("f (1).txt"));
        assert!(err.to_string().contains("f (1).txt"), "{err}");
    }

    #[test]
    fn a_tilde_is_the_home_folder_as_in_the_shell() {
        let home = Some(std::ffi::OsStr::new("/home/ann"));
        assert_eq!(expand_home("~/a.txt", home), Path::new("/home/ann/a.txt"));
        assert_eq!(expand_home("~", home), Path::new("/home/ann"));
        // Another user's home, a tilde inside a name, no $HOME: as typed.
        assert_eq!(expand_home("~bob/a.txt", home), Path::new("~bob/a.txt"));
        assert_eq!(expand_home("a~/b", home), Path::new("a~/b"));
        assert_eq!(expand_home("~/a.txt", None), Path::new("~/a.txt"));
    }

    /// A file under the folder's name is not a name taken: a caller that
    /// moves on to the next name would try them all.
    #[test]
    fn a_file_where_the_folder_should_be_is_no_name_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("received"), b"a file").expect("write");
        let err = open_part(&dir.path().join("received").join("f.txt.part"), true)
            .expect_err("no folder");
        assert!(!err.already_exists(), "{err}");
        assert!(matches!(err, PartError::Folder { .. }), "{err}");
        // Said in a user's words, not the system's.
        let said = err.to_string();
        assert!(
            said.ends_with("a file has its name (or its parent's), not a folder"),
            "{said}"
        );
        assert!(!said.contains("os error"), "{said}");
    }

    /// Only the `.part` files no one holds go; a link is not followed.
    #[test]
    fn abandoned_parts_are_removed_and_held_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let abandoned = dir.path().join("a.bin.part");
        fs::write(&abandoned, b"cut off").expect("write");
        let held_path = dir.path().join("b.bin.part");
        let held = open_part(&held_path, true).expect("open");
        let done = dir.path().join("c.bin");
        fs::write(&done, b"whole").expect("write");
        let removed = remove_abandoned_parts(dir.path());
        assert_eq!(removed, std::slice::from_ref(&abandoned));
        assert!(!abandoned.exists());
        assert!(held_path.exists() && done.exists());
        drop(held);
        #[cfg(unix)]
        {
            let target = dir.path().join("target");
            fs::write(&target, b"precious").expect("write");
            let link = dir.path().join("l.bin.part");
            std::os::unix::fs::symlink(&target, &link).expect("symlink");
            let removed = remove_abandoned_parts(dir.path());
            assert_eq!(removed, [held_path]);
            assert!(link.symlink_metadata().is_ok() && target.exists());
        }
        assert!(remove_abandoned_parts(&dir.path().join("none")).is_empty());
    }

    #[test]
    fn resume_state_is_the_length_and_crc_of_the_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("big.bin.part");
        let mut f = open_part(&part, false).expect("open");
        assert!(resume_state(&mut f).expect("read").is_none(), "empty file");
        drop(f);

        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        fs::write(&part, &data).expect("write");
        let mut f = open_part(&part, false).expect("open");
        let held = resume_state(&mut f).expect("read").expect("some");
        assert_eq!(held.len(), data.len() as u64);
        assert_eq!(held.crc(), ResumeState::from_bytes(&data).crc());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn start_at_truncates_nothing_when_nothing_is_past_the_offset() {
        // A truncation (even of an empty file to 0) updates the file's
        // modification time; on ext4 it also makes closing the file write
        // it all back at once, which the end of a download then waited on.
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("f.part");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for (content, offset) in [(&b""[..], 0), (&b"hello"[..], 5)] {
            fs::write(&part, content).expect("write");
            let mut f = open_part(&part, false).expect("open");
            f.set_modified(old).expect("set mtime");
            start_at(&mut f, offset).expect("start");
            assert_eq!(
                f.metadata().expect("metadata").modified().expect("mtime"),
                old,
                "truncated at {offset}"
            );
        }
    }

    #[test]
    fn start_at_keeps_the_resumed_prefix_and_truncates_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("sub/dir/f.txt.part");
        {
            let mut f = open_part(&part, false).expect("create with folders");
            start_at(&mut f, 0).expect("start");
            f.write_all(b"hello world").expect("write");
        }
        {
            let mut f = open_part(&part, false).expect("open");
            start_at(&mut f, 5).expect("resume");
            f.write_all(b", there").expect("write");
        }
        assert_eq!(fs::read(&part).expect("read"), b"hello, there");
        {
            let mut f = open_part(&part, false).expect("open");
            start_at(&mut f, 0).expect("restart");
            f.write_all(b"new").expect("write");
        }
        assert_eq!(fs::read(&part).expect("read"), b"new");
        let mut f = open_part(&part, false).expect("open");
        assert!(start_at(&mut f, 99).is_err(), "cannot resume past the end");
        drop(f);
        let taken = open_part(&part, true).expect_err("create_new on an existing file");
        assert!(taken.already_exists(), "{taken}");
    }

    #[test]
    fn a_part_file_is_held_by_one_transfer_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("f.txt.part");
        let first = open_part(&part, false).expect("open");
        let second = open_part(&part, false).expect_err("held by the first");
        assert!(matches!(second, PartError::Busy(_)), "{second}");
        assert!(second.to_string().contains("another transfer"), "{second}");
        drop(first);
        open_part(&part, false).expect("free again once the first is closed");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_or_a_fifo_under_the_part_name_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious.txt");
        fs::write(&target, b"precious data").expect("write");
        let part = dir.path().join("f.txt.part");
        std::os::unix::fs::symlink(&target, &part).expect("symlink");
        let err = open_part(&part, false).expect_err("a link");
        assert!(matches!(err, PartError::NotRegular(_)), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = open_part(&part, true).expect_err("a link");
        assert!(
            matches!(err, PartError::NotRegular(_)) || err.already_exists(),
            "{err}"
        );
        assert_eq!(fs::read(&target).expect("read"), b"precious data");
        // A dangling link is refused too, and creates nothing.
        let gone = dir.path().join("gone.txt");
        let part2 = dir.path().join("g.txt.part");
        std::os::unix::fs::symlink(&gone, &part2).expect("symlink");
        assert!(open_part(&part2, false).is_err());
        assert!(!gone.exists());
        // A FIFO: refused at once, not waited on.
        let fifo = dir.path().join("p.txt.part");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_part(&fifo, false).expect_err("a FIFO");
        assert!(matches!(err, PartError::NotRegular(_)), "{err}");
    }

    #[test]
    fn reserving_space_keeps_the_length_of_the_part_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("big.bin.part");
        let mut f = open_part(&part, false).expect("open");
        f.write_all(b"head").expect("write");
        let reserved = reserve(&f, 4, 4 << 20);
        let meta = f.metadata().expect("metadata");
        assert_eq!(meta.len(), 4, "the length still says what arrived");
        #[cfg(unix)]
        if reserved {
            use std::os::unix::fs::MetadataExt;
            assert!(meta.blocks() * 512 >= 4 << 20, "{} blocks", meta.blocks());
        }
        // Resuming from the part file sees only what was written.
        let held = resume_state(&mut f).expect("read").expect("some");
        assert_eq!(held.len(), 4);
    }

    /// A `.part` truncated, written into in place, or replaced by
    /// another program no longer matches what our last write left.
    #[test]
    fn a_part_changed_by_another_program_is_told_apart() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("mid.bin.part");
        let mut file = open_part(&part, true).expect("open");
        file.write_all(&[1u8; 4096]).expect("write");
        let ours = Written::of(&file).expect("stamp");
        assert!(ours.still_at(&file, &part));
        // Written into in place, the length unchanged (a tick of the
        // clock later: a write within the same tick is not seen).
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut other = OpenOptions::new().write(true).open(&part).expect("other");
        other.seek(SeekFrom::Start(10)).expect("seek");
        other.write_all(b"XXXX").expect("write in place");
        assert_eq!(file.metadata().expect("meta").len(), 4096);
        assert!(!ours.still(&file), "written in place");
        // Our own write after that: the new stamp matches.
        file.write_all(b"more").expect("write");
        let ours = Written::of(&file).expect("stamp");
        assert!(ours.still(&file));
        other.set_len(1000).expect("truncate");
        assert!(!ours.still(&file), "truncated");
        // Another file put under its name.
        let ours = Written::of(&file).expect("stamp");
        fs::remove_file(&part).expect("remove");
        fs::write(&part, b"other").expect("replace");
        assert!(ours.still(&file) && !ours.still_at(&file, &part));
    }

    #[test]
    fn finish_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fin = dir.path().join("f.txt");
        fs::write(&fin, b"old").expect("write");
        let part = part_path(&fin);
        let mut f = open_part(&part, false).expect("open");
        f.write_all(b"new").expect("write");
        let to = finish(f, &part, &fin, &name("f.txt"), |_| false).expect("finish");
        assert_eq!(to, dir.path().join("f (1).txt"));
        assert_eq!(fs::read(&fin).expect("read"), b"old", "untouched");
        assert_eq!(fs::read(&to).expect("read"), b"new");
        assert!(!part.exists());
        // A free name is used as is.
        let other = dir.path().join("g.txt");
        let part = part_path(&other);
        let f = open_part(&part, false).expect("open");
        let to = finish(f, &part, &other, &name("g.txt"), |_| false).expect("finish");
        assert_eq!(to, other);
    }

    /// A pushed file was given `h (1).txt` when it began, because an
    /// unfinished `h.txt.part` was there: it keeps that name (before, it
    /// went to `h.txt`, and the client said "saved as 'h.txt': h (1).txt
    /// already exists").
    #[test]
    fn finish_keeps_the_name_picked_when_the_transfer_began() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("h.txt.part"), b"stale").expect("write");
        let wanted = dir.path().join("h (1).txt");
        let part = part_path(&wanted);
        let f = open_part(&part, false).expect("open");
        let to = finish(f, &part, &wanted, &name("h.txt"), |_| false).expect("finish");
        assert_eq!(to, wanted);
        assert!(!dir.path().join("h.txt").exists());
    }
}
