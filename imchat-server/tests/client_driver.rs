//! The library's blocking `Client` against the real server, as a bot uses
//! it: kept to the server's rate, taking its session back after a lost
//! connection (in the same run and in the next), and over TLS with the
//! server's password. The server runs on 127.0.0.1 with a port the OS
//! picks and is killed by its handle; every wait has a deadline.

use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use imchat_core::blocking::tls::{self, Trust};
use imchat_core::blocking::{Client, ClientError, ConnectError, ConnectOptions, Link};
use imchat_core::{ClientEvent, Recipient, RoutedChat, Secret, Username};

mod common;

use common::{Server, TempDir, WAIT};

/// Every event of `c` until `pick` accepts one (which is returned last),
/// within [`WAIT`].
fn until<S: Link>(c: &mut Client<S>, pick: impl Fn(&ClientEvent) -> bool) -> Vec<ClientEvent> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match c.next_event(Duration::from_millis(100)) {
            Ok(Some(e)) => {
                let done = pick(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => {}
            Err(e) => panic!("{e} after {seen:?}"),
        }
    }
    panic!("no such event within {WAIT:?}; saw {seen:?}");
}

fn is_chat(text: &'static str) -> impl Fn(&ClientEvent) -> bool {
    move |e| matches!(e, ClientEvent::Chat(RoutedChat { text: t, .. }) if t == text)
}

fn texts(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Chat(c) => Some(c.text.clone()),
            _ => None,
        })
        .collect()
}

/// A server that lets a client send 10 messages at once and 40 a second,
/// and disconnects one that goes on sending faster for a second.
fn strict_rate() -> Server {
    Server::start(&[
        "--rate-burst",
        "10",
        "--rate-per-sec",
        "40",
        "--flood-timeout-secs",
        "1",
    ])
}

const FAST: usize = 150;

/// Sends [`FAST`] chat messages as fast as `send_chat` returns; the first
/// error, if any.
fn flood(bot: &mut Client) -> Result<(), ClientError> {
    for i in 0..FAST {
        bot.send_chat(Recipient::Everyone, &format!("m{i}"))?;
    }
    Ok(())
}

#[test]
fn a_bot_that_sends_fast_is_kept_to_the_rate_and_loses_nothing() {
    let srv = strict_rate();
    let mut bot = Client::connect(srv.addr, "fastbot", ConnectOptions::default()).unwrap();
    let mut ear = Client::connect(srv.addr, "ear", ConnectOptions::default()).unwrap();
    let started = Instant::now();
    flood(&mut bot).unwrap();
    // 140 past the burst at 40 a second (the client spends 90 % of it).
    assert!(
        started.elapsed() >= Duration::from_millis(3_000),
        "{FAST} messages went in {:?}: not paced",
        started.elapsed()
    );
    bot.send_chat(Recipient::Everyone, "done").unwrap();
    let heard = texts(&until(&mut ear, is_chat("done")));
    let want: Vec<String> = (0..FAST)
        .map(|i| format!("m{i}"))
        .chain(["done".to_string()])
        .collect();
    assert_eq!(heard, want);
    // Nothing came back unsent, and the bot is still connected.
    bot.who().unwrap();
    let events = until(&mut bot, |e| matches!(e, ClientEvent::Who { .. }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ClientEvent::NotSent { .. } | ClientEvent::Error { .. })),
        "{events:?}"
    );
}

#[test]
fn without_pacing_the_same_bot_is_disconnected_as_a_flood() {
    let srv = strict_rate();
    let mut options = ConnectOptions::default();
    options.pace = false;
    let mut bot = Client::connect(srv.addr, "rudebot", options).unwrap();
    // The server reads a flooder slowly, then cuts it off.
    let deadline = Instant::now() + WAIT;
    let mut cut = false;
    while !cut && Instant::now() < deadline {
        cut = flood(&mut bot).is_err();
        while let Ok(Some(e)) = bot.next_event(Duration::ZERO) {
            cut |= matches!(&e, ClientEvent::Error { text, .. } if text.contains("faster than allowed"));
        }
        cut |= !bot.is_open();
    }
    assert!(cut, "an unpaced flood was never cut off");
}

#[test]
fn what_would_be_refused_is_refused_without_waiting_for_a_turn() {
    // One message at once and one a second: after one chat, the next
    // waits about 1.1 s (the client spends 90 % of the rate).
    let srv = Server::start(&["--rate-burst", "1", "--rate-per-sec", "1"]);
    let mut bot = Client::connect(srv.addr, "slowbot", ConnectOptions::default()).unwrap();
    bot.send_chat(Recipient::Everyone, "first").unwrap();
    assert!(bot.next_send_at(0).is_some(), "the bucket should be empty");
    let long = "x".repeat(imchat_core::DEFAULT_MAX_TEXT + 1);
    let started = Instant::now();
    let err = bot.send_chat(Recipient::Everyone, &long).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Usage(imchat_core::UsageError::TextTooLong { .. })
        ),
        "{err}"
    );
    let huge = imchat_core::DEFAULT_MAX_PUSH_SIZE + 1;
    let err = bot
        .offer(
            imchat_core::FileName::new("f.bin").unwrap(),
            huge,
            Recipient::Everyone,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Usage(imchat_core::UsageError::FileTooLarge { .. })
        ),
        "{err}"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "refusals waited for the rate: {took:?}"
    );
    // And a text that fits still waits for its turn, then goes.
    bot.send_chat(Recipient::Everyone, "second").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// A paced bot that sends more than the window kept for resends before
