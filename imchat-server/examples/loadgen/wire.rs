//! The two protocols the generator speaks: imchat (through imchat-core's
//! codec) and Redis pub/sub (RESP, by hand). Both sides get the same shape:
//! a member joins the room and reads chat payloads; a publisher writes
//! payloads. The hot receive path works on frames in place in the receive
//! buffer and allocates nothing per delivery, for imchat and RESP alike, so
//! the generator costs about the same per delivery whichever server it
//! measures. (Feeding a `Decoder` would copy every byte once more, and
//! decoding each delivery into a `ServerMessage` would allocate the sender's
//! name and the text: several times the cost of the rest of the loop.)

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use crate::conn::Sock;
use std::ops::ControlFlow;
use std::time::Duration;

use imchat_core::{
    frame_len, types, ChatKind, ClientMessage, Decode, Encode, Recipient, RoutedChat,
    ServerMessage, Username, DEFAULT_MAX_FRAME, HEADER_LEN, PROTOCOL_VERSION,
};

/// Bytes of every chat text the generator sends.
pub const PAYLOAD_LEN: usize = 64;
/// The Redis channel every member subscribes to.
const CHANNEL: &[u8] = b"room";

/// Which server is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Imchat,
    Redis,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Imchat => "imchat",
            Kind::Redis => "redis",
        }
    }
}

/// A 64-byte chat text: sender index, sequence number and the send time in
/// nanoseconds since the generator's epoch, in fixed-width ASCII, padded.
pub fn payload(sender: usize, seq: u64, ts_ns: u64) -> [u8; PAYLOAD_LEN] {
    let mut p = [b'x'; PAYLOAD_LEN];
    put_digits(&mut p[0..3], sender as u64);
    p[3] = b' ';
    put_digits(&mut p[4..14], seq);
    p[14] = b' ';
    put_digits(&mut p[15..35], ts_ns);
    p[35] = b' ';
    p
}

fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn digits(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

/// (sender, seq, send time) of a payload made by [`payload`].
pub fn parse_payload(p: &[u8]) -> Option<(usize, u64, u64)> {
    if p.len() != PAYLOAD_LEN {
        return None;
    }
    Some((
        digits(&p[0..3])? as usize,
        digits(&p[4..14])?,
        digits(&p[15..35])?,
    ))
}

/// (sender, seq) of a payload made by [`payload`], without its time: what
/// the fan-out checks per delivery.
pub fn parse_sender_seq(p: &[u8]) -> Option<(usize, u64)> {
    if p.len() != PAYLOAD_LEN {
        return None;
    }
    Some((digits(&p[0..3])? as usize, digits(&p[4..14])?))
}

/// Writes all of `buf` to a socket that may be non-blocking (a clone of a
/// member's socket shares its non-blocking flag with the poller's),
/// waiting for room with `poll` when the socket is full.
pub fn write_all_polled(s: &mut Sock, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fd = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(s),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: `fd` is one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut fd, 1, 100) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A receive buffer that frames are parsed from in place.
pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    pub fn new(cap: usize) -> Self {
        RecvBuf {
            buf: vec![0; cap],
            start: 0,
            end: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The whole buffer, for a read whose bytes are dropped.
    pub fn spare(&mut self) -> &mut [u8] {
        self.start = 0;
        self.end = 0;
        &mut self.buf
    }

    /// Reads once more from `r`, making room for at least `need` unparsed
    /// bytes. Ok(0) is the end of the stream.
    fn fill(&mut self, r: &mut impl Read, need: usize) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.start < need.max(4096) || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                self.buf.resize(need.next_power_of_two(), 0);
            }
        }
        loop {
            match r.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// What one parsed frame or RESP message was.
enum Parsed {
    /// Need more bytes; at least this many unparsed in all.
    More(usize),
    /// A chat payload at `start..end` of the data; `len` bytes consumed.
    Chat {
        len: usize,
        start: usize,
        end: usize,
    },
    /// Any other imchat frame, decoded; `len` bytes consumed. (Boxed: the
    /// rare frames pay for an allocation, the deliveries do not for moving
    /// a large value.)
    Message { len: usize, msg: Box<ServerMessage> },
    /// Any other RESP message; `len` bytes consumed.
    Other { len: usize },
}

/// Where the text of a `ServerMessage::Chat` frame (type byte and body) is
/// when it is [`PAYLOAD_LEN`] bytes long, as every text the generator sends.
/// The layout (docs/PROTOCOL.md): type, message id (u64), time (u64),
/// sender name (u8 length, bytes), private flag (u8), kind (u8, 0 for
/// text), history flag (u8, 0), text (u32 length, bytes). `None` for anything else, which is then
/// decoded in full.
fn chat_text(frame: &[u8]) -> Option<std::ops::Range<usize>> {
    const NAME_LEN_AT: usize = 1 + 8 + 8;
    const LEN: [u8; 4] = (PAYLOAD_LEN as u32).to_be_bytes();
    if frame.first() != Some(&types::CHAT_FROM) {
        return None;
    }
    let kind_at = NAME_LEN_AT + 1 + usize::from(*frame.get(NAME_LEN_AT)?) + 1;
    // The history flag follows the kind.
    let at = kind_at + 1 + 1 + 4;
    let exact = frame.len() == at + PAYLOAD_LEN && frame[kind_at] == 0 && frame[kind_at + 1] == 0;
    (exact && frame[at - 4..at] == LEN).then_some(at..frame.len())
}

/// One imchat frame at the start of `d`: its boundary from imchat-core's
/// [`frame_len`], the payload of a generator chat from [`chat_text`], and
/// every other frame decoded by imchat-core.
fn imchat_parse(d: &[u8]) -> io::Result<Parsed> {
    let bad = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    let Some(len) = frame_len(d, DEFAULT_MAX_FRAME).map_err(bad)? else {
        return Ok(Parsed::More(HEADER_LEN));
    };
    if d.len() < len {
        return Ok(Parsed::More(len));
    }
    let frame = &d[HEADER_LEN..len];
    if let Some(text) = chat_text(frame) {
        return Ok(Parsed::Chat {
            len,
            start: HEADER_LEN + text.start,
            end: HEADER_LEN + text.end,
        });
    }
    match ServerMessage::decode_frame(frame).map_err(bad)? {
        ServerMessage::Shutdown { .. } => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "server shut down",
        )),
        msg => Ok(Parsed::Message {
            len,
            msg: Box::new(msg),
        }),
    }
}

