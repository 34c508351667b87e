//! The tokio driver of one replicated volume: owns the backing file, the metadata file, the TCP link
//! to the peer and the clock; runs the sans-IO [`Replica`] engine. [`Volume`] is the handle the rest
//! of the program uses; [`ReplicaBackend`] exports the volume through the NBD server.

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
/// An activity-log journal left from earlier metadata is removed (it belongs to that metadata).
pub fn create_metadata(path: &std::path::Path, size: u64, granularity: u32) -> io::Result<()> {
    let m = Metadata::fresh(size, granularity, 1237);
    match std::fs::remove_file(AlJournal::path(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
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

/// The activity log's in-place journal beside the metadata (`META.al`): two fixed slots written
/// alternately, each one whole log with a sequence number and a checksum, so that touching a
/// cold extent costs one small write and one fdatasync instead of rewriting the metadata (whose
/// bitmap grows with the volume). The newest valid slot wins on attach; a torn write leaves the
/// other. The full metadata write puts the same log here first, so the journal is never older.
struct AlJournal {
    file: File,
    slot: usize,
    seq: u64,
}

impl AlJournal {
    fn path(meta: &std::path::Path) -> PathBuf {
        let mut p = meta.as_os_str().to_owned();
        p.push(".al");
        PathBuf::from(p)
    }

    /// Opens (creating it if missing) the journal of `meta`, and returns the newest log it holds
    /// for a log of `capacity` extents.
    fn open(
        meta: &std::path::Path,
        capacity: usize,
    ) -> io::Result<(AlJournal, Option<crate::meta::ActivityLog>)> {
        let slot = crate::meta::ActivityLog::record_len(capacity).next_multiple_of(4096);
        let path = Self::path(meta);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open the activity log {}: {e}", path.display()),
                )
            })?;
        if file.metadata()?.len() < 2 * slot as u64 {
            file.set_len(2 * slot as u64)?;
        }
        let mut best: Option<(u64, crate::meta::ActivityLog)> = None;
        for k in 0..2 {
            let mut b = vec![0u8; slot];
            if file.read_exact_at(&mut b, (k * slot) as u64).is_err() {
                continue;
            }
            if let Ok((seq, al)) = crate::meta::ActivityLog::decode_record(&b) {
                if al.capacity() == capacity && best.as_ref().is_none_or(|(s, _)| seq > *s) {
                    best = Some((seq, al));
                }
            }
        }
        let seq = best.as_ref().map_or(0, |(s, _)| *s);
        Ok((AlJournal { file, slot, seq }, best.map(|(_, al)| al)))
    }

    /// Writes `al` durably into the older slot.
    fn write(&mut self, al: &crate::meta::ActivityLog) -> io::Result<()> {
        self.seq += 1;
        let rec = al.encode_record(self.seq);
        let at = (self.seq % 2) * self.slot as u64;
        self.file.write_all_at(&rec, at)?;
        self.file.sync_data()
    }
}

/// Reads `len` bytes at `offset` (blocking).
fn read_block(disk: &File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len as usize];
    disk.read_exact_at(&mut v, offset).map(|_| v)
}

/// What the volume tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeEvent {
    /// An engine event.
    Engine(Event),
    /// Run the fence-peer handler and answer with [`Volume::fence_result`].
    FencePeer,
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
    shared: Arc<Shared>,
    /// Dropped with the last handle: the volume task ends and the link closes.
    _life: Arc<Life>,
    size: u64,
}

/// The engine and what it owns, shared by everything that feeds it. The NBD connection that
/// submits a write, the blocking thread whose disk write finished and the reader that got a frame
/// from the peer each run the engine themselves, under the lock, and carry out its actions at once
/// (start a disk write, send to the peer, complete a request): a request never waits for another
/// task to be scheduled, since every hop between tasks costs a thread wake-up on its path. The
/// volume's own task ([`run`]) only keeps the engine's timers, accepts or dials the peer, and ends.
struct Shared {
    inner: std::sync::Mutex<Inner>,
    /// Wakes the volume task when the engine's next deadline came earlier or it wants a link.
    wake: tokio::sync::Notify,
    stats: Arc<Stats>,
    rt: tokio::runtime::Handle,
}

