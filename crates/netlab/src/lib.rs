//! Test hosts on one machine, for multi-node tests, benchmarks and the demo.
//!
//! A [`Lab`] is a set of network namespaces: one "switch" namespace holding a
//! bridge per ring, and one namespace per node with a veth into each bridge.
//! Nothing is added to the host's own namespace, so a lab cannot touch the
//! host's network, and two labs never see each other (several tests may run
//! at once). Addresses follow the seed's plan: ring 0 is the back-channel
//! network 192.168.3.0/24 and ring 1 the storage network 192.168.2.0/24, with
//! node `i` at `.71 + i`, so the first node is an-node01's 192.168.3.71. They
//! exist only inside the lab's namespaces.
//!
//! Links are cut with nftables inside the node namespaces and healed by
//! deleting the rule's table; a whole ring interface can be taken down. Dropping
//! the lab kills what it spawned and deletes every namespace it made.
//!
//! Needs root and the `ip` (iproute2) and `nft` (nftables) commands.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// How many rings a lab can wire.
pub const MAX_RINGS: usize = 2;
/// How many nodes a lab can hold (addresses .71 to .250).
pub const MAX_NODES: usize = 64;

/// Why a lab could not be built or changed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab needs root to create namespaces.
    #[error("network namespaces need root: run this as root (sudo)")]
    NotRoot,
    /// A command the lab needs is missing.
    #[error("`{0}` is not installed: apt-get install {1}")]
    Missing(&'static str, &'static str),
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
}

/// A set of namespaces wired as a cluster's networks.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    nodes: Vec<String>,
    rings: usize,
    children: Vec<Child>,
    hosts: Vec<String>,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Result<Output, LabError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Check that this process can build labs, with a message saying what is missing.
pub fn check_prerequisites() -> Result<(), LabError> {
    let uid = run(&["id", "-u"])?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err(LabError::NotRoot);
    }
    if !have("ip") {
        return Err(LabError::Missing("ip", "iproute2"));
    }
    if !have("nft") {
        return Err(LabError::Missing("nft", "nftables"));
    }
    Ok(())
}

