//! Every limit the protocol and the reference server enforce, in one place.

use std::time::Duration;

/// Largest frame (type byte plus body) either side accepts: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;
/// Largest frame a client reads however much more its server announces
/// (`max_frame` in its `Welcome`): 64 MiB, so that a server cannot make a
/// client set aside more memory than that for one frame.
pub const MAX_CLIENT_FRAME: u32 = 64 * 1024 * 1024;
/// Largest frame accepted from a connection that has not completed the handshake: 1 KiB.
pub const DEFAULT_MAX_HANDSHAKE_FRAME: u32 = 1024;
/// Longest chat message text, in bytes of UTF-8: 64 KiB.
pub const DEFAULT_MAX_TEXT: usize = 64 * 1024;
/// Size of the data in one file chunk: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;
/// File data of a download a server sends beyond what the client has
/// acknowledged as stored ([`ClientMessage::Ack`](crate::ClientMessage::Ack)).
/// Part of the protocol, not a setting: it bounds how much file data can
/// sit ahead of a chat line, whatever the client's disk does. 1 MiB keeps
/// a 1 GiB loopback download at full speed (a 4 MiB window was slower
/// here, and let chat wait 15 ms behind four downloads).
pub const DOWNLOAD_WINDOW: u64 = 1024 * 1024;
/// How much newly stored data a client with manual acknowledgements
/// ([`ClientSession::stored`](crate::ClientSession::stored)) holds back
/// before it acknowledges: half the window, so the server always has room
/// to send while the client writes, with a quarter of the acknowledgements
/// 256 KiB chunks would cost one by one.
pub const ACK_STEP: u64 = DOWNLOAD_WINDOW / 2;
/// File data of a push a server relays to a receiver beyond what that
/// receiver has acknowledged as stored, as [`DOWNLOAD_WINDOW`] is for a
/// download: whatever the socket buffers and the network between hold,
/// a chat line to a receiver on a slow link never waits behind more.
pub const PUSH_WINDOW: u64 = DOWNLOAD_WINDOW;
/// How far past what its slowest receiver acknowledged a pusher may send
/// ([`ServerMessage::PushCredit`](crate::ServerMessage::PushCredit)): one
/// [`PUSH_WINDOW`]. Everything a pusher may send is then in its receivers'
/// windows already, so a server holds at most this much of one push's data
/// on its way to the receivers here, without ever waiting to read the
/// pusher; a push to another server of a cluster adds at most as much
/// again on its way there (one window of the cluster's queue per server).
/// A chunk that would end past the credit cancels the push (`BAD_CHUNK`).
pub const PUSH_CREDIT: u64 = PUSH_WINDOW;
/// How long a receiver of a push may hold it: when it has a whole
/// [`PUSH_WINDOW`] unacknowledged (the pusher can send no more) for this
/// long (10 s), or has held the other receivers back for this long in all
/// (its window full while another receiver's had room), it is dropped from
/// the push with `Cancel{TOO_SLOW}`: a push to several goes at its slowest
/// receiver's pace only for a while.
pub const PUSH_RECEIVER_WAIT: Duration = Duration::from_secs(10);
/// Largest file a client may push to others with `/sendfile`: 4 GiB.
pub const DEFAULT_MAX_PUSH_SIZE: u64 = 4 * 1024 * 1024 * 1024;
/// Most users joined at once: 1,000 (connections still handshaking do not count).
pub const DEFAULT_MAX_CLIENTS: usize = 1000;
/// Most connections handshaking at once: 256. Past it the oldest is
/// dropped (a real client sends its username as soon as it connects).
pub const DEFAULT_MAX_PENDING: usize = 256;
/// Most connections (handshaking or joined) from one address: 64; 0 turns
/// the cap off. Past it, the address's oldest handshake is dropped, or the
/// new connection refused when all of them have joined.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 64;
/// Total time a new connection has to complete the handshake: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which the server pings a client: 30 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Time after a ping with nothing heard back before a peer counts as gone: 30 s.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes queued towards one client before it counts as not reading and is dropped: 4 MiB
/// (a burst may go over it, up to eight times, for a moment: the blocking
/// driver's `OVER_CAP_FOR`).
pub const DEFAULT_MAX_OUTBOUND: usize = 4 * 1024 * 1024;
/// Chat messages a client may send in one burst: 100.
pub const DEFAULT_RATE_BURST: u32 = 100;
/// Sustained chat messages per second a client may send: 50.
pub const DEFAULT_RATE_PER_SEC: u32 = 50;
/// Bytes of chat text a client may send in one burst: 1 MiB. With the
/// default queue of 4 MiB, what one sender may legally send at once always
/// fits in every reader's queue ([`Limits::validate`] checks it).
pub const DEFAULT_RATE_BURST_BYTES: u32 = 1024 * 1024;
/// Bytes of chat text per second a client may send, sustained: 1 MiB.
pub const DEFAULT_RATE_BYTES_PER_SEC: u32 = 1024 * 1024;
/// How many clients' rates the connections of one address share: 2. They
/// send chat, together, at most twice one client's rate (messages and
/// bytes, burst and sustained), so that one machine opening many
/// connections, each within its own rate, cannot pour more into the room
/// than a reader's queue holds ([`DEFAULT_MAX_OUTBOUND`]: 2 MiB of bursts
/// and a frame fit in 4 MiB). A classroom behind one address typing and
/// pasting is far below it.
pub const DEFAULT_ADDRESS_RATE_SHARE: u32 = 2;
/// How long a client may keep flooding above the rate before it is disconnected: 10 s.
pub const DEFAULT_FLOOD_TIMEOUT: Duration = Duration::from_secs(10);
/// Transfers (downloads plus pushes, each direction) one client may have running at once: 8.
pub const DEFAULT_MAX_TRANSFERS: usize = 8;
/// Time a transfer may go without progress before the server ends it:
/// 60 s. A download makes progress when its client acknowledges data
/// (the reference client does at least every [`ACK_STEP`], so a download
/// slower than about 8.7 KB/s is ended); a push when its pusher sends a
/// chunk, once its receivers accepted it.
pub const DEFAULT_TRANSFER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time the receivers of a push have to accept or decline it: 120 s. A
/// receiver that has not answered by then counts as declining.
pub const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Once one receiver of a push has accepted it, how long the others still
/// have to answer (at most the offer timeout): 15 s. Then it is sent to
/// those who accepted, and a receiver that has not answered counts as
/// declining: one user away from the keyboard does not hold a push to
/// everyone for the whole offer timeout.
pub const OFFER_AFTER_ACCEPT: Duration = Duration::from_secs(15);
/// Downloads a server streams at once, over all clients: 128. Past it a
/// `Download` is refused with `Cancel{TOO_MANY}`.
pub const DEFAULT_MAX_DOWNLOADS: usize = 128;
/// When the server streams [`DEFAULT_MAX_DOWNLOADS`] (its cap) already, a
/// download whose client acknowledged nothing for this long (10 s, or the
/// idle timeout if shorter) is stalled: a client of an address holding
/// less than its fair share of the slots may take the slot of such a
/// download of the address holding the most, which is cancelled.
pub const DOWNLOAD_STALLED: Duration = Duration::from_secs(10);
/// The port a server listens on and a client connects to when none is
/// given: 12300, the classroom server's.
pub const DEFAULT_PORT: u16 = 12300;
/// Pushes up to this size a client accepts without asking its user: 16 MiB.
pub const DEFAULT_AUTO_ACCEPT_BYTES: u64 = 16 * 1024 * 1024;
/// The window over which a client's pushes accepted without asking are
/// counted: an hour. Within it, one sender's may add up to
/// [`AUTO_ACCEPT_PER_SENDER`] times the auto-accept size, everyone's to
/// [`AUTO_ACCEPT_TOTAL`] times; past that a push is asked about, however
/// small, so that a stream of small pushes cannot fill a disk unasked.
pub const AUTO_ACCEPT_WINDOW: Duration = Duration::from_secs(3600);
/// Auto-accept sizes one sender's pushes accepted unasked may add up to
/// within [`AUTO_ACCEPT_WINDOW`]: 4 (64 MiB at the default size).
pub const AUTO_ACCEPT_PER_SENDER: u64 = 4;
/// Auto-accept sizes all pushes accepted unasked may add up to within
/// [`AUTO_ACCEPT_WINDOW`]: 16 (256 MiB at the default size).
pub const AUTO_ACCEPT_TOTAL: u64 = 16;
/// The least a push accepted unasked counts for against those budgets:
/// 64 KiB, so that empty files (each still a file on disk) run out too.
/// The auto-accept size counts as at least this much.
pub const AUTO_ACCEPT_MIN_CHARGE: u64 = 64 * 1024;
/// Longest username, in characters: 32.
pub const MAX_USERNAME_CHARS: usize = 32;
/// Bytes of a parting text (`Quit`'s reason) the server passes on: a longer
/// one is cut at the last character that fits. Every user is sent it, and
/// the room's history keeps it; a leave is not a message.
pub const MAX_PARTING_TEXT: usize = 512;
/// Longest file name, in bytes of UTF-8: 255.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Bytes a chunk frame holds besides its data: type (1), id (4), offset (8),
/// CRC (4) and data length (4).
pub const CHUNK_FRAME_OVERHEAD: usize = 21;
/// Bytes a chat frame holds besides its text, at most: type (1), message
/// id (8), time (8), the sender's name with its length (1 + 128), the
/// private flag or recipient tag (1), the kind (1), the history flag (1),
/// the text length (4).
pub const CHAT_FRAME_OVERHEAD: usize = 153;
/// The largest valid handshake frame: type (1), version (2), a name of 32
/// four-byte characters with its length (1 + 128), a resume request (16 +
/// 8 + 8).
pub const MAX_HELLO_FRAME: u32 = 164;
/// How long a session whose connection was lost (not quit) waits to be
/// resumed before the others are told the user left: 60 s.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);
/// Chat messages a user joining afresh is shown from before it joined: 50.
pub const DEFAULT_HISTORY_COUNT: usize = 50;
/// Bytes of text the history shown to a user joining afresh holds at most
/// (the newest messages that fit): 256 KiB. Each joiner is sent its own
/// copy, so a room of long messages and many joiners that do not read
/// would otherwise hold `history_count` × `max_text` per connection.
pub const MAX_HISTORY_BYTES: usize = 256 * 1024;
/// How old a message may be to be shown to a user joining afresh: 1 hour.
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(3600);
/// Entries (chat messages, joins, leaves) the server's room log keeps, for
/// history and for resumes: 10,000.
pub const DEFAULT_LOG_ENTRIES: usize = 10_000;
/// Bytes the room log keeps at most (texts and names, plus 64 per entry): 8 MiB.
pub const DEFAULT_LOG_BYTES: usize = 8 * 1024 * 1024;
/// Sessions waiting to be resumed at once (users in their grace period): 256.
/// Past it, the one waiting longest is ended (announced as left) to make room.
pub const DEFAULT_MAX_GHOSTS: usize = 256;
/// Failed resume attempts allowed from one address per
/// [`DEFAULT_RESUME_WINDOW`]: 5.
pub const DEFAULT_RESUME_ATTEMPTS: u32 = 5;
/// The window over which failed resume attempts are counted: 10 s.
pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(10);
/// Resumes one session may have per resume window (`resume_window`, 10 s
/// by default): 10. A further one is refused with `TOO_MANY_ATTEMPTS`
/// until the window is over, and the session waits as before. A client
/// resumes after a lost connection, with a backoff; one that resumes in a
/// loop made every resume cost its server a stored session and every
/// member an away and a back, unbounded by any rate.
pub const SESSION_RESUMES: u32 = 10;
/// Senders a session waiting for its user remembers having told that the
/// user is away (`Notice{AWAY}`, once per sender and absence): 256. Past
/// them a further sender is told at each message, as before there was a
/// once: what a session keeps stays bounded however many names write to
/// a user away (each new name one more).
pub const AWAY_TOLD_SENDERS: usize = 256;

