//! Randomized simulation of the resource manager.
//!
//! K replicas (one per node) are fed one shared ordered stream of inputs, as
//! totem would deliver them: crashes, pauses and isolations detected after a
//! token timeout, fencing after a random delay, reboots and rejoins (with state
//! transfer by snapshot), quorum flaps, operator requests, clean leaves, and
//! simulated owner processes that start, stop, migrate and fail with random
//! latency. Isolated nodes (one, or two at once when K=5) form their own
//! inquorate partition with its own ordered stream until they are fenced. Ground truth is the set of simulated processes, not what replicas
//! believe.
//!
//! Checked after every step: replicas of the same partition have identical
//! views and give identical answers; a service never runs on two nodes;
//! nothing is started or migrated by an inquorate node; a start never happens
//! while the previous owner (paused, isolated or not yet fenced) still runs it;
//! a node leaving cleanly runs nothing. After faults end and the operator
//! undoes what operators did (unfreeze, disable failed, re-enable), every
//! service whose domain has a live node runs, exactly where its owner says.
//!
//! `RM_SIM_SEEDS=N` runs N seeds (default 100), `RM_SIM_SEED=S` one seed,
//! `RM_SIM_K=K` sets the cluster size (default: 3 and 5 alternating).

use std::collections::{BTreeMap, BTreeSet};

use base::{DetRng, Duration, Instant, NodeId};
use rm::{
    Action, ClusterSpec, DomainNode, DomainSpec, Input, MigrateMode, NodeSpec, Outcome, Recovery,
    Report, Request, ResourceSpec, Scheduler, ServiceKind, ServiceSpec, Snapshot, State, View,
};

const MS: u64 = 1_000_000;
const FAULT_PHASE: u64 = 120_000; // ms
const SETTLE: u64 = 90_000; // ms after faults end

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// In the majority partition.
    Up,
    /// Alive, cut off: its own inquorate partition.
    Isolated,
    /// Frozen (e.g. a stalled VM or SIGSTOP): no messages, processes keep running.
    Paused,
    /// Dead; its processes died with it.
    Crashed,
    /// Fenced or cleanly left; rebooting.
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Majority,
    /// An inquorate minority partition (one or more isolated nodes).
    Part(u64),
}

#[derive(Debug)]
enum Ev {
    Deliver {
        group: Group,
        from: Option<(NodeId, u32)>,
        input: Input,
    },
    OpDone {
        node: NodeId,
        inc: u32,
        action: Action,
    },
    Fault,
    Detect {
        node: NodeId,
        inc: u32,
    },
    Fence {
        node: NodeId,
        inc: u32,
    },
    Reboot {
        node: NodeId,
    },
    FlapEnd,
    Heal,
    Admin,
    Tick,
    PartForm {
        part: u64,
    },
}

struct SimNode {
    life: Life,
    inc: u32,
    replica: Option<Scheduler>,
    leaving: bool,
    /// Reports of an isolated node sent before its own partition formed:
    /// totem delivers nothing of it until the new ring exists.
    held: Vec<Input>,
    alone_live: bool,
    part: u64,
}

struct Sim {
    seed: u64,
    k: u32,
    rng: DetRng,
    now: Instant,
    seq: u64,
    q: BTreeMap<(Instant, u64), Ev>,
    nodes: BTreeMap<NodeId, SimNode>,
    maj: BTreeSet<NodeId>,
    q_sent: bool,
    flap: bool,
    stream_t: Instant,
    /// Ground truth: service -> node -> healthy.
    procs: BTreeMap<String, BTreeMap<NodeId, bool>>,
    /// Incoming migration instances (QEMU `-incoming`): service -> target.
    /// A stop on the target kills it, and a migration completes only into it.
    incoming: BTreeMap<String, NodeId>,
    /// The node stack runs one operation per service at a time, in the order
    /// decided: (node, service) -> (incarnation, operations waiting).
    queues: BTreeMap<(NodeId, String), (u32, std::collections::VecDeque<Action>)>,
    faults: bool,
    op_stopped: BTreeSet<String>,
    tick_at: Option<Instant>,
    next_part: u64,
    log: Vec<String>,
    stats: Stats,
}

#[derive(Default, Debug, Clone, PartialEq, Eq)]
struct Stats {
    deliveries: u64,
    starts: u64,
    faults: u64,
    fences: u64,
    requests_ok: u64,
    requests_refused: u64,
    migrations: u64,
    partitions: u64,
    multi_node_partitions: u64,
}

fn n(i: u32) -> NodeId {
    NodeId(i)
}

fn dom(
    name: &str,
    ordered: bool,
    restricted: bool,
    nofailback: bool,
    m: &[(u32, u32)],
) -> DomainSpec {
    DomainSpec {
        name: name.into(),
        ordered,
        restricted,
        nofailback,
        nodes: m
            .iter()
            .map(|(id, p)| DomainNode {
                node: n(*id),
                priority: *p,
            })
            .collect(),
    }
}

