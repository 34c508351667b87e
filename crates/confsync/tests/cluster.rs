//! Replicas of `ConfigSync` fed the same totem-ordered stream, as the daemon would.

use base::{Instant, NodeId};
use confsync::wire::{split_text, CHUNK_BYTES};
use confsync::{
    Action, ChunkKind, ConfSyncMsg, ConfigHash, ConfigSync, Event, MemberState, Phase, PushError,
    PushOutcome, ReloadCause,
};
use std::collections::BTreeMap;

/// A cluster.conf for nodes n1..n{nodes} with `version`; `filler` bytes of comment make it big.
pub fn conf(version: u64, nodes: u32, tweak: &str, filler: usize) -> String {
    let mut s = format!("<?xml version=\"1.0\"?>\n<cluster name=\"alpha\" config_version=\"{version}\">\n  <clusternodes>\n");
    for i in 1..=nodes {
        s.push_str(&format!(
            "    <clusternode name=\"n{i}\" nodeid=\"{i}\" votes=\"1\"/>\n"
        ));
    }
    s.push_str("  </clusternodes>\n");
    if !tweak.is_empty() {
        s.push_str(&format!("  <!-- {tweak} -->\n"));
    }
    if filler > 0 {
        s.push_str("  <!-- ");
        s.push_str(&"x".repeat(filler));
        s.push_str(" -->\n");
    }
    s.push_str("</cluster>\n");
    s
}

fn id(n: u32) -> NodeId {
    NodeId(n)
}

/// One node: its core, its on-disk file, what it emitted.
struct Replica {
    core: ConfigSync,
    disk: String,
    events: Vec<Event>,
    writes: Vec<(u64, ConfigHash, String)>,
}

/// Nodes split into partitions; each partition is one totem ring delivering in one order.
struct Cluster {
    n: u32,
    nodes: BTreeMap<NodeId, Replica>,
    partitions: Vec<Vec<NodeId>>,
    ring_seq: u64,
    now: u64,
    /// When set, chunks of transfers are dropped instead of delivered (for forging).
    drop_transfers: bool,
    /// When set, quorum is reported only after the first round of deliveries in a new
    /// partition (the quorum core's own exchange finishing after our announcements).
    late_quorum: bool,
    /// Partitions (by index) whose quorum is still to be reported.
    quorum_pending: Vec<usize>,
    /// With `late_quorum`, only these nodes learn quorum late (None: all), as a joining
    /// node does when the driver feeds the quorum core's view during its sync phase.
    late_only: Option<Vec<NodeId>>,
    /// The delivery round at whose start late quorum is reported.
    quorum_round: usize,
}

impl Cluster {
    fn new(n: u32, texts: &[(u32, String)]) -> Self {
        let nodes = texts
            .iter()
            .map(|(i, t)| {
                (
                    id(*i),
                    Replica {
                        core: ConfigSync::new(id(*i), t.clone()).expect("valid start config"),
                        disk: t.clone(),
                        events: Vec::new(),
                        writes: Vec::new(),
                    },
                )
            })
            .collect();
        Cluster {
            n,
            nodes,
            partitions: Vec::new(),
            ring_seq: 0,
            now: 0,
            drop_transfers: false,
            late_quorum: false,
            quorum_pending: Vec::new(),
            late_only: None,
            quorum_round: 1,
        }
    }

    fn now(&mut self) -> Instant {
        self.now += 1_000_000;
        Instant(self.now)
    }

    fn quorate(&self, part: &[NodeId]) -> bool {
        part.len() as u32 * 2 > self.n
    }

    /// New partitions (every listed node gets a regular configuration).
    fn split(&mut self, parts: &[&[u32]]) {
        let mut new_parts = Vec::new();
        self.quorum_pending.clear();
        for (index, p) in parts.iter().enumerate() {
            let members: Vec<NodeId> = p.iter().map(|i| id(*i)).collect();
            self.ring_seq += 1;
            let ring = self.ring_seq;
            let now = self.now();
            let quorate = self.quorate(&members);
            for m in &members {
                let r = self.nodes.get_mut(m).unwrap();
                r.core.handle_membership(now, ring, &members, &[]);
                // Quorum drops with the membership (as the quorum core reports it),
                // and is regained when the quorum core's exchange completes, before our messages.
                let late =
                    self.late_quorum && self.late_only.as_ref().is_none_or(|l| l.contains(m));
                r.core.handle_quorum(now, quorate && !late);
            }
            if quorate && self.late_quorum {
                self.quorum_pending.push(index);
            }
            new_parts.push(members);
        }
        self.partitions = new_parts;
    }

