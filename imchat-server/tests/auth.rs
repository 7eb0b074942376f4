//! The authentication step, protected names and operators, end to end:
//! the real `imchat-server` (and `imchat-client`) binaries on 127.0.0.1
//! with ports the OS picks, raw protocol peers for the hostile cases. Every
//! wait is bounded; every process is killed by its handle.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{
    ChatKind, ClientMessage, Encode, ErrorCode, MessageId, NoticeCode, OpAction, Recipient,
    RefuseCode, ResumeRequest, RoutedChat, Secret, ServerMessage, Username, PROTOCOL_VERSION,
};

mod common;

use common::peer::Peer;
use common::{client_bin, server_bin, Proc, Server, TempDir, WAIT};

impl Server {
    /// A normal client still gets in and can chat: the server survived.
    fn assert_serving(&self) {
        let pw = self.password.as_deref();
        Raw::join_with(self.addr, "probe_a", pw, None)
            .chat_with(Raw::join_with(self.addr, "probe_b", pw, None));
    }
}

/// A protocol-level client made with imchat-core, for hostile tests:
/// plain TCP, joins and leaves one message each.
type Raw = Peer<TcpStream>;

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Peer::new(stream).splitting_presence()
    }

    /// Connects and sends `Auth` (when there is a password) and `Hello`.
    fn hello(addr: SocketAddr, name: &str, server: Option<&str>, account: Option<&str>) -> Raw {
        let mut r = Raw::connect(addr);
        if server.is_some() || account.is_some() {
            r.send(&ClientMessage::Auth {
                server: server.and_then(Secret::new),
                account: account.and_then(Secret::new),
            });
        }
        r.send(&ClientMessage::Hello {
            resume: None,
            version: PROTOCOL_VERSION,
            username: Username::new(name).unwrap(),
        });
        r
    }

    fn join_with(addr: SocketAddr, name: &str, server: Option<&str>, account: Option<&str>) -> Raw {
        let mut r = Raw::hello(addr, name, server, account);
        r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
        r
    }

    /// What the server answered a handshake before closing: the refusal's
    /// code and text.
    fn refused(mut self) -> (RefuseCode, String) {
        match self.wait_closed().as_slice() {
            [ServerMessage::Refused { code, reason, .. }] => (*code, reason.clone()),
            other => panic!("not one refusal: {other:?}"),
        }
    }

    /// What the server answered a handshake before closing: the refusal's code.
    fn refusal(mut self) -> RefuseCode {
        let msgs = self.wait_closed();
        assert!(
            !msgs
                .iter()
                .any(|m| !matches!(m, ServerMessage::Refused { .. })),
            "only a refusal may come before the handshake passes: {msgs:?}"
        );
        match msgs.as_slice() {
            [ServerMessage::Refused { code, .. }] => *code,
            other => panic!("not one refusal: {other:?}"),
        }
    }
}
impl Server {
    /// A server with a history database (so accounts), the server password
    /// `password` when given, and `extra` flags.
    fn secured(password: Option<&str>, extra: &[&str]) -> Server {
        // Paths relative to the server's folder, its working directory.
        let mut args = extra.to_vec();
        if !extra.contains(&"--history-db") {
            args.extend(["--history-db", "history.db"]);
        }
        if password.is_some() {
            args.extend(["--password-file", "password"]);
        }
        let mut srv = Self::start_with(&args, |shared| {
            if let Some(pw) = password {
                let dir = shared.parent().unwrap();
                std::fs::write(dir.join("password"), format!("{pw}\n")).unwrap();
            }
        });
        srv.password = password.map(str::to_string);
        srv
    }

    fn db(&self) -> PathBuf {
        self.dir.0.join("history.db")
    }

    /// How many sessions the history file holds (once committed).
    fn stored_sessions(&self) -> i64 {
        rusqlite::Connection::open(self.db())
            .and_then(|f| f.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)))
            .unwrap_or(-1)
    }

    /// A piped client of this server, with `env` and `args`; no password
    /// variables but those given, its data folder in the server's.
    fn client(&self, name: &str, env: &[(&str, &str)], args: &[&str]) -> Proc {
        let mut cmd = Command::new(client_bin());
        cmd.args([name, "127.0.0.1", &self.addr.port().to_string()])
            .arg("--no-history")
            .args(args)
            .current_dir(&self.dir.0)
            .env_remove("IMCHAT_PASSWORD")
            .env_remove("IMCHAT_ACCOUNT_PASSWORD")
            .env("XDG_DATA_HOME", self.dir.0.join("data"))
            .envs(env.iter().copied());
        Proc::spawn(cmd)
    }

    /// Registers `name` with `password` as a raw peer, then leaves.
    fn register(&self, name: &str, password: &str) {
        let pw = self.password.as_deref();
        let mut r = Raw::join_with(self.addr, name, pw, None);
        r.send(&ClientMessage::Register {
            password: Secret::new(password).unwrap(),
        });
        r.wait_for(|m| {
            matches!(
                m,
                ServerMessage::Notice {
                    code: NoticeCode::REGISTERED,
                    ..
                }
            )
        });
        r.send(&ClientMessage::Quit {
            reason: String::new(),
        });
        r.wait_closed();
    }
}

