//! The server's connections to Redis, each request bounded by one timeout.
//!
//! The client crate's blocking connection reads every reply of a pipeline
//! (a transaction's: one per command queued) with the whole read timeout,
//! even after one of them did not come: a connection that hangs (a Redis
//! frozen, a firewall or NAT that forgot the connection, a network that
//! drops) held a publisher with a join in flight for a timeout per reply,
//! a rejoin with many users for minutes. Its handshake did the same with a
//! URL that has a password and a database (`AUTH`, `SELECT`), so that the
//! round that tells users of an outage ended only when Redis answered again.
//!
//! Here a connection is given up at the first reply that fails: it is
//! closed at once, and every later request on it fails without touching
//! the network, so its owner opens a new one (as it does after any
//! failure). The database of the URL is selected after the handshake, as a
//! request of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, ErrorKind, RedisError, RedisResult, Value};

/// Where the server's Redis is: the crate's client, without the URL's
/// database (and, in RESP2, its user name and password), and those.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    db: i64,
    /// The URL's user name and password, sent by [`Redis::connect`] as a
    /// request of its own: `None` when the URL has no password, or when
    /// the handshake sends them (RESP3's `HELLO`, which keeps Redis's
    /// answer).
    auth: Option<Auth>,
    /// Whether the URL names a user (ACL).
    user: bool,
    /// Whether Redis's version was found new enough (asked once, on the
    /// first connection; again after a Redis found too old).
    recent: Arc<AtomicBool>,
    /// The wait before a Redis that refused this server's settings is
    /// tried again (shared by the clones: every loop of the server).
    backoff: Arc<Mutex<Backoff>>,
}

/// The first wait after Redis refused the server's settings (a wrong
/// password, a database it does not have, a version too old): doubled at
/// each refusal in a row, up to [`MOST_BACKOFF`]. A Redis that cannot be
/// reached is tried again at once (it may be restarting); one that refuses
/// will go on refusing until its operator changes something, and a server
/// left so retried about twice a second, a new connection each, forever.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a Redis that refuses the settings.
pub(crate) const MOST_BACKOFF: Duration = Duration::from_secs(30);

/// Refusals of the server's settings in a row, and the last one.
#[derive(Default)]
struct Backoff {
    /// The wait after the last refusal (zero: none since a success).
    wait: Duration,
    /// Until when connects fail at once with `refusal`.
    until: Option<Instant>,
    refusal: Option<RedisError>,
}

impl Backoff {
    /// The refusal a connect made at `now` is to fail with, without
    /// trying, while the wait after the last one lasts.
    fn holding(&self, now: Instant) -> Option<RedisError> {
        match (self.until, &self.refusal) {
            (Some(until), Some(e)) if now < until => Some(e.clone()),
            _ => None,
        }
    }

    /// Counts what a connect at `now` came to: a refusal of the settings
    /// doubles the wait, anything else (a success, Redis unreachable)
    /// ends it.
    fn after(&mut self, now: Instant, result: Result<(), &RedisError>) {
        match result {
            Err(e) if crate::cluster::refuses_settings(e) => {
                self.wait = if self.wait.is_zero() {
                    FIRST_BACKOFF
                } else {
                    (self.wait * 2).min(MOST_BACKOFF)
                };
                self.until = Some(now + self.wait);
                self.refusal = Some(e.clone());
            }
            _ => *self = Backoff::default(),
        }
    }
}

/// A user name (`None`: Redis's default user) and password.
#[derive(Clone)]
pub(crate) struct Auth {
    pub(crate) user: Option<String>,
    pub(crate) password: String,
}

impl Redis {
    /// `client` for connections that authenticate with `auth` and select
    /// `db` once connected (`client` itself is built without them: see
    /// `quiet_handshake`); `user`: whether the URL names a user.
    pub(crate) fn new(client: redis::Client, db: i64, auth: Option<Auth>, user: bool) -> Redis {
        Redis {
            client,
            db,
            auth,
            user,
            recent: Arc::new(AtomicBool::new(false)),
            backoff: Arc::default(),
        }
    }

    /// The database the URL names (0 when it names none).
    #[must_use]
    pub fn db(&self) -> i64 {
        self.db
    }

