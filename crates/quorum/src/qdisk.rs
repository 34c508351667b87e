//! The quorum disk (qdiskd's role) as a sans-IO state machine.
//!
//! Every `interval` the core asks its driver for [`QdiskAction::ReadAll`]
//! (the whole [`crate::layout::DISK_BYTES`] area), decides, then asks for
//! [`QdiskAction::WriteBlock`] of its own status block. Heuristics are asked for
//! with [`QdiskAction::RunHeuristic`] on their own intervals.
//!
//! * Liveness is judged by sequence counters, never by clocks: a node whose
//!   counter did not move for `tko` of *our* cycles is dead to the disk; one
//!   whose counter moved in `tko_up` cycles is online.
//! * Our own state: `Init` for `tko_up + 1` cycles (learn who is there), then
//!   `Run` while the heuristic score is at least `min_score`, `Down` below it
//!   (and a [`QdiskAction::SelfFence`] when `reboot` is set).
//! * Master election as qdiskd: when no online node claims master, each online
//!   node bids for the lowest online node id; that node becomes master after
//!   `master_wait` cycles once every online node bids for it. Nobody bids
//!   while a master claim may still be counted somewhere: a block that moved
//!   while claiming master within the last `tko` cycles we actually watched
//!   (a hung master has withdrawn long before that), or, unless that master
//!   and the candidate are both in our cluster membership and the master has
//!   not restarted since, within [`QdiskConfig::outsider_wait`] cycles (a
//!   partition whose ring died with the master keeps counting its claim
//!   until totem installs a new configuration, up to token + consensus
//!   later). Cycles in which we could not read count as misses, and the
//!   first read after such a gap only re-baselines the counters. Of two masters (after a heal)
//!   the lower node id keeps it; a non-master trusts the master's grant only
//!   while the master's counter moved within `max(1, tko/2)` cycles.
//! * The master writes a mask of the nodes it grants the votes to: online on
//!   the disk *and* in the master's cluster membership
//!   ([`Qdisk::handle_membership`]). A node counts the disk in
//!   ([`QdiskEvent::Availability`]) when it is the master, or (unless
//!   `master_wins`) when the master is in its membership and its bit is set.
//!   The vote core only counts a claim whose master is a member, so only the
//!   master's partition gets the device votes.
//! * I/O errors, stalls, a foreign or unformatted disk make a cycle fail;
//!   after `max(1, tko/2)` failed cycles in a row the node stops advertising
//!   and drops back to `Init` (well before the others can declare it dead
//!   and elect a new master, so it never resumes as a second master), and
//!   after `max_error_cycles` (if not 0) it gives up. A read or write still
//!   outstanding when the next cycle is due counts as a failed cycle, so the
//!   driver must run I/O off the thread that drives the core. A cycle that
//!   comes `io_grace` whole intervals late (the process was stalled) stops
//!   the votes until a cycle completes; `tko` intervals late, the node also
//!   withdraws from the disk. [`QdiskConfig::io_grace`] writes the timing
//!   argument down.

use crate::layout::{self, DiskState, Header, StatusBlock, BLOCK_SIZE, DISK_BYTES, MAX_NODES};
use base::{Duration, Instant, NodeId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

/// Most heuristics (as qdiskd).
pub const MAX_HEURISTICS: usize = 10;
/// Most events kept undrained.
pub const MAX_EVENTS: usize = 1024;

/// One `<heuristic>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeuristicConfig {
    /// Shell command run with `sh -c`; exit status 0 is a pass.
    pub program: String,
    /// Score added while the heuristic is up (default 1).
    pub score: u32,
    /// How often it runs (default 2 s); also its timeout.
    pub interval: Duration,
    /// Consecutive failures before it counts as down (default 1).
    pub tko: u32,
}

impl HeuristicConfig {
    /// A heuristic with qdiskd's defaults.
    pub fn new(program: impl Into<String>) -> Self {
        HeuristicConfig {
            program: program.into(),
            score: 1,
            interval: Duration::from_secs(2),
            tko: 1,
        }
    }
}

/// `<quorumd>` as the disk core needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QdiskConfig {
    /// Cluster name; the disk header must carry the same.
    pub cluster_name: String,
    /// Seconds per read/write cycle (default 1 s).
    pub interval: Duration,
    /// Cycles without an update before a node is dead to the disk (default 10).
    pub tko: u32,
    /// Cycles with updates before a node is online (default tko/3, at least 1).
    pub tko_up: Option<u32>,
    /// Cycles a bidder waits before declaring itself master (default tko/2, at least 1).
    pub master_wait: Option<u32>,
    /// Votes the device contributes.
    pub votes: u32,
    /// Minimum score; 0 means floor((sum of heuristic scores + 1) / 2).
    pub min_score: u32,
    /// Only the master advertises the votes (two nodes, no heuristics).
    pub master_wins: bool,
    /// Self-fence when the score drops below min_score.
    pub reboot: bool,
    /// Give up after this many failed cycles in a row (0: never).
    pub max_error_cycles: u32,
    /// Heuristics.
    pub heuristics: Vec<HeuristicConfig>,
    /// How long cluster membership can take to drop a node that stopped:
    /// totem's token timeout plus its consensus timeout (`Duration::ZERO`:
    /// unknown, the disk's own timing only). A master that is not in our
    /// membership may still be counted by a partition whose ring died with
    /// it, until that partition's members install a new configuration; see
    /// [`QdiskConfig::outsider_wait`].
    pub membership_timeout: Duration,
}

