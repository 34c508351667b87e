//! Helpers shared by the namespace tests (recovery, fencing, config): a
//! cluster.conf builder with per-node fence methods and a free `<rm>`
//! section, the quorate CLI run against one node, and waits.
#![allow(dead_code)]

use labcluster::{Files, LabCluster};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The floating address of the `web` service in these tests.
pub const IP: &str = "192.168.3.100";

/// Renders `<fence>...</fence>` for node `i` named `name`.
pub type FenceFn = Box<dyn Fn(&Files, usize, &str) -> String>;

/// How a test cluster is configured.
pub struct Conf {
    /// Node names (n1, n2, ... by default).
    pub names: Vec<String>,
    /// totem token timeout.
    pub token_ms: u32,
    /// The `<cman .../>` element.
    pub cman: String,
    /// Extra elements under `<cluster>` (quorumd...).
    pub extra: String,
    /// The attributes of `<fence_daemon>`.
    pub fence_daemon: String,
    /// Each node's `<fence>` section; by default one method `power`
    /// with the lab's power switch (`pdu`), action off.
    pub fence: FenceFn,
    /// Extra `<fencedevice>` elements besides `pdu`.
    pub devices: String,
    /// The attributes of `<rm>`.
    pub rm_attrs: String,
    /// What goes inside `<rm>`: `{n1}`... are not expanded; write names.
    pub rm: String,
    /// Whether every node reads its own copy of cluster.conf.
    pub node_configs: bool,
}

/// The default fence section: the lab's power switch, action off.
pub fn power_fence(name: &str) -> String {
    format!(
        r#"<fence><method name="power"><device name="pdu" port="{name}" action="off"/></method></fence>"#
    )
}

