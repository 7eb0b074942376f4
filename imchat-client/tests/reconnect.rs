//! End-to-end tests of what the client does when its connection ends
//! (reconnect or exit), and of its `--json` output: the real binaries on
//! 127.0.0.1, ports picked by the OS, every wait bounded, every process
//! stopped by its handle.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{non_empty, Client, Server, World, TIMEOUT};
use serde_json::Value;

/// Long enough for a few reconnect tries (1 s, 2 s, 4 s, 8 s … with jitter).
const RECONNECT_WAIT: Duration = Duration::from_secs(40);

/// Waits (up to [`RECONNECT_WAIT`]) for a stdout line.
fn expect_late(c: &Client, what: &str, pred: impl Fn(&str) -> bool) -> String {
    match c.out.wait_line_from(0, RECONNECT_WAIT, pred) {
        Some((_, l)) => l,
        None => panic!("no line {what} within {RECONNECT_WAIT:?}\n{}", c.report()),
    }
}

#[test]
fn a_reconnecting_client_survives_a_server_restart_on_the_same_port() {
    let mut w = World::new("restart");
    let port = w.server.port();
    let mut alice = w.client_on("alice", port, &["--reconnect"]);
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");

    w.server.kill();
    // Bob (piped, the default) tries once at once, is refused, and exits.
    let err = bob.expect_exit_code(1);
    let err = non_empty(&err);
    assert!(
        err.len() == 1 && err[0].starts_with("imchat-client: connection to the server lost"),
        "bob's stderr: {err:?}"
    );
    assert!(
        alice.is_running(),
        "alice (--reconnect) exited\n{}",
        alice.report()
    );

    // Told in her chat, not only on a status line.
    expect_late(&alice, "`*** disconnected (…); reconnecting`", |l| {
        l.starts_with("*** disconnected (") && l.ends_with("); reconnecting")
    });
    // A new server on the same port: alice comes back by herself.
    let shared = w.shared();
    w.server = Server::start_on(w.dir.path(), &shared, &[], port);
    expect_late(&alice, "`*** reconnected to 127.0.0.1:<port>`", |l| {
        l == format!("*** reconnected to 127.0.0.1:{port}")
    });
    let carol = w.client("carol");
    alice.expect_line("*** carol has joined");
    alice.send("back again");
    carol.expect_line("<alice> back again");
    alice.send("/who");
    alice.expect_line("*** online (2): alice, carol");
    alice.send("/quit");
    assert_eq!(alice.expect_exit().code(), Some(0), "{}", alice.report());
}

/// A server that refuses for now (here: full) at the first connection is
/// asked again with `--reconnect`, as after a lost connection, instead of
/// the client exiting.
#[test]
fn a_reconnecting_client_refused_as_busy_at_start_tries_again() {
    let w = World::with_args("busy-start", &["--max-clients", "1"]);
    let port = w.server.port();
    let mut bob = w.client("bob");
    let alice = w.spawn_client(&["--reconnect", "alice", "127.0.0.1", &port.to_string()]);
    alice
        .err
        .wait_line_from(0, TIMEOUT, |l| l.contains("trying again in"))
        .unwrap_or_else(|| panic!("alice was not told she will try again\n{}", alice.report()));
    bob.send("/quit");
    assert_eq!(bob.expect_exit().code(), Some(0));
    expect_late(&alice, "`*** connected to … as alice`", |l| {
        l == format!("*** connected to 127.0.0.1:{port} as alice")
    });
}

/// Each new reason a reconnect try fails for is a line in the chat (a
/// piped client has no status line), and a repeated one is not.
#[test]
fn a_reconnecting_client_says_why_its_tries_fail() {
    let mut w = World::with_args("refused-again", &["--max-clients", "1"]);
    let port = w.server.port();
    let mut alice = w.client_on("alice", port, &["--reconnect"]);
    w.server.kill();
    let down = format!(
        "*** could not reconnect (cannot connect to 127.0.0.1:{port}: connection refused); trying again"
    );
    expect_late(&alice, &down, |l| l == down);
    // Her second try fails for the same reason within 2.5 s (1 s ± 25 %
    // after the first, then 2 s ± 25 %); the third is 3 s or more later.
    std::thread::sleep(Duration::from_millis(2600));
    // Back, but full: bob takes the one place before alice's next try.
    let shared = w.shared();
    w.server = Server::start_on(w.dir.path(), &shared, &["--max-clients", "1"], port);
    let mut bob = w.client("bob");
    let full = "*** could not reconnect (refused: server full (1 user)); trying again";
    expect_late(&alice, full, |l| l == full);
    bob.send("/quit");
    assert_eq!(bob.expect_exit().code(), Some(0));
    expect_late(&alice, "`*** reconnected to 127.0.0.1:<port>`", |l| {
        l == format!("*** reconnected to 127.0.0.1:{port}")
    });
    let said = alice.out.lines();
    assert_eq!(
        said.iter().filter(|l| **l == down).count(),
        1,
        "a repeated reason was said again: {said:?}"
    );
    alice.send("/quit");
    assert_eq!(alice.expect_exit().code(), Some(0), "{}", alice.report());
}

