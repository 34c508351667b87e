//! Arbitrary and mutated XML never panics the parser, validator, renderer or differ.
//!
//! Default runs are quick. Longer runs:
//! - `PROPTEST_CASES=100000 cargo test -p config --release --test fuzz`
//! - a timed soak: `CONFIG_FUZZ_SECS=600 cargo test -p config --release --test fuzz -- --ignored soak`

use config::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use std::net::IpAddr;

const FIXTURES: &[&str] = &[
    include_str!("fixtures/seed_v1.conf"),
    include_str!("fixtures/seed_v3.conf"),
    include_str!("fixtures/seed_v4.conf"),
    include_str!("fixtures/seed_v4_ipmi.conf"),
    include_str!("fixtures/two_node_full.conf"),
    include_str!("fixtures/real_world.conf"),
    include_str!("fixtures/crlf.conf"),
];

/// Tokens that make mutations hit interesting parser and validator paths.
const SNIPPETS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "\"",
    "'",
    "=",
    "&",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?xml version=\"1.0\"?>",
    "<!DOCTYPE x>",
    "\r\n",
    "\n",
    "\t",
    " ",
    "\u{feff}",
    "\u{0}",
    "é",
    "名",
    "xmlns:a=\"urn:x\"",
    "a:",
    "<cluster>",
    "</cluster>",
    "<clusternodes>",
    "</clusternodes>",
    "<clusternode name=\"n\" nodeid=\"1\"/>",
    "<clusternode name=\"n\" nodeid=\"1\">",
    "</clusternode>",
    "<fence>",
    "</fence>",
    "<method name=\"1\">",
    "</method>",
    "<device name=\"d\"/>",
    "<fencedevice name=\"d\" agent=\"a\"/>",
    "<rm>",
    "</rm>",
    "<service name=\"s\">",
    "</service>",
    "<vm name=\"v\"/>",
    "<ip ref=\"10.0.0.1\"/>",
    "<resources>",
    "</resources>",
    "<failoverdomains>",
    "<failoverdomain name=\"f\">",
    "<failoverdomainnode name=\"n\" priority=\"1\"/>",
    "<cman two_node=\"1\"/>",
    "<totem token=\"0\"/>",
    "<quorumd label=\"q\"><heuristic program=\"true\"/></quorumd>",
    "<quorum wait_for_all=\"1\"/>",
    " nodeid=\"-1\"",
    " votes=\"4294967296\"",
    " expected_votes=\"0\"",
    " config_version=\"18446744073709551616\"",
    " token=\"99999999999\"",
    " two_node=\"1\"",
    " expected_votes=\"1\"",
    " domain=\"f\"",
    " ref=\"s\"",
    " recovery=\"bogus\"",
    " max_restarts=\"-5\"",
    " priority=\"101\"",
    " depend=\"service:s\"",
    " post_join_delay=\"-1\"",
    " address=\"::1/129\"",
    " name=\"\"",
    " port=\"70000\"",
    "<replicas>",
    "</replicas>",
    "<replica name=\"r0\" size=\"1G\">",
    "</replica>",
    "<node name=\"n\" disk=\"/d\"/>",
    "<replica name=\"r0\"/>",
    " size=\"18446744073709551615T\"",
    " rate=\"9iB\"",
    " after-sb-0pri=\"discard-zero-changes\"",
    " nbd_port=\"7789\"",
];

fn mutate(base: &str, ops: &[(u8, usize, usize, usize)]) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for &(op, a, b, k) in ops {
        let len = s.len();
        let i = if len == 0 { 0 } else { a % (len + 1) };
        match op % 4 {
            0 => {
                // insert a snippet
                let snip: Vec<char> = SNIPPETS[k % SNIPPETS.len()].chars().collect();
                s.splice(i..i, snip);
            }
            1 => {
                // delete a range
                let j = (i + b % 16).min(len);
                s.drain(i..j);
            }
            2 => {
                // duplicate a range
                let j = (i + b % 200).min(len);
                let dup: Vec<char> = s[i..j].to_vec();
                s.splice(j..j, dup);
            }
            _ => {
                // replace one char
                if i < len {
                    s[i] = char::from_u32((k % 0x80) as u32).unwrap_or('x');
                }
            }
        }
    }
    s.into_iter().collect()
}

