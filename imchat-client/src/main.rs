//! `imchat-client <username> <hostname> <port>`: the imchat terminal client.
//!
//! A shell around `imchat_core::ClientSession`: argument checks and the
//! connection here, threads and event handling in [`app`], files in
//! [`files`], the terminal in [`ui`].

mod app;
mod command;
mod error;
mod files;
mod ui;
mod view;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use imchat_core::{inert, Username};

use crate::error::{describe_connect_error, ClientError};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The imchat client: chat with the users of an imchat server, download its
/// shared files, send files to other users. Type /help once connected.
#[derive(Debug, Parser)]
#[command(name = "imchat-client", version)]
struct Cli {
    /// Your name in the chat: 1-32 letters or digits (any script), `_`,
    /// `-` or `.` (not first).
    username: String,
    /// The server's host name or IP address.
    hostname: String,
    /// The server's port (1-65535).
    port: String,
    /// Folder for downloads (received files go to its `received/`);
    /// by default a folder named after the username, in the current folder.
    #[arg(long, value_name = "DIR")]
    download_dir: Option<PathBuf>,
    /// Files others send you of up to this size are accepted at once; bigger
    /// ones wait for /accept or /decline (K, M, G units; 0 = always ask).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    auto_accept_bytes: u64,
    /// When input is not a terminal, wait for /accept or /decline lines for
    /// bigger files too (by default they are declined, with a message).
    #[arg(long)]
    ask_when_piped: bool,
}

/// A size in bytes, with an optional unit K, M or G (powers of 1,024).
fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| format!("'{text}' is not a size in bytes (K, M or G units): {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imchat-client: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), ClientError> {
    let port = parse_port(&cli.port)?;
    let username =
        Username::new(cli.username.as_str()).map_err(|reason| ClientError::BadUsername {
            name: inert(&cli.username).into_owned(),
            reason,
        })?;
    let download_dir = cli
        .download_dir
        .unwrap_or_else(|| PathBuf::from(username.as_str()));
    let stream = connect(&cli.hostname, port)?;
    app::run(
        stream,
        app::Config {
            host: cli.hostname,
            port,
            username,
            download_dir,
            auto_accept: (cli.auto_accept_bytes > 0).then_some(cli.auto_accept_bytes),
            ask_when_piped: cli.ask_when_piped,
        },
    )
}

/// The port argument as a port number, 1–65535.
fn parse_port(arg: &str) -> Result<u16, ClientError> {
    match arg.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ClientError::BadPort(inert(arg).into_owned())),
    }
}

/// Connects to the first address of `host` that answers within
/// [`CONNECT_TIMEOUT`], trying each in turn.
fn connect(host: &str, port: u16) -> Result<TcpStream, ClientError> {
    let shown = inert(host).into_owned();
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            log::info!("resolving {shown}: {e}");
            ClientError::Resolve(shown.clone())
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ClientError::Resolve(shown));
    }
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                log::info!("connecting to {addr}: {e}");
                last = Some(e);
            }
        }
    }
    Err(ClientError::Connect {
        addr: app::host_port(&shown, port),
        reason: last.map_or_else(|| "no address".into(), |e| describe_connect_error(&e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_must_be_1_to_65535() {
        assert_eq!(parse_port("1").ok(), Some(1));
        assert_eq!(parse_port("65535").ok(), Some(65535));
        for bad in ["0", "65536", "70000", "-1", "http", "", " 80"] {
            let err = parse_port(bad).expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!("invalid port '{bad}': must be 1-65535")
            );
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn arguments_parse_with_an_optional_download_dir() {
        let cli = Cli::try_parse_from(["imchat-client", "alice", "localhost", "4000"]).expect("ok");
        assert_eq!(cli.username, "alice");
        assert_eq!(cli.download_dir, None);
        let cli = Cli::try_parse_from([
            "imchat-client",
            "--download-dir",
            "/tmp/x",
            "alice",
            "localhost",
            "4000",
        ])
        .expect("ok");
        assert_eq!(cli.download_dir, Some(PathBuf::from("/tmp/x")));
        assert!(Cli::try_parse_from(["imchat-client", "alice"]).is_err());
    }

    #[test]
    fn auto_accept_sizes_take_units_and_default_to_16_mib() {
        let cli = Cli::try_parse_from(["imchat-client", "alice", "localhost", "4000"]).unwrap();
        assert_eq!(cli.auto_accept_bytes, 16 << 20);
        assert!(!cli.ask_when_piped);
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn a_bad_username_is_refused_before_connecting() {
        let cli = Cli::try_parse_from(["imchat-client", "no/slash", "host.invalid", "4000"])
            .expect("parses");
        let err = run(cli).expect_err("refused");
        assert!(matches!(err, ClientError::BadUsername { .. }), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_refused_connection_names_the_address() {
        // Bind then drop a listener: its port is (almost surely) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let err = connect("127.0.0.1", port).expect_err("nothing listens");
        assert_eq!(
            err.to_string(),
            format!("cannot connect to 127.0.0.1:{port}: connection refused")
        );
    }
}
