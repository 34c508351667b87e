//! Heuristics: `sh -c PROGRAM`, exit status 0 is a pass.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `program` with `sh -c` in its own process group; a pass is exit
/// status 0 within `timeout`. On timeout the whole group is killed and the
/// run fails. Output is discarded (heuristics are commands like `ping -c1 -w1 GW`).
pub fn run(program: &str, timeout: Duration) -> bool {
    let child = Command::new("sh")
        .arg("-c")
        .arg(program)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start sh for a qdisk heuristic");
            return false;
        }
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() >= timeout => {
                let pgid = child.id() as libc::pid_t;
                // The group id is the child's pid (process_group(0)).
                let _ = nix_kill_group(pgid);
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(
                    program,
                    ?timeout,
                    "qdisk heuristic timed out and was killed"
                );
                return false;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return false,
        }
    }
}

#[allow(unsafe_code)]
fn nix_kill_group(pgid: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a
    // stale or foreign group id only makes it fail with ESRCH/EPERM.
    let r = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