impl Lab {
    /// Build a lab of `nodes` nodes (their names, used for display only) on
    /// `rings` rings (1 or 2).
    pub fn create(nodes: &[&str], rings: usize) -> Result<Lab, LabError> {
        check_prerequisites()?;
        if nodes.is_empty() || nodes.len() > MAX_NODES {
            return Err(LabError::Invalid(format!(
                "a lab holds 1 to {MAX_NODES} nodes"
            )));
        }
        if rings == 0 || rings > MAX_RINGS {
            return Err(LabError::Invalid(format!(
                "a lab has 1 to {MAX_RINGS} rings"
            )));
        }
        let k = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("q{}x{}", std::process::id(), k);
        let mut lab = Lab {
            prefix,
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            rings,
            children: Vec::new(),
            hosts: Vec::new(),
        };
        // On any error below, Drop removes what was made so far.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        let sw = self.switch_ns();
        run(&["ip", "netns", "add", &sw])?;
        run(&["ip", "-n", &sw, "link", "set", "lo", "up"])?;
        for r in 0..self.rings {
            let br = format!("br{r}");
            run(&["ip", "-n", &sw, "link", "add", &br, "type", "bridge"])?;
            run(&["ip", "-n", &sw, "link", "set", &br, "up"])?;
        }
        for i in 0..self.nodes.len() {
            let ns = self.node_ns(i);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            for r in 0..self.rings {
                // Created inside the switch namespace, so nothing ever appears on the host.
                let outer = format!("v{i}r{r}");
                let inner = Self::ring_interface(r);
                run(&[
                    "ip", "-n", &sw, "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                    "netns", &ns,
                ])?;
                run(&[
                    "ip",
                    "-n",
                    &sw,
                    "link",
                    "set",
                    &outer,
                    "master",
                    &format!("br{r}"),
                ])?;
                run(&["ip", "-n", &sw, "link", "set", &outer, "up"])?;
                let addr = format!("{}/24", self.addr(i, r));
                run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inner])?;
                run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            }
        }
        Ok(())
    }

    /// The interface name of ring `r` inside every node namespace.
    pub fn ring_interface(r: usize) -> String {
        format!("ring{r}")
    }

    fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The namespace name of node `i`.
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the lab has no nodes (never, once created).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The display name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// The address of node `i` on ring `r`: 192.168.3.(71+i) on ring 0 (the
    /// seed's back-channel network), 192.168.2.(71+i) on ring 1 (its storage network).
    pub fn addr(&self, i: usize, r: usize) -> Ipv4Addr {
        let subnet = if r == 0 { 3 } else { 2 };
        Ipv4Addr::new(192, 168, subnet, 71 + i as u8)
    }

    /// A command that runs `program` inside node `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node_ns(i), program]);
        c
    }

    /// Run a command inside node `i`'s namespace and wait for it.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<Output, LabError> {
        let ns = self.node_ns(i);
        let mut full = vec!["ip", "netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Spawn a command built with [`Lab::command`]; the lab kills it on drop.
    /// Returns its index for [`Lab::child`].
    pub fn spawn(&mut self, mut cmd: Command) -> Result<usize, LabError> {
        let child = cmd.spawn().map_err(|e| LabError::Command {
            cmd: format!("{cmd:?}"),
            stderr: e.to_string(),
        })?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// A spawned child.
    pub fn child(&mut self, idx: usize) -> &mut Child {
        &mut self.children[idx]
    }

    fn cut_table(a: usize, b: usize) -> String {
        format!("quorate_cut_{a}_{b}")
    }

    /// Drop all traffic between nodes `a` and `b` on every ring, in both
    /// directions (a symmetric partition of that pair).
    pub fn cut(&self, a: usize, b: usize) -> Result<(), LabError> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Node `from` drops every packet arriving from node `to`, on every ring
    /// (an asymmetric cut: `to` still hears `from`).
    pub fn cut_one_way(&self, from: usize, to: usize) -> Result<(), LabError> {
        let table = Self::cut_table(from, to);
        let addrs: Vec<String> = (0..self.rings)
            .map(|r| self.addr(to, r).to_string())
            .collect();
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n  ip saddr {{ {} }} drop\n }}\n}}\n",
            addrs.join(", ")
        );
        let mut nft = self.command(from, "nft");
        nft.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let cmd = format!("nft -f - in {}", self.node_ns(from));
        let fail = |stderr: String| LabError::Command {
            cmd: cmd.clone(),
            stderr,
        };
        let mut child = nft.spawn().map_err(|e| fail(e.to_string()))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    /// Undo [`Lab::cut`] between `a` and `b` (both directions; missing rules are fine).
    pub fn heal(&self, a: usize, b: usize) -> Result<(), LabError> {
        for (x, y) in [(a, b), (b, a)] {
            let table = Self::cut_table(x, y);
            let _ = self.exec(x, &["nft", "delete", "table", "inet", &table]);
        }
        Ok(())
    }

    /// Isolate node `i` from every other node (all rings).
    pub fn isolate(&self, i: usize) -> Result<(), LabError> {
        for j in 0..self.len() {
            if j != i {
                self.cut(i, j)?;
            }
        }
        Ok(())
    }

    /// Undo [`Lab::isolate`].
    pub fn rejoin(&self, i: usize) -> Result<(), LabError> {
        for j in 0..self.len() {
            if j != i {
                self.heal(i, j)?;
            }
        }
        Ok(())
    }

    /// Give every node namespace an /etc/hosts with these names, so that
    /// cluster.conf can name nodes as the seed does (`an-node01`, its `.sn`
    /// alias...). `ip netns exec` bind-mounts `/etc/netns/<ns>/hosts` over
    /// /etc/hosts for the commands it runs; the lab removes the files on drop.
    pub fn write_hosts(&self, entries: &[(String, Ipv4Addr)]) -> Result<(), LabError> {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
        for (name, ip) in entries {
            text.push_str(&format!("{ip}\t{name}\n"));
        }
        for i in 0..self.len() {
            let dir = std::path::Path::new("/etc/netns").join(self.node_ns(i));
            let fail = |e: std::io::Error| LabError::Command {
                cmd: format!("write {}/hosts", dir.display()),
                stderr: e.to_string(),
            };
            std::fs::create_dir_all(&dir).map_err(fail)?;
            std::fs::write(dir.join("hosts"), &text).map_err(fail)?;
        }
        Ok(())
    }

    /// Add a host that is not a cluster node (a BMC, a client) in a namespace
    /// of its own, plugged into ring `r`'s bridge with the given addresses
    /// (the first is its own, the others are aliases on the same interface,
    /// e.g. one per simulated BMC). `tag` names it (a few letters). Returns
    /// the namespace name, for `ip netns exec`; the lab deletes it on drop.
    pub fn add_host(
        &mut self,
        tag: &str,
        r: usize,
        addrs: &[Ipv4Addr],
    ) -> Result<String, LabError> {
        if r >= self.rings {
            return Err(LabError::Invalid(format!(
                "ring {r} does not exist: this lab has {} ring(s)",
                self.rings
            )));
        }
        if addrs.is_empty() || tag.is_empty() || tag.len() > 6 {
            return Err(LabError::Invalid(
                "a host needs a tag of 1 to 6 characters and at least one address".into(),
            ));
        }
        let ns = format!("{}-{tag}", self.prefix);
        if self.hosts.contains(&ns) {
            return Err(LabError::Invalid(format!("host {tag} already exists")));
        }
        let sw = self.switch_ns();
        run(&["ip", "netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        let outer = format!("h{}r{r}", self.hosts.len());
        let inner = Self::ring_interface(r);
        run(&[
            "ip", "-n", &sw, "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            "netns", &ns,
        ])?;
        run(&[
            "ip",
            "-n",
            &sw,
            "link",
            "set",
            &outer,
            "master",
            &format!("br{r}"),
        ])?;
        run(&["ip", "-n", &sw, "link", "set", &outer, "up"])?;
        for a in addrs {
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &inner,
            ])?;
        }
        run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
        Ok(ns)
    }

    /// Take ring `r` of node `i` down (its cable pulled) or up again.
    pub fn set_ring(&self, i: usize, r: usize, up: bool) -> Result<(), LabError> {
        let ifname = Self::ring_interface(r);
        self.exec(
            i,
            &["ip", "link", "set", &ifname, if up { "up" } else { "down" }],
        )?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..self.nodes.len() {
            let _ = run(&["ip", "netns", "del", &self.node_ns(i)]);
            let _ =
                std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(self.node_ns(i)));
        }
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", h]);
        }
        let _ = run(&["ip", "netns", "del", &self.switch_ns()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Send one UDP datagram from node `from` to node `to` on ring `r`, and
    /// report whether it arrived within the timeout.
    fn udp_reaches(lab: &Lab, from: usize, to: usize, r: usize) -> bool {
        let dst = lab.addr(to, r);
        let src = lab.addr(from, r);
        // The test binary itself is the receiver and the sender, run inside the
        // namespaces through its ignored helper tests, so no other tool is needed.
        let exe = std::env::current_exe().unwrap();
        let mut recv = lab.command(to, exe.to_str().unwrap());
        recv.args([
            "--exact",
            "tests::udp_receiver_helper",
            "--nocapture",
            "--include-ignored",
        ])
        .env("NETLAB_RECV_ADDR", format!("{dst}:7000"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let child = recv.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut send = lab.command(from, exe.to_str().unwrap());
        send.args([
            "--exact",
            "tests::udp_sender_helper",
            "--nocapture",
            "--include-ignored",
        ])
        .env("NETLAB_SEND", format!("{src}:0>{dst}:7000"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let _ = send.status();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("GOT hello")
    }

    #[test]
    #[ignore = "helper run inside a namespace by udp_reaches"]
    fn udp_receiver_helper() {
        let Ok(addr) = std::env::var("NETLAB_RECV_ADDR") else {
            return;
        };
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(1500)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            println!("GOT {}", String::from_utf8_lossy(&buf[..n]));
        }
    }

    #[test]
    #[ignore = "helper run inside a namespace by udp_reaches"]
    fn udp_sender_helper() {
        let Ok(spec) = std::env::var("NETLAB_SEND") else {
            return;
        };
        let (src, dst) = spec.split_once('>').unwrap();
        let s = UdpSocket::bind(src).unwrap();
        for _ in 0..5 {
            let _ = s.send_to(b"hello", dst);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn a_host_on_a_ring_is_reachable_at_each_of_its_addresses_and_removed_on_drop() {
        if let Err(e) = check_prerequisites() {
            panic!("netlab needs root, iproute2 and nftables: {e}");
        }
        let mut lab = Lab::create(&["a", "b"], 1).unwrap();
        assert!(
            lab.add_host("bmc", 1, &[Ipv4Addr::new(192, 168, 2, 201)])
                .is_err(),
            "a lab of one ring has no ring 1"
        );
        let bmcs = [
            Ipv4Addr::new(192, 168, 3, 201),
            Ipv4Addr::new(192, 168, 3, 202),
        ];
        let ns = lab.add_host("bmc", 0, &bmcs).unwrap();
        assert!(lab.add_host("bmc", 0, &bmcs).is_err(), "tags are unique");
        let exe = std::env::current_exe().unwrap();
        for dst in bmcs {
            let mut recv = Command::new("ip");
            recv.args(["netns", "exec", &ns])
                .arg(&exe)
                .args([
                    "--exact",
                    "tests::udp_receiver_helper",
                    "--nocapture",
                    "--include-ignored",
                ])
                .env("NETLAB_RECV_ADDR", format!("{dst}:7000"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let child = recv.spawn().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut send = lab.command(1, exe.to_str().unwrap());
            send.args([
                "--exact",
                "tests::udp_sender_helper",
                "--nocapture",
                "--include-ignored",
            ])
            .env("NETLAB_SEND", format!("{}:0>{dst}:7000", lab.addr(1, 0)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            let _ = send.status();
            let out = child.wait_with_output().unwrap();
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("GOT hello"),
                "node b cannot reach the host at {dst}"
            );
        }
        drop(lab);
        let listed = String::from_utf8(run(&["ip", "netns", "list"]).unwrap().stdout).unwrap();
        assert!(!listed.contains(&ns), "host namespace {ns} left behind");
    }

    #[test]
    fn two_rings_connect_cut_heal_and_ring_down() {
        if let Err(e) = check_prerequisites() {
            panic!("netlab needs root, iproute2 and nftables: {e}");
        }
        let lab = Lab::create(&["an-node01", "an-node02", "an-node03"], 2).unwrap();
        assert_eq!(lab.addr(0, 0), Ipv4Addr::new(192, 168, 3, 71));
        assert_eq!(lab.addr(1, 1), Ipv4Addr::new(192, 168, 2, 72));
        assert!(
            udp_reaches(&lab, 0, 1, 0),
            "ring 0 should connect node 0 to node 1"
        );
        assert!(
            udp_reaches(&lab, 1, 0, 1),
            "ring 1 should connect node 1 to node 0"
        );
        lab.cut(0, 1).unwrap();
        assert!(
            !udp_reaches(&lab, 0, 1, 0),
            "cut should stop ring 0 traffic"
        );
        assert!(
            !udp_reaches(&lab, 1, 0, 1),
            "cut should stop ring 1 traffic"
        );
        assert!(
            udp_reaches(&lab, 0, 2, 0),
            "a cut between 0 and 1 leaves 0-2 alone"
        );
        lab.heal(0, 1).unwrap();
        assert!(udp_reaches(&lab, 0, 1, 0), "heal should restore traffic");
        lab.set_ring(1, 0, false).unwrap();
        assert!(!udp_reaches(&lab, 0, 1, 0), "ring 0 down on node 1");
        assert!(udp_reaches(&lab, 0, 1, 1), "ring 1 still up");
        lab.write_hosts(&[("an-node02.sn".to_string(), lab.addr(1, 1))])
            .unwrap();
        let out = lab.exec(0, &["getent", "hosts", "an-node02.sn"]).unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("192.168.2.72"),
            "hosts file not seen in the namespace"
        );
        let names: Vec<String> = (0..3).map(|i| lab.node_ns(i)).collect();
        drop(lab);
        let listed = String::from_utf8(run(&["ip", "netns", "list"]).unwrap().stdout).unwrap();
        for n in names {
            assert!(!listed.contains(&n), "namespace {n} left behind");
            assert!(
                !std::path::Path::new("/etc/netns").join(&n).exists(),
                "hosts dir of {n} left behind"
            );
        }
    }
}
