//! Guests as cluster services, end to end: two real `quorate node` processes
//! in network namespaces (crates/labcluster), fenced through the virtual
//! power switch, running a `<vm>` that is the tiny guest of scripts/guest/
//! under real QEMU. The guest writes an increasing counter to its disk (with
//! fsync) and prints it on its serial console, which each node's QEMU appends
//! to `STATE/vm/guest1.serial`: a test reads there whether the guest kept
//! running through a migration and where it resumed after a restart.
//!
//! In the first two tests the guest's disk is a plain file on this host that
//! both namespaces see (shared storage). In the third it is a replicated
//! volume (`<replica>`, protocol C) that each node exports over NBD on its own
//! loopback while it is primary: the seed's layout, a guest on DRBD.
//!
//! Needs root, iproute2, nftables, qemu-system-x86 and the tiny guest's
//! packages (linux-image-cloud-amd64, busybox-static; scripts/install-deps.sh).

mod common;
use common::*;
use labcluster::LabCluster;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const VM: &str = "guest1";

/// The tests each run a guest under TCG: one at a time on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Two nodes (two_node, as the seed) with an ordered domain preferring n1,
/// failback on, and the tiny guest as `<vm>` with a low migration bandwidth
/// (32 MiB/s: a migration of its ~90 MiB takes a few seconds, time enough to
/// kill a target mid-way). Status polls stay at rgmanager's 10 s, so a crash
/// found sooner was found by the vm watch.
struct Lab {
    c: LabCluster,
    attrs: BTreeMap<String, String>,
    dir: std::path::PathBuf,
}

