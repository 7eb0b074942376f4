//! End-to-end tests: the real `imchat-server` and `imchat-client` binaries on
//! 127.0.0.1 (port picked by the OS), driven as a user would, checked
//! against the UI contract (`notes/ui-contract.md`): the exact stdout and
//! stderr lines and exit codes.
//!
//! Each test has its own temp folder (shared folder copy, download folders,
//! server log) and its own server; every wait has a deadline; every process
//! is killed by its handle when the test ends, passing or failing.

mod common;

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{
    fake_welcome, list_files, non_empty, pseudo_random_bytes, sample_shared_dir, Client, Raw,
    RawEvent, TempDir, World, QUIET, TIMEOUT,
};
use imchat_core::{ClientMessage, FileStart, Recipient, ServerMessage};

/// Has `speaker` broadcast `marker` and waits until every listener shows
/// it: since each connection is ordered, anything routed to a listener
/// before the marker has been printed by then.
fn barrier(speaker: &mut Client, from: &str, marker: &str, listeners: &[&Client]) {
    speaker.send(marker);
    for l in listeners {
        l.expect_line(&format!("<{from}> {marker}"));
    }
}

/// Waits until the `.part` of `bot`'s download of `name` holds data.
fn wait_for_part_data(w: &World, bot: &Client, name: &str) {
    let part = w.dir.join("bot").join(format!("{name}.part"));
    let deadline = Instant::now() + TIMEOUT;
    while !fs::metadata(&part).is_ok_and(|m| m.len() > 0) {
        assert!(Instant::now() < deadline, "no data came: {}", bot.report());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A line of a `--json` client as JSON (a line that is not fails the test).
fn parse(l: &str) -> serde_json::Value {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))
}

/// Waits until the `--json` client `carol` has joined and sees what
/// `alice` says: her roster, then alice's word after a barrier.
fn json_joined(carol: &Client, alice: &mut Client) {
    carol.expect("carol's roster", |l| parse(l)["all"].is_array());
    barrier(alice, "alice", "here", &[]);
    carol.expect("alice's word", |l| parse(l)["text"] == "here");
}

#[test]
fn welcome_and_connection_line() {
    let w = World::new("welcome");
    let alice = w.client("alice");
    let welcome = alice.expect_prefix("Welcome to imchat, alice!");
    assert_eq!(
        welcome, "Welcome to imchat, alice! Type /help for the commands.",
        "the server's default welcome text"
    );
    let line = w.server.expect("`connection from 127.0.0.1:<port>`", |l| {
        l.starts_with("connection from ")
    });
    let port = line
        .strip_prefix("connection from 127.0.0.1:")
        .and_then(|p| p.parse::<u16>().ok());
    assert!(
        matches!(port, Some(p) if p != 0),
        "expected `connection from 127.0.0.1:<port>`, got {line:?}"
    );
    w.server
        .expect("`alice joined from 127.0.0.1:<port>`", |l| {
            l.starts_with("alice joined from 127.0.0.1:")
        });
    // The second stdout line names the shared folder and where it came from.
    let lines = w.server.out.lines();
    let second = lines.get(1).map_or("", String::as_str);
    assert!(
        second.starts_with("shared folder: ")
            && second.ends_with(" (--shared-dir)")
            && second.contains(&*w.dir.path().file_name().unwrap().to_string_lossy()),
        "server's second line: expected `shared folder: {} (--shared-dir)`, got {second:?}\n{}",
        w.shared().display(),
        w.server.report()
    );
}

#[test]
fn joins_are_announced() {
    let w = World::new("joins");
    let alice = w.client("alice");
    let _bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    let _carol = w.client("carol");
    alice.expect_line("*** carol has joined");
    alice.assert_no_line("nobody announces alice to herself", |l| {
        l == "*** alice has joined"
    });
}

/// The full-screen client names who is online on joining when its nick
/// list is not shown; piped output, which scripts parse, stays as it was:
/// a script asks `/who`. `--json` gives the roster as before, and no notice.
#[test]
fn a_piped_or_json_join_prints_no_list_of_who_is_online() {
    let w = World::new("join-quiet");
    let port = w.server.port().to_string();
    let mut bob = w.client("bob");
    let mut alice = w.client("alice");
    let carol = w.spawn_client(&["--json", "carol", "127.0.0.1", &port]);
    carol.expect("the roster from the /who on connect", |l| {
        parse(l)["all"] == serde_json::json!(["alice", "bob", "carol"])
    });
    barrier(&mut bob, "bob", "all here", &[&alice]);
    carol.expect("bob's line", |l| parse(l)["text"] == "all here");
    alice.assert_no_line("an unasked list of who is online", |l| {
        l.starts_with("*** online")
    });
    carol.assert_no_line("a notice of who is online", |l| l.contains("online ("));
    alice.send("/who");
    alice.expect_line("*** online (3): alice, bob, carol");
}

#[test]
fn broadcast_reaches_all_others_but_not_the_sender() {
    let w = World::new("broadcast");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    let carol = w.client("carol");
    alice.send("hello all");
    bob.expect_line("<alice> hello all");
    carol.expect_line("<alice> hello all");
    barrier(&mut bob, "bob", "bob was here", &[&alice, &carol]);
    alice.assert_no_line("the sender gets no echo", |l| l.contains("hello all"));

    alice.send("/broadcast explicit one");
    bob.expect_line("<alice> explicit one");
    carol.expect_line("<alice> explicit one");
    barrier(&mut bob, "bob", "second marker", &[&alice]);
    alice.assert_no_line("no echo of /broadcast", |l| l.contains("explicit one"));
}

#[test]
fn unicast_reaches_only_its_target() {
    let w = World::new("unicast");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let carol = w.client("carol");
    alice.send("/msg bob secret");
    alice.send("/unicast bob s2");
    alice.send("@bob s3");
    bob.expect_line("<alice> (private) secret");
    bob.expect_line("<alice> (private) s2");
    bob.expect_line("<alice> (private) s3");
    barrier(&mut alice, "alice", "public marker", &[&bob, &carol]);
    for text in ["secret", "s2", "s3"] {
        carol.assert_no_line("a private message to bob", |l| {
            l.starts_with("<alice>") && l.ends_with(&format!(" {text}"))
        });
        alice.assert_no_line("no echo of a private message", |l| {
            l.starts_with("<alice>") && l.contains(text)
        });
    }
}

#[test]
fn mode_switching() {
    let w = World::new("mode");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let mut carol = w.client("carol");
    // Named as typed, shown with the name bob registered.
    alice.send("/mode unicast BOB");
    alice.expect_line("*** mode: unicast to bob");
    alice.send("just for bob");
    bob.expect_line("<alice> (private) just for bob");
    alice.send("/mode broadcast");
    alice.expect_line("*** mode: broadcast");
    alice.send("for everyone");
    bob.expect_line("<alice> for everyone");
    carol.expect_line("<alice> for everyone");
    carol.assert_no_line("the unicast-mode message", |l| l.contains("just for bob"));
    bob.assert_no_line("unicast mode sends privately", |l| {
        l == "<alice> just for bob"
    });
    // The one the mode names leaves: alice is told where her lines go.
    alice.send("/mode unicast carol");
    alice.expect_line("*** mode: unicast to carol");
    carol.send("/quit");
    alice.expect_line(
        "*** your lines still go to carol, who is not online: /mode broadcast to talk to everyone",
    );
}

/// Sends `signal` (`TERM`, `HUP`, `INT`, `STOP`, `CONT`) to the client by
/// its pid.
fn signal(c: &Client, signal: &str) {
    let sent = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(c.pid().to_string())
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} failed");
}

/// A client ended by a signal (the terminal closed: SIGHUP; a plain
/// `kill`: SIGTERM; SIGINT) quits as `/quit` does: the others see it leave
/// at once, not after the minute a lost connection waits for a resume.
#[test]
fn a_client_ended_by_a_signal_is_seen_leaving_at_once() {
    let w = World::new("signals");
    let bob = w.client("bob");
    for (name, sig) in [("alice", "TERM"), ("carol", "HUP"), ("dave", "INT")] {
        let mut c = w.client(name);
        bob.expect_line(&format!("*** {name} has joined"));
        signal(&c, sig);
        bob.expect_line(&format!("*** {name} has left"));
        let status = c.expect_exit();
        assert!(
            status.code().is_some(),
            "{name}: killed by the signal: {status:?}"
        );
    }
}

#[test]
fn unknown_user_is_an_error_and_the_connection_stays() {
    let w = World::new("unknown");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.send("/msg nobody hi");
    let err = alice.expect_prefix("error: ");
    assert!(err.len() > "error: ".len(), "empty error text: {err:?}");
    alice.send("still here");
    bob.expect_line("<alice> still here");
    assert!(alice.is_running(), "alice's client quit after an error");
    bob.assert_no_line("nothing reached bob from the failed unicast", |l| {
        l == "<alice> hi" || l == "<alice> (private) hi"
    });
}

#[test]
fn who_lists_everyone_sorted_ignoring_case() {
    let w = World::new("who");
    let carol = w.client("carol");
    let _bob = w.client("Bob");
    let mut alice = w.client("alice");
    carol.expect_line("*** alice has joined");
    alice.send("/who");
    alice.expect_line("*** online (3): alice, Bob, carol");
}

#[test]
fn files_lists_the_shared_folder_with_sizes() {
    let w = World::new("files");
    // One byte is `1 byte`, not `1 bytes`.
    fs::write(w.shared().join("one-byte.txt"), b"1").expect("write a shared file");
    let mut alice = w.client("alice");
    let files = list_files(&w.shared());
    assert!(files.len() >= 5, "sample files missing: {files:?}");
    alice.send("/files");
    alice.expect_line(&format!(
        "*** shared folder access granted: {} files",
        files.len()
    ));
    let head = alice.expect_line("*** shared files:");
    for (name, size) in &files {
        let shown = match size {
            1 => "1 byte".to_owned(),
            n => format!("{n} bytes"),
        };
        alice.expect_from(head + 1, &format!("listing {name} with {shown}"), |l| {
            l == format!("    {name}  ({shown})")
        });
    }
}

/// A name that starts with blanks is listed in quotes, as `/download`
/// takes it (unquoted, the blanks after the command are not part of it).
#[test]
fn a_shared_name_that_starts_with_blanks_is_listed_as_it_is_typed() {
    let w = World::new("files-blank");
    fs::write(w.shared().join("  notes.txt"), b"blank start").expect("write a shared file");
    let mut alice = w.client("alice");
    alice.send("/files");
    let head = alice.expect_line("*** shared files:");
    let (_, line) = alice.expect_from(head + 1, "the name in quotes", |l| l.contains("notes.txt"));
    assert_eq!(line, "    \"  notes.txt\"  (11 bytes)");
    alice.send(&format!("/download {}", &line[4..line.len() - 12]));
    alice.expect_prefix("*** downloaded   notes.txt (11 bytes) to ");
    let got = fs::read(w.dir.join("alice").join("  notes.txt")).expect("the download");
    assert_eq!(got, b"blank start");
}

