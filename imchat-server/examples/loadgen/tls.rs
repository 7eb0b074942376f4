//! The `tls` scenario: fan-out, latency and the download with TLS beside
//! plaintext, alternating run by run against the same server binary. The
//! server gets a certificate from a CA made for the run; the generator and
//! imchat-client trust that CA only (`--tls-ca`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::conn::TlsServer;
use crate::procs::{ImchatOpts, Proc};
use crate::report::{mbps, millions, ms, pct, ratio, Series, Table};
use crate::wire::Kind;
use crate::{download, fanout, latency, sys, Ctx, FILE_NAME, GEN_CPU_MAX, SENDERS};

/// The run's PKI: (CA certificate, server certificate, server key) files.
fn make_pki(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let e = |e: rcgen::Error| format!("test CA: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().map_err(e)?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .map_err(e)?
        .signed_by(&leaf_key, &issuer)
        .map_err(e)?;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    let w = |p: &Path, s: String| fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()));
    w(&ca, ca_cert.pem())?;
    w(&cert, leaf.pem())?;
    w(&key, leaf_key.serialize_pem())?;
    Ok((ca, cert, key))
}

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Starts imchat-server, with TLS or not; with TLS the generator's
/// connections to it use TLS while the returned registration lives.
fn start(
    ctx: &Ctx,
    pki: &Pki,
    tls: bool,
    rate_off: bool,
) -> Result<(Proc, Option<TlsServer>), String> {
    let extra_args = if tls {
        vec![
            "--tls-cert".into(),
            pki.cert.display().to_string(),
            "--tls-key".into(),
            pki.key.display().to_string(),
        ]
    } else {
        Vec::new()
    };
    let o = ImchatOpts {
        rate_off,
        max_clients: 20_000,
        max_queue: None,
        shared_dir: ctx.tmp.join("shared"),
        log_file: ctx.tmp.join("server.log"),
        extra_args,
    };
    let p = Proc::imchat(&ctx.bins, &o, ctx.opts.pin)?;
    let reg = tls.then(|| TlsServer::register(p.addr, pki.ca.clone()));
    Ok((p, reg))
}

fn mode(tls: bool) -> &'static str {
    if tls {
        "TLS"
    } else {
        "plaintext"
    }
}

