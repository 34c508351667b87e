//! Vote-based quorum: cman's arithmetic with votequorum's modern options.
//!
//! # The formula
//!
//! cman's `calculate_quorum` (commands.c) computes
//! `quorum = max((expected + 2) / 2, (total + 2) / 2)` in integer arithmetic.
//! `(e + 2) / 2` is exactly `e / 2 + 1`, the "clear majority" of the RHCS
//! tutorial (4 expected votes => 3, 13 => 7). The second term only matters
//! when more votes are present than expected; since expected votes are raised
//! to the highest total ever seen (as cman does) it never exceeds the first,
//! but it is kept so that [`VoteQuorum::set_expected`] can never set quorum
//! below a strict majority of the votes actually present. With `two_node` and
//! at most two member nodes quorum is 1 (safety is left to fencing).
//!
//! # Agreement
//!
//! Every member of a configuration must reach the same decision. The core
//! therefore decides only from inputs that totem delivers in the same order to
//! all members: membership changes ([`VoteQuorum::handle_membership`]) and
//! [`QuorumMsg`] messages ([`VoteQuorum::handle_message`]). After each
//! membership change every member broadcasts its [`NodeState`] (the integrator
//! sends whatever [`VoteQuorum::poll_message`] returns through totem and
//! delivers it back to every member, the sender included).
//!
//! * When the new membership only *lost* nodes, all survivors already share the
//!   same node states from the previous ring and decide at once.
//! * When nodes joined, members keep their previous decision (`syncing`) until
//!   the state of every member has been delivered in the new ring, then all
//!   decide together. This is votequorum's sync phase.
//!
//! Expected votes are the highest value any member advertises (cman takes the
//! highest `expected_votes` of all nodes) and never less than the votes
//! present. `set_expected`, `leave remove` and last_man_standing lower it by an
//! ordered message that every member applies at the same point.

use base::{Duration, Instant, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

/// Most nodes a membership may list; larger ones are dropped as malformed.
pub const MAX_MEMBERS: usize = 1024;
/// Most events kept undrained; older ones are dropped (and counted).
pub const MAX_EVENTS: usize = 1024;
/// Most messages kept unsent.
pub const MAX_OUTBOX: usize = 64;
/// Largest encoded [`QuorumMsg`] accepted by [`QuorumMsg::decode`].
pub const MAX_MSG_BYTES: usize = 4096;

/// Static quorum configuration, identical on every node (from cluster.conf
/// `<cman>`, `<clusternodes>` and `<quorumd>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumConfig {
    /// Every configured node and its votes (`<clusternode votes=...>`, default 1).
    pub nodes: BTreeMap<NodeId, u32>,
    /// `<cman expected_votes>`; `None` means the sum of node votes plus the
    /// quorum device votes (1 with `two_node`).
    pub expected_votes: Option<u32>,
    /// `<cman two_node="1">`: one node alone keeps quorum; fencing decides.
    pub two_node: bool,
    /// A cold-started cluster is not quorate until all configured nodes have
    /// been members at the same time once.
    pub wait_for_all: bool,
    /// Lower expected votes to the votes present after the membership has been
    /// stable and quorate for [`QuorumConfig::last_man_standing_window`].
    pub last_man_standing: bool,
    /// How long a membership must be stable before last_man_standing acts.
    pub last_man_standing_window: Duration,
    /// `<quorumd votes>`: votes of the quorum disk, 0 when there is none.
    pub qdisk_votes: u32,
}

impl QuorumConfig {
    /// A configuration with the given nodes (votes each) and cman's defaults.
    pub fn new(nodes: impl IntoIterator<Item = (NodeId, u32)>) -> Self {
        QuorumConfig {
            nodes: nodes.into_iter().collect(),
            expected_votes: None,
            two_node: false,
            wait_for_all: false,
            last_man_standing: false,
            last_man_standing_window: Duration::from_secs(10),
            qdisk_votes: 0,
        }
    }

    /// The expected votes this configuration starts with.
    pub fn initial_expected(&self) -> u32 {
        match self.expected_votes {
            Some(e) => e,
            None if self.two_node => 1,
            None => self
                .nodes
                .values()
                .fold(0u32, |a, v| a.saturating_add(*v))
                .saturating_add(self.qdisk_votes),
        }
    }

