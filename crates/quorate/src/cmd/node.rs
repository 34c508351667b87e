//! `quorate node`: run this machine's cluster node in the foreground.
//!
//! The daemon crate runs the protocols; this file plugs in what carries out
//! the resource manager's actions: the resource executor (script, ip, fs, OCF
//! agents), the vm manager (QEMU guests, live migration) and the node's
//! replicated volumes (`replica` resources).

use super::err;
use crate::cli::{EXIT_FAIL, EXIT_OK};
use base::NodeId;
use daemon::node::{NodeOptions, ServiceRunner};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Runs `<vm>` resources with the vm crate; migrations go to the target
/// node's ring-0 (back-channel) address, as the seed sends them over its BCN.
///
/// A guest whose disk is a replicated volume names it with `replica="r0"` (and opens it as
/// `nbd://127.0.0.1:NBD_PORT/r0`, served on every node while it is primary there): the volume is
/// promoted before the guest starts and demoted after it stops; the target of a live migration
/// opens the dual-primary window before its incoming guest opens the disk, and the source
/// demotes, closing the window, once its guest has quit.
struct Vms {
    manager: vm::resource::VmManager,
    addrs: BTreeMap<NodeId, IpAddr>,
    /// Per vm: the running migration's last progress, then its figures.
    migrations: Mutex<BTreeMap<String, Migration>>,
    replicas: daemon::replicas::Replicas,
}

#[derive(Clone, Debug)]
enum Migration {
    Running {
        to: NodeId,
        progress: Option<vm::MigrationProgress>,
    },
    Done {
        to: NodeId,
        stats: vm::MigrationStats,
    },
    Failed {
        to: NodeId,
        error: String,
    },
}

impl Vms {
    fn set_migration(&self, name: &str, m: Migration) {
        if let Ok(mut ms) = self.migrations.lock() {
            ms.insert(name.to_string(), m);
        }
    }

    /// Status details of a vm as this node sees it: the accelerator it runs
    /// on here and why, and the last migration from here.
    fn info(&self, name: &str) -> Option<serde_json::Value> {
        let attrs = self.manager.attrs_of(name)?;
        let def = vm::GuestDef::from_attrs(&attrs, self.manager.run_dir())
            .ok()?
            .def;
        let pid = vm::Guest::running_pid(&def);
        let migration = self
            .migrations
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned());
        if pid.is_none() && migration.is_none() {
            return None;
        }
        let mut v = serde_json::json!({ "pid": pid });
        if pid.is_some() {
            let accel = self.manager.accel_for(&def);
            v["accel"] = serde_json::json!(accel.accel.as_str());
            v["accel_reason"] = serde_json::json!(accel.reason);
        }
        match migration {
            Some(Migration::Running { to, progress }) => {
                let p = progress.unwrap_or(vm::MigrationProgress {
                    status: "connecting".into(),
                    transferred: 0,
                    remaining: 0,
                    total: 0,
                    elapsed_ms: 0,
                });
                v["migration"] = serde_json::json!({
                    "to": to.0,
                    "status": p.status,
                    "transferred_bytes": p.transferred,
                    "remaining_bytes": p.remaining,
                    "total_bytes": p.total,
                    "percent": percent(&p),
                    "elapsed_ms": p.elapsed_ms,
                });
            }
            Some(Migration::Done { to, stats }) => {
                v["last_migration"] = serde_json::json!({
                    "to": to.0,
                    "ok": true,
                    "downtime_ms": stats.downtime_ms,
                    "total_time_ms": stats.total_time_ms,
                    "transferred_bytes": stats.transferred_bytes,
                });
            }
            Some(Migration::Failed { to, error }) => {
                v["last_migration"] =
                    serde_json::json!({ "to": to.0, "ok": false, "error": error });
            }
            None => {}
        }
        Some(v)
    }

    /// The guest's replicated volume, if it names one.
    fn volume(
        &self,
        attrs: &BTreeMap<String, String>,
    ) -> Result<Option<Arc<daemon::replicas::Local>>, String> {
        match attrs.get("replica") {
            None => Ok(None),
            Some(r) => self.replicas.find(r).map(Some).map_err(|e| e.to_string()),
        }
    }
}

/// How far a migration is: RAM sent of RAM sent plus still to send.
fn percent(p: &vm::MigrationProgress) -> u64 {
    if p.status == "completed" {
        return 100;
    }
    (p.transferred.saturating_mul(100))
        .checked_div(p.transferred.saturating_add(p.remaining))
        .map_or(0, |v| v.min(99))
}

