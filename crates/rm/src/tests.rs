//! Unit tests for each policy rule, run on several replicas at once so every
//! test also checks that the replicas agree.

use super::*;
use base::{Duration, Instant, NodeId};
use std::collections::BTreeMap;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

fn nodes(k: u32) -> Vec<NodeSpec> {
    (1..=k)
        .map(|i| NodeSpec {
            id: n(i),
            name: format!("an-node{i:02}"),
        })
        .collect()
}

fn domain(ordered: bool, restricted: bool, nofailback: bool, members: &[(u32, u32)]) -> DomainSpec {
    DomainSpec {
        name: "dom".into(),
        ordered,
        restricted,
        nofailback,
        nodes: members
            .iter()
            .map(|(id, p)| DomainNode {
                node: n(*id),
                priority: *p,
            })
            .collect(),
    }
}

/// K replicas fed the same inputs; actions are answered by the test.
struct H {
    s: Vec<Scheduler>,
    t: u64,
    members: Vec<NodeId>,
    q: bool,
}

impl H {
    fn new(k: u32, services: Vec<ServiceSpec>) -> H {
        let cfg = ClusterSpec {
            config_version: 1,
            startup_fencing: false,
            two_node: false,
            nodes: nodes(k),
            services,
        };
        let s = (1..=k)
            .map(|i| Scheduler::new(n(i), cfg.clone()).expect("valid config"))
            .collect();
        H {
            s,
            t: 0,
            members: Vec::new(),
            q: false,
        }
    }

    fn now(&self) -> Instant {
        Instant(self.t * 1_000_000)
    }

    fn feed(&mut self, input: Input) -> Result<(), InputError> {
        self.t += 100;
        if let Input::Membership { members, .. } = &input {
            self.members = members.clone();
        }
        if let Input::Quorum { quorate } = &input {
            self.q = *quorate;
        }
        let now = self.now();
        let results: Vec<_> = self
            .s
            .iter_mut()
            .map(|s| s.handle(now, input.clone()))
            .collect();
        for r in &results[1..] {
            assert_eq!(r, &results[0], "replicas disagree on the result");
        }
        let v0 = self.s[0].view();
        for s in &self.s[1..] {
            assert_eq!(s.view(), v0, "replicas disagree on the view");
        }
        results[0].clone()
    }

    fn up(&mut self, ids: &[u32]) {
        self.feed(Input::Membership {
            members: ids.iter().map(|i| n(*i)).collect(),
            quorate: self.q,
        })
        .unwrap();
    }

    fn quorum(&mut self, q: bool) {
        self.feed(Input::Quorum { quorate: q }).unwrap();
    }

    fn req(&mut self, r: Request) -> Result<(), InputError> {
        self.feed(Input::Request {
            from: n(1),
            request: r,
        })
    }

    /// Pending actions of member nodes (a dead node's replica acts on nothing).
    fn actions(&mut self) -> Vec<(NodeId, Action)> {
        let mut out = Vec::new();
        for s in &mut self.s {
            let me = s.local();
            for a in s.drain_actions() {
                if self.members.contains(&me) {
                    out.push((me, a));
                }
            }
        }
        out
    }

    fn report(&mut self, node: NodeId, a: &Action, ok: bool) {
        let (good, bad) = match a {
            Action::StartService { .. } => (Outcome::StartOk, Outcome::StartFailed),
            Action::StopService { .. } | Action::FinishMigration { .. } => {
                (Outcome::StopOk, Outcome::StopFailed)
            }
            Action::Migrate { .. } => (Outcome::MigrateOk, Outcome::MigrateFailed),
            Action::ConfirmIncoming { .. } => (Outcome::IncomingRunning, Outcome::IncomingFailed),
            Action::StatusCheck { .. } => return,
        };
        self.feed(Input::Result(Report {
            node,
            service: a.service().to_string(),
            op: a.op(),
            outcome: if ok { good } else { bad },
        }))
        .unwrap();
    }

    /// Answer every action with success until there are none.
    fn settle(&mut self) {
        for _ in 0..100 {
            let acts = self.actions();
            if acts.is_empty() {
                return;
            }
            for (node, a) in acts {
                self.report(node, &a, true);
            }
        }
        panic!("did not settle");
    }

    fn svc(&self, name: &str) -> ServiceView {
        self.s[0].service(name).expect("service exists")
    }

    fn status_fail(&mut self, name: &str) {
        let v = self.svc(name);
        assert_eq!(v.state, State::Started);
        let owner = v.owner.unwrap();
        // The owner's replica schedules the status check.
        let idx = (owner.0 - 1) as usize;
        let due = self.s[idx]
            .poll_deadline()
            .expect("a status check is scheduled");
        self.s[idx].handle_timeout(due);
        let acts = self.s[idx].drain_actions();
        let op = acts
            .iter()
            .find_map(|a| match a {
                Action::StatusCheck { service, op, .. } if service == name => Some(*op),
                _ => None,
            })
            .expect("status check emitted on the owner");
        self.feed(Input::Result(Report {
            node: owner,
            service: name.into(),
            op,
            outcome: Outcome::StatusFailed,
        }))
        .unwrap();
    }

    fn fenced(&mut self, id: u32) {
        self.feed(Input::Fenced {
            victim: n(id),
            method: "ipmi".into(),
        })
        .unwrap();
    }
}

fn web() -> ServiceSpec {
    let mut s = ServiceSpec::new("web", ServiceKind::Service);
    s.resources = vec![
        ResourceSpec::new("script", "/etc/init.d/httpd"),
        ResourceSpec::new("ip", "10.0.0.10"),
    ];
    s
}

fn started_cluster(k: u32, services: Vec<ServiceSpec>) -> H {
    let mut h = H::new(k, services);
    let all: Vec<u32> = (1..=k).collect();
    h.up(&all);
    h.quorum(true);
    h.settle();
    h
}

