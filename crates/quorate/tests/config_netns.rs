//! One config for the whole cluster, with real `quorate node` processes in
//! network namespaces (crates/labcluster), each reading its own
//! cluster.conf: `quorate config push` reaches every member, a node that was
//! down takes the new version when it joins, and a push that does not raise
//! config_version is refused. Needs root, iproute2 and nftables.

mod common;
use common::*;
use labcluster::LabCluster;
use std::time::{Duration, Instant};

/// The address of the service `db` that version 2 adds.
const IP2: &str = "192.168.3.101";

fn conf(with_db: bool) -> Conf {
    let mut c = Conf::new(3);
    c.node_configs = true;
    if with_db {
        c.rm.push_str(&format!(
            r#"
    <service name="db" recovery="relocate"><ip address="{IP2}/24"/></service>"#
        ));
    }
    c
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `quorate config push FILE` on node `i`, again while the members are still
/// exchanging versions after a membership change (the command says so).
fn push(c: &LabCluster, i: usize, file: &std::path::Path) -> std::process::Output {
    let start = Instant::now();
    loop {
        let out = cli(c, i, &["config", "push", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success()
            || !err.contains("push again in a few seconds")
            || start.elapsed() > Duration::from_secs(20)
        {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_pushed_config_reaches_every_node_and_a_node_that_was_down_takes_it_on_join() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("{:>7.2} s  {what}", t0.elapsed().as_secs_f64());
    let c = conf(false).start(dir.path());
    let v1 = conf(false).render(c.files(), 1);
    let v2 = conf(true).render(c.files(), 2);
    for i in 0..3 {
        assert_eq!(
            read(c.node_conf(i)),
            v1,
            "every node starts from its own copy"
        );
    }
    boot(&c);
    web_started(&c, 0);
    step("booted");
    // n3 is powered off: the others fence it (its outlet is already off) and keep quorum.
    ok(c.power_off(2));
    ok(c.wait(
        "n1 and n2 quorate without n3, n3 fenced",
        Duration::from_secs(30),
        |c| {
            c.sees(0, &[0, 1], true)
                && c.sees(1, &[0, 1], true)
                && c.ask(0, "fence.status")
                    .is_some_and(|f| f["victims"].as_array().is_some_and(|v| v.is_empty()))
        },
    ));
    step("n3 off and fenced");
    let new = dir.path().join("new.conf");
    std::fs::write(&new, &v2).unwrap();
    let out = push(&c, 0, &new);
    assert!(
        out.status.success(),
        "push of version 2 refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("config_version 2 is in force"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    step("pushed");
    // Each member wrote it to its own file and runs it: cman and config status
    // say version 2, and the service it adds is started without a restart.
    ok(c.wait(
        "n1 and n2 run version 2 from their own files",
        Duration::from_secs(20),
        |c| {
            (0..2).all(|i| {
                read(c.node_conf(i)) == v2
                    && c.ask(i, "cman.status")
                        .is_some_and(|v| v["config_version"] == 2)
                    && c.ask(i, "config.status")
                        .is_some_and(|v| v["version"] == 2 && v["in_sync"] == true)
            })
        },
    ));
    ok(c.wait(
        "db (new in version 2) started once",
        Duration::from_secs(20),
        |c| {
            c.holders(IP2).len() == 1
                && service(c, 0, "db")["state"] == "Started"
                && service(c, 1, "db")["state"] == "Started"
        },
    ));
    step("version 2 in force, db started");
    assert_eq!(
        read(c.node_conf(2)),
        v1,
        "n3 was off: its file is untouched"
    );
    // A push that does not raise config_version is refused, saying why.
    for (text, version) in [(&v2, 2), (&v1, 1)] {
        std::fs::write(&new, text).unwrap();
        let out = push(&c, 1, &new);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a push of version {version} must fail"
        );
        assert!(
            err.contains(&format!(
                "config_version {version} is not greater than the one in force (2)"
            )) && err.contains("raise config_version to at least 3"),
            "{err}"
        );
    }
    assert_eq!(read(c.node_conf(0)), v2);
    step("stale pushes refused");
    // n3 comes back with version 1 on disk and takes version 2 when it joins.
    ok(c.power_on(2));
    ok(c.wait(
        "n3 joined and took version 2",
        Duration::from_secs(40),
        |c| {
            c.sees(2, &all(3), true)
                && read(c.node_conf(2)) == v2
                && c.ask(2, "cman.status")
                    .is_some_and(|v| v["config_version"] == 2)
        },
    ));
    step("n3 joined with version 2");
    let st = cli(&c, 2, &["config", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
    assert_eq!(v["version"], 2, "{v}");
    ok(c.wait(
        "n3 in sync and every service running once",
        Duration::from_secs(20),
        |c| {
            c.ask(2, "config.status")
                .is_some_and(|v| v["in_sync"] == true)
                && c.holders(IP).len() == 1
                && c.holders(IP2).len() == 1
        },
    ));
    step("n3 in sync");
    // A hand edit of n2's file is reported as drift, not adopted.
    std::fs::write(
        c.node_conf(1),
        v2.replace(r#"config_version="2""#, r#"config_version="7""#),
    )
    .unwrap();
    ok(c.wait(
        "the hand edit on n2 reported as drift",
        Duration::from_secs(30),
        |c| {
            c.ask(1, "config.status")
                .is_some_and(|v| v["drift"]["on_disk_version"] == 7)
        },
    ));
    step("drift reported");
    assert!(
        log_text(&c, 1).contains("hand edit on"),
        "the event log says it too"
    );
    for i in 0..3 {
        assert_eq!(
            c.ask(i, "cman.status").unwrap()["config_version"],
            2,
            "a hand edit changes nothing in force"
        );
    }
}

#[test]
fn a_node_that_joins_with_a_newer_unagreed_config_is_refused_until_a_push_settles_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = conf(false).start(dir.path());
    let v1 = conf(false).render(c.files(), 1);
    // n3's file was edited by hand to version 2 (with db) while it was down.
    let v2 = conf(true).render(c.files(), 2);
    std::fs::write(c.node_conf(2), &v2).unwrap();
    ok(c.power_on(0));
    ok(c.power_on(1));
    ok(c.wait(
        "n1 and n2 quorate on version 1",
        Duration::from_secs(60),
        |c| c.sees(0, &[0, 1], true) && c.sees(1, &[0, 1], true),
    ));
    web_started(&c, 0);
    ok(c.power_on(2));
    // n3 stays in the ring (its vote counts) but does not impose version 2.
    ok(
        c.wait("n3 in the ring and refused", Duration::from_secs(40), |c| {
            c.sees(0, &all(3), true)
                && c.ask(2, "config.status").is_some_and(|v| {
                    v["in_sync"] == false
                        && v["problem"]
                            .as_str()
                            .is_some_and(|p| p.contains("will not override the cluster"))
                })
        }),
    );
    let p = c.ask(2, "config.status").unwrap()["problem"].clone();
    assert!(
        p.as_str().is_some_and(
            |p| p.contains("config_version 2 but the quorate cluster runs 1")
                && p.contains("push version 3")
        ),
        "the refusal says what is wrong and what to do: {p}"
    );
    holds_for(
        &c,
        "the cluster keeps version 1 and db stays unknown",
        Duration::from_secs(3),
        |c| {
            (0..2).all(|i| {
                read(c.node_conf(i)) == v1
                    && c.ask(i, "cman.status")
                        .is_some_and(|v| v["config_version"] == 1)
            }) && c.holders(IP2).is_empty()
                && c.holders(IP).len() == 1
        },
    );
    assert_eq!(
        read(c.node_conf(2)),
        v2,
        "a refused node keeps its own file"
    );
    // An operator settles it with version 3 from a quorate node: everyone takes it.
    let v3 = conf(true).render(c.files(), 3);
    let new = dir.path().join("v3.conf");
    std::fs::write(&new, &v3).unwrap();
    let out = push(&c, 0, &new);
    assert!(
        out.status.success(),
        "push of version 3 refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(c.wait(
        "every node on version 3, in sync, db started once",
        Duration::from_secs(30),
        |c| {
            (0..3).all(|i| {
                read(c.node_conf(i)) == v3
                    && c.ask(i, "config.status")
                        .is_some_and(|v| v["version"] == 3 && v["in_sync"] == true)
            }) && c.holders(IP2).len() == 1
                && c.holders(IP).len() == 1
        },
    ));
}
