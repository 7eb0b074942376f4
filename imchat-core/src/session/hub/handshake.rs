//! The handshake: the first message of a connection must be a `Hello`
//! with this protocol version and a free name; anything else is refused.

use std::time::Instant;

use super::{ClientId, Hub, HubEvent, Phase};
use crate::error::DecodeError;
use crate::history::LogEvent;
use crate::message::{
    ClientMessage, ErrorCode, LeaveReason, NoticeCode, PresenceEvent, RefuseCode, ResumeRequest,
    ServerMessage, Username, PROTOCOL_VERSION,
};

/// Told to a user who took back with its password a session the server
/// kept across its restart.
const REGAINED_AFTER_RESTART: &str = "your session is back as the server kept it across its restart: what was sent to you between the loss of your connection and the restart is not replayed";

impl Hub {
    pub(super) fn refuse(&mut self, id: ClientId, code: RefuseCode, reason: &str) {
        self.send(
            id,
            ServerMessage::Refused {
                code,
                reason: reason.to_string(),
                version: PROTOCOL_VERSION,
            },
        );
        // The log tells a name taken from a resume that failed (a token
        // that does not match: a client whose session was taken over, or
        // someone guessing), which its answer does not.
        let resume = match self.conns.get(&id) {
            Some(conn) if conn.resume_failed => {
                " (it asked to resume that session with a token that does not match)"
            }
            _ => "",
        };
        self.events.push_back(HubEvent::Close {
            client: id,
            reason: format!("refused: {reason}{resume}"),
        });
        self.remove_conn(id);
    }

