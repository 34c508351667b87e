//! The typed cluster.conf model with every default applied.
//!
//! Every tunable is a [`Setting`]: its value plus whether it came from the
//! file or from the RHCS default, so `quorate config show` can mark defaults.

use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting<T> {
    /// The effective value.
    pub value: T,
    /// True when the file did not set it and the RHCS default applies.
    pub default: bool,
}

impl<T> Setting<T> {
    /// A value the file set.
    pub fn explicit(value: T) -> Self {
        Setting {
            value,
            default: false,
        }
    }
    /// A default value.
    pub fn defaulted(value: T) -> Self {
        Setting {
            value,
            default: true,
        }
    }
    /// `Some(v)` from the file, otherwise `default`.
    pub fn or(value: Option<T>, default: T) -> Self {
        match value {
            Some(v) => Setting::explicit(v),
            None => Setting::defaulted(default),
        }
    }
    /// The effective value.
    pub fn get(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Display> fmt::Display for Setting<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.default {
            write!(f, "{} (default)", self.value)
        } else {
            write!(f, "{}", self.value)
        }
    }
}

/// Attribute names whose values are secrets: never printed, logged or put in argv.
pub fn is_secret_attr(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    (n.contains("passwd") || n.contains("password") || n == "community" || n.ends_with("_key"))
        && !n.ends_with("_script")
}

/// What `show` prints in place of a secret.
pub const REDACTED: &str = "(hidden)";

fn redact<S: Serializer>(attrs: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = attrs
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_attr(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect();
    shown.serialize(s)
}

/// The whole `<cluster>`: the effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConf {
    /// `<cluster name>`.
    pub name: String,
    /// `<cluster config_version>`: must grow with every change (dates like 2013060401 are fine).
    pub config_version: u64,
    /// `<cman>`.
    pub cman: Cman,
    /// `<totem>`.
    pub totem: Totem,
    /// Quorum as the cluster will compute it (votes, expected votes, threshold, votequorum options).
    pub quorum: Quorum,
    /// `<quorumd>` if configured.
    pub quorumd: Option<Quorumd>,
    /// `<fence_daemon>`.
    pub fence_daemon: FenceDaemon,
    /// `<clusternodes>` in document order.
    pub nodes: Vec<ClusterNode>,
    /// `<fencedevices>` in document order.
    pub fence_devices: Vec<FenceDevice>,
    /// `<rm>` (empty when absent).
    pub rm: Rm,
    /// `<logging>`.
    pub logging: Logging,
    /// `<dlm>`.
    pub dlm: Dlm,
    /// `<replicas>` (extension): volumes mirrored between two nodes, DRBD's role.
    #[serde(default)]
    pub replicas: Vec<Replica>,
}

impl ClusterConf {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
    /// The node with `nodeid`.
    pub fn node_by_id(&self, nodeid: u32) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.nodeid == nodeid)
    }
    /// The fence device called `name`.
    pub fn fence_device(&self, name: &str) -> Option<&FenceDevice> {
        self.fence_devices.iter().find(|d| d.name == name)
    }
    /// The replicated volume called `name`.
    pub fn replica(&self, name: &str) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.name == name)
    }
}

/// `<replicas><replica>` (extension): one volume mirrored between two nodes (a DRBD resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Volume name (the NBD export name too).
    pub name: String,
    /// Size in bytes (`size="20G"`: K, M, G, T are powers of 1024).
    pub size: u64,
    /// Replication protocol: `A`, `B` or `C`.
    pub protocol: Setting<String>,
    /// TCP port of the replication link, on each node's storage address.
    pub port: Setting<u16>,
    /// TCP port of the NBD export, on the primary's storage address.
    pub nbd_port: Setting<u16>,
    /// `after-sb-0pri`: split brain, neither side primary.
    pub after_sb_0pri: Setting<String>,
    /// `after-sb-1pri`: split brain, one side primary.
    pub after_sb_1pri: Setting<String>,
    /// `after-sb-2pri`: split brain, both sides primary.
    pub after_sb_2pri: Setting<String>,
    /// Both sides primary, only while a live migration is in flight.
    pub allow_two_primaries: Setting<bool>,
    /// Resync ceiling, bytes per second (`rate="100M"`).
    pub rate: Setting<u64>,
    /// `fencing`: `resource-and-stonith`, `resource-only` or `dont-care`.
    pub fencing: Setting<String>,
    /// The two `<node>`s, in document order.
    pub nodes: Vec<ReplicaNode>,
    /// Line in the file.
    pub line: u32,
}

