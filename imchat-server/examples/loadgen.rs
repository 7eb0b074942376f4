//! The imchat load generator: starts imchat-server (and, as a baseline,
//! redis-server) on 127.0.0.1 and measures fan-out throughput and latency,
//! idle connections, a 1 GiB download, chat during downloads, a slow
//! consumer, and (scenario `push`) a 1 GiB push and chat while pushing.
//! Prints a table per scenario and writes them as Markdown.
//!
//! ```text
//! cargo run --release -p imchat-server --example loadgen -- all
//! cargo run --release -p imchat-server --example loadgen -- --quick all
//! cargo run --release -p imchat-server --example loadgen -- fanout latency --runs 5 --no-redis
//! ```
//!
//! Linux only (it reads `/proc` and pins CPUs). The servers run pinned to
//! CPU 0 (`taskset -c 0`) and the generator with its clients on CPU 1, so
//! imchat and Redis get the same single core. Redis is optional: without
//! `redis-server` on PATH the baseline columns are skipped.

#[path = "loadgen/cluster.rs"]
mod cluster;
#[path = "loadgen/conn.rs"]
mod conn;
#[path = "loadgen/download.rs"]
mod download;
#[path = "loadgen/fanout.rs"]
mod fanout;
#[path = "loadgen/history.rs"]
mod history;
#[path = "loadgen/idle.rs"]
mod idle;
#[path = "loadgen/latency.rs"]
mod latency;
#[path = "loadgen/poller.rs"]
mod poller;
#[path = "loadgen/procs.rs"]
mod procs;
#[path = "loadgen/push.rs"]
mod push;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/room.rs"]
mod room;
#[path = "loadgen/sys.rs"]
mod sys;
#[path = "loadgen/tls.rs"]
mod tls;
#[path = "loadgen/wire.rs"]
mod wire;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use procs::{Bins, ImchatOpts, Proc};
use report::{kib, mbps, mib, micros, millions, ms, pct, ratio, secs, Series, Table};
use wire::Kind;

const USAGE: &str = "\
usage: loadgen [SCENARIO...] [--runs K] [--download-runs K] [--quick] [--redis | --no-redis] [--no-pin] [--burst K] [--history MODES]

scenarios: all (default), fanout, latency, idle, download, chat-during-download, slow-consumer,
  cluster (1 server alone, and 1, 2 and 3 servers through one Redis),
  history (not in all: fan-out and latency of imchat with its history off, in memory, in a file)
  tls (not in all: fan-out, latency and the download with TLS beside plaintext, alternating)
  push (not in all: a /sendfile between two imchat-clients beside the raw copy, and the
    pusher's chat while it pushes to a slow receiver)
  --history MODES  the history scenario's modes, among off,memory,db (default all three)
  --runs K     runs per figure (default 4; medians and min-max are reported)
  --download-runs K  interleaved download runs (default 10; 2 with --quick)
  --fan-n N,...  fan-out and slow-consumer room sizes (default 100,1000; 100 with --quick)
  --quick      a short smoke version (smaller sizes, 1 run unless --runs)
  --redis      measure the Redis pub/sub baseline (default when redis-server is on PATH)
  --no-redis   skip it (and in cluster the setups with Redis: the single server alone)
  --no-pin     do not pin the server to CPU 0 and the generator to CPU 1
  --burst K    burst messages per sender (default 10,000, as the issue asks)
The report is printed and written to target/loadgen-report.md.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Fanout,
    Latency,
    Idle,
    Download,
    ChatDuringDownload,
    SlowConsumer,
    Cluster,
}

const ALL: [Scenario; 7] = [
    Scenario::Fanout,
    Scenario::SlowConsumer,
    Scenario::Latency,
    Scenario::Idle,
    Scenario::Download,
    Scenario::ChatDuringDownload,
    Scenario::Cluster,
];

#[derive(Debug, Clone)]
struct Opts {
    scenarios: Vec<Scenario>,
    runs: usize,
    quick: bool,
    redis: bool,
    pin: bool,
    /// Burst messages per sender, instead of the default.
    burst: Option<u64>,
    /// Download runs, instead of the default.
    download_runs: Option<usize>,
    /// Fan-out room sizes, instead of the default.
    fan_ns: Option<Vec<usize>>,
    /// The history scenario's modes.
    history: Vec<history::Mode>,
    /// Run the history scenario.
    history_scenario: bool,
    /// Run the TLS-beside-plaintext scenario.
    tls_scenario: bool,
    /// Run the push scenario.
    push_scenario: bool,
    args: String,
}