struct Life(Arc<Shared>);

impl Drop for Life {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.abandoned = true;
        g.close_link();
        drop(g);
        self.0.wake.notify_one();
    }
}

fn gone() -> ReplicaError {
    ReplicaError::Io
}

/// A finished request whose waiter is told after the lock is released.
type Finished = Vec<(Waiter, Result<(), ReplicaError>)>;

impl Waiter {
    fn finish(self, result: Result<(), ReplicaError>) {
        match self {
            Waiter::Ask(s) => {
                let _ = s.send(result);
            }
            Waiter::Nbd(done) => done(result.map(|_| Vec::new()).map_err(|e| nbd_errno(&e))),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic under the lock leaves the engine as it was between two calls: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the engine, carries out every action it queued, then tells the finished
    /// requests' waiters (outside the lock) and wakes the volume task if its timer must move.
    fn with<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Inner, base::Instant, &Arc<Shared>) -> T,
    ) -> T {
        let mut finished = Vec::new();
        let (t, wake) = {
            let mut g = self.lock();
            let now = g.now();
            let t = f(&mut g, now, self);
            g.drain(self, &mut finished);
            (t, g.task_must_look())
        };
        for (w, r) in finished {
            w.finish(r);
        }
        if wake {
            self.wake.notify_one();
        }
        t
    }

    /// Starts an application request (write or flush), or fails it if the volume has stopped.
    /// `write` requests are timed for the request stage.
    fn request(
        self: &Arc<Self>,
        w: Waiter,
        write: bool,
        start: impl FnOnce(&mut Replica, base::Instant, ReqId),
    ) {
        let refused = self.with(|g, now, _| {
            if g.stopped || g.abandoned {
                return Some(w);
            }
            let id = g.next_req;
            g.next_req += 1;
            g.waiting.insert(id, w);
            if write {
                g.req_started.insert(id, StdInstant::now());
            }
            start(&mut g.r, now, ReqId(id));
            None
        });
        if let Some(w) = refused {
            w.finish(Err(gone()));
        }
    }

    /// Runs a blocking disk operation on the blocking pool and feeds its result to the engine.
    fn disk_io(
        self: &Arc<Self>,
        io: u64,
        op: impl FnOnce() -> Result<Vec<u8>, ()> + Send + 'static,
    ) {
        let sh = self.clone();
        self.rt.spawn_blocking(move || {
            let res = op();
            sh.with(|g, now, _| g.r.handle_io_done(now, io, res));
        });
    }

    fn read_disk(self: &Arc<Self>, offset: u64, len: u32) -> Result<Arc<File>, ReplicaError> {
        let g = self.lock();
        if g.stopped || g.abandoned {
            return Err(gone());
        }
        g.r.check_read(offset, len as u64)?;
        Ok(g.disk.clone())
    }

    fn submit(self: &Arc<Self>, op: nbd::BlockOp, done: nbd::Done) {
        use nbd::OpKind;
        match op.kind {
            OpKind::Write { data } => {
                let (offset, fua) = (op.offset, op.fua);
                self.request(Waiter::Nbd(done), true, move |r, now, id| {
                    r.handle_write(now, id, offset, data, fua)
                });
            }
            OpKind::Flush => self.request(Waiter::Nbd(done), false, |r, now, id| {
                r.handle_flush(now, id)
            }),
            OpKind::Read => match self.read_disk(op.offset, op.len) {
                Err(e) => done(Err(nbd_errno(&e))),
                Ok(disk) => {
                    self.rt.spawn_blocking(move || {
                        let r = read_block(&disk, op.offset, op.len);
                        done(r.map_err(|e| nbd::Errno::from_io(&e)));
                    });
                }
            },
            // Advisory: keeping the data is a correct trim and keeps both sides identical.
            OpKind::Trim => done(Ok(Vec::new())),
            // Handled by [`ReplicaBackend::submit`], which has a volume handle to write with.
            OpKind::WriteZeroes { .. } => done(Err(nbd::Errno::Inval)),
        }
    }
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
        let mut meta = Metadata::decode(&meta_bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let (journal, logged) = AlJournal::open(&cfg.meta, meta.al.capacity())?;
        if let Some(al) = logged {
            // Never older than the metadata's copy (written first on every full write).
            meta.al = al;
        }
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
        let stats = Arc::new(Stats::default());
        let inner = Inner::new(cfg, meta, Arc::new(disk), events, journal);
        let shared = Arc::new(Shared {
            inner: std::sync::Mutex::new(inner),
            wake: tokio::sync::Notify::new(),
            stats,
            rt: tokio::runtime::Handle::current(),
        });
        tokio::spawn(run(shared.clone(), listen));
        Ok(Volume {
            _life: Arc::new(Life(shared.clone())),
            shared,
            size,
        })
    }

