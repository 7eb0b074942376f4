//! The `cluster` scenario: fan-out and latency of one room served by one
//! imchat server alone, one server with Redis, and two and three servers
//! joined through one Redis (`--redis`), side by side in each run, with the
//! same members and senders spread evenly over the servers. Every server
//! and the Redis are started for each measurement and stopped by their
//! handles; all of them share the servers' core (CPU 0), so the CPU each
//! spends per delivery is the figure that says what the cluster costs.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::procs::{ImchatOpts, Proc};
use crate::report::{micros, millions, ms, pct, ratio, Series, Table};
use crate::sys::CpuCap;
use crate::wire::Kind;
use crate::{fanout, judge, latency, sys, Ctx, GEN_CPU_MAX, SENDERS};

/// One configuration: how many imchat servers, and whether they use a Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub servers: usize,
    pub redis: bool,
}

/// The configurations, the first one (a single server, no Redis) the base
/// every other is compared with.
pub const SETUPS: [Setup; 4] = [
    Setup {
        servers: 1,
        redis: false,
    },
    Setup {
        servers: 1,
        redis: true,
    },
    Setup {
        servers: 2,
        redis: true,
    },
    Setup {
        servers: 3,
        redis: true,
    },
];

/// The bars: cross-server p99 under this many times the single
/// server's, and CPU per delivery of all imchat servers within this many
/// times the single server's.
const P99_BAR: f64 = 2.0;
const CPU_BAR: f64 = 1.5;
/// The fixed load of the paced fan-out at N: messages a second per
/// sender. With 10 senders, 0.99 M deliveries a second at N = 100 and
/// 5.0 M at N = 1,000: below what 3 servers sharing one core deliver at
/// most, and what the generator's one core follows. Every N of the run is
/// paced, so that a smaller room (`--fan-n 34,50,100`: the share of the
/// room each of 3 or 2 servers serves) is measured at the same load.
fn pace(n: usize) -> u64 {
    if n <= 100 {
        1_000
    } else {
        500
    }
}

/// The closed loop again with every imchat server held to a fixed share of
/// a core (a CFS quota): (N, share). Four servers' worth of it and the
/// Redis fit on the servers' core, so each server has the capacity it
/// would have on a machine of its own, and more servers can deliver more.
const CAPPED: (usize, f64) = (100, 0.25);

/// One fan-out measurement of every setup: N, the flow, and the share of
/// a core each imchat server is held to (`None`: no cap).
#[derive(Debug, Clone, Copy)]
struct FanCfg {
    n: usize,
    flow: fanout::Flow,
    cap: Option<f64>,
}

impl FanCfg {
    /// `100, W = 30`, with the cap when there is one.
    fn label(self) -> String {
        let base = format!("{}, {}", self.n, self.flow.label());
        match self.cap {
            Some(share) => format!(
                "{base}, each server capped at {:.0} % of a core",
                share * 100.0
            ),
            None => base,
        }
    }
}

/// What a server logs once it is part of the cluster.
const JOINED: &str = "cluster: joined through";

impl Setup {
    fn label(self) -> String {
        match (self.servers, self.redis) {
            (1, false) => "1 server, no Redis".into(),
            (1, true) => "1 server + Redis".into(),
            (n, _) => format!("{n} servers + Redis"),
        }
    }
}

/// The processes of one configuration.
struct Cluster {
    servers: Vec<Proc>,
    redis: Option<Proc>,
    logs: Vec<PathBuf>,
    /// The servers' CPU caps, when they have one.
    caps: Vec<CpuCap>,
}

