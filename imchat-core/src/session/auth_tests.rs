//! Tests of the authentication step, accounts, operators and bans: the hub
//! driven with messages and the server's answers, and the client session's
//! side of it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::limits::Limits;
use crate::message::*;

fn user(s: &str) -> Username {
    Username::new(s).unwrap()
}

fn secret(s: &str) -> Secret {
    Secret::new(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn hello(name: &str) -> ClientMessage {
    ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        username: user(name),
        resume: None,
    }
}

fn auth(server: Option<&str>, account: Option<&str>) -> ClientMessage {
    ClientMessage::Auth {
        server: server.map(secret),
        account: account.map(secret),
    }
}

/// What connection `c` was sent, in short: `welcome`, `refused: <code>`,
/// `notice: <code>: <text>`, `error: <code>: <text>`, `left: <user>: <text>`.
fn sent(hub: &mut Hub, c: ClientId) -> Vec<String> {
    let mut out = Vec::new();
    hub.flush_presence();
    while let Some(t) = hub.poll_transmit() {
        if !t.to.contains(c) {
            continue;
        }
        match t.message {
            ServerMessage::Welcome { resumed, .. } => out.push(if resumed.is_some() {
                "resumed".into()
            } else {
                "welcome".into()
            }),
            ServerMessage::Refused { code, .. } => out.push(format!("refused: {code}")),
            ServerMessage::Notice { code, text } => out.push(format!("notice: {code}: {text}")),
            ServerMessage::Error { code, text, .. } => out.push(format!("error: {code}: {text}")),
            ServerMessage::Presence(events) => {
                for e in events {
                    match e {
                        PresenceEvent::Left(d) => out.push(format!("left: {}: {}", d.user, d.text)),
                        PresenceEvent::Joined { user, .. } => out.push(format!("joined: {user}")),
                        // Away and back are told apart in the hub tests.
                        PresenceEvent::Away { .. } | PresenceEvent::Back { .. } => {}
                    }
                }
            }
            other => out.push(format!("{other:?}").chars().take(20).collect()),
        }
    }
    hub.check_invariants().unwrap();
    out
}

/// The hub events raised so far.
fn events(hub: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| hub.poll_event()).collect()
}

fn hub() -> Hub {
    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_token_source(Box::new(|| [7; 16]));
    hub
}

/// A `Hello` for `name` from `peer` with its account password, on a hub
/// with accounts, the server verifying it.
fn hello_verified(hub: &mut Hub, name: &str, peer: &str, now: Instant) -> ClientId {
    let c = hub.handle_connect_from(ip(peer), now);
    hub.handle_message(c, auth(None, Some("pw")), now);
    hub.handle_message(c, hello(name), now);
    hub.account_checked(c, AccountCheck::Verified, now);
    c
}

/// Joins `name` from `peer` on a hub with accounts, the server verifying.
fn join_verified(hub: &mut Hub, name: &str, peer: &str, now: Instant) -> ClientId {
    let c = hello_verified(hub, name, peer, now);
    assert!(hub.is_joined(c));
    c
}

#[test]
fn the_server_password_is_required_checked_and_then_lets_in() {
    let now = Instant::now();
    let mut hub = hub();
    hub.set_server_password(Some(secret("letmein")));
    let c = hub.handle_connect_from(ip("10.0.0.1"), now);
    hub.handle_message(c, hello("alice"), now);
    assert_eq!(sent(&mut hub, c), ["refused: the server needs a password"]);
    let c = hub.handle_connect_from(ip("10.0.0.1"), now);
    hub.handle_message(c, auth(Some("letmeout"), None), now);
    hub.handle_message(c, hello("alice"), now);
    assert_eq!(sent(&mut hub, c), ["refused: wrong server password"]);
    let c = hub.handle_connect_from(ip("10.0.0.1"), now);
    hub.handle_message(c, auth(Some("letmein"), None), now);
    hub.handle_message(c, hello("alice"), now);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
}

#[test]
fn without_a_password_or_accounts_a_plain_hello_joins_as_before() {
    let now = Instant::now();
    let mut hub = hub();
    let c = hub.handle_connect_from(ip("10.0.0.1"), now);
    hub.handle_message(c, hello("alice"), now);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
    assert!(!events(&mut hub)
        .iter()
        .any(|e| matches!(e, HubEvent::CheckAccount { .. })));
}

/// Locks `address` out: as many wrong server passwords from it as the
/// limits allow, each refused as wrong.
fn lock_out(hub: &mut Hub, address: &str, limits: &Limits, now: Instant) {
    for _ in 0..limits.auth_attempts {
        let c = hub.handle_connect_from(ip(address), now);
        hub.handle_message(c, auth(Some("guess"), None), now);
        hub.handle_message(c, hello("alice"), now);
        assert_eq!(sent(hub, c), ["refused: wrong server password"]);
    }
}

#[test]
fn wrong_server_passwords_are_limited_per_address() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_server_password(Some(secret("letmein")));
    let limits = Limits::default();
    lock_out(&mut hub, "10.0.0.1", &limits, t0);
    // Even the right password is refused from that address for a while.
    let c = hub.handle_connect_from(ip("10.0.0.1"), t0);
    hub.handle_message(c, auth(Some("letmein"), None), t0);
    hub.handle_message(c, hello("alice"), t0);
    assert_eq!(sent(&mut hub, c), ["refused: too many failed attempts"]);
    // Another address is not affected.
    let c = hub.handle_connect_from(ip("10.0.0.2"), t0);
    hub.handle_message(c, auth(Some("letmein"), None), t0);
    hub.handle_message(c, hello("bob"), t0);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
    // After the window, the first address may try again.
    let t1 = t0 + limits.auth_window;
    let c = hub.handle_connect_from(ip("10.0.0.1"), t1);
    hub.handle_message(c, auth(Some("letmein"), None), t1);
    hub.handle_message(c, hello("alice"), t1);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
}

#[test]
fn a_hello_without_the_password_from_a_locked_out_address_is_told_both() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_server_password(Some(secret("letmein")));
    let limits = Limits::default();
    lock_out(&mut hub, "10.0.0.1", &limits, t0);
    // No password at all: the server needs one (the code a client acts
    // on), and this address must wait before it may try one.
    let c = hub.handle_connect_from(ip("10.0.0.1"), t0);
    hub.handle_message(c, hello("alice"), t0);
    let mut refusals = Vec::new();
    while let Some(t) = hub.poll_transmit() {
        if let ServerMessage::Refused { code, reason, .. } = t.message {
            refusals.push((code, reason));
        }
    }
    let secs = limits.auth_window.as_secs();
    assert_eq!(
        refusals,
        [(
            RefuseCode::PASSWORD_REQUIRED,
            format!(
                "this server needs a password (after too many failed attempts from this address, try again in {secs} s)"
            )
        )]
    );
    // Once the wait is over, as before the lockout.
    let t1 = t0 + limits.auth_window;
    let c = hub.handle_connect_from(ip("10.0.0.1"), t1);
    hub.handle_message(c, hello("alice"), t1);
    let mut refusals = Vec::new();
    while let Some(t) = hub.poll_transmit() {
        if let ServerMessage::Refused { code, reason, .. } = t.message {
            refusals.push((code, reason));
        }
    }
    assert_eq!(
        refusals,
        [(
            RefuseCode::PASSWORD_REQUIRED,
            "this server needs a password".to_string()
        )]
    );
}

#[test]
fn a_hello_waits_for_the_account_check_and_nothing_is_seen_before() {
    let now = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let bob = join_verified(&mut hub, "bob", "10.0.0.9", now);
    sent(&mut hub, bob);
    events(&mut hub);
    let c = hub.handle_connect_from(ip("10.0.0.1"), now);
    hub.handle_message(c, hello("alice"), now);
    // No welcome, no history, no roster, and nobody told of a join.
    assert!(sent(&mut hub, c).is_empty());
    assert!(sent(&mut hub, bob).is_empty());
    let asked: Vec<_> = events(&mut hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::CheckAccount {
                client,
                user,
                password,
            } => Some((client, user, password)),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [(c, user("alice"), None)]);
    // Anything before the answer ends the connection.
    hub.handle_message(c, ClientMessage::Who, now);
    assert_eq!(sent(&mut hub, c), ["refused: a username must be set first"]);
    assert!(!hub.is_connected(c));
    // A late answer for it does nothing.
    hub.account_checked(c, AccountCheck::Open, now);
    assert!(sent(&mut hub, c).is_empty());
}

#[test]
fn a_protected_name_needs_its_password_and_wrong_ones_are_limited_per_name() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let c = hub.handle_connect_from(ip("10.0.0.1"), t0);
    hub.handle_message(c, hello("alice"), t0);
    hub.account_checked(c, AccountCheck::Missing, t0);
    assert_eq!(
        sent(&mut hub, c),
        ["refused: username registered; its password is needed"]
    );
    // Wrong guesses from many addresses count against the name (ten times
    // an address's limit).
    let attempts = Limits::default().auth_attempts * 10;
    for i in 0..attempts {
        let c = hub.handle_connect_from(ip(&format!("10.0.1.{i}")), t0);
        hub.handle_message(c, auth(None, Some("guess")), t0);
        hub.handle_message(c, hello("alice"), t0);
        hub.account_checked(c, AccountCheck::Wrong, t0);
        assert_eq!(
            sent(&mut hub, c),
            ["refused: wrong password for this username"]
        );
    }
    let c = hub.handle_connect_from(ip("10.0.2.1"), t0);
    hub.handle_message(c, auth(None, Some("right")), t0);
    hub.handle_message(c, hello("ALICE"), t0);
    assert_eq!(sent(&mut hub, c), ["refused: too many failed attempts"]);
    // Not checked at all: no hash computed for it.
    assert!(!events(&mut hub)
        .iter()
        .any(|e| matches!(e, HubEvent::CheckAccount { client, .. } if *client == c)));
    // Another name from the same address is fine.
    let c = hub.handle_connect_from(ip("10.0.2.1"), t0);
    hub.handle_message(c, hello("bob"), t0);
    hub.account_checked(c, AccountCheck::Open, t0);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
}

