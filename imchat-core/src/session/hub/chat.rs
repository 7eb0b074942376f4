//! Routing chat messages, to everyone else or to one user, and the list of
//! who is online.

use crate::history::{LogEntry, LogEvent};
use crate::limits::AWAY_TOLD_SENDERS;
use crate::message::RoutedChat;
use std::time::{Duration, Instant};

use super::continuity::Outcome;
use super::rate::Cost;
use super::{ClientId, Hub, HubEvent, Phase};
use crate::message::{
    ChatKind, ErrorCode, LeaveReason, MessageId, NoticeCode, OnlineUser, Recipient, ServerMessage,
    Username,
};

impl Hub {
    /// Routes one chat message: stamped with the sender's registered name,
    /// the next log id and the time, appended to the log (and its store),
    /// acknowledged to the sender (with a store, after its next commit),
    /// then sent to everyone else or to one user. A message the sender already sent under `client_id` is
    /// answered as the first time and routed no more.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn chat(
        &mut self,
        client: ClientId,
        from: Username,
        client_id: u64,
        to: Recipient,
        kind: ChatKind,
        text: String,
        now: Instant,
    ) {
        let key = self.key(&from);
        // Refused for its length or not, it was read: it costs as much.
        if self.rate(client, Cost::chat(text.len()), now) {
            return;
        }
        if text.len() > self.limits.max_text {
            let msg = format!(
                "message of {} bytes is longer than the limit of {} bytes",
                text.len(),
                self.limits.max_text
            );
            self.refuse_chat(client, &key, client_id, ErrorCode::TEXT_TOO_LONG, msg);
            return;
        }
        if self.answer_duplicate(client, &key, client_id) {
            return;
        }
        // A unicast's receiver whose session waits for it: until when, and
        // why its connection ended.
        let mut away: Option<Option<(Instant, LeaveReason)>> = None;
        let (dest, target) = match to {
            Recipient::Everyone => (None, None),
            Recipient::User(target) => {
                let target_key = self.key(&target);
                let dest = self.names.get(&target_key).copied();
                // A user in its grace period gets it when it resumes.
                let session = self.sessions.get(&target_key).filter(|_| dest.is_none());
                away = session.map(|s| s.grace);
                let held = self.sessions.get(&target_key).map(|s| s.user.clone());
                // A user of another server of the cluster: published.
                let held = held.or_else(|| self.remote_user(&target_key).cloned());
                let Some(registered) = held else {
                    self.refuse_chat(
                        client,
                        &key,
                        client_id,
                        ErrorCode::UNKNOWN_USER,
                        format!("no user named '{target}' is online"),
                    );
                    return;
                };
                (dest, Some(registered))
            }
        };
        let id = MessageId(self.next_message);
        let time = self.timestamp(now);
        let entry = LogEntry {
            id,
            time,
            event: LogEvent::Chat {
                from: from.clone(),
                to: target.clone(),
                kind,
                text: text.clone(),
                client_id,
            },
        };
        if let Err(e) = self.append(entry) {
            self.refuse_answer(
                client,
                ErrorCode::INTERNAL,
                client_id,
                format!("message not sent: {e}"),
            );
            return;
        }
        self.note_outcome(&key, client_id, Outcome::Accepted(id, time));
        // With a store: once it is committed (routing does not wait).
        self.acknowledge(client, client_id, (id, time), true);
        let reported = self.report_text.then(|| text.clone());
        // In a cluster every message goes to the stream, a private one
        // between two users of this server too: its receiver may resume
        // on another server (whose log must have it), and its sender may
        // send it again there (which must know it was taken).
        if self.remote.enabled {
            self.publish(super::ClusterEvent::Chat {
                from: from.clone(),
                to: target.clone(),
                kind,
                text: text.clone(),
                id,
                time,
                client_id,
            });
        }
        let private = target.is_some();
        if let Some(to) = target.as_ref().filter(|_| dest.is_none()) {
            let to_key = self.key(to);
            if self.remote_user(&to_key).is_some() && !self.sessions.contains_key(&to_key) {
                self.note_sent_private(&from, &to_key, &text, now);
            }
        }
        let message = ServerMessage::Chat(RoutedChat {
            id,
            time,
            from,
            private,
            kind,
            text,
            history: false,
        });
        let receivers = if private {
            if let Some(dest) = dest {
                self.send(dest, message);
                1
            } else {
                0
            }
        } else {
            let members = self.member_list();
            let receivers = members.len().saturating_sub(1);
            self.send_many(members, Some(client), message);
            receivers
        };
        // Each sender is told once while the receiver is away, not once
        // per message (a burst of lines would bury the chat in notices).
        // Past the senders a session remembers, a further one is told at
        // each message.
        let first_told = |hub: &mut Hub, to: &Username| {
            let to_key = hub.key(to);
            hub.sessions.get_mut(&to_key).is_none_or(|s| {
                if s.told_away.contains(&key) {
                    return false;
                }
                if s.told_away.len() < AWAY_TOLD_SENDERS {
                    s.told_away.insert(key.clone());
                }
                true
            })
        };
        let tell = match (away, target.as_ref()) {
            (Some(until), Some(to)) if first_told(self, to) => Some((until, to.clone())),
            _ => None,
        };
        if let Some((until, to)) = tell {
            let (why, within) = until.map_or((LeaveReason::LOST, String::new()), |(t, why)| {
                let secs = t.saturating_duration_since(now).as_millis().div_ceil(1000);
                (why, format!(" within {secs} s"))
            });
            self.send(
                client,
                ServerMessage::Notice {
                    code: NoticeCode::AWAY,
                    text: format!(
                        "{to} is away ({why}): they get your message if they come back{within}"
                    ),
                },
            );
        }
        self.events.push_back(HubEvent::Routed {
            from: client,
            id,
            text: reported,
            to: target,
            receivers,
            waiting: away.is_some(),
        });
    }

    /// Refuses a chat message with an error naming it, and remembers the
    /// answer for a resent copy.
    fn refuse_chat(
        &mut self,
        client: ClientId,
        key: &str,
        client_id: u64,
        code: ErrorCode,
        text: String,
    ) {
        self.note_outcome(key, client_id, Outcome::Refused(code, text.clone()));
        self.refuse_answer(client, code, client_id, text);
    }

    /// Answers `Who`: every joined user (those waiting to resume included,
    /// marked away with how long they have been), in [`name_order`](crate::name_order).
    pub(super) fn who(&mut self, client: ClientId, now: Instant) {
        let grace = self.limits.grace;
        let mut users: Vec<OnlineUser> = self
            .conns
            .values()
            .filter_map(|c| match &c.phase {
                Phase::Joined(u) => Some(OnlineUser::here(u.clone())),
                Phase::Handshaking => None,
            })
            .chain(
                self.sessions
                    .values()
                    .filter(|s| s.conn.is_none())
                    .map(|s| {
                        // Its grace runs from when its connection was lost
                        // (or, kept across a restart, from that restart).
                        let since = s.grace.map_or(Duration::ZERO, |(until, _)| {
                            now.saturating_duration_since(until.checked_sub(grace).unwrap_or(now))
                        });
                        OnlineUser::away(s.user.clone(), since.as_secs())
                    }),
            )
            .chain(self.remote_online(now))
            .collect();
        users.sort_by(|a, b| crate::name_order(a.name.as_str(), b.name.as_str()));
        // Paid for as a list of files is: the request up front, the
        // length of the answer after (a debt, not flooding).
        self.charge_extra(client, Cost::request(users.len()), Cost::request(0));
        self.send(client, ServerMessage::Who { users });
    }
}
