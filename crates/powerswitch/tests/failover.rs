//! The fence domain driven end to end: a first method whose agent hangs past its
//! timeout, falling through to fence_quorate, which kills the victim's process tree.

mod common;
use base::{Instant as BInstant, NodeId};
use common::*;
use fence::*;
use powerswitch::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[tokio::test]
async fn hanging_first_method_falls_through_to_power_switch() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("ps.sock");
    let sw = PowerSwitch::new(vec![OutletConfig::shell("node2", TREE)]).unwrap();
    let _srv = serve_unix(sw.clone(), &sock).await.unwrap();
    sw.all_on().await.unwrap();
    let pg = sw.list().await[0].pgid.unwrap();
    wait_group(pg, 4).await;

    let hang = d.path().join("fence_hang");
    std::fs::write(&hang, "#!/bin/sh\ncat >/dev/null\nsleep 1000\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();

    let dev = |attrs: &[(&str, &str)]| {
        Device::from_attrs(attrs.iter().map(|(k, v)| (*k, *v)).collect()).unwrap()
    };
    let mut cfg = FenceConfig {
        post_fail_delay: base::Duration::ZERO,
        ..FenceConfig::default()
    };
    cfg.nodes.insert(
        NodeId(2),
        NodeFence {
            name: "node2".into(),
            methods: vec![
                Method {
                    name: "ipmi".into(),
                    devices: vec![dev(&[
                        ("name", "hung-bmc"),
                        ("agent", hang.to_str().unwrap()),
                        ("timeout", "1"),
                        ("passwd", "pw"),
                    ])],
                },
                Method {
                    name: "switch".into(),
                    devices: vec![dev(&[
                        ("name", "ps"),
                        ("agent", fence_quorate().to_str().unwrap()),
                        ("socket", sock.to_str().unwrap()),
                        ("port", "node2"),
                        ("action", "off"),
                    ])],
                },
            ],
            unfence: vec![],
        },
    );
    let mut dom = FenceDomain::new(NodeId(1), cfg);
    let origin = Instant::now();
    let b = |i: Instant| BInstant(i.duration_since(origin).as_nanos() as u64);
    dom.handle_membership(
        b(Instant::now()),
        Membership {
            members: [NodeId(1), NodeId(2)].into(),
            quorate: true,
        },
    );
    let lost_at = Instant::now();
    dom.handle_membership(
        b(lost_at),
        Membership {
            members: [NodeId(1)].into(),
            quorate: true,
        },
    );
    let events = drive_until_fenced(&mut dom, origin, NodeId(2)).await;
    let took = lost_at.elapsed();
    eprintln!("member loss -> fenced through second method: {took:?}");
    assert!(
        group(pg).is_empty(),
        "victim's processes survived: {:?}",
        group(pg)
    );
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::AgentFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    match failed[0] {
        Event::AgentFailed {
            method,
            device,
            error,
            ..
        } => {
            assert_eq!((method.as_str(), device.as_str()), ("ipmi", "hung-bmc"));
            assert!(error.contains("hung"), "{error}");
        }
        _ => unreachable!(),
    }
    assert!(events.iter().any(|e| matches!(e, Event::Fenced { victim: NodeId(2), method, device, manual: false, .. } if method == "switch" && device == "ps")), "{events:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
}
