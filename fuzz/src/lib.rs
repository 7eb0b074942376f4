// The checks the fuzz targets run. `imchat-core/tests/fuzz_corpus.rs`
// includes this very file with `#[path]`, so plain `cargo test` replays the
// committed corpus through exactly the code the fuzzer runs (the test cannot
// depend on this crate, which is outside the workspace). Keep it free of
// inner attributes and of dependencies other than `imchat_core` and `std`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use imchat_core::{
    AccountCheck, CancelCode, ChatKind, ClientId, ClientMessage, Decode, DecodeError, Decoder,
    Encode, FileCancel, FileChunk, FileEntry, FileName, FileStart, Hub, HubEvent, LeaveReason,
    Limits, MessageId, NoticeCode, OpAction, Origin, Outgoing, Recipient, ResumeRequest,
    ResumeToken, Secret, ServerMessage, TransferId, Username, DEFAULT_MAX_FRAME, HEADER_LEN,
    PROTOCOL_VERSION,
};

/// What a decoder yields for a stream: its messages, then at most one error.
pub type Outcome<M> = Vec<Result<M, DecodeError>>;

/// The smallest frame: a length header and a type byte.
const MIN_FRAME: usize = HEADER_LEN + 1;

/// Takes messages until the decoder needs more bytes or fails, appending them
/// to `out`. Returns true when it failed. Panics if the decoder breaks its
/// contract: more messages than the buffered bytes can hold, bytes consumed
/// by "need more", or an error that does not stick.
pub fn drain<M: Decode + PartialEq + Debug>(dec: &mut Decoder<M>, out: &mut Outcome<M>) -> bool {
    // Every message consumes at least MIN_FRAME bytes, so this many calls
    // must end in `Ok(None)` or an error.
    let max_steps = dec.buffered() / MIN_FRAME + 1;
    for _ in 0..max_steps {
        let before = dec.buffered();
        match dec.next_message() {
            Ok(Some(m)) => {
                assert!(
                    before - dec.buffered() >= MIN_FRAME,
                    "a message from too few bytes"
                );
                out.push(Ok(m));
            }
            Ok(None) => {
                assert_eq!(dec.buffered(), before, "\"need more\" consumed bytes");
                return false;
            }
            Err(e) => {
                assert!(dec.is_failed());
                assert_eq!(
                    dec.next_message(),
                    Err(e.clone()),
                    "the error did not stick"
                );
                out.push(Err(e));
                return true;
            }
        }
    }
    panic!("the decoder yielded more messages than {MIN_FRAME}-byte frames fit in its buffer");
}

/// Feeds `data` whole into a decoder with the default frame limit and drains it.
pub fn decode_all<M: Decode + PartialEq + Debug>(data: &[u8]) -> Outcome<M> {
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    dec.feed(data);
    let mut out = Vec::new();
    drain(&mut dec, &mut out);
    out
}

/// Target `decode_client`: arbitrary bytes into the server's decoder.
pub fn decode_client(data: &[u8]) {
    decode_all::<ClientMessage>(data);
}

/// Target `decode_server`: arbitrary bytes into the client's decoder.
pub fn decode_server(data: &[u8]) {
    decode_all::<ServerMessage>(data);
}

/// Every frame of `data` that decodes re-encodes to exactly its own bytes
/// (the encoding is canonical), and the re-encoded frame decodes to the same
/// message.
pub fn check_canonical<M: Decode + Encode + PartialEq + Debug>(data: &[u8]) {
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    dec.feed(data);
    let mut pos = 0;
    for _ in 0..data.len() / MIN_FRAME + 1 {
        let before = dec.buffered();
        let Ok(Some(m)) = dec.next_message() else {
            return;
        };
        let used = before - dec.buffered();
        let frame = &data[pos..pos + used];
        let again = m.to_frame();
        assert_eq!(again, frame, "re-encoding {m:?} changed its bytes");
        assert_eq!(M::decode_frame(&again[HEADER_LEN..]).as_ref(), Ok(&m));
        pos += used;
    }
    panic!("the decoder yielded more messages than the input can hold");
}

/// Target `roundtrip`: canonical re-encoding, both directions.
pub fn roundtrip(data: &[u8]) {
    check_canonical::<ClientMessage>(data);
    check_canonical::<ServerMessage>(data);
}

