//! The replicated placement state machine.
//!
//! Every node runs one [`Scheduler`] and feeds it the same totem-ordered
//! [`Input`]s, each with the agreed timestamp of its ordered message. The
//! replicated part of the state (owners, states, restart counts, fencing
//! debts) therefore evolves identically everywhere without a leader; only the
//! [`Action`]s differ: each node receives the actions for itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use base::{Instant, NodeId};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, RequestError};
use crate::spec::{
    start_order, stop_order, ClusterSpec, DependMode, MigrateMode, Recovery, ResourceStep,
    ServiceKind, ServiceSpec,
};

/// Identifies one operation (start, stop, migrate) the scheduler asked an owner
/// to run; results quote it so late or duplicate results are recognised.
pub type OpId = u64;

/// Most events kept until drained; older ones are dropped and counted.
pub const EVENT_CAPACITY: usize = 1024;

/// Service states as clustat shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    /// Not running; placed again when policy allows.
    Stopped,
    /// The owner is running the start operation.
    Starting,
    /// Running on its owner.
    Started,
    /// The owner is running the stop operation.
    Stopping,
    /// A stop failed: the service may still hold resources; only disable is allowed.
    Failed,
    /// Kept stopped until an operator enables it.
    Disabled,
    /// Its node was lost; waits for the node to be fenced, then is placed again.
    Recovering,
    /// A vm moving from its owner to another node.
    Migrating,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Started => "started",
            State::Stopping => "stopping",
            State::Failed => "failed",
            State::Disabled => "disabled",
            State::Recovering => "recovering",
            State::Migrating => "migrating",
        })
    }
}

/// An operator request (clusvcadm). Nodes are ids; the CLI maps names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `-e`: start it, on `node` if given (else per domain policy).
    Enable {
        /// Service.
        service: String,
        /// `-m` target.
        node: Option<NodeId>,
    },
    /// `-d`: stop it and keep it stopped.
    Disable {
        /// Service.
        service: String,
    },
    /// `-r`: move it (to `node` if given, else the best other node).
    Relocate {
        /// Service.
        service: String,
        /// `-m` target.
        node: Option<NodeId>,
    },
    /// `-R`: stop and start in place.
    Restart {
        /// Service.
        service: String,
    },
    /// `-s`: stop it until the next membership change or enable.
    Stop {
        /// Service.
        service: String,
    },
    /// `-Z`: no status checks, no recovery, no moves.
    Freeze {
        /// Service.
        service: String,
    },
    /// `-U`: undo freeze.
    Unfreeze {
        /// Service.
        service: String,
    },
    /// `-M`: migrate a running vm to `node`.
    Migrate {
        /// Service.
        service: String,
        /// Target.
        node: NodeId,
    },
}

impl Request {
    /// The service the request names.
    pub fn service(&self) -> &str {
        match self {
            Request::Enable { service, .. }
            | Request::Disable { service }
            | Request::Relocate { service, .. }
            | Request::Restart { service }
            | Request::Stop { service }
            | Request::Freeze { service }
            | Request::Unfreeze { service }
            | Request::Migrate { service, .. } => service,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Request::Enable { .. } => "enable",
            Request::Disable { .. } => "disable",
            Request::Relocate { .. } => "relocate",
            Request::Restart { .. } => "restart",
            Request::Stop { .. } => "stop",
            Request::Freeze { .. } => "freeze",
            Request::Unfreeze { .. } => "unfreeze",
            Request::Migrate { .. } => "migrate",
        }
    }

    fn node(&self) -> Option<NodeId> {
        match self {
            Request::Enable { node, .. } | Request::Relocate { node, .. } => *node,
            Request::Migrate { node, .. } => Some(*node),
            _ => None,
        }
    }
}

/// The result of an operation, reported by the node that ran it (through totem).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Start succeeded.
    StartOk,
    /// Start failed (the scheduler then stops the service there to clean up).
    StartFailed,
    /// Stop succeeded.
    StopOk,
    /// Stop failed: the service goes to `failed`.
    StopFailed,
    /// A status check of the running service failed (op = the start's op).
    StatusFailed,
    /// The source's part of a migration finished (QEMU there reports
    /// `completed` and holds the guest paused): the target must now confirm.
    MigrateOk,
    /// Migration failed: the vm still runs on the source.
    MigrateFailed,
    /// The migration target reports the guest running there: only now is it
    /// recorded as the owner.
    IncomingRunning,
    /// The migration target did not get the guest running after the
    /// switch-over: it is stopped there and started again per policy.
    IncomingFailed,
}

/// A resource result, sent by the node that ran the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Node that ran the operation.
    pub node: NodeId,
    /// Service.
    pub service: String,
    /// The op id from the [`Action`].
    pub op: OpId,
    /// What happened.
    pub outcome: Outcome,
}

/// One totem-ordered input. Drivers send these through totem and feed every
/// delivered one to [`Scheduler::handle`] with the message's agreed timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// New membership (totem configuration change) with the quorum computed
    /// for it. Both arrive together so a replica never acts on a shrunken
    /// membership while still believing it is quorate.
    Membership {
        /// Node ids of the members.
        members: Vec<NodeId>,
        /// Whether this membership is quorate.
        quorate: bool,
    },
    /// Quorum gained or lost without a membership change (e.g. quorum disk).
    Quorum {
        /// Whether this partition is quorate.
        quorate: bool,
    },
    /// A lost node was fenced (its services may now be recovered).
    Fenced {
        /// The fenced node.
        victim: NodeId,
        /// How (fence method or agent), for the log.
        method: String,
    },
    /// A lost node rejoined before its fencing started, and the fence
    /// domain will not fence it (fenced's clean-rejoin rule). Its services'
    /// processes may still run there: they are stopped there, then recovered.
    Rejoined {
        /// The node.
        node: NodeId,
    },
    /// A node that was fenced while it was a member reports that it runs
    /// again: it delivered its own fencing, so it is a newer incarnation
    /// (the agent reported success only once the old one had no power).
    Rebooted {
        /// The node.
        node: NodeId,
    },
    /// A member restarted (its node daemon is a new incarnation) without the
    /// others seeing it leave: whatever the old one ran or was starting may
    /// still run there, so it is stopped there first, then recovered.
    Restarted {
        /// The node.
        node: NodeId,
    },
    /// State transfer: the last operation of each service `node` was handed
    /// to run, and how it ended (`None`: still running there), as that node
    /// reported it at the configuration change. A service this state
    /// believes is starting, stopping or migrating on `node` under an
    /// operation that `node` finished takes that result; one under an
    /// operation `node` never ran (the state was decided along a branch of
    /// the order that `node` left, or `node` has run later operations of it
    /// since) is stopped there first, then placed again: nothing would ever
    /// report it.
    Held {
        /// The node that reported.
        node: NodeId,
        /// Service name → (operation, its outcome once finished).
        ops: BTreeMap<String, (OpId, Option<Outcome>)>,
        /// Only operations up to this id are settled ([`Scheduler::last_op`]
        /// when the state was adopted): later ones were decided after the
        /// node made its report.
        upto: OpId,
    },
    /// A node asks to leave cleanly: its services are moved off first.
    Leave {
        /// The leaving node.
        node: NodeId,
    },
    /// An operator request submitted on `from`.
    Request {
        /// Node where the command ran.
        from: NodeId,
        /// The request.
        request: Request,
    },
    /// An operation result.
    Result(Report),
    /// Periodic recheck: forget expired start failures and retry. Sent by
    /// [`Scheduler::tick_sender`] when [`Scheduler::recheck_due`] has passed.
    Tick,
    /// A new configuration version.
    Config(ClusterSpec),
}

/// Refusal of an input by [`Scheduler::handle`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// An operator request was refused.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Work for the local node's driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Start the service's resources in this order, then report StartOk/StartFailed.
    StartService {
        /// Service.
        service: String,
        /// Op id to quote in the report.
        op: OpId,
        /// Service or vm.
        kind: ServiceKind,
        /// Resources in start order.
        resources: Vec<ResourceStep>,
    },
    /// Stop the service's resources in this order, then report StopOk/StopFailed.
    /// For a vm this includes any incoming migration instance on this node
    /// (the scheduler stops the target when a migration's source is lost).
    StopService {
        /// Service.
        service: String,
        /// Op id to quote in the report.
        op: OpId,
        /// Service or vm.
        kind: ServiceKind,
        /// Resources in stop order.
        resources: Vec<ResourceStep>,
    },
    /// Check the running service; report StatusFailed (with this op) only on failure.
    StatusCheck {
        /// Service.
        service: String,
        /// The op id under which it was started.
        op: OpId,
        /// Service or vm.
        kind: ServiceKind,
        /// Resources in start order.
        resources: Vec<ResourceStep>,
    },
    /// Migrate the running vm to `to`, then report MigrateOk/MigrateFailed.
    /// On success the source keeps its (paused, handed-over) copy until
    /// [`Action::FinishMigration`].
    Migrate {
        /// Service (vm).
        service: String,
        /// Op id to quote in the report.
        op: OpId,
        /// Target node.
        to: NodeId,
        /// Live or pause.
        mode: MigrateMode,
    },
    /// On a migration's target, after the source reported MigrateOk: wait
    /// (bounded) until the guest runs here, then report IncomingRunning, or
    /// IncomingFailed.
    ConfirmIncoming {
        /// Service (vm).
        service: String,
        /// Op id to quote in the report.
        op: OpId,
        /// Service or vm.
        kind: ServiceKind,
        /// Resources in start order.
        resources: Vec<ResourceStep>,
    },
    /// On a migration's source once the target has confirmed (or failed):
    /// end the handed-over copy (quit its QEMU, demote its volume) by
    /// stopping the resources here; report StopOk/StopFailed.
    FinishMigration {
        /// Service (vm).
        service: String,
        /// Op id to quote in the report.
        op: OpId,
        /// Service or vm.
        kind: ServiceKind,
        /// Resources in stop order.
        resources: Vec<ResourceStep>,
    },
}

