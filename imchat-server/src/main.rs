//! imchat-server: the imchat server, a thin shell around `imchat_core::Hub`.
//!
//! This file parses the arguments and maps failures to exit codes; the
//! sockets and threads live in `server`, the shared folder in `files`, the
//! log in `logging`.

mod accounts;
mod churn;
mod cluster;
mod cluster_accounts;
mod config;
mod files;
mod logging;
mod names;
mod report;
mod server;
mod socket;
mod store;
mod tls;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use imchat_cli::Shell;
use imchat_core::DEFAULT_PORT;

use crate::config::{LimitArgs, SharedDirChoice};
use crate::files::SharedDir;

/// The welcome text sent to each user who joins (`{user}` becomes its name).
const DEFAULT_WELCOME: &str = "Welcome to imchat, {user}! Type /help for the commands.";

/// Shown after `-h`, which leaves the limits out.
const AFTER_HELP: &str = "\
The limits (users, message sizes, chat rates, timeouts, transfers) are
listed with their defaults by --help.";

/// Shown after `--help`.
const AFTER_LONG_HELP: &str = "\
Examples:
  imchat-server                               every IPv4 interface, port 12300
  imchat-server 4000                          every IPv4 interface, port 4000
  imchat-server 127.0.0.1:4000                this machine only
  imchat-server --bind :: 4000                every interface, IPv6 too
  imchat-server --bind [::1]:4000             the same as [::1]:4000
  imchat-server 0 --shared-dir ~/Public       the system picks the port
  imchat-server 4000 --max-push-bytes 512M --log-max-bytes 1G

Environment:
  SERVERSHAREDFILES    the shared folder, when --shared-dir is not given
  SERVER_SHARED_FILES  the same, when SERVERSHAREDFILES is not set either
  RUST_LOG             what is logged to stderr too (default: warn)
  IMCHAT_REDIS_URL     --redis, when not given
  IMCHAT_REDIS_CA, IMCHAT_REDIS_CERT, IMCHAT_REDIS_KEY
                       --redis-ca, --redis-cert, --redis-key, when not given
  IMCHAT_ACCOUNT_PASSWORD
                       the password --register-name sets

Exit codes:
  0  stopped by SIGINT, SIGTERM or SIGHUP; --reset-name or --register-name
     done
  1  could not start (shared folder, log file, address or history file
     in use: the log file is then left as it was) or failed;
     --reset-name or --register-name could not use its database or Redis
     (or, for --register-name, got no password or a name registered
     already)
  2  bad arguments (an invalid --redis URL too)";

/// The imchat server: chat between many clients, and a shared folder they
/// can list and download from.
///
/// It listens on a TCP port, prints the address and the shared folder it
/// uses, and runs until SIGINT, SIGTERM or SIGHUP, when it tells the clients
/// it is shutting down. Lines typed on its standard input are operator
/// commands: who, kick NAME [reason], ban NAME|ADDRESS [reason], unban
/// NAME|ADDRESS, bans (help lists them).
#[derive(Debug, Parser)]
#[command(
    name = "imchat-server",
    version,
    override_usage = "imchat-server [OPTIONS] [[ADDR:]PORT]\n       imchat-server [OPTIONS] --bind <ADDR:PORT>\n       imchat-server --reset-name <NAME> (--history-db <PATH> | --redis <URL>)\n       imchat-server --register-name <NAME> (--history-db <PATH> | --redis <URL>)",
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP
)]
struct Cli {
    /// TCP port to listen on, or ADDR:PORT; 0 lets the system pick a port [default: 12300]
    ///
    /// PORT alone listens on the --bind address (every IPv4 interface by
    /// default); ADDR:PORT (127.0.0.1:4000, [::1]:4000) names both, as
    /// --bind ADDR:PORT does. Without either, the port is 12300, the
    /// classroom server's. The port in use is printed at start.
    #[arg(value_name = "[ADDR:]PORT", value_parser = parse_listen)]
    listen: Option<Listen>,

    /// Address to listen on, optionally with the port [default: 0.0.0.0]
    ///
    /// An IP address: 0.0.0.0 for every IPv4 interface, :: for every
    /// interface, 127.0.0.1 or ::1 for this machine only. With a port
    /// (127.0.0.1:4000, [::1]:4000) it replaces the PORT argument.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_bind)]
    bind: Option<Bind>,

    /// Folder whose files clients may list and download
    ///
    /// Default: $SERVERSHAREDFILES, else $SERVER_SHARED_FILES, else
    /// ./SharedFiles (the server prints which one it uses). Only regular
    /// files directly inside it (or links to files inside it) are offered.
    #[arg(long, value_name = "DIR")]
    shared_dir: Option<PathBuf>,

    /// Log file, emptied at each start
    ///
    /// It records connections with their addresses, joins, leaves, who sent
    /// a message to whom (not what it said, unless --log-text), shared-folder
    /// requests, transfers and errors. An address that opens more than 64
    /// connections within a minute has the next ones counted, in one line,
    /// not logged (nor printed) one by one until the minute is over; its
    /// joins still are. `RUST_LOG` sets what also goes to stderr. Created
    /// readable by the server's user only (mode 600); a file that exists
    /// keeps its mode.
    #[arg(long, value_name = "PATH", default_value = "server.log")]
    log_file: PathBuf,

    /// Size at which the log file is rotated, at least 4K; units K, M, G accepted
    ///
    /// PATH.1 is then the newest older part.
    #[arg(long, value_name = "BYTES", default_value = "10M", value_parser = log_size)]
    log_max_bytes: u64,

    /// Rotated log files kept besides the current one, 1 to 1000 (older ones are deleted).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    log_keep: u16,

    /// Also log the text of every routed message
    ///
    /// By default the log says who wrote to whom, never what.
    #[arg(long)]
    log_text: bool,

    /// Accepted for compatibility: texts are only logged with --log-text.
    #[arg(long, hide = true, conflicts_with = "log_text")]
    no_log_text: bool,

    /// Welcome text sent to each user who joins; {user} is replaced by the name.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_WELCOME)]
    welcome: String,

