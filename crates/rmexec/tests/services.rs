//! Services of script and OCF resources run by the executor with real agents
//! (a temporary LSB script, Debian's ocf:heartbeat:Dummy, rgmanager-style
//! agents written for the test). Needs root and the resource-agents package.

mod common;

use common::*;
use rm::{Action, MigrateMode, Outcome, ServiceKind};
use rmexec::{ExecResult, Executor, StepError, VmFuture, VmHandler, VmStatus};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DUMMY: &str = "/usr/lib/ocf/resource.d/heartbeat/Dummy";

fn dummy(rtype: &str, name: &str, dir: &Path) -> rm::ResourceStep {
    let state = dir.join(format!("{name}.state"));
    step(rtype, name, &[("state", state.to_str().unwrap())])
}

fn ops(r: &rmexec::ActionReport) -> Vec<String> {
    r.steps
        .iter()
        .map(|s| {
            format!(
                "{} {}{}",
                s.op.as_str(),
                s.name,
                if s.ok() { "" } else { " FAILED" }
            )
        })
        .collect()
}

#[tokio::test]
async fn lsb_script_start_status_stop() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let script = lsb_script(d.path());
    let ex = Executor::new();
    let res = vec![step("script", "svc", &[("file", script.to_str().unwrap())])];
    let pidfile = d.path().join("svc.pid");

    let r = ex.run(&start("s", res.clone())).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(r.outcome(), Some(Outcome::StartOk));
    let pid = read_pid(&pidfile);
    assert!(alive(pid), "daemon {pid} should run");
    // The command and its exit code are logged.
    let c = &r.steps[0].commands[0];
    assert!(c.command.ends_with("svc-init start"), "{c}");
    assert_eq!(c.code, Some(0));

    let r = ex.run(&status("s", res.clone())).await;
    assert_eq!(r.result, ExecResult::StatusOk, "{r}");
    assert_eq!(r.outcome(), None, "a passing status check is not reported");

    // Start again is idempotent: still one daemon.
    let r = ex.run(&start("s", res.clone())).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(read_pid(&pidfile), pid);

    // The daemon dies behind the cluster's back: status says so (LSB 1: pid file left).
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = ex.run(&status("s", res.clone())).await;
    assert_eq!(r.result, ExecResult::StatusFailed, "{r}");
    assert_eq!(r.outcome(), Some(Outcome::StatusFailed));
    assert!(r.to_string().contains("pid file"), "{r}");

    let r = ex.run(&stop("s", res.clone())).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");
    assert!(!pidfile.exists());
    let r = ex.run(&status("s", res.clone())).await;
    assert_eq!(r.result, ExecResult::StatusFailed);
    assert!(r.to_string().contains("LSB status 3"), "{r}");

    let calls = std::fs::read_to_string(d.path().join("calls")).unwrap();
    assert_eq!(
        calls.split_whitespace().collect::<Vec<_>>(),
        ["start", "status", "start", "status", "stop", "status"]
    );

    // A missing script is a clear configuration error.
    let r = ex
        .run(&start(
            "s",
            vec![step("script", "gone", &[("file", "/nonexistent/init")])],
        ))
        .await;
    assert_eq!(r.result, ExecResult::StartFailed);
    assert!(
        matches!(r.steps[0].error, Some(StepError::Config(_))),
        "{r}"
    );
}

#[tokio::test]
async fn ocf_dummy_by_full_and_bare_name() {
    require_root();
    require(DUMMY, "resource-agents");
    let d = tempfile::tempdir().unwrap();
    let ex = Executor::new();
    for rtype in ["ocf:heartbeat:Dummy", "Dummy"] {
        let res = vec![dummy(rtype, "d1", d.path())];
        let state = d.path().join("d1.state");
        let r = ex.run(&status("svc", res.clone())).await;
        assert_eq!(r.result, ExecResult::StatusFailed, "{r}");
        assert!(r.to_string().contains("returned 7 (not running)"), "{r}");
        let r = ex.run(&start("svc", res.clone())).await;
        assert_eq!(r.result, ExecResult::Started, "{r}");
        assert!(state.exists());
        assert!(r.steps[0].commands[0].command.ends_with("Dummy start"));
        let r = ex.run(&status("svc", res.clone())).await;
        assert_eq!(r.result, ExecResult::StatusOk, "{r}");
        assert!(r.steps[0].commands[0].command.ends_with("Dummy monitor"));
        let r = ex.run(&stop("svc", res.clone())).await;
        assert_eq!(r.result, ExecResult::Stopped, "{r}");
        assert!(!state.exists());
        let r = ex.run(&stop("svc", res.clone())).await;
        assert_eq!(r.result, ExecResult::Stopped, "stop is idempotent: {r}");
    }
    let r = ex
        .run(&start("svc", vec![step("NoSuchAgent", "x", &[])]))
        .await;
    assert_eq!(r.result, ExecResult::StartFailed);
    let e = r.first_error().unwrap().to_string();
    assert!(e.contains("resource-agents"), "{e}");
}

