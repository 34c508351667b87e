//! What the resource manager is told to manage: nodes, services, failover
//! domains and resource trees, as rgmanager reads them from `<rm>` in
//! cluster.conf. The integrator maps the config crate's types onto these.

use base::{Duration, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::ConfigError;

/// A cluster node: `<clusternode name="an-node01" nodeid="1">`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node id from cluster.conf.
    pub id: NodeId,
    /// Node name from cluster.conf, used in every message.
    pub name: String,
}

/// Whether a service is a plain `<service>` or a `<vm>` guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceKind {
    /// `<service>`: a tree of resources.
    Service,
    /// `<vm>`: a virtual machine, which may be live-migrated.
    Vm,
}

/// One member of a failover domain: `<failoverdomainnode name priority>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainNode {
    /// The member node.
    pub node: NodeId,
    /// 1..=100, lower is preferred; only meaningful in an ordered domain.
    pub priority: u32,
}

/// A failover domain: `<failoverdomain name ordered restricted nofailback>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// Domain name (for messages).
    pub name: String,
    /// The highest-ranked (lowest priority number) online member runs the service.
    pub ordered: bool,
    /// Run only on members; with no member online the service stays stopped.
    pub restricted: bool,
    /// Do not move a running service back to a better-ranked member that rejoins.
    pub nofailback: bool,
    /// Members with their priorities.
    pub nodes: Vec<DomainNode>,
}

impl DomainSpec {
    /// The member entry for `node`, if it belongs to the domain.
    pub fn member(&self, node: NodeId) -> Option<&DomainNode> {
        self.nodes.iter().find(|d| d.node == node)
    }
}

/// `recovery=` on a service: what to do when a running service fails its status check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recovery {
    /// Restart in place up to `max_restarts` within `restart_expire_time`, then relocate.
    Restart,
    /// Move to another allowed node.
    Relocate,
    /// Stop and disable.
    Disable,
    /// Restart in place; if that fails (or the restart budget is spent) disable.
    RestartDisable,
}

/// `depend_mode=`: how strongly a service is tied to the service it depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependMode {
    /// Start only after the dependency runs, and stop when it stops.
    Hard,
    /// Start only after the dependency runs; keep running if it stops later.
    Soft,
}

/// `migrate=` on a `<vm>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrateMode {
    /// Live migration (the guest keeps running while memory is copied).
    Live,
    /// Pause, copy, resume on the target.
    Pause,
}

/// A resource in a service's tree, e.g. `<ip address=... />` or `<script file=... />`.
/// `Debug` shows attribute names only: values may be secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// Agent type: `ip`, `fs`, `script`, `lvm`, ..., or `ocf:heartbeat:Dummy`.
    pub rtype: String,
    /// The resource's name (its `name`, `address` or `file` attribute).
    pub name: String,
    /// Agent parameters. Never logged by this crate.
    pub attrs: BTreeMap<String, String>,
    /// Child resources, started after this one and stopped before it.
    pub children: Vec<ResourceSpec>,
}

impl ResourceSpec {
    /// A leaf resource with no parameters.
    pub fn new(rtype: &str, name: &str) -> Self {
        ResourceSpec {
            rtype: rtype.to_string(),
            name: name.to_string(),
            attrs: BTreeMap::new(),
            children: Vec::new(),
        }
    }
}

/// One step of a flattened resource tree, in the order to run it.
/// `Debug` shows attribute names only: values may be secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStep {
    /// Agent type.
    pub rtype: String,
    /// Resource name.
    pub name: String,
    /// Agent parameters.
    pub attrs: BTreeMap<String, String>,
    /// Depth in the tree (0 = direct child of the service).
    pub depth: u32,
}

impl fmt::Debug for ResourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceSpec")
            .field("rtype", &self.rtype)
            .field("name", &self.name)
            .field("attrs", &self.attrs.keys().collect::<Vec<_>>())
            .field("children", &self.children)
            .finish()
    }
}

