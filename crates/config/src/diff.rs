//! What a config_version bump changes.

use crate::model::{is_secret_attr, ClusterConf};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Which part of the cluster a change touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Cluster name.
    Cluster,
    /// `<cman>` and computed quorum.
    Quorum,
    /// `<totem>` timers and rings.
    Timers,
    /// Cluster nodes (membership, votes, rings).
    Nodes,
    /// Fence devices, node fence methods, `<fence_daemon>`.
    Fencing,
    /// Failover domains.
    Domains,
    /// Global `<resources>`.
    Resources,
    /// Services.
    Services,
    /// Virtual machines.
    Vms,
    /// Replicated volumes (`<replicas>`).
    Replicas,
    /// `<rm>` settings, `<logging>`, `<dlm>`, `<quorumd>`.
    Other,
}

/// Added, removed or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Present only in NEW.
    Added,
    /// Present only in OLD.
    Removed,
    /// Present in both, different.
    Changed,
}

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Part of the cluster.
    pub area: Area,
    /// Kind of change.
    pub kind: ChangeKind,
    /// What changed: a node, device, service name or a setting path.
    pub subject: String,
    /// Old and new values (secrets are never shown).
    pub detail: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.kind {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Changed => '~',
        };
        write!(f, "{sign} {:?} {}", self.area, self.subject)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The differences from OLD to NEW.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDiff {
    /// OLD's config_version.
    pub old_version: u64,
    /// NEW's config_version.
    pub new_version: u64,
    /// Changes grouped by area.
    pub changes: Vec<Change>,
}

/// Why two configurations cannot be compared as an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// NEW does not have a greater config_version.
    #[error("new config_version {new} is not greater than the old one ({old}); nodes would ignore this file")]
    VersionNotIncreased {
        /// OLD's version.
        old: u64,
        /// NEW's version.
        new: u64,
    },
}

impl DiffError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            DiffError::VersionNotIncreased { old, .. } => {
                format!(
                    "raise config_version in the new file to at least {}",
                    old + 1
                )
            }
        }
    }
}

