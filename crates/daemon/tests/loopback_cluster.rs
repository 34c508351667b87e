//! Three real nodes on loopback addresses (127.0.0.1-3, one UDP socket each)
//! in one process: they form a ring, agree on quorum, and keep or lose it as
//! members leave.

use daemon::ipc::{call, Request};
use daemon::node::{run, NodeOptions, ServiceRunner};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs services as marker files `<dir>/<service>@<node>`: what a node really
/// runs is what exists on disk, independent of what any node believes.
struct FileRunner {
    dir: PathBuf,
    node: String,
}

impl ServiceRunner for FileRunner {
    fn run(
        &self,
        action: rm::Action,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<rm::Outcome>> + Send + 'static>>
    {
        let marker = self.dir.join(format!("{}@{}", action.service(), self.node));
        Box::pin(async move {
            match action {
                rm::Action::StartService { .. } => {
                    std::fs::write(&marker, b"running").ok()?;
                    Some(rm::Outcome::StartOk)
                }
                rm::Action::StopService { .. } => {
                    let _ = std::fs::remove_file(&marker);
                    Some(rm::Outcome::StopOk)
                }
                rm::Action::StatusCheck { .. } => {
                    (!marker.exists()).then_some(rm::Outcome::StatusFailed)
                }
                rm::Action::Migrate { .. } => Some(rm::Outcome::MigrateFailed),
                rm::Action::ConfirmIncoming { .. } => Some(rm::Outcome::IncomingFailed),
                rm::Action::FinishMigration { .. } => Some(rm::Outcome::StopOk),
            }
        })
    }

    fn prepare_incoming(
        &self,
        _service: String,
        _resources: Vec<rm::ResourceStep>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>
    {
        Box::pin(async { Err("this test runner does not migrate".to_string()) })
    }
}

fn runner(dir: &Path, node: usize) -> Arc<dyn ServiceRunner> {
    Arc::new(FileRunner {
        dir: dir.to_path_buf(),
        node: format!("127.0.0.{node}"),
    })
}

/// Where the service really runs, by marker files.
fn running_on(dir: &Path, service: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter_map(|n| n.strip_prefix(&format!("{service}@")).map(str::to_string))
        .collect();
    v.sort();
    v
}

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

/// What node `state` answers to `cmd`, if it answers and agrees.
fn try_ask(state: &Path, cmd: &str) -> Option<serde_json::Value> {
    call(
        state,
        &Request {
            cmd: cmd.into(),
            args: serde_json::Value::Null,
        },
        Duration::from_secs(2),
    )
    .ok()
    .filter(|r| r.ok)
    .map(|r| r.data)
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

/// [`wait_for`], printing every node's status when it times out.
fn wait_or_dump(states: &[PathBuf], what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_for(what, timeout, f)));
    if let Err(e) = r {
        dump(states);
        std::panic::resume_unwind(e);
    }
}

/// On failure, what each node says (the test output is the post-mortem).
fn dump(states: &[PathBuf]) {
    for s in states {
        for cmd in ["totem.status", "status"] {
            if let Some(v) = try_ask(s, cmd) {
                eprintln!(
                    "{} {cmd}: {}",
                    s.display(),
                    serde_json::to_string_pretty(&v).unwrap()
                );
            }
        }
    }
}

/// A cluster of `n` nodes (127.0.0.1..n) in this process, each stopped
/// cleanly by sending on its channel.
struct Nodes {
    /// Keeps the nodes' tasks running; dropped with the test.
    _rt: tokio::runtime::Runtime,
    stops: Vec<Option<tokio::sync::oneshot::Sender<()>>>,
    states: Vec<PathBuf>,
}

impl Nodes {
    /// No nodes yet; add them with [`Nodes::spawn`].
    fn empty() -> Nodes {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Nodes {
            _rt: rt,
            stops: Vec::new(),
            states: Vec::new(),
        }
    }

    fn start(dir: &Path, cfg: &Path, n: usize) -> Nodes {
        let mut nodes = Nodes::empty();
        for i in 1..=n {
            nodes.spawn(dir, cfg, i);
        }
        nodes
    }