    /// Keep the room's history and the resumable sessions in this SQLite file
    ///
    /// Created if missing. A server restarted with the same file keeps its
    /// message ids and epoch, and takes back the clients that reconnect
    /// within the grace period, with nothing they were sent missing. A
    /// chat message is acknowledged only once it is committed to the file.
    /// Without it, history lives in memory and a restart loses it (clients
    /// are told: the epoch changes). One server at a time: it is locked
    /// (PATH.lock beside it) while a server uses it, and a second one
    /// started on it refuses to start.
    #[arg(long, value_name = "PATH")]
    history_db: Option<PathBuf>,

    /// How far each commit to --history-db goes before the message is acknowledged
    ///
    /// normal: survives a crash of the server, not necessarily a power
    /// failure (the last commits may be lost; the file stays intact).
    /// full: every commit waits for the disk (slower chat).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "normal",
        requires = "history_db"
    )]
    history_sync: SyncMode,

    /// Join a cluster of servers that are one chat, through this Redis
    ///
    /// redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss:// for TLS, or
    /// unix:///PATH/redis.sock[?pass=PASSWORD&db=DB] for Redis's unix
    /// socket. Without it the server is alone (the default). The password
    /// is never logged.
    #[arg(
        long,
        value_name = "URL",
        env = "IMCHAT_REDIS_URL",
        hide_env_values = true
    )]
    redis: Option<String>,

    /// `--redis` came from `IMCHAT_REDIS_URL` (set by `parse_args`).
    #[arg(skip)]
    redis_from_env: bool,

    /// CA certificates (a PEM file) to trust for a rediss:// --redis
    ///
    /// For a Redis whose certificate is signed by your own CA, or is
    /// self-signed: its certificate must then chain to one of these, and
    /// the web PKI roots (the default) are not used. Unused without
    /// --redis.
    #[arg(
        long,
        value_name = "FILE",
        env = "IMCHAT_REDIS_CA",
        hide_env_values = true
    )]
    redis_ca: Option<PathBuf>,

    /// Client certificate (a PEM file, with its chain) shown to a rediss:// --redis
    ///
    /// For a Redis that asks its clients for a certificate
    /// (`tls-auth-clients yes`, Redis's default with TLS). Needs
    /// --redis-key. Unused without --redis.
    #[arg(
        long,
        value_name = "FILE",
        env = "IMCHAT_REDIS_CERT",
        hide_env_values = true
    )]
    redis_cert: Option<PathBuf>,

    /// Private key (a PEM file) of --redis-cert
    #[arg(
        long,
        value_name = "FILE",
        env = "IMCHAT_REDIS_KEY",
        hide_env_values = true
    )]
    redis_key: Option<PathBuf>,

    /// Lease of a server's names and heartbeat in the cluster, in seconds
    ///
    /// Renewed every third of it; a server that dies is noticed within
    /// about 1.3 times this. Its users are then announced as left
    /// everywhere, and their names are free again, once the grace period
    /// (--grace-secs, 60 by default) has passed without them resuming on
    /// another server: with --grace-secs 0, at once.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, requires = "redis")]
    cluster_lease_secs: f64,

    /// The most of Redis's memory the cluster's stream may use, in MiB
    ///
    /// The stream carries every server's messages and is the room's history
    /// in a cluster. Past this, its oldest entries are trimmed (checked by
    /// each server after every sixteenth of it that it published), so that
    /// a burst of long messages cannot grow Redis without bound.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 256,
        value_parser = clap::value_parser!(u64).range(1..=1024 * 1024),
        requires = "redis"
    )]
    cluster_stream_mib: u64,

    /// File whose first line is the server password
    ///
    /// Clients must give it (--password-file, $IMCHAT_PASSWORD, or typed
    /// when asked) before they can see or send anything. Failed attempts
    /// are limited per address. An empty or unreadable file stops the
    /// server from starting. The line is taken as it is, spaces included
    /// (the server warns of trailing ones).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// A registered username that may kick and ban (repeatable)
    ///
    /// Gives rights only to whoever joins under that name with its account
    /// password, so it needs --history-db or --redis (where accounts are
    /// kept) and the name registered with --register-name on the server's
    /// machine (a client cannot register or unregister an operator's
    /// name: whoever did first would have its rights). The server warns
    /// at start of an operator name not registered yet.
    #[arg(long, value_name = "NAME")]
    operator: Vec<String>,

    /// Remove the registration of NAME from --redis, or else from --history-db, then exit
    ///
    /// For an operator whose user lost the password: the name is free
    /// again (with --redis, on every server of the cluster). Run it while
    /// the server is stopped, or beside it. A user connected under NAME
    /// is not disconnected: it keeps the name until it leaves (kick it
    /// to free the name now), and the command says so.
    #[arg(long, value_name = "NAME", conflicts_with = "register_name")]
    reset_name: Option<String>,

    /// Register NAME in --redis, or else in --history-db, then exit
    ///
    /// How an --operator name is registered: a client cannot register or
    /// unregister one (whoever did first would have its rights). The
    /// password comes from IMCHAT_ACCOUNT_PASSWORD, or else is asked on
    /// the terminal (twice, not shown), or else is the first line of
    /// standard input. Run it while the server is stopped, or beside it.
    #[arg(long, value_name = "NAME")]
    register_name: Option<String>,

    #[command(flatten)]
    limits: LimitArgs,

    #[command(flatten)]
    tls: tls::TlsArgs,

    // The generators are exclusive: clap then requires no other argument.
    /// Print a completion script for SHELL on stdout
    #[arg(long, value_name = "SHELL", hide = true, exclusive = true)]
    generate_completions: Option<Shell>,

    /// Print the man page (roff) on stdout
    #[arg(long, hide = true, exclusive = true)]
    generate_man: bool,
}

/// The positional argument: a port, or an address with its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listen {
    Port(u16),
    Addr(SocketAddr),
}

/// `--bind`: an address, with or without the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bind {
    ip: IpAddr,
    port: Option<u16>,
}

/// `PORT` (0-65535) or `ADDR:PORT`.
fn parse_listen(text: &str) -> Result<Listen, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        return text
            .parse()
            .map(Listen::Port)
            .map_err(|_| "a port is a number from 0 to 65535 (0: the system picks one)".into());
    }
    text.parse().map(Listen::Addr).map_err(|_| {
        "not a port nor ADDR:PORT (an IP address and a port: 127.0.0.1:4000, [::1]:4000)".into()
    })
}