impl Replica {
    /// This volume's entry for node `name`.
    pub fn node(&self, name: &str) -> Option<&ReplicaNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// `<replica><node>`: where one side of a volume lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    /// A `<clusternode>` name.
    pub name: String,
    /// Backing file or block device.
    pub disk: String,
    /// Metadata file.
    pub meta: Setting<String>,
    /// Storage-network name or address the replication link and NBD export bind to.
    pub address: Setting<String>,
    /// Line in the file.
    pub line: u32,
}

/// `<cman>`: membership and quorum basics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cman {
    /// Two-node special case: one vote is quorate.
    pub two_node: Setting<bool>,
    /// `expected_votes` as written (the effective figure is in [`Quorum`]).
    pub expected_votes: Option<u32>,
    /// UDP port.
    pub port: Setting<u16>,
    /// 16-bit cluster id.
    pub cluster_id: Setting<u16>,
    /// Multicast address for ring 0.
    pub multicast: Setting<String>,
    /// Key file for totem authentication.
    pub keyfile: Option<String>,
}

/// Redundant ring mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RrpMode {
    /// One ring.
    None,
    /// Send on every ring.
    Active,
    /// Alternate rings.
    Passive,
}

impl fmt::Display for RrpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RrpMode::None => "none",
            RrpMode::Active => "active",
            RrpMode::Passive => "passive",
        })
    }
}

/// `<totem>`: membership protocol timers (milliseconds unless noted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totem {
    /// Token loss timeout, ms.
    pub token: Setting<u32>,
    /// Join timeout, ms.
    pub join: Setting<u32>,
    /// Consensus timeout, ms.
    pub consensus: Setting<u32>,
    /// Token retransmits before the token is declared lost.
    pub token_retransmits_before_loss_const: Setting<u32>,
    /// Token rotations without receiving a message before a processor is declared failed.
    pub fail_recv_const: Setting<u32>,
    /// Redundant ring mode.
    pub rrp_mode: Setting<RrpMode>,
    /// Authenticate and encrypt totem traffic.
    pub secauth: Setting<bool>,
    /// Key file (else the key is derived from the cluster name, as cman does).
    pub keyfile: Option<String>,
    /// `<interface>` children.
    pub interfaces: Vec<TotemInterface>,
}

/// `<totem><interface>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotemInterface {
    /// Ring number.
    pub ringnumber: u32,
    /// Network address to bind.
    pub bindnetaddr: Option<String>,
    /// Multicast address.
    pub mcastaddr: Option<String>,
    /// Multicast port.
    pub mcastport: Option<u16>,
}

/// Quorum as computed from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Sum of node votes (plus the quorum disk's votes).
    pub total_votes: u32,
    /// Expected votes.
    pub expected_votes: Setting<u32>,
    /// Votes needed to be quorate.
    pub quorum: u32,
    /// votequorum's wait_for_all (extension, `<cman>` or `<quorum>`).
    pub wait_for_all: Setting<bool>,
    /// votequorum's last_man_standing (extension).
    pub last_man_standing: Setting<bool>,
    /// last_man_standing_window in ms (extension).
    pub last_man_standing_window: Setting<u32>,
}

/// `<quorumd>`: the quorum disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quorumd {
    /// Seconds per cycle.
    pub interval: Setting<u32>,
    /// Missed cycles before a node is declared dead.
    pub tko: Setting<u32>,
    /// Cycles to wait for a master before bidding.
    pub master_wait: Setting<u32>,
    /// Cycles to wait before advertising votes after becoming master.
    pub upgrade_wait: Setting<u32>,
    /// Votes the quorum disk contributes.
    pub votes: Setting<u32>,
    /// Minimum heuristic score (0 = derived).
    pub min_score: Setting<u32>,
    /// Shared block device.
    pub device: Option<String>,
    /// mkqdisk label.
    pub label: Option<String>,
    /// Only the master advertises votes.
    pub master_wins: Setting<bool>,
    /// Reboot when the score drops.
    pub reboot: Setting<bool>,
    /// Heuristics.
    pub heuristics: Vec<Heuristic>,
}

/// `<quorumd><heuristic>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heuristic {
    /// Shell command; exit 0 = pass.
    pub program: String,
    /// Score when it passes.
    pub score: Setting<u32>,
    /// Seconds between runs.
    pub interval: Setting<u32>,
    /// Failures before the score is lost.
    pub tko: Setting<u32>,
    /// Line in the file.
    pub line: u32,
}