fn quit(mut r: Raw) {
    r.send(&ClientMessage::Quit {
        reason: String::new(),
    });
    r.wait_closed();
}

fn notice(r: &mut Raw) -> (NoticeCode, String) {
    match r.wait_for(|m| matches!(m, ServerMessage::Notice { .. })) {
        ServerMessage::Notice { code, text } => (code, text),
        _ => unreachable!(),
    }
}

#[test]
fn the_server_password_right_wrong_missing_and_rate_limited() {
    let srv = Server::secured(
        Some("open sesame"),
        &["--auth-attempts", "3", "--auth-window-secs", "2"],
    );
    let missing = Raw::hello(srv.addr, "alice", None, None).refusal();
    assert_eq!(missing, RefuseCode::PASSWORD_REQUIRED);
    for _ in 0..3 {
        let wrong = Raw::hello(srv.addr, "alice", Some("open sesam"), None).refusal();
        assert_eq!(wrong, RefuseCode::WRONG_PASSWORD);
    }
    // Over the limit: even the right password waits for the window.
    let limited = Raw::hello(srv.addr, "alice", Some("open sesame"), None).refusal();
    assert_eq!(limited, RefuseCode::TOO_MANY_ATTEMPTS);
    thread::sleep(Duration::from_millis(2100));
    quit(Raw::join_with(srv.addr, "alice", Some("open sesame"), None));
    srv.assert_serving();
}

/// A wrong password is a refused login, said as such on the console and
/// in the log (never "broke the protocol"), and the password is not in it.
#[test]
fn a_wrong_password_is_logged_as_a_refused_login_without_the_password() {
    let mut srv = Server::secured(
        Some("open sesame"),
        &["--auth-attempts", "2", "--auth-window-secs", "60"],
    );
    srv.register("alice", "wonderland");
    let wrong = Raw::hello(srv.addr, "bob", Some("open sesam"), None).refusal();
    assert_eq!(wrong, RefuseCode::WRONG_PASSWORD);
    let line = srv.proc.expect("refused the login of 'bob'");
    assert!(line.contains("wrong server password"), "{line}");
    srv.wait_logged("refused the login of 'bob' from");
    let wrong = Raw::hello(srv.addr, "alice", Some("open sesame"), Some("looking")).refusal();
    assert_eq!(wrong, RefuseCode::WRONG_ACCOUNT_PASSWORD);
    let line = srv.proc.expect("refused the login of 'alice'");
    assert!(line.contains("wrong password for the name"), "{line}");
    // Two failures from this address: the next try waits out the window.
    let limited = Raw::hello(srv.addr, "carol", Some("open sesame"), None).refusal();
    assert_eq!(limited, RefuseCode::TOO_MANY_ATTEMPTS);
    let line = srv.proc.expect("refused the login of 'carol'");
    assert!(line.contains("too many failed password attempts"), "{line}");
    srv.wait_logged("refused the login of 'carol' from");
    while let Ok(l) = srv.proc.lines.try_recv() {
        srv.proc.seen.push(l);
    }
    let log = std::fs::read_to_string(srv.dir.0.join("server.log")).unwrap();
    for text in srv.proc.seen.iter().map(String::as_str).chain(log.lines()) {
        assert!(!text.contains("broke the protocol"), "{text}");
        assert!(
            !text.contains("sesam") && !text.contains("looking"),
            "{text}"
        );
    }
}

#[test]
fn the_client_takes_the_password_from_a_file_or_the_environment_and_says_when_it_has_none() {
    let srv = Server::secured(Some("open sesame"), &[]);
    let file = srv.dir.0.join("client-password");
    std::fs::write(&file, "open sesame\n").unwrap();
    let file = file.to_string_lossy().into_owned();
    let mut by_file = srv.client("filed", &[], &["--password-file", &file]);
    by_file.expect("connected");
    by_file.send("/quit");
    assert_eq!(by_file.wait_exit(), Some(0));
    let mut by_env = srv.client("envied", &[("IMCHAT_PASSWORD", "open sesame")], &[]);
    by_env.expect("connected");
    by_env.send("/quit");
    assert_eq!(by_env.wait_exit(), Some(0));
    // Piped, without a password: one clear line, exit 1.
    let mut none = srv.client("bare", &[], &[]);
    let line = none.expect("imchat-client:");
    assert_eq!(
        line,
        "stderr: imchat-client: this server needs a password: give it with --password-file or IMCHAT_PASSWORD"
    );
    assert_eq!(none.wait_exit(), Some(1));
    let mut wrong = srv.client("wrong", &[("IMCHAT_PASSWORD", "nope")], &[]);
    wrong.expect("imchat-client: refused: wrong server password");
    assert_eq!(wrong.wait_exit(), Some(1));
    srv.assert_serving();
}

