//! `quorate demo`: the seed's two-node cluster on this machine, narrated.
//!
//! an-node01 and an-node02 each run in a network namespace of their own, on
//! two bridged networks named as the seed plans them (back-channel
//! 192.168.3.0/24 for totem ring 0, storage 192.168.2.0/24 for ring 1). Their
//! `quorate node` processes are outlets of a virtual power switch, and the
//! cluster fences through it with `fence_quorate`, so fencing is real: a
//! fenced node's processes (its guests' QEMUs included) are gone. A service
//! (a floating address and an init script) runs on an-node01 and a guest
//! (`<vm name="vm01">`, the tiny guest of scripts/guest/, counting on its
//! disk) on an-node02; the demo live-migrates the guest to an-node01 (with
//! QEMU's downtime), kills an-node01, narrates detection, fencing and
//! recovery of both with timings (the guest's counter continuing from its
//! disk), powers the node back on, and removes everything it made.
//!
//! The guest's disk is the replicated volume r0 (`<replicas>`, protocol C,
//! DRBD's role in the seed): each node keeps its own copy in its own file,
//! mirrored over the storage network, and the guest's QEMU opens it over NBD
//! on its own node's loopback, where only the primary serves it. The live
//! migration opens the dual-primary window for its hand-over; the failover
//! promotes an-node02's copy only after an-node01 is fenced; the powered-on
//! an-node01 resyncs only what changed while it was off.
//!
//! Every step checks what really happened (where the address is configured,
//! which outlet is off, which node's QEMU prints the counter) and the demo
//! exits non-zero when the cluster did not do what it should, so the test
//! suite runs it too.

