//! The executor: carries out one [`rm::Action`] and logs what it ran.

use crate::cmd::{CmdLog, Runner};
use crate::{fs, ip, ocf, script};
use base::NodeId;
use rm::{Action, MigrateMode, OpId, Outcome, Report, ResourceStep, ServiceKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// rgmanager's agent directory, searched for `<name>.sh` after the OCF providers.
pub const DEFAULT_RGMANAGER_DIR: &str = "/usr/share/cluster";

/// One resource operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Start (idempotent: already running is success).
    Start,
    /// Stop (idempotent: already stopped is success).
    Stop,
    /// Status check (OCF `monitor`).
    Status,
}

impl Op {
    /// The action name (`start`, `stop`, `status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Status => "status",
        }
    }
}

/// Why one resource operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum StepError {
    /// The resource's attributes are missing or wrong.
    #[error("{0}")]
    Config(String),
    /// A command could not be run or exited with an error.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// What went wrong.
        reason: String,
    },
    /// A command hung past its timeout; its process group was killed.
    #[error("{command}: no exit within {timeout:?}; killed its process group (raise the resource's __start_timeout/__stop_timeout/__status_timeout if it is just slow)")]
    Timeout {
        /// The command line.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The agent ran and said the resource is failed or not running.
    #[error("{0}")]
    Failed(String),
    /// A replica resource, and the executor has no [`ReplicaHandler`].
    #[error("replica {0}: this executor was not given a replica handler (Executor::with_replica_handler); replica resources are run by the node daemon")]
    NoReplicaHandler(String),
    /// A vm resource, and the executor has no [`VmHandler`].
    #[error("vm {0}: this executor was not given a vm handler (Executor::with_vm_handler); vm resources are run by the vm crate")]
    NoVmHandler(String),
}

/// What the executor did with one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepLog {
    /// Agent type (`ip`, `fs`, `script`, `ocf:heartbeat:Dummy`, ...).
    pub rtype: String,
    /// Resource name.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// The error, or `None` on success.
    pub error: Option<StepError>,
    /// Commands run, in order, with exit codes.
    pub commands: Vec<CmdLog>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

impl StepLog {
    /// True when the operation succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The result of one action, before mapping to [`rm::Outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecResult {
    /// Every resource started.
    Started,
    /// A start failed; the resources started before it were stopped again.
    StartFailed,
    /// Every resource stopped.
    Stopped,
    /// At least one stop failed (the others were still stopped).
    StopFailed,
    /// Every status check passed (not reported to the scheduler).
    StatusOk,
    /// A status check failed.
    StatusFailed,
    /// The vm migrated.
    Migrated,
    /// The vm did not migrate (it still runs here).
    MigrateFailed,
    /// A migration target: the guest runs here.
    IncomingRunning,
    /// A migration target: the guest did not get running here.
    IncomingFailed,
}

impl ExecResult {
    /// The outcome to report, or `None` for a passing status check (rgmanager reports only failures).
    pub fn outcome(self) -> Option<Outcome> {
        Some(match self {
            ExecResult::Started => Outcome::StartOk,
            ExecResult::StartFailed => Outcome::StartFailed,
            ExecResult::Stopped => Outcome::StopOk,
            ExecResult::StopFailed => Outcome::StopFailed,
            ExecResult::StatusOk => return None,
            ExecResult::StatusFailed => Outcome::StatusFailed,
            ExecResult::Migrated => Outcome::MigrateOk,
            ExecResult::MigrateFailed => Outcome::MigrateFailed,
            ExecResult::IncomingRunning => Outcome::IncomingRunning,
            ExecResult::IncomingFailed => Outcome::IncomingFailed,
        })
    }

    /// True for the successful results.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            ExecResult::Started
                | ExecResult::Stopped
                | ExecResult::StatusOk
                | ExecResult::Migrated
                | ExecResult::IncomingRunning
        )
    }
}

