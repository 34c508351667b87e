//! One node of the Totem single ring protocol, sans IO.
//!
//! # Calling contract
//! - Build with [`TotemNode::new`]; it starts gathering a membership at once.
//! - Feed every datagram to [`TotemNode::handle_packet`], every local request
//!   to [`TotemNode::handle_command`], and call [`TotemNode::handle_timeout`]
//!   when [`TotemNode::poll_deadline`] passes (early or extra calls are
//!   harmless). `now` must never go backwards.
//! - After each call drain [`TotemNode::poll_transmit`] (send each datagram
//!   on its ring to its node) and [`TotemNode::poll_event`].
//!   [`Event::PersistRingSeq`] must reach stable storage before the
//!   transmits drained after it are sent (the driver writes it synchronously).
//!
//! # Protocol
//! Operational: a token circulates the ring in node-id order. Its holder
//! first re-sends messages others asked for (`rtr`), then multicasts up to
//! `min(max_messages, window_size - fcc)` new messages (and, as corosync,
//! at most `window_size x` its share of the ring's backlog), each with
//! `seq = ++token.seq`, lowers
//! `token.aru` to its own all-received-up-to and asks for what it misses.
//! The representative (lowest id) closes each rotation: `prev_aru` becomes
//! the minimum `aru` over the whole last rotation, so every member holds every
//! message up to `prev_aru`. Messages are delivered in `seq` order without
//! gaps (agreed order); a message sent `safe` is delivered only once its seq
//! is at or below `prev_aru` (every member has it). Messages are freed only
//! when both delivered locally and at or below `prev_aru`.
//!
//! A forwarded token is re-sent every `token_retransmit` until the token or
//! a later message shows it moved on; receivers drop duplicates by
//! `token_seq`. No token for `token` -> gather.
//!
//! Membership (gather, commit, recovery), as corosync with one change:
//! gather multicasts join messages (proc set, fail set) until every node of
//! proc - fail has sent identical sets; the lowest of them then circulates a
//! commit token twice (first rotation collects each member's old ring, aru,
//! highest delivered and highest received; second rotation moves everyone to
//! recovery). In recovery the new ring's token runs and each member re-sends,
//! encapsulated, the old-ring messages above the lowest aru of the members
//! that shared its old ring; when a rotation passes with nothing left to
//! re-send, the representative sets `install_seq`, and once `prev_aru`
//! reaches it (everyone has everything) each node delivers the rest of the
//! old ring, then the transitional configuration, then the regular one.
//!
//! Old-ring messages up to the highest seq any transitional member already
//! delivered are delivered in the old regular configuration (that member
//! delivered them there, so all of them are held by someone and agreed);
//! the rest are delivered after the transitional configuration, skipping
//! holes. All members moving together compute the same split from the
//! commit token, which gives extended virtual synchrony.
//!
//! # Faster failure detection
//! Corosync waits `token` to detect the loss and then up to `consensus` for
//! the failed node to answer a join it will never answer. Here a gather
//! round only waits `fast_fail_wait` (default 2 x `join`) for answers from
//! nodes that have been silent (no valid packet of any kind) for a whole
//! `token` already: those are declared failed then, instead of at the
//! consensus timeout. Every live member of the ring answers a join within a
//! network round trip, because a join from a member throws an operational
//! node into gather at once, and live nodes are heard at least once per
//! token rotation (or per heartbeat with redundant rings). So the
//! detection time is about `token + fast_fail_wait + a few rotations`.
//! `consensus` remains the bound for nodes that are heard but never agree.
//! A node wrongly declared failed (a long pause) is merged back by merge
//! detection; no safety property depends on timing.
//!
//! # Clocks
//! Only differences of `now` are used, for timeouts. The protocol's safety
//! does not depend on clock rates; its liveness assumes rates within 1 %
//! (timeouts are several times the round trip).

use crate::config::{ConfigError, TotemConfig};
use crate::cpg::{self, Cpg, CpgEvent};
use crate::crypto::{Codec, FrameError};
use crate::limits::{MAX_OUTBOX, MAX_OUTSTANDING, MAX_PAYLOAD, MAX_PENDING, MAX_RTR};
use crate::wire::{Commit, CommitEntry, Join, Mcast, Message, Payload, RingId, Token};
use base::{Duration, Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Membership state of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum State {
    /// Collecting agreement on a new membership.
    Gather,
    /// Commit token circulating.
    Commit,
    /// New ring running, old-ring messages being exchanged.
    Recovery,
    /// Normal operation.
    Operational,
    /// Left the cluster on request; inert.
    Left,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Ring (network) to send on: 0 or 1.
    pub ring: u8,
    /// Destination node.
    pub to: NodeId,
    /// The sealed frame.
    pub bytes: Arc<[u8]>,
}

/// A configuration change, as extended virtual synchrony defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    /// The new ring.
    pub ring_id: RingId,
    /// Members of the configuration (sorted).
    pub members: Vec<NodeId>,
    /// Members not in the previous configuration.
    pub joined: Vec<NodeId>,
    /// Members of the previous regular configuration that are gone.
    pub left: Vec<NodeId>,
    /// Transitional (survivors of the old ring only) or regular.
    pub transitional: bool,
}

/// One ordered message delivered to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Ring the message was ordered on.
    pub ring_id: RingId,
    /// Its sequence number there; (ring_id, seq) is its global position.
    pub seq: u64,
    /// Node that multicast it.
    pub sender: NodeId,
    /// Delivered in safe order.
    pub safe: bool,
    /// The bytes.
    pub payload: Arc<[u8]>,
}

/// A redundant-ring link changed status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Peer at the other end.
    pub peer: NodeId,
    /// Ring index.
    pub ring: u8,
    /// Up (heard recently) or faulty.
    pub up: bool,
}

/// What a node tells the layers above and the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A transitional or regular configuration.
    ConfigurationChange(ConfigChange),
    /// An ordered application message.
    Deliver(Delivery),
    /// A process-group event.
    Cpg(CpgEvent),
    /// A redundant-ring link went faulty or recovered.
    Link(LinkStatus),
    /// Write this ring sequence number to stable storage before sending.
    PersistRingSeq(u64),
}

/// A local request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Multicast to the ring in agreed (or safe) order.
    Multicast {
        /// The bytes (at most [`MAX_PAYLOAD`]).
        payload: Vec<u8>,
        /// Deliver only once every member has it.
        safe: bool,
    },
    /// Join a process group.
    CpgJoin {
        /// Group name.
        group: String,
    },
    /// Leave a process group.
    CpgLeave {
        /// Group name.
        group: String,
    },
    /// Send to a process group this node is in.
    CpgSend {
        /// Group name.
        group: String,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// Leave the cluster cleanly (peers reform at once without us).
    Leave,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The send queue is full; retry after deliveries drain it.
    #[error("send queue full ({0} messages); wait for deliveries and retry")]
    QueueFull(usize),
    /// Payload above the limit.
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit; split it")]
    TooLarge(usize),
    /// Group name empty or too long.
    #[error("group name must be 1..=128 bytes")]
    BadGroupName,
    /// Send or leave on a group not joined.
    #[error("not a member of group {0:?}; join it first")]
    NotJoined(String),
    /// Join of a group already joined.
    #[error("already a member of group {0:?}")]
    AlreadyJoined(String),
    /// The node has left the cluster.
    #[error("node has left the cluster; restart it to rejoin")]
    Left,
}

