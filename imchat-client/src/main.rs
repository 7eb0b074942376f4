//! `imchat-client <username> <host>[:<port>][,<host>[:<port>]…] [<port>]`: the
//! imchat terminal client.
//!
//! A shell around `imchat_core::ClientSession`: argument checks here, the
//! connection, threads and event handling in [`app`], files in [`files`],
//! what shows it all behind [`view`] ([`ui`] picks one).

mod app;
mod chatlog;
mod command;
mod error;
mod files;
mod resume;
mod screen;
mod servers;
mod tls;
mod ui;
mod view;

use std::ffi::OsStr;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use imchat_cli::Shell;
use imchat_core::{inert, Secret, Username};

use crate::error::ClientError;
use crate::servers::{Server, Servers};

/// Shown after `--help` (not `-h`).
const AFTER_LONG_HELP: &str = "\
Examples:
  imchat-client alice 127.0.0.1 4000      host and port apart
  imchat-client alice 127.0.0.1:4000      or together
  imchat-client alice [::1]:4000          an IPv6 address, in brackets
  imchat-client alice chat.example.org:4000 --download-dir ~/Downloads
  imchat-client alice a.lan,b.lan 4000     two servers of one cluster
  printf '/who\\n/quit\\n' | imchat-client bot localhost:4000
  imchat-client --json bot localhost:4000 < commands.txt

Environment:
  RUST_LOG        what the client logs to stderr (default: warn)
  NO_COLOR        the full-screen interface without colours
  TERM            dumb: plain lines instead of the full-screen interface
  XDG_DATA_HOME   the data folder that holds the default history file
                  (imchat/history) and the saved sessions
                  (imchat/sessions/); ~/.local/share when unset
  IMCHAT_PASSWORD the server's password, when --password-file is not given
  IMCHAT_ACCOUNT_PASSWORD
                  the password of your registered username (and the one a
                  piped /register sets), when --account-password-file is
                  not given

Exit codes:
  0  /quit, /exit or end of input
  1  the server cannot be reached or refuses the name, the connection is
     lost, the server shuts down, an operator removes you, or (piped or
     --json: a script) a line it gave was not sent, a transfer it started
     failed or its answers did not come
  2  bad arguments
  3  (a script) every line was sent and every transfer done, but a request
     failed: an error line, such as a /kick refused or an unknown command";