/// One RESP line starting at `at`: (its content end, the next position).
fn resp_line(d: &[u8], at: usize) -> Option<(usize, usize)> {
    let nl = d.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((at + nl, at + nl + 2))
}

fn resp_int(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad RESP number"))
}

/// What every `message` push on the room's channel starts with, up to the
/// payload's length.
const MESSAGE_PUSH: &[u8] = b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$";

/// A `message` push on the room's channel at the start of `d`, found by its
/// fixed layout as [`chat_text`] finds an imchat chat: the prefix compared
/// at once, the payload's length read, the payload taken in place. `None`
/// for anything else (which the general parser then reads).
fn redis_message(d: &[u8]) -> Option<Parsed> {
    let rest = d.strip_prefix(MESSAGE_PUSH)?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 9 || rest.len() < digits + 2 {
        return None;
    }
    let blen = rest[..digits]
        .iter()
        .fold(0usize, |v, &c| v * 10 + usize::from(c - b'0'));
    if &rest[digits..digits + 2] != b"\r\n" {
        return None;
    }
    let start = MESSAGE_PUSH.len() + digits + 2;
    let end = start + blen;
    if d.len() < end + 2 {
        return Some(Parsed::More(end + 2));
    }
    (&d[end..end + 2] == b"\r\n").then_some(Parsed::Chat {
        len: end + 2,
        start,
        end,
    })
}