/// `<fence_daemon>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceDaemon {
    /// Seconds to wait after joining before fencing victims (-1 = forever).
    pub post_join_delay: Setting<i64>,
    /// Seconds to wait after a failure before fencing.
    pub post_fail_delay: Setting<i64>,
    /// Skip startup fencing.
    pub clean_start: Setting<bool>,
    /// Skip startup fencing of nodes without fence methods.
    pub skip_undefined: Setting<bool>,
    /// Seconds to wait for a manual override between failed rounds.
    pub override_time: Setting<i64>,
    /// FIFO for manual acknowledgement.
    pub override_path: Setting<String>,
}

/// `<clusternode>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Node name; resolves to the ring-0 address.
    pub name: String,
    /// Positive unique id.
    pub nodeid: u32,
    /// Votes.
    pub votes: Setting<u32>,
    /// Optional DLM weight.
    pub weight: Option<u32>,
    /// `<altname>`: second ring names.
    pub altnames: Vec<AltName>,
    /// `<fence><method>` in order of preference.
    pub fence: Vec<FenceMethod>,
    /// `<unfence><device>` run when the node starts.
    pub unfence: Vec<FenceDeviceRef>,
    /// Line in the file.
    pub line: u32,
}

/// `<altname>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltName {
    /// Name or address on the second ring.
    pub name: String,
    /// Port override.
    pub port: Option<u16>,
    /// Multicast override.
    pub mcast: Option<String>,
}

/// `<method>`: every device in it must succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceMethod {
    /// Method name (e.g. "1", "ipmi", "pdu").
    pub name: String,
    /// Devices run in order.
    pub devices: Vec<FenceDeviceRef>,
    /// Line in the file.
    pub line: u32,
}

/// `<device name=... per-node args>` inside a method or `<unfence>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceDeviceRef {
    /// The `<fencedevice>` it uses.
    pub name: String,
    /// Per-node agent arguments (port, action, ...), passed through untouched.
    #[serde(serialize_with = "redact")]
    pub attrs: BTreeMap<String, String>,
    /// Line in the file.
    pub line: u32,
}

/// `<fencedevice>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceDevice {
    /// Unique name.
    pub name: String,
    /// Fence agent program (fence_ipmilan, fence_apc, ...).
    pub agent: String,
    /// All other attributes, passed to the agent untouched.
    #[serde(serialize_with = "redact")]
    pub attrs: BTreeMap<String, String>,
    /// Line in the file.
    pub line: u32,
}

/// `<rm>`: rgmanager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rm {
    /// Seconds between status checks.
    pub status_poll_interval: Setting<u32>,
    /// Parallel status children.
    pub status_child_max: Setting<u32>,
    /// Seconds between transitions.
    pub transition_throttling: Setting<u32>,
    /// Event scripting mode.
    pub central_processing: Setting<bool>,
    /// `<failoverdomains>`.
    pub failover_domains: Vec<FailoverDomain>,
    /// `<resources>`: global definitions referenced with `ref=`.
    pub resources: Vec<Resource>,
    /// `<service>`s.
    pub services: Vec<Service>,
    /// `<vm>`s.
    pub vms: Vec<Vm>,
}

impl Rm {
    /// The failover domain called `name`.
    pub fn domain(&self, name: &str) -> Option<&FailoverDomain> {
        self.failover_domains.iter().find(|d| d.name == name)
    }
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
    /// The vm called `name`.
    pub fn vm(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|s| s.name == name)
    }
}

/// `<failoverdomain>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverDomain {
    /// Name.
    pub name: String,
    /// Prefer members by priority.
    pub ordered: Setting<bool>,
    /// Run only on members.
    pub restricted: Setting<bool>,
    /// Do not move back when a more preferred member returns.
    pub nofailback: Setting<bool>,
    /// Members.
    pub nodes: Vec<DomainNode>,
    /// Line in the file.
    pub line: u32,
}

/// `<failoverdomainnode>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainNode {
    /// Cluster node name.
    pub name: String,
    /// 1 (most preferred) .. 100.
    pub priority: Setting<u32>,
}

/// Service recovery policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// Restart in place, then relocate.
    Restart,
    /// Move to another node.
    Relocate,
    /// Stop and disable.
    Disable,
    /// Restart in place, disable when that fails.
    RestartDisable,
}

impl Recovery {
    /// Parses the cluster.conf spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "restart" => Some(Recovery::Restart),
            "relocate" => Some(Recovery::Relocate),
            "disable" => Some(Recovery::Disable),
            "restart-disable" => Some(Recovery::RestartDisable),
            _ => None,
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recovery::Restart => "restart",
            Recovery::Relocate => "relocate",
            Recovery::Disable => "disable",
            Recovery::RestartDisable => "restart-disable",
        })
    }
}

