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
fn wait_for(what: &str, cond: impl FnMut() -> bool) -> std::time::Duration {
    wait_or_dump(what, cond, String::new)
}

/// Like [`wait_for`], with `dump()` in the failure message.
fn wait_or_dump(
    what: &str,
    mut cond: impl FnMut() -> bool,
    dump: impl Fn() -> String,
) -> std::time::Duration {
    let t = StdInstant::now();
    while t.elapsed() < std::time::Duration::from_secs(15) {
        if cond() {
            return t.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}\n{}", dump());
}

fn dump_all(h: &[&QdiskHandle]) -> String {
    h.iter()
        .map(|x| format!("{:?}", x.status()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Wait until every handle is counted in under one master; returns it.
fn elected(h: &[&QdiskHandle]) -> NodeId {
    let mut m = None;
    wait_or_dump(
        "a master with every node counted in",
        || {
            let a: Vec<Option<NodeId>> = h.iter().map(|x| x.status().available).collect();
            m = a[0];
            m.is_some() && a.iter().all(|x| *x == m)
        },
        || dump_all(h),
    );
    m.unwrap()
}

#[test]
fn three_nodes_elect_a_master_and_a_stopped_master_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "test").unwrap();
    let c = cfg();
    let t = StdInstant::now();
    let mut h: Vec<Option<QdiskHandle>> = (1..=3).map(|i| Some(start(&path, i, &c))).collect();
    for x in h.iter().flatten() {
        x.set_membership(vec![n(1), n(2), n(3)]);
    }
    let m = elected(&h.iter().flatten().collect::<Vec<_>>());
    eprintln!(
        "election with interval 100ms: {:?} (master node {m})",
        t.elapsed()
    );
    let l = list(&path).unwrap();
    assert_eq!(l.header.cluster_name, "alpha");
    assert_eq!(l.nodes.len(), 3);
    let mb = l.nodes.iter().find(|b| b.node_id == m).unwrap();
    assert_eq!(mb.master_mask, 0b111);
    assert_eq!(
        l.nodes
            .iter()
            .filter(|b| b.state == quorum::layout::DiskState::Master)
            .count(),
        1
    );

    // The master dies (stops writing). The others declare it dead after tko
    // cycles without an update, then the lower of them wins the election.
    h[(m.0 - 1) as usize].take().unwrap().stop();
    let rest: Vec<QdiskHandle> = h.into_iter().flatten().collect();
    let ids: Vec<NodeId> = rest.iter().map(|x| x.status().node_id).collect();
    for x in &rest {
        x.set_membership(ids.clone());
    }
    let t = StdInstant::now();
    let mut dead_after = None;
    let watcher = &rest[1];
    wait_or_dump(
        "a new master",
        || {
            while let Ok(e) = watcher.events().try_recv() {
                if let DriverEvent::Qdisk(QdiskEvent::NodeDead { node, reason }) = e {
                    if node == m {
                        assert!(reason.contains("tko 6"), "{reason}");
                        dead_after.get_or_insert(t.elapsed());
                    }
                }
            }
            rest.iter().all(|x| x.status().available == Some(ids[0]))
        },
        || dump_all(&rest.iter().collect::<Vec<_>>()),
    );
    let dead_after = dead_after.expect("the old master was reported dead");
    eprintln!(
        "master dead to the disk after {dead_after:?}, takeover after {:?}",
        t.elapsed()
    );
    // tko = 6 cycles of 100 ms: not before ~0.5 s.
    assert!(
        dead_after >= std::time::Duration::from_millis(450),
        "{dead_after:?}"
    );
    assert_eq!(rest[0].status().state, QdiskState::Master);
}

#[test]
fn a_failing_heuristic_withdraws_the_votes_and_requests_self_fence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "test").unwrap();
    let flags: Vec<std::path::PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("gw-ok-{i}")))
        .collect();
    let h: Vec<QdiskHandle> = (1..=2u32)
        .map(|i| {
            let f = &flags[(i - 1) as usize];
            std::fs::write(f, b"").unwrap();
            let mut c = cfg();
            c.heuristics = vec![HeuristicConfig {
                interval: Duration::from_millis(100),
                ..HeuristicConfig::new(format!("test -e '{}'", f.display()))
            }];
            start(&path, i, &c)
        })
        .collect();
    for x in &h {
        x.set_membership(vec![n(1), n(2)]);
    }
    let m = elected(&h.iter().collect::<Vec<_>>());
    // The node that is not master loses its "router".
    let x = if m == n(1) { 1 } else { 0 };
    let (hx, hm) = (&h[x], &h[1 - x]);
    assert_eq!(hx.status().score, 1);
    std::fs::remove_file(&flags[x]).unwrap();
    let t = StdInstant::now();
    let mut fenced = None;
    wait_or_dump(
        "self-fence request",
        || {
            while let Ok(e) = hx.events().try_recv() {
                if let DriverEvent::SelfFence { reason } = e {
                    fenced = Some(reason);
                }
            }
            fenced.is_some()
        },
        || dump_all(&[hx, hm]),
    );
    eprintln!("heuristic failure to self-fence: {:?}", t.elapsed());
    assert!(fenced.unwrap().contains("below min_score 1"));
    let s = hx.status();
    assert_eq!((s.state, s.available, s.score), (QdiskState::Down, None, 0));
    // The master stops granting it.
    let master_only = quorum::layout::mask_bit(m);
    wait_for("master mask without the failed node", || {
        list(&path)
            .unwrap()
            .nodes
            .iter()
            .any(|b| b.node_id == m && b.master_mask == master_only)
    });
    // The heuristic passes again: counted in again.
    std::fs::write(&flags[x], b"").unwrap();
    wait_for("counted in again", || hx.status().available == Some(m));
}

