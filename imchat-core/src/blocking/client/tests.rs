//! The driver against a scripted server on a loopback socket: the script
//! runs on its own thread with the codec, every read bounded by a timeout.

use std::net::TcpListener;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::*;
use crate::blocking::{split_tcp, FrameWriter};
use crate::message::{ChatKind, ClientMessage, FileChunk, FileEnd, MessageId, Origin, Timestamp};
use crate::{ErrorCode, Hub};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// What a server with the default limits announces.
fn announced() -> ServerLimits {
    Hub::new(Limits::default(), "hi").server_limits()
}

/// The server side of one connection.
struct Peer {
    reader: FrameReader<TcpStream, ClientMessage>,
    writer: FrameWriter<TcpStream>,
}

impl Peer {
    fn recv(&mut self) -> ClientMessage {
        match self.reader.read_message() {
            Ok(Some(m)) => m,
            other => panic!("peer expected a message, got {other:?}"),
        }
    }

    fn send(&mut self, m: &ServerMessage) {
        self.writer.send(m).unwrap();
    }

    fn write(&mut self, bytes: &[u8]) {
        self.writer.send_frames(bytes).unwrap();
    }

    /// Reads the `Hello` and welcomes it in our version.
    fn welcome(&mut self) {
        self.welcome_with(announced());
    }

    /// The same, announcing `limits`.
    fn welcome_with(&mut self, limits: ServerLimits) {
        let ClientMessage::Hello { username, .. } = self.recv() else {
            panic!("no hello first");
        };
        self.send(&ServerMessage::Welcome {
            token: crate::ResumeToken::default(),
            epoch: 0,
            grace_secs: 0,
            last_id: crate::MessageId(0),
            resumed: None,
            version: PROTOCOL_VERSION,
            username,
            text: "hi".into(),
            limits,
        });
    }

    /// Reads a `Download` request and starts it as a file of `size` bytes.
    fn start_download(&mut self, size: u64) -> TransferId {
        let ClientMessage::Download { id, name, .. } = self.recv() else {
            panic!("no download");
        };
        self.send(&ServerMessage::FileStart(crate::FileStart {
            id,
            name,
            size,
            offset: 0,
            origin: Origin::Download,
        }));
        id
    }
}

/// Starts `script` as the server of one connection; returns where to
/// connect and the script's result.
fn serve<T: Send + 'static>(
    script: impl FnOnce(Peer) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let (reader, writer) = split_tcp(stream, crate::DEFAULT_MAX_FRAME).unwrap();
        script(Peer { reader, writer })
    });
    (addr, handle)
}

fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr, "ann", ConnectOptions::default()).unwrap()
}

/// The next event, failing the test if none comes within [`WAIT`].
fn event(c: &mut Client) -> ClientEvent {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(e) = c.next_event(Duration::from_millis(100)).unwrap() {
            return e;
        }
    }
    panic!("no event within {WAIT:?}");
}

fn chat(text: &str) -> ServerMessage {
    ServerMessage::Chat(crate::RoutedChat {
        history: false,
        id: MessageId(7),
        time: Timestamp(1_000),
        from: Username::new("bob").unwrap(),
        private: true,
        kind: ChatKind::Text,
        text: text.into(),
    })
}

#[test]
fn connect_sets_nodelay_and_keeps_the_welcome_text() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        p.recv()
    });
    let mut c = connect(addr);
    assert!(c.reader.get_ref().nodelay().unwrap());
    assert_eq!(c.welcome_text(), "hi");
    assert_eq!(c.username().as_str(), "ann");
    assert_eq!(c.server_limits(), &announced());
    assert!(c.session().is_joined());
    c.quit("bye").unwrap();
    assert_eq!(
        peer.join().unwrap(),
        ClientMessage::Quit {
            reason: "bye".into()
        }
    );
    assert!(matches!(c.who(), Err(ClientError::Closed)));
    assert!(matches!(c.next_event(WAIT), Err(ClientError::Closed)));
}

/// A thread blocked in `next_event` is stopped from another by shutting
/// down a clone of the socket, as `next_event`'s docs say: it returns
/// `Closed` at once, not when its timeout ends.
#[test]
fn a_next_event_waiting_in_another_thread_ends_when_the_socket_is_shut() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        // Until the client's side is shut: the end of the stream.
        matches!(p.reader.read_message(), Ok(None) | Err(_))
    });
    let mut c = connect(addr);
    let socket = c.get_ref().try_clone().unwrap();
    let waiter = thread::spawn(move || {
        let started = Instant::now();
        for _ in 0..100 {
            if let Err(e) = c.next_event(WAIT) {
                return (e, started.elapsed());
            }
        }
        panic!("next_event never failed");
    });
    thread::sleep(Duration::from_millis(200));
    socket.shutdown(Shutdown::Both).unwrap();
    let (e, took) = waiter.join().unwrap();
    assert!(matches!(e, ClientError::Closed), "{e:?}");
    assert!(took < WAIT / 2, "{took:?}");
    assert!(peer.join().unwrap());
}

fn refused_with(code: RefuseCode, reason: &str, version: u16) -> ConnectError {
    let reason = reason.to_string();
    let (addr, peer) = serve(move |mut p| {
        p.recv();
        p.send(&ServerMessage::Refused {
            code,
            reason,
            version,
        });
    });
    let err = Client::connect(addr, "ann", ConnectOptions::default()).unwrap_err();
    peer.join().unwrap();
    err
}