    /// A new connection whose every read and write waits `timeout` at
    /// most, authenticated and the URL's database selected.
    ///
    /// # Errors
    ///
    /// Redis cannot be reached, refuses the password or the database, or
    /// does not answer within `timeout` (per reply). After a refusal of
    /// the settings, the same refusal, without a try, for a wait that
    /// doubles with each refusal in a row (see [`FIRST_BACKOFF`]).
    pub fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        let backoff = || self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(refusal) = backoff().holding(Instant::now()) {
            return Err(refusal);
        }
        let result = self.try_connect(timeout);
        backoff().after(Instant::now(), result.as_ref().map(|_| ()));
        result
    }

    /// [`Redis::connect`], tried now.
    fn try_connect(&self, timeout: Duration) -> RedisResult<Connection> {
        let mut con = self
            .client
            .get_connection_with_timeout(timeout)
            .map_err(|e| self.why_no_tls(e))
            .map_err(|e| self.why_refused(e))?;
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        self.handshake(&mut con)?;
        let mut con = Connection { con: Some(con) };
        if let Some(auth) = &self.auth {
            let mut cmd = redis::cmd("AUTH");
            if let Some(user) = &auth.user {
                cmd.arg(user);
            }
            cmd.arg(&auth.password)
                .query::<()>(&mut con)
                .map_err(|e| self.why_refused(e))?;
        }
        if self.db != 0 {
            redis::cmd("SELECT").arg(self.db).query::<()>(&mut con)?;
        }
        if !self.recent.load(Ordering::Relaxed) {
            match redis::cmd("INFO").arg("server").query::<String>(&mut con) {
                Ok(info) => {
                    if let Some(found) = too_old(&info) {
                        return Err(RedisError::from((ErrorKind::Client, TOO_OLD, found)));
                    }
                }
                // An `INFO` that Redis refuses (an ACL) checks nothing.
                Err(_) if con.is_open() => {}
                Err(e) => return Err(e),
            }
            self.recent.store(true, Ordering::Relaxed);
        }
        Ok(con)
    }
}

impl Redis {
    /// Whether the URL is a `rediss://` one.
    fn tls(&self) -> bool {
        matches!(
            self.client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        )
    }

    /// Over a `rediss://` connection, the TLS handshake (the crate leaves
    /// it to the first request, which may be one whose errors say other
    /// things): a `PING`, whatever Redis answers to it (a Redis that wants
    /// a password refuses it) meaning the handshake is done. A handshake
    /// that times out or breaks off is [`NO_TLS`]; a refused certificate
    /// is said as such.
    fn handshake(&self, con: &mut redis::Connection) -> RedisResult<()> {
        if !self.tls() {
            return Ok(());
        }
        match redis::cmd("PING").query::<Value>(con) {
            Err(e) if e.is_io_error() => {
                // A refused certificate is said as such; anything else
                // (no TLS answer in time, or none that is TLS) is NO_TLS.
                let certificate = matches!(
                    crate::cluster::tls_error(&e),
                    Some(rustls::Error::InvalidCertificate(_))
                );
                if certificate {
                    Err(e)
                } else {
                    Err(RedisError::from((ErrorKind::Client, NO_TLS)))
                }
            }
            _ => Ok(()),
        }
    }

    /// `e`, an error of connecting to a `rediss://` Redis, as [`NO_TLS`]
    /// when its TLS handshake timed out or broke off (not a certificate
    /// refused): most likely that Redis speaks no TLS. Other errors, and
    /// those of a `redis://` Redis, are kept.
    fn why_no_tls(&self, e: RedisError) -> RedisError {
        let tls = self.tls();
        // A TCP connect that timed out says `TimedOut`; a read that did,
        // the handshake's answer never coming, `WouldBlock`.
        let io_kind = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>())
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        let stalled = e.is_timeout() && io_kind != Some(std::io::ErrorKind::TimedOut);
        if tls && (stalled || crate::cluster::handshake_broke(&e)) {
            RedisError::from((ErrorKind::Client, NO_TLS))
        } else {
            e
        }
    }
}

/// The description of the error [`Redis::connect`] gives when the TLS
/// handshake with a `rediss://` Redis fails or times out.
pub(crate) const NO_TLS: &str = "TLS handshake with Redis failed";

/// The description of the error [`Redis::connect`] gives for a Redis older
/// than [`NEEDED`] (its detail: the version found).
pub(crate) const TOO_OLD: &str = "Redis is too old";

/// The oldest Redis the cluster works with: it uses `SET … GET` (the
/// heartbeat, sessions) and `BLMOVE` (pushed files), new in 6.2, which an
/// older one refuses, one request at a time, after the server joined.
pub(crate) const NEEDED: (u32, u32) = (6, 2);

/// The version in Redis's `INFO server` (`redis_version:7.0.15`), if it is
/// older than [`NEEDED`]. `None` too when none is found in it.
pub(crate) fn too_old(info: &str) -> Option<String> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = version.split('.').map(str::parse::<u32>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().and_then(Result::ok).unwrap_or(0);
    ((major, minor) < NEEDED).then(|| version.to_string())
}