/// Runs every entry point on `text`; panics are what the tests look for.
fn exercise(text: &str) {
    let p = parse("fuzz.conf", text);
    for d in &p.diagnostics {
        assert!(d.line >= 1 && d.column >= 1, "{d}");
        assert!(!d.message.is_empty() && !d.hint.is_empty(), "{d}");
        let _ = d.to_string();
    }
    assert_eq!(p.is_valid(), p.errors().next().is_none());
    assert!(
        !p.diagnostics
            .iter()
            .any(|d| d.message.contains(parse::INTERNAL)),
        "{:#?}",
        p.diagnostics
    );
    if let Some(c) = &p.config {
        let _ = render_text(c);
        let json = serde_json::to_string(c).expect("serialize");
        let back: ClusterConf = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let mut newer = c.clone();
        newer.config_version = c.config_version.saturating_add(1);
        if newer.config_version > c.config_version {
            let _ = diff(c, &newer).expect("bump diff");
        }
        let local: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        let _ = identify_local_node(c, &local, |_| vec!["10.0.0.1".parse().unwrap()]);
        for s in &c.rm.services {
            assert_eq!(s.start_sequence().len(), s.stop_sequence().len());
        }
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mutated() -> impl Strategy<Value = String> {
    (
        0..FIXTURES.len(),
        prop::collection::vec(
            (any::<u8>(), any::<usize>(), any::<usize>(), any::<usize>()),
            0..12,
        ),
    )
        .prop_map(|(f, ops)| mutate(FIXTURES[f], &ops))
}

fn element() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "cluster",
        "cman",
        "totem",
        "quorumd",
        "heuristic",
        "quorum",
        "fence_daemon",
        "clusternodes",
        "clusternode",
        "altname",
        "fence",
        "method",
        "device",
        "unfence",
        "fencedevices",
        "fencedevice",
        "rm",
        "failoverdomains",
        "failoverdomain",
        "failoverdomainnode",
        "resources",
        "service",
        "vm",
        "ip",
        "fs",
        "script",
        "lvm",
        "action",
        "logging",
        "logging_daemon",
        "dlm",
        "multicast",
        "interface",
        "replicas",
        "replica",
        "node",
        "zzz",
    ]);
    let attr = (
        prop::sample::select(vec![
            "name",
            "nodeid",
            "votes",
            "config_version",
            "two_node",
            "expected_votes",
            "agent",
            "ref",
            "domain",
            "address",
            "file",
            "device",
            "mountpoint",
            "recovery",
            "priority",
            "max_restarts",
            "token",
            "consensus",
            "post_join_delay",
            "depend",
            "migrate",
            "label",
            "program",
            "score",
            "ordered",
            "restricted",
            "weight",
            "port",
            "passwd",
            "size",
            "disk",
            "meta",
            "protocol",
            "nbd_port",
            "rate",
            "fencing",
            "after-sb-1pri",
            "allow-two-primaries",
        ]),
        prop::sample::select(vec![
            "1",
            "2",
            "0",
            "-1",
            "",
            "x",
            "n1",
            "n2",
            "d",
            "s",
            "f",
            "10.0.0.1/24",
            "::1",
            "restart",
            "relocate",
            "live",
            "99999999999999999999",
            "yes",
            "service:s",
            "r0",
            "20G",
            "C",
            "7789",
            "Q",
        ]),
    );
    let leaf = (names.clone(), prop::collection::vec(attr.clone(), 0..4)).prop_map(|(n, a)| {
        let attrs: String = a.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect();
        format!("<{n}{attrs}/>")
    });
    leaf.prop_recursive(6, 64, 6, move |inner| {
        (
            names.clone(),
            prop::collection::vec(attr.clone(), 0..4),
            prop::collection::vec(inner, 0..6),
        )
            .prop_map(|(n, a, kids)| {
                let attrs: String = a.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect();
                format!("<{n}{attrs}>{}</{n}>", kids.concat())
            })
    })
}

