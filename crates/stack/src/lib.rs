//! One node's protocol stack, without I/O.
//!
//! [`Stack`] owns the protocol cores of one node — totem, the vote core, the
//! fence domain, the resource manager's replica ([`rmglue::RmReplica`]) and
//! the config distribution — and wires them together exactly as the node
//! daemon runs them. It takes packets, timer expiries, finished agent runs
//! and operator commands, each with the current time ([`Now`]), and hands
//! back packets to send ([`Stack::poll_transmit`]), work for the driver
//! ([`Stack::poll_action`]: run a fence agent, run a resource action, write
//! the config), lines for the event log ([`Stack::poll_note`]) and its next
//! deadline ([`Stack::poll_deadline`]). No sockets, threads, clocks or
//! randomness: the node daemon drives it with real ones, the simulator
//! (`sim::cluster`) drives many of them with simulated ones.
//!
//! # How the layers talk
//! Through plain agreed-order totem multicast, as cman's own service did: the
//! first payload byte is a layer tag ([`TAG_QUORUM`], [`TAG_FENCE`],
//! [`TAG_RM`], [`TAG_CONFSYNC`], [`TAG_LEAVING`]); tags the stack does not own
//! (the benchmark's [`TAG_LOAD`]) come out as [`Action::Deliver`]. Not through
//! process groups: a group delivers a message only to nodes whose join was
//! ordered before it, so state sent right after a membership change could
//! miss a node that is still joining the group.
//!
//! After every input, [`Stack`] drains the cores in a fixed order until
//! nothing moves: totem events go up (a regular configuration to quorum, the
//! resource manager and the config distribution; ordered messages by tag);
//! quorum's messages go back into totem; membership and quorum go to the
//! fence domain; fence outcomes are multicast so every member learns them in
//! the same order and the resource manager recovers only after them.
//!
//! # Two clocks
//! `Now::mono` drives the protocol timers. `Now::wall` (ns since the Unix
//! epoch) stamps the resource manager's inputs: its replicas agree on time by
//! taking the stamps in the order totem delivers them (see [`rmglue`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod plan;
pub mod rmglue;

use base::{Instant, NodeId};
use config::ClusterConf;
use plan::NodePlan;
use rmglue::{RmMsg, RmReplica};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Layer tag (first payload byte) of the vote core's messages.
pub const TAG_QUORUM: u8 = 1;
/// Layer tag of the fence domain's messages.
pub const TAG_FENCE: u8 = 2;
/// Layer tag of the resource manager's messages.
pub const TAG_RM: u8 = 3;
/// Layer tag of the config distribution's messages.
pub const TAG_CONFSYNC: u8 = 4;
/// Layer tag of "I am leaving cleanly: do not fence me" (empty body).
pub const TAG_LEAVING: u8 = 5;
/// Layer tag of benchmark load (`quorate bench totem`), acted on by no layer.
pub const TAG_LOAD: u8 = 6;
/// Process groups a node joins: one per service layer, so `status` can show
/// which layers run where.
pub const GROUPS: [&str; 2] = ["cman", "fenced"];
/// How long a leaving node waits for its services to move away (or, without
/// quorum, to stop here) and for its running operations to end.
pub const LEAVE_WAIT_SECS: u64 = 120;

/// The current time on both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: drives every protocol timer.
    pub mono: Instant,
    /// Wall-clock time, ns since the Unix epoch: stamps resource-manager
    /// inputs and join times.
    pub wall: Instant,
}

/// How to build a [`Stack`].
#[derive(Clone, Debug)]
pub struct StackInit {
    /// The plan made from cluster.conf for this node.
    pub plan: NodePlan,
    /// cluster.conf, parsed.
    pub conf: ClusterConf,
    /// cluster.conf as text (what the config distribution compares and sends).
    pub config_text: String,
    /// The cluster key (`None`: packets are not sealed; tests only).
    pub key: Option<totem::ClusterKey>,
    /// Incremented at every start of the node (persisted by the driver).
    pub epoch: u64,
    /// The highest ring sequence this node has seen (persisted by the driver).
    pub ring_seq: u64,
}

/// Why a stack could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// Totem refused its configuration.
    #[error("totem: {0}")]
    Totem(#[from] totem::ConfigError),
    /// Quorum refused its configuration.
    #[error("quorum: {0}")]
    Quorum(#[from] quorum::QuorumConfigError),
    /// The resource manager refused the services.
    #[error("<rm>: {0}")]
    Rm(#[from] rm::ConfigError),
    /// The config distribution refused the text.
    #[error("cluster.conf: {0}")]
    Config(String),
}

/// Work the driver carries out for the stack.
#[derive(Clone, Debug)]
pub enum Action {
    /// Run a fence agent; report with [`Stack::handle_agent_result`].
    RunFenceAgent(fence::AgentRun),
    /// Run a resource action on this node; report with
    /// [`Stack::handle_service_done`].
    RunService(rm::Action),
    /// A vm is migrating to this node: start its incoming side (once).
    PrepareIncoming {
        /// The service.
        service: String,
        /// Its resources in start order.
        resources: Vec<rm::ResourceStep>,
    },
    /// Write cluster.conf atomically; on failure call
    /// [`Stack::handle_write_failed`]. The stack already runs it.
    WriteConfig {
        /// The whole file.
        text: String,
        /// Its config_version.
        version: u64,
    },
    /// A `config push` made on this node was decided.
    PushResult {
        /// The ticket [`Stack::config_push`] returned.
        ticket: u64,
        /// What became of it.
        outcome: confsync::PushOutcome,
    },
    /// Persist the highest ring sequence seen (survives restarts).
    PersistRingSeq(u64),
    /// The quorum disk's driver needs the current membership.
    QdiskMembership(Vec<NodeId>),
    /// An ordered message for a layer the stack does not run.
    Deliver {
        /// Its tag.
        tag: u8,
        /// Its sender.
        sender: NodeId,
        /// Its body.
        body: Vec<u8>,
    },
    /// The node has left the cluster cleanly; the driver may exit.
    Left,
}

/// A refusal of an operator command, with what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: String,
    /// What to do next.
    pub hint: String,
}

impl Refusal {
    fn new(reason: impl Into<String>, hint: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            hint: hint.into(),
        }
    }
}

