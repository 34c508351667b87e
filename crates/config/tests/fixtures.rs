//! The seed's cluster.conf at each stage, a complete two-node config and real-world-shaped files.

use config::*;
use std::net::IpAddr;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str) -> Parsed {
    load_file(&fixture(name)).expect("fixture readable")
}

fn valid(name: &str) -> (ClusterConf, Vec<Diagnostic>) {
    let p = load(name);
    assert!(p.is_valid(), "{name}: {:#?}", p.diagnostics);
    (p.config.unwrap(), p.diagnostics)
}

#[test]
fn seed_stages_without_nodes_are_incomplete() {
    for f in ["seed_v1.conf", "seed_v2.conf"] {
        let p = load(f);
        assert!(!p.is_valid(), "{f}");
        let errors: Vec<_> = p.errors().collect();
        assert_eq!(errors.len(), 1, "{f}: {errors:#?}");
        assert_eq!(errors[0].line, 2);
        assert!(errors[0]
            .message
            .contains("incomplete configuration: no <clusternodes>"));
        assert!(errors[0].hint.contains("<clusternode"));
    }
}

#[test]
fn seed_stage_3_and_4_validate_with_fencing_warnings() {
    for f in ["seed_v3.conf", "seed_v4.conf", "seed_v4_ipmi.conf"] {
        let (c, diags) = valid(f);
        assert_eq!(c.name, "an-cluster");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[0].name, "an-node01.alteeve.com");
        assert_eq!(c.nodes[1].nodeid, 2);
        assert!(*c.cman.two_node.get());
        assert_eq!(c.quorum.quorum, 1, "two_node: one vote is quorate");
        assert_eq!(*c.quorum.expected_votes.get(), 1);
        // Exactly the two "no fence method" warnings, on the clusternode lines.
        let lines: Vec<u32> = diags.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![5, 6], "{f}: {diags:#?}");
        assert!(diags.iter().all(|d| d.message.contains("no fence method")));
    }
    let (c, _) = valid("seed_v4.conf");
    assert_eq!(c.config_version, 4);
    let batou = c.fence_device("batou").unwrap();
    assert_eq!(batou.agent, "fence_na");
    assert_eq!(batou.attrs["ipaddr"], "batou.alteeve.com");
    assert_eq!(
        batou.attrs["quiet"], "1",
        "unknown agent attributes pass through"
    );
    assert_eq!(
        batou.attrs["passwd"], "secret",
        "the model keeps the secret for the agent"
    );
    let (c, _) = valid("seed_v4_ipmi.conf");
    let names: Vec<_> = c.fence_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["fence_ipmi_3", "fence_ipmi_4"]);
}

#[test]
fn rhcs_defaults_apply() {
    let (c, _) = valid("seed_v4.conf");
    assert_eq!(c.totem.token, Setting::defaulted(10_000));
    assert_eq!(c.totem.join, Setting::defaulted(60));
    assert_eq!(
        c.totem.consensus,
        Setting::defaulted(2000),
        "two-node: 0.2*token clamped to 2000"
    );
    assert_eq!(
        c.totem.token_retransmits_before_loss_const,
        Setting::defaulted(4)
    );
    assert_eq!(c.totem.fail_recv_const, Setting::defaulted(2500));
    assert_eq!(c.totem.rrp_mode, Setting::defaulted(RrpMode::None));
    assert_eq!(c.cman.port, Setting::defaulted(5405));
    assert_eq!(c.fence_daemon.post_join_delay, Setting::defaulted(6));
    assert_eq!(c.fence_daemon.post_fail_delay, Setting::defaulted(0));
    assert_eq!(c.fence_daemon.clean_start, Setting::defaulted(false));
    assert_eq!(c.fence_daemon.override_time, Setting::defaulted(3));
    assert_eq!(c.nodes[0].votes, Setting::defaulted(1));
    // cman's generate_cluster_id for "an-cluster" and the multicast address derived from it.
    let id = "an-cluster".bytes().fold(0u32, |v, b| (v << 1) + b as u32) & 0xffff;
    assert_eq!(u32::from(*c.cman.cluster_id.get()), id);
    assert_eq!(
        c.cman.multicast.get(),
        &format!("239.192.{}.{}", id >> 8, id % 255)
    );

    let (c, _) = valid("real_world.conf");
    assert_eq!(c.config_version, 2013060401, "dates as config_version");
    assert_eq!(c.totem.token, Setting::explicit(21_000));
    assert_eq!(
        c.totem.consensus,
        Setting::defaulted(23_000),
        "3 nodes: token + 2000"
    );
    assert_eq!(c.quorum.total_votes, 3);
    assert_eq!(
        c.quorum.expected_votes,
        Setting::defaulted(3),
        "sum of votes"
    );
    assert_eq!(c.quorum.quorum, 2, "expected/2 + 1");
    assert_eq!(c.cman.port, Setting::explicit(5500));
}

