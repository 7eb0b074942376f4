//! Property tests of the codec, for every message of both directions:
//! round trips, arbitrary splits, arbitrary bytes, prefixes, oversize
//! headers and chunk checksums.

use std::fmt::Debug;

use imchat_core::{
    CancelCode, ChatKind, ClientMessage, Decode, DecodeError, Decoder, Departure, Encode,
    ErrorCode, FileCancel, FileChunk, FileEnd, FileEntry, FileListPart, FileName, FileStart,
    LeaveReason, MessageId, NoticeCode, OnlineUser, OpAction, Origin, PresenceEvent, Recipient,
    RefuseCode, ResumeRequest, ResumeToken, Resumed, RoutedChat, Secret, ServerLimits,
    ServerMessage, Timestamp, TransferId, Username, DEFAULT_MAX_FRAME, DEFAULT_MAX_HANDSHAKE_FRAME,
    HEADER_LEN,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

// ---------------------------------------------------------------------------
// Strategies.

/// Characters a username may hold, from several scripts, plus a few it may
/// hold only after the first position (`.`); `Username::new` has the last word.
fn username_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => prop::char::range('A', 'Z'),
        2 => prop::char::range('0', '9'),
        2 => prop::sample::select(vec!['_', '-', '.']),
        1 => prop::char::range('À', 'ÿ'),
        1 => prop::char::range('α', 'ω'),
        1 => prop::char::range('а', 'я'),
        1 => prop::char::range('一', '鿿'),
        1 => prop::char::range('٠', '٩'),
    ]
}

fn username() -> impl Strategy<Value = Username> {
    vec(username_char(), 1..=32).prop_filter_map("breaks the username rules", |cs| {
        Username::new(cs.into_iter().collect::<String>()).ok()
    })
}

fn file_name() -> impl Strategy<Value = FileName> {
    prop_oneof![
        4 => "[a-zA-Z0-9 _.()-]{1,40}",
        // Any printable text, every script.
        4 => "\\PC{1,30}",
        // Names near the 255-byte limit.
        1 => "[a-z0-9]{250,255}",
        1 => "é{120,127}",
    ]
    .prop_filter_map("breaks the file-name rules", |s| FileName::new(s).ok())
}

/// Arbitrary text: any `char`s, control and bidi characters included.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(any::<char>(), 0..40).prop_map(String::from_iter),
        1 => vec(any::<char>(), 0..600).prop_map(String::from_iter),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..64),
        1 => vec(any::<u8>(), 0..4096),
    ]
}

fn transfer_id() -> impl Strategy<Value = TransferId> {
    any::<u32>().prop_map(TransferId)
}

fn recipient() -> impl Strategy<Value = Recipient> {
    prop_oneof![
        Just(Recipient::Everyone),
        username().prop_map(Recipient::User),
    ]
}

fn origin() -> impl Strategy<Value = Origin> {
    prop_oneof![
        Just(Origin::Download),
        username().prop_map(|from| Origin::Push { from }),
    ]
}

/// A chunk with a matching CRC, or (as a peer may send) any CRC at all: the
/// codec carries it unchanged either way.
fn chunk() -> impl Strategy<Value = FileChunk> {
    (
        transfer_id(),
        any::<u64>(),
        data(),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(id, offset, data, crc)| {
            let mut c = FileChunk::new(id, offset, data);
            if let Some(crc) = crc {
                c.crc = crc;
            }
            c
        })
}

fn end() -> impl Strategy<Value = FileEnd> {
    (transfer_id(), any::<u32>()).prop_map(|(id, crc)| FileEnd { id, crc })
}

fn cancel() -> impl Strategy<Value = FileCancel> {
    (transfer_id(), any::<u16>(), text()).prop_map(|(id, code, reason)| FileCancel {
        id,
        code: CancelCode(code),
        reason,
    })
}

fn kind() -> impl Strategy<Value = ChatKind> {
    prop_oneof![Just(ChatKind::Text), Just(ChatKind::Action)]
}

fn server_limits() -> impl Strategy<Value = ServerLimits> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()),
    )
        .prop_map(|((a, b, c, d), (e, f, g, h))| ServerLimits {
            max_frame: a,
            max_text: b,
            rate_burst: c,
            rate_per_sec: d,
            rate_burst_bytes: e,
            rate_bytes_per_sec: f,
            max_transfers: g,
            max_push_size: h,
        })
}

