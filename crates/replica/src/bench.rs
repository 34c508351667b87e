//! `quorate bench replica`: the same workloads against the local file, our NBD server without a peer,
//! our NBD server over a protocol-C replica with a loopback peer, and nbdkit's file plugin; plus the
//! initial resync rate. Blocking; runs its own tokio runtimes. Not a test: it prints numbers.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base::DetRng;
use nbd::Client;
use tokio::sync::mpsc;

use crate::driver::{
    create_metadata, ReplicaBackend, StageTime, Volume, VolumeConfig, WriteStages,
};
use crate::engine::{ConnState, ReplicaConfig};
use crate::meta::DiskState;

/// Sizes of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Scratch directory (files are created and removed).
    pub dir: PathBuf,
    /// Volume size in bytes.
    pub size: u64,
    /// Bytes written by the sequential test (1 MiB blocks, 8 in flight).
    pub seq_bytes: u64,
    /// Number of 4 KiB FUA writes at queue depth 1 (QD32 does four times as many).
    pub rand_ops: usize,
    /// Rounds: every target runs once per round, in alternating order (ABBA...), and the table
    /// shows medians, so that a noisy machine slows all targets alike.
    pub rounds: usize,
}

impl BenchConfig {
    /// 256 MiB volume, 256 MiB sequential, 2000 random writes, 5 rounds.
    pub fn new(dir: PathBuf) -> Self {
        BenchConfig {
            dir,
            size: 256 << 20,
            seq_bytes: 256 << 20,
            rand_ops: 2000,
            rounds: 5,
        }
    }
}

/// Results for one target.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// What was measured.
    pub name: String,
    /// Sequential write MB/s (10^6 bytes).
    pub seq_mb_s: f64,
    /// Median latency of a 4 KiB FUA write at queue depth 1, microseconds.
    pub fua_p50_us: f64,
    /// 4 KiB FUA writes per second at queue depth 1.
    pub qd1_iops: f64,
    /// 4 KiB FUA writes per second at queue depth 32 (`None` when not measured).
    pub qd32_iops: Option<f64>,
    /// CPU time (user + system, every thread of this process) per MiB of the sequential test,
    /// microseconds: the client, the server and, for protocol C, both nodes. `None` for a server in
    /// another process (nbdkit), whose work this process cannot see.
    pub seq_cpu_us_per_mib: Option<f64>,
    /// How busy each core of the machine was during the sequential test, percent (whatever ran
    /// there: this is what shows which side a placement's bottleneck is on).
    pub seq_core_busy_pct: Vec<f64>,
    /// Milliseconds of the sequential test spent writing, then in the final flush.
    pub seq_ms: (f64, f64),
}

/// Protocol C against the same volume without a peer within one round (and against the bare
/// file export, which has no volume engine in its path).
#[derive(Debug, Clone, Copy)]
pub struct RoundRatio {
    /// Protocol C sequential MB/s as a percentage of the peerless volume's.
    pub seq_pct: f64,
    /// Protocol C 4 KiB FUA p50 minus the peerless volume's, microseconds.
    pub fua_delta_us: f64,
    /// Protocol C sequential MB/s as a percentage of the file export's.
    pub seq_pct_file: f64,
    /// Protocol C 4 KiB FUA p50 minus the file export's, microseconds.
    pub fua_delta_file_us: f64,
}

/// Where the two nodes run during one set of rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Both nodes, the client and the comparison servers share every core and the one disk of
    /// this machine: the secondary's work competes with the primary's.
    Shared,
    /// Two machines stood in for on one: the client, the unreplicated servers and the primary on
    /// the first half of the cores, the secondary on the other half with its disk on a RAM file
    /// system (`/dev/shm`), so that what the primary pays for replication is measured alone.
    Split,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Shared => "nodes sharing cores and disk",
            Placement::Split => "nodes on separate cores and disks",
        })
    }
}

