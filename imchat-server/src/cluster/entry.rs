//! The layout of an entry of the bus (`imchat:bus`), and reading it back.
//!
//! Every entry has a head, field `e`: space-separated, always in this
//! order, the publishing server's id, its sequence number, the kind, then
//! the kind's own items:
//!
//! | kind | head after `<server> <seq>` | second field |
//! | --- | --- | --- |
//! | join | `j <id> <user>` | — |
//! | leave | `l <id> <reason> <user>` | `x`: the text |
//! | chat | `c <id> <time> <client id> <action 0/1> <from> [<to>]` | `x`: the text |
//! | chats | `b <count>` | `m`: the messages (below) |
//! | move | `v <user>` | — |
//! | away (connection lost) | `a <time> <user>` | — |
//! | back (resumed here) | `h <user>` | — |
//! | kick | `k <user>` | `x`: what the user is told |
//! | private message not delivered | `u <from> <to>` | `x`: its text |
//! | push control | `f <addressee> o <push> <size> <from> <receivers…>` | `n`: the file's name |
//! | | `f <addressee> a <push> <accepted>` | — |
//! | | `f <addressee> g <push> <code>` | `x`: the reason |
//!
//! Names never contain a space, so they go in the head; the texts, which
//! may, each have a field of their own.
//!
//! A run of chat messages published together is one entry of kind `b`
//! (at most [`MAX_PER_ENTRY`]): its sequence number is its first
//! message's (the next ones follow without a gap), and its field `m`
//! holds, for each message in order, its chat head after `<server> <seq> `
//! (`c <id> <time> <client id> <action 0/1> <from> [<to>]`), a newline, the
//! text's length in bytes, a newline, and the text. The `i`th message of
//! an entry at position `P` is at position `P + i` (the low bits of a
//! position; see `RemoteOrigin`): one entry and one reply per run, not per
//! message, and still one position per message for resumes. A reader learns whose an entry is,
//! and for a push's control whom it is for, from the head's first items
//! alone ([`Head::peek`]): the entries it does not apply (its own, another
//! server's control) cost it no more than that.

use std::fmt::Write as _;
use std::io::Write as _;

use imchat_core::{
    ChatKind, ClusterEvent, FileName, LeaveReason, MessageId, RemoteOrigin, Timestamp,
    TransferControl, TransferId, Username,
};
use redis::Value;

/// The head's field.
const HEAD: &[u8] = b"e";
/// The field of a chat's, a leave's or a cancel's text.
const TEXT: &[u8] = b"x";
/// The field of an offered file's name.
const NAME: &[u8] = b"n";
/// The field of a run of chat messages.
const MESSAGES: &[u8] = b"m";
/// Most chat messages in one entry: each takes one of the 1,024 log ids of
/// its entry's position, and the rest are left for the ids a server gives
/// its own entries between two positions.
pub(super) const MAX_PER_ENTRY: usize = 256;

/// Writes `event` (server `server`'s `seq`th) as an entry's fields onto
/// `xadd`; false (nothing written) for an event that is not for the stream.
pub(super) fn encode(
    xadd: &mut redis::Cmd,
    server: u64,
    seq: u64,
    event: &ClusterEvent,
    head: &mut String,
) -> bool {
    head.clear();
    let _ = write!(head, "{server} {seq} ");
    let second: Option<(&[u8], &str)> = match event {
        ClusterEvent::Joined { user, id } => {
            let _ = write!(head, "j {} {}", id.0, user.as_str());
            None
        }
        ClusterEvent::Left {
            user,
            reason,
            text,
            id,
        } => {
            let _ = write!(head, "l {} {} {}", id.0, reason.0, user.as_str());
            Some((TEXT, text))
        }
        ClusterEvent::Chat { .. } => chat_head(head, event).map(|text| (TEXT, text)),
        ClusterEvent::Moved { user, .. } => {
            let _ = write!(head, "v {}", user.as_str());
            None
        }
        ClusterEvent::Kick { user, text } => {
            let _ = write!(head, "k {}", user.as_str());
            Some((TEXT, text))
        }
        ClusterEvent::Away { user, since } => {
            let _ = write!(head, "a {} {}", since.0, user.as_str());
            None
        }
        ClusterEvent::Back { user } => {
            let _ = write!(head, "h {}", user.as_str());
            None
        }
        ClusterEvent::Undelivered { from, to, text } => {
            let _ = write!(head, "u {} {}", from.as_str(), to.as_str());
            Some((TEXT, text))
        }
        ClusterEvent::Transfer(t) => match t {
            TransferControl::Offer {
                to,
                relay,
                from,
                users,
                name,
                size,
            } => {
                let _ = write!(head, "f {to} o {} {size} {}", relay.0, from.as_str());
                for u in users {
                    let _ = write!(head, " {}", u.as_str());
                }
                Some((NAME, name.as_ref()))
            }
            TransferControl::Answer {
                to,
                relay,
                accepted,
            } => {
                let _ = write!(head, "f {to} a {} {accepted}", relay.0);
                None
            }
            TransferControl::Gone {
                to,
                relay,
                code,
                reason,
            } => {
                let _ = write!(head, "f {to} g {} {}", relay.0, code.0);
                Some((TEXT, reason))
            }
            TransferControl::Delivered {
                to,
                relay,
                receivers,
            } => {
                let _ = write!(head, "f {to} d {} {receivers}", relay.0);
                None
            }
            TransferControl::Dropped {
                to,
                relay,
                code,
                reason,
            } => {
                let _ = write!(head, "f {to} x {} {}", relay.0, code.0);
                Some((TEXT, reason))
            }
            TransferControl::Credit { to, relay, offset } => {
                let _ = write!(head, "f {to} c {} {offset}", relay.0);
                None
            }
        },
        ClusterEvent::Session { .. } => return false,
    };
    xadd.arg(HEAD).arg(head.as_str());
    if let Some((field, value)) = second {
        xadd.arg(field).arg(value);
    }
    true
}

