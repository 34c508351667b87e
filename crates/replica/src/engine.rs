//! The replication engine of one node for one volume, as a sans-IO state machine.
//!
//! Inputs: application requests ([`Replica::handle_write`], [`Replica::handle_flush`]), peer messages
//! ([`Replica::handle_msg`]), connection changes, local disk completions ([`Replica::handle_io_done`]),
//! fence results, operator commands and timer expiries, each with the current time. Outputs: ordered
//! [`Action`]s (send, disk I/O, persist metadata, complete a request, fence the peer, disconnect)
//! and [`Event`]s. Driver contract: actions are started in the order drained, and a
//! [`Action::PersistMeta`] must be durable before any later disk write is started (activity log rule).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use base::{DetRng, Duration, Instant};
use bytes::Bytes;

use crate::gen::{
    resolve_split_brain, uuid_compare, CrashFlags, SbResolution, SbSide, SplitBrainPolicy,
    SyncDecision,
};
use crate::meta::{DiskState, Metadata};
use crate::msg::{Hello, Msg, Protocol, Role};

/// What a primary does when it loses its peer (DRBD's `fencing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fencing {
    /// Keep going.
    DontCare,
    /// Ask the fence handler to outdate the peer; keep serving I/O.
    ResourceOnly,
    /// Freeze I/O and call the fence handler; resume only when the peer is fenced or outdated.
    ResourceAndStonith,
}

/// Result of the fence handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOutcome {
    /// The peer node was fenced (power off confirmed).
    PeerFenced,
    /// The peer's disk is marked Outdated.
    PeerOutdated,
    /// Fencing failed; I/O stays frozen and fencing is retried.
    Failed,
}

/// Configuration of one volume on one node.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's id (lower id wins tie-breaks).
    pub node_id: u32,
    /// When writes are acknowledged.
    pub protocol: Protocol,
    /// Peer-loss behaviour.
    pub fencing: Fencing,
    /// After-split-brain policies.
    pub split_brain: SplitBrainPolicy,
    /// Allow both nodes primary (live migration only).
    pub allow_two_primaries: bool,
    /// Resync/verify ceiling in bytes per second (c-max-rate).
    pub resync_max_rate: u64,
    /// Resync floor that application I/O cannot squeeze below (c-min-rate).
    pub resync_min_rate: u64,
    /// Largest resync or verify request in bytes.
    pub resync_chunk: u32,
    /// Resync or verify requests in flight.
    pub resync_in_flight: usize,
    /// Send a ping after this much silence.
    pub ping_interval: Duration,
    /// Peer lost if a ping is not answered within this.
    pub ping_timeout: Duration,
    /// Peer lost if a replicated write stays unacknowledged this long (DRBD timeout × ko-count).
    pub ack_timeout: Duration,
    /// Retry a failed fence after this long.
    pub fence_retry: Duration,
}

impl ReplicaConfig {
    /// Defaults: protocol C, resource-and-stonith, tutorial split-brain policies, 100 MiB/s resync
    /// ceiling, 250 KiB/s floor, ping 10 s / 500 ms, ack timeout 6 s.
    pub fn new(node_id: u32) -> Self {
        ReplicaConfig {
            node_id,
            protocol: Protocol::C,
            fencing: Fencing::ResourceAndStonith,
            split_brain: SplitBrainPolicy::default(),
            allow_two_primaries: false,
            resync_max_rate: 100 << 20,
            resync_min_rate: 250 << 10,
            resync_chunk: 256 << 10,
            resync_in_flight: 8,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(6),
            fence_retry: Duration::from_secs(5),
        }
    }
}

/// Connection state (DRBD names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConnState {
    /// Not trying to connect (after split brain or an operator disconnect).
    StandAlone,
    /// Waiting for the driver to connect.
    WfConnection,
    /// Connected, parameters being exchanged.
    WfReportParams,
    /// Exchanging bitmaps before a resync.
    WfBitmap,
    /// In sync and replicating.
    Connected,
    /// Sending a resync.
    SyncSource,
    /// Receiving a resync.
    SyncTarget,
    /// Running an online verify as its source.
    VerifyS,
}

impl ConnState {
    fn linked(self) -> bool {
        !matches!(
            self,
            ConnState::StandAlone | ConnState::WfConnection | ConnState::WfReportParams
        )
    }
}

/// The caller's id of an application request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u64);

/// Why a request or command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// I/O on a secondary.
    #[error("this node is Secondary: promote it (`quorate replica primary`) before writing")]
    NotPrimary,
    /// Range outside the volume.
    #[error("request beyond the end of the volume")]
    OutOfRange,
    /// Local disk failed.
    #[error("local disk I/O error")]
    Io,
    /// Local disk not usable for the request.
    #[error("local disk is {0:?}: it must be UpToDate (resync it, or force with care)")]
    DiskState(DiskState),
    /// Peer is primary and two primaries are not allowed.
    #[error("peer is Primary and allow-two-primaries is off: demote the peer first (live migration sets it)")]
    PeerIsPrimary,
    /// The peer may be alive and writing: fence it first.
    #[error("peer state unknown and fencing is on: fence or outdate the peer first (fence action emitted)")]
    NeedFencing,
    /// Requests still in flight.
    #[error("requests are still in flight: wait for them before demoting")]
    Busy,
    /// Command needs a connected peer with both disks UpToDate.
    #[error("command needs a connected peer with both disks UpToDate")]
    NotConnected,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message to the peer.
    Send(Msg),
    /// Write the local disk; report with `handle_io_done(io, ..)`.
    DiskWrite {
        /// I/O id.
        io: u64,
        /// Byte offset.
        offset: u64,
        /// Bytes (shared with the copy sent to the peer).
        data: Bytes,
        /// Durable before completion.
        fua: bool,
    },
    /// Read the local disk; report the bytes with `handle_io_done`.
    DiskRead {
        /// I/O id.
        io: u64,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
    },
    /// Flush the local disk; report with `handle_io_done`.
    DiskFlush {
        /// I/O id.
        io: u64,
    },
    /// Write [`Replica::metadata`] durably before starting any later disk write.
    PersistMeta,
    /// Only the activity log changed (a write touched a cold extent): write it durably before
    /// starting any later disk write; the rest of the metadata need not be rewritten.
    PersistActivityLog,
    /// An application request finished.
    Complete {
        /// The request.
        req: ReqId,
        /// Outcome.
        result: Result<(), ReplicaError>,
    },
    /// Run the fence-peer handler; answer with `handle_fence_result`.
    FencePeer,
    /// Drop the connection (the driver then calls `handle_disconnected`).
    Disconnect,
}