#[test]
fn downloads_of_every_kind_of_file_are_byte_identical() {
    let w = World::new("download");
    let mut alice = w.client("alice");
    let files = list_files(&sample_shared_dir());
    assert!(
        files.iter().any(|(n, _)| n.contains(' ')),
        "the samples should include a name with a space: {files:?}"
    );
    // All at once: several downloads may run at the same time.
    for (name, _) in &files {
        alice.send(&format!("/download {name}"));
    }
    for (name, size) in &files {
        alice.expect(&format!("download of {name} done"), |l| {
            l.starts_with(&format!("*** downloaded {name} ({size} bytes) to "))
        });
        alice.expect_line(&format!("*** downloading {name} ({size} bytes)"));
        let got = fs::read(w.dir.join("alice").join(name))
            .unwrap_or_else(|e| panic!("{name} not in <tmp>/alice/: {e}\n{}", alice.report()));
        let want = fs::read(sample_shared_dir().join(name)).expect("read sample");
        assert!(
            got == want,
            "{name}: downloaded bytes differ from the source"
        );
    }
    let leftovers: Vec<_> = fs::read_dir(w.dir.join("alice"))
        .expect("download folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
    alice.assert_no_line("no transfer failed", |l| {
        l.starts_with("error: transfer of")
    });
}

#[test]
fn downloads_never_escape_the_shared_folder() {
    let w = World::new("escape");
    let secret = w.dir.join("outside-secret.txt");
    fs::write(&secret, "TOP-SECRET-CONTENT outside the shared folder\n").expect("secret");
    std::os::unix::fs::symlink(&secret, w.shared().join("escape.txt")).expect("symlink");
    fs::create_dir(w.shared().join("subdir")).expect("subdir");
    fs::write(w.shared().join("subdir").join("inner.txt"), "inner").expect("inner");
    fs::write(w.shared().join("plain.txt"), "a plain shared file\n").expect("plain");
    let mut alice = w.client("alice");

    // (a) the client refuses an escaping name before sending anything.
    alice.send("/download ../../etc/passwd");
    alice.expect_prefix("error: ");

    // (b) the server refuses a symlink out, a folder, and a missing name.
    for name in ["escape.txt", "subdir", "missing.bin"] {
        alice.send(&format!("/download {name}"));
        let fail = format!("error: transfer of {name} failed: ");
        let done = format!("*** downloaded {name} (");
        let line = alice.expect(&format!("the outcome of /download {name}"), |l| {
            l.starts_with(&fail) || l.starts_with(&done)
        });
        assert!(
            line.starts_with(&fail),
            "/download {name}: expected `{fail}<reason>`, got {line:?}"
        );
    }
    // A regular file next to them still downloads.
    alice.send("/download plain.txt");
    alice.expect_prefix("*** downloaded plain.txt (20 bytes) to ");
    let dl = w.dir.join("alice");
    for name in ["escape.txt", "subdir", "missing.bin", "passwd"] {
        assert!(
            !dl.join(name).exists(),
            "{name} exists in the download folder"
        );
    }
    alice.assert_no_line("the secret never shows", |l| l.contains("TOP-SECRET"));

    // (c) a raw client sends a Download frame whose name is `../secret`,
    // built by hand: [len u32][0x06][id u32][name len u8][name][offset u64].
    let mut raw = Raw::join(w.server.addr, "rawuser");
    let name = b"../outside-secret.txt";
    let mut body = vec![imchat_core::types::DOWNLOAD];
    body.extend_from_slice(&1u32.to_be_bytes());
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.extend_from_slice(&0u64.to_be_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.send_bytes(&frame);
    let (answer, seen) = raw.recv_until(TIMEOUT, |m| {
        matches!(
            m,
            ServerMessage::Error { .. } | ServerMessage::Refused { .. }
        )
    });
    let mut seen = seen;
    seen.extend(raw.drain(QUIET));
    for ev in &seen {
        if let RawEvent::Msg(m) = ev {
            assert!(
                !matches!(
                    m,
                    ServerMessage::FileStart(FileStart { .. })
                        | ServerMessage::Chunk(_)
                        | ServerMessage::End(_)
                ),
                "the server started sending a file for `../`: {seen:?}"
            );
        }
    }
    assert!(
        answer.is_some(),
        "no Error/Refused for a `../` download; saw {seen:?}"
    );

    // The server still serves a normal client.
    let mut bob = w.client("bob");
    bob.send("/who");
    bob.expect("a who list with alice and bob", |l| {
        l.starts_with("*** online (") && l.contains("alice, bob")
    });
    bob.send("/download welcome.txt");
    bob.expect_prefix("*** downloaded welcome.txt (");
}

/// A named pipe, a folder: refused at once, and the client goes on (a pipe
/// opened for reading would wait for a writer and hold the client).
#[test]
fn sendfile_of_a_named_pipe_or_a_folder_is_refused_at_once() {
    let w = World::new("sendfile-fifo");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let fifo = w.dir.join("a-pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    alice.send(&format!("/sendfile {} bob", fifo.display()));
    alice.expect_line(&format!("error: {} is not a file", fifo.display()));
    alice.send(&format!("/sendfile {} bob", w.dir.path().display()));
    alice.expect_line(&format!("error: {} is not a file", w.dir.path().display()));
    alice.send("still here");
    bob.expect_line("<alice> still here");
}

/// `/sendfile` takes the rest of the line as the path, as `/download`
/// does, unless its last word is an online user: `my file.txt` unquoted
/// is one file, not `my` for a user `file.txt`; `--` ends the options.
#[test]
fn sendfile_takes_the_rest_of_the_line_as_the_path() {
    let w = World::new("sendfile-rest");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let _carol = w.client("carol");
    fs::write(w.dir.join("my file.txt"), b"spaced\n").expect("my file.txt");
    fs::write(w.dir.join("-rf.txt"), b"dashed\n").expect("-rf.txt");
    alice.send("/sendfile my file.txt");
    alice.expect_line("*** sent my file.txt to 2 user(s)");
    bob.expect_prefix("*** received my file.txt (7 bytes) from alice, saved to ");
    alice.send("/sendfile -- -rf.txt");
    alice.expect_line("*** sent -rf.txt to 2 user(s)");
    // Still to one user when the last word is one online.
    alice.send("/sendfile my file.txt bob");
    alice.expect_line("*** sent my file.txt to 1 user(s)");
    alice.assert_no_line("an error", |l| l.starts_with("error: "));
}

/// A push the server refuses at once (no such user online, no one else
/// at all) is told by its error alone, as a message to no one is: the
/// client said it offered the file first, then that it could not.
#[test]
fn sendfile_to_no_one_online_says_the_error_alone() {
    let w = World::new("sendfile-nobody");
    let mut alice = w.client("alice");
    fs::write(w.dir.join("notes.md"), b"notes\n").expect("notes.md");
    alice.send("/sendfile notes.md zed");
    alice.expect("the refusal", |l| {
        l.starts_with("error: ") && l.contains("no user named 'zed' is online")
    });
    alice.send("/sendfile notes.md");
    alice.expect("the refusal", |l| {
        l.starts_with("error: ") && l.contains("no one else is online")
    });
    alice.assert_no_line("an offer refused", |l| l.contains("offering"));
    // Once taken, the offer is said as ever.
    let _bob = w.client("bob");
    alice.send("/sendfile notes.md bob");
    alice.expect_line("*** offering notes.md (6 bytes); it is sent once accepted");
    alice.expect_line("*** sent notes.md to 1 user(s)");
}

/// A file whose name the receivers could not save under (a dot file, a
/// character Windows refuses) is sent under one they can, and the sender
/// is told: it was refused ("invalid file name"), so a `.vimrc` could not
/// be sent at all.
#[test]
fn sendfile_of_a_dot_file_sends_it_under_a_name_without_the_dot() {
    let w = World::new("sendfile-dotfile");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    fs::write(w.dir.join(".vimrc"), b"set number\n").expect(".vimrc");
    fs::write(w.dir.join("a?b.txt"), b"odd\n").expect("a?b.txt");
    alice.send("/sendfile .vimrc bob");
    alice.expect_line("*** sending .vimrc as 'vimrc' (name starts with '.')");
    alice.expect_line("*** sent vimrc to 1 user(s)");
    bob.expect_prefix("*** received vimrc (11 bytes) from alice, saved to ");
    alice.send("/sendfile a?b.txt bob");
    alice.expect_prefix("*** sending a?b.txt as 'a_b.txt' (");
    alice.expect_line("*** sent a_b.txt to 1 user(s)");
    bob.expect_prefix("*** received a_b.txt (4 bytes) from alice, saved to ");
    let received = w.dir.join("bob").join("received");
    assert_eq!(
        fs::read(received.join("vimrc")).expect("vimrc"),
        b"set number\n"
    );
    assert_eq!(
        fs::read(received.join("a_b.txt")).expect("a_b.txt"),
        b"odd\n"
    );
    alice.assert_no_line("an error", |l| l.starts_with("error: "));
}

/// `~/` is the home folder, as in the shell (and in irssi's `/dcc send`);
/// a file that is not there is said in words, without the system's code.
#[test]
fn sendfile_reads_a_tilde_as_the_home_folder() {
    let w = World::new("sendfile-tilde");
    let home = w.dir.join("home");
    fs::create_dir(&home).expect("home");
    fs::write(home.join("tilde.txt"), b"from home\n").expect("tilde.txt");
    let port = w.server.port().to_string();
    let mut alice = Client::spawn_with_env(
        w.dir.path(),
        &["alice", "127.0.0.1", &port],
        &[("HOME", home.to_str().unwrap())],
    );
    alice.expect_prefix("*** connected to 127.0.0.1:");
    let bob = w.client("bob");
    alice.send("/who");
    alice.expect_line("*** online (2): alice, bob");
    alice.send("/sendfile ~/tilde.txt bob");
    alice.expect_line("*** sent tilde.txt to 1 user(s)");
    bob.expect_prefix("*** received tilde.txt (10 bytes) from alice, saved to ");
    alice.send("/sendfile ~/nope.txt bob");
    alice.expect_line("error: cannot open ~/nope.txt: no such file or directory");
    // The whole line is a file there: the file, to everyone (bob is the
    // only other user), not `~/notes` to bob.
    fs::write(home.join("notes bob"), b"spaced\n").expect("notes bob");
    alice.send("/sendfile ~/notes bob");
    alice.expect_line("*** sent notes bob to 1 user(s)");
    bob.expect_prefix("*** received notes bob (7 bytes) from alice, saved to ");
}

#[test]
fn sendfile_pushes_to_everyone_or_to_one_user() {
    let w = World::new("sendfile");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    let carol = w.client("carol");
    fs::create_dir(w.dir.join("outbox")).expect("outbox");
    // Bigger than one 256 KiB chunk.
    let report = pseudo_random_bytes(300 * 1024 + 17, 1);
    let report_path = w.dir.join("outbox").join("report.bin");
    fs::write(&report_path, &report).expect("report");
    let size = report.len();

    alice.send(&format!("/sendfile {}", report_path.display()));
    alice.expect_line(&format!(
        "*** offering report.bin ({size} bytes); it is sent once accepted"
    ));
    alice.expect_line("*** sending report.bin: accepted by 2 user(s)");
    for (rx, name) in [(&bob, "bob"), (&carol, "carol")] {
        rx.expect_line(&format!(
            "*** alice is sending you report.bin ({size} bytes)"
        ));
        rx.expect_prefix(&format!(
            "*** received report.bin ({size} bytes) from alice, saved to "
        ));
        let got = fs::read(w.dir.join(name).join("received").join("report.bin"))
            .unwrap_or_else(|e| panic!("{name} has no received/report.bin: {e}"));
        assert!(got == report, "{name}: received bytes differ");
    }
    alice.expect_line("*** sent report.bin to 2 user(s)");

    // To one user only.
    let note = b"only for bob\n";
    let note_path = w.dir.join("outbox").join("only-bob.txt");
    fs::write(&note_path, note).expect("note");
    alice.send(&format!("/sendfile {} bob", note_path.display()));
    bob.expect_prefix(&format!(
        "*** received only-bob.txt ({} bytes) from alice, saved to ",
        note.len()
    ));
    alice.expect_line("*** sent only-bob.txt to 1 user(s)");
    assert_eq!(
        fs::read(w.dir.join("bob").join("received").join("only-bob.txt")).expect("bob's copy"),
        note
    );
    barrier(&mut alice, "alice", "after the files", &[&bob, &carol]);
    carol.assert_no_line("a push meant for bob", |l| l.contains("only-bob.txt"));
    assert!(!w
        .dir
        .join("carol")
        .join("received")
        .join("only-bob.txt")
        .exists());
    bob.send("thanks");
    alice.expect_line("<bob> thanks");
    for who in ["bob", "carol"] {
        let parts: Vec<_> = fs::read_dir(w.dir.join(who).join("received"))
            .expect("received folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(parts.is_empty(), "{who}: partial files left: {parts:?}");
    }
}

#[test]
fn quit_and_end_of_input_leave_with_code_0() {
    let w = World::new("quit");
    let alice = w.client("alice");
    let mut bob = w.client("bob");
    let mut carol = w.client("carol");
    bob.send("/quit");
    bob.expect_exit_code(0);
    alice.expect_line("*** bob has left");
    carol.close_stdin();
    carol.expect_exit_code(0);
    alice.expect_line("*** carol has left");
    let mut dave = w.client("dave");
    dave.send("/exit");
    dave.expect_exit_code(0);
    alice.expect_line("*** dave has left");
    assert!(non_empty(&bob.err.lines()).is_empty(), "{}", bob.report());
    assert!(
        non_empty(&carol.err.lines()).is_empty(),
        "{}",
        carol.report()
    );
}

#[test]
fn a_killed_client_is_announced_as_left() {
    // No grace period: the server announces a lost connection at once.
    let w = World::with_args("kill9", &["--grace-secs", "0"]);
    let alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    bob.kill();
    alice.expect("`*** bob has left` (a reason may follow)", |l| {
        l == "*** bob has left" || l.starts_with("*** bob has left (")
    });
    w.server
        .expect("`bob left (<reason>)`", |l| l.starts_with("bob left ("));
}

/// A private message to a user whose connection was lost (its session
/// waits for it to come back) is accepted, and its sender is told the
/// user is away, as news rather than an error; a message to everyone is
/// not.
#[test]
fn a_user_away_is_flagged_in_the_json_roster() {
    let w = World::new("away-json");
    let port = w.server.port().to_string();
    let mut bob = w.client("bob");
    let mut alice = w.spawn_client(&["--json", "alice", "127.0.0.1", &port]);
    alice.expect("the roster from the /who on connect, nobody away", |l| {
        let v = parse(l);
        v["all"] == serde_json::json!(["alice", "bob"]) && v["away"] == serde_json::json!([])
    });
    bob.kill();
    w.server.wait_logged("bob lost its connection");
    alice.send("/who");
    let roster = alice.expect("the roster with bob away", |l| {
        parse(l)["away"].as_array().is_some_and(|a| !a.is_empty())
    });
    let v = parse(&roster);
    assert_eq!(v["all"], serde_json::json!(["alice", "bob"]), "{roster}");
    assert_eq!(v["away"][0]["name"], "bob", "{roster}");
    assert!(v["away"][0]["away_secs"].is_u64(), "{roster}");
    assert_eq!(v["away"].as_array().map(Vec::len), Some(1), "{roster}");
}

#[test]
fn a_private_message_to_a_user_away_tells_the_sender_so() {
    let w = World::new("away");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    bob.kill();
    w.server.wait_logged("bob lost its connection");
    alice.send("/msg bob are you there");
    alice.send("anyone?");
    // A second line to bob gets no second notice.
    alice.send("/msg bob still there?");
    alice.send("/who");
    let away = alice.expect("the away notice", |l| l.contains("is away"));
    assert!(
        away.starts_with(
            "*** bob is away (connection lost): they get your message if they come back within "
        ) && away.ends_with(" s"),
        "{away:?}"
    );
    // bob is listed as away, with how long ago his connection was lost.
    let who = alice.expect("the who list", |l| l.starts_with("*** online (2)"));
    assert!(
        who.starts_with("*** online (2): alice, bob (away, connection lost ")
            && who.ends_with(" ago)"),
        "{who:?}"
    );
    assert_eq!(
        alice
            .out
            .lines()
            .iter()
            .filter(|l| l.contains("is away"))
            .count(),
        1,
        "{}",
        alice.report()
    );
    assert!(
        non_empty(&alice.err.lines()).is_empty(),
        "{}",
        alice.report()
    );
}

#[test]
fn duplicate_and_invalid_usernames_are_refused() {
    let w = World::new("dupe");
    let alice = w.client("alice");
    let port = w.server.port().to_string();
    for name in ["alice", "ALICE"] {
        let mut dup = w.spawn_client(&[name, "127.0.0.1", &port]);
        let err = dup.expect_exit_code(1);
        let err = non_empty(&err);
        assert_eq!(err.len(), 1, "one stderr line expected: {err:?}");
        assert!(
            err[0].starts_with("imchat-client: ") && err[0].contains("already taken"),
            "stderr for a taken name {name:?}: {err:?}"
        );
    }
    let mut bad = w.spawn_client(&["bad/name", "127.0.0.1", &port]);
    let err = bad.expect_exit_code(2);
    assert!(!non_empty(&err).is_empty(), "no reason on stderr");
    let _bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    alice.assert_no_line("a refused user never joined", |l| {
        l.eq_ignore_ascii_case("*** alice has joined")
    });
}

/// A chat log that cannot be opened is one line of words (before: "Is a
/// directory (os error 21)").
#[test]
fn a_chat_log_that_cannot_be_opened_is_said_in_words() {
    let w = World::new("chat-log-dir");
    let port = w.server.port().to_string();
    let folder = w.dir.join("a-folder");
    fs::create_dir(&folder).expect("folder");
    let folder = folder.to_str().expect("utf-8 path");
    let mut c = w.spawn_client(&["--chat-log", folder, "bob", "127.0.0.1", &port]);
    let err = c.expect_exit_code(1);
    assert_eq!(
        non_empty(&err),
        [format!(
            "imchat-client: starting the interface: cannot open the chat log {folder}: is a directory"
        )],
        "{}",
        c.report()
    );
}

#[test]
fn unreachable_server_bad_host_and_bad_ports() {
    let dir = TempDir::new("unreachable");
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut c = Client::spawn(dir.path(), &["bob", "127.0.0.1", &closed_port.to_string()]);
    let err = c.expect_exit_code(1);
    let err = non_empty(&err);
    assert!(
        err.len() == 1 && err[0].starts_with("imchat-client: cannot connect"),
        "refused connection: {err:?}"
    );

    let mut c = Client::spawn(dir.path(), &["bob", "nosuch.invalid", "4000"]);
    let err = c.expect_exit_code(1);
    let err = non_empty(&err);
    assert!(
        err.len() == 1
            && err[0].starts_with("imchat-client: ")
            && err[0].contains("cannot resolve"),
        "unknown host: {err:?}"
    );

    for port in ["70000", "abc", "0"] {
        let mut c = Client::spawn(dir.path(), &["bob", "127.0.0.1", port]);
        let err = c.expect_exit_code(2);
        let err = non_empty(&err);
        assert!(
            err.first().is_some_and(
                |l| l.starts_with(&format!("error: invalid value '{port}' for '[PORT]'"))
            ),
            "port {port:?}: expected clap's `error: invalid value '{port}' for '[PORT]': ...`, got {err:?}"
        );
    }
}

#[test]
fn server_ctrl_c_is_announced_to_clients() {
    let mut w = World::new("sigint");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    w.server.signal("INT");
    let status = w.server.wait_exit(TIMEOUT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "server exit after SIGINT: {status:?}\n{}",
        w.server.report()
    );
    w.server.expect("`shutting down: <reason>`", |l| {
        l.starts_with("shutting down")
    });
    for c in [&mut alice, &mut bob] {
        c.expect_prefix("*** server shutting down: ");
        let err = c.expect_exit_code(1);
        let err = non_empty(&err);
        assert!(
            err.len() == 1 && err[0].starts_with("imchat-client: server shut down"),
            "stderr after a shutdown: {err:?}"
        );
    }
}

#[test]
fn server_kill_is_seen_by_clients() {
    let mut w = World::new("serverkill");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    w.server.kill();
    for c in [&mut alice, &mut bob] {
        let err = c.expect_exit_code(1);
        let err = non_empty(&err);
        assert!(
            err.len() == 1
                && err[0].starts_with("imchat-client: ")
                && (err[0].contains("lost") || err[0].contains("closed")),
            "expected one line like `imchat-client: connection to the server lost`, got {err:?}"
        );
    }
}

#[test]
fn a_message_before_the_handshake_is_refused() {
    let w = World::new("prehello");
    let mut raw = Raw::connect(w.server.addr);
    raw.send(&ClientMessage::Who);
    let (refused, seen) = raw.recv_until(TIMEOUT, |m| matches!(m, ServerMessage::Refused { .. }));
    assert!(
        refused.is_some(),
        "no Refused for a Who before Hello; saw {seen:?}"
    );
    let rest = raw.drain(TIMEOUT);
    assert!(
        matches!(rest.last(), Some(RawEvent::Closed)),
        "the connection stayed open after Refused: {rest:?}"
    );
    assert!(
        !rest
            .iter()
            .any(|e| matches!(e, RawEvent::Msg(ServerMessage::Who { .. }))),
        "the server answered Who before the handshake: {rest:?}"
    );
    let mut alice = w.client("alice");
    alice.send("/who");
    alice.expect_line("*** online (1): alice");
}

#[test]
fn text_from_the_network_is_shown_inert() {
    let w = World::new("inert");
    let alice = w.client("alice");
    let mut mallory = Raw::join(w.server.addr, "mallory");
    alice.expect_line("*** mallory has joined");
    mallory.send(&ClientMessage::Chat {
        client_id: 0,
        to: Recipient::Everyone,
        kind: imchat_core::ChatKind::Text,
        text: "hi\x1b[2J\u{202e}there\x07\x7f!".into(),
    });
    alice.expect_line("<mallory> hi^[[2J\\u{202e}there^G^?!");
    let raw_out = alice.out.text();
    assert!(
        !raw_out.contains('\x1b') && !raw_out.contains('\u{202e}') && !raw_out.contains('\x07'),
        "a control character reached stdout: {raw_out:?}"
    );
}

#[test]
fn json_gives_the_exact_text_from_the_network() {
    let w = World::new("json-exact");
    let port = w.server.port().to_string();
    let alice = w.spawn_client(&["--json", "alice", "127.0.0.1", &port]);
    alice.expect("the roster from the /who on connect", |l| {
        parse(l)["all"] == serde_json::json!(["alice"])
    });
    let mut mallory = Raw::join(w.server.addr, "mallory");
    alice.expect("mallory's join", |l| parse(l)["joined"] == "mallory");
    let text = "a\nb\u{202e}c\x1b[2J\x07!";
    mallory.send(&ClientMessage::Chat {
        client_id: 0,
        to: Recipient::Everyone,
        kind: imchat_core::ChatKind::Text,
        text: text.into(),
    });
    let line = alice.expect("mallory's message", |l| parse(l)["type"] == "chat");
    let v = parse(&line);
    assert_eq!(v["from"], "mallory");
    assert_eq!(v["text"].as_str(), Some(text), "the text as sent: {line}");
    mallory.send(&ClientMessage::Quit {
        reason: "bye\u{202e}\nnow".into(),
    });
    alice.expect("mallory's parting text, exact", |l| {
        let v = parse(l);
        v["type"] == "notice" && v["text"] == "mallory has left (bye\u{202e}\nnow)"
    });
    let out = alice.out.text();
    assert!(
        !out.contains('\x1b')
            && !out.contains('\x07')
            && !out.contains('\u{202e}')
            && !out.contains("^J"),
        "controls are escaped by JSON, nothing is made inert: {out:?}"
    );
}

/// A push starts once every receiver has answered: one that accepted at
/// once shows its transfer as waiting until the data comes (before: at
/// 0 bytes and not waiting, and then a rate counted from its acceptance,
/// with an ETA of hours).
#[test]
fn a_received_push_waits_for_the_other_receivers_before_it_counts() {
    let w = World::new("push-wait");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let bob = w.spawn_client(&["--json", "bob", "127.0.0.1", &port]);
    bob.expect("bob's roster", |l| parse(l)["all"].is_array());
    let mut carol = client_with(
        &w,
        "carol",
        &["--auto-accept-bytes", "1K", "--ask-when-piped"],
    );
    barrier(&mut alice, "alice", "all here", &[&carol]);
    bob.expect("the barrier", |l| parse(l)["text"] == "all here");
    let data = pseudo_random_bytes(4096, 9);
    let path = w.dir.join("shared-by-alice.bin");
    fs::write(&path, &data).expect("file");
    alice.send(&format!("/sendfile {}", path.display()));
    // bob accepts at once (under his threshold); carol is asked.
    let first = bob.expect("bob's transfer line", |l| parse(l)["type"] == "transfer");
    assert_eq!(parse(&first)["waiting"], true, "{first}");
    let asked = carol.expect_prefix("*** alice wants to send you 'shared-by-alice.bin'");
    let n = asked.rsplit(' ').next().unwrap().to_string();
    carol.send(&format!("/accept {n}"));
    bob.expect("bob's copy", |l| {
        let v = parse(l);
        v["type"] == "notice"
            && v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("received shared-by-alice.bin"))
    });
    for l in bob.out.text().lines().map(parse) {
        if l["type"] == "transfer" && l["done"].as_u64() > Some(0) {
            assert_eq!(l["waiting"], false, "{l}");
        }
    }
    assert_eq!(
        fs::read(
            w.dir
                .join("bob")
                .join("received")
                .join("shared-by-alice.bin")
        )
        .expect("copy"),
        data
    );
}

/// A push arriving while a download runs has an id of its own: the
/// server numbers the pushes it relays apart from the client's downloads,
/// and both were shown as `#1` (one row, its progress not told, and its
/// end seen as the download's).
#[test]
fn a_push_received_during_a_download_has_its_own_transfer_id() {
    let w = World::new("push-during-download");
    fs::write(w.shared().join("big.bin"), pseudo_random_bytes(16 << 20, 3)).expect("big.bin");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    // Its disk thread slowed down: the download takes about 2 s, and the
    // push arrives within the first tenth of it.
    let mut carol = Client::spawn_with_env(
        w.dir.path(),
        &[
            "--json",
            "--auto-accept-bytes",
            "1K",
            "carol",
            "127.0.0.1",
            &port,
        ],
        &[("FAILPOINTS", "client-disk-job=sleep(30)")],
    );
    json_joined(&carol, &mut alice);
    carol.send("/download big.bin");
    let download = carol.expect("the download's row", |l| {
        let v = parse(l);
        v["type"] == "transfer" && v["name"] == "big.bin"
    });
    let download = parse(&download)["id"].as_str().unwrap().to_string();
    let small = w.dir.join("small file.txt");
    fs::write(&small, b"a small file\n").expect("small");
    alice.send(&format!("/sendfile {} carol", small.display()));
    carol.expect("the push received", |l| {
        parse(l)["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("received small file.txt"))
    });
    let lines: Vec<serde_json::Value> = carol.out.text().lines().map(parse).collect();
    let pushed = lines
        .iter()
        .find(|v| v["type"] == "transfer" && v["name"] == "small file.txt")
        .unwrap_or_else(|| panic!("no row for the push: {}", carol.report()));
    let pushed = pushed["id"].as_str().unwrap().to_string();
    assert_ne!(pushed, download, "{}", carol.report());
    let ended: Vec<&str> = lines
        .iter()
        .filter(|v| v["type"] == "transfer_ended")
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(ended, [pushed.as_str()], "{}", carol.report());
    // The download goes on, and ends under its own id.
    carol.expect("the download's end", |l| {
        parse(l)["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("downloaded big.bin"))
    });
    carol.expect("the download's row ended", |l| {
        let v = parse(l);
        v["type"] == "transfer_ended" && v["id"] == download.as_str()
    });
}

/// `/transfers` lists the offers waiting for an answer, saying how to
/// answer them (it said "no transfers running"), and `/cancel` of one
/// declines it.
#[test]
fn transfers_lists_the_offers_waiting_and_cancel_declines_one() {
    let w = World::new("offers-listed");
    let mut alice = w.client("alice");
    let mut bob = client_with(
        &w,
        "bob",
        &["--auto-accept-bytes", "1K", "--ask-when-piped"],
    );
    barrier(&mut alice, "alice", "all here", &[&bob]);
    let big = w.dir.join("push20.bin");
    fs::write(&big, pseudo_random_bytes(20 << 10, 7)).expect("big");
    alice.send(&format!("/sendfile {} bob", big.display()));
    let asked = bob.expect_prefix("*** alice wants to send you 'push20.bin' (20.0 KiB): /accept ");
    let n = asked.rsplit(' ').next().unwrap().to_string();
    bob.send("/transfers");
    bob.expect_line(&format!(
        "*** #{n} offer: push20.bin (20.0 KiB) from alice: /accept {n} or /decline {n}"
    ));
    bob.send(&format!("/cancel {n}"));
    bob.expect_line("*** declined push20.bin from alice");
    alice.expect_line("error: sending push20.bin failed: bob did not accept the file");
    bob.send("/transfers");
    bob.expect_line("*** no transfers running");
}

/// The server stops (SIGTERM) while alice pushes a file to carol: carol's
/// client says the transfer failed, and why, before it exits. Before, it
/// mostly said nothing of it (8 of 10 runs of a release build): the
/// failure its disk thread had still to tell was lost when the client
/// exited.
#[test]
fn a_client_stopped_by_a_server_shutdown_says_which_transfer_failed() {
    let w = World::new("push-shutdown");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    // Its disk thread behind (each job paused): the failure waits there
    // behind the data still to write when the server stops.
    let mut carol = Client::spawn_with_env(
        w.dir.path(),
        &[
            "--json",
            "--no-reconnect",
            "--auto-accept-bytes",
            "1G",
            "carol",
            "127.0.0.1",
            &port,
        ],
        &[("FAILPOINTS", "client-disk-job=sleep(10)")],
    );
    json_joined(&carol, &mut alice);
    // Big enough to be under way when the server stops.
    let path = w.dir.join("big.bin");
    fs::write(&path, pseudo_random_bytes(256 << 20, 11)).expect("file");
    alice.send(&format!("/sendfile {} carol", path.display()));
    // The data is coming in (--json tells progress at most once a second).
    let part = w.dir.join("carol").join("received").join("big.bin.part");
    let deadline = Instant::now() + TIMEOUT;
    while !fs::metadata(&part).is_ok_and(|m| m.len() > 0) {
        assert!(
            Instant::now() < deadline,
            "no data came: {}",
            carol.report()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    w.server.signal("TERM");
    carol.expect("the transfer's failure", |l| {
        parse(l)["text"] == "transfer of big.bin failed: the server shut down"
    });
    assert_eq!(carol.expect_exit().code(), Some(1), "{}", carol.report());
    assert!(
        !w.dir
            .join("carol")
            .join("received")
            .join("big.bin.part")
            .exists(),
        "the part of a push is deleted"
    );
}

/// An offer a piped `--json` client declines by itself (over its
/// `--auto-accept-bytes`, no one to ask) ends with a `transfer_ended` as
/// one declined with `/decline` does: a program sees what became of it.
#[test]
fn json_an_offer_declined_unasked_has_its_transfer_end() {
    let w = World::new("json-auto-decline");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let carol = w.spawn_client(&[
        "--json",
        "--auto-accept-bytes",
        "1K",
        "carol",
        "127.0.0.1",
        &port,
    ]);
    json_joined(&carol, &mut alice);
    let path = w.dir.join("big.bin");
    fs::write(&path, pseudo_random_bytes(4096, 5)).expect("file");
    alice.send(&format!("/sendfile {} carol", path.display()));
    let ended = carol.expect("the offer's end", |l| parse(l)["type"] == "transfer_ended");
    let ended = parse(&ended);
    assert_eq!(ended["direction"], "offer", "{ended}");
    assert_eq!(ended["name"], "big.bin", "{ended}");
    assert_eq!(ended["ok"], false, "{ended}");
    assert!(
        ended["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("larger than this client accepts without asking")),
        "{ended}"
    );
}

/// The server stops (SIGTERM) during a download a script started, its
/// input already at its end (the client waiting for the download): the
/// client says the download failed and that `/download` resumes it, in
/// plain lines and in `--json` (where `transfer_ended` says so too),
/// before it exits 1. Before, it said nothing of it: only the shutdown.
#[test]
fn a_script_waiting_for_a_download_says_a_shutdown_cut_it() {
    for json in [false, true] {
        let w = World::new(if json {
            "dl-shutdown-json"
        } else {
            "dl-shutdown"
        });
        fs::File::create(w.shared().join("big file.bin"))
            .and_then(|f| f.set_len(64 << 20))
            .expect("file");
        let port = w.server.port().to_string();
        let mut args = vec!["bot", "127.0.0.1", port.as_str()];
        if json {
            args.insert(0, "--json");
        }
        // Its disk thread behind: the download is under way, not done,
        // when the server stops.
        let mut bot = Client::spawn_with_env(
            w.dir.path(),
            &args,
            &[("FAILPOINTS", "client-disk-job=sleep(20)")],
        );
        bot.send("/download big file.bin");
        bot.close_stdin();
        wait_for_part_data(&w, &bot, "big file.bin");
        w.server.signal("TERM");
        let failed =
            "transfer of big file.bin failed: the server shut down; /download big file.bin resumes it";
        if json {
            bot.expect("the download's end", |l| {
                let v = parse(l);
                v["type"] == "transfer_ended"
                    && v["ok"] == false
                    && v["error"] == "the server shut down"
                    && v["name"] == "big file.bin"
                    && v["direction"] == "download"
            });
            bot.expect("the failure, an error", |l| {
                let v = parse(l);
                v["type"] == "error" && v["text"] == failed
            });
        } else {
            bot.expect_line(&format!("error: {failed}"));
        }
        assert_eq!(bot.expect_exit().code(), Some(1), "{}", bot.report());
        let part = w.dir.join("bot").join("big file.bin.part");
        assert!(part.exists(), "the part stays, to resume");
    }
}

/// A script stopped by a signal (SIGTERM) while it waits for a download it
/// started quits at once as `/quit` does: the others see it leave, the
/// download is said to be cut with the command that resumes it, and its
/// part stays. Before, it waited for the download (as at the end of its
/// input) until its 3 s for quitting ran out, and ended without telling
/// the server: the others saw it leave a minute later.
#[test]
fn a_script_stopped_by_a_signal_during_a_download_quits_at_once() {
    let w = World::new("dl-signal");
    fs::File::create(w.shared().join("big file.bin"))
        .and_then(|f| f.set_len(64 << 20))
        .expect("file");
    let watcher = w.client("watcher");
    let port = w.server.port().to_string();
    // Its disk thread behind: the download is under way when it is stopped.
    let mut bot = Client::spawn_with_env(
        w.dir.path(),
        &["bot", "127.0.0.1", port.as_str()],
        &[("FAILPOINTS", "client-disk-job=sleep(20)")],
    );
    watcher.expect_line("*** bot has joined");
    bot.send("/download big file.bin");
    bot.close_stdin();
    wait_for_part_data(&w, &bot, "big file.bin");
    let stopped = Instant::now();
    signal(&bot, "TERM");
    watcher.expect_line("*** bot has left");
    bot.expect_line(
        "error: transfer of big file.bin failed: the client was stopped; /download big file.bin resumes it",
    );
    assert_eq!(bot.expect_exit().code(), Some(1), "{}", bot.report());
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "took {:?} to quit",
        stopped.elapsed()
    );
    let part = w.dir.join("bot").join("big file.bin.part");
    assert!(part.exists(), "the part stays, to resume");
}

/// A client that reconnects (as the full-screen one does) says a download
/// a server shutdown cut failed because the server shut down, as its
/// offers and pushes do, not that the connection was lost.
#[test]
fn a_reconnecting_client_says_a_download_was_cut_by_the_shutdown() {
    let w = World::new("dl-shutdown-reconnect");
    fs::File::create(w.shared().join("big file.bin"))
        .and_then(|f| f.set_len(64 << 20))
        .expect("file");
    let port = w.server.port().to_string();
    let mut bot = Client::spawn_with_env(
        w.dir.path(),
        &["--reconnect", "bot", "127.0.0.1", port.as_str()],
        &[("FAILPOINTS", "client-disk-job=sleep(20)")],
    );
    bot.send("/download big file.bin");
    wait_for_part_data(&w, &bot, "big file.bin");
    w.server.signal("TERM");
    bot.expect_prefix("*** server shutting down");
    bot.expect_line(
        "error: transfer of big file.bin failed: the server shut down; /download big file.bin resumes it",
    );
    bot.assert_no_line("a lost connection", |l| {
        l.starts_with("error: transfer of") && l.contains("connection lost")
    });
    bot.kill();
}

/// The shared folder removed while the server runs: each command that
/// asks for it (`/access`, `/list`, `/files`, which asks for both) gets
/// one line saying the server cannot read it, not that line followed by
/// an empty folder ("access granted: 0 files", "is empty").
#[test]
fn an_unreadable_shared_folder_is_one_error_line_per_command() {
    let w = World::new("unreadable-folder");
    fs::remove_dir_all(w.shared()).expect("remove the shared folder");
    let port = w.server.port().to_string();
    let mut bot = w.script(
        &["bot", "127.0.0.1", &port],
        b"/access\n/list\n/files\n".to_vec(),
    );
    // Its requests failed: the exit code of requests refused.
    assert_eq!(bot.expect_exit().code(), Some(3), "{}", bot.report());
    let error = "error: the server cannot read its shared folder now: no file can be listed or downloaded until its operator fixes it";
    let lines = bot.out.lines();
    let after: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("Welcome to imchat"))
        .skip(1)
        .map(String::as_str)
        .collect();
    assert_eq!(after, vec![error; 3], "{}", bot.report());
}

/// A script that asks twice for one small file: the second line is
/// judged once the first download's lines are out, so it is not refused
/// ("already being downloaded") right after the line that says the first
/// one ended; it downloads a second copy, saved under a free name.
#[test]
fn a_script_downloading_one_file_twice_gets_two_copies() {
    let w = World::new("download-twice");
    let port = w.server.port().to_string();
    let mut bot = w.script(
        &["bot", "127.0.0.1", &port],
        b"/download welcome.txt\n/download welcome.txt\n/quit\n".to_vec(),
    );
    assert_eq!(bot.expect_exit().code(), Some(0), "{}", bot.report());
    bot.assert_no_line("a refusal", |l| l.starts_with("error:"));
    let done: Vec<String> = bot
        .out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("*** downloaded welcome.txt"))
        .collect();
    assert_eq!(done.len(), 2, "{}", bot.report());
    let want = fs::read(w.shared().join("welcome.txt")).expect("the shared file");
    for copy in ["welcome.txt", "welcome (1).txt"] {
        assert_eq!(
            fs::read(w.dir.join("bot").join(copy)).expect("a copy"),
            want,
            "{}",
            bot.report()
        );
    }
}

/// `--json` gives programs what they need without parsing text: the
/// shared files with their sizes, and each transfer's outcome in its
/// `transfer_ended` (`ok`, the `error` when it failed, its name and
/// direction), a download refused at once (no such file) included.
#[test]
fn json_transfer_ends_say_the_outcome_and_shared_files_their_sizes() {
    let w = World::new("json-outcomes");
    let port = w.server.port().to_string();
    let mut bot = w.script(
        &["--json", "bot", "127.0.0.1", &port],
        b"/list\n/download nosuch.txt\n/download welcome.txt\n".to_vec(),
    );
    assert_eq!(bot.expect_exit().code(), Some(1), "{}", bot.report());
    let lines: Vec<serde_json::Value> = bot.out.text().lines().map(parse).collect();
    let listed = lines
        .iter()
        .find(|v| v["type"] == "shared_files")
        .unwrap_or_else(|| panic!("no shared_files: {}", bot.report()));
    let size = fs::metadata(w.shared().join("welcome.txt"))
        .expect("size")
        .len();
    assert!(
        listed["names"]
            .as_array()
            .is_some_and(|n| n.contains(&serde_json::json!("welcome.txt"))),
        "the names stay: {listed}"
    );
    assert!(
        listed["files"]
            .as_array()
            .is_some_and(|f| f.contains(&serde_json::json!({"name": "welcome.txt", "size": size}))),
        "{listed}"
    );
    let ended: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["type"] == "transfer_ended")
        .collect();
    assert_eq!(ended.len(), 2, "{}", bot.report());
    // The two may end in either order: the refusal is the server's answer
    // to a request made first, the download's end the client's own.
    let end_of = |name: &str| {
        *ended
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no end of {name}: {}", bot.report()))
    };
    let failed = end_of("nosuch.txt");
    assert_eq!(failed["direction"], "download");
    assert_eq!(failed["ok"], false);
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        bot.report()
    );
    let done = end_of("welcome.txt");
    assert_eq!(done["ok"], true);
    assert_eq!(done["error"], serde_json::Value::Null);
}

#[test]
fn help_lists_the_commands() {
    let w = World::new("help");
    let mut alice = w.client("alice");
    alice.send("/help");
    let at = alice
        .expect_line("Commands (plain text is sent in the current mode, broadcast by default):");
    for command in [
        "/broadcast <text>",
        "/unicast <user> <text>",
        "/mode broadcast",
        "/mode unicast <user>",
        "/who",
        "/files",
        "/access, /list",
        "/download <name>",
        "/sendfile <path> [user]",
        "/accept [id]",
        "/decline [id]",
        "/help",
        "/quit",
    ] {
        alice.expect_from(at, &format!("a help line for {command}"), |l| {
            l.trim_start().starts_with(command)
        });
    }
    alice.send("/nosuchcommand");
    alice.expect_prefix("error: ");
}

#[test]
fn download_dir_option_is_honoured() {
    let w = World::new("dldir");
    let port = w.server.port().to_string();
    let target = w.dir.join("elsewhere");
    let target_s = target.to_string_lossy().into_owned();
    let mut alice = w.spawn_client(&["--download-dir", &target_s, "alice", "127.0.0.1", &port]);
    alice.expect_prefix("Welcome to imchat, alice!");
    alice.send("/download welcome.txt");
    alice.expect_prefix("*** downloaded welcome.txt (");
    assert_eq!(
        fs::read(target.join("welcome.txt")).expect("file in --download-dir"),
        fs::read(sample_shared_dir().join("welcome.txt")).expect("sample")
    );
    assert!(
        !w.dir.join("alice").join("welcome.txt").exists(),
        "the default folder was used despite --download-dir"
    );
}

#[test]
fn an_overlong_message_is_refused_and_the_connection_kept() {
    let w = World::new("toolong");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let long = "x".repeat(imchat_core::DEFAULT_MAX_TEXT + 1);
    alice.send(&long);
    // The limit with its unit, as the server says it.
    alice.expect_line(&format!(
        "error: message of {} bytes is longer than the limit of {} bytes",
        long.len(),
        imchat_core::DEFAULT_MAX_TEXT
    ));
    alice.send("short one");
    bob.expect_line("<alice> short one");
    bob.assert_no_line("the overlong message", |l| l.contains("xxxxxxxx"));
}

#[test]
fn actions_and_parting_texts_reach_the_others() {
    let w = World::new("me");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    alice.send("/me waves at everyone");
    bob.expect_line("* alice waves at everyone");
    alice.send("/msg bob psst");
    bob.expect_line("<alice> (private) psst");
    alice.send("/quit off to lunch");
    bob.expect_line("*** alice has left (off to lunch)");
}

/// Starts a client with extra flags before its arguments, and waits for its welcome.
fn client_with(w: &World, name: &str, flags: &[&str]) -> Client {
    let port = w.server.port().to_string();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend([name, "127.0.0.1", port.as_str()]);
    let c = w.spawn_client(&args);
    c.expect_line(&format!("*** connected to 127.0.0.1:{port} as {name}"));
    c
}

/// The pushed data can reach the receiver's reader thread as soon as its
/// Accept is out, before the thread that typed `/accept` has opened the
/// file: it must still land in the file. The receiver's fail point
/// `client-accept-sent` pauses that thread right after the Accept, so the
/// data is sure to come first.
#[test]
fn data_that_follows_an_accept_at_once_lands_in_the_file() {
    const ROUNDS: usize = 3;
    let w = World::new("accept-race");
    let mut alice = w.client("alice");
    let port = w.server.port().to_string();
    let mut bob = Client::spawn_with_env(
        w.dir.path(),
        &[
            "--auto-accept-bytes",
            "1K",
            "--ask-when-piped",
            "bob",
            "127.0.0.1",
            &port,
        ],
        &[("FAILPOINTS", "client-accept-sent=sleep(200)")],
    );
    bob.expect_line(&format!("*** connected to 127.0.0.1:{port} as bob"));
    barrier(&mut alice, "alice", "all here", &[&bob]);
    let bytes = pseudo_random_bytes(4096, 11);
    let file = w.dir.join("chunk.bin");
    fs::write(&file, &bytes).expect("chunk");
    let mut from = 0;
    for round in 0..ROUNDS {
        alice.send(&format!("/sendfile {} bob", file.display()));
        let (at, asked) = bob.expect_from(from, "an offer of chunk.bin", |l| {
            l.starts_with("*** alice wants to send you 'chunk.bin' (4.0 KiB): /accept ")
        });
        let n = asked.rsplit(' ').next().unwrap().to_string();
        bob.send(&format!("/accept {n}"));
        let prefix = "*** received chunk.bin (4096 bytes) from alice, saved to ";
        let (at, got) = bob.expect_from(at + 1, "chunk.bin received", |l| l.starts_with(prefix));
        let path = w.dir.join(&got[prefix.len()..]);
        assert!(
            fs::read(&path).expect("bob's copy") == bytes,
            "round {round}: {} is not what was sent\n{}",
            path.display(),
            bob.report()
        );
        from = at + 1;
    }
}

#[test]
fn big_pushes_wait_for_accept_small_ones_arrive_and_declines_reach_the_pusher() {
    let w = World::new("accept");
    let mut alice = w.client("alice");
    // bob is asked about files above 1 KiB, even though his input is piped;
    // carol's are declined for her, since no one could answer.
    let mut bob = client_with(
        &w,
        "bob",
        &["--auto-accept-bytes", "1K", "--ask-when-piped"],
    );
    let carol = client_with(&w, "carol", &["--auto-accept-bytes", "1K"]);
    barrier(&mut alice, "alice", "all here", &[&bob, &carol]);
    fs::create_dir(w.dir.join("outbox")).expect("outbox");
    let small = w.dir.join("outbox").join("small.txt");
    fs::write(&small, b"a small note\n").expect("small");
    let big_bytes = pseudo_random_bytes(4096, 7);
    let big = w.dir.join("outbox").join("big.bin");
    fs::write(&big, &big_bytes).expect("big");

    // A small push is accepted without asking.
    alice.send(&format!("/sendfile {}", small.display()));
    for rx in [&bob, &carol] {
        rx.expect_prefix("*** received small.txt (13 bytes) from alice, saved to ");
    }
    alice.expect_line("*** sent small.txt to 2 user(s)");

    // A big one waits for /accept, then arrives.
    alice.send(&format!("/sendfile {} bob", big.display()));
    let asked = bob.expect_prefix("*** alice wants to send you 'big.bin' (4.0 KiB): /accept ");
    let n = asked.rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        asked,
        format!("*** alice wants to send you 'big.bin' (4.0 KiB): /accept {n} or /decline {n}")
    );
    barrier(&mut alice, "alice", "still waiting", &[&bob]);
    alice.assert_no_line("the push going before bob accepted", |l| {
        l.starts_with("*** sent big.bin")
    });
    bob.send(&format!("/accept {n}"));
    // On a failure, the pusher's and the server's side too.
    let prefix = "*** received big.bin (4096 bytes) from alice, saved to ";
    if bob
        .out
        .wait_line_from(0, TIMEOUT, |l| l.starts_with(prefix))
        .is_none()
    {
        panic!(
            "bob: no line starting with {prefix:?} within {TIMEOUT:?}\n{}\n{}\n{}",
            bob.report(),
            alice.report(),
            w.server.report()
        );
    }
    alice.expect_line("*** sent big.bin to 1 user(s)");
    assert_eq!(
        fs::read(w.dir.join("bob").join("received").join("big.bin")).expect("bob's copy"),
        big_bytes
    );

    // /decline tells the pusher.
    alice.send(&format!("/sendfile {} bob", big.display()));
    // The server numbers pushes in turn.
    let m = n.parse::<u32>().unwrap() + 1;
    bob.expect_line(&format!(
        "*** alice wants to send you 'big.bin' (4.0 KiB): /accept {m} or /decline {m}"
    ));
    bob.send("/decline");
    bob.expect_line("*** declined big.bin from alice");
    alice.expect_line("error: sending big.bin failed: bob did not accept the file");

    // With piped input and no --ask-when-piped, a big push is declined at once.
    alice.send(&format!("/sendfile {} carol", big.display()));
    carol.expect_prefix("*** declined 'big.bin' (4.0 KiB) from alice: larger than this client accepts without asking");
    alice.expect_line("error: sending big.bin failed: carol did not accept the file");
    assert!(!w
        .dir
        .join("carol")
        .join("received")
        .join("big.bin")
        .exists());
}

#[test]
fn small_pushes_past_a_sender_s_share_for_the_hour_are_not_taken_unasked() {
    let w = World::new("share");
    let mut alice = w.client("alice");
    // 1K counts as 64 KiB, the least a file counts for: four of one
    // sender's files an hour arrive unasked.
    let bob = client_with(&w, "bob", &["--auto-accept-bytes", "1K"]);
    barrier(&mut alice, "alice", "all here", &[&bob]);
    fs::create_dir(w.dir.join("outbox")).expect("outbox");
    let small = w.dir.join("outbox").join("small.txt");
    fs::write(&small, b"a small note\n").expect("small");
    let (mut from_bob, mut from_alice) = (0, 0);
    for _ in 0..4 {
        alice.send(&format!("/sendfile {} bob", small.display()));
        from_bob = 1 + bob
            .expect_from(from_bob, "received small.txt", |l| {
                l.starts_with("*** received small.txt (13 bytes) from alice, saved to ")
            })
            .0;
        from_alice = 1 + alice
            .expect_from(from_alice, "sent small.txt", |l| {
                l == "*** sent small.txt to 1 user(s)"
            })
            .0;
    }
    alice.send(&format!("/sendfile {} bob", small.display()));
    bob.expect_line(
        "*** declined 'small.txt' (13 bytes) from alice: more files within the hour than this client accepts without asking, and no one at a terminal to /accept it (see --auto-accept-bytes, --ask-when-piped)",
    );
    alice.expect_line("error: sending small.txt failed: bob did not accept the file");
    // A client that asks says why a small file is asked about.
    let mut carol = client_with(
        &w,
        "carol",
        &["--auto-accept-bytes", "1K", "--ask-when-piped"],
    );
    barrier(&mut alice, "alice", "carol here", &[&carol]);
    for n in 0..5 {
        alice.send(&format!("/sendfile {} carol", small.display()));
        if n < 4 {
            from_alice = 1 + alice
                .expect_from(from_alice, "sent small.txt", |l| {
                    l == "*** sent small.txt to 1 user(s)"
                })
                .0;
        }
    }
    let asked = carol.expect_prefix("*** alice wants to send you 'small.txt' (13 bytes): /accept ");
    assert!(
        asked.ends_with(" (more files within the hour than this client takes without asking)"),
        "{asked}"
    );
    carol.send("/decline");
}

// ---------------------------------------------------------------------------
// Scripts, shared download folders and hostile file systems

/// `count` lines `L0000 kkk…` of `len` bytes each, as a script.
fn numbered_lines(count: usize, len: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..count {
        s.push_str(&format!("L{i:04} {}\n", "k".repeat(len - 6)));
    }
    s.into_bytes()
}

/// Waits until `watcher` has shown all `count` lines of `from`'s script
/// (within `timeout`), and checks they came whole, in order, before any
/// notice that `from` left.
fn expect_script_lines(watcher: &Client, from: &str, count: usize, len: usize, timeout: Duration) {
    let last = format!("<{from}> L{:04} ", count - 1);
    // Polls the end of the output: scanning all of a long output at every
    // wake-up would slow the reading of the watcher's output until the
    // server drops the watcher for not reading.
    let deadline = Instant::now() + timeout;
    let mut found = false;
    while !found && Instant::now() < deadline && !watcher.out.is_eof() {
        std::thread::sleep(Duration::from_millis(100));
        let tail = watcher.out.tail(2 * len + 64);
        found = tail.lines().any(|l| l.starts_with(&last)) && tail.ends_with('\n');
    }
    if !found {
        let got = watcher
            .out
            .lines()
            .iter()
            .filter(|l| l.starts_with(&format!("<{from}> L")))
            .count();
        let tail: Vec<String> = watcher
            .out
            .lines()
            .into_iter()
            .rev()
            .take(3)
            .map(|l| l.chars().take(80).collect())
            .collect();
        panic!("the watcher got {got} of {count} lines within {timeout:?}; last lines: {tail:?}");
    }
    let prefix = format!("<{from}> ");
    let lines = watcher.out.lines();
    let got: Vec<&String> = lines.iter().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(got.len(), count, "every line once");
    for (i, l) in got.iter().enumerate() {
        let text = &l[prefix.len()..];
        assert!(text.starts_with(&format!("L{i:04} ")), "line {i} in order");
        assert_eq!(text.len(), len, "line {i} whole");
    }
    let left = format!("*** {from} has left");
    let gone = lines.iter().position(|l| l.starts_with(&left));
    let last_at = lines.iter().position(|l| l.starts_with(&last));
    assert!(
        gone.is_none() || gone > last_at,
        "left before its last line"
    );
}

#[test]
fn a_long_script_arrives_whole_and_in_order() {
    // 2,000 lines of 1 KiB: cut off after ~600 when a client sent as fast as
    // it read. At 150 messages a second (the client paces itself to 135
    // after the burst of 100) this takes ~14 s instead of ~42 s at the
    // default 50, and a client that did not pace itself would still be
    // over the rate for longer than the 10 s that get it cut off.
    let w = World::with_args(
        "script2000",
        &["--rate-per-sec", "150", "--rate-bytes-per-sec", "4000000"],
    );
    let watcher = w.client("watcher");
    let port = w.server.port().to_string();
    let start = Instant::now();
    let mut piper = w.script(&["piper", "127.0.0.1", &port], numbered_lines(2000, 1024));
    expect_script_lines(&watcher, "piper", 2000, 1024, Duration::from_secs(60));
    let status = piper.expect_exit_within(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", piper.report());
    // Paced: 1,900 lines after the burst take at least 1900/150 s.
    assert!(
        start.elapsed() >= Duration::from_millis(12_600),
        "not paced"
    );
    piper.assert_no_line("nothing dropped", |l| l.contains("dropped"));
}

#[test]
fn a_script_at_the_default_rate_is_slowed_not_cut_off() {
    // 700 lines at the default 50 a second: 12 s above the rate for a
    // client that does not pace itself, which is cut off after 10 s.
    let w = World::new("script-default");
    let watcher = w.client("watcher");
    let port = w.server.port().to_string();
    let mut piper = w.script(&["piper", "127.0.0.1", &port], numbered_lines(700, 100));
    expect_script_lines(&watcher, "piper", 700, 100, Duration::from_secs(60));
    let status = piper.expect_exit_within(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", piper.report());
}

#[test]
fn a_script_of_long_lines_is_paced_by_bytes_and_loses_none() {
    // 1,000 lines of 60 kB (60 MB): above the byte rate, and more than the
    // outbound queue holds; once "the server is not reading; a message was
    // dropped". 8 MB a second here (60 s at the default 1 MiB). The
    // watcher's queue holds all of it: once, on a loaded machine, the
    // watcher saw 404 of the 1,000 lines, the likeliest cause being that
    // this test's reading of its output fell behind, the server dropped
    // the watcher as too slow, and its resume lost what the log no longer
    // held; the watcher's reading is not what this test is about.
    let w = World::with_args(
        "script-long",
        &[
            "--rate-per-sec",
            "500",
            "--rate-bytes-per-sec",
            "8000000",
            "--max-queue-bytes",
            "128M",
        ],
    );
    let watcher = w.client("watcher");
    let port = w.server.port().to_string();
    let mut piper = w.script(&["piper", "127.0.0.1", &port], numbered_lines(1000, 60_000));
    expect_script_lines(&watcher, "piper", 1000, 60_000, Duration::from_secs(90));
    let status = piper.expect_exit_within(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", piper.report());
    piper.assert_no_line("nothing dropped", |l| l.contains("dropped"));
}

#[test]
fn a_script_gets_the_answers_it_asked_for_before_it_quits() {
    let w = World::new("script-who");
    let _bob = w.client("bob");
    let port = w.server.port().to_string();
    let mut bot = w.script(
        &["bot", "127.0.0.1", &port],
        b"/who\n/files\n/quit\n".to_vec(),
    );
    assert_eq!(bot.expect_exit().code(), Some(0), "{}", bot.report());
    let lines = bot.out.lines();
    assert!(
        lines.iter().any(|l| l == "*** online (2): bob, bot"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "*** shared files:"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("    welcome.txt  (")),
        "the whole list: {lines:?}"
    );
}

/// A script whose request the server refuses (a `/kick` by a user who
/// is no operator) is told by its exit code, 3, and one line on stderr;
/// the same script with its requests answered exits 0.
#[test]
fn a_script_whose_request_was_refused_exits_3() {
    let w = World::new("script-refused");
    let _bob = w.client("bob");
    let port = w.server.port().to_string();
    let mut bot = w.script(&["bot", "127.0.0.1", &port], b"/kick bob\n/quit\n".to_vec());
    assert_eq!(bot.expect_exit().code(), Some(3), "{}", bot.report());
    assert_eq!(
        non_empty(&bot.err.lines()),
        ["imchat-client: 1 request(s) failed"],
        "{}",
        bot.report()
    );
    let mut ok = w.script(&["bot2", "127.0.0.1", &port], b"/who\n/quit\n".to_vec());
    assert_eq!(ok.expect_exit().code(), Some(0), "{}", ok.report());
}

#[test]
fn a_script_output_keeps_the_order_of_its_commands() {
    let w = World::new("script-order");
    let _bob = w.client("bob");
    let port = w.server.port().to_string();
    let mut bot = w.script(
        &["bot", "127.0.0.1", &port],
        b"/who\n/help\n/files\n/mode\n/bogus\n/who\n/mode\n/quit\n".to_vec(),
    );
    // `/bogus` failed: the exit code of requests refused.
    assert_eq!(bot.expect_exit().code(), Some(3), "{}", bot.report());
    let lines = bot.out.lines();
    let at = |what: &str, from: usize, pred: &dyn Fn(&str) -> bool| -> usize {
        lines
            .iter()
            .skip(from)
            .position(|l| pred(l))
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no {what} after line {from}: {lines:?}"))
    };
    // Each answer after the one to the line before it.
    let who = at("who", 0, &|l| l == "*** online (2): bob, bot");
    let help = at("help", who + 1, &|l| l.starts_with("Commands ("));
    let files = at("files", help + 1, &|l| l == "*** shared files:");
    let mode = at("mode", files + 1, &|l| l == "*** mode: broadcast");
    let bogus = at("the typo's error", mode + 1, &|l| {
        l.starts_with("error: unknown command /bogus")
    });
    let who = at("who again", bogus + 1, &|l| l == "*** online (2): bob, bot");
    at("mode again", who + 1, &|l| l == "*** mode: broadcast");
}

#[test]
fn a_download_started_by_a_script_completes_before_it_exits() {
    let w = World::new("script-download");
    let data = pseudo_random_bytes(24 << 20, 11);
    fs::write(w.shared().join("big.bin"), &data).expect("write");
    let port = w.server.port().to_string();
    let mut bot = w.script(
        &["bot", "127.0.0.1", &port],
        b"/download big.bin\n".to_vec(),
    );
    let status = bot.expect_exit_within(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", bot.report());
    let got = fs::read(w.dir.join("bot").join("big.bin")).expect("downloaded");
    assert!(got == data, "same bytes");
}

#[test]
fn a_script_exits_non_zero_when_the_server_dies_or_a_transfer_fails() {
    let mut w = World::new("script-killed");
    let watcher = w.client("watcher");
    let port = w.server.port().to_string();
    // 700 lines take ~13 s at the default rate: the server dies meanwhile.
    let mut piper = w.script(&["piper", "127.0.0.1", &port], numbered_lines(700, 100));
    watcher.expect_prefix("<piper> L0150 ");
    w.server.kill();
    let status = piper.expect_exit_within(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", piper.report());
    assert!(
        piper
            .err
            .lines()
            .iter()
            .any(|l| l.starts_with("imchat-client: connection to the server lost")),
        "{}",
        piper.report()
    );

    // A download the server refuses: the script says so with its exit code.
    let w = World::new("script-failed");
    let port = w.server.port().to_string();
    let mut bot = w.script(
        &["bot", "127.0.0.1", &port],
        b"/download nothing.txt\n".to_vec(),
    );
    assert_eq!(bot.expect_exit().code(), Some(1), "{}", bot.report());
    assert!(
        bot.err
            .lines()
            .contains(&"imchat-client: 1 transfer(s) failed".to_string()),
        "{}",
        bot.report()
    );

    // A push that cannot start (no such file, a folder): the same.
    let missing = w.dir.join("no-such-file.bin");
    let input = format!(
        "/sendfile {}\n/sendfile {}\n",
        missing.display(),
        w.dir.path().display()
    );
    let mut pusher = w.script(&["pusher", "127.0.0.1", &port], input.into_bytes());
    assert_eq!(pusher.expect_exit().code(), Some(1), "{}", pusher.report());
    assert!(
        pusher
            .err
            .lines()
            .contains(&"imchat-client: 2 transfer(s) failed".to_string()),
        "{}",
        pusher.report()
    );
}

/// A script's list of downloads longer than the server's transfers at
/// once waits for a slot, as its lines wait for the rate: every file
/// arrives and the script exits 0, none is refused.
#[test]
fn a_scripts_downloads_past_the_transfers_at_once_wait_for_a_slot() {
    let w = World::with_args("script-slots", &["--max-transfers", "1"]);
    let port = w.server.port().to_string();
    let files = list_files(&sample_shared_dir());
    assert!(files.len() >= 3, "three samples at least: {files:?}");
    let input: String = files
        .iter()
        .map(|(name, _)| format!("/download {name}\n"))
        .collect();
    let mut bot = w.script(&["bot", "127.0.0.1", &port], input.into_bytes());
    assert_eq!(bot.expect_exit().code(), Some(0), "{}", bot.report());
    for (name, _) in &files {
        let got = fs::read(w.dir.join("bot").join(name))
            .unwrap_or_else(|e| panic!("{name} not downloaded: {e}\n{}", bot.report()));
        let want = fs::read(sample_shared_dir().join(name)).expect("read sample");
        assert!(got == want, "{name}: downloaded bytes differ");
    }
    bot.assert_no_line("no refusal", |l| l.contains("too many transfers"));
}

/// A push the server refuses at once (no one else online) is said by its
/// failure alone, each one: no line claims it was offered first.
#[test]
fn a_push_refused_at_once_is_said_by_its_failure_alone() {
    let w = World::new("push-refused-order");
    let port = w.server.port().to_string();
    let mut input = String::new();
    for n in 0..20 {
        let path = w.dir.join(format!("f{n}.txt"));
        fs::write(&path, b"hello").expect("write");
        input.push_str(&format!("/sendfile {}\n", path.display()));
    }
    let mut alone = w.script(&["alone", "127.0.0.1", &port], input.into_bytes());
    assert_eq!(alone.expect_exit().code(), Some(1), "{}", alone.report());
    let lines = alone.out.lines();
    for n in 0..20 {
        let failed = lines
            .iter()
            .filter(|l| l.starts_with(&format!("error: sending f{n}.txt failed: ")));
        assert_eq!(failed.count(), 1, "f{n}\n{}", alone.report());
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("*** offering")),
        "{}",
        alone.report()
    );
}

/// A script waiting for a transfer slot (its push waits for an answer,
/// the server allows one transfer at once) still quits at once on a
/// signal, as the README says a signal does: the server is told, the
/// push still waiting is a failed transfer (exit 1, said in one line, not
/// a log record after the 3 s the quit may take), and no empty `.part` is
/// left for the download that never started.
#[test]
fn a_script_waiting_for_a_transfer_slot_quits_at_once_on_a_signal() {
    let w = World::with_args("slot-signal", &["--max-transfers", "1"]);
    let port = w.server.port().to_string();
    // Joined, and never answers the offer: the push holds the one slot.
    let _bob = Raw::join(w.server.addr, "bob");
    let (name, _) = list_files(&sample_shared_dir())
        .into_iter()
        .next()
        .expect("a sample file");
    let mut alice = w.spawn_client(&["alice", "127.0.0.1", &port]);
    let pushed = w.dir.join("pushed.txt");
    fs::write(&pushed, b"for bob").expect("write");
    alice.send(&format!("/sendfile {} bob", pushed.display()));
    alice.expect_prefix("*** offering pushed.txt");
    alice.send(&format!("/download {name}"));
    // The download's `.part` is opened right before the wait for a slot.
    let part = w.dir.join("alice").join(format!("{name}.part"));
    let deadline = Instant::now() + TIMEOUT;
    while !part.exists() {
        assert!(Instant::now() < deadline, "no {}", part.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&alice, "TERM");
    let status = alice.expect_exit_within(Duration::from_secs(10));
    alice.expect_line("error: sending pushed.txt failed: the client was stopped");
    assert_eq!(status.code(), Some(1), "{}", alice.report());
    assert_eq!(
        non_empty(&alice.err.lines()),
        ["imchat-client: 1 transfer(s) failed"],
        "{}",
        alice.report()
    );
    assert!(!part.exists(), "an empty {} left", part.display());
}

/// A script's `/sendfile` of a file larger than the server's push limit
/// is a failed push: exit 1 with its count, as one that cannot be read.
#[test]
fn a_scripts_sendfile_over_the_push_limit_is_a_failed_transfer() {
    let w = World::with_args("script-push-limit", &["--max-push-bytes", "1000"]);
    let port = w.server.port().to_string();
    let _bob = w.client("bob");
    let big = w.dir.join("big.bin");
    fs::write(&big, vec![7u8; 1001]).expect("write");
    let input = format!("/sendfile {} bob\n", big.display());
    let mut pusher = w.script(&["pusher", "127.0.0.1", &port], input.into_bytes());
    assert_eq!(pusher.expect_exit().code(), Some(1), "{}", pusher.report());
    pusher.expect_line(
        "error: cannot send big.bin: file of 1001 bytes is larger than the server's push limit of 1000 bytes",
    );
    assert!(
        pusher
            .err
            .lines()
            .contains(&"imchat-client: 1 transfer(s) failed".to_string()),
        "{}",
        pusher.report()
    );
}

/// A shared file named `received` is saved under another name: under
/// its own it would take the place of the folder pushed files go to, and
/// every push to this client would then fail.
#[test]
fn a_download_named_received_leaves_the_name_to_pushed_files() {
    let w = World::new("received-name");
    fs::write(w.shared().join("received"), b"a shared file\n").expect("write");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.send("/download received");
    alice.expect_prefix("*** downloaded received (");
    alice.expect_line(
        "*** saved as 'received (1)': alice/received is kept for the files others send you",
    );
    let dl = w.dir.join("alice");
    assert_eq!(
        fs::read(dl.join("received (1)")).expect("read"),
        b"a shared file\n"
    );
    fs::write(w.dir.join("note.txt"), b"pushed\n").expect("note");
    bob.send("/sendfile note.txt alice");
    bob.expect_line("*** sent note.txt to 1 user(s)");
    alice.expect_prefix("*** received note.txt (7 bytes) from bob, saved to ");
    assert_eq!(
        fs::read(dl.join("received").join("note.txt")).expect("read"),
        b"pushed\n"
    );
    alice.send("/quit");
    alice.expect_exit_code(0);
}

#[test]
fn a_download_never_replaces_a_file_in_the_download_folder() {
    let w = World::new("no-clobber");
    let dl = w.dir.join("alice");
    fs::create_dir_all(&dl).expect("mkdir");
    fs::write(dl.join("welcome.txt"), b"my own notes").expect("write");
    let mut alice = w.client("alice");
    alice.send("/download welcome.txt");
    alice.expect_prefix("*** downloaded welcome.txt (");
    alice.expect_line("*** saved as 'welcome (1).txt': alice/welcome.txt already exists");
    assert_eq!(
        fs::read(dl.join("welcome.txt")).expect("read"),
        b"my own notes"
    );
    let want = fs::read(w.shared().join("welcome.txt")).expect("read");
    assert_eq!(fs::read(dl.join("welcome (1).txt")).expect("read"), want);
    alice.send("/quit");
    alice.expect_exit_code(0);
}

/// Starts `ann`'s `/download big.bin` into `dl` and stops her process
/// with it half done (SIGSTOP); her `.part`, which is live.
fn stopped_mid_download(ann: &mut Client, dl: &std::path::Path) -> std::path::PathBuf {
    ann.send("/download big.bin");
    ann.expect_prefix("*** downloading big.bin (");
    signal(ann, "STOP");
    let part = dl.join("big.bin.part");
    assert!(
        part.exists() && !dl.join("big.bin").exists(),
        "ann finished before she could be stopped; the test needs a bigger file"
    );
    part
}

/// A download the server stops because nothing was acknowledged for its
/// idle time (a stalled network; here a stopped client) keeps its part,
/// as a cut connection does, and `/download` resumes it.
#[test]
fn a_download_stopped_for_want_of_acks_keeps_its_part_and_resumes() {
    let w = World::with_args("idle-part", &["--transfer-idle-secs", "1"]);
    let data = pseudo_random_bytes(64 << 20, 7);
    fs::write(w.shared().join("big.bin"), &data).expect("write");
    let dl = w.dir.join("dl");
    let dl_arg = dl.display().to_string();
    let port = w.server.port().to_string();
    let mut ann = w.spawn_client(&["ann", "127.0.0.1", &port, "--download-dir", &dl_arg]);
    ann.expect_prefix("*** connected");
    let part = stopped_mid_download(&mut ann, &dl);
    // Past the server's idle time: it stops the download.
    std::thread::sleep(Duration::from_secs(3));
    signal(&ann, "CONT");
    let failed = ann.expect_prefix("error: transfer of big.bin failed: ");
    assert!(
        failed.contains("nothing acknowledged") && failed.ends_with("/download big.bin resumes it"),
        "{failed}"
    );
    assert!(part.exists(), "the part was removed");
    ann.send("/download big.bin");
    ann.expect_prefix("*** resuming big.bin after the ");
    ann.expect_prefix("*** downloaded big.bin (");
    assert!(
        fs::read(dl.join("big.bin")).expect("read") == data,
        "ann's copy is whole"
    );
    ann.send("/quit");
    // The first /download did not complete: the exit code says so.
    ann.expect_exit_code(1);
}

#[test]
fn two_clients_sharing_a_download_folder_never_share_a_part_file() {
    let w = World::new("shared-part");
    let data = pseudo_random_bytes(128 << 20, 5);
    fs::write(w.shared().join("big.bin"), &data).expect("write");
    let dl = w.dir.join("common");
    let dl_arg = dl.display().to_string();
    let port = w.server.port().to_string();
    let args = |name: &'static str| {
        [name, "127.0.0.1", &port, "--download-dir", &dl_arg].map(String::from)
    };
    let a_args = args("ann");
    let mut ann = w.spawn_client(&a_args.each_ref().map(String::as_str));
    ann.expect_prefix("*** connected");
    stopped_mid_download(&mut ann, &dl);
    let b_args = args("ben");
    let mut ben = w.spawn_client(&b_args.each_ref().map(String::as_str));
    ben.expect_prefix("*** connected");
    ben.send("/download big.bin");
    let busy = ben.expect_prefix("error: cannot download big.bin: ");
    assert!(busy.contains("being written by another transfer"), "{busy}");
    signal(&ann, "CONT");
    ann.expect_prefix("*** downloaded big.bin (");
    assert!(
        fs::read(dl.join("big.bin")).expect("read") == data,
        "ann's copy is whole"
    );
    ann.assert_no_line("no failure", |l| l.starts_with("error: transfer of"));
    // The part is free again: ben downloads beside ann's file.
    ben.send("/download big.bin");
    ben.expect_prefix("*** downloaded big.bin (");
    ben.expect_prefix("*** saved as 'big (1).bin'");
    assert!(fs::read(dl.join("big (1).bin")).expect("read") == data);
    ben.assert_no_line("no false failure", |l| l.starts_with("error: transfer of"));
    ben.send("/quit");
    // His first /download did not happen: the exit code says so.
    ben.expect_exit_code(1);
    ann.send("/quit");
    ann.expect_exit_code(0);
}

#[cfg(unix)]
#[test]
fn a_part_file_planted_as_a_link_is_refused_and_its_target_untouched() {
    let w = World::new("part-link");
    let dl = w.dir.join("alice");
    fs::create_dir_all(&dl).expect("mkdir");
    let shared = fs::read(w.shared().join("welcome.txt")).expect("read");
    // The target holds a prefix of the file: once "resumed from".
    let target = w.dir.join("precious.txt");
    fs::write(&target, &shared[..10]).expect("write");
    std::os::unix::fs::symlink(&target, dl.join("welcome.txt.part")).expect("symlink");
    let mut alice = w.client("alice");
    alice.send("/download welcome.txt");
    let err = alice.expect_prefix("error: cannot download welcome.txt: ");
    assert!(err.contains("not a regular file"), "{err}");
    alice.send("/who");
    alice.expect_prefix("*** online");
    assert_eq!(fs::read(&target).expect("read"), &shared[..10], "untouched");
    assert!(!dl.join("welcome.txt").exists());
    alice.send("/quit");
    alice.expect_exit_code(1);
}

#[cfg(target_os = "linux")]
#[test]
fn a_push_reserves_no_disk_before_its_data_and_a_crash_leaves_no_full_size_part() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new("push-reserve");
    let port = w.server.port().to_string();
    // Bob takes files up to 1 GiB without being asked.
    let mut bob = w.spawn_client(&["bob", "127.0.0.1", &port, "--auto-accept-bytes", "1G"]);
    bob.expect_prefix("*** connected");
    let size: u64 = 64 << 20;
    let mut pusher = offer_from_a_raw_pusher(&w, &mut bob, "big.bin", size);
    let part = w.dir.join("bob").join("received").join("big.bin.part");
    let used = |p: &std::path::Path| fs::metadata(p).expect("part").blocks() * 512;
    assert!(
        used(&part) < 1 << 20,
        "{} bytes allocated for nothing",
        used(&part)
    );
    // Some data: what is allocated follows it, a bounded step ahead.
    push_the_first_quarter_mebibyte(&mut pusher, size, &part);
    bob.kill();
    assert!(used(&part) <= 16 << 20, "{} bytes allocated", used(&part));
}

#[test]
fn a_message_larger_than_a_mebibyte_reaches_a_client_of_a_server_that_allows_it() {
    let w = World::with_args(
        "bigframe",
        &[
            "--max-frame-bytes",
            "4194304",
            "--max-message-bytes",
            "2000000",
            "--rate-burst-bytes",
            "4000000",
            "--max-queue-bytes",
            "16777216",
        ],
    );
    let alice = w.client("alice");
    let mut options = imchat_core::blocking::ConnectOptions::default();
    options.limits.max_text = 2_000_000;
    options.limits.max_frame = 4 << 20;
    let mut bob =
        imchat_core::blocking::Client::connect(("127.0.0.1", w.server.port()), "bob", options)
            .expect("bob");
    alice.expect_line("*** bob has joined");
    let text = "y".repeat(1_500_000);
    bob.send_chat(Recipient::Everyone, &text).expect("sent");
    bob.send_chat(Recipient::Everyone, "after").expect("sent");
    alice.expect_line("<bob> after");
    let lines = alice.out.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.len() == "<bob> ".len() + text.len() && l.ends_with('y')),
        "the large message, whole"
    );
    alice.assert_no_line("a lost connection", |l| l.contains("reconnect"));
}

#[test]
fn a_script_whose_resumed_download_fails_its_checksum_says_so_and_exits_1() {
    let w = World::new("bad-resume");
    let port = w.server.port().to_string();
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8 + 1).collect();
    fs::write(w.shared().join("big.bin"), &data).expect("shared file");
    let dl = w.dir.join("dave");
    fs::create_dir_all(&dl).expect("download folder");
    // The failure races the quit that follows it: held where it raced.
    for round in 0..2 {
        // A .part that does not hold the file's start: the whole-file
        // checksum fails once the rest has arrived.
        fs::write(dl.join("big.bin.part"), vec![0u8; 5_000_000]).expect("part");
        let mut dave = Client::spawn_with_env(
            w.dir.path(),
            &["--no-resume", "dave", "127.0.0.1", &port],
            &[("FAILPOINTS", "client-transfer-failed=sleep(300)")],
        );
        dave.send("/download big.bin");
        dave.send("/quit");
        let err = dave.expect_exit_code(1);
        assert!(
            dave.out
                .lines()
                .iter()
                .chain(err.iter())
                .any(|l| l.contains("big.bin failed")),
            "round {round}: no failure line\n{}",
            dave.report()
        );
    }
}

#[test]
fn a_file_whose_name_has_255_bytes_is_downloaded() {
    let w = World::new("long-name");
    let port = w.server.port().to_string();
    let long = format!("{}.txt", "L".repeat(251));
    assert_eq!(long.len(), 255);
    fs::write(w.shared().join(&long), b"the whole file").expect("shared file");
    let mut eve = w.spawn_client(&["eve", "127.0.0.1", &port]);
    eve.send(&format!("/download {long}"));
    eve.send("/quit");
    eve.expect_exit_code(0);
    assert_eq!(
        fs::read(w.dir.join("eve").join(&long)).expect("downloaded"),
        b"the whole file"
    );
}

#[test]
fn a_scripts_local_errors_come_after_the_answers_to_its_earlier_lines() {
    let w = World::new("local-order");
    let port = w.server.port().to_string();
    let mut fay = w.spawn_client(&["fay", "127.0.0.1", &port]);
    fay.send("/who");
    fay.send("/sendfile no/such/file.txt");
    fay.send("/quit");
    // A push whose file cannot be read failed: the exit code says so.
    fay.expect_exit_code(1);
    // The plain client shows errors in its output, in the order of events.
    let lines = fay.out.lines();
    let who = lines.iter().position(|l| l.contains("online ("));
    assert!(who.is_some(), "no /who answer\n{}", fay.report());
    let error = lines
        .iter()
        .position(|l| l.contains("cannot open no/such/file.txt"));
    assert!(
        error.is_some_and(|e| e > who.unwrap()),
        "the error before the answer to /who: {lines:?}"
    );
}

/// The classroom programs' bare command words are chat text here, as any
/// plain words are; the sender is told so, and the command that does it.
#[test]
fn the_classroom_programs_bare_commands_go_as_chat_with_a_note() {
    let w = World::new("bare-words");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    alice.send("exit");
    bob.expect_line("<alice> exit");
    alice.expect_line("*** (sent as chat: to leave, type /quit)");
    alice.send("download welcome.txt");
    bob.expect_line("<alice> download welcome.txt");
    alice.expect_line("*** (sent as chat: to download it, type /download welcome.txt)");
    // Still there; chat that only starts like one gets no note.
    alice.send("exit now, see you");
    bob.expect_line("<alice> exit now, see you");
    alice.send("/who");
    let who = alice.expect_prefix("*** online (2):");
    assert!(who.contains("alice") && who.contains("bob"), "{who}");
    let notes = alice
        .out
        .lines()
        .iter()
        .filter(|l| l.starts_with("*** (sent as chat"))
        .count();
    assert_eq!(notes, 2, "{}", alice.report());
}

#[test]
fn slash_and_a_users_name_writes_to_that_user_as_the_classroom_programs_did() {
    let w = World::new("slash-user");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let carol = w.client("carol");
    alice.expect_line("*** carol has joined");
    alice.send("/Bob hello there");
    bob.expect_line("<alice> (private) hello there");
    // Not a user online, nor a command: an error, as before.
    alice.send("/nobody hi");
    alice.expect_line("error: unknown command /nobody; type /help for the list");
    alice.send("/carol marker");
    carol.expect_line("<alice> (private) marker");
    carol.assert_no_line("bob's message", |l| l.contains("hello there"));
    // A command mistyped by one letter is not a message to a user who has
    // that name: `/mgs` is said to be unknown, and nothing goes to mgs.
    let mgs = w.client("mgs");
    alice.expect_line("*** mgs has joined");
    alice.send("/mgs bob my secret");
    alice.expect_line(
        "error: unknown command /mgs; did you mean /msg? (to write to the user mgs: /msg mgs <text>)",
    );
    alice.send("/msg mgs marker");
    mgs.expect_line("<alice> (private) marker");
    mgs.assert_no_line("the mistyped command", |l| l.contains("my secret"));
    // Another chat program's command gets imchat's way; a user of that
    // name online gets the message, as for any other name.
    alice.send("/nick alicia");
    alice.expect_line(
        "error: imchat has no /nick: a name is chosen when connecting; /quit and connect again with another",
    );
    let topic = w.client("topic");
    alice.expect_line("*** topic has joined");
    alice.send("/topic hello you");
    topic.expect_line("<alice> (private) hello you");
    // `/nick` is one letter from `/kick`, but no typo of it: a user named
    // nick gets the message too.
    let nick = w.client("nick");
    alice.expect_line("*** nick has joined");
    alice.send("/nick hello nick");
    nick.expect_line("<alice> (private) hello nick");
}

/// `/bob` with no text, bob online: the usage of `/<user> <message>`,
/// not a suggestion of `/ban`.
#[test]
fn a_users_name_alone_after_a_slash_gets_the_usage_of_that_form() {
    let w = World::new("slash-user-alone");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    alice.send("/Bob");
    alice.expect_line("error: usage: /Bob <message> writes to bob privately");
    alice.send("/bob marker");
    bob.expect_line("<alice> (private) marker");
    alice.assert_no_line("a suggestion", |l| l.contains("did you mean"));
    // Not online: unknown, as before.
    alice.send("/nobody");
    alice.expect_line("error: unknown command /nobody; type /help for the list");
}

#[test]
fn a_pusher_is_told_when_a_receiver_who_accepted_did_not_get_the_file() {
    let w = World::new("push-missed");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    // Carol is a program that takes the file, then stops reading: the
    // push waits for her, and she goes away in the middle of it.
    let mut carol = imchat_core::blocking::Client::connect(
        ("127.0.0.1", w.server.port()),
        "carol",
        imchat_core::blocking::ConnectOptions::default(),
    )
    .expect("carol");
    alice.expect_line("*** carol has joined");
    fs::create_dir(w.dir.join("outbox")).expect("outbox");
    let data = pseudo_random_bytes(12 * 1024 * 1024, 7);
    let path = w.dir.join("outbox").join("twelve.bin");
    fs::write(&path, &data).expect("file");
    alice.send(&format!("/sendfile {}", path.display()));
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "carol was offered nothing"
        );
        let event = carol
            .next_event(std::time::Duration::from_millis(100))
            .expect("carol's connection");
        if matches!(
            event,
            Some(imchat_core::ClientEvent::TransferStarted { .. })
        ) {
            break;
        }
    }
    alice.expect_line("*** sending twelve.bin: accepted by 2 user(s)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(carol);
    bob.expect_prefix("*** received twelve.bin (");
    alice.expect_line(
        "*** sent twelve.bin to 1 user(s); 1 of the 2 who accepted it did not get it whole",
    );
}

#[test]
fn every_local_answer_of_a_script_comes_after_the_answers_to_its_earlier_lines() {
    let w = World::new("local-order-all");
    let _bob = w.client("bob");
    let port = w.server.port().to_string();
    let long = "x".repeat(imchat_core::DEFAULT_MAX_TEXT + 1);
    let script = format!(
        "/who\n/register\n/who\n/accept\n/who\n/cancel nothing\n/who\n/mode unicast bob\n\
         /who\n{long}\n/quit\n"
    );
    for json in [false, true] {
        let mut args = vec!["bot", "127.0.0.1", &port];
        if json {
            args.insert(0, "--json");
        }
        let mut bot = w.script(&args, script.clone().into_bytes());
        // The overlong line was not sent: the script fails, saying so.
        let err = bot.expect_exit_code(1);
        assert_eq!(
            err.last().map(String::as_str),
            Some("imchat-client: 1 line(s) not sent"),
            "{}",
            bot.report()
        );
        let lines = bot.out.lines();
        let at = |what: &str, from: usize, want: &str| -> usize {
            lines
                .iter()
                .skip(from)
                .position(|l| l.contains(want))
                .map(|i| i + from)
                .unwrap_or_else(|| panic!("json {json}: no {what} after line {from}: {lines:?}"))
        };
        let mut from = 0;
        for (what, want) in [
            ("register", "/register needs a password"),
            ("accept", "no file is offered to you"),
            ("cancel", "no running transfer is nothing"),
            ("mode", "mode: unicast to bob"),
            ("too long", "is longer than the limit"),
        ] {
            let who = at("who", from, "online (2): bob, bot");
            from = at(what, who + 1, want) + 1;
        }
    }
}

#[test]
fn a_private_message_to_nobody_online_is_not_shown_sent_only_its_error() {
    let w = World::new("refused-msg");
    let port = w.server.port().to_string();
    let want =
        "message to nobody not delivered: \"hello there\" (no user named 'nobody' is online)";
    let mut bob = w.client("bob");
    bob.send("/msg nobody hello there");
    bob.expect_line(&format!("error: {want}"));
    // With --json: no own message (it was not sent), the error names it;
    // one to a user online is shown as sent.
    let mut jo = w.script(
        &["--json", "jo", "127.0.0.1", &port],
        b"/msg nobody hello there\n/msg bob to bob\n/quit\n".to_vec(),
    );
    let err = jo.expect_exit_code(1);
    assert_eq!(
        err,
        [
            format!("imchat-client: {want}"),
            "imchat-client: 1 line(s) not sent".to_string()
        ],
        "{}",
        jo.report()
    );
    let lines = jo.out.lines();
    let own = |text: &str| {
        lines.iter().position(|l| {
            let v = parse(l);
            v["type"] == "chat" && v["own"] == true && v["text"] == text
        })
    };
    let error = lines.iter().position(|l| {
        let v = parse(l);
        v["type"] == "error" && v["text"] == want
    });
    assert!(
        own("hello there").is_none() && error.is_some(),
        "its error only: {lines:?}"
    );
    assert!(
        matches!((error, own("to bob")), (Some(e), Some(o)) if e < o),
        "the error, then the message to bob shown as sent: {lines:?}"
    );
}

/// A script whose lines were not all sent (one refused by the client as
/// too long, one by the server: nobody to take it) says each on stderr,
/// as the README says of every failure, and exits 1 after a count; the
/// lines sent went.
#[test]
fn a_script_with_lines_not_sent_says_each_on_stderr_and_exits_1() {
    let w = World::new("unsent-lines");
    let bob = w.client("bob");
    let port = w.server.port().to_string();
    let long = "y".repeat(70_000);
    let script = format!("first\n{long}\n/msg nobody hi\nlast\n");
    let mut bot = w.script(&["bot", "127.0.0.1", &port], script.into_bytes());
    let err = bot.expect_exit_code(1);
    assert_eq!(
        common::non_empty(&err),
        [
            "imchat-client: message of 70000 bytes is longer than the limit of 65536 bytes",
            "imchat-client: message to nobody not delivered: \"hi\" (no user named 'nobody' is online)",
            "imchat-client: 2 line(s) not sent",
        ],
        "{}",
        bot.report()
    );
    // On stdout as before, in its order.
    bot.expect_line("error: message of 70000 bytes is longer than the limit of 65536 bytes");
    bob.expect_line("<bot> first");
    bob.expect_line("<bot> last");
}

#[test]
fn a_resumed_download_of_a_file_changed_on_the_server_says_so_and_starts_over() {
    let w = World::new("changed-resume");
    let port = w.server.port().to_string();
    let data = pseudo_random_bytes(3_000_000, 5);
    fs::write(w.shared().join("mod.bin"), &data).expect("shared file");
    let dl = w.dir.join("dave");
    fs::create_dir_all(&dl).expect("download folder");
    // The first part of another version of the file, of the same size.
    fs::write(dl.join("mod.bin.part"), pseudo_random_bytes(1_000_000, 6)).expect("part");
    let mut dave = w.script(
        &["dave", "127.0.0.1", &port],
        b"/download mod.bin\n/quit\n".to_vec(),
    );
    let err = dave.expect_exit_code(1);
    let said = dave.out.lines().into_iter().chain(err).collect::<Vec<_>>();
    assert!(
        said.iter().any(|l| l.contains("transfer of mod.bin failed: the file may have changed on the server since the first part was downloaded")
            && l.ends_with("the partial file was removed: /download mod.bin starts over")),
        "{}",
        dave.report()
    );
    assert!(
        !dl.join("mod.bin.part").exists(),
        "the partial file is removed"
    );
    assert!(!dl.join("mod.bin").exists());
}

#[test]
fn messages_files_and_unicast_mode_to_yourself() {
    let w = World::new("to-self");
    let port = w.server.port().to_string();
    fs::write(w.dir.join("p.txt"), b"mine").expect("file");
    let mut bob = w.script(
        &["--json", "bob", "127.0.0.1", &port],
        b"/msg BOB hi me\n/mode unicast bob\n/sendfile p.txt Bob\n/who\n/quit\n".to_vec(),
    );
    // The two refused requests (unicast to yourself, a file to yourself)
    // make a script's run exit 3.
    bob.expect_exit_code(3);
    let lines = bob.out.lines();
    let shown = lines.iter().filter(|l| parse(l)["text"] == "hi me").count();
    assert_eq!(shown, 1, "a message to yourself is shown once: {lines:?}");
    let errors: Vec<String> = lines
        .iter()
        .map(|l| parse(l))
        .filter(|v| v["type"] == "error")
        .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        errors.iter().any(|e| e == "cannot send a file to yourself"),
        "{lines:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("cannot send your lines to yourself")),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| parse(l)["text"] == "mode: unicast to bob"),
        "{lines:?}"
    );
    assert!(
        !w.dir.join("bob").join("received").exists(),
        "no copy received"
    );
    // Plain piped output shows no line of ours but what came back: once.
    let mut carol = w.script(
        &["carol", "127.0.0.1", &port],
        b"/msg carol note to self
/who
/quit
"
        .to_vec(),
    );
    carol.expect_exit_code(0);
    let lines = carol.out.lines();
    let shown = lines.iter().filter(|l| l.ends_with("note to self")).count();
    assert_eq!(shown, 1, "{lines:?}");
}

