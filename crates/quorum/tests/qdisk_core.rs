//! The quorum disk core against an in-memory shared disk, cycle by cycle.

use base::{Duration, Instant, NodeId};
use quorum::layout::{self, format_image, DiskState, StatusBlock, BLOCK_SIZE};
use quorum::votes::QuorumMsg;
use quorum::{
    HeuristicConfig, Membership, Qdisk, QdiskAction, QdiskConfig, QdiskEvent, QdiskState,
    QuorumConfig, VoteQuorum,
};
use std::collections::BTreeMap;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

struct Node {
    core: Qdisk,
    running: bool,
    heuristic_ok: bool,
    read_error: bool,
    hung: bool,
    pending: Vec<QdiskAction>,
    events: Vec<QdiskEvent>,
    self_fenced: Vec<String>,
}

struct World {
    disk: Vec<u8>,
    nodes: BTreeMap<NodeId, Node>,
    now: Instant,
}

fn cfg() -> QdiskConfig {
    let mut c = QdiskConfig::new("alpha");
    c.interval = Duration::from_secs(1);
    c.tko = 4;
    c.tko_up = Some(1);
    c.master_wait = Some(2);
    c
}

impl World {
    fn new(ids: &[u32], cfg: &QdiskConfig) -> Self {
        let mut w = World {
            disk: format_image("alpha", "test").unwrap(),
            nodes: BTreeMap::new(),
            now: Instant::ZERO,
        };
        for i in ids {
            w.add(*i, cfg);
        }
        w
    }

    fn add(&mut self, i: u32, cfg: &QdiskConfig) {
        let core = Qdisk::new(
            n(i),
            1000 + u64::from(i) + self.now.as_nanos(),
            cfg.clone(),
            self.now,
        )
        .unwrap();
        self.nodes.insert(
            n(i),
            Node {
                core,
                running: true,
                heuristic_ok: true,
                read_error: false,
                hung: false,
                pending: Vec::new(),
                events: Vec::new(),
                self_fenced: Vec::new(),
            },
        );
    }

    fn set_membership(&mut self, i: u32, members: &[u32]) {
        let now = self.now;
        self.nodes
            .get_mut(&n(i))
            .unwrap()
            .core
            .handle_membership(now, members.iter().map(|m| n(*m)));
    }

    /// Advance 100 ms at a time for `secs`, running every due node.
    fn run(&mut self, secs: u64) {
        self.run_steps(secs * 10);
    }

    /// Advance `steps` times 100 ms.
    fn run_steps(&mut self, steps: u64) {
        for _ in 0..steps {
            self.now += Duration::from_millis(100);
            let now = self.now;
            for node in self.nodes.values_mut() {
                if !node.running {
                    continue;
                }
                if node.core.poll_deadline().is_some_and(|d| d <= now) {
                    node.core.handle_timeout(now);
                }
                let mut todo: Vec<QdiskAction> = if node.hung {
                    Vec::new()
                } else {
                    std::mem::take(&mut node.pending)
                };
                loop {
                    let a = match todo.pop() {
                        Some(a) => a,
                        None => match node.core.poll_action() {
                            Some(a) => a,
                            None => break,
                        },
                    };
                    if node.hung
                        && matches!(a, QdiskAction::ReadAll | QdiskAction::WriteBlock { .. })
                    {
                        // The I/O thread is stuck; the core keeps ticking.
                        node.pending.push(a);
                        continue;
                    }
                    match a {
                        QdiskAction::ReadAll => {
                            let r = if node.read_error {
                                Err("EIO".to_string())
                            } else {
                                Ok(self.disk.as_slice())
                            };
                            node.core.handle_read(now, r);
                        }
                        QdiskAction::WriteBlock { offset, data } => {
                            let o = offset as usize;
                            self.disk[o..o + data.len()].copy_from_slice(&data);
                            node.core.handle_write_result(now, Ok(()));
                        }
                        QdiskAction::RunHeuristic { index, .. } => {
                            node.core
                                .handle_heuristic_result(now, index, node.heuristic_ok);
                        }
                        QdiskAction::SelfFence { reason } => node.self_fenced.push(reason),
                    }
                }
                while let Some(e) = node.core.poll_event() {
                    node.events.push(e);
                }
            }
        }
    }

