//! Scripted scenarios on a tiny lossless network with a fixed 100 us hop.

use base::{Duration, Instant, NodeId};
use std::collections::VecDeque;
use totem::{ClusterKey, Command, CpgEvent, Event, State, TotemConfig, TotemNode};

const HOP: u64 = 100_000;

/// A datagram in flight: arrival, from, ring, to, bytes.
type InFlight = (Instant, NodeId, u8, NodeId, std::sync::Arc<[u8]>);

struct Net {
    nodes: Vec<Option<TotemNode>>,
    now: Instant,
    q: VecDeque<InFlight>,
    events: Vec<Vec<Event>>,
    /// drop (ring, from, to)
    cut: Box<dyn Fn(u8, NodeId, NodeId) -> bool>,
}

fn cfg(i: u32, n: u32, rings: u8, key: Option<ClusterKey>) -> TotemConfig {
    let mut c = TotemConfig::new(NodeId(i), (1..=n).map(NodeId).collect())
        .with_token(Duration::from_millis(300));
    c.rings = rings;
    c.key = key;
    c
}

impl Net {
    fn new(n: u32, rings: u8, key: Option<ClusterKey>) -> Net {
        let now = Instant(1_000_000);
        Net {
            nodes: (1..=n)
                .map(|i| Some(TotemNode::new(cfg(i, n, rings, key.clone()), now).unwrap()))
                .collect(),
            now,
            q: VecDeque::new(),
            events: vec![Vec::new(); n as usize],
            cut: Box::new(|_, _, _| false),
        }
    }
    fn drain(&mut self, i: usize) {
        let Some(n) = self.nodes[i].as_mut() else {
            return;
        };
        let from = n.node_id();
        while let Some(t) = n.poll_transmit() {
            self.q
                .push_back((self.now + Duration(HOP), from, t.ring, t.to, t.bytes));
        }
        while let Some(e) = n.poll_event() {
            self.events[i].push(e);
        }
    }
    fn step(&mut self) {
        self.now += Duration(HOP);
        while self.q.front().is_some_and(|p| p.0 <= self.now) {
            let (_, from, ring, to, bytes) = self.q.pop_front().unwrap();
            let i = to.0 as usize - 1;
            if (self.cut)(ring, from, to) {
                continue;
            }
            if let Some(n) = self.nodes[i].as_mut() {
                n.handle_packet(self.now, ring, Some(from), &bytes);
                self.drain(i);
            }
        }
        for i in 0..self.nodes.len() {
            if let Some(n) = self.nodes[i].as_mut() {
                if n.poll_deadline().is_some_and(|d| d <= self.now) {
                    n.handle_timeout(self.now);
                }
            }
            self.drain(i);
        }
    }
    fn run_until(&mut self, limit: Duration, f: impl Fn(&Net) -> bool) -> Duration {
        let start = self.now;
        while !f(self) {
            assert!(
                self.now - start < limit,
                "condition not reached within {limit}"
            );
            self.step();
        }
        self.now - start
    }
    fn ring_of(&self, members: &[u32]) -> bool {
        let want: Vec<NodeId> = members.iter().map(|m| NodeId(*m)).collect();
        want.iter().all(|m| {
            self.nodes[m.0 as usize - 1]
                .as_ref()
                .is_some_and(|n| n.state() == State::Operational && n.members() == want.as_slice())
        })
    }
    fn cmd(&mut self, i: usize, c: Command) {
        self.nodes[i]
            .as_mut()
            .unwrap()
            .handle_command(self.now, c)
            .unwrap();
        self.drain(i);
    }
    fn delivered(&self, i: usize) -> Vec<Vec<u8>> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                Event::Deliver(d) => Some(d.payload.to_vec()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn three_nodes_form_one_ring_and_deliver_in_one_order() {
    let mut net = Net::new(3, 1, None);
    net.run_until(Duration::from_secs(2), |n| n.ring_of(&[1, 2, 3]));
    for k in 0..50u8 {
        for i in 0..3 {
            net.cmd(
                i,
                Command::Multicast {
                    payload: vec![i as u8, k],
                    safe: k % 5 == 0,
                },
            );
        }
    }
    net.run_until(Duration::from_secs(2), |n| {
        (0..3).all(|i| n.delivered(i).len() == 150)
    });
    let d0 = net.delivered(0);
    assert_eq!(d0, net.delivered(1));
    assert_eq!(d0, net.delivered(2));
    // FIFO per sender
    for s in 0..3u8 {
        let from_s: Vec<u8> = d0.iter().filter(|m| m[0] == s).map(|m| m[1]).collect();
        assert_eq!(from_s, (0..50).collect::<Vec<u8>>());
    }
    let st = net.nodes[0].as_ref().unwrap().stats();
    // 50 messages and the process-group join list sent at configuration
    assert!(st.token_rotations > 0 && st.mcasts_sent == 51, "{st:?}");
}

#[test]
fn a_lost_node_is_detected_and_survivors_get_transitional_then_regular_configuration() {
    let mut net = Net::new(3, 1, None);
    net.run_until(Duration::from_secs(2), |n| n.ring_of(&[1, 2, 3]));
    net.nodes[2] = None;
    let took = net.run_until(Duration::from_secs(3), |n| n.ring_of(&[1, 2]));
    assert!(
        took >= Duration::from_millis(300) && took <= Duration::from_millis(500),
        "took {took}"
    );
    let confs: Vec<_> = net.events[0]
        .iter()
        .filter_map(|e| match e {
            Event::ConfigurationChange(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let n = confs.len();
    assert!(confs[n - 2].transitional && confs[n - 2].members == vec![NodeId(1), NodeId(2)]);
    assert_eq!(confs[n - 2].left, vec![NodeId(3)]);
    assert!(!confs[n - 1].transitional && confs[n - 1].ring_id.seq > confs[n - 3].ring_id.seq);
}

#[test]
fn a_node_that_leaves_is_excluded_without_waiting_for_the_token_timeout() {
    let mut net = Net::new(3, 1, None);
    net.run_until(Duration::from_secs(2), |n| n.ring_of(&[1, 2, 3]));
    net.cmd(2, Command::Leave);
    assert_eq!(net.nodes[2].as_ref().unwrap().state(), State::Left);
    let took = net.run_until(Duration::from_secs(3), |n| n.ring_of(&[1, 2]));
    assert!(took < Duration::from_millis(150), "took {took}");
}

#[test]
fn second_ring_failure_is_marked_faulty_cluster_keeps_running_and_it_recovers() {
    let mut net = Net::new(3, 2, None);
    net.run_until(Duration::from_secs(2), |n| n.ring_of(&[1, 2, 3]));
    let ring_before = net.nodes[0].as_ref().unwrap().ring_id();
    // node 3's second network goes down
    net.cut = Box::new(|ring, from, to| ring == 1 && (from == NodeId(3) || to == NodeId(3)));
    net.run_until(Duration::from_secs(2), |n| {
        !n.nodes[0].as_ref().unwrap().link_up(NodeId(3), 1)
    });
    assert!(net.nodes[0].as_ref().unwrap().link_up(NodeId(2), 1));
    for k in 0..20u8 {
        net.cmd(
            0,
            Command::Multicast {
                payload: vec![k],
                safe: false,
            },
        );
    }
    net.run_until(Duration::from_secs(2), |n| n.delivered(2).len() == 20);
    assert_eq!(
        net.nodes[0].as_ref().unwrap().ring_id(),
        ring_before,
        "no membership change for a ring fault"
    );
    assert_eq!(
        net.nodes[0].as_ref().unwrap().status().faulty_links[1],
        vec![NodeId(3)]
    );
    let states = net.nodes[0].as_ref().unwrap().status().ring_states;
    assert_eq!(states[0].state, totem::RingHealth::Active);
    assert_eq!(states[1].state, totem::RingHealth::Degraded);
    assert_eq!(states[1].faulty_peers, vec![NodeId(3)]);
    // node 3 itself hears no one on ring 1: the ring is faulty there
    net.run_until(Duration::from_secs(2), |n| {
        n.nodes[2].as_ref().unwrap().status().ring_states[1].state == totem::RingHealth::Faulty
    });
    let json = serde_json::to_value(net.nodes[2].as_ref().unwrap().status()).unwrap();
    assert_eq!(json["ring_states"][1]["state"], "faulty");
    assert_eq!(json["ring_states"][0]["state"], "active");
    assert_eq!(json["ring_id"]["seq"], ring_before.seq);
    assert!(
        json["stats"]["token_rotations"].as_u64().unwrap() > 0,
        "{json}"
    );
    net.cut = Box::new(|_, _, _| false);
    net.run_until(Duration::from_secs(2), |n| {
        n.nodes[0].as_ref().unwrap().link_up(NodeId(3), 1)
    });
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, Event::Link(l) if l.peer == NodeId(3) && l.ring == 1 && !l.up)));
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, Event::Link(l) if l.peer == NodeId(3) && l.ring == 1 && l.up)));
}

