//! The `history` scenario: chat fan-out and latency of the same imchat
//! server with its room history off, in memory, and in a database file,
//! interleaved run by run so that each figure has its pair from the same
//! minute of a busy machine.

use std::fs;
use std::path::Path;

use crate::procs::{ImchatOpts, Proc};
use crate::report::{millions, ms, pct, ratio, Series, Table};
use crate::wire::Kind;
use crate::{fanout, latency, sys, Ctx, GEN_CPU_MAX, SENDERS};

/// How the server keeps its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--history-count 0 --grace-secs 0`: no history on join and no
    /// resume. The hub still numbers and logs each message in memory (the
    /// log is part of the protocol); only what reads it is off.
    Off,
    /// The defaults: the log in memory, history on join, resume.
    Memory,
    /// The defaults and `--history-db` on a fresh file: messages are
    /// routed at once, and committed to SQLite (by the server's commit
    /// thread, every 2 ms, one row for what each commit writes) before
    /// they are acknowledged.
    Db,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Vec<Mode>, String> {
        text.split(',')
            .map(|m| match m {
                "off" => Ok(Mode::Off),
                "memory" => Ok(Mode::Memory),
                "db" => Ok(Mode::Db),
                _ => Err(format!("--history: '{m}' is not off, memory or db")),
            })
            .collect()
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Memory => "memory",
            Mode::Db => "db",
        }
    }

    fn args(self, tmp: &Path) -> Vec<String> {
        match self {
            Mode::Off => ["--history-count", "0", "--grace-secs", "0"]
                .map(String::from)
                .to_vec(),
            Mode::Memory => Vec::new(),
            Mode::Db => {
                let db = tmp.join("history.db");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = fs::remove_file(format!("{}{suffix}", db.display()));
                }
                vec!["--history-db".into(), db.display().to_string()]
            }
        }
    }
}

fn start(ctx: &Ctx, mode: Mode) -> Result<Proc, String> {
    let o = ImchatOpts {
        rate_off: true,
        max_clients: 20_000,
        max_queue: None,
        shared_dir: ctx.tmp.join("shared"),
        log_file: ctx.tmp.join("server.log"),
        extra_args: mode.args(&ctx.tmp),
    };
    Proc::imchat(&ctx.bins, &o, ctx.opts.pin)
}

fn fanout_once(ctx: &Ctx, mode: Mode, cfg: &fanout::Cfg) -> Result<fanout::Outcome, String> {
    let mut p = start(ctx, mode)?;
    let r = fanout::run(Kind::Imchat, p.addr, p.pid, cfg);
    let (alive, tail) = (p.alive(), p.tail_text());
    p.stop();
    match r {
        Err(e) if !alive => Err(format!("{e} (server died: {tail})")),
        r => r,
    }
}

fn latency_once(ctx: &Ctx, mode: Mode, cfg: &latency::Cfg) -> Result<latency::Outcome, String> {
    let p = start(ctx, mode)?;
    let r = latency::run(Kind::Imchat, p.addr, p.pid, cfg);
    p.stop();
    r
}

/// "met" when `r` (mode / off) is within 10 % on the good side of 1.
fn within(r: Option<f64>, higher_is_better: bool) -> String {
    match r {
        None => "no figure".into(),
        Some(r) if higher_is_better && r >= 0.9 => format!("met ({r:.2}×)"),
        Some(r) if !higher_is_better && r <= 1.1 => format!("met ({r:.2}×)"),
        Some(r) => format!("NOT met ({r:.2}×)"),
    }
}

