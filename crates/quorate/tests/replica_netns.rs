//! A replicated volume in a real two-node cluster: `quorate node` processes in network namespaces
//! (crates/labcluster) with a `<replicas>` volume and a service whose tree is `replica` then an
//! address and a script. An NBD client in a namespace of its own on the storage network writes
//! through the primary's export with a write log; the primary is SIGKILLed with writes in flight;
//! the survivor fences it through the power switch, is promoted, and holds every acknowledged
//! block; it takes more writes; the old primary is powered back on, resyncs only what changed, and
//! both backing files compare equal by checksum. Needs root, iproute2, nftables and libnbd-bin.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIZE: u64 = 32 << 20;
/// Writes land in the first 4 MiB (1024 blocks of 4 KiB).
const BLOCKS: u64 = 1024;
const NBD_PORT: u16 = 10809;
const CLIENT: &str = "192.168.2.200";

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn payload(id: u64) -> Vec<u8> {
    let mut v = vec![0u8; 4096];
    for c in v.chunks_mut(8) {
        c.copy_from_slice(&id.to_le_bytes());
    }
    v
}

/// The writer side: runs only when re-executed (inside the client namespace) with
/// `REPLICA_WRITER=ADDR,FIRST_ID,COUNT,SEED` set. Writes 4 KiB blocks to export `r0` with 16 in
/// flight (never two to one block at once) and prints `ACK BLOCK ID UNIX_MS` for each acknowledged one.
#[test]
#[ignore]
fn writer_process() {
    let Ok(spec) = std::env::var("REPLICA_WRITER") else {
        return;
    };
    let v: Vec<&str> = spec.split(',').collect();
    let addr = v[0].to_string();
    let (first, count, seed): (u64, u64, u64) = (
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
        v[3].parse().unwrap(),
    );
    let mut c = match nbd::Client::connect(addr.as_str(), "r0") {
        Ok(c) => c,
        Err(e) => {
            println!("DOWN connect: {e}");
            return;
        }
    };
    let mut rng = base::DetRng::new(seed);
    let mut sent: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut id = first;
    let recv_one = |c: &mut nbd::Client, sent: &mut BTreeMap<u64, (u64, u64)>| match c.recv() {
        Ok(r) => {
            if let Some((b, i)) = sent.remove(&r.cookie) {
                if r.error == 0 {
                    println!("ACK {b} {i} {}", unix_ms());
                } else {
                    println!("ERR {b} {i} {}", r.error);
                }
            }
            true
        }
        Err(e) => {
            println!("DOWN {e}");
            false
        }
    };
    while id < first + count {
        let block = rng.below(BLOCKS);
        if sent.values().any(|(b, _)| *b == block) {
            continue;
        }
        match c.send_write(block * 4096, &payload(id), false) {
            Ok(cookie) => {
                sent.insert(cookie, (block, id));
            }
            Err(e) => {
                println!("DOWN {e}");
                return;
            }
        }
        id += 1;
        if sent.len() >= 16 && !recv_one(&mut c, &mut sent) {
            return;
        }
    }
    while !sent.is_empty() {
        if !recv_one(&mut c, &mut sent) {
            return;
        }
    }
    match c.flush() {
        Ok(()) => println!("DONE"),
        Err(e) => println!("DOWN flush: {e}"),
    }
}

/// A writer process in namespace `ns`; its ACK lines arrive on the returned channel.
fn spawn_writer(
    ns: &str,
    addr: &str,
    first: u64,
    count: u64,
    seed: u64,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REPLICA_WRITER", format!("{addr},{first},{count},{seed}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            for tag in ["ACK ", "ERR ", "DOWN", "DONE"] {
                if let Some(i) = l.find(tag) {
                    if tx.send(l[i..].to_string()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (child, rx)
}

/// An LSB script that records where it ran.
fn app_script(dir: &Path) -> PathBuf {
    let path = dir.join("app.sh");
    let d = dir.display();
    write_script(
        &path,
        &format!(
            r#"#!/bin/sh
ns=$(ip netns identify $$ 2>/dev/null)
case "$1" in
start) touch "{d}/app.$ns"; exit 0 ;;
stop) rm -f "{d}/app.$ns"; exit 0 ;;
status) [ -e "{d}/app.$ns" ] && exit 0; exit 3 ;;
*) exit 3 ;;
esac
"#
        ),
    );
    path
}