fn xml_attr(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The replicated volume's NBD port (each node serves it on its loopback while primary).
const NBD_PORT: u16 = 10809;

impl Lab {
    fn start(dir: &Path) -> Lab {
        Self::start_with(dir, false)
    }

    /// `on_replica`: the guest's disk is the replicated volume r0 (both sides primary only
    /// while a live migration is in flight), not a shared file.
    fn start_with(dir: &Path, on_replica: bool) -> Lab {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest");
        let tiny = vm::TinyGuest::build(&repo.join("scripts/guest/build-tiny-guest.sh"), &out)
            .unwrap_or_else(|e| panic!("{e}"));
        let disk = dir.join("guest1.img");
        vm::blank_disk(&disk).unwrap();
        let mut attrs = tiny.vm_attrs(VM, &disk, 49152);
        attrs.insert("bandwidth".into(), "32M".into());
        attrs.insert("migration_timeout".into(), "60".into());
        if on_replica {
            attrs.insert("disk".into(), format!("nbd://127.0.0.1:{NBD_PORT}/r0"));
            attrs.insert("disk_cache".into(), "writeback".into());
            attrs.insert("replica".into(), "r0".into());
        }
        let vm_xml: String = attrs
            .iter()
            .filter(|(k, _)| *k != "name")
            .map(|(k, v)| format!(" {k}=\"{}\"", xml_attr(v)))
            .collect();
        let mut conf = Conf::new(2);
        conf.cman = r#"<cman expected_votes="1" two_node="1"/>"#.into();
        if on_replica {
            conf.extra = format!(
                r#"<replicas><replica name="r0" size="32M" nbd_port="{NBD_PORT}" allow-two-primaries="1">
      <node name="n1" disk="{}"/><node name="n2" disk="{}"/>
    </replica></replicas>"#,
                dir.join("n1-r0.img").display(),
                dir.join("n2-r0.img").display()
            );
        }
        conf.rm = format!(
            r#"<failoverdomains><failoverdomain name="dom" ordered="1" nofailback="0"><failoverdomainnode name="n1" priority="1"/><failoverdomainnode name="n2" priority="2"/></failoverdomain></failoverdomains>
    <vm name="{VM}" domain="dom" recovery="restart"{vm_xml}/>"#
        );
        Lab {
            c: conf.start(dir),
            attrs,
            dir: dir.to_path_buf(),
        }
    }

    /// The guest's definition as node `i`'s daemon builds it (its files live
    /// in node `i`'s state dir).
    fn def(&self, i: usize) -> vm::GuestDef {
        vm::GuestDef::from_attrs(&self.attrs, &self.c.state(i).join("vm"))
            .unwrap()
            .def
    }

    /// The pid of the guest's live QEMU on node `i`.
    fn pid(&self, i: usize) -> Option<i32> {
        vm::Guest::running_pid(&self.def(i))
    }

    /// Every counter node `i`'s QEMUs printed, in order.
    fn counters(&self, i: usize) -> Vec<u64> {
        vm::serial_counters(&self.def(i).serial_log)
    }

    fn last(&self, i: usize) -> u64 {
        self.counters(i).last().copied().unwrap_or(0)
    }

    /// Every boot on node `i`: the counter it resumed from.
    fn resumed(&self, i: usize) -> Vec<u64> {
        vm::serial_resumed(&self.def(i).serial_log)
    }

    fn svc(&self, from: usize) -> Value {
        service(&self.c, from, VM)
    }

    /// Wait until node `i`'s guest printed a counter above `n`.
    fn counting_above(&self, i: usize, n: u64, within: Duration) {
        if let Err(e) = self.c.wait(
            &format!("the guest on n{} counting above {n}", i + 1),
            within,
            |_| self.last(i) > n,
        ) {
            keep_for_diagnosis(&self.dir);
            let serial = std::fs::read(&self.def(i).serial_log).unwrap_or_default();
            let serial = String::from_utf8_lossy(&serial);
            let tail: Vec<&str> = serial.lines().rev().take(12).collect();
            panic!(
                "{e}\n--- n{} serial tail:\n{}",
                i + 1,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Wait until the guest is Started on `owner` (as both nodes see it),
    /// with a live QEMU there and none on the other node.
    fn started_on(&self, owner: usize, within: Duration) {
        let name = format!("n{}", owner + 1);
        ok(self
            .c
            .wait(&format!("{VM} started on {name} only"), within, |c| {
                (0..2).all(|i| {
                    !c.sees(i, &[0, 1], true)
                        || (self.svc(i)["state"] == "Started" && self.svc(i)["owner_name"] == name)
                }) && self.pid(owner).is_some()
                    && self.pid(1 - owner).is_none()
            }));
    }

    /// `quorate svc migrate guest1 -m TO`, typed on node `on`, running.
    fn migrate_cli(&self, on: usize, to: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_quorate"))
            .arg("--state-dir")
            .arg(self.c.state(on))
            .args(["svc", "migrate", VM, "-m", to, "--timeout", "90"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run quorate svc migrate")
    }
}

/// With `QUORATE_TEST_KEEP=DIR` set, a failing check copies the lab's
/// directory (node logs, serial logs) under DIR before the test cleans up.
fn keep_for_diagnosis(dir: &Path) {
    if let Some(keep) = std::env::var_os("QUORATE_TEST_KEEP") {
        let to = Path::new(&keep).join(format!("vm_netns-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&to);
        let _ = Command::new("cp").arg("-a").arg(dir).arg(&to).status();
        eprintln!("kept {} in {}", dir.display(), to.display());
    }
}

fn kill9(pid: i32) {
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -KILL {pid}");
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn boot_guest(lab: &Lab) {
    boot(&lab.c);
    lab.started_on(0, Duration::from_secs(60));
    lab.counting_above(0, 3, Duration::from_secs(60));
}

#[test]
fn a_guest_starts_restarts_after_a_crash_live_migrates_survives_an_aborted_migration_and_stops() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path());
    let c = &lab.c;

    // (a) Start: the guest runs where the cluster placed it (n1, first in
    // the ordered domain) and counts; status says so, with its accelerator.
    boot_guest(&lab);
    let first = lab.last(0);
    lab.counting_above(0, first + 3, Duration::from_secs(30));
    let out = cli(c, 1, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["services"][0];
    assert_eq!(
        (s["name"].as_str(), s["kind"].as_str(), s["state"].as_str()),
        (Some(VM), Some("Vm"), Some("Started")),
        "{v}"
    );
    assert_eq!(s["owner_name"], "n1", "{v}");
    let local = lab.svc(0)["local"].clone();
    assert_eq!(local["pid"].as_i64(), lab.pid(0).map(i64::from), "{local}");
    assert!(
        matches!(local["accel"].as_str(), Some("kvm" | "tcg"))
            && local["accel_reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
        "{local}"
    );
    let text = String::from_utf8_lossy(&cli(c, 0, &["status"]).stdout).to_string();
    assert!(
        text.contains(&format!("on {}", local["accel"].as_str().unwrap())),
        "status names the accelerator:\n{text}"
    );

    // (b) Crash: SIGKILL the guest's QEMU. The vm watch notices at once (far
    // sooner than the 10 s status poll), the recovery policy restarts it in
    // place, and the new boot resumes from the counter the old one fsynced.
    let pid = lab.pid(0).unwrap();
    let before = lab.last(0);
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    kill9(pid);
    ok(
        c.wait("the guest restarted on n1", Duration::from_secs(60), |_| {
            lab.resumed(0).len() == 2 && lab.pid(0).is_some_and(|p| p != pid)
        }),
    );
    let resumed = lab.resumed(0)[1];
    assert!(
        resumed >= before,
        "resumed from {resumed}, but counter {before} was written before the crash"
    );
    lab.counting_above(0, resumed + 2, Duration::from_secs(30));
    let noticed = c
        .log(0)
        .into_iter()
        .find(|(_, t)| t.contains(VM) && t.contains("checking it now"))
        .unwrap_or_else(|| panic!("the watch did not report the crash:\n{}", log_text(c, 0)));
    assert!(
        noticed.0 - killed_at < 3.0,
        "the crash was noticed {:.1} s after the kill: {}",
        noticed.0 - killed_at,
        noticed.1
    );
    let s = lab.svc(1);
    assert_eq!(
        (
            s["state"].as_str(),
            s["owner_name"].as_str(),
            s["restarts"].as_u64()
        ),
        (Some("Started"), Some("n1"), Some(1)),
        "{s}"
    );
    assert!(lab.pid(1).is_none(), "no second copy on n2");

    // (c) Live migration as an admin types it. The owner changes only once
    // the target has reported the guest running there (its QEMU alive);
    // until then every view names the source. The source's paused copy is
    // ended after that. The guest keeps counting from where it was, without
    // a reboot.
    let child = lab.migrate_cli(0, "n2");
    let mut changed_at_owner = None;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(90) {
        let s = lab.svc(1);
        if s["owner_name"] == "n2" {
            changed_at_owner = Some((lab.pid(1), s["state"].clone()));
            break;
        }
        assert!(
            s["owner_name"] == "n1",
            "mid-migration the owner is the source: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok_, said) = finish(child);
    assert!(ok_, "migrate failed: {said}\n{}", c.post_mortem());
    assert!(said.contains("started on n2"), "{said}");
    let (tgt, state) = changed_at_owner.expect("owner never became n2");
    assert!(
        tgt.is_some() && state == "Started",
        "when the owner became n2: target QEMU {tgt:?}, state {state}"
    );
    ok(c.wait(
        "the source's paused copy ended",
        Duration::from_secs(20),
        |c| {
            lab.pid(0).is_none()
                && log_text(c, 1).contains("ended the handed-over copy of guest1 on n1")
        },
    ));
    let log = log_text(c, 1);
    let handed = log
        .find("n1 handed guest1 over to n2; waiting for n2 to report it running")
        .expect("the hand-over is in the event log");
    let moved = log
        .find("migrated guest1 from n1 to n2")
        .expect("the move is in the event log");
    let ended = log
        .find("ended the handed-over copy of guest1 on n1")
        .expect("the source's copy was ended");
    assert!(handed < moved && moved < ended, "{log}");
    let src_last = lab.last(0);
    lab.counting_above(1, src_last + 5, Duration::from_secs(30));
    let on_target = lab.counters(1);
    assert!(
        lab.resumed(1).is_empty(),
        "the guest rebooted on n2 instead of migrating"
    );
    assert!(
        on_target[0] + 1 >= src_last && on_target[0] <= src_last + 2,
        "n2's first counter {} does not continue n1's last {src_last}",
        on_target[0]
    );
    assert!(
        on_target.windows(2).all(|w| w[1] == w[0] + 1),
        "{on_target:?}"
    );
    let m = lab.svc(0)["local"]["last_migration"].clone();
    assert!(
        m["ok"] == true && m["downtime_ms"].as_u64().is_some_and(|d| d < 2000),
        "n1 reports the migration with QEMU's downtime: {m}"
    );
    assert!(log_text(c, 1).contains("migrated guest1 from n1 to n2"));

    // (d) Migration abort: the target's incoming QEMU is killed mid-way. The
    // guest stays on the source, running and counting; the owner does not
    // change; status and the events say the migration failed.
    let child = lab.migrate_cli(1, "n1");
    let mut incoming = None;
    ok(c.wait(
        "n1's incoming QEMU receiving",
        Duration::from_secs(30),
        |_| {
            incoming = lab.pid(0);
            incoming.is_some()
                && lab.svc(1)["local"]["migration"]["transferred_bytes"]
                    .as_u64()
                    .is_some_and(|b| b > 0)
        },
    ));
    let progress = lab.svc(1)["local"]["migration"].clone();
    assert_eq!(progress["to"], 1, "{progress}");
    assert!(
        progress["percent"].as_u64().is_some_and(|p| p < 100),
        "{progress}"
    );
    let status_text = String::from_utf8_lossy(&cli(c, 1, &["status"]).stdout).to_string();
    assert!(
        status_text.contains("migrating to n1"),
        "status shows the migration's progress:\n{status_text}"
    );
    kill9(incoming.unwrap());
    let (ok_, said) = finish(child);
    assert!(
        !ok_,
        "migrate claimed success after its target died: {said}"
    );
    assert!(said.contains("failed"), "{said}");
    let s = lab.svc(0);
    assert_eq!(
        (s["state"].as_str(), s["owner_name"].as_str()),
        (Some("Started"), Some("n2")),
        "{s}"
    );
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("migration of guest1 failed")),
        "{s}"
    );
    assert!(log_text(c, 0).contains("migration of guest1 failed"));
    assert_eq!(
        lab.svc(1)["local"]["last_migration"]["ok"],
        false,
        "{}",
        lab.svc(1)
    );
    let at_abort = lab.last(1);
    lab.counting_above(1, at_abort + 5, Duration::from_secs(30));
    assert!(lab.resumed(1).is_empty(), "the source guest was restarted");
    assert!(lab.pid(0).is_none(), "a QEMU is left on n1");

    // Stop: disabling the service powers the guest down and QEMU exits.
    let out = cli(c, 0, &["svc", "disable", VM]);
    assert!(out.status.success(), "{out:?}");
    ok(c.wait("no QEMU left", Duration::from_secs(30), |_| {
        lab.pid(0).is_none() && lab.pid(1).is_none()
    }));
    assert_eq!(lab.svc(0)["state"], "Disabled");
}

#[test]
fn a_guest_live_migrates_on_clean_leave_and_failback_and_restarts_on_the_survivor_after_fencing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path());
    let c = &lab.c;
    boot_guest(&lab);

    // (f) A clean leave of the owner moves the guest by live migration, not
    // by stop and start: it keeps counting on n2 without a reboot, and n1
    // is not fenced.
    let out = cli(c, 0, &["cman", "leave"]);
    assert!(out.status.success(), "{out:?}");
    ok(c.wait("the guest on n2", Duration::from_secs(60), |_| {
        lab.svc(1)["owner_name"] == "n2" && lab.svc(1)["state"] == "Started"
    }));
    let src_last = lab.last(0);
    lab.counting_above(1, src_last + 3, Duration::from_secs(30));
    assert!(lab.resumed(1).is_empty(), "the guest was restarted on n2");
    assert!(lab.resumed(0).len() == 1, "the guest was restarted on n1");
    let log = log_text(c, 1);
    assert!(
        log.contains("migrated guest1 from n1 to n2: n1 is leaving the cluster"),
        "{log}"
    );
    ok(c.wait("n1 gone", Duration::from_secs(30), |c| {
        c.sees(1, &[1], true)
    }));
    assert!(
        !c.is_off(0),
        "n1 left cleanly but its outlet was switched off"
    );
    assert!(
        !log_text(c, 1).contains("n1 fenced"),
        "a clean leave was fenced:\n{}",
        log_text(c, 1)
    );
    assert!(
        lab.pid(0).is_none(),
        "the source QEMU outlived the migration"
    );

    // A preferred node returning to an ordered domain (failback on) gets the
    // guest back, again by live migration.
    ok(c.restart(0));
    ok(
        c.wait("the guest back on n1", Duration::from_secs(90), |_| {
            lab.svc(1)["owner_name"] == "n1" && lab.svc(1)["state"] == "Started"
        }),
    );
    let n2_last = lab.last(1);
    lab.counting_above(0, n2_last + 3, Duration::from_secs(30));
    assert_eq!(lab.resumed(0).len(), 1, "the guest rebooted on n1");
    assert!(lab.pid(1).is_none(), "the source QEMU on n2 is still there");
    assert!(log_text(c, 1).contains("migrated guest1 from n2 to n1: failback to n1"));
    assert!(
        !log_text(c, 1).contains("n1 fenced"),
        "n1 was fenced after its clean leave:\n{}",
        log_text(c, 1)
    );

    // (e) The owner's node process is SIGKILLed (a hung machine: its guest
    // keeps running until the node is fenced). The survivor fences n1 (its
    // outlet goes off, taking the QEMU with it), then restarts the guest,
    // which resumes from what it had fsynced.
    let old = lab.pid(0).unwrap();
    ok(c.crash(0));
    ok(
        c.wait("the guest restarted on n2", Duration::from_secs(60), |_| {
            lab.pid(1).is_some() && lab.resumed(1).len() == 1
        }),
    );
    assert!(c.is_off(0), "recovered without fencing n1");
    assert!(
        !Path::new(&format!("/proc/{old}")).exists(),
        "n1's QEMU survived the fencing"
    );
    let before = lab.last(0);
    let resumed = lab.resumed(1)[0];
    assert!(
        resumed >= before,
        "resumed from {resumed}, but n1's guest had written {before}"
    );
    lab.counting_above(1, resumed + 2, Duration::from_secs(30));
    let log = log_text(c, 1);
    let fenced = log_pos(c, 1, "n1 fenced").expect("n1 fenced");
    let started = log_pos(c, 1, "rm: starting guest1 here").expect("started");
    assert!(fenced < started, "started before fencing:\n{log}");
    let s = lab.svc(1);
    assert_eq!(
        (s["state"].as_str(), s["owner_name"].as_str()),
        (Some("Started"), Some("n2")),
        "{s}"
    );
}

#[test]
fn a_guest_on_a_replicated_volume_live_migrates_with_two_primaries_then_restarts_on_the_survivor_from_its_replica(
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start_with(dir.path(), true);
    let c = &lab.c;
    boot_guest(&lab);
    // The service's start promoted r0 on n1, which serves the guest's disk; n2 is a secondary
    // kept in sync by protocol C.
    ok(
        c.wait("n1 primary, n2 in sync", Duration::from_secs(60), |c| {
            let (r1, r2) = (replica(c, 0), replica(c, 1));
            r1["role"] == "Primary"
                && r1["peer_disk"] == "UpToDate"
                && r2["role"] == "Secondary"
                && r2["disk"] == "UpToDate"
        }),
    );
    lab.counting_above(0, lab.last(0) + 3, Duration::from_secs(30));

    // (a) Live migration: the target opens the dual-primary window (it must serve the disk to
    // its incoming QEMU while the source's still runs), and the window closes when the source's
    // paused copy has ended. Seen from n2 while the migration runs: both primary.
    let child = lab.migrate_cli(0, "n2");
    let mut both_primary = false;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(90) && !both_primary {
        let (r1, r2) = (replica(c, 0), replica(c, 1));
        both_primary =
            r1["role"] == "Primary" && r2["role"] == "Primary" && r2["migration_window"] == true;
        if lab.svc(1)["owner_name"] == "n2" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok_, said) = finish(child);
    assert!(ok_, "migrate failed: {said}\n{}", c.post_mortem());
    assert!(
        both_primary,
        "n2 never primary beside n1 during the migration"
    );
    lab.started_on(1, Duration::from_secs(30));
    ok(c.wait(
        "n2 primary, n1 secondary, window closed",
        Duration::from_secs(30),
        |c| {
            let (r1, r2) = (replica(c, 0), replica(c, 1));
            r2["role"] == "Primary"
                && r2["migration_window"] == false
                && r1["role"] == "Secondary"
                && r1["disk"] == "UpToDate"
        },
    ));
    let src_last = lab.last(0);
    lab.counting_above(1, src_last + 3, Duration::from_secs(30));
    assert!(
        lab.resumed(1).is_empty(),
        "the guest rebooted on n2 instead of migrating"
    );
    let on_target = lab.counters(1);
    assert!(
        on_target[0] + 1 >= src_last && on_target[0] <= src_last + 2,
        "n2's first counter {} does not continue n1's last {src_last}",
        on_target[0]
    );
    // Outside the window, n1 is refused as a second primary.
    let e = c
        .ask_with(0, "replica.primary", serde_json::json!({"name": "r0"}))
        .unwrap_err();
    assert!(e.contains("n2 is primary"), "{e}");

    // (b) n2's node process is SIGKILLed: its NBD export goes with it, so the guest's QEMU there
    // (alive until the fencing) fails its writes from then on. n1 fences n2, is promoted (only
    // after the fencing) and restarts the guest from its own copy of the disk: the guest resumes
    // from at least the last counter it had fsynced on n2 before the crash (protocol C: every
    // one of them was on n1's disk too when the guest's flush returned).
    let before = lab.last(1);
    ok(c.crash(1));
    ok(
        c.wait("the guest restarted on n1", Duration::from_secs(90), |_| {
            lab.pid(0).is_some() && lab.resumed(0).len() == 2
        }),
    );
    assert!(c.is_off(1), "recovered without fencing n2");
    let resumed = lab.resumed(0)[1];
    assert!(
        resumed >= before,
        "resumed from {resumed}, but the guest on n2 had fsynced {before}"
    );
    lab.counting_above(0, resumed + 2, Duration::from_secs(30));
    assert_eq!(replica(c, 0)["role"], "Primary");
    // In n1's log after the crash: n2 fenced, then the guest's start (which promotes r0).
    let log = log_text(c, 0);
    let after = &log[log.find("membership: ring").unwrap_or(0)..];
    let after = &after[after.find("lost n2").expect("n1 saw n2 lost")..];
    let fenced = after.find("n2 fenced by n1").expect("n2 fenced");
    let promoted = after.find("replica r0: role Primary").expect("r0 promoted");
    let started = after.find("rm: starting guest1 here").expect("started");
    assert!(
        fenced < started && fenced < promoted,
        "started or promoted before n2 was fenced:\n{log}"
    );

    // (c) n2 comes back: it resyncs from n1 and, with the guest stopped, both copies are equal.
    ok(c.power_on(1));
    ok(c.wait("n2 back in sync", Duration::from_secs(90), |c| {
        let r2 = replica(c, 1);
        r2["role"] == "Secondary"
            && r2["disk"] == "UpToDate"
            && replica(c, 0)["peer_disk"] == "UpToDate"
    }));
    let out = cli(c, 0, &["svc", "disable", VM]);
    assert!(out.status.success(), "{out:?}");
    ok(
        c.wait("no QEMU left, r0 demoted", Duration::from_secs(30), |c| {
            lab.pid(0).is_none() && lab.pid(1).is_none() && replica(c, 0)["role"] == "Secondary"
        }),
    );
    assert_eq!(
        sha256(&dir.path().join("n1-r0.img")),
        sha256(&dir.path().join("n2-r0.img")),
        "the two copies differ after the resync"
    );
}
