//! A simulated cluster of real [`TotemNode`]s under a seeded fault profile.
//!
//! One master seed derives the node count (unless given), the fault
//! profile (swarm testing: every seed gets its own mix and intensity of
//! faults), per-node clocks, the workload and the network's randomness.
//!
//! Faults (safety phase): packet loss, duplication, replay of old packets
//! (from the last 256 sent), delay with an
//! exponential tail (reordering), symmetric and asymmetric partitions,
//! crash and restart (ring sequence and boot epoch survive, as on disk),
//! long pauses (a stopped process whose queued packets arrive at once when
//! it wakes), failure of the second ring's links (redundant ring), and clock
//! rate drift within +-1000 ppm (the core's stated bound is 1 %).
//!
//! Invariants, checked after every delivered event (see [`Checker`]):
//! same ring id => same members (and a node is in its own configuration);
//! ring ids only grow per node, across restarts; one total order: each node
//! delivers in strictly increasing (ring, seq) positions and all nodes agree
//! on the message at each position; no gap within a regular configuration;
//! FIFO per sender; virtual synchrony: nodes that go from configuration C to
//! the same next configuration delivered the same messages in C; safe
//! delivery only of messages every member still in the ring holds; process
//! group views equal at the same point of the order once synchronised.
//!
//! Liveness phase: all faults heal, crashed nodes restart, paused nodes
//! wake; within a bound every node must be operational in one ring of all
//! nodes, every node must have delivered every message it multicast, the
//! process-group views must agree with the groups nodes are in, and one
//! more message from every node must reach every node.

use base::{DetRng, Duration, Instant, NodeId};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use totem::{ClusterKey, Command, CpgEvent, Event, RingId, State, TotemConfig, TotemNode};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Master seed.
    pub seed: u64,
    /// Number of nodes (3..=7 when derived from the seed).
    pub nodes: usize,
    /// Inject faults (the profile is still derived from the seed).
    pub faults: bool,
    /// Length of the safety phase (faults + workload).
    pub safety_time: Duration,
    /// Time allowed for the liveness phase.
    pub liveness_bound: Duration,
    /// Token timeout to use instead of the profile's.
    pub token: Option<Duration>,
    /// Deliberately broken core (delivers before order is agreed).
    #[cfg(any(test, feature = "broken-deliver-early"))]
    pub broken_deliver_early: bool,
}

impl SimOptions {
    /// Options for `seed`; `nodes` None derives 3..=7 from the seed.
    pub fn from_seed(seed: u64, nodes: Option<usize>) -> SimOptions {
        let mut r = DetRng::new(seed ^ 0x6e6f_6465_7321);
        let n = nodes.unwrap_or_else(|| r.range(3, 7) as usize);
        SimOptions {
            seed,
            nodes: n,
            faults: true,
            safety_time: Duration::from_secs(4),
            liveness_bound: Duration::from_secs(30),
            token: None,
            #[cfg(any(test, feature = "broken-deliver-early"))]
            broken_deliver_early: false,
        }
    }
}

/// The fault mix of one seed.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Probability of losing a packet.
    pub loss: f64,
    /// Probability of duplicating a packet.
    pub dup: f64,
    /// Probability of also delivering an old packet (replay) per send.
    pub replay: f64,
    /// Fixed part of the one-way delay.
    pub delay_min: Duration,
    /// Mean of the exponential extra delay (reordering).
    pub delay_tail: Duration,
    /// Mean time between partition changes (None: no partitions).
    pub partitions: Option<Duration>,
    /// Partitions may be one-way.
    pub asymmetric: bool,
    /// Mean time between crashes.
    pub crashes: Option<Duration>,
    /// Mean time between pauses.
    pub pauses: Option<Duration>,
    /// Clock drift bound in ppm (each node drifts within +-this).
    pub drift_ppm: u64,
    /// Number of rings.
    pub rings: u8,
    /// Mean time between second-ring link failures.
    pub ring_faults: Option<Duration>,
    /// Encrypt and authenticate packets.
    pub crypto: bool,
    /// Token timeout.
    pub token: Duration,
    /// Idle token hold.
    pub hold: Duration,
    /// Share of messages sent safe.
    pub safe_ratio: f64,
    /// Mean time between workload operations (cluster-wide).
    pub op_interval: Duration,
    /// Flow control: (window_size, max_messages): quorate's default, corosync's
    /// (50, 17), or a small window (32, 10) that makes senders wait for the
    /// token often. (Smaller still cannot drain the heaviest workload of a
    /// 7-node lossy profile within the liveness bound: seed 2509 with (10, 4).)
    pub window: (u32, u32),
}