/// The rounds of one placement.
#[derive(Debug, Clone)]
pub struct ModeReport {
    /// Where the nodes ran.
    pub placement: Placement,
    /// What the placement put where, in words.
    pub layout: String,
    /// One row per target, each column the median over the rounds (nbdkit missing = no row).
    pub rows: Vec<BenchRow>,
    /// Protocol C against no peer, round by round.
    pub rounds: Vec<RoundRatio>,
    /// Initial full resync rate, MB/s.
    pub resync_mb_s: f64,
    /// Where a protocol C write's time went, per workload phase over all rounds: phase, primary,
    /// secondary.
    pub stages: Vec<(String, WriteStages, WriteStages)>,
    /// Median round trip of a 16-byte TCP ping over loopback between the two nodes' cores, µs.
    pub rtt_us: f64,
    /// CPU time of the sending thread per MiB of a plain loopback TCP send (1 MiB writes) from
    /// the primary's cores to the secondary's, µs: what replication must pay on the primary.
    pub send_us_per_mib: f64,
    /// The cores the client, the unreplicated servers and the primary ran on.
    pub near: Vec<usize>,
    /// MiB written by the sequential test.
    pub seq_mib: u64,
}

impl ModeReport {
    /// CPU time per MiB the `near` cores spent in the sequential test of `row` (busy share
    /// times the test's duration), µs.
    pub fn near_us_per_mib(&self, row: &BenchRow) -> f64 {
        let busy: f64 = self
            .near
            .iter()
            .filter_map(|c| row.seq_core_busy_pct.get(*c))
            .sum::<f64>()
            / 100.0;
        busy * (row.seq_ms.0 + row.seq_ms.1) * 1e3 / self.seq_mib.max(1) as f64
    }
}

impl ModeReport {
    /// Median of the per-round protocol C throughput percentages.
    pub fn seq_pct(&self) -> f64 {
        median(self.rounds.iter().map(|r| r.seq_pct).collect())
    }
    /// Median of the per-round added 4 KiB FUA p50.
    pub fn fua_delta_us(&self) -> f64 {
        median(self.rounds.iter().map(|r| r.fua_delta_us).collect())
    }
    /// Whether both goals hold: at least 85% of the throughput, at most one round trip plus
    /// 100 µs added to a 4 KiB FUA write.
    pub fn meets_target(&self) -> bool {
        self.seq_pct() >= 85.0 && self.fua_delta_us() <= self.rtt_us + 100.0
    }
}

/// A whole run: every placement this machine allows, shared first.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// One per placement.
    pub modes: Vec<ModeReport>,
    /// `/proc/loadavg` before and after the run.
    pub load: (String, String),
    /// Remarks (for example a missing nbdkit).
    pub notes: Vec<String>,
}

const FILE_EXPORT: &str = "nbd file export (quorate)";
const SOLO: &str = "volume, no peer (quorate)";
const REPLICATED: &str = "volume + peer, protocol C";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl BenchReport {
    /// The last line: protocol C throughput against no peer, and the added 4 KiB FUA p50, each the
    /// median of the per-round comparisons; nodes on separate cores and disks first when measured,
    /// the shared placement in brackets.
    pub fn summary(&self) -> String {
        let main = self
            .modes
            .iter()
            .find(|m| m.placement == Placement::Split)
            .or(self.modes.first());
        let Some(main) = main.filter(|m| !m.rounds.is_empty()) else {
            return "replica: incomplete run".into();
        };
        let mut line = format!(
            "replica: protocol C at {:.0}% of unreplicated MB/s; 4k FUA p50 {:+.0} us ({}",
            main.seq_pct(),
            main.fua_delta_us(),
            main.placement
        );
        for m in self.modes.iter().filter(|m| m.placement != main.placement) {
            line += &format!(
                "; {}: {:.0}%, {:+.0} us",
                m.placement,
                m.seq_pct(),
                m.fua_delta_us()
            );
        }
        line + ")"
    }
}

fn stage_line(f: &mut fmt::Formatter<'_>, who: &str, s: &WriteStages) -> fmt::Result {
    let st = |t: &StageTime| format!("{} x {:.0} us", t.count, t.mean_us());
    writeln!(
        f,
        "  {who:<18} request {}; disk write {}; peer ack {}; metadata {}",
        st(&s.request),
        st(&s.disk_write),
        st(&s.peer_ack),
        st(&s.meta)
    )
}

