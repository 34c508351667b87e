//! The fence domain state machine.

use crate::args::AgentArgs;
use crate::config::{Device, FenceConfig, Membership, Method};
use crate::FenceError;
use base::{Duration, Instant, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tracing::{error, info, warn};

/// Extra time past an agent's timeout before the core gives up waiting for the driver's result.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);
/// Bound on queued events (oldest dropped and counted) and actions.
const QUEUE_CAP: usize = 4096;

/// Whether an agent run fences a victim or unfences a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Fencing a victim (`<fence>` methods).
    Fence,
    /// Unfencing a node (`<unfence>` devices).
    Unfence,
}

/// One agent run the driver must perform, then report with [`FenceDomain::handle_agent_result`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentRun {
    /// Identifies this run in [`FenceDomain::handle_agent_result`].
    pub run_id: u64,
    /// Fence or unfence.
    pub kind: JobKind,
    /// The node being fenced or unfenced.
    pub victim: NodeId,
    /// Index of the `<method>` (0 for unfence).
    pub method_idx: usize,
    /// Index of the `<device>` within the method (or within `<unfence>`).
    pub device_idx: usize,
    /// The device's name.
    pub device: String,
    /// The agent program.
    pub agent: String,
    /// The stdin arguments, including `action=` and `nodename=` (secrets redacted when printed).
    pub args: AgentArgs,
    /// The action (also in `args`).
    pub action: String,
    /// Kill the agent (its whole process group) after this long and report failure.
    pub timeout: Duration,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Run one agent now.
    RunAgent(AgentRun),
    /// Send this outcome to every member in totem order (including this node).
    Broadcast(FenceOutcome),
}

/// A fence domain message, agreed through totem: how a fencing ended, or a startup-fencing decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceOutcome {
    /// The node fenced (or acknowledged, or that rejoined).
    pub victim: NodeId,
    /// The node that fenced it or took the decision (for `Pending`: the node that fences it).
    pub by: NodeId,
    /// What happened.
    pub kind: OutcomeKind,
}

/// How a fencing ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Every device of this method succeeded.
    Fenced {
        /// The method's name.
        method: String,
        /// The devices of the method, in order.
        devices: Vec<String>,
    },
    /// An operator declared the victim powered off by hand (fence_ack_manual).
    ManualAck,
    /// The victim rejoined before fencing started; it is not fenced.
    Rejoined,
    /// A member still waits for this victim to be fenced by `by` (sent when members join, so
    /// they learn victims they never saw leave). Receivers without it add it, with that fencer.
    Pending,
    /// Decision of the lowest member at cold start: the victim was not seen within
    /// post_join_delay and must be fenced (every member adds it on delivery).
    StartupAbsent,
}

/// Why a node became a victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VictimReason {
    /// It left a quorate (or later quorate) membership.
    MemberLost,
    /// It was not seen within post_join_delay at cold start.
    StartupAbsent,
    /// An operator asked (`quorate fence NODE`).
    Operator,
}

/// Where a victim stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VictimState {
    /// Waiting out post_fail_delay.
    PostFailDelay,
    /// No quorum: fencing postponed until quorum returns.
    WaitingQuorum,
    /// Another member fences it; waiting for the outcome.
    WaitingFencer,
    /// Ready; waiting for the agent slot.
    Queued,
    /// Waiting out the device's `delay` before running its agent.
    DeviceDelay,
    /// An agent is running.
    RunningAgent,
    /// Every method failed; waiting override_time before the next round.
    RetryWait,
    /// Outcome broadcast; waiting for its delivery.
    Announced,
}

/// A victim's status, for `quorate fence status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VictimStatus {
    /// The victim.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// Why it is a victim.
    pub reason: VictimReason,
    /// Where it stands.
    pub state: VictimState,
    /// The member that fences it.
    pub fencer: NodeId,
    /// When it became a victim.
    pub since: Instant,
    /// Agent runs so far.
    pub tries: u32,
    /// Full rounds over all methods that failed.
    pub rounds: u32,
    /// The last agent error, prefixed with the method and device that gave it.
    pub last_error: Option<String>,
    /// The method last tried.
    pub last_method: Option<String>,
    /// The device last tried.
    pub last_device: Option<String>,
    /// When the next step happens by itself (end of a delay), if scheduled.
    pub next_at: Option<Instant>,
}

/// A completed fencing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FencedRecord {
    /// The victim.
    pub node: NodeId,
    /// Method name, or "manual" for fence_ack_manual.
    pub method: String,
    /// Devices, joined with ",", or "manual".
    pub device: String,
    /// Who fenced it.
    pub by: NodeId,
    /// When the outcome was delivered here.
    pub at: Instant,
}