fn block_id(file: &Path, block: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, block * 4096).unwrap();
    u64::from_le_bytes(b)
}

/// A two-node cluster with the volume r0 under service `web` (replica, address, script), booted,
/// with `web` on n1 and the initial sync done. Returns the cluster, the client namespace, both
/// NBD addresses and the backing files.
struct Setup {
    c: labcluster::LabCluster,
    client: String,
    nbd: [String; 2],
    disks: [PathBuf; 2],
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    setup_with("")
}

/// [`setup`] with extra attributes on the `<replica>`.
fn setup_with(replica_attrs: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let script = app_script(&d);
    let disk = |n: &str| d.join(format!("{n}-r0.img"));
    let mut conf = Conf::new(2);
    conf.cman = r#"<cman two_node="1" expected_votes="1"/>"#.into();
    conf.extra = format!(
        r#"<replicas><replica name="r0" size="32M" nbd_port="{NBD_PORT}"{replica_attrs}>
      <node name="n1" disk="{}"/><node name="n2" disk="{}"/>
    </replica></replicas>"#,
        disk("n1").display(),
        disk("n2").display()
    );
    conf.rm_attrs = r#"status_poll_interval="2""#.into();
    conf.rm = default_rm(
        &conf.names,
        r#"recovery="relocate""#,
        &format!(
            r#"<replica name="r0"/><script name="app" file="{}"/>"#,
            script.display()
        ),
    );
    let mut c = conf.start(&d);
    let client = ok(c
        .lab_mut()
        .add_host("cli", 1, &[CLIENT.parse().unwrap()])
        .map_err(|e| e.to_string()));
    let nbd = [0, 1].map(|i| format!("{}:{NBD_PORT}", c.lab().addr(i, 1)));
    boot(&c);
    let owner = web_started(&c, 0);
    assert_eq!(owner, 0, "the domain's first node runs the service");
    // First start: a brand-new volume, promoted where the service starts; full initial sync.
    ok(
        c.wait("n1 primary, n2 in sync", Duration::from_secs(60), |c| {
            let (r1, r2) = (replica(c, 0), replica(c, 1));
            r1["role"] == "Primary"
                && r1["conn"] == "Connected"
                && r1["peer_disk"] == "UpToDate"
                && r2["role"] == "Secondary"
                && r2["disk"] == "UpToDate"
        }),
    );
    Setup {
        c,
        client,
        nbd,
        disks: [disk("n1"), disk("n2")],
        _dir: dir,
    }
}