/// Compares OLD and NEW; refuses when NEW's config_version is not greater.
pub fn diff(old: &ClusterConf, new: &ClusterConf) -> Result<ConfigDiff, DiffError> {
    if new.config_version <= old.config_version {
        return Err(DiffError::VersionNotIncreased {
            old: old.config_version,
            new: new.config_version,
        });
    }
    let mut changes = Vec::new();
    let mut c = |area, kind, subject: String, detail: String| {
        changes.push(Change {
            area,
            kind,
            subject,
            detail,
        })
    };
    if old.name != new.name {
        c(
            Area::Cluster,
            ChangeKind::Changed,
            "name".into(),
            format!("{} -> {} (every node must restart)", old.name, new.name),
        );
    }
    let sections: [(Area, &str, Value, Value); 8] = [
        (Area::Quorum, "cman", js(&old.cman), js(&new.cman)),
        (Area::Quorum, "quorum", js(&old.quorum), js(&new.quorum)),
        (Area::Timers, "totem", js(&old.totem), js(&new.totem)),
        (Area::Other, "quorumd", js(&old.quorumd), js(&new.quorumd)),
        (
            Area::Fencing,
            "fence_daemon",
            js(&old.fence_daemon),
            js(&new.fence_daemon),
        ),
        (Area::Other, "logging", js(&old.logging), js(&new.logging)),
        (Area::Other, "dlm", js(&old.dlm), js(&new.dlm)),
        (
            Area::Other,
            "rm",
            rm_settings(&old.rm),
            rm_settings(&new.rm),
        ),
    ];
    for (area, name, o, n) in sections {
        for (path, detail) in flat_diff(&o, &n) {
            c(area, ChangeKind::Changed, format!("{name}.{path}"), detail);
        }
    }

    // Nodes, keyed by name; fence parts reported under Fencing.
    keyed(
        old.nodes.iter().map(|n| (n.name.clone(), node_js(n))),
        new.nodes.iter().map(|n| (n.name.clone(), node_js(n))),
        |kind, key, path, detail| {
            let area = if kind == ChangeKind::Changed
                && (path.starts_with("fence") || path.starts_with("unfence"))
            {
                Area::Fencing
            } else {
                Area::Nodes
            };
            c(area, kind, subject(&key, path), detail)
        },
    );
    for on in &old.nodes {
        if let Some(nn) = new.node(&on.name) {
            let o: Vec<_> = on.fence.iter().flat_map(|m| m.devices.iter()).collect();
            let n: Vec<_> = nn.fence.iter().flat_map(|m| m.devices.iter()).collect();
            for (od, nd) in o.iter().zip(n.iter()) {
                for k in secret_changes(&od.attrs, &nd.attrs) {
                    c(
                        Area::Fencing,
                        ChangeKind::Changed,
                        format!("{} device {} {k}", on.name, nd.name),
                        "changed (value not shown)".into(),
                    );
                }
            }
        }
    }
    keyed(
        old.fence_devices.iter().map(|d| (d.name.clone(), js(d))),
        new.fence_devices.iter().map(|d| (d.name.clone(), js(d))),
        |kind, key, path, detail| {
            c(
                Area::Fencing,
                kind,
                subject(&format!("fencedevice {key}"), path),
                detail,
            )
        },
    );
    for od in &old.fence_devices {
        if let Some(nd) = new.fence_device(&od.name) {
            for k in secret_changes(&od.attrs, &nd.attrs) {
                c(
                    Area::Fencing,
                    ChangeKind::Changed,
                    format!("fencedevice {}.attrs.{k}", od.name),
                    "changed (value not shown)".into(),
                );
            }
        }
    }
    keyed(
        old.rm
            .failover_domains
            .iter()
            .map(|d| (d.name.clone(), js(d))),
        new.rm
            .failover_domains
            .iter()
            .map(|d| (d.name.clone(), js(d))),
        |kind, key, path, detail| c(Area::Domains, kind, subject(&key, path), detail),
    );
    let rkey = |r: &crate::model::Resource| format!("{}:{}", r.kind, r.key().unwrap_or("?"));
    keyed(
        old.rm.resources.iter().map(|r| (rkey(r), js(r))),
        new.rm.resources.iter().map(|r| (rkey(r), js(r))),
        |kind, key, path, detail| c(Area::Resources, kind, subject(&key, path), detail),
    );
    keyed(
        old.rm
            .services
            .iter()
            .map(|s| (s.name.clone(), service_js(s))),
        new.rm
            .services
            .iter()
            .map(|s| (s.name.clone(), service_js(s))),
        |kind, key, path, detail| {
            c(
                Area::Services,
                kind,
                subject(&format!("service:{key}"), path),
                detail,
            )
        },
    );
    keyed(
        old.rm.vms.iter().map(|s| (s.name.clone(), js(s))),
        new.rm.vms.iter().map(|s| (s.name.clone(), js(s))),
        |kind, key, path, detail| c(Area::Vms, kind, subject(&format!("vm:{key}"), path), detail),
    );
    keyed(
        old.replicas.iter().map(|r| (r.name.clone(), js(r))),
        new.replicas.iter().map(|r| (r.name.clone(), js(r))),
        |kind, key, path, detail| {
            c(
                Area::Replicas,
                kind,
                subject(&format!("replica:{key}"), path),
                detail,
            )
        },
    );
    changes.sort_by_key(|c| c.area);
    Ok(ConfigDiff {
        old_version: old.config_version,
        new_version: new.config_version,
        changes,
    })
}

fn subject(key: &str, path: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{key}.{path}")
    }
}

fn js<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn attrs_summary(attrs: &BTreeMap<String, String>) -> String {
    attrs
        .iter()
        .map(|(k, v)| {
            if is_secret_attr(k) {
                format!(" {k}={}", crate::model::REDACTED)
            } else {
                format!(" {k}={v}")
            }
        })
        .collect()
}