/// Things worth telling an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Connection state changed.
    Conn(ConnState),
    /// Local disk state changed.
    Disk(DiskState),
    /// Role changed.
    Role(Role),
    /// Handshake decision.
    Decision(SyncDecision),
    /// Split brain found; how it was resolved (Disconnect = needs the operator).
    SplitBrain(SbResolution),
    /// Handshake refused: the text says why and what to do.
    Refused(String),
    /// Resync began (bytes to send or receive).
    ResyncStarted {
        /// This node sends.
        source: bool,
        /// Bytes marked.
        bytes: u64,
    },
    /// Resync finished.
    ResyncFinished,
    /// Verify found a differing block (now marked out of sync).
    VerifyMismatch {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
    },
    /// Verify finished.
    VerifyFinished {
        /// Bytes found out of sync.
        out_of_sync: u64,
    },
    /// I/O frozen after peer loss (resource-and-stonith).
    Frozen,
    /// I/O resumed.
    Resumed,
    /// Peer lost.
    PeerLost,
}

/// Resync progress for status output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResyncProgress {
    /// This node sends.
    pub source: bool,
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes to do in total.
    pub total_bytes: u64,
    /// Average rate since the resync started.
    pub bytes_per_sec: u64,
    /// Estimated seconds left (unknown until progress is made).
    pub eta_secs: Option<u64>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl std::fmt::Display for Status {
    /// Human-readable status, as `quorate replica status` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peer_role = self
            .peer_role
            .map_or("Unknown".to_string(), |r| format!("{r:?}"));
        writeln!(f, "role:        {:?}/{}", self.role, peer_role)?;
        writeln!(
            f,
            "connection:  {:?} (protocol {:?})",
            self.conn, self.protocol
        )?;
        writeln!(f, "disk:        {:?}/{:?}", self.disk, self.peer_disk)?;
        if let Some(r) = &self.resync {
            let pct = if r.total_bytes > 0 {
                100.0 * r.done_bytes as f64 / r.total_bytes as f64
            } else {
                100.0
            };
            let filled = ((pct / 5.0) as usize).min(20);
            let eta = r.eta_secs.map_or("unknown".to_string(), |s| {
                format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
            });
            writeln!(
                f,
                "resync:      [{}{}] {:.1}% {} {:.1}/{:.1} MiB at {:.1} MiB/s, ETA {}",
                "#".repeat(filled),
                ".".repeat(20 - filled),
                pct,
                if r.source { "sending" } else { "receiving" },
                mib(r.done_bytes),
                mib(r.total_bytes),
                mib(r.bytes_per_sec),
                eta
            )?;
        }
        writeln!(f, "out of sync: {:.1} MiB", mib(self.out_of_sync_bytes))?;
        if self.frozen {
            writeln!(
                f,
                "I/O:         FROZEN until the peer is fenced or outdated"
            )?;
        }
        match self.split_brain {
            Some(d) => write!(
                f,
                "split brain: {d:?}: choose a victim (`--discard-my-data`) and reconnect"
            ),
            None => write!(f, "split brain: none"),
        }
    }
}

/// Snapshot for `quorate replica status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Role.
    pub role: Role,
    /// Peer role if connected.
    pub peer_role: Option<Role>,
    /// Connection.
    pub conn: ConnState,
    /// Local disk.
    pub disk: DiskState,
    /// Peer disk (DUnknown when not connected).
    pub peer_disk: DiskState,
    /// Bytes marked out of sync.
    pub out_of_sync_bytes: u64,
    /// Resync progress, when syncing.
    pub resync: Option<ResyncProgress>,
    /// I/O frozen waiting for fencing.
    pub frozen: bool,
    /// Last split-brain decision, if the connection is refused because of it.
    pub split_brain: Option<SyncDecision>,
    /// Replication protocol.
    pub protocol: Protocol,
    /// This side's data was never primary anywhere (fresh generation identifiers).
    pub never_synced: bool,
    /// The same for the peer, when connected.
    pub peer_never_synced: Option<bool>,
    /// The peer was confirmed fenced or outdated since it was lost.
    pub peer_fenced: bool,
}

#[derive(Debug)]
struct AppWrite {
    req: ReqId,
    offset: u64,
    len: u64,
    replicated: bool,
    local_done: Option<Result<(), ReplicaError>>,
    peer_recv: bool,
    peer_done: bool,
    completed: bool,
    sent_at: Instant,
}

#[derive(Debug)]
struct AppFlush {
    req: ReqId,
    local_done: Option<Result<(), ReplicaError>>,
    epoch: Option<u64>,
}

#[derive(Debug, Clone)]
enum Held {
    Write {
        req: ReqId,
        offset: u64,
        data: Bytes,
        fua: bool,
    },
    Flush {
        req: ReqId,
    },
}

#[derive(Debug, Clone, Copy)]
enum Io {
    App(u64),
    AppFlush(u64),
    Peer(u64),
    BarrierFlush(u64),
    ResyncRead(u64, u32),
    ResyncWrite(u64, u32),
    VerifyRead(u64, u32),
    VerifyPeerRead(u64, u32, u32),
}

#[derive(Debug)]
struct Sync {
    source: bool,
    cursor: u64,
    in_flight: BTreeMap<u64, u32>,
    total_bytes: u64,
    done_bytes: u64,
    started: Instant,
    last_progress: Instant,
}

#[derive(Debug)]
struct Verify {
    cursor: u64,
    in_flight: BTreeSet<u64>,
    mismatched: u64,
}