    /// Check the combination of options the way cman and votequorum do.
    pub fn validate(&self) -> Result<(), QuorumConfigError> {
        if self.nodes.is_empty() {
            return Err(QuorumConfigError::NoNodes);
        }
        if self.nodes.contains_key(&NodeId(0)) {
            return Err(QuorumConfigError::NodeIdZero);
        }
        if self.initial_expected() == 0 {
            return Err(QuorumConfigError::ZeroExpected);
        }
        if self.two_node {
            if self.nodes.len() != 2 {
                return Err(QuorumConfigError::TwoNodeCount(self.nodes.len()));
            }
            if self.expected_votes.is_some_and(|e| e != 1) {
                return Err(QuorumConfigError::TwoNodeExpected(
                    self.expected_votes.unwrap_or(0),
                ));
            }
            if self.qdisk_votes > 0 {
                return Err(QuorumConfigError::TwoNodeWithQdisk);
            }
            if self.last_man_standing {
                return Err(QuorumConfigError::TwoNodeWithLms);
            }
        }
        if self.last_man_standing && self.qdisk_votes > 0 {
            return Err(QuorumConfigError::LmsWithQdisk);
        }
        Ok(())
    }
}

/// A quorum configuration that cman or votequorum would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuorumConfigError {
    /// No `<clusternode>` at all.
    #[error("no cluster nodes configured: add <clusternode name=... nodeid=...> entries")]
    NoNodes,
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved: give every <clusternode> a nodeid of 1 or more")]
    NodeIdZero,
    /// Expected votes of zero would make every partition quorate.
    #[error("expected_votes is 0: set <cman expected_votes> to at least 1 or give nodes votes")]
    ZeroExpected,
    /// two_node with a node count other than 2.
    #[error("two_node=\"1\" needs exactly 2 cluster nodes, found {0}: remove two_node")]
    TwoNodeCount(usize),
    /// two_node with expected_votes other than 1.
    #[error("two_node=\"1\" requires expected_votes=\"1\", found {0}")]
    TwoNodeExpected(u32),
    /// two_node together with a quorum disk.
    #[error("two_node cannot be combined with a quorum disk: use two_node=\"0\" expected_votes=\"3\" and <quorumd votes=\"1\">")]
    TwoNodeWithQdisk,
    /// two_node together with last_man_standing.
    #[error("last_man_standing has no effect with two_node: remove one of them")]
    TwoNodeWithLms,
    /// last_man_standing together with a quorum disk.
    #[error("last_man_standing cannot be combined with a quorum disk (as in votequorum): remove one of them")]
    LmsWithQdisk,
}

/// One membership as totem delivers it: a ring id and each member's votes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Identifies the configuration; equal ids mean equal member lists.
    pub ring_id: u64,
    /// Members and their votes.
    pub members: Vec<(NodeId, u32)>,
}

/// What a node tells the other members after every membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The ring this state was sent in; states from other rings are ignored.
    pub ring_id: u64,
    /// The expected votes this node holds (highest seen, or as lowered).
    pub expected_votes: u32,
    /// This node has seen every configured node at once (wait_for_all).
    pub wait_for_all_done: bool,
    /// The quorum disk counts this node in, under this disk master.
    pub qdisk_master: Option<NodeId>,
}

/// Messages the vote core exchanges through totem (total order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumMsg {
    /// A member's state; sent after each membership change and on change.
    State(NodeState),
    /// `cman_tool expected -e N`: every member sets expected votes to N.
    SetExpected {
        /// The new expected votes.
        expected_votes: u32,
    },
    /// last_man_standing: the membership of `ring_id` was stable for the
    /// window; lower expected votes to the votes present.
    LastManStanding {
        /// The ring that was stable.
        ring_id: u64,
        /// The votes present in it.
        expected_votes: u32,
    },
    /// `cman_tool leave [remove]`: the sender is leaving.
    Leaving {
        /// Lower expected votes by the sender's votes.
        remove: bool,
    },
}

