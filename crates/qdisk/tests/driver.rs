//! Several quorum disk drivers sharing one real file, with real `sh -c`
//! heuristics: election, death after tko cycles, takeover, score withdrawal.

use base::{Duration, NodeId};
use qdisk::{format, list, Device, DriverEvent, DriverOptions, QdiskHandle};
use quorum::{HeuristicConfig, QdiskConfig, QdiskEvent, QdiskState};
use std::path::Path;
use std::time::Instant as StdInstant;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

fn cfg() -> QdiskConfig {
    let mut c = QdiskConfig::new("alpha");
    c.interval = Duration::from_millis(100);
    c.tko = 6;
    c.tko_up = Some(2);
    c.master_wait = Some(2);
    c.reboot = true;
    c
}

fn start(path: &Path, i: u32, c: &QdiskConfig) -> QdiskHandle {
    QdiskHandle::spawn(
        path,
        n(i),
        qdisk::fresh_incarnation(),
        c.clone(),
        DriverOptions::default(),
    )
    .unwrap()
}

/// Wait up to 15 s for `cond`; returns how long it took.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> std::time::Duration {
    let t = StdInstant::now();
    while t.elapsed() < std::time::Duration::from_secs(15) {
        if cond() {
            return t.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

#[test]
fn three_nodes_elect_a_master_and_a_stopped_master_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "test").unwrap();
    let c = cfg();
    let h: Vec<QdiskHandle> = (1..=3).map(|i| start(&path, i, &c)).collect();
    for x in &h {
        x.set_membership(vec![n(1), n(2), n(3)]);
    }
    let took = wait_for("node 1 master, everybody counted in", || {
        h.iter().all(|x| x.status().available == Some(n(1)))
    });
    eprintln!("election with interval 100ms: {took:?}");
    assert_eq!(h[0].status().state, QdiskState::Master);
    let l = list(&path).unwrap();
    assert_eq!(l.header.cluster_name, "alpha");
    assert_eq!(l.nodes.len(), 3);
    let m = l.nodes.iter().find(|b| b.node_id == n(1)).unwrap();
    assert_eq!(m.master_mask, 0b111);

    // Node 1 dies (stops writing). The others declare it dead after tko
    // cycles without an update, then node 2 wins the election.
    let mut h = h.into_iter();
    let h1 = h.next().unwrap();
    let (h2, h3) = (h.next().unwrap(), h.next().unwrap());
    h1.stop();
    h2.set_membership(vec![n(2), n(3)]);
    h3.set_membership(vec![n(2), n(3)]);
    let t = StdInstant::now();
    let mut dead_after = None;
    wait_for("node 2 master", || {
        while let Ok(e) = h3.events().try_recv() {
            if let DriverEvent::Qdisk(QdiskEvent::NodeDead { node, reason }) = e {
                if node == n(1) {
                    assert!(reason.contains("tko 6"), "{reason}");
                    dead_after = Some(t.elapsed());
                }
            }
        }
        h3.status().available == Some(n(2))
    });
    let dead_after = dead_after.expect("node 3 reported node 1 dead");
    eprintln!(
        "node 1 dead to the disk after {dead_after:?}, takeover after {:?}",
        t.elapsed()
    );
    // tko = 6 cycles of 100 ms: not before ~0.5 s.
    assert!(
        dead_after >= std::time::Duration::from_millis(450),
        "{dead_after:?}"
    );
    assert_eq!(h2.status().state, QdiskState::Master);
}

#[test]
fn a_failing_heuristic_withdraws_the_votes_and_requests_self_fence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "test").unwrap();
    let flag = dir.path().join("router-reachable");
    std::fs::write(&flag, b"").unwrap();
    let mut c1 = cfg();
    c1.heuristics = vec![HeuristicConfig {
        interval: Duration::from_millis(100),
        ..HeuristicConfig::new("true")
    }];
    let mut c2 = cfg();
    c2.heuristics = vec![HeuristicConfig {
        interval: Duration::from_millis(100),
        ..HeuristicConfig::new(format!("test -e '{}'", flag.display()))
    }];
    let h1 = start(&path, 1, &c1);
    let h2 = start(&path, 2, &c2);
    h1.set_membership(vec![n(1), n(2)]);
    h2.set_membership(vec![n(1), n(2)]);
    wait_for("both counted in", || {
        h1.status().available == Some(n(1)) && h2.status().available == Some(n(1))
    });
    assert_eq!(h2.status().score, 1);
    std::fs::remove_file(&flag).unwrap();
    let t = StdInstant::now();
    let mut fenced = None;
    wait_for("node 2 self-fence request", || {
        while let Ok(e) = h2.events().try_recv() {
            if let DriverEvent::SelfFence { reason } = e {
                fenced = Some(reason);
            }
        }
        fenced.is_some()
    });
    eprintln!("heuristic failure to self-fence: {:?}", t.elapsed());
    assert!(fenced.unwrap().contains("below min_score 1"));
    let s = h2.status();
    assert_eq!((s.state, s.available, s.score), (QdiskState::Down, None, 0));
    // The master stops granting node 2.
    wait_for("master mask without node 2", || {
        list(&path)
            .unwrap()
            .nodes
            .iter()
            .any(|b| b.node_id == n(1) && b.master_mask == 0b01)
    });
    // The heuristic passes again: node 2 is back.
    std::fs::write(&flag, b"").unwrap();
    wait_for("node 2 counted in again", || {
        h2.status().available == Some(n(1))
    });
}

