//! The tokio driver of one replicated volume: owns the backing file, the metadata file, the TCP link
//! to the peer and the clock; runs the sans-IO [`Replica`] engine. [`Volume`] is the handle the rest
//! of the program uses; [`ReplicaBackend`] exports the volume through the NBD server.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{
    Action, Event, FenceOutcome, Replica, ReplicaConfig, ReplicaError, ReqId, Status,
};
use crate::meta::Metadata;
use crate::msg::{Msg, FRAME_HEADER};

/// Where a volume lives and how to reach its peer.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Engine configuration.
    pub replica: ReplicaConfig,
    /// Backing file or block device.
    pub disk: PathBuf,
    /// Metadata file (external metadata, created with [`create_metadata`]).
    pub meta: PathBuf,
    /// Peer's replication address.
    pub peer: SocketAddr,
    /// Peer's node id: the node with the lower id dials, the other accepts.
    pub peer_node_id: u32,
    /// Seed for generation identifiers.
    pub seed: u64,
}

/// Writes fresh metadata for a backing file of `size` bytes (`quorate replica create-md`).
pub fn create_metadata(path: &std::path::Path, size: u64, granularity: u32) -> io::Result<()> {
    let m = Metadata::fresh(size, granularity, 1237);
    write_meta(path, &m)
}

/// Writes metadata atomically: a temporary file is synced and renamed over the old one, so a crash
/// leaves either the old or the new metadata, never a torn mix.
fn write_meta(path: &std::path::Path, m: &Metadata) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all_at(&m.encode(), 0)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What the volume tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeEvent {
    /// An engine event.
    Engine(Event),
    /// Run the fence-peer handler and answer with [`Volume::fence_result`].
    FencePeer,
}

enum Cmd {
    Write(
        u64,
        Vec<u8>,
        bool,
        oneshot::Sender<Result<(), ReplicaError>>,
    ),
    Flush(oneshot::Sender<Result<(), ReplicaError>>),
    Read(u64, u32, oneshot::Sender<Result<Vec<u8>, ReplicaError>>),
    Promote(bool, oneshot::Sender<Result<(), ReplicaError>>),
    Demote(oneshot::Sender<Result<(), ReplicaError>>),
    Verify(oneshot::Sender<Result<(), ReplicaError>>),
    Outdate(oneshot::Sender<Result<(), ReplicaError>>),
    Status(oneshot::Sender<Status>),
    Fence(FenceOutcome),
    DiscardMyData,
    Connect,
    Disconnect,
    Stop(oneshot::Sender<()>),
    Submit(nbd::BlockOp, nbd::Done),
}

enum Waiter {
    Ask(oneshot::Sender<Result<(), ReplicaError>>),
    Nbd(nbd::Done),
}

fn nbd_errno(e: &ReplicaError) -> nbd::Errno {
    match e {
        ReplicaError::NotPrimary | ReplicaError::PeerIsPrimary => nbd::Errno::Perm,
        ReplicaError::OutOfRange => nbd::Errno::NoSpc,
        _ => nbd::Errno::Io,
    }
}

/// One stage of the write path: how often it ran and the time it took in total.
#[derive(Debug, Default)]
struct Stage {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Stage {
    fn add(&self, since: StdInstant) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    fn get(&self) -> StageTime {
        StageTime {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

/// Count and total time of one stage (see [`WriteStages`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTime {
    /// How many times the stage ran.
    pub count: u64,
    /// Total nanoseconds spent in it.
    pub ns: u64,
}

impl StageTime {
    /// Mean microseconds per run (0 when it never ran).
    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.ns as f64 / self.count as f64 / 1e3
        }
    }
    /// The runs and time since `earlier`.
    pub fn since(&self, earlier: &StageTime) -> StageTime {
        StageTime {
            count: self.count.saturating_sub(earlier.count),
            ns: self.ns.saturating_sub(earlier.ns),
        }
    }
    /// Both together.
    pub fn plus(&self, other: &StageTime) -> StageTime {
        StageTime {
            count: self.count + other.count,
            ns: self.ns + other.ns,
        }
    }
}

/// Where the time of a write goes on this node, counted by the driver since the volume started
/// (`quorate bench replica` prints the difference over its rounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStages {
    /// An application write, from the volume task receiving it to its completion.
    pub request: StageTime,
    /// A local disk write (application, peer or resync), from the volume task starting it to the
    /// end of the write (includes the hop to the blocking pool).
    pub disk_write: StageTime,
    /// A replicated write, from handing its data to the link writer to the peer's acknowledgement
    /// arriving (network both ways plus the peer's disk write).
    pub peer_ack: StageTime,
    /// A metadata write (activity log, role, disk state); it holds up the volume task.
    pub meta: StageTime,
}

