//! The protocol's codes: why a handshake was refused, what an error is,
//! why a transfer stopped, why a user left. Each is a number on the wire
//! with a short English description; unknown values pass through, so a
//! newer peer's codes are kept as they are.

use std::fmt;

macro_rules! code_type {
    ($(#[$m:meta])* $name:ident($repr:ty) { $($(#[$cm:meta])* $konst:ident = $val:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cm])* pub const $konst: $name = $name($val);)*

            /// The name of the code's constant (`"TOO_MANY_ATTEMPTS"`),
            /// `None` for a code this version does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($konst)),)*
                    _ => None,
                }
            }

            /// A short English description of the code.
            pub fn describe(self) -> &'static str {
                match self.0 {
                    $($val => $text,)*
                    _ => "unknown code",
                }
            }
        }

        /// A known code by its constant's name (`RefuseCode::BANNED`), an
        /// unknown one by its number (`RefuseCode(99)`).
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => write!(f, "{}::{}", stringify!($name), name),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.describe())
            }
        }
    };
}

code_type! {
    /// Why a handshake was refused. Unknown values are kept as they are, so a
    /// newer peer's codes pass through.
    RefuseCode(u16) {
        /// The client speaks another protocol version.
        VERSION_MISMATCH = 1, "protocol version not supported";
        /// The username breaks the username rules.
        INVALID_NAME = 2, "invalid username";
        /// Someone online already has this name (ignoring case).
        NAME_TAKEN = 3, "username already taken";
        /// The server has as many clients as it accepts.
        SERVER_FULL = 4, "server full";
        /// The handshake took longer than the server allows.
        HANDSHAKE_TIMEOUT = 5, "handshake took too long";
        /// The server is shutting down.
        SHUTTING_DOWN = 6, "server shutting down";
        /// Something other than a `Hello` came first.
        HANDSHAKE_REQUIRED = 7, "a username must be set first";
        /// Too many failed attempts (a resume with a wrong token, a wrong
        /// server or account password) came from this address, or were
        /// made for this name, lately; wait before trying again.
        TOO_MANY_ATTEMPTS = 8, "too many failed attempts";
        /// The server needs its password (an `Auth` before the `Hello`).
        PASSWORD_REQUIRED = 9, "the server needs a password";
        /// The server password sent was wrong.
        WRONG_PASSWORD = 10, "wrong server password";
        /// The username is registered: taking it needs its account password.
        NAME_PROTECTED = 11, "username registered; its password is needed";
        /// The account password sent for a registered username was wrong.
        WRONG_ACCOUNT_PASSWORD = 12, "wrong password for this username";
        /// An operator banned this address or username.
        BANNED = 13, "banned";
    }
}

impl RefuseCode {
    /// Whether trying the same handshake again is refused the same way:
    /// a ban, a wrong server or account password, an invalid name or
    /// another protocol version do not change by waiting, so a client
    /// that reconnects on its own should stop at them. A full server, a
    /// name in use, too many attempts, a shutdown and codes this version
    /// does not know may pass.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RefuseCode::BANNED
                | RefuseCode::WRONG_PASSWORD
                | RefuseCode::WRONG_ACCOUNT_PASSWORD
                | RefuseCode::INVALID_NAME
                | RefuseCode::VERSION_MISMATCH
        )
    }
}

code_type! {
    /// The code of a generic [`ServerMessage::Error`](crate::ServerMessage::Error).
    ErrorCode(u16) {
        /// The frame could not be decoded; the server closes the connection.
        MALFORMED = 1, "malformed frame";
        /// A unicast named someone who is not online.
        UNKNOWN_USER = 2, "no such user online";
        /// A chat text longer than the server's limit.
        TEXT_TOO_LONG = 3, "message too long";
        /// A message the server does not accept at this point.
        UNEXPECTED = 4, "unexpected message";
        /// The client sends faster than allowed for too long.
        FLOODING = 5, "sending too fast";
        /// The peer stopped answering or reading.
        TIMEOUT = 6, "timed out";
        /// The server failed internally.
        INTERNAL = 7, "internal server error";
        /// An operator removed the client (kick or ban); the text says
        /// who and why. The connection is closed.
        KICKED = 8, "removed by an operator";
        /// The client's session was resumed by another connection (a copy
        /// of its saved session, or the client itself from another
        /// network): this one is closed, and its client should not
        /// reconnect on its own (it would take the session back from the
        /// other).
        REPLACED = 9, "session taken over by another connection";
    }
}

