//! Recovery policy with real `quorate node` processes in network namespaces
//! (crates/labcluster): restart in place up to max_restarts then relocate,
//! and a restricted failover domain with no member left. Needs root,
//! iproute2 and nftables (scripts/install-deps.sh).

mod common;
use common::*;
use std::time::Duration;

/// An LSB init script whose `status` fails once each time the flag file
/// `fail` appears (it removes the flag), and which records every call with
/// the network namespace it ran in, so the test sees where it really ran.
fn lsb_script(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("svc.sh");
    let d = dir.display();
    write_script(
        &path,
        &format!(
            r#"#!/bin/sh
# A test service: start, stop, status (LSB exit codes).
ns=$(ip netns identify $$ 2>/dev/null)
case "$1" in
start) echo "start $ns" >> {d}/script.log; touch "{d}/running.$ns"; exit 0 ;;
stop) echo "stop $ns" >> {d}/script.log; rm -f "{d}/running.$ns"; exit 0 ;;
status)
    if [ -e {d}/fail ]; then rm -f {d}/fail; echo "status-failed $ns" >> {d}/script.log; exit 3; fi
    [ -e "{d}/running.$ns" ] && exit 0
    exit 3 ;;
*) exit 3 ;;
esac
"#
        ),
    );
    path
}

fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

#[test]
fn restart_in_place_up_to_max_restarts_then_relocate() {
    let dir = tempfile::tempdir().unwrap();
    let script = lsb_script(dir.path());
    let mut conf = Conf::new(3);
    // Status checks every second, so each injected failure is seen quickly.
    conf.rm_attrs = r#"status_poll_interval="1""#.into();
    conf.rm = default_rm(
        &conf.names,
        r#"recovery="restart" max_restarts="2" restart_expire_time="300""#,
        &format!(r#"<script name="app" file="{}"/>"#, script.display()),
    );
    let c = conf.start(dir.path());
    boot(&c);
    let owner = web_started(&c, 0);
    let oname = c.names()[owner].clone();
    let ns = c.lab().node_ns(owner);
    let script_log = dir.path().join("script.log");
    let flag = dir.path().join("fail");
    let read_log = || std::fs::read_to_string(&script_log).unwrap_or_default();
    ok(c.wait(
        "the script started on the owner",
        Duration::from_secs(10),
        |_| count(&read_log(), &format!("start {ns}")) == 1,
    ));
    // Two failures: each is a restart in place (stop, start on the same node).
    for k in 1..=2u64 {
        std::fs::write(&flag, "").unwrap();
        ok(c.wait(
            &format!("restart {k} of 2 in place on {oname}"),
            Duration::from_secs(30),
            |c| {
                let s = service(c, 0, "web");
                !flag.exists()
                    && s["restarts"] == k
                    && s["state"] == "Started"
                    && s["owner_name"] == oname.as_str()
                    && count(&read_log(), &format!("start {ns}")) == k as usize + 1
            },
        ));
        assert_eq!(
            c.holders(IP),
            [owner],
            "a restart in place keeps the address where it was"
        );
        let log = read_log();
        assert_eq!(count(&log, &format!("stop {ns}")), k as usize, "{log}");
        assert_eq!(
            count(&log, &format!("status-failed {ns}")),
            k as usize,
            "{log}"
        );
        assert!(
            !log.lines()
                .any(|l| l.starts_with("start ") && !l.ends_with(&ns)),
            "a restart in place never starts elsewhere:\n{log}"
        );
        let events = log_text(&c, 0);
        assert!(
            events.contains(&format!("restarting in place (restart {k} of 2)")),
            "the event log says which restart this is:\n{events}"
        );
    }
    // The third failure within restart_expire_time: restarts used up, relocate.
    std::fs::write(&flag, "").unwrap();
    ok(c.wait(
        "web relocated off the owner after max_restarts",
        Duration::from_secs(30),
        |c| {
            let h = c.holders(IP);
            let s = service(c, 0, "web");
            h.len() == 1
                && h[0] != owner
                && s["state"] == "Started"
                && s["owner_name"] == c.names()[h[0]].as_str()
        },
    ));
    let new_owner = c.holders(IP)[0];
    let new_ns = c.lab().node_ns(new_owner);
    let log = read_log();
    assert_eq!(count(&log, &format!("start {new_ns}")), 1, "{log}");
    assert_eq!(
        count(&log, &format!("stop {ns}")),
        3,
        "stopped on the old owner first:\n{log}"
    );
    assert_eq!(
        count(&log, &format!("start {ns}")),
        3,
        "no third restart in place:\n{log}"
    );
    let s = service(&c, 0, "web");
    assert_eq!(s["last_owner_name"], oname.as_str(), "{s}");
    assert_eq!(
        s["restarts"], 0,
        "the count starts again on the new owner: {s}"
    );
    let events = log_text(&c, new_owner);
    assert!(
        events.contains("2 restarts within the expiry window used up, relocating"),
        "the event log says why it moved:\n{events}"
    );
    // A recovery policy is not a node failure: nobody was fenced.
    assert!((0..3).all(|i| !c.is_off(i)), "no outlet may be off");
    assert!(c.sees(0, &all(3), true));
}

#[test]
fn a_restricted_domain_with_no_member_left_leaves_the_service_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(3);
    // web may run only on n3.
    conf.rm = format!(
        r#"<failoverdomains><failoverdomain name="only3" restricted="1"><failoverdomainnode name="n3" priority="1"/></failoverdomain></failoverdomains>
    <service name="web" domain="only3" recovery="relocate"><ip address="{IP}/24" monitor_link="1"/></service>"#
    );
    let c = conf.start(dir.path());
    boot(&c);
    assert_eq!(
        web_started(&c, 0),
        2,
        "a restricted domain of n3 runs web on n3"
    );
    ok(c.crash(2));
    ok(c.wait(
        "n3 fenced by the two others",
        Duration::from_secs(30),
        |c| c.is_off(2) && c.sees(0, &[0, 1], true) && c.sees(1, &[0, 1], true),
    ));
    // After fencing, web has nowhere to go: it stays stopped, and says why.
    ok(
        c.wait("web no longer owned by n3", Duration::from_secs(15), |c| {
            let s = service(c, 0, "web");
            s["owner_name"].is_null() && s["state"] != "Recovering"
        }),
    );
    holds_for(
        &c,
        "web stopped on the survivors",
        Duration::from_secs(3),
        |c| {
            let h = c.holders(IP);
            let s = service(c, 1, "web");
            !h.contains(&0)
                && !h.contains(&1)
                && s["state"] != "Started"
                && s["owner_name"].is_null()
        },
    );
    let s = service(&c, 0, "web");
    let reason = s["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("restricted failover domain 'only3'") && !reason.contains('\n'),
        "status says why in one line: {s}"
    );
    let out = cli(&c, 1, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.lines()
            .any(|l| l.contains("why:") && l.contains("only3")),
        "quorate status shows why web is stopped:\n{text}"
    );
    // n3 is powered back on: web starts there again.
    ok(c.power_on(2));
    ok(c.wait("web back on n3", Duration::from_secs(40), |c| {
        c.holders(IP) == [2] && service(c, 0, "web")["state"] == "Started"
    }));
}