/// One volume on one node.
#[derive(Debug)]
pub struct Replica {
    cfg: ReplicaConfig,
    meta: Metadata,
    role: Role,
    conn: ConnState,
    peer: Option<Hello>,
    rng: DetRng,
    crashed_primary: bool,
    discard_my_data: bool,
    peer_fenced: bool,
    frozen: bool,
    fence_retry_at: Option<Instant>,
    split_brain: Option<SyncDecision>,
    next_seq: u64,
    next_io: u64,
    writes: BTreeMap<u64, AppWrite>,
    flushes: BTreeMap<u64, AppFlush>,
    next_flush: u64,
    epoch: u64,
    held: VecDeque<Held>,
    io: BTreeMap<u64, Io>,
    peer_in_progress: BTreeSet<u64>,
    barriers: VecDeque<(u64, u64)>,
    barrier_flushing: bool,
    bitmap_sent: bool,
    bitmap_received: bool,
    pending_decision: Option<SyncDecision>,
    sync: Option<Sync>,
    verify: Option<Verify>,
    tokens: f64,
    last_refill: Instant,
    app_bytes: u64,
    app_window_start: Instant,
    app_rate: u64,
    last_rx: Instant,
    last_tx: Instant,
    ping_deadline: Option<Instant>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Replica {
    /// Attaches a volume with its stored metadata. A node whose metadata says it was primary crashed
    /// as primary: its activity-log extents are marked out of sync.
    pub fn new(cfg: ReplicaConfig, mut meta: Metadata, now: Instant, rng_seed: u64) -> Self {
        let crashed_primary = meta.flags.primary;
        if crashed_primary {
            let al = meta.al.clone();
            al.mark_dirty(&mut meta.bitmap);
        }
        meta.flags.dirty_shutdown = true;
        let mut r = Replica {
            cfg,
            meta,
            role: Role::Secondary,
            conn: ConnState::StandAlone,
            peer: None,
            rng: DetRng::new(rng_seed),
            crashed_primary,
            discard_my_data: false,
            peer_fenced: false,
            frozen: false,
            fence_retry_at: None,
            split_brain: None,
            next_seq: 1,
            next_io: 1,
            writes: BTreeMap::new(),
            flushes: BTreeMap::new(),
            next_flush: 1,
            epoch: 1,
            held: VecDeque::new(),
            io: BTreeMap::new(),
            peer_in_progress: BTreeSet::new(),
            barriers: VecDeque::new(),
            barrier_flushing: false,
            bitmap_sent: false,
            bitmap_received: false,
            pending_decision: None,
            sync: None,
            verify: None,
            tokens: 0.0,
            last_refill: now,
            app_bytes: 0,
            app_window_start: now,
            app_rate: 0,
            last_rx: now,
            last_tx: now,
            ping_deadline: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        r.actions.push_back(Action::PersistMeta);
        r
    }

    /// The metadata to persist (on [`Action::PersistMeta`]).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// Role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Connection state now.
    pub fn conn(&self) -> ConnState {
        self.conn
    }

    /// Local disk state.
    pub fn disk(&self) -> DiskState {
        self.meta.disk
    }

    /// Status snapshot.
    pub fn status(&self) -> Status {
        Status {
            role: self.role,
            peer_role: self.peer.as_ref().map(|h| h.role),
            conn: self.conn,
            disk: self.meta.disk,
            peer_disk: self
                .peer
                .as_ref()
                .map(|h| h.disk)
                .unwrap_or(DiskState::DUnknown),
            out_of_sync_bytes: self.meta.bitmap.dirty_bytes(),
            resync: self.sync.as_ref().map(|s| {
                let secs = s.last_progress.saturating_since(s.started).0 as f64 / 1e9;
                let rate = if secs > 0.0 {
                    (s.done_bytes as f64 / secs) as u64
                } else {
                    0
                };
                let left = s.total_bytes.saturating_sub(s.done_bytes);
                ResyncProgress {
                    source: s.source,
                    done_bytes: s.done_bytes,
                    total_bytes: s.total_bytes,
                    bytes_per_sec: rate,
                    eta_secs: (rate > 0).then(|| left / rate),
                }
            }),
            frozen: self.frozen,
            split_brain: self.split_brain,
            protocol: self.cfg.protocol,
            never_synced: self.meta.gen.is_fresh(),
            peer_never_synced: self.peer.as_ref().map(|h| h.gen.is_fresh()),
            peer_fenced: self.peer_fenced,
        }
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest time [`Replica::handle_timeout`] must be called.
    pub fn poll_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut min = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        if self.conn.linked() || self.conn == ConnState::WfReportParams {
            min(self.ping_deadline.unwrap_or(Instant(
                self.last_rx
                    .0
                    .max(self.last_tx.0)
                    .saturating_add(self.cfg.ping_interval.0),
            )));
            if let Some(t) = self.oldest_unacked() {
                min(Instant(t.0.saturating_add(self.cfg.ack_timeout.0)));
            }
            if self.wants_pump() {
                min(self.next_token_time());
            }
        }
        if let Some(t) = self.fence_retry_at {
            min(t);
        }
        d
    }

    fn oldest_unacked(&self) -> Option<Instant> {
        // Sequence order is submission order, so the first unacknowledged write is the oldest.
        self.writes
            .values()
            .find(|w| w.replicated && !w.peer_done)
            .map(|w| w.sent_at)
    }

    fn wants_pump(&self) -> bool {
        let src = self.sync.as_ref().is_some_and(|s| s.source);
        (src || self.verify.is_some()) && self.tokens < self.cfg.resync_chunk as f64
    }

    fn next_token_time(&self) -> Instant {
        let need = self.cfg.resync_chunk as f64 - self.tokens;
        let rate = self.sync_rate().max(1) as f64;
        Instant(self.last_refill.0 + ((need / rate) * 1e9) as u64 + 1)
    }

    fn sync_rate(&self) -> u64 {
        self.cfg
            .resync_max_rate
            .saturating_sub(self.app_rate)
            .max(self.cfg.resync_min_rate)
    }

    fn new_io(&mut self, kind: Io) -> u64 {
        let id = self.next_io;
        self.next_io += 1;
        self.io.insert(id, kind);
        id
    }

    fn send(&mut self, now: Instant, m: Msg) {
        self.last_tx = now;
        self.actions.push_back(Action::Send(m));
    }

    fn set_conn(&mut self, c: ConnState) {
        if self.conn != c {
            self.conn = c;
            self.events.push_back(Event::Conn(c));
        }
    }

    fn set_disk(&mut self, d: DiskState) {
        if self.meta.disk != d {
            self.meta.disk = d;
            self.events.push_back(Event::Disk(d));
            self.actions.push_back(Action::PersistMeta);
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            node_id: self.cfg.node_id,
            size: self.meta.size,
            granularity: self.meta.bitmap.granularity(),
            protocol: self.cfg.protocol,
            gen: self.meta.gen,
            role: self.role,
            disk: self.meta.disk,
            crashed_primary: self.crashed_primary,
            discard_my_data: self.discard_my_data,
            allow_two_primaries: self.cfg.allow_two_primaries,
            dirty_bits: self.meta.bitmap.count(),
        }
    }

    fn fresh_uuid(&mut self) -> u64 {
        self.rng.next_u64()
    }

    // ----- operator commands -----

    /// Start trying to connect (from StandAlone); the driver connects and calls `handle_connected`.
    pub fn connect(&mut self) {
        if self.conn == ConnState::StandAlone {
            self.set_conn(ConnState::WfConnection);
        }
    }

    /// Operator disconnect: drop the link and stay StandAlone.
    pub fn disconnect(&mut self, now: Instant) {
        if self.conn != ConnState::StandAlone {
            self.actions.push_back(Action::Disconnect);
            self.lose_peer(now);
            self.set_conn(ConnState::StandAlone);
        }
    }

    /// Choose this node as the split-brain victim for the next handshake (`--discard-my-data`).
    pub fn discard_my_data(&mut self) {
        self.discard_my_data = true;
    }

    /// Mark the local disk Outdated (what the fence handler asks of a secondary peer).
    pub fn outdate(&mut self) -> Result<(), ReplicaError> {
        if self.role == Role::Primary {
            return Err(ReplicaError::Busy);
        }
        if matches!(self.meta.disk, DiskState::UpToDate | DiskState::Consistent) {
            self.set_disk(DiskState::Outdated);
        }
        Ok(())
    }

    /// Become primary. `force` accepts a disk that is not UpToDate (initial sync, or data of last resort)
    /// and skips the fencing requirement.
    pub fn promote(&mut self, now: Instant, force: bool) -> Result<(), ReplicaError> {
        if self.role == Role::Primary {
            return Ok(());
        }
        let disk = self.meta.disk;
        if disk != DiskState::UpToDate && !(force && disk > DiskState::Failed) {
            return Err(ReplicaError::DiskState(disk));
        }
        let connected = self.conn.linked();
        if let Some(p) = &self.peer {
            if connected
                && p.role == Role::Primary
                && !(self.cfg.allow_two_primaries && p.allow_two_primaries)
            {
                return Err(ReplicaError::PeerIsPrimary);
            }
        }
        if !connected && self.cfg.fencing != Fencing::DontCare && !self.peer_fenced && !force {
            self.actions.push_back(Action::FencePeer);
            return Err(ReplicaError::NeedFencing);
        }
        // Beside a primary peer (a live migration's window) only two identical copies qualify:
        // linked with no resync running and both UpToDate. Nothing is synced either way then: the
        // peer is serving its data.
        let peer_primary = connected && self.peer.as_ref().is_some_and(|p| p.role == Role::Primary);
        if peer_primary
            && (self.conn != ConnState::Connected
                || self
                    .peer
                    .as_ref()
                    .is_some_and(|p| p.disk != DiskState::UpToDate)
                || disk != DiskState::UpToDate)
        {
            return Err(ReplicaError::NotConnected);
        }
        // A forced primary whose data is new to the peer (either side fresh) overwrites the peer.
        let sync_peer = connected
            && !peer_primary
            && (self.meta.gen.is_fresh() || self.peer.as_ref().is_some_and(|p| p.gen.is_fresh()));
        if !connected || self.meta.gen.is_fresh() {
            let v = self.fresh_uuid();
            self.meta.gen.new_current(v, false, true);
        }
        self.set_disk(DiskState::UpToDate);
        self.role = Role::Primary;
        self.meta.flags.primary = true;
        self.actions.push_back(Action::PersistMeta);
        self.events.push_back(Event::Role(Role::Primary));
        if connected {
            self.send(
                now,
                Msg::State {
                    role: self.role,
                    disk: self.meta.disk,
                },
            );
            if sync_peer {
                self.meta.bitmap.set_all();
                self.start_sync(now, true);
            }
        }
        Ok(())
    }

    /// Become secondary (no application request may be in flight).
    pub fn demote(&mut self, now: Instant) -> Result<(), ReplicaError> {
        if self.role == Role::Secondary {
            return Ok(());
        }
        if self.writes.values().any(|w| !w.completed)
            || !self.flushes.is_empty()
            || !self.held.is_empty()
        {
            return Err(ReplicaError::Busy);
        }
        self.role = Role::Secondary;
        self.meta.flags.primary = false;
        self.actions.push_back(Action::PersistMeta);
        self.events.push_back(Event::Role(Role::Secondary));
        if self.conn.linked() {
            self.send(
                now,
                Msg::State {
                    role: self.role,
                    disk: self.meta.disk,
                },
            );
        }
        Ok(())
    }

    /// Start an online verify (this node hashes and sends; mismatches are marked out of sync).
    pub fn start_verify(&mut self, now: Instant) -> Result<(), ReplicaError> {
        let ok = self.conn == ConnState::Connected
            && self.meta.disk == DiskState::UpToDate
            && self
                .peer
                .as_ref()
                .is_some_and(|p| p.disk == DiskState::UpToDate);
        if !ok {
            return Err(ReplicaError::NotConnected);
        }
        self.verify = Some(Verify {
            cursor: 0,
            in_flight: BTreeSet::new(),
            mismatched: 0,
        });
        self.set_conn(ConnState::VerifyS);
        self.last_refill = now;
        self.tokens = self.burst();
        self.pump(now);
        Ok(())
    }

    /// Clean shutdown: clears the dirty-shutdown flag (call when no I/O is in flight).
    pub fn detach(&mut self) {
        self.meta.flags.dirty_shutdown = false;
        self.actions.push_back(Action::PersistMeta);
    }

    /// Checks that the application may read `[offset, offset+len)` from the local disk.
    pub fn check_read(&self, offset: u64, len: u64) -> Result<(), ReplicaError> {
        if self.role != Role::Primary {
            return Err(ReplicaError::NotPrimary);
        }
        if self.meta.disk != DiskState::UpToDate {
            return Err(ReplicaError::DiskState(self.meta.disk));
        }
        if offset.checked_add(len).is_none_or(|e| e > self.meta.size) {
            return Err(ReplicaError::OutOfRange);
        }
        Ok(())
    }

    // ----- application I/O -----

    /// An application write. Completion comes as [`Action::Complete`].
    pub fn handle_write(
        &mut self,
        now: Instant,
        req: ReqId,
        offset: u64,
        data: impl Into<Bytes>,
        fua: bool,
    ) {
        let data: Bytes = data.into();
        let len = data.len() as u64;
        if let Err(e) = self.check_read(offset, len) {
            self.actions.push_back(Action::Complete {
                req,
                result: Err(e),
            });
            return;
        }
        if self.frozen || self.blocked_by_resync(offset, len) {
            self.held.push_back(Held::Write {
                req,
                offset,
                data,
                fua,
            });
            return;
        }
        if self.meta.al.touch(offset, len) {
            self.actions.push_back(Action::PersistActivityLog);
        }
        self.account_app(now, len);
        let seq = self.next_seq;
        self.next_seq += 1;
        let replicated = self.conn.linked()
            && self
                .peer
                .as_ref()
                .is_some_and(|p| p.disk != DiskState::Diskless);
        if replicated {
            self.send(
                now,
                Msg::Data {
                    seq,
                    offset,
                    fua,
                    data: data.clone(),
                },
            );
        } else {
            self.meta.bitmap.set_range(offset, len);
        }
        self.writes.insert(
            seq,
            AppWrite {
                req,
                offset,
                len,
                replicated,
                local_done: None,
                peer_recv: false,
                peer_done: !replicated,
                completed: false,
                sent_at: now,
            },
        );
        let io = self.new_io(Io::App(seq));
        self.actions.push_back(Action::DiskWrite {
            io,
            offset,
            data,
            fua,
        });
    }

    /// An application flush: completes when every write completed before it is durable here and,
    /// under protocols B and C, on the peer.
    pub fn handle_flush(&mut self, now: Instant, req: ReqId) {
        if self.role != Role::Primary {
            self.actions.push_back(Action::Complete {
                req,
                result: Err(ReplicaError::NotPrimary),
            });
            return;
        }
        if self.frozen {
            self.held.push_back(Held::Flush { req });
            return;
        }
        let id = self.next_flush;
        self.next_flush += 1;
        let epoch = if self.conn.linked() && self.cfg.protocol != Protocol::A {
            let e = self.epoch;
            self.epoch += 1;
            self.send(
                now,
                Msg::Barrier {
                    epoch: e,
                    before_seq: self.next_seq,
                },
            );
            Some(e)
        } else {
            None
        };
        self.flushes.insert(
            id,
            AppFlush {
                req,
                local_done: None,
                epoch,
            },
        );
        let io = self.new_io(Io::AppFlush(id));
        self.actions.push_back(Action::DiskFlush { io });
    }

    fn blocked_by_resync(&self, offset: u64, len: u64) -> bool {
        self.sync.as_ref().is_some_and(|s| {
            s.source
                && s.in_flight
                    .range(..offset.saturating_add(len))
                    .any(|(o, l)| o + *l as u64 > offset)
        })
    }

    fn account_app(&mut self, now: Instant, len: u64) {
        let window = now.0.saturating_sub(self.app_window_start.0);
        if window >= 100_000_000 {
            self.app_rate = self.app_bytes * 1_000_000_000 / window.max(1);
            self.app_bytes = 0;
            self.app_window_start = now;
        }
        self.app_bytes += len;
    }

    fn try_complete_write(&mut self, seq: u64) {
        let proto = self.cfg.protocol;
        let Some(w) = self.writes.get_mut(&seq) else {
            return;
        };
        if !w.completed {
            if let Some(local) = &w.local_done {
                let peer_ok = !w.replicated
                    || match proto {
                        Protocol::A => true,
                        Protocol::B => w.peer_recv || w.peer_done,
                        Protocol::C => w.peer_done,
                    };
                if peer_ok && (!self.frozen || w.peer_done) {
                    w.completed = true;
                    self.actions.push_back(Action::Complete {
                        req: w.req,
                        result: local.clone(),
                    });
                }
            }
        }
        if w.completed && w.peer_done {
            self.writes.remove(&seq);
        }
    }

    fn try_complete_flush(&mut self, id: u64) {
        let Some(f) = self.flushes.get(&id) else {
            return;
        };
        if let Some(local) = &f.local_done {
            if f.epoch.is_none() {
                let (req, result) = (f.req, local.clone());
                self.flushes.remove(&id);
                self.actions.push_back(Action::Complete { req, result });
            }
        }
    }

    // ----- connection -----

    /// The driver connected to the peer: send our parameters.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.conn == ConnState::StandAlone {
            return;
        }
        self.peer = None;
        self.last_rx = now;
        self.ping_deadline = None;
        self.bitmap_sent = false;
        self.bitmap_received = false;
        self.pending_decision = None;
        self.set_conn(ConnState::WfReportParams);
        let h = self.hello();
        self.send(now, Msg::Hello(h));
    }