impl Action {
    /// The service the action is about.
    pub fn service(&self) -> &str {
        match self {
            Action::StartService { service, .. }
            | Action::StopService { service, .. }
            | Action::StatusCheck { service, .. }
            | Action::Migrate { service, .. }
            | Action::ConfirmIncoming { service, .. }
            | Action::FinishMigration { service, .. } => service,
        }
    }

    /// The op id the action's report quotes.
    pub fn op(&self) -> OpId {
        match self {
            Action::StartService { op, .. }
            | Action::StopService { op, .. }
            | Action::StatusCheck { op, .. }
            | Action::Migrate { op, .. }
            | Action::ConfirmIncoming { op, .. }
            | Action::FinishMigration { op, .. } => *op,
        }
    }
}

/// A line of the event log: what happened and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Agreed time of the input that caused it.
    pub at: Instant,
    /// The service concerned, if any.
    pub service: Option<String>,
    /// Human-readable sentence.
    pub message: String,
}

/// Counters of inputs that were dropped or refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Results whose op, node or outcome did not match the service's current operation.
    pub stale_results: u64,
    /// Results or requests naming an unknown service.
    pub unknown_services: u64,
    /// Fence notices for nodes that owed no fence.
    pub ignored_fences: u64,
    /// Membership entries that are not configured nodes.
    pub unknown_members: u64,
    /// Refused configuration changes.
    pub rejected_configs: u64,
    /// Refused operator requests.
    pub refused_requests: u64,
    /// Leave requests from non-members.
    pub ignored_leaves: u64,
    /// Events dropped because nobody drained the log.
    pub events_dropped: u64,
}

/// One service as every replica sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Service or vm.
    pub kind: ServiceKind,
    /// State.
    pub state: State,
    /// Node running (or starting/stopping) it.
    pub owner: Option<NodeId>,
    /// Node that ran it before.
    pub last_owner: Option<NodeId>,
    /// Migration target while migrating.
    pub migrating_to: Option<NodeId>,
    /// Restarts in place counted toward max_restarts.
    pub restarts: u32,
    /// Frozen flag.
    pub frozen: bool,
    /// Why it is like this.
    pub reason: String,
}

/// One configured node as the resource manager sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// In the current membership.
    pub online: bool,
    /// Lost uncleanly and not yet fenced.
    pub fence_pending: bool,
    /// Asked to leave; its services are being moved.
    pub leaving: bool,
}

