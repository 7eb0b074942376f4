//! The echobot and pingbot examples against the real server: a second
//! client, written on the blocking driver, sends them private and public
//! messages and checks the answers. The server runs on 127.0.0.1 with a port the OS
//! picks; every wait has a deadline and the server is stopped by its pid.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::{Client, ConnectOptions};
use imchat_core::{
    ClientEvent, ClientMessage, Decoder, Encode, Hub, Limits, Recipient, RoutedChat, Username,
    DEFAULT_MAX_FRAME,
};

#[allow(dead_code)] // its `main` is for `cargo run --example`
#[path = "../../imchat-core/examples/echobot.rs"]
mod echobot;

#[allow(dead_code)]
#[path = "../../imchat-core/examples/pingbot.rs"]
mod pingbot;

const WAIT: Duration = Duration::from_secs(15);

/// The server process, killed by its handle if the test ends early.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on port 0 in a fresh directory and returns it with
/// the address it printed.
fn start_server(dir: &std::path::Path) -> (Server, String) {
    start_server_with(dir, Stdio::null())
}

/// [`start_server`] with this standard input (its operator console).
fn start_server_with(dir: &std::path::Path, stdin: Stdio) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(["0", "--bind", "127.0.0.1", "--shared-dir"])
        .arg(dir)
        .arg("--log-file")
        .arg(dir.join("server.log"))
        .current_dir(dir)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let out = BufReader::new(child.stdout.take().unwrap());
    let server = Server(child);
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line: String = rx.recv_timeout(left).expect("no listening line");
        if let Some((_, addr)) = line.split_once("listening on ") {
            return (server, addr.trim().to_string());
        }
    }
}

/// The first event `pick` accepts, within [`WAIT`].
fn wait_for<T>(c: &mut Client, mut pick: impl FnMut(ClientEvent) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(found) = c
            .next_event(Duration::from_millis(100))
            .unwrap()
            .and_then(&mut pick)
        {
            return found;
        }
    }
    panic!("no such event within {WAIT:?}");
}

/// The next chat message from `bot`: (private, text).
fn reply_from(c: &mut Client, bot: &Username) -> (bool, String) {
    wait_for(c, |e| match e {
        ClientEvent::Chat(RoutedChat {
            from,
            private,
            text,
            ..
        }) if from == *bot => Some((private, text)),
        _ => None,
    })
}

/// `c` says `text` to everyone, and it is in the history (the server
/// answered a later `Who`) before a bot is started.
fn said_before_the_bot(c: &mut Client, text: &str) {
    c.send_chat(Recipient::Everyone, text).unwrap();
    c.who().unwrap();
    wait_for(c, |e| matches!(e, ClientEvent::Who { .. }).then_some(()));
}

/// A graceful stop of the server (SIGTERM by its pid): the bot sees the
/// shutdown and returns without an error, and the server exits.
fn stop_and_see_the_bot_end(server: &mut Server, bot: thread::JoinHandle<Result<(), String>>) {
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(bot.join().unwrap(), Ok(()));
    let deadline = Instant::now() + WAIT;
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn echobot_reverses_private_messages_and_answers_who() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server(dir.path());
    // Asked before the bot came: in the history it is shown, not for it.
    let mut early = Client::connect(addr.as_str(), "early", ConnectOptions::default()).unwrap();
    said_before_the_bot(&mut early, "!who");
    let bot_addr = addr.clone();
    let bot = thread::spawn(move || {
        echobot::run(&bot_addr, "echobot", Some(Instant::now() + WAIT)).map_err(|e| e.to_string())
    });

    let mut me = Client::connect(addr.as_str(), "tester", ConnectOptions::default()).unwrap();
    let echobot = Username::new("echobot").unwrap();
    // The bot may join before or after us: ask until it is online.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the bot never came online");
        me.who().unwrap();
        let users = wait_for(&mut me, |e| match e {
            ClientEvent::Who { users } => Some(users),
            _ => None,
        });
        if users.iter().any(|u| u.name == echobot) {
            break;
        }
    }

    me.send_private(&echobot, "hello, bot").unwrap();
    assert_eq!(reply_from(&mut me, &echobot), (true, "tob ,olleh".into()));
    // The bot answers in order: its answer to `early` comes before this
    // one, and it must be this one.
    early.send_private(&echobot, "ping").unwrap();
    assert_eq!(reply_from(&mut early, &echobot), (true, "gnip".into()));

    me.send_chat(Recipient::Everyone, "!who").unwrap();
    assert_eq!(
        reply_from(&mut me, &echobot),
        (true, "online: early, echobot, tester".into())
    );

    // A graceful stop: the bot sees the server's shutdown and returns.
    stop_and_see_the_bot_end(&mut server, bot);
}