fn parse_args() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        scenarios: Vec::new(),
        runs: 0,
        quick: false,
        redis: true,
        pin: true,
        burst: None,
        download_runs: None,
        fan_ns: None,
        history: vec![history::Mode::Off, history::Mode::Memory, history::Mode::Db],
        history_scenario: false,
        tls_scenario: false,
        push_scenario: false,
        args: args.join(" "),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "all" => o.scenarios.extend(ALL),
            "fanout" => o.scenarios.push(Scenario::Fanout),
            "latency" => o.scenarios.push(Scenario::Latency),
            "idle" => o.scenarios.push(Scenario::Idle),
            "download" => o.scenarios.push(Scenario::Download),
            "chat-during-download" => o.scenarios.push(Scenario::ChatDuringDownload),
            "slow-consumer" => o.scenarios.push(Scenario::SlowConsumer),
            "cluster" => o.scenarios.push(Scenario::Cluster),
            "history" => o.history_scenario = true,
            "tls" => o.tls_scenario = true,
            "push" => o.push_scenario = true,
            "--history" => {
                o.history = history::Mode::parse(it.next().ok_or("--history needs modes")?)?;
            }
            "--quick" => o.quick = true,
            "--redis" => o.redis = true,
            "--no-redis" => o.redis = false,
            "--no-pin" => o.pin = false,
            "--runs" => {
                o.runs = it
                    .next()
                    .and_then(|k| k.parse().ok())
                    .filter(|&k: &usize| k > 0)
                    .ok_or("--runs needs a positive number")?;
            }
            "--burst" => {
                o.burst = Some(
                    it.next()
                        .and_then(|k| k.parse().ok())
                        .filter(|&k: &u64| k > 0)
                        .ok_or("--burst needs a positive number")?,
                );
            }
            "--download-runs" => {
                o.download_runs = Some(
                    it.next()
                        .and_then(|k| k.parse().ok())
                        .filter(|&k: &usize| k > 0)
                        .ok_or("--download-runs needs a positive number")?,
                );
            }
            "--fan-n" => {
                let ns: Option<Vec<usize>> = it.next().and_then(|v| {
                    v.split(',')
                        .map(|k| k.parse().ok().filter(|&k: &usize| k >= 2))
                        .collect()
                });
                o.fan_ns =
                    Some(ns.ok_or("--fan-n needs room sizes of 2 or more, such as 100,1000")?);
            }
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument '{a}'")),
        }
    }
    if o.scenarios.is_empty() && !o.history_scenario && !o.tls_scenario && !o.push_scenario {
        o.scenarios.extend(ALL);
    }
    // Run in the canonical order, each once.
    o.scenarios = ALL
        .iter()
        .copied()
        .filter(|s| o.scenarios.contains(s))
        .collect();
    if o.runs == 0 {
        o.runs = if o.quick { 1 } else { 4 };
    }
    Ok(o)
}

/// Sizes of each scenario: the full ones, or a smoke version.
struct Sizes {
    /// Room sizes of the fan-out and slow-consumer scenarios.
    fan_ns: Vec<usize>,
    /// (N, messages/s per sender) of the latency scenario.
    lat_cfgs: Vec<(usize, u32)>,
    /// How long closed-loop senders send.
    fan_duration: Duration,
    /// Burst messages per sender, for N ≤ 100 and N > 100 (the full run
    /// uses the issue's 10,000 for both).
    burst_msgs: [u64; 2],
    lat_warmup: Duration,
    lat_measure: Duration,
    idle_clients: usize,
    /// Longest time to connect the idle clients.
    idle_connect: Duration,
    /// Longest wait for the join announcements to stop before reading RSS.
    idle_settle: Duration,
    file_size: u64,
    /// Interleaved download runs (raw copy and imchat each).
    download_runs: usize,
    chat_warmup: Duration,
    chat_window: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                fan_ns: vec![100],
                lat_cfgs: vec![(100, 100), (100, 500), (300, 10)],
                fan_duration: Duration::from_millis(1000),
                burst_msgs: [100, 10],
                lat_warmup: Duration::from_millis(300),
                lat_measure: Duration::from_secs(1),
                idle_clients: 500,
                idle_connect: Duration::from_secs(20),
                idle_settle: Duration::from_secs(10),
                file_size: 128 << 20,
                download_runs: 2,
                chat_warmup: Duration::from_millis(500),
                chat_window: Duration::from_secs(2),
            }
        } else {
            Sizes {
                fan_ns: vec![100, 1000],
                lat_cfgs: vec![(100, 100), (100, 500), (1000, 10)],
                fan_duration: Duration::from_secs(5),
                burst_msgs: [10_000, 10_000],
                lat_warmup: Duration::from_secs(1),
                lat_measure: Duration::from_secs(5),
                idle_clients: 10_000,
                idle_connect: Duration::from_secs(60),
                idle_settle: Duration::from_secs(20),
                file_size: 1 << 30,
                download_runs: 10,
                chat_warmup: Duration::from_secs(1),
                chat_window: Duration::from_secs(10),
            }
        }
    }
}

const SENDERS: usize = 10;
/// A run whose generator used this share of its core or more is discarded.
const GEN_CPU_MAX: f64 = 0.8;
const FILE_NAME: &str = "big.bin";

struct Ctx {
    bins: Bins,
    opts: Opts,
    sizes: Sizes,
    tmp: PathBuf,
    /// Load average when the run started.
    load_start: String,
    tables: Vec<Table>,
    failures: Vec<String>,
    discarded: Vec<String>,
    verdicts: Vec<(String, String)>,
}

impl Ctx {
    fn imchat(&self, rate_off: bool, max_clients: usize) -> Result<Proc, String> {
        let o = ImchatOpts {
            rate_off,
            max_clients,
            max_queue: None,
            shared_dir: self.tmp.join("shared"),
            log_file: self.tmp.join("server.log"),
            extra_args: Vec::new(),
        };
        Proc::imchat(&self.bins, &o, self.opts.pin)
    }

    fn server(&self, kind: Kind, max_clients: usize) -> Result<Proc, String> {
        match kind {
            Kind::Imchat => self.imchat(true, max_clients),
            Kind::Redis => Proc::redis(self.opts.pin, max_clients + 64),
        }
    }

    fn kinds(&self) -> Vec<Kind> {
        if self.opts.redis {
            vec![Kind::Imchat, Kind::Redis]
        } else {
            vec![Kind::Imchat]
        }
    }

