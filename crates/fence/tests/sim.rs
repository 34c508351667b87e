//! A small deterministic cluster of fence domains under random crashes, partitions,
//! heals, agent failures, hangs and late successes. Checked after every step:
//! - nobody believes a node fenced while it still runs (recovery never precedes fencing);
//! - no fence agent is started by a node whose partition is inquorate;
//!
//! and at the end, once healed and quorate, nothing stays blocked on fencing.

use base::{DetRng, Duration, Instant, NodeId};
use fence::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Clone, Debug)]
enum Op {
    Kill(u32),
    Split(u32),
    Heal,
    Advance(u64),
    AckDead(u32),
    Restart(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u32..=5).prop_map(Op::Kill),
        2 => (0u32..32).prop_map(Op::Split),
        2 => Just(Op::Heal),
        5 => (0u64..20_000).prop_map(Op::Advance),
        1 => (1u32..=5).prop_map(Op::AckDead),
        1 => (1u32..=5).prop_map(Op::Restart),
    ]
}

struct Run {
    fencer: NodeId,
    run_id: u64,
    victim: NodeId,
    due: Option<u64>,
    ok: bool,
}

struct World {
    n: u32,
    now: u64,
    doms: BTreeMap<NodeId, FenceDomain>,
    part: BTreeMap<NodeId, u32>,
    runs: Vec<Run>,
    rng: DetRng,
    agents_reliable: bool,
    fenced_runs: u64,
    cfg: FenceConfig,
    /// Incarnation of each node (bumped when it is powered on again).
    inc: BTreeMap<NodeId, u32>,
    /// (observer, node) -> the incarnation of node the observer last saw as a member.
    seen: BTreeMap<(NodeId, NodeId), u32>,
}

fn inst(ms: u64) -> Instant {
    Instant(ms * 1_000_000)
}

impl World {
    fn new(n: u32, seed: u64, post_fail_ms: u64, clean_start: bool) -> Self {
        let mut cfg = FenceConfig {
            post_fail_delay: Duration::from_millis(post_fail_ms),
            post_join_delay: Some(Duration::from_secs(3)),
            clean_start,
            override_time: Duration::from_secs(1),
            agent_timeout: Duration::from_secs(5),
            ..FenceConfig::default()
        };
        for i in 1..=n {
            let dev = |name: &str| {
                Device::from_attrs(
                    AgentArgs::new()
                        .with("name", name)
                        .with("agent", "fence_sim")
                        .with("port", format!("n{i}"))
                        .with("action", "off"),
                )
                .unwrap()
            };
            let mut methods = vec![Method {
                name: "1".into(),
                devices: vec![dev("a")],
            }];
            if i % 2 == 0 {
                methods.push(Method {
                    name: "2".into(),
                    devices: vec![dev("b"), dev("c")],
                });
            }
            cfg.nodes.insert(
                NodeId(i),
                NodeFence {
                    name: format!("n{i}"),
                    methods,
                    unfence: vec![],
                },
            );
        }
        let mut w = World {
            n,
            now: 0,
            doms: (1..=n)
                .map(|i| (NodeId(i), FenceDomain::new(NodeId(i), cfg.clone())))
                .collect(),
            part: (1..=n).map(|i| (NodeId(i), 0)).collect(),
            runs: Vec::new(),
            rng: DetRng::new(seed),
            agents_reliable: false,
            fenced_runs: 0,
            cfg: cfg.clone(),
            inc: (1..=n).map(|i| (NodeId(i), 0)).collect(),
            seen: BTreeMap::new(),
        };
        w.deliver_memberships();
        w
    }

    fn alive(&self) -> Vec<NodeId> {
        self.doms.keys().copied().collect()
    }