#[test]
fn a_resume_token_does_not_stand_in_for_the_account_password() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let a = join_verified(&mut hub, "alice", "10.0.0.1", t0);
    sent(&mut hub, a);
    hub.handle_disconnect(a, LeaveReason::LOST);
    let resume = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        username: user("alice"),
        resume: Some(ResumeRequest {
            token: ResumeToken([7; 16]),
            last_seen: MessageId(0),
            epoch: hub.epoch(),
        }),
    };
    // The right token, no password: refused, and the session still waits.
    let c = hub.handle_connect_from(ip("10.0.0.1"), t0);
    hub.handle_message(c, resume.clone(), t0);
    assert!(sent(&mut hub, c).is_empty(), "nothing before the check");
    hub.account_checked(c, AccountCheck::Missing, t0);
    assert_eq!(
        sent(&mut hub, c),
        ["refused: username registered; its password is needed"]
    );
    // With the password, the session comes back.
    let c = hub.handle_connect_from(ip("10.0.0.1"), t0);
    hub.handle_message(c, auth(None, Some("pw")), t0);
    hub.handle_message(c, resume, t0);
    hub.account_checked(c, AccountCheck::Verified, t0);
    assert_eq!(sent(&mut hub, c)[0], "resumed");
}

#[test]
fn auth_is_taken_once_and_only_before_the_hello() {
    let now = Instant::now();
    let mut hub = hub();
    let c = hub.handle_connect(now);
    hub.handle_message(c, auth(Some("a"), None), now);
    hub.handle_message(c, auth(Some("a"), None), now);
    assert_eq!(sent(&mut hub, c), ["refused: a username must be set first"]);
    let c = hub.handle_connect(now);
    hub.handle_message(c, hello("alice"), now);
    sent(&mut hub, c);
    hub.handle_message(c, auth(Some("a"), None), now);
    assert_eq!(
        sent(&mut hub, c),
        ["error: unexpected message: already joined"]
    );
}

#[test]
fn register_and_unregister_go_to_the_server_or_say_there_are_no_accounts() {
    let now = Instant::now();
    let mut hub = hub();
    let c = hub.handle_connect(now);
    hub.handle_message(c, hello("alice"), now);
    sent(&mut hub, c);
    hub.handle_message(
        c,
        ClientMessage::Register {
            password: secret("pw"),
        },
        now,
    );
    let notice = sent(&mut hub, c);
    assert_eq!(notice.len(), 1);
    assert!(notice[0].starts_with("notice: this server keeps no accounts"));

    let mut hub = self::hub();
    hub.set_accounts(true);
    let c = hub.handle_connect(now);
    hub.handle_message(c, hello("alice"), now);
    hub.account_checked(c, AccountCheck::Open, now);
    events(&mut hub);
    hub.handle_message(
        c,
        ClientMessage::Register {
            password: secret("pw"),
        },
        now,
    );
    hub.handle_message(c, ClientMessage::Unregister, now);
    let asked = events(&mut hub);
    assert!(matches!(&asked[..], [
        HubEvent::Register { client, user: u, password },
        HubEvent::Unregister { client: c2, user: u2 },
    ] if *client == c && *c2 == c && u.as_str() == "alice" && u2.as_str() == "alice"
        && password.expose() == "pw"));
    hub.account_changed(c, NoticeCode::REGISTERED, "registered");
    assert_eq!(
        sent(&mut hub, c).last().unwrap(),
        "notice: username registered: registered"
    );
}

/// A `Hello` that came within the handshake deadline and waits for the
/// server's account check is not refused when the deadline passes during
/// the check (a slow hash on a busy machine is not the client's delay).
#[test]
fn an_account_check_slower_than_the_handshake_deadline_still_lets_the_user_in() {
    let t0 = Instant::now();
    let limits = Limits::default();
    let mut hub = Hub::new(limits.clone(), "hi");
    hub.set_accounts(true);
    let c = hub.handle_connect(t0);
    hub.handle_message(c, auth(None, Some("wonderland")), t0);
    hub.handle_message(c, hello("alice"), t0);
    let later = t0 + limits.handshake_timeout + Duration::from_secs(1);
    assert!(hub.poll_timeout().is_none_or(|t| t > later));
    hub.handle_timeout(later);
    assert!(sent(&mut hub, c).is_empty(), "refused while checked");
    hub.account_checked(c, AccountCheck::Verified, later);
    assert_eq!(
        sent(&mut hub, c).first().map(String::as_str),
        Some("welcome")
    );
    // Without a Hello, the deadline holds.
    let d = hub.handle_connect(later);
    hub.handle_message(d, auth(None, Some("wonderland")), later);
    hub.handle_timeout(later + limits.handshake_timeout);
    assert_eq!(sent(&mut hub, d), ["refused: handshake took too long"]);
}

/// Wrong account passwords for a name hold back the address they come
/// from at the limit (5), but the name only at ten times it, from all
/// addresses together: one address cannot keep the name's owner out, many
/// guessing together are held back.
#[test]
fn failures_for_a_name_from_one_address_do_not_lock_its_owner_out() {
    let now = Instant::now();
    let limits = Limits::default();
    let mut hub = Hub::new(limits.clone(), "hi");
    hub.set_accounts(true);
    let attempt = |hub: &mut Hub, from: &str, check: Option<AccountCheck>| {
        let c = hub.handle_connect_from(ip(from), now);
        hub.handle_message(c, auth(None, Some("guess")), now);
        hub.handle_message(c, hello("alice"), now);
        if let Some(check) = check {
            hub.account_checked(c, check, now);
        }
        sent(hub, c)
    };
    for _ in 0..limits.auth_attempts {
        let got = attempt(&mut hub, "192.0.2.1", Some(AccountCheck::Wrong));
        assert!(got[0].contains("wrong"), "{got:?}");
    }
    let got = attempt(&mut hub, "192.0.2.1", None);
    assert!(got[0].contains("too many"), "{got:?}");
    // The owner, from elsewhere, is checked and let in.
    let c = hub.handle_connect_from(ip("198.51.100.7"), now);
    hub.handle_message(c, auth(None, Some("right")), now);
    hub.handle_message(c, hello("alice"), now);
    hub.account_checked(c, AccountCheck::Verified, now);
    let got = sent(&mut hub, c);
    assert_eq!(got.first().map(String::as_str), Some("welcome"), "{got:?}");
    // (While it is online its name is taken whatever the password, and
    // guesses for it are not even checked.)
    hub.handle_message(
        c,
        ClientMessage::Quit {
            reason: String::new(),
        },
        now,
    );
    // Nine more addresses failing five times each: the name waits.
    for n in 2..=10 {
        for _ in 0..limits.auth_attempts {
            attempt(&mut hub, &format!("192.0.2.{n}"), Some(AccountCheck::Wrong));
        }
    }
    let got = attempt(&mut hub, "203.0.113.9", None);
    assert!(got[0].contains("too many"), "{got:?}");
}

/// Ten addresses each guess `name`'s password wrong as often as their cap
/// allows: the name's cap (ten times an address's) is reached.
fn guess_wrong_from_ten_addresses(hub: &mut Hub, name: &str, now: Instant) {
    for n in 1..=10 {
        for _ in 0..Limits::default().auth_attempts {
            let g = guess(hub, name, "guess", &format!("192.0.2.{n}"), now);
            hub.account_checked(g, AccountCheck::Wrong, now);
        }
    }
}

/// Wrong passwords for a name from many addresses hold the name back, but
/// not its owner where it logged in before, nor its session's resume with
/// the token; and a login held back is told the wait that is left, not
/// the whole window.
#[test]
fn guesses_from_many_addresses_do_not_keep_the_owner_out_where_it_logged_in_before() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let owner = join_verified(&mut hub, "alice", "198.51.100.7", t0);
    sent(&mut hub, owner);
    hub.handle_disconnect(owner, LeaveReason::LOST);
    // Ten addresses guess five times each: the name's cap is reached.
    guess_wrong_from_ten_addresses(&mut hub, "alice", t0);
    refusals(&mut hub);
    events(&mut hub);
    // 20 s on, a newcomer's login waits the 40 s left of the window.
    let t20 = t0 + Duration::from_secs(20);
    let c = guess(&mut hub, "alice", "right", "203.0.113.9", t20);
    let refused = refusals(&mut hub);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, c);
    assert!(
        refused[0].2.ends_with("try again in 40 s"),
        "{:?}",
        refused[0].2
    );
    // Her session's resume with its token and password is checked.
    let c = hub.handle_connect_from(ip("203.0.113.10"), t20);
    hub.handle_message(c, auth(None, Some("pw")), t20);
    hub.handle_message(c, hello_resuming_with(&hub, "alice", [7; 16]), t20);
    assert_eq!(checks_asked(&mut hub), [c], "the resume is checked");
    hub.account_checked(c, AccountCheck::Verified, t20);
    assert_eq!(sent(&mut hub, c)[0], "resumed");
    hub.handle_message(
        c,
        ClientMessage::Quit {
            reason: String::new(),
        },
        t20,
    );
    // A login with no token, from where she logged in before, is checked.
    let c = guess(&mut hub, "alice", "pw", "198.51.100.7", t20);
    assert_eq!(checks_asked(&mut hub), [c], "the owner is checked");
    hub.account_checked(c, AccountCheck::Verified, t20);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
    // Any other address still waits.
    let c = guess(&mut hub, "alice", "right", "203.0.113.11", t20);
    assert_eq!(refusals(&mut hub).len(), 1, "a new address still waits");
    assert!(!hub.is_joined(c));
}

/// The address a name was registered from counts as its owner's: guesses
/// from many addresses that hold the name back do not hold back a login
/// from there.
#[test]
fn the_address_a_name_was_registered_from_is_its_owners() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let c = hub.handle_connect_from(ip("198.51.100.8"), t0);
    hub.handle_message(c, hello("bob"), t0);
    hub.account_checked(c, AccountCheck::Open, t0);
    hub.handle_message(
        c,
        ClientMessage::Register {
            password: secret("pw"),
        },
        t0,
    );
    hub.account_changed(c, NoticeCode::REGISTERED, "registered");
    hub.handle_disconnect(c, LeaveReason::QUIT);
    guess_wrong_from_ten_addresses(&mut hub, "bob", t0);
    events(&mut hub);
    let elsewhere = guess(&mut hub, "bob", "pw", "203.0.113.9", t0);
    let home = guess(&mut hub, "bob", "pw", "198.51.100.8", t0);
    assert_eq!(
        checks_asked(&mut hub),
        [home],
        "only the owner's is checked"
    );
    assert!(!hub.is_joined(elsewhere));
}

