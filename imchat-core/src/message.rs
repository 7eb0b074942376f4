//! The typed messages of the protocol, one enum per direction, and the
//! validated newtypes they carry.

use std::fmt;
use unicode_normalization::char::is_combining_mark;

pub(crate) use crate::codes::{CancelCode, ErrorCode, LeaveReason, NoticeCode, RefuseCode};
use crate::display::is_hidden_char;
use crate::error::{LengthUnit, NameError};
use crate::limits::{MAX_FILE_NAME_BYTES, MAX_USERNAME_CHARS};

/// The protocol version this crate speaks. A server refuses a `Hello` with
/// another version ([`RefuseCode::VERSION_MISMATCH`]), naming its own, so a
/// version-1 peer learns that it needs version 2.
///
/// Version 2 added: message ids and server timestamps on routed chat,
/// actions (`/me`), a quit text carried to `Left`, an end marker on file
/// lists, the limits a client must respect in `Welcome`, and pushes that
/// their receivers accept (`Accept`, `PushAccepted`) before any data flows.
pub const PROTOCOL_VERSION: u16 = 2;

/// Words no user may take (compared ignoring case; a hub also refuses
/// names with their key, see [`Hub::set_name_key`](crate::Hub::set_name_key)).
/// Windows device names are refused too, because a username becomes a
/// folder name on the client's disk.
pub const RESERVED_USERNAMES: &[&str] = &["server", "all", "everyone", "admin", "system"];

/// Characters Windows does not allow in a file name (besides `/`, `\`,
/// controls): a name holding one is not a single safe component there
/// (`C:x` is drive-relative, `f.txt:ads` names an alternate data stream).
const WINDOWS_RESERVED_CHARS: &[char] = &['<', '>', ':', '"', '|', '?', '*'];

/// A character no file name may hold: a path separator, a control,
/// format or other unsafe or invisible character, or one Windows refuses
/// in names.
fn is_bad_file_name_char(c: char) -> bool {
    c == '/'
        || c == '\\'
        || is_unsafe_char(c)
        || is_hidden_char(c)
        || WINDOWS_RESERVED_CHARS.contains(&c)
}

/// True for a Windows device name, whatever follows its first dot and
/// ignoring case: `CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`
/// and the superscript digits Windows also reserves (`COM¹`), so `con.txt`
/// and `nul.` are device names too.
pub(crate) fn is_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default().trim_end();
    let lower = stem.to_lowercase();
    if matches!(
        lower.as_str(),
        "con" | "prn" | "aux" | "nul" | "conin$" | "conout$"
    ) {
        return true;
    }
    let mut chars = lower.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: Vec<char> = chars.collect();
    (prefix == "com" || prefix == "lpt")
        && matches!(rest[..], [d] if d.is_ascii_digit() || matches!(d, '¹' | '²' | '³'))
}

/// A checked username: 1–32 characters, each a letter, digit or combining
/// mark of any script, `_`, `-` or `.` (a `.` not first, not last), no invisible
/// letters or marks (Hangul fillers, variation selectors), not a reserved
/// word or a Windows device name. Always a safe single folder name. (A
/// server may refuse more: the reference server, a name that starts with
/// a mark or stacks more than 4.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Checks `name` against the username rules.
    ///
    /// # Errors
    ///
    /// The first rule broken, to show the user, who picks another name:
    /// [`NameError::Empty`]; [`NameError::TooLong`] above
    /// [`MAX_USERNAME_CHARS`] characters; [`NameError::BadChar`] for a
    /// character outside the set (or an invisible letter);
    /// [`NameError::LeadingDot`] and [`NameError::TrailingDot`] for a
    /// leading or trailing `.`;
    /// [`NameError::Reserved`] for a reserved word or a Windows device name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let chars = name.chars().count();
        if chars == 0 {
            return Err(NameError::Empty);
        }
        if chars > MAX_USERNAME_CHARS {
            return Err(NameError::TooLong {
                len: chars,
                max: MAX_USERNAME_CHARS,
                unit: LengthUnit::Chars,
            });
        }
        if name.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        for (i, c) in name.chars().enumerate() {
            let ok = is_name_char(c) && (c != '.' || i > 0);
            if !ok {
                return Err(NameError::BadChar { ch: c });
            }
        }
        if let Some(ch) = name.chars().find(|c| is_hidden_char(*c)) {
            // Hangul fillers are letters that show as nothing.
            return Err(NameError::BadChar { ch });
        }
        if name.ends_with('.') {
            return Err(NameError::TrailingDot);
        }
        let key = name.to_lowercase();
        if RESERVED_USERNAMES.contains(&key.as_str()) || is_device_name(&name) {
            return Err(NameError::Reserved { name });
        }
        Ok(Username(name))
    }

    /// The name as the user typed it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The reserved words as names (which [`Username::new`] refuses), for a
    /// hub that folds names further than case to refuse their look-alikes.
    pub(crate) fn reserved() -> impl Iterator<Item = (&'static str, Username)> {
        RESERVED_USERNAMES
            .iter()
            .map(|word| (*word, Username((*word).to_owned())))
    }

    /// The form used for uniqueness: two names with the same key are the same user.
    #[must_use]
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// Whether `c` may be in a username: a letter or digit of any script, a
/// combining mark (many scripts write vowel signs and viramas with them,
/// हिन्दी, தமிழ், and a decomposed `é` is one), `_`, `-` or `.` (a `.` not
/// first or last). A client finding a name in text (a mention) reads a
/// run of them as one name.
#[must_use]
pub fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c) || c == '_' || c == '-' || c == '.'
}

