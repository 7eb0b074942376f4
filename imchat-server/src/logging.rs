//! The server's log: every record at info level and above goes to the log
//! file, with a timestamp; stderr gets what `RUST_LOG` selects (default
//! `warn`). Both are `env_logger` loggers behind one small tee.
//!
//! The file is capped: once it passes its size it is rotated (`server.log`
//! becomes `server.log.1`, the oldest beyond the number kept is deleted), so
//! a client chatting as fast as it may cannot fill the disk. Each start
//! begins a new log: the file is emptied and the rotated files of the last
//! run are deleted.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use env_logger::{Env, Logger, Target, WriteStyle};
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

/// Sends each record to the file logger and the stderr logger that accept it.
struct Tee {
    file: Logger,
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
fn rotating(path: &Path, rotation: Rotation) -> io::Result<FileRotate<AppendCount>> {
    // Created here first, so that a path that cannot be written is an error
    // for the caller (the rotating writer panics on one).
    File::create(path)?;
    remove_rotated(path)?;
    Ok(FileRotate::new(
        path,
        AppendCount::new(rotation.keep),
        ContentLimit::BytesSurpassed(usize::try_from(rotation.max_bytes).unwrap_or(usize::MAX)),
        Compression::None,
        None,
    ))
}

/// Creates (or empties) the log file at `path` and installs the logger.
pub fn init(path: &Path, rotation: Rotation) -> io::Result<()> {
    let file = rotating(path, rotation)?;
    let file = env_logger::Builder::new()
        .filter_level(LevelFilter::Info)
        .format_timestamp_millis()
        .write_style(WriteStyle::Never)
        .target(Target::Pipe(Box::new(file)))
        .build();
    let stderr = env_logger::Builder::from_env(Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .build();
    let max = file.filter().max(stderr.filter());
    log::set_boxed_logger(Box::new(Tee { file, stderr }))
        .map_err(|e| io::Error::other(e.to_string()))?;
    log::set_max_level(max);
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