/// The whole fence domain's status (serde snapshot for `quorate fence status --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FenceStatus {
    /// This node.
    pub me: NodeId,
    /// Whether the partition has quorum.
    pub quorate: bool,
    /// Current members.
    pub members: Vec<NodeId>,
    /// Victims not yet fenced: recovery of what they held is blocked on them.
    pub victims: Vec<VictimStatus>,
    /// Nodes fenced since they last left (cleared when they rejoin).
    pub fenced: Vec<FencedRecord>,
    /// Nodes being unfenced.
    pub unfencing: Vec<NodeId>,
    /// Startup fencing deadline (post_join_delay), if pending.
    pub startup_fencing_at: Option<Instant>,
    /// Agent results that matched no running agent (dropped).
    pub stale_results: u64,
    /// Outcomes that changed nothing (duplicates, unknown).
    pub ignored_outcomes: u64,
    /// Events dropped because nobody drained them.
    pub dropped_events: u64,
}

/// Something that happened, for logs, recovery and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Event {
    /// A node must be fenced; recovery of what it held waits for [`Event::Fenced`].
    VictimAdded {
        /// The victim.
        victim: NodeId,
        /// Why.
        reason: VictimReason,
        /// The member that will fence it.
        fencer: NodeId,
    },
    /// Fencing postponed: the partition lost quorum.
    Postponed {
        /// Victims waiting.
        victims: Vec<NodeId>,
    },
    /// The victim rejoined before fencing started; it will not be fenced.
    Rejoined {
        /// The node.
        victim: NodeId,
    },
    /// One agent run failed.
    AgentFailed {
        /// The victim.
        victim: NodeId,
        /// Method name.
        method: String,
        /// Device name.
        device: String,
        /// The driver's error text.
        error: String,
    },
    /// Every method failed; a new round starts at `retry_at`.
    RoundFailed {
        /// The victim.
        victim: NodeId,
        /// Rounds failed so far.
        rounds: u32,
        /// When the next round starts.
        retry_at: Instant,
    },
    /// The victim is fenced (delivered in totem order): recovery may proceed.
    Fenced {
        /// The victim.
        victim: NodeId,
        /// Method name, or "manual".
        method: String,
        /// Devices, or "manual".
        device: String,
        /// Who fenced it.
        by: NodeId,
        /// When the outcome was delivered here.
        at: Instant,
        /// True for fence_ack_manual.
        manual: bool,
    },
    /// Every `<unfence>` device succeeded.
    Unfenced {
        /// The node.
        node: NodeId,
    },
    /// An `<unfence>` device failed (not retried).
    UnfenceFailed {
        /// The node.
        node: NodeId,
        /// Device name.
        device: String,
        /// The driver's error text.
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    device_idx: usize,
    action: String,
    required: bool,
    delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Delay(Instant),
    Waiting,
    AgentDelay(Instant),
    Running { run_id: u64, deadline: Instant },
    RetryWait(Instant),
    Cancelling,
    Announced,
}

#[derive(Clone, Debug)]
struct Victim {
    reason: VictimReason,
    fencer: NodeId,
    since: Instant,
    phase: Phase,
    method: usize,
    step: usize,
    tries: u32,
    rounds: u32,
    last_error: Option<String>,
    last_method: Option<usize>,
    last_device: Option<usize>,
}

impl Victim {
    /// Whether fencing has begun (an agent ran, runs, or is about to after its device delay).
    fn started(&self) -> bool {
        self.tries > 0
            || matches!(
                self.phase,
                Phase::AgentDelay(_)
                    | Phase::Running { .. }
                    | Phase::RetryWait(_)
                    | Phase::Announced
            )
    }
}

#[derive(Clone, Debug)]
struct UnfenceJob {
    step: usize,
    run_id: Option<u64>,
    deadline: Instant,
}

/// The fence domain of one node. See the crate documentation for the rules.
#[derive(Debug)]
pub struct FenceDomain {
    me: NodeId,
    cfg: FenceConfig,
    members: BTreeSet<NodeId>,
    quorate: bool,
    formed: bool,
    startup_at: Option<Instant>,
    seen: BTreeSet<NodeId>,
    victims: BTreeMap<NodeId, Victim>,
    fenced: BTreeMap<NodeId, FencedRecord>,
    fenced_while_member: BTreeSet<NodeId>,
    /// Members that announced a clean leave (fence_tool leave): when they
    /// drop out of the membership they are not victims.
    leaving: BTreeSet<NodeId>,
    /// Nodes seen leaving cleanly and not seen since: a claim from another
    /// member that one must be fenced (it missed the leave) is not taken up.
    left_cleanly: BTreeSet<NodeId>,
    unfence: BTreeMap<NodeId, UnfenceJob>,
    /// The one agent slot: (kind, node) using it.
    slot: Option<(JobKind, NodeId)>,
    next_run_id: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    stale_results: u64,
    ignored_outcomes: u64,
    dropped_events: u64,
}