    /// Per-stage write timings of this node so far.
    pub fn write_stages(&self) -> WriteStages {
        self.shared.stats.snapshot()
    }

    /// Volume size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Runs `f` on the engine unless the volume has stopped.
    fn call<T>(
        &self,
        f: impl FnOnce(&mut Inner, base::Instant) -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        self.shared.with(|g, now, _| {
            if g.stopped || g.abandoned {
                return Err(gone());
            }
            f(g, now)
        })
    }

    /// Application write (completes per the replication protocol).
    pub async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), ReplicaError> {
        let (s, r) = oneshot::channel();
        self.shared
            .request(Waiter::Ask(s), true, move |e, now, id| {
                e.handle_write(now, id, offset, data, fua)
            });
        r.await.unwrap_or(Err(gone()))
    }
    /// Application flush.
    pub async fn flush(&self) -> Result<(), ReplicaError> {
        let (s, r) = oneshot::channel();
        self.shared
            .request(Waiter::Ask(s), false, |e, now, id| e.handle_flush(now, id));
        r.await.unwrap_or(Err(gone()))
    }
    /// Application read from the local disk.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, ReplicaError> {
        let disk = self.shared.read_disk(offset, len)?;
        tokio::task::spawn_blocking(move || {
            read_block(&disk, offset, len).map_err(|_| ReplicaError::Io)
        })
        .await
        .unwrap_or(Err(gone()))
    }
    /// Promote (`force` as in `drbdadm primary --force`).
    pub async fn promote(&self, force: bool) -> Result<(), ReplicaError> {
        self.call(|g, now| g.r.promote(now, force))
    }
    /// Demote.
    pub async fn demote(&self) -> Result<(), ReplicaError> {
        self.call(|g, now| g.r.demote(now))
    }
    /// Start an online verify.
    pub async fn verify(&self) -> Result<(), ReplicaError> {
        self.call(|g, now| g.r.start_verify(now))
    }
    /// Mark the local disk Outdated (what the peer's fence handler asks of a live secondary).
    pub async fn outdate(&self) -> Result<(), ReplicaError> {
        self.call(|g, _| g.r.outdate())
    }
    /// Status snapshot (`None` if the volume has stopped).
    pub async fn status(&self) -> Option<Status> {
        self.call(|g, _| Ok(g.r.status())).ok()
    }
    /// Answer to [`VolumeEvent::FencePeer`].
    pub fn fence_result(&self, o: FenceOutcome) {
        let _ = self.call(|g, now| {
            g.r.handle_fence_result(now, o);
            Ok(())
        });
    }
    /// Mark this node the split-brain victim for the next connection.
    pub fn discard_my_data(&self) {
        let _ = self.call(|g, _| {
            g.r.discard_my_data();
            Ok(())
        });
    }
    /// Start connecting to the peer.
    pub fn connect(&self) {
        let _ = self.call(|g, _| {
            g.r.connect();
            Ok(())
        });
    }
    /// Drop the peer link and stay StandAlone.
    pub fn disconnect(&self) {
        let _ = self.call(|g, now| {
            g.r.disconnect(now);
            Ok(())
        });
    }
    /// Stops the volume after a clean detach (metadata marked clean; a secondary whose peer is
    /// primary marks its disk Outdated first, as DRBD's `down` does). Requests still in flight
    /// fail; later calls fail too.
    pub async fn stop(&self) {
        let _ = self.call(|g, _| {
            // A secondary leaving a running primary behind is out of date from now on.
            if g.r.role() == crate::msg::Role::Secondary
                && g.r.status().peer_role == Some(crate::msg::Role::Primary)
            {
                let _ = g.r.outdate();
            }
            g.r.detach();
            Ok(())
        });
        let waiting = {
            let mut g = self.shared.lock();
            g.stopped = true;
            g.close_link();
            std::mem::take(&mut g.waiting)
        };
        for (_, w) in waiting {
            w.finish(Err(gone()));
        }
        self.shared.wake.notify_one();
    }
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