/// A `Register` makes the server hash a password: it costs a second of the
/// rate budget, so a client registering and unregistering in a loop is
/// slowed to one hash a second once its burst is spent, where any other
/// request costs one message.
#[test]
fn registering_in_a_loop_is_slowed_to_one_password_hash_a_second() {
    let now = Instant::now();
    let limits = Limits::default();
    let mut hub = Hub::new(limits.clone(), "hi");
    hub.set_accounts(true);
    let c = hub.handle_connect(now);
    hub.handle_message(c, hello("alice"), now);
    hub.account_checked(c, AccountCheck::Open, now);
    for _ in 0..10 {
        hub.handle_message(
            c,
            ClientMessage::Register {
                password: secret("pw"),
            },
            now,
        );
        hub.handle_message(c, ClientMessage::Unregister, now);
    }
    assert!(hub.is_joined(c), "slowed, not disconnected");
    let burst = f64::from(limits.rate_burst) / f64::from(limits.rate_per_sec);
    let ready = hub.throttle(c).expect("in debt after ten registrations");
    let wait = ready.duration_since(now).as_secs_f64();
    // Ten seconds of budget and ten messages, less the burst.
    assert!(wait > 10.0 - burst, "read again after {wait} s");
    // Other requests cost a message each: a hundred `Who`s fit the burst.
    let c = hub.handle_connect(now);
    hub.handle_message(c, hello("bob"), now);
    hub.account_checked(c, AccountCheck::Open, now);
    for _ in 0..50 {
        hub.handle_message(c, ClientMessage::Unregister, now);
        hub.handle_message(c, ClientMessage::Who, now);
    }
    assert_eq!(hub.throttle(c), None);
}

/// A hub with accounts where `op` is an operator, joined with its password.
fn operator_hub(now: Instant) -> (Hub, ClientId) {
    let mut hub = hub();
    hub.set_accounts(true);
    hub.set_operators(&[user("op")]);
    let op = join_verified(&mut hub, "op", "10.0.0.100", now);
    sent(&mut hub, op);
    events(&mut hub);
    (hub, op)
}

fn operate(action: OpAction, target: &str, reason: &str) -> ClientMessage {
    ClientMessage::Operate {
        action,
        target: target.into(),
        reason: reason.into(),
    }
}

#[test]
fn only_an_authenticated_operator_may_kick_and_the_kick_is_told_and_logged() {
    let now = Instant::now();
    let (mut hub, op) = operator_hub(now);
    let bob = join_verified(&mut hub, "bob", "10.0.0.2", now);
    // An operator name joined without its password (not registered) has no rights.
    let mut plain = self::hub();
    plain.set_operators(&[user("op")]);
    let fake = plain.handle_connect(now);
    plain.handle_message(fake, hello("op"), now);
    sent(&mut plain, fake);
    plain.handle_message(fake, operate(OpAction::Kick, "bob", ""), now);
    assert_eq!(
        sent(&mut plain, fake),
        ["notice: not permitted: only the server's operators may kick and ban"]
    );
    // bob is no operator either.
    sent(&mut hub, bob);
    hub.handle_message(bob, operate(OpAction::Kick, "op", ""), now);
    assert!(sent(&mut hub, bob)[0].starts_with("notice: not permitted"));
    events(&mut hub);

    hub.handle_message(op, operate(OpAction::Kick, "BOB", "spam"), now);
    let mut to_bob = Vec::new();
    let mut to_op = Vec::new();
    hub.flush_presence();
    while let Some(t) = hub.poll_transmit() {
        if t.to.contains(bob) {
            to_bob.push(t.message.clone());
        }
        if t.to.contains(op) {
            to_op.push(t.message);
        }
    }
    assert!(to_bob.contains(&ServerMessage::Error {
        code: ErrorCode::KICKED,
        client_id: 0,
        text: "kicked by op: spam".into()
    }));
    assert!(!hub.is_connected(bob));
    assert!(to_op.iter().any(|m| matches!(m,
        ServerMessage::Presence(ev) if ev.iter().any(|e| matches!(e,
            PresenceEvent::Left(d) if d.reason == LeaveReason::KICKED && d.text == "kicked by op: spam")))));
    assert!(to_op.contains(&ServerMessage::Notice {
        code: NoticeCode::DONE,
        text: "kicked bob".into()
    }));
    let logged = events(&mut hub);
    assert!(logged.iter().any(|e| matches!(e,
        HubEvent::Operated { by, action: OpAction::Kick, target, reason, .. }
            if by == "op" && target == "BOB" && reason == "spam")));
}

#[test]
fn an_operator_cannot_ban_its_own_address_or_name() {
    let now = Instant::now();
    let (mut hub, op) = operator_hub(now);
    // Mapped or not, with the name in another case: itself all the same.
    for target in ["10.0.0.100", "::ffff:10.0.0.100", "OP"] {
        hub.handle_message(op, operate(OpAction::Ban, target, "oops"), now);
        let said = sent(&mut hub, op);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("is yourself: banning it would lock you out"),
            "{said:?}"
        );
        assert!(hub.is_connected(op), "{target}");
    }
    assert!(hub.bans().is_empty());
    // The console still can.
    assert!(hub
        .console("ban 10.0.0.100", now)
        .starts_with("banned 10.0.0.100"));
    assert!(!hub.is_connected(op));
}

#[test]
fn bans_by_address_and_by_name_refuse_and_remove_until_lifted() {
    let now = Instant::now();
    let (mut hub, op) = operator_hub(now);
    let bob = join_verified(&mut hub, "bob", "10.0.0.2", now);
    let waiting = hub.handle_connect_from(ip("10.0.0.2"), now);
    sent(&mut hub, bob);
    hub.handle_message(op, operate(OpAction::Ban, "10.0.0.2", "flood"), now);
    assert!(!hub.is_connected(bob), "joined from the address: removed");
    assert!(!hub.is_connected(waiting), "handshaking from it: refused");
    let c = hub.handle_connect_from(ip("10.0.0.2"), now);
    assert_eq!(sent(&mut hub, c), ["refused: banned"]);
    // An IPv4-mapped IPv6 address is the same address.
    let c = hub.handle_connect_from(ip("::ffff:10.0.0.2"), now);
    assert_eq!(sent(&mut hub, c), ["refused: banned"]);
    // By name: the name, whatever its case, from anywhere.
    assert_eq!(
        hub.console("ban carol", now),
        "banned carol (0 disconnected)"
    );
    let c = hub.handle_connect_from(ip("10.0.0.3"), now);
    hub.handle_message(c, hello("Carol"), now);
    assert_eq!(sent(&mut hub, c), ["refused: banned"]);
    // Banned again under another case: said so, not listed twice.
    assert_eq!(
        hub.console("ban CAROL", now),
        "carol was already banned (0 disconnected)"
    );
    assert_eq!(
        hub.console("/bans", now),
        "bans: 10.0.0.2 (by op: flood); carol (by console)"
    );
    let saved = events(&mut hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::BansChanged { bans } => Some(bans.len()),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(saved, [1, 2], "each new ban hands the server every ban");
    // A hub given the bans of a last run refuses them.
    let mut restarted = self::hub();
    restarted.set_bans(hub.bans().to_vec());
    let c = restarted.handle_connect_from(ip("10.0.0.2"), now);
    assert_eq!(sent(&mut restarted, c), ["refused: banned"]);
    assert_eq!(hub.console("unban CAROL", now), "unbanned CAROL");
    assert_eq!(hub.console("unban 10.0.0.2", now), "unbanned 10.0.0.2");
    assert_eq!(hub.console("unban 10.0.0.2", now), "10.0.0.2 is not banned");
    let c = hub.handle_connect_from(ip("10.0.0.2"), now);
    hub.handle_message(c, hello("carol"), now);
    hub.account_checked(c, AccountCheck::Open, now);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
    assert_eq!(hub.console("bans", now), "no bans");
    assert!(hub
        .console("frobnicate x", now)
        .starts_with("unknown command"));
    assert_eq!(hub.console("kick nobody", now), "no user 'nobody' online");
    // A mistyped address is not taken for a username.
    assert_eq!(
        hub.console("ban 999.1.1.1", now),
        "'999.1.1.1' is not an address: an IPv4 address is four numbers from 0 to 255"
    );
    assert_eq!(hub.console("bans", now), "no bans");
    assert_eq!(
        hub.console("ban v1.2.3.4", now),
        "banned v1.2.3.4 (0 disconnected)"
    );
    // An IPv6 address in brackets, as written beside a port.
    assert_eq!(
        hub.console("ban [2001:db8::7]", now),
        "banned 2001:db8::7 (0 disconnected)"
    );
    let c = hub.handle_connect_from(ip("2001:db8::7"), now);
    assert_eq!(sent(&mut hub, c), ["refused: banned"]);
}

#[test]
fn a_ban_made_elsewhere_removes_whom_it_names_here_once() {
    let now = Instant::now();
    let (mut hub, op) = operator_hub(now);
    let bob = join_verified(&mut hub, "bob", "10.0.0.2", now);
    let carol = join_verified(&mut hub, "carol", "10.0.0.3", now);
    let dave = join_verified(&mut hub, "dave", "10.0.0.4", now);
    for c in [op, bob, carol, dave] {
        sent(&mut hub, c);
    }
    events(&mut hub);
    let ban = |target: &str, reason: &str| Ban {
        target: BanTarget::parse(target).unwrap(),
        by: "op2".into(),
        reason: reason.into(),
    };
    // Another server of the cluster banned Bob's name and Carol's address.
    let bans = vec![ban("BOB", "spam"), ban("10.0.0.3", "flood")];
    hub.set_bans(bans.clone());
    assert!(!hub.is_connected(bob) && !hub.is_connected(carol));
    assert!(hub.is_connected(dave) && hub.is_connected(op));
    let seen = sent(&mut hub, dave);
    assert!(
        seen.iter().any(|l| l.starts_with("left: bob:"))
            && seen.iter().any(|l| l.starts_with("left: carol:")),
        "{seen:?}"
    );
    assert!(
        !events(&mut hub)
            .iter()
            .any(|e| matches!(e, HubEvent::BansChanged { .. })),
        "bans made elsewhere are not handed back to be saved again"
    );
    // The same list again (the next poll): nothing new, nobody removed;
    // Bob, joining again from elsewhere, is refused as before.
    let bob2 = join_verified(&mut hub, "erin", "10.0.0.2", now);
    hub.set_bans(bans);
    assert!(hub.is_connected(bob2), "an old ban removed someone again");
    let c = hub.handle_connect_from(ip("10.0.0.9"), now);
    hub.handle_message(c, hello("bob"), now);
    assert_eq!(sent(&mut hub, c), ["refused: banned"]);
}

#[test]
fn operator_lines_parse_with_or_without_a_slash() {
    assert_eq!(
        parse_operator_line("/kick bob  too loud "),
        Ok((OpAction::Kick, "bob".into(), "too loud".into()))
    );
    assert_eq!(
        parse_operator_line("BAN ::1"),
        Ok((OpAction::Ban, "::1".into(), String::new()))
    );
    assert_eq!(
        parse_operator_line("bans"),
        Ok((OpAction::Bans, String::new(), String::new()))
    );
    // A kick names a user (a connection of an address is not kicked by
    // its address): the line must not offer an address.
    assert_eq!(
        parse_operator_line("kick"),
        Err("kick needs a username".into())
    );
    assert_eq!(
        parse_operator_line("ban"),
        Err("ban needs a username or an address".into())
    );
    assert_eq!(
        BanTarget::parse("::ffff:1.2.3.4"),
        Ok(BanTarget::Address(ip("1.2.3.4")))
    );
    assert!(BanTarget::parse("not a name").is_err());
}

#[test]
fn the_client_sends_its_passwords_before_every_hello_and_keeps_a_registered_one() {
    let now = Instant::now();
    let mut s = ClientSession::new(user("alice"), Limits::default(), now);
    s.set_credentials(Some(secret("srv")), None);
    let first: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert_eq!(first[0], auth(Some("srv"), None));
    assert!(matches!(first[1], ClientMessage::Hello { .. }));
    s.handle_message(
        ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            username: user("alice"),
            text: String::new(),
            limits: Hub::new(Limits::default(), "").server_limits(),
            token: ResumeToken([1; 16]),
            epoch: 1,
            grace_secs: 60,
            last_id: MessageId(0),
            resumed: None,
        },
        now,
    );
    s.register(secret("mine")).unwrap();
    assert_eq!(
        s.poll_transmit(),
        Some(ClientMessage::Register {
            password: secret("mine")
        })
    );
    s.handle_message(
        ServerMessage::Notice {
            code: NoticeCode::REGISTERED,
            text: "ok".into(),
        },
        now,
    );
    s.reconnect(now);
    let again: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert_eq!(again[0], auth(Some("srv"), Some("mine")));
    assert!(matches!(
        again[1],
        ClientMessage::Hello {
            resume: Some(_),
            ..
        }
    ));
}

