//! Helpers shared by the executor's tests.
#![allow(dead_code)]

use rm::{Action, ResourceStep, ServiceKind};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Fails with a clear message unless root (the tests mount, add addresses and make namespaces).
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    assert_eq!(
        uid, "0",
        "the rmexec tests need root (mount, ip addr, network namespaces): run them with sudo"
    );
}

/// Fails with the package to install when `path` is missing.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: apt-get install {package}"
    );
}

/// A resource step.
pub fn step(rtype: &str, name: &str, attrs: &[(&str, &str)]) -> ResourceStep {
    ResourceStep {
        rtype: rtype.into(),
        name: name.into(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        depth: 0,
    }
}

/// StartService for `resources`.
pub fn start(service: &str, resources: Vec<ResourceStep>) -> Action {
    Action::StartService {
        service: service.into(),
        op: 1,
        kind: ServiceKind::Service,
        resources,
    }
}

/// StopService for `resources` (give them in stop order).
pub fn stop(service: &str, resources: Vec<ResourceStep>) -> Action {
    Action::StopService {
        service: service.into(),
        op: 2,
        kind: ServiceKind::Service,
        resources,
    }
}

/// StatusCheck for `resources`.
pub fn status(service: &str, resources: Vec<ResourceStep>) -> Action {
    Action::StatusCheck {
        service: service.into(),
        op: 1,
        kind: ServiceKind::Service,
        resources,
    }
}

/// Writes an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !state.starts_with('Z') && !state.starts_with('X')
        }
    }
}

/// Reads a pid file.
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// An LSB init script keeping a `sleep` daemon with a pid file in `dir`; it
/// appends each action to `dir/calls`.
pub fn lsb_script(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("svc-init");
    let d = dir.display();
    write_script(
        &path,
        &format!(
            r#"#!/bin/sh
PIDFILE={d}/svc.pid
echo "$1" >> {d}/calls
running() {{ [ -f $PIDFILE ] && kill -0 $(cat $PIDFILE) 2>/dev/null && ! grep -q '^[^ ]* ([^)]*) Z' /proc/$(cat $PIDFILE)/stat 2>/dev/null; }}
case "$1" in
start)
  running && exit 0
  setsid sleep 1000 </dev/null >/dev/null 2>&1 &
  echo $! > $PIDFILE
  exit 0;;
stop)
  if [ -f $PIDFILE ]; then kill $(cat $PIDFILE) 2>/dev/null; rm -f $PIDFILE; fi
  exit 0;;
status)
  running && exit 0
  [ -f $PIDFILE ] && exit 1
  exit 3;;
*) exit 2;;
esac
"#
        ),
    );
    path
}