    fn core(&self, i: u32) -> &Qdisk {
        &self.nodes[&n(i)].core
    }

    fn masters(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|(_, x)| x.running && x.core.state() == QdiskState::Master)
            .map(|(i, _)| i.0)
            .collect()
    }
}

#[test]
fn lowest_node_becomes_the_only_master_and_grants_votes_to_members() {
    let mut w = World::new(&[1, 2, 3], &cfg());
    for i in 1..=3 {
        w.set_membership(i, &[1, 2, 3]);
    }
    w.run(12);
    assert_eq!(w.masters(), vec![1]);
    for i in 1..=3 {
        assert_eq!(
            w.core(i).available(),
            Some(n(1)),
            "node {i}: {:?}",
            w.core(i).status()
        );
        assert_eq!(w.core(i).status().master, Some(n(1)));
    }
    // The master's mask on disk lists all three.
    let o = layout::block_offset(n(1)) as usize;
    let b = StatusBlock::decode(&w.disk[o..o + BLOCK_SIZE])
        .unwrap()
        .unwrap();
    assert_eq!((b.state, b.master_mask), (DiskState::Master, 0b111));
}

#[test]
fn a_silent_node_dies_after_tko_cycles_and_a_new_master_takes_over() {
    let mut w = World::new(&[1, 2, 3], &cfg());
    for i in 1..=3 {
        w.set_membership(i, &[1, 2, 3]);
    }
    w.run(12);
    assert_eq!(w.masters(), vec![1]);
    w.nodes.get_mut(&n(1)).unwrap().running = false;
    for i in 2..=3 {
        w.set_membership(i, &[2, 3]);
    }
    // tko - 1 cycles: not yet dead.
    w.run(3);
    assert!(w
        .core(2)
        .status()
        .peers
        .iter()
        .any(|p| p.node_id == n(1) && p.alive));
    w.run(2);
    let dead = w.nodes[&n(2)]
        .events
        .iter()
        .any(|e| matches!(e, QdiskEvent::NodeDead { node, .. } if *node == n(1)));
    assert!(dead, "{:?}", w.nodes[&n(2)].events);
    w.run(5);
    assert_eq!(w.masters(), vec![2]);
    assert_eq!(w.core(3).available(), Some(n(2)));
}

#[test]
fn master_wins_gives_the_votes_to_the_master_only() {
    let mut c = cfg();
    c.master_wins = true;
    let mut w = World::new(&[1, 2], &c);
    w.set_membership(1, &[1, 2]);
    w.set_membership(2, &[1, 2]);
    w.run(10);
    assert_eq!(w.core(1).available(), Some(n(1)));
    assert_eq!(w.core(2).available(), None);
}

#[test]
fn master_grants_votes_only_inside_its_partition() {
    let mut w = World::new(&[1, 2, 3], &cfg());
    for i in 1..=3 {
        w.set_membership(i, &[1, 2, 3]);
    }
    w.run(10);
    assert_eq!(w.core(3).available(), Some(n(1)));
    // Network split: {1,2} | {3}; all still see the disk.
    w.set_membership(1, &[1, 2]);
    w.set_membership(2, &[1, 2]);
    w.set_membership(3, &[3]);
    // Node 3 withdraws at once: the master is not in its partition.
    assert_eq!(w.core(3).available(), None);
    w.run(3);
    assert_eq!(w.core(2).available(), Some(n(1)));
    assert_eq!(w.core(3).available(), None);
    w.set_membership(3, &[1, 2, 3]);
    w.run(2);
    assert_eq!(
        w.core(3).available(),
        None,
        "not in the master's mask until the master sees it"
    );
}

