//! End-to-end tests of sessions that outlive a connection, with the real
//! binaries on 127.0.0.1 (ports picked by the OS): a client killed and
//! started again takes its session back; a connection cut in the middle
//! of a burst, either way, loses and doubles nothing; a late joiner sees
//! the last messages marked as history; the full-screen client comes back
//! after a blip and after a server restart with its draft. Every wait has
//! a deadline; every process is stopped by its handle.

mod common;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::screen::{entry_row, has_entry, Shot, Term};
use common::{Client, Server, World, TIMEOUT};
use serde_json::Value;

/// Long enough for a few reconnect tries (1 s, 2 s, 4 s … with jitter).
const RECONNECT_WAIT: Duration = Duration::from_secs(40);

/// The newest id seen in `name`'s saved session on `port` (clients run in
/// the test's folder with `data/` as their data folder).
fn saved_last_seen(dir: &Path, name: &str, port: u16) -> Option<u64> {
    let path = dir
        .join("data")
        .join("imchat")
        .join("sessions")
        .join(format!("{name}@127.0.0.1_{port}"));
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("last_seen="))
        .and_then(|v| v.parse().ok())
}

/// Waits until `name`'s saved session has seen more than `than`.
fn wait_saved_past(w: &World, name: &str, than: u64) {
    let port = w.server.port();
    let deadline = Instant::now() + TIMEOUT;
    for _ in 0..1000 {
        if saved_last_seen(w.dir.path(), name, port).is_some_and(|s| s > than) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s saved session never got past id {than}: {:?}",
            saved_last_seen(w.dir.path(), name, port)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `name`'s saved id once it has stayed the same for 300 ms. The client
/// saves after printing (from another thread), so a read right after a
/// line shows may still find the save before it; waiting for the saved
/// id to move past that older one could then end before the line's save.
fn saved_settled(w: &World, name: &str) -> u64 {
    let port = w.server.port();
    let deadline = Instant::now() + TIMEOUT;
    let (mut last, mut same) = (None, 0);
    for _ in 0..1000 {
        let now = saved_last_seen(w.dir.path(), name, port);
        same = if now.is_some() && now == last {
            same + 1
        } else {
            0
        };
        if same >= 15 {
            return now.expect("checked above");
        }
        last = now;
        assert!(
            Instant::now() < deadline,
            "{name}'s saved session never settled: {last:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    panic!("{name}'s saved session never settled: {last:?}");
}

/// A line a resume replayed, without its `[missed HH:MM] ` marker;
/// `None` for any other line.
fn missed(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("[missed ")?;
    let (time, line) = rest.split_once("] ")?;
    let digits = time.chars().filter(char::is_ascii_digit).count();
    (time.len() == 5 && digits == 4 && time.as_bytes()[2] == b':').then_some(line)
}

/// The lines of `c` that start with `prefix`, those a resume replayed
/// without their `[missed HH:MM] ` marker.
fn lines_with(c: &Client, prefix: &str) -> Vec<String> {
    c.out
        .lines()
        .iter()
        .map(|l| missed(l).unwrap_or(l))
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Waits until `c` printed `n` lines starting with `prefix` (as
/// [`lines_with`] counts them).
fn wait_count(c: &Client, prefix: &str, n: usize, timeout: Duration) {
    let got = c.out.wait_for(timeout, |bytes, _| {
        let text = String::from_utf8_lossy(bytes);
        (text
            .lines()
            .filter(|l| missed(l).unwrap_or(l).starts_with(prefix))
            .count()
            >= n)
            .then_some(())
    });
    assert!(
        got.is_some(),
        "fewer than {n} lines starting with {prefix:?} within {timeout:?}\n{}",
        c.report()
    );
}

/// Others are told live when a user's connection is lost and when it
/// takes its session back: `--json` has a roster line for each, plain
/// lines print nothing for either (a blip is no news).
#[test]
fn json_tells_a_user_away_and_back_and_plain_lines_stay_quiet() {
    let w = World::new("away-back");
    let port = w.server.port().to_string();
    let mut bob = w.client("bob");
    let alice = w.spawn_client(&["--json", "alice", "127.0.0.1", &port]);
    let carol = w.client("carol");
    let roster = |l: &str, key: &str| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["type"] == "roster" && v[key] == "bob")
    };
    // Carol is there for alice: her join, or (when carol came in before
    // alice's first roster, as on a busy machine) that roster.
    alice.expect("carol's join", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["joined"] == "carol"
                || v["all"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|n| n == "carol"))
        })
    });
    saved_settled(&w, "bob");
    bob.kill();
    let (away, _) = alice.expect_from(0, "bob away", |l| roster(l, "went_away"));
    let mut bob = w.spawn_client(&["bob", "127.0.0.1", &port]);
    bob.expect_line("*** resumed");
    alice.expect_from(away, "then bob back", |l| roster(l, "back"));
    // Once carol has bob's line, she had anything sent before it.
    bob.send("here again");
    carol.expect_line("<bob> here again");
    carol.assert_no_line("a line for bob away or back", |l| {
        l.contains("bob") && l != "<bob> here again"
    });
    alice.assert_no_line("bob left", |l| roster(l, "left"));
}