/// The order in which names are listed to people (`Who`, a client's nick
/// list): ignoring case, and with the digits in a name read as a number,
/// so `u2` comes before `u10` (`u1`, `u2`, `u10`, `U11`, `v`), as IRC
/// clients list nicks. Names equal that way (`u01` and `u1`, `Ann` and
/// `ann`) are ordered by their digits as written, then by the names
/// themselves: the order is total and every list is in the same one.
#[must_use]
pub fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (la, lb) = (a.to_lowercase(), b.to_lowercase());
    natural(&la, &lb)
        .then_with(|| la.cmp(&lb))
        .then_with(|| a.cmp(b))
}

/// `a` and `b` compared a character at a time, with each run of ASCII
/// digits compared as the number it writes (its leading zeros aside).
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a, b);
    loop {
        let (Some(ca), Some(cb)) = (a.chars().next(), b.chars().next()) else {
            return a.is_empty().cmp(&b.is_empty()).reverse();
        };
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (na, nb) = (&a[..digits(a)], &b[..digits(b)]);
            let (va, vb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
            let by_value = va.len().cmp(&vb.len()).then_with(|| va.cmp(vb));
            if by_value != Ordering::Equal {
                return by_value;
            }
            (a, b) = (&a[na.len()..], &b[nb.len()..]);
        } else if ca != cb {
            return ca.cmp(&cb);
        } else {
            (a, b) = (&a[ca.len_utf8()..], &b[cb.len_utf8()..]);
        }
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The Braille pattern with no dots: a character that draws as a blank.
const BRAILLE_BLANK: char = '\u{2800}';

/// A checked file name: one path component of 1–255 bytes, no `/`, `\`,
/// NUL, control, bidirectional-override or invisible characters, none of
/// the characters Windows reserves (`<>:"|?*`), not starting with `.` (so
/// never `.` or `..`), not ending with `.` or a blank (a space of any
/// kind, or the blank Braille pattern U+2800), and not a Windows
/// device name (`con.txt`). Safe to join onto a folder path on every system
/// the client builds for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    /// Checks `name` against the file-name rules.
    ///
    /// # Errors
    ///
    /// The first rule broken (a file with such a name cannot be sent or
    /// saved under it): [`NameError::Empty`]; [`NameError::TooLong`] above
    /// [`MAX_FILE_NAME_BYTES`] bytes; [`NameError::LeadingDot`];
    /// [`NameError::BadChar`] for a separator, control, invisible or
    /// Windows-reserved character; [`NameError::TrailingDotOrSpace`];
    /// [`NameError::Reserved`] for a Windows device name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_FILE_NAME_BYTES {
            return Err(NameError::TooLong {
                len: name.len(),
                max: MAX_FILE_NAME_BYTES,
                unit: LengthUnit::Bytes,
            });
        }
        if name.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        if let Some(c) = name.chars().find(|&c| is_bad_file_name_char(c)) {
            return Err(NameError::BadChar { ch: c });
        }
        // Any blank at the end, not only the ASCII space: a name that is
        // or ends with an ideographic or no-break space would show as
        // nothing, or as another file's name.
        if name.ends_with(|c: char| c == '.' || c.is_whitespace() || c == BRAILLE_BLANK) {
            return Err(NameError::TrailingDotOrSpace);
        }
        if is_device_name(&name) {
            return Err(NameError::Reserved { name });
        }
        Ok(FileName(name))
    }

    /// A name for a local file that breaks the rules, to send it under, as
    /// DCC clients do: its leading dots dropped (`.vimrc` is sent as
    /// `vimrc`), each character that is not allowed turned into `_`
    /// (`a"b.txt` as `a_b.txt`), the dots and blanks at its end dropped, cut
    /// to [`MAX_FILE_NAME_BYTES`], and a Windows device name given a `_`
    /// before it (`con.txt` as `_con.txt`). A valid name is kept as it is.
    ///
    /// # Errors
    ///
    /// [`NameError::Empty`] when nothing is left (`...`).
    pub fn sendable(name: &str) -> Result<Self, NameError> {
        if let Ok(valid) = FileName::new(name) {
            return Ok(valid);
        }
        let replaced: String = name
            .trim_start_matches('.')
            .chars()
            .map(|c| if is_bad_file_name_char(c) { '_' } else { c })
            .collect();
        let mut end = replaced.len().min(MAX_FILE_NAME_BYTES);
        while !replaced.is_char_boundary(end) {
            end -= 1;
        }
        let trimmed = replaced[..end]
            .trim_end_matches(|c: char| c == '.' || c.is_whitespace() || c == BRAILLE_BLANK);
        let mut fixed = trimmed.to_string();
        if is_device_name(&fixed) {
            fixed.insert(0, '_');
            if fixed.len() > MAX_FILE_NAME_BYTES {
                // A device name is short: only its extension is cut.
                let mut end = MAX_FILE_NAME_BYTES;
                while !fixed.is_char_boundary(end) {
                    end -= 1;
                }
                fixed.truncate(end);
            }
        }
        FileName::new(fixed)
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for FileName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// True for characters that must never reach a terminal or a file name raw:
/// C0 controls (tab included), DEL, C1 controls, and the bidirectional
/// embedding, override and isolate characters.
pub(crate) fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// Identifies one file transfer on one connection. A client picks the ids of
/// its downloads and pushes with the top bit clear; the server picks the ids
/// of the pushes it relays to a client with the top bit set, so the two never
/// collide on the wire. Shown as `#n` without that bit, they could: a
/// [`ClientSession`](crate::ClientSession) therefore gives each push to it
/// an id of its own counter and uses the server's only on the wire, so that
/// every transfer it reports has its own `#n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u32);

impl TransferId {
    /// The bit that marks a server-chosen id.
    pub const SERVER_BIT: u32 = 0x8000_0000;

    /// True when the server chose this id.
    #[must_use]
    pub fn is_server_chosen(self) -> bool {
        self.0 & Self::SERVER_BIT != 0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0 & !Self::SERVER_BIT)
    }
}

