//! Run one program in its own process group, with stdin, bounded capture and a timeout.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// What to run.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// The program (a resolved path).
    pub program: PathBuf,
    /// Arguments after argv\[0\] (never secrets).
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Text written to stdin, then stdin is closed. May carry secrets: never logged.
    pub stdin: Option<String>,
    /// Kill the whole process group after this long.
    pub timeout: Duration,
    /// Keep at most this many bytes of stdout and of stderr each.
    pub output_limit: usize,
    /// Values to replace with `***` in captured output.
    pub scrub: Vec<String>,
}

impl ProcessSpec {
    /// A spec with no arguments, no stdin, 64 KiB capture limit.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        ProcessSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout,
            output_limit: 64 * 1024,
            scrub: Vec::new(),
        }
    }
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Captured stdout (lossy UTF-8, scrubbed, bounded).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8, scrubbed, bounded).
    pub stderr: String,
    /// True when output beyond the limit was discarded.
    pub truncated: bool,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

/// Why a process could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program does not exist.
    #[error("{program}: not found")]
    NotFound {
        /// The program.
        program: PathBuf,
    },
    /// The program exists but may not be executed.
    #[error("{program}: permission denied (is it executable? chmod +x)")]
    PermissionDenied {
        /// The program.
        program: PathBuf,
    },
    /// The kernel refused the file as a program.
    #[error("{program}: not an executable program (exec format error; a script needs a #! line)")]
    ExecFormat {
        /// The program.
        program: PathBuf,
    },
    /// Another spawn or I/O failure.
    #[error("{program}: {source}")]
    Io {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran past its timeout; its whole process group was killed.
    #[error("{program}: no exit within {timeout:?}; killed its process group")]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The timeout.
        timeout: Duration,
        /// What it printed to stderr before being killed.
        stderr: String,
    },
}

/// Looks a program name up: a name with a `/` is used as is, else the directories in `search` are tried in order.
pub fn find_program(name: &str, search: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.exists().then_some(p);
    }
    search.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn scrub(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        t = t.replace(s.as_str(), "***");
    }
    t
}

async fn read_bounded<R: AsyncRead + Unpin>(mut r: R, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(out.len());
                if n > room {
                    truncated = true;
                }
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (out, truncated)
}

fn kill_group(pgid: u32) {
    if let Ok(p) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Runs `spec` to completion or timeout. A non-zero exit is an `Ok` output: the caller interprets codes.
pub async fn run_process(spec: &ProcessSpec) -> Result<ProcessOutput, ProcessError> {
    let program = spec.program.clone();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProcessError::NotFound {
            program: program.clone(),
        },
        std::io::ErrorKind::PermissionDenied => ProcessError::PermissionDenied {
            program: program.clone(),
        },
        _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => ProcessError::ExecFormat {
            program: program.clone(),
        },
        _ => ProcessError::Io {
            program: program.clone(),
            source: e,
        },
    })?;
    let pgid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let limit = spec.output_limit;
    let out_task = tokio::spawn(read_bounded(stdout, limit));
    let err_task = tokio::spawn(read_bounded(stderr, limit));
    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), spec.stdin.clone()) {
        // The agent may exit without reading: a broken pipe is not our error.
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let waited = tokio::time::timeout(spec.timeout, child.wait()).await;
    let status = match waited {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            kill_group(pgid);
            return Err(ProcessError::Io { program, source: e });
        }
        Err(_) => {
            kill_group(pgid);
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let stderr = match tokio::time::timeout(Duration::from_millis(500), err_task).await {
                Ok(Ok((b, _))) => scrub(&String::from_utf8_lossy(&b), &spec.scrub),
                _ => String::new(),
            };
            out_task.abort();
            return Err(ProcessError::Timeout {
                program,
                timeout: spec.timeout,
                stderr,
            });
        }
    };
    let elapsed = started.elapsed();
    // Children left behind holding the pipes open: give them a moment, then kill the group.
    let grace = Duration::from_millis(300);
    let collect = async { (out_task.await, err_task.await) };
    let (o, e) = match tokio::time::timeout(grace, collect).await {
        Ok((o, e)) => (o.unwrap_or_default(), e.unwrap_or_default()),
        Err(_) => {
            kill_group(pgid);
            (
                Default::default(),
                (
                    b"(output lost: the agent left children holding its pipes; killed them)"
                        .to_vec(),
                    true,
                ),
            )
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(ProcessOutput {
        code: status.code(),
        signal: status.signal(),
        stdout: scrub(&String::from_utf8_lossy(&o.0), &spec.scrub),
        stderr: scrub(&String::from_utf8_lossy(&e.0), &spec.scrub),
        truncated: o.1 || e.1,
        elapsed,
    })
}

/// The default search path for agents: fence agents live in /usr/sbin on Debian.
pub fn default_search_path() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"] {
        let d = Path::new(d).to_path_buf();
        if !v.contains(&d) {
            v.push(d);
        }
    }
    v
}
