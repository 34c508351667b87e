//! This node's replicated volumes (`<replicas>` in cluster.conf, DRBD's role).
//!
//! For every `<replica>` with a `<node>` for this node the daemon creates the backing file and the
//! metadata on first start, runs a [`replica::Volume`] whose replication link listens on (and, from
//! the node with the lower nodeid, dials) the storage-network address, and serves the volume over
//! NBD on that address and `nbd_port` while, and only while, this node is its primary: a secondary
//! does not listen, so a client gets "connection refused" instead of a disk it cannot use.
//!
//! Fencing (resource-and-stonith): when a volume asks to fence its peer, the node loop answers
//! [`replica::FenceOutcome::PeerFenced`] once the cluster's fence domain has fenced that node (it
//! fences a lost member by itself); when the peer is still a cluster member and only the
//! replication link is gone, the loop fences it, as DRBD's `rhcs_fence` handler did.
//!
//! The initial sync source: a brand-new volume (neither side ever primary, so no data anywhere)
//! is promoted without `--force` on the node the resource manager first starts its service on,
//! and that side sends the full initial sync. A volume that has data on one side only is never
//! promoted over automatically: `quorate replica primary NAME --force` on the side to keep.

use base::NodeId;
use config::ClusterConf;
use replica::{
    AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, ConnState, DiskState, Fencing, Protocol, ReplicaConfig,
    ReplicaError, Role, SplitBrainPolicy, Status, Volume, VolumeConfig, VolumeEvent,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bitmap granularity: one bit per 4 KiB block, as DRBD.
const GRANULARITY: u32 = 4096;
/// How long a start waits for the replication link of a peer that is a cluster member.
const LINK_WAIT: Duration = Duration::from_secs(10);
/// How long a start waits for the cluster to fence a lost peer.
const FENCE_WAIT: Duration = Duration::from_secs(60);

/// One volume on this node, as planned from cluster.conf.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Volume name.
    pub name: String,
    /// The other side's node id.
    pub peer: NodeId,
    /// The other side's node name.
    pub peer_name: String,
    /// What the volume driver needs.
    pub volume: VolumeConfig,
    /// Replication link address (this node's storage address and `port`).
    pub listen: SocketAddr,
    /// NBD export address (this node's storage address and `nbd_port`).
    pub nbd: SocketAddr,
    /// Size in bytes.
    pub size: u64,
    /// `allow-two-primaries`: live migration may open a dual-primary window.
    pub allow_two_primaries: bool,
}

/// Why a volume could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("replica {name}: {what}")]
pub struct SetupError {
    /// The volume.
    pub name: String,
    /// What went wrong and what to do.
    pub what: String,
}

fn protocol(s: &str) -> Protocol {
    match s {
        "A" => Protocol::A,
        "B" => Protocol::B,
        _ => Protocol::C,
    }
}

fn fencing(s: &str) -> Fencing {
    match s {
        "dont-care" => Fencing::DontCare,
        "resource-only" => Fencing::ResourceOnly,
        _ => Fencing::ResourceAndStonith,
    }
}

fn split_brain(r: &config::Replica) -> SplitBrainPolicy {
    SplitBrainPolicy {
        zero: match r.after_sb_0pri.value.as_str() {
            "disconnect" => AfterSb0Pri::Disconnect,
            "discard-younger-primary" => AfterSb0Pri::DiscardYoungerPrimary,
            "discard-older-primary" => AfterSb0Pri::DiscardOlderPrimary,
            "discard-least-changes" => AfterSb0Pri::DiscardLeastChanges,
            _ => AfterSb0Pri::DiscardZeroChanges,
        },
        one: match r.after_sb_1pri.value.as_str() {
            "disconnect" => AfterSb1Pri::Disconnect,
            "consensus" => AfterSb1Pri::Consensus,
            _ => AfterSb1Pri::DiscardSecondary,
        },
        two: AfterSb2Pri::Disconnect,
    }
}

