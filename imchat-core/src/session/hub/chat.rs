//! Routing chat messages, to everyone else or to one user, and the list of
//! who is online.

use crate::message::RoutedChat;
use std::time::Instant;

use super::rate::Cost;
use super::{ClientId, Hub, HubEvent, Phase};
use crate::message::{ChatKind, ErrorCode, MessageId, Recipient, ServerMessage, Username};

impl Hub {
    /// Routes one chat message: stamped with the sender's registered name,
    /// the next message id and the time, to everyone else or to one user.
    pub(super) fn chat(
        &mut self,
        client: ClientId,
        from: Username,
        to: Recipient,
        kind: ChatKind,
        text: String,
        now: Instant,
    ) {
        if text.len() > self.limits.max_text {
            let msg = format!(
                "message of {} bytes is longer than the limit of {} bytes",
                text.len(),
                self.limits.max_text
            );
            self.error(client, ErrorCode::TEXT_TOO_LONG, msg);
            return;
        }
        if self.rate(client, Cost::chat(text.len()), now) {
            return;
        }
        let (dest, target) = match to {
            Recipient::Everyone => (None, None),
            Recipient::User(target) => {
                let Some(dest) = self.names.get(&self.key(&target)).copied() else {
                    self.error(
                        client,
                        ErrorCode::UNKNOWN_USER,
                        format!("no user named '{target}' is online"),
                    );
                    return;
                };
                (Some(dest), Some(target))
            }
        };
        let id = MessageId(self.next_message);
        self.next_message += 1;
        let reported = self.report_text.then(|| text.clone());
        let message = ServerMessage::Chat(RoutedChat {
            id,
            time: self.timestamp(now),
            from,
            private: dest.is_some(),
            kind,
            text,
        });
        let receivers = if let Some(dest) = dest {
            self.send(dest, message);
            1
        } else {
            let members = self.members.clone();
            let receivers = members.len().saturating_sub(1);
            self.send_many(members, Some(client), message);
            receivers
        };
        self.events.push_back(HubEvent::Routed {
            from: client,
            id,
            text: reported,
            to: target,
            receivers,
        });
    }

    /// Answers `Who`: every joined user, sorted ignoring case.
    pub(super) fn who(&mut self, client: ClientId) {
        let mut users: Vec<Username> = self
            .conns
            .values()
            .filter_map(|c| match &c.phase {
                Phase::Joined(u) => Some(u.clone()),
                Phase::Handshaking => None,
            })
            .collect();
        users.sort_by_key(Username::key);
        self.send(client, ServerMessage::Who { users });
    }
}