/// A server of a cluster that cannot reach the others says so after its
/// welcome, and later that it can again: a `--json` client shows each as
/// a line (an error, then a notice) and in its status (`cut_off`), as the
/// full-screen client's status line does.
#[test]
fn json_a_cluster_outage_is_in_the_status_until_it_is_over() {
    use imchat_core::NoticeCode;

    let dir = TempDir::new("cluster-status");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
    // A server of a cluster cut off from the rest, as far as this client
    // can tell: welcome, the outage, and its end when the test says.
    let server = std::thread::spawn(move || {
        let (mut reader, mut writer, username) = fake_welcome(&listener);
        let notice = |code: NoticeCode, text: &str| ServerMessage::Notice {
            code,
            text: text.into(),
        };
        for m in [
            notice(NoticeCode::CLUSTER_DOWN, "the cluster cannot be reached"),
            ServerMessage::Who {
                users: vec![imchat_core::OnlineUser::here(username)],
            },
        ] {
            writer.send(&m).expect("send");
        }
        back_rx.recv_timeout(TIMEOUT).expect("the test's word");
        writer
            .send(&notice(
                NoticeCode::CLUSTER_BACK,
                "the cluster is reachable again",
            ))
            .expect("send");
        // Held open until the client is stopped.
        while let Ok(Some(_)) = reader.read_message() {}
    });
    let client = Client::spawn(dir.path(), &["--json", "alice", "127.0.0.1", &port]);
    let cut_off = |l: &str| {
        let v = parse(l);
        (v["type"] == "status" && v["link"]["state"] == "connected").then(|| v["cut_off"] == true)
    };
    client.expect("the outage as an error", |l| {
        let v = parse(l);
        v["type"] == "error" && v["text"] == "the cluster cannot be reached"
    });
    client.expect("a status cut off", |l| cut_off(l) == Some(true));
    back_tx.send(()).expect("tell the server");
    client.expect("its end as a notice", |l| {
        let v = parse(l);
        v["type"] == "notice" && v["text"] == "the cluster is reachable again"
    });
    client.expect("a status no longer cut off", |l| cut_off(l) == Some(false));
    drop(client);
    server.join().expect("fake server");
}