#[test]
fn refusals_are_typed_and_carry_the_servers_reason() {
    let v = PROTOCOL_VERSION;
    let e = refused_with(RefuseCode::NAME_TAKEN, "ann is online", v);
    assert!(matches!(&e, ConnectError::NameTaken { reason } if reason == "ann is online"));
    assert_eq!(e.to_string(), "username already taken: ann is online");
    // The server's own words name it taken: said once.
    let e = refused_with(
        RefuseCode::NAME_TAKEN,
        "the username 'ann' is already taken",
        v,
    );
    assert_eq!(e.to_string(), "the username 'ann' is already taken");
    let e = refused_with(RefuseCode::INVALID_NAME, "no", v);
    assert!(matches!(&e, ConnectError::NameRefused { reason } if reason == "no"));
    let e = refused_with(RefuseCode::SERVER_FULL, "1000 clients", v);
    assert!(matches!(&e, ConnectError::ServerFull { reason } if reason == "1000 clients"));
    assert_eq!(e.to_string(), "server full: 1000 clients");
    // Words that say it already are not said twice.
    let e = refused_with(RefuseCode::SERVER_FULL, "server full (2 users)", v);
    assert_eq!(e.to_string(), "server full (2 users)");
    let e = refused_with(RefuseCode::SHUTTING_DOWN, "", v);
    assert!(
        matches!(&e, ConnectError::ShuttingDown { reason } if reason == "server shutting down")
    );
    assert_eq!(e.to_string(), "server shutting down");
    let e = refused_with(RefuseCode::VERSION_MISMATCH, "speak 7", 7);
    assert!(matches!(&e,
        ConnectError::VersionMismatch { ours, server: 7, reason } if *ours == v && reason == "speak 7"));
    let e = refused_with(RefuseCode(99), "why not", v);
    assert!(matches!(&e,
        ConnectError::Refused { code: RefuseCode(99), reason } if reason == "why not"));
    assert_eq!(e.to_string(), "refused: why not");
    // The server's words say what the code says, in full: not said twice
    // ("refused (wrong server password): wrong server password").
    let e = refused_with(RefuseCode::WRONG_PASSWORD, "wrong server password", v);
    assert_eq!(e.to_string(), "refused: wrong server password");
    let e = refused_with(RefuseCode::PASSWORD_REQUIRED, "", v);
    assert_eq!(e.to_string(), "refused: the server needs a password");
}

#[test]
fn a_welcome_in_another_version_is_a_version_mismatch() {
    let (addr, peer) = serve(|mut p| {
        p.recv();
        p.send(&ServerMessage::Welcome {
            token: crate::ResumeToken::default(),
            epoch: 0,
            grace_secs: 0,
            last_id: crate::MessageId(0),
            resumed: None,
            version: PROTOCOL_VERSION + 1,
            username: Username::new("ann").unwrap(),
            text: "hi".into(),
            limits: announced(),
        });
    });
    let e = Client::connect(addr, "ann", ConnectOptions::default()).unwrap_err();
    peer.join().unwrap();
    assert!(
        matches!(e, ConnectError::VersionMismatch { ours, server, .. }
            if ours == PROTOCOL_VERSION && server == PROTOCOL_VERSION + 1),
        "{e:?}"
    );
}

#[test]
fn an_invalid_username_is_refused_before_connecting() {
    // Nothing listens on port 1: the name is checked before any connection.
    let e = Client::connect("127.0.0.1:1", "a b", ConnectOptions::default()).unwrap_err();
    assert!(matches!(
        e,
        ConnectError::InvalidName(NameError::BadChar { ch: ' ' })
    ));
}

/// Options that cannot work are refused before any connection, as the
/// caller's mistake, not as the server's or the network's: a frame limit
/// of 0 was "the server's answer is not imchat", a zero timeout "cannot
/// connect".
#[test]
fn options_that_cannot_work_are_refused_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut frame = ConnectOptions::default();
    frame.limits.max_frame = 0;
    let connect = ConnectOptions {
        connect_timeout: Duration::ZERO,
        ..ConnectOptions::default()
    };
    let write = ConnectOptions {
        write_timeout: Some(Duration::ZERO),
        ..ConnectOptions::default()
    };
    let mut keepalive = ConnectOptions::default();
    keepalive.limits.keepalive_timeout = Duration::ZERO;
    let handshake = ConnectOptions {
        handshake_timeout: Duration::ZERO,
        ..ConnectOptions::default()
    };
    // No push could ever send a byte (`chunk_limit` 0).
    let mut chunk = ConnectOptions::default();
    chunk.limits.chunk_size = 0;
    for (options, said) in [
        (
            frame,
            "invalid connect options: chunk_size 262144 does not fit in max_frame 0",
        ),
        (connect, "invalid connect options: connect_timeout is zero"),
        (write, "invalid connect options: write_timeout is zero"),
        (
            keepalive,
            "invalid connect options: limits.keepalive_timeout is zero",
        ),
        (
            handshake,
            "invalid connect options: handshake_timeout is zero",
        ),
        (
            chunk,
            "invalid connect options: chunk_size must be at least 1",
        ),
    ] {
        let e = Client::connect(addr, "alice", options).unwrap_err();
        assert!(matches!(e, ConnectError::InvalidOptions(_)), "{e:?}");
        assert!(e.to_string().starts_with(said), "{e}");
    }
    let e = ConnectOptions {
        write_timeout: None,
        ..ConnectOptions::default()
    }
    .validate();
    assert_eq!(e, Ok(()), "no write timeout waits forever");
    // A server's rules are not a client's: a longest text past the
    // server-side burst default is the client's to read.
    let mut big = ConnectOptions::default();
    big.limits.max_text = 2_000_000;
    big.limits.max_frame = 4 << 20;
    assert_eq!(big.validate(), Ok(()));
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "nothing connected"
    );
}