impl rmexec::VmHandler for Vms {
    fn start<'a>(
        &'a self,
        _name: &'a str,
        attrs: &'a BTreeMap<String, String>,
    ) -> rmexec::VmFuture<'a, ()> {
        Box::pin(async move {
            if let Some(v) = self.volume(attrs)? {
                v.promote(false).await.map_err(|e| e.to_string())?;
            }
            self.manager
                .start(attrs)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn stop<'a>(
        &'a self,
        _name: &'a str,
        attrs: &'a BTreeMap<String, String>,
    ) -> rmexec::VmFuture<'a, ()> {
        Box::pin(async move {
            self.manager
                .stop(attrs)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())?;
            if let Some(v) = self.volume(attrs)? {
                v.demote().await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }

    fn status<'a>(
        &'a self,
        _name: &'a str,
        attrs: &'a BTreeMap<String, String>,
    ) -> rmexec::VmFuture<'a, rmexec::VmStatus> {
        Box::pin(async move {
            match self.manager.status(attrs).await {
                Ok(_) => Ok(rmexec::VmStatus::Running),
                Err(e) => Err(e),
            }
        })
    }

    fn migrate<'a>(
        &'a self,
        name: &'a str,
        to: NodeId,
        mode: rm::MigrateMode,
    ) -> rmexec::VmFuture<'a, ()> {
        Box::pin(async move {
            // The handler is called by name: the manager knows the attributes
            // it last ran the guest with; the scheduler says how to move it.
            let mut attrs = self.manager.attrs_of(name).ok_or_else(|| {
                format!("{name} was not started by this node, so it cannot be migrated from here")
            })?;
            attrs.insert(
                "migrate".into(),
                match mode {
                    rm::MigrateMode::Live => "live",
                    rm::MigrateMode::Pause => "pause",
                }
                .into(),
            );
            let ip = *self
                .addrs
                .get(&to)
                .ok_or_else(|| format!("node {to} has no known address"))?;
            self.set_migration(name, Migration::Running { to, progress: None });
            // The source stays paused (postmigrate) until the target has
            // reported the guest running and the cluster sends FinishMigration.
            let r = self
                .manager
                .migrate_out_and_hold(&attrs, ip, |p| {
                    self.set_migration(
                        name,
                        Migration::Running {
                            to,
                            progress: Some(p.clone()),
                        },
                    )
                })
                .await;
            let stats = match r {
                Ok(stats) => {
                    self.set_migration(
                        name,
                        Migration::Done {
                            to,
                            stats: stats.clone(),
                        },
                    );
                    stats
                }
                Err(e) => {
                    let error = e.to_string();
                    self.set_migration(
                        name,
                        Migration::Failed {
                            to,
                            error: error.clone(),
                        },
                    );
                    return Err(error);
                }
            };
            tracing::info!(
                vm = name,
                downtime_ms = stats.downtime_ms,
                total_ms = stats.total_time_ms,
                "live migration completed; waiting for the target to report the guest running"
            );
            // The dual-primary window closes when FinishMigration stops the
            // paused copy here (which demotes its volume).
            Ok(())
        })
    }

    fn confirm_incoming<'a>(
        &'a self,
        _name: &'a str,
        attrs: &'a BTreeMap<String, String>,
    ) -> rmexec::VmFuture<'a, ()> {
        Box::pin(async move {
            self.manager
                .wait_running(attrs, CONFIRM_INCOMING_TIMEOUT)
                .await
                .map(|_| ())
        })
    }
}

/// How long a migration target may take, after the source handed the guest
/// over, to report it running before the cluster gives up on it there (and
/// stops it there, then starts it again per policy).
const CONFIRM_INCOMING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs `replica` resources over the daemon's volumes (promote on start, demote on stop).
struct ReplicaRes(daemon::replicas::Replicas);

impl ReplicaRes {
    fn volume(&self, name: &str) -> Result<Arc<daemon::replicas::Local>, String> {
        self.0.find(name).map_err(|r| r.to_string())
    }
}

impl rmexec::ReplicaHandler for ReplicaRes {
    fn promote<'a>(&'a self, name: &'a str) -> rmexec::VmFuture<'a, ()> {
        Box::pin(async move {
            let v = self.volume(name)?;
            v.promote(false).await.map_err(|r| r.to_string())
        })
    }

    fn demote<'a>(&'a self, name: &'a str) -> rmexec::VmFuture<'a, ()> {
        Box::pin(async move {
            let v = self.volume(name)?;
            v.demote().await.map_err(|r| r.to_string())
        })
    }