/// The imchat client: chat with the users of an imchat server, download its
/// shared files, send files to other users.
///
/// In a terminal it runs a full-screen chat interface (type /help once
/// connected); when its input or output is not a terminal, or the terminal
/// is TERM=dumb, it reads and prints plain lines, for scripts, or JSON
/// objects with --json.
#[derive(Debug, Parser)]
#[command(name = "imchat-client", version, after_long_help = AFTER_LONG_HELP)]
struct Cli {
    /// Your name in the chat, e.g. alice
    ///
    /// 1-32 letters or digits (any script), `_`, `-` or `.` (a `.` not first
    /// or last), accents as combining marks (not first, at most 4 in a
    /// row); not a reserved word (server, all, everyone, admin, system) or a
    /// Windows device name. It also names the default download folder.
    #[arg(
        value_name = "USERNAME",
        value_parser = Inert(parse_username),
        required = true
    )]
    username: Option<Username>,

    /// The server's host name or IP address, optionally with its port
    ///
    /// HOST, HOST:PORT, or for an IPv6 address with a port [ADDR]:PORT
    /// (e.g. localhost, 127.0.0.1:4000, [::1]:4000). A port given here
    /// replaces the PORT argument.
    ///
    /// Several servers of one cluster, separated by commas
    /// (a.lan:4000,b.lan:4000): the client connects to the first that
    /// answers, and after losing a server it tries the next one first,
    /// where the session resumes. PORT is the port of those without one.
    #[arg(
        value_name = "HOST[:PORT]",
        value_parser = Inert(parse_servers),
        required = true
    )]
    server: Option<ServerList>,

    /// The server's port (1-65535), unless given with the host [default: 12300]
    ///
    /// A server given without a port, here or with its host, is on port
    /// 12300, the classroom server's (and imchat-server's without one).
    #[arg(value_name = "PORT", value_parser = Inert(parse_port))]
    port: Option<u16>,

    /// Folder for downloads [default: ./USERNAME]
    ///
    /// Downloads are saved in it and files others send you in its
    /// `received/`. By default a folder named after the username, in the
    /// current folder.
    #[arg(long, value_name = "DIR")]
    download_dir: Option<PathBuf>,

    /// Files others send you up to this size are accepted at once
    ///
    /// Bigger ones wait for /accept or /decline. Units K, M, G (powers of
    /// 1,024): 512K, 16M, 2G; 0 asks about every file.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    auto_accept_bytes: u64,

    /// When input is not a terminal, wait for /accept or /decline lines
    ///
    /// By default a script cannot answer, so files bigger than
    /// --auto-accept-bytes are declined with a message.
    #[arg(long)]
    ask_when_piped: bool,

    /// Print one JSON object per line for each event, for programs
    ///
    /// Chat, notices, errors, transfers, status and the roster become JSON
    /// objects with a "type" field (one per line on stdout) instead of the
    /// full-screen interface or plain lines. Input is still read as lines.
    #[arg(long)]
    json: bool,

    /// Reconnect when the connection is lost or the server shuts down
    ///
    /// The default in a terminal. When piped, the client by default retries
    /// once at once (a network blip; given several servers, after its server
    /// shut down too, on the next one) and otherwise exits with code 1. A
    /// refusal that retrying cannot change (banned, a wrong password) ends
    /// the retries: the client exits with code 1 and the server's reason.
    #[arg(long, conflicts_with = "no_reconnect")]
    reconnect: bool,

    /// Exit when the connection is lost, even in a terminal
    #[arg(long)]
    no_reconnect: bool,

    /// File that keeps the input history across runs
    ///
    /// The last 1,000 lines typed in the full-screen interface. Default:
    /// imchat/history in the user's data folder ($XDG_DATA_HOME, else
    /// ~/.local/share on Linux).
    #[arg(long, value_name = "PATH", conflicts_with = "no_history")]
    history_file: Option<PathBuf>,

    /// Keep no input history file
    #[arg(long)]
    no_history: bool,

    /// Start a new session rather than take back the one saved
    ///
    /// A client that was killed or crashed, started again with the same
    /// name and server within the server's grace period, takes its session
    /// back: its name, and the messages it missed. The session is saved in
    /// imchat/sessions/ in the user's data folder (private to you) and
    /// removed by /quit (a /quit while reconnecting marks it instead, and
    /// the next start tells the server of the quit). With --no-resume it is not taken back (the old
    /// one keeps the name until its grace period ends on the server).
    #[arg(long)]
    no_resume: bool,

    /// Append a transcript of the chat to this file
    ///
    /// Every line the chat shows (messages, yours included, actions,
    /// notices), with its date and time, as irssi's and weechat's loggers
    /// do. The file is created private to you (mode 0600) and appended to.
    #[arg(long, value_name = "PATH")]
    chat_log: Option<PathBuf>,

    #[command(flatten)]
    tls: tls::TlsArgs,
    /// File whose first line is the server's password
    ///
    /// For a server started with --password-file. Else $IMCHAT_PASSWORD;
    /// else, in a terminal, the client asks (without echo) when the server
    /// says it needs one.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// File whose first line is the password of your registered username
    ///
    /// Else $IMCHAT_ACCOUNT_PASSWORD; else, in a terminal, the client asks
    /// when the server says the name is registered. Also the password a
    /// piped /register sets.
    #[arg(long, value_name = "FILE")]
    account_password_file: Option<PathBuf>,

    // The generators are exclusive: clap then requires no other argument,
    // so they work without a server.
    /// Print a completion script for SHELL on stdout
    #[arg(long, value_name = "SHELL", hide = true, exclusive = true)]
    generate_completions: Option<Shell>,

    /// Print the man page (roff) on stdout
    #[arg(long, hide = true, exclusive = true)]
    generate_man: bool,
}

/// What the command line asks for.
#[derive(Debug)]
enum Task {
    /// Print the completion script for a shell.
    Completions(Shell),
    /// Print the man page.
    Man,
    /// Connect and chat.
    Chat(Box<Settings>),
}

/// The checked command line of a chat session.
#[derive(Debug)]
struct Settings {
    username: Username,
    servers: Vec<Server>,
    download_dir: Option<PathBuf>,
    auto_accept_bytes: u64,
    ask_when_piped: bool,
    json: bool,
    reconnect: Option<bool>,
    history_file: Option<PathBuf>,
    no_history: bool,
    no_resume: bool,
    chat_log: Option<PathBuf>,
    tls: Option<imchat_core::blocking::tls::Trust>,
    password_file: Option<PathBuf>,
    account_password_file: Option<PathBuf>,
}

/// One server of the second argument: a host, and the port if it came
/// with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerArg {
    host: String,
    port: Option<u16>,
}

/// The second argument: one server, or several separated by commas.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerList(Vec<ServerArg>);