#[test]
fn a_silent_server_times_the_handshake_out_and_a_closing_one_is_closed() {
    let (done, wait) = channel::<()>();
    let (addr, peer) = serve(move |mut p| {
        p.recv();
        wait.recv_timeout(WAIT).unwrap();
    });
    let options = ConnectOptions {
        handshake_timeout: Duration::from_millis(100),
        ..ConnectOptions::default()
    };
    let started = Instant::now();
    let e = Client::connect(addr, "ann", options).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(matches!(e, ConnectError::HandshakeTimeout(_)), "{e:?}");
    done.send(()).unwrap();
    peer.join().unwrap();

    let (addr, peer) = serve(|mut p| {
        p.recv();
    });
    let e = Client::connect(addr, "ann", ConnectOptions::default()).unwrap_err();
    peer.join().unwrap();
    assert!(matches!(e, ConnectError::Closed), "{e:?}");
}

#[test]
fn a_server_that_hangs_up_on_an_unread_hello_is_closed_not_a_reset() {
    // Dropping a socket with unread bytes makes the system reset the
    // connection: the client reads ECONNRESET, not an end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(stream.peek(&mut b).unwrap(), 1, "the Hello arrived");
        drop(stream);
    });
    let e = Client::connect(addr, "ann", ConnectOptions::default()).unwrap_err();
    peer.join().unwrap();
    assert!(matches!(e, ConnectError::Closed), "{e:?}");
}

/// A host name that does not resolve is its own error, to tell "fix the
/// name" from "the server is down" without reading the text.
#[test]
fn a_host_that_does_not_resolve_is_a_resolve_error() {
    // `.invalid` never resolves (RFC 6761).
    let e = Client::connect("no-such-host.invalid:5", "ann", ConnectOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, ConnectError::Resolve(_)), "{e:?}");
    assert!(
        e.to_string().starts_with("cannot resolve the host name: "),
        "{e}"
    );
}

#[test]
fn an_address_without_a_port_is_said_to_need_one() {
    let e = Client::connect("127.0.0.1", "ann", ConnectOptions::default()).unwrap_err();
    assert!(matches!(e, ConnectError::BadAddress(_)), "{e:?}");
    let said = e.to_string();
    assert!(said.contains("host:port"), "{said}");
    assert!(said.contains(&crate::DEFAULT_PORT.to_string()), "{said}");
}

#[test]
fn pings_are_answered_inside_next_event() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        p.send(&ServerMessage::Ping(42));
        let answer = p.recv();
        p.send(&chat("after the pong"));
        answer
    });
    let mut c = connect(addr);
    assert_eq!(
        event(&mut c),
        ClientEvent::Chat(crate::RoutedChat {
            history: false,
            id: MessageId(7),
            time: Timestamp(1_000),
            from: Username::new("bob").unwrap(),
            private: true,
            kind: ChatKind::Text,
            text: "after the pong".into()
        })
    );
    assert_eq!(peer.join().unwrap(), ClientMessage::Pong(42));
}

#[test]
fn a_silent_server_is_pinged_then_timed_out() {
    let (done, wait) = channel::<()>();
    let (addr, peer) = serve(move |mut p| {
        p.welcome();
        let ping = p.recv();
        wait.recv_timeout(WAIT).unwrap();
        ping
    });
    let mut options = ConnectOptions::default();
    options.limits.keepalive_interval = Duration::from_millis(50);
    options.limits.keepalive_timeout = Duration::from_millis(100);
    let mut c = Client::connect(addr, "ann", options).unwrap();
    assert_eq!(event(&mut c), ClientEvent::TimedOut);
    assert!(c.session().poll_timeout().is_none());
    assert!(matches!(c.next_event(WAIT), Err(ClientError::Closed)));
    done.send(()).unwrap();
    assert!(matches!(peer.join().unwrap(), ClientMessage::Ping(_)));
}

#[test]
fn a_read_timeout_in_the_middle_of_a_frame_loses_nothing() {
    let (go, wait) = channel::<()>();
    let text = "x".repeat(5000);
    let frame = chat(&text).to_frame();
    let (addr, peer) = serve(move |mut p| {
        p.welcome();
        let half = frame.len() / 2;
        p.write(&frame[..half]);
        wait.recv_timeout(WAIT).unwrap();
        p.write(&frame[half..]);
    });
    let mut c = connect(addr);
    let started = Instant::now();
    // Long enough for the first half to arrive and the read to time out.
    assert_eq!(c.next_event(Duration::from_millis(200)).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(
        c.reader.decoder_mut().buffered() > 0,
        "half a frame is held"
    );
    go.send(()).unwrap();
    let ClientEvent::Chat(crate::RoutedChat { text: got, .. }) = event(&mut c) else {
        panic!("not a chat");
    };
    assert_eq!(got, text);
    peer.join().unwrap();
}

#[test]
fn a_server_shutdown_is_an_event_then_the_client_is_closed() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        p.send(&ServerMessage::Shutdown {
            reason: "maintenance".into(),
        });
    });
    let mut c = connect(addr);
    assert!(c.is_open());
    assert_eq!(
        event(&mut c),
        ClientEvent::Shutdown {
            reason: "maintenance".into()
        }
    );
    assert!(!c.is_open());
    assert!(matches!(c.next_event(WAIT), Err(ClientError::Closed)));
    assert!(matches!(
        c.send_chat(Recipient::Everyone, "x"),
        Err(ClientError::Closed)
    ));
    peer.join().unwrap();
}

#[test]
fn a_connection_closed_without_notice_is_closed() {
    let (addr, peer) = serve(|mut p| p.welcome());
    let mut c = connect(addr);
    peer.join().unwrap();
    assert!(matches!(c.next_event(WAIT), Err(ClientError::Closed)));
}

