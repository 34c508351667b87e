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

use crate::driver::{create_metadata, ReplicaBackend, Volume, VolumeConfig};
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
}

impl BenchConfig {
    /// 256 MiB volume, 256 MiB sequential, 2000 random writes.
    pub fn new(dir: PathBuf) -> Self {
        BenchConfig {
            dir,
            size: 256 << 20,
            seq_bytes: 256 << 20,
            rand_ops: 2000,
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
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// One row per target (nbdkit missing = no row, see `notes`).
    pub rows: Vec<BenchRow>,
    /// Initial full resync rate, MB/s.
    pub resync_mb_s: f64,
    /// Remarks (for example a missing nbdkit).
    pub notes: Vec<String>,
}

impl BenchReport {
    fn row(&self, prefix: &str) -> Option<&BenchRow> {
        self.rows.iter().find(|r| r.name.starts_with(prefix))
    }

    /// The last line: protocol C throughput against no peer, and the added 4 KiB FUA p50.
    pub fn summary(&self) -> String {
        match (self.row("nbd, no peer"), self.row("nbd + peer")) {
            (Some(a), Some(c)) => format!(
                "replica: protocol C at {:.0}% of unreplicated MB/s; 4k FUA p50 +{:.0} us",
                100.0 * c.seq_mb_s / a.seq_mb_s.max(1e-9),
                c.fua_p50_us - a.fua_p50_us
            ),
            _ => "replica: incomplete run".into(),
        }
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<32} {:>10} {:>16} {:>10} {:>10}",
            "target", "seq MB/s", "4k FUA p50 us", "QD1 IOPS", "QD32 IOPS"
        )?;
        for r in &self.rows {
            let qd32 = r.qd32_iops.map_or("-".to_string(), |x| format!("{x:.0}"));
            writeln!(
                f,
                "{:<32} {:>10.1} {:>16.1} {:>10.0} {:>10}",
                r.name, r.seq_mb_s, r.fua_p50_us, r.qd1_iops, qd32
            )?;
        }
        writeln!(
            f,
            "resync (initial full sync): {:.1} MB/s",
            self.resync_mb_s
        )?;
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

fn nbd_workload(
    name: &str,
    addr: SocketAddr,
    export: &str,
    cfg: &BenchConfig,
) -> io::Result<BenchRow> {
    let mut c = Client::connect(addr, export)?;
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
    let small = vec![0xa5u8; 4096];
    let mut lat = Vec::with_capacity(cfg.rand_ops);
    let t = Instant::now();
    for off in offsets(cfg, cfg.rand_ops, 1) {
        let s = Instant::now();
        c.write(off, &small, true)?;
        lat.push(s.elapsed());
    }
    let qd1 = cfg.rand_ops as f64 / t.elapsed().as_secs_f64();
    let ops = offsets(cfg, cfg.rand_ops * 4, 2);
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
    let _ = c.disconnect();
    Ok(BenchRow {
        name: name.into(),
        seq_mb_s: seq,
        fua_p50_us: p50(lat),
        qd1_iops: qd1,
        qd32_iops: Some(qd32),
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
    let t = Instant::now();
    for i in 0..n {
        f.write_all_at(&block, (i << 20) % cfg.size)?;
    }
    f.sync_data()?;
    let seq = (n << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
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

/// Runs every workload and returns the report.
pub fn run(cfg: &BenchConfig) -> io::Result<BenchReport> {
    std::fs::create_dir_all(&cfg.dir)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // 1. Local file.
    let local = cfg.dir.join("local.img");
    sparse(&local, cfg.size)?;
    rows.push(local_workload(&local, cfg)?);
    let _ = std::fs::remove_file(&local);

    // 2. Our NBD server over a file, no peer.
    let rt = runtime()?;
    let plain = cfg.dir.join("plain.img");
    sparse(&plain, cfg.size)?;
    let backend = Arc::new(nbd::FileBackend::open(&plain, false)?);
    let server = nbd::Server::new(vec![nbd::Export::new("plain", backend)]);
    let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = l.local_addr()?;
    rt.spawn(server.clone().serve_tcp(l));
    rows.push(nbd_workload("nbd, no peer (quorate)", addr, "plain", cfg)?);
    server.shutdown();
    drop(rt);
    let _ = std::fs::remove_file(&plain);

    // 3. Replicated volume, protocol C, peer on loopback.
    let (row, resync) = replicated(cfg)?;
    rows.push(row);

    // 4. nbdkit's file plugin on the same kind of file.
    let kit = cfg.dir.join("nbdkit.img");
    sparse(&kit, cfg.size)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    match Command::new("nbdkit")
        .args(["-f", "--exit-with-parent", "-i", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("file")
        .arg(format!("file={}", kit.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            let _guard = Nbdkit(child);
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut up = false;
            for _ in 0..100 {
                if std::net::TcpStream::connect(addr).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                rows.push(nbd_workload("nbdkit file plugin", addr, "", cfg)?);
            } else {
                notes.push("nbdkit did not start listening".into());
            }
        }
        Err(e) => notes.push(format!(
            "nbdkit not run ({e}): install the Debian package nbdkit for the comparison row"
        )),
    }
    let _ = std::fs::remove_file(&kit);
    Ok(BenchReport {
        rows,
        resync_mb_s: resync,
        notes,
    })
}

fn replicated(cfg: &BenchConfig) -> io::Result<(BenchRow, f64)> {
    let mut files = Vec::new();
    let l1 = std::net::TcpListener::bind("127.0.0.1:0")?;
    let l2 = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addrs = [l1.local_addr()?, l2.local_addr()?];
    let mut rts = Vec::new();
    let mut vols = Vec::new();
    for (i, l) in [l1, l2].into_iter().enumerate() {
        let id = i as u32 + 1;
        let disk = cfg.dir.join(format!("r{id}.img"));
        let meta = cfg.dir.join(format!("r{id}.md"));
        sparse(&disk, cfg.size)?;
        create_metadata(&meta, cfg.size, 4096)?;
        files.push(disk.clone());
        files.push(meta.clone());
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
    let resync = cfg.size as f64 / t.elapsed().as_secs_f64() / 1e6;
    let backend = Arc::new(ReplicaBackend::new(
        vols[0].clone(),
        rts[0].handle().clone(),
    ));
    let server = nbd::Server::new(vec![nbd::Export::new("r0", backend)]);
    let l = rts[0].block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = l.local_addr()?;
    rts[0].spawn(server.clone().serve_tcp(l));
    let row = nbd_workload("nbd + peer, protocol C", addr, "r0", cfg);
    server.shutdown();
    for (rt, v) in rts.iter().zip(&vols) {
        rt.block_on(v.stop());
    }
    drop(rts);
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    Ok((row?, resync))
}