/// Writes the frames the engine's caller could not write at once (the socket was full): in
/// vectored writes, a frame's header and payload and many acknowledgements in one system call,
/// with no copy into a staging buffer. `queued` counts frames handed over and not yet written
/// whole; callers write directly only while it is zero, so the byte stream keeps its order.
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

/// Reads frames from the peer straight into one buffer and hands each to the engine as a view of
/// it (a replicated payload is never copied after the kernel put it there); every frame that
/// arrived in one read goes to the engine under one lock.
async fn link_reader(mut rd: tokio::net::tcp::OwnedReadHalf, id: u64, sh: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut msgs = Vec::new();
    loop {
        let mut broken = false;
        let want = loop {
            match Msg::frame_len(&buf) {
                Ok(Some(total)) => {
                    let frame = buf.split_to(total).freeze();
                    match Msg::decode_frame(&frame) {
                        Ok(m) => msgs.push(m),
                        Err(e) => {
                            tracing::warn!(error = %e, "bad replication frame: dropping link");
                            broken = true;
                            break 0;
                        }
                    }
                }
                Ok(None) if buf.len() >= FRAME_HEADER => {
                    // The header says how big the frame is: room for all of it at once.
                    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
                    break FRAME_HEADER + len - buf.len();
                }
                Ok(None) => break FRAME_HEADER,
                Err(e) => {
                    tracing::warn!(error = %e, "bad replication frame: dropping link");
                    broken = true;
                    break 0;
                }
            }
        };
        if !msgs.is_empty() {
            let batch = std::mem::take(&mut msgs);
            sh.with(|g, now, _| {
                for m in batch {
                    g.on_msg(now, id, m);
                }
            });
        }
        if broken {
            sh.with(|g, now, _| g.link_down(now, id));
            return;
        }
        buf.reserve(want.max(64 * 1024));
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                sh.with(|g, now, _| g.link_down(now, id));
                return;
            }
            Ok(_) => {}
        }
    }
}

struct Inner {
    cfg: VolumeConfig,
    r: Replica,
    disk: Arc<File>,
    events: mpsc::UnboundedSender<VolumeEvent>,
    start: std::time::Instant,
    next_req: u64,
    waiting: HashMap<u64, Waiter>,
    link: Option<Link>,
    next_link: u64,
    /// Start times of application requests (by request id) and replicated writes (by sequence).
    req_started: HashMap<u64, StdInstant>,
    data_sent: HashMap<u64, StdInstant>,
    /// Frames to the peer gathered while draining the engine's actions.
    out: std::collections::VecDeque<Bytes>,
    /// Send times of replicated writes the peer acknowledged, for the peer-ack stage.
    ack_times: Vec<StdInstant>,
    /// What the volume task last saw: its timer and whether it looks for a link.
    told_deadline: Option<base::Instant>,
    told_want_link: bool,
    /// The activity log's journal.
    journal: AlJournal,
    /// [`Volume::stop`] ran: requests fail, the task ends.
    stopped: bool,
    /// Every handle is gone: the task ends.
    abandoned: bool,
}

