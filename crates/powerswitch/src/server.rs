//! The power switch: outlets running process groups, and its socket servers.

use crate::protocol::{PowerState, Request, Response, MAX_LINE};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long `off` keeps killing before it reports failure.
const OFF_DEADLINE: Duration = Duration::from_secs(5);

/// One outlet's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutletConfig {
    /// The outlet's name (what `port=`/`plug=` names); no whitespace, no `=`.
    pub name: String,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Append the command's stdout and stderr to this file (else /dev/null).
    pub log: Option<PathBuf>,
    /// The outlet's machine is this network namespace (`/run/netns/NAME`):
    /// off also kills every process left in it, as a real power cut takes
    /// daemons that left the outlet's process group (a QEMU started with
    /// `-daemonize` calls setsid).
    pub netns: Option<String>,
}

impl OutletConfig {
    /// An outlet running `sh -c <command>`.
    pub fn shell(name: &str, command: &str) -> Self {
        OutletConfig {
            name: name.into(),
            argv: vec!["/bin/sh".into(), "-c".into(), command.into()],
            env: Vec::new(),
            log: None,
            netns: None,
        }
    }
}

/// Errors from the power switch.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// No such outlet.
    #[error("no outlet {0:?}; LIST shows the outlets")]
    UnknownOutlet(String),
    /// Bad outlet configuration.
    #[error("outlet {name:?}: {reason}")]
    BadOutlet {
        /// The outlet.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The command could not start.
    #[error("outlet {name:?}: cannot start {program:?}: {source}")]
    Start {
        /// The outlet.
        name: String,
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Processes of the group survived SIGKILL.
    #[error(
        "outlet {name:?}: processes {pids:?} of group {pgid} survived SIGKILL for {OFF_DEADLINE:?}"
    )]
    Survivors {
        /// The outlet.
        name: String,
        /// The process group.
        pgid: i32,
        /// The survivors.
        pids: Vec<i32>,
    },
    /// Socket trouble.
    #[error("power switch socket {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// TCP only on loopback: anyone who reaches it can power nodes off.
    #[error(
        "refusing to listen on {0}: the power switch has no authentication, use a loopback address"
    )]
    NotLoopback(SocketAddr),
}

/// An outlet's state, for LIST and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutletStatus {
    /// The outlet.
    pub name: String,
    /// Power.
    pub state: PowerState,
    /// The process group (= leader pid) while on.
    pub pgid: Option<i32>,
    /// Whether the leader process has exited by itself while the outlet is on.
    pub exited: bool,
    /// Times turned on.
    pub starts: u32,
}

struct Running {
    pgid: i32,
    reaper: JoinHandle<std::io::Result<std::process::ExitStatus>>,
}

struct Outlet {
    cfg: OutletConfig,
    running: Option<Running>,
    starts: u32,
}

impl Drop for Outlet {
    /// A switch that goes away takes its outlets' power with it.
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            let _ = killpg(Pid::from_raw(r.pgid), Signal::SIGKILL);
        }
    }
}

/// The power switch. Cheap to clone (shared state). Dropping the last clone kills every running outlet.
#[derive(Clone)]
pub struct PowerSwitch {
    outlets: Arc<Mutex<BTreeMap<String, Outlet>>>,
}

/// Pids of live (non-zombie) processes whose process group is `pgid`, from /proc.
/// The network namespace `/run/netns/NAME` as the inode `/proc/PID/ns/net` links to.
fn netns_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

/// Live (not zombie) processes of group `pgid`, and when `netns` is given,
/// every live process in that network namespace too.
fn group_members(pgid: i32, netns: Option<u64>) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let net = netns.map(|ino| format!("net:[{ino}]"));
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After comm: state ppid pgrp ...
        if f.len() < 3 || f[0] == "Z" {
            continue;
        }
        let in_group = f[2].parse::<i32>().ok() == Some(pgid);
        let in_ns = net.as_ref().is_some_and(|n| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.as_os_str() == n.as_str())
        });
        if in_group || in_ns {
            out.push(pid);
        }
    }
    out
}