/// Joins and leaves replayed after a resume happened before they are
/// shown: a `--json` client gives each notice the time the server noted
/// (as it gives a chat its own), and `--chat-log` stamps its line with
/// it, not with the time it arrived (they were stamped with that, while
/// replayed chat kept its time). A fake server sends them with times long
/// past, each alone (as a resume's replay does) and in a batch.
#[test]
fn json_and_the_chat_log_show_a_join_or_leave_at_the_time_the_server_noted() {
    use imchat_core::{Departure, LeaveReason, MessageId, PresenceEvent, Timestamp, Username};
    use std::time::UNIX_EPOCH;

    /// 2023-11-14T22:13:20Z.
    const AT: u64 = 1_700_000_000_000;
    let dir = TempDir::new("presence-time");
    let log = dir.join("chat.log");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let server = std::thread::spawn(move || {
        let (mut reader, mut writer, username) = fake_welcome(&listener);
        let name = |n: &str| Username::new(n).expect("a name");
        for m in [
            ServerMessage::Who {
                users: vec![imchat_core::OnlineUser::here(username)],
            },
            ServerMessage::Joined {
                id: MessageId(1),
                time: Timestamp(AT),
                user: name("bob"),
            },
            ServerMessage::Left(Departure {
                id: MessageId(2),
                time: Timestamp(AT + 1_000),
                user: name("bob"),
                reason: LeaveReason::QUIT,
                text: String::new(),
            }),
            ServerMessage::Presence(vec![
                PresenceEvent::Joined {
                    id: MessageId(3),
                    time: Timestamp(AT + 2_000),
                    user: name("carol"),
                },
                PresenceEvent::Left(Departure {
                    id: MessageId(4),
                    time: Timestamp(AT + 3_000),
                    user: name("carol"),
                    reason: LeaveReason::QUIT,
                    text: "bye".into(),
                }),
            ]),
        ] {
            writer.send(&m).expect("send");
        }
        // Held open until the client is stopped.
        while let Ok(Some(_)) = reader.read_message() {}
    });
    let log_arg = log.to_str().expect("a UTF-8 path");
    let client = Client::spawn(
        dir.path(),
        &["--json", "--chat-log", log_arg, "alice", "127.0.0.1", &port],
    );
    let events = [
        ("bob has joined", 0, "2023-11-14T22:13:20Z"),
        ("bob has left", 1_000, "2023-11-14T22:13:21Z"),
        ("carol has joined", 2_000, "2023-11-14T22:13:22Z"),
        ("carol has left (bye)", 3_000, "2023-11-14T22:13:23Z"),
    ];
    for (text, _, time) in events {
        let line = client.expect(&format!("the notice `{text}`"), |l| {
            let v = parse(l);
            v["type"] == "notice" && v["text"] == text
        });
        assert_eq!(parse(&line)["time"], time, "{line}");
    }
    // Each line was logged before the view showed it.
    let logged = fs::read_to_string(&log).expect("the chat log");
    for (text, after, _) in events {
        let when = UNIX_EPOCH + Duration::from_millis(AT + after);
        let stamp = chrono::DateTime::<chrono::Local>::from(when).format("%Y-%m-%d %H:%M:%S");
        let want = format!("{stamp} *** {text}");
        assert!(
            logged.lines().any(|l| l == want),
            "no {want:?} in\n{logged}"
        );
    }
    drop(client);
    server.join().expect("fake server");
}