#[test]
fn ordered_domain_fails_back_after_fenced_recovery() {
    let mut s = web();
    s.domain = Some(domain(true, false, false, &[(1, 1), (2, 2)]));
    let mut h = started_cluster(2, vec![s]);
    assert_eq!(h.svc("web").state, State::Started);
    assert_eq!(h.svc("web").owner, Some(n(1)));

    h.up(&[2]);
    assert_eq!(h.svc("web").state, State::Recovering);
    assert!(h.actions().is_empty(), "nothing may start before the fence");
    h.fenced(1);
    h.settle();
    let v = h.svc("web");
    assert_eq!(
        (v.state, v.owner, v.last_owner),
        (State::Started, Some(n(2)), Some(n(1)))
    );
    assert!(
        v.reason
            .starts_with("moved web from an-node01 to an-node02: an-node01 fenced by ipmi at t+"),
        "{}",
        v.reason
    );

    h.up(&[1, 2]);
    h.settle();
    let v = h.svc("web");
    assert_eq!(
        v.owner,
        Some(n(1)),
        "ordered domain fails back: {}",
        v.reason
    );
    assert!(v.reason.contains("failback"), "{}", v.reason);
}

#[test]
fn nofailback_stays_on_the_survivor() {
    let mut s = web();
    s.domain = Some(domain(true, false, true, &[(1, 1), (2, 2)]));
    let mut h = started_cluster(2, vec![s]);
    assert_eq!(h.svc("web").owner, Some(n(1)));
    h.up(&[2]);
    h.fenced(1);
    h.settle();
    h.up(&[1, 2]);
    h.settle();
    assert_eq!(h.svc("web").owner, Some(n(2)));
    assert_eq!(h.svc("web").state, State::Started);
}

#[test]
fn unrestricted_domain_pulls_service_back_in_even_with_nofailback() {
    let mut s = web();
    s.domain = Some(domain(true, false, true, &[(1, 1)]));
    let mut h = started_cluster(2, vec![s]);
    assert_eq!(h.svc("web").owner, Some(n(1)));
    h.up(&[2]);
    h.fenced(1);
    h.settle();
    assert_eq!(
        h.svc("web").owner,
        Some(n(2)),
        "unrestricted: may run outside"
    );
    h.up(&[1, 2]);
    h.settle();
    assert_eq!(h.svc("web").owner, Some(n(1)), "moves back into its domain");
}

