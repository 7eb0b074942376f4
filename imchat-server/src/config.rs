//! Turning the command line into the server's settings: the limits and the
//! choice of shared folder.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use imchat_core::{
    Limits, LimitsError, DEFAULT_ADDRESS_RATE_SHARE, DEFAULT_AUTH_ATTEMPTS, DEFAULT_AUTH_WINDOW,
    DEFAULT_CHUNK_SIZE, DEFAULT_FLOOD_TIMEOUT, DEFAULT_GRACE, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HISTORY_AGE, DEFAULT_HISTORY_COUNT, DEFAULT_JOINS_PER_ADDRESS,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_DOWNLOADS, DEFAULT_MAX_FRAME, DEFAULT_MAX_HANDSHAKE_FRAME, DEFAULT_MAX_OUTBOUND,
    DEFAULT_MAX_PENDING, DEFAULT_MAX_PER_ADDRESS, DEFAULT_MAX_PUSH_SIZE, DEFAULT_MAX_TEXT,
    DEFAULT_MAX_TRANSFERS, DEFAULT_OFFER_TIMEOUT, DEFAULT_RATE_BURST, DEFAULT_RATE_BURST_BYTES,
    DEFAULT_RATE_BYTES_PER_SEC, DEFAULT_RATE_PER_SEC, DEFAULT_TRANSFER_IDLE_TIMEOUT,
};

