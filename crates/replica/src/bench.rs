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
}

/// Protocol C against the unreplicated NBD export within one round.
#[derive(Debug, Clone, Copy)]
pub struct RoundRatio {
    /// Protocol C sequential MB/s as a percentage of the unreplicated export's.
    pub seq_pct: f64,
    /// Protocol C 4 KiB FUA p50 minus the unreplicated export's, microseconds.
    pub fua_delta_us: f64,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// One row per target, each column the median over the rounds (nbdkit missing = no row).
    pub rows: Vec<BenchRow>,
    /// Protocol C against no peer, round by round.
    pub rounds: Vec<RoundRatio>,
    /// Initial full resync rate, MB/s.
    pub resync_mb_s: f64,
    /// Where a protocol C write's time went, per workload phase over all rounds: phase, primary,
    /// secondary.
    pub stages: Vec<(String, WriteStages, WriteStages)>,
    /// `/proc/loadavg` before and after the run.
    pub load: (String, String),
    /// Remarks (for example a missing nbdkit).
    pub notes: Vec<String>,
}

const PLAIN: &str = "nbd, no peer (quorate)";
const REPLICATED: &str = "nbd + peer, protocol C";

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
    /// median of the per-round comparisons.
    pub fn summary(&self) -> String {
        if self.rounds.is_empty() {
            return "replica: incomplete run".into();
        }
        format!(
            "replica: protocol C at {:.0}% of unreplicated MB/s; 4k FUA p50 {:+.0} us",
            median(self.rounds.iter().map(|r| r.seq_pct).collect()),
            median(self.rounds.iter().map(|r| r.fua_delta_us).collect())
        )
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

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} rounds, targets interleaved, medians; load before {}, after {}",
            self.rounds.len(),
            self.load.0,
            self.load.1
        )?;
        writeln!(
            f,
            "{:<32} {:>10} {:>16} {:>10} {:>10} {:>12}",
            "target", "seq MB/s", "4k FUA p50 us", "QD1 IOPS", "QD32 IOPS", "CPU us/MiB"
        )?;
        for r in &self.rows {
            let qd32 = r.qd32_iops.map_or("-".to_string(), |x| format!("{x:.0}"));
            let cpu = r
                .seq_cpu_us_per_mib
                .map_or("-".to_string(), |x| format!("{x:.0}"));
            writeln!(
                f,
                "{:<32} {:>10.1} {:>16.1} {:>10.0} {:>10} {:>12}",
                r.name, r.seq_mb_s, r.fua_p50_us, r.qd1_iops, qd32, cpu
            )?;
        }
        writeln!(
            f,
            "resync (initial full sync): {:.1} MB/s",
            self.resync_mb_s
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
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        write!(f, "{}", self.summary())
    }
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
    c.flush()?;
    let seq = (n << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let cpu = cpu_time().saturating_sub(cpu).as_secs_f64() * 1e6 / n as f64;
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
    let t = Instant::now();
    for i in 0..n {
        f.write_all_at(&block, (i << 20) % cfg.size)?;
    }
    f.sync_data()?;
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
    })
}

fn sparse(path: &std::path::Path, size: u64) -> io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(size)
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn start_nbdkit(path: &std::path::Path) -> Result<(Nbdkit, SocketAddr), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("nbdkit")
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

/// Runs every workload and returns the report.
pub fn run(cfg: &BenchConfig) -> io::Result<BenchReport> {
    std::fs::create_dir_all(&cfg.dir)?;
    let load_before = loadavg();
    let mut notes = Vec::new();
    let mut scratch = Scratch(Vec::new());

    // Every target is set up first and stays up, so that the rounds can interleave them.
    let local = scratch.sparse(cfg.dir.join("local.img"), cfg.size)?;
    let rt = runtime()?;
    let plain = scratch.sparse(cfg.dir.join("plain.img"), cfg.size)?;
    let backend = Arc::new(nbd::FileBackend::open(&plain, false)?);
    let server = nbd::Server::new(vec![nbd::Export::new("plain", backend)]);
    let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let plain_addr = l.local_addr()?;
    rt.spawn(server.clone().serve_tcp(l));
    let repl = Replicated::start(cfg, &mut scratch)?;
    let kit_file = scratch.sparse(cfg.dir.join("nbdkit.img"), cfg.size)?;
    let kit = match start_nbdkit(&kit_file) {
        Ok(k) => Some(k),
        Err(n) => {
            notes.push(n);
            None
        }
    };

    let names = [
        "local file (pwrite+fdatasync)",
        PLAIN,
        REPLICATED,
        "nbdkit file plugin",
    ];
    let mut per: Vec<Vec<BenchRow>> = vec![Vec::new(); names.len()];
    let mut phases = [(WriteStages::default(), WriteStages::default()); 3];
    let mut unused = phases;
    let probe = || repl.stages();
    let rounds = cfg.rounds.max(1);
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..names.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for t in order {
            let row = match t {
                0 => local_workload(&local, cfg)?,
                1 => nbd_workload(names[t], plain_addr, "plain", cfg, None, &mut unused, true)?,
                2 => nbd_workload(
                    names[t],
                    repl.addr,
                    "r0",
                    cfg,
                    Some(&probe),
                    &mut phases,
                    true,
                )?,
                _ => match &kit {
                    Some((_, addr)) => {
                        nbd_workload(names[t], *addr, "", cfg, None, &mut unused, false)?
                    }
                    None => continue,
                },
            };
            per[t].push(row);
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
        .map(|(a, c)| RoundRatio {
            seq_pct: 100.0 * c.seq_mb_s / a.seq_mb_s.max(1e-9),
            fua_delta_us: c.fua_p50_us - a.fua_p50_us,
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
        })
        .collect();
    let resync_mb_s = repl.resync_mb_s;
    drop(kit);
    drop(repl);
    server.shutdown();
    drop(rt);
    Ok(BenchReport {
        rows,
        rounds: ratios,
        resync_mb_s,
        stages,
        load: (load_before, loadavg()),
        notes,
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
    fn start(cfg: &BenchConfig, scratch: &mut Scratch) -> io::Result<Replicated> {
        let l1 = std::net::TcpListener::bind("127.0.0.1:0")?;
        let l2 = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addrs = [l1.local_addr()?, l2.local_addr()?];
        let mut rts = Vec::new();
        let mut vols = Vec::new();
        for (i, l) in [l1, l2].into_iter().enumerate() {
            let id = i as u32 + 1;
            let disk = scratch.sparse(cfg.dir.join(format!("r{id}.img")), cfg.size)?;
            let meta = cfg.dir.join(format!("r{id}.md"));
            scratch.0.push(meta.clone());
            scratch.0.push(cfg.dir.join(format!("r{id}.md.tmp")));
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
            let rt = runtime()?;
            let (etx, _erx) = mpsc::unbounded_channel();
            std::mem::forget(_erx);
            l.set_nonblocking(true)?;
            let v = rt.block_on(async {
                let l = tokio::net::TcpListener::from_std(l)?;
                Volume::start(vc, l, etx).await
            })?;
            v.connect();
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
        wait("connection", &|| {
            status(0).is_some_and(|s| s.conn == ConnState::Connected)
        })?;
        let t = Instant::now();
        rts[0]
            .block_on(vols[0].promote(true))
            .map_err(|e| io::Error::other(e.to_string()))?;
        wait("initial sync", &|| {
            status(1).is_some_and(|s| s.disk == DiskState::UpToDate)
        })?;
        let resync_mb_s = cfg.size as f64 / t.elapsed().as_secs_f64() / 1e6;
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
        (self.vols[0].write_stages(), self.vols[1].write_stages())
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
