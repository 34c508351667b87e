//! The node's plan: [`stack::plan`] with the system resolver for node names.

use config::ClusterConf;
pub use stack::plan::{fence_config, rm_spec, NodePlan, Peer, PlanError};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Make the plan for node `me_name`, resolving names through the system
/// resolver (/etc/hosts first on a usual system, as RHCS expects).
pub fn make_plan(conf: &ClusterConf, me_name: &str) -> Result<NodePlan, PlanError> {
    stack::plan::make_plan(conf, me_name, resolve)
}

/// Resolve `name` (a host name or an address literal) to one address on `port`,
/// preferring IPv4 as RHCS did.
pub fn resolve(name: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| "no address".to_string())
}
