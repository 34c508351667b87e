//! `vm::bench::run` end to end (boot, crash restart, 3 live migrations).

mod common;

use common::*;

/// About 20 s under TCG; the migration tests cover the same calls. Run with
/// `VM_BENCH_RUNS=9 cargo test -p vm --test bench -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_reports_sane_figures() {
    let dir = test_dir("bench");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tiny = vm::TinyGuest::build(
        &repo.join("scripts/guest/build-tiny-guest.sh"),
        &tiny_guest(),
    )
    .unwrap();
    let _reaper = Reaper(vec![dir.join("bench-a.pid"), dir.join("bench-b.pid")]);
    let base = free_port();
    let runs: usize = std::env::var("VM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let r = vm::bench::run(&tiny, &dir, auto_accel(), runs, base)
        .await
        .expect("bench");
    for m in &r.migrations {
        eprintln!(
            "vm-measure: bench migration total {} ms downtime {} ms",
            m.total_time_ms, m.downtime_ms
        );
    }
    eprintln!(
        "vm-measure: bench boot {} ms, restart {} ms, downtime p50 {} ms, total p50 {} ms, accel {}",
        r.boot_to_counter_ms,
        r.restart_to_counter_ms,
        r.downtime_p50_ms(),
        r.total_p50_ms(),
        r.accel.accel.as_str()
    );
    assert_eq!(r.migrations.len(), runs);
    assert!(r.boot_to_counter_ms > 0 && r.restart_to_counter_ms > 0);
    assert!(r.downtime_p50_ms() <= r.total_p50_ms());
    assert!(r.migrations.iter().all(|m| m.transferred_bytes > 0));
    let _ = std::fs::remove_dir_all(&dir);
}