/// The bot that drives the sans-IO session over its own socket answers a
/// `!ping` in the room and a private one, each where it was asked, and
/// ends when the server shuts down.
#[test]
fn pingbot_answers_where_it_was_asked_and_ends_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server(dir.path());
    let mut me = Client::connect(addr.as_str(), "tester", ConnectOptions::default()).unwrap();
    // Before the bot joins: replayed to it as history, not for it to answer.
    said_before_the_bot(&mut me, "!ping");
    let bot_addr = addr.clone();
    let bot = thread::spawn(move || {
        pingbot::run(&bot_addr, "pingbot", Some(Instant::now() + WAIT)).map_err(|e| e.to_string())
    });
    let pingbot = Username::new("pingbot").unwrap();
    wait_for(&mut me, |e| match e {
        ClientEvent::Joined { user, .. } if user == pingbot => Some(()),
        _ => None,
    });
    me.send_private(&pingbot, "!ping").unwrap();
    assert_eq!(
        reply_from(&mut me, &pingbot),
        (true, "pong".into()),
        "the first answer is to this one, not to the history"
    );
    me.send_chat(Recipient::Everyone, "!ping").unwrap();
    assert_eq!(reply_from(&mut me, &pingbot), (false, "pong".into()));

    stop_and_see_the_bot_end(&mut server, bot);
}

/// Both bots, refused their name, end with the server's words once (the
/// library's `ConnectError::Refused` and pingbot's own text alike).
#[test]
fn a_refused_bot_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_server(dir.path());
    let _ping = Client::connect(addr.as_str(), "pingbot", ConnectOptions::default()).unwrap();
    let _echo = Client::connect(addr.as_str(), "echobot", ConnectOptions::default()).unwrap();
    let ping =
        pingbot::run(&addr, "pingbot", Some(Instant::now() + WAIT)).map_err(|e| e.to_string());
    let echo =
        echobot::run(&addr, "echobot", Some(Instant::now() + WAIT)).map_err(|e| e.to_string());
    for said in [ping, echo] {
        let said = said.expect_err("a bot whose name is taken ends with an error");
        assert!(said.contains("taken"), "{said}");
        assert_eq!(said.matches("taken").count(), 1, "said twice: {said}");
    }
}

/// A bot's thread, ending with what its `run` returned (`Err` with the
/// error's text).
type Bot = thread::JoinHandle<Result<(), String>>;

/// The bot's result, within [`WAIT`].
fn bot_result(bot: Bot) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while !bot.is_finished() {
        assert!(Instant::now() < deadline, "the bot did not end");
        thread::sleep(Duration::from_millis(20));
    }
    bot.join().unwrap()
}

/// Starts a server with its console on a pipe, runs `start` (a bot named
/// `name`) against it, kicks the bot from the console once it is online,
/// and returns how the bot ended.
fn kicked_bot(name: &str, start: fn(String) -> Bot) -> Result<(), String> {
    kicked_bot_for(name, "testing", start)
}

/// [`kicked_bot`] with the kick's `reason`.
fn kicked_bot_for(name: &str, reason: &str, start: fn(String) -> Bot) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server_with(dir.path(), Stdio::piped());
    let mut me = Client::connect(addr.as_str(), "tester", ConnectOptions::default()).unwrap();
    let bot = start(addr);
    let name = Username::new(name).unwrap();
    wait_for(&mut me, |e| match e {
        ClientEvent::Joined { user, .. } if user == name => Some(()),
        _ => None,
    });
    let console = server.0.stdin.as_mut().unwrap();
    writeln!(console, "kick {name} {reason}").unwrap();
    console.flush().unwrap();
    bot_result(bot)
}

