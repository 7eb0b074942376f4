//! The two protocols the generator speaks: imchat (through imchat-core's
//! encoder and decoder) and Redis pub/sub (RESP, by hand). Both sides get
//! the same shape: a member joins the room and reads chat payloads; a
//! publisher writes payloads. The hot receive path parses frames in place
//! without allocating, for imchat and RESP alike, so the generator costs the
//! same per delivery whichever server it measures.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use imchat_core::{
    types, ClientMessage, Decode, Encode, Recipient, ServerMessage, Username, HEADER_LEN,
    PROTOCOL_VERSION,
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
    /// Something else; `len` bytes consumed.
    Other { len: usize },
}

fn imchat_parse(d: &[u8]) -> io::Result<Parsed> {
    if d.len() < HEADER_LEN {
        return Ok(Parsed::More(HEADER_LEN));
    }
    let flen = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    let len = HEADER_LEN + flen;
    if d.len() < len {
        return Ok(Parsed::More(len));
    }
    let f = &d[HEADER_LEN..len];
    if f.first() == Some(&types::CHAT_FROM) && f.len() > 18 {
        // type, id (u64), time (u64), from (u8 length + bytes), private (u8),
        // kind (u8), text (u32 length + bytes)
        let name = f[17] as usize;
        let at = 18 + name + 2;
        if f.len() >= at + 4 {
            let tlen = u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]) as usize;
            let s = HEADER_LEN + at + 4;
            if s + tlen == len {
                return Ok(Parsed::Chat {
                    len,
                    start: s,
                    end: s + tlen,
                });
            }
        }
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chat frame"));
    }
    if f.first() == Some(&types::SHUTDOWN) {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "server shut down",
        ));
    }
    Ok(Parsed::Other { len })
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

/// Parses one RESP reply: arrays of bulk strings and integers, or a simple
/// line. A `message` push (`*3 $7 message $4 room $64 <payload>`) is a chat.
fn redis_parse(d: &[u8]) -> io::Result<Parsed> {
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
            Parsed::Other { len } => {
                if let Some(v) = ping_value(kind, &rb.data()[..len]) {
                    pings.push(v);
                }
                rb.start += len;
            }
        }
    }
    Ok(Some(0))
}

/// The value of an imchat keepalive ping, if `frame` is one.
fn ping_value(kind: Kind, frame: &[u8]) -> Option<u64> {
    if kind != Kind::Imchat || frame.get(HEADER_LEN) != Some(&types::PING) {
        return None;
    }
    match ServerMessage::decode_frame(&frame[HEADER_LEN..]) {
        Ok(ServerMessage::Ping(v)) => Some(v),
        _ => None,
    }
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
pub fn idle_pump(kind: Kind, s: &mut TcpStream, rb: &mut RecvBuf) -> io::Result<(bool, bool)> {
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
        need = 0;
        if kind == Kind::Redis {
            rb.start = rb.end;
            continue;
        }
        while rb.start < rb.end {
            match imchat_parse(rb.data())? {
                Parsed::More(n) => {
                    need = n;
                    break;
                }
                Parsed::Chat { len, .. } => rb.start += len,
                Parsed::Other { len } => {
                    if let Some(v) = ping_value(kind, &rb.data()[..len]) {
                        s.write_all(&ClientMessage::Pong(v).to_frame())?;
                    }
                    rb.start += len;
                }
            }
        }
    }
}

/// A connection that has joined the room (an imchat member after its
/// Welcome, a Redis subscriber after the SUBSCRIBE confirmation), with the
/// bytes read past the handshake kept for the receive loop.
pub struct Member {
    pub stream: TcpStream,
    pub rb: RecvBuf,
}

/// Connects to `addr` and joins the room as `name`.
pub fn join(kind: Kind, addr: SocketAddr, name: &str, buf: usize) -> io::Result<Member> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut rb = RecvBuf::new(buf);
    match kind {
        Kind::Imchat => {
            let username = Username::new(name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let hello = ClientMessage::Hello {
                version: PROTOCOL_VERSION,
                username,
            };
            stream.write_all(&hello.to_frame())?;
            let mut need = 0;
            loop {
                if rb.fill(&mut stream, need)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                loop {
                    match imchat_parse(rb.data())? {
                        Parsed::More(n) => {
                            need = n;
                            break;
                        }
                        Parsed::Chat { len, .. } => rb.start += len,
                        Parsed::Other { len } => {
                            let frame = &rb.data()[HEADER_LEN..len];
                            let msg = ServerMessage::decode_frame(frame).map_err(|e| {
                                io::Error::new(io::ErrorKind::InvalidData, e.to_string())
                            })?;
                            rb.start += len;
                            match msg {
                                ServerMessage::Welcome { .. } => {
                                    stream.set_read_timeout(None)?;
                                    return Ok(Member { stream, rb });
                                }
                                ServerMessage::Refused { reason, .. } => {
                                    return Err(io::Error::other(format!("refused: {reason}")))
                                }
                                _ => {}
                            }
                        }
                    }
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
                    Parsed::Chat { len, .. } | Parsed::Other { len } => {
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
                to: Recipient::Everyone,
                kind: imchat_core::ChatKind::Text,
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
/// separate connection (a subscribed one cannot PUBLISH) whose integer
/// replies a small thread reads and drops.
pub fn publisher(kind: Kind, addr: SocketAddr, member: &TcpStream) -> io::Result<TcpStream> {
    match kind {
        Kind::Imchat => member.try_clone(),
        Kind::Redis => {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            let mut r = s.try_clone()?;
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut b = vec![0u8; 16 * 1024];
                    while matches!(r.read(&mut b), Ok(n) if n > 0) {}
                })?;
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let p = payload(7, 123, 456_789);
        assert_eq!(parse_payload(&p), Some((7, 123, 456_789)));
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

    #[test]
    fn a_pumped_receiver_answers_keepalive_pings_and_still_gets_chat() {
        let mut input = ServerMessage::Ping(42).to_frame();
        input.extend(
            ServerMessage::Chat {
                id: imchat_core::MessageId(1),
                time: imchat_core::Timestamp(0),
                from: Username::new("s0").unwrap(),
                private: false,
                kind: imchat_core::ChatKind::Text,
                text: "hello".into(),
            }
            .to_frame(),
        );
        let mut sock = Fake {
            input: io::Cursor::new(input),
            output: Vec::new(),
        };
        let mut chats = Vec::new();
        let mut rb = RecvBuf::new(4096);
        let r = pump(Kind::Imchat, &mut sock, &mut rb, |p| {
            chats.push(p.to_vec());
            true
        });
        assert_eq!(r.unwrap(), Pumped::Open);
        assert_eq!(chats, [b"hello".to_vec()]);
        assert_eq!(sock.output, ClientMessage::Pong(42).to_frame());
    }
}
