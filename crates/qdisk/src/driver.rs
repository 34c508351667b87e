//! The thread that runs a [`Qdisk`] core against a real device and clock.

use crate::device::{Device, DeviceError};
use crate::heuristic;
use base::{Instant, NodeId};
use quorum::{Qdisk, QdiskAction, QdiskConfig, QdiskConfigError, QdiskEvent, QdiskStatus};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use thiserror::Error;

/// Most undrained driver events; newer ones are dropped when full.
pub const EVENT_QUEUE: usize = 1024;

/// How the driver opens the device.
#[derive(Clone, Debug, Default)]
pub struct DriverOptions {
    /// Open with `O_DIRECT` (required on a shared LUN; plain files on ext4/xfs accept it too).
    pub direct_io: bool,
}

/// What the driver reports to its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverEvent {
    /// An event of the core; forward [`QdiskEvent::Availability`] to
    /// `quorum::VoteQuorum::set_qdisk`.
    Qdisk(QdiskEvent),
    /// `reboot="1"` and the score dropped: the owner must remove this node
    /// (the `quorate` binary reboots through sysrq; tests just observe it).
    SelfFence {
        /// Why.
        reason: String,
    },
}

/// Could not start the driver.
#[derive(Debug, Error)]
pub enum StartError {
    /// The device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] QdiskConfigError),
    /// The thread.
    #[error("cannot start the qdisk thread: {0}")]
    Thread(std::io::Error),
}

enum Command {
    Heuristic(usize, bool),
    Membership(Vec<NodeId>),
    ReadDone(Result<Vec<u8>, String>),
    WriteDone(Result<(), String>),
    BlockIo(bool),
    IoDelay(std::time::Duration),
    Stop,
}

enum IoReq {
    Read,
    Write(u64, Vec<u8>),
}

/// Fault injection shared with the I/O thread.
#[derive(Default)]
struct Faults {
    blocked: bool,
    delay: std::time::Duration,
}

/// A running quorum disk driver (one per node).
pub struct QdiskHandle {
    tx: Sender<Command>,
    events: Receiver<DriverEvent>,
    status: Arc<Mutex<QdiskStatus>>,
    thread: Option<JoinHandle<()>>,
}

/// An incarnation number that differs on every start (time and pid mixed).
pub fn fresh_incarnation() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = base::DetRng::new(t ^ (u64::from(std::process::id()) << 32));
    rng.next_u64()
}

impl QdiskHandle {
    /// Open `path` and start node `me`'s quorum disk thread.
    pub fn spawn(
        path: &Path,
        me: NodeId,
        incarnation: u64,
        cfg: QdiskConfig,
        opts: DriverOptions,
    ) -> Result<QdiskHandle, StartError> {
        let device = Device::open(path, opts.direct_io)?;
        let origin = std::time::Instant::now();
        let core = Qdisk::new(me, incarnation, cfg, Instant::ZERO)?;
        let status = Arc::new(Mutex::new(core.status()));
        let (tx, rx) = mpsc::channel();
        let (etx, events) = mpsc::sync_channel(EVENT_QUEUE);
        let st = status.clone();
        let htx = tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("qdisk-{me}"))
            .spawn(move || run(core, device, origin, rx, htx, etx, st))
            .map_err(StartError::Thread)?;
        Ok(QdiskHandle {
            tx,
            events,
            status,
            thread: Some(thread),
        })
    }

    /// The cluster membership of this node's partition (from totem).
    pub fn set_membership(&self, members: Vec<NodeId>) {
        let _ = self.tx.send(Command::Membership(members));
    }

    /// Fault injection for tests and the simulator: while `true` every read
    /// and write fails as if the path to the storage were lost.
    pub fn block_io(&self, blocked: bool) {
        let _ = self.tx.send(Command::BlockIo(blocked));
    }

    /// Fault injection for tests and the simulator: every read and write
    /// takes `delay` longer (a slow or queueing storage path).
    pub fn io_delay(&self, delay: std::time::Duration) {
        let _ = self.tx.send(Command::IoDelay(delay));
    }

    /// The latest snapshot.
    pub fn status(&self) -> QdiskStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The event stream.
    pub fn events(&self) -> &Receiver<DriverEvent> {
        &self.events
    }

    /// Stop writing (to the others this node dies after `tko` cycles) and
    /// wait for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for QdiskHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn emit(etx: &SyncSender<DriverEvent>, e: DriverEvent) {
    match etx.try_send(e) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(e)) => {
            tracing::warn!(event = ?e, "qdisk event queue full, event dropped")
        }
    }
}