/// Parses one RESP reply: arrays of bulk strings and integers, or a simple
/// line. A `message` push (`*3 $7 message $4 room $64 <payload>`) is a chat.
fn redis_parse(d: &[u8]) -> io::Result<Parsed> {
    if let Some(p) = redis_message(d) {
        return Ok(p);
    }
    let Some((e, mut at)) = resp_line(d, 0) else {
        return Ok(Parsed::More(d.len() + 1));
    };
    match d[0] {
        b'+' | b':' => Ok(Parsed::Other { len: at }),
        b'-' => Err(io::Error::other(format!(
            "redis error: {}",
            String::from_utf8_lossy(&d[1..e])
        ))),
        b'*' => {
            let n = resp_int(&d[1..e])?;
            let mut first: (usize, usize) = (0, 0);
            let mut third: (usize, usize) = (0, 0);
            for i in 0..n {
                let Some((le, next)) = resp_line(d, at) else {
                    return Ok(Parsed::More(d.len() + 1));
                };
                let (s, en) = match d[at] {
                    b'$' => {
                        let blen = resp_int(&d[at + 1..le])? as usize;
                        if d.len() < next + blen + 2 {
                            return Ok(Parsed::More(next + blen + 2));
                        }
                        at = next + blen + 2;
                        (next, next + blen)
                    }
                    b':' => {
                        at = next;
                        (0, 0)
                    }
                    _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad RESP")),
                };
                if i == 0 {
                    first = (s, en);
                }
                if i == 2 {
                    third = (s, en);
                }
            }
            if n == 3 && &d[first.0..first.1] == b"message" {
                Ok(Parsed::Chat {
                    len: at,
                    start: third.0,
                    end: third.1,
                })
            } else {
                Ok(Parsed::Other { len: at })
            }
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "bad RESP type")),
    }
}

/// Parses every complete message in `rb`, calling `on_chat` with each chat
/// payload. `Some(need)`: the unparsed bytes need `need` in all to be a
/// message (0 when none are left); `None`: `on_chat` asked to stop.
fn parse_all(
    kind: Kind,
    rb: &mut RecvBuf,
    on_chat: &mut impl FnMut(&[u8]) -> bool,
    pings: &mut Vec<u64>,
) -> io::Result<Option<usize>> {
    while rb.start < rb.end {
        let parsed = match kind {
            Kind::Imchat => imchat_parse(rb.data())?,
            Kind::Redis => redis_parse(rb.data())?,
        };
        match parsed {
            Parsed::More(n) => return Ok(Some(n)),
            Parsed::Chat { len, start, end } => {
                let go = on_chat(&rb.data()[start..end]);
                rb.start += len;
                if !go {
                    return Ok(None);
                }
            }
            Parsed::Message { len, msg } => {
                rb.start += len;
                match *msg {
                    ServerMessage::Ping(v) => pings.push(v),
                    // A chat this generator did not write: decoded in full.
                    ServerMessage::Chat(RoutedChat { text, .. }) if !on_chat(text.as_bytes()) => {
                        return Ok(None);
                    }
                    _ => {}
                }
            }
            Parsed::Other { len } => rb.start += len,
        }
    }
    Ok(Some(0))
}

/// What [`pump`] left the socket as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// Nothing more to read for now.
    Open,
    /// End of stream.
    Closed,
    /// The callback asked to stop.
    Stopped,
}

/// Parses what is buffered, then reads a non-blocking socket until a read
/// leaves free room in the buffer (the socket is drained) or would block,
/// calling `on_chat` with every chat payload. Keepalive pings are answered
/// as a live client does: a run that keeps a member silent for over a
/// minute (a long burst) must not see it dropped as dead.
pub fn pump<R: Read + Write>(
    kind: Kind,
    r: &mut R,
    rb: &mut RecvBuf,
    mut on_chat: impl FnMut(&[u8]) -> bool,
) -> io::Result<Pumped> {
    let mut pings = Vec::new();
    let result = pump_frames(kind, r, rb, &mut on_chat, &mut pings);
    for v in pings {
        r.write_all(&ClientMessage::Pong(v).to_frame())?;
    }
    result
}

fn pump_frames<R: Read>(
    kind: Kind,
    r: &mut R,
    rb: &mut RecvBuf,
    on_chat: &mut impl FnMut(&[u8]) -> bool,
    pings: &mut Vec<u64>,
) -> io::Result<Pumped> {
    loop {
        let Some(need) = parse_all(kind, rb, on_chat, pings)? else {
            return Ok(Pumped::Stopped);
        };
        match rb.fill(r, need) {
            Ok(0) => return Ok(Pumped::Closed),
            Ok(_) if rb.end < rb.buf.len() => {
                return match parse_all(kind, rb, on_chat, pings)? {
                    Some(_) => Ok(Pumped::Open),
                    None => Ok(Pumped::Stopped),
                };
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pumped::Open),
            Err(e) => return Err(e),
        }
    }
}