#[test]
fn restricted_domain_with_no_member_left_stays_stopped() {
    let mut s = web();
    s.domain = Some(domain(false, true, false, &[(1, 1)]));
    let mut h = started_cluster(2, vec![s]);
    assert_eq!(h.svc("web").owner, Some(n(1)));
    h.up(&[2]);
    h.fenced(1);
    h.settle();
    let v = h.svc("web");
    assert_eq!((v.state, v.owner), (State::Stopped, None));
    assert!(
        v.reason.contains("restricted failover domain"),
        "{}",
        v.reason
    );
    let e = h
        .req(Request::Enable {
            service: "web".into(),
            node: Some(n(2)),
        })
        .unwrap_err();
    assert!(
        matches!(e, InputError::Request(RequestError::NotInDomain { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("pick one of: an-node01"), "{e}");
    // The member comes back: the service starts there.
    h.up(&[1, 2]);
    h.settle();
    assert_eq!(h.svc("web").owner, Some(n(1)));
}

#[test]
fn max_restarts_then_relocate_within_expire_window() {
    let mut s = web();
    s.max_restarts = 2;
    s.restart_expire_time = Duration::from_secs(60);
    let mut h = started_cluster(2, vec![s]);
    assert_eq!(h.svc("web").owner, Some(n(1)));
    for i in 1..=2 {
        h.status_fail("web");
        h.settle();
        let v = h.svc("web");
        assert_eq!(v.owner, Some(n(1)), "restart {i} is in place");
        assert_eq!(v.restarts, i);
    }
    h.status_fail("web");
    h.settle();
    let v = h.svc("web");
    assert_eq!(v.owner, Some(n(2)), "third failure relocates: {}", v.reason);
    assert!(v.reason.contains("relocating"), "{}", v.reason);
}

#[test]
fn restarts_expire_after_restart_expire_time() {
    let mut s = web();
    s.max_restarts = 1;
    s.restart_expire_time = Duration::from_secs(5);
    let mut h = started_cluster(2, vec![s]);
    for _ in 0..4 {
        h.status_fail("web");
        h.settle();
        assert_eq!(h.svc("web").owner, Some(n(1)));
        h.t += 10_000; // 10 s later the previous restart is forgotten
    }
}

#[test]
fn recovery_relocate_and_disable_policies() {
    let mut a = web();
    a.name = "a".into();
    a.recovery = Recovery::Relocate;
    a.domain = Some(domain(true, false, true, &[(1, 1), (2, 2)]));
    let mut b = web();
    b.name = "b".into();
    b.recovery = Recovery::Disable;
    let mut h = started_cluster(2, vec![a, b]);
    assert_eq!(h.svc("a").owner, Some(n(1)));
    h.status_fail("a");
    h.settle();
    assert_eq!(h.svc("a").owner, Some(n(2)));
    h.status_fail("b");
    h.settle();
    assert_eq!(h.svc("b").state, State::Disabled);
}

#[test]
fn restart_disable_disables_when_restart_fails() {
    let mut s = web();
    s.recovery = Recovery::RestartDisable;
    let mut h = started_cluster(2, vec![s]);
    h.status_fail("web");
    // Stop succeeds; the restart in place fails.
    let acts = h.actions();
    assert_eq!(acts.len(), 1);
    h.report(acts[0].0, &acts[0].1, true);
    let acts = h.actions();
    assert!(matches!(acts[0].1, Action::StartService { .. }));
    assert_eq!(acts[0].0, n(1), "restart is in place");
    h.report(acts[0].0, &acts[0].1, false);
    h.settle();
    assert_eq!(h.svc("web").state, State::Disabled);
}

#[test]
fn start_failure_tries_next_node_then_stops_until_next_transition() {
    let mut h = H::new(2, vec![web()]);
    h.up(&[1, 2]);
    h.quorum(true);
    for expected in [n(1), n(2)] {
        let acts = h.actions();
        assert_eq!(acts.len(), 1);
        assert_eq!(acts[0].0, expected);
        h.report(acts[0].0, &acts[0].1, false); // start fails
        let acts = h.actions();
        assert!(
            matches!(acts[0].1, Action::StopService { .. }),
            "cleanup stop"
        );
        h.report(acts[0].0, &acts[0].1, true);
    }
    let v = h.svc("web");
    assert_eq!(v.state, State::Stopped);
    assert!(
        v.reason.contains("start failed on every allowed node"),
        "{}",
        v.reason
    );
    assert!(h.actions().is_empty());
    h.up(&[1, 2]); // a transition retries
    h.settle();
    assert_eq!(h.svc("web").state, State::Started);
}

#[test]
fn exclusive_service_keeps_others_off_its_node() {
    let mut a = web();
    a.name = "excl".into();
    a.exclusive = true;
    let mut b = web();
    b.name = "other".into();
    let mut h = started_cluster(2, vec![a, b]);
    let ea = h.svc("excl").owner.unwrap();
    let ob = h.svc("other").owner.unwrap();
    assert_ne!(ea, ob, "exclusive service runs alone");
    let e = h
        .req(Request::Relocate {
            service: "other".into(),
            node: Some(ea),
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            InputError::Request(RequestError::ExclusiveConflict { .. })
        ),
        "{e}"
    );
    // Lose the node of "other": it may not join the exclusive service.
    h.up(&[ea.0]);
    h.fenced(ob.0);
    h.settle();
    assert_eq!(h.svc("other").state, State::Stopped);
    assert_eq!(h.svc("excl").owner, Some(ea));
}

#[test]
fn hard_dependency_orders_start_and_stops_dependents() {
    let mut db = web();
    db.name = "db".into();
    db.autostart = false;
    let mut app = web();
    app.name = "app".into();
    app.depend = Some("db".into());
    let mut h = started_cluster(2, vec![db, app]);
    assert_eq!(h.svc("db").state, State::Disabled);
    assert_eq!(h.svc("app").state, State::Stopped);
    assert!(h.svc("app").reason.contains("waiting for db"));
    let e = h
        .req(Request::Enable {
            service: "app".into(),
            node: None,
        })
        .unwrap_err();
    assert!(matches!(
        e,
        InputError::Request(RequestError::DependencyNotRunning { .. })
    ));
    h.req(Request::Enable {
        service: "db".into(),
        node: None,
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("db").state, State::Started);
    assert_eq!(h.svc("app").state, State::Started);
    h.req(Request::Disable {
        service: "db".into(),
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("db").state, State::Disabled);
    assert_eq!(h.svc("app").state, State::Stopped, "hard dependent stopped");
}

#[test]
fn soft_dependency_keeps_dependent_running() {
    let mut db = web();
    db.name = "db".into();
    let mut app = web();
    app.name = "app".into();
    app.depend = Some("db".into());
    app.depend_mode = DependMode::Soft;
    let mut h = started_cluster(2, vec![db, app]);
    assert_eq!(h.svc("app").state, State::Started);
    h.req(Request::Disable {
        service: "db".into(),
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("app").state, State::Started);
}

#[test]
fn freeze_blocks_recovery_until_unfreeze() {
    let mut h = started_cluster(2, vec![web()]);
    let owner = h.svc("web").owner.unwrap();
    let other = if owner == n(1) { 2 } else { 1 };
    h.req(Request::Freeze {
        service: "web".into(),
    })
    .unwrap();
    let e = h
        .req(Request::Relocate {
            service: "web".into(),
            node: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("quorate svc unfreeze web"), "{e}");
    h.up(&[other]);
    h.fenced(owner.0);
    h.settle();
    assert_eq!(h.svc("web").state, State::Recovering, "frozen: no recovery");
    assert!(h.svc("web").frozen);
    h.req(Request::Unfreeze {
        service: "web".into(),
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("web").state, State::Started);
    assert_eq!(h.svc("web").owner, Some(n(other)));
}

#[test]
fn inquorate_partition_stops_everything_and_refuses_requests() {
    let mut a = web();
    a.name = "a".into();
    let mut b = web();
    b.name = "b".into();
    let mut h = started_cluster(3, vec![a, b]);
    h.quorum(false);
    let acts = h.actions();
    assert_eq!(acts.len(), 2);
    assert!(acts
        .iter()
        .all(|(_, a)| matches!(a, Action::StopService { .. })));
    for (node, a) in &acts {
        h.report(*node, a, true);
    }
    assert!(h.actions().is_empty(), "nothing starts without quorum");
    assert_eq!(h.svc("a").state, State::Stopped);
    let e = h
        .req(Request::Enable {
            service: "a".into(),
            node: None,
        })
        .unwrap_err();
    assert_eq!(e, InputError::Request(RequestError::NoQuorum));
    h.quorum(true);
    h.settle();
    assert_eq!(h.svc("a").state, State::Started);
    assert_eq!(h.svc("b").state, State::Started);
}

#[test]
fn recovery_waits_for_fence_and_refuses_moves_meanwhile() {
    let mut h = started_cluster(3, vec![web()]);
    let owner = h.svc("web").owner.unwrap();
    let rest: Vec<u32> = (1..=3).filter(|i| *i != owner.0).collect();
    h.up(&rest);
    for _ in 0..5 {
        h.quorum(true);
        assert!(h.actions().is_empty());
    }
    let e = h
        .req(Request::Enable {
            service: "web".into(),
            node: Some(n(rest[0])),
        })
        .unwrap_err();
    assert!(
        matches!(e, InputError::Request(RequestError::FencingPending(_))),
        "{e}"
    );
    h.fenced(owner.0);
    h.settle();
    // A second fence notice for the same node owes nothing.
    h.fenced(owner.0);
    assert!(h.actions().is_empty());
    assert_eq!(h.s[0].stats().ignored_fences, 1);
    assert_eq!(h.svc("web").state, State::Started);
    assert!(h.svc("web").owner.is_some_and(|o| o != owner));
}

#[test]
fn fenced_node_that_rejoins_gets_no_service_until_fenced() {
    let mut s = web();
    s.domain = Some(domain(true, false, false, &[(1, 1), (2, 2)]));
    let mut h = started_cluster(2, vec![s]);
    h.up(&[2]);
    h.up(&[1, 2]); // back without having been fenced
    assert!(h.actions().is_empty());
    assert_eq!(h.svc("web").state, State::Recovering);
    h.fenced(1); // fenced while a member: it must leave and rejoin first
    h.settle();
    assert_eq!(h.svc("web").owner, Some(n(2)));
    h.up(&[2]);
    h.up(&[1, 2]);
    h.settle();
    assert_eq!(
        h.svc("web").owner,
        Some(n(1)),
        "failback after a clean rejoin"
    );
}

fn vm() -> ServiceSpec {
    let mut s = ServiceSpec::new("guest", ServiceKind::Vm);
    s.domain = Some(domain(true, false, false, &[(1, 1), (2, 2), (3, 3)]));
    s
}

#[test]
fn vm_relocate_and_failback_use_live_migration() {
    let mut h = started_cluster(3, vec![vm()]);
    assert_eq!(h.svc("guest").owner, Some(n(1)));
    h.req(Request::Relocate {
        service: "guest".into(),
        node: None,
    })
    .unwrap();
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(src, Action::Migrate { to, mode: MigrateMode::Live, .. })] if *src == n(1) && *to == n(2)),
        "{acts:?}"
    );
    assert_eq!(h.svc("guest").state, State::Migrating);
    h.report(acts[0].0, &acts[0].1, true);
    // The source handed it over; the owner is still the source until the
    // target reports the guest running there.
    let v = h.svc("guest");
    assert_eq!(
        (v.state, v.owner, v.migrating_to),
        (State::Migrating, Some(n(1)), Some(n(2))),
        "{}",
        v.reason
    );
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(t, Action::ConfirmIncoming { .. })] if *t == n(2)),
        "{acts:?}"
    );
    h.report(acts[0].0, &acts[0].1, true);
    let v = h.svc("guest");
    assert_eq!(
        (v.state, v.owner, v.last_owner),
        (State::Started, Some(n(2)), Some(n(1)))
    );
    // Only now does the source end its paused copy.
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(s, Action::FinishMigration { .. })] if *s == n(1)),
        "{acts:?}"
    );
    h.report(acts[0].0, &acts[0].1, true);
    assert!(h.actions().is_empty(), "no failback outside a transition");
    // Node 3 joins again: a transition, so the ordered domain fails back by migration.
    h.up(&[1, 2]);
    h.up(&[1, 2, 3]);
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(s, Action::Migrate { to, .. })] if *s == n(2) && *to == n(1)),
        "{acts:?}"
    );
}