impl QdiskConfig {
    /// qdiskd's defaults for `cluster_name`.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        QdiskConfig {
            cluster_name: cluster_name.into(),
            interval: Duration::from_secs(1),
            tko: 10,
            tko_up: None,
            master_wait: None,
            votes: 1,
            min_score: 0,
            master_wins: false,
            reboot: true,
            max_error_cycles: 0,
            heuristics: Vec::new(),
            membership_timeout: Duration::ZERO,
        }
    }

    /// Effective tko_up.
    pub fn tko_up(&self) -> u32 {
        self.tko_up.unwrap_or(self.tko / 3).max(1)
    }

    /// Effective master_wait.
    pub fn master_wait(&self) -> u32 {
        self.master_wait.unwrap_or(self.tko / 2).max(1)
    }

    /// Highest possible score.
    pub fn score_max(&self) -> u32 {
        self.heuristics
            .iter()
            .fold(0u32, |a, h| a.saturating_add(h.score))
    }

    /// Effective min_score.
    pub fn min_score(&self) -> u32 {
        if self.min_score > 0 {
            self.min_score
        } else {
            self.score_max().saturating_add(1) / 2
        }
    }

    /// Failed cycles in a row after which the node stops advertising.
    ///
    /// The step-down bound. Say our last write completed at `w`. If every
    /// later cycle fails (an I/O error, or an I/O still outstanding when the
    /// next cycle is due), then by `w + io_grace * interval` the disk no
    /// longer counts us in and we are no longer master; a stall that long
    /// (see `Qdisk::stalled`) withdraws the votes the moment we run again.
    /// Another node sees our block move for the last time at its first read
    /// after `w`; `tko` reads later (`tko * interval`) it finds us dead and
    /// bids, and it needs `master_wait` more cycles of bidding: it cannot be
    /// master before `w + (tko + master_wait) * interval`. With `io_grace =
    /// max(1, tko / 2)`, `tko >= 2` and `master_wait >= 1`, we withdraw at
    /// least `tko - tko / 2 + master_wait`, so 2 or more, intervals before
    /// anyone can take over: room for clock drift and for an I/O that
    /// completes just inside its interval.
    pub fn io_grace(&self) -> u32 {
        (self.tko / 2).max(1)
    }

    /// Cycles a master block must have stood still before a node whose
    /// cluster membership does not include that master may bid:
    /// `tko + ceil(membership_timeout / interval) + 1`.
    ///
    /// Withdrawing is an ordered message, and a partition whose ring died
    /// with its master (its other members lose the token together with it)
    /// orders nothing until totem installs a new configuration: up to the
    /// token timeout plus the consensus timeout after the master's last
    /// token, which is about its last write. Until then that partition still
    /// counts the old master's claim. A node in the master's own partition
    /// may take over after the disk's usual `tko` (the votes stay within
    /// that partition); a node outside it waits until the old partition must
    /// have dissolved, or the disk votes would count in two partitions.
    pub fn outsider_wait(&self) -> u32 {
        let i = self.interval.as_nanos().max(1);
        let m = self.membership_timeout.as_nanos();
        if m == 0 {
            return self.tko;
        }
        let cycles = u32::try_from(m.div_ceil(i)).unwrap_or(u32::MAX);
        self.tko.saturating_add(cycles).saturating_add(1)
    }

    /// qdiskd turns `master_wins` on by itself for a two-node cluster without
    /// heuristics (any other setup keeps the configured value).
    pub fn apply_auto_master_wins(&mut self, cluster_nodes: usize) {
        if cluster_nodes == 2 && self.heuristics.is_empty() {
            self.master_wins = true;
        }
    }

    /// Longest time the disk can take to move its votes to a new master in
    /// the old master's partition: `interval * (tko + master_wait + 2)`
    /// (qdiskd's upgrade_wait is 2). Outside it, a takeover also waits
    /// [`QdiskConfig::outsider_wait`].
    pub fn takeover_time(&self) -> Duration {
        self.interval
            .mul(u64::from(self.tko) + u64::from(self.master_wait()) + 2)
    }

    /// The totem token timeout must exceed [`QdiskConfig::takeover_time`], or
    /// membership would evict nodes before the disk could decide (qdisk(5)).
    pub fn check_token_timeout(&self, token: Duration) -> Result<(), QdiskConfigError> {
        let need = self.takeover_time();
        if token <= need {
            return Err(QdiskConfigError::TokenTooShort {
                token_ms: token.as_millis(),
                need_ms: need.as_millis(),
            });
        }
        Ok(())
    }

    /// Check the values the way qdiskd would.
    pub fn validate(&self) -> Result<(), QdiskConfigError> {
        let n = self.cluster_name.len();
        if n == 0 || n > layout::MAX_NAME {
            return Err(QdiskConfigError::ClusterName(n));
        }
        if self.interval == Duration::ZERO {
            return Err(QdiskConfigError::Interval);
        }
        if self.tko < 2 {
            return Err(QdiskConfigError::Tko(self.tko));
        }
        if self.votes == 0 {
            return Err(QdiskConfigError::Votes);
        }
        if self.heuristics.len() > MAX_HEURISTICS {
            return Err(QdiskConfigError::TooManyHeuristics(self.heuristics.len()));
        }
        for (i, h) in self.heuristics.iter().enumerate() {
            if h.program.trim().is_empty()
                || h.score == 0
                || h.tko == 0
                || h.interval == Duration::ZERO
            {
                return Err(QdiskConfigError::Heuristic(i));
            }
        }
        if !self.heuristics.is_empty() && self.min_score() > self.score_max() {
            return Err(QdiskConfigError::MinScore {
                min: self.min_score(),
                max: self.score_max(),
            });
        }
        Ok(())
    }
}