impl Profile {
    fn derive(r: &mut DetRng, faults: bool) -> Profile {
        let pick = |r: &mut DetRng, p: f64, lo: u64, hi: u64| {
            let d = Duration::from_millis(r.range(lo, hi));
            if faults && r.chance(p) {
                Some(d)
            } else {
                None
            }
        };
        let token = Duration::from_millis([200, 300, 500, 1000][r.below(4) as usize]);
        Profile {
            loss: if faults {
                [0.0, 0.0, 0.01, 0.05, 0.2][r.below(5) as usize]
            } else {
                0.0
            },
            dup: if faults {
                [0.0, 0.01, 0.1][r.below(3) as usize]
            } else {
                0.0
            },
            delay_min: Duration::from_micros(r.range(300, 3000)),
            delay_tail: Duration::from_micros([0, 100, 1000, 5000][r.below(4) as usize]),
            partitions: pick(r, 0.4, 300, 2000),
            asymmetric: r.chance(0.3),
            crashes: pick(r, 0.3, 500, 3000),
            pauses: pick(r, 0.3, 500, 3000),
            drift_ppm: [0, 100, 1000][r.below(3) as usize],
            rings: if r.chance(0.25) { 2 } else { 1 },
            ring_faults: pick(r, 0.7, 300, 1500),
            crypto: r.chance(0.25),
            token,
            hold: if r.chance(0.5) {
                Duration::from_millis(5)
            } else {
                Duration::ZERO
            },
            safe_ratio: [0.0, 0.2, 0.5][r.below(3) as usize],
            op_interval: Duration::from_micros(r.range(500, 5000)),
            replay: if faults {
                [0.0, 0.0, 0.001, 0.01][r.below(4) as usize]
            } else {
                0.0
            },
            window: (256, 64),
        }
    }
}

/// A successful run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// The fault profile used.
    pub profile: Profile,
    /// Events processed.
    pub steps: u64,
    /// Simulated time at the end.
    pub end: Instant,
    /// Application messages delivered (summed over nodes).
    pub deliveries: u64,
    /// Regular configurations installed (summed over nodes).
    pub configs: u64,
    /// Process-group view comparisons made (all agreed).
    pub cpg_agreements: u64,
    /// Time from the start of the liveness phase to one full ring.
    pub converge: Duration,
    /// Rolling hash of the whole trace (for determinism checks).
    pub trace_hash: u64,
}

pub use crate::Failure;

// ---------------------------------------------------------------- checker

/// A configuration as seen by the checker.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Conf {
    /// Regular configuration of a ring.
    Reg(RingId),
    /// Transitional configuration into a ring, with its members.
    Trans(RingId, Vec<NodeId>),
}

type Key = (RingId, u64);

#[derive(Default)]
struct Hist {
    conf: Option<Conf>,
    in_conf: Vec<Key>,
    last: Option<Key>,
    fifo: BTreeMap<(u32, u32), u64>,
    reg_max: BTreeMap<RingId, u64>,
}

/// Stateful invariant checker fed by every node's events.
#[derive(Default)]
pub struct Checker {
    hist: BTreeMap<(NodeId, u32), Hist>,
    ring_members: BTreeMap<RingId, Vec<NodeId>>,
    max_ring: BTreeMap<NodeId, RingId>,
    content: BTreeMap<Key, (NodeId, u64)>,
    ring_all: BTreeMap<RingId, BTreeSet<u64>>,
    transitions: BTreeMap<(Conf, Conf), (NodeId, Vec<Key>)>,
    cpg_views: BTreeMap<Key, (NodeId, Vec<Vec<NodeId>>)>,
    cpg_seen: BTreeMap<(NodeId, u32), Key>,
    /// Application messages delivered.
    pub deliveries: u64,
    /// Regular configurations installed.
    pub configs: u64,
    /// Process-group view comparisons that agreed.
    pub cpg_agreements: u64,
}

use crate::fnv;

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    fnv(&mut h, b);
    h
}

impl Checker {
    fn config(&mut self, node: NodeId, inc: u32, c: &totem::ConfigChange) -> Result<(), String> {
        if !c.members.contains(&node) {
            return Err(format!(
                "{node:?} installed {:?} without itself: {:?}",
                c.ring_id, c.members
            ));
        }
        let new = if c.transitional {
            Conf::Trans(c.ring_id, c.members.clone())
        } else {
            self.configs += 1;
            match self.ring_members.get(&c.ring_id) {
                Some(m) if *m != c.members => {
                    return Err(format!(
                        "ring {:?}: {node:?} has members {:?}, another node had {m:?}",
                        c.ring_id, c.members
                    ))
                }
                Some(_) => {}
                None => {
                    self.ring_members.insert(c.ring_id, c.members.clone());
                }
            }
            if let Some(prev) = self.max_ring.get(&node) {
                if *prev >= c.ring_id {
                    return Err(format!(
                        "{node:?} ring id went from {prev:?} to {:?}",
                        c.ring_id
                    ));
                }
            }
            self.max_ring.insert(node, c.ring_id);
            Conf::Reg(c.ring_id)
        };
        let h = self.hist.entry((node, inc)).or_default();
        if let Some(old) = h.conf.take() {
            let mut set = std::mem::take(&mut h.in_conf);
            set.sort();
            match self.transitions.get(&(old.clone(), new.clone())) {
                Some((other, s)) if *s != set => {
                    let only_here: Vec<_> = set.iter().filter(|k| !s.contains(k)).take(3).collect();
                    let only_there: Vec<_> =
                        s.iter().filter(|k| !set.contains(k)).take(3).collect();
                    return Err(format!(
                        "virtual synchrony: {node:?} and {other:?} both moved {old:?} -> {new:?} but delivered different messages in {old:?} (only {node:?}: {only_here:?}, only {other:?}: {only_there:?})"
                    ));
                }
                Some(_) => {}
                None => {
                    self.transitions.insert((old, new.clone()), (node, set));
                }
            }
        }
        h.conf = Some(new);
        Ok(())
    }