#[test]
fn bytes_that_do_not_decode_are_a_transport_error_then_closed() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        p.write(&[0, 0, 0, 1, 0xee]);
    });
    let mut c = connect(addr);
    let e = c.next_event(WAIT).unwrap_err();
    assert!(
        matches!(e, ClientError::Transport(TransportError::Decode(_))),
        "{e:?}"
    );
    assert!(matches!(c.next_event(WAIT), Err(ClientError::Closed)));
    peer.join().unwrap();
}

#[test]
fn intents_are_written_before_they_return() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        (0..7).map(|_| p.recv()).collect::<Vec<_>>()
    });
    let mut c = connect(addr);
    let bob = Username::new("bob").unwrap();
    let file = FileName::new("a.txt").unwrap();
    assert!(matches!(
        c.send_chat(Recipient::Everyone, &"x".repeat(64 * 1024 + 1)),
        Err(ClientError::Usage(UsageError::TextTooLong { .. }))
    ));
    c.send_chat(Recipient::Everyone, "all").unwrap();
    c.send_private(&bob, "you").unwrap();
    c.send_action(Recipient::Everyone, "waves").unwrap();
    c.who().unwrap();
    c.files_access().unwrap();
    c.list_files().unwrap();
    let id = c.download(file.clone(), None).unwrap();
    assert_eq!(
        peer.join().unwrap(),
        vec![
            ClientMessage::Chat {
                client_id: 1,
                to: Recipient::Everyone,
                kind: ChatKind::Text,
                text: "all".into()
            },
            ClientMessage::Chat {
                client_id: 2,
                to: Recipient::User(bob),
                kind: ChatKind::Text,
                text: "you".into()
            },
            ClientMessage::Chat {
                client_id: 3,
                to: Recipient::Everyone,
                kind: ChatKind::Action,
                text: "waves".into()
            },
            ClientMessage::Who,
            ClientMessage::FilesAccess,
            ClientMessage::ListFiles,
            ClientMessage::Download {
                id,
                name: file,
                offset: 0
            },
        ]
    );
}

/// Serves one download of `data` as the file `a.txt` and returns what the
/// client sent after it, up to (and including) its `Who`.
fn serve_download(data: Vec<u8>) -> (SocketAddr, JoinHandle<Vec<ClientMessage>>) {
    serve(move |mut p| {
        p.welcome();
        let id = p.start_download(data.len() as u64);
        p.send(&ServerMessage::Chunk(FileChunk::new(id, 0, data.clone())));
        p.send(&ServerMessage::End(FileEnd {
            id,
            crc: crc32fast::hash(&data),
        }));
        let mut got = Vec::new();
        while !got.contains(&ClientMessage::Who) {
            got.push(p.recv());
        }
        got
    })
}

/// Downloads `a.txt` and returns its events.
fn download(c: &mut Client) -> (TransferId, Vec<ClientEvent>) {
    let id = c.download(FileName::new("a.txt").unwrap(), None).unwrap();
    let events = (0..3).map(|_| event(c)).collect();
    (id, events)
}

#[test]
fn download_bytes_arrive_as_events_and_are_acknowledged() {
    let (addr, peer) = serve_download(b"hello".to_vec());
    let mut c = connect(addr);
    let (id, events) = download(&mut c);
    assert_eq!(
        events,
        vec![
            ClientEvent::TransferStarted {
                id,
                name: FileName::new("a.txt").unwrap(),
                size: 5,
                offset: 0,
                origin: Origin::Download
            },
            ClientEvent::TransferData {
                id,
                offset: 0,
                data: b"hello".to_vec()
            },
            ClientEvent::TransferDone { id },
        ]
    );
    c.who().unwrap();
    assert_eq!(
        peer.join().unwrap(),
        vec![ClientMessage::Ack { id, offset: 5 }, ClientMessage::Who]
    );
}

#[test]
fn manual_acks_wait_for_stored() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        let id = p.start_download(10);
        p.send(&ServerMessage::Chunk(FileChunk::new(id, 0, vec![1; 5])));
        (0..3).map(|_| p.recv()).collect::<Vec<_>>()
    });
    let options = ConnectOptions {
        manual_acks: true,
        ..ConnectOptions::default()
    };
    let mut c = Client::connect(addr, "ann", options).unwrap();
    let id = c.download(FileName::new("a.txt").unwrap(), None).unwrap();
    assert!(matches!(event(&mut c), ClientEvent::TransferStarted { .. }));
    assert!(matches!(event(&mut c), ClientEvent::TransferData { .. }));
    c.who().unwrap(); // nothing acknowledged yet: the peer sees this first
    c.stored(id, 5).unwrap(); // below the step: held back
    c.files_access().unwrap();
    c.caught_up().unwrap();
    assert_eq!(
        peer.join().unwrap(),
        vec![
            ClientMessage::Who,
            ClientMessage::FilesAccess,
            ClientMessage::Ack { id, offset: 5 },
        ]
    );
}