#[test]
fn complete_two_node_config() {
    let (c, diags) = valid("two_node_full.conf");
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(c.config_version, 7);
    let n1 = c.node("an-node01.alteeve.com").unwrap();
    assert_eq!(n1.altnames[0].name, "an-node01.sn");
    let methods: Vec<_> = n1.fence.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(methods, ["ipmi", "node_assassin"]);
    assert_eq!(n1.fence[1].devices[0].name, "batou");
    assert_eq!(n1.fence[1].devices[0].attrs["port"], "01");
    assert_eq!(c.totem.rrp_mode, Setting::explicit(RrpMode::Passive));
    assert_eq!(c.totem.secauth, Setting::explicit(false));
    assert_eq!(c.fence_daemon.post_join_delay, Setting::explicit(30));

    let d = c.rm.domain("primary_n01").unwrap();
    assert!(*d.ordered.get() && *d.restricted.get() && *d.nofailback.get());
    assert_eq!(d.nodes[1].priority, Setting::explicit(2));

    let www = c.rm.service("www").unwrap();
    assert_eq!(www.recovery, Setting::explicit(Recovery::Relocate));
    assert_eq!(www.max_restarts, Setting::explicit(3));
    assert_eq!(www.domain.as_deref(), Some("primary_n01"));
    // Written script-then-ip, started ip (7) then script (9), stopped in reverse.
    let start: Vec<_> = www
        .start_sequence()
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(start, ["ip", "script"]);
    let stop: Vec<_> = www
        .stop_sequence()
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(stop, ["script", "ip"]);
    assert_eq!(www.resources[0].reference.as_deref(), Some("httpd"));
    assert_eq!(
        www.resources[0].attr("file"),
        Some("/etc/init.d/httpd"),
        "ref resolved"
    );

    let vm = c.rm.vm("vm01-dev").unwrap();
    assert_eq!(vm.migrate, Setting::defaulted(Migrate::Live));
    assert_eq!(vm.autostart, Setting::explicit(false));
    assert_eq!(vm.attrs["path"], "/xen_shared/definitions");
}

#[test]
fn real_world_shapes() {
    let (c, diags) = valid("real_world.conf");
    // The only warning: the unknown element, with its line.
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].line, 42);
    assert!(diags[0].message.contains("<fancy_future_feature>"));
    // Sections out of order: rm before nodes still resolves domains and refs.
    let web = c.rm.service("web").unwrap();
    assert_eq!(web.recovery, Setting::explicit(Recovery::RestartDisable));
    let seq: Vec<_> = web
        .start_sequence()
        .iter()
        .map(|r| format!("{}:{}", r.kind, r.key().unwrap()))
        .collect();
    assert_eq!(seq, ["ip:10.0.0.5/24", "fs:webdata", "script:apache"]);
    assert!(web.resources[0].as_ip().unwrap().monitor_link);
    let fs = web.resources[0].children[0].as_fs().unwrap();
    assert_eq!(fs.mountpoint, Some("/srv/www"));
    assert!(fs.force_unmount);
    // Same name in two resource types is fine.
    let kinds: Vec<_> =
        c.rm.resources
            .iter()
            .filter(|r| r.key() == Some("webdata"))
            .map(|r| r.kind.as_str())
            .collect();
    assert_eq!(kinds, ["fs", "script"]);
    assert_eq!(c.fence_devices[0].attrs["power_wait"], "5");

    let (c, diags) = valid("crlf.conf");
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(c.nodes[1].line, 6, "CRLF counts as one line break");
}