impl fmt::Debug for ResourceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceStep")
            .field("rtype", &self.rtype)
            .field("name", &self.name)
            .field("attrs", &self.attrs.keys().collect::<Vec<_>>())
            .field("depth", &self.depth)
            .finish()
    }
}

/// rgmanager's implicit start level for a resource type (service.sh `<special>`);
/// types it does not list start after these, in configuration order.
pub fn type_level(rtype: &str) -> u32 {
    match rtype {
        "lvm" => 1,
        "fs" => 2,
        "clusterfs" => 3,
        "netfs" => 4,
        "nfsexport" => 5,
        "nfsclient" => 6,
        "ip" => 7,
        "smb" => 8,
        "script" => 9,
        _ => 100,
    }
}

/// The tree flattened in rgmanager's start order: siblings sorted (stably) by
/// [`type_level`], each parent before its children. Stop order is the reverse.
pub fn start_order(resources: &[ResourceSpec]) -> Vec<ResourceStep> {
    fn walk(list: &[ResourceSpec], depth: u32, out: &mut Vec<ResourceStep>) {
        let mut sorted: Vec<&ResourceSpec> = list.iter().collect();
        sorted.sort_by_key(|r| type_level(&r.rtype));
        for r in sorted {
            out.push(ResourceStep {
                rtype: r.rtype.clone(),
                name: r.name.clone(),
                attrs: r.attrs.clone(),
                depth,
            });
            walk(&r.children, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(resources, 0, &mut out);
    out
}

/// The tree in stop order (reverse of [`start_order`]).
pub fn stop_order(resources: &[ResourceSpec]) -> Vec<ResourceStep> {
    let mut v = start_order(resources);
    v.reverse();
    v
}

/// A `<service>` or `<vm>` with its policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name.
    pub name: String,
    /// Service or vm.
    pub kind: ServiceKind,
    /// Failover domain; `None` means any member, ties broken by node id.
    pub domain: Option<DomainSpec>,
    /// Start when the cluster becomes quorate (default true); otherwise starts disabled.
    pub autostart: bool,
    /// Run only on a node that runs no other service, and keep others off it.
    pub exclusive: bool,
    /// What to do when the running service fails.
    pub recovery: Recovery,
    /// Restarts in place tolerated before relocating; 0 = no limit (rgmanager's default).
    pub max_restarts: u32,
    /// A restart is forgotten after this long; zero = never.
    pub restart_expire_time: Duration,
    /// Another service this one depends on.
    pub depend: Option<String>,
    /// Hard (default) or soft dependency.
    pub depend_mode: DependMode,
    /// A node where a start failed is tried again after this long (via
    /// [`crate::Input::Tick`]); zero = only at the next membership change,
    /// as rgmanager does. Default 60 s.
    pub failure_expire_time: Duration,
    /// For vms: how to move a running guest; `None` = stop and start.
    pub migrate: Option<MigrateMode>,
    /// Interval of status checks while running; zero = none.
    pub status_interval: Duration,
    /// Resource tree (children of the service element).
    pub resources: Vec<ResourceSpec>,
}

impl ServiceSpec {
    /// A service with rgmanager's defaults: no domain, autostart, recovery
    /// restart, unlimited restarts, hard dependency, status every 10 s
    /// (vms: live migration, status every 30 s).
    pub fn new(name: &str, kind: ServiceKind) -> Self {
        ServiceSpec {
            name: name.to_string(),
            kind,
            domain: None,
            autostart: true,
            exclusive: false,
            recovery: Recovery::Restart,
            max_restarts: 0,
            restart_expire_time: Duration::ZERO,
            depend: None,
            depend_mode: DependMode::Hard,
            failure_expire_time: Duration::from_secs(60),
            migrate: match kind {
                ServiceKind::Vm => Some(MigrateMode::Live),
                ServiceKind::Service => None,
            },
            status_interval: match kind {
                ServiceKind::Vm => Duration::from_secs(30),
                ServiceKind::Service => Duration::from_secs(10),
            },
            resources: Vec::new(),
        }
    }
}

/// Everything the resource manager needs from one cluster.conf version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// `config_version`; a change is accepted only if it is higher.
    pub config_version: u64,
    /// Startup fencing is on (`clean_start="0"`, RHCS's default): at a cold
    /// start nothing is placed until every configured node has joined or
    /// been fenced, as rgmanager waited for the fence domain.
    #[serde(default)]
    pub startup_fencing: bool,
    /// `<cman two_node="1">`: both halves of a split keep quorum and the fence
    /// race decides, so while a member is lost and not yet fenced nothing is
    /// started (the other half may be starting the same services).
    #[serde(default)]
    pub two_node: bool,
    /// All configured nodes.
    pub nodes: Vec<NodeSpec>,
    /// All services and vms.
    pub services: Vec<ServiceSpec>,
}

impl ClusterSpec {
    /// Check names, references, priorities and dependencies; on success return
    /// the services in start order (dependencies first, then by name).
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for n in &self.nodes {
            if n.id.0 == 0 {
                return Err(ConfigError::BadNodeId(n.name.clone()));
            }
            if !ids.insert(n.id) {
                return Err(ConfigError::DuplicateNode(n.id.to_string()));
            }
            if !names.insert(n.name.as_str()) {
                return Err(ConfigError::DuplicateNode(n.name.clone()));
            }
        }
        let mut svcs: BTreeMap<&str, &ServiceSpec> = BTreeMap::new();
        for s in &self.services {
            if s.name.is_empty() {
                return Err(ConfigError::EmptyServiceName);
            }
            if svcs.insert(s.name.as_str(), s).is_some() {
                return Err(ConfigError::DuplicateService(s.name.clone()));
            }
            if s.migrate.is_some() && s.kind != ServiceKind::Vm {
                return Err(ConfigError::MigrateNotVm(s.name.clone()));
            }
            if let Some(d) = &s.domain {
                let mut seen = BTreeSet::new();
                for m in &d.nodes {
                    if !ids.contains(&m.node) {
                        return Err(ConfigError::UnknownDomainNode {
                            domain: d.name.clone(),
                            node: m.node.to_string(),
                        });
                    }
                    if !seen.insert(m.node) {
                        return Err(ConfigError::DuplicateDomainNode {
                            domain: d.name.clone(),
                            node: m.node.to_string(),
                        });
                    }
                    if !(1..=100).contains(&m.priority) {
                        return Err(ConfigError::BadPriority {
                            domain: d.name.clone(),
                            priority: m.priority,
                        });
                    }
                }
                if d.restricted && d.nodes.is_empty() {
                    return Err(ConfigError::EmptyRestrictedDomain(d.name.clone()));
                }
            }
        }
        for s in &self.services {
            if let Some(dep) = &s.depend {
                if dep == &s.name || !svcs.contains_key(dep.as_str()) {
                    return Err(ConfigError::UnknownDependency {
                        service: s.name.clone(),
                        depend: dep.clone(),
                    });
                }
            }
        }
        // Kahn's algorithm, ties by name: deterministic dependency-first order.
        let mut order = Vec::new();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        while done.len() < svcs.len() {
            let next = svcs.values().find(|s| {
                !done.contains(s.name.as_str())
                    && match s.depend.as_deref() {
                        None => true,
                        Some(d) => done.contains(d),
                    }
            });
            match next {
                Some(s) => {
                    done.insert(s.name.as_str());
                    order.push(s.name.clone());
                }
                None => {
                    let left: Vec<String> = svcs
                        .keys()
                        .filter(|k| !done.contains(*k))
                        .map(|k| k.to_string())
                        .collect();
                    return Err(ConfigError::DependencyCycle(left.join(", ")));
                }
            }
        }
        Ok(order)
    }
}