/// Splits a `split` input into piece sizes and the stream. Layout: one byte
/// `k` (taken modulo 16), then `k` bytes each giving the size of a piece
/// (used in turn, cyclically; 0 feeds an empty slice), then the stream. With
/// no non-zero size the stream is fed whole.
pub fn split_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(k % 16).min(rest.len()))
}

/// Feeding `stream` in pieces of the given sizes yields the same messages and
/// error as feeding it whole.
pub fn check_split<M: Decode + PartialEq + Debug>(sizes: &[u8], stream: &[u8]) {
    let whole = decode_all::<M>(stream);
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    let mut pieces = Vec::new();
    let mut offset = 0;
    let mut turn = 0;
    let chunked = sizes.iter().any(|&s| s != 0);
    while offset < stream.len() {
        let size = if chunked {
            usize::from(sizes[turn % sizes.len()])
        } else {
            stream.len()
        };
        turn += 1;
        let end = (offset + size).min(stream.len());
        dec.feed(&stream[offset..end]);
        offset = end;
        if drain(&mut dec, &mut pieces) {
            break;
        }
    }
    assert_eq!(whole, pieces, "split at {sizes:?} decoded differently");
}

/// Target `split`: whole and split feeding agree, both directions.
pub fn split(data: &[u8]) {
    let (sizes, stream) = split_input(data);
    check_split::<ClientMessage>(sizes, stream);
    check_split::<ServerMessage>(sizes, stream);
}

/// Reads a `hub` input: each read past the end gives 0, so every input is valid.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// Names the `hub` driver joins with: some equal ignoring case.
const NAMES: [&str; 8] = ["alice", "Alice", "bob", "carol", "dave", "zoë", "山田", "e"];

/// Connections the `hub` driver opens at most.
const MAX_CONNECTS: usize = 64;

/// A hub under test with a virtual clock (a fixed `Instant` plus a
/// `Duration` that only grows), the connections it handed out, and what the
/// server around it would owe it (answers to requests, push senders).
struct HubDriver {
    hub: Hub,
    start: Instant,
    elapsed: Duration,
    clients: Vec<ClientId>,
    /// Requests awaiting the server's answer (`FilesRequested`, `DownloadRequested`).
    pending: VecDeque<HubEvent>,
    /// Relayed pushes seen in `FileStart`s: (receiver, relay id).
    relays: Vec<(ClientId, TransferId)>,
    /// Senders of pushes the driver offered, by (client, id).
    pushes: HashMap<(ClientId, u32), Outgoing>,
}

impl HubDriver {
    fn new(small: bool) -> Self {
        let mut limits = Limits::default();
        if small {
            // Small limits so that short inputs reach "full", "flooding",
            // "too long" and "too many transfers".
            limits.max_clients = 4;
            limits.max_text = 64;
            limits.rate_burst = 3;
            limits.rate_per_sec = 1;
            limits.max_transfers = 2;
            limits.max_push_size = 4096;
            limits.max_ghosts = 2;
            limits.log_entries = 8;
            limits.history_count = 3;
        }
        let mut hub = Hub::new(limits, "Welcome, {user}!");
        if small {
            // Accounts (answered by the driver) and an operator, so that
            // short inputs reach protected names, kicks and bans.
            hub.set_accounts(true);
            hub.set_operators(&[Self::name(0)]);
        }
        // Guessable tokens on purpose: a fuzzer that can guess them
        // explores resumes that succeed as well as those that fail.
        let mut n = 0u8;
        hub.set_token_source(Box::new(move || {
            n = n.wrapping_add(1);
            [n; 16]
        }));
        HubDriver {
            hub,
            start: Instant::now(),
            elapsed: Duration::ZERO,
            clients: Vec::new(),
            pending: VecDeque::new(),
            relays: Vec::new(),
            pushes: HashMap::new(),
        }
    }

    fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    /// A connection the hub handed out, or (for 0xff, or before any) one it never did.
    fn client(&self, b: u8) -> ClientId {
        if b == 0xff || self.clients.is_empty() {
            ClientId(u64::MAX - u64::from(b))
        } else {
            self.clients[usize::from(b) % self.clients.len()]
        }
    }

    fn name(b: u8) -> Username {
        Username::new(NAMES[usize::from(b) % NAMES.len()]).expect("a valid name")
    }

    fn recipient(b: u8) -> Recipient {
        if b & 1 == 0 {
            Recipient::Everyone
        } else {
            Recipient::User(Self::name(b >> 1))
        }
    }