#[test]
fn primary_killed_survivor_fenced_promoted_holds_acked_writes_old_primary_resyncs_the_difference() {
    let Setup {
        c,
        client,
        nbd,
        disks,
        _dir,
    } = setup();
    let (a1, a2) = (nbd[0].clone(), nbd[1].clone());
    let disk = |n: &str| disks[if n == "n1" { 0 } else { 1 }].clone();
    let r1 = replica(&c, 0);
    assert_eq!(r1["nbd"], format!("nbd://{a1}/r0"), "{r1}");
    assert!(
        r1["why"].as_str().unwrap().contains("in sync with n2"),
        "{r1}"
    );
    // The secondary does not serve: a real NBD client is refused.
    let info = Command::new("ip")
        .args(["netns", "exec", &client, "nbdinfo"])
        .arg(format!("nbd://{a2}/r0"))
        .output()
        .expect("nbdinfo (libnbd-bin)");
    assert!(!info.status.success(), "the secondary must not serve NBD");
    let info = Command::new("ip")
        .args(["netns", "exec", &client, "nbdinfo", "--size"])
        .arg(format!("nbd://{a1}/r0"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&info.stdout).trim(),
        SIZE.to_string()
    );
    // The CLI for people and --json.
    let o = cli(&c, 0, &["replica", "status"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("r0: Primary/Secondary  Connected  UpToDate/UpToDate  protocol C"),
        "{text}"
    );
    let o = cli(&c, 1, &["replica", "primary", "r0"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "promoting over a primary peer is refused"
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("n1 is primary") && e.contains("hint:"), "{e}");
    let o = cli(&c, 1, &["replica", "disconnect", "r0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("freeze its I/O and fence its peer") && e.contains("--force"),
        "{e}"
    );

    // Writes in flight through the primary, then the primary's node is SIGKILLed.
    let (mut w, lines) = spawn_writer(&client, &a1, 1, 1_000_000, 7);
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut crashed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(l) = lines.recv_timeout(Duration::from_secs(30)) else {
            panic!("the writer went silent\n{}", c.post_mortem());
        };
        let f: Vec<&str> = l.split_whitespace().collect();
        match f[0] {
            "ACK" => {
                acked.insert(f[1].parse().unwrap(), f[2].parse().unwrap());
            }
            "DOWN" if crashed => break,
            other => panic!("writer: {l} ({other})\n{}", c.post_mortem()),
        }
        if !crashed && acked.len() >= 300 {
            ok(c.crash(0));
            crashed = true;
        }
        assert!(Instant::now() < deadline, "writer too slow");
    }
    let _ = w.wait();
    eprintln!("{} blocks acknowledged before the crash", acked.len());

    // The survivor fences n1 (its outlet goes off), is promoted, runs the service.
    ok(
        c.wait("n1 fenced and web on n2", Duration::from_secs(60), |c| {
            c.is_off(0)
                && service(c, 1, "web")["state"] == "Started"
                && service(c, 1, "web")["owner_name"] == "n2"
        }),
    );
    let r2 = replica(&c, 1);
    assert_eq!(r2["role"], "Primary", "{r2}");
    assert_eq!(r2["disk"], "UpToDate", "{r2}");
    assert_eq!(r2["peer_fenced"], true, "promoted only after fencing: {r2}");
    let events = log_text(&c, 1);
    assert!(events.contains("replica r0: n1 is fenced"), "{events}");
    // Every acknowledged block is on the survivor's disk (or a later write of it).
    for (b, i) in &acked {
        let on = block_id(&disk("n2"), *b);
        assert!(
            on >= *i,
            "block {b}: n2 has write {on}, write {i} was acknowledged"
        );
    }

    // The new primary serves and takes writes while n1 is down.
    let (mut w, lines) = spawn_writer(&client, &a2, 2_000_000, 50, 11);
    let mut acked2 = BTreeMap::new();
    loop {
        let l = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("writer on n2");
        let f: Vec<&str> = l.split_whitespace().collect();
        match f[0] {
            "ACK" => {
                acked2.insert(f[1].parse::<u64>().unwrap(), f[2].parse::<u64>().unwrap());
            }
            "DONE" => break,
            _ => panic!("writer on n2: {l}\n{}", c.post_mortem()),
        }
    }
    let _ = w.wait();
    assert!(!acked2.is_empty());
    let r2 = replica(&c, 1);
    let dirty = r2["out_of_sync_bytes"].as_u64().unwrap();
    assert!(dirty > 0 && dirty < SIZE, "n2 tracks what n1 misses: {r2}");

    // n1 powers on: it rejoins, resyncs only the difference, and the disks are equal.
    ok(c.power_on(0));
    ok(c.wait("n1 back in sync", Duration::from_secs(90), |c| {
        let (r1, r2) = (replica(c, 0), replica(c, 1));
        r1["role"] == "Secondary"
            && r1["disk"] == "UpToDate"
            && r2["conn"] == "Connected"
            && r2["out_of_sync_bytes"] == 0
    }));
    let events = log_text(&c, 0);
    let resync: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("replica r0: resync started as target"))
        .collect();
    assert_eq!(resync.len(), 1, "{events}");
    let bytes: u64 = resync[0]
        .split(": ")
        .nth(2)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        bytes <= SIZE / 4,
        "a bitmap resync, not a full one: {}",
        resync[0]
    );
    eprintln!("old primary resynced {bytes} of {SIZE} bytes");
    ok(c.wait(
        "n1 sees web on n2 (nofailback)",
        Duration::from_secs(30),
        |c| service(c, 0, "web")["owner_name"] == "n2",
    ));
    assert_eq!(service(&c, 1, "web")["owner_name"], "n2", "nofailback");
    assert_eq!(
        sha256(&disk("n1")),
        sha256(&disk("n2")),
        "backing files differ"
    );
    // A real NBD client reads the whole volume from the new primary: the same bytes.
    let copy = disks[0].with_file_name("copy.img");
    let o = Command::new("ip")
        .args(["netns", "exec", &client, "nbdcopy"])
        .arg(format!("nbd://{a2}/r0"))
        .arg(&copy)
        .output()
        .expect("nbdcopy (libnbd-bin)");
    assert!(
        o.status.success(),
        "nbdcopy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        sha256(&copy),
        sha256(&disk("n2")),
        "the export differs from its disk"
    );
}