impl WriteStages {
    /// The runs and time of each stage since `earlier`.
    pub fn since(&self, earlier: &WriteStages) -> WriteStages {
        WriteStages {
            request: self.request.since(&earlier.request),
            disk_write: self.disk_write.since(&earlier.disk_write),
            peer_ack: self.peer_ack.since(&earlier.peer_ack),
            meta: self.meta.since(&earlier.meta),
        }
    }
    /// Both together, stage by stage.
    pub fn plus(&self, o: &WriteStages) -> WriteStages {
        WriteStages {
            request: self.request.plus(&o.request),
            disk_write: self.disk_write.plus(&o.disk_write),
            peer_ack: self.peer_ack.plus(&o.peer_ack),
            meta: self.meta.plus(&o.meta),
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    request: Stage,
    disk_write: Stage,
    peer_ack: Stage,
    meta: Stage,
}

impl Stats {
    fn snapshot(&self) -> WriteStages {
        WriteStages {
            request: self.request.get(),
            disk_write: self.disk_write.get(),
            peer_ack: self.peer_ack.get(),
            meta: self.meta.get(),
        }
    }
}

/// Handle to a running volume.
#[derive(Clone)]
pub struct Volume {
    tx: mpsc::UnboundedSender<Cmd>,
    size: u64,
    stats: Arc<Stats>,
}

fn gone() -> ReplicaError {
    ReplicaError::Io
}

impl Volume {
    /// Opens the disk and metadata, binds `listen` and starts the volume task. Events go to `events`.
    pub async fn start(
        cfg: VolumeConfig,
        listen: TcpListener,
        events: mpsc::UnboundedSender<VolumeEvent>,
    ) -> io::Result<Volume> {
        if cfg.replica.node_id == cfg.peer_node_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "node id {} is also the peer's id: give the two nodes different ids",
                    cfg.peer_node_id
                ),
            ));
        }
        let meta_bytes = std::fs::read(&cfg.meta).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot read metadata {}: {e}; create it with `quorate replica create-md`",
                    cfg.meta.display()
                ),
            )
        })?;
        let meta = Metadata::decode(&meta_bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let disk = OpenOptions::new().read(true).write(true).open(&cfg.disk)?;
        let disk_size = disk.metadata()?.len();
        if disk_size < meta.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backing file {} has {disk_size} bytes, metadata says {}: use a disk at least that big",
                    cfg.disk.display(),
                    meta.size
                ),
            ));
        }
        let size = meta.size;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let task = Task::new(
            cfg,
            meta,
            Arc::new(disk),
            events,
            tx.downgrade(),
            stats.clone(),
        );
        tokio::spawn(task.run(rx, listen));
        Ok(Volume { tx, size, stats })
    }

    /// Per-stage write timings of this node so far.
    pub fn write_stages(&self) -> WriteStages {
        self.stats.snapshot()
    }

    /// Volume size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (s, r) = oneshot::channel();
        self.tx.send(f(s)).ok()?;
        r.await.ok()
    }

    /// Application write (completes per the replication protocol).
    pub async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), ReplicaError> {
        self.ask(|s| Cmd::Write(offset, data, fua, s))
            .await
            .unwrap_or(Err(gone()))
    }
    /// Application flush.
    pub async fn flush(&self) -> Result<(), ReplicaError> {
        self.ask(Cmd::Flush).await.unwrap_or(Err(gone()))
    }
    /// Application read from the local disk.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, ReplicaError> {
        self.ask(|s| Cmd::Read(offset, len, s))
            .await
            .unwrap_or(Err(gone()))
    }
    /// Promote (`force` as in `drbdadm primary --force`).
    pub async fn promote(&self, force: bool) -> Result<(), ReplicaError> {
        self.ask(|s| Cmd::Promote(force, s))
            .await
            .unwrap_or(Err(gone()))
    }
    /// Demote.
    pub async fn demote(&self) -> Result<(), ReplicaError> {
        self.ask(Cmd::Demote).await.unwrap_or(Err(gone()))
    }
    /// Start an online verify.
    pub async fn verify(&self) -> Result<(), ReplicaError> {
        self.ask(Cmd::Verify).await.unwrap_or(Err(gone()))
    }
    /// Mark the local disk Outdated (what the peer's fence handler asks of a live secondary).
    pub async fn outdate(&self) -> Result<(), ReplicaError> {
        self.ask(Cmd::Outdate).await.unwrap_or(Err(gone()))
    }
    /// Status snapshot (`None` if the volume task ended).
    pub async fn status(&self) -> Option<Status> {
        self.ask(Cmd::Status).await
    }
    /// Answer to [`VolumeEvent::FencePeer`].
    pub fn fence_result(&self, o: FenceOutcome) {
        let _ = self.tx.send(Cmd::Fence(o));
    }
    /// Mark this node the split-brain victim for the next connection.
    pub fn discard_my_data(&self) {
        let _ = self.tx.send(Cmd::DiscardMyData);
    }
    /// Start connecting to the peer.
    pub fn connect(&self) {
        let _ = self.tx.send(Cmd::Connect);
    }
    /// Drop the peer link and stay StandAlone.
    pub fn disconnect(&self) {
        let _ = self.tx.send(Cmd::Disconnect);
    }
    /// Stops the task after a clean detach (metadata marked clean; a secondary whose peer is
    /// primary marks its disk Outdated first, as DRBD's `down` does).
    pub async fn stop(&self) {
        let _ = self.ask(Cmd::Stop).await;
    }
}

