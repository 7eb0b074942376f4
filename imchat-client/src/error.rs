//! The one error `run` can end with, and the exit code each kind maps to
//! (see the UI contract: 2 for bad arguments, 1 for everything at run time
//! but a script whose only failures were requests refused, 3).

use std::io;

use imchat_core::RefuseCode;
use thiserror::Error;

/// Why the client stopped other than by a normal quit. `main` prints it as
/// one line, `imchat-client: <message>`, and exits with [`exit_code`](Self::exit_code).
#[derive(Debug, Error)]
pub enum ClientError {
    /// The host name does not resolve to any address.
    #[error("cannot resolve host '{0}'")]
    Resolve(String),
    /// No resolved address accepted the connection.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port` as given.
        addr: String,
        /// Why the last attempt failed.
        reason: String,
    },
    /// None of several servers could be reached: each with why.
    #[error("cannot connect to any of the servers: {0}")]
    NoServer(String),
    /// TLS failed or the server's certificate is refused (the reason reads
    /// as one line).
    #[error("{0}")]
    Tls(String),
    /// The server answered the hello with bytes that are not imchat.
    #[error("the server's answer is not imchat (if it is a TLS server, connect with --tls)")]
    NotImchat,
    /// The server refused to let us in: the username (taken, against its
    /// rules) or for now (full, or it cannot reach what it needs).
    #[error("{}", refusal(*code, reason))]
    Refused {
        /// The server's words.
        reason: String,
        /// The server's code.
        code: RefuseCode,
    },
    /// The server needs a password this client was not given (and could
    /// not ask for: no terminal).
    #[error("{reason}: give it with {how}")]
    PasswordNeeded {
        /// The server's words.
        reason: String,
        /// Where a password can come from.
        how: &'static str,
        /// The account password of the username (not the server's).
        account: bool,
    },
    /// A password file could not be read, or holds no password.
    #[error("cannot use the password file '{path}': {reason}")]
    PasswordFile {
        /// The file (or the variable) as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// The server refused the passwords given, or this address or name.
    #[error("refused: {reason}")]
    Denied {
        /// The server's words.
        reason: String,
        /// The server's code.
        code: RefuseCode,
    },
    /// The server refused to give back the session asked for, its name
    /// held by a session the token does not match (see
    /// `ClientSession::is_resume_refused`): the session is over, and
    /// asking again is refused the same way.
    #[error("{0}")]
    ResumeRefused(String),
    /// An operator removed us.
    #[error("removed from the server: {0}")]
    Kicked(String),
    /// Another connection resumed our session; the server's words.
    #[error("{0}")]
    Replaced(String),
    /// The server said nothing in time during the handshake.
    #[error("no answer from the server")]
    NoAnswer,
    /// The connection closed or broke.
    #[error("connection to the server lost")]
    ConnectionLost,
    /// The connection broke with a reason worth showing.
    #[error("connection to the server lost: {0}")]
    ConnectionBroken(String),
    /// The connection ended and the one try to connect again failed.
    #[error("{lost}; reconnecting failed: {retry}")]
    ReconnectFailed {
        /// Why the connection ended.
        lost: String,
        /// Why the new one could not be made.
        retry: String,
    },
    /// The server announced its shutdown.
    #[error("server shut down: {0}")]
    Shutdown(String),
    /// A script's lines were not sent (messages refused by the client or
    /// the server, or given up), or downloads or pushes it started did
    /// not complete.
    #[error("{}", script_failed(*lines, *transfers))]
    ScriptFailed {
        /// Lines not sent.
        lines: usize,
        /// Transfers failed.
        transfers: usize,
    },
    /// A script ran to its end with every line sent and every transfer
    /// done, but this many of its requests failed: error lines (a command
    /// the client or the server refused, as a `/kick` by a non-operator
    /// or an unknown command). Exit code [`REQUESTS_FAILED_EXIT`].
    #[error("{0} request(s) failed")]
    RequestsFailed(usize),
    /// A script ended, and the answers to what it asked for did not all
    /// arrive before the server fell silent for this many seconds.
    #[error("gave up waiting for the server's answers after {0} s of silence")]
    NoAnswers(u64),
    /// A local input/output failure (the terminal, standard input, threads).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// The exit code of a script that ran to its end, every line sent and
/// every transfer done, some of whose requests failed (error lines).
pub const REQUESTS_FAILED_EXIT: u8 = 3;

impl ClientError {
    /// The process exit code: [`REQUESTS_FAILED_EXIT`] for
    /// [`ClientError::RequestsFailed`], else 1 (bad arguments exit with 2
    /// from clap, before anything runs).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::RequestsFailed(_) => REQUESTS_FAILED_EXIT,
            _ => 1,
        }
    }

    /// Whether the server refused us for now (full, or unable to reach
    /// what it needs to let us in: the rest of a cluster, its accounts),
    /// asking to try again later.
    pub fn is_busy(&self) -> bool {
        matches!(self, ClientError::Refused { code, .. } if *code == RefuseCode::SERVER_FULL)
    }

    /// Whether connecting again cannot end otherwise: the server refused
    /// us in a way retrying does not change (a ban, a wrong password: see
    /// [`RefuseCode::is_final`]), or needs a password this client has no
    /// way to get. A client that reconnects on its own stops at these.
    pub fn is_final(&self) -> bool {
        match self {
            ClientError::Refused { code, .. } | ClientError::Denied { code, .. } => code.is_final(),
            ClientError::PasswordNeeded { .. } | ClientError::ResumeRefused(_) => true,
            _ => false,
        }
    }
}

