//! Vote arithmetic, wait_for_all, last_man_standing, set_expected, leave,
//! and the split-brain property, with a tiny in-memory "totem" that delivers
//! memberships and messages in the same order to every member of a partition.

use base::{Duration, Instant, NodeId};
use proptest::prelude::*;
use quorum::votes::{QuorumEvent, QuorumMsg, SetExpectedError};
use quorum::{Membership, QuorumConfig, VoteQuorum};
use std::collections::BTreeMap;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

/// All nodes of a test cluster, and a ring counter.
struct Cluster {
    nodes: BTreeMap<NodeId, VoteQuorum>,
    votes: BTreeMap<NodeId, u32>,
    ring: u64,
    now: Instant,
}

impl Cluster {
    fn new(cfg: &QuorumConfig) -> Self {
        Cluster {
            nodes: cfg
                .nodes
                .keys()
                .map(|id| (*id, VoteQuorum::new(*id, cfg.clone()).unwrap()))
                .collect(),
            votes: cfg.nodes.clone(),
            ring: 0,
            now: Instant::ZERO,
        }
    }

    fn restart(&mut self, id: u32, cfg: &QuorumConfig) {
        self.nodes
            .insert(n(id), VoteQuorum::new(n(id), cfg.clone()).unwrap());
    }

    /// Deliver a new configuration per group, then settle every group.
    fn split(&mut self, groups: &[&[u32]]) {
        for g in groups {
            self.ring += 1;
            let m = Membership {
                ring_id: self.ring,
                members: g.iter().map(|i| (n(*i), self.votes[&n(*i)])).collect(),
            };
            for i in *g {
                self.nodes
                    .get_mut(&n(*i))
                    .unwrap()
                    .handle_membership(self.now, m.clone());
            }
        }
        for g in groups {
            self.settle(g);
        }
    }

    /// Totem: broadcast every queued message to every member, in one order.
    fn settle(&mut self, g: &[u32]) {
        for _ in 0..100 {
            let mut msgs = Vec::new();
            for i in g {
                while let Some(m) = self.nodes.get_mut(&n(*i)).unwrap().poll_message() {
                    msgs.push((n(*i), m));
                }
            }
            if msgs.is_empty() {
                return;
            }
            for (from, m) in msgs {
                // Through the wire format, as the integrator will.
                let m = QuorumMsg::decode(&m.encode()).unwrap();
                for i in g {
                    self.nodes
                        .get_mut(&n(*i))
                        .unwrap()
                        .handle_message(self.now, from, m.clone());
                }
            }
        }
        panic!("messages never settled");
    }

    fn advance(&mut self, d: Duration, groups: &[&[u32]]) {
        self.now += d;
        for q in self.nodes.values_mut() {
            if q.poll_deadline().is_some_and(|t| t <= self.now) {
                q.handle_timeout(self.now);
            }
        }
        for g in groups {
            self.settle(g);
        }
    }

    fn q(&self, i: u32) -> &VoteQuorum {
        &self.nodes[&n(i)]
    }

    fn events(&mut self, i: u32) -> Vec<QuorumEvent> {
        let q = self.nodes.get_mut(&n(i)).unwrap();
        std::iter::from_fn(|| q.poll_event()).collect()
    }
}

fn nodes(k: u32) -> QuorumConfig {
    QuorumConfig::new((1..=k).map(|i| (n(i), 1)))
}