/// Parses the command line; errors (and help) come as clap errors, which
/// print themselves in clap's style and exit with code 2 (0 for help).
fn parse_args<I, T>(args: I) -> Result<Task, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    if let Some(shell) = cli.generate_completions {
        return Ok(Task::Completions(shell));
    }
    if cli.generate_man {
        return Ok(Task::Man);
    }
    let usage = |kind, message: &str| Cli::command().error(kind, message);
    let (Some(username), Some(ServerList(list))) = (cli.username, cli.server) else {
        // Unreachable through clap (both are required without a generator),
        // but an error is better than a panic.
        return Err(usage(
            ErrorKind::MissingRequiredArgument,
            "a username and a server are needed",
        ));
    };
    if let Some(port) = cli.port.filter(|_| list.iter().all(|s| s.port.is_some())) {
        let typed: Vec<String> = list.iter().map(host_port_arg).collect();
        return Err(usage(
            ErrorKind::ArgumentConflict,
            &format!(
                "the port is given twice: with the {} ('{}') and as '{port}'; give it once",
                if list.len() == 1 { "host" } else { "hosts" },
                inert(&typed.join(","))
            ),
        ));
    }
    let mut servers = Vec::with_capacity(list.len());
    for server in list {
        servers.push(Server {
            port: server
                .port
                .or(cli.port)
                .unwrap_or(imchat_core::DEFAULT_PORT),
            host: server.host,
        });
    }
    let reconnect = match (cli.reconnect, cli.no_reconnect) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    Ok(Task::Chat(Box::new(Settings {
        username,
        servers,
        download_dir: cli.download_dir,
        auto_accept_bytes: cli.auto_accept_bytes,
        ask_when_piped: cli.ask_when_piped,
        json: cli.json,
        reconnect,
        history_file: cli.history_file,
        no_history: cli.no_history,
        no_resume: cli.no_resume,
        chat_log: cli.chat_log,
        tls: cli
            .tls
            .trust()
            .map_err(|e| usage(ErrorKind::ValueValidation, &e))?,
        password_file: cli.password_file,
        account_password_file: cli.account_password_file,
    })))
}

/// The server argument as it was typed.
fn host_port_arg(server: &ServerArg) -> String {
    match server.port {
        Some(port) => app::host_port(&server.host, port),
        None => server.host.clone(),
    }
}

/// A value parser from a checking function, whose error shows the value made
/// inert (`^[` for an escape, and so on): clap would otherwise print it as
/// typed, control sequences included.
#[derive(Clone)]
struct Inert<F>(F);

impl<F, T> TypedValueParser for Inert<F>
where
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let Some(text) = value.to_str() else {
            // clap's own error for a value that is not UTF-8.
            return self.0.parse_ref(cmd, arg, value);
        };
        (self.0)(text).or_else(|reason| {
            let refuse = move |_: &str| Err::<T, String>(reason.clone());
            refuse.parse_ref(cmd, arg, OsStr::new(inert(text).as_ref()))
        })
    }
}

/// A username, by the library's rules and the server's extra rule
/// ([`imchat_cli::names::check`]: no leading combining mark, no tower of
/// them), so that a name the server would refuse is a usage error here.
fn parse_username(text: &str) -> Result<Username, String> {
    let name = Username::new(text).map_err(|e| e.to_string())?;
    imchat_cli::names::check(&name)?;
    Ok(name)
}

/// A port number, 1-65535.
fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err("a port is a number from 1 to 65535".into()),
    }
}

/// One server, or several separated by commas.
fn parse_servers(text: &str) -> Result<ServerList, String> {
    let list = text
        .split(',')
        .map(|one| match one.trim() {
            "" => Err("an empty server in the list: separate servers with one comma".to_string()),
            one => parse_server(one),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ServerList(list))
}

/// `HOST`, `HOST:PORT`, `[ADDR]`, `[ADDR]:PORT`; a bare IPv6 address (two
/// colons or more) is a host without a port.
fn parse_server(text: &str) -> Result<ServerArg, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("a '[' without its ']': write an IPv6 address as [ADDR]:PORT")?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("only ':PORT' may follow ']'".into()),
            },
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => {
                // `::1:4000`: an IPv6 address and a port, which cannot be
                // told apart from an address without brackets.
                if let Some((addr, port)) = text.rsplit_once(':') {
                    if text.parse::<std::net::Ipv6Addr>().is_err()
                        && addr.parse::<std::net::Ipv6Addr>().is_ok()
                        && !port.is_empty()
                        && port.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(format!(
                            "not an IPv6 address: with a port, write it in brackets: [{addr}]:{port}"
                        ));
                    }
                }
                (text, None)
            }
        }
    };
    if host.trim().is_empty() {
        return Err("the host is empty".into());
    }
    let port = match port {
        Some(port) => Some(parse_port(port).map_err(|e| format!("bad port '{port}': {e}"))?),
        None => None,
    };
    Ok(ServerArg {
        host: host.to_owned(),
        port,
    })
}

/// A size in bytes, with an optional unit K, M or G (powers of 1,024).
fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => {
                format!("'{text}' is too large a size in bytes")
            }
            // The crate's words ("invalid digit found in string") are
            // Rust's, not the user's.
            _ => format!(
                "'{text}' is not a size in bytes: a number, with K, M or G for KiB, MiB or GiB (as in 512K or 16M)"
            ),
        })
}

/// The default input history file: `imchat/history` in the user's data
/// folder, if the system has one (where the screen keeps it).
fn default_history_file() -> Option<PathBuf> {
    screen::default_history_file()
}

