//! CPU cost of the protocol core alone: N nodes in one thread, packets
//! handed over instantly, 1 KiB messages, sealed frames. Prints ordered
//! messages per second delivered at every node. Not the network benchmark
//! (`quorate bench totem`); an upper bound for one core per node would be
//! about N times this, since here one thread runs all nodes.
//!
//! `cargo run --release -p totem --example core_throughput [NODES] [SECONDS]`
use base::{Duration, Instant, NodeId};
use std::collections::VecDeque;
use totem::{ClusterKey, Command, Event, State, TotemConfig, TotemNode};

// a benchmark measures wall-clock time; the core itself never reads a clock
#[allow(clippy::disallowed_methods)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u32 = args.first().map(|s| s.parse().expect("nodes")).unwrap_or(3);
    let secs: f64 = args
        .get(1)
        .map(|s| s.parse().expect("seconds"))
        .unwrap_or(3.0);
    let key = ClusterKey::from_authkey(&(0u8..128).collect::<Vec<_>>()).expect("key");
    let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
    let mut now = Instant(1);
    let mut nodes: Vec<TotemNode> = ids
        .iter()
        .map(|id| {
            let mut c = TotemConfig::new(*id, ids.clone()).with_token(Duration::from_millis(1000));
            c.key = Some(key.clone());
            c.window_size = 200;
            c.max_messages = 100;
            TotemNode::new(c, now).expect("config")
        })
        .collect();
    let mut q: VecDeque<(usize, NodeId, u8, std::sync::Arc<[u8]>)> = VecDeque::new();
    let mut delivered = vec![0u64; n as usize];
    let payload = vec![7u8; 1024];
    let mut started: Option<std::time::Instant> = None;
    let mut base = 0u64;
    loop {
        now += Duration::from_micros(10);
        for i in 0..nodes.len() {
            if nodes[i].poll_deadline().is_some_and(|d| d <= now) {
                nodes[i].handle_timeout(now);
            }
            if nodes[i].state() == State::Operational {
                while nodes[i].send_queue_len() < 200 {
                    nodes[i]
                        .handle_command(
                            now,
                            Command::Multicast {
                                payload: payload.clone(),
                                safe: false,
                            },
                        )
                        .expect("queue");
                }
            }
            while let Some(t) = nodes[i].poll_transmit() {
                q.push_back((t.to.0 as usize - 1, ids[i], t.ring, t.bytes));
            }
            while let Some(e) = nodes[i].poll_event() {
                if let Event::Deliver(_) = e {
                    delivered[i] += 1;
                }
            }
        }
        // one network hop per tick (the token would otherwise spin forever)
        for _ in 0..q.len() {
            let Some((to, from, ring, bytes)) = q.pop_front() else {
                break;
            };
            nodes[to].handle_packet(now, ring, Some(from), &bytes);
            while let Some(t) = nodes[to].poll_transmit() {
                q.push_back((t.to.0 as usize - 1, ids[to], t.ring, t.bytes));
            }
            while let Some(e) = nodes[to].poll_event() {
                if let Event::Deliver(_) = e {
                    delivered[to] += 1;
                }
            }
        }
        let min = *delivered.iter().min().expect("nodes");
        if std::env::var("DEBUG").is_ok() && now.0 % 100_000_000 < 10_000 {
            eprintln!(
                "{now} {:?} {delivered:?}",
                nodes
                    .iter()
                    .map(|n| (n.state(), n.members().len(), n.send_queue_len()))
                    .collect::<Vec<_>>()
            );
        }
        match started {
            None if min > 1000 => {
                started = Some(std::time::Instant::now());
                base = min;
            }
            Some(s) if s.elapsed().as_secs_f64() >= secs => {
                let rate = (min - base) as f64 / s.elapsed().as_secs_f64();
                println!(
                    "core: {n} nodes in one thread, 1 KiB sealed: {:.0} ordered msgs/s delivered at every node ({:.1} MB/s)",
                    rate,
                    rate * 1024.0 / 1e6
                );
                return;
            }
            _ => {}
        }
    }
}