#[test]
fn three_nodes_survive_one_loss_not_two() {
    let cfg = nodes(3);
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3]]);
    for i in 1..=3 {
        let s = c.q(i).status();
        assert!(s.quorate, "{s:?}");
        assert_eq!((s.expected_votes, s.total_votes, s.quorum), (3, 3, 2));
        assert_eq!(s.membership_state, "Cluster-Member");
    }
    c.split(&[&[1, 2], &[3]]);
    assert!(c.q(1).is_quorate() && c.q(2).is_quorate());
    assert!(!c.q(3).is_quorate());
    let ev = c.events(3);
    let lost = ev.iter().find_map(|e| match e {
        QuorumEvent::QuorumLost { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        lost.as_deref(),
        Some("quorum lost: 1 of 3 votes present, 2 needed; members: 3")
    );
    c.split(&[&[1], &[2], &[3]]);
    for i in 1..=3 {
        let s = c.q(i).status();
        assert!(!s.quorate);
        assert!(s.flags.contains(&"Activity blocked".to_string()));
        assert_eq!((s.expected_votes, s.total_votes, s.quorum), (3, 1, 2));
    }
}

#[test]
fn vote_arithmetic_table() {
    // (node votes, expected override, members present, expected, quorum, quorate)
    type Row = (&'static [u32], Option<u32>, &'static [u32], u32, u32, bool);
    let table: &[Row] = &[
        (&[1, 1, 1, 1], None, &[1, 2, 3], 4, 3, true), // tutorial: 4 nodes, quorum 3
        (&[1, 1, 1, 1], None, &[1, 2], 4, 3, false),   // 50% is not enough
        (&[1, 1, 1, 1, 1, 1, 1], None, &[1, 2, 3, 4], 7, 4, true),
        (&[1, 1, 1, 1, 1, 1, 1], None, &[1, 2, 3], 7, 4, false),
        (&[3, 1, 1], None, &[1], 5, 3, true), // weighted votes
        (&[3, 1, 1], None, &[2, 3], 5, 3, false),
        (&[1, 1, 1], Some(5), &[1, 2, 3], 5, 3, true), // expected above the sum
        (&[1, 1, 1], Some(5), &[1, 2], 5, 3, false),
        (&[1, 1, 1], Some(2), &[1, 2, 3], 3, 2, true), // raised to the total present
    ];
    for (row, (votes, exp, present, want_exp, want_q, want_quorate)) in table.iter().enumerate() {
        let mut cfg =
            QuorumConfig::new(votes.iter().enumerate().map(|(i, v)| (n(i as u32 + 1), *v)));
        cfg.expected_votes = *exp;
        let mut c = Cluster::new(&cfg);
        c.split(&[present]);
        let s = c.q(present[0]).status();
        assert_eq!(
            (s.expected_votes, s.quorum, s.quorate),
            (*want_exp, *want_q, *want_quorate),
            "row {row}: {s:?}"
        );
    }
}

#[test]
fn two_node_keeps_quorum_alone() {
    let mut cfg = nodes(2);
    cfg.two_node = true;
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2]]);
    let s = c.q(1).status();
    assert_eq!((s.expected_votes, s.quorum, s.quorate), (2, 1, true));
    assert!(s.flags.contains(&"2node".to_string()));
    c.split(&[&[1], &[2]]);
    assert!(
        c.q(1).is_quorate() && c.q(2).is_quorate(),
        "two_node: fencing decides"
    );
    assert!(c.q(1).status().reason.contains("two_node"));
}

#[test]
fn two_node_config_mistakes_are_refused_with_a_fix() {
    let mut cfg = nodes(3);
    cfg.two_node = true;
    let e = VoteQuorum::new(n(1), cfg).unwrap_err();
    assert!(e.to_string().contains("exactly 2"), "{e}");
    let mut cfg = nodes(2);
    cfg.two_node = true;
    cfg.qdisk_votes = 1;
    let e = VoteQuorum::new(n(1), cfg).unwrap_err();
    assert!(e.to_string().contains("expected_votes=\"3\""), "{e}");
}

