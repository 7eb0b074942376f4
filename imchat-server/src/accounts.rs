//! Protected usernames: the password hashes, where they are kept, and the
//! checks the hub asks for ([`HubEvent::CheckAccount`](imchat_core::HubEvent),
//! `Register`, `Unregister`).
//!
//! **Hashes.** Argon2id (RFC 9106) with the parameters OWASP recommends as
//! its first choice: m = 19 MiB (19,456 KiB), t = 2 passes, p = 1 lane, a
//! 16-byte random salt per password, a 32-byte output; stored as the PHC
//! string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), which names its own
//! parameters, so that raising them later still verifies old hashes. One
//! hash takes tens of milliseconds and 19 MiB: it runs on the reader thread
//! of the connection that asked, never under the hub's lock, and at most
//! [`MAX_HASHING`] at once (others wait their turn on their own thread), so
//! a burst of logins cannot take the memory or every core. Verification
//! compares in constant time (the `argon2` crate's `verify_password`).
//!
//! **Storage** is behind [`AccountStore`], three calls by name key: the
//! SQLite table of `--history-db` ([`crate::store::SqliteAccounts`]), or
//! with `--redis` Redis ([`crate::cluster_accounts::RedisAccounts`]).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use imchat_core::{AccountCheck, NoticeCode, Secret, Username};

/// Hashes computed at once, whichever connections ask.
pub const MAX_HASHING: usize = 2;
/// Argon2id memory, in KiB (19 MiB).
const M_COST: u32 = 19 * 1024;
/// Argon2id passes.
const T_COST: u32 = 2;
/// Argon2id lanes.
const P_COST: u32 = 1;

/// Where registrations are kept: a password hash (a PHC string) per name key.
pub trait AccountStore: Send + Sync {
    /// The hash registered for the name key `key`, if any.
    ///
    /// # Errors
    ///
    /// The store cannot be read; the text says why.
    fn hash_of(&self, key: &str) -> Result<Option<String>, String>;

    /// Registers `key` (shown as `name`) with `hash`; false when it was
    /// registered already (nothing changes).
    ///
    /// # Errors
    ///
    /// The store cannot be written.
    fn insert(&self, key: &str, name: &str, hash: &str) -> Result<bool, String>;

    /// Removes the registration of `key`; false when there was none.
    ///
    /// # Errors
    ///
    /// The store cannot be written.
    fn remove(&self, key: &str) -> Result<bool, String>;
}

impl<T: AccountStore> AccountStore for std::sync::Arc<T> {
    fn hash_of(&self, key: &str) -> Result<Option<String>, String> {
        (**self).hash_of(key)
    }
    fn insert(&self, key: &str, name: &str, hash: &str) -> Result<bool, String> {
        (**self).insert(key, name, hash)
    }
    fn remove(&self, key: &str) -> Result<bool, String> {
        (**self).remove(key)
    }
}

/// Where the operators' bans are kept across restarts (all of them at
/// once: they are few).
pub trait BanStore: Send + Sync + std::fmt::Debug {
    /// The bans kept, oldest first.
    ///
    /// # Errors
    ///
    /// The store cannot be read, or holds a ban that is not valid.
    fn load_bans(&self) -> Result<Vec<imchat_core::Ban>, String>;

    /// Keeps `bans` (every ban in force) in place of those kept before.
    ///
    /// # Errors
    ///
    /// The store cannot be written.
    fn save_bans(&self, bans: &[imchat_core::Ban]) -> Result<(), String>;

    /// Bans changed elsewhere (by another server of a cluster) since the
    /// last call, to put in force in place of the hub's; `None` when
    /// nothing changed. A store only this server writes has none.
    fn fresh_bans(&self) -> Option<Vec<imchat_core::Ban>> {
        None
    }
}

/// The accounts of a server: a store, and the hashing done for it.
pub struct Accounts {
    store: Box<dyn AccountStore>,
    /// What makes two names the same user (the hub's name key).
    key: fn(&Username) -> String,
    /// The keys of the other names a name reads as, whose registrations
    /// protect it too ([`with_look_alikes`](Self::with_look_alikes)).
    look_alikes: fn(&Username) -> Vec<String>,
    /// Hashes running now, at most [`MAX_HASHING`].
    running: Mutex<usize>,
    turn: Condvar,
    /// The hash last read or written for each registered name key this
    /// server has seen, at most [`MAX_KNOWN`]: while the store cannot be
    /// read (a Redis outage), a password is checked against it rather
    /// than a resume being let in unchecked.
    known: Mutex<HashMap<String, String>>,
}