#[test]
fn a_kicked_client_closes_and_says_why() {
    let now = Instant::now();
    let mut net_hub = hub();
    let mut s = ClientSession::new(user("alice"), Limits::default(), now);
    let c = net_hub.handle_connect(now);
    while let Some(m) = s.poll_transmit() {
        net_hub.handle_message(c, m, now);
    }
    while let Some(t) = net_hub.poll_transmit() {
        s.handle_message(t.message, now);
    }
    assert!(s.is_joined());
    assert_eq!(net_hub.console("kick alice bye", now), "kicked alice");
    while let Some(t) = net_hub.poll_transmit() {
        if t.to.contains(c) {
            s.handle_message(t.message, now);
        }
    }
    let evs: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(evs.contains(&ClientEvent::Kicked {
        text: "kicked by console: bye".into()
    }));
    assert!(s.is_closed());
}

/// An operator's reason goes to everyone: cut as a parting text is,
/// however long the console line that gave it.
#[test]
fn an_operators_reason_is_cut_to_a_parting_text() {
    let now = Instant::now();
    let mut hub = hub();
    let c = hub.handle_connect(now);
    hub.handle_message(c, hello("alice"), now);
    hub.account_checked(c, AccountCheck::Open, now);
    while hub.poll_transmit().is_some() {}
    let long = "é".repeat(100_000);
    assert_eq!(
        hub.console(&format!("kick alice {long}"), now),
        "kicked alice"
    );
    let mut told = None;
    while let Some(t) = hub.poll_transmit() {
        if let ServerMessage::Error { text, .. } = t.message {
            told = Some(text);
        }
    }
    let told = told.expect("the kicked user is told why");
    let reason = told.strip_prefix("kicked by console: ").unwrap();
    assert_eq!(reason.len(), crate::MAX_PARTING_TEXT, "{}", told.len());
    assert!(reason.chars().all(|c| c == 'é'));
}

