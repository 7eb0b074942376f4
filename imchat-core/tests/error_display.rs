//! Errors that carry a peer's or a server's words show them on one line,
//! with nothing in them that acts on a terminal: a bot that prints an
//! error prints what it means, not what a peer hid in it.

use imchat_core::{CancelCode, TransferError, TransferId};

/// The words a hostile peer or server sends: a screen clear, a title
/// change, a line break faking a second line, a bidirectional override.
const HOSTILE: &str = "no\x1b[2J\x1b]0;owned\x07\n<admin> ok\u{202e}";

fn assert_shown_inert(shown: &str) {
    assert!(!shown.contains('\x1b'), "escape in {shown:?}");
    assert!(!shown.contains('\x07'), "bell in {shown:?}");
    assert!(!shown.contains('\n'), "line break in {shown:?}");
    assert!(!shown.contains('\u{202e}'), "override in {shown:?}");
    assert!(shown.contains("^[[2J"), "{shown:?}");
}

#[test]
fn a_cancelled_transfer_shows_the_peers_reason_inert() {
    let e = TransferError::Cancelled {
        id: TransferId(3),
        code: CancelCode::CANCELLED,
        reason: HOSTILE.into(),
    };
    assert_shown_inert(&e.to_string());
    // The field keeps the words as sent, for a program to act on.
    let TransferError::Cancelled { reason, .. } = e else {
        unreachable!()
    };
    assert_eq!(reason, HOSTILE);
}

#[cfg(feature = "blocking")]
mod blocking {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    use imchat_core::blocking::{Client, ConnectError, ConnectOptions};
    use imchat_core::{Encode, RefuseCode, ServerMessage, PROTOCOL_VERSION};

    use super::{assert_shown_inert, HOSTILE};

    /// A connect to a server that answers the `Hello` with a refusal of
    /// `code` and the hostile words.
    fn refused_with(code: RefuseCode, version: u16) -> ConnectError {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = [0u8; 64];
            let _ = s.read(&mut hello).unwrap();
            let refusal = ServerMessage::Refused {
                code,
                reason: HOSTILE.into(),
                version,
            };
            s.write_all(&refusal.to_frame()).unwrap();
            let _ = s.read(&mut hello);
        });
        let Err(e) = Client::connect(addr, "bot", ConnectOptions::default()) else {
            panic!("connected, not refused");
        };
        server.join().unwrap();
        e
    }

    #[test]
    fn a_refusal_shows_the_servers_reason_inert() {
        for (code, version) in [
            (RefuseCode::NAME_TAKEN, PROTOCOL_VERSION),
            (RefuseCode::INVALID_NAME, PROTOCOL_VERSION),
            (RefuseCode::SERVER_FULL, PROTOCOL_VERSION),
            (RefuseCode::SHUTTING_DOWN, PROTOCOL_VERSION),
            (RefuseCode::BANNED, PROTOCOL_VERSION),
            (RefuseCode::VERSION_MISMATCH, PROTOCOL_VERSION + 1),
        ] {
            let e = refused_with(code, version);
            assert_shown_inert(&e.to_string());
        }
    }
}