#[test]
fn the_server_refuses_to_start_on_an_empty_or_unreadable_password_file() {
    let dir = TempDir::new("nopw");
    let empty = dir.0.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for (file, words) in [
        (empty, "is empty"),
        (dir.0.join("missing"), "cannot read the password file"),
    ] {
        let mut cmd = Command::new(server_bin());
        cmd.args(["0", "--bind", "127.0.0.1"])
            .arg("--shared-dir")
            .arg(&dir.0)
            .arg("--password-file")
            .arg(&file)
            .arg("--log-file")
            .arg(dir.0.join("server.log"))
            .current_dir(&dir.0);
        let mut p = Proc::spawn(cmd);
        let line = p.expect("imchat-server:");
        assert!(line.contains(words), "{line}");
        assert_eq!(p.wait_exit(), Some(1));
    }
}

#[test]
fn a_registered_name_is_taken_only_with_its_password_until_unregistered() {
    let srv = Server::secured(None, &[]);
    // Registered from the piped client, the password from the environment.
    let mut alice = srv.client("alice", &[("IMCHAT_ACCOUNT_PASSWORD", "wonderland")], &[]);
    alice.expect("connected");
    alice.send("/register");
    alice.expect("'alice' is registered");
    alice.send("/quit");
    assert_eq!(alice.wait_exit(), Some(0));
    let plain = Raw::hello(srv.addr, "alice", None, None).refusal();
    assert_eq!(plain, RefuseCode::NAME_PROTECTED);
    let look_alike = Raw::hello(srv.addr, "ALICE", None, None).refusal();
    assert_eq!(look_alike, RefuseCode::NAME_PROTECTED);
    let wrong = Raw::hello(srv.addr, "alice", None, Some("looking glass")).refusal();
    assert_eq!(wrong, RefuseCode::WRONG_ACCOUNT_PASSWORD);
    // A piped client without the password says how to give it.
    let mut bare = srv.client("alice", &[], &[]);
    bare.expect("give it with --account-password-file or IMCHAT_ACCOUNT_PASSWORD");
    assert_eq!(bare.wait_exit(), Some(1));
    // With it: in, and it may unregister.
    let mut r = Raw::join_with(srv.addr, "alice", None, Some("wonderland"));
    r.send(&ClientMessage::Unregister);
    assert_eq!(notice(&mut r).0, NoticeCode::UNREGISTERED);
    r.send(&ClientMessage::Unregister);
    assert_eq!(notice(&mut r).0, NoticeCode::NOT_REGISTERED);
    quit(r);
    quit(Raw::join_with(srv.addr, "alice", None, None));
    // The password is never in the log.
    let log = std::fs::read_to_string(srv.dir.0.join("server.log")).unwrap();
    assert!(!log.contains("wonderland") && !log.contains("looking glass"));
    srv.assert_serving();
}

/// A name that reads as a registered one (a capital I for its l, ss for
/// its ß) is taken only with that name's password, and cannot be
/// registered apart: it could otherwise be held, online or waiting for a
/// resume, and keep the owner out.
#[test]
fn a_name_that_reads_as_a_registered_one_needs_its_password() {
    let srv = Server::secured(None, &[]);
    for (name, password) in [("alice", "wonderland"), ("straße", "autobahn")] {
        let mut r = Raw::join_with(srv.addr, name, None, None);
        r.send(&ClientMessage::Register {
            password: Secret::new(password).unwrap(),
        });
        assert_eq!(notice(&mut r).0, NoticeCode::REGISTERED, "{name}");
        quit(r);
    }
    for (fake, password) in [("aIice", "wonderland"), ("STRASSE", "autobahn")] {
        let (code, reason) = Raw::hello(srv.addr, fake, None, None).refused();
        assert_eq!(code, RefuseCode::NAME_PROTECTED, "{fake}: {reason}");
        assert_eq!(
            reason,
            format!("the username '{fake}' looks like a registered name; that name's password is needed")
        );
        let wrong = Raw::hello(srv.addr, fake, None, Some("guess")).refusal();
        assert_eq!(wrong, RefuseCode::WRONG_ACCOUNT_PASSWORD, "{fake}");
        // With the registered name's password: in, and not registrable
        // apart.
        let mut r = Raw::join_with(srv.addr, fake, None, Some(password));
        r.send(&ClientMessage::Register {
            password: Secret::new("mine").unwrap(),
        });
        let (code, text) = notice(&mut r);
        assert_eq!(code, NoticeCode::ALREADY_REGISTERED, "{fake}: {text}");
        assert!(text.contains("looks like a registered name"), "{text}");
        quit(r);
    }
    // A name of its own is open still.
    quit(Raw::join_with(srv.addr, "aiice", None, None));
    srv.assert_serving();
}