/// What the hub published for the other servers since last asked.
fn published(hub: &mut Hub) -> Vec<ClusterEvent> {
    events(hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Cluster(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// A hub of a cluster, with the operator `op` and Dave, a user, joined.
fn cluster_hub_with_dave(now: Instant) -> (Hub, ClientId, ClientId) {
    let (mut hub, op) = operator_hub(now);
    hub.enable_cluster();
    let dave = join_verified(&mut hub, "dave", "10.0.0.4", now);
    (hub, op, dave)
}

/// Forgets what `clients` were sent and the hub's events so far.
fn settle(hub: &mut Hub, clients: &[ClientId]) {
    for &c in clients {
        sent(hub, c);
    }
    events(hub);
}

/// The kick `kick BOB spam` on the console publishes.
fn bob_kicked_by_console() -> ClusterEvent {
    ClusterEvent::Kick {
        user: user("bob"),
        text: "kicked by console: spam".into(),
    }
}

#[test]
fn a_kick_of_a_user_of_another_server_is_carried_out_by_that_server() {
    let now = Instant::now();
    let (mut hub, op, dave) = cluster_hub_with_dave(now);
    assert!(hub.remote_join(7, user("bob"), now));
    settle(&mut hub, &[op, dave]);
    // Bob is on server 7: the kick is published for it to carry out.
    assert_eq!(
        hub.console("kick BOB spam", now),
        "kicked bob (on another server)"
    );
    assert_eq!(published(&mut hub), [bob_kicked_by_console()]);
    // He stays listed here until his server says he left.
    assert!(sent(&mut hub, dave).is_empty());
    // Cut off from the cluster: the operator is told it waits for it.
    hub.set_cut_off(true);
    assert_eq!(
        hub.console("kick bob again", now),
        "kicked bob (on another server: carried out once the cluster can be reached again)"
    );
    hub.set_cut_off(false);
    published(&mut hub);
    // Server 7's operator kicks Dave, a user of this one.
    assert!(hub.remote_kick(&user("DAVE"), "kicked by op2: flood", now));
    assert!(!hub.is_connected(dave));
    assert_eq!(sent(&mut hub, op), ["left: dave: kicked by op2: flood"]);
    let left = events(&mut hub).into_iter().any(|e| {
        matches!(e, HubEvent::Cluster(ClusterEvent::Left { user: u, reason, text, .. })
            if u == user("dave") && reason == LeaveReason::KICKED && text == "kicked by op2: flood")
    });
    assert!(left, "the other servers are told that Dave left, and why");
    // Nobody of that name here: nothing to do.
    assert!(!hub.remote_kick(&user("dave"), "kicked by op2: flood", now));
    assert!(!hub.remote_kick(&user("bob"), "kicked by op2: flood", now));
}

/// A kick that reaches a server before it noticed that the user's server
/// died is carried out there once it notices; a kick the user's server
/// carried out is not carried out twice.
#[test]
fn a_kick_of_a_user_whose_server_died_unnoticed_is_carried_out_once_noticed() {
    let now = Instant::now();
    let (mut hub, op, dave) = cluster_hub_with_dave(now);
    for (u, server) in [("bob", 7), ("carol", 7), ("erin", 8), ("fay", 9)] {
        assert!(hub.remote_join(server, user(u), now));
    }
    settle(&mut hub, &[op, dave]);
    // Servers 7 and 8 died, unnoticed yet. Another server's operator
    // kicks Bob, and this one's Erin.
    assert!(!hub.remote_kick(&user("bob"), "kicked by op2: flood", now));
    assert_eq!(
        hub.console("kick erin spam", now),
        "kicked erin (on another server)"
    );
    assert!(sent(&mut hub, dave).is_empty(), "nobody is removed yet");
    assert_eq!(hub.kicked_users_of(7), [user("bob")]);
    // Noticed: Bob leaves at once, kicked; Carol waits for a resume.
    assert_eq!(hub.remote_server_gone(7, now), 2);
    assert_eq!(sent(&mut hub, dave), ["left: bob: kicked by op2: flood"]);
    assert_eq!(hub.remote_server_gone(8, now), 1);
    assert_eq!(
        sent(&mut hub, dave),
        ["left: erin: kicked by console: spam"]
    );
    // Fay's server is alive and carries her kick out: she leaves once.
    assert!(!hub.remote_kick(&user("fay"), "kicked by op2: x", now));
    hub.remote_leave(
        9,
        &user("fay"),
        LeaveReason::KICKED,
        "kicked by op2: x".into(),
        now,
    );
    assert_eq!(sent(&mut hub, dave), ["left: fay: kicked by op2: x"]);
    assert!(hub.kicked_users_of(9).is_empty());
    assert_eq!(hub.remote_server_gone(9, now), 0);
    assert!(sent(&mut hub, dave).is_empty());
    assert_eq!(hub.remote_users(), [(user("carol"), 7)]);
}

/// A user of a server that died waits for a resume on another server; a
/// kick has nobody to carry it out there, so every server removes it.
#[test]
fn a_kick_of_a_user_whose_server_died_removes_it_on_every_server_at_once() {
    let now = Instant::now();
    let (mut hub, op, dave) = cluster_hub_with_dave(now);
    for u in ["bob", "carol", "erin"] {
        assert!(hub.remote_join(7, user(u), now));
    }
    assert_eq!(hub.remote_server_gone(7, now), 3);
    settle(&mut hub, &[op, dave]);
    // Bob waits for a resume: this server removes him now, and the
    // others are told to (the kick is published as for a live server).
    assert_eq!(
        hub.console("kick BOB spam", now),
        "kicked bob (it was away)"
    );
    assert_eq!(sent(&mut hub, dave), ["left: bob: kicked by console: spam"]);
    assert_eq!(published(&mut hub), [bob_kicked_by_console()]);
    // Another server's operator kicks Carol: this server removes her too.
    assert!(hub.remote_kick(&user("CAROL"), "kicked by op2: flood", now));
    assert_eq!(sent(&mut hub, dave), ["left: carol: kicked by op2: flood"]);
    assert!(!hub.remote_kick(&user("carol"), "kicked by op2: flood", now));
    let mut left = hub.remote_users();
    left.sort_by_key(|(u, _)| u.to_string());
    assert_eq!(left, [(user("erin"), 7)]);
    // Erin, not kicked, still waits: she leaves when the grace runs out.
    hub.handle_timeout(now + Limits::default().grace + std::time::Duration::from_secs(1));
    let after: Vec<String> = sent(&mut hub, dave)
        .into_iter()
        .filter(|m| !m.starts_with("Ping"))
        .collect();
    assert_eq!(after, ["left: erin: "]);
}

/// A kick or a ban of a user who is away (its session waits for a resume)
/// ends the session, and the others see it leave kicked, with the
/// operator's text, as when it is connected; not as a lost connection.
#[test]
fn a_kick_or_a_ban_of_an_away_user_is_shown_as_one() {
    let now = Instant::now();
    let (mut hub, op, dave) = cluster_hub_with_dave(now);
    let bob = join_verified(&mut hub, "bob", "10.0.0.5", now);
    let erin = join_verified(&mut hub, "erin", "10.0.0.6", now);
    let fay = join_verified(&mut hub, "fay", "10.0.0.7", now);
    for c in [bob, erin, fay] {
        hub.handle_disconnect(c, LeaveReason::LOST);
    }
    settle(&mut hub, &[op, dave]);
    assert_eq!(
        hub.console("kick BOB spam", now),
        "kicked bob (it was away)"
    );
    assert_eq!(sent(&mut hub, dave), ["left: bob: kicked by console: spam"]);
    let left = |hub: &mut Hub, name: &str, said: &str| {
        published(hub).into_iter().any(|e| {
            matches!(e, ClusterEvent::Left { user: u, reason, text, .. }
                if u == user(name) && reason == LeaveReason::KICKED && text == said)
        })
    };
    assert!(left(&mut hub, "bob", "kicked by console: spam"));
    hub.console("ban erin flood", now);
    assert_eq!(
        sent(&mut hub, dave),
        ["left: erin: banned by console: flood"]
    );
    assert!(left(&mut hub, "erin", "banned by console: flood"));
    // Another server's operator.
    assert!(hub.remote_kick(&user("fay"), "kicked by op2: x", now));
    assert_eq!(sent(&mut hub, dave), ["left: fay: kicked by op2: x"]);
    assert!(left(&mut hub, "fay", "kicked by op2: x"));
    for name in ["bob", "erin", "fay"] {
        assert!(!hub.has_session(&user(name)), "{name}'s session ended");
    }
}

/// A session whose user was kicked before its old server carried the
/// kick out is not taken over here, however this server heard of the kick:
/// remembered from the stream, said by Redis, or carried out already
/// because the old server is known dead. Its user leaves (once), kicked.
#[test]
fn a_session_kicked_on_its_old_server_is_not_taken_over() {
    let now = Instant::now();
    let (mut hub, op, dave) = cluster_hub_with_dave(now);
    for (u, server) in [("bob", 7), ("carol", 7), ("erin", 8), ("fay", 9)] {
        assert!(hub.remote_join(server, user(u), now));
    }
    settle(&mut hub, &[op, dave]);
    let token = crate::ResumeToken([42; 16]);
    // Heard from the stream, server 7 still looking alive.
    assert!(!hub.remote_kick(&user("bob"), "kicked by op2: flood", now));
    assert!(!hub.adopt_session(user("bob"), token, 7, 0, None, now));
    assert!(!hub.has_session(&user("bob")));
    assert_eq!(sent(&mut hub, dave), ["left: bob: kicked by op2: flood"]);
    // Said by Redis (the kick published after the move), nothing heard.
    assert!(!hub.adopt_session(user("erin"), token, 8, 0, Some("kicked by op3: x"), now));
    assert_eq!(sent(&mut hub, dave), ["left: erin: kicked by op3: x"]);
    // Carried out already: server 9 is known dead, Fay left, kicked; her
    // session arriving later is not taken over, and nobody sees her join.
    assert_eq!(hub.remote_server_gone(9, now), 1);
    assert!(hub.remote_kick(&user("fay"), "kicked by op2: y", now));
    assert_eq!(sent(&mut hub, dave), ["left: fay: kicked by op2: y"]);
    assert!(!hub.adopt_session(user("fay"), token, 9, 0, None, now));
    assert!(sent(&mut hub, dave).is_empty());
    assert!(!hub.has_session(&user("fay")));
    // A banned name (banned while its server looked alive): the same.
    assert!(hub.remote_join(7, user("gus"), now));
    assert_eq!(sent(&mut hub, dave), ["joined: gus"]);
    hub.console("ban gus spam", now);
    settle(&mut hub, &[op, dave]);
    assert!(!hub.adopt_session(user("gus"), token, 7, 0, None, now));
    assert_eq!(sent(&mut hub, dave), ["left: gus: banned by console: spam"]);
    // Carol was not kicked: her session moves here and waits for her.
    assert!(hub.adopt_session(user("carol"), crate::ResumeToken([43; 16]), 7, 0, None, now));
    assert!(hub.has_session(&user("carol")));
    assert!(sent(&mut hub, dave).is_empty());
    // Fay joins afresh on server 10: the kick is behind her, and a later
    // session of hers moves as any other.
    assert!(hub.remote_join(10, user("fay"), now));
    assert_eq!(sent(&mut hub, dave), ["joined: fay"]);
    assert!(hub.adopt_session(user("fay"), token, 10, 0, None, now));
}

/// A user kicked while its server looked alive, that joins afresh on
/// another server (its kicked session never moved): the others see the
/// kick, then the join, and the kick is not carried over to the new one.
#[test]
fn a_kicked_user_that_joins_afresh_elsewhere_is_seen_leaving_kicked_first() {
    let now = Instant::now();
    let (mut hub, op, dave) = cluster_hub_with_dave(now);
    assert!(hub.remote_join(7, user("bob"), now));
    settle(&mut hub, &[op, dave]);
    assert!(!hub.remote_kick(&user("bob"), "kicked by op2: flood", now));
    assert!(hub.remote_join(8, user("bob"), now));
    assert_eq!(
        sent(&mut hub, dave),
        ["left: bob: kicked by op2: flood", "joined: bob"]
    );
    assert_eq!(hub.remote_users(), [(user("bob"), 8)]);
    assert!(hub.kicked_users_of(8).is_empty());
    // Server 7 dies: nothing more happens to the new Bob.
    assert_eq!(hub.remote_server_gone(7, now), 0);
    assert!(sent(&mut hub, dave).is_empty());
}

/// What a client whose session was lost sends to get it back.
fn hello_resuming(hub: &Hub, name: &str) -> ClientMessage {
    hello_resuming_with(hub, name, [9; 16])
}

/// [`hello_resuming`] with the session's token.
fn hello_resuming_with(hub: &Hub, name: &str, token: [u8; 16]) -> ClientMessage {
    ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        username: user(name),
        resume: Some(ResumeRequest {
            token: ResumeToken(token),
            last_seen: MessageId(0),
            epoch: hub.epoch(),
        }),
    }
}

/// A user of another server kicked there (or anywhere) and coming back
/// here with its old session's token is told of the kick, before the
/// welcome that starts it afresh; nobody else is, and not once the name
/// joined again after the kick.
#[test]
fn a_user_kicked_on_another_server_is_told_of_the_kick_when_it_comes_back_here() {
    let now = Instant::now();
    let mut hub = hub();
    hub.enable_cluster();
    for u in ["bob", "carol", "dave", "erin"] {
        assert!(hub.remote_join(7, user(u), now));
    }
    for u in ["bob", "dave", "erin"] {
        hub.remote_leave(
            7,
            &user(u),
            LeaveReason::KICKED,
            format!("kicked by op2: {u}"),
            now,
        );
    }
    hub.remote_leave(7, &user("carol"), LeaveReason::LOST, String::new(), now);
    // Erin joined again on server 8 after her kick, and left.
    assert!(hub.remote_join(8, user("erin"), now));
    hub.remote_leave(8, &user("erin"), LeaveReason::LOST, String::new(), now);
    let come_back = |hub: &mut Hub, name: &str, resuming: bool| {
        let c = hub.handle_connect(now);
        let m = if resuming {
            hello_resuming(hub, name)
        } else {
            hello(name)
        };
        hub.handle_message(c, m, now);
        let got = sent(hub, c);
        got[..got.iter().position(|m| m == "welcome").unwrap() + 1].to_vec()
    };
    assert_eq!(
        come_back(&mut hub, "BOB", true),
        [
            "notice: your session was ended: kicked by op2: bob",
            "welcome"
        ]
    );
    assert_eq!(come_back(&mut hub, "carol", true), ["welcome"]);
    assert_eq!(come_back(&mut hub, "dave", false), ["welcome"]);
    assert_eq!(come_back(&mut hub, "erin", true), ["welcome"]);
}

/// The hub's `Left` event carries a removal's text, for the server's log,
/// whether the user was connected or away; nothing of a quit's parting
/// text, which is the user's.
#[test]
fn a_left_event_carries_a_removal_s_text_and_not_a_quit_s() {
    let now = Instant::now();
    let mut hub = hub();
    let mut join = |name: &str| {
        let c = hub.handle_connect(now);
        hub.handle_message(c, hello(name), now);
        c
    };
    let _bob = join("bob");
    let carol = join("carol");
    let dave = join("dave");
    hub.handle_disconnect(dave, LeaveReason::LOST);
    events(&mut hub);
    assert_eq!(hub.console("kick bob bye", now), "kicked bob");
    hub.handle_message(
        carol,
        ClientMessage::Quit {
            reason: "lunch".into(),
        },
        now,
    );
    assert_eq!(
        hub.console("kick dave away", now),
        "kicked dave (it was away)"
    );
    let lefts: Vec<(String, String)> = events(&mut hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Left { user, removal, .. } => Some((user.to_string(), removal)),
            _ => None,
        })
        .collect();
    let pair = |u: &str, t: &str| (u.to_string(), t.to_string());
    assert_eq!(
        lefts,
        [
            pair("bob", "kicked by console: bye"),
            pair("carol", ""),
            pair("dave", "kicked by console: away")
        ]
    );
}

/// A kick of a dead server's user is remembered, after the user left, for
/// the grace period only: by then no server still holds its session to
/// give, and the hub does not keep every such kick for as long as it runs.
#[test]
fn a_kick_of_a_dead_server_s_user_is_remembered_for_the_grace_period_only() {
    let now = Instant::now();
    let (mut hub, op, dave) = cluster_hub_with_dave(now);
    for u in ["fay", "gus"] {
        assert!(hub.remote_join(9, user(u), now));
    }
    assert_eq!(hub.remote_server_gone(9, now), 2);
    for u in ["fay", "gus"] {
        assert!(hub.remote_kick(&user(u), "kicked by op2: y", now));
    }
    settle(&mut hub, &[op, dave]);
    let token = ResumeToken([42; 16]);
    let grace = Limits::default().grace;
    // Within the grace period, Fay's session is not taken over.
    let within = now + grace - std::time::Duration::from_millis(1);
    assert!(!hub.adopt_session(user("fay"), token, 9, 0, None, within));
    // After it, nothing is kept of Gus's kick.
    let after = now + grace + std::time::Duration::from_secs(1);
    hub.handle_timeout(after);
    assert!(hub.adopt_session(user("gus"), token, 9, 0, None, after));
}

/// What each of `clients` was sent, in short (`sent`'s forms, and
/// `chat: <from>: <text>` or `private: <from>: <text>`), from one drain.
fn sent_to(hub: &mut Hub, clients: &[ClientId]) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); clients.len()];
    hub.flush_presence();
    while let Some(t) = hub.poll_transmit() {
        for (i, c) in clients.iter().enumerate() {
            if !t.to.contains(*c) {
                continue;
            }
            out[i].push(match &t.message {
                ServerMessage::Welcome { resumed, .. } => (if resumed.is_some() {
                    "resumed"
                } else {
                    "welcome"
                })
                .into(),
                ServerMessage::Refused { reason, .. } => format!("refused: {reason}"),
                ServerMessage::Notice { code, text } => format!("notice: {code}: {text}"),
                ServerMessage::Chat(c) if c.private => format!("private: {}: {}", c.from, c.text),
                ServerMessage::Chat(c) => format!("chat: {}: {}", c.from, c.text),
                ServerMessage::Joined { user, .. } => format!("joined: {user}"),
                ServerMessage::Presence(events) => events
                    .iter()
                    .map(|e| match e {
                        PresenceEvent::Left(d) => format!("left: {}", d.user),
                        PresenceEvent::Joined { user, .. } => format!("joined: {user}"),
                        PresenceEvent::Away { user, .. } => format!("away: {user}"),
                        PresenceEvent::Back { user, .. } => format!("back: {user}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => format!("{other:?}").chars().take(20).collect(),
            });
        }
    }
    hub.check_invariants().unwrap();
    out
}

/// Sends chat `text` from `c` (its `n`th message) to `to` or to everyone.
fn say(hub: &mut Hub, c: ClientId, n: u64, to: Option<&str>, text: &str, now: Instant) {
    let to = to.map_or(Recipient::Everyone, |t| Recipient::User(user(t)));
    hub.handle_message(
        c,
        ClientMessage::Chat {
            client_id: n,
            to,
            kind: ChatKind::Text,
            text: text.into(),
        },
        now,
    );
}

#[test]
fn a_registered_user_takes_a_waiting_session_back_with_the_password_and_gets_what_it_missed() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let alice = join_verified(&mut hub, "alice", "10.0.0.1", t0);
    let bob = join_verified(&mut hub, "bob", "10.0.0.9", t0);
    say(&mut hub, bob, 1, None, "before", t0);
    sent_to(&mut hub, &[alice, bob]);
    // Alice's client is killed: her session waits for it.
    hub.handle_disconnect(alice, LeaveReason::LOST);
    say(&mut hub, bob, 2, Some("alice"), "while you were away", t0);
    say(&mut hub, bob, 3, None, "to all", t0);
    sent_to(&mut hub, &[bob]);
    events(&mut hub);

    // Without the password, or with a name not registered (Open), it is
    // taken, and the refusal says for how long.
    let t1 = t0 + std::time::Duration::from_secs(5);
    let other = hub.handle_connect_from(ip("10.0.0.2"), t1);
    hub.handle_message(other, hello("alice"), t1);
    hub.account_checked(other, AccountCheck::Open, t1);
    let [refused] = &sent_to(&mut hub, &[other])[..] else {
        panic!()
    };
    assert_eq!(
        refused,
        &["refused: the username 'alice' is already taken: its session waits up to 56 s for its client to come back"]
    );

    // From another machine, with the name's password: her session, and
    // what she missed; bob sees her back, no leave and no join.
    let back = hello_verified(&mut hub, "alice", "10.0.0.3", t1);
    assert!(hub.is_joined(back));
    let got = sent_to(&mut hub, &[back, bob]);
    // What came since the loss, as to a resume.
    assert_eq!(
        got[0],
        [
            "resumed",
            "private: bob: while you were away",
            "chat: bob: to all"
        ]
    );
    assert_eq!(got[1], ["back: alice"]);
    assert!(events(&mut hub)
        .iter()
        .any(|e| matches!(e, HubEvent::Resumed { client, .. } if *client == back)));

    // While she is connected, the password takes nothing from her.
    let third = hello_verified(&mut hub, "alice", "10.0.0.4", t1);
    assert!(hub.is_joined(back));
    assert_eq!(
        sent_to(&mut hub, &[third])[0],
        ["refused: the username 'alice' is already taken"]
    );
}

#[test]
fn a_name_taken_under_another_spelling_says_by_which() {
    let now = Instant::now();
    let mut hub = hub();
    let alice = hub.handle_connect_from(ip("10.0.0.1"), now);
    hub.handle_message(alice, hello("alice"), now);
    let other = hub.handle_connect_from(ip("10.0.0.2"), now);
    hub.handle_message(other, hello("ALICE"), now);
    let same = hub.handle_connect_from(ip("10.0.0.3"), now);
    hub.handle_message(same, hello("alice"), now);
    let got = sent_to(&mut hub, &[other, same]);
    assert_eq!(
        got,
        [
            ["refused: the username 'ALICE' is already taken (as 'alice')"],
            ["refused: the username 'alice' is already taken"]
        ]
    );
}

#[test]
fn a_password_takes_back_a_session_the_server_kept_across_a_restart() {
    let t0 = Instant::now();
    let store = crate::MemoryStore::new(100);
    let mut hub = hub();
    hub.set_accounts(true);
    hub.open_history(Box::new(store.clone()), t0).unwrap();
    let alice = join_verified(&mut hub, "alice", "10.0.0.1", t0);
    let bob = join_verified(&mut hub, "bob", "10.0.0.9", t0);
    hub.handle_disconnect(alice, LeaveReason::LOST);
    say(&mut hub, bob, 1, Some("alice"), "before the restart", t0);
    hub.commit_history(t0);
    hub.shutdown("restart");
    sent_to(&mut hub, &[bob]);

    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_token_source(Box::new(|| [8; 16]));
    hub.set_accounts(true);
    hub.open_history(Box::new(store.clone()), t0).unwrap();
    let bob = join_verified(&mut hub, "bob", "10.0.0.9", t0);
    say(&mut hub, bob, 2, Some("alice"), "after the restart", t0);
    sent_to(&mut hub, &[bob]);
    let back = hello_verified(&mut hub, "alice", "10.0.0.3", t0);
    assert!(hub.is_joined(back));
    // From the restart on: when the connection was lost before it is not
    // known here, and the user is told.
    assert_eq!(
        sent_to(&mut hub, &[back])[0],
        [
            "resumed",
            "private: bob: after the restart",
            "notice: done: your session is back as the server kept it across its restart: what was sent to you between the loss of your connection and the restart is not replayed"
        ]
    );
}

#[test]
fn a_kept_session_lost_again_after_the_restart_is_taken_back_without_the_restart_note() {
    let t0 = Instant::now();
    let store = crate::MemoryStore::new(100);
    let mut hub = hub();
    hub.set_accounts(true);
    hub.open_history(Box::new(store.clone()), t0).unwrap();
    let lee = join_verified(&mut hub, "lee", "10.0.0.1", t0);
    let bob = join_verified(&mut hub, "bob", "10.0.0.9", t0);
    hub.commit_history(t0);
    hub.shutdown("restart");
    sent_to(&mut hub, &[lee, bob]);

    let mut hub = Hub::new(Limits::default(), "hi");
    hub.set_token_source(Box::new(|| [8; 16]));
    hub.set_accounts(true);
    hub.open_history(Box::new(store.clone()), t0).unwrap();
    let bob = join_verified(&mut hub, "bob", "10.0.0.9", t0);
    // Lee's client resumes with its token in this run...
    let lee = hub.handle_connect_from(ip("10.0.0.1"), t0);
    hub.handle_message(lee, auth(None, Some("pw")), t0);
    hub.handle_message(
        lee,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("lee"),
            resume: Some(ResumeRequest {
                token: ResumeToken([7; 16]),
                last_seen: hub.last_id(),
                epoch: hub.epoch(),
            }),
        },
        t0,
    );
    hub.account_checked(lee, AccountCheck::Verified, t0);
    assert!(hub.is_joined(lee));
    sent_to(&mut hub, &[lee, bob]);
    // ...then is lost, after the restart: what came since is replayed,
    // and nothing was lost to the restart.
    hub.handle_disconnect(lee, LeaveReason::LOST);
    say(&mut hub, bob, 1, Some("lee"), "msg3 for lee", t0);
    sent_to(&mut hub, &[bob]);
    let back = hello_verified(&mut hub, "lee", "10.0.0.3", t0);
    assert!(hub.is_joined(back));
    assert_eq!(
        sent_to(&mut hub, &[back])[0],
        ["resumed", "private: bob: msg3 for lee"]
    );
}