    /// The connection broke (or the driver dropped it after [`Action::Disconnect`]).
    pub fn handle_disconnected(&mut self, now: Instant) {
        if self.conn == ConnState::StandAlone {
            self.lose_peer(now);
            return;
        }
        self.lose_peer(now);
        self.set_conn(ConnState::WfConnection);
    }

    fn lose_peer(&mut self, now: Instant) {
        let was_linked = self.conn.linked() || self.peer.is_some();
        self.peer = None;
        self.sync = None;
        self.verify = None;
        self.ping_deadline = None;
        self.barriers.clear();
        self.barrier_flushing = false;
        if !was_linked {
            return;
        }
        self.events.push_back(Event::PeerLost);
        if self.meta.disk == DiskState::Inconsistent {
            // Interrupted resync target: stays Inconsistent, bitmap kept for the next attempt.
        }
        if self.role == Role::Primary {
            let v = self.fresh_uuid();
            self.meta.gen.new_current(v, true, true);
            self.actions.push_back(Action::PersistMeta);
            match self.cfg.fencing {
                Fencing::DontCare => {}
                Fencing::ResourceOnly => self.actions.push_back(Action::FencePeer),
                Fencing::ResourceAndStonith => {
                    self.frozen = true;
                    self.peer_fenced = false;
                    self.events.push_back(Event::Frozen);
                    self.actions.push_back(Action::FencePeer);
                    self.fence_retry_at = Some(Instant(now.0 + self.cfg.fence_retry.0));
                }
            }
        }
        self.peer_fenced = false;
        if self.role == Role::Primary && self.cfg.fencing == Fencing::ResourceAndStonith {
            return; // writes stay pending until fenced
        }
        self.settle_unacked(now);
    }