/// Why a receiver gave up a file it could not store (a `Cancel` with
/// [`CancelCode::IO`] from it): its words, in the `Cancel` and to a
/// pusher, rather than the receiver's own error, which may name its paths.
pub(crate) const CANNOT_STORE: &str = "could not store the file";

code_type! {
    /// Why a transfer was cancelled ([`FileCancel`](crate::FileCancel)).
    CancelCode(u16) {
        /// The sender or receiver gave up.
        CANCELLED = 1, "cancelled";
        /// No shared file of that name.
        NO_SUCH_FILE = 2, "no such file";
        /// The file may not be served (not a regular file, or outside the folder).
        FORBIDDEN = 3, "file not allowed";
        /// The announced size is above the limit.
        TOO_LARGE = 4, "file too large";
        /// A chunk broke the transfer rules (id, offset, size or CRC).
        BAD_CHUNK = 5, "bad chunk";
        /// The whole-file checksum or size did not match.
        CHECKSUM_MISMATCH = 6, "checksum mismatch";
        /// Too many transfers at once.
        TOO_MANY = 7, "too many transfers at once";
        /// Nobody to send the file to (unknown user, or no one else online).
        NO_RECEIVER = 8, "no one to receive the file";
        /// The receiver could not keep up.
        TOO_SLOW = 9, "receiver too slow";
        /// Reading or writing the file failed.
        IO = 10, "file read or write failed";
        /// The other side left.
        PEER_LEFT = 11, "the other side left";
        /// The receiver declined a push.
        DECLINED = 12, "declined by the receiver";
        /// The transfer made no progress for too long, or an offer was not
        /// answered in time.
        TIMED_OUT = 13, "no progress for too long";
    }
}

code_type! {
    /// What a [`ServerMessage::Notice`](crate::ServerMessage::Notice)
    /// answers: the outcome of an account or operator request.
    NoticeCode(u16) {
        /// `Register` done: the username is now protected by its password.
        REGISTERED = 1, "username registered";
        /// `Unregister` done: anyone may take the username again.
        UNREGISTERED = 2, "registration removed";
        /// An operator request was carried out; the text says what it did.
        DONE = 3, "done";
        /// The server keeps no accounts (it has no database).
        NO_ACCOUNTS = 4, "this server keeps no accounts";
        /// `Unregister` of a username that is not registered.
        NOT_REGISTERED = 5, "username not registered";
        /// `Register` of a username that is registered already.
        ALREADY_REGISTERED = 6, "username already registered";
        /// An operator request from someone who is not an operator (one of
        /// the server's operator names, joined with its account password).
        NOT_PERMITTED = 7, "not permitted";
        /// The request failed: no such user online, no such ban, a target
        /// that is neither a username nor an address, or the server could
        /// not store it; the text says which.
        FAILED = 8, "request failed";
        /// Sent before the `Welcome` of a `Hello` that asked to resume a
        /// session the server no longer has because its user was kicked
        /// (within the grace period before): the text is the kick's, as
        /// the others were shown it ("kicked by NAME: reason"). Or because
        /// the server's history is behind what its client saw (the server
        /// runs on an older copy of its database): "history lost (…)".
        SESSION_ENDED = 9, "your session was ended";
        /// Sent to every user of a server of a cluster when the cluster
        /// is reachable again after an outage ([`CLUSTER_DOWN`](Self::CLUSTER_DOWN)):
        /// the users of other servers are back.
        CLUSTER_BACK = 10, "the cluster is reachable again";
        /// Sent to every user of a server of a cluster when the server
        /// cannot reach the cluster (its Redis), and to each user who
        /// joins or resumes while it still cannot: only the users of this
        /// server are served, new names are refused, messages wait to be
        /// passed on, until [`CLUSTER_BACK`](Self::CLUSTER_BACK).
        CLUSTER_DOWN = 11, "the cluster cannot be reached";
        /// Not an answer: sent to the sender of a private message whose
        /// receiver's connection was lost and whose session waits for it
        /// to come back. The message was accepted and is kept for the
        /// receiver, who gets it if it resumes in time; the text says who
        /// and for how long at most.
        AWAY = 12, "the user is away";
        /// Not an answer: in a cluster, sent to the users a chat message of
        /// another server was for, in its place, when it is longer than
        /// this server's limit (its clients were told to expect nothing
        /// longer): the text names the sender and both sizes.
        NOT_SHOWN = 13, "a message was too long to be shown";
    }
}

