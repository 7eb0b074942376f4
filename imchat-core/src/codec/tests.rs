//! Unit tests of the codec: golden frames (the executable examples of
//! `docs/PROTOCOL.md`), one table per decode error, partial and split input.
//!
//! Expected bytes are written by hand from the layouts in `docs/PROTOCOL.md`,
//! never produced by the encoder under test.

use std::collections::BTreeSet;
use std::fmt::Debug;

use super::*;
use crate::error::NameError;
use crate::limits::{DEFAULT_MAX_FRAME, DEFAULT_MAX_HANDSHAKE_FRAME};
use crate::message::{ChatKind, MessageId, ServerLimits, Timestamp, PROTOCOL_VERSION};

/// Parses hex digits, ignoring whitespace (so frames can be laid out field by field).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {s:?}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair:?} in {s:?}"))
        })
        .collect()
}

fn user(s: &str) -> Username {
    Username::new(s).expect("valid username")
}

fn file(s: &str) -> FileName {
    FileName::new(s).expect("valid file name")
}

/// Takes every message the decoder holds, up to the first `Ok(None)` or error.
fn drain<M: Decode>(dec: &mut Decoder<M>) -> Result<Vec<M>, DecodeError> {
    let mut out = Vec::new();
    // Bounded: each message consumes at least one frame header.
    for _ in 0..100_000 {
        match dec.next_message()? {
            Some(m) => out.push(m),
            None => return Ok(out),
        }
    }
    panic!("decoder never ran out of messages")
}

// CRC32/IEEE of b"abc" is 0x352441c2 (the standard check value of "abc").
const ABC_CRC: u32 = 0x3524_41c2;
// CRC32/IEEE of b"hello" (zlib.crc32(b"hello") == 0x3610a686).
const HELLO_CRC: u32 = 0x3610_a686;

/// The resume token of the goldens.
const TOKEN: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// The token of the resumed session's `Welcome`.
const TOKEN2: [u8; 16] = [
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
];
/// The epoch of the goldens.
const EPOCH: u64 = 0x1122_3344_5566_7788;

/// The default limits, as a `Welcome` announces them.
fn default_server_limits() -> ServerLimits {
    ServerLimits {
        max_frame: 0x10_0000,
        max_text: 0x1_0000,
        rate_burst: 100,
        rate_per_sec: 50,
        rate_burst_bytes: 0x10_0000,
        rate_bytes_per_sec: 0x10_0000,
        max_transfers: 8,
        max_push_size: 1 << 32,
    }
}

/// At least one golden frame per `ClientMessage` variant, and one per layout
/// case docs/PROTOCOL.md shows: (name, message, frame). Every one must
/// appear in the document (`protocol_md_examples_are_golden_frames`).
fn client_goldens() -> Vec<(&'static str, ClientMessage, Vec<u8>)> {
    vec![
        (
            "Hello",
            ClientMessage::Hello {
                resume: None,
                version: 2,
                username: user("alice"),
            },
            //   len      type version str8 "alice"
            hex("00000009 01   0002    05 616c696365"),
        ),
        (
            // What a version-1 client sends: the Hello layout is the same
            // in every version, so a server can always read the version.
            "Hello",
            ClientMessage::Hello {
                resume: None,
                version: 1,
                username: user("alice"),
            },
            //   len      type version=1 str8 "alice"
            hex("00000009 01   0001      05 616c696365"),
        ),
        (
            // A reconnecting client asks for its session back.
            "Hello",
            ClientMessage::Hello {
                version: 2,
                username: user("alice"),
                resume: Some(crate::ResumeRequest {
                    token: crate::ResumeToken(TOKEN),
                    last_seen: MessageId(6),
                    epoch: EPOCH,
                }),
            },
            hex(&[
                //  len      type version str8 "alice"
                "00000029 01   0002    05 616c696365",
                //  token
                "000102030405060708090a0b0c0d0e0f",
                //  last_seen        epoch
                "0000000000000006 1122334455667788",
            ]
            .concat()),
        ),
        (
            "Chat",
            ClientMessage::Chat {
                client_id: 1,
                to: Recipient::Everyone,
                kind: ChatKind::Text,
                text: "hi".into(),
            },
            //   len      type client_id        to=everyone kind=text str32 "hi"
            hex("00000011 02   0000000000000001 00          00        00000002 6869"),
        ),
        (
            "Chat",
            ClientMessage::Chat {
                client_id: 2,
                to: Recipient::User(user("bob")),
                kind: ChatKind::Action,
                text: "waves".into(),
            },
            //   len      type client_id        to=user "bob" kind=action
            hex("00000018 02   0000000000000002 01 03 626f62   01          00000005 7761766573"),
        ),
        ("Who", ClientMessage::Who, hex("00000001 03")),
        (
            "FilesAccess",
            ClientMessage::FilesAccess,
            hex("00000001 04"),
        ),
        ("ListFiles", ClientMessage::ListFiles, hex("00000001 05")),
        (
            "Download",
            ClientMessage::Download {
                id: TransferId(7),
                name: file("a.txt"),
                offset: 0x100,
            },
            //   len      type id       str8 "a.txt"   offset
            hex("00000013 06   00000007 05 612e747874 0000000000000100"),
        ),
        (
            "Download",
            ClientMessage::Download {
                id: TransferId(7),
                name: file("a.txt"),
                offset: 0,
            },
            //   len      type id       str8 "a.txt"   offset=0 (a new download)
            hex("00000013 06   00000007 05 612e747874 0000000000000000"),
        ),
        (
            "Ack",
            ClientMessage::Ack {
                id: TransferId(7),
                offset: 0x40000,
            },
            //   len      type id       offset
            hex("0000000d 09   00000007 0000000000040000"),
        ),
        (
            "Ack",
            ClientMessage::Ack {
                id: TransferId(7),
                offset: 5,
            },
            //   len      type id       offset=5 (all of a 5-byte file)
            hex("0000000d 09   00000007 0000000000000005"),
        ),
        (
            "Offer",
            ClientMessage::Offer {
                id: TransferId(9),
                name: file("pic.png"),
                size: 1000,
                to: Recipient::User(user("bob")),
            },
            //   len      type id       str8 "pic.png"      size             to=user "bob"
            hex("0000001a 07   00000009 07 7069632e706e67 00000000000003e8 01 03 626f62"),
        ),
        (
            "Chunk",
            ClientMessage::Chunk(FileChunk::new(TransferId(9), 0, b"abc".to_vec())),
            //   len      type id       offset           crc32("abc") len      data
            hex("00000018 80   00000009 0000000000000000 352441c2     00000003 616263"),
        ),
        (
            "End",
            ClientMessage::End(FileEnd {
                id: TransferId(9),
                crc: ABC_CRC,
            }),
            //   len      type id       crc32 of the whole file
            hex("00000009 81   00000009 352441c2"),
        ),
        (
            "Cancel",
            ClientMessage::Cancel(FileCancel {
                id: TransferId(9),
                code: CancelCode::CANCELLED,
                reason: "stop".into(),
            }),
            //   len      type id       code str32 "stop"
            hex("0000000f 82   00000009 0001 00000004 73746f70"),
        ),
        (
            "Accept",
            ClientMessage::Accept {
                id: TransferId(TransferId::SERVER_BIT | 1),
            },
            //   len      type id (the server's for the offered push)
            hex("00000005 0a   80000001"),
        ),
        (
            "Cancel",
            ClientMessage::Cancel(FileCancel {
                id: TransferId(TransferId::SERVER_BIT | 1),
                code: CancelCode::DECLINED,
                reason: "no".into(),
            }),
            //   len      type id       code=12 str32 "no" (a declined push)
            hex("0000000d 82   80000001 000c    00000002 6e6f"),
        ),
        (
            "Ping",
            ClientMessage::Ping(0x0102_0304_0506_0708),
            hex("00000009 83 0102030405060708"),
        ),
        (
            "Pong",
            ClientMessage::Pong(42),
            hex("00000009 84 000000000000002a"),
        ),
        (
            "Pong",
            ClientMessage::Pong(7),
            //   len      type value (the server's Ping(7) echoed)
            hex("00000009 84   0000000000000007"),
        ),
        (
            "Quit",
            ClientMessage::Quit {
                reason: "bye".into(),
            },
            //   len      type str32 "bye"
            hex("00000008 08   00000003 627965"),
        ),
        (
            "Quit",
            ClientMessage::Quit {
                reason: String::new(),
            },
            //   len      type str32 "" (no parting text)
            hex("00000005 08   00000000"),
        ),
        (
            "Auth",
            ClientMessage::Auth {
                server: Secret::new("pw"),
                account: None,
            },
            //   len      type server "pw" account "" (none)
            hex("00000005 0b   02 7077     00"),
        ),
        (
            "Auth",
            ClientMessage::Auth {
                server: None,
                account: Secret::new("s3cret"),
            },
            //   len      type server "" account "s3cret"
            hex("00000009 0b   00        06 733363726574"),
        ),
        (
            "Register",
            ClientMessage::Register {
                password: Secret::new("s3cret").unwrap(),
            },
            //   len      type str8 "s3cret"
            hex("00000008 0c   06 733363726574"),
        ),
        ("Unregister", ClientMessage::Unregister, hex("00000001 0d")),
        (
            "Operate",
            ClientMessage::Operate {
                action: OpAction::Ban,
                target: "bob".into(),
                reason: "spam".into(),
            },
            //   len      type ban target "bob"   reason "spam"
            hex("0000000e 0e   02  03 626f62 00000004 7370616d"),
        ),
    ]
}

