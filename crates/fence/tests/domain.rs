//! Scripted inputs, exact actions: the fence domain's rules.

use base::{Duration, Instant, NodeId};
use fence::*;
use std::collections::BTreeSet;

fn n(i: u32) -> NodeId {
    NodeId(i)
}
fn t(ms: u64) -> Instant {
    Instant(0) + Duration::from_millis(ms)
}
fn dev(name: &str, agent: &str, extra: &[(&str, &str)]) -> Device {
    let mut a = AgentArgs::new()
        .with("name", name)
        .with("agent", agent)
        .with("ipaddr", "10.0.0.9");
    for (k, v) in extra {
        a.set(*k, *v);
    }
    Device::from_attrs(a).unwrap()
}
fn method(name: &str, devices: Vec<Device>) -> Method {
    Method {
        name: name.into(),
        devices,
    }
}

/// Three nodes; node 3 has two methods: "1" = dual PSU (psu1, psu2), "2" = ipmi.
fn cfg3() -> FenceConfig {
    let mut c = FenceConfig {
        post_fail_delay: Duration::from_secs(5),
        post_join_delay: Some(Duration::from_secs(6)),
        override_time: Duration::from_secs(3),
        agent_timeout: Duration::from_secs(20),
        ..FenceConfig::default()
    };
    for i in 1..=3u32 {
        let psu = |p: u32| {
            dev(
                &format!("psu{p}"),
                "fence_quorate",
                &[("port", &format!("node{i}")), ("passwd", "s3cret")],
            )
        };
        c.nodes.insert(
            n(i),
            NodeFence {
                name: format!("node{i}"),
                methods: vec![
                    method("1", vec![psu(1), psu(2)]),
                    method(
                        "2",
                        vec![dev(
                            "ipmi",
                            "fence_ipmilan",
                            &[("login", "admin"), ("passwd", "pw")],
                        )],
                    ),
                ],
                unfence: vec![dev("san", "fence_scsi", &[("action", "on")])],
            },
        );
    }
    c
}
fn memb(ids: &[u32], quorate: bool) -> Membership {
    Membership {
        members: ids.iter().map(|i| n(*i)).collect::<BTreeSet<_>>(),
        quorate,
    }
}
fn actions(d: &mut FenceDomain) -> Vec<Action> {
    std::iter::from_fn(|| d.poll_action()).collect()
}
fn events(d: &mut FenceDomain) -> Vec<Event> {
    std::iter::from_fn(|| d.poll_event()).collect()
}
fn runs(acts: &[Action]) -> Vec<(String, String, u64)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::RunAgent(r) => Some((r.device.clone(), r.action.clone(), r.run_id)),
            _ => None,
        })
        .collect()
}
fn one_run(d: &mut FenceDomain) -> AgentRun {
    only_run(actions(d))
}
fn only_run(acts: Vec<Action>) -> AgentRun {
    let rs: Vec<AgentRun> = acts
        .into_iter()
        .filter_map(|a| match a {
            Action::RunAgent(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rs.len(), 1, "expected exactly one RunAgent, got {rs:?}");
    rs.into_iter().next().unwrap()
}
/// A domain on node `me` with {1,2,3} formed at t=0, then node 3 lost at t=1s.
fn lost3(me: u32) -> FenceDomain {
    let mut d = FenceDomain::new(n(me), cfg3());
    d.handle_membership(t(0), memb(&[1, 2, 3], true));
    d.handle_membership(t(1000), memb(&[1, 2], true));
    d
}

#[test]
fn post_fail_delay_then_lowest_nodeid_fences() {
    let mut d = lost3(1);
    assert!(actions(&mut d).is_empty(), "nothing before post_fail_delay");
    assert_eq!(d.poll_deadline(), Some(t(6000)));
    assert_eq!(d.status().victims[0].state, VictimState::PostFailDelay);
    d.handle_timeout(t(5999));
    assert!(actions(&mut d).is_empty());
    d.handle_timeout(t(6000));
    let r = one_run(&mut d);
    assert_eq!(
        (
            r.victim,
            r.method_idx,
            r.device_idx,
            r.device.as_str(),
            r.action.as_str()
        ),
        (n(3), 0, 0, "psu1", "off")
    );
    assert_eq!(r.timeout, Duration::from_secs(20));
    assert!(d.blocked().contains(&n(3)));
    assert!(!d.is_fenced(n(3)));

    // Node 2 is not the fencer: it waits for the outcome.
    let mut d2 = lost3(2);
    d2.handle_timeout(t(6000));
    assert!(actions(&mut d2).is_empty());
    assert_eq!(d2.status().victims[0].state, VictimState::WaitingFencer);
    assert_eq!(d2.status().victims[0].fencer, n(1));
    let outcome = FenceOutcome {
        victim: n(3),
        by: n(1),
        kind: OutcomeKind::Fenced {
            method: "1".into(),
            devices: vec!["psu1".into(), "psu2".into()],
        },
    };
    d2.handle_fence_outcome(t(7000), outcome);
    assert!(d2.is_fenced(n(3)));
    assert!(d2.blocked().is_empty());
    assert!(events(&mut d2).contains(&Event::Fenced {
        victim: n(3),
        method: "1".into(),
        device: "psu1,psu2".into(),
        by: n(1),
        at: t(7000),
        manual: false
    }));
}

#[test]
fn dual_psu_off_off_on_on_then_broadcast_and_fenced_event() {
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    let mut seen = Vec::new();
    let mut now = 6000;
    loop {
        let acts = actions(&mut d);
        if let Some(Action::Broadcast(o)) = acts.iter().find(|a| matches!(a, Action::Broadcast(_)))
        {
            assert_eq!(
                o.kind,
                OutcomeKind::Fenced {
                    method: "1".into(),
                    devices: vec!["psu1".into(), "psu2".into()]
                }
            );
            // Delivered back in totem order: only now is the victim fenced.
            assert!(!d.is_fenced(n(3)));
            assert_eq!(d.status().victims[0].state, VictimState::Announced);
            d.handle_fence_outcome(t(now + 1), o.clone());
            break;
        }
        let r = runs(&acts);
        assert_eq!(r.len(), 1, "{acts:?}");
        seen.push((r[0].0.clone(), r[0].1.clone()));
        now += 100;
        d.handle_agent_result(t(now), r[0].2, Ok(()));
    }
    assert_eq!(
        seen,
        vec![
            ("psu1".into(), "off".into()),
            ("psu2".into(), "off".into()),
            ("psu1".into(), "on".into()),
            ("psu2".into(), "on".into())
        ]
    );
    assert!(d.is_fenced(n(3)));
    assert!(d.blocked().is_empty());
}

#[test]
fn methods_in_order_failure_falls_through_and_on_failure_is_dont_care() {
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    // psu1 off ok, psu2 off fails -> method 2.
    let r = one_run(&mut d);
    d.handle_agent_result(t(6100), r.run_id, Ok(()));
    let r = one_run(&mut d);
    assert_eq!((r.device.as_str(), r.action.as_str()), ("psu2", "off"));
    d.handle_agent_result(t(6200), r.run_id, Err("exit 1".into()));
    let r = one_run(&mut d);
    assert_eq!(
        (
            r.method_idx,
            r.device.as_str(),
            r.agent.as_str(),
            r.action.as_str()
        ),
        (1, "ipmi", "fence_ipmilan", "reboot")
    );
    assert_eq!(
        d.status().victims[0].last_error.as_deref(),
        Some("method 1 device psu2: exit 1"),
        "the error names the method and device it came from, while the next method runs"
    );
    d.handle_agent_result(t(6300), r.run_id, Ok(()));
    let acts = actions(&mut d);
    assert_eq!(acts.len(), 1);
    assert!(
        matches!(&acts[0], Action::Broadcast(FenceOutcome { kind: OutcomeKind::Fenced { method, .. }, .. }) if method == "2")
    );

    // A failing "on" after both offs succeeded does not fail the method.
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    for expect in ["off", "off", "on", "on"] {
        let r = one_run(&mut d);
        assert_eq!(r.action, expect);
        let res = if expect == "on" {
            Err("outlet stuck".to_string())
        } else {
            Ok(())
        };
        d.handle_agent_result(t(6100), r.run_id, res);
    }
    assert!(
        matches!(&actions(&mut d)[..], [Action::Broadcast(FenceOutcome { kind: OutcomeKind::Fenced { method, .. }, .. })] if method == "1")
    );
}

#[test]
fn retries_forever_after_override_time() {
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    let mut now = 6000;
    for round in 1..=5u32 {
        // method 1: psu1 off fails; method 2: ipmi fails.
        let r = one_run(&mut d);
        assert_eq!(
            (r.method_idx, r.device.as_str()),
            (0, "psu1"),
            "round {round}"
        );
        now += 10;
        d.handle_agent_result(t(now), r.run_id, Err("timed out".into()));
        let r = one_run(&mut d);
        assert_eq!((r.method_idx, r.device.as_str()), (1, "ipmi"));
        now += 10;
        d.handle_agent_result(t(now), r.run_id, Err("exit 1".into()));
        assert!(actions(&mut d).is_empty());
        let st = d.status();
        assert_eq!(st.victims[0].state, VictimState::RetryWait);
        assert_eq!(st.victims[0].rounds, round);
        assert_eq!(st.victims[0].tries, 2 * round);
        assert_eq!(st.victims[0].last_method.as_deref(), Some("2"));
        assert_eq!(d.poll_deadline(), Some(t(now + 3000)));
        assert!(events(&mut d).contains(&Event::RoundFailed {
            victim: n(3),
            rounds: round,
            retry_at: t(now + 3000)
        }));
        d.handle_timeout(t(now + 2999));
        assert!(actions(&mut d).is_empty());
        now += 3000;
        d.handle_timeout(t(now));
    }
    assert!(!d.is_fenced(n(3)));
}

#[test]
fn no_fencing_while_inquorate_resumes_with_quorum() {
    let mut d = FenceDomain::new(n(1), cfg3());
    d.handle_membership(t(0), memb(&[1, 2, 3], true));
    d.handle_membership(t(1000), memb(&[1], false));
    for ms in [6000, 60_000, 600_000] {
        d.handle_timeout(t(ms));
        assert!(actions(&mut d).is_empty(), "fenced while inquorate at {ms}");
    }
    let st = d.status();
    assert!(
        st.victims
            .iter()
            .all(|v| v.state == VictimState::WaitingQuorum),
        "{st:?}"
    );
    // Quorum returns with node 2: node 3 is fenced, lowest first.
    d.handle_membership(t(700_000), memb(&[1, 2], true));
    let r = one_run(&mut d);
    assert_eq!(r.victim, n(3));
    // Quorum lost while the agent runs: its success still counts, nothing new starts.
    d.handle_membership(t(700_001), memb(&[1], false));
    assert!(events(&mut d)
        .iter()
        .any(|e| matches!(e, Event::Postponed { .. })));
    d.handle_agent_result(t(700_100), r.run_id, Ok(()));
    assert!(
        actions(&mut d).is_empty(),
        "next step started while inquorate"
    );
    assert_eq!(
        d.status()
            .victims
            .iter()
            .find(|v| v.node == n(3))
            .unwrap()
            .state,
        VictimState::WaitingQuorum
    );
}

#[test]
fn victim_rejoining_before_fencing_starts_is_not_fenced() {
    let mut d = lost3(1);
    let mut d2 = lost3(2);
    d.handle_membership(t(3000), memb(&[1, 2, 3], true));
    d2.handle_membership(t(3000), memb(&[1, 2, 3], true));
    let acts = actions(&mut d);
    let o = match &acts[..] {
        [Action::Broadcast(o)] => o.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(o.kind, OutcomeKind::Rejoined);
    // The non-fencer says so too (the fencer may not know the victim); duplicates are harmless.
    let o2 = match &actions(&mut d2)[..] {
        [Action::Broadcast(o)] => o.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((o2.by, &o2.kind), (n(2), &OutcomeKind::Rejoined));
    for dom in [&mut d, &mut d2] {
        dom.handle_fence_outcome(t(3001), o.clone());
        dom.handle_fence_outcome(t(3001), o2.clone());
        assert_eq!(dom.status().ignored_outcomes, 1);
        dom.handle_timeout(t(100_000));
        assert!(runs(&actions(dom)).is_empty());
        assert!(dom.blocked().is_empty());
        assert!(!dom.is_fenced(n(3)));
        assert!(events(dom).contains(&Event::Rejoined { victim: n(3) }));
    }
    // Once fencing has started, rejoining does not stop it.
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    let r = one_run(&mut d);
    d.handle_membership(t(6001), memb(&[1, 2, 3], true));
    assert!(actions(&mut d).is_empty());
    // A Rejoined from a member that had not started does not stop the fencer.
    d.handle_fence_outcome(
        t(6001),
        FenceOutcome {
            victim: n(3),
            by: n(2),
            kind: OutcomeKind::Rejoined,
        },
    );
    assert_eq!(d.blocked(), vec![n(3)]);
    d.handle_agent_result(t(6002), r.run_id, Ok(()));
    assert_eq!(one_run(&mut d).device, "psu2");
}

#[test]
fn ack_manual_ends_fencing_and_drops_stale_results() {
    let mut d = lost3(1);
    assert_eq!(d.ack_manual(t(0), n(2)), Err(FenceError::NotPending(n(2))));
    d.handle_timeout(t(6000));
    let r = one_run(&mut d);
    d.ack_manual(t(6500), n(3)).unwrap();
    let o = match &actions(&mut d)[..] {
        [Action::Broadcast(o)] => o.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        o,
        FenceOutcome {
            victim: n(3),
            by: n(1),
            kind: OutcomeKind::ManualAck
        }
    );
    d.handle_fence_outcome(t(6600), o);
    assert!(d.is_fenced(n(3)));
    assert!(events(&mut d).contains(&Event::Fenced {
        victim: n(3),
        method: "manual".into(),
        device: "manual".into(),
        by: n(1),
        at: t(6600),
        manual: true
    }));
    d.handle_agent_result(t(6700), r.run_id, Ok(()));
    assert!(actions(&mut d).is_empty());
    assert_eq!(d.status().stale_results, 1);
    // A fenced node that rejoins is alive again.
    d.handle_membership(t(9000), memb(&[1, 2, 3], true));
    assert!(!d.is_fenced(n(3)));
}

#[test]
fn fencer_leaves_next_lowest_takes_over() {
    let mut d = lost3(2);
    d.handle_timeout(t(6000));
    assert!(actions(&mut d).is_empty());
    // Node 1 (the fencer) dies too: node 2 fences node 3 now (its delay is over), then node 1.
    d.handle_membership(t(7000), memb(&[2], true));
    let r = one_run(&mut d);
    assert_eq!(r.victim, n(3));
    assert_eq!(
        d.status()
            .victims
            .iter()
            .map(|v| (v.node, v.fencer))
            .collect::<Vec<_>>(),
        vec![(n(1), n(2)), (n(3), n(2))]
    );
}

#[test]
fn startup_fencing_after_post_join_delay_unless_clean_start() {
    let mut d = FenceDomain::new(n(1), cfg3());
    d.handle_membership(t(0), memb(&[1], false));
    d.handle_membership(t(1000), memb(&[1, 2], true));
    assert_eq!(d.poll_deadline(), Some(t(7000)));
    d.handle_timeout(t(6999));
    assert!(actions(&mut d).is_empty());
    // Node 2 (not the lowest) does not decide; node 1 broadcasts its decision.
    let mut d2 = FenceDomain::new(n(2), cfg3());
    d2.handle_membership(t(1000), memb(&[1, 2], true));
    d2.handle_timeout(t(7000));
    assert!(actions(&mut d2).is_empty());
    d.handle_timeout(t(7000));
    let o = match &actions(&mut d)[..] {
        [Action::Broadcast(o)] => o.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        o,
        FenceOutcome {
            victim: n(3),
            by: n(1),
            kind: OutcomeKind::StartupAbsent
        }
    );
    d.handle_fence_outcome(t(7001), o.clone());
    d2.handle_fence_outcome(t(7001), o);
    let r = one_run(&mut d);
    assert_eq!(r.victim, n(3));
    assert_eq!(d.status().victims[0].reason, VictimReason::StartupAbsent);
    assert_eq!(d2.status().victims[0].state, VictimState::WaitingFencer);
    assert_eq!(d2.blocked(), vec![n(3)]);

    // A node that shows up within post_join_delay is not fenced.
    let mut d = FenceDomain::new(n(1), cfg3());
    d.handle_membership(t(0), memb(&[1, 2], true));
    d.handle_membership(t(3000), memb(&[1, 2, 3], true));
    d.handle_timeout(t(6000));
    assert!(actions(&mut d).is_empty());
    assert!(d.blocked().is_empty());

    let mut c = cfg3();
    c.clean_start = true;
    let mut d = FenceDomain::new(n(1), c);
    d.handle_membership(t(0), memb(&[1, 2], true));
    d.handle_timeout(t(100_000));
    assert!(actions(&mut d).is_empty());
    assert_eq!(d.poll_deadline(), None);
}

#[test]
fn two_node_race_device_delay_lets_preferred_node_win() {
    // Two nodes; the device that fences node 1 has delay=5: node 1 is preferred.
    let mut c = FenceConfig {
        post_fail_delay: Duration::ZERO,
        ..FenceConfig::default()
    };
    c.nodes.insert(
        n(1),
        NodeFence {
            name: "node1".into(),
            methods: vec![method(
                "1",
                vec![dev(
                    "ps",
                    "fence_quorate",
                    &[("port", "node1"), ("delay", "5")],
                )],
            )],
            unfence: vec![],
        },
    );
    c.nodes.insert(
        n(2),
        NodeFence {
            name: "node2".into(),
            methods: vec![method(
                "1",
                vec![dev("ps", "fence_quorate", &[("port", "node2")])],
            )],
            unfence: vec![],
        },
    );
    let mut a = FenceDomain::new(n(1), c.clone());
    let mut b = FenceDomain::new(n(2), c);
    for d in [&mut a, &mut b] {
        d.handle_membership(t(0), memb(&[1, 2], true));
    }
    // Split: each side alone and quorate (two_node).
    a.handle_membership(t(1000), memb(&[1], true));
    b.handle_membership(t(1000), memb(&[2], true));
    let ra = one_run(&mut a);
    assert_eq!((ra.victim, ra.args.get("port")), (n(2), Some("node2")));
    assert!(actions(&mut b).is_empty(), "node 2 must wait its delay");
    assert_eq!(b.status().victims[0].state, VictimState::DeviceDelay);
    assert_eq!(b.poll_deadline(), Some(t(6000)));
    // The delay is the core's; the agent never sees delay=.
    b.handle_timeout(t(6000));
    let rb = one_run(&mut b);
    assert_eq!(rb.args.get("delay"), None);
}

#[test]
fn agent_args_carry_action_nodename_and_hide_secrets() {
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    let r = one_run(&mut d);
    assert_eq!(r.args.get("action"), Some("off"));
    assert_eq!(r.args.get("nodename"), Some("node3"));
    assert_eq!(r.args.get("port"), Some("node3"));
    assert_eq!(r.args.get("passwd"), Some("s3cret"));
    assert_eq!(r.args.get("agent"), None);
    assert_eq!(r.args.get("name"), None);
    let printed = format!("{r:?} {}", serde_json::to_string(&r).unwrap());
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(r.args.to_stdin().contains("passwd=s3cret\n"));
}

#[test]
fn watchdog_counts_a_silent_driver_as_failure() {
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    let r = one_run(&mut d);
    assert_eq!(d.poll_deadline(), Some(t(6000 + 25_000)));
    d.handle_timeout(t(31_000));
    let r2 = one_run(&mut d);
    assert_eq!(
        r2.method_idx, 1,
        "first method failed by watchdog, second tried"
    );
    d.handle_agent_result(t(31_001), r.run_id, Ok(()));
    assert_eq!(d.status().stale_results, 1);
}

#[test]
fn unfence_runs_on_devices_and_reports() {
    let mut d = FenceDomain::new(n(1), cfg3());
    d.unfence(t(0), n(1)).unwrap();
    let r = one_run(&mut d);
    assert_eq!(
        (
            r.kind,
            r.device.as_str(),
            r.action.as_str(),
            r.agent.as_str()
        ),
        (JobKind::Unfence, "san", "on", "fence_scsi")
    );
    d.handle_agent_result(t(10), r.run_id, Ok(()));
    assert!(events(&mut d).contains(&Event::Unfenced { node: n(1) }));
    let mut c = cfg3();
    c.nodes.get_mut(&n(2)).unwrap().unfence.clear();
    let mut d = FenceDomain::new(n(1), c);
    assert_eq!(
        d.unfence(t(0), n(2)),
        Err(FenceError::NoUnfenceDevices(n(2)))
    );
}

#[test]
fn operator_fence_of_a_member_is_not_repeated_when_it_leaves() {
    let mut d = FenceDomain::new(n(2), cfg3());
    d.handle_membership(t(0), memb(&[1, 2, 3], true));
    assert_eq!(
        d.fence_node(t(10), n(2)),
        Err(FenceError::CannotFenceSelf(n(2)))
    );
    d.fence_node(t(10), n(3)).unwrap();
    let mut now = 10;
    let o = loop {
        let acts = actions(&mut d);
        if let Some(Action::Broadcast(o)) = acts.first() {
            break o.clone();
        }
        let r = only_run(acts);
        now += 1;
        d.handle_agent_result(t(now), r.run_id, Ok(()));
    };
    assert_eq!(o.by, n(2));
    d.handle_fence_outcome(t(now + 1), o);
    d.handle_membership(t(now + 2), memb(&[1, 2], true));
    d.handle_timeout(t(now + 100_000));
    assert!(actions(&mut d).is_empty());
    assert!(d.is_fenced(n(3)));
}

#[test]
fn device_attrs_are_validated_with_clear_errors() {
    let base = || AgentArgs::new().with("name", "d").with("agent", "fence_x");
    let d = Device::from_attrs(
        base()
            .with("option", "off")
            .with("delay", "2.5")
            .with("timeout", "7"),
    )
    .unwrap();
    assert_eq!(
        (d.action.as_deref(), d.delay, d.timeout),
        (
            Some("off"),
            Duration::from_millis(2500),
            Some(Duration::from_secs(7))
        )
    );
    assert!(d.args.is_empty());
    let e = Device::from_attrs(base().with("action", "x"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a fence action"), "{e}");
    let e = Device::from_attrs(base().with("delay", "soon"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("delay=\"soon\""), "{e}");
    let e = Device::from_attrs(AgentArgs::new().with("name", "d"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no agent="), "{e}");
}

#[test]
fn status_text_json_and_outcome_wire_form() {
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    let r = one_run(&mut d);
    d.handle_agent_result(
        t(6100),
        r.run_id,
        Err("fence agent fence_quorate action off failed with exit code 1: no outlet".into()),
    );
    let st = d.status();
    let text = st.to_string();
    assert!(
        text.contains("BLOCKED waiting on fencing of 1 node(s)"),
        "{text}"
    );
    assert!(
        text.contains("node3 (node 3): agent running; fencer 1; tries 1"),
        "{text}"
    );
    assert!(
        text.contains("last error: method 1 device psu1: fence agent fence_quorate"),
        "{text}"
    );
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["victims"][0]["state"], "running_agent");
    assert_eq!(json["victims"][0]["last_method"], "2");
    let o = FenceOutcome {
        victim: n(3),
        by: n(1),
        kind: OutcomeKind::Fenced {
            method: "1".into(),
            devices: vec!["a".into()],
        },
    };
    assert_eq!(FenceOutcome::decode(&o.encode()).unwrap(), o);
    assert!(matches!(
        FenceOutcome::decode(b"\xff\x00garbage"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        FenceOutcome::decode(&vec![b' '; 5000]),
        Err(DecodeError::TooLong(5000))
    ));
    assert!(manual_ack_warning("node3").contains("corrupt"));
    assert_eq!(d.fence_node(t(0), n(9)), Err(FenceError::UnknownNode(n(9))));
}

#[test]
fn config_reload_mid_run_never_wedges() {
    // Method 2 disappears from the configuration while its agent runs.
    let mut c = cfg3();
    c.nodes.get_mut(&n(3)).unwrap().methods.truncate(1);
    let mut d = lost3(1);
    d.handle_timeout(t(6000));
    let first = one_run(&mut d);
    d.handle_agent_result(t(6001), first.run_id, Err("x".into()));
    let second = one_run(&mut d);
    assert_eq!(second.method_idx, 1);
    d.set_config(t(6002), c);
    d.handle_agent_result(t(6003), second.run_id, Err("y".into()));
    // Counted as a failed round, then retried from the first method.
    assert_eq!(d.status().victims[0].state, VictimState::RetryWait);
    assert_eq!(d.poll_deadline(), Some(t(9003)));
    d.handle_timeout(t(9003));
    let again = one_run(&mut d);
    assert_eq!((again.method_idx, again.device.as_str()), (0, "psu1"));
}

#[test]
fn joiners_learn_pending_victims() {
    // Node 2 lost node 3 while alone; node 1 (restarted, knows nothing) joins.
    let mut d2 = FenceDomain::new(n(2), cfg3());
    d2.handle_membership(t(0), memb(&[2, 3], true));
    d2.handle_membership(t(100), memb(&[2], true));
    actions(&mut d2);
    let mut d1 = FenceDomain::new(n(1), cfg3());
    d1.handle_membership(t(200), memb(&[1, 2], true));
    d2.handle_membership(t(200), memb(&[1, 2], true));
    let o = match &actions(&mut d2)[..] {
        [Action::Broadcast(o)] => o.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        o,
        FenceOutcome {
            victim: n(3),
            by: n(2),
            kind: OutcomeKind::Pending
        }
    );
    d1.handle_fence_outcome(t(201), o.clone());
    d2.handle_fence_outcome(t(201), o);
    assert_eq!(d2.status().ignored_outcomes, 1);
    // Node 2 already fences node 3: node 1 learns the victim and waits for node 2.
    assert!(actions(&mut d1).is_empty());
    assert_eq!(d1.blocked(), vec![n(3)]);
    assert_eq!(d1.status().victims[0].fencer, n(2));
    assert_eq!(d1.status().victims[0].state, VictimState::WaitingFencer);
}

#[test]
fn a_node_that_announced_a_clean_leave_is_not_fenced_when_it_goes() {
    let mut d = FenceDomain::new(NodeId(1), FenceConfig::default());
    let m = |ids: &[u32]| Membership {
        members: ids.iter().map(|i| NodeId(*i)).collect(),
        quorate: true,
    };
    d.handle_membership(Instant(0), m(&[1, 2, 3]));
    d.handle_clean_leave(NodeId(3));
    d.handle_membership(Instant(1_000), m(&[1, 2]));
    d.handle_timeout(Instant(10_000_000_000));
    assert!(
        d.blocked().is_empty(),
        "a clean leave makes no victim: {:?}",
        d.status()
    );
    // Without the announcement the same loss makes a victim.
    d.handle_membership(Instant(20_000_000_000), m(&[1]));
    assert_eq!(d.blocked(), vec![NodeId(2)]);
}

#[test]
fn a_victim_that_rejoined_then_left_cleanly_is_not_fenced() {
    // Seed 506 of the cluster simulator: n3 was a victim, rejoined (the
    // Rejoined outcome not yet ordered), announced a clean leave in that
    // ring and left: the rejoin answered its old departure.
    let mut d = lost3(1);
    d.handle_membership(t(3000), memb(&[1, 2, 3], true));
    let acts = actions(&mut d);
    assert!(
        matches!(&acts[..], [Action::Broadcast(o)] if o.kind == OutcomeKind::Rejoined),
        "{acts:?}"
    );
    d.handle_clean_leave(n(3));
    d.handle_membership(t(4000), memb(&[1, 2], true));
    d.handle_timeout(t(100_000));
    assert!(runs(&actions(&mut d)).is_empty());
    assert!(d.blocked().is_empty(), "{:?}", d.status());
    // Without the announcement it is fenced after all.
    let mut d = lost3(1);
    d.handle_membership(t(3000), memb(&[1, 2, 3], true));
    actions(&mut d);
    d.handle_membership(t(4000), memb(&[1, 2], true));
    assert_eq!(d.blocked(), vec![n(3)]);
}

/// Seeds 1005 and 1016 of the cluster simulator: a member that missed a clean leave (it was
/// elsewhere, or started afresh) claims the node must be fenced, as a Pending victim at a join
/// or as StartupAbsent. A member that saw the clean leave does not take the claim up; nor does
/// one that saw the node fenced since (a claim composed at the join can be ordered after the
/// fencing's outcome).
#[test]
fn claims_for_a_node_that_left_cleanly_or_was_fenced_are_not_taken_up() {
    let claim = |kind: OutcomeKind| FenceOutcome {
        victim: n(3),
        by: n(2),
        kind,
    };
    for kind in [OutcomeKind::Pending, OutcomeKind::StartupAbsent] {
        // Left cleanly here.
        let mut d = FenceDomain::new(n(1), cfg3());
        d.handle_membership(t(0), memb(&[1, 2, 3], true));
        d.handle_clean_leave(n(3));
        d.handle_membership(t(1000), memb(&[1, 2], true));
        d.handle_fence_outcome(t(2000), claim(kind.clone()));
        d.handle_timeout(t(100_000));
        assert!(runs(&actions(&mut d)).is_empty(), "{kind:?}");
        assert!(d.blocked().is_empty(), "{kind:?}: {:?}", d.status());
        // Without the clean leave the same claim makes a victim.
        let mut d = FenceDomain::new(n(1), cfg3());
        d.handle_membership(t(0), memb(&[1, 2], true));
        d.handle_fence_outcome(t(2000), claim(kind.clone()));
        assert_eq!(d.blocked(), vec![n(3)], "{kind:?}");
    }
    // Fenced since: a Pending claim that arrives after the fencing's outcome is stale.
    let mut d = lost3(1);
    d.handle_fence_outcome(
        t(2000),
        FenceOutcome {
            victim: n(3),
            by: n(1),
            kind: OutcomeKind::ManualAck,
        },
    );
    assert!(d.blocked().is_empty());
    actions(&mut d);
    d.handle_fence_outcome(t(3000), claim(OutcomeKind::Pending));
    d.handle_timeout(t(100_000));
    assert!(runs(&actions(&mut d)).is_empty());
    assert!(d.blocked().is_empty(), "{:?}", d.status());
}