/// The client sends a push's data only within the server's credit: it
/// waits for the next `PushCredit` (reading the server meanwhile) instead.
#[test]
fn a_push_is_offered_sent_within_its_credit_and_reported() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        let mut got = vec![p.recv()];
        let ClientMessage::Offer { id, .. } = got[0].clone() else {
            panic!("no offer");
        };
        p.send(&ServerMessage::PushAccepted { id, receivers: 2 });
        p.send(&ServerMessage::PushCredit { id, offset: 2 });
        got.push(p.recv());
        p.send(&ServerMessage::PushCredit { id, offset: 3 });
        got.extend((0..2).map(|_| p.recv()));
        p.send(&ServerMessage::PushDone { id, receivers: 2 });
        got
    });
    let mut c = connect(addr);
    let bob = Recipient::User(Username::new("bob").unwrap());
    let id = c
        .offer(FileName::new("p.bin").unwrap(), 3, bob.clone())
        .unwrap();
    // No data before the receivers accepted.
    assert!(matches!(
        c.push_chunk(id, vec![7, 8, 9]),
        Err(ClientError::Usage(UsageError::NotAccepted { .. }))
    ));
    assert_eq!(
        event(&mut c),
        ClientEvent::PushAccepted { id, receivers: 2 }
    );
    assert_eq!(event(&mut c), ClientEvent::PushCredit { id, offset: 2 });
    assert_eq!(c.session().push_room(id), 2);
    // Past the credit: nothing is sent.
    assert!(matches!(
        c.push_chunk(id, vec![7, 8, 9]),
        Err(ClientError::Usage(UsageError::PastCredit {
            end: 3,
            credit: 2,
            ..
        }))
    ));
    c.push_chunk(id, vec![7, 8]).unwrap();
    assert_eq!(c.session().push_room(id), 0);
    assert_eq!(event(&mut c), ClientEvent::PushCredit { id, offset: 3 });
    assert_eq!(c.session().push_room(id), 1);
    c.push_chunk(id, vec![9]).unwrap();
    c.push_end(id).unwrap();
    assert_eq!(event(&mut c), ClientEvent::PushDone { id, receivers: 2 });
    assert!(matches!(
        c.push_chunk(id, vec![1]),
        Err(ClientError::Usage(UsageError::UnknownTransfer { .. }))
    ));
    assert_eq!(
        peer.join().unwrap(),
        vec![
            ClientMessage::Offer {
                id,
                name: FileName::new("p.bin").unwrap(),
                size: 3,
                to: bob
            },
            ClientMessage::Chunk(FileChunk::new(id, 0, vec![7, 8])),
            ClientMessage::Chunk(FileChunk::new(id, 2, vec![9])),
            ClientMessage::End(FileEnd {
                id,
                crc: crc32fast::hash(&[7, 8, 9])
            }),
        ]
    );
}

#[test]
fn a_cancelled_download_is_a_failed_transfer_and_cancel_is_sent() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        let ClientMessage::Download { id, .. } = p.recv() else {
            panic!("no download");
        };
        p.send(&ServerMessage::Error {
            client_id: 0,
            code: ErrorCode::UNEXPECTED,
            text: "not yet".into(),
        });
        (id, p.recv())
    });
    let mut c = connect(addr);
    let id = c.download(FileName::new("a.txt").unwrap(), None).unwrap();
    assert!(matches!(event(&mut c), ClientEvent::Error { .. }));
    c.cancel(id, "changed my mind").unwrap();
    assert!(matches!(
        c.cancel(id, "again"),
        Err(ClientError::Usage(UsageError::UnknownTransfer { .. }))
    ));
    let (asked, cancel) = peer.join().unwrap();
    assert_eq!(asked, id);
    assert!(
        matches!(cancel, ClientMessage::Cancel(c) if c.id == id && c.reason == "changed my mind")
    );
}

#[test]
fn a_read_timeout_inside_a_large_chunk_loses_nothing() {
    // Large chunks are read straight into their own buffer: that path must
    // survive a timeout too.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let (go, wait) = channel::<()>();
    let (addr, peer) = serve(move |mut p| {
        p.welcome();
        let id = p.start_download(sent.len() as u64);
        let frame = ServerMessage::Chunk(FileChunk::new(id, 0, sent)).to_frame();
        let half = frame.len() / 2;
        p.write(&frame[..half]);
        wait.recv_timeout(WAIT).unwrap();
        p.write(&frame[half..]);
    });
    let mut c = connect(addr);
    let id = c.download(FileName::new("big").unwrap(), None).unwrap();
    assert!(matches!(event(&mut c), ClientEvent::TransferStarted { .. }));
    assert_eq!(c.next_event(Duration::from_millis(200)).unwrap(), None);
    go.send(()).unwrap();
    assert_eq!(
        event(&mut c),
        ClientEvent::TransferData {
            id,
            offset: 0,
            data
        }
    );
    peer.join().unwrap();
}

/// What a server announces that takes bursts of `burst` requests and
/// `per_sec` a second.
fn slow(burst: u32, per_sec: u32) -> ServerLimits {
    let limits = Limits {
        rate_burst: burst,
        rate_per_sec: per_sec,
        ..Limits::default()
    };
    Hub::new(limits, "hi").server_limits()
}

#[test]
fn a_paced_send_reads_no_further_than_what_waits_to_be_handed_out() {
    let (addr, peer) = serve(|mut p| {
        p.welcome_with(slow(1, 1));
        let id = p.start_download(5);
        p.send(&ServerMessage::Chunk(FileChunk::new(
            id,
            0,
            b"hello".to_vec(),
        )));
        (id, p.recv(), p.recv())
    });
    let mut c = connect(addr);
    // The download took the burst: this chat waits about a second, while
    // the download's start and data arrive.
    c.download(FileName::new("a.txt").unwrap(), None).unwrap();
    c.send_chat(Recipient::Everyone, "one").unwrap();
    assert!(matches!(event(&mut c), ClientEvent::TransferStarted { .. }));
    assert!(matches!(event(&mut c), ClientEvent::TransferData { .. }));
    let (id, first, second) = peer.join().unwrap();
    // Acknowledged once handed out, after the chat: not read (and
    // acknowledged) during the wait.
    assert!(
        matches!(first, ClientMessage::Chat { ref text, .. } if text == "one"),
        "{first:?}"
    );
    assert_eq!(second, ClientMessage::Ack { id, offset: 5 });
}