    /// Drains every core and delivers in one agreed order per partition until quiet.
    fn flush(&mut self) {
        for round in 0..10_000 {
            let mut moved = false;
            for (index, p) in self.partitions.clone().into_iter().enumerate() {
                if round >= self.quorum_round && self.quorum_pending.contains(&index) {
                    // The quorum core's exchange completes at this point of the order.
                    self.quorum_pending.retain(|i| *i != index);
                    let now = self.now();
                    for m in &p {
                        self.nodes.get_mut(m).unwrap().core.handle_quorum(now, true);
                    }
                }
                // Agreed order: round-robin over senders, one message each per round.
                for sender in &p {
                    let msg = self.nodes.get_mut(sender).unwrap().core.poll_message();
                    let Some(msg) = msg else { continue };
                    moved = true;
                    let bytes = msg.encode();
                    assert!(bytes.len() < 60 * 1024, "fits totem's payload");
                    let decoded = ConfSyncMsg::decode(&bytes).expect("own encoding decodes");
                    if self.drop_transfers {
                        if let ConfSyncMsg::Chunk(c) = &decoded {
                            if c.kind == ChunkKind::Transfer {
                                continue;
                            }
                        }
                    }
                    self.deliver(&p, *sender, decoded);
                }
            }
            self.drain();
            if !moved && self.quorum_pending.is_empty() {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn deliver(&mut self, part: &[NodeId], from: NodeId, msg: ConfSyncMsg) {
        let now = self.now();
        for m in part {
            self.nodes
                .get_mut(m)
                .unwrap()
                .core
                .handle_message(now, from, msg.clone());
        }
    }

    fn drain(&mut self) {
        for r in self.nodes.values_mut() {
            while let Some(a) = r.core.poll_action() {
                let Action::WriteConfig {
                    text,
                    version,
                    hash,
                } = a;
                assert_eq!(ConfigHash::of(text.as_bytes()), hash);
                r.disk = text.clone();
                r.writes.push((version, hash, text));
            }
            while let Some(e) = r.core.poll_event() {
                r.events.push(e);
            }
        }
    }

    fn node(&self, n: u32) -> &Replica {
        &self.nodes[&id(n)]
    }

    fn node_mut(&mut self, n: u32) -> &mut Replica {
        self.nodes.get_mut(&id(n)).unwrap()
    }

    fn in_force(&self, n: u32) -> (u64, ConfigHash) {
        let s = self.node(n).core.status();
        (s.version, s.hash)
    }

    fn take_events(&mut self, n: u32) -> Vec<Event> {
        std::mem::take(&mut self.node_mut(n).events)
    }
}

fn three(texts: [String; 3]) -> Cluster {
    let [a, b, c] = texts;
    Cluster::new(3, &[(1, a), (2, b), (3, c)])
}

#[test]
fn push_reaches_every_member_with_identical_writes() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    for n in 1..=3 {
        assert!(c.node(n).core.in_sync(), "node {n} in sync after start");
        assert!(c.node(n).writes.is_empty());
    }
    let v2 = conf(2, 3, "a new service would go here", 0);
    let now = c.now();
    let ticket = c
        .node_mut(2)
        .core
        .push(now, v2.clone())
        .expect("push accepted");
    c.flush();
    let expected = (2, ConfigHash::of(v2.as_bytes()), v2.clone());
    for n in 1..=3 {
        assert_eq!(c.node(n).writes, vec![expected.clone()], "node {n}");
        assert_eq!(c.node(n).disk, v2);
        assert_eq!(c.in_force(n), (2, expected.1));
        let evs = c.take_events(n);
        assert!(evs.iter().any(|e| matches!(e,
            Event::Reloaded { from: 1, to: 2, cause: ReloadCause::Push { from }, .. } if *from == id(2))));
        let results: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                Event::PushResult {
                    ticket: t,
                    mine,
                    outcome,
                    ..
                } => Some((*t, *mine, outcome.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            results,
            vec![(ticket, n == 2, PushOutcome::Applied { version: 2 })]
        );
        assert!(c.node(n).core.in_sync());
    }
}

#[test]
fn stale_node_joining_receives_the_newer_text_in_chunks() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2], &[3]]);
    c.flush();
    assert_eq!(c.node(3).core.status().phase, Phase::WaitingForQuorum);
    // 120 KiB: three chunks.
    let v2 = conf(2, 3, "", 120 * 1024);
    assert!(v2.len() > 2 * CHUNK_BYTES);
    let now = c.now();
    c.node_mut(1).core.push(now, v2.clone()).unwrap();
    c.flush();
    assert_eq!(
        c.node(3).core.status().version,
        1,
        "the inquorate side heard nothing"
    );
    c.split(&[&[1, 2, 3]]);
    c.flush();
    assert_eq!(c.node(3).writes.len(), 1);
    assert_eq!(c.node(3).disk, v2);
    assert_eq!(c.in_force(3), c.in_force(1));
    assert!(
        c.node(1).writes.len() == 1 && c.node(2).writes.len() == 1,
        "no second write"
    );
    let evs = c.take_events(3);
    assert!(evs.iter().any(|e| matches!(e,
        Event::Reloaded { from: 1, to: 2, cause: ReloadCause::Transfer { from }, .. } if *from == id(1))));
    for n in 1..=3 {
        assert!(c.node(n).core.in_sync(), "node {n}");
        let st = c.node(n).core.status();
        assert!(st.members.iter().all(|m| m.state == MemberState::InSync));
    }
}