/// Relocate `guest` from n1 to n2 and answer the source's Migrate with
/// success; returns the ConfirmIncoming the target was sent.
fn handed_over(h: &mut H) -> Action {
    h.req(Request::Migrate {
        service: "guest".into(),
        node: n(2),
    })
    .unwrap();
    let acts = h.actions();
    assert!(matches!(&acts[..], [(s, Action::Migrate { .. })] if *s == n(1)));
    h.report(n(1), &acts[0].1, true);
    let acts = h.actions();
    match &acts[..] {
        [(t, a @ Action::ConfirmIncoming { .. })] if *t == n(2) => a.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_target_that_does_not_confirm_is_stopped_and_the_guest_started_again() {
    let mut s = vm();
    s.domain = None;
    let mut h = started_cluster(2, vec![s]);
    let confirm = handed_over(&mut h);
    h.report(n(2), &confirm, false);
    let v = h.svc("guest");
    assert_eq!(
        (v.state, v.owner),
        (State::Stopping, Some(n(2))),
        "{}",
        v.reason
    );
    let mut acts = h.actions();
    acts.sort_by_key(|(n, _)| *n);
    assert!(
        matches!(&acts[..], [(s, Action::FinishMigration { .. }), (t, Action::StopService { .. })] if *s == n(1) && *t == n(2)),
        "the source's paused copy is ended and the target's stopped: {acts:?}"
    );
    for (node, a) in &acts {
        h.report(*node, a, true);
    }
    // Started again on the source (the target is avoided after its failure).
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(s, Action::StartService { .. })] if *s == n(1)),
        "{acts:?}"
    );
    h.report(n(1), &acts[0].1, true);
    let v = h.svc("guest");
    assert_eq!((v.state, v.owner), (State::Started, Some(n(1))));
}

#[test]
fn a_target_lost_after_the_handover_is_fenced_before_the_guest_starts_again() {
    let mut s = vm();
    s.domain = None;
    let mut h = started_cluster(2, vec![s]);
    let _confirm = handed_over(&mut h);
    h.up(&[1]);
    let v = h.svc("guest");
    assert_eq!(v.state, State::Recovering, "{}", v.reason);
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(s, Action::FinishMigration { .. })] if *s == n(1)),
        "only the source's paused copy is ended: {acts:?}"
    );
    h.report(n(1), &acts[0].1, true);
    assert!(h.actions().is_empty(), "nothing starts before n2 is fenced");
    h.fenced(2);
    h.settle();
    let v = h.svc("guest");
    assert_eq!((v.state, v.owner), (State::Started, Some(n(1))));
}

