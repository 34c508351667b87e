//! The README's demo as a test: real `quorate node` processes in network
//! namespaces, fenced through the virtual power switch. `quorate demo` checks
//! every step against what really happened (where the floating address is,
//! which outlet is off) and exits non-zero when the cluster misbehaved:
//! a service and a guest (the tiny guest under QEMU) start, the guest is
//! live-migrated to the service's node, that node is SIGKILLed, the survivor
//! fences it and recovers both (the guest resuming its counter from disk),
//! the node is powered back on and rejoins without taking them back
//! (nofailback). The guest's disk is the replicated volume r0: the survivor's
//! copy is promoted after the fencing, and the returning node resyncs only
//! what changed.

#[test]
fn demo_runs_the_seed_cluster_through_a_migration_a_crash_fencing_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run quorate demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let logs: String = ["an-node01.log", "an-node02.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}\n",
                    std::fs::read_to_string(dir.path().join(f)).unwrap_or_default()
                )
            })
            .collect();
        panic!("demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n{logs}");
    }
    assert!(
        stdout.contains("an-node01 fenced by an-node02 with method power"),
        "{stdout}"
    );
    assert!(stdout.contains("Failover took"), "{stdout}");
    assert!(
        stdout.contains("vm01 runs on an-node01 without a reboot")
            && stdout.contains("QEMU: downtime"),
        "{stdout}"
    );
    assert!(
        stdout.contains("vm01 booted on an-node02 and resumed from"),
        "{stdout}"
    );
    assert!(
        stdout.contains("web and vm01 stay on an-node02 (nofailback)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("was on an-node02's copy too (protocol C), promoted only after the fencing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("r0: an-node01's copy is UpToDate again after a resync of"),
        "{stdout}"
    );
}