/// The server's id of an entry of its room log: a routed chat message, a
/// join or a leave. One counter for all three, increasing by one per entry
/// (the first is 1) for as long as the server's history lives (its
/// [epoch](ServerMessage::Welcome)). Receivers order and de-duplicate by it;
/// a client that resumes says which it saw last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A wall-clock time: milliseconds since the Unix epoch (1970-01-01T00:00:00Z),
/// as the server's clock read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub fn unix_millis(self) -> u64 {
        self.0
    }
}

/// The secret that lets a client take its session back after its connection
/// broke: 16 random bytes, given in `Welcome`, good for one resume within the
/// grace period. Its `Debug` form hides the bytes, so it never reaches a log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResumeToken(pub [u8; 16]);

impl ResumeToken {
    /// Compares two tokens in time that does not depend on where they
    /// differ, so that timing does not help guessing one.
    #[must_use]
    pub fn matches(&self, other: &ResumeToken) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }

    /// True for the all-zero token: a server that offers no resume sends it.
    #[must_use]
    pub fn is_none(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(..)")
    }
}

/// A password on the wire (the server password, or a username's account
/// password): 1 to [`Secret::MAX_BYTES`] bytes of UTF-8. Its `Debug` form
/// hides it, so it never reaches a log, and [`Secret::matches`] compares
/// in time that does not depend on where two secrets differ.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// The longest secret, in bytes (it travels as a `str8`).
    pub const MAX_BYTES: usize = 255;

    /// `text` as a secret; `None` when it is empty or longer than
    /// [`Secret::MAX_BYTES`] bytes.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Option<Secret> {
        let text = text.into();
        (!text.is_empty() && text.len() <= Self::MAX_BYTES).then_some(Secret(text))
    }

    /// The secret's text, to hash or send; never to show.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `other` in time that depends on their lengths only,
    /// not on where they differ.
    #[must_use]
    pub fn matches(&self, other: &Secret) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut diff = u8::from(a.len() != b.len());
        for i in 0..a.len().max(b.len()) {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= x ^ y;
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The longest target of an operator's request
/// ([`ClientMessage::Operate`]) in bytes: it travels as a `str8`, and no
/// username or address is longer.
pub const MAX_TARGET_BYTES: usize = 255;

/// What an operator asks for ([`ClientMessage::Operate`], or a line of the
/// server's console).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpAction {
    /// Disconnect a user (by name); it may come back.
    Kick,
    /// Refuse a username or an address from now on, and disconnect whoever
    /// online matches.
    Ban,
    /// Lift a ban.
    Unban,
    /// List the bans (the target is ignored).
    Bans,
}

impl OpAction {
    /// Its byte on the wire.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        match self {
            OpAction::Kick => 1,
            OpAction::Ban => 2,
            OpAction::Unban => 3,
            OpAction::Bans => 4,
        }
    }

    /// The action of byte `b`, if any.
    #[must_use]
    pub fn from_byte(b: u8) -> Option<OpAction> {
        Some(match b {
            1 => OpAction::Kick,
            2 => OpAction::Ban,
            3 => OpAction::Unban,
            4 => OpAction::Bans,
            _ => return None,
        })
    }

    /// Its command word: `kick`, `ban`, `unban`, `bans`.
    #[must_use]
    pub fn word(self) -> &'static str {
        match self {
            OpAction::Kick => "kick",
            OpAction::Ban => "ban",
            OpAction::Unban => "unban",
            OpAction::Bans => "bans",
        }
    }
}

/// What a client that reconnects presents in its `Hello` to take its
/// session back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeRequest {
    /// The token of the last `Welcome` it got.
    pub token: ResumeToken,
    /// The newest log id it has seen (0: none).
    pub last_seen: MessageId,
    /// The epoch of that `Welcome`.
    pub epoch: u64,
}

/// A resume succeeded: what the `Welcome` of a resumed session says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resumed {
    /// How many log entries after the client's last seen id are no longer
    /// in the server's log (so cannot be replayed): an upper bound on what
    /// the client missed for good. 0: nothing was lost.
    pub dropped: u64,
}

/// What kind of chat message: plain text, or an action (`/me waves` is
/// shown as `* alice waves`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChatKind {
    /// Plain text.
    #[default]
    Text,
    /// An action, written in the third person.
    Action,
}

/// The limits a client must respect, as the server announced them in
/// [`ServerMessage::Welcome`]. A client that stays within them is never
/// refused or slowed for its rate or sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerLimits {
    /// Largest frame (type byte and body) the server accepts.
    pub max_frame: u32,
    /// Longest chat text, in bytes of UTF-8.
    pub max_text: u32,
    /// Chat messages a client may send in one burst.
    pub rate_burst: u32,
    /// Chat messages per second a client may send, sustained (0: no limit
    /// on messages, bytes or requests).
    pub rate_per_sec: u32,
    /// Bytes of chat text a client may send in one burst.
    pub rate_burst_bytes: u32,
    /// Bytes of chat text per second a client may send, sustained.
    pub rate_bytes_per_sec: u32,
    /// Transfers (downloads plus pushes) a client may run at once.
    pub max_transfers: u32,
    /// Largest file a client may push.
    pub max_push_size: u64,
}