#[test]
fn losing_the_disk_path_hands_the_master_role_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "test").unwrap();
    let c = cfg();
    let h1 = start(&path, 1, &c);
    let h2 = start(&path, 2, &c);
    h1.set_membership(vec![n(1), n(2)]);
    h2.set_membership(vec![n(1), n(2)]);
    wait_for("node 1 master", || h2.status().available == Some(n(1)));
    h1.block_io(true);
    wait_for("node 1 withdraws", || h1.status().available.is_none());
    let s1 = h1.status();
    assert!(s1.error_streak >= 3, "{s1:?}");
    wait_for("node 2 takes over", || h2.status().available == Some(n(2)));
}

#[test]
fn heuristic_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let prog = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
    let t = StdInstant::now();
    assert!(!qdisk::heuristic::run(
        &prog,
        std::time::Duration::from_millis(300)
    ));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    // The grandchild `sleep` was killed with its group, not left behind.
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    wait_for("sleep grandchild gone", || {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(st) => st
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z')),
        }
    });
    assert!(qdisk::heuristic::run(
        "true",
        std::time::Duration::from_secs(5)
    ));
    assert!(!qdisk::heuristic::run(
        "exit 3",
        std::time::Duration::from_secs(5)
    ));
}

#[test]
fn direct_io_and_device_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "").unwrap();
    match Device::open(&path, true) {
        Ok(mut d) => {
            let blk = vec![7u8; 4096];
            d.write_block(4096 * 3, &blk).unwrap();
            assert_eq!(&d.read_all().unwrap()[4096 * 3..4096 * 4], &blk[..]);
            // Garbage in slot 3 shows as corrupt in the listing.
            assert_eq!(list(&path).unwrap().corrupt, vec![3]);
        }
        Err(e) => assert!(e.to_string().contains("O_DIRECT"), "{e}"),
    }
    let small = dir.path().join("small.img");
    std::fs::write(&small, [0u8; 100]).unwrap();
    let e = Device::open(&small, false).unwrap_err();
    assert!(e.to_string().contains("at least 69632"), "{e}");
    let e = Device::open(&dir.path().join("missing"), false).unwrap_err();
    assert!(e.to_string().contains("cannot open quorum disk"), "{e}");
    let unformatted = dir.path().join("zero.img");
    std::fs::write(&unformatted, vec![0u8; 69632]).unwrap();
    let e = list(&unformatted).unwrap_err();
    assert!(e.to_string().contains("quorate qdisk format"), "{e}");
}

#[test]
fn slow_storage_makes_the_master_step_back_and_rejoin_behind_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "test").unwrap();
    let mut c = cfg();
    c.master_wins = true;
    let h1 = start(&path, 1, &c);
    let h2 = start(&path, 2, &c);
    h1.set_membership(vec![n(1)]);
    h2.set_membership(vec![n(2)]);
    wait_for("node 1 master", || h1.status().available == Some(n(1)));
    // Every I/O now takes 6 intervals: stalled cycles.
    h1.io_delay(std::time::Duration::from_millis(600));
    let mut both = 0;
    wait_for("node 2 takes over", || {
        let (a, b) = (h1.status().available, h2.status().available);
        if a.is_some() && b.is_some() {
            both += 1;
        }
        b == Some(n(2))
    });
    assert_eq!(h1.status().available, None);
    h1.io_delay(std::time::Duration::ZERO);
    wait_for("node 1 back online behind node 2", || {
        let (a, b) = (h1.status(), h2.status());
        if a.available.is_some() && b.available.is_some() {
            both += 1;
        }
        a.state == QdiskState::Run && a.master == Some(n(2))
    });
    assert_eq!(both, 0, "both nodes held the disk votes at once");
    assert_eq!(h2.status().state, QdiskState::Master);
}
