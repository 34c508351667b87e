//! Start, status, adopt, crash detection, restart from the on-disk counter, stop: with real QEMU.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vm::{Accel, Guest, GuestState, StopOutcome, VmError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_crash_restart_adopt_stop() {
    let dir = test_dir("life");
    let disk = blank_disk(&dir);
    let def = guest_def("life", &dir, &disk);
    let _reaper = Reaper(vec![def.pidfile.clone()]);
    let accel = auto_accel();
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(accel.accel, Accel::Tcg, "{}", accel.reason);
        assert!(accel.reason.contains("kvm_pvm"));
    }

    let t0 = Instant::now();
    let mut g = Guest::start(def.clone(), accel.clone())
        .await
        .expect("start");
    wait_counter_above(&def.serial_log, 0, Duration::from_secs(60));
    let boot = t0.elapsed();
    eprintln!("vm-measure: boot to first counter {} ms", boot.as_millis());
    let c = wait_counter_above(&def.serial_log, 3, Duration::from_secs(30));
    assert_eq!(resumed(&def.serial_log), vec![0]);
    let st = g.status().await;
    assert_eq!(st.state, GuestState::Running, "{st:?}");
    assert_eq!(st.accel, accel);

    // Starting twice is refused; adopting finds the same QEMU.
    match Guest::start(def.clone(), accel.clone()).await {
        Err(VmError::AlreadyRunning { pid, .. }) => assert_eq!(pid, g.pid()),
        other => panic!("second start must be refused, got {other:?}"),
    }
    // A daemon restart: the old handle (and its QMP connection, QEMU serves
    // one client at a time) goes away, the new daemon adopts the guest.
    let pid = g.pid();
    drop(g);
    let mut g = Guest::adopt(def.clone(), accel.clone())
        .await
        .unwrap()
        .expect("adopt");
    assert_eq!(g.pid(), pid);
    assert_eq!(g.accel().accel, accel.accel);
    assert_eq!(g.status().await.state, GuestState::Running);

    // Crash: SIGKILL QEMU; status says dead, adopt finds nothing.
    wait_counter_above(&def.serial_log, c, Duration::from_secs(10));
    let pid = g.pid();
    let t = Instant::now();
    let (_, ()) = tokio::join!(g.wait_exit(), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    eprintln!(
        "vm-measure: SIGKILL noticed after {} ms (incl. 200 ms delay)",
        t.elapsed().as_millis()
    );
    let before_crash = *counters(&def.serial_log).last().unwrap();
    assert_eq!(g.status().await.state, GuestState::Dead);
    assert!(Guest::adopt(def.clone(), accel.clone())
        .await
        .unwrap()
        .is_none());

    // Restart resumes from the counter on disk.
    let t1 = Instant::now();
    let (g2, adopted) = Guest::start_or_adopt(def.clone(), accel.clone())
        .await
        .expect("restart");
    assert!(!adopted);
    let after = wait_counter_above(&def.serial_log, before_crash, Duration::from_secs(60));
    eprintln!(
        "vm-measure: restart to counter {} ms",
        t1.elapsed().as_millis()
    );
    let r = resumed(&def.serial_log);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(
        r[1] >= before_crash,
        "resumed from {} but {before_crash} was printed before the crash",
        r[1]
    );
    assert!(after > r[1]);

    // Clean stop through the ACPI power button.
    let t2 = Instant::now();
    let out = g2.stop().await;
    eprintln!(
        "vm-measure: stop {:?} in {} ms",
        out,
        t2.elapsed().as_millis()
    );
    assert_eq!(out, StopOutcome::PoweredOff);
    assert!(Guest::running_pid(&def).is_none());
    assert!(!def.qmp_socket.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_qemu_arguments_are_reported() {
    let dir = test_dir("bad");
    let disk = blank_disk(&dir);
    let mut def = guest_def("bad", &dir, &disk);
    let _reaper = Reaper(vec![def.pidfile.clone()]);
    def.extra_args = vec!["-no-such-option".into()];
    let err = Guest::start(def, auto_accel()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, VmError::Spawn { .. }) && msg.contains("no-such-option"),
        "{msg}"
    );
    // A missing disk: QEMU's own message reaches the caller.
    let mut def = guest_def("bad", &dir, &dir.join("missing.img"));
    def.extra_args.clear();
    let msg = Guest::start(def.clone(), auto_accel())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing.img"), "{msg}");
    assert!(Guest::running_pid(&def).is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_kernel_panic_is_a_failed_guest() {
    let dir = test_dir("panic");
    let disk = blank_disk(&dir);
    let mut def = guest_def("panic", &dir, &disk);
    def.kernel.as_mut().unwrap().append.push_str(" panic_at=3");
    let _reaper = Reaper(vec![def.pidfile.clone()]);
    let mut g = Guest::start(def.clone(), auto_accel())
        .await
        .expect("start");
    wait_counter_above(&def.serial_log, 2, Duration::from_secs(60));
    let t = Instant::now();
    let st = loop {
        let st = g.status().await;
        if st.state != GuestState::Running || t.elapsed() > Duration::from_secs(20) {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    match &st.state {
        GuestState::Failed(why) => assert!(why.contains("guest-panicked"), "{why}"),
        other => panic!("a panicked guest must be failed, got {other:?}"),
    }
    assert_eq!(st.run_state.as_deref(), Some("guest-panicked"));
    // A paused, panicked guest ignores the power button: stop escalates to quit.
    assert_eq!(
        g.stop_within(Duration::from_millis(500)).await,
        StopOutcome::Quit
    );
    let _ = std::fs::remove_dir_all(&dir);
}
