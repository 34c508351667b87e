//! Live and pause migration between two real QEMU processes on loopback, and
//! failed migrations that must leave the guest running on the source.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use vm::{Guest, GuestState, MigrationMode, MigrationSettings, StopOutcome, VmError};

fn settings(mode: MigrationMode) -> MigrationSettings {
    MigrationSettings {
        listen_address: "127.0.0.1".into(),
        port: free_port(),
        downtime_limit_ms: 100,
        max_bandwidth: 1 << 30,
        timeout_ms: 120_000,
        connect_timeout_ms: 0,
        mode,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_pause_migration_keep_the_guest_counting() {
    let dir = test_dir("mig");
    let disk = blank_disk(&dir);
    let a = guest_def("mig-a", &dir, &disk);
    let b = guest_def("mig-b", &dir, &disk);
    let _reaper = Reaper(vec![a.pidfile.clone(), b.pidfile.clone()]);
    let accel = auto_accel();

    let mut src = Guest::start(a.clone(), accel.clone())
        .await
        .expect("start source");
    wait_counter_above(&a.serial_log, 5, Duration::from_secs(60));

    let runs = [
        (MigrationMode::Live, &b),
        (MigrationMode::Live, &a),
        (MigrationMode::Live, &b),
        (MigrationMode::Pause, &a),
    ];
    let mut downtimes = Vec::new();
    let mut totals = Vec::new();
    for (i, (mode, to)) in runs.into_iter().enumerate() {
        let from_log = src.def().serial_log.clone();
        let s = settings(mode);
        let mut polls = 0u32;
        let t = Instant::now();
        let (mut dst, stats) = src
            .migrate_to_local(to.clone(), &s, |p| {
                polls += 1;
                assert!(p.transferred <= p.total.max(p.transferred));
            })
            .await
            .unwrap_or_else(|e| panic!("migration {i} ({mode:?}) failed: {e}"));
        let wall = t.elapsed();
        eprintln!(
            "vm-measure: migration {i} {mode:?}: total {} ms, downtime {} ms, setup {} ms, {} bytes, {:.0} Mbit/s, {} passes, wall incl. target start {} ms",
            stats.total_time_ms, stats.downtime_ms, stats.setup_time_ms, stats.transferred_bytes, stats.mbps, stats.dirty_sync_count, wall.as_millis()
        );
        assert!(polls >= 1);
        assert!(stats.ram_total_bytes >= 128 << 20, "{stats:?}");
        assert!(
            stats.transferred_bytes > 0 && stats.total_time_ms > 0,
            "{stats:?}"
        );
        assert!(stats.total_time_ms <= stats.wall_ms + 1000, "{stats:?}");
        if mode == MigrationMode::Live {
            assert!(stats.downtime_ms < 2000, "downtime {stats:?}");
            downtimes.push(stats.downtime_ms as f64);
            totals.push(stats.total_time_ms as f64);
        }
        // The source is parked in postmigrate; the target runs and keeps counting.
        assert_eq!(src.status().await.run_state.as_deref(), Some("postmigrate"));
        let last_src = counters(&from_log).last().copied().unwrap_or(0);
        src.quit().await;
        assert_eq!(dst.status().await.state, GuestState::Running);
        let seen = wait_counter_above(&dst.def().serial_log, last_src + 3, Duration::from_secs(30));
        assert!(seen > last_src);
        src = dst;
    }
    eprintln!(
        "vm-measure: live migration downtime p50 {} ms, total p50 {} ms over {} runs (accel {})",
        p50(downtimes),
        p50(totals),
        3,
        src.accel().accel.as_str()
    );
    src.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migrations_leave_the_guest_on_the_source() {
    let dir = test_dir("abort");
    let disk = blank_disk(&dir);
    let a = guest_def("abort-a", &dir, &disk);
    let b = guest_def("abort-b", &dir, &disk);
    let _reaper = Reaper(vec![a.pidfile.clone(), b.pidfile.clone()]);
    let accel = auto_accel();
    let mut src = Guest::start(a.clone(), accel.clone())
        .await
        .expect("start source");
    wait_counter_above(&a.serial_log, 3, Duration::from_secs(60));

    // 1. The target dies mid-way (slow link so the copy takes long).
    let mut s = settings(MigrationMode::Live);
    s.max_bandwidth = 64 * 1024;
    let uri = format!("tcp:127.0.0.1:{}", s.port);
    let dst = Guest::start_incoming(b.clone(), accel.clone(), &uri)
        .await
        .expect("target");
    let sent = AtomicU64::new(0);
    let killer = async {
        let t = Instant::now();
        while sent.load(Ordering::Relaxed) == 0 || t.elapsed() < Duration::from_millis(1500) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "migration never made progress"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dst.kill().await;
    };
    let (res, ()) = tokio::join!(
        src.migrate_to(&uri, &s, |p| sent
            .store(p.transferred.max(1), Ordering::Relaxed)),
        killer
    );
    match res {
        Err(VmError::Migration { reason, last, .. }) => {
            eprintln!("vm-measure: target killed: {reason}; last progress {last:?}");
            assert!(last.is_some());
        }
        other => panic!("migration to a killed target must fail, got {other:?}"),
    }
    let st = src.status().await;
    assert_eq!(st.state, GuestState::Running, "{st:?}");
    let c = counters(&a.serial_log).last().copied().unwrap();
    wait_counter_above(&a.serial_log, c + 2, Duration::from_secs(20));
    dst.quit().await;

    // 2. A migration that outlives its timeout is cancelled; pause mode resumes the source.
    let mut s = settings(MigrationMode::Pause);
    s.max_bandwidth = 64 * 1024;
    s.timeout_ms = 1500;
    let uri = format!("tcp:127.0.0.1:{}", s.port);
    let dst = Guest::start_incoming(b.clone(), accel.clone(), &uri)
        .await
        .expect("target");
    match src.migrate_to(&uri, &s, |_| {}).await {
        Err(VmError::Migration { reason, .. }) => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(src.status().await.state, GuestState::Running);
    let c = counters(&a.serial_log).last().copied().unwrap();
    wait_counter_above(&a.serial_log, c + 2, Duration::from_secs(20));
    dst.quit().await;

    // 3. Nobody listens: the migrate command fails at once, the guest keeps running.
    let s = settings(MigrationMode::Live);
    let uri = format!("tcp:127.0.0.1:{}", s.port);
    assert!(matches!(
        src.migrate_to(&uri, &s, |_| {}).await,
        Err(VmError::Migration { .. })
    ));
    assert_eq!(src.status().await.state, GuestState::Running);

    // A guest that does not power off in time is ended with `quit`.
    assert_eq!(src.stop_within(Duration::ZERO).await, StopOutcome::Quit);
    assert!(Guest::running_pid(&a).is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
