//! Runs external agents (FenceAgentAPI fence agents, OCF and LSB resource agents) as child processes with timeouts.
//!
//! One machinery ([`run_process`]) starts a program in its own process group,
//! feeds it stdin, captures stdout/stderr up to a bound, and on timeout kills
//! the whole group. On top of it:
//! - [`FenceAgentRunner`]: FenceAgentAPI (`key=value` lines on stdin, exit 0 = success),
//!   with a typed [`FenceAgentError`] for a missing agent, a non-zero exit, garbage and a hang;
//! - [`ocf`]: OCF resource agents (`OCF_RESKEY_*` environment, action as argv\[1\], OCF exit codes)
//!   and LSB init scripts.
//!
//! Secrets (`passwd=` and friends) travel only on stdin; every log line and every
//! error prints them as `***`, and captured output is scrubbed of their values.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fence_agent;
pub mod ocf;
pub mod pool;
pub mod process;

pub use fence::{is_secret_key, AgentArgs, Secret};
pub use fence_agent::{FenceAgentError, FenceAgentRunner, FenceReport, PowerStatus};
pub use pool::{AgentPool, RunResult};
pub use process::{find_program, run_process, ProcessError, ProcessOutput, ProcessSpec};