#[test]
fn seven_nodes_with_six_qdisk_votes() {
    let mut cfg = nodes(7);
    cfg.qdisk_votes = 6;
    assert_eq!(cfg.initial_expected(), 13);
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3, 4, 5, 6, 7]]);
    let s = c.q(1).status();
    assert_eq!(
        (s.expected_votes, s.quorum, s.quorate),
        (13, 7, true),
        "{s:?}"
    );
    // Node 1 becomes disk master; all count the disk in.
    for i in 1..=7 {
        c.nodes.get_mut(&n(i)).unwrap().set_qdisk(c.now, Some(n(1)));
    }
    c.settle(&[1, 2, 3, 4, 5, 6, 7]);
    let s = c.q(4).status();
    assert_eq!((s.total_votes, s.quorum_device_counted), (13, true));
    // Four nodes die: 3 nodes + 6 disk votes = 9 >= 7.
    c.split(&[&[1, 2, 3], &[4], &[5], &[6], &[7]]);
    let s = c.q(2).status();
    assert_eq!((s.total_votes, s.quorum, s.quorate), (9, 7, true), "{s:?}");
    assert_eq!(s.quorum_device_master, Some(n(1)));
    // The others still claim the disk under master 1, who is not with them.
    for i in 4..=7 {
        let s = c.q(i).status();
        assert!(!s.quorate && !s.quorum_device_counted, "{s:?}");
    }
    // One survivor with the disk: 1 + 6 = 7.
    c.split(&[&[1], &[2], &[3]]);
    assert!(c.q(1).is_quorate());
    assert_eq!(c.q(1).status().total_votes, 7);
    assert!(!c.q(2).is_quorate());
    // Six nodes without the disk: 6 < 7.
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3, 4, 5, 6]]);
    assert!(!c.q(1).is_quorate());
    assert!(c
        .q(1)
        .status()
        .reason
        .contains("6 of 13 votes present (quorum disk votes not counted), 7 needed"));
}

#[test]
fn two_nodes_and_a_qdisk_split_leaves_exactly_one_side_quorate() {
    let mut cfg = nodes(2);
    cfg.expected_votes = Some(3);
    cfg.qdisk_votes = 1;
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2]]);
    for i in 1..=2 {
        c.nodes.get_mut(&n(i)).unwrap().set_qdisk(c.now, Some(n(1)));
    }
    c.settle(&[1, 2]);
    assert_eq!(c.q(2).status().total_votes, 3);
    c.split(&[&[1], &[2]]);
    // Node 2 still claims the disk (its qdisk has not noticed yet): not counted,
    // because the master it names is not in its partition.
    assert!(c.q(1).is_quorate());
    assert!(!c.q(2).is_quorate());
    assert_eq!(c.q(1).status().total_votes, 2);
    assert_eq!(c.q(2).status().total_votes, 1);
}

/// A disk master whose ring died cannot order its withdrawal: the claim the
/// survivors carry into the next ring may be stale. It counts only once the
/// master restates it there; until then, on each member, only if that
/// member's own disk still confirms the master (seed 3619).
#[test]
fn a_disk_claim_from_a_dead_ring_is_not_trusted_in_the_next() {
    let mut cfg = nodes(3);
    cfg.qdisk_votes = 2;
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3]]);
    for i in 1..=3 {
        c.nodes.get_mut(&n(i)).unwrap().set_qdisk(c.now, Some(n(2)));
    }
    c.settle(&[1, 2, 3]);
    assert_eq!(c.q(1).status().total_votes, 5);
    // Node 2 loses its disk path; its ring dies before it can say so, and
    // node 3's disk has not noticed yet.
    c.nodes.get_mut(&n(2)).unwrap().set_qdisk(c.now, None);
    while c.nodes.get_mut(&n(2)).unwrap().poll_message().is_some() {}
    c.ring += 1;
    let m = Membership {
        ring_id: c.ring,
        members: vec![(n(2), 1), (n(3), 1)],
    };
    for i in [2, 3] {
        c.nodes
            .get_mut(&n(i))
            .unwrap()
            .handle_membership(c.now, m.clone());
    }
    let (s2, s3) = (c.q(2).status(), c.q(3).status());
    assert!(
        c.q(2).is_syncing(),
        "no only-lost shortcut with a disk claim"
    );
    assert!(!s2.quorum_device_counted && !s2.quorate, "{s2:?}");
    assert!(s3.quorum_device_counted && s3.quorate, "{s3:?}");
    // Node 2's state says it holds nothing: neither counts the disk.
    c.settle(&[2, 3]);
    for i in [2, 3] {
        let s = c.q(i).status();
        assert!(!s.quorum_device_counted && !s.quorate, "node {i}: {s:?}");
    }
}