#[test]
fn an_ordered_nofailback_domain_keeps_the_service_where_it_went_when_the_preferred_node_returns() {
    let dir = tempfile::tempdir().unwrap();
    // The default domain: ordered n1 > n2 > n3, nofailback="1".
    let c = Conf::new(3).start(dir.path());
    boot(&c);
    // Put web on n1, the most preferred node (clusvcadm -r web -m n1), unless
    // the first quorate ring already put it there.
    if web_started(&c, 0) != 0 {
        let out = cli(
            &c,
            1,
            &["svc", "relocate", "web", "-m", "n1", "--timeout", "30"],
        );
        assert!(
            out.status.success(),
            "relocate to n1: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ok(c.wait("web on n1", Duration::from_secs(15), |c| {
        c.holders(IP) == [0]
    }));
    ok(c.crash(0));
    ok(c.wait(
        "n1 fenced and web on n2, the next in the domain",
        Duration::from_secs(30),
        |c| {
            c.is_off(0)
                && c.holders(IP).contains(&1)
                && service(c, 1, "web")["state"] == "Started"
                && service(c, 1, "web")["owner_name"] == "n2"
        },
    ));
    ok(c.power_on(0));
    ok(c.wait(
        "n1 back in the ring with the resource manager in sync",
        Duration::from_secs(40),
        |c| {
            c.sees(0, &all(3), true)
                && c.ask(0, "status").is_some_and(|v| {
                    v["rm_syncing"] == false && v["services"][0]["owner_name"] == "n2"
                })
        },
    ));
    // nofailback: web stays on n2 although n1 is preferred and back.
    holds_for(&c, "web stays on n2", Duration::from_secs(3), |c| {
        c.holders(IP) == [1]
            && (0..3).all(|i| {
                let s = service(c, i, "web");
                s["owner_name"] == "n2" && s["state"] == "Started"
            })
    });
}
