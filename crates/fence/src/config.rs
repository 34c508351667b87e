//! The fence domain's own input types: the integrator maps cluster.conf onto these.

use crate::args::AgentArgs;
use base::{Duration, NodeId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One `<device>` line of a `<method>` (or of `<unfence>`), already merged with its `<fencedevice>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    /// The `<fencedevice name=...>` this line refers to (for logs and status).
    pub name: String,
    /// The agent program (`fence_ipmilan`, `fence_quorate`, or a path).
    pub agent: String,
    /// `<fencedevice>` attributes merged with the `<device>` attributes (device wins).
    /// `agent`, `name`, `delay`, `action`/`option` are taken out before the agent sees them.
    pub args: AgentArgs,
    /// The configured action (`action=`/`option=` on the device); `None` means the default (reboot, or on for unfence).
    pub action: Option<String>,
    /// Wait this long before running the agent for off/reboot (pcmk_delay_base semantics):
    /// in a two-node split the node whose device has no delay shoots first and wins.
    pub delay: Duration,
    /// How long the agent may run before it is killed and counted as failed (`None` = the domain default).
    pub timeout: Option<Duration>,
}

impl Device {
    /// Builds a device from merged attributes, taking `agent`, `name`, `action`/`option`,
    /// `delay` (seconds) and `timeout` (seconds) out of them.
    pub fn from_attrs(mut attrs: AgentArgs) -> Result<Device, crate::FenceError> {
        let name = attrs.remove("name").unwrap_or_default();
        let agent = attrs
            .remove("agent")
            .ok_or_else(|| crate::FenceError::BadDevice {
                device: name.clone(),
                reason: "no agent= attribute; add agent=\"fence_xxx\" to its <fencedevice>".into(),
            })?;
        let option = attrs.remove("option");
        let action = attrs.remove("action").or(option);
        let secs = |key: &str, v: Option<String>| -> Result<Option<Duration>, crate::FenceError> {
            match v {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Some(Duration::from_nanos((s * 1e9) as u64)))
                    .ok_or_else(|| crate::FenceError::BadDevice {
                        device: name.clone(),
                        reason: format!("{key}=\"{v}\" is not a number of seconds >= 0"),
                    }),
            }
        };
        if let Some(a) = &action {
            if !matches!(a.as_str(), "off" | "reboot" | "on" | "enable" | "disable") {
                return Err(crate::FenceError::BadDevice {
                    device: name,
                    reason: format!("action=\"{a}\" is not a fence action; use off, reboot or on (on only under <unfence>)"),
                });
            }
        }
        let delay = secs("delay", attrs.remove("delay"))?.unwrap_or(Duration::ZERO);
        let timeout = secs("timeout", attrs.remove("timeout"))?;
        Ok(Device {
            name,
            agent,
            args: attrs,
            action,
            delay,
            timeout,
        })
    }
}

/// One `<method>`: every device must succeed for the method to succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Method {
    /// `<method name=...>`.
    pub name: String,
    /// The `<device>` lines, in document order.
    pub devices: Vec<Device>,
}

/// How one node is fenced and unfenced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
pub struct NodeFence {
    /// The node's name (`<clusternode name=...>`), passed to agents as `nodename=`.
    pub name: String,
    /// `<fence><method>` in document order.
    pub methods: Vec<Method>,
    /// `<unfence><device>` lines.
    pub unfence: Vec<Device>,
}

/// The `<fence_daemon>` settings and every node's fencing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FenceConfig {
    /// Wait after a member fails before fencing it (default 0 s).
    pub post_fail_delay: Duration,
    /// Wait after the domain forms before fencing nodes never seen; `None` = wait forever (-1).
    pub post_join_delay: Option<Duration>,
    /// Skip startup fencing of absent nodes.
    pub clean_start: bool,
    /// Skip startup fencing of nodes that have no fence methods.
    pub skip_undefined: bool,
    /// Wait between failed rounds over all methods (fenced's override_time, default 3 s).
    pub override_time: Duration,
    /// Agent timeout when a device sets none.
    pub agent_timeout: Duration,
    /// Fencing of each configured node.
    pub nodes: BTreeMap<NodeId, NodeFence>,
}

impl Default for FenceConfig {
    fn default() -> Self {
        FenceConfig {
            post_fail_delay: Duration::ZERO,
            post_join_delay: Some(Duration::from_secs(6)),
            clean_start: false,
            skip_undefined: false,
            override_time: Duration::from_secs(3),
            agent_timeout: Duration::from_secs(60),
            nodes: BTreeMap::new(),
        }
    }
}

/// A membership change as the quorum layer reports it (delivered in totem order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Membership {
    /// Every node in the current configuration, including this one.
    pub members: BTreeSet<NodeId>,
    /// Whether this partition has quorum.
    pub quorate: bool,
}