#[test]
fn wait_for_all_holds_a_cold_start_until_all_were_seen() {
    let mut cfg = nodes(2);
    cfg.two_node = true;
    cfg.wait_for_all = true;
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1]]);
    let s = c.q(1).status();
    assert!(!s.quorate && s.wait_for_all_blocked);
    assert!(s.reason.contains("missing node(s) 2"), "{}", s.reason);
    c.split(&[&[1, 2]]);
    assert!(c.q(1).is_quorate() && c.q(2).is_quorate());
    // After both were seen, a split keeps two_node behaviour.
    c.split(&[&[1], &[2]]);
    assert!(c.q(1).is_quorate() && c.q(2).is_quorate());
    // Node 2 restarts (cold) and joins node 1, which has seen everyone: the
    // cluster is quorate again as soon as the states are exchanged.
    c.restart(2, &cfg);
    c.split(&[&[1, 2]]);
    assert!(c.q(2).is_quorate());
    // A full outage: both cold again, node 1 alone waits.
    c.restart(1, &cfg);
    c.restart(2, &cfg);
    c.split(&[&[1], &[2]]);
    assert!(!c.q(1).is_quorate() && !c.q(2).is_quorate());
}

#[test]
fn last_man_standing_steps_expected_down_after_the_window() {
    let mut cfg = nodes(5);
    cfg.last_man_standing = true;
    cfg.last_man_standing_window = Duration::from_secs(10);
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3, 4, 5]]);
    c.split(&[&[1, 2, 3], &[4], &[5]]);
    assert!(c.q(1).is_quorate());
    assert_eq!(c.q(1).status().expected_votes, 5);
    // Membership changes before the window ends: no step down.
    c.advance(Duration::from_secs(5), &[&[1, 2, 3]]);
    assert_eq!(c.q(1).status().expected_votes, 5);
    c.advance(Duration::from_secs(6), &[&[1, 2, 3]]);
    for i in 1..=3 {
        let s = c.q(i).status();
        assert_eq!((s.expected_votes, s.quorum), (3, 2), "{s:?}");
    }
    assert!(c
        .events(1)
        .iter()
        .any(|e| matches!(e, QuorumEvent::ExpectedVotesChanged { from: 5, to: 3, .. })));
    // Now losing one of three keeps quorum (without LMS: 2 of 5, inquorate).
    c.split(&[&[1, 2], &[3]]);
    assert!(c.q(1).is_quorate());
    c.advance(Duration::from_secs(11), &[&[1, 2]]);
    assert_eq!(c.q(1).status().expected_votes, 2);
    // Two to one is not possible: 1 of 2 is not a majority.
    c.split(&[&[1], &[2]]);
    assert!(!c.q(1).is_quorate() && !c.q(2).is_quorate());
    // The lost nodes come back with their higher expected votes: raised again.
    c.split(&[&[1, 2, 3, 4, 5]]);
    assert_eq!(c.q(1).status().expected_votes, 5);
}

#[test]
fn expected_votes_are_raised_to_the_highest_total_and_shared_with_joiners() {
    let mut cfg = QuorumConfig::new([(n(1), 1), (n(2), 1), (n(3), 1), (n(4), 1)]);
    cfg.expected_votes = Some(2);
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3]]);
    assert_eq!(c.q(1).status().expected_votes, 3);
    c.split(&[&[1], &[2], &[3]]);
    // Remembered: one node of three is not quorate although config says 2.
    assert!(!c.q(1).is_quorate());
    assert_eq!(c.q(1).status().expected_votes, 3);
    // A fresh node 4 (expected 2 from config) joins node 1: takes 3.
    c.split(&[&[1, 4]]);
    assert_eq!(c.q(4).status().expected_votes, 3);
    assert!(c.q(4).is_quorate());
}

