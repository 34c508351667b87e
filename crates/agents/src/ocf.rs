//! OCF resource agents and LSB init scripts, on the same process machinery.
//!
//! OCF: the agent is `<OCF_ROOT>/resource.d/<provider>/<type>`, the action is
//! argv\[1\], instance parameters are `OCF_RESKEY_<name>` environment variables,
//! and the exit code means [`OcfStatus`].

use crate::process::{run_process, ProcessError, ProcessOutput, ProcessSpec};
use fence::AgentArgs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::info;

/// The conventional OCF root.
pub const DEFAULT_OCF_ROOT: &str = "/usr/lib/ocf";

/// OCF exit codes (resource-agent-api 1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OcfStatus {
    /// 0: success (monitor: running).
    Success,
    /// 1: generic error.
    ErrGeneric,
    /// 2: invalid arguments (invalid on this host: try elsewhere).
    ErrArgs,
    /// 3: action not implemented.
    Unimplemented,
    /// 4: insufficient permission.
    ErrPerm,
    /// 5: required software not installed.
    NotInstalled,
    /// 6: configuration invalid (do not retry anywhere).
    NotConfigured,
    /// 7: cleanly not running (monitor).
    NotRunning,
    /// 8: running as promoted.
    RunningPromoted,
    /// 9: failed as promoted.
    FailedPromoted,
    /// 190: running but degraded.
    Degraded,
    /// 191: promoted but degraded.
    DegradedPromoted,
    /// Any other code.
    Other(i32),
}

impl OcfStatus {
    /// Maps an exit code.
    pub fn from_code(c: i32) -> Self {
        match c {
            0 => Self::Success,
            1 => Self::ErrGeneric,
            2 => Self::ErrArgs,
            3 => Self::Unimplemented,
            4 => Self::ErrPerm,
            5 => Self::NotInstalled,
            6 => Self::NotConfigured,
            7 => Self::NotRunning,
            8 => Self::RunningPromoted,
            9 => Self::FailedPromoted,
            190 => Self::Degraded,
            191 => Self::DegradedPromoted,
            c => Self::Other(c),
        }
    }
}

/// LSB `status` exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LsbStatus {
    /// 0: running.
    Running,
    /// 1: dead, pid file exists.
    DeadPidFile,
    /// 2: dead, lock file exists.
    DeadLockFile,
    /// 3: not running.
    NotRunning,
    /// 4 or anything else: unknown.
    Unknown(i32),
}

impl LsbStatus {
    /// Maps a `status` exit code.
    pub fn from_code(c: i32) -> Self {
        match c {
            0 => Self::Running,
            1 => Self::DeadPidFile,
            2 => Self::DeadLockFile,
            3 => Self::NotRunning,
            c => Self::Unknown(c),
        }
    }
}

/// Why a resource agent could not be run to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ResourceAgentError {
    /// The agent is missing or could not be started.
    #[error("resource agent {agent}: {source}; install it (Debian: resource-agents) or fix the resource's type/provider")]
    Start {
        /// The agent path.
        agent: String,
        /// The cause.
        source: ProcessError,
    },
    /// It hung past the timeout and was killed.
    #[error("resource agent {agent} action {action} hung for {timeout:?} and was killed")]
    Timeout {
        /// The agent path.
        agent: String,
        /// The action.
        action: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Killed by a signal.
    #[error("resource agent {agent} action {action} was killed by signal {signal}")]
    Signaled {
        /// The agent path.
        agent: String,
        /// The action.
        action: String,
        /// The signal.
        signal: i32,
    },
}

/// An OCF agent: `<root>/resource.d/<provider>/<kind>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcfAgent {
    /// OCF_ROOT.
    pub root: PathBuf,
    /// Provider (`heartbeat`).
    pub provider: String,
    /// Type (`Dummy`, `IPaddr2`).
    pub kind: String,
}

/// One OCF call's result.
#[derive(Clone, Debug)]
pub struct OcfResult {
    /// The mapped exit code.
    pub status: OcfStatus,
    /// Raw output.
    pub output: ProcessOutput,
}