/// `ADDR` or `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
fn parse_bind(text: &str) -> Result<Bind, String> {
    // An IPv6 address may come in the brackets it has with a port: `[::1]`.
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Bind { ip, port: None });
    }
    text.parse::<SocketAddr>()
        .map(|addr| Bind {
            ip: addr.ip(),
            port: Some(addr.port()),
        })
        .map_err(|_| {
            "not an IP address (0.0.0.0, ::, 127.0.0.1) nor ADDR:PORT (127.0.0.1:4000, [::1]:4000)"
                .into()
        })
}

/// `--history-sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SyncMode {
    Normal,
    Full,
}

/// What the command line asks for.
#[derive(Debug)]
enum Task {
    /// Print the completion script for a shell.
    Completions(Shell),
    /// Print the man page.
    Man,
    /// Serve on this address.
    Serve(Box<Cli>, SocketAddr),
    /// Remove a registration and exit.
    ResetName(Box<Cli>),
    /// Add a registration and exit.
    RegisterName(Box<Cli>),
}

/// Parses the command line; errors (and help) come as clap errors, which
/// print themselves in clap's style and exit with code 2 (0 for help).
fn parse_args<I, T>(args: I) -> Result<Task, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    cli.redis_from_env = matches.value_source("redis") == Some(ValueSource::EnvVariable);
    if let Some(shell) = cli.generate_completions {
        return Ok(Task::Completions(shell));
    }
    if cli.generate_man {
        return Ok(Task::Man);
    }
    if cli.reset_name.is_some() {
        return Ok(Task::ResetName(Box::new(cli)));
    }
    if cli.register_name.is_some() {
        return Ok(Task::RegisterName(Box::new(cli)));
    }
    let usage = |kind, message: String| Cli::command().error(kind, message);
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let addr = match (cli.listen, cli.bind) {
        (Some(Listen::Port(port)), None) => SocketAddr::new(any, port),
        (Some(Listen::Port(port)), Some(Bind { ip, port: None })) => SocketAddr::new(ip, port),
        (Some(Listen::Addr(addr)), None) => addr,
        (
            None,
            Some(Bind {
                ip,
                port: Some(port),
            }),
        ) => SocketAddr::new(ip, port),
        (
            Some(Listen::Port(port)),
            Some(Bind {
                port: Some(bound), ..
            }),
        ) => {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                format!(
                    "the port is given twice: '{port}' and in --bind (port {bound}); give it once"
                ),
            ))
        }
        (Some(Listen::Addr(addr)), Some(_)) => {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                format!("the address is given twice: '{addr}' and --bind; give one"),
            ))
        }
        (None, None) => SocketAddr::new(any, DEFAULT_PORT),
        (None, Some(Bind { ip, port: None })) => SocketAddr::new(ip, DEFAULT_PORT),
    };
    Ok(Task::Serve(Box::new(cli), addr))
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
    /// The history database could not be opened or read.
    #[error("{0}")]
    History(String),
    /// The Redis URL is unusable.
    #[error("{0}")]
    Cluster(String),
    /// The Redis URL, or a flag that goes with it, is wrong as written.
    #[error("{0}")]
    RedisArgs(String),
    /// The TLS certificate or key could not be read, made or used.
    #[error("{0}")]
    Tls(String),
    /// The password file is missing, unreadable or empty.
    #[error("{0}")]
    Password(String),
    /// An --operator or --reset-name is not a valid username.
    #[error("{0}")]
    Name(String),
    /// --register-name could not register the name.
    #[error("{0}")]
    Account(String),
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
            Error::Limits(_) | Error::Name(_) | Error::RedisArgs(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Queues fill and drain all the time (a busy receiver's buffer is
        // tens of KiB, freed once written): with glibc's defaults the heap
        // was shrunk and grown again under them, and the server spent a
        // tenth of its time in page faults on the fresh pages. Keep up to
        // 64 MiB of free heap (freed memory is given back after a storm of
        // joins, see the presence thread), and map only blocks of 4 MiB or
        // more on their own.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    let (cli, addr) = match parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit()) {
        Task::Completions(shell) => {
            return imchat_cli::print(
                &imchat_cli::completions(Cli::command(), shell),
                "imchat-server",
            )
        }
        Task::Man => {
            return imchat_cli::print(&imchat_cli::man_page(Cli::command()), "imchat-server")
        }
        Task::Serve(cli, addr) => (cli, addr),
        Task::ResetName(cli) => return said(reset_name(&cli)),
        Task::RegisterName(cli) => return said(register_name(&cli)),
    };
    #[cfg(unix)]
    if let Err(e) = stop_signals_to_one_thread() {
        eprintln!("imchat-server: cannot set up the thread that takes the stop signals: {e}");
    }
    // The tests' fail points, from FAILPOINTS; nothing in a normal build.
    let _fail_points = fail::FailScenario::setup();
    match run(*cli, addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: logging::FILE_ONLY, "{e}");
            eprintln!("imchat-server: {e}");
            e.exit_code()
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP go to one thread of their own, which
/// does nothing else: call it before any other thread exists (they all
/// inherit the mask that keeps the signals from them).
///
/// A signal whose handler runs on a thread stuck in a read or write of a
/// socket with a timeout cuts that call short ("Interrupted system call":
/// such calls are not restarted, whatever the handler's flags). The
/// thread that stops the server waits for Redis to take its leave: a
/// second stop signal then (Ctrl-C twice, `timeout`, which signals the
/// process and then its group) failed the leave, and the other servers
/// saw the users leave only when their lease ran out, as lost.
#[cfg(unix)]
fn stop_signals_to_one_thread() -> io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set.thread_block()?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // Unblocking a set of valid signals cannot fail.
            let _ = set.thread_unblock();
            loop {
                std::thread::park();
            }
        })?;
    Ok(())
}

/// A log size: at least 4 KiB, so a rotated file holds more than a record.
fn log_size(text: &str) -> Result<u64, String> {
    let bytes = config::size::<u64>(text)?;
    if bytes < 4096 {
        return Err(format!("'{text}' is below the smallest log size, 4K"));
    }
    Ok(bytes)
}

