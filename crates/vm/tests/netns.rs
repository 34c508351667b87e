//! Live migration between two network namespaces joined by a veth pair, the
//! guest's NIC a tap on a bridge in each namespace; the guest answers ping from
//! namespace A before and after it moved to B. Needs root, iproute2, busybox-static.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use vm::{Guest, GuestState, MigrationMode, MigrationSettings, Network};

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip ({e}): install the Debian package iproute2"));
    assert!(
        out.status.success(),
        "ip {} failed: {} (this test needs root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ping `addr` from namespace `ns` until it answers or `within` passes.
fn ping_within(ns: &str, addr: &str, within: Duration) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < within {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "ping", "-c1", "-W1", addr])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_between_namespaces_with_a_bridged_nic() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (network namespaces, taps)"
    );
    let id = std::process::id() % 100_000;
    let (na, nb) = (format!("qvm-a-{id}"), format!("qvm-b-{id}"));
    let _ns = Netns(vec![na.clone(), nb.clone()]);
    ip(&["netns", "add", &na]);
    ip(&["netns", "add", &nb]);
    ip(&[
        "-n", &na, "link", "add", "bk0", "type", "veth", "peer", "name", "bk0", "netns", &nb,
    ]);
    for (ns, addr) in [(&na, "10.77.0.1/24"), (&nb, "10.77.0.2/24")] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "addr", "add", addr, "dev", "bk0"]);
        ip(&["-n", ns, "link", "set", "bk0", "up"]);
        ip(&["-n", ns, "link", "add", "qbr0", "type", "bridge"]);
        ip(&["-n", ns, "link", "set", "qbr0", "up"]);
    }

    // One L2 segment across both bridges; the "clients" sit on qbr0 of A.
    ip(&[
        "-n", &na, "link", "add", "l2", "type", "veth", "peer", "name", "l2", "netns", &nb,
    ]);
    for ns in [&na, &nb] {
        ip(&["-n", ns, "link", "set", "l2", "master", "qbr0"]);
        ip(&["-n", ns, "link", "set", "l2", "up"]);
    }
    ip(&["-n", &na, "addr", "add", "10.78.0.1/24", "dev", "qbr0"]);

    let dir = test_dir("netns");
    let disk = blank_disk(&dir);
    let net = Network::Tap {
        bridge: "qbr0".into(),
        ifname: None,
        mac: Some("52:54:00:12:34:56".into()),
    };
    let mut a = guest_def("nsvm-a", &dir, &disk);
    a.netns = Some(na.clone());
    a.network = net.clone();
    let mut b = guest_def("nsvm-b", &dir, &disk);
    b.netns = Some(nb.clone());
    b.network = net;
    for d in [&mut a, &mut b] {
        d.kernel
            .as_mut()
            .unwrap()
            .append
            .push_str(" guest_ip=10.78.0.10/24");
    }
    let _reaper = Reaper(vec![a.pidfile.clone(), b.pidfile.clone()]);
    let accel = auto_accel();

    let src = Guest::start(a.clone(), accel.clone())
        .await
        .expect("start in namespace A");
    let tap = a.tap_name().unwrap();
    let show = Command::new("ip")
        .args(["-n", &na, "-o", "link", "show", &tap])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("master qbr0"),
        "tap not on the bridge: {show}"
    );
    wait_counter_above(&a.serial_log, 3, Duration::from_secs(60));
    assert!(
        ping_within(&na, "10.78.0.10", Duration::from_secs(20)),
        "guest does not answer ping before migration"
    );

    let port = free_port();
    let uri = format!("tcp:10.77.0.2:{port}");
    let mut dst = Guest::start_incoming(b.clone(), accel.clone(), &uri)
        .await
        .expect("target in namespace B");
    let s = MigrationSettings {
        listen_address: "10.77.0.2".into(),
        port,
        downtime_limit_ms: 100,
        max_bandwidth: 1 << 30,
        timeout_ms: 60_000,
        connect_timeout_ms: 0,
        mode: MigrationMode::Live,
    };
    let stats = src
        .migrate_to(&uri, &s, |_| {})
        .await
        .expect("migrate across namespaces");
    eprintln!(
        "vm-measure: netns migration total {} ms downtime {} ms",
        stats.total_time_ms, stats.downtime_ms
    );
    dst.wait_running(MigrationMode::Live, Duration::from_secs(30))
        .await
        .unwrap();
    let last = counters(&a.serial_log).last().copied().unwrap();
    src.quit().await;
    assert_eq!(dst.status().await.state, GuestState::Running);
    wait_counter_above(&b.serial_log, last + 3, Duration::from_secs(30));
    assert!(
        ping_within(&na, "10.78.0.10", Duration::from_secs(20)),
        "guest does not answer ping after moving to namespace B"
    );
    dst.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
