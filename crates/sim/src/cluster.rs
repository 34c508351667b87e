//! A simulated cluster of whole node stacks ([`stack::Stack`]: totem,
//! quorum, fencing, the resource manager) under seeded faults, with the
//! services' processes and the power switch simulated as the world's truth.
//!
//! Each seed derives a cluster.conf (2 to 5 nodes, two_node for 2, one to
//! three services with failover domains ordered, restricted or nofailback,
//! restart or relocate recovery, one or two fence methods with per-device
//! delays), which goes through the real parser and plan, and a fault mix
//! (swarm testing): packet loss, duplication and delay (reordering),
//! symmetric and one-way partitions, power loss and reboot, long pauses (a
//! stopped daemon whose services keep running), clock drift, fence devices
//! that fail, hang past their timeout or succeed late, service starts that
//! fail (sometimes leaving half-started processes), services that die,
//! operator relocations, and clean leaves (`cman leave` on a node; when its
//! stack emits `Action::Left` the daemon exits, the node keeping its power
//! and whatever still runs there, and an admin may start it again later).
//! Leaves draw from a stream of their own, so a seed without them runs
//! exactly as before they existed.
//!
//! The world's truth is kept outside the stacks: which node's processes run
//! each service ([`World`]), which nodes have power, when a node was last
//! fenced. A fence agent that succeeds cuts the victim's power (its stack and
//! its services' processes are gone); an agent dies with its fencer.
//!
//! Invariants, checked after every step:
//! - a service's processes run on at most one node, and no node is told to
//!   start a service while another node's processes still run it;
//! - only a quorate node starts a service or runs a fence agent;
//! - a service whose last host lost power is started elsewhere only after
//!   that host was fenced or has booted again since;
//! - no two quorate partitions with disjoint members (except under two_node,
//!   where the fence race decides);
//! - members of one ring whose vote core has settled agree on quorum;
//! - a node that left cleanly (its announcement came back to it ordered) is
//!   not fenced for that departure by any member of its ring then (unless
//!   a fencing of it had already begun);
//! - a leave during which the node stayed quorate and nobody's victim moved
//!   the node's services away before the daemon exited.
//!
//! Liveness, once faults stop and every node has power again: within a bound
//! every node is in one quorate ring, nobody waits on fencing, every replica
//! of the resource manager shows the same placement, and every service runs
//! on exactly one node of its domain, where the replicas say it runs.

use base::{DetRng, Duration, Instant, NodeId};
use stack::{Action, Now, Stack, StackInit};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Wall-clock origin of every simulated node (2026-01-01 UTC, in ns).
const WALL_ORIGIN: u64 = 1_767_225_600 * 1_000_000_000;
const TAIL: usize = 60;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Master seed.
    pub seed: u64,
    /// Number of nodes (2..=5 when derived from the seed).
    pub nodes: usize,
    /// Inject faults.
    pub faults: bool,
    /// Length of the safety phase (faults and workload).
    pub safety_time: Duration,
    /// Time allowed for the liveness phase.
    pub liveness_bound: Duration,
    /// Deliberately broken world: a fence device that reports success
    /// without cutting the power (shows that the checker can fail).
    pub broken_fence_lies: bool,
    /// How many trace lines a failure shows.
    pub trace_lines: usize,
    /// Print every trace line to stderr as it happens (debugging a seed).
    pub echo: bool,
    /// Let seeds choose a quorum disk (about 3 seeds in 10 do).
    pub qdisk: bool,
}

impl ClusterOptions {
    /// Options for `seed`; `nodes` None derives 2..=5 from the seed.
    pub fn from_seed(seed: u64, nodes: Option<usize>) -> ClusterOptions {
        let mut r = DetRng::new(seed ^ 0x0063_6c75_7374_6572);
        let n = nodes.unwrap_or_else(|| r.range(2, 5) as usize);
        ClusterOptions {
            seed,
            nodes: n,
            faults: true,
            safety_time: Duration::from_secs(30),
            liveness_bound: Duration::from_secs(120),
            broken_fence_lies: false,
            trace_lines: TAIL,
            echo: false,
            qdisk: true,
        }
    }
}

/// The fault mix and configuration choices of one seed.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Token timeout (ms).
    pub token_ms: u64,
    /// Packet loss probability.
    pub loss: f64,
    /// Packet duplication probability.
    pub dup: f64,
    /// Fixed one-way delay.
    pub delay_min: Duration,
    /// Mean exponential extra delay.
    pub delay_tail: Duration,
    /// Mean time between partition changes.
    pub partitions: Option<Duration>,
    /// Partitions may be one-way.
    pub asymmetric: bool,
    /// Mean time between power losses.
    pub crashes: Option<Duration>,
    /// Mean time between pauses.
    pub pauses: Option<Duration>,
    /// Clock drift bound (ppm).
    pub drift_ppm: u64,
    /// Wall-clock skew bound between nodes (ms).
    pub skew_ms: u64,
    /// The first method's device: probability that a run fails.
    pub fence_fail: f64,
    /// ... that it hangs until its timeout.
    pub fence_hang: f64,
    /// ... the longest time a successful run takes (ms).
    pub fence_late_ms: u64,
    /// Nodes have a second fence method (a reliable device).
    pub second_method: bool,
    /// Probability that a start fails.
    pub start_fail: f64,
    /// Mean time between service deaths (a running service's processes exit).
    pub deaths: Option<Duration>,
    /// Mean time between operator relocations.
    pub relocations: Option<Duration>,
    /// post_fail_delay (s).
    pub post_fail_delay: u64,
    /// A quorum disk (votes = nodes - 1, one heuristic), instead of two_node
    /// for two nodes.
    pub qdisk: bool,
    /// Mean time between a node losing access to the disk for a while.
    pub disk_loss: Option<Duration>,
    /// Probability that a disk I/O is slow (up to 0.8 of an interval).
    pub disk_slow: f64,
    /// Probability that a heuristic run fails (flapping).
    pub heuristic_flap: f64,
    /// Mean time between clean leaves (`quorate cman leave` on a node; an
    /// admin may start it again later). Drawn from its own stream, so the
    /// rest of a seed's profile is what it was before leaves existed.
    pub leaves: Option<Duration>,
}

