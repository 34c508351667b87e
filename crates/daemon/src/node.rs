//! The node daemon: one event loop around one node's [`stack::Stack`].
//!
//! The stack decides everything (it holds totem, quorum, fencing, the
//! resource manager and the config distribution, wired together without I/O);
//! this loop owns what the stack cannot: the UDP rings, the admin socket, the
//! clocks, fence agent and resource agent runs, the quorum disk's thread, the
//! config file and the persisted ring sequence. Each input is handed to the
//! stack, then the stack's outputs are carried out: packets to the rings,
//! [`stack::Action`]s to tasks, notes to the event log.
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
use stack::{Now, Refusal, Stack};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::sync::mpsc;

pub use stack::{GROUPS, TAG_CONFSYNC, TAG_FENCE, TAG_LEAVING, TAG_LOAD, TAG_QUORUM, TAG_RM};

/// How often the config file is checked for hand edits.
const DRIFT_POLL: std::time::Duration = std::time::Duration::from_secs(5);
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
    /// The protocol stack refused its configuration.
    #[error(transparent)]
    Stack(#[from] stack::StackError),
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
    /// A replicated volume could not be set up.
    #[error(transparent)]
    Replica(#[from] crate::replicas::SetupError),
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

    /// A future that resolves, with the reason, when `service`'s resources
    /// fail here by themselves (a vm's QEMU exits or its kernel panics);
    /// `None` when nothing of it can be watched. The daemon arms it after a
    /// start or a passing status check and runs a status check at once when
    /// it resolves, instead of waiting for the next status interval.
    fn watch(
        &self,
        _service: &str,
        _resources: &[rm::ResourceStep],
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'static>>> {
        None
    }

    /// What only this node knows about `service` (a vm it runs here: the
    /// accelerator and why, a migration's progress), merged into its entry
    /// of `status` as `local`; `None` when there is nothing.
    fn local_info(&self, _service: &str) -> Option<serde_json::Value> {
        None
    }
}

/// A watched service failed by itself (see [`ServiceRunner::watch`]).
#[derive(Debug)]
struct WatchFired {
    service: String,
    reason: String,
}

/// A finished resource action.
#[derive(Debug)]
struct ServiceDone {
    service: String,
    op: rm::OpId,
    outcome: Option<rm::Outcome>,
    /// The service runs here now (a start or a status check passed): its
    /// resources, to watch.
    running: Option<Vec<rm::ResourceStep>>,
}

/// A line of the node's event log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogLine {
    /// Wall-clock time, seconds since the epoch (display only).
    pub at: f64,
    /// What happened, in words.
    pub text: String,
}

/// One running node: the stack and the resources its actions need.
pub struct Node {
    load_tx: crate::load::Generator,
    load_rx: crate::load::Receiver,
    clock: MonotonicClock,
    stack: Stack,
    state_dir: PathBuf,
    persisted: Persisted,
    rings: Rings,
    by_addr: BTreeMap<SocketAddr, NodeId>,
    agent_tx: mpsc::Sender<AgentDone>,
    runner: agents::FenceAgentRunner,
    log: VecDeque<LogLine>,
    leaving: bool,
    qdisk: Option<qdisk::QdiskHandle>,
    self_fence: Option<String>,
    services: std::sync::Arc<dyn ServiceRunner>,
    service_tx: mpsc::Sender<ServiceDone>,
    /// Services whose resources are being watched here.
    watching: std::collections::BTreeSet<String>,
    watch_tx: mpsc::Sender<WatchFired>,
    config_path: PathBuf,
    /// `config push` requests waiting for their outcome, by ticket.
    pushes: BTreeMap<u64, tokio::sync::oneshot::Sender<Response>>,
    /// This node's replicated volumes.
    replicas: crate::replicas::Replicas,
    /// Volumes waiting for their peer to be fenced: name -> (since, fencing requested by us).
    fence_waits: BTreeMap<String, (std::time::Instant, bool)>,
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
    fn now(&self) -> Now {
        Now {
            mono: self.clock.now(),
            wall: Instant(wall_ns()),
        }
    }

    fn plan(&self) -> &NodePlan {
        self.stack.plan()
    }