#[test]
fn a_session_that_ends_during_a_paced_wait_makes_the_intent_closed() {
    let (addr, peer) = serve(|mut p| {
        p.welcome_with(slow(1, 1));
        let first = p.recv();
        p.send(&ServerMessage::Shutdown {
            reason: "maintenance".into(),
        });
        first
    });
    let mut c = connect(addr);
    c.send_chat(Recipient::Everyone, "one").unwrap();
    // Over the rate: it waits, and meanwhile the server shuts down.
    assert!(matches!(
        c.send_chat(Recipient::Everyone, "two"),
        Err(ClientError::Closed)
    ));
    assert!(matches!(event(&mut c), ClientEvent::Shutdown { .. }));
    assert!(matches!(peer.join().unwrap(), ClientMessage::Chat { .. }));
}

/// A connection whose reads cannot be given a timeout.
#[derive(Debug)]
struct NoTimeout(TcpStream);

impl Read for NoTimeout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for NoTimeout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Link for NoTimeout {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn shutdown_write(&self) {}
}

#[test]
fn a_link_without_read_timeouts_is_refused_before_the_hello() {
    let (addr, peer) = serve(|mut p| p.reader.read_message().map_err(|e| e.to_string()));
    let tcp = TcpStream::connect(addr).unwrap();
    let refused = Client::over(NoTimeout(tcp), "ann", ConnectOptions::default());
    assert!(
        matches!(refused, Err(ConnectError::Connect(_))),
        "{refused:?}"
    );
    drop(refused);
    // The server saw the connection end with nothing sent.
    assert_eq!(peer.join().unwrap(), Ok(None));
}

#[test]
fn the_longest_waits_do_not_overflow_the_clock() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        p.send(&chat("hi"));
        p.recv()
    });
    let options = ConnectOptions {
        handshake_timeout: Duration::MAX,
        ..ConnectOptions::default()
    };
    let mut c = Client::connect(addr, "ann", options).unwrap();
    assert!(matches!(
        c.next_event(Duration::MAX).unwrap(),
        Some(ClientEvent::Chat(_))
    ));
    c.who().unwrap();
    assert_eq!(peer.join().unwrap(), ClientMessage::Who);
}

/// Writes `bytes` one at a time, `every` apart, until they are all out or
/// `stop` says so (or the client is gone).
fn trickle(p: &mut Peer, bytes: &[u8], every: Duration, stop: &std::sync::mpsc::Receiver<()>) {
    for b in bytes {
        if p.writer.send_frames(std::slice::from_ref(b)).is_err()
            || stop.recv_timeout(every).is_ok()
        {
            return;
        }
    }
}

#[test]
fn bytes_that_trickle_in_do_not_hold_next_event_past_its_timeout() {
    let (stop, stopped) = channel::<()>();
    let (addr, peer) = serve(move |mut p| {
        p.welcome();
        // 5,000 bytes at one per 20 ms: 100 s for the whole frame.
        trickle(
            &mut p,
            &chat(&"x".repeat(5000)).to_frame(),
            Duration::from_millis(20),
            &stopped,
        );
    });
    let mut c = connect(addr);
    let started = Instant::now();
    assert_eq!(c.next_event(Duration::from_millis(200)).unwrap(), None);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "next_event(200 ms) took {took:?}"
    );
    stop.send(()).unwrap();
    peer.join().unwrap();
}

#[test]
fn a_welcome_that_trickles_in_times_the_handshake_out() {
    let (stop, stopped) = channel::<()>();
    let (addr, peer) = serve(move |mut p| {
        let ClientMessage::Hello { username, .. } = p.recv() else {
            panic!("no hello first");
        };
        let welcome = ServerMessage::Welcome {
            token: crate::ResumeToken::default(),
            epoch: 0,
            grace_secs: 0,
            last_id: MessageId(0),
            resumed: None,
            version: PROTOCOL_VERSION,
            username,
            text: "hi".repeat(500),
            limits: announced(),
        };
        trickle(
            &mut p,
            &welcome.to_frame(),
            Duration::from_millis(20),
            &stopped,
        );
    });
    let options = ConnectOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ConnectOptions::default()
    };
    let started = Instant::now();
    let got = Client::connect(addr, "ann", options);
    let took = started.elapsed();
    assert!(
        matches!(got, Err(ConnectError::HandshakeTimeout(_))),
        "{got:?}"
    );
    assert!(took < Duration::from_secs(2), "the handshake took {took:?}");
    stop.send(()).unwrap();
    peer.join().unwrap();
}

#[test]
fn frames_up_to_the_announced_max_frame_are_read() {
    let text = "y".repeat(1_500_000);
    let big = chat(&text);
    let (addr, peer) = serve(move |mut p| {
        p.welcome_with(ServerLimits {
            max_frame: 4 << 20,
            max_text: 2_000_000,
            ..announced()
        });
        p.send(&big);
    });
    let mut c = connect(addr);
    let ClientEvent::Chat(crate::RoutedChat { text: got, .. }) = event(&mut c) else {
        panic!("not a chat");
    };
    assert_eq!(got.len(), text.len());
    peer.join().unwrap();
}

#[test]
fn what_the_server_sent_before_a_failed_write_is_read() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        let ClientMessage::Chat { client_id, .. } = p.recv() else {
            panic!("no chat");
        };
        p.send(&ServerMessage::Ack {
            client_id,
            id: MessageId(1),
            time: Timestamp(1),
        });
        p.send(&ServerMessage::Shutdown {
            reason: "maintenance".into(),
        });
        // Gone: both halves closed, the client's next writes fail.
    });
    let mut c = connect(addr);
    c.send_chat(Recipient::Everyone, "one").unwrap();
    peer.join().unwrap();
    // Without reading, the client writes on until a write fails.
    let deadline = Instant::now() + WAIT;
    let mut written = 0;
    let failed = loop {
        assert!(Instant::now() < deadline, "no write failed");
        match c.send_chat(Recipient::Everyone, "more") {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(failed, ClientError::Transport(_)), "{failed:?}");
    // The first was acknowledged: only the later ones (the failed one
    // too) wait to be sent again; and the server's goodbye is there.
    assert_eq!(c.session().unacked(), written + 1);
    assert_eq!(
        c.next_event(WAIT).unwrap(),
        Some(ClientEvent::Shutdown {
            reason: "maintenance".into()
        })
    );
}