#[test]
fn a_piped_client_exits_at_a_shutdown_notice_even_when_the_server_comes_back() {
    let mut w = World::new("shutdown-restart");
    let port = w.server.port();
    let mut alice = w.client("alice");
    w.server.signal("INT");
    alice.expect_prefix("*** server shutting down: ");
    let _ = w.server.wait_exit(TIMEOUT);
    let shared = w.shared();
    w.server = Server::start_on(w.dir.path(), &shared, &[], port);
    let err = alice.expect_exit_code(1);
    assert_eq!(
        non_empty(&err).len(),
        1,
        "one line on stderr: {err:?}\n{}",
        alice.report()
    );
    assert!(
        err[0].starts_with("imchat-client: server shut down"),
        "{err:?}"
    );
    alice.assert_no_line("a reconnect after a shutdown notice", |l| {
        l.contains("reconnected")
    });
}

#[test]
fn a_piped_client_resumes_after_a_blip_unless_told_not_to() {
    let w = World::new("blip");
    let blip = Proxy::start(w.server.addr);
    let mut alice = w.client_on("alice", blip.addr.port(), &[]);
    let bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    blip.cut();
    alice.expect_line(&format!(
        "*** reconnected to 127.0.0.1:{}",
        blip.addr.port()
    ));
    alice.send("still here");
    bob.expect_line("<alice> still here");

    let mut carol = w.client_on("carol", blip.addr.port(), &["--no-reconnect"]);
    blip.cut();
    let err = carol.expect_exit_code(1);
    assert!(
        non_empty(&err)
            .first()
            .is_some_and(|l| l.starts_with("imchat-client: connection to the server lost")),
        "{err:?}"
    );
    carol.assert_no_line("a reconnect with --no-reconnect", |l| {
        l.contains("reconnected")
    });
}

#[test]
fn a_reconnecting_client_banned_meanwhile_stops_with_the_reason() {
    let mut w = World::with_console("banned-meanwhile");
    let net = Proxy::start(w.server.addr);
    let mut alice = w.client_on("alice", net.port(), &["--reconnect"]);
    // Cut off, and kept off until the ban is in place.
    net.set_target(None);
    net.cut();
    w.server.console("ban alice spamming", "banned alice");
    net.set_target(Some(w.server.addr));
    // Refused as banned: no more tries, one line, exit 1 as at a first
    // connection (the tries before came 1 s, then 2 s apart: well within).
    let status = alice.expect_exit_within(RECONNECT_WAIT);
    assert_eq!(status.code(), Some(1), "{}", alice.report());
    let err = alice.err.lines();
    assert_eq!(
        non_empty(&err),
        ["imchat-client: refused: the username 'alice' is banned from this server"],
        "{}",
        alice.report()
    );
}

/// A client kept away longer than the server keeps its session, whose
/// name someone took meanwhile: its session is over and the name is
/// another's, which no retry changes. It says so once and stops (exit 1),
/// as at a ban, instead of retrying forever with its spent token (each try
/// a failed resume counted against its address).
#[test]
fn a_reconnecting_client_whose_session_expired_and_name_was_taken_stops() {
    let w = World::with_args("expired-taken", &["--grace-secs", "1"]);
    let net = Proxy::start(w.server.addr);
    let mut alice = w.client_on("alice", net.port(), &["--reconnect"]);
    // Cut off, and kept off past her session's grace.
    net.set_target(None);
    net.cut();
    std::thread::sleep(Duration::from_secs(3));
    // Someone else (another machine's alice) takes the name.
    let _other = w.client("alice");
    net.set_target(Some(w.server.addr));
    let status = alice.expect_exit_within(RECONNECT_WAIT);
    assert_eq!(status.code(), Some(1), "{}", alice.report());
    assert_eq!(
        non_empty(&alice.err.lines()),
        ["imchat-client: your session expired while the server could not be reached, and the username 'alice' is someone else's now"],
        "{}",
        alice.report()
    );
    // Over for good: the next start does not present it again.
    let saved = w
        .dir
        .path()
        .join("data/imchat/sessions")
        .join(format!("alice@127.0.0.1_{}", net.port()));
    assert!(!saved.exists(), "{} is kept", saved.display());
}