/// A server that floods the client with pings without reading the
/// answers (stuck, or hostile): the client answers ten a second, not one
/// per ping, so nothing piles up (it printed an error line per answer it
/// could not queue, millions, and grew to 350 MB), says nothing, and the
/// connection goes on; the answers read afterwards are that few.
#[test]
fn a_ping_flood_gets_ten_answers_a_second_and_no_line() {
    use imchat_core::Encode as _;
    use std::io::Write as _;

    let dir = TempDir::new("unread-pings");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let (flooded_tx, flooded_rx) = std::sync::mpsc::channel::<u64>();
    let server = std::thread::spawn(move || {
        let (mut reader, writer, _) = fake_welcome(&listener);
        let mut out = writer.get_ref().try_clone().expect("clone");
        out.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("write timeout");
        // 3 s of pings in batches, nothing read.
        let mut sent = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) && sent < 4_000_000 {
            let batch: Vec<u8> = (sent..sent + 10_000)
                .flat_map(|n| ServerMessage::Ping(n).to_frame())
                .collect();
            if out.write_all(&batch).is_err() {
                break;
            }
            sent += 10_000;
        }
        let flooded = started.elapsed();
        // Now the answers, until a second passes without one.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("read timeout");
        let mut pongs = 0u64;
        while let Ok(Some(m)) = reader.read_message() {
            if matches!(m, ClientMessage::Pong(_)) {
                pongs += 1;
            }
        }
        let _ = flooded_tx.send(sent);
        (pongs, flooded)
    });
    let mut client = Client::spawn(dir.path(), &["--no-reconnect", "alice", "127.0.0.1", &port]);
    let sent = flooded_rx.recv_timeout(TIMEOUT).expect("the flood's end");
    let (pongs, flooded) = server.join().expect("fake server");
    let status = fs::read_to_string(format!("/proc/{}/status", client.pid())).unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    assert!(sent >= 10_000, "the flood did not start");
    // Ten a second over the flood and the second after it, and a few.
    let most = (flooded.as_secs_f64() + 2.0) * 10.0 + 5.0;
    assert!(
        (1..=most as u64).contains(&pongs),
        "{pongs} answers to {sent} pings in {flooded:?}"
    );
    assert!(peak_kb < 100_000, "the client peaked at {peak_kb} kB");
    assert!(client.is_running(), "{}", client.report());
    let out = client.out.lines();
    assert!(
        out.len() < 10,
        "{} stdout lines: {:?}",
        out.len(),
        &out[..out.len().min(5)]
    );
    client.kill();
}