#[test]
fn low_score_withdraws_votes_and_self_fences() {
    let mut c = cfg();
    c.heuristics = vec![HeuristicConfig {
        interval: Duration::from_secs(1),
        ..HeuristicConfig::new("ping -c1 router")
    }];
    let mut w = World::new(&[1, 2], &c);
    w.set_membership(1, &[1, 2]);
    w.set_membership(2, &[1, 2]);
    w.run(10);
    assert_eq!(w.core(2).available(), Some(n(1)));
    w.nodes.get_mut(&n(2)).unwrap().heuristic_ok = false;
    w.run(2);
    assert_eq!(w.core(2).state(), QdiskState::Down);
    assert_eq!(w.core(2).available(), None);
    assert!(
        w.nodes[&n(2)].self_fenced[0].contains("below min_score 1"),
        "{:?}",
        w.nodes[&n(2)].self_fenced
    );
    // The master drops node 2 from its mask.
    w.run(2);
    let o = layout::block_offset(n(1)) as usize;
    let b = StatusBlock::decode(&w.disk[o..o + BLOCK_SIZE])
        .unwrap()
        .unwrap();
    assert_eq!(b.master_mask, 0b01);
    // Master's own heuristic fails: it steps down, node 2 recovered takes over.
    w.nodes.get_mut(&n(2)).unwrap().heuristic_ok = true;
    w.nodes.get_mut(&n(1)).unwrap().heuristic_ok = false;
    w.run(12);
    assert_eq!(w.masters(), vec![2]);
}

#[test]
fn torn_blocks_are_tolerated_until_tko() {
    let mut w = World::new(&[1, 2], &cfg());
    w.set_membership(1, &[1, 2]);
    w.set_membership(2, &[1, 2]);
    w.run(8);
    // Node 2 stops; its block is left torn (garbage in the middle).
    w.nodes.get_mut(&n(2)).unwrap().running = false;
    let o = layout::block_offset(n(2)) as usize;
    w.disk[o + 20] ^= 0xff;
    w.run(2);
    let s = w.core(1).status();
    assert!(s.corrupt_blocks >= 1);
    assert!(s.peers[0].alive, "{s:?}");
    w.run(3);
    assert!(!w.core(1).status().peers[0].alive);
}

#[test]
fn io_errors_withdraw_votes_then_give_up() {
    let mut c = cfg();
    c.max_error_cycles = 5;
    let mut w = World::new(&[1, 2], &c);
    w.set_membership(1, &[1, 2]);
    w.set_membership(2, &[1, 2]);
    w.run(8);
    assert_eq!(w.core(1).available(), Some(n(1)));
    w.nodes.get_mut(&n(1)).unwrap().read_error = true;
    w.run(2); // tko/2 = 2 failed cycles
    assert_eq!(w.core(1).available(), None);
    w.run(4);
    assert_eq!(w.core(1).state(), QdiskState::Stopped);
    assert!(w.core(1).poll_deadline().is_none());
    // Node 2 sees the master die and takes over.
    w.run(8);
    assert_eq!(w.masters(), vec![2]);
}