/// A chat message as the server routed it: what every receiver gets, and
/// what a [`ClientSession`](crate::ClientSession) hands on as
/// [`ClientEvent::Chat`](crate::ClientEvent::Chat).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutedChat {
    /// The server's id of the message.
    pub id: MessageId,
    /// When the server routed it.
    pub time: Timestamp,
    /// The sender, as registered.
    pub from: Username,
    /// True when it was sent to this receiver alone.
    pub private: bool,
    /// Text or action (`/me`).
    pub kind: ChatKind,
    /// The text.
    pub text: String,
    /// True when it is history: sent before this receiver joined, replayed
    /// to it on joining with its original id, time and sender.
    pub history: bool,
}

impl RoutedChat {
    /// Where an answer to this message goes, as a bot answers: to its
    /// sender alone when it was private, to everyone when it was said to
    /// everyone (IRC crates call it the response target).
    #[must_use]
    pub fn reply_to(&self) -> Recipient {
        if self.private {
            Recipient::User(self.from.clone())
        } else {
            Recipient::Everyone
        }
    }
}

/// One user of a [`ServerMessage::Who`] answer: its name, and whether it
/// is away.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OnlineUser {
    /// The name, as its user registered it.
    pub name: Username,
    /// `Some` while the user is away: its connection was lost and its
    /// session waits for a resume (a message to it is kept for it until
    /// the grace period ends). The number is how long it has been away,
    /// in whole seconds, as far as the server knows (for a session kept
    /// across a restart of its server: since that restart). `None`: the
    /// user is connected.
    pub away_secs: Option<u64>,
}

impl OnlineUser {
    /// A connected user.
    #[must_use]
    pub fn here(name: Username) -> OnlineUser {
        OnlineUser {
            name,
            away_secs: None,
        }
    }

    /// A user away for `secs` seconds.
    #[must_use]
    pub fn away(name: Username, secs: u64) -> OnlineUser {
        OnlineUser {
            name,
            away_secs: Some(secs),
        }
    }
}

/// A user left: who, why, and the parting text they gave. What every
/// other user gets as [`ServerMessage::Left`], and what a
/// [`ClientSession`](crate::ClientSession) hands on as
/// [`ClientEvent::Left`](crate::ClientEvent::Left).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Departure {
    /// The log id of the leave.
    pub id: MessageId,
    /// When the server noted it.
    pub time: Timestamp,
    /// Who.
    pub user: Username,
    /// Why.
    pub reason: LeaveReason,
    /// The parting text the user gave when quitting (empty if none); for
    /// [`LeaveReason::KICKED`], what the removal says; for the other
    /// reasons the server's own wording ([`Departure::shown_reason`]
    /// chooses what to show).
    pub text: String,
}

impl Departure {
    /// Why the user left, as the others are shown it (not yet made inert):
    /// the parting text of a quit (`None` if it gave none); the text of a
    /// removal ([`LeaveReason::KICKED`]: "kicked by NAME: reason",
    /// "flooding"); else, or when that text is empty, the reason's own words.
    #[must_use]
    pub fn shown_reason(&self) -> Option<&str> {
        if self.reason == LeaveReason::QUIT {
            (!self.text.is_empty()).then_some(self.text.as_str())
        } else if self.reason == LeaveReason::KICKED && !self.text.is_empty() {
            Some(&self.text)
        } else {
            Some(self.reason.describe())
        }
    }
}

/// One event of a [`ServerMessage::Presence`] batch: a join or leave (an
/// entry of the log), or a user going away or coming back (not entries).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PresenceEvent {
    /// Someone joined.
    Joined {
        /// The log id of the join.
        id: MessageId,
        /// When the server noted it.
        time: Timestamp,
        /// Who.
        user: Username,
    },
    /// Someone left.
    Left(Departure),
    /// A member's connection was lost and its session waits for a resume:
    /// it is away (as `Who` lists it) until it is [`Back`](Self::Back) or
    /// leaves. Not an entry of the log: never replayed.
    Away {
        /// The id of the newest log entry when it happened (it is none
        /// itself: it keeps a batch in id order, and is no message seen).
        id: MessageId,
        /// When the server noted it.
        time: Timestamp,
        /// Who.
        user: Username,
    },
    /// A member that was away resumed its session (on this server or,
    /// in a cluster, another): it is here again. Not an entry of the log.
    Back {
        /// As for [`Away`](Self::Away): the newest log entry's id then.
        id: MessageId,
        /// When the server noted it.
        time: Timestamp,
        /// Who.
        user: Username,
    },
}

impl PresenceEvent {
    /// The log id of the join or leave (of an away or back: the newest
    /// entry's id when it happened).
    #[must_use]
    pub fn id(&self) -> MessageId {
        match self {
            PresenceEvent::Joined { id, .. }
            | PresenceEvent::Away { id, .. }
            | PresenceEvent::Back { id, .. } => *id,
            PresenceEvent::Left(d) => d.id,
        }
    }

    /// Whether it is an entry of the log (a join or a leave), which a
    /// client counts as seen, rather than an away or back.
    #[must_use]
    pub fn is_entry(&self) -> bool {
        matches!(self, PresenceEvent::Joined { .. } | PresenceEvent::Left(_))
    }