impl FenceDomain {
    /// A fence domain for node `me`, not yet a member of anything.
    pub fn new(me: NodeId, cfg: FenceConfig) -> Self {
        FenceDomain {
            me,
            cfg,
            members: BTreeSet::new(),
            quorate: false,
            formed: false,
            startup_at: None,
            seen: BTreeSet::new(),
            victims: BTreeMap::new(),
            fenced: BTreeMap::new(),
            fenced_while_member: BTreeSet::new(),
            leaving: BTreeSet::new(),
            left_cleanly: BTreeSet::new(),
            unfence: BTreeMap::new(),
            slot: None,
            next_run_id: 1,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stale_results: 0,
            ignored_outcomes: 0,
            dropped_events: 0,
        }
    }

    /// `node` announced, in totem order, that it leaves the cluster cleanly
    /// (`quorate cman leave`, SIGTERM): when it drops out of the membership it
    /// is not fenced, as fenced spares a node that ran `fence_tool leave`. A
    /// node that is already a victim stays one.
    pub fn handle_clean_leave(&mut self, node: NodeId) {
        if self.members.contains(&node) && node != self.me {
            self.leaving.insert(node);
        }
    }

    /// Replaces the configuration (cluster.conf reload). A victim whose method no longer exists
    /// restarts from the first method (a run in flight for it finishes first and counts as failed).
    pub fn set_config(&mut self, now: Instant, cfg: FenceConfig) {
        self.cfg = cfg;
        for (node, v) in self.victims.iter_mut() {
            let n = self.cfg.nodes.get(node).map_or(0, |f| f.methods.len());
            let busy = matches!(v.phase, Phase::Running { .. } | Phase::AgentDelay(_));
            if v.method >= n && !busy {
                v.method = 0;
                v.step = 0;
            }
        }
        self.pump(now);
    }

    // ----- inputs ---------------------------------------------------------

    /// A new membership (in totem order).
    pub fn handle_membership(&mut self, now: Instant, m: Membership) {
        let old = std::mem::take(&mut self.members);
        let was_quorate = self.quorate;
        self.members = m.members;
        self.quorate = m.quorate;
        let lowest = self.lowest_member();
        for n in &self.members {
            self.seen.insert(*n);
        }
        // Re-elect the fencer of victims whose fencer left.
        for v in self.victims.values_mut() {
            if !self.members.contains(&v.fencer) && v.fencer != self.me {
                v.fencer = lowest;
            }
        }
        // Joined nodes.
        let joined: Vec<NodeId> = self.members.difference(&old).copied().collect();
        let had_joins = joined.iter().any(|j| *j != self.me) && !old.is_empty();
        for j in joined {
            self.left_cleanly.remove(&j);
            if self.fenced.remove(&j).is_some() {
                info!(node = %j, "fenced node rejoined");
            }
            self.fenced_while_member.remove(&j);
            let Some(v) = self.victims.get_mut(&j) else {
                continue;
            };
            // Every member that still holds the victim unstarted says so: the fencer may not
            // know the victim at all (it was on the victim's side of a partition). A fencer
            // that has started ignores the message and finishes.
            if !v.started() && v.reason != VictimReason::Operator {
                info!(victim = %j, "victim rejoined before fencing started: not fencing it");
                v.phase = Phase::Cancelling;
                self.push_action(Action::Broadcast(FenceOutcome {
                    victim: j,
                    by: self.me,
                    kind: OutcomeKind::Rejoined,
                }));
            }
        }
        // Lost nodes.
        let lost: Vec<NodeId> = old.difference(&self.members).copied().collect();
        for l in lost {
            if l == self.me {
                continue;
            }
            if self.fenced_while_member.remove(&l) {
                info!(node = %l, "left after being fenced: no further fencing");
                continue;
            }
            let clean = self.leaving.remove(&l);
            if clean && !self.victims.contains_key(&l) {
                info!(node = %l, "left the fence domain cleanly: not a victim");
                self.left_cleanly.insert(l);
                continue;
            }
            if let Some(v) = self.victims.get_mut(&l) {
                if v.phase == Phase::Cancelling && clean {
                    // It rejoined (which answered its old departure) and then
                    // left cleanly, before the Rejoined outcome was ordered.
                    info!(node = %l, "rejoined, then left cleanly: not fencing it");
                    self.victims.remove(&l);
                    self.left_cleanly.insert(l);
                    continue;
                }
                if v.phase == Phase::Cancelling {
                    // It left again before the Rejoined outcome arrived: fence after all.
                    v.phase = Phase::Waiting;
                }
                continue;
            }
            // As fenced: after a change that also brought joiners (a merge
            // still settling, say) wait post_join_delay, else post_fail_delay.
            let delay = self.victim_delay(had_joins);
            self.add_victim(now, l, VictimReason::MemberLost, now + delay);
        }
        // Members joined: tell them the victims we still wait for (they may never have seen
        // those nodes leave). Receivers that do not hold a victim add it; fencing again a node
        // that someone fenced earlier is harmless, missing one is not.
        if had_joins {
            let pending: Vec<(NodeId, NodeId)> = self
                .victims
                .iter()
                .filter(|(n, v)| !self.members.contains(n) && v.phase != Phase::Cancelling)
                .map(|(n, v)| (*n, v.fencer))
                .collect();
            for (victim, fencer) in pending {
                self.push_action(Action::Broadcast(FenceOutcome {
                    victim,
                    by: fencer,
                    kind: OutcomeKind::Pending,
                }));
            }
        }
        // Quorum transitions.
        if self.quorate && !self.formed && self.members.contains(&self.me) {
            self.formed = true;
            if !self.cfg.clean_start {
                self.startup_at = self.cfg.post_join_delay.map(|d| now + d);
            }
        }
        if was_quorate && !self.quorate && !self.victims.is_empty() {
            let victims: Vec<NodeId> = self.victims.keys().copied().collect();
            warn!(
                ?victims,
                "quorum lost: fencing postponed until quorum returns"
            );
            self.push_event(Event::Postponed { victims });
        }
        self.pump(now);
    }