#[test]
fn a_session_is_never_replayed_what_was_sent_to_an_earlier_holder_of_its_name() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let sam = join_verified(&mut hub, "sam", "10.0.0.9", t0);
    let first = join_verified(&mut hub, "xan", "10.0.0.1", t0);
    say(
        &mut hub,
        sam,
        1,
        Some("xan"),
        "secret for the first xan",
        t0,
    );
    hub.handle_message(
        first,
        ClientMessage::Quit {
            reason: String::new(),
        },
        t0,
    );
    // Someone else takes the name; its client is killed.
    let second = join_verified(&mut hub, "xan", "10.0.0.2", t0);
    hub.handle_disconnect(second, LeaveReason::LOST);
    say(&mut hub, sam, 2, Some("xan"), "for the second xan", t0);
    sent_to(&mut hub, &[sam]);

    // Neither by the password...
    let back = hello_verified(&mut hub, "xan", "10.0.0.3", t0);
    let mut welcome = None;
    let mut texts = Vec::new();
    while let Some(t) = hub.poll_transmit() {
        match t.message {
            ServerMessage::Welcome { token, epoch, .. } if t.to.contains(back) => {
                welcome = Some((token, epoch));
            }
            ServerMessage::Chat(c) if t.to.contains(back) => texts.push(c.text),
            _ => {}
        }
    }
    assert_eq!(texts, ["for the second xan"]);
    // ...nor by a token resume that says it has seen nothing.
    let (token, epoch) = welcome.unwrap();
    hub.handle_disconnect(back, LeaveReason::LOST);
    let again = hub.handle_connect_from(ip("10.0.0.3"), t0);
    hub.handle_message(again, auth(None, Some("pw")), t0);
    hub.handle_message(
        again,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("xan"),
            resume: Some(ResumeRequest {
                token,
                last_seen: MessageId(0),
                epoch,
            }),
        },
        t0,
    );
    hub.account_checked(again, AccountCheck::Verified, t0);
    let got = sent_to(&mut hub, &[again]);
    assert_eq!(got[0][0], "resumed");
    assert!(
        !got[0].iter().any(|l| l.contains("first xan")),
        "{:?}",
        got[0]
    );
}

