//! How fast one replica digests ordered inputs on a large cluster.
//! Opt-in: `cargo test -p rm --release --test throughput -- --ignored --nocapture`.

use base::{DetRng, Instant, NodeId};
use rm::{
    Action, ClusterSpec, DomainNode, DomainSpec, Input, NodeSpec, Outcome, Report, Scheduler,
    ServiceKind, ServiceSpec,
};

#[test]
#[ignore = "measurement; run with --ignored --nocapture (best with --release)"]
fn replica_input_throughput() {
    const NODES: u32 = 16;
    const SERVICES: usize = 200;
    let nodes: Vec<NodeSpec> = (1..=NODES)
        .map(|i| NodeSpec {
            id: NodeId(i),
            name: format!("node{i:02}"),
        })
        .collect();
    let services: Vec<ServiceSpec> = (0..SERVICES)
        .map(|i| {
            let mut s = ServiceSpec::new(&format!("svc{i:03}"), ServiceKind::Service);
            let a = (i as u32 % NODES) + 1;
            let b = ((i as u32 + 5) % NODES) + 1;
            s.domain = Some(DomainSpec {
                name: format!("d{i}"),
                ordered: true,
                restricted: i % 3 == 0,
                nofailback: i % 2 == 0,
                nodes: vec![
                    DomainNode {
                        node: NodeId(a),
                        priority: 1,
                    },
                    DomainNode {
                        node: NodeId(b),
                        priority: 2,
                    },
                ],
            });
            s
        })
        .collect();
    let cfg = ClusterSpec {
        config_version: 1,
        startup_fencing: false,
        two_node: false,
        nodes,
        services,
    };
    // One replica per node, so actions for every node can be answered.
    let mut reps: Vec<Scheduler> = (1..=NODES)
        .map(|i| Scheduler::new(NodeId(i), cfg.clone()).unwrap())
        .collect();
    let mut rng = DetRng::new(7);
    let mut members: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
    let mut t = 0u64;
    let mut inputs = 0u64;
    let mut pending: Vec<Input> = vec![Input::Membership {
        members: members.clone(),
        quorate: true,
    }];
    let start = std::time::Instant::now();
    let mut busy = std::time::Duration::ZERO;
    while inputs < 3_000 {
        let input = if let Some(i) = pending.pop() {
            i
        } else if rng.chance(0.5) && members.len() > NODES as usize / 2 + 1 {
            let x = members.remove(rng.below(members.len() as u64) as usize);
            pending.push(Input::Fenced {
                victim: x,
                method: "bench".into(),
            });
            Input::Membership {
                members: members.clone(),
                quorate: true,
            }
        } else {
            let back: Vec<NodeId> = (1..=NODES)
                .map(NodeId)
                .filter(|n| !members.contains(n))
                .collect();
            if back.is_empty() {
                continue;
            }
            members.push(back[rng.below(back.len() as u64) as usize]);
            members.sort();
            Input::Membership {
                members: members.clone(),
                quorate: true,
            }
        };
        t += 1_000_000;
        let t0 = std::time::Instant::now();
        reps[0].handle(Instant(t), input.clone()).ok();
        busy += t0.elapsed();
        for r in reps.iter_mut().skip(1) {
            r.handle(Instant(t), input.clone()).ok();
        }
        inputs += 1;
        for r in reps.iter_mut() {
            let me = r.local();
            while r.poll_event().is_some() {}
            for a in r.drain_actions() {
                let (service, op, outcome) = match a {
                    Action::StartService { service, op, .. } => (service, op, Outcome::StartOk),
                    Action::StopService { service, op, .. } => (service, op, Outcome::StopOk),
                    Action::Migrate { service, op, .. } => (service, op, Outcome::MigrateOk),
                    Action::ConfirmIncoming { service, op, .. } => {
                        (service, op, Outcome::IncomingRunning)
                    }
                    Action::FinishMigration { service, op, .. } => (service, op, Outcome::StopOk),
                    Action::StatusCheck { .. } => continue,
                };
                if members.contains(&me) {
                    pending.insert(
                        0,
                        Input::Result(Report {
                            node: me,
                            service,
                            op,
                            outcome,
                        }),
                    );
                }
            }
        }
    }
    let per = busy / inputs as u32;
    println!(
        "rm throughput: {inputs} inputs, {NODES} nodes, {SERVICES} services: {per:?} per input on one replica ({:.0} inputs/s); whole run {:?}",
        inputs as f64 / busy.as_secs_f64(),
        start.elapsed()
    );
    let v = reps[0].view();
    for r in &reps[1..] {
        assert_eq!(r.view(), v);
    }
}