impl fmt::Display for ModeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {}: {}", self.placement, self.layout)?;
        writeln!(
            f,
            "{:<32} {:>10} {:>16} {:>10} {:>10} {:>12}  seq ms: writes+flush, core busy %",
            "target", "seq MB/s", "4k FUA p50 us", "QD1 IOPS", "QD32 IOPS", "CPU us/MiB"
        )?;
        for r in &self.rows {
            let qd32 = r.qd32_iops.map_or("-".to_string(), |x| format!("{x:.0}"));
            let cpu = r
                .seq_cpu_us_per_mib
                .map_or("-".to_string(), |x| format!("{x:.0}"));
            let busy: Vec<String> = r
                .seq_core_busy_pct
                .iter()
                .map(|b| format!("{b:.0}"))
                .collect();
            writeln!(
                f,
                "{:<32} {:>10.1} {:>16.1} {:>10.0} {:>10} {:>12}  {:.0}+{:.0}, {}",
                r.name,
                r.seq_mb_s,
                r.fua_p50_us,
                r.qd1_iops,
                qd32,
                cpu,
                r.seq_ms.0,
                r.seq_ms.1,
                busy.join("/")
            )?;
        }
        writeln!(
            f,
            "resync (initial full sync): {:.1} MB/s; loopback TCP round trip p50 {:.0} us",
            self.resync_mb_s, self.rtt_us
        )?;
        let per: Vec<String> = self
            .rounds
            .iter()
            .map(|r| format!("{:.0}%/{:+.0}us", r.seq_pct, r.fua_delta_us))
            .collect();
        writeln!(
            f,
            "protocol C per round (MB/s %, FUA p50): {}",
            per.join(" ")
        )?;
        if !self.stages.is_empty() {
            writeln!(f, "protocol C stages (count x mean):")?;
        }
        for (phase, p, s) in &self.stages {
            stage_line(f, &format!("{phase} primary"), p)?;
            stage_line(f, &format!("{phase} secondary"), s)?;
        }
        let solo = self.rows.iter().find(|r| r.name == SOLO);
        let repl = self.rows.iter().find(|r| r.name == REPLICATED);
        if let (Placement::Split, Some(solo), Some(repl)) = (self.placement, solo, repl) {
            let (s, r, t) = (
                self.near_us_per_mib(solo),
                self.near_us_per_mib(repl),
                self.send_us_per_mib,
            );
            writeln!(
                f,
                "ceiling on these cores: the primary's cores spend {s:.0} us per MiB without a peer and {r:.0} with protocol C; a loopback TCP send alone costs {t:.0} us of CPU per MiB on the sending core, so protocol C cannot exceed {s:.0}/({s:.0}+{t:.0}) = {:.0}% of the peerless MB/s here",
                100.0 * s / (s + t).max(1e-9)
            )?;
        }
        writeln!(
            f,
            "goal (>= 85% of MB/s, FUA p50 <= round trip + 100 = {:.0} us), against the same volume without a peer: {:.0}%, {:+.0} us: {}; against the bare file export: {:.0}%, {:+.0} us",
            self.rtt_us + 100.0,
            self.seq_pct(),
            self.fua_delta_us(),
            if self.meets_target() { "met" } else { "not met" },
            median(self.rounds.iter().map(|r| r.seq_pct_file).collect()),
            median(self.rounds.iter().map(|r| r.fua_delta_file_us).collect()),
        )
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rounds = self.modes.first().map_or(0, |m| m.rounds.len());
        writeln!(
            f,
            "{rounds} rounds per placement, targets interleaved, medians; load before {}, after {}",
            self.load.0, self.load.1
        )?;
        for m in &self.modes {
            write!(f, "{m}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// The writing and the flushing part of a test, ms, from the time the writes ended and the total.
fn ms2(wrote: Duration, total: Duration) -> (f64, f64) {
    (
        wrote.as_secs_f64() * 1e3,
        total.saturating_sub(wrote).as_secs_f64() * 1e3,
    )
}

fn p50(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn offsets(cfg: &BenchConfig, n: usize, seed: u64) -> Vec<u64> {
    let mut r = DetRng::new(seed);
    let blocks = cfg.size / 4096;
    (0..n).map(|_| r.below(blocks) * 4096).collect()
}

/// Stage timings of the primary and the secondary, read before and after each workload phase.
type Probe<'a> = &'a dyn Fn() -> (WriteStages, WriteStages);

/// Adds what the stages did during one phase to `acc`.
struct PhaseClock<'a> {
    probe: Option<Probe<'a>>,
    mark: Option<(WriteStages, WriteStages)>,
}

impl PhaseClock<'_> {
    fn start(&mut self) {
        self.mark = self.probe.map(|p| p());
    }
    fn end(&mut self, acc: &mut (WriteStages, WriteStages)) {
        if let (Some(p), Some(m)) = (self.probe, self.mark.take()) {
            let now = p();
            acc.0 = acc.0.plus(&now.0.since(&m.0));
            acc.1 = acc.1.plus(&now.1.since(&m.1));
        }
    }
}

fn nbd_workload(
    name: &str,
    addr: SocketAddr,
    export: &str,
    cfg: &BenchConfig,
    probe: Option<Probe<'_>>,
    phases: &mut [(WriteStages, WriteStages); 3],
    in_process: bool,
) -> io::Result<BenchRow> {
    let mut clock = PhaseClock { probe, mark: None };
    let mut c = Client::connect(addr, export)?;
    clock.start();
    let cpu = cpu_time();
    let cores = core_ticks();
    let block = vec![0x5au8; 1 << 20];
    let n = (cfg.seq_bytes >> 20).max(1);
    let t = Instant::now();
    let mut inflight = 0;
    for i in 0..n {
        if inflight == 8 {
            check(c.recv()?)?;
            inflight -= 1;
        }
        c.send_write((i << 20) % cfg.size, &block, false)?;
        inflight += 1;
    }
    while inflight > 0 {
        check(c.recv()?)?;
        inflight -= 1;
    }
    let wrote = t.elapsed();
    c.flush()?;
    let seq_ms = ms2(wrote, t.elapsed());
    let seq = (n << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let cpu = cpu_time().saturating_sub(cpu).as_secs_f64() * 1e6 / n as f64;
    let busy = core_busy_since(&cores);
    clock.end(&mut phases[0]);
    let small = vec![0xa5u8; 4096];
    let mut lat = Vec::with_capacity(cfg.rand_ops);
    clock.start();
    let t = Instant::now();
    for off in offsets(cfg, cfg.rand_ops, 1) {
        let s = Instant::now();
        c.write(off, &small, true)?;
        lat.push(s.elapsed());
    }
    let qd1 = cfg.rand_ops as f64 / t.elapsed().as_secs_f64();
    clock.end(&mut phases[1]);
    let ops = offsets(cfg, cfg.rand_ops * 4, 2);
    clock.start();
    let t = Instant::now();
    let mut inflight = 0;
    for off in &ops {
        if inflight == 32 {
            check(c.recv()?)?;
            inflight -= 1;
        }
        c.send_write(*off, &small, true)?;
        inflight += 1;
    }
    while inflight > 0 {
        check(c.recv()?)?;
        inflight -= 1;
    }
    let qd32 = ops.len() as f64 / t.elapsed().as_secs_f64();
    clock.end(&mut phases[2]);
    let _ = c.disconnect();
    Ok(BenchRow {
        name: name.into(),
        seq_mb_s: seq,
        fua_p50_us: p50(lat),
        qd1_iops: qd1,
        qd32_iops: Some(qd32),
        seq_cpu_us_per_mib: in_process.then_some(cpu),
        seq_core_busy_pct: busy,
        seq_ms,
    })
}

fn check(r: nbd::Reply) -> io::Result<()> {
    if r.error != 0 {
        return Err(io::Error::other(format!("NBD error {}", r.error)));
    }
    Ok(())
}

fn local_workload(path: &std::path::Path, cfg: &BenchConfig) -> io::Result<BenchRow> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let block = vec![0x5au8; 1 << 20];
    let n = (cfg.seq_bytes >> 20).max(1);
    let cpu = cpu_time();
    let cores = core_ticks();
    let t = Instant::now();
    for i in 0..n {
        f.write_all_at(&block, (i << 20) % cfg.size)?;
    }
    let wrote = t.elapsed();
    f.sync_data()?;
    let seq_ms = ms2(wrote, t.elapsed());
    let busy = core_busy_since(&cores);
    let seq = (n << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let cpu = cpu_time().saturating_sub(cpu).as_secs_f64() * 1e6 / n as f64;
    let small = vec![0xa5u8; 4096];
    let mut lat = Vec::new();
    let t = Instant::now();
    for off in offsets(cfg, cfg.rand_ops, 1) {
        let s = Instant::now();
        f.write_all_at(&small, off)?;
        f.sync_data()?;
        lat.push(s.elapsed());
    }
    let qd1 = cfg.rand_ops as f64 / t.elapsed().as_secs_f64();
    Ok(BenchRow {
        name: "local file (pwrite+fdatasync)".into(),
        seq_mb_s: seq,
        fua_p50_us: p50(lat),
        qd1_iops: qd1,
        qd32_iops: None,
        seq_cpu_us_per_mib: Some(cpu),
        seq_core_busy_pct: busy,
        seq_ms,
    })
}

fn sparse(path: &std::path::Path, size: u64) -> io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(size)
}

/// A set of CPUs a thread may run on (`None`: any).
type Cpus = Option<Vec<usize>>;

/// Restricts the calling thread to `cpus` (all of this machine's when `None`).
fn pin(cpus: &Cpus) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let all: Vec<usize> = (0..online_cpus()).collect();
        for &c in cpus.as_ref().unwrap_or(&all) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A runtime whose every thread (workers and blocking pool) runs on `cpus`.
/// Threads are named after `name` (what `perf report --sort comm` shows).
fn runtime(name: &str, cpus: &Cpus) -> io::Result<tokio::runtime::Runtime> {
    let cpus = cpus.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .on_thread_start(move || pin(&cpus))
        .enable_all()
        .build()
}

/// CPU time of this thread per MiB sent over loopback TCP in 1 MiB writes to a reader on `far`
/// (the kernel's whole send path: copy, segmentation, loopback delivery), µs.
fn loopback_send_cost(far: &Cpus) -> io::Result<f64> {
    use std::io::{Read, Write};
    fn thread_cpu() -> Duration {
        // SAFETY: clock_gettime only writes the struct it is given.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let far = far.clone();
    let rx = std::thread::spawn(move || -> io::Result<()> {
        pin(&far);
        let (mut s, _) = l.accept()?;
        let mut b = vec![0u8; 1 << 20];
        while s.read(&mut b)? > 0 {}
        Ok(())
    });
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let block = vec![0x5au8; 1 << 20];
    for _ in 0..16 {
        c.write_all(&block)?;
    }
    let n = 256u32;
    let t = thread_cpu();
    for _ in 0..n {
        c.write_all(&block)?;
    }
    let spent = thread_cpu().saturating_sub(t);
    drop(c);
    let _ = rx.join();
    Ok(spent.as_secs_f64() * 1e6 / n as f64)
}

/// Median round trip of a 16-byte TCP ping over loopback, the echo on `far`, the caller's thread
/// on whatever it is pinned to.
fn loopback_rtt(far: &Cpus) -> io::Result<f64> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let far = far.clone();
    let echo = std::thread::spawn(move || -> io::Result<()> {
        pin(&far);
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 16];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut b = [7u8; 16];
    let mut lat = Vec::with_capacity(2000);
    for i in 0..2100 {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        if i >= 100 {
            lat.push(t.elapsed());
        }
    }
    drop(c);
    let _ = echo.join();
    Ok(p50(lat))
}

struct Nbdkit(Child);
impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Scratch files, removed however the run ends.
struct Scratch(Vec<PathBuf>);
impl Scratch {
    fn sparse(&mut self, path: PathBuf, size: u64) -> io::Result<PathBuf> {
        self.0.push(path.clone());
        sparse(&path, size)?;
        Ok(path)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// User plus system CPU time of every thread of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Busy and total clock ticks of each core so far (`/proc/stat`; empty if unreadable).
fn core_ticks() -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            let total: u64 = v.iter().take(8).sum();
            (total - idle, total)
        })
        .collect()
}

/// Percent busy of each core since `before`.
fn core_busy_since(before: &[(u64, u64)]) -> Vec<f64> {
    core_ticks()
        .iter()
        .zip(before)
        .map(|((b1, t1), (b0, t0))| {
            let t = t1.saturating_sub(*t0);
            if t == 0 {
                0.0
            } else {
                100.0 * b1.saturating_sub(*b0) as f64 / t as f64
            }
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn start_nbdkit(path: &std::path::Path, cpus: &Cpus) -> Result<(Nbdkit, SocketAddr), String> {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let cpus = cpus.clone();
    let mut cmd = Command::new("nbdkit");
    // SAFETY: the hook only calls sched_setaffinity, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            pin(&cpus);
            Ok(())
        });
    }
    let child = cmd
        .args(["-f", "--exit-with-parent", "-i", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("file")
        .arg(format!("file={}", path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "nbdkit not run ({e}): install the Debian package nbdkit for the comparison row"
            )
        })?;
    let guard = Nbdkit(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok((guard, addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("nbdkit did not start listening".into())
}

/// Runs every workload in each placement this machine allows (shared; split when it has two
/// cores or more and `/dev/shm`) and returns the report.
pub fn run(cfg: &BenchConfig) -> io::Result<BenchReport> {
    std::fs::create_dir_all(&cfg.dir)?;
    let load_before = loadavg();
    let mut notes = Vec::new();
    // QUORATE_BENCH_PLACEMENT=split (or shared) runs one placement only, for profiling.
    let only = std::env::var("QUORATE_BENCH_PLACEMENT").ok();
    let mut modes = Vec::new();
    if only.as_deref() != Some("split") {
        modes.push(run_mode(cfg, Placement::Shared, &mut notes)?);
    }
    if only.as_deref() != Some("shared") {
        if online_cpus() < 2 {
            notes.push("one core only: the split placement was not run".into());
        } else if !std::path::Path::new("/dev/shm").is_dir() {
            notes.push("no /dev/shm: the split placement was not run".into());
        } else {
            modes.push(run_mode(cfg, Placement::Split, &mut notes)?);
        }
    }
    notes.dedup();
    Ok(BenchReport {
        modes,
        load: (load_before, loadavg()),
        notes,
    })
}

fn run_mode(
    cfg: &BenchConfig,
    placement: Placement,
    notes: &mut Vec<String>,
) -> io::Result<ModeReport> {
    let n = online_cpus();
    let (near, far, peer_dir): (Cpus, Cpus, PathBuf) = match placement {
        Placement::Shared => (None, None, cfg.dir.clone()),
        Placement::Split => (
            Some((0..n / 2).collect()),
            Some((n / 2..n).collect()),
            std::path::Path::new("/dev/shm")
                .join(format!("quorate-bench-peer-{}", std::process::id())),
        ),
    };
    std::fs::create_dir_all(&peer_dir)?;
    let layout = match placement {
        Placement::Shared => format!(
            "client, servers and both nodes on all {n} cores, every file in {}",
            cfg.dir.display()
        ),
        Placement::Split => format!(
            "client, unreplicated servers and primary on cores {:?} with files in {}; secondary on cores {:?} with its disk in {}",
            near.as_deref().unwrap_or(&[]),
            cfg.dir.display(),
            far.as_deref().unwrap_or(&[]),
            peer_dir.display()
        ),
    };
    pin(&near);
    let r = run_rounds(cfg, placement, &near, &far, &peer_dir, notes, layout);
    pin(&None);
    if placement == Placement::Split {
        let _ = std::fs::remove_dir_all(&peer_dir);
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn run_rounds(
    cfg: &BenchConfig,
    placement: Placement,
    near: &Cpus,
    far: &Cpus,
    peer_dir: &std::path::Path,
    notes: &mut Vec<String>,
    layout: String,
) -> io::Result<ModeReport> {
    let mut scratch = Scratch(Vec::new());
    let rtt_us = loopback_rtt(far)?;
    let send_us_per_mib = loopback_send_cost(far)?;

    // Every target is set up first and stays up, so that the rounds can interleave them.
    let local = scratch.sparse(cfg.dir.join("local.img"), cfg.size)?;
    let rt = runtime("bench-plain", near)?;
    let plain = scratch.sparse(cfg.dir.join("plain.img"), cfg.size)?;
    let backend = Arc::new(nbd::FileBackend::open(&plain, false)?);
    let server = nbd::Server::new(vec![nbd::Export::new("plain", backend)]);
    let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let plain_addr = l.local_addr()?;
    rt.spawn(server.clone().serve_tcp(l));
    let solo = Replicated::start(cfg, &mut scratch, [near, far], peer_dir, false)?;
    let repl = Replicated::start(cfg, &mut scratch, [near, far], peer_dir, true)?;
    let kit_file = scratch.sparse(cfg.dir.join("nbdkit.img"), cfg.size)?;
    let kit = match start_nbdkit(&kit_file, near) {
        Ok(k) => Some(k),
        Err(n) => {
            notes.push(n);
            None
        }
    };

    let names = [
        "local file (pwrite+fdatasync)",
        FILE_EXPORT,
        SOLO,
        REPLICATED,
        "nbdkit file plugin",
    ];
    let mut per: Vec<Vec<BenchRow>> = vec![Vec::new(); names.len()];
    let mut phases = [(WriteStages::default(), WriteStages::default()); 3];
    // Where the stages of runs that are not counted go (other targets, the warm-up).
    let mut unused = phases;
    let probe = || repl.stages();
    let rounds = cfg.rounds.max(1);
    // QUORATE_BENCH_ONLY=N runs target N alone (0 local .. 4 nbdkit), for profiling.
    let only = std::env::var("QUORATE_BENCH_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    // Round 0 warms up: every file gets its blocks allocated and cached once, as the replicated
    // volume's secondary already had from the initial sync; it is not counted.
    for round in 0..=rounds {
        let mut order: Vec<usize> = (0..names.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for t in order {
            if only.is_some_and(|only| only != t) {
                continue;
            }
            let row = match t {
                0 => local_workload(&local, cfg)?,
                1 => nbd_workload(names[t], plain_addr, "plain", cfg, None, &mut unused, true)?,
                2 => nbd_workload(names[t], solo.addr, "r0", cfg, None, &mut unused, true)?,
                3 => {
                    let ph = if round == 0 { &mut unused } else { &mut phases };
                    nbd_workload(names[t], repl.addr, "r0", cfg, Some(&probe), ph, true)?
                }
                _ => match &kit {
                    Some((_, addr)) => {
                        nbd_workload(names[t], *addr, "", cfg, None, &mut unused, false)?
                    }
                    None => continue,
                },
            };
            if round > 0 {
                per[t].push(row);
            }
        }
    }
    let stages = ["seq 1M", "4k QD1", "4k QD32"]
        .iter()
        .zip(phases)
        .map(|(n, (p, s))| (n.to_string(), p, s))
        .collect();
    let ratios = per[1]
        .iter()
        .zip(&per[2])
        .zip(&per[3])
        .map(|((f, a), c)| RoundRatio {
            seq_pct: 100.0 * c.seq_mb_s / a.seq_mb_s.max(1e-9),
            fua_delta_us: c.fua_p50_us - a.fua_p50_us,
            seq_pct_file: 100.0 * c.seq_mb_s / f.seq_mb_s.max(1e-9),
            fua_delta_file_us: c.fua_p50_us - f.fua_p50_us,
        })
        .collect();
    let rows = per
        .iter()
        .filter(|v| !v.is_empty())
        .map(|v| BenchRow {
            name: v[0].name.clone(),
            seq_mb_s: median(v.iter().map(|r| r.seq_mb_s).collect()),
            fua_p50_us: median(v.iter().map(|r| r.fua_p50_us).collect()),
            qd1_iops: median(v.iter().map(|r| r.qd1_iops).collect()),
            qd32_iops: v[0]
                .qd32_iops
                .map(|_| median(v.iter().filter_map(|r| r.qd32_iops).collect())),
            seq_cpu_us_per_mib: v[0]
                .seq_cpu_us_per_mib
                .map(|_| median(v.iter().filter_map(|r| r.seq_cpu_us_per_mib).collect())),
            seq_core_busy_pct: (0..v[0].seq_core_busy_pct.len())
                .map(|c| {
                    median(
                        v.iter()
                            .filter_map(|r| r.seq_core_busy_pct.get(c).copied())
                            .collect(),
                    )
                })
                .collect(),
            seq_ms: (
                median(v.iter().map(|r| r.seq_ms.0).collect()),
                median(v.iter().map(|r| r.seq_ms.1).collect()),
            ),
        })
        .collect();
    let resync_mb_s = repl.resync_mb_s;
    drop(kit);
    drop(repl);
    drop(solo);
    server.shutdown();
    drop(rt);
    Ok(ModeReport {
        placement,
        layout,
        rows,
        rounds: ratios,
        resync_mb_s,
        stages,
        rtt_us,
        send_us_per_mib,
        near: near.clone().unwrap_or_else(|| (0..online_cpus()).collect()),
        seq_mib: (cfg.seq_bytes >> 20).max(1),
    })
}

/// A primary and a secondary on loopback, initially synced, the primary exported over NBD.
struct Replicated {
    rts: Vec<tokio::runtime::Runtime>,
    vols: Vec<Volume>,
    server: Arc<nbd::Server>,
    addr: SocketAddr,
    resync_mb_s: f64,
}

impl Replicated {
    /// `cpus`: where the primary's and the secondary's threads run; the secondary's files go in
    /// `peer_dir`. Without `peer` only the primary runs, StandAlone (every write marks its bitmap,
    /// as a disconnected primary's does): the same volume, unreplicated.
    fn start(
        cfg: &BenchConfig,
        scratch: &mut Scratch,
        cpus: [&Cpus; 2],
        peer_dir: &std::path::Path,
        peer: bool,
    ) -> io::Result<Replicated> {
        let tag = if peer { "r" } else { "solo" };
        let l1 = std::net::TcpListener::bind("127.0.0.1:0")?;
        let l2 = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addrs = [l1.local_addr()?, l2.local_addr()?];
        let mut rts = Vec::new();
        let mut vols = Vec::new();
        for (i, l) in [l1, l2].into_iter().enumerate().take(1 + peer as usize) {
            let id = i as u32 + 1;
            let dir = if i == 0 {
                &cfg.dir
            } else {
                &peer_dir.to_path_buf()
            };
            let disk = scratch.sparse(dir.join(format!("{tag}{id}.img")), cfg.size)?;
            let meta = dir.join(format!("{tag}{id}.md"));
            scratch.0.push(meta.clone());
            scratch.0.push(dir.join(format!("{tag}{id}.md.tmp")));
            scratch.0.push(dir.join(format!("{tag}{id}.md.al")));
            create_metadata(&meta, cfg.size, 4096)?;
            let mut rc = ReplicaConfig::new(id);
            rc.resync_max_rate = 4 << 30;
            rc.resync_in_flight = 16;
            rc.resync_chunk = 1 << 20;
            let vc = VolumeConfig {
                replica: rc,
                disk,
                meta,
                peer: addrs[1 - i],
                peer_node_id: 2 - i as u32,
                seed: 77 + id as u64,
            };
            let name = match (peer, i) {
                (false, _) => "bench-solo",
                (true, 0) => "bench-primary",
                _ => "bench-peer",
            };
            let rt = runtime(name, cpus[i])?;
            let (etx, _erx) = mpsc::unbounded_channel();
            std::mem::forget(_erx);
            l.set_nonblocking(true)?;
            let v = rt.block_on(async {
                let l = tokio::net::TcpListener::from_std(l)?;
                Volume::start(vc, l, etx).await
            })?;
            if peer {
                v.connect();
            }
            rts.push(rt);
            vols.push(v);
        }
        let status = |i: usize| rts[i].block_on(vols[i].status());
        let wait = |what: &str, f: &dyn Fn() -> bool| -> io::Result<()> {
            for _ in 0..6000 {
                if f() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(io::Error::other(format!(
                "replica bench: timeout waiting for {what}"
            )))
        };
        if peer {
            wait("connection", &|| {
                status(0).is_some_and(|s| s.conn == ConnState::Connected)
            })?;
        }
        let t = Instant::now();
        rts[0]
            .block_on(vols[0].promote(true))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut resync_mb_s = 0.0;
        if peer {
            wait("initial sync", &|| {
                status(1).is_some_and(|s| s.disk == DiskState::UpToDate)
            })?;
            resync_mb_s = cfg.size as f64 / t.elapsed().as_secs_f64() / 1e6;
        }
        let backend = Arc::new(ReplicaBackend::new(
            vols[0].clone(),
            rts[0].handle().clone(),
        ));
        let server = nbd::Server::new(vec![nbd::Export::new("r0", backend)]);
        let l = rts[0].block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = l.local_addr()?;
        rts[0].spawn(server.clone().serve_tcp(l));
        Ok(Replicated {
            rts,
            vols,
            server,
            addr,
            resync_mb_s,
        })
    }

    fn stages(&self) -> (WriteStages, WriteStages) {
        let peer = self
            .vols
            .get(1)
            .map(Volume::write_stages)
            .unwrap_or_default();
        (self.vols[0].write_stages(), peer)
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        self.server.shutdown();
        for (rt, v) in self.rts.iter().zip(&self.vols) {
            rt.block_on(v.stop());
        }
    }
}