#[test]
fn without_a_database_register_is_refused_with_the_reason() {
    let srv = Server::start(&[]);
    let mut r = Raw::join_with(srv.addr, "alice", None, None);
    r.send(&ClientMessage::Register {
        password: Secret::new("pw").unwrap(),
    });
    let (code, text) = notice(&mut r);
    assert_eq!(code, NoticeCode::NO_ACCOUNTS);
    assert!(text.contains("without a database"), "{text}");
    quit(r);
}

#[test]
fn a_resume_cannot_bypass_a_protected_name() {
    let srv = Server::secured(None, &["--grace-secs", "30"]);
    srv.register("alice", "wonderland");
    let mut r = Raw::hello(srv.addr, "alice", None, Some("wonderland"));
    let (token, epoch) = match r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. })) {
        ServerMessage::Welcome { token, epoch, .. } => (token, epoch),
        _ => unreachable!(),
    };
    // The connection breaks: the session waits for a resume.
    let _ = r.stream.shutdown(std::net::Shutdown::Both);
    drop(r);
    let resume = |account: Option<&str>| {
        let mut r = Raw::connect(srv.addr);
        if let Some(pw) = account {
            r.send(&ClientMessage::Auth {
                server: None,
                account: Secret::new(pw),
            });
        }
        r.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: Username::new("alice").unwrap(),
            resume: Some(ResumeRequest {
                token,
                last_seen: MessageId(0),
                epoch,
            }),
        });
        r
    };
    // The right token without the password: refused, nothing seen.
    assert_eq!(resume(None).refusal(), RefuseCode::NAME_PROTECTED);
    assert_eq!(
        resume(Some("cheshire")).refusal(),
        RefuseCode::WRONG_ACCOUNT_PASSWORD
    );
    // With it, the session comes back.
    let mut back = resume(Some("wonderland"));
    let welcome = back.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
    assert!(
        matches!(
            welcome,
            ServerMessage::Welcome {
                resumed: Some(_),
                ..
            }
        ),
        "{welcome:?}"
    );
    quit(back);
    srv.assert_serving();
}

#[test]
fn reset_name_removes_a_registration_offline_and_beside_a_running_server() {
    let srv = Server::secured(None, &[]);
    srv.register("alice", "wonderland");
    assert_eq!(
        Raw::hello(srv.addr, "alice", None, None).refusal(),
        RefuseCode::NAME_PROTECTED
    );
    // Her session is dropped from the file once her quit is committed.
    wait_until("alice's session dropped", || srv.stored_sessions() == 0);
    let run = |name: &str| {
        let mut cmd = Command::new(server_bin());
        cmd.arg("--reset-name")
            .arg(name)
            .arg("--history-db")
            .arg(srv.db());
        let mut p = Proc::spawn(cmd);
        let line = p.expect("");
        (line, p.wait_exit())
    };
    let (line, code) = run("ALICE");
    assert_eq!(code, Some(0));
    assert!(
        line.contains("the registration of 'ALICE' is removed: the name is free"),
        "{line}"
    );
    let (line, code) = run("alice");
    assert_eq!(code, Some(0));
    assert!(line.contains("was not registered"), "{line}");
    quit(Raw::join_with(srv.addr, "alice", None, None));
    // A file that is not an imchat history is refused, not created.
    let mut cmd = Command::new(server_bin());
    cmd.arg("--reset-name")
        .arg("alice")
        .arg("--history-db")
        .arg(srv.dir.0.join("nothing-here.db"));
    let mut p = Proc::spawn(cmd);
    p.expect("imchat-server:");
    assert_eq!(p.wait_exit(), Some(1));
    assert!(!srv.dir.0.join("nothing-here.db").exists());
    srv.assert_serving();
}

/// `--reset-name` of a user who is connected removes the registration but
/// says that the user keeps the name until it leaves (it is not
/// disconnected); once it has left, the name is free.
#[test]
fn reset_name_of_a_connected_user_says_it_keeps_the_name_until_it_leaves() {
    let srv = Server::secured(None, &[]);
    srv.register("alice", "wonderland");
    let mut alice = Raw::join_with(srv.addr, "alice", None, Some("wonderland"));
    // Her session is in the file once the join is committed.
    wait_until("alice's session stored", || srv.stored_sessions() == 1);
    let mut cmd = Command::new(server_bin());
    cmd.arg("--reset-name")
        .arg("Alice")
        .arg("--history-db")
        .arg(srv.db());
    let mut p = Proc::spawn(cmd);
    let line = p.expect("");
    assert_eq!(p.wait_exit(), Some(0));
    assert!(
        line.contains("the registration of 'Alice' is removed, but 'Alice' is connected"),
        "{line}"
    );
    assert!(line.contains("until it leaves"), "{line}");
    assert!(!line.contains("the name is free"), "{line}");
    // True: she is still in, and her name is still hers.
    assert_eq!(
        Raw::hello(srv.addr, "alice", None, None).refusal(),
        RefuseCode::NAME_TAKEN
    );
    alice.send(&ClientMessage::Who);
    alice.wait_for(|m| matches!(m, ServerMessage::Who { .. }));
    quit(alice);
    // Gone, and no longer protected: anyone may take the name.
    quit(Raw::join_with(srv.addr, "alice", None, None));
}