/// Where log records go: standard error, except while the full-screen
/// interface is drawn on that same terminal, where they would garble it
/// (`2>FILE` keeps them then).
struct LogOut;

impl std::io::Write for LogOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if screen::is_active() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Ok(buf.len());
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Makes a write past the file-size limit (`ulimit -f`) an error the
/// client reports ("File too large"), which fails that transfer only,
/// rather than the signal that kills it without a word (exit 153).
#[cfg(unix)]
fn ignore_file_size_signal() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN runs no code of ours in the handler, and nothing
    // else in the client sets a handler for SIGXFSZ.
    let _ = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) };
}

fn main() -> ExitCode {
    #[cfg(unix)]
    ignore_file_size_signal();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Asked on stdout, stderr going elsewhere (a log): an error that ends
    // the client is said there too, where the user answered.
    let mut asked_on_stdout = false;
    // Where the name and the server were asked, and what was answered.
    let mut asked = None;
    if args.len() == 1 {
        // Started with nothing, at a terminal: asks, as the classroom
        // client did, for the name and the server (a bare port: this
        // machine); what is typed then goes through the same checks.
        // Whether stderr is a terminal does not matter (`2>log`, as the
        // README advises): the questions go to the terminal.
        if let Some((mut terminal, out)) = question_terminal() {
            asked_on_stdout = out == QuestionOut::Stdout;
            match ask_name_and_server(&mut *terminal) {
                Some((name, server)) => {
                    args.extend([name.clone().into(), server.clone().into()]);
                    asked = Some((terminal, name, server));
                }
                None => return ExitCode::from(2),
            }
        }
    }
    let task = parse_args(args.clone()).unwrap_or_else(|e| e.exit());
    let settings = match task {
        Task::Completions(shell) => {
            return imchat_cli::print(
                &imchat_cli::completions(Cli::command(), shell),
                "imchat-client",
            )
        }
        Task::Man => {
            return imchat_cli::print(&imchat_cli::man_page(Cli::command()), "imchat-client")
        }
        Task::Chat(settings) => settings,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Pipe(Box::new(LogOut)))
        .init();
    // The tests' fail points, from FAILPOINTS; nothing in a normal build.
    let _fail_points = fail::FailScenario::setup();
    let mut settings = settings;
    let result = loop {
        let result = run(*settings);
        // Asked at a terminal: a name the server refused or a server
        // that cannot be reached is asked again, as the classroom client
        // did, instead of ending the client.
        let Some((terminal, name, server)) = asked.as_mut() else {
            break result;
        };
        let Err(e) = &result else { break result };
        let Some(again) = ask_again(e) else {
            break result;
        };
        let _ = writeln!(terminal, "{}", inert(&e.to_string()));
        let answer = match again {
            Again::Name => ask(terminal, "username", name_answer),
            Again::Server => ask(
                terminal,
                "server (host:port, or a port on this machine)",
                server_answer,
            ),
        };
        let Some(answer) = answer else {
            return ExitCode::from(2);
        };
        match again {
            Again::Name => *name = answer,
            Again::Server => *server = answer,
        }
        let len = args.len();
        args[len - 2] = name.clone().into();
        args[len - 1] = server.clone().into();
        settings = match parse_args(args.clone()) {
            Ok(Task::Chat(settings)) => settings,
            Ok(_) => unreachable!("asked only to chat"),
            Err(e) => e.exit(),
        };
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imchat-client: {e}");
            if asked_on_stdout {
                println!("imchat-client: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Which answer to ask again after a first connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    Name,
    Server,
}

/// What to ask again when `e` ended a client started with no arguments:
/// the name when the server refused it (taken, or against its rules),
/// the server when it could not be reached or is not imchat; `None` for
/// anything else (the client ends as it would have).
fn ask_again(e: &ClientError) -> Option<Again> {
    match e {
        ClientError::Refused { code, .. }
            if *code == imchat_core::RefuseCode::NAME_TAKEN
                || *code == imchat_core::RefuseCode::INVALID_NAME =>
        {
            Some(Again::Name)
        }
        ClientError::ResumeRefused(_) => Some(Again::Name),
        ClientError::Resolve(_)
        | ClientError::Connect { .. }
        | ClientError::NoServer(_)
        | ClientError::NotImchat => Some(Again::Server),
        _ => None,
    }
}

/// Where to ask for the name and the server when started with no
/// arguments: `None` unless stdin is a terminal (what answers); then
/// stderr if it is a terminal too, else stdout if it is one (stderr
/// redirected to a log); with which of the two it is.
fn question_terminal() -> Option<(Box<dyn std::io::Write>, QuestionOut)> {
    use std::io::IsTerminal;
    question_output(
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    )
    .map(|out| -> (Box<dyn std::io::Write>, QuestionOut) {
        match out {
            QuestionOut::Stderr => (Box::new(std::io::stderr()), out),
            QuestionOut::Stdout => (Box::new(std::io::stdout()), out),
        }
    })
}

/// The stream a no-arguments start asks on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuestionOut {
    Stderr,
    Stdout,
}

/// [`question_terminal`]'s choice, from which of stdin, stdout and stderr
/// are terminals.
fn question_output(stdin: bool, stdout: bool, stderr: bool) -> Option<QuestionOut> {
    match (stdin, stdout, stderr) {
        (false, _, _) => None,
        (true, _, true) => Some(QuestionOut::Stderr),
        (true, true, false) => Some(QuestionOut::Stdout),
        (true, false, false) => None,
    }
}

/// Asks on `terminal` for a username and a server, read from stdin;
/// `None` when input ends first. A bare port number means this machine
/// (`localhost:PORT`). Each answer is checked as the argument would be
/// ([`name_answer`], [`server_answer`]): a bad one is said there, in one
/// line, and asked again (an error from the arguments would go to
/// stderr, which the user may not see, once both were typed).
fn ask_name_and_server(terminal: &mut dyn std::io::Write) -> Option<(String, String)> {
    let _ = writeln!(
        terminal,
        "imchat-client USERNAME HOST[:PORT] also starts it without asking (see --help)"
    );
    let name = ask(terminal, "username", name_answer)?;
    let server = ask(
        terminal,
        "server (host:port, or a port on this machine)",
        server_answer,
    )?;
    Some((name, server))
}

/// Asks `question` on `terminal` until an answer read from stdin passes
/// `check`, each refusal said in a line; what `check` makes of the
/// answer, or `None` when input ends first.
fn ask(
    terminal: &mut dyn std::io::Write,
    question: &str,
    check: fn(&str) -> Result<String, String>,
) -> Option<String> {
    loop {
        let _ = write!(terminal, "{question}: ");
        let _ = terminal.flush();
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).ok()? == 0 {
            let _ = writeln!(terminal);
            return None;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match check(line) {
            Ok(answer) => return Some(answer),
            Err(why) => {
                let _ = writeln!(terminal, "{}", inert(&why));
            }
        }
    }
}

/// The username typed at the question, checked as the argument is
/// ([`parse_username`]).
fn name_answer(answer: &str) -> Result<String, String> {
    parse_username(answer)
        .map(|_| answer.to_owned())
        .map_err(|why| format!("invalid username '{answer}': {why}"))
}

/// The server typed at the question, checked as the argument is
/// ([`parse_servers`]); a bare number is a port on this machine (one
/// too big for a port is a bad port, not a host name).
fn server_answer(answer: &str) -> Result<String, String> {
    let digits = answer.strip_prefix('+').unwrap_or(answer);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return parse_port(answer)
            .map(|port| format!("localhost:{port}"))
            .map_err(|why| format!("bad port '{answer}': {why}"));
    }
    parse_servers(answer)
        .map(|_| answer.to_owned())
        .map_err(|why| format!("invalid server: {why}"))
}

/// A password from `file` (its first line, the line ending stripped), else
/// from the environment variable `var`; `None` when neither gives one.
fn password(file: Option<&std::path::Path>, var: &str) -> Result<Option<Secret>, ClientError> {
    let text = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ClientError::PasswordFile {
                path: path.display().to_string(),
                reason: imchat_cli::io_reason(&e),
            })?;
            let line = text.lines().next().unwrap_or_default().to_string();
            if line.is_empty() {
                return Err(ClientError::PasswordFile {
                    path: path.display().to_string(),
                    reason: "it is empty (its first line is the password)".into(),
                });
            }
            line
        }
        None => match std::env::var(var) {
            Ok(v) if !v.is_empty() => v,
            _ => return Ok(None),
        },
    };
    Secret::new(text)
        .map(Some)
        .ok_or(ClientError::PasswordFile {
            path: file.map_or_else(|| format!("${var}"), |p| p.display().to_string()),
            reason: format!("a password is at most {} bytes", Secret::MAX_BYTES),
        })
}

