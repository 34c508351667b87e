//! `quorate bench fence` (the fencing half): time from a member's loss, as the fence
//! domain sees it, to the Fenced event, through fence_quorate and this power switch.
//! The integrator adds failure detection (totem token timeout) in front of it.

use crate::server::{serve_unix, OutletConfig, PowerSwitch};
use agents::{AgentArgs, AgentPool, FenceAgentRunner};
use base::{Instant as BInstant, NodeId};
use fence::{Action, Device, Event, FenceConfig, FenceDomain, Membership, Method, NodeFence};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Timings of each round.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Loss → Fenced, per round.
    pub rounds: Vec<Duration>,
}

impl BenchReport {
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.rounds.clone();
        v.sort();
        v
    }
    /// Fastest round.
    pub fn min(&self) -> Duration {
        self.sorted().first().copied().unwrap_or_default()
    }
    /// Median round.
    pub fn median(&self) -> Duration {
        let v = self.sorted();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
    /// Slowest round.
    pub fn max(&self) -> Duration {
        self.sorted().last().copied().unwrap_or_default()
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fence via power switch: {} rounds, member loss -> fenced: min {:?} median {:?} max {:?}",
            self.rounds.len(),
            self.min(),
            self.median(),
            self.max()
        )
    }
}

/// Drives `dom` with real agents until `done(dom)` or `limit` passes. Broadcasts are delivered
/// straight back (a one-node totem). Returns the events seen.
pub async fn drive_until(
    dom: &mut FenceDomain,
    pool: &mut AgentPool,
    origin: Instant,
    limit: Duration,
    done: impl Fn(&FenceDomain) -> bool,
) -> Result<Vec<Event>, String> {
    let now = || BInstant(origin.elapsed().as_nanos() as u64);
    let t0 = Instant::now();
    let mut events = Vec::new();
    loop {
        while let Some(a) = dom.poll_action() {
            match a {
                Action::RunAgent(run) => pool.start(run),
                Action::Broadcast(o) => dom.handle_fence_outcome(now(), o),
            }
        }
        while let Some(e) = dom.poll_event() {
            events.push(e);
        }
        if done(dom) {
            return Ok(events);
        }
        let left = limit
            .checked_sub(t0.elapsed())
            .ok_or_else(|| format!("not done within {limit:?}:\n{}", dom.status()))?;
        let wait = dom
            .poll_deadline()
            .map(|d| Duration::from_nanos(d.0.saturating_sub(now().0)))
            .unwrap_or(left)
            .min(left);
        tokio::select! {
            (id, res) = pool.next_result() => dom.handle_agent_result(now(), id, res),
            _ = tokio::time::sleep(wait) => dom.handle_timeout(now()),
        }
    }
}

/// Runs `rounds` fencings of a stand-in node (a shell process tree) through `fence_quorate` at `agent`.
pub async fn fence_round_trip(agent: &Path, rounds: u32) -> Result<BenchReport, String> {
    let dir = std::env::temp_dir().join(format!("quorate-bench-fence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sock = dir.join("ps.sock");
    let sw = PowerSwitch::new(vec![OutletConfig::shell(
        "node2",
        "sleep 1000 & sleep 1000 & wait",
    )])
    .map_err(|e| e.to_string())?;
    let srv = serve_unix(sw.clone(), &sock)
        .await
        .map_err(|e| e.to_string())?;
    let dev = Device::from_attrs(
        AgentArgs::new()
            .with("name", "ps")
            .with("agent", agent.to_string_lossy())
            .with("socket", sock.to_string_lossy())
            .with("port", "node2")
            .with("action", "off"),
    )
    .map_err(|e| e.to_string())?;
    let mut cfg = FenceConfig {
        post_fail_delay: base::Duration::ZERO,
        ..FenceConfig::default()
    };
    cfg.nodes.insert(
        NodeId(2),
        NodeFence {
            name: "node2".into(),
            methods: vec![Method {
                name: "1".into(),
                devices: vec![dev],
            }],
            unfence: vec![],
        },
    );
    let mut pool = AgentPool::new(FenceAgentRunner::default());
    let origin = Instant::now();
    let mut dom = FenceDomain::new(NodeId(1), cfg);
    let mut report = BenchReport { rounds: Vec::new() };
    let result = async {
        for _ in 0..rounds {
            sw.on("node2").await.map_err(|e| e.to_string())?;
            let b = |i: Instant| BInstant(i.duration_since(origin).as_nanos() as u64);
            dom.handle_membership(
                b(Instant::now()),
                Membership {
                    members: [NodeId(1), NodeId(2)].into(),
                    quorate: true,
                },
            );
            let lost = Instant::now();
            dom.handle_membership(
                b(lost),
                Membership {
                    members: [NodeId(1)].into(),
                    quorate: true,
                },
            );
            drive_until(&mut dom, &mut pool, origin, Duration::from_secs(30), |d| {
                d.is_fenced(NodeId(2))
            })
            .await?;
            report.rounds.push(lost.elapsed());
            if sw.status("node2").await.map_err(|e| e.to_string())? != crate::PowerState::Off {
                return Err("fenced but the outlet is still on".to_string());
            }
        }
        Ok::<(), String>(())
    }
    .await;
    srv.abort();
    sw.all_off().await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| report)
}