/// At least one golden frame per `ServerMessage` variant, and one per layout
/// case docs/PROTOCOL.md shows: (name, message, frame).
fn server_goldens() -> Vec<(&'static str, ServerMessage, Vec<u8>)> {
    vec![
        (
            "Welcome",
            ServerMessage::Welcome {
                version: 2,
                username: user("alice"),
                text: "hi".into(),
                limits: default_server_limits(),
                token: crate::ResumeToken(TOKEN),
                epoch: EPOCH,
                grace_secs: 60,
                last_id: MessageId(4),
                resumed: None,
            },
            hex(&[
                //  len      type version str8 "alice"
                "00000058 41   0002    05 616c696365",
                //  max_frame max_text burst    rate/s   burst bytes bytes/s
                "00100000  00010000 00000064 00000032 00100000    00100000",
                //  transfers max_push_size
                "00000008  0000000100000000",
                //  str32 "hi"
                "00000002 6869",
                //  token
                "000102030405060708090a0b0c0d0e0f",
                //  epoch          grace_secs last_id          resumed=no
                "1122334455667788 0000003c   0000000000000004 00",
            ]
            .concat()),
        ),
        (
            // The Welcome of a resumed session: a new token, nothing dropped.
            "Welcome",
            ServerMessage::Welcome {
                version: 2,
                username: user("alice"),
                text: "hi".into(),
                limits: default_server_limits(),
                token: crate::ResumeToken(TOKEN2),
                epoch: EPOCH,
                grace_secs: 60,
                last_id: MessageId(9),
                resumed: Some(crate::Resumed { dropped: 0 }),
            },
            hex(&[
                "00000060 41 0002 05 616c696365",
                "00100000 00010000 00000064 00000032 00100000 00100000",
                "00000008 0000000100000000",
                "00000002 6869",
                "101112131415161718191a1b1c1d1e1f",
                //  epoch          grace_secs last_id          resumed=yes dropped
                "1122334455667788 0000003c   0000000000000009 01          0000000000000000",
            ]
            .concat()),
        ),
        (
            "Refused",
            ServerMessage::Refused {
                code: RefuseCode::NAME_TAKEN,
                reason: "taken".into(),
                version: 2,
            },
            //   len      type code version str32 "taken"
            hex("0000000e 42   0003 0002    00000005 74616b656e"),
        ),
        (
            // The answer to a version-1 Hello, with the reference server's text.
            "Refused",
            ServerMessage::Refused {
                code: RefuseCode::VERSION_MISMATCH,
                reason: "protocol version 1 is not supported; this server speaks version 2"
                    .into(),
                version: 2,
            },
            hex(&[
                //  len      type code=1 version=2 str32 of 65 bytes:
                "0000004a 42   0001   0002      00000041",
                // "protocol version 1 is not supported; "
                "70726f746f636f6c2076657273696f6e2031206973206e6f7420737570706f727465643b20",
                // "this server speaks version 2"
                "746869732073657276657220737065616b732076657273696f6e2032",
            ]
            .concat()),
        ),
        (
            "Chat",
            ServerMessage::Chat(crate::RoutedChat {
                history: false,
                id: MessageId(5),
                time: Timestamp(1_700_000_000_000),
                from: user("bob"),
                private: true,
                kind: ChatKind::Text,
                text: "hi".into(),
            }),
            hex(&[
                //  len      type id               time (ms since 1970)
                "0000001e 43   0000000000000005 0000018bcfe56800",
                //  str8 "bob" private kind=text history=no str32 "hi"
                "03 626f62  01      00        00         00000002 6869",
            ]
            .concat()),
        ),
        (
            "Chat",
            ServerMessage::Chat(crate::RoutedChat {
                history: false,
                id: MessageId(6),
                time: Timestamp(1_700_000_000_250),
                from: user("bob"),
                private: false,
                kind: ChatKind::Action,
                text: "waves".into(),
            }),
            hex(&[
                //  len      type id               time (250 ms after id 5's)
                "00000021 43   0000000000000006 0000018bcfe568fa",
                //  str8 "bob" private=no kind=action history=no str32 "waves"
                "03 626f62  00         01          00         00000005 7761766573",
            ]
            .concat()),
        ),
        (
            // History: message 3, a minute before message 5, replayed to a
            // user joining afresh.
            "Chat",
            ServerMessage::Chat(crate::RoutedChat {
                id: MessageId(3),
                time: Timestamp(1_699_999_940_000),
                from: user("bob"),
                private: false,
                kind: ChatKind::Text,
                text: "hi".into(),
                history: true,
            }),
            hex(&[
                //  len      type id               time
                "0000001e 43   0000000000000003 0000018bcfe47da0",
                //  str8 "bob" private=no kind=text history=yes str32 "hi"
                "03 626f62  00         00        01          00000002 6869",
            ]
            .concat()),
        ),
        (
            "Ack",
            ServerMessage::Ack {
                client_id: 1,
                id: MessageId(7),
                time: Timestamp(1_700_000_000_500),
            },
            //   len      type client_id        id               time
            hex("00000019 4e   0000000000000001 0000000000000007 0000018bcfe569f4"),
        ),
        (
            "Joined",
            ServerMessage::Joined {
                id: MessageId(4),
                time: Timestamp(1_699_999_999_000),
                user: user("bob"),
            },
            //   len      type id               time             str8 "bob"
            hex("00000015 44   0000000000000004 0000018bcfe56418 03 626f62"),
        ),
        (
            "Left",
            ServerMessage::Left(crate::Departure {
                id: MessageId(8),
                time: Timestamp(1_700_000_001_000),
                user: user("bob"),
                reason: LeaveReason::QUIT,
                text: "bye".into(),
            }),
            //   len      type id               time             str8 "bob" reason=quit str32 "bye"
            hex("0000001d 45   0000000000000008 0000018bcfe56be8 03 626f62  00          00000003 627965"),
        ),
        (
            "Left",
            ServerMessage::Left(crate::Departure {
                id: MessageId(9),
                time: Timestamp(1_700_000_002_000),
                user: user("bob"),
                reason: LeaveReason::TIMEOUT,
                text: String::new(),
            }),
            //   len      type id               time             str8 "bob" reason=timeout str32 ""
            hex("0000001a 45   0000000000000009 0000018bcfe56fd0 03 626f62  02             00000000"),
        ),
        (
            "Who",
            ServerMessage::Who {
                users: vec![OnlineUser::here(user("alice")), OnlineUser::here(user("bob"))],
            },
            //   len      type count    str8 "alice"  str8 "bob"
            hex("0000000f 46   00000002 05 616c696365 03 626f62"),
        ),
        (
            "FilesAccess",
            ServerMessage::FilesAccess { count: 3 },
            hex("00000009 47 0000000000000003"),
        ),
        (
            "FileList",
            ServerMessage::FileList(crate::FileListPart {
                files: vec![FileEntry {
                    name: file("a.txt"),
                    size: 5,
                }],
                last: true,
            }),
            //   len      type last count    str8 "a.txt"  size
            hex("00000014 48   01   00000001 05 612e747874 0000000000000005"),
        ),
        (
            "FileList",
            ServerMessage::FileList(crate::FileListPart {
                files: vec![FileEntry {
                    name: file("b.txt"),
                    size: 1024,
                }],
                last: false,
            }),
            //   len      type last=no count    str8 "b.txt"  size
            hex("00000014 48   00      00000001 05 622e747874 0000000000000400"),
        ),
        (
            "FileList",
            ServerMessage::FileList(crate::FileListPart {
                files: Vec::new(),
                last: true,
            }),
            //   len      type last count=0 (an empty folder)
            hex("00000006 48   01   00000000"),
        ),
        (
            "FileStart",
            ServerMessage::FileStart(crate::FileStart {
                id: TransferId(7),
                name: file("a.txt"),
                size: 5,
                offset: 0,
                origin: Origin::Download,
            }),
            //   len      type id       str8 "a.txt"  size             offset           origin
            hex("0000001c 49   00000007 05 612e747874 0000000000000005 0000000000000000 00"),
        ),
        (
            "FileStart",
            ServerMessage::FileStart(crate::FileStart {
                id: TransferId(TransferId::SERVER_BIT | 1),
                name: file("pic.png"),
                size: 1000,
                offset: 0,
                origin: Origin::Push { from: user("bob") },
            }),
            //   len      type id       str8 "pic.png"     size             offset           push from "bob"
            hex("00000022 49   80000001 07 7069632e706e67 00000000000003e8 0000000000000000 01 03 626f62"),
        ),
        (
            "Chunk",
            ServerMessage::Chunk(FileChunk::new(TransferId(7), 0, b"hello".to_vec())),
            //   len      type id       offset           crc32("hello") len      data "hello"
            hex("0000001a 80   00000007 0000000000000000 3610a686       00000005 68656c6c6f"),
        ),
        (
            "End",
            ServerMessage::End(FileEnd {
                id: TransferId(7),
                crc: HELLO_CRC,
            }),
            //   len      type id       crc32("hello"), the whole file
            hex("00000009 81   00000007 3610a686"),
        ),
        (
            "Cancel",
            ServerMessage::Cancel(FileCancel {
                id: TransferId(7),
                code: CancelCode::NO_SUCH_FILE,
                reason: "gone".into(),
            }),
            hex("0000000f 82 00000007 0002 00000004 676f6e65"),
        ),
        (
            "PushAccepted",
            ServerMessage::PushAccepted {
                id: TransferId(9),
                receivers: 2,
            },
            //   len      type id       receivers that accepted
            hex("00000009 4d   00000009 00000002"),
        ),
        (
            "PushDone",
            ServerMessage::PushDone {
                id: TransferId(9),
                receivers: 2,
            },
            //   len      type id       receivers
            hex("00000009 4a   00000009 00000002"),
        ),
        (
            "Error",
            ServerMessage::Error {
                code: ErrorCode::UNKNOWN_USER,
                client_id: 2,
                text: "no".into(),
            },
            //   len      type code client_id        str32 "no"
            hex("00000011 4b   0002 0000000000000002 00000002 6e6f"),
        ),
        (
            "Error",
            ServerMessage::Error {
                code: ErrorCode::TIMEOUT,
                client_id: 0,
                text: "no answer to keepalive".into(),
            },
            //   len      type code=6 client_id=none   str32 "no answer to keepalive"
            hex("00000025 4b   0006   0000000000000000 00000016 6e6f20616e7377657220746f206b656570616c697665"),
        ),
        (
            "Ping",
            ServerMessage::Ping(7),
            hex("00000009 83 0000000000000007"),
        ),
        (
            "Pong",
            ServerMessage::Pong(u64::MAX),
            hex("00000009 84 ffffffffffffffff"),
        ),
        (
            "Shutdown",
            ServerMessage::Shutdown {
                reason: "bye".into(),
            },
            hex("00000008 4c 00000003 627965"),
        ),
        (
            // bob joined (entry 4), carol a quarter second later (5), bob
            // quit saying "bye" (7): ids and times as differences.
            "Presence",
            ServerMessage::Presence(vec![
                PresenceEvent::Joined {
                    id: MessageId(4),
                    time: Timestamp(1_699_999_999_000),
                    user: user("bob"),
                },
                PresenceEvent::Joined {
                    id: MessageId(5),
                    time: Timestamp(1_699_999_999_250),
                    user: user("carol"),
                },
                PresenceEvent::Left(crate::Departure {
                    id: MessageId(7),
                    time: Timestamp(1_700_000_000_000),
                    user: user("bob"),
                    reason: LeaveReason::QUIT,
                    text: "bye".into(),
                }),
            ]),
            hex(&[
                //  len      type count
                "0000002b 4f   00000003",
                //  join id+4 time+1699999999000 str8 "bob"
                "00   04   b090abfef962          03 626f62",
                //  join id+1 time+250 str8 "carol"
                "00   01   f403     05 6361726f6c",
                //  leave id+2 time+750 str8 "bob" reason=quit str32 "bye"
                "01    02   dc0b     03 626f62  00          00000003 627965",
            ]
            .concat()),
        ),
        (
            "Notice",
            ServerMessage::Notice {
                code: NoticeCode::REGISTERED,
                text: "ok".into(),
            },
            hex("00000009 50 0001 00000002 6f6b"),
        ),
        (
            // bob's connection was lost 23 s ago: his session waits.
            "Who",
            ServerMessage::Who {
                users: vec![OnlineUser::here(user("alice")), OnlineUser::away(user("bob"), 23)],
            },
            //   len      type count    str8 "alice"  str8 "bob" here away uvar 23
            hex("00000012 46   00000002 05 616c696365 03 626f62 00   01   17"),
        ),
        (
            "PushCredit",
            ServerMessage::PushCredit {
                id: TransferId(9),
                offset: 0x0010_0000,
            },
            //   len      type id       may send up to 1 MiB
            hex("0000000d 51   00000009 0000000000100000"),
        ),
        (
            // bob's connection was lost (the newest entry was 7), carol
            // joined 2 s later (entry 8), bob resumed 3 s after that.
            "Presence",
            ServerMessage::Presence(vec![
                PresenceEvent::Away {
                    id: MessageId(7),
                    time: Timestamp(1_700_000_000_000),
                    user: user("bob"),
                },
                PresenceEvent::Joined {
                    id: MessageId(8),
                    time: Timestamp(1_700_000_002_000),
                    user: user("carol"),
                },
                PresenceEvent::Back {
                    id: MessageId(8),
                    time: Timestamp(1_700_000_005_000),
                    user: user("bob"),
                },
            ]),
            hex(&[
                //  len      type count
                "00000023 4f   00000003",
                //  away id+7 time+1700000000000 str8 "bob"
                "02   07   80a0abfef962          03 626f62",
                //  join id+1 time+2000 str8 "carol"
                "00   01   a01f      05 6361726f6c",
                //  back id+0 time+3000 str8 "bob"
                "03   00   f02e      03 626f62",
            ]
            .join(" ")),
        ),
    ]
}