impl QuorumMsg {
    /// Encode for transport through totem.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain enums of integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decode a message received through totem.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MSG_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// A quorum message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Larger than [`MAX_MSG_BYTES`].
    #[error("quorum message of {0} bytes is larger than the limit of 4096")]
    TooLarge(usize),
    /// Not a quorum message.
    #[error("malformed quorum message: {0}")]
    Malformed(String),
}

/// Why `cman_tool expected` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SetExpectedError {
    /// Zero expected votes.
    #[error("expected votes must be at least 1")]
    Zero,
    /// The node is not a member of a configuration.
    #[error("this node is not a cluster member yet: start the cluster (quorate cman join) first")]
    NotMember,
    /// A membership change is being synchronised.
    #[error("membership is changing: retry in a moment")]
    Syncing,
    /// The new value would leave the present votes below quorum.
    #[error("expected votes {requested} would need a quorum of {quorum} but only {total} votes are present: choose a value of at most {max}")]
    WouldBeInquorate {
        /// Requested expected votes.
        requested: u32,
        /// Quorum that value implies.
        quorum: u32,
        /// Votes present.
        total: u32,
        /// Highest value that keeps the cluster quorate.
        max: u32,
    },
}

/// Changes the integrator acts on (and logs verbatim).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum QuorumEvent {
    /// This partition may act now.
    QuorumGained {
        /// The ring in which quorum was gained.
        ring_id: u64,
        /// Admin-readable explanation.
        reason: String,
    },
    /// This partition must not start, stop or recover anything.
    QuorumLost {
        /// The ring in which quorum was lost (0 before any membership).
        ring_id: u64,
        /// Admin-readable explanation.
        reason: String,
    },
    /// Expected votes changed.
    ExpectedVotesChanged {
        /// Previous value.
        from: u32,
        /// New value.
        to: u32,
        /// Why.
        reason: String,
    },
}

/// One member in a [`QuorumStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Node id.
    pub node_id: NodeId,
    /// Votes.
    pub votes: u32,
    /// Its state was delivered in the current ring.
    pub synced: bool,
}

/// Everything `cman_tool status` shows that the vote core knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuorumStatus {
    /// This node.
    pub node_id: NodeId,
    /// Current ring ("Cluster Generation"); `None` before the first membership.
    pub ring_id: Option<u64>,
    /// "Cluster-Member", "Syncing", "Not a member" or "Leaving".
    pub membership_state: String,
    /// Member nodes ("Nodes").
    pub nodes: u32,
    /// "Expected votes".
    pub expected_votes: u32,
    /// "Total votes" (nodes plus the quorum device when counted).
    pub total_votes: u32,
    /// "Node votes": this node's votes.
    pub node_votes: u32,
    /// "Quorum".
    pub quorum: u32,
    /// The partition is quorate.
    pub quorate: bool,
    /// "Quorum device votes" configured (0 without a quorum disk).
    pub quorum_device_votes: u32,
    /// The quorum device votes are counted in `total_votes`.
    pub quorum_device_counted: bool,
    /// The disk master that grants the device votes, when counted.
    pub quorum_device_master: Option<NodeId>,
    /// cman_tool "Flags": `2node`, `WaitForAll`, `LastManStanding`, `Qdisk`,
    /// `Activity blocked` (inquorate), `Syncing`.
    pub flags: Vec<String>,
    /// wait_for_all still holds this cold-started cluster.
    pub wait_for_all_blocked: bool,
    /// Configured nodes that are not members.
    pub missing_nodes: Vec<NodeId>,
    /// Members and their votes.
    pub members: Vec<MemberStatus>,
    /// The current decision in words.
    pub reason: String,
    /// Events dropped because nobody drained them.
    pub dropped_events: u64,
    /// Malformed or out-of-ring inputs ignored.
    pub ignored_inputs: u64,
}

