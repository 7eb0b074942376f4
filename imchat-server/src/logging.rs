//! The server's log: every record at info level and above goes to the log
//! file, with a timestamp; stderr gets what `RUST_LOG` selects (default
//! `warn`). Both are `env_logger` loggers behind one small tee.

use std::fs::File;
use std::io;
use std::path::Path;

use env_logger::{Env, Logger, Target, WriteStyle};
use log::{LevelFilter, Log, Metadata, Record};

/// Records logged with this target go to the log file only (for a message
/// that is also printed to stderr by other means).
pub const FILE_ONLY: &str = "imchat_server::file_only";

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

/// Creates (or empties) the log file at `path` and installs the logger.
pub fn init(path: &Path) -> io::Result<()> {
    let file = File::create(path)?;
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
