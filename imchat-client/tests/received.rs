//! End-to-end tests of where received files go: free names for long file
//! names, a `received` that is not a folder, and the `.part` files of
//! pushes cut off by the end of the receiving client. Real binaries on
//! 127.0.0.1 (port picked by the OS), bounded waits, processes stopped by
//! their handles.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{pseudo_random_bytes, Client, World, TIMEOUT};

/// Has `speaker` broadcast `marker` and waits until every listener shows it.
fn barrier(speaker: &mut Client, from: &str, marker: &str, listeners: &[&Client]) {
    speaker.send(marker);
    for l in listeners {
        l.expect_line(&format!("<{from}> {marker}"));
    }
}

/// The `.part` files in `dir`.
fn parts_in(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

/// A name of 254 bytes fits, but `name (1).txt` would not (258 bytes): the
/// second copy, pushed or downloaded, gets a stem cut short to fit, and is
/// saved whole instead of failing once it has all arrived.
#[test]
fn a_second_copy_of_a_254_byte_name_gets_a_free_name_that_fits() {
    let long = format!("{}.txt", "L".repeat(250));
    let second = format!("{} (1).txt", "L".repeat(247));
    assert_eq!(second.len(), 255);
    let w = World::new("long-names");
    fs::write(w.shared().join(&long), b"shared copy\n").expect("shared file");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    barrier(&mut alice, "alice", "here", &[&bob]);
    let path = w.dir.join(&long);
    fs::write(&path, b"pushed copy\n").expect("file");

    let received = w.dir.join("bob").join("received");
    for round in 0..2 {
        alice.send(&format!("/sendfile {} bob", path.display()));
        let (at, _) = bob.expect_from(0, "the push received", |l| {
            l.starts_with(&format!(
                "*** received {long} (12 bytes) from alice, saved to "
            )) && l.ends_with(if round == 0 { ".txt" } else { " (1).txt" })
        });
        assert!(
            bob.out.lines()[..at].iter().all(|l| !l.contains("failed")),
            "{}",
            bob.report()
        );
    }
    assert_eq!(
        fs::read(received.join(&long)).expect("first"),
        b"pushed copy\n"
    );
    assert_eq!(
        fs::read(received.join(&second)).expect("second"),
        b"pushed copy\n"
    );

    let downloads = w.dir.join("alice");
    alice.send(&format!("/download {long}"));
    alice.expect_line(&format!("*** downloaded {long} (12 bytes) to alice/{long}"));
    alice.send(&format!("/download {long}"));
    alice.expect_line(&format!(
        "*** downloaded {long} (12 bytes) to alice/{second}"
    ));
    alice.expect_line(&format!(
        "*** saved as '{second}': alice/{long} already exists"
    ));
    assert_eq!(
        fs::read(downloads.join(&long)).expect("first"),
        b"shared copy\n"
    );
    assert_eq!(
        fs::read(downloads.join(&second)).expect("second"),
        b"shared copy\n"
    );
    alice.assert_no_line("a failure", |l| l.contains("failed"));
    bob.assert_no_line("a failure", |l| l.contains("failed"));
    assert!(parts_in(&received).is_empty());
    assert!(parts_in(&downloads).is_empty());
}

/// A file named `received` in the download folder (a download of that
/// name): a push to that client fails at once, saying why, and the chat
/// that follows is shown at once, not after the client has tried every
/// free name in a folder that cannot hold any.
#[test]
fn a_push_to_a_client_whose_received_is_a_file_fails_at_once() {
    let w = World::new("received-file");
    fs::create_dir_all(w.dir.join("bob")).expect("bob's folder");
    fs::write(w.dir.join("bob").join("received"), b"a downloaded file\n").expect("received");
    let mut alice = w.client("alice");
    let bob = w.client("bob");
    barrier(&mut alice, "alice", "here", &[&bob]);
    // Larger than one push credit: the pusher cannot send the whole file
    // (and be told it was sent) before bob's cancel is in. A file within
    // one credit races it: on a loaded machine its end could be relayed
    // first, and the pusher then hears the push went through.
    let path = w.dir.join("note.txt");
    let size = usize::try_from(3 * imchat_core::PUSH_CREDIT).expect("size");
    fs::write(&path, vec![b'x'; size]).expect("file");

    let soon = Duration::from_secs(5);
    let started = Instant::now();
    alice.send(&format!("/sendfile {} bob", path.display()));
    alice.send("/msg bob right after the push");
    let failed = bob.out.wait_line_from(0, soon, |l| {
        l == "*** transfer of note.txt failed: bob/received is not a folder"
    });
    assert!(
        failed.is_some(),
        "no failure line within {soon:?}\n{}",
        bob.report()
    );
    let chat = bob
        .out
        .wait_line_from(0, soon, |l| l == "<alice> (private) right after the push");
    assert!(
        chat.is_some() && started.elapsed() < soon,
        "the message came after {:?}\n{}",
        started.elapsed(),
        bob.report()
    );
    assert_eq!(
        fs::read(w.dir.join("bob").join("received")).expect("still there"),
        b"a downloaded file\n"
    );
    // The pusher hears that bob could not store it, not that bob
    // cancelled, and not bob's paths.
    let told = alice.out.wait_line_from(0, soon, |l| {
        l.contains("note.txt") && l.contains("bob: could not store the file")
    });
    assert!(told.is_some(), "{}", alice.report());
    alice.assert_no_line("bob's path", |l| l.contains("received is not a folder"));
}

/// A push cut off by `kill -9` of the receiving client leaves its `.part`:
/// the next run of that client deletes it and says so, and the next push
/// of that name gets the name itself, not `name (1).ext`. A `.part` that
/// another client still writes (locked) is left alone.
#[test]
fn the_part_of_a_push_cut_off_by_a_killed_receiver_is_removed_at_the_next_start() {
    let w = World::new("push-killed");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let args = ["--auto-accept-bytes", "1G", "bob", "127.0.0.1", &port];
    // Its disk thread slowed down: the push is under way when it is killed.
    let mut bob = Client::spawn_with_env(
        w.dir.path(),
        &args,
        &[("FAILPOINTS", "client-disk-job=sleep(20)")],
    );
    bob.expect_line(&format!("*** connected to 127.0.0.1:{port} as bob"));
    barrier(&mut alice, "alice", "here", &[&bob]);
    let received = w.dir.join("bob").join("received");
    // A `.part` held by a running transfer (another client sharing the
    // folder): not to be touched.
    fs::create_dir_all(&received).expect("received");
    let held_part = received.join("other.bin.part");
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&held_part)
        .expect("held part");
    held.try_lock().expect("lock");

    let data = pseudo_random_bytes(8 << 20, 5);
    let path = w.dir.join("big.bin");
    fs::write(&path, &data).expect("file");
    alice.send(&format!("/sendfile {} bob", path.display()));
    let part = received.join("big.bin.part");
    let deadline = Instant::now() + TIMEOUT;
    while !fs::metadata(&part).is_ok_and(|m| m.len() > 0) {
        assert!(Instant::now() < deadline, "no data came: {}", bob.report());
        std::thread::sleep(Duration::from_millis(2));
    }
    bob.kill();
    assert!(part.exists(), "the cut-off push left its .part");

    let bob = Client::spawn(w.dir.path(), &args);
    bob.expect_prefix(&format!("*** connected to 127.0.0.1:{port} as bob"));
    let small = pseudo_random_bytes(1000, 6);
    fs::write(&path, &small).expect("file");
    alice.send(&format!("/sendfile {} bob", path.display()));
    bob.expect_prefix("*** received big.bin (1000 bytes) from alice, saved to ");
    bob.expect_line("*** received big.bin (1000 bytes) from alice, saved to bob/received/big.bin");
    bob.expect_line("*** removed big.bin.part, left by a push that was cut off");
    assert!(!part.exists(), "{}", bob.report());
    assert!(held_part.exists(), "a locked .part is left alone");
    bob.assert_no_line("the locked .part removed", |l| l.contains("other.bin.part"));
    assert_eq!(fs::read(received.join("big.bin")).expect("big.bin"), small);
    assert!(!received.join("big (1).bin").exists());
    assert_eq!(parts_in(&received), ["other.bin.part"]);
    drop(held);
}