/// it reads an event, to a server whose rate lets it all go at once,
/// waits for the server's answers instead of giving its oldest messages
/// up as not sent: they all arrive, and none is said lost.
#[test]
fn a_paced_bot_that_outruns_the_resend_window_waits_for_answers() {
    let srv = Server::start(&["--rate-burst", "1000", "--rate-per-sec", "1000"]);
    let mut bot = Client::connect(srv.addr, "burstbot", ConnectOptions::default()).unwrap();
    let mut watcher = Client::connect(srv.addr, "watcher", ConnectOptions::default()).unwrap();
    let n = imchat_core::Limits::default().max_unacked + 100;
    for i in 0..n {
        bot.send_chat(
            Recipient::User(Username::new("watcher").unwrap()),
            &format!("w{i}"),
        )
        .unwrap();
    }
    let last = format!("w{}", n - 1);
    let got = until(
        &mut watcher,
        |e| matches!(e, ClientEvent::Chat(RoutedChat { text, .. }) if *text == last),
    );
    assert_eq!(texts(&got).len(), n);
    bot.who().unwrap();
    let events = until(&mut bot, |e| matches!(e, ClientEvent::Who { .. }));
    let lost: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::NotSent { .. }))
        .collect();
    assert!(lost.is_empty(), "{} said not sent: {lost:?}", lost.len());
}

/// A bot whose frame limit is too small for the server's `Welcome` is
/// told what did not decode, not only that the server is not imchat; one
/// too small for its own chunks and texts is told so before connecting.
#[test]
fn a_frame_limit_too_small_for_the_welcome_says_so() {
    let welcome = "w".repeat(300);
    let srv = Server::start(&["--welcome", &welcome]);
    let mut options = ConnectOptions::default();
    options.limits.max_frame = 16;
    let Err(err) = Client::connect(srv.addr, "tinybot", options.clone()) else {
        panic!("a 16-byte frame limit passed");
    };
    assert!(matches!(err, ConnectError::InvalidOptions(_)), "{err:?}");
    // Chunks and texts of a byte fit in 160 bytes; the welcome does not.
    options.limits.max_frame = 160;
    options.limits.chunk_size = 1;
    options.limits.max_text = 1;
    let Err(err) = Client::connect(srv.addr, "tinybot", options) else {
        panic!("a 160-byte frame limit took the welcome");
    };
    assert!(matches!(err, ConnectError::NotImchat(_)), "{err:?}");
    let said = err.to_string();
    assert!(said.contains("is larger than the limit of 160"), "{said}");
}

/// `stream`, with a second handle to cut it from outside.
fn cuttable(srv: &Server) -> (TcpStream, TcpStream) {
    let stream = TcpStream::connect(srv.addr).unwrap();
    let handle = stream.try_clone().unwrap();
    (stream, handle)
}

