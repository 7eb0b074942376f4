//! The servers a client may connect to: one, or several servers of one
//! cluster, tried in turn (as weechat's `addresses` list of a network).
//!
//! The first connection tries them in the order given. After a lost
//! connection the next try starts with the server after the one lost, and
//! the one lost comes last: a server that went away most often stays away
//! for a while, and any server of the cluster can give the session back.

use std::sync::atomic::{AtomicUsize, Ordering};

use imchat_core::inert;

use crate::error::ClientError;

/// One server: a host name or IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name or IP address, as given.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Server {
    /// `host:port` (`[addr]:port` for an IPv6 address), made inert for
    /// showing.
    pub fn shown(&self) -> String {
        crate::app::host_port(&inert(&self.host), self.port)
    }
}

/// The servers, and which one to try first.
#[derive(Debug)]
pub struct Servers {
    list: Vec<Server>,
    /// The index to try first: the one last connected to, or after a lost
    /// connection the one after it.
    start: AtomicUsize,
    /// The index of the server the session was last welcomed on
    /// ([`NONE`]: none yet).
    joined: AtomicUsize,
}

/// No server: [`Servers::joined`] before the first welcome.
const NONE: usize = usize::MAX;

impl Servers {
    /// The servers in the order given; `None` for an empty list.
    pub fn new(list: Vec<Server>) -> Option<Servers> {
        (!list.is_empty()).then_some(Servers {
            list,
            start: AtomicUsize::new(0),
            joined: AtomicUsize::new(NONE),
        })
    }

    /// Notes `server` (one of [`all`](Self::all)) as the one the session
    /// was welcomed on.
    pub fn joined_on(&self, server: &Server) {
        if let Some(i) = self.index_of(server) {
            self.joined.store(i, Ordering::Relaxed);
        }
    }

    /// True when `server` is another than the one the session was last
    /// welcomed on (false before any welcome).
    pub fn is_another(&self, server: &Server) -> bool {
        let joined = self.joined.load(Ordering::Relaxed);
        joined != NONE && self.index_of(server) != Some(joined)
    }

    fn index_of(&self, server: &Server) -> Option<usize> {
        self.list.iter().position(|s| std::ptr::eq(s, server))
    }

    /// How many servers were given.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The first server given: saved sessions are kept under its name.
    pub fn first(&self) -> &Server {
        &self.list[0]
    }

    /// Every server given, in the order given.
    pub fn all(&self) -> &[Server] {
        &self.list
    }

    /// After a lost connection: start the next tries with the server
    /// after the one that was lost.
    pub fn move_on(&self) {
        let next = (self.start.load(Ordering::Relaxed) + 1) % self.list.len();
        self.start.store(next, Ordering::Relaxed);
    }

    /// Tries `connect` on each server in turn, from the one to try first,
    /// until one works; that one is tried first next time. One server's
    /// failure is its own error; with several, the error lists them all.
    pub fn connect<T>(
        &self,
        mut connect: impl FnMut(&Server) -> Result<T, ClientError>,
    ) -> Result<(T, &Server), ClientError> {
        let n = self.list.len();
        let start = self.start.load(Ordering::Relaxed) % n;
        let mut failed = Vec::new();
        for i in (start..n).chain(0..start) {
            let server = &self.list[i];
            match connect(server) {
                Ok(value) => {
                    self.start.store(i, Ordering::Relaxed);
                    return Ok((value, server));
                }
                Err(e) if n == 1 => return Err(e),
                Err(e) => failed.push(format!("{} ({})", server.shown(), reason(&e))),
            }
        }
        Err(ClientError::NoServer(failed.join(", ")))
    }
}

/// Why one server of several could not be reached, without repeating its
/// address.
fn reason(e: &ClientError) -> String {
    match e {
        ClientError::Resolve(_) => "cannot resolve the host".into(),
        ClientError::Connect { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(ports: &[u16]) -> Servers {
        let list = ports
            .iter()
            .map(|&port| Server {
                host: "h".into(),
                port,
            })
            .collect();
        Servers::new(list).expect("not empty")
    }

    /// Connects with only the servers in `up` answering; the ports tried,
    /// in order, and the one reached.
    fn reach(s: &Servers, up: &[u16]) -> (Vec<u16>, Result<u16, String>) {
        let mut tried = Vec::new();
        let result = s.connect(|server| {
            tried.push(server.port);
            if up.contains(&server.port) {
                Ok(server.port)
            } else {
                Err(ClientError::Connect {
                    addr: server.shown(),
                    reason: "connection refused".into(),
                })
            }
        });
        (tried, result.map(|(p, _)| p).map_err(|e| e.to_string()))
    }

    #[test]
    fn a_server_is_another_than_the_one_joined_on_only_after_a_welcome() {
        let s = servers(&[1, 2]);
        let (_, first) = s.connect(|_| Ok(())).unwrap();
        assert!(!s.is_another(first), "no welcome yet");
        s.joined_on(first);
        assert!(!s.is_another(first));
        s.move_on();
        let (_, second) = s.connect(|_| Ok(())).unwrap();
        assert_eq!(second.port, 2);
        assert!(s.is_another(second));
        s.joined_on(second);
        assert!(!s.is_another(second));
        assert!(s.is_another(&s.all()[0]));
    }

    #[test]
    fn an_empty_list_is_no_servers() {
        assert!(Servers::new(Vec::new()).is_none());
    }

    #[test]
    fn servers_are_tried_in_order_until_one_answers() {
        let s = servers(&[1, 2, 3]);
        assert_eq!(reach(&s, &[2, 3]), (vec![1, 2], Ok(2)));
        // The one that answered is tried first from now on.
        assert_eq!(reach(&s, &[1, 2, 3]), (vec![2], Ok(2)));
        assert_eq!(reach(&s, &[1]), (vec![2, 3, 1], Ok(1)));
        assert_eq!(s.first().port, 1);
    }

    #[test]
    fn after_a_loss_the_next_server_is_tried_first_and_the_lost_one_last() {
        let s = servers(&[1, 2, 3]);
        assert_eq!(reach(&s, &[1, 2, 3]).1, Ok(1));
        s.move_on();
        assert_eq!(reach(&s, &[1]), (vec![2, 3, 1], Ok(1)));
        s.move_on();
        assert_eq!(reach(&s, &[1, 2, 3]), (vec![2], Ok(2)));
        s.move_on();
        s.move_on();
        // Round the end of the list.
        assert_eq!(reach(&s, &[1, 2, 3]), (vec![1], Ok(1)));
    }

    #[test]
    fn one_server_keeps_its_own_error_and_several_are_listed() {
        let one = servers(&[1]);
        one.move_on();
        assert_eq!(
            reach(&one, &[]),
            (
                vec![1],
                Err("cannot connect to h:1: connection refused".into())
            )
        );
        let two = Servers::new(vec![
            Server {
                host: "::1".into(),
                port: 1,
            },
            Server {
                host: "nowhere".into(),
                port: 2,
            },
        ])
        .expect("not empty");
        let err = two
            .connect(|server| {
                Err::<(), _>(if server.port == 1 {
                    ClientError::Connect {
                        addr: server.shown(),
                        reason: "timed out".into(),
                    }
                } else {
                    ClientError::Resolve(server.host.clone())
                })
            })
            .expect_err("none answers");
        assert_eq!(
            err.to_string(),
            "cannot connect to any of the servers: [::1]:1 (timed out), nowhere:2 (cannot resolve the host)"
        );
    }
}