fn run(cli: Cli, addr: SocketAddr) -> Result<(), Error> {
    let limits = cli.limits.to_limits().map_err(Error::Limits)?;
    let rotation = logging::Rotation {
        max_bytes: cli.log_max_bytes,
        keep: usize::from(cli.log_keep),
    };
    // The log file itself is opened (emptied) only once the server is
    // sure to start, below: a failed start leaves it alone (it may be
    // the log of a server running on the same port or history file).
    logging::init().map_err(|e| Error::Start(e.to_string()))?;
    for warning in LimitArgs::warnings(&limits) {
        log::warn!("{warning}");
    }
    // Read only for a cluster: a server alone runs whatever the
    // environment says of Redis.
    let redis_tls = if cli.redis.is_some() {
        redis_tls(&cli)?
    } else {
        cluster::RedisTls::default()
    };
    let choice = SharedDirChoice::pick(cli.shared_dir, |key| std::env::var_os(key));
    let mut shared = SharedDir::open(&choice.path).map_err(|e| {
        let missing =
            std::fs::metadata(&choice.path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
        Error::SharedDir(choice.explain(e, missing))
    })?;
    let history = match &cli.history_db {
        Some(path) => {
            let durability = match cli.history_sync {
                SyncMode::Normal => store::Durability::Normal,
                SyncMode::Full => store::Durability::Full,
            };
            let mut db =
                store::SqliteStore::open(path, limits.log_entries, limits.log_bytes, durability)
                    .map_err(|e| Error::History(e.to_string()))?;
            // Read before the server says it listens: a history it cannot
            // read stops it here, not after a script saw "listening".
            db.preload().map_err(|e| {
                Error::History(format!(
                    "cannot read the history database '{}': {e}; restore a copy of it, or move it aside (with its -wal file) to start with none (its history, sessions, accounts and bans are then gone)",
                    path.display()
                ))
            })?;
            log::info!("history database: {}", path.display());
            Some(db)
        }
        None => None,
    };
    let cluster = match &cli.redis {
        Some(url) => {
            let lease = cluster_lease(cli.cluster_lease_secs).map_err(Error::Limits)?;
            let settings = cluster::Settings {
                url: url.clone(),
                tls: redis_tls.clone(),
                stream_bytes: cli.cluster_stream_mib << 20,
                lease,
                grace: limits.grace,
            };
            let c = cluster::Cluster::new(&settings).map_err(Error::Cluster)?;
            log::info!(
                "cluster: Redis {} as server {:x}, lease {:?}",
                c.shown_url(),
                c.id(),
                lease
            );
            Some(std::sync::Arc::new(c))
        }
        None => None,
    };
    let tls = cli.tls.load().map_err(Error::Tls)?;
    let password = cli
        .password_file
        .as_deref()
        .map(read_password_file)
        .transpose()?;
    let operators = cli
        .operator
        .iter()
        .map(|n| username_arg("--operator", n))
        .collect::<Result<Vec<_>, _>>()?;
    if !operators.is_empty() && cli.history_db.is_none() && cli.redis.is_none() {
        return Err(Error::Name(
            "--operator needs --history-db or --redis (where accounts are kept)".into(),
        ));
    }
    // With --redis, accounts and bans are the cluster's, in Redis, even
    // when --history-db is given too (it then keeps the history only).
    let (accounts, ban_store) = match (&cli.redis, &cli.history_db) {
        (Some(url), _) => {
            let shared =
                cluster_accounts::RedisAccounts::open(url, &redis_tls).map_err(Error::Cluster)?;
            shared.watch_bans().map_err(Error::Start)?;
            log::info!("accounts and bans: kept in Redis, shared by the cluster");
            let bans: std::sync::Arc<dyn accounts::BanStore> = shared.clone();
            let accounts = accounts_in(Box::new(shared));
            (Some(std::sync::Arc::new(accounts)), Some(bans))
        }
        (None, Some(path)) => {
            let table = open_table(path)?;
            let bans: std::sync::Arc<dyn accounts::BanStore> = table.clone();
            (Some(accounts_of(table)), Some(bans))
        }
        (None, None) => (None, None),
    };
    let listener = TcpListener::bind(addr).map_err(|e| Error::Bind {
        addr,
        reason: files::io_reason(&e),
    })?;
    let local = listener.local_addr().map_err(|e| Error::Bind {
        addr,
        reason: files::io_reason(&e),
    })?;
    logging::open_file(&cli.log_file, rotation).map_err(|e| Error::LogFile {
        path: cli.log_file.display().to_string(),
        reason: e.to_string(),
    })?;
    report::print_line(&format!("imchat-server listening on {local}"));
    report::print_line(&format!(
        "shared folder: {} ({})",
        choice.path.display(),
        choice.source
    ));
    log::info!("listening on {local}");
    if let Some(tls) = &tls {
        let line = format!("TLS certificate SHA-256 fingerprint: {}", tls.fingerprint);
        report::print_line(&format!("TLS on {local}: {}", tls.source));
        report::print_line(&line);
        log::info!("TLS: {}; {line}", tls.source);
        if let Some(warning) = &tls.warning {
            report::print_line(warning);
            log::warn!(target: logging::FILE_ONLY, "{warning}");
        }
    }
    let mut warnings: Vec<String> = exposure_warning(local, password.is_some(), tls.is_some())
        .into_iter()
        .collect();
    if let (Some(path), Some(password)) = (&cli.password_file, &password) {
        warnings.extend(password_space_warning(path, password.expose()));
        warnings.extend(private_file_warning("password file", path));
    }
    if let Some(tls) = &tls {
        warnings.extend(private_file_warning("TLS key file", &tls.key_file));
    }
    for warning in warnings {
        report::print_line(&warning);
        // Printed just above: once on the terminal, once in the log file.
        log::warn!(target: logging::FILE_ONLY, "{warning}");
    }
    if let Some(accounts) = &accounts {
        // (A store that cannot be read now, Redis down, says nothing.)
        for op in operators
            .iter()
            .filter(|op| accounts.is_registered(op) == Ok(false))
        {
            let store = if cli.redis.is_some() {
                "--redis URL"
            } else {
                "--history-db PATH"
            };
            let warning = format!(
                "warning: operator '{op}' is not registered: nobody has its rights until it is (imchat-server --register-name {op} {store})"
            );
            report::print_line(&warning);
            log::warn!(target: logging::FILE_ONLY, "{warning}");
        }
    }
    log::info!(
        "shared folder: {} ({}), resolved to {}",
        choice.path.display(),
        choice.source,
        shared.root().display()
    );
    // Its own files are never shared, wherever they are: the database
    // holds resume tokens and private messages.
    shared.keep_out(files::OwnKind::Log, &cli.log_file);
    if let Some(path) = &cli.history_db {
        shared.keep_out(files::OwnKind::Database, path);
    }
    if let Some(path) = &cli.password_file {
        shared.keep_out(files::OwnKind::Secret, path);
    }
    if let Some(tls) = &tls {
        shared.keep_out(files::OwnKind::Secret, &tls.key_file);
    }
    let own: Vec<&str> = shared
        .own_files_here()
        .into_iter()
        .map(|kind| match kind {
            files::OwnKind::Database => {
                "the history database (with its -wal, -shm, -journal and .lock files)"
            }
            files::OwnKind::Log => "the log file (with its rotated parts and its .lock)",
            files::OwnKind::Secret => "its password file or TLS key",
        })
        .collect();
    if !own.is_empty() {
        let line = format!(
            "shared folder: the server's own files in it are left out, never listed nor served: {}",
            own.join(" and ")
        );
        report::print_line(&line);
        log::info!("{line}");
    }
    if let Ok(left_out) = shared.left_out() {
        for line in files::left_out_lines(&left_out) {
            report::print_line(&line);
            log::info!("{line}");
        }
    }
    let config = server::Config {
        limits,
        welcome: cli.welcome,
        log_text: cli.log_text,
        shared,
        cluster,
        tls: tls.map(|t| t.config),
        password,
        accounts,
        ban_store,
        operators,
    };
    server::run(listener, config, history)
}

/// `--cluster-lease-secs`: at least 0.3 s (renewed every third of it).
fn cluster_lease(secs: f64) -> Result<std::time::Duration, String> {
    if !secs.is_finite() || !(0.3..=86_400.0).contains(&secs) {
        return Err(format!(
            "--cluster-lease-secs must be between 0.3 and 86400 seconds, not {secs}"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// The server password: the first line of `path`, its line ending
/// stripped (nothing else is trimmed: spaces count).
fn read_password_file(path: &std::path::Path) -> Result<imchat_core::Secret, Error> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Password(format!(
            "cannot read the password file '{shown}': {}",
            files::io_reason(&e)
        ))
    })?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(Error::Password(format!(
            "the password file '{shown}' is empty: its first line is the password"
        )));
    }
    secret(line, &format!("the password in '{shown}'"))
}

/// A username given on the command line.
fn username_arg(flag: &str, name: &str) -> Result<imchat_core::Username, Error> {
    imchat_core::Username::new(name)
        .map_err(|e| Error::Name(format!("{flag} '{name}' is not a valid username: {e}")))
}

/// The accounts and bans tables of the history file at `path`.
fn open_table(path: &std::path::Path) -> Result<std::sync::Arc<store::SqliteAccounts>, Error> {
    store::SqliteAccounts::open(path)
        .map(std::sync::Arc::new)
        .map_err(|e| Error::History(e.to_string()))
}

/// The accounts kept in `store`, by the server's name key, a name that
/// reads as a registered one protected by its registration.
fn accounts_in(store: Box<dyn accounts::AccountStore>) -> accounts::Accounts {
    accounts::Accounts::new(store, names::key).with_look_alikes(names::look_alike_keys)
}

/// The accounts kept in `table`, by the server's name key.
fn accounts_of(table: std::sync::Arc<store::SqliteAccounts>) -> std::sync::Arc<accounts::Accounts> {
    std::sync::Arc::new(accounts_in(Box::new(table)))
}

/// What `--redis-ca`, `--redis-cert` and `--redis-key` name, read.
fn redis_tls(cli: &Cli) -> Result<cluster::RedisTls, Error> {
    let read = |option: &str, path: &Option<PathBuf>| {
        path.as_deref()
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    Error::Cluster(format!(
                        "cannot read {option} {}: {}",
                        path.display(),
                        files::io_reason(&e)
                    ))
                })
            })
            .transpose()
    };
    // Checked here, not by clap: a server alone runs whatever the
    // environment says of Redis.
    if cli.redis_cert.is_some() != cli.redis_key.is_some() {
        return Err(Error::RedisArgs(
            "--redis-cert and --redis-key go together: give both, or neither".into(),
        ));
    }
    if let Some(url) = &cli.redis {
        cluster::check_url(url, cli.redis_ca.is_some(), cli.redis_cert.is_some()).map_err(
            |e| {
                // Said: an operator who gave no --redis looks for it on the
                // command line (an empty variable, from an unset one in a
                // compose file, is the usual case).
                Error::RedisArgs(if cli.redis_from_env {
                    format!("{e}; it is the value of the environment variable IMCHAT_REDIS_URL (unset it to run the server alone)")
                } else {
                    e
                })
            },
        )?;
    }
    let cert = read("--redis-cert", &cli.redis_cert)?;
    let key = read("--redis-key", &cli.redis_key)?;
    Ok(cluster::RedisTls {
        ca: read("--redis-ca", &cli.redis_ca)?,
        identity: cert.zip(key),
    })
}