/// The detail of the error [`Redis::connect`] gives when Redis refused the
/// URL's password because it has none set (`ERR AUTH <password> called
/// without any password configured`; the crate's own handshake kept only
/// that the authentication failed, which read as a wrong password).
pub(crate) const NO_PASSWORD_SET: &str = "Redis has no password set";

/// The detail of the error [`Redis::connect`] gives when Redis refused the
/// user name and password of a URL that names a user: Redis answers the
/// same `WRONGPASS` for a user it does not have and for a wrong password.
pub(crate) const NO_SUCH_USER_OR_PASSWORD: &str = "wrong user name or password";

impl Redis {
    /// `e`, Redis's answer to the URL's `AUTH` (or to the crate's
    /// handshake), as an authentication error whose detail says what is
    /// known: [`NO_PASSWORD_SET`] when Redis has no password to check
    /// against, [`NO_SUCH_USER_OR_PASSWORD`] for a URL that names a user.
    /// Told from Redis's answer: no second connection is opened.
    fn why_refused(&self, e: RedisError) -> RedisError {
        let detail = e.detail().unwrap_or_default();
        let no_password = detail.contains("without any password configured")
            || detail.contains("no password is set");
        let refused = e.kind() == ErrorKind::AuthenticationFailed
            || e.code() == Some("WRONGPASS")
            || detail.contains("invalid password")
            || no_password;
        if !refused {
            return e;
        }
        let why = if no_password && !self.user {
            NO_PASSWORD_SET
        } else if self.user {
            NO_SUCH_USER_OR_PASSWORD
        } else {
            return RedisError::from((
                ErrorKind::AuthenticationFailed,
                "Password authentication failed",
            ));
        };
        RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
            why.to_string(),
        ))
    }
}

/// A connection to Redis that is closed at the first reply that fails.
pub struct Connection {
    /// `None` once given up.
    con: Option<redis::Connection>,
}

impl Connection {
    /// How long a read waits (the connection's default is the timeout it
    /// was opened with).
    ///
    /// # Errors
    ///
    /// The connection was given up, or the socket refused the setting.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        self.open()?.set_read_timeout(timeout)
    }

    /// Sends `cmd` and reads no reply (for the tests' fail points: a
    /// request left unread on a connection that is then given up).
    ///
    /// # Errors
    ///
    /// The connection was given up, or the write failed.
    pub fn send_unread(&mut self, cmd: &[u8]) -> RedisResult<()> {
        let result = self.open_mut()?.send_packed_command(cmd);
        self.keep_if_fine(result)
    }

    fn open(&self) -> RedisResult<&redis::Connection> {
        self.con.as_ref().ok_or_else(given_up)
    }

    fn open_mut(&mut self) -> RedisResult<&mut redis::Connection> {
        self.con.as_mut().ok_or_else(given_up)
    }

    /// Closes the connection if `result` failed on it (not a refusal by
    /// Redis, which leaves it usable).
    fn keep_if_fine<T>(&mut self, result: RedisResult<T>) -> RedisResult<T> {
        if result.is_err() {
            self.con = None;
        }
        result
    }
}

fn given_up() -> RedisError {
    RedisError::from((
        ErrorKind::Io,
        "the connection to Redis was closed after a reply failed",
    ))
}

impl ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let result = self.open_mut()?.req_packed_command(cmd);
        // An error reply comes as a value; an `Err` is a failed read or write.
        self.keep_if_fine(result)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let result = read_replies(self.open_mut()?, cmd, offset, count);
        match self.keep_if_fine(result)? {
            (_, Some(refused)) => Err(refused.into()),
            (answer, None) => Ok(answer),
        }
    }

    fn get_db(&self) -> i64 {
        self.con.as_ref().map_or(0, ConnectionLike::get_db)
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.con.as_ref().is_some_and(ConnectionLike::is_open)
    }
}