/// Reads writer lines (as `(unix ms, block, id)`) until `stop` says so; panics on a write error
/// or a silent writer.
fn collect(
    c: &labcluster::LabCluster,
    lines: &std::sync::mpsc::Receiver<String>,
    acked: &mut Vec<(u64, u64, u64)>,
    mut stop: impl FnMut(&str, &[(u64, u64, u64)]) -> bool,
) {
    loop {
        let Ok(l) = lines.recv_timeout(Duration::from_secs(30)) else {
            panic!("the writer went silent\n{}", c.post_mortem());
        };
        let f: Vec<&str> = l.split_whitespace().collect();
        if f[0] == "ACK" {
            acked.push((
                f[3].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            ));
        } else if f[0] != "DONE" {
            panic!("writer: {l}\n{}", c.post_mortem());
        }
        if stop(&l, acked) {
            return;
        }
    }
}

#[test]
fn storage_link_cut_freezes_the_primary_until_the_peer_is_fenced_then_writes_resume() {
    let Setup {
        c,
        client,
        nbd,
        _dir,
        ..
    } = setup();
    let (mut w, lines) = spawn_writer(&client, &nbd[0], 1, 1_000_000, 5);
    let mut acked = Vec::new();
    collect(&c, &lines, &mut acked, |_, a| a.len() >= 100);
    // Pull n2's storage cable: totem stays up on ring 0, the replication link dies.
    ok(c.lab().set_ring(1, 1, false).map_err(|e| e.to_string()));
    ok(c.wait("n1 frozen", Duration::from_secs(20), |c| {
        replica(c, 0)["frozen"] == true
    }));
    // resource-and-stonith: n2 is still a member, so n1 fences it; then I/O resumes.
    ok(
        c.wait("n2 fenced, n1 resumed", Duration::from_secs(60), |c| {
            c.is_off(1) && replica(c, 0)["frozen"] == false
        }),
    );
    // Writes acknowledged after the resume (the channel still holds the ones from before).
    let resumed = unix_ms();
    collect(&c, &lines, &mut acked, |_, a| {
        a.iter().filter(|(t, _, _)| *t > resumed).count() >= 50
    });
    let _ = w.kill();
    let _ = w.wait();
    // The write stream stalled while frozen: at least the two token timeouts (2 s) the node gives
    // totem before it fences a member.
    let stall = acked
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .max()
        .unwrap();
    assert!(
        stall >= 1500,
        "the longest gap between acknowledgements is {stall} ms"
    );
    eprintln!("writes stalled {stall} ms while n1 was frozen");
    let events = log_text(&c, 0);
    let mut last = 0;
    for needle in [
        "replica r0: I/O FROZEN",
        "replica r0: replication link to n2 lost while it is a member; fencing it",
        "replica r0: n2 is fenced",
        "replica r0: I/O resumed",
    ] {
        let at =
            log_pos(&c, 0, needle).unwrap_or_else(|| panic!("{needle:?} missing from\n{events}"));
        assert!(at >= last, "{needle:?} out of order in\n{events}");
        last = at;
    }
    let r1 = replica(&c, 0);
    assert_eq!(r1["role"], "Primary", "{r1}");
    assert!(
        r1["out_of_sync_bytes"].as_u64().unwrap() > 0,
        "n1 tracks what n2 misses: {r1}"
    );
    assert_eq!(
        service(&c, 0, "web")["owner_name"],
        "n1",
        "the service stayed on n1"
    );
}