/// `--reset-name NAME --redis URL` or `--reset-name NAME --history-db
/// PATH`: removes the registration (from Redis when both are given, as a
/// server does). A file that does not exist is an error (nothing is
/// created); one that does must be an imchat history.
fn reset_name(cli: &Cli) -> Result<String, Error> {
    let Some(name) = &cli.reset_name else {
        return Err(Error::Name("--reset-name needs a name".into()));
    };
    let user = username_arg("--reset-name", name)?;
    let key = names::key(&user);
    // Whether a session of the name lives on: a reset frees the name for
    // the next login, not from a user who holds it now. Asked first, so
    // that a store that cannot answer has changed nothing.
    let (removed, held) = match (&cli.redis, &cli.history_db) {
        (Some(url), _) => {
            let shared = cluster_accounts::RedisAccounts::open(url, &redis_tls(cli)?)
                .map_err(Error::Cluster)?;
            let held = shared.name_held(&key).map_err(Error::Cluster)?;
            let removed = accounts_in(Box::new(shared))
                .reset(&user)
                .map_err(Error::Cluster)?;
            (removed, held)
        }
        (None, Some(path)) => {
            if !path.exists() {
                // An error, not a success that did nothing: the path may
                // be mistyped.
                return Err(Error::History(format!(
                    "there is no history database at '{}': nothing to reset (is the path right?)",
                    path.display()
                )));
            }
            // Only the accounts table is touched: the history stays as it
            // is, so this may run while the server does.
            let table = open_table(path)?;
            let held = table
                .has_session(&key, names::key)
                .map_err(Error::History)?;
            let removed = accounts_of(table).reset(&user).map_err(Error::History)?;
            (removed, held)
        }
        (None, None) => {
            return Err(Error::Name(
                "--reset-name needs --history-db or --redis (where accounts are kept)".into(),
            ))
        }
    };
    log::info!("registration of '{user}' reset from the command line");
    Ok(match (removed, held) {
        (true, false) => format!("the registration of '{user}' is removed: the name is free"),
        (true, true) => format!(
            "the registration of '{user}' is removed, but '{user}' is connected (or its session waits for a resume): it keeps the name, and any operator rights, until it leaves; kick it ('kick {user}' on a server's console) to free the name now"
        ),
        (false, _) => format!("'{user}' was not registered; nothing changed"),
    })
}