#[test]
fn a_killed_client_started_again_gets_what_it_missed_and_no_one_sees_it_leave() {
    let w = World::new("kill-restart");
    let port = w.server.port();
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    // Dave only watches: once he has bob's broadcast, what bob sent before
    // it has been routed too (one connection keeps its order), so carol's
    // join cannot overtake it.
    let dave = w.client("dave");
    alice.expect_line("*** dave has joined");
    let first = saved_settled(&w, "alice");
    bob.send("one");
    alice.expect_line("<bob> one");
    // Her saved session has caught up with what she showed (bob's "one",
    // the next id after the last one saved), then she is killed.
    wait_saved_past(&w, "alice", first);
    alice.kill();

    bob.send("/msg alice two");
    bob.send("three");
    dave.expect_line("<bob> three");
    let carol = w.client("carol");
    bob.expect_line("*** carol has joined");
    bob.send("four");
    carol.expect_line("<bob> four");

    let mut alice = w.spawn_client(&["alice", "127.0.0.1", &port.to_string()]);
    alice.expect_line(&format!("*** connected to 127.0.0.1:{port} as alice"));
    let (resumed, _) = alice.expect_from(0, "`*** resumed`", |l| l == "*** resumed");
    let (last, _) = alice.expect_from(resumed, "`<bob> four`", |l| missed(l) == Some("<bob> four"));
    let lines = alice.out.lines();
    // Each with the time it happened, not as live.
    let replayed: Vec<&str> = lines[resumed + 1..=last]
        .iter()
        .map(String::as_str)
        .filter_map(missed)
        .collect();
    assert_eq!(
        replayed,
        [
            "<bob> (private) two",
            "<bob> three",
            "*** carol has joined",
            "<bob> four"
        ],
        "what she missed, in order\n{}",
        alice.report()
    );
    alice.assert_no_line("what she had seen, again", |l| {
        missed(l).unwrap_or(l) == "<bob> one"
    });

    alice.send("back");
    bob.expect_line("<alice> back");
    for who in [&bob, &carol] {
        who.assert_no_line("alice leaving or joining", |l| {
            l.starts_with("*** alice has")
        });
    }
    alice.send("/quit");
    assert_eq!(alice.expect_exit().code(), Some(0), "{}", alice.report());
    bob.expect_line("*** alice has left");
    assert_eq!(
        saved_last_seen(w.dir.path(), "alice", port),
        None,
        "/quit removes the saved session"
    );

    // Killed again and started with --no-resume: a session of its own,
    // refused while the old one holds the name.
    let mut again = w.spawn_client(&["alice", "127.0.0.1", &port.to_string()]);
    again.expect_line(&format!("*** connected to 127.0.0.1:{port} as alice"));
    again.expect_prefix("Welcome to imchat, alice!");
    wait_saved_past(&w, "alice", 0);
    again.kill();
    let mut fresh = w.spawn_client(&["--no-resume", "alice", "127.0.0.1", &port.to_string()]);
    let err = fresh.expect_exit_code(1);
    assert!(
        err.iter().any(|l| l.contains("taken")),
        "the name is still the old session's: {err:?}\n{}",
        fresh.report()
    );
}

/// A run killed after its resume was welcomed, before it saved the new
/// token, takes its session back at the next start. The first frame after
/// the welcome tells the server the new token arrived, and the server then
/// forgets the one presented: the client saves the new one before that
/// frame goes out (a run held between the welcome and the save, by a fail
/// point, has sent nothing yet). Before, the frame went out first, and a
/// kill in between left only the dead token on disk: the next start was
/// refused its own name ("already taken") until the grace period ended.
#[test]
fn a_client_killed_right_after_its_resume_was_welcomed_takes_its_session_back() {
    let w = World::new("kill-welcomed");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    wait_saved(&w, "alice", &alice);
    alice.kill();
    bob.send("while away");

    let args = ["alice", "127.0.0.1", port.as_str()];
    let mut held = Client::spawn_with_env(
        w.dir.path(),
        &args,
        &[("FAILPOINTS", "client-welcomed=sleep(60000)")],
    );
    // Printed once the welcome is in, right before the fail point.
    held.expect_line(&format!("*** connected to 127.0.0.1:{port} as alice"));
    held.kill();

    let mut again = w.spawn_client(&args);
    let (resumed, _) = again.expect_from(0, "`*** resumed`", |l| l == "*** resumed");
    again.expect_from(resumed, "`<bob> while away`", |l| {
        missed(l) == Some("<bob> while away")
    });
    again.send("/quit");
    assert_eq!(again.expect_exit().code(), Some(0), "{}", again.report());
    bob.assert_no_line("alice leaving before her quit", |l| {
        l.starts_with("*** alice has left (")
    });
}

/// While the client reconnects, its saved session stays on disk: a run
/// that ends then (killed, or quit with no server to tell) leaves the next
/// one the session to take back, instead of a name held by a session
/// nobody can resume.
#[test]
fn the_saved_session_stays_while_the_client_reconnects() {
    let mut w = World::new("kept-offline");
    let port = w.server.port();
    let alice = w.client_on("alice", port, &["--reconnect"]);
    alice.expect_prefix("Welcome to imchat, alice!");
    wait_saved_past(&w, "alice", 0);
    w.server.kill();
    alice.expect_prefix("*** disconnected (");
    // Past the client's once-a-second timer, more than once.
    thread::sleep(Duration::from_millis(2500));
    assert!(
        saved_last_seen(w.dir.path(), "alice", port).is_some(),
        "the saved session was removed while reconnecting\n{}",
        alice.report()
    );
}

/// A client killed in unicast mode starts in it again, even killed the
/// moment it said so: the next line it sends stays private, not
/// broadcast to everyone.
#[test]
fn a_client_killed_in_unicast_mode_comes_back_in_it() {
    let w = World::new("kill-unicast");
    let port = w.server.port();
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let carol = w.client("carol");
    alice.expect_line("*** carol has joined");
    alice.send("/mode unicast bob");
    alice.expect_line("*** mode: unicast to bob");
    alice.kill();

    let mut alice = w.spawn_client(&["alice", "127.0.0.1", &port.to_string()]);
    alice.expect_line("*** resumed");
    // Told after the connection's own lines, not above them.
    let (connected, _) =
        alice.expect_from(0, "`*** connected`", |l| l.starts_with("*** connected to "));
    alice.expect_from(connected, "the mode after `*** connected`", |l| {
        l == "*** mode: unicast to bob"
    });
    alice.send("after");
    bob.expect_line("<alice> (private) after");
    alice.send("/mode broadcast");
    alice.send("to all");
    carol.expect_line("<alice> to all");
    carol.assert_no_line("a private line broadcast", |l| l.contains("after"));
}

