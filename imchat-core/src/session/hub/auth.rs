//! Who may come in: the server password, protected usernames (accounts),
//! bans, and the operators who kick and ban.
//!
//! The hub makes every decision; the server does what needs IO or heavy
//! work and answers: it checks an account's password hash
//! ([`HubEvent::CheckAccount`], answered by [`Hub::account_checked`]) and
//! stores or removes a registration ([`HubEvent::Register`],
//! [`HubEvent::Unregister`], answered by [`Hub::account_changed`]), off the
//! hub's lock. The order of a handshake: version, bans, server password,
//! account, then resume or join; so a resume token never stands in for a
//! password.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{parting_text, ClientId, ClusterEvent, Hub, HubEvent, Phase};
use crate::message::{
    ClientMessage, ErrorCode, LeaveReason, NoticeCode, OpAction, RefuseCode, ResumeRequest, Secret,
    ServerMessage, Username,
};

/// Entries of the failed-attempt table before old ones are forgotten.
const MAX_FAILURE_ENTRIES: usize = 4096;

/// How many times an address's failed attempts a username takes (from all
/// addresses together) within the window before its logins wait: guesses
/// spread over many addresses are held back, while one address, held back
/// at its own limit, cannot keep a name's owner out by failing for it.
const NAME_ATTEMPTS_FACTOR: u32 = 10;

/// Addresses a name keeps as ones it logged in from with its password
/// (the newest): a login from one of them is held back by its address's
/// cap only, not by the name's.
const KNOWN_ADDRESSES_PER_NAME: usize = 8;

/// Names whose known addresses are kept before one is forgotten.
const MAX_KNOWN_NAMES: usize = 4096;

/// Who the hub's authentication state holds.
#[derive(Debug, Default)]
pub(super) struct AuthState {
    /// The server password, when one is needed.
    server_password: Option<Secret>,
    /// True when the server keeps accounts (it answers [`HubEvent::CheckAccount`]).
    accounts: bool,
    /// Name keys of the operators.
    operators: HashSet<String>,
    /// The bans, in the order they were made.
    bans: Vec<Ban>,
    /// Failed password attempts: when the window started, how many.
    failures: HashMap<FailKey, (Instant, u32)>,
    /// Account passwords sent to the server to check and not answered
    /// yet, by connection: whom each counts against, and when it was
    /// asked. They count as failures until the answer says otherwise, so
    /// that guesses sent at once cannot all be checked before the first
    /// is counted. An entry stays until its answer comes, even if its
    /// connection closed (the server checks it all the same).
    checking: HashMap<ClientId, (InFlight, Instant)>,
    /// How many of `checking` count against each address and name.
    in_flight: HashMap<FailKey, u32>,
    /// Account checks asked per address, whatever their outcome: when
    /// the window started, how many.
    checks_asked: HashMap<FailKey, (Instant, u32)>,
    /// Logins waiting for a check of their address to end, oldest first:
    /// past [`Limits::account_checks_at_once`](crate::Limits::account_checks_at_once)
    /// a login waits its turn (a classroom logging in at once), it is not
    /// refused.
    queued: HashMap<FailKey, VecDeque<Queued>>,
    /// By name key, the addresses its user logged in from with the
    /// name's password (or registered it from), oldest first: guesses
    /// for the name from elsewhere, however many addresses they come
    /// from, do not keep its owner out where it logged in before, nor a
    /// resume with the session's token.
    known: HashMap<String, VecDeque<Option<IpAddr>>>,
}

/// A login waiting for its turn to be checked.
#[derive(Debug)]
struct Queued {
    client: ClientId,
    name: FailKey,
    password: Option<Secret>,
}

/// Most logins of one address waiting for their turn: beyond, a login is
/// refused (as many as may join from one address in a minute).
const MAX_QUEUED_PER_ADDRESS: usize = 60;

/// Whom a password check in flight counts against.
#[derive(Debug, Clone)]
struct InFlight {
    address: FailKey,
    name: FailKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailKey {
    Address(Option<IpAddr>),
    Name(String),
}

/// The passwords a connection sent (`Auth`) before its `Hello`.
#[derive(Debug, Clone, Default)]
pub(super) struct Credentials {
    pub(super) server: Option<Secret>,
    pub(super) account: Option<Secret>,
}

/// A `Hello` waiting for the server's account check.
#[derive(Debug, Clone)]
pub(super) struct PendingHello {
    pub(super) username: Username,
    pub(super) resume: Option<ResumeRequest>,
}

/// What the server found when it checked an account
/// ([`HubEvent::CheckAccount`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCheck {
    /// The username is not registered: anyone may take it.
    Open,
    /// Registered, and the password matched its hash.
    Verified,
    /// Registered, and no password was sent.
    Missing,
    /// Not registered itself, but it reads as a registered name (a
    /// capital `I` for that name's `l`, say), and no password was sent:
    /// that name's password is needed.
    LooksRegistered,
    /// Registered, and the password did not match.
    Wrong,
    /// The accounts could not be read; the text says why (it is logged,
    /// not shown to the client).
    Unavailable(String),
}

/// What a ban refuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BanTarget {
    /// A username (every name with the same key).
    Name(Username),
    /// An address.
    Address(IpAddr),
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanTarget::Name(n) => write!(f, "{n}"),
            BanTarget::Address(a) => write!(f, "{a}"),
        }
    }
}