#[test]
fn a_take_back_says_how_much_the_log_no_longer_holds() {
    let t0 = Instant::now();
    let mut hub = Hub::new(
        Limits {
            log_entries: 3,
            ..Limits::default()
        },
        "hi",
    );
    hub.set_token_source(Box::new(|| [7; 16]));
    hub.set_accounts(true);
    let alice = join_verified(&mut hub, "alice", "10.0.0.1", t0);
    let bob = join_verified(&mut hub, "bob", "10.0.0.9", t0);
    hub.handle_disconnect(alice, LeaveReason::LOST);
    for n in 1..=5 {
        say(&mut hub, bob, n, None, &format!("missed {n}"), t0);
    }
    sent_to(&mut hub, &[bob]);
    let back = hello_verified(&mut hub, "alice", "10.0.0.3", t0);
    let mut dropped = None;
    let mut texts = Vec::new();
    while let Some(t) = hub.poll_transmit() {
        match t.message {
            ServerMessage::Welcome { resumed, .. } if t.to.contains(back) => {
                dropped = resumed.map(|r| r.dropped);
            }
            ServerMessage::Chat(c) if t.to.contains(back) => texts.push(c.text),
            _ => {}
        }
    }
    assert_eq!(texts, ["missed 3", "missed 4", "missed 5"]);
    assert_eq!(dropped, Some(2), "the two the log no longer holds");
}

/// The console's `who`: an operator at the server's terminal sees who is
/// online and where each connects from, as the classroom servers printed
/// each connection's address.
#[test]
fn the_console_lists_who_is_online_with_their_addresses() {
    let now = Instant::now();
    let (mut hub, _op) = operator_hub(now);
    join_verified(&mut hub, "Bob", "::1", now);
    join_verified(&mut hub, "alice", "10.0.0.7", now);
    assert_eq!(
        hub.console("who", now),
        "3 online: alice (10.0.0.7), Bob (::1), op (10.0.0.100)"
    );
    assert_eq!(hub.console(" /WHO ", now), hub.console("users", now));
    assert_eq!(hub.console("who is here", now), hub.console("who", now));
    assert_eq!(self::hub().console("who", now), "nobody is online");
    assert!(hub.console("help", now).starts_with("commands: who, kick"));
}

/// The connections the server was asked to check a password for, in order.
fn checks_asked(hub: &mut Hub) -> Vec<ClientId> {
    events(hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::CheckAccount { client, .. } => Some(client),
            _ => None,
        })
        .collect()
}

/// The refusals sent so far, to whom, with their code and text.
fn refusals(hub: &mut Hub) -> Vec<(ClientId, RefuseCode, String)> {
    std::iter::from_fn(|| hub.poll_transmit())
        .filter_map(|t| match (t.to, t.message) {
            (Destination::One(c), ServerMessage::Refused { code, reason, .. }) => {
                Some((c, code, reason))
            }
            _ => None,
        })
        .collect()
}

/// Asserts that exactly `clients` were refused with `code`.
fn assert_refused(hub: &mut Hub, clients: &[ClientId], code: RefuseCode) {
    let got: Vec<(ClientId, RefuseCode)> =
        refusals(hub).into_iter().map(|(c, k, _)| (c, k)).collect();
    let want: Vec<(ClientId, RefuseCode)> = clients.iter().map(|&c| (c, code)).collect();
    assert_eq!(got, want);
}

/// A connection from `peer` that sends `password` for `name`: its id.
fn guess(hub: &mut Hub, name: &str, password: &str, peer: &str, now: Instant) -> ClientId {
    let c = hub.handle_connect_from(ip(peer), now);
    hub.handle_message(c, auth(None, Some(password)), now);
    hub.handle_message(c, hello(name), now);
    c
}

#[test]
fn guesses_sent_at_once_from_one_address_count_before_their_answers() {
    let t0 = Instant::now();
    let limits = Limits {
        auth_attempts: 3,
        ..Limits::default()
    };
    let mut hub = Hub::new(limits.clone(), "hi");
    hub.set_accounts(true);
    // Twenty guesses at once: only as many as the cap are checked, the
    // others refused before any answer came.
    let sent_at_once: Vec<ClientId> = (0..20)
        .map(|i| guess(&mut hub, "victim", &format!("wrong{i}"), "10.0.0.66", t0))
        .collect();
    let asked = checks_asked(&mut hub);
    assert_eq!(asked, sent_at_once[..3]);
    assert_refused(&mut hub, &sent_at_once[3..], RefuseCode::TOO_MANY_ATTEMPTS);
    // A check that turns out not to fail frees its place ...
    hub.account_checked(asked[0], AccountCheck::Unavailable("down".into()), t0);
    let again = guess(&mut hub, "other", "pw", "10.0.0.66", t0);
    assert_eq!(checks_asked(&mut hub), [again]);
    // ... a wrong one keeps it, as a failure, for the window.
    for c in [asked[1], asked[2], again] {
        hub.account_checked(c, AccountCheck::Wrong, t0);
    }
    let late = guess(&mut hub, "victim", "right", "10.0.0.66", t0);
    assert!(checks_asked(&mut hub).is_empty());
    assert_eq!(sent(&mut hub, late), ["refused: too many failed attempts"]);
    let t1 = t0 + limits.auth_window;
    let c = guess(&mut hub, "victim", "right", "10.0.0.66", t1);
    assert_eq!(checks_asked(&mut hub), [c]);
}

#[test]
fn guesses_for_one_name_sent_at_once_from_many_addresses_count_before_their_answers() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let cap = Limits::default().auth_attempts * 10;
    let sent_at_once: Vec<ClientId> = (0..120)
        .map(|i| guess(&mut hub, "victim", "wrong", &format!("10.1.{i}.1"), t0))
        .collect();
    let asked = checks_asked(&mut hub);
    assert_eq!(asked, sent_at_once[..cap as usize]);
    assert_refused(
        &mut hub,
        &sent_at_once[cap as usize..],
        RefuseCode::TOO_MANY_ATTEMPTS,
    );
    // Answers that are not failures (here: the accounts could not be
    // read) free the name: its owner gets in.
    for &c in &asked[..2] {
        hub.account_checked(c, AccountCheck::Unavailable("down".into()), t0);
    }
    refusals(&mut hub);
    let owner = guess(&mut hub, "victim", "right", "10.2.0.1", t0);
    assert_eq!(checks_asked(&mut hub), [owner]);
    hub.account_checked(owner, AccountCheck::Verified, t0);
    assert_eq!(sent(&mut hub, owner)[0], "welcome");
}

#[test]
fn a_guess_whose_sender_left_counts_until_and_after_its_answer() {
    let t0 = Instant::now();
    let limits = Limits {
        auth_attempts: 2,
        ..Limits::default()
    };
    let mut hub = Hub::new(limits, "hi");
    hub.set_accounts(true);
    let a = guess(&mut hub, "victim", "wrong1", "10.0.0.66", t0);
    let b = guess(&mut hub, "victim", "wrong2", "10.0.0.66", t0);
    assert_eq!(checks_asked(&mut hub), [a, b]);
    // Gone without waiting: the server still checks them, and they count.
    hub.handle_disconnect(a, LeaveReason::QUIT);
    hub.handle_disconnect(b, LeaveReason::QUIT);
    let c = guess(&mut hub, "victim", "wrong3", "10.0.0.66", t0);
    assert!(checks_asked(&mut hub).is_empty());
    assert_eq!(sent(&mut hub, c), ["refused: too many failed attempts"]);
    // Their answers, wrong, count as failures although nobody waits.
    hub.account_checked(a, AccountCheck::Wrong, t0);
    hub.account_checked(b, AccountCheck::Wrong, t0);
    let d = guess(&mut hub, "victim", "wrong4", "10.0.0.66", t0);
    assert!(checks_asked(&mut hub).is_empty());
    assert_eq!(sent(&mut hub, d), ["refused: too many failed attempts"]);
}

#[test]
fn a_check_never_answered_stops_counting_after_the_window() {
    let t0 = Instant::now();
    let limits = Limits {
        auth_attempts: 1,
        ..Limits::default()
    };
    let mut hub = Hub::new(limits.clone(), "hi");
    hub.set_accounts(true);
    let lost = guess(&mut hub, "victim", "pw", "10.0.0.66", t0);
    assert_eq!(checks_asked(&mut hub), [lost]);
    let c = guess(&mut hub, "victim", "pw", "10.0.0.66", t0);
    assert_refused(&mut hub, &[c], RefuseCode::TOO_MANY_ATTEMPTS);
    // The frontend never answers the first: its owner is not locked out
    // for good.
    let t1 = t0 + limits.auth_window;
    let c = guess(&mut hub, "victim", "pw", "10.0.0.66", t1);
    assert_eq!(checks_asked(&mut hub), [c]);
}

#[test]
fn a_password_for_a_name_held_by_a_live_connection_is_not_checked() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_accounts(true);
    let mallory = join_verified(&mut hub, "mallory", "10.0.0.5", t0);
    sent(&mut hub, mallory);
    events(&mut hub);
    // The right password cannot take a live connection's name: no hash.
    let tries: Vec<ClientId> = (0..10)
        .map(|_| guess(&mut hub, "Mallory", "pw", "10.0.0.5", t0))
        .collect();
    assert!(checks_asked(&mut hub).is_empty());
    assert_refused(&mut hub, &tries, RefuseCode::NAME_TAKEN);
    assert!(hub.is_joined(mallory));
    // A token that resumes the session can replace the connection: the
    // password is checked then, as before.
    let c = hub.handle_connect_from(ip("10.0.0.5"), t0);
    hub.handle_message(c, auth(None, Some("pw")), t0);
    hub.handle_message(
        c,
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            username: user("mallory"),
            resume: Some(ResumeRequest {
                token: ResumeToken([7; 16]),
                last_seen: MessageId(0),
                epoch: hub.epoch(),
            }),
        },
        t0,
    );
    assert_eq!(checks_asked(&mut hub), [c]);
    hub.account_checked(c, AccountCheck::Verified, t0);
    assert_eq!(sent(&mut hub, c)[0], "resumed");
    // A session waiting for its client is taken back with the password:
    // checked too.
    hub.handle_disconnect(c, LeaveReason::LOST);
    let c = guess(&mut hub, "mallory", "pw", "10.0.0.5", t0);
    assert_eq!(checks_asked(&mut hub), [c]);
    hub.account_checked(c, AccountCheck::Verified, t0);
    assert_eq!(sent(&mut hub, c)[0], "resumed");
}