    /// The first warning or error in the imchat server's log, to say why a run failed.
    fn log_hint(&self, kind: Kind) -> String {
        if kind != Kind::Imchat {
            return String::new();
        }
        let log = fs::read_to_string(self.tmp.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        match lines.first() {
            Some(l) => format!(
                " (server log, {} warnings/errors, first: {})",
                lines.len(),
                l.chars().take(200).collect::<String>()
            ),
            None => String::new(),
        }
    }

    /// A run that completed but does not count (its generator was the limit).
    fn discard(&mut self, what: String) {
        eprintln!("  DISCARDED: {what}");
        self.discarded.push(what);
    }

    fn fail(&mut self, what: String) {
        eprintln!("  FAILED: {what}");
        self.failures.push(what);
    }

    /// Run `run` of a transfer scenario: `ours` (the imchat transfer, on a
    /// server of its own, stopped after it) and the raw copy of `src`, in
    /// the order [`download::turns`] gives, each after a `sync` so that
    /// neither pays for the writeback of the file the other left. A failure
    /// of either is counted (`what` names ours); the raw copy's figures are
    /// printed.
    fn beside_raw_copy<T>(
        &mut self,
        run: usize,
        what: &str,
        src: &Path,
        mut ours: impl FnMut(&Bins, &Proc) -> Result<T, String>,
    ) -> (Option<download::RawCopy>, Option<T>) {
        let (mut raw, mut got) = (None, None);
        for imchat_turn in download::turns(run) {
            sys::sync_disks();
            if imchat_turn {
                let r = self.imchat(false, 1000).and_then(|p| {
                    let r = ours(&self.bins, &p);
                    p.stop();
                    r
                });
                match r {
                    Ok(d) => got = Some(d),
                    Err(e) => self.fail(format!("{what}, run {}: {e}", run + 1)),
                }
            } else {
                match download::raw_copy_in(src, &self.tmp, self.opts.pin) {
                    Ok(c) => raw = Some(c),
                    Err(e) => self.fail(format!("raw copy, run {}: {e}", run + 1)),
                }
            }
        }
        if let Some(c) = &raw {
            eprintln!(
                "  raw {:.0} MB/s, sender {:.3} s CPU, receiver {:.3} s CPU",
                self.sizes.file_size as f64 / c.secs / 1e6,
                c.sender_cpu,
                c.receiver_cpu
            );
        }
        (raw, got)
    }

    fn table(&mut self, t: Table) {
        print!("{}", t.text());
        self.tables.push(t);
    }

    fn verdict(&mut self, what: String, v: String) {
        self.verdicts.push((what, v));
    }
}

/// "met" or "not met", with the ratio against the bar.
/// The issue's bars for the idle scenario.
const IDLE_KIB_BAR: f64 = 12.0;
const JOIN_SECS_BAR: f64 = 5.0;

fn judge(ratio_to_bar: Option<f64>, higher_is_better: bool) -> String {
    match ratio_to_bar {
        None => "no figure".into(),
        Some(r) => {
            let ok = if higher_is_better { r >= 1.0 } else { r <= 1.0 };
            if ok {
                format!("met ({r:.2}× the bar)")
            } else if higher_is_better {
                format!("NOT met: {:.0} % below", (1.0 - r) * 100.0)
            } else {
                format!("NOT met: {:.0} % above", (r - 1.0) * 100.0)
            }
        }
    }
}

/// Starts the server, runs one fan-out measurement, stops the server.
fn fanout_once(ctx: &Ctx, kind: Kind, cfg: &fanout::Cfg) -> Result<fanout::Outcome, String> {
    let mut p = ctx.server(kind, 20_000)?;
    let r = fanout::run(kind, p.addr, p.pid, cfg);
    if let Ok(o) = &r {
        eprintln!(
            "  {}{}: {:.3} M deliveries/s ({} deliveries, server CPU {:.0} %, generator CPU {:.0} %)",
            kind.label(),
            if cfg.slow { " + non-reader" } else { "" },
            o.rate / 1e6,
            o.deliveries,
            o.server_cpu * 100.0,
            o.gen_cpu * 100.0
        );
    }
    let alive = p.alive();
    let tail = p.tail_text();
    p.stop();
    match r {
        Err(e) if !alive => Err(format!("{e} (server died: {tail})")),
        Err(e) => Err(format!("{e}{}", ctx.log_hint(kind))),
        r => r,
    }
}

/// Scenarios 1 and 6, interleaved so that every figure has its pair from the same run.
fn scenario_fanout(ctx: &mut Ctx, plain: bool, slow: bool) {
    let flows = [
        fanout::Flow::Window(10),
        fanout::Flow::Window(30),
        fanout::Flow::Burst,
    ];
    let mut t1 = Table::new(
        "Fan-out throughput (scenario 1): deliveries per second",
        &[
            "N",
            "flow",
            "per run",
            "imchat",
            "redis",
            "imchat / redis (paired)",
            "server CPU (imchat / redis)",
            "server CPU per delivery",
            "generator CPU",
            "generator CPU per delivery",
            "runs discarded (generator ≥ 0.8 core)",
            "target: ≥ redis",
        ],
    );
    let mut t6 = Table::new(
        "Slow consumer (scenario 6): scenario 1 plus one member that never reads",
        &[
            "N",
            "flow",
            "without",
            "with the non-reader",
            "with / without (paired)",
            "server peak RSS without",
            "with",
            "non-reader dropped",
            "target: within 10 %",
        ],
    );
    for n in ctx.sizes.fan_ns.clone() {
        for flow in flows {
            let burst = ctx
                .opts
                .burst
                .unwrap_or(ctx.sizes.burst_msgs[usize::from(n > 100)]);
            let per_run = match flow {
                fanout::Flow::Window(_) | fanout::Flow::Paced { .. } => {
                    format!("{:.0} s", ctx.sizes.fan_duration.as_secs_f64())
                }
                fanout::Flow::Burst => format!("{burst} msgs/sender"),
            };
            let cfg = fanout::Cfg {
                n,
                senders: SENDERS,
                flow,
                duration: ctx.sizes.fan_duration,
                burst,
                slow: false,
            };
            let slow_cfg = fanout::Cfg {
                slow: true,
                ..cfg.clone()
            };
            let (mut im, mut rd, mut sl) =
                (Series::default(), Series::default(), Series::default());
            let (mut pair, mut slow_pair) = (Series::default(), Series::default());
            // Per server (imchat, redis): server CPU, server µs per delivery,
            // generator CPU, generator µs per delivery; runs discarded.
            let mut cpu: [[Series; 4]; 2] = Default::default();
            let mut discarded = [0usize; 2];
            let (mut hwm, mut slow_hwm) = (Series::default(), Series::default());
            let mut dropped = 0;
            let kinds = if plain {
                ctx.kinds()
            } else {
                vec![Kind::Imchat]
            };
            for run in 0..ctx.opts.runs {
                let label = format!("N = {n}, {}, run {}", flow.label(), run + 1);
                eprintln!("fanout {label} (load average {})", sys::loadavg());
                // Alternate which server goes first, so that neither always
                // runs on the warmer (or busier) half of the pair.
                let mut order = kinds.clone();
                if run % 2 == 1 {
                    order.reverse();
                }
                let mut rate = [None, None];
                for kind in order {
                    let k = kind as usize;
                    match fanout_once(ctx, kind, &cfg) {
                        Ok(o) if o.gen_cpu >= GEN_CPU_MAX => {
                            discarded[k] += 1;
                            ctx.discard(format!(
                                "fan-out {label}, {}: discarded, the generator used {:.2} of its core ({:.2} M deliveries/s)",
                                kind.label(),
                                o.gen_cpu,
                                o.rate / 1e6
                            ));
                        }
                        Ok(o) => {
                            let s = &mut cpu[k];
                            s[0].push(o.server_cpu * 100.0);
                            s[1].push(o.server_cpu / o.rate * 1e6);
                            s[2].push(o.gen_cpu * 100.0);
                            s[3].push(o.gen_cpu / o.rate * 1e6);
                            rate[k] = Some(o.rate);
                            if kind == Kind::Imchat {
                                hwm.push(o.server_hwm_kib / 1024.0);
                            }
                        }
                        Err(e) => ctx.fail(format!("fan-out {label}, {}: {e}", kind.label())),
                    }
                }
                im.push(rate[0].unwrap_or(f64::NAN));
                if plain && ctx.opts.redis {
                    rd.push(rate[1].unwrap_or(f64::NAN));
                }
                if let [Some(a), Some(b)] = rate {
                    pair.push(a / b);
                }
                if slow {
                    match fanout_once(ctx, Kind::Imchat, &slow_cfg) {
                        Ok(o) => {
                            sl.push(o.rate);
                            slow_hwm.push(o.server_hwm_kib / 1024.0);
                            if o.slow_dropped == Some(true) {
                                dropped += 1;
                            }
                            if let Some(a) = rate[0] {
                                slow_pair.push(o.rate / a);
                            }
                        }
                        Err(e) => {
                            sl.push(f64::NAN);
                            ctx.fail(format!("slow consumer {label}: {e}"));
                        }
                    }
                }
            }
            let name = format!("N = {n}, {}", flow.label());
            if plain {
                let v = if ctx.opts.redis {
                    judge(pair.median(), true)
                } else {
                    "no baseline".into()
                };
                let both = |i: usize, f: fn(f64) -> String| {
                    if ctx.opts.redis {
                        format!("{} / {}", cpu[0][i].show(f), cpu[1][i].show(f))
                    } else {
                        cpu[0][i].show(f)
                    }
                };
                t1.row(vec![
                    n.to_string(),
                    flow.label(),
                    per_run.clone(),
                    im.show(millions),
                    rd.show(millions),
                    pair.show(ratio),
                    both(0, pct),
                    both(1, micros),
                    both(2, pct),
                    both(3, micros),
                    format!("{} / {}", discarded[0], discarded[1]),
                    v.clone(),
                ]);
                ctx.verdict(format!("fan-out {name}: deliveries/s ≥ redis"), v);
            }
            if slow {
                let v = match slow_pair.median() {
                    Some(r) if r >= 0.9 => format!("met ({r:.2}×)"),
                    Some(r) => format!("NOT met: {:.0} % slower", (1.0 - r) * 100.0),
                    None => "no figure".into(),
                };
                t6.row(vec![
                    n.to_string(),
                    flow.label(),
                    im.show(millions),
                    sl.show(millions),
                    slow_pair.show(ratio),
                    hwm.show(mib),
                    slow_hwm.show(mib),
                    format!("{dropped} of {}", ctx.opts.runs),
                    v.clone(),
                ]);
                ctx.verdict(
                    format!("slow consumer {name}: within 10 % of scenario 1"),
                    v,
                );
            }
        }
    }
    if plain {
        t1.note(format!(
            "{SENDERS} of the N members send 64-byte messages; a delivery is one message received by one member (its sender excluded); every receiver checked every sender's sequence; rate = deliveries / (first send → last delivery)."
        ));
        t1.note("CPU = share of one core over the run (the servers are pinned to one core, so 100 % is their ceiling); generator = this program, pinned to the other core; per delivery = CPU seconds / deliveries. imchat and Redis alternate within each run (which goes first alternates from run to run).");
        t1.note(format!("A run in which the generator used {GEN_CPU_MAX} of its core or more measured the generator, not the server: it is discarded (listed under failed runs) and left out of the medians, as is a run with any reordered, missing or malformed message; a ratio needs both runs of its pair."));
        t1.note("Per delivery the generator does the same for both servers: one epoll loop reads every member's socket into a 64 KiB buffer (one recv per socket per wake-up), finds the chat by its fixed layout in place (imchat: frame length, type, name length, kind and text length; Redis: the `*3 $7 message $4 room $` prefix and the length), reads the sender and sequence number from the text, checks the order and counts; the closed-loop senders are driven from the same loop (no thread wake-ups), and Redis's PUBLISH replies are read and dropped there too.");
        ctx.table(t1);
    }
    if slow {
        t6.note("The non-reader joins like any member and never reads its socket; the server must drop it (its outbound queue cap) and keep serving the others at the same rate.");
        ctx.table(t6);
    }
}

fn scenario_latency(ctx: &mut Ctx) {
    let cfgs = ctx.sizes.lat_cfgs.clone();
    let mut t = Table::new(
        "Fan-out latency (scenario 2): send → receive, per delivery",
        &[
            "N",
            "msgs/s per sender",
            "imchat p50",
            "imchat p99",
            "imchat p99.9",
            "imchat max",
            "redis p50",
            "redis p99",
            "redis p99.9",
            "redis max",
            "p99 imchat / redis (paired)",
            "imchat CPU",
            "target: p99 ≤ redis",
        ],
    );
    for (n, rate) in cfgs {
        let cfg = latency::Cfg {
            n,
            senders: SENDERS,
            rate,
            warmup: ctx.sizes.lat_warmup,
            measure: ctx.sizes.lat_measure,
        };
        let mut s: [[Series; 5]; 2] = Default::default();
        let mut pair = Series::default();
        for run in 0..ctx.opts.runs {
            let label = format!("N = {n}, {rate} msgs/s, run {}", run + 1);
            eprintln!("latency {label}");
            let mut p99 = [None, None];
            let mut order = ctx.kinds();
            if run % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                let k = kind as usize;
                let r = ctx.server(kind, 20_000).and_then(|p| {
                    let r = latency::run(kind, p.addr, p.pid, &cfg);
                    p.stop();
                    r
                });
                match r {
                    Ok(o) => {
                        s[k][0].push(o.p50);
                        s[k][1].push(o.p99);
                        s[k][2].push(o.p999);
                        s[k][3].push(o.max);
                        s[k][4].push(o.server_cpu * 100.0);
                        p99[k] = Some(o.p99);
                    }
                    Err(e) => ctx.fail(format!("latency {label}, {}: {e}", kind.label())),
                }
            }
            if let [Some(a), Some(b)] = p99 {
                pair.push(a / b);
            }
        }
        let v = if ctx.opts.redis {
            judge(pair.median(), false)
        } else {
            "no baseline".into()
        };
        t.row(vec![
            n.to_string(),
            rate.to_string(),
            s[0][0].show(ms),
            s[0][1].show(ms),
            s[0][2].show(ms),
            s[0][3].show(ms),
            s[1][0].show(ms),
            s[1][1].show(ms),
            s[1][2].show(ms),
            s[1][3].show(ms),
            pair.show(ratio),
            s[0][4].show(pct),
            v.clone(),
        ]);
        ctx.verdict(
            format!("latency N = {n}, {SENDERS} × {rate} msgs/s: p99 ≤ redis"),
            v,
        );
    }
    t.note(format!(
        "{SENDERS} senders at a fixed rate each, spread over the period; latency from the send timestamp in each message to its arrival at each receiver; {:.1} s warm-up, then {:.0} s measured per run.",
        ctx.sizes.lat_warmup.as_secs_f64(),
        ctx.sizes.lat_measure.as_secs_f64()
    ));
    ctx.table(t);
}

