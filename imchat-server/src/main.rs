//! imchat-server: the imchat server, a thin shell around `imchat_core::Hub`.
//!
//! This file parses the arguments and maps failures to exit codes; the
//! sockets and threads live in `server`, the shared folder in `files`, the
//! log in `logging`.

mod config;
mod files;
mod logging;
mod names;
mod report;
mod server;
mod socket;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{LimitArgs, SharedDirChoice};
use crate::files::SharedDir;

/// The welcome text sent to each user who joins (`{user}` becomes its name).
const DEFAULT_WELCOME: &str = "Welcome to imchat, {user}! Type /help for the commands.";

/// The imchat server: chat between many clients, and a shared folder they
/// can list and download from.
#[derive(Debug, Parser)]
#[command(name = "imchat-server", version, about, long_about = None)]
struct Cli {
    /// TCP port to listen on; 0 lets the system pick a free port (printed at start).
    port: u16,

    /// Address to listen on: 0.0.0.0 for every IPv4 interface, :: for every interface.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    bind: IpAddr,

    /// Folder whose files clients may list and download [default: env
    /// SERVERSHAREDFILES, else env `SERVER_SHARED_FILES`, else ./`SharedFiles`].
    #[arg(long, value_name = "DIR")]
    shared_dir: Option<PathBuf>,

    /// Log file, emptied at each start (`RUST_LOG` sets what also goes to
    /// stderr). It records connections with their addresses, joins, leaves,
    /// who sent a message to whom (not what it said, unless --log-text),
    /// shared-folder requests, transfers and errors.
    #[arg(long, value_name = "PATH", default_value = "server.log")]
    log_file: PathBuf,

    /// Size at which the log file is rotated (PATH.1 is the newest older
    /// part); units K, M, G accepted.
    #[arg(long, value_name = "BYTES", default_value = "10M", value_parser = log_size)]
    log_max_bytes: u64,

    /// Rotated log files kept besides the current one (older ones are deleted).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    log_keep: u16,

    /// Also log the text of every routed message (by default the log says
    /// who wrote to whom, never what).
    #[arg(long)]
    log_text: bool,

    /// Accepted for compatibility: texts are only logged with --log-text.
    #[arg(long, hide = true, conflicts_with = "log_text")]
    no_log_text: bool,

    /// Welcome text sent to each user who joins; {user} is replaced by the name.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_WELCOME)]
    welcome: String,

    #[command(flatten)]
    limits: LimitArgs,
}

/// Why the server could not start or had to stop. Each knows its exit code.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// A limit flag is out of range or inconsistent with another.
    #[error("{0}")]
    Limits(String),
    /// The log file could not be created.
    #[error("cannot create the log file '{path}': {reason}")]
    LogFile { path: String, reason: String },
    /// The shared folder is missing or unreadable.
    #[error("{0}")]
    SharedDir(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    /// Setting up the server's threads or signal handler failed.
    #[error("cannot start: {0}")]
    Start(String),
    /// The server hit an internal error and shut down.
    #[error("internal error: {0}")]
    Fatal(String),
}

impl Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Limits(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: logging::FILE_ONLY, "{e}");
            eprintln!("imchat-server: {e}");
            e.exit_code()
        }
    }
}

/// A log size: at least 4 KiB, so a rotated file holds more than a record.
fn log_size(text: &str) -> Result<u64, String> {
    let bytes = config::size::<u64>(text)?;
    if bytes < 4096 {
        return Err(format!("'{text}' is below the smallest log size, 4K"));
    }
    Ok(bytes)
}

fn run(cli: Cli) -> Result<(), Error> {
    let limits = cli.limits.to_limits().map_err(Error::Limits)?;
    let rotation = logging::Rotation {
        max_bytes: cli.log_max_bytes,
        keep: usize::from(cli.log_keep),
    };
    logging::init(&cli.log_file, rotation).map_err(|e| Error::LogFile {
        path: cli.log_file.display().to_string(),
        reason: files::io_reason(&e),
    })?;
    for warning in LimitArgs::warnings(&limits) {
        log::warn!("{warning}");
    }
    let choice = SharedDirChoice::pick(cli.shared_dir, |key| std::env::var_os(key));
    let shared = SharedDir::open(&choice.path).map_err(Error::SharedDir)?;
    let addr = SocketAddr::new(cli.bind, cli.port);
    let listener = TcpListener::bind(addr).map_err(|e| Error::Bind {
        addr,
        reason: files::io_reason(&e),
    })?;
    let local = listener.local_addr().map_err(|e| Error::Bind {
        addr,
        reason: files::io_reason(&e),
    })?;
    report::print_line(&format!("imchat-server listening on {local}"));
    report::print_line(&format!(
        "shared folder: {} ({})",
        choice.path.display(),
        choice.source
    ));
    log::info!("listening on {local}");
    log::info!(
        "shared folder: {} ({}), resolved to {}",
        choice.path.display(),
        choice.source,
        shared.root().display()
    );
    let config = server::Config {
        limits,
        welcome: cli.welcome,
        log_text: cli.log_text,
        shared,
    };
    server::run(listener, config)
}