#[test]
fn a_bot_takes_its_session_back_after_a_lost_connection_and_others_see_it_away_and_back() {
    let srv = Server::start(&[]);
    let (stream, cut) = cuttable(&srv);
    let mut bot = Client::over(stream, "roamer", ConnectOptions::default()).unwrap();
    let mut friend = Client::connect(srv.addr, "friend", ConnectOptions::default()).unwrap();
    until(&mut bot, |e| matches!(e, ClientEvent::Joined { .. }));
    cut.shutdown(Shutdown::Both).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the cut was never seen");
        match bot.next_event(Duration::from_millis(100)) {
            Err(ClientError::Closed | ClientError::Transport(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // Its friend is told it is away.
    until(
        &mut friend,
        |e| matches!(e, ClientEvent::Away { user, .. } if user.as_str() == "roamer"),
    );
    // Said while the bot is away: the server keeps it for the session.
    let roamer = Username::new("roamer").unwrap();
    friend.send_private(&roamer, "while you were away").unwrap();
    // The server handles a client's requests in order: once the `Who` is
    // answered, the message is in the session kept for the bot.
    friend.who().unwrap();
    until(&mut friend, |e| matches!(e, ClientEvent::Who { .. }));
    bot.reconnect(srv.addr).unwrap();
    let events = until(&mut bot, is_chat("while you were away"));
    assert!(
        matches!(events.first(), Some(ClientEvent::Resumed { .. })),
        "{events:?}"
    );
    // The others never saw it leave: it was back (before its line).
    bot.send_chat(Recipient::Everyone, "back").unwrap();
    let seen = until(&mut friend, is_chat("back"));
    assert!(
        !seen.iter().any(|e| matches!(e, ClientEvent::Left(_))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ClientEvent::Back { user, .. } if *user == roamer)),
        "{seen:?}"
    );
}

#[test]
fn the_next_run_of_a_bot_takes_the_saved_session_back() {
    let srv = Server::start(&[]);
    let (stream, cut) = cuttable(&srv);
    let bot = Client::over(stream, "keeper", ConnectOptions::default()).unwrap();
    let saved = bot.session().saved().expect("the server offers a resume");
    let mut friend = Client::connect(srv.addr, "friend", ConnectOptions::default()).unwrap();
    // The program dies without a goodbye.
    cut.shutdown(Shutdown::Both).unwrap();
    drop(bot);
    let keeper = Username::new("keeper").unwrap();
    friend.send_private(&keeper, "missed").unwrap();
    // The server handles a client's requests in order: once the `Who` is
    // answered, the message is in the session kept for the bot.
    friend.who().unwrap();
    until(&mut friend, |e| matches!(e, ClientEvent::Who { .. }));
    // A new session under the name is refused while the old one is kept...
    let fresh = Client::connect(srv.addr, "keeper", ConnectOptions::default());
    assert!(
        matches!(fresh, Err(ConnectError::NameTaken { .. })),
        "{fresh:?}"
    );
    // ... and the saved one is taken back.
    let mut options = ConnectOptions::default();
    options.resume = Some(saved);
    let mut again = Client::connect(srv.addr, "keeper", options).unwrap();
    let events = until(&mut again, is_chat("missed"));
    assert!(
        matches!(events.first(), Some(ClientEvent::Resumed { .. })),
        "{events:?}"
    );
}

#[test]
fn a_bot_joins_a_tls_server_with_its_password() {
    let secrets = TempDir::new("pw");
    let pw_file = secrets.0.join("password");
    std::fs::write(&pw_file, "open sesame\n").unwrap();
    let srv = Server::start(&[
        "--tls-self-signed",
        "--data-dir",
        "data",
        "--password-file",
        pw_file.to_str().unwrap(),
    ]);
    let trust = Trust::SystemOrKnown {
        known_servers: secrets.0.join("known_servers"),
    };
    let tls_link = || {
        let tcp = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
        let (stream, _) = tls::connect(tcp, "127.0.0.1", srv.addr.port(), &trust, WAIT).unwrap();
        tls::Stream::tls(stream)
    };
    // Plaintext to a TLS server: said in one line, not a frame-size error.
    let plain = Client::connect(srv.addr, "lost", ConnectOptions::default());
    assert!(
        matches!(plain, Err(ConnectError::NotImchat(_))),
        "{plain:?}"
    );
    // Without the password: refused.
    let refused = Client::over(tls_link(), "nopass", ConnectOptions::default());
    assert!(
        matches!(refused, Err(ConnectError::Refused { .. })),
        "{refused:?}"
    );
    let mut options = ConnectOptions::default();
    options.server_password = Secret::new("open sesame");
    let mut a = Client::over(tls_link(), "tlsbot", options.clone()).unwrap();
    let mut b = Client::over(tls_link(), "tlsfriend", options).unwrap();
    until(&mut a, |e| matches!(e, ClientEvent::Joined { .. }));
    b.send_chat(Recipient::Everyone, "over tls").unwrap();
    until(&mut a, is_chat("over tls"));
    a.quit("bye").unwrap();
    assert!(!a.is_open());
}

#[test]
fn a_bot_protects_its_name_with_a_password() {
    let srv = Server::start(&["--history-db", "history.db"]);
    let mut bot = Client::connect(srv.addr, "guard", ConnectOptions::default()).unwrap();
    bot.register(Secret::new("hunter22").unwrap()).unwrap();
    until(
        &mut bot,
        |e| matches!(e, ClientEvent::Notice { code, .. } if *code == imchat_core::NoticeCode::REGISTERED),
    );
    // Once quit returns the server has let go of the name: no retry.
    bot.quit("").unwrap();
    // The name is taken only with its password now.
    let thief = Client::connect(srv.addr, "guard", ConnectOptions::default());
    assert!(
        matches!(&thief, Err(ConnectError::Refused { code, .. }) if *code == imchat_core::RefuseCode::NAME_PROTECTED),
        "{thief:?}"
    );
    let mut options = ConnectOptions::default();
    options.account_password = Secret::new("hunter22");
    let mut again = Client::connect(srv.addr, "guard", options).unwrap();
    again.unregister().unwrap();
    until(
        &mut again,
        |e| matches!(e, ClientEvent::Notice { code, .. } if *code == imchat_core::NoticeCode::UNREGISTERED),
    );
    again.quit("").unwrap();
    Client::connect(srv.addr, "guard", ConnectOptions::default()).expect("free again");
}