fn config(k: u32) -> ClusterSpec {
    let fast = |mut s: ServiceSpec| {
        s.status_interval = Duration::from_secs(2);
        s.failure_expire_time = Duration::from_secs(10);
        s
    };
    let mut web = ServiceSpec::new("web", ServiceKind::Service);
    web.domain = Some(dom(
        "web_dom",
        true,
        false,
        false,
        &[(1, 1), (2, 2), (3, 3)],
    ));
    web.max_restarts = 2;
    web.restart_expire_time = Duration::from_secs(20);
    web.resources = vec![
        ResourceSpec::new("script", "/etc/init.d/httpd"),
        ResourceSpec::new("ip", "10.0.0.10"),
    ];
    let mut db = ServiceSpec::new("db", ServiceKind::Service);
    db.domain = Some(dom("db_dom", false, true, false, &[(2, 1), (3, 1)]));
    db.recovery = Recovery::Relocate;
    let mut app = ServiceSpec::new("app", ServiceKind::Service);
    app.depend = Some("db".into());
    app.recovery = Recovery::RestartDisable;
    let mut guest = ServiceSpec::new("guest", ServiceKind::Vm);
    guest.domain = Some(dom("vm_dom", true, false, true, &[(3, 1), (1, 2)]));
    guest.migrate = Some(MigrateMode::Live);
    let mut excl = ServiceSpec::new("excl", ServiceKind::Service);
    excl.exclusive = true;
    ClusterSpec {
        config_version: 1,
        startup_fencing: false,
        two_node: false,
        nodes: (1..=k)
            .map(|i| NodeSpec {
                id: n(i),
                name: format!("an-node{i:02}"),
            })
            .collect(),
        services: vec![fast(web), fast(db), fast(app), fast(guest), fast(excl)],
    }
}

type R = Result<(), String>;

impl Sim {
    fn new(seed: u64, k: u32) -> Sim {
        let cfg = config(k);
        let mut nodes = BTreeMap::new();
        for i in 1..=k {
            nodes.insert(
                n(i),
                SimNode {
                    life: Life::Up,
                    inc: 0,
                    replica: Some(Scheduler::new(n(i), cfg.clone()).expect("valid config")),
                    leaving: false,
                    held: Vec::new(),
                    alone_live: false,
                    part: 0,
                },
            );
        }
        let mut s = Sim {
            seed,
            k,
            rng: DetRng::new(seed),
            now: Instant(0),
            seq: 0,
            q: BTreeMap::new(),
            nodes,
            maj: BTreeSet::new(),
            q_sent: false,
            flap: false,
            stream_t: Instant(0),
            procs: BTreeMap::new(),
            incoming: BTreeMap::new(),
            queues: BTreeMap::new(),
            faults: true,
            op_stopped: BTreeSet::new(),
            tick_at: None,
            next_part: 1,
            log: Vec::new(),
            stats: Stats::default(),
        };
        s.maj = (1..=k).map(n).collect();
        s.send_membership();
        s.at(1000, Ev::Fault);
        s.at(FAULT_PHASE, Ev::Heal);
        s
    }

    fn note(&mut self, msg: String) {
        if self.log.len() >= 400 {
            self.log.remove(0);
        }
        self.log
            .push(format!("{} {msg}", rm::fmt_instant(self.now)));
    }