impl Cluster {
    /// Starts the Redis (when the setup has one), then the imchat servers,
    /// every one on 127.0.0.1 with a port from the OS, each with its own log
    /// (and, with `cap`, held to that share of a core).
    fn start(ctx: &Ctx, setup: Setup, cap: Option<f64>) -> Result<Cluster, String> {
        let redis = if setup.redis {
            Some(Proc::redis(ctx.opts.pin, 256)?)
        } else {
            None
        };
        let mut c = Cluster {
            servers: Vec::new(),
            redis,
            logs: Vec::new(),
            caps: Vec::new(),
        };
        for i in 0..setup.servers {
            let log_file = ctx.tmp.join(format!("cluster-{i}.log"));
            let _ = fs::remove_file(&log_file);
            let extra_args = match &c.redis {
                Some(r) => vec!["--redis".into(), format!("redis://{}", r.addr)],
                None => Vec::new(),
            };
            let o = ImchatOpts {
                rate_off: true,
                max_clients: 20_000,
                max_queue: None,
                shared_dir: ctx.tmp.join("shared"),
                log_file: log_file.clone(),
                extra_args,
            };
            c.logs.push(log_file);
            let server = Proc::imchat(&ctx.bins, &o, ctx.opts.pin)?;
            let pid = server.pid;
            c.servers.push(server);
            if let Some(share) = cap {
                c.caps.push(CpuCap::new(pid, share)?);
            }
        }
        if setup.redis {
            c.wait_joined()?;
        }
        Ok(c)
    }

    /// Waits (10 s at most) until every server's log says it joined the
    /// cluster: until then a server refuses new names.
    fn wait_joined(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = self
                .logs
                .iter()
                .filter(|l| !fs::read_to_string(l).is_ok_and(|t| t.contains(JOINED)))
                .count();
            if waiting == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{waiting} of {} servers did not join the cluster within 10 s",
                    self.logs.len()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|p| p.addr).collect()
    }

    /// The imchat servers' process ids, then the Redis's.
    fn pids(&self) -> Vec<u32> {
        self.servers
            .iter()
            .chain(&self.redis)
            .map(|p| p.pid)
            .collect()
    }

    /// Stops the imchat servers, then the Redis. Says which process died
    /// during the run and the first warning of each server's log, if any.
    fn stop(mut self) -> (Option<String>, String) {
        let mut died = Vec::new();
        for (i, p) in self.servers.iter_mut().enumerate() {
            if !p.alive() {
                died.push(format!("server {} died: {}", i + 1, p.tail_text()));
            }
        }
        if let Some(r) = self.redis.as_mut() {
            if !r.alive() {
                died.push(format!("redis-server died: {}", r.tail_text()));
            }
        }
        if !self.caps.is_empty() {
            let held: Vec<String> = self
                .caps
                .iter()
                .map(|c| {
                    let (secs, periods) = c.throttled();
                    format!("{secs:.2} s in {periods} periods")
                })
                .collect();
            eprintln!("    held back by the cap: {}", held.join(", "));
        }
        for p in self.servers.drain(..) {
            p.stop();
        }
        // Each group is empty now, and can go.
        self.caps.clear();
        if let Some(r) = self.redis.take() {
            r.stop();
        }
        let mut hints = String::new();
        for (i, log) in self.logs.iter().enumerate() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let mut bad = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"));
            if let Some(first) = bad.next() {
                hints += &format!(
                    " (server {} log, {} warnings/errors, first: {})",
                    i + 1,
                    1 + bad.count(),
                    first.chars().take(200).collect::<String>()
                );
            }
        }
        ((!died.is_empty()).then(|| died.join("; ")), hints)
    }
}

/// Starts `setup`, runs `f` on its servers' addresses and processes, stops it.
fn once<T>(
    ctx: &Ctx,
    setup: Setup,
    cap: Option<f64>,
    f: impl FnOnce(&[SocketAddr], &[u32]) -> Result<T, String>,
) -> Result<T, String> {
    let c = Cluster::start(ctx, setup, cap)?;
    let r = f(&c.addrs(), &c.pids());
    match (r, c.stop()) {
        (Err(e), (Some(d), _)) => Err(format!("{e} ({d})")),
        (Ok(_), (Some(d), _)) => Err(d),
        (Err(e), (None, hints)) => Err(format!("{e}{hints}")),
        (r, _) => r,
    }
}

/// CPU µs per delivery: of the imchat servers (the first `servers` entries
/// of `cpu_each`, summed), and of the Redis (the entry after them).
fn per_delivery(cpu_each: &[f64], servers: usize, deliveries: u64) -> (f64, Option<f64>) {
    let d = deliveries.max(1) as f64;
    let imchat: f64 = cpu_each.iter().take(servers).sum();
    (imchat / d * 1e6, cpu_each.get(servers).map(|r| r / d * 1e6))
}