#[test]
fn a_foreign_disk_is_never_written() {
    let mut w = World::new(&[1], &cfg());
    w.disk = format_image("other", "x").unwrap();
    let before = w.disk.clone();
    w.run(3);
    assert_eq!(w.disk, before);
    let msg = w.nodes[&n(1)].events.iter().find_map(|e| match e {
        QdiskEvent::IoError { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(msg.unwrap().contains("belongs to cluster \"other\""));
}

#[test]
fn of_two_masters_the_lower_id_keeps_it() {
    let mut w = World::new(&[2, 3], &cfg());
    w.set_membership(2, &[1, 2, 3]);
    w.set_membership(3, &[1, 2, 3]);
    w.run(10);
    assert_eq!(w.masters(), vec![2]);
    // A node 1 appears already claiming master (e.g. after a heal).
    for seq in 1..6u64 {
        let b = StatusBlock {
            node_id: n(1),
            incarnation: 7,
            seq,
            timestamp: 0,
            state: DiskState::Master,
            score: 0,
            score_max: 0,
            bid_for: 0,
            master_mask: 0b111,
        };
        let o = layout::block_offset(n(1)) as usize;
        w.disk[o..o + BLOCK_SIZE].copy_from_slice(&b.encode());
        w.run(1);
    }
    assert_eq!(
        w.masters(),
        Vec::<u32>::new(),
        "node 2 stepped down for node 1"
    );
    assert_eq!(w.core(3).status().master, Some(n(1)));
}

/// Two nodes, a qdisk with 1 vote, expected 3: the network splits while both
/// still see the disk. Exactly one side stays quorate, at every step.
#[test]
fn two_node_qdisk_split_end_to_end() {
    let mut qc = cfg();
    qc.master_wins = true;
    let mut w = World::new(&[1, 2], &qc);
    let mut vc = QuorumConfig::new([(n(1), 1), (n(2), 1)]);
    vc.expected_votes = Some(3);
    vc.qdisk_votes = 1;
    let mut v: BTreeMap<u32, VoteQuorum> = (1..=2)
        .map(|i| (i, VoteQuorum::new(n(i), vc.clone()).unwrap()))
        .collect();
    let mut ring = 0;
    let mut deliver =
        |v: &mut BTreeMap<u32, VoteQuorum>, w: &mut World, group: &[u32], change: bool| {
            let now = w.now;
            if change {
                ring += 1;
                let m = Membership {
                    ring_id: ring,
                    members: group.iter().map(|i| (n(*i), 1)).collect(),
                };
                for i in group {
                    v.get_mut(i).unwrap().handle_membership(now, m.clone());
                    w.set_membership(*i, group);
                }
            }
            for i in group {
                for e in std::mem::take(&mut w.nodes.get_mut(&n(*i)).unwrap().events) {
                    if let QdiskEvent::Availability { master, .. } = e {
                        v.get_mut(i).unwrap().set_qdisk(now, master);
                    }
                }
            }
            loop {
                let mut msgs: Vec<(u32, QuorumMsg)> = Vec::new();
                for i in group {
                    while let Some(m) = v.get_mut(i).unwrap().poll_message() {
                        msgs.push((*i, m));
                    }
                }
                if msgs.is_empty() {
                    break;
                }
                for (from, m) in msgs {
                    for i in group {
                        v.get_mut(i)
                            .unwrap()
                            .handle_message(now, n(from), m.clone());
                    }
                }
            }
        };
    deliver(&mut v, &mut w, &[1, 2], true);
    for _ in 0..10 {
        w.run(1);
        deliver(&mut v, &mut w, &[1, 2], false);
    }
    assert!(v[&1].is_quorate() && v[&2].is_quorate());
    assert_eq!(v[&1].status().total_votes, 3);
    deliver(&mut v, &mut w, &[1], true);
    deliver(&mut v, &mut w, &[2], true);
    for step in 0..20 {
        let q: Vec<bool> = v.values().map(|x| x.is_quorate()).collect();
        assert_eq!(q, vec![true, false], "step {step}");
        w.run(1);
        deliver(&mut v, &mut w, &[1], false);
        deliver(&mut v, &mut w, &[2], false);
    }
}

#[test]
fn a_hung_device_is_a_failed_cycle_and_the_node_rejoins_without_a_second_master() {
    let mut w = World::new(&[1, 2], &cfg());
    w.set_membership(1, &[1]);
    w.set_membership(2, &[2]);
    w.run(8);
    assert_eq!(w.masters(), vec![1]);
    w.nodes.get_mut(&n(1)).unwrap().hung = true;
    w.run(3);
    assert_eq!(
        w.core(1).available(),
        None,
        "withdrawn after tko/2 stalled cycles"
    );
    assert_eq!(w.core(1).state(), QdiskState::Init);
    let stalled = w.nodes[&n(1)].events.iter().any(|e| matches!(e, QdiskEvent::IoError { reason, .. } if reason.contains("did not complete within one interval")));
    assert!(stalled);
    w.run(8);
    assert_eq!(w.masters(), vec![2]);
    w.nodes.get_mut(&n(1)).unwrap().hung = false;
    w.run(8);
    assert_eq!(w.masters(), vec![2]);
    assert_eq!(w.core(1).state(), QdiskState::Run);
    assert_eq!(
        w.core(1).available(),
        None,
        "node 2's partition does not include node 1"
    );
}

#[test]
fn a_flapping_heuristic_below_its_tko_does_not_drop_the_score() {
    let mut c = cfg();
    c.heuristics = vec![HeuristicConfig {
        interval: Duration::from_secs(1),
        tko: 3,
        ..HeuristicConfig::new("ping -c1 gw")
    }];
    let mut w = World::new(&[1], &c);
    w.set_membership(1, &[1]);
    w.run(6);
    assert_eq!(w.core(1).available(), Some(n(1)));
    for k in 0..10 {
        // fail, fail, pass: never three failures in a row.
        w.nodes.get_mut(&n(1)).unwrap().heuristic_ok = k % 3 == 2;
        w.run(1);
        assert_eq!(w.core(1).available(), Some(n(1)), "cycle {k}");
    }
    w.nodes.get_mut(&n(1)).unwrap().heuristic_ok = false;
    w.run(3);
    assert_eq!(w.core(1).available(), None);
    assert!(!w.nodes[&n(1)].self_fenced.is_empty());
}

/// The step-down bound (`QdiskConfig::io_grace`): a master whose I/O fails
/// withdraws from the disk's votes at most `io_grace` intervals after its
/// last write, and at least two intervals before anyone else can be master
/// (`tko + master_wait` intervals after that write).
#[test]
fn a_master_that_cannot_write_withdraws_before_anyone_can_take_over() {
    let c = cfg(); // tko 4, master_wait 2: io_grace 2
    let mut w = World::new(&[1, 2, 3], &c);
    for i in 1..=3 {
        w.set_membership(i, &[1, 2, 3]);
    }
    w.run(10);
    assert_eq!(w.masters(), vec![1]);
    // When node 1's block was last written (the block carries its time).
    let written = |w: &World| {
        let o = layout::block_offset(n(1)) as usize;
        StatusBlock::decode(&w.disk[o..o + BLOCK_SIZE])
            .unwrap()
            .unwrap()
            .timestamp
    };
    w.nodes.get_mut(&n(1)).unwrap().read_error = true;
    let (mut withdrawn, mut taken_over) = (None, None);
    for _ in 0..200u64 {
        w.run_steps(1);
        let now = w.now.as_nanos();
        if withdrawn.is_none() && w.core(1).available().is_none() {
            assert_ne!(w.core(1).state(), QdiskState::Master);
            withdrawn = Some(now);
        }
        if taken_over.is_none() && w.masters().iter().any(|m| *m != 1) {
            taken_over = Some(now);
        }
    }
    let last = written(&w);
    let (down, up) = (withdrawn.unwrap(), taken_over.unwrap());
    let interval = c.interval.as_nanos();
    assert!(
        down <= last + interval * u64::from(c.io_grace()),
        "withdrew at {down}, last write {last}"
    );
    assert!(
        up >= last + interval * u64::from(c.tko + c.master_wait()),
        "taken over at {up}, last write {last}"
    );
    assert!(
        up >= down + 2 * interval,
        "withdrawn at {down}, taken over at {up}: less than two intervals apart"
    );
}

/// Nodes 1 and 2 in one membership, node 1 the disk master.
fn two_nodes_master_1(c: &QdiskConfig) -> World {
    let mut w = World::new(&[1, 2], c);
    w.set_membership(1, &[1, 2]);
    w.set_membership(2, &[1, 2]);
    w.run(10);
    assert_eq!(w.masters(), vec![1]);
    w
}

/// A node whose cluster membership does not include the old master may
/// still face a partition that counts the old master's claim (its ring died
/// with the master): it waits `outsider_wait` cycles; a node in the master's
/// own membership takes over after the disk's usual timing.
#[test]
fn a_node_outside_the_old_masters_partition_waits_for_that_partition_to_dissolve() {
    let mut c = cfg(); // tko 4, master_wait 2
    c.membership_timeout = Duration::from_secs(8);
    assert_eq!(c.outsider_wait(), 4 + 8 + 1);
    for inside in [true, false] {
        let mut w = two_nodes_master_1(&c);
        w.nodes.get_mut(&n(1)).unwrap().running = false;
        if !inside {
            w.set_membership(2, &[2]);
        }
        let mut took = None;
        for step in 0..400u64 {
            w.run_steps(1);
            if w.masters() == vec![2] {
                took = Some(step);
                break;
            }
        }
        let took = took.expect("node 2 takes over in the end");
        if inside {
            assert!(
                took <= 10 * u64::from(c.tko + c.master_wait() + 2),
                "{took}"
            );
        } else {
            assert!(took >= 10 * u64::from(c.outsider_wait()), "{took}");
        }
    }
}

/// A master that restarts (a new incarnation) overwrites its master block at
/// once, but a partition may still count its old claim: nobody, the new
/// incarnation included, takes over before `outsider_wait` cycles.
#[test]
fn a_restarted_master_does_not_free_the_disk_at_once() {
    let mut c = cfg();
    c.membership_timeout = Duration::from_secs(8);
    let mut w = two_nodes_master_1(&c);
    w.add(1, &c); // new incarnation, same slot
    w.set_membership(1, &[1, 2]);
    w.run(u64::from(c.outsider_wait()) - 1);
    assert_eq!(w.masters(), Vec::<u32>::new(), "{:?}", w.core(1).status());
    w.run(10);
    assert_eq!(w.masters(), vec![1]);
}

/// A stalled node (no cycle for a while: a pause, an overloaded machine)
/// stops counting the disk votes as soon as it runs again, before acting on
/// what it read before the stall; a short stall keeps its master block (no
/// one can have declared it dead yet), a stall of tko intervals gives it up.
#[test]
fn a_stall_withdraws_the_votes_until_a_cycle_completes() {
    let c = cfg(); // tko 4, io_grace 2
    let mut w = two_nodes_master_1(&c);
    // Node 1's core is not called for 3.5 intervals (node 2 keeps running):
    // its next cycle is at least io_grace whole intervals late.
    w.nodes.get_mut(&n(1)).unwrap().running = false;
    w.run_steps(35);
    w.nodes.get_mut(&n(1)).unwrap().running = true;
    let now = w.now;
    w.nodes.get_mut(&n(1)).unwrap().core.handle_timeout(now);
    assert_eq!(w.core(1).available(), None, "{:?}", w.core(1).status());
    assert_eq!(w.core(1).state(), QdiskState::Master);
    w.run(2);
    assert_eq!(w.masters(), vec![1]);
    assert_eq!(w.core(1).available(), Some(n(1)));
    // A stall of tko intervals: it steps down and rejoins.
    w.nodes.get_mut(&n(1)).unwrap().running = false;
    w.run_steps(10 * u64::from(c.tko + 1) + 5);
    w.nodes.get_mut(&n(1)).unwrap().running = true;
    let now = w.now;
    w.nodes.get_mut(&n(1)).unwrap().core.handle_timeout(now);
    assert_eq!(w.core(1).state(), QdiskState::Init);
    assert_eq!(w.core(1).available(), None);
}

mod faults {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Fault {
        Split(Vec<usize>),
        Hang(u32),
        ReadError(u32),
        Heuristic(u32),
        Crash(u32),
        Restart(u32),
        Nothing,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            prop::collection::vec(0usize..3, 3).prop_map(Fault::Split),
            (1u32..=3).prop_map(Fault::Hang),
            (1u32..=3).prop_map(Fault::ReadError),
            (1u32..=3).prop_map(Fault::Heuristic),
            (1u32..=3).prop_map(Fault::Crash),
            (1u32..=3).prop_map(Fault::Restart),
            Just(Fault::Nothing),
            Just(Fault::Nothing),
        ]
    }

    proptest! {
        // QDISK_SOAK_CASES=5000 for a long run.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("QDISK_SOAK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
        ))]

        /// Under splits, hung and failing disk paths and flapping heuristics,
        /// the disk votes are counted by at most one partition at any time:
        /// a claim counts only where its master is a member (as the vote core
        /// does), and at most one such master exists.
        #[test]
        fn disk_votes_go_to_at_most_one_partition(
            tko in 2u32..10,
            master_wins in any::<bool>(),
            with_heuristics in any::<bool>(),
            faults in prop::collection::vec(fault(), 1..30),
        ) {
            let mut c = cfg();
            c.tko = tko;
            c.tko_up = None;
            c.master_wait = None;
            c.master_wins = master_wins;
            c.reboot = false;
            if with_heuristics {
                c.heuristics = vec![HeuristicConfig { interval: Duration::from_secs(1), ..HeuristicConfig::new("x") }];
            }
            let mut w = World::new(&[1, 2, 3], &c);
            let mut part = [0usize; 3];
            for i in 1..=3 {
                w.set_membership(i, &[1, 2, 3]);
            }
            w.run(u64::from(tko) * 2);
            for f in faults {
                match f {
                    Fault::Split(p) => {
                        part.copy_from_slice(&p);
                        for i in 1..=3u32 {
                            let m: Vec<u32> = (1..=3u32).filter(|j| part[(*j - 1) as usize] == part[(i - 1) as usize]).collect();
                            w.set_membership(i, &m);
                        }
                    }
                    Fault::Hang(i) => { let x = w.nodes.get_mut(&n(i)).unwrap(); x.hung = !x.hung; }
                    Fault::ReadError(i) => { let x = w.nodes.get_mut(&n(i)).unwrap(); x.read_error = !x.read_error; }
                    Fault::Heuristic(i) => { let x = w.nodes.get_mut(&n(i)).unwrap(); x.heuristic_ok = !x.heuristic_ok; }
                    Fault::Crash(i) => { w.nodes.get_mut(&n(i)).unwrap().running = false; }
                    Fault::Restart(i) => {
                        // A new process (new incarnation) in the same partition.
                        w.add(i, &c);
                        let m: Vec<u32> = (1..=3u32).filter(|j| part[(*j - 1) as usize] == part[(i - 1) as usize]).collect();
                        w.set_membership(i, &m);
                    }
                    Fault::Nothing => {}
                }
                for _ in 0..30 {
                    w.run_steps(1);
                    let mut counted = std::collections::BTreeSet::new();
                    for i in 1..=3u32 {
                        if !w.nodes[&n(i)].running {
                            continue;
                        }
                        if let Some(m) = w.core(i).available() {
                            if part[(m.0 - 1) as usize] == part[(i - 1) as usize] {
                                counted.insert(part[(i - 1) as usize]);
                            }
                        }
                    }
                    prop_assert!(counted.len() <= 1, "two partitions hold the disk votes: {:?} at {:?}", counted, w.now);
                }
            }
        }
    }
}