/// One node's protocol stack.
pub struct Stack {
    now: Now,
    conf: ClusterConf,
    plan: NodePlan,
    totem: totem::TotemNode,
    quorum: quorum::VoteQuorum,
    fence: fence::FenceDomain,
    rm: RmReplica,
    confsync: confsync::ConfigSync,
    members: Vec<NodeId>,
    ring_id: Option<totem::RingId>,
    fence_view: Option<(Vec<NodeId>, bool)>,
    joined_at: BTreeMap<NodeId, Instant>,
    /// A clean leave was asked for: (remove, give up waiting for services at).
    leave_requested: Option<(bool, Instant)>,
    /// The clean-leave announcement went out; leave once it comes back ordered.
    leave_announced: bool,
    /// Our announcement came back ordered: the members then (who all have it).
    leave_delivered: Option<BTreeSet<NodeId>>,
    /// Clean-leave announcements of members the fence domain does not know
    /// as members yet (delivered in a ring whose membership it has not been
    /// given): handed to it with that membership.
    leaves_unsynced: BTreeSet<NodeId>,
    /// The transitional configuration being delivered (between a ring's
    /// end and the next regular one): who carried the old ring over.
    transitional: Option<Vec<NodeId>>,
    left: bool,
    /// Services with an operation running here (one at a time per service).
    running_ops: BTreeMap<String, rm::OpId>,
    /// The last start, stop or migration of each service handed to this
    /// node, and its outcome once finished (for state transfer).
    held: rmglue::Held,
    /// Actions waiting for the operation running on their service to end:
    /// a stop never races the start it follows.
    queued_ops: BTreeMap<String, VecDeque<rm::Action>>,
    /// Vms this node is preparing to receive (migration targets).
    incoming: BTreeSet<String>,
    tick_sent_for: Option<Instant>,
    actions: VecDeque<Action>,
    notes: VecDeque<String>,
    /// Quorum decisions by point of the order (for checkers): bounded.
    decisions: VecDeque<Decision>,
}

/// The vote core's answer right after an ordered event: at a configuration
/// change (`seq` 0) or after a quorum message at `seq` of `ring`. Members that
/// are past synchronisation must give the same answer at the same point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The ring the event belongs to.
    pub ring: totem::RingId,
    /// Its position in the ring (0: the configuration change itself).
    pub seq: u64,
    /// Quorate after it.
    pub quorate: bool,
    /// The vote core was still synchronising (members may differ).
    pub syncing: bool,
}

impl Stack {
    /// Build the stack of one node at `now`.
    pub fn new(init: StackInit, now: Now) -> Result<Stack, StackError> {
        let StackInit {
            plan,
            conf,
            config_text,
            key,
            epoch,
            ring_seq,
        } = init;
        let confsync = confsync::ConfigSync::new(plan.me, config_text)
            .map_err(|e| StackError::Config(e.to_string()))?;
        let mut tcfg = plan.totem.clone();
        tcfg.key = key;
        tcfg.epoch = epoch;
        tcfg.initial_ring_seq = ring_seq;
        let mut totem = totem::TotemNode::new(tcfg, now.mono)?;
        for g in GROUPS {
            let _ = totem.handle_command(
                now.mono,
                totem::Command::CpgJoin {
                    group: g.to_string(),
                },
            );
        }
        let quorum = quorum::VoteQuorum::new(plan.me, plan.quorum.clone())?;
        let fence = fence::FenceDomain::new(plan.me, plan.fence.clone());
        let mut rm = RmReplica::new(plan.me, plan::rm_spec(&conf))?;
        rm.set_incarnation(epoch);
        let mut s = Stack {
            now,
            conf,
            plan,
            totem,
            quorum,
            fence,
            rm,
            confsync,
            members: Vec::new(),
            ring_id: None,
            fence_view: None,
            joined_at: BTreeMap::new(),
            leave_requested: None,
            leave_announced: false,
            leave_delivered: None,
            leaves_unsynced: BTreeSet::new(),
            transitional: None,
            left: false,
            running_ops: BTreeMap::new(),
            held: rmglue::Held::new(),
            queued_ops: BTreeMap::new(),
            incoming: BTreeSet::new(),
            tick_sent_for: None,
            actions: VecDeque::new(),
            notes: VecDeque::new(),
            decisions: VecDeque::new(),
        };
        s.after();
        Ok(s)
    }