/// Counters, monotonically increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Datagrams handed to the driver.
    pub packets_sent: u64,
    /// Datagrams received (valid or not).
    pub packets_received: u64,
    /// New ordered messages multicast by this node.
    pub mcasts_sent: u64,
    /// Messages re-sent on request.
    pub retransmits: u64,
    /// Tokens re-sent after the retransmit timeout.
    pub token_retransmits: u64,
    /// Token rotations: visits of the token to this node (one per rotation,
    /// on every member).
    pub token_rotations: u64,
    /// Messages delivered to the application (including groups).
    pub delivered: u64,
    /// Frames failing authentication.
    pub auth_failures: u64,
    /// Frames that did not decode.
    pub malformed: u64,
    /// Frames replaying an old nonce.
    pub replays: u64,
    /// Frames from nodes not configured.
    pub unknown_sender: u64,
    /// Regular configurations installed.
    pub membership_changes: u64,
    /// Token losses detected.
    pub token_losses: u64,
    /// Duplicate tokens or messages dropped.
    pub duplicates: u64,
    /// Events or transmits dropped because the driver did not drain them.
    pub outbox_overflow: u64,
}

/// How one network (ring index) is doing, as corosync's ring status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RingHealth {
    /// Every peer heard on this network ("active with no faults").
    Active,
    /// Some peers not heard on it: the cluster uses the other ring for them.
    Degraded,
    /// No peer heard on it: marked FAULTY, used again once it heals.
    Faulty,
}

/// One network's status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RingState {
    /// Ring index (0, or 1 for the redundant ring).
    pub ring: u8,
    /// Health.
    pub state: RingHealth,
    /// Peers whose link on this ring is faulty.
    pub faulty_peers: Vec<NodeId>,
}

/// A snapshot for `quorate totem status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    /// This node.
    pub node_id: NodeId,
    /// Membership state.
    pub state: State,
    /// Current ring id (`seq`, `rep`).
    pub ring_id: RingId,
    /// Current ring (sequence, representative).
    pub ring_seq: u64,
    /// Current ring's representative.
    pub ring_rep: NodeId,
    /// Members of the current ring.
    pub members: Vec<NodeId>,
    /// Per ring index: peers whose link on that ring is faulty.
    pub faulty_links: Vec<Vec<NodeId>>,
    /// Per ring index: its health (one entry per configured ring).
    pub ring_states: Vec<RingState>,
    /// Counters.
    pub stats: Stats,
}

#[derive(Clone, Debug)]
struct RingLog {
    msgs: BTreeMap<u64, Stored>,
    my_aru: u64,
    high_seq: u64,
    delivered: u64,
    safe_upto: u64,
}

impl RingLog {
    fn new() -> RingLog {
        RingLog {
            msgs: BTreeMap::new(),
            my_aru: 0,
            high_seq: 0,
            delivered: 0,
            safe_upto: 0,
        }
    }
    fn insert(&mut self, seq: u64, s: Stored) -> bool {
        if seq <= self.my_aru || self.msgs.contains_key(&seq) {
            return false;
        }
        self.msgs.insert(seq, s);
        self.high_seq = self.high_seq.max(seq);
        while let Some(next) = self.my_aru.checked_add(1) {
            if !self.msgs.contains_key(&next) {
                break;
            }
            self.my_aru = next;
        }
        true
    }
}

#[derive(Clone, Debug)]
struct Stored {
    payload: Payload,
    /// Old-ring position if this is a re-sent (recovery) message.
    recovered: Option<(RingId, u64)>,
}

#[derive(Clone, Debug)]
struct OldRing {
    id: RingId,
    members: Vec<NodeId>,
    log: RingLog,
}

#[derive(Clone, Debug)]
struct Recovery {
    trans: Vec<NodeId>,
    split: u64,
    to_send: VecDeque<u64>,
    clean: u32,
    rep_visits: u32,
}

#[derive(Clone, Debug)]
struct Gather {
    start: Instant,
    proc_set: BTreeSet<NodeId>,
    fail_set: BTreeSet<NodeId>,
    agreed: BTreeSet<NodeId>,
    join_at: Instant,
    consensus_at: Instant,
    max_seq: u64,
}

#[derive(Clone, Debug)]
struct Link {
    last_heard: Instant,
    up: bool,
}

/// One node of the ring. See the module docs for the contract.
pub struct TotemNode {
    cfg: TotemConfig,
    me: NodeId,
    codec: Codec,
    state: State,
    now: Instant,
    ring: RingId,
    members: Vec<NodeId>,
    max_ring_seq: u64,
    cur: RingLog,
    old: Option<OldRing>,
    pending: VecDeque<Payload>,
    // token handling
    last_token_seq: u64,
    saved: Option<(NodeId, Message)>,
    saved_seq: u64,
    retrans_at: Option<Instant>,
    token_loss_at: Option<Instant>,
    held: Option<Token>,
    hold_until: Option<Instant>,
    my_fcc: u32,
    my_backlog: u32,
    last_visit_seq: u64,
    fail_recv_count: u32,
    last_prev_aru: u64,
    merge_at: Option<Instant>,
    // membership
    gather: Option<Gather>,
    join_seq: u64,
    join_keys: BTreeMap<NodeId, (u64, u64)>,
    last_heard: BTreeMap<NodeId, Instant>,
    commit_seq: u64,
    rec: Option<Recovery>,
    // redundant rings
    links: BTreeMap<(NodeId, u8), Link>,
    hb_at: Option<Instant>,
    rr_token: u8,
    rr_other: u8,
    cpg: Cpg,
    last_cpg: Option<(RingId, u64)>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    #[cfg(feature = "broken-deliver-early")]
    broken_deliver_early: bool,
    #[cfg(feature = "broken-deliver-early")]
    early: BTreeSet<u64>,
}

impl std::fmt::Debug for TotemNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotemNode")
            .field("me", &self.me)
            .field("state", &self.state)
            .field("ring", &self.ring)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

fn diff(a: &[NodeId], b: &[NodeId]) -> Vec<NodeId> {
    a.iter().filter(|n| !b.contains(n)).copied().collect()
}

