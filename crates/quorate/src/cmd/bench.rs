//! `quorate bench ...`: performance evidence, printed as tables.
//!
//! `failover` and `fence` run real clusters: three `quorate node` processes,
//! each in its own network namespace (the demo's layout), fenced through the
//! virtual power switch, which fences at once. Each run boots the cluster,
//! SIGKILLs the node running the service, and reads the survivors' event logs
//! (wall-clock stamps written by the nodes themselves) for when the new
//! membership was installed, when the victim was fenced, and when the service
//! was running again. Medians, because the machine is shared and noisy.
//!
//! `vm` and `replica` print the vm and replica crates' benchmarks.

use super::demo::Demo;
use super::{err, out};
use crate::cli::{BenchCmd, EXIT_FAIL, EXIT_OK};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

/// One failover, in seconds after the SIGKILL.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Resident memory of the nodes before the crash, MiB (median of the nodes).
    rss_mib: f64,
    detected: f64,
    fenced: f64,
    running: f64,
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn first_after(log: &serde_json::Value, since: f64, pred: impl Fn(&str) -> bool) -> Option<f64> {
    log.as_array()?
        .iter()
        .filter_map(|e| Some((e["at"].as_f64()?, e["text"].as_str()?)))
        .filter(|(at, text)| *at >= since && pred(text))
        .map(|(at, _)| at)
        .reduce(f64::min)
}

