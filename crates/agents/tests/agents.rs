//! Real child processes: FenceAgentAPI stdin, timeouts that kill whole process groups,
//! distinct errors, secrets kept out of argv/env/logs, and OCF's Dummy agent.

use agents::ocf::{run_lsb, LsbStatus, OcfAgent, OcfStatus};
use agents::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Alive = /proc entry exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

fn args(action: &str) -> AgentArgs {
    AgentArgs::new()
        .with("ipaddr", "127.0.0.1")
        .with("login", "admin")
        .with("passwd", "TopSecret99")
        .with("port", "node3")
        .with("action", action)
        .with("nodename", "node3")
}

#[tokio::test]
async fn stdin_carries_args_and_secrets_stay_out_of_argv_env_and_output() {
    let d = tempfile::tempdir().unwrap();
    let rec = d.path().join("rec");
    let a = script(
        d.path(),
        "fence_rec",
        &format!(
            "cat > {r}.stdin; echo \"$0 $*\" > {r}.argv; env > {r}.env; echo 'Parse error: Ignoring unknown option passwd=TopSecret99' >&2; echo Success: Powered OFF",
            r = rec.display()
        ),
    );
    let runner = FenceAgentRunner::default();
    let rep = runner
        .run(a.to_str().unwrap(), &args("off"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(rep.action, "off");
    assert!(rep.stdout.contains("Powered OFF"));
    let stdin = std::fs::read_to_string(rec.with_extension("stdin")).unwrap();
    assert_eq!(
        stdin,
        "ipaddr=127.0.0.1\nlogin=admin\npasswd=TopSecret99\nport=node3\naction=off\nnodename=node3\n"
    );
    for ext in ["argv", "env"] {
        let t = std::fs::read_to_string(rec.with_extension(ext)).unwrap();
        assert!(!t.contains("TopSecret99"), "secret leaked into {ext}");
    }
    // A failing agent echoing the secret to stderr: the error text is scrubbed.
    let b = script(
        d.path(),
        "fence_fail",
        "cat >/dev/null; echo 'login failed for passwd=TopSecret99' >&2; exit 1",
    );
    let e = runner
        .run(b.to_str().unwrap(), &args("off"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FenceAgentError::Failed { code: 1, .. }),
        "{e:?}"
    );
    let text = format!("{e} {e:?}");
    assert!(!text.contains("TopSecret99"), "{text}");
    assert!(text.contains("login failed"), "{text}");
}

#[tokio::test]
async fn missing_nonzero_garbage_and_hang_are_distinct_errors() {
    let d = tempfile::tempdir().unwrap();
    let runner = FenceAgentRunner {
        search_path: vec![d.path().to_path_buf()],
        output_limit: 4096,
    };
    // Missing.
    let e = runner
        .run("fence_nonexistent", &args("off"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, FenceAgentError::Missing { .. }), "{e:?}");
    assert!(e.to_string().contains("fence-agents"), "{e}");
    // Not executable.
    let p = d.path().join("fence_noexec");
    std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    let e = runner
        .run("fence_noexec", &args("off"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, FenceAgentError::NotRunnable { .. }), "{e:?}");
    assert!(e.to_string().contains("chmod +x"), "{e}");
    // Non-zero.
    script(
        d.path(),
        "fence_exit1",
        "cat >/dev/null; echo 'Unable to connect' >&2; exit 1",
    );
    let e = runner
        .run("fence_exit1", &args("off"), Duration::from_secs(5))
        .await
        .unwrap_err();
    match &e {
        FenceAgentError::Failed {
            code, stderr_tail, ..
        } => {
            assert_eq!(*code, 1);
            assert!(stderr_tail.contains("Unable to connect"));
        }
        other => panic!("{other:?}"),
    }
    // Garbage: megabytes of binary noise and an exit code status may not use; bounded capture, no wedge.
    script(
        d.path(),
        "fence_garbage",
        "cat >/dev/null; head -c 3000000 /dev/urandom; head -c 3000000 /dev/urandom >&2; exit 7",
    );
    let t0 = Instant::now();
    let e = runner
        .run("fence_garbage", &args("status"), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(matches!(e, FenceAgentError::Garbage { .. }), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    script(d.path(), "fence_badmeta", "echo 'this is not xml'");
    let e = runner
        .run("fence_badmeta", &args("metadata"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, FenceAgentError::Garbage { .. }), "{e:?}");
    // Status codes.
    script(d.path(), "fence_off", "cat >/dev/null; exit 2");
    let r = runner
        .run("fence_off", &args("status"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.power, Some(PowerStatus::Off));
    // Hang: a shell whose child and grandchild ignore stdin and sleep; the whole group dies.
    let pids = d.path().join("pids");
    script(
        d.path(),
        "fence_hang",
        &format!("echo $$ >> {p}; (sleep 1000 & echo $! >> {p}; wait) & sleep 1000 & echo $! >> {p}; echo stuck >&2; wait", p = pids.display()),
    );
    let t0 = Instant::now();
    let e = runner
        .run("fence_hang", &args("off"), Duration::from_millis(500))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    match &e {
        FenceAgentError::Timeout {
            timeout,
            stderr_tail,
            ..
        } => {
            assert_eq!(*timeout, Duration::from_millis(500));
            assert!(stderr_tail.contains("stuck"), "{stderr_tail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let list: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(list.len(), 3, "{list:?}");
    std::thread::sleep(Duration::from_millis(200));
    for pid in list {
        assert!(!alive(pid), "process {pid} of the hung agent survived");
    }
}

#[tokio::test]
async fn domain_run_is_executed_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("got");
    let a = script(d.path(), "fence_ok", &format!("cat > {}", out.display()));
    let mut c = fence::FenceConfig::default();
    let dev = fence::Device::from_attrs(
        AgentArgs::new()
            .with("agent", a.to_str().unwrap())
            .with("name", "ps")
            .with("port", "n2")
            .with("passwd", "pw1234"),
    )
    .unwrap();
    c.nodes.insert(
        base::NodeId(2),
        fence::NodeFence {
            name: "n2".into(),
            methods: vec![fence::Method {
                name: "1".into(),
                devices: vec![dev],
            }],
            unfence: vec![],
        },
    );
    let mut dom = fence::FenceDomain::new(base::NodeId(1), c);
    let m = |v: &[u32]| fence::Membership {
        members: v.iter().map(|i| base::NodeId(*i)).collect(),
        quorate: true,
    };
    dom.handle_membership(base::Instant(0), m(&[1, 2]));
    dom.handle_membership(base::Instant(1), m(&[1]));
    let Some(fence::Action::RunAgent(run)) = dom.poll_action() else {
        panic!("no run")
    };
    let res = FenceAgentRunner::default().run_for_domain(&run).await;
    assert_eq!(res, Ok(()));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "port=n2\npasswd=pw1234\naction=reboot\nnodename=n2\n"
    );
    dom.handle_agent_result(base::Instant(2), run.run_id, res);
    assert!(matches!(
        dom.poll_action(),
        Some(fence::Action::Broadcast(_))
    ));
}

const DUMMY: &str = "/usr/lib/ocf/resource.d/heartbeat/Dummy";

#[tokio::test]
async fn ocf_dummy_start_monitor_stop() {
    assert!(
        Path::new(DUMMY).exists(),
        "{DUMMY} is missing: install the Debian package resource-agents"
    );
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("dummy.state");
    let params = AgentArgs::new().with("state", state.to_str().unwrap());
    let agent = OcfAgent::new("heartbeat", "Dummy");
    let to = Duration::from_secs(20);
    let r = agent
        .run("monitor", "d1", &params, to, Some(0))
        .await
        .unwrap();
    assert_eq!(r.status, OcfStatus::NotRunning, "{:?}", r.output);
    let r = agent.run("start", "d1", &params, to, None).await.unwrap();
    assert_eq!(r.status, OcfStatus::Success, "{:?}", r.output);
    assert!(state.exists(), "Dummy did not honour OCF_RESKEY_state");
    let r = agent
        .run("monitor", "d1", &params, to, Some(0))
        .await
        .unwrap();
    assert_eq!(r.status, OcfStatus::Success);
    let r = agent.run("stop", "d1", &params, to, None).await.unwrap();
    assert_eq!(r.status, OcfStatus::Success);
    let r = agent
        .run("monitor", "d1", &params, to, Some(0))
        .await
        .unwrap();
    assert_eq!(r.status, OcfStatus::NotRunning);
    let r = agent
        .run("meta-data", "d1", &params, to, None)
        .await
        .unwrap();
    assert_eq!(r.status, OcfStatus::Success);
    assert!(
        r.output.stdout.contains("<resource-agent"),
        "{}",
        r.output.stdout
    );
    let r = agent
        .run("frobnicate", "d1", &params, to, None)
        .await
        .unwrap();
    assert_eq!(r.status, OcfStatus::Unimplemented);
}

#[tokio::test]
async fn lsb_status_codes() {
    let d = tempfile::tempdir().unwrap();
    let s = script(
        d.path(),
        "svc",
        "case $1 in status) exit 3;; start) exit 0;; *) exit 3;; esac",
    );
    let (code, _) = run_lsb(&s, "status", Duration::from_secs(5)).await.unwrap();
    assert_eq!(LsbStatus::from_code(code), LsbStatus::NotRunning);
    let (code, _) = run_lsb(&s, "start", Duration::from_secs(5)).await.unwrap();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn pool_runs_concurrently_and_a_hang_does_not_block_others() {
    let d = tempfile::tempdir().unwrap();
    let hang = script(d.path(), "fence_hang", "cat >/dev/null; sleep 1000");
    let ok = script(d.path(), "fence_ok", "cat >/dev/null; exit 0");
    let mk = |id: u64, agent: &Path, timeout_ms: u64| fence::AgentRun {
        run_id: id,
        kind: fence::JobKind::Fence,
        victim: base::NodeId(id as u32),
        method_idx: 0,
        device_idx: 0,
        device: "d".into(),
        agent: agent.to_str().unwrap().into(),
        args: AgentArgs::new().with("action", "off"),
        action: "off".into(),
        timeout: base::Duration::from_millis(timeout_ms),
    };
    let mut pool = AgentPool::new(FenceAgentRunner::default());
    let t0 = Instant::now();
    pool.start(mk(1, &hang, 800));
    pool.start(mk(2, &ok, 5000));
    assert_eq!(pool.running(), 2);
    let (id, res) = pool.next_result().await;
    assert_eq!((id, res), (2, Ok(())));
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "the hung agent blocked the pool"
    );
    let (id, res) = pool.next_result().await;
    assert_eq!(id, 1);
    assert!(res.unwrap_err().contains("hung"));
    assert_eq!(pool.running(), 0);
}

/// Collects everything logged at any level.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

#[test]
fn secrets_never_reach_the_log() {
    let buf = LogBuf::default();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buf.clone())
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(sub, || {
        rt.block_on(async {
            let d = tempfile::tempdir().unwrap();
            let ok = script(d.path(), "fence_ok", "cat >/dev/null; exit 0");
            let bad = script(d.path(), "fence_bad", "cat; exit 1");
            let hang = script(d.path(), "fence_hang", "cat >/dev/null; sleep 1000");
            let r = FenceAgentRunner::default();
            let mut a = args("off");
            a.set("passwd_script", "/secret/path/TopScript77");
            r.run(ok.to_str().unwrap(), &a, Duration::from_secs(5))
                .await
                .unwrap();
            let _ = r
                .run(bad.to_str().unwrap(), &a, Duration::from_secs(5))
                .await
                .unwrap_err();
            let _ = r
                .run(hang.to_str().unwrap(), &a, Duration::from_millis(300))
                .await
                .unwrap_err();
            let _ = r
                .run("fence_missing_xyz", &a, Duration::from_secs(5))
                .await
                .unwrap_err();
        })
    });
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("running fence agent"), "nothing logged: {log}");
    assert!(log.contains("fence agent failed"), "{log}");
    assert!(!log.contains("TopSecret99"), "password in log:\n{log}");
    assert!(!log.contains("TopScript77"), "passwd_script in log:\n{log}");
}
