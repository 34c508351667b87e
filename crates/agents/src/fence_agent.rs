//! FenceAgentAPI: run a fence agent with `key=value` lines on stdin.

use crate::process::{default_search_path, find_program, run_process, ProcessError, ProcessSpec};
use fence::{is_secret_key, AgentArgs, AgentRun};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

/// What a successful agent run reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceReport {
    /// The resolved agent path.
    pub agent: PathBuf,
    /// The action run.
    pub action: String,
    /// For `status`/`monitor`: what the device said.
    pub power: Option<PowerStatus>,
    /// Captured stdout (scrubbed).
    pub stdout: String,
    /// How long the agent ran.
    pub elapsed: Duration,
}

/// A port's power state from `status` (exit 0 = on, 2 = off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerStatus {
    /// Powered on.
    On,
    /// Powered off.
    Off,
}

/// Why a fence agent run failed. Each case says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum FenceAgentError {
    /// The agent program does not exist.
    #[error("fence agent {agent:?} not found (searched {searched}): install the package that ships it (Debian: fence-agents) or fix agent= in its <fencedevice>")]
    Missing {
        /// The configured agent.
        agent: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The agent file is not runnable.
    #[error("fence agent {agent}: {detail}")]
    NotRunnable {
        /// The agent path.
        agent: String,
        /// Permission or format problem, with the fix.
        detail: String,
    },
    /// Exit status other than success.
    #[error("fence agent {agent} action {action} failed with exit code {code}: {stderr_tail}")]
    Failed {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The exit code.
        code: i32,
        /// The end of its stderr (scrubbed).
        stderr_tail: String,
    },
    /// Killed by a signal it did not get from us.
    #[error("fence agent {agent} action {action} was killed by signal {signal}")]
    Signaled {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The signal number.
        signal: i32,
    },
    /// Output or exit code that the FenceAgentAPI does not allow for this action.
    #[error("fence agent {agent} action {action} answered garbage: {detail}")]
    Garbage {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// What was wrong.
        detail: String,
    },
    /// It hung past the timeout; its whole process group was killed.
    #[error("fence agent {agent} action {action} hung for {timeout:?} and was killed (raise the device's timeout= if the device is just slow): {stderr_tail}")]
    Timeout {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The timeout.
        timeout: Duration,
        /// The end of its stderr (scrubbed).
        stderr_tail: String,
    },
    /// Any other I/O error starting or watching the agent.
    #[error("fence agent {agent}: {source}")]
    Io {
        /// The agent.
        agent: String,
        /// The error.
        source: std::io::Error,
    },
}

fn tail(s: &str) -> String {
    let t = s.trim();
    let start = t.char_indices().rev().nth(400).map_or(0, |(i, _)| i);
    let t = &t[start..];
    if t.is_empty() {
        "(no stderr)".into()
    } else {
        t.replace('\n', " | ")
    }
}

/// Runs fence agents per the FenceAgentAPI.
#[derive(Clone, Debug)]
pub struct FenceAgentRunner {
    /// Directories searched for agent names without a `/`.
    pub search_path: Vec<PathBuf>,
    /// Bytes kept of stdout and of stderr each.
    pub output_limit: usize,
}

impl Default for FenceAgentRunner {
    fn default() -> Self {
        FenceAgentRunner {
            search_path: default_search_path(),
            output_limit: 64 * 1024,
        }
    }
}

impl FenceAgentRunner {
    /// Runs `agent` with `args` (which must include `action=`) on stdin; kills its process group after `timeout`.
    pub async fn run(
        &self,
        agent: &str,
        args: &AgentArgs,
        timeout: Duration,
    ) -> Result<FenceReport, FenceAgentError> {
        let action = args
            .get("action")
            .or(args.get("option"))
            .unwrap_or("reboot")
            .to_string();
        let path =
            find_program(agent, &self.search_path).ok_or_else(|| FenceAgentError::Missing {
                agent: agent.to_string(),
                searched: if agent.contains('/') {
                    agent.to_string()
                } else {
                    self.search_path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                },
            })?;
        let agent_s = path.display().to_string();
        let mut spec = ProcessSpec::new(&path, timeout);
        spec.stdin = Some(args.to_stdin());
        spec.output_limit = self.output_limit;
        spec.scrub = args
            .iter_exposed()
            .filter(|(k, v)| is_secret_key(k) && v.len() >= 3)
            .map(|(_, v)| v.to_string())
            .collect();
        info!(agent = %agent_s, %action, %args, ?timeout, "running fence agent");
        let out = run_process(&spec).await.map_err(|e| match e {
            ProcessError::NotFound { .. } => FenceAgentError::Missing {
                agent: agent.to_string(),
                searched: agent_s.clone(),
            },
            ProcessError::PermissionDenied { program } => FenceAgentError::NotRunnable {
                agent: program.display().to_string(),
                detail: "permission denied: make it executable (chmod +x)".into(),
            },
            ProcessError::ExecFormat { program } => FenceAgentError::NotRunnable {
                agent: program.display().to_string(),
                detail:
                    "exec format error: not a program for this machine (a script needs a #! line)"
                        .into(),
            },
            ProcessError::Io { program, source } => FenceAgentError::Io {
                agent: program.display().to_string(),
                source,
            },
            ProcessError::Timeout {
                timeout, stderr, ..
            } => FenceAgentError::Timeout {
                agent: agent_s.clone(),
                action: action.clone(),
                timeout,
                stderr_tail: tail(&stderr),
            },
        });
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "fence agent failed");
                return Err(e);
            }
        };
        let Some(code) = out.code else {
            let e = FenceAgentError::Signaled {
                agent: agent_s,
                action,
                signal: out.signal.unwrap_or(0),
            };
            warn!(error = %e, "fence agent failed");
            return Err(e);
        };
        let garbage = |detail: String| FenceAgentError::Garbage {
            agent: agent_s.clone(),
            action: action.clone(),
            detail,
        };
        let failed = |code| FenceAgentError::Failed {
            agent: agent_s.clone(),
            action: action.clone(),
            code,
            stderr_tail: tail(&out.stderr),
        };
        let result = match action.as_str() {
            "status" | "monitor" => match code {
                0 => Ok(Some(PowerStatus::On)),
                2 => Ok(Some(PowerStatus::Off)),
                1 => Err(failed(1)),
                c => Err(garbage(format!(
                    "exit code {c}; the FenceAgentAPI allows 0 (on), 1 (error), 2 (off)"
                ))),
            },
            "metadata" if code == 0 => {
                if out.stdout.trim_start().starts_with("<?xml")
                    || out.stdout.trim_start().starts_with("<resource-agent")
                {
                    Ok(None)
                } else {
                    Err(garbage(format!(
                        "metadata is not XML: {:?}",
                        out.stdout.chars().take(80).collect::<String>()
                    )))
                }
            }
            _ if code == 0 => Ok(None),
            _ => Err(failed(code)),
        };
        match result {
            Ok(power) => {
                info!(agent = %agent_s, %action, ?power, elapsed = ?out.elapsed, "fence agent succeeded");
                Ok(FenceReport {
                    agent: path,
                    action,
                    power,
                    stdout: out.stdout,
                    elapsed: out.elapsed,
                })
            }
            Err(e) => {
                warn!(error = %e, "fence agent failed");
                Err(e)
            }
        }
    }

    /// Runs an [`AgentRun`] from the fence domain and returns what
    /// [`fence::FenceDomain::handle_agent_result`] expects.
    pub async fn run_for_domain(&self, run: &AgentRun) -> Result<(), String> {
        self.run(&run.agent, &run.args, run.timeout.to_std())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