/// Writes the head of chat `event` after `<server> <seq> ` onto `head`;
/// its text, or `None` (nothing written) if it is not a chat.
fn chat_head<'e>(head: &mut String, event: &'e ClusterEvent) -> Option<&'e str> {
    let ClusterEvent::Chat {
        from,
        to,
        kind,
        text,
        id,
        time,
        client_id,
    } = event
    else {
        return None;
    };
    let _ = write!(
        head,
        "c {} {} {client_id} {} {}",
        id.0,
        time.0,
        u8::from(*kind == ChatKind::Action),
        from.as_str()
    );
    if let Some(to) = to {
        let _ = write!(head, " {}", to.as_str());
    }
    Some(text)
}

/// Writes `chats` (server `server`'s chat messages numbered `seq`,
/// `seq + 1`, …; at most [`MAX_PER_ENTRY`]) as one entry's fields onto
/// `xadd`; what is not a chat is left out.
pub(super) fn encode_chats<'e>(
    xadd: &mut redis::Cmd,
    server: u64,
    seq: u64,
    chats: impl Iterator<Item = &'e ClusterEvent>,
    head: &mut String,
    body: &mut Vec<u8>,
) {
    body.clear();
    let mut count = 0;
    for event in chats {
        head.clear();
        let Some(text) = chat_head(head, event) else {
            continue;
        };
        // Room for the head, the length's line and the text at once.
        body.reserve(head.len() + text.len() + 24);
        body.extend_from_slice(head.as_bytes());
        let _ = write!(body, "\n{}\n", text.len());
        body.extend_from_slice(text.as_bytes());
        count += 1;
    }
    head.clear();
    let _ = write!(head, "{server} {seq} b {count}");
    xadd.arg(HEAD)
        .arg(head.as_str())
        .arg(MESSAGES)
        .arg(&body[..]);
}

/// One chat message of an entry of kind `b`, not decoded yet.
#[derive(Debug)]
pub(super) struct Record<'a> {
    /// The log id its server gave it.
    pub id: MessageId,
    /// Its head's items after the id.
    items: &'a str,
    text: &'a [u8],
}

/// The messages of an entry of kind `b` whose head is `head`, in order;
/// `None` if they are not all there, and nothing else.
pub(super) fn records<'a>(head: &Head, fields: &'a [Value]) -> Option<Vec<Record<'a>>> {
    let [_, _, k, v, ..] = fields else {
        return None;
    };
    if bytes(k)? != MESSAGES {
        return None;
    }
    let mut rest = bytes(v)?;
    let mut out = Vec::with_capacity(head.count);
    for _ in 0..head.count {
        let (chat, r) = split_line(rest)?;
        let (len, r) = split_line(r)?;
        let len = usize::try_from(number(len)?).ok()?;
        let text = r.get(..len)?;
        rest = &r[len..];
        let mut items = std::str::from_utf8(chat).ok()?.splitn(3, ' ');
        if items.next()? != "c" {
            return None;
        }
        let id = MessageId(number(items.next()?.as_bytes())?);
        out.push(Record {
            id,
            items: items.next()?,
            text,
        });
    }
    rest.is_empty().then_some(out)
}

/// The bytes before the first newline of `b`, and those after it.
fn split_line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = b.iter().position(|&c| c == b'\n')?;
    Some((&b[..nl], &b[nl + 1..]))
}