/// Per setup, what one fan-out run gave: deliveries/s, imchat µs per delivery.
type FanPair = Option<(f64, f64)>;

/// The ratios of each setup's run to the base's (setup 0) in the same run,
/// for the setups that have both: `(setup, value / base value)`.
fn paired(values: &[Option<f64>]) -> Vec<(usize, f64)> {
    let Some(Some(base)) = values.first() else {
        return Vec::new();
    };
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v / base)))
        .collect()
}

/// The setups measured: all of them, or the single server alone when
/// Redis is not wanted (`--no-redis`: for instance the single server at the
/// room sizes each server of a cluster serves a share of) or not found.
fn setups(wanted: bool, found: bool) -> &'static [Setup] {
    if wanted && found {
        &SETUPS
    } else {
        &SETUPS[..1]
    }
}

/// The fan-outs at each N: the closed loop at every N, then the same rooms
/// at a fixed load ([`pace`]): CPU per delivery for the same work, whatever
/// each setup's capacity.
fn flows(fan_ns: &[usize], window: u64) -> Vec<(usize, fanout::Flow)> {
    let closed = fan_ns.iter().map(|&n| (n, fanout::Flow::Window(window)));
    let paced = fan_ns.iter().map(|&n| {
        let per_sec = pace(n);
        (n, fanout::Flow::Paced { window, per_sec })
    });
    closed.chain(paced).collect()
}

