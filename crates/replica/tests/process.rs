//! Real processes: two replica nodes as separate OS processes (this test binary re-executed as a
//! node), an NBD client writing through the primary with a write log, the primary SIGKILLed with
//! writes in flight, the secondary promoted after fencing and checked against the log, the old
//! primary restarted, resynced from the bitmap, and both backing files compared by checksum.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use replica::*;

const SIZE: u64 = 32 << 20;
const BLOCKS: u64 = 1024;

/// The node side: runs only when re-executed with `REPLICA_NODE` set.
#[test]
#[ignore]
fn node_process() {
    let Ok(spec) = std::env::var("REPLICA_NODE") else {
        return;
    };
    let v: Vec<&str> = spec.split(',').collect();
    let (id, dir, listen, peer, nbd_port): (u32, PathBuf, u16, u16, u16) = (
        v[0].parse().unwrap(),
        v[1].into(),
        v[2].parse().unwrap(),
        v[3].parse().unwrap(),
        v[4].parse().unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rc = ReplicaConfig::new(id);
    rc.ping_interval = base::Duration::from_millis(300);
    let cfg = VolumeConfig {
        replica: rc,
        disk: dir.join(format!("n{id}.img")),
        meta: dir.join(format!("n{id}.md")),
        peer: ([127, 0, 0, 1], peer).into(),
        peer_node_id: 3 - id,
        seed: std::process::id() as u64,
    };
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    let vol = rt.block_on(async {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", listen))
            .await
            .unwrap();
        Volume::start(cfg, l, etx).await.unwrap()
    });
    vol.connect();
    let backend = std::sync::Arc::new(ReplicaBackend::new(vol.clone(), rt.handle().clone()));
    let server = nbd::Server::new(vec![nbd::Export::new("r0", backend)]);
    let l = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", nbd_port)))
        .unwrap();
    rt.spawn(server.serve_tcp(l));
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let o2 = out.clone();
    rt.spawn(async move {
        while let Some(e) = erx.recv().await {
            let line = match e {
                VolumeEvent::Engine(Event::ResyncStarted { source, bytes }) => {
                    format!("EVENT resync {source} {bytes}")
                }
                VolumeEvent::FencePeer => "EVENT fence".into(),
                other => format!("EVENT {other:?}"),
            };
            let mut o = o2.lock().unwrap();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    });
    let say = |s: String| {
        let mut o = out.lock().unwrap();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    say("READY".into());
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let reply = match line.trim() {
            "status" => format!(
                "STATUS {}",
                serde_json::to_string(&rt.block_on(vol.status()).unwrap()).unwrap()
            ),
            "promote" => format!("OK {:?}", rt.block_on(vol.promote(false))),
            "promote-force" => format!("OK {:?}", rt.block_on(vol.promote(true))),
            "fenced" => {
                vol.fence_result(FenceOutcome::PeerFenced);
                "OK fenced".into()
            }
            other => format!("ERR unknown command {other}"),
        };
        say(reply);
    }
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    events: Vec<String>,
}

impl Proc {
    fn spawn(id: u32, dir: &Path, ports: [u16; 4]) -> Proc {
        let (listen, peer, nbd) = if id == 1 {
            (ports[0], ports[1], ports[2])
        } else {
            (ports[1], ports[0], ports[3])
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "node_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "REPLICA_NODE",
                format!("{id},{},{listen},{peer},{nbd}", dir.display()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut p = Proc {
            child,
            stdin,
            lines,
            events: Vec::new(),
        };
        p.expect("READY");
        p
    }

    fn expect(&mut self, prefix: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("node did not say {prefix}"));
            // libtest may print "test node_process ... " before the first line.
            if let Some(i) = l.find("EVENT") {
                self.events.push(l[i..].to_string());
            } else if let Some(i) = l.find(prefix) {
                return l[i..].to_string();
            }
        }
    }

    fn cmd(&mut self, c: &str, reply: &str) -> String {
        writeln!(self.stdin, "{c}").unwrap();
        self.expect(reply)
    }

    fn status(&mut self) -> serde_json::Value {
        let l = self.cmd("status", "STATUS ");
        serde_json::from_str(&l["STATUS ".len()..]).unwrap()
    }

    fn wait(&mut self, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
        for _ in 0..400 {
            let s = self.status();
            if f(&s) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("timeout waiting for {what}: {}", self.status());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn payload(id: u64) -> Vec<u8> {
    let mut v = vec![(id % 251) as u8; 4096];
    v[..8].copy_from_slice(&id.to_le_bytes());
    v
}

#[test]
fn sigkill_primary_failover_and_resync_between_processes() {
    let dir = std::env::temp_dir().join(format!("replica-proc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for id in 1..=2 {
        std::fs::File::create(dir.join(format!("n{id}.img")))
            .unwrap()
            .set_len(SIZE)
            .unwrap();
        create_metadata(&dir.join(format!("n{id}.md")), SIZE, 4096).unwrap();
    }
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut n1 = Proc::spawn(1, &dir, ports);
    let mut n2 = Proc::spawn(2, &dir, ports);
    n1.wait("connected", |s| s["conn"] == "Connected");
    n1.cmd("promote-force", "OK Ok");
    n2.wait("initial sync", |s| s["disk"] == "UpToDate");

    // Write log: block -> highest acknowledged write id.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut c = nbd::Client::connect(("127.0.0.1", ports[2]), "r0").unwrap();
    let mut rng = base::DetRng::new(9);
    let mut sent: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut id = 0;
    for _ in 0..300 {
        id += 1;
        let block = rng.below(BLOCKS);
        if sent.values().any(|(b, _)| *b == block) {
            continue;
        }
        let cookie = c.send_write(block * 4096, &payload(id), false).unwrap();
        sent.insert(cookie, (block, id));
        if sent.len() >= 16 {
            let r = c.recv().unwrap();
            assert_eq!(r.error, 0);
            let (b, i) = sent.remove(&r.cookie).unwrap();
            acked.insert(b, i);
        }
    }
    // Kill the primary with writes in flight (std's Child::kill sends SIGKILL).
    n1.child.kill().unwrap();
    while let Ok(r) = c.recv() {
        if r.error == 0 {
            if let Some((b, i)) = sent.remove(&r.cookie) {
                acked.insert(b, i);
            }
        }
    }
    drop(n1);
    assert!(
        acked.len() > 200,
        "only {} acknowledged writes",
        acked.len()
    );

    n2.wait("peer loss", |s| s["conn"] == "WfConnection");
    let r = n2.cmd("promote", "OK ");
    assert!(r.contains("NeedFencing"), "{r}");
    n2.cmd("fenced", "OK fenced");
    let r = n2.cmd("promote", "OK ");
    assert_eq!(r, "OK Ok(())");
    // Every acknowledged block is there (or a later write of it that was in flight).
    let mut c2 = nbd::Client::connect(("127.0.0.1", ports[3]), "r0").unwrap();
    for (b, i) in &acked {
        let d = c2.read(b * 4096, 4096).unwrap();
        let on = u64::from_le_bytes(d[..8].try_into().unwrap());
        assert!(on >= *i, "block {b}: found write {on}, acknowledged {i}");
    }
    // New primary takes more writes while the old one is down.
    for k in 0..50u64 {
        c2.write(k * 4096, &payload(10_000 + k), true).unwrap();
    }
    c2.flush().unwrap();

    // The old primary restarts, resyncs from the bitmap, and the files match.
    let mut n1 = Proc::spawn(1, &dir, ports);
    n1.wait("resync", |s| {
        s["conn"] == "Connected" && s["disk"] == "UpToDate"
    });
    n2.wait("peer in sync", |s| s["out_of_sync_bytes"] == 0);
    let resync: Vec<&String> = n1
        .events
        .iter()
        .filter(|e| e.starts_with("EVENT resync"))
        .collect();
    assert_eq!(resync.len(), 1, "{:?}", n1.events);
    let bytes: u64 = resync[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes < SIZE, "bitmap resync, not full: {bytes}");
    eprintln!("old primary resynced {bytes} of {SIZE} bytes");
    let a = crc32fast::hash(&std::fs::read(dir.join("n1.img")).unwrap());
    let b = crc32fast::hash(&std::fs::read(dir.join("n2.img")).unwrap());
    assert_eq!(a, b, "checksums differ after resync");
    drop(n1);
    drop(n2);
    let _ = std::fs::remove_dir_all(&dir);
}