fn resume_request() -> impl Strategy<Value = ResumeRequest> {
    (any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(|(token, last_seen, epoch)| {
        ResumeRequest {
            token: ResumeToken(token),
            last_seen: MessageId(last_seen),
            epoch,
        }
    })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (any::<u16>(), username(), option::of(resume_request())).prop_map(
            |(version, username, resume)| ClientMessage::Hello {
                version,
                username,
                resume
            }
        ),
        (any::<u64>(), recipient(), kind(), text()).prop_map(|(client_id, to, kind, text)| {
            ClientMessage::Chat {
                client_id,
                to,
                kind,
                text,
            }
        }),
        Just(ClientMessage::Who),
        Just(ClientMessage::FilesAccess),
        Just(ClientMessage::ListFiles),
        (transfer_id(), file_name(), any::<u64>())
            .prop_map(|(id, name, offset)| ClientMessage::Download { id, name, offset }),
        (transfer_id(), file_name(), any::<u64>(), recipient())
            .prop_map(|(id, name, size, to)| ClientMessage::Offer { id, name, size, to }),
        (transfer_id(), any::<u64>()).prop_map(|(id, offset)| ClientMessage::Ack { id, offset }),
        transfer_id().prop_map(|id| ClientMessage::Accept { id }),
        chunk().prop_map(ClientMessage::Chunk),
        end().prop_map(ClientMessage::End),
        cancel().prop_map(ClientMessage::Cancel),
        any::<u64>().prop_map(ClientMessage::Ping),
        any::<u64>().prop_map(ClientMessage::Pong),
        text().prop_map(|reason| ClientMessage::Quit { reason }),
        (option::of(secret()), option::of(secret()))
            .prop_map(|(server, account)| ClientMessage::Auth { server, account }),
        secret().prop_map(|password| ClientMessage::Register { password }),
        Just(ClientMessage::Unregister),
        (1u8..=4, "[a-zA-Z0-9.:_-]{0,40}", text()).prop_map(|(action, target, reason)| {
            ClientMessage::Operate {
                action: OpAction::from_byte(action).expect("1 to 4 are actions"),
                target,
                reason,
            }
        }),
    ]
}

/// A password: 1 to 255 bytes of any UTF-8.
fn secret() -> impl Strategy<Value = Secret> {
    "\\PC{1,60}".prop_filter_map("1 to 255 bytes", Secret::new)
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (
            (any::<u16>(), username(), text(), server_limits()),
            (
                any::<[u8; 16]>(),
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                option::of(any::<u64>())
            )
        )
            .prop_map(
                |(
                    (version, username, text, limits),
                    (token, epoch, grace_secs, last_id, dropped),
                )| ServerMessage::Welcome {
                    version,
                    username,
                    text,
                    limits,
                    token: ResumeToken(token),
                    epoch,
                    grace_secs,
                    last_id: MessageId(last_id),
                    resumed: dropped.map(|dropped| Resumed { dropped }),
                }
            ),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(client_id, id, time)| {
            ServerMessage::Ack {
                client_id,
                id: MessageId(id),
                time: Timestamp(time),
            }
        }),
        (any::<u16>(), text(), any::<u16>()).prop_map(|(code, reason, version)| {
            ServerMessage::Refused {
                code: RefuseCode(code),
                reason,
                version,
            }
        }),
        (
            any::<u64>(),
            any::<u64>(),
            username(),
            any::<bool>(),
            kind(),
            text(),
            any::<bool>()
        )
            .prop_map(|(id, time, from, private, kind, text, history)| {
                ServerMessage::Chat(RoutedChat {
                    id: MessageId(id),
                    time: Timestamp(time),
                    from,
                    private,
                    kind,
                    text,
                    history,
                })
            }),
        (any::<u64>(), any::<u64>(), username()).prop_map(|(id, time, user)| {
            ServerMessage::Joined {
                id: MessageId(id),
                time: Timestamp(time),
                user,
            }
        }),
        (any::<u64>(), any::<u64>(), username(), any::<u8>(), text()).prop_map(
            |(id, time, user, reason, text)| ServerMessage::Left(Departure {
                id: MessageId(id),
                time: Timestamp(time),
                user,
                reason: LeaveReason(reason),
                text,
            })
        ),
        vec(
            (
                0..4u8,
                any::<u64>(),
                any::<u64>(),
                username(),
                any::<u8>(),
                text()
            ),
            0..8
        )
        .prop_map(|events| ServerMessage::Presence(
            events
                .into_iter()
                .map(|(kind, id, time, user, reason, text)| {
                    let (id, time) = (MessageId(id), Timestamp(time));
                    match kind {
                        0 => PresenceEvent::Joined { id, time, user },
                        1 => PresenceEvent::Left(Departure {
                            id,
                            time,
                            user,
                            reason: LeaveReason(reason),
                            text,
                        }),
                        2 => PresenceEvent::Away { id, time, user },
                        _ => PresenceEvent::Back { id, time, user },
                    }
                })
                .collect()
        )),
        vec((username(), option::of(any::<u64>())), 0..20).prop_map(|users| ServerMessage::Who {
            users: users
                .into_iter()
                .map(|(name, away_secs)| OnlineUser { name, away_secs })
                .collect()
        }),
        any::<u64>().prop_map(|count| ServerMessage::FilesAccess { count }),
        (vec((file_name(), any::<u64>()), 0..12), any::<bool>()).prop_map(|(files, last)| {
            ServerMessage::FileList(FileListPart {
                files: files
                    .into_iter()
                    .map(|(name, size)| FileEntry { name, size })
                    .collect(),
                last,
            })
        }),
        (
            transfer_id(),
            file_name(),
            any::<u64>(),
            any::<u64>(),
            origin()
        )
            .prop_map(|(id, name, size, offset, origin)| ServerMessage::FileStart(
                FileStart {
                    id,
                    name,
                    size,
                    offset,
                    origin,
                }
            )),
        chunk().prop_map(ServerMessage::Chunk),
        end().prop_map(ServerMessage::End),
        cancel().prop_map(ServerMessage::Cancel),
        (transfer_id(), any::<u32>())
            .prop_map(|(id, receivers)| ServerMessage::PushDone { id, receivers }),
        (transfer_id(), any::<u32>())
            .prop_map(|(id, receivers)| ServerMessage::PushAccepted { id, receivers }),
        (transfer_id(), any::<u64>())
            .prop_map(|(id, offset)| ServerMessage::PushCredit { id, offset }),
        (any::<u16>(), any::<u64>(), text()).prop_map(|(code, client_id, text)| {
            ServerMessage::Error {
                code: ErrorCode(code),
                client_id,
                text,
            }
        }),
        any::<u64>().prop_map(ServerMessage::Ping),
        any::<u64>().prop_map(ServerMessage::Pong),
        text().prop_map(|reason| ServerMessage::Shutdown { reason }),
        (any::<u16>(), text()).prop_map(|(code, text)| ServerMessage::Notice {
            code: NoticeCode(code),
            text
        }),
    ]
}