pub fn scenario(ctx: &mut Ctx) {
    let wanted = ctx.opts.redis;
    let found = wanted && sys::on_path("redis-server");
    if !wanted {
        eprintln!("cluster: --no-redis: only the single server without Redis is measured");
    } else if !found {
        ctx.fail("cluster: redis-server is not on PATH, so only the single server without Redis was measured (install it with `apt-get install -y redis-server`)".into());
    }
    let setups = setups(wanted, found).to_vec();
    let m = setups.len();
    let window = 30;
    let mut fan_cfgs: Vec<FanCfg> = flows(&ctx.sizes.fan_ns, window)
        .into_iter()
        .map(|(n, flow)| FanCfg { n, flow, cap: None })
        .collect();
    // With more servers than one, also at a fixed capacity per server.
    if m > 1 && ctx.sizes.fan_ns.contains(&CAPPED.0) {
        match CpuCap::probe() {
            Ok(()) => fan_cfgs.push(FanCfg {
                n: CAPPED.0,
                flow: fanout::Flow::Window(window),
                cap: Some(CAPPED.1),
            }),
            Err(e) => ctx.fail(format!(
                "cluster: the fan-out with each server capped at {:.0} % of a core was not measured: {e} (it needs root and the cgroup `cpu` controller)",
                CAPPED.1 * 100.0
            )),
        }
    }
    let (lat_n, lat_rate) = ctx.sizes.lat_cfgs[ctx.sizes.lat_cfgs.len() - 1];
    let lat = latency::Cfg {
        n: lat_n,
        senders: SENDERS,
        rate: lat_rate,
        warmup: ctx.sizes.lat_warmup,
        measure: ctx.sizes.lat_measure,
    };
    // Per N, per setup: deliveries/s, / base, imchat CPU %, imchat µs per
    // delivery, / base, Redis µs per delivery, generator CPU %.
    let mut fan: Vec<Vec<[Series; 7]>> = vec![vec![Default::default(); m]; fan_cfgs.len()];
    let mut discarded = vec![vec![0usize; m]; fan_cfgs.len()];
    // Per N, per setup: the imchat servers' CPU µs per delivery by thread.
    let mut threads: Vec<Vec<ByThread>> = vec![vec![ByThread::new(); m]; fan_cfgs.len()];
    // Per setup: p50, p99, cross-server p50, p99, the p99 that counts / base
    // p99, imchat µs per delivery, Redis µs per delivery.
    let mut lats: Vec<[Series; 7]> = vec![Default::default(); m];
    for run in 0..ctx.opts.runs {
        let mut order: Vec<usize> = (0..m).collect();
        order.rotate_left(run % m);
        eprintln!("cluster run {} (load average {})", run + 1, sys::loadavg());
        let mut fan_got: Vec<Vec<FanPair>> = vec![vec![None; m]; fan_cfgs.len()];
        let mut p99_got: Vec<Option<f64>> = vec![None; m];
        for &i in &order {
            let setup = setups[i];
            for (ni, fc) in fan_cfgs.iter().enumerate() {
                let FanCfg { n, flow, cap } = *fc;
                let cfg = fanout::Cfg {
                    n,
                    senders: SENDERS,
                    flow,
                    duration: ctx.sizes.fan_duration,
                    burst: 0,
                    slow: false,
                };
                let label = format!("N = {}, {}, run {}", fc.label(), setup.label(), run + 1);
                match once(ctx, setup, cap, |a, p| {
                    fanout::run_on(Kind::Imchat, a, p, &cfg)
                }) {
                    Ok(o) if o.gen_cpu >= GEN_CPU_MAX => {
                        discarded[ni][i] += 1;
                        ctx.discard(format!(
                            "cluster fan-out {label}: the generator used {:.2} of its core ({:.2} M deliveries/s)",
                            o.gen_cpu,
                            o.rate / 1e6
                        ));
                    }
                    Ok(o) => {
                        let (im, rd) = per_delivery(&o.cpu_each, setup.servers, o.deliveries);
                        // server_cpu is every process's CPU over the run's wall time.
                        let all: f64 = o.cpu_each.iter().sum();
                        let im_secs: f64 = o.cpu_each.iter().take(setup.servers).sum();
                        let im_share = if all > 0.0 {
                            o.server_cpu * im_secs / all
                        } else {
                            0.0
                        };
                        eprintln!(
                            "  {label}: {:.3} M deliveries/s, imchat {im:.3} µs and Redis {} per delivery, generator CPU {:.0} %",
                            o.rate / 1e6,
                            rd.map_or("-".into(), |r| format!("{r:.3} µs")),
                            o.gen_cpu * 100.0
                        );
                        let mut per_thread = std::collections::BTreeMap::<String, f64>::new();
                        for (name, secs) in o.threads_each.iter().take(setup.servers).flatten() {
                            *per_thread.entry(name.clone()).or_default() += secs;
                        }
                        for (name, secs) in per_thread {
                            let us = secs / o.deliveries.max(1) as f64 * 1e6;
                            threads[ni][i].entry(name).or_default().push(us);
                        }
                        let s = &mut fan[ni][i];
                        s[0].push(o.rate);
                        s[2].push(im_share * 100.0);
                        s[3].push(im);
                        if let Some(r) = rd {
                            s[5].push(r);
                        }
                        s[6].push(o.gen_cpu * 100.0);
                        fan_got[ni][i] = Some((o.rate, im));
                    }
                    Err(e) => ctx.fail(format!("cluster fan-out {label}: {e}")),
                }
            }
            let label = format!(
                "latency N = {lat_n}, {SENDERS} × {lat_rate} msgs/s, {}, run {}",
                setup.label(),
                run + 1
            );
            match once(ctx, setup, None, |a, p| {
                latency::run_on(Kind::Imchat, a, p, &lat)
            }) {
                Ok(o) => {
                    let (im, rd) = per_delivery(&o.cpu_each, setup.servers, o.deliveries);
                    eprintln!(
                        "  {label}: p50 {:.2} ms, p99 {:.2} ms, cross-server p99 {}",
                        o.p50,
                        o.p99,
                        o.cross.map_or("-".into(), |c| format!("{:.2} ms", c.1))
                    );
                    let s = &mut lats[i];
                    s[0].push(o.p50);
                    s[1].push(o.p99);
                    if let Some((c50, c99)) = o.cross {
                        s[2].push(c50);
                        s[3].push(c99);
                    }
                    s[5].push(im);
                    if let Some(r) = rd {
                        s[6].push(r);
                    }
                    p99_got[i] = Some(o.cross.map_or(o.p99, |c| c.1));
                }
                Err(e) => ctx.fail(format!("cluster {label}: {e}")),
            }
        }
        for (ni, got) in fan_got.iter().enumerate() {
            let rates: Vec<Option<f64>> = got.iter().map(|g| g.map(|g| g.0)).collect();
            let cpus: Vec<Option<f64>> = got.iter().map(|g| g.map(|g| g.1)).collect();
            for (i, r) in paired(&rates) {
                fan[ni][i][1].push(r);
            }
            for (i, r) in paired(&cpus) {
                fan[ni][i][4].push(r);
            }
        }
        for (i, r) in paired(&p99_got) {
            lats[i][4].push(r);
        }
    }
    report(ctx, &setups, &fan_cfgs, &fan, &discarded, &lat, &lats);
    report_threads(ctx, &setups, &fan_cfgs, &threads);
}