/// Defines `$name_of`, the name of each variant of `$ty`, and `$all`, the
/// names of all of them, from one list: the `match` stops compiling when a
/// variant is added, which is the cue to add its golden frame.
macro_rules! variant_names {
    ($name_of:ident, $all:ident: $ty:ident {
        $($variant:ident $({$($named:tt)*})? $(($($tuple:tt)*))?),* $(,)?
    }) => {
        fn $name_of(m: &$ty) -> &'static str {
            match m {
                $($ty::$variant $({$($named)*})? $(($($tuple)*))? => stringify!($variant),)*
            }
        }
        const $all: &[&str] = &[$(stringify!($variant)),*];
    };
}

variant_names!(client_kind, CLIENT_KINDS: ClientMessage {
    Hello { .. }, Chat { .. }, Who, FilesAccess, ListFiles, Download { .. }, Ack { .. },
    Offer { .. }, Accept { .. }, Chunk(_), End(_), Cancel(_), Ping(_), Pong(_), Quit { .. },
    Auth { .. }, Register { .. }, Unregister, Operate { .. },
});

variant_names!(server_kind, SERVER_KINDS: ServerMessage {
    Welcome { .. }, Refused { .. }, Chat { .. }, Joined { .. }, Left { .. }, Who { .. },
    FilesAccess { .. }, FileList { .. }, FileStart { .. }, Chunk(_), End(_), Cancel(_),
    PushAccepted { .. }, PushCredit { .. }, PushDone { .. }, Error { .. }, Ping(_), Pong(_), Shutdown { .. },
    Ack { .. }, Presence(_), Notice { .. },
});

