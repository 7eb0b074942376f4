//! A [`ClientSession`] fed what a hostile or broken server may send:
//! nothing it is told may make it panic.

use std::time::{Duration, Instant};

use imchat_core::*;

/// A session welcomed by a server that announced `limits`.
fn welcomed(limits: ServerLimits, now: Instant) -> ClientSession {
    let me = Username::new("me").unwrap();
    let mut s = ClientSession::new(me.clone(), Limits::default(), now);
    s.handle_message(
        ServerMessage::Welcome {
            version: 1,
            username: me,
            text: String::new(),
            limits,
            token: ResumeToken([7; 16]),
            epoch: 1,
            grace_secs: 60,
            last_id: MessageId(0),
            resumed: None,
        },
        now,
    );
    while s.poll_event().is_some() {}
    while s.poll_transmit().is_some() {}
    assert!(s.is_joined());
    s
}

/// A server's count of shared files is charged to the rate bucket (one
/// message per 100 files); a count no real folder holds leaves a debt no
/// clock pays off, and the time to wait for it must still be a time.
#[test]
fn a_files_count_past_any_folder_waits_without_overflow() {
    let now = Instant::now();
    let limits = ServerLimits {
        rate_burst: 10,
        rate_per_sec: 7,
        ..ServerLimits::default()
    };
    for count in [u64::MAX, u64::MAX / 2, 1 << 40] {
        let mut s = welcomed(limits, now);
        s.handle_message(ServerMessage::FilesAccess { count }, now);
        while s.poll_event().is_some() {}
        let at = s.next_send_at(now, 10).expect("a debt to wait out");
        assert!(at > now + Duration::from_secs(3600), "{count}: {at:?}");
        assert!(s.poll_timeout().is_some_and(|t| t >= now));
    }
}

// A sweep of made-up server messages, each kind with values at and near
// their edges, between the intents of a bot and the passing of time.