impl NoticeCode {
    /// Whether the notice says something went wrong (a request refused or
    /// failed, a session or cluster lost), to be shown as an error; the
    /// others report success or news. A code this version does not know
    /// counts as one.
    #[must_use]
    pub fn is_failure(self) -> bool {
        ![
            Self::REGISTERED,
            Self::UNREGISTERED,
            Self::DONE,
            Self::CLUSTER_BACK,
            Self::AWAY,
        ]
        .contains(&self)
    }
}

code_type! {
    /// Why a user left ([`ServerMessage::Left`](crate::ServerMessage::Left)).
    LeaveReason(u8) {
        /// The user quit.
        QUIT = 0, "quit";
        /// The connection closed or broke.
        LOST = 1, "connection lost";
        /// The user stopped answering keepalive pings.
        TIMEOUT = 2, "timed out";
        /// The user stopped reading and was dropped.
        EVICTED = 3, "too slow to read, disconnected";
        /// The user broke the protocol or flooded and was disconnected.
        KICKED = 4, "disconnected for misbehaving";
        /// The server is shutting down.
        SHUTDOWN = 5, "server shutting down";
    }
}

#[cfg(test)]
mod tests {
    use super::RefuseCode;

    #[test]
    fn only_refusals_that_waiting_cannot_change_are_final() {
        for code in [
            RefuseCode::BANNED,
            RefuseCode::WRONG_PASSWORD,
            RefuseCode::WRONG_ACCOUNT_PASSWORD,
            RefuseCode::INVALID_NAME,
            RefuseCode::VERSION_MISMATCH,
        ] {
            assert!(code.is_final(), "{code}");
        }
        for code in [
            RefuseCode::NAME_TAKEN,
            RefuseCode::SERVER_FULL,
            RefuseCode::HANDSHAKE_TIMEOUT,
            RefuseCode::SHUTTING_DOWN,
            RefuseCode::HANDSHAKE_REQUIRED,
            RefuseCode::TOO_MANY_ATTEMPTS,
            RefuseCode::PASSWORD_REQUIRED,
            RefuseCode::NAME_PROTECTED,
            RefuseCode(999),
        ] {
            assert!(!code.is_final(), "{code}");
        }
    }

    #[test]
    fn codes_are_debugged_by_name_and_unknown_ones_by_number() {
        use super::{LeaveReason, NoticeCode};
        assert_eq!(
            format!("{:?}", RefuseCode::TOO_MANY_ATTEMPTS),
            "RefuseCode::TOO_MANY_ATTEMPTS"
        );
        assert_eq!(RefuseCode::WRONG_PASSWORD.name(), Some("WRONG_PASSWORD"));
        assert_eq!(format!("{:?}", RefuseCode(999)), "RefuseCode(999)");
        assert_eq!(RefuseCode(999).name(), None);
        assert_eq!(format!("{:?}", LeaveReason::LOST), "LeaveReason::LOST");
        assert_eq!(
            format!("{:?}", Some(NoticeCode::CLUSTER_BACK)),
            "Some(NoticeCode::CLUSTER_BACK)"
        );
    }
}