#[test]
fn joiner_that_learns_quorum_after_the_transfer_still_gets_the_text() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2], &[3]]);
    c.flush();
    let v2 = conf(2, 3, "", 100 * 1024);
    let now = c.now();
    c.node_mut(2).core.push(now, v2.clone()).unwrap();
    c.flush();
    c.late_quorum = true;
    c.late_only = Some(vec![id(3)]);
    c.quorum_round = 8; // after the three chunks
    c.split(&[&[1, 2, 3]]);
    // Round 0 delivers the announcements; nodes 1 and 2 decide and node 1 starts the
    // transfer while node 3 still waits for its quorum view.
    c.flush();
    assert_eq!(c.node(3).disk, v2);
    assert!(c.node(3).core.in_sync());
    let tables: Vec<_> = (1..=3).map(|n| c.node(n).core.status().members).collect();
    assert!(tables.iter().all(|t| t == &tables[0]));
    assert!(tables[0].iter().all(|m| m.state == MemberState::InSync));
}

#[test]
fn a_restarted_node_with_an_old_file_is_brought_up_to_date() {
    let v5 = conf(5, 3, "", 0);
    let v3 = conf(3, 3, "old", 0);
    let mut c = three([v5.clone(), v5.clone(), v5.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    c.split(&[&[1, 2]]);
    c.flush();
    // node 3 restarts from an old backup
    c.nodes.insert(
        id(3),
        Replica {
            core: ConfigSync::new(id(3), v3).unwrap(),
            disk: String::new(),
            events: vec![],
            writes: vec![],
        },
    );
    c.split(&[&[1, 2, 3]]);
    c.flush();
    assert_eq!(c.node(3).disk, v5);
    assert!(c.node(3).core.in_sync());
}

#[test]
fn newer_config_on_join_is_refused_without_splitting_the_cluster() {
    let v7 = conf(7, 3, "", 0);
    let v9 = conf(9, 3, "edited by hand", 0);
    let mut c = three([v7.clone(), v7.clone(), v7.clone()]);
    c.split(&[&[1, 2]]);
    c.flush();
    assert!(c.node(1).core.in_sync());
    c.nodes.insert(
        id(3),
        Replica {
            core: ConfigSync::new(id(3), v9.clone()).unwrap(),
            disk: v9.clone(),
            events: vec![],
            writes: vec![],
        },
    );
    c.split(&[&[1, 2, 3]]);
    c.flush();
    for n in 1..=3 {
        assert!(c.node(n).writes.is_empty(), "nobody writes (node {n})");
    }
    assert_eq!(c.in_force(1).0, 7);
    assert_eq!(c.in_force(3).0, 9);
    assert!(c.node(1).core.in_sync() && c.node(2).core.in_sync());
    assert!(!c.node(3).core.in_sync());
    let msg = c
        .take_events(3)
        .into_iter()
        .find_map(|e| match e {
            Event::RefusedNewer {
                node,
                version: 9,
                cluster_version: 7,
                message,
            } if node == id(3) => Some(message),
            _ => None,
        })
        .expect("refused on node 3");
    assert!(
        msg.contains("this node (n3) has config_version 9 but the quorate cluster runs 7: it will not override the cluster; push version 10 from a quorate node, or replace this node's file"),
        "{msg}"
    );
    for n in 1..=3 {
        let st = c.node(n).core.status();
        assert_eq!(st.members[2].state, MemberState::RefusedNewer, "node {n}");
        assert_eq!(st.cluster_version, Some(7));
    }
    // A push of a version above 9 from a quorate node brings everyone, node 3 too, together.
    let now = c.now();
    assert!(matches!(
        c.node_mut(1).core.push(now, conf(8, 3, "", 0)),
        Err(PushError::VersionNotGreater { new: 8, current: 9 })
    ));
    let v10 = conf(10, 3, "", 0);
    c.node_mut(1).core.push(now, v10.clone()).unwrap();
    c.flush();
    for n in 1..=3 {
        assert_eq!(c.node(n).disk, v10);
        assert!(c.node(n).core.in_sync());
    }
}

#[test]
fn refused_node_whose_file_is_replaced_by_the_clusters_rejoins() {
    let v7 = conf(7, 3, "", 0);
    let v9 = conf(9, 3, "edited by hand", 0);
    let mut c = three([v7.clone(), v7.clone(), v7.clone()]);
    c.split(&[&[1, 2]]);
    c.flush();
    c.nodes.get_mut(&id(3)).unwrap().core = ConfigSync::new(id(3), v9).unwrap();
    c.split(&[&[1, 2, 3]]);
    c.flush();
    assert!(!c.node(3).core.in_sync());
    let now = c.now();
    c.node_mut(3).core.handle_local_file(now, &v7);
    c.flush();
    assert!(c.node(3).core.in_sync());
    assert!(c.take_events(3).iter().any(|e| matches!(
        e,
        Event::Reloaded {
            from: 9,
            to: 7,
            cause: ReloadCause::LocalFile,
            ..
        }
    )));
    for n in 1..=3 {
        let st = c.node(n).core.status();
        assert!(
            st.members.iter().all(|m| m.state == MemberState::InSync),
            "node {n}: {st:?}"
        );
    }
}

#[test]
fn equal_version_different_content_is_a_conflict_and_nobody_changes() {
    let a = conf(5, 3, "left", 0);
    let b = conf(5, 3, "right", 0);
    let old = conf(4, 3, "", 0);
    let mut c = three([a.clone(), b.clone(), old.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    for n in 1..=3 {
        assert!(c.node(n).writes.is_empty(), "node {n} changed nothing");
        assert_eq!(c.node(n).core.status().phase, Phase::Conflict);
        assert!(!c.node(n).core.in_sync());
        let evs = c.take_events(n);
        let msg = evs
            .iter()
            .find_map(|e| match e {
                Event::Conflict {
                    version: 5,
                    holders,
                    message,
                } => {
                    assert_eq!(holders.len(), 2);
                    Some(message.clone())
                }
                _ => None,
            })
            .expect("conflict reported");
        assert!(
            msg.contains("CONFIG CONFLICT") && msg.contains("config_version to 6"),
            "{msg}"
        );
    }
    assert_eq!(c.node(1).disk, a);
    assert_eq!(c.node(2).disk, b);
    assert_eq!(c.node(3).disk, old);
    // The way out: push a higher version.
    let v6 = conf(6, 3, "", 0);
    let now = c.now();
    c.node_mut(2).core.push(now, v6.clone()).unwrap();
    c.flush();
    for n in 1..=3 {
        assert_eq!(c.node(n).disk, v6);
        assert!(c.node(n).core.in_sync());
    }
}

#[test]
fn two_node_split_brain_pushes_conflict_when_they_merge() {
    let v1 = conf(1, 2, "", 0);
    let mut c = Cluster::new(1, &[(1, v1.clone()), (2, v1.clone())]); // n=1: every side quorate
    c.split(&[&[1, 2]]);
    c.flush();
    c.split(&[&[1], &[2]]);
    c.flush();
    let now = c.now();
    c.node_mut(1).core.push(now, conf(2, 2, "one", 0)).unwrap();
    c.node_mut(2).core.push(now, conf(2, 2, "two", 0)).unwrap();
    c.flush();
    c.split(&[&[1, 2]]);
    c.flush();
    assert_ne!(c.in_force(1), c.in_force(2));
    for n in 1..=2 {
        assert_eq!(c.node(n).core.status().phase, Phase::Conflict);
        assert_eq!(c.node(n).writes.len(), 1, "only its own push");
    }
}

#[test]
fn push_without_quorum_is_refused() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1], &[2, 3]]);
    c.flush();
    let now = c.now();
    let e = c.node_mut(1).core.push(now, conf(2, 3, "", 0)).unwrap_err();
    assert_eq!(e, PushError::Inquorate);
    assert!(e
        .to_string()
        .contains("a partition without quorum must not change the config"));
    c.flush();
    assert!(c.nodes.values().all(|r| r.writes.is_empty()));
}