    fn send(&mut self, client: ClientId, msg: ClientMessage) {
        let now = self.now();
        self.hub.handle_message(client, msg, now);
    }

    /// Runs one operation read from `input`.
    fn step(&mut self, input: &mut Input<'_>) {
        let now = self.now();
        match input.u8() % 16 {
            0 => {
                // A cap keeps long inputs from spending their time on
                // thousands of idle connections; "full" is reached with the
                // small limits.
                if self.clients.len() < MAX_CONNECTS {
                    let id = self.hub.handle_connect(now);
                    self.clients.push(id);
                }
            }
            1 => {
                let c = self.client(input.u8());
                self.hub.handle_disconnect(c, LeaveReason(input.u8() % 6));
            }
            2 => {
                // Any frame body at all, as the server's decoder would hand it over.
                let c = self.client(input.u8());
                let len = usize::from(input.u16() % 1024);
                match ClientMessage::decode_frame(input.bytes(len)) {
                    Ok(msg) => self.send(c, msg),
                    Err(e) => self.hub.handle_decode_error(c, &e),
                }
            }
            3 => {
                let c = self.client(input.u8());
                let b = input.u8();
                let version = if b & 0x80 == 0 {
                    PROTOCOL_VERSION
                } else {
                    u16::from(b)
                };
                let username = Self::name(b);
                let guess = input.u8();
                let resume = (guess & 0x80 != 0).then(|| ResumeRequest {
                    token: ResumeToken([guess & 0x7f; 16]),
                    last_seen: MessageId(u64::from(input.u8())),
                    epoch: self.hub.epoch(),
                });
                self.send(
                    c,
                    ClientMessage::Hello {
                        version,
                        username,
                        resume,
                    },
                );
            }
            4 => {
                let c = self.client(input.u8());
                let to = Self::recipient(input.u8());
                let len = usize::from(input.u8()) * 3;
                let text = "é\u{202e}\u{1b}x".chars().cycle().take(len).collect();
                let kind = if len % 2 == 0 {
                    ChatKind::Text
                } else {
                    ChatKind::Action
                };
                let client_id = u64::from(input.u8() % 8);
                self.send(
                    c,
                    ClientMessage::Chat {
                        client_id,
                        to,
                        kind,
                        text,
                    },
                );
            }
            5 => {
                let c = self.client(input.u8());
                let pick = input.u8();
                if pick % 8 == 7 {
                    // A receiver accepts a push offered to it (or one that was not).
                    let b = input.u8();
                    let (c, id) = match self.relays.get(usize::from(b)) {
                        Some(&(receiver, relay)) if b & 0x80 == 0 => (receiver, relay),
                        _ => (c, TransferId(TransferId::SERVER_BIT | u32::from(b % 4))),
                    };
                    self.send(c, ClientMessage::Accept { id });
                    return;
                }
                if pick % 16 >= 12 {
                    let b = input.u8();
                    let msg = match pick % 16 {
                        12 => ClientMessage::Auth {
                            server: (b & 1 != 0).then(|| Secret::new("pw")).flatten(),
                            account: (b & 2 != 0).then(|| Secret::new("s3cret")).flatten(),
                        },
                        13 => ClientMessage::Register {
                            password: Secret::new("s3cret").expect("a valid secret"),
                        },
                        14 => ClientMessage::Unregister,
                        _ => ClientMessage::Operate {
                            action: OpAction::from_byte(b % 5).unwrap_or(OpAction::Bans),
                            target: if b & 0x80 == 0 {
                                Self::name(b >> 3).as_str().to_string()
                            } else {
                                "not a name!".into()
                            },
                            reason: "spam\u{202e}".into(),
                        },
                    };
                    self.send(c, msg);
                    return;
                }
                let msg = match pick % 8 {
                    0 => ClientMessage::Who,
                    1 => ClientMessage::FilesAccess,
                    2 => ClientMessage::ListFiles,
                    3 => ClientMessage::Ping(u64::from(input.u16())),
                    4 => ClientMessage::Pong(u64::from(input.u16())),
                    5 => ClientMessage::Ack {
                        id: TransferId(u32::from(input.u8() % 4)),
                        offset: u64::from(input.u16()),
                    },
                    _ => ClientMessage::Quit {
                        reason: "bye\u{2028}".into(),
                    },
                };
                self.send(c, msg);
            }
            6 => {
                let c = self.client(input.u8());
                let id = u32::from(input.u8() % 4);
                let size = u64::from(input.u16() % 8192);
                let to = Self::recipient(input.u8());
                self.pushes
                    .insert((c, id), Outgoing::new(TransferId(id), size));
                let name = FileName::new("meeting notes.txt").expect("a valid name");
                self.send(
                    c,
                    ClientMessage::Offer {
                        id: TransferId(id),
                        name,
                        size,
                        to,
                    },
                );
            }
            7 => {
                // The next chunk of a push: right unless the fuzzer says otherwise.
                let c = self.client(input.u8());
                let id = u32::from(input.u8() % 4);
                let b = input.u8();
                let data = input.bytes(usize::from(b & 0x7f) * 8).to_vec();
                let chunk = match self.pushes.get_mut(&(c, id)) {
                    // A right chunk has bytes: with none, the bad path.
                    Some(out) if b & 0x80 == 0 && data.len().min(out.remaining() as usize) > 0 => {
                        let n = data.len().min(out.remaining() as usize);
                        out.next_chunk(data[..n].to_vec()).expect("within the size")
                    }
                    _ => FileChunk::new(TransferId(id), u64::from(b), data),
                };
                self.send(c, ClientMessage::Chunk(chunk));
            }
            8 => {
                let c = self.client(input.u8());
                let id = u32::from(input.u8() % 4);
                let end = self.pushes.remove(&(c, id)).and_then(|out| out.finish());
                let end = end.unwrap_or(imchat_core::FileEnd {
                    id: TransferId(id),
                    crc: u32::from(input.u16()),
                });
                self.send(c, ClientMessage::End(end));
            }
            9 => {
                // Cancel a push or download of the client's own, or decline a relayed push.
                let c = self.client(input.u8());
                let b = input.u8();
                let id = match self.relays.get(usize::from(b)) {
                    Some((_, relay)) if b & 0x80 == 0 => *relay,
                    _ => TransferId(u32::from(b % 4)),
                };
                let cancel = FileCancel {
                    id,
                    code: CancelCode::CANCELLED,
                    reason: "stop".into(),
                };
                self.send(c, ClientMessage::Cancel(cancel));
            }
            10 => {
                let c = self.client(input.u8());
                let id = TransferId(u32::from(input.u8()) | (u32::from(input.u8() & 0x80) << 24));
                let name = FileName::new(["welcome.txt", "clip.mp4"][usize::from(input.u8() & 1)])
                    .expect("a valid name");
                let offset = u64::from(input.u16());
                self.send(c, ClientMessage::Download { id, name, offset });
            }
            11 => self.answer(input),
            12 => {
                self.elapsed += Duration::from_millis(u64::from(input.u16()) * 10);
                self.timeout();
            }
            13 => {
                if let Some(at) = self.hub.poll_timeout() {
                    if at > now {
                        self.elapsed = at - self.start;
                    }
                }
                self.timeout();
            }
            14 => {
                let c = self.client(input.u8());
                let b = input.u8();
                match self.relays.get(usize::from(b)) {
                    Some(&(receiver, relay)) if b & 0x80 == 0 => {
                        self.hub
                            .cancel_delivery(receiver, relay, CancelCode::TOO_SLOW, "too slow");
                    }
                    _ => self.hub.evict(c),
                }
            }
            _ => {
                let b = input.u8();
                if b == 0xff {
                    self.hub.shutdown("fuzzing done");
                } else if b >= 0xf8 {
                    // An operator line on the server's console.
                    let line = [
                        "kick bob why",
                        "ban Alice",
                        "unban alice",
                        "bans",
                        "ban ::1",
                        "bogus",
                    ][usize::from(b - 0xf8) % 6];
                    let _ = self.hub.console(line, now);
                } else {
                    let c = self.client(input.u8());
                    self.hub.handle_decode_error(c, &DecodeError::EmptyFrame);
                }
            }
        }
    }