/// The end of a command-line task: its line on stdout and success, or its
/// error on stderr and the error's code.
fn said(result: Result<String, Error>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("imchat-server: {e}");
            e.exit_code()
        }
    }
}

/// The accounts of `--redis URL`, or else of `--history-db PATH`, for a
/// command-line task (`what` names it in the error without either).
fn offline_accounts(cli: &Cli, what: &str) -> Result<std::sync::Arc<accounts::Accounts>, Error> {
    match (&cli.redis, &cli.history_db) {
        (Some(url), _) => {
            let shared = cluster_accounts::RedisAccounts::open(url, &redis_tls(cli)?)
                .map_err(Error::Cluster)?;
            Ok(std::sync::Arc::new(accounts_in(Box::new(shared))))
        }
        (None, Some(path)) => Ok(accounts_of(open_table(path)?)),
        (None, None) => Err(Error::Name(format!(
            "{what} needs --history-db or --redis (where accounts are kept)"
        ))),
    }
}

/// `--register-name NAME --redis URL` or `--register-name NAME
/// --history-db PATH`: registers the name with a password from
/// `IMCHAT_ACCOUNT_PASSWORD`, the terminal or standard input.
fn register_name(cli: &Cli) -> Result<String, Error> {
    let Some(name) = &cli.register_name else {
        return Err(Error::Name("--register-name needs a name".into()));
    };
    let user = username_arg("--register-name", name)?;
    if let (None, Some(path)) = (&cli.redis, &cli.history_db) {
        // The first step of setting up a server with operators: its
        // history file is created here, as the server would create it.
        if !path.exists() {
            let limits = imchat_core::Limits::default();
            store::SqliteStore::open(
                path,
                limits.log_entries,
                limits.log_bytes,
                store::Durability::Normal,
            )
            .map_err(|e| Error::History(e.to_string()))?;
        }
    }
    let accounts = offline_accounts(cli, "--register-name")?;
    let password = account_password(&user)?;
    // The store's own reason when it fails (a wrong Redis password, say):
    // a client is told only that it failed, an operator here needs why.
    let (code, text) = accounts
        .try_register(&user, &password)
        .map_err(Error::Account)?;
    if code == imchat_core::NoticeCode::REGISTERED {
        log::info!("'{user}' registered from the command line");
        Ok(format!(
            "'{user}' is registered: from now on it needs its password"
        ))
    } else if code == imchat_core::NoticeCode::ALREADY_REGISTERED {
        Err(Error::Account(format!(
            "'{user}' is registered already (--reset-name {user} first to change its password)"
        )))
    } else {
        Err(Error::Account(text))
    }
}