#[test]
fn set_expected_regains_quorum_but_never_below_a_majority_present() {
    let cfg = nodes(5);
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3, 4, 5]]);
    c.split(&[&[1, 2], &[3], &[4], &[5]]);
    assert!(!c.q(1).is_quorate());
    // Too high: would need more votes than present.
    let e = c
        .nodes
        .get_mut(&n(1))
        .unwrap()
        .set_expected(c.now, 9)
        .unwrap_err();
    assert_eq!(
        e,
        SetExpectedError::WouldBeInquorate {
            requested: 9,
            quorum: 5,
            total: 2,
            max: 3
        }
    );
    // cman_tool expected -e 1: quorum is still a majority of the 2 present.
    c.nodes
        .get_mut(&n(1))
        .unwrap()
        .set_expected(c.now, 1)
        .unwrap();
    c.settle(&[1, 2]);
    for i in 1..=2 {
        let s = c.q(i).status();
        assert_eq!(
            (s.expected_votes, s.quorum, s.quorate),
            (2, 2, true),
            "{s:?}"
        );
    }
    assert_eq!(
        c.nodes.get_mut(&n(1)).unwrap().set_expected(c.now, 0),
        Err(SetExpectedError::Zero)
    );
}

#[test]
fn leave_remove_lowers_expected_votes() {
    let cfg = nodes(3);
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3]]);
    c.nodes.get_mut(&n(3)).unwrap().leave(c.now, true);
    c.settle(&[1, 2, 3]);
    assert_eq!(c.q(1).status().expected_votes, 3, "node 3 is still present");
    c.split(&[&[1, 2], &[3]]);
    let s = c.q(1).status();
    assert_eq!((s.expected_votes, s.quorum, s.quorate), (2, 2, true));
    assert_eq!(c.q(3).status().membership_state, "Leaving");
    // Without remove, expected stays.
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3]]);
    c.nodes.get_mut(&n(3)).unwrap().leave(c.now, false);
    c.settle(&[1, 2, 3]);
    c.split(&[&[1, 2]]);
    assert_eq!(c.q(1).status().expected_votes, 3);
}

#[test]
fn hostile_input_is_counted_not_fatal() {
    let cfg = nodes(3);
    let mut q = VoteQuorum::new(n(1), cfg).unwrap();
    assert!(QuorumMsg::decode(b"\xff\x00garbage").is_err());
    assert!(QuorumMsg::decode(&vec![b' '; 5000]).is_err());
    q.handle_message(
        Instant::ZERO,
        n(2),
        QuorumMsg::SetExpected { expected_votes: 1 },
    );
    q.handle_membership(
        Instant::ZERO,
        Membership {
            ring_id: 1,
            members: vec![(n(1), 1), (n(1), 1)],
        },
    );
    q.handle_membership(
        Instant::ZERO,
        Membership {
            ring_id: 1,
            members: vec![(n(0), 1)],
        },
    );
    assert_eq!(q.status().ignored_inputs, 3);
    assert!(!q.is_quorate());
    let json = serde_json::to_value(q.status()).unwrap();
    assert_eq!(json["expected_votes"], 3);
    assert_eq!(json["membership_state"], "Not a member");
}

#[test]
fn joiners_do_not_count_until_synchronised() {
    // {1,2,3} of 5 quorate; then {1,4} | {2,3,5}: node 1 must not keep an
    // old "quorate" while {2,3,5} becomes quorate.
    let cfg = nodes(5);
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1, 2, 3, 4, 5]]);
    c.split(&[&[1, 2, 3], &[4, 5]]);
    assert!(c.q(1).is_quorate());
    c.ring += 1;
    let m = Membership {
        ring_id: c.ring,
        members: vec![(n(1), 1), (n(4), 1)],
    };
    c.nodes.get_mut(&n(1)).unwrap().handle_membership(c.now, m);
    assert!(
        !c.q(1).is_quorate(),
        "before sync, only node 1's survivors count"
    );
    assert_eq!(c.q(1).status().membership_state, "Syncing");
}

