//! The benchmark runs end to end on tiny sizes (numbers are not asserted, only that every row exists
//! and the summary line has the promised shape).

#[test]
fn bench_runs_and_prints_the_summary_line() {
    let dir = std::env::temp_dir().join(format!("replica-bench-{}", std::process::id()));
    let mut cfg = replica::bench::BenchConfig::new(dir.clone());
    cfg.size = 16 << 20;
    cfg.seq_bytes = 16 << 20;
    cfg.rand_ops = 50;
    let r = replica::bench::run(&cfg).unwrap();
    let text = r.to_string();
    eprintln!("{text}");
    assert!(!r.modes.is_empty(), "{text}");
    for m in &r.modes {
        assert!(m.rows.len() >= 3, "{text}");
        for row in &m.rows {
            assert!(row.seq_mb_s > 0.0 && row.fua_p50_us > 0.0, "{text}");
        }
        assert!(
            m.resync_mb_s > 0.0 && m.rtt_us > 0.0 && m.send_us_per_mib > 0.0,
            "{text}"
        );
        // Every round compared protocol C with the unreplicated export, and the stages saw the
        // writes on both nodes.
        assert_eq!(m.rounds.len(), cfg.rounds, "{text}");
        let seq_writes: u64 = m.stages[0].1.request.count;
        assert_eq!(seq_writes, cfg.rounds as u64 * 16, "{text}");
        assert_eq!(m.stages[0].2.disk_write.count, seq_writes, "{text}");
    }
    // This machine kind has two cores and /dev/shm: both placements ran, split one first in the
    // summary.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert_eq!(r.modes.len(), 2, "{text}");
        assert!(
            text.contains("(nodes on separate cores and disks; nodes sharing cores and disk: "),
            "{text}"
        );
    }
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("replica: protocol C at ")
            && last.contains("% of unreplicated MB/s; 4k FUA p50 ")
            && last.ends_with(" us)"),
        "{last}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Full-size run for numbers: `cargo test --release -p replica --test bench -- --ignored --nocapture`
/// (`BENCH_MB` sets the volume and sequential size, default 256).
#[test]
#[ignore]
fn bench_full() {
    let mb: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    // `BENCH_DIR=/dev/shm` isolates software overhead from the disk's fsync latency.
    let base = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("replica-bench-full-{}", std::process::id()));
    let mut cfg = replica::bench::BenchConfig::new(dir.clone());
    cfg.size = mb << 20;
    cfg.seq_bytes = mb << 20;
    println!("{}", replica::bench::run(&cfg).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