/// Killed a moment after it showed a burst (too soon for any timer): the
/// next run resumes after the last message shown, and shows none again.
#[test]
fn a_client_killed_right_after_it_showed_messages_is_not_sent_them_again() {
    let w = World::new("kill-soon");
    let port = w.server.port();
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    let carol = witness(&w, &alice);
    for i in 1..=5 {
        bob.send(&format!("m{i}"));
    }
    alice.expect_line("<bob> m5");
    thread::sleep(Duration::from_millis(50));
    alice.kill();
    bob.send("after");
    carol.expect_line("<bob> after");

    let alice = w.spawn_client(&["alice", "127.0.0.1", &port.to_string()]);
    let (resumed, _) = alice.expect_from(0, "`*** resumed`", |l| l == "*** resumed");
    alice.expect_from(resumed, "`<bob> after`", |l| {
        missed(l) == Some("<bob> after")
    });
    alice.assert_no_line("a message shown before the kill, again", |l| {
        (1..=5).any(|i| missed(l).unwrap_or(l) == format!("<bob> m{i}"))
    });
}

#[test]
fn a_killed_client_started_with_its_servers_in_another_order_takes_its_session_back() {
    let w = World::new("kill-reorder");
    let port = w.server.port();
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    let carol = witness(&w, &alice);
    let seen = saved_settled(&w, "alice");
    bob.send("one");
    alice.expect_line("<bob> one");
    wait_saved_past(&w, "alice", seen);
    alice.kill();
    bob.send("while away");
    carol.expect_line("<bob> while away");

    // Started again with another server first (one that does not answer):
    // the session saved under the server it was on is found all the same.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let list = format!("127.0.0.1:{dead},127.0.0.1:{port}");
    let alice = w.spawn_client(&["alice", &list]);
    let (resumed, _) = alice.expect_from(0, "`*** resumed`", |l| l == "*** resumed");
    alice.expect_from(resumed, "`<bob> while away`", |l| {
        missed(l) == Some("<bob> while away")
    });
    bob.assert_no_line("alice leaving", |l| l.starts_with("*** alice has left"));
}

/// A third client, `carol`, that `of` has seen join. Once she shows a line
/// bob typed after `of` was killed, the server has it, so `of`'s next run
/// gets it as missed, not live (bob's client may take its time to read
/// its input on a busy machine, longer than that run's resume).
fn witness(w: &World, of: &Client) -> Client {
    let carol = w.client("carol");
    of.expect_line("*** carol has joined");
    carol
}