/// A capital I passes for l in most fonts: a name written with one is
/// refused while the name it imitates is online (as a 1 for l was
/// already), and when that name is banned; `mail` and `mall` are still
/// two users.
#[test]
fn a_capital_i_for_l_is_refused_beside_the_name_online_or_banned() {
    let mut srv = Server::secured(None, &[]);
    let alice = Raw::join_with(srv.addr, "alice", None, None);
    let t120 = Raw::join_with(srv.addr, "T120", None, None);
    for (fake, holder) in [("aIice", "alice"), ("a1ice", "alice"), ("TI20", "T120")] {
        let (code, reason) = Raw::hello(srv.addr, fake, None, None).refused();
        assert_eq!(code, RefuseCode::NAME_TAKEN, "{fake}: {reason}");
        assert_eq!(
            reason,
            format!("the username '{fake}' is already taken (as '{holder}')")
        );
    }
    let mail = Raw::join_with(srv.addr, "mail", None, None);
    let mall = Raw::join_with(srv.addr, "mall", None, None);
    srv.proc.send("ban mallory");
    srv.proc.expect("banned mallory (0 disconnected)");
    for name in ["Mallory", "MaIlory", "MAILORY"] {
        let (code, reason) = Raw::hello(srv.addr, name, None, None).refused();
        assert_eq!(code, RefuseCode::BANNED, "{name}: {reason}");
    }
    for r in [alice, t120, mail, mall] {
        quit(r);
    }
}

/// Waits for `r` to be removed by an operator: the `KICKED` error's text.
fn kicked(r: &mut Raw) -> String {
    let text = match r.wait_for(|m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::KICKED,
                ..
            }
        )
    }) {
        ServerMessage::Error { text, .. } => text,
        _ => unreachable!(),
    };
    r.wait_closed();
    text
}

#[test]
fn the_console_kicks_and_bans_by_name_and_by_address_and_logs_it() {
    let mut srv = Server::secured(None, &[]);
    let mut watcher = Raw::join_with(srv.addr, "watcher", None, None);
    let mut bob = Raw::join_with(srv.addr, "bob", None, None);
    // Who is there, and from where, first.
    srv.proc.send("who");
    srv.proc
        .expect("2 online: bob (127.0.0.1), watcher (127.0.0.1)");
    srv.proc.send("/kick bob too loud");
    assert_eq!(kicked(&mut bob), "kicked by console: too loud");
    let left =
        watcher.wait_for(|m| matches!(m, ServerMessage::Left(d) if d.user.as_str() == "bob"));
    assert!(matches!(left, ServerMessage::Left(d) if d.text == "kicked by console: too loud"));
    // The console answers once; the log keeps who did what.
    srv.proc.expect("kicked bob");
    srv.wait_logged("operator console: kick bob (too loud): kicked bob");
    // The console's line for the leave says why, as the others saw it.
    srv.proc.expect("bob left (kicked by console: too loud)");
    // bob may come back after a kick; a ban by name keeps him out.
    let mut bob = Raw::join_with(srv.addr, "bob", None, None);
    srv.proc.send("ban BOB spam");
    kicked(&mut bob);
    srv.proc.expect("banned BOB (1 disconnected)");
    assert_eq!(
        Raw::hello(srv.addr, "bob", None, None).refusal(),
        RefuseCode::BANNED
    );
    srv.proc.send("bans");
    srv.proc.expect("bans: BOB (by console: spam)");
    srv.proc.send("unban bob");
    srv.proc.expect("unbanned bob");
    quit(Raw::join_with(srv.addr, "bob", None, None));
    // By address: everyone from 127.0.0.1 goes, and is refused at connect.
    srv.proc.send("ban 127.0.0.1 testing");
    kicked(&mut watcher);
    let refused = Raw::connect(srv.addr).refusal();
    assert_eq!(refused, RefuseCode::BANNED);
    srv.proc.send("unban 127.0.0.1");
    srv.proc.expect("unbanned 127.0.0.1");
    srv.proc.send("frobnicate");
    srv.proc.expect("unknown command 'frobnicate'");
    srv.proc.send("help");
    srv.proc.expect("commands: who, kick NAME [reason]");
    srv.wait_logged("operator console: ban 127.0.0.1 (testing)");
    srv.wait_logged("operator console: bans: bans: BOB");
    // Logged, not printed a second time beside the console's answer.
    while let Ok(l) = srv.proc.lines.try_recv() {
        srv.proc.seen.push(l);
    }
    let doubled: Vec<&String> = srv
        .proc
        .seen
        .iter()
        .filter(|l| l.contains("operator console:"))
        .collect();
    assert!(doubled.is_empty(), "{doubled:?}");
    srv.assert_serving();
}

