//! The fault suite's hostile-input cases over TLS, against the real
//! `imchat-server` binary with a self-signed certificate, on 127.0.0.1
//! with a port the OS picks: bytes that are not TLS, a framing bomb inside
//! TLS, and slowloris before and after the TLS handshake. Every wait is
//! bounded, the server is killed by its handle, and each test ends by
//! checking that the server still serves TLS clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::blocking::tls::{self, ClientStream, Trust};
use imchat_core::{
    ClientMessage, Encode, RefuseCode, ServerMessage, Username, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

mod common;

use common::peer::Peer;
use common::{Server, WAIT};

/// A server with a self-signed certificate (kept in `data` in its folder)
/// and `args`, killed by its handle when dropped.
fn tls_server(args: &[&str]) -> Server {
    let mut all = vec!["--tls-self-signed", "--data-dir", "data"];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// Two TLS clients join and chat: `srv` still serves.
fn assert_serving(srv: &Server) {
    Tls::join(srv, "probe_a").chat_with(Tls::join(srv, "probe_b"));
}

/// A protocol-level TLS client, for hostile tests.
type Tls = Peer<ClientStream>;

impl Tls {
    /// TCP, then the TLS handshake (the server's certificate trusted on
    /// first use, in the test's own known-servers file).
    fn connect(srv: &Server) -> Tls {
        let tcp = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
        let trust = Trust::SystemOrKnown {
            known_servers: srv.dir.0.join("known_servers"),
        };
        let (stream, _) = tls::connect(tcp, "127.0.0.1", srv.addr.port(), &trust, WAIT)
            .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
        stream
            .tcp()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Peer::new(stream)
    }

    fn join(srv: &Server, name: &str) -> Tls {
        let mut t = Tls::connect(srv);
        t.send(&hello(name));
        t.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
        t
    }
}

fn hello(name: &str) -> ClientMessage {
    ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: Username::new(name).unwrap(),
    }
}

/// How many lines of the server's log contain `needle`, once there are at
/// least `count` (waited for within [`WAIT`]).
fn log_lines(srv: &Server, needle: &str, count: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(srv.dir.0.join("server.log")).unwrap_or_default();
        let n = log.lines().filter(|l| l.contains(needle)).count();
        if n >= count || Instant::now() >= deadline {
            if n < count {
                eprintln!("server log, {needle:?} not there {count} times:\n{log}");
            }
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a raw TCP stream until the server closes it; how long that took.
fn wait_tcp_closed(mut s: TcpStream) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return start.elapsed(),
        }
        assert!(
            start.elapsed() < WAIT,
            "the server did not close the connection"
        );
    }
}

#[test]
fn bytes_that_are_not_tls_are_closed_before_any_handshake() {
    let srv = tls_server(&[]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let plain_hello = hello("plain").to_frame();
    let inputs: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &plain_hello,
        &[0xff, 0xff, 0xff, 0xff],
        &junk,
    ];
    for bytes in inputs {
        let mut s = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
        let _ = s.write_all(bytes); // the server may close before all is written
        wait_tcp_closed(s);
    }
    assert_serving(&srv);
}

#[test]
fn a_framing_bomb_inside_tls_is_refused_from_the_header() {
    let srv = tls_server(&[]);
    for header in [[0xff, 0xff, 0xff, 0xff], [0, 0x10, 0, 1]] {
        let mut t = Tls::connect(&srv);
        t.write(&header).unwrap();
        let (msgs, _) = t.wait_closed_timed();
        assert!(
            msgs.iter().any(|m| matches!(m, ServerMessage::Refused { code, .. } if *code == RefuseCode::HANDSHAKE_REQUIRED)),
            "{msgs:?}"
        );
    }
    // Joined, the limit is the full frame limit: one byte more is an error.
    let mut joined = Tls::join(&srv, "big_header");
    joined
        .write(&(DEFAULT_MAX_FRAME + 1).to_be_bytes())
        .unwrap();
    let (msgs, _) = joined.wait_closed_timed();
    assert!(
        msgs.iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "{msgs:?}"
    );
    assert_serving(&srv);
}