    fn deliver(&mut self, node: NodeId, inc: u32, d: &totem::Delivery) -> Result<(), String> {
        self.deliveries += 1;
        let key = (d.ring_id, d.seq);
        let h = self.hist.entry((node, inc)).or_default();
        let Some(conf) = h.conf.clone() else {
            return Err(format!(
                "{node:?} delivered {key:?} before any configuration"
            ));
        };
        if let Some(last) = h.last {
            if key <= last {
                return Err(format!(
                    "total order: {node:?} delivered {key:?} after {last:?}"
                ));
            }
        }
        h.last = Some(key);
        h.in_conf.push(key);
        let ph = hash_bytes(&d.payload);
        match self.content.get(&key) {
            Some((s, p)) if *s != d.sender || *p != ph => {
                return Err(format!(
                    "total order: {node:?} delivered a different message at {key:?}"
                ));
            }
            Some(_) => {}
            None => {
                self.content.insert(key, (d.sender, ph));
            }
        }
        if d.payload.len() >= 16 {
            let sender = u32::from_be_bytes(d.payload[0..4].try_into().expect("4 bytes"));
            let sinc = u32::from_be_bytes(d.payload[4..8].try_into().expect("4 bytes"));
            let ctr = u64::from_be_bytes(d.payload[8..16].try_into().expect("8 bytes"));
            if sender != d.sender.0 {
                return Err(format!(
                    "{node:?} delivered {key:?} from {:?} but it was sent by n{sender}",
                    d.sender
                ));
            }
            if let Some(prev) = h.fifo.insert((sender, sinc), ctr) {
                if ctr <= prev {
                    return Err(format!(
                        "FIFO: {node:?} delivered message {ctr} of n{sender}/{sinc} after message {prev}"
                    ));
                }
            }
        }
        match &conf {
            Conf::Reg(r) if *r == d.ring_id => {
                let all = self.ring_all.entry(d.ring_id).or_default();
                let max = h.reg_max.entry(d.ring_id).or_insert(0);
                // everything up to `max` that anyone delivered, we delivered
                if let Some(t) = all.range(*max + 1..d.seq).next() {
                    return Err(format!(
                        "gap: {node:?} delivered {key:?} in its regular configuration without seq {t}"
                    ));
                }
                *max = d.seq;
            }
            Conf::Reg(r) if *r < d.ring_id => {
                return Err(format!(
                    "{node:?} delivered {key:?} of a ring it never installed (in {r:?})"
                ));
            }
            _ => {}
        }
        if self.ring_all.entry(d.ring_id).or_default().insert(d.seq) {
            // first delivery of this message anywhere: nobody may be past it
            for ((n, _), other) in &self.hist {
                if other.reg_max.get(&d.ring_id).is_some_and(|m| *m > d.seq) {
                    return Err(format!(
                        "gap: {n:?} delivered past {key:?} in its regular configuration without it"
                    ));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- simulation

#[derive(Debug)]
enum Ev {
    Packet {
        to: NodeId,
        ring: u8,
        from: NodeId,
        bytes: Arc<[u8]>,
    },
    Timer {
        node: NodeId,
        gen: u64,
    },
    Workload,
    Partition,
    Crash,
    Pause,
    RingFault,
    Restart {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    Liveness,
}

type Clock = crate::DriftClock;

struct SimNode {
    id: NodeId,
    inc: u32,
    epoch: u64,
    ring_seq: u64,
    node: Option<TotemNode>,
    paused: bool,
    inbox: VecDeque<(u8, NodeId, Arc<[u8]>)>,
    gen: u64,
    clock: Clock,
    next_ctr: u64,
    undelivered: BTreeSet<u64>,
    groups: BTreeSet<String>,
}

/// The whole simulated cluster.
pub struct Sim {
    opts: SimOptions,
    profile: Profile,
    rng: DetRng,
    now: Instant,
    agenda: crate::Agenda<Ev>,
    nodes: Vec<SimNode>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    ring1_down: BTreeSet<NodeId>,
    history: VecDeque<(NodeId, u8, NodeId, Arc<[u8]>)>,
    faults_on: bool,
    key: Option<ClusterKey>,
    checker: Checker,
    trace: crate::Trace,
    steps: u64,
}

const TAIL: usize = 40;

impl Sim {
    /// Builds the cluster for `opts` (nothing runs yet).
    pub fn new(opts: SimOptions) -> Sim {
        let mut rng = DetRng::new(opts.seed);
        let mut profile = Profile::derive(&mut rng, opts.faults);
        // from its own stream, so every other draw of a seed stays as it was
        let mut wr = DetRng::new(opts.seed ^ 0x7769_6e64_6f77);
        profile.window = [(256, 64), (50, 17), (32, 10)][wr.below(3) as usize];

        if let Some(t) = opts.token {
            profile.token = t;
        }
        let key = profile.crypto.then(|| {
            let mut k = [0u8; 64];
            for b in k.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            k[0] = 1;
            k[1] = 2;
            ClusterKey::from_authkey(&k).expect("64 varied bytes")
        });
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let ppm = if profile.drift_ppm == 0 {
                0
            } else {
                rng.range(0, 2 * profile.drift_ppm) as i64 - profile.drift_ppm as i64
            };
            nodes.push(SimNode {
                id: NodeId(i as u32 + 1),
                inc: 0,
                epoch: 0,
                ring_seq: 0,
                node: None,
                paused: false,
                inbox: VecDeque::new(),
                gen: 0,
                clock: Clock {
                    offset: rng.below(1 << 40),
                    ppm,
                },
                next_ctr: 0,
                undelivered: BTreeSet::new(),
                groups: BTreeSet::new(),
            });
        }
        Sim {
            opts,
            profile,
            rng,
            now: Instant::ZERO,
            agenda: crate::Agenda::new(),
            nodes,
            blocked: BTreeSet::new(),
            ring1_down: BTreeSet::new(),
            history: VecDeque::new(),
            faults_on: true,
            key,
            checker: Checker::default(),
            trace: crate::Trace::new(TAIL, false),
            steps: 0,
        }
    }

    fn log(&mut self, s: String) {
        self.trace.log(self.now, &s);
    }

    fn fail(&self, invariant: String) -> Failure {
        Failure {
            layer: "totem",
            seed: self.opts.seed,
            nodes: self.opts.nodes,
            at: self.now,
            invariant,
            tail: self.trace.tail(),
        }
    }

    fn at(&mut self, t: Instant, ev: Ev) {
        self.agenda.at(t, ev);
    }

    fn exp(&mut self, mean: Duration) -> Duration {
        crate::exp(&mut self.rng, mean)
    }

    fn idx(&self, id: NodeId) -> usize {
        id.0 as usize - 1
    }

    fn config_for(&self, i: usize) -> TotemConfig {
        let n = &self.nodes[i];
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut c = TotemConfig::new(n.id, ids).with_token(self.profile.token);
        c.rings = self.profile.rings;
        c.fail_recv_const = 50;
        c.hold = self.profile.hold;
        (c.window_size, c.max_messages) = self.profile.window;
        c.key = self.key.clone();
        c.epoch = n.epoch;
        c.initial_ring_seq = n.ring_seq;
        c
    }

    fn start_node(&mut self, i: usize) -> Result<(), Failure> {
        self.nodes[i].epoch += 1;
        self.nodes[i].inc += 1;
        self.nodes[i].undelivered.clear();
        self.nodes[i].groups.clear();
        let cfg = self.config_for(i);
        let local = self.nodes[i].clock.local(self.now);
        #[allow(unused_mut)]
        let mut node =
            TotemNode::new(cfg, local).map_err(|e| self.fail(format!("config rejected: {e}")))?;
        #[cfg(any(test, feature = "broken-deliver-early"))]
        node.set_broken_deliver_early(self.opts.broken_deliver_early);
        self.nodes[i].node = Some(node);
        let id = self.nodes[i].id;
        let inc = self.nodes[i].inc;
        self.log(format!("{id:?} starts (incarnation {inc})"));
        self.after(i)
    }

    /// Drains a node's outputs, checks its events, re-arms its timer.
    fn after(&mut self, i: usize) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let inc = self.nodes[i].inc;
        let mut out = Vec::new();
        let mut evs = Vec::new();
        let deadline;
        {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return Ok(());
            };
            while let Some(t) = node.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = node.poll_event() {
                evs.push(e);
            }
            deadline = node.poll_deadline();
        }
        for e in evs {
            match &e {
                Event::ConfigurationChange(c) => {
                    self.log(format!(
                        "{id:?} {} config {:?} members {:?} left {:?}",
                        if c.transitional { "trans" } else { "regular" },
                        c.ring_id,
                        c.members,
                        c.left
                    ));
                    self.checker.config(id, inc, c).map_err(|s| self.fail(s))?;
                }
                Event::Deliver(d) => {
                    self.trace.fold(&d.seq.to_be_bytes());
                    self.checker.deliver(id, inc, d).map_err(|s| self.fail(s))?;
                    if d.safe {
                        self.check_safe(i, d)?;
                    }
                    if d.sender == id && d.payload.len() >= 16 {
                        let sinc = u32::from_be_bytes(d.payload[4..8].try_into().expect("4"));
                        let ctr = u64::from_be_bytes(d.payload[8..16].try_into().expect("8"));
                        if sinc == inc {
                            self.nodes[i].undelivered.remove(&ctr);
                        }
                    }
                }
                Event::PersistRingSeq(s) => self.nodes[i].ring_seq = *s,
                Event::Cpg(CpgEvent::ConfChange { group, members, .. }) => {
                    self.log(format!("{id:?} cpg {group} members {members:?}"));
                }
                Event::Cpg(CpgEvent::Deliver { .. }) => {}
                Event::Link(l) => self.log(format!(
                    "{id:?} link {:?} ring {} up={}",
                    l.peer, l.ring, l.up
                )),
            }
        }
        self.check_cpg(i)?;
        for t in out {
            self.send(id, t.ring, t.to, t.bytes);
        }
        self.nodes[i].gen += 1;
        if let Some(d) = deadline {
            let g = self.nodes[i].clock.global(d, self.now);
            let gen = self.nodes[i].gen;
            self.at(g, Ev::Timer { node: id, gen });
        }
        Ok(())
    }

    /// Process groups: once a node's views are synchronised with its ring,
    /// they equal every other node's views at the same point of the order.
    fn check_cpg(&mut self, i: usize) -> Result<(), Failure> {
        let (id, inc) = (self.nodes[i].id, self.nodes[i].inc);
        let Some(t) = self.nodes[i].node.as_ref() else {
            return Ok(());
        };
        let Some(pos) = t.last_cpg_position() else {
            return Ok(());
        };
        if !t.cpg().synced() || self.checker.cpg_seen.get(&(id, inc)) == Some(&pos) {
            return Ok(());
        }
        self.checker.cpg_seen.insert((id, inc), pos);
        let views: Vec<Vec<NodeId>> = ["g0", "g1", "g2"].iter().map(|g| t.cpg().view(g)).collect();
        match self.checker.cpg_views.get(&pos) {
            Some((other, v)) if *v != views => Err(self.fail(format!(
                "process groups: at {pos:?} {id:?} has views {views:?} but {other:?} had {v:?}"
            ))),
            Some(_) => {
                self.checker.cpg_agreements += 1;
                Ok(())
            }
            None => {
                self.checker.cpg_views.insert(pos, (id, views));
                Ok(())
            }
        }
    }

    /// Safe delivery in a regular configuration: every member that is still
    /// in that ring holds the message (members that moved on or crashed
    /// cannot be asked; the recovery path covers them).
    fn check_safe(&self, i: usize, d: &totem::Delivery) -> Result<(), Failure> {
        let Some(me) = self.nodes[i].node.as_ref() else {
            return Ok(());
        };
        if me.ring_id() != d.ring_id || me.state() != State::Operational {
            return Ok(()); // delivered while installing a later ring
        }
        for m in me.members() {
            let Some(t) = self.nodes[self.idx(*m)].node.as_ref() else {
                continue;
            };
            let same = t.ring_id() == d.ring_id
                && matches!(t.state(), State::Operational | State::Recovery);
            if same && !t.has_received(d.ring_id, d.seq) {
                return Err(self.fail(format!(
                    "safe delivery: {:?} delivered {:?}/{} as safe but member {m:?} does not have it",
                    self.nodes[i].id, d.ring_id, d.seq
                )));
            }
        }
        Ok(())
    }

    fn send(&mut self, from: NodeId, ring: u8, to: NodeId, bytes: Arc<[u8]>) {
        self.trace.fold(&bytes);
        if self.faults_on {
            if self.blocked.contains(&(from, to)) {
                return;
            }
            if ring == 1 && (self.ring1_down.contains(&from) || self.ring1_down.contains(&to)) {
                return;
            }
            if self.rng.chance(self.profile.loss) {
                return;
            }
        }
        if self.profile.replay > 0.0 {
            if self.history.len() >= 256 {
                self.history.pop_front();
            }
            self.history.push_back((from, ring, to, bytes.clone()));
            if self.faults_on && self.rng.chance(self.profile.replay) {
                let k = self.rng.below(self.history.len() as u64) as usize;
                let (f, r, t, b) = self.history[k].clone();
                let d = self.profile.delay_min + self.exp(self.profile.delay_tail);
                self.at(
                    self.now + d,
                    Ev::Packet {
                        to: t,
                        ring: r,
                        from: f,
                        bytes: b,
                    },
                );
            }
        }
        let copies = if self.faults_on && self.rng.chance(self.profile.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let tail = self.profile.delay_tail;
            let d = self.profile.delay_min + self.exp(tail);
            self.at(
                self.now + d,
                Ev::Packet {
                    to,
                    ring,
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn workload(&mut self) -> Result<(), Failure> {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let next = self.exp(self.profile.op_interval);
        self.at(self.now + next, Ev::Workload);
        if self.nodes[i].node.is_none() || self.nodes[i].paused {
            return Ok(());
        }
        let roll = self.rng.below(100);
        let cmd = if roll < 85 {
            self.multicast_cmd(i)
        } else {
            let g = format!("g{}", self.rng.below(3));
            let joined = self.nodes[i].groups.contains(&g);
            if roll < 92 {
                if joined {
                    self.nodes[i].groups.remove(&g);
                    Command::CpgLeave { group: g }
                } else {
                    self.nodes[i].groups.insert(g.clone());
                    Command::CpgJoin { group: g }
                }
            } else if joined {
                Command::CpgSend {
                    group: g,
                    payload: vec![1, 2, 3],
                }
            } else {
                return Ok(());
            }
        };
        self.command(i, cmd)
    }

    fn multicast_cmd(&mut self, i: usize) -> Command {
        let n = &mut self.nodes[i];
        n.next_ctr += 1;
        let ctr = n.next_ctr;
        let mut p = Vec::with_capacity(32);
        p.extend_from_slice(&n.id.0.to_be_bytes());
        p.extend_from_slice(&n.inc.to_be_bytes());
        p.extend_from_slice(&ctr.to_be_bytes());
        let extra = self.rng.below(32) as usize;
        p.extend((0..extra).map(|x| x as u8));
        let safe = self.rng.chance(self.profile.safe_ratio);
        self.nodes[i].undelivered.insert(ctr);
        Command::Multicast { payload: p, safe }
    }

    fn command(&mut self, i: usize, cmd: Command) -> Result<(), Failure> {
        let local = self.nodes[i].clock.local(self.now);
        let id = self.nodes[i].id;
        let desc = format!("{cmd:?}");
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Ok(());
        };
        if let Err(e) = node.handle_command(local, cmd.clone()) {
            if let Command::Multicast { payload, .. } = &cmd {
                let ctr = u64::from_be_bytes(payload[8..16].try_into().expect("8"));
                self.nodes[i].undelivered.remove(&ctr);
            }
            self.log(format!("{id:?} command refused: {e}"));
        } else if !desc.starts_with("Multicast") {
            self.log(format!("{id:?} {desc}"));
        }
        self.after(i)
    }

    fn random_partition(&mut self) {
        self.blocked.clear();
        if self.rng.chance(0.3) {
            self.log("network healed".into());
            return;
        }
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let side: Vec<bool> = ids.iter().map(|_| self.rng.chance(0.5)).collect();
        let oneway = self.profile.asymmetric && self.rng.chance(0.5);
        for (a, sa) in ids.iter().zip(&side) {
            for (b, sb) in ids.iter().zip(&side) {
                if sa != sb && (!oneway || *sa) {
                    self.blocked.insert((*a, *b));
                }
            }
        }
        let a: Vec<_> = ids
            .iter()
            .zip(&side)
            .filter(|x| *x.1)
            .map(|x| *x.0)
            .collect();
        self.log(format!(
            "partition {a:?} | rest{}",
            if oneway { " (one-way)" } else { "" }
        ));
    }

    fn step_node<F: FnOnce(&mut TotemNode, Instant)>(
        &mut self,
        i: usize,
        f: F,
    ) -> Result<(), Failure> {
        let local = self.nodes[i].clock.local(self.now);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Ok(());
        };
        f(node, local);
        self.after(i)
    }

    fn handle(&mut self, ev: Ev) -> Result<(), Failure> {
        match ev {
            Ev::Packet {
                to,
                ring,
                from,
                bytes,
            } => {
                let i = self.idx(to);
                if self.nodes[i].node.is_none() {
                    return Ok(());
                }
                if self.nodes[i].paused {
                    if self.nodes[i].inbox.len() < 512 {
                        self.nodes[i].inbox.push_back((ring, from, bytes));
                    }
                    return Ok(());
                }
                self.step_node(i, |n, t| n.handle_packet(t, ring, Some(from), &bytes))?;
            }
            Ev::Timer { node, gen } => {
                let i = self.idx(node);
                if self.nodes[i].gen != gen || self.nodes[i].paused {
                    return Ok(());
                }
                self.step_node(i, |n, t| n.handle_timeout(t))?;
            }
            Ev::Workload => {
                if self.faults_on {
                    self.workload()?;
                }
            }
            Ev::Partition => {
                if !self.faults_on {
                    return Ok(());
                }
                self.random_partition();
                let m = self.profile.partitions.unwrap_or(Duration::from_secs(1));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Partition);
            }
            Ev::Crash => {
                if !self.faults_on {
                    return Ok(());
                }
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                if self.nodes[i].node.is_some() {
                    self.nodes[i].node = None;
                    self.nodes[i].paused = false;
                    self.nodes[i].inbox.clear();
                    let id = self.nodes[i].id;
                    self.log(format!("{id:?} crashes"));
                    let d = Duration::from_millis(self.rng.range(10, 2000));
                    self.at(self.now + d, Ev::Restart { node: id });
                }
                let m = self.profile.crashes.unwrap_or(Duration::from_secs(1));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Crash);
            }
            Ev::Restart { node } => {
                let i = self.idx(node);
                if self.nodes[i].node.is_none() {
                    self.start_node(i)?;
                }
            }
            Ev::Pause => {
                if !self.faults_on {
                    return Ok(());
                }
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                if self.nodes[i].node.is_some() && !self.nodes[i].paused {
                    self.nodes[i].paused = true;
                    let id = self.nodes[i].id;
                    let d = Duration::from_millis(
                        self.rng.range(50, 3 * self.profile.token.as_millis()),
                    );
                    self.log(format!("{id:?} paused for {d}"));
                    self.at(self.now + d, Ev::Resume { node: id });
                }
                let m = self.profile.pauses.unwrap_or(Duration::from_secs(1));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Pause);
            }
            Ev::Resume { node } => self.resume(self.idx(node))?,
            Ev::RingFault => {
                if !self.faults_on {
                    return Ok(());
                }
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                let id = self.nodes[i].id;
                if !self.ring1_down.remove(&id) {
                    self.ring1_down.insert(id);
                    self.log(format!("{id:?} ring 1 down"));
                } else {
                    self.log(format!("{id:?} ring 1 up"));
                }
                let m = self.profile.ring_faults.unwrap_or(Duration::from_secs(1));
                let d = self.exp(m);
                self.at(self.now + d, Ev::RingFault);
            }
            Ev::Liveness => {
                self.faults_on = false;
                self.blocked.clear();
                self.ring1_down.clear();
                self.log("liveness phase: faults healed".into());
                for i in 0..self.nodes.len() {
                    if self.nodes[i].node.is_none() {
                        self.start_node(i)?;
                    } else if self.nodes[i].paused {
                        self.resume(i)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn resume(&mut self, i: usize) -> Result<(), Failure> {
        if !self.nodes[i].paused {
            return Ok(());
        }
        self.nodes[i].paused = false;
        let id = self.nodes[i].id;
        self.log(format!("{id:?} resumes"));
        while let Some((ring, from, bytes)) = self.nodes[i].inbox.pop_front() {
            self.step_node(i, |n, t| n.handle_packet(t, ring, Some(from), &bytes))?;
        }
        self.step_node(i, |n, t| n.handle_timeout(t))
    }

    fn run_until(
        &mut self,
        end: Instant,
        mut stop: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Failure> {
        while let Some(t) = self.agenda.next_time() {
            if t > end {
                self.now = end;
                return Ok(false);
            }
            let (t, ev) = self.agenda.pop().expect("an event is due");
            self.now = t;
            self.steps += 1;
            self.handle(ev)?;
            if stop(self) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn converged(&self) -> bool {
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut ring = None;
        let mut progress = None;
        for n in &self.nodes {
            let Some(t) = &n.node else { return false };
            if t.state() != State::Operational || t.members() != all.as_slice() {
                return false;
            }
            if *ring.get_or_insert(t.ring_id()) != t.ring_id() {
                return false;
            }
            if !n.undelivered.is_empty() || t.send_queue_len() > 0 || !t.cpg().synced() {
                return false;
            }
            let (d, h) = t.ring_progress();
            if d != h || *progress.get_or_insert(d) != d {
                return false;
            }
        }
        true
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            match &n.node {
                None => s.push_str(&format!("{:?}: down; ", n.id)),
                Some(t) => s.push_str(&format!(
                    "{:?}: {:?} ring {:?} members {:?} undelivered {} queue {} stats {:?}; ",
                    n.id,
                    t.state(),
                    t.ring_id(),
                    t.members(),
                    n.undelivered.len(),
                    t.send_queue_len(),
                    t.stats()
                )),
            }
        }
        s
    }

    fn boot(&mut self) {
        let seed = self.opts.seed;
        self.log(format!(
            "seed {seed} nodes {} profile {:?}",
            self.opts.nodes, self.profile
        ));
        for i in 0..self.nodes.len() {
            // staggered starts
            let d = Duration::from_micros(self.rng.below(50_000));
            let id = self.nodes[i].id;
            self.at(Instant::ZERO + d, Ev::Restart { node: id });
        }
    }

    /// Scripted scenario: a calm cluster forms its ring, then the highest
    /// node is killed; returns the time until every survivor has installed
    /// a ring of exactly the survivors (failure detection + reformation).
    pub fn detection_time(mut self) -> Result<Duration, Failure> {
        self.faults_on = false;
        self.boot();
        let bound = Instant::ZERO + self.opts.liveness_bound;
        if !self.run_until(bound, |s| s.converged())? {
            return Err(self.fail(format!("no initial ring ({})", self.describe())));
        }
        // let the ring run a little, at a random phase of the token
        let settle = self.now + Duration::from_millis(100 + self.rng.below(100));
        self.run_until(settle, |_| false)?;
        let victim = self.nodes.len() - 1;
        self.nodes[victim].node = None;
        let id = self.nodes[victim].id;
        self.log(format!("{id:?} killed"));
        let t0 = self.now;
        let survivors: Vec<NodeId> = self.nodes[..victim].iter().map(|n| n.id).collect();
        let done = |s: &Sim| {
            s.nodes[..victim].iter().all(|n| {
                n.node.as_ref().is_some_and(|t| {
                    t.state() == State::Operational && t.members() == survivors.as_slice()
                })
            })
        };
        if !self.run_until(t0 + self.opts.liveness_bound, done)? {
            return Err(self.fail(format!("survivors did not re-form ({})", self.describe())));
        }
        Ok(self.now - t0)
    }

    /// Runs both phases and the final checks.
    pub fn run(mut self) -> Result<Report, Failure> {
        let seed = self.opts.seed;
        self.boot();
        self.at(Instant::ZERO, Ev::Workload);
        if self.opts.faults {
            let p = self.profile.clone();
            for (on, ev) in [
                (p.partitions, Ev::Partition),
                (p.crashes, Ev::Crash),
                (p.pauses, Ev::Pause),
                (p.ring_faults.filter(|_| p.rings > 1), Ev::RingFault),
            ] {
                if let Some(m) = on {
                    let d = self.exp(m);
                    self.at(Instant::ZERO + d, ev);
                }
            }
        }
        let live_at = Instant::ZERO + self.opts.safety_time;
        self.at(live_at, Ev::Liveness);
        self.run_until(live_at, |_| false)?;
        // liveness: one ring of everyone, everything delivered
        let bound = live_at + self.opts.liveness_bound;
        let ok = self.run_until(bound, |s| !s.faults_on && s.converged())?;
        if !ok {
            return Err(self.fail(format!(
                "liveness: no single ring of all nodes with everything delivered within {} ({})",
                self.opts.liveness_bound,
                self.describe()
            )));
        }
        let converge = self.now - live_at;
        // views of process groups agree with what nodes are in
        let ring = self.nodes[0].node.as_ref().map(|t| t.ring_id());
        for g in ["g0", "g1", "g2"] {
            let truth: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|n| {
                    n.node
                        .as_ref()
                        .is_some_and(|t| t.cpg().local_groups().iter().any(|x| x == g))
                })
                .map(|n| n.id)
                .collect();
            for n in &self.nodes {
                let v = n.node.as_ref().map(|t| t.cpg().view(g)).unwrap_or_default();
                if v != truth {
                    return Err(self.fail(format!(
                        "process groups: {:?} sees {g} = {v:?}, members are {truth:?} (ring {ring:?})",
                        n.id
                    )));
                }
            }
        }
        // one more message from everyone reaches everyone
        for i in 0..self.nodes.len() {
            let cmd = self.multicast_cmd(i);
            self.command(i, cmd)?;
        }
        let before = self.checker.deliveries;
        let want = (self.nodes.len() * self.nodes.len()) as u64;
        let end = self.now + Duration::from_secs(5);
        let ok = self.run_until(end, |s| {
            s.checker.deliveries - before >= want && s.converged()
        })?;
        if !ok {
            return Err(self.fail(format!(
                "liveness: final messages not delivered everywhere ({} of {want}) ({})",
                self.checker.deliveries - before,
                self.describe()
            )));
        }
        Ok(Report {
            seed,
            nodes: self.opts.nodes,
            profile: self.profile,
            steps: self.steps,
            end: self.now,
            deliveries: self.checker.deliveries,
            configs: self.checker.configs,
            cpg_agreements: self.checker.cpg_agreements,
            converge,
            trace_hash: self.trace.hash(),
        })
    }
}

/// Runs one seed. The error's `Display` carries the replay command.
pub fn run(opts: SimOptions) -> Result<Report, Failure> {
    Sim::new(opts).run()
}

/// Failure detection time of a calm cluster of `nodes` when one is killed,
/// with the given token timeout (see [`Sim::detection_time`]).
pub fn detection_time(seed: u64, nodes: usize, token: Duration) -> Result<Duration, Failure> {
    let mut o = SimOptions::from_seed(seed, Some(nodes));
    o.faults = false;
    o.token = Some(token);
    Sim::new(o).detection_time()
}

/// Runs the same options twice and compares the trace hashes.
pub fn check_determinism(opts: SimOptions) -> Result<u64, String> {
    let a = run(opts.clone()).map_err(|f| f.to_string())?;
    let b = run(opts).map_err(|f| f.to_string())?;
    if a.trace_hash != b.trace_hash || a.steps != b.steps {
        return Err(format!(
            "seed {} is not deterministic: trace hash {:#x} ({} steps) vs {:#x} ({} steps)",
            a.seed, a.trace_hash, a.steps, b.trace_hash, b.steps
        ));
    }
    Ok(a.trace_hash)
}

/// Summary of many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub runs: u64,
    /// Events processed over all runs.
    pub steps: u64,
    /// Longest convergence time seen in a liveness phase.
    pub worst_converge: Duration,
}

/// Runs `count` seeds from `first`; nodes fixed or derived per seed.
/// Stops at the first failure.
pub fn run_seeds(first: u64, count: u64, nodes: Option<usize>) -> Result<Summary, Box<Failure>> {
    let mut s = Summary::default();
    for seed in first..first.saturating_add(count) {
        let r = run(SimOptions::from_seed(seed, nodes)).map_err(Box::new)?;
        s.runs += 1;
        s.steps += r.steps;
        s.worst_converge = s.worst_converge.max(r.converge);
    }
    Ok(s)
}

/// [`run_seeds`] on `jobs` threads (seed `s` runs on thread `s % jobs`).
/// Every seed's run is the same as alone, so the result is the same as
/// [`run_seeds`]'s: the summary of all seeds, or the failure of the lowest
/// failing seed (threads skip seeds above a failure already found).
pub fn run_seeds_jobs(
    first: u64,
    count: u64,
    nodes: Option<usize>,
    jobs: usize,
) -> Result<Summary, Box<Failure>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    let jobs = jobs.max(1) as u64;
    if jobs == 1 {
        return run_seeds(first, count, nodes);
    }
    let end = first.saturating_add(count);
    let lowest_failing = AtomicU64::new(u64::MAX);
    let failure: Mutex<Option<Box<Failure>>> = Mutex::new(None);
    let parts: Vec<Summary> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                let (lowest_failing, failure) = (&lowest_failing, &failure);
                scope.spawn(move || {
                    let mut s = Summary::default();
                    let mut seed = first + j;
                    while seed < end && seed < lowest_failing.load(Ordering::Relaxed) {
                        match run(SimOptions::from_seed(seed, nodes)) {
                            Ok(r) => {
                                s.runs += 1;
                                s.steps += r.steps;
                                s.worst_converge = s.worst_converge.max(r.converge);
                            }
                            Err(f) => {
                                let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                                if slot.as_ref().is_none_or(|g| g.seed > seed) {
                                    *slot = Some(Box::new(f));
                                    lowest_failing.fetch_min(seed, Ordering::Relaxed);
                                }
                                break;
                            }
                        }
                        seed += jobs;
                    }
                    s
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    });
    if let Some(f) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(f);
    }
    Ok(parts.into_iter().fold(Summary::default(), |mut a, s| {
        a.runs += s.runs;
        a.steps += s.steps;
        a.worst_converge = a.worst_converge.max(s.worst_converge);
        a
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_on_several_threads_sum_to_the_serial_result() {
        let serial = run_seeds(40, 6, Some(3)).unwrap();
        let parallel = run_seeds_jobs(40, 6, Some(3), 4).unwrap();
        assert_eq!(
            (serial.runs, serial.steps, serial.worst_converge),
            (parallel.runs, parallel.steps, parallel.worst_converge)
        );
    }

    #[test]
    fn broken_delivery_is_caught_within_the_first_seeds() {
        let mut caught = None;
        for seed in 0..20 {
            let mut o = SimOptions::from_seed(seed, None);
            o.broken_deliver_early = true;
            if let Err(f) = run(o) {
                caught = Some((seed, f));
                break;
            }
        }
        let (seed, f) =
            caught.expect("the checker missed a core that delivers before the order is agreed");
        let text = f.to_string();
        eprintln!("{text}");
        assert!(
            text.contains(&format!(
                "quorate sim totem --seeds 1 --seed {seed} --nodes"
            )),
            "{text}"
        );
        assert!(
            text.contains("total order") || text.contains("gap") || text.contains("FIFO"),
            "{text}"
        );
    }
}