/// `n` numbered lines: `m0`, `m1`, …
fn burst(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

#[test]
fn a_connection_cut_mid_burst_from_the_client_loses_and_doubles_nothing() {
    const N: usize = 300;
    let w = World::new("cut-up");
    let proxy = Proxy::start(w.server.addr);
    let bob = w.client("bob");
    let script: String = burst(N).iter().map(|l| format!("{l}\n")).collect();
    let port = proxy.port().to_string();
    let mut alice = w.script(&["alice", "127.0.0.1", &port], script.into_bytes());
    // The first 100 go at once, the rest at the server's rate (50 a
    // second): cut while they flow.
    wait_count(&bob, "<alice> m", N / 2, TIMEOUT);
    proxy.cut();
    alice.expect_line(&format!("*** reconnected to 127.0.0.1:{port}"));
    assert_eq!(alice.expect_exit().code(), Some(0), "{}", alice.report());
    wait_count(&bob, "<alice> m", N, TIMEOUT);
    let got: Vec<String> = lines_with(&bob, "<alice> ")
        .into_iter()
        .map(|l| l["<alice> ".len()..].to_string())
        .collect();
    assert_eq!(got, burst(N), "every message once, in order");
    bob.expect_line("*** alice has left");
    let presence = lines_with(&bob, "*** alice has");
    assert_eq!(
        presence,
        ["*** alice has joined", "*** alice has left"],
        "alice joined once and left once, at the end\n{}",
        bob.report()
    );
}

#[test]
fn a_connection_cut_mid_burst_to_the_client_loses_and_doubles_nothing() {
    const N: usize = 300;
    let w = World::new("cut-down");
    let proxy = Proxy::start(w.server.addr);
    let alice = w.client_on("alice", proxy.port(), &[]);
    let script: String = burst(N).iter().map(|l| format!("{l}\n")).collect();
    let port = w.server.port().to_string();
    let mut bob = w.script(&["bob", "127.0.0.1", &port], script.into_bytes());
    wait_count(&alice, "<bob> m", N / 2, TIMEOUT);
    proxy.cut();
    alice.expect_line(&format!("*** reconnected to 127.0.0.1:{}", proxy.port()));
    alice.expect_line("*** resumed");
    wait_count(&alice, "<bob> m", N, TIMEOUT);
    assert_eq!(bob.expect_exit().code(), Some(0), "{}", bob.report());
    let got: Vec<String> = lines_with(&alice, "<bob> ")
        .into_iter()
        .map(|l| l["<bob> ".len()..].to_string())
        .collect();
    assert_eq!(got, burst(N), "every message once, in order");
}

#[test]
fn a_late_joiner_sees_the_last_messages_marked_as_history() {
    let w = World::new("history");
    let port = w.server.port().to_string();
    let mut bob = w.client("bob");
    for text in ["h1", "h2", "h3"] {
        bob.send(text);
    }
    bob.send("/msg bob to myself");
    // Every message has reached the server once bob's /who is answered.
    bob.send("/who");
    bob.expect_line("*** online (1): bob");

    let carol = w.client("carol");
    let (first, _) = carol.expect_from(0, "history", |l| l.starts_with("[history "));
    bob.send("live");
    let (live, _) = carol.expect_from(0, "`<bob> live`", |l| l == "<bob> live");
    let lines = carol.out.lines();
    let history: Vec<&str> = lines[first..live]
        .iter()
        .filter_map(|l| l.strip_prefix("[history "))
        .map(|rest| {
            let (time, line) = rest.split_once("] ").expect("`[history HH:MM] …`");
            assert!(
                time.len() == 5 && time.as_bytes()[2] == b':',
                "HH:MM: {time:?}"
            );
            line
        })
        .collect();
    assert_eq!(history, ["<bob> h1", "<bob> h2", "<bob> h3"], "{lines:?}");
    carol.assert_no_line("a private message of others as history", |l| {
        l.contains("to myself")
    });

    // The same for a program: `"history": true`, live traffic false.
    let mut dave = w.spawn_client(&["--json", "dave", "127.0.0.1", &port]);
    let parse = |l: &str| -> Value { serde_json::from_str(l).expect("JSON") };
    dave.expect("h1 as history", |l| {
        let v = parse(l);
        v["type"] == "chat" && v["text"] == "h1" && v["history"] == true && v["from"] == "bob"
    });
    bob.send("live again");
    dave.expect("live traffic, not history", |l| {
        let v = parse(l);
        v["text"] == "live again" && v["history"] == false
    });
    dave.send("/quit");
    assert_eq!(dave.expect_exit().code(), Some(0), "{}", dave.report());
}

// ---------------------------------------------------------------------------
// The full-screen client

/// Starts `name`'s client in an 80x24 terminal on `port` and waits until
/// it is connected.
fn term_on(w: &World, name: &str, port: u16) -> Term {
    let t = Term::spawn(
        w.dir.path(),
        &w.dir.join(format!("home-{name}")),
        &[name, "127.0.0.1", &port.to_string()],
        80,
        24,
    );
    let connected = format!("connected to 127.0.0.1:{port}");
    t.wait_screen("connected", |s| {
        s.row(22).contains(&connected) && s.row(23) == format!("{name}>")
    });
    t
}

#[track_caller]
fn wait_long(t: &Term, desc: &str, cond: impl FnMut(&Shot) -> bool) -> Shot {
    match t.try_wait_screen(RECONNECT_WAIT, cond) {
        Ok(s) => s,
        Err(last) => panic!("the screen never showed {desc}:\n{}", last.dump()),
    }
}

#[test]
fn the_screen_client_resumes_after_a_blip_with_its_draft_and_what_it_missed() {
    let w = World::new("scr-blip");
    let proxy = Proxy::start(w.server.addr);
    let mut t = term_on(&w, "alice", proxy.port());
    let mut bob = w.client("bob");
    t.wait_screen("bob's join", |s| has_entry(s, "*** bob has joined"));
    t.type_str("half typed");
    let draft = "alice> half typed";
    t.wait_screen("the draft", |s| s.row(23) == draft);

    // The link goes down for a while; bob talks meanwhile.
    proxy.set_target(None);
    proxy.cut();
    t.wait_screen("reconnecting, the draft kept", |s| {
        s.row(22).contains("reconnecting") && s.row(23) == draft
    });
    bob.send("while you were away");
    // alice stays listed, marked away while her session waits.
    w.server.wait_logged("alice lost its connection");
    bob.send("/who");
    bob.expect("alice listed as away", |l| {
        l.starts_with("*** online (2): alice (away, connection lost ") && l.ends_with(" ago), bob")
    });
    proxy.set_target(Some(w.server.addr));

    let back = format!("connected to 127.0.0.1:{}", proxy.port());
    let s = wait_long(&t, "connected again, resumed, the missed message", |s| {
        s.row(22).contains(&back)
            && has_entry(s, "*** resumed")
            && has_entry(s, "<bob> while you were away")
            && s.row(23) == draft
    });
    let resumed = entry_row(&s, "*** resumed").unwrap();
    let missed = entry_row(&s, "<bob> while you were away").unwrap();
    assert!(resumed < missed, "{}", s.dump());
    bob.assert_no_line("alice leaving", |l| l.starts_with("*** alice has"));
    t.type_str(" and sent\r");
    bob.expect_line("<alice> half typed and sent");
    assert!(t.is_running());
}

/// A long paste goes out at the server's rate; a connection lost while
/// it does holds the lines not sent yet (they are not refused one by one
/// as lines typed while offline are) and sends them after the resume:
/// every line once, in order.
#[test]
fn a_paste_cut_by_a_lost_connection_goes_on_after_the_resume() {
    const N: usize = 300;
    let w = World::new("scr-paste-cut");
    let proxy = Proxy::start(w.server.addr);
    let bob = w.client("bob");
    let mut t = term_on(&w, "alice", proxy.port());
    let text: String = burst(N).iter().map(|l| format!("{l}\n")).collect();
    t.paste(&text);
    t.wait_screen("the question", |s| {
        s.contains(&format!("paste {N} lines? Enter sends them"))
    });
    t.type_str("\r");
    // The first 100 go at once, the rest at the server's rate (50 a
    // second): cut while they flow.
    wait_count(&bob, "<alice> m", N / 2, TIMEOUT);
    proxy.cut();
    wait_count(&bob, "<alice> m", N, RECONNECT_WAIT);
    let got: Vec<String> = lines_with(&bob, "<alice> ")
        .into_iter()
        .map(|l| l["<alice> ".len()..].to_string())
        .collect();
    assert_eq!(got, burst(N), "every line once, in order");
    assert!(t.is_running());
}

#[test]
fn the_screen_client_comes_back_after_a_server_restart_and_shows_history() {
    let mut w = World::new("scr-restart");
    let proxy = Proxy::start(w.server.addr);
    let mut t = term_on(&w, "alice", proxy.port());
    t.type_str("my draft");
    let draft = "alice> my draft";
    t.wait_screen("the draft", |s| s.row(23) == draft);

    // The server restarts (without a database: its history is gone); it
    // cannot be reached until bob has said something on the new one.
    proxy.set_target(None);
    w.server.stop_by_sigterm();
    t.wait_screen("reconnecting, the draft kept", |s| {
        s.row(22).contains("reconnecting") && s.row(23) == draft
    });
    w.server = Server::start(w.dir.path(), &w.shared());
    let mut bob = w.client("bob");
    bob.send("said on the new server");
    bob.send("/who");
    bob.expect_line("*** online (1): bob");
    proxy.set_target(Some(w.server.addr));

    let back = format!("connected to 127.0.0.1:{}", proxy.port());
    let s = wait_long(&t, "connected again, history shown, the draft kept", |s| {
        s.row(22).contains(&back)
            && has_entry(s, "<bob> said on the new server")
            && s.row(23) == draft
    });
    // (The notice wraps at 80 columns.)
    assert!(
        has_entry(
            &s,
            "*** session not resumed: history lost (the server restarted"
        ),
        "{}",
        s.dump()
    );
    let row = entry_row(&s, "<bob> said on the new server").unwrap();
    let cell = u16::try_from(row).unwrap();
    let dim = t.dim_at(cell, 7);
    assert_eq!(dim, Some(true), "history is dimmed\n{}", s.dump());
    bob.expect_line("*** alice has joined");
    bob.send("live now");
    let s = t.wait_screen("bob's live message", |s| has_entry(s, "<bob> live now"));
    let live = u16::try_from(entry_row(&s, "<bob> live now").unwrap()).unwrap();
    assert_eq!(t.dim_at(live, 7), Some(false), "live is not dimmed");
}

/// Whether a file in the test's saved sessions holds a session of `name`
/// (whatever the file is called).
fn has_saved_session(dir: &Path, name: &str) -> bool {
    let sessions = dir.join("data").join("imchat").join("sessions");
    let Ok(entries) = fs::read_dir(sessions) else {
        return false;
    };
    entries.flatten().take(100).any(|e| {
        fs::read_to_string(e.path())
            .is_ok_and(|t| t.lines().any(|l| l == format!("name={name}")) && t.contains("token="))
    })
}

/// Waits until `name` has a saved session.
fn wait_saved(w: &World, name: &str, c: &Client) {
    let deadline = Instant::now() + TIMEOUT;
    for _ in 0..1000 {
        if has_saved_session(w.dir.path(), name) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s session was never saved\n{}",
            c.report()
        );
        thread::sleep(Duration::from_millis(20));
    }
    panic!("{name}'s session was never saved\n{}", c.report());
}