/// Reads what a non-blocking socket of an idle client has, answering the
/// server's keepalive pings as a live client does (imchat pings a silent
/// client after 30 s and drops it 30 s later). Returns (still open, got
/// bytes).
///
/// Only pings are decoded: every other frame (the join storm's presence
/// notices, N²/2 names in all) is skipped by its length. Decoding each of
/// them made the one reading thread fall so far behind at 10,000 clients
/// that pings waited in the socket past the server's keepalive timeout.
pub fn idle_pump<S: Read + Write>(
    kind: Kind,
    s: &mut S,
    rb: &mut RecvBuf,
) -> io::Result<(bool, bool)> {
    let mut got = false;
    let mut need = 0;
    loop {
        match rb.fill(s, need) {
            Ok(0) => return Ok((false, got)),
            Ok(_) => got = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((true, got)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if kind == Kind::Redis {
            rb.start = rb.end;
            need = 0;
            continue;
        }
        need = skip_to_pings(rb, |v| s.write_all(&ClientMessage::Pong(v).to_frame()))?;
    }
}

/// Consumes the whole imchat frames buffered in `rb`, calling `on_ping`
/// with the value of every keepalive ping and skipping every other frame
/// undecoded. Returns how many unparsed bytes the next frame needs.
fn skip_to_pings(
    rb: &mut RecvBuf,
    mut on_ping: impl FnMut(u64) -> io::Result<()>,
) -> io::Result<usize> {
    let bad = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    loop {
        let d = rb.data();
        let Some(len) = frame_len(d, DEFAULT_MAX_FRAME).map_err(bad)? else {
            return Ok(HEADER_LEN);
        };
        if d.len() < len {
            return Ok(len);
        }
        if d.get(HEADER_LEN) == Some(&types::PING) {
            if let ServerMessage::Ping(v) =
                ServerMessage::decode_frame(&d[HEADER_LEN..len]).map_err(bad)?
            {
                on_ping(v)?;
            }
        }
        rb.start += len;
    }
}

/// Consumes the whole imchat frames buffered in `rb`, handing every message
/// but a generator chat to `on_message` until it says `Break`. Returns that
/// `Break`, or `Continue` with how many unparsed bytes the next frame needs.
fn imchat_messages<T>(
    rb: &mut RecvBuf,
    mut on_message: impl FnMut(ServerMessage) -> io::Result<ControlFlow<T>>,
) -> io::Result<ControlFlow<T, usize>> {
    loop {
        match imchat_parse(rb.data())? {
            Parsed::More(n) => return Ok(ControlFlow::Continue(n)),
            Parsed::Chat { len, .. } | Parsed::Other { len } => rb.start += len,
            Parsed::Message { len, msg } => {
                rb.start += len;
                if let ControlFlow::Break(t) = on_message(*msg)? {
                    return Ok(ControlFlow::Break(t));
                }
            }
        }
    }
}

/// A connection that has joined the room (an imchat member after its
/// Welcome, a Redis subscriber after the SUBSCRIBE confirmation), with the
/// bytes read past the handshake kept for the receive loop.
pub struct Member {
    pub stream: Sock,
    pub rb: RecvBuf,
}

/// Connects to `addr` and joins the room as `name`.
pub fn join(kind: Kind, addr: SocketAddr, name: &str, buf: usize) -> io::Result<Member> {
    let mut stream = Sock::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut rb = RecvBuf::new(buf);
    match kind {
        Kind::Imchat => {
            let username = Username::new(name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let hello = ClientMessage::Hello {
                resume: None,
                version: PROTOCOL_VERSION,
                username,
            };
            stream.write_all(&hello.to_frame())?;
            let mut need = 0;
            loop {
                if rb.fill(&mut stream, need)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let walked = imchat_messages(&mut rb, |msg| match msg {
                    ServerMessage::Welcome { .. } => Ok(ControlFlow::Break(())),
                    ServerMessage::Refused { reason, .. } => {
                        Err(io::Error::other(format!("refused: {reason}")))
                    }
                    _ => Ok(ControlFlow::Continue(())),
                })?;
                match walked {
                    ControlFlow::Break(()) => {
                        stream.set_read_timeout(None)?;
                        return Ok(Member { stream, rb });
                    }
                    ControlFlow::Continue(n) => need = n,
                }
            }
        }
        Kind::Redis => {
            stream.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nroom\r\n")?;
            let mut need = 0;
            loop {
                if rb.fill(&mut stream, need)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                match redis_parse(rb.data())? {
                    Parsed::More(n) => need = n,
                    Parsed::Chat { len, .. }
                    | Parsed::Other { len }
                    | Parsed::Message { len, .. } => {
                        rb.start += len;
                        stream.set_read_timeout(None)?;
                        return Ok(Member { stream, rb });
                    }
                }
            }
        }
    }
}

/// Appends the frame that sends `p` to the room: an imchat broadcast chat
/// (encoded by imchat-core) or a Redis PUBLISH.
pub fn push_frame(kind: Kind, out: &mut Vec<u8>, p: &[u8]) {
    match kind {
        Kind::Imchat => {
            let text = std::str::from_utf8(p).unwrap_or_default().to_string();
            ClientMessage::Chat {
                client_id: 0,
                to: Recipient::Everyone,
                kind: ChatKind::Text,
                text,
            }
            .encode(out);
        }
        Kind::Redis => {
            out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$4\r\n");
            out.extend_from_slice(CHANNEL);
            out.extend_from_slice(format!("\r\n${}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A publishing connection: for imchat the member's own socket; for Redis a
/// separate connection (a subscribed one cannot PUBLISH), whose integer
/// replies the poller reads and drops (see [`crate::room::Room::sinks`]).
pub fn publisher(kind: Kind, addr: SocketAddr, member: &Sock) -> io::Result<Sock> {
    match kind {
        Kind::Imchat => member.try_clone(),
        Kind::Redis => {
            let s = Sock::connect(addr)?;
            s.set_nodelay(true)?;
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imchat_core::{MessageId, PresenceEvent, Timestamp};

    #[test]
    fn payload_round_trips() {
        let p = payload(7, 123, 456_789);
        assert_eq!(parse_payload(&p), Some((7, 123, 456_789)));
        assert_eq!(parse_sender_seq(&p), Some((7, 123)));
        assert_eq!(parse_sender_seq(&p[1..]), None);
    }

    fn message_push(channel: &str, p: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n",
            channel.len(),
            p.len()
        )
        .into_bytes();
        v.extend_from_slice(p);
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn a_redis_message_push_is_found_in_place_at_every_cut() {
        let p = payload(2, 5, 9);
        let push = message_push("room", &p);
        assert!(matches!(redis_message(&push), Some(Parsed::Chat { .. })));
        match redis_parse(&push).unwrap() {
            Parsed::Chat { len, start, end } => {
                assert_eq!((len, &push[start..end]), (push.len(), &p[..]));
            }
            _ => panic!("not a chat"),
        }
        // Cut anywhere, the parser asks for more and never for less than it has.
        for cut in 0..push.len() {
            match redis_parse(&push[..cut]).unwrap() {
                Parsed::More(n) => assert!(n > cut, "cut {cut}: asks for {n}"),
                _ => panic!("cut {cut}: parsed an incomplete push"),
            }
        }
    }

    #[test]
    fn other_redis_replies_take_the_general_parser() {
        // Another channel, a subscription confirmation, a PUBLISH reply.
        let other = message_push("hall", b"hi");
        assert!(redis_message(&other).is_none());
        match redis_parse(&other).unwrap() {
            Parsed::Chat { len, start, end } => {
                assert_eq!((len, &other[start..end]), (other.len(), &b"hi"[..]));
            }
            _ => panic!("not a chat"),
        }
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n";
        assert!(matches!(redis_parse(sub).unwrap(), Parsed::Other { len } if len == sub.len()));
        assert!(matches!(
            redis_parse(b":99\r\n").unwrap(),
            Parsed::Other { len: 5 }
        ));
        // A broken push: the bytes after the payload are not CRLF.
        let mut bad = message_push("room", &payload(1, 1, 1));
        let at = bad.len() - 2;
        bad[at] = b'x';
        assert!(redis_message(&bad).is_none());
    }

    #[test]
    fn a_polled_write_completes_on_a_full_non_blocking_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut w =
            Sock::plain(std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (mut r, _) = listener.accept().unwrap();
        w.set_nonblocking(true).unwrap();
        // Far more than the socket buffers hold: the write must wait for the reader.
        let sent: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
        let expect = sent.clone();
        let reader = std::thread::spawn(move || {
            r.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        write_all_polled(&mut w, &sent).unwrap();
        drop(w);
        assert!(reader.join().unwrap() == expect);
    }

    /// A non-blocking socket's stand-in: reads `input`, then would block.
    struct Fake {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.input.read(buf)? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A socket that gives at most `step` bytes per read.
    struct Trickle {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step);
            match self.input.read(&mut buf[..n])? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn chat(from: &str, private: bool, text: &[u8]) -> ServerMessage {
        ServerMessage::Chat(RoutedChat {
            history: false,
            id: MessageId(u64::MAX - 1),
            time: Timestamp(1_700_000_000_000),
            from: Username::new(from).unwrap(),
            private,
            kind: ChatKind::Text,
            text: String::from_utf8(text.to_vec()).unwrap(),
        })
    }

    #[test]
    fn a_generator_chat_is_found_in_place_in_the_codecs_frame() {
        let p = payload(3, 9, 77);
        for (from, private) in [("m3", false), ("a-much-longer-sender-name", true)] {
            let f = chat(from, private, &p).to_frame();
            match imchat_parse(&f).unwrap() {
                Parsed::Chat { len, start, end } => {
                    assert_eq!((len, &f[start..end]), (f.len(), &p[..]), "{from}");
                }
                _ => panic!("{from}: not found in place"),
            }
        }
    }

    #[test]
    fn other_frames_and_other_chat_lengths_are_decoded_in_full() {
        let short = chat("m1", false, b"hello");
        let long = chat("m1", false, &[b'y'; PAYLOAD_LEN + 1]);
        let mut action = chat("m1", false, &payload(1, 1, 1));
        if let ServerMessage::Chat(RoutedChat { kind, .. }) = &mut action {
            *kind = ChatKind::Action;
        }
        for m in [short, long, action, ServerMessage::Ping(5)] {
            let f = m.to_frame();
            match imchat_parse(&f).unwrap() {
                Parsed::Message { len, msg } => assert_eq!((len, *msg), (f.len(), m)),
                _ => panic!("{m:?} was not decoded"),
            }
        }
    }

    /// Joins a one-connection server on 127.0.0.1 that answers the Hello
    /// with the frames in `answer`.
    fn join_answered(answer: Vec<u8>) -> io::Result<Member> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut header = [0u8; HEADER_LEN];
            s.read_exact(&mut header).unwrap();
            let mut hello = vec![0u8; u32::from_be_bytes(header) as usize];
            s.read_exact(&mut hello).unwrap();
            s.write_all(&answer).unwrap();
            s
        });
        let joined = join(Kind::Imchat, addr, "m0", 4096);
        drop(server.join().unwrap());
        joined
    }

    #[test]
    fn joining_skips_frames_before_the_welcome_and_keeps_what_follows() {
        let limits = imchat_core::Hub::new(imchat_core::Limits::default(), "hi").server_limits();
        let mut answer = ServerMessage::Ping(1).to_frame();
        answer.extend(chat("m9", false, b"early").to_frame());
        answer.extend(
            ServerMessage::Welcome {
                token: imchat_core::ResumeToken::default(),
                epoch: 0,
                grace_secs: 0,
                last_id: imchat_core::MessageId(0),
                resumed: None,
                version: PROTOCOL_VERSION,
                username: Username::new("m0").unwrap(),
                text: "hi".into(),
                limits,
            }
            .to_frame(),
        );
        let after = chat("m9", false, b"after").to_frame();
        answer.extend(&after);
        let mut m = join_answered(answer).unwrap();
        // The frames after the Welcome were either kept or are still unread.
        let mut rest = m.rb.data().to_vec();
        m.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while rest.len() < after.len() {
            let mut b = [0u8; 256];
            match m.stream.read(&mut b).unwrap() {
                0 => break,
                n => rest.extend_from_slice(&b[..n]),
            }
        }
        assert_eq!(rest, after);
    }

    #[test]
    fn joining_reports_a_refusal_with_its_reason() {
        let refused = ServerMessage::Refused {
            code: imchat_core::RefuseCode::NAME_TAKEN,
            reason: "taken".into(),
            version: PROTOCOL_VERSION,
        };
        let err = join_answered(refused.to_frame()).err().expect("refused");
        assert_eq!(err.to_string(), "refused: taken");
    }

    fn pumped(input: Vec<u8>, buf: usize) -> (io::Result<Pumped>, Vec<Vec<u8>>, Vec<u8>) {
        let mut sock = Fake {
            input: io::Cursor::new(input),
            output: Vec::new(),
        };
        let mut chats = Vec::new();
        let mut rb = RecvBuf::new(buf);
        let r = pump(Kind::Imchat, &mut sock, &mut rb, |p| {
            chats.push(p.to_vec());
            true
        });
        (r, chats, sock.output)
    }

    #[test]
    fn a_pumped_receiver_answers_keepalive_pings_and_still_gets_chat() {
        let p = payload(1, 2, 3);
        let mut input = ServerMessage::Ping(42).to_frame();
        input.extend(chat("s0", false, b"hello").to_frame());
        input.extend(chat("s0", false, &p).to_frame());
        let (r, chats, out) = pumped(input, 4096);
        assert_eq!(r.unwrap(), Pumped::Open);
        assert_eq!(chats, [b"hello".to_vec(), p.to_vec()]);
        assert_eq!(out, ClientMessage::Pong(42).to_frame());
    }

    #[test]
    fn frames_that_span_many_buffer_fills_arrive_whole_and_in_order() {
        let sent: Vec<_> = (1..=200).map(|seq| payload(4, seq, seq * 10)).collect();
        let mut input = Vec::new();
        for p in &sent {
            input.extend(chat("m4", false, p).to_frame());
        }
        // 4,096-byte fills over 15 KiB: frames cut at every fill boundary.
        let (r, chats, _) = pumped(input, 4096);
        assert_eq!(r.unwrap(), Pumped::Open);
        assert_eq!(chats, sent.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
    }

    #[test]
    fn a_shutdown_or_a_broken_stream_ends_the_pump_with_an_error() {
        let bye = ServerMessage::Shutdown {
            reason: "bye".into(),
        };
        let (r, _, _) = pumped(bye.to_frame(), 4096);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        let (r, _, _) = pumped(vec![0, 0, 0, 0], 4096);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_idle_client_answers_pings_and_says_it_got_bytes() {
        let mut input = chat("m0", false, &payload(0, 1, 1)).to_frame();
        input.extend(ServerMessage::Ping(7).to_frame());
        let mut sock = Fake {
            input: io::Cursor::new(input),
            output: Vec::new(),
        };
        let mut rb = RecvBuf::new(4096);
        let r = idle_pump(Kind::Imchat, &mut sock, &mut rb);
        assert_eq!(r.unwrap(), (true, true));
        assert_eq!(sock.output, ClientMessage::Pong(7).to_frame());
        let again = idle_pump(Kind::Imchat, &mut sock, &mut rb);
        assert_eq!(again.unwrap(), (true, false));
    }

    #[test]
    fn an_idle_client_skips_presence_notices_split_across_reads_and_answers_the_ping_after_them() {
        let presence = ServerMessage::Presence(
            ["alice", "bob", "carol"]
                .into_iter()
                .enumerate()
                .map(|(k, n)| PresenceEvent::Joined {
                    id: MessageId(k as u64 + 1),
                    time: Timestamp(1_700_000_000_000),
                    user: Username::new(n).unwrap(),
                })
                .collect(),
        );
        let mut input = presence.to_frame();
        input.extend(ServerMessage::Ping(9).to_frame());
        let mut sock = Trickle {
            input: io::Cursor::new(input),
            output: Vec::new(),
            step: 3,
        };
        let mut rb = RecvBuf::new(4096);
        let mut rounds = 0;
        while sock.output.is_empty() && rounds < 100 {
            let r = idle_pump(Kind::Imchat, &mut sock, &mut rb);
            assert!(r.unwrap().0, "the socket stays open");
            rounds += 1;
        }
        assert_eq!(sock.output, ClientMessage::Pong(9).to_frame());
        assert_eq!(rb.data(), b"");
    }
}