/// An operator's kick ends the session, but it is no shutdown: the bot
/// returns an error saying so, for whoever runs it to see.
#[test]
fn a_kicked_bot_ends_with_an_error() {
    let echo = kicked_bot("echobot", |addr| {
        thread::spawn(move || {
            echobot::run(&addr, "echobot", Some(Instant::now() + WAIT)).map_err(|e| e.to_string())
        })
    });
    assert!(
        echo.as_ref().is_err_and(|e| e.contains("kicked")),
        "{echo:?}"
    );
    let ping = kicked_bot("pingbot", |addr| {
        thread::spawn(move || {
            pingbot::run(&addr, "pingbot", Some(Instant::now() + WAIT)).map_err(|e| e.to_string())
        })
    });
    assert!(
        ping.as_ref().is_err_and(|e| e.contains("kicked")),
        "{ping:?}"
    );
}

/// The operator's words of a kick end the bots' error, which their
/// `main` prints: made inert, an escape sequence in them does not act on
/// the terminal the bot runs in.
#[test]
fn a_kicked_bot_shows_the_operators_words_inert() {
    let reason = "spam\x1b[2J\x1b]0;owned\x07";
    for (name, start) in [
        (
            "echobot",
            (|addr| {
                thread::spawn(move || {
                    echobot::run(&addr, "echobot", Some(Instant::now() + WAIT))
                        .map_err(|e| e.to_string())
                })
            }) as fn(String) -> Bot,
        ),
        ("pingbot", |addr| {
            thread::spawn(move || {
                pingbot::run(&addr, "pingbot", Some(Instant::now() + WAIT))
                    .map_err(|e| e.to_string())
            })
        }),
    ] {
        let said = kicked_bot_for(name, reason, start).expect_err("kicked");
        assert!(said.contains("spam^[[2J"), "{name}: {said:?}");
        assert!(
            !said.contains('\x1b') && !said.contains('\x07'),
            "{name}: {said:?}"
        );
    }
}

/// Keepalive times short enough for a test.
fn quick_keepalive() -> Limits {
    Limits {
        keepalive_interval: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// A server that welcomes one client (a hub in memory answers its
/// `Hello`), then stops answering without closing the connection, as a
/// server that hangs does. Returns its address and its thread, which
/// waits [`WAIT`] at most for the bot and keeps the connection open until
/// the bot hangs up or [`WAIT`] is over; join it to see its own checks.
fn server_that_hangs() -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let came_by = Instant::now() + WAIT;
        let mut socket = loop {
            match listener.accept() {
                Ok((socket, _)) => break socket,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < came_by, "no bot connected");
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        socket.set_nonblocking(false).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let now = Instant::now();
        let mut hub = Hub::new(Limits::default(), "hi");
        let id = hub.handle_connect(now);
        let mut decoder = Decoder::<ClientMessage>::new(DEFAULT_MAX_FRAME);
        let mut buf = [0; 4096];
        let mut welcomed = false;
        while !welcomed {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0, "the bot closed before its welcome");
            decoder.feed(&buf[..n]);
            while let Some(m) = decoder.next_message().unwrap() {
                hub.handle_message(id, m, now);
            }
            while let Some(t) = hub.poll_transmit() {
                welcomed |= matches!(t.message, imchat_core::ServerMessage::Welcome { .. });
                socket.write_all(&t.message.to_frame()).unwrap();
            }
        }
        // Hung: reads nothing more and answers nothing, until the bot gives up.
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline && matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
    });
    (addr, server)
}

/// A server that stops answering ends the session by the keepalive: the
/// bot returns an error, not as after a shutdown.
#[test]
fn a_bot_whose_server_hangs_ends_with_an_error() {
    let (addr, server) = server_that_hangs();
    let echo = bot_result(thread::spawn(move || {
        let mut options = ConnectOptions::default();
        options.limits = quick_keepalive();
        echobot::run_with(&addr, "echobot", options, Some(Instant::now() + WAIT))
            .map_err(|e| e.to_string())
    }));
    assert_eq!(echo, Err("the server stopped answering".to_string()));
    server.join().expect("the hung server welcomed echobot");
    let (addr, server) = server_that_hangs();
    let ping = bot_result(thread::spawn(move || {
        pingbot::run_with(
            &addr,
            "pingbot",
            quick_keepalive(),
            Some(Instant::now() + WAIT),
        )
        .map_err(|e| e.to_string())
    }));
    assert_eq!(ping, Err("the server stopped answering".to_string()));
    server.join().expect("the hung server welcomed pingbot");
}