/// New users (joins that are not resumes) one address may bring in per
/// [`DEFAULT_JOIN_WINDOW`]: 60. Each join and its leave are entries of
/// the room's log, which keeps [`DEFAULT_LOG_ENTRIES`]: without a cap one
/// address joining and quitting in a loop pushed every message out of
/// it (the history new users get, and what a resumed user missed) and
/// filled every screen with its joins and leaves.
pub const DEFAULT_JOINS_PER_ADDRESS: u32 = 60;
/// The window new users per address are counted over: a minute.
pub const DEFAULT_JOIN_WINDOW: Duration = Duration::from_secs(60);

/// Failed password attempts (a wrong server password, a wrong account
/// password) counted per address, and per username, within
/// [`DEFAULT_AUTH_WINDOW`] before further attempts are refused with
/// `TOO_MANY_ATTEMPTS`: 5.
pub const DEFAULT_AUTH_ATTEMPTS: u32 = 5;

/// The window failed password attempts are counted over: 60 s.
pub const DEFAULT_AUTH_WINDOW: Duration = Duration::from_secs(60);
/// Account passwords from one address the server checks at once, right
/// or wrong: 4. Past it a `Hello` with one waits its turn (a classroom
/// behind one address logging in at once), checked as the address's
/// checks end, in the order they came; it is refused only past 60
/// waiting. Each check is an Argon2id hash (tens of milliseconds and
/// 19 MiB, two at a time in the reference server): four from one address
/// keep another user's login at most two hashes behind it.
pub const DEFAULT_ACCOUNT_CHECKS_AT_ONCE: u32 = 4;
/// Account passwords from one address the server checks per
/// [`DEFAULT_AUTH_WINDOW`], right or wrong: 60, as many as the users
/// that may join from one address in a minute
/// ([`DEFAULT_JOINS_PER_ADDRESS`]), so a classroom behind one address logs
/// in within the minute, while one address cannot have the server hash
/// more than one password a second on average.
pub const DEFAULT_ACCOUNT_CHECKS_PER_ADDRESS: u32 = 60;
/// Chat messages a client keeps until the server acknowledges them (to
/// resend after a reconnect): 256. Past it the oldest is given up.
pub const DEFAULT_MAX_UNACKED: usize = 256;
/// Bytes of text a client keeps unacknowledged at most: 1 MiB.
pub const DEFAULT_MAX_UNACKED_BYTES: usize = 1024 * 1024;
/// How long a join or leave may wait to be sent together with the ones
/// after it: 100 ms. A message of any other kind to a member sends its
/// waiting ones first, so presence never falls behind chat.
pub const PRESENCE_DELAY: Duration = Duration::from_millis(100);
/// Joins and leaves one `Presence` frame carries at most: 1024. A batch
/// that reaches it is sent at once.
pub const MAX_PRESENCE_EVENTS: usize = 1024;
/// Bytes one `Presence` frame's events may take at most, counting each at
/// its largest encoding: 32 KiB (one leave with a longer text goes alone).
/// A batch that reaches it is sent at once.
pub const MAX_PRESENCE_BYTES: usize = 32 * 1024;

