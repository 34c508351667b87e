//! Three real nodes on loopback addresses (127.0.0.1-3, one UDP socket each)
//! in one process: they form a ring, agree on quorum, and keep or lose it as
//! members leave.

use daemon::ipc::{call, Request};
use daemon::node::{run, NodeOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn conf(dir: &Path, port: u16) -> PathBuf {
    let text = format!(
        r#"<?xml version="1.0"?>
<cluster name="loop" config_version="1">
  <cman port="{port}"/>
  <totem token="1000" secauth="on"/>
  <fence_daemon clean_start="1"/>
  <clusternodes>
    <clusternode name="127.0.0.1" nodeid="1"/>
    <clusternode name="127.0.0.2" nodeid="2"/>
    <clusternode name="127.0.0.3" nodeid="3"/>
  </clusternodes>
  <fencedevices/>
</cluster>"#
    );
    let p = dir.join("cluster.conf");
    std::fs::write(&p, text).unwrap();
    p
}

fn ask(state: &Path, cmd: &str) -> serde_json::Value {
    let r = call(
        state,
        &Request {
            cmd: cmd.into(),
            args: serde_json::Value::Null,
        },
        Duration::from_secs(5),
    )
    .expect("node answers");
    assert!(r.ok, "{cmd}: {:?}", r.error);
    r.data
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[test]
fn three_nodes_form_a_ring_and_track_quorum_as_nodes_leave() {
    let dir = tempfile::tempdir().unwrap();
    // A port of our own so parallel test runs do not meet.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let cfg = conf(dir.path(), port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut stops = Vec::new();
    let mut states = Vec::new();
    for i in 1..=3 {
        let state = dir.path().join(format!("n{i}"));
        states.push(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(Some(tx));
        let opts = NodeOptions {
            config_path: cfg.clone(),
            node: Some(format!("127.0.0.{i}")),
            state_dir: state,
        };
        rt.spawn(async move {
            if let Err(e) = run(opts, async move {
                let _ = rx.await;
            })
            .await
            {
                panic!("node {i} failed: {e}");
            }
        });
    }
    let formed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "all three nodes to be members and quorate",
            Duration::from_secs(20),
            || {
                states.iter().all(|s| {
                    call(
                        s,
                        &Request {
                            cmd: "status".into(),
                            args: serde_json::Value::Null,
                        },
                        Duration::from_secs(2),
                    )
                    .map(|r| {
                        r.data["quorate"] == true
                            && r.data["members"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .all(|m| m["online"] == true)
                    })
                    .unwrap_or(false)
                })
            },
        )
    }));
    if formed.is_err() {
        for s in &states {
            eprintln!("{}: {}", s.display(), ask(s, "totem.status"));
            eprintln!("{}: {}", s.display(), ask(s, "status"));
        }
        panic!("ring did not form");
    }
    let totem = ask(&states[0], "totem.status");
    assert_eq!(totem["members"].as_array().unwrap().len(), 3, "{totem}");
    let cman = ask(&states[1], "cman.status");
    assert_eq!(cman["expected_votes"], 3);
    assert_eq!(cman["quorum"], 2);
    assert_eq!(cman["total_votes"], 3);

    // Node 3 leaves cleanly: two of three votes remain, still quorate.
    stops[2].take().unwrap().send(()).unwrap();
    wait_for(
        "nodes 1 and 2 to see node 3 gone",
        Duration::from_secs(20),
        || {
            let s = ask(&states[0], "status");
            s["members"][2]["online"] == false && s["quorate"] == true
        },
    );
    // Node 2 leaves too: one vote of three is not a majority.
    stops[1].take().unwrap().send(()).unwrap();
    wait_for("node 1 to lose quorum", Duration::from_secs(20), || {
        ask(&states[0], "quorum")["quorate"] == false
    });
    let reason = ask(&states[0], "quorum")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains('1') && reason.contains('2'),
        "reason should give the votes: {reason}"
    );
    stops[0].take().unwrap().send(()).unwrap();
}

#[test]
fn two_nodes_with_a_quorum_disk_keep_quorum_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let port = 20000 + ((std::process::id() + 7919) % 20000) as u16;
    let disk = dir.path().join("qdisk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    qdisk::format(&disk, "qd", "test").unwrap();
    let text = format!(
        r#"<?xml version="1.0"?>
<cluster name="qd" config_version="1">
  <cman port="{port}" expected_votes="3"/>
  <totem token="7000"/>
  <quorumd interval="1" tko="3" votes="1" device="{}"/>
  <fence_daemon clean_start="1"/>
  <clusternodes>
    <clusternode name="127.0.0.1" nodeid="1"/>
    <clusternode name="127.0.0.2" nodeid="2"/>
  </clusternodes>
  <fencedevices/>
</cluster>"#,
        disk.display()
    );
    let cfg = dir.path().join("cluster.conf");
    std::fs::write(&cfg, text).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut stops = Vec::new();
    let mut states = Vec::new();
    for i in 1..=2 {
        let state = dir.path().join(format!("n{i}"));
        states.push(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(Some(tx));
        let opts = NodeOptions {
            config_path: cfg.clone(),
            node: Some(format!("127.0.0.{i}")),
            state_dir: state,
        };
        rt.spawn(async move {
            run(opts, async move {
                let _ = rx.await;
            })
            .await
            .expect("node runs");
        });
    }
    wait_for(
        "both nodes quorate with the disk's vote",
        Duration::from_secs(30),
        || {
            states.iter().all(|s| {
                call(
                    s,
                    &Request {
                        cmd: "cman.status".into(),
                        args: serde_json::Value::Null,
                    },
                    Duration::from_secs(2),
                )
                .map(|r| r.data["quorate"] == true && r.data["total_votes"] == 3)
                .unwrap_or(false)
            })
        },
    );
    stops[1].take().unwrap().send(()).unwrap();
    wait_for(
        "node 1 alone with the disk: 2 of 3 votes",
        Duration::from_secs(30),
        || {
            let s = ask(&states[0], "cman.status");
            s["nodes"] == 1 && s["total_votes"] == 2
        },
    );
    assert_eq!(ask(&states[0], "quorum")["quorate"], true);
    stops[0].take().unwrap().send(()).unwrap();
}