/// Registered names whose last known hash is kept.
const MAX_KNOWN: usize = 65_536;

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accounts(..)")
    }
}

impl Accounts {
    /// Accounts kept in `store`, by the name key `key`.
    pub fn new(store: Box<dyn AccountStore>, key: fn(&Username) -> String) -> Accounts {
        Accounts {
            store,
            key,
            look_alikes: |_| Vec::new(),
            running: Mutex::new(0),
            turn: Condvar::new(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// These accounts, where a name that is not registered but reads as
    /// one that is (`look_alikes` gives the keys of the names it reads
    /// as) needs that one's password, and cannot be registered apart.
    #[must_use]
    pub fn with_look_alikes(mut self, look_alikes: fn(&Username) -> Vec<String>) -> Accounts {
        self.look_alikes = look_alikes;
        self
    }

    /// The hash registered under `key`: read from the store, or, when it
    /// cannot be read, the one last known for it.
    fn hash_for(&self, key: &str) -> Result<Option<String>, String> {
        match self.store.hash_of(key) {
            Ok(hash) => {
                self.note(key, hash.as_deref());
                Ok(hash)
            }
            Err(e) => self.known().get(key).cloned().map(Some).ok_or(e),
        }
    }

    /// The hash protecting `user`: its own registration's, else that of
    /// a registered name it reads as (then `true`).
    fn protecting(&self, user: &Username) -> Result<Option<(String, bool)>, String> {
        if let Some(hash) = self.hash_for(&(self.key)(user))? {
            return Ok(Some((hash, false)));
        }
        for key in (self.look_alikes)(user) {
            if let Some(hash) = self.hash_for(&key)? {
                return Ok(Some((hash, true)));
            }
        }
        Ok(None)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes what the store said of `key`: registered with `hash`, or not.
    fn note(&self, key: &str, hash: Option<&str>) {
        let mut known = self.known();
        match hash {
            Some(h) if known.len() < MAX_KNOWN || known.contains_key(key) => {
                known.insert(key.to_string(), h.to_string());
            }
            Some(_) => {}
            None => {
                known.remove(key);
            }
        }
    }

    fn hasher() -> Argon2<'static> {
        // The parameters are constants in range: this cannot fail.
        let params = Params::new(M_COST, T_COST, P_COST, None).unwrap_or_default();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Runs `f` when fewer than [`MAX_HASHING`] hashes run.
    fn hashing<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *running >= MAX_HASHING {
            running = self
                .turn
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        drop(running);
        let result = f();
        *self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        self.turn.notify_one();
        result
    }

    /// The verdict on `password` for `user` (see [`AccountCheck`]).
    ///
    /// When the store cannot be read, a name this server knows as
    /// registered is checked against the hash it last read or wrote for
    /// it (the password of a user of this server does not stop counting
    /// in an outage); any other name is [`AccountCheck::Unavailable`].
    ///
    /// A name that is not registered but reads as one that is (see
    /// [`with_look_alikes`](Self::with_look_alikes)) is checked against
    /// that one's hash: [`AccountCheck::LooksRegistered`] without a
    /// password.
    pub fn check(&self, user: &Username, password: Option<&Secret>) -> AccountCheck {
        let (stored, look_alike) = match self.protecting(user) {
            Ok(Some(found)) => found,
            Ok(None) => return AccountCheck::Open,
            Err(e) => return AccountCheck::Unavailable(e),
        };
        let Some(password) = password else {
            return if look_alike {
                AccountCheck::LooksRegistered
            } else {
                AccountCheck::Missing
            };
        };
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return AccountCheck::Unavailable(format!(
                "the stored hash of '{user}' is not a PHC string"
            ));
        };
        let ok = self.hashing(|| {
            Self::hasher()
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok()
        });
        if ok {
            AccountCheck::Verified
        } else {
            AccountCheck::Wrong
        }
    }

    /// Registers `user` with `password`: the notice to send back (a store
    /// that fails is logged, and the client told only that it failed).
    pub fn register(&self, user: &Username, password: &Secret) -> (NoticeCode, String) {
        self.try_register(user, password).unwrap_or_else(|e| {
            log::error!("{e}");
            (
                NoticeCode::FAILED,
                "the server cannot store accounts now".into(),
            )
        })
    }

    /// [`register`](Self::register), a failure returned in words: what
    /// failed and the store's own reason (for the command line, whose
    /// operator needs the cause: a wrong Redis password, say).
    ///
    /// # Errors
    ///
    /// The store cannot be read or written, or the password not hashed.
    pub fn try_register(
        &self,
        user: &Username,
        password: &Secret,
    ) -> Result<(NoticeCode, String), String> {
        let key = (self.key)(user);
        let registered = |k: &str| {
            self.store
                .hash_of(k)
                .map(|h| h.is_some())
                .map_err(|e| format!("cannot read the accounts: {e}"))
        };
        if registered(&key)? {
            return Ok((
                NoticeCode::ALREADY_REGISTERED,
                format!(
                    "'{user}' is registered already (/unregister first to change the password)"
                ),
            ));
        }
        for other in (self.look_alikes)(user) {
            if registered(&other)? {
                return Ok((
                    NoticeCode::ALREADY_REGISTERED,
                    format!("'{user}' looks like a registered name: it cannot be registered apart"),
                ));
            }
        }
        let hash = self
            .hashing(|| hash_password(password))
            .map_err(|e| format!("cannot hash a password: {e}"))?;
        let inserted = self
            .store
            .insert(&key, user.as_str(), &hash)
            .map_err(|e| format!("cannot store an account: {e}"))?;
        Ok(if inserted {
            self.note(&key, Some(&hash));
            (
                NoticeCode::REGISTERED,
                format!("'{user}' is registered: from now on it needs its password"),
            )
        } else {
            (
                NoticeCode::ALREADY_REGISTERED,
                format!("'{user}' is registered already"),
            )
        })
    }

    /// Whether `user` is registered.
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    pub fn is_registered(&self, user: &Username) -> Result<bool, String> {
        Ok(self.store.hash_of(&(self.key)(user))?.is_some())
    }

    /// Removes the registration of `user`: the notice to send back.
    pub fn unregister(&self, user: &Username) -> (NoticeCode, String) {
        let key = (self.key)(user);
        match self.store.remove(&key) {
            Ok(true) => {
                self.note(&key, None);
                (
                    NoticeCode::UNREGISTERED,
                    format!("'{user}' is no longer registered"),
                )
            }
            Ok(false) => (
                NoticeCode::NOT_REGISTERED,
                format!("'{user}' is not registered"),
            ),
            Err(e) => {
                log::error!("cannot remove an account: {e}");
                (
                    NoticeCode::FAILED,
                    "the server cannot change accounts now".into(),
                )
            }
        }
    }

    /// Removes the registration of `name` (the operator's offline reset):
    /// whether there was one.
    ///
    /// # Errors
    ///
    /// The store cannot be written.
    pub fn reset(&self, name: &Username) -> Result<bool, String> {
        let key = (self.key)(name);
        let removed = self.store.remove(&key)?;
        self.note(&key, None);
        Ok(removed)
    }
}

/// An Argon2id PHC string of `password` with a fresh random salt.
fn hash_password(password: &Secret) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Accounts::hasher()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Memory(Mutex<HashMap<String, String>>);

    impl AccountStore for Memory {
        fn hash_of(&self, key: &str) -> Result<Option<String>, String> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        fn insert(&self, key: &str, _name: &str, hash: &str) -> Result<bool, String> {
            let mut m = self.0.lock().unwrap();
            if m.contains_key(key) {
                return Ok(false);
            }
            m.insert(key.into(), hash.into());
            Ok(true)
        }
        fn remove(&self, key: &str) -> Result<bool, String> {
            Ok(self.0.lock().unwrap().remove(key).is_some())
        }
    }

    fn user(n: &str) -> Username {
        Username::new(n).unwrap()
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s).unwrap()
    }

    /// A store that cannot be read or written while `down`.
    #[derive(Default)]
    struct Flaky {
        inner: Memory,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn up(&self) -> Result<(), String> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err("Redis is unreachable".into())
            } else {
                Ok(())
            }
        }
    }

    impl AccountStore for Flaky {
        fn hash_of(&self, key: &str) -> Result<Option<String>, String> {
            self.up()?;
            self.inner.hash_of(key)
        }
        fn insert(&self, key: &str, name: &str, hash: &str) -> Result<bool, String> {
            self.up()?;
            self.inner.insert(key, name, hash)
        }
        fn remove(&self, key: &str) -> Result<bool, String> {
            self.up()?;
            self.inner.remove(key)
        }
    }

    #[test]
    fn while_the_store_is_unreachable_a_known_name_is_checked_against_its_last_hash() {
        let store = std::sync::Arc::new(Flaky::default());
        let accounts = Accounts::new(Box::new(store.clone()), Username::key);
        // Registered on this server, and bob's seen in a check: both known.
        assert_eq!(
            accounts.register(&user("mo"), &secret("right")).0,
            NoticeCode::REGISTERED
        );
        store
            .inner
            .insert("bob", "bob", &hash_password(&secret("bobpw")).unwrap())
            .unwrap();
        assert_eq!(
            accounts.check(&user("bob"), Some(&secret("bobpw"))),
            AccountCheck::Verified
        );
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            accounts.check(&user("mo"), Some(&secret("wrong"))),
            AccountCheck::Wrong
        );
        assert_eq!(accounts.check(&user("MO"), None), AccountCheck::Missing);
        assert_eq!(
            accounts.check(&user("mo"), Some(&secret("right"))),
            AccountCheck::Verified
        );
        assert_eq!(
            accounts.check(&user("bob"), Some(&secret("nope"))),
            AccountCheck::Wrong
        );
        // A name never seen here cannot be checked.
        assert!(matches!(
            accounts.check(&user("zed"), None),
            AccountCheck::Unavailable(_)
        ));
        // Unregistered (with the store back), it is no longer known.
        store.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(accounts.unregister(&user("mo")).0, NoticeCode::UNREGISTERED);
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            accounts.check(&user("mo"), None),
            AccountCheck::Unavailable(_)
        ));
    }

    #[test]
    fn a_registered_name_needs_its_password_and_only_it() {
        let accounts = Accounts::new(Box::new(Memory::default()), Username::key);
        assert_eq!(accounts.check(&user("alice"), None), AccountCheck::Open);
        let (code, _) = accounts.register(&user("alice"), &secret("s3cret"));
        assert_eq!(code, NoticeCode::REGISTERED);
        // The key ignores case: ALICE is the same account.
        assert_eq!(accounts.check(&user("ALICE"), None), AccountCheck::Missing);
        assert_eq!(
            accounts.check(&user("alice"), Some(&secret("wrong"))),
            AccountCheck::Wrong
        );
        assert_eq!(
            accounts.check(&user("alice"), Some(&secret("s3cret"))),
            AccountCheck::Verified
        );
        let (code, _) = accounts.register(&user("alice"), &secret("other"));
        assert_eq!(code, NoticeCode::ALREADY_REGISTERED);
        assert_eq!(
            accounts.unregister(&user("alice")).0,
            NoticeCode::UNREGISTERED
        );
        assert_eq!(
            accounts.unregister(&user("alice")).0,
            NoticeCode::NOT_REGISTERED
        );
        assert_eq!(accounts.check(&user("alice"), None), AccountCheck::Open);
    }

    #[test]
    fn a_name_that_reads_as_a_registered_one_needs_that_ones_password() {
        let accounts = Accounts::new(Box::new(Memory::default()), crate::names::key)
            .with_look_alikes(crate::names::look_alike_keys);
        let (code, _) = accounts.register(&user("alice"), &secret("s3cret"));
        assert_eq!(code, NoticeCode::REGISTERED);
        assert_eq!(
            accounts.check(&user("aIice"), None),
            AccountCheck::LooksRegistered
        );
        assert_eq!(
            accounts.check(&user("aIice"), Some(&secret("guess"))),
            AccountCheck::Wrong
        );
        assert_eq!(
            accounts.check(&user("aIice"), Some(&secret("s3cret"))),
            AccountCheck::Verified
        );
        let (code, _) = accounts.register(&user("aIice"), &secret("mine"));
        assert_eq!(code, NoticeCode::ALREADY_REGISTERED);
        // Its own name, the registered one, and a name of its own.
        assert_eq!(accounts.check(&user("ALICE"), None), AccountCheck::Missing);
        assert_eq!(accounts.check(&user("aiice"), None), AccountCheck::Open);
        // Without the look-alike rule, a look-alike is a name of its own.
        let plain = Accounts::new(Box::new(Memory::default()), crate::names::key);
        plain.register(&user("alice"), &secret("s3cret"));
        assert_eq!(plain.check(&user("aIice"), None), AccountCheck::Open);
    }

    #[test]
    fn hashes_are_argon2id_with_the_documented_parameters_and_a_fresh_salt() {
        let a = hash_password(&secret("pw")).unwrap();
        let b = hash_password(&secret("pw")).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(!a.contains("pw$"));
    }
}