impl TotemNode {
    /// A node that starts gathering a membership at `now`.
    pub fn new(cfg: TotemConfig, now: Instant) -> Result<TotemNode, ConfigError> {
        cfg.validate()?;
        let me = cfg.node_id;
        let mut links = BTreeMap::new();
        if cfg.rings > 1 {
            for n in cfg.nodes.iter().filter(|n| **n != me) {
                for r in 0..cfg.rings {
                    links.insert(
                        (*n, r),
                        Link {
                            last_heard: now,
                            up: true,
                        },
                    );
                }
            }
        }
        let mut node = TotemNode {
            codec: Codec::new(me, cfg.epoch, cfg.key.as_ref()),
            me,
            state: State::Gather,
            now,
            ring: RingId::ZERO,
            members: Vec::new(),
            max_ring_seq: cfg.initial_ring_seq,
            cur: RingLog::new(),
            old: None,
            pending: VecDeque::new(),
            last_token_seq: 0,
            saved: None,
            saved_seq: 0,
            retrans_at: None,
            token_loss_at: None,
            held: None,
            hold_until: None,
            my_fcc: 0,
            my_backlog: 0,
            last_visit_seq: 0,
            fail_recv_count: 0,
            last_prev_aru: 0,
            merge_at: None,
            gather: None,
            join_seq: 0,
            join_keys: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            commit_seq: 0,
            rec: None,
            hb_at: (cfg.rings > 1).then_some(now),
            links,
            rr_token: 0,
            rr_other: 0,
            cpg: Cpg::new(me),
            last_cpg: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            #[cfg(feature = "broken-deliver-early")]
            broken_deliver_early: false,
            #[cfg(feature = "broken-deliver-early")]
            early: BTreeSet::new(),
            cfg,
        };
        node.enter_gather(now, "start");
        if node.cfg.rings > 1 {
            node.heartbeats(now);
        }
        Ok(node)
    }

    /// Test-only: deliver messages as they arrive, before the order is
    /// agreed. Exists to prove the simulator's checker catches it.
    #[cfg(feature = "broken-deliver-early")]
    pub fn set_broken_deliver_early(&mut self, on: bool) {
        self.broken_deliver_early = on;
    }