/// A download past the file-size limit (`ulimit -f`) fails with a line
/// that says why, and the client goes on to exit as for any failed
/// transfer (before: killed by SIGXFSZ without a word, exit 153).
#[test]
fn a_download_past_the_file_size_limit_fails_with_a_line() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let w = World::new("fsize");
    fs::write(w.shared().join("big.bin"), pseudo_random_bytes(4 << 20, 5)).expect("write");
    let port = w.server.port().to_string();
    // 2048 blocks of 512 or 1024 bytes, whichever the shell counts: 1 or
    // 2 MiB, below the file's 4.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 2048 && exec \"$0\" \"$@\"")
        .arg(common::client_bin())
        .args(["bot", "127.0.0.1", &port])
        .current_dir(w.dir.path())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("XDG_DATA_HOME", w.dir.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let out = common::Output::capture(child.stdout.take().expect("stdout"));
    let err = common::Output::capture(child.stderr.take().expect("stderr"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"/download big.bin\n").expect("type");
    drop(stdin);
    let status = common::wait_exit(&mut child, Duration::from_secs(60));
    let said = format!("{}\n{}", out.text(), err.text());
    let status = status.unwrap_or_else(|| panic!("did not exit:\n{said}"));
    assert_eq!(status.code(), Some(1), "{status:?}\n{said}");
    assert!(
        said.contains("transfer of big.bin failed: cannot write")
            && said.contains("file too large"),
        "{said}"
    );
    assert!(!w.dir.join("bot").join("big.bin").exists());
}

/// The stock client sends a push within the server's credit: a file of
/// several credits reaches a receiver that stores it (the credit grows as
/// it does); and while a receiver that stores nothing holds a push at its
/// first credit (1 MiB), the pusher's chat reaches the others at once.
/// Before, the server stopped reading the pusher there, and its chat line
/// waited until the stuck receiver was dropped (10 s).
#[test]
fn a_push_goes_within_its_credit_and_the_pusher_s_chat_never_waits_behind_it() {
    let w = World::new("push-credit");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    let mut stuck = Raw::join(w.server.addr, "stuck");
    barrier(&mut alice, "alice", "all here", &[&bob]);
    fs::create_dir(w.dir.join("outbox")).expect("outbox");
    // Several credits' worth, to bob, who stores it as it comes.
    let data = pseudo_random_bytes(6 << 20, 4);
    let path = w.dir.join("outbox").join("six.bin");
    fs::write(&path, &data).expect("six.bin");
    alice.send(&format!("/sendfile {} bob", path.display()));
    bob.expect_prefix(&format!(
        "*** received six.bin ({} bytes) from alice, saved to ",
        data.len()
    ));
    alice.expect_line("*** sent six.bin to 1 user(s)");
    let got = fs::read(w.dir.join("bob").join("received").join("six.bin")).expect("bob's copy");
    assert!(got == data, "bob's copy differs");
    // A big one to `stuck`, which accepts it, reads its first credit's
    // worth and then nothing more (nor acknowledges anything).
    let big = w.dir.join("outbox").join("big.bin");
    fs::write(&big, pseudo_random_bytes(8 << 20, 5)).expect("big.bin");
    alice.send(&format!("/sendfile {} stuck", big.display()));
    let (start, seen) = stuck.recv_until(TIMEOUT, |m| matches!(m, ServerMessage::FileStart(_)));
    let Some(ServerMessage::FileStart(FileStart { id, .. })) = start else {
        panic!("no offer: {seen:?}");
    };
    stuck.send(&ClientMessage::Accept { id });
    let credit = imchat_core::PUSH_CREDIT;
    let mut relayed = 0u64;
    for _ in 0..1024 {
        if relayed >= credit {
            break;
        }
        let (chunk, seen) = stuck.recv_until(TIMEOUT, |m| matches!(m, ServerMessage::Chunk(_)));
        let Some(ServerMessage::Chunk(c)) = chunk else {
            panic!("no more data after {relayed} bytes: {seen:?}");
        };
        relayed += c.data.len() as u64;
    }
    assert_eq!(relayed, credit, "the push went as far as its credit");
    let sent = Instant::now();
    alice.send("still here");
    bob.expect_line("<alice> still here");
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the pusher's chat line took {took:?} while its push waited"
    );
    // Nothing more went to `stuck` meanwhile.
    let (more, _) = stuck.recv_until(Duration::from_millis(200), |m| {
        matches!(m, ServerMessage::Chunk(_))
    });
    assert!(more.is_none(), "data past the credit: {more:?}");
    // Its receiver gone, the push ends for alice at once.
    drop(stuck);
    alice.expect_prefix("error: sending big.bin failed");
}