    // ---- outputs ----

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<totem::Transmit> {
        self.totem.poll_transmit()
    }

    /// The next piece of work for the driver.
    ///
    /// A fence agent run or a service start decided while quorate is not
    /// handed out once quorum is gone (the same input can bring both): it is
    /// reported as failed instead, and the layers wait for quorum.
    pub fn poll_action(&mut self) -> Option<Action> {
        loop {
            let a = self.actions.pop_front()?;
            if self.quorum.is_quorate() {
                return Some(a);
            }
            match a {
                Action::RunFenceAgent(run) => {
                    self.note(format!(
                        "fence: not running {} against {}: quorum was lost before it could begin",
                        run.agent,
                        self.name_of(run.victim)
                    ));
                    self.fence.handle_agent_result(
                        self.now.mono,
                        run.run_id,
                        Err("not run: quorum lost".into()),
                    );
                    self.after();
                }
                Action::RunService(action)
                    if matches!(
                        action,
                        rm::Action::StartService { .. } | rm::Action::Migrate { .. }
                    ) =>
                {
                    let (service, op, outcome) = match action {
                        rm::Action::StartService { service, op, .. } => {
                            (service, op, rm::Outcome::StartFailed)
                        }
                        rm::Action::Migrate { service, op, .. } => {
                            (service, op, rm::Outcome::MigrateFailed)
                        }
                        _ => unreachable!("matched above"),
                    };
                    self.note(format!(
                        "rm: not starting {service} here: quorum was lost before it could begin"
                    ));
                    if self.running_ops.get(&service) == Some(&op) {
                        self.running_ops.remove(&service);
                    }
                    self.report(service, op, outcome);
                    self.after();
                }
                other => return Some(other),
            }
        }
    }

    /// The next quorum decision by point of the order (see [`Decision`]).
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    fn record_decision(&mut self, ring: totem::RingId, seq: u64) {
        if self.decisions.len() >= 1024 {
            self.decisions.pop_front();
        }
        self.decisions.push_back(Decision {
            ring,
            seq,
            quorate: self.quorum.is_quorate(),
            syncing: self.quorum.is_syncing(),
        });
    }

    /// The next line for the event log ("why is it like this").
    pub fn poll_note(&mut self) -> Option<String> {
        self.notes.pop_front()
    }