/// Frame limits to decode under: tiny, the handshake limit, the default.
fn max_frame() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(16u32),
        Just(DEFAULT_MAX_HANDSHAKE_FRAME),
        Just(DEFAULT_MAX_FRAME),
    ]
}

// ---------------------------------------------------------------------------
// Checks shared by both directions.

/// `bytes` cut at the given points (sorted, duplicates allowed: empty pieces).
fn pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        out.push(&bytes[start..cut]);
        start = cut;
    }
    out.push(&bytes[start..]);
    out
}

fn round_trip<M>(m: &M) -> Result<(), TestCaseError>
where
    M: Encode + Decode + PartialEq + Debug,
{
    let frame = m.to_frame();
    let len = u32::from_be_bytes(frame[..HEADER_LEN].try_into().unwrap());
    prop_assert_eq!(len as usize, frame.len() - HEADER_LEN);
    let direct = M::decode_frame(&frame[HEADER_LEN..]);
    prop_assert_eq!(direct.as_ref(), Ok(m));
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    dec.feed(&frame);
    let got = dec.next_message();
    prop_assert_eq!(got.as_ref().map(Option::as_ref), Ok(Some(m)));
    prop_assert_eq!(dec.next_message().map(|o| o.is_none()), Ok(true));
    prop_assert_eq!(dec.buffered(), 0);
    Ok(())
}

fn stream_split<M>(msgs: &[M], cuts: &[Index]) -> Result<(), TestCaseError>
where
    M: Encode + Decode + PartialEq + Debug,
{
    let mut stream = Vec::new();
    for m in msgs {
        m.encode(&mut stream);
    }
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    let mut got = Vec::new();
    for piece in pieces(&stream, cuts) {
        dec.feed(piece);
        while let Some(m) = dec
            .next_message()
            .map_err(|e| TestCaseError::fail(e.to_string()))?
        {
            got.push(m);
        }
    }
    prop_assert_eq!(&got[..], msgs);
    prop_assert_eq!(dec.buffered(), 0);
    Ok(())
}

