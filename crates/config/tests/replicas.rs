//! `<replicas>`: the model with its defaults, `show` and `diff`, and a table of defective volumes,
//! each rejected at the exact line with a hint.

use config::{diff, parse, render_text, Area, ChangeKind, Severity};

/// Two nodes (n2 with a storage-network altname): lines 2..=5.
const NODES: &str = r#"<clusternodes>
<clusternode name="n1" nodeid="1"/>
<clusternode name="n2" nodeid="2"><altname name="n2.sn"/></clusternode>
</clusternodes>"#;

/// `<cluster>` on line 1, NODES on lines 2-5, `rest` from line 6.
fn conf(rest: &str) -> String {
    format!("<cluster name=\"t\" config_version=\"1\">\n{NODES}\n{rest}\n</cluster>\n")
}

/// A good volume on lines 6-10 with `attrs` on its `<replica>`.
fn volume(attrs: &str) -> String {
    format!(
        "<replicas>\n<replica name=\"r0\" size=\"20G\"{attrs}>\n<node name=\"n1\" disk=\"/srv/r0.img\" address=\"n1.sn\"/>\n<node name=\"n2\" disk=\"/srv/r0.img\"/>\n</replica></replicas>"
    )
}

/// No error anywhere and no warning about the volume (the nodes have no fencing: lines 3-4 warn).
fn quiet(p: &config::Parsed) {
    let noisy: Vec<_> = p
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error || d.line >= 6)
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
}

#[test]
fn defaults_each_marked_and_shown() {
    let p = parse("c.conf", &conf(&volume("")));
    quiet(&p);
    let c = p.config.unwrap();
    let r = c.replica("r0").unwrap();
    assert_eq!(r.size, 20 << 30);
    assert_eq!((r.protocol.value.as_str(), r.protocol.default), ("C", true));
    assert_eq!((r.port.value, r.nbd_port.value), (7789, 10809));
    assert_eq!(r.fencing.value, "resource-and-stonith");
    assert_eq!(r.after_sb_0pri.value, "discard-zero-changes");
    assert_eq!(r.after_sb_1pri.value, "discard-secondary");
    assert_eq!(r.after_sb_2pri.value, "disconnect");
    assert!(!r.allow_two_primaries.value && r.allow_two_primaries.default);
    assert_eq!(r.rate.value, 100 << 20);
    let n1 = r.node("n1").unwrap();
    assert_eq!(
        (n1.address.value.as_str(), n1.address.default),
        ("n1.sn", false)
    );
    assert_eq!(n1.meta.value, "/srv/r0.img.md");
    // Without address=, the node's storage network is its <altname>.
    let n2 = r.node("n2").unwrap();
    assert_eq!(
        (n2.address.value.as_str(), n2.address.default),
        ("n2.sn", true)
    );
    let shown = render_text(&c);
    assert!(
        shown.contains("replica r0 size 21474836480 bytes:"),
        "{shown}"
    );
    assert!(
        shown.contains("protocol                C (default)"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "node n2: disk /srv/r0.img meta /srv/r0.img.md (default) address n2.sn (default)"
        ),
        "{shown}"
    );
}

#[test]
fn explicit_options_and_units() {
    let p = parse(
        "c.conf",
        &conf(&volume(
            " protocol=\"a\" port=\"7790\" nbd_port=\"10810\" after-sb-0pri=\"discard-younger-primary\" after-sb-1pri=\"consensus\" allow-two-primaries=\"yes\" rate=\"30M\" fencing=\"resource-only\"",
        )),
    );
    quiet(&p);
    let c = p.config.unwrap();
    let r = &c.replicas[0];
    assert_eq!(r.protocol.value, "A");
    assert_eq!((r.port.value, r.nbd_port.value), (7790, 10810));
    assert_eq!(r.after_sb_0pri.value, "discard-younger-primary");
    assert_eq!(r.after_sb_1pri.value, "consensus");
    assert!(r.allow_two_primaries.value);
    assert_eq!(r.rate.value, 30 << 20);
    assert_eq!(r.fencing.value, "resource-only");
    for (t, b) in [
        ("4096", 4096),
        ("1K", 1024),
        ("2GiB", 2 << 30),
        ("1T", 1 << 40),
        ("3MB", 3 << 20),
    ] {
        assert_eq!(config::parse::parse_bytes(t), Some(b), "{t}");
    }
    assert_eq!(config::parse::parse_bytes("G"), None);
}