/// A console line that is not UTF-8 (typed on a Latin-1 terminal) is
/// answered like any other, and the console goes on taking commands.
#[test]
fn a_console_line_that_is_not_utf8_does_not_end_the_console() {
    let mut srv = Server::secured(None, &[]);
    let mut bob = Raw::join_with(srv.addr, "bob", None, None);
    srv.proc
        .stdin()
        .write_all(b"kick carol caf\xe9 closed\n")
        .unwrap();
    srv.proc.stdin().flush().unwrap();
    srv.proc.expect("carol");
    srv.proc.send("kick bob too loud");
    assert_eq!(kicked(&mut bob), "kicked by console: too loud");
    srv.proc.expect("kicked bob");
    srv.assert_serving();
}

/// What the console prints is inert: an escape sequence typed or pasted
/// into it came back raw in "'…' is not a username" (a ban's reason is
/// shown inert in `bans` too).
#[test]
fn the_console_shows_escape_sequences_inert() {
    let mut srv = Server::secured(None, &[]);
    srv.proc.send("kick \x1b[31mred");
    let line = srv.proc.expect("is not a username");
    assert_eq!(line, "'^[[31mred' is not a username");
    srv.proc.send("ban carol \x1b[2Jwiped");
    srv.proc.expect("banned carol");
    srv.proc.send("bans");
    let bans = srv.proc.expect("bans:");
    assert_eq!(bans, "bans: carol (by console: ^[[2Jwiped)");
    srv.assert_serving();
}

/// Waits (`WAIT` at most) until `done` holds; panics naming `what`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// Waits until the server's log holds `wanted` (the log is written in
    /// batches).
    fn wait_logged(&self, wanted: &str) {
        let log = self.dir.0.join("server.log");
        wait_until(&format!("{wanted:?} logged"), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(wanted)
        });
    }
}

/// A user kicked while away (its client killed, its session waiting for a
/// resume) whose client is started again is told why its session was not
/// resumed: the kick, as the others were shown it, not "session expired".
#[test]
fn a_user_kicked_while_away_is_told_of_the_kick_when_its_client_comes_back() {
    let mut srv = Server::secured(None, &[]);
    let bob = srv.client("bob", &[], &[]);
    let saved = srv
        .dir
        .0
        .join("data/imchat/sessions")
        .join(format!("bob@127.0.0.1_{}", srv.addr.port()));
    wait_until("bob's session saved", || saved.exists());
    drop(bob);
    // The server noticed (its log says so; its console does not).
    srv.wait_logged("bob lost its connection");
    srv.proc.send("kick bob spam");
    srv.proc.expect("kicked bob (it was away)");
    let mut bob = srv.client("bob", &[], &[]);
    let line = bob.expect("session not resumed");
    assert_eq!(line, "*** session not resumed: kicked by console: spam");
    bob.expect("connected");
    srv.assert_serving();
}

#[test]
fn bans_are_kept_in_the_database_across_a_restart() {
    let keep = TempDir::new("bans");
    let db = keep.0.join("history.db").to_string_lossy().into_owned();
    {
        let mut srv = Server::secured(None, &["--history-db", &db]);
        for (line, answer) in [
            ("ban mallory spam", "banned mallory"),
            ("ban 10.9.8.7", "banned 10.9.8.7"),
            ("ban eve", "banned eve"),
            ("unban eve", "unbanned eve"),
        ] {
            srv.proc.send(line);
            srv.proc.expect(answer);
        }
        // Dropped: killed by its handle, no clean stop.
    }
    let mut srv = Server::secured(None, &["--history-db", &db]);
    assert_eq!(
        Raw::hello(srv.addr, "mallory", None, None).refusal(),
        RefuseCode::BANNED
    );
    srv.proc.send("bans");
    srv.proc
        .expect("bans: mallory (by console: spam); 10.9.8.7 (by console)");
    quit(Raw::join_with(srv.addr, "eve", None, None));
    srv.assert_serving();
}

