//! Any other resource type: an OCF agent (or an rgmanager `<name>.sh` agent).

use crate::cmd::{Cmd, Runner};
use crate::exec::{Op, StepError};
use crate::timeout::op_timeout;
use agents::is_secret_key;
use agents::ocf::OcfStatus;
use rm::ResourceStep;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where an agent was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    /// The agent program.
    pub path: PathBuf,
    /// OCF provider (`heartbeat`), or `rgmanager` for `/usr/share/cluster/<name>.sh`.
    pub provider: String,
    /// The type (`Dummy`).
    pub kind: String,
    /// rgmanager agents take `status`, OCF agents `monitor`.
    pub rgmanager: bool,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Finds the agent for `rtype`: `ocf:PROVIDER:TYPE`, or a bare name under
/// `<root>/resource.d/heartbeat`, then every other provider (sorted), then `<rgdir>/<name>.sh`.
pub(crate) fn locate(rtype: &str, root: &Path, rgdir: &Path) -> Result<Located, StepError> {
    let resd = root.join("resource.d");
    if let Some(rest) = rtype.strip_prefix("ocf:") {
        let (provider, kind) = rest.split_once(':').ok_or_else(|| {
            StepError::Config(format!(
                "resource type {rtype}: write ocf:PROVIDER:TYPE, e.g. ocf:heartbeat:Dummy"
            ))
        })?;
        if !valid_part(provider) || !valid_part(kind) {
            return Err(StepError::Config(format!(
                "resource type {rtype}: provider and type may hold only letters, digits, '-', '_' and '.'"
            )));
        }
        let path = resd.join(provider).join(kind);
        if !path.is_file() {
            return Err(StepError::Config(format!(
                "resource type {rtype}: no agent at {}: install it (Debian: resource-agents) or fix the provider/type",
                path.display()
            )));
        }
        return Ok(Located {
            path,
            provider: provider.into(),
            kind: kind.into(),
            rgmanager: false,
        });
    }
    if !valid_part(rtype) {
        return Err(StepError::Config(format!(
            "resource type {rtype:?}: not an agent name (letters, digits, '-', '_', '.')"
        )));
    }
    let mut providers = vec!["heartbeat".to_string()];
    if let Ok(rd) = std::fs::read_dir(&resd) {
        let mut others: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != "heartbeat")
            .collect();
        others.sort();
        providers.extend(others);
    }
    for p in &providers {
        let path = resd.join(p).join(rtype);
        if path.is_file() {
            return Ok(Located {
                path,
                provider: p.clone(),
                kind: rtype.into(),
                rgmanager: false,
            });
        }
    }
    let path = rgdir.join(format!("{rtype}.sh"));
    if path.is_file() {
        return Ok(Located {
            path,
            provider: "rgmanager".into(),
            kind: rtype.into(),
            rgmanager: true,
        });
    }
    Err(StepError::Config(format!(
        "resource type {rtype}: no agent named {rtype} under {}/*/ nor {}: install it (Debian: resource-agents), \
         write ocf:PROVIDER:TYPE, or fix the element name",
        resd.display(),
        path.display()
    )))
}

fn meaning(s: OcfStatus) -> &'static str {
    match s {
        OcfStatus::Success => "success",
        OcfStatus::ErrGeneric => "generic error",
        OcfStatus::ErrArgs => "invalid arguments",
        OcfStatus::Unimplemented => "unimplemented",
        OcfStatus::ErrPerm => "insufficient permission",
        OcfStatus::NotInstalled => "not installed",
        OcfStatus::NotConfigured => "not configured",
        OcfStatus::NotRunning => "not running",
        OcfStatus::RunningPromoted => "running promoted",
        OcfStatus::FailedPromoted => "failed promoted",
        OcfStatus::Degraded => "degraded",
        OcfStatus::DegradedPromoted => "degraded promoted",
        OcfStatus::Other(_) => "unknown code",
    }
}

async fn call(
    r: &mut Runner<'_>,
    a: &Located,
    root: &Path,
    step: &ResourceStep,
    action: &str,
    timeout: Duration,
) -> Result<OcfStatus, StepError> {
    let mut cmd = Cmd::new(
        &a.path.display().to_string(),
        &[action],
        timeout,
        "resource-agents",
    )
    .netns();
    let mut env = vec![
        ("OCF_ROOT".to_string(), root.display().to_string()),
        (
            "OCF_FUNCTIONS_DIR".to_string(),
            root.join("lib/heartbeat").display().to_string(),
        ),
        ("OCF_RA_VERSION_MAJOR".to_string(), "1".to_string()),
        ("OCF_RA_VERSION_MINOR".to_string(), "1".to_string()),
        ("OCF_RESOURCE_INSTANCE".to_string(), step.name.clone()),
        ("OCF_RESOURCE_TYPE".to_string(), a.kind.clone()),
        ("OCF_RESOURCE_PROVIDER".to_string(), a.provider.clone()),
        (
            "OCF_RESKEY_CRM_meta_timeout".to_string(),
            timeout.as_millis().to_string(),
        ),
    ];
    if action == "monitor" || action == "status" {
        env.push(("OCF_CHECK_LEVEL".into(), "0".into()));
    }
    for (k, v) in &step.attrs {
        if k.starts_with("__") {
            continue;
        }
        env.push((format!("OCF_RESKEY_{k}"), v.clone()));
        if is_secret_key(k) && v.len() >= 3 {
            cmd.scrub.push(v.clone());
        }
    }
    cmd.env = env;
    let out = r.run(cmd).await?;
    match out.code {
        Some(c) => Ok(OcfStatus::from_code(c)),
        None => Err(StepError::Failed(format!(
            "{} {action}: killed by signal {}",
            a.path.display(),
            out.signal.unwrap_or(0)
        ))),
    }
}

