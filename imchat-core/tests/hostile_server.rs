//! A [`ClientSession`] fed what a hostile or broken server may send:
//! nothing it is told may make it panic.

use std::time::{Duration, Instant};

use imchat_core::{
    ClientSession, Limits, MessageId, ResumeToken, ServerLimits, ServerMessage, Username,
};

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