mod combined {
    use super::*;
    use proptest::prelude::*;

    /// Three nodes with one vote each and a quorum disk with 2 votes
    /// (expected 5), vote cores fed through an in-order "totem" per partition,
    /// disk availability fed into the vote cores.
    struct Sim {
        w: World,
        v: BTreeMap<u32, VoteQuorum>,
        part: [usize; 3],
        ring: u64,
    }

    impl Sim {
        fn groups(&self) -> Vec<Vec<u32>> {
            let mut g: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
            for i in 1..=3u32 {
                if self.w.nodes[&n(i)].running {
                    g.entry(self.part[(i - 1) as usize]).or_default().push(i);
                }
            }
            g.into_values().collect()
        }

        fn membership(&mut self) {
            for g in self.groups() {
                self.ring += 1;
                let m = Membership {
                    ring_id: self.ring,
                    members: g.iter().map(|i| (n(*i), 1)).collect(),
                };
                for i in &g {
                    self.v
                        .get_mut(i)
                        .unwrap()
                        .handle_membership(self.w.now, m.clone());
                    self.w.set_membership(*i, &g);
                }
            }
        }

        fn settle(&mut self) {
            let now = self.w.now;
            for i in 1..=3u32 {
                let node = self.w.nodes.get_mut(&n(i)).unwrap();
                for e in std::mem::take(&mut node.events) {
                    if let QdiskEvent::Availability { master, .. } = e {
                        self.v.get_mut(&i).unwrap().set_qdisk(now, master);
                    }
                }
            }
            for g in self.groups() {
                loop {
                    let mut msgs = Vec::new();
                    for i in &g {
                        while let Some(m) = self.v.get_mut(i).unwrap().poll_message() {
                            msgs.push((*i, m));
                        }
                    }
                    if msgs.is_empty() {
                        break;
                    }
                    for (from, m) in msgs {
                        for i in &g {
                            self.v
                                .get_mut(i)
                                .unwrap()
                                .handle_message(now, n(from), m.clone());
                        }
                    }
                }
            }
        }