#[test]
fn an_operator_kicks_and_bans_only_once_joined_with_its_password() {
    let mut srv = Server::secured(None, &["--operator", "root"]);
    srv.proc
        .expect("warning: operator 'root' is not registered: nobody has its rights until it is (imchat-server --register-name root --history-db PATH)");
    let mut bob = Raw::join_with(srv.addr, "bob", None, None);
    // Not registered yet: the name alone gives no rights.
    let mut root = Raw::join_with(srv.addr, "root", None, None);
    root.send(&ClientMessage::Operate {
        action: OpAction::Kick,
        target: "bob".into(),
        reason: String::new(),
    });
    assert_eq!(notice(&mut root).0, NoticeCode::NOT_PERMITTED);
    // Logged as the refused request it is, not as a broken protocol.
    srv.wait_logged("is not an operator: refused its request 'kick bob'");
    let log = std::fs::read_to_string(srv.dir.0.join("server.log")).unwrap();
    assert!(!log.contains("broke the protocol"), "{log}");
    // Nor can it be registered from a client: whoever did it first would
    // be the operator.
    root.send(&ClientMessage::Register {
        password: Secret::new("toor").unwrap(),
    });
    let (code, text) = notice(&mut root);
    assert_eq!(code, NoticeCode::NOT_PERMITTED);
    assert!(
        text.contains("imchat-server --register-name root"),
        "{text}"
    );
    root.send(&ClientMessage::Operate {
        action: OpAction::Kick,
        target: "bob".into(),
        reason: String::new(),
    });
    assert_eq!(notice(&mut root).0, NoticeCode::NOT_PERMITTED);
    quit(root);
    // Registered on the server's machine, beside the running server, the
    // password on standard input.
    let mut cmd = Command::new(server_bin());
    cmd.args(["--register-name", "root", "--history-db"])
        .arg(srv.db())
        .env_remove("IMCHAT_ACCOUNT_PASSWORD");
    let mut p = Proc::spawn(cmd);
    p.send("toor");
    let line = p.expect("root");
    assert_eq!(p.wait_exit(), Some(0), "{line}");
    assert!(line.contains("'root' is registered"), "{line}");
    // Once is enough: a second time says how to change it.
    let mut cmd = Command::new(server_bin());
    cmd.args(["--register-name", "root", "--history-db"])
        .arg(srv.db())
        .env("IMCHAT_ACCOUNT_PASSWORD", "other");
    let mut p = Proc::spawn(cmd);
    let line = p.expect("root");
    assert_eq!(p.wait_exit(), Some(1), "{line}");
    assert!(line.contains("--reset-name root first"), "{line}");
    // The operator's client, piped, with its password from a file.
    let file = srv.dir.0.join("root-password");
    std::fs::write(
        &file, "toor
",
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let mut op = srv.client("root", &[], &["--account-password-file", &file]);
    op.expect("connected");
    // Its owner cannot unregister it from a client either.
    op.send("/unregister");
    op.expect("it is unregistered on the server's machine (imchat-server --reset-name root)");
    op.send("/kick bob enough");
    op.expect("kicked bob");
    assert_eq!(kicked(&mut bob), "kicked by root: enough");
    op.send("/ban carol");
    op.expect("banned carol (0 disconnected)");
    assert_eq!(
        Raw::hello(srv.addr, "carol", None, None).refusal(),
        RefuseCode::BANNED
    );
    op.send("/bans");
    op.expect("bans: carol (by root)");
    op.send("/kick nobody");
    op.expect("no user 'nobody' online");
    op.send("/quit");
    // The refused /unregister and /kick were failed requests: exit 3.
    assert_eq!(op.wait_exit(), Some(3));
    // A kicked piped client exits with the reason and does not come back.
    let mut dave = srv.client("dave", &[], &["--reconnect"]);
    dave.expect("connected");
    let mut op = Raw::join_with(srv.addr, "root", None, Some("toor"));
    op.send(&ClientMessage::Operate {
        action: OpAction::Kick,
        target: "dave".into(),
        reason: "bye".into(),
    });
    assert_eq!(notice(&mut op).0, NoticeCode::DONE);
    dave.expect("imchat-client: removed from the server: kicked by root: bye");
    assert_eq!(dave.wait_exit(), Some(1));
    quit(op);
    srv.assert_serving();
}

#[test]
fn hostile_bytes_at_every_stage_of_the_authentication_are_survived() {
    let srv = Server::secured(Some("pw"), &["--handshake-timeout-secs", "2"]);
    srv.register("alice", "wonderland");
    let auth = ClientMessage::Auth {
        server: Secret::new("pw"),
        account: Secret::new("wonderland"),
    }
    .to_frame();
    let hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        username: Username::new("alice").unwrap(),
        resume: None,
    }
    .to_frame();
    // A framing bomb: a huge length header before the Auth, after it, and
    // right after the Hello (while the account is checked, or once in).
    for (prefix, may_join) in [
        (Vec::new(), false),
        (auth.clone(), false),
        ([auth.clone(), hello.clone()].concat(), true),
    ] {
        for header in [[0xff, 0xff, 0xff, 0xff], [0, 0x10, 0, 1]] {
            let mut r = Raw::connect(srv.addr);
            let _ = r.write(&[prefix.clone(), header.to_vec()].concat());
            let msgs = r.wait_closed();
            let joined = msgs
                .iter()
                .any(|m| matches!(m, ServerMessage::Welcome { .. }));
            assert!(may_join || !joined, "{msgs:?}");
            assert!(
                msgs.iter().any(|m| matches!(
                    m,
                    ServerMessage::Refused { .. } | ServerMessage::Error { .. }
                )),
                "{msgs:?}"
            );
        }
    }
    // An Auth whose secret is not UTF-8, an Auth of a wrong length, two Auths,
    // and a message between Auth and Hello: refused.
    for bytes in [
        vec![0, 0, 0, 5, 0x0b, 2, 0xff, 0xfe, 0],
        vec![0, 0, 0, 9, 0x0b, 2, b'p', b'w', 0],
        [auth.clone(), auth.clone()].concat(),
        [auth.clone(), ClientMessage::Who.to_frame()].concat(),
    ] {
        let mut r = Raw::connect(srv.addr);
        let _ = r.write(&bytes);
        let msgs = r.wait_closed();
        assert!(
            msgs.iter()
                .all(|m| matches!(m, ServerMessage::Refused { .. })),
            "{msgs:?}"
        );
    }
    // A megabyte of junk after the Auth.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut r = Raw::connect(srv.addr);
    let _ = r.write(&[auth.clone(), junk].concat());
    r.wait_closed();
    // Slowloris: the Auth one byte at a time, never finished: dropped at
    // the handshake deadline.
    let started = Instant::now();
    let mut slow = Raw::connect(srv.addr);
    slow.stream.set_nodelay(true).unwrap();
    for b in &auth[..auth.len() - 1] {
        if slow.write(&[*b]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let msgs = slow.wait_closed();
    assert!(
        msgs.iter().any(|m| matches!(
            m,
            ServerMessage::Refused {
                code: RefuseCode::HANDSHAKE_TIMEOUT,
                ..
            }
        )),
        "{msgs:?}"
    );
    assert!(started.elapsed() < WAIT);
    // Sent whole but byte by byte in time: it works.
    let mut r = Raw::connect(srv.addr);
    r.stream.set_nodelay(true).unwrap();
    for b in [auth, hello].concat() {
        r.write(&[b]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
    quit(r);
    srv.assert_serving();
}

#[test]
fn a_long_first_message_right_after_an_account_check_is_taken() {
    // The join happens after the account check: the frame limit must rise
    // to the full one before the client's next frame is read.
    let srv = Server::secured(None, &[]);
    srv.register("alice", "wonderland");
    let mut watcher = Raw::join_with(srv.addr, "watcher", None, None);
    let long = "x".repeat(8 * 1024);
    let mut r = Raw::join_with(srv.addr, "alice", None, Some("wonderland"));
    r.send(&ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: long.clone(),
    });
    watcher
        .wait_for(|m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if *text == long));
    quit(r);
    quit(watcher);
}

#[test]
fn chat_flows_as_before_behind_a_password_with_accounts_on() {
    // With a password and accounts on, an ordinary exchange still works.
    let srv = Server::secured(Some("pw"), &[]);
    let mut a = Raw::join_with(srv.addr, "ann", Some("pw"), None);
    let mut b = Raw::join_with(srv.addr, "ben", Some("pw"), None);
    a.wait_for(|m| matches!(m, ServerMessage::Joined { user, .. } if user.as_str() == "ben"));
    b.send(&ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: "hi ann".into(),
    });
    a.wait_for(|m| matches!(m, ServerMessage::Chat(RoutedChat { text, .. }) if text == "hi ann"));
    quit(a);
    quit(b);
}

/// `--register-name` is the first step of setting up a server with
/// operators: on a history file that does not exist yet, it creates it,
/// as the server would (it used to fail: "unable to open database file");
/// `--reset-name` on one fails saying there is nothing to reset (the path
/// may be mistyped), and creates nothing.
#[test]
fn register_name_creates_the_history_file_and_reset_name_leaves_none() {
    let dir = TempDir::new("fresh-db");
    let db = dir.0.join("fresh.db");
    let task = |args: &[&str], said: &str| {
        let mut cmd = Command::new(server_bin());
        cmd.args(args)
            .arg("--history-db")
            .arg(&db)
            .env("IMCHAT_ACCOUNT_PASSWORD", "OpPass-99");
        let mut p = Proc::spawn(cmd);
        let line = p.expect(said);
        (p.wait_exit(), line)
    };
    let (code, line) = task(&["--reset-name", "boss"], "nothing to reset");
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("nothing to reset"), "{line}");
    assert!(!db.exists(), "--reset-name created {}", db.display());
    let (code, line) = task(&["--register-name", "boss"], "boss");
    assert_eq!(code, Some(0), "{line}");
    assert!(line.contains("'boss' is registered"), "{line}");
    // Kept in the file created: removed by the next reset.
    let (code, line) = task(&["--reset-name", "boss"], "boss");
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.contains("the registration of 'boss' is removed"),
        "{line}"
    );
}
