//! The server's log: every record at info level and above goes to the log
//! file, with a timestamp; stderr gets what `RUST_LOG` selects (default
//! `warn`, an `env_logger` logger). A small tee sends each record to both.
//!
//! The file's records are formatted here, in `env_logger`'s layout
//! (`[2026-11-30T16:28:22.123Z INFO  target] text`), into a buffer: a record
//! logged inside [`batch`] (the report thread logs every routed message
//! that way) waits there for the batch's end, so a busy server writes its
//! log with one system call per batch rather than one per line; any other
//! record is written at once.
//!
//! The file is capped: once it passes its size it is rotated (`server.log`
//! becomes `server.log.1`, the oldest beyond the number kept is deleted), so
//! a client chatting as fast as it may cannot fill the disk. Each start
//! begins a new log: the file is emptied and the rotated files of the last
//! run are deleted. That is done by [`open_file`], once the server has
//! checked its configuration and bound its port, not by [`init`]: a start
//! that fails (the port or the history file in use by a running server,
//! perhaps one logging to the same file) leaves the file alone. The records
//! logged before it wait in the buffer and are written first.

use std::cell::Cell;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use env_logger::{Env, Logger};
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use log::{LevelFilter, Log, Metadata, Record};

/// Records logged with this target go to the log file only (for a message
/// that is also printed to stderr by other means).
pub const FILE_ONLY: &str = "imchat_server::file_only";

/// How big the log may grow, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The file is rotated once a record takes it past this size.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: usize,
}

/// Most bytes of log records a batch holds before they are written anyway.
/// A file may pass its rotation size by up to one such write (at most a
/// quarter of the size, see [`FileLog::new`]).
const BATCH_BYTES: usize = 32 * 1024;

thread_local! {
    /// This thread is inside [`batch`]: its records wait in the buffer.
    static BATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; the records it logs to the file are written together once it
/// returns (or whenever [`BATCH_BYTES`] have gathered), in order.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    let was = BATCHING.with(|b| b.replace(true));
    let result = f();
    BATCHING.with(|b| b.set(was));
    if !was {
        log::logger().flush();
    }
    result
}

/// The log file's logger: records formatted into a buffer, written by
/// whole lines (see the module's description).
struct FileLog<W> {
    level: LevelFilter,
    out: Mutex<Pending<W>>,
}

struct Pending<W> {
    buf: Vec<u8>,
    /// Written once this many bytes wait.
    batch_bytes: usize,
    /// `None` until the file is opened: the records wait in `buf` (up to
    /// [`BATCH_BYTES`]; later ones are dropped).
    file: Option<W>,
    /// The file's path, as the operator's warnings name it.
    name: String,
    /// Records not written since writing failed (`None`: writing works).
    lost: Option<usize>,
    /// Where the operator is told that records are lost, and when they are
    /// written again (stdout, with the server's other warnings).
    warn: fn(&str),
}

impl<W: Write> Pending<W> {
    fn write_out(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if self.buf.is_empty() {
            return;
        }
        // A log that cannot be written loses the records: the server goes
        // on, and says so once, then once more when writing works again.
        let records = self.buf.iter().filter(|&&b| b == b'\n').count();
        if let Some(lost) = self.lost {
            // In the log too, on a line of its own (the record being
            // written when it failed may have been cut).
            let mut notice = vec![b'\n', b'['];
            write_timestamp(&mut notice, SystemTime::now());
            let _ = writeln!(
                notice,
                " WARN  imchat_server::logging] up to {lost} records before this one were not written: the log could not be written"
            );
            notice.append(&mut self.buf);
            self.buf = notice;
        }
        let written = file.write_all(&self.buf).and_then(|()| file.flush());
        self.buf.clear();
        match (written, self.lost) {
            (Ok(()), None) => {}
            (Ok(()), Some(lost)) => {
                self.lost = None;
                (self.warn)(&format!(
                    "log: writing {} again; up to {lost} records were lost",
                    self.name
                ));
            }
            (Err(e), None) => {
                self.lost = Some(records);
                (self.warn)(&format!(
                    "warning: log: cannot write {}: {}; records are lost until it can be written again",
                    self.name,
                    imchat_cli::io_reason(&e)
                ));
            }
            (Err(_), Some(lost)) => self.lost = Some(lost + records),
        }
    }
}