/// Encoding gives exactly the golden bytes, the header counts the rest, and
/// decoding the bytes (directly and through a `Decoder`) gives the message back.
fn check_golden<M>(name: &str, msg: &M, bytes: &[u8], max_frame: u32)
where
    M: Encode + Decode + PartialEq + Debug,
{
    assert_eq!(msg.to_frame(), bytes, "{name}: encode({msg:?})");
    let mut appended = vec![0xee];
    msg.encode(&mut appended);
    assert_eq!(&appended[1..], bytes, "{name}: encode must append");
    let len = u32::from_be_bytes(bytes[..HEADER_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - HEADER_LEN, "{name}: length header");
    assert_eq!(
        M::decode_frame(&bytes[HEADER_LEN..]).as_ref(),
        Ok(msg),
        "{name}: decode_frame"
    );
    let mut dec = Decoder::<M>::new(max_frame);
    dec.feed(bytes);
    assert_eq!(
        dec.next_message().as_ref().map(Option::as_ref),
        Ok(Some(msg)),
        "{name}: Decoder"
    );
    assert_eq!(
        dec.next_message(),
        Ok(None),
        "{name}: one frame, one message"
    );
    assert_eq!(dec.buffered(), 0, "{name}: whole frame consumed");
}

/// Checks one direction's golden frames: one per variant (`kinds`, named by
/// `kind`), each named after its variant and passing [`check_golden`].
fn check_goldens<M>(
    goldens: &[(&'static str, M, Vec<u8>)],
    kind: fn(&M) -> &'static str,
    kinds: &[&'static str],
) where
    M: Encode + Decode + PartialEq + Debug,
{
    let covered: BTreeSet<_> = goldens.iter().map(|(_, m, _)| kind(m)).collect();
    let all: BTreeSet<_> = kinds.iter().copied().collect();
    assert_eq!(covered, all, "one golden frame per variant");
    for (name, msg, bytes) in goldens {
        assert_eq!(*name, kind(msg));
        check_golden(name, msg, bytes, DEFAULT_MAX_FRAME);
    }
}

#[test]
fn golden_client_frames() {
    check_goldens(&client_goldens(), client_kind, CLIENT_KINDS);
}

#[test]
fn golden_server_frames() {
    check_goldens(&server_goldens(), server_kind, SERVER_KINDS);
}

#[test]
fn the_whole_handshake_fits_under_the_handshake_limit() {
    // A Hello with the longest username (32 four-byte characters) is the
    // largest frame a client sends before the handshake.
    let hello = ClientMessage::Hello {
        resume: None,
        version: u16::MAX,
        username: user(&"𝒜".repeat(32)),
    };
    let frame = hello.to_frame();
    assert_eq!(frame.len(), HEADER_LEN + 1 + 2 + 1 + 128);
    check_golden("long Hello", &hello, &frame, DEFAULT_MAX_HANDSHAKE_FRAME);
}

#[test]
fn unknown_code_values_pass_through() {
    // Codes are open sets: a newer peer's values survive a round trip.
    let cases = [
        (
            ServerMessage::Refused {
                code: RefuseCode(0xbeef),
                reason: String::new(),
                version: 9,
            },
            hex("00000009 42 beef 0009 00000000"),
        ),
        (
            ServerMessage::Error {
                client_id: 0,
                code: ErrorCode(999),
                text: String::new(),
            },
            hex("0000000f 4b 03e7 0000000000000000 00000000"),
        ),
        (
            ServerMessage::Left(crate::Departure {
                id: crate::MessageId(0),
                time: crate::Timestamp(0),
                user: user("bob"),
                reason: LeaveReason(200),
                text: String::new(),
            }),
            hex("0000001a 45 0000000000000000 0000000000000000 03 626f62 c8 00000000"),
        ),
        (
            ServerMessage::Cancel(FileCancel {
                id: TransferId(u32::MAX),
                code: CancelCode(0xffff),
                reason: "é".into(),
            }),
            hex("0000000d 82 ffffffff ffff 00000002 c3a9"),
        ),
    ];
    for (msg, bytes) in &cases {
        check_golden("unknown code", msg, bytes, DEFAULT_MAX_FRAME);
    }
}

// ---------------------------------------------------------------------------
// One test per DecodeError variant. Each case is fed between two valid Pings:
// the first Ping comes out, then the error, and from then on the same error
// every time, also after more (valid) bytes.

fn assert_fails_for_good<M>(mut dec: Decoder<M>, ping: M, bad: &[u8], expected: &DecodeError)
where
    M: Encode + Decode + PartialEq + Debug,
{
    let ping_frame = ping.to_frame();
    let mut stream = ping_frame.clone();
    stream.extend_from_slice(bad);
    stream.extend_from_slice(&ping_frame);
    dec.feed(&stream);
    assert_eq!(
        dec.next_message(),
        Ok(Some(ping)),
        "frame before {expected:?}"
    );
    assert_eq!(
        dec.next_message().as_ref(),
        Err(expected),
        "bad frame {bad:02x?}"
    );
    assert!(dec.is_failed());
    assert_eq!(
        dec.next_message().as_ref(),
        Err(expected),
        "error is sticky"
    );
    dec.feed(&ping_frame);
    assert_eq!(
        dec.next_message().as_ref(),
        Err(expected),
        "sticky after feed"
    );
    assert_eq!(dec.buffered(), 0, "a failed decoder holds no bytes");
}

enum Dir {
    Client,
    Server,
}

/// Runs one table of (direction, bad bytes in [`hex`], expected error)
/// through decoders with the default frame limit.
fn run_error_table(cases: &[(Dir, &str, DecodeError)]) {
    run_error_table_at(DEFAULT_MAX_FRAME, cases);
}

/// [`run_error_table`] with the frame limit `max`.
fn run_error_table_at(max: u32, cases: &[(Dir, &str, DecodeError)]) {
    for (dir, bad, expected) in cases {
        let bad = hex(bad);
        match dir {
            Dir::Client => {
                assert_fails_for_good(Decoder::new(max), ClientMessage::Ping(1), &bad, expected);
            }
            Dir::Server => {
                assert_fails_for_good(Decoder::new(max), ServerMessage::Ping(1), &bad, expected);
            }
        }
    }
}

#[test]
fn error_frame_too_large() {
    use Dir::*;
    let too_large = |size, max| DecodeError::FrameTooLarge { size, max };
    let m = DEFAULT_MAX_FRAME;
    let h = DEFAULT_MAX_HANDSHAKE_FRAME;
    run_error_table_at(
        m,
        &[
            (Client, "00100001", too_large(m + 1, m)),
            (Server, "00100001", too_large(m + 1, m)),
            (Client, "7fffffff", too_large(0x7fff_ffff, m)),
            (Server, "ffffffff", too_large(u32::MAX, m)),
        ],
    );
    run_error_table_at(
        h,
        &[
            (Client, "00000401", too_large(h + 1, h)),
            // Refused from the header alone, whatever follows.
            (Server, "00000800 4b0001", too_large(2048, h)),
        ],
    );
}

#[test]
fn error_empty_frame() {
    use Dir::*;
    run_error_table(&[
        (Client, "00000000", DecodeError::EmptyFrame),
        (Server, "00000000", DecodeError::EmptyFrame),
    ]);
    run_error_table_at(16, &[(Client, "00000000 03", DecodeError::EmptyFrame)]);
    assert_eq!(
        ClientMessage::decode_frame(&[]),
        Err(DecodeError::EmptyFrame)
    );
    assert_eq!(
        ServerMessage::decode_frame(&[]),
        Err(DecodeError::EmptyFrame)
    );
}

#[test]
fn error_unknown_type() {
    use Dir::*;
    let unknown = |ty| DecodeError::UnknownType { ty };
    run_error_table(&[
        (Client, "00000001 00", unknown(0x00)),
        (Client, "00000001 ff", unknown(0xff)),
        (Client, "00000001 0f", unknown(0x0f)),
        (Client, "00000001 85", unknown(0x85)),
        (Server, "00000001 00", unknown(0x00)),
        (Server, "00000001 40", unknown(0x40)),
        (Server, "00000001 52", unknown(0x52)),
        // The type is refused before its body is looked at.
        (Server, "00000004 7f 000000", unknown(0x7f)),
    ]);
}

#[test]
fn direction_is_checked_by_type_byte() {
    // Every client-only type is unknown to the server-direction decoder
    // (what a client receives), and every server-only type to the
    // client-direction decoder; the shared types (0x80..) decode in both.
    check_other_direction::<ClientMessage, ServerMessage>(&client_goldens());
    check_other_direction::<ServerMessage, ClientMessage>(&server_goldens());
}

/// Feeds golden frames of type `M` to a decoder of the other direction `N`:
/// one-direction types are unknown there, the shared ones decode the same.
fn check_other_direction<M: Encode, N: Decode + Encode + Debug + PartialEq>(
    goldens: &[(&'static str, M, Vec<u8>)],
) {
    for (name, msg, bytes) in goldens {
        let ty = bytes[HEADER_LEN];
        let mut dec = Decoder::<N>::new(DEFAULT_MAX_FRAME);
        dec.feed(bytes);
        if ty < 0x80 {
            assert_eq!(
                dec.next_message(),
                Err(DecodeError::UnknownType { ty }),
                "{name}"
            );
        } else {
            let m = dec.next_message().unwrap().unwrap();
            assert_eq!(m.to_frame(), msg.to_frame(), "{name}");
        }
    }
}

#[test]
fn error_truncated() {
    use Dir::*;
    let truncated = |ty| DecodeError::Truncated { ty };
    run_error_table(&[
        // Ping with 7 of its 8 value bytes.
        (Client, "00000008 83 01020304050607", truncated(0x83)),
        // Hello with 2 bytes of a resume request.
        (
            Client,
            "0000000c 01 0002 05 616c696365 0001",
            truncated(0x01),
        ),
        // Hello without its username.
        (Client, "00000003 01 0001", truncated(0x01)),
        // str8 length 5, 3 bytes left.
        (Client, "00000007 01 0001 05 616c69", truncated(0x01)),
        // Chat whose str32 claims 0xffffffff bytes.
        (
            Client,
            "00000013 02 0000000000000001 00 00 ffffffff 68656c6c",
            truncated(0x02),
        ),
        // Chunk whose data length claims one byte more than is there.
        (
            Client,
            "00000018 80 00000009 0000000000000000 352441c2 00000004 616263",
            truncated(0x80),
        ),
        // Who whose count claims 0xffffffff names.
        (Server, "00000007 46 ffffffff 01 61", truncated(0x46)),
        // Who whose presence trailer marks a user away without saying how long.
        (Server, "0000000a 46 00000001 03 626f62 01", truncated(0x46)),
        // Who whose presence trailer stops before its second user.
        (
            Server,
            "0000000d 46 00000002 01 61 03 626f62 01 05",
            truncated(0x46),
        ),
        // FileList with a count of 1 and no entry.
        (Server, "00000006 48 01 00000001", truncated(0x48)),
        // FileList with a count of 1 and half an entry.
        (
            Server,
            "0000000c 48 01 00000001 01 61 00000000",
            truncated(0x48),
        ),
        // End without its CRC.
        (Server, "00000005 81 00000009", truncated(0x81)),
        // Error with only half its code.
        (Server, "00000002 4b 00", truncated(0x4b)),
    ]);
}

#[test]
fn error_trailing_bytes() {
    use Dir::*;
    let trailing = |ty, extra| DecodeError::TrailingBytes { ty, extra };
    run_error_table(&[
        (Client, "00000002 03 00", trailing(0x03, 1)),
        (
            Client,
            "0000000b 83 0000000000000001 0000",
            trailing(0x83, 2),
        ),
        (Client, "00000006 08 00000000 ff", trailing(0x08, 1)),
        (
            Server,
            "00000016 44 0000000000000001 0000000000000001 03 626f62 ff",
            trailing(0x44, 1),
        ),
        (
            Server,
            "0000000d 4a 00000009 00000002 00000000",
            trailing(0x4a, 4),
        ),
        // A byte after a Who's presence trailer.
        (
            Server,
            "0000000c 46 00000001 03 626f62 01 05 ff",
            trailing(0x46, 1),
        ),
    ]);
}

#[test]
fn error_invalid_utf8() {
    use Dir::*;
    let bad_utf8 = |field| DecodeError::InvalidUtf8 { field };
    run_error_table(&[
        (
            Client,
            "00000010 02 0000000000000001 00 00 00000001 ff",
            bad_utf8("text"),
        ),
        (Client, "00000005 01 0001 01 ff", bad_utf8("username")),
        // A surrogate encoded in UTF-8 (CESU) is not UTF-8.
        (
            Client,
            "0000000e 82 00000001 0001 00000003 eda080",
            bad_utf8("reason"),
        ),
        (Server, "00000007 4c 00000002 c328", bad_utf8("reason")),
        (
            Server,
            "00000014 44 0000000000000001 0000000000000001 02 c0af",
            bad_utf8("user"),
        ),
    ]);
}

#[test]
fn error_invalid_name() {
    use Dir::*;
    let bad_name = |field, error| DecodeError::InvalidName { field, error };
    run_error_table(&[
        (
            Client,
            "00000007 01 0001 03 612f62",
            bad_name("username", NameError::BadChar { ch: '/' }),
        ),
        (
            Client,
            "00000004 01 0001 00",
            bad_name("username", NameError::Empty),
        ),
        (
            Client,
            "00000010 06 00000001 02 2e2e 0000000000000000",
            bad_name("name", NameError::LeadingDot),
        ),
        (
            Client,
            "00000015 02 0000000000000001 01 05 61646d696e 00 00000000",
            bad_name(
                "to",
                NameError::Reserved {
                    name: "admin".into(),
                },
            ),
        ),
        (
            Server,
            "00000017 44 0000000000000001 0000000000000001 05 61646d696e",
            bad_name(
                "user",
                NameError::Reserved {
                    name: "admin".into(),
                },
            ),
        ),
        (
            Server,
            // FileList entry "a/b"
            "00000012 48 01 00000001 03 612f62 0000000000000001",
            bad_name("files", NameError::BadChar { ch: '/' }),
        ),
    ]);
}

#[test]
fn an_empty_register_password_is_refused() {
    use Dir::*;
    run_error_table(&[(
        Client,
        "00000002 0c 00",
        DecodeError::Empty { field: "password" },
    )]);
}

#[test]
fn an_absent_auth_secret_is_the_empty_string_and_secrets_hide_in_debug() {
    let auth = ClientMessage::Auth {
        server: None,
        account: None,
    };
    assert_eq!(auth.to_frame(), hex("00000003 0b 00 00"));
    let with = ClientMessage::Auth {
        server: Secret::new("hunter2"),
        account: None,
    };
    assert!(!format!("{with:?}").contains("hunter2"));
    assert_eq!(Secret::new(""), None);
    assert_eq!(Secret::new("x".repeat(256)), None);
    assert!(Secret::new("x".repeat(255)).is_some());
}

#[test]
fn error_invalid_tag() {
    use Dir::*;
    let bad_tag = |field, value| DecodeError::InvalidTag { field, value };
    run_error_table(&[
        // A Who's presence tag other than here (0) or away (1).
        (
            Server,
            "0000000a 46 00000001 03 626f62 02",
            bad_tag("away", 2),
        ),
        // A presence trailer that marks nobody away is not canonical: it
        // is sent only when someone is.
        (
            Server,
            "0000000a 46 00000001 03 626f62 00",
            bad_tag("away", 0),
        ),
        (
            Client,
            "00000010 02 0000000000000001 02 00 00000001 68",
            bad_tag("to", 2),
        ),
        (
            Client,
            "00000010 02 0000000000000001 00 02 00000001 68",
            bad_tag("kind", 2),
        ),
        (
            Client,
            "00000016 07 00000009 07 7069632e706e67 00000000000003e8 ff",
            bad_tag("to", 0xff),
        ),
        // An operator action other than 1 to 4.
        (Client, "00000007 0e 05 00 00000000", bad_tag("action", 5)),
        (Client, "00000007 0e 00 00 00000000", bad_tag("action", 0)),
        (
            Server,
            "0000001c 43 0000000000000001 0000000000000000 03 626f62 02 00 00 00000000",
            bad_tag("private", 2),
        ),
        (
            Server,
            "0000001c 43 0000000000000001 0000000000000000 03 626f62 00 07 00 00000000",
            bad_tag("kind", 7),
        ),
        (
            Server,
            "0000001c 43 0000000000000001 0000000000000000 03 626f62 00 00 02 00000000",
            bad_tag("history", 2),
        ),
        (
            Server,
            &[
                "00000058 41 0002 05 616c696365",
                "00100000 00010000 00000064 00000032 00100000 00100000",
                "00000008 0000000100000000 00000002 6869",
                "000102030405060708090a0b0c0d0e0f",
                "1122334455667788 0000003c 0000000000000004 02",
            ]
            .concat(),
            bad_tag("resumed", 2),
        ),
        (Server, "00000006 48 02 00000000", bad_tag("last", 2)),
        (
            Server,
            "0000001c 49 00000007 05 612e747874 0000000000000005 0000000000000000 05",
            bad_tag("origin", 5),
        ),
    ]);
}

// ---------------------------------------------------------------------------
// Partial and split input.

#[test]
fn every_strict_prefix_needs_more() {
    fn check<M: Encode + Decode + PartialEq + Debug>(name: &str, msg: &M, bytes: &[u8]) {
        for k in 0..bytes.len() {
            let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
            dec.feed(&bytes[..k]);
            assert_eq!(dec.next_message(), Ok(None), "{name}: prefix of {k} bytes");
            assert_eq!(dec.buffered(), k, "{name}: nothing consumed");
            dec.feed(&bytes[k..]);
            assert_eq!(
                dec.next_message().as_ref().map(Option::as_ref),
                Ok(Some(msg)),
                "{name}: rest"
            );
        }
    }
    for (name, msg, bytes) in client_goldens() {
        check(name, &msg, &bytes);
    }
    for (name, msg, bytes) in server_goldens() {
        check(name, &msg, &bytes);
    }
}

fn concat<M>(goldens: &[(&'static str, M, Vec<u8>)]) -> (Vec<M>, Vec<u8>)
where
    M: Clone,
{
    let msgs = goldens.iter().map(|(_, m, _)| m.clone()).collect();
    let bytes = goldens.iter().flat_map(|(_, _, b)| b.clone()).collect();
    (msgs, bytes)
}

/// One direction's messages: its golden frames back to back, so a stream
/// test is written once and run for both directions.
trait Stream: Decode + PartialEq + Debug + Clone {
    /// The messages of every golden frame, and the frames in one buffer.
    fn golden_stream() -> (Vec<Self>, Vec<u8>);
}

impl Stream for ClientMessage {
    fn golden_stream() -> (Vec<Self>, Vec<u8>) {
        concat(&client_goldens())
    }
}

impl Stream for ServerMessage {
    fn golden_stream() -> (Vec<Self>, Vec<u8>) {
        concat(&server_goldens())
    }
}

#[test]
fn byte_at_a_time_stream() {
    fn check<M: Stream>() {
        let (msgs, bytes) = M::golden_stream();
        let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        for b in &bytes {
            dec.feed(std::slice::from_ref(b));
            got.extend(drain(&mut dec).unwrap());
        }
        assert_eq!(got, msgs);
        assert_eq!(dec.buffered(), 0);
    }
    check::<ClientMessage>();
    check::<ServerMessage>();
}

#[test]
fn several_frames_in_one_feed() {
    fn check<M: Stream>() {
        let (msgs, bytes) = M::golden_stream();
        let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
        dec.feed(&bytes);
        assert_eq!(drain(&mut dec).unwrap(), msgs);
        assert_eq!(dec.next_message(), Ok(None));
        assert_eq!(dec.buffered(), 0);
    }
    check::<ClientMessage>();
    check::<ServerMessage>();
}

#[test]
fn frames_split_across_feeds_at_every_point() {
    // Two whole streams fed in two pieces, split at every position.
    let (msgs, bytes) = ServerMessage::golden_stream();
    for split in 0..=bytes.len() {
        let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
        dec.feed(&bytes[..split]);
        let mut got = drain(&mut dec).unwrap();
        dec.feed(&bytes[split..]);
        got.extend(drain(&mut dec).unwrap());
        assert_eq!(got, msgs, "split at {split}");
    }
}

#[test]
fn encode_chunk_equals_encoding_a_file_chunk() {
    let big: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let cases: [(u32, u64, &[u8]); 4] = [
        (9, 0, b"abc"),
        (1, 0, b""),
        (TransferId::SERVER_BIT | 3, 1 << 40, &big),
        (u32::MAX, u64::MAX, b"\x00\xff"),
    ];
    for (id, offset, data) in cases {
        let chunk = FileChunk::new(TransferId(id), offset, data.to_vec());
        let mut fast = vec![0xaa, 0xbb];
        encode_chunk(&mut fast, TransferId(id), offset, data);
        assert_eq!(&fast[..2], [0xaa, 0xbb], "encode_chunk appends");
        assert_eq!(fast[2..], ClientMessage::Chunk(chunk.clone()).to_frame());
        assert_eq!(fast[2..], ServerMessage::Chunk(chunk.clone()).to_frame());
        let decoded = ServerMessage::decode_frame(&fast[2 + HEADER_LEN..]).unwrap();
        assert_eq!(decoded, ServerMessage::Chunk(chunk));
    }
    // And the CRC it computes is the one in the golden frame.
    let mut out = Vec::new();
    encode_chunk(&mut out, TransferId(9), 0, b"abc");
    let golden = client_goldens()
        .into_iter()
        .find(|(name, _, _)| *name == "Chunk")
        .expect("a Chunk golden");
    assert_eq!(out, golden.2);
}

#[test]
fn set_max_frame_switches_between_handshake_and_session_limits() {
    // A 2 KiB chat frame: 1 type + 8 client id + 1 recipient + 1 kind + 4
    // length + 2033 text bytes.
    let chat = ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: "x".repeat(2033),
    };
    let frame = chat.to_frame();
    assert_eq!(frame.len(), HEADER_LEN + 2048);

    let mut handshake = Decoder::<ClientMessage>::new(DEFAULT_MAX_HANDSHAKE_FRAME);
    assert_eq!(handshake.max_frame(), 1024);
    handshake.feed(&frame[..HEADER_LEN]);
    assert_eq!(
        handshake.next_message(),
        Err(DecodeError::FrameTooLarge {
            size: 2048,
            max: 1024
        })
    );

    let mut dec = Decoder::<ClientMessage>::new(DEFAULT_MAX_HANDSHAKE_FRAME);
    let hello = ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: user("alice"),
    };
    dec.feed(&hello.to_frame());
    assert_eq!(dec.next_message(), Ok(Some(hello)));
    dec.set_max_frame(DEFAULT_MAX_FRAME);
    assert_eq!(dec.max_frame(), DEFAULT_MAX_FRAME);
    dec.feed(&frame);
    assert_eq!(dec.next_message(), Ok(Some(chat)));
}

#[test]
fn the_limit_is_inclusive() {
    // A frame of exactly `max` bytes passes; one byte more is refused.
    let text_len = 1024 - 15;
    let at_limit = ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: "y".repeat(text_len),
    };
    let mut dec = Decoder::<ClientMessage>::new(1024);
    dec.feed(&at_limit.to_frame());
    assert_eq!(dec.next_message(), Ok(Some(at_limit)));

    let over = ClientMessage::Chat {
        client_id: 1,
        to: Recipient::Everyone,
        kind: ChatKind::Text,
        text: "y".repeat(text_len + 1),
    };
    dec.feed(&over.to_frame());
    assert_eq!(
        dec.next_message(),
        Err(DecodeError::FrameTooLarge {
            size: 1025,
            max: 1024
        })
    );
}

#[test]
fn consumed_bytes_are_compacted_away() {
    // Many small frames fed in big slices that end mid-frame: the decoder
    // must drop consumed bytes from time to time instead of growing forever,
    // and lose none of the bytes it keeps.
    const SLICE: usize = 7001;
    let msgs: Vec<ClientMessage> = (0..30_000u64).map(ClientMessage::Ping).collect();
    let mut stream = Vec::new();
    for m in &msgs {
        m.encode(&mut stream);
    }
    assert!(
        stream.len() > 3 * COMPACT_AT,
        "the test must cross the threshold"
    );

    let mut dec = Decoder::<ClientMessage>::new(DEFAULT_MAX_FRAME);
    let mut got = Vec::with_capacity(msgs.len());
    let mut largest_buf = 0;
    for piece in stream.chunks(SLICE) {
        dec.feed(piece);
        largest_buf = largest_buf.max(dec.buf.len());
        got.extend(drain(&mut dec).unwrap());
    }
    assert_eq!(got, msgs);
    assert_eq!(dec.buffered(), 0);
    assert!(
        largest_buf < COMPACT_AT + 2 * SLICE,
        "buffer grew to {largest_buf} bytes: consumed bytes were never dropped"
    );
}

#[test]
fn compaction_keeps_a_partial_frame_intact() {
    // Consume more than COMPACT_AT bytes, leave half a chunk frame buffered,
    // then feed the rest: the half frame must survive the compaction.
    let mut stream = Vec::new();
    let pings = COMPACT_AT / 13 + 10;
    for i in 0..pings as u64 {
        ServerMessage::Ping(i).encode(&mut stream);
    }
    let chunk = ServerMessage::Chunk(FileChunk::new(TransferId(5), 77, vec![0x5a; 3000]));
    let chunk_frame = chunk.to_frame();
    stream.extend_from_slice(&chunk_frame[..1500]);

    let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
    dec.feed(&stream);
    assert_eq!(drain(&mut dec).unwrap().len(), pings);
    assert_eq!(dec.buffered(), 1500);
    dec.feed(&chunk_frame[1500..]);
    assert_eq!(dec.pos, 0, "the feed compacted the consumed pings away");
    assert_eq!(dec.next_message(), Ok(Some(chunk)));
}

/// The hex blocks of docs/PROTOCOL.md, as bytes with the block's text.
fn protocol_md_examples(doc: &str) -> Vec<(Vec<u8>, &str)> {
    doc.split("```hex\n")
        .skip(1)
        .map(|rest| {
            let block = rest.split("```").next().unwrap_or_default();
            (hex(block), block.trim())
        })
        .collect()
}

/// Whether the document has a layout heading (`#### ...`) naming message
/// type `ty` (as `` `0x43` ``) and the variant `name`.
fn has_layout_heading(doc: &str, ty: u8, name: &str) -> bool {
    let tag = format!("`0x{ty:02x}`");
    doc.lines()
        .any(|l| l.starts_with("#### ") && l.contains(&tag) && l.contains(name))
}

#[test]
fn protocol_md_examples_are_golden_frames() {
    // docs/PROTOCOL.md and the codec cannot drift apart: every hex block in
    // the document is a golden frame, every golden frame (so every variant
    // of both directions, and every layout case the goldens pin down) is
    // shown in the document, under a layout heading with its type byte and
    // name, and the title names the version the code speaks.
    let doc = include_str!("../../../docs/PROTOCOL.md");
    let goldens: Vec<(&str, &str, Vec<u8>)> = client_goldens()
        .into_iter()
        .map(|(name, _, b)| ("client", name, b))
        .chain(
            server_goldens()
                .into_iter()
                .map(|(name, _, b)| ("server", name, b)),
        )
        .collect();
    let examples = protocol_md_examples(doc);
    let mut problems = Vec::new();

    let title = doc.lines().next().unwrap_or_default();
    if !title.ends_with(&format!("version {PROTOCOL_VERSION}")) {
        problems.push(format!(
            "the title does not name version {PROTOCOL_VERSION}: {title:?}"
        ));
    }
    for (bytes, block) in &examples {
        if !goldens.iter().any(|(_, _, g)| g == bytes) {
            problems.push(format!("example is not a golden frame: {block}"));
        }
    }
    for (dir, name, bytes) in &goldens {
        if !examples.iter().any(|(b, _)| b == bytes) {
            let shown: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            problems.push(format!(
                "no example of the {dir} {name} golden frame {shown}"
            ));
        }
        if !has_layout_heading(doc, bytes[HEADER_LEN], name) {
            problems.push(format!(
                "no layout heading for the {dir} {name} (type 0x{:02x})",
                bytes[HEADER_LEN]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/PROTOCOL.md is out of step with the codec:\n{}",
        problems.join("\n")
    );
}

#[test]
fn has_message_ready_says_whether_next_message_needs_more_bytes() {
    let mut d = Decoder::<ClientMessage>::new(1024);
    assert!(!d.has_message_ready());
    let frame = ClientMessage::Who.to_frame();
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    d.feed(&two[..3]);
    assert!(!d.has_message_ready(), "a partial header");
    d.feed(&two[3..frame.len() + 2]);
    assert!(
        d.has_message_ready(),
        "one whole frame and part of the next"
    );
    assert!(d.next_message().unwrap().is_some());
    assert!(!d.has_message_ready(), "only a partial frame is left");
    d.feed(&two[frame.len() + 2..]);
    assert!(d.has_message_ready());
    assert!(d.next_message().unwrap().is_some());
    // A header over the limit is an answer too (an error), without more bytes.
    d.feed(&[0xff, 0xff, 0xff, 0xff]);
    assert!(d.has_message_ready());
    assert!(d.next_message().is_err());
    assert!(d.has_message_ready());
}

/// A chunk large enough to be received straight into its own buffer,
/// then a small message.
fn big_chunk_stream() -> (Vec<ServerMessage>, Vec<u8>) {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let msgs = vec![
        ServerMessage::Chunk(FileChunk::new(TransferId(5), 1 << 33, data)),
        ServerMessage::Ping(42),
    ];
    let bytes = msgs.iter().flat_map(super::Encode::to_frame).collect();
    (msgs, bytes)
}

#[test]
fn a_large_chunk_decodes_the_same_in_any_split() {
    let (msgs, bytes) = big_chunk_stream();
    for step in [1, 7, 25, 26, 29, 4096, 65_536, bytes.len()] {
        let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        let mut direct = false;
        for piece in bytes.chunks(step) {
            dec.feed(piece);
            while let Some(m) = dec.next_message().unwrap() {
                got.push(m);
            }
            direct |= dec.body_buf().is_some();
        }
        assert_eq!(got, msgs, "fed {step} bytes at a time");
        assert_eq!(dec.buffered(), 0);
        // Only a chunk that arrives in pieces takes the direct path.
        assert_eq!(direct, step < bytes.len(), "fed {step} bytes at a time");
    }
}

#[test]
fn a_large_chunk_can_be_read_straight_into_its_buffer() {
    let (msgs, bytes) = big_chunk_stream();
    let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
    // The header and the first data bytes, as a first read would bring.
    dec.feed(&bytes[..100]);
    assert_eq!(dec.next_message(), Ok(None));
    assert!(!dec.has_message_ready());
    let mut at = 100;
    while let Some(buf) = dec.body_buf() {
        let n = buf.len().min(30_000);
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        dec.body_filled(n);
        at += n;
    }
    assert!(dec.has_message_ready());
    assert_eq!(dec.next_message(), Ok(Some(msgs[0].clone())));
    dec.feed(&bytes[at..]);
    assert_eq!(dec.next_message(), Ok(Some(msgs[1].clone())));
}

#[test]
fn a_large_chunk_with_a_wrong_data_length_is_still_refused() {
    // The frame says 100,021 bytes, the chunk says 50,000 bytes of data.
    let mut frame =
        ServerMessage::Chunk(FileChunk::new(TransferId(1), 0, vec![1; 100_000])).to_frame();
    frame[HEADER_LEN + 17..HEADER_LEN + 21].copy_from_slice(&50_000u32.to_be_bytes());
    let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
    let mut result = Ok(None);
    for piece in frame.chunks(1000) {
        dec.feed(piece);
        assert!(dec.body_buf().is_none());
        result = dec.next_message();
        if result != Ok(None) {
            break;
        }
    }
    assert!(result.is_err(), "{result:?}");
}

#[test]
fn a_recycled_buffer_receives_the_next_large_chunk() {
    let (msgs, bytes) = big_chunk_stream();
    let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
    let old = vec![0xee; 120_000];
    let ptr = old.as_ptr();
    dec.recycle(old);
    dec.recycle(vec![1; 10]); // too small to be kept
    let mut got = Vec::new();
    for piece in bytes.chunks(5000) {
        dec.feed(piece);
        while let Some(m) = dec.next_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, msgs, "old contents never show");
    let ServerMessage::Chunk(c) = &got[0] else {
        panic!("not a chunk")
    };
    assert_eq!(c.data.as_ptr(), ptr, "the recycled buffer was used");
}

#[test]
fn frame_len_reads_the_header_alone_and_refuses_what_the_decoder_refuses() {
    // Ping(7): length 9, type 0x83, u64 7.
    let ping = hex("00000009 83 0000000000000007");
    for cut in 0..HEADER_LEN {
        assert_eq!(frame_len(&ping[..cut], DEFAULT_MAX_FRAME), Ok(None));
    }
    for cut in HEADER_LEN..=ping.len() {
        assert_eq!(frame_len(&ping[..cut], DEFAULT_MAX_FRAME), Ok(Some(13)));
    }
    assert_eq!(frame_len(&ping, 9), Ok(Some(13)));
    for (bytes, max) in [(hex("00000000"), DEFAULT_MAX_FRAME), (ping.clone(), 8)] {
        let mut dec = Decoder::<ServerMessage>::new(max);
        dec.feed(&bytes);
        assert_eq!(frame_len(&bytes, max), Err(dec.next_message().unwrap_err()));
    }
}

// ---------------------------------------------------------------------------
// The fuzz corpus is seeded from the golden frames.

fn corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Seed files for the golden frames: (target, file name, bytes).
fn golden_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |dir: &'static str, side: &str, goldens: Vec<(&str, Vec<u8>)>| {
        for (i, (name, bytes)) in goldens.into_iter().enumerate() {
            let file = format!("v{PROTOCOL_VERSION}_{side}_{i:02}_{}", name.to_lowercase());
            seeds.push((dir, file.clone(), bytes.clone()));
            seeds.push(("roundtrip", file, bytes));
        }
    };
    add(
        "decode_client",
        "client",
        client_goldens()
            .into_iter()
            .map(|(n, _, b)| (n, b))
            .collect(),
    );
    add(
        "decode_server",
        "server",
        server_goldens()
            .into_iter()
            .map(|(n, _, b)| (n, b))
            .collect(),
    );
    seeds
}

#[test]
fn the_fuzz_corpus_holds_every_golden_frame() {
    let mut missing = Vec::new();
    for (target, file, bytes) in golden_seeds() {
        if std::fs::read(corpus_dir(target).join(&file)).ok() != Some(bytes) {
            missing.push(format!("{target}/{file}"));
        }
    }
    assert!(
        missing.is_empty(),
        "fuzz seeds missing or stale (write them with `cargo test -p imchat-core --lib \
         write_fuzz_seeds -- --ignored`): {missing:?}"
    );
}

/// Writes the golden frames into the fuzz corpus (run by hand after a
/// golden frame changes).
#[test]
#[ignore = "writes files: run by hand to refresh the fuzz seeds"]
fn write_fuzz_seeds() {
    for (target, file, bytes) in golden_seeds() {
        std::fs::write(corpus_dir(target).join(file), bytes).unwrap();
    }
}

fn presence_join(id: u64, time: u64, name: &str) -> PresenceEvent {
    PresenceEvent::Joined {
        id: MessageId(id),
        time: Timestamp(time),
        user: user(name),
    }
}

#[test]
fn presence_round_trips_backward_times_and_extreme_values() {
    // A wall clock stepped back gives a negative difference; the extremes
    // of both fields wrap to one form.
    let msg = ServerMessage::Presence(vec![
        presence_join(10, 5_000, "a"),
        presence_join(11, 4_997, "b"),
        presence_join(u64::MAX, u64::MAX, "c"),
        presence_join(0, 0, "d"),
        PresenceEvent::Left(crate::Departure {
            id: MessageId(3),
            time: Timestamp(1),
            user: user("e"),
            reason: LeaveReason(200),
            text: "x\u{0}y".into(),
        }),
    ]);
    let frame = msg.to_frame();
    assert_eq!(ServerMessage::decode_frame(&frame[HEADER_LEN..]), Ok(msg));
    // The second event's time is 3 ms back: zigzag 5, one byte.
    let second = hex("00 01 05 01 62");
    assert!(frame.windows(second.len()).any(|w| w == second.as_slice()));
}

#[test]
fn presence_numbers_must_be_in_their_shortest_form() {
    let frame = |id_bytes: &str| hex(&format!("4f 00000001 00 {id_bytes} 00 01 61"));
    assert!(ServerMessage::decode_frame(&frame("05")).is_ok());
    // 5 written in two bytes.
    assert_eq!(
        ServerMessage::decode_frame(&frame("85 00")),
        Err(DecodeError::BadVarint {
            ty: types::PRESENCE
        })
    );
    // 2^64 - 1 takes ten bytes, the last holding one bit; more does not fit.
    assert!(ServerMessage::decode_frame(&frame("ffffffffffffffffff 01")).is_ok());
    assert_eq!(
        ServerMessage::decode_frame(&frame("ffffffffffffffffff 02")),
        Err(DecodeError::BadVarint {
            ty: types::PRESENCE
        })
    );
    assert_eq!(
        ServerMessage::decode_frame(&frame("ffffffffffffffffffff 01")),
        Err(DecodeError::BadVarint {
            ty: types::PRESENCE
        })
    );
    // Ends inside a number.
    assert_eq!(
        ServerMessage::decode_frame(&hex("4f 00000001 00 85")),
        Err(DecodeError::Truncated {
            ty: types::PRESENCE
        })
    );
}

#[test]
fn presence_away_and_back_have_the_layout_of_a_join() {
    // An away or back ends with its name: a leave's reason and text after
    // it are bytes too many.
    for kind in ["02", "03"] {
        assert_eq!(
            ServerMessage::decode_frame(&hex(&format!("4f 00000001 {kind} 01 00 01 61 00"))),
            Err(DecodeError::TrailingBytes {
                ty: types::PRESENCE,
                extra: 1
            })
        );
        // Cut short inside the name.
        assert_eq!(
            ServerMessage::decode_frame(&hex(&format!("4f 00000001 {kind} 01 00 02 61"))),
            Err(DecodeError::Truncated {
                ty: types::PRESENCE
            })
        );
    }
}

#[test]
fn presence_refuses_an_unknown_kind_and_an_impossible_count() {
    assert_eq!(
        ServerMessage::decode_frame(&hex("4f 00000001 04 01 00 01 61")),
        Err(DecodeError::InvalidTag {
            field: "presence",
            value: 4
        })
    );
    assert_eq!(
        DecodeError::InvalidTag {
            field: "to",
            value: 128
        }
        .to_string(),
        "field 'to' has invalid value 128",
        "the field's name stands out of the sentence"
    );
    // Two events announced, room for one.
    assert_eq!(
        ServerMessage::decode_frame(&hex("4f 00000002 00 01 00 01 61")),
        Err(DecodeError::Truncated {
            ty: types::PRESENCE
        })
    );
}
