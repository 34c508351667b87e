//! From cluster.conf to the protocol cores' own configurations.
//!
//! cluster.conf is read once into [`config::ClusterConf`]; this module maps
//! it onto [`totem::TotemConfig`], [`quorum::QuorumConfig`] and
//! [`fence::FenceConfig`], and gives every node its ring addresses (through
//! the resolver it is handed). It is the only place that knows both
//! vocabularies.

use base::{Duration, NodeId};
use config::ClusterConf;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A peer as the daemon needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `<clusternode name>`.
    pub name: String,
    /// Node id.
    pub id: NodeId,
    /// Ring 0 (the node's name) and ring 1 (its `<altname>`), when resolvable.
    pub addrs: Vec<SocketAddr>,
}

/// Everything the node daemon derives from cluster.conf.
#[derive(Clone, Debug)]
pub struct NodePlan {
    /// This node.
    pub me: NodeId,
    /// Every configured node.
    pub peers: BTreeMap<NodeId, Peer>,
    /// Number of rings in use (1, or 2 when every node has an altname).
    pub rings: u8,
    /// Totem, without key, epoch and ring sequence (the daemon fills those).
    pub totem: totem::TotemConfig,
    /// Quorum.
    pub quorum: quorum::QuorumConfig,
    /// Fencing.
    pub fence: fence::FenceConfig,
    /// The quorum disk: its device and the disk core's configuration.
    pub qdisk: Option<(std::path::PathBuf, quorum::QdiskConfig)>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The named node is not in cluster.conf.
    #[error("node {0:?} is not a <clusternode> in cluster.conf; use one of: {1}")]
    UnknownNode(String, String),
    /// A node's address did not resolve.
    #[error("cannot resolve {name:?} (ring {ring} address of node {node}): {why}. Add it to /etc/hosts on every node, as the RHCS guide does")]
    Resolve {
        /// The node.
        node: String,
        /// The ring.
        ring: u8,
        /// The name that failed.
        name: String,
        /// What the resolver said.
        why: String,
    },
    /// A fence device is unusable.
    #[error("{0}")]
    Fence(#[from] fence::FenceError),
    /// Totem refused the timers.
    #[error("<totem>: {0}")]
    Totem(#[from] totem::ConfigError),
    /// The quorum disk settings.
    #[error("<quorumd>: {0}")]
    Qdisk(String),
}

/// Make the plan for node `me_name`. `resolve` turns a node name (or an
/// address literal) and a port into the address to use: the daemon passes the
/// system resolver, the simulator a table of its own.
pub fn make_plan(
    conf: &ClusterConf,
    me_name: &str,
    resolve: impl Fn(&str, u16) -> Result<SocketAddr, String>,
) -> Result<NodePlan, PlanError> {
    let me = conf.node(me_name).ok_or_else(|| {
        PlanError::UnknownNode(
            me_name.to_string(),
            conf.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let port = *conf.cman.port.get();
    let rings: u8 = if !conf.nodes.is_empty() && conf.nodes.iter().all(|n| !n.altnames.is_empty()) {
        2
    } else {
        1
    };
    let mut peers = BTreeMap::new();
    for n in &conf.nodes {
        let mut addrs = vec![resolve(&n.name, port).map_err(|why| PlanError::Resolve {
            node: n.name.clone(),
            ring: 0,
            name: n.name.clone(),
            why,
        })?];
        if rings == 2 {
            let alt = &n.altnames[0];
            addrs.push(resolve(&alt.name, alt.port.unwrap_or(port)).map_err(|why| {
                PlanError::Resolve {
                    node: n.name.clone(),
                    ring: 1,
                    name: alt.name.clone(),
                    why,
                }
            })?);
        }
        peers.insert(
            NodeId(n.nodeid),
            Peer {
                name: n.name.clone(),
                id: NodeId(n.nodeid),
                addrs,
            },
        );
    }
    let me_id = NodeId(me.nodeid);
    let ids: Vec<NodeId> = peers.keys().copied().collect();
    let t = &conf.totem;
    let mut totem = totem::TotemConfig::new(me_id, ids)
        .with_token(Duration::from_millis(u64::from(*t.token.get())));
    totem.rings = rings;
    totem.join = Duration::from_millis(u64::from(*t.join.get()));
    totem.consensus = Duration::from_millis(u64::from(*t.consensus.get()));
    totem.token_retransmits_before_loss_const = *t.token_retransmits_before_loss_const.get();
    totem.fail_recv_const = *t.fail_recv_const.get();
    totem.validate()?;

    let mut quorum = quorum::QuorumConfig::new(
        conf.nodes
            .iter()
            .map(|n| (NodeId(n.nodeid), *n.votes.get())),
    );
    quorum.two_node = *conf.cman.two_node.get();
    quorum.expected_votes = conf.cman.expected_votes;
    // As votequorum does, two_node turns wait_for_all on unless the file says
    // otherwise: a node that boots alone must not take quorum (and start
    // services) before it has seen its peer once, or a rebooted node would run
    // services its peer still runs.
    quorum.wait_for_all = if conf.quorum.wait_for_all.default {
        quorum.two_node || *conf.quorum.wait_for_all.get()
    } else {
        *conf.quorum.wait_for_all.get()
    };
    quorum.last_man_standing = *conf.quorum.last_man_standing.get();
    quorum.last_man_standing_window =
        Duration::from_millis(u64::from(*conf.quorum.last_man_standing_window.get()));
    quorum.qdisk_votes = conf.quorumd.as_ref().map(|q| *q.votes.get()).unwrap_or(0);

    let qdisk = qdisk_config(conf, &totem)?;
    Ok(NodePlan {
        me: me_id,
        peers,
        rings,
        totem,
        quorum,
        fence: fence_config(conf)?,
        qdisk,
    })
}

fn resource_name(r: &config::Resource) -> String {
    ["name", "address", "file", "mountpoint", "device"]
        .iter()
        .find_map(|k| r.attrs.get(*k).cloned())
        .unwrap_or_else(|| r.kind.clone())
}

fn resource_spec(r: &config::Resource) -> rm::ResourceSpec {
    rm::ResourceSpec {
        rtype: r.kind.clone(),
        name: resource_name(r),
        attrs: r.attrs.clone(),
        children: r.children.iter().map(resource_spec).collect(),
    }
}

fn recovery(r: config::Recovery) -> rm::Recovery {
    match r {
        config::Recovery::Restart => rm::Recovery::Restart,
        config::Recovery::Relocate => rm::Recovery::Relocate,
        config::Recovery::Disable => rm::Recovery::Disable,
        config::Recovery::RestartDisable => rm::Recovery::RestartDisable,
    }
}

fn domain(conf: &ClusterConf, name: Option<&String>) -> Option<rm::DomainSpec> {
    let d = conf.rm.domain(name?)?;
    Some(rm::DomainSpec {
        name: d.name.clone(),
        ordered: *d.ordered.get(),
        restricted: *d.restricted.get(),
        nofailback: *d.nofailback.get(),
        nodes: d
            .nodes
            .iter()
            .filter_map(|n| {
                conf.node(&n.name).map(|c| rm::DomainNode {
                    node: NodeId(c.nodeid),
                    priority: *n.priority.get(),
                })
            })
            .collect(),
    })
}

/// `depend="service:db"` or `depend="db"` names the service `db`.
fn depend(d: &Option<String>) -> Option<String> {
    d.as_ref().map(|s| {
        s.strip_prefix("service:")
            .or_else(|| s.strip_prefix("vm:"))
            .unwrap_or(s)
            .to_string()
    })
}

/// The resource manager's view of `<rm>`: every `<service>` and `<vm>`.
pub fn rm_spec(conf: &ClusterConf) -> rm::ClusterSpec {
    let status = Duration::from_secs(u64::from(*conf.rm.status_poll_interval.get()));
    let mut services = Vec::new();
    for s in &conf.rm.services {
        let mut spec = rm::ServiceSpec::new(&s.name, rm::ServiceKind::Service);
        spec.domain = domain(conf, s.domain.as_ref());
        spec.autostart = *s.autostart.get();
        spec.exclusive = *s.exclusive.get();
        spec.recovery = recovery(*s.recovery.get());
        spec.max_restarts = *s.max_restarts.get();
        spec.restart_expire_time = Duration::from_secs(u64::from(*s.restart_expire_time.get()));
        spec.depend = depend(&s.depend);
        if s.attrs.get("depend_mode").map(String::as_str) == Some("soft") {
            spec.depend_mode = rm::DependMode::Soft;
        }
        spec.status_interval = status;
        spec.resources = s.resources.iter().map(resource_spec).collect();
        services.push(spec);
    }
    for v in &conf.rm.vms {
        let mut spec = rm::ServiceSpec::new(&v.name, rm::ServiceKind::Vm);
        spec.domain = domain(conf, v.domain.as_ref());
        spec.autostart = *v.autostart.get();
        spec.exclusive = *v.exclusive.get();
        spec.recovery = recovery(*v.recovery.get());
        spec.max_restarts = *v.max_restarts.get();
        spec.restart_expire_time = Duration::from_secs(u64::from(*v.restart_expire_time.get()));
        spec.depend = depend(&v.depend);
        spec.migrate = Some(match v.migrate.get() {
            config::Migrate::Live => rm::MigrateMode::Live,
            config::Migrate::Pause => rm::MigrateMode::Pause,
        });
        let mut attrs = v.attrs.clone();
        attrs.insert("name".into(), v.name.clone());
        spec.resources = vec![rm::ResourceSpec {
            rtype: "vm".into(),
            name: v.name.clone(),
            attrs,
            children: Vec::new(),
        }];
        services.push(spec);
    }
    rm::ClusterSpec {
        config_version: conf.config_version,
        // As fenced: startup fencing unless clean_start, or post_join_delay -1.
        startup_fencing: !*conf.fence_daemon.clean_start.get()
            && *conf.fence_daemon.post_join_delay.get() >= 0,
        two_node: *conf.cman.two_node.get(),
        nodes: conf
            .nodes
            .iter()
            .map(|n| rm::NodeSpec {
                id: NodeId(n.nodeid),
                name: n.name.clone(),
            })
            .collect(),
        services,
    }
}

/// The quorum disk core's configuration from `<quorumd>` and its heuristics.
fn qdisk_config(
    conf: &ClusterConf,
    totem: &totem::TotemConfig,
) -> Result<Option<(std::path::PathBuf, quorum::QdiskConfig)>, PlanError> {
    let Some(q) = &conf.quorumd else {
        return Ok(None);
    };
    let Some(device) = &q.device else {
        return Err(PlanError::Qdisk(
            "label= scanning is not supported: name the shared device with device=\"/dev/...\" \
             (or a file every node can read and write)"
                .into(),
        ));
    };
    let mut c = quorum::QdiskConfig::new(conf.name.clone());
    c.interval = Duration::from_secs(u64::from(*q.interval.get()));
    c.tko = *q.tko.get();
    c.votes = *q.votes.get();
    c.min_score = *q.min_score.get();
    c.master_wins = *q.master_wins.get();
    c.reboot = *q.reboot.get();
    for h in &q.heuristics {
        let mut hc = quorum::HeuristicConfig::new(h.program.clone());
        hc.score = *h.score.get();
        hc.interval = Duration::from_secs(u64::from(*h.interval.get()));
        hc.tko = *h.tko.get();
        c.heuristics.push(hc);
    }
    if q.master_wins.default {
        c.apply_auto_master_wins(conf.nodes.len());
    }
    // How long a partition whose ring died can keep its last decision:
    // totem gives up on the token, then on consensus, before it installs a
    // new configuration.
    c.membership_timeout = totem.token + totem.consensus;
    c.check_token_timeout(totem.token)
        .map_err(|e| PlanError::Qdisk(e.to_string()))?;
    Ok(Some((std::path::PathBuf::from(device), c)))
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

fn device(
    conf: &ClusterConf,
    r: &config::FenceDeviceRef,
) -> Result<fence::Device, fence::FenceError> {
    let mut args = fence::AgentArgs::new();
    if let Some(d) = conf.fence_device(&r.name) {
        args.set("agent", d.agent.clone());
        for (k, v) in &d.attrs {
            args.set(k.clone(), v.clone());
        }
    }
    args.set("name", r.name.clone());
    // The <device> line's attributes win over the <fencedevice>'s.
    for (k, v) in &r.attrs {
        if k != "name" {
            args.set(k.clone(), v.clone());
        }
    }
    fence::Device::from_attrs(args)
}

/// The fence domain's configuration from `<fence_daemon>` and every node's `<fence>`.
pub fn fence_config(conf: &ClusterConf) -> Result<fence::FenceConfig, fence::FenceError> {
    let fd = &conf.fence_daemon;
    let mut cfg = fence::FenceConfig {
        post_fail_delay: secs(*fd.post_fail_delay.get()),
        post_join_delay: (*fd.post_join_delay.get() >= 0).then(|| secs(*fd.post_join_delay.get())),
        clean_start: *fd.clean_start.get(),
        skip_undefined: *fd.skip_undefined.get(),
        override_time: secs(*fd.override_time.get()),
        ..fence::FenceConfig::default()
    };
    for n in &conf.nodes {
        let mut methods = Vec::new();
        for m in &n.fence {
            let devices = m
                .devices
                .iter()
                .map(|r| device(conf, r))
                .collect::<Result<Vec<_>, _>>()?;
            methods.push(fence::Method {
                name: m.name.clone(),
                devices,
            });
        }
        let unfence = n
            .unfence
            .iter()
            .map(|r| device(conf, r))
            .collect::<Result<Vec<_>, _>>()?;
        cfg.nodes.insert(
            NodeId(n.nodeid),
            fence::NodeFence {
                name: n.name.clone(),
                methods,
                unfence,
            },
        );
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"<?xml version="1.0"?>
<cluster name="an-cluster" config_version="7">
  <cman expected_votes="1" two_node="1" port="5405"/>
  <totem token="3000"/>
  <fence_daemon post_join_delay="10" post_fail_delay="2"/>
  <clusternodes>
    <clusternode name="127.0.0.1" nodeid="1">
      <altname name="127.0.1.1"/>
      <fence><method name="pdu"><device name="sw" port="1"/></method></fence>
    </clusternode>
    <clusternode name="127.0.0.2" nodeid="2">
      <altname name="127.0.1.2" port="6405"/>
      <fence><method name="pdu"><device name="sw" port="2" delay="5"/></method></fence>
    </clusternode>
  </clusternodes>
  <fencedevices>
    <fencedevice name="sw" agent="fence_quorate" socket="/run/q.sock" passwd="s3cret"/>
  </fencedevices>
</cluster>"#;

    fn literal(name: &str, port: u16) -> Result<SocketAddr, String> {
        name.parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, port))
            .map_err(|e| e.to_string())
    }

    fn conf() -> ClusterConf {
        let parsed = config::parse("cluster.conf", CONF);
        parsed.config.expect("test config is valid")
    }

    #[test]
    fn maps_timers_votes_rings_and_fence_devices() {
        let plan = make_plan(&conf(), "127.0.0.2", literal).unwrap();
        assert_eq!(plan.me, NodeId(2));
        assert_eq!(plan.rings, 2);
        assert_eq!(
            plan.peers[&NodeId(1)].addrs,
            vec![
                "127.0.0.1:5405".parse().unwrap(),
                "127.0.1.1:5405".parse().unwrap()
            ]
        );
        assert_eq!(
            plan.peers[&NodeId(2)].addrs[1],
            "127.0.1.2:6405".parse().unwrap()
        );
        assert_eq!(plan.totem.token, Duration::from_millis(3000));
        assert!(plan.quorum.two_node);
        assert!(
            plan.quorum.wait_for_all,
            "two_node implies wait_for_all unless the file says otherwise"
        );
        assert_eq!(plan.fence.post_fail_delay, Duration::from_secs(2));
        assert_eq!(plan.fence.post_join_delay, Some(Duration::from_secs(10)));
        let d = &plan.fence.nodes[&NodeId(2)].methods[0].devices[0];
        assert_eq!(d.agent, "fence_quorate");
        assert_eq!(d.args.get("port"), Some("2"));
        assert_eq!(d.args.get("socket"), Some("/run/q.sock"));
        assert_eq!(d.args.get("passwd"), Some("s3cret"));
        assert_eq!(d.delay, Duration::from_secs(5));
    }

    #[test]
    fn services_vms_domains_and_resources_map_onto_the_scheduler() {
        let text = r#"<cluster name="c" config_version="3">
  <clusternodes>
    <clusternode name="a" nodeid="1"/><clusternode name="b" nodeid="2"/>
  </clusternodes>
  <fencedevices/>
  <rm>
    <failoverdomains>
      <failoverdomain name="pref-b" ordered="1" restricted="1">
        <failoverdomainnode name="b" priority="1"/><failoverdomainnode name="a" priority="2"/>
      </failoverdomain>
    </failoverdomains>
    <resources><ip address="10.0.0.5/24"/></resources>
    <service name="web" domain="pref-b" recovery="relocate" max_restarts="2" depend="service:db">
      <ip ref="10.0.0.5/24"/><script file="/etc/init.d/httpd" name="httpd"/>
    </service>
    <service name="db" autostart="0"/>
    <vm name="guest1" migrate="pause"/>
  </rm>
</cluster>"#;
        let conf = config::parse("cluster.conf", text).config.expect("valid");
        let spec = rm_spec(&conf);
        assert!(spec.validate().is_ok(), "{:?}", spec.validate());
        let web = spec.services.iter().find(|s| s.name == "web").unwrap();
        let d = web.domain.as_ref().unwrap();
        assert!(d.ordered && d.restricted && !d.nofailback);
        assert_eq!(
            d.nodes[0],
            rm::DomainNode {
                node: NodeId(2),
                priority: 1
            }
        );
        assert_eq!(web.recovery, rm::Recovery::Relocate);
        assert_eq!(web.depend.as_deref(), Some("db"));
        let order = rm::start_order(&web.resources);
        let names: Vec<&str> = order.iter().map(|r| r.rtype.as_str()).collect();
        assert_eq!(names, ["ip", "script"]);
        assert_eq!(web.resources[0].name, "10.0.0.5/24");
        assert!(
            !spec
                .services
                .iter()
                .find(|s| s.name == "db")
                .unwrap()
                .autostart
        );
        let vm = spec.services.iter().find(|s| s.name == "guest1").unwrap();
        assert_eq!(vm.kind, rm::ServiceKind::Vm);
        assert_eq!(vm.migrate, Some(rm::MigrateMode::Pause));
        assert_eq!(vm.resources[0].rtype, "vm");
    }

    #[test]
    fn unknown_node_lists_the_configured_ones() {
        let e = make_plan(&conf(), "an-node09", literal)
            .unwrap_err()
            .to_string();
        assert!(e.contains("127.0.0.1, 127.0.0.2"), "{e}");
    }
}