/// Longest timeout accepted (a year): later instants could overflow the clock.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// One flag for every field of [`Limits`], each defaulting to the library's default.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Most users joined at once (connections still sending their username do not count).
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS)]
    max_clients: usize,

    /// Most connections waiting to send their username; past it the oldest is dropped (0 = no cap).
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_MAX_PENDING)]
    max_pending: usize,

    /// Most connections from one IP address (an IPv6 /64 counts as one; 0 = no cap); past it
    /// that address's oldest connection still without a username is dropped, or the new one
    /// refused.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_MAX_PER_ADDRESS)]
    max_per_address: usize,

    /// Most new users (joins, not resumes) from one IP address in a minute
    /// (0 = no cap); past it a join is refused until the minute is over.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_JOINS_PER_ADDRESS)]
    max_joins_per_address: u32,

    /// Longest chat message, in bytes of UTF-8 (longer ones are refused)
    ///
    /// At most --max-frame-bytes less 153 (a chat frame's header) and at
    /// most --rate-burst-bytes.
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_MAX_TEXT, value_parser = size::<usize>)]
    max_message_bytes: usize,

    /// Largest frame accepted from a client that has joined
    ///
    /// At least --chunk-bytes plus 21 and --max-message-bytes plus 153 (the
    /// headers of a chunk and of a chat frame).
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME, value_parser = size::<u32>)]
    max_frame_bytes: u32,

    /// Largest frame accepted before the client has set its username
    ///
    /// From 164 (the largest valid hello) to --max-frame-bytes.
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_MAX_HANDSHAKE_FRAME, value_parser = size::<u32>)]
    max_handshake_frame_bytes: u32,

    /// File data per chunk the server sends.
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_SIZE, value_parser = size::<usize>)]
    chunk_bytes: usize,

    /// Largest file a client may push to others (/sendfile).
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_MAX_PUSH_SIZE, value_parser = size::<u64>)]
    max_push_bytes: u64,

    /// Time a new connection has to send a valid username.
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout_secs: f64,

    /// Silence after which the server pings a client.
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_KEEPALIVE_INTERVAL.as_secs_f64())]
    keepalive_secs: f64,

    /// Time a pinged client has to answer before it counts as gone.
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_KEEPALIVE_TIMEOUT.as_secs_f64())]
    keepalive_timeout_secs: f64,

    /// Bytes of messages queued for one client before it counts as not reading and is dropped
    /// (a burst may go up to 8 times over for at most 2 s).
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_MAX_OUTBOUND, value_parser = size::<usize>)]
    max_queue_bytes: usize,

    /// Chat messages a client may send in one burst.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_RATE_BURST)]
    rate_burst: u32,

    /// Sustained chat messages per second per client (faster senders are read later); 0 = no limit.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_RATE_PER_SEC)]
    rate_per_sec: u32,

    /// Bytes of chat text a client may send in one burst (with --max-frame-bytes,
    /// at most --max-queue-bytes: what one sender may send at once must fit in
    /// every reader's queue).
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_RATE_BURST_BYTES, value_parser = size::<u32>)]
    rate_burst_bytes: u32,

    /// Sustained bytes of chat text per second per client.
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = DEFAULT_RATE_BYTES_PER_SEC, value_parser = size::<u32>)]
    rate_bytes_per_sec: u32,

    /// How long a client may keep sending above the rate before it is disconnected.
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_FLOOD_TIMEOUT.as_secs_f64())]
    flood_timeout_secs: f64,

    /// The connections of one IP address (an IPv6 /64) together send chat at most N times
    /// one client's rate (over it they are all read later, their file transfers excepted, and
    /// one that keeps sending as fast as it is read is cut off after the flood timeout; 0 =
    /// each keeps its own rate only).
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_ADDRESS_RATE_SHARE)]
    address_rate_share: u32,

    /// File transfers (downloads plus pushes) one client may have running at once.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_MAX_TRANSFERS)]
    max_transfers: usize,

    /// Downloads the server streams at once, over all clients (one thread each);
    /// past it a download is refused as "too many transfers", naming the cap.
    /// The connections from one address may hold three quarters of them.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_MAX_DOWNLOADS)]
    max_downloads: usize,

    /// Time a transfer may go without progress before it is cancelled: a download
    /// whose client acknowledges less than a chunk more, a push whose sender sends nothing.
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_TRANSFER_IDLE_TIMEOUT.as_secs_f64())]
    transfer_idle_secs: f64,

    /// Time the receivers of a push have to accept or decline it (no answer: declined);
    /// once one accepted, the others have 15 s more at most.
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_OFFER_TIMEOUT.as_secs_f64())]
    offer_secs: f64,

    /// How long a user whose connection broke (not quit) may come back and
    /// take its session back before the others are told it left (0: leave at once).
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_GRACE.as_secs_f64())]
    grace_secs: f64,

    /// Chat messages a user joining afresh is shown from before it joined (0: none;
    /// 256 KiB of text at most).
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_HISTORY_COUNT)]
    history_count: usize,

    /// Only messages younger than this are shown as history (0: none).
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_HISTORY_AGE.as_secs_f64())]
    history_age_secs: f64,

    /// Wrong passwords (server or account) from one address (ten times as
    /// many for one username, from all addresses) before further tries are
    /// refused for --auth-window-secs (at least 1).
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = DEFAULT_AUTH_ATTEMPTS)]
    auth_attempts: u32,

    /// The window wrong passwords are counted over.
    #[arg(long, hide_short_help = true, value_name = "SECS", default_value_t = DEFAULT_AUTH_WINDOW.as_secs_f64())]
    auth_window_secs: f64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        let l = Limits::default();
        LimitArgs {
            max_clients: l.max_clients,
            max_pending: l.max_pending,
            max_per_address: l.max_per_address,
            max_joins_per_address: l.joins_per_address,
            max_message_bytes: l.max_text,
            max_frame_bytes: l.max_frame,
            max_handshake_frame_bytes: l.max_handshake_frame,
            chunk_bytes: l.chunk_size,
            max_push_bytes: l.max_push_size,
            handshake_timeout_secs: l.handshake_timeout.as_secs_f64(),
            keepalive_secs: l.keepalive_interval.as_secs_f64(),
            keepalive_timeout_secs: l.keepalive_timeout.as_secs_f64(),
            max_queue_bytes: l.max_outbound,
            rate_burst: l.rate_burst,
            rate_per_sec: l.rate_per_sec,
            rate_burst_bytes: l.rate_burst_bytes,
            rate_bytes_per_sec: l.rate_bytes_per_sec,
            flood_timeout_secs: l.flood_timeout.as_secs_f64(),
            address_rate_share: l.address_rate_share,
            max_transfers: l.max_transfers,
            max_downloads: l.max_downloads,
            transfer_idle_secs: l.transfer_idle_timeout.as_secs_f64(),
            offer_secs: l.offer_timeout.as_secs_f64(),
            grace_secs: l.grace.as_secs_f64(),
            history_count: l.history_count,
            history_age_secs: l.history_age.as_secs_f64(),
            auth_attempts: l.auth_attempts,
            auth_window_secs: l.auth_window.as_secs_f64(),
        }
    }
}