#[test]
fn start_order_sorts_by_type_and_keeps_document_order_within_a_level() {
    let text = r#"<cluster name="t" config_version="1">
<clusternodes><clusternode name="a" nodeid="1"/></clusternodes>
<rm><service name="s">
  <script name="z" file="/z"/>
  <apache name="web"/>
  <ip address="10.0.0.1"/>
  <fs name="f2" device="/dev/b" mountpoint="/b"/>
  <lvm name="vg" vg_name="vg0"/>
  <fs name="f1" device="/dev/a" mountpoint="/a"><script name="inner" file="/i"/><ip address="10.0.0.2"/></fs>
  <nfsexport name="e"/>
</service></rm></cluster>"#;
    let p = parse("t", text);
    assert!(p.is_valid(), "{:#?}", p.diagnostics);
    let c = p.config.unwrap();
    let s = c.rm.service("s").unwrap();
    let order: Vec<_> = s
        .start_sequence()
        .iter()
        .map(|r| r.key().unwrap())
        .collect();
    assert_eq!(
        order,
        ["vg", "f2", "f1", "10.0.0.2", "inner", "e", "10.0.0.1", "z", "web"]
    );
    let mut stop: Vec<_> = s.stop_sequence().iter().map(|r| r.key().unwrap()).collect();
    stop.reverse();
    assert_eq!(stop, order);
}

#[test]
fn show_json_round_trips_and_is_stable() {
    for f in [
        "seed_v3.conf",
        "seed_v4.conf",
        "seed_v4_ipmi.conf",
        "two_node_full.conf",
        "real_world.conf",
        "crlf.conf",
    ] {
        let (c, _) = valid(f);
        let json = serde_json::to_string_pretty(&c).unwrap();
        assert!(
            !json.contains("\"secret\""),
            "{f}: secrets must not be shown"
        );
        assert!(
            !json.contains("\"private\""),
            "{f}: SNMP community must not be shown"
        );
        let back: ClusterConf = serde_json::from_str(&json).unwrap();
        let again = serde_json::to_string_pretty(&back).unwrap();
        assert_eq!(json, again, "{f}: show JSON is stable");
        // Everything but the redacted secrets survives.
        let mut redacted = c.clone();
        for d in &mut redacted.fence_devices {
            for (k, v) in d.attrs.iter_mut() {
                if is_secret_attr(k) {
                    *v = REDACTED.to_string();
                }
            }
        }
        assert_eq!(back, redacted, "{f}");
    }
}

#[test]
fn text_show_marks_defaults_and_hides_secrets() {
    let (c, _) = valid("seed_v4.conf");
    let t = render_text(&c);
    assert!(
        t.contains("token                     10000 ms (default)"),
        "{t}"
    );
    assert!(t.contains("two_node                  1\n"), "{t}");
    assert!(t.contains("post_join_delay           6 s (default)"), "{t}");
    assert!(!t.contains("secret"), "{t}");
    assert!(t.contains("passwd=(hidden)"));
}

#[test]
fn local_node_by_address() {
    let (c, _) = valid("two_node_full.conf");
    let table = |name: &str| -> Vec<IpAddr> {
        match name {
            "an-node01.alteeve.com" => vec!["10.20.0.1".parse().unwrap()],
            "an-node02.alteeve.com" => vec!["10.20.0.2".parse().unwrap()],
            _ => vec![],
        }
    };
    let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "10.20.0.2".parse().unwrap()];
    let n = identify_local_node(&c, &local, table).unwrap();
    assert_eq!(n.name, "an-node02.alteeve.com");

    let err = identify_local_node(&c, &["192.0.2.1".parse().unwrap()], table).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("an-node01.alteeve.com -> 10.20.0.1"), "{msg}");
    assert!(err.hint().contains("--node"));

    let both: Vec<IpAddr> = vec!["10.20.0.1".parse().unwrap(), "10.20.0.2".parse().unwrap()];
    assert!(matches!(
        identify_local_node(&c, &both, table),
        Err(LocalNodeError::Ambiguous(v)) if v.len() == 2
    ));

    // A node named by an IP literal is not resolved.
    let p = parse(
        "t",
        r#"<cluster name="t" config_version="1"><clusternodes><clusternode name="10.9.0.7" nodeid="7"/><clusternode name="fd00::8" nodeid="8"/></clusternodes></cluster>"#,
    );
    let c = p.config.unwrap();
    let n = identify_local_node(&c, &["fd00::8".parse().unwrap()], |_| {
        panic!("IP literals must not be resolved")
    })
    .unwrap();
    assert_eq!(n.nodeid, 8);
}