impl QuorumStatus {
    /// The `cman_tool status` lines this core can fill, in cman's order and
    /// wording. The caller adds Version, Config Version, Cluster Name/Id,
    /// Node name and addresses from the configuration.
    pub fn cman_lines(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            (
                "Cluster Generation",
                self.ring_id
                    .map_or_else(|| "-".to_string(), |r| r.to_string()),
            ),
            ("Membership state", self.membership_state.clone()),
            ("Nodes", self.nodes.to_string()),
            ("Expected votes", self.expected_votes.to_string()),
        ];
        if self.quorum_device_votes > 0 {
            v.push(("Quorum device votes", self.quorum_device_votes.to_string()));
        }
        v.extend([
            ("Total votes", self.total_votes.to_string()),
            ("Node votes", self.node_votes.to_string()),
            (
                "Quorum",
                format!(
                    "{}{}",
                    self.quorum,
                    if self.quorate {
                        ""
                    } else {
                        " Activity blocked"
                    }
                ),
            ),
            (
                "Flags",
                self.flags
                    .iter()
                    .filter(|f| *f != "Activity blocked")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("Node ID", self.node_id.to_string()),
        ]);
        v
    }
}

/// The decision derived from ordered inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decision {
    expected: u32,
    total: u32,
    node_votes: u32,
    quorum: u32,
    quorate: bool,
    qdisk_master: Option<NodeId>,
    wfa_blocked: bool,
    all_seen: bool,
    reason: String,
}

/// The vote-based quorum core of one node. See the module docs.
#[derive(Debug)]
pub struct VoteQuorum {
    me: NodeId,
    cfg: QuorumConfig,
    ring_id: Option<u64>,
    members: BTreeMap<NodeId, u32>,
    states: BTreeMap<NodeId, NodeState>,
    syncing: bool,
    // What the current decision is computed from: the current ring once
    // synchronised, else the survivors of the previous basis.
    basis_members: BTreeMap<NodeId, u32>,
    basis_states: BTreeMap<NodeId, NodeState>,
    // What this node advertises.
    my_expected: u32,
    my_wfa_done: bool,
    my_qdisk: Option<NodeId>,
    leaving: bool,
    leaving_remove: BTreeMap<NodeId, u32>,
    decision: Decision,
    quorate: bool,
    lms_deadline: Option<Instant>,
    lms_sent: bool,
    outbox: VecDeque<QuorumMsg>,
    events: VecDeque<QuorumEvent>,
    dropped_events: u64,
    ignored_inputs: u64,
}