/// Plaintext first in odd runs, TLS first in even ones.
fn order(run: usize) -> [bool; 2] {
    if run.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

pub fn scenario(ctx: &mut Ctx) {
    let pki = match make_pki(&ctx.tmp.join("tls")) {
        Ok((ca, cert, key)) => Pki { ca, cert, key },
        Err(e) => return ctx.fail(e),
    };
    fanout_pairs(ctx, &pki);
    latency_pairs(ctx, &pki);
    download_triples(ctx, &pki);
}

fn fanout_pairs(ctx: &mut Ctx, pki: &Pki) {
    let mut t = Table::new(
        "TLS beside plaintext: fan-out throughput (deliveries per second)",
        &[
            "N, flow",
            "plaintext",
            "TLS",
            "TLS / plaintext (paired)",
            "server CPU (plain / TLS)",
            "generator CPU (plain / TLS)",
            "runs discarded (generator ≥ 0.8 core; plain / TLS)",
        ],
    );
    for w in [10, 30] {
        let cfg = fanout::Cfg {
            n: 100,
            senders: SENDERS,
            flow: fanout::Flow::Window(w),
            duration: ctx.sizes.fan_duration,
            burst: 0,
            slow: false,
        };
        // Per mode (plain, TLS): rate, server CPU, generator CPU.
        let mut f: [[Series; 3]; 2] = Default::default();
        let mut pair = Series::default();
        let mut discarded = [0usize; 2];
        for run in 0..ctx.opts.runs {
            let label = format!("N = 100, {}, run {}", cfg.flow.label(), run + 1);
            eprintln!("tls fanout {label} (load average {})", sys::loadavg());
            let mut rate = [None, None];
            for tls in order(run) {
                let i = usize::from(tls);
                let r = start(ctx, pki, tls, true).and_then(|(p, reg)| {
                    let r = fanout::run(Kind::Imchat, p.addr, p.pid, &cfg);
                    drop(reg);
                    p.stop();
                    r
                });
                match r {
                    Ok(o) => {
                        eprintln!(
                            "  {}: {:.3} M deliveries/s (server CPU {:.0} %, generator CPU {:.0} %)",
                            mode(tls),
                            o.rate / 1e6,
                            o.server_cpu * 100.0,
                            o.gen_cpu * 100.0
                        );
                        f[i][1].push(o.server_cpu * 100.0);
                        f[i][2].push(o.gen_cpu * 100.0);
                        if o.gen_cpu >= GEN_CPU_MAX {
                            discarded[i] += 1;
                            ctx.discard(format!(
                                "tls scenario, {} fan-out {label}: generator at {:.0} % of its core",
                                mode(tls),
                                o.gen_cpu * 100.0
                            ));
                        } else {
                            f[i][0].push(o.rate);
                            rate[i] = Some(o.rate);
                        }
                    }
                    Err(e) => ctx.fail(format!("tls scenario, {} fan-out {label}: {e}", mode(tls))),
                }
            }
            if let [Some(plain), Some(tls)] = rate {
                pair.push(tls / plain);
            }
        }
        t.row(vec![
            format!("100, {}", cfg.flow.label()),
            f[0][0].show(millions),
            f[1][0].show(millions),
            pair.show(ratio),
            format!("{} / {}", f[0][1].show(pct), f[1][1].show(pct)),
            format!("{} / {}", f[0][2].show(pct), f[1][2].show(pct)),
            format!("{} / {}", discarded[0], discarded[1]),
        ]);
    }
    t.note("Both columns are imchat-server, run after run (which goes first alternates), the same flags but `--tls-cert/--tls-key` (a certificate from a CA made for the run). The generator's members speak TLS through imchat-core's client stream (rustls, ring), handshake done before the run, and pay for decrypting every delivery themselves: a run in which the generator used 0.8 of its core or more is discarded.");
    ctx.table(t);
}

fn latency_pairs(ctx: &mut Ctx, pki: &Pki) {
    let mut t = Table::new(
        "TLS beside plaintext: fan-out latency (N = 100, 10 senders)",
        &[
            "rate per sender",
            "mode",
            "p50",
            "p99",
            "p99.9",
            "max",
            "server CPU",
            "generator CPU",
        ],
    );
    for rate in [100u32, 500] {
        let cfg = latency::Cfg {
            n: 100,
            senders: SENDERS,
            rate,
            warmup: ctx.sizes.lat_warmup,
            measure: ctx.sizes.lat_measure,
        };
        // Per mode: p50, p99, p99.9, max, server CPU, generator CPU.
        let mut f: [[Series; 6]; 2] = Default::default();
        for run in 0..ctx.opts.runs {
            let label = format!("N = 100, {rate} msg/s per sender, run {}", run + 1);
            eprintln!("tls latency {label} (load average {})", sys::loadavg());
            for tls in order(run) {
                let i = usize::from(tls);
                let gen0 = sys::self_cpu_secs();
                let wall0 = Instant::now();
                let r = start(ctx, pki, tls, true).and_then(|(p, reg)| {
                    let r = latency::run(Kind::Imchat, p.addr, p.pid, &cfg);
                    drop(reg);
                    p.stop();
                    r
                });
                let gen_cpu = (sys::self_cpu_secs() - gen0) / wall0.elapsed().as_secs_f64();
                match r {
                    Ok(o) => {
                        eprintln!(
                            "  {}: p50 {:.3} ms, p99 {:.3} ms (generator CPU {:.0} %)",
                            mode(tls),
                            o.p50,
                            o.p99,
                            gen_cpu * 100.0
                        );
                        for (s, v) in f[i].iter_mut().zip([
                            o.p50,
                            o.p99,
                            o.p999,
                            o.max,
                            o.server_cpu * 100.0,
                            gen_cpu * 100.0,
                        ]) {
                            s.push(v);
                        }
                    }
                    Err(e) => ctx.fail(format!("tls scenario, {} latency {label}: {e}", mode(tls))),
                }
            }
        }
        for (i, tls) in [false, true].into_iter().enumerate() {
            t.row(vec![
                format!("{rate} msg/s"),
                mode(tls).into(),
                f[i][0].show(ms),
                f[i][1].show(ms),
                f[i][2].show(ms),
                f[i][3].show(ms),
                f[i][4].show(pct),
                f[i][5].show(pct),
            ]);
        }
    }
    t.note("Latency = arrival − the send timestamp in the message, every delivery of the measured window. Generator CPU is over the whole run (joining included), so it overstates the measured window's share.");
    ctx.table(t);
}

fn download_triples(ctx: &mut Ctx, pki: &Pki) {
    let size = ctx.sizes.file_size;
    let gib = size as f64 / f64::from(1u32 << 30);
    let src = ctx.tmp.join("shared").join(FILE_NAME);
    let dl = ctx.tmp.join("downloads");
    let _ = fs::create_dir_all(&dl);
    let ca = pki.ca.display().to_string();
    let tls_args = ["--tls", "--tls-ca", ca.as_str()];
    // MB/s, sending CPU s/GiB, receiving CPU s/GiB: raw, plaintext, TLS.
    let mut f: [[Series; 3]; 3] = Default::default();
    // Paired: plain / raw, TLS / raw, TLS / plain (wall).
    let mut pairs: [Series; 3] = Default::default();
    let runs = ctx.opts.download_runs.unwrap_or(ctx.sizes.download_runs);
    for run in 0..runs {
        eprintln!(
            "tls download {} MiB, run {} (load average {})",
            size >> 20,
            run + 1,
            sys::loadavg()
        );
        let mut secs = [None; 3];
        // Rotate which of the three goes first; each starts after a `sync`.
        for k in 0..3 {
            let which = (run + k) % 3;
            sys::sync_disks();
            let r = if which == 0 {
                let dst = ctx.tmp.join("raw-copy.bin");
                let r = download::raw_copy(&src, &dst, ctx.opts.pin);
                let _ = fs::remove_file(&dst);
                r.map(|c| (c.secs, c.sender_cpu, c.receiver_cpu))
                    .map_err(|e| e.to_string())
            } else {
                let tls = which == 2;
                let args: &[&str] = if tls { &tls_args } else { &[] };
                start(ctx, pki, tls, false).and_then(|(p, reg)| {
                    let r = download::client_download_with(
                        &ctx.bins, p.addr, p.pid, FILE_NAME, size, &dl, args,
                    );
                    drop(reg);
                    p.stop();
                    r.map(|d| (d.secs, d.server_cpu, d.client_cpu))
                })
            };
            let name = ["raw copy", "plaintext", "TLS"][which];
            match r {
                Ok((s, send, recv)) => {
                    eprintln!(
                        "  {name}: {:.0} MB/s, sending side {send:.3} s CPU, receiving side {recv:.3} s CPU",
                        size as f64 / s / 1e6
                    );
                    f[which][0].push(size as f64 / s / 1e6);
                    f[which][1].push(send / gib);
                    f[which][2].push(recv / gib);
                    secs[which] = Some(s);
                }
                Err(e) => ctx.fail(format!(
                    "tls scenario, {name} download, run {}: {e}",
                    run + 1
                )),
            }
        }
        for (p, (a, b)) in pairs.iter_mut().zip([(0, 1), (0, 2), (1, 2)]) {
            if let (Some(x), Some(y)) = (secs[a], secs[b]) {
                p.push(x / y);
            }
        }
    }
    let mut t = Table::new(
        &format!(
            "TLS beside plaintext: a {} MiB download to disk, {runs} rotated runs",
            size >> 20
        ),
        &[
            "transfer",
            "throughput (wall)",
            "vs raw copy (paired, wall)",
            "vs plaintext imchat (paired, wall)",
            "sending side CPU per GiB",
            "receiving side CPU per GiB",
        ],
    );
    let cpu = |v: f64| format!("{v:.3} s");
    let rows = [
        ("raw TCP copy (sendfile → read/write)", "1".to_string(), ""),
        (
            "imchat plaintext (sendfile path)",
            pairs[0].show(ratio),
            "1",
        ),
        ("imchat TLS (`--tls --tls-ca`)", pairs[1].show(ratio), ""),
    ];
    for (i, (name, vs_raw, vs_plain)) in rows.into_iter().enumerate() {
        t.row(vec![
            name.into(),
            f[i][0].show(mbps),
            vs_raw,
            if i == 2 {
                pairs[2].show(ratio)
            } else {
                vs_plain.into()
            },
            f[i][1].show(cpu),
            f[i][2].show(cpu),
        ]);
    }
    t.note("The real imchat-client in piped mode (`/download`, timed to its `*** downloaded` line), against imchat-server without and with `--tls-cert/--tls-key`; the raw copy as in the download scenario. The three transfers rotate (which goes first changes every run), each after a `sync`. Sending side: the raw sender thread or the server process; receiving side: the raw receiver thread or the client process. MB = 10^6 bytes.");
    ctx.table(t);
}