fn generated() -> impl Strategy<Value = String> {
    prop::collection::vec(element(), 0..8).prop_map(|kids| {
        format!(
            "<cluster name=\"c\" config_version=\"3\"><clusternodes><clusternode name=\"n1\" nodeid=\"1\"/></clusternodes>{}</cluster>",
            kids.concat()
        )
    })
}

proptest! {
    #![proptest_config(PtConfig { cases: cases(256), ..PtConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        exercise(&text);
    }

    #[test]
    fn mutated_fixtures_never_panic(text in mutated()) {
        exercise(&text);
    }

    #[test]
    fn generated_trees_never_panic(text in generated()) {
        exercise(&text);
    }
}

#[test]
fn hostile_shapes() {
    // Very deep nesting in a service, very many nodes, huge numbers, a huge file.
    let deep = format!(
        "<cluster name=\"c\" config_version=\"1\"><clusternodes><clusternode name=\"a\" nodeid=\"1\"/></clusternodes><rm><service name=\"s\">{}{}</service></rm></cluster>",
        "<fs name=\"f\" device=\"/d\" mountpoint=\"/m\">".repeat(5000),
        "</fs>".repeat(5000)
    );
    let p = parse("deep", &deep);
    assert!(
        p.errors()
            .any(|d| d.message.contains("nested deeper than 256")),
        "{:?}",
        p.diagnostics
    );
    // Deep but below the XML limit: the resource tree limit answers.
    let deep = deep
        .replace(
            &"<fs name=\"f\" device=\"/d\" mountpoint=\"/m\">".repeat(5000),
            &"<fs name=\"f\" device=\"/d\" mountpoint=\"/m\">".repeat(100),
        )
        .replace(&"</fs>".repeat(5000), &"</fs>".repeat(100));
    let p = parse("deep", &deep);
    assert!(
        p.errors()
            .any(|d| d.message.contains("resource tree deeper than 32")),
        "{:?}",
        p.diagnostics
    );
    let many: String = (1..=20_000)
        .map(|i| format!("<clusternode name=\"n{i}\" nodeid=\"{i}\"/>"))
        .collect();
    let p = parse(
        "many",
        &format!("<cluster name=\"c\" config_version=\"1\"><clusternodes>{many}</clusternodes></cluster>"),
    );
    assert_eq!(p.config.unwrap().quorum.quorum, 10_001);
    let big = "x".repeat(parse::MAX_FILE_BYTES + 1);
    assert!(parse("big", &big)
        .errors()
        .any(|d| d.message.contains("byte limit")));
    let dups = format!(
        "<cluster name=\"c\" config_version=\"1\"><clusternodes>{}</clusternodes></cluster>",
        "<clusternode name=\"n\" nodeid=\"1\"/>".repeat(5000)
    );
    let p = parse("dups", &dups);
    assert!(p.diagnostics.len() <= 1000, "diagnostics are bounded");
    assert!(p.errors().count() >= 1);
}

/// Timed soak: `CONFIG_FUZZ_SECS=600 cargo test -p config --release --test fuzz -- --ignored soak`.
#[test]
#[ignore]
fn soak() {
    let secs: u64 = std::env::var("CONFIG_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut total = 0u64;
    let strategy = prop_oneof![any::<String>(), mutated(), generated()];
    while std::time::Instant::now() < deadline {
        let mut runner = TestRunner::new(PtConfig {
            cases: 2000,
            failure_persistence: None,
            ..PtConfig::default()
        });
        runner
            .run(&strategy, |text| {
                exercise(&text);
                Ok(())
            })
            .unwrap();
        total += 2000;
    }
    eprintln!("soak: {total} inputs in {secs} s without a panic");
}