/// VM migration mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Migrate {
    /// Live migration.
    Live,
    /// Pause, copy, resume.
    Pause,
}

impl fmt::Display for Migrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Migrate::Live => "live",
            Migrate::Pause => "pause",
        })
    }
}

/// `<service>`: a resource tree started and moved as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Failover domain.
    pub domain: Option<String>,
    /// Start when the cluster becomes quorate.
    pub autostart: Setting<bool>,
    /// Run only on a node with no other service.
    pub exclusive: Setting<bool>,
    /// What to do on failure.
    pub recovery: Setting<Recovery>,
    /// Restarts allowed within `restart_expire_time` before relocating (0 = no limit).
    pub max_restarts: Setting<u32>,
    /// Seconds a restart is remembered (0 = forever).
    pub restart_expire_time: Setting<u32>,
    /// Service this one depends on (`service:NAME` or `NAME`).
    pub depend: Option<String>,
    /// Child resources (references already resolved).
    pub resources: Vec<Resource>,
    /// Other attributes (priority, nfslock, ...), passed through.
    #[serde(serialize_with = "redact")]
    pub attrs: BTreeMap<String, String>,
    /// Line in the file.
    pub line: u32,
}

impl Service {
    /// Resources in the order they start: parents before children, siblings by rgmanager type order.
    pub fn start_sequence(&self) -> Vec<&Resource> {
        let mut out = Vec::new();
        for r in crate::resource::ordered(&self.resources) {
            r.push_start(&mut out);
        }
        out
    }
    /// Resources in the order they stop: the reverse of [`Service::start_sequence`].
    pub fn stop_sequence(&self) -> Vec<&Resource> {
        let mut v = self.start_sequence();
        v.reverse();
        v
    }
}

/// `<vm>`: a virtual machine managed as a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// Name (the libvirt/QEMU domain name).
    pub name: String,
    /// Failover domain.
    pub domain: Option<String>,
    /// Start when the cluster becomes quorate.
    pub autostart: Setting<bool>,
    /// Run only on a node with no other service.
    pub exclusive: Setting<bool>,
    /// What to do on failure.
    pub recovery: Setting<Recovery>,
    /// Migration mode.
    pub migrate: Setting<Migrate>,
    /// Restart limit (0 = none).
    pub max_restarts: Setting<u32>,
    /// Seconds a restart is remembered.
    pub restart_expire_time: Setting<u32>,
    /// Dependency.
    pub depend: Option<String>,
    /// Other attributes (path, xmlfile, use_virsh, hypervisor, ...), passed through.
    #[serde(serialize_with = "redact")]
    pub attrs: BTreeMap<String, String>,
    /// Line in the file.
    pub line: u32,
}

/// A resource in a service tree or in `<resources>`: the element name is its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Element name: ip, fs, script, lvm, ... (the agent to run).
    #[serde(rename = "type")]
    pub kind: String,
    /// The `ref=` it was created from, if any.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Attributes (for a reference: the definition's, overridden by the local ones), passed through.
    #[serde(serialize_with = "redact")]
    pub attrs: BTreeMap<String, String>,
    /// Child resources.
    pub children: Vec<Resource>,
    /// `<action>` overrides (name, depth, interval, timeout).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<BTreeMap<String, String>>,
    /// Line in the file.
    pub line: u32,
}

/// `<logging>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    /// Log to syslog.
    pub to_syslog: Setting<bool>,
    /// Log to a file.
    pub to_logfile: Setting<bool>,
    /// Syslog facility.
    pub syslog_facility: Setting<String>,
    /// Syslog priority threshold.
    pub syslog_priority: Setting<String>,
    /// Log file priority threshold.
    pub logfile_priority: Setting<String>,
    /// Log file path.
    pub logfile: Setting<String>,
    /// Debug logging.
    pub debug: Setting<bool>,
    /// `<logging_daemon>` overrides, attributes passed through.
    pub daemons: Vec<BTreeMap<String, String>>,
}

/// `<dlm>`: the distributed lock manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dlm {
    /// Wait for fencing before recovery.
    pub enable_fencing: Setting<bool>,
    /// Wait for quorum before recovery.
    pub enable_quorum: Setting<bool>,
    /// Cluster-wide POSIX locks.
    pub enable_plock: Setting<bool>,
    /// plock operations per second (0 = unlimited).
    pub plock_rate_limit: Setting<u32>,
    /// Cache plock ownership on nodes.
    pub plock_ownership: Setting<bool>,
    /// Other attributes (protocol, timewarn, ...), passed through.
    pub attrs: BTreeMap<String, String>,
}