    fn partition_of(&self, x: NodeId) -> BTreeSet<NodeId> {
        let p = self.part[&x];
        self.part
            .iter()
            .filter(|(_, q)| **q == p)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Every alive node learns its partition's membership (if it changed).
    fn deliver_memberships(&mut self) {
        for x in self.alive() {
            let members = self.partition_of(x);
            let quorate = members.len() as u32 * 2 > self.n;
            let m = Membership {
                members: members.clone(),
                quorate,
            };
            for m in &members {
                self.seen.insert((x, *m), self.inc[m]);
            }
            let d = self.doms.get_mut(&x).unwrap();
            let st = d.status();
            if st.members.iter().copied().collect::<BTreeSet<_>>() != members
                || st.quorate != quorate
            {
                d.handle_membership(inst(self.now), m);
                self.drain(x);
            }
        }
    }

    fn kill(&mut self, v: NodeId) {
        if self.doms.remove(&v).is_some() {
            self.part.remove(&v);
            self.runs.retain(|r| r.fencer != v);
            self.deliver_memberships();
        }
    }

    /// Drains node x's actions; broadcasts go to x's partition in order, recursively.
    fn drain(&mut self, x: NodeId) {
        let mut work = VecDeque::from([x]);
        while let Some(x) = work.pop_front() {
            while let Some((quorate, a)) = self
                .doms
                .get_mut(&x)
                .and_then(|d| Some((d.is_quorate(), d.poll_action()?)))
            {
                match a {
                    Action::RunAgent(r) => {
                        assert!(
                            quorate || r.kind == JobKind::Unfence,
                            "node {x} started {r:?} while inquorate"
                        );
                        let roll = if self.agents_reliable {
                            0
                        } else {
                            self.rng.below(4)
                        };
                        let (due, ok) = match roll {
                            0 => (Some(self.now + 50), true),
                            1 => (Some(self.now + 50), false),
                            2 => (None, false),
                            _ => (Some(self.now + self.rng.range(100, 20_000)), true),
                        };
                        self.runs.push(Run {
                            fencer: x,
                            run_id: r.run_id,
                            victim: r.victim,
                            due,
                            ok,
                        });
                    }
                    Action::Broadcast(o) => {
                        for y in self.partition_of(x) {
                            self.doms
                                .get_mut(&y)
                                .unwrap()
                                .handle_fence_outcome(inst(self.now), o.clone());
                            work.push_back(y);
                        }
                    }
                }
            }
        }
    }

    fn check(&self) {
        for (x, d) in &self.doms {
            for v in 1..=self.n {
                let v = NodeId(v);
                // A fenced belief is about the incarnation last seen: that one must be dead.
                let seen = self.seen.get(&(*x, v)).copied();
                if d.is_fenced(v) && self.doms.contains_key(&v) {
                    assert!(
                        seen.is_some_and(|s| s != self.inc[&v]),
                        "node {x} believes {v} fenced but the incarnation it saw runs (t={})",
                        self.now
                    );
                }
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        loop {
            let next_run = self.runs.iter().filter_map(|r| r.due).min();
            let next_dl = self
                .doms
                .values()
                .filter_map(|d| d.poll_deadline())
                .map(|i| i.0.div_ceil(1_000_000))
                .min();
            let next = [next_run, next_dl].into_iter().flatten().min();
            match next {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    // Agent results due now.
                    while let Some(i) = self
                        .runs
                        .iter()
                        .position(|r| r.due.is_some_and(|d| d <= self.now))
                    {
                        let r = self.runs.remove(i);
                        if r.ok {
                            // Physical effect first: the victim loses power.
                            self.fenced_runs += 1;
                            self.kill(r.victim);
                        }
                        if let Some(d) = self.doms.get_mut(&r.fencer) {
                            d.handle_agent_result(
                                inst(self.now),
                                r.run_id,
                                if r.ok {
                                    Ok(())
                                } else {
                                    Err("agent failed".into())
                                },
                            );
                            self.drain(r.fencer);
                        }
                        self.check();
                    }
                    for x in self.alive() {
                        let Some(d) = self.doms.get_mut(&x) else {
                            continue;
                        };
                        if d.poll_deadline().is_some_and(|dl| dl <= inst(self.now)) {
                            d.handle_timeout(inst(self.now));
                            assert!(
                                !matches!(d.poll_deadline(), Some(dl) if dl <= inst(self.now)),
                                "node {x}: deadline not moved past now after handle_timeout"
                            );
                            self.drain(x);
                            self.check();
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = target;
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Kill(i) if i <= self.n && self.doms.len() > 1 => self.kill(NodeId(i)),
            Op::Kill(_) => {}
            Op::Split(mask) => {
                for (x, p) in self.part.iter_mut() {
                    *p = (mask >> (x.0 - 1)) & 1;
                }
                self.deliver_memberships();
            }
            Op::Heal => {
                for p in self.part.values_mut() {
                    *p = 0;
                }
                self.deliver_memberships();
            }
            Op::Advance(ms) => self.advance(ms),
            Op::Restart(v) => {
                let v = NodeId(v);
                if v.0 <= self.n && !self.doms.contains_key(&v) {
                    *self.inc.get_mut(&v).unwrap() += 1;
                    self.doms.insert(v, FenceDomain::new(v, self.cfg.clone()));
                    self.part.insert(v, 0);
                    self.deliver_memberships();
                }
            }
            Op::AckDead(v) => {
                // The operator acknowledges only a node that really is off.
                let v = NodeId(v);
                if !self.doms.contains_key(&v) {
                    if let Some(x) = self
                        .alive()
                        .into_iter()
                        .find(|x| self.doms[x].blocked().contains(&v))
                    {
                        self.doms
                            .get_mut(&x)
                            .unwrap()
                            .ack_manual(inst(self.now), v)
                            .unwrap();
                        self.drain(x);
                    }
                }
            }
        }
        self.check();
    }
}

fn scenario(n: u32, seed: u64, post_fail_ms: u64, clean_start: bool, ops: &[Op]) {
    let mut w = World::new(n, seed, post_fail_ms, clean_start);
    for op in ops {
        w.apply(op);
    }
    // Heal, make agents reliable, let time pass: a quorate cluster ends with nothing blocked.
    w.apply(&Op::Heal);
    w.agents_reliable = true;
    for _ in 0..20 {
        w.apply(&Op::Advance(20_000));
    }
    if w.doms.len() as u32 * 2 > n {
        for (x, d) in &w.doms {
            assert!(
                d.blocked().is_empty(),
                "node {x} still blocked: {}",
                d.status()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn never_fenced_while_running_never_fences_inquorate(
        n in 2u32..=5,
        seed in any::<u64>(),
        post_fail_ms in 0u64..3000,
        clean_start in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        scenario(n, seed, post_fail_ms, clean_start, &ops);
    }
}

#[test]
fn majority_partition_fences_the_minority_and_nothing_else() {
    let mut w = World::new(5, 7, 1000, true);
    w.agents_reliable = true;
    w.apply(&Op::Split(0b11000)); // {1,2,3} | {4,5}
    w.apply(&Op::Advance(10_000));
    assert_eq!(w.alive(), vec![NodeId(1), NodeId(2), NodeId(3)]);
    for d in w.doms.values() {
        assert!(d.is_fenced(NodeId(4)) && d.is_fenced(NodeId(5)));
    }
    assert_eq!(w.fenced_runs, 2);
}