/// rgmanager-style agents in a temporary /usr/share/cluster: `failer` fails
/// its start, `stopfail` fails its stop, `hang` hangs; each logs its calls.
fn rg_agents(dir: &Path) -> std::path::PathBuf {
    let rg = dir.join("cluster");
    let d = dir.display();
    write_script(
        &rg.join("failer.sh"),
        &format!("#!/bin/sh\necho \"failer $1\" >> {d}/calls\n[ \"$1\" = start ] && {{ echo 'cannot start: disk on fire' >&2; exit 1; }}\nexit 0\n"),
    );
    write_script(
        &rg.join("stopfail.sh"),
        &format!("#!/bin/sh\necho \"stopfail $1\" >> {d}/calls\ncase $1 in stop) exit 1;; *) exit 0;; esac\n"),
    );
    write_script(
        &rg.join("hang.sh"),
        &format!(
            "#!/bin/sh\necho $$ > {d}/hang.pid\nsleep 300 &\necho $! > {d}/hangchild.pid\nwait\n"
        ),
    );
    write_script(
        &rg.join("leaky.sh"),
        "#!/bin/sh\necho \"login failed with password $OCF_RESKEY_password\" >&2\nexit 1\n",
    );
    rg
}

#[tokio::test]
async fn service_starts_in_order_and_rolls_back_on_failure() {
    require_root();
    require(DUMMY, "resource-agents");
    let d = tempfile::tempdir().unwrap();
    let rg = rg_agents(d.path());
    let script = lsb_script(d.path());
    let ex = Executor::new().with_rgmanager_dir(&rg);
    let a = dummy("ocf:heartbeat:Dummy", "a", d.path());
    let s = step("script", "s", &[("file", script.to_str().unwrap())]);
    let b = dummy("Dummy", "b", d.path());

    // All good: started in order, checked, stopped in reverse.
    let all = vec![a.clone(), s.clone(), b.clone()];
    let r = ex.run(&start("web", all.clone())).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(ops(&r), ["start a", "start s", "start b"]);
    eprintln!("{r}");
    let r = ex.run(&status("web", all.clone())).await;
    assert_eq!(r.result, ExecResult::StatusOk, "{r}");
    let rev: Vec<_> = all.iter().rev().cloned().collect();
    let r = ex.run(&stop("web", rev)).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");
    assert_eq!(ops(&r), ["stop b", "stop s", "stop a"]);

    // A failing middle resource: the ones before it are stopped again, in reverse.
    let f = step("failer", "f", &[]);
    let r = ex
        .run(&start("web", vec![a.clone(), s.clone(), f, b.clone()]))
        .await;
    assert_eq!(r.result, ExecResult::StartFailed, "{r}");
    assert_eq!(r.outcome(), Some(Outcome::StartFailed));
    assert_eq!(
        ops(&r),
        ["start a", "start s", "start f FAILED", "stop s", "stop a"]
    );
    let e = r.first_error().unwrap().to_string();
    assert!(e.contains("start returned 1 (generic error)"), "{e}");
    assert_eq!(r.steps[2].commands[0].note, "cannot start: disk on fire");
    assert!(
        !d.path().join("a.state").exists(),
        "a must be stopped again"
    );
    assert!(
        !d.path().join("svc.pid").exists(),
        "s must be stopped again"
    );
    assert!(!d.path().join("b.state").exists(), "b must never start");
    let calls = std::fs::read_to_string(d.path().join("calls")).unwrap();
    assert_eq!(calls.matches("failer").count(), 1, "{calls}");

    // A failing stop: the others are still stopped, the result is StopFailed.
    let r = ex.run(&start("db", vec![a.clone(), b.clone()])).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    let r = ex
        .run(&stop(
            "db",
            vec![b.clone(), step("stopfail", "sf", &[]), a.clone()],
        ))
        .await;
    assert_eq!(r.result, ExecResult::StopFailed, "{r}");
    assert_eq!(r.outcome(), Some(Outcome::StopFailed));
    assert_eq!(ops(&r), ["stop b", "stop sf FAILED", "stop a"]);
    assert!(!d.path().join("a.state").exists() && !d.path().join("b.state").exists());
}