        fn check(&self) -> Result<(), TestCaseError> {
            let mut quorate = 0;
            for g in self.groups() {
                let q: Vec<bool> = g.iter().map(|i| self.v[i].is_quorate()).collect();
                prop_assert!(
                    q.iter().all(|x| *x == q[0]),
                    "partition {:?} disagrees: {:?}",
                    g,
                    q
                );
                if q[0] {
                    quorate += 1;
                }
            }
            prop_assert!(
                quorate <= 1,
                "{} partitions quorate at {:?}",
                quorate,
                self.w.now
            );
            Ok(())
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Split(Vec<usize>),
        Hang(u32),
        ReadError(u32),
        Crash(u32),
        Restart(u32),
        Wait,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("QDISK_SOAK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
        ))]

        /// The simulator check of issue 4: with the disk in play, never two
        /// quorate partitions, and members of a partition agree.
        #[test]
        fn never_two_quorate_partitions_with_a_quorum_disk(
            tko in 3u32..8,
            master_wins in any::<bool>(),
            steps in prop::collection::vec(prop_oneof![
                prop::collection::vec(0usize..3, 3).prop_map(Step::Split),
                (1u32..=3).prop_map(Step::Hang),
                (1u32..=3).prop_map(Step::ReadError),
                (1u32..=3).prop_map(Step::Crash),
                (1u32..=3).prop_map(Step::Restart),
                Just(Step::Wait),
            ], 1..25),
        ) {
            let mut qc = cfg();
            qc.tko = tko;
            qc.tko_up = None;
            qc.master_wait = None;
            qc.master_wins = master_wins;
            qc.votes = 2;
            let mut vc = QuorumConfig::new([(n(1), 1), (n(2), 1), (n(3), 1)]);
            vc.qdisk_votes = 2;
            let mut s = Sim {
                w: World::new(&[1, 2, 3], &qc),
                v: (1..=3).map(|i| (i, VoteQuorum::new(n(i), vc.clone()).unwrap())).collect(),
                part: [0; 3],
                ring: 0,
            };
            s.membership();
            for _ in 0..(tko * 20) {
                s.w.run_steps(1);
                s.settle();
            }
            prop_assert!(s.v[&1].is_quorate());
            for step in steps {
                match step {
                    Step::Split(p) => {
                        s.part.copy_from_slice(&p);
                        s.membership();
                    }
                    Step::Hang(i) => { let x = s.w.nodes.get_mut(&n(i)).unwrap(); x.hung = !x.hung; }
                    Step::ReadError(i) => { let x = s.w.nodes.get_mut(&n(i)).unwrap(); x.read_error = !x.read_error; }
                    Step::Crash(i) => {
                        if s.w.nodes[&n(i)].running {
                            s.w.nodes.get_mut(&n(i)).unwrap().running = false;
                            s.membership();
                        }
                    }
                    Step::Restart(i) => {
                        s.w.add(i, &qc);
                        s.v.insert(i, VoteQuorum::new(n(i), vc.clone()).unwrap());
                        s.membership();
                    }
                    Step::Wait => {}
                }
                s.settle();
                s.check()?;
                for _ in 0..30 {
                    s.w.run_steps(1);
                    s.settle();
                    s.check()?;
                }
            }
        }
    }
}

#[test]
fn timing_and_auto_master_wins_rules() {
    let mut c = QdiskConfig::new("alpha");
    // interval 1 s, tko 10, master_wait 5: 17 s.
    assert_eq!(c.takeover_time(), Duration::from_secs(17));
    let e = c.check_token_timeout(Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("17000 ms"), "{e}");
    assert!(c.check_token_timeout(Duration::from_secs(21)).is_ok());
    c.apply_auto_master_wins(3);
    assert!(!c.master_wins);
    c.apply_auto_master_wins(2);
    assert!(c.master_wins);
    let mut h = QdiskConfig::new("alpha");
    h.heuristics = vec![HeuristicConfig::new("true")];
    h.apply_auto_master_wins(2);
    assert!(!h.master_wins);
    h.min_score = 5;
    assert!(h
        .validate()
        .unwrap_err()
        .to_string()
        .contains("never be reached"));
    assert!(Qdisk::new(n(17), 1, QdiskConfig::new("alpha"), Instant::ZERO).is_err());
}