#[test]
fn diff_reports_a_version_bump() {
    let (old, _) = valid("seed_v4.conf");
    let text = std::fs::read_to_string(fixture("two_node_full.conf")).unwrap();
    let new = parse("new", &text).config.unwrap();
    let d = diff(&old, &new).unwrap();
    assert_eq!((d.old_version, d.new_version), (4, 7));
    let has = |area: Area, kind: ChangeKind, subj: &str| {
        d.changes
            .iter()
            .any(|c| c.area == area && c.kind == kind && c.subject.contains(subj))
    };
    assert!(
        has(Area::Fencing, ChangeKind::Added, "fencedevice fence_ipmi_3"),
        "{:#?}",
        d.changes
    );
    assert!(has(
        Area::Fencing,
        ChangeKind::Changed,
        "an-node01.alteeve.com.fence"
    ));
    assert!(has(Area::Services, ChangeKind::Added, "service:www"));
    assert!(has(Area::Vms, ChangeKind::Added, "vm:vm01-dev"));
    assert!(has(Area::Domains, ChangeKind::Added, "primary_n01"));
    assert!(has(Area::Timers, ChangeKind::Changed, "totem.rrp_mode"));
    assert!(has(
        Area::Fencing,
        ChangeKind::Changed,
        "fence_daemon.post_join_delay"
    ));
    for c in &d.changes {
        assert!(!c.detail.contains("secret"), "{c}");
    }

    // Refused when the version does not grow, also for equal versions.
    let err = diff(&new, &old).unwrap_err();
    assert_eq!(err, DiffError::VersionNotIncreased { old: 7, new: 4 });
    assert!(err.hint().contains("at least 8"));
    assert!(diff(&old, &old).is_err());
}

#[test]
fn diff_nodes_services_and_secrets() {
    let base = std::fs::read_to_string(fixture("two_node_full.conf")).unwrap();
    let old = parse("old", &base).config.unwrap();
    let changed = base
        .replace("config_version=\"7\"", "config_version=\"8\"")
        .replace("recovery=\"relocate\"", "recovery=\"disable\"")
        .replace(
            "ipaddr=\"192.168.3.63\" login=\"root\" name=\"fence_ipmi_3\" passwd=\"secret\"",
            "ipaddr=\"192.168.3.63\" login=\"root\" name=\"fence_ipmi_3\" passwd=\"hunter2\"",
        )
        .replace(
            "<clusternode name=\"an-node02.alteeve.com\" nodeid=\"2\">",
            "<clusternode name=\"an-node02.alteeve.com\" nodeid=\"2\" votes=\"2\">",
        )
        .replace("expected_votes=\"1\" two_node=\"1\"", "");
    let new = parse("new", &changed).config.unwrap();
    let d = diff(&old, &new).unwrap();
    let lines: Vec<String> = d.changes.iter().map(|c| c.to_string()).collect();
    let find = |s: &str| lines.iter().any(|l| l.contains(s));
    assert!(
        find("~ Services service:www.recovery: relocate -> disable"),
        "{lines:#?}"
    );
    assert!(
        find("~ Fencing fencedevice fence_ipmi_3.attrs.passwd: changed (value not shown)"),
        "{lines:#?}"
    );
    assert!(
        find("~ Nodes an-node02.alteeve.com.votes: 1 -> 2"),
        "{lines:#?}"
    );
    assert!(find("~ Quorum quorum.quorum: 1 -> 2"), "{lines:#?}");
    assert!(!lines
        .iter()
        .any(|l| l.contains("hunter2") || l.contains("secret")));
}

#[test]
fn load_file_errors_are_typed() {
    let e = load_file(std::path::Path::new("/nonexistent/cluster.conf")).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/cluster.conf"));
    // An endless file is cut at the size limit instead of exhausting memory.
    let p = load_file(std::path::Path::new("/dev/zero")).unwrap();
    let e = p.errors().next().unwrap();
    assert!(
        e.message.contains("larger than the 4194304 byte limit"),
        "{e}"
    );
}