/// The I/O thread: a hung device blocks here, not the core, so the core
/// still notices the stall and withdraws its votes.
fn io_worker(
    mut device: Device,
    reqs: Receiver<IoReq>,
    done: Sender<Command>,
    faults: Arc<Mutex<Faults>>,
) {
    while let Ok(req) = reqs.recv() {
        let (blocked, delay) = faults
            .lock()
            .map(|f| (f.blocked, f.delay))
            .unwrap_or((false, std::time::Duration::ZERO));
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let blocked_msg = || "I/O blocked (fault injection)".to_string();
        let msg = match req {
            IoReq::Read if blocked => Command::ReadDone(Err(blocked_msg())),
            IoReq::Read => Command::ReadDone(
                device
                    .read_all()
                    .map(|b| b.to_vec())
                    .map_err(|e| e.to_string()),
            ),
            IoReq::Write(..) if blocked => Command::WriteDone(Err(blocked_msg())),
            IoReq::Write(off, data) => {
                Command::WriteDone(device.write_block(off, &data).map_err(|e| e.to_string()))
            }
        };
        if done.send(msg).is_err() {
            return;
        }
    }
}

fn run(
    mut core: Qdisk,
    device: Device,
    origin: std::time::Instant,
    rx: Receiver<Command>,
    htx: Sender<Command>,
    etx: SyncSender<DriverEvent>,
    status: Arc<Mutex<QdiskStatus>>,
) {
    let now = || Instant(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let faults = Arc::new(Mutex::new(Faults::default()));
    let (io_tx, io_rx) = mpsc::channel();
    let worker = {
        let done = htx.clone();
        let faults = faults.clone();
        std::thread::Builder::new()
            .name(format!("qdisk-io-{}", core.node_id()))
            .spawn(move || io_worker(device, io_rx, done, faults))
    };
    if let Err(e) = worker {
        tracing::error!(error = %e, "cannot start the qdisk I/O thread");
        return;
    }
    loop {
        let t = now();
        if core.poll_deadline().is_some_and(|d| d <= t) {
            core.handle_timeout(t);
        }
        while let Some(a) = core.poll_action() {
            match a {
                QdiskAction::ReadAll => {
                    let _ = io_tx.send(IoReq::Read);
                }
                QdiskAction::WriteBlock { offset, data } => {
                    let _ = io_tx.send(IoReq::Write(offset, data));
                }
                QdiskAction::RunHeuristic {
                    index,
                    program,
                    timeout,
                } => {
                    let htx = htx.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("qdisk-heuristic-{index}"))
                        .spawn(move || {
                            let ok = heuristic::run(&program, timeout.to_std());
                            let _ = htx.send(Command::Heuristic(index, ok));
                        });
                    if spawned.is_err() {
                        core.handle_heuristic_result(now(), index, false);
                    }
                }
                QdiskAction::SelfFence { reason } => {
                    tracing::error!(%reason, "qdisk requests self-fence");
                    emit(&etx, DriverEvent::SelfFence { reason });
                }
            }
        }
        while let Some(e) = core.poll_event() {
            emit(&etx, DriverEvent::Qdisk(e));
        }
        if let Ok(mut s) = status.lock() {
            *s = core.status();
        }
        let wait = core
            .poll_deadline()
            .map(|d| d.saturating_since(now()).to_std())
            .unwrap_or(std::time::Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Command::Heuristic(i, ok)) => core.handle_heuristic_result(now(), i, ok),
            Ok(Command::Membership(m)) => core.handle_membership(now(), m),
            Ok(Command::ReadDone(r)) => {
                core.handle_read(now(), r.as_deref().map_err(|e| e.clone()))
            }
            Ok(Command::WriteDone(r)) => core.handle_write_result(now(), r),
            Ok(Command::BlockIo(b)) => {
                if let Ok(mut f) = faults.lock() {
                    f.blocked = b;
                }
            }
            Ok(Command::IoDelay(d)) => {
                if let Ok(mut f) = faults.lock() {
                    f.delay = d;
                }
            }
            // Dropping io_tx ends the I/O thread once any hung call returns.
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