/// A script that reconnects does not read its input meanwhile, but a
/// signal (a plain `kill`) still quits it at once, as a quit while not
/// connected: said in its line and kept for the next start, not a log
/// record after seconds of waiting.
#[test]
fn a_reconnecting_script_ended_by_a_signal_quits_at_once() {
    let w = World::new("signal-reconnecting");
    let net = Proxy::start(w.server.addr);
    let mut alice = w.client_on("alice", net.port(), &["--reconnect"]);
    net.set_target(None);
    net.cut();
    expect_late(&alice, "saying it reconnects", |l| {
        l.starts_with("*** disconnected (")
    });
    let sent = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(alice.pid().to_string())
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM failed");
    let status = alice.expect_exit_within(Duration::from_secs(10));
    alice.expect_line(
        "*** quit while not connected: the server could not be told; the next start tells it",
    );
    assert_eq!(status.code(), Some(0), "{}", alice.report());
    assert!(
        non_empty(&alice.err.lines()).is_empty(),
        "{}",
        alice.report()
    );
}

/// A client kicked while connected was told so: its next start joins
/// afresh, not told of that kick again as a session not resumed.
#[test]
fn a_client_kicked_while_connected_starts_afresh_next_time() {
    let mut w = World::with_console("kicked-then-back");
    let mut bob = w.client("bob");
    w.server.console("kick bob rude", "kicked bob");
    assert_eq!(bob.expect_exit().code(), Some(1), "{}", bob.report());
    let mut again = w.script(
        &["bob", "127.0.0.1", &w.server.port().to_string()],
        b"/quit\n".to_vec(),
    );
    assert_eq!(again.expect_exit().code(), Some(0), "{}", again.report());
    again.assert_no_line("the old kick told again", |l| {
        l.contains("not resumed") || l.contains("kicked")
    });
}

/// A `--json` script's own message comes after the answer to the `/who`
/// typed before it, as in plain output.
#[test]
fn json_output_keeps_the_order_of_the_script() {
    let w = World::new("json-order");
    let port = w.server.port();
    let _bob = w.client("bob");
    let mut jj = w.script(
        &["--json", "jj", "127.0.0.1", &port.to_string()],
        b"/who\nhello json\n/quit\n".to_vec(),
    );
    assert_eq!(jj.expect_exit().code(), Some(0), "{}", jj.report());
    let events: Vec<Value> = jj
        .out
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let at = |what: &str, f: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {events:?}"))
    };
    let who = at("answer to /who", &|v| {
        v["type"] == "notice"
            && v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("online ("))
    });
    let own = at("own message", &|v| v["type"] == "chat" && v["own"] == true);
    assert!(
        who < own,
        "the /who answer came after the line typed after it: {events:?}"
    );
}