enum Net {
    Up(u64, TcpStream),
    Msg(u64, Msg),
    Down(u64),
}

struct Link {
    id: u64,
    /// Frames for [`link_writer`] (only while `queued` is not zero or the socket is full).
    tx: mpsc::UnboundedSender<Bytes>,
    wr: Arc<tokio::net::tcp::OwnedWriteHalf>,
    queued: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Sends `out` in order: straight to the socket while the writer task has nothing queued
    /// (no task switch per frame), the rest through the writer task.
    fn send(&self, out: &mut std::collections::VecDeque<Bytes>) {
        while !out.is_empty() && self.queued.load(Ordering::Acquire) == 0 {
            match self.wr.try_write_vectored(&slices(out)) {
                Ok(0) => {
                    out.clear();
                    return;
                }
                Ok(n) => {
                    consume(out, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The link is broken: the reader sees it and reports the link down.
                Err(_) => {
                    out.clear();
                    return;
                }
            }
        }
        self.queued.fetch_add(out.len(), Ordering::AcqRel);
        for b in out.drain(..) {
            let _ = self.tx.send(b);
        }
    }
}

/// Drops the first `n` written bytes from the front of `queue`; returns how many frames were
/// written whole.
fn consume(queue: &mut std::collections::VecDeque<Bytes>, mut n: usize) -> usize {
    let mut whole = 0;
    while let Some(front) = queue.front_mut() {
        if n >= front.len() {
            n -= front.len();
            queue.pop_front();
            whole += 1;
        } else {
            let _ = front.split_to(n);
            break;
        }
    }
    whole
}

const MAX_SLICES: usize = 64;

fn slices(queue: &std::collections::VecDeque<Bytes>) -> Vec<io::IoSlice<'_>> {
    queue
        .iter()
        .take(MAX_SLICES)
        .map(|b| io::IoSlice::new(b))
        .collect()
}

/// Writes the frames the volume task could not write at once (the socket was full): in vectored
/// writes, a frame's header and payload and many acknowledgements in one system call, with no
/// copy into a staging buffer. `queued` counts frames handed over and not yet written whole; the
/// volume task writes directly only while it is zero, so the byte stream keeps its order.
async fn link_writer(
    wr: Arc<tokio::net::tcp::OwnedWriteHalf>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
) {
    let mut queue: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    while let Some(b) = rx.recv().await {
        queue.push_back(b);
        while !queue.is_empty() {
            while let Ok(b) = rx.try_recv() {
                queue.push_back(b);
            }
            if wr.writable().await.is_err() {
                return;
            }
            match wr.try_write_vectored(&slices(&queue)) {
                Ok(0) => return,
                Ok(n) => {
                    let whole = consume(&mut queue, n);
                    queued.fetch_sub(whole, Ordering::AcqRel);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// Reads frames from the peer straight into one buffer and hands each on as a view of it: a
/// replicated payload is never copied after the kernel put it there.
async fn link_reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    id: u64,
    tx: mpsc::UnboundedSender<Net>,
) {
    let mut buf = BytesMut::with_capacity(1 << 20);
    loop {
        let want = match Msg::frame_len(&buf) {
            Ok(Some(total)) => {
                let frame = buf.split_to(total).freeze();
                match Msg::decode_frame(&frame) {
                    Ok(m) => {
                        if tx.send(Net::Msg(id, m)).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bad replication frame: dropping link");
                        let _ = tx.send(Net::Down(id));
                        return;
                    }
                }
            }
            Ok(None) if buf.len() >= FRAME_HEADER => {
                // The header says how big the frame is: room for all of it at once.
                let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
                FRAME_HEADER + len - buf.len()
            }
            Ok(None) => FRAME_HEADER,
            Err(e) => {
                tracing::warn!(error = %e, "bad replication frame: dropping link");
                let _ = tx.send(Net::Down(id));
                return;
            }
        };
        buf.reserve(want.max(64 * 1024));
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Net::Down(id));
                return;
            }
            Ok(_) => {}
        }
    }
}

struct Task {
    cfg: VolumeConfig,
    r: Replica,
    disk: Arc<File>,
    events: mpsc::UnboundedSender<VolumeEvent>,
    start: std::time::Instant,
    next_req: u64,
    waiting: BTreeMap<u64, Waiter>,
    link: Option<Link>,
    next_link: u64,
    self_tx: mpsc::WeakUnboundedSender<Cmd>,
    stats: Arc<Stats>,
    /// Start times of application requests (by request id) and replicated writes (by sequence).
    req_started: HashMap<u64, StdInstant>,
    data_sent: HashMap<u64, StdInstant>,
    /// Frames to the peer gathered while draining the engine's actions.
    out: std::collections::VecDeque<Bytes>,
}

impl Task {
    fn new(
        cfg: VolumeConfig,
        meta: Metadata,
        disk: Arc<File>,
        events: mpsc::UnboundedSender<VolumeEvent>,
        self_tx: mpsc::WeakUnboundedSender<Cmd>,
        stats: Arc<Stats>,
    ) -> Self {
        let r = Replica::new(cfg.replica.clone(), meta, base::Instant(0), cfg.seed);
        Task {
            cfg,
            r,
            disk,
            events,
            start: std::time::Instant::now(),
            next_req: 1,
            waiting: BTreeMap::new(),
            link: None,
            next_link: 1,
            self_tx,
            stats,
            req_started: HashMap::new(),
            data_sent: HashMap::new(),
            out: std::collections::VecDeque::new(),
        }
    }

    fn now(&self) -> base::Instant {
        base::Instant(self.start.elapsed().as_nanos() as u64)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, listen: TcpListener) {
        let (net_tx, mut net_rx) = mpsc::unbounded_channel::<Net>();
        let (io_tx, mut io_rx) = mpsc::unbounded_channel::<(u64, Result<Vec<u8>, ()>)>();
        let active = self.cfg.replica.node_id < self.cfg.peer_node_id;
        let mut retry = tokio::time::interval(std::time::Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.drain(&io_tx, &net_tx);
            let deadline = self.r.poll_deadline().map(|d| {
                tokio::time::Instant::from_std(self.start + std::time::Duration::from_nanos(d.0))
            });
            let want_link =
                self.link.is_none() && self.r.conn() == crate::engine::ConnState::WfConnection;
            tokio::select! {
                c = rx.recv() => match c {
                    None => return,
                    Some(Cmd::Stop(done)) => {
                        // A secondary leaving a running primary behind is out of date from now on.
                        if self.r.role() == crate::msg::Role::Secondary
                            && self.r.status().peer_role == Some(crate::msg::Role::Primary)
                        {
                            let _ = self.r.outdate();
                        }
                        self.r.detach();
                        self.drain(&io_tx, &net_tx);
                        if let Some(l) = self.link.take() { l.reader.abort(); }
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c, &io_tx),
                },
                Some(n) = net_rx.recv() => self.net(n, &net_tx),
                Some((io, res)) = io_rx.recv() => {
                    let now = self.now();
                    self.r.handle_io_done(now, io, res);
                }
                a = listen.accept(), if !active => {
                    if let Ok((s, _)) = a {
                        if want_link { let id = self.next_link; self.next_link += 1; let _ = net_tx.send(Net::Up(id, s)); }
                    }
                }
                _ = retry.tick(), if active && want_link => {
                    let peer = self.cfg.peer;
                    let tx = net_tx.clone();
                    let id = self.next_link;
                    self.next_link += 1;
                    tokio::spawn(async move {
                        if let Ok(Ok(s)) = tokio::time::timeout(std::time::Duration::from_millis(400), TcpStream::connect(peer)).await {
                            let _ = tx.send(Net::Up(id, s));
                        }
                    });
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    let now = self.now();
                    self.r.handle_timeout(now);
                }
            }
        }
    }

    fn command(&mut self, c: Cmd, io_tx: &mpsc::UnboundedSender<(u64, Result<Vec<u8>, ()>)>) {
        let now = self.now();
        match c {
            Cmd::Write(offset, data, fua, reply) => {
                let id = self.next_req;
                self.next_req += 1;
                self.waiting.insert(id, Waiter::Ask(reply));
                self.req_started.insert(id, StdInstant::now());
                self.r.handle_write(now, ReqId(id), offset, data, fua);
            }
            Cmd::Flush(reply) => {
                let id = self.next_req;
                self.next_req += 1;
                self.waiting.insert(id, Waiter::Ask(reply));
                self.r.handle_flush(now, ReqId(id));
            }
            Cmd::Submit(op, done) => self.submit(now, op, done),
            Cmd::Read(offset, len, reply) => {
                if let Err(e) = self.r.check_read(offset, len as u64) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let disk = self.disk.clone();
                let _ = io_tx;
                tokio::task::spawn_blocking(move || {
                    let mut v = vec![0u8; len as usize];
                    let r = disk
                        .read_exact_at(&mut v, offset)
                        .map(|_| v)
                        .map_err(|_| ReplicaError::Io);
                    let _ = reply.send(r);
                });
            }
            Cmd::Promote(force, reply) => {
                let _ = reply.send(self.r.promote(now, force));
            }
            Cmd::Demote(reply) => {
                let _ = reply.send(self.r.demote(now));
            }
            Cmd::Verify(reply) => {
                let _ = reply.send(self.r.start_verify(now));
            }
            Cmd::Outdate(reply) => {
                let _ = reply.send(self.r.outdate());
            }
            Cmd::Status(reply) => {
                let _ = reply.send(self.r.status());
            }
            Cmd::Fence(o) => self.r.handle_fence_result(now, o),
            Cmd::DiscardMyData => self.r.discard_my_data(),
            Cmd::Connect => self.r.connect(),
            Cmd::Disconnect => self.r.disconnect(now),
            Cmd::Stop(_) => {}
        }
    }

    fn submit(&mut self, now: base::Instant, op: nbd::BlockOp, done: nbd::Done) {
        use nbd::OpKind;
        match op.kind {
            OpKind::Write { data } => {
                let id = self.next_req;
                self.next_req += 1;
                self.waiting.insert(id, Waiter::Nbd(done));
                self.req_started.insert(id, StdInstant::now());
                self.r.handle_write(now, ReqId(id), op.offset, data, op.fua);
            }
            OpKind::Flush => {
                let id = self.next_req;
                self.next_req += 1;
                self.waiting.insert(id, Waiter::Nbd(done));
                self.r.handle_flush(now, ReqId(id));
            }
            OpKind::Read => {
                if let Err(e) = self.r.check_read(op.offset, op.len as u64) {
                    done(Err(nbd_errno(&e)));
                    return;
                }
                let disk = self.disk.clone();
                tokio::task::spawn_blocking(move || {
                    let mut v = vec![0u8; op.len as usize];
                    let r = disk.read_exact_at(&mut v, op.offset);
                    done(r.map(|_| v).map_err(|e| nbd::Errno::from_io(&e)));
                });
            }
            // Advisory: keeping the data is a correct trim and keeps both sides identical.
            OpKind::Trim => done(Ok(Vec::new())),
            OpKind::WriteZeroes { .. } => self.zeroes(op.offset, op.len, op.fua, done),
        }
    }

    /// Zeroes are replicated as data, one piece at a time (bounded memory).
    fn zeroes(&self, offset: u64, len: u32, fua: bool, done: nbd::Done) {
        {
            let Some(tx) = self.self_tx.upgrade() else {
                done(Err(nbd::Errno::Shutdown));
                return;
            };
            let vol = Volume {
                tx,
                size: self.r.metadata().size,
                stats: self.stats.clone(),
            };
            tokio::spawn(async move {
                let mut done_bytes = 0u64;
                while done_bytes < len as u64 {
                    let n = (len as u64 - done_bytes).min(1 << 20);
                    let last = done_bytes + n == len as u64;
                    if let Err(e) = vol
                        .write(offset + done_bytes, vec![0u8; n as usize], fua && last)
                        .await
                    {
                        done(Err(nbd_errno(&e)));
                        return;
                    }
                    done_bytes += n;
                }
                done(Ok(Vec::new()));
            });
        }
    }

    fn net(&mut self, n: Net, net_tx: &mpsc::UnboundedSender<Net>) {
        let now = self.now();
        match n {
            Net::Up(id, s) => {
                if self.link.is_some() || self.r.conn() != crate::engine::ConnState::WfConnection {
                    return;
                }
                let _ = s.set_nodelay(true);
                let (rd, wr) = s.into_split();
                let (wtx, wrx) = mpsc::unbounded_channel::<Bytes>();
                let wr = Arc::new(wr);
                let queued = Arc::new(AtomicUsize::new(0));
                tokio::spawn(link_writer(wr.clone(), wrx, queued.clone()));
                let tx = net_tx.clone();
                let reader = tokio::spawn(link_reader(rd, id, tx));
                self.link = Some(Link {
                    id,
                    tx: wtx,
                    wr,
                    queued,
                    reader,
                });
                self.r.handle_connected(now);
            }
            Net::Msg(id, m) => {
                if self.link.as_ref().is_some_and(|l| l.id == id) {
                    if let Msg::WriteAck { seq } | Msg::NegAck { seq } = &m {
                        if let Some(t) = self.data_sent.remove(seq) {
                            self.stats.peer_ack.add(t);
                        }
                    }
                    self.r.handle_msg(now, m);
                }
            }
            Net::Down(id) => {
                if self.link.as_ref().is_some_and(|l| l.id == id) {
                    if let Some(l) = self.link.take() {
                        l.reader.abort();
                    }
                    self.data_sent.clear();
                    self.out.clear();
                    self.r.handle_disconnected(now);
                }
            }
        }
    }

    /// Sends the frames gathered while draining (one system call for all of them, usually).
    fn send_out(&mut self) {
        match &self.link {
            Some(l) => l.send(&mut self.out),
            None => self.out.clear(),
        }
    }

    fn complete(&mut self, req: ReqId, result: Result<(), ReplicaError>) {
        match self.waiting.remove(&req.0) {
            Some(Waiter::Ask(s)) => {
                let _ = s.send(result);
            }
            Some(Waiter::Nbd(done)) => done(result.map(|_| Vec::new()).map_err(|e| nbd_errno(&e))),
            None => {}
        }
    }

    fn drain(
        &mut self,
        io_tx: &mpsc::UnboundedSender<(u64, Result<Vec<u8>, ()>)>,
        _net_tx: &mpsc::UnboundedSender<Net>,
    ) {
        while let Some(a) = self.r.poll_action() {
            match a {
                Action::Send(m) => {
                    if self.link.is_some() {
                        if let Msg::Data { seq, .. } = &m {
                            self.data_sent.insert(*seq, StdInstant::now());
                        }
                        let (head, payload) = m.encode_parts();
                        self.out.push_back(head.into());
                        if !payload.is_empty() {
                            self.out.push_back(payload);
                        }
                    }
                }
                Action::DiskWrite {
                    io,
                    offset,
                    data,
                    fua,
                } => {
                    let disk = self.disk.clone();
                    let tx = io_tx.clone();
                    let (stats, t) = (self.stats.clone(), StdInstant::now());
                    tokio::task::spawn_blocking(move || {
                        let mut r = disk.write_all_at(&data, offset);
                        if fua && r.is_ok() {
                            r = disk.sync_data();
                        }
                        stats.disk_write.add(t);
                        let _ = tx.send((io, r.map(|_| Vec::new()).map_err(|_| ())));
                    });
                }
                Action::DiskRead { io, offset, len } => {
                    let disk = self.disk.clone();
                    let tx = io_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut v = vec![0u8; len as usize];
                        let r = disk
                            .read_exact_at(&mut v, offset)
                            .map(|_| v)
                            .map_err(|_| ());
                        let _ = tx.send((io, r));
                    });
                }
                Action::DiskFlush { io } => {
                    let disk = self.disk.clone();
                    let tx = io_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let r = disk.sync_data().map(|_| Vec::new()).map_err(|_| ());
                        let _ = tx.send((io, r));
                    });
                }
                Action::PersistMeta => {
                    self.send_out();
                    // Must be durable before later disk writes start: done inline.
                    let t = StdInstant::now();
                    if let Err(e) = write_meta(&self.cfg.meta, self.r.metadata()) {
                        tracing::error!(error = %e, "cannot persist replica metadata");
                    }
                    self.stats.meta.add(t);
                }
                Action::Complete { req, result } => {
                    if let Some(t) = self.req_started.remove(&req.0) {
                        self.stats.request.add(t);
                    }
                    self.complete(req, result)
                }
                Action::FencePeer => {
                    let _ = self.events.send(VolumeEvent::FencePeer);
                }
                Action::Disconnect => {
                    // What was sent before the disconnect still goes out, as it did in order.
                    self.send_out();
                    if let Some(l) = self.link.take() {
                        l.reader.abort();
                    }
                    self.data_sent.clear();
                    self.out.clear();
                    let now = self.now();
                    self.r.handle_disconnected(now);
                }
            }
        }
        self.send_out();
        while let Some(e) = self.r.poll_event() {
            tracing::info!(event = ?e, "replica");
            let _ = self.events.send(VolumeEvent::Engine(e));
        }
    }
}