/// `/ignore bob` drops what bob says to everyone and to alice, and his
/// file offers, while carol is still heard; `/ignore` lists him, and
/// `/unignore` lets him be heard again.
#[test]
fn an_ignored_user_is_not_heard_until_unignored() {
    let w = World::new("ignore");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    let mut carol = w.client("carol");
    alice.expect_line("*** carol has joined");
    alice.send("/ignore BOB");
    alice.expect_line(
        "*** ignoring BOB: its messages and file offers are dropped until /unignore BOB or the client ends",
    );
    alice.send("/ignore bob");
    alice.expect_line("*** bob is ignored already");
    alice.send("/ignore alice");
    alice.expect_line("error: you cannot ignore yourself");
    alice.send("/ignore");
    alice.expect_line("*** you ignore BOB");
    bob.send("hello all");
    bob.send("/msg alice psst");
    let file = w.dir.path().join("note.txt");
    std::fs::write(&file, "hi").unwrap();
    bob.send(&format!("/sendfile {} alice", file.display()));
    carol.expect_line("<bob> hello all");
    carol.send("carol here");
    alice.expect_line("<carol> carol here");
    bob.expect("the push ends unaccepted", |l| {
        l.contains("note.txt") && l.contains("alice")
    });
    alice.send("/unignore Bob");
    alice.expect_line("*** no longer ignoring Bob");
    bob.send("back");
    // After "psst" and the offer, from the same sender: they were read.
    alice.expect_line("<bob> back");
    let heard = alice.out.lines();
    for dropped in ["hello all", "psst", "note.txt"] {
        assert!(
            !heard.iter().any(|l| l.contains(dropped)),
            "{dropped:?} shown: {}",
            alice.report()
        );
    }
}