    /// Start node 127.0.0.`i` with its own config file `cfg`.
    fn spawn(&mut self, dir: &Path, cfg: &Path, i: usize) {
        let state = dir.join(format!("n{i}"));
        self.states.push(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stops.push(Some(tx));
        let opts = NodeOptions {
            config_path: cfg.to_path_buf(),
            node: Some(format!("127.0.0.{i}")),
            state_dir: state,
        };
        let r = runner(dir, i);
        self._rt.spawn(async move {
            if let Err(e) = run(opts, r, async move {
                let _ = rx.await;
            })
            .await
            {
                panic!("node {i} failed: {e}");
            }
        });
    }

    /// Node `i` (0-based) leaves cleanly.
    fn stop(&mut self, i: usize) {
        if let Some(tx) = self.stops[i].take() {
            let _ = tx.send(());
        }
    }
}

#[test]
fn three_nodes_form_a_ring_and_track_quorum_as_nodes_leave() {
    let dir = tempfile::tempdir().unwrap();
    // A port of our own so parallel test runs do not meet.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let cfg = conf(dir.path(), port);
    let mut nodes = Nodes::start(dir.path(), &cfg, 3);
    let states = nodes.states.clone();
    wait_or_dump(
        &states,
        "all three nodes to be members and quorate",
        Duration::from_secs(20),
        || {
            states.iter().all(|s| {
                try_ask(s, "status").is_some_and(|d| {
                    d["quorate"] == true
                        && d["members"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|m| m["online"] == true)
                })
            })
        },
    );
    let totem = ask(&states[0], "totem.status");
    assert_eq!(totem["members"].as_array().unwrap().len(), 3, "{totem}");
    let cman = ask(&states[1], "cman.status");
    assert_eq!(cman["expected_votes"], 3);
    assert_eq!(cman["quorum"], 2);
    assert_eq!(cman["total_votes"], 3);

    // Node 3 leaves cleanly: two of three votes remain, still quorate.
    nodes.stop(2);
    wait_for(
        "nodes 1 and 2 to see node 3 gone",
        Duration::from_secs(20),
        || {
            let s = ask(&states[0], "status");
            s["members"][2]["online"] == false && s["quorate"] == true
        },
    );
    // Node 2 leaves too: one vote of three is not a majority.
    nodes.stop(1);
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
    nodes.stop(0);
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
    let mut nodes = Nodes::start(dir.path(), &cfg, 2);
    let states = nodes.states.clone();
    wait_for(
        "both nodes quorate with the disk's vote",
        Duration::from_secs(30),
        || {
            states.iter().all(|s| {
                try_ask(s, "cman.status")
                    .is_some_and(|d| d["quorate"] == true && d["total_votes"] == 3)
            })
        },
    );
    nodes.stop(1);
    wait_for(
        "node 1 alone with the disk: 2 of 3 votes",
        Duration::from_secs(30),
        || {
            let s = ask(&states[0], "cman.status");
            s["nodes"] == 1 && s["total_votes"] == 2
        },
    );
    assert_eq!(ask(&states[0], "quorum")["quorate"], true);
    nodes.stop(0);
}

/// A node that dies (its task aborted: no leave message) is fenced by the
/// lowest survivor through a real agent process, and only then does its
/// service start on a survivor.
#[test]
fn a_dead_owner_is_fenced_and_its_service_recovered_on_a_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let port = 20000 + ((std::process::id() + 3571) % 20000) as u16;
    let fence_log = dir.path().join("fence.log");
    let agent = dir.path().join("fence_test");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\ncat >> {log}\necho --- >> {log}\nexit 0\n",
            log = fence_log.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&agent).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let markers = dir.path().join("markers");
    std::fs::create_dir(&markers).unwrap();
    let mut nodes = String::new();
    for i in 1..=3 {
        nodes.push_str(&format!(
            r#"<clusternode name="127.0.0.{i}" nodeid="{i}"><fence><method name="1"><device name="test" port="{i}"/></method></fence></clusternode>"#
        ));
    }
    let text = format!(
        r#"<?xml version="1.0"?>
<cluster name="fo" config_version="1">
  <cman port="{port}"/>
  <totem token="1000"/>
  <fence_daemon clean_start="1"/>
  <clusternodes>{nodes}</clusternodes>
  <fencedevices><fencedevice name="test" agent="{agent}" passwd="not-in-logs"/></fencedevices>
  <rm>
    <failoverdomains>
      <failoverdomain name="pref" ordered="1"><failoverdomainnode name="127.0.0.2" priority="1"/><failoverdomainnode name="127.0.0.3" priority="2"/><failoverdomainnode name="127.0.0.1" priority="3"/></failoverdomain>
    </failoverdomains>
    <service name="web" domain="pref" recovery="relocate"/>
  </rm>
</cluster>"#,
        agent = agent.display()
    );
    let cfg = dir.path().join("cluster.conf");
    std::fs::write(&cfg, text).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    let mut states = Vec::new();
    for i in 1..=3 {
        let state = dir.path().join(format!("n{i}"));
        states.push(state.clone());
        let opts = NodeOptions {
            config_path: cfg.clone(),
            node: Some(format!("127.0.0.{i}")),
            state_dir: state,
        };
        let r = runner(&markers, i);
        tasks.push(rt.spawn(async move { run(opts, r, std::future::pending::<()>()).await }));
    }
    wait_or_dump(
        &states,
        "web started on its preferred node 127.0.0.2",
        Duration::from_secs(30),
        || {
            running_on(&markers, "web") == ["127.0.0.2"]
                && ask(&states[0], "status")["services"][0]["state"] == "Started"
        },
    );
    // Power loss of node 2: its task ends without a word to the others.
    tasks[1].abort();
    let killed_at = Instant::now();
    // What node 2 "ran" dies with it (the power is off).
    let _ = std::fs::remove_file(markers.join("web@127.0.0.2"));
    wait_for(
        "web recovered on 127.0.0.3 after fencing",
        Duration::from_secs(30),
        || running_on(&markers, "web") == ["127.0.0.3"],
    );
    let took = killed_at.elapsed();
    let log = std::fs::read_to_string(&fence_log).unwrap();
    assert!(
        log.contains("port=2"),
        "the agent got node 2's port on stdin: {log}"
    );
    assert!(
        log.contains("action=reboot") || log.contains("action=off"),
        "{log}"
    );
    assert!(
        log.contains("passwd=not-in-logs"),
        "the password reaches the agent on stdin"
    );
    let status = ask(&states[0], "status");
    let events = status["events"].to_string();
    assert!(
        events.contains("fenced"),
        "the event log tells the fencing: {events}"
    );
    assert!(
        !events.contains("not-in-logs"),
        "the password never reaches the log"
    );
    let svc = &status["services"][0];
    assert_eq!(svc["state"], "Started");
    assert_eq!(svc["owner_name"], "127.0.0.3");
    eprintln!("failover after power loss took {took:?} at token 1000 ms");
    for t in tasks {
        t.abort();
    }
}

