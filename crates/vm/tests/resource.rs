//! The `<vm>` resource handler (`VmManager`) with real QEMU and the tiny guest,
//! driven by `<vm>`-style attribute maps as the node daemon passes them.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vm::{GuestState, StartOutcome, StopOutcome, VmError, VmManager};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `<vm name=NAME memory="128" kernel=... initrd=... append=... disk=... .../>`
/// plus attributes rgmanager reads, which the vm handler ignores.
fn vm_attrs(name: &str, disk: &Path, port: u16) -> BTreeMap<String, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let t = vm::TinyGuest::build(
        &repo.join("scripts/guest/build-tiny-guest.sh"),
        &tiny_guest(),
    )
    .unwrap();
    let mut a = t.vm_attrs(name, disk, port);
    a.insert("bandwidth".into(), "1G".into());
    a.insert("recovery".into(), "relocate".into());
    a.insert("domain".into(), "d1".into());
    a
}

fn pid_of(m: &VmManager, attrs: &BTreeMap<String, String>) -> Option<i32> {
    vm::Guest::running_pid(&m.guest_def(attrs).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_adopt_crash_restart_and_stop_through_the_manager() {
    let dir = test_dir("res-life");
    let disk = blank_disk(&dir);
    let run = dir.join("run");
    let attrs = vm_attrs("rg1", &disk, free_port());
    let _reaper = Reaper(vec![run.join("rg1.pid")]);
    let serial = run.join("rg1.serial");

    let m = VmManager::new(&run);
    assert!(m
        .status(&attrs)
        .await
        .unwrap_err()
        .contains("not running on this node"));
    assert_eq!(m.stop(&attrs).await.unwrap(), StopOutcome::AlreadyDead);
    assert_eq!(m.start(&attrs).await.unwrap(), StartOutcome::Started);
    let st = m.status(&attrs).await.expect("running");
    assert_eq!(st.state, GuestState::Running);
    assert!(!st.accel.reason.is_empty());
    assert!(
        st.to_string()
            .starts_with(&format!("running (run state running, pid {}, ", st.pid)),
        "{st}"
    );
    eprintln!("vm-measure: manager guest: {st}");
    wait_counter_above(&serial, 2, Duration::from_secs(60));
    assert_eq!(m.start(&attrs).await.unwrap(), StartOutcome::AlreadyRunning);
    let pid = st.pid;

    // A daemon restart: a new manager adopts the running QEMU, never starts a second.
    drop(m);
    let m = VmManager::new(&run);
    assert_eq!(m.start(&attrs).await.unwrap(), StartOutcome::Adopted);
    assert_eq!(pid_of(&m, &attrs), Some(pid));
    drop(m);
    let m = VmManager::new(&run);
    assert_eq!(m.status(&attrs).await.expect("adopted by status").pid, pid);

    // A crash is a failed resource; start brings the guest back with its disk.
    let (reason, t) = tokio::join!(m.watch(&attrs), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        unsafe { libc::kill(pid, libc::SIGKILL) };
        Instant::now()
    });
    let noticed = t.elapsed();
    let before = counters(&serial).last().copied().unwrap();
    eprintln!(
        "vm-measure: watch noticed the SIGKILL after {} ms: {reason}",
        noticed.as_millis()
    );
    assert!(reason.contains("exited"), "{reason}");
    assert!(noticed < Duration::from_secs(2), "{noticed:?}");
    let t = Instant::now();
    let err = loop {
        match m.status(&attrs).await {
            Err(e) => break e,
            Ok(_) => assert!(t.elapsed() < Duration::from_secs(5), "kill not noticed"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(err.contains("gone"), "{err}");
    assert_eq!(m.start(&attrs).await.unwrap(), StartOutcome::Started);
    assert_ne!(pid_of(&m, &attrs), Some(pid));
    wait_counter_above(&serial, before, Duration::from_secs(60));
    assert!(resumed(&serial).last().copied().unwrap() >= 1);

    // ACPI power-off, or quit when a loaded machine's guest is slower than the stop timeout.
    let stopped = m.stop(&attrs).await.unwrap();
    assert!(
        matches!(stopped, StopOutcome::PoweredOff | StopOutcome::Quit),
        "{stopped:?}"
    );
    assert!(pid_of(&m, &attrs).is_none());
    assert!(m.status(&attrs).await.is_err());
    assert_eq!(m.stop(&attrs).await.unwrap(), StopOutcome::AlreadyDead);

    // A bad attribute is a clear error before anything starts.
    let mut bad = attrs.clone();
    bad.insert("memory".into(), "lots".into());
    let e = m.start(&bad).await.unwrap_err().to_string();
    assert!(e.contains("memory=\"lots\""), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_between_two_managers_unprepared_aborted_late_and_pause() {
    let dir = test_dir("res-mig");
    let disk = blank_disk(&dir);
    let (run_a, run_b) = (dir.join("a"), dir.join("b"));
    let attrs = vm_attrs("rg2", &disk, free_port());
    let _reaper = Reaper(vec![run_a.join("rg2.pid"), run_b.join("rg2.pid")]);
    let (serial_a, serial_b) = (run_a.join("rg2.serial"), run_b.join("rg2.serial"));
    let a = VmManager::new(&run_a);
    let b = VmManager::new(&run_b);
    assert_eq!(a.start(&attrs).await.unwrap(), StartOutcome::Started);
    wait_counter_above(&serial_a, 3, Duration::from_secs(60));

    // 1. Nobody prepares the target: retried until the connect timeout, then an
    //    error that says the guest keeps running here.
    let mut quick = attrs.clone();
    quick.insert("migration_connect_timeout".into(), "1500ms".into());
    let t = Instant::now();
    let e = a.migrate_out(&quick, LOOPBACK, |_| {}).await.unwrap_err();
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(e, VmError::Migration { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("keeps running on the source") && msg.contains("prepare_incoming"),
        "{msg}"
    );
    assert_eq!(a.status(&attrs).await.unwrap().state, GuestState::Running);
    let c = counters(&serial_a).last().copied().unwrap();
    wait_counter_above(&serial_a, c + 1, Duration::from_secs(20));

    // 2. The target's node stops its incoming QEMU mid-way (abort, or that node
    //    leaves): the migration fails and the guest keeps running on the source.
    let mut slow = attrs.clone();
    slow.insert("bandwidth".into(), "64K".into());
    b.prepare_incoming(&slow, LOOPBACK).await.expect("prepare");
    let sent = std::sync::atomic::AtomicU64::new(0);
    let abort = async {
        let t = Instant::now();
        while sent.load(std::sync::atomic::Ordering::Relaxed) == 0
            || t.elapsed() < Duration::from_millis(1000)
        {
            assert!(t.elapsed() < Duration::from_secs(30), "no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b.stop(&slow).await.expect("stop target")
    };
    let (res, stopped) = tokio::join!(
        a.migrate_out(&slow, LOOPBACK, |p| sent
            .store(p.transferred.max(1), std::sync::atomic::Ordering::Relaxed)),
        abort
    );
    assert_eq!(stopped, StopOutcome::Quit);
    let msg = res.expect_err("migration to a stopped target").to_string();
    assert!(msg.contains("keeps running on the source"), "{msg}");
    assert_eq!(a.status(&attrs).await.unwrap().state, GuestState::Running);
    assert!(pid_of(&b, &attrs).is_none());
    let c = counters(&serial_a).last().copied().unwrap();
    wait_counter_above(&serial_a, c + 1, Duration::from_secs(20));

    // 3. The target is prepared late (its daemon reacts after the source started):
    //    the source retries until it listens; both prepares succeed (idempotent).
    assert!(pid_of(&a, &attrs).is_some());
    let mut polls = 0u32;
    let prepare = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        b.prepare_incoming(&attrs, LOOPBACK).await.expect("prepare");
        let st = b.status(&attrs).await.expect("incoming status ok");
        assert_eq!(st.state, GuestState::Migrating);
        b.prepare_incoming(&attrs, LOOPBACK)
            .await
            .expect("prepare again");
    };
    let t = Instant::now();
    let (res, ()) = tokio::join!(a.migrate_out(&attrs, LOOPBACK, |_| polls += 1), prepare);
    let wall = t.elapsed();
    let stats = res.expect("migration");
    eprintln!(
        "vm-measure: manager migration total {} ms, downtime {} ms, wall incl. 700 ms late prepare {} ms",
        stats.total_time_ms,
        stats.downtime_ms,
        wall.as_millis()
    );
    assert!(
        wall >= Duration::from_millis(700),
        "the source waited for the late target"
    );
    assert!(polls >= 1 && stats.transferred_bytes > 0);
    let last_a = counters(&serial_a).last().copied().unwrap_or(0);
    let st = b
        .wait_running(&attrs, Duration::from_secs(30))
        .await
        .expect("target runs");
    assert_eq!(st.state, GuestState::Running);
    assert!(pid_of(&a, &attrs).is_none(), "source QEMU must be gone");
    assert!(a.status(&attrs).await.is_err());
    wait_counter_above(&serial_b, last_a + 3, Duration::from_secs(30));
    assert_eq!(b.status(&attrs).await.unwrap().state, GuestState::Running);

    // 4. Back in pause mode: the target arrives paused and its status resumes it.
    let mut pause = attrs.clone();
    pause.insert("migrate".into(), "pause".into());
    pause.insert("migration_port".into(), free_port().to_string());
    a.prepare_incoming(&pause, LOOPBACK)
        .await
        .expect("prepare a");
    let stats = b
        .migrate_out(&pause, LOOPBACK, |_| {})
        .await
        .expect("pause migration");
    eprintln!(
        "vm-measure: manager pause migration total {} ms",
        stats.total_time_ms
    );
    let last_b = counters(&serial_b).last().copied().unwrap_or(0);
    a.wait_running(&pause, Duration::from_secs(30))
        .await
        .expect("a runs");
    assert!(pid_of(&b, &attrs).is_none());
    wait_counter_above(&serial_a, last_b + 2, Duration::from_secs(30));
    // Back to b, live, so the rest of the test finds the guest there.
    b.prepare_incoming(&attrs, LOOPBACK)
        .await
        .expect("prepare b");
    a.migrate_out(&attrs, LOOPBACK, |_| {})
        .await
        .expect("live back to b");
    b.wait_running(&attrs, Duration::from_secs(30))
        .await
        .expect("b runs");

    // The running node cannot also be a target; an idle incoming instance stops with quit.
    let e = b
        .prepare_incoming(&attrs, LOOPBACK)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already runs on this node"), "{e}");
    let mut other_port = attrs.clone();
    other_port.insert("migration_port".into(), free_port().to_string());
    a.prepare_incoming(&other_port, LOOPBACK)
        .await
        .expect("prepare on a");
    assert_eq!(a.stop(&other_port).await.unwrap(), StopOutcome::Quit);
    assert!(pid_of(&a, &attrs).is_none());

    // The guest honours the ACPI power button; on a loaded machine it may not
    // within the stop timeout, and the stop escalates to quit (tested on its
    // own in tests/lifecycle.rs). Either way it is stopped.
    let stopped = b.stop(&attrs).await.unwrap();
    assert!(
        matches!(stopped, StopOutcome::PoweredOff | StopOutcome::Quit),
        "{stopped:?}"
    );
    assert!(pid_of(&b, &attrs).is_none(), "the guest is gone after stop");
    let _ = std::fs::remove_dir_all(&dir);
}

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
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

/// Two nodes, each a `VmManager` in its own network namespace, the same `<vm>`
/// attributes: live migration over the back-channel veth, then the host of the
/// guest dies (its QEMU is SIGKILLed) and the survivor starts the guest, which
/// resumes from its disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_namespaces_migrate_then_survivor_restarts() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (network namespaces)"
    );
    let id = std::process::id() % 100_000;
    let (na, nb) = (format!("qrm-a-{id}"), format!("qrm-b-{id}"));
    let _ns = Netns(vec![na.clone(), nb.clone()]);
    ip(&["netns", "add", &na]);
    ip(&["netns", "add", &nb]);
    ip(&[
        "-n", &na, "link", "add", "bk0", "type", "veth", "peer", "name", "bk0", "netns", &nb,
    ]);
    let addr = |ns: &str| if ns == na { "10.79.0.1" } else { "10.79.0.2" };
    for ns in [&na, &nb] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", addr(ns)),
            "dev",
            "bk0",
        ]);
        ip(&["-n", ns, "link", "set", "bk0", "up"]);
    }
    let dir = test_dir("res-ns");
    let disk = blank_disk(&dir);
    let attrs = vm_attrs("nsg", &disk, free_port());
    let (run_a, run_b) = (dir.join("a"), dir.join("b"));
    let _reaper = Reaper(vec![run_a.join("nsg.pid"), run_b.join("nsg.pid")]);
    let (serial_a, serial_b) = (run_a.join("nsg.serial"), run_b.join("nsg.serial"));
    let a = VmManager::new(&run_a).with_netns(Some(na.clone()));
    let b = VmManager::new(&run_b).with_netns(Some(nb.clone()));
    assert_eq!(a.start(&attrs).await.unwrap(), StartOutcome::Started);
    wait_counter_above(&serial_a, 2, Duration::from_secs(60));

    let ip_b: IpAddr = addr(&nb).parse().unwrap();
    b.prepare_incoming(&attrs, ip_b)
        .await
        .expect("prepare in b");
    let stats = a
        .migrate_out(&attrs, ip_b, |_| {})
        .await
        .expect("migrate a -> b");
    eprintln!(
        "vm-measure: namespaces migration total {} ms downtime {} ms",
        stats.total_time_ms, stats.downtime_ms
    );
    b.wait_running(&attrs, Duration::from_secs(30))
        .await
        .expect("b runs");
    assert!(pid_of(&a, &attrs).is_none());
    let last_a = counters(&serial_a).last().copied().unwrap_or(0);
    wait_counter_above(&serial_b, last_a + 2, Duration::from_secs(30));

    // Node b dies: its QEMU is gone; node a (the survivor) starts the guest.
    let pid = pid_of(&b, &attrs).unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t = Instant::now();
    let before = counters(&serial_b).last().copied().unwrap();
    let n = counters(&serial_a).len();
    assert_eq!(a.start(&attrs).await.unwrap(), StartOutcome::Started);
    let first = loop {
        let c = counters(&serial_a);
        if c.len() > n {
            break c[n];
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no counter on the survivor"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "vm-measure: namespaces crash to running (SIGKILL -> start on survivor -> first counter) {} ms",
        t.elapsed().as_millis()
    );
    // The guest resumed from what it had written before the crash.
    assert!(
        first > before,
        "first {first}, last before the crash {before}"
    );
    assert!(b.status(&attrs).await.unwrap_err().contains("gone"));
    // ACPI power-off, or quit when a loaded machine's guest is slower than the stop timeout.
    let stopped = a.stop(&attrs).await.unwrap();
    assert!(
        matches!(stopped, StopOutcome::PoweredOff | StopOutcome::Quit),
        "{stopped:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