#[test]
fn a_source_lost_after_the_handover_leaves_the_guest_to_the_target() {
    let mut s = vm();
    s.domain = None;
    let mut h = started_cluster(3, vec![s]);
    let confirm = handed_over(&mut h);
    h.up(&[2, 3]);
    let v = h.svc("guest");
    assert_eq!(v.state, State::Starting, "{}", v.reason);
    assert!(h.actions().is_empty());
    h.report(n(2), &confirm, true);
    let v = h.svc("guest");
    assert_eq!(
        (v.state, v.owner),
        (State::Started, Some(n(2))),
        "{}",
        v.reason
    );
    assert!(
        h.actions().is_empty(),
        "no FinishMigration to a lost source, and no wait for its fencing"
    );
}

#[test]
fn a_leaving_source_is_ready_only_after_its_paused_copy_is_ended() {
    let mut s = vm();
    s.domain = None;
    let mut h = started_cluster(2, vec![s]);
    h.feed(Input::Leave { node: n(1) }).unwrap();
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(s, Action::Migrate { .. })] if *s == n(1)),
        "{acts:?}"
    );
    h.report(n(1), &acts[0].1, true);
    assert!(!h.s[0].ready_to_leave(n(1)), "handed over, not confirmed");
    let acts = h.actions();
    h.report(n(2), &acts[0].1, true);
    assert!(
        !h.s[0].ready_to_leave(n(1)),
        "confirmed, paused copy not ended"
    );
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(s, Action::FinishMigration { .. })] if *s == n(1)),
        "{acts:?}"
    );
    h.report(n(1), &acts[0].1, true);
    assert!(h.s[0].ready_to_leave(n(1)));
}

#[test]
fn failed_migration_keeps_vm_on_source_and_next_move_is_cold() {
    let mut s = vm();
    s.domain = None;
    let mut h = started_cluster(2, vec![s]);
    let r = Request::Migrate {
        service: "guest".into(),
        node: n(2),
    };
    h.req(r.clone()).unwrap();
    let acts = h.actions();
    h.report(acts[0].0, &acts[0].1, false);
    let v = h.svc("guest");
    assert_eq!((v.state, v.owner), (State::Started, Some(n(1))));
    h.req(Request::Relocate {
        service: "guest".into(),
        node: Some(n(2)),
    })
    .unwrap();
    let acts = h.actions();
    assert!(matches!(acts[0].1, Action::StopService { .. }), "{acts:?}");
    h.report(acts[0].0, &acts[0].1, true);
    h.settle();
    assert_eq!(h.svc("guest").owner, Some(n(2)));
    let e = h
        .req(Request::Migrate {
            service: "web".into(),
            node: n(1),
        })
        .unwrap_err();
    assert!(matches!(
        e,
        InputError::Request(RequestError::NoSuchService(_))
    ));
}

#[test]
fn migrate_refused_for_plain_services() {
    let mut h = started_cluster(2, vec![web()]);
    let e = h
        .req(Request::Migrate {
            service: "web".into(),
            node: n(2),
        })
        .unwrap_err();
    assert!(matches!(
        e,
        InputError::Request(RequestError::NotMigratable(_))
    ));
}

#[test]
fn source_lost_mid_migration_cleans_target_and_waits_for_fence() {
    let mut s = vm();
    s.domain = None;
    let mut h = started_cluster(3, vec![s]);
    h.req(Request::Migrate {
        service: "guest".into(),
        node: n(2),
    })
    .unwrap();
    let _ = h.actions(); // the source dies before reporting
    h.up(&[2, 3]);
    let v = h.svc("guest");
    assert_eq!(
        (v.state, v.owner),
        (State::Stopping, Some(n(2))),
        "{}",
        v.reason
    );
    let acts = h.actions();
    assert!(matches!(&acts[..], [(t, Action::StopService { .. })] if *t == n(2)));
    h.report(acts[0].0, &acts[0].1, true);
    assert_eq!(h.svc("guest").state, State::Recovering);
    assert!(h.actions().is_empty());
    h.fenced(1);
    h.settle();
    assert_eq!(h.svc("guest").state, State::Started);
}

#[test]
fn clean_leave_moves_services_then_leaves_unfenced() {
    let mut s = web();
    s.domain = Some(domain(true, false, false, &[(1, 1), (2, 2)]));
    let mut g = vm();
    g.domain = Some(domain(true, false, false, &[(1, 1), (2, 2)]));
    let mut h = started_cluster(2, vec![s, g]);
    assert_eq!(h.svc("web").owner, Some(n(1)));
    assert_eq!(h.svc("guest").owner, Some(n(1)));
    assert!(
        !h.s[0].ready_to_leave(n(2)),
        "not ready before its Leave was delivered, even owning nothing"
    );
    h.feed(Input::Leave { node: n(1) }).unwrap();
    assert!(!h.s[0].ready_to_leave(n(1)));
    let acts = h.actions();
    assert!(acts
        .iter()
        .any(|(_, a)| matches!(a, Action::Migrate { .. })));
    assert!(acts
        .iter()
        .any(|(_, a)| matches!(a, Action::StopService { .. })));
    for (node, a) in &acts {
        h.report(*node, a, true);
    }
    h.settle();
    assert!(h.s[1].ready_to_leave(n(1)));
    assert_eq!(h.svc("web").owner, Some(n(2)));
    assert_eq!(h.svc("guest").owner, Some(n(2)));
    h.up(&[2]);
    let v = h.s[0].view();
    assert!(!v.members[0].fence_pending, "a clean leave is not fenced");
    assert_eq!(h.svc("web").state, State::Started);
}

#[test]
fn start_order_follows_rgmanager_levels_and_stop_reverses() {
    let mut fs = ResourceSpec::new("fs", "/data");
    fs.children = vec![
        ResourceSpec::new("script", "child-script"),
        ResourceSpec::new("nfsexport", "exp"),
    ];
    let res = vec![
        ResourceSpec::new("script", "/etc/init.d/app"),
        ResourceSpec::new("ocf:heartbeat:Dummy", "dummy"),
        ResourceSpec::new("ip", "10.0.0.1"),
        fs,
        ResourceSpec::new("lvm", "vg0"),
    ];
    let names: Vec<String> = start_order(&res).into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "vg0",
            "/data",
            "exp",
            "child-script",
            "10.0.0.1",
            "/etc/init.d/app",
            "dummy"
        ]
    );
    let stop: Vec<String> = stop_order(&res).into_iter().map(|s| s.name).collect();
    assert_eq!(stop.first().map(String::as_str), Some("dummy"));
    assert_eq!(stop.last().map(String::as_str), Some("vg0"));
}