#[test]
fn json_output_is_one_object_per_line_with_the_events_fields() {
    let w = World::new("json");
    let port = w.server.port();
    let mut alice = w.spawn_client(&["--json", "alice", "127.0.0.1", &port.to_string()]);
    let parse = |l: &str| -> Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))
    };
    alice.expect("the connection notice", |l| {
        let v = parse(l);
        v["type"] == "notice" && v["text"] == format!("connected to 127.0.0.1:{port} as alice")
    });
    alice.expect("the status, connected", |l| {
        let v = parse(l);
        v["type"] == "status"
            && v["me"] == "alice"
            && v["target"].is_null()
            && v["link"]["state"] == "connected"
    });
    alice.expect("the roster from the /who on connect", |l| {
        let v = parse(l);
        v["type"] == "roster" && v["all"] == serde_json::json!(["alice"])
    });
    let mut bob = w.client("bob");
    alice.expect("bob's join in the roster", |l| parse(l)["joined"] == "bob");
    bob.send("hello alice");
    let line = alice.expect("bob's message", |l| parse(l)["type"] == "chat");
    let v = parse(&line);
    assert_eq!(v["from"], "bob");
    assert_eq!(v["text"], "hello alice");
    assert_eq!(v["private"], false);
    assert_eq!(v["action"], false);
    let time = v["time"].as_str().expect("a time");
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "RFC 3339 in UTC: {time:?}"
    );
    // Named as typed, echoed with the name bob registered.
    alice.send("/msg BOB psst");
    alice.expect("our own private message, echoed", |l| {
        let v = parse(l);
        v["type"] == "chat" && v["own"] == true && v["to"] == "bob" && v["text"] == "psst"
    });
    bob.expect_line("<alice> (private) psst");
    alice.send("/nosuch");
    alice.expect("an error", |l| {
        let v = parse(l);
        v["type"] == "error" && v["text"] == "unknown command /nosuch; type /help for the list"
    });
    // /help for a program: one row a line, not wrapped at 80 columns.
    alice.send("/help");
    alice.expect("/download's row, whole", |l| {
        let v = parse(l);
        v["type"] == "plain"
            && v["text"].as_str().is_some_and(|t| {
                t.starts_with("  /download <name>") && t.ends_with("(an interrupted one resumes)")
            })
    });
    alice.expect("every alias in one line", |l| {
        let v = parse(l);
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("aliases: /") && t.ends_with(" @user"))
    });
    alice.send("/quit");
    // The unknown command above was a failed request: exit 3.
    assert_eq!(alice.expect_exit().code(), Some(3), "{}", alice.report());
    for l in alice.out.lines() {
        let v = parse(&l);
        assert!(v["type"].is_string(), "no type: {l}");
    }
}

#[test]
fn unicast_mode_needs_the_user_online() {
    let w = World::new("mode-online");
    let mut alice = w.client("alice");
    alice.send("/mode unicast dave");
    alice.expect_line("error: dave is not online (see /who); the mode stays as it was");
    let bob = w.client("bob");
    alice.send("/mode unicast bob");
    alice.expect_line("*** mode: unicast to bob");
    alice.send("psst");
    bob.expect_line("<alice> (private) psst");
    alice.send("/hlep");
    alice.expect_line("error: unknown command /hlep; did you mean /help?");
}

/// A port nothing listens on (a listener's, closed again).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

#[test]
fn a_client_given_several_servers_skips_a_dead_one_and_moves_on_after_a_loss() {
    // Two servers of their own (no cluster): A keeps no session of a
    // lost connection, so that alice's name is free there again.
    let w = World::with_args("servers", &["--grace-secs", "0"]);
    let b_dir = w.dir.join("b");
    std::fs::create_dir_all(&b_dir).expect("b's folder");
    let mut b = Server::start(&b_dir, &w.shared());
    // Server A behind a proxy that can cut its connections and stays up.
    let a = Proxy::start(w.server.addr);
    let (dead, a_port, b_port) = (closed_port(), a.addr.port(), b.port());
    let list = format!("127.0.0.1:{dead},127.0.0.1:{a_port},127.0.0.1:{b_port}");

    // The first that answers, in the order given.
    let mut alice = w.spawn_client(&["alice", &list]);
    alice.expect_line(&format!("*** connected to 127.0.0.1:{a_port} as alice"));
    let bob = w.client_on("bob", b_port, &[]);

    // A cut: the next server is tried first, though A still answers.
    a.cut();
    alice.expect_line(&format!("*** reconnected to 127.0.0.1:{b_port}"));
    bob.expect_line("*** alice has joined");
    alice.send("on b now");
    bob.expect_line("<alice> on b now");

    // B dies: round the end of the list, past the dead one, back to A.
    b.kill();
    alice.expect_line(&format!("*** reconnected to 127.0.0.1:{a_port}"));
    let carol = w.client("carol");
    alice.send("on a again");
    carol.expect_line("<alice> on a again");
}