fn devices_summary(devs: &[crate::model::FenceDeviceRef]) -> String {
    devs.iter()
        .map(|d| format!("{}{}", d.name, attrs_summary(&d.attrs)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A node with its fence methods, unfence devices and altnames as one line each.
fn node_js(n: &crate::model::ClusterNode) -> Value {
    let mut v = js(n);
    let fence = if n.fence.is_empty() {
        "none".to_string()
    } else {
        n.fence
            .iter()
            .map(|m| format!("{}[{}]", m.name, devices_summary(&m.devices)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let alt: Vec<&str> = n.altnames.iter().map(|a| a.name.as_str()).collect();
    if let Value::Object(m) = &mut v {
        m.insert("fence".into(), Value::String(fence));
        let unfence = if n.unfence.is_empty() {
            "none".to_string()
        } else {
            devices_summary(&n.unfence)
        };
        m.insert("unfence".into(), Value::String(unfence));
        let alt = if alt.is_empty() {
            "none".to_string()
        } else {
            alt.join(", ")
        };
        m.insert("altnames".into(), Value::String(alt));
    }
    v
}

fn tree_summary(rs: &[crate::model::Resource]) -> String {
    rs.iter()
        .map(|r| {
            let kids = if r.children.is_empty() {
                String::new()
            } else {
                format!(" {{ {} }}", tree_summary(&r.children))
            };
            format!("{}({}){kids}", r.kind, attrs_summary(&r.attrs).trim_start())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A service with its resource tree as one line.
fn service_js(s: &crate::model::Service) -> Value {
    let mut v = js(s);
    if let Value::Object(m) = &mut v {
        m.insert(
            "resources".into(),
            Value::String(tree_summary(&s.resources)),
        );
    }
    v
}

fn rm_settings(rm: &crate::model::Rm) -> Value {
    serde_json::json!({
        "status_poll_interval": js(&rm.status_poll_interval),
        "status_child_max": js(&rm.status_child_max),
        "transition_throttling": js(&rm.transition_throttling),
        "central_processing": js(&rm.central_processing),
    })
}

fn secret_changes(o: &BTreeMap<String, String>, n: &BTreeMap<String, String>) -> Vec<String> {
    o.iter()
        .filter(|(k, v)| is_secret_attr(k) && n.get(*k).is_some_and(|nv| nv != *v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Compares two keyed lists: added, removed, then per-key field changes.
fn keyed(
    old: impl Iterator<Item = (String, Value)>,
    new: impl Iterator<Item = (String, Value)>,
    mut emit: impl FnMut(ChangeKind, String, &str, String),
) {
    let old: BTreeMap<String, Value> = old.collect();
    let new: BTreeMap<String, Value> = new.collect();
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        emit(ChangeKind::Removed, k.clone(), "", String::new());
    }
    for k in new.keys().filter(|k| !old.contains_key(*k)) {
        emit(ChangeKind::Added, k.clone(), "", String::new());
    }
    for (k, o) in &old {
        if let Some(n) = new.get(k) {
            for (path, detail) in flat_diff(o, n) {
                emit(ChangeKind::Changed, k.clone(), &path, detail);
            }
        }
    }
}

/// Flattens to `path -> value`; a [`crate::Setting`] becomes its value, `line` fields are skipped.
fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m)
            if m.len() == 2 && m.contains_key("value") && m.contains_key("default") =>
        {
            flatten(&m["value"], prefix, out)
        }
        Value::Object(m) => {
            for (k, x) in m {
                if k == "line" {
                    continue;
                }
                flatten(x, &join(k), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(x, &format!("{prefix}[{i}]"), out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn flat_diff(o: &Value, n: &Value) -> Vec<(String, String)> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten(o, "", &mut a);
    flatten(n, "", &mut b);
    let mut out = Vec::new();
    for (k, ov) in &a {
        match b.get(k) {
            Some(nv) if nv != ov => out.push((k.clone(), format!("{ov} -> {nv}"))),
            None => out.push((k.clone(), format!("{ov} -> (unset)"))),
            _ => {}
        }
    }
    for (k, nv) in &b {
        if !a.contains_key(k) {
            out.push((k.clone(), format!("(unset) -> {nv}")));
        }
    }
    out
}