#[test]
fn a_service_uses_a_replica_before_its_filesystem() {
    let text = conf(&format!(
        "{}\n<rm><service name=\"s\">\n<fs name=\"f\" device=\"/dev/nbd0\" mountpoint=\"/m\"/>\n<replica name=\"r0\"/>\n</service></rm>",
        volume("")
    ));
    let p = parse("c.conf", &text);
    quiet(&p);
    let c = p.config.unwrap();
    let order: Vec<String> = c.rm.services[0]
        .start_sequence()
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    assert_eq!(order, ["replica", "fs"]);
}

#[test]
fn diff_names_replica_changes() {
    let old = parse("a.conf", &conf(&volume(""))).config.unwrap();
    let text = conf(&format!(
        "{}\n",
        volume(" protocol=\"B\"").replace(
            "</replica></replicas>",
            "</replica>\n<replica name=\"r1\" size=\"1G\" port=\"7790\" nbd_port=\"10810\"><node name=\"n1\" disk=\"/a\"/><node name=\"n2\" disk=\"/b\"/></replica></replicas>"
        )
    ))
    .replace("config_version=\"1\"", "config_version=\"2\"");
    let new = parse("b.conf", &text);
    quiet(&new);
    let d = diff(&old, &new.config.unwrap()).unwrap();
    let has = |kind, subj: &str| {
        d.changes
            .iter()
            .any(|c| c.area == Area::Replicas && c.kind == kind && c.subject.contains(subj))
    };
    assert!(
        has(ChangeKind::Changed, "replica:r0.protocol"),
        "{:#?}",
        d.changes
    );
    assert!(has(ChangeKind::Added, "replica:r1"), "{:#?}", d.changes);
}

struct Case {
    what: &'static str,
    text: String,
    line: u32,
    needle: &'static str,
    hint: &'static str,
}

#[test]
fn each_defect_is_reported_at_its_line_with_a_hint() {
    let c = |what, text: String, line, needle, hint| Case {
        what,
        text,
        line,
        needle,
        hint,
    };
    let good = volume("");
    let cases = vec![
        c("unknown node", conf(&good.replace("node name=\"n2\"", "node name=\"n3\"")), 9, "<replica><node name=\"n3\"> is not a <clusternode>", "n1, n2"),
        c("one node only", conf(&good.replace("<node name=\"n2\" disk=\"/srv/r0.img\"/>", "")), 7, "has 1 <node>s", "two"),
        c("three nodes", conf(&good.replace("</replica>", "<node name=\"n1\" disk=\"/x\"/></replica>")), 7, "has 3 <node>s", "two"),
        c("same node twice", conf(&good.replace("node name=\"n2\"", "node name=\"n1\"")), 9, "listed twice", "two different nodes"),
        c("bad size", conf(&good.replace("size=\"20G\"", "size=\"20Q\"")), 7, "size=\"20Q\" is not a size", "K, M, G or T"),
        c("no size", conf(&good.replace(" size=\"20G\"", "")), 7, "has no size=", "size=\"20G\""),
        c("bad protocol", conf(&volume(" protocol=\"D\"")), 7, "protocol=\"D\"", "A, B, C"),
        c("bad 0pri policy", conf(&volume(" after-sb-0pri=\"discard-zero-change\"")), 7, "after-sb-0pri=\"discard-zero-change\"", "did you mean after-sb-0pri=\"discard-zero-changes\"?"),
        c("bad 1pri policy", conf(&volume(" after-sb-1pri=\"call-pri-lost\"")), 7, "after-sb-1pri=\"call-pri-lost\"", "discard-secondary"),
        c("2pri other than disconnect", conf(&volume(" after-sb-2pri=\"violently-as0p\"")), 7, "after-sb-2pri", "disconnect"),
        c("bad fencing", conf(&volume(" fencing=\"stonith\"")), 7, "fencing=\"stonith\"", "resource-and-stonith"),
        c("port equals nbd_port", conf(&volume(" port=\"7000\" nbd_port=\"7000\"")), 7, "both 7000", "different ports"),
        c("port out of range", conf(&volume(" port=\"70000\"")), 7, "out of range", "0 to 65535"),
        c("duplicate name", conf(&good.replace("</replicas>", "\n<replica name=\"r0\" size=\"1G\" port=\"7790\" nbd_port=\"10810\"><node name=\"n1\" disk=\"/a\"/><node name=\"n2\" disk=\"/b\"/></replica></replicas>")), 11, "two <replica>s named \"r0\"", "unique"),
        c("duplicate port", conf(&good.replace("</replicas>", "\n<replica name=\"r1\" size=\"1G\" nbd_port=\"10810\"><node name=\"n1\" disk=\"/a\" address=\"n1.sn\"/><node name=\"n2\" disk=\"/b\"/></replica></replicas>")), 11, "port=\"7789\" is already used by replica \"r0\"", "own port"),
        c("device without meta", conf(&good.replace("disk=\"/srv/r0.img\" address", "disk=\"/dev/sdb1\" address")), 8, "is a device", "meta="),
        c("service names an undefined replica", conf(&format!("{good}\n<rm><service name=\"s\">\n<replica name=\"r9\"/>\n</service></rm>")), 12, "<replica name=\"r9\"> names no <replica>", "r0"),
    ];
    for case in cases {
        let p = parse("c.conf", &case.text);
        let hit = p.diagnostics.iter().find(|d| {
            d.severity == Severity::Error && d.line == case.line && d.message.contains(case.needle)
        });
        let Some(d) = hit else {
            panic!(
                "{}: no error at line {} containing {:?}; got {:#?}\n{}",
                case.what, case.line, case.needle, p.diagnostics, case.text
            );
        };
        assert!(
            d.hint.contains(case.hint),
            "{}: hint {:?}",
            case.what,
            d.hint
        );
        assert!(d.column >= 1, "{}", case.what);
    }
}