/// The tester's case: a write fails (the answer to a ping) while the
/// server's messages wait to be read. They are handed out before the
/// error, so a caller that stops at the error, as the docs say, leaves
/// none behind for after a reconnect.
#[test]
fn what_was_read_before_a_failure_is_handed_out_before_the_error() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        let mut chats = Vec::new();
        p.send(&ServerMessage::Ping(1));
        for (i, text) in ["one", "two"].into_iter().enumerate() {
            let ServerMessage::Chat(mut c) = chat(text) else {
                unreachable!()
            };
            c.id = MessageId(10 + i as u64);
            chats.push(ServerMessage::Chat(c.clone()));
            p.send(&ServerMessage::Chat(c));
        }
        // Held open until the client is done, so that only its write fails.
        let _ = p.reader.read_message();
        chats
    });
    let mut c = connect(addr);
    // The client's writes fail from now on; its reads still work.
    c.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
    let sent = {
        // Everything the server sent is there to read before the first call.
        thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        let end = loop {
            match c.next_event(WAIT) {
                Ok(Some(ClientEvent::Chat(chat))) => got.push(chat.text),
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(end, ClientError::Transport(_)), "{end:?}");
        got
    };
    assert_eq!(sent, ["one", "two"], "both chats before the error");
    assert!(matches!(c.next_event(WAIT), Err(ClientError::Closed)));
    drop(c);
    assert_eq!(peer.join().unwrap().len(), 2);
}

#[test]
fn a_write_that_timed_out_says_so() {
    let e = ClientError::Transport(TransportError::Io(stalled(
        io::Error::from(io::ErrorKind::WouldBlock),
        Some(Duration::from_secs(2)),
    )));
    assert_eq!(
        e.to_string(),
        "connection error: the server took nothing for 2s (write timeout): it is not reading"
    );
    // Other errors are the system's.
    let e = stalled(io::Error::from(io::ErrorKind::BrokenPipe), Some(WAIT));
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
}

/// A TCP link that records the read modes the client sets.
#[derive(Debug)]
struct Recorded(TcpStream, Arc<Mutex<Vec<String>>>);

impl Read for Recorded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Recorded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Link for Recorded {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.1.lock().unwrap().push(format!("timeout {timeout:?}"));
        self.0.set_read_timeout(timeout)
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.1
            .lock()
            .unwrap()
            .push(format!("nonblocking {nonblocking}"));
        self.0.set_nonblocking(nonblocking)
    }

    fn shutdown_write(&self) {}
}

/// `next_event(Duration::ZERO)` looks without waiting: a read in
/// non-blocking mode, not one with the shortest read timeout (which the OS
/// rounds up to its timer tick, 4 to 10 ms); what has arrived is found so.
#[test]
fn a_zero_wait_reads_without_blocking_and_finds_what_arrived() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        // The chat comes once the client asks for it.
        let asked = p.recv();
        p.send(&chat("hi"));
        let _ = p.reader.read_message();
        asked
    });
    let modes = Arc::new(Mutex::new(Vec::new()));
    let tcp = TcpStream::connect(addr).unwrap();
    let mut c = Client::over(
        Recorded(tcp, modes.clone()),
        "ann",
        ConnectOptions::default(),
    )
    .unwrap();
    modes.lock().unwrap().clear();
    assert!(c.next_event(Duration::ZERO).unwrap().is_none());
    assert_eq!(
        *modes.lock().unwrap(),
        ["nonblocking true", "nonblocking false"],
        "a look sets no read timeout"
    );
    c.send_chat(Recipient::Everyone, "say hi").unwrap();
    let deadline = Instant::now() + WAIT;
    let got = loop {
        if let Some(e) = c.next_event(Duration::ZERO).unwrap() {
            break e;
        }
        assert!(Instant::now() < deadline, "the chat never arrived");
        thread::sleep(Duration::from_millis(5));
    };
    assert!(
        matches!(got, ClientEvent::Chat(ref m) if m.text == "hi"),
        "{got:?}"
    );
    c.quit("bye").unwrap();
    assert!(matches!(peer.join().unwrap(), ClientMessage::Chat { .. }));
}

/// `quit` returns once the server has closed the connection after the
/// goodbye, not as soon as the goodbye is written: a server that takes a
/// while to read it has let go of the name by then, and a bot that quits
/// and connects again under its name is not refused by its own session.
#[test]
fn quit_waits_for_the_server_to_close_after_the_goodbye() {
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&closed);
    let (addr, peer) = serve(move |mut p| {
        p.welcome();
        let quit = p.recv();
        // A server busy elsewhere: it reads the goodbye, then closes later.
        thread::sleep(Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(p);
        quit
    });
    let mut c = connect(addr);
    c.quit("bye").unwrap();
    assert!(
        closed.load(std::sync::atomic::Ordering::SeqCst),
        "quit returned before the server closed the connection"
    );
    assert_eq!(
        peer.join().unwrap(),
        ClientMessage::Quit {
            reason: "bye".into()
        }
    );
}

