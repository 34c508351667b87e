//! The `<vm>` resource handler the node daemon calls: one [`VmManager`] per node.
//!
//! Every call takes the `<vm>` element's attributes (as `rm::ResourceStep::attrs`,
//! `name` included), builds the [`GuestDef`] with [`GuestDef::from_attrs`] and acts
//! on the guest of that name. Calls for different guests run concurrently; calls
//! for one guest are serialized, except [`VmManager::status`], which never waits
//! behind a long stop or migration (it then checks the QEMU process only).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::accel::{detect_accel, AccelChoice, HostProbe};
use crate::def::{GuestDef, MigrationMode};
use crate::driver::{
    Guest, GuestState, GuestStatus, MigrationProgress, MigrationStats, StopOutcome,
};
use crate::VmError;

/// `<vm>` attributes: the element's attributes plus `name`.
pub type VmAttrs = BTreeMap<String, String>;

/// What [`VmManager::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartOutcome {
    /// A new QEMU was started.
    Started,
    /// A QEMU found running (after a daemon restart, or a migration that
    /// arrived here) was adopted instead of starting a second one.
    Adopted,
    /// This manager already ran the guest; nothing was done.
    AlreadyRunning,
}

#[derive(Debug, Default)]
struct Slot {
    guest: Option<Guest>,
}

#[derive(Debug, Default)]
struct Handle {
    /// The operation holding `slot`, for status reports while it runs.
    op: Mutex<Option<&'static str>>,
    slot: tokio::sync::Mutex<Slot>,
}

/// The guests of one node. Keeps at most one [`Guest`] per vm name; their
/// QMP sockets, pidfiles and serial logs live in `run_dir/NAME.*` (unless the
/// definition says otherwise). Dropping the manager leaves the guests running;
/// a new manager on the same `run_dir` adopts them.
#[derive(Debug)]
pub struct VmManager {
    run_dir: PathBuf,
    netns: Option<String>,
    probe: HostProbe,
    guests: Mutex<BTreeMap<String, Arc<Handle>>>,
    last_attrs: Mutex<BTreeMap<String, VmAttrs>>,
}

struct OpGuard<'a>(&'a Handle);

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        *self.0.op.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn is_connect_failure(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("connection refused") || r.contains("failed to connect")
}