/// Limits that cannot work together. Each variant names the fields and
/// carries the numbers; fix the values and validate again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A field that must be at least 1 is 0.
    #[error("{field} must be at least 1")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// A chunk of `chunk_size` bytes does not fit in a frame.
    #[error("chunk_size {chunk_size} does not fit in max_frame {max_frame} ({CHUNK_FRAME_OVERHEAD} bytes of chunk header)")]
    ChunkTooLarge {
        /// The chunk size.
        chunk_size: usize,
        /// The frame limit.
        max_frame: u32,
    },
    /// A chat message of `max_text` bytes does not fit in a frame.
    #[error("max_text {max_text} does not fit in max_frame {max_frame} ({CHAT_FRAME_OVERHEAD} bytes of chat header)")]
    TextTooLarge {
        /// The text limit.
        max_text: usize,
        /// The frame limit.
        max_frame: u32,
    },
    /// The chat burst in bytes cannot hold one longest message, or does not
    /// fit in a reader's queue beside one frame.
    #[error("rate_burst_bytes {rate_burst_bytes} must be at least max_text ({max_text}) and, with max_frame ({max_frame}), at most max_outbound ({max_outbound})")]
    BurstBytes {
        /// The burst in bytes.
        rate_burst_bytes: u32,
        /// The text limit.
        max_text: usize,
        /// The frame limit.
        max_frame: u32,
        /// The reader's queue.
        max_outbound: usize,
    },
    /// The handshake frame limit is below the largest valid `Hello` or above `max_frame`.
    #[error("max_handshake_frame must be between {MAX_HELLO_FRAME} and max_frame ({max_frame}), not {max_handshake_frame}")]
    HandshakeFrame {
        /// The handshake frame limit.
        max_handshake_frame: u32,
        /// The frame limit.
        max_frame: u32,
    },
}