    /// As a message of its own ([`ServerMessage::Joined`] or
    /// [`ServerMessage::Left`]; an away or back, which has no frame of its
    /// own, as a [`ServerMessage::Presence`] of one event).
    #[must_use]
    pub fn into_message(self) -> ServerMessage {
        match self {
            PresenceEvent::Joined { id, time, user } => ServerMessage::Joined { id, time, user },
            PresenceEvent::Left(d) => ServerMessage::Left(d),
            e @ (PresenceEvent::Away { .. } | PresenceEvent::Back { .. }) => {
                ServerMessage::Presence(vec![e])
            }
        }
    }
}

/// Part or all of the shared-file list: a long list comes in several, and
/// the last part of an answer has `last` set (an empty folder is one empty
/// part with `last` set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileListPart {
    /// The files.
    pub files: Vec<FileEntry>,
    /// True on the final part of the answer: the list is complete.
    pub last: bool,
}

/// Who a chat message or a pushed file is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// Everyone else online.
    Everyone,
    /// One user.
    User(Username),
}

/// Where a file arriving at a client comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A download the client asked for from the shared folder.
    Download,
    /// A file another user pushed.
    Push {
        /// The user who pushed it.
        from: Username,
    },
}

/// One file of the shared folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileEntry {
    /// Its name.
    pub name: FileName,
    /// Its size in bytes.
    pub size: u64,
}

/// A file transfer to a client starts: what it is, how big, from where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileStart {
    /// The transfer id (the client's for a download).
    pub id: TransferId,
    /// The file's name.
    pub name: FileName,
    /// Its whole size in bytes.
    pub size: u64,
    /// First byte that will be sent (non-zero when resuming).
    pub offset: u64,
    /// A download or a push.
    pub origin: Origin,
}

/// One chunk of a file, with the CRC32 of its data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileChunk {
    /// The transfer it belongs to.
    pub id: TransferId,
    /// Where its data starts in the file.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// CRC32 (IEEE) of `data`, as the sender computed it.
    pub crc: u32,
}

impl FileChunk {
    /// A chunk whose CRC is computed from `data`.
    #[must_use]
    pub fn new(id: TransferId, offset: u64, data: Vec<u8>) -> Self {
        let crc = crc32fast::hash(&data);
        FileChunk {
            id,
            offset,
            data,
            crc,
        }
    }

    /// True when the CRC matches the data.
    #[must_use]
    pub fn verify(&self) -> bool {
        crc32fast::hash(&self.data) == self.crc
    }
}

/// The end of a transfer: the CRC32 of the whole file (from byte 0, also when
/// the transfer resumed from an offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileEnd {
    /// The transfer.
    pub id: TransferId,
    /// CRC32 (IEEE) of the whole file.
    pub crc: u32,
}

/// A transfer stopped by either side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileCancel {
    /// The transfer.
    pub id: TransferId,
    /// Why.
    pub code: CancelCode,
    /// Human-readable detail.
    pub reason: String,
}

/// Everything a client sends to the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientMessage {
    /// The handshake: must be the first message, exactly once.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u16,
        /// The name it wants.
        username: Username,
        /// Present when the client reconnects and asks for its session back.
        resume: Option<ResumeRequest>,
    },
    /// A chat message.
    Chat {
        /// The client's id of the message (from 1, increasing, kept across
        /// reconnects; 0: none). The server acknowledges it with
        /// [`ServerMessage::Ack`] and drops a resent duplicate.
        client_id: u64,
        /// Everyone, or one user.
        to: Recipient,
        /// Text or action.
        kind: ChatKind,
        /// The text (may be empty).
        text: String,
    },
    /// Ask who is online.
    Who,
    /// Ask for access to the shared folder (the answer holds the file count).
    FilesAccess,
    /// Ask for the list of shared files.
    ListFiles,
    /// Ask for a shared file, from `offset` on (0 for a new download).
    Download {
        /// Id the client picked (top bit clear).
        id: TransferId,
        /// The shared file.
        name: FileName,
        /// First byte wanted.
        offset: u64,
    },
    /// The receiver of download `id` has stored every byte before
    /// `offset`: the server may send file data up to
    /// [`DOWNLOAD_WINDOW`](crate::DOWNLOAD_WINDOW) bytes past it.
    Ack {
        /// The download.
        id: TransferId,
        /// Bytes of the file stored so far (from byte 0).
        offset: u64,
    },
    /// The receiver takes the push offered to it under the server-chosen
    /// `id` (a `FileStart` of origin push); a `Cancel` declines it.
    Accept {
        /// The push, as the server named it to this client.
        id: TransferId,
    },
    /// Announce a file push; once the server answers
    /// [`ServerMessage::PushAccepted`], chunks and an end follow with the
    /// same id.
    Offer {
        /// Id the client picked (top bit clear).
        id: TransferId,
        /// The file's name.
        name: FileName,
        /// Its size in bytes.
        size: u64,
        /// Everyone else, or one user.
        to: Recipient,
    },
    /// File data of a push.
    Chunk(FileChunk),
    /// The end of a push.
    End(FileEnd),
    /// Stop a transfer (a download or a push).
    Cancel(FileCancel),
    /// Keepalive request; the server answers with the same value.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// Leaving, with a parting text for the others (may be empty).
    Quit {
        /// The parting text.
        reason: String,
    },
    /// The passwords of the connection: sent right before the `Hello`, at
    /// most once, only by a client that has one to give.
    Auth {
        /// The server's password, if the client has it.
        server: Option<Secret>,
        /// The account password of the username the `Hello` asks for.
        account: Option<Secret>,
    },
    /// Protect the joined username with `password` from now on.
    Register {
        /// The account password.
        password: Secret,
    },
    /// Remove the protection of the joined username.
    Unregister,
    /// An operator's request: kick, ban, unban or list bans.
    Operate {
        /// What to do.
        action: OpAction,
        /// A username, or for bans an IP address (may be empty for
        /// `Bans`); at most [`MAX_TARGET_BYTES`] (the encoder cuts a longer
        /// one at a character boundary).
        target: String,
        /// Why (may be empty); shown to whoever is removed, and logged.
        reason: String,
    },
}