    /// The earliest monotonic deadline of any core.
    pub fn poll_deadline(&self) -> Option<Instant> {
        [
            self.totem.poll_deadline(),
            self.quorum.poll_deadline(),
            self.fence.poll_deadline(),
            self.leave_requested.map(|(_, at)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- inputs ----

    /// A datagram from ring `ring`, sent by `from` (`None`: an address that is
    /// no configured node).
    pub fn handle_packet(&mut self, now: Now, ring: u8, from: Option<NodeId>, bytes: &[u8]) {
        self.now = now;
        self.totem.handle_packet(now.mono, ring, from, bytes);
        self.after();
    }

    /// Time has passed (call at [`Stack::poll_deadline`], or any time).
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        self.totem.handle_timeout(now.mono);
        self.quorum.handle_timeout(now.mono);
        self.fence.handle_timeout(now.mono);
        self.rm.scheduler().handle_timeout(now.wall);
        // The lowest member asks every replica to re-check expired failures.
        if let Some(due) = self.rm.scheduler_ref().recheck_due() {
            if due <= now.wall
                && self.rm.scheduler_ref().tick_sender() == Some(self.plan.me)
                && self.tick_sent_for != Some(due)
            {
                self.tick_sent_for = Some(due);
                self.send_rm_input(rm::Input::Tick);
            }
        }
        self.after();
    }

    /// A fence agent run finished.
    pub fn handle_agent_result(&mut self, now: Now, run_id: u64, result: Result<(), String>) {
        self.now = now;
        self.fence.handle_agent_result(now.mono, run_id, result);
        self.after();
    }

    /// A resource action finished (`None`: a status check that passed).
    pub fn handle_service_done(
        &mut self,
        now: Now,
        service: String,
        op: rm::OpId,
        outcome: Option<rm::Outcome>,
    ) {
        self.now = now;
        if self.running_ops.get(&service) == Some(&op) {
            self.running_ops.remove(&service);
            let next = self
                .queued_ops
                .get_mut(&service)
                .and_then(|q| q.pop_front());
            if self.queued_ops.get(&service).is_some_and(|q| q.is_empty()) {
                self.queued_ops.remove(&service);
            }
            if let Some(next) = next {
                self.run_service_action(next);
            }
        }
        if let Some(outcome) = outcome {
            self.note(format!("rm: {service} op {op} finished here: {outcome:?}"));
            self.report(service, op, outcome);
        }
        self.after();
    }

    /// A service's resources failed here by themselves (a vm's QEMU exited):
    /// run its status check now rather than at the next interval. False when
    /// it does not run here (nothing is checked).
    pub fn check_now(&mut self, now: Now, service: &str) -> bool {
        self.now = now;
        let queued = self.rm.scheduler().check_now(now.wall, service);
        self.after();
        queued
    }

    /// The quorum disk's verdict changed: `master` is the disk master that
    /// counts this node in (`None`: the disk gives no votes here).
    pub fn handle_qdisk(&mut self, now: Now, master: Option<NodeId>, reason: &str) {
        self.now = now;
        self.note(format!("qdisk: {reason}"));
        self.quorum.set_qdisk(now.mono, master);
        self.after();
    }

    /// The config file as it is on disk now (for drift detection).
    pub fn handle_local_file(&mut self, now: Now, text: &str) {
        self.now = now;
        self.confsync.handle_local_file(now.mono, text);
        self.after();
    }

    /// Writing a [`Action::WriteConfig`] failed.
    pub fn handle_write_failed(&mut self, now: Now, version: u64, error: &str) {
        self.now = now;
        // The config distribution reports it (Event::WriteFailed, noted).
        self.confsync.handle_write_failed(now.mono, version, error);
        self.after();
    }

    // ---- operator commands ----

    /// `quorate config push`: the ticket of an [`Action::PushResult`] to come.
    pub fn config_push(&mut self, now: Now, text: String) -> Result<u64, Refusal> {
        self.now = now;
        let r = self
            .confsync
            .push(now.mono, text)
            .map(|t| t.0)
            .map_err(|e| {
                Refusal::new(
                    e.to_string(),
                    "`quorate config validate FILE` checks a file",
                )
            });
        self.after();
        r
    }

    /// `quorate cman leave`: services move off first (rgmanager's shutdown),
    /// then the node leaves the ring without being fenced.
    pub fn begin_leave(&mut self, now: Now, remove: bool) {
        self.now = now;
        if self.leave_requested.is_none() {
            let wait = base::Duration::from_secs(LEAVE_WAIT_SECS);
            self.leave_requested = Some((remove, now.mono + wait));
            self.note(format!(
                "leaving the cluster{}: moving this node's services away first (at most {LEAVE_WAIT_SECS} s)",
                if remove { " (remove: expected votes lowered)" } else { "" }
            ));
            let me = self.plan.me;
            self.send_rm_input(rm::Input::Leave { node: me });
        }
        self.after();
    }

    /// `quorate cman expected VOTES`.
    pub fn set_expected(&mut self, now: Now, votes: u32) -> Result<(), Refusal> {
        self.now = now;
        let r = self.quorum.set_expected(now.mono, votes).map_err(|e| {
            Refusal::new(
                e.to_string(),
                "see `quorate cman status` for the votes present",
            )
        });
        self.after();
        r
    }

    /// `quorate fence NODE`, `fence ack NODE`, `fence unfence NODE`.
    pub fn fence_command(
        &mut self,
        now: Now,
        cmd: FenceCommand,
        node: NodeId,
    ) -> Result<(), Refusal> {
        self.now = now;
        let r = match cmd {
            FenceCommand::Fence => self.fence.fence_node(now.mono, node),
            FenceCommand::Ack => self.fence.ack_manual(now.mono, node),
            FenceCommand::Unfence => self.fence.unfence(now.mono, node),
        }
        .map_err(|e| Refusal::new(e.to_string(), "see `quorate fence status`"));
        self.after();
        r
    }

    /// An operator's service request (clusvcadm): checked against a copy of
    /// the replica so that a refusal comes back at once with its reason;
    /// accepted requests are multicast and take effect in the agreed order.
    pub fn submit(&mut self, now: Now, request: rm::Request) -> Result<(), Refusal> {
        self.now = now;
        if self.rm.syncing() {
            return Err(Refusal::new(
                "the resource manager is synchronising after a membership change",
                "retry in a moment",
            ));
        }
        let mut scratch = rm::Scheduler::from_snapshot(
            self.plan.me,
            self.rm.scheduler_ref().snapshot(),
            self.rm.agreed(),
        );
        let at = now.wall.max(self.rm.agreed());
        if let Err(e) = scratch.handle(
            at,
            rm::Input::Request {
                from: self.plan.me,
                request: request.clone(),
            },
        ) {
            return Err(Refusal::new(e.to_string(), "see `quorate status` for why"));
        }
        let me = self.plan.me;
        self.send_rm_input(rm::Input::Request { from: me, request });
        self.after();
        Ok(())
    }

    /// Multicast `body` under a tag the stack does not own (benchmark load).
    /// Fails when totem's send queue is full.
    pub fn multicast_foreign(&mut self, now: Now, tag: u8, body: &[u8]) -> Result<(), String> {
        self.now = now;
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(tag);
        payload.extend_from_slice(body);
        let r = self
            .totem
            .handle_command(
                now.mono,
                totem::Command::Multicast {
                    payload,
                    safe: false,
                },
            )
            .map_err(|e| e.to_string());
        self.after();
        r
    }

    // ---- read-only views ----

    /// This node.
    pub fn me(&self) -> NodeId {
        self.plan.me
    }

    /// The plan this stack runs.
    pub fn plan(&self) -> &NodePlan {
        &self.plan
    }

    /// cluster.conf as in force now.
    pub fn conf(&self) -> &ClusterConf {
        &self.conf
    }

    /// A node's name (or `nodeN`).
    pub fn name_of(&self, id: NodeId) -> String {
        self.plan
            .peers
            .get(&id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("node{}", id.0))
    }

    /// Totem.
    pub fn totem(&self) -> &totem::TotemNode {
        &self.totem
    }

    /// The vote core.
    pub fn quorum(&self) -> &quorum::VoteQuorum {
        &self.quorum
    }

    /// The fence domain.
    pub fn fence(&self) -> &fence::FenceDomain {
        &self.fence
    }

    /// The resource manager's replica.
    pub fn rm(&self) -> &RmReplica {
        &self.rm
    }

    /// The config distribution.
    pub fn confsync(&self) -> &confsync::ConfigSync {
        &self.confsync
    }

    /// Members of the current regular configuration.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The current ring.
    pub fn ring_id(&self) -> Option<totem::RingId> {
        self.ring_id
    }

    /// When a member joined (wall clock), as this node saw it.
    pub fn joined_at(&self, id: NodeId) -> Option<Instant> {
        self.joined_at.get(&id).copied()
    }

    /// A clean leave was asked for.
    pub fn leave_requested(&self) -> bool {
        self.leave_requested.is_some()
    }

    /// The node has left the cluster.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Services with a start, stop or migration running on this node.
    pub fn running_ops(&self) -> &BTreeMap<String, rm::OpId> {
        &self.running_ops
    }

    // ---- internals ----

    fn note(&mut self, text: String) {
        tracing::info!("{text}");
        self.notes.push_back(text);
    }

    /// Tell every replica how an operation here ended.
    fn report(&mut self, service: String, op: rm::OpId, outcome: rm::Outcome) {
        if outcome != rm::Outcome::StatusFailed {
            if let Some((o, done)) = self.held.get_mut(&service) {
                if *o == op {
                    *done = Some(outcome);
                }
            }
        }
        let report = rm::Report {
            node: self.plan.me,
            service,
            op,
            outcome,
        };
        self.send_rm_input(rm::Input::Result(report));
    }

    /// Multicast a resource-manager input, stamped with this node's wall clock.
    fn send_rm_input(&mut self, input: rm::Input) {
        let msg = RmMsg::Input {
            at_ns: self.now.wall.0,
            input,
        };
        self.multicast(TAG_RM, msg.encode());
    }

    fn multicast(&mut self, tag: u8, body: Vec<u8>) {
        self.multicast_ordered(tag, body, false);
    }

    /// Multicast in agreed order, or in safe order (`safe`: delivered back
    /// to us only once every member has received it).
    fn multicast_ordered(&mut self, tag: u8, body: Vec<u8>, safe: bool) {
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(tag);
        payload.extend_from_slice(&body);
        if let Err(e) = self
            .totem
            .handle_command(self.now.mono, totem::Command::Multicast { payload, safe })
        {
            tracing::warn!(tag, error = %e, "cannot multicast");
        }
    }

    /// After every input: move everything between the cores, then see
    /// whether a clean leave can finish.
    fn after(&mut self) {
        self.pump();
        self.try_finish_leave();
    }

    /// Drain every core until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(ev) = self.totem.poll_event() {
                moved = true;
                self.on_totem_event(ev);
            }
            while let Some(m) = self.quorum.poll_message() {
                moved = true;
                self.multicast(TAG_QUORUM, m.encode());
            }
            moved |= self.drain_quorum_events();
            self.sync_fence_view();
            while let Some(a) = self.fence.poll_action() {
                moved = true;
                self.on_fence_action(a);
            }
            while let Some(ev) = self.fence.poll_event() {
                moved = true;
                let text = format!(
                    "fence: {}",
                    describe_fence_event(&ev, |id| self.name_of(id))
                );
                self.note(text);
            }
            for m in self.rm.drain_outbox() {
                moved = true;
                self.multicast(TAG_RM, m.encode());
            }
            while let Some(a) = self.rm.scheduler().poll_action() {
                moved = true;
                self.run_service_action(a);
            }
            self.prepare_migration_targets();
            while let Some(m) = self.confsync.poll_message() {
                moved = true;
                self.multicast(TAG_CONFSYNC, m.encode());
            }
            while let Some(a) = self.confsync.poll_action() {
                moved = true;
                self.on_confsync_action(a);
            }
            while let Some(ev) = self.confsync.poll_event() {
                moved = true;
                self.on_confsync_event(ev);
            }
            while let Some(ev) = self.rm.scheduler().poll_event() {
                moved = true;
                self.note(format!("rm: {}", ev.message));
            }
            if !moved {
                return;
            }
        }
    }

    fn on_totem_event(&mut self, ev: totem::Event) {
        let now = self.now.mono;
        match ev {
            totem::Event::ConfigurationChange(c) => {
                if c.transitional {
                    // Only these members carry the old ring's messages over
                    // (a member that restarted meanwhile is a new one).
                    if let Some(heard) = self.leave_delivered.as_mut() {
                        heard.retain(|m| c.members.contains(m));
                    }
                    self.transitional = Some(c.members.clone());
                    return;
                }
                self.transitional = None;
                let names = |ids: &[NodeId]| {
                    ids.iter()
                        .map(|n| self.name_of(*n))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let text = format!(
                    "membership: ring {}/{} members [{}]{}{}",
                    c.ring_id.rep.0,
                    c.ring_id.seq,
                    names(&c.members),
                    if c.joined.is_empty() {
                        String::new()
                    } else {
                        format!(", joined {}", names(&c.joined))
                    },
                    if c.left.is_empty() {
                        String::new()
                    } else {
                        format!(", lost {}", names(&c.left))
                    },
                );
                self.note(text);
                for j in &c.joined {
                    self.joined_at.insert(*j, self.now.wall);
                }
                for l in &c.left {
                    self.joined_at.remove(l);
                }
                self.members = c.members.clone();
                self.ring_id = Some(c.ring_id);
                self.actions
                    .push_back(Action::QdiskMembership(c.members.clone()));
                let ring = (c.ring_id.seq << 16) ^ u64::from(c.ring_id.rep.0);
                let votes = &self.plan.quorum.nodes;
                let members = c
                    .members
                    .iter()
                    .map(|n| (*n, votes.get(n).copied().unwrap_or(1)))
                    .collect();
                self.quorum.handle_membership(
                    now,
                    quorum::Membership {
                        ring_id: ring,
                        members,
                    },
                );
                // The resource manager learns the membership with the quorum
                // that holds at this point of the order.
                let quorate = self.quorum.is_quorate();
                let fencing = self.fence.blocked();
                self.rm.handle_membership(
                    ring,
                    c.members.clone(),
                    quorate,
                    self.now.wall,
                    fencing,
                    self.held.clone(),
                );
                self.confsync
                    .handle_membership(now, ring, &c.members, &c.joined);
                self.feed_confsync_quorum();
                self.record_decision(c.ring_id, 0);
                self.drain_quorum_events();
            }
            totem::Event::Deliver(d) => {
                let Some((tag, body)) = d.payload.split_first() else {
                    return;
                };
                match *tag {
                    TAG_QUORUM => match quorum::QuorumMsg::decode(body) {
                        Ok(m) => {
                            self.quorum.handle_message(now, d.sender, m);
                            self.feed_confsync_quorum();
                            self.record_decision(d.ring_id, d.seq);
                            // A quorum change (a quorum disk's votes, say)
                            // reaches the resource manager here, before the
                            // next ordered message: every replica must see it
                            // at the same point of the order.
                            self.drain_quorum_events();
                        }
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping quorum message")
                        }
                    },
                    TAG_FENCE => match body
                        .split_first_chunk::<8>()
                        .ok_or_else(|| "short fence message".to_string())
                        .and_then(|(stamp, rest)| {
                            fence::FenceOutcome::decode(rest)
                                .map(|o| (u64::from_be_bytes(*stamp), o))
                                .map_err(|e| e.to_string())
                        }) {
                        Ok((stamp, o)) => {
                            let stamp = Instant(stamp);
                            // The resource manager learns outcomes from the
                            // ordered message itself, not from this node's
                            // fence domain, whose view of victims can differ
                            // between members (a node that just booted knows
                            // none): every replica must see the same inputs.
                            match &o.kind {
                                fence::OutcomeKind::Fenced { method, devices } => {
                                    let how = format!("{method} ({})", devices.join(","));
                                    self.rm.handle_fenced(o.victim, how, stamp)
                                }
                                fence::OutcomeKind::ManualAck => self.rm.handle_fenced(
                                    o.victim,
                                    "manual acknowledgement".into(),
                                    stamp,
                                ),
                                fence::OutcomeKind::Rejoined => {
                                    self.rm.handle_rejoined(o.victim, stamp)
                                }
                                fence::OutcomeKind::Pending | fence::OutcomeKind::StartupAbsent => {
                                }
                            }
                            // Delivering our own fencing means we are a newer
                            // incarnation than the one that lost its power:
                            // say so, or the others keep us out as a member
                            // that is about to vanish.
                            if o.victim == self.plan.me
                                && matches!(o.kind, fence::OutcomeKind::Fenced { .. })
                            {
                                let me = self.plan.me;
                                self.send_rm_input(rm::Input::Rebooted { node: me });
                            }
                            self.fence.handle_fence_outcome(now, o)
                        }
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping fence message")
                        }
                    },
                    TAG_LEAVING => {
                        let text = format!(
                            "{} announced a clean leave (ring {}/{}, seq {})",
                            self.name_of(d.sender),
                            d.ring_id.rep.0,
                            d.ring_id.seq,
                            d.seq
                        );
                        self.note(text);
                        self.fence.handle_clean_leave(d.sender);
                        if self.members.contains(&d.sender) {
                            self.leaves_unsynced.insert(d.sender);
                        }
                        if d.sender == self.plan.me {
                            let trans = self.transitional.as_ref();
                            self.leave_delivered = Some(
                                self.members
                                    .iter()
                                    .copied()
                                    .filter(|m| trans.is_none_or(|t| t.contains(m)))
                                    .collect(),
                            );
                        }
                    }
                    TAG_CONFSYNC => match confsync::ConfSyncMsg::decode(body) {
                        Ok(m) => self.confsync.handle_message(now, d.sender, m),
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping config message")
                        }
                    },
                    TAG_RM => match RmMsg::decode(body) {
                        Ok(m) => {
                            let quorate = self.quorum.is_quorate();
                            self.rm.handle_message(d.sender, m, quorate)
                        }
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping rm message")
                        }
                    },
                    other => self.actions.push_back(Action::Deliver {
                        tag: other,
                        sender: d.sender,
                        body: body.to_vec(),
                    }),
                }
            }
            totem::Event::Cpg(_) => {}
            totem::Event::Link(l) => {
                let text = format!(
                    "ring {} to {} is {}",
                    l.ring,
                    self.name_of(l.peer),
                    if l.up {
                        "up again"
                    } else {
                        "FAULTY; running on the other ring"
                    }
                );
                self.note(text);
            }
            totem::Event::PersistRingSeq(seq) => {
                self.actions.push_back(Action::PersistRingSeq(seq));
            }
        }
    }

    /// Hand the vote core's events on; true if there were any.
    fn drain_quorum_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.quorum.poll_event() {
            any = true;
            self.on_quorum_event(ev);
        }
        any
    }

    fn on_quorum_event(&mut self, ev: quorum::QuorumEvent) {
        let text = match ev {
            quorum::QuorumEvent::QuorumGained { reason, .. } => {
                self.rm.handle_quorum(true);
                format!("quorum: gained: {reason}")
            }
            quorum::QuorumEvent::QuorumLost { reason, .. } => {
                self.rm.handle_quorum(false);
                format!("quorum: LOST: {reason}")
            }
            quorum::QuorumEvent::ExpectedVotesChanged { from, to, reason } => {
                format!("quorum: expected votes {from} -> {to}: {reason}")
            }
        };
        self.note(text);
    }

    /// Tell the fence domain about membership and quorum whenever either changed.
    fn sync_fence_view(&mut self) {
        let view = (self.members.clone(), self.quorum.is_quorate());
        if !self.members.is_empty() && self.fence_view.as_ref() != Some(&view) {
            self.fence_view = Some(view.clone());
            self.fence.handle_membership(
                self.now.mono,
                fence::Membership {
                    members: view.0.into_iter().collect(),
                    quorate: view.1,
                },
            );
        }
        // A configuration change and a clean-leave announcement in that
        // ring can arrive together: the fence domain gets the announcement
        // after the membership, or it would drop it as from a non-member
        // and fence the node when it leaves.
        for n in std::mem::take(&mut self.leaves_unsynced) {
            if self.members.contains(&n) {
                self.fence.handle_clean_leave(n);
            }
        }
    }

    fn on_fence_action(&mut self, a: fence::Action) {
        match a {
            fence::Action::RunAgent(run) => {
                let text = format!(
                    "fence: running {} (device {}) action {} against {}",
                    run.agent,
                    run.device,
                    run.action,
                    self.name_of(run.victim)
                );
                self.note(text);
                self.actions.push_back(Action::RunFenceAgent(run));
            }
            fence::Action::Broadcast(outcome) => {
                // The sender's wall clock goes in front, so the resource
                // manager's agreed clock reads the time of the fencing.
                let mut body = self.now.wall.0.to_be_bytes().to_vec();
                body.extend_from_slice(&outcome.encode());
                self.multicast(TAG_FENCE, body);
            }
        }
    }

    /// Leave once nothing runs here any more (or the wait is over).
    fn try_finish_leave(&mut self) {
        let Some((remove, give_up)) = self.leave_requested else {
            return;
        };
        if self.left {
            return;
        }
        let now = self.now.mono;
        let ready =
            self.rm.scheduler_ref().ready_to_leave(self.plan.me) && self.running_ops.is_empty();
        // Without quorum nothing moves away, but a node without quorum stops
        // its services, and a start still running here ends in a stop too:
        // wait for those as well (up to the same bound), never exit with a
        // start in flight whose processes nobody would know of afterwards.
        if !ready && now < give_up {
            return;
        }
        if !ready && !self.leave_announced {
            self.note(
                "leaving with services still here: the wait for them to move or stop is over"
                    .to_string(),
            );
        }
        if !self.leave_announced && self.members.len() > 1 {
            // Tell the fence domain first, in order, so nobody fences us; we
            // leave when our own announcement is delivered back to us in
            // safe order, that is once every member has received it. In
            // agreed order it comes back at once, and a node that exits then
            // can take a lost announcement with it and be fenced as failed.
            self.leave_announced = true;
            self.multicast_ordered(TAG_LEAVING, Vec::new(), true);
            return;
        }
        if self.leave_announced {
            let Some(heard) = &self.leave_delivered else {
                return;
            };
            // Delivered in an old ring's recovery, the announcement reached
            // that ring's members only; a node that has joined since never
            // had it and would fence us as failed: announce again here.
            if self.members.iter().any(|m| !heard.contains(m)) {
                self.note("announcing the clean leave again: members joined since".to_string());
                self.leave_delivered = None;
                self.multicast_ordered(TAG_LEAVING, Vec::new(), true);
                return;
            }
        }
        // Old-ring messages can be delivered while a new ring is still
        // forming: wait until it is installed, so the check above sees
        // every member it brings.
        if self.totem.state() != totem::State::Operational {
            return;
        }
        self.finish_leave(remove);
    }

    fn finish_leave(&mut self, remove: bool) {
        let now = self.now.mono;
        self.quorum.leave(now, remove);
        self.pump();
        let _ = self.totem.handle_command(now, totem::Command::Leave);
        self.left = true;
        self.note("left the cluster".to_string());
        self.actions.push_back(Action::Left);
    }

    /// The config distribution needs the quorum every member agrees on.
    fn feed_confsync_quorum(&mut self) {
        let settled = self.quorum.is_quorate() && !self.quorum.is_syncing();
        self.confsync.handle_quorum(self.now.mono, settled);
    }

    fn on_confsync_action(&mut self, a: confsync::Action) {
        let confsync::Action::WriteConfig { text, version, .. } = a;
        self.actions
            .push_back(Action::WriteConfig { text, version });
        // Every member adopts it at this same point of the order: apply it.
        let conf = self.confsync.config().clone();
        match plan::fence_config(&conf) {
            Ok(f) => self.fence.set_config(self.now.mono, f),
            Err(e) => tracing::warn!("config_version {version}: fencing unchanged: {e}"),
        }
        self.rm.handle_config(plan::rm_spec(&conf));
        self.conf = conf;
    }

    fn on_confsync_event(&mut self, ev: confsync::Event) {
        let text = match &ev {
            confsync::Event::Reloaded {
                from, to, changes, ..
            } => {
                format!(
                    "config: now running config_version {to} (was {from}): {}",
                    changes.join("; ")
                )
            }
            confsync::Event::PushResult {
                ticket,
                mine,
                outcome,
                ..
            } => {
                if *mine {
                    self.actions.push_back(Action::PushResult {
                        ticket: ticket.0,
                        outcome: outcome.clone(),
                    });
                }
                format!("config: push {outcome:?}")
            }
            confsync::Event::RefusedNewer { message, .. }
            | confsync::Event::RefusedConflict { message, .. }
            | confsync::Event::Conflict { message, .. }
            | confsync::Event::WriteFailed { message, .. }
            | confsync::Event::Drift { message } => format!("config: {message}"),
            other => format!("config: {other:?}"),
        };
        self.note(text);
    }

    /// A vm migrating to this node: start its incoming side once.
    fn prepare_migration_targets(&mut self) {
        let me = self.plan.me;
        let view = self.rm.view();
        let targets: Vec<String> = view
            .services
            .iter()
            .filter(|s| s.state == rm::State::Migrating && s.migrating_to == Some(me))
            .map(|s| s.name.clone())
            .collect();
        self.incoming.retain(|n| targets.contains(n));
        for name in targets {
            if !self.incoming.insert(name.clone()) {
                continue;
            }
            let resources = self
                .rm
                .scheduler_ref()
                .config()
                .services
                .iter()
                .find(|s| s.name == name)
                .map(|s| rm::start_order(&s.resources))
                .unwrap_or_default();
            self.note(format!(
                "rm: {name} is migrating here; starting its incoming side"
            ));
            self.actions.push_back(Action::PrepareIncoming {
                service: name,
                resources,
            });
        }
    }

    fn run_service_action(&mut self, action: rm::Action) {
        let service = action.service().to_string();
        let op = action.op();
        if matches!(action, rm::Action::StatusCheck { .. })
            && self.running_ops.contains_key(&service)
        {
            return; // a start/stop is running: the check would race it
        }
        if !matches!(action, rm::Action::StatusCheck { .. }) {
            self.held.insert(service.clone(), (op, None));
        }
        if self.running_ops.contains_key(&service) {
            // One operation at a time per service, in the order decided.
            let q = self.queued_ops.entry(service.clone()).or_default();
            if q.len() < 16 {
                q.push_back(action);
            }
            return;
        }
        let verb = match &action {
            rm::Action::StartService { .. } => "starting",
            rm::Action::StopService { .. } => "stopping",
            rm::Action::StatusCheck { .. } => "checking",
            rm::Action::Migrate { .. } => "migrating",
            rm::Action::ConfirmIncoming { .. } => "confirming the arrival of",
            rm::Action::FinishMigration { .. } => "ending the handed-over copy of",
        };
        if !matches!(action, rm::Action::StatusCheck { .. }) {
            self.note(format!("rm: {verb} {service} here (op {op})"));
            self.running_ops.insert(service, op);
        }
        self.actions.push_back(Action::RunService(action));
    }
}

