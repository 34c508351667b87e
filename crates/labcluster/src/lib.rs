//! Whole quorate clusters on one machine, for the demo, the benchmarks and
//! the multi-node tests.
//!
//! A [`LabCluster`] is a [`netlab::Lab`] (a network namespace per node on
//! bridged rings, 192.168.3.0/24 and 192.168.2.0/24 as the seed plans them)
//! plus a [`powerswitch::PowerSwitch`] whose outlets run each node's
//! `quorate node` process inside its namespace. The cluster fences through
//! the switch with `fence_quorate` (the quorate binary under that name), so a
//! fenced node's processes are really gone. The caller writes cluster.conf;
//! [`Files`] says where the key, the agent and the switch's socket are.
//!
//! Dropping the cluster powers every outlet off and removes the namespaces.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use daemon::ipc::{call, Request};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the harness put what cluster.conf must name.
#[derive(Clone, Debug)]
pub struct Files {
    /// The lab's directory (state dirs and logs live below it).
    pub dir: PathBuf,
    /// The cluster key (a `keyfile=` for `<totem>`).
    pub authkey: PathBuf,
    /// `fence_quorate` (an `agent=` for a `<fencedevice>`).
    pub agent: PathBuf,
    /// The power switch's socket (the fence device's `socket=`).
    pub socket: PathBuf,
}

/// A running lab cluster.
pub struct LabCluster {
    names: Vec<String>,
    files: Files,
    lab: netlab::Lab,
    switch: powerswitch::PowerSwitch,
    rt: tokio::runtime::Runtime,
    conf: PathBuf,
    node_confs: Option<Vec<PathBuf>>,
}

/// What went wrong, in words.
pub type LabResult<T> = Result<T, String>;

impl LabCluster {
    /// Build namespaces for `names` on `rings` rings, write `conf(&files)` as
    /// cluster.conf, and prepare one outlet per node (all off). `exe` is the
    /// quorate binary. Node names resolve in every namespace (`NAME` on ring
    /// 0, `NAME.sn` on ring 1), as the seed's /etc/hosts makes them.
    pub fn new(
        exe: &Path,
        dir: &Path,
        names: &[&str],
        rings: usize,
        conf: impl FnOnce(&Files) -> String,
    ) -> LabResult<LabCluster> {
        Self::build(exe, dir, names, rings, conf, false)
    }

    /// Like [`LabCluster::new`], but every node reads its own copy of
    /// cluster.conf (`DIR/NAME.conf`, see [`LabCluster::node_conf`]), as on
    /// real machines: for tests of config distribution, where each node's
    /// file on disk must change by itself.
    pub fn new_with_node_configs(
        exe: &Path,
        dir: &Path,
        names: &[&str],
        rings: usize,
        conf: impl FnOnce(&Files) -> String,
    ) -> LabResult<LabCluster> {
        Self::build(exe, dir, names, rings, conf, true)
    }