#[test]
fn slowloris_before_and_inside_tls_meets_the_handshake_deadline() {
    let srv = tls_server(&["--handshake-timeout-secs", "2"]);
    // A TLS hello that never ends: a record header promising 512 bytes,
    // then a few of them, then silence.
    let mut half = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    // Silent from the start, no TLS at all.
    let mute = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
    // TLS done, then the imchat hello dribbled and never finished.
    let mut dribble = Tls::connect(&srv);
    dribble.write(&hello("slow").to_frame()[..3]).unwrap();
    // TLS done, then nothing.
    let mut quiet = Tls::connect(&srv);

    // Meanwhile others are served.
    assert_serving(&srv);
    for took in [wait_tcp_closed(half), wait_tcp_closed(mute)] {
        assert!(took < Duration::from_secs(8), "closed after {took:?}");
    }
    for t in [&mut dribble, &mut quiet] {
        let (msgs, took) = t.wait_closed_timed();
        assert!(took < Duration::from_secs(8), "closed after {took:?}");
        assert!(
            msgs.iter().any(|m| matches!(m, ServerMessage::Refused { code, .. } if *code == RefuseCode::HANDSHAKE_TIMEOUT)),
            "{msgs:?}"
        );
    }
    // The log tells a TLS handshake that never ended from a missing Hello.
    assert_eq!(
        log_lines(&srv, "refused: TLS handshake not finished within 2 s", 2),
        2
    );
    assert_eq!(
        log_lines(&srv, "refused: no valid username within 2 s", 2),
        2
    );
    // A hello sent a byte at a time within the deadline works over TLS.
    let mut slow = Tls::connect(&srv);
    slow.stream.tcp().set_nodelay(true).unwrap();
    for b in hello("dribbler").to_frame() {
        slow.write(&[b]).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    slow.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
    assert_serving(&srv);
}

/// A client that refuses the server's certificate, or speaks plaintext,
/// is logged with the TLS cause, from what rustls reported.
#[test]
fn tls_failures_are_logged_with_their_cause() {
    let srv = tls_server(&[]);
    let attempt = |host: &str, trust: Trust| {
        let tcp = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
        tls::connect(tcp, host, srv.addr.port(), &trust, WAIT)
            .map(|_| ())
            .unwrap_err()
    };
    // Another CA than the one (none) that issued it, by another name.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "another CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let other_ca = srv.dir.0.join("other-ca.pem");
    std::fs::write(&other_ca, other.pem()).unwrap();
    attempt("localhost", Trust::CaFile(other_ca));
    assert_eq!(
        log_lines(
            &srv,
            "TLS handshake failed: the client refused our certificate (alert: unknown CA)",
            1
        ),
        1
    );
    // Its own certificate as the CA, for a name it is not for.
    let own_ca = srv.dir.0.join("data").join("tls-cert.pem");
    attempt("127.0.0.1", Trust::CaFile(own_ca));
    assert_eq!(
        log_lines(
            &srv,
            "TLS handshake failed: the client refused our certificate (alert: bad certificate)",
            1
        ),
        1
    );
    // A known server whose certificate changed.
    let known = srv.dir.0.join("changed_known");
    std::fs::write(&known, format!("127.0.0.1:{} AA:BB\n", srv.addr.port())).unwrap();
    attempt(
        "127.0.0.1",
        Trust::SystemOrKnown {
            known_servers: known,
        },
    );
    assert_eq!(log_lines(&srv, "(alert: access denied: ", 1), 1);
    // A plaintext imchat client.
    let mut plain = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
    let _ = plain.write_all(&hello("plain").to_frame());
    wait_tcp_closed(plain);
    assert_eq!(
        log_lines(&srv, "not TLS: the client spoke plaintext to a TLS port", 1),
        1
    );
    let log = std::fs::read_to_string(srv.dir.0.join("server.log")).unwrap();
    assert!(!log.contains("connection lost"), "{log}");
    assert_serving(&srv);
}

/// At start, the operator hears of an expired certificate (then every
/// client refuses it, and the log says so), a key and a password file
/// others may read, and a password that ends in a space (kept as is).
#[cfg(unix)]
#[test]
fn an_expired_certificate_and_open_files_are_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut srv = Server::start_with(
        &[
            "--tls-cert",
            "expired.pem",
            "--tls-key",
            "key.pem",
            "--password-file",
            "pw.txt",
        ],
        |shared| {
            let dir = shared.parent().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 2, 1);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.join("expired.pem"), cert.pem()).unwrap();
            std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
            std::fs::write(dir.join("pw.txt"), "letmein \n").unwrap();
            for f in ["key.pem", "pw.txt"] {
                std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))
                    .unwrap();
            }
        },
    );
    srv.proc
        .expect("warning: the TLS certificate expired on 2020-02-01; every client will refuse it");
    srv.proc
        .expect("warning: the password in 'pw.txt' ends in whitespace");
    srv.proc.expect(
        "warning: the password file 'pw.txt' can be read by other users of this machine (mode 644)",
    );
    srv.proc.expect(
        "warning: the TLS key file 'key.pem' can be read by other users of this machine (mode 644)",
    );
    for line in [
        "the TLS certificate expired on 2020-02-01",
        "ends in whitespace",
        "TLS key file 'key.pem' can be read",
    ] {
        assert_eq!(log_lines(&srv, line, 1), 1, "{line}");
    }
    // A client that trusts it as its CA still refuses it: expired.
    let tcp = TcpStream::connect_timeout(&srv.addr, WAIT).unwrap();
    let trust = Trust::CaFile(srv.dir.0.join("expired.pem"));
    let err = tls::connect(tcp, "localhost", srv.addr.port(), &trust, WAIT)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("it has expired"), "{err}");
    assert_eq!(
        log_lines(
            &srv,
            "TLS handshake failed: the client refused our certificate (alert: certificate expired or not yet valid)",
            1
        ),
        1
    );
}
