//! A guest whose disk is an NBD URL (served here by nbdkit, later by quorate's
//! replicated volumes): the counter persists across a crash and the guest
//! live-migrates with both QEMUs attached to the same NBD export.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use vm::{DiskSource, Guest, GuestState, MigrationMode, MigrationSettings};

struct Nbdkit(Child);

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbd_backed_guest_survives_crash_and_migrates() {
    let dir = test_dir("nbd");
    let disk = blank_disk(&dir);
    let port = free_port();
    let server = Command::new("nbdkit")
        .args([
            "-f",
            "--exit-with-parent",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "file",
        ])
        .arg(format!("file={}", disk.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nbdkit ({e}): install the Debian package nbdkit"));
    let _server = Nbdkit(server);
    let url = format!("nbd://127.0.0.1:{port}");
    // Wait until nbdkit listens.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut a = guest_def("nbd-a", &dir, &disk);
    a.disks[0].source = DiskSource::Nbd(url.clone());
    let mut b = guest_def("nbd-b", &dir, &disk);
    b.disks[0].source = DiskSource::Nbd(url);
    let _reaper = Reaper(vec![a.pidfile.clone(), b.pidfile.clone()]);
    let accel = auto_accel();

    let g = Guest::start(a.clone(), accel.clone())
        .await
        .expect("start on NBD");
    wait_counter_above(&a.serial_log, 3, Duration::from_secs(60));
    g.kill().await;
    let before = counters(&a.serial_log).last().copied().unwrap();
    let src = Guest::start(a.clone(), accel.clone())
        .await
        .expect("restart on NBD");
    wait_counter_above(&a.serial_log, before, Duration::from_secs(60));
    assert!(
        resumed(&a.serial_log)[1] >= before,
        "the NBD export lost the counter"
    );

    let port = free_port();
    let s = MigrationSettings {
        listen_address: "127.0.0.1".into(),
        port,
        downtime_limit_ms: 100,
        max_bandwidth: 1 << 30,
        timeout_ms: 60_000,
        connect_timeout_ms: 0,
        mode: MigrationMode::Live,
    };
    let (mut dst, stats) = src
        .migrate_to_local(b.clone(), &s, |_| {})
        .await
        .expect("migrate on NBD");
    eprintln!(
        "vm-measure: NBD-disk migration total {} ms downtime {} ms",
        stats.total_time_ms, stats.downtime_ms
    );
    let last = counters(&a.serial_log).last().copied().unwrap();
    src.quit().await;
    assert_eq!(dst.status().await.state, GuestState::Running);
    wait_counter_above(&b.serial_log, last + 3, Duration::from_secs(30));
    dst.stop().await;
    // What the guest wrote went through NBD into the file.
    let data = std::fs::read(&disk).unwrap();
    assert!(data.starts_with(b"QUORATE-COUNTER "), "{:?}", &data[..32]);
    let _ = std::fs::remove_dir_all(&dir);
}