fn scenario_idle(ctx: &mut Ctx) {
    let n = ctx.sizes.idle_clients;
    let cap = ctx.sizes.idle_settle.as_secs_f64();
    let mut t = Table::new(
        "Idle scale (scenario 3): connected idle clients",
        &[
            "server",
            "clients connected",
            "RSS fresh",
            "RSS with clients",
            "RSS per connection",
            "time to connect all",
            "then join announcements drained in",
            "server threads",
            "target: ≤ 12 KiB per connection",
        ],
    );
    for kind in ctx.kinds() {
        // fresh, after, per connection, connect time, threads, settle time
        let mut f: [Series; 7] = Default::default();
        let mut unsettled = 0;
        let mut why = None;
        let mut closed = Series::default();
        for run in 0..ctx.opts.runs {
            eprintln!("idle {} x {n}, run {}", kind.label(), run + 1);
            let r = ctx.server(kind, n + 100).and_then(|mut p| {
                let r = idle::run(
                    kind,
                    p.addr,
                    p.pid,
                    n,
                    ctx.sizes.idle_connect,
                    ctx.sizes.idle_settle,
                );
                let alive = p.alive();
                let tail = p.tail_text();
                p.stop();
                match r {
                    Err(e) if !alive => Err(format!("{e} (server died: {tail})")),
                    Ok(_) if !alive => Err(format!("the server died: {tail}")),
                    r => r.map(|(o, _socks)| o),
                }
            });
            match r {
                Ok(o) => {
                    eprintln!(
                        "  {}: {:.1} KiB per connection, connected in {:.2} s, settled: {:?}",
                        kind.label(),
                        o.per_conn_kib,
                        o.connect_secs,
                        o.settle_secs
                    );
                    f[0].push(o.fresh_kib / 1024.0);
                    f[1].push(o.after_kib / 1024.0);
                    f[2].push(o.per_conn_kib);
                    f[3].push(o.connect_secs);
                    f[4].push(o.threads);
                    f[6].push(o.connected as f64);
                    closed.push(o.closed as f64);
                    if o.closed > 0 {
                        ctx.failures.push(format!(
                            "idle {}, run {}: the server closed {} of {} idle connections{}",
                            kind.label(),
                            run + 1,
                            o.closed,
                            o.connected,
                            ctx.log_hint(kind)
                        ));
                    }
                    if let Some(e) = o.connect_error {
                        why.get_or_insert(e);
                    }
                    match o.settle_secs {
                        Some(s) => f[5].push(s),
                        None => unsettled += 1,
                    }
                }
                Err(e) => ctx.fail(format!("idle {}, run {}: {e}", kind.label(), run + 1)),
            }
        }
        let v = if kind == Kind::Imchat {
            let mut v = judge(f[2].median().map(|p| p / IDLE_KIB_BAR), false);
            if f[6].min().is_some_and(|c| c < n as f64) || closed.max().is_some_and(|c| c > 0.0) {
                v = format!("NOT met: not all {n} clients connected ({v} for those that did)");
            }
            ctx.verdict(
                format!("idle: ≤ {IDLE_KIB_BAR} KiB RSS per connection at {n} clients"),
                v.clone(),
            );
            ctx.verdict(
                format!("idle: {n} clients connected and joined in < {JOIN_SECS_BAR} s"),
                judge(f[3].median().map(|s| s / JOIN_SECS_BAR), false),
            );
            v
        } else {
            "(baseline)".into()
        };
        let settle = if unsettled > 0 {
            format!("still flowing after {cap:.0} s in {unsettled} run(s)")
        } else {
            f[5].show(secs)
        };
        let mut connected = match why {
            Some(e) => format!("{} of {n} ({e})", f[6].show(|v| format!("{v:.0}"))),
            None => n.to_string(),
        };
        if closed.max().is_some_and(|c| c > 0.0) {
            connected += &format!(
                "; then closed by the server: {}",
                closed.show(|v| format!("{v:.0}"))
            );
        }
        t.row(vec![
            kind.label().into(),
            connected,
            f[0].show(mib),
            f[1].show(mib),
            f[2].show(kib),
            f[3].show(secs),
            settle,
            f[4].show(|v| format!("{v:.0}")),
            v,
        ]);
    }
    t.note(format!("Each client completes the handshake (imchat: Hello → Welcome; Redis: SUBSCRIBE to the room) and then only reads what it is sent (imchat tells every member of every join: N²/2 names, batched in presence frames of up to 100 ms; the clients skip them undecoded and answer keepalive pings). RSS is read from /proc {} s after 1 s passed without traffic (or after {cap:.0} s); per connection = (RSS with clients − RSS fresh) / clients connected. Connecting uses {} threads, each with one handshake in flight, and gives up after {:.0} s, or when a client gets no Welcome within 30 s.", idle::HOLD.as_secs(), idle::CONNECTORS, ctx.sizes.idle_connect.as_secs_f64()));
    ctx.table(t);
}