pub fn scenario(ctx: &mut Ctx) {
    let modes = ctx.opts.history.clone();
    let mut t = Table::new(
        "History (off, in memory, in a database file): fan-out and latency, side by side",
        &[
            "history",
            "fan-out N, flow",
            "deliveries/s",
            "/ off (paired)",
            "server CPU",
            "server CPU µs / delivery",
            "/ off (paired)",
            "latency N, msgs/s per sender",
            "p50",
            "p99",
            "p99 / off (paired)",
            "target: within 10 % of off",
        ],
    );
    let n = ctx.sizes.fan_ns[0];
    let fan = fanout::Cfg {
        n,
        senders: SENDERS,
        flow: fanout::Flow::Window(30),
        duration: ctx.sizes.fan_duration,
        burst: 0,
        slow: false,
    };
    let (lat_n, lat_rate) = ctx.sizes.lat_cfgs[1];
    let lat = latency::Cfg {
        n: lat_n,
        senders: SENDERS,
        rate: lat_rate,
        warmup: ctx.sizes.lat_warmup,
        measure: ctx.sizes.lat_measure,
    };
    // Per mode: deliveries/s, server CPU %, ratio to off, p50, p99, p99
    // ratio to off, server CPU µs per delivery, its ratio to off.
    let mut s: Vec<[Series; 8]> = modes.iter().map(|_| Default::default()).collect();
    for run in 0..ctx.opts.runs {
        // Rotate which mode goes first.
        let mut order: Vec<usize> = (0..modes.len()).collect();
        order.rotate_left(run % modes.len().max(1));
        eprintln!("history run {} (load average {})", run + 1, sys::loadavg());
        let mut rate = vec![None; modes.len()];
        let mut p99 = vec![None; modes.len()];
        let mut cost = vec![None; modes.len()];
        for &i in &order {
            let mode = modes[i];
            match fanout_once(ctx, mode, &fan) {
                Ok(o) if o.gen_cpu >= GEN_CPU_MAX => ctx.discard(format!(
                    "history {}, fan-out run {}: the generator used {:.2} of its core",
                    mode.label(),
                    run + 1,
                    o.gen_cpu
                )),
                Ok(o) => {
                    // The server's CPU time per delivery: steadier than the
                    // rate on a machine others use too.
                    let us = o.server_cpu * 1e6 / o.rate.max(1.0);
                    eprintln!(
                        "  {}: {:.3} M deliveries/s, server CPU {:.0} %, {us:.3} µs per delivery",
                        mode.label(),
                        o.rate / 1e6,
                        o.server_cpu * 100.0
                    );
                    s[i][0].push(o.rate);
                    s[i][1].push(o.server_cpu * 100.0);
                    s[i][6].push(us);
                    rate[i] = Some(o.rate);
                    cost[i] = Some(us);
                }
                Err(e) => ctx.fail(format!(
                    "history {}, fan-out run {}: {e}",
                    mode.label(),
                    run + 1
                )),
            }
            match latency_once(ctx, mode, &lat) {
                Ok(o) => {
                    eprintln!(
                        "  {}: p50 {:.3} ms, p99 {:.3} ms",
                        mode.label(),
                        o.p50,
                        o.p99
                    );
                    s[i][3].push(o.p50);
                    s[i][4].push(o.p99);
                    p99[i] = Some(o.p99);
                }
                Err(e) => ctx.fail(format!(
                    "history {}, latency run {}: {e}",
                    mode.label(),
                    run + 1
                )),
            }
        }
        if let Some(off) = modes.iter().position(|m| *m == Mode::Off) {
            for i in 0..modes.len() {
                if let (Some(a), Some(b)) = (rate[i], rate[off]) {
                    s[i][2].push(a / b);
                }
                if let (Some(a), Some(b)) = (p99[i], p99[off]) {
                    s[i][5].push(a / b);
                }
                if let (Some(a), Some(b)) = (cost[i], cost[off]) {
                    s[i][7].push(a / b);
                }
            }
        }
    }
    for (i, mode) in modes.iter().enumerate() {
        let v = if *mode == Mode::Off {
            "(baseline)".to_string()
        } else {
            let v = format!(
                "deliveries/s {}, p99 {}",
                within(s[i][2].median(), true),
                within(s[i][5].median(), false)
            );
            ctx.verdict(
                format!(
                    "history {}: fan-out and p99 within 10 % of off",
                    mode.label()
                ),
                v.clone(),
            );
            v
        };
        t.row(vec![
            mode.label().into(),
            format!("{n}, {}", fan.flow.label()),
            s[i][0].show(millions),
            s[i][2].show(ratio),
            s[i][1].show(pct),
            s[i][6].show(|v| format!("{v:.3}")),
            s[i][7].show(ratio),
            format!("{lat_n}, {lat_rate}"),
            s[i][3].show(ms),
            s[i][4].show(ms),
            s[i][5].show(ratio),
            v,
        ]);
    }
    t.note("off: --history-count 0 --grace-secs 0 (no history on join, no resume; the hub still gives each message an id and keeps it in its in-memory log, which the protocol needs). memory: the defaults (50 messages of history, 60 s grace, a log of 10,000 entries / 8 MiB). db: the defaults and --history-db on a fresh file (WAL, synchronous=NORMAL): appends only queue under the hub's lock; a commit thread writes them as one row (schema version 2) and commits, every 2 ms, without the lock, before their Acks (routing does not wait).");
    t.note("Server CPU µs / delivery: the server's CPU time in the fan-out run divided by its deliveries (less sensitive to other load on the machine than the rate).");
    t.note("The modes alternate within each run (which goes first rotates from run to run); ratios are taken within a run. Fan-out as scenario 1, latency as scenario 2.");
    ctx.table(t);
}