#[test]
fn unknown_replica_attribute_is_a_warning_with_a_suggestion() {
    let p = parse("c.conf", &conf(&volume(" protocl=\"C\"")));
    let w = p.warnings().find(|d| d.line == 7).expect("a warning");
    assert!(w.hint.starts_with("did you mean protocol=?"), "{w}");
    assert!(p.config.is_some());
}

#[test]
fn users_of_a_volume_must_run_where_it_lives() {
    let three = conf(&volume("")).replace(
        "</clusternodes>",
        "<clusternode name=\"n3\" nodeid=\"3\"/></clusternodes>",
    );
    // Lines: 1 cluster, 2-6 nodes (n3 on line 5's end), volume 7-11, rm from 12.
    let with = |rm: &str| three.replace("</cluster>", &format!("{rm}\n</cluster>"));
    let p = parse(
        "c.conf",
        &with("<rm>\n<service name=\"s\"><replica name=\"r0\"/></service>\n<vm name=\"v\" replica=\"r9\"/>\n</rm>"),
    );
    let w = p
        .warnings()
        .find(|d| d.message.contains("uses replica \"r0\""))
        .expect("a placement warning");
    assert!(
        w.message.contains("service \"s\"") && w.message.contains("n1 and n2"),
        "{w}"
    );
    assert!(w.hint.contains("restricted failover domain"), "{w}");
    let e = p
        .errors()
        .find(|d| d.message.contains("replica=\"r9\""))
        .expect("an undefined volume on a vm");
    assert!(e.hint.contains("r0"), "{e}");
    // A restricted domain of the two holders is quiet.
    let p = parse(
        "c.conf",
        &with("<rm><failoverdomains><failoverdomain name=\"d\" restricted=\"1\"><failoverdomainnode name=\"n1\"/><failoverdomainnode name=\"n2\"/></failoverdomain></failoverdomains>\n<service name=\"s\" domain=\"d\"><replica name=\"r0\"/></service>\n<vm name=\"v\" domain=\"d\" replica=\"r0\"/>\n</rm>"),
    );
    assert!(
        !p.diagnostics.iter().any(|d| d.message.contains("replica")),
        "{:#?}",
        p.diagnostics
    );
}