fn scenario_download(ctx: &mut Ctx) {
    let size = ctx.sizes.file_size;
    let gib = size as f64 / f64::from(1u32 << 30);
    let src = ctx.tmp.join("shared").join(FILE_NAME);
    let dl = ctx.tmp.join("downloads");
    let _ = fs::create_dir_all(&dl);
    // Wall MB/s (raw, imchat), paired wall ratio, CPU s/GiB (raw sender,
    // raw receiver, server, client), paired CPU ratios (server / sender,
    // client / receiver), server RSS before and peak.
    let mut f: [Series; 11] = Default::default();
    let runs = ctx.opts.download_runs.unwrap_or(ctx.sizes.download_runs);
    for run in 0..runs {
        eprintln!(
            "download {} MiB, run {} (load average {})",
            size >> 20,
            run + 1,
            sys::loadavg()
        );
        let (raw, ours) = ctx.beside_raw_copy(run, "imchat download", &src, |bins, p| {
            download::client_download(bins, p.addr, p.pid, FILE_NAME, size, &dl)
        });
        if let Some(c) = &raw {
            f[0].push(size as f64 / c.secs / 1e6);
            f[3].push(c.sender_cpu / gib);
            f[4].push(c.receiver_cpu / gib);
        }
        if let Some(d) = &ours {
            f[1].push(size as f64 / d.secs / 1e6);
            f[5].push(d.server_cpu / gib);
            f[6].push(d.client_cpu / gib);
            f[9].push(d.rss_before_kib / 1024.0);
            f[10].push(d.rss_peak_kib / 1024.0);
            eprintln!(
                "  imchat {:.0} MB/s, server {:.3} s CPU, client {:.3} s CPU",
                size as f64 / d.secs / 1e6,
                d.server_cpu,
                d.client_cpu
            );
        }
        if let (Some(c), Some(d)) = (&raw, &ours) {
            f[2].push(c.secs / d.secs);
            f[7].push(d.server_cpu / c.sender_cpu);
            f[8].push(d.client_cpu / c.receiver_cpu);
        }
    }
    let v = judge(f[2].median().map(|r| r / 0.9), true);
    ctx.verdict(
        format!("download {} MiB: ≥ 90 % of the raw copy", size >> 20),
        v.clone(),
    );
    let mut t = Table::new(
        &format!(
            "Download (scenario 4): a {} MiB file to disk, {runs} interleaved runs",
            size >> 20
        ),
        &[
            "transfer",
            "throughput (wall)",
            "vs raw copy (paired, wall)",
            "sending side CPU per GiB",
            "receiving side CPU per GiB",
            "sending CPU / raw sender (paired)",
            "receiving CPU / raw receiver (paired)",
            "server RSS before",
            "server RSS peak during",
            "target: ≥ 90 % of raw (wall)",
        ],
    );
    let cpu = |v: f64| format!("{v:.3} s");
    t.row(vec![
        "raw TCP copy (sendfile → read/write)".into(),
        f[0].show(mbps),
        "1".into(),
        f[3].show(cpu),
        f[4].show(cpu),
        "1".into(),
        "1".into(),
        "".into(),
        "".into(),
        "".into(),
    ]);
    t.row(vec![
        "imchat-server → imchat-client /download".into(),
        f[1].show(mbps),
        f[2].show(ratio),
        f[5].show(cpu),
        f[6].show(cpu),
        f[7].show(ratio),
        f[8].show(ratio),
        f[9].show(mib),
        f[10].show(mib),
        v,
    ]);
    t.note("Raw copy: a sender thread sends the file to a loopback socket with `sendfile` in 256 KiB steps (as the server sends chunk data), pinned to CPU 0; a receiver thread reserves the file's space (`fallocate`, as imchat-client does), then reads the socket and writes the file with a 256 KiB buffer (the chunk size), on CPU 1. imchat: the real imchat-client in piped mode, `/download` then `/quit`, timed from `/download` to its `*** downloaded` line (CRC checks and rename included; neither side fsyncs), server on CPU 0. The two transfers alternate (which goes first alternates from run to run) and each starts after a `sync`. MB = 10^6 bytes.");
    t.note("CPU per GiB: the raw copy's threads from `CLOCK_THREAD_CPUTIME_ID`; imchat-server's and imchat-client's processes from `/proc/<pid>/stat` (user + system, all threads, 10 ms ticks), from just before `/download` to the done line. Wall time on this VM swings 2–5× from one transfer to the next; CPU time per GiB is the stable figure. Server RSS sampled every 100 ms.");
    ctx.table(t);
}