#[tokio::test]
async fn hanging_agent_is_killed_with_its_process_group() {
    require_root();
    require(DUMMY, "resource-agents");
    let d = tempfile::tempdir().unwrap();
    let rg = rg_agents(d.path());
    let ex = Executor::new().with_rgmanager_dir(&rg);
    let a = dummy("Dummy", "a", d.path());
    let h = step("hang", "h", &[("__start_timeout", "1")]);
    let t0 = Instant::now();
    let r = ex.run(&start("svc", vec![a, h])).await;
    let took = t0.elapsed();
    assert_eq!(r.result, ExecResult::StartFailed, "{r}");
    assert_eq!(ops(&r), ["start a", "start h FAILED", "stop a"]);
    assert!(
        matches!(r.steps[1].error, Some(StepError::Timeout { .. })),
        "{r}"
    );
    assert!(r.steps[1].commands[0].timed_out);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    let (sh, child) = (
        read_pid(&d.path().join("hang.pid")),
        read_pid(&d.path().join("hangchild.pid")),
    );
    let t0 = Instant::now();
    while (alive(sh) || alive(child)) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(sh), "the agent {sh} must be killed");
    assert!(
        !alive(child),
        "the agent's child {child} (same process group) must be killed"
    );
    assert!(!d.path().join("a.state").exists());
    eprintln!("hang: killed after {took:?}");
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let rg = rg_agents(d.path());
    let ex = Executor::new().with_rgmanager_dir(&rg);
    let r = ex
        .run(&start(
            "svc",
            vec![step(
                "leaky",
                "l",
                &[("password", "hunter2secret"), ("user", "bob")],
            )],
        ))
        .await;
    assert_eq!(r.result, ExecResult::StartFailed);
    let text = format!("{r}\n{r:?}\n{}", serde_json::to_string(&r).unwrap());
    assert!(!text.contains("hunter2secret"), "{text}");
    assert!(text.contains("login failed with password ***"), "{text}");
}

#[derive(Default)]
struct FakeVms {
    running: Mutex<BTreeMap<String, bool>>,
    calls: Mutex<Vec<String>>,
}

impl VmHandler for FakeVms {
    fn start<'a>(&'a self, name: &'a str, _: &'a BTreeMap<String, String>) -> VmFuture<'a, ()> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!("start {name}"));
            self.running.lock().unwrap().insert(name.into(), true);
            Ok(())
        })
    }
    fn stop<'a>(&'a self, name: &'a str, _: &'a BTreeMap<String, String>) -> VmFuture<'a, ()> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!("stop {name}"));
            self.running.lock().unwrap().insert(name.into(), false);
            Ok(())
        })
    }
    fn status<'a>(
        &'a self,
        name: &'a str,
        _: &'a BTreeMap<String, String>,
    ) -> VmFuture<'a, VmStatus> {
        Box::pin(async move {
            Ok(match self.running.lock().unwrap().get(name) {
                Some(true) => VmStatus::Running,
                _ => VmStatus::Stopped,
            })
        })
    }
    fn migrate<'a>(&'a self, name: &'a str, to: base::NodeId, _: MigrateMode) -> VmFuture<'a, ()> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(format!("migrate {name} {to}"));
            if to == base::NodeId(9) {
                return Err("target unreachable".into());
            }
            self.running.lock().unwrap().insert(name.into(), false);
            Ok(())
        })
    }
}

#[tokio::test]
async fn vm_goes_to_the_handler_or_fails_clearly() {
    let vm_start = Action::StartService {
        service: "guest1".into(),
        op: 1,
        kind: ServiceKind::Vm,
        resources: vec![],
    };
    let r = Executor::new().run(&vm_start).await;
    assert_eq!(r.result, ExecResult::StartFailed);
    let e = r.first_error().unwrap().to_string();
    assert!(
        e.contains("vm handler") && e.contains("with_vm_handler"),
        "{e}"
    );
    let mig = Action::Migrate {
        service: "guest1".into(),
        op: 3,
        to: base::NodeId(2),
        mode: MigrateMode::Live,
    };
    assert_eq!(
        Executor::new().run(&mig).await.outcome(),
        Some(Outcome::MigrateFailed)
    );

    let vms = Arc::new(FakeVms::default());
    let ex = Executor::new().with_vm_handler(vms.clone());
    assert_eq!(ex.run(&vm_start).await.result, ExecResult::Started);
    let st = Action::StatusCheck {
        service: "guest1".into(),
        op: 1,
        kind: ServiceKind::Vm,
        resources: vec![],
    };
    assert_eq!(ex.run(&st).await.result, ExecResult::StatusOk);
    assert_eq!(ex.run(&mig).await.outcome(), Some(Outcome::MigrateOk));
    assert_eq!(ex.run(&st).await.outcome(), Some(Outcome::StatusFailed));
    let bad = Action::Migrate {
        service: "guest1".into(),
        op: 4,
        to: base::NodeId(9),
        mode: MigrateMode::Live,
    };
    let r = ex.run(&bad).await;
    assert_eq!(r.outcome(), Some(Outcome::MigrateFailed));
    assert!(r.to_string().contains("target unreachable"), "{r}");
    // A vm resource inside a service goes to the handler too.
    let r = ex.run(&start("svc", vec![step("vm", "inner", &[])])).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(
        *vms.calls.lock().unwrap(),
        [
            "start guest1",
            "migrate guest1 2",
            "migrate guest1 9",
            "start inner"
        ]
    );
}