/// CPU µs per delivery by thread name (summed over a setup's servers), a
/// series over the runs; for one setup and N.
type ByThread = std::collections::BTreeMap<String, Series>;

/// Where the imchat servers' CPU goes, per fan-out configuration: a row per
/// thread name, a column per setup.
fn report_threads(ctx: &mut Ctx, setups: &[Setup], fan_cfgs: &[FanCfg], threads: &[Vec<ByThread>]) {
    for (ni, fc) in fan_cfgs.iter().enumerate() {
        let by_setup = &threads[ni];
        // The names, those that cost most (in any setup) first; the ones
        // below 0.5 ns per delivery everywhere are left out.
        let mut names: Vec<(f64, &String)> = Vec::new();
        for t in by_setup {
            for (name, series) in t {
                let m = series.median().unwrap_or(0.0);
                match names.iter_mut().find(|(_, n)| *n == name) {
                    Some(e) => e.0 = e.0.max(m),
                    None => names.push((m, name)),
                }
            }
        }
        if names.is_empty() {
            continue;
        }
        names.retain(|(m, _)| *m >= 0.0005);
        names.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut cols = vec!["thread".to_string()];
        cols.extend(setups.iter().map(|s| s.label()));
        let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
        let mut t = Table::new(
            &format!(
                "Cluster: the imchat servers' CPU per delivery by thread, N = {}",
                fc.label()
            ),
            &cols,
        );
        for (_, name) in names {
            let mut row = vec![format!("`{name}`")];
            row.extend(
                by_setup
                    .iter()
                    .map(|t| t.get(name).map_or("—".into(), |s| s.show(micros))),
            );
            t.row(row);
        }
        t.note("CPU (user + system, from `/proc/<pid>/task/<tid>/stat`, 10 ms ticks) of each thread of every imchat server of the setup, from the start of sending to the last delivery, each thread's own difference, summed by thread name without its trailing digits (`read-c` is every connection's reader thread, `write-c` its writer when it has one), over the deliveries of the run; median (min–max) over the runs that counted. `flusher` writes the queued messages to the members' sockets; `cluster-read` reads the stream from Redis and gives its entries to the hub, which queues them for the local members; `cluster-publish` sends the local members' messages to Redis; `report` writes the console and log lines; `(threads that ended)` is what the servers used beyond the threads still there at the end (a reader thread ends after half a second without input).");
        ctx.table(t);
    }
}