    /// The driver's result for agent run `run_id`: `Ok(())` on exit 0, else the error text.
    pub fn handle_agent_result(&mut self, now: Instant, run_id: u64, result: Result<(), String>) {
        // Unfence jobs.
        if let Some((&node, _)) = self.unfence.iter().find(|(_, j)| j.run_id == Some(run_id)) {
            self.unfence_result(now, node, result);
            self.pump(now);
            return;
        }
        let found = self
            .victims
            .iter()
            .find(|(_, v)| matches!(v.phase, Phase::Running { run_id: r, .. } if r == run_id))
            .map(|(n, _)| *n);
        let Some(victim) = found else {
            self.stale_results += 1;
            return;
        };
        self.fence_result(now, victim, result);
        self.pump(now);
    }

    /// A fence outcome, delivered in totem order to every member (including the one that broadcast it).
    pub fn handle_fence_outcome(&mut self, now: Instant, outcome: FenceOutcome) {
        let victim = outcome.victim;
        match outcome.kind {
            OutcomeKind::Pending => {
                // A claim from a member that missed what happened here: the node was fenced
                // (and has not rejoined since; a claim composed at the last join can be ordered
                // after the fencing's outcome), or it left cleanly. Neither needs fencing.
                if self.members.contains(&victim)
                    || self.victims.contains_key(&victim)
                    || victim == self.me
                    || self.fenced.contains_key(&victim)
                    || self.left_cleanly.contains(&victim)
                {
                    self.ignored_outcomes += 1;
                } else {
                    info!(%victim, fencer = %outcome.by, "learned of a victim from another member");
                    // Learned at a join: when no member already fences it,
                    // the join's delay applies here too.
                    let start = if outcome.by != self.me && self.members.contains(&outcome.by) {
                        now
                    } else {
                        now + self.victim_delay(true)
                    };
                    self.add_victim(now, victim, VictimReason::MemberLost, start);
                    if self.members.contains(&outcome.by) {
                        if let Some(v) = self.victims.get_mut(&victim) {
                            v.fencer = outcome.by;
                        }
                    }
                }
            }
            OutcomeKind::StartupAbsent => {
                // A member that formed the domain afresh never saw this node; a node seen
                // leaving cleanly here (and not seen since) needs no startup fencing.
                let known = self.members.contains(&victim)
                    || self.victims.contains_key(&victim)
                    || self.left_cleanly.contains(&victim);
                if known || !self.cfg.nodes.contains_key(&victim) {
                    self.ignored_outcomes += 1;
                } else {
                    self.add_victim(now, victim, VictimReason::StartupAbsent, now);
                    if let Some(v) = self.victims.get_mut(&victim) {
                        if self.members.contains(&outcome.by) {
                            v.fencer = outcome.by;
                        }
                    }
                }
            }
            OutcomeKind::Rejoined => {
                let pending_member = self.members.contains(&victim)
                    && self
                        .victims
                        .get(&victim)
                        .is_some_and(|v| !v.started() || v.phase == Phase::Cancelling);
                if pending_member {
                    self.remove_victim(victim);
                    self.push_event(Event::Rejoined { victim });
                } else {
                    self.ignored_outcomes += 1;
                }
            }
            OutcomeKind::Fenced { .. } | OutcomeKind::ManualAck => {
                let manual = outcome.kind == OutcomeKind::ManualAck;
                let (method, device) = match &outcome.kind {
                    OutcomeKind::Fenced { method, devices } => (method.clone(), devices.join(",")),
                    _ => ("manual".to_string(), "manual".to_string()),
                };
                let was_victim = self.remove_victim(victim);
                if !was_victim && self.fenced.contains_key(&victim) {
                    self.ignored_outcomes += 1;
                    return;
                }
                if self.members.contains(&victim) {
                    self.fenced_while_member.insert(victim);
                }
                let rec = FencedRecord {
                    node: victim,
                    method: method.clone(),
                    device: device.clone(),
                    by: outcome.by,
                    at: now,
                };
                info!(%victim, by = %outcome.by, %method, %device, manual, "fence success");
                self.fenced.insert(victim, rec);
                self.push_event(Event::Fenced {
                    victim,
                    method,
                    device,
                    by: outcome.by,
                    at: now,
                    manual,
                });
            }
        }
        self.pump(now);
    }