    fn timeout(&mut self) {
        let now = self.now();
        self.hub.handle_timeout(now);
        // Otherwise a server loop waiting for poll_timeout would spin.
        if let Some(at) = self.hub.poll_timeout() {
            assert!(
                at > now,
                "poll_timeout is not in the future after handle_timeout"
            );
        }
    }

    /// Answers the oldest request, as the server would after looking at its folder.
    fn answer(&mut self, input: &mut Input<'_>) {
        let b = input.u8();
        match self.pending.pop_front() {
            Some(HubEvent::FilesRequested { client, request }) => {
                // Usually a few files; now and then more than one frame holds.
                let count = if b >= 0xf0 {
                    4000 + usize::from(b)
                } else {
                    usize::from(b % 16)
                };
                let files = (0..count)
                    .map(|i| FileEntry {
                        name: FileName::new(format!("file {i:05}.bin")).expect("a valid name"),
                        size: i as u64,
                    })
                    .collect();
                self.hub.answer_files(client, request, files);
            }
            Some(HubEvent::DownloadRequested {
                client,
                id,
                name,
                offset,
            }) => match b % 3 {
                0 => {
                    let size = u64::from(input.u16());
                    self.hub.accept_download(client, id, name, size, offset);
                }
                1 => {
                    let size = u64::from(input.u16());
                    self.hub.accept_download(client, id, name, size, offset);
                    self.hub.download_finished(client, id);
                }
                _ => self
                    .hub
                    .refuse_download(client, id, CancelCode::NO_SUCH_FILE, "no such file"),
            },
            Some(HubEvent::CheckAccount { client, .. }) => {
                let check = match b % 5 {
                    0 => AccountCheck::Open,
                    1 => AccountCheck::Verified,
                    2 => AccountCheck::Missing,
                    3 => AccountCheck::Wrong,
                    _ => AccountCheck::Unavailable("disk gone".into()),
                };
                let now = self.now();
                self.hub.account_checked(client, check, now);
            }
            Some(HubEvent::Register { client, .. } | HubEvent::Unregister { client, .. }) => {
                let code = NoticeCode(u16::from(b % 9));
                self.hub.account_changed(client, code, "done");
            }
            _ => {}
        }
    }

