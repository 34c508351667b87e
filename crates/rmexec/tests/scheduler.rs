//! The rm scheduler drives the executor as the node's driver will: actions
//! out, real agents run, reports back in. A status failure makes the
//! scheduler restart the service in place. Needs root and resource-agents.

mod common;

use base::{Duration, Instant, NodeId};
use common::*;
use rm::{
    Action, ClusterSpec, Input, NodeSpec, ResourceSpec, Scheduler, ServiceKind, ServiceSpec, State,
};
use rmexec::{ActionReport, Executor};

const ME: NodeId = NodeId(1);

async fn pump(s: &mut Scheduler, ex: &Executor, now: Instant) -> Vec<(Action, ActionReport)> {
    let mut done = Vec::new();
    loop {
        let acts = s.drain_actions();
        if acts.is_empty() {
            return done;
        }
        for a in acts {
            let rep = ex.run(&a).await;
            if let Some(r) = rep.report(ME) {
                s.handle(now, Input::Result(r)).unwrap();
            }
            done.push((a, rep));
        }
    }
}

fn kinds(done: &[(Action, ActionReport)]) -> Vec<String> {
    done.iter()
        .map(|(a, r)| {
            let k = match a {
                Action::StartService { .. } => "start",
                Action::StopService { .. } => "stop",
                Action::StatusCheck { .. } => "status",
                Action::Migrate { .. } => "migrate",
                Action::ConfirmIncoming { .. } => "confirm",
                Action::FinishMigration { .. } => "finish",
            };
            format!("{k}:{:?}", r.result)
        })
        .collect()
}

#[tokio::test]
async fn scheduler_actions_run_and_a_dead_daemon_is_restarted() {
    require_root();
    require("/usr/lib/ocf/resource.d/heartbeat/Dummy", "resource-agents");
    let d = tempfile::tempdir().unwrap();
    let script = lsb_script(d.path());
    let mut svc = ServiceSpec::new("web", ServiceKind::Service);
    let mut dummy = ResourceSpec::new("Dummy", "state");
    dummy.attrs.insert(
        "state".into(),
        d.path().join("dummy.state").display().to_string(),
    );
    let mut sc = ResourceSpec::new("script", "svc");
    sc.attrs.insert("file".into(), script.display().to_string());
    svc.resources = vec![dummy, sc];
    let spec = ClusterSpec {
        config_version: 1,
        startup_fencing: false,
        two_node: false,
        nodes: vec![NodeSpec {
            id: ME,
            name: "an-node01".into(),
        }],
        services: vec![svc],
    };
    let mut s = Scheduler::new(ME, spec).unwrap();
    let ex = Executor::new();

    let t0 = Instant(1_000_000_000);
    s.handle(
        t0,
        Input::Membership {
            members: vec![ME],
            quorate: true,
        },
    )
    .unwrap();
    let done = pump(&mut s, &ex, t0).await;
    assert_eq!(kinds(&done), ["start:Started"]);
    let v = s.service("web").unwrap();
    assert_eq!((v.state, v.owner), (State::Started, Some(ME)));
    let pid = read_pid(&d.path().join("svc.pid"));
    assert!(alive(pid) && d.path().join("dummy.state").exists());

    // A status check that passes changes nothing.
    let t1 = s.poll_deadline().expect("status check scheduled");
    s.handle_timeout(t1);
    assert_eq!(kinds(&pump(&mut s, &ex, t1).await), ["status:StatusOk"]);
    assert_eq!(s.service("web").unwrap().state, State::Started);

    // The daemon dies: the next check fails and the scheduler restarts the service here.
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let w = std::time::Instant::now();
    while alive(pid) && w.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let t2 = s.poll_deadline().unwrap();
    s.handle_timeout(t2);
    let done = pump(&mut s, &ex, t2 + Duration::from_millis(1)).await;
    assert_eq!(
        kinds(&done),
        ["status:StatusFailed", "stop:Stopped", "start:Started"]
    );
    let v = s.service("web").unwrap();
    assert_eq!(
        (v.state, v.owner, v.restarts),
        (State::Started, Some(ME), 1)
    );
    let pid2 = read_pid(&d.path().join("svc.pid"));
    assert!(pid2 != pid && alive(pid2));

    // Clean up what the service runs.
    let steps = rm::stop_order(&s.config().services[0].resources);
    let r = ex.run(&stop("web", steps)).await;
    assert!(r.result.is_ok(), "{r}");
    assert!(!alive(pid2) || !d.path().join("svc.pid").exists());
}
