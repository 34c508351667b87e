//! The node daemon: one event loop that feeds the protocol cores and carries
//! out what they ask.
//!
//! Inputs (each handled to completion before the next): a datagram from a
//! ring, an admin request from the socket, a finished fence agent, the next
//! deadline of any core, and a shutdown request. After every input [`Node::pump`]
//! drains the cores in a fixed order until nothing moves:
//!
//! totem transmits go to the rings; totem events go up: a regular
//! configuration to quorum, ordered messages by their first byte (a layer tag,
//! [`TAG_QUORUM`], [`TAG_FENCE`]) to the vote core or the fence domain;
//! quorum's messages go back into totem; quorum changes and membership go to
//! the fence domain; fence agent runs are spawned, fence outcomes are
//! multicast so every member learns them in the same order.
//!
//! The layers talk through plain agreed-order multicast, as cman's own
//! service did on totem, rather than through process groups: a process group
//! delivers a message only to nodes whose join was ordered before it, so
//! state sent right after a membership change could miss a node that is
//! still joining the group.
//!
//! No state is shared with other tasks: the socket, ring and agent tasks only
//! send messages into this loop.

use crate::clock::MonotonicClock;
use crate::ipc::{IpcServer, Pending, Request, Response};
use crate::plan::{make_plan, NodePlan};
use crate::udp::{Datagram, Rings};
use base::{Instant, NodeId};
use config::ClusterConf;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::sync::mpsc;

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
/// How often the config file is checked for hand edits.
const DRIFT_POLL: std::time::Duration = std::time::Duration::from_secs(5);
/// Process groups a node joins: one per service layer, so `status` can show
/// which services run where (as clustat shows rgmanager per member).
pub const GROUPS: [&str; 2] = ["cman", "fenced"];
/// How long a leaving node waits for its services to move away.
const LEAVE_WAIT_SECS: u64 = 120;
/// How many log lines `status` keeps for "why is it like this".
const EVENT_LOG: usize = 200;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// cluster.conf.
    pub config_path: PathBuf,
    /// Which `<clusternode>` this is; `None`: the one whose name resolves locally.
    pub node: Option<String>,
    /// Where the socket and persistent state live.
    pub state_dir: PathBuf,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// cluster.conf could not be read.
    #[error(transparent)]
    Load(#[from] config::LoadError),
    /// cluster.conf is invalid.
    #[error("{path} is not valid:\n{errors}\nfix it (quorate config validate {path} says the same) and start again")]
    Invalid {
        /// The file.
        path: String,
        /// The errors, one per line.
        errors: String,
    },
    /// This machine is none of the nodes.
    #[error("{0}\n  hint: {1}")]
    Local(config::LocalNodeError, &'static str),
    /// Addresses, timers or devices.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// Totem refused its configuration.
    #[error("totem: {0}")]
    Totem(#[from] totem::ConfigError),
    /// Quorum refused its configuration.
    #[error("quorum: {0}")]
    Quorum(#[from] quorum::QuorumConfigError),
    /// The key file.
    #[error("cluster key {path}: {why}. Create one with `quorate keygen {path}` and copy it to every node")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The admin socket.
    #[error(transparent)]
    Ipc(#[from] crate::ipc::IpcError),
    /// The rings.
    #[error(transparent)]
    Udp(#[from] crate::udp::UdpError),
    /// The quorum disk could not be opened.
    #[error(
        "quorum disk {0}: {1}. Format it once with `quorate qdisk format DEVICE` from one node"
    )]
    Qdisk(String, String),
    /// The quorum disk asked this node to remove itself.
    #[error("self-fenced by the quorum disk: {0}")]
    SelfFenced(String),
    /// The state dir.
    #[error("state dir {path}: {source}")]
    State {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Load and validate cluster.conf, with errors as an administrator reads them.
pub fn load_config(path: &Path) -> Result<ClusterConf, NodeError> {
    let parsed = config::load_file(path)?;
    match parsed.config {
        Some(c)
            if !parsed
                .diagnostics
                .iter()
                .any(|d| d.severity == config::Severity::Error) =>
        {
            Ok(c)
        }
        _ => Err(NodeError::Invalid {
            path: path.display().to_string(),
            errors: parsed
                .diagnostics
                .iter()
                .filter(|d| d.severity == config::Severity::Error)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}

/// Which node this is: `--node`, else the node whose name resolves to a local address.
pub fn local_node_name(conf: &ClusterConf, requested: Option<&str>) -> Result<String, NodeError> {
    if let Some(n) = requested {
        return Ok(n.to_string());
    }
    let local: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    let resolver = |name: &str| -> Vec<std::net::IpAddr> {
        use std::net::ToSocketAddrs;
        if let Ok(ip) = name.parse() {
            return vec![ip];
        }
        (name, 0)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default()
    };
    config::identify_local_node(conf, &local, resolver)
        .map(|n| n.name.clone())
        .map_err(|e| {
            let hint = e.hint();
            NodeError::Local(e, hint)
        })
}

/// The derived key for a cluster without a key file: as cman, from the name.
///
/// Not secret: anyone who knows the cluster name can compute it. It keeps two
/// clusters on one network apart, as cman's derived key did.
fn key_from_name(name: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut v = Vec::with_capacity(64);
    for part in 0u8..2 {
        let mut h = Sha256::new();
        h.update(b"quorate-cluster-name-v1\0");
        h.update([part]);
        h.update(name.as_bytes());
        v.extend_from_slice(&h.finalize());
    }
    v
}

/// Read the cluster key named by cluster.conf, or derive one from the name.
fn cluster_key(conf: &ClusterConf) -> Result<Option<totem::ClusterKey>, NodeError> {
    if !*conf.totem.secauth.get() {
        tracing::warn!("secauth=\"off\": totem packets are neither authenticated nor encrypted");
        return Ok(None);
    }
    let file = conf
        .totem
        .keyfile
        .clone()
        .or_else(|| conf.cman.keyfile.clone());
    let bytes = match &file {
        Some(path) => std::fs::read(path).map_err(|e| NodeError::Key {
            path: path.clone(),
            why: e.to_string(),
        })?,
        None => {
            tracing::warn!(
                "no keyfile in <cman> or <totem>: the key is derived from the cluster name, as cman does; \
                 anyone who knows the name can join. Run `quorate keygen` and set keyfile=\"...\""
            );
            key_from_name(&conf.name)
        }
    };
    totem::ClusterKey::from_authkey(&bytes)
        .map(Some)
        .map_err(|e| NodeError::Key {
            path: file.unwrap_or_else(|| "(derived)".into()),
            why: e.to_string(),
        })
}

/// Persistent totem state: the boot epoch and the highest ring sequence.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Persisted {
    epoch: u64,
    ring_seq: u64,
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("totem.state")
}

fn load_persisted(dir: &Path) -> Persisted {
    std::fs::read(state_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Write, fsync, rename: a crash leaves the old or the new file, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn save_persisted(dir: &Path, p: Persisted) -> Result<(), NodeError> {
    let bytes = serde_json::to_vec(&p).unwrap_or_default();
    write_atomic(&state_file(dir), &bytes).map_err(|source| NodeError::State {
        path: state_file(dir),
        source,
    })
}

/// A finished fence agent run.
#[derive(Debug)]
struct AgentDone {
    run_id: u64,
    result: Result<(), String>,
}

/// Carries out the resource manager's actions on this node (start, stop,
/// check, migrate a service's resources). The daemon calls it on a task of
/// its own and reports the outcome back through totem.
pub trait ServiceRunner: Send + Sync + 'static {
    /// Run `action`; `None` for a status check that passed (nothing to report).
    fn run(
        &self,
        action: rm::Action,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<rm::Outcome>> + Send + 'static>>;

    /// This node is the target of a vm's live migration: get ready to receive
    /// it (start the incoming guest). Called once per migration.
    fn prepare_incoming(
        &self,
        service: String,
        resources: Vec<rm::ResourceStep>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>;
}

/// A finished resource action.
#[derive(Debug)]
struct ServiceDone {
    service: String,
    op: rm::OpId,
    outcome: Option<rm::Outcome>,
}

/// A line of the node's event log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogLine {
    /// Wall-clock time, seconds since the epoch (display only).
    pub at: f64,
    /// What happened, in words.
    pub text: String,
}

/// One running node.
pub struct Node {
    load_tx: crate::load::Generator,
    load_rx: crate::load::Receiver,
    clock: MonotonicClock,
    conf: ClusterConf,
    plan: NodePlan,
    state_dir: PathBuf,
    persisted: Persisted,
    totem: totem::TotemNode,
    quorum: quorum::VoteQuorum,
    fence: fence::FenceDomain,
    rings: Rings,
    by_addr: BTreeMap<SocketAddr, NodeId>,
    members: Vec<NodeId>,
    ring_id: Option<totem::RingId>,
    fence_view: Option<(Vec<NodeId>, bool)>,
    joined_at: BTreeMap<NodeId, SystemTime>,
    agent_tx: mpsc::Sender<AgentDone>,
    runner: agents::FenceAgentRunner,
    log: VecDeque<LogLine>,
    leaving: bool,
    /// A clean leave was asked for: (remove, give up waiting for services at).
    leave_requested: Option<(bool, Instant)>,
    /// The clean-leave announcement went out; leave once it comes back ordered.
    leave_announced: bool,
    leave_delivered: bool,
    qdisk: Option<qdisk::QdiskHandle>,
    self_fence: Option<String>,
    rm: crate::rmglue::RmReplica,
    services: std::sync::Arc<dyn ServiceRunner>,
    service_tx: mpsc::Sender<ServiceDone>,
    /// Services with an operation running here (one at a time per service).
    running_ops: BTreeMap<String, rm::OpId>,
    /// Vms this node is preparing to receive (migration targets).
    incoming: std::collections::BTreeSet<String>,
    confsync: confsync::ConfigSync,
    config_path: PathBuf,
    /// `config push` requests waiting for their outcome, by ticket.
    pushes: BTreeMap<u64, tokio::sync::oneshot::Sender<Response>>,
    tick_sent_for: Option<Instant>,
}

/// The resource manager stamps its messages with agreed wall-clock times
/// written `t+SECONDS.MILLISs`; show them as UTC times of day.
fn wall_times(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("t+") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let end = tail
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(tail.len());
        let secs = tail[..end]
            .parse::<f64>()
            .ok()
            .filter(|_| tail[end..].starts_with('s'));
        match secs {
            // Before any ordered message the agreed clock still reads zero.
            Some(s) if s < 1e9 => {
                out.push_str("start-up");
                rest = &tail[end + 1..];
            }
            Some(s) => {
                let t = s as u64;
                out.push_str(&format!(
                    "{:02}:{:02}:{:02} UTC",
                    (t / 3600) % 24,
                    (t / 60) % 60,
                    t % 60
                ));
                rest = &tail[end + 1..];
            }
            None => {
                out.push_str("t+");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Node {
    fn name_of(&self, id: NodeId) -> String {
        self.plan
            .peers
            .get(&id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("node{}", id.0))
    }

    fn note(&mut self, text: String) {
        tracing::info!("{text}");
        if self.log.len() >= EVENT_LOG {
            self.log.pop_front();
        }
        self.log.push_back(LogLine { at: wall(), text });
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The earliest deadline of any core.
    fn deadline(&self) -> Option<Instant> {
        [
            self.totem.poll_deadline(),
            self.quorum.poll_deadline(),
            self.fence.poll_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timeout(&mut self) {
        let now = self.now();
        self.totem.handle_timeout(now);
        self.quorum.handle_timeout(now);
        self.fence.handle_timeout(now);
        let wall_now = Instant(wall_ns());
        self.rm.scheduler().handle_timeout(wall_now);
        // The lowest member asks every replica to re-check expired failures.
        let due = self.rm.scheduler_ref().recheck_due();
        if let Some(due) = due {
            if due <= wall_now
                && self.rm.scheduler_ref().tick_sender() == Some(self.plan.me)
                && self.tick_sent_for != Some(due)
            {
                self.tick_sent_for = Some(due);
                self.send_rm_input(rm::Input::Tick);
            }
        }
    }

    /// Multicast a resource-manager input, stamped with this node's clock.
    fn send_rm_input(&mut self, input: rm::Input) {
        let msg = crate::rmglue::RmMsg::Input {
            at_ns: wall_ns(),
            input,
        };
        self.multicast(TAG_RM, msg.encode());
    }

    fn on_datagram(&mut self, d: Datagram) {
        let from = self.by_addr.get(&d.from).copied();
        let now = self.now();
        self.totem.handle_packet(now, d.ring, from, &d.bytes);
    }

    fn multicast(&mut self, tag: u8, body: Vec<u8>) {
        let now = self.now();
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(tag);
        payload.extend_from_slice(&body);
        if let Err(e) = self.totem.handle_command(
            now,
            totem::Command::Multicast {
                payload,
                safe: false,
            },
        ) {
            tracing::warn!(tag, error = %e, "cannot multicast");
        }
    }

    /// Drain every core until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.totem.poll_transmit() {
                if let Some(addr) = self
                    .plan
                    .peers
                    .get(&t.to)
                    .and_then(|p| p.addrs.get(usize::from(t.ring)))
                {
                    self.rings.try_send(t.ring, *addr, &t.bytes);
                }
            }
            while let Some(ev) = self.totem.poll_event() {
                moved = true;
                self.on_totem_event(ev);
            }
            while let Some(m) = self.quorum.poll_message() {
                moved = true;
                self.multicast(TAG_QUORUM, m.encode());
            }
            while let Some(ev) = self.quorum.poll_event() {
                moved = true;
                self.on_quorum_event(ev);
            }
            self.sync_fence_view();
            while let Some(a) = self.fence.poll_action() {
                moved = true;
                self.on_fence_action(a);
            }
            while let Some(ev) = self.fence.poll_event() {
                moved = true;
                if let fence::Event::Fenced {
                    victim,
                    method,
                    device,
                    ..
                } = &ev
                {
                    self.rm
                        .handle_fenced(*victim, format!("{method} ({device})"));
                }
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
                self.note(format!("rm: {}", wall_times(&ev.message)));
            }
            if !moved {
                return;
            }
        }
    }

    fn on_totem_event(&mut self, ev: totem::Event) {
        let now = self.now();
        match ev {
            totem::Event::ConfigurationChange(c) => {
                if c.transitional {
                    return;
                }
                let joined: Vec<String> = c.joined.iter().map(|n| self.name_of(*n)).collect();
                let left: Vec<String> = c.left.iter().map(|n| self.name_of(*n)).collect();
                for j in &c.joined {
                    self.joined_at.insert(*j, SystemTime::now());
                }
                for l in &c.left {
                    self.joined_at.remove(l);
                }
                self.note(format!(
                    "membership: ring {}/{} members [{}]{}{}",
                    c.ring_id.rep.0,
                    c.ring_id.seq,
                    c.members
                        .iter()
                        .map(|n| self.name_of(*n))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if joined.is_empty() {
                        String::new()
                    } else {
                        format!(", joined {}", joined.join(", "))
                    },
                    if left.is_empty() {
                        String::new()
                    } else {
                        format!(", lost {}", left.join(", "))
                    },
                ));
                self.members = c.members.clone();
                self.ring_id = Some(c.ring_id);
                if let Some(q) = &self.qdisk {
                    q.set_membership(c.members.clone());
                }
                let votes = self.plan.quorum.nodes.clone();
                let ring = (c.ring_id.seq << 16) ^ u64::from(c.ring_id.rep.0);
                self.quorum.handle_membership(
                    now,
                    quorum::Membership {
                        ring_id: ring,
                        members: c
                            .members
                            .iter()
                            .map(|n| (*n, votes.get(n).copied().unwrap_or(1)))
                            .collect(),
                    },
                );
                // The resource manager learns the membership with the quorum
                // that holds at this point of the order.
                let quorate = self.quorum.is_quorate();
                self.rm.handle_membership(ring, c.members.clone(), quorate);
                self.confsync
                    .handle_membership(now, ring, &c.members, &c.joined);
                self.feed_confsync_quorum();
            }
            totem::Event::Deliver(d) => {
                let (tag, body) = match d.payload.split_first() {
                    Some((t, b)) => (*t, b),
                    None => return,
                };
                match tag {
                    TAG_QUORUM => match quorum::QuorumMsg::decode(body) {
                        Ok(m) => {
                            self.quorum.handle_message(now, d.sender, m);
                            self.feed_confsync_quorum();
                        }
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping quorum message")
                        }
                    },
                    TAG_FENCE => match fence::FenceOutcome::decode(body) {
                        Ok(o) => self.fence.handle_fence_outcome(now, o),
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping fence message")
                        }
                    },
                    TAG_LOAD => self.load_rx.deliver(body),
                    TAG_LEAVING => {
                        self.fence.handle_clean_leave(d.sender);
                        if d.sender == self.plan.me {
                            self.leave_delivered = true;
                        }
                    }
                    TAG_CONFSYNC => match confsync::ConfSyncMsg::decode(body) {
                        Ok(m) => self.confsync.handle_message(now, d.sender, m),
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping config message")
                        }
                    },
                    TAG_RM => match crate::rmglue::RmMsg::decode(body) {
                        Ok(m) => {
                            let quorate = self.quorum.is_quorate();
                            self.rm.handle_message(d.sender, m, quorate)
                        }
                        Err(e) => {
                            tracing::warn!(from = d.sender.0, error = %e, "dropping rm message")
                        }
                    },
                    other => {
                        tracing::debug!(tag = other, "message for a layer this node does not run")
                    }
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
                self.persisted.ring_seq = self.persisted.ring_seq.max(seq);
                if let Err(e) = save_persisted(&self.state_dir, self.persisted) {
                    tracing::error!(error = %e, "cannot persist the ring sequence");
                }
            }
        }
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

    /// Drain the quorum disk's events (its thread runs on its own clock).
    fn poll_qdisk(&mut self) {
        let mut events = Vec::new();
        if let Some(q) = &self.qdisk {
            while let Ok(ev) = q.events().try_recv() {
                events.push(ev);
            }
        }
        let now = self.now();
        for ev in events {
            match ev {
                qdisk::DriverEvent::Qdisk(quorum::QdiskEvent::Availability { master, reason }) => {
                    self.note(format!("qdisk: {reason}"));
                    self.quorum.set_qdisk(now, master);
                }
                qdisk::DriverEvent::Qdisk(other) => tracing::info!("qdisk: {other:?}"),
                qdisk::DriverEvent::SelfFence { reason } => {
                    self.note(format!("qdisk: SELF-FENCE: {reason}"));
                    self.self_fence = Some(reason);
                }
            }
        }
        self.pump();
    }

    /// Tell the fence domain about membership and quorum whenever either changed.
    fn sync_fence_view(&mut self) {
        let view = (self.members.clone(), self.quorum.is_quorate());
        if self.members.is_empty() || self.fence_view.as_ref() == Some(&view) {
            return;
        }
        self.fence_view = Some(view.clone());
        let now = self.now();
        self.fence.handle_membership(
            now,
            fence::Membership {
                members: view.0.into_iter().collect(),
                quorate: view.1,
            },
        );
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
                let runner = self.runner.clone();
                let tx = self.agent_tx.clone();
                tokio::spawn(async move {
                    let result = runner.run_for_domain(&run).await;
                    let _ = tx
                        .send(AgentDone {
                            run_id: run.run_id,
                            result,
                        })
                        .await;
                });
            }
            fence::Action::Broadcast(outcome) => {
                self.multicast(TAG_FENCE, outcome.encode());
            }
        }
    }

    /// Start a clean leave: services move off first (rgmanager's shutdown),
    /// then the node leaves the ring without being fenced.
    fn begin_leave(&mut self, remove: bool) {
        if self.leave_requested.is_some() {
            return;
        }
        let wait = base::Duration::from_secs(LEAVE_WAIT_SECS);
        self.leave_requested = Some((remove, self.now() + wait));
        self.note(format!(
            "leaving the cluster{}: moving this node's services away first (at most {LEAVE_WAIT_SECS} s)",
            if remove { " (remove: expected votes lowered)" } else { "" }
        ));
        let me = self.plan.me;
        self.send_rm_input(rm::Input::Leave { node: me });
    }

    /// Leave once nothing runs here any more (or the wait is over).
    fn try_finish_leave(&mut self) {
        let Some((remove, give_up)) = self.leave_requested else {
            return;
        };
        let now = self.now();
        let ready =
            self.rm.scheduler_ref().ready_to_leave(self.plan.me) && self.running_ops.is_empty();
        if !ready && now < give_up && self.quorum.is_quorate() {
            return;
        }
        if !ready {
            self.note(
                "leaving with services still here: the wait is over or quorum is gone".to_string(),
            );
        }
        if !self.leave_announced && self.members.len() > 1 {
            // Tell the fence domain first, in order, so nobody fences us; we
            // leave when our own announcement is delivered back to us.
            self.leave_announced = true;
            self.multicast(TAG_LEAVING, Vec::new());
            return;
        }
        if self.leave_announced && !self.leave_delivered {
            return;
        }
        self.quorum.leave(now, remove);
        self.pump();
        let _ = self.totem.handle_command(now, totem::Command::Leave);
        self.leaving = true;
        self.note("left the cluster".to_string());
    }

    /// Offer due benchmark messages to totem until its send queue is full.
    fn pump_load(&mut self) {
        let now = self.now();
        for _ in 0..self.load_tx.due() {
            let mut payload = vec![TAG_LOAD];
            payload.extend_from_slice(&self.load_tx.next_body());
            match self.totem.handle_command(
                now,
                totem::Command::Multicast {
                    payload,
                    safe: false,
                },
            ) {
                Ok(()) => self.load_tx.accepted(),
                Err(_) => break, // queue full: retry after the next event
            }
        }
    }

    /// The config distribution needs the quorum every member agrees on.
    fn feed_confsync_quorum(&mut self) {
        let settled = self.quorum.is_quorate() && !self.quorum.is_syncing();
        let now = self.now();
        self.confsync.handle_quorum(now, settled);
    }

    fn on_confsync_action(&mut self, a: confsync::Action) {
        let confsync::Action::WriteConfig { text, version, .. } = a;
        if let Err(e) = confsync::files::write_atomic(&self.config_path, &text) {
            let now = self.now();
            self.note(format!(
                "config: cannot write config_version {version} to {}: {e}",
                self.config_path.display()
            ));
            self.confsync
                .handle_write_failed(now, version, &e.to_string());
        }
        // Every member adopts it at this same point of the order: apply it.
        let conf = self.confsync.config().clone();
        let now = self.now();
        match crate::plan::fence_config(&conf) {
            Ok(f) => self.fence.set_config(now, f),
            Err(e) => tracing::warn!("config_version {version}: fencing unchanged: {e}"),
        }
        self.rm.handle_config(crate::plan::rm_spec(&conf));
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
                    if let Some(reply) = self.pushes.remove(&ticket.0) {
                        let r = match outcome {
                            confsync::PushOutcome::Applied { version } => {
                                Response::ok(json!({"applied": true, "config_version": version}))
                            }
                            confsync::PushOutcome::Refused { reason } => Response::refused(
                                reason.clone(),
                                "fix it and push again with a higher config_version",
                            ),
                        };
                        let _ = reply.send(r);
                    }
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

    /// `quorate config push`: answered when the push is decided.
    fn config_push(&mut self, req: &Request, reply: tokio::sync::oneshot::Sender<Response>) {
        let text = req
            .args
            .get("text")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let now = self.now();
        match self.confsync.push(now, text) {
            Ok(ticket) => {
                self.pushes.insert(ticket.0, reply);
            }
            Err(e) => {
                let _ = reply.send(Response::refused(
                    e.to_string(),
                    "`quorate config validate FILE` checks a file",
                ));
            }
        }
    }

    fn check_drift(&mut self) {
        match confsync::files::check_drift(&self.config_path) {
            Ok(text) => {
                let now = self.now();
                self.confsync.handle_local_file(now, &text);
            }
            Err(e) => tracing::warn!("cannot read {}: {e}", self.config_path.display()),
        }
        self.pump();
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
            let fut = self.services.prepare_incoming(name.clone(), resources);
            tokio::spawn(async move {
                if let Err(e) = fut.await {
                    tracing::warn!(service = %name, "cannot prepare the incoming migration: {e}");
                }
            });
        }
    }

    fn run_service_action(&mut self, action: rm::Action) {
        let service = action.service().to_string();
        let op = match &action {
            rm::Action::StartService { op, .. }
            | rm::Action::StopService { op, .. }
            | rm::Action::StatusCheck { op, .. }
            | rm::Action::Migrate { op, .. } => *op,
        };
        if matches!(action, rm::Action::StatusCheck { .. })
            && self.running_ops.contains_key(&service)
        {
            return; // a start/stop is running: the check would race it
        }
        let verb = match &action {
            rm::Action::StartService { .. } => "starting",
            rm::Action::StopService { .. } => "stopping",
            rm::Action::StatusCheck { .. } => "checking",
            rm::Action::Migrate { .. } => "migrating",
        };
        if !matches!(action, rm::Action::StatusCheck { .. }) {
            self.note(format!("rm: {verb} {service} here (op {op})"));
            self.running_ops.insert(service.clone(), op);
        }
        let runner = self.services.clone();
        let tx = self.service_tx.clone();
        tokio::spawn(async move {
            let outcome = runner.run(action).await;
            let _ = tx
                .send(ServiceDone {
                    service,
                    op,
                    outcome,
                })
                .await;
        });
    }

    fn on_service_done(&mut self, d: ServiceDone) {
        if self.running_ops.get(&d.service) == Some(&d.op) {
            self.running_ops.remove(&d.service);
        }
        if let Some(outcome) = d.outcome {
            self.note(format!(
                "rm: {} op {} finished here: {outcome:?}",
                d.service, d.op
            ));
            let report = rm::Report {
                node: self.plan.me,
                service: d.service,
                op: d.op,
                outcome,
            };
            self.send_rm_input(rm::Input::Result(report));
        }
    }

    /// Check an operator request against a copy of the replica, so a refusal
    /// comes back at once with its reason; accepted requests are multicast.
    fn submit_request(&mut self, request: rm::Request) -> Response {
        if self.rm.syncing() {
            return Response::refused(
                "the resource manager is synchronising after a membership change",
                "retry in a moment",
            );
        }
        let mut scratch = rm::Scheduler::from_snapshot(
            self.plan.me,
            self.rm.scheduler_ref().snapshot(),
            self.rm.agreed(),
        );
        let at = Instant(wall_ns()).max(self.rm.agreed());
        if let Err(e) = scratch.handle(
            at,
            rm::Input::Request {
                from: self.plan.me,
                request: request.clone(),
            },
        ) {
            return Response::refused(e.to_string(), "see `quorate status` for why");
        }
        let service = request.service().to_string();
        self.send_rm_input(rm::Input::Request {
            from: self.plan.me,
            request,
        });
        Response::ok(json!({"service": service, "submitted": true}))
    }

    fn svc_request(&mut self, req: &Request) -> Response {
        let service = req
            .args
            .get("service")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let node = match req.args.get("node").and_then(|v| v.as_str()) {
            None => None,
            Some(_) => match self.node_id_arg(req) {
                Ok(id) => Some(id),
                Err(r) => return r,
            },
        };
        let request = match req.cmd.as_str() {
            "svc.enable" => rm::Request::Enable { service, node },
            "svc.disable" => rm::Request::Disable { service },
            "svc.relocate" => rm::Request::Relocate { service, node },
            "svc.restart" => rm::Request::Restart { service },
            "svc.stop" => rm::Request::Stop { service },
            "svc.freeze" => rm::Request::Freeze { service },
            "svc.unfreeze" => rm::Request::Unfreeze { service },
            "svc.migrate" => match node {
                Some(node) => rm::Request::Migrate { service, node },
                None => {
                    return Response::refused(
                        "migrate needs a target node",
                        "quorate svc migrate NAME -m NODE",
                    )
                }
            },
            other => {
                return Response::refused(
                    format!("unknown command {other:?}"),
                    "see `quorate svc --help`",
                )
            }
        };
        self.submit_request(request)
    }

    fn services_json(&self) -> serde_json::Value {
        let view = self.rm.view();
        json!(view
            .services
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["owner_name"] = json!(s.owner.map(|n| self.name_of(n)));
                v["last_owner_name"] = json!(s.last_owner.map(|n| self.name_of(n)));
                v["reason"] = json!(wall_times(&s.reason));
                v
            })
            .collect::<Vec<_>>())
    }

    fn on_agent_done(&mut self, d: AgentDone) {
        let now = self.now();
        self.fence.handle_agent_result(now, d.run_id, d.result);
    }

    fn node_id_arg(&self, req: &Request) -> Result<NodeId, Response> {
        let name = req
            .args
            .get("node")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        self.plan
            .peers
            .values()
            .find(|p| p.name == name || p.id.0.to_string() == name)
            .map(|p| p.id)
            .ok_or_else(|| {
                Response::refused(
                    format!("{name:?} is not a node of this cluster"),
                    format!(
                        "use one of: {}",
                        self.plan
                            .peers
                            .values()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    fn members_json(&self) -> serde_json::Value {
        let members: Vec<serde_json::Value> = self
            .plan
            .peers
            .values()
            .map(|p| {
                json!({
                    "name": p.name,
                    "nodeid": p.id.0,
                    "online": self.members.contains(&p.id),
                    "local": p.id == self.plan.me,
                    "votes": self.plan.quorum.nodes.get(&p.id).copied().unwrap_or(1),
                    "joined": self.joined_at.get(&p.id)
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs()),
                    "addresses": p.addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
                    "fenced": self.fence.is_fenced(p.id),
                })
            })
            .collect();
        json!(members)
    }

    fn status_json(&self) -> serde_json::Value {
        let q = self.quorum.status();
        json!({
            "cluster_name": self.conf.name,
            "config_version": self.conf.config_version,
            "node": self.name_of(self.plan.me),
            "nodeid": self.plan.me.0,
            "quorate": q.quorate,
            "quorum_reason": q.reason,
            "ring_id": self.ring_id.map(|r| format!("{}/{}", r.rep.0, r.seq)),
            "members": self.members_json(),
            "services": self.services_json(),
            "rm_syncing": self.rm.syncing(),
            "fence_blocked": self.fence.blocked().iter().map(|n| self.name_of(*n)).collect::<Vec<_>>(),
            "events": self.log.iter().rev().take(20).collect::<Vec<_>>(),
        })
    }

    fn handle_request(&mut self, req: &Request) -> Response {
        let now = self.now();
        match req.cmd.as_str() {
            "status" => Response::ok(self.status_json()),
            "quorum" => {
                let q = self.quorum.status();
                Response::ok(json!({"quorate": q.quorate, "reason": q.reason}))
            }
            "totem.status" => {
                let s = self.totem.status();
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["members"] = json!(s
                    .members
                    .iter()
                    .map(|n| json!({"nodeid": n.0, "name": self.name_of(*n)}))
                    .collect::<Vec<_>>());
                v["rings"] = json!(self.plan.rings);
                Response::ok(v)
            }
            "cman.status" => {
                let q = self.quorum.status();
                let mut v = serde_json::to_value(&q).unwrap_or_default();
                v["cluster_name"] = json!(self.conf.name);
                v["cluster_id"] = json!(*self.conf.cman.cluster_id.get());
                v["config_version"] = json!(self.conf.config_version);
                v["node_name"] = json!(self.name_of(self.plan.me));
                v["node_addresses"] = json!(self.plan.peers[&self.plan.me]
                    .addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>());
                v["port"] = json!(*self.conf.cman.port.get());
                Response::ok(v)
            }
            "cman.nodes" => Response::ok(self.members_json()),
            "cman.expected" => {
                let Some(e) = req.args.get("votes").and_then(|v| v.as_u64()) else {
                    return Response::refused("missing votes", "quorate cman expected VOTES");
                };
                match self
                    .quorum
                    .set_expected(now, u32::try_from(e).unwrap_or(u32::MAX))
                {
                    Ok(()) => Response::ok(json!({"expected_votes": e})),
                    Err(err) => Response::refused(
                        err.to_string(),
                        "see `quorate cman status` for the votes present",
                    ),
                }
            }
            "cman.leave" => {
                let remove = req
                    .args
                    .get("remove")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                self.begin_leave(remove);
                Response::ok(json!({"leaving": true}))
            }
            "fence.status" => {
                let mut v = serde_json::to_value(self.fence.status()).unwrap_or_default();
                v["names"] = json!(self
                    .plan
                    .peers
                    .values()
                    .map(|p| (p.id.0.to_string(), p.name.clone()))
                    .collect::<BTreeMap<_, _>>());
                Response::ok(v)
            }
            "fence.node" | "fence.ack" | "fence.unfence" => {
                let id = match self.node_id_arg(req) {
                    Ok(id) => id,
                    Err(r) => return r,
                };
                let r = match req.cmd.as_str() {
                    "fence.node" => self.fence.fence_node(now, id),
                    "fence.ack" => self.fence.ack_manual(now, id),
                    _ => self.fence.unfence(now, id),
                };
                match r {
                    Ok(()) => Response::ok(json!({"node": self.name_of(id)})),
                    Err(e) => Response::refused(e.to_string(), "see `quorate fence status`"),
                }
            }
            "log" => Response::ok(json!(self.log)),
            "load.start" => {
                let count = req.args.get("count").and_then(|v| v.as_u64()).unwrap_or(0);
                let size = req
                    .args
                    .get("size")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(1024) as usize;
                let rate = req.args.get("rate").and_then(|v| v.as_u64()).unwrap_or(0);
                if size > 60 * 1024 {
                    return Response::refused("message size above 60 KiB", "use a smaller --size");
                }
                self.load_tx.start(count, size, rate);
                self.pump_load();
                Response::ok(json!({"count": count, "size": size, "rate": rate}))
            }
            "load.stats" => Response::ok(self.load_rx.stats()),
            "load.reset" => {
                self.load_rx.reset();
                Response::ok(json!({}))
            }
            "config.status" => {
                Response::ok(serde_json::to_value(self.confsync.status()).unwrap_or_default())
            }
            cmd if cmd.starts_with("svc.") => self.svc_request(req),
            other => {
                Response::refused(format!("unknown command {other:?}"), "see `quorate --help`")
            }
        }
    }
}

fn describe_fence_event(ev: &fence::Event, name: impl Fn(NodeId) -> String) -> String {
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

/// Run a node until `shutdown` resolves or an admin asks it to leave.
///
/// `services` carries out resource actions (start, stop, check, migrate).
/// `shutdown` resolving starts a clean leave (services move away first).
pub async fn run(
    opts: NodeOptions,
    services: std::sync::Arc<dyn ServiceRunner>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let conf = load_config(&opts.config_path)?;
    let me_name = local_node_name(&conf, opts.node.as_deref())?;
    let plan = make_plan(&conf, &me_name)?;
    let text = std::fs::read_to_string(&opts.config_path).map_err(|e| {
        NodeError::Load(config::LoadError::Io {
            path: opts.config_path.clone(),
            source: e,
        })
    })?;
    let confsync = confsync::ConfigSync::new(plan.me, text).map_err(|e| NodeError::Invalid {
        path: opts.config_path.display().to_string(),
        errors: e.to_string(),
    })?;
    std::fs::create_dir_all(&opts.state_dir).map_err(|source| NodeError::State {
        path: opts.state_dir.clone(),
        source,
    })?;
    let mut persisted = load_persisted(&opts.state_dir);
    persisted.epoch += 1;
    save_persisted(&opts.state_dir, persisted)?;

    let clock = MonotonicClock::new();
    let mut tcfg = plan.totem.clone();
    tcfg.key = cluster_key(&conf)?;
    tcfg.epoch = persisted.epoch;
    tcfg.initial_ring_seq = persisted.ring_seq;
    let mut totem = totem::TotemNode::new(tcfg, clock.now())?;
    for g in GROUPS {
        let _ = totem.handle_command(
            clock.now(),
            totem::Command::CpgJoin {
                group: g.to_string(),
            },
        );
    }
    let quorum = quorum::VoteQuorum::new(plan.me, plan.quorum.clone())?;
    let fence = fence::FenceDomain::new(plan.me, plan.fence.clone());
    let rm = crate::rmglue::RmReplica::new(plan.me, crate::plan::rm_spec(&conf)).map_err(|e| {
        NodeError::Invalid {
            path: opts.config_path.display().to_string(),
            errors: e.to_string(),
        }
    })?;
    let (service_tx, mut service_rx) = mpsc::channel::<ServiceDone>(64);

    let ipc = IpcServer::bind(&opts.state_dir)?;
    let (ipc_tx, mut ipc_rx) = mpsc::channel::<Pending>(64);
    tokio::spawn(ipc.serve(ipc_tx));
    let (udp_tx, mut udp_rx) = mpsc::channel::<Datagram>(4096);
    let my_addrs = plan.peers[&plan.me].addrs.clone();
    let rings = Rings::bind(&my_addrs, udp_tx).await?;
    let (agent_tx, mut agent_rx) = mpsc::channel::<AgentDone>(64);

    let by_addr = plan
        .peers
        .values()
        .flat_map(|p| p.addrs.iter().map(move |a| (*a, p.id)))
        .collect();
    let mut node = Node {
        load_tx: crate::load::Generator::default(),
        load_rx: crate::load::Receiver::default(),
        clock,
        conf,
        plan,
        state_dir: opts.state_dir.clone(),
        persisted,
        totem,
        quorum,
        fence,
        rings,
        by_addr,
        members: Vec::new(),
        ring_id: None,
        fence_view: None,
        joined_at: BTreeMap::new(),
        agent_tx,
        runner: agents::FenceAgentRunner::default(),
        log: VecDeque::new(),
        leaving: false,
        leave_requested: None,
        leave_announced: false,
        leave_delivered: false,
        qdisk: None,
        self_fence: None,
        rm,
        services,
        service_tx,
        running_ops: BTreeMap::new(),
        incoming: std::collections::BTreeSet::new(),
        confsync,
        config_path: opts.config_path.clone(),
        pushes: BTreeMap::new(),
        tick_sent_for: None,
    };
    if let Some((device, cfg)) = node.plan.qdisk.clone() {
        let handle = qdisk::QdiskHandle::spawn(
            &device,
            node.plan.me,
            qdisk::fresh_incarnation(),
            cfg,
            qdisk::DriverOptions::default(),
        )
        .map_err(|e| NodeError::Qdisk(device.display().to_string(), e.to_string()))?;
        node.note(format!("qdisk: using {}", device.display()));
        node.qdisk = Some(handle);
    }
    node.note(format!(
        "{} (node {}) starting in cluster {} config_version {} on {}",
        me_name,
        node.plan.me.0,
        node.conf.name,
        node.conf.config_version,
        my_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    ));
    node.pump();

    tokio::pin!(shutdown);
    let mut qdisk_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut drift_tick = tokio::time::interval(DRIFT_POLL);
    let mut load_tick = tokio::time::interval(std::time::Duration::from_millis(1));
    loop {
        let deadline = node
            .deadline()
            .map(|d| tokio::time::Instant::from_std(node.clock.to_std(d)));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            Some(d) = udp_rx.recv() => node.on_datagram(d),
            Some(p) = ipc_rx.recv() => {
                if p.request.cmd == "config.push" {
                    node.config_push(&p.request, p.reply);
                } else {
                    let r = node.handle_request(&p.request);
                    let _ = p.reply.send(r);
                }
            }
            _ = drift_tick.tick() => node.check_drift(),
            _ = load_tick.tick(), if node.load_tx.active() => {}
            Some(d) = agent_rx.recv() => node.on_agent_done(d),
            Some(d) = service_rx.recv() => node.on_service_done(d),
            _ = qdisk_tick.tick(), if node.qdisk.is_some() => node.poll_qdisk(),
            _ = sleep => node.on_timeout(),
            _ = &mut shutdown, if node.leave_requested.is_none() => node.begin_leave(false),
        }
        if node.load_tx.active() {
            node.pump_load();
        }
        node.pump();
        node.try_finish_leave();
        if let Some(reason) = node.self_fence.take() {
            // Stop at once, without a clean leave: the others must see this
            // node fail. Under systemd, FailureAction=reboot completes the fence.
            if let Some(q) = node.qdisk.take() {
                q.stop();
            }
            return Err(NodeError::SelfFenced(reason));
        }
        if node.leaving {
            // Give the leave message a moment to reach the wire.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreed_times_read_as_times_of_day() {
        assert_eq!(
            wall_times("n1 fenced by power at t+1795624760.372s; done"),
            "n1 fenced by power at 16:39:20 UTC; done"
        );
        assert_eq!(
            wall_times("quorum regained at t+0.000s"),
            "quorum regained at start-up"
        );
        assert_eq!(wall_times("no time t+here"), "no time t+here");
    }

    #[test]
    fn name_derived_key_is_stable_and_distinct() {
        let a = key_from_name("an-cluster");
        assert_eq!(a, key_from_name("an-cluster"));
        assert_ne!(a, key_from_name("other"));
        assert!(totem::ClusterKey::from_authkey(&a).is_ok());
    }

    #[test]
    fn persisted_state_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_persisted(dir.path()).epoch, 0);
        save_persisted(
            dir.path(),
            Persisted {
                epoch: 3,
                ring_seq: 40,
            },
        )
        .unwrap();
        let p = load_persisted(dir.path());
        assert_eq!((p.epoch, p.ring_seq), (3, 40));
        assert!(!dir.path().join("totem.tmp").exists());
    }
}
