//! What `imchat-server` and `imchat-client` share as programs: shell
//! completions and a man page generated from a clap definition, printing
//! them, the lock a program takes on a file it must not share, and when
//! two usernames are the same user ([`names`]). Internal to the
//! workspace; not part of the library.

pub mod names;

use std::fs::{File, TryLockError};
use std::io::{self, Write};
use std::process::ExitCode;

pub use clap_complete::Shell;

pub use imchat_core::io_reason;

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// The man page of `cmd`, in roff.
pub fn man_page(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// Prints what was generated on stdout; a closed pipe (`| head`) is not
/// an error. Other write errors are one line on stderr, naming `program`.
pub fn print(bytes: &[u8], program: &str) -> ExitCode {
    match write_all(&mut io::stdout().lock(), bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("demo").arg(clap::Arg::new("verbose").long("verbose"))
    }

    #[test]
    fn completions_and_man_pages_name_the_program_and_its_flags() {
        let bash = String::from_utf8(completions(cmd(), Shell::Bash)).expect("UTF-8");
        assert!(bash.contains("_demo()"), "{bash}");
        assert!(bash.contains("--verbose"));
        let man = String::from_utf8(man_page(cmd())).expect("UTF-8");
        assert!(man.contains(".TH demo"), "{man}");
    }

    #[test]
    fn a_closed_pipe_is_not_an_error_and_others_are() {
        struct Fails(io::ErrorKind);
        impl Write for Fails {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(self.0.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(write_all(&mut Fails(io::ErrorKind::BrokenPipe), b"x").is_ok());
        assert!(write_all(&mut Fails(io::ErrorKind::StorageFull), b"x").is_err());
    }
}

/// Takes an exclusive advisory lock on `file` without waiting (the
/// system's: `flock` on unix), held until the file is closed or the
/// process ends: false when another open file holds one.
///
/// # Errors
///
/// The system's error when the lock cannot be asked for.
pub fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod lock_tests {
    use super::try_lock;

    #[test]
    fn a_file_locked_through_one_handle_is_refused_to_another() {
        let path = std::env::temp_dir().join(format!("imchat-cli-lock-{}", std::process::id()));
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let (first, second) = (open(), open());
        assert!(try_lock(&first).unwrap());
        assert!(!try_lock(&second).unwrap());
        drop(first);
        assert!(try_lock(&second).unwrap());
        drop(second);
        let _ = std::fs::remove_file(&path);
    }
}
