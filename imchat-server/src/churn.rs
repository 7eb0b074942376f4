//! How many connections of one address are logged one by one.
//!
//! Every connection costs the server's output a line ("connection from")
//! and its log a few more (its refusal or close, its resume, its loss).
//! A client that connects and hangs up in a loop, or resumes its session
//! in a loop, opens hundreds of connections a second: unchecked, it
//! wrote thousands of lines a second, and pushed everything else out of
//! the rotated log files within minutes. So the lines about the
//! connections of one address (an IPv4 address, an IPv6 /64, as for the
//! server's other caps per address) are written for its first
//! [`LOGGED_PER_WINDOW`] connections within [`WINDOW`]; the ones after
//! are counted, said in one line when the first of them comes and in one
//! line with their count when the window is over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The window connections are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Connections of one address logged one by one within [`WINDOW`]: as
/// many as may join from one address in a minute (a classroom behind one
/// address), and a few more.
pub const LOGGED_PER_WINDOW: u32 = 64;

/// One address's window.
#[derive(Debug)]
struct Tally {
    since: Instant,
    opened: u32,
    hidden: u64,
}

/// The connections counted per address.
#[derive(Debug, Default)]
pub struct Churn {
    tallies: HashMap<IpAddr, Tally>,
}

/// Whether a new connection's lines are written.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Written, as usual.
    Logged,
    /// Not written (counted). `first` is the line to write instead, for
    /// the first such connection of the window.
    Hidden { first: Option<String> },
}

impl Churn {
    /// A connection from `ip` at `now`.
    pub fn connect(&mut self, ip: IpAddr, now: Instant) -> Admit {
        let key = imchat_core::address_key(ip);
        let tally = self.tallies.entry(key).or_insert(Tally {
            since: now,
            opened: 0,
            hidden: 0,
        });
        if tally.opened < LOGGED_PER_WINDOW {
            tally.opened += 1;
            return Admit::Logged;
        }
        tally.hidden += 1;
        let first = (tally.hidden == 1).then(|| {
            format!(
                "connections from {}: more than {LOGGED_PER_WINDOW} within {} s; \
                 until that time is over, the next ones are counted, not logged one by one",
                shown(key),
                WINDOW.as_secs()
            )
        });
        Admit::Hidden { first }
    }

    /// Ends the windows that are over at `now`: a line for each that had
    /// connections not logged.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        self.tallies.retain(|key, tally| {
            if now.saturating_duration_since(tally.since) < WINDOW {
                return true;
            }
            if tally.hidden > 0 {
                let plural = if tally.hidden == 1 { "" } else { "s" };
                lines.push(format!(
                    "connections from {}: {} more connection{plural} within {} s, not logged one by one",
                    shown(*key),
                    tally.hidden,
                    WINDOW.as_secs()
                ));
            }
            false
        });
        lines.sort();
        lines
    }
}

/// An address key as the log shows it: an IPv6 one is its /64.
fn shown(key: IpAddr) -> String {
    match key {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("{ip}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_past_its_share_is_counted_and_said_twice_per_window() {
        let mut churn = Churn::default();
        let t0 = Instant::now();
        for _ in 0..LOGGED_PER_WINDOW {
            assert_eq!(churn.connect(ip("10.0.0.1"), t0), Admit::Logged);
        }
        let Admit::Hidden { first: Some(line) } = churn.connect(ip("10.0.0.1"), t0) else {
            panic!("the first connection past the share is not said");
        };
        assert!(
            line.starts_with("connections from 10.0.0.1: more than 64"),
            "{line}"
        );
        for _ in 0..9 {
            assert_eq!(
                churn.connect(ip("10.0.0.1"), t0),
                Admit::Hidden { first: None }
            );
        }
        // Another address has its own share.
        assert_eq!(churn.connect(ip("10.0.0.2"), t0), Admit::Logged);
        // Nothing is said before the window is over.
        assert!(churn
            .expire(t0 + WINDOW - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            churn.expire(t0 + WINDOW),
            vec![
                "connections from 10.0.0.1: 10 more connections within 60 s, not logged one by one"
            ]
        );
        // A new window: logged again, and the quiet address is forgotten.
        assert!(churn.tallies.is_empty());
        assert_eq!(churn.connect(ip("10.0.0.1"), t0 + WINDOW), Admit::Logged);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let mut churn = Churn::default();
        let t0 = Instant::now();
        for i in 0..LOGGED_PER_WINDOW {
            let a = ip(&format!("2001:db8::{:x}", i + 1));
            assert_eq!(churn.connect(a, t0), Admit::Logged);
        }
        assert!(matches!(
            churn.connect(ip("2001:db8::ffff:1"), t0),
            Admit::Hidden { first: Some(_) }
        ));
        assert_eq!(churn.connect(ip("2001:db8:0:1::1"), t0), Admit::Logged);
        assert_eq!(
            churn.expire(t0 + WINDOW),
            vec!["connections from 2001:db8::/64: 1 more connection within 60 s, not logged one by one"]
        );
    }
}
