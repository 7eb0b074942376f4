//! The server's command line as a user meets it: the binary started in an
//! empty folder, without a shared folder. It exits before it listens; every
//! wait has a deadline and the process is killed by its handle if it runs
//! on.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// The server process, killed by its handle if the test ends early.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the server in `dir` with `args` (the log file kept inside `dir`,
/// no shared-folder variables) and returns its exit status and stderr.
fn run_server(dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    run_server_logging_to(dir, &dir.join("server.log"), args)
}

/// [`run_server`] with the log file `log`.
fn run_server_logging_to(dir: &Path, log: &Path, args: &[&str]) -> (ExitStatus, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(args)
        .arg("--log-file")
        .arg(log)
        .current_dir(dir)
        .env_remove("SERVERSHAREDFILES")
        .env_remove("SERVER_SHARED_FILES")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imchat-server");
    let mut server = Server(child);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        thread::sleep(POLL);
    };
    let mut err = String::new();
    server
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status, err)
}

#[test]
fn a_missing_default_shared_folder_suggests_shared_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (status, err) = run_server(dir.path(), &["0", "--bind", "127.0.0.1"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        "imchat-server: shared folder 'SharedFiles' does not exist (the default); \
         create it, or name the folder to share with --shared-dir DIR"
    );
}

#[test]
fn a_missing_shared_folder_named_by_the_flag_is_only_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (status, err) = run_server(
        dir.path(),
        &["0", "--bind", "127.0.0.1", "--shared-dir", "nothing-here"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        "imchat-server: shared folder 'nothing-here' does not exist"
    );
}

#[test]
fn the_man_page_and_completions_need_no_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (args, start) in [
        (&["--generate-man"][..], ".TH imchat-server 1"),
        (&["--generate-completions", "bash"], "_imchat__server()"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run imchat-server");
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(
            text.lines().any(|l| l.starts_with(start)),
            "{args:?}: no line starting {start:?}"
        );
        assert!(
            !dir.path().join("server.log").exists(),
            "{args:?} opened the log"
        );
    }
}

/// Two servers started in one folder: the second used to empty the first
/// one's `server.log`, and both then wrote into it. The second is refused
/// now, the first's log kept whole.
#[test]
fn a_second_server_on_the_same_log_file_is_refused_and_the_first_log_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("SharedFiles")).expect("shared folder");
    let first = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
        .args(["0", "--bind", "127.0.0.1", "--log-file"])
        .arg(dir.path().join("server.log"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start imchat-server");
    let _first = Server(first);
    let log = dir.path().join("server.log");
    let deadline = Instant::now() + WAIT;
    let started = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on 127.0.0.1:") {
            break text;
        }
        assert!(Instant::now() < deadline, "the first server did not start");
        thread::sleep(POLL);
    };
    let (status, err) = run_server(dir.path(), &["0", "--bind", "127.0.0.1"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "imchat-server: cannot create the log file '{}': another running server writes it: give this one its own with --log-file PATH",
            log.display()
        )
    );
    // Another name of the same file, from another folder: a symbolic
    // link, a hard link.
    let other = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(&log, other.path().join("link.log")).expect("symlink");
    std::fs::hard_link(&log, other.path().join("hard.log")).expect("hard link");
    let shared = dir.path().join("SharedFiles");
    let shared = shared.to_str().expect("UTF-8");
    for name in ["link.log", "hard.log"] {
        let (status, err) = run_server_logging_to(
            other.path(),
            &other.path().join(name),
            &["0", "--bind", "127.0.0.1", "--shared-dir", shared],
        );
        assert_eq!(status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains("another running server writes it"),
            "{name}: {err}"
        );
    }
    let after = std::fs::read_to_string(&log).expect("the first server's log");
    assert!(
        after.starts_with(&started),
        "the first log was cut:\n{after}"
    );
}

/// A wrong URL in `IMCHAT_REDIS_URL` is said to come from there: an
/// operator who gave no `--redis` was told only "invalid Redis URL ''"
/// (an empty variable: one a compose file took from an unset one), and
/// looked for it on the command line.
#[test]
fn a_wrong_redis_url_from_the_environment_is_said_to_come_from_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    for url in ["", "127.0.0.1:6379", "redis://:pw@127.0.0.1:6379/-1"] {
        let out = Command::new(env!("CARGO_BIN_EXE_imchat-server"))
            .args(["127.0.0.1:0", "--shared-dir", "."])
            .arg("--log-file")
            .arg(dir.path().join("server.log"))
            .current_dir(dir.path())
            .env("IMCHAT_REDIS_URL", url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run imchat-server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{url:?}: {err}");
        assert!(err.starts_with("imchat-server: invalid Redis URL"), "{err}");
        assert!(
            err.contains("environment variable IMCHAT_REDIS_URL"),
            "{err}"
        );
        assert!(!err.contains(":pw@"), "{err}");
    }
    // Given on the command line, it is not said to come from there.
    let (status, err) = run_server(dir.path(), &["127.0.0.1:0", "--redis", ""]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(!err.contains("IMCHAT_REDIS_URL"), "{err}");
}

/// A `--redis` URL wrong as written, or a Redis flag that cannot go with
/// it, is a bad argument: exit code 2, as `--help` says (before: 1, as for
/// a server that could not start), in one line; a file named by a Redis
/// flag that cannot be read is still 1.
#[test]
fn a_redis_url_wrong_as_written_is_a_bad_argument() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = ["127.0.0.1:0", "--shared-dir", "."];
    for (args, code) in [
        (&["--redis", "http://:pw@127.0.0.1:6379"][..], 2),
        (&["--redis", "redis://127.0.0.1:6379/-1"][..], 2),
        (
            &["--redis", "redis://127.0.0.1:6379", "--redis-ca", "ca.pem"][..],
            2,
        ),
        (
            &[
                "--redis",
                "rediss://127.0.0.1:6379",
                "--redis-cert",
                "c.pem",
            ][..],
            2,
        ),
        (
            &["--redis", "rediss://127.0.0.1:6379", "--redis-ca", "ca.pem"][..],
            1,
        ),
    ] {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        let (status, err) = run_server(dir.path(), &all);
        assert_eq!(status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("imchat-server: "), "{args:?}: {err}");
        assert!(!err.contains(":pw@"), "{err}");
        if code == 1 {
            // The file that cannot be read, said in words.
            assert!(
                err.trim_end()
                    .ends_with("ca.pem: no such file or directory"),
                "{args:?}: {err}"
            );
        }
    }
}
