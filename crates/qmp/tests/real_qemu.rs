//! The QMP client against a real `qemu-system-x86_64 -machine none`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qmp::{ErrorClass, QmpClient, QmpError};
use serde_json::{json, Value};

struct Qemu {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_qemu(tag: &str) -> (Qemu, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("qmp-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("qmp.sock");
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-qmp",
        ])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run qemu-system-x86_64 ({e}): install the Debian package qemu-system-x86"
            )
        });
    (Qemu { child, dir }, sock)
}

async fn connect(sock: &std::path::Path) -> QmpClient {
    for _ in 0..200 {
        if let Ok(c) = QmpClient::connect(sock).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("QEMU never opened its QMP socket {}", sock.display());
}

#[tokio::test]
async fn greeting_commands_errors_events_and_close() {
    let (mut qemu, sock) = start_qemu("a");
    let c = connect(&sock).await;
    assert!(c.greeting().version.0 >= 5, "greeting {:?}", c.greeting());

    let v = c.execute("query-version", Value::Null).await.unwrap();
    assert_eq!(v["qemu"]["major"].as_u64().unwrap(), c.greeting().version.0);

    let st = c.execute("query-status", Value::Null).await.unwrap();
    assert!(st["status"].is_string());

    match c.execute("no-such-command", Value::Null).await {
        Err(QmpError::Command {
            class: ErrorClass::CommandNotFound,
            ..
        }) => {}
        other => panic!("expected CommandNotFound, got {other:?}"),
    }
    match c.execute("query-status", json!({"bogus": 1})).await {
        Err(QmpError::Command {
            class: ErrorClass::GenericError,
            desc,
            ..
        }) => {
            assert!(desc.contains("bogus"), "{desc}")
        }
        other => panic!("expected GenericError, got {other:?}"),
    }

    // Concurrent commands on clones are matched to the right caller.
    let mut handles = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.execute("query-version", Value::Null).await.unwrap()["qemu"].clone()
            } else {
                c.execute("query-name", Value::Null).await.unwrap()
            }
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let v = h.await.unwrap();
        assert_eq!(v.get("major").is_some(), i % 2 == 0, "reply {i}: {v}");
    }

    let mut events = c.events();
    c.execute("stop", Value::Null).await.unwrap();
    c.execute("cont", Value::Null).await.unwrap();
    let mut names = Vec::new();
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        names.push(ev.name);
    }
    assert_eq!(names, ["STOP", "RESUME"]);
    c.execute("quit", Value::Null).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.name, "SHUTDOWN");
    assert_eq!(ev.data["reason"], "host-qmp-quit");
    assert!(ev.timestamp_us.is_some());
    tokio::time::timeout(Duration::from_secs(5), c.closed())
        .await
        .expect("closed() resolves after quit");
    let status = qemu.child.wait().unwrap();
    assert!(status.success());
    match c
        .execute_timeout("query-status", Value::Null, Duration::from_secs(5))
        .await
    {
        Err(QmpError::Closed) => {}
        other => panic!("expected Closed after quit, got {other:?}"),
    }
    assert!(c.is_closed());
}

#[tokio::test]
async fn connecting_to_a_missing_socket_says_what_to_do() {
    let err = QmpClient::connect("/nonexistent/qmp.sock")
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Io { .. }));
    assert!(err.to_string().contains("-qmp unix:"), "{err}");
}