    fn fail(&self, msg: String) -> R {
        let keep = std::env::var("RM_SIM_TAIL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        let tail = self.log[self.log.len().saturating_sub(keep)..].join("\n");
        Err(format!(
            "seed {} (K={}): {msg}\n--- last events ---\n{tail}",
            self.seed, self.k
        ))
    }

    fn at(&mut self, after_ms: u64, ev: Ev) {
        self.at_t(self.now + Duration::from_millis(after_ms), ev);
    }

    fn at_t(&mut self, t: Instant, ev: Ev) {
        self.seq += 1;
        self.q.insert((t, self.seq), ev);
    }

    /// Ordered delivery: FIFO after a small network latency.
    fn send(&mut self, group: Group, from: Option<(NodeId, u32)>, input: Input) {
        let lat = Duration::from_millis(self.rng.range(1, 20));
        let t = std::cmp::max(self.stream_t, self.now + lat);
        self.stream_t = t;
        self.at_t(t, Ev::Deliver { group, from, input });
    }

    fn majority_quorate(&self) -> bool {
        self.maj.len() as u32 * 2 > self.k && !self.flap
    }

    fn send_membership(&mut self) {
        let members: Vec<NodeId> = self.maj.iter().copied().collect();
        let quorate = self.majority_quorate();
        self.q_sent = quorate;
        self.send(
            Group::Majority,
            None,
            Input::Membership { members, quorate },
        );
    }

    fn send_quorum(&mut self) {
        let q = self.majority_quorate();
        if q != self.q_sent {
            self.q_sent = q;
            self.send(Group::Majority, None, Input::Quorum { quorate: q });
        }
    }

    fn any_replica(&self) -> Option<&Scheduler> {
        self.nodes
            .iter()
            .filter(|(id, sn)| sn.life == Life::Up && self.maj.contains(id))
            .find_map(|(_, sn)| sn.replica.as_ref())
    }

    fn majority_view(&self) -> Option<View> {
        self.any_replica().map(|r| r.view())
    }

    fn run(&mut self) -> R {
        let end = Instant((FAULT_PHASE + SETTLE) * MS);
        loop {
            // Earliest of: queued event, a live replica's local timer.
            let qt = self.q.keys().next().map(|(t, _)| *t);
            let timer = self
                .nodes
                .iter()
                .filter(|(_, sn)| matches!(sn.life, Life::Up | Life::Isolated))
                .filter_map(|(id, sn)| {
                    sn.replica
                        .as_ref()
                        .and_then(|r| r.poll_deadline())
                        .map(|t| (t, *id))
                })
                .min();
            let next = match (qt, timer) {
                (Some(a), Some((b, _))) => a.min(b),
                (Some(a), None) => a,
                (None, Some((b, _))) => b,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = next;
            if let Some((t, id)) = timer {
                if t == next && !matches!(qt, Some(q) if q <= t) {
                    let acts = {
                        let r = self
                            .nodes
                            .get_mut(&id)
                            .and_then(|sn| sn.replica.as_mut())
                            .expect("replica");
                        r.handle_timeout(t);
                        r.drain_actions()
                    };
                    for a in acts {
                        self.execute(id, a)?;
                    }
                    continue;
                }
            }
            let (key, ev) = self.q.pop_first().expect("event");
            debug_assert_eq!(key.0, next);
            self.event(ev)?;
        }
        self.final_check()
    }

    fn event(&mut self, ev: Ev) -> R {
        match ev {
            Ev::Deliver { group, from, input } => self.deliver(group, from, input),
            Ev::OpDone { node, inc, action } => self.op_done(node, inc, action),
            Ev::Fault => {
                if self.faults {
                    self.fault()?;
                    let d = self.rng.range(500, 3000);
                    self.at(d, Ev::Fault);
                }
                Ok(())
            }
            Ev::Detect { node, inc } => {
                let sn = &self.nodes[&node];
                if sn.inc != inc
                    || !matches!(sn.life, Life::Crashed | Life::Paused | Life::Isolated)
                {
                    return Ok(());
                }
                self.note(format!("majority detects loss of {node:?}"));
                self.maj.remove(&node);
                self.send_membership();
                let d = self.rng.range(200, 3000);
                self.at(d, Ev::Fence { node, inc });
                Ok(())
            }
            Ev::PartForm { part } => {
                // The cut-off nodes form their own (inquorate) ring.
                let members = self.part_members(part);
                if members.is_empty() {
                    return Ok(());
                }
                self.note(format!("partition {part} forms: {members:?}"));
                self.stats.partitions += 1;
                if members.len() > 1 {
                    self.stats.multi_node_partitions += 1;
                }
                let g = Group::Part(part);
                self.send(
                    g,
                    None,
                    Input::Membership {
                        members: members.clone(),
                        quorate: false,
                    },
                );
                for m in members {
                    let sn = self.nodes.get_mut(&m).expect("node");
                    sn.alone_live = true;
                    let inc = sn.inc;
                    let held = std::mem::take(&mut sn.held);
                    for i in held {
                        self.send(g, Some((m, inc)), i);
                    }
                }
                Ok(())
            }
            Ev::Fence { node, inc } => {
                if self.nodes[&node].inc != inc {
                    return Ok(());
                }
                let part = (self.nodes[&node].life == Life::Isolated
                    && self.nodes[&node].alone_live)
                    .then_some(self.nodes[&node].part);
                if !self.majority_quorate() {
                    // fenced only acts with quorum; try again later
                    self.at(1000, Ev::Fence { node, inc });
                    return Ok(());
                }
                self.stats.fences += 1;
                self.note(format!("FENCE {node:?} (power off): its processes die"));
                self.kill(node);
                let sn = self.nodes.get_mut(&node).expect("node");
                sn.life = Life::Down;
                sn.inc += 1;
                sn.replica = None;
                sn.leaving = false;
                if let Some(p) = part {
                    let rest = self.part_members(p);
                    if !rest.is_empty() {
                        self.send(
                            Group::Part(p),
                            None,
                            Input::Membership {
                                members: rest,
                                quorate: false,
                            },
                        );
                    }
                }
                self.send(
                    Group::Majority,
                    None,
                    Input::Fenced {
                        victim: node,
                        method: "sim-power".into(),
                    },
                );
                let d = if self.faults {
                    self.rng.range(1000, 8000)
                } else {
                    self.rng.range(500, 2000)
                };
                self.at(d, Ev::Reboot { node });
                Ok(())
            }
            Ev::Reboot { node } => {
                let sn = self.nodes.get_mut(&node).expect("node");
                if sn.life != Life::Down {
                    return Ok(());
                }
                sn.life = Life::Up;
                sn.inc += 1;
                sn.replica = None; // created from a snapshot when the membership arrives
                self.note(format!("{node:?} rebooted, joining"));
                self.maj.insert(node);
                self.send_membership();
                Ok(())
            }
            Ev::FlapEnd => {
                self.flap = false;
                self.note("quorum flap ends".into());
                self.send_quorum();
                Ok(())
            }
            Ev::Heal => {
                self.note("=== faults end ===".into());
                self.faults = false;
                self.flap = false;
                self.send_quorum();
                let downs: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, sn)| sn.life == Life::Down)
                    .map(|(id, _)| *id)
                    .collect();
                for id in downs {
                    if !self
                        .q
                        .values()
                        .any(|e| matches!(e, Ev::Reboot { node } if *node == id))
                    {
                        self.at(100, Ev::Reboot { node: id });
                    }
                }
                self.at(2000, Ev::Admin);
                Ok(())
            }
            Ev::Admin => {
                self.admin();
                if self.now < Instant((FAULT_PHASE + SETTLE / 2) * MS) {
                    self.at(3000, Ev::Admin);
                }
                Ok(())
            }
            Ev::Tick => {
                self.tick_at = None;
                self.send(Group::Majority, None, Input::Tick);
                Ok(())
            }
        }
    }

