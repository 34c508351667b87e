//! Process checks and signals by pid (the only unsafe code: `kill(2)`).

use std::path::Path;

/// Whether `pid` is a live (not zombie) process whose command line mentions `marker`
/// (the pidfile path, passed unescaped to `-pidfile`), so a recycled pid is not
/// mistaken for our QEMU.
pub(crate) fn alive(pid: i32, marker: &Path) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3, after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let marker = marker.to_string_lossy();
    String::from_utf8_lossy(&cmdline).contains(marker.as_ref())
}

/// Send `sig` to `pid`; errors (already gone) are ignored.
pub(crate) fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Read a pidfile.
pub(crate) fn read_pidfile(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