impl Profile {
    fn derive(r: &mut DetRng, faults: bool) -> Profile {
        let pick = |r: &mut DetRng, p: f64, lo: u64, hi: u64| {
            let d = Duration::from_millis(r.range(lo, hi));
            (faults && r.chance(p)).then_some(d)
        };
        let f = |r: &mut DetRng, choices: &[f64]| {
            if faults {
                choices[r.below(choices.len() as u64) as usize]
            } else {
                0.0
            }
        };
        Profile {
            token_ms: [300, 500, 1000][r.below(3) as usize],
            loss: f(r, &[0.0, 0.0, 0.01, 0.05]),
            dup: f(r, &[0.0, 0.01, 0.05]),
            delay_min: Duration::from_micros(r.range(200, 2000)),
            delay_tail: Duration::from_micros([0, 100, 1000][r.below(3) as usize]),
            partitions: pick(r, 0.4, 2000, 8000),
            asymmetric: r.chance(0.3),
            crashes: pick(r, 0.4, 3000, 10000),
            pauses: pick(r, 0.4, 3000, 10000),
            drift_ppm: [0, 100, 1000][r.below(3) as usize],
            skew_ms: [0, 50, 2000][r.below(3) as usize],
            fence_fail: f(r, &[0.0, 0.3, 0.7]),
            fence_hang: f(r, &[0.0, 0.1, 0.3]),
            fence_late_ms: [50, 500, 3000][r.below(3) as usize],
            second_method: r.chance(0.5),
            start_fail: f(r, &[0.0, 0.1, 0.3]),
            deaths: pick(r, 0.4, 2000, 8000),
            relocations: pick(r, 0.4, 2000, 8000),
            post_fail_delay: [0, 0, 1][r.below(3) as usize],
            qdisk: r.chance(0.3),
            disk_loss: pick(r, 0.5, 3000, 10000),
            disk_slow: f(r, &[0.0, 0.05, 0.2]),
            heuristic_flap: f(r, &[0.0, 0.1, 0.4]),
            leaves: None,
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
    /// Events processed.
    pub steps: u64,
    /// Services started (completed starts, over the run).
    pub starts: u64,
    /// Successful fence runs (power cut).
    pub fenced: u64,
    /// Power losses and pauses injected.
    pub crashes: u64,
    /// Clean leaves completed (the node's daemon exited after `Action::Left`).
    pub leaves: u64,
    /// Time from the end of faults to the settled cluster.
    pub converge: Duration,
    /// Rolling hash of the trace (determinism check).
    pub trace_hash: u64,
}

pub use crate::Failure;

#[derive(Clone, Debug)]
enum Ev {
    Packet {
        to: NodeId,
        from: NodeId,
        bytes: Arc<[u8]>,
    },
    Timer {
        node: NodeId,
        gen: u64,
    },
    AgentDone {
        fencer: NodeId,
        inc: u32,
        /// The fencer's power-on count: an agent outlives its daemon's
        /// exit, not a power cut.
        boot: u32,
        run: Box<fence::AgentRun>,
        ok: bool,
        error: String,
    },
    ServiceDone {
        node: NodeId,
        inc: u32,
        /// The node's power-on count: a script outlives its daemon's exit.
        boot: u32,
        action: Box<rm::Action>,
        fail: bool,
    },
    PowerOn {
        node: NodeId,
    },
    Partition,
    Crash,
    Pause,
    Resume {
        node: NodeId,
        inc: u32,
    },
    Death,
    Relocate,
    Liveness,
    QdiskTimer {
        node: NodeId,
        gen: u64,
    },
    DiskRead {
        node: NodeId,
        inc: u32,
    },
    DiskWrite {
        node: NodeId,
        inc: u32,
        offset: u64,
        data: Vec<u8>,
    },
    Heuristic {
        node: NodeId,
        inc: u32,
        index: usize,
        ok: bool,
    },
    DiskLoss,
    DiskBack {
        node: NodeId,
    },
    /// An operator runs `quorate cman leave` on a random node.
    Leave,
    /// An admin starts the daemon of a node that left (incarnation `inc`).
    Restart {
        node: NodeId,
        inc: u32,
    },
}

/// A node's clocks: monotonic (offset and drift) and wall (skewed).
struct Clock {
    mono: crate::DriftClock,
    skew_ns: i64,
}

impl Clock {
    fn local(&self, g: Instant) -> Instant {
        self.mono.local(g)
    }
    fn global(&self, l: Instant, now: Instant) -> Instant {
        self.mono.global(l, now)
    }
    fn wall(&self, g: Instant) -> Instant {
        Instant((WALL_ORIGIN as i128 + g.0 as i128 + self.skew_ns as i128) as u64)
    }
}

/// A work item a paused daemon receives when it wakes.
enum Held {
    Packet(NodeId, Arc<[u8]>),
    Agent(u64, Result<(), String>),
    Service(String, rm::OpId, Option<rm::Outcome>),
}

struct SimNode {
    id: NodeId,
    name: String,
    /// Incarnation: bumped at every daemon start; work of an older one is void.
    inc: u32,
    /// The node has power (its daemon may still have exited after a leave).
    powered: bool,
    /// Power-on count: processes a daemon started outlive its exit, not this.
    boot: u32,
    epoch: u64,
    ring_seq: u64,
    stack: Option<Stack>,
    paused: bool,
    held: VecDeque<Held>,
    gen: u64,
    clock: Clock,
    /// When this node last booted (global time).
    booted_at: Instant,
    /// The quorum disk core, when the cluster has a disk.
    qdisk: Option<quorum::Qdisk>,
    qgen: u64,
    /// This node cannot reach the disk (its I/O fails).
    disk_lost: bool,
}

/// A node whose daemon left the cluster cleanly and exited.
struct CleanLeave {
    at: Instant,
    /// Members that had the safe-ordered announcement, as (node,
    /// incarnation), that did not already hold the node as a fence victim:
    /// none of them may fence it for this departure.
    watch: BTreeSet<(NodeId, u32)>,
}

/// What is really true, whatever the nodes believe.
#[derive(Default)]
struct World {
    /// Service -> node whose processes run it (at most one, or an invariant broke).
    procs: BTreeMap<String, NodeId>,
    /// Service -> (node, time) where its processes last ended by power loss.
    lost_with_power: BTreeMap<String, (NodeId, Instant)>,
    /// Node -> last time a fence agent cut its power.
    fenced_at: BTreeMap<NodeId, Instant>,
    /// Services whose processes died on a node (the next status check there fails).
    dead: BTreeSet<(String, NodeId)>,
    /// The shared quorum disk's bytes.
    disk: Vec<u8>,
}

/// The whole simulated cluster.
pub struct ClusterSim {
    opts: ClusterOptions,
    profile: Profile,
    conf_text: String,
    conf: config::ClusterConf,
    two_node: bool,
    services: Vec<String>,
    domains: BTreeMap<String, Vec<NodeId>>,
    rng: DetRng,
    now: Instant,
    agenda: crate::Agenda<Ev>,
    nodes: Vec<SimNode>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    faults_on: bool,
    key: Option<totem::ClusterKey>,
    world: World,
    trace: crate::Trace,
    /// The first answer of a synchronised vote core at each point of the
    /// order: (ring, position) -> (who, quorate).
    decisions: BTreeMap<(String, u64), ((NodeId, u32), bool)>,
    steps: u64,
    starts: u64,
    fenced: u64,
    crashes: u64,
    /// The clean-leave fault's own stream (its draws leave `rng` alone).
    lrng: DetRng,
    /// When each node's pending `cman leave` was asked for, and whether
    /// the node has been quorate (and nobody's fence victim) since.
    leave_began: BTreeMap<NodeId, (Instant, bool)>,
    /// Nodes that left cleanly, until their daemon starts again.
    clean_left: BTreeMap<NodeId, CleanLeave>,
    leaves: u64,
}

/// The sim's resolver: node `nK` is 10.0.0.K (never used for a socket).
fn resolve(name: &str, port: u16) -> Result<SocketAddr, String> {
    let k: u8 = name
        .trim_start_matches('n')
        .parse()
        .map_err(|_| format!("unknown sim node {name}"))?;
    Ok(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, k)),
        port,
    ))
}