impl BanTarget {
    /// Reads a target: text that reads as an IP address is an address,
    /// anything else must be a valid username.
    ///
    /// # Errors
    ///
    /// A text that is neither, with a line saying so.
    pub fn parse(text: &str) -> Result<BanTarget, String> {
        // `[::1]`, as an IPv6 address is written beside a port.
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(BanTarget::Address(ip.to_canonical()));
        }
        Username::new(text).map(BanTarget::Name).map_err(|e| {
            let text = typed(text);
            format!("'{text}' is neither an address nor a username ({e})")
        })
    }
}

/// A wait in whole seconds, rounded up: "try again in 0 s" would be wrong.
fn whole_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// What an operator typed, for an answer that quotes it: its start (a
/// pasted 100 KB line is not echoed whole) with `…` if there is more,
/// made [`inert`](crate::inert) (a control character or a bidi override
/// is shown, not acted on).
fn typed(text: &str) -> String {
    crate::inert(&super::cluster::text_start(text)).into_owned()
}

/// Four groups of digits with dots between: meant as an IPv4 address (a
/// ban of `999.1.1.1` is a mistyped address, not a username).
fn looks_like_ipv4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// One ban: what it refuses, who made it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The username or address.
    pub target: BanTarget,
    /// Who banned it (an operator's name, or `console`).
    pub by: String,
    /// Why (may be empty).
    pub reason: String,
}