/// The longest name there is, in a script whose characters take 9 bytes
/// each once percent-encoded: its session file still fits in a file
/// name, and `kill -9` then a restart takes the session back.
#[test]
fn a_killed_client_with_a_long_non_latin_name_takes_its_session_back() {
    let w = World::new("kill-long-name");
    let port = w.server.port();
    let name = "字".repeat(32);
    let mut first = w.client(&name);
    let mut bob = w.client("bob");
    first.expect_line("*** bob has joined");
    let carol = witness(&w, &first);
    wait_saved(&w, &name, &first);
    first.kill();
    bob.send("while away");
    carol.expect_line("<bob> while away");

    let again = w.spawn_client(&[&name, "127.0.0.1", &port.to_string()]);
    let (resumed, _) = again.expect_from(0, "`*** resumed`", |l| l == "*** resumed");
    again.expect_from(resumed, "`<bob> while away`", |l| {
        missed(l) == Some("<bob> while away")
    });
    bob.assert_no_line("the name leaving", |l| l.starts_with("*** 字"));
}
/// Killed while connected to `127.0.0.1`, started again with `localhost`
/// (the same server, spelt otherwise): the session comes back.
#[test]
fn a_killed_client_started_again_with_another_spelling_of_its_host_takes_its_session_back() {
    let w = World::new("kill-host-spelling");
    let port = w.server.port();
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    let carol = witness(&w, &alice);
    wait_saved(&w, "alice", &alice);
    alice.kill();
    bob.send("while away");
    carol.expect_line("<bob> while away");

    let alice = w.spawn_client(&["alice", "localhost", &port.to_string()]);
    let (resumed, _) = alice.expect_from(0, "`*** resumed`", |l| l == "*** resumed");
    alice.expect_from(resumed, "`<bob> while away`", |l| {
        missed(l) == Some("<bob> while away")
    });
    bob.assert_no_line("alice leaving", |l| l.starts_with("*** alice has left"));
}

/// A second client started with the name of one that runs, under another
/// spelling of its host, does not take its session away (the file is
/// locked by the one running): it is refused the name, and the first
/// stays connected.
#[test]
fn a_second_client_under_another_spelling_of_the_host_leaves_the_running_one_alone() {
    let w = World::new("spelling-running");
    let port = w.server.port();
    let alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    wait_saved(&w, "alice", &alice);

    let mut second = w.spawn_client(&["alice", "localhost", &port.to_string()]);
    let err = second.expect_exit_code(1);
    // The refusal says why the saved session was not presented: the user
    // is the one holding the name, from this machine.
    assert!(
        err.iter().any(|l| l.contains("already taken")
            && l.ends_with(
                "; another client runs on this machine with this name and server, and keeps its saved session to itself"
            )),
        "{}",
        second.report()
    );
    bob.send("still there?");
    alice.expect_line("<bob> still there?");
    alice.assert_no_line("a lost connection", |l| l.starts_with("*** disconnected"));
    second.assert_no_line("the first one's session", |l| l == "*** resumed");
}

