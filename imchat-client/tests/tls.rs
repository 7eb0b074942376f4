//! End-to-end tests of TLS: the real binaries on 127.0.0.1, ports picked
//! by the OS, every wait bounded, every process stopped by its handle.
//! The clients keep their known-servers file in the test's folder.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::proxy::Proxy;
use common::{non_empty, pseudo_random_bytes, Client, Server, TempDir, World};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The first-use notice's start.
const FIRST_USE: &str = "*** first TLS connection to 127.0.0.1:";

/// Server flags for a self-signed certificate kept in `data`.
fn self_signed(data: &Path) -> Vec<String> {
    vec![
        "--tls-self-signed".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The fingerprint the server printed at start.
fn server_fingerprint(server: &Server) -> String {
    let (_, line) = server
        .out
        .wait_line_from(0, common::TIMEOUT, |l| {
            l.starts_with("TLS certificate SHA-256 fingerprint: ")
        })
        .expect("the server prints its fingerprint");
    line.rsplit(' ').next().unwrap().to_owned()
}

/// `--tls --known-servers <file>`.
fn tls_flags(known: &Path) -> Vec<String> {
    vec![
        "--tls".into(),
        "--known-servers".into(),
        known.display().to_string(),
    ]
}

/// The one stderr line of a client that must exit with code 1.
fn one_error_line(c: &mut Client) -> String {
    let err = c.expect_exit_code(1);
    let err = non_empty(&err);
    assert_eq!(err.len(), 1, "one line on stderr: {err:?}\n{}", c.report());
    err[0].to_owned()
}

#[test]
fn trust_on_first_use_then_known_then_a_changed_key_is_refused() {
    let data = TempDir::new("tls-data");
    let args = self_signed(data.path());
    let mut w = World::with_args("tofu", &strs(&args));
    let port = w.server.port();
    let printed = server_fingerprint(&w.server);
    let known = w.dir.join("known_servers");
    let flags = tls_flags(&known);

    // First use: the fingerprint is shown and stored.
    let mut alice = w.client_on("alice", port, &strs(&flags));
    let notice = alice.expect_prefix(FIRST_USE);
    assert!(notice.contains(&printed), "{notice} vs {printed}");
    let stored = fs::read_to_string(&known).expect("the known-servers file");
    assert_eq!(stored.trim(), format!("127.0.0.1:{port} {printed}"));

    // Known now: no notice, and chat works over TLS.
    let bob = w.client_on("bob", port, &strs(&flags));
    alice.expect_line("*** bob has joined");
    alice.send("over tls");
    bob.expect_line("<alice> over tls");
    bob.assert_no_line("a first-use notice", |l| l.starts_with(FIRST_USE));
    alice.send("/quit");
    assert_eq!(alice.expect_exit().code(), Some(0), "{}", alice.report());
    drop(bob);

    // A new key on the same address: refused, in one line that says how to fix it.
    w.server.kill();
    for f in fs::read_dir(data.path()).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let shared = w.shared();
    w.server = Server::start_on(w.dir.path(), &shared, &strs(&args), port);
    assert_ne!(server_fingerprint(&w.server), printed, "a new key");
    let mut carol = w.spawn_client(
        &[
            &strs(&flags)[..],
            &["carol", "127.0.0.1", &port.to_string()],
        ]
        .concat(),
    );
    let line = one_error_line(&mut carol);
    assert!(
        line.contains("has changed")
            && line.contains(&format!("127.0.0.1:{port}"))
            && line.contains(&known.display().to_string()),
        "{line}"
    );
    carol.assert_no_line("a connection", |l| l.starts_with("*** connected"));
    // The file still holds the old fingerprint only.
    assert_eq!(fs::read_to_string(&known).unwrap(), stored);
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files in
/// `dir`: (ca.pem, cert.pem, key.pem).
fn make_ca(dir: &Path, tag: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let path = |name: &str| dir.join(format!("{tag}-{name}")).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
    fs::write(&ca, ca_cert.pem()).unwrap();
    fs::write(&cert, leaf.pem()).unwrap();
    fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca, cert, key)
}

#[test]
fn a_ca_file_verifies_the_server_and_another_ca_is_refused() {
    let pki = TempDir::new("tls-pki");
    let (ca, cert, key) = make_ca(pki.path(), "good");
    let (other_ca, _, _) = make_ca(pki.path(), "other");
    let w = World::with_args("ca", &["--tls-cert", &cert, "--tls-key", &key]);
    let port = w.server.port();
    let alice = w.client_on("alice", port, &["--tls-ca", &ca]);
    alice.assert_no_line("a first-use notice", |l| l.starts_with(FIRST_USE));
    let mut bob = w.spawn_client(&["--tls-ca", &other_ca, "bob", "127.0.0.1", &port.to_string()]);
    let line = one_error_line(&mut bob);
    assert!(line.contains("not trusted"), "{line}");
}

#[test]
fn plaintext_and_tls_mismatches_fail_in_one_line() {
    let data = TempDir::new("tls-data-mismatch");
    let w = World::with_args("tls-vs-plain", &strs(&self_signed(data.path())));
    let port = w.server.port().to_string();
    let mut plain = w.spawn_client(&["ann", "127.0.0.1", &port]);
    let line = one_error_line(&mut plain);
    assert!(line.contains("--tls"), "{line}");

    let p = World::new("plain-vs-tls");
    let known = p.dir.join("known_servers");
    let port = p.server.port().to_string();
    let flags = tls_flags(&known);
    let mut tls = p.spawn_client(&[&strs(&flags)[..], &["bob", "127.0.0.1", &port]].concat());
    let line = one_error_line(&mut tls);
    assert!(line.contains("did not answer in TLS"), "{line}");
    // The plaintext server's log says what it was, not a frame too long.
    p.server
        .wait_logged("a TLS handshake on this plaintext server (the client uses TLS");
    // Both servers still serve their own kind.
    let known2 = w.dir.join("known_servers");
    w.client_on("carol", w.server.port(), &strs(&tls_flags(&known2)));
    p.client("dave");
}

#[test]
fn a_download_over_tls_arrives_whole_while_chat_flows() {
    let data = TempDir::new("tls-data-dl");
    let w = World::with_args("tls-download", &strs(&self_signed(data.path())));
    let big = pseudo_random_bytes(24 << 20, 7);
    fs::write(w.shared().join("big.bin"), &big).unwrap();
    let known = w.dir.join("known_servers");
    let flags = tls_flags(&known);
    let port = w.server.port();
    let mut alice = w.client_on("alice", port, &strs(&flags));
    let mut bob = w.client_on("bob", port, &strs(&flags));
    alice.expect_line("*** bob has joined");
    alice.send("/download big.bin");
    alice.expect_line(&format!("*** downloading big.bin ({} bytes)", big.len()));
    bob.send("during the download");
    alice.expect_line("<bob> during the download");
    alice.expect_prefix(&format!("*** downloaded big.bin ({} bytes) to ", big.len()));
    let got = fs::read(w.dir.join("alice").join("big.bin")).unwrap();
    assert!(got == big, "the downloaded bytes differ");
    alice.send("/quit");
    bob.send("/quit");
    assert_eq!(alice.expect_exit().code(), Some(0), "{}", alice.report());
    assert_eq!(bob.expect_exit().code(), Some(0), "{}", bob.report());
}

#[test]
fn a_tls_session_resumes_after_the_network_drops_it() {
    let data = TempDir::new("tls-data-blip");
    let w = World::with_args("tls-blip", &strs(&self_signed(data.path())));
    let blip = Proxy::start(w.server.addr);
    let known = w.dir.join("known_servers");
    let flags = tls_flags(&known);
    let mut alice = w.client_on("alice", blip.addr.port(), &strs(&flags));
    let bob = w.client_on("bob", w.server.port(), &strs(&flags));
    alice.expect_line("*** bob has joined");
    blip.cut();
    alice.expect_line(&format!(
        "*** reconnected to 127.0.0.1:{}",
        blip.addr.port()
    ));
    alice.send("still here");
    bob.expect_line("<alice> still here");
    // Resumed, not joined again: bob saw no leave and no second join.
    std::thread::sleep(Duration::from_millis(300));
    bob.assert_no_line("alice leaving", |l| l.starts_with("*** alice has left"));
}

/// The server's log so far.
fn server_log(w: &World) -> String {
    fs::read_to_string(w.dir.join("server.log")).unwrap_or_default()
}

#[test]
fn a_ca_file_that_cannot_be_used_is_said_before_connecting() {
    let pki = TempDir::new("tls-pki-bad");
    let (_, cert, key) = make_ca(pki.path(), "good");
    let w = World::with_args("ca-bad", &["--tls-cert", &cert, "--tls-key", &key]);
    let port = w.server.port().to_string();
    let missing = pki.join("none.pem").display().to_string();
    for bad in [&missing, &key] {
        let mut c = w.spawn_client(&["--tls-ca", bad, "bob", "127.0.0.1", &port]);
        let line = one_error_line(&mut c);
        assert!(
            line.starts_with(&format!("imchat-client: cannot use the CA file {bad}: ")),
            "{line}"
        );
    }
    // The server never saw them.
    let log = server_log(&w);
    assert!(!log.contains("connection from"), "{log}");
}

#[test]
fn failed_runs_leave_no_session_lock() {
    let pki = TempDir::new("tls-pki-lock");
    let (ca, cert, key) = make_ca(pki.path(), "good");
    let (other_ca, _, _) = make_ca(pki.path(), "other");
    let w = World::with_args("lock", &["--tls-cert", &cert, "--tls-key", &key]);
    let port = w.server.port().to_string();
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let password = pki.join("pw.txt");
    fs::write(&password, "s3cret\n").unwrap();
    let guarded_dir = TempDir::new("lock-pw");
    let guarded = Server::start_with(
        guarded_dir.path(),
        &w.shared(),
        &["--password-file", &password.display().to_string()],
    );
    let guarded_port = guarded.port().to_string();
    let runs: [&[&str]; 4] = [
        &["--tls-ca", &other_ca, "bob", "127.0.0.1", &port],
        &["bob", "127.0.0.1", &port],
        &["--tls-ca", &ca, "bob", "127.0.0.1", &closed_port],
        // Refused by the server: it needs a password.
        &["bob", "127.0.0.1", &guarded_port],
    ];
    let sessions = w.dir.join("data").join("imchat").join("sessions");
    let locks = || {
        fs::read_dir(&sessions)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".lock"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    for args in runs {
        let mut c = w.spawn_client(&[&["--no-reconnect"], args].concat());
        one_error_line(&mut c);
        assert_eq!(locks(), Vec::<String>::new(), "after {args:?}");
    }
}