/// A size in bytes, with an optional unit: `K`, `M`, `G`, `T` (powers of
/// 1,024; `KiB`, `MB`… and a trailing `B` are accepted too): `4G`, `512M`,
/// `1.5G`, `65536`. The parsing is the parse-size crate's, as in the client.
pub fn size<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    if !text.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "'{text}' is not a size (a number, optionally with K, M, G or T)"
        ));
    }
    let bytes = parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => format!("'{text}' is too large"),
            _ => format!("'{text}': unknown unit (use K, M, G or T)"),
        })?;
    T::try_from(bytes).map_err(|_| format!("'{text}' is too large"))
}

fn secs(flag: &str, value: f64) -> Result<Duration, String> {
    if !(value > 0.0 && value <= MAX_SECS) {
        return Err(format!(
            "--{flag} must be more than 0 and at most {MAX_SECS} seconds, not {value}"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Like [`secs`], for a setting where 0 turns something off (and the
/// error says 0 is allowed).
fn secs_or_off(flag: &str, value: f64) -> Result<Duration, String> {
    if value == 0.0 {
        Ok(Duration::ZERO)
    } else {
        secs(flag, value).map_err(|_| {
            format!("--{flag} must be from 0 (off) to {MAX_SECS} seconds, not {value}")
        })
    }
}

impl LimitArgs {
    /// Settings that work but are probably a mistake, one line each.
    pub fn warnings(limits: &Limits) -> Vec<String> {
        let mut out = Vec::new();
        if limits.max_outbound < limits.max_frame as usize {
            out.push(format!(
                "--max-queue-bytes {} is below --max-frame-bytes {}: one large message can get a client dropped",
                limits.max_outbound, limits.max_frame
            ));
        }
        out
    }

    /// The limits, or why they cannot work together (one line for the user,
    /// naming the flags).
    pub fn to_limits(&self) -> Result<Limits, String> {
        let a = self;
        let limits = Limits {
            max_frame: a.max_frame_bytes,
            max_handshake_frame: a.max_handshake_frame_bytes,
            max_text: a.max_message_bytes,
            chunk_size: a.chunk_bytes,
            max_push_size: a.max_push_bytes,
            max_clients: a.max_clients,
            max_pending: a.max_pending,
            max_per_address: a.max_per_address,
            joins_per_address: a.max_joins_per_address,
            handshake_timeout: secs("handshake-timeout-secs", a.handshake_timeout_secs)?,
            keepalive_interval: secs("keepalive-secs", a.keepalive_secs)?,
            keepalive_timeout: secs("keepalive-timeout-secs", a.keepalive_timeout_secs)?,
            max_outbound: a.max_queue_bytes,
            rate_burst: a.rate_burst,
            rate_per_sec: a.rate_per_sec,
            rate_burst_bytes: a.rate_burst_bytes,
            rate_bytes_per_sec: a.rate_bytes_per_sec,
            flood_timeout: secs("flood-timeout-secs", a.flood_timeout_secs)?,
            address_rate_share: a.address_rate_share,
            max_transfers: a.max_transfers,
            max_downloads: a.max_downloads,
            transfer_idle_timeout: secs("transfer-idle-secs", a.transfer_idle_secs)?,
            offer_timeout: secs("offer-secs", a.offer_secs)?,
            grace: secs_or_off("grace-secs", a.grace_secs)?,
            history_count: a.history_count,
            history_age: secs_or_off("history-age-secs", a.history_age_secs)?,
            auth_attempts: a.auth_attempts,
            auth_window: secs("auth-window-secs", a.auth_window_secs)?,
            ..Limits::default()
        };
        limits.validate().map_err(|e| flag_words(&e))?;
        Ok(limits)
    }
}

/// The library's limits error in the words of the command line.
fn flag_words(e: &LimitsError) -> String {
    let flag = |field: &str| match field {
        "max_clients" => "--max-clients",
        "chunk_size" => "--chunk-bytes",
        "max_transfers" => "--max-transfers",
        "max_downloads" => "--max-downloads",
        "max_text" => "--max-message-bytes",
        "rate_burst" => "--rate-burst",
        "rate_burst_bytes" => "--rate-burst-bytes",
        "rate_bytes_per_sec" => "--rate-bytes-per-sec",
        "auth_attempts" => "--auth-attempts",
        _ => "a limit",
    };
    match e {
        LimitsError::Zero { field: "rate_burst" } => {
            "--rate-burst must be at least 1 (or turn the limit off with --rate-per-sec 0)".into()
        }
        LimitsError::Zero { field } => format!("{} must be at least 1", flag(field)),
        LimitsError::ChunkTooLarge {
            chunk_size,
            max_frame,
        } => format!(
            "--chunk-bytes {chunk_size} does not fit in --max-frame-bytes {max_frame} ({} bytes of chunk header)",
            imchat_core::CHUNK_FRAME_OVERHEAD
        ),
        LimitsError::TextTooLarge {
            max_text,
            max_frame,
        } => format!(
            "--max-message-bytes {max_text} does not fit in --max-frame-bytes {max_frame} (allow {} bytes for the header)",
            imchat_core::CHAT_FRAME_OVERHEAD
        ),
        LimitsError::HandshakeFrame {
            max_handshake_frame,
            max_frame,
        } => format!(
            "--max-handshake-frame-bytes must be between {} and --max-frame-bytes ({max_frame}), not {max_handshake_frame}",
            imchat_core::MAX_HELLO_FRAME
        ),
        LimitsError::BurstBytes {
            rate_burst_bytes,
            max_text,
            max_frame,
            max_outbound,
        } => format!(
            "--rate-burst-bytes {rate_burst_bytes} must be at least --max-message-bytes ({max_text}), \
             and with --max-frame-bytes ({max_frame}) at most --max-queue-bytes ({max_outbound}): \
             what one sender may send at once must fit in every reader's queue"
        ),
        other => other.to_string(),
    }
}

/// Where the shared folder's path came from (printed at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `--shared-dir` flag.
    Flag,
    /// The `SERVERSHAREDFILES` environment variable.
    Env,
    /// The `SERVER_SHARED_FILES` environment variable.
    EnvUnderscored,
    /// `./SharedFiles`.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "--shared-dir",
            Source::Env => "SERVERSHAREDFILES",
            Source::EnvUnderscored => "SERVER_SHARED_FILES",
            Source::Default => "default",
        })
    }
}

/// The shared folder's path and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDirChoice {
    pub path: PathBuf,
    pub source: Source,
}

