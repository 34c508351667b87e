//! Shared helpers for the real-QEMU tests: the tiny guest, serial log parsing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vm::{detect_accel, AccelChoice, AccelMode, GuestDef, HostProbe, TinyGuest};

static BUILD: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Build (or reuse) the tiny guest with scripts/guest/build-tiny-guest.sh.
/// Panics naming the Debian packages when something is missing.
pub fn tiny_guest() -> PathBuf {
    let mut built = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("qemu-system-x86_64 is missing: apt-get install qemu-system-x86");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest");
    let res = std::process::Command::new("sh")
        .arg(repo.join("scripts/guest/build-tiny-guest.sh"))
        .arg(&out)
        .output()
        .expect("run sh");
    assert!(
        res.status.success(),
        "building the tiny guest failed (needs Debian packages linux-image-cloud-amd64 busybox-static cpio): {}",
        String::from_utf8_lossy(&res.stderr)
    );
    *built = Some(out.clone());
    out
}

/// A fresh directory for one test.
pub fn test_dir(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 1 MiB blank raw disk.
pub fn blank_disk(dir: &Path) -> PathBuf {
    let p = dir.join("disk.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(1 << 20).unwrap();
    p
}

/// The tiny guest as a definition, its files in `dir/NAME.*`.
pub fn guest_def(name: &str, dir: &Path, disk: &Path) -> GuestDef {
    let out = tiny_guest();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let t = TinyGuest::build(&repo.join("scripts/guest/build-tiny-guest.sh"), &out).unwrap();
    t.guest_def(name, dir, disk)
}

/// The accelerator this host gets in auto mode.
pub fn auto_accel() -> AccelChoice {
    detect_accel(AccelMode::Auto, &HostProbe::gather())
}

/// Every `counter N` value in a serial log, in order.
pub fn counters(serial: &Path) -> Vec<u64> {
    vm::serial_counters(serial)
}

/// The `resumed from N` values in a serial log.
pub fn resumed(serial: &Path) -> Vec<u64> {
    vm::serial_resumed(serial)
}

/// Wait until the log shows a counter above `n`; returns it.
pub fn wait_counter_above(serial: &Path, n: u64, within: Duration) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(&c) = counters(serial).last() {
            if c > n {
                return c;
            }
        }
        assert!(
            start.elapsed() < within,
            "no counter above {n} in {} within {within:?}; log tail: {:?}",
            serial.display(),
            String::from_utf8_lossy(&std::fs::read(serial).unwrap_or_default())
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Median of a list.
pub fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Kills the QEMUs of the given pidfiles when dropped (a failed test leaves no daemon behind).
pub struct Reaper(pub Vec<PathBuf>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Some(pid) = std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&*p.to_string_lossy()) {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}