impl Inner {
    fn new(
        cfg: VolumeConfig,
        meta: Metadata,
        disk: Arc<File>,
        events: mpsc::UnboundedSender<VolumeEvent>,
        journal: AlJournal,
    ) -> Self {
        let r = Replica::new(cfg.replica.clone(), meta, base::Instant(0), cfg.seed);
        Inner {
            journal,
            cfg,
            r,
            disk,
            events,
            start: std::time::Instant::now(),
            next_req: 1,
            waiting: HashMap::new(),
            link: None,
            next_link: 1,
            req_started: HashMap::new(),
            data_sent: HashMap::new(),
            out: std::collections::VecDeque::new(),
            ack_times: Vec::new(),
            told_deadline: None,
            told_want_link: false,
            stopped: false,
            abandoned: false,
        }
    }

    fn now(&self) -> base::Instant {
        base::Instant(self.start.elapsed().as_nanos() as u64)
    }

    fn want_link(&self) -> bool {
        !self.stopped
            && !self.abandoned
            && self.link.is_none()
            && self.r.conn() == crate::engine::ConnState::WfConnection
    }

    /// Whether the volume task must look again: the engine's deadline came earlier than the one
    /// it sleeps on (a later one just costs it a harmless early timeout call), or the link wish
    /// changed, or the volume ends.
    fn task_must_look(&self) -> bool {
        let d = self.r.poll_deadline();
        let earlier = match (d, self.told_deadline) {
            (Some(d), Some(t)) => d < t,
            (Some(_), None) => true,
            (None, _) => false,
        };
        earlier || self.want_link() != self.told_want_link || self.stopped || self.abandoned
    }

    fn close_link(&mut self) {
        if let Some(l) = self.link.take() {
            l.reader.abort();
        }
        self.data_sent.clear();
        self.out.clear();
    }

    fn link_up(&mut self, now: base::Instant, id: u64, s: TcpStream, sh: &Arc<Shared>) {
        if !self.want_link() {
            return;
        }
        let _ = s.set_nodelay(true);
        let (rd, wr) = s.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel::<Bytes>();
        let wr = Arc::new(wr);
        let queued = Arc::new(AtomicUsize::new(0));
        sh.rt.spawn(link_writer(wr.clone(), wrx, queued.clone()));
        let reader = sh.rt.spawn(link_reader(rd, id, sh.clone()));
        self.link = Some(Link {
            id,
            tx: wtx,
            wr,
            queued,
            reader,
        });
        self.r.handle_connected(now);
    }

    fn on_msg(&mut self, now: base::Instant, id: u64, m: Msg) {
        if self.link.as_ref().is_none_or(|l| l.id != id) {
            return;
        }
        if let Msg::WriteAck { seq } | Msg::NegAck { seq } = &m {
            if let Some(t) = self.data_sent.remove(seq) {
                self.ack_times.push(t);
            }
        }
        self.r.handle_msg(now, m);
    }

    fn link_down(&mut self, now: base::Instant, id: u64) {
        if self.link.as_ref().is_some_and(|l| l.id == id) {
            self.close_link();
            self.r.handle_disconnected(now);
        }
    }

    /// Sends the frames gathered while draining (one system call for all of them, usually).
    fn send_out(&mut self) {
        match &self.link {
            Some(l) => l.send(&mut self.out),
            None => self.out.clear(),
        }
    }