    /// Timers: call at (or after) [`FenceDomain::poll_deadline`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pump(now);
    }

    /// Operator: fence `victim` now from this node (`quorate fence NODE`, fence_node).
    /// Still waits for quorum.
    pub fn fence_node(&mut self, now: Instant, victim: NodeId) -> Result<(), FenceError> {
        if victim == self.me {
            return Err(FenceError::CannotFenceSelf(victim));
        }
        if !self.cfg.nodes.contains_key(&victim) {
            return Err(FenceError::UnknownNode(victim));
        }
        if self.victims.contains_key(&victim) {
            return Err(FenceError::Busy(victim));
        }
        self.add_victim(now, victim, VictimReason::Operator, now);
        if let Some(v) = self.victims.get_mut(&victim) {
            v.fencer = self.me;
        }
        self.pump(now);
        Ok(())
    }

    /// Operator: `victim` was powered off by hand (fence_ack_manual). Broadcasts a manual
    /// outcome; recovery proceeds when it is delivered. If the node is in fact still running,
    /// its data can be corrupted: the caller must make the operator confirm that.
    pub fn ack_manual(&mut self, now: Instant, victim: NodeId) -> Result<(), FenceError> {
        let _ = now;
        if !self.victims.contains_key(&victim) {
            return Err(FenceError::NotPending(victim));
        }
        warn!(%victim, "MANUAL FENCE ACKNOWLEDGEMENT: the operator declares node {victim} powered off; if it is still running, shared data will be corrupted");
        self.push_action(Action::Broadcast(FenceOutcome {
            victim,
            by: self.me,
            kind: OutcomeKind::ManualAck,
        }));
        Ok(())
    }

    /// Operator or startup: run `node`'s `<unfence>` devices (action on unless configured).
    pub fn unfence(&mut self, now: Instant, node: NodeId) -> Result<(), FenceError> {
        let n = self.cfg.nodes.get(&node).map_or(0, |f| f.unfence.len());
        if n == 0 {
            return Err(FenceError::NoUnfenceDevices(node));
        }
        if self.unfence.contains_key(&node) || self.victims.contains_key(&node) {
            return Err(FenceError::Busy(node));
        }
        self.unfence.insert(
            node,
            UnfenceJob {
                step: 0,
                run_id: None,
                deadline: now,
            },
        );
        self.pump(now);
        Ok(())
    }

    // ----- outputs --------------------------------------------------------

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`FenceDomain::handle_timeout`] must be called next.
    pub fn poll_deadline(&self) -> Option<Instant> {
        // Startup fencing waits for quorum, which comes with a membership input, not a timer.
        let mut d: Option<Instant> = self.startup_at.filter(|_| self.quorate);
        let mut take = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        for v in self.victims.values() {
            match v.phase {
                Phase::Delay(t) | Phase::AgentDelay(t) | Phase::RetryWait(t) => take(t),
                Phase::Running { deadline, .. } => take(deadline),
                _ => {}
            }
        }
        for j in self.unfence.values() {
            if j.run_id.is_some() {
                take(j.deadline);
            }
        }
        d
    }

    /// True when `node` has been fenced since it last left and has not rejoined: what recovery waits on.
    pub fn is_fenced(&self, node: NodeId) -> bool {
        self.fenced.contains_key(&node) && !self.victims.contains_key(&node)
    }

    /// Victims not yet fenced: anything they held is blocked waiting on fencing.
    pub fn blocked(&self) -> Vec<NodeId> {
        self.victims.keys().copied().collect()
    }

    /// Whether this partition is quorate.
    pub fn is_quorate(&self) -> bool {
        self.quorate
    }

    /// The configuration in force.
    pub fn config(&self) -> &FenceConfig {
        &self.cfg
    }

    /// A snapshot for `quorate fence status`.
    pub fn status(&self) -> FenceStatus {
        let victims = self
            .victims
            .iter()
            .map(|(n, v)| {
                let methods = self.methods(*n);
                let mname = |i: usize| methods.get(i).map(|m| m.name.clone());
                let dname = |mi: usize, di: usize| {
                    methods
                        .get(mi)
                        .and_then(|m| m.devices.get(di))
                        .map(|d| d.name.clone())
                };
                VictimStatus {
                    node: *n,
                    name: self.node_name(*n),
                    reason: v.reason,
                    state: self.victim_state(v),
                    fencer: v.fencer,
                    since: v.since,
                    tries: v.tries,
                    rounds: v.rounds,
                    last_error: v.last_error.clone(),
                    last_method: v.last_method.and_then(mname),
                    last_device: match (v.last_method, v.last_device) {
                        (Some(m), Some(d)) => dname(m, d),
                        _ => None,
                    },
                    next_at: match v.phase {
                        Phase::Delay(t) | Phase::AgentDelay(t) | Phase::RetryWait(t) => Some(t),
                        _ => None,
                    },
                }
            })
            .collect();
        FenceStatus {
            me: self.me,
            quorate: self.quorate,
            members: self.members.iter().copied().collect(),
            victims,
            fenced: self.fenced.values().cloned().collect(),
            unfencing: self.unfence.keys().copied().collect(),
            startup_fencing_at: self.startup_at,
            stale_results: self.stale_results,
            ignored_outcomes: self.ignored_outcomes,
            dropped_events: self.dropped_events,
        }
    }

    // ----- internals ------------------------------------------------------

    fn lowest_member(&self) -> NodeId {
        self.members.first().copied().unwrap_or(self.me)
    }

    fn node_name(&self, n: NodeId) -> String {
        match self.cfg.nodes.get(&n) {
            Some(f) if !f.name.is_empty() => f.name.clone(),
            _ => n.to_string(),
        }
    }

    fn methods(&self, n: NodeId) -> &[Method] {
        self.cfg.nodes.get(&n).map_or(&[], |f| f.methods.as_slice())
    }

    fn victim_state(&self, v: &Victim) -> VictimState {
        match v.phase {
            Phase::Delay(_) => VictimState::PostFailDelay,
            Phase::AgentDelay(_) => VictimState::DeviceDelay,
            Phase::Running { .. } => VictimState::RunningAgent,
            Phase::RetryWait(_) => VictimState::RetryWait,
            Phase::Announced | Phase::Cancelling => VictimState::Announced,
            Phase::Waiting if !self.quorate => VictimState::WaitingQuorum,
            Phase::Waiting if v.fencer != self.me => VictimState::WaitingFencer,
            Phase::Waiting => VictimState::Queued,
        }
    }

    fn push_action(&mut self, a: Action) {
        if self.actions.len() >= QUEUE_CAP {
            error!("fence action queue full: the driver is not draining poll_action()");
            self.actions.pop_front();
        }
        self.actions.push_back(a);
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= QUEUE_CAP {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(e);
    }

    /// How long a new victim waits before fencing starts: post_fail_delay,
    /// or after a membership change with joiners the longer post_join_delay
    /// (fenced's rule: give a forming or merging cluster time to settle, so
    /// a node that was briefly left out is not shot).
    fn victim_delay(&self, joins: bool) -> base::Duration {
        match (joins, self.cfg.post_join_delay) {
            (true, Some(j)) => j.max(self.cfg.post_fail_delay),
            _ => self.cfg.post_fail_delay,
        }
    }

    fn add_victim(&mut self, now: Instant, node: NodeId, reason: VictimReason, start_at: Instant) {
        let fencer = self.lowest_member();
        info!(victim = %node, ?reason, %fencer, "node needs fencing");
        self.fenced.remove(&node);
        self.victims.insert(
            node,
            Victim {
                reason,
                fencer,
                since: now,
                phase: if start_at > now {
                    Phase::Delay(start_at)
                } else {
                    Phase::Waiting
                },
                method: 0,
                step: 0,
                tries: 0,
                rounds: 0,
                last_error: None,
                last_method: None,
                last_device: None,
            },
        );
        self.push_event(Event::VictimAdded {
            victim: node,
            reason,
            fencer,
        });
    }

    /// Removes a victim, freeing the agent slot if it held it. Returns whether it was a victim.
    fn remove_victim(&mut self, node: NodeId) -> bool {
        if self.slot == Some((JobKind::Fence, node)) {
            self.slot = None;
        }
        self.victims.remove(&node).is_some()
    }

    fn method_steps(m: &Method) -> Vec<Step> {
        let act = |d: &Device| d.action.clone().unwrap_or_else(|| "reboot".to_string());
        if m.devices.len() <= 1 {
            return m
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| Step {
                    device_idx: i,
                    action: act(d),
                    required: true,
                    delay: d.delay,
                })
                .collect();
        }
        let mut steps: Vec<Step> = m
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let a = act(d);
                let a = if a == "reboot" { "off".to_string() } else { a };
                let delay = if a == "off" { d.delay } else { Duration::ZERO };
                Step {
                    device_idx: i,
                    action: a,
                    required: true,
                    delay,
                }
            })
            .collect();
        for (i, d) in m.devices.iter().enumerate() {
            if act(d) == "reboot" {
                steps.push(Step {
                    device_idx: i,
                    action: "on".to_string(),
                    required: false,
                    delay: Duration::ZERO,
                });
            }
        }
        steps
    }

    fn build_run(
        &mut self,
        kind: JobKind,
        node: NodeId,
        mi: usize,
        di: usize,
        dev: &Device,
        action: &str,
    ) -> AgentRun {
        let mut args = dev.args.clone();
        for k in ["agent", "name", "delay", "option", "timeout"] {
            args.remove(k);
        }
        args.set("action", action);
        args.set("nodename", self.node_name(node));
        let run_id = self.next_run_id;
        self.next_run_id += 1;
        AgentRun {
            run_id,
            kind,
            victim: node,
            method_idx: mi,
            device_idx: di,
            device: dev.name.clone(),
            agent: dev.agent.clone(),
            args,
            action: action.to_string(),
            timeout: dev.timeout.unwrap_or(self.cfg.agent_timeout),
        }
    }

    /// Starts (or delays) the victim's current step. The caller holds the slot for it.
    fn start_step(&mut self, now: Instant, node: NodeId, after_delay: bool) {
        let methods = self.methods(node).to_vec();
        let Some(v) = self.victims.get(&node) else {
            return;
        };
        let (mi, si) = (v.method, v.step);
        let Some(method) = methods.get(mi) else {
            let err = if methods.is_empty() {
                format!("no fence methods configured for node {node}: add <fence><method><device .../></method></fence> to its <clusternode>")
            } else {
                "all methods failed".to_string()
            };
            self.round_failed(now, node, Some(err));
            return;
        };
        let steps = Self::method_steps(method);
        let Some(step) = steps.get(si).cloned() else {
            self.round_failed(
                now,
                node,
                Some(format!("method {} has no devices", method.name)),
            );
            return;
        };
        if !after_delay && step.delay > Duration::ZERO && step.required {
            info!(victim = %node, delay = ?step.delay, "device delay before fencing");
            if let Some(v) = self.victims.get_mut(&node) {
                v.phase = Phase::AgentDelay(now + step.delay);
            }
            return;
        }
        let dev = &method.devices[step.device_idx];
        let run = self.build_run(JobKind::Fence, node, mi, step.device_idx, dev, &step.action);
        info!(victim = %node, method = %method.name, device = %dev.name, agent = %dev.agent, action = %step.action, args = %run.args, "running fence agent");
        let v = self.victims.get_mut(&node).expect("victim checked above");
        v.phase = Phase::Running {
            run_id: run.run_id,
            deadline: now + run.timeout + WATCHDOG_GRACE,
        };
        v.last_method = Some(mi);
        v.last_device = Some(step.device_idx);
        self.push_action(Action::RunAgent(run));
    }

    fn round_failed(&mut self, now: Instant, node: NodeId, err: Option<String>) {
        let retry_at = now + self.cfg.override_time;
        let Some(v) = self.victims.get_mut(&node) else {
            return;
        };
        v.rounds += 1;
        if let Some(e) = err {
            v.last_error = Some(e);
        }
        v.method = 0;
        v.step = 0;
        v.phase = Phase::RetryWait(retry_at);
        let rounds = v.rounds;
        error!(victim = %node, rounds, error = ?v.last_error, "fencing failed with every method; retrying");
        if self.slot == Some((JobKind::Fence, node)) {
            self.slot = None;
        }
        self.push_event(Event::RoundFailed {
            victim: node,
            rounds,
            retry_at,
        });
    }

    fn fence_result(&mut self, now: Instant, node: NodeId, result: Result<(), String>) {
        let methods = self.methods(node).to_vec();
        let Some(v) = self.victims.get_mut(&node) else {
            return;
        };
        v.tries += 1;
        let (mi, si) = (v.method, v.step);
        let gone = || {
            Some(format!(
                "method {mi} step {si} no longer exists (configuration changed)"
            ))
        };
        let Some(method) = methods.get(mi) else {
            self.round_failed(now, node, gone());
            return;
        };
        let steps = Self::method_steps(method);
        let Some(step) = steps.get(si).cloned() else {
            self.round_failed(now, node, gone());
            return;
        };
        let dev_name = method.devices[step.device_idx].name.clone();
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                warn!(victim = %node, method = %method.name, device = %dev_name, action = %step.action, error = %e, "fence agent failed");
                // Self-contained: last_method/last_device move on to the next
                // run while this error stays the last one.
                v.last_error = Some(format!("method {} device {dev_name}: {e}", method.name));
                self.push_event(Event::AgentFailed {
                    victim: node,
                    method: method.name.clone(),
                    device: dev_name,
                    error: e,
                });
                !step.required
            }
        };
        let v = self.victims.get_mut(&node).expect("victim");
        if ok {
            v.step += 1;
            if v.step >= steps.len() {
                v.phase = Phase::Announced;
                self.slot = None;
                let outcome = FenceOutcome {
                    victim: node,
                    by: self.me,
                    kind: OutcomeKind::Fenced {
                        method: method.name.clone(),
                        devices: method.devices.iter().map(|d| d.name.clone()).collect(),
                    },
                };
                self.push_action(Action::Broadcast(outcome));
                return;
            }
        } else {
            v.method += 1;
            v.step = 0;
            if v.method >= methods.len() {
                self.round_failed(now, node, None);
                return;
            }
        }
        // Continue with the next step or method if we still may.
        if self.quorate && self.victims[&node].fencer == self.me {
            self.start_step(now, node, false);
        } else {
            self.victims.get_mut(&node).expect("victim").phase = Phase::Waiting;
            self.slot = None;
        }
    }

    fn unfence_result(&mut self, now: Instant, node: NodeId, result: Result<(), String>) {
        let devs = self
            .cfg
            .nodes
            .get(&node)
            .map(|f| f.unfence.clone())
            .unwrap_or_default();
        let Some(job) = self.unfence.get_mut(&node) else {
            return;
        };
        let dev_name = devs
            .get(job.step)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        job.run_id = None;
        match result {
            Ok(()) => {
                job.step += 1;
                if job.step >= devs.len() {
                    info!(%node, "unfenced");
                    self.unfence.remove(&node);
                    self.slot = None;
                    self.push_event(Event::Unfenced { node });
                } else {
                    self.slot = None;
                    let _ = now;
                }
            }
            Err(error) => {
                error!(%node, device = %dev_name, %error, "unfence failed");
                self.unfence.remove(&node);
                self.slot = None;
                self.push_event(Event::UnfenceFailed {
                    node,
                    device: dev_name,
                    error,
                });
            }
        }
    }

    /// Runs every due timer and fills the agent slot.
    fn pump(&mut self, now: Instant) {
        // Startup fencing.
        if let Some(t) = self.startup_at {
            if now >= t && self.quorate {
                self.startup_at = None;
                let absent: Vec<NodeId> = self
                    .cfg
                    .nodes
                    .iter()
                    .filter(|(n, f)| {
                        let skip = self.cfg.skip_undefined && f.methods.is_empty();
                        let known = self.seen.contains(n)
                            || self.victims.contains_key(n)
                            || self.fenced.contains_key(n);
                        !(known || skip)
                    })
                    .map(|(n, _)| *n)
                    .collect();
                // Only the lowest member decides, and says so in totem order: a node that
                // joins an existing domain does not know what the others fenced long ago.
                if self.lowest_member() == self.me {
                    for victim in absent {
                        info!(%victim, "not seen within post_join_delay: startup fencing");
                        self.push_action(Action::Broadcast(FenceOutcome {
                            victim,
                            by: self.me,
                            kind: OutcomeKind::StartupAbsent,
                        }));
                    }
                }
            }
        }
        // Timers.
        let mut watchdog = Vec::new();
        let mut delayed = Vec::new();
        for (n, v) in self.victims.iter_mut() {
            match v.phase {
                Phase::Delay(t) | Phase::RetryWait(t) if now >= t => v.phase = Phase::Waiting,
                Phase::AgentDelay(t) if now >= t => delayed.push(*n),
                Phase::Running { deadline, .. } if now >= deadline => watchdog.push(*n),
                _ => {}
            }
        }
        for n in watchdog {
            self.fence_result(
                now,
                n,
                Err("no result from the agent driver within timeout + 5 s".into()),
            );
        }
        for n in delayed {
            if self.quorate {
                self.start_step(now, n, true);
            } else {
                self.victims.get_mut(&n).expect("victim").phase = Phase::Waiting;
                if self.slot == Some((JobKind::Fence, n)) {
                    self.slot = None;
                }
            }
        }
        let expired: Vec<NodeId> = self
            .unfence
            .iter()
            .filter(|(_, j)| j.run_id.is_some() && now >= j.deadline)
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            self.unfence_result(
                now,
                n,
                Err("no result from the agent driver within timeout + 5 s".into()),
            );
        }
        // Fill the slot: unfence jobs first (not quorum-gated), then victims.
        while self.slot.is_none() {
            if let Some((&node, _)) = self.unfence.iter().find(|(_, j)| j.run_id.is_none()) {
                let devs = self
                    .cfg
                    .nodes
                    .get(&node)
                    .map(|f| f.unfence.clone())
                    .unwrap_or_default();
                let step = self.unfence[&node].step;
                let Some(dev) = devs.get(step) else {
                    self.unfence.remove(&node);
                    continue;
                };
                let action = dev.action.clone().unwrap_or_else(|| "on".into());
                let run = self.build_run(JobKind::Unfence, node, 0, step, dev, &action);
                info!(%node, device = %dev.name, agent = %dev.agent, %action, args = %run.args, "running unfence agent");
                let job = self.unfence.get_mut(&node).expect("job");
                job.run_id = Some(run.run_id);
                job.deadline = now + run.timeout + WATCHDOG_GRACE;
                self.slot = Some((JobKind::Unfence, node));
                self.push_action(Action::RunAgent(run));
                break;
            }
            if !self.quorate {
                break;
            }
            let me = self.me;
            let next = self
                .victims
                .iter()
                .find(|(_, v)| v.phase == Phase::Waiting && v.fencer == me)
                .map(|(n, _)| *n);
            let Some(node) = next else { break };
            self.slot = Some((JobKind::Fence, node));
            self.start_step(now, node, false);
        }
    }
}