fn scenario_chat_during(ctx: &mut Ctx) {
    let dl = ctx.tmp.join("downloads");
    let _ = fs::create_dir_all(&dl);
    let cases = [(1usize, false), (1, true), (4, true)];
    let mut s: Vec<[Series; 6]> = cases.iter().map(|_| Default::default()).collect();
    for run in 0..ctx.opts.runs {
        eprintln!("chat during downloads, run {}", run + 1);
        for (i, &(clients, download)) in cases.iter().enumerate() {
            let r = ctx.imchat(true, 1000).and_then(|p| {
                let r = download::chat_during(
                    p.addr,
                    FILE_NAME,
                    &dl,
                    clients,
                    download,
                    100,
                    ctx.sizes.chat_warmup,
                    ctx.sizes.chat_window,
                );
                p.stop();
                r
            });
            match r {
                Ok(o) => {
                    s[i][0].push(o.p50);
                    s[i][1].push(o.p99);
                    s[i][2].push(o.p999);
                    s[i][3].push(o.download_bps / 1e6);
                    s[i][4].push(o.downloads_done as f64);
                    s[i][5].push(o.max);
                }
                Err(e) => {
                    let hint = ctx.log_hint(Kind::Imchat);
                    ctx.fail(format!(
                        "chat during {} download(s), run {}: {e}{hint}",
                        if download { clients } else { 0 },
                        run + 1
                    ));
                }
            }
        }
    }
    let mut t = Table::new(
        "Chat during downloads (scenario 5): chat latency to downloading clients",
        &[
            "downloads at once",
            "chat p50",
            "chat p99",
            "chat p99.9",
            "chat max",
            "download throughput (all)",
            "downloads completed",
            "target: p99 < 10 ms",
        ],
    );
    for (i, &(clients, download)) in cases.iter().enumerate() {
        let v = if download {
            let v = judge(s[i][1].median().map(|p| p / 10.0), false);
            ctx.verdict(
                format!("chat p99 < 10 ms during {clients} download(s)"),
                v.clone(),
            );
            v
        } else {
            "(baseline)".into()
        };
        t.row(vec![
            if download {
                clients.to_string()
            } else {
                "0 (idle client)".into()
            },
            s[i][0].show(ms),
            s[i][1].show(ms),
            s[i][2].show(ms),
            s[i][5].show(ms),
            s[i][3].show(mbps),
            s[i][4].show(|v| format!("{v:.0}")),
            v,
        ]);
    }
    t.note(format!(
        "Receivers are imchat-core ClientSession clients that write every chunk to disk and download the {} MiB file again and again during a {:.0} s window; one more client sends 100 chat messages/s to everyone; latency from the timestamp in each message to its ClientEvent::Chat.",
        ctx.sizes.file_size >> 20,
        ctx.sizes.chat_window.as_secs_f64()
    ));
    ctx.table(t);
}