fn check_partitions(c: &Cluster, groups: &[Vec<u32>], two_node: bool) -> Result<(), TestCaseError> {
    let mut quorate_groups = 0;
    for g in groups {
        let first = c.q(g[0]).status();
        for i in g {
            let s = c.q(*i).status();
            prop_assert_eq!(s.quorate, first.quorate, "members of one ring disagree");
            prop_assert_eq!(
                (s.expected_votes, s.total_votes, s.quorum),
                (first.expected_votes, first.total_votes, first.quorum)
            );
        }
        if first.quorate {
            quorate_groups += 1;
        }
    }
    if !two_node {
        prop_assert!(
            quorate_groups <= 1,
            "{} partitions quorate at once",
            quorate_groups
        );
    }
    Ok(())
}

proptest! {
    // QUORUM_SOAK_CASES=20000 for a long run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("QUORUM_SOAK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
    ))]

    /// Any sequence of splits and merges: after each one settles, members of
    /// a partition agree and at most one partition is quorate.
    #[test]
    fn at_most_one_partition_is_quorate(
        votes in prop::collection::vec(1u32..4, 1..8),
        steps in prop::collection::vec(prop::collection::vec(0usize..4, 8), 1..6),
        with_disk in any::<bool>(),
        master_pick in 0usize..8,
        stale_claims in any::<bool>(),
    ) {
        let k = votes.len() as u32;
        let mut cfg = QuorumConfig::new(votes.iter().enumerate().map(|(i, v)| (n(i as u32 + 1), *v)));
        if with_disk {
            cfg.qdisk_votes = k.saturating_sub(1).max(1);
        }
        let mut c = Cluster::new(&cfg);
        let all: Vec<u32> = (1..=k).collect();
        c.split(&[&all]);
        let master = (master_pick as u32 % k) + 1;
        for step in &steps {
            let mut groups: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
            for i in 1..=k {
                groups.entry(step[(i - 1) as usize]).or_default().push(i);
            }
            let groups: Vec<Vec<u32>> = groups.into_values().collect();
            let refs: Vec<&[u32]> = groups.iter().map(|g| g.as_slice()).collect();
            c.split(&refs);
            if with_disk {
                // The disk master's partition is granted the votes; elsewhere
                // nodes may still claim them under the old master (stale).
                for g in &groups {
                    let has_master = g.contains(&master);
                    for i in g {
                        let claim = if has_master || stale_claims { Some(n(master)) } else { None };
                        c.nodes.get_mut(&n(*i)).unwrap().set_qdisk(c.now, claim);
                    }
                    c.settle(g);
                }
            }
            check_partitions(&c, &groups, false)?;
        }
    }

    /// Cold partitions that never met: still at most one quorate.
    #[test]
    fn cold_partitions_never_both_quorate(
        votes in prop::collection::vec(1u32..4, 2..8),
        assign in prop::collection::vec(0usize..3, 8),
    ) {
        let cfg = QuorumConfig::new(votes.iter().enumerate().map(|(i, v)| (n(i as u32 + 1), *v)));
        let mut c = Cluster::new(&cfg);
        let mut groups: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for i in 1..=votes.len() as u32 {
            groups.entry(assign[(i - 1) as usize]).or_default().push(i);
        }
        let groups: Vec<Vec<u32>> = groups.into_values().collect();
        let refs: Vec<&[u32]> = groups.iter().map(|g| g.as_slice()).collect();
        c.split(&refs);
        check_partitions(&c, &groups, false)?;
    }
}

#[test]
fn cman_status_lines_read_like_cman_tool() {
    let mut cfg = nodes(2);
    cfg.expected_votes = Some(3);
    cfg.qdisk_votes = 1;
    let mut c = Cluster::new(&cfg);
    c.split(&[&[1]]);
    let lines = c.q(1).status().cman_lines();
    let get = |k: &str| {
        lines
            .iter()
            .find(|(l, _)| *l == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("Expected votes"), "3");
    assert_eq!(get("Quorum device votes"), "1");
    assert_eq!(get("Total votes"), "1");
    assert_eq!(get("Quorum"), "2 Activity blocked");
    assert_eq!(get("Flags"), "Qdisk");
    assert_eq!(get("Membership state"), "Cluster-Member");
}