#[test]
fn sealed_ring_works_and_a_node_with_another_key_stays_out() {
    let k1 = ClusterKey::from_authkey(&(0u8..128).collect::<Vec<_>>()).unwrap();
    let k2 = ClusterKey::from_authkey(&(1u8..129).collect::<Vec<_>>()).unwrap();
    let mut net = Net::new(3, 1, Some(k1));
    net.nodes[2] = Some(TotemNode::new(cfg(3, 3, 1, Some(k2)), net.now).unwrap());
    net.run_until(Duration::from_secs(2), |n| n.ring_of(&[1, 2]));
    net.run_until(Duration::from_secs(1), |n| {
        n.nodes[0].as_ref().unwrap().stats().auth_failures > 0
    });
    net.run_until(Duration::from_secs(1), |n| n.ring_of(&[3]));
    net.run_until(Duration::from_secs(1), |n| {
        n.nodes[2].as_ref().unwrap().stats().auth_failures > 0
    });
    assert!(net.ring_of(&[1, 2]));
}

#[test]
fn process_groups_deliver_to_members_only_with_membership_callbacks() {
    let mut net = Net::new(3, 1, None);
    net.run_until(Duration::from_secs(2), |n| n.ring_of(&[1, 2, 3]));
    net.cmd(
        0,
        Command::CpgJoin {
            group: "rgmanager".into(),
        },
    );
    net.cmd(
        1,
        Command::CpgJoin {
            group: "rgmanager".into(),
        },
    );
    net.run_until(Duration::from_secs(1), |n| {
        n.nodes[2].as_ref().unwrap().cpg().view("rgmanager").len() == 2
    });
    net.cmd(
        1,
        Command::CpgSend {
            group: "rgmanager".into(),
            payload: b"hello".to_vec(),
        },
    );
    let got = |n: &Net, i: usize| {
        n.events[i].iter().any(|e| matches!(e, Event::Cpg(CpgEvent::Deliver { data, sender, .. }) if &data[..] == b"hello" && *sender == NodeId(2)))
    };
    net.run_until(Duration::from_secs(1), |n| got(n, 0) && got(n, 1));
    for _ in 0..500 {
        net.step(); // 50 ms more: node 3 must still get nothing
    }
    assert!(!got(&net, 2), "node 3 is not in the group");
    assert!(net.events[0].iter().any(|e| matches!(e, Event::Cpg(CpgEvent::ConfChange { members, .. }) if members == &vec![NodeId(1), NodeId(2)])));
    let err = net.nodes[2].as_mut().unwrap().handle_command(
        net.now,
        Command::CpgSend {
            group: "rgmanager".into(),
            payload: vec![],
        },
    );
    assert!(err.is_err());
    // node 2 dies: node 1 is told it left the group
    net.nodes[1] = None;
    net.run_until(Duration::from_secs(3), |n| n.ring_of(&[1, 3]));
    assert!(net.events[0].iter().any(|e| matches!(e, Event::Cpg(CpgEvent::ConfChange { left, members, .. }) if left == &vec![NodeId(2)] && members == &vec![NodeId(1)])));
}

#[test]
fn core_manifest_pulls_in_no_runtime_or_io_crate() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for banned in ["tokio", "async-std", "mio", "rand =", "socket2"] {
        assert!(
            !deps.contains(banned),
            "totem core must stay sans-IO; found {banned}"
        );
    }
}
