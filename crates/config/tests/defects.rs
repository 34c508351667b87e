//! Table of defective configs: each is rejected at the exact line, and the message names the problem.

use config::{parse, Severity};

/// Two fenced nodes and a device: lines 2..=6 of every case built with [`conf`].
const NODES: &str = r#"<clusternodes>
<clusternode name="n1" nodeid="1"><fence><method name="1"><device name="d1" port="1"/></method></fence></clusternode>
<clusternode name="n2" nodeid="2"><fence><method name="1"><device name="d1" port="2"/></method></fence></clusternode>
</clusternodes>
<fencedevices><fencedevice name="d1" agent="fence_apc" ipaddr="10.0.0.250"/></fencedevices>"#;

/// `<cluster>` on line 1, NODES on lines 2-6, `rest` from line 7.
fn conf(rest: &str) -> String {
    format!("<cluster name=\"t\" config_version=\"1\">\n{NODES}\n{rest}\n</cluster>\n")
}

fn raw(s: &str) -> String {
    s.to_string()
}

struct Case {
    what: &'static str,
    text: String,
    line: u32,
    needle: &'static str,
}

fn cases() -> Vec<Case> {
    let c = |what, text: String, line, needle| Case {
        what,
        text,
        line,
        needle,
    };
    vec![
        c("malformed XML", raw("<cluster name=\"t\" config_version=\"1\">\n<cman>\n</cluster>\n"), 3, "malformed XML"),
        c("unclosed attribute quote", raw("<cluster name=\"t config_version=\"1\">\n</cluster>\n"), 1, "malformed XML"),
        c("wrong root", raw("<?xml version=\"1.0\"?>\n<clusterconf name=\"t\" config_version=\"1\"/>\n"), 2, "root element is <clusterconf>"),
        c("missing name", raw("<cluster config_version=\"1\">\n<clusternodes><clusternode name=\"a\" nodeid=\"1\"/></clusternodes>\n</cluster>"), 1, "no name="),
        c("empty name", raw("<cluster name=\"\" config_version=\"1\">\n<clusternodes><clusternode name=\"a\" nodeid=\"1\"/></clusternodes>\n</cluster>"), 1, "empty name="),
        c("missing config_version", raw("<cluster name=\"t\">\n<clusternodes><clusternode name=\"a\" nodeid=\"1\"/></clusternodes>\n</cluster>"), 1, "no config_version"),
        c("invalid config_version", raw("<cluster name=\"t\"\n  config_version=\"v2\">\n<clusternodes><clusternode name=\"a\" nodeid=\"1\"/></clusternodes>\n</cluster>"), 2, "config_version=\"v2\""),
        c("duplicate node name", conf("<!-- -->").replace("name=\"n2\" nodeid", "name=\"n1\" nodeid"), 4, "duplicate node name \"n1\""),
        c("duplicate nodeid", conf("").replace("nodeid=\"2\"", "nodeid=\"1\""), 4, "duplicate nodeid=\"1\""),
        c("nodeid zero", conf("").replace("nodeid=\"2\"", "nodeid=\"0\""), 4, "nodeid=\"0\" is not a positive integer"),
        c("nodeid negative", conf("").replace("nodeid=\"2\"", "nodeid=\"-2\""), 4, "nodeid=\"-2\" is not a positive integer"),
        c("nodeid text", conf("").replace("nodeid=\"2\"", "nodeid=\"two\""), 4, "nodeid=\"two\""),
        c("missing nodeid", conf("").replace(" nodeid=\"2\"", ""), 4, "has no nodeid"),
        c("votes not integer", conf("").replace("nodeid=\"2\"", "nodeid=\"2\" votes=\"1.5\""), 4, "votes=\"1.5\""),
        c("expected_votes not integer", conf("<cman expected_votes=\"two\"/>"), 7, "expected_votes=\"two\""),
        c("device names undefined fencedevice", conf("").replace("device name=\"d1\" port=\"2\"", "device name=\"d9\" port=\"2\""), 4, "<device name=\"d9\"> names no <fencedevice>"),
        c("fencedevice without agent", conf("").replace(" agent=\"fence_apc\"", ""), 6, "no agent="),
        c("fencedevice duplicate name", conf("<fencedevices/>").replace("ipaddr=\"10.0.0.250\"/>", "ipaddr=\"10.0.0.250\"/>\n<fencedevice name=\"d1\" agent=\"fence_ipmilan\"/>"), 7, "duplicate fence device name \"d1\""),
        c("two_node with three nodes", conf("<cman two_node=\"1\" expected_votes=\"1\"/>").replace("</clusternodes>", "<clusternode name=\"n3\" nodeid=\"3\"/></clusternodes>"), 7, "exactly two"),
        c("two_node without expected_votes", conf("<cman two_node=\"1\"/>"), 7, "requires expected_votes=\"1\""),
        c("two_node with expected_votes 2", conf("<cman\n two_node=\"1\" expected_votes=\"2\"/>"), 8, "requires expected_votes=\"1\""),
        c("failoverdomainnode unknown node", conf("<rm><failoverdomains><failoverdomain name=\"fd\">\n<failoverdomainnode name=\"n7\" priority=\"1\"/>\n</failoverdomain></failoverdomains></rm>"), 8, "<failoverdomainnode name=\"n7\"> is not a <clusternode>"),
        c("service domain unknown", conf("<rm>\n<service name=\"s\" domain=\"nowhere\"/>\n</rm>"), 8, "domain=\"nowhere\" names no <failoverdomain>"),
        c("two services with one name", conf("<rm>\n<service name=\"s\"/>\n<service name=\"s\"/>\n</rm>"), 9, "two <service>s named \"s\""),
        c("two vms with one name", conf("<rm>\n<vm name=\"v\"/>\n<vm name=\"v\"/>\n</rm>"), 9, "two <vm>s named \"v\""),
        c("ref to undefined resource", conf("<rm><resources><script name=\"a\" file=\"/a\"/></resources>\n<service name=\"s\">\n<script ref=\"b\"/>\n</service></rm>"), 9, "<script ref=\"b\"> names no <script>"),
        c("ref to undefined ip", conf("<rm>\n<service name=\"s\"><ip ref=\"10.9.9.9/24\"/></service></rm>"), 8, "<ip ref=\"10.9.9.9/24\">"),
        c("ref matches other type only", conf("<rm><resources><fs name=\"x\" device=\"/dev/x\" mountpoint=\"/x\"/></resources>\n<service name=\"s\"><script ref=\"x\"/></service></rm>"), 8, "<script ref=\"x\"> names no <script>"),
        c("recovery invalid", conf("<rm>\n<service name=\"s\" recovery=\"reboot\"/>\n</rm>"), 8, "recovery=\"reboot\""),
        c("vm recovery invalid", conf("<rm>\n<vm name=\"v\" recovery=\"again\"/>\n</rm>"), 8, "recovery=\"again\""),
        c("negative max_restarts", conf("<rm>\n<service name=\"s\" max_restarts=\"-1\"/>\n</rm>"), 8, "max_restarts=\"-1\" must not be negative"),
        c("token not numeric", conf("<totem token=\"10s\"/>"), 7, "token=\"10s\" must be a whole number"),
        c("consensus not numeric", conf("<totem\n consensus=\"fast\"/>"), 8, "consensus=\"fast\""),
        c("post_join_delay not numeric", conf("<fence_daemon post_join_delay=\"six\"/>"), 7, "post_join_delay=\"six\""),
        c("post_fail_delay negative", conf("<fence_daemon post_fail_delay=\"-3\"/>"), 7, "post_fail_delay=\"-3\" is below the minimum 0"),
        c("restart_expire_time not numeric", conf("<rm>\n<vm name=\"v\" restart_expire_time=\"1h\"/>\n</rm>"), 8, "restart_expire_time=\"1h\""),
        c("duplicate resource within a type", conf("<rm><resources>\n<script name=\"a\" file=\"/a\"/>\n<script name=\"a\" file=\"/b\"/>\n</resources></rm>"), 9, "two <script> resources with name=\"a\""),
        c("ip address invalid", conf("<rm><resources>\n<ip address=\"10.0.0.300/24\"/>\n</resources></rm>"), 8, "not an IP address"),
        c("script without file", conf("<rm><resources>\n<script name=\"a\"/>\n</resources></rm>"), 8, "no file="),
        c("depend on unknown service", conf("<rm>\n<service name=\"s\" depend=\"service:db\"/>\n</rm>"), 8, "depend=\"service:db\" names no <service>"),
        c("priority out of range", conf("<rm><failoverdomains><failoverdomain name=\"fd\">\n<failoverdomainnode name=\"n1\" priority=\"0\"/>\n</failoverdomain></failoverdomains></rm>"), 8, "priority=\"0\" is outside 1..100"),
        c("boolean not boolean", conf("<rm>\n<service name=\"s\" autostart=\"maybe\"/>\n</rm>"), 8, "autostart=\"maybe\" is not a boolean"),
        c("second cman section", conf("<cman/>\n<cman port=\"5500\"/>"), 8, "second <cman> section"),
        c("expected_votes too high", conf("<cman expected_votes=\"9\"/>"), 7, "could never be quorate"),
        c("no clusternodes (seed v1/v2)", raw("<cluster name=\"t\" config_version=\"1\">\n<cman expected_votes=\"1\" two_node=\"1\"/>\n</cluster>\n"), 1, "no <clusternodes>"),
        c("empty clusternodes", raw("<cluster name=\"t\" config_version=\"1\">\n<clusternodes/>\n</cluster>\n"), 2, "<clusternodes> has no <clusternode>"),
        // Found by the fuzzer: only unknown elements inside <clusternodes>.
        c("clusternodes without clusternode", raw("<cluster name=\"t\" config_version=\"1\">\n<clusternodes>\n<c/>lusternode name=\"a\" nodeid=\"1\"/>\n</clusternodes>\n</cluster>\n"), 2, "<clusternodes> has no <clusternode>"),
        c("doctype refused", raw("<?xml version=\"1.0\"?>\n<!DOCTYPE cluster [<!ENTITY a \"b\">]>\n<cluster name=\"t\" config_version=\"1\"/>\n"), 2, "<!DOCTYPE> is not allowed"),
        c("nested service", conf("<rm>\n<service name=\"s\">\n<service name=\"t\"/>\n</service>\n</rm>"), 9, "cannot be nested"),
        c("rrp_mode invalid", conf("<totem rrp_mode=\"both\"/>"), 7, "rrp_mode=\"both\""),
        c("migrate invalid", conf("<rm>\n<vm name=\"v\" migrate=\"teleport\"/>\n</rm>"), 8, "migrate=\"teleport\""),
    ]
}