/// Decodes a message of an entry of kind `b`, as [`decode`] a chat entry.
/// `sender` is the sender of the message before it in the entry: a name
/// checked already (a run's messages mostly come from one sender).
pub(super) fn decode_record(
    record: &Record<'_>,
    sender: &mut Option<Username>,
) -> Option<(ClusterEvent, MessageId, Timestamp, u64)> {
    let text = String::from_utf8(record.text.to_vec()).ok();
    let mut name = |item: Option<&str>| match sender {
        Some(u) if Some(u.as_str()) == item => Some(u.clone()),
        _ => {
            *sender = user(item);
            sender.clone()
        }
    };
    chat(record.id, &mut record.items.split(' '), text, &mut name)
}

/// A number written in decimal digits (and nothing else).
fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// A stream entry id (`millis-seq`) as a log id.
pub(super) fn position(entry_id: &[u8]) -> Option<MessageId> {
    let dash = entry_id.iter().position(|&b| b == b'-')?;
    Some(RemoteOrigin::position_id(
        number(&entry_id[..dash])?,
        number(&entry_id[dash + 1..])?,
    ))
}

/// The position of the last event of the entry `entry_id` (an entry of
/// kind `b` holds several, at consecutive positions).
pub(super) fn last_position(entry_id: &[u8], fields: &[Value]) -> Option<MessageId> {
    let first = position(entry_id)?;
    let count = Head::peek(fields).map_or(1, |h| h.count);
    Some(MessageId(first.0 + count as u64 - 1))
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// What the first items of an entry's head say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    /// The publishing server.
    pub server: u64,
    /// Its sequence number there.
    pub seq: u64,
    /// The kind (`j`, `l`, `c`, `b`, `v`, `a`, `h`, `k`, `u`, `f`).
    pub kind: u8,
    /// The log id its server gave it (joins, leaves, chats; else 0).
    pub id: MessageId,
    /// The server a push's control is for (else none).
    pub addressee: Option<u64>,
    /// The chat messages of an entry of kind `b` (else 1).
    pub count: usize,
}

impl Head {
    /// Reads the head of an entry's fields, without decoding the rest.
    pub fn peek(fields: &[Value]) -> Option<Head> {
        let [k, v, ..] = fields else {
            return None;
        };
        if bytes(k)? != HEAD {
            return None;
        }
        let mut items = bytes(v)?.split(|&b| b == b' ');
        let server = number(items.next()?)?;
        let seq = number(items.next()?)?;
        let kind = match items.next()? {
            [k] => *k,
            _ => return None,
        };
        let (id, addressee) = match kind {
            b'j' | b'l' | b'c' => (MessageId(number(items.next()?)?), None),
            b'f' => (MessageId(0), Some(number(items.next()?)?)),
            _ => (MessageId(0), None),
        };
        let count = if kind == b'b' {
            let n = usize::try_from(number(items.next()?)?).ok()?;
            if n == 0 || n > MAX_PER_ENTRY || items.next().is_some() {
                return None;
            }
            // Its messages are numbered `seq`, `seq + 1`, …
            seq.checked_add(n as u64)?;
            n
        } else {
            1
        };
        Some(Head {
            server,
            seq,
            kind,
            id,
            addressee,
            count,
        })
    }
}

/// The second field's name and text, taken out of `fields` (no text if
/// it is not UTF-8); an empty text named `x` if there is none.
fn take_second(fields: &mut [Value]) -> (&'static [u8], Option<String>) {
    match fields {
        [_, _, k, v, ..] => {
            let name = match bytes(k) {
                Some(TEXT) => TEXT,
                Some(NAME) => NAME,
                _ => b"",
            };
            let text = match std::mem::replace(v, Value::Nil) {
                Value::BulkString(b) => String::from_utf8(b).ok(),
                Value::SimpleString(s) => Some(s),
                _ => None,
            };
            (name, text)
        }
        _ => (TEXT, Some(String::new())),
    }
}

fn user(item: Option<&str>) -> Option<Username> {
    Username::new(item?).ok()
}

fn parsed<T: std::str::FromStr>(item: Option<&str>) -> Option<T> {
    item?.parse().ok()
}