/// What [`Executor::run`] did: the result and every step in the order run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionReport {
    /// The service.
    pub service: String,
    /// The action's op id (quote it in the [`rm::Report`]).
    pub op: OpId,
    /// The result.
    pub result: ExecResult,
    /// Each resource operation run (for a failed start: the failed one, then the rollback stops).
    pub steps: Vec<StepLog>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

impl ActionReport {
    /// The outcome to report to the scheduler (`None` when a status check passed).
    pub fn outcome(&self) -> Option<Outcome> {
        self.result.outcome()
    }

    /// The [`rm::Report`] to send through totem for node `node` (this one), or
    /// `None` when a status check passed.
    pub fn report(&self, node: NodeId) -> Option<Report> {
        Some(Report {
            node,
            service: self.service.clone(),
            op: self.op,
            outcome: self.outcome()?,
        })
    }

    /// The first error, for a one-line reason.
    pub fn first_error(&self) -> Option<&StepError> {
        self.steps.iter().find_map(|s| s.error.as_ref())
    }
}

impl std::fmt::Display for ActionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {:?} in {} ms",
            self.service, self.result, self.elapsed_ms
        )?;
        for s in &self.steps {
            match &s.error {
                None => writeln!(f, "  {} {}:{}: ok", s.op.as_str(), s.rtype, s.name)?,
                Some(e) => writeln!(f, "  {} {}:{}: FAILED: {e}", s.op.as_str(), s.rtype, s.name)?,
            }
            for c in &s.commands {
                writeln!(f, "    {c}")?;
            }
        }
        Ok(())
    }
}

/// A vm's state as its handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum VmStatus {
    /// Running here.
    Running,
    /// Not running here.
    Stopped,
}

/// The future a [`VmHandler`] returns.
pub type VmFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Runs vm resources (implemented by the integrator on top of the vm crate).
///
/// Each call names the vm (the `vm` resource's name, or the service's name for
/// a `<vm>` service) and passes its attributes; an `Err` carries a readable reason.
pub trait VmHandler: Send + Sync {
    /// Start the vm here (success if already running).
    fn start<'a>(&'a self, name: &'a str, attrs: &'a BTreeMap<String, String>) -> VmFuture<'a, ()>;
    /// Stop the vm here (success if not running).
    fn stop<'a>(&'a self, name: &'a str, attrs: &'a BTreeMap<String, String>) -> VmFuture<'a, ()>;
    /// Whether the vm runs here.
    fn status<'a>(
        &'a self,
        name: &'a str,
        attrs: &'a BTreeMap<String, String>,
    ) -> VmFuture<'a, VmStatus>;
    /// Move the running vm to node `to` (live or paused); `Ok` once the
    /// source has handed it over (the target then confirms).
    fn migrate<'a>(&'a self, name: &'a str, to: NodeId, mode: MigrateMode) -> VmFuture<'a, ()>;
    /// On a migration's target after the hand-over: `Ok` once the guest runs
    /// here (waiting a bounded time), the reason otherwise. By default one
    /// [`status`](Self::status) call.
    fn confirm_incoming<'a>(
        &'a self,
        name: &'a str,
        attrs: &'a BTreeMap<String, String>,
    ) -> VmFuture<'a, ()> {
        Box::pin(async move {
            match self.status(name, attrs).await? {
                VmStatus::Running => Ok(()),
                VmStatus::Stopped => Err(format!("{name} does not run here")),
            }
        })
    }
}

/// Runs `replica` resources (a replicated volume, DRBD's role), implemented by the node daemon
/// over its volumes. Each call names the volume (the resource's `name=`).
pub trait ReplicaHandler: Send + Sync {
    /// Make this node the volume's primary (waits for the peer to be fenced if it is lost).
    fn promote<'a>(&'a self, name: &'a str) -> VmFuture<'a, ()>;
    /// Make this node a secondary (success if it already is).
    fn demote<'a>(&'a self, name: &'a str) -> VmFuture<'a, ()>;
    /// `Ok` when this node is primary with an UpToDate disk; the reason otherwise.
    fn status<'a>(&'a self, name: &'a str) -> VmFuture<'a, ()>;
}

