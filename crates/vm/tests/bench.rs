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
    tiny_guest(); // fails early, naming the packages, when they are missing
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
    // Built with the script embedded in the binary, as `quorate bench vm` does.
    let r = vm::bench::run_embedded(&opts).await.expect("bench");
    println!("{r}");
    let text = r.to_string();
    assert!(text
        .lines()
        .last()
        .unwrap()
        .starts_with("vm: migration downtime p50 "));
    assert_eq!(r.migrations.len(), runs);
    assert_eq!(r.crashes.len(), opts.crashes);
    assert!(r.boot_to_counter_ms > 0);
    assert!(r.crashes.iter().all(|c| c.ms > 0 && c.from != c.to));
    // Crashes alternate between the nodes, starting where the migrations left the guest.
    let at = if runs.is_multiple_of(2) { 1 } else { 2 };
    assert_eq!(r.crashes[0].from, at);
    assert!(r.downtime_p50_ms() <= r.total_p50_ms());
    assert!(r
        .migrations
        .iter()
        .all(|m| m.stats.transferred_bytes > 0 && m.from != m.to));
    let _ = std::fs::remove_dir_all(&dir);
}