/// Decodes a whole entry whose head is `head`: the event, and the log id
/// and chat items of its origin (`(id, time, client id)`).
pub(super) fn decode(
    head: &Head,
    fields: &mut [Value],
) -> Option<(ClusterEvent, MessageId, Timestamp, u64)> {
    let (field, text) = take_second(fields);
    // The text, if the second field is `name`.
    let text = |name: &[u8]| if field == name { text } else { None };
    let line = std::str::from_utf8(bytes(fields.get(1)?)?).ok()?;
    // Past server, sequence number, kind, and the id or addressee.
    let mut items =
        line.split(' ')
            .skip(if matches!(head.kind, b'v' | b'k' | b'u' | b'a' | b'h') {
                3
            } else {
                4
            });
    let id = head.id;
    let event = match head.kind {
        b'j' => ClusterEvent::Joined {
            user: user(items.next())?,
            id,
        },
        b'l' => ClusterEvent::Left {
            reason: LeaveReason(parsed(items.next())?),
            user: user(items.next())?,
            text: text(TEXT)?,
            id,
        },
        b'c' => return chat(id, &mut items, text(TEXT), &mut user),
        b'v' => ClusterEvent::Moved {
            user: user(items.next())?,
            from: 0,
        },
        b'a' => ClusterEvent::Away {
            since: Timestamp(parsed(items.next())?),
            user: user(items.next())?,
        },
        b'h' => ClusterEvent::Back {
            user: user(items.next())?,
        },
        b'k' => ClusterEvent::Kick {
            user: user(items.next())?,
            text: text(TEXT)?,
        },
        b'u' => ClusterEvent::Undelivered {
            from: user(items.next())?,
            to: user(items.next())?,
            text: text(TEXT)?,
        },
        b'f' => {
            let to = head.addressee?;
            let what = items.next()?;
            let relay = TransferId(parsed(items.next())?);
            let control = match what {
                "o" => TransferControl::Offer {
                    to,
                    relay,
                    size: parsed(items.next())?,
                    from: user(items.next())?,
                    users: items
                        .by_ref()
                        .map(|u| Username::new(u).ok())
                        .collect::<Option<Vec<_>>>()
                        .filter(|u| !u.is_empty())?,
                    name: FileName::new(text(NAME)?).ok()?,
                },
                "a" => TransferControl::Answer {
                    to,
                    relay,
                    accepted: parsed(items.next())?,
                },
                "g" => TransferControl::Gone {
                    to,
                    relay,
                    code: imchat_core::CancelCode(parsed(items.next())?),
                    reason: text(TEXT)?,
                },
                "d" => TransferControl::Delivered {
                    to,
                    relay,
                    receivers: parsed(items.next())?,
                },
                "x" => TransferControl::Dropped {
                    to,
                    relay,
                    code: imchat_core::CancelCode(parsed(items.next())?),
                    reason: text(TEXT)?,
                },
                "c" => TransferControl::Credit {
                    to,
                    relay,
                    offset: parsed(items.next())?,
                },
                _ => return None,
            };
            ClusterEvent::Transfer(control)
        }
        _ => return None,
    };
    if items.next().is_some() {
        return None;
    }
    Some((event, id, Timestamp(0), 0))
}

/// A chat message of id `id` from its head's items after the id, and its
/// text (`None`: not UTF-8).
fn chat<'a>(
    id: MessageId,
    items: &mut impl Iterator<Item = &'a str>,
    text: Option<String>,
    sender: &mut dyn FnMut(Option<&str>) -> Option<Username>,
) -> Option<(ClusterEvent, MessageId, Timestamp, u64)> {
    let time = Timestamp(parsed(items.next())?);
    let client_id = parsed(items.next())?;
    let kind = match items.next()? {
        "0" => ChatKind::Text,
        "1" => ChatKind::Action,
        _ => return None,
    };
    let from = sender(items.next())?;
    let to = match items.next() {
        Some(t) => Some(Username::new(t).ok()?),
        None => None,
    };
    if items.next().is_some() {
        return None;
    }
    let event = ClusterEvent::Chat {
        from,
        to,
        kind,
        text: text?,
        id,
        time,
        client_id,
    };
    Some((event, id, time, client_id))
}

/// The entries of an `XREAD` reply (of one or more streams), in order:
/// each entry's id and fields. Nothing for a reply that timed out.
pub(super) fn read_reply(reply: Value) -> Vec<(Vec<u8>, Vec<Value>)> {
    let lists: Vec<Value> = match reply {
        // [[stream, entries], ...] (RESP2) or {stream: entries} (RESP3).
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, e)| e).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for list in lists {
        out.extend(range_reply(list));
    }
    out
}

/// The entries of an `XRANGE` (or `XREVRANGE`) reply, in its order.
pub(super) fn range_reply(reply: Value) -> Vec<(Vec<u8>, Vec<Value>)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let mut pair = pair.into_iter();
            match (pair.next(), pair.next()) {
                (Some(Value::BulkString(id)), Some(Value::Array(fields))) => Some((id, fields)),
                _ => None,
            }
        })
        .collect()
}