#[test]
fn push_is_validated_before_anything_is_sent() {
    let v3 = conf(3, 3, "", 0);
    let mut c = three([v3.clone(), v3.clone(), v3.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    let now = c.now();
    let core = &mut c.node_mut(1).core;
    let e = core
        .push(now, "<cluster name=\"alpha\" config_version=\"4\">\n<clusternodes>\n<clusternode name=\"n1\" nodeid=\"x\"/></clusternodes></cluster>".into())
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PushError::Invalid(_)));
    assert!(text.contains("cluster.conf:3:"), "{text}");
    let e = core.push(now, conf(3, 3, "same number", 0)).unwrap_err();
    assert_eq!(e, PushError::VersionNotGreater { new: 3, current: 3 });
    assert!(e.to_string().contains("new config_version 3 is not greater than the one in force (3); raise config_version to at least 4"));
    let e = core
        .push(now, conf(4, 3, "", 0).replace("alpha", "beta"))
        .unwrap_err();
    assert!(e.to_string().contains("\"beta\"") && e.to_string().contains("\"alpha\""));
    assert!(core.poll_message().is_none(), "nothing was sent");
    core.push(now, conf(4, 3, "", 0)).unwrap();
    assert!(matches!(
        core.push(now, conf(5, 3, "", 0)),
        Err(PushError::Busy(1))
    ));
}