impl SharedDirChoice {
    /// The flag, else `SERVERSHAREDFILES`, else `SERVER_SHARED_FILES`, else
    /// `./SharedFiles`. An empty variable counts as unset.
    pub fn pick(flag: Option<PathBuf>, env: impl Fn(&str) -> Option<OsString>) -> Self {
        if let Some(path) = flag {
            return SharedDirChoice {
                path,
                source: Source::Flag,
            };
        }
        for (key, source) in [
            ("SERVERSHAREDFILES", Source::Env),
            ("SERVER_SHARED_FILES", Source::EnvUnderscored),
        ] {
            if let Some(value) = env(key).filter(|v| !v.is_empty()) {
                return SharedDirChoice {
                    path: PathBuf::from(value),
                    source,
                };
            }
        }
        SharedDirChoice {
            path: PathBuf::from("SharedFiles"),
            source: Source::Default,
        }
    }
}

impl SharedDirChoice {
    /// The error line for a shared folder that could not be opened (`error`,
    /// from `SharedDir::open`): when the folder is `missing` and was not
    /// named with `--shared-dir`, it says how to name one.
    pub fn explain(&self, error: String, missing: bool) -> String {
        if !missing || self.source == Source::Flag {
            return error;
        }
        let from = match self.source {
            Source::Default => "the default".to_owned(),
            source => format!("from {source}"),
        };
        format!("{error} ({from}); create it, or name the folder to share with --shared-dir DIR")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(size::<u64>("65536"), Ok(65536));
        assert_eq!(size::<u64>("64K"), Ok(65536));
        assert_eq!(size::<u64>("512M"), Ok(512 << 20));
        assert_eq!(size::<u64>("4G"), Ok(4 << 30));
        assert_eq!(size::<u64>("4GiB"), Ok(4 << 30));
        assert_eq!(size::<u64>("10mb"), Ok(10 << 20));
        assert_eq!(size::<u64>("1 k"), Ok(1024));
        assert!(size::<u32>("4G").unwrap_err().contains("too large"));
        assert!(size::<u64>("12X").unwrap_err().contains("unknown unit"));
        assert!(size::<u64>("M").unwrap_err().contains("not a size"));
        assert!(size::<u64>("-1").is_err());
        assert!(size::<u64>("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| {
            vars.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn shared_dir_precedence_is_flag_then_env_then_underscored_env_then_default() {
        let both = env_of(&[("SERVERSHAREDFILES", "/a"), ("SERVER_SHARED_FILES", "/b")]);
        let c = SharedDirChoice::pick(Some("/flag".into()), &both);
        assert_eq!((c.path, c.source), ("/flag".into(), Source::Flag));
        let c = SharedDirChoice::pick(None, &both);
        assert_eq!((c.path, c.source), ("/a".into(), Source::Env));
        let second = env_of(&[("SERVER_SHARED_FILES", "/b")]);
        let c = SharedDirChoice::pick(None, second);
        assert_eq!((c.path, c.source), ("/b".into(), Source::EnvUnderscored));
        let c = SharedDirChoice::pick(None, env_of(&[]));
        assert_eq!((c.path, c.source), ("SharedFiles".into(), Source::Default));
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let env = env_of(&[("SERVERSHAREDFILES", ""), ("SERVER_SHARED_FILES", "/b")]);
        let c = SharedDirChoice::pick(None, env);
        assert_eq!(c.source, Source::EnvUnderscored);
    }

    #[test]
    fn sources_print_as_the_ui_contract_names_them() {
        let names: Vec<String> = [
            Source::Flag,
            Source::Env,
            Source::EnvUnderscored,
            Source::Default,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "--shared-dir",
                "SERVERSHAREDFILES",
                "SERVER_SHARED_FILES",
                "default"
            ]
        );
    }

    #[test]
    fn a_missing_shared_folder_not_named_by_flag_suggests_the_flag() {
        let error = "shared folder 'SharedFiles' does not exist".to_owned();
        let default = SharedDirChoice::pick(None, env_of(&[]));
        assert_eq!(
            default.explain(error.clone(), true),
            "shared folder 'SharedFiles' does not exist (the default); \
             create it, or name the folder to share with --shared-dir DIR"
        );
        let env = SharedDirChoice::pick(None, env_of(&[("SERVERSHAREDFILES", "/x")]));
        let line = env.explain(error.clone(), true);
        assert!(line.contains("(from SERVERSHAREDFILES)"), "{line}");
        assert!(line.contains("--shared-dir DIR"), "{line}");
        // Named with the flag, or there but unreadable: the error alone.
        let flag = SharedDirChoice::pick(Some("/x".into()), env_of(&[]));
        assert_eq!(flag.explain(error.clone(), true), error);
        assert_eq!(default.explain(error.clone(), false), error);
    }

    #[test]
    fn default_flags_give_the_library_defaults() {
        assert_eq!(LimitArgs::default().to_limits(), Ok(Limits::default()));
    }

    #[test]
    fn inconsistent_limits_are_refused_with_the_flag_named() {
        let cases: Vec<(LimitArgs, &str)> = vec![
            (
                LimitArgs {
                    chunk_bytes: DEFAULT_MAX_FRAME as usize,
                    ..LimitArgs::default()
                },
                "--chunk-bytes",
            ),
            (
                LimitArgs {
                    chunk_bytes: 0,
                    ..LimitArgs::default()
                },
                "--chunk-bytes",
            ),
            (
                LimitArgs {
                    max_message_bytes: DEFAULT_MAX_FRAME as usize,
                    ..LimitArgs::default()
                },
                "--max-message-bytes",
            ),
            (
                LimitArgs {
                    max_message_bytes: 0,
                    ..LimitArgs::default()
                },
                "--max-message-bytes must be at least 1",
            ),
            (
                LimitArgs {
                    max_handshake_frame_bytes: 10,
                    ..LimitArgs::default()
                },
                "--max-handshake-frame-bytes",
            ),
            (
                LimitArgs {
                    keepalive_secs: 0.0,
                    ..LimitArgs::default()
                },
                "--keepalive-secs",
            ),
            (
                LimitArgs {
                    flood_timeout_secs: f64::NAN,
                    ..LimitArgs::default()
                },
                "--flood-timeout-secs",
            ),
            (
                LimitArgs {
                    rate_burst: 0,
                    ..LimitArgs::default()
                },
                "--rate-burst",
            ),
            (
                LimitArgs {
                    max_clients: 0,
                    ..LimitArgs::default()
                },
                "--max-clients",
            ),
        ];
        for (args, flag) in cases {
            let err = args.to_limits().expect_err(flag);
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn a_queue_that_cannot_hold_a_legal_burst_is_refused() {
        let err = LimitArgs {
            max_queue_bytes: 65536,
            ..LimitArgs::default()
        }
        .to_limits()
        .unwrap_err();
        for flag in [
            "--rate-burst-bytes",
            "--max-queue-bytes",
            "--max-frame-bytes",
        ] {
            assert!(err.contains(flag), "{err}");
        }
        let fits = LimitArgs {
            max_queue_bytes: 2 * 1024 * 1024,
            ..LimitArgs::default()
        };
        assert!(fits.to_limits().is_ok());
    }

    #[test]
    fn a_queue_smaller_than_a_frame_is_allowed_with_a_warning() {
        // Without a rate limit there is no burst to hold.
        let l = LimitArgs {
            max_queue_bytes: 65536,
            rate_per_sec: 0,
            ..LimitArgs::default()
        }
        .to_limits()
        .unwrap();
        assert_eq!(l.max_outbound, 65536);
        assert_eq!(LimitArgs::warnings(&l).len(), 1);
        assert!(LimitArgs::warnings(&Limits::default()).is_empty());
    }

    #[test]
    fn fractional_seconds_and_a_rate_of_zero_are_accepted() {
        let l = LimitArgs {
            keepalive_secs: 0.5,
            rate_per_sec: 0,
            rate_burst: 0,
            ..LimitArgs::default()
        }
        .to_limits()
        .unwrap();
        assert_eq!(l.keepalive_interval, Duration::from_millis(500));
        assert_eq!(l.rate_per_sec, 0);
    }

    #[test]
    fn no_password_attempts_at_all_is_refused_naming_the_flag() {
        // At 0 every password, the right one too, was refused: nobody
        // could join a server with --password-file, nor any account.
        let err = LimitArgs {
            auth_attempts: 0,
            ..LimitArgs::default()
        }
        .to_limits()
        .unwrap_err();
        assert_eq!(err, "--auth-attempts must be at least 1");
    }

    #[test]
    fn a_bad_value_of_a_setting_that_takes_0_says_0_is_allowed() {
        // It said "must be more than 0" of --grace-secs, whose 0 is valid.
        let err = LimitArgs {
            grace_secs: -1.0,
            ..LimitArgs::default()
        }
        .to_limits()
        .unwrap_err();
        assert_eq!(
            err,
            format!("--grace-secs must be from 0 (off) to {MAX_SECS} seconds, not -1")
        );
        let zero = LimitArgs {
            grace_secs: 0.0,
            ..LimitArgs::default()
        };
        assert_eq!(zero.to_limits().unwrap().grace, Duration::ZERO);
    }
}
