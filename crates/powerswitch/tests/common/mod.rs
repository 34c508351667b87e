//! Helpers shared by the power switch tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fence_quorate binary built by cargo for these tests.
pub fn fence_quorate() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fence_quorate"))
}

/// A node stand-in: a shell with a background child, a grandchild shell and its child.
pub const TREE: &str = "sleep 1000 & sh -c 'sleep 1000 & wait' & wait";

/// Live (non-zombie) pids in process group `pgid`.
pub fn group(pgid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f[0] != "Z" && f[2].parse::<i32>().ok() == Some(pgid) {
            v.push(pid);
        }
    }
    v
}

/// Waits until group `pgid` has at least `n` live processes.
pub async fn wait_group(pgid: i32, n: usize) -> Vec<i32> {
    let t0 = Instant::now();
    loop {
        let g = group(pgid);
        if g.len() >= n {
            return g;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "group {pgid} has {g:?}, wanted {n} processes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// FenceAgentAPI args for fence_quorate over the Unix socket.
pub fn fq_args(sock: &Path, port: &str, action: &str) -> agents::AgentArgs {
    agents::AgentArgs::new()
        .with("socket", sock.to_str().unwrap())
        .with("port", port)
        .with("action", action)
        .with("nodename", port)
}

use base::{Instant as BInstant, NodeId};
use fence::{Action, Event, FenceDomain};

/// Runs the domain's actions for real until `victim` is fenced; totem is a loopback here.
pub async fn drive_until_fenced(
    dom: &mut FenceDomain,
    origin: Instant,
    victim: NodeId,
) -> Vec<Event> {
    let runner = agents::FenceAgentRunner::default();
    let now = || BInstant(origin.elapsed().as_nanos() as u64);
    let mut events = Vec::new();
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not fenced in 30 s: {:?}",
            dom.status()
        );
        while let Some(a) = dom.poll_action() {
            match a {
                Action::RunAgent(run) => {
                    let res = runner.run_for_domain(&run).await;
                    dom.handle_agent_result(now(), run.run_id, res);
                }
                Action::Broadcast(o) => dom.handle_fence_outcome(now(), o),
            }
        }
        while let Some(e) = dom.poll_event() {
            events.push(e);
        }
        if dom.is_fenced(victim) {
            return events;
        }
        match dom.poll_deadline() {
            Some(d) => {
                let wait = Duration::from_nanos(d.0.saturating_sub(now().0));
                tokio::time::sleep(wait).await;
            }
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        dom.handle_timeout(now());
    }
}