fn run(settings: Settings) -> Result<(), ClientError> {
    let passwords = app::Passwords {
        server: std::sync::Mutex::new(password(
            settings.password_file.as_deref(),
            "IMCHAT_PASSWORD",
        )?),
        account: std::sync::Mutex::new(password(
            settings.account_password_file.as_deref(),
            "IMCHAT_ACCOUNT_PASSWORD",
        )?),
    };
    let Settings {
        username, servers, ..
    } = settings;
    let download_dir = settings
        .download_dir
        .unwrap_or_else(|| PathBuf::from(username.as_str()));
    let history_file = if settings.no_history {
        None
    } else {
        settings.history_file.or_else(default_history_file)
    };
    let Some(servers) = Servers::new(servers) else {
        // Unreachable: the argument parser gives at least one server.
        return Err(ClientError::NoServer("none given".into()));
    };
    app::run(app::Config {
        servers,
        username,
        download_dir,
        auto_accept: (settings.auto_accept_bytes > 0).then_some(settings.auto_accept_bytes),
        ask_when_piped: settings.ask_when_piped,
        json: settings.json,
        reconnect: settings.reconnect,
        history_file,
        chat_log: settings.chat_log,
        passwords,
        resume: !settings.no_resume,
        sessions_dir: resume::default_dir(),
        tls: settings.tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings of a command line that must parse.
    fn chat(args: &[&str]) -> Settings {
        let argv = std::iter::once("imchat-client").chain(args.iter().copied());
        match parse_args(argv) {
            Ok(Task::Chat(settings)) => *settings,
            Ok(other) => panic!("{args:?}: not a chat: {other:?}"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    /// The error of a command line that must not parse.
    fn refused(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("imchat-client").chain(args.iter().copied());
        match parse_args(argv) {
            Ok(task) => panic!("{args:?} parsed: {task:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn ports_must_be_1_to_65535() {
        assert_eq!(chat(&["alice", "localhost", "1"]).servers[0].port, 1);
        assert_eq!(
            chat(&["alice", "localhost", "65535"]).servers[0].port,
            65535
        );
        for bad in ["0", "65536", "70000", "http", "", " 80"] {
            let err = refused(&["alice", "localhost", bad]);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad:?}");
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "error: invalid value '{bad}' for '[PORT]': a port is a number from 1 to 65535\n"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn the_port_may_come_with_the_host() {
        let cases = [
            (&["alice", "127.0.0.1:4000"][..], "127.0.0.1", 4000),
            (&["alice", "localhost:4000"], "localhost", 4000),
            (&["alice", "[::1]:4000"], "::1", 4000),
            (&["alice", "[::1]", "4000"], "::1", 4000),
            (&["alice", "::1", "4000"], "::1", 4000),
            (&["alice", "localhost", "4000"], "localhost", 4000),
        ];
        for (args, host, port) in cases {
            let s = chat(args);
            assert_eq!(s.servers, [server(host, port)], "{args:?}");
            assert_eq!(s.username.as_str(), "alice");
        }
    }

    /// `::1:41879` is no IPv6 address (a group has four hex digits at
    /// most): it is one with a port, which needs brackets; said so.
    #[test]
    fn an_ipv6_address_with_a_port_and_no_brackets_is_told_to_use_them() {
        let err = refused(&["alice", "::1:41879"]);
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("with a port, write it in brackets: [::1]:41879"),
            "{text}"
        );
        // A valid address is a host, as before.
        assert_eq!(
            chat(&["alice", "fe80::1:4000"]).servers,
            [server("fe80::1:4000", 12300)]
        );
    }

    #[test]
    fn a_port_given_twice_or_not_at_all_is_a_usage_error() {
        let err = refused(&["alice", "localhost:4000", "4001"]);
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "error: the port is given twice: with the host ('localhost:4000') and as '4001'"
            ),
            "{text}"
        );
        assert!(text.contains("\nUsage: imchat-client "), "{text}");

        let err = refused(&["alice"]);
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn a_server_without_a_port_is_on_the_classroom_server_s_12300() {
        for (args, servers) in [
            (
                &["alice", "localhost"][..],
                vec![server("localhost", 12300)],
            ),
            (&["alice", "[::1]"], vec![server("::1", 12300)]),
            (
                &["alice", "a.lan:4000,b.lan"],
                vec![server("a.lan", 4000), server("b.lan", 12300)],
            ),
        ] {
            assert_eq!(chat(args).servers, servers, "{args:?}");
        }
    }

    fn server(host: &str, port: u16) -> Server {
        Server {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn several_servers_are_separated_by_commas_and_port_is_theirs_without_one() {
        let cases = [
            (
                &["alice", "a.lan:4000,b.lan:4001"][..],
                vec![server("a.lan", 4000), server("b.lan", 4001)],
            ),
            (
                &["alice", "a.lan,[::1],127.0.0.1:4001", "4000"],
                vec![
                    server("a.lan", 4000),
                    server("::1", 4000),
                    server("127.0.0.1", 4001),
                ],
            ),
            (
                &["alice", "a.lan:4000, b.lan:4001"],
                vec![server("a.lan", 4000), server("b.lan", 4001)],
            ),
        ];
        for (args, servers) in cases {
            assert_eq!(chat(args).servers, servers, "{args:?}");
        }

        let err = refused(&["alice", "a.lan:4000,b.lan:4001", "4002"]);
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        assert!(
            err.to_string().starts_with(
                "error: the port is given twice: with the hosts ('a.lan:4000,b.lan:4001') and as '4002'"
            ),
            "{err}"
        );
        for bad in ["a.lan:4000,", ",a.lan:4000", "a.lan:4000,,b.lan:4000"] {
            let err = refused(&["alice", bad]);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
            assert!(
                err.to_string().contains("an empty server in the list"),
                "{err}"
            );
        }
        let err = refused(&["alice", "a.lan:4000,b.lan:0"]);
        assert!(err.to_string().contains("bad port '0'"), "{err}");
    }

    #[test]
    fn a_bad_port_or_host_inside_host_port_is_refused() {
        for bad in [
            "localhost:0",
            "localhost:99999",
            "localhost:",
            ":4000",
            "[::1]x",
            "[::1",
        ] {
            let err = refused(&["alice", bad]);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
            assert!(
                err.to_string().starts_with(&format!(
                    "error: invalid value '{bad}' for '<HOST[:PORT]>': "
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn a_bad_username_is_refused_in_clap_style_with_escapes_made_inert() {
        let err = refused(&["no/slash", "localhost", "4000"]);
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .starts_with("error: invalid value 'no/slash' for '<USERNAME>': "),
            "{err}"
        );
        let err = refused(&["a\x1b[31mb", "localhost", "4000"]);
        let text = err.to_string();
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("'a^[[31mb'"), "{text:?}");
    }

    #[test]
    fn a_name_the_server_would_refuse_for_its_marks_is_refused_here() {
        let tower = format!("e{}", "\u{301}".repeat(5));
        let err = refused(&[&tower, "localhost", "4000"]);
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("more than 4 combining marks in a row"),
            "{err}"
        );
        let err = refused(&["\u{301}bob", "localhost", "4000"]);
        assert!(
            err.to_string().contains("starts with a combining mark"),
            "{err}"
        );
        let four = format!("e{}", "\u{301}".repeat(4));
        assert_eq!(chat(&[&four, "localhost", "4000"]).username.as_str(), four);
    }

    #[test]
    fn the_answers_to_the_questions_are_checked_as_the_arguments() {
        assert_eq!(server_answer("4000").as_deref(), Ok("localhost:4000"));
        assert_eq!(server_answer("+80").as_deref(), Ok("localhost:80"));
        assert_eq!(server_answer("host:4000").as_deref(), Ok("host:4000"));
        assert_eq!(server_answer("a,b:5").as_deref(), Ok("a,b:5"));
        for (bad, why) in [
            (
                "99999",
                "bad port '99999': a port is a number from 1 to 65535",
            ),
            ("0", "bad port '0': a port is a number from 1 to 65535"),
            ("h:99999", "invalid server: bad port '99999': "),
            ("a,,b", "invalid server: an empty server in the list"),
        ] {
            let err = server_answer(bad).unwrap_err();
            assert!(err.starts_with(why), "{bad}: {err}");
        }
        assert_eq!(name_answer("alice").as_deref(), Ok("alice"));
        let err = name_answer("\u{301}bob").unwrap_err();
        assert!(err.contains("starts with a combining mark"), "{err}");
        let err = name_answer("no/slash").unwrap_err();
        assert!(err.starts_with("invalid username 'no/slash': "), "{err}");
    }

    #[test]
    fn with_no_arguments_it_asks_when_stdin_is_a_terminal_whatever_stderr_is() {
        use QuestionOut::{Stderr, Stdout};
        // (stdin, stdout, stderr) terminals.
        assert_eq!(question_output(true, true, true), Some(Stderr));
        assert_eq!(question_output(true, true, false), Some(Stdout));
        assert_eq!(question_output(true, false, true), Some(Stderr));
        assert_eq!(question_output(true, false, false), None);
        for (stdout, stderr) in [(true, true), (false, false), (true, false)] {
            assert_eq!(question_output(false, stdout, stderr), None);
        }
    }

    #[test]
    fn arguments_parse_with_an_optional_download_dir() {
        let s = chat(&["alice", "localhost", "4000"]);
        assert_eq!(s.download_dir, None);
        let s = chat(&["--download-dir", "/tmp/x", "alice", "localhost", "4000"]);
        assert_eq!(s.download_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn auto_accept_sizes_take_units_and_default_to_16_mib() {
        let s = chat(&["alice", "localhost", "4000"]);
        assert_eq!(s.auto_accept_bytes, 16 << 20);
        assert!(!s.ask_when_piped);
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3X").is_err());
        assert_eq!(
            parse_size("12Q"),
            Err("'12Q' is not a size in bytes: a number, with K, M or G for KiB, MiB or GiB (as in 512K or 16M)".to_owned())
        );
        assert_eq!(
            parse_size("99999999999999999999"),
            Err("'99999999999999999999' is too large a size in bytes".to_owned())
        );
    }

    #[test]
    fn json_reconnect_and_history_flags() {
        let s = chat(&["alice", "localhost:4000"]);
        assert!(!s.json);
        assert_eq!(s.reconnect, None);
        assert_eq!(s.history_file, None);
        assert!(!s.no_history);

        let s = chat(&["--json", "--reconnect", "alice", "localhost:4000"]);
        assert!(s.json);
        assert_eq!(s.reconnect, Some(true));
        let s = chat(&["--no-reconnect", "--no-history", "alice", "localhost:4000"]);
        assert_eq!(s.reconnect, Some(false));
        assert!(s.no_history);
        let s = chat(&["--history-file", "/tmp/h", "alice", "localhost:4000"]);
        assert_eq!(s.history_file, Some(PathBuf::from("/tmp/h")));

        for args in [
            &["--reconnect", "--no-reconnect", "alice", "localhost:4000"][..],
            &[
                "--history-file",
                "/tmp/h",
                "--no-history",
                "alice",
                "localhost:4000",
            ],
        ] {
            let err = refused(args);
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{args:?}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn the_default_history_file_is_imchat_history_in_the_data_folder() {
        if let Some(path) = default_history_file() {
            assert!(path.is_absolute(), "{}", path.display());
            assert!(path.ends_with("imchat/history"), "{}", path.display());
            assert_eq!(
                path.parent().and_then(|p| p.parent()),
                dirs::data_dir().as_deref()
            );
        }
    }

    #[test]
    fn a_password_file_that_cannot_be_read_is_said_in_words() {
        let missing = std::env::temp_dir()
            .join(format!("imchat-no-such-dir-{}", std::process::id()))
            .join("pw.txt");
        let err = password(Some(&missing), "IMCHAT_TEST_UNSET").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot use the password file '{}': no such file or directory",
                missing.display()
            )
        );
    }

    #[test]
    fn short_help_is_a_summary_and_long_help_has_details_and_examples() {
        let short = refused(&["-h"]);
        let long = refused(&["--help"]);
        assert_eq!(short.kind(), ErrorKind::DisplayHelp);
        assert_eq!(long.kind(), ErrorKind::DisplayHelp);
        let (short, long) = (short.to_string(), long.to_string());
        for text in [&short, &long] {
            assert!(text.contains("Usage: imchat-client [OPTIONS] <USERNAME> <HOST[:PORT]> [PORT]"));
            for flag in [
                "--json",
                "--reconnect",
                "--no-reconnect",
                "--history-file",
                "--no-history",
            ] {
                assert!(text.contains(flag), "{flag} missing from\n{text}");
            }
            assert!(!text.contains("--generate-"), "hidden flags shown:\n{text}");
        }
        for detail in [
            "Examples:",
            "imchat-client alice [::1]:4000",
            "RUST_LOG",
            "Exit codes:",
        ] {
            assert!(long.contains(detail), "{detail} missing from --help");
            assert!(!short.contains(detail), "{detail} in -h");
        }
        // Every variable the client reads is in its Environment section.
        let env = long
            .split("Environment:")
            .nth(1)
            .and_then(|rest| rest.split("Exit codes:").next())
            .expect("an Environment section before the exit codes");
        for var in [
            "RUST_LOG",
            "NO_COLOR",
            "TERM",
            "XDG_DATA_HOME",
            "IMCHAT_PASSWORD",
            "IMCHAT_ACCOUNT_PASSWORD",
        ] {
            assert!(env.contains(var), "{var} missing from\n{env}");
        }
        assert!(short.lines().count() * 2 < long.lines().count(), "{short}");
    }

    #[test]
    fn generators_need_no_server_and_stand_alone() {
        assert!(matches!(
            parse_args(["imchat-client", "--generate-man"]),
            Ok(Task::Man)
        ));
        assert!(matches!(
            parse_args(["imchat-client", "--generate-completions", "zsh"]),
            Ok(Task::Completions(Shell::Zsh))
        ));
        let err = refused(&["--generate-man", "alice", "localhost:4000"]);
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let err = refused(&["--generate-completions", "tcsh"]);
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn bash_completions_know_the_flags() {
        let script =
            String::from_utf8(imchat_cli::completions(Cli::command(), Shell::Bash)).expect("UTF-8");
        assert!(script.contains("complete -F _imchat__client "), "{script}");
        for flag in [
            "--download-dir",
            "--auto-accept-bytes",
            "--json",
            "--reconnect",
            "--no-reconnect",
            "--history-file",
            "--no-history",
        ] {
            assert!(script.contains(flag), "{flag} missing");
        }
        for shell in [Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            let script =
                String::from_utf8(imchat_cli::completions(Cli::command(), shell)).expect("UTF-8");
            assert!(script.contains("history-file"), "{shell}");
        }
    }

    #[test]
    fn the_man_page_is_roff_for_imchat_client() {
        let page = String::from_utf8(imchat_cli::man_page(Cli::command())).expect("UTF-8");
        let mut lines = page.lines();
        // Only roff requests (string definitions) come before the header.
        let header = lines
            .by_ref()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .expect("a header");
        assert!(header.starts_with(".TH imchat-client 1 "), "{header}");
        assert!(page.contains("\\-\\-json"), "{page}");
        assert!(page.contains("\\-\\-history\\-file"), "{page}");
        assert!(!page.contains("generate"), "hidden flags in the man page");
    }
}