#[test]
fn concurrent_pushes_of_one_version_first_delivered_wins_everywhere() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    let now = c.now();
    let a = conf(2, 3, "from n1", 0);
    c.node_mut(1).core.push(now, a.clone()).unwrap();
    c.node_mut(3)
        .core
        .push(now, conf(2, 3, "from n3", 0))
        .unwrap();
    c.flush();
    for n in 1..=3 {
        assert_eq!(c.node(n).disk, a);
        let refused = c.take_events(n).into_iter().any(|e| {
            matches!(e,
            Event::PushResult { from, outcome: PushOutcome::Refused { .. }, .. } if from == id(3))
        });
        assert!(refused, "node {n} saw n3's push refused");
    }
}

#[test]
fn membership_change_during_a_push_resolves_the_ticket_as_not_applied() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    let now = c.now();
    let t = c.node_mut(1).core.push(now, conf(2, 3, "", 0)).unwrap();
    c.split(&[&[1, 2, 3]]); // a new ring before anything was delivered
    c.flush();
    let evs = c.take_events(1);
    assert!(evs.iter().any(|e| matches!(e,
        Event::PushResult { ticket, mine: true, outcome: PushOutcome::Refused { reason } , ..}
            if *ticket == t && reason.contains("nothing was applied"))));
    assert!(c.nodes.values().all(|r| r.writes.is_empty()));
}