/// A killed client whose saved session file was damaged meanwhile (a
/// disk that filled up, an editor): started again, it cannot take the
/// session back, and the refusal of its name as taken says so, naming
/// the file, rather than leaving the user to think someone else has the
/// name. A damaged file for a name the server does not hold gives a
/// fresh join, with a line saying the session was not taken back.
#[test]
fn a_damaged_saved_session_is_named_when_it_cannot_be_taken_back() {
    let w = World::new("damaged-session");
    let port = w.server.port();
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    wait_saved(&w, "alice", &alice);
    alice.kill();
    let sessions = w.dir.path().join("data").join("imchat").join("sessions");
    let file = sessions.join(format!("alice@127.0.0.1_{port}"));
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, &text[..text.len() / 2]).unwrap();

    let mut again = w.spawn_client(&["alice", "127.0.0.1", &port.to_string()]);
    let err = again.expect_exit_code(1);
    let said = format!(
        "; the session saved in {} was not taken back: not a saved session of alice on 127.0.0.1:{port}",
        file.display()
    );
    assert!(
        err.iter()
            .any(|l| l.contains("already taken") && l.ends_with(&said)),
        "{}",
        again.report()
    );

    let carol = sessions.join(format!("carol@127.0.0.1_{port}"));
    fs::write(&carol, "imchat-session 1\nserver=127.0.0.1:").unwrap();
    let carol_client = w.client("carol");
    carol_client.expect_line(&format!(
        "*** the session saved in {} was not taken back: not a saved session of carol on 127.0.0.1:{port}; starting a new session",
        carol.display()
    ));
    bob.expect_line("*** carol has joined");
}

/// A session that cannot be saved names what is in the way, in words: a
/// file where the sessions' folder goes, a folder where the session's
/// file goes. The line said before "File exists (os error 17)", which
/// sent the user looking for a file that exists nowhere it would look.
#[test]
fn a_session_that_cannot_be_saved_names_what_is_in_the_way() {
    let w = World::new("unsaved-named");
    let port = w.server.port();
    let imchat = w.dir.path().join("data").join("imchat");
    fs::create_dir_all(&imchat).unwrap();
    let sessions = imchat.join("sessions");
    fs::write(&sessions, b"in the way").unwrap();
    let alice = w.client("alice");
    alice.expect_line(&format!(
        "*** cannot save the session ({} is a file, not a folder): a restart after a crash or kill -9 will not resume it",
        sessions.display()
    ));
    drop(alice);

    fs::remove_file(&sessions).unwrap();
    let file = sessions.join(format!("bob@127.0.0.1_{port}"));
    fs::create_dir_all(&file).unwrap();
    let bob = w.client("bob");
    bob.expect_line(&format!(
        "*** cannot save the session ({} is a folder, not a file): a restart after a crash or kill -9 will not resume it",
        file.display()
    ));
    assert!(
        !sessions.join(format!("bob@127.0.0.1_{port}.tmp")).exists(),
        "a save that failed left its temporary file: {}",
        bob.report()
    );
}

