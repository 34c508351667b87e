//! `quorate bench vm`: the tiny guest on this host, driven exactly as the node
//! daemon drives a `<vm>` resource (two [`VmManager`]s standing for two nodes,
//! each with its own run directory, sharing the guest's disk, migrating over
//! 127.0.0.1).
//!
//! Measured: boot (start to first counter line), live migrations (QEMU's own
//! `total-time` and `downtime`), and crash to running: SIGKILL of the guest's
//! QEMU on one "node", then `VmManager::start` on the other ("survivor") until
//! the guest prints its first counter line there. The cluster's own failure
//! detection and fencing (token timeout + fence agent) come on top of that
//! figure in a real failover and are measured by the daemon's tests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::accel::AccelChoice;
use crate::def::AccelMode;
use crate::driver::MigrationStats;
use crate::resource::{StartOutcome, VmAttrs, VmManager};
use crate::tiny::{blank_disk, serial_counters, TinyGuest};
use crate::VmError;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Working directory (disk image, the two nodes' run directories).
    pub dir: PathBuf,
    /// Live migrations, alternating between the two nodes.
    pub migrations: usize,
    /// Crash-and-restart rounds.
    pub crashes: usize,
    /// First migration port; each migration uses the next one.
    pub base_port: u16,
    /// Accelerator request (`Auto`: what the host really supports).
    pub accel: AccelMode,
}

impl BenchOptions {
    /// 9 migrations, 3 crashes, ports from 49300, auto accelerator, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            migrations: 9,
            crashes: 3,
            base_port: 49300,
            accel: AccelMode::Auto,
        }
    }
}

/// One migration of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRun {
    /// Source node (1 or 2).
    pub from: u8,
    /// Target node.
    pub to: u8,
    /// What QEMU reported.
    pub stats: MigrationStats,
}

/// One crash-and-restart of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashRun {
    /// Node whose QEMU was killed (1 or 2).
    pub from: u8,
    /// The survivor that started the guest.
    pub to: u8,
    /// SIGKILL to the first counter line on the survivor, ms.
    pub ms: u64,
}

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Accelerator used, and why.
    pub accel: AccelChoice,
    /// `VmManager::start` call to the first `counter` line, ms.
    pub boot_to_counter_ms: u64,
    /// Live migrations.
    pub migrations: Vec<MigrationRun>,
    /// SIGKILL of QEMU on one node to the first counter line of the guest
    /// started by the other node's `VmManager::start`, one per crash.
    pub crashes: Vec<CrashRun>,
}

fn p50(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

impl BenchReport {
    /// Median QEMU-reported downtime, ms.
    pub fn downtime_p50_ms(&self) -> u64 {
        p50(self
            .migrations
            .iter()
            .map(|m| m.stats.downtime_ms)
            .collect())
    }

    /// Median QEMU-reported total migration time, ms.
    pub fn total_p50_ms(&self) -> u64 {
        p50(self
            .migrations
            .iter()
            .map(|m| m.stats.total_time_ms)
            .collect())
    }

    /// Median crash-to-running time, ms.
    pub fn crash_to_running_p50_ms(&self) -> u64 {
        p50(self.crashes.iter().map(|c| c.ms).collect())
    }

    /// The summary line `vm: migration downtime p50 D ms, total p50 T ms; crash to running p50 S s`.
    pub fn summary(&self) -> String {
        format!(
            "vm: migration downtime p50 {} ms, total p50 {} ms; crash to running p50 {:.1} s",
            self.downtime_p50_ms(),
            self.total_p50_ms(),
            self.crash_to_running_p50_ms() as f64 / 1000.0
        )
    }
}

impl fmt::Display for BenchReport {
    /// The table, then [`summary`](Self::summary) as the last line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tiny guest (128 MiB, 1 vCPU) on {}: {}",
            self.accel.accel.as_str(),
            self.accel.reason
        )?;
        writeln!(f, "boot to first counter: {} ms", self.boot_to_counter_ms)?;
        writeln!(
            f,
            "{:<10} {:>6} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7}",
            "migration",
            "route",
            "total ms",
            "downtime ms",
            "setup ms",
            "MiB sent",
            "Mbit/s",
            "passes"
        )?;
        for (i, m) in self.migrations.iter().enumerate() {
            let s = &m.stats;
            writeln!(
                f,
                "{:<10} {:>6} {:>10} {:>12} {:>9} {:>9.1} {:>9.0} {:>7}",
                i + 1,
                format!("{}->{}", m.from, m.to),
                s.total_time_ms,
                s.downtime_ms,
                s.setup_time_ms,
                s.transferred_bytes as f64 / (1 << 20) as f64,
                s.mbps,
                s.dirty_sync_count
            )?;
        }
        writeln!(f, "{:<10} {:>6} {:>10}", "crash", "route", "running s")?;
        for (i, c) in self.crashes.iter().enumerate() {
            writeln!(
                f,
                "{:<10} {:>6} {:>10.2}",
                i + 1,
                format!("{}->{}", c.from, c.to),
                c.ms as f64 / 1000.0
            )?;
        }
        writeln!(
            f,
            "(crash to running = SIGKILL of QEMU -> VmManager::start on the survivor -> first counter line; \
             cluster failure detection and fencing not included)"
        )?;
        write!(f, "{}", self.summary())
    }
}

fn counter_lines(serial: &Path) -> usize {
    serial_counters(serial).len()
}