/// A `<quorumd>` configuration qdiskd would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QdiskConfigError {
    /// Bad node id.
    #[error("node id {0} cannot use a quorum disk: node ids 1 to 16 only (qdisk limit)")]
    NodeId(u32),
    /// Bad cluster name.
    #[error("cluster name of {0} bytes: it must be 1 to 64 bytes")]
    ClusterName(usize),
    /// Zero interval.
    #[error("<quorumd interval> must be at least 1 second")]
    Interval,
    /// tko too small.
    #[error("<quorumd tko=\"{0}\"> is too small: use at least 2 (10 is usual)")]
    Tko(u32),
    /// Zero votes.
    #[error("<quorumd votes> must be at least 1 (usually nodes - 1)")]
    Votes,
    /// Too many heuristics.
    #[error("{0} heuristics configured, qdisk supports at most 10")]
    TooManyHeuristics(usize),
    /// Bad heuristic.
    #[error("heuristic #{0} needs a non-empty program, and score, interval and tko of at least 1")]
    Heuristic(usize),
    /// Token timeout too short for the disk timings.
    #[error("<totem token=\"{token_ms}\"> must be longer than the quorum disk takeover time of {need_ms} ms (interval * (tko + master_wait + 2)): raise token or lower interval/tko")]
    TokenTooShort {
        /// Configured token timeout.
        token_ms: u64,
        /// Takeover time.
        need_ms: u64,
    },
    /// min_score unreachable.
    #[error("min_score {min} can never be reached: the heuristics add up to {max}")]
    MinScore {
        /// Configured minimum.
        min: u32,
        /// Sum of scores.
        max: u32,
    },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QdiskAction {
    /// Read [`DISK_BYTES`] from offset 0, then call [`Qdisk::handle_read`].
    ReadAll,
    /// Write `data` at `offset`, flush it to stable storage, then call
    /// [`Qdisk::handle_write_result`].
    WriteBlock {
        /// Byte offset.
        offset: u64,
        /// One block.
        data: Vec<u8>,
    },
    /// Run `sh -c program`, kill it after `timeout`, then call
    /// [`Qdisk::handle_heuristic_result`] (exit 0 = pass).
    RunHeuristic {
        /// Index into the configured heuristics.
        index: usize,
        /// The command.
        program: String,
        /// Kill it after this long and count a failure.
        timeout: Duration,
    },
    /// `reboot="1"` and the score dropped: remove this node from the cluster now.
    SelfFence {
        /// Why, for the log.
        reason: String,
    },
}

/// This node's state on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum QdiskState {
    /// Learning who is on the disk.
    Init,
    /// Online.
    Run,
    /// Online and master.
    Master,
    /// Alive, not advertising (score too low or I/O trouble).
    Down,
    /// Gave up after `max_error_cycles`.
    Stopped,
}

/// What happened, for the log and the vote core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum QdiskEvent {
    /// Feed to [`crate::VoteQuorum::set_qdisk`]: `Some(master)` while the disk
    /// counts this node in, `None` otherwise.
    Availability {
        /// The master granting the votes.
        master: Option<NodeId>,
        /// Why, in words.
        reason: String,
    },
    /// Our state changed.
    StateChanged {
        /// New state.
        state: QdiskState,
        /// Why.
        reason: String,
    },
    /// A node became online on the disk.
    NodeOnline(NodeId),
    /// A node is dead to the disk.
    NodeDead {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The master changed.
    MasterChanged {
        /// New master.
        master: Option<NodeId>,
    },
    /// A heuristic went up or down.
    HeuristicChanged {
        /// Index.
        index: usize,
        /// Up now.
        up: bool,
        /// Score now.
        score: u32,
    },
    /// A cycle failed.
    IoError {
        /// What failed.
        reason: String,
        /// Failed cycles in a row.
        streak: u32,
    },
}

/// One other node as seen on the disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Node.
    pub node_id: NodeId,
    /// Online to us (updates seen, not dead).
    pub alive: bool,
    /// What it advertises.
    pub state: Option<DiskState>,
    /// Our cycles since its counter last moved.
    pub misses: u32,
    /// Its sequence counter.
    pub seq: u64,
    /// Its score.
    pub score: u32,
}

/// A snapshot for `quorate qdisk status` / mkqdisk -L style output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QdiskStatus {
    /// This node.
    pub node_id: NodeId,
    /// Our state.
    pub state: QdiskState,
    /// Heuristic score, max and minimum.
    pub score: u32,
    /// Sum of all heuristic scores.
    pub score_max: u32,
    /// Minimum score to advertise.
    pub min_score: u32,
    /// Current master.
    pub master: Option<NodeId>,
    /// The disk counts us in under this master.
    pub available: Option<NodeId>,
    /// Device votes.
    pub votes: u32,
    /// Completed read cycles.
    pub cycles: u64,
    /// Failed cycles in a row.
    pub error_streak: u32,
    /// Corrupt (torn, foreign) blocks seen.
    pub corrupt_blocks: u64,
    /// Other nodes.
    pub peers: Vec<PeerStatus>,
}

