//! The few operating-system calls the generator needs (Linux only): the
//! open-file limit, CPU pinning, SIGTERM, and process figures from `/proc`.
//! The calls go through the `libc` crate.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// Raises the soft open-file limit to the hard one (10,000 clients need
/// 10,000 sockets on each side); child processes inherit it. Returns the
/// limit now in force.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    let want = libc::rlimit {
        rlim_cur: r.rlim_max,
        rlim_max: r.rlim_max,
    };
    // SAFETY: `want` is a valid rlimit; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        r.rlim_max
    } else {
        r.rlim_cur
    }
}

/// Pins the calling thread (and every thread and child process it starts
/// afterwards) to one CPU. False when the kernel refused.
pub fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return false;
    }
    // SAFETY: `cpu` is within the set (checked above); CPU_SET only writes that bit.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0 }
}

/// Sends SIGTERM to a process this program started (by its id, never by name).
pub fn terminate(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill takes no pointers; the pid is one of our children, and
        // an error (it is already gone) is harmless.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Clock ticks per second for the CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf takes no pointers and has no side effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn status_field(pid: &str, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(&pid.to_string(), "VmRSS:")
}

/// Peak resident set size in KiB (`VmHWM`).
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_field(&pid.to_string(), "VmHWM:")
}

/// Number of threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    status_field(&pid.to_string(), "Threads:")
}

fn cpu_ticks_of(pid: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time (user + system) a process used so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    Some(cpu_ticks_of(&pid.to_string())? as f64 / clock_ticks())
}

/// CPU time (user + system) each thread of a process used so far, in
/// seconds, with its id and its name.
pub fn cpu_secs_by_thread(pid: u32) -> Vec<(u32, String, f64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = format!("{pid}/task/{tid}");
        let (Some(ticks), Ok(comm)) = (
            cpu_ticks_of(&path),
            fs::read_to_string(format!("/proc/{path}/comm")),
        ) else {
            continue;
        };
        threads.push((tid, comm.trim().to_string(), ticks as f64 / clock_ticks()));
    }
    threads
}

/// The name a thread is counted under: its own without trailing digits.
pub fn thread_group(comm: &str) -> String {
    comm.trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

/// CPU time this generator used so far, in seconds.
pub fn self_cpu_secs() -> f64 {
    cpu_ticks_of("self").unwrap_or(0) as f64 / clock_ticks()
}

/// CPU time (user + system) the calling thread used so far, in seconds.
pub fn thread_cpu_secs() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// A port free on 127.0.0.1 right now (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// True when `prog` is found on `PATH`.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(prog);
            p.is_file()
        })
    })
}

/// The first line of a command's output, or "?".
pub fn command_line(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// Free bytes on the file system holding `dir` (from `df`).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df")
        .args(["-Pk", &dir.to_string_lossy()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let avail: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(avail * 1024)
}

/// The 1-, 5- and 15-minute load averages (other work on the machine).
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").ok().map_or_else(
        || "?".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// The machine, for the report: CPU model, cores, memory, kernel, tools.
pub fn machine() -> Vec<(String, String)> {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or_else(
            || "?".into(),
            |k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0),
        );
    let redis = if on_path("redis-server") {
        command_line("redis-server", &["--version"])
    } else {
        "not installed".into()
    };
    vec![
        ("CPU".into(), cpu),
        (
            "cores (nproc --all)".into(),
            command_line("nproc", &["--all"]),
        ),
        ("memory".into(), mem),
        ("kernel".into(), command_line("uname", &["-sr"])),
        ("rustc".into(), command_line("rustc", &["--version"])),
        ("redis".into(), redis),
        (
            "date".into(),
            command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        ),
    ]
}

/// Writes every dirty page to disk and waits for it (`sync`), so that a
/// timed transfer does not pay for the writeback of the one before it.
pub fn sync_disks() {
    // SAFETY: sync takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::sync() }
}