#[test]
fn transfer_with_a_hash_mismatch_is_rejected() {
    let v1 = conf(1, 3, "", 0);
    let v2 = conf(2, 3, "", 0);
    let mut c = three([v2.clone(), v2.clone(), v1.clone()]);
    c.drop_transfers = true;
    c.split(&[&[1, 2, 3]]);
    c.flush();
    let st = c.node(3).core.status();
    assert_eq!(st.members[2].state, MemberState::Stale);
    // Node 1 is the designated sender; forge its transfer with the right hash but other bytes.
    let ring = st.ring.unwrap();
    let forged = conf(2, 3, "tampered", 0);
    let chunks = split_text(
        ring,
        ChunkKind::Transfer,
        2,
        ConfigHash::of(v2.as_bytes()),
        forged.as_bytes(),
    );
    for ch in chunks {
        c.deliver(&[id(1), id(2), id(3)], id(1), ConfSyncMsg::Chunk(ch));
    }
    c.drain();
    assert!(c.node(3).writes.is_empty());
    assert_eq!(c.node(3).core.status().version, 1);
    let reason = c
        .take_events(3)
        .into_iter()
        .find_map(|e| match e {
            Event::TransferRejected { reason, .. } => Some(reason),
            _ => None,
        })
        .expect("rejected");
    assert!(reason.contains("hash mismatch"), "{reason}");
    for n in 1..=3 {
        assert_eq!(
            c.node(n).core.status().members[2].state,
            MemberState::TransferFailed
        );
    }
    // The next membership change retries, this time for real.
    c.drop_transfers = false;
    c.split(&[&[1, 2, 3]]);
    c.flush();
    assert_eq!(c.node(3).disk, v2);
}