#[derive(Clone, Debug)]
struct Peer {
    incarnation: u64,
    seq: u64,
    seen: u32,
    misses: u32,
    absent_for: u32,
    /// Watched cycles since this slot last showed a live master claim (its
    /// block moved while saying master); `None`: none within
    /// [`QdiskConfig::outsider_wait`].
    claim_ago: Option<u32>,
    /// That claim was made by an earlier incarnation (the node restarted).
    claim_restarted: bool,
    alive: bool,
    rebase: bool,
    last: Option<StatusBlock>,
}

#[derive(Clone, Debug)]
struct Heur {
    next_due: Instant,
    in_flight: bool,
    fails: u32,
    up: bool,
}

/// The quorum disk core of one node. See the module docs.
#[derive(Debug)]
pub struct Qdisk {
    me: NodeId,
    incarnation: u64,
    cfg: QdiskConfig,
    state: QdiskState,
    seq: u64,
    cycles: u64,
    init_progress: u64,
    next_cycle: Instant,
    read_outstanding: bool,
    write_outstanding: bool,
    error_streak: u32,
    peers: BTreeMap<NodeId, Peer>,
    heur: Vec<Heur>,
    membership: Option<BTreeSet<NodeId>>,
    bid_for: u32,
    bid_cycles: u32,
    /// Watched cycles since our first read found our own slot claiming
    /// master for an earlier incarnation of ours (see [`Qdisk::reserved`]).
    own_old_claim: Option<u32>,
    master: Option<NodeId>,
    available: Option<NodeId>,
    actions: VecDeque<QdiskAction>,
    events: VecDeque<QdiskEvent>,
    corrupt_blocks: u64,
    ignored_inputs: u64,
    dropped_events: u64,
}

impl Qdisk {
    /// A core for node `me`. `incarnation` must differ on every start (the
    /// driver uses a random or boot-derived value). The first cycle is due at `now`.
    pub fn new(
        me: NodeId,
        incarnation: u64,
        cfg: QdiskConfig,
        now: Instant,
    ) -> Result<Self, QdiskConfigError> {
        if me.0 == 0 || me.0 > MAX_NODES {
            return Err(QdiskConfigError::NodeId(me.0));
        }
        cfg.validate()?;
        let heur = cfg
            .heuristics
            .iter()
            .map(|_| Heur {
                next_due: now,
                in_flight: false,
                fails: 0,
                up: false,
            })
            .collect();
        Ok(Qdisk {
            me,
            incarnation,
            cfg,
            state: QdiskState::Init,
            seq: 0,
            cycles: 0,
            init_progress: 0,
            next_cycle: now,
            read_outstanding: false,
            write_outstanding: false,
            error_streak: 0,
            peers: BTreeMap::new(),
            heur,
            membership: None,
            bid_for: 0,
            bid_cycles: 0,
            own_old_claim: None,
            master: None,
            available: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            corrupt_blocks: 0,
            ignored_inputs: 0,
            dropped_events: 0,
        })
    }

    /// This node.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// Our state.
    pub fn state(&self) -> QdiskState {
        self.state
    }

    /// The disk counts this node in under this master.
    pub fn available(&self) -> Option<NodeId> {
        self.available
    }

    /// The configuration.
    pub fn config(&self) -> &QdiskConfig {
        &self.cfg
    }

    /// The cluster membership as cman/totem sees it (the master grants votes
    /// only to members of its own partition). Until called, only the master
    /// itself is granted the votes.
    pub fn handle_membership(&mut self, now: Instant, members: impl IntoIterator<Item = NodeId>) {
        let _ = now;
        self.membership = Some(members.into_iter().collect());
        self.update_availability();
    }