    pub(super) fn handshake(&mut self, client: ClientId, msg: ClientMessage, now: Instant) {
        if self.is_verifying(client) {
            // Nothing may come before the answer to the Hello.
            self.violation(client, "message before the answer to its Hello");
            self.refuse(
                client,
                RefuseCode::HANDSHAKE_REQUIRED,
                "wait for the answer to the Hello",
            );
            return;
        }
        let (version, username, resume) = match msg {
            ClientMessage::Hello {
                version,
                username,
                resume,
            } => (version, username, resume),
            ClientMessage::Auth { server, account } => {
                self.take_auth(client, server, account);
                return;
            }
            _ => {
                self.violation(client, "message before the handshake");
                self.refuse(
                    client,
                    RefuseCode::HANDSHAKE_REQUIRED,
                    "send a username (Hello) before anything else",
                );
                return;
            }
        };
        if version != PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"
            );
            self.refuse(client, RefuseCode::VERSION_MISMATCH, &reason);
            return;
        }
        let why = match self.looks_reserved(&username) {
            Some(word) => Err(format!(
                "'{username}' looks like the reserved name '{word}'"
            )),
            None => (self.name_check)(&username),
        };
        if let Err(why) = why {
            self.refuse(
                client,
                RefuseCode::INVALID_NAME,
                &format!("invalid username: {why}"),
            );
            return;
        }
        if self.admit_hello(client, &username, resume, now) {
            self.enter(client, username, resume, false, now);
        }
    }

    /// The last step of a handshake whose checks passed: a resume, or a
    /// join if the name is free. `authenticated`: the account password
    /// of the name was checked.
    pub(super) fn enter(
        &mut self,
        client: ClientId,
        username: Username,
        resume: Option<ResumeRequest>,
        authenticated: bool,
        now: Instant,
    ) {
        if let Some(c) = self.conns.get_mut(&client) {
            c.authenticated = authenticated;
            // The passwords were needed for the checks only.
            c.credentials = None;
        }
        let asked_resume = resume.is_some();
        if let Some(request) = resume {
            if self.try_resume(client, &username, request, now) {
                return;
            }
            // Not resumable: a fresh join if the name is free.
        }
        // Checking and inserting the name happen in one step under the
        // caller's lock: two clients can never both get the same name.
        let key = self.key(&username);
        if authenticated {
            if let Some((request, kept)) = self.regain_request(&key) {
                if self.try_resume(client, &username, request, now) {
                    if kept {
                        self.send(
                            client,
                            ServerMessage::Notice {
                                code: NoticeCode::DONE,
                                text: REGAINED_AFTER_RESTART.into(),
                            },
                        );
                    }
                    return;
                }
            }
        }
        if self.names.contains_key(&key)
            || self.sessions.contains_key(&key)
            || self.remote_user(&key).is_some()
        {
            let reason = self.taken_text(&username, &key);
            self.refuse(client, RefuseCode::NAME_TAKEN, &reason);
            return;
        }
        // A name that looks like one taken (`aIice` while `alice` is
        // online) is refused as that name would be.
        if let Some(holder) = self.lookalike_taken(&username, &key) {
            let reason = self.taken_text(&username, &holder);
            self.refuse(client, RefuseCode::NAME_TAKEN, &reason);
            return;
        }
        if self.joined_count() + self.ghosts() >= self.limits.max_clients {
            let reason = self.full_text();
            self.refuse(client, RefuseCode::SERVER_FULL, &reason);
            return;
        }
        if self.refuse_join_storm(client, now) {
            return;
        }
        self.names.insert(key.clone(), client);
        // A kick of an earlier session of this name is behind it.
        self.remote.kicks.remove(&key);
        let rolled_back = self
            .conns
            .get_mut(&client)
            .and_then(|c| c.session_ended.take());
        let kicked = self.forget_kick(&key, now).or(rolled_back);
        self.pending.remove(&client);
        if let Some(c) = self.conns.get_mut(&client) {
            c.phase = Phase::Joined(username.clone());
        }
        self.rebuild_members();
        let token = self.new_token();
        self.open_session(key, username.clone(), client, token);
        let joined = self.log_presence(
            LogEvent::Joined {
                user: username.clone(),
            },
            now,
        );
        // Queued first, so that what goes to the new member now does not
        // send it the joins before its own.
        self.queue_presence(
            PresenceEvent::Joined {
                id: joined.id,
                time: joined.time,
                user: username.clone(),
            },
            Some(client),
            now,
        );
        if let Some(text) = kicked.filter(|_| asked_resume) {
            // Why its session is not resumed: before the welcome, which
            // says that it is not.
            self.send(
                client,
                ServerMessage::Notice {
                    code: NoticeCode::SESSION_ENDED,
                    text,
                },
            );
        }
        let welcome = self.welcome_message(&username, token, None);
        self.send(client, welcome);
        self.send_history(client, now);
        self.tell_joiner_of_outage(client);
        self.publish(super::ClusterEvent::Joined {
            user: username.clone(),
            id: joined.id,
        });
        self.events.push_back(HubEvent::Joined {
            client,
            user: username,
        });
    }

    /// The connection's stream broke: tells it why (best effort) and closes it.
    pub fn handle_decode_error(&mut self, client: ClientId, error: &DecodeError) {
        if !self.conns.contains_key(&client) {
            return;
        }
        if !self.is_joined(client) && tls_hello(error) {
            // Not garbage: a client that speaks TLS to a plaintext server.
            self.violation(
                client,
                "a TLS handshake on this plaintext server (the client uses TLS; this server was started without it)",
            );
            self.refuse(
                client,
                RefuseCode::HANDSHAKE_REQUIRED,
                "this server does not use TLS: connect without it",
            );
            let now = self.clock;
            self.commit_history(now);
            return;
        }
        self.violation(client, error.to_string());
        if self.is_joined(client) {
            self.error(
                client,
                ErrorCode::MALFORMED,
                format!("malformed frame: {error}"),
            );
            self.leave(
                client,
                LeaveReason::KICKED,
                format!("malformed frame: {error}"),
            );
        } else if let DecodeError::InvalidName {
            field: "username",
            error: name_error,
        } = error
        {
            // The username breaks a rule: say which, so the client can show why.
            self.refuse(
                client,
                RefuseCode::INVALID_NAME,
                &format!("invalid username: {name_error}"),
            );
        } else {
            self.refuse(
                client,
                RefuseCode::HANDSHAKE_REQUIRED,
                &format!("malformed handshake: {error}"),
            );
        }
        let now = self.clock;
        self.commit_history(now);
    }
}

/// Whether `error` is what the first bytes of a TLS handshake read as an
/// imchat frame header make: a record of type 22 (handshake) and protocol
/// major version 3 (`16 03 ..`), a length far past any frame's.
fn tls_hello(error: &DecodeError) -> bool {
    matches!(error, DecodeError::FrameTooLarge { size, .. } if size >> 16 == 0x1603)
}