/// The volumes of node `me`, with addresses resolved by `resolve` (name, port).
pub fn specs(
    conf: &ClusterConf,
    me: &str,
    seed: u64,
    resolve: impl Fn(&str, u16) -> Result<SocketAddr, String>,
) -> Result<Vec<Spec>, SetupError> {
    let mut out = Vec::new();
    for r in &conf.replicas {
        let Some(mine) = r.node(me) else { continue };
        let err = |what: String| SetupError {
            name: r.name.clone(),
            what,
        };
        let Some(other) = r.nodes.iter().find(|n| n.name != me) else {
            return Err(err("has no second node".into()));
        };
        let (Some(me_node), Some(peer_node)) = (conf.node(me), conf.node(&other.name)) else {
            return Err(err("names a node that is not a <clusternode>".into()));
        };
        let addr = |n: &config::ReplicaNode, port: u16| {
            resolve(&n.address.value, port).map_err(|e| {
                err(format!(
                    "cannot resolve storage address {:?} of {}: {e}; add it to /etc/hosts or write address=\"IP\"",
                    n.address.value, n.name
                ))
            })
        };
        let listen = addr(mine, r.port.value)?;
        let nbd = addr(mine, r.nbd_port.value)?;
        let peer = addr(other, r.port.value)?;
        let mut rc = ReplicaConfig::new(me_node.nodeid);
        rc.protocol = protocol(&r.protocol.value);
        rc.fencing = fencing(&r.fencing.value);
        rc.split_brain = split_brain(r);
        rc.resync_max_rate = r.rate.value;
        // The engine may accept a primary peer; the node allows it only in a migration window.
        rc.allow_two_primaries = r.allow_two_primaries.value;
        rc.resync_min_rate = rc.resync_min_rate.min(rc.resync_max_rate);
        // Peer loss is noticed by the TCP link or within a second of silence.
        rc.ping_interval = base::Duration::from_millis(500);
        out.push(Spec {
            name: r.name.clone(),
            peer: NodeId(peer_node.nodeid),
            peer_name: peer_node.name.clone(),
            volume: VolumeConfig {
                replica: rc,
                disk: PathBuf::from(&mine.disk),
                meta: PathBuf::from(&mine.meta.value),
                peer,
                peer_node_id: peer_node.nodeid,
                seed: seed ^ u64::from(me_node.nodeid).rotate_left(32),
            },
            listen,
            nbd,
            size: r.size,
            allow_two_primaries: r.allow_two_primaries.value,
        });
    }
    Ok(out)
}

/// Creates the backing file (sparse) and fresh metadata when they do not exist yet.
/// Returns true when the metadata was created now (a brand-new volume on this node).
pub fn prepare_files(spec: &Spec) -> Result<bool, SetupError> {
    let err = |what: String| SetupError {
        name: spec.name.clone(),
        what,
    };
    for p in [&spec.volume.disk, &spec.volume.meta] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    let disk = &spec.volume.disk;
    match std::fs::metadata(disk) {
        Ok(m) if m.is_file() && m.len() < spec.size => {
            return Err(err(format!(
            "backing file {} has {} bytes but size is {}: grow it (truncate -s {}) or lower size=",
            disk.display(),
            m.len(),
            spec.size,
            spec.size
        )))
        }
        Ok(_) => {}
        Err(_) => {
            let f = std::fs::File::create(disk)
                .map_err(|e| err(format!("cannot create {}: {e}", disk.display())))?;
            f.set_len(spec.size)
                .map_err(|e| err(format!("cannot size {}: {e}", disk.display())))?;
        }
    }
    if spec.volume.meta.exists() {
        return Ok(false);
    }
    replica::create_metadata(&spec.volume.meta, spec.size, GRANULARITY).map_err(|e| {
        err(format!(
            "cannot write metadata {}: {e}",
            spec.volume.meta.display()
        ))
    })?;
    Ok(true)
}

/// Why an operator command or a resource action was refused, and what to do.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why.
    pub reason: String,
    /// What to do next.
    pub hint: String,
}

impl Refused {
    fn new(reason: impl Into<String>, hint: impl Into<String>) -> Self {
        Refused {
            reason: reason.into(),
            hint: hint.into(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.reason, self.hint)
    }
}

/// One running volume on this node.
pub struct Local {
    /// The plan it runs.
    pub spec: Spec,
    vol: Volume,
    nbd: Mutex<Option<Arc<nbd::Server>>>,
    peer_member: AtomicBool,
    created: bool,
    /// A live migration is in flight: this node may be primary beside a primary peer.
    window: AtomicBool,
}

fn linked(c: ConnState) -> bool {
    !matches!(
        c,
        ConnState::StandAlone | ConnState::WfConnection | ConnState::WfReportParams
    )
}

impl Local {
    /// The volume handle.
    pub fn volume(&self) -> &Volume {
        &self.vol
    }