/// Bytes of records a batch holds for a file rotated past `max_bytes`.
fn batch_bytes(max_bytes: u64) -> usize {
    let quarter = usize::try_from(max_bytes / 4).unwrap_or(usize::MAX);
    BATCH_BYTES.min(quarter).max(1)
}

impl<W: Write> FileLog<W> {
    /// A logger writing `file`, which rotates past `max_bytes`.
    #[cfg(test)]
    fn new(file: W, level: LevelFilter, max_bytes: u64) -> Self {
        let log = FileLog::waiting(level);
        log.open(file, "server.log".into(), max_bytes);
        log
    }

    /// A logger whose file is not open yet: see [`FileLog::open`].
    fn waiting(level: LevelFilter) -> Self {
        FileLog {
            level,
            out: Mutex::new(Pending {
                buf: Vec::with_capacity(BATCH_BYTES),
                batch_bytes: BATCH_BYTES,
                file: None,
                name: String::new(),
                lost: None,
                warn: crate::report::print_line,
            }),
        }
    }

    /// From now on records go to `file` (`name` in warnings), which
    /// rotates past `max_bytes`; those that waited for it are written first.
    fn open(&self, file: W, name: String, max_bytes: u64) {
        let mut out = self.lock();
        out.batch_bytes = batch_bytes(max_bytes);
        out.file = Some(file);
        out.name = name;
        out.write_out();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending<W>> {
        self.out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut out = self.lock();
        if out.file.is_none() && out.buf.len() >= BATCH_BYTES {
            return;
        }
        format_record(&mut out.buf, SystemTime::now(), record);
        if !BATCHING.with(Cell::get) || out.buf.len() >= out.batch_bytes {
            out.write_out();
        }
    }

    fn flush(&self) {
        self.lock().write_out();
    }
}

/// Appends `record` as one line, in `env_logger`'s layout with a UTC
/// timestamp in milliseconds.
fn format_record(buf: &mut Vec<u8>, now: SystemTime, record: &Record<'_>) {
    let _ = write!(buf, "[");
    write_timestamp(buf, now);
    let _ = writeln!(
        buf,
        " {:<5} {}] {}",
        record.level(),
        record.target(),
        record.args()
    );
}

/// `2026-11-30T16:28:22.123Z`: RFC 3339, UTC, milliseconds.
fn write_timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let (secs, milli) = (ms / 1000, ms % 1000);
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        buf,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

/// The proleptic Gregorian date of a day counted from 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // In range by construction: 1..=31 and 1..=12.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Sends each record to the file logger and the stderr logger that accept it.
struct Tee {
    file: FileLog<FileRotate<AppendCount>>,
    stderr: Logger,
}

impl Log for Tee {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.file.enabled(metadata) || self.stderr.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        // Each logger checks its own filter.
        self.file.log(record);
        if record.target() != FILE_ONLY {
            self.stderr.log(record);
        }
    }

    fn flush(&self) {
        self.file.flush();
        self.stderr.flush();
    }
}

/// Deletes the rotated files of an earlier run: `<name>.<number>` beside `path`.
fn remove_rotated(path: &Path) -> io::Result<()> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!("{name}.");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let rotated = file
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if rotated {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The log file's writer: `path` emptied, earlier rotations deleted.
///
/// A log file the server creates is readable and writable by its owner
/// only, as the history database is: it names users and their addresses,
/// and with `--log-text` holds what they said, private messages included.
/// A file that exists keeps its mode (the operator may share it on
/// purpose), and so do the files that take its place as it rotates.
fn rotating(path: &Path, rotation: Rotation) -> io::Result<FileRotate<AppendCount>> {
    let mode = file_mode(path).unwrap_or(0o600);
    // Created here first, so that a path that cannot be written is an error
    // for the caller (the rotating writer panics on one).
    let mut create = fs::OpenOptions::new();
    create.write(true).create(true).truncate(true);
    set_mode(&mut create, mode);
    create.open(path)?;
    remove_rotated(path)?;
    // The options the rotating writer opens each new file with (it wants
    // these three set).
    let mut append = fs::OpenOptions::new();
    append.read(true).create(true).append(true);
    set_mode(&mut append, mode);
    Ok(FileRotate::new(
        path,
        AppendCount::new(rotation.keep),
        ContentLimit::BytesSurpassed(usize::try_from(rotation.max_bytes).unwrap_or(usize::MAX)),
        Compression::None,
        Some(append),
    ))
}

/// The permission bits of the file at `path`, if there is one.
#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> Option<u32> {
    None
}