#[test]
fn config_changes_add_remove_and_refuse_bad_versions() {
    let mut h = started_cluster(2, vec![web()]);
    let mut cfg = h.s[0].config().clone();
    let e = h.feed(Input::Config(cfg.clone())).unwrap_err();
    assert!(matches!(
        e,
        InputError::Config(ConfigError::StaleVersion { .. })
    ));
    cfg.config_version = 2;
    let mut db = web();
    db.name = "db".into();
    db.depend = Some("db".into());
    cfg.services.push(db);
    let e = h.feed(Input::Config(cfg.clone())).unwrap_err();
    assert!(matches!(
        e,
        InputError::Config(ConfigError::UnknownDependency { .. })
    ));
    cfg.services[1].depend = None;
    cfg.services.remove(0); // remove web
    h.feed(Input::Config(cfg)).unwrap();
    h.settle();
    assert!(
        h.s[0].service("web").is_none(),
        "removed service stopped and forgotten"
    );
    assert_eq!(h.svc("db").state, State::Started);
    assert_eq!(h.s[0].view().config_version, 2);
}

#[test]
fn dependency_cycle_is_refused() {
    let mut a = web();
    a.name = "a".into();
    a.depend = Some("b".into());
    let mut b = web();
    b.name = "b".into();
    b.depend = Some("a".into());
    let cfg = ClusterSpec {
        config_version: 1,
        startup_fencing: false,
        two_node: false,
        nodes: nodes(2),
        services: vec![a, b],
    };
    let e = Scheduler::new(n(1), cfg).unwrap_err();
    assert!(matches!(e, ConfigError::DependencyCycle(_)), "{e}");
}

#[test]
fn stale_and_foreign_results_are_counted_and_ignored() {
    let mut h = started_cluster(2, vec![web()]);
    let v = h.svc("web");
    let owner = v.owner.unwrap();
    let other = if owner == n(1) { n(2) } else { n(1) };
    for (node, op, outcome) in [
        (owner, 999, Outcome::StopOk),
        (other, 1, Outcome::StartOk),
        (owner, 1, Outcome::MigrateOk),
    ] {
        h.feed(Input::Result(Report {
            node,
            service: "web".into(),
            op,
            outcome,
        }))
        .unwrap();
    }
    h.feed(Input::Result(Report {
        node: owner,
        service: "nope".into(),
        op: 1,
        outcome: Outcome::StopOk,
    }))
    .unwrap();
    assert_eq!(h.s[0].stats().stale_results, 3);
    assert_eq!(h.s[0].stats().unknown_services, 1);
    assert_eq!(h.svc("web"), v, "nothing changed");
}

#[test]
fn status_checks_run_only_on_the_owner_at_their_interval() {
    let mut h = started_cluster(2, vec![web()]);
    let owner = h.svc("web").owner.unwrap();
    let (oi, xi) = if owner == n(1) { (0, 1) } else { (1, 0) };
    assert!(h.s[xi].poll_deadline().is_none());
    let due = h.s[oi].poll_deadline().unwrap();
    h.s[oi].handle_timeout(Instant(due.0 - 1));
    assert!(h.s[oi].drain_actions().is_empty());
    h.s[oi].handle_timeout(due);
    assert!(matches!(
        h.s[oi].drain_actions()[..],
        [Action::StatusCheck { .. }]
    ));
    assert_eq!(h.s[oi].poll_deadline(), Some(due + Duration::from_secs(10)));
    h.req(Request::Freeze {
        service: "web".into(),
    })
    .unwrap();
    assert!(
        h.s[oi].poll_deadline().is_none(),
        "frozen: no status checks"
    );
}

#[test]
fn snapshot_gives_a_joiner_the_same_view() {
    let mut h = started_cluster(3, vec![web()]);
    let snap = h.s[0].snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    let j = Scheduler::from_snapshot(n(3), back, h.now());
    assert_eq!(j.view(), h.s[0].view());
    h.s[2] = j;
    h.up(&[1, 2, 3]);
    h.settle();
}