    fn status<'a>(&'a self, name: &'a str) -> rmexec::VmFuture<'a, ()> {
        Box::pin(async move {
            let v = self.volume(name)?;
            v.check().await.map_err(|r| r.to_string())
        })
    }
}

/// Carries out the resource manager's actions on this node.
struct Runner {
    executor: rmexec::Executor,
    vms: Arc<Vms>,
    my_ip: IpAddr,
}

impl ServiceRunner for Runner {
    fn run(
        &self,
        action: rm::Action,
    ) -> Pin<Box<dyn std::future::Future<Output = Option<rm::Outcome>> + Send + 'static>> {
        let executor = self.executor.clone();
        Box::pin(async move {
            let report = executor.run(&action).await;
            if let Some(e) = report.first_error() {
                tracing::warn!(service = action.service(), "resource action failed: {e}");
            }
            report.outcome()
        })
    }

    fn prepare_incoming(
        &self,
        _service: String,
        resources: Vec<rm::ResourceStep>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>> {
        // The stack asks once per migration; the vm manager is idempotent
        // (a target already waiting stays), so a second ask is harmless.
        let vms = self.vms.clone();
        let ip = self.my_ip;
        Box::pin(async move {
            for r in resources.iter().filter(|r| r.rtype == "vm") {
                if let Some(v) = vms.volume(&r.attrs)? {
                    v.promote_for_migration().await.map_err(|e| e.to_string())?;
                }
                vms.manager
                    .prepare_incoming(&r.attrs, ip)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }

    fn watch(
        &self,
        _service: &str,
        resources: &[rm::ResourceStep],
    ) -> Option<Pin<Box<dyn std::future::Future<Output = String> + Send + 'static>>> {
        let attrs = resources.iter().find(|r| r.rtype == "vm")?.attrs.clone();
        let vms = self.vms.clone();
        Some(Box::pin(async move { vms.manager.watch(&attrs).await }))
    }

    fn local_info(&self, service: &str) -> Option<serde_json::Value> {
        self.vms.info(service)
    }
}

/// `quorate node`: load the config, find this node, run until SIGTERM/SIGINT
/// (then leave cleanly: services move away first).
pub fn run(config: &Path, state_dir: &Path, node: Option<String>) -> u8 {
    let Some(rt) = super::runtime() else {
        return EXIT_FAIL;
    };
    let result = rt.block_on(async {
        let conf = daemon::node::load_config(config)?;
        let me = daemon::node::local_node_name(&conf, node.as_deref())?;
        let plan = daemon::plan::make_plan(&conf, &me)?;
        let addrs: BTreeMap<NodeId, IpAddr> = plan
            .peers
            .iter()
            .filter_map(|(id, p)| p.addrs.first().map(|a| (*id, a.ip())))
            .collect();
        let my_ip = addrs
            .get(&plan.me)
            .copied()
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let replicas = daemon::replicas::Replicas::default();
        let vms = Arc::new(Vms {
            manager: vm::resource::VmManager::new(state_dir.join("vm")),
            addrs,
            migrations: Mutex::new(BTreeMap::new()),
            replicas: replicas.clone(),
        });
        let executor = rmexec::Executor::new()
            .with_vm_handler(vms.clone())
            .with_replica_handler(Arc::new(ReplicaRes(replicas.clone())));
        let runner = Arc::new(Runner {
            executor,
            vms,
            my_ip,
        });
        let opts = NodeOptions {
            config_path: PathBuf::from(config),
            node: Some(me),
            state_dir: state_dir.to_path_buf(),
        };
        daemon::node::run_with_replicas(opts, runner, replicas, shutdown_signal()).await
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            err(&format!("quorate node: {e}\n"));
            EXIT_FAIL
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: leaving the cluster cleanly"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: leaving the cluster cleanly"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(status: &str, transferred: u64, remaining: u64) -> vm::MigrationProgress {
        vm::MigrationProgress {
            status: status.into(),
            transferred,
            remaining,
            total: 128 << 20,
            elapsed_ms: 10,
        }
    }

    #[test]
    fn migration_percent_is_sent_of_sent_plus_remaining() {
        assert_eq!(percent(&progress("setup", 0, 0)), 0);
        assert_eq!(percent(&progress("active", 30, 70)), 30);
        // Dirty pages can leave the last bytes pending: never 100 until QEMU says so.
        assert_eq!(percent(&progress("active", 100, 0)), 99);
        assert_eq!(percent(&progress("completed", 100, 0)), 100);
    }
}