/// cluster.conf for a seed: returns the text, the services and their domains.
fn render_conf(
    r: &mut DetRng,
    n: usize,
    p: &Profile,
) -> (String, Vec<String>, BTreeMap<String, Vec<NodeId>>) {
    let two_node = n == 2 && !p.qdisk;
    let mut nodes = String::new();
    for i in 1..=n {
        // In a two-node cluster n1's device carries a delay, so in a split n1
        // shoots first and survives (the preferred node).
        let delay = if two_node && i == 1 {
            r#" delay="3""#
        } else {
            ""
        };
        let second = if p.second_method {
            format!(r#"<method name="backup"><device name="ipmi" port="n{i}"/></method>"#)
        } else {
            String::new()
        };
        nodes.push_str(&format!(
            r#"<clusternode name="n{i}" nodeid="{i}"><fence><method name="power"><device name="pdu" port="n{i}"{delay}/></method>{second}</fence></clusternode>"#
        ));
    }
    let cman = if two_node {
        r#"<cman two_node="1" expected_votes="1"/>"#.to_string()
    } else if p.qdisk {
        format!(r#"<cman expected_votes="{}"/>"#, 2 * n - 1)
    } else {
        "<cman/>".to_string()
    };
    // qdisk(5): votes = nodes - 1, and a token longer than the disk's
    // takeover time (interval * (tko + master_wait + 2) = 6 s here).
    let (token, quorumd) = if p.qdisk {
        (
            7000,
            format!(
                r#"<quorumd interval="1" tko="3" votes="{}" device="/sim/qdisk" label="quorate" min_score="1"><heuristic program="sim-gateway-check" score="1" interval="1" tko="3"/></quorumd>"#,
                n - 1
            ),
        )
    } else {
        (p.token_ms, String::new())
    };
    let nsvc = r.range(1, 3) as usize;
    let mut domains_xml = String::new();
    let mut services_xml = String::new();
    let mut services = Vec::new();
    let mut domains = BTreeMap::new();
    for s in 0..nsvc {
        let name = format!("s{s}");
        let mut dom_attr = String::new();
        if r.chance(0.7) {
            let ordered = r.chance(0.6);
            let restricted = r.chance(0.4);
            let nofailback = r.chance(0.5);
            let k = r.range(1, n as u64) as usize;
            let mut ids: Vec<usize> = (1..=n).collect();
            // a seeded shuffle picks k members
            for i in (1..ids.len()).rev() {
                let j = r.below(i as u64 + 1) as usize;
                ids.swap(i, j);
            }
            ids.truncate(k);
            let members: String = ids
                .iter()
                .enumerate()
                .map(|(prio, id)| {
                    format!(
                        r#"<failoverdomainnode name="n{id}" priority="{}"/>"#,
                        prio + 1
                    )
                })
                .collect();
            domains_xml.push_str(&format!(
                r#"<failoverdomain name="d{s}" ordered="{}" restricted="{}" nofailback="{}">{members}</failoverdomain>"#,
                u8::from(ordered),
                u8::from(restricted),
                u8::from(nofailback)
            ));
            dom_attr = format!(r#" domain="d{s}""#);
            if restricted {
                domains.insert(
                    name.clone(),
                    ids.iter().map(|i| NodeId(*i as u32)).collect(),
                );
            }
        }
        let recovery = if r.chance(0.5) {
            r#" recovery="restart" max_restarts="2" restart_expire_time="30""#
        } else {
            r#" recovery="relocate""#
        };
        services_xml.push_str(&format!(
            r#"<service name="{name}"{dom_attr}{recovery}><script name="{name}" file="/etc/init.d/{name}"/></service>"#
        ));
        services.push(name);
    }
    // RHCS's default: startup fencing. (clean_start="1" is the operator
    // accepting that a node absent at a cold start may still run services,
    // which is exactly what the checker would flag.)
    let clean_start = "0";
    let text = format!(
        r#"<?xml version="1.0"?>
<cluster name="sim" config_version="1">
  {cman}
  <totem token="{token}" secauth="off"/>
  {quorumd}
  <fence_daemon post_join_delay="3" post_fail_delay="{pfd}" clean_start="{clean_start}"/>
  <clusternodes>{nodes}</clusternodes>
  <fencedevices><fencedevice name="pdu" agent="fence_sim_pdu"/><fencedevice name="ipmi" agent="fence_sim_ipmi"/></fencedevices>
  <rm>
    <failoverdomains>{domains_xml}</failoverdomains>
    {services_xml}
  </rm>
</cluster>"#,
        pfd = p.post_fail_delay,
    );
    (text, services, domains)
}

impl ClusterSim {
    /// Builds the cluster for `opts` (nothing runs yet).
    pub fn new(opts: ClusterOptions) -> Result<ClusterSim, Failure> {
        let mut rng = DetRng::new(opts.seed);
        let mut profile = Profile::derive(&mut rng, opts.faults);
        profile.qdisk &= opts.qdisk;
        let mut lrng = DetRng::new(opts.seed ^ 0x006c_6561_7665_7321);
        let m = Duration::from_millis(lrng.range(3000, 12000));
        profile.leaves = (opts.faults && lrng.chance(0.4)).then_some(m);
        let (conf_text, services, domains) = render_conf(&mut rng, opts.nodes, &profile);
        let parsed = config::parse("cluster.conf", &conf_text);
        let fail = |why: String| Failure {
            layer: "cluster",
            seed: opts.seed,
            nodes: opts.nodes,
            at: Instant::ZERO,
            invariant: why,
            tail: conf_text.lines().map(str::to_string).collect(),
        };
        let conf = match parsed.config {
            Some(c)
                if !parsed
                    .diagnostics
                    .iter()
                    .any(|d| d.severity == config::Severity::Error) =>
            {
                c
            }
            _ => {
                return Err(fail(format!(
                    "the generated cluster.conf is invalid: {:?}",
                    parsed.diagnostics
                )))
            }
        };
        let key = rng.chance(0.2).then(|| {
            let mut k = [0u8; 64];
            for b in k.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            k[0] = 1;
            k[1] = 2;
            totem::ClusterKey::from_authkey(&k).expect("64 varied bytes")
        });
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let ppm = if profile.drift_ppm == 0 {
                0
            } else {
                rng.range(0, 2 * profile.drift_ppm) as i64 - profile.drift_ppm as i64
            };
            let skew = if profile.skew_ms == 0 {
                0
            } else {
                (rng.range(0, 2 * profile.skew_ms) as i64 - profile.skew_ms as i64) * 1_000_000
            };
            nodes.push(SimNode {
                id: NodeId(i as u32 + 1),
                name: format!("n{}", i + 1),
                inc: 0,
                powered: false,
                boot: 0,
                epoch: 0,
                ring_seq: 0,
                stack: None,
                paused: false,
                held: VecDeque::new(),
                gen: 0,
                clock: Clock {
                    mono: crate::DriftClock {
                        offset: rng.below(1 << 40),
                        ppm,
                    },
                    skew_ns: skew,
                },
                booted_at: Instant::ZERO,
                qdisk: None,
                qgen: 0,
                disk_lost: false,
            });
        }
        Ok(ClusterSim {
            trace: crate::Trace::new(opts.trace_lines, opts.echo),
            two_node: opts.nodes == 2 && !profile.qdisk,
            opts,
            profile,
            conf_text,
            conf,
            services,
            domains,
            rng,
            now: Instant::ZERO,
            agenda: crate::Agenda::new(),
            nodes,
            blocked: BTreeSet::new(),
            faults_on: true,
            key,
            world: World {
                disk: quorum::layout::format_image("sim", "quorate").expect("short names"),
                ..World::default()
            },
            decisions: BTreeMap::new(),
            steps: 0,
            starts: 0,
            fenced: 0,
            crashes: 0,
            lrng,
            leave_began: BTreeMap::new(),
            clean_left: BTreeMap::new(),
            leaves: 0,
        })
    }

    /// The cluster.conf this seed runs.
    pub fn conf_text(&self) -> &str {
        &self.conf_text
    }

    fn log(&mut self, s: String) {
        self.trace.log(self.now, &s);
    }

    fn fail(&self, invariant: String) -> Failure {
        Failure {
            layer: "cluster",
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

    fn now_of(&self, i: usize) -> Now {
        let c = &self.nodes[i].clock;
        Now {
            mono: c.local(self.now),
            wall: c.wall(self.now),
        }
    }

    // ---------------------------------------------------------- power

    fn power_on(&mut self, i: usize) -> Result<(), Failure> {
        if self.nodes[i].powered {
            return Ok(());
        }
        self.nodes[i].powered = true;
        self.nodes[i].boot += 1;
        self.nodes[i].booted_at = self.now;
        self.start_daemon(i, "powers on")
    }

    /// Start a fresh incarnation of a powered node's daemon (at boot, or an
    /// admin starting it again after a clean leave).
    fn start_daemon(&mut self, i: usize, how: &str) -> Result<(), Failure> {
        if self.nodes[i].stack.is_some() || !self.nodes[i].powered {
            return Ok(());
        }
        self.nodes[i].epoch += 1;
        self.nodes[i].inc += 1;
        self.nodes[i].paused = false;
        self.nodes[i].held.clear();
        let id = self.nodes[i].id;
        self.clean_left.remove(&id);
        self.leave_began.remove(&id);
        let name = self.nodes[i].name.clone();
        let plan = stack::plan::make_plan(&self.conf, &name, resolve)
            .map_err(|e| self.fail(format!("plan for {name}: {e}")))?;
        if let Some((_, qcfg)) = plan.qdisk.clone() {
            let mono = self.nodes[i].clock.local(self.now);
            let q = quorum::Qdisk::new(self.nodes[i].id, u64::from(self.nodes[i].inc), qcfg, mono)
                .map_err(|e| self.fail(format!("qdisk for {name}: {e}")))?;
            self.nodes[i].qdisk = Some(q);
        }
        let init = StackInit {
            plan,
            conf: self.conf.clone(),
            config_text: self.conf_text.clone(),
            key: self.key.clone(),
            epoch: self.nodes[i].epoch,
            ring_seq: self.nodes[i].ring_seq,
        };
        let now = self.now_of(i);
        let s = Stack::new(init, now).map_err(|e| self.fail(format!("stack for {name}: {e}")))?;
        self.nodes[i].stack = Some(s);
        let inc = self.nodes[i].inc;
        self.log(format!("{name} {how} (incarnation {inc})"));
        self.after(i)?;
        self.after_qdisk(i)
    }

    /// Cut a node's power: its daemon and every process it ran are gone.
    fn power_off(&mut self, i: usize, why: &str) {
        let id = self.nodes[i].id;
        if !self.nodes[i].powered {
            return;
        }
        self.nodes[i].powered = false;
        self.nodes[i].stack = None;
        self.nodes[i].qdisk = None;
        self.nodes[i].paused = false;
        self.nodes[i].held.clear();
        let lost = self.procs_on(id);
        for s in &lost {
            self.world.procs.remove(s);
            self.world.lost_with_power.insert(s.clone(), (id, self.now));
        }
        self.world.dead.retain(|(_, n)| *n != id);
        let name = self.nodes[i].name.clone();
        self.log(format!(
            "{name} loses power ({why}); processes gone: {lost:?}"
        ));
    }

    // ---------------------------------------------------------- stepping

    /// Drain a node's outputs, carry them out, check, re-arm its timer.
    fn after(&mut self, i: usize) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let mut out = Vec::new();
        let mut actions = Vec::new();
        let mut notes = Vec::new();
        {
            let Some(s) = self.nodes[i].stack.as_mut() else {
                return Ok(());
            };
            while let Some(t) = s.poll_transmit() {
                out.push(t);
            }
            while let Some(a) = s.poll_action() {
                actions.push(a);
            }
            while let Some(n) = s.poll_note() {
                notes.push(n);
            }
        }
        let name = self.nodes[i].name.clone();
        for n in notes {
            self.log(format!("{name}: {n}"));
        }
        // The vote core's answers at points of the order.
        let key = (id, self.nodes[i].inc);
        let mut decisions = Vec::new();
        if let Some(s) = self.nodes[i].stack.as_mut() {
            while let Some(d) = s.poll_decision() {
                decisions.push(d);
            }
        }
        for d in decisions {
            if d.syncing {
                continue;
            }
            let point = (format!("{}/{}", d.ring.rep.0, d.ring.seq), d.seq);
            match self.decisions.get(&point) {
                Some((other, q)) if *q != d.quorate && other.0 != key.0 => {
                    return Err(self.fail(format!(
                        "ring {} position {}: n{} decided quorate={}, n{} decided {q}",
                        point.0, point.1, key.0 .0, d.quorate, other.0 .0
                    )));
                }
                Some(_) => {}
                None => {
                    self.decisions.insert(point, (key, d.quorate));
                }
            }
        }
        for t in out {
            self.send(id, t.to, t.bytes);
        }
        let left = actions.iter().any(|a| matches!(a, Action::Left));
        for a in actions {
            self.on_action(i, a)?;
        }
        self.check()?;
        let quorate = self.nodes[i]
            .stack
            .as_ref()
            .is_some_and(|s| s.quorum().is_quorate());
        if let Some((_, kept)) = self.leave_began.get_mut(&id) {
            *kept &= quorate;
        }
        if left && self.nodes[i].stack.is_some() {
            return self.daemon_exits(i);
        }
        if let Some(d) = self.nodes[i].stack.as_ref().and_then(|s| s.poll_deadline()) {
            self.nodes[i].gen += 1;
            let gen = self.nodes[i].gen;
            let g = self.nodes[i].clock.global(d, self.now);
            self.at(g, Ev::Timer { node: id, gen });
        }
        Ok(())
    }

    fn on_action(&mut self, i: usize, a: Action) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let inc = self.nodes[i].inc;
        let name = self.nodes[i].name.clone();
        let quorate = self.nodes[i]
            .stack
            .as_ref()
            .is_some_and(|s| s.quorum().is_quorate());
        match a {
            Action::RunFenceAgent(run) => {
                if !quorate {
                    return Err(self.fail(format!(
                        "{name} runs fence agent {} against n{} while inquorate",
                        run.agent, run.victim.0
                    )));
                }
                if let Some(cl) = self.clean_left.get(&run.victim) {
                    if cl.watch.contains(&(id, inc)) {
                        return Err(self.fail(format!(
                            "{name} runs fence agent {} against n{}, which left cleanly at {} once its \
                             announcement came back to it ordered ({name} was in its ring then)",
                            run.agent, run.victim.0, cl.at
                        )));
                    }
                }
                let (ok, error, took) = if run.agent == "fence_sim_pdu" && self.faults_on {
                    let roll = self.rng.next_u64() as f64 / u64::MAX as f64;
                    if roll < self.profile.fence_hang {
                        (false, "timed out".to_string(), run.timeout)
                    } else if roll < self.profile.fence_hang + self.profile.fence_fail {
                        let d = Duration::from_millis(self.rng.range(5, 500));
                        (false, "exit status 1: connection refused".to_string(), d)
                    } else {
                        let d =
                            Duration::from_millis(self.rng.range(5, self.profile.fence_late_ms));
                        (true, String::new(), d)
                    }
                } else {
                    let d = Duration::from_millis(self.rng.range(5, 200));
                    (true, String::new(), d)
                };
                self.log(format!(
                    "{name} runs {} action {} on n{} (will {} in {took})",
                    run.agent,
                    run.action,
                    run.victim.0,
                    if ok { "succeed" } else { "fail" }
                ));
                self.at(
                    self.now + took,
                    Ev::AgentDone {
                        fencer: id,
                        inc,
                        boot: self.nodes[i].boot,
                        run: Box::new(run),
                        ok,
                        error,
                    },
                );
            }
            Action::RunService(action) => {
                if let rm::Action::StartService { service, .. } = &action {
                    self.check_start(i, service, quorate)?;
                }
                let fail = match &action {
                    rm::Action::StartService { .. } => {
                        self.faults_on && self.rng.chance(self.profile.start_fail)
                    }
                    _ => false,
                };
                let d = Duration::from_millis(self.rng.range(5, 300));
                self.at(
                    self.now + d,
                    Ev::ServiceDone {
                        node: id,
                        inc,
                        boot: self.nodes[i].boot,
                        action: Box::new(action),
                        fail,
                    },
                );
            }
            Action::PrepareIncoming { service, .. } => {
                return Err(self.fail(format!(
                    "{name}: migration of {service} in a cluster of plain services"
                )));
            }
            Action::WriteConfig { .. } | Action::PushResult { .. } => {}
            Action::PersistRingSeq(seq) => {
                self.nodes[i].ring_seq = self.nodes[i].ring_seq.max(seq);
            }
            Action::QdiskMembership(members) => {
                let mono = self.nodes[i].clock.local(self.now);
                if let Some(q) = self.nodes[i].qdisk.as_mut() {
                    q.handle_membership(mono, members);
                    // its outputs are drained by after_qdisk below
                }
                self.after_qdisk(i)?;
            }
            Action::Deliver { .. } => {}
            Action::Left => {}
        }
        Ok(())
    }

    /// A node was told to start `service`: check the safety rules.
    fn check_start(&mut self, i: usize, service: &str, quorate: bool) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let name = self.nodes[i].name.clone();
        if !quorate {
            return Err(self.fail(format!("{name} starts {service} while inquorate")));
        }
        if let Some(other) = self.world.procs.get(service) {
            if *other != id {
                return Err(self.fail(format!(
                    "{name} is told to start {service} while n{}'s processes still run it",
                    other.0
                )));
            }
        }
        if let Some((host, lost_at)) = self.world.lost_with_power.get(service).copied() {
            if host != id {
                let fenced = self
                    .world
                    .fenced_at
                    .get(&host)
                    .is_some_and(|t| *t >= lost_at);
                let rebooted = self.nodes[self.idx(host)].booted_at > lost_at;
                if !fenced && !rebooted {
                    return Err(self.fail(format!(
                        "{name} starts {service}, last run by n{} which lost power at {lost_at} \
                         and was neither fenced nor rebooted since",
                        host.0
                    )));
                }
            }
        }
        if let Some(dom) = self.domains.get(service) {
            if !dom.contains(&id) {
                return Err(self.fail(format!(
                    "{name} starts {service} outside its restricted domain {dom:?}"
                )));
            }
        }
        Ok(())
    }

    fn send(&mut self, from: NodeId, to: NodeId, bytes: Arc<[u8]>) {
        self.trace.fold(&bytes[..bytes.len().min(32)]);
        if self.faults_on {
            if self.blocked.contains(&(from, to)) {
                return;
            }
            if self.rng.chance(self.profile.loss) {
                return;
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
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    /// Feed a node (or hold the input while it is paused).
    fn feed(&mut self, i: usize, h: Held) -> Result<(), Failure> {
        if self.nodes[i].stack.is_none() {
            return Ok(());
        }
        if self.nodes[i].paused {
            if self.nodes[i].held.len() < 4096 {
                self.nodes[i].held.push_back(h);
            }
            return Ok(());
        }
        let now = self.now_of(i);
        let s = self.nodes[i].stack.as_mut().expect("checked");
        match h {
            Held::Packet(from, bytes) => s.handle_packet(now, 0, Some(from), &bytes),
            Held::Agent(run_id, result) => s.handle_agent_result(now, run_id, result),
            Held::Service(service, op, outcome) => s.handle_service_done(now, service, op, outcome),
        }
        self.after(i)
    }

    fn service_done(
        &mut self,
        node: NodeId,
        inc: u32,
        boot: u32,
        action: rm::Action,
        fail: bool,
    ) -> Result<(), Failure> {
        let i = self.idx(node);
        if self.nodes[i].boot != boot || !self.nodes[i].powered {
            return Ok(()); // the script died with its node's power
        }
        // A script outlives a daemon that exited after a clean leave (it
        // does what it does; nobody hears how it ended).
        let heard = self.nodes[i].inc == inc && self.nodes[i].stack.is_some();
        let name = self.nodes[i].name.clone();
        let (service, op, outcome) = match action {
            rm::Action::StartService { service, op, .. } => {
                // A failed start may leave half-started processes behind.
                let leaves = !fail || self.rng.chance(0.5);
                if leaves {
                    if let Some(other) = self.world.procs.get(&service) {
                        if *other != node {
                            return Err(self.fail(format!(
                                "{service} runs on n{} and on {name} at once",
                                other.0
                            )));
                        }
                    }
                    self.world.procs.insert(service.clone(), node);
                    self.world.lost_with_power.remove(&service);
                    self.world.dead.remove(&(service.clone(), node));
                    self.starts += 1;
                }
                self.log(format!(
                    "{name}: start of {service} {}",
                    if fail { "FAILS" } else { "succeeds" }
                ));
                let o = if fail {
                    rm::Outcome::StartFailed
                } else {
                    rm::Outcome::StartOk
                };
                (service, op, Some(o))
            }
            rm::Action::StopService { service, op, .. } => {
                if self.world.procs.get(&service) == Some(&node) {
                    self.world.procs.remove(&service);
                    self.world.lost_with_power.remove(&service);
                }
                self.world.dead.remove(&(service.clone(), node));
                self.log(format!("{name}: stop of {service} succeeds"));
                (service, op, Some(rm::Outcome::StopOk))
            }
            rm::Action::StatusCheck { service, op, .. } => {
                let running = self.world.procs.get(&service) == Some(&node);
                let o = (!running).then_some(rm::Outcome::StatusFailed);
                if o.is_some() {
                    self.log(format!("{name}: status of {service} FAILS"));
                }
                (service, op, o)
            }
            rm::Action::Migrate { service, op, .. } => {
                (service, op, Some(rm::Outcome::MigrateFailed))
            }
            // Never issued: no migration succeeds in a cluster of plain services.
            rm::Action::ConfirmIncoming { service, op, .. } => {
                (service, op, Some(rm::Outcome::IncomingFailed))
            }
            rm::Action::FinishMigration { service, op, .. } => {
                (service, op, Some(rm::Outcome::StopOk))
            }
        };
        if !heard {
            self.log(format!(
                "{name}: {service}'s script ends after its daemon exited"
            ));
            return Ok(());
        }
        self.feed(i, Held::Service(service, op, outcome))
    }

    #[allow(clippy::too_many_arguments)]
    fn agent_done(
        &mut self,
        fencer: NodeId,
        inc: u32,
        boot: u32,
        run: fence::AgentRun,
        ok: bool,
        error: String,
    ) -> Result<(), Failure> {
        let f = self.idx(fencer);
        if self.nodes[f].boot != boot || !self.nodes[f].powered {
            self.log(format!(
                "n{}'s agent against n{} died with its fencer",
                fencer.0, run.victim.0
            ));
            return Ok(());
        }
        if ok && self.opts.broken_fence_lies {
            self.log(format!(
                "n{}'s agent reports n{} off, but the power stays on (broken device)",
                fencer.0, run.victim.0
            ));
        } else if ok {
            let v = self.idx(run.victim);
            match run.action.as_str() {
                "on" => {
                    self.power_on(v)?;
                }
                action => {
                    self.power_off(v, &format!("fenced by n{} ({})", fencer.0, run.agent));
                    self.world.fenced_at.insert(run.victim, self.now);
                    self.fenced += 1;
                    if action == "reboot" || self.rng.chance(0.5) {
                        let d = Duration::from_millis(self.rng.range(1000, 6000));
                        self.at(self.now + d, Ev::PowerOn { node: run.victim });
                    }
                }
            }
        }
        if self.nodes[f].inc != inc || self.nodes[f].stack.is_none() {
            return Ok(()); // its daemon exited: nobody hears the result
        }
        let result = if ok { Ok(()) } else { Err(error) };
        self.feed(f, Held::Agent(run.run_id, result))
    }

    // ---------------------------------------------------------- quorum disk

    /// Drain a node's disk core: I/O and heuristics as events, availability
    /// into its stack, a self-fence as a power cut; re-arm its timer.
    fn after_qdisk(&mut self, i: usize) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let inc = self.nodes[i].inc;
        let name = self.nodes[i].name.clone();
        let mut actions = Vec::new();
        let mut events = Vec::new();
        {
            let Some(q) = self.nodes[i].qdisk.as_mut() else {
                return Ok(());
            };
            while let Some(a) = q.poll_action() {
                actions.push(a);
            }
            while let Some(e) = q.poll_event() {
                events.push(e);
            }
        }
        for a in actions {
            let slow = self.faults_on && self.rng.chance(self.profile.disk_slow);
            let d = if slow {
                // slow, but within the interval: qdisk's contract (an I/O
                // slower than that counts as a failed cycle on real disks too)
                Duration::from_millis(self.rng.range(100, 800))
            } else {
                Duration::from_micros(self.rng.range(200, 5000))
            };
            match a {
                quorum::QdiskAction::ReadAll => {
                    self.at(self.now + d, Ev::DiskRead { node: id, inc })
                }
                quorum::QdiskAction::WriteBlock { offset, data } => self.at(
                    self.now + d,
                    Ev::DiskWrite {
                        node: id,
                        inc,
                        offset,
                        data,
                    },
                ),
                quorum::QdiskAction::RunHeuristic { index, .. } => {
                    let ok = !(self.faults_on && self.rng.chance(self.profile.heuristic_flap));
                    let d = Duration::from_millis(self.rng.range(1, 50));
                    self.at(
                        self.now + d,
                        Ev::Heuristic {
                            node: id,
                            inc,
                            index,
                            ok,
                        },
                    );
                }
                quorum::QdiskAction::SelfFence { reason } => {
                    self.log(format!("{name}: qdisk self-fence: {reason}"));
                    self.power_off(i, "quorum disk self-fence");
                    let d = Duration::from_millis(self.rng.range(1000, 6000));
                    self.at(self.now + d, Ev::PowerOn { node: id });
                    return Ok(());
                }
            }
        }
        for e in events {
            match e {
                quorum::QdiskEvent::Availability { master, reason } => {
                    self.log(format!("{name}: qdisk: {reason}"));
                    let now = self.now_of(i);
                    if let Some(s) = self.nodes[i].stack.as_mut() {
                        s.handle_qdisk(now, master, &reason);
                    }
                    self.after(i)?;
                }
                other => self.log(format!("{name}: qdisk: {other:?}")),
            }
        }
        if let Some(d) = self.nodes[i].qdisk.as_ref().and_then(|q| q.poll_deadline()) {
            self.nodes[i].qgen += 1;
            let gen = self.nodes[i].qgen;
            let g = self.nodes[i].clock.global(d, self.now);
            self.at(g, Ev::QdiskTimer { node: id, gen });
        }
        Ok(())
    }

    /// Feed a disk core (a paused node's disk thread is paused too: the
    /// result waits, as its I/O would).
    fn qdisk_input(
        &mut self,
        node: NodeId,
        inc: u32,
        f: impl FnOnce(&mut quorum::Qdisk, Instant, &mut World, bool),
    ) -> Result<(), Failure> {
        let i = self.idx(node);
        if self.nodes[i].inc != inc || self.nodes[i].qdisk.is_none() {
            return Ok(());
        }
        let mono = self.nodes[i].clock.local(self.now);
        let lost = self.nodes[i].disk_lost;
        let q = self.nodes[i].qdisk.as_mut().expect("checked");
        f(q, mono, &mut self.world, lost);
        self.after_qdisk(i)
    }

    // ---------------------------------------------------------- checks

    fn check(&self) -> Result<(), Failure> {
        // The quorum disk's votes count in at most one partition.
        let mut with_disk: Vec<(totem::RingId, BTreeSet<NodeId>)> = Vec::new();
        for n in &self.nodes {
            let Some(s) = &n.stack else { continue };
            if n.paused || !s.quorum().status().quorum_device_counted {
                continue;
            }
            let Some(r) = s.ring_id() else { continue };
            let m: BTreeSet<NodeId> = s.members().iter().copied().collect();
            for (r2, m2) in &with_disk {
                if *r2 != r && m.is_disjoint(m2) {
                    return Err(self.fail(format!(
                        "the quorum disk's votes count in two partitions: ring {r:?} {m:?} and ring {r2:?} {m2:?}"
                    )));
                }
            }
            with_disk.push((r, m));
        }
        // Quorum: no two quorate partitions with disjoint members.
        if !self.two_node {
            let mut quorate: Vec<(totem::RingId, BTreeSet<NodeId>)> = Vec::new();
            for n in &self.nodes {
                let Some(s) = &n.stack else { continue };
                if !s.quorum().is_quorate() {
                    continue;
                }
                let Some(r) = s.ring_id() else { continue };
                let m: BTreeSet<NodeId> = s.members().iter().copied().collect();
                for (r2, m2) in &quorate {
                    if *r2 != r && m.is_disjoint(m2) {
                        return Err(self.fail(format!(
                            "two quorate partitions: ring {r:?} {m:?} and ring {r2:?} {m2:?}"
                        )));
                    }
                }
                quorate.push((r, m));
            }
        }
        Ok(())
    }

    fn settled(&self) -> Result<(), String> {
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut view = None;
        for n in &self.nodes {
            let Some(s) = &n.stack else {
                return Err(format!("{} is down", n.name));
            };
            if s.members() != all.as_slice() || s.totem().state() != totem::State::Operational {
                return Err(format!("{} sees members {:?}", n.name, s.members()));
            }
            if !s.quorum().is_quorate() {
                return Err(format!("{} is not quorate", n.name));
            }
            if !s.fence().blocked().is_empty() {
                return Err(format!(
                    "{} waits on fencing of {:?}",
                    n.name,
                    s.fence().blocked()
                ));
            }
            if s.rm().syncing() {
                return Err(format!("{}'s resource manager is syncing", n.name));
            }
            let v = s.rm().view();
            match &view {
                None => view = Some(v),
                Some(v0) if *v0 != v => {
                    let diff = v
                        .services
                        .iter()
                        .zip(&v0.services)
                        .find(|(a, b)| a != b)
                        .map(|(a, b)| format!("{a:?} vs {b:?}"))
                        .unwrap_or_else(|| format!("{:?} vs {:?}", v.members, v0.members));
                    return Err(format!(
                        "{}'s replica differs from the first node's: {diff}",
                        n.name
                    ));
                }
                _ => {}
            }
        }
        let view = view.expect("at least one node");
        for svc in &self.services {
            let Some(sv) = view.services.iter().find(|s| &s.name == svc) else {
                return Err(format!("{svc} is missing from the view"));
            };
            if sv.state != rm::State::Started {
                return Err(format!("{svc} is {} ({})", sv.state, sv.reason));
            }
            let truth = self.world.procs.get(svc);
            if truth.is_none() || truth != sv.owner.as_ref() {
                return Err(format!(
                    "{svc}: replicas say it runs on {:?}, its processes run on {truth:?}",
                    sv.owner
                ));
            }
            if self
                .world
                .dead
                .contains(&(svc.clone(), *truth.expect("checked")))
            {
                return Err(format!("{svc} died and is not yet noticed"));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------- faults

    fn random_partition(&mut self) {
        self.blocked.clear();
        if self.rng.chance(0.4) {
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
            .map(|x| x.0 .0)
            .collect();
        self.log(format!(
            "partition {a:?} | rest{}",
            if oneway { " (one-way)" } else { "" }
        ));
    }

    fn relocate(&mut self) -> Result<(), Failure> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].stack.is_some() && !self.nodes[*i].paused)
            .collect();
        if live.is_empty() || self.services.is_empty() {
            return Ok(());
        }
        let i = live[self.rng.below(live.len() as u64) as usize];
        let svc = self.services[self.rng.below(self.services.len() as u64) as usize].clone();
        let target = NodeId(self.rng.range(1, self.nodes.len() as u64) as u32);
        let request = rm::Request::Relocate {
            service: svc.clone(),
            node: Some(target),
        };
        let now = self.now_of(i);
        let r = self.nodes[i]
            .stack
            .as_mut()
            .expect("live")
            .submit(now, request);
        let name = self.nodes[i].name.clone();
        self.log(format!(
            "operator on {name}: relocate {svc} to n{}: {}",
            target.0,
            match &r {
                Ok(()) => "submitted".to_string(),
                Err(e) => format!("refused: {}", e.reason),
            }
        ));
        self.after(i)
    }

    /// Services whose processes run on `id` (the world's truth).
    fn procs_on(&self, id: NodeId) -> Vec<String> {
        self.world
            .procs
            .iter()
            .filter(|(_, n)| **n == id)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// `quorate cman leave` on a random running node, half of the time one
    /// whose processes run a service (the clean-leave stream draws).
    fn operator_leave(&mut self) -> Result<(), Failure> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| {
                let n = &self.nodes[*i];
                !n.paused && n.stack.as_ref().is_some_and(|s| !s.leave_requested())
            })
            .collect();
        let hosts: Vec<usize> = up
            .iter()
            .copied()
            .filter(|i| !self.procs_on(self.nodes[*i].id).is_empty())
            .collect();
        let pool = if !hosts.is_empty() && self.lrng.chance(0.5) {
            hosts
        } else {
            up
        };
        if pool.is_empty() {
            return Ok(());
        }
        let i = pool[self.lrng.below(pool.len() as u64) as usize];
        let id = self.nodes[i].id;
        let quorate = self.nodes[i]
            .stack
            .as_ref()
            .is_some_and(|s| s.quorum().is_quorate());
        // A node some member still means to fence is not in good standing:
        // what it runs waits for that fencing, and it may leave meanwhile.
        let victim = self.nodes.iter().any(|n| {
            n.stack
                .as_ref()
                .is_some_and(|s| s.fence().blocked().contains(&id))
        });
        self.leave_began.insert(id, (self.now, quorate && !victim));
        let here = self.procs_on(id);
        self.log(format!(
            "operator on {}: cman leave (quorate {quorate}, processes here: {here:?})",
            self.nodes[i].name
        ));
        let now = self.now_of(i);
        self.nodes[i]
            .stack
            .as_mut()
            .expect("up")
            .begin_leave(now, false);
        self.after(i)
    }

    /// The daemon returns after `Action::Left` (as `quorate node` does): its
    /// stack and disk thread are gone; the node keeps its power and whatever
    /// processes still run there. Checks what a clean leave promises.
    fn daemon_exits(&mut self, i: usize) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let name = self.nodes[i].name.clone();
        let Some(s) = self.nodes[i].stack.take() else {
            return Ok(());
        };
        self.nodes[i].qdisk = None;
        self.nodes[i].paused = false;
        self.nodes[i].held.clear();
        self.leaves += 1;
        let (began, kept) = self.leave_began.remove(&id).unwrap_or((self.now, false));
        let members: Vec<NodeId> = s.members().iter().copied().filter(|m| *m != id).collect();
        let here = self.procs_on(id);
        self.log(format!(
            "{name}'s daemon exits after its clean leave (others in its ring {:?}, quorate all along {kept}); processes still here: {here:?}",
            members.iter().map(|m| m.0).collect::<Vec<_>>()
        ));
        let wait = Duration::from_secs(stack::LEAVE_WAIT_SECS);
        if kept && self.now - began < wait && !here.is_empty() {
            return Err(self.fail(format!(
                "{name} left cleanly, quorate all along and {} after `cman leave`, with {here:?} still running there: its services were not moved away first",
                self.now - began
            )));
        }
        // A fencing of the node that had begun (for an earlier departure)
        // is finished whatever the node does since, and the fencer tells
        // the others: nobody is watched then.
        let begun = self.nodes.iter().any(|n| {
            n.stack.as_ref().is_some_and(|t| {
                t.fence().status().victims.iter().any(|v| {
                    v.node == id
                        && (v.tries > 0
                            || matches!(
                                v.state,
                                fence::VictimState::RunningAgent
                                    | fence::VictimState::DeviceDelay
                                    | fence::VictimState::RetryWait
                                    | fence::VictimState::Announced
                            ))
                })
            })
        });
        if begun {
            self.log(format!(
                "{name}'s fencing for an earlier departure had begun: it goes on"
            ));
        }
        // Whoever had the announcement and did not already hold the node as
        // a victim must not fence it for this departure.
        let mut watch = BTreeSet::new();
        for m in members.into_iter().filter(|_| !begun) {
            let j = self.idx(m);
            if let Some(t) = &self.nodes[j].stack {
                if !t.fence().blocked().contains(&id) {
                    watch.insert((m, self.nodes[j].inc));
                }
            }
        }
        self.clean_left.insert(
            id,
            CleanLeave {
                at: self.now,
                watch,
            },
        );
        // An admin starts it again later (always once faults are over).
        let inc = self.nodes[i].inc;
        if !self.faults_on || self.lrng.chance(0.6) {
            let d = Duration::from_millis(self.lrng.range(1000, 10000));
            self.at(self.now + d, Ev::Restart { node: id, inc });
        }
        Ok(())
    }

    fn handle(&mut self, ev: Ev) -> Result<(), Failure> {
        match ev {
            Ev::Packet { to, from, bytes } => {
                let i = self.idx(to);
                self.feed(i, Held::Packet(from, bytes))?;
            }
            Ev::Timer { node, gen } => {
                let i = self.idx(node);
                if self.nodes[i].gen != gen || self.nodes[i].paused {
                    return Ok(());
                }
                let now = self.now_of(i);
                let Some(s) = self.nodes[i].stack.as_mut() else {
                    return Ok(());
                };
                s.handle_timeout(now);
                self.after(i)?;
            }
            Ev::AgentDone {
                fencer,
                inc,
                boot,
                run,
                ok,
                error,
            } => self.agent_done(fencer, inc, boot, *run, ok, error)?,
            Ev::ServiceDone {
                node,
                inc,
                boot,
                action,
                fail,
            } => self.service_done(node, inc, boot, *action, fail)?,
            Ev::PowerOn { node } => {
                let i = self.idx(node);
                self.power_on(i)?;
            }
            Ev::Partition => {
                if !self.faults_on {
                    return Ok(());
                }
                self.random_partition();
                let m = self.profile.partitions.unwrap_or(Duration::from_secs(5));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Partition);
            }
            Ev::Crash => {
                if !self.faults_on {
                    return Ok(());
                }
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                if self.nodes[i].powered {
                    self.crashes += 1;
                    self.power_off(i, "power loss");
                    let d = Duration::from_millis(self.rng.range(500, 8000));
                    let id = self.nodes[i].id;
                    self.at(self.now + d, Ev::PowerOn { node: id });
                }
                let m = self.profile.crashes.unwrap_or(Duration::from_secs(5));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Crash);
            }
            Ev::Pause => {
                if !self.faults_on {
                    return Ok(());
                }
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                if self.nodes[i].stack.is_some() && !self.nodes[i].paused {
                    self.crashes += 1;
                    self.nodes[i].paused = true;
                    let d = Duration::from_millis(self.rng.range(50, 4 * self.profile.token_ms));
                    let name = self.nodes[i].name.clone();
                    self.log(format!("{name} paused for {d} (its services keep running)"));
                    let (id, inc) = (self.nodes[i].id, self.nodes[i].inc);
                    self.at(self.now + d, Ev::Resume { node: id, inc });
                }
                let m = self.profile.pauses.unwrap_or(Duration::from_secs(5));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Pause);
            }
            Ev::Resume { node, inc } => {
                let i = self.idx(node);
                if self.nodes[i].inc == inc {
                    self.resume(i)?;
                }
            }
            Ev::Death => {
                if !self.faults_on {
                    return Ok(());
                }
                let running: Vec<(String, NodeId)> = self
                    .world
                    .procs
                    .iter()
                    .map(|(s, n)| (s.clone(), *n))
                    .collect();
                if !running.is_empty() {
                    let (s, n) = running[self.rng.below(running.len() as u64) as usize].clone();
                    self.world.procs.remove(&s);
                    self.world.dead.insert((s.clone(), n));
                    self.log(format!("{s}'s processes on n{} die", n.0));
                }
                let m = self.profile.deaths.unwrap_or(Duration::from_secs(5));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Death);
            }
            Ev::Relocate => {
                if !self.faults_on {
                    return Ok(());
                }
                self.relocate()?;
                let m = self.profile.relocations.unwrap_or(Duration::from_secs(5));
                let d = self.exp(m);
                self.at(self.now + d, Ev::Relocate);
            }
            Ev::QdiskTimer { node, gen } => {
                let i = self.idx(node);
                if self.nodes[i].qgen != gen || self.nodes[i].paused {
                    return Ok(());
                }
                let inc = self.nodes[i].inc;
                self.qdisk_input(node, inc, |q, t, _, _| q.handle_timeout(t))?;
            }
            Ev::DiskRead { node, inc } => {
                let i = self.idx(node);
                if self.nodes[i].paused {
                    self.at(
                        self.now + Duration::from_millis(50),
                        Ev::DiskRead { node, inc },
                    );
                    return Ok(());
                }
                self.qdisk_input(node, inc, |q, t, w, lost| {
                    if lost {
                        q.handle_read(t, Err("I/O error: no path to the disk".into()));
                    } else {
                        q.handle_read(t, Ok(&w.disk));
                    }
                })?;
            }
            Ev::DiskWrite {
                node,
                inc,
                offset,
                data,
            } => {
                let i = self.idx(node);
                if self.nodes[i].inc != inc || self.nodes[i].qdisk.is_none() {
                    return Ok(()); // the write died with its node
                }
                if self.nodes[i].paused {
                    self.at(
                        self.now + Duration::from_millis(50),
                        Ev::DiskWrite {
                            node,
                            inc,
                            offset,
                            data,
                        },
                    );
                    return Ok(());
                }
                self.qdisk_input(node, inc, |q, t, w, lost| {
                    let o = offset as usize;
                    if lost || o + data.len() > w.disk.len() {
                        q.handle_write_result(t, Err("I/O error: no path to the disk".into()));
                    } else {
                        w.disk[o..o + data.len()].copy_from_slice(&data);
                        q.handle_write_result(t, Ok(()));
                    }
                })?;
            }
            Ev::Heuristic {
                node,
                inc,
                index,
                ok,
            } => {
                self.qdisk_input(node, inc, |q, t, _, _| {
                    q.handle_heuristic_result(t, index, ok)
                })?;
            }
            Ev::DiskLoss => {
                if !self.faults_on {
                    return Ok(());
                }
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                if !self.nodes[i].disk_lost {
                    self.nodes[i].disk_lost = true;
                    let id = self.nodes[i].id;
                    let d = Duration::from_millis(self.rng.range(500, 10000));
                    self.log(format!(
                        "{} loses its path to the quorum disk for {d}",
                        self.nodes[i].name
                    ));
                    self.at(self.now + d, Ev::DiskBack { node: id });
                }
                let m = self.profile.disk_loss.unwrap_or(Duration::from_secs(5));
                let d = self.exp(m);
                self.at(self.now + d, Ev::DiskLoss);
            }
            Ev::DiskBack { node } => {
                let i = self.idx(node);
                if self.nodes[i].disk_lost {
                    self.nodes[i].disk_lost = false;
                    self.log(format!(
                        "{} reaches the quorum disk again",
                        self.nodes[i].name
                    ));
                }
            }
            Ev::Leave => {
                if !self.faults_on {
                    return Ok(());
                }
                self.operator_leave()?;
                let m = self.profile.leaves.unwrap_or(Duration::from_secs(5));
                let d = crate::exp(&mut self.lrng, m);
                self.at(self.now + d, Ev::Leave);
            }
            Ev::Restart { node, inc } => {
                let i = self.idx(node);
                if self.nodes[i].inc == inc {
                    self.start_daemon(i, "daemon started again by an admin")?;
                }
            }
            Ev::Liveness => {
                self.faults_on = false;
                self.blocked.clear();
                for n in self.nodes.iter_mut() {
                    n.disk_lost = false;
                }
                self.log("liveness phase: faults stop, every node gets power".into());
                for i in 0..self.nodes.len() {
                    if !self.nodes[i].powered {
                        self.power_on(i)?;
                    } else if self.nodes[i].stack.is_none() {
                        self.start_daemon(i, "daemon started again by an admin")?;
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
        let name = self.nodes[i].name.clone();
        self.log(format!("{name} resumes"));
        while let Some(h) = self.nodes[i].held.pop_front() {
            self.feed(i, h)?;
        }
        let now = self.now_of(i);
        if let Some(s) = self.nodes[i].stack.as_mut() {
            s.handle_timeout(now);
        }
        self.after(i)?;
        if let Some(q) = self.nodes[i].qdisk.as_mut() {
            q.handle_timeout(now.mono);
        }
        self.after_qdisk(i)
    }

    fn run_until(
        &mut self,
        end: Instant,
        mut stop: impl FnMut(&ClusterSim) -> bool,
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

    /// An operator's repair after the faults: enable what an operator must
    /// (failed or disabled services), as `clusvcadm -d` then `-e` would.
    fn operator_repair(&mut self) -> Result<(), Failure> {
        let Some(i) = (0..self.nodes.len()).find(|i| {
            self.nodes[*i]
                .stack
                .as_ref()
                .is_some_and(|s| s.quorum().is_quorate() && !s.rm().syncing())
        }) else {
            return Ok(());
        };
        let view = self.nodes[i].stack.as_ref().expect("found").rm().view();
        for sv in view.services {
            if matches!(sv.state, rm::State::Failed | rm::State::Disabled) {
                let now = self.now_of(i);
                let s = self.nodes[i].stack.as_mut().expect("found");
                let r1 = s.submit(
                    now,
                    rm::Request::Disable {
                        service: sv.name.clone(),
                    },
                );
                let r2 = s.submit(
                    now,
                    rm::Request::Enable {
                        service: sv.name.clone(),
                        node: None,
                    },
                );
                self.log(format!(
                    "operator: {} was {}; disable {:?}, enable {:?}",
                    sv.name, sv.state, r1, r2
                ));
                self.after(i)?;
            }
        }
        Ok(())
    }

    /// Runs both phases and the final checks.
    pub fn run(mut self) -> Result<Report, Failure> {
        let seed = self.opts.seed;
        self.log(format!(
            "seed {seed} nodes {} profile {:?}",
            self.opts.nodes, self.profile
        ));
        for i in 0..self.nodes.len() {
            let d = Duration::from_micros(self.rng.below(200_000));
            let id = self.nodes[i].id;
            self.at(Instant::ZERO + d, Ev::PowerOn { node: id });
        }
        if self.opts.faults {
            let p = self.profile.clone();
            for (on, ev) in [
                (p.partitions, Ev::Partition),
                (p.crashes, Ev::Crash),
                (p.pauses, Ev::Pause),
                (p.deaths, Ev::Death),
                (p.relocations, Ev::Relocate),
                (p.disk_loss.filter(|_| p.qdisk), Ev::DiskLoss),
            ] {
                if let Some(m) = on {
                    // faults begin once the cluster has had time to form
                    let d = Duration::from_secs(5) + self.exp(m);
                    self.at(Instant::ZERO + d, ev);
                }
            }
            if let Some(m) = p.leaves {
                let d = Duration::from_secs(5) + crate::exp(&mut self.lrng, m);
                self.at(Instant::ZERO + d, Ev::Leave);
            }
        }
        let live_at = Instant::ZERO + self.opts.safety_time;
        self.at(live_at, Ev::Liveness);
        self.run_until(live_at, |_| false)?;
        // Liveness: settle, with one operator repair pass once a quorate
        // ring of everyone exists.
        let bound = live_at + self.opts.liveness_bound;
        let repair_at = live_at + Duration::from_secs(20);
        self.run_until(repair_at, |s| s.settled().is_ok())?;
        if self.settled().is_err() {
            self.operator_repair()?;
            self.run_until(bound, |s| s.settled().is_ok())?;
        }
        if let Err(why) = self.settled() {
            return Err(self.fail(format!(
                "liveness: not settled {} after faults stopped: {why}",
                self.opts.liveness_bound
            )));
        }
        let converge = self.now - live_at;
        Ok(Report {
            seed,
            nodes: self.opts.nodes,
            steps: self.steps,
            starts: self.starts,
            fenced: self.fenced,
            crashes: self.crashes,
            leaves: self.leaves,
            converge,
            trace_hash: self.trace.hash(),
        })
    }
}

/// Runs one seed. The error's `Display` carries the replay command.
pub fn run(opts: ClusterOptions) -> Result<Report, Failure> {
    ClusterSim::new(opts)?.run()
}

/// Runs the same options twice and compares the trace hashes.
pub fn check_determinism(opts: ClusterOptions) -> Result<u64, String> {
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
    /// Completed service starts over all runs.
    pub starts: u64,
    /// Successful fence runs over all runs.
    pub fenced: u64,
    /// Power losses and pauses injected over all runs.
    pub crashes: u64,
    /// Clean leaves completed over all runs.
    pub leaves: u64,
    /// Longest settling time after faults stopped.
    pub worst_converge: Duration,
}

/// Runs `count` seeds from `first`; stops at the first failure.
pub fn run_seeds(first: u64, count: u64, nodes: Option<usize>) -> Result<Summary, Box<Failure>> {
    let mut s = Summary::default();
    for seed in first..first.saturating_add(count) {
        let r = run(ClusterOptions::from_seed(seed, nodes)).map_err(Box::new)?;
        s.runs += 1;
        s.steps += r.steps;
        s.starts += r.starts;
        s.fenced += r.fenced;
        s.crashes += r.crashes;
        s.leaves += r.leaves;
        s.worst_converge = s.worst_converge.max(r.converge);
    }
    Ok(s)
}

/// Runs one seed and returns its trace tail and profile (for debugging a seed).
pub fn debug_profile(seed: u64, nodes: Option<usize>) -> String {
    match ClusterSim::new(ClusterOptions::from_seed(seed, nodes)) {
        Ok(s) => format!("{:?}\n{}", s.profile, s.conf_text),
        Err(f) => f.to_string(),
    }
}