    fn build(
        exe: &Path,
        dir: &Path,
        names: &[&str],
        rings: usize,
        conf: impl FnOnce(&Files) -> String,
        separate: bool,
    ) -> LabResult<LabCluster> {
        std::fs::create_dir_all(dir.join("bin")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let agent = dir.join("bin/fence_quorate");
        let _ = std::fs::remove_file(&agent);
        std::os::unix::fs::symlink(exe, &agent).map_err(|e| format!("{}: {e}", agent.display()))?;
        let authkey = dir.join("authkey");
        // Deterministic but not constant: a lab key, not a secret.
        let key = totem::generate_authkey(std::array::from_fn(|i| {
            (i as u8).wrapping_mul(151).wrapping_add(7)
        }));
        std::fs::write(&authkey, key).map_err(|e| format!("{}: {e}", authkey.display()))?;
        let files = Files {
            dir: dir.to_path_buf(),
            authkey,
            agent,
            socket: dir.join("pdu.sock"),
        };
        let conf_path = dir.join("cluster.conf");
        let text = conf(&files);
        std::fs::write(&conf_path, &text).map_err(|e| format!("{}: {e}", conf_path.display()))?;
        let node_confs: Option<Vec<PathBuf>> = separate.then(|| {
            names
                .iter()
                .map(|n| dir.join(format!("{n}.conf")))
                .collect()
        });
        for p in node_confs.iter().flatten() {
            std::fs::write(p, &text).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let lab = netlab::Lab::create(names, rings).map_err(|e| e.to_string())?;
        let mut hosts = Vec::new();
        for (i, n) in names.iter().enumerate() {
            hosts.push((n.to_string(), lab.addr(i, 0)));
            if rings > 1 {
                hosts.push((format!("{n}.sn"), lab.addr(i, 1)));
            }
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
                // Power-on is a boot: floating addresses a dead node left on its
                // ring interfaces are gone (only its own address stays).
                let own = lab.addr(i, 0);
                let cmd = format!(
                    "for a in $(ip -n {ns} -o -4 addr show dev ring0 | awk '{{print $4}}'); do [ \"${{a%/*}}\" = {own} ] || ip -n {ns} addr del $a dev ring0; done; \
                     exec ip netns exec {ns} {exe} --config {conf} --state-dir {state} node --node {n}",
                    exe = exe.display(),
                    conf = node_confs
                        .as_ref()
                        .map_or(&conf_path, |v| &v[i])
                        .display(),
                    state = dir.join(n).display()
                );
                let mut o = powerswitch::OutletConfig::shell(n, &cmd);
                // The nodes log at info, or at the test's QUORATE_LOG when set
                // (QUORATE_LOG=debug shows every QMP command a node sends).
                let level = std::env::var("QUORATE_LOG").unwrap_or_else(|_| "info".into());
                o.env.push(("QUORATE_LOG".into(), level));
                o.log = Some(dir.join(format!("{n}.log")));
                // The namespace is the node's machine: off takes its guests' QEMUs too.
                o.netns = Some(ns.clone());
                o
            })
            .collect();
        let switch = powerswitch::PowerSwitch::new(outlets).map_err(|e| e.to_string())?;
        rt.block_on(powerswitch::serve_unix(switch.clone(), &files.socket))
            .map_err(|e| e.to_string())?;
        Ok(LabCluster {
            names: names.iter().map(|s| s.to_string()).collect(),
            files,
            lab,
            switch,
            rt,
            conf: conf_path,
            node_confs,
        })
    }

    /// The node names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The files the config names.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The cluster.conf path every node reads.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The cluster.conf node `i` reads: its own copy when built with
    /// [`LabCluster::new_with_node_configs`], else the shared file.
    pub fn node_conf(&self, i: usize) -> &Path {
        self.node_confs.as_ref().map_or(&self.conf, |v| &v[i])
    }

    /// The namespaces.
    pub fn lab(&self) -> &netlab::Lab {
        &self.lab
    }

    /// The namespaces, to add hosts (a BMC network) with [`netlab::Lab::add_host`].
    pub fn lab_mut(&mut self) -> &mut netlab::Lab {
        &mut self.lab
    }

    /// Node `i`'s state dir (its admin socket is there).
    pub fn state(&self, i: usize) -> PathBuf {
        self.files.dir.join(&self.names[i])
    }

    /// Ask node `i`; `None` when it does not answer or refuses.
    pub fn ask(&self, i: usize, cmd: &str) -> Option<Value> {
        self.ask_with(i, cmd, Value::Null).ok()
    }

    /// Ask node `i` with arguments; `Err` carries the refusal or the error.
    pub fn ask_with(&self, i: usize, cmd: &str, args: Value) -> LabResult<Value> {
        match call(
            &self.state(i),
            &Request {
                cmd: cmd.into(),
                args,
            },
            Duration::from_secs(5),
        ) {
            Ok(r) if r.ok => Ok(r.data),
            Ok(r) => Err(r.error.unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Power outlet `i` on.
    pub fn power_on(&self, i: usize) -> LabResult<()> {
        self.rt
            .block_on(self.switch.on(&self.names[i]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Power outlet `i` off (SIGKILL of the node's whole process group; it stays off).
    pub fn power_off(&self, i: usize) -> LabResult<()> {
        self.rt
            .block_on(self.switch.off(&self.names[i]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Power-cycle outlet `i` (off, then on): a reboot.
    pub fn restart(&self, i: usize) -> LabResult<()> {
        self.rt
            .block_on(self.switch.reboot(&self.names[i]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Power every outlet on.
    pub fn power_on_all(&self) -> LabResult<()> {
        self.rt
            .block_on(self.switch.all_on())
            .map_err(|e| e.to_string())
    }

    /// Power every outlet off.
    pub fn power_off_all(&self) {
        self.rt.block_on(self.switch.all_off());
    }

    /// Whether outlet `i` is off (the node was fenced, or powered off).
    pub fn is_off(&self, i: usize) -> bool {
        self.rt.block_on(self.switch.status(&self.names[i])).ok()
            == Some(powerswitch::PowerState::Off)
    }

    fn signal(&self, i: usize, sig: &str) -> LabResult<()> {
        let pgid = self
            .rt
            .block_on(self.switch.list())
            .into_iter()
            .find(|o| o.name == self.names[i])
            .and_then(|o| o.pgid)
            .ok_or_else(|| format!("{} is not powered on", self.names[i]))?;
        let st = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{pgid}")])
            .status()
            .map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            Err(format!(
                "kill {sig} of {}'s processes failed",
                self.names[i]
            ))
        }
    }

    /// Resident memory of node `i`'s `quorate node` process, in KiB (VmRSS;
    /// the outlet's shell execs into it, so it is the group leader).
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        let pgid = self
            .rt
            .block_on(self.switch.list())
            .into_iter()
            .find(|o| o.name == self.names[i])?
            .pgid?;
        let status = std::fs::read_to_string(format!("/proc/{pgid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// SIGKILL node `i`'s whole process group: a crash (the outlet stays on).
    pub fn crash(&self, i: usize) -> LabResult<()> {
        self.signal(i, "-KILL")
    }

    /// SIGSTOP node `i`: a long pause (a hung machine that may wake up).
    pub fn pause(&self, i: usize) -> LabResult<()> {
        self.signal(i, "-STOP")
    }

    /// SIGCONT node `i` after [`LabCluster::pause`].
    pub fn resume(&self, i: usize) -> LabResult<()> {
        self.signal(i, "-CONT")
    }

    /// Which nodes' namespaces hold `ip` on ring 0 right now.
    pub fn holders(&self, ip: &str) -> Vec<usize> {
        (0..self.names.len())
            .filter(|i| {
                self.lab
                    .exec(*i, &["ip", "-o", "addr", "show", "dev", "ring0"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{ip}/")))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Node `i`'s event log lines (oldest first), as `(unix seconds, text)`.
    pub fn log(&self, i: usize) -> Vec<(f64, String)> {
        self.ask(i, "log")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| Some((e["at"].as_f64()?, e["text"].as_str()?.to_string())))
            .collect()
    }

    /// Poll `pred` every 50 ms until it holds or `timeout` passes.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> LabResult<Duration> {
        let start = Instant::now();
        loop {
            if pred(self) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.post_mortem()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every answering node's status and the tail of every node's log file.
    pub fn post_mortem(&self) -> String {
        let mut out = String::new();
        for i in 0..self.names.len() {
            if let Some(v) = self.ask(i, "status") {
                out.push_str(&format!("--- {} status: {}\n", self.names[i], v));
            }
            let log =
                std::fs::read_to_string(self.files.dir.join(format!("{}.log", self.names[i])))
                    .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!(
                "--- {} log tail:\n{}\n",
                self.names[i],
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }

    /// True when node `i` answers, is quorate (per `quorate quorum`) and sees `members` online.
    pub fn sees(&self, i: usize, members: &[usize], quorate: bool) -> bool {
        self.ask(i, "status").is_some_and(|v| {
            v["quorate"] == quorate
                && v["members"].as_array().is_some_and(|m| {
                    m.iter()
                        .enumerate()
                        .all(|(k, m)| (m["online"] == true) == members.contains(&k))
                })
        })
    }
}

impl Drop for LabCluster {
    fn drop(&mut self) {
        self.rt.block_on(self.switch.all_off());
    }
}