    fn drain(&mut self, sh: &Arc<Shared>, finished: &mut Finished) {
        for t in self.ack_times.drain(..) {
            sh.stats.peer_ack.add(t);
        }
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
                    // What the engine sent before this write goes out first.
                    self.send_out();
                    let disk = self.disk.clone();
                    let (stats, t) = (sh.stats.clone(), StdInstant::now());
                    sh.disk_io(io, move || {
                        let mut r = disk.write_all_at(&data, offset);
                        if fua && r.is_ok() {
                            r = disk.sync_data();
                        }
                        stats.disk_write.add(t);
                        r.map(|_| Vec::new()).map_err(|_| ())
                    });
                }
                Action::DiskRead { io, offset, len } => {
                    let disk = self.disk.clone();
                    sh.disk_io(io, move || read_block(&disk, offset, len).map_err(|_| ()));
                }
                Action::DiskFlush { io } => {
                    let disk = self.disk.clone();
                    sh.disk_io(io, move || {
                        disk.sync_data().map(|_| Vec::new()).map_err(|_| ())
                    });
                }
                Action::PersistMeta => {
                    self.send_out();
                    // Must be durable before later disk writes start: done inline. The journal
                    // first, so that it is never older than the metadata's log.
                    let t = StdInstant::now();
                    if let Err(e) = self.journal.write(&self.r.metadata().al) {
                        tracing::error!(error = %e, "cannot write the replica activity log");
                    }
                    if let Err(e) = write_meta(&self.cfg.meta, self.r.metadata()) {
                        tracing::error!(error = %e, "cannot persist replica metadata");
                    }
                    sh.stats.meta.add(t);
                }
                Action::PersistActivityLog => {
                    self.send_out();
                    let t = StdInstant::now();
                    if let Err(e) = self.journal.write(&self.r.metadata().al) {
                        tracing::error!(error = %e, "cannot write the replica activity log");
                    }
                    sh.stats.meta.add(t);
                }
                Action::Complete { req, result } => {
                    if let Some(t) = self.req_started.remove(&req.0) {
                        sh.stats.request.add(t);
                    }
                    if let Some(w) = self.waiting.remove(&req.0) {
                        finished.push((w, result));
                    }
                }
                Action::FencePeer => {
                    let _ = self.events.send(VolumeEvent::FencePeer);
                }
                Action::Disconnect => {
                    // What was sent before the disconnect still goes out, as it did in order.
                    self.send_out();
                    self.close_link();
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

/// The volume's own task: the engine's timers, accepting (the node with the higher id) or dialling
/// (the lower) the peer, and the end of the volume.
async fn run(sh: Arc<Shared>, listen: TcpListener) {
    let active = {
        let g = sh.lock();
        g.cfg.replica.node_id < g.cfg.peer_node_id
    };
    let mut retry = tokio::time::interval(std::time::Duration::from_millis(500));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (deadline, want_link, peer, start) = {
            let mut g = sh.lock();
            if g.stopped || g.abandoned {
                g.close_link();
                return;
            }
            g.told_deadline = g.r.poll_deadline();
            g.told_want_link = g.want_link();
            (g.told_deadline, g.told_want_link, g.cfg.peer, g.start)
        };
        let deadline = deadline
            .map(|d| tokio::time::Instant::from_std(start + std::time::Duration::from_nanos(d.0)));
        tokio::select! {
            _ = sh.wake.notified() => {}
            a = listen.accept(), if !active => {
                if let Ok((s, _)) = a {
                    if want_link {
                        sh.with(|g, now, sh| {
                            let id = g.next_link;
                            g.next_link += 1;
                            g.link_up(now, id, s, sh);
                        });
                    }
                }
            }
            _ = retry.tick(), if active && want_link => {
                let sh = sh.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(s)) = tokio::time::timeout(std::time::Duration::from_millis(400), TcpStream::connect(peer)).await {
                        sh.with(|g, now, sh| {
                            let id = g.next_link;
                            g.next_link += 1;
                            g.link_up(now, id, s, sh);
                        });
                    }
                });
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                sh.with(|g, now, _| g.r.handle_timeout(now));
            }
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
        let nbd::OpKind::WriteZeroes { .. } = op.kind else {
            self.vol.shared.submit(op, done);
            return;
        };
        // Zeroes are replicated as data, one piece at a time (bounded memory).
        let vol = self.vol.clone();
        let (offset, len, fua) = (op.offset, op.len as u64, op.fua);
        self.rt.spawn(async move {
            let mut done_bytes = 0u64;
            while done_bytes < len {
                let n = (len - done_bytes).min(1 << 20);
                let last = done_bytes + n == len;
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