/// Waits (bounded) until the file at `path` is at least `len` bytes long.
fn wait_len(path: &std::path::Path, len: u64) {
    let deadline = Instant::now() + TIMEOUT;
    while fs::metadata(path).map_or(0, |m| m.len()) < len {
        assert!(
            Instant::now() < deadline,
            "{} never reached {len} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A download's `.part` truncated by another program while data still
/// comes, or once all of it is written but before it gets its name, is
/// never given the final name: the client says it changed, removes it,
/// and says how to fetch it again. (Before: "downloaded mid.bin", and the
/// file was corrupt.)
#[test]
fn a_download_whose_part_is_changed_by_another_program_fails() {
    let w = World::new("part-changed");
    let size: u64 = 2 << 20;
    fs::write(w.shared().join("mid.bin"), pseudo_random_bytes(2 << 20, 7)).expect("mid.bin");
    let port = w.server.port().to_string();
    // Its disk thread slowed down: about 0.1 s per chunk of 256 KiB.
    let mut bob = Client::spawn_with_env(
        w.dir.path(),
        &["bob", "127.0.0.1", &port],
        &[("FAILPOINTS", "client-disk-job=sleep(100)")],
    );
    bob.expect_prefix("*** connected to");
    let part = w.dir.join("bob").join("mid.bin.part");
    let failed = "error: transfer of mid.bin failed: bob/mid.bin.part changed on disk while it was being written (by another program): removed; /download mid.bin fetches it again";
    for (when, at) in [("while data comes", 256 << 10), ("once written", size)] {
        let from = bob.out.lines().len();
        bob.send("/download mid.bin");
        wait_len(&part, at);
        fs::OpenOptions::new()
            .write(true)
            .open(&part)
            .and_then(|f| f.set_len(1000))
            .expect("truncate");
        let said = bob.out.wait_line_from(from, TIMEOUT, |l| l == failed);
        assert!(said.is_some(), "{when}: {}", bob.report());
        assert!(!w.dir.join("bob").join("mid.bin").exists(), "{when}");
        assert!(!part.exists(), "{when}");
        bob.assert_no_line("a download", |l| l.starts_with("*** downloaded"));
    }
    bob.send("/download mid.bin");
    bob.expect_prefix("*** downloaded mid.bin");
    assert_eq!(
        fs::read(w.dir.join("bob").join("mid.bin")).expect("whole"),
        pseudo_random_bytes(2 << 20, 7)
    );
}

/// A pushed file's `.part` truncated by another program while data still
/// comes fails that push on the receiver, and the pusher is told the
/// receiver could not store it.
#[test]
fn a_push_whose_part_is_changed_by_another_program_fails_on_both_sides() {
    let w = World::new("push-part-changed");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let bob = Client::spawn_with_env(
        w.dir.path(),
        &["--auto-accept-bytes", "16M", "bob", "127.0.0.1", &port],
        &[("FAILPOINTS", "client-disk-job=sleep(100)")],
    );
    bob.expect_prefix("*** connected to");
    barrier(&mut alice, "alice", "here", &[&bob]);
    let path = w.dir.join("x.bin");
    fs::write(&path, pseudo_random_bytes(4 << 20, 9)).expect("x.bin");
    alice.send(&format!("/sendfile {} bob", path.display()));
    let part = w.dir.join("bob").join("received").join("x.bin.part");
    wait_len(&part, 256 << 10);
    fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .and_then(|f| f.set_len(1000))
        .expect("truncate");
    let said = bob.out.wait_line_from(0, TIMEOUT, |l| {
        l.starts_with("*** transfer of x.bin failed: bob/received/x.bin.part changed on disk while it was being written (by another program): removed; alice can send it again")
    });
    assert!(said.is_some(), "{}", bob.report());
    let told = alice.out.wait_line_from(0, TIMEOUT, |l| {
        l.contains("x.bin") && l.contains("bob: could not store the file")
    });
    assert!(told.is_some(), "{}", alice.report());
    assert!(!part.exists());
    assert!(!w.dir.join("bob").join("received").join("x.bin").exists());
}

/// A file that grows, shrinks, or is written to in place, while it is
/// pushed is not delivered cut short or mixed: the pusher checks it
/// before its end, as the server does for a download, and both sides are
/// told why (a file that got shorter was told to the receivers as "the
/// sender cancelled").
/// (Before: delivered at its old size, or mixed, without a word.)
#[test]
fn a_push_of_a_file_changed_while_sent_fails_on_both_sides() {
    let w = World::new("push-source-changed");
    let port = w.server.port().to_string();
    // Its pushes slowed down: about 0.1 s per chunk.
    let mut alice = Client::spawn_with_env(
        w.dir.path(),
        &["alice", "127.0.0.1", &port],
        &[("FAILPOINTS", "client-push-chunk=sleep(100)")],
    );
    alice.expect_prefix("*** connected to");
    let bob = Client::spawn(
        w.dir.path(),
        &["--auto-accept-bytes", "16M", "bob", "127.0.0.1", &port],
    );
    bob.expect_prefix("*** connected to");
    barrier(&mut alice, "alice", "here", &[&bob]);
    let cases = [
        ("grown", "it is longer than its announced 2097152 bytes"),
        ("written", "it was written to"),
        (
            "shrunk",
            "it ends at byte 1048576, not at its announced 2097152 bytes",
        ),
    ];
    for (n, (how, why)) in cases.into_iter().enumerate() {
        let path = w.dir.join(format!("{how}.bin"));
        fs::write(&path, pseudo_random_bytes(2 << 20, 9)).expect("file");
        let (alice_from, bob_from) = (alice.out.lines().len(), bob.out.lines().len());
        alice.send(&format!("/sendfile {} bob", path.display()));
        let part = w
            .dir
            .join("bob")
            .join("received")
            .join(format!("{how}.bin.part"));
        wait_len(&part, 256 << 10);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        if n == 0 {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::End(0)).expect("seek");
            std::io::Write::write_all(&mut f, b"changed").expect("write");
        } else if n == 1 {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(10)).expect("seek");
            std::io::Write::write_all(&mut f, b"changed").expect("write");
        } else {
            f.set_len(1 << 20).expect("truncate");
        }
        drop(f);
        let failed = format!("file changed while being sent: {why}");
        let said = alice.out.wait_line_from(alice_from, TIMEOUT, |l| {
            l == format!("error: sending {how}.bin failed: {failed}")
        });
        assert!(said.is_some(), "{how}: {}", alice.report());
        let told = bob.out.wait_line_from(bob_from, TIMEOUT, |l| {
            l.starts_with(&format!("*** transfer of {how}.bin failed"))
                && l.contains(&format!("the sender stopped: {failed}"))
        });
        assert!(told.is_some(), "{how}: {}", bob.report());
        assert!(!w
            .dir
            .join("bob")
            .join("received")
            .join(format!("{how}.bin"))
            .exists());
    }
}

/// A file whose name ends in `.part` (a shared `a.txt.part`, a pushed
/// `notes.part`) is saved as `a.txt_part`, and the client says so: under
/// its own name it was taken for the unfinished download of `a.txt`
/// (downloading `a.txt` started over in it, then moved it away, and the
/// file downloaded first was gone), and a received one was deleted at the
/// next start as "left by a push that was cut off".
#[test]
fn a_file_named_like_a_part_file_is_kept_under_a_name_of_its_own() {
    let w = World::new("part-named");
    fs::write(w.shared().join("a.txt.part"), b"a whole file\n").expect("shared");
    fs::write(w.shared().join("a.txt"), b"the other one\n").expect("shared");
    let port = w.server.port().to_string();
    let mut alice = w.client("alice");
    let mut bob = w.client("bob");
    barrier(&mut alice, "alice", "here", &[&bob]);

    let downloads = w.dir.join("bob");
    let from = bob.out.lines().len();
    bob.send("/download a.txt.part");
    bob.expect_from(from, "the download", |l| {
        l == "*** downloaded a.txt.part (13 bytes) to bob/a.txt_part"
    });
    bob.expect_from(from, "the name said", |l| {
        l == "*** saved as 'a.txt_part': names ending in .part are kept for unfinished transfers"
    });
    let from = bob.out.lines().len();
    bob.send("/download a.txt");
    bob.expect_from(from, "the download", |l| {
        l == "*** downloaded a.txt (14 bytes) to bob/a.txt"
    });
    assert_eq!(
        fs::read(downloads.join("a.txt_part")).expect("the first download"),
        b"a whole file\n"
    );
    assert_eq!(
        fs::read(downloads.join("a.txt")).expect("the second download"),
        b"the other one\n"
    );

    let path = w.dir.join("notes.part");
    fs::write(&path, b"pushed notes\n").expect("file");
    alice.send(&format!("/sendfile {} bob", path.display()));
    bob.expect_line(
        "*** received notes.part (13 bytes) from alice, saved to bob/received/notes_part",
    );
    // The next run of bob keeps it.
    drop(bob);
    let bob = Client::spawn(w.dir.path(), &["bob", "127.0.0.1", &port]);
    bob.expect_prefix(&format!("*** connected to 127.0.0.1:{port} as bob"));
    barrier(&mut alice, "alice", "again", &[&bob]);
    bob.assert_no_line("a removal", |l| l.contains("removed"));
    assert_eq!(
        fs::read(downloads.join("received").join("notes_part")).expect("kept"),
        b"pushed notes\n"
    );
    assert!(parts_in(&downloads).is_empty() && parts_in(&downloads.join("received")).is_empty());
}