    // ---------------------------------------------------------------- getters

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }
    /// Membership state.
    pub fn state(&self) -> State {
        self.state
    }
    /// Current (or last) ring.
    pub fn ring_id(&self) -> RingId {
        self.ring
    }
    /// Members of the current ring.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Current ring: highest sequence number delivered (or skipped) in order,
    /// and highest received. Equal everywhere once the ring is quiet.
    pub fn ring_progress(&self) -> (u64, u64) {
        (self.cur.delivered, self.cur.high_seq)
    }
    /// Whether this node holds (or held and freed) message `seq` of `ring`
    /// (the current ring, or the old ring it is recovering from).
    pub fn has_received(&self, ring: RingId, seq: u64) -> bool {
        let held = |l: &RingLog| seq <= l.my_aru || l.msgs.contains_key(&seq);
        match &self.old {
            Some(o) if o.id == ring => held(&o.log),
            _ => {
                ring == self.ring
                    && matches!(self.state, State::Operational | State::Recovery)
                    && held(&self.cur)
            }
        }
    }
    /// Messages waiting for the token.
    pub fn send_queue_len(&self) -> usize {
        self.pending.len()
    }
    /// Position (ring, seq) of the last process-group message delivered:
    /// nodes whose [`Cpg::synced`] views are taken at the same position hold
    /// the same views.
    pub fn last_cpg_position(&self) -> Option<(RingId, u64)> {
        self.last_cpg
    }
    /// Process-group state (views, local groups).
    pub fn cpg(&self) -> &Cpg {
        &self.cpg
    }
    /// Whether the link to `peer` on `ring` is up (always true with one ring).
    pub fn link_up(&self, peer: NodeId, ring: u8) -> bool {
        self.links.get(&(peer, ring)).is_none_or(|l| l.up)
    }
    /// Snapshot for status output.
    pub fn status(&self) -> NodeStatus {
        let mut faulty = vec![Vec::new(); usize::from(self.cfg.rings)];
        for ((p, r), l) in &self.links {
            if !l.up {
                faulty[usize::from(*r)].push(*p);
            }
        }
        let peers = self.cfg.nodes.len().saturating_sub(1);
        let ring_states = faulty
            .iter()
            .enumerate()
            .map(|(r, f)| RingState {
                ring: r as u8,
                state: if f.is_empty() {
                    RingHealth::Active
                } else if f.len() < peers {
                    RingHealth::Degraded
                } else {
                    RingHealth::Faulty
                },
                faulty_peers: f.clone(),
            })
            .collect();
        NodeStatus {
            node_id: self.me,
            state: self.state,
            ring_id: self.ring,
            ring_seq: self.ring.seq,
            ring_rep: self.ring.rep,
            members: self.members.clone(),
            faulty_links: faulty,
            ring_states,
            stats: self.stats.clone(),
        }
    }

    // ---------------------------------------------------------------- outputs

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }
    /// Next event for the layers above.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
    /// When [`TotemNode::handle_timeout`] must next be called.
    pub fn poll_deadline(&self) -> Option<Instant> {
        if self.state == State::Left {
            return None;
        }
        let mut d: Option<Instant> = None;
        let mut put = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        put(self.retrans_at);
        put(self.token_loss_at);
        put(self.hold_until);
        put(self.merge_at);
        put(self.hb_at);
        if let Some(g) = &self.gather {
            put(Some(g.join_at));
            put(Some(g.consensus_at));
            if let Some(f) = self.next_fast_fail(g) {
                put(Some(f));
            }
            if Self::active_set(g).len() == 1 {
                put(Some(g.start + self.cfg.fast_fail_wait));
            }
        }
        d
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_OUTBOX {
            self.events.pop_front();
            self.stats.outbox_overflow += 1;
        }
        self.events.push_back(e);
    }

    fn pick_ring(&mut self, to: NodeId, token: bool) -> u8 {
        if self.cfg.rings == 1 {
            return 0;
        }
        let rr = if token {
            &mut self.rr_token
        } else {
            &mut self.rr_other
        };
        for _ in 0..self.cfg.rings {
            *rr = (*rr + 1) % self.cfg.rings;
            let r = *rr;
            if self.links.get(&(to, r)).is_none_or(|l| l.up) {
                return r;
            }
        }
        // every link to `to` is faulty: keep alternating, one may work
        *rr
    }

    fn send_to(&mut self, to: &[NodeId], msg: &Message) {
        if to.is_empty() {
            return;
        }
        let bytes: Arc<[u8]> = Arc::from(self.codec.seal(msg));
        let token = matches!(msg, Message::Token(_) | Message::Commit(_));
        for &n in to {
            if n == self.me {
                continue;
            }
            let ring = self.pick_ring(n, token);
            self.push_transmit(Transmit {
                ring,
                to: n,
                bytes: bytes.clone(),
            });
        }
    }

    fn push_transmit(&mut self, t: Transmit) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.outbox.pop_front();
            self.stats.outbox_overflow += 1;
        }
        self.stats.packets_sent += 1;
        self.outbox.push_back(t);
    }

    fn others(&self) -> Vec<NodeId> {
        self.cfg
            .nodes
            .iter()
            .filter(|n| **n != self.me)
            .copied()
            .collect()
    }

    fn ring_others(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|n| **n != self.me)
            .copied()
            .collect()
    }

    fn next_member(&self) -> NodeId {
        let i = self.members.iter().position(|n| *n == self.me).unwrap_or(0);
        self.members[(i + 1) % self.members.len()]
    }

    fn is_rep(&self) -> bool {
        self.members.first() == Some(&self.me)
    }

    // ---------------------------------------------------------------- inputs

    fn tick(&mut self, now: Instant) {
        debug_assert!(now >= self.now, "time went backwards");
        if now > self.now {
            self.now = now;
        }
    }

    /// A local request. Messages are queued until this node holds the token.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        self.tick(now);
        if self.state == State::Left {
            return Err(CommandError::Left);
        }
        let payload = match cmd {
            Command::Multicast { payload, safe } => {
                if payload.len() > MAX_PAYLOAD {
                    return Err(CommandError::TooLarge(payload.len()));
                }
                Payload {
                    origin: self.me,
                    safe,
                    channel: 0,
                    data: Arc::from(payload),
                }
            }
            Command::CpgJoin { group } => {
                if !cpg::check_name(&group) {
                    return Err(CommandError::BadGroupName);
                }
                if self.cpg.intends(&group) {
                    return Err(CommandError::AlreadyJoined(group));
                }
                self.check_queue()?;
                if !self.cpg.set_intent(&group, true) {
                    return Err(CommandError::QueueFull(self.pending.len()));
                }
                let data = cpg::encode_member_op(true, &group);
                Payload {
                    origin: self.me,
                    safe: false,
                    channel: 1,
                    data: Arc::from(data),
                }
            }
            Command::CpgLeave { group } => {
                if !self.cpg.intends(&group) {
                    return Err(CommandError::NotJoined(group));
                }
                self.check_queue()?;
                self.cpg.set_intent(&group, false);
                let data = cpg::encode_member_op(false, &group);
                Payload {
                    origin: self.me,
                    safe: false,
                    channel: 1,
                    data: Arc::from(data),
                }
            }
            Command::CpgSend { group, payload } => {
                if !self.cpg.intends(&group) {
                    return Err(CommandError::NotJoined(group));
                }
                if payload.len() + group.len() + 2 > MAX_PAYLOAD {
                    return Err(CommandError::TooLarge(payload.len()));
                }
                let data = cpg::encode_send(&group, &payload);
                Payload {
                    origin: self.me,
                    safe: false,
                    channel: 1,
                    data: Arc::from(data),
                }
            }
            Command::Leave => {
                self.join_seq += 1;
                let j = Join {
                    proc_set: vec![self.me],
                    fail_set: vec![],
                    ring_seq: self.max_ring_seq,
                    epoch: self.cfg.epoch,
                    join_seq: self.join_seq,
                    leaving: true,
                };
                let to = self.others();
                self.send_to(&to, &Message::Join(j));
                self.state = State::Left;
                self.gather = None;
                self.rec = None;
                self.held = None;
                self.hold_until = None;
                self.retrans_at = None;
                self.token_loss_at = None;
                self.merge_at = None;
                self.hb_at = None;
                return Ok(());
            }
        };
        self.check_queue()?;
        self.pending.push_back(payload);
        self.release_held(now);
        Ok(())
    }

    fn check_queue(&self) -> Result<(), CommandError> {
        if self.pending.len() >= MAX_PENDING {
            Err(CommandError::QueueFull(self.pending.len()))
        } else {
            Ok(())
        }
    }

    /// A datagram received on `ring`; `from` is the node the driver mapped
    /// the source address to, if it could (a mismatch with the frame's
    /// sender is dropped as spoofed).
    pub fn handle_packet(&mut self, now: Instant, ring: u8, from: Option<NodeId>, bytes: &[u8]) {
        self.tick(now);
        self.stats.packets_received += 1;
        if self.state == State::Left {
            return;
        }
        let nodes = &self.cfg.nodes;
        let (sender, msg) = match self.codec.open(bytes, |n| nodes.contains(&n)) {
            Ok(x) => x,
            Err(e) => {
                match e {
                    FrameError::Malformed(_) => self.stats.malformed += 1,
                    FrameError::Auth => self.stats.auth_failures += 1,
                    FrameError::Replay => self.stats.replays += 1,
                    FrameError::UnknownSender(_) => self.stats.unknown_sender += 1,
                }
                return;
            }
        };
        if from.is_some_and(|f| f != sender) || ring >= self.cfg.rings {
            self.stats.unknown_sender += 1;
            return;
        }
        self.last_heard.insert(sender, now);
        if let Some(l) = self.links.get_mut(&(sender, ring)) {
            l.last_heard = now;
            if !l.up {
                l.up = true;
                self.push_event(Event::Link(LinkStatus {
                    peer: sender,
                    ring,
                    up: true,
                }));
            }
        }
        match msg {
            Message::Token(t) => self.on_token(now, sender, t),
            Message::Mcast(m) => self.on_mcast(now, sender, m),
            Message::MergeDetect { ring } => self.on_merge_detect(now, sender, ring),
            Message::Join(j) => self.on_join(now, sender, j),
            Message::Commit(c) => self.on_commit(now, sender, c),
            Message::Heartbeat => {}
        }
    }

    /// Fires every expired timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.state == State::Left {
            return;
        }
        if self.hb_at.is_some_and(|t| t <= now) {
            self.heartbeats(now);
        }
        if self.hold_until.is_some_and(|t| t <= now) {
            self.hold_until = None;
            self.release_held(now);
        }
        if self.token_loss_at.is_some_and(|t| t <= now) {
            self.token_loss_at = None;
            self.stats.token_losses += 1;
            tracing::info!(node = %self.me, state = ?self.state, ring = %self.ring, "token lost");
            self.enter_gather(now, "token loss");
            return;
        }
        if self.retrans_at.is_some_and(|t| t <= now) {
            if let Some((to, msg)) = self.saved.clone() {
                self.stats.token_retransmits += 1;
                self.send_to(&[to], &msg);
                self.retrans_at = Some(now + self.cfg.token_retransmit());
            } else {
                self.retrans_at = None;
            }
        }
        if self.merge_at.is_some_and(|t| t <= now) {
            self.merge_at = Some(now + self.cfg.merge);
            if self.state == State::Operational && self.is_rep() {
                let outside = diff(&self.others(), &self.members);
                self.send_to(&outside, &Message::MergeDetect { ring: self.ring });
            }
        }
        if self.state == State::Gather {
            self.gather_timers(now);
        }
    }

    fn heartbeats(&mut self, now: Instant) {
        self.hb_at = Some(now + self.cfg.heartbeat);
        let peers = self.others();
        let bytes: Arc<[u8]> = Arc::from(self.codec.seal(&Message::Heartbeat));
        let timeout = self.cfg.link_timeout;
        let mut changes = Vec::new();
        for p in peers {
            for r in 0..self.cfg.rings {
                self.push_transmit(Transmit {
                    ring: r,
                    to: p,
                    bytes: bytes.clone(),
                });
                if let Some(l) = self.links.get_mut(&(p, r)) {
                    if l.up && now.saturating_since(l.last_heard) >= timeout {
                        l.up = false;
                        changes.push(LinkStatus {
                            peer: p,
                            ring: r,
                            up: false,
                        });
                    }
                }
            }
        }
        for c in changes {
            tracing::warn!(node = %self.me, peer = %c.peer, ring = c.ring, "link faulty");
            self.push_event(Event::Link(c));
        }
    }

    // ---------------------------------------------------------------- token

    fn on_token(&mut self, now: Instant, sender: NodeId, tok: Token) {
        if tok.ring != self.ring {
            self.foreign(now, sender, tok.ring);
            return;
        }
        if !matches!(self.state, State::Operational | State::Recovery) {
            return;
        }
        if tok.token_seq <= self.last_token_seq {
            self.stats.duplicates += 1;
            return;
        }
        self.process_token(now, tok);
    }

    fn process_token(&mut self, now: Instant, mut tok: Token) {
        self.last_token_seq = tok.token_seq;
        self.retrans_at = None;
        self.saved = None;
        self.token_loss_at = Some(now + self.cfg.token);
        let rep = self.is_rep();
        let incoming_aru_id = tok.aru_id;
        self.stats.token_rotations += 1;
        if rep {
            tok.prev_aru = tok.aru;
            tok.aru = self.cur.my_aru;
            tok.aru_id = self.me;
        } else if self.cur.my_aru < tok.aru {
            tok.aru = self.cur.my_aru;
            tok.aru_id = self.me;
        }
        // prev_aru is a minimum over every member's own aru: never above ours
        let prev = tok.prev_aru.min(self.cur.my_aru);
        self.cur.safe_upto = self.cur.safe_upto.max(prev);
        let free_upto = prev.min(self.cur.delivered);
        while let Some((&s, _)) = self.cur.msgs.first_key_value() {
            if s > free_upto {
                break;
            }
            self.cur.msgs.pop_first();
        }
        // a node that keeps the ring's aru down is failing to receive
        if incoming_aru_id == self.me
            && tok.prev_aru == self.last_prev_aru
            && tok.seq > tok.prev_aru
        {
            self.fail_recv_count += 1;
            if self.fail_recv_count > self.cfg.fail_recv_const {
                tracing::warn!(node = %self.me, "failed to receive; re-forming the ring");
                self.fail_recv_count = 0;
                self.enter_gather(now, "fail to receive");
                return;
            }
        } else {
            self.fail_recv_count = 0;
        }
        self.last_prev_aru = tok.prev_aru;

        let mut budget = self
            .cfg
            .max_messages
            .min(self.cfg.window_size.saturating_sub(tok.fcc));
        let mut sent: u32 = 0;
        // serve retransmission requests
        let mut rtr = Vec::with_capacity(tok.rtr.len());
        for s in std::mem::take(&mut tok.rtr) {
            if s <= tok.prev_aru {
                continue;
            }
            if budget > 0 {
                if let Some(m) = self.cur.msgs.get(&s) {
                    let msg = Message::Mcast(Mcast {
                        ring: self.ring,
                        seq: s,
                        recovered: m.recovered,
                        payload: m.payload.clone(),
                    });
                    let to = self.ring_others();
                    self.send_to(&to, &msg);
                    self.stats.retransmits += 1;
                    budget -= 1;
                    sent += 1;
                    continue;
                }
            }
            rtr.push(s);
        }
        // (a hostile token near u64::MAX gets no room rather than an overflow)
        let room = |tok: &Token| {
            tok.seq < tok.prev_aru.saturating_add(MAX_OUTSTANDING) && tok.seq < u64::MAX
        };
        if self.state == State::Recovery {
            if let Some(rec) = self.rec.as_mut() {
                let old = self.old.as_ref();
                let mut out = Vec::new();
                while budget > 0 && room(&tok) {
                    let Some(os) = rec.to_send.pop_front() else {
                        break;
                    };
                    let Some(m) = old.and_then(|o| o.log.msgs.get(&os).map(|m| (o.id, m))) else {
                        continue;
                    };
                    tok.seq += 1;
                    out.push((tok.seq, m.0, os, m.1.payload.clone()));
                    budget -= 1;
                    sent += 1;
                }
                let more = !rec.to_send.is_empty();
                if rep {
                    rec.rep_visits += 1;
                    // a rotation is clean only if it was a whole rotation
                    if rec.rep_visits < 2 || tok.retrans_flg || more || !out.is_empty() {
                        rec.clean = 0;
                    } else {
                        rec.clean += 1;
                    }
                    tok.retrans_flg = more;
                    if rec.clean >= 1 && !tok.installed {
                        tok.installed = true;
                        tok.install_seq = tok.seq;
                    }
                } else if more {
                    tok.retrans_flg = true;
                }
                for (seq, oring, oseq, payload) in out {
                    let recovered = Some((oring, oseq));
                    self.cur.insert(
                        seq,
                        Stored {
                            payload: payload.clone(),
                            recovered,
                        },
                    );
                    let msg = Message::Mcast(Mcast {
                        ring: self.ring,
                        seq,
                        recovered,
                        payload,
                    });
                    let to = self.ring_others();
                    self.send_to(&to, &msg);
                }
            }
        } else {
            // new messages, with corosync's backlog rule: a node may use the
            // share of the whole window that its backlog is of the ring's
            let mine = self.pending.len() as u64;
            let total = u64::from(tok.backlog.saturating_sub(self.my_backlog)) + mine;
            if mine > 0 {
                let share = u64::from(self.cfg.window_size) * mine / total;
                if share > 0 {
                    budget = budget.min(u32::try_from(share).unwrap_or(u32::MAX));
                }
            }
            while budget > 0 && room(&tok) {
                let Some(p) = self.pending.pop_front() else {
                    break;
                };
                tok.seq += 1;
                let seq = tok.seq;
                self.cur.insert(
                    seq,
                    Stored {
                        payload: p.clone(),
                        recovered: None,
                    },
                );
                let msg = Message::Mcast(Mcast {
                    ring: self.ring,
                    seq,
                    recovered: None,
                    payload: p,
                });
                let to = self.ring_others();
                self.send_to(&to, &msg);
                self.stats.mcasts_sent += 1;
                budget -= 1;
                sent += 1;
            }
        }
        if self.cur.my_aru < tok.aru {
            tok.aru = self.cur.my_aru;
            tok.aru_id = self.me;
        }
        tok.fcc = tok.fcc.saturating_sub(self.my_fcc).saturating_add(sent);
        self.my_fcc = sent;
        let backlog = self.pending.len() as u32;
        tok.backlog = tok
            .backlog
            .saturating_sub(self.my_backlog)
            .saturating_add(backlog);
        self.my_backlog = backlog;
        // ask for what we miss (messages that had a whole rotation to arrive)
        let upto = self.last_visit_seq.min(tok.seq);
        let mut s = self.cur.my_aru + 1;
        while s <= upto && rtr.len() < MAX_RTR {
            if !self.cur.msgs.contains_key(&s) && !rtr.contains(&s) {
                rtr.push(s);
            }
            s += 1;
        }
        tok.rtr = rtr;
        self.last_visit_seq = tok.seq;

        let mut go_operational = false;
        if self.state == State::Recovery && tok.installed && tok.prev_aru >= tok.install_seq {
            go_operational = true;
        }
        if go_operational {
            self.enter_operational(now, tok.install_seq);
        }
        let idle = tok.fcc == 0
            && tok.backlog == 0
            && tok.rtr.is_empty()
            && tok.prev_aru == tok.seq
            && self.pending.is_empty();
        if self.members.len() == 1 {
            // alone: the token only comes back to us
            self.held = Some(tok);
            let wait = if self.cfg.hold.as_nanos() > 0 {
                self.cfg.hold
            } else {
                Duration::from_nanos(self.cfg.token_retransmit().as_nanos() / 2)
            };
            self.hold_until = Some(
                now + if idle || self.state != State::Operational {
                    wait
                } else {
                    Duration::ZERO
                },
            );
            self.token_loss_at = None;
        } else if rep && self.state == State::Operational && idle && self.cfg.hold.as_nanos() > 0 {
            self.held = Some(tok);
            self.hold_until = Some(now + self.cfg.hold);
        } else {
            self.forward(now, tok);
        }
        self.deliver();
    }

    fn forward(&mut self, now: Instant, mut tok: Token) {
        tok.token_seq = tok.token_seq.saturating_add(1);
        self.last_token_seq = tok.token_seq;
        let next = self.next_member();
        self.saved_seq = tok.seq;
        let msg = Message::Token(tok);
        self.send_to(&[next], &msg);
        self.saved = Some((next, msg));
        self.retrans_at = Some(now + self.cfg.token_retransmit());
    }

    fn release_held(&mut self, now: Instant) {
        let Some(tok) = self.held.take() else { return };
        self.hold_until = None;
        if self.members.len() == 1 {
            let mut tok = tok;
            tok.token_seq = tok.token_seq.saturating_add(1);
            self.process_token(now, tok);
        } else {
            self.forward(now, tok);
        }
    }

    // ---------------------------------------------------------------- messages

    fn on_mcast(&mut self, now: Instant, sender: NodeId, m: Mcast) {
        if m.ring != self.ring {
            self.foreign(now, sender, m.ring);
            return;
        }
        if !matches!(self.state, State::Operational | State::Recovery) {
            return;
        }
        if self.saved.is_some() && m.seq > self.saved_seq {
            // someone after us sent: the token moved on
            self.retrans_at = None;
            self.saved = None;
        }
        if m.seq > self.cur.my_aru + 2 * MAX_OUTSTANDING {
            self.stats.malformed += 1;
            return;
        }
        let stored = Stored {
            payload: m.payload,
            recovered: m.recovered,
        };
        if !self.cur.insert(m.seq, stored.clone()) {
            self.stats.duplicates += 1;
            return;
        }
        if let (Some((oring, oseq)), Some(old)) = (m.recovered, self.old.as_mut()) {
            if oring == old.id && oseq > old.log.delivered {
                let s = Stored {
                    payload: stored.payload.clone(),
                    recovered: None,
                };
                old.log.insert(oseq, s);
            }
        }
        #[cfg(feature = "broken-deliver-early")]
        if self.broken_deliver_early && self.state == State::Operational && m.recovered.is_none() {
            if let Some(st) = self.cur.msgs.get(&m.seq).cloned() {
                if m.seq > self.cur.delivered + 1 && self.early.insert(m.seq) {
                    self.deliver_one(self.ring, m.seq, &st);
                }
            }
        }
        self.deliver();
    }

    fn deliver(&mut self) {
        if self.state != State::Operational {
            return;
        }
        while let Some(s) = self.cur.delivered.checked_add(1) {
            let Some(m) = self.cur.msgs.get(&s) else {
                break;
            };
            if m.recovered.is_some() {
                self.cur.delivered = s;
                continue;
            }
            if m.payload.safe && s > self.cur.safe_upto {
                break;
            }
            let m = m.clone();
            self.cur.delivered = s;
            #[cfg(feature = "broken-deliver-early")]
            if self.broken_deliver_early && self.early.contains(&s) {
                continue;
            }
            self.deliver_one(self.ring, s, &m);
        }
    }

    fn deliver_one(&mut self, ring: RingId, seq: u64, m: &Stored) {
        self.stats.delivered += 1;
        if m.payload.channel == 1 {
            self.last_cpg = Some((ring, seq));
            let mut out = Vec::new();
            self.cpg
                .on_deliver(m.payload.origin, &m.payload.data, &mut out);
            for e in out {
                self.push_event(Event::Cpg(e));
            }
        } else {
            self.push_event(Event::Deliver(Delivery {
                ring_id: ring,
                seq,
                sender: m.payload.origin,
                safe: m.payload.safe,
                payload: m.payload.data.clone(),
            }));
        }
    }

    fn foreign(&mut self, now: Instant, sender: NodeId, ring: RingId) {
        if self.state == State::Operational
            && (!self.members.contains(&sender) || ring.seq > self.ring.seq)
        {
            tracing::info!(node = %self.me, %sender, foreign = %ring, "foreign ring seen; merging");
            self.enter_gather(now, "foreign ring");
        }
    }

    fn on_merge_detect(&mut self, now: Instant, sender: NodeId, ring: RingId) {
        if self.state == State::Gather && ring.seq > self.max_ring_seq {
            // learn how far rings have gone, so our joins are not taken as stale
            self.max_ring_seq = ring.seq;
        }
        if self.state == State::Operational && !self.members.contains(&sender) {
            self.foreign(now, sender, ring);
        }
    }

    // ---------------------------------------------------------------- membership

    fn enter_gather(&mut self, now: Instant, why: &str) {
        tracing::debug!(node = %self.me, why, from = ?self.state, "gather");
        let mut proc_set: BTreeSet<NodeId> = self.members.iter().copied().collect();
        proc_set.insert(self.me);
        if self.state == State::Operational {
            let log = std::mem::replace(&mut self.cur, RingLog::new());
            self.old = Some(OldRing {
                id: self.ring,
                members: self.members.clone(),
                log,
            });
        }
        if let Some(old) = &self.old {
            proc_set.extend(old.members.iter().copied());
        }
        self.state = State::Gather;
        self.rec = None;
        self.cur = RingLog::new();
        self.held = None;
        self.hold_until = None;
        self.saved = None;
        self.retrans_at = None;
        self.token_loss_at = None;
        self.merge_at = None;
        self.fail_recv_count = 0;
        self.gather = Some(Gather {
            start: now,
            proc_set,
            fail_set: BTreeSet::new(),
            agreed: BTreeSet::new(),
            join_at: now + self.cfg.join,
            consensus_at: now + self.cfg.consensus,
            max_seq: self.max_ring_seq,
        });
        self.send_join();
        self.check_consensus(now);
    }

    fn send_join(&mut self) {
        let Some(g) = &self.gather else { return };
        self.join_seq += 1;
        let j = Join {
            proc_set: g.proc_set.iter().copied().collect(),
            fail_set: g.fail_set.iter().copied().collect(),
            ring_seq: self.max_ring_seq,
            epoch: self.cfg.epoch,
            join_seq: self.join_seq,
            leaving: false,
        };
        let to = self.others();
        self.send_to(&to, &Message::Join(j));
    }

    fn next_fast_fail(&self, g: &Gather) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        for n in g.proc_set.iter() {
            if *n == self.me || g.fail_set.contains(n) || g.agreed.contains(n) {
                continue;
            }
            let heard = self.last_heard.get(n).copied().unwrap_or(Instant::ZERO);
            let t = (heard + self.cfg.token).max(g.start + self.cfg.fast_fail_wait);
            best = Some(best.map_or(t, |b| b.min(t)));
        }
        best
    }

    fn gather_timers(&mut self, now: Instant) {
        let Some(g) = self.gather.as_mut() else {
            return;
        };
        let mut changed = false;
        if g.consensus_at <= now {
            let silent: Vec<NodeId> = g
                .proc_set
                .iter()
                .filter(|n| **n != self.me && !g.fail_set.contains(n) && !g.agreed.contains(n))
                .copied()
                .collect();
            tracing::debug!(node = %self.me, ?silent, "consensus timeout");
            for n in silent {
                g.fail_set.insert(n);
                changed = true;
            }
            g.consensus_at = now + self.cfg.consensus;
            g.start = now;
        }
        if now >= g.start + self.cfg.fast_fail_wait {
            let token = self.cfg.token;
            let stale: Vec<NodeId> = g
                .proc_set
                .iter()
                .filter(|n| **n != self.me && !g.fail_set.contains(n) && !g.agreed.contains(n))
                .filter(|n| {
                    let heard = self.last_heard.get(n).copied().unwrap_or(Instant::ZERO);
                    heard + token <= now
                })
                .copied()
                .collect();
            for n in stale {
                g.fail_set.insert(n);
                changed = true;
            }
        }
        let resend = g.join_at <= now;
        if resend {
            g.join_at = now + self.cfg.join;
        }
        if changed {
            g.agreed.clear();
        }
        if changed || resend {
            self.send_join();
        }
        self.check_consensus(now);
    }

    fn on_join(&mut self, now: Instant, sender: NodeId, j: Join) {
        let key = (j.epoch, j.join_seq);
        if self.join_keys.get(&sender).is_some_and(|k| *k >= key) {
            self.stats.duplicates += 1;
            return;
        }
        self.join_keys.insert(sender, key);
        if j.leaving {
            let involved = self.members.contains(&sender)
                || self
                    .gather
                    .as_ref()
                    .is_some_and(|g| g.proc_set.contains(&sender));
            if !involved {
                return;
            }
            if self.state != State::Gather {
                self.enter_gather(now, "node left");
            }
            if let Some(g) = self.gather.as_mut() {
                g.fail_set.insert(sender);
                g.agreed.clear();
            }
            self.send_join();
            self.check_consensus(now);
            return;
        }
        match self.state {
            State::Operational | State::Commit | State::Recovery => {
                if j.ring_seq < self.ring.seq {
                    // from a round older than this ring (a node outside the
                    // ring learns our ring seq from merge detection)
                    return;
                }
                if !self.members.contains(&sender) && j.fail_set.contains(&self.me) {
                    return; // it excluded us in this round; merge detection re-unites later
                }
                self.enter_gather(now, "join received");
            }
            State::Gather => {}
            State::Left => return,
        }
        if j.ring_seq < self.max_ring_seq {
            // sent before a ring we already know of was formed: its sets
            // belong to an older round (the sender will hear our newer join)
            self.stats.duplicates += 1;
            return;
        }
        let raised = j.ring_seq > self.max_ring_seq;
        self.max_ring_seq = j.ring_seq;
        let me = self.me;
        let nodes = &self.cfg.nodes;
        let Some(g) = self.gather.as_mut() else {
            return;
        };
        g.max_seq = g.max_seq.max(j.ring_seq);
        let mut changed = raised;
        if j.fail_set.contains(&me) {
            if g.fail_set.insert(sender) {
                changed = true;
            }
        } else if !g.fail_set.contains(&sender) {
            for n in &j.proc_set {
                if nodes.contains(n) && g.proc_set.insert(*n) {
                    changed = true;
                }
            }
            if g.proc_set.insert(sender) {
                changed = true;
            }
            for n in &j.fail_set {
                if *n != me && nodes.contains(n) && g.fail_set.insert(*n) {
                    changed = true;
                }
            }
        }
        if changed {
            g.agreed.clear();
        }
        tracing::trace!(node = %me, %sender, jproc = ?j.proc_set, jfail = ?j.fail_set, proc = ?g.proc_set, fail = ?g.fail_set, "join");
        let same = !g.fail_set.contains(&sender)
            && j.proc_set.iter().copied().eq(g.proc_set.iter().copied())
            && j.fail_set.iter().copied().eq(g.fail_set.iter().copied());
        if same {
            g.agreed.insert(sender);
        }
        if changed {
            self.send_join();
        }
        self.check_consensus(now);
    }

    fn active_set(g: &Gather) -> Vec<NodeId> {
        g.proc_set
            .iter()
            .filter(|n| !g.fail_set.contains(n))
            .copied()
            .collect()
    }

    fn check_consensus(&mut self, now: Instant) {
        if self.state != State::Gather {
            return;
        }
        let Some(g) = &self.gather else { return };
        let active = Self::active_set(g);
        if !active.iter().all(|n| *n == self.me || g.agreed.contains(n)) {
            return;
        }
        if active.len() == 1 && now < g.start + self.cfg.fast_fail_wait {
            return; // give others a chance to answer before going alone
        }
        if active.first() != Some(&self.me) {
            return; // the representative will send the commit token
        }
        let seq = g.max_seq.max(self.max_ring_seq).saturating_add(4);
        self.max_ring_seq = seq;
        self.push_event(Event::PersistRingSeq(seq));
        let ring = RingId { seq, rep: self.me };
        let commit = Commit {
            token_seq: 0,
            ring,
            entries: vec![None; active.len()],
            members: active,
        };
        tracing::debug!(node = %self.me, %ring, members = ?commit.members, "consensus; sending commit");
        self.accept_commit(now, commit);
    }

    fn my_entry(&self) -> CommitEntry {
        match &self.old {
            Some(o) => CommitEntry {
                old_ring: o.id,
                aru: o.log.my_aru,
                high_delivered: o.log.delivered,
                high_seq: o.log.high_seq,
            },
            None => CommitEntry {
                old_ring: RingId::ZERO,
                aru: 0,
                high_delivered: 0,
                high_seq: 0,
            },
        }
    }

    /// First rotation: fill our entry, enter COMMIT, pass it on.
    fn accept_commit(&mut self, now: Instant, mut c: Commit) {
        let Some(i) = c.members.iter().position(|n| *n == self.me) else {
            return;
        };
        c.entries[i] = Some(self.my_entry());
        self.state = State::Commit;
        self.gather = None;
        if c.ring.seq > self.max_ring_seq {
            self.max_ring_seq = c.ring.seq;
            self.push_event(Event::PersistRingSeq(c.ring.seq));
        }
        self.ring = c.ring;
        self.members = c.members.clone();
        self.token_loss_at = Some(now + self.cfg.token);
        if self.members.len() == 1 {
            self.enter_recovery(now, &c);
            self.start_token(now);
            return;
        }
        self.forward_commit(now, c);
    }

    fn forward_commit(&mut self, now: Instant, mut c: Commit) {
        c.token_seq = c.token_seq.saturating_add(1);
        self.commit_seq = c.token_seq;
        let next = self.next_member();
        let msg = Message::Commit(c);
        self.send_to(&[next], &msg);
        self.saved = Some((next, msg));
        self.saved_seq = 0;
        self.retrans_at = Some(now + self.cfg.token_retransmit());
    }

    fn on_commit(&mut self, now: Instant, _sender: NodeId, c: Commit) {
        if c.entries.len() != c.members.len() || !c.members.contains(&self.me) {
            return;
        }
        let full = c.entries.iter().all(|e| e.is_some());
        match self.state {
            State::Gather => {
                let Some(g) = &self.gather else { return };
                let i = c.members.iter().position(|n| *n == self.me).unwrap_or(0);
                if c.entries[i].is_none()
                    && c.members == Self::active_set(g)
                    && c.ring.seq > self.max_ring_seq
                {
                    self.accept_commit(now, c);
                }
            }
            State::Commit => {
                if c.ring != self.ring || c.token_seq <= self.commit_seq || !full {
                    return;
                }
                // second rotation: everyone's entry is in
                self.enter_recovery(now, &c);
                self.forward_commit(now, c);
            }
            State::Recovery => {
                if c.ring == self.ring
                    && self.is_rep()
                    && full
                    && c.token_seq > self.commit_seq
                    && self.last_token_seq == 0
                {
                    // second rotation done: start the ordering token
                    self.commit_seq = c.token_seq;
                    self.start_token(now);
                }
            }
            State::Operational | State::Left => {}
        }
    }

    fn enter_recovery(&mut self, now: Instant, c: &Commit) {
        self.state = State::Recovery;
        let my_old = self.old.as_ref().map(|o| o.id);
        let mut trans = Vec::new();
        let (mut low, mut high, mut split) = (u64::MAX, 0, 0);
        for (m, e) in c.members.iter().zip(&c.entries) {
            let Some(e) = e else { continue };
            let shares = match my_old {
                Some(id) => e.old_ring == id,
                None => *m == self.me,
            };
            if shares {
                trans.push(*m);
                low = low.min(e.aru);
                high = high.max(e.high_seq);
                split = split.max(e.high_delivered);
            }
        }
        let to_send: VecDeque<u64> = match &self.old {
            Some(o) if low < high => o
                .log
                .msgs
                .range(low + 1..=high)
                .filter(|(_, m)| m.recovered.is_none())
                .map(|(s, _)| *s)
                .collect(),
            _ => VecDeque::new(),
        };
        tracing::debug!(node = %self.me, ring = %c.ring, ?trans, split, resend = to_send.len(), "recovery");
        self.rec = Some(Recovery {
            trans,
            split,
            to_send,
            clean: 0,
            rep_visits: 0,
        });
        self.cur = RingLog::new();
        self.last_token_seq = 0;
        self.my_fcc = 0;
        self.my_backlog = 0;
        self.last_visit_seq = 0;
        self.last_prev_aru = 0;
        self.token_loss_at = Some(now + self.cfg.token);
    }

    fn start_token(&mut self, now: Instant) {
        let tok = Token {
            ring: self.ring,
            token_seq: self.last_token_seq.saturating_add(1),
            seq: 0,
            aru: 0,
            aru_id: self.me,
            prev_aru: 0,
            backlog: 0,
            fcc: 0,
            retrans_flg: false,
            installed: false,
            install_seq: 0,
            rtr: Vec::new(),
        };
        self.process_token(now, tok);
    }

    fn enter_operational(&mut self, now: Instant, install_seq: u64) {
        let rec = self.rec.take().unwrap_or(Recovery {
            trans: vec![self.me],
            split: 0,
            to_send: VecDeque::new(),
            clean: 0,
            rep_visits: 0,
        });
        self.state = State::Operational;
        let mut left = Vec::new();
        if let Some(mut old) = self.old.take() {
            // rest of the old ring: up to the split in the old regular configuration
            let rest: Vec<(u64, Stored)> = old
                .log
                .msgs
                .range(old.log.delivered.saturating_add(1)..)
                .filter(|(s, _)| **s > old.log.delivered)
                .map(|(s, m)| (*s, m.clone()))
                .collect();
            tracing::debug!(node = %self.me, old = %old.id, delivered = old.log.delivered, aru = old.log.my_aru, split = rec.split,
                rest = ?rest.iter().map(|x| x.0).collect::<Vec<_>>(), "old ring delivery");
            let mut trans_sent = false;
            for (s, m) in rest {
                if s > rec.split && !trans_sent {
                    self.transitional(&old, &rec.trans);
                    trans_sent = true;
                }
                old.log.delivered = s;
                if m.recovered.is_none() {
                    self.deliver_one(old.id, s, &m);
                }
            }
            if !trans_sent {
                self.transitional(&old, &rec.trans);
            }
            left = diff(&old.members, &self.members);
        }
        let joined = diff(&self.members, &rec.trans);
        self.stats.membership_changes += 1;
        tracing::info!(node = %self.me, ring = %self.ring, members = ?self.members, "ring installed");
        self.push_event(Event::ConfigurationChange(ConfigChange {
            ring_id: self.ring,
            members: self.members.clone(),
            joined,
            left,
            transitional: false,
        }));
        let mut out = Vec::new();
        let jl = self.cpg.on_regular_config(&self.members, &mut out);
        for e in out {
            self.push_event(Event::Cpg(e));
        }
        self.pending.push_front(Payload {
            origin: self.me,
            safe: false,
            channel: 1,
            data: Arc::from(jl),
        });
        self.cur.delivered = self.cur.delivered.max(install_seq);
        self.cur.safe_upto = self.cur.safe_upto.max(install_seq);
        self.merge_at = Some(now + self.cfg.merge);
    }

    fn transitional(&mut self, old: &OldRing, trans: &[NodeId]) {
        self.push_event(Event::ConfigurationChange(ConfigChange {
            ring_id: self.ring,
            members: trans.to_vec(),
            joined: vec![],
            left: diff(&old.members, trans),
            transitional: true,
        }));
    }
}
