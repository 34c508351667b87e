//! Runs the fence domain's agent runs concurrently, so a hung agent never blocks the daemon's loop.

use crate::fence_agent::FenceAgentRunner;
use fence::AgentRun;
use tokio::sync::mpsc;

/// A finished run: the `run_id` and what [`fence::FenceDomain::handle_agent_result`] expects.
pub type RunResult = (u64, Result<(), String>);

/// Spawns agent runs as tokio tasks and hands their results back in completion order.
///
/// In the daemon's `select!` loop: on `Action::RunAgent(run)` call [`AgentPool::start`];
/// on `pool.next_result()` feed `handle_agent_result(now, id, result)`.
pub struct AgentPool {
    runner: FenceAgentRunner,
    tx: mpsc::UnboundedSender<RunResult>,
    rx: mpsc::UnboundedReceiver<RunResult>,
    running: usize,
}

impl AgentPool {
    /// A pool using `runner`.
    pub fn new(runner: FenceAgentRunner) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        AgentPool {
            runner,
            tx,
            rx,
            running: 0,
        }
    }

    /// Starts `run` in the background (its own timeout kills it).
    pub fn start(&mut self, run: AgentRun) {
        let runner = self.runner.clone();
        let tx = self.tx.clone();
        self.running += 1;
        tokio::spawn(async move {
            let res = runner.run_for_domain(&run).await;
            let _ = tx.send((run.run_id, res));
        });
    }

    /// Runs in flight.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The next finished run; pends forever while none is running.
    pub async fn next_result(&mut self) -> RunResult {
        if self.running == 0 {
            std::future::pending::<()>().await;
        }
        let r = self.rx.recv().await.expect("the pool holds a sender");
        self.running -= 1;
        r
    }
}