/// A script's `/transfers` gives what has moved and the size in exact
/// counts of bytes, as its other transfer lines do (it gave them rounded,
/// `256.0 KiB / 1.0 MiB`, as the full-screen rows show them).
#[test]
fn a_scripts_transfers_list_gives_exact_counts_of_bytes() {
    let w = World::new("transfers-bytes");
    let port = w.server.port().to_string();
    let mut bob = w.spawn_client(&["bob", "127.0.0.1", &port]);
    bob.expect_prefix("*** connected");
    let size: u64 = 1 << 20;
    let mut pusher = offer_from_a_raw_pusher(&w, &mut bob, "half.bin", size);
    // A quarter of the file, then nothing: the push stays running.
    let part = w.dir.join("bob").join("received").join("half.bin.part");
    push_the_first_quarter_mebibyte(&mut pusher, size, &part);
    bob.send("/transfers");
    let line = bob.expect("the transfer's line", |l| l.contains(" ↓ half.bin  "));
    assert!(
        line.contains("  262144 / 1048576 bytes  25%"),
        "exact counts of bytes: {line}"
    );
    bob.kill();
}

/// A raw client `pusher` joins and offers `bob` a file `name` of `size`
/// bytes (transfer 7), seen by bob.
fn offer_from_a_raw_pusher(w: &World, bob: &mut Client, name: &str, size: u64) -> Raw {
    let mut pusher = Raw::join(w.server.addr, "pusher");
    bob.expect_line("*** pusher has joined");
    pusher.send(&ClientMessage::Offer {
        id: imchat_core::TransferId(7),
        name: imchat_core::FileName::new(name).expect("name"),
        size,
        to: Recipient::Everyone,
    });
    bob.expect_line(&format!("*** pusher is sending you {name} ({size} bytes)"));
    pusher
}

/// Once the offer of [`offer_from_a_raw_pusher`] is accepted, the first
/// 256 KiB of it, waited for until the receiver's `part` file holds them.
fn push_the_first_quarter_mebibyte(pusher: &mut Raw, size: u64, part: &std::path::Path) {
    let (accepted, seen) =
        pusher.recv_until(TIMEOUT, |m| matches!(m, ServerMessage::PushAccepted { .. }));
    assert!(accepted.is_some(), "the receiver accepted: {seen:?}");
    let mut out = imchat_core::Outgoing::new(imchat_core::TransferId(7), size);
    let chunk = out.next_chunk(vec![7u8; 256 * 1024]).expect("chunk");
    pusher.send(&ClientMessage::Chunk(chunk));
    let deadline = Instant::now() + TIMEOUT;
    while fs::metadata(part).map(|m| m.len()).unwrap_or(0) < 256 * 1024 {
        assert!(Instant::now() < deadline, "the chunk was not written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `--json`, a transfer that fails before it is asked of the server
/// (its download folder cannot be created, its file cannot be read) ends
/// with one `transfer_ended` too, its `id` null, as one the server
/// refuses: a script waiting for it no longer waits forever.
#[test]
fn a_transfer_that_fails_before_it_is_asked_ends_in_json() {
    let w = World::new("json-unasked");
    let port = w.server.port().to_string();
    let blocker = w.dir.join("not-a-folder");
    fs::write(&blocker, b"a plain file\n").expect("file");
    let script = b"/download welcome.txt\n/sendfile no/such/file.txt\n/quit\n".to_vec();
    let mut alice = w.script(
        &[
            "--json",
            "--download-dir",
            blocker.to_str().expect("utf-8"),
            "alice",
            "127.0.0.1",
            &port,
        ],
        script,
    );
    alice.expect_exit_code(1);
    assert!(
        alice.out.wait_eof(Duration::from_secs(10)),
        "its output ends"
    );
    let ended: Vec<serde_json::Value> = alice
        .out
        .lines()
        .iter()
        .map(|l| parse(l))
        .filter(|v| v["type"] == "transfer_ended")
        .collect();
    let wanted = [("download", "welcome.txt"), ("send", "file.txt")];
    assert_eq!(ended.len(), wanted.len(), "{ended:?}");
    for (v, (direction, name)) in ended.iter().zip(wanted) {
        assert_eq!(v["direction"], direction, "{v}");
        assert_eq!(v["name"], name, "{v}");
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["id"].is_null(), "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
}

/// A `/sendfile` to a user away (its client killed, its session held
/// for a resume) shows only the server's refusal, not "offering x.txt
/// (…); it is sent once accepted" first, as if it waited for that user.
#[test]
fn a_push_to_a_user_away_shows_only_its_error() {
    let w = World::new("push-away");
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    alice.expect_line("*** bob has joined");
    bob.kill();
    w.server.wait_logged("bob lost its connection");
    // Told live that bob is away (no line for it): a /who after it shows so.
    alice.send("/who");
    alice.expect_prefix("*** online");
    let path = w.dir.join("x.txt");
    fs::write(&path, b"for bob\n").expect("file");
    alice.send(&format!("/sendfile {} bob", path.display()));
    let err = alice.expect_prefix("error: sending x.txt failed: bob is away");
    assert!(err.contains("connected user"), "{err}");
    alice.assert_no_line("an offer to bob", |l| l.starts_with("*** offering x.txt"));
}