/// `2 line(s) not sent; 1 transfer(s) failed`, each part only when not 0.
fn script_failed(lines: usize, transfers: usize) -> String {
    let mut parts = Vec::new();
    if lines > 0 {
        parts.push(format!("{lines} line(s) not sent"));
    }
    if transfers > 0 {
        parts.push(format!("{transfers} transfer(s) failed"));
    }
    parts.join("; ")
}

/// A refusal as shown: "username refused: …" when the name is the
/// reason, else "refused: …" ("server full" is not the name's fault).
fn refusal(code: RefuseCode, reason: &str) -> String {
    if code == RefuseCode::NAME_TAKEN || code == RefuseCode::INVALID_NAME {
        // The server's "invalid username: why" says "username" once more.
        let reason = reason.strip_prefix("invalid username: ").unwrap_or(reason);
        format!("username refused: {reason}")
    } else {
        format!("refused: {reason}")
    }
}

/// A connect failure in the contract's words (`connection refused`,
/// `timed out`), the OS's message for anything rarer.
pub fn describe_connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_exit_1() {
        assert_eq!(ClientError::ConnectionLost.exit_code(), 1);
        let taken = ClientError::Refused {
            reason: "taken".into(),
            code: RefuseCode::NAME_TAKEN,
        };
        assert_eq!(taken.exit_code(), 1);
        assert_eq!(ClientError::Resolve("x".into()).exit_code(), 1);
    }

    #[test]
    fn a_failed_script_says_what_failed_in_one_line() {
        let failed = |lines, transfers| ClientError::ScriptFailed { lines, transfers }.to_string();
        assert_eq!(failed(2, 0), "2 line(s) not sent");
        assert_eq!(failed(0, 1), "1 transfer(s) failed");
        assert_eq!(failed(1, 3), "1 line(s) not sent; 3 transfer(s) failed");
    }

    #[test]
    fn only_refusals_retrying_cannot_change_end_the_reconnects() {
        let denied = |code| ClientError::Denied {
            reason: "why".into(),
            code,
        };
        let refused = |code| ClientError::Refused {
            reason: "why".into(),
            code,
        };
        assert!(denied(RefuseCode::BANNED).is_final());
        assert!(denied(RefuseCode::WRONG_PASSWORD).is_final());
        assert!(denied(RefuseCode::WRONG_ACCOUNT_PASSWORD).is_final());
        assert!(refused(RefuseCode::INVALID_NAME).is_final());
        assert!(!denied(RefuseCode::TOO_MANY_ATTEMPTS).is_final());
        assert!(!refused(RefuseCode::NAME_TAKEN).is_final());
        assert!(!refused(RefuseCode::SERVER_FULL).is_final());
        let needed = ClientError::PasswordNeeded {
            reason: "the server needs a password".into(),
            how: "--password-file",
            account: false,
        };
        assert!(needed.is_final(), "no way to get one while reconnecting");
        assert_eq!(
            refused(RefuseCode::NAME_TAKEN).to_string(),
            "username refused: why"
        );
        let invalid = ClientError::Refused {
            code: RefuseCode::INVALID_NAME,
            reason: "invalid username: 'аdmin' looks like the reserved name 'admin'".into(),
        };
        assert_eq!(
            invalid.to_string(),
            "username refused: 'аdmin' looks like the reserved name 'admin'"
        );
        assert_eq!(
            refused(RefuseCode::SERVER_FULL).to_string(),
            "refused: why",
            "a full server is not the name's fault"
        );
        assert!(!ClientError::ConnectionLost.is_final());
        assert!(!ClientError::NoAnswer.is_final());
        assert!(!ClientError::Shutdown("bye".into()).is_final());
        assert_eq!(
            denied(RefuseCode::BANNED).to_string(),
            "refused: why",
            "the server's words, as at a first connection"
        );
    }

    #[test]
    fn connect_errors_read_like_the_contract() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_connect_error(&refused), "connection refused");
        let err = ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            reason: describe_connect_error(&refused),
        };
        assert_eq!(
            err.to_string(),
            "cannot connect to 127.0.0.1:1: connection refused"
        );
        let slow = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(describe_connect_error(&slow), "timed out");
    }
}