#[test]
fn hand_edit_is_reported_as_drift_once_and_cleared_on_revert() {
    let v7 = conf(7, 3, "", 0);
    let mut c = three([v7.clone(), v7.clone(), v7.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    c.take_events(1);
    let now = c.now();
    let edited = conf(8, 3, "vi was here", 0);
    c.node_mut(1).core.handle_local_file(now, &edited);
    c.node_mut(1).core.handle_local_file(now, &edited);
    c.drain();
    let drift: Vec<String> = c
        .take_events(1)
        .into_iter()
        .filter_map(|e| match e {
            Event::Drift { message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(
        drift,
        vec!["hand edit on n1: on-disk config_version 8 differs from the cluster's 7; push it with quorate config push or revert it".to_string()]
    );
    let st = c.node(1).core.status();
    assert_eq!(st.drift.as_ref().unwrap().on_disk_version, Some(8));
    assert_eq!(st.version, 7, "a hand edit is not adopted");
    c.node_mut(1).core.handle_local_file(now, "<cluster");
    assert!(c
        .node(1)
        .core
        .status()
        .drift
        .unwrap()
        .message
        .contains("not a valid cluster.conf"));
    c.node_mut(1).core.handle_local_file(now, &v7);
    assert!(c.node(1).core.status().drift.is_none());
    let json = serde_json_value(&c.node(1).core.status());
    assert_eq!(json["version"], 7);
    assert_eq!(json["in_sync"], true);
    assert_eq!(json["members"][0]["state"], "in_sync");
}

fn serde_json_value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn messages_from_other_rings_and_strangers_are_ignored() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2]]);
    let now = c.now();
    let stray = ConfSyncMsg::Announce(confsync::Announce {
        ring: 999,
        version: 50,
        hash: ConfigHash::of(b"x"),
        agreed: true,
    });
    c.node_mut(1).core.handle_message(now, id(2), stray);
    let ring = c.node(1).core.status().ring.unwrap();
    let stranger = ConfSyncMsg::Announce(confsync::Announce {
        ring,
        version: 50,
        hash: ConfigHash::of(b"x"),
        agreed: true,
    });
    c.node_mut(1).core.handle_message(now, id(3), stranger);
    assert_eq!(c.node(1).core.status().ignored_messages, 2);
    c.flush();
    assert!(c.node(1).core.in_sync());
    assert_eq!(c.node(1).core.status().cluster_version, Some(1));
}

// ---------------------------------------------------------------------------
// Property: random pushes, splits, merges and restarts.

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Partition assignment for nodes 1..=4 (value = partition index); who learns
        /// quorum late (0 nobody, 1 everyone, 2 even node ids); the round it arrives.
        Split([u8; 4], u8, usize),
        /// Node pushes the highest version it knows + bump.
        Push(u32, u64),
        /// Node restarts from its on-disk file (edited to `Some(bump)` newer by hand).
        Restart(u32, Option<u64>),
        /// The administrator copies an in-sync member's file onto node n (drift poll).
        CopyFile(u32),
        /// Deliver everything.
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<[u8; 4]>(), 0u8..3, 1usize..8).prop_map(|(a, late, round)| Op::Split(a.map(|x| x % 3), late, round)),
            4 => (1u32..=4, 1u64..3).prop_map(|(n, b)| Op::Push(n, b)),
            1 => (1u32..=4, proptest::option::weighted(0.3, 1u64..3)).prop_map(|(n, e)| Op::Restart(n, e)),
            1 => (1u32..=4).prop_map(Op::CopyFile),
            4 => Just(Op::Flush),
        ]
    }

    fn check(c: &Cluster) -> Result<(), TestCaseError> {
        for p in &c.partitions {
            let statuses: Vec<_> = p.iter().map(|n| c.nodes[n].core.status()).collect();
            // Everyone in a configuration sees the same phase, cluster config and member table.
            for s in &statuses[1..] {
                prop_assert_eq!(s.phase, statuses[0].phase);
                prop_assert_eq!(s.cluster_version, statuses[0].cluster_version);
                prop_assert_eq!(&s.members, &statuses[0].members);
            }
            if c.quorate(p) {
                prop_assert!(matches!(statuses[0].phase, Phase::Synced | Phase::Conflict));
            }
            if statuses[0].phase == Phase::Synced {
                let synced: Vec<_> = statuses
                    .iter()
                    .filter(|s| s.in_sync)
                    .map(|s| (s.version, s.hash))
                    .collect();
                for v in &synced {
                    prop_assert_eq!(v, &synced[0]);
                }
                for s in &statuses {
                    let m = s.members.iter().find(|m| m.node == s.node).unwrap();
                    let refused = matches!(
                        m.state,
                        MemberState::RefusedNewer | MemberState::RefusedConflict
                    );
                    prop_assert!(s.in_sync || refused, "{:?}", s);
                    if s.in_sync {
                        prop_assert_eq!(ConfigHash::of(c.nodes[&s.node].disk.as_bytes()), s.hash);
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("CONFSYNC_PROP_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn members_of_a_configuration_converge(ops in proptest::collection::vec(op(), 1..40)) {
            let v1 = conf(1, 4, "", 0);
            let mut c = Cluster::new(4, &[(1, v1.clone()), (2, v1.clone()), (3, v1.clone()), (4, v1.clone())]);
            c.split(&[&[1, 2, 3, 4]]);
            c.flush();
            let mut serial = 0u64;
            for op in ops {
                match op {
                    Op::Split(assign, late, round) => {
                        c.late_quorum = late > 0;
                        c.late_only = (late == 2).then(|| vec![id(2), id(4)]);
                        c.quorum_round = round;
                        let mut parts: Vec<Vec<u32>> = vec![vec![]; 3];
                        for (i, p) in assign.iter().enumerate() {
                            parts[usize::from(*p)].push(i as u32 + 1);
                        }
                        let parts: Vec<&[u32]> = parts.iter().filter(|p| !p.is_empty()).map(|p| p.as_slice()).collect();
                        c.split(&parts);
                    }
                    Op::Push(n, bump) => {
                        serial += 1;
                        let st = c.node(n).core.status();
                        let highest = st.members.iter().filter_map(|m| m.version).max().unwrap_or(st.version).max(st.version);
                        let now = c.now();
                        let _ = c.node_mut(n).core.push(now, conf(highest + bump, 4, &format!("push {serial}"), 0));
                    }
                    Op::Restart(n, edit) => {
                        let disk = c.node(n).disk.clone();
                        let text = match edit {
                            Some(b) => {
                                serial += 1;
                                let v = c.node(n).core.status().version + b;
                                conf(v, 4, &format!("hand {serial}"), 0)
                            }
                            None => disk,
                        };
                        let r = c.node_mut(n);
                        r.core = ConfigSync::new(id(n), text.clone()).unwrap();
                        r.disk = text;
                        // it comes back in its partition with a new ring
                        let parts: Vec<Vec<u32>> = c.partitions.iter().map(|p| p.iter().map(|x| x.0).collect()).collect();
                        let refs: Vec<&[u32]> = parts.iter().map(|p| p.as_slice()).collect();
                        c.split(&refs);
                    }
                    Op::CopyFile(n) => {
                        let part = c.partitions.iter().find(|p| p.contains(&id(n))).cloned().unwrap_or_default();
                        let source = part.iter().find(|m| c.nodes[m].core.in_sync()).copied();
                        if let Some(src) = source {
                            let text = c.nodes[&src].core.text().to_string();
                            let now = c.now();
                            let r = c.node_mut(n);
                            r.disk = text.clone();
                            r.core.handle_local_file(now, &text);
                        }
                    }
                    Op::Flush => {
                        let before: BTreeMap<NodeId, usize> = c.nodes.iter().map(|(n, r)| (*n, r.writes.len())).collect();
                        c.flush();
                        check(&c)?;
                        for p in c.partitions.iter().filter(|p| !c.quorate(p)) {
                            for n in p {
                                prop_assert_eq!(c.nodes[n].writes.len(), before[n], "inquorate node {:?} wrote", n);
                            }
                        }
                    }
                }
            }
            c.flush();
            check(&c)?;
        }
    }
}

#[test]
fn largest_config_travels_in_chunks_to_every_member() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    let head = conf(2, 3, "", 1).len() - 1;
    let v2 = conf(2, 3, "", confsync::wire::MAX_TEXT_BYTES - head);
    assert!(v2.len() <= confsync::wire::MAX_TEXT_BYTES);
    let started = std::time::Instant::now();
    let now = c.now();
    c.node_mut(3).core.push(now, v2.clone()).unwrap();
    c.flush();
    eprintln!(
        "push of {} bytes ({} chunks) through 3 replicas: {:?}",
        v2.len(),
        confsync::wire::chunk_count(v2.len()),
        started.elapsed()
    );
    for n in 1..=3 {
        assert_eq!(c.node(n).disk, v2);
    }
    let now = c.now();
    let too_big = conf(3, 3, "", confsync::wire::MAX_TEXT_BYTES);
    assert!(matches!(
        c.node_mut(1).core.push(now, too_big),
        Err(PushError::TooLarge(_))
    ));
}

#[test]
fn a_failed_write_is_reported_until_the_file_is_right() {
    let v1 = conf(1, 3, "", 0);
    let mut c = three([v1.clone(), v1.clone(), v1.clone()]);
    c.split(&[&[1, 2, 3]]);
    c.flush();
    let v2 = conf(2, 3, "", 0);
    let now = c.now();
    c.node_mut(1).core.push(now, v2.clone()).unwrap();
    c.flush();
    let core = &mut c.node_mut(3).core;
    core.handle_write_failed(now, 2, "No space left on device");
    let problem = core.status().problem.unwrap();
    assert!(
        problem.contains("cannot write config_version 2 to disk on n3: No space left on device")
    );
    // The old file is still on disk: the drift poll says so too.
    core.handle_local_file(now, &v1);
    assert!(core.status().drift.is_some());
    core.handle_local_file(now, &v2);
    let st = core.status();
    assert!(st.drift.is_none() && st.problem.is_none(), "{st:?}");
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    fn msg(ring: u64) -> impl Strategy<Value = ConfSyncMsg> {
        let hash = prop_oneof![
            Just(ConfigHash::of(conf(1, 3, "", 0).as_bytes())),
            any::<[u8; 32]>().prop_map(ConfigHash)
        ];
        prop_oneof![
            (0u64..3, 0u64..12, hash.clone(), any::<bool>()).prop_map(
                move |(r, version, hash, agreed)| {
                    ConfSyncMsg::Announce(confsync::Announce {
                        ring: ring + r,
                        version,
                        hash,
                        agreed,
                    })
                }
            ),
            (
                0u64..3,
                any::<bool>(),
                0u64..12,
                hash,
                proptest::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(move |(r, push, version, hash, data)| {
                    let kind = if push {
                        ChunkKind::Push { ticket: 1 }
                    } else {
                        ChunkKind::Transfer
                    };
                    ConfSyncMsg::Chunk(split_text(ring + r, kind, version, hash, &data).remove(0))
                }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_ordered_messages_never_break_a_core(
            msgs in proptest::collection::vec((1u32..6, msg(1)), 0..60),
            quorate in any::<bool>(),
        ) {
            let v1 = conf(1, 3, "", 0);
            let mut core = ConfigSync::new(id(1), v1).unwrap();
            let now = Instant(1);
            core.handle_membership(now, 1, &[id(1), id(2), id(3)], &[]);
            core.handle_quorum(now, quorate);
            for (from, m) in msgs {
                core.handle_message(now, id(from), m);
                while core.poll_message().is_some() {}
                while core.poll_action().is_some() {}
                while core.poll_event().is_some() {}
            }
            // Whatever arrived, the config in force is still a valid cluster.conf.
            prop_assert!(config::parse("x", core.text()).config.is_some());
            prop_assert_eq!(core.status().version, core.config().config_version);
        }
    }
}