/// Runs the agent's `meta-data` action and parses it.
pub(crate) async fn meta_data(
    r: &mut Runner<'_>,
    root: &Path,
    rgdir: &Path,
    rtype: &str,
) -> Result<crate::meta::AgentMeta, StepError> {
    let a = locate(rtype, root, rgdir)?;
    let mut cmd = Cmd::new(
        &a.path.display().to_string(),
        &["meta-data"],
        Duration::from_secs(10),
        "resource-agents",
    );
    cmd.env = vec![
        ("OCF_ROOT".to_string(), root.display().to_string()),
        (
            "OCF_FUNCTIONS_DIR".to_string(),
            root.join("lib/heartbeat").display().to_string(),
        ),
        ("OCF_RESOURCE_TYPE".to_string(), a.kind.clone()),
        ("OCF_RESOURCE_PROVIDER".to_string(), a.provider.clone()),
    ];
    let out = r.run(cmd).await?;
    if out.code != Some(0) {
        return Err(StepError::Failed(format!(
            "{rtype}: meta-data exited {:?}: {}",
            out.code,
            out.stderr.trim()
        )));
    }
    crate::meta::AgentMeta::parse(&out.stdout)
}

pub(crate) async fn run(
    r: &mut Runner<'_>,
    root: &Path,
    rgdir: &Path,
    step: &ResourceStep,
    op: Op,
) -> Result<(), StepError> {
    let a = locate(&step.rtype, root, rgdir)?;
    let timeout = op_timeout(&step.attrs, op)?;
    let monitor = if a.rgmanager { "status" } else { "monitor" };
    let fail = |action: &str, s: OcfStatus| {
        let code = ocf_code(s);
        StepError::Failed(format!(
            "{} {}: {action} returned {code} ({})",
            step.rtype,
            step.name,
            meaning(s)
        ))
    };
    match op {
        Op::Start => match call(r, &a, root, step, "start", timeout).await? {
            OcfStatus::Success => Ok(()),
            s => Err(fail("start", s)),
        },
        Op::Stop => match call(r, &a, root, step, "stop", timeout).await? {
            OcfStatus::Success | OcfStatus::NotRunning => Ok(()),
            s => {
                // Idempotence: a stop that complains about a resource that is not running is fine.
                let mt = op_timeout(&step.attrs, Op::Status)?;
                match call(r, &a, root, step, monitor, mt).await? {
                    OcfStatus::NotRunning => {
                        r.note(format!(
                            "stop returned {} but {monitor} says not running: stopped",
                            ocf_code(s)
                        ));
                        Ok(())
                    }
                    _ => Err(fail("stop", s)),
                }
            }
        },
        Op::Status => match call(r, &a, root, step, monitor, timeout).await? {
            OcfStatus::Success | OcfStatus::RunningPromoted => Ok(()),
            OcfStatus::Degraded | OcfStatus::DegradedPromoted => {
                r.note("agent reports degraded: still running");
                Ok(())
            }
            s => Err(fail(monitor, s)),
        },
    }
}

fn ocf_code(s: OcfStatus) -> i32 {
    match s {
        OcfStatus::Success => 0,
        OcfStatus::ErrGeneric => 1,
        OcfStatus::ErrArgs => 2,
        OcfStatus::Unimplemented => 3,
        OcfStatus::ErrPerm => 4,
        OcfStatus::NotInstalled => 5,
        OcfStatus::NotConfigured => 6,
        OcfStatus::NotRunning => 7,
        OcfStatus::RunningPromoted => 8,
        OcfStatus::FailedPromoted => 9,
        OcfStatus::Degraded => 190,
        OcfStatus::DegradedPromoted => 191,
        OcfStatus::Other(c) => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch_exec(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn lookup_order_heartbeat_then_providers_then_rgmanager() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ocf");
        let rg = d.path().join("cluster");
        touch_exec(&root.join("resource.d/zeta/Thing"));
        touch_exec(&root.join("resource.d/alpha/Thing"));
        touch_exec(&rg.join("Thing.sh"));
        touch_exec(&rg.join("oldagent.sh"));
        let a = locate("Thing", &root, &rg).unwrap();
        assert_eq!(a.provider, "alpha");
        touch_exec(&root.join("resource.d/heartbeat/Thing"));
        let a = locate("Thing", &root, &rg).unwrap();
        assert_eq!(a.provider, "heartbeat");
        assert!(!a.rgmanager);
        let a = locate("ocf:zeta:Thing", &root, &rg).unwrap();
        assert_eq!(a.path, root.join("resource.d/zeta/Thing"));
        let a = locate("oldagent", &root, &rg).unwrap();
        assert!(a.rgmanager);
        assert_eq!(a.path, rg.join("oldagent.sh"));
        let e = locate("missing", &root, &rg).unwrap_err().to_string();
        assert!(e.contains("resource-agents"), "{e}");
        assert!(locate("../../bin/sh", &root, &rg).is_err());
        assert!(locate("ocf:..:sh", &root, &rg).is_err());
        assert!(locate("ocf:heartbeat", &root, &rg).is_err());
    }
}