/// Everything the server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerMessage {
    /// The handshake succeeded.
    Welcome {
        /// The server's protocol version.
        version: u16,
        /// The name registered.
        username: Username,
        /// The server's welcome text.
        text: String,
        /// The limits this client must respect.
        limits: ServerLimits,
        /// The token to present to resume this session (all zero: the
        /// server offers no resume).
        token: ResumeToken,
        /// The lifetime of the server's history: it changes when history
        /// is lost (a restart without a database).
        epoch: u64,
        /// How long after a lost connection the session can be resumed, in
        /// seconds (0: not at all).
        grace_secs: u32,
        /// The newest log id when this `Welcome` was sent (0: none yet).
        last_id: MessageId,
        /// Set when this `Welcome` resumes a session.
        resumed: Option<Resumed>,
    },
    /// The handshake failed; the server closes the connection.
    Refused {
        /// Why.
        code: RefuseCode,
        /// Detail to show the user.
        reason: String,
        /// The server's protocol version.
        version: u16,
    },
    /// A chat message from another user.
    Chat(RoutedChat),
    /// Someone joined.
    Joined {
        /// The log id of the join.
        id: MessageId,
        /// When the server noted it.
        time: Timestamp,
        /// Who.
        user: Username,
    },
    /// Someone left.
    Left(Departure),
    /// Several joins and leaves, in the order of their ids: how the server
    /// sends presence, so that N users joining a room cost each member a
    /// few frames rather than N. The same as the `Joined` and `Left`
    /// messages of its events, one after another.
    Presence(Vec<PresenceEvent>),
    /// A chat message of this client's was accepted (and, with a history
    /// database, stored) and routed under `id`.
    Ack {
        /// The client's id of the message.
        client_id: u64,
        /// Its log id (0 when a duplicate is acknowledged that the server
        /// no longer remembers the id of).
        id: MessageId,
        /// When the server routed it.
        time: Timestamp,
    },
    /// Who is online (including the asker).
    Who {
        /// The users, sorted by name ignoring case (the reference server:
        /// in [`name_order`]), each marked when it is
        /// away (its connection lost, its session waiting for a resume).
        users: Vec<OnlineUser>,
    },
    /// Access to the shared folder is granted; it holds `count` files.
    FilesAccess {
        /// Number of files.
        count: u64,
    },
    /// Part or all of the shared-file list.
    FileList(FileListPart),
    /// A file transfer to this client starts. For a push it is an offer:
    /// the client answers [`ClientMessage::Accept`] before any data comes,
    /// or a `Cancel` to decline.
    FileStart(FileStart),
    /// File data.
    Chunk(FileChunk),
    /// The end of a transfer.
    End(FileEnd),
    /// A transfer was stopped.
    Cancel(FileCancel),
    /// The receivers of a push of this client's answered: those that
    /// accepted it wait for its data, which may now be sent.
    PushAccepted {
        /// The push's id.
        id: TransferId,
        /// How many users accepted it.
        receivers: u32,
    },
    /// How far the client may send the data of its push `id`: up to byte
    /// `offset` of the file (exclusive), counted from byte 0. The first
    /// comes with [`ServerMessage::PushAccepted`], the next ones as the
    /// slowest receiver acknowledges; it never goes down. A chunk that
    /// would end past it cancels the push (`BAD_CHUNK`).
    PushCredit {
        /// The push's id.
        id: TransferId,
        /// The end of what may be sent, counted from byte 0.
        offset: u64,
    },
    /// A push of this client's reached its receivers.
    PushDone {
        /// The push's id.
        id: TransferId,
        /// How many users received it whole.
        receivers: u32,
    },
    /// Something the client asked for failed; the connection stays.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// The client's id of the chat message refused (0: the error is
        /// not about one).
        client_id: u64,
        /// Detail to show the user.
        text: String,
    },
    /// Keepalive request; the client answers with the same value.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// The server is shutting down and will close the connection.
    Shutdown {
        /// Why.
        reason: String,
    },
    /// The outcome of an account or operator request.
    Notice {
        /// What happened.
        code: NoticeCode,
        /// Detail to show the user.
        text: String,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_listed_in_natural_order_ignoring_case() {
        let mut names = vec![
            "u10", "u2", "U11", "u1", "bob", "Alice", "u1a", "carol", "u01", "x9y10", "x9y9",
            "x10", "ann", "Ann", "_z", "0", "007", "u",
        ];
        names.sort_by(|a, b| super::name_order(a, b));
        assert_eq!(
            names,
            [
                "0", "007", "_z", "Alice", "Ann", "ann", "bob", "carol", "u", "u01", "u1", "u1a",
                "u2", "u10", "U11", "x9y9", "x9y10", "x10"
            ]
        );
        // A total order: equal only for the same name.
        assert_eq!(super::name_order("u1", "u1"), std::cmp::Ordering::Equal);
        assert_ne!(super::name_order("u01", "u1"), std::cmp::Ordering::Equal);
        // Digits beyond any integer type compare all the same.
        let big = "9".repeat(30);
        assert!(super::name_order(&format!("u{big}"), &format!("u1{big}")).is_lt());
    }

    use super::*;

    #[test]
    fn a_name_that_breaks_the_rules_has_a_sendable_one() {
        let sendable = |n: &str| FileName::sendable(n).map(|f| f.as_str().to_owned());
        assert_eq!(sendable("notes.txt").as_deref(), Ok("notes.txt"));
        assert_eq!(sendable(".vimrc").as_deref(), Ok("vimrc"));
        assert_eq!(sendable("..hidden.tar.gz").as_deref(), Ok("hidden.tar.gz"));
        assert_eq!(sendable("a\"b?.txt").as_deref(), Ok("a_b_.txt"));
        assert_eq!(sendable("e\u{1b}[2Jx").as_deref(), Ok("e_[2Jx"));
        assert_eq!(sendable("x\u{202e}txt.exe").as_deref(), Ok("x_txt.exe"));
        assert_eq!(sendable("report. ").as_deref(), Ok("report"));
        assert_eq!(sendable("con.txt").as_deref(), Ok("_con.txt"));
        assert_eq!(sendable("...").err(), Some(NameError::Empty));
        let long = format!(".{}", "é".repeat(200));
        let cut = FileName::sendable(&long).expect("sendable");
        assert!(cut.as_str().len() <= MAX_FILE_NAME_BYTES);
        assert!(cut.as_str().starts_with('é'));
    }

    #[test]
    fn a_reply_goes_where_the_message_came_from() {
        let chat = |private| RoutedChat {
            id: MessageId(7),
            time: Timestamp(0),
            from: Username::new("ann").unwrap(),
            private,
            kind: ChatKind::Text,
            text: "!ping".into(),
            history: false,
        };
        assert_eq!(
            chat(true).reply_to(),
            Recipient::User(Username::new("ann").unwrap())
        );
        assert_eq!(chat(false).reply_to(), Recipient::Everyone);
    }

    #[test]
    fn secrets_match_only_when_equal_whatever_their_lengths() {
        let s = |t: &str| Secret::new(t).unwrap();
        assert!(s("letmein").matches(&s("letmein")));
        assert!(!s("letmein").matches(&s("letmeout")));
        assert!(
            !s("letmein").matches(&s("letmeIn")),
            "same length, one byte off"
        );
        assert!(!s("letmein").matches(&s("letme")), "a prefix");
        assert!(!s("letme").matches(&s("letmein")));
        assert!(!s("a\0").matches(&s("a")), "a padding zero is not nothing");
    }

    #[test]
    fn usernames_accept_letters_of_any_script() {
        for ok in ["alice", "Bob_2", "zoë", "Łukasz", "山田", "a.b-c", "x"] {
            assert!(Username::new(ok).is_ok(), "{ok}");
        }
        // Scripts written with marks that are not letters: a virama, a
        // decomposed accent.
        for ok in ["हिन्दी", "தமிழ்", "Jose\u{301}", "a\u{301}", "สวัสดี"]
        {
            assert!(Username::new(ok).is_ok(), "{ok}");
        }
        // Invisible marks stay out: a variation selector, the grapheme joiner.
        for (bad, ch) in [("alice\u{fe0f}", '\u{fe0f}'), ("al\u{34f}ice", '\u{34f}')] {
            assert_eq!(
                Username::new(bad),
                Err(NameError::BadChar { ch }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn usernames_refuse_bad_shapes() {
        assert_eq!(Username::new(""), Err(NameError::Empty));
        assert_eq!(
            Username::new("a".repeat(33)),
            Err(NameError::TooLong {
                len: 33,
                max: 32,
                unit: LengthUnit::Chars
            })
        );
        // Seventeen letters with their accents as combining marks are 34
        // characters, and the refusal says what it counted.
        let decomposed = "e\u{301}".repeat(17);
        assert_eq!(
            Username::new(decomposed).map_err(|e| e.to_string()),
            Err("name is too long: 34 characters, at most 32 \
                 (an accent written as a combining mark counts as one)"
                .to_owned())
        );
        assert!(Username::new("a".repeat(32)).is_ok());
        assert_eq!(Username::new(".x"), Err(NameError::LeadingDot));
        assert_eq!(Username::new("x."), Err(NameError::TrailingDot));
        assert_eq!(Username::new("a/b"), Err(NameError::BadChar { ch: '/' }));
        assert_eq!(Username::new("a b"), Err(NameError::BadChar { ch: ' ' }));
        assert_eq!(
            Username::new("a\u{0}"),
            Err(NameError::BadChar { ch: '\0' })
        );
        assert_eq!(Username::new(".."), Err(NameError::LeadingDot));
        // Shown so that it can be seen.
        assert_eq!(
            Username::new("a\u{3164}").unwrap_err().to_string(),
            "name contains a character that is not allowed: U+3164"
        );
        assert_eq!(
            Username::new("a/b").unwrap_err().to_string(),
            "name contains a character that is not allowed: '/'"
        );
        assert_eq!(
            Username::new("ADMIN"),
            Err(NameError::Reserved {
                name: "ADMIN".into()
            })
        );
        assert!(Username::new("Everyone").is_err());
        assert!(Username::new("nul").is_err());
    }

    #[test]
    fn username_key_ignores_case() {
        assert_eq!(
            Username::new("Alice").unwrap().key(),
            Username::new("aLICE").unwrap().key()
        );
    }

    #[test]
    fn file_names_refuse_escapes() {
        assert!(FileName::new("cat photo.png").is_ok());
        assert_eq!(FileName::new(""), Err(NameError::Empty));
        assert_eq!(FileName::new(".."), Err(NameError::LeadingDot));
        assert_eq!(FileName::new(".bashrc"), Err(NameError::LeadingDot));
        assert_eq!(FileName::new("../x"), Err(NameError::LeadingDot));
        assert_eq!(FileName::new("a/b"), Err(NameError::BadChar { ch: '/' }));
        assert_eq!(FileName::new("/etc"), Err(NameError::BadChar { ch: '/' }));
        assert_eq!(FileName::new("a\\b"), Err(NameError::BadChar { ch: '\\' }));
        assert_eq!(FileName::new("a\0b"), Err(NameError::BadChar { ch: '\0' }));
        assert_eq!(FileName::new("a\nb"), Err(NameError::BadChar { ch: '\n' }));
        assert_eq!(
            FileName::new("gnp.\u{202e}exe"),
            Err(NameError::BadChar { ch: '\u{202e}' })
        );
        assert!(FileName::new("x".repeat(255)).is_ok());
        assert_eq!(
            FileName::new("x".repeat(256)),
            Err(NameError::TooLong {
                len: 256,
                max: 255,
                unit: LengthUnit::Bytes
            })
        );
        assert_eq!(
            FileName::new("é".repeat(128)).map_err(|e| e.to_string()),
            Err("name is too long: 256 bytes of UTF-8, at most 255".to_owned())
        );
    }

    #[test]
    fn names_unsafe_on_other_systems_are_refused() {
        for bad in [
            "C:x",
            "f.txt:ads",
            "a<b",
            "a>b",
            "a\"b",
            "a|b",
            "a?b",
            "a*b",
        ] {
            assert!(
                matches!(FileName::new(bad), Err(NameError::BadChar { .. })),
                "{bad}"
            );
        }
        // Blanks of every kind: a name of them alone shows as nothing.
        for bad in [
            "x.",
            "x ",
            "photo.jpg.",
            "notes ",
            "\u{3000}",
            "\u{a0}",
            "a\u{2000}",
            "\u{200a}",
            "\u{1680}",
            "\u{2800}",
            "x\u{202f}",
            "x\u{205f}",
        ] {
            assert_eq!(
                FileName::new(bad),
                Err(NameError::TrailingDotOrSpace),
                "{bad}"
            );
        }
        for bad in [
            "con.txt",
            "NUL",
            "nul.tar.gz",
            "COM0",
            "com¹",
            "LPT9.log",
            "aux .txt",
        ] {
            assert!(
                matches!(FileName::new(bad), Err(NameError::Reserved { .. })),
                "{bad}"
            );
        }
        for ok in [
            "console.txt",
            "com10",
            "comma.txt",
            "lpt.txt",
            "a.b.c",
            "x.y z",
        ] {
            assert!(FileName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            FileName::new("zero\u{200b}width"),
            Err(NameError::BadChar { ch: '\u{200b}' })
        );
    }

    #[test]
    fn device_names_and_trailing_dots_are_not_usernames() {
        for bad in ["con.txt", "nul.", "COM0", "com¹", "lpt3", "Con"] {
            assert!(Username::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Username::new("alice."), Err(NameError::TrailingDot));
        assert_eq!(
            Username::new("\u{3164}"),
            Err(NameError::BadChar { ch: '\u{3164}' })
        );
        for ok in ["console", "com10", "a.b", "conny"] {
            assert!(Username::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn chunk_crc_catches_a_flipped_bit() {
        let mut c = FileChunk::new(TransferId(1), 0, b"hello".to_vec());
        assert!(c.verify());
        c.data[2] ^= 0x10;
        assert!(!c.verify());
    }

    #[test]
    fn codes_describe_themselves_and_keep_unknown_values() {
        assert_eq!(RefuseCode::NAME_TAKEN.to_string(), "username already taken");
        assert_eq!(ErrorCode(999).describe(), "unknown code");
        assert_eq!(LeaveReason::QUIT.0, 0);
    }

    #[test]
    fn a_departure_shows_a_quit_s_text_a_removal_s_text_or_else_its_reason() {
        let left = |reason, text: &str| Departure {
            id: MessageId(1),
            time: Timestamp(0),
            user: Username::new("bob").unwrap(),
            reason,
            text: text.into(),
        };
        let shown = |reason, text| left(reason, text).shown_reason().map(str::to_owned);
        assert_eq!(shown(LeaveReason::QUIT, ""), None);
        assert_eq!(shown(LeaveReason::QUIT, "lunch"), Some("lunch".into()));
        assert_eq!(
            shown(LeaveReason::KICKED, "kicked by alice: spam"),
            Some("kicked by alice: spam".into())
        );
        assert_eq!(
            shown(LeaveReason::KICKED, ""),
            Some("disconnected for misbehaving".into())
        );
        // Other reasons' texts are the server's own wording, not meant for
        // the others.
        assert_eq!(
            shown(LeaveReason::LOST, "disconnected: connection lost"),
            Some("connection lost".into())
        );
        assert_eq!(
            shown(LeaveReason::EVICTED, "outbound queue overflow"),
            Some("too slow to read, disconnected".into())
        );
    }
}
