//! Names that look alike without being the same user. A name key must
//! keep a capital `I` apart from `l` (`mail` and `mall` are two users),
//! while in most fonts `aIice` reads as `alice`: a looser key
//! ([`Hub::set_loose_name_key`]) reads them alike, and a new name is
//! refused while a name it looks like that way is taken, or banned.
//!
//! A capital `I` may be meant as either letter (`ALICE`, `aIice`), so a
//! name has two readings, its name key and its loose key, and two names
//! look alike when a reading of one is a reading of the other.

use std::collections::HashMap;

use super::Hub;
use crate::message::Username;

/// The readings of the names taken (every session here, live or waiting
/// for its client, and every user of the other servers the hub knows
/// of), kept as the names come and go: a join looks up its two readings
/// instead of going through every user.
#[derive(Debug, Default)]
pub(super) struct Lookalikes {
    /// The loose key of the taken name of each name key.
    loose_of: HashMap<String, String>,
    /// The name keys of the taken names with each reading (a name key or
    /// a loose key).
    by_reading: HashMap<String, Vec<String>>,
}

impl Lookalikes {
    fn insert(&mut self, key: &str, loose: String) {
        self.by_reading
            .entry(key.to_owned())
            .or_default()
            .push(key.to_owned());
        if loose != key {
            self.by_reading
                .entry(loose.clone())
                .or_default()
                .push(key.to_owned());
        }
        self.loose_of.insert(key.to_owned(), loose);
    }

    fn remove(&mut self, key: &str) {
        let Some(loose) = self.loose_of.remove(key) else {
            return;
        };
        for reading in [key, loose.as_str()] {
            if let Some(keys) = self.by_reading.get_mut(reading) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.by_reading.remove(reading);
                }
            }
        }
    }

    /// A taken name key other than `key` with the reading `key` or `loose`.
    fn other(&self, key: &str, loose: &str) -> Option<&str> {
        [key, loose]
            .into_iter()
            .filter_map(|reading| self.by_reading.get(reading))
            .flatten()
            .map(String::as_str)
            .find(|k| *k != key)
    }
}

impl Hub {
    /// Sets the loose key of names: a new name is refused while another
    /// name online (here, waiting for its client, or on another server
    /// of the cluster) looks like it, and refused as banned when a banned
    /// name looks like it. Two names look alike when the name key or the
    /// loose key of one is the name key or the loose key of the other,
    /// and their name keys differ (the same key is the same user, for
    /// which nothing changes: a resume, its own name again). For what a
    /// name key must keep apart and a reader would not: a server's reads
    /// a capital `I` as `l` (`aIice` is `alice`), which the name key
    /// cannot (`mail` and `mall` are two users). The default is the name
    /// key itself: no names look alike but those that are the same user.
    pub fn set_loose_name_key(&mut self, key: fn(&Username) -> String) {
        self.loose_name_key = Some(key);
        self.loose_memo_mut().clear();
        self.renote_taken();
    }

    /// The loose key of `name`, kept as its name key is (see `Hub::key`).
    pub(super) fn loose_key(&self, name: &Username) -> String {
        match self.loose_name_key {
            Some(loose) => super::memoized(&self.loose_memo, name, loose),
            None => self.key(name),
        }
    }

    fn loose_memo_mut(&mut self) -> &mut HashMap<String, String> {
        self.loose_memo
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Who holds name key `key` now: its session here, or a user of
    /// another server.
    fn holder(&self, key: &str) -> Option<&Username> {
        self.sessions
            .get(key)
            .map(|s| &s.user)
            .or_else(|| self.remote_user(key))
    }

    /// Brings the readings of name key `key` up to date, after the name
    /// tables changed for it (a session opened or ended, a user of
    /// another server came or went).
    pub(super) fn note_taken(&mut self, key: &str) {
        let loose = self.holder(key).map(|user| self.loose_key(user));
        if loose.as_ref() == self.lookalikes.loose_of.get(key) {
            return;
        }
        self.lookalikes.remove(key);
        if let Some(loose) = loose {
            self.lookalikes.insert(key, loose);
        }
    }

    /// Works out every taken name's readings afresh (the rules changed,
    /// or the tables were emptied at once).
    pub(super) fn renote_taken(&mut self) {
        let mut fresh = Lookalikes::default();
        let keys: Vec<&String> = self
            .sessions
            .keys()
            .chain(self.remote.users.keys())
            .collect();
        for key in keys {
            if !fresh.loose_of.contains_key(key) {
                let loose = self.holder(key).map(|u| self.loose_key(u));
                if let Some(loose) = loose {
                    fresh.insert(key, loose);
                }
            }
        }
        self.lookalikes = fresh;
    }

    /// The name key of a taken name that `name` (of name key `key`) looks
    /// like and is not, if any.
    pub(super) fn lookalike_taken(&self, name: &Username, key: &str) -> Option<String> {
        let loose = self.loose_key(name);
        self.lookalikes.other(key, &loose).map(str::to_owned)
    }

    /// Whether `a` and `b` are the same user or look alike.
    pub(super) fn same_or_alike(&self, a: &Username, b: &Username) -> bool {
        let (ka, kb) = (self.key(a), self.key(b));
        if ka == kb {
            return true;
        }
        let (la, lb) = (self.loose_key(a), self.loose_key(b));
        la == kb || la == lb || ka == lb
    }

    /// The readings kept are those of the names taken.
    pub(super) fn check_lookalikes(&self) -> Result<(), String> {
        let mut expected = 0;
        for key in self.sessions.keys().chain(self.remote.users.keys()) {
            let Some(user) = self.holder(key) else {
                continue;
            };
            let loose = self.loose_key(user);
            if self.lookalikes.loose_of.get(key) != Some(&loose) {
                return Err(format!("the loose key of taken name {key} is not kept"));
            }
        }
        for (key, loose) in &self.lookalikes.loose_of {
            if self.holder(key).is_none() {
                return Err(format!("the loose key of {key} is kept, not taken"));
            }
            expected += if key == loose { 1 } else { 2 };
        }
        let kept: usize = self.lookalikes.by_reading.values().map(Vec::len).sum();
        if kept != expected {
            return Err(format!("{kept} readings kept, {expected} expected"));
        }
        Ok(())
    }
}
