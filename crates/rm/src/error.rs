//! Typed refusals. Every message says what is wrong and what to do next.

use thiserror::Error;

/// Why an operator request (`quorate svc ...`, clusvcadm) was refused.
///
/// Every replica computes the same answer, so the node that submitted the
/// request can report it to the waiting command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The cluster partition is not quorate (rgmanager EQUORUM).
    #[error("the cluster is not quorate, so no service can be changed; bring enough nodes back (see `quorate status`) and retry")]
    NoQuorum,
    /// No service of that name is configured.
    #[error("no service or vm named '{0}' is configured; `quorate status` lists them")]
    NoSuchService(String),
    /// No node of that name/id is configured.
    #[error("no node '{0}' is configured; use a name from `quorate status`")]
    NoSuchNode(String),
    /// The target node is not an online member (rgmanager ENODE).
    #[error("{0} is not an online cluster member; start it (or pick an online node) and retry")]
    NotAMember(String),
    /// The target node is outside the service's restricted domain (EDOMAIN).
    #[error("{node} is not in failover domain '{domain}', which is restricted for {service}; pick one of: {members}")]
    NotInDomain {
        /// Service.
        service: String,
        /// Requested node.
        node: String,
        /// Domain name.
        domain: String,
        /// Allowed nodes, comma separated.
        members: String,
    },
    /// The service (or the node) waits for a lost node to be fenced (EFENCE).
    #[error("fencing of {0} is pending; the service cannot move until it is fenced (check `quorate status` and the fence device, or acknowledge a manual fence)")]
    FencingPending(String),
    /// The service is frozen (EFROZEN).
    #[error("{0} is frozen; run `quorate svc unfreeze {0}` first")]
    Frozen(String),
    /// An exclusive service and another service would share a node (EEXCL).
    #[error("{service} cannot run on {node} together with {other}: one of them is exclusive; pick another node or stop {other}")]
    ExclusiveConflict {
        /// Service being placed.
        service: String,
        /// Requested node.
        node: String,
        /// The service already there.
        other: String,
    },
    /// The service's dependency is not running (EDEPEND).
    #[error("{service} depends on {dependency}, which is not running; start it first with `quorate svc enable {dependency}`")]
    DependencyNotRunning {
        /// Service.
        service: String,
        /// Its dependency.
        dependency: String,
    },
    /// The service is in a failed state; only disable is allowed.
    #[error("{0} failed to stop cleanly and may still hold resources; fix the cause, then run `quorate svc disable {0}` and enable it again")]
    Failed(String),
    /// An operation on the service is in progress.
    #[error("{service} is {state} right now; wait for it to settle (`quorate status`) and retry")]
    Busy {
        /// Service.
        service: String,
        /// Its current state.
        state: String,
    },
    /// The request needs a running service.
    #[error("{0} is not running; use `quorate svc enable {0}` to start it")]
    NotRunning(String),
    /// Migration requested for something that is not a vm with `migrate` set.
    #[error("{0} cannot be migrated: only a vm with migrate=\"live\" or \"pause\" can; use `quorate svc relocate {0}` instead")]
    NotMigratable(String),
    /// The target is where the service already runs.
    #[error("{service} already runs on {node}")]
    AlreadyThere {
        /// Service.
        service: String,
        /// Node.
        node: String,
    },
    /// The service runs elsewhere; enable -m does not move it.
    #[error("{service} is already running on {owner}; use `quorate svc relocate {service} -m NODE` to move it")]
    AlreadyRunning {
        /// Service.
        service: String,
        /// Current owner.
        owner: String,
    },
    /// Relocation found no other node that may run the service.
    #[error("no other node may run {0} now (all are offline, outside its domain, exclusive-occupied or failed to start it); it stays where it is")]
    NoOtherNode(String),
    /// The target node is leaving the cluster.
    #[error("{0} is leaving the cluster; pick another node")]
    NodeLeaving(String),
}

/// Why a configuration was refused (the previous one stays in force).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Version not above the running one.
    #[error("config_version {offered} is not newer than the running {running}; bump config_version and push again")]
    StaleVersion {
        /// Offered version.
        offered: u64,
        /// Running version.
        running: u64,
    },
    /// Node id 0.
    #[error("node {0} has nodeid 0; node ids must be positive")]
    BadNodeId(String),
    /// A node id or name appears twice.
    #[error("node {0} is configured twice; node names and ids must be unique")]
    DuplicateNode(String),
    /// A service has no name.
    #[error("a service has an empty name; give every <service> and <vm> a name")]
    EmptyServiceName,
    /// A service name appears twice.
    #[error("service {0} is configured twice; service and vm names must be unique")]
    DuplicateService(String),
    /// `migrate` on a plain service.
    #[error("service {0} sets migrate, which only a <vm> may; remove it")]
    MigrateNotVm(String),
    /// A failover domain names a node that is not configured.
    #[error(
        "failover domain {domain} names node {node}, which is not a <clusternode>; fix the name"
    )]
    UnknownDomainNode {
        /// Domain.
        domain: String,
        /// Node.
        node: String,
    },
    /// A failover domain lists a node twice.
    #[error("failover domain {domain} lists node {node} twice; keep one entry")]
    DuplicateDomainNode {
        /// Domain.
        domain: String,
        /// Node.
        node: String,
    },
    /// Priority out of 1..=100.
    #[error("failover domain {domain} has priority {priority}; use 1 (most preferred) to 100")]
    BadPriority {
        /// Domain.
        domain: String,
        /// Offending priority.
        priority: u32,
    },
    /// A restricted domain with no nodes could never run anything.
    #[error(
        "failover domain {0} is restricted but has no nodes; add nodes or make it unrestricted"
    )]
    EmptyRestrictedDomain(String),
    /// `depend` names itself or a service that is not configured.
    #[error("service {service} depends on '{depend}', which is not another configured service; fix depend=")]
    UnknownDependency {
        /// Service.
        service: String,
        /// Its depend= value.
        depend: String,
    },
    /// Services depend on each other in a loop.
    #[error("services {0} depend on each other in a cycle; break the cycle in depend=")]
    DependencyCycle(String),
}