/// Runs services' resources on this node (a tokio driver; one executor can run several actions at once).
#[derive(Clone)]
pub struct Executor {
    netns: Option<String>,
    ocf_root: PathBuf,
    rgmanager_dir: PathBuf,
    vm: Option<Arc<dyn VmHandler>>,
    replica: Option<Arc<dyn ReplicaHandler>>,
    status_slots: Arc<tokio::sync::Semaphore>,
    status_max: usize,
}

/// rgmanager's `status_child_max` default: status checks run at once.
pub const DEFAULT_STATUS_CHILD_MAX: usize = 5;

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("netns", &self.netns)
            .field("ocf_root", &self.ocf_root)
            .field("rgmanager_dir", &self.rgmanager_dir)
            .field("vm_handler", &self.vm.is_some())
            .field("status_child_max", &self.status_max)
            .finish()
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor in this process's namespaces, OCF root `/usr/lib/ocf`, no vm handler.
    pub fn new() -> Self {
        Executor {
            netns: None,
            ocf_root: PathBuf::from(agents::ocf::DEFAULT_OCF_ROOT),
            rgmanager_dir: PathBuf::from(DEFAULT_RGMANAGER_DIR),
            vm: None,
            replica: None,
            status_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_STATUS_CHILD_MAX)),
            status_max: DEFAULT_STATUS_CHILD_MAX,
        }
    }

    /// At most `n` status checks run at once, across clones of this executor
    /// (`<rm status_child_max>`, default 5); others wait their turn. Starts and
    /// stops are never held back.
    pub fn with_status_child_max(mut self, n: usize) -> Self {
        let n = n.max(1);
        self.status_slots = Arc::new(tokio::sync::Semaphore::new(n));
        self.status_max = n;
        self
    }

    /// Runs network-facing commands (ip, arping, scripts, OCF agents) in `ip netns exec NAME`.
    pub fn with_netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Uses another OCF root (default `/usr/lib/ocf`).
    pub fn with_ocf_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.ocf_root = root.into();
        self
    }

    /// Uses another rgmanager agent directory (default `/usr/share/cluster`).
    pub fn with_rgmanager_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rgmanager_dir = dir.into();
        self
    }

    /// Hands `vm` resources (and `<vm>` services) to `handler`.
    pub fn with_vm_handler(mut self, handler: Arc<dyn VmHandler>) -> Self {
        self.vm = Some(handler);
        self
    }

    /// Hands `replica` resources to `handler` (promote on start, demote on stop).
    pub fn with_replica_handler(mut self, handler: Arc<dyn ReplicaHandler>) -> Self {
        self.replica = Some(handler);
        self
    }

    /// The network namespace commands run in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Carries out `action` and says what happened; map with [`ActionReport::outcome`].
    pub async fn run(&self, action: &Action) -> ActionReport {
        let started = Instant::now();
        let service = action.service().to_string();
        let op = action.op();
        let (result, steps) = match action {
            Action::StartService {
                kind, resources, ..
            } => {
                self.start_all(&vm_steps(&service, *kind, resources, false))
                    .await
            }
            Action::StopService {
                kind, resources, ..
            } => {
                self.stop_all(&vm_steps(&service, *kind, resources, true))
                    .await
            }
            Action::StatusCheck {
                kind, resources, ..
            } => {
                // The semaphore is never closed, so acquire cannot fail.
                let _slot = self.status_slots.acquire().await.ok();
                self.status_all(&vm_steps(&service, *kind, resources, false))
                    .await
            }
            Action::Migrate { to, mode, .. } => self.migrate(&service, *to, *mode).await,
            Action::ConfirmIncoming {
                kind, resources, ..
            } => {
                self.confirm_incoming(&vm_steps(&service, *kind, resources, false))
                    .await
            }
            Action::FinishMigration {
                kind, resources, ..
            } => {
                self.stop_all(&vm_steps(&service, *kind, resources, true))
                    .await
            }
        };
        let report = ActionReport {
            service,
            op,
            result,
            steps,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        if result.is_ok() {
            info!(service = %report.service, ?result, ms = report.elapsed_ms, "action done");
        } else {
            warn!(service = %report.service, ?result, ms = report.elapsed_ms,
                reason = %report.first_error().map(|e| e.to_string()).unwrap_or_default(), "action failed");
        }
        report
    }

    async fn start_all(&self, steps: &[ResourceStep]) -> (ExecResult, Vec<StepLog>) {
        let mut logs = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let log = self.run_step(step, Op::Start).await;
            let ok = log.ok();
            logs.push(log);
            if !ok {
                for prev in steps[..i].iter().rev() {
                    logs.push(self.run_step(prev, Op::Stop).await);
                }
                return (ExecResult::StartFailed, logs);
            }
        }
        (ExecResult::Started, logs)
    }

    async fn stop_all(&self, steps: &[ResourceStep]) -> (ExecResult, Vec<StepLog>) {
        let mut logs = Vec::new();
        for step in steps {
            logs.push(self.run_step(step, Op::Stop).await);
        }
        let r = if logs.iter().all(StepLog::ok) {
            ExecResult::Stopped
        } else {
            ExecResult::StopFailed
        };
        (r, logs)
    }

    async fn status_all(&self, steps: &[ResourceStep]) -> (ExecResult, Vec<StepLog>) {
        let mut logs = Vec::new();
        for step in steps {
            let log = self.run_step(step, Op::Status).await;
            let ok = log.ok();
            logs.push(log);
            if !ok {
                return (ExecResult::StatusFailed, logs);
            }
        }
        (ExecResult::StatusOk, logs)
    }

    async fn confirm_incoming(&self, steps: &[ResourceStep]) -> (ExecResult, Vec<StepLog>) {
        let mut logs = Vec::new();
        for step in steps.iter().filter(|s| s.rtype == "vm") {
            let started = Instant::now();
            let error = match &self.vm {
                None => Some(StepError::NoVmHandler(step.name.clone())),
                Some(h) => h
                    .confirm_incoming(&step.name, &step.attrs)
                    .await
                    .err()
                    .map(|e| StepError::Failed(format!("{} after the migration: {e}", step.name))),
            };
            let failed = error.is_some();
            logs.push(StepLog {
                rtype: "vm".into(),
                name: step.name.clone(),
                op: Op::Status,
                error,
                commands: Vec::new(),
                elapsed_ms: started.elapsed().as_millis() as u64,
            });
            if failed {
                return (ExecResult::IncomingFailed, logs);
            }
        }
        (ExecResult::IncomingRunning, logs)
    }

    async fn migrate(
        &self,
        service: &str,
        to: NodeId,
        mode: MigrateMode,
    ) -> (ExecResult, Vec<StepLog>) {
        let started = Instant::now();
        let error = match &self.vm {
            None => Some(StepError::NoVmHandler(service.to_string())),
            Some(h) => h
                .migrate(service, to, mode)
                .await
                .err()
                .map(|e| StepError::Failed(format!("migrate {service} to node {to}: {e}"))),
        };
        let r = if error.is_none() {
            ExecResult::Migrated
        } else {
            ExecResult::MigrateFailed
        };
        let log = StepLog {
            rtype: "vm".into(),
            name: service.into(),
            op: Op::Start,
            error,
            commands: Vec::new(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        (r, vec![log])
    }

    /// Runs one operation on one resource (the building block of [`Executor::run`]).
    pub async fn run_step(&self, step: &ResourceStep, op: Op) -> StepLog {
        let started = Instant::now();
        let mut runner = Runner::new(self.netns.as_deref());
        let res = match step.rtype.as_str() {
            "script" => script::run(&mut runner, step, op).await,
            "ip" => ip::run(&mut runner, step, op).await,
            "fs" => fs::run(&mut runner, step, op).await,
            "vm" => self.vm_step(step, op).await,
            "replica" => self.replica_step(step, op).await,
            _ => ocf::run(&mut runner, &self.ocf_root, &self.rgmanager_dir, step, op).await,
        };
        let log = StepLog {
            rtype: step.rtype.clone(),
            name: step.name.clone(),
            op,
            error: res.err(),
            commands: runner.log,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        match &log.error {
            None => {
                info!(rtype = %log.rtype, name = %log.name, op = op.as_str(), ms = log.elapsed_ms, "resource ok")
            }
            Some(e) => {
                warn!(rtype = %log.rtype, name = %log.name, op = op.as_str(), ms = log.elapsed_ms, error = %e, "resource failed")
            }
        }
        log
    }

    /// An OCF (or rgmanager `.sh`) agent's meta-data: its parameters and advised timeouts.
    pub async fn meta_data(&self, rtype: &str) -> Result<crate::meta::AgentMeta, StepError> {
        let mut runner = Runner::new(None);
        ocf::meta_data(&mut runner, &self.ocf_root, &self.rgmanager_dir, rtype).await
    }

    /// Checks a resource without running it, for configuration checks: the
    /// attributes of `ip`, `fs` and `script` parse (and the script exists), an
    /// agent exists and has every parameter its meta-data requires. Returns the
    /// attributes the agent does not declare (passed anyway; likely typos).
    pub async fn check_resource(&self, step: &ResourceStep) -> Result<Vec<String>, StepError> {
        match step.rtype.as_str() {
            "ip" => ip::IpSpec::parse(step).map(|_| Vec::new()),
            "fs" => fs::check(step).map(|_| Vec::new()),
            "script" => script::check(step).map(|_| Vec::new()),
            "vm" => match self.vm {
                Some(_) => Ok(Vec::new()),
                None => Err(StepError::NoVmHandler(step.name.clone())),
            },
            "replica" => match self.replica {
                Some(_) => Ok(Vec::new()),
                None => Err(StepError::NoReplicaHandler(step.name.clone())),
            },
            rtype => {
                crate::timeout::op_timeout(&step.attrs, Op::Start)?;
                crate::timeout::op_timeout(&step.attrs, Op::Stop)?;
                crate::timeout::op_timeout(&step.attrs, Op::Status)?;
                self.meta_data(rtype)
                    .await?
                    .check(rtype, &step.name, &step.attrs)
            }
        }
    }

    async fn replica_step(&self, step: &ResourceStep, op: Op) -> Result<(), StepError> {
        let h = self
            .replica
            .as_ref()
            .ok_or_else(|| StepError::NoReplicaHandler(step.name.clone()))?;
        let fail =
            |e: String| StepError::Failed(format!("replica {} {}: {e}", step.name, op.as_str()));
        match op {
            Op::Start => h.promote(&step.name).await.map_err(fail),
            Op::Stop => h.demote(&step.name).await.map_err(fail),
            Op::Status => h.status(&step.name).await.map_err(fail),
        }
    }

    async fn vm_step(&self, step: &ResourceStep, op: Op) -> Result<(), StepError> {
        let h = self
            .vm
            .as_ref()
            .ok_or_else(|| StepError::NoVmHandler(step.name.clone()))?;
        let fail = |e: String| StepError::Failed(format!("vm {} {}: {e}", step.name, op.as_str()));
        match op {
            Op::Start => h.start(&step.name, &step.attrs).await.map_err(fail),
            Op::Stop => h.stop(&step.name, &step.attrs).await.map_err(fail),
            Op::Status => match h.status(&step.name, &step.attrs).await.map_err(fail)? {
                VmStatus::Running => Ok(()),
                VmStatus::Stopped => Err(StepError::Failed(format!(
                    "vm {} is not running",
                    step.name
                ))),
            },
        }
    }
}

/// A `<vm>` service with no explicit `vm` resource is one vm named after the
/// service: first when starting, last when stopping.
fn vm_steps(
    service: &str,
    kind: ServiceKind,
    resources: &[ResourceStep],
    stopping: bool,
) -> Vec<ResourceStep> {
    let mut v = resources.to_vec();
    if kind == ServiceKind::Vm && !resources.iter().any(|r| r.rtype == "vm") {
        let vm = ResourceStep {
            rtype: "vm".into(),
            name: service.into(),
            attrs: BTreeMap::new(),
            depth: 0,
        };
        if stopping {
            v.push(vm);
        } else {
            v.insert(0, vm);
        }
    }
    v
}