#[test]
fn losing_the_disk_path_hands_the_master_role_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdisk.img");
    format(&path, "alpha", "test").unwrap();
    let c = cfg();
    let h: Vec<QdiskHandle> = (1..=2).map(|i| start(&path, i, &c)).collect();
    for x in &h {
        x.set_membership(vec![n(1), n(2)]);
    }
    let m = elected(&h.iter().collect::<Vec<_>>());
    let (hm, ho) = (&h[(m.0 - 1) as usize], &h[(2 - m.0) as usize]);
    hm.block_io(true);
    wait_for("the master withdraws", || hm.status().available.is_none());
    let s = hm.status();
    assert!(s.error_streak >= 3, "{s:?}");
    let other = ho.status().node_id;
    wait_or_dump(
        "the other node takes over",
        || ho.status().available == Some(other),
        || dump_all(&[hm, ho]),
    );
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
    let h: Vec<QdiskHandle> = (1..=2).map(|i| start(&path, i, &c)).collect();
    h[0].set_membership(vec![n(1)]);
    h[1].set_membership(vec![n(2)]);
    let mut m = None;
    wait_or_dump(
        "a master",
        || {
            m = h.iter().find_map(|x| x.status().available);
            m.is_some()
        },
        || dump_all(&h.iter().collect::<Vec<_>>()),
    );
    let m = m.unwrap();
    let (hm, ho) = (&h[(m.0 - 1) as usize], &h[(2 - m.0) as usize]);
    let other = ho.status().node_id;
    // Every I/O of the master now takes 6 intervals: stalled cycles.
    hm.io_delay(std::time::Duration::from_millis(600));
    let mut both = 0;
    wait_or_dump(
        "the other node takes over",
        || {
            let (a, b) = (hm.status().available, ho.status().available);
            if a.is_some() && b.is_some() {
                both += 1;
            }
            b == Some(other)
        },
        || dump_all(&[hm, ho]),
    );
    assert_eq!(hm.status().available, None);
    hm.io_delay(std::time::Duration::ZERO);
    wait_or_dump(
        "the old master back online behind the new one",
        || {
            let (a, b) = (hm.status(), ho.status());
            if a.available.is_some() && b.available.is_some() {
                both += 1;
            }
            a.state == QdiskState::Run && a.master == Some(other)
        },
        || dump_all(&[hm, ho]),
    );
    assert_eq!(both, 0, "both nodes held the disk votes at once");
    assert_eq!(ho.status().state, QdiskState::Master);
}