    /// Whether the peer node is a member of the current configuration (set by the node loop).
    pub fn set_peer_member(&self, on: bool) {
        self.peer_member.store(on, Ordering::Relaxed);
    }

    fn peer_member(&self) -> bool {
        self.peer_member.load(Ordering::Relaxed)
    }

    async fn status(&self) -> Result<Status, Refused> {
        self.vol.status().await.ok_or_else(|| {
            Refused::new(
                format!("replica {}: its volume task ended", self.spec.name),
                "see the node's log (QUORATE_LOG=info) and restart the node",
            )
        })
    }

    /// Becomes primary: waits for the link of a peer that is a member, for the cluster to fence a
    /// lost peer, and promotes a brand-new volume as the initial sync source. `force` is the
    /// operator's `--force` (DRBD's `primary --force`): promote a disk that is not UpToDate.
    pub async fn promote(&self, force: bool) -> Result<(), Refused> {
        let name = &self.spec.name;
        let peer = &self.spec.peer_name;
        let start = tokio::time::Instant::now();
        loop {
            let st = self.status().await?;
            if st.role == Role::Primary {
                return self.serve_nbd().await;
            }
            if st.peer_role == Some(Role::Primary) && !self.window.load(Ordering::Relaxed) {
                return Err(Refused::new(
                    format!("replica {name}: {peer} is primary"),
                    format!("stop the service on {peer} first (`quorate svc relocate`), or `quorate replica secondary {name}` there; two primaries are allowed only while a live migration is in flight"),
                ));
            }
            let up = linked(st.conn);
            if !up && self.peer_member() && start.elapsed() < LINK_WAIT && !force {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if st.conn == ConnState::SyncTarget && !force {
                let pct = st.resync.as_ref().map_or(0, |r| {
                    (100 * r.done_bytes)
                        .checked_div(r.total_bytes)
                        .unwrap_or(100)
                });
                return Err(Refused::new(
                    format!("replica {name} is still receiving its resync from {peer} ({pct}% done)"),
                    format!("run the service on {peer} until `quorate replica status {name}` shows UpToDate"),
                ));
            }
            // A brand-new volume has no data anywhere: either side may be the sync source.
            let fresh = up && st.never_synced && st.peer_never_synced == Some(true);
            match self.vol.promote(force || fresh).await {
                Ok(()) => return self.serve_nbd().await,
                Err(ReplicaError::NeedFencing) if !force => {
                    if self.peer_member() {
                        return Err(Refused::new(
                            format!("replica {name}: the replication link to {peer} is down while {peer} is a cluster member, so {peer} may still be primary"),
                            format!("check the storage network to {peer}, or fence it (`quorate fence {peer}`) before promoting here"),
                        ));
                    }
                    if start.elapsed() >= FENCE_WAIT {
                        return Err(Refused::new(
                            format!("replica {name}: {peer} is lost and has not been fenced"),
                            format!("see `quorate fence status`; once {peer} is surely off, `quorate fence ack {peer} --yes-it-is-off`"),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(ReplicaError::DiskState(d)) => {
                    return Err(match d {
                        DiskState::Inconsistent if st.never_synced => Refused::new(
                            format!("replica {name} has never been synced and {peer} is not connected, so there is no good copy to serve"),
                            format!("on the node whose data is to be kept (the initial sync source): `quorate replica primary {name} --force`"),
                        ),
                        DiskState::Inconsistent => Refused::new(
                            format!("replica {name}: the local disk is Inconsistent (a resync from {peer} was interrupted)"),
                            format!("run the service on {peer}, or bring {peer} back so the resync completes"),
                        ),
                        DiskState::Outdated => Refused::new(
                            format!("replica {name}: the local disk is Outdated ({peer} has newer data)"),
                            format!("run the service on {peer}; only if {peer}'s disk is lost: `quorate replica primary {name} --force` (loses {peer}'s newer writes)"),
                        ),
                        other => Refused::new(
                            format!("replica {name}: the local disk is {other:?}"),
                            "see `quorate replica status` and the node's log",
                        ),
                    })
                }
                Err(ReplicaError::PeerIsPrimary) => {
                    return Err(Refused::new(
                        format!("replica {name}: {peer} is primary"),
                        format!("stop the service on {peer} first (`quorate svc relocate`), or `quorate replica secondary {name}` there"),
                    ))
                }
                Err(e) => {
                    return Err(Refused::new(
                        format!("replica {name}: {e}"),
                        "see `quorate replica status`",
                    ))
                }
            }
        }
    }

    /// The target side of a live migration: becomes primary beside the primary source (the
    /// dual-primary window, closed when either side demotes: the source once its guest quit).
    pub async fn promote_for_migration(&self) -> Result<(), Refused> {
        if !self.spec.allow_two_primaries {
            return Err(Refused::new(
                format!(
                    "replica {}: a live migration needs both sides primary for a moment, and allow-two-primaries is off",
                    self.spec.name
                ),
                format!(
                    "set allow-two-primaries=\"1\" on <replica name=\"{}\"> (the node still refuses two primaries outside a migration), or migrate with the guest paused and stopped",
                    self.spec.name
                ),
            ));
        }
        self.window.store(true, Ordering::Relaxed);
        let r = self.promote(false).await;
        if r.is_err() {
            self.window.store(false, Ordering::Relaxed);
        }
        r
    }

    /// Whether the dual-primary window is open. Once this side is primary and the peer is no
    /// longer (the source's guest quit and it demoted, or the link is gone), the window has
    /// closed: forgotten here, so that only a new migration opens it again.
    fn window_open(&self, st: &Status) -> bool {
        if st.role == Role::Primary && st.peer_role != Some(Role::Primary) {
            self.window.store(false, Ordering::Relaxed);
        }
        self.window.load(Ordering::Relaxed)
    }

    /// Stops the NBD export and becomes secondary (waits for requests in flight).
    pub async fn demote(&self) -> Result<(), Refused> {
        self.window.store(false, Ordering::Relaxed);
        if let Some(s) = self.nbd.lock().ok().and_then(|mut g| g.take()) {
            s.shutdown();
        }
        let start = tokio::time::Instant::now();
        loop {
            match self.vol.demote().await {
                Ok(()) => return Ok(()),
                Err(ReplicaError::Busy) if start.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => {
                    return Err(Refused::new(
                        format!("replica {}: cannot become secondary: {e}", self.spec.name),
                        "stop the guests or clients writing to it, then try again",
                    ))
                }
            }
        }
    }

    /// `Ok` when primary with an UpToDate disk (the resource's status check).
    pub async fn check(&self) -> Result<(), Refused> {
        let st = self.status().await?;
        // Frozen I/O (the peer is being fenced) is not a failure: recovering the service would
        // only move it away from the one good copy.
        if st.role == Role::Primary && st.disk == DiskState::UpToDate {
            return Ok(());
        }
        Err(Refused::new(
            format!(
                "replica {} is {:?} with a {:?} disk{}",
                self.spec.name,
                st.role,
                st.disk,
                if st.frozen {
                    ", I/O frozen until its peer is fenced"
                } else {
                    ""
                }
            ),
            "see `quorate replica status`",
        ))
    }

    async fn serve_nbd(&self) -> Result<(), Refused> {
        if self.nbd.lock().map(|g| g.is_some()).unwrap_or(false) {
            return Ok(());
        }
        let listener = self.bind(self.spec.nbd).await?;
        // Guests on this node open the volume as nbd://127.0.0.1:NBD_PORT/NAME, the same URL
        // on every node (a migrated guest finds its disk on its new host).
        let local = SocketAddr::from(([127, 0, 0, 1], self.spec.nbd.port()));
        let local = if self.spec.nbd.ip().is_loopback() {
            None
        } else {
            Some(self.bind(local).await?)
        };
        let backend = Arc::new(replica::ReplicaBackend::new(
            self.vol.clone(),
            tokio::runtime::Handle::current(),
        ));
        let server = nbd::Server::new(vec![nbd::Export::new(self.spec.name.clone(), backend)]);
        if let Ok(mut g) = self.nbd.lock() {
            *g = Some(server.clone());
        }
        tokio::spawn(server.clone().serve_tcp(listener));
        if let Some(l) = local {
            tokio::spawn(server.serve_tcp(l));
        }
        tracing::info!(replica = %self.spec.name, addr = %self.spec.nbd, "serving NBD");
        Ok(())
    }

    /// Binds an NBD listener; retries for a moment while the export of a previous primary period
    /// is still closing its listener.
    async fn bind(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener, Refused> {
        let start = tokio::time::Instant::now();
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => return Ok(l),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && start.elapsed() < Duration::from_secs(2) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => {
                    return Err(Refused::new(
                        format!(
                            "replica {}: cannot serve NBD on {addr}: {e}",
                            self.spec.name
                        ),
                        "free the port or change nbd_port= in <replica>",
                    ))
                }
            }
        }
    }

    /// `replica status --json` for this volume.
    pub async fn status_json(&self) -> serde_json::Value {
        let Ok(st) = self.status().await else {
            return json!({"name": self.spec.name, "error": "volume task ended"});
        };
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        v["name"] = json!(self.spec.name);
        v["peer"] = json!(self.spec.peer_name);
        v["peer_member"] = json!(self.peer_member());
        v["size"] = json!(self.spec.size);
        v["address"] = json!(self.spec.listen.to_string());
        v["nbd"] = json!(self
            .nbd
            .lock()
            .map(|g| g.is_some())
            .unwrap_or(false)
            .then(|| format!("nbd://{}/{}", self.spec.nbd, self.spec.name)));
        v["created_this_start"] = json!(self.created);
        v["migration_window"] = json!(self.window_open(&st));
        v["why"] = json!(why(&st, &self.spec.peer_name, self.peer_member()));
        v
    }
}

/// One line: why the volume is in this state.
pub fn why(st: &Status, peer: &str, peer_member: bool) -> String {
    if let Some(d) = &st.split_brain {
        return format!("split brain with {peer} ({d:?}): choose the victim with `quorate replica discard-my-data NAME` there");
    }
    if st.frozen {
        return format!("I/O frozen: {peer} was lost and is not fenced yet (resource-and-stonith)");
    }
    if let Some(r) = &st.resync {
        return format!("resyncing {} {peer}", if r.source { "to" } else { "from" });
    }
    match st.conn {
        ConnState::StandAlone => {
            format!("not connecting to {peer} (operator disconnect or split brain): `quorate replica connect NAME`")
        }
        ConnState::WfConnection if peer_member => {
            format!("waiting for the replication link to {peer}, which is a cluster member: check the storage network")
        }
        ConnState::WfConnection => format!("waiting for {peer} (not a cluster member)"),
        _ if st.disk == DiskState::UpToDate && st.peer_disk == DiskState::UpToDate => {
            format!("in sync with {peer}")
        }
        _ => format!(
            "connected to {peer}; disks {:?}/{:?}",
            st.disk, st.peer_disk
        ),
    }
}

/// The volumes this node runs, shared by the node loop, the admin socket and the resource executor.
#[derive(Clone, Default)]
pub struct Replicas {
    inner: Arc<Mutex<BTreeMap<String, Arc<Local>>>>,
}

impl Replicas {
    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Local>> {
        self.inner.lock().ok()?.get(name).cloned()
    }

    /// Every volume, by name.
    pub fn all(&self) -> Vec<Arc<Local>> {
        self.inner
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The volume called `name`, or a refusal that lists the ones this node has.
    pub fn find(&self, name: &str) -> Result<Arc<Local>, Refused> {
        self.get(name).ok_or_else(|| {
            let names: Vec<String> = self.all().iter().map(|l| l.spec.name.clone()).collect();
            Refused::new(
                format!("this node has no replica {name:?}"),
                if names.is_empty() {
                    "define one in <replicas> with a <node> for this node".to_string()
                } else {
                    format!("use one of: {}", names.join(", "))
                },
            )
        })
    }

    /// Opens and starts every planned volume; engine events arrive on `events` tagged with the
    /// volume's name.
    pub async fn start(
        &self,
        specs: Vec<Spec>,
        events: mpsc::UnboundedSender<(String, VolumeEvent)>,
    ) -> Result<(), SetupError> {
        for spec in specs {
            let created = prepare_files(&spec)?;
            let err = |what: String| SetupError {
                name: spec.name.clone(),
                what,
            };
            let listener = tokio::net::TcpListener::bind(spec.listen)
                .await
                .map_err(|e| {
                    err(format!(
                        "cannot listen on {}: {e}; free the port or change port= in <replica>",
                        spec.listen
                    ))
                })?;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let vol = Volume::start(spec.volume.clone(), listener, tx)
                .await
                .map_err(|e| err(e.to_string()))?;
            vol.connect();
            let name = spec.name.clone();
            let out = events.clone();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if out.send((name.clone(), e)).is_err() {
                        return;
                    }
                }
            });
            tracing::info!(replica = %spec.name, listen = %spec.listen, peer = %spec.volume.peer, created, "replica started");
            let local = Arc::new(Local {
                spec,
                vol,
                nbd: Mutex::new(None),
                peer_member: AtomicBool::new(false),
                created,
                window: AtomicBool::new(false),
            });
            if let Ok(mut m) = self.inner.lock() {
                m.insert(local.spec.name.clone(), local);
            }
        }
        Ok(())
    }
}

/// The admin socket's `replica.*` commands (`quorate replica ...`).
///
/// `replica.status` (`name` optional) answers `{"replicas": [...]}`; `replica.primary` (`name`,
/// `force`, or `migration`: open the dual-primary window of a live migration), `replica.secondary`, `replica.connect`, `replica.disconnect`, `replica.verify` and
/// `replica.discard_my_data` act on one volume.
pub async fn admin(replicas: &Replicas, req: &crate::ipc::Request) -> crate::ipc::Response {
    use crate::ipc::Response;
    let name = req
        .args
        .get("name")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    if req.cmd == "replica.status" {
        let list = match &name {
            Some(n) => match replicas.find(n) {
                Ok(l) => vec![l],
                Err(r) => return Response::refused(r.reason, r.hint),
            },
            None => replicas.all(),
        };
        let mut out = Vec::new();
        for l in list {
            out.push(l.status_json().await);
        }
        return Response::ok(json!({ "replicas": out }));
    }
    let Some(name) = name else {
        return Response::refused(
            "which replica?",
            format!("name one: `quorate {} NAME`", req.cmd.replace('.', " ")),
        );
    };
    let l = match replicas.find(&name) {
        Ok(l) => l,
        Err(r) => return Response::refused(r.reason, r.hint),
    };
    let force = req
        .args
        .get("force")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let migration = req
        .args
        .get("migration")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let result = match req.cmd.as_str() {
        "replica.primary" if migration => l.promote_for_migration().await,
        "replica.primary" => l.promote(force).await,
        "replica.secondary" => l.demote().await,
        "replica.connect" => {
            l.vol.connect();
            Ok(())
        }
        "replica.disconnect" => match l.status().await {
            Ok(st)
                if !force
                    && linked(st.conn)
                    && l.spec.volume.replica.fencing == Fencing::ResourceAndStonith
                    && (st.role == Role::Primary || st.peer_role == Some(Role::Primary)) =>
            {
                let primary = if st.role == Role::Primary {
                    "this node".to_string()
                } else {
                    l.spec.peer_name.clone()
                };
                Err(Refused::new(
                    format!("replica {name}: disconnecting makes the primary ({primary}) freeze its I/O and fence its peer (fencing resource-and-stonith)"),
                    format!("stop the service using it first (both sides secondary), or `quorate replica disconnect {name} --force` to accept the fencing"),
                ))
            }
            Ok(_) => {
                l.vol.disconnect();
                Ok(())
            }
            Err(r) => Err(r),
        },
        "replica.verify" => l.vol.verify().await.map_err(|e| {
            Refused::new(
                format!("replica {name}: cannot verify: {e}"),
                "verify needs a connected peer and both disks UpToDate: see `quorate replica status`",
            )
        }),
        "replica.discard_my_data" => match l.status().await {
            Ok(st) if st.role == Role::Primary => Err(Refused::new(
                format!("replica {name} is primary here: the split-brain victim must be secondary"),
                format!("stop what uses it, `quorate replica secondary {name}`, then try again"),
            )),
            Ok(_) => {
                // DRBD's `drbdadm connect --discard-my-data`: this side becomes the sync target.
                l.vol.disconnect();
                l.vol.discard_my_data();
                l.vol.connect();
                Ok(())
            }
            Err(r) => Err(r),
        },
        other => Err(Refused::new(
            format!("unknown command {other:?}"),
            "see `quorate replica --help`",
        )),
    };
    match result {
        Ok(()) => Response::ok(l.status_json().await),
        Err(r) => Response::refused(r.reason, r.hint),
    }
}