#[test]
fn wrong_passwords_from_one_ipv6_network_count_as_from_one_address() {
    let t0 = Instant::now();
    let mut hub = hub();
    hub.set_server_password(Some(secret("letmein")));
    let limits = Limits::default();
    // Each guess from another address of the same /64.
    for i in 1..=limits.auth_attempts {
        let c = hub.handle_connect_from(ip(&format!("2001:db8:1:2::{i}")), t0);
        hub.handle_message(c, auth(Some("guess"), None), t0);
        hub.handle_message(c, hello("alice"), t0);
        assert_eq!(sent(&mut hub, c), ["refused: wrong server password"]);
    }
    let c = hub.handle_connect_from(ip("2001:db8:1:2::99"), t0);
    hub.handle_message(c, auth(Some("letmein"), None), t0);
    hub.handle_message(c, hello("alice"), t0);
    assert_eq!(sent(&mut hub, c), ["refused: too many failed attempts"]);
    // Another /64 is not held back.
    let c = hub.handle_connect_from(ip("2001:db8:1:3::1"), t0);
    hub.handle_message(c, auth(Some("letmein"), None), t0);
    hub.handle_message(c, hello("alice"), t0);
    assert_eq!(sent(&mut hub, c)[0], "welcome");
}

/// A hub with accounts whose wrong-password caps are out of the way.
fn hub_for_checks(limits: Limits) -> Hub {
    let mut hub = Hub::new(
        Limits {
            auth_attempts: 1000,
            ..limits
        },
        "hi",
    );
    hub.set_accounts(true);
    hub
}

#[test]
fn only_a_few_password_checks_from_one_address_run_at_once_the_others_wait_their_turn() {
    let t0 = Instant::now();
    let mut hub = hub_for_checks(Limits::default());
    let at_once = Limits::default().account_checks_at_once as usize;
    // Right passwords for ten registered names, all at once (a classroom
    // behind one address): a few are checked, the others wait, none is
    // refused.
    let tries: Vec<ClientId> = (0..10)
        .map(|i| guess(&mut hub, &format!("user{i}"), "right", "10.0.0.66", t0))
        .collect();
    let asked = checks_asked(&mut hub);
    assert_eq!(asked, tries[..at_once]);
    assert!(refusals(&mut hub).is_empty());
    // Another address is not held back by them.
    let other = guess(&mut hub, "bob", "right", "10.0.0.67", t0);
    assert_eq!(checks_asked(&mut hub), [other]);
    // Each answer, right or wrong, starts the next one waiting, in turn;
    // a waiting login whose connection went is skipped.
    hub.handle_disconnect(tries[at_once], LeaveReason::LOST);
    hub.account_checked(asked[0], AccountCheck::Verified, t0);
    assert_eq!(sent(&mut hub, asked[0])[0], "welcome");
    assert_eq!(checks_asked(&mut hub), [tries[at_once + 1]]);
    hub.account_checked(asked[1], AccountCheck::Wrong, t0);
    assert_eq!(checks_asked(&mut hub), [tries[at_once + 2]]);
    let mut started = vec![tries[at_once + 1], tries[at_once + 2]];
    for c in [asked[2], asked[3]].into_iter().chain(started.clone()) {
        hub.account_checked(c, AccountCheck::Verified, t0);
        started.extend(checks_asked(&mut hub));
    }
    assert_eq!(started[2..], tries[at_once + 3..]);
    for c in &tries[at_once + 3..] {
        hub.account_checked(*c, AccountCheck::Verified, t0);
        assert_eq!(sent(&mut hub, *c)[0], "welcome");
    }
    assert!(refusals(&mut hub).is_empty());
}

/// A login waiting for its password check (or its turn) sent its
/// `Hello` in time: when its address reaches the connections it may hold
/// before their `Hello`, it is not the one dropped as "sent no username"
/// (before, the oldest connection was, whatever it had sent).
#[test]
fn a_login_waiting_for_its_check_is_not_taken_for_a_silent_connection() {
    let t0 = Instant::now();
    let mut hub = hub_for_checks(Limits::default());
    let per_address = Limits::default().max_per_address;
    let tries: Vec<ClientId> = (0..per_address)
        .map(|i| guess(&mut hub, &format!("user{i}"), "right", "10.0.0.66", t0))
        .collect();
    let one_more = hub.handle_connect_from(ip("10.0.0.66"), t0);
    let refused = refusals(&mut hub);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (refused[0].0, refused[0].1),
        (one_more, RefuseCode::SERVER_FULL)
    );
    assert!(tries.iter().all(|c| hub.is_connected(*c)));
}

/// Past [`MAX_QUEUED_PER_ADDRESS`] logins waiting from one address, the
/// next is refused, saying to try again.
#[test]
fn logins_waiting_for_their_check_are_bounded_per_address() {
    let t0 = Instant::now();
    let limits = Limits {
        account_checks_per_address: 0,
        max_per_address: 100,
        ..Limits::default()
    };
    let mut hub = hub_for_checks(limits);
    let at_once = Limits::default().account_checks_at_once as usize;
    let tries: Vec<ClientId> = (0..at_once + 61)
        .map(|i| guess(&mut hub, &format!("user{i}"), "right", "10.0.0.66", t0))
        .collect();
    assert_eq!(checks_asked(&mut hub).len(), at_once);
    let refused = refusals(&mut hub);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let (who, code, text) = &refused[0];
    assert_eq!(
        (*who, *code),
        (tries[at_once + 60], RefuseCode::TOO_MANY_ATTEMPTS)
    );
    assert!(text.contains("waiting for their password check"), "{text}");
}

#[test]
fn password_checks_from_one_address_are_limited_per_window_right_or_wrong() {
    let t0 = Instant::now();
    let limits = Limits {
        account_checks_per_address: 3,
        ..Limits::default()
    };
    let mut hub = hub_for_checks(limits.clone());
    for i in 0..3 {
        let c = guess(&mut hub, &format!("user{i}"), "right", "10.0.0.66", t0);
        assert_eq!(checks_asked(&mut hub), [c]);
        hub.account_checked(c, AccountCheck::Verified, t0);
        assert_eq!(sent(&mut hub, c)[0], "welcome");
    }
    let half = t0 + limits.auth_window / 2;
    let c = guess(&mut hub, "user3", "right", "10.0.0.66", half);
    assert!(checks_asked(&mut hub).is_empty());
    let refused = refusals(&mut hub);
    assert_eq!(refused.len(), 1);
    let (who, code, text) = &refused[0];
    assert_eq!((*who, *code), (c, RefuseCode::TOO_MANY_ATTEMPTS));
    assert!(text.ends_with("try again in 30 s"), "{text}");
    // A Hello without a password costs no hash and is not held back.
    let c = hub.handle_connect_from(ip("10.0.0.66"), half);
    hub.handle_message(c, hello("guest"), half);
    assert_eq!(checks_asked(&mut hub), [c]);
    // Nor is another address; and after the window, this one may again.
    let c = guess(&mut hub, "user4", "right", "10.0.0.67", half);
    assert_eq!(checks_asked(&mut hub), [c]);
    let t1 = t0 + limits.auth_window;
    let c = guess(&mut hub, "user3", "right", "10.0.0.66", t1);
    assert_eq!(checks_asked(&mut hub), [c]);
}

/// Past the cap of handshakes, the oldest connection that never sent its
/// username makes room: a login that did, and waits for the check of its
/// account password, is never the one dropped (nor told it sent no
/// username). When every handshake in the way is such a login, the new
/// connection is refused instead, and told why.
#[test]
fn past_the_handshake_cap_a_login_being_checked_is_not_dropped_for_a_silent_one() {
    let now = Instant::now();
    let mut hub = Hub::new(
        Limits {
            max_pending: 3,
            ..Limits::default()
        },
        "hi",
    );
    hub.set_accounts(true);
    let login = |hub: &mut Hub, name: &str, peer: &str| {
        let c = hub.handle_connect_from(ip(peer), now);
        hub.handle_message(c, auth(None, Some("pw")), now);
        hub.handle_message(c, hello(name), now);
        c
    };
    let owner = login(&mut hub, "owner", "10.0.0.1");
    let silent: Vec<ClientId> = (1..=2)
        .map(|i| hub.handle_connect_from(ip(&format!("10.0.9.{i}")), now))
        .collect();
    assert!(refusals(&mut hub).is_empty());
    // A third silent one: the oldest silent one goes, not the login.
    hub.handle_connect_from(ip("10.0.9.3"), now);
    let dropped = refusals(&mut hub);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].0, silent[0]);
    assert!(hub.is_connected(owner));
    hub.account_checked(owner, AccountCheck::Verified, now);
    assert_eq!(sent(&mut hub, owner)[0], "welcome");

    // Three logins being checked fill the cap: a new connection is the
    // one refused, and says so.
    let mut hub = Hub::new(
        Limits {
            max_pending: 3,
            ..Limits::default()
        },
        "hi",
    );
    hub.set_accounts(true);
    let checked: Vec<ClientId> = (1..=3)
        .map(|i| login(&mut hub, &format!("user{i}"), &format!("10.0.0.{i}")))
        .collect();
    let late = hub.handle_connect_from(ip("10.0.9.9"), now);
    let refused = refusals(&mut hub);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, late);
    assert_eq!(refused[0].1, RefuseCode::SERVER_FULL);
    assert!(
        refused[0].2.contains("logins are being checked"),
        "{}",
        refused[0].2
    );
    for c in checked {
        assert!(hub.is_connected(c));
        hub.account_checked(c, AccountCheck::Verified, now);
        assert_eq!(sent(&mut hub, c)[0], "welcome");
    }
}

#[test]
fn the_console_shows_what_was_typed_inert_and_cut() {
    let now = Instant::now();
    let mut hub = Hub::new(Limits::default(), "hi");
    // A control character, an escape sequence and a bidi override typed
    // (or pasted) as a command: echoed shown, not acted on.
    let answer = hub.console("\0", now);
    assert!(answer.starts_with("unknown command '^@'"), "{answer:?}");
    let answer = hub.console("x\x1b[2J\u{202e}", now);
    assert!(
        answer.starts_with("unknown command 'x^[[2J\\u{202e}'"),
        "{answer:?}"
    );
    // A target that is no name nor address.
    let answer = hub.console("ban a\x1bb", now);
    assert!(answer.starts_with("'a^[b' is neither"), "{answer:?}");
    assert!(!answer.contains('\x1b'), "{answer:?}");
    // A 100 KB line: its start, with an ellipsis, not the whole of it.
    for line in ["y".repeat(100_000), format!("kick {}", "z".repeat(100_000))] {
        let answer = hub.console(&line, now);
        assert!(answer.len() < 300, "{} bytes", answer.len());
        assert!(answer.contains("…'"), "{answer:?}");
    }
    let answer = hub.console(&format!("unban {}", "w".repeat(100_000)), now);
    assert!(answer.len() < 300, "{} bytes", answer.len());
}