    /// Writes and flushes the peer will never acknowledge: mark out of sync and complete.
    fn settle_unacked(&mut self, now: Instant) {
        let seqs: Vec<u64> = self.writes.keys().copied().collect();
        for seq in seqs {
            if let Some(w) = self.writes.get_mut(&seq) {
                if !w.peer_done {
                    w.peer_done = true;
                    let (o, l) = (w.offset, w.len);
                    self.meta.bitmap.set_range(o, l);
                }
            }
            self.try_complete_write(seq);
        }
        let ids: Vec<u64> = self.flushes.keys().copied().collect();
        for id in ids {
            if let Some(f) = self.flushes.get_mut(&id) {
                f.epoch = None;
            }
            self.try_complete_flush(id);
        }
        self.release_held(now);
    }

    fn release_held(&mut self, now: Instant) {
        let held: Vec<Held> = self.held.drain(..).collect();
        for h in held {
            match h {
                Held::Write {
                    req,
                    offset,
                    data,
                    fua,
                } => self.handle_write(now, req, offset, data, fua),
                Held::Flush { req } => self.handle_flush(now, req),
            }
        }
    }

    /// Result of the fence-peer handler.
    pub fn handle_fence_result(&mut self, now: Instant, outcome: FenceOutcome) {
        match outcome {
            FenceOutcome::Failed => {
                if self.frozen {
                    self.fence_retry_at = Some(Instant(now.0 + self.cfg.fence_retry.0));
                }
            }
            FenceOutcome::PeerFenced | FenceOutcome::PeerOutdated => {
                self.peer_fenced = true;
                self.fence_retry_at = None;
                if self.frozen && !self.conn.linked() {
                    self.unfreeze(now);
                }
            }
        }
    }

    fn unfreeze(&mut self, now: Instant) {
        self.frozen = false;
        self.fence_retry_at = None;
        self.events.push_back(Event::Resumed);
        self.settle_unacked(now);
    }