#[test]
fn every_defect_is_an_error_at_its_line_with_a_hint() {
    let mut failures = Vec::new();
    for case in cases() {
        let p = parse("cluster.conf", &case.text);
        let errors: Vec<_> = p.errors().collect();
        let hit = errors
            .iter()
            .find(|d| d.line == case.line && d.message.contains(case.needle));
        match hit {
            Some(d) => {
                assert!(
                    !p.is_valid(),
                    "{}: an error must make the file invalid",
                    case.what
                );
                assert_eq!(d.severity, Severity::Error);
                assert!(d.column >= 1, "{}: column", case.what);
                assert!(!d.hint.is_empty(), "{}: the error needs a hint", case.what);
                assert_eq!(d.file, "cluster.conf");
            }
            None => failures.push(format!(
                "{}: wanted an error on line {} containing {:?}; got:\n{}",
                case.what,
                case.line,
                case.needle,
                p.diagnostics
                    .iter()
                    .map(|d| format!("    {d}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_base_of_the_table_is_valid() {
    // Guards the table: without a defect, the template has no error and no warning.
    let p = parse("cluster.conf", &conf(""));
    assert!(p.is_valid(), "{:#?}", p.diagnostics);
    assert!(p.diagnostics.is_empty(), "{:#?}", p.diagnostics);
}

#[test]
fn columns_point_at_the_attribute() {
    let p = parse("c.conf", &conf("<totem   token=\"x\"/>"));
    let d = p.errors().next().expect("an error");
    assert_eq!((d.line, d.column), (7, 10), "{d}");
}

#[test]
fn looseness_is_accepted() {
    // Names unique per type, not across types; ip referenced by its address; empty sections.
    let text = conf(
        "<fence_daemon/>\n<rm><failoverdomains/><resources>\n<ip address=\"10.0.0.5/24\"/>\n<fs name=\"data\" device=\"/dev/a\" mountpoint=\"/a\"/>\n<script name=\"data\" file=\"/etc/init.d/data\"/>\n</resources>\n<service name=\"s\"><ip ref=\"10.0.0.5/24\"><fs ref=\"data\"/><script ref=\"data\"/></ip></service>\n</rm>",
    );
    let p = parse("c.conf", &text);
    assert!(p.is_valid(), "{:#?}", p.diagnostics);
    let conf = p.config.unwrap();
    let svc = conf.rm.service("s").unwrap();
    let ip = svc.resources[0].as_ip().unwrap();
    assert_eq!(ip.address, "10.0.0.5/24");
    assert_eq!(
        svc.resources[0].children[1].as_script().unwrap().file,
        "/etc/init.d/data"
    );
}

#[test]
fn warnings_do_not_invalidate() {
    let text = conf("<futuristic/>\n<totem tokn=\"5\"/>")
        .replace("<clusternode name=\"n2\" nodeid=\"2\"><fence><method name=\"1\"><device name=\"d1\" port=\"2\"/></method></fence></clusternode>", "<clusternode name=\"n2\" nodeid=\"2\"/>");
    let p = parse("c.conf", &text);
    assert!(p.is_valid(), "{:#?}", p.diagnostics);
    let w: Vec<_> = p.warnings().map(|d| (d.line, d.message.clone())).collect();
    assert!(
        w.iter()
            .any(|(l, m)| *l == 4 && m.contains("no fence method")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|(l, m)| *l == 7 && m.contains("unknown element <futuristic>")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|(l, m)| *l == 8 && m.contains("unknown attribute `tokn`")),
        "{w:?}"
    );
}

#[test]
fn ring_warnings() {
    let p = parse("c.conf", &conf("<totem rrp_mode=\"passive\"/>"));
    assert!(p.is_valid());
    assert!(
        p.warnings()
            .any(|d| d.line == 7 && d.message.contains("no node has an <altname>")),
        "{:#?}",
        p.diagnostics
    );
    let text = conf("").replace(
        "<clusternode name=\"n1\" nodeid=\"1\">",
        "<clusternode name=\"n1\" nodeid=\"1\"><altname name=\"n1-sn\"/>",
    );
    let p = parse("c.conf", &text);
    assert!(p.is_valid());
    assert!(
        p.warnings()
            .any(|d| d.line == 4 && d.message.contains("node \"n2\" has no <altname>")),
        "{:#?}",
        p.diagnostics
    );
}

#[test]
fn timer_warnings() {
    // A quorum disk with the RHCS default token: the token expires before a qdisk master settles.
    let qd = "<cman expected_votes=\"3\"/>\n<quorumd label=\"qdisk\" interval=\"1\" tko=\"10\" votes=\"1\"/>";
    let p = parse("c.conf", &conf(qd));
    assert!(p.is_valid(), "{:#?}", p.diagnostics);
    let w = p
        .warnings()
        .find(|d| d.message.contains("does not exceed qdisk"))
        .expect("qdisk timing warning");
    assert_eq!(w.line, 8);
    assert!(w.message.contains("= 17000 ms"), "{w}");
    assert!(w.hint.contains("token=\"21000\""), "{w}");
    let c = p.config.unwrap();
    let q = c.quorumd.as_ref().unwrap();
    assert_eq!((*q.master_wait.get(), *q.upgrade_wait.get()), (5, 2));
    assert_eq!(c.quorum.total_votes, 3);
    assert_eq!(c.quorum.quorum, 2);
    // The RHCS recipe (token 21000) is quiet.
    let p = parse("c.conf", &conf(&format!("{qd}\n<totem token=\"21000\"/>")));
    assert!(p.diagnostics.is_empty(), "{:#?}", p.diagnostics);

    // consensus below 1.2 x token outside two_node.
    let p = parse(
        "c.conf",
        &conf("<totem token=\"10000\" consensus=\"5000\"/>"),
    );
    assert!(p
        .warnings()
        .any(|d| d.line == 7 && d.message.contains("less than 1.2 x token")));
}

#[test]
fn typos_get_a_did_you_mean() {
    let text = conf("<totem tokn=\"5000\"/>\n<rm><service name=\"s\"><scirpt name=\"x\" file=\"/x\"/></service></rm>\n<fence_deamon/>");
    let p = parse("c.conf", &text);
    let hint = |line: u32| {
        p.warnings()
            .find(|d| d.line == line)
            .map(|d| d.hint.clone())
            .unwrap_or_default()
    };
    assert!(hint(7).starts_with("did you mean token=?"), "{}", hint(7));
    assert!(hint(8).starts_with("did you mean <script>?"), "{}", hint(8));
    assert!(
        hint(9).starts_with("did you mean <fence_daemon>?"),
        "{}",
        hint(9)
    );
}