/// Sends the pipeline `cmd` and reads its `offset + count` replies, the
/// last `count` of which are its answer, stopping at the first that fails
/// (the crate's own loop reads on, a timeout each). With the answer, the
/// first error reply among the first `offset` (a command a transaction did
/// not queue), which fails the whole, as in the crate.
fn read_replies(
    con: &mut redis::Connection,
    cmd: &[u8],
    offset: usize,
    count: usize,
) -> RedisResult<(Vec<Value>, Option<redis::ServerError>)> {
    con.send_packed_command(cmd)?;
    let mut answer = Vec::with_capacity(count);
    let mut refused = None;
    let mut index = 0;
    while index < offset + count {
        match con.recv_response()? {
            // Pushed data between replies (RESP3) is not one of them.
            Value::Push { .. } => continue,
            Value::ServerError(e) if index < offset => {
                refused.get_or_insert(e);
            }
            reply if index >= offset => answer.push(reply),
            _ => {}
        }
        index += 1;
    }
    Ok((answer, refused))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Instant;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// Redis's answer to `INFO server`, of a Redis recent enough.
    const VERSION_7: &[u8] = b"$36\r\n# Server\r\nredis_version:7.2.4\r\nx:1\r\n\r\n";

    /// A "Redis" on 127.0.0.1 that takes one connection, reads what comes
    /// and answers nothing but its version (`INFO`); it sends how long the
    /// connection stayed open.
    fn silent_redis() -> (String, mpsc::Receiver<Duration>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "redis://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let opened = Instant::now();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                if buf[..n].windows(4).any(|w| w == b"INFO") {
                    let _ = s.write_all(VERSION_7);
                }
            }
            let _ = tx.send(opened.elapsed());
        });
        (url, rx)
    }

    /// A "Redis" on 127.0.0.1 that answers `AUTH` with `auth` (a RESP
    /// error line), `PING` with `PONG` and anything else with `OK`; with
    /// the count of connections it took.
    fn refusing_redis(auth: &'static str) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&taken);
        thread::spawn(move || {
            for _ in 0..50 {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut buf = [0u8; 4096];
                    for _ in 0..50 {
                        let Ok(n) = s.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        let got = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                        let answer = if got.contains("AUTH") {
                            auth
                        } else if got.contains("INFO") {
                            "$37\r\n# Server\r\nredis_version:6.0.16\r\nx:1\r\n\r\n"
                        } else if got.contains("PING") {
                            "+PONG\r\n"
                        } else {
                            "+OK\r\n"
                        };
                        if s.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, taken)
    }

    #[test]
    fn a_redis_older_than_6_2_is_found_too_old() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_git_sha1:0\r\n");
        assert_eq!(too_old(&info("6.0.16")), Some("6.0.16".into()));
        assert_eq!(too_old(&info("5.0.7")), Some("5.0.7".into()));
        assert_eq!(too_old(&info("6")), Some("6".into()));
        assert_eq!(too_old(&info("6.2.0")), None);
        assert_eq!(too_old(&info("7.4.1")), None);
        assert_eq!(too_old(&info("10.0.0")), None);
        // Nothing to tell by: not refused.
        assert_eq!(too_old("# Server\r\n"), None);
        assert_eq!(too_old(&info("unknown")), None);
    }

    #[test]
    fn a_redis_too_old_is_refused_at_connect_in_one_line() {
        let (port, _) = refusing_redis("+OK\r\n");
        let url = format!("redis://:SECRETPW@127.0.0.1:{port}");
        let redis = crate::cluster::client(&url, &crate::cluster::RedisTls::default()).unwrap();
        let Err(e) = redis.connect(Duration::from_secs(5)) else {
            panic!("connected to Redis 6.0.16");
        };
        assert!(crate::cluster::refuses_settings(&e));
        assert_eq!(
            crate::cluster::said(&e),
            "Redis 6.0.16 is too old: the cluster needs Redis 6.2 or newer"
        );
    }

    #[test]
    fn a_password_redis_has_none_for_is_told_without_a_second_connection() {
        let (port, taken) = refusing_redis(
            "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
        );
        let url = format!("redis://:SECRETPW@127.0.0.1:{port}");
        for _ in 0..3 {
            // A client each: one would hold back the next tries.
            let redis = crate::cluster::client(&url, &crate::cluster::RedisTls::default()).unwrap();
            let Err(e) = redis.connect(Duration::from_secs(5)) else {
                panic!("connected");
            };
            let said = crate::cluster::said(&e);
            assert!(
                said.starts_with("Redis has no password set, but the URL gives one"),
                "{said}"
            );
            assert!(!said.contains("SECRETPW"), "{said}");
        }
        // One connection a try (it took two: the second to ask without
        // the password).
        thread::sleep(Duration::from_millis(200));
        assert_eq!(taken.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_redis_refusing_the_settings_is_tried_again_after_a_doubling_wait() {
        let (port, taken) =
            refusing_redis("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
        let url = format!("redis://:SECRETPW@127.0.0.1:{port}");
        let redis = crate::cluster::client(&url, &crate::cluster::RedisTls::default()).unwrap();
        // Its clones (the server's loops) share the wait.
        let other = redis.clone();
        let refused = |r: &Redis| {
            let Err(e) = r.connect(Duration::from_secs(5)) else {
                panic!("connected");
            };
            assert_eq!(
                crate::cluster::said(&e),
                "Redis refused the password in the URL"
            );
        };
        let started = Instant::now();
        // Tried, then held back (the same refusal, no connection) for 1 s.
        refused(&redis);
        while started.elapsed() < FIRST_BACKOFF - Duration::from_millis(200) {
            refused(&other);
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(taken.load(Ordering::SeqCst), 1);
        // Tried again after it, then held back for 2 s.
        thread::sleep(Duration::from_millis(300));
        refused(&redis);
        thread::sleep(Duration::from_millis(1500));
        refused(&other);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(taken.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_wait_doubles_up_to_its_most_and_ends_with_a_connection_or_an_outage() {
        let wrong = RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        let down = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..8 {
            b.after(t0, Err(&wrong));
            waits.push(b.wait.as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert!(b.holding(t0 + Duration::from_secs(29)).is_some());
        assert!(b.holding(t0 + MOST_BACKOFF).is_none());
        // Redis down is tried again at once (it may be restarting).
        b.after(t0, Err(&down));
        assert!(b.holding(t0).is_none());
        b.after(t0, Err(&wrong));
        assert_eq!(b.wait, FIRST_BACKOFF);
        b.after(t0, Ok(()));
        assert!(b.holding(t0).is_none());
        b.after(t0, Err(&wrong));
        assert_eq!(b.wait, FIRST_BACKOFF);
    }

    #[test]
    fn an_unknown_acl_user_is_said_as_a_wrong_user_name_or_password() {
        let (port, _) =
            refusing_redis("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
        let said = |url: &str| {
            let redis = crate::cluster::client(url, &crate::cluster::RedisTls::default()).unwrap();
            let Err(e) = redis.connect(Duration::from_secs(5)) else {
                panic!("connected");
            };
            assert!(crate::cluster::refuses_settings(&e));
            crate::cluster::said(&e)
        };
        let with_user = said(&format!("redis://nobody:SECRETPW@127.0.0.1:{port}"));
        assert_eq!(
            with_user,
            "Redis refused the user name and password in the URL: wrong user name or password (or the user is disabled)"
        );
        let without = said(&format!("redis://:SECRETPW@127.0.0.1:{port}"));
        assert_eq!(without, "Redis refused the password in the URL");
    }

    #[test]
    fn a_transaction_redis_does_not_answer_fails_after_one_timeout_and_closes_the_connection() {
        let (url, closed) = silent_redis();
        let redis = crate::cluster::client(&url, &crate::cluster::RedisTls::default()).unwrap();
        let mut con = redis.connect(TIMEOUT).unwrap();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for i in 0..12 {
            pipe.cmd("HSET").arg("k").arg(i).arg(i).ignore();
        }
        let started = Instant::now();
        let failed = pipe.query::<()>(&mut con);
        let took = started.elapsed();
        assert!(failed.is_err());
        // The crate's own loop waits a timeout for each of the 14 replies.
        assert!(took < TIMEOUT * 3, "{took:?}");
        assert!(!con.is_open());
        // Closed at once: the other end sees it end, and a new request
        // fails without waiting.
        let open_for = closed.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(open_for < TIMEOUT * 3, "{open_for:?}");
        let started = Instant::now();
        assert!(redis::cmd("PING").query::<String>(&mut con).is_err());
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    }

    #[test]
    fn a_single_request_redis_does_not_answer_closes_the_connection_too() {
        let (url, closed) = silent_redis();
        let redis = crate::cluster::client(&url, &crate::cluster::RedisTls::default()).unwrap();
        let mut con = redis.connect(TIMEOUT).unwrap();
        assert!(redis::cmd("GET")
            .arg("k")
            .query::<Option<String>>(&mut con)
            .is_err());
        assert!(!con.is_open());
        assert!(closed.recv_timeout(Duration::from_secs(5)).is_ok());
    }

    /// With a password and a database in the URL, a Redis that does not
    /// answer fails the connect after one timeout: the database is
    /// selected by a request of its own, after the handshake's `AUTH` (in
    /// the crate's handshake each of the two replies waited a timeout).
    #[test]
    fn a_connect_with_password_and_database_fails_after_one_timeout() {
        let (url, _closed) = silent_redis();
        let url = url.replace("redis://", "redis://:pw@") + "/5";
        let redis = crate::cluster::client(&url, &crate::cluster::RedisTls::default()).unwrap();
        assert_eq!(redis.db(), 5);
        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        assert!(redis.connect(timeout).is_err());
        let took = started.elapsed();
        assert!(took < timeout * 3 / 2, "{took:?}");
    }
}