    fn part_members(&self, part: u64) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, sn)| sn.life == Life::Isolated && sn.part == part)
            .map(|(id, _)| *id)
            .collect()
    }

    fn kill(&mut self, node: NodeId) {
        for m in self.procs.values_mut() {
            m.remove(&node);
        }
        self.incoming.retain(|_, t| *t != node);
    }

    fn pick_up_node(&mut self) -> Option<NodeId> {
        let ups: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, sn)| sn.life == Life::Up && self.maj.contains(id) && sn.replica.is_some())
            .map(|(id, _)| *id)
            .collect();
        if ups.is_empty() {
            return None;
        }
        Some(ups[self.rng.below(ups.len() as u64) as usize])
    }

    fn fault(&mut self) -> R {
        self.stats.faults += 1;
        let not_up = self.nodes.values().filter(|sn| sn.life != Life::Up).count() as u32;
        let can_lose = (not_up + 1) * 2 < self.k; // the majority stays quorate
        let roll = self.rng.below(100);
        let services = ["web", "db", "app", "guest", "excl"];
        match roll {
            0..=9 if can_lose => {
                let Some(x) = self.pick_up_node() else {
                    return Ok(());
                };
                self.note(format!("CRASH {x:?}"));
                self.kill(x);
                let sn = self.nodes.get_mut(&x).expect("node");
                sn.life = Life::Crashed;
                sn.replica = None;
                let inc = sn.inc;
                self.at(1000, Ev::Detect { node: x, inc });
            }
            10..=15 if can_lose => {
                let Some(x) = self.pick_up_node() else {
                    return Ok(());
                };
                self.note(format!("PAUSE {x:?} (processes keep running)"));
                let sn = self.nodes.get_mut(&x).expect("node");
                sn.life = Life::Paused;
                let inc = sn.inc;
                self.at(1000, Ev::Detect { node: x, inc });
            }
            16..=21 if can_lose => {
                // One node, or (K=5) sometimes two nodes cut off together.
                let size = if (not_up + 2) * 2 < self.k && self.rng.chance(0.5) {
                    2
                } else {
                    1
                };
                let part = self.next_part;
                self.next_part += 1;
                for _ in 0..size {
                    let Some(x) = self.pick_up_node() else {
                        break;
                    };
                    if self.nodes[&x].life != Life::Up {
                        continue;
                    }
                    self.note(format!("ISOLATE {x:?} into partition {part}"));
                    let sn = self.nodes.get_mut(&x).expect("node");
                    sn.life = Life::Isolated;
                    sn.alone_live = false;
                    sn.held.clear();
                    sn.part = part;
                    let inc = sn.inc;
                    self.at(1000, Ev::Detect { node: x, inc });
                }
                self.at(1000, Ev::PartForm { part });
            }
            22..=25 if !self.flap => {
                self.note("QUORUM FLAP".into());
                self.flap = true;
                self.send_quorum();
                let d = self.rng.range(500, 5000);
                self.at(d, Ev::FlapEnd);
            }
            26..=29 if can_lose => {
                let Some(x) = self.pick_up_node() else {
                    return Ok(());
                };
                if self.nodes[&x].leaving {
                    return Ok(());
                }
                self.note(format!("CLEAN LEAVE requested by {x:?}"));
                self.nodes.get_mut(&x).expect("node").leaving = true;
                let inc = self.nodes[&x].inc;
                self.send(Group::Majority, Some((x, inc)), Input::Leave { node: x });
            }
            30..=54 => {
                // a process fails (its status check will notice)
                let running: Vec<(String, NodeId)> = self
                    .procs
                    .iter()
                    .flat_map(|(s, m)| m.keys().map(move |nd| (s.clone(), *nd)))
                    .collect();
                if !running.is_empty() {
                    let (s, nd) = running[self.rng.below(running.len() as u64) as usize].clone();
                    self.note(format!("PROCESS FAILURE {s} on {nd:?}"));
                    if let Some(h) = self.procs.get_mut(&s).and_then(|m| m.get_mut(&nd)) {
                        *h = false;
                    }
                }
            }
            _ => {
                let Some(from) = self.pick_up_node() else {
                    return Ok(());
                };
                let s = services[self.rng.below(services.len() as u64) as usize].to_string();
                let target = if self.rng.chance(0.5) {
                    Some(n(1 + self.rng.below(u64::from(self.k)) as u32))
                } else {
                    None
                };
                let req = match self.rng.below(16) {
                    0..=3 => Request::Enable {
                        service: s,
                        node: target,
                    },
                    4 => Request::Disable { service: s },
                    5..=7 => Request::Relocate {
                        service: s,
                        node: target,
                    },
                    8..=9 => Request::Restart { service: s },
                    10 => Request::Stop { service: s },
                    11 => Request::Freeze { service: s },
                    12..=13 => Request::Unfreeze { service: s },
                    _ => Request::Migrate {
                        service: s,
                        node: target.unwrap_or(n(1)),
                    },
                };
                let inc = self.nodes[&from].inc;
                self.send(
                    Group::Majority,
                    Some((from, inc)),
                    Input::Request { from, request: req },
                );
            }
        }
        Ok(())
    }

    /// After faults: undo what operators (and policies) left stopped on purpose.
    fn admin(&mut self) {
        let Some(v) = self.majority_view() else {
            return;
        };
        let Some(from) = self.pick_up_node() else {
            return;
        };
        let inc = self.nodes[&from].inc;
        for s in &v.services {
            let name = s.name.clone();
            let req = if s.frozen {
                Request::Unfreeze { service: name }
            } else if s.state == State::Failed {
                Request::Disable { service: name }
            } else if s.state == State::Disabled
                || (s.state == State::Stopped && self.op_stopped.contains(&s.name))
            {
                Request::Enable {
                    service: name,
                    node: None,
                }
            } else {
                continue;
            };
            self.note(format!("admin: {req:?}"));
            self.send(
                Group::Majority,
                Some((from, inc)),
                Input::Request { from, request: req },
            );
        }
    }

    fn deliver(&mut self, group: Group, from: Option<(NodeId, u32)>, input: Input) -> R {
        self.stats.deliveries += 1;
        // Messages from a node that is no longer in the sender's partition are not delivered.
        if let Some((f, inc)) = from {
            let sn = &self.nodes[&f];
            let ok = sn.inc == inc
                && match group {
                    Group::Majority => sn.life == Life::Up,
                    Group::Part(p) => sn.life == Life::Isolated && sn.part == p,
                };
            if !ok {
                return Ok(());
            }
        }
        let targets: Vec<NodeId> = match group {
            Group::Majority => self
                .nodes
                .iter()
                .filter(|(_, sn)| sn.life == Life::Up)
                .map(|(id, _)| *id)
                .collect(),
            Group::Part(p) => self.part_members(p),
        };
        if let Input::Membership { members, .. } = &input {
            // State transfer: joiners get a member's snapshot at this point of the stream.
            if group == Group::Majority {
                let snap = targets
                    .iter()
                    .filter(|id| !members.is_empty() && self.nodes[id].replica.is_some())
                    .find_map(|id| self.nodes[id].replica.as_ref().map(|r| r.snapshot()));
                for id in &targets {
                    if self.nodes[id].replica.is_none() && members.contains(id) {
                        let snap = match &snap {
                            Some(s) => s.clone(),
                            None => {
                                // Every member left (cleanly, or lost): a
                                // cold start from the configuration, as a
                                // node daemon boots with nobody to copy from.
                                self.note(format!("{id:?} cold-starts the resource manager"));
                                // With startup fencing: a node still away
                                // may run services from before.
                                let mut cfg = config(self.k);
                                cfg.startup_fencing = true;
                                self.nodes.get_mut(id).expect("node").replica =
                                    Some(Scheduler::new(*id, cfg).expect("valid config"));
                                continue;
                            }
                        };
                        // Through JSON, as a real state transfer would go over the wire.
                        let wire = serde_json::to_vec(&snap).expect("snapshot serializes");
                        let snap: Snapshot =
                            serde_json::from_slice(&wire).expect("snapshot parses");
                        self.nodes.get_mut(id).expect("node").replica =
                            Some(Scheduler::from_snapshot(*id, snap, self.now));
                    }
                }
            }
        }
        self.note(format!("deliver {group:?}: {}", short(&input)));
        let now = self.now;
        let mut results = Vec::new();
        let mut views: Vec<(NodeId, View)> = Vec::new();
        let mut actions = Vec::new();
        for id in &targets {
            let Some(r) = self.nodes.get_mut(id).and_then(|sn| sn.replica.as_mut()) else {
                continue;
            };
            if group == Group::Majority
                && !self.maj.contains(id)
                && !matches!(input, Input::Membership { .. })
            {
                // a rebooted node waits for its membership to arrive
                continue;
            }
            results.push((*id, r.handle(now, input.clone())));
            views.push((*id, r.view()));
            for a in r.drain_actions() {
                actions.push((*id, a));
            }
            while r.poll_event().is_some() {}
        }
        for w in results.windows(2) {
            if w[0].1 != w[1].1 {
                return self.fail(format!(
                    "replicas answered differently: {:?} vs {:?}",
                    w[0], w[1]
                ));
            }
        }
        for w in views.windows(2) {
            if w[0].1 != w[1].1 {
                return self.fail(format!(
                    "replicas {:?} and {:?} disagree:\n{:#?}\nvs\n{:#?}",
                    w[0].0, w[1].0, w[0].1, w[1].1
                ));
            }
        }
        if let (Input::Request { request, .. }, Some((_, res))) = (&input, results.first()) {
            match res {
                Ok(()) => {
                    self.stats.requests_ok += 1;
                    match request {
                        Request::Stop { service } => {
                            self.op_stopped.insert(service.clone());
                        }
                        Request::Enable { service, .. } | Request::Relocate { service, .. } => {
                            self.op_stopped.remove(service);
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    self.stats.requests_refused += 1;
                    self.note(format!("  refused: {e}"));
                }
            }
        }
        if matches!(input, Input::Membership { .. }) && group == Group::Majority {
            self.op_stopped.clear(); // a transition re-evaluates operator stops
        }
        for (id, a) in actions {
            self.execute(id, a)?;
        }
        if group == Group::Majority {
            self.after_majority_delivery()?;
        }
        Ok(())
    }

    fn after_majority_delivery(&mut self) -> R {
        // Clean leaves: a leaving node departs once it owns nothing.
        let leaving: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, sn)| sn.leaving && sn.life == Life::Up && self.maj.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for x in leaving {
            let ready = self.nodes[&x]
                .replica
                .as_ref()
                .is_some_and(|r| r.ready_to_leave(x));
            if ready {
                let runs: Vec<String> = self
                    .procs
                    .iter()
                    .filter(|(_, m)| m.contains_key(&x))
                    .map(|(s, _)| s.clone())
                    .collect();
                self.note(format!("{x:?} leaves cleanly (runs {runs:?})"));
                let sn = self.nodes.get_mut(&x).expect("node");
                sn.life = Life::Down;
                sn.inc += 1;
                sn.replica = None;
                sn.leaving = false;
                self.maj.remove(&x);
                if !runs.is_empty() {
                    return self.fail(format!(
                        "{x:?} left cleanly (unfenced) while running {runs:?}"
                    ));
                }
                self.send_membership();
                let d = self.rng.range(1000, 6000);
                self.at(d, Ev::Reboot { node: x });
            }
        }
        // Replicated recheck timer: the lowest member sends a Tick when due.
        if let Some(due) = self.any_replica().and_then(|r| r.recheck_due()) {
            if !matches!(self.tick_at, Some(t) if t <= due) {
                self.tick_at = Some(due);
                let t = due.max(self.now);
                self.at_t(t, Ev::Tick);
            }
        }
        Ok(())
    }

    fn execute(&mut self, node: NodeId, a: Action) -> R {
        if !matches!(a, Action::StatusCheck { .. }) {
            let inc = self.nodes[&node].inc;
            let key = (node, a.service().to_string());
            match self.queues.get_mut(&key) {
                Some((i, q)) if *i == inc => {
                    q.push_back(a);
                    return Ok(());
                }
                _ => {
                    self.queues.insert(key, (inc, Default::default()));
                }
            }
        }
        self.execute_now(node, a)
    }

    fn execute_now(&mut self, node: NodeId, a: Action) -> R {
        let sn = &self.nodes[&node];
        let inc = sn.inc;
        let quorate = sn.replica.as_ref().is_some_and(|r| r.quorate());
        match &a {
            Action::StartService { service, .. } => {
                if !quorate {
                    return self.fail(format!("inquorate {node:?} was told to start {service}"));
                }
                let elsewhere: Vec<NodeId> = self
                    .procs
                    .get(service)
                    .map(|m| m.keys().copied().collect())
                    .unwrap_or_default();
                if !elsewhere.is_empty() {
                    return self.fail(format!(
                        "start of {service} on {node:?} while it still runs on {elsewhere:?} (previous owner not stopped or fenced)"
                    ));
                }
                self.stats.starts += 1;
                self.procs
                    .entry(service.clone())
                    .or_default()
                    .insert(node, false);
                let d = self.rng.range(50, 600);
                self.at(
                    d,
                    Ev::OpDone {
                        node,
                        inc,
                        action: a,
                    },
                );
            }
            Action::StopService { .. } => {
                let d = self.rng.range(20, 400);
                self.at(
                    d,
                    Ev::OpDone {
                        node,
                        inc,
                        action: a,
                    },
                );
            }
            Action::Migrate { service, .. } => {
                if !quorate {
                    return self.fail(format!("inquorate {node:?} was told to migrate {service}"));
                }
                if let Action::Migrate { to, .. } = &a {
                    self.incoming.insert(service.clone(), *to);
                }
                let d = self.rng.range(200, 1500);
                self.at(
                    d,
                    Ev::OpDone {
                        node,
                        inc,
                        action: a,
                    },
                );
            }
            Action::ConfirmIncoming { .. } | Action::FinishMigration { .. } => {
                let d = self.rng.range(5, 200);
                self.at(
                    d,
                    Ev::OpDone {
                        node,
                        inc,
                        action: a,
                    },
                );
            }
            Action::StatusCheck { .. } => {
                let d = self.rng.range(5, 50);
                self.at(
                    d,
                    Ev::OpDone {
                        node,
                        inc,
                        action: a,
                    },
                );
            }
        }
        Ok(())
    }

    fn op_done(&mut self, node: NodeId, inc: u32, a: Action) -> R {
        let key = (node, a.service().to_string());
        let serial = !matches!(a, Action::StatusCheck { .. });
        self.op_done_inner(node, inc, a)?;
        if serial {
            loop {
                let next = match self.queues.get_mut(&key) {
                    Some((i, q)) if *i == inc => q.pop_front(),
                    _ => return Ok(()),
                };
                let Some(a) = next.filter(|_| self.nodes[&node].inc == inc) else {
                    self.queues.remove(&key);
                    return Ok(());
                };
                let quorate = self.nodes[&node]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.quorate());
                let refused = match &a {
                    Action::StartService { service, op, .. } => {
                        Some((service.clone(), *op, Outcome::StartFailed))
                    }
                    Action::Migrate { service, op, .. } => {
                        Some((service.clone(), *op, Outcome::MigrateFailed))
                    }
                    _ => None,
                };
                match refused {
                    // As the node stack does: a queued start or migration that
                    // reaches the front without quorum is reported failed.
                    Some((service, op, outcome)) if !quorate => {
                        self.publish(
                            node,
                            inc,
                            Report {
                                node,
                                service,
                                op,
                                outcome,
                            },
                        );
                    }
                    _ => return self.execute_now(node, a),
                }
            }
        }
        Ok(())
    }

    fn op_done_inner(&mut self, node: NodeId, inc: u32, a: Action) -> R {
        let sn = &self.nodes[&node];
        if sn.inc != inc || !matches!(sn.life, Life::Up | Life::Isolated) {
            return Ok(()); // crashed, paused or fenced meanwhile: the op never finishes
        }
        let f = if self.faults { 1.0 } else { 0.0 };
        let (service, op, outcome) = match &a {
            Action::StartService { service, op, .. } => {
                let failed = self.rng.chance(0.08 * f);
                if !failed {
                    if let Some(h) = self.procs.get_mut(service).and_then(|m| m.get_mut(&node)) {
                        *h = true;
                    }
                }
                (
                    service.clone(),
                    *op,
                    if failed {
                        Outcome::StartFailed
                    } else {
                        Outcome::StartOk
                    },
                )
            }
            Action::StopService { service, op, .. } => {
                let failed = self.rng.chance(0.02 * f);
                if !failed {
                    if let Some(m) = self.procs.get_mut(service) {
                        m.remove(&node);
                    }
                    if self.incoming.get(service) == Some(&node) {
                        self.incoming.remove(service);
                    }
                }
                (
                    service.clone(),
                    *op,
                    if failed {
                        Outcome::StopFailed
                    } else {
                        Outcome::StopOk
                    },
                )
            }
            Action::Migrate {
                service, op, to, ..
            } => {
                let tgt_ok =
                    self.nodes[to].life == Life::Up && self.incoming.remove(service) == Some(*to);
                let failed = !tgt_ok || self.rng.chance(0.1 * f);
                if !failed {
                    let m = self.procs.entry(service.clone()).or_default();
                    let h = m.remove(&node).unwrap_or(false);
                    if m.contains_key(to) {
                        return self.fail(format!(
                            "migration of {service} to {to:?} where it already runs"
                        ));
                    }
                    m.insert(*to, h);
                    self.stats.migrations += 1;
                }
                (
                    service.clone(),
                    *op,
                    if failed {
                        Outcome::MigrateFailed
                    } else {
                        Outcome::MigrateOk
                    },
                )
            }
            Action::ConfirmIncoming { service, op, .. } => {
                // The guest arrived here with the source's MigrateOk; it may
                // still fail to run (a broken target): then it stays here
                // until the stop the scheduler sends.
                let ok = self.runs_on(service, node) && !self.rng.chance(0.1 * f);
                (
                    service.clone(),
                    *op,
                    if ok {
                        Outcome::IncomingRunning
                    } else {
                        Outcome::IncomingFailed
                    },
                )
            }
            Action::FinishMigration { service, op, .. } => {
                // The source's handed-over copy runs nothing.
                if self.runs_on(service, node) {
                    return self.fail(format!(
                        "FinishMigration of {service} on {node:?}, where it runs"
                    ));
                }
                let failed = self.rng.chance(0.02 * f);
                (
                    service.clone(),
                    *op,
                    if failed {
                        Outcome::StopFailed
                    } else {
                        Outcome::StopOk
                    },
                )
            }
            Action::StatusCheck { service, op, .. } => {
                let healthy = self
                    .procs
                    .get(service)
                    .and_then(|m| m.get(&node))
                    .copied()
                    .unwrap_or(false);
                if healthy {
                    return Ok(());
                }
                (service.clone(), *op, Outcome::StatusFailed)
            }
        };
        self.publish(
            node,
            inc,
            Report {
                node,
                service,
                op,
                outcome,
            },
        );
        self.check_single()?;
        Ok(())
    }

    /// Send an operation's report the way the node's totem would.
    fn publish(&mut self, node: NodeId, inc: u32, report: Report) {
        let report = Input::Result(report);
        let sn = self.nodes.get_mut(&node).expect("node");
        if sn.life == Life::Up {
            self.send(Group::Majority, Some((node, inc)), report);
        } else if sn.alone_live {
            let g = Group::Part(sn.part);
            self.send(g, Some((node, inc)), report);
        } else {
            sn.held.push(report);
        }
    }

    /// Whether `service` has a process (healthy or not) on `node`.
    fn runs_on(&self, service: &str, node: NodeId) -> bool {
        self.procs
            .get(service)
            .is_some_and(|m| m.contains_key(&node))
    }

    fn check_single(&self) -> R {
        for (s, m) in &self.procs {
            if m.len() > 1 {
                return self.fail(format!(
                    "{s} runs on {} nodes at once: {:?}",
                    m.len(),
                    m.keys().collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }

    fn final_check(&mut self) -> R {
        self.check_single()?;
        for (id, sn) in &self.nodes {
            if sn.life != Life::Up || !self.maj.contains(id) {
                return self.fail(format!(
                    "{id:?} is not back after the faults ({:?})",
                    sn.life
                ));
            }
        }
        let Some(v) = self.majority_view() else {
            return self.fail("no replica".into());
        };
        if !v.quorate {
            return self.fail("not quorate after faults".into());
        }
        if let Some(m) = v.members.iter().find(|m| m.fence_pending || m.leaving) {
            return self.fail(format!("{} still owes a fence or a leave: {m:?}", m.name));
        }
        let owner_of = |name: &str| {
            v.services.iter().find(|s| s.name == name).and_then(|s| {
                if s.state == State::Started {
                    s.owner
                } else {
                    None
                }
            })
        };
        let cfg = config(self.k);
        for s in &v.services {
            let procs: Vec<NodeId> = self
                .procs
                .get(&s.name)
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default();
            if s.state == State::Started {
                let healthy = self
                    .procs
                    .get(&s.name)
                    .and_then(|m| s.owner.and_then(|o| m.get(&o)))
                    .copied();
                if procs != s.owner.into_iter().collect::<Vec<_>>() || healthy != Some(true) {
                    return self.fail(format!(
                        "{} is started on {:?} but processes are {:?} (healthy {:?})",
                        s.name, s.owner, procs, healthy
                    ));
                }
                continue;
            }
            if !procs.is_empty() {
                return self.fail(format!("{} is {} but runs on {:?}", s.name, s.state, procs));
            }
            // Not running: acceptable only if policy makes it impossible.
            let spec = cfg
                .services
                .iter()
                .find(|x| x.name == s.name)
                .expect("spec");
            let allowed: Vec<NodeId> = (1..=self.k)
                .map(n)
                .filter(|nd| match &spec.domain {
                    Some(d) if d.restricted => d.nodes.iter().any(|m| m.node == *nd),
                    _ => true,
                })
                .collect();
            let hosts = |nd: NodeId, exclusive_only: bool| {
                cfg.services.iter().any(|o| {
                    o.name != s.name
                        && (!exclusive_only || o.exclusive)
                        && owner_of(&o.name) == Some(nd)
                })
            };
            let blocked = allowed.iter().all(|nd| hosts(*nd, !spec.exclusive));
            let dep_blocked = spec
                .depend
                .as_deref()
                .is_some_and(|d| owner_of(d).is_none());
            if !(blocked || dep_blocked) {
                return self.fail(format!(
                    "after faults ended {} is {} (reason: {}) although an allowed node is free\nfinal view: {v:#?}",
                    s.name, s.state, s.reason
                ));
            }
        }
        Ok(())
    }
}

fn short(i: &Input) -> String {
    match i {
        Input::Result(r) => format!(
            "result {:?} {} op{} from {:?}",
            r.outcome, r.service, r.op, r.node
        ),
        Input::Request { from, request } => format!("request {request:?} from {from:?}"),
        other => format!("{other:?}"),
    }
}

fn run_seed(seed: u64, k: u32) -> Result<Stats, String> {
    let mut sim = Sim::new(seed, k);
    sim.run()?;
    Ok(sim.stats.clone())
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut sim = Sim::new(seed, 5);
        sim.run().expect("seed passes");
        (sim.stats.clone(), sim.log.clone(), sim.majority_view())
    };
    let a = run(4242);
    let b = run(4242);
    assert_eq!(a, b, "same seed, same run");
    assert_ne!(a.1, run(4243).1, "different seeds differ");
}

#[test]
fn randomized_cluster_keeps_every_invariant() {
    let k_env: Option<u32> = std::env::var("RM_SIM_K").ok().and_then(|v| v.parse().ok());
    if let Some(seed) = std::env::var("RM_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let k = k_env.unwrap_or(3);
        match run_seed(seed, k) {
            Ok(st) => eprintln!("seed {seed} K={k} ok: {st:?}"),
            Err(e) => panic!(
                "{e}\nreproduce: RM_SIM_SEED={seed} RM_SIM_K={k} cargo test -p rm --test sim"
            ),
        }
        return;
    }
    let seeds: u64 = std::env::var("RM_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let t0 = std::time::Instant::now();
    let mut total = Stats::default();
    for seed in 0..seeds {
        let k = k_env.unwrap_or(if seed % 2 == 0 { 3 } else { 5 });
        match run_seed(seed, k) {
            Ok(st) => {
                total.deliveries += st.deliveries;
                total.starts += st.starts;
                total.faults += st.faults;
                total.fences += st.fences;
                total.requests_ok += st.requests_ok;
                total.requests_refused += st.requests_refused;
                total.migrations += st.migrations;
                total.partitions += st.partitions;
                total.multi_node_partitions += st.multi_node_partitions;
            }
            Err(e) => panic!(
                "{e}\nreproduce: RM_SIM_SEED={seed} RM_SIM_K={k} cargo test -p rm --test sim"
            ),
        }
    }
    eprintln!(
        "rm sim: {seeds} seeds passed in {:.2?} ({} ordered deliveries, {} faults, {} fences, {} partitions ({} of 2 nodes), {} starts, {} migrations, {} requests accepted, {} refused)",
        t0.elapsed(),
        total.deliveries,
        total.faults,
        total.fences,
        total.partitions,
        total.multi_node_partitions,
        total.starts,
        total.migrations,
        total.requests_ok,
        total.requests_refused
    );
}