fn markdown(ctx: &Ctx, elapsed: Duration) -> String {
    let mut s = String::from("## Load generator\n\n");
    s.push_str(&format!(
        "Command: `cargo run --release -p imchat-server --example loadgen -- {}` — {} run(s) per figure, median (min–max); took {:.0} min.\n\n",
        ctx.opts.args,
        ctx.opts.runs,
        elapsed.as_secs_f64() / 60.0
    ));
    s.push_str("| machine | |\n|---|---|\n");
    for (k, v) in sys::machine() {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str(&format!(
        "| load average (1, 5, 15 min) | {} at the start, {} at the end |\n",
        ctx.load_start,
        sys::loadavg()
    ));
    s.push_str(&format!(
        "| pinning | {} |\n\n",
        if ctx.opts.pin {
            "server (imchat-server or redis-server) on CPU 0 with `taskset -c 0`; generator and clients on CPU 1"
        } else {
            "none"
        }
    ));
    if !ctx.verdicts.is_empty() {
        s.push_str("### Targets\n\n| target | result |\n|---|---|\n");
        for (w, v) in &ctx.verdicts {
            s.push_str(&format!("| {w} | {v} |\n"));
        }
        s.push('\n');
    }
    for t in &ctx.tables {
        s.push_str(&t.markdown());
    }
    if !ctx.discarded.is_empty() {
        s.push_str("### Discarded runs\n\n");
        for f in &ctx.discarded {
            s.push_str(&format!("- {f}\n"));
        }
        s.push('\n');
    }
    if !ctx.failures.is_empty() {
        s.push_str("### Failed runs\n\n");
        for f in &ctx.failures {
            s.push_str(&format!("- {f}\n"));
        }
        s.push('\n');
    }
    s
}

fn run(opts: Opts) -> Result<bool, String> {
    let started = Instant::now();
    let nofile = sys::raise_nofile();
    if opts.pin && !sys::pin_current_thread(1) {
        eprintln!("note: could not pin the generator to CPU 1");
    }
    let mut opts = opts;
    if opts.redis && !sys::on_path("redis-server") {
        eprintln!(
            "note: redis-server is not on PATH: the Redis baseline is skipped. Install it with `apt-get install -y redis-server`."
        );
        opts.redis = false;
    }
    let bins = procs::find_bins()?;
    let tmp = std::env::temp_dir().join(format!("imchat-loadgen-{}", std::process::id()));
    fs::create_dir_all(tmp.join("shared")).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut sizes = Sizes::new(opts.quick);
    if let Some(ns) = &opts.fan_ns {
        sizes.fan_ns.clone_from(ns);
    }
    if sizes.idle_clients + 100 > nofile as usize {
        eprintln!("note: open-file limit {nofile} is below the idle scenario's needs");
    }
    let mut ctx = Ctx {
        bins,
        sizes,
        tmp: tmp.clone(),
        load_start: sys::loadavg(),
        tables: Vec::new(),
        failures: Vec::new(),
        discarded: Vec::new(),
        verdicts: Vec::new(),
        opts,
    };
    let result = (|| -> Result<(), String> {
        let sc = ctx.opts.scenarios.clone();
        let files = sc.contains(&Scenario::Download)
            || sc.contains(&Scenario::ChatDuringDownload)
            || ctx.opts.tls_scenario
            || ctx.opts.push_scenario;
        if files {
            let size = ctx.sizes.file_size;
            let need = size * 7 + (1 << 30);
            if let Some(free) = sys::free_bytes(&tmp) {
                if free < need {
                    return Err(format!(
                        "{} has {} MiB free; the download scenarios need {} MiB",
                        tmp.display(),
                        free >> 20,
                        need >> 20
                    ));
                }
            }
            eprintln!("writing a {} MiB test file...", size >> 20);
            download::make_file(&tmp.join("shared").join(FILE_NAME), size)
                .map_err(|e| format!("test file: {e}"))?;
        }
        let fan = sc.contains(&Scenario::Fanout);
        let slow = sc.contains(&Scenario::SlowConsumer);
        if fan || slow {
            scenario_fanout(&mut ctx, fan, slow);
        }
        if sc.contains(&Scenario::Latency) {
            scenario_latency(&mut ctx);
        }
        if sc.contains(&Scenario::Idle) {
            scenario_idle(&mut ctx);
        }
        if sc.contains(&Scenario::Download) {
            scenario_download(&mut ctx);
        }
        if sc.contains(&Scenario::ChatDuringDownload) {
            scenario_chat_during(&mut ctx);
        }
        if sc.contains(&Scenario::Cluster) {
            cluster::scenario(&mut ctx);
        }
        if ctx.opts.history_scenario {
            history::scenario(&mut ctx);
        }
        if ctx.opts.tls_scenario {
            tls::scenario(&mut ctx);
        }
        if ctx.opts.push_scenario {
            push::scenario(&mut ctx);
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    result?;
    let md = markdown(&ctx, started.elapsed());
    let out = ctx.bins.server.parent().and_then(Path::parent).map_or_else(
        || PathBuf::from("loadgen-report.md"),
        |t| t.join("loadgen-report.md"),
    );
    println!("\n== Targets ==");
    for (w, v) in &ctx.verdicts {
        println!("  {w}: {v}");
    }
    if !ctx.discarded.is_empty() {
        println!("\n== Discarded runs ==");
        for f in &ctx.discarded {
            println!("  {f}");
        }
    }
    if !ctx.failures.is_empty() {
        println!("\n== Failed runs ==");
        for f in &ctx.failures {
            println!("  {f}");
        }
    }
    match fs::write(&out, md) {
        Ok(()) => println!(
            "\nMarkdown report: {} (took {:.0} s)",
            out.display(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
    Ok(ctx.failures.is_empty())
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}