    fn name_of(&self, id: NodeId) -> String {
        self.stack.name_of(id)
    }

    fn note(&mut self, text: String) {
        tracing::info!("{text}");
        if self.log.len() >= EVENT_LOG {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            at: wall(),
            text: wall_times(&text),
        });
    }

    fn on_timeout(&mut self) {
        let now = self.now();
        self.stack.handle_timeout(now);
    }

    fn on_datagram(&mut self, d: Datagram) {
        let from = self.by_addr.get(&d.from).copied();
        let now = self.now();
        self.stack.handle_packet(now, d.ring, from, &d.bytes);
    }

    /// Carry out everything the stack asked for (an action may feed the
    /// stack again, a failed config write for one: loop until quiet).
    fn drain(&mut self) {
        loop {
            while let Some(t) = self.stack.poll_transmit() {
                if let Some(addr) = self
                    .stack
                    .plan()
                    .peers
                    .get(&t.to)
                    .and_then(|p| p.addrs.get(usize::from(t.ring)))
                {
                    self.rings.try_send(t.ring, *addr, &t.bytes);
                }
            }
            while let Some(text) = self.stack.poll_note() {
                // The stack logged it through tracing already.
                if self.log.len() >= EVENT_LOG {
                    self.log.pop_front();
                }
                self.log.push_back(LogLine {
                    at: wall(),
                    text: wall_times(&text),
                });
            }
            let Some(a) = self.stack.poll_action() else {
                return;
            };
            self.on_action(a);
        }
    }

    fn on_action(&mut self, a: stack::Action) {
        match a {
            stack::Action::RunFenceAgent(run) => {
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
            stack::Action::RunService(action) => {
                let service = action.service().to_string();
                let op = action.op();
                let runner = self.services.clone();
                let tx = self.service_tx.clone();
                tokio::spawn(async move {
                    let watchable = match &action {
                        rm::Action::StartService { resources, .. }
                        | rm::Action::StatusCheck { resources, .. }
                        | rm::Action::ConfirmIncoming { resources, .. } => Some(resources.clone()),
                        _ => None,
                    };
                    let outcome = runner.run(action).await;
                    let running = match outcome {
                        None | Some(rm::Outcome::StartOk | rm::Outcome::IncomingRunning) => {
                            watchable
                        }
                        _ => None,
                    };
                    let _ = tx
                        .send(ServiceDone {
                            service,
                            op,
                            outcome,
                            running,
                        })
                        .await;
                });
            }
            stack::Action::PrepareIncoming { service, resources } => {
                let fut = self.services.prepare_incoming(service.clone(), resources);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::warn!(service = %service, "cannot prepare the incoming migration: {e}");
                    }
                });
            }
            stack::Action::WriteConfig { text, version } => {
                if let Err(e) = confsync::files::write_atomic(&self.config_path, &text) {
                    let now = self.now();
                    let error = format!("{}: {e}", self.config_path.display());
                    self.stack.handle_write_failed(now, version, &error);
                }
            }
            stack::Action::PushResult { ticket, outcome } => {
                if let Some(reply) = self.pushes.remove(&ticket) {
                    let r = match outcome {
                        confsync::PushOutcome::Applied { version } => {
                            Response::ok(json!({"applied": true, "config_version": version}))
                        }
                        confsync::PushOutcome::Refused { reason } => Response::refused(
                            reason,
                            "fix it and push again with a higher config_version",
                        ),
                    };
                    let _ = reply.send(r);
                }
            }
            stack::Action::PersistRingSeq(seq) => {
                self.persisted.ring_seq = self.persisted.ring_seq.max(seq);
                if let Err(e) = save_persisted(&self.state_dir, self.persisted) {
                    tracing::error!(error = %e, "cannot persist the ring sequence");
                }
            }
            stack::Action::QdiskMembership(members) => {
                if let Some(q) = &self.qdisk {
                    q.set_membership(members);
                }
            }
            stack::Action::Deliver { tag, body, .. } => {
                if tag == TAG_LOAD {
                    self.load_rx.deliver(&body);
                } else {
                    tracing::debug!(tag, "message for a layer this node does not run");
                }
            }
            stack::Action::Left => {
                self.leaving = true;
            }
        }
    }

    /// An event of a replicated volume: the fence-peer request, or an engine event for the log.
    /// (The handshake's decision is worded by [`decision_text`].)
    fn on_replica_event(&mut self, name: String, ev: replica::VolumeEvent) {
        use replica::Event;
        match ev {
            replica::VolumeEvent::FencePeer => {
                self.fence_waits
                    .entry(name)
                    .or_insert((std::time::Instant::now(), false));
            }
            replica::VolumeEvent::Engine(e) => {
                let text = match e {
                    Event::Conn(c) => format!("connection {c:?}"),
                    Event::Disk(d) => format!("disk {d:?}"),
                    Event::Role(r) => format!("role {r:?}"),
                    Event::SplitBrain(r) => format!("SPLIT BRAIN: {r:?}"),
                    Event::ResyncStarted { source, bytes } => format!(
                        "resync started as {}: {bytes} bytes out of sync",
                        if source { "source" } else { "target" }
                    ),
                    Event::ResyncFinished => "resync finished".into(),
                    Event::Frozen => "I/O FROZEN: peer lost, waiting for it to be fenced".into(),
                    Event::Resumed => "I/O resumed".into(),
                    Event::PeerLost => "peer lost".into(),
                    Event::Decision(d) => decision_text(d).into(),
                    Event::Refused(why) => format!("connection refused: {why}"),
                    Event::VerifyMismatch { offset, len } => format!(
                        "verify: {len} bytes at offset {offset} differ from the peer (marked out of sync)"
                    ),
                    Event::VerifyFinished { out_of_sync } => {
                        format!("verify finished: {out_of_sync} bytes out of sync")
                    }
                };
                self.note(format!("replica {name}: {text}"));
            }
        }
    }

    /// Tell each volume whether its peer is a member, and answer fence-peer requests
    /// (resource-and-stonith): fenced by the cluster -> `PeerFenced`; still a member two token
    /// timeouts after its replication link went down (so not a crash totem is about to see)
    /// -> fence it, as DRBD's rhcs_fence handler does.
    fn replica_fencing(&mut self) {
        let token = u64::from(*self.stack.conf().totem.token.get());
        let grace = std::time::Duration::from_millis(2 * token);
        let members = self.stack.members().to_vec();
        for l in self.replicas.all() {
            l.set_peer_member(members.contains(&l.spec.peer));
        }
        let waits: Vec<(String, (std::time::Instant, bool))> =
            std::mem::take(&mut self.fence_waits).into_iter().collect();
        for (name, (since, requested)) in waits {
            let Some(l) = self.replicas.get(&name) else {
                continue;
            };
            let peer = l.spec.peer;
            if self.stack.fence().is_fenced(peer) {
                l.volume().fence_result(replica::FenceOutcome::PeerFenced);
                self.note(format!(
                    "replica {name}: {} is fenced; the volume may go on without it",
                    l.spec.peer_name
                ));
                continue;
            }
            // Not a member and not awaiting fencing: it left cleanly (a secondary that stops
            // beside a primary outdates its own disk first), or the fence domain was told the
            // absent nodes are clean (clean_start). A disk that is not UpToDate still cannot
            // be promoted.
            if !members.contains(&peer) && !self.stack.fence().blocked().contains(&peer) {
                l.volume().fence_result(replica::FenceOutcome::PeerOutdated);
                self.note(format!(
                    "replica {name}: {} left the cluster cleanly (its disk is Outdated); the volume goes on without it",
                    l.spec.peer_name
                ));
                continue;
            }
            let mut requested = requested;
            // Only resource-and-stonith powers a member off; resource-only cannot reach the peer to
            // outdate it, so it goes on (the engine does not freeze) and the peer stays as it is.
            let stonith = l.spec.volume.replica.fencing == replica::Fencing::ResourceAndStonith;
            if !stonith {
                continue;
            }
            if !requested && members.contains(&peer) && since.elapsed() >= grace {
                let now = self.now();
                let peer_name = l.spec.peer_name.clone();
                match self.stack.fence_command(now, stack::FenceCommand::Fence, peer) {
                    Ok(()) => self.note(format!(
                        "replica {name}: replication link to {peer_name} lost while it is a member; fencing it (resource-and-stonith)"
                    )),
                    Err(r) => self.note(format!(
                        "replica {name}: cannot fence {peer_name}: {}", r.reason
                    )),
                }
                requested = true;
            }
            self.fence_waits.insert(name, (since, requested));
        }
    }

    /// `quorate replica ...`: answered from a task of its own (volumes answer asynchronously).
    fn replica_request(&self, req: Request, reply: tokio::sync::oneshot::Sender<Response>) {
        let replicas = self.replicas.clone();
        tokio::spawn(async move {
            let r = crate::replicas::admin(&replicas, &req).await;
            let _ = reply.send(r);
        });
    }

    /// Drain the quorum disk's events (its thread runs on its own clock).
    fn poll_qdisk(&mut self) {
        let mut events = Vec::new();
        if let Some(q) = &self.qdisk {
            while let Ok(ev) = q.events().try_recv() {
                events.push(ev);
            }
        }
        for ev in events {
            match ev {
                qdisk::DriverEvent::Qdisk(quorum::QdiskEvent::Availability { master, reason }) => {
                    let now = self.now();
                    self.stack.handle_qdisk(now, master, &reason);
                }
                qdisk::DriverEvent::Qdisk(other) => tracing::info!("qdisk: {other:?}"),
                qdisk::DriverEvent::SelfFence { reason } => {
                    self.note(format!("qdisk: SELF-FENCE: {reason}"));
                    self.self_fence = Some(reason);
                }
            }
        }
    }

    /// Offer due benchmark messages to totem until its send queue is full.
    fn pump_load(&mut self) {
        let now = self.now();
        for _ in 0..self.load_tx.due() {
            let body = self.load_tx.next_body();
            match self.stack.multicast_foreign(now, TAG_LOAD, &body) {
                Ok(()) => self.load_tx.accepted(),
                Err(_) => break, // queue full: retry after the next event
            }
        }
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
        match self.stack.config_push(now, text) {
            Ok(ticket) => {
                self.pushes.insert(ticket, reply);
            }
            Err(r) => {
                let _ = reply.send(refused(r));
            }
        }
    }

    fn check_drift(&mut self) {
        match confsync::files::check_drift(&self.config_path) {
            Ok(text) => {
                let now = self.now();
                self.stack.handle_local_file(now, &text);
            }
            Err(e) => tracing::warn!("cannot read {}: {e}", self.config_path.display()),
        }
    }

    fn on_service_done(&mut self, d: ServiceDone) {
        let now = self.now();
        if let Some(resources) = &d.running {
            self.arm_watch(&d.service, resources);
        }
        self.stack
            .handle_service_done(now, d.service, d.op, d.outcome);
    }

    /// Watch a service that runs here, once (see [`ServiceRunner::watch`]).
    fn arm_watch(&mut self, service: &str, resources: &[rm::ResourceStep]) {
        if self.watching.contains(service) {
            return;
        }
        let Some(fut) = self.services.watch(service, resources) else {
            return;
        };
        self.watching.insert(service.to_string());
        let tx = self.watch_tx.clone();
        let service = service.to_string();
        tokio::spawn(async move {
            let armed = std::time::Instant::now();
            let reason = fut.await;
            // A watch that fires at once (the service had already gone) is
            // re-armed only by the next passing check: at most one a second.
            if armed.elapsed() < std::time::Duration::from_millis(200) {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            let _ = tx.send(WatchFired { service, reason }).await;
        });
    }

    /// A watched service failed by itself: check it now (the recovery policy
    /// follows a failed check). Nothing happens when it no longer runs here
    /// (it was stopped or migrated away meanwhile).
    fn on_watch_fired(&mut self, w: WatchFired) {
        self.watching.remove(&w.service);
        let now = self.now();
        if self.stack.check_now(now, &w.service) {
            self.note(format!("rm: {}: {}; checking it now", w.service, w.reason));
        }
    }

    fn on_agent_done(&mut self, d: AgentDone) {
        let now = self.now();
        self.stack.handle_agent_result(now, d.run_id, d.result);
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
        let service = request.service().to_string();
        let now = self.now();
        match self.stack.submit(now, request) {
            Ok(()) => Response::ok(json!({"service": service, "submitted": true})),
            Err(r) => refused(r),
        }
    }

    fn services_json(&self) -> serde_json::Value {
        let view = self.stack.rm().view();
        json!(view
            .services
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Some(local) = self.services.local_info(&s.name) {
                    v["local"] = local;
                }
                v["owner_name"] = json!(s.owner.map(|n| self.name_of(n)));
                v["last_owner_name"] = json!(s.last_owner.map(|n| self.name_of(n)));
                v["reason"] = json!(wall_times(&s.reason));
                v
            })
            .collect::<Vec<_>>())
    }

    fn node_id_arg(&self, req: &Request) -> Result<NodeId, Response> {
        let name = req
            .args
            .get("node")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        self.plan()
            .peers
            .values()
            .find(|p| p.name == name || p.id.0.to_string() == name)
            .map(|p| p.id)
            .ok_or_else(|| {
                Response::refused(
                    format!("{name:?} is not a node of this cluster"),
                    format!(
                        "use one of: {}",
                        self.plan()
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
        let plan = self.plan();
        let members: Vec<serde_json::Value> = plan
            .peers
            .values()
            .map(|p| {
                json!({
                    "name": p.name,
                    "nodeid": p.id.0,
                    "online": self.stack.members().contains(&p.id),
                    "local": p.id == plan.me,
                    "votes": plan.quorum.nodes.get(&p.id).copied().unwrap_or(1),
                    "joined": self.stack.joined_at(p.id).map(|t| t.0 / 1_000_000_000),
                    "addresses": p.addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
                    "fenced": self.stack.fence().is_fenced(p.id),
                })
            })
            .collect();
        json!(members)
    }

    fn status_json(&self) -> serde_json::Value {
        let q = self.stack.quorum().status();
        let conf = self.stack.conf();
        json!({
            "cluster_name": conf.name,
            "config_version": conf.config_version,
            "node": self.name_of(self.stack.me()),
            "nodeid": self.stack.me().0,
            "quorate": q.quorate,
            "quorum_reason": q.reason,
            "ring_id": self.stack.ring_id().map(|r| format!("{}/{}", r.rep.0, r.seq)),
            "members": self.members_json(),
            "services": self.services_json(),
            "rm_syncing": self.stack.rm().syncing(),
            "fence_blocked": self.stack.fence().blocked().iter().map(|n| self.name_of(*n)).collect::<Vec<_>>(),
            "events": self.log.iter().rev().take(20).collect::<Vec<_>>(),
        })
    }

    fn handle_request(&mut self, req: &Request) -> Response {
        let now = self.now();
        match req.cmd.as_str() {
            "status" => Response::ok(self.status_json()),
            "quorum" => {
                let q = self.stack.quorum().status();
                Response::ok(json!({"quorate": q.quorate, "reason": q.reason}))
            }
            "totem.status" => {
                let s = self.stack.totem().status();
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["members"] = json!(s
                    .members
                    .iter()
                    .map(|n| json!({"nodeid": n.0, "name": self.name_of(*n)}))
                    .collect::<Vec<_>>());
                v["rings"] = json!(self.plan().rings);
                Response::ok(v)
            }
            "cman.status" => {
                let q = self.stack.quorum().status();
                let conf = self.stack.conf();
                let mut v = serde_json::to_value(&q).unwrap_or_default();
                v["cluster_name"] = json!(conf.name);
                v["cluster_id"] = json!(*conf.cman.cluster_id.get());
                v["config_version"] = json!(conf.config_version);
                v["node_name"] = json!(self.name_of(self.stack.me()));
                v["node_addresses"] = json!(self.plan().peers[&self.stack.me()]
                    .addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>());
                v["port"] = json!(*conf.cman.port.get());
                Response::ok(v)
            }
            "cman.nodes" => Response::ok(self.members_json()),
            "cman.expected" => {
                let Some(e) = req.args.get("votes").and_then(|v| v.as_u64()) else {
                    return Response::refused("missing votes", "quorate cman expected VOTES");
                };
                match self
                    .stack
                    .set_expected(now, u32::try_from(e).unwrap_or(u32::MAX))
                {
                    Ok(()) => Response::ok(json!({"expected_votes": e})),
                    Err(r) => refused(r),
                }
            }
            "cman.leave" => {
                let remove = req
                    .args
                    .get("remove")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                self.stack.begin_leave(now, remove);
                Response::ok(json!({"leaving": true}))
            }
            "fence.status" => {
                let mut v = serde_json::to_value(self.stack.fence().status()).unwrap_or_default();
                v["names"] = json!(self
                    .plan()
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
                let cmd = match req.cmd.as_str() {
                    "fence.node" => stack::FenceCommand::Fence,
                    "fence.ack" => stack::FenceCommand::Ack,
                    _ => stack::FenceCommand::Unfence,
                };
                match self.stack.fence_command(now, cmd, id) {
                    Ok(()) => Response::ok(json!({"node": self.name_of(id)})),
                    Err(r) => refused(r),
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
            "config.status" => Response::ok(
                serde_json::to_value(self.stack.confsync().status()).unwrap_or_default(),
            ),
            cmd if cmd.starts_with("svc.") => self.svc_request(req),
            other => {
                Response::refused(format!("unknown command {other:?}"), "see `quorate --help`")
            }
        }
    }
}

fn refused(r: Refusal) -> Response {
    Response::refused(r.reason, r.hint)
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
    run_with_replicas(
        opts,
        services,
        crate::replicas::Replicas::default(),
        shutdown,
    )
    .await
}

/// [`run`], with the registry the node fills with its replicated volumes (`<replicas>`), so that
/// the caller's resource executor can promote and demote them.
pub async fn run_with_replicas(
    opts: NodeOptions,
    services: std::sync::Arc<dyn ServiceRunner>,
    replicas: crate::replicas::Replicas,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let conf = load_config(&opts.config_path)?;
    let me_name = local_node_name(&conf, opts.node.as_deref())?;
    let plan = make_plan(&conf, &me_name)?;
    let replica_specs = crate::replicas::specs(
        &conf,
        &me_name,
        wall_ns() ^ u64::from(std::process::id()),
        crate::plan::resolve,
    )?;
    let text = std::fs::read_to_string(&opts.config_path).map_err(|e| {
        NodeError::Load(config::LoadError::Io {
            path: opts.config_path.clone(),
            source: e,
        })
    })?;
    std::fs::create_dir_all(&opts.state_dir).map_err(|source| NodeError::State {
        path: opts.state_dir.clone(),
        source,
    })?;
    let mut persisted = load_persisted(&opts.state_dir);
    persisted.epoch += 1;
    save_persisted(&opts.state_dir, persisted)?;

    let clock = MonotonicClock::new();
    let key = cluster_key(&conf)?;
    let my_addrs = plan.peers[&plan.me].addrs.clone();
    let by_addr = plan
        .peers
        .values()
        .flat_map(|p| p.addrs.iter().map(move |a| (*a, p.id)))
        .collect();
    let qdisk_plan = plan.qdisk.clone();
    let now = Now {
        mono: clock.now(),
        wall: Instant(wall_ns()),
    };
    let stack = Stack::new(
        stack::StackInit {
            plan,
            conf,
            config_text: text,
            key,
            epoch: persisted.epoch,
            ring_seq: persisted.ring_seq,
        },
        now,
    )
    .map_err(|e| match e {
        stack::StackError::Config(errors) => NodeError::Invalid {
            path: opts.config_path.display().to_string(),
            errors,
        },
        stack::StackError::Rm(err) => NodeError::Invalid {
            path: opts.config_path.display().to_string(),
            errors: err.to_string(),
        },
        other => NodeError::Stack(other),
    })?;
    let (service_tx, mut service_rx) = mpsc::channel::<ServiceDone>(64);
    let (watch_tx, mut watch_rx) = mpsc::channel::<WatchFired>(64);

    let ipc = IpcServer::bind(&opts.state_dir)?;
    let (ipc_tx, mut ipc_rx) = mpsc::channel::<Pending>(64);
    tokio::spawn(ipc.serve(ipc_tx));
    let (udp_tx, mut udp_rx) = mpsc::channel::<Datagram>(4096);
    let rings = Rings::bind(&my_addrs, udp_tx).await?;
    let (agent_tx, mut agent_rx) = mpsc::channel::<AgentDone>(64);

    let mut node = Node {
        load_tx: crate::load::Generator::default(),
        load_rx: crate::load::Receiver::default(),
        clock,
        stack,
        state_dir: opts.state_dir.clone(),
        persisted,
        rings,
        by_addr,
        agent_tx,
        runner: agents::FenceAgentRunner::default(),
        log: VecDeque::new(),
        leaving: false,
        qdisk: None,
        self_fence: None,
        services,
        service_tx,
        watching: std::collections::BTreeSet::new(),
        watch_tx,
        config_path: opts.config_path.clone(),
        pushes: BTreeMap::new(),
        replicas: replicas.clone(),
        fence_waits: BTreeMap::new(),
    };
    let (replica_tx, mut replica_rx) = mpsc::unbounded_channel();
    replicas.start(replica_specs, replica_tx).await?;
    if let Some((device, cfg)) = qdisk_plan {
        let handle = qdisk::QdiskHandle::spawn(
            &device,
            node.stack.me(),
            qdisk::fresh_incarnation(),
            cfg,
            qdisk::DriverOptions::default(),
        )
        .map_err(|e| NodeError::Qdisk(device.display().to_string(), e.to_string()))?;
        node.note(format!("qdisk: using {}", device.display()));
        node.qdisk = Some(handle);
    }
    let conf = node.stack.conf();
    let started = format!(
        "{} (node {}) starting in cluster {} config_version {} on {}",
        me_name,
        node.stack.me().0,
        conf.name,
        conf.config_version,
        my_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    );
    node.note(started);
    node.drain();

    tokio::pin!(shutdown);
    let mut qdisk_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut drift_tick = tokio::time::interval(DRIFT_POLL);
    let mut load_tick = tokio::time::interval(std::time::Duration::from_millis(1));
    loop {
        let deadline = node
            .stack
            .poll_deadline()
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
                } else if p.request.cmd.starts_with("replica.") {
                    node.replica_request(p.request, p.reply);
                } else {
                    let r = node.handle_request(&p.request);
                    let _ = p.reply.send(r);
                }
            }
            _ = drift_tick.tick() => node.check_drift(),
            _ = load_tick.tick(), if node.load_tx.active() => {}
            Some(d) = agent_rx.recv() => node.on_agent_done(d),
            Some(d) = service_rx.recv() => node.on_service_done(d),
            Some(w) = watch_rx.recv() => node.on_watch_fired(w),
            Some((name, ev)) = replica_rx.recv() => node.on_replica_event(name, ev),
            _ = qdisk_tick.tick(), if node.qdisk.is_some() => node.poll_qdisk(),
            _ = sleep => node.on_timeout(),
            _ = &mut shutdown, if !node.stack.leave_requested() => {
                let now = node.now();
                node.stack.begin_leave(now, false);
            }
        }
        if node.load_tx.active() {
            node.pump_load();
        }
        node.drain();
        node.replica_fencing();
        node.drain();
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
            // A clean leave detaches the volumes (their metadata marked clean).
            for l in node.replicas.all() {
                l.volume().stop().await;
            }
            return Ok(());
        }
    }
}

/// What a replication handshake decided, in words for the event log.
fn decision_text(d: replica::SyncDecision) -> &'static str {
    use replica::SyncDecision::*;
    match d {
        NoSync => "handshake: both copies are the same generation; nothing to sync",
        BothFresh => "handshake: both copies are new; the first primary sends the initial sync",
        BitmapSource => "handshake: the peer missed changes made here; sending the changed blocks",
        BitmapTarget => "handshake: this copy missed changes made on the peer; receiving the changed blocks",
        FullSource => "handshake: the peer's copy is older than its changes can tell; sending everything",
        FullTarget => "handshake: this copy is older than its changes can tell; receiving everything",
        SplitBrain => "handshake: SPLIT BRAIN: both copies changed on their own; the after-split-brain policies decide",
        SplitBrainUnresolvable => "handshake: SPLIT BRAIN that no policy can resolve: choose the victim (`quorate replica discard-my-data`)",
        UnrelatedData => "handshake: the copies share no history: refusing to connect",
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
