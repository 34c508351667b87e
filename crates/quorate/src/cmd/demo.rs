//! `quorate demo`: the seed's two-node cluster on this machine, narrated.
//!
//! an-node01 and an-node02 each run in a network namespace of their own, on
//! two bridged networks named as the seed plans them (back-channel
//! 192.168.3.0/24 for totem ring 0, storage 192.168.2.0/24 for ring 1). Their
//! `quorate node` processes are outlets of a virtual power switch, and the
//! cluster fences through it with `fence_quorate`, so fencing is real: a
//! fenced node's processes are gone. A service (a floating address and an
//! init script) runs on one node; the demo kills that node, narrates
//! detection, fencing and recovery with timings, powers the node back on,
//! and removes everything it made.
//!
//! Every step checks what really happened (where the address is configured,
//! which outlet is off) and the demo exits non-zero when the cluster did not
//! do what it should, so the test suite runs it too.

use super::{err, out};
use crate::cli::{EXIT_FAIL, EXIT_OK};
use daemon::ipc::{call, Request};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NODES: [&str; 2] = ["an-node01", "an-node02"];
const FLOATING_IP: &str = "192.168.3.100";

pub(crate) struct Demo {
    names: Vec<String>,
    dir: PathBuf,
    lab: netlab::Lab,
    switch: powerswitch::PowerSwitch,
    rt: tokio::runtime::Runtime,
    quiet: bool,
    t0: Instant,
}

fn say(quiet: bool, text: &str) {
    if !quiet {
        out(&format!("{text}\n"));
    }
}

impl Demo {
    fn state(&self, i: usize) -> PathBuf {
        self.dir.join(&self.names[i])
    }

    pub(crate) fn ask(&self, i: usize, cmd: &str) -> Option<Value> {
        call(
            &self.state(i),
            &Request {
                cmd: cmd.into(),
                args: Value::Null,
            },
            Duration::from_secs(2),
        )
        .ok()
        .filter(|r| r.ok)
        .map(|r| r.data)
    }

    fn step(&self, text: &str) {
        say(self.quiet, &format!("\n== {text}"));
    }

    fn at(&self, since: Instant, text: &str) {
        say(
            self.quiet,
            &format!("  [+{:>6.2} s] {text}", since.elapsed().as_secs_f64()),
        );
    }