/// An operator's request as a line of text (the server's console, and the
/// client's commands): `kick NAME [reason]`, `ban NAME|ADDRESS [reason]`,
/// `unban NAME|ADDRESS`, `bans`; a leading `/` is allowed.
///
/// # Errors
///
/// An unknown word or a missing target, with a line saying what is expected.
pub fn parse_operator_line(line: &str) -> Result<(OpAction, String, String), String> {
    let line = line.trim();
    let line = line.strip_prefix('/').unwrap_or(line);
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    const COMMANDS: &str =
        "who, kick NAME [reason], ban NAME|ADDRESS [reason], unban NAME|ADDRESS or bans";
    let action = match word.to_ascii_lowercase().as_str() {
        "kick" => OpAction::Kick,
        "ban" => OpAction::Ban,
        "unban" => OpAction::Unban,
        "bans" => OpAction::Bans,
        "help" | "?" => return Err(format!("commands: {COMMANDS}")),
        _ => {
            let word = typed(word);
            return Err(format!("unknown command '{word}': use {COMMANDS}"));
        }
    };
    let rest = rest.trim();
    let (target, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if target.is_empty() && action != OpAction::Bans {
        let what = match action {
            OpAction::Kick => "a username",
            _ => "a username or an address",
        };
        return Err(format!("{} needs {what}", action.word()));
    }
    Ok((action, target.to_string(), reason.trim().to_string()))
}

impl AuthState {
    /// True when every client must give the server password.
    pub(super) fn asks_password(&self) -> bool {
        self.server_password.is_some()
    }
}

impl Hub {
    /// True when `client` gave the server password in its `Auth` (and the
    /// server asks one); nothing is counted or logged.
    pub(super) fn gave_server_password(&self, client: ClientId) -> bool {
        let Some(expected) = &self.auth.server_password else {
            return false;
        };
        self.conns
            .get(&client)
            .and_then(|c| c.credentials.as_ref())
            .and_then(|c| c.server.as_ref())
            .is_some_and(|given| given.matches(expected))
    }

    /// Requires `password` (in an `Auth` before the `Hello`) from every
    /// client; `None` lets anyone in (the default).
    pub fn set_server_password(&mut self, password: Option<Secret>) {
        self.auth.server_password = password;
    }

    /// Whether the server keeps accounts. When it does, every `Hello`
    /// raises [`HubEvent::CheckAccount`] and waits for
    /// [`Hub::account_checked`]; `Register` and `Unregister` raise events
    /// the server answers with [`Hub::account_changed`]. When it does not
    /// (the default), no name is protected and `Register` is answered
    /// [`NoticeCode::NO_ACCOUNTS`].
    pub fn set_accounts(&mut self, on: bool) {
        self.auth.accounts = on;
    }

    /// The usernames allowed to kick and ban, once joined with their
    /// account password (a name that is not registered gives no rights).
    pub fn set_operators<'a>(&mut self, names: impl IntoIterator<Item = &'a Username>) {
        self.auth.operators = names.into_iter().map(|n| self.key(n)).collect();
    }

    /// The bans in force, oldest first.
    #[must_use]
    pub fn bans(&self) -> &[Ban] {
        &self.auth.bans
    }

    /// Sets the bans in force: those a server kept from its last run, or
    /// the list as another server of a cluster changed it. A ban that was
    /// not in force here before also removes whom it names, as if it had
    /// been made here: its connections, and a session waiting to be
    /// resumed. Changes made here come as [`HubEvent::BansChanged`].
    pub fn set_bans(&mut self, bans: Vec<Ban>) {
        let new: Vec<Ban> = bans
            .iter()
            .filter(|b| {
                !self
                    .auth
                    .bans
                    .iter()
                    .any(|old| self.same_target(&old.target, &b.target))
            })
            .cloned()
            .collect();
        self.auth.bans = bans;
        for ban in &new {
            let text = removal_text("banned", &ban.by, &ban.reason);
            self.enforce_ban(&ban.target, &text);
        }
    }

    fn bans_changed(&mut self) {
        self.events.push_back(HubEvent::BansChanged {
            bans: self.auth.bans.clone(),
        });
    }

    /// True when connections from `peer` are banned.
    pub(super) fn address_banned(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| {
            let ip = ip.to_canonical();
            self.auth
                .bans
                .iter()
                .any(|b| b.target == BanTarget::Address(ip))
        })
    }

    fn name_banned(&self, user: &Username) -> bool {
        self.name_ban(user).is_some()
    }

    /// The ban of `user`'s name, or of a name it looks like (see
    /// [`Hub::set_loose_name_key`]): `MaIlory` when `mallory` is banned.
    fn name_ban(&self, user: &Username) -> Option<&Ban> {
        self.auth
            .bans
            .iter()
            .find(|b| matches!(&b.target, BanTarget::Name(n) if self.same_or_alike(n, user)))
    }

    /// What a user of a banned name is told ("banned by NAME: reason").
    pub(super) fn name_ban_text(&self, user: &Username) -> Option<String> {
        self.name_ban(user)
            .map(|b| removal_text("banned", &b.by, &b.reason))
    }

    /// An `Auth` while handshaking: kept for the `Hello` that follows.
    /// True when it was taken; false when the connection was refused.
    pub(super) fn take_auth(
        &mut self,
        client: ClientId,
        server: Option<Secret>,
        account: Option<Secret>,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(&client) else {
            return false;
        };
        if conn.credentials.is_some() {
            self.violation(client, "a second Auth");
            self.refuse(
                client,
                RefuseCode::HANDSHAKE_REQUIRED,
                "Auth may be sent once, before the Hello",
            );
            return false;
        }
        conn.credentials = Some(Credentials { server, account });
        true
    }

    /// The checks of a `Hello` before its name is taken: bans, the server
    /// password, then (with accounts) the account, which the server checks.
    /// True when the handshake may go on now; false when it was refused or
    /// waits for [`Hub::account_checked`].
    pub(super) fn admit_hello(
        &mut self,
        client: ClientId,
        username: &Username,
        resume: Option<ResumeRequest>,
        now: Instant,
    ) -> bool {
        let Some(conn) = self.conns.get(&client) else {
            return false;
        };
        // Counted as every cap per address is: an IPv6 /64 is one address.
        let peer = conn.peer.map(super::address_key);
        let creds = conn.credentials.clone().unwrap_or_default();
        if self.name_banned(username) {
            self.refuse(
                client,
                RefuseCode::BANNED,
                &format!("the username '{username}' is banned from this server"),
            );
            return false;
        }
        if let Some(expected) = self.auth.server_password.clone() {
            let held = self.held_back(&FailKey::Address(peer), now);
            match (creds.server, held) {
                // No password given: the server needs one (what a client
                // acts on), and a locked-out address must also wait.
                (None, held) => {
                    let text = held.map_or_else(
                        || "this server needs a password".to_string(),
                        |wait| {
                            let secs = whole_secs(wait);
                            format!("this server needs a password (after too many failed attempts from this address, try again in {secs} s)")
                        },
                    );
                    self.refuse(client, RefuseCode::PASSWORD_REQUIRED, &text);
                    return false;
                }
                (Some(_), Some(wait)) => {
                    self.refuse_attempts(client, username, "from its address", wait);
                    return false;
                }
                (Some(given), None) if !given.matches(&expected) => {
                    self.note_failure(FailKey::Address(peer), now);
                    self.login_refused(client, username, "wrong server password");
                    self.refuse(client, RefuseCode::WRONG_PASSWORD, "wrong server password");
                    return false;
                }
                (Some(_), None) => {}
            }
        }
        if !self.auth.accounts {
            return true;
        }
        let name = FailKey::Name(self.key(username));
        if creds.account.is_some() && self.taken_whatever_the_password(username, resume.as_ref()) {
            // Refused as taken (or resumed, were the token right) with no
            // hash computed: the password could change nothing.
            return true;
        }
        if creds.account.is_some() {
            let address = FailKey::Address(peer);
            self.expire_checks(now);
            if self.refused_over_caps(client, username, resume.as_ref(), &address, &name, now) {
                return false;
            }
            if let Some(conn) = self.conns.get_mut(&client) {
                conn.verifying = Some(PendingHello {
                    username: username.clone(),
                    resume,
                });
            }
            if self.checks_at_once_reached(&address) {
                // Its turn comes when a check of its address ends.
                self.auth
                    .queued
                    .entry(address)
                    .or_default()
                    .push_back(Queued {
                        client,
                        name,
                        password: creds.account,
                    });
                return false;
            }
            self.start_check(client, InFlight { address, name }, now);
        } else if let Some(conn) = self.conns.get_mut(&client) {
            conn.verifying = Some(PendingHello {
                username: username.clone(),
                resume,
            });
        }
        self.events.push_back(HubEvent::CheckAccount {
            client,
            user: username.clone(),
            password: creds.account,
        });
        false
    }

    /// Whether [`Limits::account_checks_at_once`](crate::Limits::account_checks_at_once)
    /// checks of `address` are in flight: the next login waits its turn.
    fn checks_at_once_reached(&self, address: &FailKey) -> bool {
        let at_once = self.limits.account_checks_at_once;
        at_once > 0
            && !matches!(address, FailKey::Address(None))
            && self.auth.in_flight.get(address).copied().unwrap_or(0) >= at_once
    }

    /// Starts the checks of the logins of `address` waiting for their
    /// turn, as far as [`Limits::account_checks_at_once`](crate::Limits::account_checks_at_once)
    /// allows; those whose connection went are dropped, those over a cap
    /// by now refused.
    fn start_queued(&mut self, address: &FailKey, now: Instant) {
        while !self.checks_at_once_reached(address) {
            let Some(next) = self
                .auth
                .queued
                .get_mut(address)
                .and_then(VecDeque::pop_front)
            else {
                break;
            };
            // Out while it may be refused, back when its check starts.
            let Some(waiting) = self
                .conns
                .get_mut(&next.client)
                .and_then(|c| c.verifying.take())
            else {
                continue;
            };
            let user = waiting.username.clone();
            let resume = waiting.resume.as_ref();
            if self.refused_over_caps(next.client, &user, resume, address, &next.name, now) {
                continue;
            }
            if let Some(conn) = self.conns.get_mut(&next.client) {
                conn.verifying = Some(waiting);
            }
            self.start_check(
                next.client,
                InFlight {
                    address: address.clone(),
                    name: next.name,
                },
                now,
            );
            self.events.push_back(HubEvent::CheckAccount {
                client: next.client,
                user,
                password: next.password,
            });
        }
        if self
            .auth
            .queued
            .get(address)
            .is_some_and(VecDeque::is_empty)
        {
            self.auth.queued.remove(address);
        }
    }

    /// Refuses `client`'s login as `user` with an account password when
    /// its address or name is over the wrong-password caps, or its address
    /// over its password checks; true if it did. The name's cap holds
    /// back guesses spread over many addresses, not the name's owner
    /// where it logged in before, nor a session's resume with its token.
    fn refused_over_caps(
        &mut self,
        client: ClientId,
        user: &Username,
        resume: Option<&ResumeRequest>,
        address: &FailKey,
        name: &FailKey,
        now: Instant,
    ) -> bool {
        if let Some(wait) = self.held_back(address, now) {
            self.refuse_attempts(client, user, "from its address", wait);
            return true;
        }
        let owner = self.known_address(user, address)
            || resume.is_some_and(|r| self.resumable_with(user, r));
        if let Some(wait) = self.held_back(name, now).filter(|_| !owner) {
            self.refuse_attempts(client, user, "for the name, from several addresses", wait);
            return true;
        }
        if let Some(text) = self.checks_over_budget(address, now) {
            self.login_refused(client, user, "too many password checks from its address");
            self.refuse(client, RefuseCode::TOO_MANY_ATTEMPTS, &text);
            return true;
        }
        false
    }

    /// Whether a `Hello` for `username` ends the same whatever the
    /// account password: its name is held by a live connection here,
    /// which a right password does not take over (it only takes back a
    /// session waiting for its client), and no token that could resume
    /// that session came with it. Such a `Hello` is answered `NAME_TAKEN`
    /// without the server's check: checking it costs a hash, and would
    /// let anyone who knows a password (the name's owner, already in)
    /// have the server hash it as often as it likes.
    fn taken_whatever_the_password(
        &self,
        username: &Username,
        resume: Option<&ResumeRequest>,
    ) -> bool {
        self.names.contains_key(&self.key(username))
            && !resume.is_some_and(|r| self.resumable_with(username, r))
    }

    /// The server's answer to [`HubEvent::CheckAccount`] for `client`: the
    /// handshake goes on (a resume or a join) or is refused. Nothing
    /// happens if the connection is gone or was not waiting.
    pub fn account_checked(&mut self, client: ClientId, check: AccountCheck, now: Instant) {
        self.clock = self.clock.max(now);
        // A wrong password counts even when its sender did not wait for
        // the answer.
        let counted = self.end_check(client);
        if check == AccountCheck::Wrong {
            if let Some(guess) = &counted {
                self.note_failure(guess.address.clone(), now);
                self.note_failure(guess.name.clone(), now);
            }
        }
        if let Some(done) = &counted {
            // The next login of the address waiting for its turn.
            let address = done.address.clone();
            self.start_queued(&address, now);
        }
        let Some(conn) = self.conns.get_mut(&client) else {
            return;
        };
        let Some(hello) = conn.verifying.take() else {
            return;
        };
        let peer = conn.peer.map(super::address_key);
        let user = hello.username;
        match check {
            AccountCheck::Open => self.enter(client, user, hello.resume, false, now),
            AccountCheck::Verified => {
                self.note_known_address(client, &user);
                self.enter(client, user, hello.resume, true, now);
            }
            AccountCheck::Missing => self.refuse(
                client,
                RefuseCode::NAME_PROTECTED,
                &format!("the username '{user}' is registered; its password is needed"),
            ),
            AccountCheck::LooksRegistered => self.refuse(
                client,
                RefuseCode::NAME_PROTECTED,
                &format!(
                    "the username '{user}' looks like a registered name; that name's password is needed"
                ),
            ),
            AccountCheck::Wrong => {
                if counted.is_none() {
                    self.note_failure(FailKey::Address(peer), now);
                    self.note_failure(FailKey::Name(self.key(&user)), now);
                }
                self.login_refused(client, &user, "wrong password for the name");
                self.refuse(
                    client,
                    RefuseCode::WRONG_ACCOUNT_PASSWORD,
                    &format!("wrong password for the username '{user}'"),
                );
            }
            // Accounts cannot be checked, but this is a session of this
            // server asked back with its own token: it was let in before,
            // and a user of this server is served through an outage, as
            // one whose connection stayed is. (Not as authenticated: an
            // operator logs in again for its rights.)
            AccountCheck::Unavailable(_)
                if hello
                    .resume
                    .as_ref()
                    .is_some_and(|r| self.resumable_with(&user, r)) =>
            {
                self.enter(client, user, hello.resume, false, now);
            }
            AccountCheck::Unavailable(_) => {
                // The server logs why it could not check; the client did
                // nothing wrong.
                self.refuse(
                    client,
                    RefuseCode::SERVER_FULL,
                    "the server cannot check accounts now; try again later",
                );
            }
        }
        self.commit_history(now);
    }

    /// The server's answer to [`HubEvent::Register`] or
    /// [`HubEvent::Unregister`]: `code` and `text` go to the client in a
    /// `Notice`. A connection that registered counts as authenticated.
    pub fn account_changed(&mut self, client: ClientId, code: NoticeCode, text: &str) {
        let Some(conn) = self.conns.get_mut(&client) else {
            return;
        };
        if code == NoticeCode::REGISTERED {
            conn.authenticated = true;
            if let Phase::Joined(user) = &conn.phase {
                let user = user.clone();
                self.note_known_address(client, &user);
            }
        } else if code == NoticeCode::UNREGISTERED {
            conn.authenticated = false;
        }
        self.send(
            client,
            ServerMessage::Notice {
                code,
                text: text.to_string(),
            },
        );
    }

    pub(super) fn notice(&mut self, client: ClientId, code: NoticeCode, text: impl Into<String>) {
        self.send(
            client,
            ServerMessage::Notice {
                code,
                text: text.into(),
            },
        );
    }

    /// The account and operator messages of a joined client.
    pub(super) fn account_message(&mut self, client: ClientId, user: Username, msg: ClientMessage) {
        match msg {
            ClientMessage::Auth { .. } => {
                self.error(client, ErrorCode::UNEXPECTED, "already joined");
            }
            ClientMessage::Register { .. } | ClientMessage::Unregister
                if self.auth.accounts && self.auth.operators.contains(&self.key(&user)) =>
            {
                // Whoever registered an operator's name from a client would
                // have its rights: the first to join under it, before its
                // owner did. Its account is kept from the server's machine.
                let how = if matches!(msg, ClientMessage::Register { .. }) {
                    format!(
                        "registered on the server's machine (imchat-server --register-name {user})"
                    )
                } else {
                    format!(
                        "unregistered on the server's machine (imchat-server --reset-name {user})"
                    )
                };
                self.notice(
                    client,
                    NoticeCode::NOT_PERMITTED,
                    format!("'{user}' is an operator's name: it is {how}, not from a client"),
                );
            }
            ClientMessage::Register { password } => {
                if self.auth.accounts {
                    self.events.push_back(HubEvent::Register {
                        client,
                        user,
                        password,
                    });
                } else {
                    self.notice(
                        client,
                        NoticeCode::NO_ACCOUNTS,
                        "this server keeps no accounts (it runs without a database)",
                    );
                }
            }
            ClientMessage::Unregister => {
                if self.auth.accounts {
                    self.events.push_back(HubEvent::Unregister { client, user });
                } else {
                    self.notice(
                        client,
                        NoticeCode::NO_ACCOUNTS,
                        "this server keeps no accounts (it runs without a database)",
                    );
                }
            }
            ClientMessage::Operate {
                action,
                target,
                reason,
            } => {
                let allowed = self.conns.get(&client).is_some_and(|c| c.authenticated)
                    && self.auth.operators.contains(&self.key(&user));
                if !allowed {
                    self.events.push_back(HubEvent::NotPermitted {
                        client,
                        action,
                        target: target.clone(),
                    });
                    self.notice(
                        client,
                        NoticeCode::NOT_PERMITTED,
                        "only the server's operators may kick and ban",
                    );
                    return;
                }
                if action == OpAction::Ban && self.bans_self(client, &user, &target) {
                    self.notice(
                        client,
                        NoticeCode::FAILED,
                        format!("'{target}' is yourself: banning it would lock you out of this server (its console can)"),
                    );
                    return;
                }
                let now = self.clock;
                let (code, text) = self.operate(user.as_str(), action, &target, &reason, now);
                // The operator may have removed itself.
                if self.conns.contains_key(&client) {
                    self.notice(client, code, text);
                }
            }
            _ => {}
        }
    }

    /// A line of the server's console (`kick NAME [reason]`, `ban
    /// NAME|ADDRESS [reason]`, `unban NAME|ADDRESS`, `bans`), carried out
    /// as operator `console`; `who` lists who is online, with where each
    /// connects from. Returns the line to show.
    pub fn console(&mut self, line: &str, now: Instant) -> String {
        self.clock = self.clock.max(now);
        // `who` and anything after it (`who is here`): the list.
        let word = line.split_whitespace().next().unwrap_or_default();
        if matches!(
            word.trim_start_matches('/').to_ascii_lowercase().as_str(),
            "who" | "users"
        ) {
            return self.console_who();
        }
        match parse_operator_line(line) {
            Ok((action, target, reason)) => {
                let (_, text) = self.operate("console", action, &target, &reason, now);
                text
            }
            Err(e) => e,
        }
    }

    /// The console's `who`: everyone online in [`name_order`](crate::name_order), each with
    /// the address it connects from, `away` for a session waiting for its
    /// client, or `on another server` in a cluster.
    fn console_who(&self) -> String {
        let mut users: Vec<(String, String)> = self
            .conns
            .values()
            .filter_map(|c| match &c.phase {
                Phase::Joined(u) => Some((
                    u.to_string(),
                    c.peer.map_or_else(|| "?".to_string(), |ip| ip.to_string()),
                )),
                Phase::Handshaking => None,
            })
            .chain(
                self.sessions
                    .values()
                    .filter(|s| s.conn.is_none())
                    .map(|s| (s.user.to_string(), "away".to_string())),
            )
            .chain(
                self.remote_names()
                    .map(|u| (u.to_string(), "on another server".to_string())),
            )
            .collect();
        users.sort_by(|(a, _), (b, _)| crate::name_order(a, b));
        if users.is_empty() {
            return "nobody is online".into();
        }
        let list: Vec<String> = users
            .iter()
            .map(|(name, at)| format!("{name} ({at})"))
            .collect();
        format!("{} online: {}", users.len(), list.join(", "))
    }

    /// Whether a ban of `target` would name operator `user` itself, on
    /// connection `client`: its name, or the address it connects from. A
    /// ban the operator cannot lift from anywhere (only the server's
    /// console, or a restart without the database, can).
    fn bans_self(&self, client: ClientId, user: &Username, target: &str) -> bool {
        match BanTarget::parse(target) {
            Ok(BanTarget::Name(n)) => self.key(&n) == self.key(user),
            Ok(BanTarget::Address(ip)) => self
                .conns
                .get(&client)
                .and_then(|c| c.peer)
                .is_some_and(|p| p.to_canonical() == ip),
            Err(_) => false,
        }
    }

    /// Carries out an operator's request; the answer's code and text.
    fn operate(
        &mut self,
        by: &str,
        action: OpAction,
        target: &str,
        reason: &str,
        now: Instant,
    ) -> (NoticeCode, String) {
        // Shown to whoever is removed and to everyone else, and kept with
        // a ban: no longer than a parting text (a console has no limit).
        let reason = parting_text(reason);
        let (code, text) = match action {
            OpAction::Kick => self.op_kick(by, target, reason),
            OpAction::Ban => self.op_ban(by, target, reason),
            OpAction::Unban => self.op_unban(target),
            OpAction::Bans => (NoticeCode::DONE, self.bans_text()),
        };
        self.events.push_back(HubEvent::Operated {
            by: by.to_string(),
            action,
            target: target.to_string(),
            reason: reason.to_string(),
            outcome: text.clone(),
        });
        self.commit_history(now);
        (code, text)
    }

    fn op_kick(&mut self, by: &str, target: &str, reason: &str) -> (NoticeCode, String) {
        let Ok(user) = Username::new(target) else {
            let target = typed(target);
            return (NoticeCode::FAILED, format!("'{target}' is not a username"));
        };
        let key = self.key(&user);
        let text = removal_text("kicked", by, reason);
        if let Some(&client) = self.names.get(&key) {
            let shown = self.username(client).cloned().unwrap_or(user);
            self.remove_by_operator(client, &text);
            (NoticeCode::DONE, format!("kicked {shown}"))
        } else if let Some(away) = self.sessions.get(&key).map(|s| s.user.clone()) {
            // Away (waiting for a resume): its session ends, kicked.
            self.kick_ghost(&key, &text);
            (NoticeCode::DONE, format!("kicked {away} (it was away)"))
        } else if let Some((remote, where_)) = self.remove_remote(&key, &text) {
            (NoticeCode::DONE, format!("kicked {remote} ({where_})"))
        } else {
            (NoticeCode::FAILED, format!("no user '{user}' online"))
        }
    }

    /// Removes `key`, a user of another server, for an operator (`text`):
    /// its own server removes it, and announces that it left; if that
    /// server is gone (its session waits for a resume), every server
    /// removes it, this one now. The user, and where it was; `None` if no
    /// other server has a user of that name.
    fn remove_remote(&mut self, key: &str, text: &str) -> Option<(Username, &'static str)> {
        let remote = self.remote_user(key).cloned()?;
        self.publish(ClusterEvent::Kick {
            user: remote.clone(),
            text: text.to_string(),
        });
        let where_ = if self.kick_remote(key, text, self.clock) {
            "it was away"
        } else if self.remote.cut_off {
            "on another server: carried out once the cluster can be reached again"
        } else {
            "on another server"
        };
        Some((remote, where_))
    }

    fn op_ban(&mut self, by: &str, target: &str, reason: &str) -> (NoticeCode, String) {
        let target = match BanTarget::parse(target) {
            Ok(BanTarget::Name(n)) if looks_like_ipv4(n.as_str()) => {
                return (
                    NoticeCode::FAILED,
                    format!(
                        "'{n}' is not an address: an IPv4 address is four numbers from 0 to 255"
                    ),
                )
            }
            Ok(t) => t,
            Err(e) => return (NoticeCode::FAILED, e),
        };
        let already = self
            .auth
            .bans
            .iter()
            .find(|b| self.same_target(&b.target, &target))
            .map(|b| b.target.clone());
        if already.is_none() {
            self.auth.bans.push(Ban {
                target: target.clone(),
                by: by.to_string(),
                reason: reason.to_string(),
            });
            self.bans_changed();
        }
        let text = removal_text("banned", by, reason);
        let removed = self.enforce_ban(&target, &text);
        // A user of another server is removed as by a kick, with the
        // ban's text: at once when its server died and its session waits
        // for a resume (no server would disconnect it then).
        if let BanTarget::Name(user) = &target {
            let key = self.key(user);
            if let Some((_, where_)) = self.remove_remote(&key, &text) {
                return (NoticeCode::DONE, format!("banned {target} ({where_})"));
            }
        }
        // In a cluster each server disconnects its own users the ban names.
        let others = if self.remote.enabled {
            " here; the other servers disconnect theirs"
        } else {
            ""
        };
        let done = match already {
            Some(banned) => format!("{banned} was already banned"),
            None => format!("banned {target}"),
        };
        (
            NoticeCode::DONE,
            format!("{done} ({removed} disconnected{others})"),
        )
    }

    /// Removes the connections (and a name's session waiting to be
    /// resumed) that a ban of `target` names, telling them `text`;
    /// returns how many connections.
    fn enforce_ban(&mut self, target: &BanTarget, text: &str) -> usize {
        let mut hit: Vec<ClientId> = match target {
            BanTarget::Address(ip) => self
                .conns
                .iter()
                .filter(|(_, c)| c.peer.map(|p| p.to_canonical()) == Some(*ip))
                .map(|(id, _)| *id)
                .collect(),
            BanTarget::Name(user) => self
                .names
                .get(&self.key(user))
                .copied()
                .into_iter()
                .collect(),
        };
        hit.sort_unstable();
        let removed = hit.len();
        for client in hit {
            if self.is_joined(client) {
                self.remove_by_operator(client, text);
            } else {
                self.refuse(client, RefuseCode::BANNED, text);
            }
        }
        if let BanTarget::Name(user) = target {
            let key = self.key(user);
            if self.sessions.contains_key(&key) {
                self.kick_ghost(&key, text);
            }
        }
        removed
    }

    fn op_unban(&mut self, target: &str) -> (NoticeCode, String) {
        let target = match BanTarget::parse(target) {
            Ok(t) => t,
            Err(e) => return (NoticeCode::FAILED, e),
        };
        let before = self.auth.bans.len();
        let bans = std::mem::take(&mut self.auth.bans);
        let kept: Vec<Ban> = bans
            .into_iter()
            .filter(|b| !self.same_target(&b.target, &target))
            .collect();
        self.auth.bans = kept;
        if self.auth.bans.len() == before {
            (NoticeCode::FAILED, format!("{target} is not banned"))
        } else {
            self.bans_changed();
            (NoticeCode::DONE, format!("unbanned {target}"))
        }
    }

    /// The same ban target: the same address, or names with the same key.
    fn same_target(&self, a: &BanTarget, b: &BanTarget) -> bool {
        match (a, b) {
            (BanTarget::Name(x), BanTarget::Name(y)) => self.key(x) == self.key(y),
            _ => a == b,
        }
    }

    fn bans_text(&self) -> String {
        if self.auth.bans.is_empty() {
            return "no bans".into();
        }
        let lines: Vec<String> = self
            .auth
            .bans
            .iter()
            .map(|b| {
                if b.reason.is_empty() {
                    format!("{} (by {})", b.target, b.by)
                } else {
                    format!("{} (by {}: {})", b.target, b.by, b.reason)
                }
            })
            .collect();
        format!("bans: {}", lines.join("; "))
    }

    /// Removes a joined client for an operator: it is told why
    /// ([`ErrorCode::KICKED`]) and the others see it leave
    /// ([`LeaveReason::KICKED`], with the text).
    pub(super) fn remove_by_operator(&mut self, client: ClientId, text: &str) {
        self.error(client, ErrorCode::KICKED, text);
        self.depart(
            client,
            LeaveReason::KICKED,
            text.to_string(),
            text.to_string(),
        );
    }

    /// How long logins counted against `key` still wait, when its wrong
    /// passwords (and those being checked) reached its cap: until its
    /// window ends (a whole window while only checks in flight fill it).
    fn held_back(&self, key: &FailKey, now: Instant) -> Option<Duration> {
        let window = self.limits.auth_window;
        let limit = match key {
            FailKey::Address(_) => self.limits.auth_attempts,
            FailKey::Name(_) => self
                .limits
                .auth_attempts
                .saturating_mul(NAME_ATTEMPTS_FACTOR),
        };
        let (start, failed) = self
            .auth
            .failures
            .get(key)
            .filter(|(start, _)| now.saturating_duration_since(*start) < window)
            .map_or((now, 0), |&(start, n)| (start, n));
        let in_flight = self.auth.in_flight.get(key).copied().unwrap_or(0);
        (failed.saturating_add(in_flight) >= limit)
            .then(|| window.saturating_sub(now.saturating_duration_since(start)))
    }

    /// Whether `user` logged in from `address` with its password before.
    fn known_address(&self, user: &Username, address: &FailKey) -> bool {
        let FailKey::Address(peer) = address else {
            return false;
        };
        self.auth
            .known
            .get(&self.key(user))
            .is_some_and(|known| known.contains(peer))
    }

    /// Notes that `client`'s user proved the name `user` is its own (its
    /// password checked, or the name registered) from its address.
    fn note_known_address(&mut self, client: ClientId, user: &Username) {
        let Some(peer) = self
            .conns
            .get(&client)
            .map(|c| c.peer.map(super::address_key))
        else {
            return;
        };
        let key = self.key(user);
        if !self.auth.known.contains_key(&key) && self.auth.known.len() >= MAX_KNOWN_NAMES {
            // Bounded: some other name forgets where it logged in from
            // (its logins are then held back by the name's cap again).
            if let Some(other) = self.auth.known.keys().next().cloned() {
                self.auth.known.remove(&other);
            }
        }
        let known = self.auth.known.entry(key).or_default();
        known.retain(|a| *a != peer);
        if known.len() >= KNOWN_ADDRESSES_PER_NAME {
            known.pop_front();
        }
        known.push_back(peer);
    }

    /// Why a password check from `address` is not made now, whatever the
    /// password: [`Limits::account_checks_at_once`](crate::Limits::account_checks_at_once)
    /// in flight, or [`Limits::account_checks_per_address`](crate::Limits::account_checks_per_address)
    /// asked within the window. Each check costs the server a hash, so
    /// every one is charged to its address, right passwords too.
    fn checks_over_budget(&self, address: &FailKey, now: Instant) -> Option<String> {
        if matches!(address, FailKey::Address(None)) {
            return None;
        }
        let waiting = self.auth.queued.get(address).map_or(0, VecDeque::len);
        if waiting >= MAX_QUEUED_PER_ADDRESS {
            return Some(format!(
                "too many logins from your address waiting for their password check ({waiting}); try again in a few seconds"
            ));
        }
        let per_window = self.limits.account_checks_per_address;
        let window = self.limits.auth_window;
        let (start, asked) = self.auth.checks_asked.get(address).copied()?;
        let since = now.saturating_duration_since(start);
        if per_window > 0 && since < window && asked >= per_window {
            let wait = window.saturating_sub(since).as_secs().max(1);
            return Some(format!(
                "too many password checks from your address ({per_window} in {} s); try again in {wait} s",
                window.as_secs()
            ));
        }
        None
    }

    /// A password check asked of the server for `client`: it counts as a
    /// failure of `whom` until [`Hub::account_checked`] answers it, and
    /// against its address's checks.
    fn start_check(&mut self, client: ClientId, whom: InFlight, now: Instant) {
        let window = self.limits.auth_window;
        if self.auth.checks_asked.len() >= MAX_FAILURE_ENTRIES {
            self.auth
                .checks_asked
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let asked = self
            .auth
            .checks_asked
            .entry(whom.address.clone())
            .or_insert((now, 0));
        if now.saturating_duration_since(asked.0) >= window {
            *asked = (now, 0);
        }
        asked.1 = asked.1.saturating_add(1);
        for key in [&whom.address, &whom.name] {
            *self.auth.in_flight.entry(key.clone()).or_default() += 1;
        }
        self.auth.checking.insert(client, (whom, now));
    }

    /// The answer to `client`'s password check came: it no longer counts
    /// as in flight. Whom it counted against, if it was counted.
    fn end_check(&mut self, client: ClientId) -> Option<InFlight> {
        let (whom, _) = self.auth.checking.remove(&client)?;
        for key in [&whom.address, &whom.name] {
            if let Some(n) = self.auth.in_flight.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.auth.in_flight.remove(key);
                }
            }
        }
        Some(whom)
    }

    /// Checks asked more than a window ago whose answer never came stop
    /// counting (a frontend that lost one must not lock a name out).
    fn expire_checks(&mut self, now: Instant) {
        let window = self.limits.auth_window;
        let stale: Vec<ClientId> = self
            .auth
            .checking
            .iter()
            .filter(|(_, (_, asked))| now.saturating_duration_since(*asked) >= window)
            .map(|(c, _)| *c)
            .collect();
        for client in stale {
            if let Some(done) = self.end_check(client) {
                self.start_queued(&done.address, now);
            }
        }
    }

    /// Refuses a login held back by wrong passwords `whose` ("from its
    /// address", "for the name, ...") for `wait` more.
    fn refuse_attempts(&mut self, client: ClientId, user: &Username, whose: &str, wait: Duration) {
        let secs = whole_secs(wait);
        self.login_refused(
            client,
            user,
            &format!("too many failed password attempts {whose}; its logins wait {secs} s"),
        );
        self.refuse(
            client,
            RefuseCode::TOO_MANY_ATTEMPTS,
            &format!("too many failed password attempts; try again in {secs} s"),
        );
    }

    /// Tells the server a login was refused for a password: a warning,
    /// not a [`HubEvent::Violation`].
    fn login_refused(&mut self, client: ClientId, user: &Username, reason: &str) {
        self.events.push_back(HubEvent::LoginRefused {
            client,
            user: user.clone(),
            reason: reason.to_string(),
        });
    }

    fn note_failure(&mut self, key: FailKey, now: Instant) {
        let window = self.limits.auth_window;
        if self.auth.failures.len() >= MAX_FAILURE_ENTRIES {
            self.auth
                .failures
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let e = self.auth.failures.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Whether `client` is waiting for [`Hub::account_checked`].
    pub(super) fn is_verifying(&self, client: ClientId) -> bool {
        self.conns
            .get(&client)
            .is_some_and(|c| c.verifying.is_some() && matches!(c.phase, Phase::Handshaking))
    }
}

/// What a removed user is told: "kicked by NAME: reason".
fn removal_text(what: &str, by: &str, reason: &str) -> String {
    if reason.is_empty() {
        format!("{what} by {by}")
    } else {
        format!("{what} by {by}: {reason}")
    }
}