impl OcfAgent {
    /// `ocf:<provider>:<kind>` under [`DEFAULT_OCF_ROOT`].
    pub fn new(provider: &str, kind: &str) -> Self {
        OcfAgent {
            root: PathBuf::from(DEFAULT_OCF_ROOT),
            provider: provider.into(),
            kind: kind.into(),
        }
    }

    /// The agent's path.
    pub fn path(&self) -> PathBuf {
        self.root
            .join("resource.d")
            .join(&self.provider)
            .join(&self.kind)
    }

    /// Runs `action` for resource `instance` with instance parameters `params`.
    /// `check_level` sets OCF_CHECK_LEVEL for monitor/validate-all.
    pub async fn run(
        &self,
        action: &str,
        instance: &str,
        params: &AgentArgs,
        timeout: Duration,
        check_level: Option<u32>,
    ) -> Result<OcfResult, ResourceAgentError> {
        let path = self.path();
        let mut spec = ProcessSpec::new(&path, timeout);
        spec.args = vec![action.to_string()];
        let mut env = vec![
            ("OCF_ROOT".to_string(), self.root.display().to_string()),
            (
                "OCF_FUNCTIONS_DIR".to_string(),
                self.root.join("lib/heartbeat").display().to_string(),
            ),
            ("OCF_RA_VERSION_MAJOR".to_string(), "1".to_string()),
            ("OCF_RA_VERSION_MINOR".to_string(), "1".to_string()),
            ("OCF_RESOURCE_INSTANCE".to_string(), instance.to_string()),
            ("OCF_RESOURCE_TYPE".to_string(), self.kind.clone()),
            ("OCF_RESOURCE_PROVIDER".to_string(), self.provider.clone()),
            (
                "OCF_RESKEY_CRM_meta_timeout".to_string(),
                timeout.as_millis().to_string(),
            ),
        ];
        if let Some(l) = check_level {
            env.push(("OCF_CHECK_LEVEL".into(), l.to_string()));
        }
        for (k, v) in params.iter_exposed() {
            env.push((format!("OCF_RESKEY_{k}"), v.to_string()));
        }
        spec.env = env;
        spec.scrub = params
            .iter_exposed()
            .filter(|(k, v)| fence::is_secret_key(k) && v.len() >= 3)
            .map(|(_, v)| v.to_string())
            .collect();
        info!(agent = %path.display(), action, instance, %params, "running OCF agent");
        let output = run_any(&path, action, &spec).await?;
        Ok(OcfResult {
            status: OcfStatus::from_code(output.code.unwrap_or(1)),
            output,
        })
    }
}

async fn run_any(
    path: &Path,
    action: &str,
    spec: &ProcessSpec,
) -> Result<ProcessOutput, ResourceAgentError> {
    let agent = path.display().to_string();
    let out = run_process(spec).await.map_err(|e| match e {
        ProcessError::Timeout { timeout, .. } => ResourceAgentError::Timeout {
            agent: agent.clone(),
            action: action.into(),
            timeout,
        },
        source => ResourceAgentError::Start {
            agent: agent.clone(),
            source,
        },
    })?;
    if out.code.is_none() {
        return Err(ResourceAgentError::Signaled {
            agent,
            action: action.into(),
            signal: out.signal.unwrap_or(0),
        });
    }
    Ok(out)
}

/// Runs an LSB init script action (`start`, `stop`, `status`...). Returns the exit code and output;
/// for `status` map the code with [`LsbStatus::from_code`].
pub async fn run_lsb(
    script: &Path,
    action: &str,
    timeout: Duration,
) -> Result<(i32, ProcessOutput), ResourceAgentError> {
    let mut spec = ProcessSpec::new(script, timeout);
    spec.args = vec![action.to_string()];
    info!(script = %script.display(), action, "running LSB script");
    let out = run_any(script, action, &spec).await?;
    Ok((out.code.unwrap_or(1), out))
}