/// Exports a [`Volume`] through the NBD server: writes and flushes go through replication.
/// Its methods block; the NBD driver calls them from `spawn_blocking`.
pub struct ReplicaBackend {
    vol: Volume,
    rt: tokio::runtime::Handle,
}

impl ReplicaBackend {
    /// Wraps a volume; `rt` is the runtime the volume runs on.
    pub fn new(vol: Volume, rt: tokio::runtime::Handle) -> Self {
        ReplicaBackend { vol, rt }
    }
}

fn to_io(e: ReplicaError) -> io::Error {
    let errno = match e {
        ReplicaError::NotPrimary | ReplicaError::PeerIsPrimary => libc::EROFS,
        ReplicaError::OutOfRange => libc::ENOSPC,
        _ => libc::EIO,
    };
    io::Error::from_raw_os_error(errno)
}

impl nbd::Backend for ReplicaBackend {
    fn size(&self) -> u64 {
        self.vol.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self
            .rt
            .block_on(self.vol.read(offset, buf.len() as u32))
            .map_err(to_io)?;
        buf.copy_from_slice(&d);
        Ok(())
    }
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.rt
            .block_on(self.vol.write(offset, data.to_vec(), fua))
            .map_err(to_io)
    }
    fn flush(&self) -> io::Result<()> {
        self.rt.block_on(self.vol.flush()).map_err(to_io)
    }
    fn trim(&self, _offset: u64, _len: u64, _fua: bool) -> io::Result<()> {
        // Advisory: keeping the data is a correct trim, and keeps both sides identical.
        Ok(())
    }
    fn write_zeroes(
        &self,
        mut offset: u64,
        mut len: u64,
        _may_trim: bool,
        fua: bool,
    ) -> io::Result<()> {
        let zero = vec![0u8; len.min(1 << 20) as usize];
        while len > 0 {
            let n = len.min(zero.len() as u64);
            self.rt
                .block_on(
                    self.vol
                        .write(offset, zero[..n as usize].to_vec(), fua && n == len),
                )
                .map_err(to_io)?;
            offset += n;
            len -= n;
        }
        Ok(())
    }
    fn can_trim(&self) -> bool {
        false
    }
    fn submit(self: Arc<Self>, op: nbd::BlockOp, done: nbd::Done) {
        if let Err(mpsc::error::SendError(Cmd::Submit(_, done))) =
            self.vol.tx.send(Cmd::Submit(op, done))
        {
            done(Err(nbd::Errno::Io));
        }
    }
}