/// The longest time limit a state machine uses: a longer one (a
/// harness's `Duration::MAX` for "never") is read as this, which an
/// `Instant` can always be moved by.
pub const LONGEST_TIME_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Limits {
    /// These limits with every time limit at most [`LONGEST_TIME_LIMIT`].
    #[must_use]
    pub(crate) fn with_times_capped(mut self) -> Limits {
        for time in [
            &mut self.handshake_timeout,
            &mut self.keepalive_interval,
            &mut self.keepalive_timeout,
            &mut self.flood_timeout,
            &mut self.transfer_idle_timeout,
            &mut self.offer_timeout,
            &mut self.grace,
            &mut self.history_age,
            &mut self.resume_window,
            &mut self.join_window,
            &mut self.auth_window,
        ] {
            *time = (*time).min(LONGEST_TIME_LIMIT);
        }
        self
    }

    /// Checks that the limits can work together: every chunk and every
    /// chat message fits in a frame, a valid handshake fits in the
    /// handshake limit, and counts that must be positive are.
    ///
    /// # Errors
    ///
    /// The first problem found, carrying the numbers:
    /// [`LimitsError::Zero`] for `max_clients`, `chunk_size`,
    /// `max_transfers`, `max_downloads`, `max_text` or `auth_attempts` at 0
    /// (no password could ever be tried), or a rate burst field at 0
    /// while `rate_per_sec` is set; [`LimitsError::BurstBytes`] if
    /// `rate_burst_bytes` cannot hold one longest text or overfills a
    /// reader's queue; [`LimitsError::ChunkTooLarge`] or
    /// [`LimitsError::TextTooLarge`] if a chunk or a longest text does not
    /// fit in `max_frame`; [`LimitsError::HandshakeFrame`] if
    /// `max_handshake_frame` is outside [`MAX_HELLO_FRAME`]`..=max_frame`.
    /// Show it to whoever chose the values, fix them and validate again.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (field, value) in [
            ("max_clients", self.max_clients),
            ("chunk_size", self.chunk_size),
            ("max_transfers", self.max_transfers),
            ("max_downloads", self.max_downloads),
            ("max_text", self.max_text),
            ("auth_attempts", self.auth_attempts as usize),
        ] {
            if value == 0 {
                return Err(LimitsError::Zero { field });
            }
        }
        if self.rate_per_sec > 0 {
            for (field, value) in [
                ("rate_burst", self.rate_burst),
                ("rate_burst_bytes", self.rate_burst_bytes),
                ("rate_bytes_per_sec", self.rate_bytes_per_sec),
            ] {
                if value == 0 {
                    return Err(LimitsError::Zero { field });
                }
            }
            // A burst must hold one longest message, and what one sender may
            // send at once, plus a frame already queued, must fit in every
            // reader's queue: else a legal burst gets readers dropped.
            let burst = self.rate_burst_bytes as usize;
            if burst < self.max_text
                || burst.saturating_add(self.max_frame as usize) > self.max_outbound
            {
                return Err(LimitsError::BurstBytes {
                    rate_burst_bytes: self.rate_burst_bytes,
                    max_text: self.max_text,
                    max_frame: self.max_frame,
                    max_outbound: self.max_outbound,
                });
            }
        }
        self.check_frames()?;
        if self.max_handshake_frame < MAX_HELLO_FRAME || self.max_handshake_frame > self.max_frame {
            return Err(LimitsError::HandshakeFrame {
                max_handshake_frame: self.max_handshake_frame,
                max_frame: self.max_frame,
            });
        }
        Ok(())
    }

    /// The part of [`validate`](Self::validate) a client's limits must
    /// pass too: a chunk and a longest text each fit in `max_frame`.
    pub(crate) fn check_frames(&self) -> Result<(), LimitsError> {
        let frame = self.max_frame as usize;
        if self.chunk_size.saturating_add(CHUNK_FRAME_OVERHEAD) > frame {
            return Err(LimitsError::ChunkTooLarge {
                chunk_size: self.chunk_size,
                max_frame: self.max_frame,
            });
        }
        if self.max_text.saturating_add(CHAT_FRAME_OVERHEAD) > frame {
            return Err(LimitsError::TextTooLarge {
                max_text: self.max_text,
                max_frame: self.max_frame,
            });
        }
        Ok(())
    }
}