impl VoteQuorum {
    /// A core for node `me`; it is not quorate until its first membership.
    pub fn new(me: NodeId, cfg: QuorumConfig) -> Result<Self, QuorumConfigError> {
        cfg.validate()?;
        let expected = cfg.initial_expected();
        let wfa_done = !cfg.wait_for_all;
        let mut q = VoteQuorum {
            me,
            ring_id: None,
            members: BTreeMap::new(),
            states: BTreeMap::new(),
            syncing: false,
            basis_members: BTreeMap::new(),
            basis_states: BTreeMap::new(),
            my_expected: expected,
            my_wfa_done: wfa_done,
            my_qdisk: None,
            leaving: false,
            leaving_remove: BTreeMap::new(),
            decision: Decision {
                expected,
                total: 0,
                node_votes: 0,
                quorum: expected / 2 + 1,
                quorate: false,
                qdisk_master: None,
                wfa_blocked: cfg.wait_for_all,
                all_seen: false,
                reason: "not a cluster member yet".into(),
            },
            quorate: false,
            lms_deadline: None,
            lms_sent: false,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            dropped_events: 0,
            ignored_inputs: 0,
            cfg,
        };
        q.decision.quorum = q.quorum_for(expected, 0, 0);
        Ok(q)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The partition is quorate (may start, stop and recover services).
    pub fn is_quorate(&self) -> bool {
        self.quorate
    }

    /// Members' states for the current membership are still arriving: until
    /// they have, members may disagree on [`VoteQuorum::is_quorate`]. Layers
    /// that need the same answer on every member wait for this to be false.
    pub fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// The configuration this core was built with.
    pub fn config(&self) -> &QuorumConfig {
        &self.cfg
    }

    /// A new totem configuration (delivered in the same order on all members).
    pub fn handle_membership(&mut self, now: Instant, m: Membership) {
        let mut members = BTreeMap::new();
        if m.members.len() > MAX_MEMBERS {
            self.ignored_inputs += 1;
            return;
        }
        for (n, v) in &m.members {
            if n.0 == 0 || members.insert(*n, *v).is_some() {
                self.ignored_inputs += 1;
                return;
            }
        }
        if !members.contains_key(&self.me) {
            // We are not part of this configuration: we left or were excluded.
            self.leaving = false;
            self.ring_id = Some(m.ring_id);
            self.members.clear();
            self.states.clear();
            self.basis_members.clear();
            self.basis_states.clear();
            self.syncing = false;
            self.lms_deadline = None;
            self.recompute(now, "this node is not in the membership");
            return;
        }
        // Only-lost: every member is part of what the current decision is
        // based on, so all survivors share that basis and decide at once.
        // Not while a quorum disk claim is part of it: a claim carried over
        // from a ring that died may be stale (its master withdrew or
        // restarted, and could not say so in a dead ring), and another
        // partition may hold the disk by now; claims count again once
        // their masters restate them in this ring.
        let carries_claim = self.cfg.qdisk_votes > 0
            && self.basis_states.values().any(|s| s.qdisk_master.is_some());
        let only_lost = self.ring_id.is_some()
            && !self.basis_members.is_empty()
            && !carries_claim
            && members.keys().all(|n| self.basis_members.contains_key(n));
        self.ring_id = Some(m.ring_id);
        self.basis_members = members
            .iter()
            .filter(|(n, _)| self.basis_members.contains_key(n))
            .map(|(n, v)| (*n, *v))
            .collect();
        self.basis_states.retain(|n, _| members.contains_key(n));
        // `cman_tool leave remove`: the nodes that announced it and are gone
        // take their votes out of expected votes.
        let removed: Vec<(NodeId, u32)> = self
            .leaving_remove
            .iter()
            .filter(|(n, _)| !members.contains_key(n))
            .map(|(n, v)| (*n, *v))
            .collect();
        self.leaving_remove.clear();
        let mut removal_event = None;
        if !removed.is_empty() {
            let gone: u32 = removed.iter().map(|(_, v)| *v).sum();
            let from = self.decision.expected;
            let base = self
                .basis_states
                .values()
                .map(|s| s.expected_votes)
                .max()
                .unwrap_or(from);
            let to = base.saturating_sub(gone).max(1);
            for s in self.basis_states.values_mut() {
                s.expected_votes = to;
            }
            self.my_expected = to;
            let names: Vec<String> = removed.iter().map(|(n, _)| n.to_string()).collect();
            removal_event = Some((
                from,
                format!(
                    "node(s) {} left with remove ({gone} votes)",
                    names.join(",")
                ),
            ));
        }
        self.members = members;
        self.lms_deadline = None;
        self.lms_sent = false;
        if only_lost {
            self.states = self.basis_states.clone();
            for s in self.states.values_mut() {
                s.ring_id = m.ring_id;
            }
            self.syncing = false;
        } else {
            // Until every member's state is delivered, decide from the
            // survivors of the previous basis only (joiners do not count yet).
            self.states.clear();
            self.syncing = true;
        }
        self.queue_state();
        self.recompute(now, "membership changed");
        if let Some((from, reason)) = removal_event {
            if self.decision.expected != from {
                self.push_event(QuorumEvent::ExpectedVotesChanged {
                    from,
                    to: self.decision.expected,
                    reason,
                });
            }
        }
    }

    /// A quorum message from `from`, delivered by totem in agreed order.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: QuorumMsg) {
        let Some(ring) = self.ring_id else {
            self.ignored_inputs += 1;
            return;
        };
        if !self.members.contains_key(&from) {
            self.ignored_inputs += 1;
            return;
        }
        match msg {
            QuorumMsg::State(s) => {
                if s.ring_id != ring || s.expected_votes == 0 {
                    self.ignored_inputs += 1;
                    return;
                }
                self.states.insert(from, s);
                if self.syncing {
                    if self.members.keys().all(|n| self.states.contains_key(n)) {
                        self.syncing = false;
                        self.recompute(now, "membership synchronised");
                    }
                } else {
                    self.recompute(now, "member state changed");
                }
            }
            QuorumMsg::SetExpected { expected_votes } => {
                if self.syncing || expected_votes == 0 {
                    self.ignored_inputs += 1;
                    return;
                }
                if self.check_expected(expected_votes).is_err() {
                    self.ignored_inputs += 1;
                    return;
                }
                let reason = format!("cman_tool expected -e {expected_votes} from node {from}");
                self.apply_expected(now, expected_votes, &reason);
            }
            QuorumMsg::LastManStanding {
                ring_id,
                expected_votes,
            } => {
                if ring_id != ring
                    || self.syncing
                    || !self.decision.quorate
                    || expected_votes != self.decision.total
                    || expected_votes >= self.decision.expected
                {
                    // Stale (membership changed since) or already applied.
                    return;
                }
                let reason = format!(
                    "last_man_standing: membership stable for {}, expected votes follow the {} votes present",
                    self.cfg.last_man_standing_window, expected_votes
                );
                self.apply_expected(now, expected_votes, &reason);
            }
            QuorumMsg::Leaving { remove } => {
                let votes = self.members.get(&from).copied().unwrap_or(0);
                if from == self.me {
                    self.leaving = true;
                }
                if remove {
                    // Applied when the membership without it is delivered.
                    self.leaving_remove.insert(from, votes);
                }
            }
        }
    }

