//! The `ip` agent inside a network namespace (netlab), and Debian's
//! ocf:heartbeat:IPaddr2 there too. Needs root, iproute2, nftables (netlab)
//! and resource-agents.

mod common;

use common::*;
use netlab::Lab;
use rmexec::{ExecResult, Executor};
use std::process::Command;
use std::time::{Duration, Instant};

fn addrs_in(lab: &Lab, dev: &str) -> String {
    let out = lab
        .exec(0, &["ip", "-o", "addr", "show", "dev", dev])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn floating_ip_in_a_namespace() {
    require_root();
    let lab = Lab::create(&["n1"], 1).expect("netlab (needs root, iproute2, nftables)");
    let ex = Executor::new().with_netns(lab.node_ns(0));
    let ring = Lab::ring_interface(0);
    // No prefix given: it takes the /24 of ring0's 192.168.3.71/24.
    let vip = vec![step("ip", "192.168.3.200", &[("address", "192.168.3.200")])];

    let r = ex.run(&status("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::StatusFailed, "{r}");

    let t0 = Instant::now();
    let r = ex.run(&start("web", vip.clone())).await;
    let took = t0.elapsed();
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(
        addrs_in(&lab, &ring).contains("192.168.3.200/24"),
        "{}",
        addrs_in(&lab, &ring)
    );
    assert!(
        r.steps[0].commands.iter().any(|c| c
            .command
            .contains(&format!("ip netns exec {}", lab.node_ns(0)))
            && c.command
                .ends_with(&format!("addr add 192.168.3.200/24 dev {ring}"))
            && c.code == Some(0)),
        "{r}"
    );
    // The host's own namespace never sees it.
    let host = Command::new("ip").args(["-o", "addr"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("192.168.3.200"));
    eprintln!("ip start took {took:?}");

    // Idempotent start; status ok.
    let r = ex.run(&start("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(addrs_in(&lab, &ring).matches("192.168.3.200").count(), 1);
    assert_eq!(
        ex.run(&status("web", vip.clone())).await.result,
        ExecResult::StatusOk
    );

    // Link down: status fails (monitor_link defaults to 1); not with monitor_link=0.
    lab.set_ring(0, 0, false).unwrap();
    let r = ex.run(&status("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::StatusFailed, "{r}");
    assert!(r.to_string().contains("is down"), "{r}");
    let nolink = vec![step(
        "ip",
        "192.168.3.200",
        &[("address", "192.168.3.200/24"), ("monitor_link", "0")],
    )];
    assert_eq!(
        ex.run(&status("web", nolink.clone())).await.result,
        ExecResult::StatusOk
    );
    lab.set_ring(0, 0, true).unwrap();
    let t0 = Instant::now();
    loop {
        let r = ex.run(&status("web", vip.clone())).await;
        if r.result == ExecResult::StatusOk {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "link never came back: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stop removes it; stopping again is fine.
    let r = ex.run(&stop("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");
    assert!(!addrs_in(&lab, &ring).contains("192.168.3.200"));
    assert!(
        addrs_in(&lab, &ring).contains("192.168.3.71/24"),
        "the node's own address stays"
    );
    let r = ex.run(&stop("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");

    // An explicit prefix is used as given.
    let r = ex
        .run(&start(
            "web",
            vec![step("ip", "v2", &[("address", "192.168.3.201/25")])],
        ))
        .await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(addrs_in(&lab, &ring).contains("192.168.3.201/25"));

    // An address in no local subnet is refused with the reason.
    let r = ex
        .run(&start(
            "web",
            vec![step("ip", "x", &[("address", "10.9.9.9")])],
        ))
        .await;
    assert_eq!(r.result, ExecResult::StartFailed);
    assert!(
        r.first_error()
            .unwrap()
            .to_string()
            .contains("no interface has a subnet containing 10.9.9.9"),
        "{r}"
    );

    // IPv6: the prefix comes from the interface's /64, added without DAD.
    lab.exec(
        0,
        &["ip", "addr", "add", "fd00:3::71/64", "dev", &ring, "nodad"],
    )
    .unwrap();
    let v6 = vec![step("ip", "fd00:3::200", &[("address", "fd00:3::200")])];
    let r = ex.run(&start("web", v6.clone())).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(
        addrs_in(&lab, &ring).contains("fd00:3::200/64"),
        "{}",
        addrs_in(&lab, &ring)
    );
    assert_eq!(
        ex.run(&status("web", v6.clone())).await.result,
        ExecResult::StatusOk
    );
    assert_eq!(
        ex.run(&stop("web", v6.clone())).await.result,
        ExecResult::Stopped
    );
    assert!(!addrs_in(&lab, &ring).contains("fd00:3::200"));

    // Debian's ocf:heartbeat:IPaddr2 runs inside the namespace too.
    require(
        "/usr/lib/ocf/resource.d/heartbeat/IPaddr2",
        "resource-agents",
    );
    let ip2 = vec![step(
        "ocf:heartbeat:IPaddr2",
        "vip2",
        &[("ip", "192.168.3.210"), ("cidr_netmask", "24")],
    )];
    let t0 = Instant::now();
    let r = ex.run(&start("web", ip2.clone())).await;
    eprintln!("IPaddr2 start took {:?}", t0.elapsed());
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(addrs_in(&lab, &ring).contains("192.168.3.210/24"), "{r}");
    assert_eq!(
        ex.run(&status("web", ip2.clone())).await.result,
        ExecResult::StatusOk
    );
    let r = ex.run(&stop("web", ip2.clone())).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");
    assert!(!addrs_in(&lab, &ring).contains("192.168.3.210"));
    let r = ex.run(&status("web", ip2.clone())).await;
    assert_eq!(r.result, ExecResult::StatusFailed, "{r}");
    drop(lab);
}