/// The limits a [`Hub`](crate::Hub), a [`ClientSession`](crate::ClientSession)
/// and a [`Decoder`](crate::Decoder) enforce. `Limits::default()` gives the
/// documented defaults; every field can be changed before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted after the handshake ([`DEFAULT_MAX_FRAME`]).
    pub max_frame: u32,
    /// Largest frame accepted before the handshake ([`DEFAULT_MAX_HANDSHAKE_FRAME`]).
    pub max_handshake_frame: u32,
    /// Longest chat text in bytes ([`DEFAULT_MAX_TEXT`]).
    pub max_text: usize,
    /// Data bytes per file chunk a sender produces ([`DEFAULT_CHUNK_SIZE`]).
    pub chunk_size: usize,
    /// Largest pushed file ([`DEFAULT_MAX_PUSH_SIZE`]).
    pub max_push_size: u64,
    /// Most users joined at once ([`DEFAULT_MAX_CLIENTS`]).
    pub max_clients: usize,
    /// Most connections handshaking at once ([`DEFAULT_MAX_PENDING`]); 0: no cap.
    pub max_pending: usize,
    /// Most connections from one address ([`DEFAULT_MAX_PER_ADDRESS`]); 0: no cap.
    /// Here and in every cap per address an IPv6 /64 network is one address
    /// ([`address_key`](crate::address_key)).
    pub max_per_address: usize,
    /// Total time allowed for the handshake ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// Silence before a keepalive ping ([`DEFAULT_KEEPALIVE_INTERVAL`]).
    pub keepalive_interval: Duration,
    /// Time to answer a ping ([`DEFAULT_KEEPALIVE_TIMEOUT`]).
    pub keepalive_timeout: Duration,
    /// Outbound queue cap per client in bytes ([`DEFAULT_MAX_OUTBOUND`]).
    pub max_outbound: usize,
    /// Chat burst size ([`DEFAULT_RATE_BURST`]).
    pub rate_burst: u32,
    /// Sustained chat rate per second ([`DEFAULT_RATE_PER_SEC`]); 0 turns the
    /// rate limit off (messages, bytes and requests).
    pub rate_per_sec: u32,
    /// Chat text bytes in one burst ([`DEFAULT_RATE_BURST_BYTES`]).
    pub rate_burst_bytes: u32,
    /// Sustained chat text bytes per second ([`DEFAULT_RATE_BYTES_PER_SEC`]).
    pub rate_bytes_per_sec: u32,
    /// Continuous flooding tolerated before disconnecting ([`DEFAULT_FLOOD_TIMEOUT`]).
    pub flood_timeout: Duration,
    /// The connections of one address together send chat at most this
    /// many times one client's rate ([`DEFAULT_ADDRESS_RATE_SHARE`]); over
    /// it they are all read more slowly (save for the frames of their
    /// transfers, see [`Hub::is_free`](crate::Hub::is_free)), and one that
    /// keeps sending as fast as it is read for
    /// [`flood_timeout`](Limits::flood_timeout) is disconnected as a flood
    /// (one that sends now and then is only slowed). 0: no cap per address
    /// (each connection keeps its own rate).
    pub address_rate_share: u32,
    /// Concurrent transfers per client ([`DEFAULT_MAX_TRANSFERS`]).
    pub max_transfers: usize,
    /// Downloads streamed at once over all clients ([`DEFAULT_MAX_DOWNLOADS`]).
    pub max_downloads: usize,
    /// Time a transfer may make no progress before it is ended
    /// ([`DEFAULT_TRANSFER_IDLE_TIMEOUT`]).
    pub transfer_idle_timeout: Duration,
    /// Time the receivers of a push have to accept it ([`DEFAULT_OFFER_TIMEOUT`]).
    pub offer_timeout: Duration,
    /// How long a lost session may be resumed ([`DEFAULT_GRACE`]); zero:
    /// a lost connection leaves at once. Resume also needs a token source
    /// ([`Hub::set_token_source`](crate::Hub::set_token_source)).
    pub grace: Duration,
    /// History shown to a user joining afresh: at most this many chat
    /// messages ([`DEFAULT_HISTORY_COUNT`]); 0: none.
    pub history_count: usize,
    /// ... and none older than this ([`DEFAULT_HISTORY_AGE`]); zero: none.
    pub history_age: Duration,
    /// Entries the room log keeps ([`DEFAULT_LOG_ENTRIES`]).
    pub log_entries: usize,
    /// Bytes the room log keeps ([`DEFAULT_LOG_BYTES`]).
    pub log_bytes: usize,
    /// Sessions in their grace period at once ([`DEFAULT_MAX_GHOSTS`]);
    /// past it the oldest waiting session of the address with the most
    /// waiting sessions ends.
    pub max_ghosts: usize,
    /// Failed resume attempts per address per `resume_window`
    /// ([`DEFAULT_RESUME_ATTEMPTS`]).
    pub resume_attempts: u32,
    /// The window failed resume attempts are counted over, and the resumes
    /// of one session ([`SESSION_RESUMES`]) too ([`DEFAULT_RESUME_WINDOW`]).
    /// Zero: no resume of a session is refused for how often it resumed.
    pub resume_window: Duration,
    /// New users (joins, not resumes) from one address per `join_window`
    /// ([`DEFAULT_JOINS_PER_ADDRESS`]); past it a `Hello` is refused with
    /// `SERVER_FULL` until the window is over. 0: no cap.
    pub joins_per_address: u32,
    /// The window new users per address are counted over ([`DEFAULT_JOIN_WINDOW`]).
    pub join_window: Duration,
    /// Failed password attempts per address per `auth_window`
    /// ([`DEFAULT_AUTH_ATTEMPTS`]); a username takes ten times as many,
    /// from all addresses together. At least 1: at 0 every password,
    /// the right one too, would be refused.
    pub auth_attempts: u32,
    /// The window failed password attempts are counted over ([`DEFAULT_AUTH_WINDOW`]),
    /// and the account checks per address.
    pub auth_window: Duration,
    /// Account passwords from one address checked at once, whatever
    /// their outcome ([`DEFAULT_ACCOUNT_CHECKS_AT_ONCE`]); 0: no cap.
    pub account_checks_at_once: u32,
    /// Account passwords from one address checked per `auth_window`,
    /// whatever their outcome ([`DEFAULT_ACCOUNT_CHECKS_PER_ADDRESS`]); 0: no cap.
    pub account_checks_per_address: u32,
    /// Chat messages a client keeps until acknowledged ([`DEFAULT_MAX_UNACKED`]).
    pub max_unacked: usize,
    /// Bytes of text a client keeps until acknowledged ([`DEFAULT_MAX_UNACKED_BYTES`]).
    pub max_unacked_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_handshake_frame: DEFAULT_MAX_HANDSHAKE_FRAME,
            max_text: DEFAULT_MAX_TEXT,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_push_size: DEFAULT_MAX_PUSH_SIZE,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pending: DEFAULT_MAX_PENDING,
            max_per_address: DEFAULT_MAX_PER_ADDRESS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            rate_burst: DEFAULT_RATE_BURST,
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_burst_bytes: DEFAULT_RATE_BURST_BYTES,
            rate_bytes_per_sec: DEFAULT_RATE_BYTES_PER_SEC,
            flood_timeout: DEFAULT_FLOOD_TIMEOUT,
            address_rate_share: DEFAULT_ADDRESS_RATE_SHARE,
            max_downloads: DEFAULT_MAX_DOWNLOADS,
            transfer_idle_timeout: DEFAULT_TRANSFER_IDLE_TIMEOUT,
            offer_timeout: DEFAULT_OFFER_TIMEOUT,
            max_transfers: DEFAULT_MAX_TRANSFERS,
            grace: DEFAULT_GRACE,
            history_count: DEFAULT_HISTORY_COUNT,
            history_age: DEFAULT_HISTORY_AGE,
            log_entries: DEFAULT_LOG_ENTRIES,
            log_bytes: DEFAULT_LOG_BYTES,
            max_ghosts: DEFAULT_MAX_GHOSTS,
            resume_attempts: DEFAULT_RESUME_ATTEMPTS,
            resume_window: DEFAULT_RESUME_WINDOW,
            joins_per_address: DEFAULT_JOINS_PER_ADDRESS,
            join_window: DEFAULT_JOIN_WINDOW,
            auth_attempts: DEFAULT_AUTH_ATTEMPTS,
            auth_window: DEFAULT_AUTH_WINDOW,
            account_checks_at_once: DEFAULT_ACCOUNT_CHECKS_AT_ONCE,
            account_checks_per_address: DEFAULT_ACCOUNT_CHECKS_PER_ADDRESS,
            max_unacked: DEFAULT_MAX_UNACKED,
            max_unacked_bytes: DEFAULT_MAX_UNACKED_BYTES,
        }
    }
}