    /// The local quorum disk counts this node in under `master`, or not
    /// (`None`). Feed [`crate::QdiskEvent::Availability`] here.
    pub fn set_qdisk(&mut self, now: Instant, master: Option<NodeId>) {
        let _ = now;
        if self.my_qdisk != master {
            self.my_qdisk = master;
            if self.ring_id.is_some() && self.members.contains_key(&self.me) {
                self.queue_state();
            }
        }
    }

    /// `cman_tool expected -e N`: checked here, then broadcast so every member
    /// applies it at the same point. Refused when it would leave the present
    /// votes inquorate.
    pub fn set_expected(&mut self, now: Instant, expected: u32) -> Result<(), SetExpectedError> {
        let _ = now;
        if expected == 0 {
            return Err(SetExpectedError::Zero);
        }
        if self.ring_id.is_none() || !self.members.contains_key(&self.me) {
            return Err(SetExpectedError::NotMember);
        }
        if self.syncing {
            return Err(SetExpectedError::Syncing);
        }
        self.check_expected(expected)?;
        self.push_msg(QuorumMsg::SetExpected {
            expected_votes: expected,
        });
        Ok(())
    }

    /// `cman_tool leave [remove]`: announce the departure; with `remove` the
    /// remaining members lower expected votes by this node's votes.
    pub fn leave(&mut self, now: Instant, remove: bool) {
        let _ = now;
        self.push_msg(QuorumMsg::Leaving { remove });
    }