/// SIGKILL the group and, one by one, the namespace's other processes.
fn kill_machine(pgid: i32, left: &[i32]) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    for pid in left {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

impl PowerSwitch {
    /// A switch with these outlets, all off.
    pub fn new(outlets: Vec<OutletConfig>) -> Result<Self, SwitchError> {
        let mut map = BTreeMap::new();
        for cfg in outlets {
            if cfg.name.is_empty() || cfg.name.contains(|c: char| c.is_whitespace() || c == '=') {
                return Err(SwitchError::BadOutlet {
                    name: cfg.name,
                    reason: "names must be non-empty, without spaces or '='".into(),
                });
            }
            if cfg.argv.is_empty() {
                return Err(SwitchError::BadOutlet {
                    name: cfg.name,
                    reason: "no command".into(),
                });
            }
            if map.contains_key(&cfg.name) {
                return Err(SwitchError::BadOutlet {
                    name: cfg.name,
                    reason: "defined twice".into(),
                });
            }
            map.insert(
                cfg.name.clone(),
                Outlet {
                    cfg,
                    running: None,
                    starts: 0,
                },
            );
        }
        Ok(PowerSwitch {
            outlets: Arc::new(Mutex::new(map)),
        })
    }

    /// Turns every outlet on.
    pub async fn all_on(&self) -> Result<(), SwitchError> {
        let names: Vec<String> = self.outlets.lock().await.keys().cloned().collect();
        for n in names {
            self.on(&n).await?;
        }
        Ok(())
    }

    /// Starts the outlet's command in a new process group (no-op when already on).
    pub async fn on(&self, name: &str) -> Result<PowerState, SwitchError> {
        let mut outlets = self.outlets.lock().await;
        let o = outlets
            .get_mut(name)
            .ok_or_else(|| SwitchError::UnknownOutlet(name.into()))?;
        if o.running.is_some() {
            return Ok(PowerState::On);
        }
        let (out, err) = match &o.cfg.log {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| SwitchError::Start {
                        name: name.into(),
                        program: p.display().to_string(),
                        source: e,
                    })?;
                let f2 = f.try_clone().map_err(|e| SwitchError::Start {
                    name: name.into(),
                    program: p.display().to_string(),
                    source: e,
                })?;
                (Stdio::from(f), Stdio::from(f2))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let mut cmd = tokio::process::Command::new(&o.cfg.argv[0]);
        cmd.args(&o.cfg.argv[1..])
            .envs(o.cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| SwitchError::Start {
            name: name.into(),
            program: o.cfg.argv[0].clone(),
            source: e,
        })?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let oname = name.to_string();
        let reaper = tokio::spawn(async move {
            let r = child.wait().await;
            info!(outlet = %oname, pgid, status = ?r, "outlet process exited");
            r
        });
        o.running = Some(Running { pgid, reaper });
        o.starts += 1;
        info!(outlet = name, pgid, "outlet ON");
        Ok(PowerState::On)
    }

    /// SIGKILLs the outlet's whole process group and waits until none of it is left. Stays off.
    pub async fn off(&self, name: &str) -> Result<PowerState, SwitchError> {
        let mut outlets = self.outlets.lock().await;
        let o = outlets
            .get_mut(name)
            .ok_or_else(|| SwitchError::UnknownOutlet(name.into()))?;
        let Some(run) = o.running.take() else {
            return Ok(PowerState::Off);
        };
        let t0 = Instant::now();
        let pgid = run.pgid;
        let netns = o.cfg.netns.as_deref().and_then(netns_inode);
        kill_machine(pgid, &group_members(pgid, netns));
        let _ = tokio::time::timeout(OFF_DEADLINE, run.reaper).await;
        loop {
            let left = group_members(pgid, netns);
            if left.is_empty() {
                break;
            }
            if t0.elapsed() > OFF_DEADLINE {
                warn!(outlet = name, pgid, ?left, "processes survived SIGKILL");
                return Err(SwitchError::Survivors {
                    name: name.into(),
                    pgid,
                    pids: left,
                });
            }
            kill_machine(pgid, &left);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(outlet = name, pgid, took = ?t0.elapsed(), "outlet OFF: process group gone");
        Ok(PowerState::Off)
    }

    /// Off, then on.
    pub async fn reboot(&self, name: &str) -> Result<PowerState, SwitchError> {
        self.off(name).await?;
        info!(outlet = name, "outlet REBOOT");
        self.on(name).await
    }

    /// Power state.
    pub async fn status(&self, name: &str) -> Result<PowerState, SwitchError> {
        let outlets = self.outlets.lock().await;
        let o = outlets
            .get(name)
            .ok_or_else(|| SwitchError::UnknownOutlet(name.into()))?;
        Ok(if o.running.is_some() {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    /// Every outlet's status, by name.
    pub async fn list(&self) -> Vec<OutletStatus> {
        let outlets = self.outlets.lock().await;
        outlets
            .values()
            .map(|o| OutletStatus {
                name: o.cfg.name.clone(),
                state: if o.running.is_some() {
                    PowerState::On
                } else {
                    PowerState::Off
                },
                pgid: o.running.as_ref().map(|r| r.pgid),
                exited: o.running.as_ref().is_some_and(|r| r.reaper.is_finished()),
                starts: o.starts,
            })
            .collect()
    }

    /// Turns every outlet off (shutdown).
    pub async fn all_off(&self) {
        let names: Vec<String> = self.outlets.lock().await.keys().cloned().collect();
        for n in names {
            if let Err(e) = self.off(&n).await {
                warn!(error = %e, "off at shutdown failed");
            }
        }
    }

    /// Executes one protocol request.
    pub async fn execute(&self, req: Request) -> Response {
        let r = match &req {
            Request::On(n) => self.on(n).await,
            Request::Off(n) => self.off(n).await,
            Request::Reboot(n) => self.reboot(n).await,
            Request::Status(n) => self.status(n).await,
            Request::List => {
                return Response::List(
                    self.list()
                        .await
                        .into_iter()
                        .map(|s| (s.name, s.state))
                        .collect(),
                )
            }
        };
        match r {
            Ok(s) => Response::State(s),
            Err(e) => Response::Err(e.to_string()),
        }
    }

    async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let (r, mut w) = tokio::io::split(stream);
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            let mut limited = (&mut r).take(MAX_LINE as u64 + 1);
            match limited.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.len() > MAX_LINE {
                let _ = w
                    .write_all(format!("ERR request longer than {MAX_LINE} bytes\n").as_bytes())
                    .await;
                return;
            }
            let text = String::from_utf8_lossy(&line);
            let resp = match Request::parse(text.trim()) {
                Ok(req) => {
                    info!(request = %req, "power switch request");
                    self.execute(req).await
                }
                Err(e) => Response::Err(e),
            };
            if w.write_all(format!("{resp}\n").as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

use tokio::io::AsyncReadExt;

/// Serves the protocol on a Unix socket at `path` (replacing a stale socket file) until the task is dropped.
pub async fn serve_unix(switch: PowerSwitch, path: &Path) -> Result<JoinHandle<()>, SwitchError> {
    let addr = path.display().to_string();
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| SwitchError::Listen {
            addr: addr.clone(),
            source: e,
        })?;
    }
    let l = UnixListener::bind(path).map_err(|e| SwitchError::Listen {
        addr: addr.clone(),
        source: e,
    })?;
    info!(socket = %addr, "power switch listening");
    Ok(tokio::spawn(async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(switch.clone().serve_conn(s));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}

/// Serves the protocol on a loopback TCP address (port 0 picks one); returns the bound address.
pub async fn serve_tcp(
    switch: PowerSwitch,
    addr: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), SwitchError> {
    if !addr.ip().is_loopback() {
        return Err(SwitchError::NotLoopback(addr));
    }
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| SwitchError::Listen {
            addr: addr.to_string(),
            source: e,
        })?;
    let bound = l.local_addr().map_err(|e| SwitchError::Listen {
        addr: addr.to_string(),
        source: e,
    })?;
    info!(%bound, "power switch listening on TCP");
    Ok((
        bound,
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(switch.clone().serve_conn(s));
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }),
    ))
}