    /// Which node's namespace holds the floating address right now.
    fn ip_holders(&self) -> Vec<usize> {
        (0..self.names.len())
            .filter(|i| {
                self.lab
                    .exec(*i, &["ip", "-o", "addr", "show", "dev", "ring0"])
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout).contains(&format!("{FLOATING_IP}/"))
                    })
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Wait for `f`, narrating every new event line of node `watch` as it appears.
    fn narrate_until(
        &self,
        watch: usize,
        since: Instant,
        timeout: Duration,
        mut f: impl FnMut(&Self) -> bool,
    ) -> bool {
        let mut seen: Vec<String> = self
            .ask(watch, "log")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| e["text"].as_str().unwrap_or_default().to_string())
            .collect();
        let start = Instant::now();
        loop {
            if let Some(log) = self.ask(watch, "log").and_then(|v| v.as_array().cloned()) {
                let lines: Vec<String> = log
                    .iter()
                    .map(|e| e["text"].as_str().unwrap_or_default().to_string())
                    .collect();
                let skip = common_prefix(&seen, &lines);
                for l in &lines[skip..] {
                    self.at(since, &format!("{}: {l}", self.names[watch]));
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
        if let Some(v) = self.ask(i, "status") {
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
                    self.names[i],
                    cut.trim_end()
                ),
            );
        }
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

fn write_files(
    dir: &Path,
    exe: &Path,
    names: &[String],
    token_ms: u32,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("bin"))?;
    let agent = dir.join("bin/fence_quorate");
    let _ = std::fs::remove_file(&agent);
    std::os::unix::fs::symlink(exe, &agent)?;
    let key = totem::generate_authkey(std::array::from_fn(|i| {
        (i as u8).wrapping_mul(151).wrapping_add(7)
    }));
    std::fs::write(dir.join("authkey"), key)?;
    // An LSB init script whose daemon is a sleep, one per network namespace.
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
    let conf = dir.join("cluster.conf");
    let mut nodes = String::new();
    for (i, n) in names.iter().enumerate() {
        // action="off": a fenced node stays off until the operator powers it on
        // (RHCS's default is reboot). an-node02's device waits: in a split,
        // an-node01 shoots first and survives.
        let delay = if i == 1 { r#" delay="3""# } else { "" };
        nodes.push_str(&format!(
            r#"		<clusternode name="{n}" nodeid="{id}">
			<altname name="{n}.sn"/>
			<fence><method name="power"><device name="pdu" port="{n}" action="off"{delay}/></method></fence>
		</clusternode>
"#,
            id = i + 1
        ));
    }
    std::fs::write(
        &conf,
        format!(
            r#"<?xml version="1.0"?>
<cluster name="an-cluster" config_version="5">
	{cman}
	<totem token="{token_ms}" keyfile="{dir}/authkey"/>
	<fence_daemon post_join_delay="6" post_fail_delay="0" clean_start="1"/>
	<clusternodes>
{nodes}	</clusternodes>
	<fencedevices>
		<fencedevice name="pdu" agent="{agent}" socket="{dir}/pdu.sock"/>
	</fencedevices>
	<rm>
		<failoverdomains>
			<failoverdomain name="an1_primary" ordered="1" nofailback="1">
{domain}			</failoverdomain>
		</failoverdomains>
		<service name="web" domain="an1_primary" recovery="relocate">
			<ip address="{FLOATING_IP}/24" monitor_link="1"/>
			<script file="{script}" name="web"/>
		</service>
	</rm>
</cluster>
"#,
            dir = dir.display(),
            agent = agent.display(),
            script = script.display(),
            cman = if names.len() == 2 {
                r#"<cman expected_votes="1" two_node="1"/>"#
            } else {
                "<cman/>"
            },
            domain = names
                .iter()
                .enumerate()
                .map(|(i, n)| format!(
                    "\t\t\t\t<failoverdomainnode name=\"{n}\" priority=\"{}\"/>\n",
                    i + 1
                ))
                .collect::<String>(),
        ),
    )?;
    Ok(conf)
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
    match demo(quiet, &dir) {
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

fn demo(quiet: bool, dir: &Path) -> Result<(), String> {
    let names: Vec<String> = NODES.iter().map(|s| s.to_string()).collect();
    let d = Demo::start(quiet, dir, &names, 1000)?;
    let r = scenario(&d);
    d.power_off_all();
    r
}

impl Demo {
    /// Build the namespaces, the config (token `token_ms`; two_node for two
    /// nodes) and the power switch with one outlet per node, all off.
    pub(crate) fn start(
        quiet: bool,
        dir: &Path,
        names: &[String],
        token_ms: u32,
    ) -> Result<Demo, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let conf = write_files(dir, &exe, names, token_ms)
            .map_err(|e| format!("cannot write the demo files in {}: {e}", dir.display()))?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let lab = netlab::Lab::create(&refs, 2).map_err(|e| e.to_string())?;
        let mut hosts = Vec::new();
        for (i, n) in names.iter().enumerate() {
            hosts.push((n.to_string(), lab.addr(i, 0)));
            hosts.push((format!("{n}.sn"), lab.addr(i, 1)));
        }
        lab.write_hosts(&hosts).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let outlets: Vec<powerswitch::OutletConfig> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let ns = lab.node_ns(i);
                // Power-on is a boot: addresses a dead node left behind are gone.
                let cmd = format!(
                    "ip -n {ns} addr del {FLOATING_IP}/24 dev ring0 2>/dev/null; exec ip netns exec {ns} {exe} --config {conf} --state-dir {state} node --node {n}",
                    exe = exe.display(),
                    conf = conf.display(),
                    state = dir.join(n).display()
                );
                let mut o = powerswitch::OutletConfig::shell(n, &cmd);
                o.env.push(("QUORATE_LOG".into(), "info".into()));
                o.log = Some(dir.join(format!("{n}.log")));
                o
            })
            .collect();
        let switch = powerswitch::PowerSwitch::new(outlets).map_err(|e| e.to_string())?;
        let sock = dir.join("pdu.sock");
        rt.block_on(powerswitch::serve_unix(switch.clone(), &sock))
            .map_err(|e| e.to_string())?;
        Ok(Demo {
            names: names.to_vec(),
            dir: dir.to_path_buf(),
            lab,
            switch,
            rt,
            quiet,
            t0: Instant::now(),
        })
    }

    /// Power every outlet on and wait until all nodes are quorate members and
    /// the service runs; returns the node running it.
    pub(crate) fn boot(&self, timeout: Duration) -> Result<usize, String> {
        let t = Instant::now();
        self.rt
            .block_on(self.switch.all_on())
            .map_err(|e| e.to_string())?;
        let n = self.names.len();
        let formed = self.narrate_until(0, t, timeout, |d| {
            (0..n).all(|i| {
                d.ask(i, "status").is_some_and(|v| {
                    v["quorate"] == true
                        && v["members"]
                            .as_array()
                            .is_some_and(|m| m.iter().all(|m| m["online"] == true))
                })
            })
        });
        if !formed {
            return Err(format!(
                "the {n} nodes did not form a quorate cluster within {timeout:?}"
            ));
        }
        self.at(t, "all nodes are members; the cluster is quorate");
        let mut holder = None;
        let started = self.narrate_until(0, t, timeout, |d| {
            let h = d.ip_holders();
            holder = h.first().copied();
            d.ask(0, "status")
                .is_some_and(|v| v["services"][0]["state"] == "Started")
                && h.len() == 1
        });
        match (started, holder) {
            (true, Some(h)) => Ok(h),
            _ => Err(format!(
                "web did not start within {timeout:?} (the address is on {:?})",
                self.ip_holders()
            )),
        }
    }

    /// SIGKILL node `i`'s whole node process group (a crash; its outlet stays on).
    pub(crate) fn crash(&self, i: usize) -> Result<(), String> {
        let pgid = self
            .rt
            .block_on(self.switch.list())
            .into_iter()
            .find(|o| o.name == self.names[i])
            .and_then(|o| o.pgid)
            .ok_or_else(|| {
                format!(
                    "the power switch does not know {}'s processes",
                    self.names[i]
                )
            })?;
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        Ok(())
    }

    /// The namespace-local truth: which nodes hold the floating address.
    pub(crate) fn holders(&self) -> Vec<usize> {
        self.ip_holders()
    }

    /// Whether node `i`'s outlet is off.
    pub(crate) fn is_off(&self, i: usize) -> bool {
        self.rt.block_on(self.switch.status(&self.names[i])).ok()
            == Some(powerswitch::PowerState::Off)
    }

    /// Turn every outlet off.
    pub(crate) fn power_off_all(&self) {
        self.rt.block_on(self.switch.all_off());
    }
}

fn scenario(d: &Demo) -> Result<(), String> {
    d.step("The seed's cluster: an-node01 and an-node02, two_node=\"1\", fenced through a power switch");
    say(d.quiet, &format!("  namespaces {} and {}, back-channel 192.168.3.0/24 (ring 0), storage 192.168.2.0/24 (ring 1)", d.lab.node_ns(0), d.lab.node_ns(1)));
    say(
        d.quiet,
        &format!("  cluster.conf: {}/cluster.conf", d.dir.display()),
    );
    d.step("Power on both nodes");
    let t = Instant::now();
    let holder = d.boot(Duration::from_secs(60))?;
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
    d.clustat(1);

    d.step("an-node01 crashes (SIGKILL of its whole node process group)");
    let t = Instant::now();
    d.crash(0)?;
    d.at(t, "an-node01 stopped answering; its floating address is still configured, as on a hung machine");
    let recovered = d.narrate_until(1, t, Duration::from_secs(60), |d| {
        d.ask(1, "status").is_some_and(|v| {
            v["services"][0]["state"] == "Started" && v["services"][0]["owner_name"] == "an-node02"
        }) && d.ip_holders().contains(&1)
    });
    if !recovered {
        return Err("web was not recovered on an-node02 within 60 s".into());
    }
    let took = t.elapsed();
    let off =
        d.rt.block_on(d.switch.status(NODES[0]))
            .map_err(|e| e.to_string())?;
    if off != powerswitch::PowerState::Off {
        return Err("an-node01's outlet is not off: recovery happened without fencing".into());
    }
    d.at(t, &format!("web runs on an-node02; an-node01's outlet is OFF (fenced). Failover took {:.2} s at token 1000 ms", took.as_secs_f64()));
    d.clustat(1);

    d.step("Power an-node01 back on: it rejoins; nofailback keeps web on an-node02");
    let t = Instant::now();
    d.rt.block_on(d.switch.on(NODES[0]))
        .map_err(|e| e.to_string())?;
    let rejoined = d.narrate_until(1, t, Duration::from_secs(60), |d| {
        d.ask(1, "status").is_some_and(|v| {
            v["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["online"] == true))
        })
    });
    if !rejoined {
        return Err("an-node01 did not rejoin within 60 s".into());
    }
    std::thread::sleep(Duration::from_secs(2));
    if d.ip_holders() != [1] {
        return Err(format!(
            "after the rejoin the address is on {:?}, expected only an-node02",
            d.ip_holders()
        ));
    }
    d.at(t, "an-node01 is back; web stays on an-node02 (nofailback)");
    d.clustat(0);
    say(
        d.quiet,
        &format!("\nDemo finished in {:.1} s.", d.t0.elapsed().as_secs_f64()),
    );
    Ok(())
}
