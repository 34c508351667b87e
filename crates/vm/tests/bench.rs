//! `vm::bench::run` end to end (boot, live migrations and crash restarts
//! between two `VmManager`s), printing what `quorate bench vm` prints.

mod common;

use common::*;

/// About 25 s under TCG; the resource tests cover the same calls. Run with
/// `VM_BENCH_RUNS=9 cargo test -p vm --test bench -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_reports_sane_figures() {
    let dir = test_dir("bench");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    tiny_guest();
    let _reaper = Reaper(vec![
        dir.join("node1/bench.pid"),
        dir.join("node2/bench.pid"),
    ]);
    let runs: usize = std::env::var("VM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut opts = vm::bench::BenchOptions::new(&dir);
    opts.migrations = runs;
    opts.crashes = 3.min(runs);
    opts.base_port = free_port();
    let r = vm::bench::run_with_script(&repo.join("scripts/guest/build-tiny-guest.sh"), &opts)
        .await
        .expect("bench");
    println!("{r}");
    let text = r.to_string();
    assert!(text
        .lines()
        .last()
        .unwrap()
        .starts_with("vm: migration downtime p50 "));
    assert_eq!(r.migrations.len(), runs);
    assert_eq!(r.crash_to_running_ms.len(), opts.crashes);
    assert!(r.boot_to_counter_ms > 0);
    assert!(r.crash_to_running_ms.iter().all(|&ms| ms > 0));
    assert!(r.downtime_p50_ms() <= r.total_p50_ms());
    assert!(r
        .migrations
        .iter()
        .all(|m| m.stats.transferred_bytes > 0 && m.from != m.to));
    let _ = std::fs::remove_dir_all(&dir);
}
