//! Measurements with the tiny guest on this host: boot, restart, live migration.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::accel::AccelChoice;
use crate::def::{MigrationMode, MigrationSettings};
use crate::driver::{Guest, MigrationStats};
use crate::tiny::{blank_disk, serial_counters, TinyGuest};
use crate::VmError;

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Accelerator used.
    pub accel: AccelChoice,
    /// `Guest::start` call to the first `counter` line, ms.
    pub boot_to_counter_ms: u64,
    /// After SIGKILL: `Guest::start` call to the first new counter, ms.
    pub restart_to_counter_ms: u64,
    /// One entry per live migration (alternating between two QEMUs on loopback).
    pub migrations: Vec<MigrationStats>,
}

impl BenchReport {
    fn p50(mut v: Vec<u64>) -> u64 {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    /// Median QEMU-reported downtime, ms.
    pub fn downtime_p50_ms(&self) -> u64 {
        Self::p50(self.migrations.iter().map(|m| m.downtime_ms).collect())
    }

    /// Median QEMU-reported total migration time, ms.
    pub fn total_p50_ms(&self) -> u64 {
        Self::p50(self.migrations.iter().map(|m| m.total_time_ms).collect())
    }
}

async fn wait_counter_above(serial: &Path, n: u64, within: Duration) -> Result<u64, VmError> {
    let start = Instant::now();
    loop {
        if let Some(&c) = serial_counters(serial).last() {
            if c > n {
                return Ok(c);
            }
        }
        if start.elapsed() >= within {
            return Err(VmError::Timeout {
                guest: serial.display().to_string(),
                what: format!("a counter above {n} on the serial log"),
                ms: within.as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Boot the tiny guest in `dir`, kill and restart it, then live-migrate it
/// `runs` times between two QEMUs on 127.0.0.1 (ports `base_port`, `base_port+1`,
/// ...), checking that the counter keeps rising after each. Stops the guest at the end.
pub async fn run(
    tiny: &TinyGuest,
    dir: &Path,
    accel: AccelChoice,
    runs: usize,
    base_port: u16,
) -> Result<BenchReport, VmError> {
    std::fs::create_dir_all(dir).map_err(|e| VmError::Invalid {
        guest: "bench".into(),
        message: format!("{}: {e}", dir.display()),
    })?;
    let disk = dir.join("bench-disk.img");
    blank_disk(&disk).map_err(|e| VmError::Invalid {
        guest: "bench".into(),
        message: format!("{}: {e}", disk.display()),
    })?;
    let defs = [
        tiny.guest_def("bench-a", dir, &disk),
        tiny.guest_def("bench-b", dir, &disk),
    ];
    for d in &defs {
        let _ = std::fs::remove_file(&d.serial_log);
    }
    let t = Instant::now();
    let g = Guest::start(defs[0].clone(), accel.clone()).await?;
    wait_counter_above(&defs[0].serial_log, 0, Duration::from_secs(120)).await?;
    let boot_to_counter_ms = t.elapsed().as_millis() as u64;
    let before = serial_counters(&defs[0].serial_log)
        .last()
        .copied()
        .unwrap_or(0);
    g.kill().await;
    let t = Instant::now();
    let mut src = Guest::start(defs[0].clone(), accel.clone()).await?;
    wait_counter_above(&defs[0].serial_log, before, Duration::from_secs(120)).await?;
    let restart_to_counter_ms = t.elapsed().as_millis() as u64;

    let mut migrations = Vec::new();
    for i in 0..runs {
        let to = defs[(i + 1) % 2].clone();
        let settings = MigrationSettings {
            listen_address: "127.0.0.1".into(),
            port: base_port.wrapping_add(i as u16),
            downtime_limit_ms: 100,
            max_bandwidth: 1 << 30,
            timeout_ms: 60_000,
            connect_timeout_ms: 0,
            mode: MigrationMode::Live,
        };
        let last = serial_counters(&src.def().serial_log)
            .last()
            .copied()
            .unwrap_or(0);
        let res = src.migrate_to_local(to, &settings, |_| {}).await;
        let (dst, stats) = match res {
            Ok(x) => x,
            Err(e) => {
                src.stop().await;
                return Err(e);
            }
        };
        src.quit().await;
        wait_counter_above(&dst.def().serial_log, last, Duration::from_secs(30)).await?;
        migrations.push(stats);
        src = dst;
    }
    src.stop().await;
    Ok(BenchReport {
        accel,
        boot_to_counter_ms,
        restart_to_counter_ms,
        migrations,
    })
}
