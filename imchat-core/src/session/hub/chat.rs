//! Routing chat messages: to everyone else, or to one user.

use std::time::Instant;

use super::{ClientId, Hub, HubEvent};
use crate::message::{ErrorCode, Recipient, ServerMessage, Username};

impl Hub {
    pub(super) fn chat(
        &mut self,
        client: ClientId,
        from: Username,
        to: Recipient,
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
        if self.rate(client, now) {
            return;
        }
        match to {
            Recipient::Everyone => {
                let members = self.members.clone();
                let receivers = members.len().saturating_sub(1);
                self.send_many(
                    members,
                    Some(client),
                    ServerMessage::Chat {
                        from,
                        private: false,
                        text,
                    },
                );
                self.events.push_back(HubEvent::Routed {
                    from: client,
                    to: None,
                    receivers,
                });
            }
            Recipient::User(target) => match self.names.get(&target.key()).copied() {
                Some(dest) => {
                    self.send(
                        dest,
                        ServerMessage::Chat {
                            from,
                            private: true,
                            text,
                        },
                    );
                    self.events.push_back(HubEvent::Routed {
                        from: client,
                        to: Some(target),
                        receivers: 1,
                    });
                }
                None => self.error(
                    client,
                    ErrorCode::UNKNOWN_USER,
                    format!("no user named '{target}' is online"),
                ),
            },
        }
    }
}
