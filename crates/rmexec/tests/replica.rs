//! `replica` resources go to the executor's replica handler: promote on start (before the script
//! that uses the disk, which runs for real), demote on stop, the status check, a refused promote
//! that fails the start with its reason, and a clear error without a handler.

mod common;

use common::*;
use rmexec::{ExecResult, Executor, ReplicaHandler, VmFuture};
use std::sync::{Arc, Mutex};

/// Records calls; promotes only volumes not named `stale`.
#[derive(Default)]
struct Volumes {
    calls: Mutex<Vec<String>>,
    primary: Mutex<Vec<String>>,
}

impl ReplicaHandler for Volumes {
    fn promote<'a>(&'a self, name: &'a str) -> VmFuture<'a, ()> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!("promote {name}"));
            if name == "stale" {
                return Err("the local disk is Outdated; run the service on n2".into());
            }
            self.primary.lock().unwrap().push(name.into());
            Ok(())
        })
    }
    fn demote<'a>(&'a self, name: &'a str) -> VmFuture<'a, ()> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!("demote {name}"));
            self.primary.lock().unwrap().retain(|n| n != name);
            Ok(())
        })
    }
    fn status<'a>(&'a self, name: &'a str) -> VmFuture<'a, ()> {
        Box::pin(async move {
            if self.primary.lock().unwrap().iter().any(|n| n == name) {
                Ok(())
            } else {
                Err(format!("replica {name} is Secondary"))
            }
        })
    }
}

#[tokio::test]
async fn replica_resources_promote_demote_and_check() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let script = lsb_script(dir.path());
    let app = step("script", "app", &[("file", script.to_str().unwrap())]);
    let r0 = step("replica", "r0", &[("name", "r0")]);

    let r = Executor::new().run(&start("s", vec![r0.clone()])).await;
    assert_eq!(r.result, ExecResult::StartFailed);
    assert!(
        r.first_error()
            .unwrap()
            .to_string()
            .contains("with_replica_handler"),
        "{r}"
    );

    let vols = Arc::new(Volumes::default());
    let ex = Executor::new().with_replica_handler(vols.clone());
    let r = ex.run(&start("s", vec![r0.clone(), app.clone()])).await;
    assert_eq!(r.result, ExecResult::Started, "{r}");
    assert_eq!(
        ex.run(&status("s", vec![r0.clone(), app.clone()]))
            .await
            .result,
        ExecResult::StatusOk
    );
    let r = ex.run(&stop("s", vec![app.clone(), r0.clone()])).await;
    assert_eq!(r.result, ExecResult::Stopped, "{r}");
    let r = ex.run(&status("s", vec![r0.clone()])).await;
    assert_eq!(r.result, ExecResult::StatusFailed);
    assert!(r.to_string().contains("replica r0 is Secondary"), "{r}");
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(
        calls.lines().filter(|l| *l == "start").count(),
        1,
        "{calls}"
    );

    // A refused promote fails the start with its reason; the script never starts.
    let stale = step("replica", "stale", &[("name", "stale")]);
    let r = ex.run(&start("t", vec![stale, app])).await;
    assert_eq!(r.result, ExecResult::StartFailed);
    assert!(
        r.to_string().contains("Outdated; run the service on n2"),
        "{r}"
    );
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(
        calls.lines().filter(|l| *l == "start").count(),
        1,
        "{calls}"
    );
    assert_eq!(
        *vols.calls.lock().unwrap(),
        ["promote r0", "demote r0", "promote stale"]
    );
}
