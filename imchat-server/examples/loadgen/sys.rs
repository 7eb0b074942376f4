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

/// A CPU bandwidth limit on one process (every thread it has and starts):
/// a control group of its own with a CFS quota, as a container runtime
/// sets for `--cpus`. Removed when dropped (after the process ended: a
/// group with tasks cannot be removed). Linux, as root, with the `cpu`
/// controller of cgroup v1 or v2 mounted under `/sys/fs/cgroup`.
pub struct CpuCap {
    dir: std::path::PathBuf,
}

/// Where control groups with the `cpu` controller are made, and whether it
/// is cgroup v2 (else v1's `cpu` hierarchy).
fn cpu_cgroups() -> (std::path::PathBuf, bool) {
    let root = Path::new("/sys/fs/cgroup");
    let v2 = fs::read_to_string(root.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"));
    (
        if v2 {
            root.to_path_buf()
        } else {
            root.join("cpu")
        },
        v2,
    )
}

/// The CFS period of a [`CpuCap`]: short, so that a capped server runs in
/// slices of a few milliseconds rather than stalls of tens.
const CAP_PERIOD_US: u64 = 10_000;

impl CpuCap {
    /// Limits `pid` to `share` of one CPU (0 < share ≤ 1).
    pub fn new(pid: u32, share: f64) -> Result<CpuCap, String> {
        let quota = (share * CAP_PERIOD_US as f64).round() as u64;
        if !(1_000..=CAP_PERIOD_US).contains(&quota) {
            return Err(format!("a CPU cap of {share} is outside 0.1..=1"));
        }
        let (base, v2) = cpu_cgroups();
        let limits = if v2 {
            vec![("cpu.max", format!("{quota} {CAP_PERIOD_US}"))]
        } else {
            vec![
                ("cpu.cfs_period_us", CAP_PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota.to_string()),
            ]
        };
        let dir = base.join(format!("imchat-loadgen-{}-{pid}", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the control group {}: {e}", dir.display()))?;
        let cap = CpuCap { dir };
        for (file, value) in limits {
            fs::write(cap.dir.join(file), &value)
                .map_err(|e| format!("cannot write {value} to {file}: {e}"))?;
        }
        fs::write(cap.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move process {pid} into its control group: {e}"))?;
        Ok(cap)
    }

    /// Whether a [`CpuCap`] can be made here: a group created and removed.
    pub fn probe() -> Result<(), String> {
        let dir = cpu_cgroups()
            .0
            .join(format!("imchat-loadgen-{}-probe", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the control group {}: {e}", dir.display()))?;
        fs::remove_dir(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
    }

    /// How long the group's tasks were held back by the quota, and in how
    /// many periods, from its `cpu.stat`.
    pub fn throttled(&self) -> (f64, u64) {
        throttled_of(&fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default())
    }
}

/// The time held back and the periods it happened in, from a `cpu.stat`
/// of cgroup v1 (`throttled_time`, nanoseconds) or v2 (`throttled_usec`).
fn throttled_of(stat: &str) -> (f64, u64) {
    let field = |name: &str| {
        stat.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    let secs = match (field("throttled_usec"), field("throttled_time")) {
        (Some(us), _) => us as f64 / 1e6,
        (None, Some(ns)) => ns as f64 / 1e9,
        (None, None) => 0.0,
    };
    (secs, field("nr_throttled").unwrap_or(0))
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Empty once the process is gone; a few tries while it is reaped.
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_read_from_cgroup_v1_and_v2_stats() {
        let v1 = "nr_periods 900\nnr_throttled 511\nthrottled_time 3760000000\n";
        assert_eq!(throttled_of(v1), (3.76, 511));
        let v2 = "usage_usec 1\nnr_periods 9\nnr_throttled 4\nthrottled_usec 2500000\n";
        assert_eq!(throttled_of(v2), (2.5, 4));
        assert_eq!(throttled_of(""), (0.0, 0));
    }

    #[test]
    fn a_cap_outside_a_tenth_to_one_core_is_refused_before_any_group_is_made() {
        for share in [0.0, 0.05, 1.5] {
            let err = CpuCap::new(std::process::id(), share)
                .err()
                .expect("refused");
            assert!(err.contains("outside 0.1..=1"), "{err}");
        }
    }
}
