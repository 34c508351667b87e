//! The `fs` agent on a loop device with ext4. Needs root, util-linux,
//! e2fsprogs and psmisc.
//!
//! Kept in its own test binary: a process started with `ip netns exec` (as the
//! ip tests do) copies the mount table, and where `/` is not a shared mount
//! (containers) that copy pins a filesystem mounted at the time, so `fsck`
//! would find the device in use.

mod common;

use common::*;
use rmexec::{ExecResult, Executor, Op};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// A loop device with ext4, detached (and unmounted) on drop.
struct Loop {
    dev: String,
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Loop {
    fn new() -> Loop {
        require("/usr/sbin/mkfs.ext4", "e2fsprogs");
        require("/usr/sbin/losetup", "mount (util-linux)");
        require("/usr/bin/fuser", "psmisc");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let ok = |c: &mut Command| {
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        ok(Command::new("truncate").args(["-s", "32M"]).arg(&img));
        let dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(&img));
        ok(Command::new("mkfs.ext4").args(["-q", "-F", &dev]));
        let mnt = dir.path().join("mnt/data");
        Loop {
            dev,
            _dir: dir,
            mnt,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

fn mounted(mnt: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(mnt)
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn filesystem_on_a_loop_device() {
    require_root();
    let lp = Loop::new();
    let ex = Executor::new();
    let mnt = lp.mnt.to_str().unwrap();
    let fs = |force: &str| {
        vec![step(
            "fs",
            "data",
            &[
                ("device", lp.dev.as_str()),
                ("mountpoint", mnt),
                ("fstype", "ext4"),
                ("options", "noatime"),
                ("force_fsck", "1"),
                ("force_unmount", force),
            ],
        )]
    };
    assert_eq!(
        ex.run(&status("db", fs("0"))).await.result,
        ExecResult::StatusFailed
    );

    let t0 = Instant::now();
    let r = ex.run(&start("db", fs("0"))).await;
    eprintln!("fs start (fsck + mount) took {:?}", t0.elapsed());
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(mounted(&lp.mnt), "{r}");
    let cmds: Vec<&str> = r.steps[0]
        .commands
        .iter()
        .map(|c| c.command.as_str())
        .collect();
    assert!(
        cmds.iter().any(|c| c.contains("fsck -p -t ext4")),
        "{cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|c| c.ends_with(&format!("mount -t ext4 -o noatime {} {mnt}", lp.dev))),
        "{cmds:?}"
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mi.lines().any(|l| l.contains(mnt) && l.contains("noatime")));
    std::fs::write(lp.mnt.join("hello"), "world").unwrap();
    assert_eq!(
        ex.run(&status("db", fs("0"))).await.result,
        ExecResult::StatusOk
    );
    let r = ex.run(&start("db", fs("0"))).await;
    assert_eq!(r.result, ExecResult::Started, "idempotent start: {r}");

    // A process keeps the filesystem busy: a plain stop fails and says what to do ...
    let mut holder = Command::new("sleep")
        .arg("1000")
        .current_dir(&lp.mnt)
        .spawn()
        .unwrap();
    let r = ex.run(&stop("db", fs("0"))).await;
    assert_eq!(r.result, ExecResult::StopFailed, "{r}");
    assert!(r.to_string().contains("force_unmount"), "{r}");
    assert!(mounted(&lp.mnt));
    // ... and with force_unmount="1" the holder is killed and the unmount succeeds.
    let r = ex.run(&stop("db", fs("1"))).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");
    assert!(
        r.steps[0]
            .commands
            .iter()
            .any(|c| c.command.contains("fuser -k -m")),
        "{r}"
    );
    assert!(!mounted(&lp.mnt));
    let st = holder.wait().unwrap();
    assert!(!st.success(), "the holder was killed: {st:?}");
    assert_eq!(
        ex.run(&status("db", fs("0"))).await.result,
        ExecResult::StatusFailed
    );
    let r = ex.run(&stop("db", fs("0"))).await;
    assert_eq!(r.result, ExecResult::Stopped, "stop when stopped: {r}");

    // The data survived the unmount.
    let r = ex.run(&start("db", fs("0"))).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(
        std::fs::read_to_string(lp.mnt.join("hello")).unwrap(),
        "world"
    );
    let log = ex.run_step(&fs("0")[0], Op::Stop).await;
    assert!(log.ok(), "{log:?}");

    // The device named by UUID= (found with findfs when udev has no /dev/disk/by-uuid).
    let out = Command::new("blkid")
        .args(["-s", "UUID", "-o", "value", &lp.dev])
        .output()
        .unwrap();
    let uuid = format!("UUID={}", String::from_utf8_lossy(&out.stdout).trim());
    let by_uuid = vec![step(
        "fs",
        "data",
        &[("device", uuid.as_str()), ("mountpoint", mnt)],
    )];
    let r = ex.run(&start("db", by_uuid.clone())).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(mounted(&lp.mnt));
    assert_eq!(
        ex.run(&status("db", by_uuid.clone())).await.result,
        ExecResult::StatusOk
    );
    assert_eq!(
        ex.run(&stop("db", by_uuid.clone())).await.result,
        ExecResult::Stopped
    );
    assert!(!mounted(&lp.mnt));

    // A device that does not exist is a clear error.
    let r = ex
        .run(&start(
            "db",
            vec![step(
                "fs",
                "x",
                &[("device", "/dev/nonexistent9"), ("mountpoint", mnt)],
            )],
        ))
        .await;
    assert_eq!(r.result, ExecResult::StartFailed);
    assert!(r.to_string().contains("does not exist"), "{r}");
}