#[tokio::test]
async fn meta_data_and_configuration_check() {
    require_root();
    require(DUMMY, "resource-agents");
    let ex = Executor::new();
    let m = ex.meta_data("ocf:heartbeat:Dummy").await.unwrap();
    assert_eq!(m.name, "Dummy");
    assert!(m
        .parameters
        .iter()
        .any(|p| p.name == "state" && !p.required));
    assert_eq!(m.timeout("start"), Some(Duration::from_secs(20)));
    let e = ex
        .check_resource(&step("IPaddr2", "vip", &[("cidr_netmask", "24")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing required parameter(s) ip"), "{e}");
    let extra = ex
        .check_resource(&step(
            "IPaddr2",
            "vip",
            &[("ip", "10.0.0.5"), ("colour", "red")],
        ))
        .await
        .unwrap();
    assert_eq!(extra, ["colour"]);
    assert!(ex
        .check_resource(&step("script", "s", &[("file", "/nonexistent/x")]))
        .await
        .is_err());
    assert!(ex
        .check_resource(&step("ip", "v", &[("address", "10.0.0.5/24")]))
        .await
        .is_ok());
    assert!(ex
        .check_resource(&step("Dummy", "d", &[("__start_timeout", "later")]))
        .await
        .is_err());
    assert!(matches!(
        ex.check_resource(&step("vm", "g", &[])).await,
        Err(StepError::NoVmHandler(_))
    ));
}

#[tokio::test]
async fn naive_script_daemon_survives_its_start() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let pidf = d.path().join("naive.pid");
    let script = d.path().join("naive");
    // A daemon started with a bare `&`: same process group, inherits stdout and stderr.
    write_script(
        &script,
        &format!(
            "#!/bin/sh\ncase $1 in\nstart) sleep 1000 & echo $! > {p}; echo started; exit 0;;\nstop) kill $(cat {p}); exit 0;;\nstatus) kill -0 $(cat {p}) 2>/dev/null && exit 0; exit 3;;\nesac\n",
            p = pidf.display()
        ),
    );
    let ex = Executor::new();
    let res = vec![step(
        "script",
        "naive",
        &[("file", script.to_str().unwrap())],
    )];
    let t0 = Instant::now();
    let r = ex.run(&start("n", res.clone())).await;
    let took = t0.elapsed();
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(
        took < Duration::from_millis(250),
        "start waited for the daemon: {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = read_pid(&pidf);
    assert!(
        alive(pid),
        "the daemon {pid} was killed after its script exited"
    );
    assert_eq!(
        ex.run(&status("n", res.clone())).await.result,
        ExecResult::StatusOk
    );
    assert_eq!(
        ex.run(&stop("n", res.clone())).await.result,
        ExecResult::Stopped
    );
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid));
}

#[tokio::test]
async fn status_checks_are_limited_like_status_child_max() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let rg = d.path().join("cluster");
    write_script(
        &rg.join("slow.sh"),
        "#!/bin/sh\n[ \"$1\" = status ] && sleep 0.5\nexit 0\n",
    );
    let checks: Vec<_> = (0..4)
        .map(|i| status(&format!("s{i}"), vec![step("slow", "x", &[])]))
        .collect();
    for (max, lo, hi) in [(2usize, 1000u64, 2500u64), (4, 500, 950)] {
        let ex = Executor::new()
            .with_rgmanager_dir(&rg)
            .with_status_child_max(max);
        let t0 = Instant::now();
        let reports = futures_join(&ex, &checks).await;
        let ms = t0.elapsed().as_millis() as u64;
        assert!(reports.iter().all(|r| r.result == ExecResult::StatusOk));
        assert!(
            (lo..hi).contains(&ms),
            "4 checks of 500 ms, {max} at a time, took {ms} ms"
        );
    }
}

async fn futures_join(ex: &Executor, actions: &[Action]) -> Vec<rmexec::ActionReport> {
    let mut set = tokio::task::JoinSet::new();
    for a in actions {
        let (ex, a) = (ex.clone(), a.clone());
        set.spawn(async move { ex.run(&a).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}