/// Which fence command an operator gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceCommand {
    /// `quorate fence NODE` (fence_node).
    Fence,
    /// `quorate fence ack NODE` (fence_ack_manual).
    Ack,
    /// `quorate fence unfence NODE`.
    Unfence,
}

/// A fence event in words.
pub fn describe_fence_event(ev: &fence::Event, name: impl Fn(NodeId) -> String) -> String {
    match ev {
        fence::Event::VictimAdded {
            victim,
            reason,
            fencer,
        } => {
            format!(
                "{} must be fenced ({:?}); {} will fence it",
                name(*victim),
                reason,
                name(*fencer)
            )
        }
        fence::Event::Postponed { victims } => format!(
            "no quorum: fencing of {} postponed until quorum returns",
            victims
                .iter()
                .map(|v| name(*v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        fence::Event::Fenced {
            victim,
            method,
            device,
            by,
            manual,
            ..
        } => {
            if *manual {
                format!(
                    "{} acknowledged as fenced by an operator on {}",
                    name(*victim),
                    name(*by)
                )
            } else {
                format!(
                    "{} fenced by {} with method {method} (device {device})",
                    name(*victim),
                    name(*by)
                )
            }
        }
        fence::Event::Rejoined { victim } => format!(
            "{} rejoined before fencing started; not fenced",
            name(*victim)
        ),
        fence::Event::AgentFailed {
            victim,
            method,
            device,
            error,
        } => {
            format!(
                "fencing {} with method {method} device {device} failed: {error}",
                name(*victim)
            )
        }
        other => format!("{other:?}"),
    }
}