use super::{err, out};
use crate::cli::{EXIT_FAIL, EXIT_OK};
use labcluster::{Files, LabCluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NODES: [&str; 2] = ["an-node01", "an-node02"];
/// The service's floating address.
pub(crate) const FLOATING_IP: &str = "192.168.3.100";

/// The demo's guest.
pub(crate) const VM: &str = "vm01";

/// The guest's replicated volume and the port its NBD export listens on.
const VOLUME: &str = "r0";
const NBD_PORT: u16 = 10809;

/// A lab cluster with the demo's service, and how to narrate it.
pub(crate) struct Demo {
    pub(crate) c: LabCluster,
    quiet: bool,
    t0: Instant,
    /// The guest's `<vm>` attributes, when the demo runs one.
    guest: Option<BTreeMap<String, String>>,
}

fn say(quiet: bool, text: &str) {
    if !quiet {
        out(&format!("{text}\n"));
    }
}

impl Demo {
    fn step(&self, text: &str) {
        say(self.quiet, &format!("\n== {text}"));
    }

    fn at(&self, since: Instant, text: &str) {
        say(
            self.quiet,
            &format!("  [+{:>6.2} s] {text}", since.elapsed().as_secs_f64()),
        );
    }

    /// Wait for `f`, narrating every new event line of node `watch` as it appears.
    fn narrate_until(
        &self,
        watch: usize,
        since: Instant,
        timeout: Duration,
        mut f: impl FnMut(&Self) -> bool,
    ) -> bool {
        let mut seen: Vec<String> = self.c.log(watch).into_iter().map(|(_, t)| t).collect();
        let start = Instant::now();
        loop {
            let lines: Vec<String> = self.c.log(watch).into_iter().map(|(_, t)| t).collect();
            if !lines.is_empty() {
                let skip = common_prefix(&seen, &lines);
                for l in &lines[skip..] {
                    self.at(since, &format!("{}: {l}", self.c.names()[watch]));
                }
                seen = lines;
            }
            if f(self) {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn clustat(&self, i: usize) {
        if let Some(v) = self.c.ask(i, "status") {
            let text = super::admin::render_status(&v);
            let cut: String = text
                .split("\nRecent events")
                .next()
                .unwrap_or_default()
                .to_string();
            say(
                self.quiet,
                &format!(
                    "$ quorate status   # on {}\n{}",
                    self.c.names()[i],
                    cut.trim_end()
                ),
            );
        }
    }

    /// Build the cluster (`names`, token `token_ms`; two_node for two nodes),
    /// all outlets off; with `guest`, the tiny guest as `<vm name="vm01">`
    /// too (built first, by the embedded scripts/guest/build-tiny-guest.sh).
    pub(crate) fn start(
        quiet: bool,
        dir: &Path,
        names: &[&str],
        token_ms: u32,
        guest: bool,
    ) -> Result<Demo, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let script = write_script(dir)
            .map_err(|e| format!("cannot write the demo files in {}: {e}", dir.display()))?;
        let guest = if guest {
            let t = Instant::now();
            let tiny =
                vm::TinyGuest::build_embedded(&dir.join("guest")).map_err(|e| e.to_string())?;
            // The path only names the attribute's default; the disk is the replica's NBD export.
            let disk = dir.join(format!("{VM}.img"));
            say(
                quiet,
                &format!(
                    "  built the tiny guest from Debian's cloud kernel and busybox in {:.1} s ({})",
                    t.elapsed().as_secs_f64(),
                    tiny.kernel.display()
                ),
            );
            let mut attrs = tiny.vm_attrs(VM, &disk, 49152);
            attrs.insert(
                "disk".into(),
                format!("nbd://127.0.0.1:{NBD_PORT}/{VOLUME}"),
            );
            attrs.insert("disk_cache".into(), "writeback".into());
            attrs.insert("replica".into(), VOLUME.into());
            Some(attrs)
        } else {
            None
        };
        let c = LabCluster::new(&exe, dir, names, 2, |f| {
            cluster_conf(f, names, token_ms, &script, guest.as_ref(), dir)
        })?;
        Ok(Demo {
            c,
            quiet,
            t0: Instant::now(),
            guest,
        })
    }

    /// The guest's definition as node `i`'s daemon builds it.
    fn guest_def(&self, i: usize) -> Option<vm::GuestDef> {
        let attrs = self.guest.as_ref()?;
        vm::GuestDef::from_attrs(attrs, &self.c.state(i).join("vm"))
            .ok()
            .map(|p| p.def)
    }

    /// The counters node `i`'s QEMUs printed, and the counters each boot there resumed from.
    fn counters(&self, i: usize) -> (Vec<u64>, Vec<u64>) {
        match self.guest_def(i) {
            Some(d) => (
                vm::serial_counters(&d.serial_log),
                vm::serial_resumed(&d.serial_log),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// The pid of node `i`'s live QEMU of the guest.
    fn qemu(&self, i: usize) -> Option<i32> {
        vm::Guest::running_pid(&self.guest_def(i)?)
    }

    /// The guest's replicated volume as node `i` reports it.
    fn volume(&self, i: usize) -> serde_json::Value {
        self.c
            .ask(i, "replica.status")
            .and_then(|v| v["replicas"].get(0).cloned())
            .unwrap_or_default()
    }

    /// Waits until `f` holds for the volume's two views (node 0, node 1).
    fn volume_until(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&serde_json::Value, &serde_json::Value) -> bool,
    ) -> Result<(), String> {
        let t = Instant::now();
        loop {
            let (a, b) = (self.volume(0), self.volume(1));
            if f(&a, &b) {
                return Ok(());
            }
            if t.elapsed() > timeout {
                return Err(format!(
                    "{VOLUME}: {what} did not happen within {timeout:?} (an-node01: {}; an-node02: {})",
                    a["why"], b["why"]
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The guest as node `from` reports it.
    fn vm(&self, from: usize) -> serde_json::Value {
        self.c
            .ask(from, "status")
            .and_then(|v| {
                v["services"]
                    .as_array()?
                    .iter()
                    .find(|s| s["name"] == VM)
                    .cloned()
            })
            .unwrap_or_default()
    }

    /// Wait until node `i`'s guest printed a counter above `n`.
    fn counting_above(&self, i: usize, n: u64, timeout: Duration) -> Result<u64, String> {
        let t = Instant::now();
        loop {
            let last = self.counters(i).0.last().copied().unwrap_or(0);
            if last > n {
                return Ok(last);
            }
            if t.elapsed() > timeout {
                return Err(format!(
                    "the guest on {} did not count above {n} within {timeout:?}",
                    self.c.names()[i]
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Power every outlet on and wait until all nodes are quorate members and
    /// the service runs; returns the node running it.
    pub(crate) fn boot(&self, timeout: Duration) -> Result<usize, String> {
        let t = Instant::now();
        self.c.power_on_all()?;
        let all: Vec<usize> = (0..self.c.names().len()).collect();
        let formed = self.narrate_until(0, t, timeout, |d| {
            all.iter().all(|i| d.c.sees(*i, &all, true))
        });
        if !formed {
            return Err(format!(
                "the nodes did not form a quorate cluster within {timeout:?}\n{}",
                self.c.post_mortem()
            ));
        }
        self.at(t, "all nodes are members; the cluster is quorate");
        let started = self.narrate_until(0, t, timeout, |d| {
            d.c.ask(0, "status")
                .is_some_and(|v| v["services"][0]["state"] == "Started")
                && d.c.holders(FLOATING_IP).len() == 1
        });
        let holder = match (started, self.c.holders(FLOATING_IP).first()) {
            (true, Some(h)) => *h,
            _ => {
                return Err(format!(
                    "web did not start within {timeout:?} (the address is on {:?})",
                    self.c.holders(FLOATING_IP)
                ))
            }
        };
        if self.guest.is_some() {
            let n = self.c.names().len();
            let up = self.narrate_until(0, t, timeout, |d| {
                d.vm(0)["state"] == "Started" && (0..n).any(|i| d.qemu(i).is_some())
            });
            if !up {
                return Err(format!("{VM} did not start within {timeout:?}"));
            }
        }
        Ok(holder)
    }
}

/// The log is a bounded window; find where the new lines start.
fn common_prefix(old: &[String], new: &[String]) -> usize {
    if old.is_empty() {
        return 0;
    }
    // The newest old line's position in the new window; lines after it are new.
    match new.iter().rposition(|l| Some(l) == old.last()) {
        Some(p) => p + 1,
        None => 0,
    }
}

/// An LSB init script whose daemon is a sleep, one per network namespace.
fn write_script(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let script = dir.join("web.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# The demo's "web server": an LSB init script, as rgmanager's <script> runs it.
ns=$(ip netns identify $$ 2>/dev/null); ns=${{ns:-host}}
pidfile={dir}/web-$ns.pid
case "$1" in
  start) [ -f $pidfile ] && kill -0 $(cat $pidfile) 2>/dev/null && exit 0
         setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > $pidfile; exit 0 ;;
  stop)  [ -f $pidfile ] && kill $(cat $pidfile) 2>/dev/null; rm -f $pidfile; exit 0 ;;
  status) [ -f $pidfile ] && kill -0 $(cat $pidfile) 2>/dev/null && exit 0; exit 3 ;;
  *) exit 2 ;;
esac
"#,
            dir = dir.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(script)
}

/// `<failoverdomainnode>`s for `names`, priorities 1, 2, ... in that order.
fn domain_members<'a>(names: impl Iterator<Item = &'a &'a str>) -> String {
    names
        .enumerate()
        .map(|(i, n)| {
            format!(
                "\t\t\t\t<failoverdomainnode name=\"{n}\" priority=\"{}\"/>\n",
                i + 1
            )
        })
        .collect()
}

/// The seed's cluster.conf, with the nodes fenced through the power switch
/// and the service `web` (a floating address and the init script).
fn cluster_conf(
    f: &Files,
    names: &[&str],
    token_ms: u32,
    script: &Path,
    guest: Option<&BTreeMap<String, String>>,
    dir: &Path,
) -> String {
    let mut nodes = String::new();
    for (i, n) in names.iter().enumerate() {
        // action="off": a fenced node stays off until the operator powers it on
        // (RHCS's default is reboot). In a two-node split the second node's
        // device waits, so the first shoots first and survives.
        let delay = if i == 1 && names.len() == 2 {
            r#" delay="3""#
        } else {
            ""
        };
        nodes.push_str(&format!(
            "\t\t<clusternode name=\"{n}\" nodeid=\"{id}\">\n\t\t\t<altname name=\"{n}.sn\"/>\n\t\t\t<fence><method name=\"power\"><device name=\"pdu\" port=\"{n}\" action=\"off\"{delay}/></method></fence>\n\t\t</clusternode>\n",
            id = i + 1
        ));
    }
    let domain = domain_members(names.iter());
    // The guest prefers the other node (the seed's an2_primary), so each
    // node runs something.
    let (guest_domain, guest_vm, replicas) = match guest {
        None => (String::new(), String::new(), String::new()),
        Some(attrs) => {
            let members = domain_members(names.iter().rev());
            let a: String = attrs
                .iter()
                .filter(|(k, _)| *k != "name")
                .map(|(k, v)| {
                    format!(
                        "\n\t\t\t{k}=\"{}\"",
                        v.replace('&', "&amp;")
                            .replace('"', "&quot;")
                            .replace('<', "&lt;")
                    )
                })
                .collect();
            // Each node's copy of the guest's disk, mirrored over the storage
            // network (the nodes' .sn altnames); two primaries only for a live
            // migration's hand-over.
            let copies: String = names
                .iter()
                .map(|n| {
                    format!(
                        "\t\t\t<node name=\"{n}\" disk=\"{}\"/>\n",
                        dir.join(format!("{n}-{VOLUME}.img")).display()
                    )
                })
                .collect();
            (
                format!("\t\t\t<failoverdomain name=\"an2_primary\" ordered=\"1\" nofailback=\"1\">\n{members}\t\t\t</failoverdomain>\n"),
                format!("\t\t<vm name=\"{VM}\" domain=\"an2_primary\" recovery=\"restart\" migrate=\"live\"{a}/>\n"),
                format!("\t<replicas>\n\t\t<replica name=\"{VOLUME}\" size=\"32M\" protocol=\"C\" nbd_port=\"{NBD_PORT}\" allow-two-primaries=\"1\">\n{copies}\t\t</replica>\n\t</replicas>\n"),
            )
        }
    };
    let cman = if names.len() == 2 {
        r#"<cman expected_votes="1" two_node="1"/>"#
    } else {
        "<cman/>"
    };
    format!(
        r#"<?xml version="1.0"?>
<cluster name="an-cluster" config_version="5">
	{cman}
	<totem token="{token_ms}" keyfile="{key}"/>
	<fence_daemon post_join_delay="6" post_fail_delay="0" clean_start="1"/>
	<clusternodes>
{nodes}	</clusternodes>
	<fencedevices>
		<fencedevice name="pdu" agent="{agent}" socket="{socket}"/>
	</fencedevices>
{replicas}	<rm>
		<failoverdomains>
			<failoverdomain name="an1_primary" ordered="1" nofailback="1">
{domain}			</failoverdomain>
{guest_domain}		</failoverdomains>
		<service name="web" domain="an1_primary" recovery="relocate">
			<ip address="{FLOATING_IP}/24" monitor_link="1"/>
			<script file="{script}" name="web"/>
		</service>
{guest_vm}	</rm>
</cluster>
"#,
        key = f.authkey.display(),
        agent = f.agent.display(),
        socket = f.socket.display(),
        script = script.display()
    )
}

/// `quorate demo [--quiet] [--dir DIR]`.
pub fn run(quiet: bool, dir: Option<PathBuf>) -> u8 {
    if let Err(e) = netlab::check_prerequisites() {
        err(&format!("quorate demo: {e}\n  hint: the demo builds network namespaces: run it as root (sudo scripts/demo.sh)\n"));
        return EXIT_FAIL;
    }
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("quorate-demo-{}", std::process::id()))
    });
    let r = Demo::start(quiet, &dir, &NODES, 1000, true).and_then(|d| scenario(&d));
    match r {
        Ok(()) => {
            say(quiet, "\nThe demo removed its namespaces and processes; its files stay in place for reading:");
            say(
                quiet,
                &format!(
                    "  {}/cluster.conf, {}/an-node0?.log",
                    dir.display(),
                    dir.display()
                ),
            );
            EXIT_OK
        }
        Err(e) => {
            err(&format!(
                "quorate demo: FAILED: {e}\n  node logs: {}/an-node01.log, {}/an-node02.log\n",
                dir.display(),
                dir.display()
            ));
            EXIT_FAIL
        }
    }
}

fn scenario(d: &Demo) -> Result<(), String> {
    d.step("The seed's cluster: an-node01 and an-node02, two_node=\"1\", fenced through a power switch");
    say(d.quiet, &format!("  namespaces {} and {}, back-channel 192.168.3.0/24 (ring 0), storage 192.168.2.0/24 (ring 1)", d.c.lab().node_ns(0), d.c.lab().node_ns(1)));
    say(
        d.quiet,
        &format!("  cluster.conf: {}", d.c.conf_path().display()),
    );
    say(d.quiet, &format!("  service web (floating address {FLOATING_IP} + init script) prefers an-node01; vm {VM} (QEMU, 128 MiB, counting on its disk) prefers an-node02"));
    d.step("Power on both nodes");
    let t = Instant::now();
    let holder = d.boot(Duration::from_secs(90))?;
    if holder != 0 {
        return Err(format!(
            "web started on {} instead of its preferred node an-node01",
            NODES[holder]
        ));
    }
    d.at(
        t,
        &format!("web runs on an-node01: {FLOATING_IP} is configured in its namespace"),
    );
    if d.qemu(1).is_none() || d.qemu(0).is_some() {
        return Err(format!(
            "{VM} does not run (only) on its preferred node an-node02"
        ));
    }
    let c = d.counting_above(1, 2, Duration::from_secs(60))?;
    let accel = d.vm(1)["local"]["accel"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    d.at(
        t,
        &format!("{VM} runs on an-node02 (QEMU pid {}, {accel}); its serial console says \"counter {c}\"", d.qemu(1).unwrap_or(0)),
    );
    d.volume_until("the initial sync", Duration::from_secs(60), |a, b| {
        b["role"] == "Primary" && b["peer_disk"] == "UpToDate" && a["disk"] == "UpToDate"
    })?;
    d.at(
        t,
        &format!("{VOLUME} (protocol C): an-node02 is primary and serves {VM}'s disk over NBD on its loopback; an-node01 keeps an UpToDate mirror over the storage network (initial sync done)"),
    );
    d.clustat(1);

    d.step(&format!(
        "Live-migrate {VM} to an-node01: quorate svc migrate {VM} -m an-node01"
    ));
    let t = Instant::now();
    d.c.ask_with(
        1,
        "svc.migrate",
        serde_json::json!({"service": VM, "node": "an-node01"}),
    )?;
    let both = std::cell::Cell::new(false);
    let moved = d.narrate_until(1, t, Duration::from_secs(60), |d| {
        if !both.get() && d.volume(0)["role"] == "Primary" && d.volume(1)["role"] == "Primary" {
            both.set(true);
        }
        let v = d.vm(1);
        v["state"] == "Started" && v["owner_name"] == "an-node01"
    });
    if !moved {
        return Err(format!("{VM} did not migrate to an-node01 within 60 s"));
    }
    let before = d.counters(1).0.last().copied().unwrap_or(0);
    let after = d.counting_above(0, before + 2, Duration::from_secs(30))?;
    if !d.counters(0).1.is_empty() || d.qemu(1).is_some() {
        return Err(format!(
            "{VM} did not live-migrate: it rebooted on an-node01 or its QEMU is still on an-node02"
        ));
    }
    let m = d.vm(1)["local"]["last_migration"].clone();
    d.at(
        t,
        &format!(
            "{VM} runs on an-node01 without a reboot: an-node02 stopped at counter {before}, an-node01 goes on ({after}); QEMU: downtime {} ms, total {} ms",
            m["downtime_ms"], m["total_time_ms"]
        ),
    );
    d.volume_until(
        "the end of the dual-primary window",
        Duration::from_secs(30),
        |a, b| a["role"] == "Primary" && b["role"] == "Secondary" && b["disk"] == "UpToDate",
    )?;
    d.at(
        t,
        &format!(
            "{VOLUME}: {}an-node02 demoted once its paused copy of {VM} quit; an-node01 is the primary now",
            if both.get() {
                "both nodes were primary for the hand-over (an-node01's incoming QEMU opened its disk before an-node02's stopped); "
            } else {
                ""
            }
        ),
    );

    d.step("an-node01 crashes (SIGKILL of its whole node process group)");
    let t = Instant::now();
    let written = d.counters(0).0.last().copied().unwrap_or(0);
    d.c.crash(0)?;
    d.at(t, &format!("an-node01 stopped answering; its floating address is still configured and {VM} still runs there (counter {written}), as on a hung machine"));
    let recovered = d.narrate_until(1, t, Duration::from_secs(90), |d| {
        d.c.ask(1, "status").is_some_and(|v| {
            v["services"][0]["state"] == "Started" && v["services"][0]["owner_name"] == "an-node02"
        }) && d.c.holders(FLOATING_IP).contains(&1)
            && d.vm(1)["state"] == "Started"
            && d.vm(1)["owner_name"] == "an-node02"
    });
    if !recovered {
        return Err("web and vm01 were not recovered on an-node02 within 90 s".into());
    }
    let took = t.elapsed();
    if !d.c.is_off(0) {
        return Err("an-node01's outlet is not off: recovery happened without fencing".into());
    }
    if d.qemu(0).is_some() {
        return Err(format!("{VM}'s QEMU on an-node01 survived the fencing"));
    }
    d.at(t, &format!("web and {VM} run on an-node02; an-node01's outlet is OFF (fenced), its QEMU gone. Failover took {:.2} s at token 1000 ms", took.as_secs_f64()));
    d.counting_above(1, written, Duration::from_secs(60))?;
    let resumed = d.counters(1).1.last().copied().unwrap_or(0);
    if resumed < written {
        return Err(format!(
            "{VM} resumed from {resumed} on an-node02, but an-node01 had fsynced {written} before the crash"
        ));
    }
    if d.volume(1)["role"] != "Primary" {
        return Err(format!(
            "{VOLUME} is not primary on an-node02 after the failover"
        ));
    }
    d.at(
        t,
        &format!("{VM} booted on an-node02 and resumed from {resumed}: every counter it had fsynced on an-node01 before the crash (up to {written}) was on an-node02's copy too (protocol C), promoted only after the fencing; the counter continues from its disk"),
    );
    d.clustat(1);

    d.step("Power an-node01 back on: it rejoins; nofailback keeps web and vm01 on an-node02");
    let t = Instant::now();
    d.c.power_on(0)?;
    let rejoined = d.narrate_until(1, t, Duration::from_secs(60), |d| {
        d.c.ask(1, "status").is_some_and(|v| {
            v["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["online"] == true))
        })
    });
    if !rejoined {
        return Err("an-node01 did not rejoin within 60 s".into());
    }
    std::thread::sleep(Duration::from_secs(2));
    if d.c.holders(FLOATING_IP) != [1] {
        return Err(format!(
            "after the rejoin the address is on {:?}, expected only an-node02",
            d.c.holders(FLOATING_IP)
        ));
    }
    if d.qemu(0).is_some() || d.vm(0)["owner_name"] != "an-node02" {
        return Err(format!("after the rejoin {VM} moved or runs twice"));
    }
    d.at(
        t,
        &format!("an-node01 is back; web and {VM} stay on an-node02 (nofailback)"),
    );
    d.volume_until("an-node01's resync", Duration::from_secs(60), |a, b| {
        a["disk"] == "UpToDate" && b["peer_disk"] == "UpToDate"
    })?;
    let resynced = d.c.log(1).into_iter().rev().find_map(|(_, l)| {
        l.strip_prefix(&format!("replica {VOLUME}: resync started as source: "))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
    });
    d.at(
        t,
        &match resynced {
            Some(b) => format!("{VOLUME}: an-node01's copy is UpToDate again after a resync of {} KiB (what changed while it was off, of 32 MiB)", b / 1024),
            None => format!("{VOLUME}: an-node01's copy is UpToDate again"),
        },
    );
    d.clustat(0);
    say(
        d.quiet,
        &format!("\nDemo finished in {:.1} s.", d.t0.elapsed().as_secs_f64()),
    );
    Ok(())
}