/// Feeds `bytes` in the given pieces. Never panics; every message decoded
/// re-encodes to exactly the bytes it came from (the encoding is canonical);
/// once an error is returned it is returned again, also after more input;
/// without an error every byte is either consumed or still buffered.
fn arbitrary_input<M>(bytes: &[u8], cuts: &[Index], max: u32) -> Result<(), TestCaseError>
where
    M: Encode + Decode + Debug,
{
    let mut dec = Decoder::<M>::new(max);
    let mut consumed = 0;
    let mut failed: Option<DecodeError> = None;
    for piece in pieces(bytes, cuts) {
        dec.feed(piece);
        if let Some(e) = &failed {
            prop_assert_eq!(dec.next_message().err(), Some(e.clone()));
            continue;
        }
        // Bounded: every message consumes at least 5 bytes.
        for _ in 0..=bytes.len() {
            match dec.next_message() {
                Ok(Some(m)) => {
                    let frame = m.to_frame();
                    prop_assert!(frame.len() - HEADER_LEN <= max as usize);
                    let end = consumed + frame.len();
                    prop_assert_eq!(bytes.get(consumed..end), Some(&frame[..]), "{:?}", m);
                    consumed = end;
                }
                Ok(None) => break,
                Err(e) => {
                    prop_assert!(dec.is_failed());
                    prop_assert_eq!(dec.next_message().err(), Some(e.clone()));
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    if let Some(e) = failed {
        prop_assert_eq!(dec.next_message().err(), Some(e));
        prop_assert_eq!(dec.buffered(), 0);
    } else {
        prop_assert_eq!(consumed + dec.buffered(), bytes.len());
    }
    Ok(())
}

/// Every strict prefix of the frame is "need more" with nothing consumed,
/// fed byte by byte into one decoder and (for sampled lengths, or all of
/// them for short frames) as one piece into a fresh decoder.
fn strict_prefixes<M>(m: &M, sample: &[Index]) -> Result<(), TestCaseError>
where
    M: Encode + Decode + PartialEq + Debug,
{
    let frame = m.to_frame();
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    for (i, b) in frame.iter().enumerate() {
        prop_assert_eq!(dec.next_message().map(|o| o.is_none()), Ok(true));
        prop_assert_eq!(dec.buffered(), i);
        dec.feed(std::slice::from_ref(b));
    }
    let got = dec.next_message();
    prop_assert_eq!(got.as_ref().map(Option::as_ref), Ok(Some(m)));

    let lens: Vec<usize> = if frame.len() <= 64 {
        (0..frame.len()).collect()
    } else {
        sample.iter().map(|i| i.index(frame.len())).collect()
    };
    for k in lens {
        let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
        dec.feed(&frame[..k]);
        prop_assert_eq!(
            dec.next_message().map(|o| o.is_none()),
            Ok(true),
            "prefix {}",
            k
        );
        prop_assert_eq!(dec.buffered(), k);
    }
    Ok(())
}

fn oversize_header<M: Decode + Debug>(max: u32, size: u32) -> Result<(), TestCaseError> {
    let header = size.to_be_bytes();
    let mut dec = Decoder::<M>::new(max);
    for b in &header[..HEADER_LEN - 1] {
        dec.feed(std::slice::from_ref(b));
        prop_assert_eq!(dec.next_message().map(|o| o.is_none()), Ok(true));
    }
    dec.feed(&header[HEADER_LEN - 1..]);
    let expected = DecodeError::FrameTooLarge { size, max };
    prop_assert_eq!(dec.next_message().err(), Some(expected.clone()));
    prop_assert_eq!(dec.buffered(), 0);
    dec.feed(&[0; 64]);
    prop_assert_eq!(dec.next_message().err(), Some(expected));
    Ok(())
}

// ---------------------------------------------------------------------------
// The properties.

/// Modest case counts keep the file at a few seconds in debug builds.
/// Failing seeds go to `imchat-core/proptest-regressions/` (cargo runs
/// tests from the package root), which is committed and replayed first.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/proptest_codec.txt",
        ))),
        ..ProptestConfig::with_cases(256)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_round_trip(m in client_message()) {
        round_trip(&m)?;
    }

    #[test]
    fn server_round_trip(m in server_message()) {
        round_trip(&m)?;
    }

    #[test]
    fn client_stream_splits_decode_the_same(
        msgs in vec(client_message(), 1..8),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        stream_split(&msgs, &cuts)?;
    }

    #[test]
    fn server_stream_splits_decode_the_same(
        msgs in vec(server_message(), 1..8),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        stream_split(&msgs, &cuts)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..512),
        cuts in vec(any::<Index>(), 0..8),
        max in max_frame(),
    ) {
        arbitrary_input::<ClientMessage>(&bytes, &cuts, max)?;
        arbitrary_input::<ServerMessage>(&bytes, &cuts, max)?;
    }

    /// Random bytes rarely get past the length header; a stream of valid
    /// frames with a few bytes changed reaches every field decoder.
    #[test]
    fn mutated_streams_never_panic(
        client in vec(client_message(), 1..5),
        server in vec(server_message(), 1..5),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
        cuts in vec(any::<Index>(), 0..8),
        max in max_frame(),
    ) {
        let mut bytes = Vec::new();
        for m in &client {
            m.encode(&mut bytes);
        }
        for m in &server {
            m.encode(&mut bytes);
        }
        for (at, value) in &edits {
            let at = at.index(bytes.len());
            bytes[at] = *value;
        }
        arbitrary_input::<ClientMessage>(&bytes, &cuts, max)?;
        arbitrary_input::<ServerMessage>(&bytes, &cuts, max)?;
    }

    #[test]
    fn client_strict_prefixes_need_more(
        m in client_message(),
        sample in vec(any::<Index>(), 8),
    ) {
        strict_prefixes(&m, &sample)?;
    }

    #[test]
    fn server_strict_prefixes_need_more(
        m in server_message(),
        sample in vec(any::<Index>(), 8),
    ) {
        strict_prefixes(&m, &sample)?;
    }

    #[test]
    fn oversize_header_is_refused_from_the_header_alone(
        (max, size) in prop_oneof![
            Just(DEFAULT_MAX_FRAME),
            Just(DEFAULT_MAX_HANDSHAKE_FRAME),
            1..=DEFAULT_MAX_FRAME,
        ]
        .prop_flat_map(|max| (Just(max), prop_oneof![
            Just(max + 1),
            Just(u32::MAX),
            (max + 1)..=u32::MAX,
        ])),
    ) {
        oversize_header::<ClientMessage>(max, size)?;
        oversize_header::<ServerMessage>(max, size)?;
    }

    #[test]
    fn header_within_the_limit_waits_for_the_body(
        (max, size) in (1..=DEFAULT_MAX_FRAME).prop_flat_map(|max| (Just(max), 1..=max)),
    ) {
        let mut dec = Decoder::<ClientMessage>::new(max);
        dec.feed(&size.to_be_bytes());
        prop_assert_eq!(dec.next_message(), Ok(None));
        prop_assert_eq!(dec.buffered(), HEADER_LEN);
    }

    /// CRC32 catches every single-bit error, in the data or in the CRC
    /// field itself. Decoding still succeeds: the CRC is checked by the
    /// receiver of the chunk, not by the codec.
    #[test]
    fn a_flipped_bit_fails_the_chunk_crc(
        id in transfer_id(),
        offset in any::<u64>(),
        data in vec(any::<u8>(), 1..4096),
        bit in any::<Index>(),
        server_side in any::<bool>(),
    ) {
        let sent = FileChunk::new(id, offset, data);
        prop_assert!(sent.verify());
        let mut frame = ClientMessage::Chunk(sent.clone()).to_frame();
        // Header, type, id, offset; then crc (4), length (4), data.
        let crc_at = HEADER_LEN + 1 + 4 + 8;
        let data_at = crc_at + 8;
        // Bits of the CRC field, then bits of the data.
        let bit = bit.index((4 + sent.data.len()) * 8);
        let byte = if bit < 32 { crc_at + bit / 8 } else { data_at + bit / 8 - 4 };
        frame[byte] ^= 1 << (bit % 8);

        let received = if server_side {
            let mut dec = Decoder::<ClientMessage>::new(DEFAULT_MAX_FRAME);
            dec.feed(&frame);
            match dec.next_message() {
                Ok(Some(ClientMessage::Chunk(c))) => c,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
        } else {
            let mut dec = Decoder::<ServerMessage>::new(DEFAULT_MAX_FRAME);
            dec.feed(&frame);
            match dec.next_message() {
                Ok(Some(ServerMessage::Chunk(c))) => c,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
        };
        prop_assert_eq!(received.id, sent.id);
        prop_assert_eq!(received.offset, sent.offset);
        prop_assert_eq!(received.data.len(), sent.data.len());
        prop_assert_ne!(&received, &sent);
        prop_assert!(!received.verify(), "bit {} flipped, CRC still matches", bit);
    }
}