/// Wait until `serial` has more than `n` counter lines whose last is above `above`.
async fn wait_counter(
    serial: &Path,
    n: usize,
    above: u64,
    within: Duration,
) -> Result<u64, VmError> {
    let start = Instant::now();
    loop {
        let c = serial_counters(serial);
        if c.len() > n {
            if let Some(&last) = c.last().filter(|&&l| l > above) {
                return Ok(last);
            }
        }
        if start.elapsed() >= within {
            return Err(VmError::Timeout {
                guest: serial.display().to_string(),
                what: format!("a new counter line above {above} on the serial log"),
                ms: within.as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn io_err(what: &Path, e: std::io::Error) -> VmError {
    VmError::Invalid {
        guest: "bench".into(),
        message: format!("{}: {e}", what.display()),
    }
}

/// Run the benchmark with a built tiny guest; stops the guest at the end
/// (also on error).
pub async fn run(tiny: &TinyGuest, opts: &BenchOptions) -> Result<BenchReport, VmError> {
    let dir = &opts.dir;
    let runs = [dir.join("node1"), dir.join("node2")];
    for d in &runs {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
    }
    let disk = dir.join("bench-disk.img");
    blank_disk(&disk).map_err(|e| io_err(&disk, e))?;
    let nodes = [VmManager::new(&runs[0]), VmManager::new(&runs[1])];
    let mut attrs = tiny.vm_attrs("bench", &disk, opts.base_port);
    attrs.insert("accel".into(), opts.accel_name().into());
    let res = measure(opts, &nodes, &mut attrs).await;
    for n in &nodes {
        let _ = n.stop(&attrs).await;
    }
    res
}

impl BenchOptions {
    fn accel_name(&self) -> &'static str {
        match self.accel {
            AccelMode::Auto => "auto",
            AccelMode::Kvm => "kvm",
            AccelMode::Tcg => "tcg",
        }
    }
}

async fn measure(
    opts: &BenchOptions,
    nodes: &[VmManager; 2],
    attrs: &mut VmAttrs,
) -> Result<BenchReport, VmError> {
    let serial = |i: usize| nodes[i].run_dir().join("bench.serial");
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let long = Duration::from_secs(120);
    let t = Instant::now();
    nodes[0].start(attrs).await?;
    wait_counter(&serial(0), 0, 0, long).await?;
    let boot_to_counter_ms = t.elapsed().as_millis() as u64;
    let accel = nodes[0]
        .status(attrs)
        .await
        .map_err(|message| VmError::Invalid {
            guest: "bench".into(),
            message,
        })?
        .accel;

    let mut cur = 0usize;
    let mut migrations = Vec::new();
    for i in 0..opts.migrations {
        let to = 1 - cur;
        attrs.insert(
            "migration_port".into(),
            opts.base_port.wrapping_add(i as u16).to_string(),
        );
        nodes[to].prepare_incoming(attrs, lo).await?;
        let stats = match nodes[cur].migrate_out(attrs, lo, |_| {}).await {
            Ok(s) => s,
            Err(e) => {
                let _ = nodes[to].stop(attrs).await;
                return Err(e);
            }
        };
        nodes[to]
            .wait_running(attrs, Duration::from_secs(30))
            .await
            .map_err(|message| VmError::Invalid {
                guest: "bench".into(),
                message,
            })?;
        let last = serial_counters(&serial(cur)).last().copied().unwrap_or(0);
        let n = counter_lines(&serial(to));
        wait_counter(&serial(to), n, last, Duration::from_secs(30)).await?;
        migrations.push(MigrationRun {
            from: cur as u8 + 1,
            to: to as u8 + 1,
            stats,
        });
        cur = to;
    }

    let mut crashes = Vec::new();
    for _ in 0..opts.crashes {
        let survivor = 1 - cur;
        let st = nodes[cur]
            .status(attrs)
            .await
            .map_err(|message| VmError::Invalid {
                guest: "bench".into(),
                message,
            })?;
        let n = counter_lines(&serial(survivor));
        let t = Instant::now();
        crate::proc::signal(st.pid, libc::SIGKILL);
        let outcome = nodes[survivor].start(attrs).await?;
        if outcome != StartOutcome::Started {
            return Err(VmError::Invalid {
                guest: "bench".into(),
                message: format!("the survivor found a QEMU already there ({outcome:?})"),
            });
        }
        wait_counter(&serial(survivor), n, 0, long).await?;
        crashes.push(CrashRun {
            from: cur as u8 + 1,
            to: survivor as u8 + 1,
            ms: t.elapsed().as_millis() as u64,
        });
        // The dead node notices and forgets its QEMU.
        if nodes[cur].status(attrs).await.is_ok() {
            return Err(VmError::Invalid {
                guest: "bench".into(),
                message: "a killed QEMU still reports healthy".into(),
            });
        }
        cur = survivor;
    }
    Ok(BenchReport {
        accel,
        boot_to_counter_ms,
        migrations,
        crashes,
    })
}

/// `quorate bench vm`: build (or reuse) the tiny guest with the embedded
/// script into `opts.dir/guest`, then [`run`]. Print the result with `{}`
/// (table, summary last).
pub async fn run_embedded(opts: &BenchOptions) -> Result<BenchReport, VmError> {
    let out = opts.dir.join("guest");
    let tiny = tokio::task::spawn_blocking(move || TinyGuest::build_embedded(&out))
        .await
        .map_err(|e| VmError::TinyGuest {
            message: e.to_string(),
        })??;
    run(&tiny, opts).await
}

/// Build (or reuse) the tiny guest with `script`
/// (scripts/guest/build-tiny-guest.sh) into `opts.dir/guest`, then [`run`].
/// Print the result with `{}` (table, summary last).
pub async fn run_with_script(script: &Path, opts: &BenchOptions) -> Result<BenchReport, VmError> {
    let out = opts.dir.join("guest");
    let script = script.to_path_buf();
    let tiny = tokio::task::spawn_blocking(move || TinyGuest::build(&script, &out))
        .await
        .map_err(|e| VmError::TinyGuest {
            message: e.to_string(),
        })??;
    run(&tiny, opts).await
}