/// The password `--register-name` registers: `IMCHAT_ACCOUNT_PASSWORD`,
/// else asked twice on the terminal without echo, else the first line of
/// standard input.
fn account_password(user: &imchat_core::Username) -> Result<imchat_core::Secret, Error> {
    use std::io::IsTerminal;
    let line = match std::env::var("IMCHAT_ACCOUNT_PASSWORD") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => {
            let ask = |prompt: &str| {
                rpassword::prompt_password(prompt)
                    .map_err(|e| Error::Password(format!("cannot read the password: {e}")))
            };
            let first = ask(&format!("password for '{user}': "))?;
            if ask("the same again: ")? != first {
                return Err(Error::Password("the two passwords differ".into()));
            }
            first
        }
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Error::Password(format!("cannot read the password: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if line.is_empty() {
        return Err(Error::Password(
            "no password given (IMCHAT_ACCOUNT_PASSWORD, the terminal or the first line of standard input)".into(),
        ));
    }
    secret(&line, "the password")
}

/// `line` as a password; `what` names it in the error when it is too long.
fn secret(line: &str, what: &str) -> Result<imchat_core::Secret, Error> {
    imchat_core::Secret::new(line).ok_or_else(|| {
        Error::Password(format!(
            "{what} is longer than {} bytes",
            imchat_core::Secret::MAX_BYTES
        ))
    })
}

/// The warning printed at start when the server listens beyond this
/// machine without TLS: with neither a password nor TLS, nothing keeps
/// the chat private; with a password alone, the password itself crosses
/// the network in clear text. A server with TLS gets no warning.
fn exposure_warning(local: SocketAddr, password: bool, tls: bool) -> Option<String> {
    if local.ip().is_loopback() || tls {
        return None;
    }
    if password {
        return Some(format!(
            "warning: listening on {local} (beyond this machine) with a password but no TLS: the password, and everything else, crosses the network in clear text, for anyone on the way to read (see --tls-self-signed)"
        ));
    }
    Some(format!(
        "warning: listening on {local} (beyond this machine) with neither a password nor TLS: anyone who can reach the port can join, read the room and download the shared folder, and everything crosses the network in clear text (see --password-file and --tls-self-signed)"
    ))
}

/// The warning for a password (from the file `path`) that ends in spaces
/// or tabs: they are part of it (only the line ending is stripped), which
/// an operator who typed `echo 'pw ' > file` may not mean. It is kept as
/// it is: the operator hears it, the password does not change behind its
/// back.
fn password_space_warning(path: &std::path::Path, password: &str) -> Option<String> {
    password.ends_with([' ', '\t']).then(|| {
        format!(
            "warning: the password in '{}' ends in whitespace (spaces or tabs); it is kept as is, so clients must give it with them",
            path.display()
        )
    })
}

/// The warning for a private file (`what`: the TLS key, the password
/// file) that other users of this machine may read.
fn private_file_warning(what: &str, path: &std::path::Path) -> Option<String> {
    store::shared_mode(path).map(|mode| {
        format!(
            "warning: the {what} '{}' can be read by other users of this machine (mode {mode:o}): chmod 600 it",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_beyond_loopback_with_neither_password_nor_tls_is_warned_about() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(exposure_warning(at("127.0.0.1:4000"), false, false), None);
        assert_eq!(exposure_warning(at("[::1]:4000"), false, false), None);
        assert_eq!(exposure_warning(at("0.0.0.0:4000"), true, true), None);
        assert_eq!(exposure_warning(at("0.0.0.0:4000"), false, true), None);
        assert_eq!(exposure_warning(at("127.0.0.1:4000"), true, false), None);
        let clear = exposure_warning(at("0.0.0.0:4000"), true, false).unwrap();
        assert!(
            clear.contains("with a password but no TLS") && clear.contains("clear text"),
            "{clear}"
        );
        let warning = exposure_warning(at("0.0.0.0:4000"), false, false).unwrap();
        assert!(warning.starts_with("warning: listening on 0.0.0.0:4000"));
        assert!(warning.contains("--password-file"));
        assert!(warning.contains("--tls-self-signed"));
        assert!(exposure_warning(at("[::]:4000"), false, false).is_some());
    }

    #[test]
    fn the_password_file_gives_its_first_line_and_refuses_empty_or_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret \r\nsecond line\n").unwrap();
        assert_eq!(read_password_file(&file).unwrap().expose(), "s3cret ");
        std::fs::write(&file, "\nnot the first\n").unwrap();
        let empty = read_password_file(&file).unwrap_err().to_string();
        assert!(empty.contains("is empty"), "{empty}");
        let missing = read_password_file(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read the password file"),
            "{missing}"
        );
    }

    #[test]
    fn a_password_ending_in_whitespace_is_kept_and_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "letmein \t\n").unwrap();
        let password = read_password_file(&file).unwrap();
        assert_eq!(password.expose(), "letmein \t", "kept as it is");
        let line = password_space_warning(&file, password.expose()).unwrap();
        assert!(line.contains("ends in whitespace") && line.contains("kept as is"));
        assert!(!line.contains('\n'));
        assert_eq!(password_space_warning(&file, "letmein"), None);
        assert_eq!(password_space_warning(&file, " lead"), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_or_password_file_others_may_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "k").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let line = private_file_warning("TLS key file", &file).unwrap();
        assert!(
            line.starts_with("warning: the TLS key file '")
                && line.contains("(mode 644): chmod 600 it"),
            "{line}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(private_file_warning("TLS key file", &file), None);
    }

    fn serve(args: &[&str]) -> (Cli, SocketAddr) {
        let argv = std::iter::once("imchat-server").chain(args.iter().copied());
        match parse_args(argv) {
            Ok(Task::Serve(cli, addr)) => (*cli, addr),
            Ok(other) => panic!("{args:?}: not a server: {other:?}"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn cluster_flags_parse_and_the_lease_is_checked() {
        let (cli, _) = serve(&[
            "7000",
            "--redis",
            "redis://127.0.0.1:6379",
            "--cluster-lease-secs",
            "2.5",
        ]);
        assert_eq!(cli.redis.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(
            cluster_lease(cli.cluster_lease_secs),
            Ok(std::time::Duration::from_millis(2500))
        );
        assert!(cluster_lease(0.1)
            .unwrap_err()
            .contains("--cluster-lease-secs"));
        assert!(cluster_lease(f64::NAN).is_err());
        // A lease means nothing without a cluster.
        refused(&["7000", "--cluster-lease-secs", "5"]);
    }

    fn refused(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("imchat-server").chain(args.iter().copied());
        match parse_args(argv) {
            Ok(task) => panic!("{args:?} parsed: {task:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_address_comes_from_the_port_argument_or_bind() {
        let cases = [
            (&["4000"][..], "0.0.0.0:4000"),
            (&["0"], "0.0.0.0:0"),
            (&["4000", "--bind", "127.0.0.1"], "127.0.0.1:4000"),
            (&["--bind", "::", "4000"], "[::]:4000"),
            (&["127.0.0.1:4000"], "127.0.0.1:4000"),
            (&["[::1]:4000"], "[::1]:4000"),
            (&["--bind", "127.0.0.1:4000"], "127.0.0.1:4000"),
            (&["--bind", "[::1]:0"], "[::1]:0"),
        ];
        for (args, want) in cases {
            assert_eq!(serve(args).1.to_string(), want, "{args:?}");
        }
    }

    #[test]
    fn an_address_or_port_given_twice_is_a_usage_error() {
        for args in [
            &["4000", "--bind", "127.0.0.1:4001"][..],
            &["127.0.0.1:4000", "--bind", "127.0.0.1"],
            &["127.0.0.1:4000", "--bind", "127.0.0.1:4000"],
        ] {
            let err = refused(args);
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{args:?}");
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("given twice"), "{err}");
            assert!(err.to_string().contains("\nUsage: imchat-server "), "{err}");
        }
    }

    #[test]
    fn without_a_port_the_server_listens_on_the_classroom_server_s_12300() {
        assert_eq!(serve(&[]).1.to_string(), "0.0.0.0:12300");
        assert_eq!(serve(&["--bind", "[::1]"]).1.to_string(), "[::1]:12300");
        assert_eq!(
            serve(&["4000", "--bind", "[::]"]).1.to_string(),
            "[::]:4000"
        );
        assert_eq!(
            serve(&["--bind", "127.0.0.1"]).1.to_string(),
            "127.0.0.1:12300"
        );
        assert_eq!(serve(&["--bind", "::1"]).1.to_string(), "[::1]:12300");
    }

    #[test]
    fn bad_ports_and_addresses_are_refused_in_clap_style() {
        for (args, value, arg) in [
            (&["70000"][..], "70000", "[[ADDR:]PORT]"),
            (&["http"], "http", "[[ADDR:]PORT]"),
            (&["localhost:4000"], "localhost:4000", "[[ADDR:]PORT]"),
            (
                &["4000", "--bind", "localhost"],
                "localhost",
                "--bind <ADDR[:PORT]>",
            ),
            (
                &["4000", "--bind", "1.2.3.4:99999"],
                "1.2.3.4:99999",
                "--bind <ADDR[:PORT]>",
            ),
        ] {
            let err = refused(args);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}");
            assert_eq!(err.exit_code(), 2);
            let want = format!("error: invalid value '{value}' for '{arg}': ");
            assert!(err.to_string().starts_with(&want), "{err}");
        }
    }

    /// Every bound a value is refused past is named in `--help`, so that
    /// the refusal never comes as news.
    #[test]
    fn long_help_names_the_bounds_values_are_checked_against() {
        use imchat_core::{CHAT_FRAME_OVERHEAD, CHUNK_FRAME_OVERHEAD, MAX_HELLO_FRAME};
        let long = refused(&["--help"]).to_string();
        // From the bounds checked, so that the help cannot go stale.
        assert_eq!(log_size("4K"), Ok(4096));
        assert!(log_size("4095").is_err());
        for bound in [
            "rotated, at least 4K".to_owned(),
            format!("From {MAX_HELLO_FRAME} (the largest valid hello) to --max-frame-bytes"),
            format!("At most --max-frame-bytes less {CHAT_FRAME_OVERHEAD}"),
            format!(
                "At least --chunk-bytes plus {CHUNK_FRAME_OVERHEAD} and --max-message-bytes plus {CHAT_FRAME_OVERHEAD}"
            ),
        ] {
            assert!(long.contains(bound.as_str()), "{bound:?} missing from\n{long}");
        }
    }

    #[test]
    fn short_help_leaves_the_limits_to_long_help() {
        let short = refused(&["-h"]);
        let long = refused(&["--help"]);
        assert_eq!(short.kind(), ErrorKind::DisplayHelp);
        assert_eq!(long.kind(), ErrorKind::DisplayHelp);
        let (short, long) = (short.to_string(), long.to_string());
        for text in [&short, &long] {
            assert!(
                text.contains("Usage: imchat-server [OPTIONS] [[ADDR:]PORT]"),
                "{text}"
            );
            for flag in ["--bind", "--shared-dir", "--log-file"] {
                assert!(text.contains(flag), "{flag} missing from\n{text}");
            }
            assert!(!text.contains("--generate-"), "hidden flags shown:\n{text}");
            // --reset-name needs no port: the usage says how it is run.
            assert!(
                text.contains(
                    "imchat-server --reset-name <NAME> (--history-db <PATH> | --redis <URL>)"
                ),
                "{text}"
            );
            assert!(
                text.contains(
                    "imchat-server --register-name <NAME> (--history-db <PATH> | --redis <URL>)"
                ),
                "{text}"
            );
        }
        assert!(
            short.contains("listed with their defaults by --help"),
            "{short}"
        );
        for detail in [
            "--max-clients",
            "--offer-secs",
            "--grace-secs",
            "--history-count",
            "--history-age-secs",
            "Lines typed on its standard input are operator commands",
            "--register-name could not use",
            "Examples:",
            "imchat-server 127.0.0.1:4000",
            "SERVERSHAREDFILES",
            "SERVER_SHARED_FILES",
            "RUST_LOG",
        ] {
            assert!(long.contains(detail), "{detail} missing from --help");
            assert!(!short.contains(detail), "{detail} in -h");
        }
        // Every variable the server reads is in its Environment section.
        let env = long
            .split("Environment:")
            .nth(1)
            .and_then(|rest| rest.split("Exit codes:").next())
            .expect("an Environment section before the exit codes");
        for var in [
            "SERVERSHAREDFILES",
            "SERVER_SHARED_FILES",
            "RUST_LOG",
            "IMCHAT_REDIS_URL",
            "IMCHAT_REDIS_CA",
            "IMCHAT_REDIS_CERT",
            "IMCHAT_REDIS_KEY",
            "IMCHAT_ACCOUNT_PASSWORD",
        ] {
            assert!(env.contains(var), "{var} missing from\n{env}");
        }
        // An unset variable is not shown as set to nothing (`[env: X=]`).
        assert!(!long.contains("=]"), "{long}");
    }

    #[test]
    fn generators_need_no_port_and_stand_alone() {
        assert!(matches!(
            parse_args(["imchat-server", "--generate-man"]),
            Ok(Task::Man)
        ));
        assert!(matches!(
            parse_args(["imchat-server", "--generate-completions", "fish"]),
            Ok(Task::Completions(Shell::Fish))
        ));
        assert_eq!(
            refused(&["--generate-man", "4000"]).kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn bash_completions_know_the_flags() {
        let script =
            String::from_utf8(imchat_cli::completions(Cli::command(), Shell::Bash)).expect("UTF-8");
        assert!(script.contains("complete -F _imchat__server "), "{script}");
        for flag in [
            "--bind",
            "--shared-dir",
            "--log-file",
            "--max-clients",
            "--offer-secs",
        ] {
            assert!(script.contains(flag), "{flag} missing");
        }
    }

    #[test]
    fn the_man_page_is_roff_for_imchat_server() {
        let page = String::from_utf8(imchat_cli::man_page(Cli::command())).expect("UTF-8");
        let header = page
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .expect("a header");
        assert!(header.starts_with(".TH imchat-server 1 "), "{header}");
        assert!(page.contains("\\-\\-shared\\-dir"), "{page}");
        assert!(page.contains("\\-\\-max\\-clients"), "{page}");
    }
}