    /// Timers (last_man_standing window).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.lms_deadline {
            if now >= d {
                self.lms_deadline = None;
                if !self.lms_sent
                    && self.decision.quorate
                    && self.decision.total < self.decision.expected
                {
                    if let Some(ring_id) = self.ring_id {
                        self.lms_sent = true;
                        self.push_msg(QuorumMsg::LastManStanding {
                            ring_id,
                            expected_votes: self.decision.total,
                        });
                    }
                }
            }
        }
    }

    /// When [`VoteQuorum::handle_timeout`] wants to be called next.
    pub fn poll_deadline(&self) -> Option<Instant> {
        self.lms_deadline
    }

    /// The next message to broadcast through totem (to all members, self included).
    pub fn poll_message(&mut self) -> Option<QuorumMsg> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<QuorumEvent> {
        self.events.pop_front()
    }

    /// A `cman_tool status` snapshot.
    pub fn status(&self) -> QuorumStatus {
        let d = &self.decision;
        let mut flags = Vec::new();
        if self.cfg.two_node {
            flags.push("2node".to_string());
        }
        if self.cfg.wait_for_all {
            flags.push("WaitForAll".to_string());
        }
        if self.cfg.last_man_standing {
            flags.push("LastManStanding".to_string());
        }
        if self.cfg.qdisk_votes > 0 {
            flags.push("Qdisk".to_string());
        }
        if self.syncing {
            flags.push("Syncing".to_string());
        }
        if !self.quorate {
            flags.push("Activity blocked".to_string());
        }
        let membership_state = if self.leaving {
            "Leaving"
        } else if self.ring_id.is_none() || !self.members.contains_key(&self.me) {
            "Not a member"
        } else if self.syncing {
            "Syncing"
        } else {
            "Cluster-Member"
        };
        QuorumStatus {
            node_id: self.me,
            ring_id: self.ring_id,
            membership_state: membership_state.to_string(),
            nodes: self.members.len() as u32,
            expected_votes: d.expected,
            total_votes: d.total,
            node_votes: self
                .members
                .get(&self.me)
                .or_else(|| self.cfg.nodes.get(&self.me))
                .copied()
                .unwrap_or(0),
            quorum: d.quorum,
            quorate: self.quorate,
            quorum_device_votes: self.cfg.qdisk_votes,
            quorum_device_counted: d.qdisk_master.is_some(),
            quorum_device_master: d.qdisk_master,
            flags,
            wait_for_all_blocked: d.wfa_blocked,
            missing_nodes: self
                .cfg
                .nodes
                .keys()
                .filter(|n| !self.members.contains_key(n))
                .copied()
                .collect(),
            members: self
                .members
                .iter()
                .map(|(n, v)| MemberStatus {
                    node_id: *n,
                    votes: *v,
                    synced: self.states.contains_key(n),
                })
                .collect(),
            reason: d.reason.clone(),
            dropped_events: self.dropped_events,
            ignored_inputs: self.ignored_inputs,
        }
    }

    fn quorum_for(&self, expected: u32, total: u32, nodes: usize) -> u32 {
        if self.cfg.two_node && nodes <= 2 {
            return 1;
        }
        (expected / 2 + 1).max(total / 2 + 1)
    }

    fn check_expected(&self, expected: u32) -> Result<(), SetExpectedError> {
        let total = self.decision.total;
        let eff = expected.max(total);
        let quorum = self.quorum_for(eff, total, self.members.len());
        if quorum > total {
            // Highest e with e/2+1 <= total is 2*total-1.
            return Err(SetExpectedError::WouldBeInquorate {
                requested: expected,
                quorum,
                total,
                max: (2 * total).saturating_sub(1),
            });
        }
        Ok(())
    }

    fn apply_expected(&mut self, now: Instant, to: u32, reason: &str) {
        let from = self.decision.expected;
        for s in self.states.values_mut() {
            s.expected_votes = to;
        }
        self.my_expected = to;
        self.recompute(now, reason);
        let after = self.decision.expected;
        if after != from {
            self.push_event(QuorumEvent::ExpectedVotesChanged {
                from,
                to: after,
                reason: reason.to_string(),
            });
        }
    }

    fn queue_state(&mut self) {
        let Some(ring_id) = self.ring_id else { return };
        // Only the newest unsent state matters.
        self.outbox.retain(|m| !matches!(m, QuorumMsg::State(_)));
        let s = NodeState {
            ring_id,
            expected_votes: self.my_expected.max(1),
            wait_for_all_done: self.my_wfa_done,
            qdisk_master: self.my_qdisk,
        };
        self.push_msg(QuorumMsg::State(s));
    }

    fn push_msg(&mut self, m: QuorumMsg) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.outbox.pop_front();
        }
        self.outbox.push_back(m);
    }

    fn push_event(&mut self, e: QuorumEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        tracing::info!(node = %self.me, event = ?e, "quorum");
        self.events.push_back(e);
    }

    fn decide(&self) -> Decision {
        let (members, states) = if self.syncing {
            (&self.basis_members, &self.basis_states)
        } else {
            (&self.members, &self.states)
        };
        let member = members.contains_key(&self.me) && self.ring_id.is_some();
        let node_votes: u32 = members.values().fold(0u32, |a, v| a.saturating_add(*v));
        let qdisk_master = if self.cfg.qdisk_votes > 0 {
            // A claim counts while its master is a member that claims the
            // disk itself: a master that withdrew (it lost its path, say)
            // takes the votes with it even while others' disks have not
            // noticed yet.
            states
                .values()
                .filter_map(|s| s.qdisk_master)
                .filter(|m| {
                    members.contains_key(m)
                        && states.get(m).is_some_and(|s| s.qdisk_master == Some(*m))
                })
                .min()
                // While syncing, the previous ring's claims count only if
                // our own disk still confirms that master (see
                // handle_membership): this answer is local until every
                // member's state is in.
                .filter(|m| !self.syncing || self.my_qdisk == Some(*m))
        } else {
            None
        };
        let total = node_votes.saturating_add(if qdisk_master.is_some() {
            self.cfg.qdisk_votes
        } else {
            0
        });
        let advertised = states.values().map(|s| s.expected_votes).max();
        let expected = advertised
            .unwrap_or_else(|| self.cfg.initial_expected())
            .max(total)
            .max(1);
        let quorum = self.quorum_for(expected, total, members.len());
        let all_seen = self.cfg.nodes.keys().all(|n| members.contains_key(n));
        let wfa_blocked =
            self.cfg.wait_for_all && !all_seen && !states.values().any(|s| s.wait_for_all_done);
        let quorate = member && !wfa_blocked && total >= quorum;
        let member_names: Vec<String> = members.keys().map(|n| n.to_string()).collect();
        let disk = match qdisk_master {
            Some(m) => format!(
                " (including {} quorum disk votes, disk master node {m})",
                self.cfg.qdisk_votes
            ),
            None if self.cfg.qdisk_votes > 0 => " (quorum disk votes not counted)".to_string(),
            None => String::new(),
        };
        let reason = if !member && self.syncing {
            "synchronising the new membership: waiting for every member's state".to_string()
        } else if !member {
            "this node is not a cluster member".to_string()
        } else if wfa_blocked {
            let missing: Vec<String> = self
                .cfg
                .nodes
                .keys()
                .filter(|n| !members.contains_key(n))
                .map(|n| n.to_string())
                .collect();
            format!(
                "waiting for all nodes (wait_for_all): {} of {} configured nodes seen, missing node(s) {}; start them, or lower expected votes with `quorate cman expected`",
                self.cfg.nodes.len() - missing.len(),
                self.cfg.nodes.len(),
                missing.join(",")
            )
        } else {
            format!(
                "{total} of {expected} votes present{disk}, {quorum} needed; members: {}{}",
                member_names.join(","),
                if self.cfg.two_node && members.len() <= 2 {
                    " (two_node: one node keeps quorum, fencing decides)"
                } else {
                    ""
                }
            )
        };
        Decision {
            expected,
            total,
            node_votes,
            quorum,
            quorate,
            qdisk_master,
            wfa_blocked,
            all_seen,
            reason,
        }
    }

    fn recompute(&mut self, now: Instant, why: &str) {
        if !self.syncing {
            self.basis_members = self.members.clone();
            self.basis_states = self.states.clone();
        }
        let d = self.decide();
        tracing::debug!(node = %self.me, why, reason = %d.reason, "quorum recomputed");
        let ring = self.ring_id.unwrap_or(0);
        let was = self.quorate;
        self.quorate = d.quorate;
        if was != d.quorate {
            if d.quorate {
                self.push_event(QuorumEvent::QuorumGained {
                    ring_id: ring,
                    reason: format!("quorum gained: {}", d.reason),
                });
            } else {
                self.push_event(QuorumEvent::QuorumLost {
                    ring_id: ring,
                    reason: format!("quorum lost: {}", d.reason),
                });
            }
        }
        // Remember the highest expected votes seen, and wait_for_all progress;
        // tell the others when that changes what this node advertises.
        let mut changed = false;
        if d.expected > self.my_expected {
            self.my_expected = d.expected;
            changed = true;
        }
        if d.all_seen && !self.syncing && !self.my_wfa_done && self.ring_id.is_some() {
            self.my_wfa_done = true;
            changed = true;
        }
        if !self.syncing && self.cfg.last_man_standing && d.quorate && d.total < d.expected {
            if self.lms_deadline.is_none() && !self.lms_sent {
                self.lms_deadline = Some(now + self.cfg.last_man_standing_window);
            }
        } else {
            self.lms_deadline = None;
        }
        self.decision = d;
        if changed && self.members.contains_key(&self.me) {
            self.queue_state();
        }
    }
}
