//! Running one command for an agent, optionally inside a network namespace, and logging it.

use crate::exec::StepError;
use agents::process::default_search_path;
use agents::{find_program, ProcessError, ProcessOutput};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

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
        let started = std::time::Instant::now();
        let res = run_agent(&path, &args, &cmd.env, cmd.timeout, &cmd.scrub).await;
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

/// Keep at most this much of stdout and of stderr.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// After the agent exits, wait this long for its output pipes to close.
const PIPE_GRACE: Duration = Duration::from_millis(50);

fn scrub(text: &[u8], secrets: &[String]) -> String {
    let mut t = String::from_utf8_lossy(text).into_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        t = t.replace(s.as_str(), "***");
    }
    t
}

async fn read_into<R: AsyncRead + Unpin>(mut r: R, buf: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(b.len());
                b.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

fn kill_group(pgid: Option<u32>) {
    use nix::sys::signal::{killpg, Signal};
    if let Some(p) = pgid.and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Runs an agent in its own process group with a timeout, as a cluster
/// resource manager must: on timeout the whole group is killed; after a normal
/// exit nothing is killed and the output pipes are closed after a short grace,
/// so a daemon the agent started (even with a bare `&`, keeping its stdout)
/// keeps running. (agents::run_process kills such leftovers: right for fence
/// agents, wrong for init scripts that start services.)
async fn run_agent(
    path: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
    secrets: &[String],
) -> Result<ProcessOutput, ProcessError> {
    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new(path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let program = path.to_path_buf();
            match e.kind() {
                std::io::ErrorKind::NotFound => ProcessError::NotFound { program },
                std::io::ErrorKind::PermissionDenied => ProcessError::PermissionDenied { program },
                _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => {
                    ProcessError::ExecFormat { program }
                }
                _ => ProcessError::Io { program, source: e },
            }
        })?;
    let pgid = child.id();
    let out_buf = Arc::new(Mutex::new(Vec::new()));
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(o) = child.stdout.take() {
        readers.push(tokio::spawn(read_into(o, out_buf.clone())));
    }
    if let Some(e) = child.stderr.take() {
        readers.push(tokio::spawn(read_into(e, err_buf.clone())));
    }
    let take =
        |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            kill_group(pgid);
            readers.iter().for_each(|r| r.abort());
            return Err(ProcessError::Io {
                program: path.to_path_buf(),
                source: e,
            });
        }
        Err(_) => {
            kill_group(pgid);
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let _ = tokio::time::timeout(PIPE_GRACE, async {
                for r in &mut readers {
                    let _ = r.await;
                }
            })
            .await;
            readers.iter().for_each(|r| r.abort());
            return Err(ProcessError::Timeout {
                program: path.to_path_buf(),
                timeout,
                stderr: scrub(&take(&err_buf), secrets),
            });
        }
    };
    let elapsed = started.elapsed();
    // Usually the pipes close with the agent; a daemon it left behind may hold
    // them: stop reading (it gets EPIPE if it ever writes) but let it live.
    let _ = tokio::time::timeout(PIPE_GRACE, async {
        for r in &mut readers {
            let _ = r.await;
        }
    })
    .await;
    readers.iter().for_each(|r| r.abort());
    use std::os::unix::process::ExitStatusExt;
    let (o, e) = (take(&out_buf), take(&err_buf));
    Ok(ProcessOutput {
        code: status.code(),
        signal: status.signal(),
        truncated: o.len() >= OUTPUT_LIMIT || e.len() >= OUTPUT_LIMIT,
        stdout: scrub(&o, secrets),
        stderr: scrub(&e, secrets),
        elapsed,
    })
}
