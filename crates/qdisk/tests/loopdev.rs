//! The quorum disk on a real block device (a loop device) with O_DIRECT.
//!
//! Opt-in, because it needs root and a kernel with loop devices:
//! `QUORATE_TEST_LOOP=1 cargo test -p qdisk --test loopdev` (losetup is in
//! util-linux's `mount` package on Debian).

use base::{Duration, NodeId};
use qdisk::{format, list, DriverOptions, QdiskHandle};
use quorum::QdiskConfig;
use std::process::Command;

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn two_nodes_on_a_loop_device_with_direct_io() {
    if std::env::var_os("QUORATE_TEST_LOOP").is_none() {
        eprintln!("skipped: set QUORATE_TEST_LOOP=1 (needs root, losetup from package mount, loop devices)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show", "--direct-io=on"])
        .arg(&img)
        .output()
        .expect("losetup not found: install package mount (util-linux)");
    assert!(
        out.status.success(),
        "losetup failed (root and loop devices needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let path = std::path::PathBuf::from(&dev.0);
    format(&path, "alpha", "lun0").unwrap();
    let mut c = QdiskConfig::new("alpha");
    c.interval = Duration::from_millis(100);
    c.tko = 6;
    c.tko_up = Some(2);
    c.master_wait = Some(2);
    let opts = DriverOptions { direct_io: true };
    let h: Vec<QdiskHandle> = (1..=2)
        .map(|i| {
            QdiskHandle::spawn(
                &path,
                NodeId(i),
                qdisk::fresh_incarnation(),
                c.clone(),
                opts.clone(),
            )
            .unwrap()
        })
        .collect();
    for x in &h {
        x.set_membership(vec![NodeId(1), NodeId(2)]);
    }
    let t = std::time::Instant::now();
    let master = loop {
        let a: Vec<_> = h.iter().map(|x| x.status().available).collect();
        if a[0].is_some() && a[0] == a[1] {
            break a[0].unwrap();
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "no master: {:?}",
            h.iter().map(|x| x.status()).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let l = list(&path).unwrap();
    assert_eq!(l.header.label, "lun0");
    assert_eq!(l.nodes.len(), 2);
    let mut h = h;
    let other = h.remove((2 - master.0) as usize);
    h.pop().unwrap().stop();
    other.set_membership(vec![other.status().node_id]);
    let me = other.status().node_id;
    let t = std::time::Instant::now();
    while other.status().available != Some(me) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "no takeover: {:?}",
            other.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