/// A saved session whose next client id is behind the ids its session
/// used (an older copy of the file: a backup put back, the folder copied
/// from another machine while its client went on, or a damaged file): the
/// server takes every such id for a copy of a message it had, answers it
/// as one and delivers it to nobody. A restarted client used to send
/// every line so, without a word; its first ids now lie past any a run
/// before it took.
#[test]
fn a_saved_session_with_an_old_next_client_id_still_delivers_what_is_sent() {
    let w = World::new("old-client-id");
    let port = w.server.port();
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    wait_saved(&w, "alice", &alice);
    let old = saved_text(w.dir.path(), "alice", port).expect("saved");
    for i in 0..3 {
        alice.send(&format!("before {i}"));
        bob.expect_line(&format!("<alice> before {i}"));
    }
    alice.kill();
    let file = w
        .dir
        .path()
        .join("data")
        .join("imchat")
        .join("sessions")
        .join(format!("alice@127.0.0.1_{port}"));
    let now = fs::read_to_string(&file).expect("saved");
    let token = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("token="))
            .map(str::to_owned)
    };
    assert_eq!(token(&old), token(&now), "one session");
    // The ids of the copy from before the three messages were sent.
    let behind: String = now
        .lines()
        .map(|l| {
            if l.starts_with("next_client_id=") {
                "next_client_id=1".to_owned()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    fs::write(&file, behind).unwrap();

    let mut alice = w.spawn_client(&["alice", "127.0.0.1", &port.to_string()]);
    alice.expect_line("*** resumed");
    alice.send("after the restart");
    bob.expect_line("<alice> after the restart");
}

/// The text of `name`'s saved session on `port`, if there is one.
fn saved_text(dir: &Path, name: &str, port: u16) -> Option<String> {
    let path = dir
        .join("data")
        .join("imchat")
        .join("sessions")
        .join(format!("{name}@127.0.0.1_{port}"));
    fs::read_to_string(path).ok()
}

/// A quit while the client reconnects cannot tell the server; the session
/// stays on disk marked as quit, and the next start tells the server: the
/// others see the user leave with the parting text and join again, the
/// user gets a fresh join (not the session quit), and a fresh session is
/// saved.
#[test]
fn a_quit_while_reconnecting_is_told_to_the_server_by_the_next_start() {
    const DB: [&str; 2] = ["--history-db", "history.db"];
    let mut w = World::with_args("quit-offline", &DB);
    let port = w.server.port();
    // Alice's data folder is the piped clients' (`data/` in the folder).
    let mut t = Term::spawn(
        w.dir.path(),
        w.dir.path(),
        &["alice", "127.0.0.1", &port.to_string()],
        80,
        24,
    );
    let connected = format!("connected to 127.0.0.1:{port}");
    t.wait_screen("connected", |s| s.row(22).contains(&connected));
    let mut bob = w.client_on("bob", port, &["--reconnect"]);
    bob.send("before the restart");
    t.wait_screen("bob's line", |s| has_entry(s, "<bob> before the restart"));
    wait_saved(&w, "alice", &bob);
    let token = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("token="))
            .map(str::to_owned)
    };
    let first = saved_text(w.dir.path(), "alice", port).expect("saved");

    w.server.stop_by_sigterm();
    t.wait_screen("reconnecting", |s| s.row(22).contains("reconnecting"));
    t.type_str("/quit bye all\r");
    t.expect_exit_code(0);
    let marked = saved_text(w.dir.path(), "alice", port).expect("kept");
    assert_eq!(token(&marked), token(&first), "the same session: {marked}");
    assert!(marked.lines().any(|l| l == "quit=bye all"), "{marked}");

    let shared = w.shared();
    w.server = Server::start_on(w.dir.path(), &shared, &DB, port);
    bob.expect_line("*** resumed");
    let alice = w.spawn_client(&["alice", "127.0.0.1", &port.to_string()]);
    alice.expect_line("*** your last run quit while the server was away: the server is told now");
    alice.expect_line(&format!("*** connected to 127.0.0.1:{port} as alice"));
    alice.expect(" history", |l| {
        l.starts_with("[history ") && l.ends_with("<bob> before the restart")
    });
    let (left, _) = bob.expect_from(0, "alice's quit", |l| l == "*** alice has left (bye all)");
    bob.expect_from(left, "alice's new join", |l| l == "*** alice has joined");
    alice.assert_no_line("the session quit given back", |l| {
        l.starts_with("*** resumed") || l.starts_with("*** session not resumed")
    });
    bob.assert_no_line("a lost connection", |l| l.contains("connection lost"));
    // A fresh session, not marked.
    let deadline = Instant::now() + TIMEOUT;
    let fresh = loop {
        let text = saved_text(w.dir.path(), "alice", port).unwrap_or_default();
        if token(&text).is_some_and(|t| Some(t) != token(&first)) {
            break text;
        }
        assert!(Instant::now() < deadline, "no fresh session saved: {text}");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!fresh.contains("quit="), "{fresh}");
}

/// A copy of a saved session, run from another data folder while the
/// first client is still connected, takes the session over: the first
/// client is told so in one line and stops, without reconnecting (which
/// would take the session back, or end it and join afresh); the others
/// see no one leave or join.
#[test]
fn a_client_whose_session_a_copy_took_over_says_so_and_stops() {
    let w = World::new("copied-session");
    let port = w.server.port();
    let mut bob = w.client("bob");
    let mut alice = w.client_on("alice", port, &["--reconnect"]);
    alice.expect_prefix("Welcome to imchat, alice!");
    bob.expect_line("*** alice has joined");
    wait_saved_past(&w, "alice", 0);

    let other = common::TempDir::new("copied-session-b");
    common::copy_dir_files(
        &w.dir.join("data").join("imchat").join("sessions"),
        &other.join("data").join("imchat").join("sessions"),
    );
    let copy = common::Client::spawn(other.path(), &["alice", "127.0.0.1", &port.to_string()]);
    copy.expect_line("*** resumed");

    let err = alice.expect_exit_code(1);
    let told = "your session was resumed from another connection (address 127.0.0.1)";
    assert_eq!(
        common::non_empty(&err),
        [format!("imchat-client: {told}")],
        "{}",
        alice.report()
    );
    alice.expect_line(&format!("error: {told}"));
    alice.assert_no_line("a reconnect", |l| {
        l.contains("reconnecting") || l.contains("not resumed")
    });
    // Once the copy has bob's next line, any leave or join of hers
    // would have reached bob before it.
    bob.send("still here");
    copy.expect_line("<bob> still here");
    let seen: Vec<String> = bob
        .out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("*** alice has"))
        .collect();
    assert_eq!(
        seen,
        ["*** alice has joined"],
        "only her first join\n{}",
        bob.report()
    );
}