/// A server that keeps the connection open after the goodbye does not
/// hold `quit` past its bound.
#[test]
fn quit_does_not_wait_forever_for_a_server_that_stays() {
    let (release, wait) = channel::<()>();
    let (addr, peer) = serve(move |mut p| {
        p.welcome();
        let quit = p.recv();
        // Keeps the connection until the test is done.
        let _ = wait.recv_timeout(WAIT);
        quit
    });
    let mut c = connect(addr);
    let started = Instant::now();
    c.quit("bye").unwrap();
    let took = started.elapsed();
    release.send(()).unwrap();
    assert!(
        took < QUIT_WAIT + Duration::from_secs(1),
        "quit took {took:?}"
    );
    assert!(matches!(peer.join().unwrap(), ClientMessage::Quit { .. }));
}

/// A long frame on a slow link: its bytes keep coming, and the answer to
/// a ping would wait behind it, so the server is not taken for dead.
#[test]
fn bytes_of_a_long_frame_keep_the_server_from_timing_out() {
    let (stop, stopped) = channel::<()>();
    let text = "x".repeat(6000);
    let frame = chat(&text).to_frame();
    let (addr, peer) = serve(move |mut p| {
        p.welcome();
        // 100 bytes every 20 ms: 1.2 s for the whole frame, many times
        // the client's keepalive interval and timeout.
        for piece in frame.chunks(100) {
            if p.writer.send_frames(piece).is_err()
                || stopped.recv_timeout(Duration::from_millis(20)).is_ok()
            {
                return;
            }
        }
    });
    let mut options = ConnectOptions::default();
    options.limits.keepalive_interval = Duration::from_millis(150);
    options.limits.keepalive_timeout = Duration::from_millis(150);
    let mut c = Client::connect(addr, "ann", options).unwrap();
    let got = event(&mut c);
    stop.send(()).ok();
    let ClientEvent::Chat(crate::RoutedChat { text: got, .. }) = got else {
        panic!("not the chat: {got:?}");
    };
    assert_eq!(got, text);
    peer.join().unwrap();
}

/// The promise of a failed send: a chat whose send breaks on the
/// connection (a `Transport` error) stays in the session, to go again
/// after a reconnect; also when the break comes while it waits for the
/// server's rate, before it was written.
#[test]
fn a_chat_whose_paced_wait_breaks_stays_to_be_sent_again() {
    let (addr, peer) = serve(|mut p| {
        p.welcome_with(slow(1, 1));
        // The chat arrives and is left unread: closing now resets the
        // connection while the next one waits for its turn.
        thread::sleep(Duration::from_millis(300));
        drop(p);
    });
    let mut c = connect(addr);
    c.send_chat(Recipient::Everyone, "one").unwrap();
    let failed = c.send_chat(Recipient::Everyone, "two");
    peer.join().unwrap();
    assert!(
        matches!(failed, Err(ClientError::Transport(_))),
        "{failed:?}"
    );
    assert_eq!(c.session().unacked(), 2, "the failed chat was dropped");
}

/// A chat of no text takes a place in the window kept for resends as any
/// other: sent while it is full, it would give up the oldest message,
/// which arrives all the same, as not sent.
#[test]
fn an_empty_chat_waits_for_room_in_the_resend_window() {
    let (addr, peer) = serve(|mut p| {
        p.welcome();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let ClientMessage::Chat { client_id, .. } = p.recv() else {
                panic!("no chat");
            };
            ids.push(client_id);
        }
        thread::sleep(Duration::from_millis(200));
        for (n, client_id) in ids.into_iter().enumerate() {
            p.send(&ServerMessage::Ack {
                client_id,
                id: MessageId(n as u64 + 1),
                time: Timestamp(1),
            });
        }
        p.recv()
    });
    let mut options = ConnectOptions::default();
    options.limits.max_unacked = 2;
    let mut c = Client::connect(addr, "ann", options).unwrap();
    for _ in 0..3 {
        c.send_chat(Recipient::Everyone, "").unwrap();
    }
    assert!(matches!(peer.join().unwrap(), ClientMessage::Chat { .. }));
    // What was read before the script hung up.
    let mut events = Vec::new();
    while let Ok(Some(e)) = c.next_event(Duration::from_millis(100)) {
        events.push(e);
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ClientEvent::NotSent { .. })),
        "{events:?}"
    );
}

/// A bot that asks for them gets the server's acknowledgements of its
/// chat messages, on the first connection and after a reconnect.
#[test]
fn report_acks_hands_out_acknowledgements_across_a_reconnect() {
    let script = |mut p: Peer| {
        p.welcome();
        let ClientMessage::Chat { client_id, .. } = p.recv() else {
            panic!("no chat");
        };
        p.send(&ServerMessage::Ack {
            client_id,
            id: MessageId(1),
            time: Timestamp(1),
        });
        // Waits for the client's quit or its hang-up.
        let _ = p.reader.read_message();
    };
    let (first, one) = serve(script);
    let (second, two) = serve(script);
    let options = ConnectOptions {
        report_acks: true,
        ..ConnectOptions::default()
    };
    let mut c = Client::connect(first, "ann", options).unwrap();
    for addr in [None, Some(second)] {
        if let Some(addr) = addr {
            c.reconnect(addr).unwrap();
        }
        let sent = c.send_chat(Recipient::Everyone, "hi").unwrap();
        let acked = loop {
            match event(&mut c) {
                ClientEvent::Acknowledged { client_id } => break client_id,
                // The reconnect's word that nothing was resumed.
                ClientEvent::ContinuityLost { .. } => {}
                other => panic!("not an acknowledgement: {other:?}"),
            }
        };
        assert_eq!(acked, sent);
    }
    c.quit("bye").unwrap();
    one.join().unwrap();
    two.join().unwrap();
}