    /// Timers: cycles and heuristics.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == QdiskState::Stopped {
            return;
        }
        for (i, h) in self.heur.iter_mut().enumerate() {
            if !h.in_flight && now >= h.next_due {
                let c = &self.cfg.heuristics[i];
                h.in_flight = true;
                h.next_due = now + c.interval;
                self.actions.push_back(QdiskAction::RunHeuristic {
                    index: i,
                    program: c.program.clone(),
                    timeout: c.interval,
                });
            }
        }
        if now >= self.next_cycle {
            let next = self.next_cycle + self.cfg.interval;
            // Whole cycles that went by without us: the process or the
            // machine was stalled, and we wrote nothing meanwhile.
            let skipped =
                (now.as_nanos() - self.next_cycle.as_nanos()) / self.cfg.interval.as_nanos().max(1);
            self.stalled(u32::try_from(skipped).unwrap_or(u32::MAX));
            if self.state == QdiskState::Stopped {
                return;
            }
            self.next_cycle = if next > now {
                next
            } else {
                now + self.cfg.interval
            };
            if self.read_outstanding || self.write_outstanding {
                self.miss_all();
                self.fail_cycle(
                    "disk I/O did not complete within one interval (slow or hung device)".into(),
                );
            } else {
                self.read_outstanding = true;
                self.actions.push_back(QdiskAction::ReadAll);
            }
        }
    }

    /// When [`Qdisk::handle_timeout`] wants to be called next.
    pub fn poll_deadline(&self) -> Option<Instant> {
        if self.state == QdiskState::Stopped {
            return None;
        }
        let h = self
            .heur
            .iter()
            .filter(|h| !h.in_flight)
            .map(|h| h.next_due)
            .min();
        Some(h.map_or(self.next_cycle, |h| h.min(self.next_cycle)))
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<QdiskAction> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<QdiskEvent> {
        self.events.pop_front()
    }

    /// Result of [`QdiskAction::ReadAll`]: the whole area, or the I/O error.
    pub fn handle_read(&mut self, now: Instant, result: Result<&[u8], String>) {
        if !self.read_outstanding || self.state == QdiskState::Stopped {
            self.ignored_inputs += 1;
            return;
        }
        self.read_outstanding = false;
        let disk = match result {
            Ok(d) => d,
            Err(e) => {
                self.miss_all();
                return self.fail_cycle(format!("reading the quorum disk failed: {e}"));
            }
        };
        if disk.len() < DISK_BYTES {
            self.miss_all();
            return self.fail_cycle(layout::LayoutError::Short(disk.len()).to_string());
        }
        match Header::decode(&disk[..BLOCK_SIZE]) {
            Err(e) => {
                self.miss_all();
                return self.fail_cycle(format!("quorum disk header: {e}"));
            }
            Ok(h) if h.cluster_name != self.cfg.cluster_name => {
                self.miss_all();
                return self.fail_cycle(format!(
                    "the quorum disk belongs to cluster \"{}\", not \"{}\": check <quorumd device> or reformat it",
                    h.cluster_name, self.cfg.cluster_name
                ));
            }
            Ok(_) => {}
        }
        self.cycles += 1;
        self.init_progress += 1;
        let off = layout::block_offset(self.me) as usize;
        if self.cycles == 1 {
            // Our slot as an earlier incarnation of ours left it.
            if let Ok(Some(b)) = StatusBlock::decode(&disk[off..off + BLOCK_SIZE]) {
                if b.node_id == self.me
                    && b.incarnation != self.incarnation
                    && b.state == DiskState::Master
                {
                    self.own_old_claim = Some(0);
                }
            }
        } else if let Some(a) = self.own_old_claim {
            self.own_old_claim =
                Some(a.saturating_add(1)).filter(|a| *a < self.cfg.outsider_wait());
        }
        for n in 1..=MAX_NODES {
            let node = NodeId(n);
            if node == self.me {
                continue;
            }
            let off = layout::block_offset(node) as usize;
            let block = match StatusBlock::decode(&disk[off..off + BLOCK_SIZE]) {
                Ok(Some(b)) if b.node_id == node => Some(b),
                Ok(Some(_)) | Err(_) => {
                    self.corrupt_blocks += 1;
                    None
                }
                Ok(None) => None,
            };
            self.observe(node, block, true);
        }
        self.update_self();
        self.elect();
        // Write our block for this cycle.
        self.seq += 1;
        let block = StatusBlock {
            node_id: self.me,
            incarnation: self.incarnation,
            seq: self.seq,
            timestamp: now.as_nanos(),
            state: match self.state {
                QdiskState::Init | QdiskState::Stopped => DiskState::Init,
                QdiskState::Run => DiskState::Run,
                QdiskState::Master => DiskState::Master,
                QdiskState::Down => DiskState::Down,
            },
            score: self.score(),
            score_max: self.cfg.score_max(),
            bid_for: self.bid_for,
            master_mask: self.master_mask(),
        };
        self.write_outstanding = true;
        self.actions.push_back(QdiskAction::WriteBlock {
            offset: layout::block_offset(self.me),
            data: block.encode(),
        });
        self.update_availability();
    }

    /// Result of [`QdiskAction::WriteBlock`].
    pub fn handle_write_result(&mut self, now: Instant, result: Result<(), String>) {
        let _ = now;
        if !self.write_outstanding || self.state == QdiskState::Stopped {
            self.ignored_inputs += 1;
            return;
        }
        self.write_outstanding = false;
        match result {
            Ok(()) => {
                if self.error_streak > 0 {
                    self.error_streak = 0;
                    self.update_availability();
                }
            }
            Err(e) => self.fail_cycle(format!("writing the quorum disk failed: {e}")),
        }
    }

    /// Result of [`QdiskAction::RunHeuristic`] `index`: `true` on exit status 0.
    pub fn handle_heuristic_result(&mut self, now: Instant, index: usize, ok: bool) {
        let _ = now;
        let Some(h) = self.heur.get_mut(index) else {
            self.ignored_inputs += 1;
            return;
        };
        if !h.in_flight {
            self.ignored_inputs += 1;
            return;
        }
        h.in_flight = false;
        let was = h.up;
        if ok {
            h.fails = 0;
            h.up = true;
        } else {
            h.fails = h.fails.saturating_add(1);
            if h.fails >= self.cfg.heuristics[index].tko {
                h.up = false;
            }
        }
        let up = h.up;
        if up != was {
            let score = self.score();
            self.push_event(QdiskEvent::HeuristicChanged { index, up, score });
        }
        if matches!(self.state, QdiskState::Run | QdiskState::Master) && !self.score_ok() {
            self.go_down();
        }
        self.update_availability();
    }

    /// A snapshot.
    pub fn status(&self) -> QdiskStatus {
        QdiskStatus {
            node_id: self.me,
            state: self.state,
            score: self.score(),
            score_max: self.cfg.score_max(),
            min_score: self.cfg.min_score(),
            master: self.master,
            available: self.available,
            votes: self.cfg.votes,
            cycles: self.cycles,
            error_streak: self.error_streak,
            corrupt_blocks: self.corrupt_blocks,
            peers: self
                .peers
                .iter()
                .map(|(n, p)| PeerStatus {
                    node_id: *n,
                    alive: p.alive,
                    state: p.last.map(|b| b.state),
                    misses: p.misses,
                    seq: p.seq,
                    score: p.last.map_or(0, |b| b.score),
                })
                .collect(),
        }
    }

    fn score(&self) -> u32 {
        self.heur
            .iter()
            .zip(&self.cfg.heuristics)
            .filter(|(h, _)| h.up)
            .fold(0u32, |a, (_, c)| a.saturating_add(c.score))
    }

    fn score_ok(&self) -> bool {
        self.cfg.heuristics.is_empty() || self.score() >= self.cfg.min_score()
    }

    fn io_ok(&self) -> bool {
        self.error_streak < self.cfg.io_grace()
    }

    fn push_event(&mut self, e: QdiskEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        tracing::info!(node = %self.me, event = ?e, "qdisk");
        self.events.push_back(e);
    }

    fn set_state(&mut self, s: QdiskState, reason: String) {
        if self.state != s {
            self.state = s;
            self.push_event(QdiskEvent::StateChanged { state: s, reason });
        }
    }

    fn fail_cycle(&mut self, reason: String) {
        self.error_streak = self.error_streak.saturating_add(1);
        if self.state == QdiskState::Init {
            self.init_progress = 0;
        }
        let streak = self.error_streak;
        self.push_event(QdiskEvent::IoError {
            reason: reason.clone(),
            streak,
        });
        if streak >= self.cfg.io_grace()
            && matches!(
                self.state,
                QdiskState::Run | QdiskState::Master | QdiskState::Down
            )
        {
            // The others may declare us dead and elect a new master: when the
            // disk comes back we rejoin from scratch instead of resuming as
            // master next to a new one.
            if self.master.take().is_some() {
                self.push_event(QdiskEvent::MasterChanged { master: None });
            }
            self.bid_for = 0;
            self.bid_cycles = 0;
            self.init_progress = 0;
            self.set_state(
                QdiskState::Init,
                format!("no quorum disk access for {streak} cycles: withdrawing, will rejoin when the disk is back"),
            );
        }
        if self.cfg.max_error_cycles > 0 && streak >= self.cfg.max_error_cycles {
            self.set_state(
                QdiskState::Stopped,
                format!(
                    "giving up after {streak} failed cycles in a row (max_error_cycles): {reason}"
                ),
            );
            self.master = None;
            self.actions
                .retain(|a| matches!(a, QdiskAction::SelfFence { .. }));
        }
        self.update_availability();
    }

    /// Our cycle comes `skipped` whole intervals late (a stall).
    ///
    /// From `io_grace` intervals late on, the disk no longer counts us in
    /// until a cycle of ours completes again (error_streak), so we never act
    /// on votes that we could not have renewed. Our block still says what it
    /// said: others cannot have declared us dead yet (that takes `tko` of
    /// their cycles), and a block that stops claiming master would free the
    /// disk while our partition may still count our claim (see
    /// [`QdiskConfig::outsider_wait`]). From `tko` intervals late on, others
    /// may be electing a successor: we withdraw from the disk and rejoin from
    /// scratch, as after `io_grace` failed cycles.
    fn stalled(&mut self, skipped: u32) {
        if skipped < self.cfg.io_grace() || self.state == QdiskState::Stopped {
            return;
        }
        for _ in 0..skipped.min(self.cfg.tko) {
            self.miss_all();
        }
        if skipped >= self.cfg.tko {
            self.error_streak = self.error_streak.max(self.cfg.io_grace() - 1);
            self.fail_cycle(format!(
                "no quorum disk cycle for {skipped} intervals (this node was stalled)"
            ));
            return;
        }
        self.error_streak = self.error_streak.max(skipped);
        self.push_event(QdiskEvent::IoError {
            reason: format!(
                "no quorum disk cycle for {skipped} intervals (this node was stalled): not counting the disk votes until a cycle completes"
            ),
            streak: self.error_streak,
        });
        self.update_availability();
    }

    fn go_down(&mut self) {
        let reason = format!(
            "heuristic score {} is below min_score {}: no longer advertising the quorum disk votes",
            self.score(),
            self.cfg.min_score()
        );
        if self.state == QdiskState::Master {
            self.master = None;
            self.push_event(QdiskEvent::MasterChanged { master: None });
        }
        self.bid_cycles = 0;
        self.bid_for = 0;
        self.set_state(QdiskState::Down, reason.clone());
        if self.cfg.reboot {
            self.actions.push_back(QdiskAction::SelfFence {
                reason: format!("{reason} (reboot=\"1\")"),
            });
        }
    }

    /// A cycle in which we could not look at the disk is no evidence that
    /// anybody is alive: it counts as a miss for every node.
    fn miss_all(&mut self) {
        let nodes: Vec<NodeId> = self.peers.keys().copied().collect();
        for n in nodes {
            self.observe(n, None, false);
        }
    }

    /// Account one cycle for `node`. `observed` is false when we could not
    /// read the disk at all: then `misses` (conservative time since the last
    /// known update, used for death and for trusting a master) still grows,
    /// but `absent_for` (cycles we actually watched it stand still, used to
    /// allow a new election) does not, and the next read only re-baselines
    /// the counter: one that moved while we were not looking may have
    /// stopped since.
    fn observe(&mut self, node: NodeId, block: Option<StatusBlock>, observed: bool) {
        let tko = self.cfg.tko;
        let tko_up = self.cfg.tko_up();
        let outsider_wait = self.cfg.outsider_wait();
        let mut ev = Vec::new();
        let p = match (self.peers.get_mut(&node), block) {
            (Some(p), _) => p,
            (None, None) => return,
            (None, Some(b)) => {
                // First sight: we do not know whether it is alive until its
                // counter moves.
                self.peers.insert(
                    node,
                    Peer {
                        incarnation: b.incarnation,
                        seq: b.seq,
                        seen: 0,
                        misses: 0,
                        absent_for: 0,
                        claim_ago: (b.state == DiskState::Master).then_some(0),
                        claim_restarted: false,
                        alive: false,
                        rebase: false,
                        last: Some(b),
                    },
                );
                return;
            }
        };
        if !observed {
            p.misses = p.misses.saturating_add(1);
            p.rebase = true;
        } else {
            match block {
                Some(b) if b.incarnation != p.incarnation => {
                    if p.alive {
                        ev.push(QdiskEvent::NodeDead {
                            node,
                            reason: format!(
                                "node {node} restarted its quorum disk process (new incarnation)"
                            ),
                        });
                    }
                    p.incarnation = b.incarnation;
                    p.claim_restarted = p.claim_ago.is_some();
                    p.seq = b.seq;
                    p.seen = if p.rebase { 0 } else { 1 };
                    p.misses = 0;
                    p.absent_for = 0;
                    p.alive = false;
                    p.rebase = false;
                    p.last = Some(b);
                }
                Some(b) if p.rebase => {
                    p.rebase = false;
                    if b.seq != p.seq {
                        // It moved some time during our gap: not proof of
                        // life now (misses stay), but no election may treat
                        // it as gone before watching it stand still.
                        p.seq = b.seq;
                        p.absent_for = 0;
                    } else {
                        p.misses = p.misses.saturating_add(1);
                        p.absent_for = p.absent_for.saturating_add(1);
                    }
                    p.last = Some(b);
                }
                Some(b) if b.seq != p.seq => {
                    p.seq = b.seq;
                    p.seen = p.seen.saturating_add(1);
                    p.misses = 0;
                    p.absent_for = 0;
                    p.last = Some(b);
                }
                Some(b) => {
                    p.misses = p.misses.saturating_add(1);
                    p.absent_for = p.absent_for.saturating_add(1);
                    p.last = Some(b);
                }
                None => {
                    p.misses = p.misses.saturating_add(1);
                    p.absent_for = p.absent_for.saturating_add(1);
                }
            }
        }
        if observed {
            let claims = p.absent_for == 0 && p.last.is_some_and(|b| b.state == DiskState::Master);
            if claims {
                p.claim_ago = Some(0);
                p.claim_restarted = false;
            } else if let Some(a) = p.claim_ago {
                p.claim_ago = Some(a.saturating_add(1)).filter(|a| *a < outsider_wait);
            }
        }
        if p.alive && p.misses >= tko {
            p.alive = false;
            p.seen = 0;
            ev.push(QdiskEvent::NodeDead {
                node,
                reason: format!(
                    "node {node} did not update its quorum disk block for {} cycles (tko {tko})",
                    p.misses
                ),
            });
        } else if !p.alive && p.misses == 0 && p.seen >= tko_up {
            p.alive = true;
            ev.push(QdiskEvent::NodeOnline(node));
        }
        for e in ev {
            self.push_event(e);
        }
    }

    fn update_self(&mut self) {
        let score_ok = self.score_ok();
        let io_ok = self.io_ok();
        let init_cycles = u64::from(self.cfg.tko_up()) + 1;
        match self.state {
            QdiskState::Init if self.init_progress >= init_cycles && score_ok && io_ok => {
                let r = format!(
                    "online on the quorum disk, score {}/{}",
                    self.score(),
                    self.cfg.score_max()
                );
                self.set_state(QdiskState::Run, r);
            }
            QdiskState::Run | QdiskState::Master if !score_ok => self.go_down(),
            QdiskState::Down if score_ok && io_ok => {
                let r = format!(
                    "score {} reaches min_score {} again",
                    self.score(),
                    self.cfg.min_score()
                );
                self.set_state(QdiskState::Run, r);
            }
            _ => {}
        }
    }

    fn online_peers(&self) -> impl Iterator<Item = (NodeId, &StatusBlock)> {
        self.peers.iter().filter_map(|(n, p)| match &p.last {
            Some(b) if p.alive && b.state.is_online() => Some((*n, b)),
            _ => None,
        })
    }

    /// The node we would bid for: the lowest online node in `Run`, us included.
    fn candidate(&self) -> NodeId {
        self.online_peers()
            .filter(|(_, b)| b.state == DiskState::Run)
            .map(|(n, _)| n)
            .chain(std::iter::once(self.me))
            .min()
            .unwrap_or(self.me)
    }

    fn elect(&mut self) {
        let other_master = self
            .online_peers()
            .filter(|(_, b)| b.state == DiskState::Master)
            .map(|(n, _)| n)
            .min();
        let before = self.master;
        if self.state == QdiskState::Master {
            if let Some(m) = other_master.filter(|m| *m < self.me) {
                self.set_state(
                    QdiskState::Run,
                    format!("node {m} is also master and has the lower id: stepping down"),
                );
            }
        }
        if self.state == QdiskState::Master {
            self.master = Some(self.me);
            self.bid_for = 0;
            self.bid_cycles = 0;
        } else if let Some(m) = other_master {
            self.master = Some(m);
            self.bid_for = 0;
            self.bid_cycles = 0;
        } else if let Some(m) = self.reserved(self.candidate()) {
            // A recent master claim that a partition may still count
            // (perhaps before we could count its writer alive): no election yet.
            self.master = None;
            self.bid_for = 0;
            self.bid_cycles = 0;
            tracing::debug!(node = %self.me, master = %m, "not bidding: a recent master claim may still be counted");
        } else {
            self.master = None;
            if self.state == QdiskState::Run {
                let candidate = self.candidate();
                self.bid_for = candidate.0;
                if candidate == self.me {
                    self.bid_cycles = self.bid_cycles.saturating_add(1);
                    let me = self.me.0;
                    let acked = self
                        .online_peers()
                        .filter(|(_, b)| b.state == DiskState::Run)
                        .all(|(_, b)| b.bid_for == me);
                    // One cycle more than master_wait: our own Run block must
                    // have been on the disk for a whole cycle, so a node that
                    // came up in the same cycle has read it and bids too
                    // (else two nodes that start together both win).
                    if self.bid_cycles > self.cfg.master_wait() && acked {
                        self.set_state(QdiskState::Master, "elected quorum disk master".into());
                        self.master = Some(self.me);
                        self.bid_for = 0;
                        self.bid_cycles = 0;
                    }
                } else {
                    self.bid_cycles = 0;
                }
            } else {
                self.bid_for = 0;
                self.bid_cycles = 0;
            }
        }
        if self.master != before {
            self.push_event(QdiskEvent::MasterChanged {
                master: self.master,
            });
        }
    }

    /// A master claim recent enough that nobody may bid for `candidate`:
    /// one whose block moved while claiming master within the last `tko`
    /// cycles we watched, or within [`QdiskConfig::outsider_wait`] cycles
    /// unless that master and the candidate are both in our cluster
    /// membership and the master has not restarted since. A partition that
    /// counted that claim keeps counting it until it orders a withdrawal or
    /// dissolves; only a successor inside that partition (ours, when the
    /// old master is in it) keeps the votes in one partition, and a
    /// restarted master's new incarnation cannot tell who counted it.
    fn reserved(&self, candidate: NodeId) -> Option<NodeId> {
        let tko = self.cfg.tko;
        let long = self.cfg.outsider_wait();
        let inside = |n: NodeId| self.in_membership(n) && self.in_membership(candidate);
        self.peers
            .iter()
            .filter(|(n, p)| {
                p.claim_ago.is_some_and(|a| {
                    let window = if !p.claim_restarted && inside(**n) {
                        tko
                    } else {
                        long
                    };
                    a < window
                })
            })
            .map(|(n, _)| *n)
            .chain(self.own_old_claim.filter(|a| *a < long).map(|_| self.me))
            .min()
    }

    fn in_membership(&self, n: NodeId) -> bool {
        self.membership.as_ref().is_some_and(|m| m.contains(&n))
    }

    fn master_mask(&self) -> u32 {
        if self.state != QdiskState::Master {
            return 0;
        }
        let mut mask = layout::mask_bit(self.me);
        for (n, _) in self.online_peers() {
            if self.in_membership(n) {
                mask |= layout::mask_bit(n);
            }
        }
        mask
    }

    fn update_availability(&mut self) {
        let (avail, reason) = self.compute_availability();
        if avail != self.available {
            self.available = avail;
            self.push_event(QdiskEvent::Availability {
                master: avail,
                reason,
            });
        }
    }

    fn compute_availability(&self) -> (Option<NodeId>, String) {
        match self.state {
            QdiskState::Init => return (None, "quorum disk starting".into()),
            QdiskState::Stopped => {
                return (
                    None,
                    "quorum disk process gave up (max_error_cycles)".into(),
                )
            }
            QdiskState::Down => {
                return (
                    None,
                    format!(
                        "heuristic score {} below min_score {}",
                        self.score(),
                        self.cfg.min_score()
                    ),
                )
            }
            QdiskState::Run | QdiskState::Master => {}
        }
        if !self.score_ok() {
            return (
                None,
                format!(
                    "heuristic score {} below min_score {}",
                    self.score(),
                    self.cfg.min_score()
                ),
            );
        }
        if !self.io_ok() {
            return (
                None,
                format!("{} failed quorum disk cycles in a row", self.error_streak),
            );
        }
        if self.state == QdiskState::Master {
            return (Some(self.me), "this node is the quorum disk master".into());
        }
        if self.cfg.master_wins {
            return (
                None,
                "master_wins: only the quorum disk master advertises the votes".into(),
            );
        }
        let Some(m) = self.master else {
            return (None, "no quorum disk master elected yet".into());
        };
        if self.membership.is_some() && !self.in_membership(m) {
            return (
                None,
                format!("quorum disk master node {m} is not in our cluster partition"),
            );
        }
        let Some(p) = self.peers.get(&m) else {
            return (None, format!("quorum disk master node {m} is unknown"));
        };
        // The master withdraws after io_grace failed cycles of its own; a
        // master block that has not moved for that long is not trusted, long
        // before anybody could elect a successor (tko + master_wait cycles).
        if p.misses >= self.cfg.io_grace() {
            return (
                None,
                format!(
                    "quorum disk master node {m} has not updated its block for {} cycles",
                    p.misses
                ),
            );
        }
        let granted = p.last.is_some_and(|b| {
            b.state == DiskState::Master && b.master_mask & layout::mask_bit(self.me) != 0
        });
        if granted {
            (
                Some(m),
                format!("quorum disk master node {m} counts this node in"),
            )
        } else {
            (
                None,
                format!("quorum disk master node {m} does not count this node in"),
            )
        }
    }
}