    /// Drains both output queues in a bounded number of steps and checks
    /// what comes out.
    fn drain(&mut self, connections_before: usize) {
        let max_frame = self.hub.limits().max_frame as usize;
        // An input touches at most every connection a few times, plus the
        // frames of one (possibly long) file list.
        let bound = 4096 + 16 * (connections_before + 1);
        for step in 0.. {
            assert!(
                step <= bound,
                "poll_transmit did not run dry in {bound} steps"
            );
            let Some(t) = self.hub.poll_transmit() else {
                break;
            };
            let frame = t.message.to_frame();
            assert!(
                frame.len() - HEADER_LEN <= max_frame,
                "the hub sent a {}-byte frame, above the limit",
                frame.len()
            );
            let back = ServerMessage::decode_frame(&frame[HEADER_LEN..]);
            assert_eq!(
                back.as_ref(),
                Ok(&t.message),
                "the hub sent a message that does not round-trip"
            );
            if let ServerMessage::FileStart(FileStart {
                id,
                origin: Origin::Push { .. },
                ..
            }) = t.message
            {
                for receiver in t.to.iter() {
                    if self.relays.len() < 128 {
                        self.relays.push((receiver, id));
                    }
                }
            }
        }
        for step in 0.. {
            assert!(step <= bound, "poll_event did not run dry in {bound} steps");
            let Some(e) = self.hub.poll_event() else {
                break;
            };
            if matches!(
                e,
                HubEvent::FilesRequested { .. }
                    | HubEvent::DownloadRequested { .. }
                    | HubEvent::CheckAccount { .. }
                    | HubEvent::Register { .. }
                    | HubEvent::Unregister { .. }
            ) && self.pending.len() < 64
            {
                self.pending.push_back(e);
            }
        }
        if let Err(e) = self.hub.check_invariants() {
            panic!("hub invariant broken: {e}");
        }
    }
}

/// Target `hub`: the [`Hub`] driven by a list of operations read from the
/// input (connect, disconnect, any frame from any connection, structured
/// messages, answers to its requests, timeouts on a virtual clock, eviction,
/// shutdown). After each: no panic, both queues drain in bounded steps,
/// every message it sends fits a frame and round-trips, its invariants hold.
pub fn hub(data: &[u8]) {
    let mut input = Input(data);
    let mut driver = HubDriver::new(input.u8() & 1 == 1);
    while !input.is_empty() {
        let before = driver.hub.connections();
        driver.step(&mut input);
        driver.drain(before);
    }
}
