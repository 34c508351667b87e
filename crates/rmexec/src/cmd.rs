//! Running one command for an agent, optionally inside a network namespace, and logging it.

use crate::exec::StepError;
use agents::process::default_search_path;
use agents::{find_program, run_process, ProcessError, ProcessOutput, ProcessSpec};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// One command the executor ran. The command line never carries secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CmdLog {
    /// The command line as run (including any `ip netns exec NAME` prefix).
    pub command: String,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Killing signal, if any.
    pub signal: Option<i32>,
    /// True when it hung past its timeout and its process group was killed.
    pub timed_out: bool,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// Last line of stderr, or why it could not run (scrubbed of secrets).
    pub note: String,
}

impl std::fmt::Display for CmdLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> ", self.command)?;
        match (self.code, self.signal, self.timed_out) {
            (_, _, true) => write!(f, "timed out, killed")?,
            (Some(c), _, _) => write!(f, "exit {c}")?,
            (None, Some(s), _) => write!(f, "signal {s}")?,
            _ => write!(f, "not run")?,
        }
        write!(f, " ({} ms)", self.elapsed_ms)?;
        if !self.note.is_empty() {
            write!(f, ": {}", self.note)?;
        }
        Ok(())
    }
}

/// A command to run.
pub(crate) struct Cmd {
    /// Program name or path.
    pub program: String,
    /// Arguments (never secrets).
    pub args: Vec<String>,
    /// Extra environment (may carry secrets).
    pub env: Vec<(String, String)>,
    /// Values to scrub from output.
    pub scrub: Vec<String>,
    /// Timeout.
    pub timeout: Duration,
    /// Run inside the executor's network namespace, if it has one.
    pub in_netns: bool,
    /// Debian package to name when the program is missing.
    pub package: &'static str,
}

impl Cmd {
    /// A command with arguments, no environment, not in the namespace.
    pub fn new(program: &str, args: &[&str], timeout: Duration, package: &'static str) -> Self {
        Cmd {
            program: program.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            scrub: Vec::new(),
            timeout,
            in_netns: false,
            package,
        }
    }

    /// Run it inside the executor's network namespace.
    pub fn netns(mut self) -> Self {
        self.in_netns = true;
        self
    }
}

/// Runs commands for one step and keeps their log.
pub(crate) struct Runner<'a> {
    netns: Option<&'a str>,
    pub log: Vec<CmdLog>,
}

fn resolve(name: &str, package: &str) -> Result<PathBuf, StepError> {
    find_program(name, &default_search_path()).ok_or_else(|| StepError::Command {
        command: name.to_string(),
        reason: format!("not found: install it (Debian package {package})"),
    })
}

fn last_line(s: &str) -> String {
    let l = s.trim().lines().last().unwrap_or("").trim();
    l.chars().take(300).collect()
}

impl<'a> Runner<'a> {
    /// A runner that wraps namespace commands in `ip netns exec netns`.
    pub fn new(netns: Option<&'a str>) -> Self {
        Runner {
            netns,
            log: Vec::new(),
        }
    }

    /// Adds a note line to the log (no command).
    pub fn note(&mut self, text: impl Into<String>) {
        self.log.push(CmdLog {
            command: "#".into(),
            code: None,
            signal: None,
            timed_out: false,
            elapsed_ms: 0,
            note: text.into(),
        });
    }

    /// Runs `cmd`; any exit code is `Ok` (the caller interprets it). A missing
    /// program, a hang (process group killed) or a spawn failure is an error.
    pub async fn run(&mut self, cmd: Cmd) -> Result<ProcessOutput, StepError> {
        let program = resolve(&cmd.program, cmd.package)?;
        let (path, args, shown) = match (self.netns, cmd.in_netns) {
            (Some(ns), true) => {
                let ip = resolve("ip", "iproute2")?;
                let mut args = vec![
                    "netns".to_string(),
                    "exec".to_string(),
                    ns.to_string(),
                    program.display().to_string(),
                ];
                args.extend(cmd.args.iter().cloned());
                let shown = format!("ip {}", args.join(" "));
                (ip, args, shown)
            }
            _ => {
                let shown = std::iter::once(program.display().to_string())
                    .chain(cmd.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ");
                (program, cmd.args.clone(), shown)
            }
        };
        let mut spec = ProcessSpec::new(path, cmd.timeout);
        spec.args = args;
        spec.env = cmd.env;
        spec.scrub = cmd.scrub;
        let started = std::time::Instant::now();
        let res = run_process(&spec).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match res {
            Ok(out) => {
                self.log.push(CmdLog {
                    command: shown,
                    code: out.code,
                    signal: out.signal,
                    timed_out: false,
                    elapsed_ms,
                    note: if out.code == Some(0) {
                        String::new()
                    } else {
                        last_line(&out.stderr)
                    },
                });
                Ok(out)
            }
            Err(ProcessError::Timeout {
                timeout, stderr, ..
            }) => {
                self.log.push(CmdLog {
                    command: shown.clone(),
                    code: None,
                    signal: Some(9),
                    timed_out: true,
                    elapsed_ms,
                    note: last_line(&stderr),
                });
                Err(StepError::Timeout {
                    command: shown,
                    timeout,
                })
            }
            Err(e) => {
                let reason = e.to_string();
                self.log.push(CmdLog {
                    command: shown.clone(),
                    code: None,
                    signal: None,
                    timed_out: false,
                    elapsed_ms,
                    note: reason.clone(),
                });
                Err(StepError::Command {
                    command: shown,
                    reason,
                })
            }
        }
    }

    /// Runs `cmd` and requires exit 0; else an error quoting its stderr.
    pub async fn run_ok(&mut self, cmd: Cmd) -> Result<ProcessOutput, StepError> {
        let out = self.run(cmd).await?;
        if out.code == Some(0) {
            return Ok(out);
        }
        let last = self.log.last().expect("just logged");
        Err(StepError::Command {
            command: last.command.clone(),
            reason: format!(
                "exit {}: {}",
                out.code.map_or("by signal".to_string(), |c| c.to_string()),
                last_line(&out.stderr)
            ),
        })
    }
}

/// True when `name` can be found on the search path.
pub(crate) fn have_program(name: &str) -> bool {
    find_program(name, &default_search_path()).is_some()
}