impl VmManager {
    /// A manager keeping its guests' files in `run_dir` (created when needed),
    /// choosing accelerators by this host's /dev/kvm and kernel modules.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self::with_probe(run_dir, HostProbe::gather())
    }

    /// [`new`](Self::new) with given host facts (for tests).
    pub fn with_probe(run_dir: impl Into<PathBuf>, probe: HostProbe) -> Self {
        Self {
            run_dir: run_dir.into(),
            netns: None,
            probe,
            guests: Mutex::new(BTreeMap::new()),
            last_attrs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Run this node's guests in network namespace `netns` (unless their
    /// `netns` attribute names another): for several nodes in one process,
    /// each in its own namespace.
    pub fn with_netns(mut self, netns: Option<String>) -> Self {
        self.netns = netns;
        self
    }

    /// Where the guests' sockets, pidfiles and serial logs go.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The definition for these attributes; warnings about unknown attributes
    /// go to the log.
    pub fn guest_def(&self, attrs: &VmAttrs) -> Result<GuestDef, VmError> {
        let parsed = GuestDef::from_attrs(attrs, &self.run_dir)?;
        for w in &parsed.warnings {
            tracing::warn!("{w}");
        }
        let mut def = parsed.def;
        self.last_attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(def.name.clone(), attrs.clone());
        if def.netns.is_none() {
            def.netns = self.netns.clone();
        }
        Ok(def)
    }

    /// The attributes last passed for guest `name` (by any call), for callers
    /// that name a guest without its attributes (e.g. a migrate request).
    pub fn attrs_of(&self, name: &str) -> Option<VmAttrs> {
        self.last_attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The accelerator a guest with this definition gets here, and why.
    pub fn accel_for(&self, def: &GuestDef) -> AccelChoice {
        detect_accel(def.accel, &self.probe)
    }

    fn handle(&self, name: &str) -> Arc<Handle> {
        let mut g = self.guests.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name.to_string()).or_default().clone()
    }

    fn begin<'a>(h: &'a Handle, op: &'static str) -> OpGuard<'a> {
        *h.op.lock().unwrap_or_else(|e| e.into_inner()) = Some(op);
        OpGuard(h)
    }

    /// Adopt a running QEMU into an empty slot. A QEMU whose QMP does not
    /// answer is killed (it cannot be managed) when `kill_unreachable`.
    async fn fill(
        &self,
        slot: &mut Slot,
        def: &GuestDef,
        kill_unreachable: bool,
    ) -> Result<(), VmError> {
        if slot.guest.is_some() {
            return Ok(());
        }
        match Guest::adopt(def.clone(), self.accel_for(def)).await {
            Ok(g) => {
                slot.guest = g;
                Ok(())
            }
            Err(e) => {
                let Some(pid) = Guest::running_pid(def) else {
                    return Ok(());
                };
                if !kill_unreachable {
                    return Err(e);
                }
                tracing::warn!(guest = %def.name, pid, error = %e, "QMP unreachable; killing QEMU");
                crate::proc::signal(pid, libc::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Guest::running_pid(def).is_some() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = std::fs::remove_file(&def.pidfile);
                let _ = std::fs::remove_file(&def.qmp_socket);
                Ok(())
            }
        }
    }

    /// Start the guest, or adopt it when its QEMU already runs (never two
    /// QEMUs for one guest). A leftover dead, failed, shut-down or
    /// waiting-for-migration QEMU of this guest is ended first; a paused guest
    /// is resumed. A QEMU that migrated its guest away (`postmigrate`) is
    /// ended, never resumed, and the guest boots afresh.
    pub async fn start(&self, attrs: &VmAttrs) -> Result<StartOutcome, VmError> {
        let def = self.guest_def(attrs)?;
        let h = self.handle(&def.name);
        let mut slot = h.slot.lock().await;
        let _op = Self::begin(&h, "start");
        let known = slot.guest.is_some();
        self.fill(&mut slot, &def, true).await?;
        if let Some(mut g) = slot.guest.take() {
            let st = g.status().await;
            let outcome = if known {
                StartOutcome::AlreadyRunning
            } else {
                StartOutcome::Adopted
            };
            match (&st.state, st.run_state.as_deref()) {
                (GuestState::Running, _) => {
                    slot.guest = Some(g);
                    return Ok(outcome);
                }
                (GuestState::Paused, Some("paused" | "suspended")) => {
                    let r = g
                        .qmp()
                        .execute_timeout(
                            if st.run_state.as_deref() == Some("suspended") {
                                "system_wakeup"
                            } else {
                                "cont"
                            },
                            Value::Null,
                            Duration::from_secs(10),
                        )
                        .await;
                    slot.guest = Some(g);
                    r.map_err(|source| VmError::Qmp {
                        guest: def.name.clone(),
                        source,
                    })?;
                    tracing::info!(guest = %def.name, "paused guest resumed by start");
                    return Ok(outcome);
                }
                (GuestState::Migrating, Some("postmigrate")) => {
                    // It handed its guest to another node; its memory is
                    // stale and is never resumed. The cluster starts a guest
                    // only where no other copy runs, so boot afresh.
                    tracing::warn!(guest = %def.name, pid = st.pid, "ending a QEMU that migrated its guest away (postmigrate) before a fresh start");
                    g.quit().await;
                }
                (GuestState::Migrating, Some(rs)) if rs != "inmigrate" => {
                    slot.guest = Some(g);
                    return Err(VmError::Invalid {
                        guest: def.name.clone(),
                        message: format!(
                            "a migration is in progress (run state {rs}); wait for it to end"
                        ),
                    });
                }
                _ => {
                    tracing::info!(guest = %def.name, state = ?st.state, "ending leftover QEMU before start");
                    g.quit().await;
                }
            }
        }
        let g = Guest::start(def.clone(), self.accel_for(&def)).await?;
        slot.guest = Some(g);
        Ok(StartOutcome::Started)
    }

    /// Stop the guest: ACPI powerdown, wait up to `stop_timeout`, then `quit`,
    /// then SIGKILL. A migration target still waiting for its stream, or a
    /// source that already migrated away, is ended with `quit` at once.
    /// Stopping a guest that does not run here succeeds (`AlreadyDead`).
    pub async fn stop(&self, attrs: &VmAttrs) -> Result<StopOutcome, VmError> {
        let def = self.guest_def(attrs)?;
        let h = self.handle(&def.name);
        let mut slot = h.slot.lock().await;
        let _op = Self::begin(&h, "stop");
        let had_pid = Guest::running_pid(&def).is_some() || slot.guest.is_some();
        self.fill(&mut slot, &def, true).await?;
        let Some(mut g) = slot.guest.take() else {
            return Ok(if had_pid {
                StopOutcome::Killed
            } else {
                StopOutcome::AlreadyDead
            });
        };
        let st = g.status().await;
        let outcome = match st.state {
            GuestState::Migrating | GuestState::Dead | GuestState::Failed(_) => g.quit().await,
            _ => {
                g.stop_within(Duration::from_millis(def.stop_timeout_ms))
                    .await
            }
        };
        Ok(outcome)
    }

    /// Whether the guest is healthy here: `Ok` when it runs, is paused, or is
    /// inside a migration (a target waiting for or receiving the stream, a
    /// source sending it); `Err` with the reason when it does not run here, its
    /// QEMU died (crash, kill), or the guest failed (panic, I/O error, shut
    /// down). Adopts a QEMU it does not know yet (daemon restart, migration
    /// target). A migration target that arrived paused (`migrate="pause"`) is
    /// resumed. While a start, stop or migration of this guest is in progress
    /// only the QEMU process is checked. The status names the accelerator.
    pub async fn status(&self, attrs: &VmAttrs) -> Result<GuestStatus, String> {
        let def = self.guest_def(attrs).map_err(|e| e.to_string())?;
        let h = self.handle(&def.name);
        let Ok(mut slot) = h.slot.try_lock() else {
            let op = *h.op.lock().unwrap_or_else(|e| e.into_inner());
            let op = op.unwrap_or("an operation");
            return match Guest::running_pid(&def) {
                Some(pid) => Ok(GuestStatus {
                    state: if matches!(op, "migrate_out" | "prepare_incoming") {
                        GuestState::Migrating
                    } else {
                        GuestState::Running
                    },
                    run_state: None,
                    pid,
                    accel: self.accel_for(&def),
                }),
                None => Err(format!(
                    "guest {}: no live QEMU while {op} is in progress",
                    def.name
                )),
            };
        };
        if let Err(e) = self.fill(&mut slot, &def, false).await {
            return Err(format!(
                "guest {}: QEMU runs but does not answer: {e}",
                def.name
            ));
        }
        let Some(g) = slot.guest.as_mut() else {
            return Err(format!(
                "guest {} is not running on this node (no live QEMU for {})",
                def.name,
                def.pidfile.display()
            ));
        };
        let mut st = g.status().await;
        let on = |st: &GuestStatus| format!("pid {}, {}", st.pid, st.accel.reason);
        match &st.state {
            GuestState::Running | GuestState::Migrating => Ok(st),
            GuestState::Paused => {
                // A pause-mode migration target arrives paused; resume it.
                let arrived = g
                    .qmp()
                    .execute_timeout("query-migrate", Value::Null, Duration::from_secs(5))
                    .await
                    .map(|v| v["status"] == "completed")
                    .unwrap_or(false);
                if arrived
                    && st.run_state.as_deref() == Some("paused")
                    && g.wait_running(MigrationMode::Pause, Duration::from_secs(10))
                        .await
                        .is_ok()
                {
                    tracing::info!(guest = %def.name, "migrated guest resumed on the target");
                    st = g.status().await;
                }
                Ok(st)
            }
            GuestState::Shutdown => Err(format!(
                "guest {} shut down inside its QEMU ({})",
                def.name,
                on(&st)
            )),
            GuestState::Failed(why) => {
                Err(format!("guest {} failed: {why} ({})", def.name, on(&st)))
            }
            GuestState::Dead => {
                let pid = st.pid;
                if let Some(g) = slot.guest.take() {
                    g.quit().await;
                }
                Err(format!(
                    "guest {}: its QEMU (pid {pid}) is gone: crashed or killed",
                    def.name
                ))
            }
        }
    }

    /// Resolves when the guest stops being healthy here without being asked
    /// to: its QEMU exits (crash, kill, guest poweroff) or the guest kernel
    /// panics; returns the reason at once, so the daemon can run a status check
    /// and recovery without waiting for the next status interval. Resolves at
    /// once (with the reason) when the guest does not run here. Note that a
    /// source QEMU also exits after a completed [`migrate_out`](Self::migrate_out)
    /// and on [`stop`](Self::stop): the caller knows those.
    pub async fn watch(&self, attrs: &VmAttrs) -> String {
        let def = match self.guest_def(attrs) {
            Ok(d) => d,
            Err(e) => return e.to_string(),
        };
        let h = self.handle(&def.name);
        let (qmp, pid) = {
            let mut slot = h.slot.lock().await;
            if let Err(e) = self.fill(&mut slot, &def, false).await {
                return format!("guest {}: QEMU runs but does not answer: {e}", def.name);
            }
            match slot.guest.as_ref() {
                Some(g) => (g.qmp().clone(), g.pid()),
                None => return format!("guest {} is not running on this node", def.name),
            }
        };
        let mut events = qmp.events();
        loop {
            tokio::select! {
                _ = qmp.closed() => {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while crate::proc::alive(pid, &def.pidfile) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return if crate::proc::alive(pid, &def.pidfile) {
                        format!("guest {}: QMP connection of pid {pid} closed", def.name)
                    } else {
                        format!("guest {}: its QEMU (pid {pid}) exited", def.name)
                    };
                }
                ev = events.recv() => match ev {
                    Ok(ev) if ev.name == "GUEST_PANICKED" => {
                        return format!("guest {}: guest kernel panicked", def.name)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        // The connection ended; `closed()` answers next.
                        qmp.closed().await;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Status until the guest runs (a migration target after the switch-over),
    /// at most `within`. The daemon calls it on the target before it records
    /// the new owner.
    pub async fn wait_running(
        &self,
        attrs: &VmAttrs,
        within: Duration,
    ) -> Result<GuestStatus, String> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.status(attrs).await;
            match &r {
                Ok(st) if st.state == GuestState::Running && st.run_state.is_some() => return r,
                Err(e) if Instant::now() >= deadline => return Err(e.clone()),
                Ok(st) if Instant::now() >= deadline => {
                    return Err(format!(
                        "not running after {} ms (state {:?}, run state {:?})",
                        within.as_millis(),
                        st.state,
                        st.run_state
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// On the migration target: start QEMU with `-incoming defer` and
    /// `migrate-incoming` on `tcp:LISTEN_IP:migration_port`. Idempotent: a
    /// target already waiting succeeds again. Refuses when the guest already
    /// runs here.
    pub async fn prepare_incoming(
        &self,
        attrs: &VmAttrs,
        listen_ip: IpAddr,
    ) -> Result<(), VmError> {
        let def = self.guest_def(attrs)?;
        let h = self.handle(&def.name);
        let mut slot = h.slot.lock().await;
        let _op = Self::begin(&h, "prepare_incoming");
        self.fill(&mut slot, &def, true).await?;
        if let Some(mut g) = slot.guest.take() {
            let st = g.status().await;
            match (&st.state, st.run_state.as_deref()) {
                (GuestState::Migrating, Some("inmigrate")) => {
                    slot.guest = Some(g);
                    return Ok(());
                }
                (GuestState::Running | GuestState::Paused, _)
                | (GuestState::Migrating, Some("finish-migrate" | "save-vm" | "colo")) => {
                    slot.guest = Some(g);
                    return Err(VmError::Invalid {
                        guest: def.name.clone(),
                        message: format!(
                            "already runs on this node (pid {}); it cannot be a migration target here",
                            st.pid
                        ),
                    });
                }
                _ => {
                    g.quit().await;
                }
            }
        }
        let uri = match listen_ip {
            IpAddr::V4(ip) => format!("tcp:{ip}:{}", def.migration.port),
            IpAddr::V6(ip) => format!("tcp:[{ip}]:{}", def.migration.port),
        };
        let g = Guest::start_incoming(def.clone(), self.accel_for(&def), &uri).await?;
        slot.guest = Some(g);
        Ok(())
    }

    /// On the migration source: migrate the guest to `target_ip:migration_port`
    /// with its downtime limit, bandwidth, timeout and mode, retrying the
    /// connection while the target does not listen yet (up to
    /// `migration_connect_timeout`), then quit the source QEMU. `progress` sees
    /// every poll. On failure the guest keeps running here and the error says so.
    pub async fn migrate_out(
        &self,
        attrs: &VmAttrs,
        target_ip: IpAddr,
        progress: impl FnMut(&MigrationProgress),
    ) -> Result<MigrationStats, VmError> {
        self.migrate_out_inner(attrs, target_ip, progress, true)
            .await
    }

    /// [`migrate_out`](Self::migrate_out), but the source QEMU stays, paused
    /// in `postmigrate`, until [`stop`](Self::stop) ends it: the cluster ends
    /// it only once the target has reported the guest running.
    pub async fn migrate_out_and_hold(
        &self,
        attrs: &VmAttrs,
        target_ip: IpAddr,
        progress: impl FnMut(&MigrationProgress),
    ) -> Result<MigrationStats, VmError> {
        self.migrate_out_inner(attrs, target_ip, progress, false)
            .await
    }

    async fn migrate_out_inner(
        &self,
        attrs: &VmAttrs,
        target_ip: IpAddr,
        mut progress: impl FnMut(&MigrationProgress),
        quit: bool,
    ) -> Result<MigrationStats, VmError> {
        let def = self.guest_def(attrs)?;
        let h = self.handle(&def.name);
        let mut slot = h.slot.lock().await;
        let _op = Self::begin(&h, "migrate_out");
        self.fill(&mut slot, &def, false).await?;
        let Some(g) = slot.guest.as_mut() else {
            return Err(VmError::Invalid {
                guest: def.name.clone(),
                message: "does not run on this node, so it cannot be migrated from here".into(),
            });
        };
        let st = g.status().await;
        if st.state != GuestState::Running
            && !(st.state == GuestState::Paused && def.migration.mode == MigrationMode::Pause)
        {
            return Err(VmError::Invalid {
                guest: def.name.clone(),
                message: format!(
                    "is not running here (state {:?}, run state {:?}); only a running guest migrates",
                    st.state, st.run_state
                ),
            });
        }
        let uri = match target_ip {
            IpAddr::V4(ip) => format!("tcp:{ip}:{}", def.migration.port),
            IpAddr::V6(ip) => format!("tcp:[{ip}]:{}", def.migration.port),
        };
        let settings = def.migration.clone();
        let started = Instant::now();
        let connect_deadline = started + Duration::from_millis(settings.connect_timeout_ms);
        let mut tries = 0u32;
        let stats = loop {
            tries += 1;
            match g.migrate_to(&uri, &settings, &mut progress).await {
                Ok(s) => break s,
                Err(VmError::Migration { reason, last, .. })
                    if is_connect_failure(&reason)
                        && last.as_ref().map_or(0, |p| p.transferred) == 0 =>
                {
                    if Instant::now() >= connect_deadline {
                        return Err(VmError::Migration {
                            guest: def.name.clone(),
                            reason: format!(
                                "{reason}; {uri} did not accept the migration stream in {} ms ({tries} tries): \
                                 is the target prepared (prepare_incoming) and the port reachable?",
                                started.elapsed().as_millis()
                            ),
                            last,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        if quit {
            tracing::info!(guest = %def.name, %uri, tries, downtime_ms = stats.downtime_ms, "migrated out; quitting the source");
            if let Some(g) = slot.guest.take() {
                g.quit().await;
            }
        } else {
            tracing::info!(guest = %def.name, %uri, tries, downtime_ms = stats.downtime_ms, "migrated out; the source stays paused until the target reports running");
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The daemon shares one manager between tasks and spawns its calls.
    #[allow(dead_code)]
    fn futures_are_send_and_the_manager_is_shared(m: &VmManager, a: &VmAttrs) {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        shared::<VmManager>();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        send(&m.start(a));
        send(&m.stop(a));
        send(&m.status(a));
        send(&m.wait_running(a, Duration::ZERO));
        send(&m.watch(a));
        send(&m.prepare_incoming(a, ip));
        send(&m.migrate_out(a, ip, |_| {}));
        send(&m.migrate_out_and_hold(a, ip, |_| {}));
    }

    #[test]
    fn connect_failures_are_recognised() {
        assert!(is_connect_failure(
            "Failed to connect socket: Connection refused"
        ));
        assert!(is_connect_failure("error: connection refused"));
        assert!(!is_connect_failure(
            "Unable to write to socket: Broken pipe"
        ));
    }

    #[tokio::test]
    async fn bad_attributes_fail_every_call_before_qemu() {
        let dir = std::env::temp_dir().join(format!("vm-res-{}", std::process::id()));
        let m = VmManager::new(&dir);
        let a: VmAttrs = [("name", "g"), ("vcpus", "many")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(m.start(&a).await.unwrap_err().to_string().contains("vcpus"));
        assert!(m.stop(&a).await.unwrap_err().to_string().contains("vcpus"));
        assert!(m.status(&a).await.unwrap_err().contains("vcpus"));
        assert!(m.prepare_incoming(&a, ip).await.is_err());
        assert!(m.migrate_out(&a, ip, |_| {}).await.is_err());
        // A valid guest that does not run: status says so, stop is a no-op.
        let ok: VmAttrs = [("name".to_string(), "g".to_string())].into();
        assert!(m
            .status(&ok)
            .await
            .unwrap_err()
            .contains("not running on this node"));
        assert_eq!(m.stop(&ok).await.unwrap(), StopOutcome::AlreadyDead);
        assert!(m.watch(&ok).await.contains("not running"));
        assert_eq!(m.attrs_of("g"), Some(ok.clone()));
        assert_eq!(m.attrs_of("h"), None);
        let e = m
            .migrate_out(&ok, ip, |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not run on this node"), "{e}");
    }
}
