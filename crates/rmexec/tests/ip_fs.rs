//! The `ip` agent inside a network namespace (netlab) and the `fs` agent on a
//! loop device with ext4. Needs root, iproute2, nftables (netlab), util-linux,
//! e2fsprogs and psmisc.

mod common;

use common::*;
use netlab::Lab;
use rmexec::{ExecResult, Executor, Op};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn addrs_in(lab: &Lab, dev: &str) -> String {
    let out = lab
        .exec(0, &["ip", "-o", "addr", "show", "dev", dev])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn floating_ip_in_a_namespace() {
    require_root();
    let lab = Lab::create(&["n1"], 1).expect("netlab (needs root, iproute2, nftables)");
    let ex = Executor::new().with_netns(lab.node_ns(0));
    let ring = Lab::ring_interface(0);
    // No prefix given: it takes the /24 of ring0's 192.168.3.71/24.
    let vip = vec![step("ip", "192.168.3.200", &[("address", "192.168.3.200")])];

    let r = ex.run(&status("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::StatusFailed, "{r}");

    let t0 = Instant::now();
    let r = ex.run(&start("web", vip.clone())).await;
    let took = t0.elapsed();
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(
        addrs_in(&lab, &ring).contains("192.168.3.200/24"),
        "{}",
        addrs_in(&lab, &ring)
    );
    assert!(
        r.steps[0].commands.iter().any(|c| c
            .command
            .contains(&format!("ip netns exec {}", lab.node_ns(0)))
            && c.command
                .ends_with(&format!("addr add 192.168.3.200/24 dev {ring}"))
            && c.code == Some(0)),
        "{r}"
    );
    // The host's own namespace never sees it.
    let host = Command::new("ip").args(["-o", "addr"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("192.168.3.200"));
    eprintln!("ip start took {took:?}");

    // Idempotent start; status ok.
    let r = ex.run(&start("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(addrs_in(&lab, &ring).matches("192.168.3.200").count(), 1);
    assert_eq!(
        ex.run(&status("web", vip.clone())).await.result,
        ExecResult::StatusOk
    );

    // Link down: status fails (monitor_link defaults to 1); not with monitor_link=0.
    lab.set_ring(0, 0, false).unwrap();
    let r = ex.run(&status("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::StatusFailed, "{r}");
    assert!(r.to_string().contains("is down"), "{r}");
    let nolink = vec![step(
        "ip",
        "192.168.3.200",
        &[("address", "192.168.3.200/24"), ("monitor_link", "0")],
    )];
    assert_eq!(
        ex.run(&status("web", nolink.clone())).await.result,
        ExecResult::StatusOk
    );
    lab.set_ring(0, 0, true).unwrap();
    let t0 = Instant::now();
    loop {
        let r = ex.run(&status("web", vip.clone())).await;
        if r.result == ExecResult::StatusOk {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "link never came back: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stop removes it; stopping again is fine.
    let r = ex.run(&stop("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");
    assert!(!addrs_in(&lab, &ring).contains("192.168.3.200"));
    assert!(
        addrs_in(&lab, &ring).contains("192.168.3.71/24"),
        "the node's own address stays"
    );
    let r = ex.run(&stop("web", vip.clone())).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");

    // An explicit prefix is used as given.
    let r = ex
        .run(&start(
            "web",
            vec![step("ip", "v2", &[("address", "192.168.3.201/25")])],
        ))
        .await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert!(addrs_in(&lab, &ring).contains("192.168.3.201/25"));

    // An address in no local subnet is refused with the reason.
    let r = ex
        .run(&start(
            "web",
            vec![step("ip", "x", &[("address", "10.9.9.9")])],
        ))
        .await;
    assert_eq!(r.result, ExecResult::StartFailed);
    assert!(
        r.first_error()
            .unwrap()
            .to_string()
            .contains("no interface has a subnet containing 10.9.9.9"),
        "{r}"
    );
    drop(lab);
}

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