/// The replicated view (clustat's data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Configuration version in force.
    pub config_version: u64,
    /// Quorate flag.
    pub quorate: bool,
    /// All configured nodes.
    pub members: Vec<MemberView>,
    /// All services, by name.
    pub services: Vec<ServiceView>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Want {
    Running,
    /// Operator stop: stays stopped until the next membership change or enable.
    Held,
    Disabled,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    /// Try this node first.
    prefer: Option<NodeId>,
    /// Try this node last (relocation falls back to the original owner).
    demote: Option<NodeId>,
    /// A failed start disables instead of relocating (recovery=restart-disable).
    restart_disable: bool,
    /// Why the service is being (re)placed, for the log.
    cause: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Svc {
    spec: ServiceSpec,
    state: State,
    owner: Option<NodeId>,
    last_owner: Option<NodeId>,
    target: Option<NodeId>,
    frozen: bool,
    want: Want,
    op: Option<OpId>,
    run_op: OpId,
    /// Lost nodes that must be fenced before the service may start anywhere.
    fence_wait: BTreeSet<NodeId>,
    restarts: Vec<Instant>,
    /// Nodes where a start (or migration) failed, and when; forgotten after
    /// `failure_expire_time` (at a Tick) or at the next membership change.
    avoid: BTreeMap<NodeId, Instant>,
    plan: Plan,
    /// A migration failed since the last membership change: move cold.
    no_migrate: bool,
    /// Removed from the configuration: stop, then forget.
    removed: bool,
    /// A planned stop waiting for hard dependents to stop first (its cause).
    deferred: Option<String>,
    /// While `Starting` on a migration's target: the source that handed the
    /// guest over; the target's IncomingRunning makes it the owner.
    #[serde(default)]
    arrival: Option<NodeId>,
    /// The FinishMigration sent to a migration's source, until it reports.
    #[serde(default)]
    release: Option<(NodeId, OpId)>,
    reason: String,
}

impl Svc {
    fn new(spec: ServiceSpec) -> Svc {
        let (state, want, reason) = if spec.autostart {
            (
                State::Stopped,
                Want::Running,
                "waiting for quorum".to_string(),
            )
        } else {
            (
                State::Disabled,
                Want::Disabled,
                format!(
                    "autostart is off; start it with `quorate svc enable {}`",
                    spec.name
                ),
            )
        };
        Svc {
            spec,
            state,
            owner: None,
            last_owner: None,
            target: None,
            frozen: false,
            want,
            op: None,
            run_op: 0,
            fence_wait: BTreeSet::new(),
            restarts: Vec::new(),
            avoid: BTreeMap::new(),
            plan: Plan::default(),
            no_migrate: false,
            removed: false,
            deferred: None,
            arrival: None,
            release: None,
            reason,
        }
    }

    /// Holds resources on `node` (for exclusive placement and clean leave).
    fn occupies(&self, node: NodeId) -> bool {
        let active = matches!(
            self.state,
            State::Starting | State::Started | State::Stopping | State::Failed | State::Migrating
        );
        (active && self.owner == Some(node)) || self.target == Some(node)
    }

    fn can_migrate(&self) -> bool {
        self.spec.kind == ServiceKind::Vm && self.spec.migrate.is_some() && !self.no_migrate
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Replicated {
    config: ClusterSpec,
    order: Vec<String>,
    members: BTreeSet<NodeId>,
    quorate: bool,
    fence_pending: BTreeSet<NodeId>,
    needs_rejoin: BTreeSet<NodeId>,
    leaving: BTreeSet<NodeId>,
    next_op: OpId,
    services: BTreeMap<String, Svc>,
    /// This state has been quorate at least once (false only on a cold start).
    #[serde(default)]
    ever_quorate: bool,
    /// Cold start with startup fencing: configured nodes not seen since the
    /// cluster formed. Nothing is placed until each has joined or been fenced.
    #[serde(default)]
    startup_unseen: BTreeSet<NodeId>,
}

/// The replicated state, for a node that joins: taken by a member at the
/// join's place in the ordered stream and handed to the joiner (state transfer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot(Replicated);

impl Snapshot {
    /// Configured nodes this state, a cold start with startup fencing,
    /// still waits for (to join or be fenced); until then it has placed
    /// nothing.
    pub fn startup_unseen(&self) -> &BTreeSet<NodeId> {
        &self.0.startup_unseen
    }
}

/// Why a node cannot take a service.
enum Unfit {
    Unknown,
    NotMember,
    Fencing,
    Leaving,
    NotInDomain,
    Exclusive(String),
    Avoided,
}

/// Format an agreed instant for the log: `12:01:03.250 UTC` when it is
/// wall-clock time (nanoseconds since the UNIX epoch, after 2001), else
/// `t+12.250s` from an arbitrary origin (tests, simulation).
pub fn fmt_instant(t: Instant) -> String {
    const Y2001: u64 = 978_307_200;
    let ms = t.as_nanos() / 1_000_000;
    let secs = ms / 1000;
    if secs >= Y2001 {
        let day = secs % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:03} UTC",
            day / 3600,
            (day % 3600) / 60,
            day % 60,
            ms % 1000
        )
    } else {
        format!("t+{}.{:03}s", secs, ms % 1000)
    }
}

/// The resource manager's replicated state machine for one node.
#[derive(Debug)]
pub struct Scheduler {
    local: NodeId,
    st: Replicated,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    status_due: BTreeMap<String, (Instant, OpId)>,
    stats: Stats,
    /// Set while handling a transition (a node joined, or a new config):
    /// only then do running services fail back (rgmanager's rule).
    failback_pass: bool,
    /// Some managed service is exclusive (derived from the configuration;
    /// spares the exclusivity scan in the common case).
    any_exclusive: bool,
}

impl Scheduler {
    /// A scheduler for node `local`, starting from configuration `config`,
    /// inquorate and with no members (feed a Membership input).
    pub fn new(local: NodeId, config: ClusterSpec) -> Result<Scheduler, ConfigError> {
        let order = config.validate()?;
        let services = config
            .services
            .iter()
            .map(|s| (s.name.clone(), Svc::new(s.clone())))
            .collect();
        Ok(Scheduler {
            local,
            st: Replicated {
                config,
                order,
                members: BTreeSet::new(),
                quorate: false,
                fence_pending: BTreeSet::new(),
                needs_rejoin: BTreeSet::new(),
                leaving: BTreeSet::new(),
                next_op: 0,
                services,
                ever_quorate: false,
                startup_unseen: BTreeSet::new(),
            },
            actions: VecDeque::new(),
            events: VecDeque::new(),
            status_due: BTreeMap::new(),
            stats: Stats::default(),
            failback_pass: false,
            any_exclusive: true,
        }
        .with_exclusive_flag())
    }

    /// The id of the latest operation decided (0: none yet).
    pub fn last_op(&self) -> OpId {
        self.st.next_op
    }

    /// The replicated state, to hand to a joining node.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.st.clone())
    }

    /// A scheduler for a joining node `local` from a member's snapshot.
    /// Local status checks for services it owns start at `now`.
    pub fn from_snapshot(local: NodeId, snap: Snapshot, now: Instant) -> Scheduler {
        let mut s = Scheduler {
            local,
            st: snap.0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            status_due: BTreeMap::new(),
            stats: Stats::default(),
            failback_pass: false,
            any_exclusive: true,
        }
        .with_exclusive_flag();
        s.refresh_local(now);
        s
    }

    fn with_exclusive_flag(mut self) -> Self {
        self.any_exclusive = self.st.services.values().any(|s| s.spec.exclusive);
        self
    }

    /// This node's id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Counters of dropped and refused inputs.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether this partition is quorate.
    pub fn quorate(&self) -> bool {
        self.st.quorate
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClusterSpec {
        &self.st.config
    }

    /// The configured name of `node` (or `node N` if unknown).
    pub fn node_name(&self, node: NodeId) -> String {
        self.st
            .config
            .nodes
            .iter()
            .find(|n| n.id == node)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("node {}", node.0))
    }

    /// The configured id of a node name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.st
            .config
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.id)
    }

    /// Feed one ordered input with its agreed timestamp.
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), InputError> {
        match input {
            Input::Membership { members, quorate } => {
                self.handle_membership(now, &members, quorate)
            }
            Input::Quorum { quorate } => self.handle_quorum(now, quorate),
            Input::Fenced { victim, method } => self.handle_fenced(now, victim, &method),
            Input::Rejoined { node } => self.handle_rejoined(now, node),
            Input::Restarted { node } => self.handle_restarted(now, node),
            Input::Rebooted { node } => {
                if self.st.members.contains(&node) && self.st.needs_rejoin.remove(&node) {
                    self.st.leaving.remove(&node);
                    self.event(
                        now,
                        None,
                        format!(
                            "{} runs again after its fencing (a new incarnation); it may take services",
                            self.node_name(node)
                        ),
                    );
                    self.reconcile(now);
                }
            }
            Input::Held { node, ops, upto } => self.handle_held(now, node, &ops, upto),
            Input::Leave { node } => self.handle_leave(now, node),
            Input::Request { from, request } => self.handle_request(now, from, request)?,
            Input::Result(r) => self.handle_result(now, r),
            Input::Tick => self.handle_tick(now),
            Input::Config(c) => self.handle_config(now, c)?,
        }
        Ok(())
    }

    /// Next pending action for this node.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// All pending actions for this node.
    pub fn drain_actions(&mut self) -> Vec<Action> {
        self.actions.drain(..).collect()
    }

    /// Next event-log line.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Scheduler::handle_timeout`] must next be called (local status checks).
    pub fn poll_deadline(&self) -> Option<Instant> {
        self.status_due.values().map(|(t, _)| *t).min()
    }

    /// Local timer: queue the status checks that are due (local clock). A
    /// check still queued (not drained) is not queued twice, so the action
    /// queue holds at most one action per service per input plus one check.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .status_due
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for name in due {
            let Some(svc) = self.st.services.get(&name) else {
                continue;
            };
            let Some((_, op)) = self.status_due.get(&name).copied() else {
                continue;
            };
            let queued = self
                .actions
                .iter()
                .any(|a| matches!(a, Action::StatusCheck { service, .. } if *service == name));
            if !queued {
                self.actions.push_back(Action::StatusCheck {
                    service: name.clone(),
                    op,
                    kind: svc.spec.kind,
                    resources: start_order(&svc.spec.resources),
                });
            }
            let next = now + svc.spec.status_interval;
            self.status_due.insert(name, (next, op));
        }
    }

    /// Local: check `name` now instead of at its next status interval (its
    /// resources reported a failure by themselves, e.g. a vm's QEMU exited).
    /// False when it does not run on this node: nothing is queued.
    pub fn check_now(&mut self, now: Instant, name: &str) -> bool {
        let Some(due) = self.status_due.get_mut(name) else {
            return false;
        };
        due.0 = now;
        self.handle_timeout(now);
        true
    }

    /// When the replicated state wants an [`Input::Tick`] (a service is
    /// stopped because its start failed everywhere and a failure expires then).
    pub fn recheck_due(&self) -> Option<Instant> {
        self.st
            .services
            .values()
            .filter(|s| s.state == State::Stopped && s.want == Want::Running)
            .filter_map(Self::retry_at)
            .min()
    }

    /// The member whose driver sends [`Input::Tick`]: the lowest node id.
    pub fn tick_sender(&self) -> Option<NodeId> {
        self.st.members.iter().next().copied()
    }

    fn retry_at(svc: &Svc) -> Option<Instant> {
        let exp = svc.spec.failure_expire_time;
        if exp.as_nanos() == 0 {
            return None;
        }
        svc.avoid.values().min().map(|t| *t + exp)
    }

    fn handle_tick(&mut self, now: Instant) {
        for svc in self.st.services.values_mut() {
            let exp = svc.spec.failure_expire_time;
            if exp.as_nanos() > 0 {
                svc.avoid.retain(|_, t| now.saturating_since(*t) < exp);
            }
        }
        self.reconcile(now);
    }

    /// True when the cluster has seen `node`'s [`Input::Leave`] and the node
    /// owns no service any more, so it may leave without being fenced.
    pub fn ready_to_leave(&self, node: NodeId) -> bool {
        self.st.leaving.contains(&node)
            && !self.st.services.values().any(|s| {
                s.occupies(node)
                    || s.arrival == Some(node)
                    || s.release.is_some_and(|(n, _)| n == node)
            })
    }

    /// The replicated view: identical on every replica that saw the same inputs.
    pub fn view(&self) -> View {
        View {
            config_version: self.st.config.config_version,
            quorate: self.st.quorate,
            members: self
                .st
                .config
                .nodes
                .iter()
                .map(|n| MemberView {
                    id: n.id,
                    name: n.name.clone(),
                    online: self.st.members.contains(&n.id),
                    fence_pending: self.st.fence_pending.contains(&n.id),
                    leaving: self.st.leaving.contains(&n.id),
                })
                .collect(),
            services: self.st.services.values().map(view_of).collect(),
        }
    }

    /// One service's view.
    pub fn service(&self, name: &str) -> Option<ServiceView> {
        self.st.services.get(name).map(view_of)
    }

    // ----- inputs -------------------------------------------------------

    fn handle_membership(&mut self, now: Instant, members: &[NodeId], quorate: bool) {
        self.set_quorate(now, quorate);
        let known: BTreeSet<NodeId> = self.st.config.nodes.iter().map(|n| n.id).collect();
        let mut new = BTreeSet::new();
        for m in members {
            if known.contains(m) {
                new.insert(*m);
            } else {
                self.stats.unknown_members += 1;
            }
        }
        let old = self.st.members.clone();
        let mut unclean = Vec::new();
        for &n in old.difference(&new) {
            // Clean: it asked to leave and owns nothing, or it was fenced while
            // still a member and is now gone (the fence's power cycle).
            let clean = (self.st.leaving.contains(&n) && self.ready_to_leave(n))
                || self.st.needs_rejoin.contains(&n);
            self.st.leaving.remove(&n);
            if clean {
                self.event(
                    now,
                    None,
                    format!("{} left the cluster cleanly", self.node_name(n)),
                );
                if self.st.needs_rejoin.contains(&n) {
                    self.release_fenced(now, n);
                }
            } else {
                self.st.fence_pending.insert(n);
                unclean.push(n);
                self.event(
                    now,
                    None,
                    format!(
                        "{} left the cluster at {} without a clean shutdown; its services wait until it is fenced",
                        self.node_name(n),
                        fmt_instant(now)
                    ),
                );
            }
        }
        // A node fenced while it was a member lost its power with the fence;
        // in any configuration ordered after that, it is a new incarnation
        // (its reboot can be quick enough that the others never see it go).
        let back: Vec<NodeId> = self
            .st
            .needs_rejoin
            .iter()
            .filter(|n| new.contains(n) && old.contains(n))
            .copied()
            .collect();
        for n in back {
            self.st.needs_rejoin.remove(&n);
            self.event(
                now,
                None,
                format!("{} is back after its fencing", self.node_name(n)),
            );
        }
        for &n in new.difference(&old) {
            self.st.needs_rejoin.remove(&n);
            if self.st.startup_unseen.remove(&n) {
                self.st.fence_pending.remove(&n);
            }
            let msg = if self.st.fence_pending.contains(&n) {
                format!(
                    "{} joined, but it has not been fenced yet; it gets no service until it is",
                    self.node_name(n)
                )
            } else {
                format!("{} joined the cluster", self.node_name(n))
            };
            self.event(now, None, msg);
        }
        self.st.members = new;
        self.cold_start_check(now);
        // A membership change is a transition: failed-start memories and
        // operator stops are re-evaluated (rgmanager's "stopped" semantics).
        for svc in self.st.services.values_mut() {
            svc.avoid.clear();
            svc.no_migrate = false;
            if svc.want == Want::Held {
                svc.want = Want::Running;
            }
        }
        for n in unclean {
            self.node_lost(now, n);
        }
        self.failback_pass = true;
        self.reconcile(now);
        self.failback_pass = false;
    }

    /// The services touching a lost (or fenced-while-member) node: their
    /// processes may still be running there, so they wait for its fencing.
    fn node_lost(&mut self, now: Instant, n: NodeId) {
        let when = fmt_instant(now);
        let nname = self.node_name(n);
        for name in self.st.order.clone() {
            let Some(mut svc) = self.st.services.remove(&name) else {
                continue;
            };
            if svc.release.is_some_and(|(r, _)| r == n) {
                // Its paused copy died with it (or is fenced): nothing reports.
                svc.release = None;
            }
            if svc.state == State::Migrating && (svc.owner == Some(n) || svc.target == Some(n)) {
                let src = svc.owner.unwrap_or(n);
                let tgt = svc.target.unwrap_or(n);
                let tgt_gone = tgt == n
                    || !self.st.members.contains(&tgt)
                    || self.st.fence_pending.contains(&tgt);
                if src == n {
                    svc.fence_wait.insert(src);
                    svc.last_owner = Some(src);
                    svc.op = None;
                    svc.target = None;
                    if tgt_gone {
                        svc.fence_wait.insert(tgt);
                        svc.owner = None;
                        svc.state = State::Recovering;
                        svc.reason = format!(
                            "{nname} was lost at {when} while migrating {name}; waiting for fencing"
                        );
                    } else {
                        // The guest may have arrived on the target just before the source died.
                        svc.owner = Some(tgt);
                        let cause = format!(
                            "{nname} was lost at {when} while migrating {name} to {}; stopping any copy there before recovery",
                            self.node_name(tgt)
                        );
                        self.stop_on(now, &mut svc, cause);
                    }
                } else {
                    // Target lost: the source will report whether the guest moved.
                    svc.fence_wait.insert(tgt);
                    svc.reason = format!(
                        "migration target {nname} was lost at {when}; waiting for {} to report",
                        self.node_name(src)
                    );
                }
                self.event(now, Some(&name), svc.reason.clone());
            } else if svc.arrival == Some(n) {
                // The source was lost after handing the guest over: what it
                // held is paused and inactive; the target still reports.
                svc.arrival = None;
            } else if svc.occupies(n) {
                svc.deferred = None;
                if let Some(src) = svc.arrival.take() {
                    self.release(&mut svc, src);
                }
                svc.fence_wait.insert(n);
                svc.last_owner = Some(n);
                svc.owner = None;
                svc.op = None;
                svc.state = State::Recovering;
                svc.reason = format!(
                    "{nname} was lost at {when}; {name} waits for {nname} to be fenced before recovery"
                );
                self.event(now, Some(&name), svc.reason.clone());
            }
            self.st.services.insert(name, svc);
        }
    }

    fn handle_quorum(&mut self, now: Instant, quorate: bool) {
        if self.set_quorate(now, quorate) {
            self.cold_start_check(now);
            self.reconcile(now);
        }
    }

    /// The first quorum of a cold-started cluster: with startup fencing,
    /// configured nodes that are not members must join or be fenced before
    /// anything is placed (they may still run services from before the
    /// outage), as rgmanager waited for fenced's startup fencing.
    fn cold_start_check(&mut self, now: Instant) {
        if !self.st.quorate || self.st.ever_quorate {
            return;
        }
        self.st.ever_quorate = true;
        if !self.st.config.startup_fencing {
            return;
        }
        let absent: Vec<NodeId> = self
            .st
            .config
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|n| !self.st.members.contains(n))
            .collect();
        if absent.is_empty() {
            return;
        }
        for n in &absent {
            self.st.startup_unseen.insert(*n);
            self.st.fence_pending.insert(*n);
        }
        let names: Vec<String> = absent.iter().map(|n| self.node_name(*n)).collect();
        self.event(
            now,
            None,
            format!(
                "cold start: {} not seen since the cluster formed; services wait until they join or are fenced (startup fencing; clean_start=\"1\" in <fence_daemon> skips it)",
                names.join(", ")
            ),
        );
    }

    /// Record the quorum state; true if it changed.
    fn set_quorate(&mut self, now: Instant, quorate: bool) -> bool {
        if quorate == self.st.quorate {
            return false;
        }
        self.st.quorate = quorate;
        if quorate {
            self.event(
                now,
                None,
                format!("quorum regained at {}", fmt_instant(now)),
            );
            let cause = format!("quorum regained at {}", fmt_instant(now));
            for svc in self.st.services.values_mut() {
                if svc.state == State::Stopped && svc.plan.cause.is_empty() {
                    svc.plan.cause = cause.clone();
                }
            }
        } else {
            self.event(
                now,
                None,
                format!(
                    "quorum lost at {}: stopping every service in this partition and waiting for quorum",
                    fmt_instant(now)
                ),
            );
        }
        true
    }

    fn handle_fenced(&mut self, now: Instant, victim: NodeId, method: &str) {
        self.st.startup_unseen.remove(&victim);
        let pending = self.st.fence_pending.remove(&victim);
        let member = self.st.members.contains(&victim);
        if !pending && !member {
            self.stats.ignored_fences += 1;
            return;
        }
        if member {
            // Fenced while still a member: either the incarnation that was
            // fenced has not dropped out of the ring yet, or the node already
            // rebooted and rejoined before the outcome was ordered (and may be
            // running what it was given since). Whatever it holds is stopped
            // there: a new incarnation stops it; for a dead one the stop ends
            // when it leaves the ring. It gets nothing new until it is back.
            self.st.needs_rejoin.insert(victim);
            let why = format!("{} was fenced while still a member", self.node_name(victim));
            self.stop_occupied_on(now, victim, &why);
        }
        let cause = format!(
            "{} fenced by {} at {}",
            self.node_name(victim),
            method,
            fmt_instant(now)
        );
        self.event(now, None, cause.clone());
        for svc in self.st.services.values_mut() {
            if svc.fence_wait.remove(&victim) {
                svc.plan.cause = cause.clone();
                if svc.state == State::Recovering && svc.fence_wait.is_empty() {
                    svc.reason = format!("{cause}; recovering");
                }
            }
        }
        self.reconcile(now);
    }

    fn handle_rejoined(&mut self, now: Instant, node: NodeId) {
        if !self.st.members.contains(&node) || !self.st.fence_pending.remove(&node) {
            self.stats.ignored_fences += 1;
            return;
        }
        let nname = self.node_name(node);
        self.event(
            now,
            None,
            format!(
                "{nname} rejoined at {} before it was fenced; the fence domain will not fence it",
                fmt_instant(now)
            ),
        );
        for name in self.st.order.clone() {
            let Some(mut svc) = self.st.services.remove(&name) else {
                continue;
            };
            if svc.fence_wait.remove(&node) {
                // Whatever it ran may still run there: stop it there first
                // (a stop of something not running succeeds), then recover.
                svc.owner = Some(node);
                svc.target = None;
                let cause = format!(
                    "{nname} rejoined without being fenced; stopping {name} there before recovery"
                );
                svc.plan.cause = cause.clone();
                self.stop_on(now, &mut svc, cause);
            }
            self.st.services.insert(name, svc);
        }
        self.reconcile(now);
    }

    /// Stop, on `node`, every service that occupies it (its processes may
    /// run there whatever the replicas believed), saying `why`.
    fn stop_occupied_on(&mut self, now: Instant, node: NodeId, why: &str) {
        for name in self.st.order.clone() {
            let Some(mut svc) = self.st.services.remove(&name) else {
                continue;
            };
            if svc.release.is_some_and(|(r, _)| r == node) {
                // A new incarnation never reports the old one's FinishMigration.
                svc.release = None;
            }
            if svc.state == State::Migrating && svc.owner != Some(node) && svc.target == Some(node)
            {
                // Only the migration's target restarted: the guest still
                // runs on the source, which reports whether it moved.
                svc.reason = format!(
                    "{why} while {name} was migrating there; waiting for {} to report",
                    svc.owner
                        .map_or_else(|| "the source".into(), |o| self.node_name(o))
                );
                self.event(now, Some(&name), svc.reason.clone());
            } else if svc.occupies(node) {
                let cause = format!("{why}; stopping {name} there before placing it again");
                svc.owner = Some(node);
                svc.target = None;
                svc.op = None;
                svc.plan.cause = cause.clone();
                self.stop_on(now, &mut svc, cause);
            }
            self.st.services.insert(name, svc);
        }
    }

    /// A fenced member left the ring: its power was cut, so whatever it still
    /// held (a stop that will never report) is stopped.
    fn release_fenced(&mut self, now: Instant, node: NodeId) {
        let nname = self.node_name(node);
        self.event(
            now,
            None,
            format!("{nname} left the ring after its fencing; what it held is recovered"),
        );
        for name in self.st.order.clone() {
            let Some(mut svc) = self.st.services.remove(&name) else {
                continue;
            };
            if svc.occupies(node) {
                if let Some(src) = svc.arrival.take() {
                    self.release(&mut svc, src);
                }
                svc.last_owner = Some(node);
                svc.owner = None;
                svc.target = None;
                svc.op = None;
                svc.state = State::Stopped;
                svc.reason = format!("{nname} was fenced and has left the ring; recovering");
                svc.plan.cause = svc.reason.clone();
            }
            self.st.services.insert(name, svc);
        }
    }

    fn handle_restarted(&mut self, now: Instant, node: NodeId) {
        if !self.st.members.contains(&node) {
            return;
        }
        let nname = self.node_name(node);
        // The new incarnation did not ask to leave (the old one may have).
        self.st.leaving.remove(&node);
        self.event(
            now,
            None,
            format!("{nname} restarted (a new incarnation) without leaving the membership"),
        );
        self.stop_occupied_on(now, node, &format!("{nname} restarted"));
        self.reconcile(now);
    }

    fn handle_held(
        &mut self,
        now: Instant,
        node: NodeId,
        held: &BTreeMap<String, (OpId, Option<Outcome>)>,
        upto: OpId,
    ) {
        if !self.st.members.contains(&node) {
            return;
        }
        let nname = self.node_name(node);
        let mut changed = false;
        for name in self.st.order.clone() {
            let Some(mut svc) = self.st.services.remove(&name) else {
                continue;
            };
            let pending = match svc.op {
                Some(op)
                    if op <= upto
                        && svc.owner == Some(node)
                        && matches!(
                            svc.state,
                            State::Starting | State::Stopping | State::Migrating
                        ) =>
                {
                    Some(op)
                }
                _ => None,
            };
            if let Some((rn, rop)) = svc.release {
                if rn == node && rop <= upto {
                    match held.get(&name) {
                        Some((o, Some(outcome))) if *o == rop => {
                            let r = Report {
                                node,
                                service: name.clone(),
                                op: rop,
                                outcome: *outcome,
                            };
                            self.apply_result(now, &mut svc, &r);
                        }
                        Some((o, None)) if *o == rop => {}
                        // Never handed to it: nobody would report; a start
                        // there ends the paused copy first.
                        _ => svc.release = None,
                    }
                }
            }
            if let Some(op) = pending {
                match held.get(&name) {
                    Some((o, Some(outcome))) if *o == op => {
                        // Finished there; the report was lost with a ring.
                        let r = Report {
                            node,
                            service: name.clone(),
                            op,
                            outcome: *outcome,
                        };
                        self.apply_result(now, &mut svc, &r);
                        changed = true;
                    }
                    Some((o, None)) if *o == op => {} // running there: it reports
                    _ if svc.state == State::Migrating => {}
                    _ => {
                        let cause = format!(
                            "{nname} never ran operation {op} of {name} (decided where {nname} was not following); stopping {name} there before placing it again"
                        );
                        svc.op = None;
                        svc.target = None;
                        svc.plan.cause = cause.clone();
                        self.stop_on(now, &mut svc, cause);
                        changed = true;
                    }
                }
            }
            self.st.services.insert(name, svc);
        }
        if changed {
            self.reconcile(now);
        }
    }

    fn handle_leave(&mut self, now: Instant, node: NodeId) {
        if !self.st.members.contains(&node) {
            self.stats.ignored_leaves += 1;
            return;
        }
        if self.st.leaving.insert(node) {
            self.event(
                now,
                None,
                format!(
                    "{} asked to leave; moving its services off first",
                    self.node_name(node)
                ),
            );
        }
        self.reconcile(now);
    }

    fn handle_config(&mut self, now: Instant, config: ClusterSpec) -> Result<(), ConfigError> {
        let running = self.st.config.config_version;
        if config.config_version <= running {
            self.stats.rejected_configs += 1;
            return Err(ConfigError::StaleVersion {
                offered: config.config_version,
                running,
            });
        }
        let mut order = match config.validate() {
            Ok(o) => o,
            Err(e) => {
                self.stats.rejected_configs += 1;
                self.event(
                    now,
                    None,
                    format!("configuration {} refused: {e}", config.config_version),
                );
                return Err(e);
            }
        };
        let new: BTreeMap<String, ServiceSpec> = config
            .services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let names: Vec<String> = self.st.services.keys().cloned().collect();
        for name in names {
            let Some(mut svc) = self.st.services.remove(&name) else {
                continue;
            };
            match new.get(&name) {
                None if svc.spec.kind == ServiceKind::Vm => {
                    // rgmanager: removing a vm from the configuration leaves it as it is.
                    self.event(
                        now,
                        Some(&name),
                        format!(
                            "vm {name} removed from the configuration; no longer managed (left {})",
                            svc.state
                        ),
                    );
                    continue;
                }
                None => {
                    svc.removed = true;
                    svc.want = Want::Disabled;
                    svc.reason = "removed from the configuration; stopping".into();
                    order.push(name.clone());
                }
                Some(spec) => {
                    if svc.state == State::Started && spec.resources != svc.spec.resources {
                        svc.plan = Plan {
                            prefer: svc.owner,
                            cause: "resource tree changed in the configuration".into(),
                            ..Plan::default()
                        };
                        svc.spec = spec.clone();
                        self.stop_planned(
                            now,
                            &mut svc,
                            "resource tree changed; restarting".into(),
                        );
                    } else {
                        svc.spec = spec.clone();
                    }
                }
            }
            self.st.services.insert(name, svc);
        }
        for (name, spec) in &new {
            if !self.st.services.contains_key(name) {
                self.st
                    .services
                    .insert(name.clone(), Svc::new(spec.clone()));
            }
        }
        self.event(
            now,
            None,
            format!(
                "configuration version {} in force (was {running})",
                config.config_version
            ),
        );
        self.st.order = order;
        self.st.config = config;
        self.any_exclusive = self.st.services.values().any(|s| s.spec.exclusive);
        self.failback_pass = true;
        self.reconcile(now);
        self.failback_pass = false;
        Ok(())
    }

    fn handle_result(&mut self, now: Instant, r: Report) {
        let Some(mut svc) = self.st.services.remove(&r.service) else {
            self.stats.unknown_services += 1;
            return;
        };
        self.apply_result(now, &mut svc, &r);
        self.st.services.insert(r.service.clone(), svc);
        self.reconcile(now);
    }

    fn apply_result(&mut self, now: Instant, svc: &mut Svc, r: &Report) {
        let name = svc.spec.name.clone();
        let nname = self.node_name(r.node);
        if svc.release == Some((r.node, r.op)) {
            svc.release = None;
            if r.outcome == Outcome::StopOk {
                self.event(
                    now,
                    Some(&name),
                    format!("ended the handed-over copy of {name} on {nname}"),
                );
            } else {
                self.event(
                    now,
                    Some(&name),
                    format!(
                        "could not end the handed-over copy of {name} on {nname} (it stays paused there and is ended before {name} starts there again); see the node's log"
                    ),
                );
            }
            return;
        }
        if r.outcome == Outcome::StatusFailed {
            if svc.state != State::Started
                || svc.run_op != r.op
                || svc.owner != Some(r.node)
                || svc.op.is_some()
            {
                self.stats.stale_results += 1;
                return;
            }
            if svc.frozen {
                return;
            }
            self.status_failed(now, svc, r.node);
            return;
        }
        if svc.op != Some(r.op) || svc.owner != Some(r.node) {
            self.stats.stale_results += 1;
            return;
        }
        match (svc.state, r.outcome) {
            (State::Starting, Outcome::StartOk) => {
                svc.state = State::Started;
                svc.run_op = r.op;
                svc.op = None;
                let cause = if svc.plan.cause.is_empty() {
                    "policy".to_string()
                } else {
                    svc.plan.cause.clone()
                };
                svc.reason = match svc.last_owner {
                    Some(prev) if prev != r.node => format!(
                        "moved {name} from {} to {nname}: {cause}",
                        self.node_name(prev)
                    ),
                    _ => format!("started {name} on {nname}: {cause}"),
                };
                svc.plan = Plan::default();
                self.event(now, Some(&name), svc.reason.clone());
            }
            (State::Starting, Outcome::StartFailed) => {
                svc.avoid.insert(r.node, now);
                svc.op = None;
                if svc.plan.restart_disable {
                    svc.want = Want::Disabled;
                }
                svc.plan = Plan {
                    cause: format!("start failed on {nname} at {}", fmt_instant(now)),
                    restart_disable: false,
                    ..Plan::default()
                };
                let why = if svc.want == Want::Disabled {
                    format!("start of {name} failed on {nname}; stopping it there and disabling it (recovery=restart-disable)")
                } else {
                    format!("start of {name} failed on {nname}; stopping it there to clean up, then trying another node")
                };
                self.stop_on(now, svc, why);
            }
            (State::Stopping, Outcome::StopOk) => {
                svc.last_owner = svc.owner;
                svc.owner = None;
                svc.op = None;
                if !svc.fence_wait.is_empty() {
                    svc.state = State::Recovering;
                    let w: Vec<String> =
                        svc.fence_wait.iter().map(|n| self.node_name(*n)).collect();
                    svc.reason = format!(
                        "stopped on {nname}; waiting for {} to be fenced",
                        w.join(", ")
                    );
                } else if svc.want == Want::Disabled {
                    svc.state = State::Disabled;
                    svc.reason = format!("stopped on {nname} and disabled");
                } else {
                    svc.state = State::Stopped;
                    svc.reason = format!("stopped on {nname}");
                }
                self.event(now, Some(&name), svc.reason.clone());
            }
            (State::Stopping, Outcome::StopFailed) => {
                svc.state = State::Failed;
                svc.op = None;
                svc.reason = format!(
                    "stop of {name} failed on {nname} at {}; it may still hold resources there: fix the cause, then `quorate svc disable {name}`",
                    fmt_instant(now)
                );
                self.event(now, Some(&name), svc.reason.clone());
            }
            (State::Migrating, Outcome::MigrateOk) => {
                let src = r.node;
                let Some(tgt) = svc.target.take() else {
                    self.stats.stale_results += 1;
                    return;
                };
                svc.op = None;
                svc.last_owner = Some(src);
                let cause = if svc.plan.cause.is_empty() {
                    "policy".to_string()
                } else {
                    svc.plan.cause.clone()
                };
                svc.plan = Plan::default();
                let tname = self.node_name(tgt);
                if svc.fence_wait.contains(&tgt) {
                    svc.owner = None;
                    svc.state = State::Recovering;
                    svc.reason = format!(
                        "migrated {name} from {nname} to {tname}, which was lost meanwhile; waiting for it to be fenced"
                    );
                    self.release(svc, src);
                } else if !self.st.members.contains(&tgt) {
                    svc.owner = None;
                    svc.state = State::Stopped;
                    svc.reason = format!(
                        "migrated {name} from {nname} to {tname}, which has since been fenced"
                    );
                    self.release(svc, src);
                } else {
                    // The source handed the guest over; the target must say
                    // it runs before it is recorded as the owner.
                    let op = self.new_op();
                    svc.owner = Some(tgt);
                    svc.arrival = Some(src);
                    svc.state = State::Starting;
                    svc.op = Some(op);
                    svc.plan.cause = cause;
                    svc.reason = format!(
                        "{nname} handed {name} over to {tname}; waiting for {tname} to report it running"
                    );
                    if tgt == self.local {
                        self.actions.push_back(Action::ConfirmIncoming {
                            service: name.clone(),
                            op,
                            kind: svc.spec.kind,
                            resources: start_order(&svc.spec.resources),
                        });
                    }
                }
                self.event(now, Some(&name), svc.reason.clone());
            }
            (State::Starting, Outcome::IncomingRunning) => {
                let src = svc.arrival.take();
                svc.state = State::Started;
                svc.run_op = r.op;
                svc.op = None;
                svc.restarts.clear();
                let cause = if svc.plan.cause.is_empty() {
                    "policy".to_string()
                } else {
                    svc.plan.cause.clone()
                };
                svc.plan = Plan::default();
                let from = src.or(svc.last_owner);
                svc.reason = match from {
                    Some(f) => format!(
                        "migrated {name} from {} to {nname}: {cause}",
                        self.node_name(f)
                    ),
                    None => format!("migrated {name} to {nname}: {cause}"),
                };
                self.event(now, Some(&name), svc.reason.clone());
                if let Some(f) = src {
                    svc.last_owner = Some(f);
                    self.release(svc, f);
                }
            }
            (State::Starting, Outcome::IncomingFailed) => {
                svc.avoid.insert(r.node, now);
                svc.op = None;
                svc.plan = Plan {
                    cause: format!(
                        "migration to {nname} failed after the switch-over at {}",
                        fmt_instant(now)
                    ),
                    ..Plan::default()
                };
                let why = format!(
                    "{nname} did not get {name} running after the switch-over; stopping it there, then starting it again"
                );
                // stop_on releases the source's handed-over copy as well.
                self.stop_on(now, svc, why);
            }
            (State::Migrating, Outcome::MigrateFailed) => {
                if let Some(t) = svc.target.take() {
                    // The guest never left the source, so the target owes nothing.
                    svc.fence_wait.remove(&t);
                    svc.avoid.insert(t, now);
                }
                svc.op = None;
                svc.state = State::Started;
                svc.no_migrate = true;
                svc.plan = Plan::default();
                svc.reason = format!(
                    "migration of {name} failed; still running on {nname} (the next move stops and starts it)"
                );
                self.event(now, Some(&name), svc.reason.clone());
            }
            _ => self.stats.stale_results += 1,
        }
    }

    fn status_failed(&mut self, now: Instant, svc: &mut Svc, node: NodeId) {
        let name = svc.spec.name.clone();
        let nname = self.node_name(node);
        let base = format!(
            "status check of {name} failed on {nname} at {}",
            fmt_instant(now)
        );
        let expire = svc.spec.restart_expire_time;
        if expire.as_nanos() > 0 {
            svc.restarts.retain(|t| now.saturating_since(*t) < expire);
        }
        let max = svc.spec.max_restarts;
        match svc.spec.recovery {
            Recovery::Restart | Recovery::RestartDisable
                if max == 0 || (svc.restarts.len() as u64) < u64::from(max) =>
            {
                svc.restarts.push(now);
                let cause = if max == 0 {
                    format!("{base}; restarting in place")
                } else {
                    format!(
                        "{base}; restarting in place (restart {} of {max})",
                        svc.restarts.len()
                    )
                };
                svc.plan = Plan {
                    prefer: Some(node),
                    demote: None,
                    restart_disable: svc.spec.recovery == Recovery::RestartDisable,
                    cause: cause.clone(),
                };
                self.stop_on(now, svc, cause);
            }
            Recovery::RestartDisable | Recovery::Disable => {
                svc.want = Want::Disabled;
                let cause = format!("{base}; disabling it (recovery policy)");
                svc.plan = Plan::default();
                self.stop_on(now, svc, cause);
            }
            Recovery::Restart | Recovery::Relocate => {
                let cause = if svc.spec.recovery == Recovery::Restart {
                    format!("{base}; {max} restarts within the expiry window used up, relocating")
                } else {
                    format!("{base}; relocating (recovery=relocate)")
                };
                svc.restarts.clear();
                svc.plan = Plan {
                    prefer: None,
                    demote: Some(node),
                    restart_disable: false,
                    cause: cause.clone(),
                };
                self.stop_on(now, svc, cause);
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        from: NodeId,
        req: Request,
    ) -> Result<(), RequestError> {
        let desc = self.describe(&req, from);
        let name = req.service().to_string();
        let res = match self.st.services.remove(&name) {
            None => {
                self.stats.unknown_services += 1;
                Err(RequestError::NoSuchService(name.clone()))
            }
            Some(mut svc) => {
                let r = self.apply_request(now, from, &mut svc, &req);
                self.st.services.insert(name.clone(), svc);
                r
            }
        };
        match &res {
            Ok(()) => self.event(now, Some(&name), format!("{desc}: accepted")),
            Err(e) => {
                self.stats.refused_requests += 1;
                self.event(now, Some(&name), format!("{desc}: refused: {e}"));
            }
        }
        self.reconcile(now);
        res
    }

    fn describe(&self, req: &Request, from: NodeId) -> String {
        let mut s = format!(
            "operator on {}: {} {}",
            self.node_name(from),
            req.verb(),
            req.service()
        );
        if let Some(n) = req.node() {
            s.push_str(&format!(" -m {}", self.node_name(n)));
        }
        s
    }

    fn apply_request(
        &mut self,
        now: Instant,
        from: NodeId,
        svc: &mut Svc,
        req: &Request,
    ) -> Result<(), RequestError> {
        let name = svc.spec.name.clone();
        if !self.st.quorate {
            return Err(RequestError::NoQuorum);
        }
        match req {
            Request::Freeze { .. } => {
                svc.frozen = true;
                return Ok(());
            }
            Request::Unfreeze { .. } => {
                svc.frozen = false;
                return Ok(());
            }
            _ => {}
        }
        if svc.frozen {
            return Err(RequestError::Frozen(name));
        }
        if let Some(n) = svc.fence_wait.iter().next() {
            return Err(RequestError::FencingPending(self.node_name(*n)));
        }
        let busy = |svc: &Svc| RequestError::Busy {
            service: svc.spec.name.clone(),
            state: svc.state.to_string(),
        };
        match req {
            Request::Enable { node, .. } => match svc.state {
                State::Failed => Err(RequestError::Failed(name)),
                State::Starting | State::Stopping | State::Migrating => Err(busy(svc)),
                State::Started => match node {
                    Some(n) if Some(*n) != svc.owner => Err(RequestError::AlreadyRunning {
                        service: name,
                        owner: self.node_name(svc.owner.unwrap_or(*n)),
                    }),
                    _ => Ok(()),
                },
                State::Stopped | State::Disabled | State::Recovering => {
                    // clusvcadm -e without -m starts it where the command ran,
                    // if that node may run it; otherwise per domain policy.
                    self.start_request(svc, *node, "enabled by operator")?;
                    if node.is_none() {
                        svc.plan.prefer = Some(from);
                    }
                    Ok(())
                }
            },
            Request::Disable { .. } => {
                svc.want = Want::Disabled;
                match svc.state {
                    State::Failed => {
                        self.stop_on(now, svc, "disabled by operator (retrying the stop)".into());
                    }
                    State::Stopped | State::Recovering => {
                        svc.state = State::Disabled;
                        svc.reason = "disabled by operator".into();
                    }
                    _ => {}
                }
                Ok(())
            }
            Request::Relocate { node, .. } => match svc.state {
                State::Failed => Err(RequestError::Failed(name)),
                State::Starting | State::Stopping | State::Migrating => Err(busy(svc)),
                State::Stopped | State::Disabled | State::Recovering => {
                    self.start_request(svc, *node, "relocated by operator")
                }
                State::Started => {
                    let owner = svc.owner.unwrap_or(self.local);
                    if *node == Some(owner) {
                        return Err(RequestError::AlreadyThere {
                            service: name,
                            node: self.node_name(owner),
                        });
                    }
                    // An operator relocation forgets failed starts, but a
                    // refused request must change nothing.
                    let saved = std::mem::take(&mut svc.avoid);
                    let to = match node {
                        Some(n) => self.check_target(svc, *n).map(|()| *n),
                        None => self
                            .candidates(svc, Some(owner))
                            .first()
                            .copied()
                            .ok_or(RequestError::NoOtherNode(name)),
                    };
                    let to = match to {
                        Ok(to) => to,
                        Err(e) => {
                            svc.avoid = saved;
                            return Err(e);
                        }
                    };
                    self.move_to(now, svc, to, "relocated by operator".into());
                    Ok(())
                }
            },
            Request::Restart { .. } => match svc.state {
                State::Started => {
                    svc.plan = Plan {
                        prefer: svc.owner,
                        cause: "restarted by operator".into(),
                        ..Plan::default()
                    };
                    self.stop_planned(now, svc, "restart requested by operator".into());
                    Ok(())
                }
                State::Starting | State::Stopping | State::Migrating => Err(busy(svc)),
                State::Failed => Err(RequestError::Failed(name)),
                _ => Err(RequestError::NotRunning(name)),
            },
            Request::Stop { .. } => match svc.state {
                State::Failed => Err(RequestError::Failed(name)),
                State::Disabled => Ok(()),
                _ => {
                    svc.want = Want::Held;
                    svc.reason =
                        "stopped by operator (until the next membership change or enable)".into();
                    Ok(())
                }
            },
            Request::Migrate { node, .. } => {
                if svc.spec.kind != ServiceKind::Vm || svc.spec.migrate.is_none() {
                    return Err(RequestError::NotMigratable(name));
                }
                match svc.state {
                    State::Started => {}
                    State::Starting | State::Stopping | State::Migrating => return Err(busy(svc)),
                    State::Failed => return Err(RequestError::Failed(name)),
                    _ => return Err(RequestError::NotRunning(name)),
                }
                if Some(*node) == svc.owner {
                    return Err(RequestError::AlreadyThere {
                        service: name,
                        node: self.node_name(*node),
                    });
                }
                self.check_target(svc, *node)?;
                svc.no_migrate = false;
                self.move_to(now, svc, *node, "migrated by operator".into());
                Ok(())
            }
            Request::Freeze { .. } | Request::Unfreeze { .. } => Ok(()),
        }
    }

    /// Enable/relocate of a service that is not running.
    fn start_request(
        &mut self,
        svc: &mut Svc,
        node: Option<NodeId>,
        cause: &str,
    ) -> Result<(), RequestError> {
        if let Some(dep) = svc.spec.depend.clone() {
            if !self.dep_running(&dep) {
                return Err(RequestError::DependencyNotRunning {
                    service: svc.spec.name.clone(),
                    dependency: dep,
                });
            }
        }
        if let Some(n) = node {
            self.check_target(svc, n)?;
        }
        svc.avoid.clear();
        svc.want = Want::Running;
        svc.plan = Plan {
            prefer: node,
            cause: cause.to_string(),
            ..Plan::default()
        };
        if svc.state == State::Disabled {
            svc.state = State::Stopped;
        }
        Ok(())
    }

    fn check_target(&self, svc: &Svc, n: NodeId) -> Result<(), RequestError> {
        match self.unfit(svc, n, false) {
            None => Ok(()),
            Some(Unfit::Unknown) => Err(RequestError::NoSuchNode(n.0.to_string())),
            Some(Unfit::NotMember) => Err(RequestError::NotAMember(self.node_name(n))),
            Some(Unfit::Fencing) => Err(RequestError::FencingPending(self.node_name(n))),
            Some(Unfit::Leaving) => Err(RequestError::NodeLeaving(self.node_name(n))),
            Some(Unfit::NotInDomain) => {
                let d = svc.spec.domain.as_ref();
                Err(RequestError::NotInDomain {
                    service: svc.spec.name.clone(),
                    node: self.node_name(n),
                    domain: d.map(|d| d.name.clone()).unwrap_or_default(),
                    members: d
                        .map(|d| {
                            d.nodes
                                .iter()
                                .map(|m| self.node_name(m.node))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default(),
                })
            }
            Some(Unfit::Exclusive(other)) => Err(RequestError::ExclusiveConflict {
                service: svc.spec.name.clone(),
                node: self.node_name(n),
                other,
            }),
            Some(Unfit::Avoided) => Ok(()),
        }
    }

    // ----- policy -------------------------------------------------------

    fn dep_running(&self, dep: &str) -> bool {
        self.st.services.get(dep).is_some_and(|d| {
            matches!(d.state, State::Started | State::Migrating) && d.deferred.is_none()
        })
    }

    /// Why `node` cannot take `svc` (which is not in the service map right now).
    fn unfit(&self, svc: &Svc, node: NodeId, use_avoid: bool) -> Option<Unfit> {
        if !self.st.config.nodes.iter().any(|n| n.id == node) {
            return Some(Unfit::Unknown);
        }
        if !self.st.members.contains(&node) {
            return Some(Unfit::NotMember);
        }
        if self.st.fence_pending.contains(&node) || self.st.needs_rejoin.contains(&node) {
            return Some(Unfit::Fencing);
        }
        if self.st.leaving.contains(&node) {
            return Some(Unfit::Leaving);
        }
        if let Some(d) = &svc.spec.domain {
            if d.restricted && d.member(node).is_none() {
                return Some(Unfit::NotInDomain);
            }
        }
        if svc.spec.exclusive || self.any_exclusive {
            for (oname, o) in &self.st.services {
                if o.occupies(node) && (svc.spec.exclusive || o.spec.exclusive) {
                    return Some(Unfit::Exclusive(oname.clone()));
                }
            }
        }
        if use_avoid && svc.avoid.contains_key(&node) {
            return Some(Unfit::Avoided);
        }
        None
    }

    /// (outside the domain, priority) — smaller is better.
    fn domain_rank(svc: &Svc, node: NodeId) -> (bool, u32) {
        match &svc.spec.domain {
            None => (false, 0),
            Some(d) => match d.member(node) {
                None => (true, 0),
                Some(m) if d.ordered => (false, m.priority),
                Some(_) => (false, 0),
            },
        }
    }

    /// Nodes that may take `svc`, best first; ties broken by node id.
    fn candidates(&self, svc: &Svc, exclude: Option<NodeId>) -> Vec<NodeId> {
        let mut c: Vec<NodeId> = self
            .st
            .members
            .iter()
            .copied()
            .filter(|n| Some(*n) != exclude && self.unfit(svc, *n, true).is_none())
            .collect();
        c.sort_by_key(|n| (svc.plan.demote == Some(*n), Self::domain_rank(svc, *n), *n));
        c
    }

    fn new_op(&mut self) -> OpId {
        self.st.next_op += 1;
        self.st.next_op
    }

    /// End a migration source's handed-over copy (its QEMU paused after
    /// `completed`, its volume still primary): a FinishMigration there. A
    /// source that is gone or waits for fencing holds nothing that runs.
    fn release(&mut self, svc: &mut Svc, src: NodeId) {
        if !self.st.members.contains(&src) || self.st.fence_pending.contains(&src) {
            return;
        }
        let op = self.new_op();
        svc.release = Some((src, op));
        if src == self.local {
            self.actions.push_back(Action::FinishMigration {
                service: svc.spec.name.clone(),
                op,
                kind: svc.spec.kind,
                resources: stop_order(&svc.spec.resources),
            });
        }
    }

    fn start_on(&mut self, now: Instant, svc: &mut Svc, node: NodeId) {
        let op = self.new_op();
        svc.arrival = None;
        svc.state = State::Starting;
        svc.owner = Some(node);
        svc.target = None;
        svc.op = Some(op);
        if svc.last_owner != Some(node) {
            svc.restarts.clear();
        }
        let cause = if svc.plan.cause.is_empty() {
            "policy".to_string()
        } else {
            svc.plan.cause.clone()
        };
        svc.reason = format!("starting on {}: {cause}", self.node_name(node));
        self.event(now, Some(&svc.spec.name), svc.reason.clone());
        if node == self.local {
            self.actions.push_back(Action::StartService {
                service: svc.spec.name.clone(),
                op,
                kind: svc.spec.kind,
                resources: start_order(&svc.spec.resources),
            });
        }
    }

    /// Hard dependents of `name` that still hold resources.
    fn active_dependents(&self, name: &str) -> Vec<String> {
        self.st
            .services
            .values()
            .filter(|o| {
                o.spec.depend.as_deref() == Some(name)
                    && o.spec.depend_mode == DependMode::Hard
                    && matches!(
                        o.state,
                        State::Starting | State::Started | State::Stopping | State::Migrating
                    )
            })
            .map(|o| o.spec.name.clone())
            .collect()
    }

    /// A stop that is not forced by a failure: services that depend on this
    /// one (hard) are stopped first, then this one.
    fn stop_planned(&mut self, now: Instant, svc: &mut Svc, cause: String) {
        let deps = self.active_dependents(&svc.spec.name);
        if deps.is_empty() {
            self.stop_on(now, svc, cause);
            return;
        }
        let why = format!("stopping {} first: {cause}", deps.join(", "));
        if svc.reason != why {
            svc.reason = why;
            self.event(now, Some(&svc.spec.name), svc.reason.clone());
        }
        svc.deferred = Some(cause);
    }

    fn stop_on(&mut self, now: Instant, svc: &mut Svc, cause: String) {
        svc.deferred = None;
        if let Some(src) = svc.arrival.take() {
            self.release(svc, src);
        }
        let Some(owner) = svc.owner else {
            svc.state = State::Stopped;
            return;
        };
        let op = self.new_op();
        svc.state = State::Stopping;
        svc.op = Some(op);
        svc.reason = format!("stopping on {}: {cause}", self.node_name(owner));
        self.event(now, Some(&svc.spec.name), svc.reason.clone());
        if owner == self.local {
            self.actions.push_back(Action::StopService {
                service: svc.spec.name.clone(),
                op,
                kind: svc.spec.kind,
                resources: stop_order(&svc.spec.resources),
            });
        }
    }

    /// Move a running service to `to`: live migration for a vm that allows it,
    /// otherwise stop here and start there (falling back to other nodes).
    fn move_to(&mut self, now: Instant, svc: &mut Svc, to: NodeId, cause: String) {
        let Some(owner) = svc.owner else { return };
        if svc.can_migrate() {
            let op = self.new_op();
            svc.state = State::Migrating;
            svc.op = Some(op);
            svc.target = Some(to);
            svc.plan = Plan {
                cause: cause.clone(),
                ..Plan::default()
            };
            svc.reason = format!(
                "migrating from {} to {}: {cause}",
                self.node_name(owner),
                self.node_name(to)
            );
            self.event(now, Some(&svc.spec.name), svc.reason.clone());
            if owner == self.local {
                self.actions.push_back(Action::Migrate {
                    service: svc.spec.name.clone(),
                    op,
                    to,
                    mode: svc.spec.migrate.unwrap_or(MigrateMode::Live),
                });
            }
        } else {
            svc.plan = Plan {
                prefer: Some(to),
                demote: Some(owner),
                restart_disable: false,
                cause: cause.clone(),
            };
            self.stop_planned(
                now,
                svc,
                format!("{cause}; moving to {}", self.node_name(to)),
            );
        }
    }

    fn place(&mut self, now: Instant, svc: &mut Svc) {
        let mut c = self.candidates(svc, None);
        if let Some(p) = svc.plan.prefer {
            if let Some(i) = c.iter().position(|n| *n == p) {
                c.remove(i);
                c.insert(0, p);
            }
        }
        if let Some(&n) = c.first() {
            self.start_on(now, svc, n);
            return;
        }
        let why = if !svc.avoid.is_empty() {
            let tried: Vec<String> = svc.avoid.keys().map(|n| self.node_name(*n)).collect();
            let when = match Self::retry_at(svc) {
                Some(t) => format!("retried at {} or", fmt_instant(t)),
                None => "retried".to_string(),
            };
            format!(
                "start failed on every allowed node ({}); {when} on the next membership change, or now with `quorate svc enable {}`",
                tried.join(", "),
                svc.spec.name
            )
        } else if svc.spec.domain.as_ref().is_some_and(|d| d.restricted) {
            format!(
                "no member of restricted failover domain '{}' can take it now",
                svc.spec
                    .domain
                    .as_ref()
                    .map(|d| d.name.as_str())
                    .unwrap_or("")
            )
        } else {
            "no online node can take it now".to_string()
        };
        svc.plan.prefer = None;
        svc.plan.demote = None;
        if svc.reason != why {
            svc.reason = why;
            self.event(now, Some(&svc.spec.name), svc.reason.clone());
        }
    }

    /// Decide the next step of one settled service.
    fn step(&mut self, now: Instant, svc: &mut Svc) {
        if svc.op.is_some() {
            return;
        }
        match svc.state {
            State::Disabled | State::Failed => {}
            State::Starting | State::Stopping | State::Migrating => {}
            State::Recovering => {
                if svc.fence_wait.is_empty() && self.st.quorate && !svc.frozen {
                    svc.state = State::Stopped;
                    self.step_stopped(now, svc);
                } else if svc.fence_wait.is_empty() && svc.want == Want::Disabled {
                    svc.state = State::Disabled;
                }
            }
            State::Stopped => self.step_stopped(now, svc),
            State::Started => self.step_started(now, svc),
        }
    }

    fn step_stopped(&mut self, now: Instant, svc: &mut Svc) {
        match svc.want {
            Want::Disabled => {
                svc.state = State::Disabled;
                return;
            }
            Want::Held => return,
            Want::Running => {}
        }
        if svc.removed || svc.frozen {
            return;
        }
        if !self.st.quorate {
            svc.reason = "waiting for quorum".into();
            return;
        }
        if self.st.config.two_node {
            let lost: Vec<String> = self
                .st
                .fence_pending
                .iter()
                .filter(|n| !self.st.members.contains(n))
                .map(|n| self.node_name(*n))
                .collect();
            if !lost.is_empty() {
                svc.reason = format!(
                    "two_node: waiting for {} to be fenced before starting anything (both halves of a split keep quorum; fencing decides which survives)",
                    lost.join(", ")
                );
                return;
            }
        }
        if !self.st.startup_unseen.is_empty() {
            let names: Vec<String> = self
                .st
                .startup_unseen
                .iter()
                .map(|n| self.node_name(*n))
                .collect();
            svc.reason = format!(
                "cold start: waiting for {} to join or be fenced (startup fencing)",
                names.join(", ")
            );
            return;
        }
        if let Some(dep) = svc.spec.depend.clone() {
            if !self.dep_running(&dep) {
                let why = format!("waiting for {dep}, which it depends on, to run");
                if svc.reason != why {
                    svc.reason = why;
                }
                return;
            }
        }
        self.place(now, svc);
    }

    fn step_started(&mut self, now: Instant, svc: &mut Svc) {
        let Some(owner) = svc.owner else {
            svc.state = State::Stopped;
            return;
        };
        if let Some(cause) = svc.deferred.clone() {
            if self.active_dependents(&svc.spec.name).is_empty() {
                self.stop_on(now, svc, cause);
            }
            return;
        }
        if !self.st.quorate {
            svc.plan = Plan::default();
            self.stop_planned(
                now,
                svc,
                "quorum lost: a node without quorum stops its services".into(),
            );
            return;
        }
        match svc.want {
            Want::Disabled => {
                let c = if svc.removed {
                    "removed from the configuration"
                } else {
                    "disabled"
                };
                svc.plan = Plan::default();
                self.stop_planned(now, svc, c.into());
                return;
            }
            Want::Held => {
                svc.plan = Plan::default();
                self.stop_planned(now, svc, "stopped by operator".into());
                return;
            }
            Want::Running => {}
        }
        if svc.frozen {
            return;
        }
        if let (Some(dep), DependMode::Hard) = (svc.spec.depend.clone(), svc.spec.depend_mode) {
            if !self.dep_running(&dep) {
                svc.plan = Plan {
                    cause: format!("{dep} runs again"),
                    ..Plan::default()
                };
                self.stop_planned(
                    now,
                    svc,
                    format!("{dep}, which it depends on (hard), is not running"),
                );
                return;
            }
        }
        let known = self.st.config.nodes.iter().any(|n| n.id == owner);
        let in_domain = match &svc.spec.domain {
            Some(d) if d.restricted => d.member(owner).is_some(),
            _ => true,
        };
        let leaving = self.st.leaving.contains(&owner);
        let fenced = self.st.needs_rejoin.contains(&owner);
        if known && in_domain && !leaving && !fenced && !self.failback_pass {
            // The common case, kept cheap: nothing can make it move now.
            return;
        }
        let oname = self.node_name(owner);
        let must_leave = if leaving {
            Some(format!("{oname} is leaving the cluster"))
        } else if fenced {
            Some(format!("{oname} was fenced"))
        } else if !known {
            Some(format!("{oname} was removed from the configuration"))
        } else if !in_domain {
            Some(format!(
                "{oname} is no longer in its restricted failover domain"
            ))
        } else {
            None
        };
        if must_leave.is_none() && svc.spec.domain.is_none() {
            return;
        }
        let best = self.candidates(svc, Some(owner)).first().copied();
        if let Some(cause) = must_leave {
            match best {
                Some(to) => self.move_to(now, svc, to, cause),
                None => {
                    svc.plan = Plan {
                        cause: cause.clone(),
                        ..Plan::default()
                    };
                    self.stop_planned(
                        now,
                        svc,
                        format!("{cause} and no other allowed node can take it"),
                    );
                }
            }
            return;
        }
        // Failback / move into the domain, on transitions only.
        if !self.failback_pass {
            return;
        }
        let (Some(d), Some(to)) = (svc.spec.domain.clone(), best) else {
            return;
        };
        let (o_out, o_prio) = Self::domain_rank(svc, owner);
        let (b_out, b_prio) = Self::domain_rank(svc, to);
        if o_out && !b_out {
            let cause = format!(
                "{} is in its failover domain '{}'",
                self.node_name(to),
                d.name
            );
            self.move_to(now, svc, to, cause);
        } else if d.ordered && !d.nofailback && !o_out && !b_out && b_prio < o_prio {
            let cause = format!(
                "failback to {} (priority {b_prio}, preferred over {oname} at {o_prio})",
                self.node_name(to)
            );
            self.move_to(now, svc, to, cause);
        }
    }

    fn reconcile(&mut self, now: Instant) {
        for _ in 0..8 {
            let mut changed = false;
            for name in self.st.order.clone() {
                let Some(mut svc) = self.st.services.remove(&name) else {
                    continue;
                };
                let before = (svc.state, svc.op);
                self.step(now, &mut svc);
                changed |= before != (svc.state, svc.op);
                self.st.services.insert(name, svc);
            }
            if !changed {
                break;
            }
        }
        let gone: Vec<String> = self
            .st
            .services
            .iter()
            .filter(|(_, s)| {
                s.removed
                    && s.op.is_none()
                    && s.fence_wait.is_empty()
                    && matches!(s.state, State::Stopped | State::Disabled)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for g in gone {
            self.st.services.remove(&g);
            self.st.order.retain(|n| n != &g);
            self.event(now, Some(&g), format!("{g} stopped and removed"));
        }
        self.refresh_local(now);
    }

    fn refresh_local(&mut self, now: Instant) {
        let mut keep = BTreeMap::new();
        for (name, s) in &self.st.services {
            if s.owner == Some(self.local)
                && s.state == State::Started
                && !s.frozen
                && s.spec.status_interval.as_nanos() > 0
            {
                let due = match self.status_due.get(name) {
                    Some((t, op)) if *op == s.run_op => *t,
                    _ => now + s.spec.status_interval,
                };
                keep.insert(name.clone(), (due, s.run_op));
            }
        }
        self.status_due = keep;
    }

    fn event(&mut self, now: Instant, service: Option<&str>, message: String) {
        tracing::info!(target: "rm", at = %fmt_instant(now), service = service.unwrap_or(""), "{message}");
        if self.events.len() >= EVENT_CAPACITY {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(Event {
            at: now,
            service: service.map(str::to_string),
            message,
        });
    }
}

fn view_of(s: &Svc) -> ServiceView {
    // A target that has not yet confirmed the guest runs there is not its
    // owner: the view keeps showing the migration from the source.
    let (state, owner, migrating_to) = match s.arrival {
        Some(src) if s.state == State::Starting => (State::Migrating, Some(src), s.owner),
        _ => (s.state, s.owner, s.target),
    };
    ServiceView {
        name: s.spec.name.clone(),
        kind: s.spec.kind,
        state,
        owner,
        last_owner: s.last_owner,
        migrating_to,
        restarts: u32::try_from(s.restarts.len()).unwrap_or(u32::MAX),
        frozen: s.frozen,
        reason: s.reason.clone(),
    }
}