/// Boot a 3-node cluster at `token_ms`, crash the service's node, measure.
fn one_run(dir: &std::path::Path, token_ms: u32) -> Result<Run, String> {
    let names = ["node1", "node2", "node3"];
    let d = Demo::start(true, dir, &names, token_ms, false)?;
    let r = (|| {
        let owner = d.boot(Duration::from_secs(60))?;
        // Let the ring settle after the start-up storm.
        std::thread::sleep(Duration::from_millis(500));
        let rss: Vec<f64> = (0..3)
            .filter_map(|i| d.c.rss_kib(i))
            .map(|k| k as f64 / 1024.0)
            .collect();
        let killed = wall();
        d.c.crash(owner)?;
        let start = Instant::now();
        let survivors: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
        loop {
            let moved =
                d.c.holders(super::demo::FLOATING_IP)
                    .iter()
                    .any(|h| survivors.contains(h))
                    && survivors.iter().any(|s| {
                        d.c.ask(*s, "status")
                            .is_some_and(|v| v["services"][0]["state"] == "Started")
                    });
            if moved && d.c.is_off(owner) {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("no failover within 60 s at token {token_ms} ms"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut run = Run {
            rss_mib: p50(&rss),
            detected: f64::NAN,
            fenced: f64::NAN,
            running: f64::NAN,
        };
        for s in &survivors {
            let Some(log) = d.c.ask(*s, "log") else {
                continue;
            };
            let victim = &names[owner];
            if let Some(t) = first_after(&log, killed, |x| {
                x.starts_with("membership:") && x.contains(&format!("lost {victim}"))
            }) {
                run.detected = if run.detected.is_nan() {
                    t - killed
                } else {
                    run.detected.min(t - killed)
                };
            }
            if let Some(t) = first_after(&log, killed, |x| {
                x.contains(&format!("fence: {victim} fenced by"))
            }) {
                run.fenced = if run.fenced.is_nan() {
                    t - killed
                } else {
                    run.fenced.min(t - killed)
                };
            }
            if let Some(t) = first_after(&log, killed, |x| {
                x.starts_with("rm: web op") && x.contains("StartOk")
            }) {
                run.running = t - killed;
            }
        }
        if run.running.is_nan() || run.fenced.is_nan() {
            return Err("a survivor's log does not show the fencing and the restart".into());
        }
        if run.running < run.fenced {
            return Err(format!(
                "the service started {:.3} s before its node was fenced: a safety violation",
                run.fenced - run.running
            ));
        }
        Ok(run)
    })();
    drop(d);
    r
}

fn cluster_runs(tokens: &[u32], runs: u32) -> Result<Vec<(u32, Vec<Run>)>, String> {
    let base = std::env::temp_dir().join(format!("quorate-bench-{}", std::process::id()));
    let mut all = Vec::new();
    for &token in tokens {
        let mut v = Vec::new();
        for k in 0..runs {
            let dir = base.join(format!("t{token}-r{k}"));
            let r = one_run(&dir, token)?;
            if super::is_terminal() {
                err(&format!(
                    "\rtoken {token} ms: run {}/{runs}: fenced {:.3} s, running {:.3} s   ",
                    k + 1,
                    r.fenced,
                    r.running
                ));
            }
            v.push(r);
            let _ = std::fs::remove_dir_all(&dir);
        }
        if super::is_terminal() {
            err("\n");
        }
        all.push((token, v));
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(all)
}

fn table(all: &[(u32, Vec<Run>)]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>8}  {:>4}  {:>14}  {:>14}  {:>14}  {:>10}  {:>10}",
        "token ms",
        "runs",
        "detect p50 s",
        "fenced p50 s",
        "running p50 s",
        "run min s",
        "run max s"
    );
    for (token, runs) in all {
        let det: Vec<f64> = runs
            .iter()
            .map(|r| r.detected)
            .filter(|x| x.is_finite())
            .collect();
        let fen: Vec<f64> = runs.iter().map(|r| r.fenced).collect();
        let run: Vec<f64> = runs.iter().map(|r| r.running).collect();
        let rss: Vec<f64> = runs
            .iter()
            .map(|r| r.rss_mib)
            .filter(|x| x.is_finite())
            .collect();
        let _ = writeln!(
            t,
            "{:>8}  {:>4}  {:>14.3}  {:>14.3}  {:>14.3}  {:>10.3}  {:>10.3}  {:>12.1}",
            token,
            runs.len(),
            p50(&det),
            p50(&fen),
            p50(&run),
            run.iter().copied().fold(f64::INFINITY, f64::min),
            run.iter().copied().fold(0.0, f64::max),
            p50(&rss)
        );
    }
    t
}

/// Full-load runs, and half-load runs, per cluster size; the table shows
/// their medians.
const TOTEM_LOAD_RUNS: usize = 3;

/// One cluster size's throughput and latency.
#[derive(Clone, Copy, Debug)]
struct TotemLoad {
    /// Ordered msgs/s at the slowest receiver (median of the full-load runs).
    rate: f64,
    /// CPU time of all nodes together per ordered message, us (median).
    cpu_us: f64,
    /// Latency at half load, us (worst node; median of the paced runs).
    p50_us: u64,
    p99_us: u64,
}

/// Throughput of one run: messages over the span from first to last
/// delivery, at the slowest receiver.
fn delivery_rate(stats: &[serde_json::Value], count: u64) -> f64 {
    stats
        .iter()
        .map(|v| {
            let span = v["last_ns"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(v["first_ns"].as_u64().unwrap_or(0));
            count as f64 / (span.max(1) as f64 / 1e9)
        })
        .fold(f64::INFINITY, f64::min)
}

/// CPU microseconds all nodes spent per ordered message (NaN without procfs).
fn cpu_per_msg_us(stats: &[serde_json::Value], count: u64) -> f64 {
    let cpu: Option<u64> = stats.iter().map(|v| v["cpu_ns"].as_u64()).sum();
    cpu.map_or(f64::NAN, |c| c as f64 / 1e3 / count.max(1) as f64)
}

/// Ordered 1 KiB messages through a cluster of `n` nodes: full load
/// [`TOTEM_LOAD_RUNS`] times (every node sends its share), then half of that
/// rate paced, as many times, for the latency.
fn totem_load(n: usize, count: u64) -> Result<TotemLoad, String> {
    let base = std::env::temp_dir().join(format!("quorate-bench-totem-{}-{n}", std::process::id()));
    let names: Vec<String> = (1..=n).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = Demo::start(true, &base, &refs, 1000, false)?;
    let r = (|| {
        d.boot(Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(500));
        let run = |count: u64, rate: u64| -> Result<(u64, Vec<serde_json::Value>), String> {
            for i in 0..n {
                d.c.ask_with(i, "load.reset", serde_json::Value::Null)?;
            }
            // Every node sends its share, as applications on every node would.
            let share = count / n as u64;
            for i in 0..n {
                d.c.ask_with(
                    i,
                    "load.start",
                    serde_json::json!({"count": share, "size": 1024, "rate": rate / n as u64}),
                )?;
            }
            let count = share * n as u64;
            d.c.wait(
                "every node to deliver the load",
                Duration::from_secs(120),
                |c| (0..n).all(|i| c.ask(i, "load.stats").is_some_and(|v| v["count"] == count)),
            )?;
            Ok((
                count,
                (0..n).filter_map(|i| d.c.ask(i, "load.stats")).collect(),
            ))
        };
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..TOTEM_LOAD_RUNS {
            let (count, full) = run(count, 0)?;
            rates.push(delivery_rate(&full, count));
            cpus.push(cpu_per_msg_us(&full, count));
        }
        let rate = p50(&rates);
        let half = ((rate / 2.0) as u64).max(1);
        // latency: the worst node's percentile, median over as many paced runs
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for _ in 0..TOTEM_LOAD_RUNS {
            let (_, paced) = run((half * 3).clamp(n as u64, count), half.max(n as u64))?;
            let worst = |key: &str| {
                paced
                    .iter()
                    .filter_map(|v| v[key].as_u64())
                    .max()
                    .unwrap_or(0) as f64
            };
            p50s.push(worst("latency_p50_us"));
            p99s.push(worst("latency_p99_us"));
        }
        Ok(TotemLoad {
            rate,
            cpu_us: p50(&cpus),
            p50_us: p50(&p50s) as u64,
            p99_us: p50(&p99s) as u64,
        })
    })();
    drop(d);
    let _ = std::fs::remove_dir_all(&base);
    r
}

/// `quorate bench ...`.
pub fn run(cmd: BenchCmd) -> u8 {
    match cmd {
        BenchCmd::Failover { .. } | BenchCmd::Fence { .. } | BenchCmd::Totem { .. }
            if netlab::check_prerequisites().is_err() =>
        {
            err("quorate bench: this benchmark runs nodes in network namespaces: run it as root\n");
            EXIT_FAIL
        }
        BenchCmd::Failover { runs, tokens } => match cluster_runs(&tokens, runs) {
            Ok(all) => {
                out("failover on 3 nodes in namespaces: SIGKILL of the service's node -> new ring -> fenced (power switch) -> service running on a survivor\n");
                out(&table(&all));
                for (token, r) in &all {
                    let run: Vec<f64> = r.iter().map(|r| r.running).collect();
                    out(&format!(
                        "failover: p50 {:.2} s over {} runs at token {token} ms\n",
                        p50(&run),
                        r.len()
                    ));
                }
                EXIT_OK
            }
            Err(e) => {
                err(&format!("quorate bench failover: {e}\n"));
                EXIT_FAIL
            }
        },
        BenchCmd::Fence { runs, tokens } => match cluster_runs(&tokens, runs) {
            Ok(all) => {
                out("fencing on 3 nodes in namespaces: SIGKILL of a node -> fenced through fence_quorate by the lowest survivor\n");
                out(&table(&all));
                for (token, r) in &all {
                    let fen: Vec<f64> = r.iter().map(|r| r.fenced).collect();
                    out(&format!(
                        "fence: death to fenced p50 {:.2} s over {} runs at token {token} ms\n",
                        p50(&fen),
                        r.len()
                    ));
                }
                EXIT_OK
            }
            Err(e) => {
                err(&format!("quorate bench fence: {e}\n"));
                EXIT_FAIL
            }
        },
        BenchCmd::Totem { count, runs } => {
            out(&format!(
                "totem: every node multicasts 1 KiB messages, each in its own namespace ({} build); \
                 msgs/s, cpu (all nodes' CPU time per message) and latency (worst node) are medians of {TOTEM_LOAD_RUNS} runs\n",
                if cfg!(debug_assertions) { "debug" } else { "release" }
            ));
            out(&format!(
                "{:>5}  {:>10}  {:>8}  {:>12}  {:>14}  {:>14}\n",
                "nodes", "msgs/s", "MB/s", "cpu us/msg", "p50 us (half)", "p99 us (half)"
            ));
            let mut three = 0.0;
            for n in [2usize, 3, 5] {
                match totem_load(n, count) {
                    Ok(l) => {
                        if n == 3 {
                            three = l.rate;
                        }
                        out(&format!(
                            "{n:>5}  {:>10.0}  {:>8.1}  {:>12.1}  {:>14}  {:>14}\n",
                            l.rate,
                            l.rate * 1024.0 / 1e6,
                            l.cpu_us,
                            l.p50_us,
                            l.p99_us
                        ));
                    }
                    Err(e) => {
                        err(&format!("quorate bench totem: {n} nodes: {e}\n"));
                        return EXIT_FAIL;
                    }
                }
            }
            match cluster_runs(&[300, 1000], runs) {
                Ok(all) => {
                    out("failure detection: SIGKILL of a node to the survivors installing the new ring (3 nodes)\n");
                    out(&table(&all));
                    let det300: Vec<f64> = all[0]
                        .1
                        .iter()
                        .map(|r| r.detected)
                        .filter(|x| x.is_finite())
                        .collect();
                    out(&format!(
                        "totem: {three:.0} msgs/s 1KiB on 3 nodes; detection p50 {:.0} ms at token 300\n",
                        p50(&det300) * 1000.0
                    ));
                    EXIT_OK
                }
                Err(e) => {
                    err(&format!("quorate bench totem: {e}\n"));
                    EXIT_FAIL
                }
            }
        }
        BenchCmd::Vm { runs } => {
            let dir = std::env::temp_dir().join(format!("quorate-bench-vm-{}", std::process::id()));
            let mut opts = vm::bench::BenchOptions::new(&dir);
            if let Some(r) = runs {
                opts.migrations = r;
            }
            let Some(rt) = super::runtime() else {
                return EXIT_FAIL;
            };
            let r = rt.block_on(vm::bench::run_embedded(&opts));
            let _ = std::fs::remove_dir_all(&dir);
            match r {
                Ok(report) => {
                    out(&format!("{report}\n"));
                    EXIT_OK
                }
                Err(e) => {
                    err(&format!("quorate bench vm: {e}\n"));
                    EXIT_FAIL
                }
            }
        }
        BenchCmd::Replica { dir } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("quorate-bench-replica-{}", std::process::id()))
            });
            if let Err(e) = std::fs::create_dir_all(&dir) {
                err(&format!("quorate bench replica: {}: {e}\n", dir.display()));
                return EXIT_FAIL;
            }
            let r = replica::bench::run(&replica::bench::BenchConfig::new(dir.clone()));
            // The bench removes its files; the folder goes too if nothing else is in it.
            let _ = std::fs::remove_dir(&dir);
            match r {
                Ok(report) => {
                    out(&format!("{report}\n"));
                    EXIT_OK
                }
                Err(e) => {
                    err(&format!("quorate bench replica: {e}\n"));
                    EXIT_FAIL
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(p50(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(p50(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(p50(&[]).is_nan());
    }

    #[test]
    fn rate_is_the_slowest_receivers_and_cpu_is_summed_per_message() {
        let stats = vec![
            serde_json::json!({"first_ns": 0, "last_ns": 1_000_000_000u64, "cpu_ns": 3_000_000u64}),
            serde_json::json!({"first_ns": 0, "last_ns": 2_000_000_000u64, "cpu_ns": 1_000_000u64}),
        ];
        assert_eq!(delivery_rate(&stats, 1000), 500.0);
        assert_eq!(cpu_per_msg_us(&stats, 1000), 4.0);
        let no_procfs = vec![serde_json::json!({"first_ns": 0, "last_ns": 1})];
        assert!(cpu_per_msg_us(&no_procfs, 1000).is_nan());
    }

    #[test]
    fn log_search_takes_the_first_matching_line_after_the_kill() {
        let log = serde_json::json!([
            {"at": 10.0, "text": "membership: ring 1/4 members [a, b], lost c"},
            {"at": 12.5, "text": "membership: ring 1/8 members [a], lost b"},
            {"at": 12.9, "text": "fence: b fenced by a with method power (device pdu)"}
        ]);
        assert_eq!(
            first_after(&log, 11.0, |t| t.starts_with("membership:")),
            Some(12.5)
        );
        assert_eq!(
            first_after(&log, 11.0, |t| t.contains("b fenced by")),
            Some(12.9)
        );
        assert_eq!(first_after(&log, 13.0, |t| t.contains("fenced")), None);
    }
}