#[test]
fn two_primaries_only_inside_a_migration_window_and_writes_on_the_target_reach_the_source() {
    let Setup {
        c,
        client,
        nbd,
        disks,
        _dir,
    } = setup_with(r#" allow-two-primaries="1""#);
    let ask = |i: usize, args: serde_json::Value| c.ask_with(i, "replica.primary", args);
    // Outside a migration the target is refused even though the volume allows two primaries.
    let e = ask(1, serde_json::json!({"name": "r0"})).unwrap_err();
    assert!(e.contains("n1 is primary"), "{e}");
    let o = cli(&c, 1, &["replica", "primary", "r0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && e.contains("only while a live migration is in flight"),
        "{e}"
    );
    // The migration window: both sides primary, the target serves and replicates to the source.
    let v = ok(ask(1, serde_json::json!({"name": "r0", "migration": true})));
    assert_eq!(v["role"], "Primary", "{v}");
    assert_eq!(v["migration_window"], true, "{v}");
    assert_eq!(replica(&c, 0)["role"], "Primary");
    ok(c.wait("n1 sees n2 primary", Duration::from_secs(10), |c| {
        replica(c, 0)["peer_role"] == "Primary"
    }));
    let (mut w, lines) = spawn_writer(&client, &nbd[1], 5_000_000, 64, 3);
    let mut acked = Vec::new();
    collect(&c, &lines, &mut acked, |l, _| l == "DONE");
    let _ = w.wait();
    assert_eq!(acked.len(), 64);
    // Protocol C: an acknowledged write on the target is on the source's disk too.
    for (_, b, i) in &acked {
        assert!(
            block_id(&disks[0], *b) >= *i,
            "block {b} of write {i} missing on the source"
        );
        assert!(
            block_id(&disks[1], *b) >= *i,
            "block {b} of write {i} missing on the target"
        );
    }
    // The source's guest quit: it demotes and the window is closed.
    let v = ok(c.ask_with(0, "replica.secondary", serde_json::json!({"name": "r0"})));
    assert_eq!(v["role"], "Secondary", "{v}");
    let e = ask(0, serde_json::json!({"name": "r0"})).unwrap_err();
    assert!(e.contains("n2 is primary"), "{e}");
}

#[test]
fn split_brain_is_detected_and_the_operator_chooses_the_victim() {
    let Setup {
        c,
        client,
        nbd,
        disks,
        _dir,
    } = setup_with(r#" fencing="resource-only""#);
    let run = |i: usize, args: &[&str]| {
        let o = cli(&c, i, args);
        assert!(
            o.status.success(),
            "quorate {args:?} on n{}: {}{}",
            i + 1,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // Both sides disconnected (resource-only: nobody is fenced for it), and n2 forced
    // primary: two primaries that diverge.
    run(0, &["replica", "disconnect", "r0"]);
    run(1, &["replica", "disconnect", "r0"]);
    run(1, &["replica", "primary", "r0", "--force"]);
    for (i, first) in [(0usize, 7_000_000u64), (1, 8_000_000)] {
        let (mut w, lines) = spawn_writer(&client, &nbd[i], first, 32, first);
        let mut acked = Vec::new();
        collect(&c, &lines, &mut acked, |l, _| l == "DONE");
        let _ = w.wait();
    }
    run(0, &["replica", "connect", "r0"]);
    run(1, &["replica", "connect", "r0"]);
    ok(c.wait("split brain on both", Duration::from_secs(20), |c| {
        (0..2).all(|i| {
            let r = replica(c, i);
            !r["split_brain"].is_null() && r["conn"] == "StandAlone"
        })
    }));
    let o = cli(&c, 1, &["replica", "status", "r0"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("split brain with n1"), "{text}");
    // Both event logs say it in words.
    for i in 0..2 {
        let events = log_text(&c, i);
        assert!(
            events.contains("replica r0: handshake: SPLIT BRAIN"),
            "n{}: {events}",
            i + 1
        );
    }
    assert!(text.contains("discard-my-data"), "{text}");
    // The victim must be secondary; then its changes are overwritten by n1's.
    let o = cli(&c, 1, &["replica", "discard-my-data", "r0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("must be secondary"));
    run(1, &["replica", "secondary", "r0"]);
    run(1, &["replica", "discard-my-data", "r0"]);
    run(0, &["replica", "connect", "r0"]);
    ok(c.wait("n2 resynced from n1", Duration::from_secs(60), |c| {
        let (r1, r2) = (replica(c, 0), replica(c, 1));
        r1["conn"] == "Connected"
            && r1["out_of_sync_bytes"] == 0
            && r2["disk"] == "UpToDate"
            && r2["split_brain"].is_null()
    }));
    assert_eq!(
        sha256(&disks[0]),
        sha256(&disks[1]),
        "the victim's disk equals the survivor's"
    );
    let on_victim = (0..BLOCKS)
        .filter(|b| block_id(&disks[1], *b) >= 8_000_000)
        .count();
    assert_eq!(on_victim, 0, "the victim's own writes are gone");
}

#[test]
fn a_secondary_that_leaves_cleanly_is_outdated_not_fenced_and_the_primary_goes_on() {
    let Setup {
        c,
        client,
        nbd,
        _dir,
        ..
    } = setup();
    let (mut w, lines) = spawn_writer(&client, &nbd[0], 1, 1_000_000, 9);
    let mut acked = Vec::new();
    collect(&c, &lines, &mut acked, |_, a| a.len() >= 50);
    let o = cli(&c, 1, &["cman", "leave"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(c.wait("n2 gone", Duration::from_secs(30), |c| {
        c.ask(1, "status").is_none() && c.sees(0, &[0], true)
    }));
    let left = unix_ms();
    collect(&c, &lines, &mut acked, |_, a| {
        a.iter().filter(|(t, _, _)| *t > left).count() >= 50
    });
    let _ = w.kill();
    let _ = w.wait();
    let r1 = replica(&c, 0);
    assert_eq!(r1["frozen"], false, "{r1}");
    // The fence domain normally lets a clean leave go; when the node's exit overtakes its
    // leave message it fences it instead (a race of the clean leave, not of the volume):
    // either way the primary goes on, never on a peer that might still be primary.
    let events = log_text(&c, 0);
    let outdated = events.contains("replica r0: n2 left the cluster cleanly");
    assert!(
        outdated || events.contains("replica r0: n2 is fenced"),
        "{events}"
    );
    assert!(
        !events.contains("fencing it (resource-and-stonith)"),
        "the volume never fences a peer that left:\n{events}"
    );
    eprintln!(
        "n2 {}",
        if outdated {
            "left cleanly and was taken as outdated"
        } else {
            "was fenced by the fence domain (its exit beat its leave message)"
        }
    );
    let n2_log = std::fs::read_to_string(lab_file(&c, "n2.log")).unwrap_or_default();
    assert!(
        n2_log.contains("Disk(Outdated)"),
        "n2 outdated its disk before it stopped:\n{n2_log}"
    );
}