#[test]
fn operator_stop_is_held_until_next_transition() {
    let mut h = started_cluster(2, vec![web()]);
    h.req(Request::Stop {
        service: "web".into(),
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("web").state, State::Stopped);
    h.quorum(true);
    assert!(h.actions().is_empty());
    h.up(&[1, 2]);
    h.settle();
    assert_eq!(h.svc("web").state, State::Started);
}

#[test]
fn stop_failure_is_failed_until_disabled() {
    let mut h = started_cluster(2, vec![web()]);
    h.req(Request::Restart {
        service: "web".into(),
    })
    .unwrap();
    let acts = h.actions();
    h.report(acts[0].0, &acts[0].1, false);
    let v = h.svc("web");
    assert_eq!(v.state, State::Failed);
    assert!(v.reason.contains("quorate svc disable web"), "{}", v.reason);
    let e = h
        .req(Request::Enable {
            service: "web".into(),
            node: None,
        })
        .unwrap_err();
    assert!(matches!(e, InputError::Request(RequestError::Failed(_))));
    h.req(Request::Disable {
        service: "web".into(),
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("web").state, State::Disabled);
    h.req(Request::Enable {
        service: "web".into(),
        node: Some(n(2)),
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("web").owner, Some(n(2)));
}

#[test]
fn request_errors_say_what_to_do_next() {
    let mut h = started_cluster(2, vec![web()]);
    let e = h
        .req(Request::Relocate {
            service: "web".into(),
            node: Some(n(9)),
        })
        .unwrap_err();
    assert!(e.to_string().contains("no node '9' is configured"), "{e}");
    h.up(&[1]);
    let e = h
        .req(Request::Enable {
            service: "nosuch".into(),
            node: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("quorate status"), "{e}");
}

#[test]
fn failed_starts_expire_and_a_tick_retries() {
    let mut h = H::new(2, vec![web()]);
    h.up(&[1, 2]);
    h.quorum(true);
    for _ in 0..2 {
        let acts = h.actions();
        h.report(acts[0].0, &acts[0].1, false);
        let acts = h.actions();
        h.report(acts[0].0, &acts[0].1, true);
    }
    assert_eq!(h.svc("web").state, State::Stopped);
    let due = h.s[0].recheck_due().expect("a retry is scheduled");
    assert_eq!(h.s[1].recheck_due(), Some(due));
    assert_eq!(h.s[0].tick_sender(), Some(n(1)));
    h.feed(Input::Tick).unwrap(); // too early: nothing expired
    assert!(h.actions().is_empty());
    h.t = due.as_nanos() / 1_000_000;
    h.feed(Input::Tick).unwrap();
    h.settle();
    assert_eq!(h.svc("web").state, State::Started);
    assert!(h.s[0].recheck_due().is_none());
}

#[test]
fn isolated_node_stops_its_services_and_starts_nothing() {
    // Regression found by the simulator: a partitioned node must never act on
    // a shrunken membership while still believing it is quorate.
    let mut a = web();
    a.name = "a".into();
    let mut b = web();
    b.name = "b".into();
    b.domain = Some(domain(true, false, false, &[(2, 1)]));
    let h = started_cluster(3, vec![a, b]);
    let mut lone = h.s.into_iter().next().unwrap(); // node 1's replica
    assert_eq!(lone.service("a").unwrap().owner, Some(n(1)));
    assert_eq!(lone.service("b").unwrap().owner, Some(n(2)));
    lone.handle(
        Instant(10_000_000_000),
        Input::Membership {
            members: vec![n(1)],
            quorate: false,
        },
    )
    .unwrap();
    let acts = lone.drain_actions();
    assert!(
        matches!(&acts[..], [Action::StopService { service, .. }] if service == "a"),
        "{acts:?}"
    );
    assert_eq!(lone.service("b").unwrap().state, State::Recovering);
}

#[test]
fn leaving_node_with_restricted_only_service_stops_it_then_is_ready() {
    let mut s = web();
    s.domain = Some(domain(false, true, false, &[(1, 1)]));
    let mut h = started_cluster(2, vec![s]);
    assert_eq!(h.svc("web").owner, Some(n(1)));
    h.feed(Input::Leave { node: n(1) }).unwrap();
    h.settle();
    let v = h.svc("web");
    assert_eq!(v.state, State::Stopped);
    assert!(h.s[0].ready_to_leave(n(1)));
    assert!(v.reason.contains("restricted"), "{}", v.reason);
}

#[test]
fn a_leaving_node_that_restarts_before_it_left_may_run_services_again() {
    // Seed 1028 of the cluster simulator: n1 asked to leave, lost its power
    // and booted again before the others saw it go; the new incarnation
    // stayed "leaving" and its restricted service never started again.
    let mut s = web();
    s.domain = Some(domain(false, true, false, &[(1, 1)]));
    let mut h = started_cluster(2, vec![s]);
    h.feed(Input::Leave { node: n(1) }).unwrap();
    h.settle();
    assert_eq!(h.svc("web").state, State::Stopped);
    h.feed(Input::Restarted { node: n(1) }).unwrap();
    h.settle();
    assert!(
        !h.s[0].ready_to_leave(n(1)),
        "the new incarnation is not leaving"
    );
    let v = h.svc("web");
    assert_eq!(v.state, State::Started, "{}", v.reason);
    assert_eq!(v.owner, Some(n(1)));
}

#[test]
fn config_change_moves_service_out_of_a_shrunken_restricted_domain() {
    let mut s = web();
    s.domain = Some(domain(true, true, false, &[(1, 1), (2, 2)]));
    let mut h = started_cluster(2, vec![s]);
    assert_eq!(h.svc("web").owner, Some(n(1)));
    let mut cfg = h.s[0].config().clone();
    cfg.config_version = 2;
    cfg.services[0].domain = Some(domain(true, true, false, &[(2, 1)]));
    h.feed(Input::Config(cfg)).unwrap();
    h.settle();
    assert_eq!(h.svc("web").owner, Some(n(2)));
}

#[test]
fn planned_stop_of_a_dependency_stops_hard_dependents_first() {
    let mut db = web();
    db.name = "db".into();
    let mut app = web();
    app.name = "app".into();
    app.depend = Some("db".into());
    let mut h = started_cluster(2, vec![db, app]);
    h.req(Request::Disable {
        service: "db".into(),
    })
    .unwrap();
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(_, Action::StopService { service, .. })] if service == "app"),
        "only the dependent stops first: {acts:?}"
    );
    assert_eq!(h.svc("db").state, State::Started);
    assert!(
        h.svc("db").reason.contains("stopping app first"),
        "{}",
        h.svc("db").reason
    );
    h.report(acts[0].0, &acts[0].1, true);
    let acts = h.actions();
    assert!(
        matches!(&acts[..], [(_, Action::StopService { service, .. })] if service == "db"),
        "{acts:?}"
    );
    h.report(acts[0].0, &acts[0].1, true);
    assert_eq!(h.svc("db").state, State::Disabled);
    assert_eq!(h.svc("app").state, State::Stopped);
    // Restarting db restarts app around it: app stops, db restarts, app starts.
    h.req(Request::Enable {
        service: "db".into(),
        node: None,
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("app").state, State::Started);
    h.req(Request::Restart {
        service: "db".into(),
    })
    .unwrap();
    let acts = h.actions();
    assert!(matches!(&acts[..], [(_, Action::StopService { service, .. })] if service == "app"));
    h.report(acts[0].0, &acts[0].1, true);
    h.settle();
    assert_eq!(h.svc("db").state, State::Started);
    assert_eq!(h.svc("app").state, State::Started);
}

#[test]
fn enable_without_target_prefers_the_requesting_node() {
    let mut s = web();
    s.autostart = false;
    let mut h = started_cluster(3, vec![s]);
    h.feed(Input::Request {
        from: n(3),
        request: Request::Enable {
            service: "web".into(),
            node: None,
        },
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("web").owner, Some(n(3)));
    // Outside a restricted domain the requester is ignored: domain policy decides.
    let mut r = web();
    r.name = "r".into();
    r.autostart = false;
    r.domain = Some(domain(true, true, false, &[(1, 2), (2, 1)]));
    let mut h = started_cluster(3, vec![r]);
    h.feed(Input::Request {
        from: n(3),
        request: Request::Enable {
            service: "r".into(),
            node: None,
        },
    })
    .unwrap();
    h.settle();
    assert_eq!(h.svc("r").owner, Some(n(2)));
}

#[test]
fn debug_output_never_shows_resource_attribute_values() {
    let mut r = ResourceSpec::new("ocf:heartbeat:mysql", "db");
    r.attrs.insert("password".into(), "s3cret-value".into());
    let mut s = web();
    s.resources = vec![r];
    let mut h = H::new(1, vec![s]);
    h.up(&[1]);
    h.quorum(true);
    let acts = h.actions();
    let dbg = format!("{acts:?} {:?}", h.s[0].config());
    assert!(dbg.contains("password"), "{dbg}");
    assert!(!dbg.contains("s3cret-value"), "{dbg}");
}

#[test]
fn instants_format_as_offset_or_wall_clock() {
    assert_eq!(fmt_instant(Instant(12_300_000_000)), "t+12.300s");
    // 2026-11-25 12:01:03.250 UTC
    let t = Instant((1_795_608_063 * 1000 + 250) * 1_000_000);
    assert_eq!(fmt_instant(t), "12:01:03.250 UTC");
}

/// State transfer (`Input::Held`): a start the adopted state waits on takes
/// the result its node reports holding; one its node never ran is stopped
/// there first and placed again, never left "starting".
#[test]
fn held_operations_finish_or_void_a_start_nobody_will_report() {
    for finished in [true, false] {
        let mut h = H::new(3, vec![web()]);
        h.up(&[1, 2, 3]);
        h.quorum(true);
        let acts = h.actions();
        let (node, op) = match &acts[..] {
            [(node, Action::StartService { op, .. })] => (*node, *op),
            other => panic!("expected one start, got {other:?}"),
        };
        assert_eq!(h.svc("web").state, State::Starting);
        // The start's report is lost with a ring; at the next state transfer
        // the node says what it holds.
        let ops = if finished {
            BTreeMap::from([("web".to_string(), (op, Some(Outcome::StartOk)))])
        } else {
            BTreeMap::new() // never handed to it (or a newer incarnation)
        };
        h.feed(Input::Held {
            node,
            ops,
            upto: op,
        })
        .unwrap();
        if finished {
            assert_eq!(h.svc("web").state, State::Started);
            assert_eq!(h.svc("web").owner, Some(node));
            assert!(h.actions().is_empty());
        } else {
            assert_eq!(h.svc("web").state, State::Stopping, "{:?}", h.svc("web"));
            let acts = h.actions();
            assert!(
                matches!(&acts[..], [(n2, Action::StopService { op: o, .. })] if *n2 == node && *o > op),
                "{acts:?}"
            );
            h.report(acts[0].0, &acts[0].1, true);
            h.settle();
            assert_eq!(h.svc("web").state, State::Started);
        }
        // A start still running there is left alone: its report follows.
        let before = h.svc("web");
        let owner = before.owner.unwrap();
        h.feed(Input::Held {
            node: owner,
            ops: BTreeMap::from([("web".to_string(), (op, None))]),
            upto: u64::MAX,
        })
        .unwrap();
        assert_eq!(h.svc("web"), before);
    }
}

#[test]
fn a_restarted_migration_target_leaves_the_guest_to_its_source() {
    let mut s = vm();
    s.domain = None;
    let mut h = started_cluster(2, vec![s]);
    h.req(Request::Migrate {
        service: "guest".into(),
        node: n(2),
    })
    .unwrap();
    let acts = h.actions();
    assert!(matches!(&acts[..], [(s, Action::Migrate { .. })] if *s == n(1)));
    // The target's daemon restarts mid-way: nothing is stopped anywhere; the
    // source still runs the guest and reports whether it moved.
    h.feed(Input::Restarted { node: n(2) }).unwrap();
    let v = h.svc("guest");
    assert_eq!(
        (v.state, v.owner, v.migrating_to),
        (State::Migrating, Some(n(1)), Some(n(2))),
        "{}",
        v.reason
    );
    assert!(h.actions().is_empty());
    h.report(acts[0].0, &acts[0].1, false);
    let v = h.svc("guest");
    assert_eq!((v.state, v.owner), (State::Started, Some(n(1))));
}

#[test]
fn check_now_queues_a_status_check_only_where_the_service_runs() {
    let mut h = started_cluster(2, vec![web()]);
    let owner = h.svc("web").owner.unwrap();
    let (oi, xi) = if owner == n(1) { (0, 1) } else { (1, 0) };
    let now = h.now();
    assert!(!h.s[xi].check_now(now, "web"));
    assert!(h.s[xi].drain_actions().is_empty());
    assert!(!h.s[oi].check_now(now, "nope"));
    assert!(h.s[oi].check_now(now, "web"));
    assert!(matches!(
        h.s[oi].drain_actions()[..],
        [Action::StatusCheck { .. }]
    ));
    // The next regular check follows one interval later.
    assert_eq!(h.s[oi].poll_deadline(), Some(now + Duration::from_secs(10)));
}