/// One ordered nofailback domain of every node and a service `web` holding [`IP`].
pub fn default_rm(names: &[String], service_attrs: &str, resources: &str) -> String {
    let members: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!(r#"<failoverdomainnode name="{n}" priority="{}"/>"#, i + 1))
        .collect();
    format!(
        r#"<failoverdomains><failoverdomain name="dom" ordered="1" nofailback="1">{members}</failoverdomain></failoverdomains>
    <service name="web" domain="dom" {service_attrs}><ip address="{IP}/24" monitor_link="1"/>{resources}</service>"#
    )
}

impl Conf {
    /// `nodes` nodes at token 1000 ms, fenced through the power switch, `web` relocating.
    pub fn new(nodes: usize) -> Conf {
        let names: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
        let rm = default_rm(&names, r#"recovery="relocate""#, "");
        Conf {
            names,
            token_ms: 1000,
            cman: "<cman/>".into(),
            extra: String::new(),
            fence_daemon: r#"post_fail_delay="0" clean_start="1""#.into(),
            fence: Box::new(|_, _, n| power_fence(n)),
            devices: String::new(),
            rm_attrs: String::new(),
            rm,
            node_configs: false,
        }
    }

    /// The cluster.conf text with `config_version` `version`.
    pub fn render(&self, f: &Files, version: u32) -> String {
        let mut nodes = String::new();
        for (i, n) in self.names.iter().enumerate() {
            nodes.push_str(&format!(
                r#"
    <clusternode name="{n}" nodeid="{id}"><altname name="{n}.sn"/>{fence}</clusternode>"#,
                id = i + 1,
                fence = (self.fence)(f, i, n),
            ));
        }
        format!(
            r#"<?xml version="1.0"?>
<cluster name="lab" config_version="{version}">
  {cman}
  <totem token="{token}" keyfile="{key}"/>
  <fence_daemon {fence_daemon}/>
  {extra}
  <clusternodes>{nodes}
  </clusternodes>
  <fencedevices>
    <fencedevice name="pdu" agent="{agent}" socket="{socket}"/>
    {devices}
  </fencedevices>
  <rm {rm_attrs}>
    {rm}
  </rm>
</cluster>
"#,
            cman = self.cman,
            token = self.token_ms,
            key = f.authkey.display(),
            extra = self.extra,
            fence_daemon = self.fence_daemon,
            agent = f.agent.display(),
            socket = f.socket.display(),
            devices = self.devices,
            rm_attrs = self.rm_attrs,
            rm = self.rm,
        )
    }

    /// Build the lab (namespaces, switch, config version 1); nothing is powered on yet.
    pub fn start(self, dir: &Path) -> LabCluster {
        if let Err(e) = netlab::check_prerequisites() {
            panic!("multi-node tests need root, iproute2 and nftables: {e}");
        }
        let refs: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let exe = Path::new(env!("CARGO_BIN_EXE_quorate"));
        let conf = |f: &Files| self.render(f, 1);
        let r = if self.node_configs {
            LabCluster::new_with_node_configs(exe, dir, &refs, 2, conf)
        } else {
            LabCluster::new(exe, dir, &refs, 2, conf)
        };
        r.unwrap_or_else(|e| panic!("lab cluster: {e}"))
    }
}

/// Unwrap a lab result, panicking with its text (which carries the post-mortem).
pub fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Node indexes `0..n`.
pub fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// Boot every node; wait for one quorate ring of all of them.
pub fn boot(c: &LabCluster) {
    ok(c.power_on_all());
    let n = c.names().len();
    ok(c.wait(
        "one quorate ring of all nodes",
        Duration::from_secs(60),
        |c| (0..n).all(|i| c.sees(i, &all(n), true)),
    ));
}

/// Service `name` as node `from` reports it in `status --json` (Null if it does not answer).
pub fn service(c: &LabCluster, from: usize, name: &str) -> serde_json::Value {
    c.ask(from, "status")
        .and_then(|v| {
            v["services"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == name)
                .cloned()
        })
        .unwrap_or_default()
}

/// Wait until `web` is Started (as node `from` sees it) on exactly one node
/// holding [`IP`]; returns that node.
pub fn web_started(c: &LabCluster, from: usize) -> usize {
    ok(c.wait(
        "web started on exactly one node",
        Duration::from_secs(30),
        |c| c.holders(IP).len() == 1 && service(c, from, "web")["state"] == "Started",
    ));
    c.holders(IP)[0]
}

/// The node index of name `n` (`n3` -> 2).
pub fn index_of(c: &LabCluster, name: &str) -> Option<usize> {
    c.names().iter().position(|n| n == name)
}

/// Run the quorate CLI against node `i`'s admin socket.
/// Node `i`'s view of its first replicated volume (`replica.status`), or null.
pub fn replica(c: &LabCluster, i: usize) -> serde_json::Value {
    c.ask(i, "replica.status")
        .and_then(|v| v["replicas"].get(0).cloned())
        .unwrap_or_default()
}

/// The sha256 of a file, by sha256sum.
pub fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn cli(c: &LabCluster, i: usize, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("--state-dir")
        .arg(c.state(i))
        .arg("--config")
        .arg(c.node_conf(i))
        .args(args)
        .output()
        .expect("run the quorate binary")
}

/// Node `i`'s event log as one text, one line per event.
pub fn log_text(c: &LabCluster, i: usize) -> String {
    c.log(i)
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The position of the first log line of node `i` containing `needle`.
pub fn log_pos(c: &LabCluster, i: usize, needle: &str) -> Option<usize> {
    c.log(i).iter().position(|(_, t)| t.contains(needle))
}

/// Poll `pred` every 50 ms for `d` and require it to hold at every sample
/// (a state that must stay, not a transient one).
pub fn holds_for(
    c: &LabCluster,
    what: &str,
    d: Duration,
    mut pred: impl FnMut(&LabCluster) -> bool,
) {
    let start = Instant::now();
    while start.elapsed() < d {
        assert!(
            pred(c),
            "{what} stopped holding after {:?}\n{}",
            start.elapsed(),
            c.post_mortem()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file in the lab's directory.
pub fn lab_file(c: &LabCluster, name: &str) -> PathBuf {
    c.files().dir.join(name)
}

/// Write an executable shell script.
pub fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