    /// Timer expiry: pings, peer-loss detection, resync pacing, fence retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = self.fence_retry_at {
            if now >= t && self.frozen {
                self.actions.push_back(Action::FencePeer);
                self.fence_retry_at = Some(Instant(now.0 + self.cfg.fence_retry.0));
            }
        }
        if !(self.conn.linked() || self.conn == ConnState::WfReportParams) {
            return;
        }
        if let Some(d) = self.ping_deadline {
            if now >= d {
                self.peer_timeout(now);
                return;
            }
        }
        // A write the peer does not acknowledge in time expels the peer (DRBD's ko-count), even
        // if it still answers pings (a hung disk).
        if self
            .oldest_unacked()
            .is_some_and(|t| now.0 >= t.0.saturating_add(self.cfg.ack_timeout.0))
        {
            self.peer_timeout(now);
            return;
        }
        if self.ping_deadline.is_none()
            && now.0
                >= self
                    .last_rx
                    .0
                    .max(self.last_tx.0)
                    .saturating_add(self.cfg.ping_interval.0)
        {
            self.send(now, Msg::Ping);
            self.ping_deadline = Some(Instant(now.0 + self.cfg.ping_timeout.0));
        }
        self.pump(now);
    }

    fn peer_timeout(&mut self, now: Instant) {
        tracing::warn!("replication peer not answering: disconnecting");
        self.actions.push_back(Action::Disconnect);
        self.handle_disconnected(now);
    }

    /// A message from the peer.
    pub fn handle_msg(&mut self, now: Instant, msg: Msg) {
        self.last_rx = now;
        self.ping_deadline = None;
        match msg {
            Msg::Hello(h) => self.on_hello(now, h),
            Msg::Ping => self.send(now, Msg::PingAck),
            Msg::PingAck => {}
            Msg::State { role, disk } => {
                if let Some(p) = &mut self.peer {
                    p.role = role;
                    p.disk = disk;
                }
                if role == Role::Primary
                    && self.role == Role::Primary
                    && !self.cfg.allow_two_primaries
                {
                    self.refuse(now, "both nodes are Primary and allow-two-primaries is off");
                }
            }
            Msg::Data {
                seq,
                offset,
                fua,
                data,
            } => {
                if !self.conn.linked()
                    || offset
                        .checked_add(data.len() as u64)
                        .is_none_or(|e| e > self.meta.size)
                {
                    self.send(now, Msg::NegAck { seq });
                    return;
                }
                if self.cfg.protocol == Protocol::B {
                    self.send(now, Msg::RecvAck { seq });
                }
                if self.role == Role::Primary && self.meta.al.touch(offset, data.len() as u64) {
                    self.actions.push_back(Action::PersistMeta);
                }
                self.peer_in_progress.insert(seq);
                let io = self.new_io(Io::Peer(seq));
                self.actions.push_back(Action::DiskWrite {
                    io,
                    offset,
                    data,
                    fua,
                });
            }
            Msg::RecvAck { seq } => {
                if let Some(w) = self.writes.get_mut(&seq) {
                    w.peer_recv = true;
                }
                self.try_complete_write(seq);
            }
            Msg::WriteAck { seq } | Msg::NegAck { seq } => {
                let neg = matches!(msg, Msg::NegAck { .. });
                if let Some(w) = self.writes.get_mut(&seq) {
                    if !w.peer_done {
                        w.peer_done = true;
                        w.peer_recv = true;
                        if neg {
                            let (o, l) = (w.offset, w.len);
                            self.meta.bitmap.set_range(o, l);
                        }
                    }
                }
                self.try_complete_write(seq);
            }
            Msg::Barrier { epoch, before_seq } => {
                self.barriers.push_back((epoch, before_seq));
                self.check_barriers();
            }
            Msg::BarrierAck { epoch } => {
                let ids: Vec<u64> = self
                    .flushes
                    .iter()
                    .filter(|(_, f)| f.epoch.is_some_and(|e| e <= epoch))
                    .map(|(i, _)| *i)
                    .collect();
                for id in ids {
                    if let Some(f) = self.flushes.get_mut(&id) {
                        f.epoch = None;
                    }
                    self.try_complete_flush(id);
                }
            }
            Msg::Bitmap { start_word, words } => {
                if self.conn == ConnState::WfBitmap {
                    if let Ok(s) = usize::try_from(start_word) {
                        self.meta.bitmap.merge_words(s, &words);
                    }
                }
            }
            Msg::BitmapDone => {
                if self.conn == ConnState::WfBitmap {
                    self.bitmap_received = true;
                    self.maybe_start_sync(now);
                }
            }
            Msg::ResyncData { offset, data } => {
                let len = data.len() as u32;
                if offset
                    .checked_add(len as u64)
                    .is_none_or(|e| e > self.meta.size)
                {
                    self.refuse(now, "peer sent resync data beyond the end of the volume");
                    return;
                }
                if self.conn == ConnState::Connected && self.sync.is_none() {
                    // Initial full sync started by a forced primary.
                    self.sync = Some(Sync {
                        source: false,
                        cursor: 0,
                        in_flight: BTreeMap::new(),
                        total_bytes: self.meta.size,
                        done_bytes: 0,
                        started: now,
                        last_progress: now,
                    });
                    self.set_disk(DiskState::Inconsistent);
                    self.set_conn(ConnState::SyncTarget);
                }
                let io = self.new_io(Io::ResyncWrite(offset, len));
                self.actions.push_back(Action::DiskWrite {
                    io,
                    offset,
                    data,
                    fua: false,
                });
            }
            Msg::ResyncAck { offset, len } => self.on_resync_ack(now, offset, len),
            Msg::ResyncDone { gen } => {
                if self.conn == ConnState::SyncTarget {
                    self.meta.gen = gen;
                    self.meta.gen.current &= !1;
                    // The source's identifiers are known again (its handshake's are stale now).
                    if let Some(p) = &mut self.peer {
                        p.gen = gen;
                        p.disk = DiskState::UpToDate;
                    }
                    self.meta.bitmap.clear_all();
                    self.sync = None;
                    self.crashed_primary = false;
                    self.meta.flags.primary = self.role == Role::Primary;
                    self.set_disk(DiskState::UpToDate);
                    self.actions.push_back(Action::PersistMeta);
                    self.set_conn(ConnState::Connected);
                    self.events.push_back(Event::ResyncFinished);
                }
            }
            Msg::VerifyReq {
                offset,
                len,
                digest,
            } => {
                if offset
                    .checked_add(len as u64)
                    .is_none_or(|e| e > self.meta.size)
                {
                    return;
                }
                let io = self.new_io(Io::VerifyPeerRead(offset, len, digest));
                self.actions.push_back(Action::DiskRead { io, offset, len });
            }
            Msg::VerifyReply { offset, len, equal } => {
                let Some(v) = &mut self.verify else { return };
                if !v.in_flight.remove(&offset) {
                    return;
                }
                if !equal {
                    v.mismatched += len as u64;
                    self.meta.bitmap.set_range(offset, len as u64);
                    self.events.push_back(Event::VerifyMismatch { offset, len });
                }
                self.pump(now);
            }
        }
    }

    fn refuse(&mut self, now: Instant, why: &str) {
        tracing::warn!(reason = why, "replication connection refused");
        self.events.push_back(Event::Refused(why.to_string()));
        self.actions.push_back(Action::Disconnect);
        self.lose_peer(now);
        self.set_conn(ConnState::StandAlone);
    }

    fn on_hello(&mut self, now: Instant, h: Hello) {
        if self.conn != ConnState::WfReportParams {
            return;
        }
        if h.protocol != self.cfg.protocol {
            return self.refuse(
                now,
                &format!(
                    "protocol mismatch: peer uses {:?}, we use {:?}; set the same protocol on both nodes",
                    h.protocol, self.cfg.protocol
                ),
            );
        }
        if h.size != self.meta.size || h.granularity != self.meta.bitmap.granularity() {
            return self.refuse(
                now,
                &format!(
                    "size mismatch: peer {} bytes (bitmap {}), we {} bytes (bitmap {}); backing disks must match",
                    h.size,
                    h.granularity,
                    self.meta.size,
                    self.meta.bitmap.granularity()
                ),
            );
        }
        let two = self.role == Role::Primary && h.role == Role::Primary;
        let tie = self.cfg.node_id < h.node_id;
        let mut d = uuid_compare(
            &self.meta.gen,
            CrashFlags {
                crashed_primary: self.crashed_primary,
            },
            &h.gen,
            CrashFlags {
                crashed_primary: h.crashed_primary,
            },
            tie,
        );
        self.events.push_back(Event::Decision(d));
        if two
            && !(self.cfg.allow_two_primaries && h.allow_two_primaries && d == SyncDecision::NoSync)
        {
            self.split_brain = Some(d);
            return self.refuse(now, "both nodes are Primary: demote one (split brain)");
        }
        if matches!(d, SyncDecision::SplitBrain) {
            let me = SbSide {
                primary: self.role == Role::Primary,
                changes: self.meta.bitmap.count(),
                was_primary_at_split: self.meta.gen.bitmap & 1 == 1,
                discard_my_data: self.discard_my_data,
            };
            let peer = SbSide {
                primary: h.role == Role::Primary,
                changes: h.dirty_bits,
                was_primary_at_split: h.gen.bitmap & 1 == 1,
                discard_my_data: h.discard_my_data,
            };
            let r = resolve_split_brain(&self.cfg.split_brain, me, peer, tie);
            self.events.push_back(Event::SplitBrain(r));
            d = match r {
                SbResolution::IAmSource => SyncDecision::BitmapSource,
                SbResolution::IAmTarget if self.role == Role::Primary => {
                    self.split_brain = Some(SyncDecision::SplitBrain);
                    return self.refuse(
                        now,
                        "split brain: this Primary's data would be discarded; demote it first",
                    );
                }
                SbResolution::IAmTarget => SyncDecision::BitmapTarget,
                SbResolution::Disconnect => {
                    self.split_brain = Some(SyncDecision::SplitBrain);
                    return self.refuse(
                        now,
                        "split brain: run `quorate replica connect --discard-my-data` on the victim",
                    );
                }
            };
        }
        match d {
            SyncDecision::SplitBrainUnresolvable | SyncDecision::UnrelatedData => {
                self.split_brain = Some(d);
                return self.refuse(
                    now,
                    "the nodes' data generations share no usable ancestor: choose a victim and re-create its metadata",
                );
            }
            SyncDecision::FullTarget | SyncDecision::BitmapTarget if self.role == Role::Primary => {
                return self.refuse(
                    now,
                    "this Primary would become sync target: demote it first",
                );
            }
            _ => {}
        }
        self.split_brain = None;
        self.discard_my_data = false;
        let (h_dirty, h_role) = (h.dirty_bits, h.role);
        self.peer = Some(h);
        self.crashed_primary = false;
        self.meta.flags.primary = self.role == Role::Primary;
        // Equal generations but blocks marked out of sync (online verify, failed peer writes):
        // resync them, the primary (or the lower node id) being the source.
        if d == SyncDecision::NoSync && (self.meta.bitmap.count() > 0 || h_dirty > 0) {
            let i_win = match (self.role, h_role) {
                (Role::Primary, Role::Secondary) => true,
                (Role::Secondary, Role::Primary) => false,
                _ => tie,
            };
            d = if i_win {
                SyncDecision::BitmapSource
            } else {
                SyncDecision::BitmapTarget
            };
        }
        match d {
            SyncDecision::NoSync | SyncDecision::BothFresh => {
                if let Some(p) = &self.peer {
                    if d == SyncDecision::NoSync
                        && p.disk == DiskState::UpToDate
                        && matches!(self.meta.disk, DiskState::Consistent | DiskState::Outdated)
                    {
                        self.set_disk(DiskState::UpToDate);
                    }
                }
                self.meta.bitmap.clear_all();
                self.actions.push_back(Action::PersistMeta);
                self.set_conn(ConnState::Connected);
                self.connected_now(now);
            }
            SyncDecision::FullSource | SyncDecision::FullTarget => {
                self.meta.bitmap.set_all();
                self.exchange_bitmaps(now, d);
            }
            _ => self.exchange_bitmaps(now, d),
        }
    }

    fn exchange_bitmaps(&mut self, now: Instant, d: SyncDecision) {
        self.pending_decision = Some(d);
        self.set_conn(ConnState::WfBitmap);
        let words = self.meta.bitmap.words().to_vec();
        for (i, c) in words.chunks(4096).enumerate() {
            self.send(
                now,
                Msg::Bitmap {
                    start_word: (i * 4096) as u64,
                    words: c.to_vec(),
                },
            );
        }
        self.send(now, Msg::BitmapDone);
        self.bitmap_sent = true;
        self.maybe_start_sync(now);
    }

    fn maybe_start_sync(&mut self, now: Instant) {
        if !(self.bitmap_sent && self.bitmap_received) {
            return;
        }
        let Some(d) = self.pending_decision.take() else {
            return;
        };
        let source = matches!(d, SyncDecision::BitmapSource | SyncDecision::FullSource);
        self.actions.push_back(Action::PersistMeta);
        self.start_sync(now, source);
    }

    fn start_sync(&mut self, now: Instant, source: bool) {
        let bytes = self.meta.bitmap.dirty_bytes().min(self.meta.size);
        self.events
            .push_back(Event::ResyncStarted { source, bytes });
        self.sync = Some(Sync {
            source,
            cursor: 0,
            in_flight: BTreeMap::new(),
            total_bytes: bytes,
            done_bytes: 0,
            started: now,
            last_progress: now,
        });
        if source {
            if let Some(p) = &mut self.peer {
                p.disk = DiskState::Inconsistent;
            }
            self.set_conn(ConnState::SyncSource);
            self.last_refill = now;
            self.tokens = self.burst();
        } else {
            self.set_disk(DiskState::Inconsistent);
            self.set_conn(ConnState::SyncTarget);
        }
        self.connected_now(now);
        self.pump(now);
    }

    /// Things to do once replication works again: resume frozen I/O, settle writes the old link lost.
    fn connected_now(&mut self, now: Instant) {
        if self.frozen {
            self.unfreeze(now);
        }
    }

    fn burst(&self) -> f64 {
        (self.cfg.resync_chunk as f64) * self.cfg.resync_in_flight as f64
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.0.saturating_sub(self.last_refill.0) as f64 / 1e9;
        self.last_refill = now;
        self.tokens = (self.tokens + dt * self.sync_rate() as f64).min(self.burst());
    }

    fn pump(&mut self, now: Instant) {
        self.refill(now);
        let g = self.meta.bitmap.granularity() as u64;
        let size = self.meta.size;
        let chunk_bits = (self.cfg.resync_chunk as u64 / g).max(1);
        // A block whose application write has not reached the local disk yet is not read for
        // the resync now: the read would send the older data, and once the peer acknowledged it
        // the bit is clear while the newer data never reaches the peer. It is read once the
        // write is on disk (handle_io_done pumps again).
        let writes = &self.writes;
        let unwritten = |o: u64, l: u64| {
            writes
                .values()
                .any(|w| w.local_done.is_none() && w.offset < o + l && o < w.offset + w.len)
        };
        if let Some(s) = &mut self.sync {
            if s.source {
                let mut wrapped = false;
                while s.in_flight.len() < self.cfg.resync_in_flight && self.tokens >= 1.0 {
                    let Some(first) = self.meta.bitmap.next_set(s.cursor) else {
                        if wrapped || s.cursor == 0 {
                            break;
                        }
                        // Bits set behind the cursor (a NegAck, say): sweep again once.
                        wrapped = true;
                        s.cursor = 0;
                        continue;
                    };
                    let offset = first * g;
                    if let Some((o, l)) = s.in_flight.range(..=offset).next_back() {
                        if o + *l as u64 > offset {
                            s.cursor = (o + *l as u64).div_ceil(g);
                            continue;
                        }
                    }
                    if unwritten(offset, g) {
                        s.cursor = first + 1;
                        continue;
                    }
                    let mut last = first;
                    while last + 1 - first < chunk_bits
                        && self.meta.bitmap.test(last + 1)
                        && !s.in_flight.contains_key(&((last + 1) * g))
                        && !unwritten((last + 1) * g, g)
                    {
                        last += 1;
                    }
                    s.cursor = last + 1;
                    let len = ((last + 1) * g).min(size) - offset;
                    s.in_flight.insert(offset, len as u32);
                    self.tokens -= len as f64;
                    let io = self.next_io;
                    self.next_io += 1;
                    self.io.insert(io, Io::ResyncRead(offset, len as u32));
                    self.actions.push_back(Action::DiskRead {
                        io,
                        offset,
                        len: len as u32,
                    });
                }
                if s.in_flight.is_empty() && self.meta.bitmap.count() == 0 {
                    self.finish_sync_source(now);
                }
            }
        }
        if let Some(v) = &mut self.verify {
            let step = self.cfg.resync_chunk as u64;
            while v.in_flight.len() < self.cfg.resync_in_flight
                && self.tokens >= 1.0
                && v.cursor < size
            {
                let offset = v.cursor;
                let len = step.min(size - offset);
                v.cursor += len;
                v.in_flight.insert(offset);
                self.tokens -= len as f64;
                let io = self.next_io;
                self.next_io += 1;
                self.io.insert(io, Io::VerifyRead(offset, len as u32));
                self.actions.push_back(Action::DiskRead {
                    io,
                    offset,
                    len: len as u32,
                });
            }
            if v.cursor >= size && v.in_flight.is_empty() {
                let out = v.mismatched;
                self.verify = None;
                self.events
                    .push_back(Event::VerifyFinished { out_of_sync: out });
                self.actions.push_back(Action::PersistMeta);
                self.set_conn(ConnState::Connected);
            }
        }
    }

    fn finish_sync_source(&mut self, now: Instant) {
        self.sync = None;
        self.meta.gen.finish_resync_source();
        if let Some(p) = &mut self.peer {
            p.disk = DiskState::UpToDate;
            // The target adopts these identifiers on ResyncDone.
            p.gen = self.meta.gen;
            p.gen.current &= !1;
        }
        self.actions.push_back(Action::PersistMeta);
        let gen = self.meta.gen;
        self.send(now, Msg::ResyncDone { gen });
        self.set_conn(ConnState::Connected);
        self.events.push_back(Event::ResyncFinished);
    }

    fn on_resync_ack(&mut self, now: Instant, offset: u64, len: u32) {
        let Some(s) = &mut self.sync else { return };
        if !s.source || s.in_flight.remove(&offset).is_none() {
            return;
        }
        s.done_bytes += len as u64;
        s.last_progress = now;
        self.meta.bitmap.clear_range(offset, len as u64);
        // Writes that waited for this block can go now.
        let held: Vec<Held> = self.held.drain(..).collect();
        for h in held {
            match h {
                Held::Write {
                    req,
                    offset,
                    data,
                    fua,
                } => self.handle_write(now, req, offset, data, fua),
                Held::Flush { req } => self.handle_flush(now, req),
            }
        }
        self.pump(now);
    }

    fn check_barriers(&mut self) {
        if self.barrier_flushing {
            return;
        }
        if let Some(&(epoch, before)) = self.barriers.front() {
            if self.peer_in_progress.range(..before).next().is_none() {
                self.barrier_flushing = true;
                let io = self.new_io(Io::BarrierFlush(epoch));
                self.actions.push_back(Action::DiskFlush { io });
            }
        }
    }

    /// A local disk operation finished: `Ok(data)` (read bytes for a read, empty otherwise) or an error.
    pub fn handle_io_done(&mut self, now: Instant, io: u64, result: Result<Vec<u8>, ()>) {
        let Some(kind) = self.io.remove(&io) else {
            return;
        };
        let ok = result.is_ok();
        match kind {
            Io::App(seq) => {
                if let Some(w) = self.writes.get_mut(&seq) {
                    w.local_done = Some(if ok { Ok(()) } else { Err(ReplicaError::Io) });
                }
                if !ok {
                    self.set_disk(DiskState::Failed);
                }
                self.try_complete_write(seq);
                // A resync may have passed over this block while it was unwritten.
                if self.sync.as_ref().is_some_and(|s| s.source) {
                    self.pump(now);
                }
            }
            Io::AppFlush(id) => {
                if let Some(f) = self.flushes.get_mut(&id) {
                    f.local_done = Some(if ok { Ok(()) } else { Err(ReplicaError::Io) });
                }
                self.try_complete_flush(id);
            }
            Io::Peer(seq) => {
                self.peer_in_progress.remove(&seq);
                if self.conn.linked() {
                    let m = if ok {
                        Msg::WriteAck { seq }
                    } else {
                        Msg::NegAck { seq }
                    };
                    self.send(now, m);
                }
                self.check_barriers();
            }
            Io::BarrierFlush(epoch) => {
                self.barrier_flushing = false;
                self.barriers.pop_front();
                if self.conn.linked() && ok {
                    self.send(now, Msg::BarrierAck { epoch });
                }
                self.check_barriers();
            }
            Io::ResyncRead(offset, len) => match result {
                Ok(data) if data.len() == len as usize && self.sync.is_some() => {
                    self.send(
                        now,
                        Msg::ResyncData {
                            offset,
                            data: data.into(),
                        },
                    );
                }
                _ => {
                    if let Some(s) = &mut self.sync {
                        s.in_flight.remove(&offset);
                    }
                }
            },
            Io::ResyncWrite(offset, len) => {
                if ok {
                    if let Some(s) = &mut self.sync {
                        s.done_bytes += len as u64;
                        s.last_progress = now;
                    }
                    // Received blocks need no resync if this one is interrupted.
                    self.meta.bitmap.clear_range(offset, len as u64);
                    if self.conn.linked() {
                        self.send(now, Msg::ResyncAck { offset, len });
                    }
                }
            }
            Io::VerifyRead(offset, len) => {
                if let (Ok(data), true) = (result, self.verify.is_some()) {
                    let digest = crc32fast::hash(&data);
                    self.send(
                        now,
                        Msg::VerifyReq {
                            offset,
                            len,
                            digest,
                        },
                    );
                }
            }
            Io::VerifyPeerRead(offset, len, digest) => {
                let equal = matches!(&result, Ok(d) if crc32fast::hash(d) == digest);
                if !equal {
                    self.meta.bitmap.set_range(offset, len as u64);
                }
                if self.conn.linked() {
                    self.send(now, Msg::VerifyReply { offset, len, equal });
                }
            }
        }
    }
}