/// A Redis figure: "—" for the setup without Redis.
fn no_redis(setup: Setup, s: &Series) -> String {
    if setup.redis {
        s.show(micros)
    } else {
        "—".into()
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    ctx: &mut Ctx,
    setups: &[Setup],
    fan_cfgs: &[FanCfg],
    fan: &[Vec<[Series; 7]>],
    discarded: &[Vec<usize>],
    lat: &latency::Cfg,
    lats: &[[Series; 7]],
) {
    let mut t = Table::new(
        "Cluster: fan-out throughput, 1 server alone and 1, 2 and 3 servers through one Redis",
        &[
            "N, flow",
            "servers",
            "deliveries/s",
            "scaling (/ 1 server, paired)",
            "imchat CPU (all servers)",
            "imchat CPU per delivery (all servers)",
            "/ 1 server (paired)",
            "Redis CPU per delivery",
            "generator CPU",
            "runs discarded",
            "target",
        ],
    );
    for (ni, fc) in fan_cfgs.iter().enumerate() {
        let FanCfg { n, flow, cap } = *fc;
        // Paced: every setup is given the same load; the figure is the
        // CPU it takes, and a setup that fell behind the pace is said so.
        let paced = match flow {
            fanout::Flow::Paced { per_sec, .. } => {
                Some(per_sec as f64 * SENDERS as f64 * (n - 1) as f64)
            }
            _ => None,
        };
        for (i, setup) in setups.iter().enumerate() {
            let s = &fan[ni][i];
            let held = |target: f64| match s[0].median() {
                Some(r) if r >= 0.95 * target => "held the pace".to_string(),
                Some(r) => format!("fell behind the pace ({:.0} %)", 100.0 * r / target),
                None => "no figure".to_string(),
            };
            let v = if let (Some(target), 0) = (paced, i) {
                format!("(base; {})", held(target))
            } else if i == 0 {
                "(base)".to_string()
            } else if cap.is_some() {
                // The CPU bar is the uncapped closed loop's; here the
                // question is only whether more servers deliver more.
                let more = judge(s[1].median(), true);
                if setup.servers > 1 {
                    ctx.verdict(
                        format!(
                            "cluster N = {}: {} deliver ≥ 1 server",
                            fc.label(),
                            setup.label()
                        ),
                        more.clone(),
                    );
                }
                format!("more: {more}")
            } else if let Some(target) = paced {
                let cpu = judge(s[4].median().map(|r| r / CPU_BAR), false);
                ctx.verdict(
                    format!(
                        "cluster N = {n}, {}: {} CPU per delivery ≤ {CPU_BAR}× 1 server at the same load",
                        flow.label(),
                        setup.label()
                    ),
                    cpu.clone(),
                );
                format!("{}; CPU ≤ {CPU_BAR}×: {cpu}", held(target))
            } else {
                let more = judge(s[1].median(), true);
                let cpu = judge(s[4].median().map(|r| r / CPU_BAR), false);
                if setup.servers > 1 {
                    ctx.verdict(
                        format!(
                            "cluster N = {n}, {}: {} deliver ≥ 1 server",
                            flow.label(),
                            setup.label()
                        ),
                        more.clone(),
                    );
                }
                ctx.verdict(
                    format!(
                        "cluster N = {n}, {}: {} CPU per delivery ≤ {CPU_BAR}× 1 server",
                        flow.label(),
                        setup.label()
                    ),
                    cpu.clone(),
                );
                format!("more: {more}; CPU ≤ {CPU_BAR}×: {cpu}")
            };
            t.row(vec![
                fc.label(),
                setup.label(),
                s[0].show(millions),
                s[1].show(ratio),
                s[2].show(pct),
                s[3].show(micros),
                s[4].show(ratio),
                no_redis(*setup, &s[5]),
                s[6].show(pct),
                discarded[ni][i].to_string(),
                v,
            ]);
        }
    }
    t.note("Paced (msgs/s per sender): the same closed loop, but no sender sends faster than that, so every setup is given the same work and the CPU it takes is compared at equal load, not each at its own capacity (a setup below 95 % of the pace is said to have fallen behind). Without the backlog of the closed loop, fewer messages share each write, so a delivery costs more than there: see the imchat CPU column for how near its core each setup ran.");
    t.note(format!("As scenario 1 (closed loop, {:.0} s per run): {SENDERS} of the N members send 64-byte broadcasts; member i (and so sender i) connects to server i mod the number of servers; every receiver checks every sender's order and that it got each message exactly once, and a run with any violation fails.", ctx.sizes.fan_duration.as_secs_f64()));
    t.note(format!("Capped (the last rows): the closed loop again, with every imchat server held to {:.0} % of a core by a control group of its own with a CFS quota ({} ms in every 10 ms), as a container runtime does for `--cpus`, the Redis not capped. Each server so has a fixed capacity, as on a machine of its own, and the servers together still fit on their core: this is the measurement of whether more servers deliver more. Its base is the single server held to the same share.", CAPPED.1 * 100.0, CAPPED.1 * 10.0));
    t.note("Every imchat server and the Redis run pinned to CPU 0 (the generator on CPU 1): the servers share one core, so more servers cannot add capacity here; the scaling factor shows what the cluster costs on a fixed core, and CPU per delivery (CPU seconds / deliveries, summed over the imchat servers; Redis's apart) what it would cost on more cores. A fresh Redis and fresh servers for every measurement; the setups alternate within each run (which goes first rotates), ratios are taken within a run.");
    ctx.table(t);

    let mut t = Table::new(
        &format!(
            "Cluster: latency, N = {}, {SENDERS} senders × {} msgs/s",
            lat.n, lat.rate
        ),
        &[
            "servers",
            "p50 (all)",
            "p99 (all)",
            "cross-server p50",
            "cross-server p99",
            "p99 / 1 server (paired; cross-server where there is one)",
            "imchat CPU per delivery (all servers)",
            "Redis CPU per delivery",
            "target: p99 < 2× 1 server",
        ],
    );
    for (i, setup) in setups.iter().enumerate() {
        let s = &lats[i];
        let v = if i == 0 {
            "(base)".to_string()
        } else {
            let v = judge(s[4].median().map(|r| r / P99_BAR), false);
            ctx.verdict(
                format!(
                    "cluster latency N = {}, {SENDERS} × {} msgs/s: {} p99 < {P99_BAR}× 1 server",
                    lat.n,
                    lat.rate,
                    setup.label()
                ),
                v.clone(),
            );
            v
        };
        let cross = |k: usize| {
            if setup.servers > 1 {
                s[k].show(ms)
            } else {
                "—".into()
            }
        };
        t.row(vec![
            setup.label(),
            s[0].show(ms),
            s[1].show(ms),
            cross(2),
            cross(3),
            s[4].show(ratio),
            s[5].show(micros),
            no_redis(*setup, &s[6]),
            v,
        ]);
    }
    t.note(format!("As scenario 2 ({:.1} s warm-up, then {:.0} s measured), members spread as above; cross-server = deliveries whose sender is connected to another server than the receiver. Every receiver checks order and exactly-once delivery of every sender's messages (warm-up included); a run with a violation fails.", lat.warmup.as_secs_f64(), lat.measure.as_secs_f64()));
    ctx.table(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_redis_measures_the_single_server_alone() {
        assert_eq!(setups(true, true), &SETUPS[..]);
        let alone = [Setup {
            servers: 1,
            redis: false,
        }];
        assert_eq!(setups(false, true), &alone[..]);
        assert_eq!(setups(true, false), &alone[..]);
    }

    #[test]
    fn every_room_size_is_measured_closed_then_paced() {
        use fanout::Flow::{Paced, Window};
        let got = flows(&[34, 100, 1000], 30);
        let want = vec![
            (34, Window(30)),
            (100, Window(30)),
            (1000, Window(30)),
            (
                34,
                Paced {
                    window: 30,
                    per_sec: 1_000,
                },
            ),
            (
                100,
                Paced {
                    window: 30,
                    per_sec: 1_000,
                },
            ),
            (
                1000,
                Paced {
                    window: 30,
                    per_sec: 500,
                },
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn cpu_per_delivery_sums_the_imchat_servers_and_keeps_redis_apart() {
        // Two servers (0.2 s and 0.3 s), Redis 0.1 s, over 1,000,000 deliveries.
        let (im, rd) = per_delivery(&[0.2, 0.3, 0.1], 2, 1_000_000);
        assert!((im - 0.5).abs() < 1e-12, "{im}");
        assert!((rd.unwrap() - 0.1).abs() < 1e-12);
        // A single server without Redis has no Redis figure.
        assert_eq!(per_delivery(&[0.4], 1, 1_000_000).1, None);
    }

    #[test]
    fn a_capped_fan_out_says_its_share_in_its_label() {
        let flow = fanout::Flow::Window(30);
        let plain = FanCfg {
            n: 100,
            flow,
            cap: None,
        };
        assert_eq!(plain.label(), "100, W = 30");
        let capped = FanCfg {
            cap: Some(0.25),
            ..plain
        };
        assert_eq!(
            capped.label(),
            "100, W = 30, each server capped at 25 % of a core"
        );
    }

    #[test]
    fn ratios_are_taken_against_the_base_of_the_same_run() {
        let r = paired(&[Some(2.0), None, Some(3.0), Some(1.0)]);
        assert_eq!(r, vec![(0, 1.0), (2, 1.5), (3, 0.5)]);
        // Without the base, no ratio at all.
        assert!(paired(&[None, Some(3.0)]).is_empty());
    }
}
