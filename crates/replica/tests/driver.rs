//! Two volumes replicating over loopback TCP, the primary exported over NBD to real clients
//! (nbdcopy from libnbd-bin). The primary's runtime is dropped mid-life (its sockets close like a
//! killed process); the secondary is promoted after fencing and holds every acknowledged block; the
//! old primary returns, resyncs, and both backing files compare equal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use replica::*;
use tokio::sync::mpsc;

const SIZE: u64 = 32 << 20;

fn require(tool: &str, package: &str) {
    let ok = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs `{tool}`: install the Debian package `{package}`"
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Node {
    rt: tokio::runtime::Runtime,
    vol: Volume,
    events: mpsc::UnboundedReceiver<VolumeEvent>,
    nbd_port: u16,
}

fn start(dir: &Path, id: u32, listen: std::net::TcpListener, peer: std::net::SocketAddr) -> Node {
    let rt = rt();
    let mut rc = ReplicaConfig::new(id);
    rc.ping_interval = base::Duration::from_millis(500);
    let cfg = VolumeConfig {
        replica: rc,
        disk: dir.join(format!("n{id}.img")),
        meta: dir.join(format!("n{id}.md")),
        peer,
        peer_node_id: 3 - id,
        seed: id as u64 * 1000 + 7,
    };
    let (etx, events) = mpsc::unbounded_channel();
    listen.set_nonblocking(true).unwrap();
    let vol = rt.block_on(async {
        let l = tokio::net::TcpListener::from_std(listen).unwrap();
        Volume::start(cfg, l, etx).await.unwrap()
    });
    vol.connect();
    let backend = Arc::new(ReplicaBackend::new(vol.clone(), rt.handle().clone()));
    let server = nbd::Server::new(vec![nbd::Export::new("r0", backend)]);
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let nbd_port = l.local_addr().unwrap().port();
    rt.spawn(server.serve_tcp(l));
    Node {
        rt,
        vol,
        events,
        nbd_port,
    }
}

fn wait(n: &Node, what: &str, f: impl Fn(&Status) -> bool) {
    for _ in 0..400 {
        if let Some(s) = n.rt.block_on(n.vol.status()) {
            if f(&s) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "timeout waiting for {what}: {:?}",
        n.rt.block_on(n.vol.status())
    );
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn image(seed: u64) -> Vec<u8> {
    let mut r = base::DetRng::new(seed);
    let mut v = vec![0u8; (16 << 20) as usize];
    for c in v.chunks_mut(8) {
        c.copy_from_slice(&r.next_u64().to_le_bytes());
    }
    v
}

#[test]
fn nbd_over_replica_failover_and_resync() {
    require("nbdcopy", "libnbd-bin");
    let dir: PathBuf = std::env::temp_dir().join(format!("replica-driver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for id in 1..=2 {
        let f = std::fs::File::create(dir.join(format!("n{id}.img"))).unwrap();
        f.set_len(SIZE).unwrap();
        create_metadata(&dir.join(format!("n{id}.md")), SIZE, 4096).unwrap();
    }
    let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let n1 = start(&dir, 1, l1, a2);
    let n2 = start(&dir, 2, l2, a1);
    wait(&n1, "connection", |s| s.conn == ConnState::Connected);
    // Initial sync from a forced primary.
    n1.rt.block_on(n1.vol.promote(true)).unwrap();
    wait(&n2, "initial sync", |s| s.disk == DiskState::UpToDate);

    // A real NBD client writes through the primary.
    let img = image(42);
    let src = dir.join("src.img");
    std::fs::write(&src, &img).unwrap();
    run(Command::new("nbdcopy")
        .arg(&src)
        .arg(format!("nbd://127.0.0.1:{}/r0", n1.nbd_port)));
    // QEMU's block layer reads the same data back through the replica (qemu-img from qemu-utils).
    require("qemu-img", "qemu-utils");
    let whole = dir.join("whole.img");
    let mut padded = img.clone();
    padded.resize(SIZE as usize, 0);
    std::fs::write(&whole, &padded).unwrap();
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&whole)
        .arg(format!("nbd://127.0.0.1:{}/r0", n1.nbd_port)));
    // Protocol C: every acknowledged block is on the secondary's disk already.
    let b = std::fs::read(dir.join("n2.img")).unwrap();
    assert!(
        b[..img.len()] == img[..],
        "secondary misses acknowledged data"
    );
    // The secondary refuses I/O.
    let o = Command::new("nbdcopy")
        .arg(&src)
        .arg(format!("nbd://127.0.0.1:{}/r0", n2.nbd_port))
        .output()
        .unwrap();
    assert!(!o.status.success(), "write to a secondary succeeded");

    // The primary dies (runtime dropped: sockets close, nothing is flushed or demoted).
    let Node { rt, vol, .. } = n1;
    drop(vol);
    rt.shutdown_timeout(Duration::from_millis(100));
    wait(&n2, "peer loss", |s| s.conn == ConnState::WfConnection);
    let mut n2 = n2;
    assert_eq!(
        n2.rt.block_on(n2.vol.promote(false)),
        Err(ReplicaError::NeedFencing)
    );
    let asked = n2.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = n2.events.recv().await {
                if e == VolumeEvent::FencePeer {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    });
    assert!(asked, "fence handler was not called");
    n2.vol.fence_result(FenceOutcome::PeerFenced);
    n2.rt.block_on(n2.vol.promote(false)).unwrap();
    // New primary serves the data and takes new writes.
    let back = dir.join("back.img");
    run(Command::new("nbdcopy")
        .arg(format!("nbd://127.0.0.1:{}/r0", n2.nbd_port))
        .arg(&back));
    assert!(std::fs::read(&back).unwrap()[..img.len()] == img[..]);
    let img2 = image(43);
    std::fs::write(&src, &img2[..4 << 20]).unwrap();
    run(Command::new("nbdcopy")
        .arg(&src)
        .arg(format!("nbd://127.0.0.1:{}/r0", n2.nbd_port)));

    // The old primary returns and resyncs only what changed.
    let l1 = std::net::TcpListener::bind(a1).unwrap();
    let n1 = start(&dir, 1, l1, a2);
    wait(&n1, "resync", |s| {
        s.conn == ConnState::Connected && s.disk == DiskState::UpToDate
    });
    wait(&n2, "resync done", |s| s.out_of_sync_bytes == 0);
    let mut n1 = n1;
    let mut resync = None;
    while let Ok(e) = n1.events.try_recv() {
        if let VolumeEvent::Engine(Event::ResyncStarted { source, bytes }) = e {
            resync = Some((source, bytes));
        }
    }
    let (source, bytes) = resync.expect("the returning node resynced");
    assert!(!source);
    assert!(
        bytes > 0 && bytes < SIZE,
        "bitmap-based resync, not a full sync: {bytes} bytes"
    );
    eprintln!("resync after failover: {bytes} bytes of {SIZE}");
    let a = std::fs::read(dir.join("n1.img")).unwrap();
    let b = std::fs::read(dir.join("n2.img")).unwrap();
    assert!(a == b, "backing files differ after resync");
    assert!(a[..4 << 20] == img2[..4 << 20]);
    n1.rt.block_on(n1.vol.stop());
    n2.rt.block_on(n2.vol.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Touching a cold extent writes the activity log's in-place journal, not the whole metadata;
/// after a crash of the primary, the journal's extents are what is marked out of sync.
#[test]
fn a_crashed_primary_finds_its_hot_extents_in_the_activity_log_journal() {
    let dir = tempfile::tempdir().unwrap();
    let size = 96u64 << 20;
    let disk = dir.path().join("d.img");
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
    let meta = dir.path().join("d.md");
    create_metadata(&meta, size, 4096).unwrap();
    // Nobody listens at the peer's address: the volume stays StandAlone.
    let peer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = VolumeConfig {
        replica: ReplicaConfig::new(1),
        disk: disk.clone(),
        meta: meta.clone(),
        peer,
        peer_node_id: 2,
        seed: 5,
    };
    let open = |rt: &tokio::runtime::Runtime| {
        let (etx, erx) = mpsc::unbounded_channel();
        std::mem::forget(erx);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            Volume::start(cfg.clone(), l, etx).await.unwrap()
        })
    };
    let r1 = rt();
    let v = open(&r1);
    r1.block_on(v.promote(true)).unwrap();
    let extents = [0u64, 10, 20];
    for e in extents {
        r1.block_on(v.write(e * (4 << 20) + 8192, vec![0xab; 4096], false))
            .unwrap();
    }
    // The metadata file was not rewritten for the new extents; the journal has them.
    let m = Metadata::decode(&std::fs::read(&meta).unwrap()).unwrap();
    assert!(
        m.al.extents().all(|e| !extents[1..].contains(&e)),
        "the metadata was rewritten for an activity-log change: {:?}",
        m.al.extents().collect::<Vec<_>>()
    );
    assert!(m.flags.primary);
    // The primary crashes: no stop, no clean detach.
    drop(v);
    r1.shutdown_timeout(Duration::from_millis(100));
    let r2 = rt();
    let v = open(&r2);
    let st = r2.block_on(v.status()).unwrap();
    assert_eq!(
        st.out_of_sync_bytes,
        extents.len() as u64 * (4 << 20),
        "after the crash exactly the journal's hot extents are out of sync: {st:?}"
    );
    r2.block_on(v.stop());
}