/// A piped client given several servers goes on to the next one when its
/// server shuts down (a rolling upgrade of a cluster), where one given a
/// single server exits (above). Before, it exited there too.
#[test]
fn a_piped_client_given_several_servers_moves_on_at_a_shutdown() {
    let w = World::new("several-shutdown");
    let b_dir = w.dir.join("b");
    std::fs::create_dir_all(&b_dir).expect("b's folder");
    let b = Server::start(&b_dir, &w.shared());
    let (a_port, b_port) = (w.server.port(), b.port());
    let list = format!("127.0.0.1:{a_port},127.0.0.1:{b_port}");
    let mut alice = w.spawn_client(&["alice", &list]);
    alice.expect_line(&format!("*** connected to 127.0.0.1:{a_port} as alice"));
    let bob = w.client_on("bob", b_port, &[]);
    w.server.signal("INT");
    // One line says the shutdown, and what the client does next.
    let said = alice.expect_prefix("*** server shutting down: ");
    assert!(said.ends_with("; reconnecting"), "{said:?}");
    alice.expect_line(&format!("*** reconnected to 127.0.0.1:{b_port}"));
    // B is no cluster with A: no server restarted, B has another history.
    alice.expect_line(
        "*** session not resumed: history lost (this server does not share the history of the one before)",
    );
    alice.assert_no_line("the shutdown said twice", |l| {
        l.starts_with("*** disconnected")
    });
    bob.expect_line("*** alice has joined");
    alice.send("on b now");
    bob.expect_line("<alice> on b now");
    assert!(alice.is_running(), "{}", alice.report());
    alice.send("/quit");
    assert_eq!(alice.expect_exit().code(), Some(0), "{}", alice.report());
}

#[test]
fn a_client_whose_servers_all_fail_names_each_and_why() {
    let (one, two) = (closed_port(), closed_port());
    let dir = common::TempDir::new("no-servers");
    let mut c = Client::spawn(
        dir.path(),
        &["alice", &format!("127.0.0.1:{one},nosuch.invalid:{two}")],
    );
    let err = c.expect_exit_code(1);
    assert_eq!(
        non_empty(&err),
        [format!(
            "imchat-client: cannot connect to any of the servers: 127.0.0.1:{one} (connection refused), \
             nosuch.invalid:{two} (cannot resolve the host)"
        )],
        "{}",
        c.report()
    );
}

#[test]
fn a_client_given_several_servers_moves_past_one_that_never_answers() {
    let w = World::new("silent");
    // Takes connections and says nothing: a frozen server.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let list = format!("127.0.0.1:{silent_port},127.0.0.1:{}", w.server.addr.port());
    let alice = w.spawn_client(&["alice", &list]);
    // After the handshake's wait on the first, the second.
    expect_late(&alice, "connected to the second server", |l| {
        l == format!(
            "*** connected to 127.0.0.1:{} as alice",
            w.server.addr.port()
        )
    });
    drop(silent);
}

#[test]
fn a_push_cut_by_a_reconnect_is_reported_failed_to_its_receiver() {
    let w = World::new("push-cut");
    let net = Proxy::start(w.server.addr);
    let port = net.port().to_string();
    let alice = w.spawn_client(&[
        "--json",
        "--reconnect",
        "--auto-accept-bytes",
        "1G",
        "alice",
        "127.0.0.1",
        &port,
    ]);
    let parse = |l: &str| -> Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))
    };
    alice.expect("the connection notice", |l| parse(l)["type"] == "notice");
    let mut bob = w.client("bob");
    alice.expect("bob's join", |l| parse(l)["joined"] == "bob");
    let big = w.dir.join("big.bin");
    // Big enough to be still on its way when the connection is cut.
    std::fs::write(&big, vec![7u8; 128 << 20]).expect("write the file");
    bob.send(&format!("/sendfile {} alice", big.display()));
    let line = alice.expect("the push arriving", |l| {
        let v = parse(l);
        v["type"] == "transfer" && v["direction"] == "receive"
    });
    let id = parse(&line)["id"].clone();
    net.cut();
    alice.expect("the push's end", |l| {
        let v = parse(l);
        v["type"] == "transfer_ended" && v["id"] == id
    });
    alice.expect("the push said failed", |l| {
        let v = parse(l);
        v["type"] == "notice"
            && v["text"]
                .as_str()
                .is_some_and(|t| t == "transfer of big.bin failed: connection lost")
    });
    assert!(
        !w.dir
            .join("alice")
            .join("received")
            .join("big.bin")
            .exists(),
        "no file from a cut push"
    );
    bob.send("/quit");
}