impl From<&Limits> for crate::ServerLimits {
    /// What a server with `limits` announces in its `Welcome`.
    fn from(l: &Limits) -> Self {
        crate::ServerLimits {
            max_frame: l.max_frame,
            max_text: u32::try_from(l.max_text).unwrap_or(u32::MAX),
            rate_burst: l.rate_burst,
            rate_per_sec: l.rate_per_sec,
            rate_burst_bytes: l.rate_burst_bytes,
            rate_bytes_per_sec: l.rate_bytes_per_sec,
            max_transfers: u32::try_from(l.max_transfers).unwrap_or(u32::MAX),
            max_push_size: l.max_push_size,
        }
    }
}

impl Default for crate::ServerLimits {
    /// What a server with [`Limits::default()`] announces: for a test peer
    /// or a fake server of a harness to welcome clients with.
    fn default() -> Self {
        Self::from(&Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A harness's fake server announces what a real one with the same
    /// limits does.
    #[test]
    fn the_announced_limits_are_the_hubs() {
        let hub = crate::Hub::new(Limits::default(), "");
        assert_eq!(crate::ServerLimits::default(), hub.server_limits());
        let l = Limits {
            max_text: 10,
            rate_per_sec: 0,
            ..Limits::default()
        };
        let announced = crate::ServerLimits::from(&l);
        assert_eq!((announced.max_text, announced.rate_per_sec), (10, 0));
        assert_eq!(announced, crate::Hub::new(l, "").server_limits());
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        let d = Limits::default();
        let cases = [
            (
                Limits {
                    max_clients: 0,
                    ..d.clone()
                },
                LimitsError::Zero {
                    field: "max_clients",
                },
            ),
            (
                Limits {
                    rate_burst: 0,
                    ..d.clone()
                },
                LimitsError::Zero {
                    field: "rate_burst",
                },
            ),
            (
                Limits {
                    auth_attempts: 0,
                    ..d.clone()
                },
                LimitsError::Zero {
                    field: "auth_attempts",
                },
            ),
            (
                Limits {
                    max_outbound: 1 << 20,
                    ..d.clone()
                },
                LimitsError::BurstBytes {
                    rate_burst_bytes: 1 << 20,
                    max_text: 1 << 16,
                    max_frame: 1 << 20,
                    max_outbound: 1 << 20,
                },
            ),
            (
                Limits {
                    rate_burst_bytes: 1000,
                    ..d.clone()
                },
                LimitsError::BurstBytes {
                    rate_burst_bytes: 1000,
                    max_text: 1 << 16,
                    max_frame: 1 << 20,
                    max_outbound: 4 << 20,
                },
            ),
            (
                Limits {
                    chunk_size: 1 << 20,
                    ..d.clone()
                },
                LimitsError::ChunkTooLarge {
                    chunk_size: 1 << 20,
                    max_frame: 1 << 20,
                },
            ),
            (
                Limits {
                    max_text: (1 << 20) - 134,
                    ..d.clone()
                },
                LimitsError::TextTooLarge {
                    max_text: (1 << 20) - 134,
                    max_frame: 1 << 20,
                },
            ),
            (
                Limits {
                    max_handshake_frame: 131,
                    ..d.clone()
                },
                LimitsError::HandshakeFrame {
                    max_handshake_frame: 131,
                    max_frame: 1 << 20,
                },
            ),
        ];
        for (limits, want) in cases {
            assert_eq!(limits.validate(), Err(want));
        }
        // The exact edges are accepted.
        let edge = Limits {
            chunk_size: (1 << 20) - CHUNK_FRAME_OVERHEAD,
            max_text: (1 << 20) - CHAT_FRAME_OVERHEAD,
            max_handshake_frame: MAX_HELLO_FRAME,
            rate_per_sec: 0,
            rate_burst: 0,
            ..d
        };
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn the_overheads_match_the_encoder() {
        use crate::{Encode, FileChunk, Recipient, ServerMessage, TransferId, Username};
        let name = Username::new("\u{10348}".repeat(32)).unwrap();
        let chat = ServerMessage::Chat(crate::RoutedChat {
            id: crate::MessageId(u64::MAX),
            time: crate::Timestamp(u64::MAX),
            from: name.clone(),
            private: true,
            kind: crate::ChatKind::Action,
            text: String::new(),
            history: true,
        });
        assert_eq!(
            chat.to_frame().len() - crate::HEADER_LEN,
            CHAT_FRAME_OVERHEAD
        );
        let up = crate::ClientMessage::Chat {
            client_id: u64::MAX,
            to: Recipient::User(name.clone()),
            kind: crate::ChatKind::Action,
            text: String::new(),
        };
        // PROTOCOL.md section 8 gives this figure.
        assert_eq!(up.to_frame().len() - crate::HEADER_LEN, 144);
        let hello = crate::ClientMessage::Hello {
            version: crate::PROTOCOL_VERSION,
            username: name,
            resume: Some(crate::ResumeRequest {
                token: crate::ResumeToken([0xff; 16]),
                last_seen: crate::MessageId(u64::MAX),
                epoch: u64::MAX,
            }),
        };
        assert_eq!(
            hello.to_frame().len() - crate::HEADER_LEN,
            MAX_HELLO_FRAME as usize
        );
        let chunk = ServerMessage::Chunk(FileChunk::new(TransferId(1), 0, vec![]));
        assert_eq!(
            chunk.to_frame().len() - crate::HEADER_LEN,
            CHUNK_FRAME_OVERHEAD
        );
    }
}