/// `quorate config push`: a higher config_version is adopted by every member
/// and written to each node's own cluster.conf; a node that starts later with
/// the old file takes the cluster's version when it joins; a hand edit is
/// reported as drift.
#[test]
fn a_pushed_config_reaches_every_node_and_a_stale_node_is_updated_on_join() {
    let dir = tempfile::tempdir().unwrap();
    let port = 20000 + ((std::process::id() + 1237) % 20000) as u16;
    let shared = conf(dir.path(), port);
    let v1 = std::fs::read_to_string(&shared).unwrap();
    let v2 = v1
        .replace(r#"config_version="1""#, r#"config_version="2""#)
        .replace(
            r#"<fence_daemon clean_start="1"/>"#,
            r#"<fence_daemon clean_start="1" post_fail_delay="1"/>"#,
        );
    assert_ne!(v1, v2);
    let files: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("node{i}.conf")))
        .collect();
    for f in &files {
        std::fs::write(f, &v1).unwrap();
    }
    let mut nodes = Nodes::empty();
    nodes.spawn(dir.path(), &files[0], 1);
    nodes.spawn(dir.path(), &files[1], 2);
    let states = nodes.states.clone();
    wait_or_dump(
        &states,
        "nodes 1 and 2 quorate",
        Duration::from_secs(20),
        || {
            states
                .iter()
                .all(|s| try_ask(s, "quorum").is_some_and(|d| d["quorate"] == true))
        },
    );
    // A push of the same version is refused with both numbers.
    let same = call(
        &states[0],
        &Request {
            cmd: "config.push".into(),
            args: serde_json::json!({"text": v1}),
        },
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!same.ok);
    assert!(
        same.error.as_deref().unwrap_or_default().contains('1'),
        "{:?}",
        same.error
    );
    // Version 2 is adopted by both and written to both files.
    let mut pushed = None;
    wait_or_dump(
        &states,
        "the push of version 2 to be applied",
        Duration::from_secs(20),
        || {
            let r = call(
                &states[0],
                &Request {
                    cmd: "config.push".into(),
                    args: serde_json::json!({"text": v2}),
                },
                Duration::from_secs(10),
            )
            .unwrap();
            let done = r.ok;
            pushed = Some(r);
            done
        },
    );
    assert_eq!(pushed.unwrap().data["config_version"], 2);
    wait_or_dump(
        &states,
        "both files at version 2",
        Duration::from_secs(10),
        || {
            files[..2]
                .iter()
                .all(|f| std::fs::read_to_string(f).unwrap() == v2)
        },
    );
    assert_eq!(ask(&states[1], "status")["config_version"], 2);
    // Node 3 starts with version 1 and is brought up to date when it joins.
    nodes.spawn(dir.path(), &files[2], 3);
    let states = nodes.states.clone();
    wait_or_dump(
        &states,
        "node 3 to take version 2",
        Duration::from_secs(30),
        || std::fs::read_to_string(&files[2]).unwrap() == v2,
    );
    wait_or_dump(
        &states,
        "node 3 to run version 2",
        Duration::from_secs(10),
        || ask(&states[2], "status")["config_version"] == 2,
    );
    // A hand edit on node 2 is reported as drift, not adopted.
    std::fs::write(
        &files[1],
        v2.replace(r#"config_version="2""#, r#"config_version="3""#),
    )
    .unwrap();
    wait_or_dump(
        &states,
        "drift reported on node 2",
        Duration::from_secs(15),
        || ask(&states[1], "config.status")["drift"]["on_disk_version"] == 3,
    );
    assert!(
        ask(&states[1], "log").to_string().contains("hand edit on"),
        "the event log says it too"
    );
    assert_eq!(
        ask(&states[1], "status")["config_version"],
        2,
        "a hand edit is not adopted"
    );
    for i in 0..3 {
        nodes.stop(i);
    }
}