/// Files opened with `options` are created with permission bits `mode`.
#[cfg(unix)]
fn set_mode(options: &mut fs::OpenOptions, mode: u32) {
    std::os::unix::fs::OpenOptionsExt::mode(options, mode);
}

#[cfg(not(unix))]
fn set_mode(_options: &mut fs::OpenOptions, _mode: u32) {}

/// The logger [`init`] installed, for [`open_file`].
static LOGGER: OnceLock<Tee> = OnceLock::new();

/// Installs the logger. Records go to stderr at once; those for the log
/// file wait until [`open_file`] opens it.
pub fn init() -> io::Result<()> {
    let stderr = env_logger::Builder::from_env(Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .build();
    let tee = Tee {
        file: FileLog::waiting(LevelFilter::Info),
        stderr,
    };
    let max = tee.file.level.max(tee.stderr.filter());
    if LOGGER.set(tee).is_err() {
        return Err(io::Error::other("the logger is already installed"));
    }
    let Some(tee) = LOGGER.get() else {
        return Err(io::Error::other("the logger is not installed"));
    };
    log::set_logger(tee).map_err(|e| io::Error::other(e.to_string()))?;
    log::set_max_level(max);
    Ok(())
}

/// Why the log file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another running server writes it (two servers started in one
    /// folder with the default `server.log`).
    #[error("another running server writes it: give this one its own with --log-file PATH")]
    InUse,
    /// The system's error.
    #[error("{}", imchat_cli::io_reason(.0))]
    Io(#[from] io::Error),
}

/// The locks that keep a log file to one server, held (advisory locks the
/// system drops when the process ends) for as long as the server runs:
/// `<log>.lock` beside the file the path leads to (symbolic links
/// followed), and the log file as it was at start (another name of it, a
/// hard link, leads there). The log alone could not carry it: rotating
/// renames it and starts a new file.
static FILE_LOCK: OnceLock<(fs::File, Option<fs::File>)> = OnceLock::new();

/// `path` with its symbolic links resolved, the file's own too when it
/// exists.
fn real_path(path: &Path) -> std::path::PathBuf {
    if let Ok(real) = fs::canonicalize(path) {
        return real;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (fs::canonicalize(dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Locks the log file at `path` for this process (see [`FILE_LOCK`]).
fn lock_file(path: &Path) -> Result<(fs::File, Option<fs::File>), OpenError> {
    let real = real_path(path);
    let mut lock_path = real.as_os_str().to_owned();
    lock_path.push(".lock");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    set_mode(&mut options, file_mode(&real).unwrap_or(0o600));
    let lock = options.open(lock_path)?;
    if !imchat_cli::try_lock(&lock)? {
        return Err(OpenError::InUse);
    }
    let log = match fs::File::open(&real) {
        Ok(log) if !imchat_cli::try_lock(&log)? => return Err(OpenError::InUse),
        Ok(log) => Some(log),
        Err(_) => None,
    };
    Ok((lock, log))
}

/// Creates (or empties) the log file at `path`, deletes the rotated files
/// of the last run, and writes there the records logged since [`init`]
/// and all that follow. Called once the server is sure to start. A log
/// file another running server writes is left alone: [`OpenError::InUse`].
pub fn open_file(path: &Path, rotation: Rotation) -> Result<(), OpenError> {
    let Some(tee) = LOGGER.get() else {
        return Err(io::Error::other("the logger is not installed").into());
    };
    let (lock, mut log) = lock_file(path)?;
    let file = rotating(path, rotation)?;
    if log.is_none() {
        // Created just now: locked as soon as it is there.
        log = fs::File::open(path)
            .ok()
            .filter(|f| imchat_cli::try_lock(f).unwrap_or(false));
    }
    tee.file
        .open(file, path.display().to_string(), rotation.max_bytes);
    let _ = FILE_LOCK.set((lock, log));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_log_rotates_at_its_size_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        // Leftovers of an earlier run are cleared at start.
        fs::write(&path, "old\n").unwrap();
        fs::write(dir.path().join("server.log.7"), "old\n").unwrap();
        fs::write(dir.path().join("server.log.bak"), "kept\n").unwrap();
        let rotation = Rotation {
            max_bytes: 1000,
            keep: 2,
        };
        let mut w = rotating(&path, rotation).unwrap();
        assert!(!dir.path().join("server.log.7").exists());
        assert!(dir.path().join("server.log.bak").exists());
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..100 {
            w.write_all(line.as_bytes()).unwrap();
        }
        w.flush().unwrap();
        let mut total = 0;
        for name in ["server.log", "server.log.1", "server.log.2"] {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() <= 1000 + line.len(), "{name}: {}", text.len());
            assert!(
                text.lines().all(|l| l.len() == 99),
                "{name} holds a cut line"
            );
            total += text.len();
        }
        assert!(!dir.path().join("server.log.3").exists());
        assert!(total < 100 * line.len());
    }

    /// A log file the server creates is its owner's only, and so is each
    /// file that takes its place as it rotates; one that was there keeps
    /// its mode through the rotations.
    #[cfg(unix)]
    #[test]
    fn a_new_log_file_is_private_and_an_old_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let rotation = Rotation {
            max_bytes: 100,
            keep: 2,
        };
        let line = format!("{}\n", "x".repeat(99));
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.log");
        let mut w = rotating(&new, rotation).unwrap();
        for _ in 0..5 {
            w.write_all(line.as_bytes()).unwrap();
        }
        w.flush().unwrap();
        for name in ["new.log", "new.log.1", "new.log.2"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
        let old = dir.path().join("old.log");
        fs::write(&old, "old\n").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o640)).unwrap();
        let mut w = rotating(&old, rotation).unwrap();
        for _ in 0..5 {
            w.write_all(line.as_bytes()).unwrap();
        }
        w.flush().unwrap();
        for name in ["old.log", "old.log.1", "old.log.2"] {
            assert_eq!(mode(&dir.path().join(name)), 0o640, "{name}");
        }
    }

    /// A file that counts its writes.
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> (String, usize) {
            let s = self.0.lock().unwrap();
            (String::from_utf8(s.0.clone()).unwrap(), s.1)
        }
    }

    fn record<W: Write>(log: &FileLog<W>, level: log::Level, text: &str) {
        log.log(
            &Record::builder()
                .level(level)
                .target("imchat_server::report")
                .args(format_args!("{text}"))
                .build(),
        );
    }

    #[test]
    fn a_batch_is_written_once_with_every_line_in_order() {
        let sink = Sink::default();
        let log = FileLog::new(sink.clone(), LevelFilter::Info, 1 << 30);
        BATCHING.with(|b| b.set(true));
        for i in 0..200 {
            record(&log, log::Level::Info, &format!("line {i}"));
        }
        record(&log, log::Level::Debug, "below the level");
        BATCHING.with(|b| b.set(false));
        assert_eq!(
            sink.text(),
            (String::new(), 0),
            "written before the batch ended"
        );
        log.flush();
        let (text, writes) = sink.text();
        assert_eq!(writes, 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 200);
        for (i, line) in lines.iter().enumerate() {
            assert!(line.starts_with('['), "{line}");
            assert!(
                line.ends_with(&format!(" INFO  imchat_server::report] line {i}")),
                "{line}"
            );
        }
    }

    #[test]
    fn a_record_outside_a_batch_is_written_at_once_and_a_big_batch_in_parts() {
        let sink = Sink::default();
        let log = FileLog::new(sink.clone(), LevelFilter::Info, 1 << 30);
        record(&log, log::Level::Warn, "alone");
        let (text, writes) = sink.text();
        assert_eq!(writes, 1);
        assert!(
            text.ends_with(" WARN  imchat_server::report] alone\n"),
            "{text}"
        );
        // A small rotation size bounds the batch to a quarter of it.
        let sink = Sink::default();
        let log = FileLog::new(sink.clone(), LevelFilter::Info, 4096);
        BATCHING.with(|b| b.set(true));
        for i in 0..100 {
            record(&log, log::Level::Info, &format!("line {i}"));
        }
        BATCHING.with(|b| b.set(false));
        log.flush();
        let (text, writes) = sink.text();
        assert!(writes > 3, "{writes} writes");
        let numbers: Vec<usize> = text
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn records_logged_before_the_file_is_open_wait_for_it_and_come_first() {
        let log = FileLog::waiting(LevelFilter::Info);
        record(&log, log::Level::Warn, "before");
        log.flush();
        let sink = Sink::default();
        log.open(sink.clone(), "server.log".into(), 1 << 30);
        assert!(
            sink.text()
                .0
                .ends_with(" WARN  imchat_server::report] before\n"),
            "{:?}",
            sink.text()
        );
        record(&log, log::Level::Info, "after");
        let (text, writes) = sink.text();
        assert_eq!(writes, 2);
        assert_eq!(text.lines().count(), 2, "{text}");
        // Without a file, what waits is bounded.
        let log = FileLog::<Sink>::waiting(LevelFilter::Info);
        for i in 0..10_000 {
            record(&log, log::Level::Info, &format!("line {i}"));
        }
        assert!(log.lock().buf.len() < 2 * BATCH_BYTES);
    }

    #[test]
    fn timestamps_are_utc_rfc3339_with_milliseconds() {
        let mut buf = Vec::new();
        write_timestamp(&mut buf, UNIX_EPOCH);
        write_timestamp(
            &mut buf,
            UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
        );
        // 2024 is a leap year: the day after February 28 is the 29th.
        write_timestamp(
            &mut buf,
            UNIX_EPOCH + std::time::Duration::from_secs(1_709_164_800),
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "1970-01-01T00:00:00.000Z2023-11-14T22:13:20.123Z2024-02-29T00:00:00.000Z"
        );
    }

    /// A file whose writes fail while `full` is set, as on a full disk.
    #[derive(Clone, Default)]
    struct Full {
        full: std::sync::Arc<std::sync::atomic::AtomicBool>,
        sink: Sink,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.full.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(io::Error::from_raw_os_error(28));
            }
            self.sink.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    thread_local! {
        /// What the logger told the operator, on this test's thread.
        static WARNED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn warned(line: &str) {
        WARNED.with(|w| w.borrow_mut().push(line.to_owned()));
    }

    /// The tester's case: the log's disk filled up and records were lost
    /// with no word. The operator is told once when writing fails, and
    /// once when it works again, with how many were lost.
    #[test]
    fn records_lost_on_a_full_disk_are_said_once_and_counted() {
        let file = Full::default();
        let log = FileLog::waiting(LevelFilter::Info);
        log.lock().warn = warned;
        log.open(file.clone(), "/var/log/imchat.log".into(), 1 << 30);
        record(&log, log::Level::Info, "before");
        file.full.store(true, std::sync::atomic::Ordering::Relaxed);
        for i in 0..5 {
            record(&log, log::Level::Info, &format!("lost {i}"));
        }
        file.full.store(false, std::sync::atomic::Ordering::Relaxed);
        record(&log, log::Level::Info, "after");
        let warnings = WARNED.with(|w| w.borrow().clone());
        assert_eq!(
            warnings,
            [
                "warning: log: cannot write /var/log/imchat.log: no space left on device; records are lost until it can be written again",
                "log: writing /var/log/imchat.log again; up to 5 records were lost",
            ]
        );
        let (text, _) = file.sink.text();
        assert!(
            text.contains("] before\n") && text.ends_with("] after\n"),
            "{text}"
        );
        assert!(!text.contains("] lost"), "{text}");
        // Said in the log too, on a line of its own.
        let notice = text.lines().nth(2).unwrap_or_default();
        assert!(
            notice.starts_with('[')
                && notice.ends_with(" WARN  imchat_server::logging] up to 5 records before this one were not written: the log could not be written"),
            "{text}"
        );
        assert_eq!(text.lines().nth(1), Some(""), "{text}");
    }

    #[test]
    fn an_unwritable_log_path_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("server.log");
        let rotation = Rotation {
            max_bytes: 1000,
            keep: 2,
        };
        assert!(rotating(&path, rotation).is_err());
    }
}