/// Copies the files of the history database `history.db` (the database
/// and its journal files) from folder `from` to folder `to`, removing
/// from `to` those `from` does not have.
fn copy_history_db(from: &Path, to: &Path) {
    let db_files = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("history.db"))
            .collect()
    };
    for name in db_files(to) {
        fs::remove_file(to.join(name)).unwrap();
    }
    for name in db_files(from) {
        fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// A server restarted on an older copy of its history database (a backup
/// put back) holds older tokens than its clients and fewer ids than they
/// saw: each client is told its history was lost and joins afresh under
/// its name at once, instead of being refused it as taken until the
/// grace period runs out: those that reconnect on their own
/// (`--reconnect`) and one started again on its saved session.
#[test]
fn a_server_restarted_on_an_older_copy_of_its_database_lets_its_clients_join_at_once() {
    const DB: [&str; 2] = ["--history-db", "history.db"];
    let mut w = World::with_args("restored-db", &DB);
    let port = w.server.port();
    let mut alice = w.client_on("alice", port, &["--reconnect"]);
    let mut bob = w.client_on("bob", port, &["--reconnect"]);
    alice.expect_line("*** bob has joined");
    // carol runs without --reconnect: started again, she resumes by her
    // saved session.
    let port_text = port.to_string();
    let carol_args = ["carol", "127.0.0.1", port_text.as_str()];
    let mut carol = w.client_on("carol", port, &[]);
    wait_saved(&w, "carol", &carol);
    w.server.stop_by_sigterm();
    carol.expect_exit();
    let backup = common::TempDir::new("restored-db-backup");
    copy_history_db(w.dir.path(), backup.path());

    let shared = w.shared();
    w.server = Server::start_on(w.dir.path(), &shared, &DB, port);
    alice.expect_line("*** resumed");
    bob.expect_line("*** resumed");
    let mut carol = w.spawn_client(&carol_args);
    carol.expect_line("*** resumed");
    let saved = saved_last_seen(w.dir.path(), "carol", port).unwrap_or(0);
    // Each sees the others' lines: all saw ids the copy never gave.
    for n in 0..10 {
        let text = format!("line {n}");
        let seen = |l: &str| l.ends_with(&format!("> {text}"));
        if n % 2 == 0 {
            alice.send(&text);
            bob.expect(&text, seen);
        } else {
            bob.send(&text);
            alice.expect(&text, seen);
        }
        carol.expect(&text, seen);
    }
    wait_saved_past(&w, "carol", saved);
    w.server.stop_by_sigterm();
    carol.expect_exit();
    copy_history_db(backup.path(), w.dir.path());

    w.server = Server::start_on(w.dir.path(), &shared, &DB, port);
    let carol = w.spawn_client(&carol_args);
    for c in [&carol, &alice, &bob] {
        c.expect("history lost", |l| {
            l.starts_with("*** session not resumed: history lost (the server's history ends at id ")
                && l.ends_with(": it was restored from an older copy)")
        });
    }
    alice.send("after the restore");
    bob.expect_line("<alice> after the restore");
    carol.expect_line("<alice> after the restore");
    for c in [&alice, &bob, &carol] {
        c.assert_no_line("a refusal", |l| l.contains("already taken"));
    }
}

/// `alice`'s saved session file on `w`'s server, once it is there
/// (not only a temporary file being written).
fn alice_saved(w: &World) -> std::path::PathBuf {
    let port = w.server.port();
    let file = w
        .dir
        .path()
        .join("data")
        .join("imchat")
        .join("sessions")
        .join(format!("alice@127.0.0.1_{port}"));
    for _ in 0..500 {
        if file.exists() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    file
}

/// `alice`'s saved session file on `w`'s server with its `key=` line
/// given `value` instead.
fn edit_saved(w: &World, key: &str, value: &str) {
    let file = alice_saved(w);
    let text = fs::read_to_string(&file).unwrap_or_else(|e| {
        let dir = file.parent().unwrap();
        let names: Vec<_> = fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!("{}: {e}; there: {names:?}", file.display())
    });
    let prefix = format!("{key}=");
    assert!(text.lines().any(|l| l.starts_with(&prefix)), "{text}");
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&file, edited).unwrap();
}

/// A saved session whose token is not the session's (an edited or
/// mixed-up file) is refused as the name taken; the client is that
/// session's owner, so it says its saved session was not accepted, not
/// that someone's session waits for its client to come back.
#[test]
fn a_saved_session_with_a_wrong_token_says_it_was_not_accepted() {
    let w = World::new("wrong-token");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    wait_saved(&w, "alice", &alice);
    alice.kill();
    edit_saved(&w, "token", &"5a".repeat(16));

    let mut again = w.spawn_client(&["alice", "127.0.0.1", &port]);
    let err = again.expect_exit_code(1);
    assert_eq!(
        common::non_empty(&err),
        ["imchat-client: the saved session was not accepted: its token does not match the session the server holds for 'alice' (or it expired, and the name is someone else's now)"],
        "{}",
        again.report()
    );
    drop(bob);
}

/// A saved session the server refused (its token not the session's) is
/// not kept: the next start does not present it again (each time a
/// failed resume counted against the address), and is refused as any
/// client asking for a name held is.
#[test]
fn a_refused_saved_session_is_not_presented_again() {
    let w = World::new("refused-forgotten");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    wait_saved(&w, "alice", &alice);
    alice.kill();
    edit_saved(&w, "token", &"5a".repeat(16));

    let mut again = w.spawn_client(&["alice", "127.0.0.1", &port]);
    again.expect_exit_code(1);
    assert!(
        !has_saved_session(w.dir.path(), "alice"),
        "the refused session is still saved\n{}",
        again.report()
    );
    let mut third = w.spawn_client(&["alice", "127.0.0.1", &port]);
    let err = third.expect_exit_code(1);
    let err = common::non_empty(&err);
    assert_eq!(err.len(), 1, "{}", third.report());
    assert!(
        err[0].contains("already taken") && !err[0].contains("saved session"),
        "{}",
        third.report()
    );
    drop(bob);
}

/// A saved session of another history (its `epoch=` not the server's)
/// joins afresh, and says its session was not accepted for that, not
/// that the server restarted without its database (it did not).
#[test]
fn a_saved_session_of_another_history_says_it_was_not_accepted() {
    let w = World::with_args("wrong-epoch", &["--grace-secs", "1"]);
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    wait_saved(&w, "alice", &alice);
    alice_saved(&w);
    alice.kill();
    // Past the grace: no session of hers is left to take the name.
    thread::sleep(Duration::from_secs(3));
    edit_saved(&w, "epoch", "12345");

    let again = w.spawn_client(&["alice", "127.0.0.1", &port]);
    again.expect_line(
        "*** session not resumed: the saved session was not accepted: the server's history is not the one it was saved against (the server restarted without its database, or the session file is not this server's)",
    );
}