/// A small generator of the sweep's values, seeded per case.
struct R(u64);
impl R {
    fn n(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn b(&mut self, k: u64) -> u64 {
        self.n() % k
    }
    fn small(&mut self) -> u64 {
        match self.b(6) {
            0 => 0,
            1 => 1,
            2 => self.b(8),
            3 => self.b(70000),
            4 => u64::MAX - self.b(3),
            _ => self.n(),
        }
    }
    fn u32s(&mut self) -> u32 {
        match self.b(5) {
            0 => 0,
            1 => self.b(8) as u32,
            2 => u32::MAX,
            _ => self.n() as u32,
        }
    }
}
fn user(r: &mut R) -> Username {
    Username::new(["alice", "bob", "me", "carol"][r.b(4) as usize]).unwrap()
}
fn fname(r: &mut R) -> FileName {
    FileName::new(["a.txt", "b.bin", "c"][r.b(3) as usize]).unwrap()
}
fn tid(r: &mut R) -> TransferId {
    let base = r.b(6) as u32;
    if r.b(2) == 0 {
        TransferId(base)
    } else {
        TransferId(base | TransferId::SERVER_BIT)
    }
}
fn text(r: &mut R) -> String {
    ["", "hi", "x\u{7}y", "\u{202e}evil"][r.b(4) as usize].to_string()
}
fn limits(r: &mut R) -> ServerLimits {
    ServerLimits {
        max_frame: r.u32s(),
        max_text: r.u32s(),
        rate_burst: r.u32s(),
        rate_per_sec: r.u32s(),
        rate_burst_bytes: r.u32s(),
        rate_bytes_per_sec: r.u32s(),
        max_transfers: r.u32s(),
        max_push_size: r.small(),
    }
}
fn msg(r: &mut R, me: &Username) -> ServerMessage {
    match r.b(22) {
        0 => ServerMessage::Welcome {
            version: r.b(3) as u16,
            username: if r.b(3) == 0 { user(r) } else { me.clone() },
            text: text(r),
            limits: limits(r),
            token: ResumeToken([r.b(2) as u8; 16]),
            epoch: r.b(3),
            grace_secs: r.u32s(),
            last_id: MessageId(r.small()),
            resumed: if r.b(2) == 0 {
                None
            } else {
                Some(Resumed { dropped: r.small() })
            },
        },
        1 => ServerMessage::Ack {
            client_id: r.small(),
            id: MessageId(r.small()),
            time: Timestamp(r.small()),
        },
        2 => ServerMessage::Refused {
            code: RefuseCode(r.b(12) as u16),
            reason: text(r),
            version: r.b(3) as u16,
        },
        3 => ServerMessage::Chat(RoutedChat {
            id: MessageId(r.small()),
            time: Timestamp(r.small()),
            from: user(r),
            private: r.b(2) == 0,
            kind: ChatKind::Text,
            text: text(r),
            history: r.b(2) == 0,
        }),
        4 => ServerMessage::Joined {
            id: MessageId(r.small()),
            time: Timestamp(r.small()),
            user: user(r),
        },
        5 => ServerMessage::Left(Departure {
            id: MessageId(r.small()),
            time: Timestamp(r.small()),
            user: user(r),
            reason: LeaveReason(r.b(8) as u8),
            text: text(r),
        }),
        6 => ServerMessage::Who {
            users: (0..r.b(4))
                .map(|_| OnlineUser {
                    name: user(r),
                    away_secs: if r.b(2) == 0 { None } else { Some(r.small()) },
                })
                .collect(),
        },
        7 => ServerMessage::FilesAccess { count: r.small() },
        8 => ServerMessage::FileList(FileListPart {
            files: (0..r.b(4))
                .map(|_| FileEntry {
                    name: fname(r),
                    size: r.small(),
                })
                .collect(),
            last: r.b(2) == 0,
        }),
        9..=10 => ServerMessage::FileStart(FileStart {
            id: tid(r),
            name: fname(r),
            size: r.small(),
            offset: r.small(),
            origin: if r.b(2) == 0 {
                Origin::Download
            } else {
                Origin::Push { from: user(r) }
            },
        }),
        11..=13 => {
            let len = r.b(5) as usize * 7;
            let mut c = FileChunk::new(tid(r), r.small(), vec![r.n() as u8; len]);
            if r.b(4) == 0 {
                c.crc = r.n() as u32;
            }
            ServerMessage::Chunk(c)
        }
        14 => ServerMessage::End(FileEnd {
            id: tid(r),
            crc: if r.b(2) == 0 { 0 } else { r.n() as u32 },
        }),
        15 => ServerMessage::Cancel(FileCancel {
            id: tid(r),
            code: CancelCode(r.b(10) as u16),
            reason: text(r),
        }),
        16 => ServerMessage::PushDone {
            id: tid(r),
            receivers: r.u32s(),
        },
        17 => ServerMessage::PushAccepted {
            id: tid(r),
            receivers: r.u32s(),
        },
        18 => ServerMessage::PushCredit {
            id: tid(r),
            offset: r.small(),
        },
        19 => ServerMessage::Error {
            code: ErrorCode(r.b(30) as u16),
            client_id: r.small(),
            text: text(r),
        },
        20 => {
            if r.b(2) == 0 {
                ServerMessage::Ping(r.small())
            } else {
                ServerMessage::Pong(r.small())
            }
        }
        _ => {
            if r.b(3) == 0 {
                ServerMessage::Shutdown { reason: text(r) }
            } else {
                ServerMessage::Notice {
                    code: NoticeCode(r.b(20) as u16),
                    text: text(r),
                }
            }
        }
    }
}

/// Every case of the sweep: a session (new or resuming, manual acks or
/// not) fed up to 200 steps of server messages, intents and time. None
/// may panic, and every queue runs dry.
#[test]
fn a_session_fed_any_server_messages_never_panics() {
    for seed in 1..=1500u64 {
        let mut r = R(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let me = Username::new("me").unwrap();
        let mut now = Instant::now();
        let mut s = if r.b(3) == 0 {
            let saved = SavedSession {
                token: ResumeToken([1; 16]),
                epoch: 1,
                last_seen: MessageId(r.small()),
                next_client_id: r.small(),
            };
            ClientSession::resuming(me.clone(), Limits::default(), now, saved)
        } else {
            ClientSession::new(me.clone(), Limits::default(), now)
        };
        if r.b(2) == 0 {
            s.set_manual_acks(true);
        }
        if r.b(2) == 0 {
            s.set_auto_accept(Some(r.small()));
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..r.b(200) {
                match r.b(10) {
                    0..=4 => {
                        let m = msg(&mut r, &me);
                        s.handle_message(m, now);
                    }
                    5 => {
                        let _ = match r.b(17) {
                            0 => s.send_chat(Recipient::Everyone, "x").map(|_| ()),
                            1 => {
                                let resume = (r.b(2) == 0).then(|| ResumeState::from_bytes(b"abc"));
                                s.download(fname(&mut r), resume).map(|_| ())
                            }
                            2 => s
                                .offer(fname(&mut r), r.small(), Recipient::Everyone)
                                .map(|_| ()),
                            3 => s.push_chunk(tid(&mut r), vec![1u8; r.b(40) as usize]),
                            4 => s.push_end(tid(&mut r)),
                            5 => s.accept(tid(&mut r)),
                            6 => s.decline(tid(&mut r), "no"),
                            7 => s.cancel(tid(&mut r), "no"),
                            8 => {
                                s.stored(tid(&mut r), r.small());
                                Ok(())
                            }
                            9 => {
                                s.caught_up();
                                Ok(())
                            }
                            10 => {
                                s.reconnect(now);
                                Ok(())
                            }
                            11 => s.settle(),
                            12 => {
                                s.quit("q");
                                Ok(())
                            }
                            13 => s.cannot_store(tid(&mut r)),
                            14 => s.who(),
                            15 => s.list_files(),
                            _ => s.register(Secret::new("pw").unwrap()),
                        };
                    }
                    6 => {
                        now += Duration::from_millis(r.b(120_000));
                        s.handle_timeout(now);
                    }
                    7 => {
                        if let Some(t) = s.poll_timeout() {
                            now = now.max(t);
                        }
                        s.handle_timeout(now);
                    }
                    _ => {}
                }
                let mut n = 0;
                while s.poll_event().is_some() {
                    n += 1;
                    assert!(n < 100_000, "events never ran dry");
                }
                n = 0;
                while let Some(m) = s.poll_transmit() {
                    n += 1;
                    assert!(n < 100_000, "transmits never ran dry");
                    let _ = m.to_frame();
                }
                let _ = s.push_room(tid(&mut r));
                let _ = s.next_send_at(now, 10);
                let _ = s.saved();
            }
        }));
        assert!(outcome.is_ok(), "case {seed} panicked");
    }
}
